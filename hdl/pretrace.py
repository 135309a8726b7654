"""Presynaptic traces ``z``, ``ẑ`` (``docs/model.md`` section 2) as a pipelined unit."""

from __future__ import annotations

from amaranth.hdl import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from spikeloop.params import Params

from .arith import decay, fmt_shape, lowpass, pipe_reg, sat

__all__ = ["PreTraceUnit"]


class PreTraceUnit(wiring.Component):
    """Trace update of one presynaptic input per cycle, bit-exact with ``GoldenModel.pre_trace_pass``.

    ``z_next = decay(sat_z(z + x·one); syn)`` and ``zh_next = lowpass(zh, z_next; mem)``.

    Never stalls: vectors with ``valid`` = 1 come out :attr:`latency` cycles later with
    ``out_valid`` = 1, bubbles (``valid`` = 0) come out as ``out_valid`` = 0.

    Pipeline (registers at the end of each stage)

    1. ``z_next``: saturating add of the spike, then the constant multiply and shift.
    2. ``zh_next``: the low-pass, two constant multiplies, an add and a shift.

    Latency: 2 cycles.

    ``ẑ`` is not saturated (the model relies on a low-pass staying between its operands), so the
    'zh' format must hold every 'z' value: the constructor refuses ``zh.bits < z.bits``.

    Parameters
    ----------
    params : Params

    Attributes
    ----------
    latency : int

    Members
    -------
    valid : In(1)
    z : In(unsigned(z.bits))
    zh : In(unsigned(zh.bits))
    x : In(1)
        The input's spike this step.
    out_valid : Out(1)
    z_next : Out(unsigned(z.bits))
    zh_next : Out(unsigned(zh.bits))
    """

    latency = 2

    def __init__(self, params: Params):
        self.params = p = params
        F = p.formats
        if F["zh"].bits < F["z"].bits:
            raise ValueError(
                f"PreTraceUnit: format 'zh' ({F['zh']}) must be at least as wide as 'z' ({F['z']}): "
                "the model does not saturate ẑ, so a narrower ẑ word would wrap")
        super().__init__({
            "valid": In(1),
            "z": In(fmt_shape(F["z"])),
            "zh": In(fmt_shape(F["zh"])),
            "x": In(1),
            "out_valid": Out(1),
            "z_next": Out(fmt_shape(F["z"])),
            "zh_next": Out(fmt_shape(F["zh"])),
        })

    def elaborate(self, platform):
        p, F = self.params, self.params.formats
        m = Module()
        fz = F["z"]
        # stage 1
        z_sum = sat(self.z + Mux(self.x, fz.one, 0), fz)
        s1_valid = pipe_reg(m, self.valid, "s1_valid")
        s1_z = pipe_reg(m, decay(z_sum, p.decay_syn), "s1_z_next", fmt_shape(fz))
        s1_zh = pipe_reg(m, self.zh, "s1_zh")
        # stage 2
        s2_valid = pipe_reg(m, s1_valid, "s2_valid")
        s2_z = pipe_reg(m, s1_z, "s2_z_next")
        s2_zh = pipe_reg(m, lowpass(s1_zh, s1_z, p.decay_mem), "s2_zh_next", fmt_shape(F["zh"]))
        m.d.comb += [
            self.out_valid.eq(s2_valid),
            self.z_next.eq(s2_z),
            self.zh_next.eq(s2_zh),
        ]
        return m

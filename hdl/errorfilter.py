"""The on-chip output error filter (``docs/model.md`` section 3, ``error_source = target``)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from spikeloop.params import Params

from .arith import decay_signed, fmt_shape, lowpass_signed, pipe_reg, sat

__all__ = ["ErrorFilterUnit"]


class ErrorFilterUnit(wiring.Component):
    """Error filter of one output neuron per cycle, bit-exact with ``GoldenModel.step``::

        e1 = sat_e(e1 + (T − S)·one)
        e2 = sat_e(lowpass₀(e2, e1; mem))      # = e, the error of this step
        e1 = decay₀(e1; syn)

    Never stalls: vectors with ``valid`` = 1 come out :attr:`latency` cycles later with
    ``out_valid`` = 1, bubbles come out as ``out_valid`` = 0.

    Pipeline (registers at the end of each stage)

    1. ``e1 + (T − S)·one``, saturated (``T − S`` ∈ {−1, 0, 1}: a mux of ±one, an add, a clamp).
    2. ``e2_next`` (two constant multiplies, add, shift toward zero, clamp) and ``e1_next``
       (one constant multiply, shift toward zero), in parallel.

    Latency: 2 cycles.

    Parameters
    ----------
    params : Params

    Attributes
    ----------
    latency : int

    Members
    -------
    valid : In(1)
    e1, e2 : In(signed(err.bits))
        Filter state of the last step.
    target : In(1)
        Target spike ``Ŝ`` of this step.
    spike : In(1)
        Output spike ``S`` of this step.
    out_valid : Out(1)
    e1_next, e2_next : Out(signed(err.bits))
        New state; ``e2_next`` is the error ``e`` of this step.
    """

    latency = 2

    def __init__(self, params: Params):
        self.params = p = params
        fe = fmt_shape(p.formats["err"])
        super().__init__({
            "valid": In(1),
            "e1": In(fe),
            "e2": In(fe),
            "target": In(1),
            "spike": In(1),
            "out_valid": Out(1),
            "e1_next": Out(fe),
            "e2_next": Out(fe),
        })

    def elaborate(self, platform):
        p, fe = self.params, self.params.formats["err"]
        m = Module()
        one = fe.one
        # (T − S)·one: +one, −one or 0.
        step = Mux(self.target & ~self.spike, one, Mux(self.spike & ~self.target, -one, 0))
        # stage 1
        s1_valid = pipe_reg(m, self.valid, "s1_valid")
        s1_e1 = pipe_reg(m, sat(self.e1 + step, fe), "s1_e1")
        s1_e2 = pipe_reg(m, self.e2, "s1_e2")
        # stage 2
        s2_valid = pipe_reg(m, s1_valid, "s2_valid")
        s2_e2 = pipe_reg(m, sat(lowpass_signed(s1_e2, s1_e1, p.decay_mem), fe), "s2_e2_next")
        s2_e1 = pipe_reg(m, decay_signed(s1_e1, p.decay_syn), "s2_e1_next", fmt_shape(fe))
        m.d.comb += [
            self.out_valid.eq(s2_valid),
            self.e1_next.eq(s2_e1),
            self.e2_next.eq(s2_e2),
        ]
        return m

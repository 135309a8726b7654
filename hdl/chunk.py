"""The chunk-end weight update (``docs/model.md`` section 5) as a pipelined unit.

Runs once every ``chunk_steps`` steps over every synapse, so its throughput matters little next
to the learning pass, but its one division must not cost a multi-cycle stall per synapse: the
divider is unrolled into one restoring subtract per quotient bit, one stage each, so a sweep
still takes one cycle per synapse.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Value, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from spikeloop.params import Optimiser, Params

from .arith import decay, fmt_shape, mul_const, resize, shift_trunc
from .neuron import RACC_BITS
from .synapse import Pipe

__all__ = ["ChunkUnit", "RegCoef", "RACC_BITS", "RHO_FRAC", "reg_coef_bits"]

#: ``ρ`` is held in UQ0.16 (``Params.rho_q``).
RHO_FRAC = 16


def reg_coef_bits(p: Params) -> int:
    """Width of the regulariser coefficient ``c`` (UQ.rate.frac, ``0 ≤ c ≤ 1.0``): ``rate.frac + 1``."""
    return p.formats["rate"].frac + 1


def _clamp(value, lo: int, hi: int, shape) -> Value:
    """``value`` clamped to ``[lo, hi]`` (compared at full width), then narrowed to ``shape``."""
    value = Value.cast(value)
    out = Mux(value > hi, Const(hi, shape), Mux(value < lo, Const(lo, shape), resize(value, shape)))
    return resize(out, shape)


class RegCoef(wiring.Component):
    """The row's regulariser coefficient ``c = min((racc·ρ) >> 16, 1.0)``, one register stage.

    The Core evaluates it once per row (hidden layer) before that row's synapses enter
    :class:`ChunkUnit` and feeds 0 for rows of the output layer. ``racc`` is 47 bits wide but
    only small values give ``c < 1``: with ``T = ⌈2^(16 + frac) / ρ⌉``, ``racc ≥ T`` gives exactly
    ``c = 1.0``, and below ``T`` only the low ``⌈log2 T⌉`` bits of ``racc`` are non-zero. So the
    unit is one 47-bit comparison and a constant multiply of ``⌈log2 T⌉`` bits (22 at the
    defaults, ``ρ = 66/2^16``, a two-term shift-and-add) instead of a 47 × 16 product.

    Latency: 1 cycle (``c`` is registered).

    Members
    -------
    racc : In(unsigned(47))
        ``Σ r^a`` accumulated over the chunk by the neuron.
    c : Out(unsigned(rate.frac + 1))
        Coefficient for :class:`ChunkUnit`, UQ1.rate.frac, at most ``1.0``.
    """

    latency = 1

    def __init__(self, params: Params):
        self.params = params
        super().__init__({"racc": In(unsigned(RACC_BITS)), "c": Out(unsigned(reg_coef_bits(params)))})

    def elaborate(self, platform):
        p = self.params
        one = p.formats["rate"].one
        m = Module()
        rho = p.rho_q
        T = -(-(one << RHO_FRAC) // rho)                        # ⌈one·2^16 / ρ⌉ ≥ 1
        low_bits = (T - 1).bit_length()
        if low_bits:
            small = mul_const(self.racc[:low_bits], rho).shift_right(RHO_FRAC)
        else:
            small = Const(0, 1)
        c = Mux(self.racc >= T, one, small)
        m.d.sync += self.c.eq(resize(c, unsigned(reg_coef_bits(p))))
        return m


class ChunkUnit(wiring.Component):
    """Chunk-end update of one synapse per cycle, bit-exact with ``GoldenModel.chunk_end_pass``.

    Never stalls: a synapse with ``valid`` = 1 leaves :attr:`latency` cycles later with
    ``out_valid`` = 1 (bubbles as in :class:`~spikeloop.hdl.synapse.SynapseUnit`). All outputs of
    a synapse appear together.

    Stages, RMaxProp (``R`` = ``ratio_bits``)

    1. ``a = min(|m|, q_max)``, ``sign = m < 0``; ``decay(q; q)`` (shift-and-add); ``w·c``
       (regulariser: ``w.bits × (rate.frac + 1)``, one DSP).
    2. ``q₁ = max(a, decay(q))``, ``D = q₁ + ε``; ``w_r = w − (w·c) >>₀ frac_rate``. ``w_r`` has
       the sign of ``w`` and ``|w_r| ≤ |w|`` (since ``0 ≤ c ≤ 1``), so it stays ``w.bits`` wide.
    3. … ``R + 2``: restoring division ``(a << R) // D``, one quotient bit per stage from the
       top: ``P ← 2P``; if ``P ≥ D``: ``P ← P − D``, bit 1. It starts from ``P = a`` because the
       low ``R`` bits of the dividend are 0. ``R`` stages suffice, not ``R + 1``: ``q₁ ≥ a`` and
       ``ε ≥ 1`` give ``D > a``, so ``ratio < 2^R`` (the model's ``ratio ≤ 2^R`` is not tight).
    ``R + 3``. ``r0 · ratio`` (``(w.bits − 1) × R``).
    ``R + 4``. ``Δ = (r0·ratio) >> R``; ``w_next = clip(w_r ± Δ, ±w_max)``; ``q_next = D − ε``.

    Latency: ``R + 4`` cycles (12 at the defaults) with RMaxProp.
    Fixed rate: stage 1 (``a``, ``w·c``), stage 2 (``Δ = a >> lr_shift``, ``w_r``), stage 3
    (``w_next``): latency 3.

    Cost (UP5K, defaults with the regulariser): about 1250 LCs and 2 DSPs (``w·c``,
    ``r0·ratio``), 30 MHz. The divider is most of it: each of its ``R`` stages holds ``D``,
    ``P``, ``w_r`` and the partial quotient (about 75 flip-flops, each an LC on the iCE40) plus
    a ``q.bits + 2``-bit subtract and select. If area gets tight, an iterative divider (one
    quotient bit per cycle, ``R`` cycles per synapse, a fraction of the LCs) would make the
    chunk-end sweep ``R`` times longer, which is still small next to ``chunk_steps`` steps.

    ``r0`` is not carried down the pipe: it is read in stage ``R + 3``, so it must not change
    while synapses are in flight (the Core latches it at the start of a chunk-end sweep).
    Everything per synapse or per row (``w, m, q, c``) is taken with its synapse.

    Parameters
    ----------
    params : Params

    Attributes
    ----------
    latency : int

    Members
    -------
    valid : In(1)
    w : In(signed(w.bits))
    m : In(signed(m.bits))
    q : In(unsigned(q.bits))
        RMaxProp only.
    r0 : In(unsigned(w.bits − 1))
        RMaxProp step in weight LSBs (runtime register; ``Params.r0_q`` at reset of the Core).
    c : In(unsigned(rate.frac + 1))
        Regulariser coefficient of the synapse's row (from :class:`RegCoef`; 0 for layers
        without the regulariser). Present only when ``params.regulariser``.
    out_valid : Out(1)
    w_next : Out(signed(w.bits))
    q_next : Out(unsigned(q.bits))
        RMaxProp only.
    m_next : Out(signed(m.bits))
        Always 0 (the chunk's gradient is consumed); a port so the write-back is one word.
    """

    def __init__(self, params: Params):
        p = self.params = params
        F = p.formats
        self.rmaxprop = p.optimiser is Optimiser.RMAXPROP
        if p.eps_q < 1:                       # the R-stage divider relies on D > a
            raise ValueError("ChunkUnit needs eps_q >= 1")
        self.latency = p.ratio_bits + 4 if self.rmaxprop else 3
        ports = {"valid": In(1), "w": In(fmt_shape(F["w"])), "m": In(fmt_shape(F["m"]))}
        if self.rmaxprop:
            ports["q"] = In(fmt_shape(F["q"]))
            ports["r0"] = In(unsigned(F["w"].bits - 1))
        if p.regulariser:
            ports["c"] = In(unsigned(reg_coef_bits(p)))
        ports.update({"out_valid": Out(1), "w_next": Out(fmt_shape(F["w"]))})
        if self.rmaxprop:
            ports["q_next"] = Out(fmt_shape(F["q"]))
        ports["m_next"] = Out(fmt_shape(F["m"]))
        super().__init__(ports)

    def elaborate(self, platform):
        p, F = self.params, self.params.formats
        m = Module()
        pipe = Pipe(m)
        R = p.ratio_bits
        w_shape = fmt_shape(F["w"])

        # 1. a = min(|m|, q_max); sign; decay(q); w·c.
        mag = abs(self.m)                                     # unsigned(m.bits), exact
        qmax = F["q"].max
        if (1 << (F["m"].bits - 1)) > qmax:                   # |m_min| may exceed q_max
            a = Mux(mag > qmax, qmax, mag)
            a = resize(a, unsigned(F["q"].bits))
        else:
            a = mag
        s1 = dict(valid=self.valid, a=a, neg=self.m[-1], w=self.w)
        if self.rmaxprop:
            s1["qd"] = resize(decay(self.q, p.decay_q), fmt_shape(F["q"]))
        if p.regulariser:
            s1["wc"] = self.w * self.c
        r = pipe.stage(**s1)

        # 2. q₁ = max(a, decay(q)), D = q₁ + ε; w_r = w − (w·c) >>₀ frac.
        if p.regulariser:
            wr = resize(r["w"] - shift_trunc(r["wc"], F["rate"].frac), w_shape)
        else:
            wr = r["w"]
        s2 = dict(valid=r["valid"], neg=r["neg"], wr=wr)
        if self.rmaxprop:
            q1 = Mux(r["a"] > r["qd"], r["a"], r["qd"])
            d_bits = (qmax + p.eps_q).bit_length()
            s2["D"] = resize(q1 + p.eps_q, unsigned(d_bits))
            s2["P"] = resize(r["a"], unsigned(d_bits))        # a < D
        else:
            a_bits = len(r["a"])
            s2["dw"] = (r["a"].shift_right(p.lr_shift) if p.lr_shift < a_bits
                        else Const(0, 1))
        r = pipe.stage(**s2)

        if self.rmaxprop:
            # 3 … R+2. Restoring division, quotient bits from the top.
            quo = None
            for k in range(R):
                P2 = r["P"].shift_left(1)
                T = P2 - r["D"]
                bit = ~T[-1]                                  # P2 ≥ D
                quo_next = bit if quo is None else Value.cast(Value.cast(quo).shift_left(1) | bit)
                s = dict(valid=r["valid"], neg=r["neg"], wr=r["wr"], D=r["D"],
                         quo=quo_next)
                if k != R - 1:
                    s["P"] = resize(Mux(bit, T, P2), unsigned(len(r["D"])))
                r = pipe.stage(**s)
                quo = r["quo"]
            # R+3. r0 · ratio.
            r = pipe.stage(valid=r["valid"], neg=r["neg"], wr=r["wr"], D=r["D"],
                           prod=self.r0 * resize(quo, unsigned(R)))
            dw = r["prod"].shift_right(R)
            q_next = resize(r["D"] - p.eps_q, fmt_shape(F["q"]))
        else:
            dw = r["dw"]

        # last. w_next = clip(w_r ± Δ, ±w_max).
        w_sum = Mux(r["neg"], r["wr"] - dw, r["wr"] + dw)
        out = dict(out_valid=r["valid"], w_next=_clamp(w_sum, -p.w_max_q, p.w_max_q, w_shape))
        if self.rmaxprop:
            out["q_next"] = q_next
        r = pipe.stage(**out)
        assert pipe.n == self.latency
        for k, v in r.items():
            m.d.comb += getattr(self, k).eq(v)
        m.d.comb += self.m_next.eq(0)
        return m

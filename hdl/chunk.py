"""The chunk-end weight update (``docs/model.md`` section 5) as a pipelined unit.

Runs once every ``chunk_steps`` steps over every synapse, so its throughput matters little next
to the learning pass, but its one division must not cost a multi-cycle stall per synapse: by
default the divider is unrolled into one restoring subtract per quotient bit, one stage each, so
a sweep still takes one cycle per synapse. A caller that cannot feed a synapse every cycle anyway
(single-ported synapse memory) passes ``interval`` and gets one iterative divider instead, which
is most of the unit's area saved.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, unsigned
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
    """Chunk-end update, one synapse per ``interval`` cycles, bit-exact with ``chunk_end_pass``.

    Never stalls: a synapse with ``valid`` = 1 leaves :attr:`latency` cycles later with
    ``out_valid`` = 1 (bubbles as in :class:`~spikeloop.hdl.synapse.SynapseUnit`). All outputs of
    a synapse appear together. With ``interval`` = k > 1 the caller must leave at least k − 1
    bubbles after every synapse (see below).

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

    Cost (UP5K, defaults with the regulariser, 24 MHz constraint, ``sim/synth.py``'s harness
    included): 1359 LCs and 2 DSPs (``w·c``, ``r0·ratio``), 30 MHz. The divider is most of it:
    each of its ``R`` stages holds ``D``, ``P``, ``w_r`` and the partial quotient (about 75
    flip-flops, each an LC on the iCE40) plus a ``q.bits + 2``-bit subtract and select. The
    iterative divider below halves the unit: 676 LCs, 25.5 MHz with ``interval`` = 4.

    Iterative divider, RMaxProp with ``interval`` = k > 1: a caller that can only offer a
    synapse every k cycles would leave k − 1 of every k pipeline stages empty, so the ``R``
    stages become one block reused over ``n`` cycles, each doing ``b = ⌈R/k⌉`` of the restoring
    steps above chained combinationally, ``n = ⌈R/b⌉ ≤ k``. Stage 2's registers are the block's:
    they take ``D``, ``w_r``, the sign and ``P = a`` only with a synapse, so they hold it while
    ``P`` and the quotient register (``n·b`` bits, shifted ``b`` at a time, so the previous
    synapse's bits are gone after ``n`` cycles without a clear) iterate. The division is done to
    ``n·b ≥ R`` bits and the low ``n·b − R`` dropped, which is the same quotient
    (``⌊⌊x⌋ / 2^j⌋ = ⌊x / 2^j⌋``) and spares a partial last cycle. Stage ``n + 3`` takes
    ``D``, ``w_r`` and the sign in the block's last cycle and holds them (the next synapse may
    load the block on the very next edge when ``n = k``), and ``r0 · ratio`` one cycle later.
    The block always takes ``n`` cycles, so the latency stays fixed: ``n + 4`` (8 at the
    defaults with k = 4, 7 with k = 3, 6 with k = 2; ``R + 4`` once k ≥ R, one bit per cycle).
    ``b`` chained ``q.bits + 2``-bit subtracts in one cycle are the price: at the defaults
    25 MHz with k = 4 (2 bits), 17.7 MHz with k = 3, 13.3 MHz with k = 2, so only k ≥ 4 meets
    the Core's 24 MHz.

    ``r0`` is not carried down the pipe: it is read in stage ``R + 3`` (``n + 3``), so it must
    not change while synapses are in flight (the Core latches it at the start of a chunk-end
    sweep).
    Everything per synapse or per row (``w, m, q, c``) is taken with its synapse.

    Parameters
    ----------
    params : Params
    interval : int, default 1
        Fewest cycles between two synapses with ``valid`` = 1 that the caller promises. 1 keeps
        the fully unrolled divider; a larger value trades it for the iterative one, sized to
        just keep up, so a caller that is slower anyway (single-ported memory) does not pay
        for throughput it cannot use. No effect with the fixed rate (there is no divider).
        Not checked in hardware: a synapse sent sooner corrupts the one still being divided.

    Attributes
    ----------
    latency : int
        ``R + 4`` (unrolled), ``⌈R / ⌈R/k⌉⌉ + 4`` (iterative, ``interval`` = k), 3 (fixed rate).
    interval : int
    div_cycles : int
        Cycles the divider spends on one synapse (``R`` unrolled in stages, ``n`` iterative;
        0 with the fixed rate).

    Raises
    ------
    ValueError
        ``interval`` is not an integer ≥ 1 (a bad value would otherwise surface only as a
        wrong latency or a wrong weight at run time), or ``eps_q`` < 1 (the ``R``-step
        divider relies on ``D > a``).

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

    def __init__(self, params: Params, interval: int = 1):
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"ChunkUnit: interval must be an integer >= 1, not {interval!r}")
        p = self.params = params
        F = p.formats
        self.interval = interval
        self.rmaxprop = p.optimiser is Optimiser.RMAXPROP
        if p.eps_q < 1:                       # the R-stage divider relies on D > a
            raise ValueError("ChunkUnit needs eps_q >= 1")
        R = p.ratio_bits
        self._div_bits = 1 if interval == 1 else -(-R // interval)   # b: quotient bits per cycle
        self.div_cycles = -(-R // self._div_bits) if self.rmaxprop else 0
        self.latency = self.div_cycles + 4 if self.rmaxprop else 3
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
        if self.rmaxprop and self.interval > 1:
            # 2 … n+3. Stage 2 as the iterative block's registers, n cycles of b steps, r0·ratio.
            r = self._iterative_divider(m, pipe, r["valid"], s2)
            dw = r["prod"].shift_right(R)
            q_next = resize(r["D"] - p.eps_q, fmt_shape(F["q"]))
        else:
            r = pipe.stage(**s2)

        if self.rmaxprop and self.interval == 1:
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
        elif not self.rmaxprop:
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

    def _iterative_divider(self, m: Module, pipe: Pipe, load, s2: dict) -> dict:
        """Stages 2 … ``n + 3`` for ``interval`` > 1 (class doc); returns stage ``n + 3``'s regs.

        ``load`` is stage 1's ``valid``, ``s2`` the values stage 2 would register.
        """
        R, b, n = self.params.ratio_bits, self._div_bits, self.div_cycles
        nb = n * b
        # Stage 2: held from one synapse to the next (a bubble must not overwrite them).
        hold = {}
        for name in ("neg", "wr", "D"):
            v = Value.cast(s2[name])
            hold[name] = Signal(v.shape(), name=f"s2_{name}", reset_less=True)
            with m.If(load):
                m.d.sync += hold[name].eq(v)
        D = hold["D"]
        P = Signal(D.shape(), name="div_P", reset_less=True)
        quo = Signal(nb, name="div_quo", reset_less=True)
        # ph[j] = 1: a synapse's (j+1)-th divider cycle; ph[n]: its quotient is in div_quo.
        ph = [Signal(name=f"div_ph{j}") for j in range(n + 1)]
        m.d.sync += ph[0].eq(load)
        m.d.sync += [ph[j].eq(ph[j - 1]) for j in range(1, n + 1)]

        # b restoring steps per cycle (as in the unrolled stages), quotient bits from the top.
        Pc, bits = P, []
        for _ in range(b):
            P2 = Pc.shift_left(1)
            T = P2 - D
            bit = ~T[-1]                                      # P2 ≥ D
            bits.append(bit)
            Pc = resize(Mux(bit, T, P2), unsigned(len(D)))
        m.d.sync += P.eq(Mux(load, s2["P"], Pc))
        m.d.sync += quo.eq(Cat(*reversed(bits), quo[:nb - b]) if nb > b else Cat(*reversed(bits)))
        ratio = quo[nb - R:]                                  # ⌊(a << nb) / D⌋ >> (nb − R)

        # Stage n+3: D, w_r, sign taken in the last divider cycle and held; r0·ratio after it.
        pipe.n = n + 3
        out = {"valid": Signal(name=f"s{pipe.n}_valid"),
               "prod": Signal(len(self.r0) + R, name=f"s{pipe.n}_prod", reset_less=True)}
        m.d.sync += [out["valid"].eq(ph[n]), out["prod"].eq(self.r0 * ratio)]
        for name, v in hold.items():
            out[name] = Signal(v.shape(), name=f"s{pipe.n}_{name}", reset_less=True)
            with m.If(ph[n - 1]):
                m.d.sync += out[name].eq(v)
        return out

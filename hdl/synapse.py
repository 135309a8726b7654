"""The per-synapse learning update (``docs/model.md`` section 4) as a pipelined unit.

One synapse enters per cycle; the unit is the inner loop of the learning pass, so it is the one
place where the per-synapse work of a time step is done, and it is replicated once per lane.
Besides the model's eligibility and gradient update it produces the two per-synapse terms the
Core sums while the weights stream past anyway: the drive ``w·x`` and the feedback product
``w·e`` (see :class:`SynapseUnit`).

Constant multiplies (decay codes) go through :func:`spikeloop.hdl.arith.mul_const`, which
writes them as shift-and-add (a plain ``*`` by a constant would land on an ``SB_MAC16``), so the
UP5K's eight DSP blocks are left to the variable products.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from spikeloop.params import Decay, Feedback, Kernel, Params

from .arith import decay, fmt_shape, mul_const, resize, sat, shift_trunc

__all__ = ["SynapseUnit", "Pipe", "lowpass_delta"]


# ------------------------------------------------------------------ expression helpers
def lowpass_delta(y, x, d: Decay) -> Value:
    """Unsigned low-pass ``(M·y + A·x) >> K`` (:func:`spikeloop.sim.fixed.lowpass`), as ``y + ⌊A·(x − y)/2^K⌋``.

    Exactly equal, because ``M·y + A·x = 2^K·y + A·(x − y)`` and adding a multiple of ``2^K``
    commutes with a floor division by ``2^K``. It needs one constant multiply (by the small
    ``A``) instead of two, which shortens the critical path of the synapse pipe (this stage is
    its slowest); the shift is arithmetic (floor) since ``x − y`` may be negative.
    """
    y, x = Value.cast(y), Value.cast(x)
    return y + mul_const(x - y, d.A).shift_right(d.K)


class Pipe:
    """Book-keeping for a stall-free pipeline: named stage registers, one set per stage.

    ``stage(**values)`` registers every value (``reset_less`` data; names ending in ``valid``
    are reset, so a reset pipe holds only bubbles) and returns the registers as a namespace dict;
    names get the stage number as prefix (``s3_el``) so waveforms read like the docstrings.
    """

    def __init__(self, m: Module):
        self.m = m
        self.n = 0

    def stage(self, **values) -> dict[str, Signal]:
        self.n += 1
        out = {}
        for name, v in values.items():
            v = Value.cast(v)
            reg = Signal(v.shape(), name=f"s{self.n}_{name}", reset_less=not name.endswith("valid"))
            self.m.d.sync += reg.eq(v)
            out[name] = reg
        return out


# ------------------------------------------------------------------ the unit
class SynapseUnit(wiring.Component):
    """Eligibility and gradient update of one synapse per cycle, bit-exact with ``GoldenModel.learn_pass``.

    Fully pipelined, never stalls: a synapse presented with ``valid`` = 1 comes out
    :attr:`latency` cycles later with ``out_valid`` = 1; cycles with ``valid`` = 0 are bubbles
    (their data is ignored and they come out with ``out_valid`` = 0), so the caller may insert
    them anywhere (memory waits, row changes) and match results by counting or by a delayed
    address. All outputs of one synapse appear on the same cycle, so the write-back is one
    word write at the address delayed by :attr:`latency`.

    Stages (registers at the end of each; ``s`` = ``el_shift``, ``t`` = ``m_shift``)

    1. ``p = ẑ_j · σ'_i`` (``zh.bits × sigma.bits``, unsigned: one DSP).
    2. ``inc = p >> s``; ``el₁ = sat_el(el + inc)`` (the sum is ≥ 0, only the top clamps), or
       for ``FACTORISED`` ``λ = sat_el(inc)``.
    3. ``DOUBLE_EXP`` only: ``el_flt₁ = el_flt + ⌊A_mem·(el₁ − el_flt)/2^K⌋`` (the model's
       low-pass, rewritten with one constant multiply; clamped to ``elf.max`` only when that is
       below ``el.max``, exactly where the model clamps); ``λ = el_flt₁``.
    4. ``λ·e`` (unsigned ``λ`` × signed ``e``); ``el_next = decay(el₁; syn)`` (shift-and-add).
       ``SINGLE_EXP`` uses ``λ = el₁``.
    5. ``m_next = sat_m(m + (λ·e) >>₀ t)``; ``drive = x ? w : 0``; feedback product ``fb =
       w·e`` (or ``b·e``, ``w.bits × err.bits`` signed: one DSP).

    Latency: 5 cycles for ``DOUBLE_EXP``, 4 for ``SINGLE_EXP`` and ``FACTORISED`` (stage 3 is
    skipped; the registers of stages 4 and 5 are then named ``s3_*`` and ``s4_*``).
    Per lane the variable multipliers are ``ẑ·σ'`` (16 × 8) and ``λ·e`` (16 × 16), plus
    ``w·e`` when the feedback product is enabled; the decay and low-pass constants become
    shift-and-add logic. An unsigned ``λ`` of 16 bits is a 17-bit signed operand to Yosys, so
    at the defaults ``λ·e`` maps to one ``SB_MAC16`` plus a 1 × 16 soft slice and an adder;
    formats with ``λ`` below 16 bits fit the DSP alone.

    The feedback product lives here rather than in the Core because the unit already holds
    ``w_ik`` and the row's ``e_i`` side by side in its pipe (during the output layer's pass,
    row ``i`` is an output neuron and column ``k`` a hidden one): forming ``w_ik·e_i`` at the
    same latency as the write-back lets the Core do a plain ``acc[k] += fb`` on ``out_valid``
    into its per-column accumulators, with no second copy of ``w`` or ``e`` and no extra
    pipeline alignment. With random feedback the multiplicand is the stored ``B_ki``, which is
    indexed like the output synapse ``(i, k)``; the Core then presents it on the ``b`` port.
    With uniform feedback no product is needed (``e_k = Σ_i e_i``) and the port is absent.
    The Core applies ``>>₀ frac`` and ``sat_err`` once per column after the sum.

    Parameters
    ----------
    params : Params
        Formats, kernel, decay codes and feedback mode.
    feedback : bool or None
        Build the feedback multiplier and the ``fb`` output. ``None`` (default): when the network
        has a hidden layer and feedback is not uniform. ``True`` with uniform feedback is an error.

    Attributes
    ----------
    latency : int
        Cycles from a vector on the inputs to its results on the outputs.

    Members
    -------
    valid : In(1)
        The inputs hold a synapse this cycle (0: bubble).
    w : In(signed(w.bits))
        The weight ``w_ij`` (read for the drive and the feedback product; passed through).
    el : In(unsigned(el.bits))
        Eligibility trace; absent for ``FACTORISED``.
    elf : In(unsigned(elf.bits))
        Filtered eligibility trace; ``DOUBLE_EXP`` only.
    m : In(signed(m.bits))
        Gradient accumulated so far in this chunk.
    sigma : In(unsigned(sigma.bits))
        ``σ'_i`` of the row (error-delayed by the Core when ``error_delay > 0``).
    e : In(signed(err.bits))
        ``e_i`` of the row.
    zh : In(unsigned(zh.bits))
        ``ẑ_j`` of the column (error-delayed like ``σ'``).
    x : In(1)
        Presynaptic spike ``x_j`` of this step (for the drive).
    b : In(signed(fb.bits))
        Random feedback weight ``B_ki`` (``RANDOM`` feedback with the product enabled only).
    out_valid : Out(1)
    w_out : Out(signed(w.bits))
        ``w`` unchanged (the learning pass does not move weights).
    el_next, elf_next : Out(unsigned)
        New traces (when present on the input side).
    m_next : Out(signed(m.bits))
    drive : Out(signed(w.bits))
        ``w`` if ``x`` else 0; the Core sums it per row into ``Σ_j w_ij x_j``.
    fb : Out(signed(w.bits + err.bits)) or Out(signed(fb.bits + err.bits))
        ``w·e`` (or ``b·e``), full width, exact; present when the feedback product is enabled.
    """

    def __init__(self, params: Params, *, feedback: bool | None = None):
        p = self.params = params
        F = p.formats
        if feedback is None:
            feedback = bool(p.n_hidden) and p.feedback is not Feedback.UNIFORM
        if feedback and p.feedback is Feedback.UNIFORM:
            raise ValueError("uniform feedback needs no product (e_k = Σ_i e_i): feedback=True "
                             "is only meaningful with symmetric or random feedback")
        self.feedback = bool(feedback)
        self.fb_source = None if not feedback else ("w" if p.feedback is Feedback.SYMMETRIC else "b")
        self.latency = 5 if p.kernel is Kernel.DOUBLE_EXP else 4

        ports = {"valid": In(1)}
        ports.update({name: In(fmt_shape(F[name])) for name in p.synapse_words if name != "m"})
        ports.update({
            "m": In(fmt_shape(F["m"])),
            "sigma": In(fmt_shape(F["sigma"])),
            "e": In(fmt_shape(F["err"])),
            "zh": In(fmt_shape(F["zh"])),
            "x": In(1),
        })
        if self.fb_source == "b":
            ports["b"] = In(fmt_shape(F["fb"]))
        ports.update({"out_valid": Out(1), "w_out": Out(fmt_shape(F["w"]))})
        ports.update({f"{name}_next": Out(fmt_shape(F[name])) for name in (*p.kernel.traces, "m")})
        ports["drive"] = Out(fmt_shape(F["w"]))
        if self.feedback:
            fbw = F["w"] if self.fb_source == "w" else F["fb"]
            ports["fb"] = Out(signed(fbw.bits + F["err"].bits))
        super().__init__(ports)

    def elaborate(self, platform):
        p, F = self.params, self.params.formats
        m = Module()
        pipe = Pipe(m)
        kernel = p.kernel
        traces = "el" in kernel.traces
        double = "elf" in kernel.traces

        # Values that ride along unchanged until they are used.
        carry = dict(valid=self.valid, w=self.w, x=self.x, m=self.m, e=self.e)
        if traces:
            carry["el"] = self.el
        if double:
            carry["elf"] = self.elf
        if self.fb_source == "b":
            carry["b"] = self.b

        # 1. ẑ·σ' (unsigned × unsigned).
        r = pipe.stage(p=self.zh * self.sigma, **carry)
        carry = {k: r[k] for k in carry}

        # 2. inc = p >> el_shift; el₁ = sat(el + inc)  (or λ = sat(inc) without a trace).
        inc = r["p"].shift_right(p.el_shift)
        if traces:
            carry.pop("el")
            r = pipe.stage(el1=sat(r["el"] + inc, F["el"]), **carry)
            carry = {k: r[k] for k in carry}
            el1 = r["el1"]
        else:
            r = pipe.stage(lam=sat(inc, F["el"]), **carry)
            carry = {k: r[k] for k in carry}
            lam = r["lam"]

        # 3. (double_exp) el_flt₁ = lowpass(el_flt, el₁; mem), λ = el_flt₁.
        if double:
            elf1 = lowpass_delta(carry.pop("elf"), el1, p.decay_mem)
            # The low-pass lies between el_flt and el₁, both ≥ 0: only the model's top clamp
            # (present when elf is narrower than el) can act; otherwise the value fits as is.
            if F["elf"].max < F["el"].max:
                elf1 = sat(elf1, F["elf"])
            else:
                elf1 = resize(elf1, fmt_shape(F["elf"]))
            r = pipe.stage(elf1=elf1, el1=el1, **carry)
            carry = {k: r[k] for k in carry}
            el1, lam = r["el1"], r["elf1"]
        elif traces:
            lam = el1

        # 4. λ·e, el decay.
        if not self.feedback:
            carry.pop("e")
        extra = {}
        if traces:
            extra["el_next"] = resize(decay(el1, p.decay_syn), fmt_shape(F["el"]))
        if double:
            extra["elf_next"] = lam
        r = pipe.stage(prod=lam * r["e"], **extra, **carry)
        carry = {k: r[k] for k in carry}

        # 5. m = sat_m(m + (λ·e) >>₀ m_shift); drive; the feedback product. The product is
        # formed here, from stage-4 registers, so that exactly one register follows the
        # multiplier: with a second plain copy register after it (product in stage 4, copied in
        # stage 5) Yosys 0.50's ice40_dsp packs both into the SB_MAC16 and then ties the output
        # to 0 ("Driver-driver conflict ... Resolved using constant").
        out = dict(
            m_next=sat(carry["m"] + shift_trunc(r["prod"], p.m_shift), F["m"]),
            drive=Mux(carry["x"], carry["w"], 0),
            w_out=carry["w"], out_valid=carry["valid"],
        )
        if self.feedback:
            fbw = carry["b"] if self.fb_source == "b" else carry["w"]
            out["fb"] = fbw * carry["e"]
        for k in extra:
            out[k] = r[k]
        r = pipe.stage(**out)
        assert pipe.n == self.latency
        for k, v in r.items():
            m.d.comb += getattr(self, k).eq(v)
        return m

"""The LIF neuron update (``docs/model.md`` section 1) as a pipelined unit, one neuron per cycle."""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Module, Mux, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from spikeloop.params import Params

from .arith import decay, fmt_shape, mul_const, pipe_delay, pipe_reg, sat, shift_trunc
from .layouts import ref_bits

__all__ = ["NeuronUnit", "RACC_BITS", "POW_CAP", "drive_bits"]

#: Width of the regulariser's accumulator ``racc`` (saturates at ``2^47 − 1``, docs/model.md).
RACC_BITS = 47
#: Cap on ``rate^a`` and on each of its partial products (docs/model.md).
POW_CAP = 1 << 40


def drive_bits(p: Params, n_pre: int | None = None) -> int:
    """Width of the signed drive ``Σ_j w_ij x_j`` of up to ``n_pre`` weights, exact (never saturated).

    ``n_pre`` defaults to the widest layer input in ``p``. ``n_pre`` weights of ``w.bits`` bits sum
    to at most ``n_pre · 2^(w.bits − 1)`` in magnitude, which ``w.bits + ⌈log2(n_pre + 1)⌉`` bits hold.
    """
    if n_pre is None:
        n_pre = max(a for a, _ in p.layers)
    return p.formats["w"].bits + ceil_log2(n_pre + 1)


class NeuronUnit(wiring.Component):
    """LIF update of one neuron per cycle, bit-exact with ``GoldenModel.neuron_pass``.

    Fully pipelined and never stalls: a vector enters on every cycle on which ``valid`` is 1 and
    leaves :attr:`latency` cycles later with ``out_valid`` = 1; cycles with ``valid`` = 0 are
    bubbles that travel down the pipe and come out as ``out_valid`` = 0, so the caller may
    insert them anywhere (e.g. while waiting for memory) and match results by counting.

    ``I_next`` is computed from the ``I`` and ``drive`` given with the same vector, independently
    of the rest: in the core the drive of step ``n`` is only known after the learning pass has
    read the weights, so the core may run the unit once for ``(U, ref, σ')`` and use ``I_next``
    of a later pass (or of the same one, as the golden model does).

    Pipeline (``a`` = ``reg_exponent``; registers at the end of each stage)

    1. ``M_mem·U + A_mem·I`` and ``M_syn·I`` (constant multiplies).
    2. ``V = sat_u(· >>₀ K_mem)``, 0 if refractory; ``I_next = sat_i((M_syn·I) >>₀ K_syn + drive)``.
    3. ``S``, ``U_next``, ``ref_next``; σ' ROM read (synchronous, address ``min(|V − ϑ| >> s,
       2^a − 1)``); regulariser: ``sat_r(rate + S·one)``.

    With ``p.regulariser`` the pipe continues (other outputs are delayed to stay aligned):

    4. ``rate_next = decay(·; rate)``.
    5. … ``3 + a``: ``pw = min((pw · rate_next) >> frac_r, 2^40)``, ``a − 1`` stages.
    last. ``racc_next = min(racc + pw, 2^47 − 1)``.

    Latency: 3 cycles without the regulariser, ``a + 4`` with it; one more with
    ``register_inputs``.

    Parameters
    ----------
    params : Params
        Every width and constant comes from here.
    n_pre : int, optional
        Largest number of weights summed into ``drive`` (sets its width, see :func:`drive_bits`);
        defaults to the widest layer input of ``params``.
    register_inputs : bool
        Register every input before stage 1 (one more cycle of latency). For a nearly full
        iCE40, where the route from a block RAM's output into stage 1's constant multiplies
        sets the clock.

    Attributes
    ----------
    latency : int
        Cycles from a vector at the input to its result at the output.

    Members
    -------
    valid : In(1)
        The inputs hold a vector this cycle.
    U, I : In(signed(u.bits)), In(signed(i.bits))
        Membrane potential and synaptic current of the last step.
    ref : In(unsigned(ref_bits))
        Refractory steps left.
    drive : In(signed(drive_bits))
        ``Σ_j w_ij x_j``, exact.
    use_rate : In(1)
        Apply the regulariser's rate update to this neuron (hidden layer). Only acts when
        ``params.regulariser``; otherwise, or when 0, ``rate``/``racc`` pass through unchanged.
    rate : In(unsigned(rate.bits))
    racc : In(unsigned(47))
    out_valid : Out(1)
    V : Out(signed(u.bits))
        Membrane potential before the reset (after the refractory clamp); σ' is taken from it.
    S : Out(1)
        Spike.
    U_next : Out(signed(u.bits))
    ref_next : Out(unsigned(ref_bits))
    sigma : Out(unsigned(sigma.bits))
        Surrogate derivative σ'.
    I_next : Out(signed(i.bits))
    rate_next : Out(unsigned(rate.bits))
    racc_next : Out(unsigned(47))
    """

    def __init__(self, params: Params, n_pre: int | None = None, register_inputs: bool = False):
        self.params = p = params
        F = p.formats
        self.register_inputs = bool(register_inputs)
        self.latency = 3 + (p.reg_exponent + 1 if p.regulariser else 0) + self.register_inputs
        self.drive_bits = drive_bits(p, n_pre)
        self.ref_bits = ref_bits(p)
        super().__init__({
            "valid": In(1),
            "U": In(fmt_shape(F["u"])),
            "I": In(fmt_shape(F["i"])),
            "ref": In(unsigned(self.ref_bits)),
            "drive": In(signed(self.drive_bits)),
            "use_rate": In(1),
            "rate": In(fmt_shape(F["rate"])),
            "racc": In(unsigned(RACC_BITS)),
            "out_valid": Out(1),
            "V": Out(fmt_shape(F["u"])),
            "S": Out(1),
            "U_next": Out(fmt_shape(F["u"])),
            "ref_next": Out(unsigned(self.ref_bits)),
            "sigma": Out(fmt_shape(F["sigma"])),
            "I_next": Out(fmt_shape(F["i"])),
            "rate_next": Out(fmt_shape(F["rate"])),
            "racc_next": Out(unsigned(RACC_BITS)),
        })

    def elaborate(self, platform):
        p, F = self.params, self.params.formats
        m = Module()
        mem, syn = p.decay_mem, p.decay_syn
        theta = p.threshold_q
        R = p.refractory_steps
        x = self                                      # the inputs, registered if asked
        if self.register_inputs:
            names = ("valid", "U", "I", "ref", "drive", "use_rate", "rate", "racc")
            x = SimpleNamespace(**{n: pipe_reg(m, getattr(self, n), f"s0_{n}") for n in names})

        # ---- stage 1: constant products -----------------------------------------------------
        # lowpass₀(U, I; mem) = (M·U + A·I) >>₀ K: the sum is registered before the shift.
        s1_valid = pipe_reg(m, x.valid, "s1_valid")
        s1_vsum = pipe_reg(m, mul_const(x.U, mem.M) + mul_const(x.I, mem.A), "s1_vsum")
        s1_isyn = pipe_reg(m, mul_const(x.I, syn.M), "s1_isyn")
        s1_ref = pipe_reg(m, x.ref, "s1_ref")
        s1_drive = pipe_reg(m, x.drive, "s1_drive")

        # ---- stage 2: V and I_next ----------------------------------------------------------
        refr = s1_ref != 0
        v_lp = sat(shift_trunc(s1_vsum, mem.K), F["u"])
        s2_valid = pipe_reg(m, s1_valid, "s2_valid")
        s2_V = pipe_reg(m, Mux(refr, 0, v_lp), "s2_V", fmt_shape(F["u"]))
        s2_refr = pipe_reg(m, refr, "s2_refr")
        s2_ref = pipe_reg(m, s1_ref, "s2_ref")
        s2_I = pipe_reg(m, sat(shift_trunc(s1_isyn, syn.K) + s1_drive, F["i"]), "s2_I_next")

        # ---- stage 3: spike, reset, refractory counter, σ' ROM -----------------------------
        spike = (s2_V > theta) & ~s2_refr
        ref_next = Mux(s2_refr, s2_ref - 1, Mux(spike, R, 0))
        n_rom = 1 << p.sigma_addr_bits
        dist = abs(s2_V - theta)                      # unsigned, u.bits + 1 wide
        idx = dist.shift_right(p.sigma_shift)
        addr = Mux(idx > n_rom - 1, n_rom - 1, idx)
        m.submodules.sigma_rom = rom = Memory(
            shape=fmt_shape(F["sigma"]), depth=n_rom, init=[int(v) for v in p.sigma_table])
        rd = rom.read_port()                          # synchronous: data belongs to stage 3
        m.d.comb += rd.addr.eq(addr[:p.sigma_addr_bits])

        s3_valid = pipe_reg(m, s2_valid, "s3_valid")
        s3_V = pipe_reg(m, s2_V, "s3_V")
        s3_S = pipe_reg(m, spike, "s3_S")
        s3_U = pipe_reg(m, Mux(spike, 0, s2_V), "s3_U_next", fmt_shape(F["u"]))
        s3_ref = pipe_reg(m, ref_next, "s3_ref_next", unsigned(self.ref_bits))
        s3_I = pipe_reg(m, s2_I, "s3_I_next")
        s3_sigma = rd.data

        # rate and racc travel alongside up to stage 3.
        rate3 = pipe_delay(m, x.rate, 2, "rate")
        racc3 = pipe_delay(m, x.racc, 3, "racc")

        if not p.regulariser:
            outs = dict(valid=s3_valid, V=s3_V, S=s3_S, U=s3_U, ref=s3_ref, sigma=s3_sigma,
                        I=s3_I, rate=pipe_reg(m, rate3, "s3_rate"), racc=racc3)
        else:
            fr = F["rate"]
            # stage 3 (continued): r + S, saturated (S is known in this stage).
            s3_rs = pipe_reg(m, sat(rate3 + Mux(spike, fr.one, 0), fr), "s3_rate_sum")
            s3_rate = pipe_reg(m, rate3, "s3_rate")   # the unmodified rate (use_rate = 0)
            # stage 4: the decay.
            s4_r = pipe_reg(m, decay(s3_rs, p.decay_rate), "s4_rate_next", fmt_shape(fr))
            # stages 5 .. 3 + a: pw = min((pw · r) >> frac, 2^40), a − 1 times. Each pw register
            # is as wide as its largest possible value (r < 2^rate.bits), so early stages use
            # narrow multipliers and the cap is only built where it can be reached.
            r_max = (fr.max * p.decay_rate.M) >> p.decay_rate.K
            pw, r, pw_max = s4_r, s4_r, r_max
            for k in range(p.reg_exponent - 1):
                prod = (pw * r).shift_right(fr.frac)
                raw_max = (pw_max * r_max) >> fr.frac
                if raw_max > POW_CAP:
                    prod = Mux(prod > POW_CAP, POW_CAP, prod)
                pw_max = min(raw_max, POW_CAP)
                pw = pipe_reg(m, prod, f"s{5 + k}_pow", unsigned(max(1, pw_max.bit_length())))
                r = pipe_reg(m, r, f"s{5 + k}_rate_next")
            n_pow = p.reg_exponent - 1
            # last stage: racc + pw, capped.
            rmax = (1 << RACC_BITS) - 1
            racc_in = pipe_delay(m, racc3, 1 + n_pow, "racc_in")
            use = pipe_delay(m, x.use_rate, 4 + n_pow, "use_in")
            rate_in = pipe_delay(m, s3_rate, 1 + n_pow, "rate_in")
            acc = racc_in + pw
            racc_new = Mux(acc > rmax, rmax, acc)
            extra = 2 + n_pow                          # stages after stage 3
            outs = dict(
                valid=pipe_delay(m, s3_valid, extra, "valid"),
                V=pipe_delay(m, s3_V, extra, "V"),
                S=pipe_delay(m, s3_S, extra, "S"),
                U=pipe_delay(m, s3_U, extra, "U_next"),
                ref=pipe_delay(m, s3_ref, extra, "ref_next"),
                sigma=pipe_delay(m, s3_sigma, extra, "sigma"),
                I=pipe_delay(m, s3_I, extra, "I_next"),
                rate=pipe_reg(m, Mux(use, r, rate_in), "out_rate_next", fmt_shape(fr)),
                racc=pipe_reg(m, Mux(use, racc_new, racc_in), "out_racc_next",
                              unsigned(RACC_BITS)),
            )

        m.d.comb += [
            self.out_valid.eq(outs["valid"]),
            self.V.eq(outs["V"]),
            self.S.eq(outs["S"]),
            self.U_next.eq(outs["U"]),
            self.ref_next.eq(outs["ref"]),
            self.sigma.eq(outs["sigma"]),
            self.I_next.eq(outs["I"]),
            self.rate_next.eq(outs["rate"]),
            self.racc_next.eq(outs["racc"]),
        ]
        return m

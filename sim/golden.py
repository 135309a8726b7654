"""The golden model: the bit-exact, integer-only executable form of ``docs/model.md``.

State is batched: every array has a leading axis of ``batch`` independent networks (one per seed),
so a multi-seed experiment costs one set of numpy calls per step. Per-synapse arrays are shaped
``(batch, n_post, n_pre)`` and updated in place in preallocated buffers of the narrowest dtype
that provably cannot overflow (checked from the formats at construction).
"""

from __future__ import annotations

import numpy as np

from spikeloop.params import ErrorSource, Feedback, Kernel, Optimiser, Params
from spikeloop.sim import fixed
from spikeloop.sim.fixed import sat
from spikeloop.sim.stepmodel import StepModel

__all__ = ["GoldenModel", "init_weights"]

def init_weights(p: Params, seeds) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Initial weights per layer ``(batch, n_post, n_pre)`` and feedback ``(batch, n_hidden, n_out)``.

    Drawn in float (mV) from ``N(w_init_mean, w_init_std)`` per seed, then quantised and clipped to
    ±w_max; the float reference starts from exactly these values.
    """
    fw, ffb = p.formats["w"], p.formats["fb"]
    ws = [np.empty((len(seeds), n_post, n_pre), np.int64) for n_pre, n_post in p.layers]
    fb = np.empty((len(seeds), p.n_hidden, p.n_out), np.int64) if p.n_hidden else None
    for b, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        for w, (n_pre, n_post) in zip(ws, p.layers):
            w[b] = np.clip(fw.quantise(rng.normal(p.w_init_mean_mv, p.w_init_std_mv, (n_post, n_pre))),
                           -p.w_max_q, p.w_max_q)
        if fb is not None:
            if p.feedback is Feedback.RANDOM:
                fb[b] = ffb.quantise(rng.normal(0.0, 1.0, (p.n_hidden, p.n_out)))
            else:
                fb[b] = ffb.one if p.feedback is Feedback.UNIFORM else 0
    return ws, fb


class _Layer:
    """State of one weight layer and its postsynaptic neurons."""

    def __init__(self, p: Params, name: str, n_pre: int, n_post: int, batch: int, w: np.ndarray,
                 narrow: bool = True):
        F = p.formats
        self.name, self.n_pre, self.n_post = name, n_pre, n_post
        shape = (batch, n_post, n_pre)
        # Per-synapse words: int32 when every intermediate provably fits, else int64.
        k = max(p.decay_mem.K, p.decay_syn.K)
        fits = (F["zh"].bits + F["sigma"].bits <= 31 and F["el"].bits + k <= 30
                and max(F["el"].bits, F["elf"].bits) + F["err"].bits <= 32 and F["m"].bits <= 30)
        dt = np.int32 if fits and narrow else np.int64
        self.dtype = dt
        self.w = w.astype(dt)
        self.w_f = self.w.astype(np.float64)       # exact copy for BLAS matvec (|Σ| < 2^53)
        self.m = np.zeros(shape, dt)
        self.q = np.zeros(shape, np.int64) if p.optimiser is Optimiser.RMAXPROP else None
        self.el = np.zeros(shape, dt) if "el" in p.kernel.traces else None
        self.elf = np.zeros(shape, dt) if "elf" in p.kernel.traces else None
        self.tmp = np.empty(shape, dt)
        # Constants as (1, 1, 1) arrays: numpy's fast integer loops skip scalar operands.
        k3 = lambda v: np.full((1, 1, 1), v, dt)  # noqa: E731
        self.const = {
            "zero": k3(0), "el_max": k3(F["el"].max), "elf_max": k3(F["elf"].max),
            "m_min": k3(F["m"].min), "m_max": k3(F["m"].max),
            "m_bias": k3((1 << p.m_shift) - 1), "m_shift": k3(p.m_shift), "el_shift": k3(p.el_shift),
            "mem_M": k3(p.decay_mem.M), "mem_A": k3(p.decay_mem.A), "mem_K": k3(p.decay_mem.K),
            "syn_M": k3(p.decay_syn.M), "syn_K": k3(p.decay_syn.K),
        }
        self.tmp2 = np.empty(shape, dt)
        vec = lambda n: np.zeros((batch, n), np.int64)  # noqa: E731
        self.U, self.I, self.ref, self.sigma = vec(n_post), vec(n_post), vec(n_post), vec(n_post)
        self.S = np.zeros((batch, n_post), bool)
        self.z, self.zh = vec(n_pre), vec(n_pre)
        self.e = vec(n_post)
        self.rate = vec(n_post) if p.regulariser else None
        self.racc = vec(n_post) if p.regulariser else None
        D = p.error_delay
        self.sigma_d = np.zeros((D, batch, n_post), np.int64) if D else None
        self.zh_d = np.zeros((D, batch, n_pre), np.int64) if D else None


class GoldenModel(StepModel):
    """Integer SuperSpike network, one time step per :meth:`step`.

    Parameters
    ----------
    params : Params
    seeds : int or sequence of int
        One network per seed (the batch); weights are drawn from each seed by :func:`init_weights`.
    weights : list of arrays, optional
        Initial weights per layer, ``(batch, n_post, n_pre)`` integers in the 'w' format.
    feedback : array, optional
        Feedback matrix ``(batch, n_hidden, n_out)`` in the 'fb' format (random/uniform feedback).
    narrow : bool
        Keep per-synapse words in int32 where the formats allow (False: int64 throughout; the
        results are identical, which a test checks).

    Members
    -------
    t : int
        Steps taken so far.
    """

    def __init__(self, params: Params, seeds=0, weights=None, feedback=None, narrow: bool = True):
        p = self.p = params
        self.seeds = [int(s) for s in np.atleast_1d(seeds)]
        self.batch = B = len(self.seeds)
        ws, fb = init_weights(p, self.seeds)
        if weights is not None:
            ws = [np.asarray(w, np.int64).reshape(B, *w0.shape[1:]) for w, w0 in zip(weights, ws)]
        if feedback is not None:
            fb = np.asarray(feedback, np.int64).reshape(fb.shape)
        names = ("hid", "out") if p.n_hidden else ("out",)
        self.layers = [_Layer(p, n, n_pre, n_post, B, w, narrow)
                       for n, (n_pre, n_post), w in zip(names, p.layers, ws)]
        self.fb = fb
        self.e1 = np.zeros((B, p.n_out), np.int64)   # on-chip error filter (TARGET source)
        self.e2 = np.zeros((B, p.n_out), np.int64)
        self.t = 0
        self.r0_q = p.r0_q                 # a runtime register: the host may lower it
        self._sig_table = p.sigma_table.astype(np.int64)
        self._x_hid = np.zeros((B, p.n_hidden), bool)  # hidden spikes of the last step

    # ------------------------------------------------------------------ one time step
    def step(self, x, target=None, error=None) -> np.ndarray:
        """Advance one step.

        Parameters
        ----------
        x : bool array (n_in,) or (batch, n_in)
            Input spikes of this step.
        target : bool array (n_out,) or (batch, n_out)
            Target spikes (``error_source = target``); ``None`` means no target spikes.
        error : int array (n_out,) or (batch, n_out)
            Errors in the 'err' format (``error_source = host``); ``None`` means zero.

        Returns
        -------
        bool array (batch, n_out): output spikes of this step.
        """
        p, F = self.p, self.p.formats
        x = self._batched(x, p.n_in, "x", bool)
        inputs = [x] + ([self._x_hid] if p.n_hidden else [])
        for L, xin in zip(self.layers, inputs):
            self.neuron_pass(L, self.drive(L, xin))
            self.pre_trace_pass(L, xin)
        out = self.layers[-1]
        if p.n_hidden:
            self._x_hid = self.layers[0].S.copy()

        # Output error (section "Error" of docs/model.md).
        if p.error_source is ErrorSource.TARGET:
            tgt = (np.zeros((self.batch, p.n_out), np.int64) if target is None
                   else self._batched(target, p.n_out, "target", bool).astype(np.int64))
            fe = F["err"]
            self.e1 = sat(self.e1 + (tgt - out.S) * fe.one, fe)
            self.e2 = sat(fixed.lowpass_signed(self.e2, self.e1, p.decay_mem), fe)
            self.e1 = fixed.decay_signed(self.e1, p.decay_syn)
            out.e = self.e2.copy()
        else:
            out.e = (np.zeros((self.batch, p.n_out), np.int64) if error is None
                     else sat(self._batched(error, p.n_out, "error", np.int64), F["err"]))
        if p.n_hidden:
            hid = self.layers[0]
            if p.feedback is Feedback.SYMMETRIC:
                acc, s = np.einsum("bij,bi->bj", out.w.astype(np.int64), out.e), F["w"].frac
            else:
                acc, s = np.einsum("bki,bi->bk", self.fb, out.e), F["fb"].frac
            hid.e = sat(fixed.shift_trunc(acc, s), F["err"])

        for L in self.layers:
            self.learn_pass(L)
        self.t += 1
        if self.t % p.chunk_steps == 0:
            for L in self.layers:
                self.chunk_end_pass(L)
        return out.S.copy()

    @staticmethod
    def drive(L: _Layer, x) -> np.ndarray:
        """``Σ_j w_ij x_j`` per neuron, exact (BLAS on float64 copies of the integer weights)."""
        return np.matmul(L.w_f, x[:, :, None].astype(np.float64))[:, :, 0].astype(np.int64)

    def neuron_pass(self, L: _Layer, drive):
        """LIF update of every neuron of ``L`` (docs/model.md section 1); ``drive`` is ``Σ_j w_ij x_j``."""
        p, F = self.p, self.p.formats
        refr = L.ref > 0
        V = sat(fixed.lowpass_signed(L.U, L.I, p.decay_mem), F["u"])
        V[refr] = 0
        L.S = (V > p.threshold_q) & ~refr
        L.U = np.where(L.S, 0, V)
        L.ref = np.where(refr, L.ref - 1, np.where(L.S, p.refractory_steps, 0))
        addr = np.minimum(np.abs(V - p.threshold_q) >> p.sigma_shift, len(self._sig_table) - 1)
        L.sigma = self._sig_table[addr]
        L.I = sat(fixed.decay_signed(L.I, p.decay_syn) + drive, F["i"])
        if p.regulariser and L is self.layers[0] and p.n_hidden:
            fr = F["rate"]
            L.rate = fixed.decay(sat(L.rate + L.S * fr.one, fr), p.decay_rate)
            pw = L.rate.copy()
            for _ in range(p.reg_exponent - 1):
                pw = np.minimum((pw * L.rate) >> fr.frac, 1 << 40)
            L.racc = np.minimum(L.racc + pw, (1 << 47) - 1)

    def pre_trace_pass(self, L: _Layer, x):
        """Presynaptic traces z, ẑ of every input of ``L`` (section 2)."""
        p, F = self.p, self.p.formats
        L.z = fixed.decay(sat(L.z + x * F["z"].one, F["z"]), p.decay_syn)
        L.zh = fixed.lowpass(L.zh, L.z, p.decay_mem)   # stays within the 'z' range

    def learn_pass(self, L: _Layer):
        """Eligibility and gradient accumulation: the O(n_pre·n_post) pass, in place."""
        p, c = self.p, L.const
        sig, zh = L.sigma, L.zh
        if L.sigma_d is not None:                     # align σ', ẑ with an error D steps late
            k = self.t % p.error_delay
            sig, L.sigma_d[k] = L.sigma_d[k].copy(), sig
            zh, L.zh_d[k] = L.zh_d[k].copy(), zh
        dt = L.dtype
        t, t2 = L.tmp, L.tmp2
        np.multiply(sig.astype(dt)[:, :, None], zh.astype(dt)[:, None, :], out=t)
        np.right_shift(t, c["el_shift"], out=t)     # ẑ_j σ'_i in the 'el' format
        if p.kernel is Kernel.FACTORISED:
            np.clip(t, c["zero"], c["el_max"], out=t)
            lam = t
        else:
            el = L.el
            np.add(el, t, out=el)
            np.clip(el, c["zero"], c["el_max"], out=el)
            lam = el
            if p.kernel is Kernel.DOUBLE_EXP:
                np.multiply(L.elf, c["mem_M"], out=L.elf)
                np.multiply(el, c["mem_A"], out=t)
                np.add(L.elf, t, out=L.elf)
                np.right_shift(L.elf, c["mem_K"], out=L.elf)
                if p.formats["elf"].max < p.formats["el"].max:
                    np.clip(L.elf, c["zero"], c["elf_max"], out=L.elf)
                lam = L.elf
        # m += (λ·e) >>₀ m_shift: rows with e_i < 0 get the round-toward-zero bias
        e = L.e.astype(dt)[:, :, None]
        np.multiply(lam, e, out=t2)
        if p.m_shift:
            np.add(t2, np.where(e < 0, c["m_bias"], c["zero"]), out=t2)
            np.right_shift(t2, c["m_shift"], out=t2)
        np.add(L.m, t2, out=L.m)
        np.clip(L.m, c["m_min"], c["m_max"], out=L.m)
        if p.kernel is not Kernel.FACTORISED:
            np.multiply(L.el, c["syn_M"], out=L.el)
            np.right_shift(L.el, c["syn_K"], out=L.el)

    def chunk_end_pass(self, L: _Layer):
        """Weight update every ``chunk_steps`` steps (docs/model.md, "Chunk end")."""
        p, F = self.p, self.p.formats
        m = L.m.astype(np.int64)
        a = np.minimum(np.abs(m), F["q"].max)
        if p.optimiser is Optimiser.RMAXPROP:
            L.q = np.maximum(a, fixed.decay(L.q, p.decay_q))
            ratio = (a << p.ratio_bits) // (L.q + p.eps_q)
            dw = (self.r0_q * ratio) >> p.ratio_bits
        else:
            dw = a >> p.lr_shift
        dw = np.where(m < 0, -dw, dw)
        w = L.w.astype(np.int64)
        if L.racc is not None:
            fr = F["rate"]
            c = np.minimum((L.racc * p.rho_q) >> 16, fr.one)       # ρ Σ rate^a, capped at 1
            dw -= fixed.shift_trunc(w * c[:, :, None], fr.frac)
            L.racc[:] = 0
        w = np.clip(w + dw, -p.w_max_q, p.w_max_q)
        L.w[:] = w
        L.w_f[:] = w
        L.m[:] = 0

    # ------------------------------------------------------------------ observation
    @property
    def weights(self) -> list[np.ndarray]:
        return [L.w.astype(np.int64) for L in self.layers]

"""Float64 reference: the same equations as the golden model, in physical units, unquantised.

It shows what quantisation costs. Differences from :mod:`spikeloop.sim.golden` are only those
``docs/model.md`` lists: real numbers instead of words (no rounding, no saturation except the
weight clip), σ' computed exactly instead of from the ROM, and (with ``decays="exact"``) the exact
exponentials instead of the decay codes. Units: mV for U, I, w; spikes for traces.
"""

from __future__ import annotations

import numpy as np

from spikeloop.params import ErrorSource, Feedback, Kernel, Optimiser, Params
from spikeloop.sim.golden import init_weights
from spikeloop.sim.stepmodel import StepModel

__all__ = ["FloatModel"]


class _FLayer:
    def __init__(self, name, n_pre, n_post, batch, w, p: Params):
        self.name, self.n_pre, self.n_post = name, n_pre, n_post
        shape = (batch, n_post, n_pre)
        self.w = w
        self.m = np.zeros(shape)
        self.q = np.zeros(shape) if p.optimiser is Optimiser.RMAXPROP else None
        self.el = np.zeros(shape) if "el" in p.kernel.traces else None
        self.elf = np.zeros(shape) if "elf" in p.kernel.traces else None
        self.tmp = np.empty(shape)
        vec = lambda n: np.zeros((batch, n))  # noqa: E731
        self.U, self.I, self.sigma, self.z, self.zh = vec(n_post), vec(n_post), vec(n_post), vec(n_pre), vec(n_pre)
        self.ref = np.zeros((batch, n_post), np.int64)
        self.S = np.zeros((batch, n_post), bool)
        self.e = vec(n_post)
        self.rate = vec(n_post) if p.regulariser else None
        self.racc = vec(n_post) if p.regulariser else None
        D = p.error_delay
        self.sigma_d = np.zeros((D, batch, n_post)) if D else None
        self.zh_d = np.zeros((D, batch, n_pre)) if D else None


class FloatModel(StepModel):
    """Float64 SuperSpike network with the golden model's step API.

    Parameters
    ----------
    params : Params
    seeds : int or sequence of int
        Same meaning as for :class:`~spikeloop.sim.golden.GoldenModel`; the initial weights are the
        golden model's quantised ones, converted to mV, so both start from the same point.
    decays : {"exact", "codes"}
        Use ``exp(−dt/τ)`` or the decay codes' factors ``M/2^K``.
    """

    def __init__(self, params: Params, seeds=0, weights=None, feedback=None, decays: str = "exact"):
        if decays not in ("exact", "codes"):
            raise ValueError(f"decays must be 'exact' or 'codes', not {decays!r}")
        p = self.p = params
        F = p.formats
        self.seeds = [int(s) for s in np.atleast_1d(seeds)]
        self.batch = B = len(self.seeds)
        ws, fb = init_weights(p, self.seeds)
        if weights is not None:      # given in the 'w' format, like the golden model's
            ws = [np.asarray(w).reshape(w0.shape) for w, w0 in zip(weights, ws)]
        if feedback is not None:
            fb = np.asarray(feedback).reshape(fb.shape)
        ws = [F["w"].real(w) for w in ws]
        self.fb = None if fb is None else F["fb"].real(fb)
        code = {n: getattr(p, f"decay_{n}").factor for n in ("mem", "syn", "rate", "q")}
        self.f = code if decays == "codes" else {n: p.exact_factor(n) for n in code}
        names = ("hid", "out") if p.n_hidden else ("out",)
        self.layers = [_FLayer(n, a, b, B, w, p) for n, (a, b), w in zip(names, p.layers, ws)]
        self.e1 = np.zeros((B, p.n_out))
        self.e2 = np.zeros((B, p.n_out))
        self.t = 0
        self.r0_mv = p.r0_mv
        self._x_hid = np.zeros((B, p.n_hidden), bool)
        self.theta = p.threshold_mv
        # The fixed optimiser's rate in mV per unit of m, matching Δw = m >> lr_shift in LSBs.
        self.fixed_lr = 2.0 ** (F["m"].frac - p.lr_shift - F["w"].frac)

    snapshot_dtype = np.float64

    def step(self, x, target=None, error=None) -> np.ndarray:
        """Advance one step; ``error`` is in real units (the 'err' format's value, not its word)."""
        p = self.p
        x = self._batched(x, p.n_in, "x", bool)
        inputs = [x] + ([self._x_hid] if p.n_hidden else [])
        for L, xin in zip(self.layers, inputs):
            self._neurons(L, xin)
            a = 1.0 - self.f["mem"]
            L.z = (L.z + xin) * self.f["syn"]
            L.zh += a * (L.z - L.zh)
        out = self.layers[-1]
        if p.n_hidden:
            self._x_hid = self.layers[0].S.copy()
        if p.error_source is ErrorSource.TARGET:
            tgt = 0.0 if target is None else self._batched(target, p.n_out, "target", float)
            self.e1 = self.e1 + (tgt - out.S)
            self.e2 += (1.0 - self.f["mem"]) * (self.e1 - self.e2)
            self.e1 = self.e1 * self.f["syn"]
            out.e = self.e2.copy()
        else:
            out.e = np.zeros((self.batch, p.n_out)) if error is None else self._batched(error, p.n_out, "error", float)
        if p.n_hidden:
            B = np.swapaxes(out.w, 1, 2) if p.feedback is Feedback.SYMMETRIC else self.fb
            self.layers[0].e = np.einsum("bki,bi->bk", B, out.e)
        for L in self.layers:
            self._learn(L)
        self.t += 1
        if self.t % p.chunk_steps == 0:
            for L in self.layers:
                self._chunk_end(L)
        return out.S.copy()

    def _neurons(self, L, x):
        p = self.p
        refr = L.ref > 0
        V = L.U + (1.0 - self.f["mem"]) * (L.I - L.U)
        V[refr] = 0.0
        L.S = (V > self.theta) & ~refr
        L.U = np.where(L.S, 0.0, V)
        L.ref = np.where(refr, L.ref - 1, np.where(L.S, p.refractory_steps, 0))
        L.sigma = 1.0 / (1.0 + p.beta_per_mv * np.abs(V - self.theta)) ** 2
        L.I = L.I * self.f["syn"] + np.matmul(L.w, x[:, :, None].astype(float))[:, :, 0]
        if L.rate is not None and L is self.layers[0]:
            L.rate = (L.rate + L.S) * self.f["rate"]
            L.racc += L.rate ** p.reg_exponent

    def _learn(self, L):
        p = self.p
        sig, zh = L.sigma, L.zh
        if L.sigma_d is not None:
            k = self.t % p.error_delay
            sig, L.sigma_d[k] = L.sigma_d[k].copy(), sig
            zh, L.zh_d[k] = L.zh_d[k].copy(), zh
        t = L.tmp
        np.multiply(sig[:, :, None], zh[:, None, :], out=t)
        if p.kernel is Kernel.FACTORISED:
            lam = t
        else:
            L.el += t
            lam = L.el
            if p.kernel is Kernel.DOUBLE_EXP:
                np.subtract(L.el, L.elf, out=t)
                t *= 1.0 - self.f["mem"]
                L.elf += t
                lam = L.elf
        np.multiply(lam, L.e[:, :, None], out=t)
        L.m += t
        if L.el is not None:
            L.el *= self.f["syn"]

    def _chunk_end(self, L):
        p = self.p
        if p.optimiser is Optimiser.RMAXPROP:
            L.q = np.maximum(np.abs(L.m), self.f["q"] * L.q)
            dw = self.r0_mv * L.m / (L.q + p.eps)
        else:
            dw = self.fixed_lr * L.m
        if L.racc is not None:
            dw -= L.w * np.minimum(p.rho * L.racc, 1.0)[:, :, None]
            L.racc[:] = 0.0
        np.clip(L.w + dw, -p.w_max_mv, p.w_max_mv, out=L.w)
        L.m[:] = 0.0

    # ------------------------------------------------------------------ observation
    @property
    def weights(self) -> list[np.ndarray]:
        return [L.w.copy() for L in self.layers]

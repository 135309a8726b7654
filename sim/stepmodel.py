"""What the golden model and the float reference share: batching, snapshots and the run loop."""

from __future__ import annotations

import numpy as np

from spikeloop.params import ErrorSource

__all__ = ["StepModel", "STATE_WORDS"]

#: Per-layer state variables a snapshot holds (``"<layer>.<word>"``), with the format each uses.
STATE_WORDS = {
    "U": "u", "I": "i", "ref": None, "S": None, "sigma": "sigma", "z": "z", "zh": "zh",
    "el": "el", "elf": "elf", "m": "m", "q": "q", "w": "w", "e": "err", "rate": "rate", "racc": None,
}


class StepModel:
    """Base of both models: subclasses set ``p``, ``batch``, ``layers``, ``e1``, ``e2`` and ``step``."""

    snapshot_dtype = np.int64

    def _batched(self, a, n, name, dtype):
        a = np.asarray(a)
        if a.ndim == 1:
            a = a[None] if self.batch == 1 else np.broadcast_to(a, (self.batch, a.shape[0]))
        if a.shape != (self.batch, n):
            raise ValueError(f"{name} must have shape ({n},) or ({self.batch}, {n}), not {a.shape}")
        return a.astype(dtype, copy=False)

    def layer(self, name):
        for L in self.layers:
            if L.name == name:
                return L
        raise KeyError(f"layer must be one of {[L.name for L in self.layers]}, not {name!r}")

    def snapshot(self) -> dict[str, np.ndarray]:
        """Copies of every state variable, keyed ``"<layer>.<word>"`` (plus ``err.e1``/``err.e2``)."""
        snap = {}
        for L in self.layers:
            for name in STATE_WORDS:
                v = getattr(L, name)
                if v is not None:
                    snap[f"{L.name}.{name}"] = np.array(v, dtype=self.snapshot_dtype)
        if self.p.error_source is ErrorSource.TARGET:
            snap["err.e1"] = np.array(self.e1, dtype=self.snapshot_dtype)
            snap["err.e2"] = np.array(self.e2, dtype=self.snapshot_dtype)
        return snap

    def run(self, inputs, targets=None, errors=None, record=("out.U",)):
        """Run ``T`` steps; returns ``(spikes (batch, T, n_out), {name: (batch, T, ...)})``.

        ``inputs`` is ``(T, n_in)`` (shared by the batch) or ``(batch, T, n_in)``; likewise targets
        and errors. ``record`` names snapshot variables to keep every step.
        """
        inputs = np.asarray(inputs)
        T = inputs.shape[-2]
        pick = lambda a, n: None if a is None else np.asarray(a)[..., n, :]  # noqa: E731
        out = np.zeros((self.batch, T, self.p.n_out), bool)
        where = [(name, self.layer(name.split(".")[0]), name.split(".")[1]) for name in record]
        rec = {}
        for n in range(T):
            out[:, n] = self.step(inputs[..., n, :], pick(targets, n), pick(errors, n))
            for name, L, word in where:
                v = getattr(L, word)
                if name not in rec:
                    rec[name] = np.zeros((self.batch, T) + v.shape[1:], self.snapshot_dtype)
                rec[name][:, n] = v
        return out, rec

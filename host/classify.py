"""Spike-pattern classification: many samples, one target per class, accuracy on a held-out set.

The looped-pattern trainer (:mod:`spikeloop.host.train`) repeats one stimulus; classification
needs many different samples. Here one *sample* is one weight-update chunk
(``params.chunk_steps`` = the sample length ``T``): before each sample the network's dynamics
are cleared exactly as ``RESET_STATE DYNAMICS | COUNTERS`` clears them on a board (U, I,
refractory counters, σ', z, ẑ, e and the on-chip error filter; the eligibility traces el/el_flt
and RMaxProp's q carry over, m is zero at every chunk end), the sample runs with its class's
target (the correct class's output gets a regular target spike train, the other outputs none:
the TARGET error mode), and the weights are updated at its last step. One *epoch* is one pass
over the training set in an order shuffled per epoch and per network seed.

Scoring: a sample's prediction is the output with the most spikes; a tie at the top (including
no output spike at all) is "none", counted as wrong. Test accuracy is measured with learning off
(in-process: a copy of the model whose learning and chunk-end passes do nothing; on a board:
R0 = 0, and the learning words el, el_flt and q are read before and written back after the test
pass, so that scoring does not change the training). Train accuracy is the online accuracy of
the learning pass itself (each sample scored with the weights it met).

Tasks
-----
``braille``: the tactile Braille data set (27 letters, 12 taxels; see :func:`load_braille`),
encoded on the host by a sigma-delta ON/OFF encoder per taxel (:func:`sigma_delta`, 24 input
channels); train on repetitions 0..39 of every letter, test on 40..49 (``--validate``: train on
0..29, score on 30..39, for tuning without looking at the test set).

``randman``: random manifolds generated from a seed (:func:`make_randman`): per class a smooth
random map from ``dim`` latent coordinates to one spike time per input; a stratified split,
seeded, holds out ``test_fraction`` of each class.

Files written into ``out``: ``metrics.json`` (per-epoch train and test accuracy per seed, the
task and its encoder, the summary), ``params.json``, ``confusion.csv`` and ``confusion.png``
(the last test pass, summed over the seeds), ``learning_curve.png`` (accuracy per epoch),
``weights.npz`` (the trained weights, ``hid.w``/``out.w`` shaped (seeds, n_post, n_pre): integer
words of the 'w' format, mV on the float backend), and in-process ``checkpoint.npz`` (after every
epoch: what :func:`resume_classifier` continues from). Every file is written to a temporary name
and renamed.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import spikeloop
from spikeloop.params import ErrorSource, Params

__all__ = ["BRAILLE_DEFAULTS", "RANDMAN_DEFAULTS", "BRAILLE_ENV", "braille_path", "load_braille",
           "sigma_delta", "encode_braille", "braille_split", "stratified_split", "make_randman",
           "class_targets", "predict", "accuracy", "confusion", "write_confusion_csv",
           "classify_params", "make_braille_task", "make_randman_task", "train_classifier",
           "reset_dynamics", "resume_classifier", "make_task", "task_digest", "NONE"]

#: Environment variable that points at ``braille_taxels.npz``.
BRAILLE_ENV = "SPIKELOOP_BRAILLE"

#: Prediction of a sample without a unique most-active output.
NONE = -1

#: The Braille task: data, encoder, split, network, schedule (docs/learning.md, "Braille").
BRAILLE_DEFAULTS: dict = {
    "data": "../shared/data/braille/braille_taxels.npz",   # relative to the current directory
    # encoder: sigma-delta ON/OFF per taxel on the pressure 255 - reading
    "threshold": 2,          # taxel units per event
    "frame_steps": 2,        # time steps per recorded frame (77 frames -> 154 steps)
    # split: repetitions below train_reps train, the rest test; --validate: below val_reps
    # train, val_reps..train_reps-1 score
    "train_reps": 40,
    "val_reps": 30,
    # target: the correct class's output spikes every target_period steps from target_start
    "target_start": 10,
    "target_period": 10,
    "n_hidden": 64,
    # sparse input: weights start wide (hidden neurons fire) and may grow to 30 mV (ϑ = 10 mV)
    "params": {"feedback": "symmetric", "r0_mv": 0.2, "w_init_std_mv": 6.0, "w_max_mv": 30.0},
    "epochs": 5,
    "seeds": 3,
}

#: The random-manifold task (docs/learning.md, "Random manifolds").
RANDMAN_DEFAULTS: dict = {
    "n_in": 20,
    "classes": 5,
    "dim": 1,
    "samples_per_class": 100,
    "n_basis": 3,            # sinusoids per latent coordinate and input
    "alpha": 2.0,            # smoothness: amplitude of harmonic k ~ U(0,1) / k^alpha
    "window_steps": 50,      # spike times fall in steps 0..window_steps-1
    "tail_steps": 30,        # silent steps after the window (sample length = window + tail)
    "test_fraction": 0.2,
    "data_seed": 1,
    "target_start": 10,
    "target_period": 8,
    "n_hidden": 64,
    # one spike per input: weights start wider still (see docs/learning.md)
    "params": {"feedback": "symmetric", "r0_mv": 0.2, "w_init_std_mv": 10.0, "w_max_mv": 30.0},
    "epochs": 8,
    "seeds": 3,
}


# --------------------------------------------------------------------------- braille data

def braille_path(data=None) -> tuple[Path, str]:
    """Where the Braille archive is looked for, and why there: ``data`` (the --data option), else
    ``$SPIKELOOP_BRAILLE``, else the documented relative location, resolved against the current
    directory."""
    if data is not None:
        return Path(data), "--data"
    env = os.environ.get(BRAILLE_ENV)
    if env:
        return Path(env), f"${BRAILLE_ENV}"
    return Path.cwd() / BRAILLE_DEFAULTS["data"], "the default location (relative to the current directory)"


def load_braille(data=None) -> dict:
    """The Braille recordings: ``taxels`` (N, F, 12) uint8, ``length`` (N,), ``label`` (N,),
    ``repetition`` (N,), ``letters`` (27,).

    Raises
    ------
    FileNotFoundError
        If the file is missing: the message says where it looked and how to point at it.
    ValueError
        If the file is not the Braille archive.
    """
    path, why = braille_path(data)
    if not path.is_file():
        raise FileNotFoundError(
            f"braille data: no such file: {path} (from {why}); point at braille_taxels.npz with "
            f"--data FILE or the environment variable {BRAILLE_ENV}")
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in ("taxels", "length", "label", "repetition", "letters")}
    except (KeyError, ValueError, OSError) as e:
        raise ValueError(f"{path}: not the braille archive (expected arrays taxels, length, label, "
                         f"repetition, letters): {e}") from None
    x = d["taxels"]
    n = x.shape[0] if x.ndim == 3 else -1
    if x.ndim != 3 or any(d[k].shape != (n,) for k in ("length", "label", "repetition")):
        raise ValueError(f"{path}: taxels must be (N, frames, taxels) and length, label, repetition "
                         f"(N,), not {x.shape}, {d['length'].shape}, {d['label'].shape}, "
                         f"{d['repetition'].shape}")
    d["path"] = str(path)
    return d


def sigma_delta(signal, threshold: float, frame_steps: int, length: int | None = None) -> np.ndarray:
    """Sigma-delta ON/OFF events of analog channels ``signal`` (F, C), or (N, F, C) for N recordings.

    Each frame is held for ``frame_steps`` steps. A reference level per channel starts at the
    first frame's value; at every step, if the signal is at least ``threshold`` above the
    reference an ON event is sent and the reference rises by ``threshold``, if at least
    ``threshold`` below an OFF event and it falls by ``threshold`` (at most one event per channel
    and step, so a fast change spreads over the following steps). Frames from ``length`` on hold
    the last valid frame (the Braille archive pads them with 255).

    Returns
    -------
    bool array (..., F * frame_steps, 2 C): channel ``2c`` is ON of input ``c``, ``2c + 1`` its OFF.
    """
    s = np.asarray(signal, np.float64)
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim not in (2, 3):
        raise ValueError(f"signal must be shaped (frames, channels) or (N, frames, channels), "
                         f"not {s.shape}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)) \
            or not (threshold > 0 and math.isfinite(threshold)):
        raise ValueError(f"threshold must be a positive number, not {threshold!r}")
    if isinstance(frame_steps, bool) or not isinstance(frame_steps, (int, np.integer)) or frame_steps < 1:
        raise ValueError(f"frame_steps must be a positive integer, not {frame_steps!r}")
    F = s.shape[-2]
    if length is not None:
        n = np.broadcast_to(np.asarray(length, np.int64), s.shape[:-2])
        f = np.minimum(np.arange(F), np.maximum(n[..., None], 1) - 1)      # (..., F)
        s = np.take_along_axis(s, f[..., None], axis=-2)
    out = np.zeros(s.shape[:-2] + (F * frame_steps, 2 * s.shape[-1]), bool)
    ref = s[..., 0, :].copy()
    for f in range(F):
        for k in range(frame_steps):
            t = f * frame_steps + k
            on = s[..., f, :] - ref >= threshold
            off = ref - s[..., f, :] >= threshold
            ref += threshold * on - threshold * off
            out[..., t, 0::2], out[..., t, 1::2] = on, off
    return out


def encode_braille(d: dict, threshold: float | None = None, frame_steps: int | None = None) -> np.ndarray:
    """All recordings of :func:`load_braille` as spikes (N, F * frame_steps, 24): sigma-delta on
    the pressure ``255 − reading`` of every taxel, frames past ``length`` held."""
    b = BRAILLE_DEFAULTS
    threshold = b["threshold"] if threshold is None else threshold
    frame_steps = b["frame_steps"] if frame_steps is None else frame_steps
    return sigma_delta(255.0 - d["taxels"].astype(np.float64), threshold, frame_steps,
                       length=np.asarray(d["length"], np.int64))


def braille_split(repetition, train_reps: int, test_reps: tuple[int, int] | None = None):
    """Indices ``(train, test)``: repetitions below ``train_reps`` train, ``test_reps = (a, b)``
    (default ``(train_reps, ∞)``) test. Every letter has every repetition, so both sets are
    stratified, and the split is the same on every run."""
    r = np.asarray(repetition)
    a, b = (train_reps, np.iinfo(np.int64).max) if test_reps is None else test_reps
    return np.flatnonzero(r < train_reps), np.flatnonzero((r >= a) & (r < b))


def stratified_split(labels, test_fraction: float, seed: int):
    """Indices ``(train, test)``: per class, a seeded shuffle of its samples holds out
    ``round(test_fraction · n_class)`` (at least one, at most all but one) for the test."""
    labels = np.asarray(labels)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test fraction must be in (0, 1), not {test_fraction!r}")
    rng = np.random.default_rng([int(seed), 0x5B17])
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            raise ValueError(f"class {c} has {len(idx)} sample(s); a split needs at least 2")
        idx = rng.permutation(idx)
        k = min(max(1, round(test_fraction * len(idx))), len(idx) - 1)
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


# --------------------------------------------------------------------------- random manifolds

def make_randman(seed: int, *, n_in: int, classes: int, dim: int, samples_per_class: int,
                 n_basis: int = 3, alpha: float = 2.0, window_steps: int = 50,
                 tail_steps: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Random-manifold spike patterns: ``(spikes (N, T, n_in) bool, labels (N,))``, class-major.

    Per class ``c`` and input ``i`` a smooth map of ``dim`` latent coordinates ``x ∈ [0, 1)``:
    ``f_ci(x) = 1/2 + 1/2 · Σ_d Σ_k a_cidk sin(2π (k x_d + φ_cidk)) / Σ a``, harmonics
    ``k = 1..n_basis``, ``a ~ U(0, 1) / k^alpha``, ``φ ~ U(0, 1)``, all drawn from ``seed``. A
    sample draws ``x`` uniformly and input ``i`` fires one spike at step
    ``round(f_ci(x) · (window_steps − 1))``; ``tail_steps`` silent steps follow.
    """
    for name, v, lo in (("n_in", n_in, 1), ("classes", classes, 2), ("dim", dim, 1),
                        ("samples_per_class", samples_per_class, 2), ("n_basis", n_basis, 1),
                        ("window_steps", window_steps, 1), ("tail_steps", tail_steps, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"randman {name} must be an integer >= {lo}, not {v!r}")
    if not (alpha >= 0 and math.isfinite(alpha)):
        raise ValueError(f"randman alpha must be a non-negative number, not {alpha!r}")
    rng = np.random.default_rng([int(seed), 0x4A4D])
    k = np.arange(1, n_basis + 1)
    T = window_steps + tail_steps
    N = classes * samples_per_class
    spikes = np.zeros((N, T, n_in), bool)
    labels = np.repeat(np.arange(classes), samples_per_class)
    for c in range(classes):
        amp = rng.uniform(0.0, 1.0, (n_in, dim, n_basis)) / k ** alpha
        phase = rng.uniform(0.0, 1.0, (n_in, dim, n_basis))
        x = rng.uniform(0.0, 1.0, (samples_per_class, dim))
        arg = 2 * np.pi * (k * x[:, None, :, None] + phase[None])      # (S, n_in, dim, n_basis)
        f = 0.5 + 0.5 * (amp * np.sin(arg)).sum(axis=(2, 3)) / amp.sum(axis=(1, 2))
        steps = np.rint(f * (window_steps - 1)).astype(np.int64)      # (S, n_in)
        s = np.arange(samples_per_class)
        for i in range(n_in):
            spikes[c * samples_per_class + s, steps[:, i], i] = True
    return spikes, labels


# --------------------------------------------------------------------------- targets, scoring

def class_targets(n_classes: int, T: int, start: int, period: int) -> np.ndarray:
    """Target raster of each class ``(n_classes, T, n_classes)``: output ``c`` spikes at steps
    ``start, start + period, ... < T`` for class ``c``; every other output stays silent."""
    if not (isinstance(start, int) and isinstance(period, int) and 0 <= start < T and period >= 1):
        raise ValueError(f"target start must be in 0..{T - 1} and period >= 1, not {start!r}, {period!r}")
    y = np.zeros((n_classes, T, n_classes), bool)
    for c in range(n_classes):
        y[c, start::period, c] = True
    return y


def predict(counts) -> np.ndarray:
    """Predicted class per row of spike counts ``(..., n_out)``: the unique most-active output,
    else :data:`NONE` (a tie at the top, or no spike at all)."""
    c = np.asarray(counts)
    top = c.max(axis=-1)
    unique = (c == top[..., None]).sum(axis=-1) == 1
    return np.where(unique & (top > 0), c.argmax(axis=-1), NONE)


def accuracy(pred, labels) -> float:
    pred, labels = np.asarray(pred), np.asarray(labels)
    return float((pred == labels).mean()) if labels.size else float("nan")


def confusion(pred, labels, n_classes: int) -> np.ndarray:
    """Counts ``(n_classes, n_classes + 1)``: row = true class, column = predicted class, the last
    column "none"."""
    m = np.zeros((n_classes, n_classes + 1), np.int64)
    pred = np.asarray(pred).ravel()
    np.add.at(m, (np.asarray(labels).ravel(), np.where(pred == NONE, n_classes, pred)), 1)
    return m


def write_confusion_csv(path, m: np.ndarray, names: Sequence[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["true\\predicted", *names, "none"])
        for name, row in zip(names, m):
            w.writerow([name, *(int(v) for v in row)])


# --------------------------------------------------------------------------- tasks

def classify_params(d: dict, n_in: int, n_out: int, T: int, base: Params | None = None,
                    **changes) -> Params:
    """The network of a classification task: ``base`` (default Params with ``d["params"]``),
    ``d["n_hidden"]`` hidden neurons unless ``changes`` says otherwise, one update per sample,
    TARGET errors."""
    if base is None:
        base = Params(**d["params"])
    changes.setdefault("n_hidden", d["n_hidden"])
    return base.replace(n_in=n_in, n_out=n_out, chunk_steps=T, error_source="target",
                        error_delay=0, **changes)


def _limit(train, test, labels, per_class: int | None, test_per_class: int | None):
    """The first ``per_class`` training and ``test_per_class`` test samples of every class (for
    short runs); None keeps all."""
    def cut(idx, n):
        if n is None:
            return idx
        return np.sort(np.concatenate([idx[labels[idx] == c][:n] for c in np.unique(labels[idx])]))
    return cut(train, per_class), cut(test, test_per_class)


def make_braille_task(data=None, *, threshold=None, frame_steps=None, validate: bool = False,
                      train_per_class=None, test_per_class=None, target_start=None,
                      target_period=None) -> dict:
    """The Braille task: ``inputs`` (N, T, 24), ``labels``, ``train``/``test`` indices,
    ``targets`` (27, T, 27), ``names``, ``task`` (for metrics.json)."""
    b = BRAILLE_DEFAULTS
    d = load_braille(data)
    threshold = b["threshold"] if threshold is None else threshold
    frame_steps = b["frame_steps"] if frame_steps is None else frame_steps
    x = encode_braille(d, threshold, frame_steps)
    labels = d["label"].astype(np.int64)
    if validate:
        train, test = braille_split(d["repetition"], b["val_reps"], (b["val_reps"], b["train_reps"]))
    else:
        train, test = braille_split(d["repetition"], b["train_reps"])
    train, test = _limit(train, test, labels, train_per_class, test_per_class)
    T = x.shape[1]
    start = b["target_start"] if target_start is None else target_start
    period = b["target_period"] if target_period is None else target_period
    names = [str(s) for s in d["letters"]]
    split = (f"repetitions 0..{b['val_reps'] - 1} train, {b['val_reps']}..{b['train_reps'] - 1} "
             f"validate" if validate else
             f"repetitions 0..{b['train_reps'] - 1} train, {b['train_reps']}..49 test")
    task = dict(name="braille", data=Path(d["path"]).name, n_classes=len(names),
                encoder=dict(kind="sigma-delta ON/OFF per taxel on 255 - reading",
                             threshold=threshold, frame_steps=frame_steps, channels=x.shape[2]),
                split=split, validate=bool(validate), n_train=int(len(train)), n_test=int(len(test)),
                steps=int(T), target_start=start, target_period=period,
                chance=1.0 / len(names))
    make = dict(kind="braille", kwargs=dict(data=str(Path(d["path"]).resolve()), threshold=threshold,
                                            frame_steps=frame_steps, validate=bool(validate),
                                            train_per_class=train_per_class,
                                            test_per_class=test_per_class, target_start=start,
                                            target_period=period))
    return dict(inputs=x, labels=labels, train=train, test=test,
                targets=class_targets(len(names), T, start, period), names=names, task=task,
                make=make)


def make_randman_task(*, data_seed=None, n_in=None, classes=None, dim=None,
                      samples_per_class=None, test_fraction=None, validate: bool = False,
                      train_per_class=None, test_per_class=None, target_start=None,
                      target_period=None) -> dict:
    """The random-manifold task, shaped as :func:`make_braille_task`'s. ``validate``: the
    training set is split again (same rule) and its held-out part is scored instead of the test."""
    r = RANDMAN_DEFAULTS
    g = lambda v, k: r[k] if v is None else v  # noqa: E731
    seed = g(data_seed, "data_seed")
    kw = dict(n_in=g(n_in, "n_in"), classes=g(classes, "classes"), dim=g(dim, "dim"),
              samples_per_class=g(samples_per_class, "samples_per_class"), n_basis=r["n_basis"],
              alpha=r["alpha"], window_steps=r["window_steps"], tail_steps=r["tail_steps"])
    x, labels = make_randman(seed, **kw)
    frac = g(test_fraction, "test_fraction")
    train, test = stratified_split(labels, frac, seed)
    if validate:
        sub_train, sub_val = stratified_split(labels[train], frac, seed + 1)
        train, test = train[sub_train], train[sub_val]
    train, test = _limit(train, test, labels, train_per_class, test_per_class)
    T = x.shape[1]
    start, period = g(target_start, "target_start"), g(target_period, "target_period")
    C = kw["classes"]
    task = dict(name="randman", data_seed=int(seed), **kw, test_fraction=frac,
                n_classes=C, validate=bool(validate), n_train=int(len(train)), n_test=int(len(test)),
                split=f"stratified, seeded (data seed {seed}), {frac:g} of each class held out"
                      + (" of the training part, for validation" if validate else ""),
                steps=int(T), target_start=start, target_period=period, chance=1.0 / C)
    make = dict(kind="randman", kwargs=dict(data_seed=int(seed), n_in=kw["n_in"],
                                            classes=kw["classes"], dim=kw["dim"],
                                            samples_per_class=kw["samples_per_class"],
                                            test_fraction=frac, validate=bool(validate),
                                            train_per_class=train_per_class,
                                            test_per_class=test_per_class, target_start=start,
                                            target_period=period))
    return dict(inputs=x, labels=labels, train=train, test=test,
                targets=class_targets(C, T, start, period), names=[str(c) for c in range(C)],
                task=task, make=make)


# --------------------------------------------------------------------------- models

def reset_dynamics(model) -> None:
    """What ``RESET_STATE DYNAMICS`` does to a board, on an in-process model (golden or float):
    neuron, presynaptic and error-filter words and the delay rings to zero, step counter to 0."""
    for L in model.layers:
        for w in ("U", "I", "ref", "sigma", "z", "zh", "e", "rate", "racc"):
            v = getattr(L, w, None)
            if v is not None:
                v[...] = 0
        L.S = np.zeros_like(L.S)
        for r in ("sigma_d", "zh_d"):
            if getattr(L, r, None) is not None:
                getattr(L, r)[...] = 0
    model.e1 = np.zeros_like(model.e1)
    model.e2 = np.zeros_like(model.e2)
    model._x_hid = np.zeros_like(model._x_hid)
    model.t = 0


def _model_class(backend: str, frozen: bool):
    if backend == "model":
        from spikeloop.sim.golden import GoldenModel as M
    elif backend == "float":
        from spikeloop.sim.reference import FloatModel as M
    else:
        raise ValueError(f"in-process backend must be 'model' or 'float', not {backend!r}")
    if not frozen:
        return M

    class Frozen(M):
        """The model with learning off: spikes depend only on U, I and w, so skipping the
        learning and chunk-end passes leaves them exactly as they are with r0 = 0."""
        def learn_pass(self, L):
            pass

        def chunk_end_pass(self, L):
            pass

        def _learn(self, L):
            pass

        def _chunk_end(self, L):
            pass
    return Frozen


def _weights_of(model, backend: str, params: Params):
    """Weights (and B) of every network of ``model``, in the form ``weights=`` takes."""
    if backend == "model":
        return [L.w.astype(np.int64) for L in model.layers], model.fb
    return [L.w.copy() for L in model.layers], model.fb


def _evaluate_in_process(params, backend, weights, fb, inputs, chunk: int = 96) -> np.ndarray:
    """Output spike counts ``(B, N, n_out)`` of networks ``weights`` (batch B) on ``inputs``
    (N, T, n_in), learning off; the samples run side by side as copies of each network."""
    B, N = weights[0].shape[0], inputs.shape[0]
    M = _model_class(backend, frozen=True)
    counts = np.zeros((B, N, params.n_out), np.int64)
    for a in range(0, N, chunk):
        n = min(chunk, N - a)
        rep = lambda w: None if w is None else np.repeat(w, n, axis=0)  # noqa: E731
        ws = [rep(w) for w in weights]
        m = M(params, seeds=[0] * (B * n))
        for L, w in zip(m.layers, ws):
            L.w[...] = w
            if hasattr(L, "w_f"):
                L.w_f[...] = w
        if fb is not None:
            m.fb = rep(fb)
        x = np.tile(inputs[a:a + n], (B, 1, 1))          # network b, sample j at b*n + j
        out, _ = m.run(x, None, record=())
        counts[:, a:a + n] = out.sum(axis=1).reshape(B, n, params.n_out)
    return counts


# --------------------------------------------------------------------------- training

def _order_rng(seed: int):
    """The shuffle of network seed ``seed`` (the same for every backend)."""
    return np.random.default_rng([int(seed), 0xC1A5])


def train_classifier(params: Params, task: dict, *, seeds: Sequence[int], epochs: int,
                     backend: str = "model", out_dir, progress: bool | str = False,
                     plots: bool = True, board_opener=None, on_epoch=None, _resume=None) -> dict:
    """Train one network per seed on ``task`` (:func:`make_braille_task`, :func:`make_randman_task`)
    for ``epochs`` passes over its training set, scoring the test set before training and after
    every epoch. In-process backends batch the seeds; board backends (``board_opener(params)``
    returns an open :class:`~spikeloop.host.board.Board`) train the seeds one after another.
    Returns the content of metrics.json.

    In-process, every completed epoch is checkpointed (``checkpoint.npz``: the whole model, the
    scores, how to rebuild the task) and metrics.json rewritten, both atomically, so an
    interrupted run keeps every completed epoch and :func:`resume_classifier` continues it to
    the result of an uninterrupted run. ``on_epoch(epoch)`` is called after each checkpoint
    (tests interrupt runs with it). ``_resume``: ``(meta, arrays)`` of a checkpoint (internal).
    """
    from spikeloop.host.backends import in_process_names, is_board_backend
    from spikeloop.host.record import atomic_savez, atomic_write_json
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, not {epochs!r}")
    if params.error_source is not ErrorSource.TARGET:
        raise ValueError("classification trains with target errors (params.error_source = target)")
    x, labels, y = task["inputs"], task["labels"], task["targets"]
    tr, te = np.asarray(task["train"]), np.asarray(task["test"])
    if len(tr) == 0 or len(te) == 0:
        raise ValueError(f"the task needs training and test samples, not {len(tr)} and {len(te)}")
    T = x.shape[1]
    if params.chunk_steps != T or params.n_in != x.shape[2] or params.n_out != y.shape[2]:
        raise ValueError(f"params must have chunk_steps = {T}, n_in = {x.shape[2]}, "
                         f"n_out = {y.shape[2]}")
    board = is_board_backend(backend)
    if not board and backend not in in_process_names():
        raise ValueError(f"unknown backend {backend!r}")
    from spikeloop.host.train import save_params
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_params(params, out_dir / "params.json")
    show = progress == "force" or (progress is True and sys.stderr.isatty())
    t0 = time.perf_counter()
    digest = task_digest(task)
    hist = dict(train_acc=[], test_acc=[])       # [epoch][seed]; test_acc[0]: before training
    C = y.shape[0]
    st = dict(done=0, wall_before=0.0, complete=False, interrupted=False)
    if _resume is not None:
        st["done"] = int(_resume[0]["epochs_done"])
        st["wall_before"] = float(_resume[0]["wall_s"])

    def note(text):
        if show:
            sys.stderr.write(f"\r{text} ({time.perf_counter() - t0:.0f} s)".ljust(79))
            sys.stderr.flush()

    def wall() -> float:
        return st["wall_before"] + time.perf_counter() - t0

    def metrics(files) -> dict:
        n = st["done"]
        test, train = hist["test_acc"][:n + 1], hist["train_acc"][:n]
        final = np.array(test[-1])
        summary = dict(n_seeds=len(seeds), test_acc_mean=round(float(final.mean()), 4),
                       test_acc_sd=round(float(final.std()), 4),
                       train_acc_mean=round(float(np.mean(train[-1])), 4) if train else None,
                       train_acc_sd=round(float(np.std(train[-1])), 4) if train else None,
                       chance=round(1.0 / C, 4), wall_time_s=round(wall(), 2))
        return dict(version=spikeloop.__version__, kind="spikeloop classification", backend=backend,
                    params=params.to_dict(), seeds=seeds, epochs=int(epochs), epochs_done=n,
                    complete=st["complete"], interrupted=st["interrupted"], task=task["task"],
                    per_epoch=dict(epoch=list(range(n + 1)), train_acc=[None] + train,
                                   test_acc=test),
                    scoring="prediction = the output with the most spikes (a tie or no spike: "
                            "none, wrong); test with learning off; train accuracy online, during "
                            "learning; confusion summed over the seeds, last epoch",
                    summary=summary, files=files)

    def save(model, pred) -> None:
        """Checkpoint after ``st['done']`` epochs, then metrics.json (the checkpoint rules)."""
        from spikeloop.host.train import model_state, write_checkpoint
        meta = dict(kind="classification", epochs_done=st["done"], epochs=int(epochs),
                    seeds=seeds, backend=backend, params=params.to_dict(), hist=hist,
                    make=task.get("make"), digest=digest, wall_s=wall())
        arrays = {f"model:{k}": v for k, v in model_state(model).items()}
        write_checkpoint(out_dir, meta, dict(arrays, pred=np.asarray(pred)))
        atomic_write_json(out_dir / "metrics.json", metrics(["metrics.json", "params.json",
                                                             "checkpoint.npz"]))
        if on_epoch is not None:
            on_epoch(st["done"] - 1)

    try:
        if board:
            if _resume is not None:
                raise ValueError("a classification run on a board backend cannot be resumed")
            last_pred, weights = _train_board(params, task, seeds, epochs, board_opener, hist, note)
            st["done"] = epochs
        else:
            last_pred, weights = _train_in_process(params, task, seeds, epochs, backend, hist, note,
                                                   st, save, _resume)
    except KeyboardInterrupt:
        st["interrupted"] = True
        if show:
            sys.stderr.write("\n")
        if not board and hist["test_acc"]:
            atomic_write_json(out_dir / "metrics.json", metrics(
                ["metrics.json", "params.json"] + (["checkpoint.npz"] if st["done"] else [])))
        raise
    layer_names = ("hid.w", "out.w") if params.n_hidden else ("out.w",)
    atomic_savez(out_dir / "weights.npz", dict(seeds=np.array(seeds), **dict(zip(layer_names, weights))))
    if show:
        sys.stderr.write("\n")
    conf = sum(confusion(p, labels[te], C) for p in last_pred)
    tmp = out_dir / f".confusion.csv.tmp{os.getpid()}"
    write_confusion_csv(tmp, conf, task["names"])
    os.replace(tmp, out_dir / "confusion.csv")
    files = ["metrics.json", "params.json", "weights.npz", "confusion.csv"]
    if not board:
        files.append("checkpoint.npz")
    if plots:
        _plot_confusion(out_dir / "confusion.png", conf, task["names"],
                        f"{task['task']['name']}: {backend}, {len(seeds)} seed(s), epoch {epochs}")
        _plot_accuracy(out_dir / "learning_curve.png", hist, 1.0 / C,
                       f"{task['task']['name']}: {backend}, {len(seeds)} seed(s)")
        files += ["confusion.png", "learning_curve.png"]
    st["complete"] = True
    m = metrics(files)
    atomic_write_json(out_dir / "metrics.json", m)
    return m


def task_digest(task: dict) -> str:
    """SHA-256 of a task's samples, labels and split: a resumed run checks that the task it
    rebuilt is the one it started on (e.g. the same Braille archive)."""
    import hashlib
    h = hashlib.sha256()
    for k in ("inputs", "labels", "train", "test", "targets"):
        a = np.ascontiguousarray(task[k])
        h.update(f"{k}{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def make_task(make: dict) -> dict:
    """Rebuild a task from its ``make`` entry (what :func:`make_braille_task` or
    :func:`make_randman_task` was called with)."""
    kind, kw = make["kind"], dict(make["kwargs"])
    if kind == "braille":
        return make_braille_task(kw.pop("data"), **kw)
    if kind == "randman":
        return make_randman_task(**kw)
    raise ValueError(f"task kind must be braille or randman, not {kind!r}")


def resume_classifier(out_dir, *, epochs: int | None = None, progress: bool | str = False,
                      plots: bool = True, on_epoch=None) -> dict:
    """Continue the in-process classification run in ``out_dir`` from its last completed epoch
    to its ``epochs`` (or to ``epochs``, which may extend a finished run); the result is that of
    an uninterrupted run (bit-identical on the ``model`` backend).

    Raises
    ------
    RecordError
        No checkpoint, one that does not fit, or a task that rebuilds differently.
    """
    from spikeloop.host.record import RecordError
    from spikeloop.host.train import read_checkpoint
    meta, arrays = read_checkpoint(out_dir, "classification")
    done = int(meta["epochs_done"])
    if epochs is None:
        epochs = int(meta["epochs"])
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < done:
        raise ValueError(f"epochs must be an integer >= {done} (epochs already completed), "
                         f"not {epochs!r}")
    if not meta.get("make"):
        raise RecordError(f"{out_dir}: the checkpoint does not say how its task was made")
    task = make_task(meta["make"])
    if task_digest(task) != meta["digest"]:
        raise RecordError(f"{out_dir}: the task rebuilt from the checkpoint differs from the one "
                          f"the run started on (another data file?)")
    return train_classifier(Params.from_dict(meta["params"]), task, seeds=meta["seeds"],
                            epochs=int(epochs), backend=meta["backend"], out_dir=out_dir,
                            progress=progress, plots=plots, on_epoch=on_epoch,
                            _resume=(meta, arrays))


def _train_in_process(params, task, seeds, epochs, backend, hist, note, st, save, resume):
    from spikeloop.host.train import restore_model_state
    x, labels, y = task["inputs"], task["labels"], task["targets"]
    tr, te = np.asarray(task["train"]), np.asarray(task["test"])
    B = len(seeds)
    model = _model_class(backend, frozen=False)(params, seeds=seeds)
    rngs = [_order_rng(s) for s in seeds]

    def test():
        w, fb = _weights_of(model, backend, params)
        pred = predict(_evaluate_in_process(params, backend, w, fb, x[te]))
        hist["test_acc"].append([round(accuracy(p, labels[te]), 4) for p in pred])
        return pred

    if resume is None:
        pred = test()
    else:
        meta, arrays = resume
        restore_model_state(model, {k[6:]: v for k, v in arrays.items() if k.startswith("model:")})
        hist.update(copy_hist(meta["hist"]))
        pred = arrays["pred"]
        for r in rngs:                   # the shuffles of the completed epochs, drawn again
            for _ in range(st["done"]):
                r.permutation(tr)
    for ep in range(st["done"], epochs):
        order = np.stack([r.permutation(tr) for r in rngs], axis=1)     # (n_train, B)
        correct = np.zeros(B, np.int64)
        for k, idx in enumerate(order):
            reset_dynamics(model)
            out, _ = model.run(x[idx], y[labels[idx]], record=())
            correct += predict(out.sum(axis=1)) == labels[idx]
            if k % 50 == 0:
                note(f"epoch {ep + 1}/{epochs}  sample {k}/{len(tr)}")
        hist["train_acc"].append([round(float(c) / len(tr), 4) for c in correct])
        pred = test()
        st["done"] = ep + 1
        save(model, pred)
        note(f"epoch {ep + 1}/{epochs}  test accuracy {np.mean(hist['test_acc'][-1]):.3f}")
    return pred, [np.asarray(w) for w in _weights_of(model, backend, params)[0]]


def copy_hist(h: dict) -> dict:
    """The score lists of a checkpoint, as fresh lists."""
    return {k: [list(r) for r in v] for k, v in h.items()}


def _train_board(params, task, seeds, epochs, board_opener, hist, note):
    from spikeloop import protocol
    from spikeloop.sim.golden import init_weights
    x, labels, y = task["inputs"], task["labels"], task["targets"]
    tr, te = np.asarray(task["train"]), np.asarray(task["test"])
    per_seed_train, per_seed_test, preds, weights = [], [], [], []
    names = ("hid.w", "out.w") if params.n_hidden else ("out.w",)
    sample_reset = protocol.ResetMask.DYNAMICS | protocol.ResetMask.COUNTERS
    with board_opener(params) as b:
        keep = [s for s in ("hid.el", "hid.elf", "hid.q", "out.el", "out.elf", "out.q")
                if s in b.spaces]
        for seed in seeds:
            ws, fb = init_weights(params, [seed])
            b.reset(protocol.RESET_ALL)
            b.load_weights([w[0] for w in ws], fb[0] if "fb" in b.spaces else None)
            b.write_reg("R0", [params.r0_q])

            def test():
                saved = {s: b.read_mem(s) for s in keep}
                b.write_reg("R0", [0])
                counts = np.zeros((len(te), params.n_out), np.int64)
                for j, i in enumerate(te):
                    b.reset(sample_reset)
                    counts[j] = b.run(x[i]).sum(axis=0)
                for s, v in saved.items():
                    b.write_mem(s, v)
                b.write_reg("R0", [params.r0_q])
                return predict(counts)

            pred = test()
            tests, trains = [accuracy(pred, labels[te])], []
            rng = _order_rng(seed)
            for ep in range(epochs):
                correct = 0
                for k, i in enumerate(rng.permutation(tr)):
                    b.reset(sample_reset)
                    out = b.run(x[i], targets=y[labels[i]])
                    correct += int(predict(out.sum(axis=0)) == labels[i])
                    if k % 10 == 0:
                        note(f"seed {seed} epoch {ep + 1}/{epochs}  sample {k}/{len(tr)}")
                trains.append(correct / len(tr))
                pred = test()
                tests.append(accuracy(pred, labels[te]))
            per_seed_train.append(trains)
            per_seed_test.append(tests)
            preds.append(pred)
            weights.append([np.asarray(b.read_mem(n), np.int64).reshape(n_post, n_pre)
                            for n, (n_pre, n_post) in zip(names, params.layers)])
    for ep in range(epochs + 1):
        hist["test_acc"].append([round(t[ep], 4) for t in per_seed_test])
        if ep < epochs:
            hist["train_acc"].append([round(t[ep], 4) for t in per_seed_train])
    return preds, [np.stack(ws) for ws in zip(*weights)]


# --------------------------------------------------------------------------- figures

def _plot_accuracy(path, hist, chance: float, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    test = np.array(hist["test_acc"], float)            # (epochs + 1, B)
    train = np.array(hist["train_acc"], float).reshape(-1, test.shape[1])
    ep = np.arange(test.shape[0])
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    for b in range(test.shape[1]):
        ax.plot(ep, test[:, b], color="C0", lw=0.6, alpha=0.5)
    ax.plot(ep, test.mean(axis=1), color="C0", lw=2, label="test (learning off), mean")
    if len(train):
        ax.plot(ep[1:], train.mean(axis=1), color="C1", lw=1.5, ls="-", label="train (online), mean")
    ax.axhline(chance, color="grey", ls="--", lw=1, label=f"chance {chance:.3g}")
    ax.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1), title=title)
    ax.legend(loc="best", fontsize=8)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)


def _plot_confusion(path, m: np.ndarray, names, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    n = len(names)
    fig = Figure(figsize=(max(5.0, 1.5 + 0.28 * (n + 1)), max(4.0, 1.2 + 0.26 * n)))
    ax = fig.add_subplot()
    rows = m.sum(axis=1, keepdims=True)
    im = ax.imshow(m / np.maximum(rows, 1), cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(n + 1), [*names, "none"], rotation=90, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, label="fraction of the class")
    fig.tight_layout()
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)

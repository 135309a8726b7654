"""The XOR task of the SuperSpike paper (Fig. 5): a hidden layer is needed, and the error is the
host's.

Stimulus (:class:`XorStimulus`)
    ``n_in`` inputs in three groups: a reference group and two bit groups, A and B. Each input
    has one fixed spike time in a ``pattern_ms`` window, drawn from the stimulus seed. A pattern
    is the reference group plus group A if bit a is set plus group B if bit b is set; its class
    is ``a XOR b``. One trial presents the four patterns once each, in an order drawn from the
    stimulus seed and the trial index, one per ``slot_ms`` slot; between the pattern windows
    every input fires Poisson background noise at ``rate_hz``, also drawn per trial.
Target
    Output ``c`` must fire at least once in the response window ``[onset + window_start_ms,
    onset + window_start_ms + window_ms)`` of each pattern of class ``c``, and never elsewhere.
    A trial's windows are a ``(T, n_out)`` boolean mask (stored where other tasks store their
    target spikes, so run records and ``compare`` treat it as a target raster).
Error (:class:`XorErrorFilter`)
    An impulse of −1 at every output spike outside that output's windows, +1 at the end of a
    window (its first step after the last, exclusive end) in which the output did not fire, 0
    for a spike inside the window. The impulses go through the board's double-exponential error
    filter with its exact integer arithmetic (as :class:`spikeloop.host.hil.HostErrorFilter`
    does with ``target − output``), so a missed window pushes like a missed target spike of
    Fig. 2 and a wrong spike like an extra one. The impulses depend on the network's own spikes
    during the trial, so the error is computed on the host, step by step, in both the
    in-process trainer (:func:`train_xor`) and the host-in-the-loop runs (``hil_train`` picks up
    :func:`hil_hooks` from the run's task description): the error sent with step ``t`` is the
    filter output after step ``t − L``, ``L = max(feedback_latency, 1)``, and the board delays σ'
    and ẑ by the latency to meet it. Both paths send the same errors, so a seed trains to the
    same weights on ``model`` and ``board-model`` (a test checks it).
Score (:class:`XorScorer`)
    A pattern is classified right when its class's output fired in its window and the other
    output did not; a trial's accuracy is the fraction of its four patterns classified right.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import spikeloop
from spikeloop.params import Params

__all__ = ["XOR_DEFAULTS", "XOR_CONFIGS", "XorStimulus", "XorErrorFilter", "XorScorer",
           "xor_impulses", "xor_params", "xor_stimulus_seed", "xor_task", "stimulus_from_task",
           "hil_hooks", "train_xor", "resume_xor", "summary_paragraph", "config_changes"]

#: The XOR experiment in one place: stimulus geometry, rule settings and the schedule
#: (docs/learning.md, "XOR (Fig. 5)").
XOR_DEFAULTS: dict = {
    # stimulus
    "n_in": 100,            # split into reference, A and B groups of n_in // 3 (+ remainder)
    "pattern_ms": 10.0,     # every input of an active group fires once in this window
    "slot_ms": 100.0,       # one pattern per slot; a trial is four slots
    "window_start_ms": 10.0,  # response window, from the pattern's onset
    "window_ms": 15.0,
    "rate_hz": 4.0,         # background noise between the pattern windows
    # network and rule
    "n_hidden": 4,
    "feedback_latency": 5,  # steps from an output spike to its error on the board
    # weights start positive on average so that the hidden neurons answer the larger patterns;
    # w_max 30 mV (the 'w' format holds ±32) so that four hidden spikes can drive an output
    "params": {"w_init_mean_mv": 0.5, "w_init_std_mv": 2.0, "w_max_mv": 30.0, "r0_mv": 0.3},
    "r0_drop": [],
    # experiment size and scoring
    "trials": 600,
    "seeds": 5,
    "final_trials": 50,     # accuracy 'after N trials' = mean over the last this many trials
}

#: The configurations of Fig. 5: name -> (n_hidden, feedback, regulariser).
XOR_CONFIGS: dict[str, tuple[int, str, bool]] = {
    "symmetric": (4, "symmetric", False), "symmetric-reg": (4, "symmetric", True),
    "random": (4, "random", False), "random-reg": (4, "random", True),
    "uniform": (4, "uniform", False), "uniform-reg": (4, "uniform", True),
    "no-hidden": (0, "symmetric", False),
}

_PATTERNS = ((0, 0), (0, 1), (1, 0), (1, 1))      # pattern id -> bits (a, b)


def xor_stimulus_seed(seed: int) -> int:
    """Seed of the spike patterns and trial orders for network seed ``seed`` (derived, so that the
    weights and the stimulus do not come from one random stream)."""
    return int(np.random.SeedSequence([int(seed), 0x0A5E]).generate_state(1)[0])


def _steps(ms: float, dt_ms: float, what: str) -> int:
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms <= 0:
        raise ValueError(f"{what} must be a positive number of ms, not {ms!r}")
    n = round(ms / dt_ms)
    if n < 1 or abs(n * dt_ms - ms) > 1e-9 * max(1.0, ms):
        raise ValueError(f"{what} must be a whole number of steps of dt = {dt_ms:g} ms, not {ms:g}")
    return n


class XorStimulus:
    """The XOR patterns of one stimulus seed and the trials built from them.

    Parameters
    ----------
    seed : int
        Stimulus seed (:func:`xor_stimulus_seed` of the network seed).
    n_in, pattern_ms, slot_ms, window_start_ms, window_ms, rate_hz : see ``XOR_DEFAULTS``
    dt_ms : float

    Raises
    ------
    ValueError
        Fewer than 3 inputs, a length that is not a whole number of steps, or a response window
        that does not fit its slot.
    """

    n_out = 2

    def __init__(self, seed: int, *, n_in: int | None = None, pattern_ms: float | None = None,
                 slot_ms: float | None = None, window_start_ms: float | None = None,
                 window_ms: float | None = None, rate_hz: float | None = None, dt_ms: float = 1.0):
        d = XOR_DEFAULTS
        get = lambda v, k: d[k] if v is None else v  # noqa: E731
        self.seed = int(seed)
        self.n_in = int(get(n_in, "n_in"))
        if self.n_in < 3:
            raise ValueError(f"the XOR task needs at least 3 inputs (reference, A, B), not {self.n_in}")
        self.dt_ms = float(dt_ms)
        self.pattern_ms, self.slot_ms = float(get(pattern_ms, "pattern_ms")), float(get(slot_ms, "slot_ms"))
        self.window_start_ms = float(get(window_start_ms, "window_start_ms"))
        self.window_ms = float(get(window_ms, "window_ms"))
        self.rate_hz = float(get(rate_hz, "rate_hz"))
        if not (math.isfinite(self.rate_hz) and self.rate_hz >= 0):
            raise ValueError(f"rate_hz must be a non-negative number, not {self.rate_hz!r}")
        self.pattern_steps = _steps(self.pattern_ms, dt_ms, "pattern_ms")
        self.slot_steps = _steps(self.slot_ms, dt_ms, "slot_ms")
        self.win_len = _steps(self.window_ms, dt_ms, "window_ms")
        self.win_start = (0 if self.window_start_ms == 0
                          else _steps(self.window_start_ms, dt_ms, "window_start_ms"))
        if self.win_start + self.win_len >= self.slot_steps or self.pattern_steps > self.slot_steps:
            raise ValueError(f"the pattern ({self.pattern_ms:g} ms) and the response window (ending "
                             f"{self.window_start_ms + self.window_ms:g} ms after the onset) must "
                             f"end before the slot does ({self.slot_ms:g} ms)")
        self.T = 4 * self.slot_steps
        g = self.n_in // 3
        # group of each input: 0 reference, 1 A, 2 B (the remainder goes to the reference)
        self.group = np.repeat([0, 1, 2], [self.n_in - 2 * g, g, g])
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0]))
        self.times = rng.integers(0, self.pattern_steps, self.n_in)   # spike step in the pattern

    def to_dict(self) -> dict:
        return dict(n_in=self.n_in, pattern_ms=self.pattern_ms, slot_ms=self.slot_ms,
                    window_start_ms=self.window_start_ms, window_ms=self.window_ms,
                    rate_hz=self.rate_hz)

    def active(self, pattern: int) -> np.ndarray:
        """Inputs that fire in pattern ``pattern`` (0..3 = bits 00, 01, 10, 11)."""
        a, b = _PATTERNS[pattern]
        return (self.group == 0) | ((self.group == 1) & bool(a)) | ((self.group == 2) & bool(b))

    @staticmethod
    def label(pattern: int) -> int:
        a, b = _PATTERNS[pattern]
        return a ^ b

    def order(self, k: int) -> np.ndarray:
        """The order of the four patterns in trial ``k``."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, 1, int(k)])).permutation(4)

    def windows(self, k: int) -> np.ndarray:
        """``(T, 2)`` bool: the response windows of trial ``k``."""
        w = np.zeros((self.T, 2), bool)
        for j, pat in enumerate(self.order(k)):
            a = j * self.slot_steps + self.win_start
            w[a:a + self.win_len, self.label(pat)] = True
        return w

    def trial(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(inputs (T, n_in), windows (T, 2))`` of trial ``k`` (0-based), both bool."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 2, int(k)]))
        x = rng.random((self.T, self.n_in)) < self.rate_hz * self.dt_ms / 1000.0
        for j, pat in enumerate(self.order(k)):
            on = j * self.slot_steps
            x[on:on + self.pattern_steps] = False
            idx = np.flatnonzero(self.active(pat))
            x[on + self.times[idx], idx] = True
        return x, self.windows(k)

    def score(self, k: int, spikes) -> list[bool]:
        """Per pattern id (00, 01, 10, 11): classified right in trial ``k`` given the output
        ``spikes`` ``(T, 2)``: its class's output fired in its window and the other did not."""
        s = np.asarray(spikes, bool)
        ok = [False] * 4
        for j, pat in enumerate(self.order(k)):
            a = j * self.slot_steps + self.win_start
            c = self.label(pat)
            ok[pat] = bool(s[a:a + self.win_len, c].any() and not s[a:a + self.win_len, 1 - c].any())
        return ok


def xor_task(seeds: Sequence[int], dt_ms: float = 1.0, **geometry) -> dict:
    """The task description of a run (metrics.json, the run record's manifest): enough to
    rebuild every trial's stimulus (:func:`stimulus_from_task`)."""
    stims = [XorStimulus(xor_stimulus_seed(s), dt_ms=dt_ms, **geometry) for s in seeds]
    return dict(name="xor", dt_ms=float(dt_ms), duration_ms=stims[0].T * dt_ms,
                stimulus_seeds=[st.seed for st in stims], **stims[0].to_dict())


def stimulus_from_task(task: dict, index: int = 0) -> XorStimulus:
    """The stimulus of network ``index`` of a run whose task description is ``task``."""
    geom = {k: task[k] for k in ("n_in", "pattern_ms", "slot_ms", "window_start_ms", "window_ms",
                                 "rate_hz")}
    return XorStimulus(task["stimulus_seeds"][index], dt_ms=task["dt_ms"], **geom)


def xor_params(base: Params | None = None, *, n_in: int | None = None, duration_ms: float | None = None,
               feedback_latency: int | None = None, **changes) -> Params:
    """Parameters of the XOR network: ``base`` (default: Params with XOR_DEFAULTS["params"]) with
    ``n_in`` inputs, 2 outputs, XOR_DEFAULTS["n_hidden"] hidden neurons unless ``changes`` says
    otherwise, one weight update per trial and host errors ``feedback_latency`` steps late."""
    from spikeloop.host.hil import hil_params
    d = XOR_DEFAULTS
    if base is None:
        base = Params(**d["params"])
    steps = round((4 * d["slot_ms"] if duration_ms is None else duration_ms) / base.dt_ms)
    changes.setdefault("n_hidden", d["n_hidden"])
    changes.setdefault("chunk_steps", steps)
    if not changes["n_hidden"]:
        changes.setdefault("regulariser", False)
    p = base.replace(n_in=d["n_in"] if n_in is None else n_in, n_out=2, **changes)
    return hil_params(p, "host", d["feedback_latency"] if feedback_latency is None else feedback_latency)


def config_changes(name: str) -> dict:
    """Params changes of a configuration of :data:`XOR_CONFIGS`."""
    if name not in XOR_CONFIGS:
        raise ValueError(f"configuration must be one of {', '.join(XOR_CONFIGS)}, not {name!r}")
    nh, fb, reg = XOR_CONFIGS[name]
    return dict(n_hidden=nh, feedback=fb, regulariser=reg)


# --------------------------------------------------------------------------- the error rule

def _impulse(w, s, fired, prev_w):
    """One step of the rule: ``(impulse, fired, prev_w)`` from this step's window mask ``w`` and
    output spikes ``s`` (the state: fired in the open window, the mask of the step before)."""
    closed = prev_w & ~w                      # a window ended at the step before this one
    imp = (closed & ~fired).astype(np.int64) - (s & ~w).astype(np.int64)
    fired = (fired & ~closed) | (s & w)
    return imp, fired, w.copy()


def xor_impulses(windows, outputs) -> np.ndarray:
    """The rule's impulses ``(T, n)`` (−1, 0, +1) of one trial from a clean start: what the filter
    integrates. A window that lasts to the trial's end is judged at the next trial's first step."""
    w, s = np.asarray(windows, bool), np.asarray(outputs, bool)
    fired, prev = np.zeros(w.shape[1:], bool), np.zeros(w.shape[1:], bool)
    out = np.zeros(w.shape, np.int64)
    for t in range(len(w)):
        out[t], fired, prev = _impulse(w[t], s[t], fired, prev)
    return out


class XorErrorFilter:
    """The XOR rule's error on the host, with the errors in flight; the interface of
    :class:`spikeloop.host.hil.HostErrorFilter` (``take``, ``feed``, ``state``, ``restore``), with
    the trial's window mask where that one takes the target spikes.

    ``batch``: None for one network (arrays ``(n_out,)``, the HIL runs) or the number of
    networks of an in-process batch (arrays ``(batch, n_out)``).
    """

    def __init__(self, params: Params, batch: int | None = None):
        self.p = params
        self.latency = max(params.error_delay, 1)
        self.shape = (params.n_out,) if batch is None else (batch, params.n_out)
        self.e1 = np.zeros(self.shape, np.int64)
        self.e2 = np.zeros(self.shape, np.int64)
        self.fired = np.zeros(self.shape, bool)
        self.prev_w = np.zeros(self.shape, bool)
        self.pending = np.zeros((self.latency,) + self.shape, np.int64)

    def take(self, k: int) -> np.ndarray:
        if not 1 <= k <= self.latency or len(self.pending) < k:
            raise ValueError(f"a host-error batch must hold 1..{self.latency} steps, not {k}")
        out, self.pending = self.pending[:k], self.pending[k:]
        return out

    def feed(self, windows, outputs) -> None:
        """Consume the window mask and output spikes of the steps just run, ``(k, *shape)``."""
        from spikeloop.sim import fixed
        p, fe = self.p, self.p.formats["err"]
        new = []
        for w, s in zip(np.asarray(windows, bool), np.asarray(outputs, bool)):
            imp, self.fired, self.prev_w = _impulse(w.reshape(self.shape), s.reshape(self.shape),
                                                    self.fired, self.prev_w)
            # the TARGET branch of GoldenModel.step with the impulse for target − output
            self.e1 = fixed.sat(self.e1 + imp * fe.one, fe)
            self.e2 = fixed.sat(fixed.lowpass_signed(self.e2, self.e1, p.decay_mem), fe)
            self.e1 = fixed.decay_signed(self.e1, p.decay_syn)
            new.append(self.e2.copy())
        self.pending = np.concatenate([self.pending,
                                       np.array(new, np.int64).reshape((-1,) + self.shape)])

    def state(self) -> dict:
        return dict(e1=self.e1.copy(), e2=self.e2.copy(), pending=self.pending.copy(),
                    fired=self.fired.copy(), prev_w=self.prev_w.copy())

    def restore(self, st: dict) -> None:
        from spikeloop.host.record import RecordError
        pending = np.asarray(st["pending"], np.int64)
        if pending.shape != (self.latency,) + self.shape or "fired" not in st:
            raise RecordError(f"XOR error state must hold {self.latency} pending errors and the "
                              f"window flags, not shape {pending.shape}")
        self.e1 = np.asarray(st["e1"], np.int64).reshape(self.shape).copy()
        self.e2 = np.asarray(st["e2"], np.int64).reshape(self.shape).copy()
        self.fired = np.asarray(st["fired"], bool).reshape(self.shape).copy()
        self.prev_w = np.asarray(st["prev_w"], bool).reshape(self.shape).copy()
        self.pending = pending.copy()


# --------------------------------------------------------------------------- scoring

def _sig(x: float) -> float:
    return float(f"{x:.6g}")


class XorScorer:
    """Per-trial accuracy of a batch of networks (one :class:`XorStimulus` each); the interface
    of :class:`spikeloop.host.train.TrialScorer` that the trainers use (``add``, ``hist``,
    ``first_success``, ``trials_done``, ``summary``).

    ``hist``: ``accuracy`` ``[trial][seed]``, ``correct`` ``[trial][seed]`` (4 bools, pattern
    ids 00, 01, 10, 11), ``n_spikes`` and ``wrong_spikes`` (output spikes outside their
    windows) ``[trial][seed]``, ``r0_mv`` ``[trial]``. ``first_success``: per seed the first trial
    with all four patterns right.
    """

    def __init__(self, stimuli: Sequence[XorStimulus], final_trials: int | None = None):
        self.stimuli = list(stimuli)
        self.B = len(self.stimuli)
        self.final_trials = int(XOR_DEFAULTS["final_trials"] if final_trials is None else final_trials)
        self.hist = dict(accuracy=[], correct=[], n_spikes=[], wrong_spikes=[], r0_mv=[])
        self.first_success: list[int | None] = [None] * self.B

    @property
    def trials_done(self) -> int:
        return len(self.hist["accuracy"])

    def add(self, spikes, r0_mv: float) -> None:
        """Score the next trial: ``spikes`` ``(B, T, 2)``."""
        k, spikes = self.trials_done, np.asarray(spikes, bool)
        acc, cor, nsp, wrong = [], [], [], []
        for b, st in enumerate(self.stimuli):
            ok = st.score(k, spikes[b])
            cor.append(ok)
            acc.append(sum(ok) / 4)
            nsp.append(int(spikes[b].sum()))
            wrong.append(int((spikes[b] & ~st.windows(k)).sum()))
            if all(ok) and self.first_success[b] is None:
                self.first_success[b] = k
        h = self.hist
        h["accuracy"].append(acc)
        h["correct"].append(cor)
        h["n_spikes"].append(nsp)
        h["wrong_spikes"].append(wrong)
        h["r0_mv"].append(_sig(r0_mv))

    def accuracy_array(self) -> np.ndarray:
        return np.array(self.hist["accuracy"], float).reshape(-1, self.B)

    def final_accuracy(self) -> np.ndarray:
        """Per seed: mean accuracy over the last ``final_trials`` trials (fewer if fewer ran)."""
        a = self.accuracy_array()
        return a[-self.final_trials:].mean(axis=0) if len(a) else np.full(self.B, np.nan)

    def summary(self, wall: float) -> dict:
        done, fs = self.trials_done, self.first_success
        ks = [k for k in fs if k is not None]
        s = dict(n_seeds=self.B, n_succeeded=len(ks),
                 first_success_mean=_sig(float(np.mean(ks))) if ks else None,
                 final_trials=min(self.final_trials, done),
                 final_accuracy=None, final_accuracy_mean=None, final_accuracy_sd=None,
                 last_accuracy_mean=None, wall_time_s=round(wall, 3),
                 trials_per_s=round(done / wall, 3) if wall > 0 else None,
                 # the cost-based fields of the other tasks, absent here
                 final_rel_cost_mean=None, final_rel_cost_sd=None, final_cost_mean=None)
        if done:
            fa = self.final_accuracy()
            s["final_accuracy"] = [_sig(float(v)) for v in fa]
            s["final_accuracy_mean"] = _sig(float(fa.mean()))
            s["final_accuracy_sd"] = _sig(float(fa.std()))
            s["last_accuracy_mean"] = _sig(float(np.mean(self.hist["accuracy"][-1])))
        return s

    def progress_text(self) -> str:
        return f"accuracy {np.mean(self.hist['accuracy'][-1]):.2f}" if self.trials_done else "accuracy -"


def plot_accuracy(scorer: XorScorer, path, *, seeds, title: str, smooth: int = 20) -> Path:
    """Accuracy per trial: a running mean over ``smooth`` trials per seed (thin) and their mean
    ± sd over seeds (band), with the level of a network that always fires both outputs (0)."""
    from matplotlib.figure import Figure
    from spikeloop.host.plots import _save
    a = scorer.accuracy_array()
    n = len(a)
    k = max(1, min(smooth, n))
    kern = np.ones(k) / k
    run = np.array([np.convolve(a[:, b], kern, mode="valid") for b in range(a.shape[1])]).T
    x = np.arange(k - 1, n)
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot(1, 1, 1)
    for b in range(run.shape[1]):
        ax.plot(x, run[:, b], lw=0.7, alpha=0.6, label=f"seed {seeds[b]}" if len(seeds) <= 10 else None)
    m, sd = run.mean(axis=1), run.std(axis=1)
    ax.plot(x, m, color="k", lw=2, label="mean")
    ax.fill_between(x, m - sd, m + sd, color="k", alpha=0.15)
    ax.axhline(0.5, color="grey", ls=":", lw=1)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("trial")
    ax.set_ylabel(f"accuracy (running mean of {k})")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def plot_trial(path, inputs, windows, spikes, *, dt_ms: float, title: str) -> Path:
    """One trial: the input raster, the response windows and the output spikes."""
    from matplotlib.figure import Figure
    from spikeloop.host.plots import _save
    fig = Figure(figsize=(8, 4.5))
    ax, ay = fig.subplots(2, 1, sharex=True, gridspec_kw=dict(height_ratios=[3, 1]))
    t, i = np.nonzero(np.asarray(inputs, bool))
    ax.scatter(t * dt_ms, i, s=1.5, c="k", marker="|")
    ax.set_ylabel("input")
    ax.set_title(title, fontsize=9)
    w, s = np.asarray(windows, bool), np.asarray(spikes, bool)
    for c in range(w.shape[1]):
        on = np.flatnonzero(np.diff(np.r_[0, w[:, c].astype(int), 0]) == 1)
        off = np.flatnonzero(np.diff(np.r_[0, w[:, c].astype(int), 0]) == -1)
        for a, b in zip(on, off):
            ay.axvspan(a * dt_ms, b * dt_ms, ymin=c / 2 + 0.05, ymax=c / 2 + 0.45, color="C2", alpha=0.3)
        ts = np.flatnonzero(s[:, c])
        ay.scatter(ts * dt_ms, np.full(len(ts), c), marker="|", s=80, c="C3")
    ay.set_ylim(-0.5, 1.5)
    ay.set_yticks([0, 1], ["out 0 (a=b)", "out 1 (a≠b)"])
    ay.set_xlabel("time in trial (ms)")
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- HIL hooks

class _Hooks:
    """What :mod:`spikeloop.host.hil` asks a task that changes every trial: the trial's stimulus,
    the host error filter, the scorer and the figures."""

    def __init__(self, task: dict, params: Params):
        self.task, self.p = task, params
        self.stim = stimulus_from_task(task)

    def trial(self, k: int):
        return self.stim.trial(k)

    def error_filter(self) -> XorErrorFilter:
        return XorErrorFilter(self.p)

    def scorer(self) -> XorScorer:
        return XorScorer([self.stim], self.task.get("final_trials"))

    def write_figures(self, out_dir: Path, scorer: XorScorer, spikes, k: int, title: str) -> None:
        plot_accuracy(scorer, Path(out_dir) / "learning_curve.png", seeds=[0], title=title)
        x, w = self.stim.trial(k)
        plot_trial(Path(out_dir) / "raster.png", x, w, spikes, dt_ms=self.p.dt_ms,
                   title=f"trial {k}: inputs, response windows (green) and output spikes")


def hil_hooks(task: dict | None, params: Params):
    """The hooks of a HIL run's task, or None for a task with one fixed stimulus."""
    if not task or task.get("name") != "xor":
        return None
    from spikeloop.params import ErrorSource
    if params.error_source is not ErrorSource.HOST:
        raise ValueError("the XOR task's error is computed on the host: it needs the host error "
                         "mode (params.error_source = host)")
    return _Hooks(task, params)


# --------------------------------------------------------------------------- in-process training

def train_xor(params: Params, *, seeds: Sequence[int], trials: int, out_dir, task: dict | None = None,
              backend: str = "model", r0_drop: Sequence = (), progress: bool | str = False,
              record_every: int = 50, plots: bool = True, on_trial=None, _resume=None) -> dict:
    """Train one network per seed (batched golden model) on the XOR task, the host error rule
    run step by step; writes metrics.json, params.json, learning_curve.png and raster.png.

    ``task`` is :func:`xor_task` of ``seeds`` (default: the default geometry). ``params`` must be
    set up for host errors (:func:`xor_params`).

    Every ``record_every`` trials and at the end the run is checkpointed (``checkpoint.npz``: the
    whole model, the host's error filter, the scores) and metrics.json rewritten, both
    atomically, so :func:`resume_xor` continues an interrupted run from its last checkpoint to
    the result of an uninterrupted one. ``on_trial(k)`` is called after each trial (tests
    interrupt runs with it). ``_resume``: ``(meta, arrays)`` of a checkpoint (internal).
    """
    from spikeloop.host.record import atomic_write_json
    from spikeloop.host.train import (check_schedule, fmt_time, model_state, restore_model_state,
                                      save_params, write_checkpoint, _make_model, _drop_r0, _r0_mv)
    from spikeloop.params import ErrorSource
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    if backend != "model":
        raise ValueError(f"the XOR task trains in-process on the 'model' backend only (or on a "
                         f"board backend with the host in the loop), not {backend!r}")
    if isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials < 1:
        raise ValueError(f"trials must be a positive integer, not {trials!r}")
    if params.error_source is not ErrorSource.HOST or params.n_out != 2:
        raise ValueError("the XOR network needs 2 outputs and host errors (use xor_params)")
    task = task or xor_task(seeds, dt_ms=params.dt_ms, n_in=params.n_in)
    stims = [stimulus_from_task(task, b) for b in range(len(seeds))]
    if stims[0].n_in != params.n_in:
        raise ValueError(f"the task has {stims[0].n_in} inputs but params.n_in = {params.n_in}")
    schedule = check_schedule(r0_drop)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_params(params, out_dir / "params.json")
    B, T = len(seeds), stims[0].T
    model = _make_model(params, seeds, backend)
    filt = XorErrorFilter(params, batch=B)
    scorer = XorScorer(stims, task.get("final_trials"))
    show = progress == "force" or (progress is True and sys.stderr.isatty())
    t0 = time.perf_counter()
    state = dict(complete=False, interrupted=False, last=None, wall_before=0.0, checkpoint=False)
    start = 0
    if _resume is not None:
        meta, arrays = _resume
        restore_model_state(model, {k[6:]: v for k, v in arrays.items() if k.startswith("model:")})
        filt.restore({k[5:]: v for k, v in arrays.items() if k.startswith("filt:")})
        scorer.hist = {k: [list(r) if isinstance(r, list) else r for r in v]
                       for k, v in meta["hist"].items()}
        scorer.first_success = list(meta["first_success"])
        start = int(meta["trials_done"])
        if start > trials:
            raise ValueError(f"trials must be >= {start} (trials already checkpointed), not {trials}")
        state.update(wall_before=float(meta["wall_s"]), checkpoint=True,
                     last=(start - 1, arrays["last_spikes"]) if start else None)

    def wall() -> float:
        return state["wall_before"] + time.perf_counter() - t0

    def checkpoint() -> None:
        meta = dict(kind="xor", trials_done=scorer.trials_done, trials=int(trials), seeds=seeds,
                    backend=backend, params=params.to_dict(), task=task,
                    r0_drop=[[k, f] for k, f in schedule], record_every=int(record_every),
                    hist=scorer.hist, first_success=scorer.first_success, wall_s=wall())
        arrays = {f"model:{k}": v for k, v in model_state(model).items()}
        arrays.update({f"filt:{k}": np.asarray(v) for k, v in filt.state().items()})
        last = state["last"][1] if state["last"] is not None else np.zeros((B, T, 2), bool)
        write_checkpoint(out_dir, meta, dict(arrays, last_spikes=np.asarray(last, bool)))
        state["checkpoint"] = True

    def metrics() -> dict:
        files = ["metrics.json", "params.json"] + (["checkpoint.npz"] if state["checkpoint"] else []) \
            + (["learning_curve.png", "raster.png"] if plots and scorer.trials_done else [])
        return dict(version=spikeloop.__version__, backend=backend, params=params.to_dict(),
                    seeds=seeds, trials=int(trials), trials_done=scorer.trials_done,
                    complete=state["complete"], interrupted=state["interrupted"],
                    r0_drop=[[k, f] for k, f in schedule], task=task, per_trial=scorer.hist,
                    first_success=scorer.first_success,
                    summary=scorer.summary(wall()), files=files,
                    error_mode="host", feedback_latency=params.error_delay)

    def write_metrics() -> dict:
        m = metrics()
        atomic_write_json(out_dir / "metrics.json", m)
        return m

    def figures() -> None:
        if not plots or not scorer.trials_done:
            return
        k, spikes = state["last"]
        plot_accuracy(scorer, out_dir / "learning_curve.png", seeds=seeds,
                      title=f"XOR: {backend} backend, {B} seed{'s' if B != 1 else ''}, "
                            f"{params.n_hidden} hidden ({params.feedback.value} feedback"
                            f"{', regulariser' if params.regulariser else ''}), {k + 1} trials")
        x, w = stims[0].trial(k)
        plot_trial(out_dir / "raster.png", x, w, spikes[0], dt_ms=params.dt_ms,
                   title=f"seed {seeds[0]}, trial {k}: inputs, response windows (green) and "
                         f"output spikes")

    try:
        for k in range(start, trials):
            for t, f in schedule:
                if t == k:
                    _drop_r0(model, f)
            trial = [st.trial(k) for st in stims]
            x = np.stack([tr[0] for tr in trial], axis=1)      # (T, B, n_in)
            w = np.stack([tr[1] for tr in trial], axis=1)      # (T, B, 2)
            spikes = np.zeros((T, B, 2), bool)
            for n in range(T):
                spikes[n] = model.step(x[n], error=filt.take(1)[0])
                filt.feed(w[n:n + 1], spikes[n:n + 1])
            sp = spikes.transpose(1, 0, 2)
            scorer.add(sp, _r0_mv(model, params))
            state["last"] = (k, sp)
            if show:
                el = time.perf_counter() - t0
                sys.stderr.write("\r" + (f"trial {k + 1}/{trials}  {scorer.progress_text()}  "
                                         f"elapsed {fmt_time(el)}  ETA "
                                         f"{fmt_time(el / (k + 1 - start) * (trials - k - 1))}"
                                         ).ljust(79))
                sys.stderr.flush()
            if record_every and (k + 1) % record_every == 0 and k + 1 < trials:
                checkpoint()
                write_metrics()
            if on_trial is not None:
                on_trial(k)
    except KeyboardInterrupt:
        state["interrupted"] = True
        if show:
            sys.stderr.write("\n")
        write_metrics()
        figures()
        raise
    if show:
        sys.stderr.write("\n")
    state["complete"] = True
    checkpoint()
    figures()
    return write_metrics()


def resume_xor(out_dir, *, trials: int | None = None, progress: bool | str = False,
               plots: bool = True, on_trial=None) -> dict:
    """Continue the in-process XOR run in ``out_dir`` from its last checkpoint to its ``trials``
    (or to ``trials``, which may extend a finished run). Trials run after the checkpoint are run
    again, so the run ends as an uninterrupted one with its seeds would (bit-identical on the
    golden model).

    Raises
    ------
    RecordError
        No checkpoint, or one that does not fit the network it names.
    """
    from spikeloop.host.train import read_checkpoint
    meta, arrays = read_checkpoint(out_dir, "xor")
    return train_xor(Params.from_dict(meta["params"]), seeds=meta["seeds"],
                     trials=int(meta["trials"] if trials is None else trials), out_dir=out_dir,
                     task=meta["task"], backend=meta["backend"], r0_drop=meta["r0_drop"],
                     progress=progress, record_every=int(meta["record_every"]), plots=plots,
                     on_trial=on_trial, _resume=(meta, arrays))


def summary_paragraph(m: dict) -> str:
    """What an XOR run (metrics.json ``m``, in-process or HIL) trained and how it did."""
    from spikeloop.host.backends import label as backend_label
    s, p = m["summary"], m["params"]
    n = s["n_seeds"]
    net = (f"{p['n_hidden']} hidden ({p['feedback']} feedback"
           f"{', regulariser' if p.get('regulariser') else ''})" if p["n_hidden"] else "no hidden layer")
    backend = backend_label(m["backend"])
    if m.get("record"):
        backend += " with the host in the loop"
    text = (f"XOR task (Fig. 5): {p['n_in']} inputs, {net}, 2 outputs, host errors "
            f"{m.get('feedback_latency')} step(s) late; {backend}, {n} seed{'s' if n != 1 else ''}, "
            f"{m['trials_done']} trials, r0 = {p['r0_mv']:g} mV, in {s['wall_time_s']:.1f} s. ")
    if s.get("final_accuracy_mean") is not None:
        text += (f"Accuracy over the last {s['final_trials']} trials: {s['final_accuracy_mean']:.3f} ± "
                 f"{s['final_accuracy_sd']:.3f} (mean ± sd over seeds); {s['n_succeeded']} of {n} "
                 f"had all four patterns right in some trial.")
    if not m["complete"]:
        text += " The run was interrupted."
    return text

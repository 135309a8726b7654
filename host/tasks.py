"""Learning tasks: what a network is trained on, built from seeds or read from raster files.

A task is a dict: ``inputs`` (B, T, n_in) or (T, n_in) bool, ``targets`` (T, n_out) bool and
``task``, the description stored in metrics.json and the run record. The parameters that go
with it come from the same module (``fig2_params``, ``pattern_params``, ``raster_task``), and
the generated tasks' defaults are dicts here (``FIG2_DEFAULTS``, ``PATTERN_DEFAULTS``), so the
command line only parses and dispatches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spikeloop.params import Params

__all__ = ["FIG2_DEFAULTS", "PATTERN_DEFAULTS", "FIG4_HIDDEN", "FIG4_FEEDBACK", "EXTENT_ROUND_MS",
           "CHUNK_MS_MAX", "fig2_params", "fig2_r0_drop", "fig2_stimulus_seed", "make_fig2",
           "pattern_params", "pattern_r0_drop", "make_pattern", "whole_steps", "update_chunk",
           "raster_task", "write_task_rasters"]


#: The SuperSpike Fig. 2 experiment: task, rule hyper-parameters and schedule, in ONE place.
#: Tuned on the float reference over 10 seeds (rate, r0 and the drop were swept; see docs/learning.md).
FIG2_DEFAULTS: dict = {
    # task (spikeloop.sim.stimuli.fig2_task)
    "n_in": 100,
    "duration_ms": 500.0,
    "rate_hz": 30.0,
    "n_target_spikes": 5,
    # rule hyper-parameters: Params fields that differ from the Params defaults
    "params": {"w_init_std_mv": 0.5, "r0_mv": 0.1},
    # learning-rate schedule: (trial, factor) = divide r0 by factor at the start of that trial
    "r0_drop": [(200, 10)],
    # ... and through a hidden layer (--hidden), which needs longer at the first rate
    # (docs/learning.md, "Fig. 2 through hidden neurons")
    "r0_drop_hidden": [(400, 10)],
    # experiment size and scoring
    "trials": 1000,
    "seeds": 10,
    "tol_ms": 3.0,
}


#: Fig. 4 of the SuperSpike paper: the Fig. 2 task through this many hidden neurons, once per
#: feedback mode (docs/learning.md, "Fig. 2 through four hidden neurons").
FIG4_HIDDEN = 4
FIG4_FEEDBACK = ("symmetric", "random", "uniform")

#: A spatio-temporal pattern: frozen Poisson noise in, a word written into spike times out
#: (spikeloop.sim.stimuli.text_raster). The settings are those measured in docs/learning.md,
#: "Long trials": 100 -> 32 -> 100, symmetric feedback, r0 0.1 mV without a drop, a weight
#: update every 500 ms of the 3.5 s trial (update_chunk).
PATTERN_DEFAULTS: dict = {
    "word": "SPIKE",
    "n_in": 100,
    "n_hidden": 32,
    "n_out": 100,
    "duration_ms": 3500.0,
    "rate_hz": 10.0,
    "input_seed": 1,
    "params": {"r0_mv": 0.1, "feedback": "symmetric"},
    "r0_drop": [],
    "trials": 150,
    "seeds": 3,
    "tol_ms": 3.0,
}


def fig2_params(base: Params | None = None, *, n_in: int | None = None,
                duration_ms: float | None = None, **changes) -> Params:
    """Parameters of the Fig. 2 network: ``base`` (default: Params with FIG2_DEFAULTS["params"])
    resized to ``n_in`` inputs, one output, and one weight update per trial."""
    d = FIG2_DEFAULTS
    if base is None:
        base = Params(**d["params"])
    n_in = d["n_in"] if n_in is None else n_in
    duration_ms = d["duration_ms"] if duration_ms is None else duration_ms
    steps = whole_steps(duration_ms, base.dt_ms)
    return base.replace(n_in=n_in, n_out=1, chunk_steps=steps, **changes)


def fig2_r0_drop(n_hidden: int) -> list[tuple[int, float]]:
    """The Fig. 2 learning-rate schedule for a network with ``n_hidden`` hidden neurons."""
    return list(FIG2_DEFAULTS["r0_drop_hidden" if n_hidden else "r0_drop"])


def fig2_stimulus_seed(seed: int) -> int:
    """Seed of the input pattern for network seed ``seed``.

    Derived (not equal) so that a network's initial weights and its input pattern, both drawn
    with ``numpy.random.default_rng``, do not come from the same random stream.
    """
    return int(np.random.SeedSequence([int(seed), 0x5EED]).generate_state(1)[0])


def make_fig2(seeds: Sequence[int], *, n_in: int | None = None, duration_ms: float | None = None,
              rate_hz: float | None = None, n_target_spikes: int | None = None,
              dt_ms: float = 1.0) -> dict:
    """The Fig. 2 stimulus for each seed: ``inputs`` (B, T, n_in), ``targets`` (T, 1), the
    network ``seeds``, the ``stimulus_seeds`` used (see :func:`fig2_stimulus_seed`) and ``task``,
    a description for metrics.json."""
    from spikeloop.sim.stimuli import fig2_task
    d = FIG2_DEFAULTS
    kw = dict(n_in=d["n_in"] if n_in is None else n_in,
              duration_s=(d["duration_ms"] if duration_ms is None else duration_ms) / 1000.0,
              dt_s=dt_ms / 1000.0,
              rate_hz=d["rate_hz"] if rate_hz is None else rate_hz,
              n_target_spikes=d["n_target_spikes"] if n_target_spikes is None else n_target_spikes)
    stim_seeds = [fig2_stimulus_seed(s) for s in seeds]
    tasks = [fig2_task(s, **kw) for s in stim_seeds]
    return dict(inputs=np.stack([t["inputs"] for t in tasks]), targets=tasks[0]["targets"],
                seeds=[int(s) for s in seeds], stimulus_seeds=stim_seeds,
                task=dict(name="fig2", n_in=kw["n_in"], duration_ms=kw["duration_s"] * 1000.0,
                          rate_hz=kw["rate_hz"], n_target_spikes=kw["n_target_spikes"],
                          stimulus_seeds=stim_seeds))


def pattern_params(base: Params | None = None, *, n_in: int | None = None,
                   n_out: int | None = None, duration_ms: float | None = None,
                   **changes) -> Params:
    """Parameters of the pattern network: ``base`` (default: Params with
    PATTERN_DEFAULTS["params"]) resized to the task, PATTERN_DEFAULTS["n_hidden"] hidden neurons
    unless ``changes`` says otherwise, and a weight update every :func:`update_chunk` steps."""
    d = PATTERN_DEFAULTS
    if base is None:
        base = Params(**d["params"])
    steps = whole_steps(d["duration_ms"] if duration_ms is None else duration_ms, base.dt_ms)
    changes.setdefault("n_hidden", d["n_hidden"])
    changes.setdefault("chunk_steps", update_chunk(steps, base.dt_ms))
    return base.replace(n_in=d["n_in"] if n_in is None else n_in,
                        n_out=d["n_out"] if n_out is None else n_out, **changes)


def pattern_r0_drop(n_hidden: int) -> list[tuple[int, float]]:
    """The pattern task's learning-rate schedule (the same with any hidden layer)."""
    return list(PATTERN_DEFAULTS["r0_drop"])


def make_pattern(seeds: Sequence[int], *, word: str | None = None, n_in: int | None = None,
                 n_out: int | None = None, duration_ms: float | None = None,
                 rate_hz: float | None = None, input_seed: int | None = None,
                 dt_ms: float = 1.0) -> dict:
    """The pattern task, shaped as :func:`make_fig2`'s: ``inputs`` (B, T, n_in), the same frozen
    noise for every network seed (so that the seeds differ only in their weights), ``targets``
    (T, n_out) = ``word`` written by ``text_raster``, ``seeds``, ``stimulus_seeds`` and ``task``."""
    from spikeloop.sim.stimuli import frozen_poisson, text_raster
    d = PATTERN_DEFAULTS
    word = d["word"] if word is None else word
    n_in = d["n_in"] if n_in is None else n_in
    n_out = d["n_out"] if n_out is None else n_out
    duration_ms = d["duration_ms"] if duration_ms is None else duration_ms
    rate_hz = d["rate_hz"] if rate_hz is None else rate_hz
    input_seed = d["input_seed"] if input_seed is None else input_seed
    steps = whole_steps(duration_ms, dt_ms)
    x = frozen_poisson(n_in, steps, rate_hz, dt_ms / 1000.0, input_seed)
    y = text_raster(word, n_out, steps)
    stim_seeds = [int(input_seed)] * len(seeds)
    return dict(inputs=np.repeat(x[None], len(seeds), axis=0), targets=y,
                seeds=[int(s) for s in seeds], stimulus_seeds=stim_seeds,
                task=dict(name="pattern", word=word, n_in=n_in, n_out=n_out,
                          duration_ms=steps * dt_ms, rate_hz=rate_hz, input_seed=int(input_seed),
                          stimulus_seeds=stim_seeds))


def whole_steps(duration_ms: float, dt_ms: float) -> int:
    if isinstance(duration_ms, bool) or not isinstance(duration_ms, (int, float)) \
            or not math.isfinite(duration_ms) or duration_ms <= 0:
        raise ValueError(f"duration must be a positive number of ms, not {duration_ms!r}")
    steps = round(duration_ms / dt_ms)
    if steps < 1 or abs(steps * dt_ms - duration_ms) > 1e-9 * max(1.0, duration_ms):
        raise ValueError(f"duration must be a whole number of steps of dt = {dt_ms:g} ms, "
                         f"not {duration_ms:g} ms")
    return steps


#: A raster without a ``# duration_s`` header lasts to its last spike, rounded up to this.
EXTENT_ROUND_MS = 100.0

#: Longest weight-update chunk a raster task gets by default. With one update per 3.5 s trial a
#: 100-32-100 network writing a word is at 0.81-0.90 of the silent cost after 100 trials; with
#: an update every 500 ms at 0.43-0.48, on every word tried (docs/learning.md, "Long trials").
CHUNK_MS_MAX = 500.0


def update_chunk(steps: int, dt_ms: float, max_ms: float = CHUNK_MS_MAX) -> int:
    """Steps per weight update for a trial of ``steps``: the whole trial if it lasts at most
    ``max_ms``, else the longest chunk of ``max_ms / 2`` to ``max_ms`` that divides the trial (so
    every trial ends on an update), else ``max_ms`` (the updates then drift through the trial)."""
    limit = max(1, int(max_ms / dt_ms + 1e-9))
    if steps <= limit:
        return steps
    return next((d for d in range(limit, (limit + 1) // 2 - 1, -1) if steps % d == 0), limit)


def raster_task(input_path, target_path, base: Params | None = None, *,
                duration_ms: float | None = None, **changes) -> tuple[Params, dict]:
    """Parameters and task of a stimulus and target given as ``.ras`` files.

    The network gets as many inputs and outputs as the files' ``# neurons`` headers say, else as
    their highest ids use (or ``base``, if larger). One trial is ``duration_ms``, else the files'
    ``# duration_s`` header (the longer of the two), else the last spike rounded up to
    ``EXTENT_ROUND_MS``. The weights are updated every :func:`update_chunk` steps, unless
    ``changes`` sets ``chunk_steps``. ``changes`` (``n_hidden``, ``feedback``, ...) go to the
    parameters.

    Raises
    ------
    FileNotFoundError
        If a file does not exist.
    ValueError
        If the trial length is not a whole number of steps, or a spike lies outside it or above
        its file's ``# neurons``.
    """
    from spikeloop.sim.raster import read_ras, read_ras_header, to_dense
    for opt, path in (("input", input_path), ("target", target_path)):
        if not Path(path).is_file():
            raise FileNotFoundError(f"--{opt}: no such file: {path}")
    given = base
    base = base or Params()
    (ti, ii), (tt, it) = read_ras(input_path), read_ras(target_path)
    hi, ht = read_ras_header(input_path), read_ras_header(target_path)

    def size(ids, header, path, least):
        used = int(ids.max()) + 1 if ids.size else 1
        if "neurons" in header and used > header["neurons"]:
            raise ValueError(f"{path}: neuron id {used - 1} is not below its '# neurons "
                             f"{header['neurons']}' header")
        return max(header.get("neurons", used), least)

    n_in = size(ii, hi, input_path, given.n_in if given else 0)
    n_out = size(it, ht, target_path, given.n_out if given else 0)
    if duration_ms is None:
        stated = [h["duration_s"] * 1000.0 for h in (hi, ht) if "duration_s" in h]
        if stated:
            duration_ms = max(stated)
        else:
            last_ms = max([t.max() for t in (ti, tt) if t.size], default=0.0) * 1000.0
            duration_ms = EXTENT_ROUND_MS * (math.floor(last_ms / EXTENT_ROUND_MS + 1e-9) + 1)
    steps = round(duration_ms / base.dt_ms)
    if steps < 1 or abs(steps * base.dt_ms - duration_ms) > 1e-9 * duration_ms:
        raise ValueError(f"--duration-ms must be a whole number of steps of "
                         f"dt = {base.dt_ms:g} ms, not {duration_ms:g}")
    changes.setdefault("chunk_steps", update_chunk(steps, base.dt_ms))
    params = base.replace(n_in=n_in, n_out=n_out, **changes)
    dt_s = params.dt_ms / 1000.0
    try:
        inputs = to_dense(ti, ii, n_in, steps, dt_s)
        targets = to_dense(tt, it, n_out, steps, dt_s)
    except ValueError as e:
        raise ValueError(f"{e}; set the trial length with --duration-ms") from None
    info = dict(name="files", input=str(input_path), target=str(target_path),
                duration_ms=steps * params.dt_ms)
    return params, dict(inputs=inputs, targets=targets, task=info)


def write_task_rasters(out: Path, task: dict, params: Params) -> None:
    """A generated task as ``.ras`` files in ``out``, so that ``train --input --target`` can
    replay it: ``target.ras`` and one input per network seed (Fig. 2), or the one input all
    seeds share (pattern, with ``# neurons`` and ``# duration_s`` headers, as its silent
    outputs and the end of its trial are not in the spikes)."""
    from spikeloop.sim.raster import from_dense, write_ras
    dt_s = params.dt_ms / 1000.0
    name = task["task"]["name"]
    if name != "fig2":
        x, y = task["inputs"][0], task["targets"]
        dur = x.shape[0] * dt_s
        write_ras(out / "input.ras", *from_dense(x, dt_s), n_neurons=x.shape[1], duration_s=dur,
                  comment=f"spikeloop {name} input (stimulus seed "
                          f"{task['stimulus_seeds'][0]}): time_s neuron_id")
        write_ras(out / "target.ras", *from_dense(y, dt_s), n_neurons=y.shape[1], duration_s=dur,
                  comment=f"spikeloop {name} target spikes: time_s neuron_id")
        return
    t, i = from_dense(task["targets"], dt_s)
    write_ras(out / "target.ras", t, i, comment="spikeloop fig2 target spikes: time_s neuron_id")
    for b, (x, seed) in enumerate(zip(task["inputs"], task["seeds"])):
        t, i = from_dense(x, dt_s)
        write_ras(out / ("input.ras" if b == 0 else f"input_seed{seed}.ras"), t, i,
                  comment=f"spikeloop fig2 input for network seed {seed} (stimulus seed "
                          f"{task['task']['stimulus_seeds'][b]}): time_s neuron_id")

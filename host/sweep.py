"""Sweeps: a grid of training jobs (task × hidden × feedback × formats × seeds), run serially or
on Dask distributed, each result stored under the hash of its complete configuration.

One *job* is one network (one seed) of one configuration, trained with :func:`spikeloop.host.train.train`
on an in-process backend (``model`` or ``float``). Its *config* is a plain dict, and the job is
named by :func:`job_hash`, the SHA-256 of the canonical JSON of that config together with
``spikeloop.__version__`` and :func:`code_digest` (a digest of the package's ``.py`` files), so a
result is reused only by the same job on the same code. The store (:class:`Store`) holds one JSON
file per finished job, written atomically: a rerun computes only what is missing, and an
interrupted sweep resumes where it stopped.

Seeds: job ``k`` of a configuration trains network seed ``seed + k`` (the seeds ``train --seed S
--seeds K`` trains as one batch, with the same per-seed stimuli, so a job reproduces that seed of
such a run exactly), and every configuration of a grid gets the same seeds, so configurations are
compared on the same networks and stimuli. A seed depends only on the grid, never on the order in
which jobs run or on the number of workers.

Tasks are a registry (:data:`TASKS`, :func:`register`): name → :class:`SweepTask`, whose ``run``
function trains one seed of a job config and returns its result (:func:`training_result`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import shlex
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import spikeloop

__all__ = ["SweepTask", "TASKS", "register", "GRID_KEYS", "DEFAULT_STORE", "code_digest",
           "canonical_json", "job_hash", "job_seeds", "load_grid", "parse_set", "expand_grid",
           "grid_command", "Store", "run_job", "run_sweep", "training_result", "SweepError"]

#: Where ``spikeloop sweep`` and ``spikeloop report`` keep the job results by default.
DEFAULT_STORE = Path("spikeloop-sweep")

#: Networks per configuration when a grid does not say (results are mean ± sd over seeds).
DEFAULT_SEEDS = 5

#: The packages whose ``.py`` files make up :func:`code_digest` (pyproject.toml's packages).
CODE_PACKAGES = ("spikeloop", "spikeloop.hdl", "spikeloop.host", "spikeloop.sim",
                 "spikeloop.sim.rtl", "spikeloop.boards")


class SweepError(ValueError):
    """A grid, option or store that cannot be used; the message says what was expected."""


# --------------------------------------------------------------------------- the task registry

@dataclasses.dataclass(frozen=True)
class SweepTask:
    """How a sweep trains one task.

    Parameters
    ----------
    params : callable(config) -> Params
        The network of a job config (everything but the seed); called once per configuration
        when the grid is expanded, which also validates the options before any job runs.
    run : callable(config, seed, out) -> dict
        Train network ``seed`` of ``config`` (which holds ``params`` as a dict), with ``out`` a
        scratch directory deleted afterwards; return :func:`training_result`'s dict.
    options : mapping
        The task's options and their defaults (``--set KEY=VALUE``); a callable default is
        called with the config being built (e.g. a schedule that depends on ``hidden``).
    trials : int
        Trials when the grid gives none.
    hidden, feedback : tuple
        The hidden sizes and feedback modes a grid that names none sweeps.
    job_task : str, optional
        The task name written into job configs (an alias such as ``fig4`` shares ``fig2``'s
        jobs, and so its stored results).
    unit : "trial" or "epoch"
        What one pass of the task is; the grid key that counts them is ``trials`` or ``epochs``
        (the config key too), so a classification grid says what it means.
    axes : tuple
        The optional grid keys this task takes besides the common ones (task, hidden,
        feedback, formats, seeds, seed, backend, options); any other is refused by name.
    backends : tuple
        The in-process backends the task trains on.
    """
    params: Callable
    run: Callable
    options: Mapping
    trials: int
    hidden: tuple = (0,)
    feedback: tuple = ("symmetric",)
    job_task: str | None = None
    unit: str = "trial"
    axes: tuple = ("trials",)
    backends: tuple = ("model", "float")

    @property
    def passes_key(self) -> str:
        """``trials`` or ``epochs``: the grid and config key of the training length."""
        return "epochs" if self.unit == "epoch" else "trials"


#: name -> SweepTask. Add a task with one :func:`register` call.
TASKS: dict[str, SweepTask] = {}


def register(name: str, task: SweepTask) -> SweepTask:
    """Make ``task`` available to ``spikeloop sweep --task NAME``."""
    TASKS[name] = task
    return task


def _formats_base(config: dict, rule: Mapping):
    """Params with a task's rule settings and the job's number formats."""
    from spikeloop.params import Params
    return Params(**dict(rule, formats=config["formats"]["words"]))


def _fig2_params(config: dict):
    from spikeloop.host.tasks import FIG2_DEFAULTS, fig2_params
    o = config["options"]
    fb = {} if config["feedback"] is None else {"feedback": config["feedback"]}
    return fig2_params(_formats_base(config, FIG2_DEFAULTS["params"]), n_in=o["n_in"],
                       duration_ms=o["duration_ms"], n_hidden=config["hidden"], **fb)


def _fig2_run(config: dict, seed: int, out: Path) -> dict:
    from spikeloop.host.tasks import make_fig2
    from spikeloop.params import Params
    params, o = Params.from_dict(config["params"]), config["options"]
    task = make_fig2([seed], n_in=params.n_in, duration_ms=o["duration_ms"], rate_hz=o["rate_hz"],
                     n_target_spikes=o["n_target_spikes"], dt_ms=params.dt_ms)
    return _train_one(config, params, task, seed, out)


def _pattern_params(config: dict):
    from spikeloop.host.tasks import PATTERN_DEFAULTS, pattern_params
    o = config["options"]
    fb = {} if config["feedback"] is None else {"feedback": config["feedback"]}
    return pattern_params(_formats_base(config, PATTERN_DEFAULTS["params"]), n_in=o["n_in"],
                          n_out=o["n_out"], duration_ms=o["duration_ms"], n_hidden=config["hidden"],
                          **fb)


def _pattern_run(config: dict, seed: int, out: Path) -> dict:
    from spikeloop.host.tasks import make_pattern
    from spikeloop.params import Params
    params, o = Params.from_dict(config["params"]), config["options"]
    task = make_pattern([seed], word=o["word"], n_in=params.n_in, n_out=params.n_out,
                        duration_ms=o["duration_ms"], rate_hz=o["rate_hz"],
                        input_seed=o["input_seed"], dt_ms=params.dt_ms)
    return _train_one(config, params, task, seed, out)


def _train_one(config: dict, params, task: dict, seed: int, out: Path) -> dict:
    from spikeloop.host.train import train
    o = config["options"]
    m = train(params, task["inputs"], task["targets"], seeds=[seed], trials=config["trials"],
              backend=config["backend"], out_dir=out, r0_drop=o["r0_drop"], tol_ms=o["tol_ms"],
              record_every=0, task=task["task"], plots=False)
    return training_result(m)


def training_result(m: dict) -> dict:
    """The stored result of a one-seed :func:`~spikeloop.host.train.train` run (its metrics.json
    ``m``): per-trial ``curves`` (``rel_cost``, the one the report plots, and ``cost``),
    ``success`` per trial, ``first_success``, the ``final`` values (last trial), the ``r0_drop``
    schedule and the ``task`` description.

    A task scored differently (e.g. accuracy) returns the same shape with its own curve and
    final names, and ``metric`` naming the curve to plot.
    """
    pt = m["per_trial"]
    col = lambda rows: [r[0] for r in rows]  # noqa: E731  (one seed per job)
    rel, cost = col(pt["rel_cost"]), col(pt["cost"])
    return dict(metric="rel_cost", curves=dict(rel_cost=rel, cost=cost),
                success=col(pt["success"]), first_success=m["first_success"][0],
                final=dict(rel_cost=rel[-1] if rel else None, cost=cost[-1] if cost else None),
                success_level=m["success_rel_cost"], r0_drop=m["r0_drop"], task=m["task"],
                trials_done=m["trials_done"], wall_s=m["summary"]["wall_time_s"])


def _fig2_drop(config: dict):
    from spikeloop.host.tasks import fig2_r0_drop
    return [list(x) for x in fig2_r0_drop(config["hidden"])]


def _pattern_drop(config: dict):
    from spikeloop.host.tasks import pattern_r0_drop
    return [list(x) for x in pattern_r0_drop(config["hidden"])]


def _builtin_tasks() -> None:
    from spikeloop.host.tasks import FIG2_DEFAULTS as F, FIG4_FEEDBACK, FIG4_HIDDEN
    from spikeloop.host.tasks import PATTERN_DEFAULTS as P
    fig2_opts = dict(n_in=F["n_in"], duration_ms=F["duration_ms"], rate_hz=F["rate_hz"],
                     n_target_spikes=F["n_target_spikes"], tol_ms=F["tol_ms"], r0_drop=_fig2_drop)
    register("fig2", SweepTask(_fig2_params, _fig2_run, fig2_opts, trials=F["trials"]))
    register("fig4", SweepTask(_fig2_params, _fig2_run, fig2_opts, trials=F["trials"],
                               hidden=(FIG4_HIDDEN,), feedback=tuple(FIG4_FEEDBACK), job_task="fig2"))
    register("pattern", SweepTask(
        _pattern_params, _pattern_run,
        dict(word=P["word"], n_in=P["n_in"], n_out=P["n_out"], duration_ms=P["duration_ms"],
             rate_hz=P["rate_hz"], input_seed=P["input_seed"], tol_ms=P["tol_ms"],
             r0_drop=_pattern_drop),
        trials=P["trials"], hidden=(P["n_hidden"],), feedback=(P["params"]["feedback"],)))


def _xor_params(config: dict):
    from spikeloop.host.xor import XOR_DEFAULTS, XorStimulus, xor_params
    o = config["options"]
    base = _formats_base(config, XOR_DEFAULTS["params"])
    # the geometry is checked here, once per configuration, before any job runs
    XorStimulus(0, n_in=o["n_in"], pattern_ms=o["pattern_ms"], slot_ms=o["slot_ms"],
                window_start_ms=o["window_start_ms"], window_ms=o["window_ms"],
                rate_hz=o["rate_hz"], dt_ms=base.dt_ms)
    ch = dict(n_hidden=config["hidden"], regulariser=bool(config["regulariser"]))
    if config["feedback"] is not None:
        ch["feedback"] = config["feedback"]
    return xor_params(base, n_in=o["n_in"], duration_ms=4 * o["slot_ms"],
                      feedback_latency=o["feedback_latency"], **ch)


def _xor_run(config: dict, seed: int, out: Path) -> dict:
    from spikeloop.host.xor import train_xor, xor_task
    from spikeloop.params import Params
    params, o = Params.from_dict(config["params"]), config["options"]
    task = xor_task([seed], dt_ms=params.dt_ms, n_in=params.n_in, rate_hz=o["rate_hz"],
                    pattern_ms=o["pattern_ms"], slot_ms=o["slot_ms"],
                    window_start_ms=o["window_start_ms"], window_ms=o["window_ms"])
    m = train_xor(params, seeds=[seed], trials=config["trials"], out_dir=out, task=task,
                  r0_drop=o["r0_drop"], record_every=0, plots=False)
    return xor_result(m)


def xor_result(m: dict) -> dict:
    """The stored result of a one-seed XOR run (its metrics.json ``m``): accuracy per trial (the
    fraction of the four patterns right; higher is better), ``success`` per trial (all four
    right), and the final accuracy (mean over the last ``final_trials`` trials, as ``train
    xor`` reports it)."""
    pt, s = m["per_trial"], m["summary"]
    acc = [r[0] for r in pt["accuracy"]]
    return dict(metric="accuracy", direction="max", unit="trial", curves=dict(accuracy=acc),
                success=[all(c[0]) for c in pt["correct"]], first_success=m["first_success"][0],
                final=dict(accuracy=s["final_accuracy"][0] if s["final_accuracy"] else None,
                           last_accuracy=acc[-1] if acc else None),
                final_trials=s["final_trials"], chance=None, r0_drop=m["r0_drop"], task=m["task"],
                trials_done=m["trials_done"], wall_s=s["wall_time_s"])


#: The Braille archive's shape (docs/learning.md): 12 taxels (24 sigma-delta channels), 77
#: frames, 27 letters. A sweep builds the network from these, without the data, so that a
#: missing archive fails the jobs (with the message saying where it looked), not the grid.
BRAILLE_TAXELS, BRAILLE_FRAMES, BRAILLE_CLASSES = 12, 77, 27


def _check_per_class(o: dict) -> None:
    for key in ("train_per_class", "test_per_class"):
        v = o.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"option {key!r} must be a positive integer (or absent: all), not {v!r}")


def _classify_changes(config: dict) -> dict:
    ch = dict(n_hidden=config["hidden"], r0_mv=config["options"]["r0_mv"])
    if config["feedback"] is not None:
        ch["feedback"] = config["feedback"]
    return ch


def _braille_params(config: dict):
    from spikeloop.host.classify import BRAILLE_DEFAULTS as B, classify_params
    o = config["options"]
    _check_per_class(o)
    if o["data"] is not None and not isinstance(o["data"], str):
        raise ValueError(f"option 'data' must be a file name, not {o['data']!r}")
    if not (o["threshold"] > 0 and o["frame_steps"] >= 1):
        raise ValueError(f"threshold must be > 0 and frame_steps >= 1, not {o['threshold']!r}, "
                         f"{o['frame_steps']!r}")
    return classify_params(B, 2 * BRAILLE_TAXELS, BRAILLE_CLASSES, BRAILLE_FRAMES * o["frame_steps"],
                           base=_formats_base(config, B["params"]), **_classify_changes(config))


def _randman_task(o: dict):
    from spikeloop.host.classify import make_randman_task
    return make_randman_task(data_seed=o["data_seed"], n_in=o["n_in"], classes=o["classes"],
                             dim=o["dim"], samples_per_class=o["samples_per_class"],
                             test_fraction=o["test_fraction"], validate=o["validate"],
                             train_per_class=o["train_per_class"], test_per_class=o["test_per_class"],
                             target_start=o["target_start"], target_period=o["target_period"])


def _randman_params(config: dict):
    from spikeloop.host.classify import RANDMAN_DEFAULTS as R, classify_params
    o = config["options"]
    _check_per_class(o)
    task = _randman_task(o)            # cheap; checks every option of the generator
    x = task["inputs"]
    return classify_params(R, x.shape[2], task["targets"].shape[2], x.shape[1],
                           base=_formats_base(config, R["params"]), **_classify_changes(config))


def _braille_run(config: dict, seed: int, out: Path) -> dict:
    from spikeloop.host.classify import BRAILLE_ENV, braille_path, make_braille_task
    o = config["options"]
    try:
        task = make_braille_task(o["data"], threshold=o["threshold"], frame_steps=o["frame_steps"],
                                 validate=o["validate"], train_per_class=o["train_per_class"],
                                 test_per_class=o["test_per_class"], target_start=o["target_start"],
                                 target_period=o["target_period"])
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e} (in a sweep: --set data=FILE, or ${BRAILLE_ENV} where the "
                                f"workers run)") from None
    res = _classify_one(config, task, seed, out)
    res["data_sha256"] = hashlib.sha256(braille_path(o["data"])[0].read_bytes()).hexdigest()
    return res


def _randman_run(config: dict, seed: int, out: Path) -> dict:
    return _classify_one(config, _randman_task(config["options"]), seed, out)


def _classify_one(config: dict, task: dict, seed: int, out: Path) -> dict:
    from spikeloop.host.classify import train_classifier
    from spikeloop.params import Params
    m = train_classifier(Params.from_dict(config["params"]), task, seeds=[seed],
                         epochs=config["epochs"], backend=config["backend"], out_dir=out,
                         plots=False)
    return classification_result(m)


def classification_result(m: dict) -> dict:
    """The stored result of a one-seed classification run (its metrics.json ``m``): test accuracy
    per epoch (epoch 0: before training; learning off; higher is better), the online train
    accuracy (None at epoch 0), the final values and the chance level."""
    pe = m["per_epoch"]
    test = [r[0] for r in pe["test_acc"]]
    train = [None if r is None else r[0] for r in pe["train_acc"]]
    return dict(metric="test_acc", direction="max", unit="epoch",
                curves=dict(test_acc=test, train_acc=train),
                final=dict(test_acc=test[-1], train_acc=train[-1]), chance=m["task"]["chance"],
                task=m["task"], epochs_done=len(test) - 1, wall_s=m["summary"]["wall_time_s"])


def _more_tasks() -> None:
    """xor (accuracy per trial) and the classification tasks (test accuracy per epoch)."""
    from spikeloop.host.classify import BRAILLE_DEFAULTS as B, RANDMAN_DEFAULTS as R
    from spikeloop.host.xor import XOR_DEFAULTS as X
    register("xor", SweepTask(
        _xor_params, _xor_run,
        dict(n_in=X["n_in"], rate_hz=X["rate_hz"], pattern_ms=X["pattern_ms"],
             slot_ms=X["slot_ms"], window_start_ms=X["window_start_ms"], window_ms=X["window_ms"],
             feedback_latency=X["feedback_latency"], r0_drop=list(X["r0_drop"])),
        trials=X["trials"], hidden=(X["n_hidden"],), axes=("trials", "regulariser"),
        backends=("model",)))
    common = lambda d: dict(validate=False, train_per_class=None, test_per_class=None,  # noqa: E731
                            target_start=d["target_start"], target_period=d["target_period"],
                            r0_mv=float(d["params"]["r0_mv"]))
    register("braille", SweepTask(
        _braille_params, _braille_run,
        dict(data=None, threshold=float(B["threshold"]), frame_steps=B["frame_steps"], **common(B)),
        trials=B["epochs"], hidden=(B["n_hidden"],), feedback=(B["params"]["feedback"],),
        unit="epoch", axes=("epochs",)))
    register("randman", SweepTask(
        _randman_params, _randman_run,
        dict(data_seed=R["data_seed"], n_in=R["n_in"], classes=R["classes"], dim=R["dim"],
             samples_per_class=R["samples_per_class"], test_fraction=float(R["test_fraction"]),
             **common(R)),
        trials=R["epochs"], hidden=(R["n_hidden"],), feedback=(R["params"]["feedback"],),
        unit="epoch", axes=("epochs",)))


_builtin_tasks()
_more_tasks()


# --------------------------------------------------------------------------- hashing

def canonical_json(obj) -> str:
    """The one JSON text of ``obj`` that is hashed: sorted keys, no spaces, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False,
                      ensure_ascii=False)


_DIGEST: dict[str, str] = {}


def code_digest() -> str:
    """SHA-256 over the package's ``.py`` files (name and content, sorted by module path).

    Any change to the code changes it, so stored results are never reused across code that could
    compute them differently. Works from any installation, with or without git.
    """
    if "digest" not in _DIGEST:
        h = hashlib.sha256()
        for pkg in CODE_PACKAGES:
            spec = importlib.util.find_spec(pkg)
            for root in (spec.submodule_search_locations or ()) if spec else ():
                for path in sorted(Path(root).glob("*.py")):
                    h.update(f"{pkg}/{path.name}\0".encode())
                    h.update(path.read_bytes())
                    h.update(b"\0")
        _DIGEST["digest"] = h.hexdigest()
    return _DIGEST["digest"]


def job_hash(config: dict, *, version: str | None = None, digest: str | None = None) -> str:
    """The name of a job in the store: SHA-256 of its config, the version and the code digest."""
    key = dict(config=config, version=spikeloop.__version__ if version is None else version,
               code=code_digest() if digest is None else digest)
    return hashlib.sha256(canonical_json(key).encode()).hexdigest()


def job_seeds(seed: int, n: int) -> list[int]:
    """Network seeds of the ``n`` jobs of each configuration: ``seed``, ``seed + 1``, ... (those of
    ``train --seed seed --seeds n``; see the module docstring)."""
    return [int(seed) + k for k in range(int(n))]


# --------------------------------------------------------------------------- grids

#: Keys of a grid (TOML file or options). ``options`` is a table of task options.
GRID_KEYS = ("task", "hidden", "feedback", "formats", "seeds", "seed", "trials", "epochs",
             "regulariser", "backend", "options")
#: Grid keys only some tasks take (:attr:`SweepTask.axes`); the others every task takes.
TASK_AXES = ("trials", "epochs", "regulariser")
FEEDBACK_MODES = ("symmetric", "random", "uniform")
SWEEP_BACKENDS = ("model", "float")


def load_grid(path) -> dict:
    """A grid from a TOML file: top-level keys of :data:`GRID_KEYS` (a ``[sweep]`` table is
    also accepted); formats files are relative to the grid file."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"--grid: no such file: {path}")
    try:
        d = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SweepError(f"{path}: not valid TOML: {e}") from None
    d = d.get("sweep", d)
    unknown = sorted(set(d) - set(GRID_KEYS))
    if unknown:
        raise SweepError(f"{path}: unknown key(s) {', '.join(unknown)}; expected some of "
                         f"{', '.join(GRID_KEYS)}")
    for key in ("task", "hidden", "feedback", "formats", "regulariser"):
        if key in d and not isinstance(d[key], list):
            d[key] = [d[key]]
    if "formats" in d:
        d["formats"] = [f if not isinstance(f, str) or f == "default" or Path(f).is_absolute()
                        else os.path.relpath(path.parent / f) for f in d["formats"]]
    return d


def parse_set(items: Sequence[str]) -> dict:
    """``KEY=VALUE`` task options; VALUE is read as a TOML value (``20``, ``0.5``, ``"LOOP"``,
    ``[[200, 10]]``), else taken as a plain string (``LOOP``)."""
    out = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise SweepError(f"--set must be KEY=VALUE (e.g. n_in=20), not {item!r}")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        out[key.strip().replace("-", "_")] = value
    return out


def _check_int(what, v, least=0):
    if isinstance(v, bool) or not isinstance(v, int) or v < least:
        raise SweepError(f"{what} must be an integer >= {least}, not {v!r}")
    return v


def _coerce(task: str, key: str, value, default):
    """An option value of the type of its default (ints stay ints, a float option takes ints)."""
    what = f"option {key!r} of task {task}"
    if callable(default) or default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SweepError(f"{what} must be true or false, not {value!r}")
        return value
    if isinstance(default, int):
        return _check_int(what, value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SweepError(f"{what} must be a number, not {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise SweepError(f"{what} must be a string, not {value!r}")
        return value
    return value


def _formats_entry(spec) -> dict:
    """A formats axis entry: ``default`` or a parameter file whose ``[formats]`` table is used."""
    if spec == "default":
        return dict(name="default", words={})
    if not isinstance(spec, str):
        raise SweepError(f"formats entries must be 'default' or a parameter file, not {spec!r}")
    path = Path(spec)
    if not path.is_file():
        raise SweepError(f"formats: no such file: {spec}")
    try:
        text = path.read_text()
        d = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SweepError(f"{spec}: not valid {path.suffix.lstrip('.') or 'JSON'}: {e}") from None
    d = d.get("params", d) if isinstance(d, dict) else {}
    words = d.get("formats") if isinstance(d, dict) else None
    if not isinstance(words, dict) or not words:
        raise SweepError(f"{spec}: has no [formats] table (the formats axis takes only the "
                         f"number formats of a parameter file)")
    return dict(name=path.stem, words=words)


def _schedule(task, value):
    from spikeloop.host.train import check_schedule
    try:
        return [list(x) for x in check_schedule(value)]
    except ValueError as e:
        raise SweepError(f"option 'r0_drop' of task {task}: {e}") from None


def expand_grid(grid: dict) -> tuple[list[dict], list[dict]]:
    """The configurations of ``grid`` and their jobs.

    Returns ``(configs, jobs)``: each configuration (a job config without ``seed``) once, in grid
    order (task, hidden, feedback, formats), and the jobs (config with ``seed``), configuration by
    configuration, seeds in order. Feedback is dropped (``None``) without hidden neurons, where it
    does nothing, so such configurations are not trained once per mode. Every option is checked
    and every network built once here, before any job runs.

    Raises
    ------
    SweepError
        On an unknown task, key, option or mode, or a value of the wrong type.
    """
    from spikeloop.params import ParamError
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown:
        raise SweepError(f"unknown grid key(s) {', '.join(unknown)}; expected some of "
                         f"{', '.join(GRID_KEYS)}")
    names = grid.get("task") or []
    if not names:
        raise SweepError(f"a sweep needs at least one task (--task, one of {', '.join(TASKS)})")
    for n in names:
        if n not in TASKS:
            raise SweepError(f"task must be one of {', '.join(TASKS)}, not {n!r}")
    backend = grid.get("backend", "model")
    if backend not in SWEEP_BACKENDS:
        raise SweepError(f"backend must be one of {', '.join(SWEEP_BACKENDS)} (in-process), "
                         f"not {backend!r}")
    for n in dict.fromkeys(names):
        t = TASKS[n]
        for key in TASK_AXES:
            if grid.get(key) is not None and key not in t.axes:
                hint = (f"; it trains for {t.passes_key} (grid key {t.passes_key!r}, "
                        f"--{t.passes_key})" if key in ("trials", "epochs") else "")
                if len(set(names)) > 1:
                    hint += ("; sweep the tasks one at a time into the same store, the report "
                             "shows them together")
                raise SweepError(f"task {n} does not take grid key {key!r}{hint}")
        if backend not in t.backends:
            raise SweepError(f"task {n} does not take backend {backend!r} (grid key 'backend'); "
                             f"it trains on {', '.join(t.backends)}")
    regs = grid.get("regulariser")
    for r in regs or ():
        if not isinstance(r, bool):
            raise SweepError(f"regulariser entries must be true or false, not {r!r}")
    for fb in grid.get("feedback") or ():
        if fb not in FEEDBACK_MODES:
            raise SweepError(f"feedback must be one of {', '.join(FEEDBACK_MODES)}, not {fb!r}")
    for h in grid.get("hidden") or ():
        _check_int("hidden", h)
    seeds = grid.get("seeds", DEFAULT_SEEDS)
    if isinstance(seeds, list):
        seed_list = [_check_int("seeds entries", s) for s in seeds]
        if not seed_list or len(set(seed_list)) != len(seed_list):
            raise SweepError(f"seeds must be a count or a list of distinct seeds, not {seeds!r}")
    else:
        seed_list = job_seeds(_check_int("seed", grid.get("seed", 0)),
                              _check_int("seeds", seeds, 1))
    for key in ("trials", "epochs"):
        if grid.get(key) is not None:
            _check_int(key, grid[key], 1)
    options = dict(grid.get("options") or {})
    known = {k for n in names for k in TASKS[n].options}
    stray = sorted(set(options) - known)
    if stray:
        raise SweepError(f"unknown option(s) {', '.join(stray)} for task(s) {', '.join(names)}; "
                         f"expected some of {', '.join(sorted(known))}")
    formats = [_formats_entry(f) for f in (grid.get("formats") or ["default"])]

    configs, seen = [], set()
    for name in dict.fromkeys(names):
        t = TASKS[name]
        for hidden in dict.fromkeys(grid.get("hidden") or t.hidden):
            modes = (grid.get("feedback") or t.feedback) if hidden else [None]
            # the regulariser acts on hidden neurons: without them it is off, trained once
            reg_axis = ([False] if not hidden else list(dict.fromkeys(regs or [False]))) \
                if "regulariser" in t.axes else [None]
            for fb, reg, fmt in ((f, r, m) for f in dict.fromkeys(modes) for r in reg_axis
                                 for m in formats):
                passes = grid.get(t.passes_key)
                c = dict(task=t.job_task or name, backend=backend, hidden=hidden, feedback=fb,
                         formats=fmt, options={})
                c[t.passes_key] = t.trials if passes is None else passes
                if reg is not None:
                    c["regulariser"] = reg
                for key, default in t.options.items():
                    v = options.get(key, default)
                    v = v(c) if callable(v) else v
                    c["options"][key] = _coerce(name, key, v, default)
                if "r0_drop" in c["options"]:
                    c["options"]["r0_drop"] = _schedule(name, c["options"]["r0_drop"])
                try:
                    c["params"] = t.params(c).to_dict()
                except (ParamError, ValueError, TypeError) as e:
                    raise SweepError(f"task {name}, hidden {hidden}, feedback {fb}, formats "
                                     f"{fmt['name']}: {e}") from None
                key = canonical_json(c)
                if key not in seen:
                    seen.add(key)
                    configs.append(c)
    jobs = [dict(copy.deepcopy(c), seed=s) for c in configs for s in seed_list]
    return configs, jobs


def grid_command(grid: dict, store=None) -> str:
    """A ``spikeloop sweep`` command line that expands to the same jobs as ``grid`` (stored with
    every job and quoted by the report)."""
    args = ["sweep", "--task", *grid["task"]]
    for key in ("hidden", "feedback", "formats"):
        if grid.get(key):
            args += [f"--{key}", *map(str, grid[key])]
    seeds = grid.get("seeds", DEFAULT_SEEDS)
    if isinstance(seeds, list):
        args += ["--seed-list", *map(str, seeds)]
    else:
        args += ["--seeds", str(seeds)] + (["--seed", str(grid["seed"])] if grid.get("seed") else [])
    if grid.get("regulariser"):
        args += ["--regulariser", *("on" if r else "off" for r in grid["regulariser"])]
    for key in ("trials", "epochs"):
        if grid.get(key) is not None:
            args += [f"--{key}", str(grid[key])]
    if grid.get("backend", "model") != "model":
        args += ["--backend", grid["backend"]]
    for k, v in sorted((grid.get("options") or {}).items()):
        args += ["--set", f"{k}={_toml_value(v)}"]
    if store is not None and Path(store) != DEFAULT_STORE:
        args += ["--store", str(store)]
    return "spikeloop " + shlex.join(args)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    return json.dumps(v, separators=(",", ":"))


# --------------------------------------------------------------------------- the store

class Store:
    """A directory of finished jobs: ``jobs/HASH.json``, one file per job, each written to a
    temporary file and renamed, so a file that exists is a complete result.

    A record holds ``hash``, ``config``, ``code`` (``version``, ``digest``), ``command`` (the
    sweep command that computed it) and ``result``.
    """

    def __init__(self, root):
        self.root = Path(root)
        self.jobs = self.root / "jobs"

    def path(self, h: str) -> Path:
        return self.jobs / f"{h}.json"

    def load(self, h: str) -> dict | None:
        """The record of job ``h``, or None when it is missing or unreadable (then recomputed)."""
        try:
            rec = json.loads(self.path(h).read_text())
        except (OSError, ValueError):
            return None
        return rec if isinstance(rec, dict) and rec.get("hash") == h and "result" in rec else None

    def has(self, h: str) -> bool:
        return self.load(h) is not None

    def save(self, rec: dict) -> Path:
        self.jobs.mkdir(parents=True, exist_ok=True)
        path = self.path(rec["hash"])
        fd, tmp = tempfile.mkstemp(prefix=f".{rec['hash'][:16]}.", suffix=".tmp", dir=self.jobs)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(rec, sort_keys=True, allow_nan=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def records(self) -> list[dict]:
        """Every readable record, sorted by hash."""
        if not self.jobs.is_dir():
            return []
        out = []
        for p in sorted(self.jobs.glob("*.json")):
            rec = self.load(p.stem)
            if rec is not None:
                out.append(rec)
        return out


# --------------------------------------------------------------------------- running

def run_job(config: dict, code: str | None = None) -> dict:
    """Train one job (``config`` with ``seed``) in a scratch directory; its result.

    Module-level and free of state, so Dask can run it on any worker; the store is written by
    the caller, never by a worker (which need not see the store's file system). ``code``: the
    caller's :func:`code_digest`; a worker whose installed code differs refuses the job, since
    its result would be stored under a hash that names other code.
    """
    if code is not None and code != code_digest():
        raise SweepError(f"this worker runs other spikeloop code (digest {code_digest()[:12]}) "
                         f"than the sweep (digest {code[:12]}); install the same version on "
                         f"the workers")
    task = TASKS.get(config["task"])
    if task is None:
        raise SweepError(f"task {config['task']!r} is not registered in this installation")
    with tempfile.TemporaryDirectory(prefix="spikeloop-job-") as out:
        return task.run(config, int(config["seed"]), Path(out))


class _Progress:
    """One line on stderr: jobs done of all, reused, computed, failed, elapsed and ETA."""

    def __init__(self, total: int, reused: int, show: bool):
        self.total, self.reused, self.show = total, reused, show
        self.computed = self.failed = 0
        self.t0 = time.perf_counter()
        self.todo = total - reused

    def update(self, end: bool = False) -> None:
        if not self.show:
            return
        from spikeloop.host.train import fmt_time
        el = time.perf_counter() - self.t0
        done = self.computed + self.failed
        eta = el / done * (self.todo - done) if done else 0.0
        line = (f"jobs {self.reused + done}/{self.total}  reused {self.reused}  computed "
                f"{self.computed}  failed {self.failed}  elapsed {fmt_time(el)}  ETA {fmt_time(eta)}")
        sys.stderr.write("\r" + line.ljust(79) + ("\n" if end else ""))
        sys.stderr.flush()


def _record(config: dict, h: str, result: dict, command: str | None) -> dict:
    return dict(hash=h, config=config, command=command, result=result,
                code=dict(version=spikeloop.__version__, digest=code_digest()))


def run_sweep(jobs: Sequence[dict], store: Store, *, workers: int | None = None,
              scheduler: str | None = None, progress: bool | str = False,
              command: str | None = None, processes: bool = True,
              log: Callable[[str], None] | None = None) -> dict:
    """Run the ``jobs`` that ``store`` does not hold yet and store each result as it arrives.

    Parameters
    ----------
    jobs : list of job configs (:func:`expand_grid`)
    store : Store
    workers : int, optional
        0: one after the other in this process, without Dask. N: a ``LocalCluster`` of N worker
        processes with one thread each. None: one worker per core (:func:`cores`).
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:port``); then ``workers`` is unused.
    progress : bool or "force"
        A progress line on stderr: True when stderr is a terminal, "force" always.
    command : str
        The sweep command, stored with every job.
    processes : bool
        LocalCluster workers as processes (default) or threads of this process (tests).

    Returns
    -------
    dict
        ``jobs`` (distinct jobs), ``reused``, ``computed``, ``failed`` (list of (hash, message)).

    A job that raises is reported in ``failed`` and not stored, so the next run retries it. On
    KeyboardInterrupt the results that arrived are stored, the cluster is shut down and the
    interrupt re-raised.
    """
    log = log or (lambda text: print(text, file=sys.stderr))
    by_hash: dict[str, dict] = {}
    for j in jobs:
        by_hash.setdefault(job_hash(j), j)
    todo = [(h, j) for h, j in by_hash.items() if not store.has(h)]
    reused = len(by_hash) - len(todo)
    show = progress == "force" or (progress is True and sys.stderr.isatty())
    bar = _Progress(len(by_hash), reused, show)
    failed: list[tuple[str, str]] = []

    def done(h, config, result=None, error=None):
        if error is None:
            store.save(_record(config, h, result, command))
            bar.computed += 1
        else:
            failed.append((h, error))
            bar.failed += 1
            if show:
                sys.stderr.write("\n")
            log(f"job {h[:12]} ({describe(config)}) failed: {error}")
        bar.update()

    bar.update()
    try:
        if todo and workers == 0 and scheduler is None:
            for h, config in todo:
                try:
                    result = run_job(config)
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # noqa: BLE001 - reported, the other jobs go on
                    done(h, config, error=f"{type(e).__name__}: {e}")
                    continue
                done(h, config, result)
        elif todo:
            _run_dask(todo, done, workers=workers, scheduler=scheduler, processes=processes)
    finally:
        if show:
            bar.update(end=True)
    return dict(jobs=len(by_hash), reused=reused, computed=bar.computed, failed=failed)


def _run_dask(todo, done, *, workers, scheduler, processes) -> None:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise SweepError("a sweep on Dask needs dask[distributed] (pip install 'spikeloop[sweep]'); "
                         "--workers 0 runs the jobs in this process without it") from None
    cluster = None
    try:
        if scheduler is not None:
            try:
                client = Client(scheduler, timeout="10s")
            except (OSError, TimeoutError, ValueError) as e:
                raise SweepError(f"--scheduler: cannot reach a Dask scheduler at {scheduler}: "
                                 f"{e}") from None
        else:
            n = workers or cores()
            # warnings of the shutdown after Ctrl-C (cancelled tasks, killed workers) are noise:
            # a job's own error reaches the sweep through its future
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=processes,
                                   dashboard_address=None, silence_logs=logging.ERROR)
            client = Client(cluster)
        try:
            futures = {}
            for h, config in todo:
                fut = client.submit(run_job, config, code_digest(), key=f"spikeloop-job-{h}",
                                    pure=False)
                futures[fut] = (h, config)
            for fut in as_completed(futures):
                h, config = futures[fut]
                try:
                    result = fut.result()
                except Exception as e:  # noqa: BLE001 - the job's error, or a lost worker
                    done(h, config, error=f"{type(e).__name__}: {e}")
                    continue
                done(h, config, result)
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


def cores() -> int:
    """Cores this process may run on (the default number of LocalCluster workers)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:          # not on Linux
        return os.cpu_count() or 1


def describe(config: dict) -> str:
    """'fig2 hidden 4 feedback random formats default seed 3' (a job or a configuration)."""
    parts = [config["task"], f"hidden {config['hidden']}"]
    if config.get("feedback"):
        parts.append(f"feedback {config['feedback']}")
    if config.get("regulariser"):
        parts.append("regulariser")
    parts.append(f"formats {config['formats']['name']}")
    if "seed" in config:
        parts.append(f"seed {config['seed']}")
    return " ".join(parts)


def merge_grid(grid: dict | None, **given) -> dict:
    """``grid`` (from :func:`load_grid`, or empty) with the keys given on the command line on top
    (None: not given); ``options`` are merged key by key."""
    out = copy.deepcopy(grid or {})
    options = given.pop("options", None) or {}
    for key, value in given.items():
        if value is not None:
            out[key] = value
    if options:
        out["options"] = {**out.get("options", {}), **options}
    return out

"""Train a batch of networks (one per seed) on a looped spike pattern and record how they learn.

One *trial* is one pass over the ``T`` steps of the stimulus. The network state is not reset
between trials (the task loops, as in the SuperSpike paper), and with ``params.chunk_steps == T``
the weights are updated once at the end of every trial. Trials are numbered from 0; a schedule
entry ``(k, factor)`` in ``r0_drop`` divides the learning rate ``r0`` at the start of trial ``k``,
i.e. after ``k`` trials.

Files written into ``out_dir``
------------------------------
``metrics.json``
    Rewritten atomically every ``record_every`` trials, at the end, and on an interrupt. Keys:

    - ``version`` (spikeloop), ``backend`` ("model"|"float"), ``params`` (``Params.to_dict()``),
      ``seeds``, ``trials`` (requested), ``trials_done``, ``complete`` (bool), ``interrupted``
      (bool), ``tol_ms``, ``success_rel_cost`` (0.1), ``r0_drop`` ([[trial, factor], ...]),
      ``task`` (free-form description from the caller, may be ``null``), ``files``.
    - ``per_trial``: lists indexed ``[trial][seed]``: ``cost`` (van Rossum cost summed over the
      output neurons), ``rel_cost`` (cost / that seed's first-trial cost; ``null`` if that is 0
      and this one is not), ``n_spikes`` (output spikes), ``matched`` (every target spike
      reproduced within ±tol_ms and no extra spike), ``success`` (matched and rel_cost ≤ 0.1);
      and ``r0_mv`` indexed ``[trial]`` (learning rate in effect).
    - ``first_success``: per seed, the first trial that succeeded, or ``null``.
    - ``summary``: ``n_seeds``, ``n_succeeded`` (seeds with a first_success), ``first_success_mean``,
      ``final_rel_cost_mean``/``final_rel_cost_sd`` (last completed trial, sd over seeds with
      ddof = 0), ``final_cost_mean``, ``wall_time_s``, ``trials_per_s``.
``params.json``
    The parameters, loadable with ``Params.load`` (``spikeloop train --config``).
``traces.npz``
    Seed-major arrays for plotting: ``first_spikes``/``last_spikes`` (B, T, n_out) bool,
    ``first_u_mv``/``last_u_mv`` (B, T, n_out) float, ``first_trial``/``last_trial``,
    ``inputs`` (T, n_in) of seed index 0, ``targets`` (T, n_out) of seed index 0.
``learning_curve.png``, ``raster.png``
    See :mod:`spikeloop.host.plots`.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import spikeloop
from spikeloop.params import Params
from spikeloop.host.backends import in_process_names
from spikeloop.host.backends import label as backend_label
from spikeloop.sim.metrics import match_spikes, spike_steps, van_rossum

__all__ = ["train", "TrialScorer", "write_figures", "summary_paragraph", "SUCCESS_REL_COST",
           "CHECKPOINT", "model_state", "restore_model_state", "write_checkpoint",
           "read_checkpoint"]


#: A trial succeeds when its spikes match and its cost is at most this fraction of the first one.
SUCCESS_REL_COST = 0.1

# --------------------------------------------------------------------------- the training loop

def _make_model(params: Params, seeds: list[int], backend: str):
    if backend == "model":
        from spikeloop.sim.golden import GoldenModel
        return GoldenModel(params, seeds=seeds)
    if backend == "float":
        from spikeloop.sim.reference import FloatModel
        return FloatModel(params, seeds=seeds)
    raise ValueError(f"backend must be one of {', '.join(in_process_names())}, not {backend!r}")


def _r0_mv(model, params: Params) -> float:
    if hasattr(model, "r0_q"):
        return model.r0_q / params.formats["w"].one
    return float(model.r0_mv)


def _drop_r0(model, factor: float) -> None:
    if hasattr(model, "r0_q"):   # golden model: an integer register, never below one LSB
        model.r0_q = max(1, int(model.r0_q // factor))
    else:
        model.r0_mv = model.r0_mv / factor


def check_schedule(r0_drop) -> list[tuple[int, float]]:
    out = []
    for item in r0_drop or ():
        try:
            k, factor = item
        except (TypeError, ValueError):
            raise ValueError(f"r0_drop entries must be (trial, factor) pairs, not {item!r}") from None
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"r0_drop trial must be a non-negative integer, not {k!r}")
        if isinstance(factor, bool) or not isinstance(factor, (int, float, np.number)) \
                or not math.isfinite(factor) or factor <= 0:
            raise ValueError(f"r0_drop factor must be a positive number, not {factor!r}")
        out.append((int(k), int(factor) if float(factor).is_integer() else float(factor)))
    return out


def fmt_time(s: float) -> str:
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _sig(x: float) -> float:
    return float(f"{x:.6g}")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- checkpoints

#: The file in which an in-process run that can be resumed (XOR, classification) keeps its
#: state; ``spikeloop train --resume DIR`` continues from it (board runs resume from their run
#: record instead, :func:`spikeloop.host.hil.hil_resume`).
CHECKPOINT = "checkpoint.npz"

#: Version of the checkpoint's layout; bumped on an incompatible change.
CHECKPOINT_FORMAT = 1


def _state_holders(model):
    return [("model", model)] + [(f"layer{i}", L) for i, L in enumerate(model.layers)]


def model_state(model) -> dict:
    """Every array and number an in-process model holds, its layers' included, keyed
    ``model.<attr>`` / ``layerN.<attr>``.

    More than :meth:`~spikeloop.sim.stepmodel.StepModel.snapshot` (the board's variables): the
    delay rings, the step counter, the learning-rate register and the last hidden spikes are
    state too, and a resumed run is bit-identical only if all of it comes back.
    """
    out = {}
    for prefix, obj in _state_holders(model):
        for k, v in vars(obj).items():
            if isinstance(v, np.ndarray):
                out[f"{prefix}.{k}"] = v.copy()
            elif isinstance(v, (int, float, np.number)):       # bool is an int: kept as such
                out[f"{prefix}.{k}"] = np.asarray(v)
    return out


def restore_model_state(model, state: dict) -> None:
    """Put :func:`model_state` back into a model built with the same parameters and seeds.

    Raises
    ------
    RecordError
        If the state holds other variables or shapes than the model (another network).
    """
    from spikeloop.host.record import RecordError
    want = model_state(model)
    if set(want) != set(state) or any(np.shape(state[k]) != want[k].shape for k in want):
        diff = sorted(set(want) ^ set(state)) or [k for k in want if np.shape(state[k]) != want[k].shape]
        raise RecordError(f"the checkpoint does not fit this network ({', '.join(diff[:4])})")
    holders = dict(_state_holders(model))
    for key, v in state.items():
        prefix, attr = key.split(".", 1)
        obj, cur = holders[prefix], getattr(holders[prefix], attr)
        if isinstance(cur, np.ndarray):
            setattr(obj, attr, np.array(v, dtype=cur.dtype))
        else:
            setattr(obj, attr, type(cur)(np.asarray(v).item()))


def write_checkpoint(out_dir, meta: dict, arrays: dict) -> Path:
    """``out_dir/checkpoint.npz``: ``meta`` (JSON) and ``arrays``, written to a temporary file and
    renamed, so an interruption leaves the previous checkpoint or this one, never half."""
    import json
    from spikeloop.host.record import atomic_savez
    path = Path(out_dir) / CHECKPOINT
    meta = dict(meta, format=CHECKPOINT_FORMAT, spikeloop=spikeloop.__version__)
    atomic_savez(path, {"meta": np.array(json.dumps(meta, allow_nan=False)), **arrays})
    return path


def read_checkpoint(out_dir, kind: str | None = None) -> tuple[dict, dict]:
    """``(meta, arrays)`` of ``out_dir``'s checkpoint; ``kind`` (``xor``, ``classification``), if
    given, must be the checkpoint's.

    Raises
    ------
    RecordError
        No checkpoint, an unreadable one, or one of another kind or format.
    """
    import json
    from spikeloop.host.record import RecordError
    path = Path(out_dir) / CHECKPOINT
    if not path.is_file():
        raise RecordError(f"{out_dir} holds no {CHECKPOINT} (no completed "
                          f"{'epoch' if kind == 'classification' else 'checkpoint'} to resume "
                          f"from; an in-process run writes one every --checkpoint-every trials, "
                          f"a classification run after every epoch)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError) as e:
        raise RecordError(f"{path}: not a readable checkpoint: {e}") from None
    if meta.get("format") != CHECKPOINT_FORMAT or (kind is not None and meta.get("kind") != kind):
        raise RecordError(f"{path}: a checkpoint of kind {meta.get('kind')!r}, format "
                          f"{meta.get('format')!r}; expected {kind or 'any'!r}, format "
                          f"{CHECKPOINT_FORMAT}")
    return meta, arrays


def save_params(params: Params, path) -> None:
    """``Params.save``'s file, written to a temporary name and renamed: a run that is resumed
    writes it again, and an interruption then must not leave half of it."""
    import json
    _atomic_write_text(Path(path), json.dumps(params.to_dict(), indent=2) + "\n")


class TrialScorer:
    """Per-trial metrics of a batch of networks, shared by :func:`train` and HIL training
    (:mod:`spikeloop.host.hil`), so both write the same ``per_trial``/``summary`` in metrics.json.

    Parameters
    ----------
    params : Params
    targets : bool array (B, T, n_out)
    tol_ms : float
        Spike-matching tolerance.
    """

    def __init__(self, params: Params, targets, tol_ms: float):
        self.params = params
        self.targets = np.asarray(targets, bool)
        B = self.targets.shape[0]
        self.B = B
        self.tol_steps = int(math.floor(tol_ms / params.dt_ms + 1e-9))
        self.tgt_steps = [[spike_steps(self.targets[b, :, i]) for i in range(params.n_out)]
                          for b in range(B)]
        self.hist = dict(cost=[], rel_cost=[], n_spikes=[], matched=[], success=[], r0_mv=[])
        self.first_cost = None
        self.first_success: list[int | None] = [None] * B

    @property
    def trials_done(self) -> int:
        return len(self.hist["cost"])

    def add(self, spikes, r0_mv: float) -> None:
        """Score the next trial: ``spikes`` (B, T, n_out) bool, ``r0_mv`` the rate in effect."""
        p, hist, k = self.params, self.hist, self.trials_done
        dt_s = p.dt_ms / 1000.0
        cost = van_rossum(spikes, self.targets, dt_s, p.tau_mem_ms / 1000.0,
                          p.tau_syn_ms / 1000.0).sum(axis=-1)
        if self.first_cost is None:
            self.first_cost = cost.copy()
        n_spk = spikes.sum(axis=(1, 2))
        row_rel, row_match, row_ok = [], [], []
        for b in range(self.B):
            c0, c = float(self.first_cost[b]), float(cost[b])
            rel = c / c0 if c0 > 0 else (0.0 if c == 0 else None)
            ok_match = match_spikes([spike_steps(spikes[b, :, i]) for i in range(p.n_out)],
                                    self.tgt_steps[b], self.tol_steps)["all_matched"]
            ok = bool(ok_match and c <= SUCCESS_REL_COST * c0)
            if ok and self.first_success[b] is None:
                self.first_success[b] = k
            row_rel.append(None if rel is None else _sig(rel))
            row_match.append(bool(ok_match))
            row_ok.append(ok)
        hist["cost"].append([_sig(float(c)) for c in cost])
        hist["rel_cost"].append(row_rel)
        hist["n_spikes"].append([int(n) for n in n_spk])
        hist["matched"].append(row_match)
        hist["success"].append(row_ok)
        hist["r0_mv"].append(_sig(r0_mv))

    def rel_cost_array(self) -> np.ndarray:
        """``rel_cost`` as a float array (trials, B), NaN where undefined."""
        return np.array([[np.nan if r is None else r for r in row] for row in self.hist["rel_cost"]],
                        float).reshape(-1, self.B)

    def summary(self, wall: float) -> dict:
        """The ``summary`` block of metrics.json after ``wall`` seconds of training."""
        hist, done, fs = self.hist, self.trials_done, self.first_success
        summary = dict(n_seeds=self.B, n_succeeded=sum(k is not None for k in fs),
                       first_success_mean=None, final_rel_cost_mean=None, final_rel_cost_sd=None,
                       final_cost_mean=None, wall_time_s=round(wall, 3),
                       trials_per_s=round(done / wall, 3) if wall > 0 else None)
        ks = [k for k in fs if k is not None]
        if ks:
            summary["first_success_mean"] = _sig(float(np.mean(ks)))
        if done:
            rel = np.array([np.nan if r is None else r for r in hist["rel_cost"][-1]], float)
            if np.isfinite(rel).any():
                summary["final_rel_cost_mean"] = _sig(float(np.nanmean(rel)))
                summary["final_rel_cost_sd"] = _sig(float(np.nanstd(rel)))
            summary["final_cost_mean"] = _sig(float(np.mean(hist["cost"][-1])))
        return summary


def write_figures(out_dir, params: Params, scorer: TrialScorer, *, seeds, schedule, inputs, targets,
                  first: dict, last: dict, title: str) -> None:
    """learning_curve.png and raster.png of a run (seed index 0 in the raster).

    ``first``/``last``: ``trial``, ``spikes`` (T, n_out) bool and ``u_mv`` (T, n_out) of the
    first and last recorded trial of seed index 0.
    """
    from spikeloop.host.plots import plot_learning_curve, plot_raster
    out_dir = Path(out_dir)
    rel = scorer.rel_cost_array()
    plot_learning_curve(rel, out_dir / "learning_curve.png", seeds=seeds,
                        first_success=scorer.first_success, success_level=SUCCESS_REL_COST,
                        r0_drops=schedule, title=title)
    plot_raster(out_dir / "raster.png", inputs, targets, first, last, dt_ms=params.dt_ms,
                threshold_mv=params.threshold_mv,
                title=f"seed {seeds[0]}: before (trial {first['trial']}) and after "
                      f"(trial {last['trial']}) training")


def train(params: Params, inputs, targets, *, seeds: Sequence[int], trials: int,
          backend: str = "model", out_dir, r0_drop: Sequence = (), tol_ms: float = 3.0,
          progress: bool | str = False, record_every: int = 50, task: dict | None = None,
          plots: bool = True) -> dict:
    """Train one network per seed (batched in one model) for ``trials`` passes over the stimulus.

    Parameters
    ----------
    params : Params
        ``chunk_steps`` is normally ``T`` (one weight update per trial).
    inputs : bool array (T, n_in) shared by all seeds, or (B, T, n_in) one per seed
    targets : bool array (T, n_out) or (B, T, n_out)
    seeds : list of int
        One network per seed (initial weights from :func:`spikeloop.sim.golden.init_weights`).
    trials : int
        Passes over the stimulus.
    backend : "model" (golden, integer) or "float" (float64 reference)
    out_dir : path-like
        Created if missing; see the module docstring for what is written.
    r0_drop : sequence of (trial, factor)
        At the start of trial ``trial`` (0-based) divide ``r0`` by ``factor`` (golden model: integer
        division of ``r0_q``, never below 1 LSB).
    tol_ms : float
        Spike-matching tolerance.
    progress : bool or "force"
        True: a progress line on stderr when stderr is a terminal; "force": always.
    record_every : int
        metrics.json is rewritten every this many trials (0: only at the end).
    task : dict, optional
        Description of the stimulus stored in metrics.json.
    plots : bool
        Write the PNGs at the end (and on an interrupt).

    Returns
    -------
    dict
        The content of metrics.json.

    Raises
    ------
    KeyboardInterrupt
        Re-raised after metrics.json (with the completed trials) and the plots were written.
    """
    seeds = [int(s) for s in seeds]
    B = len(seeds)
    if B == 0:
        raise ValueError("seeds must hold at least one seed")
    if isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials < 1:
        raise ValueError(f"trials must be a positive integer, not {trials!r}")
    if isinstance(record_every, bool) or not isinstance(record_every, (int, np.integer)) \
            or record_every < 0:
        raise ValueError(f"record_every must be a non-negative integer, not {record_every!r}")
    if not (isinstance(tol_ms, (int, float)) and math.isfinite(tol_ms) and tol_ms >= 0):
        raise ValueError(f"tol_ms must be a non-negative number, not {tol_ms!r}")
    schedule = check_schedule(r0_drop)
    inputs = np.asarray(inputs)
    targets = np.asarray(targets)
    if inputs.dtype != bool or targets.dtype != bool:
        raise ValueError("inputs and targets must be boolean spike rasters")
    if inputs.ndim not in (2, 3) or (inputs.ndim == 3 and inputs.shape[0] != B):
        raise ValueError(f"inputs must be shaped (T, n_in) or ({B}, T, n_in), not {inputs.shape}")
    if targets.ndim not in (2, 3) or (targets.ndim == 3 and targets.shape[0] != B):
        raise ValueError(f"targets must be shaped (T, n_out) or ({B}, T, n_out), not {targets.shape}")
    T = inputs.shape[-2]
    if inputs.shape[-1] != params.n_in:
        raise ValueError(f"inputs have {inputs.shape[-1]} neurons but params.n_in = {params.n_in}")
    if targets.shape[-1] != params.n_out or targets.shape[-2] != T:
        raise ValueError(f"targets must have {T} steps and params.n_out = {params.n_out} neurons, "
                         f"not shape {targets.shape}")
    if backend not in in_process_names():
        raise ValueError(f"backend must be one of {', '.join(in_process_names())}, not {backend!r}")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params.save(out_dir / "params.json")
    tgt_b = np.broadcast_to(targets, (B, T, params.n_out))
    scorer = TrialScorer(params, tgt_b, tol_ms)
    hist, first_success = scorer.hist, scorer.first_success
    show = progress == "force" or (progress is True and sys.stderr.isatty())

    model = _make_model(params, seeds, backend)
    u_scale = (1.0 / params.formats["u"].one) if backend == "model" else 1.0
    drops: dict[int, list[float]] = {}
    for k, f in schedule:
        drops.setdefault(k, []).append(f)

    first = last = None
    t0 = time.perf_counter()
    state = dict(interrupted=False, complete=False)

    def metrics() -> dict:
        done = scorer.trials_done
        summary = scorer.summary(time.perf_counter() - t0)
        files = ["metrics.json", "params.json"]
        if first is not None:
            files.append("traces.npz")
        if plots and first is not None:
            files += ["learning_curve.png", "raster.png"]
        return dict(version=spikeloop.__version__, backend=backend, params=params.to_dict(),
                    seeds=seeds, trials=int(trials), trials_done=done,
                    complete=state["complete"], interrupted=state["interrupted"],
                    tol_ms=float(tol_ms), success_rel_cost=SUCCESS_REL_COST,
                    r0_drop=[[k, f] for k, f in schedule], task=task, per_trial=hist,
                    first_success=first_success, summary=summary, files=files)

    def write_metrics() -> dict:
        import json
        m = metrics()
        _atomic_write_text(out_dir / "metrics.json", json.dumps(m, indent=1, allow_nan=False) + "\n")
        return m

    def write_outputs() -> None:
        if first is None:
            return
        x0 = inputs[0] if inputs.ndim == 3 else inputs
        y0 = targets[0] if targets.ndim == 3 else targets
        tmp = out_dir / f".traces.tmp{os.getpid()}.npz"
        np.savez_compressed(tmp, inputs=x0, targets=y0, first_trial=first["trial"],
                            last_trial=last["trial"], first_spikes=first["spikes"],
                            first_u_mv=first["u_mv"], last_spikes=last["spikes"],
                            last_u_mv=last["u_mv"])
        os.replace(tmp, out_dir / "traces.npz")
        if not plots:
            return
        pick = lambda rec: dict(trial=rec["trial"], spikes=rec["spikes"][0], u_mv=rec["u_mv"][0])  # noqa: E731
        write_figures(out_dir, params, scorer, seeds=seeds, schedule=schedule, inputs=x0, targets=y0,
                      first=pick(first), last=pick(last),
                      title=f"{(task or {}).get('name', 'training')}: {backend} backend, "
                            f"{B} seed{'s' if B != 1 else ''}, {scorer.trials_done} trials")

    last_shown = [-1.0]

    def show_progress(done: int, end: bool = False) -> None:
        if not show:
            return
        el = time.perf_counter() - t0
        if not end and (done >= trials or el - last_shown[0] < 0.25):   # at most 4 updates/s
            return
        last_shown[0] = el
        rel = np.array([np.nan if r is None else r for r in hist["rel_cost"][-1]], float)
        mean = float(np.nanmean(rel)) if np.isfinite(rel).any() else float("nan")
        eta = el / done * (trials - done) if done else 0.0
        n_ok = sum(k is not None for k in first_success)
        line = (f"trial {done}/{trials}  rel. cost {mean:.3g}  succeeded {n_ok}/{B}  "
                f"elapsed {fmt_time(el)}  ETA {fmt_time(eta)}")
        sys.stderr.write("\r" + line.ljust(79) + ("\n" if end else ""))
        sys.stderr.flush()

    try:
        for k in range(trials):
            for f in drops.get(k, ()):
                _drop_r0(model, f)
            r0 = _r0_mv(model, params)
            spikes, rec = model.run(inputs, targets, record=("out.U",))
            scorer.add(spikes, r0)
            last = dict(trial=k, spikes=spikes, u_mv=rec["out.U"] * u_scale)
            if first is None:
                first = last
            show_progress(k + 1)
            if record_every and (k + 1) % record_every == 0 and k + 1 < trials:
                write_metrics()
    except KeyboardInterrupt:
        state["interrupted"] = True
        if show:
            sys.stderr.write("\n")
        write_metrics()
        try:
            write_outputs()
        except Exception as e:   # the interrupt matters more than a figure
            sys.stderr.write(f"spikeloop: could not write the plots: {e}\n")
        raise
    state["complete"] = True
    show_progress(trials, end=True)
    write_outputs()
    return write_metrics()


def trial_text(trial_steps: int, chunk_steps: int) -> str:
    """"3500 steps per trial, weights updated every 500" (or just the trial, if one update)."""
    text = f"{trial_steps} steps per trial"
    return text if chunk_steps == trial_steps else f"{text}, weights updated every {chunk_steps}"


def summary_paragraph(m: dict) -> str:
    """A paragraph saying what a run (metrics.json ``m``, in-process or HIL) trained and how it did."""
    if (m.get("task") or {}).get("name") == "xor":         # scored by accuracy, not by cost
        from spikeloop.host.xor import summary_paragraph as xor_paragraph
        return xor_paragraph(m)
    s, p, task = m["summary"], m["params"], m.get("task") or {}
    what = (f"Fig. 2 task: {task['n_in']} inputs at {task['rate_hz']:g} Hz, one output, "
            f"{task['n_target_spikes']} target spikes in {task['duration_ms']:g} ms; "
            if task.get("name") == "fig2" else
            f"{p['n_in']} inputs, {p['n_hidden']} hidden, {p['n_out']} outputs, "
            f"{trial_text(round(task.get('duration_ms', 0) / p['dt_ms']) or p['chunk_steps'], p['chunk_steps'])}; ")
    drops = ", ".join(f"÷{f} at trial {k}" for k, f in m["r0_drop"] if k < m["trials_done"])
    lr = f"r0 = {p['r0_mv']:g} mV" + (f" ({drops})" if drops else "")
    backend = backend_label(m["backend"])
    if m.get("error_mode"):
        backend += f" with the host in the loop ({m['error_mode']} errors)"
    n = s["n_seeds"]
    text = (what + f"{backend}, {n} seed{'s' if n != 1 else ''}, {m['trials_done']} trials, {lr}, "
            f"in {s['wall_time_s']:.1f} s. ")
    ks = [k for k in m["first_success"] if k is not None]
    text += (f"{s['n_succeeded']} of {n} learned the target (every target spike within "
             f"±{m['tol_ms']:g} ms, no extra spike, cost at most {m['success_rel_cost']:g} of the "
             f"first trial)")
    text += f", first at trial{'s' if len(ks) > 1 else ''} {', '.join(map(str, ks))}. " if ks else ". "
    if s["final_rel_cost_mean"] is not None:
        text += (f"Cost in the last trial: {s['final_rel_cost_mean']:.3g} ± "
                 f"{s['final_rel_cost_sd']:.3g} of the first (mean ± sd over seeds).")
    if not m["complete"]:
        text += " The run was interrupted."
    return text

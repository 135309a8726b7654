"""Run one HIL experiment on two backends and find where their records first diverge.

"The board does exactly what the model says" is checked on everything a run records: the output
spikes of every step, every traced variable at every traced step, and every state variable plus
the saved registers at every snapshot (:mod:`spikeloop.host.record`). Divergences are ordered by
the time step they belong to (a snapshot after ``n`` trials belongs to the end of step
``n·T − 1``; the one before training to step −1); the first one is reported with its variable,
index (without the batch axis) and step.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from spikeloop.host.hil import hil_train, open_board, replay_trial
from spikeloop.host.record import RecordError, RunRecord, atomic_write_json

__all__ = ["compare_backends", "diff_records", "run_dir_name"]


def run_dir_name(tag: str, backend: str) -> str:
    """Directory of one side's record: ``a-rtl``, ``b-board-model``, ``a-serial-ttyUSB1``."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in backend.replace("serial:", "serial-"))
    return f"{tag}-{safe.strip('-')}"


def _first(a: np.ndarray, b: np.ndarray):
    """Flat position of the first element that differs, or None (shapes must agree)."""
    bad = np.flatnonzero(np.asarray(a).reshape(-1) != np.asarray(b).reshape(-1))
    return None if bad.size == 0 else int(bad[0])


def diff_records(a: RunRecord, b: RunRecord) -> dict | None:
    """The first divergence between two records, or ``None`` when every recorded value agrees.

    Returns
    -------
    dict or None
        ``variable`` (``outputs``, ``trace:<var>``, ``<var>`` of a snapshot, ``reg:<name>``),
        ``index`` (tuple, batch axis dropped), ``step`` (global, from 0), ``trial``,
        ``step_in_trial``, ``a`` and ``b`` (the two values), ``where`` (``step`` or
        ``snapshot after N trials``).
    """
    T = a.inputs.shape[0]
    if b.inputs.shape[0] != T or not (np.array_equal(a.inputs, b.inputs)
                                      and np.array_equal(a.targets, b.targets)):
        raise RecordError("the two records ran different stimuli; nothing to compare")
    found: list[tuple] = []          # (step, order, info)

    def add(step: int, order: int, variable: str, shape, flat: int, va, vb, where: str):
        idx = tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()
        trial, n = (step // T, step % T) if step >= 0 else (0, -1)
        found.append((step, order, dict(variable=variable, index=idx, step=int(step), trial=int(trial),
                                        step_in_trial=int(n), a=_py(va), b=_py(vb), where=where)))

    na, nb = a.trials_done(), b.trials_done()
    for k in range(min(na, nb)):
        ta, tb = a.read_trial(k), b.read_trial(k)
        f = _first(ta["outputs"], tb["outputs"])
        if f is not None:
            n, i = np.unravel_index(f, ta["outputs"].shape)
            add(k * T + int(n), 0, "outputs", (ta["outputs"].shape[1],), int(i),
                ta["outputs"][n, i], tb["outputs"][n, i], "step")
        for var in sorted(set(ta["traces"]) & set(tb["traces"])):
            va, vb = ta["traces"][var], tb["traces"][var]
            if va.shape != vb.shape:
                add(k * T, 0, f"trace:{var}", (), 0, list(va.shape), list(vb.shape), "step (shape)")
                continue
            f = _first(va, vb)
            if f is not None:
                per = int(np.prod(va.shape[1:]))
                n, rest = divmod(f, per)
                add(k * T + n, 0, f"trace:{var}", va.shape[1:], rest, va.reshape(len(va), -1)[n, rest],
                    vb.reshape(len(vb), -1)[n, rest], "step")
        if found:            # later trials cannot hold an earlier divergence than this trial's
            break
    if na != nb and not found:
        k = min(na, nb)
        add(k * T, 0, "trials recorded", (), 0, na, nb, "step")
    last = (min(x[0] for x in found) // T + 1) if found else None
    for n in sorted(set(a.snapshots()) & set(b.snapshots())):
        if last is not None and n > last:
            break
        sa, sb = a.read_snapshot(n), b.read_snapshot(n)
        step = n * T - 1
        where = f"snapshot after {n} trials"
        for var in sorted(set(sa["state"]) | set(sb["state"])):
            if var not in sa["state"] or var not in sb["state"]:
                add(step, 1, var, (), 0, var in sa["state"], var in sb["state"], where + " (present)")
                continue
            va, vb = sa["state"][var], sb["state"][var]
            va, vb = va.reshape(va.shape[1:]) if va.ndim > 1 else va, vb.reshape(vb.shape[1:]) if vb.ndim > 1 else vb
            if va.shape != vb.shape:
                add(step, 1, var, (), 0, list(va.shape), list(vb.shape), where + " (shape)")
                continue
            f = _first(va, vb)
            if f is not None:
                add(step, 1, var, va.shape, f, va.reshape(-1)[f], vb.reshape(-1)[f], where)
        for reg in sorted(set(sa["registers"]) & set(sb["registers"])):
            if sa["registers"][reg] != sb["registers"][reg]:
                add(step, 2, f"reg:{reg}", (), 0, sa["registers"][reg], sb["registers"][reg], where)
    if not found:
        return None
    return min(found, key=lambda x: (x[0], x[1]))[2]


def _py(v):
    v = np.asarray(v)
    return v.tolist() if v.ndim else (bool(v) if v.dtype == bool else int(v) if v.dtype.kind in "iu"
                                      else float(v))


def _neuron_of(d: dict, n_out: int) -> int:
    """Output neuron whose traces show a divergence (index 0 for presynaptic and hidden words)."""
    v, idx = d["variable"], d["index"]
    if not idx:
        return 0
    if v == "outputs" or v.startswith(("out.", "err.", "trace:out.")):
        if v.split(":")[-1] in ("out.z", "out.zh"):
            return 0
        return int(idx[0]) if idx[0] < n_out else 0
    return 0


def _fresh(path: Path) -> None:
    """Make ``path`` an empty directory, replacing an earlier run record but nothing else."""
    if path.exists():
        mf = path / "manifest.json"
        kind = None
        if mf.is_file():
            try:
                kind = json.loads(mf.read_text()).get("kind")
            except ValueError:
                pass
        if kind != "spikeloop hil run" and any(path.iterdir()):
            raise RecordError(f"{path} exists and is not a spikeloop run record; choose another --out")
        shutil.rmtree(path)


def compare_backends(backends: Sequence[str], params, inputs, targets, *, seed: int, trials: int,
                     out_dir, error_mode: str = "target", r0_drop=(), tol_ms: float = 3.0,
                     snapshot_every: int = 1, trace_every: int = 1, task: dict | None = None,
                     neuron: int | None = None, opener: Callable | None = None,
                     progress: bool | str = False, plots: bool = True) -> dict:
    """Run the same HIL experiment on two board backends and diff the records.

    Parameters
    ----------
    backends : two command-line backend names (``rtl``, ``board-model``, ``serial:PORT``); the same
        name twice is allowed (reproducibility).
    params : Params
        Set up for ``error_mode`` (:func:`spikeloop.host.hil.hil_params`).
    out_dir : path-like
        ``a-<backend>/`` and ``b-<backend>/`` records, ``compare.json``, ``compare.png``.
    snapshot_every, trace_every : int
        Finer means an earlier, more precise divergence report and a slower run (traced trials
        run one step per round trip).
    neuron : int, optional
        Output neuron to plot when the runs are identical (default 0).
    opener : callable ``(backend, params) -> Board``, optional
        Default :func:`spikeloop.host.hil.open_board`.

    Returns
    -------
    dict
        The content of compare.json: ``identical``, ``first`` (see :func:`diff_records`),
        ``backends``, ``runs``, ``plot``.
    """
    if len(backends) != 2:
        raise ValueError(f"compare needs exactly two backends, not {len(backends)} ({list(backends)})")
    if neuron is not None and not 0 <= neuron < params.n_out:
        raise ValueError(f"neuron must be in 0..{params.n_out - 1}, not {neuron}")
    opener = opener or open_board
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dirs = [out_dir / run_dir_name(tag, name) for tag, name in zip("ab", backends)]
    for d in dirs:
        _fresh(d)
    for name, d in zip(backends, dirs):
        board = opener(name, params)
        try:
            hil_train(board, params, inputs, targets, seed=seed, trials=trials, out_dir=d, backend=name,
                      error_mode=error_mode, r0_drop=r0_drop, tol_ms=tol_ms,
                      snapshot_every=snapshot_every, trace_every=trace_every, task=task,
                      progress=progress, plots=plots)
        finally:
            board.close()
    ra, rb = RunRecord.open(dirs[0]), RunRecord.open(dirs[1])
    first = diff_records(ra, rb)
    result = dict(identical=first is None, first=first, backends=list(backends),
                  runs=[d.name for d in dirs], trials=int(trials), seed=int(seed), plot=None)
    if plots:
        from spikeloop.host.plots import plot_compare_traces
        n_out = params.n_out
        i = _neuron_of(first, n_out) if first is not None else (neuron or 0)
        k = first["trial"] if first is not None else ra.trials_done() - 1
        ta, tb = ra.read_trial(k), rb.read_trial(k)
        u_one = params.formats["u"].one
        u = [t["traces"].get("out.U") for t in (ta, tb)]
        if any(uu is None for uu in u):     # trial k was not traced: run it again, traced
            try:
                u = [_replay_u(name, params, rec, k, opener) for name, rec in zip(backends, (ra, rb))]
                result["replayed_trial"] = int(k)
            except RecordError as e:
                result["replay_error"] = str(e)
        plot_compare_traces(
            out_dir / "compare.png",
            [dict(label=name, spikes=t["outputs"][:, i],
                  u_mv=None if uu is None else uu.reshape(len(uu), -1)[:, i] / u_one)
             for name, t, uu in zip(backends, (ta, tb), u)],
            targets=_trial_targets(ra, params, k)[:, i], dt_ms=params.dt_ms, threshold_mv=params.threshold_mv,
            mark_step=None if first is None else max(first["step_in_trial"], 0),
            title=(f"output neuron {i}, trial {k}: " +
                   ("identical" if first is None else
                    f"first divergence in {first['variable']}{list(first['index'])} "
                    f"at step {first['step']}")))
        result["plot"] = "compare.png"
    atomic_write_json(out_dir / "compare.json", result)
    return result


def _trial_targets(rec: RunRecord, params, k: int) -> np.ndarray:
    """The targets of trial ``k``: the record's, unless the task draws a new stimulus per trial."""
    from spikeloop.host.xor import hil_hooks
    hooks = hil_hooks(rec.manifest.get("task"), params)
    return rec.targets if hooks is None else hooks.trial(k)[1]


def _replay_u(backend: str, params, rec: RunRecord, k: int, opener) -> np.ndarray:
    board = opener(backend, params)
    try:
        return replay_trial(board, rec, k, ("out.U",))["traces"]["out.U"]
    finally:
        board.close()


def format_divergence(d: dict | None, backends: Sequence[str]) -> str:
    """One line: ``identical`` or where and how the two runs first differ."""
    if d is None:
        return "identical"
    idx = "" if not d["index"] else "[" + ", ".join(map(str, d["index"])) + "]"
    at = (f"step {d['step']} (trial {d['trial']}, step {d['step_in_trial']})" if d["where"] == "step"
          else f"the {d['where']} (step {d['step']})")
    return (f"first divergence: {d['variable']}{idx} at {at}: "
            f"{backends[0]} {d['a']} != {backends[1]} {d['b']}")


__all__.append("format_divergence")

"""Figures of a training run: the learning curve and the before/after raster.

Only the object-oriented matplotlib API with the Agg canvas is used (no ``pyplot``), so these
functions work without a display, from threads, and never change a caller's global backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_learning_curve", "plot_raster", "plot_compare_curves", "plot_compare_traces",
           "plot_compare_accuracy", "running_mean", "REL_COST_FLOOR"]

#: Relative costs are drawn no lower than this on the log axis (a cost of exactly 0, i.e. output
#: identical to the target, would otherwise vanish from the plot).
REL_COST_FLOOR = 1e-4


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)
    return path


def plot_learning_curve(rel_cost, path, *, seeds=None, first_success=None, success_level=0.1,
                        r0_drops=(), title: str | None = None) -> Path:
    """Relative cost per trial: mean ± sd over seeds (band), one thin line per seed, log y axis.

    Parameters
    ----------
    rel_cost : array (trials, n_seeds)
        Cost of each trial divided by that seed's first-trial cost (NaN where undefined).
    path : path-like
        PNG to write.
    seeds : list of int, optional
        Seed of each column (legend of the per-seed lines when there are few).
    first_success : list of (int or None), optional
        First successful trial per seed; marked with a dot on that seed's line.
    success_level : float
        Relative cost a success needs (a dotted horizontal line).
    r0_drops : sequence of (trial, factor)
        Learning-rate drops, drawn as vertical lines.
    """
    rc = np.asarray(rel_cost, dtype=np.float64)
    if rc.ndim != 2:
        raise ValueError(f"rel_cost must be shaped (trials, seeds), not {rc.shape}")
    n_trials, n_seeds = rc.shape
    trial = np.arange(n_trials)
    shown = np.maximum(rc, REL_COST_FLOOR)
    fig = Figure(figsize=(7.0, 4.2))
    ax = fig.add_subplot()
    colours = [f"C{i % 10}" for i in range(n_seeds)]
    for b in range(n_seeds):
        label = f"seed {seeds[b]}" if seeds is not None and n_seeds <= 10 else None
        ax.plot(trial, shown[:, b], lw=0.6, alpha=0.55, color=colours[b], label=label)
        k = None if first_success is None else first_success[b]
        if k is not None and 0 <= k < n_trials:
            ax.plot([k], [shown[k, b]], "o", ms=3.5, color=colours[b])
    if n_trials:
        with np.errstate(invalid="ignore"):
            mean = np.nanmean(rc, axis=1) if np.isfinite(rc).any() else np.full(n_trials, np.nan)
            sd = np.nanstd(rc, axis=1) if np.isfinite(rc).any() else np.full(n_trials, np.nan)
        lo = np.maximum(mean - sd, REL_COST_FLOOR)
        hi = np.maximum(mean + sd, REL_COST_FLOOR)
        ax.fill_between(trial, lo, hi, color="k", alpha=0.15, lw=0, label="mean ± sd")
        ax.plot(trial, np.maximum(mean, REL_COST_FLOOR), color="k", lw=1.6, label="mean")
    ax.axhline(success_level, color="0.3", ls=":", lw=1, label=f"success level ({success_level:g})")
    for k, factor in r0_drops:
        if 0 <= k < max(n_trials, 1):
            ax.axvline(k, color="C3", ls="--", lw=0.8)
            ax.text(k, 0.98, f" r0 ÷ {factor:g}", color="C3", fontsize=8, va="top",
                    transform=ax.get_xaxis_transform())
    ax.set_yscale("log")
    ax.set_xlabel("trial")
    ax.set_ylabel("van Rossum cost / first trial")
    ax.set_xlim(0, max(n_trials - 1, 1))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    ax.set_title(title or f"Learning curve ({n_seeds} seed{'s' if n_seeds != 1 else ''})", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_raster(path, inputs, targets, before: dict, after: dict, *, dt_ms: float,
                threshold_mv: float, neuron: int = 0, title: str | None = None) -> Path:
    """Input raster, target and output spikes, and the output membrane before/after training.

    Parameters
    ----------
    inputs : bool array (T, n_in)
    targets : bool array (T, n_out)
    before, after : dict
        ``spikes`` (bool (T, n_out)), ``u_mv`` (float (T, n_out)) and ``trial`` (int) of the
        first and the last recorded trial.
    dt_ms, threshold_mv : float
    neuron : int
        Output neuron whose membrane is drawn (spikes of all outputs are drawn).
    """
    inputs = np.asarray(inputs, bool)
    targets = np.asarray(targets, bool)
    T, n_in = inputs.shape
    n_out = targets.shape[1]
    t_ms = np.arange(T) * dt_ms
    fig = Figure(figsize=(8.0, 7.0))
    gs = fig.add_gridspec(3, 1, height_ratios=[2.2, 1.1, 2.0], hspace=0.12)
    ax_in = fig.add_subplot(gs[0])
    ax_sp = fig.add_subplot(gs[1], sharex=ax_in)
    ax_u = fig.add_subplot(gs[2], sharex=ax_in)

    steps, ids = np.nonzero(inputs)
    ax_in.scatter(steps * dt_ms, ids, s=1.5, c="k", marker="|", linewidths=0.6)
    ax_in.set_ylabel("input neuron")
    ax_in.set_ylim(-0.5, n_in - 0.5)
    ax_in.tick_params(labelbottom=False)
    ax_in.set_title(title or "Input, target and output", fontsize=10)

    rows = [("target", targets, "C2"), (f"trial {before['trial']}", before["spikes"], "0.55"),
            (f"trial {after['trial']}", after["spikes"], "C0")]
    for r, (name, s, colour) in enumerate(rows):
        s = np.asarray(s, bool)
        for j in range(n_out):
            k = np.flatnonzero(s[:, j])
            y = r + (j + 0.5) / n_out - 0.5
            ax_sp.vlines(k * dt_ms, y - 0.4 / n_out, y + 0.4 / n_out, color=colour, lw=1.4)
    for k in np.flatnonzero(targets.any(axis=1)):
        ax_sp.axvline(k * dt_ms, color="C2", lw=0.5, alpha=0.3)
    ax_sp.set_yticks(range(len(rows)), [name for name, _, _ in rows], fontsize=8)
    ax_sp.set_ylim(len(rows) - 0.5, -0.5)
    ax_sp.tick_params(labelbottom=False)

    for name, rec, colour, lw in ((f"before (trial {before['trial']})", before, "0.55", 0.9),
                                  (f"after (trial {after['trial']})", after, "C0", 1.1)):
        u = np.asarray(rec["u_mv"], np.float64)[:, neuron]
        ax_u.plot(t_ms, u, color=colour, lw=lw, label=name)
        k = np.flatnonzero(np.asarray(rec["spikes"], bool)[:, neuron])
        ax_u.vlines(k * dt_ms, threshold_mv, threshold_mv * 1.35, color=colour, lw=lw)
    for k in np.flatnonzero(targets[:, neuron]):
        ax_u.axvline(k * dt_ms, color="C2", lw=0.8, alpha=0.5)
    ax_u.axhline(threshold_mv, color="C3", ls="--", lw=0.9, label=f"threshold {threshold_mv:g} mV")
    ax_u.set_ylabel(f"U of output {neuron} (mV)")
    ax_u.set_xlabel("time (ms)")
    ax_u.set_xlim(0, T * dt_ms)
    ax_u.legend(fontsize=7, loc="lower right")
    fig.subplots_adjust(left=0.1, right=0.97, top=0.95, bottom=0.08)
    return _save(fig, path)


def _seed_bands(ax, runs: dict, what: str, rows: str, floor: float | None = None, **plot_kw) -> int:
    """Each run's mean ± sd over its seeds (columns) as a line in a band; the most rows drawn."""
    n_max = 1
    for k, (label, a) in enumerate(runs.items()):
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 2:
            raise ValueError(f"{what} of {label!r} must be shaped ({rows}, seeds), not {a.shape}")
        x = np.arange(a.shape[0])
        n_max = max(n_max, a.shape[0])
        with np.errstate(invalid="ignore"):
            mean, sd = np.nanmean(a, axis=1), np.nanstd(a, axis=1)
        lo, hi = mean - sd, mean + sd
        if floor is not None:
            lo, hi, mean = np.maximum(lo, floor), np.maximum(hi, floor), np.maximum(mean, floor)
        ax.fill_between(x, lo, hi, color=f"C{k}", alpha=0.18, lw=0)
        ax.plot(x, mean, color=f"C{k}", lw=1.4, label=f"{label}: mean ± sd over {a.shape[1]} seeds", **plot_kw)
    return n_max


def plot_compare_curves(runs: dict, path, *, success_level=0.1, title: str | None = None) -> Path:
    """Mean ± sd relative cost of several runs (e.g. golden model vs float reference) on one axis.

    ``runs`` maps a label to a ``(trials, seeds)`` array of relative costs.
    """
    fig = Figure(figsize=(7.0, 4.2))
    ax = fig.add_subplot()
    n_max = _seed_bands(ax, runs, "rel_cost", "trials", floor=REL_COST_FLOOR)
    ax.axhline(success_level, color="0.3", ls=":", lw=1, label=f"success level ({success_level:g})")
    ax.set_yscale("log")
    ax.set_xlabel("trial")
    ax.set_ylabel("van Rossum cost / first trial")
    ax.set_xlim(0, n_max - 1)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def running_mean(a, k: int) -> np.ndarray:
    """Trailing mean over ``k`` rows of ``a`` (trials, seeds), fewer at the start, so the curve
    keeps one point per trial (per-trial XOR accuracy takes only 5 values)."""
    a = np.asarray(a, dtype=np.float64)
    c = np.cumsum(np.vstack([np.zeros((1,) + a.shape[1:]), a]), axis=0)
    n = np.arange(1, len(a) + 1)
    lo = np.maximum(n - k, 0)
    return (c[n] - c[lo]) / (n - lo).reshape((-1,) + (1,) * (a.ndim - 1))


def plot_compare_accuracy(runs: dict, path, *, unit: str, ylabel: str, chance: float | None = None,
                          title: str | None = None) -> Path:
    """Mean ± sd accuracy of several runs over their seeds on one 0..1 axis.

    ``runs`` maps a label to a ``(trials or epochs, seeds)`` array; ``unit`` ('trial' or
    'epoch') labels the x axis and ``ylabel`` says which accuracy it is; ``chance`` is drawn
    as a dashed line.
    """
    fig = Figure(figsize=(7.0, 4.2))
    ax = fig.add_subplot()
    n_max = _seed_bands(ax, runs, "accuracy", unit + "s", marker="o" if unit == "epoch" else None, ms=3)
    if chance:
        ax.axhline(chance, color="0.3", ls="--", lw=1, label=f"chance ({chance:.3g})")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlim(0, max(n_max - 1, 1))
    ax.set_xlabel(unit + (" (0: before training)" if unit == "epoch" else ""))
    ax.set_ylabel(ylabel)
    if unit == "epoch":
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_compare_traces(path, runs: list, *, targets, dt_ms: float, threshold_mv: float,
                        mark_step: int | None = None, title: str | None = None) -> Path:
    """One output neuron on two backends: membrane potential (overlaid, and A − B) and spikes.

    Parameters
    ----------
    runs : list of dict
        Per backend ``label``, ``spikes`` (bool (T,)) and ``u_mv`` (float (T,) or None when the
        trial was not traced).
    targets : bool array (T,)
        The neuron's target spikes.
    mark_step : int, optional
        Step of the first divergence (a vertical line).
    """
    targets = np.asarray(targets, bool)
    T = targets.shape[0]
    t_ms = np.arange(T) * dt_ms
    fig = Figure(figsize=(8.0, 6.0))
    gs = fig.add_gridspec(3, 1, height_ratios=[2.4, 0.9, 1.0], hspace=0.12)
    ax_u = fig.add_subplot(gs[0])
    ax_d = fig.add_subplot(gs[1], sharex=ax_u)
    ax_s = fig.add_subplot(gs[2], sharex=ax_u)
    styles = (("C0", "-", 1.6), ("C3", "--", 1.0))
    any_u = False
    for r, (styl, run) in enumerate(zip(styles, runs)):
        colour, ls, lw = styl
        if run.get("u_mv") is not None:
            any_u = True
            ax_u.plot(t_ms, np.asarray(run["u_mv"], np.float64), color=colour, ls=ls, lw=lw,
                      label=run["label"])
        k = np.flatnonzero(np.asarray(run["spikes"], bool))
        ax_s.vlines(k * dt_ms, r + 0.6, r + 1.4, color=colour, lw=1.4)
    ax_s.vlines(np.flatnonzero(targets) * dt_ms, -0.4, 0.4, color="C2", lw=1.4)
    us = [r.get("u_mv") for r in runs]
    if len(us) == 2 and all(u is not None for u in us):
        ax_d.plot(t_ms, np.asarray(us[0], np.float64) - np.asarray(us[1], np.float64), color="k", lw=0.9)
    ax_d.axhline(0.0, color="0.6", lw=0.6)
    ax_d.set_ylabel("difference (mV)", fontsize=8)
    ax_d.tick_params(labelbottom=False)
    if not any_u:
        ax_u.text(0.5, 0.5, "membrane not traced in this trial (--trace-every)", ha="center",
                  va="center", transform=ax_u.transAxes, fontsize=9, color="0.4")
    ax_u.axhline(threshold_mv, color="0.4", ls=":", lw=0.9, label=f"threshold {threshold_mv:g} mV")
    if mark_step is not None:
        for ax in (ax_u, ax_d, ax_s):
            ax.axvline(mark_step * dt_ms, color="k", lw=0.8, alpha=0.6)
    ax_u.set_ylabel("membrane U (mV)")
    ax_u.tick_params(labelbottom=False)
    ax_u.legend(fontsize=8, loc="lower right")
    ax_u.set_title(title or "two backends", fontsize=10)
    ax_s.set_yticks(range(len(runs) + 1), ["target"] + [r["label"] for r in runs], fontsize=8)
    ax_s.set_ylim(len(runs) + 0.5, -0.5)
    ax_s.set_xlabel("time (ms)")
    ax_s.set_xlim(0, T * dt_ms)
    fig.subplots_adjust(left=0.13, right=0.97, top=0.94, bottom=0.1)
    return _save(fig, path)

"""``spikeloop report``: the results of a sweep store as figures, tables and one markdown page.

The jobs of a store (:class:`spikeloop.host.sweep.Store`) are grouped by configuration (the job
config without its seed, and the code that computed it); per configuration the report gives the
learning curve as mean ± sd over the seeds and the values after the last trial. Written into
``out``:

``README.md``
    Everything below as tables and image links, the code version(s) and the sweep commands
    stored with the jobs (and the report command). No timestamps: the same store gives the same
    bytes.
``TASK.csv``
    One row per configuration of a task: seeds, seeds that succeeded and first success mean ± sd
    (tasks with a notion of success), the final values mean ± sd (sd over seeds, ddof = 0, as in
    metrics.json).

A task is scored by the ``metric`` its results name: a cost (fig2, pattern: lower is better, log
axis) or an accuracy (xor per trial, braille and randman per epoch: higher is better, 0..1 axis,
chance level drawn); the page says which, per task.
``TASK.png``
    Every configuration of a task on one axis (mean ± sd bands).
``CONFIG.png``, ``CONFIG.csv``
    Per configuration: the learning curve (mean ± sd band, one line per seed), and its numbers
    (trial, mean, sd, one column per seed).

PNG and CSV files that a previous report in ``out`` linked to and this one does not write are
removed; other files in ``out`` are left alone.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from pathlib import Path

import numpy as np

from spikeloop.host.sweep import Store, canonical_json, describe

__all__ = ["build_report", "group_records", "MIN_SEEDS"]

#: Fewer seeds than this in a configuration is flagged in the tables.
MIN_SEEDS = 5

#: Per-trial curves the report knows how to label.
CURVE_LABELS = {"rel_cost": "van Rossum cost / first trial", "cost": "van Rossum cost",
                "accuracy": "accuracy (fraction of the 4 patterns right)",
                "test_acc": "test accuracy (learning off)", "train_acc": "train accuracy (online)"}

#: What a task's score means, by its metric: said once per task on the page.
METRIC_TEXT = {
    "rel_cost": "Scored by the van Rossum cost relative to each seed's first trial (lower is "
                "better). A seed *succeeds* at the first trial whose output spikes all match the "
                "target (within the tolerance, no extra spike) at a cost of at most the success "
                "level times its first trial's; *first success* is the mean ± sd of that trial "
                "over the seeds that succeeded. Final values are those of the last trial.",
    "accuracy": "Scored by accuracy per trial, the fraction of the four XOR patterns classified "
                "right (higher is better; 0.5 is half of them). A seed *succeeds* at the first "
                "trial with all four right. *final accuracy* is the mean over the last trials "
                "(up to 50, as `train xor` reports it), *final last_accuracy* that of the last "
                "trial.",
    "test_acc": "Scored by the test accuracy after every epoch (epoch 0: before training), "
                "measured with learning off; higher is better, and the chance level is drawn. "
                "Train accuracy is the online accuracy during each epoch. Final values are those "
                "after the last epoch.",
}


def _direction(rec: dict) -> str:
    """'max' (an accuracy: higher is better) or 'min' (a cost), from a stored result."""
    r = rec["result"]
    return r.get("direction") or ("max" if "acc" in r.get("metric", "") else "min")


def _unit(rec_or_config: dict) -> str:
    """'epoch' or 'trial': what a configuration counts."""
    c = rec_or_config.get("config", rec_or_config)
    return "epoch" if "epochs" in c else "trial"


def _passes(c: dict) -> int:
    return c["epochs"] if "epochs" in c else c["trials"]


def _config_key(rec: dict) -> str:
    c = {k: v for k, v in rec["config"].items() if k != "seed"}
    return canonical_json(dict(config=c, code=rec["code"]))


def group_records(records: list[dict]) -> list[dict]:
    """Records grouped by configuration and code, sorted by task, hidden, feedback, formats,
    then the rest of the config; seeds sorted within a group.

    Each group: ``config`` (without seed), ``code``, ``id`` (12 hex digits of the group key),
    ``name`` (a file name stem), ``records`` (by seed).
    """
    groups: dict[str, dict] = {}
    for rec in records:
        key = _config_key(rec)
        g = groups.setdefault(key, dict(
            config={k: v for k, v in rec["config"].items() if k != "seed"}, code=rec["code"],
            id=hashlib.sha256(key.encode()).hexdigest()[:12], records=[]))
        g["records"].append(rec)
    out = []
    for g in groups.values():
        g["records"].sort(key=lambda r: r["config"]["seed"])
        c = g["config"]
        g["name"] = "-".join([c["task"], f"h{c['hidden']}"] + ([c["feedback"]] if c["feedback"] else [])
                             + (["reg"] if c.get("regulariser") else [])
                             + [c["formats"]["name"], c["backend"],
                                f"{_passes(c)}{'e' if _unit(c) == 'epoch' else 't'}", g["id"][:8]])
        out.append(g)
    out.sort(key=lambda g: (g["config"]["task"], g["config"]["hidden"], g["config"]["feedback"] or "",
                            g["config"]["formats"]["name"], canonical_json(g["config"]),
                            g["code"]["digest"], g["id"]))
    return out


def _curve(g: dict, name: str) -> np.ndarray:
    """(trials, seeds) float array of curve ``name``, NaN where undefined or missing."""
    cols = [r["result"]["curves"].get(name) or [] for r in g["records"]]
    n = max((len(c) for c in cols), default=0)
    a = np.full((n, len(cols)), np.nan)
    for b, c in enumerate(cols):
        a[:len(c), b] = [np.nan if v is None else v for v in c]
    return a


def _stats(values) -> tuple[float | None, float | None]:
    v = np.array([np.nan if x is None else x for x in values], float)
    if not np.isfinite(v).any():
        return None, None
    return float(np.nanmean(v)), float(np.nanstd(v))


def summarise(g: dict) -> dict:
    """One configuration's row: seeds, successes, first success and final values (mean, sd)."""
    res = [r["result"] for r in g["records"]]
    fs = [x.get("first_success") for x in res]
    ok = [k for k in fs if k is not None]
    row = dict(seeds=[r["config"]["seed"] for r in g["records"]], n_seeds=len(res),
               n_succeeded=len(ok), first_success=_stats(ok) if ok else (None, None))
    finals = sorted({k for x in res for k in (x.get("final") or {})})
    row["final"] = {k: _stats([(x.get("final") or {}).get(k) for x in res]) for k in finals}
    return row


def _fmt(x, spec=".3g") -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _pm(pair, spec=".3g") -> str:
    m, s = pair
    return "–" if m is None else f"{_fmt(m, spec)} ± {_fmt(s, spec)}"


def _settings(c: dict) -> dict:
    """A configuration's settings as flat name -> text (for the tables' common/varying split)."""
    d = dict(hidden=str(c["hidden"]), feedback=c["feedback"] or "–")
    if "regulariser" in c:
        d["regulariser"] = "on" if c["regulariser"] else "off"
    d.update(formats=c["formats"]["name"], backend=c["backend"])
    d[f"{_unit(c)}s"] = str(_passes(c))
    for k, v in sorted(c["options"].items()):
        d[k] = canonical_json(v) if isinstance(v, (list, dict)) else str(v)
    return d


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    path.write_text(buf.getvalue())


def _csv_num(x) -> str:
    return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, ".6g")


def _plot_groups(path: Path, groups: list[dict], labels: list[str], metric: str, title: str,
                 *, seed_lines: bool) -> None:
    """Mean ± sd band per group (and one thin line per seed when ``seed_lines``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from spikeloop.host.plots import REL_COST_FLOOR
    log = metric in ("rel_cost", "cost")
    floor = REL_COST_FLOOR if log else -np.inf
    first = groups[0]["records"][0] if groups else None
    unit = _unit(first) if first else "trial"
    fig = Figure(figsize=(7.0, 4.2))
    ax = fig.add_subplot()
    n_max = 1
    for k, (g, label) in enumerate(zip(groups, labels)):
        a = _curve(g, metric)
        if not a.size:
            continue
        trial = np.arange(a.shape[0])
        n_max = max(n_max, a.shape[0])
        with np.errstate(invalid="ignore"), _quiet():
            mean, sd = np.nanmean(a, axis=1), np.nanstd(a, axis=1)
        colour = "k" if seed_lines else f"C{k % 10}"
        if seed_lines:
            for b in range(a.shape[1]):
                ax.plot(trial, np.maximum(a[:, b], floor), lw=0.6, alpha=0.5, color=f"C{b % 10}",
                        label=f"seed {g['records'][b]['config']['seed']}" if a.shape[1] <= 10 else None)
        ax.fill_between(trial, np.maximum(mean - sd, floor), np.maximum(mean + sd, floor),
                        color=colour, alpha=0.15 if seed_lines else 0.18, lw=0)
        ax.plot(trial, np.maximum(mean, floor), color=colour, lw=1.5,
                label=f"{label}: mean ± sd over {a.shape[1]} seeds")
    level = first["result"].get("success_level") if first else None
    if metric == "rel_cost" and level:
        ax.axhline(level, color="0.3", ls=":", lw=1, label=f"success level ({level:g})")
    chance = first["result"].get("chance") if first else None
    if chance:
        ax.axhline(chance, color="0.3", ls="--", lw=1, label=f"chance ({chance:.3g})")
    better = "higher" if first and _direction(first) == "max" else "lower"
    if log:
        ax.set_yscale("log")
    else:
        ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel(unit + (" (0: before training)" if unit == "epoch" else ""))
    ax.set_ylabel(f"{CURVE_LABELS.get(metric, metric)}\n{better} is better", fontsize=9)
    ax.set_xlim(0, max(n_max - 1, 1))
    if unit == "epoch":
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left" if log else "best", ncol=2 if seed_lines else 1)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, metadata={"Software": None})


class _quiet:
    """Silence numpy's 'mean of empty slice' for all-NaN trials."""

    def __enter__(self):
        import warnings
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def _linked_files(readme: Path) -> set[str]:
    """The PNG and CSV files a previous report's README.md links to (so that a rerun removes
    those it does not write again, and nothing else in the directory)."""
    import re
    if not readme.is_file():
        return set()
    return {m for m in re.findall(r"\]\(([^)/\\]+\.(?:png|csv))\)", readme.read_text())}


def build_report(store, out, *, command: str | None = None) -> dict:
    """Write the report of ``store`` (a path or :class:`Store`) into directory ``out``.

    ``command`` is the report command line, quoted in README.md. Returns ``files`` (names written,
    sorted), ``groups`` and ``jobs``.

    Raises
    ------
    ValueError
        If the store holds no finished job.
    """
    store = store if isinstance(store, Store) else Store(store)
    records = store.records()
    if not records:
        raise ValueError(f"{store.root}: no finished jobs in this sweep store (run "
                         f"'spikeloop sweep --store {store.root} ...' first)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stale = _linked_files(out / "README.md")
    groups = group_records(records)
    files: list[str] = []
    codes = sorted({(r["code"]["version"], r["code"]["digest"]) for r in records})
    commands = sorted({r["command"] for r in records if r.get("command")})

    md = ["# Sweep results", "",
          f"Generated by `spikeloop report` from {len(records)} job"
          f"{'s' if len(records) != 1 else ''} in {len(groups)} configuration"
          f"{'s' if len(groups) != 1 else ''}. Code: "
          + ", ".join(f"spikeloop {v}, code digest `{d[:12]}`" for v, d in codes) + ".", "",
          "Learning curves are mean ± sd over the seeds (sd with ddof = 0). Each task says "
          "below what it is scored by and which way is better.", ""]
    md += ["## Commands", "", "```sh"] + commands + ([command] if command else []) + ["```", ""]

    for task in sorted({g["config"]["task"] for g in groups}):
        tg = [g for g in groups if g["config"]["task"] == task]
        metric = tg[0]["records"][0]["result"].get("metric", "rel_cost")
        unit = _unit(tg[0]["records"][0])
        # a notion of success (fig2, pattern: the spikes match; xor: all four patterns right)
        scored = any("first_success" in r["result"] for g in tg for r in g["records"])
        settings = [_settings(g["config"]) for g in tg]
        keys = list(settings[0])
        common = {k: settings[0][k] for k in keys if all(s.get(k) == settings[0][k] for s in settings)}
        varying = [k for k in keys if k not in common] or ["hidden"]
        labels = [", ".join(f"{k} {s[k]}" for k in varying) for s in settings]
        if len(codes) > 1:
            labels = [f"{lab}, code {g['code']['digest'][:8]}" for lab, g in zip(labels, tg)]
        finals = sorted({k for g in tg for r in g["records"] for k in (r["result"].get("final") or {})})
        rows = [summarise(g) for g in tg]

        succ_cols = ["n_succeeded", "first_success_mean", "first_success_sd"] if scored else []
        header = (["configuration"] + varying + ["n_seeds", "seeds"] + succ_cols
                  + [f"final_{k}_{s}" for k in finals for s in ("mean", "sd")] + ["code", "figure"])
        table = []
        for g, s, row in zip(tg, settings, rows):
            succ = ([row["n_succeeded"], _csv_num(row["first_success"][0]),
                     _csv_num(row["first_success"][1])] if scored else [])
            table.append([g["id"]] + [s[k] for k in varying]
                         + [row["n_seeds"], " ".join(map(str, row["seeds"]))] + succ
                         + [_csv_num(row["final"].get(k, (None, None))[i]) for k in finals
                            for i in (0, 1)]
                         + [g["code"]["digest"][:12], f"{g['name']}.png"])
        _write_csv(out / f"{task}.csv", header, table)
        files.append(f"{task}.csv")
        _plot_groups(out / f"{task}.png", tg, labels, metric,
                     f"{task}: {CURVE_LABELS.get(metric, metric)} per configuration", seed_lines=False)
        files.append(f"{task}.png")

        md += [f"## {task}", "", METRIC_TEXT.get(metric, f"Scored by {metric} ("
                                                   f"{'higher' if _direction(tg[0]['records'][0]) == 'max' else 'lower'}"
                                                   f" is better)."), "",
               "Common settings: " + ", ".join(f"{k} {v}" for k, v in common.items()) + ".", "",
               f"![{task}: every configuration]({task}.png)", ""]
        succ_head = ["succeeded", "first success"] if scored else []
        md.append("| " + " | ".join(varying + ["seeds"] + succ_head
                                      + [f"final {k}" for k in finals] + ["curve"]) + " |")
        md.append("|" + "---|" * (len(varying) + 2 + len(succ_head) + len(finals)))
        few = False
        for g, s, row in zip(tg, settings, rows):
            mark = "" if row["n_seeds"] >= MIN_SEEDS else " *"
            few = few or bool(mark)
            md.append("| " + " | ".join(
                [s[k] for k in varying] + [f"{row['n_seeds']}{mark}"]
                + ([f"{row['n_succeeded']} / {row['n_seeds']}", _pm(row["first_success"], ".1f")]
                   if scored else [])
                + [_pm(row["final"].get(k, (None, None))) for k in finals]
                + [f"[png]({g['name']}.png), [csv]({g['name']}.csv)"]) + " |")
        md.append("")
        if few:
            md += [f"\\* fewer than {MIN_SEEDS} seeds.", ""]
        md += [f"Table: [{task}.csv]({task}.csv). Per configuration:", ""]
        for g, label in zip(tg, labels):
            a = _curve(g, metric)
            with np.errstate(invalid="ignore"), _quiet():
                mean, sd = np.nanmean(a, axis=1), np.nanstd(a, axis=1)
            _write_csv(out / f"{g['name']}.csv",
                       [unit, f"{metric}_mean", f"{metric}_sd"]
                       + [f"seed_{r['config']['seed']}" for r in g["records"]],
                       [[t, _csv_num(float(mean[t])), _csv_num(float(sd[t]))]
                        + [_csv_num(float(v)) for v in a[t]] for t in range(a.shape[0])])
            _plot_groups(out / f"{g['name']}.png", [g], [label], metric,
                         f"{describe(g['config'])}: {g['config']['backend']} backend", seed_lines=True)
            files += [f"{g['name']}.csv", f"{g['name']}.png"]
            md.append(f"- {label}: ![{label}]({g['name']}.png)")
        md.append("")
    (out / "README.md").write_text("\n".join(md).rstrip("\n") + "\n")
    files.append("README.md")
    for name in sorted(stale - set(files)):        # a configuration the store no longer has
        (out / name).unlink(missing_ok=True)
    return dict(files=sorted(files), groups=len(groups), jobs=len(records))

"""Throughput of the software models: synapse-steps per second of the golden and float models.

Each size runs both models on the same frozen-Poisson input (20 Hz) and random targets, batch 1,
for the same number of steps after a warm-up. Measurements are interleaved (golden, float,
golden, float, ...) and the best of ``repeats`` is kept for each, so background load affects both
alike. The numbers are meant for one core: BLAS/OpenMP threads are limited to one with
``threadpoolctl`` when it is installed; otherwise the ``spikeloop`` CLI sets
``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` (to 1, unless already set)
before numpy is imported, and the result records what was in effect.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import time

import numpy as np

import spikeloop
from spikeloop.params import Params

__all__ = ["bench_model", "format_table", "DEFAULT_SIZES"]

#: (n_in, n_hidden, n_out) of the default benchmark networks.
DEFAULT_SIZES = ((100, 0, 1), (100, 32, 100), (256, 0, 256))

_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _thread_limit():
    """A context limiting BLAS/OpenMP pools to one thread, and a description of how."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        info = {"method": "environment"}
        info.update({v: os.environ.get(v) for v in _THREAD_VARS})
        return contextlib.nullcontext(), info
    return threadpool_limits(limits=1), {"method": "threadpoolctl", "limit": 1}


def _run(model, x, y, start: int, steps: int) -> float:
    T = len(x)
    t0 = time.perf_counter()
    for n in range(start, start + steps):
        model.step(x[n % T], y[n % T])
    return time.perf_counter() - t0


def bench_model(sizes=DEFAULT_SIZES, steps: int | None = None, seconds: float = 0.5,
                repeats: int = 3, warmup: int = 20, seed: int = 0, out=None) -> dict:
    """Synapse-steps per second of GoldenModel and FloatModel for each ``(n_in, n_hidden, n_out)``.

    Parameters
    ----------
    sizes : sequence of (n_in, n_hidden, n_out)
    steps : int, optional
        Steps per measurement (the same for both models). Default: chosen from the warm-up so that
        the slower model takes about ``seconds`` per measurement (at least 50 steps).
    seconds : float
        Target duration of one measurement when ``steps`` is not given.
    repeats : int
        Measurements per model; the best (shortest) is kept.
    warmup : int
        Steps each model runs before the measurements.
    seed : int
        Seed of the network weights and of the stimulus.
    out : text stream, optional
        Where the table is printed (default ``sys.stdout``; ``False`` prints nothing).

    Returns
    -------
    dict
        ``version``, ``python``, ``numpy``, ``machine``, ``threads`` (how threads were limited),
        ``repeats`` and ``results``: per size ``n_in``, ``n_hidden``, ``n_out``, ``n_synapses``,
        ``steps``, ``golden`` and ``float`` (each ``seconds``, ``steps_per_s``,
        ``synapse_steps_per_s``) and ``ratio`` (golden ÷ float synapse-steps/s).
    """
    from spikeloop.sim.golden import GoldenModel
    from spikeloop.sim.reference import FloatModel
    from spikeloop.sim.stimuli import frozen_poisson

    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive integer, not {steps!r}")
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"seconds must be a positive number, not {seconds!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, not {repeats!r}")
    limit, threads = _thread_limit()
    results = []
    with limit:
        for size in sizes:
            try:
                n_in, n_hidden, n_out = (int(v) for v in size)
            except (TypeError, ValueError):
                raise ValueError(f"a size must be (n_in, n_hidden, n_out), not {size!r}") from None
            p = Params(n_in=n_in, n_hidden=n_hidden, n_out=n_out, chunk_steps=500)
            dt_s = p.dt_ms / 1000.0
            x = frozen_poisson(n_in, p.chunk_steps, 20.0, dt_s, seed)
            y = frozen_poisson(n_out, p.chunk_steps, 5.0, dt_s, seed + 1)
            models = {"golden": GoldenModel(p, seeds=[seed]), "float": FloatModel(p, seeds=[seed])}
            per_step = {name: _run(m, x, y, 0, warmup) / max(warmup, 1) for name, m in models.items()}
            n = steps or max(50, math.ceil(seconds / max(max(per_step.values()), 1e-9)))
            best = {name: math.inf for name in models}
            pos = warmup
            for _ in range(repeats):
                for name, m in models.items():        # interleaved: golden, float, golden, ...
                    best[name] = min(best[name], _run(m, x, y, pos, n))
                pos += n
            row = dict(n_in=n_in, n_hidden=n_hidden, n_out=n_out, n_synapses=p.n_synapses, steps=n)
            for name, sec in best.items():
                row[name] = dict(seconds=sec, steps_per_s=n / sec, synapse_steps_per_s=p.n_synapses * n / sec)
            row["ratio"] = row["golden"]["synapse_steps_per_s"] / row["float"]["synapse_steps_per_s"]
            results.append(row)
    res = dict(version=spikeloop.__version__, python=platform.python_version(),
               numpy=np.__version__, machine=platform.machine(), threads=threads,
               repeats=repeats, results=results)
    if out is not False:
        print(format_table(res), file=out or sys.stdout)
    return res


def format_table(res: dict) -> str:
    """The benchmark result as a text table."""
    head = (f"{'n_in-n_hid-n_out':>17} {'synapses':>9} {'steps':>7} "
            f"{'golden syn·step/s':>18} {'float syn·step/s':>17} {'golden/float':>12}")
    lines = [head, "-" * len(head)]
    for r in res["results"]:
        size = f"{r['n_in']}-{r['n_hidden']}-{r['n_out']}"
        lines.append(f"{size:>17} {r['n_synapses']:>9} {r['steps']:>7} "
                     f"{r['golden']['synapse_steps_per_s']:>18.3g} "
                     f"{r['float']['synapse_steps_per_s']:>17.3g} {r['ratio']:>12.2f}")
    t = res["threads"]
    how = ("threadpoolctl (1 thread)" if t.get("method") == "threadpoolctl" else
           ", ".join(f"{k}={t.get(k)}" for k in _THREAD_VARS))
    lines.append(f"best of {res['repeats']}, batch 1; numpy {res['numpy']}, {res['machine']}; threads: {how}")
    return "\n".join(lines)


#: ``bench rtl`` sizes (n_in, n_hidden, n_out) and lane counts.
RTL_SIZES = ((100, 0, 1), (100, 32, 100), (256, 0, 256))
RTL_LANES = (1, 2, 4)


def learn_cycles(config) -> int:
    """Cycles of the learning passes of one step of a :class:`~spikeloop.hdl.config.CoreConfig`
    (``N·C + 1 + L_s`` per layer with dual-port memory, see
    :func:`spikeloop.hdl.timing.cycles_per_step`): the part of a step that updates synapses."""
    t = config.timing
    return sum(t.learn_last(L.N * L.C) + 1 for L in config.layers)


def bench_rtl(sizes=RTL_SIZES, lanes=RTL_LANES, steps: int = 4, in_width: int = 8,
              single_port: bool = False) -> dict:
    """Cycles per step, synapse updates per cycle and lane (over the whole step and over the
    learning passes alone), and the simulated cycles per second of the Verilator harness for
    the ``Core`` (sizes it cannot build are reported as such); ``single_port`` benches the
    SPRAM mode (2 cycles per synapse word)."""
    import json
    import tempfile
    from pathlib import Path

    from spikeloop.hdl.config import CoreConfig
    from spikeloop.hdl.core import Core
    from spikeloop.params import Params
    from spikeloop.sim.rtl_runner import build_and_test, default_build_dir

    rows = []
    for n_in, n_hid, n_out in sizes:
        for P in lanes:
            row = {"size": f"{n_in}-{n_hid}-{n_out}", "lanes": P}
            p = Params(n_in=n_in, n_hidden=n_hid, n_out=n_out, chunk_steps=max(2, steps - 1))
            try:
                config = CoreConfig(p, P, max(in_width, P), single_port)
                core = Core(config)
            except ValueError as e:
                rows.append({**row, "error": str(e)})
                continue
            with tempfile.TemporaryDirectory() as tmp:
                stats = Path(tmp) / "stats.json"
                res = build_and_test(lambda: core, "core", "spikeloop.sim.cocotb_core",
                                     build_dir=default_build_dir(), testcase="free_run", seed=1,
                                     params={"params": p.to_dict(), "lanes": P,
                                             "in_width": max(in_width, P), "seed": 1,
                                             "steps": steps, "stats": str(stats),
                                             "single_port": single_port})
                info = json.loads(stats.read_text())
            plain = info["cycles"]["plain"][0]
            for kind, chunk in (("plain", False), ("chunk", True)):
                got = info["cycles"].get(kind, [None])[0]
                want = config.cycles_per_step(chunk)
                if got is not None and got != want:
                    raise AssertionError(f"{n_in}-{n_hid}-{n_out} P={P}: measured {got} cycles per "
                                         f"{kind} step, the formula says {want}")
            learn = learn_cycles(config)
            rows.append({**row, "synapses": p.n_synapses, "cycles_per_step": plain,
                         "cycles_per_chunk_end_step": info["cycles"].get("chunk", [None])[0],
                         "updates_per_cycle_per_lane": p.n_synapses / P / plain,
                         "learn_cycles": learn,
                         "learn_updates_per_cycle_per_lane": p.n_synapses / P / learn,
                         "sim_cycles_per_s": info["sim_cycles_per_s"],
                         "build_s": res.build_time_s})
    return {"rows": rows, "steps": steps, "single_port": single_port}


def format_rtl_table(res: dict) -> str:
    lines = [f"{'size':>12} {'lanes':>5} {'cycles/step':>11} {'upd/cycle/lane':>14} "
             f"{'learn pass':>10} {'sim cycles/s':>12}", "-" * 69]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"{r['size']:>12} {r['lanes']:>5}  {r['error']}")
        else:
            lines.append(f"{r['size']:>12} {r['lanes']:>5} {r['cycles_per_step']:>11} "
                         f"{r['updates_per_cycle_per_lane']:>14.3f} "
                         f"{r['learn_updates_per_cycle_per_lane']:>10.3f} {r['sim_cycles_per_s']:>12.3g}")
    lines.append("upd/cycle/lane: synapses ÷ lanes ÷ cycles of the whole step; learn pass: the same "
                 "over the learning passes' cycles alone")
    return "\n".join(lines)

"""``bench link``: end-to-end steps per second through the driver, per backend, and the wire cost.

For each network (100 in / 1 out and 256 in / 16 out by default) and each backend that can be
opened, a :class:`~spikeloop.host.board.Board` loads weights and runs RUN_STEPS batches of ``k``
steps for about ``seconds``; the result is the measured steps per second of the whole path
(driver, framing, transport, device), the bytes per step that actually crossed the transport in
each direction, and — for comparison — the protocol's worst-case bytes per step and the
link-limited steps per second at each baud rate (:func:`spikeloop.protocol.projected_steps_per_s`,
stop-and-wait, compute time ignored). A backend that cannot be opened is reported with the reason.

:func:`measure_rtl` (``python -m spikeloop.host.bench_link``) is the rtl backend's own speed:
full RUN_STEPS frames through the simulated ``SoC``, with the simulation's counters (simulated
cycles per second served against Verilator running free, Python wakes) over that stretch.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

import spikeloop
from spikeloop import protocol as P
from spikeloop.params import Params

__all__ = ["bench_link", "format_table", "measure_rtl", "main", "LINK_CASES", "LINK_BACKENDS", "LINK_BAUDS"]

#: (label, n_in, n_out) of the networks measured.
LINK_CASES = (("100 in / 1 out", 100, 1), ("256 in / 16 out", 256, 16))
LINK_BACKENDS = ("board-model", "rtl")
LINK_BAUDS = (3_000_000, 12_000_000)


def _measure(board, p: Params, k: int, seconds: float, seed: int) -> dict:
    """Batches of ``k`` steps until ``seconds`` have passed (after one warm-up batch)."""
    from spikeloop.sim.golden import init_weights

    ws, _ = init_weights(p, [seed])
    board.load_weights([w[0] for w in ws])
    rng = np.random.default_rng(seed)
    x = rng.random((k, p.n_in)) < 0.1
    y = rng.random((k, p.n_out)) < 0.05
    board.run(x, y)                                   # warm-up (and any lazy setup)
    s0 = dict(board.stats)
    steps, t0 = 0, time.perf_counter()
    while True:
        board.run(x, y)
        steps += k
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
    d = {key: board.stats[key] - s0[key] for key in s0}
    return {"steps": steps, "seconds": elapsed, "steps_per_s": steps / elapsed,
            "down_bytes_per_step": d["bytes_sent"] / steps, "up_bytes_per_step": d["bytes_received"] / steps,
            "requests": d["requests"], "retries": d["retries"]}


def bench_link(backends=LINK_BACKENDS, cases=LINK_CASES, k: int = 50, seconds: float = 1.0,
               bauds=LINK_BAUDS, seed: int = 0, json_path=None, out=False) -> dict:
    """Measure every backend of ``backends`` that opens, on every network of ``cases``.

    Parameters
    ----------
    backends : sequence of str
        Backend specs as :meth:`Board.open` takes them (``"board-model"``, ``"rtl"``, ``"serial:PORT"``).
    cases : sequence of (label, n_in, n_out)
    k : int
        Steps per RUN_STEPS frame.
    seconds : float
        Time measured per backend and network (at least one batch).
    bauds : sequence of int
        Bit rates of the projected link-limited steps per second.
    seed : int
        Weights and stimulus.
    json_path : path, optional
        Where the result is written as JSON.
    out : text stream or None, optional
        Where the table is printed (``None``: ``sys.stdout``; default ``False``: not printed, so a
        caller printing :func:`format_table` itself does not get it twice).

    Returns
    -------
    dict
        ``version``, ``python``, ``machine``, ``k``, ``bauds`` and ``cases``: per network
        ``label``, ``n_in``, ``n_out``, ``error_source``, ``worst_case`` (protocol bytes per step,
        ``down``/``up``), ``projected_steps_per_s`` (baud → steps/s) and ``backends``: per spec
        either ``available: True`` with ``steps``, ``seconds``, ``steps_per_s``,
        ``down_bytes_per_step``, ``up_bytes_per_step``, ``requests``, ``retries``, or
        ``available: False`` with ``reason``.
    """
    from spikeloop.host.board import Board

    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 0xFFFF:
        raise ValueError(f"k must be an integer in 1..65535, not {k!r}")
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"seconds must be a positive number, not {seconds!r}")
    if isinstance(backends, str):
        backends = (backends,)
    rows = []
    for case in cases:
        try:
            label, n_in, n_out = case
        except (TypeError, ValueError):
            raise ValueError(f"a case must be (label, n_in, n_out), not {case!r}") from None
        p = Params(n_in=int(n_in), n_out=int(n_out))
        wc = P.bytes_per_step(p, k=k)
        row = {"label": str(label), "n_in": p.n_in, "n_out": p.n_out, "error_source": p.error_source.value,
               "worst_case": {"down": wc.down, "up": wc.up},
               "projected_steps_per_s": {str(b): P.projected_steps_per_s(p, b, k) for b in bauds},
               "backends": {}}
        for spec in backends:
            # the simulated devices get a receive buffer that holds a K-step request
            kw = {"max_payload": max(1024, P.batch_bytes(p, k)[0])} if spec in ("board-model", "rtl") else {}
            try:
                board = Board.open(spec, p, steps_per_frame=k, **kw)
            except Exception as e:          # a missing backend is a result, not a failure
                row["backends"][spec] = {"available": False, "reason": f"{type(e).__name__}: {e}"}
                continue
            with board:
                row["backends"][spec] = {"available": True, **_measure(board, p, k, seconds, seed)}
        rows.append(row)
    res = {"version": spikeloop.__version__, "python": platform.python_version(),
           "machine": platform.machine(), "k": k, "bauds": list(bauds), "cases": rows}
    if json_path is not None:
        Path(json_path).write_text(json.dumps(res, indent=2) + "\n")
    if out is not False:
        print(format_table(res), file=out or sys.stdout)
    return res


def format_table(res: dict) -> str:
    """The result of :func:`bench_link` as a text table (one line per network and backend)."""
    bauds = res["bauds"]
    proj = " ".join(f"{f'link@{b / 1e6:g}M':>10}" for b in bauds)
    head = (f"{'network':<16} {'backend':<10} {'steps/s':>10} {'down B/st':>9} {'up B/st':>8} "
            f"{'worst dn/up':>11} {proj}")
    lines = [head, "-" * len(head)]
    for r in res["cases"]:
        wc = f"{r['worst_case']['down']:.2f}/{r['worst_case']['up']:.2f}"
        pr = " ".join(f"{r['projected_steps_per_s'][str(b)]:>10,.0f}" for b in bauds)
        for spec, m in r["backends"].items():
            if m["available"]:
                lines.append(f"{r['label']:<16} {spec:<10} {m['steps_per_s']:>10,.0f} "
                             f"{m['down_bytes_per_step']:>9.2f} {m['up_bytes_per_step']:>8.2f} {wc:>11} {pr}")
            else:
                lines.append(f"{r['label']:<16} {spec:<10} {'—':>10} {'':>9} {'':>8} {wc:>11} {pr}   "
                             f"({m['reason']})")
    lines.append(f"K = {res['k']} steps per frame, stop-and-wait; link@: protocol.projected_steps_per_s "
                 f"(worst-case COBS, compute time ignored)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- rtl speed
def measure_rtl(config, frames: int = 10, seed: int = 0, **kw) -> dict:
    """Drive the simulated ``SoC`` of ``config`` (a :class:`~spikeloop.hdl.config.SoCConfig`)
    with ``frames`` full RUN_STEPS frames (stop-and-wait, random spikes) through a
    :class:`~spikeloop.host.board.Board` and return the simulation's link counters over that
    stretch: the speed figures of ``docs/host.md``. ``kw`` goes to
    :func:`~spikeloop.sim.rtl.open_rtl` (``divisor``, ``build_dir``, ``calibrate_s``, ...).

    Returns
    -------
    dict
        ``n_in``, ``n_out``, ``lanes``, ``steps_per_frame``, ``frames``, ``cycles_needed`` (every
        byte once on the wire plus the Core's cycles per step), ``wall_s``, ``steps_per_s``, the
        differences of ``cycles``, ``run_s``, ``cpu_s``, ``wakes``, ``bytes_to_dut``,
        ``bytes_from_dut``, and ``free_cycles_per_s``, ``cycles_per_s``,
        ``free_cycles_per_cpu_s``, ``cycles_per_cpu_s``, ``ratio``, ``cpu_ratio``.
    """
    from spikeloop.host.board import Board
    from spikeloop.params import ErrorSource
    from spikeloop.sim.rtl import open_rtl

    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be a positive integer, not {frames!r}")
    p = config.params
    rng = np.random.default_rng(seed)
    with open_rtl(config, **kw) as t:
        board = Board(t, timeout=120.0, retries=0, name="rtl", expect=p, expect_lanes=config.lanes)
        k = board.steps_per_frame
        x = rng.random((frames * k, p.n_in)) < 0.05
        y = rng.random((frames * k, p.n_out)) < 0.02
        before, t0 = t.stats(), time.perf_counter()
        if p.error_source is ErrorSource.TARGET:
            board.run(x, y)
        else:
            board.run(x)                              # zero errors
        wall = time.perf_counter() - t0
        after = t.stats()
    d = {key: after[key] - before[key] for key in ("cycles", "run_s", "cpu_s", "wakes", "bytes_to_dut",
                                                    "bytes_from_dut")}
    divisor = t.hello["divisor"]
    steps = frames * k
    chunks = sum(1 for n in range(steps) if (n + 1) % p.chunk_steps == 0)
    # What the frames need at least: every byte on the wire once, every step of the Core.
    needed = (10 * divisor * (d["bytes_to_dut"] + d["bytes_from_dut"])
              + (steps - chunks) * config.core.cycles_per_step() + chunks * config.core.cycles_per_step(True))
    return {
        "n_in": p.n_in, "n_out": p.n_out, "lanes": config.lanes, "steps_per_frame": k, "frames": frames,
        "cycles_needed": needed,
        "wall_s": wall, "steps_per_s": steps / wall, **d,
        "free_cycles_per_s": after["free_cycles_per_s"], "cycles_per_s": d["cycles"] / d["run_s"],
        "free_cycles_per_cpu_s": after["free_cycles_per_cpu_s"], "cycles_per_cpu_s": d["cycles"] / d["cpu_s"],
        "ratio": d["cycles"] / d["run_s"] / after["free_cycles_per_s"],
        "cpu_ratio": d["cycles"] / d["cpu_s"] / after["free_cycles_per_cpu_s"],
    }


def main(argv=None) -> int:
    """``python -m spikeloop.host.bench_link``: the table of :func:`measure_rtl` per network."""
    import argparse

    from spikeloop.hdl.config import SoCConfig

    ap = argparse.ArgumentParser(prog="python -m spikeloop.host.bench_link",
                                 description="Speed of the rtl backend: RUN_STEPS frames through the simulated SoC.")
    ap.add_argument("--size", action="append", default=None, metavar="N_IN,N_OUT",
                    help="network size (repeatable; default 100,1 and 256,16)")
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--lanes", type=int, default=1)
    args = ap.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split(",")) for s in (args.size or ["100,1", "256,16"])]
    print("| network | steps/frame | steps/s | cycles/frame (wire + Core) | free-running cycles/s "
          "| served cycles/s | ratio | per CPU s: free / served | ratio | Python wakes per 1k cycles |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n_in, n_out in sizes:
        r = measure_rtl(SoCConfig.build(Params(n_in=n_in, n_out=n_out), args.lanes), frames=args.frames)
        print(f"| {n_in} in / {n_out} out | {r['steps_per_frame']} | {r['steps_per_s']:,.1f} "
              f"| {r['cycles'] / r['frames']:,.0f} ({r['cycles_needed'] / r['frames']:,.0f}) "
              f"| {r['free_cycles_per_s']:,.0f} | {r['cycles_per_s']:,.0f} | {r['ratio']:.2f} "
              f"| {r['free_cycles_per_cpu_s']:,.0f} / {r['cycles_per_cpu_s']:,.0f} | {r['cpu_ratio']:.2f} "
              f"| {1000 * r['wakes'] / r['cycles']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

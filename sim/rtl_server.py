"""The ``rtl`` backend's simulation process: build a design inside :class:`SimLinkBridge`, serve it on TCP.

Started by :func:`spikeloop.host.rtl_backend.open_rtl` as ``python -m spikeloop.sim.rtl_server``;
it builds (cached) the bridge around the design with :func:`~spikeloop.sim.rtl_runner.build_and_test`
and runs :mod:`spikeloop.sim.cocotb_link`, which connects back to the host's port.

This module also defines the small message format on that socket (cocotb-free, so the host
imports it too). Each message is ``kind u8 · length u32 LE · payload``:

====  =========  ====================================================================
kind  direction  meaning
====  =========  ====================================================================
1     both       DATA: bytes for the design's ``rx`` pin / bytes from its ``tx`` pin
2     host→sim   RUN: the host is waiting for bytes; keep simulating even if idle
3     host→sim   HOLD: the host stopped waiting; the sim may pause when the link idles
4     both       STATS: request (empty) / reply (JSON counters)
5     host→sim   BYE: finish (the sim answers with a last STATS and exits)
6     sim→host   HELLO: JSON (free-running cycles/s, divisor, width, ...) once calibrated
====  =========  ====================================================================

Process hygiene: the server is a process-group leader (the host starts it in a new session);
SIGTERM unwinds it so that ``subprocess.run`` kills and reaps the Verilator (or build)
child, and a watchdog thread sends that SIGTERM itself if the host process disappears.
"""

from __future__ import annotations

import argparse
import enum
import importlib
import importlib.util
import json
import os
import signal
import struct
import sys
import threading
import time
from pathlib import Path

__all__ = ["Msg", "MSG_HEADER", "MAX_MSG", "pack_msg", "MsgReader", "make_soc", "load_factory", "main",
           "TEST_MODULE"]

#: ``kind u8 · length u32``.
MSG_HEADER = struct.Struct("<BI")
#: Largest payload accepted (a corrupt stream fails loudly instead of allocating gigabytes).
MAX_MSG = 1 << 24
#: The cocotb module that serves the link.
TEST_MODULE = "spikeloop.sim.cocotb_link"


class Msg(enum.IntEnum):
    DATA = 1
    RUN = 2
    HOLD = 3
    STATS = 4
    BYE = 5
    HELLO = 6


def pack_msg(kind: Msg, payload: bytes = b"") -> bytes:
    return MSG_HEADER.pack(int(kind), len(payload)) + bytes(payload)


class MsgReader:
    """Incremental parser: ``feed(bytes) -> [(Msg, payload), ...]``."""

    def __init__(self):
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[Msg, bytes]]:
        buf = self._buf
        buf += data
        out, pos = [], 0
        while len(buf) - pos >= MSG_HEADER.size:
            kind, n = MSG_HEADER.unpack_from(buf, pos)
            if n > MAX_MSG:
                raise ValueError(f"link message length must be at most {MAX_MSG}, not {n}")
            end = pos + MSG_HEADER.size + n
            if end > len(buf):
                break
            try:
                k = Msg(kind)
            except ValueError:
                raise ValueError(f"unknown link message kind {kind}") from None
            out.append((k, bytes(buf[pos + MSG_HEADER.size:end])))
            pos = end
        del buf[:pos]
        return out


# ---------------------------------------------------------------------------------------- designs
def make_soc(params: dict, lanes: int = 1, in_width: int = 8, clock_hz: int = 12_000_000,
             baud: int = 3_000_000, max_payload: int = 1024):
    """The ``SoC`` from JSON-able arguments (``params`` is ``Params.to_dict()``)."""
    from spikeloop.hdl.soc import SoC
    from spikeloop.params import Params

    return SoC(Params.from_dict(params), lanes=lanes, in_width=in_width, clock_hz=clock_hz, baud=baud,
               max_payload=max_payload)


def load_factory(spec: str):
    """``"package.module:name"`` or ``"path/to/file.py:name"`` -> the callable it names."""
    mod_name, sep, attr = spec.rpartition(":")
    if not sep or not mod_name or not attr:
        raise ValueError(f"dut must be 'module:callable' or 'file.py:callable', not {spec!r}")
    if mod_name.endswith(".py"):
        path = Path(mod_name).resolve()
        mod_spec = importlib.util.spec_from_file_location(f"_spikeloop_dut_{path.stem}", path)
        if mod_spec is None or not path.is_file():
            raise ValueError(f"dut file {path} does not exist")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[mod_spec.name] = module
        mod_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(mod_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{mod_name} has no {attr!r}") from None


# ---------------------------------------------------------------------------------------- process
class Terminated(BaseException):
    """Raised in the main thread by SIGTERM: unwinds through ``subprocess.run`` (which kills and
    reaps its child) without being swallowed by ``except Exception`` handlers."""


def _on_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)     # once
    raise Terminated()


def _watch_parent(ppid: int, period: float = 0.5) -> None:
    while True:
        time.sleep(period)
        if os.getppid() != ppid:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spikeloop.sim.rtl_server", description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True, help="host's TCP port on 127.0.0.1")
    ap.add_argument("--dut", required=True, help="module:callable or file.py:callable returning the design")
    ap.add_argument("--kwargs", default="{}", help="JSON keyword arguments for the design factory")
    ap.add_argument("--toplevel", default="link_top")
    ap.add_argument("--divisor", type=int, required=True)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--idle-cycles", type=int, default=None)
    ap.add_argument("--calibrate-s", type=float, default=1.0)
    ap.add_argument("--poll-s", type=float, default=0.005)
    ap.add_argument("--build-dir", default=None)
    ap.add_argument("--parent", type=int, default=None, help="exit when this process is gone")
    ap.add_argument("--token", default="", help="echoed in HELLO so the host knows who connected")
    args = ap.parse_args(argv)

    signal.signal(signal.SIGTERM, _on_sigterm)
    ppid = args.parent or os.getppid()
    threading.Thread(target=_watch_parent, args=(ppid,), daemon=True).start()

    from spikeloop.sim.link_bridge import SimLinkBridge
    from spikeloop.sim.rtl_runner import (CocotbTestFailure, RTLBuildError, build_and_test,
                                          default_build_dir, design_verilog)

    factory = load_factory(args.dut)
    kwargs = json.loads(args.kwargs)
    divisor, width, idle = args.divisor, args.width, args.idle_cycles

    def design():
        return SimLinkBridge(lambda: factory(**kwargs), divisor, width=width, idle_cycles=idle)

    params = {"port": args.port, "token": args.token, "width": width, "divisor": divisor,
              "calibrate_s": args.calibrate_s, "poll_s": args.poll_s}
    print(f"rtl_server: building {args.toplevel} ({args.dut}, divisor {divisor}, width {width}) "
          f"and connecting to port {args.port}", flush=True)
    root = Path(args.build_dir or default_build_dir())
    try:
        verilog = design_verilog(design, args.toplevel)
        # build_and_test builds under a per-design lock and in a clean folder, so two servers of
        # one design (two backends of a comparison) share one build.
        res = build_and_test(verilog, args.toplevel, TEST_MODULE, build_dir=root, params=params,
                             verbose=True)
    except RTLBuildError as exc:
        print(f"rtl_server: BUILD FAILED: {exc}", flush=True)
        return 2
    except CocotbTestFailure as exc:
        print(f"rtl_server: SIMULATION FAILED: {exc}", flush=True)
        return 3
    except Terminated:
        # subprocess.run killed its direct child; a build's compilers may still run in our
        # group. SIGTERM is ignored here by now, so this reaches only them.
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpid(), signal.SIGTERM)
        print("rtl_server: terminated", flush=True)
        return 143
    print(f"rtl_server: done ({'cached' if res.cached_build else 'built'} {res.build_dir.name}, "
          f"build {res.build_time_s:.1f} s, sim {res.test_time_s:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

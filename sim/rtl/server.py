"""The ``rtl`` backend's simulation process: build a design inside :class:`SimLinkBridge`, serve it on TCP.

Started by :func:`spikeloop.sim.rtl.client.open_link` as ``python -m spikeloop.sim.rtl.server``;
it resolves the design factory (a reference made by :func:`~spikeloop.sim.rtl.wire.ref_of`),
rebuilds its arguments (:func:`~spikeloop.sim.rtl.wire.decode_args`), builds (cached) the bridge
around the design with :func:`~spikeloop.sim.rtl_runner.build_and_test` and runs
:mod:`spikeloop.sim.rtl.cocotb_link`, which connects back to the host's port. The socket's
message format is in :mod:`spikeloop.sim.rtl.wire`.

Process hygiene: the server is a process-group leader (the host starts it in a new session);
SIGTERM unwinds it so that ``subprocess.run`` kills and reaps the Verilator (or build)
child, and a watchdog thread sends that SIGTERM itself if the host process disappears.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

__all__ = ["main", "TEST_MODULE", "Terminated"]

#: The cocotb module that serves the link (``spikeloop.sim.rtl.cocotb_link``).
TEST_MODULE = f"{__package__ or 'spikeloop.sim.rtl'}.cocotb_link"


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
    ap = argparse.ArgumentParser(prog="python -m spikeloop.sim.rtl.server", description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True, help="host's TCP port on 127.0.0.1")
    ap.add_argument("--dut", required=True, help="module:callable or file.py:callable returning the design")
    ap.add_argument("--dut-file", default=None,
                    help="the factory's source file, loaded if its module does not import by name here")
    ap.add_argument("--args", default="{}", help="the factory's arguments (JSON of wire.encode_args)")
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

    from spikeloop.sim.rtl.bridge import SimLinkBridge
    from spikeloop.sim.rtl.wire import decode_args, resolve
    from spikeloop.sim.rtl_runner import (CocotbTestFailure, RTLBuildError, build_and_test,
                                          default_build_dir, design_verilog)

    factory = resolve(args.dut, args.dut_file)
    f_args, f_kwargs = decode_args(args.args)
    divisor, width, idle = args.divisor, args.width, args.idle_cycles

    def design():
        return SimLinkBridge(lambda: factory(*f_args, **f_kwargs), divisor, width=width, idle_cycles=idle)

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

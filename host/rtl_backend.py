"""The ``rtl`` backend: the gateware ``SoC`` simulated by Verilator, reached through a TCP socket.

:func:`open_rtl` builds (cached) the ``SoC`` inside :class:`~spikeloop.sim.link_bridge.SimLinkBridge`,
starts ``python -m spikeloop.sim.rtl_server`` in its own process group, listens on a localhost
port the simulation connects to, and returns an :class:`RtlTransport` that the unchanged driver
uses as it would a serial port. The UART between the bridge and the ``SoC`` is the real
gateware at ``divisor`` clocks per bit; Python in the simulation wakes per 64-byte word or
frame, never per clock (see ``docs/host.md``, "rtl backend").

Simulated time advances while bytes are queued or on the wire, and while the host waits in
:meth:`RtlTransport.read`; otherwise the simulation blocks on the socket, costing nothing.
Timeouts stay wall-clock: the SoC simulates at ~170k cycles per CPU second, so a byte at
divisor 4 (40 cycles) takes 0.25 ms of wall time or more, some 70 times (on a busy machine
150 times) longer than at 3 Mbaud on a board.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spikeloop.host.transport import Transport, TransportClosed
from spikeloop.sim.rtl_server import Msg, MsgReader, pack_msg

__all__ = ["open_rtl", "open_link", "RtlTransport", "RtlLaunchError", "RtlSimError", "SOC_FACTORY"]

#: The design factory :func:`open_rtl` simulates (JSON-able keyword arguments).
SOC_FACTORY = "spikeloop.sim.rtl_server:make_soc"
#: Largest DATA message sent at once.
_CHUNK = 1 << 16
#: Seconds the server gets to exit after BYE (then SIGTERM, then SIGKILL).
_GRACE_S = 10.0


class RtlLaunchError(RuntimeError):
    """The simulation could not be built or started; the message ends with the log's tail."""


class RtlSimError(TransportClosed):
    """The simulation ended while the transport was open; the message ends with the log's tail."""


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(proc: subprocess.Popen, sock: socket.socket | None, grace: float, workdir: Path | None = None) -> None:
    """Stop the server and everything it started: BYE (if a socket), SIGTERM, then SIGKILL to the
    group; then remove ``workdir`` (the temporary log folder) if the server exited cleanly."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)      # also wakes a reader thread blocked in recv
        with contextlib.suppress(OSError):
            sock.close()
    if proc.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace if sock is not None else 0.0)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)   # the server kills and reaps its own child
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5.0)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Anything of the group that outlived its leader (compilers of an interrupted build): the id
    # cannot have been reused while a member is alive.
    if _group_alive(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    if workdir is not None and proc.returncode == 0:
        shutil.rmtree(workdir, ignore_errors=True)


class _Inbox:
    """What the reader thread fills: received DATA bytes, the last STATS, end of stream."""

    def __init__(self):
        self.cond = threading.Condition()
        self.buf = bytearray()
        self.eof = False
        self.stats: dict | None = None
        self.stats_seq = 0

    def on_msg(self, kind: Msg, payload: bytes) -> None:
        with self.cond:
            if kind is Msg.DATA:
                self.buf += payload
            elif kind is Msg.STATS:
                self.stats = json.loads(payload)
                self.stats_seq += 1
            self.cond.notify_all()

    def pump(self, sock: socket.socket, reader: MsgReader) -> None:
        try:
            while True:
                data = sock.recv(1 << 16)
                if not data:
                    break
                for kind, payload in reader.feed(data):
                    self.on_msg(kind, payload)
        except (OSError, ValueError):
            pass
        with self.cond:
            self.eof = True
            self.cond.notify_all()


class RtlTransport(Transport):
    """A :class:`Transport` to a simulated design served by :mod:`spikeloop.sim.rtl_server`.

    A reader thread moves DATA from the socket into a buffer; :meth:`read` tells the simulation
    to keep running (RUN) while it waits and to stop insisting (HOLD) when it returns.

    Members
    -------
    hello : dict
        What the simulation reported at start: ``free_cycles_per_s`` (Verilator's free-running
        rate on this design, measured in this run), ``divisor``, ``width``, ``poll_cycles``.
    pid : int
        The server process (also its process-group id).
    log_path : Path
        Build and simulation log.
    """

    def __init__(self, proc: subprocess.Popen, sock: socket.socket, log_path: Path, hello: dict,
                 reader: MsgReader, pending: list, workdir: Path | None):
        self._proc, self._sock = proc, sock
        self.pid = proc.pid
        self.log_path = log_path
        self.hello = hello
        self._workdir = workdir
        self._in = inbox = _Inbox()
        self._send_lock = threading.Lock()
        self._closing = False
        self.bytes_written = self.bytes_read = 0
        self._finalizer = weakref.finalize(self, _stop, proc, sock, 2.0, workdir)
        for kind, payload in pending:
            inbox.on_msg(kind, payload)
        # The thread holds the inbox and the socket, not the transport, so that an unreferenced
        # transport is collected and its finalizer stops the simulation.
        self._thread = threading.Thread(target=inbox.pump, args=(sock, reader), name="rtl-link-reader",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ socket
    @property
    def _cond(self) -> threading.Condition:
        return self._in.cond

    @property
    def _buf(self) -> bytearray:
        return self._in.buf

    @property
    def _eof(self) -> bool:
        return self._in.eof

    def _send(self, kind: Msg, payload: bytes = b"") -> None:
        try:
            with self._send_lock:
                self._sock.sendall(pack_msg(kind, payload))
        except OSError:
            self._raise_dead()

    def _raise_dead(self):
        if self._closing:
            raise TransportClosed("rtl transport closed")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(5.0)            # let the log be complete
        code = self._proc.poll()
        how = "is still running" if code is None else f"exited with code {code}"
        raise RtlSimError(f"the rtl simulation closed the link (server {how}); "
                          f"log {self.log_path}:\n{_tail(self.log_path)}")

    # ------------------------------------------------------------------ Transport
    def write(self, data: bytes) -> None:
        if self._closing:
            raise TransportClosed("rtl transport closed")
        if self._eof:
            self._raise_dead()
        data = bytes(data)
        for k in range(0, len(data), _CHUNK):
            self._send(Msg.DATA, data[k:k + _CHUNK])
        self.bytes_written += len(data)

    def read(self, n: int, timeout: float | None = 0.0) -> bytes:
        if self._closing:
            raise TransportClosed("rtl transport closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if not self._buf and not self._eof and (timeout is None or timeout > 0):
                self._send(Msg.RUN)
                try:
                    while not self._buf and not self._eof:
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            break
                        self._cond.wait(left)
                finally:
                    if not self._eof:
                        self._send(Msg.HOLD)
            if not self._buf:
                if self._eof:
                    self._raise_dead()
                return b""
            out = bytes(self._buf[:n])
            del self._buf[:n]
        self.bytes_read += len(out)
        return out

    @property
    def in_waiting(self) -> int:
        with self._cond:
            return len(self._buf)

    def stats(self, timeout: float = 10.0) -> dict:
        """Counters from the simulation, fresh if it is running (else the last ones).

        ``free_cycles_per_s`` (Verilator alone on this design, measured at start),
        ``cycles_per_s`` (simulated cycles per second of wall time while serving, time blocked
        on an idle link excluded), the same two per CPU second of the simulation process
        (``free_cycles_per_cpu_s``, ``cycles_per_cpu_s``: insensitive to other load on the
        machine), ``cycles``, ``run_s``, ``cpu_s``, ``blocked_s``, ``bytes_to_dut``,
        ``bytes_from_dut``, ``wakes`` (Python wake-ups while serving), ``overrun`` (bytes lost,
        must be 0), ``frame_error``, plus ``ratio`` = cycles_per_s / free_cycles_per_s and
        ``cpu_ratio`` = cycles_per_cpu_s / free_cycles_per_cpu_s.
        """
        with self._cond:
            if not self._eof and not self._closing:
                seq = self._in.stats_seq
                self._send(Msg.STATS)
                self._cond.wait_for(lambda: self._in.stats_seq != seq or self._eof, timeout)
            st = dict(self._in.stats or {})
        if st.get("cycles_per_s") and st.get("free_cycles_per_s"):
            st["ratio"] = st["cycles_per_s"] / st["free_cycles_per_s"]
        if st.get("cycles_per_cpu_s") and st.get("free_cycles_per_cpu_s"):
            st["cpu_ratio"] = st["cycles_per_cpu_s"] / st["free_cycles_per_cpu_s"]
        return st

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def close(self) -> None:
        """Finish the simulation (BYE, last STATS) and make sure every process it started is gone."""
        if self._closing:
            return
        self._closing = True
        if not self._eof:
            with contextlib.suppress(OSError):
                with self._send_lock:
                    self._sock.sendall(pack_msg(Msg.BYE))
            with self._cond:
                self._cond.wait_for(lambda: self._eof, _GRACE_S)
        self._finalizer.detach()
        _stop(self._proc, self._sock, _GRACE_S, self._workdir)
        self._thread.join(1.0)


# ---------------------------------------------------------------------------------------- launch
def open_link(dut: str, kwargs: Mapping[str, Any] | None = None, *, divisor: int = 4, width: int = 64,
              idle_cycles: int | None = None, toplevel: str = "link_top", timeout: float = 900.0,
              build_dir: str | os.PathLike | None = None, calibrate_s: float = 1.0, poll_s: float = 0.005,
              log_dir: str | os.PathLike | None = None) -> RtlTransport:
    """Simulate any design with UART pins behind an :class:`RtlTransport`.

    Parameters
    ----------
    dut : str
        ``"module:callable"`` or ``"file.py:callable"``; called with ``**kwargs`` (JSON-able) in
        the server process, it returns a component with ``rx: In(1)`` and ``tx: Out(1)``.
    divisor : int
        Clocks per UART bit of the design (the bridge uses the same).
    width, idle_cycles :
        See :class:`~spikeloop.sim.link_bridge.SimLinkBridge`.
    toplevel : str
        Verilog top name (names the cached build folder).
    timeout : float
        Seconds allowed for the build (cold: tens of seconds) plus the start of the simulation.
    build_dir : path, optional
        Verilator build cache (default ``~/.cache/spikeloop/rtl``).
    calibrate_s : float
        Wall seconds spent measuring the free-running cycle rate at start (0: skip).
    poll_s : float
        How often (in wall time) a running simulation looks at the socket.
    log_dir : path, optional
        Where the log goes (default: a fresh temporary folder, removed by a clean close).

    Raises
    ------
    RtlLaunchError
        The build failed, the server exited or did not connect within ``timeout``.
    """
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 4:
        raise ValueError(f"divisor must be an integer of at least 4 clocks per bit, not {divisor!r}")
    if not isinstance(width, int) or isinstance(width, bool) or not 1 <= width <= 1024:
        raise ValueError(f"width must be an integer in 1..1024, not {width!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be positive seconds, not {timeout!r}")
    if not poll_s > 0:
        raise ValueError(f"poll_s must be positive seconds, not {poll_s!r}")
    kw_json = json.dumps(dict(kwargs or {}))
    workdir = None
    if log_dir is None:
        workdir = Path(tempfile.mkdtemp(prefix="spikeloop-rtl-"))
        log_dir = workdir
    log_path = Path(log_dir) / "rtl_server.log"

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    token = secrets.token_hex(8)
    cmd = [sys.executable, "-m", "spikeloop.sim.rtl_server", "--port", str(port), "--dut", dut,
           "--kwargs", kw_json, "--toplevel", toplevel, "--divisor", str(divisor), "--width", str(width),
           "--calibrate-s", str(calibrate_s), "--poll-s", str(poll_s), "--parent", str(os.getpid()),
           "--token", token]
    if idle_cycles is not None:
        cmd += ["--idle-cycles", str(idle_cycles)]
    if build_dir is not None:
        cmd += ["--build-dir", str(Path(build_dir).resolve())]
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)     # the runner would sys.exit on failure
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)
    sock = None
    try:
        deadline = time.monotonic() + timeout
        listener.settimeout(0.2)
        while sock is None:
            try:
                sock, _ = listener.accept()
            except socket.timeout:
                if proc.poll() is not None:
                    raise RtlLaunchError(f"the rtl simulation exited with code {proc.returncode} before "
                                         f"connecting; log {log_path}:\n{_tail(log_path)}") from None
                if time.monotonic() > deadline:
                    raise RtlLaunchError(f"the rtl simulation did not connect within {timeout:g} s; "
                                         f"log {log_path}:\n{_tail(log_path)}") from None
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # HELLO comes once the free-running rate is measured.
        reader, pending, hello = MsgReader(), [], None
        sock.settimeout(0.2)
        t_hello = time.monotonic() + max(60.0, 20 * calibrate_s)
        while hello is None:
            try:
                data = sock.recv(1 << 16)
            except socket.timeout:
                if proc.poll() is not None or time.monotonic() > t_hello:
                    raise RtlLaunchError(f"the rtl simulation connected but never said hello; "
                                         f"log {log_path}:\n{_tail(log_path)}") from None
                continue
            if not data:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5.0)
                raise RtlLaunchError(f"the rtl simulation closed the link at start; "
                                     f"log {log_path}:\n{_tail(log_path)}")
            for kind, payload in reader.feed(data):
                if kind is Msg.HELLO and hello is None:
                    hello = json.loads(payload)
                    if hello.pop("token", None) != token:
                        raise RtlLaunchError(f"another program connected to port {port} instead of the "
                                             f"rtl simulation")
                else:
                    pending.append((kind, payload))
        sock.settimeout(None)
    except BaseException:
        _stop(proc, sock, 0.0)
        raise
    finally:
        listener.close()
    return RtlTransport(proc, sock, log_path, hello, reader, pending, workdir)


def open_rtl(params, lanes: int = 1, in_width: int = 8, *, clock_hz: int = 12_000_000, divisor: int = 4,
             max_payload: int = 1024, timeout: float = 900.0, build_dir: str | os.PathLike | None = None,
             **link) -> RtlTransport:
    """The ``SoC`` for ``params`` simulated behind an :class:`RtlTransport` (the default backend).

    The ``SoC`` gets ``baud = clock_hz // divisor``, so its UART runs at ``divisor`` clocks per
    bit like the bridge's. ``link`` passes ``width``, ``idle_cycles``, ``calibrate_s``, ``poll_s``
    and ``log_dir`` on to :func:`open_link`. Close the transport (or use it as a context manager);
    the simulation is also stopped when the transport is garbage-collected or Python exits.
    """
    from spikeloop.params import Params

    if not isinstance(params, Params):
        raise TypeError(f"params must be a Params, not {type(params).__name__}")
    for name, v, lo in (("lanes", lanes, 1), ("in_width", in_width, 1), ("clock_hz", clock_hz, 1),
                        ("max_payload", max_payload, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{name} must be an integer of at least {lo}, not {v!r}")
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 4:
        raise ValueError(f"divisor must be an integer of at least 4 clocks per bit, not {divisor!r}")
    kwargs = {"params": params.to_dict(), "lanes": lanes, "in_width": in_width, "clock_hz": clock_hz,
              "baud": clock_hz // divisor, "max_payload": max_payload}
    return open_link(SOC_FACTORY, kwargs, divisor=divisor, toplevel="link_soc", timeout=timeout,
                     build_dir=build_dir, **link)


# ---------------------------------------------------------------------------------------- benchmark
def measure(params, frames: int = 10, lanes: int = 1, seed: int = 0, **kw) -> dict:
    """Drive the simulated ``SoC`` with ``frames`` full RUN_STEPS frames (stop-and-wait, random
    spikes) and return its link counters over that stretch: the speed figures of ``docs/host.md``."""
    import random

    from spikeloop import protocol as P

    rng = random.Random(seed)
    with open_rtl(params, lanes, **kw) as t:
        dec = P.FrameDecoder()

        def transact(cmd, seq, payload=b""):
            t.write(P.encode_frame(cmd, seq, payload))
            while True:
                data = t.read(1 << 16, timeout=120)
                if not data:
                    raise TimeoutError(f"no reply to {cmd.name} within 120 s")
                for f in dec.feed(data):
                    if f.seq == seq:
                        return f

        ident = P.unpack_identify(transact(P.Command.IDENTIFY, 0).payload)
        k = P.max_steps_per_frame(params, ident.max_payload)
        k = min(k, ident.max_steps) if ident.max_steps else k
        before, t0 = t.stats(), time.perf_counter()
        for i in range(frames):
            xs = [[rng.random() < 0.05 for _ in range(params.n_in)] for _ in range(k)]
            ys = [[rng.random() < 0.02 for _ in range(params.n_out)] for _ in range(k)]
            f = transact(P.Command.RUN_STEPS, (i + 1) & 0xFF, P.pack_run_steps(params, xs, ys))
            if f.cmd != P.Command.ACK:
                raise RuntimeError(f"RUN_STEPS answered with {f.cmd:#x}: {f.payload.hex()}")
        wall = time.perf_counter() - t0
        after = t.stats()
    d = {key: after[key] - before[key] for key in ("cycles", "run_s", "cpu_s", "wakes", "bytes_to_dut",
                                                    "bytes_from_dut")}
    from spikeloop.hdl.core import cycles_per_step

    divisor = kw.get("divisor", 4)
    steps = frames * k
    chunks = sum(1 for n in range(steps) if (n + 1) % params.chunk_steps == 0)
    # What the frames need at least: every byte on the wire once, every step of the Core.
    needed = (10 * divisor * (d["bytes_to_dut"] + d["bytes_from_dut"])
              + (steps - chunks) * cycles_per_step(params, lanes) + chunks * cycles_per_step(params, lanes, True))
    return {
        "n_in": params.n_in, "n_out": params.n_out, "lanes": lanes, "steps_per_frame": k, "frames": frames,
        "cycles_needed": needed,
        "wall_s": wall, "steps_per_s": frames * k / wall, **d,
        "free_cycles_per_s": after["free_cycles_per_s"], "cycles_per_s": d["cycles"] / d["run_s"],
        "free_cycles_per_cpu_s": after["free_cycles_per_cpu_s"], "cycles_per_cpu_s": d["cycles"] / d["cpu_s"],
        "ratio": d["cycles"] / d["run_s"] / after["free_cycles_per_s"],
        "cpu_ratio": d["cycles"] / d["cpu_s"] / after["free_cycles_per_cpu_s"],
    }


def _main(argv=None) -> int:
    import argparse

    from spikeloop.params import Params

    ap = argparse.ArgumentParser(prog="python -m spikeloop.host.rtl_backend",
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
        r = measure(Params(n_in=n_in, n_out=n_out), frames=args.frames, lanes=args.lanes)
        print(f"| {n_in} in / {n_out} out | {r['steps_per_frame']} | {r['steps_per_s']:,.1f} "
              f"| {r['cycles'] / r['frames']:,.0f} ({r['cycles_needed'] / r['frames']:,.0f}) "
              f"| {r['free_cycles_per_s']:,.0f} | {r['cycles_per_s']:,.0f} | {r['ratio']:.2f} "
              f"| {r['free_cycles_per_cpu_s']:,.0f} / {r['cycles_per_cpu_s']:,.0f} | {r['cpu_ratio']:.2f} "
              f"| {1000 * r['wakes'] / r['cycles']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())

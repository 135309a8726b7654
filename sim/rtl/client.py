"""The host side of the ``rtl`` backend: a :class:`Transport` to a design simulated by Verilator.

:func:`open_rtl` builds (cached) the ``SoC`` of a :class:`~spikeloop.hdl.config.SoCConfig` inside
:class:`~spikeloop.sim.rtl.bridge.SimLinkBridge`; :func:`open_link` does the same for any design
with UART pins. Either starts ``python -m spikeloop.sim.rtl.server`` in its own process group,
listens on a localhost port the simulation connects to, and returns an :class:`RtlTransport`
that the unchanged driver uses as it would a serial port. The design factory is passed as the
object itself (sent as its ``module:qualname``, :func:`~spikeloop.sim.rtl.wire.ref_of`), its
arguments as JSON (a ``SoCConfig`` by its ``to_dict()``). The UART between the bridge and the
``SoC`` is the real gateware at ``divisor`` clocks per bit; Python in the simulation wakes per
64-byte word or frame, never per clock (see ``docs/host.md``, "rtl backend").

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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from spikeloop.host.transport import Transport, TransportClosed
from spikeloop.sim.rtl.wire import Msg, MsgReader, encode_args, pack_msg, ref_of, source_file

__all__ = ["open_rtl", "open_link", "RtlTransport", "RtlLaunchError", "RtlSimError"]

#: The server process's module (``python -m`` it).
SERVER_MODULE = f"{__package__}.server"
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
    """A :class:`Transport` to a simulated design served by :mod:`spikeloop.sim.rtl.server`.

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
    config : SoCConfig or None
        The configuration simulated (set by :func:`open_rtl`; None for :func:`open_link`).
    """

    def __init__(self, proc: subprocess.Popen, sock: socket.socket, log_path: Path, hello: dict,
                 reader: MsgReader, pending: list, workdir: Path | None):
        self._proc, self._sock = proc, sock
        self.pid = proc.pid
        self.log_path = log_path
        self.hello = hello
        self.config = None
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
def open_link(dut: Callable | str, kwargs: Mapping[str, Any] | None = None, *, args: Sequence[Any] = (),
              divisor: int = 4, width: int = 64, idle_cycles: int | None = None, toplevel: str = "link_top",
              timeout: float = 900.0, build_dir: str | os.PathLike | None = None, calibrate_s: float = 1.0,
              poll_s: float = 0.005, log_dir: str | os.PathLike | None = None) -> RtlTransport:
    """Simulate any design with UART pins behind an :class:`RtlTransport`.

    Parameters
    ----------
    dut : callable or str
        The design factory: a module-level class or function (the server imports it by its
        ``module:qualname``; a test or script module is loaded from its file), or such a
        reference as text, ``"module:callable"`` or ``"file.py:callable"``. Called in the server
        process with ``*args, **kwargs``, it returns a component with ``rx: In(1)`` and
        ``tx: Out(1)``.
    kwargs, args :
        The factory's arguments: JSON data, or objects with ``to_dict()`` and a classmethod
        ``from_dict()`` (rebuilt in the server; see :mod:`spikeloop.sim.rtl.wire`).
    divisor : int
        Clocks per UART bit of the design (the bridge uses the same).
    width, idle_cycles :
        See :class:`~spikeloop.sim.rtl.bridge.SimLinkBridge`.
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
    ValueError
        A parameter is out of range, or ``dut`` is a callable the server could not import.
    TypeError
        An argument of the factory is neither JSON data nor ``to_dict``/``from_dict``-able.
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
    if isinstance(dut, str):
        dut_ref, dut_file = dut, None
    else:
        dut_ref, dut_file = ref_of(dut), source_file(dut)
    args_json = encode_args(args, kwargs)
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
    cmd = [sys.executable, "-m", SERVER_MODULE, "--port", str(port), "--dut", dut_ref,
           "--args", args_json, "--toplevel", toplevel, "--divisor", str(divisor), "--width", str(width),
           "--calibrate-s", str(calibrate_s), "--poll-s", str(poll_s), "--parent", str(os.getpid()),
           "--token", token]
    if dut_file is not None:
        cmd += ["--dut-file", dut_file]
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


def open_rtl(config, *, divisor: int = 4, timeout: float = 900.0,
             build_dir: str | os.PathLike | None = None, **link) -> RtlTransport:
    """The ``SoC`` of ``config`` simulated behind an :class:`RtlTransport` (the default backend).

    Parameters
    ----------
    config : SoCConfig
        What to build (:class:`~spikeloop.hdl.config.SoCConfig`, e.g.
        ``SoCConfig.build(params, lanes)``). Its ``baud`` is replaced by ``clock_hz // divisor``,
        so the SoC's UART runs at ``divisor`` clocks per bit like the bridge's; the transport's
        ``config`` is the configuration actually built.
    divisor : int
        Clocks per UART bit, at least 4.
    timeout, build_dir, link :
        See :func:`open_link` (``link``: ``width``, ``idle_cycles``, ``calibrate_s``, ``poll_s``,
        ``log_dir``).

    Close the transport (or use it as a context manager); the simulation is also stopped when the
    transport is garbage-collected or Python exits.

    Raises
    ------
    TypeError
        If ``config`` is not a ``SoCConfig``.
    ValueError
        If ``divisor`` is not an integer of at least 4, or ``clock_hz // divisor`` is not a baud
        rate the SoC accepts (``ParamError``).
    RtlLaunchError
        See :func:`open_link`.
    """
    from spikeloop.hdl.config import SoCConfig
    from spikeloop.hdl.soc import SoC

    if not isinstance(config, SoCConfig):
        hint = " (build one with SoCConfig.build(params, lanes))" if type(config).__name__ == "Params" else ""
        raise TypeError(f"config must be a SoCConfig, not {type(config).__name__}{hint}")
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 4:
        raise ValueError(f"divisor must be an integer of at least 4 clocks per bit, not {divisor!r}")
    soc = config if config.baud == config.clock_hz // divisor else config.replace(baud=config.clock_hz // divisor)
    t = open_link(SoC, args=(soc,), divisor=divisor, toplevel="link_soc", timeout=timeout,
                  build_dir=build_dir, **link)
    t.config = soc
    return t

"""``spikeloop serve``: a simulated device (``board-model`` or ``rtl``) behind a pseudo-terminal.

The point is to exercise the real ``serial`` path — pyserial, the driver's timeouts and
retransmissions, ``serial:auto`` discovery — without a board: the host opens the printed slave
(``serial:/dev/pts/N``) as it would ``/dev/ttyUSB1``. :class:`PtyServer` pumps bytes between the
pty's master side and a device :class:`~spikeloop.host.transport.Transport` of the backend
registry, unchanged, so what answers is exactly what ``--backend board-model`` / ``rtl`` answers
in-process.

Like a powered board, the device outlives its host: the server keeps the slave open itself, so a
host closing the port is not an end of file, the device keeps its state, and the next host
connects to the same device (pyserial flushes what arrived while nobody listened). Replies that
find nobody listening are dropped once the pty's buffer is full, as a UART drops them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import termios
import threading
import time
import tty

from spikeloop import protocol as P
from spikeloop.host.board import BackendError, DriverError

__all__ = ["PtyServer", "ServeError", "serve_config", "open_device", "SERVE_BACKENDS"]

#: The backends ``serve`` can put behind a pty (a ``serial`` board already is a serial port).
SERVE_BACKENDS = ("board-model", "rtl")


class ServeError(DriverError):
    """The device cannot be served (bad backend or baud rate, no pseudo-terminals here)."""


def serve_config(params, lanes: int = 1, baud: int | None = None):
    """The :class:`~spikeloop.hdl.config.SoCConfig` a served device is built from: the board
    build's clock and (unless ``baud`` is given) its baud rate, so that IDENTIFY reports what a
    flashed board would."""
    from spikeloop.hdl.config import SoCConfig
    soc = SoCConfig.build(params, lanes)
    if baud is not None and baud != soc.baud:
        try:
            soc = soc.replace(baud=baud)
            try:
                from spikeloop.hdl.uart import uart_divisor      # the SoC's own rule (needs amaranth)
            except ModuleNotFoundError:
                pass
            else:
                uart_divisor(soc.clock_hz, baud)
        except ValueError as e:
            raise ServeError(f"--baud {baud} is not a rate the SoC can run at {soc.clock_hz} Hz "
                             f"({e}); use the default {SoCConfig.baud}") from None
    return soc


def open_device(backend: str, config, **kw):
    """The device-side transport of ``backend`` (``board-model`` or ``rtl``) for ``config``.

    The rtl SoC's UART runs at ``clock_hz // divisor``; the divisor is chosen so that it runs at
    ``config.baud`` (4 at the default 12 MHz and 3 Mbaud).
    """
    from spikeloop.host.backends import lookup
    if backend not in SERVE_BACKENDS:
        raise ServeError(f"serve takes --backend {' or '.join(SERVE_BACKENDS)}, not {backend!r} "
                         f"(a board on a serial port needs no server)")
    b, _ = lookup(backend, protocol=True)
    missing = b.missing()
    if missing:
        raise BackendError(f"the {backend} backend needs {', '.join(missing)}, which is not installed")
    if backend == "rtl":
        divisor, rest = divmod(config.clock_hz, config.baud)
        if rest or divisor < 4:
            raise ServeError(f"the rtl backend needs a baud rate that divides {config.clock_hz} Hz into "
                             f"at least 4 clocks per bit, not {config.baud}")
        kw.setdefault("divisor", divisor)
    return b.open_transport(config, None, **kw)


class PtyServer:
    """Serve a device transport on a new pseudo-terminal until :meth:`stop`.

    Parameters
    ----------
    device : Transport
        What answers (owned: :meth:`close` closes it).
    busy_s : float
        How long the device is kept running for a request it has not answered yet (the rtl
        simulation advances only while it is read; a long RUN_STEPS sends nothing for a while).
    linger_s : float
        How long it is kept running after the last byte either way, for bytes that are not a
        whole frame (garbage, a cut-off request) and whatever the device says about them.

    Members
    -------
    path : str
        The slave device the host opens (``/dev/pts/N``).
    stats : dict
        ``bytes_in`` (from the host), ``bytes_out`` (to the host), ``dropped`` (replies nobody
        read), ``requests``, ``replies`` (whole frames each way).
    """

    def __init__(self, device, *, busy_s: float = 120.0, linger_s: float = 1.0, poll_s: float = 0.01):
        try:
            master, slave = os.openpty()
        except OSError as e:
            device.close()
            raise ServeError(f"cannot open a pseudo-terminal here ({e}); serve needs a POSIX system "
                             f"with /dev/ptmx") from None
        tty.setraw(slave)                         # no echo, no CR/LF or flow-control translation
        attrs = termios.tcgetattr(slave)
        attrs[2] &= ~termios.HUPCL
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        os.set_blocking(master, False)
        self.device, self._master, self._slave = device, master, slave
        self.path = os.ttyname(slave)
        self.busy_s, self.linger_s, self.poll_s = busy_s, linger_s, poll_s
        self._stop = threading.Event()
        self._req = P.FrameDecoder(max_payload=0xFFFF)
        self._rep = P.FrameDecoder(max_payload=0xFFFF)
        self.stats = dict.fromkeys(("bytes_in", "bytes_out", "dropped", "requests", "replies"), 0)
        self._closed = False
        self._thread: threading.Thread | None = None

    def stop(self) -> None:
        """Make :meth:`serve_forever` return (from another thread or a signal handler)."""
        self._stop.set()

    def _to_host(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                self.stats["dropped"] += len(view)    # nobody reads: a UART would lose them too
                return
            view = view[n:]
            self.stats["bytes_out"] += n

    def serve_forever(self) -> None:
        """Pump bytes until :meth:`stop`; a device failure raises (a :class:`DriverError` or
        :class:`~spikeloop.host.transport.TransportClosed`)."""
        outstanding, last_req, last_byte = 0, -1e9, -1e9
        waits = True           # does the device's read wait (rtl) or answer at once (board-model)?
        while not self._stop.is_set():
            now = time.monotonic()
            if outstanding and now - last_req > self.busy_s:
                outstanding = 0                       # never answered: the host has retransmitted
            running = outstanding > 0 or now - last_byte < self.linger_s
            idle = (0.0 if waits else self.poll_s) if running else 0.2
            r, _, _ = select.select([self._master], [], [], idle)
            if r:
                try:
                    data = os.read(self._master, 1 << 16)
                except BlockingIOError:
                    data = b""
                except OSError as e:
                    if e.errno != errno.EIO:          # EIO: no slave open (cannot happen: we hold one)
                        raise
                    data = b""
                if data:
                    self.stats["bytes_in"] += len(data)
                    n = len(self._req.feed(data))
                    self._req.pop_rejects()
                    self.stats["requests"] += n
                    outstanding += n
                    last_byte = last_req = time.monotonic()
                    self.device.write(data)
                    running = True
            if running:
                t0 = time.monotonic()
                out = self.device.read(1 << 16, self.poll_s)
                waits = bool(out) or time.monotonic() - t0 >= self.poll_s / 2
                if out:
                    n = len(self._rep.feed(out))
                    self._rep.pop_rejects()
                    self.stats["replies"] += n
                    outstanding = max(0, outstanding - n)
                    last_byte = time.monotonic()
                    self._to_host(out)

    def close(self) -> None:
        """Close the device (an rtl simulation and every process it started ends) and the pty."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(5.0)                    # the pump must not use the descriptors closed below
        try:
            self.device.close()
        finally:
            for fd in (self._master, self._slave):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def start_thread(self) -> threading.Thread:
        """Serve in a daemon thread (tests; discovery of a served device in-process)."""
        t = self._thread = threading.Thread(target=self.serve_forever, name=f"serve {self.path}", daemon=True)
        t.start()
        return t


def serve(backend: str, params, *, lanes: int = 1, baud: int | None = None, announce=print, **kw) -> int:
    """``spikeloop serve``: build the device, print where it is, serve until Ctrl-C or SIGTERM."""
    config = serve_config(params, lanes, baud)
    device = open_device(backend, config, **kw)
    server = PtyServer(device)

    def on_signal(signum, frame):
        server.stop()
    # SIGINT too: a shell starts a background job with SIGINT ignored, and Python then raises no
    # KeyboardInterrupt; stopping through the handler also never interrupts a half-pumped reply.
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        p = config.params
        announce(f"serving {backend} on {server.path} at {config.baud} baud "
                 f"({p.n_in}-{p.n_hidden}-{p.n_out}, {config.lanes} lane(s), {config.clock_hz} Hz); "
                 f"Ctrl-C to stop")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        except OSError as e:           # not TransportClosed (a ConnectionError): the pty itself
            if isinstance(e, ConnectionError):
                raise
            raise ServeError(f"the pseudo-terminal {server.path} failed: {e}; start serve again") from e
        announce(f"stopped: {server.stats['requests']} requests, {server.stats['replies']} replies, "
                 f"{server.stats['bytes_in']} B in, {server.stats['bytes_out']} B out")
        return 0
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        server.close()


def served_params(config=None, *, network: str = "fig2", n_in=None, hidden=None, feedback=None,
                  duration_ms=None, error_mode: str = "target", feedback_latency=None):
    """The parameters to serve: by default the network ``spikeloop train fig2 --backend
    serial:PORT`` (and ``compare``) builds from the same options and expects IDENTIFY to report;
    ``network="config"`` serves ``config`` as it is (for ``train --input/--target``)."""
    from spikeloop.host.hil import hil_params
    from spikeloop.host.tasks import fig2_params
    from spikeloop.params import Params
    if network == "fig2":
        ch = {k: v for k, v in (("n_hidden", hidden), ("feedback", feedback)) if v is not None}
        params = fig2_params(config, n_in=n_in, duration_ms=duration_ms, **ch)
    elif network == "config":
        params = config if config is not None else Params()
    else:
        raise ValueError(f"network must be 'fig2' or 'config', not {network!r}")
    return hil_params(params, error_mode, feedback_latency)


def add_arguments(p) -> None:
    """``spikeloop serve``'s options (here, so that the command line only dispatches)."""
    from pathlib import Path
    p.add_argument("--backend", choices=SERVE_BACKENDS, default="board-model",
                   help="what answers: the golden model behind the protocol (default) or the "
                        "gateware in Verilator")
    p.add_argument("--config", type=Path, metavar="PARAMS", help="parameters (.json or .toml)")
    p.add_argument("--network", choices=("fig2", "config"), default="fig2",
                   help="fig2: the network 'train fig2' and 'compare' build from --config and the "
                        "options below (default); config: --config's parameters unchanged")
    p.add_argument("--lanes", type=int, default=1, metavar="P", help="parallel lanes (default 1)")
    p.add_argument("--baud", type=int, default=None, metavar="B",
                   help="baud rate IDENTIFY reports (default: the board build's, 3000000)")
    p.add_argument("--n-in", type=int, default=None, metavar="N", help="fig2: inputs (default 100)")
    p.add_argument("--hidden", type=int, default=None, metavar="N", help="fig2: hidden neurons")
    p.add_argument("--feedback", choices=("symmetric", "random", "uniform"), default=None)
    p.add_argument("--duration-ms", type=float, default=None, metavar="MS", help="fig2: trial length")
    p.add_argument("--error-mode", choices=("target", "host"), default="target")
    p.add_argument("--feedback-latency", type=int, default=None, metavar="D")


def run_command(args) -> int:
    """``spikeloop serve`` from parsed arguments."""
    from pathlib import Path
    from spikeloop.params import Params
    config = None
    if args.config is not None:
        if not Path(args.config).is_file():
            raise FileNotFoundError(f"--config: no such file: {args.config}")
        config = Params.load(args.config)
    if args.lanes < 1:
        raise ValueError(f"--lanes must be a positive integer, not {args.lanes}")
    params = served_params(config, network=args.network, n_in=args.n_in, hidden=args.hidden,
                           feedback=args.feedback, duration_ms=args.duration_ms,
                           error_mode=args.error_mode, feedback_latency=args.feedback_latency)
    return serve(args.backend, params, lanes=args.lanes, baud=args.baud,
                 announce=lambda s: print(s, flush=True))

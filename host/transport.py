"""Byte transports under the protocol driver: loopback pairs, fault injection, a serial port.

A :class:`Transport` moves raw bytes; framing, CRC and sequence numbers live in
:mod:`spikeloop.protocol`. Every transport is full duplex and unbuffered from the caller's point
of view: :meth:`Transport.write` never blocks for long, :meth:`Transport.read` returns what arrived
within ``timeout`` (possibly fewer than ``n`` bytes, possibly none).
"""

from __future__ import annotations

import random
import threading
import time

__all__ = ["Transport", "TransportClosed", "LoopbackTransport", "loopback_pair", "FaultyTransport",
           "SerialTransport"]


class TransportClosed(ConnectionError):
    """The transport (or its peer) was closed."""


class Transport:
    """Base class: ``write(bytes)``, ``read(n, timeout) -> bytes``, ``close()``; a context manager."""

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def read(self, n: int, timeout: float | None = 0.0) -> bytes:
        """Up to ``n`` bytes; waits at most ``timeout`` seconds for the first (None: forever)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Pipe:
    """One direction of a loopback: a byte buffer guarded by a condition variable."""

    def __init__(self):
        self.buf = bytearray()
        self.cond = threading.Condition()
        self.closed = False


class LoopbackTransport(Transport):
    """One end of an in-memory full-duplex link; make a connected pair with :func:`loopback_pair`."""

    def __init__(self, rx: _Pipe, tx: _Pipe):
        self._rx, self._tx = rx, tx

    def write(self, data: bytes) -> None:
        with self._tx.cond:
            if self._tx.closed:
                raise TransportClosed("loopback closed")
            self._tx.buf += bytes(data)
            self._tx.cond.notify_all()

    def read(self, n: int, timeout: float | None = 0.0) -> bytes:
        rx = self._rx
        deadline = None if timeout is None else time.monotonic() + timeout
        with rx.cond:
            while not rx.buf and not rx.closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return b""
                rx.cond.wait(left)
            if not rx.buf:
                raise TransportClosed("loopback closed")
            out = bytes(rx.buf[:n])
            del rx.buf[:n]
            return out

    @property
    def in_waiting(self) -> int:
        with self._rx.cond:
            return len(self._rx.buf)

    def close(self) -> None:
        for p in (self._rx, self._tx):
            with p.cond:
                p.closed = True
                p.cond.notify_all()


def loopback_pair() -> tuple[LoopbackTransport, LoopbackTransport]:
    """Two connected ends: what ``a`` writes, ``b`` reads, and vice versa."""
    ab, ba = _Pipe(), _Pipe()
    return LoopbackTransport(ba, ab), LoopbackTransport(ab, ba)


class FaultyTransport(Transport):
    """Wraps a transport and corrupts the bytes passing through it, at a seeded rate.

    Each byte written (and, with ``directions`` including ``"read"``, each byte read) is, with
    probability ``rate``, subjected to one fault chosen uniformly among ``faults``:

    * ``"flip"`` — one random bit inverted,
    * ``"drop"`` — the byte is lost,
    * ``"dup"`` — the byte is delivered twice,
    * ``"truncate"`` — the rest of this ``write`` (or of this chunk read) is lost (a cut-off frame).

    The two directions draw from independent generators seeded from ``seed``, so the same seed and
    the same sequence of calls give the same faults; the write direction draws exactly as it did
    before reads could be corrupted. ``rate`` may be changed between calls (e.g. 0 while a long
    IDENTIFY reply crosses, then the test rate).

    Members
    -------
    log, read_log : list of (byte_offset, fault)
        Every fault injected on writes / reads; offsets count the bytes offered in that direction.
    counts : dict of str to int
        Faults injected per kind, both directions together (:attr:`FAULTS` are the keys).
    """

    FAULTS = ("flip", "drop", "dup", "truncate")
    DIRECTIONS = ("write", "read")

    def __init__(self, inner: Transport, rate: float, seed: int = 0, faults=FAULTS,
                 directions=("write",)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in 0..1, not {rate!r}")
        bad = set(faults) - set(self.FAULTS)
        if bad or not faults:
            raise ValueError(f"faults must be some of {', '.join(self.FAULTS)}, not {sorted(bad)!r}")
        if isinstance(directions, str):
            directions = (directions,)
        if not directions or set(directions) - set(self.DIRECTIONS):
            raise ValueError(f"directions must be some of {', '.join(self.DIRECTIONS)}, not {directions!r}")
        self.inner, self.rate, self.faults = inner, rate, tuple(faults)
        self.directions = tuple(directions)
        self.rng = random.Random(seed)
        self.read_rng = random.Random(f"read:{seed}")
        self.log: list[tuple[int, str]] = []
        self.read_log: list[tuple[int, str]] = []
        self.counts = dict.fromkeys(self.FAULTS, 0)
        self._offset = 0
        self._read_offset = 0
        self._pending = bytearray()

    @property
    def total(self) -> int:
        """Faults injected so far, both directions."""
        return sum(self.counts.values())

    def _corrupt(self, data: bytes, rng: random.Random, base: int, log: list) -> bytes:
        out = bytearray()
        for k, b in enumerate(data):
            if rng.random() >= self.rate:
                out.append(b)
                continue
            fault = rng.choice(self.faults)
            log.append((base + k, fault))
            self.counts[fault] += 1
            if fault == "flip":
                out.append(b ^ (1 << rng.randrange(8)))
            elif fault == "dup":
                out += bytes((b, b))
            elif fault == "truncate":
                break
            # "drop": nothing
        return bytes(out)

    def corrupt(self, data: bytes) -> bytes:
        """Apply faults to ``data`` as :meth:`write` would (advances the random state)."""
        base = self._offset
        self._offset += len(data)
        return self._corrupt(data, self.rng, base, self.log)

    def write(self, data: bytes) -> None:
        self.inner.write(self.corrupt(data) if "write" in self.directions else data)

    def read(self, n: int, timeout: float | None = 0.0) -> bytes:
        """Up to ``n`` bytes; if every byte of a chunk was lost, reads on (without waiting) while
        the inner transport has more, so a corrupted chunk does not look like a timeout."""
        if "read" not in self.directions:
            return self.inner.read(n, timeout)
        wait = timeout
        while not self._pending:
            data = self.inner.read(n, wait)
            if not data:
                return b""
            base = self._read_offset
            self._read_offset += len(data)
            self._pending += self._corrupt(data, self.read_rng, base, self.read_log)
            wait = 0.0
        out = bytes(self._pending[:n])
        del self._pending[:n]
        return out

    def close(self) -> None:
        self.inner.close()


class SerialTransport(Transport):
    """A serial port through pyserial, 8N1, no flow control.

    ``port`` is a device (``/dev/ttyUSB1``, ``COM5``) or any pyserial URL (``socket://host:port``
    for a simulator behind a TCP socket, ``loop://`` for a self-test): it is opened with
    ``serial.serial_for_url``. Tested through ``loop://`` only, **not yet against a board**. The
    iCEBreaker's FT2232H exposes the FPGA UART on its second interface (usually the
    higher-numbered ``ttyUSB``). ``write_timeout`` bounds a blocked write; :meth:`read` waits at
    most ``timeout`` for the first byte, then returns whatever else is already buffered (up to ``n``).
    """

    def __init__(self, port: str, baud: int = 3_000_000, write_timeout: float = 1.0):
        import serial  # pyserial; imported here so the rest of the module works without it

        self._serial = serial.serial_for_url(port, baudrate=baud, bytesize=serial.EIGHTBITS,
                                             parity=serial.PARITY_NONE, stopbits=serial.STOPBITS_ONE,
                                             xonxoff=False, rtscts=False, dsrdtr=False,
                                             timeout=0, write_timeout=write_timeout)
        self._serial.reset_input_buffer()

    def write(self, data: bytes) -> None:
        self._serial.write(data)
        self._serial.flush()

    def read(self, n: int, timeout: float | None = 0.0) -> bytes:
        s = self._serial
        s.timeout = timeout
        first = s.read(1)
        if not first:
            return b""
        s.timeout = 0
        return first + s.read(min(n - 1, s.in_waiting)) if n > 1 else first

    def close(self) -> None:
        self._serial.close()

"""The host driver: one :class:`Board` API over every protocol backend (``rtl``, ``board-model``, ``serial:PORT``).

A :class:`Board` owns a :class:`~spikeloop.host.transport.Transport` and speaks the protocol of
:mod:`spikeloop.protocol` over it, stop-and-wait: one request outstanding, a timeout on every
read, the *same* frame (same ``seq``) retransmitted after a timeout, a corrupted reply or a NAK
the protocol marks retransmittable, replies with another ``seq`` discarded as stale. The device's
duplicate rule makes a retransmission safe even when only the reply was lost. Every failure is a
:class:`DriverError` subclass saying what failed. Frames are hex-dumped at level :data:`TRACE`
(5) on the ``spikeloop.link`` logger. See ``docs/host.md``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence

import numpy as np

from typing import TYPE_CHECKING

from spikeloop import protocol as P
from spikeloop.params import ErrorSource, Params
from spikeloop.protocol import RETRANSMIT, Command, Nak, ResetMask

if TYPE_CHECKING:
    from spikeloop.hdl.config import SoCConfig

__all__ = ["Board", "DriverError", "LinkTimeout", "NakError", "RetriesExhausted", "IdentityMismatch",
           "BackendError", "ProtocolError", "BoardInUse", "SessionLost", "TRACE", "RTL_TIMEOUT", "log"]

#: Logging level below DEBUG at which every frame sent and received is hex-dumped.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")
log = logging.getLogger("spikeloop.link")

#: Reply timeout of the ``rtl`` backend unless given: simulated bytes take ~0.2 ms of wall time
#: each (about 60 times a 3 Mbaud board), so an IDENTIFY reply alone takes a quarter second.
RTL_TIMEOUT = 30.0
_U32 = P.WordFormat(32, False)
_REG_BY_ADDR = {r.addr: r for r in P.REGISTERS}
_BOARD_KW = ("timeout", "retries", "name", "payload_limit", "steps_per_frame", "expect", "expect_lanes",
             "takeover", "session", "nonce")


# ====================================================================== errors
class DriverError(Exception):
    """Base of every error the driver raises about the link or the device."""


class LinkTimeout(DriverError):
    """No reply arrived within the timeout (and no retries were allowed)."""


class NakError(DriverError):
    """The device refused a request (nothing was applied).

    Members
    -------
    reason : Nak or int
    command : Command or int
        The refused request.
    """

    def __init__(self, message: str, reason, command):
        super().__init__(message)
        self.reason, self.command = reason, command


class RetriesExhausted(DriverError):
    """Every attempt of a request failed; ``attempts`` were made, ``last`` is the last failure."""

    def __init__(self, message: str, attempts: int, last: DriverError | None):
        super().__init__(message)
        self.attempts, self.last = attempts, last


class IdentityMismatch(DriverError):
    """IDENTIFY was malformed, of another protocol version, or not the configuration expected."""


class BackendError(DriverError):
    """A backend cannot be opened (missing module or package, serial port not available)."""


class BoardInUse(DriverError):
    """Another host holds the board's session (IDENTIFY OPEN was answered IN_USE, nothing changed)."""


class SessionLost(DriverError):
    """The device no longer had this host's session: it was reset, or another host took the board
    over. ``reopened`` tells whether the driver could open a new session (then the board is usable,
    but its state is no longer the one this host left)."""

    def __init__(self, message: str, reopened: bool):
        super().__init__(message)
        self.reopened = reopened


class ProtocolError(DriverError):
    """The device sent a well-framed reply whose content violates the protocol."""


def _name(cmd) -> str:
    try:
        return Command(cmd).name
    except ValueError:
        return f"0x{int(cmd):02X}"


def _reason(r) -> str:
    return r.name if isinstance(r, Nak) else f"0x{int(r):02X}"


# ====================================================================== the driver
class Board:
    """A spikeloop device behind a transport: registers, memories, batched steps.

    Parameters
    ----------
    transport : Transport
        Owned by the board once it is constructed (:meth:`close` closes it; :meth:`open` also
        closes it when connecting fails).
    timeout : float
        Seconds to wait for each reply before retransmitting.
    retries : int
        Retransmissions allowed per request (so ``retries + 1`` attempts).
    name : str
        Prefix of log lines and error messages.
    payload_limit : int, optional
        Use frames with at most this many payload bytes even if the device takes more (a noisy
        link loses fewer long frames); at least 64.
    steps_per_frame : int, optional
        K of each RUN_STEPS request (default: the most that fit the payload and ``max_steps``).
    expect : Params, optional
        Raise :class:`IdentityMismatch` unless the device reports exactly these parameters.
    expect_lanes : int, optional
        Likewise for the number of lanes.
    session : bool
        Open a session (default): IDENTIFY OPEN with a fresh ``nonce``; every later frame carries
        the session the device assigned, so frames of another host or an earlier session are
        refused (``docs/protocol.md``, Sessions). ``False`` talks without one (only to a board
        that has none open, e.g. to probe it).
    takeover : bool
        Open the session even if another host holds one (its frames are refused from then on).
    nonce : int, optional
        The u32 naming this host's OPEN (default: random); fixed in tests and transcripts.

    Members
    -------
    identity : Identity
    params : Params
    lanes : int
    max_payload : int
        Payload bytes per frame this driver uses (device limit, or ``payload_limit``).
    steps_per_frame : int
        K of each RUN_STEPS request.
    step_count : int
        STEP_COUNT reported by the last RUN_STEPS reply.
    stats : dict
        ``requests``, ``retries``, ``timeouts``, ``naks`` (received), ``corrupt_replies``,
        ``stale_replies``, ``duplicate_replies``, ``resyncs``, ``bytes_sent``, ``bytes_received``.

    Raises
    ------
    IdentityMismatch
        See ``expect``; also for an IDENTIFY reply that :func:`~spikeloop.protocol.unpack_identify`
        refuses (malformed JSON, lanes 0, a ``max_payload`` too small to split transfers into) or
        another protocol version.
    LinkTimeout, RetriesExhausted
        If the device does not answer IDENTIFY.
    BoardInUse
        If another host holds a session and ``takeover`` is false.

    Every method that talks to the device raises only :class:`DriverError` subclasses for what
    the device sends: :class:`ProtocolError` for an ACK whose length is not
    :func:`~spikeloop.protocol.ack_payload_size` of its request (so a write is done only on a
    correct ACK) and for read words outside their format.
    """

    def __init__(self, transport, *, timeout: float = 1.0, retries: int = 8, name: str = "",
                 payload_limit: int | None = None, steps_per_frame: int | None = None,
                 expect: Params | None = None,
                 expect_lanes: int | None = None, session: bool = True, takeover: bool = False,
                 nonce: int | None = None):
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative integer, not {retries!r}")
        if payload_limit is not None and (isinstance(payload_limit, bool) or not isinstance(payload_limit, int)
                                          or not 64 <= payload_limit <= 0xFFFF):
            raise ValueError(f"payload_limit must be an integer in 64..65535, not {payload_limit!r}")
        self.transport = transport
        self.timeout, self.retries, self.name = float(timeout), retries, str(name)
        self._decoder = P.FrameDecoder(max_payload=0xFFFF)   # the host buffers any reply
        self._seq = 0
        self._last_done: int | None = None
        self._spaces: dict[str, P.MemorySpace] | None = None
        self.step_count = 0
        self.stats = dict.fromkeys(("requests", "retries", "timeouts", "naks", "corrupt_replies",
                                    "stale_replies", "duplicate_replies", "resyncs", "bytes_sent",
                                    "bytes_received"), 0)
        if nonce is not None and (isinstance(nonce, bool) or not isinstance(nonce, int)
                                  or not 0 <= nonce <= 0xFFFFFFFF):
            raise ValueError(f"nonce must be an integer in 0..2**32-1, not {nonce!r}")
        self.max_payload = 0xFFFF
        self.session = 0
        self._nonce = nonce
        ident = self._open(takeover) if session else self._identity(self._transact(Command.IDENTIFY))
        if expect is not None and ident.params != expect:
            a, b = expect.to_dict(), ident.params.to_dict()
            diff = ", ".join(f"{k}: {b.get(k)!r} (expected {a.get(k)!r})" for k in sorted(set(a) | set(b))
                             if a.get(k) != b.get(k))
            raise IdentityMismatch(f"{self._who}device parameters differ: {diff}")
        if expect_lanes is not None and ident.lanes != expect_lanes:
            raise IdentityMismatch(f"{self._who}device has {ident.lanes} lanes, expected {expect_lanes}")
        self.identity, self.params, self.lanes = ident, ident.params, ident.lanes
        self.max_payload = min(ident.max_payload, payload_limit or 0xFFFF)
        k = P.max_steps_per_frame(self.params, self.max_payload)
        if ident.max_steps:
            k = min(k, ident.max_steps)
        if k < 1:
            raise IdentityMismatch(f"{self._who}a RUN_STEPS of one step does not fit {self.max_payload} B")
        if steps_per_frame is not None:
            if isinstance(steps_per_frame, bool) or not isinstance(steps_per_frame, int) \
                    or not 1 <= steps_per_frame <= k:
                raise ValueError(f"steps_per_frame must be an integer in 1..{k} for this device, "
                                 f"not {steps_per_frame!r}")
            k = steps_per_frame
        self.steps_per_frame = k

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, spec: str | None = None, params: Params | None = None, lanes: int = 1, *,
             config: SoCConfig | None = None, **kw) -> "Board":
        """Open a protocol backend of the registry (:mod:`spikeloop.host.backends`) by name:
        ``"rtl"`` (the default), ``"board-model"`` or ``"serial:PORT"``.

        The ``rtl`` / ``board-model`` device is built from ``config`` (a
        :class:`~spikeloop.hdl.config.SoCConfig`), or from ``params`` (default ``Params()``),
        ``lanes`` and the keywords ``in_width``, ``single_port``, ``clock_hz``, ``baud`` and
        ``max_payload``. For ``serial`` the board's identity is checked against either;
        ``serial:auto`` opens the one board :func:`~spikeloop.host.discovery.auto_port` finds
        (``probe_timeout`` seconds per port). ``record_link=PATH`` records the session byte for
        byte into a link transcript (:class:`~spikeloop.host.linklog.RecordingTransport`), written
        when the board is closed.
        Keywords of :class:`Board` (``timeout`` — default :data:`RTL_TIMEOUT` for ``rtl`` —,
        ``retries``, ``name``, ``payload_limit``, ``steps_per_frame``) go to the driver, the rest to
        the backend: ``max_steps`` (board-model), ``open_rtl``'s (``divisor``, ``calibrate_s``,
        ...), ``SerialTransport``'s (``baud``).
        """
        from spikeloop.host.backends import lookup

        backend, port = lookup(spec, protocol=True)
        board_kw = {k: kw.pop(k) for k in _BOARD_KW if k in kw}
        board_kw.setdefault("name", spec or backend.name)
        if backend.takes_port:
            expect, expect_lanes = (config.params, config.lanes) if config is not None else (params, lanes)
            if expect is not None:
                board_kw.setdefault("expect", expect)
                board_kw.setdefault("expect_lanes", expect_lanes)
            soc = None
        else:
            soc = _soc_config(params, config, lanes, kw)
            board_kw.setdefault("expect", soc.params)
            board_kw.setdefault("expect_lanes", soc.lanes)
            if backend.name == "rtl":
                board_kw.setdefault("timeout", RTL_TIMEOUT)
        record_link = kw.pop("record_link", None)
        if port == "auto":
            from spikeloop.host.discovery import auto_port
            port = auto_port(timeout=kw.pop("probe_timeout", 0.5), baud=kw.get("baud"))
        transport = backend.open_transport(soc, port, **kw)
        if record_link is not None:
            from spikeloop.host.linklog import RecordingTransport
            transport = RecordingTransport(transport, record_link, source=board_kw["name"],
                                           config=_built_config(transport, soc))
        try:
            board = cls(transport, **board_kw)
        except BaseException:
            transport.close()
            raise
        if record_link is not None and not transport.config:
            transport.config = _identity_config(board.identity)
        return board

    def close(self) -> None:
        """Release the session (IDENTIFY CLOSE, best effort) and close the transport."""
        try:
            self.release()
        finally:
            self.transport.close()

    def release(self) -> None:
        """End this host's session (IDENTIFY CLOSE, best effort), keeping the transport open."""
        try:
            if self.session:
                old, self.retries = self.retries, min(self.retries, 1)
                try:
                    self._transact(Command.IDENTIFY, P.pack_identify_request(P.IdentifyFlags.CLOSE))
                    self.session = 0
                finally:
                    self.retries = old
        except DriverError as e:
            log.debug("%sclosing the session failed (%s); the board keeps it until reset or takeover",
                      self._who, e)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        p = self.params
        return f"<Board {self.name!r}: {p.n_in}-{p.n_hidden}-{p.n_out}, {self.lanes} lane(s)>"

    # ------------------------------------------------------------------ sessions
    def _open(self, takeover: bool) -> P.Identity:
        """IDENTIFY OPEN: the device assigns the session every later frame carries."""
        nonce = self._nonce if self._nonce is not None else secrets.randbits(32)
        flags = P.IdentifyFlags.OPEN | (P.IdentifyFlags.TAKEOVER if takeover else 0)
        self.session = 0
        try:
            raw = self._transact(Command.IDENTIFY, P.pack_identify_request(flags, nonce))
        except NakError as e:
            if e.reason == Nak.IN_USE:
                raise BoardInUse(f"{self._who}the board is in use: another host holds its session "
                                 f"(open it with takeover=True, or spikeloop train --takeover, to take it over)") from None
            raise
        ident = self._identity(raw)
        if ident.nonce != nonce or ident.session == 0:
            raise IdentityMismatch(f"{self._who}IDENTIFY OPEN was answered without this host's session "
                                   f"(nonce {ident.nonce:#010x} for {nonce:#010x}, session {ident.session})")
        self.session = ident.session
        log.debug("%ssession %#06x open", self._who, self.session)
        return ident

    def _session_lost(self, where: str) -> SessionLost:
        """After BAD_SESSION: open a new session if the board is free, and say what happened."""
        old = self.session
        self._nonce = None                 # a fresh nonce: the old OPEN must not be mistaken for a retry
        try:
            self._open(takeover=False)
        except BoardInUse:
            self.session = 0
            return SessionLost(f"{where}: session {old:#06x} was taken over by another host; "
                               f"nothing of this request was executed", reopened=False)
        return SessionLost(f"{where}: the device no longer had session {old:#06x} (it was reset or the "
                           f"session was closed) and nothing of this request was executed; a new session "
                           f"{self.session:#06x} is open, but the device's state is not the one this "
                           f"host left: restart the run or resume it from its last checkpoint", reopened=True)

    # ------------------------------------------------------------------ link
    @property
    def _who(self) -> str:
        return f"{self.name}: " if self.name else ""

    def _send(self, frame: bytes, cmd, seq: int) -> None:
        if log.isEnabledFor(TRACE):
            log.log(TRACE, "%s> %s seq=%d %d B: %s", self._who, _name(cmd), seq, len(frame), frame.hex(" "))
        self.stats["bytes_sent"] += len(frame)
        self.transport.write(frame)

    def _await(self, seq: int):
        """Read until the reply to ``seq``: ("ack", payload) | ("nak", (reason, cmd)) |
        ("timeout", None) | ("corrupt", None) (a body was rejected: retransmit without waiting)."""
        deadline = time.monotonic() + self.timeout
        trace = log.isEnabledFor(TRACE)
        while True:
            left = deadline - time.monotonic()
            data = self.transport.read(1 << 16, max(left, 0.0)) if left > 0 else b""
            if not data:
                self.stats["timeouts"] += 1
                return "timeout", None
            self.stats["bytes_received"] += len(data)
            frames = self._decoder.feed(data)
            rejects = self._decoder.pop_rejects()
            if trace:
                log.log(TRACE, "%s< %d B: %s", self._who, len(data), data.hex(" "))
            for why, guess in rejects:
                self.stats["corrupt_replies"] += 1
                log.debug("%sreply rejected (%s, seq %s)", self._who, why.value, guess)
            for k, f in enumerate(frames):
                if trace:
                    log.log(TRACE, "%s< %s seq=%d payload %d B: %s", self._who, _name(f.cmd), f.seq,
                            len(f.payload), f.payload.hex(" "))
                if f.session != self.session and not (f.session == 0 and f.cmd == Command.NAK):
                    self._discard([f], None)     # another session's reply (link-level NAKs carry 0)
                    continue
                if f.cmd == Command.NAK and len(f.payload) == P.NAK_PAYLOAD.size:
                    reason, ncmd = P.unpack_nak(f.payload)
                    # a link-level NAK may carry a damaged seq: retransmitting is always safe
                    if f.seq == seq or reason in RETRANSMIT:
                        self.stats["naks"] += 1
                        self._discard(frames[k + 1:], seq)
                        return "nak", (reason, ncmd)
                if f.seq == seq and f.cmd == Command.ACK:
                    self._discard(frames[k + 1:], seq)
                    return "ack", f.payload
                self._discard([f], self._last_done)
            if rejects:
                return "corrupt", None

    def _discard(self, frames, done: int | None) -> None:
        """Count and drop replies that answer nothing outstanding (``done``: the seq just answered)."""
        for f in frames:
            key = "duplicate_replies" if f.seq == done else "stale_replies"
            self.stats[key] += 1
            log.debug("%sdiscarded %s seq=%d (%s)", self._who, _name(f.cmd), f.seq, key.split("_")[0])

    def _transact(self, cmd: Command, payload: bytes = b"") -> bytes:
        """Send one request until it is answered; the ACK payload, or a :class:`DriverError`."""
        if len(payload) > self.max_payload:
            raise ValueError(f"{_name(cmd)} payload must be at most {self.max_payload} B, not {len(payload)}")
        seq = self._seq
        frame = P.encode_frame(cmd, seq, payload, self.session)
        self.stats["requests"] += 1
        attempts = 0
        while True:
            attempts += 1
            self._send(frame, cmd, seq)
            kind, info = self._await(seq)
            where = f"{self._who}{_name(cmd)} seq {seq}"
            if kind == "ack":
                self._seq, self._last_done = P.next_seq(seq), seq       # the device accepted it
                want = None if cmd == Command.IDENTIFY else P.ack_payload_size(self.params, cmd, payload)
                if want is not None and len(info) != want:
                    raise ProtocolError(f"{where}: the ACK must carry {want} B, not {len(info)}")
                return info
            if kind == "nak":
                reason, _ = info
                err = NakError(f"{where}: NAK {_reason(reason)}", reason, cmd)
                if reason == Nak.BAD_SESSION and cmd != Command.IDENTIFY:
                    raise self._session_lost(where)
                if reason == Nak.BAD_SEQUENCE:
                    self._resync(seq)
                elif reason == Nak.BUSY:
                    time.sleep(min(self.timeout / 10, 0.05))      # give the device a moment
                elif reason not in RETRANSMIT:
                    if cmd != Command.IDENTIFY:       # a refused IDENTIFY is not accepted
                        self._seq, self._last_done = P.next_seq(seq), seq    # the device accepted it
                    raise err
            elif kind == "timeout":
                err = LinkTimeout(f"{where}: no reply within {self.timeout:g} s")
            else:
                err = LinkTimeout(f"{where}: reply corrupted")
            if attempts > self.retries:
                if self.retries == 0:
                    raise err
                raise RetriesExhausted(f"{where}: {attempts} attempts failed (last: {err})", attempts, err) from err
            self.stats["retries"] += 1
            log.debug("%s: retransmitting (%s)", where, err)

    def _resync(self, seq: int) -> None:
        """After BAD_SEQUENCE: IDENTIFY (always new) with ``seq − 1`` makes ``seq`` the next one."""
        prev = (seq - 1) & 0xFF
        self.stats["resyncs"] += 1
        log.debug("%sre-establishing the sequence with IDENTIFY seq %d", self._who, prev)
        self._send(P.encode_frame(Command.IDENTIFY, prev, b"", self.session), Command.IDENTIFY, prev)
        self._await(prev)        # whatever happens, the caller retransmits and counts the attempt

    # ------------------------------------------------------------------ registers
    @staticmethod
    def _reg_addr(reg) -> int:
        if isinstance(reg, str):
            return P.register(reg).addr
        if isinstance(reg, bool) or not isinstance(reg, (int, np.integer)) or not 0 <= reg <= 0xFFFF:
            raise ValueError(f"register must be a name or an address in 0..65535, not {reg!r}")
        return int(reg)

    def read_reg(self, reg, count: int = 1):
        """Register ``reg`` (name or address): an int, or a list of ``count`` consecutive ones."""
        addr = self._reg_addr(reg)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 0xFFFF - addr + 1:
            raise ValueError(f"count must be an integer in 1..{0xFFFF - addr + 1}, not {count!r}")
        out, per = [], self.max_payload // 4
        for a in range(addr, addr + count, per):
            n = min(per, addr + count - a)
            out += P.unpack_words(self._transact(Command.READ_REG, P.pack_read_reg(a, n)), _U32)
        for a, v in enumerate(out, addr):
            r = _REG_BY_ADDR.get(a)
            if r is not None and v >> r.width:
                raise ProtocolError(f"{self._who}READ_REG: {r.name} read {v}, which is wider than its "
                                    f"{r.width} bits (upper bits must read 0)")
        return out[0] if count == 1 else out

    def write_reg(self, reg, values) -> None:
        """Write one value or consecutive values from register ``reg`` (name or address)."""
        addr = self._reg_addr(reg)
        values = [values] if isinstance(values, (int, np.integer)) else list(values)
        if not values:
            raise ValueError("values must hold at least one value, not none")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= 0xFFFFFFFF:
                raise ValueError(f"register values must be integers in 0..4294967295, not {v!r}")
        per = (self.max_payload - P.REG_REQ.size) // 4
        for k in range(0, len(values), per):
            self._transact(Command.WRITE_REG, P.pack_write_reg(addr + k, [int(v) for v in values[k:k + per]]))

    # ------------------------------------------------------------------ memories
    @property
    def spaces(self) -> dict[str, P.MemorySpace]:
        """The memory spaces this device has (probed once: a space it lacks answers BAD_ADDRESS)."""
        if self._spaces is None:
            found = {}
            for sp in P.spaces_for(self.params):
                try:
                    self._transact(Command.READ_MEM, P.pack_read_mem(sp.id, 0, 1))
                except NakError as e:
                    if e.reason != Nak.BAD_ADDRESS:
                        raise
                    continue
                found[sp.name] = sp
            self._spaces = found
        return self._spaces

    def _space(self, name: str) -> P.MemorySpace:
        sp = self.spaces.get(name)
        if sp is None:
            raise KeyError(f"space must be one of {', '.join(self.spaces)}, not {name!r}")
        return sp

    def read_mem(self, space: str, start: int = 0, count: int | None = None) -> np.ndarray:
        """Words ``start … start + count − 1`` of ``space`` (all from ``start`` if ``count`` is None)."""
        sp = self._space(space)
        depth, fmt = sp.depth(self.params), sp.word(self.params)
        start, count = self._range(space, depth, start, count)
        per = min(self.max_payload // fmt.nbytes, 0xFFFF)
        out = []
        for a in range(start, start + count, per):
            n = min(per, start + count - a)
            pl = self._transact(Command.READ_MEM, P.pack_read_mem(sp.id, a, n))
            out += P.unpack_words(pl, fmt)
        bad = [(i, v) for i, v in enumerate(out, start) if not fmt.min <= v <= fmt.max]
        if bad:
            raise ProtocolError(f"{self._who}READ_MEM: word {bad[0][0]} of {space} is {bad[0][1]}, "
                                f"outside its format {fmt.min}..{fmt.max}")
        return np.array(out, np.int64)

    def write_mem(self, space: str, words, start: int = 0) -> None:
        """Write ``words`` (integers in the space's format) into ``space`` from ``start``."""
        sp = self._space(space)
        depth, fmt = sp.depth(self.params), sp.word(self.params)
        w = np.asarray(words)
        if w.dtype == bool:
            w = w.astype(np.int64)
        if w.size and not np.issubdtype(w.dtype, np.integer):
            raise ValueError(f"words of {space} must be integers, not {w.dtype}")
        w = w.astype(np.int64).reshape(-1)
        start, count = self._range(space, depth, start, len(w))
        if count and (w.min() < fmt.min or w.max() > fmt.max):
            bad = int(w[(w < fmt.min) | (w > fmt.max)][0])
            raise ValueError(f"words of {space} must be in {fmt.min}..{fmt.max}, not {bad}")
        per = min((self.max_payload - P.MEM_REQ.size) // fmt.nbytes, 0xFFFF)
        for k in range(0, count, per):
            chunk = w[k:k + per].tolist()
            self._transact(Command.WRITE_MEM, P.pack_write_mem(sp.id, start + k, chunk, fmt))

    @staticmethod
    def _range(space, depth, start, count):
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start <= depth:
            raise ValueError(f"start of {space} must be in 0..{depth}, not {start!r}")
        if count is None:
            count = depth - start
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 0 <= count <= depth - start:
            raise ValueError(f"count of {space} from {start} must be in 0..{depth - start}, not {count!r}")
        return int(start), int(count)

    def _shape(self, sp: P.MemorySpace) -> tuple[int, ...]:
        p = self.params
        if sp.kind == "synapse":
            n_pre, n_post = (p.n_in, p.n_hidden) if sp.layer == "hid" else ((p.n_hidden or p.n_in), p.n_out)
            return (n_post, n_pre)
        if sp.kind == "feedback":
            return (p.n_hidden, p.n_out)
        return (sp.depth(p),)

    def state(self) -> dict[str, np.ndarray]:
        """Every variable the board holds, shaped like ``GoldenModel.snapshot()`` (batch axis of 1);
        plus ``fb`` (``(1, n_hidden, n_out)``) when the board has a feedback matrix."""
        return {name: self.read_mem(name).reshape((1,) + self._shape(sp)) for name, sp in self.spaces.items()}

    def load_weights(self, weights: Sequence, feedback=None) -> None:
        """Weights per layer (``(n_post, n_pre)``, hidden layer first) and optionally B ``(n_hidden, n_out)``."""
        p = self.params
        names = ("hid.w", "out.w") if p.n_hidden else ("out.w",)
        weights = list(weights)
        if len(weights) != len(names):
            raise ValueError(f"weights must be {len(names)} array(s), one per layer, not {len(weights)}")
        arrays = []
        for name, w, (n_pre, n_post) in zip(names, weights, p.layers):
            w = np.asarray(w)
            if w.shape not in ((n_post, n_pre), (1, n_post, n_pre)):
                raise ValueError(f"{name} must have shape ({n_post}, {n_pre}), not {w.shape}")
            arrays.append((name, w))
        if feedback is not None:
            if "fb" not in self.spaces:
                raise ValueError("feedback must be None: this board has no feedback matrix "
                                 "(no hidden layer, or symmetric feedback)")
            fb = np.asarray(feedback)
            if fb.shape not in ((p.n_hidden, p.n_out), (1, p.n_hidden, p.n_out)):
                raise ValueError(f"feedback must have shape ({p.n_hidden}, {p.n_out}), not {fb.shape}")
            arrays.append(("fb", fb))
        for name, a in arrays:
            self.write_mem(name, a.reshape(-1))

    # ------------------------------------------------------------------ running
    def run(self, inputs, targets=None, errors=None) -> np.ndarray:
        """Run ``T`` steps in RUN_STEPS batches of :attr:`steps_per_frame`; ``(T, n_out)`` output spikes.

        ``inputs`` is ``(T, n_in)`` (0/1 or bool). With ``error_source = target`` pass ``targets``
        ``(T, n_out)`` (None: no target spikes); with ``host`` pass ``errors`` ``(T, n_out)``
        integers in the 'err' format (None: zero).
        """
        p = self.params
        x = self._spikes(inputs, p.n_in, "inputs")
        T = len(x)
        target_mode = p.error_source is ErrorSource.TARGET
        if target_mode:
            if errors is not None:
                raise ValueError("errors must be None when error_source is 'target' (pass targets)")
            y = np.zeros((T, p.n_out), bool) if targets is None else self._spikes(targets, p.n_out, "targets", T)
            second = np.packbits(y, axis=1, bitorder="little")
        else:
            if targets is not None:
                raise ValueError("targets must be None when error_source is 'host' (pass errors)")
            second = self._error_bytes(errors, T)
        rec = np.concatenate([np.packbits(x, axis=1, bitorder="little"), second], axis=1)
        out = np.zeros((T, p.n_out), bool)
        bo = P.bitmap_bytes(p.n_out)
        for k in range(0, T, self.steps_per_frame):
            K = min(self.steps_per_frame, T - k)
            reply = self._transact(Command.RUN_STEPS, P.RUN_REQ.pack(K) + rec[k:k + K].tobytes())
            self.step_count, k_got = P.RUN_REPLY.unpack_from(reply)
            if k_got != K:
                raise ProtocolError(f"{self._who}RUN_STEPS: the reply reports {k_got} steps, not {K}")
            bits = np.frombuffer(reply, np.uint8, offset=P.RUN_REPLY.size).reshape(K, bo)
            out[k:k + K] = np.unpackbits(bits, axis=1, bitorder="little")[:, :p.n_out].astype(bool)
        return out

    @staticmethod
    def _spikes(a, n, what, T=None) -> np.ndarray:
        a = np.asarray(a)
        if a.ndim != 2 or a.shape[1] != n or (T is not None and a.shape[0] != T):
            raise ValueError(f"{what} must have shape ({'T' if T is None else T}, {n}), not {a.shape}")
        if a.dtype != bool:
            if not np.issubdtype(a.dtype, np.number) or ((a != 0) & (a != 1)).any():
                raise ValueError(f"{what} must be bool or 0/1")
            a = a.astype(bool)
        return a

    def _error_bytes(self, errors, T) -> np.ndarray:
        p = self.params
        fmt = P.WordFormat(p.formats["err"].bits, True)
        if errors is None:
            return np.zeros((T, p.n_out * fmt.nbytes), np.uint8)
        e = np.asarray(errors)
        if e.shape != (T, p.n_out) or not np.issubdtype(e.dtype, np.integer):
            raise ValueError(f"errors must be integers of shape ({T}, {p.n_out}), not {e.dtype} {e.shape}")
        if e.size and (e.min() < fmt.min or e.max() > fmt.max):
            raise ValueError(f"errors must be in {fmt.min}..{fmt.max} (the 'err' format)")
        raw = e.astype("<i8").view(np.uint8).reshape(T, p.n_out, 8)[:, :, :fmt.nbytes]
        return np.ascontiguousarray(raw).reshape(T, p.n_out * fmt.nbytes)

    def reset(self, mask=P.RESET_ALL) -> None:
        """RESET_STATE: clear what ``mask`` (:class:`ResetMask`) names; weights and B stay."""
        if isinstance(mask, bool) or not isinstance(mask, (int, np.integer)) or not 0 <= mask <= 0x0F:
            raise ValueError(f"mask must be a ResetMask (0..15), not {mask!r}")
        self._transact(Command.RESET_STATE, bytes([int(mask)]))
        if mask & ResetMask.COUNTERS:
            self.step_count = 0

    def identify(self) -> P.Identity:
        """Ask again (also re-establishes the sequence on the device)."""
        return self._identity(self._transact(Command.IDENTIFY))

    def _identity(self, raw: bytes) -> P.Identity:
        """Decode an IDENTIFY reply; any defect is an :class:`IdentityMismatch`, never a ValueError."""
        if len(raw) >= P.SESSION_HEAD.size + P.IDENT.size:
            magic, version = P.IDENT.unpack_from(raw, P.SESSION_HEAD.size)[:2]
            if magic == P.MAGIC and version != P.PROTOCOL_VERSION:    # its JSON may differ too: say why
                raise IdentityMismatch(f"{self._who}device speaks protocol version {version}, "
                                       f"this driver {P.PROTOCOL_VERSION}")
        try:
            return P.unpack_identify(raw)
        except ValueError as e:
            raise IdentityMismatch(f"{self._who}IDENTIFY reply is not a spikeloop identity: {e}") from None


# ====================================================================== backends
_SOC_KW = ("in_width", "single_port", "clock_hz", "baud", "max_payload")


def _soc_config(params, config, lanes: int, kw: dict):
    """The SoCConfig a simulated device is built from; pops its keywords from ``kw``."""
    from spikeloop.hdl.config import SoCConfig

    if config is not None:
        if not isinstance(config, SoCConfig):
            raise TypeError(f"config must be a SoCConfig, not {type(config).__name__}")
        given = [k for k in _SOC_KW if k in kw] + (["params"] if params is not None else []) \
            + (["lanes"] if lanes != 1 else [])
        if given:
            raise TypeError(f"config already holds params, lanes and {', '.join(_SOC_KW)}; "
                            f"do not pass {', '.join(given)} as well")
        return config
    if params is not None and not isinstance(params, Params):
        raise TypeError(f"params must be a Params, not {type(params).__name__}")
    soc = {k: kw.pop(k) for k in _SOC_KW if k in kw}
    return SoCConfig.build(params or Params(), lanes, soc.pop("in_width", None), **soc)


def _built_config(transport, soc) -> dict:
    """The configuration a simulated device was built from (rtl's, with its baud), for transcripts."""
    built = getattr(transport, "config", None) or soc
    return built.to_dict() if built is not None else {}


def _identity_config(ident) -> dict:
    """A board's configuration as far as IDENTIFY tells it (stream width and memory layout are
    the build defaults: IDENTIFY does not report them)."""
    from spikeloop.hdl.config import SoCConfig
    try:
        return SoCConfig.build(ident.params, ident.lanes, clock_hz=ident.clock_hz, baud=ident.baud,
                               max_payload=ident.max_payload).to_dict()
    except ValueError:
        return {}

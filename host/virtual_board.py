"""The ``board-model`` backend: the device side of the link protocol, in Python, over the golden model.

:class:`VirtualBoard` is the reference for the gateware protocol engine: bytes in, reply bytes out,
with the same receiver (:class:`~spikeloop.protocol.FrameDecoder`), the same sequence rule
(:class:`~spikeloop.protocol.SequenceTracker`), every command, every NAK reason, every register
and the memory spaces the RTL ``Core`` holds. What it answers for which fault, and in which order
it checks a request, is written down in ``docs/protocol.md`` ("Device behaviour"); the tests in
``tests/test_virtual_board.py`` pin each rule.

:class:`ModelTransport` puts a board behind the :class:`~spikeloop.host.transport.Transport`
interface, so the driver (:mod:`spikeloop.host.board`) talks to it as to a serial port.
"""

from __future__ import annotations

import numpy as np

from spikeloop import protocol as P
from spikeloop.host.transport import Transport, TransportClosed
from spikeloop.hdl.config import SoCConfig
from spikeloop.params import ErrorSource, Params
from spikeloop.protocol import Command, Nak, ResetMask, SeqVerdict
from spikeloop.sim.golden import GoldenModel

__all__ = ["VirtualBoard", "ModelTransport", "LINK_COUNTERS", "transcript", "boundary_transcript",
           "boundary_values"]

#: Registers cleared by ``RESET_STATE`` with ``ResetMask.LINK`` (and counted by the receiver).
LINK_COUNTERS = ("FRAMES_OK", "CRC_ERRORS", "FRAMING_ERRORS", "LENGTH_ERRORS", "RESYNCS",
                 "GARBAGE_BYTES", "NAKS_SENT", "DUPLICATES", "UART_OVERRUNS")
#: Counters whose being non-zero sets STATUS bit 2 ("a link error occurred").
_ERROR_COUNTERS = ("CRC_ERRORS", "FRAMING_ERRORS", "LENGTH_ERRORS", "UART_OVERRUNS")
#: Register <- FrameDecoder counter(s) it mirrors.
_DECODER_COUNTERS = {
    "FRAMES_OK": ("frames_ok",), "CRC_ERRORS": ("crc_errors",), "FRAMING_ERRORS": ("framing_errors",),
    "LENGTH_ERRORS": ("length_errors", "oversize_errors"), "RESYNCS": ("resyncs",),
    "GARBAGE_BYTES": ("garbage_bytes",),
}
_COUNTERS_RESET = ("STEP_COUNT", "CYCLES", "CHUNK_PHASE", "CHUNK_COUNT")
_LEARNING_WORDS = ("el", "elf", "m", "q")
_DYNAMIC_WORDS = ("U", "I", "ref", "sigma", "z", "zh", "e", "rate", "racc")
_STATUS_LINK_ERROR = 0x04


class _Refuse(Exception):
    """A request fails validation: answer NAK ``reason`` (nothing has been applied)."""

    def __init__(self, reason: Nak):
        super().__init__(reason.name)
        self.reason = reason


class _CoreModel(GoldenModel):
    """The golden model with its chunk end triggered by the board's CHUNK_PHASE register.

    The golden model ends a chunk when its own step counter is a multiple of ``chunk_steps``; the
    Core keeps ``CHUNK_PHASE`` as a separate, host-writable counter. :meth:`step` therefore skips
    the chunk-end pass and :class:`VirtualBoard` runs it (same order: after every learn pass).
    """

    chunk_end_enabled = False

    def chunk_end_pass(self, L):
        if self.chunk_end_enabled:
            super().chunk_end_pass(L)

    def end_chunk(self):
        self.chunk_end_enabled = True
        try:
            for L in self.layers:
                self.chunk_end_pass(L)
        finally:
            self.chunk_end_enabled = False


def _check_int(name, v, lo, hi):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, not {v!r}")
    return int(v)


class VirtualBoard:
    """A board answering the link protocol from the golden model (batch 1), like the Core after reset.

    Parameters
    ----------
    config : SoCConfig
        The SoC modelled: its Core's lanes set ``CYCLES`` and the spaces held, its ``clock_hz``
        and ``baud`` are reported by IDENTIFY and the ``CLOCK_HZ`` / ``BAUD`` registers, its
        ``max_payload`` is the largest request payload accepted (the receive buffer) and bounds
        read replies.
    max_steps : int
        Largest K per RUN_STEPS (0: whatever fits ``max_payload``).

    Members
    -------
    identity : Identity
        What IDENTIFY reports.
    model : GoldenModel
        The state; every word starts at zero (weights and feedback included).
    spaces : dict of str to MemorySpace
        The memory spaces this board exposes: those of :func:`spikeloop.protocol.spaces_for` that
        the Core of ``config`` holds (``config.core.map.names()``).
    decoder : FrameDecoder
    tracker : SequenceTracker
    busy : int
        Test hook: the next ``busy`` requests are answered NAK ``BUSY`` (nothing applied).
    """

    def __init__(self, config: SoCConfig, *, max_steps: int = 0):
        if not isinstance(config, SoCConfig):
            hint = " (build one with SoCConfig.build(params, lanes))" if isinstance(config, Params) else ""
            raise TypeError(f"config must be a SoCConfig, not {type(config).__name__}{hint}")
        max_steps = _check_int("max_steps", max_steps, 0, 0xFFFF)
        self.config = config
        self.p = p = config.params
        self.lanes = config.lanes
        clock_hz, baud, max_payload = config.clock_hz, config.baud, config.max_payload
        self.identity = P.Identity(p, self.lanes, clock_hz, baud, max_payload, max_steps)
        self._ident_payload = P.pack_identify(self.identity)
        self.max_payload, self.max_steps = max_payload, max_steps
        self.decoder = P.FrameDecoder(max_payload=max_payload)
        self.tracker = P.SequenceTracker()
        self.sessions = P.SessionState()
        self.busy = 0
        held = set(config.core.map.names())
        self.spaces = {s.name: s for s in P.spaces_for(p) if s.name in held}
        self._by_id = {s.id: s for s in self.spaces.values()}
        self._cycles = (config.core.cycles_per_step(False), config.core.cycles_per_step(True))
        self._reg_by_addr = {r.addr: r for r in P.REGISTERS}
        self._err_fmt = P.WordFormat(p.formats["err"].bits, True)
        self._seen = {attr: 0 for attrs in _DECODER_COUNTERS.values() for attr in attrs}
        self._last_reply = None   # replay of the last accepted request: ("nak", Nak) | ("ack", bytes) | None
        self.model = self._zero_model()
        self.regs = {r.name: r.reset_value(p, clock_hz=clock_hz, baud=baud) for r in P.REGISTERS}
        self.regs["STATUS"] = 0

    def _zero_model(self) -> _CoreModel:
        p = self.p
        w = [np.zeros((1, n_post, n_pre), np.int64) for n_pre, n_post in p.layers]
        fb = np.zeros((1, p.n_hidden, p.n_out), np.int64) if p.n_hidden else None
        return _CoreModel(p, seeds=0, weights=w, feedback=fb)

    # ------------------------------------------------------------------ the byte interface
    def feed(self, data: bytes) -> bytes:
        """Receive ``data``; return every reply it caused, in order (possibly ``b""``)."""
        data = bytes(data)
        out = bytearray()
        start = 0
        while start < len(data):
            # One delimiter per piece, so replies to rejects and to frames keep the wire order.
            end = data.find(b"\x00", start)
            end = len(data) if end < 0 else end + 1
            frames = self.decoder.feed(data[start:end])
            start = end
            self._sync_counters()
            for why, seq in self.decoder.pop_rejects():
                if seq is not None:           # a body too short to hold a seq byte is only counted
                    out += self._nak(seq, why.nak)
            for f in frames:
                out += self._handle(f)
        return bytes(out)

    def _sync_counters(self):
        d = self.decoder
        for reg, attrs in _DECODER_COUNTERS.items():
            delta = 0
            for a in attrs:
                v = getattr(d, a)
                delta += v - self._seen[a]
                self._seen[a] = v
            if delta:
                self._count(reg, delta)

    def _count(self, name: str, n: int = 1):
        """Saturating add to a counter register."""
        width = P.register(name).width
        self.regs[name] = min(self.regs[name] + n, (1 << width) - 1)

    def _reply(self, cmd: int, seq: int, payload: bytes = b"", session: int = 0) -> bytes:
        """A reply carries the request's session field (0 for a link-level reject)."""
        if cmd == Command.NAK:
            self._count("NAKS_SENT")
        return P.encode_frame(cmd, seq, payload, session)

    def _nak(self, seq: int, reason: Nak, cmd: int = 0xFF, session: int = 0) -> bytes:
        return self._reply(Command.NAK, seq, P.pack_nak(reason, cmd), session)

    # ------------------------------------------------------------------ one frame
    def _handle(self, f: P.Frame) -> bytes:
        s = f.session
        if len(f.payload) > self.max_payload:
            return self._nak(f.seq, Nak.BAD_LENGTH, f.cmd, s)
        if f.cmd != Command.IDENTIFY and not self.sessions.admits(s):
            return self._nak(f.seq, Nak.BAD_SESSION, f.cmd, s)
        if self.busy > 0:
            self.busy -= 1
            return self._nak(f.seq, Nak.BUSY, f.cmd, s)
        if f.cmd == Command.IDENTIFY:
            return self._identify(f)
        verdict = self.tracker.classify(f.cmd, f.seq)
        if verdict is SeqVerdict.OUT_OF_SEQUENCE:
            return self._nak(f.seq, Nak.BAD_SEQUENCE, f.cmd, s)
        if verdict is SeqVerdict.DUPLICATE:
            self._count("DUPLICATES")
            return self._replay(f)
        try:
            apply = self._validate(f)
        except _Refuse as r:
            if r.reason is Nak.BAD_LENGTH:          # link-level: not accepted, the seq does not advance
                return self._nak(f.seq, r.reason, f.cmd, s)
            self.tracker.accept(f.cmd, f.seq)
            self._last_reply = ("nak", r.reason)
            return self._nak(f.seq, r.reason, f.cmd, s)
        self.tracker.accept(f.cmd, f.seq)
        payload = apply()
        self._last_reply = ("ack", payload) if f.cmd == Command.RUN_STEPS else None
        reply = self._reply(Command.ACK, f.seq, payload, s)
        if f.cmd == Command.RESET_STATE and f.payload[0] & ResetMask.LINK:
            self.tracker.forget()
        return reply

    def _identify(self, f: P.Frame) -> bytes:
        """IDENTIFY: always new; a refused one changes nothing (not even the sequence)."""
        try:
            flags, nonce = P.unpack_identify_request(f.payload)
        except ValueError:
            return self._nak(f.seq, Nak.BAD_LENGTH, f.cmd, f.session)
        if not P.identify_flags_ok(flags):
            return self._nak(f.seq, Nak.BAD_VALUE, f.cmd, f.session)
        why = self.sessions.identify(f.session, flags, nonce)
        if why is not None:
            return self._nak(f.seq, why, f.cmd, f.session)
        self.tracker.accept(f.cmd, f.seq)
        self._last_reply = None
        head = P.SESSION_HEAD.pack(nonce, self.sessions.session)
        return self._reply(Command.ACK, f.seq, head + self._ident_payload[P.SESSION_HEAD.size:], f.session)

    def _replay(self, f: P.Frame) -> bytes:
        """Answer a retransmission without executing it again."""
        last, s = self._last_reply, f.session
        if last is not None and last[0] == "nak":
            return self._nak(f.seq, last[1], f.cmd, s)
        if f.cmd == Command.RUN_STEPS:
            return self._reply(Command.ACK, f.seq, last[1], s)
        if f.cmd in (Command.READ_REG, Command.READ_MEM):     # side-effect free: read again
            try:
                return self._reply(Command.ACK, f.seq, self._validate(f)(), s)
            except _Refuse as r:                              # its payload fails now: say why
                return self._nak(f.seq, r.reason, f.cmd, s)
        return self._reply(Command.ACK, f.seq, b"", s)         # writes, RESET_STATE: a bare ACK

    def _validate(self, f: P.Frame):
        """Check ``f`` completely; return a function that applies it and returns the ACK payload."""
        try:
            cmd = Command(f.cmd)
        except ValueError:
            raise _Refuse(Nak.BAD_COMMAND) from None
        if not cmd.is_request:
            raise _Refuse(Nak.BAD_COMMAND)
        return getattr(self, f"_cmd_{cmd.name.lower()}")(f.payload)

    # ------------------------------------------------------------------ commands
    def _reg_range(self, pl: bytes, write: bool):
        try:
            addr, count, values = P.unpack_reg_request(pl, write)
        except ValueError:
            raise _Refuse(Nak.BAD_LENGTH) from None
        regs = [self._reg_by_addr.get(a) for a in range(addr, addr + count)]
        if any(r is None for r in regs) or (write and any(r.access is P.Access.RO for r in regs)):
            raise _Refuse(Nak.BAD_ADDRESS)
        if count == 0 or (not write and 4 * count > self.max_payload):
            raise _Refuse(Nak.BAD_VALUE)
        return regs, values

    def _cmd_read_reg(self, pl: bytes):
        regs, _ = self._reg_range(pl, False)
        return lambda: P.pack_words([self.reg(r.name) for r in regs], P.WordFormat(32, False))

    def _cmd_write_reg(self, pl: bytes):
        regs, values = self._reg_range(pl, True)
        values = [v & ((1 << r.width) - 1) for r, v in zip(regs, values)]
        if any(v > P.register_max(r, self.p) for r, v in zip(regs, values)):
            raise _Refuse(Nak.BAD_VALUE)

        def apply():
            for r, v in zip(regs, values):
                if r.name == "R0":
                    self.model.r0_q = v
                self.regs[r.name] = v
            return b""
        return apply

    def _mem_head(self, pl: bytes):
        try:
            sid, start, count, data = P.unpack_mem_request(pl)
        except ValueError:
            raise _Refuse(Nak.BAD_LENGTH) from None
        sp = self._by_id.get(sid)
        if sp is None:
            raise _Refuse(Nak.BAD_ADDRESS)
        return sp, start, count, data

    def _mem_range(self, sp, start, count):
        if start + count > sp.depth(self.p):
            raise _Refuse(Nak.BAD_ADDRESS)
        if count == 0:
            raise _Refuse(Nak.BAD_VALUE)

    def _cmd_read_mem(self, pl: bytes):
        sp, start, count, data = self._mem_head(pl)
        if data:
            raise _Refuse(Nak.BAD_LENGTH)
        self._mem_range(sp, start, count)
        fmt = sp.word(self.p)
        if count * fmt.nbytes > self.max_payload:
            raise _Refuse(Nak.BAD_VALUE)
        return lambda: P.pack_words(self.read_space(sp.name)[start:start + count].tolist(), fmt)

    def _cmd_write_mem(self, pl: bytes):
        sp, start, count, data = self._mem_head(pl)
        fmt = sp.word(self.p)
        if len(data) != count * fmt.nbytes:
            raise _Refuse(Nak.BAD_LENGTH)
        self._mem_range(sp, start, count)
        words = P.unpack_words(data, fmt)   # sign-extended from whole bytes: check the word's width
        if any(not fmt.min <= w <= fmt.max for w in words):
            raise _Refuse(Nak.BAD_VALUE)
        return lambda: self.write_space(sp.name, np.array(words, np.int64), start) or b""

    def _cmd_run_steps(self, pl: bytes):
        p = self.p
        if len(pl) < P.RUN_REQ.size:
            raise _Refuse(Nak.BAD_LENGTH)
        (K,) = P.RUN_REQ.unpack_from(pl)
        bi, bo = P.bitmap_bytes(p.n_in), P.bitmap_bytes(p.n_out)
        target = p.error_source is ErrorSource.TARGET
        second = bo if target else p.n_out * self._err_fmt.nbytes
        rec = bi + second
        if len(pl) != P.RUN_REQ.size + K * rec:
            raise _Refuse(Nak.BAD_LENGTH)
        if K == 0 or (self.max_steps and K > self.max_steps) or P.RUN_REPLY.size + K * bo > self.max_payload:
            raise _Refuse(Nak.BAD_VALUE)
        body = np.frombuffer(pl, np.uint8, offset=P.RUN_REQ.size).reshape(K, rec)
        x = np.unpackbits(body[:, :bi], axis=1, bitorder="little")[:, :p.n_in].astype(bool)
        if target:
            y = np.unpackbits(body[:, bi:], axis=1, bitorder="little")[:, :p.n_out].astype(bool)
        else:
            nb = self._err_fmt.nbytes
            raw = body[:, bi:].reshape(K, p.n_out, nb).astype(np.int64)
            y = sum(raw[:, :, k] << (8 * k) for k in range(nb))
            y = np.where(y >= 1 << (8 * nb - 1), y - (1 << (8 * nb)), y)
            if (y < self._err_fmt.min).any() or (y > self._err_fmt.max).any():
                raise _Refuse(Nak.BAD_VALUE)
        return lambda: self._run(x, y, target)

    def _cmd_reset_state(self, pl: bytes):
        if len(pl) != 1:
            raise _Refuse(Nak.BAD_LENGTH)
        mask = pl[0]
        if mask & ~int(ResetMask.DYNAMICS | ResetMask.LEARNING | ResetMask.COUNTERS | ResetMask.LINK):
            raise _Refuse(Nak.BAD_VALUE)
        return lambda: self.reset(ResetMask(mask)) or b""

    # ------------------------------------------------------------------ state
    def _run(self, x, y, target: bool) -> bytes:
        m, p = self.model, self.p
        out = np.zeros((len(x), p.n_out), bool)
        for n in range(len(x)):
            out[n] = m.step(x[n], target=y[n]) if target else m.step(x[n], error=y[n])
            self._count("STEP_COUNT")
            phase = self.regs["CHUNK_PHASE"] + 1
            chunk = phase >= p.chunk_steps
            if chunk:
                m.end_chunk()
                phase = 0
                self._count("CHUNK_COUNT")
            self.regs["CHUNK_PHASE"] = phase
            self.regs["CYCLES"] = self._cycles[chunk]
        bits = np.packbits(out, axis=1, bitorder="little")
        return P.RUN_REPLY.pack(self.regs["STEP_COUNT"], len(x)) + bits.tobytes()

    def reset(self, mask: ResetMask = P.RESET_ALL) -> None:
        """What ``RESET_STATE`` does (also callable directly). Weights and B are never touched."""
        m = self.model
        if mask & ResetMask.DYNAMICS:
            for L in m.layers:
                for w in _DYNAMIC_WORDS:
                    if getattr(L, w) is not None:
                        setattr(L, w, np.zeros_like(getattr(L, w)))
                L.S = np.zeros_like(L.S)
                for d in ("sigma_d", "zh_d"):
                    if getattr(L, d) is not None:
                        getattr(L, d)[...] = 0
            m.e1, m.e2 = np.zeros_like(m.e1), np.zeros_like(m.e2)
            m._x_hid = np.zeros_like(m._x_hid)
            m.t = 0
        if mask & ResetMask.LEARNING:
            for L in m.layers:
                for w in _LEARNING_WORDS:
                    if getattr(L, w) is not None:
                        getattr(L, w)[...] = 0
        if mask & ResetMask.COUNTERS:
            for r in _COUNTERS_RESET:
                self.regs[r] = 0
        if mask & ResetMask.LINK:
            for r in LINK_COUNTERS:
                self.regs[r] = 0

    def reg(self, name: str) -> int:
        """Current value of a register (STATUS is derived from the counters)."""
        if name == "STATUS":
            return _STATUS_LINK_ERROR if any(self.regs[c] for c in _ERROR_COUNTERS) else 0
        if name == "R0":
            return int(self.model.r0_q)
        return int(self.regs[name])

    def _array(self, name: str) -> np.ndarray:
        m = self.model
        if name == "fb":
            return m.fb[0]
        if name.startswith("err."):
            return (m.e1 if name == "err.e1" else m.e2)[0]
        layer, word = name.split(".")
        return getattr(m.layer(layer), word)[0]

    def read_space(self, name: str) -> np.ndarray:
        """Every word of space ``name``, flat (row-major), as int64."""
        if name not in self.spaces:
            raise KeyError(f"space must be one of {', '.join(self.spaces)}, not {name!r}")
        return np.asarray(self._array(name), np.int64).reshape(-1)

    def write_space(self, name: str, words, start: int = 0) -> None:
        """Write ``words`` into space ``name`` from index ``start`` (no format check: see WRITE_MEM)."""
        if name not in self.spaces:
            raise KeyError(f"space must be one of {', '.join(self.spaces)}, not {name!r}")
        m, words = self.model, np.asarray(words, np.int64)
        names = [name]
        if self.p.error_source is ErrorSource.TARGET and name in ("out.e", "err.e2"):
            names = ["out.e", "err.e2"]            # one storage in the Core: e is the filter's e2
        for nm in names:
            a = self._array(nm)
            flat = a.reshape(-1)
            if not np.may_share_memory(flat, a):
                raise AssertionError(f"{nm} must be contiguous to be written in place")
            flat[start:start + len(words)] = words.astype(a.dtype)
        if name.endswith(".w"):
            L = m.layer(name.split(".")[0])
            L.w_f[:] = L.w
        if name == "hid.S":
            m._x_hid = m.layer("hid").S.copy()

    def state(self) -> dict[str, np.ndarray]:
        """Every space, shaped like ``GoldenModel.snapshot()`` (leading batch axis of 1)."""
        return {name: np.asarray(self._array(name), np.int64)[None].copy() for name in self.spaces}


class ModelTransport(Transport):
    """A :class:`Transport` whose writes go to a :class:`VirtualBoard` and whose reads return its replies.

    The board answers synchronously inside :meth:`write`, so :meth:`read` never waits: an empty
    buffer means no reply is coming, and it returns ``b""`` at once whatever the ``timeout``.
    """

    def __init__(self, board: VirtualBoard):
        self.board = board
        self._rx = bytearray()
        self._closed = False
        self.bytes_written = 0
        self.bytes_read = 0

    def write(self, data: bytes) -> None:
        if self._closed:
            raise TransportClosed("model transport closed")
        self.bytes_written += len(data)
        self._rx += self.board.feed(data)

    def read(self, n: int, timeout: float | None = 0.0) -> bytes:
        if self._closed:
            raise TransportClosed("model transport closed")
        out = bytes(self._rx[:n])
        del self._rx[:n]
        self.bytes_read += len(out)
        return out

    @property
    def in_waiting(self) -> int:
        return len(self._rx)

    def close(self) -> None:
        self._closed = True


def transcript(config: SoCConfig, seed: int = 0, steps: int = 0, max_steps: int = 0) -> list[tuple[bytes, bytes]]:
    """A replayable conformance session: ``(request bytes, expected reply bytes)`` pairs.

    A fresh :class:`VirtualBoard` is driven through every command, every NAK reason but ``BUSY``
    (a real device raises it on its own timing), duplicates, a sequence re-established by
    IDENTIFY, link-level rejects and garbage, and RUN_STEPS batches with seeded weights and
    stimulus (``steps`` of them, default two chunks). A device implementation (the gateware
    protocol engine in simulation) that starts from reset and answers each request with exactly
    the expected bytes behaves like the reference.
    """
    from spikeloop.sim.golden import init_weights

    vb = VirtualBoard(config, max_steps=max_steps)
    p, rng = config.params, np.random.default_rng(seed)
    out: list[tuple[bytes, bytes]] = []
    seq = session = 0

    def send(data: bytes) -> None:
        out.append((data, vb.feed(data)))

    def req(cmd, payload=b"", s=None, advance=True):
        nonlocal seq
        send(P.encode_frame(cmd, seq if s is None else s, payload, session))
        if advance and s is None:
            seq = P.next_seq(seq)
        return out[-1][0]

    def mem(name, words, start=0):
        sp = vb.spaces[name]
        fmt = sp.word(p)
        per = (vb.max_payload - P.MEM_REQ.size) // fmt.nbytes
        for k in range(0, len(words), per):
            req(Command.WRITE_MEM, P.pack_write_mem(sp.id, start + k, [int(w) for w in words[k:k + per]], fmt))

    send(b"\x5a\xa5junk")                                     # power-up garbage, then hunting
    req(Command.IDENTIFY)
    req(Command.READ_REG, P.pack_read_reg(0x00, 5))
    req(Command.READ_REG, P.pack_read_reg(0x08, 1))
    req(Command.READ_REG, P.pack_read_reg(0x0C, 4))
    req(Command.READ_REG, P.pack_read_reg(0x10, 9))
    ws, fb = init_weights(p, [seed])
    for name, w in zip(("hid.w", "out.w") if p.n_hidden else ("out.w",), ws):
        if name in vb.spaces:
            mem(name, w.ravel())
    if "fb" in vb.spaces:
        mem("fb", fb.ravel())
    T = steps or 2 * p.chunk_steps
    x = rng.random((T, p.n_in)) < 0.2
    target = p.error_source is ErrorSource.TARGET
    y = rng.random((T, p.n_out)) < 0.05 if target else None
    e = None if target else rng.integers(-2000, 2000, (T, p.n_out))
    K = P.max_steps_per_frame(p, vb.max_payload)
    if vb.max_steps:
        K = min(K, vb.max_steps)
    first = True
    for k in range(0, T, K):
        pl = P.pack_run_steps(p, x[k:k + K], None if y is None else y[k:k + K], None if e is None else e[k:k + K])
        req(Command.RUN_STEPS, pl, advance=False)
        if first:                                             # the reply was "lost": retransmit
            req(Command.RUN_STEPS, pl, advance=False)
            first = False
        seq = P.next_seq(seq)
    for sp in vb.spaces.values():                             # read every space back
        fmt, depth = sp.word(p), sp.depth(p)
        per = vb.max_payload // fmt.nbytes
        for a in range(0, depth, per):
            req(Command.READ_MEM, P.pack_read_mem(sp.id, a, min(per, depth - a)))
    req(Command.READ_REG, P.pack_read_reg(0x00, 5))
    # duplicates: a write, a read, a refused request
    for pl, cmd in ((P.pack_write_reg(0x00, [max(1, p.r0_q // 2)]), Command.WRITE_REG),
                    (P.pack_read_reg(0x01, 1), Command.READ_REG),
                    (P.pack_read_mem(0x3F, 0, 1), Command.READ_MEM)):
        req(cmd, pl, advance=False)
        req(cmd, pl)
    # link-level rejects (NAKs echo the received seq; not accepted)
    good = P.encode_frame(Command.WRITE_REG, seq, P.pack_write_reg(0x01, [7]))
    flipped = bytearray(good)
    flipped[2] ^= 0x10
    send(bytes(flipped))
    body = P.HEADER.pack(Command.WRITE_REG, seq, 3, 0) + P.pack_write_reg(0x01, [7])
    send(b"\x00" + P.cobs_encode(body + P.crc16(body).to_bytes(2, "big")) + b"\x00")   # length mismatch
    send(b"\x00" + P.cobs_encode(bytes([Command.WRITE_REG, seq, 1])) + b"\x00")        # too short
    send(b"\x00\x05\x00")                                  # malformed COBS, no seq: counted only
    send(good[:len(good) // 2] + b"\x00")                    # truncated
    send(bytes(rng.integers(1, 256, 3 * vb.max_payload, dtype=np.uint8)) + b"\x00")   # oversize
    req(Command.WRITE_MEM, bytes(vb.max_payload + 1), advance=False)   # too long for the buffer
    # command-level refusals (accepted: the seq advances)
    w = vb.spaces["out.w"]
    req(Command.IDENTIFY, b"x", advance=False)                # BAD_LENGTH
    req(Command.RESET_STATE, b"", advance=False)              # BAD_LENGTH
    req(Command.READ_REG, P.pack_read_reg(0, 1), s=(seq + 9) & 0xFF)    # BAD_SEQUENCE
    req(0x42)                                                 # BAD_COMMAND
    req(Command.NAK)
    req(Command.READ_MEM, P.pack_read_mem(0x3F, 0, 1))        # BAD_ADDRESS: no such space
    req(Command.READ_MEM, P.pack_read_mem(w.id, w.depth(p), 1))
    req(Command.READ_REG, P.pack_read_reg(0x05, 1))
    req(Command.WRITE_REG, P.pack_write_reg(0x02, [1]))       # CYCLES is read-only
    req(Command.RUN_STEPS, P.RUN_REQ.pack(0))                 # BAD_VALUE
    req(Command.READ_MEM, P.pack_read_mem(w.id, 0, 0))
    req(Command.WRITE_REG, P.pack_write_reg(0x03, [p.chunk_steps]))
    req(Command.RESET_STATE, b"\x10")
    u = vb.spaces["out.U"]
    uf = u.word(p)
    if uf.bits % 8:
        req(Command.WRITE_MEM, P.MEM_REQ.pack(u.id, 0, 1) + (uf.max + 1).to_bytes(uf.nbytes, "little"))
    # sequence lost and re-established
    req(Command.READ_REG, P.pack_read_reg(0x01, 1), s=(seq + 100) & 0xFF)
    seq = (seq + 100) & 0xFF
    req(Command.IDENTIFY, s=(seq - 1) & 0xFF)
    req(Command.READ_REG, P.pack_read_reg(0x10, 9))
    # sessions: host A opens one; a frame without it, a second host's OPEN, A's frames after B
    # took the board over, and a replayed OPEN with A's old frame are refused and never executed
    F, step = P.IdentifyFlags, P.register("STEP_COUNT").addr
    nonce_a, nonce_b = 0x1234ABCD, 0x0BADF00D
    req(Command.IDENTIFY, P.pack_identify_request(F.OPEN, nonce_a))
    sa = session = vb.sessions.session
    req(Command.IDENTIFY, P.pack_identify_request(F.OPEN, nonce_a))          # a retried OPEN: same session
    a_write = req(Command.WRITE_REG, P.pack_write_reg(step, [5]))
    session = 0
    req(Command.WRITE_REG, P.pack_write_reg(step, [7]), advance=False)       # BAD_SESSION
    req(Command.IDENTIFY, P.pack_identify_request(F.OPEN, nonce_b), advance=False)     # IN_USE
    for bad in (0x08, F.TAKEOVER, F.OPEN | F.CLOSE):                                    # BAD_VALUE
        req(Command.IDENTIFY, P.pack_identify_request(bad, nonce_b), advance=False)
    req(Command.IDENTIFY, bytes(3), advance=False)                                      # BAD_LENGTH
    req(Command.IDENTIFY, P.pack_identify_request(F.OPEN | F.TAKEOVER, nonce_b))
    sb = vb.sessions.session
    session = sa
    req(Command.READ_REG, P.pack_read_reg(step, 1), advance=False)           # BAD_SESSION
    req(Command.IDENTIFY, advance=False)                                      # BAD_SESSION
    req(Command.IDENTIFY, P.pack_identify_request(F.CLOSE), advance=False)    # BAD_SESSION
    session = sb
    req(Command.WRITE_REG, P.pack_write_reg(step, [7]))
    req(Command.READ_REG, P.pack_read_reg(step, 1))
    session = 0
    req(Command.IDENTIFY, P.pack_identify_request(F.OPEN | F.TAKEOVER, nonce_a))   # replayed: a new session
    send(a_write)                                                             # A's old frame: BAD_SESSION
    session = vb.sessions.session
    req(Command.READ_REG, P.pack_read_reg(step, 1))                           # still 7
    req(Command.IDENTIFY, P.pack_identify_request(F.CLOSE))
    session = 0
    req(Command.READ_REG, P.pack_read_reg(step, 1))                           # free again: no session
    for mask in (ResetMask.LEARNING, P.RESET_ALL, P.RESET_ALL | ResetMask.LINK):
        req(Command.RESET_STATE, bytes([mask]))
    req(Command.READ_REG, P.pack_read_reg(0x00, 5), s=200)   # after LINK: any seq is new
    return out


def boundary_values(reg: P.Register, p: Params) -> list[int]:
    """The values a boundary session writes to ``reg``: 0, 1, max − 1 and max of its width, the
    same around ``register_max`` when that is lower (R0, CHUNK_PHASE: the last legal value and the
    first refused one), and 2^width and all ones for a register narrower than the u32 it travels
    in (the bits above ``width`` are dropped before the check)."""
    top = (1 << reg.width) - 1
    vals = [0, 1, top - 1, top]
    lim = P.register_max(reg, p)
    if lim < top:
        vals += [lim - 1, lim, lim + 1]
    if reg.width < 32:
        vals += [top + 1, 0xFFFFFFFF]
    return list(dict.fromkeys(v for v in vals if 0 <= v <= 0xFFFFFFFF))


def boundary_transcript(config: SoCConfig, max_steps: int = 0) -> list[tuple[bytes, bytes]]:
    """A replayable session of every register and counter at its limits, from power-up:
    ``(request bytes, expected reply bytes)`` pairs, answered by a fresh :class:`VirtualBoard`.

    Every ``rw`` register is written with :func:`boundary_values` and read back; then each
    counter is pushed to its top by what counts it: RUN_STEPS with K = 1 and a K that crosses the
    limit (``STEP_COUNT``, ``CHUNK_PHASE``/``CHUNK_COUNT`` across chunk ends), good frames
    (``FRAMES_OK``), CRC, framing and length rejects, an oversize body and the hunt after it
    (``GARBAGE_BYTES``, ``RESYNCS``), NAKs and duplicates; every RESET_STATE class runs with the
    counters at their top. Counters saturate at their width (docs/protocol.md), so a device that
    wraps or stops early answers some read differently. Every request gets a reply except the
    oversize body, so a replay hardly waits for silence.
    """
    vb = VirtualBoard(config, max_steps=max_steps)
    p = config.params
    out: list[tuple[bytes, bytes]] = []
    seq = 0
    rw = [r for r in P.REGISTERS if r.access is P.Access.RW]
    top = {r.name: (1 << r.width) - 1 for r in P.REGISTERS}
    addr = {r.name: r.addr for r in P.REGISTERS}
    x1 = np.zeros((1, p.n_in), bool)
    target = p.error_source is ErrorSource.TARGET

    def send(data: bytes) -> None:
        out.append((data, vb.feed(data)))

    def req(cmd, payload=b"", advance=True):
        nonlocal seq
        send(P.encode_frame(cmd, seq, payload))
        if advance:
            seq = P.next_seq(seq)

    def write(name, *values):
        req(Command.WRITE_REG, P.pack_write_reg(addr[name], list(values)))

    def read(name, count=1):
        req(Command.READ_REG, P.pack_read_reg(addr[name], count))

    def read_all():
        for a, n in ((0x00, 5), (0x08, 1), (0x0C, 4), (0x10, 9)):
            req(Command.READ_REG, P.pack_read_reg(a, n))

    def run(k, density=0.0, seed=0):
        rng = np.random.default_rng(seed)
        x = rng.random((k, p.n_in)) < density
        y = (rng.random((k, p.n_out)) < density) if target else None
        e = None if target else rng.integers(-50, 50, (k, p.n_out))
        req(Command.RUN_STEPS, P.pack_run_steps(p, x, y, e))

    def bad_crc():
        body = P.HEADER.pack(Command.READ_REG, seq, 4, 0) + P.pack_read_reg(0x01, 1)
        crc = P.crc16(body) ^ 0x0101                         # valid COBS, wrong CRC
        send(b"\x00" + P.cobs_encode(body + crc.to_bytes(2, "big")) + b"\x00")

    def short_body():
        send(b"\x00" + P.cobs_encode(bytes([Command.READ_REG, seq, 1])) + b"\x00")

    def bad_length():
        body = P.HEADER.pack(Command.READ_REG, seq, 3, 0) + P.pack_read_reg(0x01, 1)
        send(b"\x00" + P.cobs_encode(body + P.crc16(body).to_bytes(2, "big")) + b"\x00")

    req(Command.IDENTIFY)
    read_all()
    # 1. every rw register at 0, 1, max - 1, max (and around register_max), read back
    for r in rw:
        for v in boundary_values(r, p):
            write(r.name, v)
            read(r.name)
    write("R0", P.register_max(P.register("R0"), p), top["STEP_COUNT"])   # two at once, at their tops
    read_all()
    # 2. STEP_COUNT saturates: K = 1 at the top, reaching it, and a batch crossing it
    write("R0", p.r0_q)
    write("STEP_COUNT", top["STEP_COUNT"])
    run(1)
    read("STEP_COUNT")
    write("STEP_COUNT", top["STEP_COUNT"] - 1)
    run(1)
    run(1)
    kmax = min(vb.max_steps or 0xFFFF, P.max_steps_per_frame(p, vb.max_payload))
    k = min(20, kmax)                                             # a batch ending 4 steps past the top
    write("STEP_COUNT", top["STEP_COUNT"] - max(k - 5, 0))
    run(k, 0.3, 1)
    req(Command.READ_REG, P.pack_read_reg(0x00, 5))
    write("STEP_COUNT", top["STEP_COUNT"] - 2)
    run(kmax, 0.3, 2)                                             # the largest K
    req(Command.READ_REG, P.pack_read_reg(0x00, 5))
    # 3. CHUNK_PHASE at its last value: K = 1 ends a chunk, a batch crosses one (CHUNK_COUNT += 1)
    last = P.register_max(P.register("CHUNK_PHASE"), p)
    write("CHUNK_PHASE", last)
    run(1)
    req(Command.READ_REG, P.pack_read_reg(0x00, 5))
    write("CHUNK_PHASE", last - 1)
    run(3, 0.3, 3)
    req(Command.READ_REG, P.pack_read_reg(0x00, 5))
    write("R0", P.register_max(P.register("R0"), p))             # the largest learning rate
    write("CHUNK_PHASE", last)
    run(2, 0.3, 4)
    req(Command.READ_REG, P.pack_read_reg(0x00, 5))
    w = vb.spaces["out.w"]
    req(Command.READ_MEM, P.pack_read_mem(w.id, 0, min(w.depth(p), vb.max_payload // w.word(p).nbytes)))
    # 4. link counters: one below the top, then what counts them, twice (the second must stick)
    write("FRAMES_OK", top["FRAMES_OK"] - 1)
    read("FRAMES_OK")                                             # this frame reaches the top
    read("FRAMES_OK")
    for name, fault in (("CRC_ERRORS", bad_crc), ("FRAMING_ERRORS", short_body),
                        ("LENGTH_ERRORS", bad_length)):
        write("NAKS_SENT", top["NAKS_SENT"] - 1)
        write(name, top[name] - 1)
        fault()
        read(name)
        fault()
        read(name)
        read("STATUS")
        read("NAKS_SENT")
    write("DUPLICATES", top["DUPLICATES"] - 1)
    for _ in range(3):                                            # new, then two duplicates
        req(Command.READ_REG, P.pack_read_reg(addr["DUPLICATES"], 1), advance=False)
    seq = P.next_seq(seq)
    # an oversize body: its bytes are garbage, the hunt after it counts more and ends in a resync
    write("GARBAGE_BYTES", top["GARBAGE_BYTES"] - 5)
    write("LENGTH_ERRORS", top["LENGTH_ERRORS"] - 1)
    write("RESYNCS", top["RESYNCS"] - 1)
    for _ in range(2):
        send(b"\x00" + b"\x5a" * (vb.decoder.max_encoded + 8))   # no delimiter: oversize, then hunting
        send(b"\x11\x22\x00" + P.encode_frame(Command.READ_REG, seq, P.pack_read_reg(0x10, 9)))
        seq = P.next_seq(seq)
    read_all()
    # 5. every RESET_STATE class with everything at its top
    for mask in (ResetMask.DYNAMICS, ResetMask.LEARNING, ResetMask.COUNTERS, ResetMask.LINK, 0):
        write("R0", P.register_max(P.register("R0"), p), top["STEP_COUNT"])
        write("CHUNK_PHASE", last)
        write("FRAMES_OK", *[top[r.name] for r in rw if r.addr >= 0x10])
        req(Command.RESET_STATE, bytes([int(mask)]))
        if mask & ResetMask.LINK:
            seq = 77                                              # the sequence is forgotten
        read_all()
    return out

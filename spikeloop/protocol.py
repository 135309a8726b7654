"""The host link protocol, defined once as plain data for the gateware generator and the host.

Everything the three backends (board, ``rtl`` simulation, ``model``) and the gateware protocol
engine must agree on lives here: the frame layout, the CRC, the command and NAK enums, the payload
layouts, the register map and the memory spaces. The module needs no numpy and no Amaranth.

Framing (see ``docs/protocol.md``)
----------------------------------
A frame is ``0x00 · COBS(header · payload · crc) · 0x00`` where

* ``header`` = ``cmd u8 · seq u8 · length u16 LE`` (``length`` = bytes of ``payload``),
* ``crc`` = CRC-16/CCITT-FALSE of ``header · payload``, sent **big-endian**, so the CRC run over
  ``header · payload · crc`` leaves a residue of 0 (what the gateware checks, byte by byte),
* COBS (Consistent Overhead Byte Stuffing) removes every 0x00 from the frame body, so 0x00 only
  ever appears as a delimiter; worst-case overhead 1 + ⌊n/254⌋ bytes.

The receiver resynchronises at the next 0x00 after any garbage, and accepts a body only if its
COBS is well formed, it is at least 8 bytes long, the CRC residue is 0 and ``length`` matches.
Sequence numbers (duplicates, stale replies) are checked one level up, by
:class:`SequenceTracker`.
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from spikeloop.params import ErrorSource, Feedback, Optimiser, Params, int_range

__all__ = [
    "PROTOCOL_VERSION", "MAGIC", "DELIMITER", "HEADER", "HEADER_SIZE", "CRC_SIZE", "DEFAULT_MAX_PAYLOAD",
    "CRC16_POLY", "CRC16_INIT", "crc16_bitwise", "crc16", "crc16_update_byte",
    "cobs_encode", "cobs_decode", "CobsError", "cobs_max_overhead",
    "Command", "Nak", "Reject", "Frame", "encode_frame", "frame_wire_size", "FrameDecoder",
    "SeqVerdict", "SequenceTracker", "next_seq",
    "Access", "Register", "REGISTERS", "CoreRegister", "CORE_REGISTERS", "register", "register_max", "MemorySpace", "SPACES", "space",
    "spaces_for", "WordFormat",
    "Identity", "pack_identify", "unpack_identify", "IdentifyFlags", "IDENTIFY_REQ", "SESSION_HEAD",
    "pack_identify_request", "unpack_identify_request", "session_for", "SessionState", "identify_flags_ok", "min_max_payload", "ack_payload_size",
    "REG_REQ", "MEM_REQ", "RUN_REQ", "RUN_REPLY", "NAK_PAYLOAD",
    "pack_read_reg", "pack_write_reg", "unpack_reg_request", "pack_words", "unpack_words",
    "pack_read_mem", "pack_write_mem", "unpack_mem_request",
    "pack_bitmap", "unpack_bitmap", "bitmap_bytes",
    "pack_run_steps", "unpack_run_steps", "pack_run_reply", "unpack_run_reply",
    "pack_nak", "unpack_nak", "RESET_ALL", "ResetMask",
    "WireCost", "bytes_per_step", "batch_bytes", "projected_steps_per_s", "max_steps_per_frame",
    "render_register_table", "render_core_register_note", "render_reset_table", "render_space_table", "render_command_table", "render_nak_table",
    "render_wire_table", "render_docs", "update_docs", "RETRANSMIT", "IDENT", "BITS_PER_BYTE",
    "WIRE_TABLE_CASES", "BEGIN_MARK", "END_MARK",
]

#: Bumped whenever a frame, payload, register or space changes incompatibly.
PROTOCOL_VERSION = 2
#: First four bytes of the IDENTIFY reply.
MAGIC = b"SPKL"
#: The frame delimiter (COBS guarantees it appears nowhere else).
DELIMITER = 0x00
#: ``cmd u8, seq u8, length u16, session u16`` little-endian.
HEADER = struct.Struct("<BBHH")
HEADER_SIZE = HEADER.size
CRC_SIZE = 2
#: Largest payload a receiver must accept unless IDENTIFY reports another (device RX buffer).
DEFAULT_MAX_PAYLOAD = 4096
#: Bits on the wire per byte (UART 8N1: start + 8 data + stop).
BITS_PER_BYTE = 10


# ====================================================================== CRC-16/CCITT-FALSE
#: CRC-16/CCITT-FALSE: polynomial x^16 + x^12 + x^5 + 1, init 0xFFFF, not reflected, xorout 0.
#: Check value: crc16(b"123456789") == 0x29B1.
CRC16_POLY = 0x1021
CRC16_INIT = 0xFFFF


def crc16_bitwise(data: bytes, crc: int = CRC16_INIT) -> int:
    """Reference CRC-16/CCITT-FALSE, one bit at a time, MSB first (what the table is checked against)."""
    for byte in data:
        for k in range(7, -1, -1):
            top = ((crc >> 15) & 1) ^ ((byte >> k) & 1)
            crc = (crc << 1) & 0xFFFF
            if top:
                crc ^= CRC16_POLY
    return crc


def _make_table() -> tuple[int, ...]:
    table = []
    for b in range(256):
        crc = b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC16_POLY) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _make_table()


def crc16_update_byte(crc: int, byte: int) -> int:
    """One byte of the table-driven CRC (the gateware computes the same per received byte)."""
    return ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]


def crc16(data: bytes, crc: int = CRC16_INIT) -> int:
    """Table-driven CRC-16/CCITT-FALSE."""
    t = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ t[(crc >> 8) ^ byte]
    return crc


# ====================================================================== COBS
class CobsError(ValueError):
    """A frame body is not valid COBS (a zero inside, or a code byte pointing past the end)."""


def cobs_max_overhead(n: int) -> int:
    """Most bytes COBS adds to ``n`` bytes: 1 + ⌊n/254⌋."""
    return 1 + n // 254


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (no delimiters); the result contains no 0x00."""
    out = bytearray()
    block = bytearray()
    full = False            # the last block emitted was a full 254-byte one with no zero after it
    for b in data:
        full = False
        if b == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
        else:
            block.append(b)
            if len(block) == 254:
                out.append(0xFF)
                out += block
                block.clear()
                full = True
    if not full:            # standard COBS: no trailing 0x01 after a final full block
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def cobs_decode(enc: bytes) -> bytes:
    """Invert :func:`cobs_encode`; raises :class:`CobsError` on a malformed body."""
    out = bytearray()
    i, n = 0, len(enc)
    while i < n:
        code = enc[i]
        if code == 0:
            raise CobsError(f"COBS body must not contain 0x00 (at {i})")
        i += 1
        end = i + code - 1
        if end > n:
            raise CobsError(f"COBS code {code} at {i - 1} points past the end ({n} bytes)")
        block = enc[i:end]
        if 0 in block:
            raise CobsError("COBS body must not contain 0x00")
        out += block
        i = end
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


# ====================================================================== commands and NAK reasons
class Command(enum.IntEnum):
    """The ``cmd`` byte. Requests go host → device; every request is answered by ACK or NAK."""
    IDENTIFY = 0x01      # () -> Identity (fixed struct + compact JSON of Params)
    READ_REG = 0x02      # addr u16, count u16 -> count × u32
    WRITE_REG = 0x03     # addr u16, count u16, count × u32 -> ()
    READ_MEM = 0x04      # space u8, start u32, count u16 -> count words
    WRITE_MEM = 0x05     # space u8, start u32, count u16, count words -> ()
    RUN_STEPS = 0x06     # K u16, K × (input bitmap, targets bitmap | n_out error words) -> reply
    RESET_STATE = 0x07   # mask u8 -> ()
    ACK = 0x80           # device -> host: the request with this seq was executed; payload = result
    NAK = 0x81           # device -> host: refused (nothing applied); payload = reason u8, cmd u8

    @property
    def is_request(self) -> bool:
        return self < 0x80


class Nak(enum.IntEnum):
    """Reason code of a NAK (first payload byte)."""
    BAD_CRC = 0x01        # the body's CRC residue was not 0 (seq byte is a guess; retransmit)
    BAD_LENGTH = 0x02     # length field disagrees with the body, payload malformed, or too long
    BAD_SEQUENCE = 0x03   # seq neither next nor a retransmission of the last accepted frame
    BAD_COMMAND = 0x04    # unknown cmd, or a reply code sent as a request
    BAD_ADDRESS = 0x05    # register/space/index out of range, or a read-only register written
    BUSY = 0x06           # the device cannot take this request now; retry with the same seq
    BAD_FRAMING = 0x07    # malformed COBS or shorter than header + CRC
    BAD_VALUE = 0x08      # a field is out of range (e.g. K = 0, K too large, word out of format)
    BAD_SESSION = 0x09    # the frame's session is not the device's open session: nothing executed
    IN_USE = 0x0A         # IDENTIFY OPEN while another host's session is open (no TAKEOVER)


#: NAK reasons after which the host simply retransmits the same frame (nothing was applied).
RETRANSMIT = frozenset({Nak.BAD_CRC, Nak.BAD_LENGTH, Nak.BAD_FRAMING, Nak.BUSY})

_NAK_TEXT = {
    Nak.BAD_CRC: "CRC residue not 0. The seq byte of the NAK echoes the received one, which may be "
                 "corrupted; the host retransmits its outstanding request.",
    Nak.BAD_LENGTH: "`length` disagrees with the received body, or a payload is the wrong size for "
                    "its command, or it exceeds the device's `max_payload`.",
    Nak.BAD_SEQUENCE: "`seq` is neither the next one nor a retransmission of the last accepted frame.",
    Nak.BAD_COMMAND: "Unknown `cmd`, or ACK/NAK sent to the device.",
    Nak.BAD_ADDRESS: "Register, memory space or index range out of bounds, or a read-only register written.",
    Nak.BUSY: "The device cannot execute this request now; nothing was applied, retry with the same `seq`.",
    Nak.BAD_FRAMING: "Malformed COBS, or a body shorter than header + CRC (8 bytes).",
    Nak.BAD_VALUE: "A field is out of range (K = 0 or above the device limit, a word outside its format).",
    Nak.BAD_SESSION: "The frame's `session` is not the device's open session (another host took the board "
                     "over, the device was reset, or the frame is from an earlier session); nothing "
                     "was executed. The driver opens a new session.",
    Nak.IN_USE: "`IDENTIFY` with `OPEN` while another host's session is open; `OPEN | TAKEOVER` takes "
                "the board over.",
}

#: Payload of a NAK: reason u8, the refused command byte u8 (0xFF when unknown).
NAK_PAYLOAD = struct.Struct("<BB")


def pack_nak(reason: Nak, cmd: int = 0xFF) -> bytes:
    return NAK_PAYLOAD.pack(int(reason), int(cmd) & 0xFF)


def unpack_nak(payload: bytes) -> tuple[Nak | int, int]:
    """``(reason, cmd)``; an unknown reason code is returned as an int."""
    if len(payload) != NAK_PAYLOAD.size:
        raise ValueError(f"a NAK payload must be {NAK_PAYLOAD.size} bytes, not {len(payload)}")
    r, c = NAK_PAYLOAD.unpack(payload)
    try:
        r = Nak(r)
    except ValueError:
        pass
    return r, c


# ====================================================================== frames
@dataclass(frozen=True)
class Frame:
    """A frame that passed every link check: ``cmd`` is a raw byte (see :attr:`command`)."""
    cmd: int
    seq: int
    payload: bytes = b""
    session: int = 0

    @property
    def command(self) -> Command | None:
        try:
            return Command(self.cmd)
        except ValueError:
            return None

    def encode(self) -> bytes:
        return encode_frame(self.cmd, self.seq, self.payload, self.session)


def encode_frame(cmd: int, seq: int, payload: bytes = b"", session: int = 0) -> bytes:
    """The wire bytes of one frame:
    ``0x00 · COBS(cmd · seq · length · session · payload · crc_be) · 0x00``.

    Raises
    ------
    ValueError
        If ``cmd`` or ``seq`` is not a byte, ``session`` not a u16, or the payload is longer
        than 65535 bytes.
    """
    if not 0 <= int(cmd) <= 0xFF:
        raise ValueError(f"cmd must be a byte, not {cmd!r}")
    if not 0 <= int(seq) <= 0xFF:
        raise ValueError(f"seq must be in 0..255, not {seq!r}")
    if not 0 <= int(session) <= 0xFFFF:
        raise ValueError(f"session must be in 0..65535, not {session!r}")
    payload = bytes(payload)
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload must be at most 65535 bytes, not {len(payload)}")
    body = HEADER.pack(int(cmd), int(seq), len(payload), int(session)) + payload
    body += crc16(body).to_bytes(2, "big")
    return b"\x00" + cobs_encode(body) + b"\x00"


def frame_wire_size(payload_len: int, worst: bool = True) -> int:
    """Bytes on the wire for a payload of ``payload_len`` bytes (worst-case COBS overhead)."""
    n = HEADER_SIZE + payload_len + CRC_SIZE
    return 2 + n + (cobs_max_overhead(n) if worst else 1)


class Reject(enum.Enum):
    """Why :class:`FrameDecoder` dropped a delimited body (mapped to a NAK by the device)."""
    FRAMING = "framing"       # malformed COBS or too short
    CRC = "crc"
    LENGTH = "length"         # length field mismatch
    OVERSIZE = "oversize"     # no delimiter within the largest frame: dropped, hunting

    @property
    def nak(self) -> Nak:
        return {Reject.FRAMING: Nak.BAD_FRAMING, Reject.CRC: Nak.BAD_CRC, Reject.LENGTH: Nak.BAD_LENGTH,
                Reject.OVERSIZE: Nak.BAD_LENGTH}[self]


@dataclass
class FrameDecoder:
    """Incremental receiver: bytes in, valid :class:`Frame` objects out, counters for the rest.

    Rules (identical in the gateware engine):

    1. Start hunting: bytes before the first 0x00 are garbage.
    2. Bytes between two 0x00 form a body; an empty body (two 0x00 in a row) is ignored.
    3. A body is accepted only if it is valid COBS, decodes to ≥ 8 bytes, the CRC run over all of it
       leaves residue 0, and the header's ``length`` equals the bytes between header and CRC.
    4. If no 0x00 arrives within :attr:`max_encoded` bytes the body is dropped and the decoder
       hunts for the next 0x00 (bounded buffering).

    Members
    -------
    frames_ok, crc_errors, framing_errors, length_errors, oversize_errors : int
        Bodies accepted / rejected for each reason.
    garbage_bytes : int
        Bytes discarded while hunting (rule 1 and 4).
    resyncs : int
        Times the decoder found a delimiter while hunting (after power-up or an oversize body).
    rejects : list of (Reject, seq_guess)
        Pending rejections, for the device engine to NAK (:meth:`pop_rejects`); ``seq_guess`` is the
        second decoded byte when there is one, else ``None``.
    """
    max_payload: int = DEFAULT_MAX_PAYLOAD
    frames_ok: int = 0
    crc_errors: int = 0
    framing_errors: int = 0
    length_errors: int = 0
    oversize_errors: int = 0
    garbage_bytes: int = 0
    resyncs: int = 0
    rejects: list = field(default_factory=list)
    _buf: bytearray = field(default_factory=bytearray)
    _hunting: bool = True

    @property
    def max_encoded(self) -> int:
        n = HEADER_SIZE + self.max_payload + CRC_SIZE
        return n + cobs_max_overhead(n)

    @property
    def errors(self) -> int:
        return self.crc_errors + self.framing_errors + self.length_errors + self.oversize_errors

    def pop_rejects(self) -> list:
        r, self.rejects = self.rejects, []
        return r

    def _reject(self, why: Reject, seq=None):
        self.rejects.append((why, seq))

    def feed(self, data: bytes) -> list[Frame]:
        """Consume ``data``; return the frames it completed, in order."""
        frames = []
        buf, limit = self._buf, self.max_encoded
        for b in data:
            if b == DELIMITER:
                if self._hunting:
                    self._hunting = False
                    self.resyncs += 1
                elif buf:
                    f = self._body(bytes(buf))
                    if f is not None:
                        frames.append(f)
                    buf.clear()
            elif self._hunting:
                self.garbage_bytes += 1
            else:
                buf.append(b)
                if len(buf) > limit:
                    self.oversize_errors += 1
                    self._reject(Reject.OVERSIZE)
                    self.garbage_bytes += len(buf)
                    buf.clear()
                    self._hunting = True
        return frames

    def _body(self, enc: bytes) -> Frame | None:
        try:
            body = cobs_decode(enc)
        except CobsError:
            self.framing_errors += 1
            self._reject(Reject.FRAMING)
            return None
        seq = body[1] if len(body) > 1 else None
        if len(body) < HEADER_SIZE + CRC_SIZE:
            self.framing_errors += 1
            self._reject(Reject.FRAMING, seq)
            return None
        if crc16(body) != 0:
            self.crc_errors += 1
            self._reject(Reject.CRC, seq)
            return None
        cmd, seq, length, session = HEADER.unpack_from(body)
        if length != len(body) - HEADER_SIZE - CRC_SIZE:
            self.length_errors += 1
            self._reject(Reject.LENGTH, seq)
            return None
        self.frames_ok += 1
        return Frame(cmd, seq, bytes(body[HEADER_SIZE:-CRC_SIZE]), session)


# ====================================================================== sequence numbers
def next_seq(seq: int) -> int:
    return (seq + 1) & 0xFF


class SeqVerdict(enum.Enum):
    NEW = "new"                  # execute, cache the reply, advance
    DUPLICATE = "duplicate"      # retransmission of the last accepted frame: do not execute, resend reply
    OUT_OF_SEQUENCE = "out_of_sequence"   # NAK BAD_SEQUENCE, nothing applied


@dataclass
class SequenceTracker:
    """The device's sequence rule (the gateware implements the same).

    * Before any frame was accepted (power-up, or :meth:`forget`) any ``seq`` is NEW.
    * IDENTIFY is always NEW: it has no side effects and (re)establishes the sequence.
    * ``seq == last + 1 (mod 256)`` is NEW.
    * ``seq == last`` with the same ``cmd`` is a DUPLICATE: the host did not get the reply and
      retransmitted. It is never executed again; the device re-sends the cached reply (RUN_STEPS),
      a bare ACK (writes, RESET_STATE), or re-executes a read (side-effect free).
    * Anything else is OUT_OF_SEQUENCE (NAK BAD_SEQUENCE, nothing applied).

    A frame classified NEW is *accepted* (call :meth:`accept`) once its command starts executing,
    whether it then ends in ACK or in a command-level NAK (BAD_ADDRESS, BAD_VALUE, ...). Frames
    refused for BUSY, BAD_SEQUENCE or link errors are not accepted, so the host retries them with
    the same ``seq``.
    """
    last_seq: int | None = None
    last_cmd: int | None = None

    def classify(self, cmd: int, seq: int) -> SeqVerdict:
        if self.last_seq is None or cmd == Command.IDENTIFY:
            return SeqVerdict.NEW
        if seq == next_seq(self.last_seq):
            return SeqVerdict.NEW
        if seq == self.last_seq and cmd == self.last_cmd:
            return SeqVerdict.DUPLICATE
        return SeqVerdict.OUT_OF_SEQUENCE

    def accept(self, cmd: int, seq: int) -> None:
        self.last_seq, self.last_cmd = seq, cmd

    def forget(self) -> None:
        self.last_seq = self.last_cmd = None


# ====================================================================== registers
class Access(enum.Enum):
    RO = "ro"
    RW = "rw"


class ResetMask(enum.IntFlag):
    """RESET_STATE payload (u8): what to clear. Weights and B are never touched (write them).

    Which words and registers each class clears is data: the ``reset_class`` of every
    :class:`MemorySpace` and :class:`Register` (what the gateware engine and the model board both
    follow), plus, for ``DYNAMICS``, the error-delay rings, which have no memory space.
    """
    DYNAMICS = 0x01      # neuron, pre and filter words (U, I, ref, S, σ', z, ẑ, e, e1, e2, rate, racc), delay rings
    LEARNING = 0x02      # synapse words but the weights (el, elf, m, q)
    COUNTERS = 0x04      # STEP_COUNT, CYCLES, CHUNK_PHASE, CHUNK_COUNT
    LINK = 0x08          # link counters; also forgets the sequence (next seq is NEW)


RESET_ALL = ResetMask.DYNAMICS | ResetMask.LEARNING | ResetMask.COUNTERS


@dataclass(frozen=True)
class Register:
    """One 32-bit-addressed register of the register file (READ_REG / WRITE_REG).

    ``reset`` is an integer, or the name of a :class:`Params` attribute (e.g. ``"r0_q"``) or a
    device constant in braces (``"{clock_hz}"``) when it depends on the build. ``width`` bits are
    meaningful; words travel as u32, upper bits read 0 and are ignored on write. ``core_index``
    is the register's index in the Core's ``REG`` access space when the Core holds it (see
    :data:`CORE_REGISTERS`), None when the protocol engine does. ``reset_class`` is the
    ``RESET_STATE`` class that clears it (None: never cleared).
    """
    name: str
    addr: int
    width: int
    reset: int | str
    access: Access
    description: str
    core_index: int | None = None
    reset_class: ResetMask | None = None

    def reset_value(self, params: Params | None = None, **device) -> int | None:
        if isinstance(self.reset, int):
            return self.reset
        if self.reset.startswith("{"):
            return device.get(self.reset.strip("{}"))
        return None if params is None else int(getattr(params, self.reset))


_RO, _RW = Access.RO, Access.RW
_COUNTERS, _LINK = ResetMask.COUNTERS, ResetMask.LINK


@dataclass(frozen=True)
class CoreRegister:
    """One register of the Core's ``REG`` access space (``hdl`` ``Reg``), declared once.

    The Core's ``Reg`` enum (name → ``index``) and the Core-held entries of :data:`REGISTERS`
    (``addr`` and the rest) are both built from :data:`CORE_REGISTERS`, so a Core register is
    either reachable over the link or says here why not (``unreachable``, with ``addr`` None).
    Plain data: no Amaranth (the protocol stays importable without it).
    """
    name: str
    index: int                   # in the Core's REG space (acc_index with acc_space = REG)
    addr: int | None             # protocol register address, None when not reachable
    width: int
    reset: int | str
    access: Access
    description: str
    reset_class: ResetMask | None = None
    unreachable: str = ""        # why there is no protocol register (when addr is None)

    def __post_init__(self):
        if (self.addr is None) != bool(self.unreachable):
            raise ValueError(f"core register {self.name}: a register without an address must say "
                             f"why it is unreachable, and only such a one")

    def register(self) -> Register:
        """The protocol register (READ_REG / WRITE_REG) this Core register is."""
        return Register(self.name, self.addr, self.width, self.reset, self.access, self.description,
                        self.index, self.reset_class)


#: The Core's own registers (``Space.REG`` of its access port), in index order: the source of the
#: Core's ``Reg`` enum and of the first entries of :data:`REGISTERS`.
CORE_REGISTERS: tuple[CoreRegister, ...] = (
    CoreRegister("R0", 0, 0x00, 16, "r0_q", _RW, "RMaxProp step r0 in weight LSBs (runtime learning rate; width of `formats[\"w\"]`)"),
    CoreRegister("STEP_COUNT", 1, 0x01, 32, 0, _RW, "Steps completed since reset", _COUNTERS),
    CoreRegister("CYCLES", 2, 0x02, 32, 0, _RO, "Clock cycles the last step took", _COUNTERS),
    CoreRegister("CHUNK_PHASE", 3, 0x03, 20, 0, _RW, "STEP_COUNT mod chunk_steps (steps into the current chunk)", _COUNTERS),
    CoreRegister("DELAY_SLOT", 4, None, 7, 0, _RW,
                 "error_delay ring slot written by the next step, 0..error_delay (error_delay > 0 only)",
                 unreachable="it only indexes the Core's error-delay rings (access spaces SDLY / ZDLY), "
                 "which are no memory space either; RESET_STATE DYNAMICS zeroes the rings, after which "
                 "the slot's value cannot be observed. Giving it an address would change the engine "
                 "(and PROTOCOL_VERSION)"),
)

#: The register map: the Core's reachable registers (:data:`CORE_REGISTERS`, read and written
#: through its access port), then those the protocol engine holds.
REGISTERS: tuple[Register, ...] = (
    *(r.register() for r in CORE_REGISTERS if r.addr is not None),
    Register("CHUNK_COUNT", 0x04, 32, 0, _RO, "Chunk ends (weight updates) completed since reset", reset_class=_COUNTERS),
    Register("STATUS", 0x08, 8, 0, _RO, "bit 0 busy (a RUN_STEPS batch executing), "
             "bit 2 a link error occurred since the counters were cleared"),
    Register("MAGIC", 0x0C, 32, int.from_bytes(MAGIC, "little"), _RO, "0x4C4B5053 (\"SPKL\" as bytes, little-endian)"),
    Register("VERSION", 0x0D, 16, PROTOCOL_VERSION, _RO, "Protocol version"),
    Register("CLOCK_HZ", 0x0E, 32, "{clock_hz}", _RO, "Core clock frequency in Hz"),
    Register("BAUD", 0x0F, 32, "{baud}", _RO, "UART bit rate"),
    Register("FRAMES_OK", 0x10, 32, 0, _RW, "Frames received that passed every link check", reset_class=_LINK),
    Register("CRC_ERRORS", 0x11, 16, 0, _RW, "Bodies rejected for a bad CRC", reset_class=_LINK),
    Register("FRAMING_ERRORS", 0x12, 16, 0, _RW, "Bodies rejected for malformed COBS or shortness", reset_class=_LINK),
    Register("LENGTH_ERRORS", 0x13, 16, 0, _RW, "Bodies rejected for a length mismatch or oversize", reset_class=_LINK),
    Register("RESYNCS", 0x14, 16, 0, _RW, "Delimiters found after hunting through garbage", reset_class=_LINK),
    Register("GARBAGE_BYTES", 0x15, 32, 0, _RW, "Bytes discarded while hunting for a delimiter", reset_class=_LINK),
    Register("NAKS_SENT", 0x16, 16, 0, _RW, "NAK replies sent (any reason)", reset_class=_LINK),
    Register("DUPLICATES", 0x17, 16, 0, _RW, "Retransmitted requests answered without re-executing", reset_class=_LINK),
    Register("UART_OVERRUNS", 0x18, 16, 0, _RW, "Bytes lost because the receiver was full", reset_class=_LINK),
)

_REG_BY_NAME = {r.name: r for r in REGISTERS}


def register_max(reg: Register, p: Params) -> int:
    """The largest value a WRITE_REG may store in ``reg`` (bits above ``width`` are dropped
    first); a larger one is refused with ``BAD_VALUE``, nothing applied. R0 is a non-negative
    weight step of ``r0_bits``; CHUNK_PHASE counts below ``chunk_steps``."""
    if reg.name == "R0":
        return (1 << p.r0_bits) - 1
    if reg.name == "CHUNK_PHASE":
        return p.chunk_steps - 1
    return (1 << reg.width) - 1


def register(name: str) -> Register:
    try:
        return _REG_BY_NAME[name]
    except KeyError:
        raise KeyError(f"register must be one of {', '.join(_REG_BY_NAME)}, not {name!r}") from None


# ====================================================================== memory spaces
@dataclass(frozen=True)
class WordFormat:
    """How one memory word travels: ``bits`` wide, signed or not, in ``nbytes`` little-endian bytes."""
    bits: int
    signed: bool

    @property
    def nbytes(self) -> int:
        return -(-self.bits // 8)

    @property
    def min(self) -> int:
        return int_range(self.bits, self.signed)[0]

    @property
    def max(self) -> int:
        return int_range(self.bits, self.signed)[1]


@dataclass(frozen=True)
class MemorySpace:
    """One state variable of the golden model's snapshot, addressable word by word.

    ``name`` is the snapshot key (``"out.w"``, ``"err.e1"``, ``"fb"``); indices run row-major over
    the snapshot array without its batch axis (synapse ``(i, j)`` is ``i·n_pre + j``).
    ``reset_class`` is the ``RESET_STATE`` class that zeroes every word of the space (None: never
    cleared, as the weights and B).
    """
    name: str
    id: int
    kind: str            # "neuron" | "pre" | "synapse" | "filter" | "feedback"
    fmt_name: str | None  # key of Params.formats, or None for the fixed formats below
    present_text: str
    present_fn: Callable[[Params], bool]
    description: str
    reset_class: ResetMask | None = None

    @property
    def layer(self) -> str:
        return self.name.split(".")[0]

    def _dims(self, p: Params) -> tuple[int, int]:
        """``(n_pre, n_post)`` of this space's layer."""
        if self.layer == "hid":
            return p.n_in, p.n_hidden
        if self.layer == "out":
            return (p.n_hidden or p.n_in), p.n_out
        return 0, p.n_out

    def present(self, p: Params) -> bool:
        if self.layer == "hid" and not p.n_hidden:
            return False
        return self.present_fn(p)

    def depth(self, p: Params) -> int:
        n_pre, n_post = self._dims(p)
        return {"neuron": n_post, "pre": n_pre, "synapse": n_post * n_pre, "filter": p.n_out,
                "feedback": p.n_hidden * p.n_out}[self.kind]

    @property
    def depth_text(self) -> str:
        if self.kind == "feedback":
            return "n_hidden·n_out"
        if self.kind == "filter":
            return "n_out"
        pre, post = ("n_in", "n_hidden") if self.layer == "hid" else ("n_pre", "n_out")
        return {"neuron": post, "pre": pre, "synapse": f"{post}·{pre}"}[self.kind]

    def word(self, p: Params) -> WordFormat:
        if self.fmt_name is not None:
            f = p.formats[self.fmt_name]
            return WordFormat(f.bits, f.signed)
        w = self.name.split(".")[-1]
        return _PARAM_WORDS[w](p) if w in _PARAM_WORDS else _FIXED_WORDS[w]


_FIXED_WORDS = {"S": WordFormat(1, False), "racc": WordFormat(47, False)}
#: Words whose width depends on the parameters (``ref`` holds ``refractory_steps``: one byte on
#: the wire, and a written value wider than ``ref_bits`` is refused).
_PARAM_WORDS = {"ref": lambda p: WordFormat(p.ref_bits, False)}

_always = lambda p: True  # noqa: E731
_DYN, _LRN = ResetMask.DYNAMICS, ResetMask.LEARNING
_LAYER_WORDS = (
    # word, kind, format, present text, present fn, description, cleared by RESET_STATE
    ("U", "neuron", "u", "always", _always, "membrane potential", _DYN),
    ("I", "neuron", "i", "always", _always, "synaptic current", _DYN),
    ("ref", "neuron", None, "always", _always, "refractory steps left", _DYN),
    ("S", "neuron", None, "always", _always, "spike of the last step (0/1)", _DYN),
    ("sigma", "neuron", "sigma", "always", _always, "surrogate derivative σ'", _DYN),
    ("z", "pre", "z", "always", _always, "presynaptic trace", _DYN),
    ("zh", "pre", "zh", "always", _always, "filtered presynaptic trace ẑ", _DYN),
    ("el", "synapse", "el", "kernel ≠ factorised", lambda p: "el" in p.kernel.traces,
     "eligibility trace", _LRN),
    ("elf", "synapse", "elf", "kernel = double_exp", lambda p: "elf" in p.kernel.traces,
     "filtered eligibility trace", _LRN),
    ("m", "synapse", "m", "always", _always, "gradient accumulator", _LRN),
    ("q", "synapse", "q", "optimiser = rmaxprop", lambda p: p.optimiser is Optimiser.RMAXPROP,
     "RMaxProp normaliser", _LRN),
    ("w", "synapse", "w", "always", _always, "weight", None),
    ("e", "neuron", "err", "always", _always, "error reaching the neuron", _DYN),
    ("rate", "neuron", "rate", "regulariser", lambda p: p.regulariser, "postsynaptic rate trace", _DYN),
    ("racc", "neuron", None, "regulariser", lambda p: p.regulariser, "Σ rate^a over the chunk (47 b)",
     _DYN),
)


def _make_spaces() -> tuple[MemorySpace, ...]:
    out = []
    for base, layer in ((0x00, "out"), (0x10, "hid")):
        pres = "" if layer == "out" else "n_hidden > 0"
        for k, (w, kind, fmt, ptext, pfn, desc, reset) in enumerate(_LAYER_WORDS):
            text = ", ".join(t for t in (pres, "" if ptext == "always" else ptext) if t) or "always"
            out.append(MemorySpace(f"{layer}.{w}", base + k, kind, fmt, text, pfn, desc, reset))
    target = lambda p: p.error_source is ErrorSource.TARGET  # noqa: E731
    out.append(MemorySpace("err.e1", 0x20, "filter", "err", "error_source = target", target,
                           "on-chip error filter, first stage", _DYN))
    out.append(MemorySpace("err.e2", 0x21, "filter", "err", "error_source = target", target,
                           "on-chip error filter, second stage (= out.e)", _DYN))
    out.append(MemorySpace("fb", 0x22, "feedback", "fb", "n_hidden > 0, feedback ≠ symmetric",
                           lambda p: p.n_hidden > 0 and p.feedback is not Feedback.SYMMETRIC,
                           "feedback matrix B, index k·n_out + i"))
    return tuple(out)


#: Every memory space the protocol knows, present or not for a given ``Params``.
SPACES: tuple[MemorySpace, ...] = _make_spaces()
_SPACE_BY_NAME = {s.name: s for s in SPACES}
_SPACE_BY_ID = {s.id: s for s in SPACES}


def space(key: str | int) -> MemorySpace:
    """A space by snapshot name or id."""
    table = _SPACE_BY_ID if isinstance(key, int) else _SPACE_BY_NAME
    try:
        return table[key]
    except KeyError:
        raise KeyError(f"no memory space {key!r}") from None


def spaces_for(p: Params) -> list[MemorySpace]:
    """The spaces a device built for ``p`` has."""
    return [s for s in SPACES if s.present(p)]


# ====================================================================== payloads
#: READ_REG / WRITE_REG request head: first address u16, count u16.
REG_REQ = struct.Struct("<HH")
#: READ_MEM / WRITE_MEM request head: space id u8, first index u32, count u16.
MEM_REQ = struct.Struct("<BIH")
#: RUN_STEPS request head: K u16 (steps in this batch).
RUN_REQ = struct.Struct("<H")
#: RUN_STEPS reply head: STEP_COUNT after the batch u32, K u16.
RUN_REPLY = struct.Struct("<IH")


def pack_words(words: Iterable[int], fmt: WordFormat) -> bytes:
    """Little-endian words of ``fmt.nbytes`` bytes; signed words are sign-extended.

    Raises
    ------
    ValueError
        If a word is outside ``fmt``'s range.
    """
    out = bytearray()
    n = fmt.nbytes
    for w in words:
        w = int(w)
        if not fmt.min <= w <= fmt.max:
            raise ValueError(f"word must be in {fmt.min}..{fmt.max}, not {w}")
        out += w.to_bytes(n, "little", signed=fmt.signed)
    return bytes(out)


def unpack_words(data: bytes, fmt: WordFormat) -> list[int]:
    n = fmt.nbytes
    if len(data) % n:
        raise ValueError(f"word data must be a multiple of {n} bytes, not {len(data)}")
    return [int.from_bytes(data[k:k + n], "little", signed=fmt.signed) for k in range(0, len(data), n)]


_U32 = WordFormat(32, False)


def pack_read_reg(addr: int, count: int = 1) -> bytes:
    return REG_REQ.pack(addr, count)


def pack_write_reg(addr: int, values: Sequence[int]) -> bytes:
    return REG_REQ.pack(addr, len(values)) + pack_words(values, _U32)


def unpack_reg_request(payload: bytes, write: bool) -> tuple[int, int, list[int]]:
    """``(addr, count, values)``; raises ValueError if the payload size is wrong (→ BAD_LENGTH)."""
    if len(payload) < REG_REQ.size:
        raise ValueError("register request too short")
    addr, count = REG_REQ.unpack_from(payload)
    rest = payload[REG_REQ.size:]
    if len(rest) != (4 * count if write else 0):
        raise ValueError(f"register request of {count} words has {len(rest)} data bytes")
    return addr, count, unpack_words(rest, _U32) if write else []


def pack_read_mem(space_id: int, start: int, count: int) -> bytes:
    return MEM_REQ.pack(space_id, start, count)


def pack_write_mem(space_id: int, start: int, words: Sequence[int], fmt: WordFormat) -> bytes:
    return MEM_REQ.pack(space_id, start, len(words)) + pack_words(words, fmt)


def unpack_mem_request(payload: bytes) -> tuple[int, int, int, bytes]:
    """``(space_id, start, count, word_bytes)``."""
    if len(payload) < MEM_REQ.size:
        raise ValueError("memory request too short")
    sid, start, count = MEM_REQ.unpack_from(payload)
    return sid, start, count, payload[MEM_REQ.size:]


def bitmap_bytes(n: int) -> int:
    return -(-n // 8)


def pack_bitmap(bits: Iterable, n: int | None = None) -> bytes:
    """Spike vector → bytes: neuron ``j`` is bit ``j mod 8`` (LSB first) of byte ``j div 8``."""
    bits = list(bits)
    if n is not None and len(bits) != n:
        raise ValueError(f"bitmap must have {n} entries, not {len(bits)}")
    out = bytearray(bitmap_bytes(len(bits)))
    for j, b in enumerate(bits):
        if b:
            out[j >> 3] |= 1 << (j & 7)
    return bytes(out)


def unpack_bitmap(data: bytes, n: int) -> list[bool]:
    if len(data) != bitmap_bytes(n):
        raise ValueError(f"a bitmap of {n} entries is {bitmap_bytes(n)} bytes, not {len(data)}")
    return [bool(data[j >> 3] >> (j & 7) & 1) for j in range(n)]


def _step_record_size(p: Params, source: ErrorSource) -> int:
    if source is ErrorSource.TARGET:
        return bitmap_bytes(p.n_in) + bitmap_bytes(p.n_out)
    return bitmap_bytes(p.n_in) + p.n_out * WordFormat(p.formats["err"].bits, True).nbytes


def pack_run_steps(p: Params, inputs: Sequence, targets: Sequence | None = None,
                   errors: Sequence | None = None) -> bytes:
    """RUN_STEPS payload: K u16, then per step the input bitmap and either the target bitmap
    (``error_source = target``) or ``n_out`` error words in the 'err' format (``host``).
    Missing targets/errors are sent as zeros."""
    K = len(inputs)
    if not 1 <= K <= 0xFFFF:
        raise ValueError(f"a batch must have 1..65535 steps, not {K}")
    out = bytearray(RUN_REQ.pack(K))
    ef = WordFormat(p.formats["err"].bits, True)
    for n in range(K):
        out += pack_bitmap(inputs[n], p.n_in)
        if p.error_source is ErrorSource.TARGET:
            out += pack_bitmap(targets[n] if targets is not None else [0] * p.n_out, p.n_out)
        else:
            out += pack_words(errors[n] if errors is not None else [0] * p.n_out, ef)
    return bytes(out)


def unpack_run_steps(p: Params, payload: bytes) -> tuple[list[list[bool]], list[list]]:
    """``(inputs, targets_or_errors)`` per step; raises ValueError on a size mismatch."""
    if len(payload) < RUN_REQ.size:
        raise ValueError("RUN_STEPS payload too short")
    (K,) = RUN_REQ.unpack_from(payload)
    rec = _step_record_size(p, p.error_source)
    if K == 0 or len(payload) != RUN_REQ.size + K * rec:
        raise ValueError(f"RUN_STEPS of {K} steps must be {RUN_REQ.size + K * rec} bytes, not {len(payload)}")
    bi, ef = bitmap_bytes(p.n_in), WordFormat(p.formats["err"].bits, True)
    inputs, second = [], []
    for n in range(K):
        r = payload[RUN_REQ.size + n * rec: RUN_REQ.size + (n + 1) * rec]
        inputs.append(unpack_bitmap(r[:bi], p.n_in))
        if p.error_source is ErrorSource.TARGET:
            second.append(unpack_bitmap(r[bi:], p.n_out))
        else:
            second.append(unpack_words(r[bi:], ef))
    return inputs, second


def pack_run_reply(p: Params, step_count: int, outputs: Sequence) -> bytes:
    """ACK payload of RUN_STEPS: STEP_COUNT after the batch u32, K u16, K output bitmaps."""
    out = bytearray(RUN_REPLY.pack(step_count & 0xFFFFFFFF, len(outputs)))
    for o in outputs:
        out += pack_bitmap(o, p.n_out)
    return bytes(out)


def unpack_run_reply(p: Params, payload: bytes) -> tuple[int, list[list[bool]]]:
    step_count, K = RUN_REPLY.unpack_from(payload)
    bo = bitmap_bytes(p.n_out)
    if len(payload) != RUN_REPLY.size + K * bo:
        raise ValueError(f"RUN_STEPS reply of {K} steps must be {RUN_REPLY.size + K * bo} bytes")
    return step_count, [unpack_bitmap(payload[RUN_REPLY.size + n * bo: RUN_REPLY.size + (n + 1) * bo],
                                      p.n_out) for n in range(K)]


# ---------------------------------------------------------------------- IDENTIFY
class IdentifyFlags(enum.IntFlag):
    """IDENTIFY request flags (the first payload byte; an empty payload is flags 0, nonce 0)."""
    OPEN = 0x01        # open a session for this host (its nonce names the request)
    TAKEOVER = 0x02    # with OPEN: end another host's session and open this one
    CLOSE = 0x04       # end the frame's session (the board is free again)


#: IDENTIFY request payload: flags u8 (:class:`IdentifyFlags`), nonce u32 (host-chosen).
IDENTIFY_REQ = struct.Struct("<BI")
#: The start of every IDENTIFY reply: the request's nonce u32 echoed, then the device's session
#: u16 after the request (0: none open). The static identity (:data:`IDENT`) follows.
SESSION_HEAD = struct.Struct("<IH")


def pack_identify_request(flags: int = 0, nonce: int = 0) -> bytes:
    """IDENTIFY's request payload; flags 0 and nonce 0 is the empty payload (a plain IDENTIFY)."""
    flags, nonce = int(flags), int(nonce)
    if not 0 <= flags <= 0xFF or not 0 <= nonce <= 0xFFFFFFFF:
        raise ValueError(f"IDENTIFY flags must be a byte and nonce a u32, not {flags!r}, {nonce!r}")
    return b"" if flags == 0 and nonce == 0 else IDENTIFY_REQ.pack(flags, nonce)


def unpack_identify_request(payload: bytes) -> tuple[int, int]:
    """``(flags, nonce)`` of an IDENTIFY request; ``ValueError`` unless it is 0 or 5 bytes."""
    if len(payload) == 0:
        return 0, 0
    if len(payload) != IDENTIFY_REQ.size:
        raise ValueError(f"an IDENTIFY payload must be empty or {IDENTIFY_REQ.size} bytes, not {len(payload)}")
    return IDENTIFY_REQ.unpack(payload)


def session_for(nonce: int, opened: int) -> tuple[int, int]:
    """The session the device opens for ``nonce`` when it has opened ``opened`` before (mod 2^16):
    ``(session, opened after)``. The count makes a replayed OPEN get a new session, and the nonce
    makes a device that lost its count (power cycle) unlikely to repeat one; 0 is never a session."""
    lo = nonce & 0xFFFF
    c = (opened + 1) & 0xFFFF
    if lo ^ c == 0:
        c = (c + 1) & 0xFFFF
    return lo ^ c, c


@dataclass
class SessionState:
    """The device's session rule (the gateware implements the same; docs/protocol.md, Sessions).

    ``session`` 0 means none is open: then frames carrying session 0 are executed (a host that
    never opens one); once a session is open, only frames carrying it are.
    """
    session: int = 0
    nonce: int = 0
    opened: int = 0

    def admits(self, frame_session: int) -> bool:
        """Whether a request other than IDENTIFY may execute."""
        return frame_session == self.session

    def identify(self, frame_session: int, flags: int, nonce: int):
        """Apply IDENTIFY's session part: ``None`` (accepted, applied) or the NAK reason (nothing
        changed). ``flags`` must already be valid (:func:`identify_flags_ok`)."""
        if flags & IdentifyFlags.OPEN:
            if self.session and nonce == self.nonce:
                return None                       # a retransmitted OPEN: the same session again
            if self.session and not flags & IdentifyFlags.TAKEOVER:
                return Nak.IN_USE
            self.session, self.opened = session_for(nonce, self.opened)
            self.nonce = nonce
            return None
        if frame_session != self.session:
            return Nak.BAD_SESSION
        if flags & IdentifyFlags.CLOSE:
            self.session = self.nonce = 0
        return None


def identify_flags_ok(flags: int) -> bool:
    """OPEN, OPEN | TAKEOVER, CLOSE or none; nothing else."""
    return flags in (0, IdentifyFlags.OPEN, IdentifyFlags.OPEN | IdentifyFlags.TAKEOVER, IdentifyFlags.CLOSE)


#: IDENTIFY reply head (after :data:`SESSION_HEAD`): magic 4s, version u16, lanes u16, n_in u32, n_hidden u32, n_out u32,
#: clock_hz u32, baud u32, max_payload u16, max_steps u16, json_len u16; then json_len bytes of
#: compact UTF-8 JSON of ``Params.to_dict()`` (sorted keys), which carries every format.
IDENT = struct.Struct("<4sHHIIIIIHHH")


@dataclass(frozen=True)
class Identity:
    """What IDENTIFY reports: the device's parameters and link limits."""
    params: Params
    lanes: int = 1
    clock_hz: int = 12_000_000
    baud: int = 3_000_000
    max_payload: int = DEFAULT_MAX_PAYLOAD
    max_steps: int = 0          # largest K per RUN_STEPS (0: as many as fit max_payload)
    version: int = PROTOCOL_VERSION
    nonce: int = 0              # the request's nonce, echoed
    session: int = 0            # the device's session after the request (0: none open)


def pack_identify(ident: Identity) -> bytes:
    p = ident.params
    js = json.dumps(p.to_dict(), separators=(",", ":"), sort_keys=True).encode()
    return SESSION_HEAD.pack(ident.nonce, ident.session) + IDENT.pack(MAGIC, ident.version, ident.lanes, p.n_in, p.n_hidden, p.n_out, ident.clock_hz,
                      ident.baud, ident.max_payload, ident.max_steps, len(js)) + js


def _params_schema() -> dict:
    """``Params.to_dict()`` of the defaults: the keys and JSON types an IDENTIFY must carry."""
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = Params().to_dict()
    return _SCHEMA


_SCHEMA: dict | None = None


def _json_kind(v) -> str:
    """The JSON name of a decoded value's type, for messages."""
    if v is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(v), type(v).__name__)


def _same_kind(v, like) -> bool:
    """Whether JSON value ``v`` has the type of the default ``like`` (an integer passes for a number)."""
    if isinstance(like, bool) or isinstance(v, bool):
        return isinstance(like, bool) and isinstance(v, bool)
    if isinstance(like, float):
        return isinstance(v, (int, float))
    return isinstance(v, type(like))


def _check_keys(where: str, d: dict, expected) -> None:
    missing = [k for k in expected if k not in d]
    extra = sorted(set(d) - set(expected), key=str)
    if missing or extra:
        what = "; ".join(t for t in (missing and f"missing {', '.join(missing)}",
                                     extra and f"unexpected {', '.join(map(repr, extra))}") if t)
        keys = ", ".join(expected) if len(expected) <= 5 else "of Params.to_dict()"
        raise ValueError(f"IDENTIFY JSON {where} must have exactly the keys {keys} ({what})")


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _check_params_json(d) -> None:
    """Check the shape of the IDENTIFY JSON against ``Params.to_dict()`` before building Params
    from it, so that a malformed one is a ValueError naming the field, never a TypeError."""
    schema = _params_schema()
    if not isinstance(d, dict):
        raise ValueError(f"IDENTIFY JSON must be an object of Params fields, not {_json_kind(d)} {d!r:.40}")
    _check_keys("object", d, schema)
    for key, like in schema.items():
        v = d[key]
        if key == "formats":
            if not isinstance(v, dict):
                raise ValueError(f"IDENTIFY JSON formats must be an object, not {_json_kind(v)} {v!r:.40}")
            _check_keys("formats", v, like)
            for name, fmt_like in like.items():
                f = v[name]
                if not isinstance(f, dict):
                    raise ValueError(f"IDENTIFY JSON formats[{name!r}] must be an object "
                                     f"{{{', '.join(fmt_like)}}}, not {_json_kind(f)} {f!r:.40}")
                _check_keys(f"formats[{name!r}]", f, fmt_like)
                for k, kl in fmt_like.items():
                    if not _same_kind(f[k], kl):
                        raise ValueError(f"IDENTIFY JSON formats[{name!r}].{k} must be {_a(_json_kind(kl))}, "
                                         f"not {_json_kind(f[k])} {f[k]!r:.40}")
        elif key == "decay_codes":
            if not isinstance(v, dict):
                raise ValueError(f"IDENTIFY JSON decay_codes must be an object, not {_json_kind(v)} {v!r:.40}")
            for name, c in v.items():
                if not (isinstance(c, list) and len(c) == 2
                        and all(isinstance(x, int) and not isinstance(x, bool) for x in c)):
                    raise ValueError(f"IDENTIFY JSON decay_codes[{name!r}] must be [M, K] (two integers), "
                                     f"not {c!r:.40}")
        elif not _same_kind(v, like):
            raise ValueError(f"IDENTIFY JSON {key} must be {_a(_json_kind(like))}, not {_json_kind(v)} {v!r:.40}")


def min_max_payload(p: Params) -> int:
    """The smallest ``max_payload`` a device of ``p`` may report: one register write, one write
    of the widest word of its spaces, and a RUN_STEPS of one step (request and reply) must fit,
    since the driver splits every transfer into such pieces and cannot go smaller."""
    widest = max((s.word(p).nbytes for s in spaces_for(p)), default=0)
    return max(REG_REQ.size + _U32.nbytes, MEM_REQ.size + widest,
               RUN_REQ.size + _step_record_size(p, p.error_source), RUN_REPLY.size + bitmap_bytes(p.n_out))


def unpack_identify(payload: bytes) -> Identity:
    """Decode and check an IDENTIFY reply completely.

    Raises
    ------
    ValueError
        Whatever the bytes are, if they are not an identity a driver can work with: the message
        names the field, its value and what was expected (magic, lengths, the JSON's keys and
        types, Params' own checks, lanes ≥ 1, clock_hz > 0, baud > 0, max_payload at least
        :func:`min_max_payload`). Never another exception.
    """
    payload = bytes(payload)
    head = SESSION_HEAD.size + IDENT.size
    if len(payload) < head:
        raise ValueError(f"IDENTIFY reply must be at least {head} B, not {len(payload)}")
    nonce, session = SESSION_HEAD.unpack_from(payload)
    payload = payload[SESSION_HEAD.size:]
    magic, ver, lanes, n_in, n_hid, n_out, clk, baud, maxp, maxk, jl = IDENT.unpack_from(payload)
    if magic != MAGIC:
        raise ValueError(f"IDENTIFY magic must be {MAGIC!r}, not {magic!r}")
    if len(payload) != IDENT.size + jl:
        raise ValueError(f"IDENTIFY JSON length mismatch: json_len is {jl}, "
                         f"but {len(payload) - IDENT.size} B follow the head")
    try:
        d = json.loads(payload[IDENT.size:].decode("utf-8"))
    except (ValueError, RecursionError) as e:      # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"IDENTIFY JSON is not valid UTF-8 JSON: {e}") from None
    _check_params_json(d)
    try:
        p = Params.from_dict(d)
    except (ValueError, TypeError, ArithmeticError) as e:
        raise ValueError(f"IDENTIFY JSON is not a valid Params: {e}") from None
    if (p.n_in, p.n_hidden, p.n_out) != (n_in, n_hid, n_out):
        raise ValueError(f"IDENTIFY sizes disagree with its JSON: n_in, n_hidden, n_out are "
                         f"{n_in}, {n_hid}, {n_out} in the head, {p.n_in}, {p.n_hidden}, {p.n_out} in the JSON")
    if lanes < 1:
        raise ValueError(f"IDENTIFY lanes must be at least 1, not {lanes}")
    if clk <= 0:
        raise ValueError(f"IDENTIFY clock_hz must be positive, not {clk}")
    if baud <= 0:
        raise ValueError(f"IDENTIFY baud must be positive, not {baud}")
    need = min_max_payload(p)
    if maxp < need:
        raise ValueError(f"IDENTIFY max_payload must be at least {need} B for these parameters "
                         f"(a register write, a write of the widest word, one RUN_STEPS step), not {maxp}")
    return Identity(p, lanes, clk, baud, maxp, maxk, ver, nonce, session)


def ack_payload_size(p: Params, cmd: int, request: bytes) -> int | None:
    """Bytes the ACK to ``request`` (a well-formed ``cmd`` payload) must carry, from the payload
    layouts above; None for IDENTIFY, whose reply gives its own length (:func:`unpack_identify`).

    Raises
    ------
    ValueError
        If ``cmd`` is not a request or ``request`` is too short for its head.
    """
    c = Command(cmd)
    if c is Command.IDENTIFY:
        return None
    if c in (Command.WRITE_REG, Command.WRITE_MEM, Command.RESET_STATE):
        return 0
    head = {Command.READ_REG: REG_REQ, Command.READ_MEM: MEM_REQ, Command.RUN_STEPS: RUN_REQ}.get(c)
    if head is None:
        raise ValueError(f"cmd must be a request, not {c.name}")
    if len(request) < head.size:
        raise ValueError(f"a {c.name} request must be at least {head.size} B, not {len(request)}")
    if c is Command.READ_REG:
        _, count = REG_REQ.unpack_from(request)
        return count * _U32.nbytes
    if c is Command.READ_MEM:
        sid, _, count = MEM_REQ.unpack_from(request)
        return count * space(sid).word(p).nbytes
    (k,) = RUN_REQ.unpack_from(request)
    return RUN_REPLY.size + k * bitmap_bytes(p.n_out)


# ====================================================================== wire cost
@dataclass(frozen=True)
class WireCost:
    """Bytes per step of RUN_STEPS, frame overhead amortised over K steps (worst-case COBS)."""
    down: float       # host → device
    up: float         # device → host
    k: int

    @property
    def total(self) -> float:
        return self.down + self.up


def batch_bytes(p: Params, k: int, error_source: ErrorSource | str | None = None) -> tuple[int, int]:
    """Wire bytes (down, up) of one RUN_STEPS request of ``k`` steps and its reply."""
    src = ErrorSource(error_source) if error_source is not None else p.error_source
    down = frame_wire_size(RUN_REQ.size + k * _step_record_size(p, src))
    up = frame_wire_size(RUN_REPLY.size + k * bitmap_bytes(p.n_out))
    return down, up


def bytes_per_step(p: Params, error_source: ErrorSource | str | None = None, k: int = 50) -> WireCost:
    """Bytes per step in each direction for batches of ``k`` steps (``k = 0``: payload only)."""
    src = ErrorSource(error_source) if error_source is not None else p.error_source
    if k == 0:
        return WireCost(_step_record_size(p, src), bitmap_bytes(p.n_out), 0)
    down, up = batch_bytes(p, k, src)
    return WireCost(down / k, up / k, k)


def projected_steps_per_s(p: Params, baud: float, k: int = 50, error_source=None,
                          pipelined: bool = False) -> float:
    """Steps per second the link allows (compute time ignored; 10 bits per byte).

    Stop-and-wait (one request outstanding, the default): request and reply take turns, so the
    time per batch is ``(down + up) · 10 / baud``. ``pipelined``: the host streams the next batch
    while the reply comes back (UART is full duplex), so it is ``max(down, up) · 10 / baud``.
    """
    down, up = batch_bytes(p, k, error_source)
    wire = max(down, up) if pipelined else down + up
    return k * baud / (BITS_PER_BYTE * wire)


def max_steps_per_frame(p: Params, max_payload: int = DEFAULT_MAX_PAYLOAD, error_source=None) -> int:
    """Largest K whose RUN_STEPS request and reply both fit ``max_payload``."""
    src = ErrorSource(error_source) if error_source is not None else p.error_source
    k_down = (max_payload - RUN_REQ.size) // _step_record_size(p, src)
    k_up = (max_payload - RUN_REPLY.size) // bitmap_bytes(p.n_out)
    return max(0, min(k_down, k_up, 0xFFFF))


# ====================================================================== generated documentation
def _hex(v: int, width: int = 2) -> str:
    return f"0x{v:0{width}X}"


def render_register_table() -> str:
    """Markdown table ``Name | Addr | Width | Reset | Description`` of :data:`REGISTERS`."""
    rows = ["| Name | Addr | Width | Reset | Description |", "|---|---|---|---|---|"]
    for r in REGISTERS:
        if isinstance(r.reset, int):
            reset = _hex(r.reset, 1) if r.reset > 9 else str(r.reset)
        elif r.reset.startswith("{"):
            reset = f"build: `{r.reset.strip('{}')}`"
        else:
            reset = f"`params.{r.reset}`"
        rows.append(f"| `{r.name}` | {_hex(r.addr)} | {r.width} | {reset} | {r.description} ({r.access.value}) |")
    return "\n".join(rows)


def render_core_register_note() -> str:
    """The Core registers that have no protocol address, and why (from :data:`CORE_REGISTERS`)."""
    rows = [f"`{r.name}` (Core `Reg` {r.index}, {r.width} bits, {r.access.value}: {r.description}) is "
            f"not reachable: {r.unreachable}." for r in CORE_REGISTERS if r.addr is None]
    held = ", ".join(f"`{r.name}`" for r in CORE_REGISTERS if r.addr is not None)
    return (f"{held} live in the Core (its access port's `REG` space, `hdl` `Reg`, both built from "
            f"`protocol.CORE_REGISTERS`); the engine holds the rest. " + " ".join(rows))


_RESET_EXTRA = {ResetMask.DYNAMICS: "the error-delay rings (`error_delay` > 0)",
                ResetMask.LINK: "then forgets the sequence (the next seq is new)"}


def render_reset_table() -> str:
    """Markdown table of what each ``RESET_STATE`` class clears (the ``reset_class`` data)."""
    rows = ["| Class | Bit | Clears |", "|---|---|---|"]
    for c in ResetMask:
        what = [f"`{s.name}`" for s in SPACES if s.reset_class is c]
        what += [f"`{r.name}`" for r in REGISTERS if r.reset_class is c]
        if c in _RESET_EXTRA:
            what.append(_RESET_EXTRA[c])
        rows.append(f"| `{c.name}` | {_hex(c.value)} | {', '.join(what)} |")
    return "\n".join(rows)


def render_space_table() -> str:
    rows = ["| Space | Id | Depth | Word | Present when | Description |", "|---|---|---|---|---|---|"]
    for s in SPACES:
        if s.fmt_name is not None:
            word = f"`formats[\"{s.fmt_name}\"]`"
        elif s.name.split(".")[-1] in _PARAM_WORDS:
            word = "U`ref_bits` (1 B)"
        else:
            f = _FIXED_WORDS[s.name.split(".")[-1]]
            word = f"{'S' if f.signed else 'U'}{f.bits} ({f.nbytes} B)"
        rows.append(f"| `{s.name}` | {_hex(s.id)} | {s.depth_text} | {word} | {s.present_text} | {s.description} |")
    return "\n".join(rows)


_COMMAND_DOC = {
    Command.IDENTIFY: ("(empty)", "`Identity`: see [IDENTIFY](#identify)"),
    Command.READ_REG: ("addr u16, count u16", "count × u32"),
    Command.WRITE_REG: ("addr u16, count u16, count × u32", "(empty)"),
    Command.READ_MEM: ("space u8, start u32, count u16", "count words"),
    Command.WRITE_MEM: ("space u8, start u32, count u16, count words", "(empty)"),
    Command.RUN_STEPS: ("K u16, K × (input bitmap ⌈n_in/8⌉ B, then target bitmap ⌈n_out/8⌉ B "
                        "or n_out × err word)", "step_count u32, K u16, K × output bitmap ⌈n_out/8⌉ B"),
    Command.RESET_STATE: ("mask u8 (`ResetMask`)", "(empty)"),
    Command.ACK: ("reply to the request with the same seq", "—"),
    Command.NAK: ("reason u8 (`Nak`), refused cmd u8", "—"),
}


def render_command_table() -> str:
    rows = ["| Command | Code | Request payload | ACK payload |", "|---|---|---|---|"]
    for c in Command:
        req, ack = _COMMAND_DOC[c]
        rows.append(f"| `{c.name}` | {_hex(c.value)} | {req} | {ack} |")
    return "\n".join(rows)


def render_nak_table() -> str:
    rows = ["| Reason | Code | Host retransmits | Meaning |", "|---|---|---|---|"]
    for r in Nak:
        rows.append(f"| `{r.name}` | {_hex(r.value)} | {'yes' if r in RETRANSMIT else 'no'} | {_NAK_TEXT[r]} |")
    return "\n".join(rows)


#: Networks the generated wire-cost table covers: (label, Params overrides, error source).
WIRE_TABLE_CASES = (
    ("100 in / 1 out", {"n_in": 100, "n_out": 1}, "target"),
    ("100 in / 1 out", {"n_in": 100, "n_out": 1}, "host"),
    ("256 in / 16 out", {"n_in": 256, "n_out": 16}, "target"),
    ("256 in / 16 out", {"n_in": 256, "n_out": 16}, "host"),
)


def render_wire_table(k: int = 50, bauds=(3_000_000, 12_000_000)) -> str:
    """Markdown table of :func:`bytes_per_step` and :func:`projected_steps_per_s` (stop-and-wait)."""
    head = "| network | errors | down B/step | up B/step | " + " | ".join(
        f"{b / 1e6:g} Mbaud steps/s" for b in bauds) + " |"
    rows = [head, "|---|---|---|---|" + "---|" * len(bauds)]
    for label, kw, src in WIRE_TABLE_CASES:
        p = Params(**kw)
        c = bytes_per_step(p, src, k)
        rates = " | ".join(f"{projected_steps_per_s(p, b, k, src):,.0f}" for b in bauds)
        rows.append(f"| {label} | {src} | {c.down:.2f} | {c.up:.2f} | {rates} |")
    return "\n".join(rows)


BEGIN_MARK = "<!-- BEGIN GENERATED by spikeloop.protocol.render_docs(); do not edit -->"
END_MARK = "<!-- END GENERATED -->"


def render_docs() -> str:
    """The generated part of ``docs/protocol.md`` (between the markers)."""
    return "\n\n".join([
        BEGIN_MARK,
        "### Commands", render_command_table(),
        "### NAK reasons", render_nak_table(),
        "### Registers",
        "All registers are read and written as u32 (upper bits read 0). Counters saturate at their "
        "width; `rw` counters are cleared by writing 0. Writing a `ro` register is refused "
        "(NAK `BAD_ADDRESS`, nothing applied).",
        render_register_table(),
        render_core_register_note(),
        "### Memory spaces", render_space_table(),
        "### What RESET_STATE clears",
        "Weights and B are never cleared (write them). A present space of the class is zeroed "
        "word by word; a register of the class is set to 0.",
        render_reset_table(),
        "### Wire cost of RUN_STEPS (K = 50, stop-and-wait, compute time ignored)", render_wire_table(),
        END_MARK,
    ])


def update_docs(path) -> bool:
    """Rewrite the generated block of ``path`` in place; returns True if it changed."""
    from pathlib import Path
    path = Path(path)
    text = path.read_text()
    a, b = text.index(BEGIN_MARK), text.index(END_MARK) + len(END_MARK)
    new = text[:a] + render_docs() + text[b:]
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":  # pragma: no cover
    import sys
    if len(sys.argv) > 1:
        print("updated" if update_docs(sys.argv[1]) else "unchanged")
    else:
        print(render_docs())

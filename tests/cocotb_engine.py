"""cocotb 2.x tests for the protocol engine (``hdl/engine.py``) on ``EngineCore`` or ``SoC``.

Run by ``tests/test_rtl_engine.py``. Test parameters (JSON)::

    {"params": Params.to_dict(), "lanes": P, "in_width": W, "max_payload": n,
     "clock_hz": f, "baud": b, "seed": s, "requests": n, "steps": n, "backpressure": 0.3,
     "stall": 0.2, "faults": n, "stats": path or null}

Every request goes to the RTL and to :class:`~spikeloop.host.virtual_board.VirtualBoard` (the
protocol's executable reference over the golden model); the replies must be byte-identical. On top
of that each test asserts what the reply must say (NAK reason, values read back, state unchanged
after a refusal), so a fault shared by both sides still fails.

* ``commands``: IDENTIFY, every register, WRITE_REG, READ_MEM / WRITE_MEM bursts over every space,
  RESET_STATE masks.
* ``refusals``: every NAK reason the engine can send, duplicates, out-of-sequence, IDENTIFY
  re-establishing the sequence, RESET_STATE LINK forgetting it; the state is unchanged after each.
* ``link_faults``: garbage then resync, truncated, bit-flipped and oversize bodies, empty bodies;
  counters against a host-side ``FrameDecoder`` fed the same bytes.
* ``golden_run``: weights from ``GoldenModel`` written with WRITE_MEM, RUN_STEPS batches; every
  output spike and, after each batch, every state word read with READ_MEM equals the golden model.
* ``random_stream``: a seeded random stream of valid and corrupted requests.
* ``boundaries``: the requests of ``boundary_transcript`` (every register and counter at its
  limits) for this build; the replies must equal the mirror's, and the saturated tops show.
* ``soc_uart``: the ``SoC`` through its ``rx`` / ``tx`` pins (8N1, ``clock_hz / baud`` clocks per bit).
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, Timer

from spikeloop import protocol as P
from spikeloop.hdl.config import CoreConfig, SoCConfig
from spikeloop.host.virtual_board import VirtualBoard
from spikeloop.params import ErrorSource, Params
from spikeloop.protocol import Command, Nak, ResetMask
from spikeloop.sim.golden import GoldenModel
from spikeloop.sim.cocotb_streams import StreamSink, StreamSource, random_pauses
from spikeloop.sim.rtl_runner import test_params

PARAMS = test_params()
U32 = P.WordFormat(32, False)
PERIOD_NS = 10


def setup():
    p = Params.from_dict(PARAMS["params"])
    return (p, int(PARAMS.get("lanes", 1)), int(PARAMS.get("in_width", 8)),
            int(PARAMS.get("max_payload", 1024)), int(PARAMS.get("clock_hz", 4_000_000)),
            int(PARAMS.get("baud", 1_000_000)), int(PARAMS.get("seed", 1)))


class TB:
    """Clock, reset, a byte driver on ``rx`` (random stalls), a byte monitor on ``tx`` (random
    backpressure) and the mirror :class:`VirtualBoard` every request also goes to."""

    def __init__(self, dut, uart: bool = False):
        self.dut = dut
        p, lanes, W, mp, clk, baud, seed = setup()
        self.p, self.lanes, self.W, self.max_payload = p, lanes, W, mp
        self.clock_hz, self.baud = clk, baud
        self.rng = random.Random(seed)
        self.nrng = np.random.default_rng(seed)
        self.backpressure = float(PARAMS.get("backpressure", 0.3))
        self.stall = float(PARAMS.get("stall", 0.2))
        self.max_steps = P.max_steps_per_frame(p, mp)
        self.vb = VirtualBoard(SoCConfig.build(p, lanes, W, clock_hz=clk, baud=baud, max_payload=mp),
                               max_steps=self.max_steps)
        self.uart = uart
        self._rx = None
        self.got = bytearray()
        self.seq = 0
        self.dec = P.FrameDecoder(max_payload=0xFFFF)

    async def start(self, clear: bool = True):
        """Clock and reset; with ``clear``, bring the Core's memories (which a reset does not
        clear, and which an earlier test in the same simulation has written) to the
        VirtualBoard's all-zero state, then clear the counters and the sequence."""
        d = self.dut
        Clock(d.clk, PERIOD_NS, unit="ns").start()
        if self.uart:
            d.rx.value = 1
        else:
            d.rx__valid.value = 0
            d.tx__ready.value = 0
            d.uart_lost.value = 0
        d.rst.value = 1
        await ClockCycles(d.clk, 3)
        await FallingEdge(d.clk)
        d.rst.value = 0
        cocotb.start_soon(self._uart_monitor() if self.uart else self._monitor())
        if clear:
            for sp in self.spaces():
                await self.write_mem(sp.name, [0] * sp.depth(self.p))
            # everything else the Core keeps in memory (delay lines): RESET_STATE, all of it
            await self.ack(Command.RESET_STATE, bytes([int(P.RESET_ALL | ResetMask.LINK)]))
            self.seq = 0

    # ------------------------------------------------------------------ byte streams
    async def _monitor(self):
        await StreamSink(self.dut, "tx", pause=random_pauses(self.rng, self.backpressure)).monitor(self.got)

    async def _send_stream(self, data: bytes):
        if self._rx is None:
            self._rx = StreamSource(self.dut, "rx", pause=random_pauses(self.rng, self.stall))
        await self._rx.send(data)

    # 8N1 over the SoC's pins: Python wakes once per bit (Timers), never per clock
    @property
    def bit_ns(self):
        return PERIOD_NS * round(self.clock_hz / self.baud)

    async def _send_uart(self, data: bytes):
        d = self.dut
        for b in data:
            for bit in [0] + [(b >> k) & 1 for k in range(8)] + [1]:
                d.rx.value = bit
                await Timer(self.bit_ns, unit="ns")

    async def _uart_monitor(self):
        d = self.dut
        while True:
            await FallingEdge(d.tx)
            await Timer(self.bit_ns // 2, unit="ns")
            if d.tx.value:
                continue                              # glitch, not a start bit
            v = 0
            for k in range(8):
                await Timer(self.bit_ns, unit="ns")
                v |= int(d.tx.value) << k
            await Timer(self.bit_ns, unit="ns")
            assert d.tx.value == 1, "tx: stop bit is 0"
            self.got.append(v)

    async def settle(self, limit_cycles: int = 2_000_000):
        """Wait until the engine is idle: not executing, not transmitting (and for the SoC, the
        UART's last byte has left)."""
        d = self.dut
        poll = 8 if not self.uart else 40
        for _ in range(limit_cycles // poll):
            await Timer(poll * PERIOD_NS, unit="ns")
            if int(d.status.value) & 3 == 0:
                if self.uart:
                    await Timer(12 * self.bit_ns, unit="ns")
                    if int(d.status.value) & 3:
                        continue
                return
        raise AssertionError(f"engine still busy after {limit_cycles} cycles")

    async def raw(self, data: bytes, mirror: bool = True) -> list:
        """Send raw bytes, wait for the engine to settle; the reply frames. With ``mirror`` the
        VirtualBoard gets the same bytes and its reply bytes must be identical."""
        self.got.clear()
        await (self._send_uart(data) if self.uart else self._send_stream(data))
        await self.settle()
        got = bytes(self.got)
        if mirror:
            want = self.vb.feed(data)
            assert got == want, f"reply bytes differ from VirtualBoard:\n rtl {got.hex()}\n vb  {want.hex()}" \
                                f"\n request {data.hex()}"
        return self.dec.feed(got)

    # ------------------------------------------------------------------ requests
    async def req(self, cmd, payload=b"", seq=None, advance=True, mirror=True):
        s = self.seq if seq is None else seq
        frames = await self.raw(P.encode_frame(cmd, s, payload), mirror)
        assert len(frames) == 1, f"one reply expected, got {frames}"
        f = frames[0]
        assert f.seq == s, f"reply seq {f.seq} != {s}"
        if advance and seq is None:
            self.seq = (self.seq + 1) & 0xFF
        return f

    async def ack(self, cmd, payload=b"", **kw) -> bytes:
        f = await self.req(cmd, payload, **kw)
        assert f.cmd == Command.ACK, f"ACK expected for {Command(cmd).name}, got NAK " \
                                     f"{P.unpack_nak(f.payload)}"
        return f.payload

    async def nak(self, cmd, payload=b"", reason=None, **kw):
        f = await self.req(cmd, payload, **kw)
        assert f.cmd == Command.NAK, f"NAK expected for {cmd}, got {f}"
        r, c = P.unpack_nak(f.payload)
        assert c == (cmd & 0xFF), f"NAK names cmd {c:#x}, not {cmd:#x}"
        if reason is not None:
            assert r == reason, f"NAK {reason.name} expected, got {r!r}"
        return r

    async def reg(self, name, count=1):
        return P.unpack_words(await self.ack(Command.READ_REG, P.pack_read_reg(P.register(name).addr, count)), U32)

    async def write_reg(self, name, values):
        return await self.ack(Command.WRITE_REG, P.pack_write_reg(P.register(name).addr, list(values)))

    async def read_mem(self, name, start=0, count=None, burst=None):
        sp = P.space(name)
        fmt, depth = sp.word(self.p), sp.depth(self.p)
        count = depth - start if count is None else count
        burst = burst or max(1, self.max_payload // fmt.nbytes)
        out = []
        for a in range(start, start + count, burst):
            n = min(burst, start + count - a)
            out += P.unpack_words(await self.ack(Command.READ_MEM, P.pack_read_mem(sp.id, a, n)), fmt)
        return out

    async def write_mem(self, name, words, start=0, burst=None):
        sp = P.space(name)
        fmt = sp.word(self.p)
        words = [int(w) for w in words]
        burst = burst or max(1, (self.max_payload - 7) // fmt.nbytes)
        for a in range(0, len(words), burst):
            await self.ack(Command.WRITE_MEM, P.pack_write_mem(sp.id, start + a, words[a:a + burst], fmt))

    def spaces(self):
        return list(self.vb.spaces.values())

    async def state(self) -> dict:
        return {s.name: np.array(await self.read_mem(s.name)) for s in self.spaces()}

    def random_words(self, sp, n):
        """Words in the space's format; a field narrower than its format (``ref``) gets values it
        can hold, since the Core keeps only the field's bits."""
        fmt = sp.word(self.p)
        bits = fmt.bits
        if sp.name.endswith(".ref"):
            bits = min(bits, self.ref_bits())
        lo, hi = P.int_range(bits, fmt.signed)
        return [self.rng.randint(lo, hi) for _ in range(n)]

    def ref_bits(self):
        return CoreConfig(self.p, self.lanes, self.W).map.locate("out.ref", 0).bits


# ====================================================================== tests
@cocotb.test()
async def commands(dut):
    """IDENTIFY, every register, register writes, memory bursts over every space, RESET_STATE."""
    tb = TB(dut)
    await tb.start()
    p = tb.p
    ident = P.unpack_identify(await tb.ack(Command.IDENTIFY))
    assert ident == P.Identity(p, tb.lanes, tb.clock_hz, tb.baud, tb.max_payload, tb.max_steps)
    # every register, one at a time and as ranges
    regs = {r.name: (await tb.reg(r.name))[0] for r in P.REGISTERS}
    assert regs["MAGIC"] == 0x4C4B5053 and regs["VERSION"] == P.PROTOCOL_VERSION
    assert regs["CLOCK_HZ"] == tb.clock_hz and regs["BAUD"] == tb.baud
    assert regs["R0"] == p.r0_q and regs["CYCLES"] == 0 and regs["STATUS"] == 0
    link = await tb.reg("FRAMES_OK", 9)
    assert link[0] > len(P.REGISTERS) and link[1:] == [0] * 8, link
    assert len(await tb.reg("R0", 5)) == 5
    # register writes
    await tb.write_reg("R0", [p.r0_q // 2 + 1])
    await tb.write_reg("STEP_COUNT", [123456])
    await tb.write_reg("CHUNK_PHASE", [p.chunk_steps - 1])
    await tb.write_reg("DUPLICATES", [7, 5])             # DUPLICATES and UART_OVERRUNS
    assert await tb.reg("R0", 2) == [p.r0_q // 2 + 1, 123456]
    assert await tb.reg("CHUNK_PHASE") == [p.chunk_steps - 1]
    assert await tb.reg("DUPLICATES", 2) == [7, 5]
    assert (await tb.reg("STATUS"))[0] == 4               # UART_OVERRUNS ≠ 0 is a link error
    await tb.write_reg("FRAMES_OK", [0] * 9)
    assert (await tb.reg("STATUS"))[0] == 0
    # every word of every space: written in random bursts, read back in others
    written = {}
    for sp in tb.spaces():
        depth = sp.depth(p)
        words = tb.random_words(sp, depth)
        a = 0
        while a < depth:
            n = min(depth - a, tb.rng.randint(1, 40))
            await tb.write_mem(sp.name, words[a:a + n], start=a)
            a += n
        written[sp.name] = words
    if "out.e" in written and "err.e2" in written:       # one storage: the later write wins
        written["out.e"] = written["err.e2"]
    for sp in tb.spaces():
        depth = sp.depth(p)
        got, a = [], 0
        while a < depth:
            n = min(depth - a, tb.rng.randint(1, 50))
            got += await tb.read_mem(sp.name, a, n)
            a += n
        assert got == written[sp.name], f"{sp.name}: read back {got} != written {written[sp.name]}"
    # RESET_STATE: each mask clears exactly its words; weights survive every mask
    for mask in (ResetMask.LEARNING, ResetMask.DYNAMICS | ResetMask.COUNTERS, ResetMask(0)):
        await tb.ack(Command.RESET_STATE, bytes([int(mask)]))
        st = await tb.state()
        for name, words in st.items():
            assert list(words) == list(tb.vb.read_space(name)), name
        if mask & ResetMask.COUNTERS:
            assert await tb.reg("STEP_COUNT", 4) == [0, 0, 0, 0]
    assert list((await tb.state())["out.w"]) == written["out.w"]


@cocotb.test()
async def refusals(dut):
    """Every NAK reason, duplicates and the sequence rule; nothing refused is ever applied."""
    tb = TB(dut)
    await tb.start()
    p = tb.p
    w_sp = P.space("out.w")
    fmt = w_sp.word(p)
    await tb.write_mem("out.w", [5, -3, 7])
    before = await tb.read_mem("out.w", 0, 3)

    async def unchanged():
        assert await tb.read_mem("out.w", 0, 3) == before

    # link-level refusals: NAK with the received seq byte and cmd 0xFF, nothing applied
    def body(raw):
        return b"\x00" + P.cobs_encode(raw) + b"\x00"
    hdr = P.HEADER.pack(Command.WRITE_MEM, tb.seq, 9, 0)
    good = hdr + P.pack_write_mem(w_sp.id, 0, [1], fmt)
    for raw, reason in ((bytes([Command.WRITE_MEM, tb.seq, 1, 0]), Nak.BAD_FRAMING),
                        (good + (P.crc16(good) ^ 0x0100).to_bytes(2, "big"), Nak.BAD_CRC),
                        (good[:-1] + P.crc16(good[:-1]).to_bytes(2, "big"), Nak.BAD_LENGTH)):
        frames = await tb.raw(body(raw))
        assert len(frames) == 1 and frames[0].cmd == Command.NAK and frames[0].seq == tb.seq, frames
        assert P.unpack_nak(frames[0].payload) == (reason, 0xFF), frames[0]
    assert await tb.raw(body(b"\x05")) == []            # too short to hold a seq byte: counted only
    assert await tb.raw(b"\x00\x05\x01\x00") == []      # COBS code past the end: counted only
    await unchanged()
    # BAD_LENGTH (payload size, over max_payload); not accepted: the seq does not advance
    await tb.nak(Command.READ_REG, b"\x00\x00\x01", Nak.BAD_LENGTH, advance=False)
    await tb.nak(Command.WRITE_MEM, P.pack_write_mem(w_sp.id, 0, [1, 2], fmt)[:-1], Nak.BAD_LENGTH,
                 advance=False)
    await tb.nak(Command.IDENTIFY, b"\x01", Nak.BAD_LENGTH, advance=False)
    await tb.nak(Command.RUN_STEPS, b"\x01", Nak.BAD_LENGTH, advance=False)
    await tb.nak(Command.RESET_STATE, b"", Nak.BAD_LENGTH, advance=False)
    n = (tb.max_payload - P.MEM_REQ.size) // fmt.nbytes + 1       # one word over max_payload
    over = P.pack_write_mem(w_sp.id, 0, [1] * n, fmt)
    if len(P.encode_frame(Command.WRITE_MEM, 0, over)) - 2 <= P.FrameDecoder(tb.max_payload).max_encoded:
        await tb.nak(Command.WRITE_MEM, over, Nak.BAD_LENGTH, advance=False)
    else:                                 # no COBS slack at this max_payload: an oversize body
        assert await tb.raw(P.encode_frame(Command.WRITE_MEM, tb.seq, over)) == []
    await unchanged()
    # BAD_ADDRESS: unknown register, gap, read-only written, unknown space, range past the depth
    await tb.nak(Command.READ_REG, P.pack_read_reg(0x05, 1), Nak.BAD_ADDRESS)
    await tb.nak(Command.READ_REG, P.pack_read_reg(0x18, 2), Nak.BAD_ADDRESS)
    await tb.nak(Command.WRITE_REG, P.pack_write_reg(P.register("MAGIC").addr, [1]), Nak.BAD_ADDRESS)
    await tb.nak(Command.WRITE_REG, P.pack_write_reg(P.register("R0").addr, [1, 2, 3]), Nak.BAD_ADDRESS)
    await tb.nak(Command.READ_MEM, P.pack_read_mem(0x7F, 0, 1), Nak.BAD_ADDRESS)
    await tb.nak(Command.READ_MEM, P.pack_read_mem(w_sp.id, w_sp.depth(p) - 1, 2), Nak.BAD_ADDRESS)
    await tb.nak(Command.WRITE_MEM, P.pack_write_mem(w_sp.id, w_sp.depth(p), [1], fmt), Nak.BAD_ADDRESS)
    await tb.nak(Command.WRITE_MEM, P.pack_write_mem(w_sp.id, 0xFFFFFFFF, [1], fmt), Nak.BAD_ADDRESS)
    # BAD_VALUE: K = 0, K too large, word out of format, CHUNK_PHASE, count 0, mask bits
    await tb.nak(Command.RUN_STEPS, P.RUN_REQ.pack(0), Nak.BAD_VALUE)
    big = tb.max_steps + 1
    rec = (len(P.pack_run_steps(p, [[0] * p.n_in])) - 2)
    if 2 + big * rec <= tb.max_payload:
        await tb.nak(Command.RUN_STEPS, P.pack_run_steps(p, [[0] * p.n_in] * big), Nak.BAD_VALUE)
    bad = bytearray(P.pack_write_mem(w_sp.id, 1, [3, 4], fmt))
    if fmt.bits % 8:
        bad[-1] = 0x7F                                   # not sign-extended from ``bits``
        await tb.nak(Command.WRITE_MEM, bytes(bad), Nak.BAD_VALUE)
    S = P.space("out.S")
    await tb.nak(Command.WRITE_MEM, P.MEM_REQ.pack(S.id, 0, 1) + b"\x02", Nak.BAD_VALUE)
    await tb.nak(Command.WRITE_REG, P.pack_write_reg(P.register("CHUNK_PHASE").addr, [p.chunk_steps]),
                 Nak.BAD_VALUE)
    # values the Core's field cannot hold: R0 (w.bits - 1 bits) and ref (ref_bits of its byte)
    await tb.nak(Command.WRITE_REG, P.pack_write_reg(P.register("R0").addr, [1 << p.r0_bits]),
                 Nak.BAD_VALUE)
    if p.ref_bits < 8:
        ref = P.space("out.ref")
        await tb.nak(Command.WRITE_MEM, P.MEM_REQ.pack(ref.id, 0, 1) + bytes([1 << p.ref_bits]),
                     Nak.BAD_VALUE)
    await tb.nak(Command.READ_REG, P.pack_read_reg(0, 0), Nak.BAD_VALUE)
    await tb.nak(Command.READ_MEM, P.pack_read_mem(w_sp.id, 0, 0), Nak.BAD_VALUE)
    await tb.nak(Command.RESET_STATE, b"\x10", Nak.BAD_VALUE)
    if w_sp.depth(p) * fmt.nbytes > tb.max_payload:                # reply over max_payload
        await tb.nak(Command.READ_MEM, P.pack_read_mem(w_sp.id, 0, w_sp.depth(p)), Nak.BAD_VALUE)
    # BAD_COMMAND (accepted): unknown and reply codes
    await tb.nak(0x55, b"", Nak.BAD_COMMAND)
    await tb.nak(Command.ACK, b"", Nak.BAD_COMMAND)
    await unchanged()
    assert await tb.reg("STEP_COUNT") == [0]

    # duplicates: a write is not applied again (bare ACK), RUN_STEPS answers its cached reply
    await tb.ack(Command.WRITE_MEM, P.pack_write_mem(w_sp.id, 0, [11], fmt))
    s = (tb.seq - 1) & 0xFF
    f = await tb.req(Command.WRITE_MEM, P.pack_write_mem(w_sp.id, 0, [99], fmt), seq=s)
    assert f.cmd == Command.ACK and f.payload == b""
    assert await tb.read_mem("out.w", 0, 1) == [11]
    run = P.pack_run_steps(p, [[1] * p.n_in, [0] * p.n_in], [[1] * p.n_out, [0] * p.n_out]
                           if p.error_source is ErrorSource.TARGET else None)
    first = await tb.ack(Command.RUN_STEPS, run)
    s = (tb.seq - 1) & 0xFF
    again = await tb.ack(Command.RUN_STEPS, run, seq=s)
    assert again == first and await tb.reg("STEP_COUNT") == [2]
    # a refused request's duplicate gets the same NAK, still without effect
    await tb.nak(Command.RESET_STATE, b"\x20", Nak.BAD_VALUE)
    await tb.nak(Command.RESET_STATE, b"\x20", Nak.BAD_VALUE, seq=(tb.seq - 1) & 0xFF)
    # reads re-execute
    a = await tb.reg("DUPLICATES")
    b = P.unpack_words(await tb.ack(Command.READ_REG, P.pack_read_reg(P.register("DUPLICATES").addr, 1),
                                    seq=(tb.seq - 1) & 0xFF), U32)
    assert b == [a[0] + 1]
    # BAD_SEQUENCE: neither next nor a retransmission; nothing applied
    await tb.nak(Command.WRITE_MEM, P.pack_write_mem(w_sp.id, 0, [42], fmt), Nak.BAD_SEQUENCE,
                 seq=(tb.seq + 5) & 0xFF)
    await tb.nak(Command.READ_REG, P.pack_read_reg(0, 1), Nak.BAD_SEQUENCE, seq=(tb.seq - 2) & 0xFF)
    assert await tb.read_mem("out.w", 0, 1) == [11]
    # IDENTIFY re-establishes the sequence at any seq
    tb.seq = 200
    await tb.ack(Command.IDENTIFY)
    await tb.ack(Command.READ_REG, P.pack_read_reg(0, 1))
    # RESET_STATE LINK clears the link counters and forgets the sequence
    assert (await tb.reg("NAKS_SENT"))[0] > 0
    await tb.ack(Command.RESET_STATE, bytes([ResetMask.LINK]))
    tb.seq = 17
    assert await tb.reg("NAKS_SENT", 2) == [0, 0]


def _corrupt(rng, frame: bytes) -> bytes:
    kind = rng.choice(["flip", "trunc", "drop_end", "garbage"])
    b = bytearray(frame)
    if kind == "flip":
        i = rng.randrange(1, len(b) - 1)
        b[i] ^= 1 << rng.randrange(8)
    elif kind == "trunc":
        b = b[:rng.randrange(1, len(b) - 1)] + b"\x00"
    elif kind == "drop_end":
        del b[rng.randrange(1, len(b) - 1)]
    else:
        b = bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 20))) + bytes(b)
    return bytes(b)


@cocotb.test()
async def link_faults(dut):
    """Garbage before the first delimiter, bit flips, truncations, drops, oversize bodies; the
    counters and NAKs follow ``FrameDecoder`` fed the same bytes, and nothing damaged is applied."""
    tb = TB(dut)
    await tb.start(clear=False)          # the receiver must start hunting, as after power-up
    p = tb.p
    oracle = P.FrameDecoder(max_payload=tb.max_payload)
    fmt = P.space("out.w").word(p)

    async def send(data):
        oracle.feed(data)
        return await tb.raw(data)

    # power-up hunting: garbage, then a frame
    frames = await send(bytes(tb.rng.randrange(1, 256) for _ in range(37)) + P.encode_frame(Command.IDENTIFY, 0))
    assert len(frames) == 1 and frames[0].cmd == Command.ACK
    tb.seq = 1
    for i in range(int(PARAMS.get("faults", 40))):
        frame = P.encode_frame(Command.WRITE_MEM, tb.seq,
                               P.pack_write_mem(P.space("out.w").id, 0, [i + 1, -i], fmt))
        bad = _corrupt(tb.rng, frame)
        await send(bad)
        await send(b"\x00")                        # a lost delimiter must not merge frames
        f = await send(frame)
        assert [x.cmd for x in f] == [Command.ACK], f
        tb.seq = (tb.seq + 1) & 0xFF
        assert await tb.read_mem("out.w", 0, 2) == [i + 1, -i]
    # oversize: no delimiter within the largest legal body -> dropped, hunting; empty bodies ignored
    junk = bytes(tb.rng.randrange(1, 256) for _ in range(oracle.max_encoded + 5))
    assert await send(b"\x00" + junk + b"\x00\x00\x00") == []
    f = await send(P.encode_frame(Command.READ_REG, tb.seq, P.pack_read_reg(0x10, 6)))
    tb.seq = (tb.seq + 1) & 0xFF
    regs = P.unpack_words(f[0].payload, U32)
    assert regs[1:6] == [oracle.crc_errors, oracle.framing_errors,
                         oracle.length_errors + oracle.oversize_errors, oracle.resyncs,
                         oracle.garbage_bytes], (regs, oracle)
    assert oracle.oversize_errors == 1 and oracle.resyncs == 2


def _stim(tb, K):
    p = tb.p
    x = tb.nrng.random((K, p.n_in)) < 0.3
    if p.error_source is ErrorSource.TARGET:
        return x, tb.nrng.random((K, p.n_out)) < 0.1
    fe = p.formats["err"]
    return x, np.clip(np.rint(tb.nrng.normal(0, 0.3 * fe.one, (K, p.n_out))), fe.min, fe.max).astype(int)


@cocotb.test()
async def golden_run(dut):
    """RUN_STEPS against GoldenModel from the same weights: outputs every step, state every batch."""
    tb = TB(dut)
    await tb.start()
    p = tb.p
    gm = GoldenModel(p, seeds=int(PARAMS.get("seed", 1)))
    for L in gm.layers:
        await tb.write_mem(f"{L.name}.w", L.w[0].reshape(-1))
    if gm.fb is not None and "fb" in tb.vb.spaces:
        await tb.write_mem("fb", gm.fb[0].reshape(-1))
    steps, done, spikes = int(PARAMS.get("steps", 120)), 0, 0
    while done < steps:
        K = min(steps - done, tb.rng.randint(1, tb.max_steps))
        x, y = _stim(tb, K)
        tgt = y if p.error_source is ErrorSource.TARGET else None
        err = None if tgt is not None else y
        reply = await tb.ack(Command.RUN_STEPS, P.pack_run_steps(p, x, tgt, err))
        sc, outs = P.unpack_run_reply(p, reply)
        for n in range(K):
            want = gm.step(x[n], target=None if tgt is None else tgt[n], error=None if err is None else err[n])[0]
            assert list(map(bool, want)) == outs[n], f"step {done + n}: outputs {outs[n]} != golden {list(want)}"
            spikes += int(np.sum(want))
        done += K
        assert sc == done
        st = await tb.state()
        snap = gm.snapshot()
        if gm.fb is not None:
            snap["fb"] = gm.fb                            # not a snapshot variable: constant B
        for name, words in st.items():
            g = np.asarray(snap[name]).reshape(-1)
            bad = np.flatnonzero(g != words)
            assert not len(bad), f"after step {done}: {name}[{bad[0]}] rtl {words[bad[0]]} != golden {g[bad[0]]}"
    assert (await tb.reg("CHUNK_COUNT"))[0] == steps // p.chunk_steps
    # execution time of one batch: from the closing delimiter to the engine handing the reply to
    # the transmitter, against the Core's own cycles per step
    core_config = CoreConfig(p, tb.lanes, tb.W)
    K = min(tb.max_steps, 50)
    x, y = _stim(tb, K)
    tgt = y if p.error_source is ErrorSource.TARGET else None
    data = P.encode_frame(Command.RUN_STEPS, tb.seq, P.pack_run_steps(p, x, tgt, None if tgt is not None else y))
    tb.seq = P.next_seq(tb.seq)
    tb.vb.feed(data)
    tb.got.clear()
    await tb._send_stream(data)
    n = 0
    while int(tb.dut.status.value) & 1:
        await RisingEdge(tb.dut.clk)
        n += 1
    await tb.settle()
    core = sum(core_config.cycles_per_step((s + 1) % p.chunk_steps == 0)
               for s in range(steps, steps + K))
    info = {"K": K, "engine_cycles": n, "core_cycles": core, "per_step_overhead": (n - core) / K}
    tb.dut._log.info(f"RUN_STEPS timing: {info}")
    stats = PARAMS.get("stats")
    if stats:
        import json
        with open(stats, "w") as fh:
            json.dump(info, fh)
    assert spikes > 0, "no output spikes: the comparison did not exercise the outputs"
    tb.dut._log.info(f"{steps} steps, {spikes} output spikes, equal to the golden model")


@cocotb.test()
async def random_stream(dut):
    """A seeded random stream of requests (valid, refused, duplicated, out of sequence, corrupted);
    every reply byte-identical to VirtualBoard's."""
    tb = TB(dut)
    await tb.start()
    p, rng = tb.p, tb.rng
    spaces = tb.spaces()
    nreq = int(PARAMS.get("requests", 300))
    kinds = {"ok": 0, "nak": 0, "none": 0}
    seq, last_data = 0, None
    for i in range(nreq):
        rng.random()                    # (kept: the seeded request sequence stays as it was)
        cmd = rng.choice([c for c in Command if c.is_request] + [0x33])
        if cmd == Command.IDENTIFY and rng.random() < 0.7:
            cmd = Command.READ_REG
        sp = rng.choice(spaces)
        fmt = sp.word(p)
        depth = sp.depth(p)
        if cmd == Command.READ_REG:
            a = rng.choice([r_.addr for r_ in P.REGISTERS] + [5, 0x30])
            pl = P.pack_read_reg(a, rng.choice([1, 1, 2, 4, 0]))
        elif cmd == Command.WRITE_REG:
            r_ = rng.choice([r_ for r_ in P.REGISTERS if r_.name not in ("R0",)])
            v = rng.choice([0, 1, rng.randrange(1 << 32), p.chunk_steps - 1, p.chunk_steps])
            pl = P.pack_write_reg(r_.addr, [v])
        elif cmd == Command.READ_MEM:
            a = rng.randrange(depth + 1)
            pl = P.pack_read_mem(sp.id if rng.random() < 0.95 else 0x7E, a, rng.randint(0, depth - a + 1))
        elif cmd == Command.WRITE_MEM:
            a = rng.randrange(depth)
            n = rng.randint(1, min(depth - a, 16))
            pl = P.pack_write_mem(sp.id, a, tb.random_words(sp, n), fmt)
        elif cmd == Command.RUN_STEPS:
            K = rng.randint(1, min(tb.max_steps, 12))
            x, y = _stim(tb, K)
            tgt = y if p.error_source is ErrorSource.TARGET else None
            pl = P.pack_run_steps(p, x, tgt, None if tgt is not None else y)
        elif cmd == Command.RESET_STATE:
            pl = bytes([rng.choice([1, 2, 3, 4, 7, 8, 0x1F, 0])])
        else:
            pl = b""
        if rng.random() < 0.05 and pl:
            pl = pl[:-1]                                  # wrong size
        s = seq
        if rng.random() < 0.03:
            s = rng.randrange(256)
            if s == (seq - 1) & 0xFF:
                s = (s - 1) & 0xFF                        # stale, not a retransmission
        data = P.encode_frame(cmd, s, pl)
        if last_data is not None and rng.random() < 0.1:
            data = last_data                              # a retransmission of the last request
        last_data = data
        if rng.random() < 0.1:
            data = _corrupt(rng, data)
        frames = await tb.raw(data)
        for f in frames:
            kinds["ok" if f.cmd == Command.ACK else "nak"] += 1
        if not frames:
            kinds["none"] += 1
        last = tb.vb.tracker.last_seq
        seq = rng.randrange(256) if last is None else P.next_seq(last)
    # the final state agrees too
    last = tb.vb.tracker.last_seq
    tb.seq = 0 if last is None else P.next_seq(last)
    st = await tb.state()
    for name, words in st.items():
        assert list(words) == list(tb.vb.read_space(name)), name
    tb.dut._log.info(f"{nreq} requests: {kinds}")
    assert kinds["ok"] > nreq // 4 and kinds["nak"] > nreq // 20


@cocotb.test()
async def boundaries(dut):
    """Every register and counter at its limits through this build (lanes, hidden layer, host
    errors, small max_payload): the Core and the engine saturate where VirtualBoard does."""
    from spikeloop.host.virtual_board import boundary_transcript
    tb = TB(dut)
    await tb.start()
    tops = 0
    for q, _ in boundary_transcript(tb.vb.config, max_steps=tb.max_steps):
        reqs = P.FrameDecoder(max_payload=0xFFFF).feed(q)
        run = len(reqs) == 1 and reqs[0].cmd == Command.RUN_STEPS
        for f in await tb.raw(q):                  # raw() requires the mirror's bytes
            if run and f.cmd == Command.ACK:
                tops += P.RUN_REPLY.unpack_from(f.payload)[0] == 0xFFFFFFFF
    assert tops >= 5, tops
    tb.seq = P.next_seq(tb.vb.tracker.last_seq)


@cocotb.test()
async def soc_uart(dut):
    """The SoC through its pins: IDENTIFY, a weight write, a RUN_STEPS batch, a read back."""
    tb = TB(dut, uart=True)
    await tb.start()
    p = tb.p
    ident = P.unpack_identify(await tb.ack(Command.IDENTIFY))
    assert ident.baud == tb.baud and ident.params == p
    gm = GoldenModel(p, seeds=3)
    await tb.write_mem("out.w", gm.layers[-1].w[0].reshape(-1))
    x, y = _stim(tb, 8)
    tgt = y if p.error_source is ErrorSource.TARGET else None
    sc, outs = P.unpack_run_reply(p, await tb.ack(Command.RUN_STEPS, P.pack_run_steps(
        p, x, tgt, None if tgt is not None else y)))
    assert sc == 8
    for n in range(8):
        assert list(map(bool, gm.step(x[n], target=None if tgt is None else tgt[n],
                                      error=None if tgt is not None else y[n])[0])) == outs[n]
    assert (await tb.reg("UART_OVERRUNS"))[0] == 0
    # a host that does not wait: three frames in one write, the next ones arriving while a batch
    # executes; they wait in the SoC's receive FIFO and each is answered, in order, nothing lost
    run = P.encode_frame(Command.RUN_STEPS, tb.seq, P.pack_run_steps(
        p, x, tgt, None if tgt is not None else y))
    s1, s2 = P.next_seq(tb.seq), P.next_seq(P.next_seq(tb.seq))
    frames = await tb.raw(run + P.encode_frame(Command.READ_REG, s1, P.pack_read_reg(0x01, 1))
                          + P.encode_frame(Command.READ_REG, s2, P.pack_read_reg(0x18, 1)))   # = VirtualBoard's
    assert [(f.cmd, f.seq) for f in frames] == [(Command.ACK, tb.seq), (Command.ACK, s1), (Command.ACK, s2)], frames
    assert P.unpack_words(frames[1].payload, U32) == [16]              # STEP_COUNT after both batches
    assert P.unpack_words(frames[2].payload, U32) == [0]               # UART_OVERRUNS
    tb.seq = P.next_seq(s2)

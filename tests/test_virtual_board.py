"""The model backend's device side: every command, every NAK reason, the sequence rule, bit-exactness."""

from pathlib import Path

import numpy as np
import pytest

from spikeloop import protocol as P
from spikeloop.hdl.config import CoreConfig, SoCConfig
from spikeloop.host.virtual_board import LINK_COUNTERS, ModelTransport, VirtualBoard
from spikeloop.params import Params
from spikeloop.protocol import Command, Nak, ResetMask
from spikeloop.sim.golden import GoldenModel, init_weights

from board_cases import net, stimulus, vboard

U32 = P.WordFormat(32, False)


class Host:
    """Raw frames to a VirtualBoard, one reply each (a tiny stand-in for the driver)."""

    def __init__(self, vb):
        self.vb, self.seq = vb, 0
        self.dec = P.FrameDecoder(max_payload=0xFFFF)

    def raw(self, data: bytes) -> list:
        return self.dec.feed(self.vb.feed(data))

    def req(self, cmd, payload=b"", seq=None, advance=True):
        s = self.seq if seq is None else seq
        got = self.raw(P.encode_frame(cmd, s, payload))
        assert len(got) == 1, got
        f = got[0]
        assert f.seq == s
        if advance and seq is None:
            self.seq = (self.seq + 1) & 0xFF
        return f

    def ack(self, cmd, payload=b"") -> bytes:
        f = self.req(cmd, payload)
        assert f.cmd == Command.ACK, P.unpack_nak(f.payload)
        return f.payload

    def nak(self, cmd, payload=b"", **kw):
        f = self.req(cmd, payload, **kw)
        assert f.cmd == Command.NAK, f
        return P.unpack_nak(f.payload)[0]

    def regs(self, name, count=1):
        return P.unpack_words(self.ack(Command.READ_REG, P.pack_read_reg(P.register(name).addr, count)), U32)

    def write_mem(self, name, words, start=0):
        sp = P.space(name)
        return self.ack(Command.WRITE_MEM, P.pack_write_mem(sp.id, start, list(words), sp.word(self.vb.p)))


def same_state(a, b):
    assert set(a) == set(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_identify_and_register_reset_values():
    p = net()
    vb = vboard(p, 2, clock_hz=25_000_000, baud=1_000_000, max_payload=512, max_steps=7)
    h = Host(vb)
    ident = P.unpack_identify(h.ack(Command.IDENTIFY))
    assert ident == P.Identity(p, 2, 25_000_000, 1_000_000, 512, 7)
    assert h.regs("MAGIC") == [int.from_bytes(b"SPKL", "little")]
    assert h.regs("VERSION") == [P.PROTOCOL_VERSION]
    assert h.regs("CLOCK_HZ", 2) == [25_000_000, 1_000_000]
    assert h.regs("R0") == [p.r0_q]
    assert h.regs("STEP_COUNT", 4) == [0, 0, 0, 0]
    assert h.regs("STATUS") == [0]


def test_starts_at_zero_and_exposes_the_core_spaces():
    for p in (net(), net(n_hidden=4, feedback="random", regulariser=True)):
        vb = vboard(p)
        names = vb.config.core.map.names()
        assert list(vb.spaces) == [s.name for s in P.spaces_for(p) if s.name in names]
        assert all(not v.any() for v in vb.state().values())


@pytest.mark.parametrize("kw", [{}, {"error_source": "host"}, {"n_hidden": 6, "feedback": "random"},
                                {"kernel": "single_exp", "optimiser": "fixed"}])
def test_run_is_bit_exact_with_the_golden_model(kw):
    """Weights (and B) written through WRITE_MEM, then 130 steps in uneven batches across chunk ends."""
    p = net(**kw)
    vb = vboard(p)
    h = Host(vb)
    ws, fb = init_weights(p, [4])
    for name, w in zip(("hid.w", "out.w") if p.n_hidden else ("out.w",), ws):
        h.write_mem(name, w.ravel())
    if "fb" in vb.spaces:
        h.write_mem("fb", fb.ravel())
    T = 130
    x, y = stimulus(p, T)
    err = np.random.default_rng(2).integers(-300, 300, (T, p.n_out))
    g = GoldenModel(p, 0, weights=ws, feedback=fb)
    host = p.error_source.value == "host"
    want, _ = g.run(x, None if host else y, err if host else None)
    got, k = [], 0
    for K in (1, 39, 50, 40):
        pl = P.pack_run_steps(p, x[k:k + K], None if host else y[k:k + K], err[k:k + K] if host else None)
        sc, out = P.unpack_run_reply(p, h.ack(Command.RUN_STEPS, pl))
        assert sc == k + K
        got += out
        k += K
    assert want.sum() > 0 and np.array_equal(np.array(got), want[0])
    gs = g.snapshot()
    if "fb" in vb.spaces:
        gs["fb"] = g.fb
    same_state(vb.state(), {k: v for k, v in gs.items() if k in vb.spaces})
    assert h.regs("STEP_COUNT", 4) == [T, CoreConfig(p, 1).cycles_per_step(False), T % 40, T // 40]


def test_cycles_of_a_chunk_end_step():
    p = net()
    h = Host(vboard(p, 4))
    x, y = stimulus(p, 40)
    h.ack(Command.RUN_STEPS, P.pack_run_steps(p, x, y))
    assert h.regs("CYCLES") == [CoreConfig(p, 4).cycles_per_step(True)]


def bad_length_frame(cmd, seq, payload, length):
    body = P.HEADER.pack(cmd, seq, length, 0) + payload
    body += P.crc16(body).to_bytes(2, "big")
    return b"\x00" + P.cobs_encode(body) + b"\x00"


def test_every_nak_reason_and_nothing_applied():
    p = net()
    vb = vboard(p, max_payload=256, max_steps=10)
    h = Host(vb)
    h.write_mem("out.w", range(100))
    before = vb.state()
    w_id, w_fmt = P.space("out.w").id, P.space("out.w").word(p)
    x, y = stimulus(p, 11)

    # link level: NAK echoes the received seq, not accepted
    good = P.encode_frame(Command.WRITE_REG, h.seq, P.pack_write_reg(1, [7]))
    flipped = bytearray(good)
    flipped[2] ^= 0x10                              # the cmd byte
    (f,) = h.raw(bytes(flipped))
    assert P.unpack_nak(f.payload)[0] is Nak.BAD_CRC and f.seq == h.seq
    (f,) = h.raw(bad_length_frame(Command.WRITE_REG, h.seq, P.pack_write_reg(1, [7]), 3))
    assert P.unpack_nak(f.payload)[0] is Nak.BAD_LENGTH
    (f,) = h.raw(b"\x00" + P.cobs_encode(bytes([3, h.seq, 1])) + b"\x00")
    assert P.unpack_nak(f.payload)[0] is Nak.BAD_FRAMING and f.seq == h.seq
    assert h.raw(b"\x00\x02\x05\x00") == []       # too short for a seq byte: only counted
    assert h.nak(Command.WRITE_MEM, bytes(257), advance=False) is Nak.BAD_LENGTH     # > max_payload
    assert h.raw(P.encode_frame(Command.WRITE_MEM, h.seq, bytes(range(1, 256)) * 2)) == []   # oversize: counted
    assert h.nak(Command.IDENTIFY, b"x", advance=False) is Nak.BAD_LENGTH
    assert h.nak(Command.READ_REG, b"\x00\x00\x01", advance=False) is Nak.BAD_LENGTH
    assert h.nak(Command.RUN_STEPS, P.pack_run_steps(p, x[:2], y[:2])[:-1], advance=False) is Nak.BAD_LENGTH
    assert h.nak(Command.WRITE_MEM, P.pack_write_mem(w_id, 0, [1, 2], w_fmt)[:-1], advance=False) is Nak.BAD_LENGTH
    assert h.nak(Command.RESET_STATE, b"", advance=False) is Nak.BAD_LENGTH
    vb.busy = 1
    assert h.nak(Command.IDENTIFY, advance=False) is Nak.BUSY
    assert h.nak(Command.READ_REG, P.pack_read_reg(0, 1), seq=(h.seq + 5) & 0xFF) is Nak.BAD_SEQUENCE
    # command level: accepted (the seq advances)
    assert h.nak(0x42) is Nak.BAD_COMMAND
    assert h.nak(Command.ACK) is Nak.BAD_COMMAND
    assert h.nak(Command.READ_MEM, P.pack_read_mem(0x10, 0, 1)) is Nak.BAD_ADDRESS          # no hidden layer
    assert h.nak(Command.READ_MEM, P.pack_read_mem(0x0D, 0, 1)) is Nak.BAD_ADDRESS          # no regulariser
    assert h.nak(Command.READ_MEM, P.pack_read_mem(w_id, 99, 2)) is Nak.BAD_ADDRESS
    assert h.nak(Command.WRITE_MEM, P.pack_write_mem(w_id, 99, [1, 2], w_fmt)) is Nak.BAD_ADDRESS
    assert h.nak(Command.READ_REG, P.pack_read_reg(0x04, 2)) is Nak.BAD_ADDRESS             # 0x05 unmapped
    assert h.nak(Command.WRITE_REG, P.pack_write_reg(0x01, [5, 5])) is Nak.BAD_ADDRESS       # CYCLES is ro
    assert h.nak(Command.RUN_STEPS, P.pack_run_steps(p, x, y)) is Nak.BAD_VALUE              # K > max_steps
    assert h.nak(Command.RUN_STEPS, P.RUN_REQ.pack(0)) is Nak.BAD_VALUE
    assert h.nak(Command.READ_MEM, P.pack_read_mem(w_id, 0, 0)) is Nak.BAD_VALUE
    assert h.nak(Command.READ_MEM, P.pack_read_mem(P.space("out.q").id, 0, 100)) is Nak.BAD_VALUE  # 300 B > 256
    assert h.nak(Command.READ_REG, P.pack_read_reg(0x10, 0)) is Nak.BAD_VALUE
    u_id = P.space("out.U").id                     # 20-bit signed words in 3 bytes
    for word in (1 << 19, -(1 << 19) - 1):          # one past either end, sign-extended to 24 bits
        bad = P.MEM_REQ.pack(u_id, 0, 1) + (word & 0xFFFFFF).to_bytes(3, "little")
        assert h.nak(Command.WRITE_MEM, bad) is Nak.BAD_VALUE
    s_id = P.space("out.S").id
    assert h.nak(Command.WRITE_MEM, P.MEM_REQ.pack(s_id, 0, 1) + b"\x02") is Nak.BAD_VALUE  # S is 1 bit
    assert h.nak(Command.WRITE_REG, P.pack_write_reg(0x03, [40])) is Nak.BAD_VALUE           # phase ≥ chunk
    assert h.nak(Command.RESET_STATE, b"\x10") is Nak.BAD_VALUE
    same_state(vb.state(), before)
    assert h.regs("STEP_COUNT", 4) == [0, 0, 0, 0]
    assert h.regs("CRC_ERRORS", 3) == [1, 2, 2]      # framing: 3- and 1-byte bodies; length: + oversize
    assert h.regs("STATUS") == [0x04]


def test_host_error_words_are_range_checked():
    p = net(error_source="host")
    h = Host(vboard(p))
    x, _ = stimulus(p, 1)
    pl = bytearray(P.pack_run_steps(p, x, errors=[[0] * p.n_out]))
    ef = p.formats["err"]
    if ef.bits < 16:
        pl[-2:] = (ef.max + 1).to_bytes(2, "little")
        assert h.nak(Command.RUN_STEPS, bytes(pl)) is Nak.BAD_VALUE
    pl[-2:] = ef.min.to_bytes(2, "little", signed=True)
    h.ack(Command.RUN_STEPS, bytes(pl))


def test_duplicate_read_with_a_payload_that_fails_now_gets_its_nak():
    """A 'retransmitted' read is validated again from its own payload (the gateware does the same)."""
    p = net()
    h = Host(vboard(p))
    assert h.req(Command.READ_MEM, P.pack_read_mem(0x00, 0, 1), advance=False).cmd == Command.ACK
    assert h.nak(Command.READ_MEM, P.pack_read_mem(0x10, 0, 1), advance=False) is Nak.BAD_ADDRESS
    assert h.nak(Command.READ_REG, P.pack_read_reg(0x7F, 1), advance=False) is Nak.BAD_SEQUENCE


def test_duplicates_are_answered_not_executed():
    p = net()
    vb = vboard(p)
    h = Host(vb)
    h.write_mem("out.w", [300] * 100)
    x, y = stimulus(p, 30, seed=5)
    pl = P.pack_run_steps(p, x, y)
    first = h.req(Command.RUN_STEPS, pl, advance=False)
    after = vb.state()
    again = h.req(Command.RUN_STEPS, pl, advance=False)     # same seq: reply lost, host retransmits
    assert again == first and P.unpack_run_reply(p, first.payload)[0] == 30
    same_state(vb.state(), after)
    h.seq += 1
    # a write's duplicate gets a bare ACK and is not applied again (STEP_COUNT stays as written)
    wr = P.pack_write_reg(1, [1000])
    assert h.req(Command.WRITE_REG, wr, advance=False).cmd == Command.ACK
    h.vb.regs["STEP_COUNT"] = 5                         # would be overwritten by a re-execution
    assert h.req(Command.WRITE_REG, wr, advance=False).cmd == Command.ACK
    assert vb.reg("STEP_COUNT") == 5
    h.seq += 1
    # a refused request's duplicate gets the same NAK; reads are read again
    bad = P.pack_read_mem(0x10, 0, 1)
    assert h.nak(Command.READ_MEM, bad, advance=False) is Nak.BAD_ADDRESS
    assert h.nak(Command.READ_MEM, bad, advance=False) is Nak.BAD_ADDRESS
    h.seq += 1
    rd = P.pack_read_reg(1, 1)
    assert h.req(Command.READ_REG, rd, advance=False).payload == (5).to_bytes(4, "little")
    h.vb.regs["STEP_COUNT"] = 6
    assert h.req(Command.READ_REG, rd, advance=False).payload == (6).to_bytes(4, "little")
    h.seq += 1
    assert h.regs("DUPLICATES") == [4]
    # same seq, other command: out of sequence
    last = (h.seq - 1) & 0xFF
    assert h.nak(Command.RESET_STATE, b"\x01", seq=last) is Nak.BAD_SEQUENCE


def test_identify_reestablishes_the_sequence():
    h = Host(vboard(net()))
    h.ack(Command.READ_REG, P.pack_read_reg(0, 1))
    assert h.nak(Command.READ_REG, P.pack_read_reg(0, 1), seq=77) is Nak.BAD_SEQUENCE
    assert h.req(Command.IDENTIFY, seq=76).cmd == Command.ACK
    assert h.req(Command.READ_REG, P.pack_read_reg(0, 1), seq=77).cmd == Command.ACK


@pytest.mark.parametrize("mask", [ResetMask.DYNAMICS, ResetMask.LEARNING, ResetMask.COUNTERS,
                                  ResetMask.LINK, P.RESET_ALL, P.RESET_ALL | ResetMask.LINK])
def test_reset_state_masks(mask):
    p = net()
    vb = vboard(p)
    h = Host(vb)
    h.write_mem("out.w", [400] * 100)
    h.ack(Command.WRITE_REG, P.pack_write_reg(0, [3]))
    x, y = stimulus(p, 25)
    h.ack(Command.RUN_STEPS, P.pack_run_steps(p, x, y))
    h.raw(b"\x00\x01\x02\x00")                          # one framing error
    before, regs = vb.state(), {r.name: vb.reg(r.name) for r in P.REGISTERS}
    assert before["out.zh"].any() and before["out.m"].any() and before["err.e1"].any()
    h.ack(Command.RESET_STATE, bytes([mask]))
    after = vb.state()
    groups = {ResetMask.DYNAMICS: ("U", "I", "ref", "S", "sigma", "z", "zh", "e", "e1", "e2"),
              ResetMask.LEARNING: ("el", "elf", "m", "q")}
    for name in after:
        cleared = any(mask & m and name.split(".")[1] in words for m, words in groups.items())
        assert np.array_equal(after[name], 0 * before[name] if cleared else before[name]), name
    counters = ("STEP_COUNT", "CYCLES", "CHUNK_PHASE", "CHUNK_COUNT")
    for r in P.REGISTERS:
        v = vb.reg(r.name)
        if r.name in counters and mask & ResetMask.COUNTERS or r.name in LINK_COUNTERS[1:] and mask & ResetMask.LINK:
            assert v == 0, r.name
        elif r.name not in ("FRAMES_OK", "STATUS", "NAKS_SENT"):
            assert v == regs[r.name], r.name
    assert vb.reg("R0") == 3 and vb.reg("STATUS") == (0 if mask & ResetMask.LINK else 4)
    # LINK forgets the sequence: any seq is new afterwards
    f = h.req(Command.READ_REG, P.pack_read_reg(0, 1), seq=200)
    assert f.cmd == (Command.ACK if mask & ResetMask.LINK else Command.NAK)


def test_link_counters_and_writes_of_rw_registers():
    vb = vboard(net())
    h = Host(vb)
    h.raw(b"junk")                                  # before the first delimiter: garbage
    h.ack(Command.IDENTIFY)
    assert vb.reg("GARBAGE_BYTES") == 4 and vb.reg("RESYNCS") == 1
    assert vb.reg("FRAMES_OK") == 1
    h.ack(Command.WRITE_REG, P.pack_write_reg(0x10, [0, 9]))
    assert vb.reg("FRAMES_OK") == 0 and vb.reg("CRC_ERRORS") == 9 and vb.reg("STATUS") == 4
    h.ack(Command.WRITE_REG, P.pack_write_reg(0x11, [0]))
    assert vb.reg("STATUS") == 0 and vb.reg("FRAMES_OK") == 1
    h.ack(Command.WRITE_REG, P.pack_write_reg(0x11, [0x1_0005]))   # upper bits ignored
    assert vb.reg("CRC_ERRORS") == 5
    vb.regs["CRC_ERRORS"] = 0xFFFF
    flipped = bytearray(P.encode_frame(1, 0))
    flipped[3] ^= 1
    h.raw(bytes(flipped))
    assert vb.reg("CRC_ERRORS") == 0xFFFF           # saturates
    assert vb.reg("NAKS_SENT") == 1


def test_error_word_and_filter_share_storage_like_the_core():
    p = net()
    vb = vboard(p)
    h = Host(vb)
    h.write_mem("out.e", [-5, 4], start=3)
    st = vb.state()
    assert st["out.e"].tolist() == st["err.e2"].tolist() == [[0, 0, 0, -5, 4]]
    pe = net(error_source="host")
    vbe = vboard(pe)
    Host(vbe).write_mem("out.e", [7], start=0)
    assert "err.e2" not in vbe.spaces and vbe.state()["out.e"].tolist() == [[7, 0, 0, 0, 0]]


def test_write_then_read_every_space_round_trips():
    p = net()
    vb = vboard(p, max_payload=128)
    h = Host(vb)
    rng = np.random.default_rng(0)
    for name, sp in vb.spaces.items():
        fmt, depth = sp.word(p), sp.depth(p)
        words = rng.integers(fmt.min, fmt.max + 1, depth).tolist()
        n = (128 - P.MEM_REQ.size) // fmt.nbytes
        for k in range(0, depth, n):
            h.write_mem(name, words[k:k + n], start=k)
        got = []
        for k in range(0, depth, 128 // fmt.nbytes):
            c = min(128 // fmt.nbytes, depth - k)
            got += P.unpack_words(h.ack(Command.READ_MEM, P.pack_read_mem(sp.id, k, c)), fmt)
        assert got == words, name
    assert vb.state()["out.w"].shape == (1, 5, 20)


def test_parameters_are_checked():
    p = net()
    with pytest.raises(ValueError, match="lanes must be a power of two, not 3"):
        vboard(p, 3)
    with pytest.raises(ValueError, match="max_payload must be an integer from 64 to 65535, not 10"):
        vboard(p, max_payload=10)
    with pytest.raises(ValueError, match="max_steps must be an integer in 0..65535"):
        vboard(p, max_steps=-1)
    with pytest.raises(TypeError, match="params must be a Params"):
        vboard({"n_in": 3})
    with pytest.raises(TypeError, match=r"config must be a SoCConfig, not Params \(build one with"):
        VirtualBoard(p)


def test_model_transport():
    vb = vboard(net())
    t = ModelTransport(vb)
    assert t.read(10, 1.0) == b""                   # nothing is coming: no wait
    t.write(P.encode_frame(Command.IDENTIFY, 9))
    data = t.read(1 << 16)
    (f,) = P.FrameDecoder(max_payload=0xFFFF).feed(data)
    assert f.cmd == Command.ACK and f.seq == 9 and t.bytes_read == len(data)
    t.close()
    with pytest.raises(ConnectionError):
        t.write(b"\x00")


@pytest.mark.parametrize("kw", [{}, {"n_in": 20, "n_out": 5, "chunk_steps": 30, "error_source": "host"},
                                {"n_in": 12, "n_hidden": 4, "n_out": 3, "chunk_steps": 20, "feedback": "random"}])
def test_transcript_covers_every_reason_and_replays(kw):
    """The conformance session for a device implementation: every NAK reason but BUSY, and a
    fresh board fed the same requests answers with exactly the same bytes."""
    from spikeloop.host.virtual_board import transcript
    p = Params(**kw)
    tr = transcript(SoCConfig.build(p, max_payload=256), seed=3)
    dec, reasons, acks = P.FrameDecoder(max_payload=0xFFFF), set(), 0
    for _, reply in tr:
        for f in dec.feed(reply):
            if f.cmd == Command.NAK:
                reasons.add(P.unpack_nak(f.payload)[0])
            acks += f.cmd == Command.ACK
    assert reasons == set(Nak) - {Nak.BUSY} and acks > 20
    vb = vboard(p, max_payload=256)
    assert [vb.feed(req) for req, _ in tr] == [rep for _, rep in tr]
    assert vb.reg("STEP_COUNT") == 0 and vb.reg("DUPLICATES") == 0     # reset at the end, LINK too


def test_values_the_core_cannot_hold_are_refused():
    """R0 has w.bits - 1 bits and ref holds refractory_steps: wider values are refused, not cut."""
    p = net()
    vb = vboard(p)
    h = Host(vb)
    r0 = P.register("R0").addr
    assert h.nak(Command.WRITE_REG, P.pack_write_reg(r0, [1 << p.r0_bits])) is Nak.BAD_VALUE
    ref = P.space("out.ref")
    assert p.ref_bits < 8
    assert h.nak(Command.WRITE_MEM, P.MEM_REQ.pack(ref.id, 0, 1) + bytes([1 << p.ref_bits])) \
        is Nak.BAD_VALUE
    assert vb.reg("R0") == p.r0_q and not vb.state()["out.ref"].any()
    h.req(Command.WRITE_REG, P.pack_write_reg(r0, [(1 << p.r0_bits) - 1]))
    assert vb.reg("R0") == (1 << p.r0_bits) - 1


def test_committed_transcript_replays_on_the_reference():
    """The committed conformance session (tests/fixtures/link_transcript.json) is what the
    reference answers today: a change to VirtualBoard that alters any reply byte fails here, even
    when the gateware changes the same way. If the protocol changed on purpose, regenerate it
    (spikeloop transcript --out tests/fixtures/link_transcript.json) and review the diff."""
    from spikeloop.host.linklog import Transcript, conformance_transcript, describe_mismatch, replay_on
    fixture = Transcript.load(Path(__file__).with_name("fixtures") / "link_transcript.json")
    assert fixture.source == "VirtualBoard" and len(fixture.exchanges) > 50
    bad = replay_on(fixture, "board-model")
    assert bad is None, describe_mismatch(fixture, *bad)
    assert conformance_transcript().exchanges == fixture.exchanges

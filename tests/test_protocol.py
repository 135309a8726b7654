"""The host link protocol: CRC, COBS, framing, resynchronisation, sequence rule, tables, wire cost."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeloop import protocol as P
from spikeloop.host.transport import (FaultyTransport, LoopbackTransport, SerialTransport, TransportClosed,
                                      loopback_pair)
from spikeloop.params import Params
from spikeloop.sim.golden import GoldenModel
from spikeloop.sim.stepmodel import STATE_WORDS

DOCS = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

cmds = st.integers(0, 255)
seqs = st.integers(0, 255)
payloads = st.binary(max_size=700)
# Payloads rich in zeros and in long non-zero runs exercise COBS's edge cases.
edgy = st.one_of(payloads, st.lists(st.sampled_from([0, 1, 0xFF]), max_size=600).map(bytes),
                 st.integers(0, 800).map(lambda n: bytes([7]) * n))


# ---------------------------------------------------------------------- CRC
@pytest.mark.parametrize("data, crc", [
    (b"123456789", 0x29B1),       # the catalogued check value of CRC-16/CCITT-FALSE
    (b"", 0xFFFF),
    (b"A", 0xB915),
    (b"\x00", 0xE1F0),
])
def test_crc_vectors(data, crc):
    assert P.crc16(data) == crc
    assert P.crc16_bitwise(data) == crc


@given(st.binary(max_size=300), st.integers(0, 0xFFFF))
def test_crc_table_matches_bitwise(data, init):
    assert P.crc16(data, init) == P.crc16_bitwise(data, init)
    c = init
    for b in data:
        c = P.crc16_update_byte(c, b)
    assert c == P.crc16_bitwise(data, init)


@given(st.binary(max_size=300))
def test_crc_residue_is_zero(data):
    """Appending the CRC big-endian leaves residue 0: the receiver only tests for zero."""
    assert P.crc16(data + P.crc16(data).to_bytes(2, "big")) == 0


# ---------------------------------------------------------------------- COBS
@pytest.mark.parametrize("raw, enc", [     # the examples of the COBS paper / common references
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255))),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
])
def test_cobs_vectors(raw, enc):
    assert P.cobs_encode(raw) == enc
    assert P.cobs_decode(enc) == raw


@given(edgy)
def test_cobs_round_trip(data):
    enc = P.cobs_encode(data)
    assert 0 not in enc
    assert len(enc) <= len(data) + P.cobs_max_overhead(len(data))
    assert P.cobs_decode(enc) == data


@pytest.mark.parametrize("bad", [b"\x00", b"\x05\x11", b"\x03\x11\x00", b"\x02"[:0] + b"\x09"])
def test_cobs_rejects_malformed(bad):
    with pytest.raises(P.CobsError):
        P.cobs_decode(bad)


# ---------------------------------------------------------------------- frames
def test_frame_layout():
    wire = P.encode_frame(P.Command.READ_REG, 3, b"\x10\x00\x02\x00", 0xBEEF)
    body = P.cobs_decode(wire[1:-1])
    assert wire[0] == wire[-1] == 0 and 0 not in wire[1:-1]
    assert body[:6] == bytes([0x02, 3, 4, 0, 0xEF, 0xBE])       # cmd, seq, length, session
    assert body[6:10] == b"\x10\x00\x02\x00"
    assert int.from_bytes(body[10:], "big") == P.crc16(body[:10])
    assert len(wire) == P.frame_wire_size(4, worst=False)
    (f,) = P.FrameDecoder().feed(wire)
    assert (f.cmd, f.seq, f.session, f.payload) == (2, 3, 0xBEEF, b"\x10\x00\x02\x00")


@pytest.mark.parametrize("args, message", [
    ((256, 0, b""), "cmd must be a byte, not 256"),
    ((1, -1, b""), "seq must be in 0..255, not -1"),
    ((1, 0, bytes(65536)), "payload must be at most 65535 bytes, not 65536"),
])
def test_encode_frame_validates(args, message):
    with pytest.raises(ValueError, match=message):
        P.encode_frame(*args)


@given(cmds, seqs, edgy)
def test_frame_round_trip(cmd, seq, payload):
    wire = P.encode_frame(cmd, seq, payload)
    assert len(wire) <= P.frame_wire_size(len(payload))
    d = P.FrameDecoder()
    assert d.feed(wire) == [P.Frame(cmd, seq, payload)]
    assert d.errors == 0 and d.frames_ok == 1


@given(st.lists(st.tuples(cmds, seqs, payloads), min_size=1, max_size=6), st.data())
def test_stream_split_anywhere(frames, data):
    """Frames fed in arbitrary pieces decode to the same list."""
    wire = b"".join(P.encode_frame(*f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    d, got, prev = P.FrameDecoder(), [], 0
    for c in cuts + [len(wire)]:
        got += d.feed(wire[prev:c])
        prev = c
    assert got == [P.Frame(*f) for f in frames]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.binary(max_size=400), st.tuples(cmds, seqs, payloads)), min_size=1, max_size=5),
       st.binary(max_size=50))
def test_resync_after_garbage(chunks, leading):
    """Arbitrary garbage (zeros included) before and between frames: every frame still arrives."""
    d = P.FrameDecoder()
    got = d.feed(leading)
    sent = []
    for garbage, f in chunks:
        got += d.feed(garbage + P.encode_frame(*f))
        sent.append(P.Frame(*f))
    assert got == sent


def test_resync_after_oversize_garbage():
    d = P.FrameDecoder(max_payload=16)
    good = P.encode_frame(P.Command.IDENTIFY, 1)
    assert d.feed(b"\x00" + b"\x55" * 100 + good) == [P.Frame(1, 1)]
    assert d.oversize_errors == 1 and d.garbage_bytes > 0
    assert d.feed(P.encode_frame(2, 2, bytes(17))) == []      # longer than max_payload
    assert d.feed(good) == [P.Frame(1, 1)]


FLIP_FRAMES = [
    (P.Command.IDENTIFY, 0, b""),
    (P.Command.WRITE_REG, 7, P.pack_write_reg(0x10, [0, 0, 1])),
    (P.Command.READ_MEM, 255, P.pack_read_mem(0x0B, 300, 20)),
    (P.Command.RUN_STEPS, 42, bytes(range(256)) + bytes(300)),
    (P.Command.ACK, 1, bytes([0xAB]) * 260),
]


@pytest.mark.parametrize("frame", FLIP_FRAMES, ids=lambda f: f[0].name)
def test_every_single_bit_flip_rejected(frame):
    """Each of the 8·len(wire) one-bit corruptions is rejected, and the next frame still gets through."""
    wire = P.encode_frame(*frame)
    nxt = P.encode_frame(P.Command.IDENTIFY, 9)
    for k in range(len(wire) * 8):
        bad = bytearray(wire)
        bad[k // 8] ^= 1 << (k % 8)
        d = P.FrameDecoder()
        assert d.feed(b"\x00" + bytes(bad) + nxt) == [P.Frame(1, 9)], f"bit {k} of {len(wire) * 8}"
        assert d.errors + d.garbage_bytes > 0


@pytest.mark.parametrize("frame", FLIP_FRAMES, ids=lambda f: f[0].name)
def test_truncation_rejected(frame):
    wire = P.encode_frame(*frame)
    nxt = P.encode_frame(P.Command.IDENTIFY, 9)
    for k in range(len(wire) - 1):       # wire[:-1] lacks only the trailing delimiter: intact
        d = P.FrameDecoder()
        assert d.feed(wire[:k] + nxt) == [P.Frame(1, 9)]
        assert P.FrameDecoder().feed(wire[:k] + b"\x00") == []
    assert P.FrameDecoder().feed(wire[:-1] + nxt) == [P.Frame(*frame), P.Frame(1, 9)]


@given(cmds, seqs, payloads, st.data())
def test_random_byte_errors_rejected(cmd, seq, payload, data):
    """Several random byte substitutions, drops or duplications: never accepted."""
    wire = bytearray(P.encode_frame(cmd, seq, payload))
    for _ in range(data.draw(st.integers(1, 4))):
        k = data.draw(st.integers(1, len(wire) - 2))
        op = data.draw(st.sampled_from(["sub", "drop", "dup"]))
        if op == "sub":
            wire[k] = data.draw(st.integers(0, 255).filter(lambda v, k=k: v != wire[k]))
        elif op == "drop":
            del wire[k]
        else:
            wire.insert(k, wire[k])
    got = P.FrameDecoder().feed(bytes(wire))
    # The edits may leave the frame's bytes intact between two delimiters: a drop undoing a dup,
    # or a 0x00 put in next to a delimiter (one more empty frame). That is the frame, unchanged.
    body = P.encode_frame(cmd, seq, payload)[1:-1]
    if body in bytes(wire).split(b"\x00"):
        assert got == [P.Frame(cmd, seq, payload)]
    else:
        assert got == []


def test_rejects_are_reported_for_naks():
    d = P.FrameDecoder()
    wire = bytearray(P.encode_frame(P.Command.READ_REG, 5, b"\x01\x02\x03\x04"))
    wire[-3] ^= 0x40
    assert d.feed(bytes(wire)) == []
    [(why, seq)] = d.pop_rejects()
    assert why is P.Reject.CRC and why.nak is P.Nak.BAD_CRC and seq == 5
    body = P.HEADER.pack(2, 6, 3, 0) + b"\x01\x02\x03\x04"                 # length says 3, there are 4
    body += P.crc16(body).to_bytes(2, "big")
    assert d.feed(b"\x00" + P.cobs_encode(body) + b"\x00\x00\x03\x01\x02\x00") == []
    assert [w for w, _ in d.pop_rejects()] == [P.Reject.LENGTH, P.Reject.FRAMING]
    assert (d.crc_errors, d.length_errors, d.framing_errors) == (1, 1, 1)


# ---------------------------------------------------------------------- sequence rule
def test_sequence_rule():
    t = P.SequenceTracker()
    V = P.SeqVerdict
    assert t.classify(P.Command.WRITE_REG, 200) is V.NEW          # nothing accepted yet
    t.accept(P.Command.WRITE_REG, 200)
    assert t.classify(P.Command.WRITE_REG, 200) is V.DUPLICATE    # retransmission
    assert t.classify(P.Command.RUN_STEPS, 200) is V.OUT_OF_SEQUENCE
    assert t.classify(P.Command.RUN_STEPS, 201) is V.NEW
    assert t.classify(P.Command.RUN_STEPS, 202) is V.OUT_OF_SEQUENCE
    assert t.classify(P.Command.RUN_STEPS, 199) is V.OUT_OF_SEQUENCE
    assert t.classify(P.Command.IDENTIFY, 17) is V.NEW            # always; re-establishes
    t.accept(P.Command.WRITE_REG, 255)
    assert t.classify(P.Command.READ_REG, 0) is V.NEW             # wraps
    t.forget()
    assert t.classify(P.Command.READ_REG, 77) is V.NEW


def test_duplicated_frames_detected():
    """A frame duplicated on the wire decodes twice; the sequence rule executes it once."""
    wire = P.encode_frame(P.Command.RUN_STEPS, 4, b"\x01\x00\x00")
    frames = P.FrameDecoder().feed(wire + wire)
    t, executed = P.SequenceTracker(), 0
    for f in frames:
        if t.classify(f.cmd, f.seq) is P.SeqVerdict.NEW:
            t.accept(f.cmd, f.seq)
            executed += 1
    assert len(frames) == 2 and executed == 1


class _CounterDevice:
    """A minimal device following the rules of docs/protocol.md: WRITE_REG adds to a counter."""

    def __init__(self):
        self.dec, self.seq, self.total, self.executed = P.FrameDecoder(), P.SequenceTracker(), 0, 0

    def receive(self, data: bytes) -> bytes:
        out = b""
        frames = self.dec.feed(data)
        for why, seq in self.dec.pop_rejects():
            if seq is not None:
                out += P.encode_frame(P.Command.NAK, seq, P.pack_nak(why.nak))
        for f in frames:
            v = self.seq.classify(f.cmd, f.seq)
            if v is P.SeqVerdict.OUT_OF_SEQUENCE:
                out += P.encode_frame(P.Command.NAK, f.seq, P.pack_nak(P.Nak.BAD_SEQUENCE, f.cmd))
                continue
            if v is P.SeqVerdict.NEW:
                _, _, vals = P.unpack_reg_request(f.payload, write=True)
                self.total += vals[0]
                self.executed += 1
                self.seq.accept(f.cmd, f.seq)
            out += P.encode_frame(P.Command.ACK, f.seq, self.total.to_bytes(4, "little"))
        return out


@pytest.mark.parametrize("seed", range(4))
def test_retry_with_faults_executes_each_request_once(seed):
    """Stop-and-wait with retransmission over a link corrupting both directions."""
    h2d_a, h2d_b = loopback_pair()
    d2h_a, d2h_b = loopback_pair()
    down = FaultyTransport(h2d_a, rate=0.02, seed=seed)
    up = FaultyTransport(d2h_a, rate=0.02, seed=seed + 100)
    dev, host_dec = _CounterDevice(), P.FrameDecoder()
    seq, expect, tries = 0, 0, 0
    for n in range(150):
        seq = P.next_seq(seq)
        frame = P.encode_frame(P.Command.WRITE_REG, seq, P.pack_write_reg(0x40, [n + 1]))
        expect += n + 1
        while True:
            tries += 1
            assert tries < 2000
            down.write(frame)
            up.write(dev.receive(h2d_b.read(1 << 16, 0)))
            replies = [f for f in host_dec.feed(d2h_b.read(1 << 16, 0)) if f.seq == seq]
            if any(f.cmd == P.Command.ACK for f in replies):
                ack = next(f for f in replies if f.cmd == P.Command.ACK)
                assert int.from_bytes(ack.payload, "little") == expect
                break
            # timeout or NAK: retransmit the same frame
    assert dev.executed == 150 and dev.total == expect
    assert down.log and up.log                         # faults did happen
    assert tries > 150


# ---------------------------------------------------------------------- registers and spaces
def test_register_map_consistent():
    names = [r.name for r in P.REGISTERS]
    addrs = [r.addr for r in P.REGISTERS]
    assert len(set(names)) == len(names) and len(set(addrs)) == len(addrs)
    p = Params()
    for r in P.REGISTERS:
        assert 0 <= r.addr <= 0xFFFF and 1 <= r.width <= 32
        v = r.reset_value(p, clock_hz=12_000_000, baud=3_000_000)
        assert 0 <= v < (1 << r.width), r.name
    assert P.register("R0").reset_value(p) == p.r0_q
    assert P.register("MAGIC").reset_value().to_bytes(4, "little") == P.MAGIC
    assert P.register("CHUNK_PHASE").width >= (Params.__dataclass_fields__["chunk_steps"].default - 1).bit_length()
    with pytest.raises(KeyError, match="register must be one of"):
        P.register("NOPE")


def test_every_link_counter_has_a_register():
    for name in ("CRC_ERRORS", "FRAMING_ERRORS", "LENGTH_ERRORS", "RESYNCS", "GARBAGE_BYTES",
                 "NAKS_SENT", "DUPLICATES", "FRAMES_OK", "STEP_COUNT", "CYCLES", "CHUNK_COUNT",
                 "STATUS", "VERSION"):
        P.register(name)


def test_space_ids_unique():
    ids = [s.id for s in P.SPACES]
    assert len(set(ids)) == len(ids) and all(0 <= i <= 0xFF for i in ids)
    assert len({s.name for s in P.SPACES}) == len(P.SPACES)
    assert [s.name.split(".")[1] for s in P.SPACES if s.layer == "out"] == list(STATE_WORDS)
    assert P.space("out.w") is P.space(P.space("out.w").id)


CONFIGS = [
    {},
    {"n_in": 7, "n_hidden": 5, "n_out": 3, "regulariser": True, "feedback": "random"},
    {"n_in": 9, "n_out": 2, "kernel": "factorised", "optimiser": "fixed", "error_source": "host"},
    {"n_in": 4, "n_hidden": 3, "n_out": 2, "kernel": "single_exp", "feedback": "uniform"},
    {"n_in": 6, "n_hidden": 2, "n_out": 2},
]


@pytest.mark.parametrize("kw", CONFIGS)
def test_spaces_match_golden_snapshot(kw):
    """Space names, depths and word formats agree with the golden model's snapshot."""
    p = Params(**kw)
    g = GoldenModel(p, seeds=1)
    rng = np.random.default_rng(0)
    for _ in range(30):
        x = rng.random(p.n_in) < 0.5
        if p.error_source.value == "target":
            g.step(x, target=rng.random(p.n_out) < 0.3)
        else:
            g.step(x, error=rng.integers(-4096, 4096, p.n_out))
    snap = g.snapshot()
    if P.space("fb").present(p):
        snap["fb"] = g.fb
    spaces = {s.name: s for s in P.spaces_for(p)}
    assert set(spaces) == set(snap)
    for name, v in snap.items():
        s = spaces[name]
        assert s.depth(p) == v[0].size, name
        fmt = s.word(p)
        assert fmt.min <= v.min() and v.max() <= fmt.max, name
        words = [int(w) for w in v[0].ravel()]
        assert P.unpack_words(P.pack_words(words, fmt), fmt) == words


# ---------------------------------------------------------------------- payloads
@given(st.data())
def test_words_round_trip(data):
    bits = data.draw(st.integers(1, 48))
    signed = data.draw(st.booleans()) and bits > 1
    f = P.WordFormat(bits, signed)
    words = data.draw(st.lists(st.integers(f.min, f.max), max_size=20))
    raw = P.pack_words(words, f)
    assert len(raw) == f.nbytes * len(words)
    assert P.unpack_words(raw, f) == words


def test_words_little_endian_sign_extended():
    f = P.WordFormat(20, True)
    assert P.pack_words([-1, 0x7FFFF, -0x80000], f) == b"\xff\xff\xff" + b"\xff\xff\x07" + b"\x00\x00\xf8"
    with pytest.raises(ValueError, match="word must be in -524288..524287, not 524288"):
        P.pack_words([1 << 19], f)


@given(st.lists(st.booleans(), min_size=1, max_size=70))
def test_bitmap_round_trip(bits):
    raw = P.pack_bitmap(bits)
    assert len(raw) == P.bitmap_bytes(len(bits))
    assert P.unpack_bitmap(raw, len(bits)) == bits


def test_bitmap_bit_order():
    assert P.pack_bitmap([1, 0, 0, 0, 0, 0, 0, 0, 0, 1]) == b"\x01\x02"


@pytest.mark.parametrize("source", ["target", "host"])
def test_run_steps_round_trip(source):
    p = Params(n_in=13, n_out=3, error_source=source)
    rng = np.random.default_rng(1)
    K = 5
    x = (rng.random((K, p.n_in)) < 0.5).tolist()
    if source == "target":
        t = (rng.random((K, p.n_out)) < 0.5).tolist()
        raw = P.pack_run_steps(p, x, targets=t)
    else:
        t = rng.integers(-32768, 32768, (K, p.n_out)).tolist()
        raw = P.pack_run_steps(p, x, errors=t)
    assert len(raw) == 2 + K * P.bytes_per_step(p, k=0).down
    assert P.unpack_run_steps(p, raw) == (x, t)
    with pytest.raises(ValueError):
        P.unpack_run_steps(p, raw[:-1])
    out = (rng.random((K, p.n_out)) < 0.5).tolist()
    assert P.unpack_run_reply(p, P.pack_run_reply(p, 1234, out)) == (1234, out)


def test_reg_and_mem_requests():
    assert P.unpack_reg_request(P.pack_write_reg(0x11, [5, 6]), write=True) == (0x11, 2, [5, 6])
    assert P.unpack_reg_request(P.pack_read_reg(0x10, 9), write=False) == (0x10, 9, [])
    with pytest.raises(ValueError):
        P.unpack_reg_request(P.pack_write_reg(0x11, [5, 6])[:-1], write=True)
    f = P.space("out.w").word(Params())
    raw = P.pack_write_mem(P.space("out.w").id, 70, [-3, 4], f)
    assert P.unpack_mem_request(raw) == (P.space("out.w").id, 70, 2, P.pack_words([-3, 4], f))


def test_identify_round_trip():
    p = Params(n_in=256, n_hidden=0, n_out=16, kernel="single_exp")
    ident = P.Identity(p, lanes=4, clock_hz=24_000_000, baud=12_000_000, max_steps=50,
                       nonce=0xDEADBEEF, session=0x1234)
    raw = P.pack_identify(ident)
    assert raw[:6] == bytes.fromhex("efbeadde3412") and raw[6:10] == P.MAGIC
    back = P.unpack_identify(raw)
    assert back == ident and back.params.to_dict() == p.to_dict()
    assert len(raw) + P.HEADER_SIZE + P.CRC_SIZE <= P.DEFAULT_MAX_PAYLOAD
    with pytest.raises(ValueError, match="magic"):
        P.unpack_identify(raw[:6] + b"XXXX" + raw[10:])


def test_nak_payload():
    assert P.unpack_nak(P.pack_nak(P.Nak.BAD_ADDRESS, P.Command.READ_MEM)) == (P.Nak.BAD_ADDRESS, 0x04)
    assert P.unpack_nak(b"\x77\x01") == (0x77, 1)


def test_command_codes():
    assert all(c.is_request for c in P.Command if c not in (P.Command.ACK, P.Command.NAK))
    assert not P.Command.ACK.is_request and not P.Command.NAK.is_request
    assert P.Frame(0x99, 0).command is None and P.Frame(1, 0).command is P.Command.IDENTIFY


# ---------------------------------------------------------------------- wire cost
@pytest.mark.parametrize("n_in, n_out, source, down, up", [
    (100, 1, "target", 14, 1), (100, 1, "host", 15, 1),
    (256, 16, "target", 34, 2), (256, 16, "host", 64, 2),
])
def test_bytes_per_step_payload(n_in, n_out, source, down, up):
    c = P.bytes_per_step(Params(n_in=n_in, n_out=n_out), source, k=0)
    assert (c.down, c.up) == (down, up)


def test_bytes_per_step_amortised():
    p = Params(n_in=100, n_out=1)
    # request: 2 + 50·14 = 702 B payload, body 710 B, COBS ≤ 3, delimiters 2 → 715 B
    # reply: 6 + 50·1 = 56 B payload, body 64 B, COBS 1, delimiters 2 → 67 B
    assert P.batch_bytes(p, 50) == (715, 67)
    c = P.bytes_per_step(p, "target", k=50)
    assert (c.down, c.up) == (715 / 50, 67 / 50)
    assert P.projected_steps_per_s(p, 3e6, 50) == pytest.approx(50 * 3e6 / (10 * (715 + 67)))
    assert P.projected_steps_per_s(p, 3e6, 50, pipelined=True) == pytest.approx(50 * 3e6 / (10 * 715))
    assert P.projected_steps_per_s(p, 12e6, 50) == pytest.approx(4 * P.projected_steps_per_s(p, 3e6, 50))
    big = Params(n_in=256, n_out=16)
    assert P.projected_steps_per_s(big, 3e6, 50) > 1000           # real time at dt = 1 ms
    assert P.max_steps_per_frame(big) == (4096 - 2) // 34


# ---------------------------------------------------------------------- generated docs
def test_docs_contain_generated_tables():
    text = DOCS.read_text()
    assert P.render_docs() in text, "regenerate with: python -m spikeloop.protocol docs/protocol.md"
    for r in P.REGISTERS:
        assert f"`{r.name}`" in P.render_register_table()
    assert P.render_register_table().startswith("| Name | Addr | Width | Reset | Description |")


# ---------------------------------------------------------------------- transports
def test_loopback_pair():
    a, b = loopback_pair()
    a.write(b"hello")
    b.write(b"world")
    assert b.read(3, 0.1) == b"hel" and b.read(10, 0.1) == b"lo"
    assert a.read(10, 0.1) == b"world"
    assert a.read(10, 0.01) == b""
    a.close()
    with pytest.raises(TransportClosed):
        b.read(1, 0.01)
    with pytest.raises(TransportClosed):
        b.write(b"x")
    assert isinstance(a, LoopbackTransport)


def test_faulty_transport_seeded():
    data = bytes(range(256)) * 8

    def run(seed, rate=0.05):
        a, b = loopback_pair()
        f = FaultyTransport(a, rate, seed)
        for k in range(0, len(data), 64):
            f.write(data[k:k + 64])
        return b.read(1 << 16, 0), f.log

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert run(0, rate=0.0) == (data, [])
    _, log = run(3, rate=0.2)
    assert {kind for _, kind in log} <= set(FaultyTransport.FAULTS) and len(log) > 10
    with pytest.raises(ValueError, match="rate must be in 0..1"):
        FaultyTransport(a := loopback_pair()[0], 2.0)
    with pytest.raises(ValueError, match="faults must be some of"):
        FaultyTransport(a, 0.1, faults=("melt",))


@pytest.mark.parametrize("seed", range(3))
def test_fault_injection_never_accepts_corruption(seed):
    """Thousands of frames through a faulty link: every accepted frame is one that was sent."""
    a, b = loopback_pair()
    f = FaultyTransport(a, rate=0.003, seed=seed)
    rng = np.random.default_rng(seed)
    sent = [P.Frame(int(rng.integers(0, 8)), k & 0xFF, rng.integers(0, 256, int(rng.integers(0, 300)),
                                                                     dtype=np.uint8).tobytes())
            for k in range(400)]
    for fr in sent:
        f.write(fr.encode())
    d = P.FrameDecoder()
    got = d.feed(b.read(1 << 24, 0))
    it = iter(sent)
    for g in got:                   # an in-order subsequence of what was sent
        assert any(g == s for s in it)
    assert 0.5 * len(sent) < len(got) < len(sent)
    assert d.errors > 0


def test_serial_transport_loop_url():
    """pyserial's loop:// device: what is written comes back, through the same framing."""
    pytest.importorskip("serial")
    with SerialTransport("loop://", baud=3_000_000) as t:
        assert t.read(10, 0.01) == b""
        frame = P.encode_frame(P.Command.IDENTIFY, 3)
        t.write(frame)
        got = b""
        while len(got) < len(frame):
            chunk = t.read(len(frame), 0.5)
            assert chunk
            got += chunk
        assert P.FrameDecoder().feed(got) == [P.Frame(1, 3)]

"""The driver against a device that lies: whatever comes back, only DriverError subclasses escape,
and no write is reported done without a correct ACK (issue #12, item 2)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from spikeloop import protocol as P
from spikeloop.host.board import Board, DriverError, IdentityMismatch, ProtocolError
from spikeloop.host.linklog import Transcript
from spikeloop.host.transport import Transport
from spikeloop.host.virtual_board import ModelTransport
from spikeloop.protocol import Command

from board_cases import net, stimulus, vboard

FIXTURE = Path(__file__).with_name("fixtures") / "link_transcript.json"


def small(**kw):
    """8 in, 3 out: cheap to build once per Hypothesis example."""
    return net(n_in=8, n_out=3, chunk_steps=20, **kw)


#: The devices the hostile test wraps: on-chip errors, host-streamed errors, a hidden layer with B.
SMALL = ({}, {"error_source": "host"}, {"n_hidden": 4, "feedback": "random", "regulariser": True})


class Rewriting(ModelTransport):
    """The model board, with ``rewrite(request_frame, reply_bytes) -> bytes`` applied to each reply."""

    def __init__(self, board, rewrite):
        super().__init__(board)
        self.rewrite = rewrite

    def write(self, data):
        before = len(self._rx)
        super().write(data)
        (f,) = P.FrameDecoder().feed(data)
        self._rx[before:] = self.rewrite(f, bytes(self._rx[before:]))


def reply_frame(reply: bytes) -> P.Frame:
    (g,) = P.FrameDecoder(max_payload=0xFFFF).feed(reply)
    return g


def identify_with(*, json_bytes=None, **head):
    """A rewrite that answers IDENTIFY with the honest head fields changed by ``head`` and the JSON
    replaced by ``json_bytes`` (json_len follows it unless ``head`` sets it)."""
    names = ("magic", "version", "lanes", "n_in", "n_hidden", "n_out", "clock_hz", "baud", "max_payload",
             "max_steps", "json_len")

    def rewrite(f, reply):
        if f.cmd != Command.IDENTIFY:
            return reply
        g = reply_frame(reply)
        sh, body = g.payload[:P.SESSION_HEAD.size], g.payload[P.SESSION_HEAD.size:]
        fields = dict(zip(names, P.IDENT.unpack_from(body)))
        js = body[P.IDENT.size:] if json_bytes is None else json_bytes
        fields["json_len"] = len(js)
        fields.update(head)
        return P.encode_frame(Command.ACK, f.seq, sh + P.IDENT.pack(*fields.values()) + js, g.session)
    return rewrite


def connect(rewrite, p=None, **kw):
    return Board(Rewriting(vboard(p or net()), rewrite), timeout=0.01, retries=1, **kw)


# ---------------------------------------------------------------------- IDENTIFY, case by case
@pytest.mark.parametrize("js, kind", [(b"[]", "array []"), (b"null", "null None"), (b"1", "integer 1"),
                                      (b'"x"', "string 'x'")])
def test_identify_json_that_is_no_object(js, kind):
    """Before: TypeError from Params.from_dict."""
    with pytest.raises(IdentityMismatch, match=f"IDENTIFY reply is not a spikeloop identity: IDENTIFY JSON "
                                               f"must be an object of Params fields, not {re.escape(kind)}$"):
        connect(identify_with(json_bytes=js))


def _json_of(p, **change):
    d = p.to_dict()
    for k, v in change.items():
        if v is KeyError:
            del d[k]
        else:
            d[k] = v
    return json.dumps(d).encode()


@pytest.mark.parametrize("change, msg", [
    ({"n_in": "20"}, "IDENTIFY JSON n_in must be an integer, not string '20'"),
    ({"n_in": 20.0}, "IDENTIFY JSON n_in must be an integer, not number 20.0"),
    ({"regulariser": 0}, "IDENTIFY JSON regulariser must be a boolean, not integer 0"),
    ({"dt_ms": None}, "IDENTIFY JSON dt_ms must be a number, not null None"),
    ({"kernel": ["double_exp"]}, r"IDENTIFY JSON kernel must be a string, not array \['double_exp'\]"),
    ({"n_out": KeyError}, r"IDENTIFY JSON object must have exactly the keys of Params.to_dict\(\) \(missing n_out\)"),
    ({"spare": 1}, r"IDENTIFY JSON object must have exactly the keys of Params.to_dict\(\) \(unexpected 'spare'\)"),
    ({"formats": []}, "IDENTIFY JSON formats must be an object, not array"),
    ({"decay_codes": {"mem": [7]}}, r"IDENTIFY JSON decay_codes\['mem'\] must be \[M, K\] \(two integers\), not \[7\]"),
    ({"kernel": "triple_exp"}, "IDENTIFY JSON is not a valid Params: kernel must be one of"),
    ({"decay_codes": {"mem": [0, 4]}}, "IDENTIFY JSON is not a valid Params: a decay code's M must be"),
])
def test_identify_json_fields(change, msg):
    p = net()
    with pytest.raises(IdentityMismatch, match=f"IDENTIFY reply is not a spikeloop identity: {msg}"):
        connect(identify_with(json_bytes=_json_of(p, **change)), p)


def test_identify_format_entries():
    p = net()
    d = p.to_dict()
    d["formats"]["u"] = {"bits": 20, "frac": 10, "signed": 1}
    with pytest.raises(IdentityMismatch, match=r"IDENTIFY JSON formats\['u'\].signed must be a boolean, not integer 1"):
        connect(identify_with(json_bytes=json.dumps(d).encode()), p)
    d["formats"]["u"] = {"bits": 20, "frac": 10}
    with pytest.raises(IdentityMismatch, match=r"formats\['u'\] must have exactly the keys bits, frac, signed "
                                               r"\(missing signed\)"):
        connect(identify_with(json_bytes=json.dumps(d).encode()), p)
    del d["formats"]["u"]
    with pytest.raises(IdentityMismatch, match=r"formats must have exactly the keys of Params.to_dict\(\) \(missing u\)"):
        connect(identify_with(json_bytes=json.dumps(d).encode()), p)


@pytest.mark.parametrize("js, msg", [
    (b"\xff{}", "IDENTIFY JSON is not valid UTF-8 JSON: 'utf-8' codec can't decode"),
    (b"{", "IDENTIFY JSON is not valid UTF-8 JSON: Expecting property name"),
    (b"[" * 60_000, "IDENTIFY JSON is not valid UTF-8 JSON: maximum recursion depth"),
], ids=["utf8", "truncated", "deep"])
def test_identify_json_that_does_not_parse(js, msg):
    with pytest.raises(IdentityMismatch, match=msg):
        connect(identify_with(json_bytes=js))


def test_identify_lengths():
    """Before: ValueError 'IDENTIFY JSON length mismatch' escaped Board.identify()."""
    p = net()
    n = len(P.pack_identify(P.Identity(p))) - P.IDENT.size - P.SESSION_HEAD.size
    with pytest.raises(IdentityMismatch, match=f"IDENTIFY JSON length mismatch: json_len is {n - 1}, "
                                               f"but {n} B follow the head"):
        connect(identify_with(json_len=n - 1), p)
    with pytest.raises(IdentityMismatch, match="IDENTIFY reply must be at least 40 B, not 5"):
        connect(lambda f, r: P.encode_frame(Command.ACK, f.seq, b"SPKL\x01", f.session))
    # the same through identify() on a board that connected cleanly
    state = {"n": 0}

    def later(f, reply):
        if f.cmd == Command.IDENTIFY:
            state["n"] += 1
            if state["n"] > 1:
                return P.encode_frame(Command.ACK, f.seq, reply_frame(reply).payload + b"\x00", f.session)
        return reply
    b = connect(later, p)
    with pytest.raises(IdentityMismatch, match=f"json_len is {n}, but {n + 1} B follow the head"):
        b.identify()
    assert b.read_reg("VERSION") == P.PROTOCOL_VERSION                   # and the link goes on


@pytest.mark.parametrize("head, msg", [
    ({"lanes": 0}, "IDENTIFY lanes must be at least 1, not 0"),
    ({"clock_hz": 0}, "IDENTIFY clock_hz must be positive, not 0"),
    ({"baud": 0}, "IDENTIFY baud must be positive, not 0"),
    ({"max_payload": 7}, r"IDENTIFY max_payload must be at least 10 B for these parameters \(a register write, "
                         r"a write of the widest word, one RUN_STEPS step\), not 7"),
    ({"n_out": 6}, "IDENTIFY sizes disagree with its JSON: n_in, n_hidden, n_out are 20, 0, 6 in the head, "
                   "20, 0, 5 in the JSON"),
    ({"version": 1}, "device speaks protocol version 1, this driver 2"),
])
def test_identify_head_fields(head, msg):
    """Before: lanes 0 and clock 0 were accepted; max_payload 7 passed the constructor and write_reg /
    write_mem raised 'ValueError: range() arg 3 must not be zero'."""
    with pytest.raises(IdentityMismatch, match=msg):
        connect(identify_with(**head))


def test_smallest_max_payload_is_what_the_driver_sends():
    """min_max_payload is the widest single-word request: the driver works right at it."""
    p = net(n_hidden=4, regulariser=True)              # racc: 6-byte words, the widest
    need = P.min_max_payload(p)
    assert need == P.MEM_REQ.size + 6
    b = connect(identify_with(max_payload=need), p)
    assert b.max_payload == need and b.steps_per_frame >= 1
    b.write_reg("R0", [3, 4])                          # one register per frame
    b.write_mem("out.racc", [1, 2, 3, 4, 5])
    assert b.read_mem("out.racc").tolist() == [1, 2, 3, 4, 5] and b.read_reg("R0", 2) == [3, 4]
    with pytest.raises(IdentityMismatch, match=f"max_payload must be at least {need} B"):
        connect(identify_with(max_payload=need - 1), p)


# ---------------------------------------------------------------------- ACK lengths
def pad_acks(cmd, delta):
    """A rewrite that makes the ACK to ``cmd`` ``delta`` bytes longer (or shorter)."""
    def rewrite(f, reply):
        if f.cmd != cmd:
            return reply
        g = reply_frame(reply)
        if g.cmd != Command.ACK:
            return reply
        pl = g.payload + bytes(range(1, delta + 1)) if delta > 0 else g.payload[:delta]
        return P.encode_frame(Command.ACK, g.seq, pl, g.session)
    return rewrite


def test_a_write_acked_with_payload_is_not_done():
    """Before: ACKs to writes carrying payload bytes were accepted silently."""
    p = net()
    vb = vboard(p)
    b = Board(Rewriting(vb, pad_acks(Command.WRITE_REG, 3)), timeout=0.01, retries=1)
    with pytest.raises(ProtocolError, match=r"^WRITE_REG seq \d+: the ACK must carry 0 B, not 3$"):
        b.write_reg("R0", 9)
    with pytest.raises(ProtocolError, match=r"WRITE_MEM seq \d+: the ACK must carry 0 B, not 1"):
        Board(Rewriting(vb, pad_acks(Command.WRITE_MEM, 1)), name="m", takeover=True).write_mem("out.w", [1])
    with pytest.raises(ProtocolError, match=r"^m: RESET_STATE seq \d+: the ACK must carry 0 B, not 2$"):
        Board(Rewriting(vb, pad_acks(Command.RESET_STATE, 2)), name="m", takeover=True).reset()


@pytest.mark.parametrize("cmd, call, want", [
    (Command.READ_REG, lambda b: b.read_reg("R0", 3), 12),
    (Command.READ_MEM, lambda b: b.read_mem("out.w", 0, 4), 8),
    (Command.RUN_STEPS, lambda b: b.run(np.zeros((5, 20), bool)), 6 + 5),
])
@pytest.mark.parametrize("delta", [-1, 1])
def test_read_acks_of_the_wrong_length(cmd, call, want, delta):
    b = Board(Rewriting(vboard(net()), lambda f, r: r), timeout=0.01, retries=1)
    assert "out.w" in b.spaces                          # probed before the ACKs go wrong
    b.transport.rewrite = pad_acks(cmd, delta)
    with pytest.raises(ProtocolError, match=rf"{cmd.name} seq \d+: the ACK must carry {want} B, not {want + delta}$"):
        call(b)
    if cmd != Command.READ_REG:
        assert b.read_reg("VERSION") == P.PROTOCOL_VERSION             # the link goes on


def test_words_and_registers_outside_their_width():
    def wide(f, reply):
        g = reply_frame(reply)
        if g.cmd == Command.ACK and f.cmd == Command.READ_REG and f.payload == P.pack_read_reg(0, 1):
            return P.encode_frame(Command.ACK, g.seq, (1 << 16).to_bytes(4, "little"), g.session)
        if g.cmd == Command.ACK and f.cmd == Command.READ_MEM and P.unpack_mem_request(f.payload)[0] == 0x03:
            return P.encode_frame(Command.ACK, g.seq, b"\x02" * len(g.payload), g.session)  # out.S is 0/1
        return reply
    b = connect(wide)
    with pytest.raises(ProtocolError, match=r"READ_REG: R0 read 65536, which is wider than its 16 bits"):
        b.read_reg("R0")
    with pytest.raises(ProtocolError, match=r"READ_MEM: word 0 of out.S is 2, outside its format 0..1"):
        b.read_mem("out.S")


def test_ack_sizes_agree_with_the_reference_device():
    """ack_payload_size against every ACK of the committed conformance transcript."""
    tr = Transcript.load(FIXTURE)
    p = tr.soc_config().params
    seen = set()
    for req, rep in tr.exchanges:
        reqs = P.FrameDecoder(max_payload=0xFFFF).feed(req)
        acks = [g for g in P.FrameDecoder(max_payload=0xFFFF).feed(rep) if g.cmd == Command.ACK]
        for g in acks:
            match = [f for f in reqs if f.seq == g.seq]
            if len(match) == 1 and match[0].cmd != Command.IDENTIFY:
                f = match[0]
                assert len(g.payload) == P.ack_payload_size(p, f.cmd, f.payload), (Command(f.cmd).name, f.payload)
                seen.add(f.cmd)
    assert seen == {c for c in Command if c.is_request} - {Command.IDENTIFY}
    with pytest.raises(ValueError, match="cmd must be a request, not ACK"):
        P.ack_payload_size(p, Command.ACK, b"")
    with pytest.raises(ValueError, match="a READ_MEM request must be at least 7 B, not 2"):
        P.ack_payload_size(p, Command.READ_MEM, b"\x00\x00")


# ---------------------------------------------------------------------- the hostile device
#: What a hostile reply may be; how often a reply is hostile is drawn per example.
ACTIONS = ("silence", "garbage", "truncate", "oversize", "wrong_seq", "wrong_cmd", "bad_length",
           "random_frame", "nak", "identity", "dup", "flip")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 1 << 17) | st.floats() | st.text(max_size=6),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=8)


@st.composite
def identify_payloads(draw, honest: bytes):
    """IDENTIFY replies near the honest one: head fields changed, JSON mutated or replaced."""
    sh, honest = honest[:P.SESSION_HEAD.size], honest[P.SESSION_HEAD.size:]
    head = list(P.IDENT.unpack_from(honest))
    d = json.loads(honest[P.IDENT.size:])
    how = draw(st.sampled_from(("head", "key", "format", "random", "bytes")))
    if how == "head":
        k = draw(st.integers(1, 9))                          # version .. max_steps
        hi = 0xFFFF if k in (1, 2, 8, 9) else 0xFFFFFFFF
        head[k] = draw(st.sampled_from((0, 1, 7, (head[k] + 1) & hi)) | st.integers(0, hi))
        js = json.dumps(d).encode()
    elif how == "key":
        key = draw(st.sampled_from(sorted(d)))
        if draw(st.booleans()):
            del d[key]
        else:
            d[key if draw(st.booleans()) else draw(st.text(max_size=5))] = draw(json_values)
        js = json.dumps(d).encode()
    elif how == "format":
        name = draw(st.sampled_from(sorted(d["formats"])))
        field = draw(st.sampled_from(("bits", "frac", "signed")))
        d["formats"][name][field] = draw(json_values)
        js = json.dumps(d).encode()
    elif how == "random":
        js = json.dumps(draw(json_values)).encode()
    else:
        js = draw(st.binary(max_size=40))
    head[-1] = len(js) + draw(st.sampled_from((0, 0, 0, -1, 1)))
    head[-1] &= 0xFFFF
    return sh + P.IDENT.pack(*head) + js


@settings(derandomize=True, max_examples=400, deadline=None, database=None)
@given(st.data())
def test_unpack_identify_raises_only_value_errors(data):
    """The protocol-level contract the driver relies on: any bytes give an Identity or a ValueError."""
    honest = P.pack_identify(P.Identity(small(), max_payload=256))
    raw = data.draw(identify_payloads(honest) | st.binary(max_size=80), label="payload")
    try:
        ident = P.unpack_identify(raw)
    except ValueError as e:
        assert str(e).startswith("IDENTIFY ")
        return
    p = ident.params
    assert ident.lanes >= 1 and ident.clock_hz > 0 and ident.baud > 0
    assert ident.max_payload >= P.min_max_payload(p) and P.max_steps_per_frame(p, ident.max_payload) >= 1


class Hostile(Transport):
    """A device whose every reply Hypothesis may replace: the honest reply of a VirtualBoard (which
    executes every request it decodes), silence, garbage, a truncated, oversize, duplicated or
    bit-flipped frame, a wrong seq or cmd, an ACK of the wrong length, a random frame or NAK, a
    hostile IDENTIFY. It logs the frames the host can decode from what it delivers, the oracle
    for "acknowledged correctly"."""

    def __init__(self, vb, data, hostile_pct: int):
        self.vb, self.data, self.hostile_pct = vb, data, hostile_pct
        self.rx = bytearray()
        self.sent: list[P.Frame] = []
        self.delivered: list[tuple[int, P.Frame]] = []     # (requests sent before it, frame)
        self._oracle = P.FrameDecoder(max_payload=0xFFFF)

    def write(self, data):
        reqs = P.FrameDecoder(max_payload=0xFFFF).feed(data)
        self.sent += reqs
        out = self.reply(reqs[0], self.vb.feed(data)) if reqs else b""
        self.rx += out
        self.delivered += [(len(self.sent), g) for g in self._oracle.feed(out)]

    def read(self, n, timeout=0.0):
        if len(self.rx) > 1 and self.data.draw(st.integers(0, 99), label="split") < self.hostile_pct // 4:
            n = min(n, self.data.draw(st.integers(1, len(self.rx) - 1), label="read size"))
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out

    def reply(self, f: P.Frame, honest: bytes) -> bytes:
        draw = self.data.draw
        if draw(st.integers(0, 99), label="dice") >= self.hostile_pct or not honest:
            return honest
        action = draw(st.sampled_from(ACTIONS), label="action")
        frames = P.FrameDecoder(max_payload=0xFFFF).feed(honest)
        if action == "silence":
            return b""
        if action == "garbage":
            return draw(st.binary(min_size=1, max_size=40))
        if action == "truncate":
            return honest[:draw(st.integers(0, len(honest) - 1))]
        if action == "oversize":                     # longer than any legal body, then the honest reply
            return b"\x00" + b"\x55" * (P.FrameDecoder(max_payload=0xFFFF).max_encoded + 1) + honest
        if action == "wrong_seq":
            seq = draw(st.integers(0, 255).filter(lambda s: s != f.seq))
            return b"".join(P.encode_frame(g.cmd, seq, g.payload, g.session) for g in frames)
        if action == "wrong_cmd":
            cmd = draw(st.integers(0, 255))
            return b"".join(P.encode_frame(cmd, g.seq, g.payload, g.session) for g in frames)
        if action == "bad_length":
            g = frames[0]
            pl = g.payload + draw(st.binary(min_size=1, max_size=8)) if draw(st.booleans()) or not g.payload \
                else g.payload[:draw(st.integers(0, len(g.payload) - 1))]
            return P.encode_frame(Command.ACK, g.seq, pl, g.session)
        if action == "random_frame":
            cmd = draw(st.sampled_from((Command.ACK, Command.NAK)) | st.integers(0, 255))
            seq = draw(st.sampled_from((f.seq,)) | st.integers(0, 255))
            session = draw(st.sampled_from((f.session, 0)) | st.integers(0, 0xFFFF))
            return P.encode_frame(cmd, seq, draw(st.binary(max_size=24)), session)
        if action == "nak":
            return P.encode_frame(Command.NAK, f.seq, bytes([draw(st.integers(0, 255)), draw(st.integers(0, 255))]),
                                  draw(st.sampled_from((f.session, 0))))
        if action == "identity":
            if f.cmd != Command.IDENTIFY or frames[0].cmd != Command.ACK:
                return honest
            return P.encode_frame(Command.ACK, f.seq, draw(identify_payloads(frames[0].payload)), f.session)
        if action == "dup":
            return honest + honest
        k = draw(st.integers(0, len(honest) - 1))                     # flip
        return honest[:k] + bytes([honest[k] ^ (1 << draw(st.integers(0, 7)))]) + honest[k + 1:]

    def acked(self, f: P.Frame, params, since: int) -> bool:
        """Whether a correct ACK to request ``f`` reached the host after ``f`` was first sent
        (looking from request number ``since`` on)."""
        first = next(i for i in range(since, len(self.sent)) if self.sent[i] == f) + 1
        want = P.ack_payload_size(params, f.cmd, f.payload)
        return any(n >= first and g.cmd == Command.ACK and g.seq == f.seq and g.session == f.session
                   and len(g.payload) == want
                   for n, g in self.delivered)


def _writes_done(dev: Hostile, since: int, cmd, params):
    """The distinct ``cmd`` requests sent since ``since``, each of which must have been acked."""
    reqs = list(dict.fromkeys(f for f in dev.sent[since:] if f.cmd == cmd))
    for f in reqs:
        assert dev.acked(f, params, since), f"{Command(cmd).name} seq {f.seq} reported done without a correct ACK"
    return reqs


@st.composite
def operation(draw, board):
    p = board.params
    kind = draw(st.sampled_from(("read_reg", "write_reg", "read_mem", "write_mem", "run", "reset", "identify")))
    if kind in ("read_reg", "write_reg"):
        r = draw(st.sampled_from(P.REGISTERS))
        if kind == "read_reg":
            return kind, r.name, draw(st.integers(1, 3))
        return kind, r.name, draw(st.lists(st.integers(0, 70) | st.integers(0, 0xFFFFFFFF), min_size=1, max_size=3))
    if kind in ("read_mem", "write_mem"):
        return kind, draw(st.sampled_from(P.spaces_for(p)).map(lambda s: s.name)), draw(st.integers(0, 3))
    if kind == "run":
        return kind, draw(st.integers(1, 2 * board.steps_per_frame + 1))
    if kind == "reset":
        return kind, draw(st.integers(0, 15))
    return (kind,)


def _apply(board: Board, dev: Hostile, op, data):
    p = board.params
    since = len(dev.sent)
    kind = op[0]
    if kind == "identify":
        assert isinstance(board.identify(), P.Identity)
    elif kind == "read_reg":
        v = board.read_reg(op[1], op[2])
        v = [v] if op[2] == 1 else v
        assert len(v) == op[2] and all(isinstance(x, int) for x in v)
    elif kind == "write_reg":
        addr, values = P.register(op[1]).addr, op[2]
        if len(values) > 0xFFFF - addr + 1:
            return
        board.write_reg(op[1], values)
        reqs = _writes_done(dev, since, Command.WRITE_REG, p)
        got = [P.unpack_reg_request(f.payload, True) for f in reqs]
        assert [v for _, _, vs in got for v in vs] == values and got[0][0] == addr
    elif kind in ("read_mem", "write_mem"):
        spaces = board.spaces                               # probed through the hostile link
        if op[1] not in spaces:
            return
        sp = spaces[op[1]]
        depth, fmt = sp.depth(p), sp.word(p)
        start = min(op[2], depth)
        if kind == "read_mem":
            since = len(dev.sent)
            w = board.read_mem(op[1], start)
            assert w.shape == (depth - start,) and ((w >= fmt.min) & (w <= fmt.max)).all()
        else:
            words = data.draw(st.lists(st.integers(fmt.min, fmt.max), max_size=min(depth - start, 30)), label="words")
            since = len(dev.sent)
            board.write_mem(op[1], words, start)
            reqs = _writes_done(dev, since, Command.WRITE_MEM, p)
            got = [P.unpack_mem_request(f.payload) for f in reqs]
            assert [w for _, _, _, raw in got for w in P.unpack_words(raw, fmt)] == words
            assert all(sid == sp.id for sid, _, _, _ in got)
    elif kind == "run":
        rng = np.random.default_rng(op[1])
        x = rng.random((op[1], p.n_in)) < 0.3
        host = p.error_source.value == "host"
        out = board.run(x, None if host else rng.random((op[1], p.n_out)) < 0.2,
                        rng.integers(-300, 300, (op[1], p.n_out)) if host else None)
        assert out.shape == (op[1], p.n_out) and out.dtype == bool
        reqs = _writes_done(dev, since, Command.RUN_STEPS, p)
        assert sum(P.RUN_REQ.unpack_from(f.payload)[0] for f in reqs) == op[1]
    else:
        board.reset(op[1])
        assert len(_writes_done(dev, since, Command.RESET_STATE, p)) == 1


@settings(derandomize=True, max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_only_driver_errors_escape_a_hostile_device(data):
    p = small(**data.draw(st.sampled_from(SMALL), label="device"))
    dev = Hostile(vboard(p), data, data.draw(st.sampled_from((5, 20, 50, 90)), label="hostile %"))
    try:
        board = Board(dev, timeout=10.0, retries=2)     # the fake never waits: a timeout is immediate
    except DriverError as e:
        event(f"connect: {type(e).__name__}")
        return
    for _ in range(data.draw(st.integers(1, 6), label="operations")):
        op = data.draw(operation(board), label="op")
        try:
            _apply(board, dev, op, data)
            event(f"{op[0]}: done")
        except DriverError as e:
            event(f"{op[0]}: {type(e).__name__}")

"""Fault injection: a corrupting link changes nothing but the retry count, and nothing corrupted
is ever applied by the device."""

import random

import numpy as np
import pytest

from spikeloop import protocol as P
from spikeloop.host.board import Board
from spikeloop.host.transport import FaultyTransport, loopback_pair
from spikeloop.host.virtual_board import ModelTransport
from spikeloop.params import Params
from spikeloop.protocol import Command
from spikeloop.sim.golden import init_weights

from board_cases import vboard


def net():
    return Params(n_in=20, n_out=5, chunk_steps=50, w_init_mean_mv=2.0, w_init_std_mv=3.0)


# ---------------------------------------------------------------------- FaultyTransport
def test_faulty_transport_corrupts_reads_too_and_counts():
    data = bytes(range(1, 256)) * 8

    def run(seed, directions):
        a, b = loopback_pair()
        f = FaultyTransport(a, 0.05, seed, directions=directions)
        b.write(data)
        got = bytearray()
        while chunk := f.read(100, 0):
            got += chunk
        return bytes(got), f

    got, f = run(1, ("read",))
    assert got != data and f.read_log and not f.log
    assert sum(f.counts.values()) == len(f.read_log) == f.total
    assert {k for _, k in f.read_log} == set(FaultyTransport.FAULTS)
    assert run(1, ("read",))[0] == got                    # seeded
    assert run(2, ("read",))[0] != got
    assert run(1, ("write",))[0] == data                  # reads pass through untouched
    # independent streams: enabling reads does not change what writes do
    logs = []
    for directions in (("write",), ("write", "read")):
        a, b = loopback_pair()
        f = FaultyTransport(a, 0.05, 3, directions=directions)
        f.write(data)
        logs.append((b.read(1 << 16, 0), list(f.log)))
    assert logs[0] == logs[1]
    with pytest.raises(ValueError, match="directions must be some of write, read, not"):
        FaultyTransport(a, 0.1, directions=("sideways",))


def test_faulty_read_never_fakes_a_timeout():
    """A chunk whose every byte was dropped is followed by what else is waiting."""
    a, b = loopback_pair()
    f = FaultyTransport(a, 1.0, 0, faults=("drop",), directions=("read",))
    b.write(b"xyz")
    assert f.read(10, 0) == b"" and f.counts["drop"] == 3     # nothing left: a real empty read
    f.rate = 0.0
    b.write(b"abc")
    assert f.read(10, 0) == b"abc"


# ---------------------------------------------------------------------- end to end through faults
def training(board: Board, p: Params, T: int, init: Params | None = None, rate: float = 0.2):
    """T + 60 steps with an R0 write between; ``init``: the parameters to draw the weights from
    (default ``p``), ``rate``: input spike probability per step."""
    ws, _ = init_weights(init or p, [7])
    board.load_weights([ws[0][0]])
    rng = np.random.default_rng(11)
    x, y = rng.random((T, p.n_in)) < rate, rng.random((T, p.n_out)) < 0.05
    out = board.run(x, y)
    board.write_reg("R0", p.r0_q // 2)                      # a register write mid-run
    out2 = board.run(x[:60], y[:60])
    return np.concatenate([out, out2]), board.state(), board.read_reg("STEP_COUNT", 4)


@pytest.mark.parametrize("seed", range(3))
def test_training_through_a_faulty_link_is_bit_identical(seed):
    """20x5 network, 300 + 60 steps over 7 chunk ends, 1 % of bytes corrupted both ways."""
    p = net()
    clean = training(Board(ModelTransport(vboard(p)), payload_limit=64), p, 300)
    vb = vboard(p)
    link = FaultyTransport(ModelTransport(vb), 0.0, seed, directions=("write", "read"))
    # IDENTIFY's 1.1 kB reply almost never crosses a link losing 1 % of its bytes: connect first
    b = Board(link, payload_limit=64, retries=40, timeout=0.05)
    link.rate = 0.01
    noisy = training(b, p, 300)
    assert np.array_equal(clean[0], noisy[0]) and clean[0].any()
    assert set(clean[1]) == set(noisy[1])
    for k in clean[1]:
        assert np.array_equal(clean[1][k], noisy[1][k]), k
    assert clean[2] == noisy[2] and noisy[2][0] == 360 and noisy[2][3] == 7
    assert link.log and link.read_log and b.stats["retries"] > 10
    assert vb.reg("DUPLICATES") > 0 and vb.reg("CRC_ERRORS") + vb.reg("LENGTH_ERRORS") > 0


# ---------------------------------------------------------------------- raw corruption at the device
def _requests(p, vb, seq):
    """Valid requests that would each change the state if they were applied."""
    w = P.space("out.w")
    rng = np.random.default_rng(seq)
    x, y = rng.random((8, p.n_in)) < 0.5, rng.random((8, p.n_out)) < 0.5
    return [
        P.encode_frame(Command.WRITE_MEM, seq, P.pack_write_mem(w.id, 0, rng.integers(-900, 900, 40).tolist(),
                                                                w.word(p))),
        P.encode_frame(Command.WRITE_REG, seq, P.pack_write_reg(0, [3, 12345])),
        P.encode_frame(Command.RUN_STEPS, seq, P.pack_run_steps(p, x, y)),
        P.encode_frame(Command.RESET_STATE, seq, bytes([P.RESET_ALL])),
    ]


def _corrupt(frame: bytes, rng: random.Random) -> bytes:
    body = bytearray(frame[1:-1])
    kind = rng.choice(("flip", "truncate", "dup", "garbage"))
    if kind == "flip":
        for k in rng.sample(range(len(body)), rng.randint(1, min(3, len(body)))):   # distinct bytes
            body[k] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del body[rng.randrange(1, len(body)):]
    elif kind == "dup":
        k = rng.randrange(len(body))
        body.insert(k, body[k])
    else:
        body = bytearray(rng.randrange(1, 256) for _ in range(rng.randrange(1, 200)))
    return b"\x00" + bytes(body) + b"\x00"


def test_ten_thousand_corrupted_frames_change_nothing():
    p = net()
    vb = vboard(p)
    ws, _ = init_weights(p, [5])
    vb.write_space("out.w", ws[0].ravel())
    rng = np.random.default_rng(0)
    vb.feed(P.encode_frame(Command.RUN_STEPS, 0, P.pack_run_steps(p, rng.random((30, 20)) < 0.3,
                                                                  rng.random((30, 5)) < 0.1)))
    before = vb.state()
    regs = {r.name: vb.reg(r.name) for r in P.REGISTERS}
    errors0 = vb.decoder.errors
    r = random.Random(1)
    stream = bytearray()
    replies = bytearray()
    frames = _requests(p, vb, 1)                         # seq 1 is the next one: each would execute
    for n in range(10_000):
        bad = _corrupt(frames[n % len(frames)], r)
        stream += bad
        replies += vb.feed(bad)
    after = vb.state()
    for k in before:
        assert np.array_equal(before[k], after[k]), k
    bodies = sum(1 for piece in bytes(stream).split(b"\x00") if piece)
    assert vb.decoder.errors - errors0 == bodies >= 10_000        # every body rejected and counted
    assert vb.reg("FRAMES_OK") == regs["FRAMES_OK"]
    for name in ("STEP_COUNT", "CHUNK_PHASE", "R0", "CHUNK_COUNT", "DUPLICATES"):
        assert vb.reg(name) == regs[name], name
    got = P.FrameDecoder(max_payload=0xFFFF).feed(bytes(replies))
    assert got and all(f.cmd == Command.NAK for f in got)
    # and the device still answers the next valid request
    (f,) = P.FrameDecoder().feed(vb.feed(P.encode_frame(Command.READ_REG, 1, P.pack_read_reg(1, 1))))
    assert f.cmd == Command.ACK and P.unpack_words(f.payload, P.WordFormat(32, False)) == [30]


@pytest.mark.parametrize("seed", range(4))
def test_random_garbage_never_wedges_the_device(seed):
    p = net()
    vb = vboard(p, max_payload=128)
    rng = random.Random(seed)
    seq = 0
    for _ in range(40):
        n = rng.choice((1, 7, 100, 300, 2000))
        zeros = rng.random() < 0.5                       # with or without delimiters inside
        junk = bytes(rng.randrange(0 if zeros else 1, 256) for _ in range(n))
        vb.feed(junk)
        frame = P.encode_frame(Command.READ_REG, seq, P.pack_read_reg(0x0C, 1))
        replies = P.FrameDecoder(max_payload=0xFFFF).feed(vb.feed(frame))
        ok = [f for f in replies if f.seq == seq and f.cmd == Command.ACK]
        assert len(ok) == 1 and ok[0].payload == b"SPKL"
        seq = (seq + 1) & 0xFF
    assert vb.reg("GARBAGE_BYTES") > 0 and vb.reg("RESYNCS") >= 1

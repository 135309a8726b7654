"""The fault figures of tests/test_faults.py on the gateware itself: the rtl SoC (UART, protocol
engine and Core in Verilator) behind a corrupting link, raw corrupted frames and garbage.

The SoC is the boundary transcript's (the conformance network, 8 x 3), whose Verilator model the
suite builds anyway, so these tests cost simulation time only.
"""

import random
import time
from pathlib import Path

import numpy as np
import pytest

from spikeloop import protocol as P
from spikeloop.host.board import Board
from spikeloop.host.linklog import Transcript
from spikeloop.host.transport import FaultyTransport
from spikeloop.host.virtual_board import ModelTransport, VirtualBoard
from spikeloop.protocol import Command, FrameDecoder

from test_faults import _corrupt, training as faults_training

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).with_name("fixtures") / "boundary_transcript.json"


@pytest.fixture(scope="module")
def soc():
    return Transcript.load(FIXTURE).soc_config()


@pytest.fixture(scope="module")
def rtl(soc):
    from spikeloop.sim.rtl import open_rtl
    with open_rtl(soc, calibrate_s=0.2) as t:
        yield t


def training(board: Board, p, T: int):
    """test_faults.training with weights large enough for the 8 x 3 network to spike."""
    return faults_training(board, p, T, init=p.replace(w_init_mean_mv=2.0, w_init_std_mv=3.0),
                           rate=0.3)


def _fresh(board: Board) -> None:
    """Back to the power-up state between tests sharing one simulation."""
    board.reset(P.RESET_ALL)
    board.write_reg("STEP_COUNT", 0)
    board.write_reg("R0", board.params.r0_q)


def test_training_through_a_faulty_link_is_bit_identical_on_the_gateware(soc, rtl):
    """300 + 60 steps, 1 % of the bytes corrupted both ways: the same outputs, state and step
    count as a clean run on VirtualBoard, and the gateware counted what it rejected."""
    p = soc.core.params
    clean = training(Board(ModelTransport(VirtualBoard(soc)), payload_limit=64), p, 300)
    link = FaultyTransport(rtl, 0.0, 5, directions=("write", "read"))
    b = Board(link, payload_limit=64, retries=60, timeout=0.5, takeover=True)
    _fresh(b)
    before = {n: b.read_reg(n) for n in ("DUPLICATES", "CRC_ERRORS", "LENGTH_ERRORS", "FRAMING_ERRORS")}
    link.rate = 0.01
    t0 = time.monotonic()
    noisy = training(b, p, 300)
    link.rate = 0.0
    wall = time.monotonic() - t0
    assert np.array_equal(clean[0], noisy[0]) and clean[0].any()
    assert set(clean[1]) == set(noisy[1])
    for k in clean[1]:
        assert np.array_equal(clean[1][k], noisy[1][k]), k
    assert clean[2][0] == noisy[2][0] == 360
    after = {n: b.read_reg(n) for n in before}
    rejected = sum(after[n] - before[n] for n in ("CRC_ERRORS", "LENGTH_ERRORS", "FRAMING_ERRORS"))
    assert link.log and link.read_log and b.stats["retries"] > 5 and rejected > 0
    print(f"\nrtl: {len(link.log)} + {len(link.read_log)} faults, {b.stats['retries']} retries, "
          f"{rejected} frames rejected by the gateware, {after['DUPLICATES'] - before['DUPLICATES']} "
          f"duplicates answered from the cache; {wall:.1f} s")


def _requests(p, seq):
    """Valid requests that would each change the state if they were applied."""
    w = P.space("out.w")
    rng = np.random.default_rng(seq)
    x, y = rng.random((4, p.n_in)) < 0.5, rng.random((4, p.n_out)) < 0.5
    return [
        P.encode_frame(Command.WRITE_MEM, seq, P.pack_write_mem(
            w.id, 0, rng.integers(-900, 900, p.n_in * p.n_out).tolist(), w.word(p))),
        P.encode_frame(Command.WRITE_REG, seq, P.pack_write_reg(0, [3, 12345])),
        P.encode_frame(Command.RUN_STEPS, seq, P.pack_run_steps(p, x, y)),
        P.encode_frame(Command.RESET_STATE, seq, bytes([P.RESET_ALL])),
    ]


def _drain(t, quiet: float = 0.05) -> bytes:
    out = bytearray()
    while True:
        got = t.read(1 << 16, quiet)
        if not got:
            return bytes(out)
        out += got


#: Simulated cycles, after the last byte is on the wire, within which a reply must have begun and
#: ended: a NAK is at most 12 bytes (480 cycles at 4 clocks per bit) after the check.
QUIET_CYCLES = 4000


def _settle(t, sent: int, last: int, timeout: float = 60.0) -> bytes:
    """Let the simulation (which runs only while the host reads) take all ``sent`` bytes, the
    ``last`` of them still to be shifted onto the wire (``bytes_to_dut`` counts bytes handed to
    the bridge), then run ``QUIET_CYCLES`` more; return what the SoC sent back meanwhile."""
    data, mark, deadline = bytearray(), None, time.monotonic() + timeout
    wire = 10 * 4 * last                              # 4 clocks per bit (open_rtl's divisor)
    while time.monotonic() < deadline:
        data += t.read(1 << 16, 0.01)
        st = t.stats()
        if st["bytes_to_dut"] >= sent:
            if mark is None:
                mark = st["cycles"]
            elif st["cycles"] - mark >= wire + QUIET_CYCLES:
                return bytes(data)
    raise AssertionError(f"the simulation did not take {sent} bytes within {timeout} s")


def _split(frames):
    """(other replies, number of probe NAKs) of a list of reply frames."""
    mark = [f.cmd == Command.NAK and f.payload == bytes([P.Nak.BAD_SEQUENCE, Command.READ_REG])
            for f in frames]
    return [f for f, m in zip(frames, mark) if not m], sum(mark)


N_CORRUPTED = 1_000          # the model's test sends 10⁴; each frame here waits for the simulation
SYNC_EVERY = 50


def test_corrupted_frames_change_nothing_on_the_gateware(soc, rtl):
    """1000 corrupted versions of requests that would each change the state, each sent with the
    sequence number the device expects next, one at a time (the simulation settled after each,
    and every 50 a probe it must refuse as out of sequence), to the gateware and to VirtualBoard
    with the same history: the gateware's replies are the model's byte for byte, all NAKs; no
    state variable or register moves; every NAK it counted reached the host."""
    p = soc.core.params
    vb = VirtualBoard(soc.replace(baud=rtl.config.baud))
    # the rtl device is shared with earlier tests: free it, then talk without a session on both
    # sides, so that the raw frames below (session 0) are the same bytes for either device
    Board(rtl, timeout=5.0, takeover=True).release()
    boards = Board(rtl, timeout=5.0, session=False), Board(ModelTransport(vb), timeout=5.0, session=False)
    rng = np.random.default_rng(0)
    x, y = rng.random((30, p.n_in)) < 0.3, rng.random((30, p.n_out)) < 0.1
    for bd in boards:
        _fresh(bd)
        bd.run(x, y)
    b = boards[0]
    before, _ = b.state(), boards[1].state()
    names = ("FRAMES_OK", "STEP_COUNT", "CHUNK_PHASE", "R0", "CHUNK_COUNT", "DUPLICATES",
             "NAKS_SENT", "UART_OVERRUNS", "CRC_ERRORS", "FRAMING_ERRORS", "LENGTH_ERRORS")
    regs = {n: b.read_reg(n) for n in names}
    m_regs = {n: boards[1].read_reg(n) for n in names}  # the link counters carry earlier tests' counts
    nxt = b._seq                                  # what the device would execute next
    assert boards[1]._seq == nxt
    frames = _requests(p, nxt)
    probe = P.encode_frame(Command.READ_REG, P.next_seq(nxt), P.pack_read_reg(0x0C, 1))
    r = random.Random(1)
    dec = FrameDecoder(max_payload=0xFFFF)
    got, probes = [], 0
    sent = rtl.stats()["bytes_to_dut"]
    t0 = time.monotonic()
    for n in range(N_CORRUPTED):
        sends = [_corrupt(frames[n % len(frames)], r)]
        if n % SYNC_EVERY == SYNC_EVERY - 1:
            sends.append(probe)
        for frame in sends:
            rtl.write(frame)
            sent += len(frame)
            reply = _settle(rtl, sent, len(frame))
            assert reply == vb.feed(frame), f"frame {n}: {frame.hex()}"
            other, marks = _split(dec.feed(reply))
            got, probes = got + other, probes + marks
    wall = time.monotonic() - t0
    assert probes == N_CORRUPTED // SYNC_EVERY
    assert got and all(f.cmd == Command.NAK for f in got)
    assert {f.payload[0] for f in got} <= {int(n) for n in P.Nak} - {P.Nak.BAD_SEQUENCE}
    now = {n: b.read_reg(n) for n in names}
    m_now = {n: boards[1].read_reg(n) for n in names}
    assert {n: now[n] - regs[n] for n in names} == {n: m_now[n] - m_regs[n] for n in names}
    after = b.state()
    for k in before:
        assert np.array_equal(before[k], after[k]), k
    # only the probes passed the link checks (and the register reads: the FRAMES_OK read counts
    # itself, so the 10 reads after it and the one of `now` add 11), every NAK counted reached the host
    assert now["FRAMES_OK"] == regs["FRAMES_OK"] + probes + len(names)
    assert now["NAKS_SENT"] - regs["NAKS_SENT"] == len(got) + probes
    for name in ("STEP_COUNT", "CHUNK_PHASE", "R0", "CHUNK_COUNT", "DUPLICATES"):
        assert now[name] == regs[name], name
    assert now["STEP_COUNT"] == 30
    rejected = sum(now[n] - regs[n] for n in ("CRC_ERRORS", "FRAMING_ERRORS", "LENGTH_ERRORS"))
    print(f"\nrtl: {N_CORRUPTED} corrupted frames: {len(got)} NAKs (the model's, byte for byte), "
          f"{rejected} rejected by the link checks, nothing applied; {wall:.1f} s")


@pytest.mark.parametrize("seed", range(2))
def test_random_garbage_never_wedges_the_gateware(soc, rtl, seed):
    b = Board(rtl, timeout=5.0, takeover=True)
    _fresh(b)
    garbage0 = b.read_reg("GARBAGE_BYTES")
    rng = random.Random(seed)
    seq = b._seq
    for _ in range(20):
        n = rng.choice((1, 7, 100, 300, 2000))
        zeros = rng.random() < 0.5                       # with or without delimiters inside
        rtl.write(bytes(rng.randrange(0 if zeros else 1, 256) for _ in range(n)))
        _drain(rtl)
        frame = P.encode_frame(Command.READ_REG, seq, P.pack_read_reg(0x0C, 1), b.session)
        rtl.write(frame)
        deadline, data = time.monotonic() + 10.0, bytearray()
        ok = []
        while not ok and time.monotonic() < deadline:
            data += rtl.read(1 << 16, 0.1)
            ok = [f for f in FrameDecoder(max_payload=0xFFFF).feed(bytes(data))
                  if f.seq == seq and f.cmd == Command.ACK]
        assert len(ok) == 1 and ok[0].payload == b"SPKL"
        seq = P.next_seq(seq)
    b._seq = seq
    assert b.read_reg("GARBAGE_BYTES") > garbage0


def test_back_to_back_frames_are_all_answered_on_the_gateware(soc, rtl):
    """Frames sent in one write, each next one arriving while the one before executes: the SoC's
    receive FIFO keeps them, and every one is answered, in order, byte for byte as VirtualBoard
    answers the same bytes, with nothing counted lost (before the FIFO: 241 of 305 replies)."""
    p = soc.core.params
    Board(rtl, timeout=5.0, takeover=True).release()          # the device is shared: free it
    vb = VirtualBoard(soc.replace(baud=rtl.config.baud))
    rng = np.random.default_rng(3)
    w = rng.integers(-1000, 4000, p.n_in * p.n_out)            # strong enough to spike
    for bd in (Board(rtl, timeout=5.0, session=False), Board(ModelTransport(vb), timeout=5.0, session=False)):
        _fresh(bd)
        bd.write_mem("out.w", w)                               # earlier tests left their weights
        bd.reset(P.ResetMask.LINK)                             # the same counters; any seq is new
    overruns = P.pack_read_reg(P.register("UART_OVERRUNS").addr, 1)
    frames, seq = [], 0
    while True:
        x, y = rng.random((6, p.n_in)) < 0.4, rng.random((6, p.n_out)) < 0.2
        pair = [P.encode_frame(Command.RUN_STEPS, seq, P.pack_run_steps(p, x, y)),
                P.encode_frame(Command.READ_REG, P.next_seq(seq), overruns)]
        if sum(map(len, frames + pair)) > soc.rx_fifo_bytes:   # what the FIFO holds whatever the timing
            break
        frames += pair
        seq = P.next_seq(P.next_seq(seq))
    burst = b"".join(frames)
    rtl.write(burst)
    dec, got, data = FrameDecoder(max_payload=0xFFFF), [], bytearray()
    deadline = time.monotonic() + 120.0
    while len(got) < len(frames) and time.monotonic() < deadline:
        chunk = rtl.read(1 << 16, 0.05)
        data += chunk
        got += dec.feed(chunk)
    want = vb.feed(burst)
    print(f"back to back: {len(frames)} frames ({len(burst)} B, FIFO {soc.rx_fifo_bytes} B) sent in one "
          f"write, {len(got)} replies")
    assert len(got) == len(frames) and all(f.cmd == Command.ACK for f in got)
    assert bytes(data) == want
    assert all(P.unpack_words(f.payload, P.WordFormat(32, False)) == [0] for f in got[1::2])

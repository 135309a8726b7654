"""cocotb 2.x tests for ``hdl/uart.py`` on ``UARTTestTop`` (see ``test_rtl_uart.py``).

Python stays off the per-cycle path: the clock is the simulator-side (GPI) clock, and every
coroutine wakes once per bit, byte or counter change, never per clock. Two tests:

* ``loopback``: Tx → Rx inside the top. Random bytes with random idle gaps (half of them
  back to back); the ``tx`` pin's edges are checked exactly against the frames (8N1, LSB
  first, ``divisor`` clocks per bit, no gap after a stop bit when the next byte waits).
* ``bitbang``: Rx driven from Python at the nominal rate ±2 % (picosecond edge times),
  random idle gaps, framing errors (stop bit 0) and 1-clock start-bit glitches.

Both use a consumer on ``rx_data`` with random backpressure: short stalls (never enough to
lose a byte) and rare long stalls (several frames, so bytes are dropped). Every ``overrun`` /
``frame_error`` increment is timed and matched to the frame that caused it; the bytes taken
must then be exactly the frames sent minus those, in order.
"""

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import (ClockCycles, FallingEdge, ReadOnly, RisingEdge, Timer,
                             ValueChange)
from cocotb.utils import get_sim_time

from spikeloop.sim.rtl_runner import test_params

PARAMS = test_params()
D = int(PARAMS.get("divisor", 4))
N_BYTES = int(PARAMS.get("bytes", 2000))
P = 10_000                      # clock period, ps
BIT = D * P                     # nominal bit time, ps
FRAME = 10 * BIT
EPS = float(PARAMS.get("baud_error", 0.02))   # bit-banger rate error: ±EPS


def now() -> int:
    return int(get_sim_time("ps"))


async def start(dut, loopback: int):
    Clock(dut.clk, P, unit="ps", impl="gpi").start()   # rising edges at k·P
    dut.rst.value = 1
    dut.loopback.value = loopback
    dut.rx.value = 1
    dut.tx_data__valid.value = 0
    dut.tx_data__payload.value = 0
    dut.rx_data__ready.value = 0
    await ClockCycles(dut.clk, 4)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 4)
    await FallingEdge(dut.clk)


class Counter:
    """Timestamps of every increment of a counter output (checked to step by one)."""

    def __init__(self, sig):
        self.sig = sig
        self.times: list[int] = []
        self.task = cocotb.start_soon(self.run())

    async def run(self):
        last = self.sig.value.to_unsigned()
        while True:
            await ValueChange(self.sig)
            v = self.sig.value.to_unsigned()
            assert v == last + 1, f"{self.sig._name} went {last} -> {v} at {now()} ps"
            last = v
            self.times.append(now())


class Sink:
    """Consumer on ``rx_data``: records (time, byte) per transfer; stalls at random."""

    def __init__(self, dut, *, p_short=0.3, p_long=0.01, long_frames=(12, 40)):
        self.dut = dut
        self.p_short, self.p_long, self.long_frames = p_short, p_long, long_frames
        self.received: list[tuple[int, int]] = []
        self.stalls: list[tuple[int, int, bool]] = []   # (start, end, long)
        self.task = cocotb.start_soon(self.run())

    async def run(self):
        d = self.dut
        d.rx_data__ready.value = 1
        while True:
            await ReadOnly()
            if not d.rx_data__valid.value:
                await RisingEdge(d.rx_data__valid)
                await ReadOnly()
            byte = d.rx_data__payload.value.to_unsigned()
            await RisingEdge(d.clk)          # valid & ready at this edge: taken
            self.received.append((now(), byte))
            await FallingEdge(d.clk)
            r = random.random()
            if r < self.p_long + self.p_short:
                is_long = r < self.p_long
                cycles = (random.randint(self.long_frames[0] * 10 * D, self.long_frames[1] * 10 * D)
                          if is_long else random.randint(1, 8 * D))
                t0 = now()
                d.rx_data__ready.value = 0
                await Timer(cycles * P, unit="ps")   # lands on a falling edge
                d.rx_data__ready.value = 1
                self.stalls.append((t0, now(), is_long))

    def max_stall_ps(self) -> int:
        return self.long_frames[1] * 10 * D * P


def check(log, frames, sink, overrun, frame_error, *, lag_ps):
    """Match counter increments to frames; the bytes taken must be the rest, in order.

    ``frames``: dicts with ``byte``, ``fe`` (stop bit 0), ``start`` (start-bit edge, ps) and
    ``bit`` (bit time, ps). A frame completes about ``start + 9.5·bit + lag_ps``.
    """
    done = [f["start"] + 9.5 * f["bit"] + lag_ps for f in frames]

    def owner(t, what):
        near = [j for j, c in enumerate(done) if abs(t - c) < 2 * frames[j]["bit"]]
        assert len(near) == 1, f"{what} at {t} ps matches frames {near}"
        return near[0]

    fe_frames = {j for j, f in enumerate(frames) if f["fe"]}
    fe_seen = [owner(t, "frame_error increment") for t in frame_error.times]
    assert sorted(fe_seen) == sorted(fe_frames), (
        f"frame errors at frames {sorted(fe_seen)[:10]}..., injected {sorted(fe_frames)[:10]}...")
    dropped = [owner(t, "overrun increment") for t in overrun.times]
    assert len(set(dropped)) == len(dropped), "two overruns for one frame"
    assert not set(dropped) & fe_frames, "overrun counted for a framing-error frame"
    for t in overrun.times:   # only a long stall may lose bytes
        assert any(s < t <= e + P and is_long for s, e, is_long in sink.stalls), (
            f"overrun at {t} ps outside a long consumer stall")

    expected = [f["byte"] for j, f in enumerate(frames)
                if j not in fe_frames and j not in set(dropped)]
    got = [b for _, b in sink.received]
    if got != expected:
        k = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b),
                 min(len(got), len(expected)))
        raise AssertionError(
            f"received {len(got)} bytes, expected {len(expected)}; first difference at byte {k}: "
            f"got {got[k:k + 4]}, expected {expected[k:k + 4]}")
    n_long = sum(1 for *_, is_long in sink.stalls if is_long)
    log.info("D=%d: %d frames, %d taken, %d overruns (%d long stalls, %d short), "
             "%d framing errors", D, len(frames), len(got), len(dropped), n_long,
             len(sink.stalls) - n_long, len(fe_seen))
    assert dropped, "no overrun was provoked"
    return got


@cocotb.test()
async def loopback(dut):
    """Tx → Rx: exact tx waveform, back-to-back rate, bytes in order, overruns counted."""
    await start(dut, loopback=1)
    overrun, frame_error = Counter(dut.overrun), Counter(dut.frame_error)
    edges: list[tuple[int, int]] = []

    async def watch_tx():
        while True:
            await ValueChange(dut.tx)
            edges.append((now(), int(dut.tx.value)))

    cocotb.start_soon(watch_tx())
    sink = Sink(dut)

    data = [random.getrandbits(8) for _ in range(N_BYTES)]
    frames, gaps = [], []
    for b in data:
        gap = random.random() < 0.5
        gaps.append(gap)
        if gap:
            dut.tx_data__valid.value = 0
            await Timer(random.randint(1, 30 * D) * P, unit="ps")
        dut.tx_data__payload.value = b
        dut.tx_data__valid.value = 1
        await ReadOnly()
        if not dut.tx_data__ready.value:
            await RisingEdge(dut.tx_data__ready)
        await RisingEdge(dut.clk)            # valid & ready: accepted at this edge
        frames.append({"byte": b, "fe": False, "start": now(), "bit": BIT})
        await FallingEdge(dut.clk)
    dut.tx_data__valid.value = 0
    await Timer(2 * FRAME + sink.max_stall_ps(), unit="ps")

    # Full rate: a byte offered during a frame starts right after that frame's stop bit.
    for k in range(1, len(frames)):
        if not gaps[k]:
            assert frames[k]["start"] - frames[k - 1]["start"] == FRAME, (
                f"byte {k} started {frames[k]['start'] - frames[k - 1]['start']} ps after "
                f"byte {k - 1}, expected {FRAME} ps (back to back)")
        else:
            assert frames[k]["start"] - frames[k - 1]["start"] >= FRAME

    # The tx pin: expected level changes from the frames, compared exactly.
    expected, level = [], 1
    for f in frames:
        bits = [0] + [(f["byte"] >> i) & 1 for i in range(8)] + [1]
        for i, v in enumerate(bits):
            if v != level:
                expected.append((f["start"] + i * BIT, v))
                level = v
    assert edges == expected, next(
        (f"tx edge {i}: got {g}, expected {e}" for i, (g, e) in enumerate(zip(edges, expected))
         if g != e), f"{len(edges)} tx edges, expected {len(expected)}")
    n_back = gaps.count(False)
    dut._log.info("D=%d: %d bytes, %d back to back", D, len(frames), n_back)
    assert n_back > N_BYTES // 3

    # tx changes at the acceptance edge, so the Rx lag is the synchroniser plus the sample.
    check(dut._log, frames, sink, overrun, frame_error, lag_ps=3 * P)
    assert dut.frame_error.value.to_unsigned() == 0
    assert dut.overrun.value.to_unsigned() == len(overrun.times)


def bitbang_plan(n: int, t0: int):
    """Level changes on ``rx`` (ps, level) and the frames they carry.

    Bursts at a constant bit time ``BIT·(1 + ε)``, ε ∈ {−EPS, +EPS, uniform} (EPS 2 % unless
    the ``baud_error`` param says otherwise); gaps between frames are zero (back to back) half
    the time; about 3 % of frames have a 0 stop bit (then at least one bit time of idle); 10 %
    follow a long gap with a 1-clock low glitch in its middle.
    """
    changes: list[tuple[int, int]] = []
    frames: list[dict] = []
    level, t = 1, t0
    glitches = 0

    def put(time, v):
        nonlocal level
        if v != level:
            time = int(time)
            if time % P == 0:        # keep data edges off the sampling (rising) edges
                time += 1
            assert not changes or time > changes[-1][0]
            changes.append((time, v))
            level = v

    while len(frames) < n:
        eps = random.choice([-EPS, EPS, random.uniform(-EPS, EPS)])
        bit = BIT * (1 + eps)
        for _ in range(random.randint(1, 60)):
            if len(frames) >= n:
                break
            after_fe = bool(frames) and frames[-1]["fe"]
            r = random.random()
            if r < 0.5 and not after_fe:
                gap = 0.0
            elif r < 0.9:
                gap = random.uniform(1.0 if after_fe else 0.0, 3.0) * bit
            else:                    # long gap with a 1-clock low pulse in its middle
                gap = random.uniform(4.0, 12.0) * bit
                mid = t + gap / 2
                fall = (int(mid) // P) * P + P // 2          # a falling edge of clk
                put(fall, 0)
                put(fall + P, 1)
                glitches += 1
            t += gap
            byte = random.getrandbits(8)
            fe = random.random() < 0.03
            bits = [0] + [(byte >> i) & 1 for i in range(8)] + [0 if fe else 1]
            start = t
            for i, v in enumerate(bits):
                put(t + i * bit, v)
            put(t + 10 * bit, 1)
            frames.append({"byte": byte, "fe": fe, "start": start, "bit": bit})
            t += 10 * bit
    return changes, frames, glitches, t


@cocotb.test()
async def bitbang(dut):
    """Python → Rx at ±2 %, idle gaps, framing errors and start-bit glitches."""
    await start(dut, loopback=0)
    overrun, frame_error = Counter(dut.overrun), Counter(dut.frame_error)
    sink = Sink(dut)

    t0 = now() + 3 * P + 1234
    changes, frames, glitches, t_end = bitbang_plan(N_BYTES, t0)
    for t, v in changes:
        await Timer(t - now(), unit="ps")
        dut.rx.value = v
    await Timer(int(t_end) - now() + 2 * FRAME + sink.max_stall_ps(), unit="ps")

    # The rx edge reaches the FSM 2-3 clocks later (synchroniser); its increment lands 1 later.
    check(dut._log, frames, sink, overrun, frame_error, lag_ps=3 * P)
    n_fe = sum(f["fe"] for f in frames)
    assert dut.frame_error.value.to_unsigned() == n_fe
    assert dut.overrun.value.to_unsigned() == len(overrun.times)
    dut._log.info("D=%d: %d glitches ignored, %d framing errors", D, glitches, n_fe)
    assert glitches > 0 and n_fe > 0

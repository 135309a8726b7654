"""Registers and counters at their limits: one rule (saturate at the width, docs/protocol.md),
the same in VirtualBoard and in the gateware, pinned by a committed transcript both replay.

The fixture tests/fixtures/boundary_transcript.json is regenerated with
``spikeloop transcript --session boundary --out tests/fixtures/boundary_transcript.json``
when the protocol changes on purpose (review the diff: every changed reply is a protocol change).
"""

import time
from pathlib import Path

import numpy as np
import pytest

from spikeloop import protocol as P
from spikeloop.hdl.config import SoCConfig
from spikeloop.host.linklog import (CONFORMANCE_PARAMS, Transcript, boundary_session,
                                    describe_mismatch, replay, replay_on)
from spikeloop.host.virtual_board import VirtualBoard, boundary_values
from spikeloop.params import Params
from spikeloop.protocol import Command, FrameDecoder

FIXTURE = Path(__file__).with_name("fixtures") / "boundary_transcript.json"
TOP32 = 0xFFFFFFFF


def _replies(exchanges):
    """Every reply frame of a session, with the request frame that caused it."""
    out = []
    for q, r in exchanges:
        (fq,) = FrameDecoder(max_payload=0xFFFF).feed(q) or [None]
        for fr in FrameDecoder(max_payload=0xFFFF).feed(r):
            out.append((fq, fr))
    return out


def test_boundary_values_cover_width_and_register_max():
    """Each rw register gets 0, 1, max − 1, max of its width, the values around register_max
    when that is lower, and values with bits above the width (dropped before the check)."""
    p = Params(**CONFORMANCE_PARAMS)
    assert boundary_values(P.register("STEP_COUNT"), p) == [0, 1, TOP32 - 1, TOP32]
    assert boundary_values(P.register("CRC_ERRORS"), p) == [0, 1, 0xFFFE, 0xFFFF, 0x10000, TOP32]
    r0 = (1 << p.r0_bits) - 1
    assert boundary_values(P.register("R0"), p)[4:7] == [r0 - 1, r0, r0 + 1]
    ph = boundary_values(P.register("CHUNK_PHASE"), p)
    assert ph[4:7] == [p.chunk_steps - 2, p.chunk_steps - 1, p.chunk_steps]


def test_step_count_saturates_in_the_run_reply():
    """The independent run's case: from power-up, IDENTIFY, STEP_COUNT = 2^32 − 1, RUN_STEPS
    K = 1 gives 2^32 − 1 (not 0); 2^32 − 16 and K = 20 give 2^32 − 1 (not 4)."""
    p = Params(**CONFORMANCE_PARAMS)
    vb = VirtualBoard(SoCConfig.build(p, 1))
    seq = iter(range(256))

    def req(cmd, payload=b""):
        (f,) = FrameDecoder(max_payload=0xFFFF).feed(vb.feed(P.encode_frame(cmd, next(seq), payload)))
        assert f.cmd == Command.ACK, f
        return f.payload

    req(Command.IDENTIFY)
    for start, k in ((TOP32, 1), (TOP32 - 15, 20), (TOP32 - 1, 1)):
        req(Command.WRITE_REG, P.pack_write_reg(0x01, [start]))
        x = np.zeros((k, p.n_in), bool)
        sc, outs = P.unpack_run_reply(p, req(Command.RUN_STEPS, P.pack_run_steps(p, x, np.zeros((k, p.n_out), bool))))
        assert sc == TOP32 and len(outs) == k
        assert req(Command.READ_REG, P.pack_read_reg(0x01, 1)) == TOP32.to_bytes(4, "little")


def test_committed_boundary_transcript_is_the_reference():
    """The fixture is what VirtualBoard answers today, replays on the board-model backend, and
    holds the saturated values it is there to pin (a regenerated fixture that lost them fails)."""
    fixture = Transcript.load(FIXTURE)
    assert fixture.source == "VirtualBoard"
    assert boundary_session().exchanges == fixture.exchanges
    bad = replay_on(fixture, "board-model")
    assert bad is None, describe_mismatch(fixture, *bad)
    p = fixture.soc_config().params
    runs = [P.unpack_run_reply(p, r.payload)[0] for q, r in _replies(fixture.exchanges)
            if q is not None and q.cmd == Command.RUN_STEPS and r.cmd == Command.ACK]
    assert runs.count(TOP32) >= 5                      # K = 1 at the top, K = 20 and the largest K across it
    naks = [r for q, r in _replies(fixture.exchanges) if r.cmd == Command.NAK]
    assert {P.unpack_nak(r.payload)[0] for r in naks} >= {P.Nak.BAD_VALUE, P.Nak.BAD_CRC,
                                                          P.Nak.BAD_FRAMING, P.Nak.BAD_LENGTH}
    link = [r.payload for q, r in _replies(fixture.exchanges)
            if q is not None and q.cmd == Command.READ_REG and q.payload == P.pack_read_reg(0x10, 9)]
    sat = bytes.fromhex("ffffffff") + bytes.fromhex("ffff0000") * 4 + bytes.fromhex("ffffffff")
    assert any(pl.startswith(sat) for pl in link)     # every receiver counter at its top


@pytest.mark.slow
def test_rtl_answers_the_boundary_transcript():
    """The gateware (SoC in Verilator, the build the link transcript uses) answers the boundary
    session byte for byte from power-up (~15 s with a warm build, ~90 s building)."""
    pytest.importorskip("spikeloop.hdl.soc")
    from spikeloop.sim.rtl import open_rtl

    tr = Transcript.load(FIXTURE)
    t0 = time.monotonic()
    with open_rtl(tr.soc_config(), calibrate_s=0.2) as t:
        bad = replay(t, tr.exchanges)
    assert bad is None, describe_mismatch(tr, *bad)
    print(f"\nrtl: {len(tr.exchanges)} boundary exchanges byte-identical in {time.monotonic() - t0:.1f} s")


def test_uart_lost_strobe_counts_after_overrun_saturates():
    """The engine counts UART_OVERRUNS from the UART's ``lost`` strobe: a byte dropped after the
    UART's own 16-bit ``overrun`` has saturated still pulses it (counting changes of ``overrun``
    stopped after 65535 lifetime overruns, so a cleared UART_OVERRUNS stayed 0)."""
    from amaranth.sim import Simulator
    from spikeloop.hdl.uart import UARTRx

    D = 4
    dut = UARTRx(D)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    seen = {"lost": 0}

    async def bench(ctx):
        ctx.set(dut.data.ready, 0)                  # the consumer never takes: bytes 2..4 drop
        await ctx.tick().repeat(2 * D)
        for n in range(4):
            if n == 2:
                ctx.set(dut.overrun, 0xFFFF)          # the counter at its top
            for bit in [0] + [(0x5A >> k) & 1 for k in range(8)] + [1, 1]:
                ctx.set(dut.rx, bit)
                for _ in range(D):
                    await ctx.tick()
                    seen["lost"] += ctx.get(dut.lost)
        seen["overrun"] = ctx.get(dut.overrun)

    sim.add_testbench(bench)
    sim.run()
    assert seen == {"lost": 3, "overrun": 0xFFFF}

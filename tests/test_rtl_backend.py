"""The ``rtl`` backend: SimLinkBridge + cocotb link server + RtlTransport, against an echo design.

:class:`Echo` (a UARTRx → FIFO → UARTTx loop) stands in for any design with UART pins; the
server process loads it from this file. Every test that starts a simulation also checks that
no process of the server's group survives.
"""


import gc
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from amaranth.hdl import Module
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from spikeloop.hdl.uart import UARTRx, UARTTx
from spikeloop.hdl.config import SoCConfig
from spikeloop.host.transport import Transport
from spikeloop.sim.rtl import RtlLaunchError, RtlSimError, open_link, open_rtl
from spikeloop.sim.rtl.bridge import SimLinkBridge
from spikeloop.sim.rtl.wire import Msg, MsgReader, pack_msg

HERE = Path(__file__).resolve()
DIVISOR = 4
ECHO = f"{HERE}:Echo"


class Echo(wiring.Component):
    """Echoes every byte received on ``rx`` on ``tx`` (through a 16-byte FIFO), 8N1."""

    rx: In(1, init=1)
    tx: Out(1, init=1)

    def __init__(self, divisor: int = DIVISOR):
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = rx = UARTRx(self.divisor)
        m.submodules.tx = tx = UARTTx(self.divisor)
        m.submodules.q = q = fifo.SyncFIFOBuffered(width=8, depth=16)
        m.d.comb += [
            rx.rx.eq(self.rx), self.tx.eq(tx.tx),
            q.w_data.eq(rx.data.payload), q.w_en.eq(rx.data.valid), rx.data.ready.eq(q.w_rdy),
            tx.data.payload.eq(q.r_data), tx.data.valid.eq(q.r_rdy), q.r_en.eq(tx.data.ready),
        ]
        return m


class NoPins(wiring.Component):
    """A design without UART pins: the bridge must refuse it."""

    led: Out(1)

    def elaborate(self, platform):
        return Module()


def group_members(pgid: int) -> list[int]:
    """Live (or zombie) processes whose process group is ``pgid``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid:
            out.append(int(d.name))
    return out


def wait_gone(pgid: int, seconds: float = 15.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def read_exact(t: Transport, n: int, timeout: float = 30.0) -> bytes:
    got = bytearray()
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += t.read(n - len(got), timeout=max(0.01, deadline - time.monotonic()))
    return bytes(got)


def echo_link(**kw):
    kw.setdefault("calibrate_s", 0.2)
    return open_link(ECHO, {"divisor": DIVISOR}, divisor=DIVISOR, toplevel="link_echo", **kw)


@pytest.fixture(scope="module")
def link():
    t = echo_link(calibrate_s=1.0)
    yield t
    t.close()
    assert not wait_gone(t.pid), "processes left after close"


# ------------------------------------------------------------------------------ no simulation
@pytest.mark.parametrize("kw, match", [
    (dict(divisor=3), r"divisor must be an integer of at least 4, not 3"),
    (dict(divisor=4, width=0), r"width must be an integer in 1..1024, not 0"),
    (dict(divisor=4, idle_cycles=0), r"idle_cycles must be an integer of at least 1, not 0"),
])
def test_bridge_bad_parameters(kw, match):
    with pytest.raises(ValueError, match=match):
        SimLinkBridge(Echo, **kw)


def test_bridge_needs_uart_pins():
    with pytest.raises(TypeError, match=r"ports rx: In\(1\) and tx: Out\(1\)"):
        SimLinkBridge(NoPins, 4)


def bridge_run(data: bytes, width: int, ack_delays, cycles: int):
    """Amaranth-simulate the bridge around :class:`Echo`: feed ``data`` in words, take the words
    handed back (each acknowledged after the next of ``ack_delays`` cycles)."""
    from amaranth.sim import Simulator

    dut = SimLinkBridge(lambda: Echo(DIVISOR), DIVISOR, width=width, idle_cycles=60)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    words, info = [], {}
    delays = iter(ack_delays)

    async def tb(ctx):
        seq = ack = pos = toggles = 0
        attn, wait = ctx.get(dut.attn), next(delays)
        for _ in range(cycles):
            if pos < len(data) and ctx.get(dut.in_taken) == seq:
                chunk = data[pos:pos + width]
                pos += len(chunk)
                ctx.set(dut.in_data.as_value(), int.from_bytes(chunk, "little"))
                ctx.set(dut.in_count, len(chunk))
                seq ^= 1
                ctx.set(dut.in_seq, seq)
            if ctx.get(dut.out_seq) != ack:
                if wait > 0:
                    wait -= 1
                else:
                    n = ctx.get(dut.out_count)
                    words.append(ctx.get(dut.out_data.as_value()).to_bytes(width, "little")[:n])
                    ack ^= 1
                    ctx.set(dut.out_ack, ack)
                    wait = next(delays)
            toggles += ctx.get(dut.attn) != attn
            attn = ctx.get(dut.attn)
            await ctx.tick()
        info.update(toggles=toggles, overrun=ctx.get(dut.overrun), line_idle=ctx.get(dut.line_idle),
                    in_busy=ctx.get(dut.in_busy))

    sim.add_testbench(tb)
    sim.run()
    return words, info


def test_bridge_handover_rules():
    """Words come back when full, at a 0x00 that is not a word's first byte, and when the line
    has been quiet; the bridge then reports the link idle."""
    data = bytes([5, 0, 7, 9, 0, 0, 1, 2, 3, 4, 250, 17])
    words, info = bridge_run(data, 3, iter(lambda: 0, 1), 50 * len(data) + 400)
    assert words == [b"\x05\x00", b"\x07\x09\x00", b"\x00\x01\x02", b"\x03\x04\xfa", b"\x11"]
    assert info["overrun"] == 0 and info["line_idle"] == 1 and info["in_busy"] == 0
    assert info["toggles"] >= len(words) + 4          # handovers, words taken, drained, went idle


@pytest.mark.parametrize("width", [1, 4, 7])
def test_bridge_slow_acknowledge(width):
    """Random bytes (many zeros) with the testbench acknowledging late: nothing lost or reordered
    while the accumulator has room; a testbench that never acknowledges is counted as overrun."""
    rng = random.Random(width)
    data = bytes(rng.choice((0, rng.getrandbits(8))) for _ in range(120))
    bound = 10 * DIVISOR * width - 2                  # the accumulator fills in width byte times
    words, info = bridge_run(data, width, iter(lambda: rng.randrange(bound), None), 45 * len(data) + 600)
    assert b"".join(words) == data and info["overrun"] == 0
    assert all(0 < len(w) <= width for w in words)     # (a late release merges frames)
    words, info = bridge_run(data, width, iter([0, 10 ** 9]), 45 * len(data) + 600)
    assert info["overrun"] > 0


def test_message_reader_splits_and_joins():
    stream = pack_msg(Msg.DATA, b"\x00abc") + pack_msg(Msg.RUN) + pack_msg(Msg.DATA, bytes(300))
    r = MsgReader()
    got = []
    for k in range(0, len(stream), 7):            # arbitrary fragmentation
        got += r.feed(stream[k:k + 7])
    assert got == [(Msg.DATA, b"\x00abc"), (Msg.RUN, b""), (Msg.DATA, bytes(300))]
    with pytest.raises(ValueError, match="unknown link message kind 99"):
        MsgReader().feed(bytes([99, 0, 0, 0, 0]))


@pytest.mark.parametrize("cfg, kw, match", [
    ({}, dict(divisor=2), "divisor must be an integer of at least 4 clocks per bit, not 2"),
    # the SoC's own values are checked by SoCConfig (ParamError is a ValueError)
    (dict(lanes=0), {}, "lanes must be a power of two, not 0"),
    (dict(max_payload=0), {}, "max_payload must be an integer from 64 to 65535, not 0"),
])
def test_open_rtl_bad_parameters(cfg, kw, match):
    from spikeloop.params import Params
    with pytest.raises(ValueError, match=match):
        open_rtl(SoCConfig.build(Params(n_in=4, n_out=2), **cfg), **kw)
    with pytest.raises(TypeError, match=r"config must be a SoCConfig, not Params \(build one with"):
        open_rtl(Params(n_in=4, n_out=2))


def test_design_reference_and_arguments():
    """The design factory travels as the reference of the object itself, a SoCConfig argument
    by its to_dict(), and both come back as they were."""
    from spikeloop.hdl.soc import SoC
    from spikeloop.params import Params
    from spikeloop.sim.rtl import wire

    assert wire.ref_of(SoC) == "spikeloop.hdl.soc:SoC" and wire.resolve("spikeloop.hdl.soc:SoC") is SoC
    assert wire.resolve(f"{HERE}:Echo").__qualname__ == "Echo"
    # a module the server cannot import by name is loaded from its file
    assert wire.resolve("no_such_module_xyz:Echo", str(HERE)).__qualname__ == "Echo"
    with pytest.raises(ModuleNotFoundError):
        wire.resolve("no_such_module_xyz:Echo")
    for bad in (lambda: None, SoCConfig.build, "".join, 42):
        with pytest.raises(ValueError, match="must be a module-level class or function"):
            wire.ref_of(bad)
    config = SoCConfig.build(Params(n_in=5, n_out=2), 2, clock_hz=8_000_000, baud=2_000_000, max_payload=512)
    args, kwargs = wire.decode_args(wire.encode_args((config, 3), {"p": Params(n_in=4, n_out=1), "x": [1, "a"]}))
    assert args == [config, 3] and kwargs == {"p": Params(n_in=4, n_out=1), "x": [1, "a"]}
    with pytest.raises(TypeError, match=r"design argument kwargs\['s'\] must be JSON data"):
        wire.encode_args(kwargs={"s": {1, 2}})


# ------------------------------------------------------------------------------ echo design
def test_echo_blocks_exact(link):
    """Random blocks of many sizes around the word width, zeros included, one at a time and
    several in flight at once, come back byte for byte."""
    rng = random.Random(5)
    sizes = [1, 2, 3, 7, 31, 63, 64, 65, 127, 128, 129, 200, 255, 256, 511, 700, 1029, 2000]
    for n in sizes:
        data = bytes(rng.choice((0, rng.getrandbits(8))) for _ in range(n))
        link.write(data)
        assert read_exact(link, n) == data, f"block of {n}"
    blocks = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300))) for _ in range(20)]
    for b in blocks:
        link.write(b)
    want = b"".join(blocks)
    assert read_exact(link, len(want)) == want
    assert link.read(1, timeout=0.2) == b""          # nothing extra
    st = link.stats()
    assert st["overrun"] == 0 and st["frame_error"] == 0
    assert st["bytes_to_dut"] == st["bytes_from_dut"] == link.bytes_written


@pytest.mark.slow
def test_large_transfer_and_rates(link):
    """64 KiB through the echo with reads interleaved; reports the served vs free-running rate."""
    rng = random.Random(9)
    data = rng.randbytes(64 * 1024)
    before = link.stats()
    t0 = time.perf_counter()
    got = bytearray()
    for k in range(0, len(data), 4096):
        link.write(data[k:k + 4096])
        got += link.read(1 << 20, timeout=0.0)
    got += read_exact(link, len(data) - len(got), timeout=120)
    wall = time.perf_counter() - t0
    assert bytes(got) == data
    st = link.stats()
    cycles = st["cycles"] - before["cycles"]
    run_s, cpu_s = st["run_s"] - before["run_s"], st["cpu_s"] - before["cpu_s"]
    assert cycles >= len(data) * 10 * DIVISOR               # every byte crossed the real UART
    assert st["overrun"] == 0
    print(f"\nrtl echo: {len(data)} B in {wall:.2f} s wall, {cycles} cycles, "
          f"{st['wakes'] - before['wakes']} Python wakes; served {cycles / run_s:,.0f} cycles/s "
          f"vs free-running {st['free_cycles_per_s']:,.0f} (ratio {cycles / run_s / st['free_cycles_per_s']:.2f}); "
          f"per CPU second {cycles / cpu_s:,.0f} vs {st['free_cycles_per_cpu_s']:,.0f} "
          f"(ratio {cycles / cpu_s / st['free_cycles_per_cpu_s']:.2f})")


def test_idle_link_does_not_simulate(link):
    """With nothing queued and nobody reading, simulated time stands still."""
    link.write(b"x")
    assert read_exact(link, 1) == b"x"
    time.sleep(0.3)                                   # let the line-idle flag settle
    a = link.stats()
    time.sleep(0.5)
    b = link.stats()
    assert b["cycles"] == a["cycles"]
    assert b["blocked_s"] - a["blocked_s"] > 0.3


# ------------------------------------------------------------------------------ lifecycle
def test_close_stops_everything():
    t = echo_link()
    pgid = t.pid
    members = group_members(pgid)
    assert len(members) >= 2, "expected the server and the Verilator model"
    t.write(b"hello")
    assert read_exact(t, 5) == b"hello"
    t.close()
    assert group_members(pgid) == []
    assert not t.log_path.exists(), "a clean close removes its temporary log folder"
    with pytest.raises(ConnectionError):
        t.write(b"more")


def test_unreferenced_transport_stops_simulation():
    t = echo_link()
    pgid, log_dir = t.pid, t.log_path.parent
    t.write(b"abc")
    assert read_exact(t, 3) == b"abc"
    del t
    gc.collect()
    assert wait_gone(pgid) == []
    assert not log_dir.exists()


def test_simulation_death_is_reported(tmp_path):
    t = echo_link(log_dir=tmp_path)
    pgid = t.pid
    sims = [p for p in group_members(pgid) if p != pgid]
    assert sims
    for p in sims:
        os.kill(p, signal.SIGKILL)
    with pytest.raises(RtlSimError, match=r"closed the link .*\n") as exc:
        for _ in range(100):
            t.write(b"ping")
            t.read(4, timeout=0.1)
    assert "rtl_server" in str(exc.value)           # the log tail is in the message
    t.close()
    assert wait_gone(pgid) == []


def test_host_death_stops_simulation(tmp_path):
    """The host process is killed outright: the simulation notices the dead socket and the
    watchdog, and nothing of its process group survives."""
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        from spikeloop.sim.rtl import open_link
        t = open_link({ECHO!r}, {{"divisor": {DIVISOR}}}, divisor={DIVISOR}, toplevel="link_echo",
                      calibrate_s=0.1, log_dir={str(tmp_path)!r})
        print(t.pid, flush=True)
        time.sleep(120)
    """))
    host = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        line = host.stdout.readline()
        pgid = int(line)
        assert len(group_members(pgid)) >= 2
    finally:
        host.kill()
        host.wait()
    assert wait_gone(pgid) == []


def test_build_failure_is_reported(tmp_path):
    with pytest.raises(RtlLaunchError, match=r"(?s)exited with code .*ports rx: In\(1\) and tx: Out\(1\)"):
        open_link(f"{HERE}:NoPins", divisor=4, toplevel="link_nopins", calibrate_s=0, log_dir=tmp_path)
    assert (tmp_path / "rtl_server.log").exists()         # kept for the user


# ------------------------------------------------------------------------------ the SoC
def test_soc_identify():
    """IDENTIFY through the simulated SoC returns its parameters."""
    from spikeloop.params import Params
    from spikeloop.protocol import Command, FrameDecoder, encode_frame, unpack_identify

    p = Params(n_in=8, n_out=3)
    with open_rtl(SoCConfig.build(p, lanes=1, in_width=8), calibrate_s=0.2) as t:
        t.write(encode_frame(Command.IDENTIFY, 7))
        dec, frames = FrameDecoder(), []
        deadline = time.monotonic() + 60
        while not frames and time.monotonic() < deadline:
            frames += dec.feed(t.read(4096, timeout=1.0))
        assert frames, "no reply to IDENTIFY"
        f = frames[0]
        assert (f.cmd, f.seq) == (Command.ACK, 7)
        ident = unpack_identify(f.payload)
        assert ident.params == p
        assert (ident.lanes, ident.clock_hz, ident.baud, ident.max_payload) == (1, 12_000_000, 3_000_000, 1024)
        st = t.stats()
        assert st["overrun"] == 0 and st["bytes_from_dut"] >= len(f.payload)
        print(f"\nrtl SoC: free-running {st['free_cycles_per_s']:,.0f} cycles/s, served "
              f"{st['cycles_per_s']:,.0f} (ratio {st['ratio']:.2f}; per CPU second {st['cpu_ratio']:.2f})")
        pgid = t.pid
    assert wait_gone(pgid) == []

"""cocotb side of the ``rtl`` backend: a :class:`SimLinkBridge` served on a TCP socket.

Run by :mod:`spikeloop.sim.rtl.server` (never per clock, never per UART bit). Test parameters
(JSON)::

    {"port": P, "width": W, "divisor": d, "calibrate_s": 1.0, "poll_s": 0.005}

``serve`` connects to ``127.0.0.1:port``, resets the design, measures Verilator's free-running
cycle rate on it (the clock is the simulator-side GPI clock and Python sleeps in one long
``Timer`` while the link is idle; a ``ClockCycles`` await would wake Python on every edge) and
sends it in a HELLO message. It then moves bytes socket → ``in_*`` words and ``out_*`` words →
socket (message format in :mod:`spikeloop.sim.rtl.wire`), waking only when the bridge's
``attn`` toggles: a word or frame arrived from the design, the bridge took an input word (the
next may be loaded), the link went quiet, or a poll tick of ``poll_s`` worth of cycles passed
(to notice host messages while simulating). One ``ValueChange`` trigger, no per-wake tasks.

When nothing is queued, nothing is on the wire and the host is not waiting for bytes (RUN), it
blocks on the socket without advancing simulated time, so an idle link costs no CPU. It counts
simulated cycles and wall time while running (and time blocked) for the STATS reply, and ends
cleanly on BYE or when the socket closes.
"""

from __future__ import annotations

import json
import select
import socket
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import Timer, ValueChange
from cocotb.utils import get_sim_time

from spikeloop.sim.rtl.bridge import POLL_BITS
from spikeloop.sim.rtl.wire import Msg, MsgReader, pack_msg
from spikeloop.sim.rtl_runner import test_params

PARAMS = test_params()
#: Clock period in simulator steps (ps): simulated time is only a cycle counter here.
PERIOD = 10_000


def cycles_now() -> int:
    return int(get_sim_time("step")) // PERIOD


class Link:
    """Owns the socket, the bridge's ports and the counters."""

    def __init__(self, dut, params: dict):
        self.dut = dut
        self.width = int(params["width"])
        self.token = str(params.get("token", ""))
        self.divisor = int(params["divisor"])
        self.poll_s = float(params.get("poll_s", 0.005))
        self.calibrate_s = float(params.get("calibrate_s", 1.0))
        self.sock = socket.create_connection(("127.0.0.1", int(params["port"])), timeout=30)
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = MsgReader()
        self.inbuf = bytearray()
        self.host_waiting = False
        self.closed = False
        self.in_seq = 0
        self.out_ack = 0
        self.free_cycles_per_s = self.free_cycles_per_cpu_s = None
        self.bytes_to_dut = self.bytes_from_dut = 0
        self.wakes = 0
        self.blocked_s = 0.0
        self.blocked_since = None
        self.t_start = time.perf_counter()
        self.cpu_start = time.process_time()
        self.c_start = 0

    # ------------------------------------------------------------------ socket
    def send(self, kind: Msg, payload: bytes = b"") -> None:
        try:
            self.sock.sendall(pack_msg(kind, payload))
        except OSError:
            self.closed = True

    def poll_socket(self, block: bool) -> None:
        """Handle every message already received; with ``block``, first wait for at least one."""
        timeout = None if block else 0.0
        while not self.closed:
            r, _, _ = select.select([self.sock], [], [], timeout)
            if not r:
                return
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                self.closed = True
                return
            for kind, payload in self.reader.feed(data):
                self.handle(kind, payload)
            timeout = 0.0

    def handle(self, kind: Msg, payload: bytes) -> None:
        if kind is Msg.DATA:
            self.inbuf += payload
            self.bytes_to_dut += len(payload)
        elif kind is Msg.RUN:
            self.host_waiting = True
        elif kind is Msg.HOLD:
            self.host_waiting = False
        elif kind is Msg.STATS:
            self.send(Msg.STATS, json.dumps(self.stats()).encode())
        elif kind is Msg.BYE:
            self.send(Msg.STATS, json.dumps(self.stats()).encode())
            self.closed = True
        else:
            raise ValueError(f"unexpected message {kind.name} from the host")

    # ------------------------------------------------------------------ bridge
    async def reset(self) -> None:
        d = self.dut
        Clock(d.clk, PERIOD, unit="step", impl="gpi").start()
        d.rst.value = 1
        d.in_seq.value = 0
        d.in_count.value = 0
        d.in_data.value = 0
        d.out_ack.value = 0
        d.poll_cycles.value = 0
        await Timer(4 * PERIOD + PERIOD // 2, unit="step")
        d.rst.value = 0
        await Timer(4 * PERIOD, unit="step")

    async def calibrate(self) -> None:
        """Free-running cycles per second on this design: the link idle, one ``Timer`` per run."""
        if self.calibrate_s <= 0:
            return
        n = 20_000
        for _ in range(3):
            t0, c0 = time.perf_counter(), time.process_time()
            await Timer(n * PERIOD, unit="step")
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if dt >= 0.5 * self.calibrate_s:
                break
            n = max(n, int(n / dt * self.calibrate_s))
        self.free_cycles_per_s = n / dt
        self.free_cycles_per_cpu_s = n / dc if dc > 0 else None

    def service(self) -> None:
        """Forward a handed-over word to the host; load the next input word if the bridge has room."""
        d, W = self.dut, self.width
        if int(d.out_seq.value) != self.out_ack:
            n = d.out_count.value.to_unsigned()
            data = d.out_data.value.to_unsigned().to_bytes(W, "little")[:n]
            self.out_ack ^= 1
            d.out_ack.value = self.out_ack
            self.bytes_from_dut += n
            self.send(Msg.DATA, data)
            # The host has something to chew on; it sends RUN again if it wants more. (Waiting
            # for its HOLD instead would keep simulating for up to a poll period when it is slow.)
            self.host_waiting = False
        if self.inbuf and int(d.in_taken.value) == self.in_seq:
            chunk = bytes(self.inbuf[:W])
            del self.inbuf[:W]
            d.in_data.value = int.from_bytes(chunk, "little")
            d.in_count.value = len(chunk)
            self.in_seq ^= 1
            d.in_seq.value = self.in_seq

    def active(self) -> bool:
        d = self.dut
        return bool(self.host_waiting or self.inbuf or int(d.in_taken.value) != self.in_seq
                    or d.in_busy.value or not d.line_idle.value or int(d.out_seq.value) != self.out_ack)

    def stats(self) -> dict:
        now = time.perf_counter()
        blocked_s = self.blocked_s + (now - self.blocked_since if self.blocked_since is not None else 0.0)
        run_s = now - self.t_start - blocked_s
        cpu_s = time.process_time() - self.cpu_start
        cycles = cycles_now() - self.c_start
        d = self.dut
        return {
            "free_cycles_per_s": self.free_cycles_per_s,
            "free_cycles_per_cpu_s": self.free_cycles_per_cpu_s,
            "cycles": cycles,
            "run_s": run_s,
            "cpu_s": cpu_s,
            "blocked_s": blocked_s,
            "cycles_per_s": cycles / run_s if run_s > 0 else None,
            "cycles_per_cpu_s": cycles / cpu_s if cpu_s > 0 else None,
            "bytes_to_dut": self.bytes_to_dut,
            "bytes_from_dut": self.bytes_from_dut,
            "wakes": self.wakes,
            "overrun": d.overrun.value.to_unsigned(),
            "frame_error": d.frame_error.value.to_unsigned(),
        }

    async def serve(self) -> dict:
        d = self.dut
        await self.reset()
        await self.calibrate()
        poll_cycles = min(max(256, int((self.free_cycles_per_s or 100_000) * self.poll_s)),
                          (1 << POLL_BITS) - 1)
        self.send(Msg.HELLO, json.dumps({
            "token": self.token, "free_cycles_per_s": self.free_cycles_per_s,
            "free_cycles_per_cpu_s": self.free_cycles_per_cpu_s, "width": self.width, "divisor": self.divisor,
            "poll_cycles": poll_cycles, "period_steps": PERIOD}).encode())
        self.t_start, self.cpu_start, self.c_start = time.perf_counter(), time.process_time(), cycles_now()
        d.poll_cycles.value = poll_cycles
        attn = ValueChange(d.attn)
        while True:
            self.service()
            self.poll_socket(block=False)
            if self.closed:
                break
            if not self.active():
                self.blocked_since = time.perf_counter()
                self.poll_socket(block=True)
                self.blocked_s += time.perf_counter() - self.blocked_since
                self.blocked_since = None
                continue
            await attn
            self.wakes += 1
        st = self.stats()
        try:
            self.sock.close()
        except OSError:
            pass
        return st


@cocotb.test()
async def serve(dut):
    """Serve the design on the host's socket until BYE or EOF; no byte may be lost."""
    link = Link(dut, PARAMS)
    st = await link.serve()
    dut._log.info("link stats: %s", json.dumps(st))
    assert st["overrun"] == 0, f"{st['overrun']} bytes from the design were lost (receiver overrun)"

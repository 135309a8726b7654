"""cocotb 2.x tests for ``spikeloop.hdl.core.Core``, run by ``tests/test_rtl_core.py`` and ``spikeloop verify``.

Test parameters (JSON)::

    {"params": Params.to_dict(), "lanes": P, "in_width": W, "steps": N, "seed": s,
     "x_rate": 0.2, "t_rate": 0.05, "stall": 0.3, "backpressure": 0.4,
     "read": "direct" | "port", "stats": path or null}

``step_lockstep`` runs the golden model and the RTL side by side and after every step compares
every state variable of the golden snapshot with the RTL's memories (read straight from the
Verilator model's arrays, or through the access port with ``"read": "port"``) and the output
spikes streamed on ``out``. ``access_port_roundtrip`` writes random words to every word of every
space through the access port and reads them back.
"""

from __future__ import annotations

import json
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from spikeloop.hdl.core import AccessMap, Reg, Space, cycles_per_step
from spikeloop.hdl.layouts import pack, unpack
from spikeloop.params import Params
from spikeloop.sim.golden import GoldenModel
from spikeloop.sim.rtl_runner import test_params

PARAMS = test_params()


class TB:
    """Clock, reset, stream drivers with random stalls, ``out`` sink with random backpressure,
    access-port helpers and direct memory reads for one :class:`Core`."""

    def __init__(self, dut, p: Params, lanes: int, in_width: int, rng: random.Random,
                 stall: float = 0.3, backpressure: float = 0.4):
        self.dut, self.p, self.rng = dut, p, rng
        self.map = AccessMap(p, lanes, in_width)
        self.P, self.C = lanes, self.map.cols
        self.stall, self.backpressure = stall, backpressure

    async def reset(self):
        d = self.dut
        Clock(d.clk, 10, unit="ns").start()
        for s in (d.inp__valid, d.tgt__valid, d.out__ready, d.start, d.acc_we, d.acc_re):
            s.value = 0
        d.rst.value = 1
        await ClockCycles(d.clk, 3)
        await FallingEdge(d.clk)
        d.rst.value = 0

    # -------------------------------------------------------------- access port
    async def acc_write(self, space, index, value):
        d = self.dut
        d.acc_space.value, d.acc_index.value, d.acc_wdata.value = int(space), index, value
        d.acc_we.value = 1
        await FallingEdge(d.clk)
        d.acc_we.value = 0

    async def acc_read(self, space, index) -> int:
        d = self.dut
        d.acc_space.value, d.acc_index.value = int(space), index
        d.acc_re.value = 1
        await FallingEdge(d.clk)
        d.acc_re.value = 0
        for _ in range(4):
            await RisingEdge(d.clk)
            await ReadOnly()
            if d.acc_rvalid.value:
                v = d.acc_rdata.value.to_unsigned()
                await FallingEdge(d.clk)
                return v
        raise AssertionError(f"acc_rvalid never came for space {Space(space).name} index {index}")

    # -------------------------------------------------------------- streams
    async def send(self, valid, payload, ready, words):
        """Drive a stream (at falling edges); a beat moves when valid and ready are both
        1 just before a rising edge, which is what ReadOnly after the falling edge shows."""
        d = self.dut
        for w in words:
            while self.rng.random() < self.stall:
                valid.value = 0
                await FallingEdge(d.clk)
            valid.value, payload.value = 1, w
            while True:
                await ReadOnly()
                done = bool(ready.value)
                await FallingEdge(d.clk)
                if done:
                    break
        valid.value = 0

    async def receive(self, n, limit=100_000) -> list[int]:
        d, got = self.dut, []
        for _ in range(limit):
            if len(got) >= n:
                break
            d.out__ready.value = int(self.rng.random() >= self.backpressure)
            await ReadOnly()
            if d.out__valid.value and d.out__ready.value:
                got.append(d.out__payload.value.to_unsigned())
            await FallingEdge(d.clk)
        else:
            raise AssertionError(f"out: {len(got)} of {n} words after {limit} cycles")
        d.out__ready.value = 0
        return got

    async def step(self, x, tgt) -> list[int]:
        """Stream one step's inputs and targets (random stalls), start it, collect ``out``."""
        d = self.dut
        a = cocotb.start_soon(self.send(d.inp__valid, d.inp__payload, d.inp__ready,
                                        self.map.pack_bits(x)))
        b = cocotb.start_soon(self.send(d.tgt__valid, d.tgt__payload, d.tgt__ready,
                                        self.map.pack_bits(tgt)))
        await a
        await b
        d.start.value = 1
        await FallingEdge(d.clk)
        d.start.value = 0
        out = await self.receive(self.map.t_beats)
        for _ in range(cycles_per_step(self.p, self.P, chunk=True) // 64 + 100):
            if not d.busy.value:
                break
            await ClockCycles(d.clk, 64)
        else:
            raise AssertionError("busy stuck at 1")
        await FallingEdge(d.clk)
        return out

    # -------------------------------------------------------------- state readout
    def _direct(self, name, n):
        arr = getattr(self.dut, name)
        return [arr[a].value.to_unsigned() for a in range(n)]

    async def _port(self, space, n, lane=None):
        if lane is None:
            return [await self.acc_read(space, a) for a in range(n)]
        return [await self.acc_read(space, a * self.P + lane) for a in range(n)]

    async def words(self, space, name, n, direct, lane=None):
        if direct:
            return self._direct(name, n)
        return await self._port(space, n, lane)

    async def state(self, direct=True) -> dict[str, np.ndarray]:
        """The RTL state in the golden model's snapshot layout (batch axis of 1)."""
        p, m, P, C = self.p, self.map, self.P, self.C
        N, J = p.n_out, p.n_in
        L = m.layouts
        st = {}
        neur = [unpack(L[Space.NEURON], w) for w in await self.words(Space.NEURON, "neur", N, direct)]
        for f in ("U", "I", "ref"):
            st[f"out.{f}"] = np.array([[w[f] for w in neur]])
        st["out.sigma"] = np.array([await self.words(Space.SIGMA, "sig", N, direct)])
        spk = await self.words(Space.SPIKE, "spk", m.t_beats, direct)
        st["out.S"] = np.array([[(spk[i // m.in_width] >> (i % m.in_width)) & 1 for i in range(N)]])
        err = [unpack(L[Space.ERR], w) for w in await self.words(Space.ERR, "err", N, direct)]
        st["err.e1"] = np.array([[w["e1"] for w in err]])
        st["err.e2"] = np.array([[w["e2"] for w in err]])
        st["out.e"] = st["err.e2"].copy()
        pre = [[unpack(L[Space.PRE], w) for w in await self.words(Space.PRE, f"pre{l}", C, direct, l)]
               for l in range(P)]
        st["out.z"] = np.array([[pre[j % P][j // P]["z"] for j in range(J)]])
        st["out.zh"] = np.array([[pre[j % P][j // P]["zh"] for j in range(J)]])
        syn = [[unpack(L[Space.SYN], w) for w in await self.words(Space.SYN, f"syn{l}", N * C, direct, l)]
               for l in range(P)]
        q = [[unpack(L[Space.Q], w)["q"] for w in await self.words(Space.Q, f"q{l}", N * C, direct, l)]
             for l in range(P)]
        for f in ("w", "el", "elf", "m"):
            st[f"out.{f}"] = np.array([[[syn[j % P][i * C + j // P][f] for j in range(J)]
                                        for i in range(N)]])
        st["out.q"] = np.array([[[q[j % P][i * C + j // P] for j in range(J)] for i in range(N)]])
        return st


COMPARED = ("out.U", "out.I", "out.ref", "out.S", "out.sigma", "out.z", "out.zh", "out.el",
            "out.elf", "out.m", "out.q", "out.w", "out.e", "err.e1", "err.e2")


def first_mismatch(gold: dict, rtl: dict):
    for name in COMPARED:
        g, r = np.asarray(gold[name]).astype(np.int64), np.asarray(rtl[name]).astype(np.int64)
        if g.shape != r.shape:
            return f"{name}: shape {r.shape} != golden {g.shape}"
        bad = np.argwhere(g != r)
        if len(bad):
            idx = tuple(int(v) for v in bad[0][1:])
            return (f"{name}{list(idx)}: rtl {int(r[tuple(bad[0])])} != golden {int(g[tuple(bad[0])])}"
                    f" ({len(bad)} words differ)")
    return None


def setup():
    p = Params.from_dict(PARAMS["params"])
    lanes, in_width = int(PARAMS.get("lanes", 1)), int(PARAMS.get("in_width", 8))
    seed = int(PARAMS.get("seed", 1))
    return p, lanes, in_width, seed


@cocotb.test()
async def step_lockstep(dut):
    """Golden model and RTL side by side; every state word and output spike after every step."""
    p, lanes, in_width, seed = setup()
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    tb = TB(dut, p, lanes, in_width, rng, PARAMS.get("stall", 0.3), PARAMS.get("backpressure", 0.4))
    await tb.reset()
    gm = GoldenModel(p, seeds=seed)
    w0 = gm.layers[0].w[0]
    sl = tb.map.layouts[Space.SYN]
    for i in range(p.n_out):
        for j in range(p.n_in):
            await tb.acc_write(Space.SYN, tb.map.syn_index(i, j),
                               pack(sl, {"w": int(w0[i, j]), "el": 0, "elf": 0, "m": 0}))
    if "r0" in PARAMS:                    # the runtime register: host lowers the step size
        await tb.acc_write(Space.REG, Reg.R0, int(PARAMS["r0"]))
        gm.r0_q = int(PARAMS["r0"])
    direct = PARAMS.get("read", "direct") == "direct"
    st = await tb.state(direct)
    assert (mm := first_mismatch(gm.snapshot(), st)) is None, f"before step 0: {mm}"

    steps = int(PARAMS.get("steps", 200))
    x_rate, t_rate = PARAMS.get("x_rate", 0.2), PARAMS.get("t_rate", 0.05)
    cycles = {}
    n_spikes = 0
    t_sim = t_read = t_gold = 0.0
    for n in range(steps):
        x = nrng.random(p.n_in) < x_rate
        tgt = nrng.random(p.n_out) < t_rate
        t0 = time.perf_counter()
        out_words = await tb.step(x, tgt)
        t1 = time.perf_counter()
        S = gm.step(x, tgt)[0]
        t2 = time.perf_counter()
        want = tb.map.pack_bits(S)
        assert out_words == want, f"step {n}: out words {out_words} != golden {want}"
        n_spikes += int(S.sum())
        if PARAMS.get("corrupt_step") == n:   # harness self-test: one word behind the model's back
            w = gm.layers[0].w[0, 1, 2]
            await tb.acc_write(Space.SYN, tb.map.syn_index(1, 2),
                               pack(sl, {"w": int(w) + 1, "el": int(gm.layers[0].el[0, 1, 2]),
                                         "elf": int(gm.layers[0].elf[0, 1, 2]),
                                         "m": int(gm.layers[0].m[0, 1, 2])}))
        st = await tb.state(direct)
        t3 = time.perf_counter()
        mm = first_mismatch(gm.snapshot(), st)
        assert mm is None, f"step {n}: {mm}"
        chunk = (n + 1) % p.chunk_steps == 0
        c = dut.cycles.value.to_unsigned()
        cycles.setdefault("chunk" if chunk else "plain", set()).add(c)
        assert dut.step_count.value.to_unsigned() == n + 1
        t_sim += t1 - t0
        t_gold += t2 - t1
        t_read += t3 - t2
    info = {"steps": steps, "output_spikes": n_spikes, "variables": len(gm.snapshot()),
            "cycles": {k: sorted(v) for k, v in cycles.items()},
            "t_sim_s": t_sim, "t_golden_s": t_gold, "t_readout_s": t_read, "read": PARAMS.get("read", "direct")}
    dut._log.info("core lockstep: %s", info)
    if PARAMS.get("stats"):
        with open(PARAMS["stats"], "w") as f:
            json.dump(info, f)


@cocotb.test()
async def access_port_roundtrip(dut):
    """Write a random word to every word of every space, read all back through the port."""
    p, lanes, in_width, seed = setup()
    rng = random.Random(seed + 7)
    tb = TB(dut, p, lanes, in_width, rng)
    await tb.reset()
    m = tb.map
    written = {}
    for space in Space:
        for idx in range(m.depth[space]):
            if space is Space.REG:
                if idx == Reg.CYCLES:
                    continue                      # read only
                v = {Reg.R0: rng.getrandbits(p.formats["w"].bits - 1),
                     Reg.CHUNK_PHASE: rng.randrange(p.chunk_steps),
                     Reg.STEP_COUNT: rng.getrandbits(32)}[Reg(idx)]
            else:
                v = rng.getrandbits(m.width[space])
            written[(space, idx)] = v
            await tb.acc_write(space, idx, v)
    for (space, idx), v in written.items():
        got = await tb.acc_read(space, idx)
        assert got == v, f"{Space(space).name}[{idx}]: read {got:#x}, wrote {v:#x}"
    # the registers drive the core's outputs too
    assert dut.step_count.value.to_unsigned() == written[(Space.REG, Reg.STEP_COUNT)]
    assert dut.r0.value.to_unsigned() == written[(Space.REG, Reg.R0)]
    # direct reads (used by step_lockstep) see the same words as the port
    for space, name in ((Space.NEURON, "neur"), (Space.ERR, "err"), (Space.SIGMA, "sig")):
        direct = tb._direct(name, m.depth[space])
        assert direct == [written[(space, i)] for i in range(m.depth[space])], f"direct {name}"
    for l in range(lanes):
        direct = tb._direct(f"syn{l}", p.n_out * m.cols)
        assert direct == [written[(Space.SYN, a * lanes + l)] for a in range(p.n_out * m.cols)]


@cocotb.test()
async def free_run(dut):
    """Throughput probe for ``spikeloop bench rtl``: ``steps`` steps of random spikes with no
    stalls and no state readout; records cycles per step and simulated cycles per second."""
    from cocotb.utils import get_sim_time
    p, lanes, in_width, seed = setup()
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    tb = TB(dut, p, lanes, in_width, rng, stall=0.0, backpressure=0.0)
    await tb.reset()
    steps = int(PARAMS.get("steps", 20))
    cycles = {}
    t_start, c_start = time.perf_counter(), get_sim_time("ns") / 10
    for n in range(steps):
        await tb.step(nrng.random(p.n_in) < 0.05, nrng.random(p.n_out) < 0.02)
        kind = "chunk" if (n + 1) % p.chunk_steps == 0 else "plain"
        cycles.setdefault(kind, set()).add(dut.cycles.value.to_unsigned())
    wall, sim_cycles = time.perf_counter() - t_start, get_sim_time("ns") / 10 - c_start
    info = {"steps": steps, "cycles": {k: sorted(v) for k, v in cycles.items()},
            "sim_cycles": sim_cycles, "wall_s": wall, "sim_cycles_per_s": sim_cycles / wall}
    if PARAMS.get("stats"):
        with open(PARAMS["stats"], "w") as f:
            json.dump(info, f)

"""cocotb 2.x tests for ``spikeloop.hdl.core.Core``, run by ``tests/test_rtl_core.py`` and ``spikeloop verify``.

Test parameters (JSON)::

    {"params": Params.to_dict(), "lanes": P, "in_width": W, "steps": N, "seed": s,
     "x_rate": 0.2, "t_rate": 0.05, "e_scale": 0.5, "stall": 0.3, "backpressure": 0.4,
     "read": "direct" | "port", "stats": path or null}

``step_lockstep`` runs the golden model and the RTL side by side and after every step compares
every state variable of the golden snapshot (both layers, the error filter) with the RTL's
memories, located word by word by ``AccessMap.locate`` and read straight from the Verilator
model's arrays, or through the access port with ``"read": "port"``, and the output spikes
streamed on ``out``. Input spikes, targets or host errors (``error_source = host``: random
'err' words, ``e_scale`` of 1.0 wide, now and then the format's extremes) are streamed with
random stalls, ``out`` is drained with random backpressure. ``access_port_roundtrip`` writes random words to every word of every
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

from spikeloop.hdl.accessmap import Reg, Space
from spikeloop.hdl.config import CoreConfig
from spikeloop.params import ErrorSource, Feedback, Params
from spikeloop.sim.cocotb_streams import StreamSink, StreamSource, random_pauses
from spikeloop.sim.golden import GoldenModel
from spikeloop.sim.rtl_runner import test_params

PARAMS = test_params()


class TB:
    """Clock, reset, stream drivers with random stalls, ``out`` sink with random backpressure,
    access-port helpers and direct memory reads for one :class:`Core`."""

    def __init__(self, dut, p: Params, lanes: int, in_width: int, rng: random.Random,
                 stall: float = 0.3, backpressure: float = 0.4):
        self.dut, self.p, self.rng = dut, p, rng
        # single-port synapse memory: the q words sit in the synapse memory's second half
        self.single_port = bool(PARAMS.get("single_port", False))
        self.config = CoreConfig(p, lanes, in_width, self.single_port)
        self.map = self.config.map
        self.P, self.C = lanes, self.map.cols
        self.stall, self.backpressure = stall, backpressure
        # each stream port with its own pause generator on the shared rng
        errs = "tgt" if p.error_source is ErrorSource.TARGET else "err"
        self.ports = {name: StreamSource(dut, name, pause=random_pauses(rng, stall))
                      for name in ("inp", errs)}
        self.ports["out"] = StreamSink(dut, "out", pause=random_pauses(rng, backpressure))

    async def reset(self):
        d = self.dut
        Clock(d.clk, 10, unit="ns").start()
        streams = [d.tgt__valid] if self.p.error_source is ErrorSource.TARGET else [d.err__valid]
        for s in (d.inp__valid, *streams, d.out__ready, d.start, d.acc_we, d.acc_re):
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
    async def step(self, x, tgt, err=None) -> list[int]:
        """Stream one step's inputs and targets or host errors (random stalls on each stream),
        start it, collect ``out`` (random backpressure)."""
        d, ports = self.dut, self.ports
        jobs = [cocotb.start_soon(ports["inp"].send(self.map.pack_bits(x)))]
        if self.p.error_source is ErrorSource.TARGET:
            jobs.append(cocotb.start_soon(ports["tgt"].send(self.map.pack_bits(tgt))))
        else:
            bits = self.p.formats["err"].bits
            words = [int(e) & ((1 << bits) - 1) for e in (np.zeros(self.p.n_out) if err is None else err)]
            jobs.append(cocotb.start_soon(ports["err"].send(words)))
        for j in jobs:
            await j
        d.start.value = 1
        await FallingEdge(d.clk)
        d.start.value = 0
        out = await ports["out"].receive(self.map.t_beats)
        for _ in range(self.config.cycles_per_step(chunk=True) // 64 + 100):
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

    async def space_words(self, space, direct=True) -> list[int]:
        """Every word of ``space`` in access-index order, read straight from the Verilator
        model's memory arrays or through the access port."""
        n = self.map.depth[space]
        if not direct:
            return [await self.acc_read(space, a) for a in range(n)]
        name, laned = MEMORY[Space(space)]
        if not laned:
            return self._direct(name, n)
        if self.single_port and space == Space.Q:
            per = n // self.P
            mask = (1 << self.map.width[Space.Q]) - 1
            per_lane = [[w & mask for w in self._direct(f"syn{l}", 2 * per)[per:]]
                        for l in range(self.P)]
            return [per_lane[a % self.P][a // self.P] for a in range(n)]
        per_lane = [self._direct(f"{name}{l}", n // self.P) for l in range(self.P)]
        return [per_lane[a % self.P][a // self.P] for a in range(n)]

    async def state(self, direct=True) -> dict[str, np.ndarray]:
        """The RTL state in the golden model's snapshot layout (batch axis of 1), located by
        ``AccessMap.locate`` (so the map itself is checked by every comparison)."""
        words = {sp: await self.space_words(sp, direct) for sp in self.plan_spaces}
        st = {}
        for name, (shape, locs) in self.plan.items():
            vals = []
            for sp, idx, off, bits, sgn in locs:
                v = (words[sp][idx] >> off) & ((1 << bits) - 1)
                if sgn and v >> (bits - 1):
                    v -= 1 << bits
                vals.append(v)
            st[name] = np.array(vals, dtype=np.int64).reshape(shape)
        return st

    def make_plan(self, snapshot: dict):
        """Where every word of every compared snapshot variable lives (computed once)."""
        self.plan = {}
        for name in self.map.names():
            if name not in snapshot:
                continue
            locs = [self.map.locate(name, k) for k in range(self.map.depth_of(name))]
            self.plan[name] = (snapshot[name].shape,
                               [(l.space, l.index, l.offset, l.bits, l.signed) for l in locs])
        self.plan_spaces = sorted({loc[0] for _, locs in self.plan.values() for loc in locs})

    async def write_var(self, name, k, value):
        """Read-modify-write one snapshot word through the access port."""
        loc = self.map.locate(name, k)
        word = await self.acc_read(loc.space, loc.index)
        await self.acc_write(loc.space, loc.index, loc.insert(word, int(value)))


#: Verilator memory array of each space: (name, one memory per lane).
MEMORY = {
    Space.NEURON: ("neur", False), Space.SIGMA: ("sig", False), Space.SPIKE: ("spk", False),
    Space.ERR: ("err", False), Space.PRE: ("pre", True), Space.SYN: ("syn", True),
    Space.Q: ("q", True), Space.XBUF: ("xbuf", False), Space.TBUF: ("tbuf", False),
    Space.EBUF: ("ebuf", False), Space.FB: ("fb", True), Space.HERR: ("herr", True),
    Space.RATE: ("ratem", False), Space.SDLY: ("sdly", False), Space.ZDLY: ("zdly", True),
}


def first_mismatch(gold: dict, rtl: dict):
    """The first differing word as ``name[index]: rtl v != golden v (n words differ)``."""
    for name in rtl:
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


def random_errors(nrng, p: Params, scale: float):
    """Host error words for one step: mostly within ±scale, now and then the format's extremes."""
    fe = p.formats["err"]
    e = np.rint(nrng.normal(0.0, scale * fe.one, p.n_out)).astype(np.int64)
    wild = nrng.random(p.n_out) < 0.02
    e[wild] = nrng.choice([fe.min, fe.max], int(wild.sum()))
    return np.clip(e, fe.min, fe.max)


@cocotb.test()
async def step_lockstep(dut):
    """Golden model and RTL side by side; every state word and output spike after every step."""
    p, lanes, in_width, seed = setup()
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    tb = TB(dut, p, lanes, in_width, rng, PARAMS.get("stall", 0.3), PARAMS.get("backpressure", 0.4))
    await tb.reset()
    gm = GoldenModel(p, seeds=seed)
    snap = gm.snapshot()
    missing = set(snap) - set(tb.map.names())
    assert not missing, f"AccessMap.names() lacks {sorted(missing)}"
    tb.make_plan(snap)
    # Weights (and B for random feedback; uniform B is the memory's reset value) from the model.
    for L in gm.layers:
        w = L.w[0].ravel()
        for k in range(w.size):
            loc = tb.map.locate(f"{L.name}.w", k)
            await tb.acc_write(loc.space, loc.index, loc.insert(0, int(w[k])))
    if gm.fb is not None and p.feedback is Feedback.RANDOM:
        fb = gm.fb[0].ravel()
        for k in range(fb.size):
            loc = tb.map.locate("fb", k)
            await tb.acc_write(loc.space, loc.index, loc.insert(0, int(fb[k])))
    if "r0" in PARAMS:                    # the runtime register: host lowers the step size
        await tb.acc_write(Space.REG, Reg.R0, int(PARAMS["r0"]))
        gm.r0_q = int(PARAMS["r0"])
    direct = PARAMS.get("read", "direct") == "direct"
    st = await tb.state(direct)
    assert (mm := first_mismatch(gm.snapshot(), st)) is None, f"before step 0: {mm}"

    steps = int(PARAMS.get("steps", 200))
    x_rate, t_rate = PARAMS.get("x_rate", 0.2), PARAMS.get("t_rate", 0.05)
    e_scale = PARAMS.get("e_scale", 0.5)
    host = p.error_source is ErrorSource.HOST
    cycles = {}
    n_spikes = 0
    hid_spikes = 0
    nonzero = set()
    t_sim = t_read = t_gold = 0.0
    for n in range(steps):
        x = nrng.random(p.n_in) < x_rate
        tgt = nrng.random(p.n_out) < t_rate
        err = random_errors(nrng, p, e_scale) if host else None
        t0 = time.perf_counter()
        out_words = await tb.step(x, tgt, err)
        t1 = time.perf_counter()
        S = gm.step(x, None if host else tgt, err)[0]
        t2 = time.perf_counter()
        want = tb.map.pack_bits(S)
        assert out_words == want, f"step {n}: out words {out_words} != golden {want}"
        n_spikes += int(S.sum())
        if p.n_hidden:
            hid_spikes += int(gm.layers[0].S.sum())
        if PARAMS.get("corrupt_step") == n:   # harness self-test: one word behind the model's back
            await tb.write_var("out.w", 1 * gm.layers[-1].n_pre + 2,
                               int(gm.layers[-1].w[0, 1, 2]) + 1)
        st = await tb.state(direct)
        t3 = time.perf_counter()
        mm = first_mismatch(gm.snapshot(), st)
        assert mm is None, f"step {n}: {mm}"
        nonzero.update(name for name, v in st.items() if np.any(v))
        chunk = (n + 1) % p.chunk_steps == 0
        c = dut.cycles.value.to_unsigned()
        cycles.setdefault("chunk" if chunk else "plain", set()).add(c)
        assert dut.step_count.value.to_unsigned() == n + 1
        t_sim += t1 - t0
        t_gold += t2 - t1
        t_read += t3 - t2
    info = {"steps": steps, "output_spikes": n_spikes, "hidden_spikes": hid_spikes,
            "variables": len(tb.plan), "names": sorted(tb.plan), "nonzero": sorted(nonzero),
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
    for space in m.depth:
        for idx in range(m.depth[space]):
            if space is Space.REG:
                if idx == Reg.CYCLES or (idx == Reg.DELAY_SLOT and not p.error_delay):
                    continue                      # read only / absent
                v = {Reg.R0: rng.getrandbits(p.formats["w"].bits - 1),
                     Reg.CHUNK_PHASE: rng.randrange(p.chunk_steps),
                     Reg.STEP_COUNT: rng.getrandbits(32),
                     Reg.DELAY_SLOT: rng.randrange(p.error_delay + 1)}[Reg(idx)]
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
    # direct reads (used by step_lockstep) see the same words as the port, in every space
    for space in m.depth:
        if space is Space.REG:
            continue
        direct = await tb.space_words(space, direct=True)
        want = [written[(space, i)] for i in range(m.depth[space])]
        assert direct == want, f"direct read of {Space(space).name} differs from the port"


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
        err = random_errors(nrng, p, 0.5) if p.error_source is ErrorSource.HOST else None
        await tb.step(nrng.random(p.n_in) < 0.05, nrng.random(p.n_out) < 0.02, err)
        kind = "chunk" if (n + 1) % p.chunk_steps == 0 else "plain"
        cycles.setdefault(kind, set()).add(dut.cycles.value.to_unsigned())
    wall, sim_cycles = time.perf_counter() - t_start, get_sim_time("ns") / 10 - c_start
    info = {"steps": steps, "cycles": {k: sorted(v) for k, v in cycles.items()},
            "sim_cycles": sim_cycles, "wall_s": wall, "sim_cycles_per_s": sim_cycles / wall}
    if PARAMS.get("stats"):
        with open(PARAMS["stats"], "w") as f:
            json.dump(info, f)

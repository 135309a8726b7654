"""cocotb 2.x vector test for the pipelined units ``SynapseUnit`` and ``ChunkUnit``.

Run through :func:`spikeloop.sim.rtl_runner.build_and_test` by ``tests/test_rtl_synapse.py``,
which computes the vectors and the golden model's results and passes (via ``test_params()``):

``vectors``  path of an ``.npz`` with ``in_<port>`` and ``out_<port>`` arrays (one entry per vector)
``signed``   ``{port: bool}`` for the output ports (read back as signed or unsigned)
``widths``   ``{port: bits}`` for the input ports (values are masked to the port width)
``static``   ``{port: value}`` held on inputs for the whole run (``r0``)
``latency``  the unit's documented latency: every result must appear exactly this many cycles
             after its vector
``bubble``   probability of a bubble (``valid`` = 0, random junk on the data inputs) per cycle
``interval`` fewest cycles from one vector to the next (``ChunkUnit(interval=k)``; default 1):
             ``interval − 1`` forced bubbles after each vector, random bubbles on top
``seed``     seed of the bubble pattern and the junk

The test fails on the first output field that differs, naming the vector, the field, both values
and the vector's inputs.
"""

import random
from collections import deque

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from spikeloop.sim.rtl_runner import test_params

PARAMS = test_params()


@cocotb.test()
async def golden_vectors(dut):
    """Every vector, with random bubbles, gives the golden model's outputs at the fixed latency."""
    data = np.load(PARAMS["vectors"])
    ins = {k[3:]: data[k].astype(np.int64).tolist() for k in data.files if k.startswith("in_")}
    outs = {k[4:]: data[k].astype(np.int64).tolist() for k in data.files if k.startswith("out_")}
    signed = PARAMS["signed"]
    widths = PARAMS["widths"]
    latency = int(PARAMS["latency"])
    bubble = float(PARAMS.get("bubble", 0.3))
    interval = int(PARAMS.get("interval", 1))
    rng = random.Random(int(PARAMS.get("seed", 1)))
    n = len(next(iter(ins.values())))

    in_h = {name: getattr(dut, name) for name in ins}
    mask = {name: (1 << int(widths[name])) - 1 for name in ins}
    out_h = {name: getattr(dut, name) for name in outs}
    valid, out_valid = dut.valid, dut.out_valid

    Clock(dut.clk, 10, unit="ns").start()
    valid.value = 0
    for name, v in PARAMS.get("static", {}).items():
        getattr(dut, name).value = int(v) & ((1 << int(widths[name])) - 1)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0

    def inputs_of(k):
        return {name: col[k] for name, col in ins.items()}

    issued = deque()          # cycle on which each vector in flight was presented
    sent = got = cycle = bubbles = 0
    last = -interval          # cycle of the latest vector (results leave ``issued``, this stays)
    limit = latency + 10 + int(n * (interval - 1 + 1 / max(1e-3, 1.0 - bubble))) * 3
    while got < n:
        if sent < n and cycle - last >= interval and rng.random() >= bubble:
            for name, h in in_h.items():
                h.value = ins[name][sent] & mask[name]
            valid.value = 1
            issued.append(cycle)
            last = cycle
            sent += 1
        else:
            for name, h in in_h.items():       # junk on a bubble must not leak anywhere
                h.value = rng.getrandbits(int(widths[name]))
            valid.value = 0
            bubbles += 1
        await RisingEdge(dut.clk)
        await ReadOnly()
        cycle += 1
        if out_valid.value == 1:
            assert issued, f"cycle {cycle}: out_valid with no vector in flight"
            t0 = issued.popleft()
            assert cycle - t0 == latency, (
                f"vector {got}: result after {cycle - t0} cycles, expected latency {latency}")
            for name, h in out_h.items():
                v = h.value
                rtl = v.to_signed() if signed[name] else v.to_unsigned()
                exp = outs[name][got]
                assert rtl == exp, (
                    f"vector {got}: field {name}: rtl={rtl}, golden={exp}; "
                    f"inputs {inputs_of(got)}; static {PARAMS.get('static', {})}")
            got += 1
        assert cycle < limit, f"only {got} of {n} results after {cycle} cycles"
        await FallingEdge(dut.clk)
    dut._log.info("%d vectors, %d bubbles, %d cycles, latency %d, interval %d: all match",
                  n, bubbles, cycle, latency, interval)

"""cocotb 2.x test for the pipelined units (NeuronUnit, PreTraceUnit, ErrorFilterUnit).

Run through ``tests/test_rtl_units.py``, which computes the expected outputs with the golden
model and hands them over as an ``.npz`` file named in the test parameters::

    {"vectors": path, "inputs": [...], "outputs": [...], "signed_outputs": [...],
     "latency": n, "bubble": 0.3, "seed": s}

The file holds one array per input port (``in_<name>``) and per output port (``out_<name>``),
all of the same length. :class:`TB` streams the vectors into the unit with random bubbles
(``valid`` = 0, inputs filled with junk), and checks every output field of every vector, the
latency of every vector, and that no result appears that was not asked for.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from spikeloop.sim.rtl_runner import test_params

PARAMS = test_params()


class TB:
    """Drive a valid-in / valid-out pipeline from arrays and check it against arrays.

    Parameters
    ----------
    dut : the cocotb handle of the unit (ports ``valid``/``out_valid`` plus data ports).
    inputs, outputs : names of the data ports.
    signed_outputs : the outputs to read as two's complement.
    latency : cycles from a vector at the input to its result (documented by the unit).
    """

    def __init__(self, dut, inputs, outputs, signed_outputs, latency: int):
        self.dut = dut
        self.inp = {n: getattr(dut, n) for n in inputs}
        self.out = {n: getattr(dut, n) for n in outputs}
        self.signed = set(signed_outputs)
        self.latency = latency
        self.widths = {n: len(h) for n, h in self.inp.items()}
        self.one_bit = {n for n, h in self.out.items() if len(h) == 1}

    async def reset(self):
        dut = self.dut
        Clock(dut.clk, 10, unit="ns").start()
        dut.valid.value = 0
        for h in self.inp.values():
            h.value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        await FallingEdge(dut.clk)
        dut.rst.value = 0

    def _read(self, name) -> int:
        v = self.out[name].value
        if name in self.one_bit:                  # a 1-bit port reads as a Logic, not an array
            return int(v)
        return v.to_signed() if name in self.signed else v.to_unsigned()

    def _describe(self, vin, k) -> str:
        return ", ".join(f"{n}={int(a[k])}" for n, a in vin.items())

    async def run(self, vin: dict, vexp: dict, bubble: float, rng: random.Random):
        """Stream all vectors (bubbles with probability ``bubble``) and check every result."""
        dut = self.dut
        n = len(next(iter(vin.values())))
        # Plain Python ints: numpy scalars are slow to hand to the simulator.
        cols_in = {k: [int(x) for x in a] for k, a in vin.items()}
        cols_exp = {k: [int(x) for x in a] for k, a in vexp.items()}
        sent_at: list[int] = []
        received = 0
        cycle = 0
        idle_after = 0
        limit = 4 * n + 100 + self.latency
        while received < n or idle_after < self.latency + 4:
            await FallingEdge(dut.clk)
            k = len(sent_at)
            if k < n and rng.random() >= bubble:
                for name, h in self.inp.items():
                    h.value = cols_in[name][k]
                dut.valid.value = 1
                sent_at.append(cycle)
            else:
                dut.valid.value = 0
                for name, h in self.inp.items():          # junk must not leak into results
                    h.value = rng.getrandbits(self.widths[name])
            await RisingEdge(dut.clk)
            await ReadOnly()
            if int(dut.out_valid.value):
                j = received
                assert j < n, f"cycle {cycle}: out_valid with no vector outstanding (extra result)"
                lat = cycle - sent_at[j] + 1
                assert lat == self.latency, (
                    f"vector {j}: result after {lat} cycles, expected latency {self.latency}")
                for name in self.out:
                    got, exp = self._read(name), cols_exp[name][j]
                    if got != exp:
                        raise AssertionError(
                            f"vector {j}: field {name}: got {got}, expected {exp}; "
                            f"inputs: {self._describe(vin, j)}; "
                            f"expected outputs: {self._describe(vexp, j)}")
                received += 1
            if received == n:
                idle_after += 1
            cycle += 1
            assert cycle < limit, f"timeout: {received} of {n} results after {cycle} cycles"
        dut._log.info("%d vectors checked in %d cycles (%d bubbles)", n, cycle, cycle - n)


@cocotb.test()
async def unit_matches_golden(dut):
    """Every output field of every vector equals the golden model's, under random bubbles."""
    P = PARAMS
    data = np.load(P["vectors"])
    vin = {n: data[f"in_{n}"] for n in P["inputs"]}
    vexp = {n: data[f"out_{n}"] for n in P["outputs"]}
    tb = TB(dut, P["inputs"], P["outputs"], P["signed_outputs"], int(P["latency"]))
    await tb.reset()
    await tb.run(vin, vexp, float(P.get("bubble", 0.3)), random.Random(int(P.get("seed", 0))))

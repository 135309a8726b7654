"""cocotb 2.x tests for ``rtl_examples.Counter`` (run through build_and_test)."""

import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from spikeloop.sim.rtl_runner import test_params

PARAMS = test_params()


async def start_and_reset(dut):
    Clock(dut.clk, 10, unit="ns").start()
    dut.en.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


@cocotb.test(skip="free_run_cycles" in PARAMS)
async def counts_enabled_cycles(dut):
    """Random ``en`` for N cycles; ``count`` must match a Python model."""
    # A deliberately wrong expectation (for the harness self-test).
    offset = int(os.environ.get("COUNTER_EXPECT_OFFSET", "0"))
    cycles = int(PARAMS.get("cycles", 200))
    await start_and_reset(dut)
    assert dut.count.value.to_unsigned() == 0

    expected = 0
    for cycle in range(cycles):
        en = random.getrandbits(1)
        dut.en.value = en                  # driven mid-cycle (after a falling edge)
        await RisingEdge(dut.clk)
        await ReadOnly()                   # settled values after the edge
        expected = (expected + en) & 0xFFFF
        got = dut.count.value.to_unsigned()
        assert got == (expected + offset) & 0xFFFF, (
            f"cycle {cycle}: count={got}, expected {(expected + offset) & 0xFFFF}")
        await FallingEdge(dut.clk)


@cocotb.test(skip="free_run_cycles" not in PARAMS)
async def free_run(dut):
    """Throughput probe: hold ``en`` high and let the clock run."""
    cycles = int(PARAMS["free_run_cycles"])
    await start_and_reset(dut)
    dut.en.value = 1
    t0 = time.perf_counter()
    await ClockCycles(dut.clk, cycles)
    dt = time.perf_counter() - t0
    await ReadOnly()
    assert dut.count.value.to_unsigned() == cycles & 0xFFFF
    dut._log.info("free_run: %d cycles in %.3f s = %.0f cycles/s", cycles, dt, cycles / dt)
    with open(PARAMS["rate_file"], "w") as f:
        f.write(f"{cycles / dt}\n")

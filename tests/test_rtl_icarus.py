"""The cocotb benches under Icarus Verilog (``sim="icarus"``), the second simulator of the issue.

A smaller dose than the Verilator suites, since Icarus runs the Core ~10x slower: the counter,
the three pipelined units on fewer vectors, and the Core in lockstep with the golden model for a
few hundred steps, one layer and two. Each kind also has a run that must fail (a wrong
expectation or a word changed behind the model's back), so a bench that silently compares
nothing, or an Icarus build that reads back X or zeros, cannot pass. Skipped when ``iverilog``
is not on PATH (``scripts/setup.sh`` installs it where it can).
"""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from rtl_examples import Counter
from spikeloop.hdl.config import CoreConfig
from spikeloop.hdl.core import Core
from spikeloop.params import Params
from spikeloop.sim.golden import GoldenModel
from spikeloop.sim.rtl_runner import CocotbTestFailure, build_and_test, default_build_dir

pytestmark = pytest.mark.skipif(
    shutil.which("iverilog") is None or shutil.which("vvp") is None,
    reason="Icarus Verilog ('iverilog', 'vvp') is not on PATH: apt-get install iverilog")

HERE = Path(__file__).parent
SIM = "icarus"
BUILD_DIR = default_build_dir()       # Icarus builds are cached next to the Verilator ones
N_VECTORS = 1500                       # per unit (the Verilator suite uses 5000)
CORE_STEPS = 250

#: One layer and two layers, each with padded last columns (odd sizes over 2 lanes, inputs not a
#: multiple of the 8-bit stream word) and a chunk-end pass every 25 steps. Icarus spends some
#: 40 ms per step here even on few cycles, ~0.1 s on 37x11 (the 37x13x11 set of the Verilator
#: suite would take a minute at 250 steps; `spikeloop verify --sim icarus` runs it).
CORE_CONFIGS = {
    "37x11-P2": dict(n_in=37, n_out=11, lanes=2),
    "17x5x3-P2": dict(n_in=17, n_hidden=5, n_out=3, lanes=2, w_init_mean_mv=3.0),
}


# ------------------------------------------------------------------------------ counter
def test_counter():
    result = build_and_test(Counter, "counter", HERE / "cocotb_counter.py", build_dir=BUILD_DIR,
                            sim=SIM, params={"cycles": 300}, seed=5)
    assert result.sim == SIM and result.passed
    assert [t.name for t in result.tests if t.status == "passed"] == ["counts_enabled_cycles"]


def test_counter_failure_is_reported():
    with pytest.raises(CocotbTestFailure, match=r"cycle 0: count=\d+, expected \d+"):
        build_and_test(Counter, "counter", HERE / "cocotb_counter.py", build_dir=BUILD_DIR,
                       sim=SIM, env={"COUNTER_EXPECT_OFFSET": 1})


def test_waves_are_dumped(tmp_path):
    result = build_and_test(Counter, "counter", HERE / "cocotb_counter.py", build_dir=tmp_path,
                            sim=SIM, params={"cycles": 20}, waves=True)
    fst = result.build_dir / "counter.fst"
    assert result.passed and fst.is_file() and fst.stat().st_size > 0


#: The counter as Yosys writes Verilog (what Amaranth's output looks like): an ``always @*``
#: block whose inputs never change, run once at start-up only by the event of its trigger's
#: initialiser. Under Icarus' SystemVerilog semantics (``-g2012``, the runner's default) that
#: event never happens and ``count`` is X; the runner's ``-g2005`` fixes it.
TIME0_COUNTER = r"""
module counter_t0(clk, rst, en, count);
  reg \$auto$verilog_backend.cc:2355:dump_module$1  = 0;
  input clk;
  input rst;
  input en;
  output [15:0] count;
  reg [15:0] cnt = 16'h0000;
  reg [15:0] offset;
  always @(posedge clk)
    if (rst) cnt <= 16'h0000;
    else if (en) cnt <= cnt + 16'h0001;
  always @* begin
    if (\$auto$verilog_backend.cc:2355:dump_module$1 ) begin end
    offset = 16'h0000;
  end
  assign count = cnt + offset;
endmodule
"""


def test_always_star_runs_at_time_zero(tmp_path):
    run = dict(build_dir=tmp_path, sim=SIM, params={"cycles": 20})
    assert build_and_test(TIME0_COUNTER, "counter_t0", HERE / "cocotb_counter.py", **run).passed
    # The same design in SystemVerilog mode (the last -g wins) reads X: the bench notices.
    with pytest.raises(CocotbTestFailure, match="counts_enabled_cycles failed"):
        build_and_test(TIME0_COUNTER, "counter_t0", HERE / "cocotb_counter.py",
                       build_args=["-g2012"], **run)


# ------------------------------------------------------------------------------ pipelined units
def run_unit(unit_name, tmp_path, *, corrupt=None, n=N_VECTORS):
    """One unit with the default parameters, vectors and expectations as in test_rtl_units."""
    from test_rtl_units import BUBBLE, TEST_MODULE, UNITS, params_for
    cls, gen = UNITS[unit_name]
    p = params_for("default")
    unit = cls(p)
    seed = zlib.crc32(unit_name.encode()) % 1000
    vin, vexp, signed_out = gen(p, unit, n, seed)
    if corrupt is not None:
        field, k = corrupt
        vexp[field] = vexp[field].copy()
        vexp[field][k] ^= 1
    path = tmp_path / f"{unit_name}.npz"
    np.savez(path, **{f"in_{k}": v for k, v in vin.items()},
             **{f"out_{k}": v for k, v in vexp.items()})
    return build_and_test(
        unit, f"{unit_name}_unit", TEST_MODULE, build_dir=BUILD_DIR, sim=SIM, seed=seed,
        params={"vectors": str(path), "inputs": list(vin), "outputs": list(vexp),
                "signed_outputs": signed_out, "latency": unit.latency, "bubble": BUBBLE,
                "seed": seed})


@pytest.mark.parametrize("unit_name", ["neuron", "pretrace", "errorfilter"])
def test_unit_matches_golden(unit_name, tmp_path):
    assert run_unit(unit_name, tmp_path).passed


def test_unit_mismatch_is_reported(tmp_path):
    with pytest.raises(CocotbTestFailure, match=r"vector 1234: field sigma: got \d+, expected \d+"):
        run_unit("neuron", tmp_path, corrupt=("sigma", 1234))


# ------------------------------------------------------------------------------ the Core
def run_core(tmp_path, name, **extra):
    cfg = dict(CORE_CONFIGS[name])
    lanes = cfg.pop("lanes")
    # Large weights so the outputs spike, short chunks, a large r0 so weights move visibly.
    p = Params(**{"chunk_steps": 25, "w_init_mean_mv": 1.0, "w_init_std_mv": 3.0, "r0_mv": 0.5,
                  **cfg})
    stats = tmp_path / "stats.json"
    params = {"params": p.to_dict(), "lanes": lanes, "in_width": 8, "seed": 3,
              "steps": CORE_STEPS, "stats": str(stats), **extra}
    config = CoreConfig(p, lanes)
    build_and_test(lambda: Core(config), "core", "spikeloop.sim.cocotb_core",
                   build_dir=BUILD_DIR, sim=SIM, params=params, testcase="step_lockstep", seed=11)
    return p, lanes, json.loads(stats.read_text())


@pytest.mark.parametrize("name", [n if n == "17x5x3-P2" else pytest.param(n, marks=pytest.mark.heavy)
                                  for n in CORE_CONFIGS])      # Icarus is slow: one core in CI
def test_core_matches_golden(tmp_path, name):
    p, lanes, info = run_core(tmp_path, name)
    assert info["steps"] == CORE_STEPS
    # Every variable of the golden snapshot was compared, the learning signal was live.
    assert set(info["names"]) == set(GoldenModel(p).snapshot())
    layers = ("hid", "out") if p.n_hidden else ("out",)
    want = {f"{L}.{v}" for L in layers for v in ("S", "e", "m", "zh", "sigma", "w")}
    assert want <= set(info["nonzero"]), sorted(want - set(info["nonzero"]))
    assert info["output_spikes"] > 0 and (info["hidden_spikes"] > 0 or not p.n_hidden)
    assert info["cycles"]["plain"] == [CoreConfig(p, lanes).cycles_per_step()]
    assert info["cycles"]["chunk"] == [CoreConfig(p, lanes).cycles_per_step(chunk=True)]


def test_core_mismatch_is_reported(tmp_path):
    """One weight changed behind the golden model's back: named with its index and step."""
    with pytest.raises(CocotbTestFailure, match=r"step 3: out\.w\[1, 2\]: rtl -?\d+ != golden"):
        run_core(tmp_path, "37x11-P2", steps=6, corrupt_step=3)

"""The Core against the golden model, bit for bit, every state word after every step (cocotb)."""

import json
import os
from pathlib import Path

import pytest

from spikeloop.hdl.core import Core, cycles_per_step
from spikeloop.params import Params
from spikeloop.sim.rtl_runner import CocotbTestFailure, build_and_test, default_build_dir

HERE = Path(__file__).parent
TEST_MODULE = "spikeloop.sim.cocotb_core"

#: Steps per configuration (the slow run raises it with SPIKELOOP_CORE_STEPS).
STEPS = int(os.environ.get("SPIKELOOP_CORE_STEPS", "200"))

CONFIGS = {
    "37x11-P1": dict(n_in=37, n_out=11, lanes=1),
    "37x11-P2": dict(n_in=37, n_out=11, lanes=2),
    "16x3-P4": dict(n_in=16, n_out=3, lanes=4),
}
#: Also checked for 200 steps: W = P (one column per stream word) and a single output.
EXTRA = {
    "16x3-P4-W4": dict(n_in=16, n_out=3, lanes=4, in_width=4),
    "9x1-P2-W16": dict(n_in=9, n_out=1, lanes=2, in_width=16),
}


def core_params(n_in, n_out) -> Params:
    # Large weights so the outputs spike (S, ref and the error filter get exercised); short
    # chunks so the chunk-end pass runs every 25 steps; a large r0 so weights move visibly.
    return Params(n_in=n_in, n_out=n_out, chunk_steps=25, w_init_mean_mv=1.0, w_init_std_mv=3.0,
                  r0_mv=0.5)


@pytest.fixture(scope="module")
def build_dir():
    return default_build_dir()      # Verilator builds cached across runs


def run(build_dir, tmp_path, cfg, testcase, **extra):
    cfg = dict(cfg)
    lanes = cfg.pop("lanes")
    in_width = cfg.pop("in_width", 8)
    p = core_params(**cfg)
    stats = tmp_path / "stats.json"
    params = {"params": p.to_dict(), "lanes": lanes, "in_width": in_width, "seed": 3,
              "steps": STEPS, "stats": str(stats)}
    params.update(extra)
    build_and_test(lambda: Core(p, lanes=lanes, in_width=in_width), "core", TEST_MODULE,
                   build_dir=build_dir,
                   params=params, testcase=testcase, seed=11)
    info = json.loads(stats.read_text()) if stats.exists() else None
    print(f"core {cfg} P={lanes} {testcase}: {info}")
    return p, lanes, info


def check_cycles(p, lanes, info):
    # The step takes exactly the documented number of cycles (out is drained in parallel).
    assert info["cycles"]["plain"] == [cycles_per_step(p, lanes)]
    assert info["cycles"]["chunk"] == [cycles_per_step(p, lanes, chunk=True)]


@pytest.mark.parametrize("name", list(CONFIGS) + list(EXTRA))
def test_core_matches_golden(build_dir, tmp_path, name):
    p, lanes, info = run(build_dir, tmp_path, {**CONFIGS, **EXTRA}[name], "step_lockstep")
    check_cycles(p, lanes, info)
    assert info["output_spikes"] > 0


def test_core_mismatch_is_reported(build_dir, tmp_path):
    """The comparison names the first differing variable, its index and the step."""
    with pytest.raises(CocotbTestFailure, match=r"step 3: out\.w\[1, 2\]: rtl -?\d+ != golden"):
        run(build_dir, tmp_path, CONFIGS["37x11-P2"], "step_lockstep", steps=6, corrupt_step=3)


def test_core_r0_register(build_dir, tmp_path):
    """r0 written through the access port at run time sets the chunk-end step size."""
    p, lanes, info = run(build_dir, tmp_path, CONFIGS["37x11-P2"], "step_lockstep", steps=100,
                         r0=37)
    assert info["output_spikes"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_core_matches_golden_long(build_dir, tmp_path, name):
    p, lanes, info = run(build_dir, tmp_path, CONFIGS[name], "step_lockstep", steps=2000,
                         seed=5)
    check_cycles(p, lanes, info)
    assert info["output_spikes"] > 0


def test_core_access_port_reads_match(build_dir, tmp_path):
    """The lockstep comparison with every word read through the access port (a few steps)."""
    p, lanes, info = run(build_dir, tmp_path, CONFIGS["37x11-P2"], "step_lockstep", steps=3,
                         read="port")
    assert info["cycles"]["plain"] == [cycles_per_step(p, lanes)]


@pytest.mark.parametrize("name", ["37x11-P2", "16x3-P4"])
def test_core_access_port_roundtrip(build_dir, tmp_path, name):
    run(build_dir, tmp_path, CONFIGS[name], "access_port_roundtrip")


@pytest.mark.parametrize("change, what", [
    (dict(n_hidden=4), "hidden layer"), (dict(kernel="single_exp"), "kernel"),
    (dict(optimiser="fixed"), "optimiser"), (dict(error_source="host"), "error_source"),
    (dict(error_delay=2), "error_delay"),
])
def test_core_refuses_unsupported(change, what):
    p = Params(n_in=8, n_out=2).replace(**change)
    with pytest.raises(ValueError, match=f"Core does not support .*{what.split()[0]}"):
        Core(p)


def test_core_refuses_bad_lanes():
    with pytest.raises(ValueError, match="power of two"):
        Core(Params(n_in=8, n_out=2), lanes=3)
    with pytest.raises(ValueError, match="multiple of lanes"):
        Core(Params(n_in=8, n_out=2), lanes=16, in_width=8)


def test_verify_command_reports_bit_exact(tmp_path, capsys):
    from spikeloop.host.cli import main
    cfg = tmp_path / "p.json"
    core_params(16, 3).save(cfg)
    assert main(["verify", "--config", str(cfg), "--steps", "60", "--lanes", "4", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("bit-exact: 60 steps, 15 state variables")


def test_verify_command_refuses_unsupported_options(tmp_path, capsys):
    from spikeloop.host.cli import main
    cfg = tmp_path / "p.json"
    Params(n_in=8, n_hidden=4, n_out=2).save(cfg)
    assert main(["verify", "--config", str(cfg), "--steps", "5"]) == 2
    assert "does not support" in capsys.readouterr().err


def test_bench_rtl_reports_cycles_and_refuses_what_it_cannot_build():
    from spikeloop.host.bench import bench_rtl
    res = bench_rtl(sizes=((16, 0, 3), (8, 4, 2)), lanes=(4,), steps=3)
    ok, refused = res["rows"]
    assert ok["cycles_per_step"] == cycles_per_step(Params(n_in=16, n_out=3), 4)
    assert 0 < ok["updates_per_cycle_per_lane"] <= 1 and ok["sim_cycles_per_s"] > 0
    assert "does not support" in refused["error"]

"""A Fig. 2 training run through the RTL Core (Verilator) ends with exactly the golden weights."""

import json
from pathlib import Path

import pytest

from spikeloop.hdl.config import CoreConfig
from spikeloop.hdl.core import Core
from spikeloop.host.tasks import fig2_params
from spikeloop.sim.rtl_runner import build_and_test, default_build_dir

TRIALS = int(__import__("os").environ.get("FIG2_TRIALS", 50))


@pytest.mark.heavy
def test_fig2_training_through_core_matches_golden(tmp_path):
    p = fig2_params()
    stats = tmp_path / "stats.json"
    build_and_test(lambda: Core(CoreConfig(p, lanes=1, in_width=8)), "core", Path(__file__).with_name("cocotb_fig2.py"),
                   build_dir=default_build_dir(), testcase="fig2_training", seed=1,
                   params={"seed": 0, "trials": TRIALS, "stats": str(stats)})
    info = json.loads(stats.read_text())
    print(info)
    assert info["steps"] == TRIALS * p.chunk_steps
    assert info["weights_changed"] > 0                   # learning happened, on both sides
    assert sum(info["output_spikes_per_trial"]) > 0

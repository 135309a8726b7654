"""UP5K synthesis through Amaranth's platform build with the YoWASP tools."""

import json

import pytest

from rtl_examples import CounterWithMemory
from spikeloop.sim.synth import synth_ice40


@pytest.mark.slow
def test_counter_with_memory_maps_to_ebr(tmp_path):
    r = synth_ice40(CounterWithMemory, "ctrmem", tmp_path, clock_mhz=12)
    assert r["fmax_mhz"] > 12  # constraint met
    util = r["utilisation"]
    assert util["EBR"]["used"] >= 1, util  # 256x16 RAM went to block RAM ...
    assert util["EBR"]["available"] == 30
    assert util["LC"]["available"] == 5280
    assert 0 < util["LC"]["used"] < 400, util  # ... not to LUTs (256x16 would need thousands)
    assert r["harness"] == {"input_bits": 1 + 1 + 8, "output_bits": 16 + 16}
    assert json.loads(open(r["report_path"]).read())["utilization"]
    assert (tmp_path / "ctrmem.bin").exists()

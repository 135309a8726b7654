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


@pytest.mark.slow
def test_synth_cli_core_100x1_fits_up5k(tmp_path, capsys):
    """`spikeloop synth` on the 100-input, 1-output core: fits the UP5K with its state in EBR."""
    from spikeloop.host.cli import main
    from spikeloop.params import Params
    cfg = tmp_path / "p.json"
    Params(n_in=100, n_out=1).save(cfg)
    out = tmp_path / "synth.json"
    rc = main(["synth", "--config", str(cfg), "--build-dir", str(tmp_path / "build"),
               "--json", str(out), "--seed", "1"])
    r = json.loads(out.read_text())
    print(capsys.readouterr().out)
    assert rc in (0, 1), rc                     # 1 = fits but misses the clock target
    assert (rc == 0) == (r["fmax_mhz"] >= 24)
    u = r["utilisation"]
    assert 0 < u["LC"]["used"] <= u["LC"]["available"] == 5280
    assert u["EBR"]["used"] >= 4, u             # synapse, q, neuron, trace words in block RAM
    assert (r["top"], r["size"], r["lanes"]) == ("core", "100x0x1", 1)


UP5K_CONFIG = __import__("pathlib").Path(__file__).parent.parent / "configs" / "up5k-100x32x100.toml"


@pytest.mark.heavy
def test_synth_cli_core_100x32x100_fits_up5k_with_spram(tmp_path, capsys):
    """The two-layer 100-32-100 core with its synapse and q words in the four SPRAMs
    (``--single-port``, the narrow formats of ``configs/up5k-100x32x100.toml``) places and
    routes on the UP5K."""
    from spikeloop.host.cli import main
    out = tmp_path / "synth.json"
    rc = main(["synth", "--config", str(UP5K_CONFIG), "--single-port", "--build-dir",
               str(tmp_path / "build"), "--json", str(out), "--seed", "1"])
    r = json.loads(out.read_text())
    print(capsys.readouterr().out)
    assert rc in (0, 1), rc
    assert (rc == 0) == (r["fmax_mhz"] >= 24)
    u = r["utilisation"]
    assert u["SPRAM"]["used"] == 4, u           # 6400 synapse rows + 6400 q rows, 64 bits wide
    assert 0 < u["LC"]["used"] <= u["LC"]["available"] == 5280
    assert u["EBR"]["used"] <= 30


def test_synth_cli_single_port_refuses_words_wider_than_the_sprams(tmp_path, capsys):
    """At the default formats a synapse word is 72 bits: more than the four 16-bit SPRAMs."""
    from spikeloop.host.cli import main
    from spikeloop.params import Params
    cfg = tmp_path / "p.json"
    Params(n_in=100, n_hidden=32, n_out=100).save(cfg)
    rc = main(["synth", "--config", str(cfg), "--single-port", "--build-dir", str(tmp_path / "b")])
    assert rc == 2
    assert "need 72" in capsys.readouterr().err

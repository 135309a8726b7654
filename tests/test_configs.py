"""The parameter files shipped in configs/: each one loads and validates, and the UP5K ones
keep a synapse word that fits one 64-bit row of the four 16-bit SPRAMs."""

from pathlib import Path

import pytest

from spikeloop.hdl.layouts import synapse_layout
from spikeloop.params import Params

CONFIGS = sorted(p for p in (Path(__file__).resolve().parent.parent / "configs").iterdir()
                 if p.suffix in (".toml", ".json"))

#: Four SPRAMs side by side, 16 bits each: one row per synapse.
UP5K_SYNAPSE_BITS = 64


def test_configs_exist():
    assert CONFIGS, "configs/ holds no .toml or .json file"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_round_trips(path, tmp_path):
    p = Params.load(path)          # validation happens in Params.__post_init__
    copy = tmp_path / "copy.json"
    p.save(copy)
    assert Params.load(copy) == p


UP5K_CONFIGS = [p for p in CONFIGS if p.name.startswith("up5k-")]


@pytest.mark.parametrize("path", UP5K_CONFIGS, ids=lambda p: p.name)
def test_up5k_synapse_word_fits_spram_row(path):
    p = Params.load(path)
    assert synapse_layout(p).size <= UP5K_SYNAPSE_BITS


def test_up5k_100x32x100_sizes():
    p = Params.load(Path(__file__).resolve().parent.parent / "configs" / "up5k-100x32x100.toml")
    assert (p.n_in, p.n_hidden, p.n_out) == (100, 32, 100)

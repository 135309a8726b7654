"""Golden model vs float reference: the documented agreement bounds (docs/model.md)."""

import numpy as np
import pytest

from spikeloop.params import Params
from spikeloop.sim.golden import GoldenModel
from spikeloop.sim.reference import FloatModel
from spikeloop.sim.stepmodel import STATE_WORDS


def bounds(p):
    """Worst-case difference per variable, in LSBs of its format (the table in docs/model.md)."""
    mem, syn = 1 / (1 - p.decay_mem.factor), 1 / (1 - p.decay_syn.factor)
    fs = lambda w: 0.005 * p.formats[w].max  # noqa: E731
    return {"z": syn, "zh": 2 * mem, "U": 2 * mem, "I": 2 * mem, "e": 2 * mem, "e1": 2 * mem,
            "e2": 2 * mem, "sigma": 1, "el": fs("el"), "elf": fs("elf"), "m": fs("m"),
            "q": 0, "w": 0}


@pytest.mark.parametrize("kernel", ["double_exp", "single_exp", "factorised"])
def test_same_spikes_same_states_within_bound(kernel):
    # Threshold far away: no output spikes, so both models see identical spike trains and
    # differ by arithmetic only. Same decay factors (codes) isolate rounding from τ error.
    p = Params(n_in=50, n_out=4, threshold_mv=200.0, w_init_std_mv=3.0, chunk_steps=10**6, kernel=kernel)
    g, f = GoldenModel(p, seeds=[1, 2, 3]), FloatModel(p, seeds=[1, 2, 3], decays="codes")
    rng = np.random.default_rng(5)
    x, tgt = rng.random((300, 50)) < 0.05, rng.random((300, 4)) < 0.03
    limit = bounds(p)
    worst = {}
    for n in range(300):
        g.step(x[n], tgt[n])
        f.step(x[n], tgt[n])
        sg, sf = g.snapshot(), f.snapshot()
        for k, v in sg.items():
            word = k.split(".")[1]
            fmt = {"e1": "err", "e2": "err"}.get(word, STATE_WORDS.get(word))
            if fmt is None:
                assert np.array_equal(v, sf[k]), f"{k} differs at step {n}"
                continue
            d = np.abs(v - sf[k] * p.formats[fmt].one).max()
            worst[k] = max(worst.get(k, 0), d)
            assert d <= limit[word], f"{k} off by {d:.1f} LSB at step {n} (bound {limit[word]:.1f})"
    assert worst["out.zh"] > 0 and worst["out.U"] > 0       # the comparison did compare something


def test_sigma_rom_within_half_a_bin_of_the_exact_surrogate():
    p = Params()
    one = p.formats["u"].one
    v = np.arange(-30 * one, 30 * one, 7)
    addr = np.minimum(np.abs(v) >> p.sigma_shift, len(p.sigma_table) - 1)
    rom = p.sigma_table[addr] / 256
    exact = 1 / (1 + p.beta_per_mv * np.abs(v) / one) ** 2
    half_bin_mv = (1 << p.sigma_shift) / one / 2
    # |dσ'/dV| ≤ 2β, so half a bin of V error costs at most 2β·half_bin, plus rounding.
    assert np.abs(rom - exact).max() <= 2 * p.beta_per_mv * half_bin_mv + 1 / 256


def test_exact_decays_differ_only_by_the_code_error():
    p = Params()
    f_exact, f_codes = FloatModel(p, decays="exact"), FloatModel(p, decays="codes")
    assert f_exact.f["mem"] != f_codes.f["mem"]
    assert abs(f_exact.f["mem"] - p.decay_mem.factor) < 1e-3
    with pytest.raises(ValueError, match="decays must be 'exact' or 'codes', not 'fast'"):
        FloatModel(p, decays="fast")

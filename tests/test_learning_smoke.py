"""A learning smoke test short enough for CI: the Fig. 2 rule must actually learn."""

import numpy as np
import pytest

from spikeloop.host.tasks import FIG2_DEFAULTS, fig2_params, make_fig2
from spikeloop.host.train import train


@pytest.mark.parametrize("backend", ["model", "float"])
def test_fig2_cost_falls_and_spikes_appear(backend, tmp_path):
    seeds = [0, 1, 2]
    task = make_fig2(seeds)
    res = train(fig2_params(), task["inputs"], task["targets"], seeds=seeds, trials=160,
                backend=backend, out_dir=tmp_path, r0_drop=FIG2_DEFAULTS["r0_drop"], plots=False)
    rel = np.asarray(res["per_trial"]["rel_cost"])          # (trials, seeds)
    n_spikes = np.asarray(res["per_trial"]["n_spikes"])
    assert (n_spikes[0] == 0).all(), "the task starts from a silent output"
    late = np.nanmean(rel[-20:], axis=0)
    assert (late < 0.5).all(), f"cost did not fall to half: {late}"
    assert sum(s is not None for s in res["first_success"]) >= 2, res["first_success"]

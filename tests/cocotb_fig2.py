"""cocotb test: a Fig. 2 training run driven through the RTL ``Core``, checked against the golden model.

Run by ``tests/test_rtl_fig2.py``. Test parameters (JSON)::

    {"seed": s, "trials": N, "stats": path or null}

The Core gets the golden model's initial weights through its access port, then both run the Fig. 2
task (frozen Poisson input, five target spikes, one weight update per trial) for ``trials`` trials
with the on-chip error filter. Output spikes are compared every step and the whole state (every
variable of the golden snapshot) after every weight update; the run must end with exactly the
golden model's weights.
"""

from __future__ import annotations

import json
import random
import time

import cocotb
import numpy as np

from spikeloop.hdl.accessmap import Reg, Space
from spikeloop.host.tasks import FIG2_DEFAULTS, fig2_params, make_fig2
from spikeloop.sim.cocotb_core import TB, first_mismatch
from spikeloop.sim.golden import GoldenModel
from spikeloop.sim.rtl_runner import test_params

PARAMS = test_params()


@cocotb.test()
async def fig2_training(dut):
    seed, trials = int(PARAMS.get("seed", 0)), int(PARAMS.get("trials", 50))
    p = fig2_params()
    task = make_fig2([seed])
    inputs, targets = task["inputs"][0], task["targets"]
    T = inputs.shape[0]
    tb = TB(dut, p, 1, 8, random.Random(seed), stall=0.0, backpressure=0.0)
    await tb.reset()
    gm = GoldenModel(p, seeds=seed)
    tb.make_plan(gm.snapshot())
    w0 = gm.layers[0].w[0].copy()
    for k, w in enumerate(w0.ravel()):
        loc = tb.map.locate("out.w", k)
        await tb.acc_write(loc.space, loc.index, loc.insert(0, int(w)))
    drops = dict(FIG2_DEFAULTS["r0_drop"])
    spikes, t0 = [], time.perf_counter()
    for trial in range(trials):
        if trial in drops:                        # the schedule, through the R0 register
            gm.r0_q = max(1, int(gm.r0_q // drops[trial]))
            await tb.acc_write(Space.REG, Reg.R0, gm.r0_q)
        n_out = 0
        for t in range(T):
            out = await tb.step(inputs[t], targets[t])
            S = gm.step(inputs[t], targets[t])[0]
            assert out == tb.map.pack_bits(S), f"trial {trial} step {t}: out {out} != golden {S}"
            n_out += int(S.sum())
        mm = first_mismatch(gm.snapshot(), await tb.state(direct=True))
        assert mm is None, f"after trial {trial}: {mm}"
        spikes.append(n_out)
    w_rtl = (await tb.state(direct=True))["out.w"][0]
    assert np.array_equal(w_rtl, gm.weights[0][0]), "final weights differ"
    w_start = w0.astype(np.int64)
    info = {"seed": seed, "trials": trials, "steps": trials * T, "output_spikes_per_trial": spikes,
            "weights_changed": int((w_rtl != w_start).sum()), "wall_s": time.perf_counter() - t0}
    dut._log.info("fig2 through the Core: %s", info)
    if PARAMS.get("stats"):
        with open(PARAMS["stats"], "w") as f:
            json.dump(info, f)

"""``spikeloop verify``: run the Core against the golden model, bit for bit, for any configuration."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from spikeloop.hdl.config import CoreConfig
from spikeloop.sim.rtl_runner import CocotbTestFailure, build_and_test, default_build_dir

__all__ = ["verify_core", "VerifyMismatch"]


class VerifyMismatch(Exception):
    """The RTL and the golden model differ; the message names variable, index and step."""


def verify_core(config: CoreConfig, *, steps: int, seed: int, sim: str = "verilator",
                x_rate: float = 0.2, t_rate: float = 0.05) -> dict:
    """Build the Core for ``config`` and run it in lockstep with the golden model for ``steps``
    steps of seeded random input spikes and target spikes, or random error words when
    ``params.error_source`` is host (random stalls on every input stream, backpressure on
    ``out``). Any configuration the Core accepts works, hidden layer included; every variable
    of the golden snapshot is compared after every step.

    Returns the run's statistics (``steps``, ``variables``, ``cycles``, ...); raises
    :class:`VerifyMismatch` at the first differing state word or output spike.
    """
    from spikeloop.hdl.core import Core

    core = Core(config)
    params, lanes, in_width, single_port = (config.params, config.lanes, config.in_width,
                                            config.single_port)
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "stats.json"
        try:
            build_and_test(lambda: core, "core", "spikeloop.sim.cocotb_core",
                           build_dir=default_build_dir(), sim=sim, testcase="step_lockstep",
                           seed=seed, params={"params": params.to_dict(), "lanes": lanes,
                                              "in_width": in_width, "seed": seed, "steps": steps,
                                              "x_rate": x_rate, "t_rate": t_rate,
                                              "single_port": single_port,
                                              "stats": str(stats)})
        except CocotbTestFailure as e:
            tests = e.result.tests if e.result is not None else []
            first = next((t.message for t in tests if t.status != "passed" and t.message), str(e))
            raise VerifyMismatch(first.splitlines()[0] if first else str(e)) from None
        return json.loads(stats.read_text())

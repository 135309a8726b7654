"""The gateware protocol engine and the SoC (cocotb + Verilator): every command, every NAK reason,
duplicates, link faults, RUN_STEPS against the golden model, replies byte-identical to VirtualBoard."""

import json
from pathlib import Path

import pytest

from spikeloop.hdl.config import CoreConfig, SoCConfig
from spikeloop.hdl.engine import ProtocolEngine, space_maps
from spikeloop.hdl.soc import EngineCore, SoC
from spikeloop.params import Params
from spikeloop.sim.rtl_runner import build_and_test, default_build_dir

TEST_MODULE = Path(__file__).with_name("cocotb_engine.py")
CLOCK_HZ, BAUD = 4_000_000, 1_000_000          # 4 clocks per bit: what the simulation bridge uses


def net(**kw):
    # weights large enough that outputs spike; short chunks so chunk ends run within the test
    base = dict(chunk_steps=16, w_init_mean_mv=1.0, w_init_std_mv=3.0, r0_mv=0.5)
    base.update(kw)
    return Params(**base)


CONFIGS = {
    "20x3-P1": (dict(n_in=20, n_out=3), 1, 8, 1024),
    # the Core's other options through the same engine: a hidden layer, random feedback (space
    # fb), host-streamed errors (stream err), two lanes with padded rows, 16-bit stream beats,
    # and a max_payload so small that bursts and batches split
    "37x6x3-host-P2-W16": (dict(n_in=37, n_hidden=6, n_out=3, error_source="host",
                                feedback="random", w_init_mean_mv=4.0), 2, 16, 128),
}


@pytest.fixture(scope="module")
def build_dir():
    return default_build_dir()


def run(build_dir, name, testcases, top="engine", **extra) -> dict | None:
    kw, lanes, W, mp = CONFIGS[name]
    p = net(**kw)
    params = {"params": p.to_dict(), "lanes": lanes, "in_width": W, "max_payload": mp,
              "clock_hz": CLOCK_HZ, "baud": BAUD, "seed": 5}
    params.update(extra)
    cls = EngineCore if top == "engine" else SoC
    config = SoCConfig(CoreConfig(p, lanes, W), clock_hz=CLOCK_HZ, baud=BAUD, max_payload=mp)
    build_and_test(lambda: cls(config),
                   top, TEST_MODULE, build_dir=build_dir, params=params, testcase=testcases, seed=7)
    stats = params.get("stats")
    return json.loads(Path(stats).read_text()) if stats and Path(stats).exists() else None


def test_engine_20x3(build_dir, tmp_path):
    info = run(build_dir, "20x3-P1", ["commands", "refusals", "link_faults", "golden_run",
                                      "random_stream", "boundaries"], steps=80, requests=250,
               stats=str(tmp_path / "stats.json"))
    print(f"engine 20x3: {info}")
    # per step the engine adds a CHUNK_PHASE read, the input and target beats, start and the
    # output beat to the Core's own cycles: a small constant, not a multiple of the step
    assert 0 < info["per_step_overhead"] < 20


@pytest.mark.slow
def test_engine_hidden_layer_host_errors(build_dir):
    run(build_dir, "37x6x3-host-P2-W16", ["commands", "refusals", "golden_run", "random_stream",
                                          "boundaries"],
        steps=60, requests=150)


def test_soc_uart(build_dir):
    run(build_dir, "20x3-P1", ["soc_uart"], top="soc")


def test_engine_refuses_bad_parameters():
    p = net(n_in=20, n_out=3)
    # the values are checked by SoCConfig, the one place that validates a build
    with pytest.raises(ValueError, match="in_width must be a multiple of 8 for the protocol engine, not 4"):
        SoCConfig(CoreConfig(p, 1, 4), clock_hz=CLOCK_HZ, baud=BAUD)
    with pytest.raises(ValueError, match="max_payload must be an integer from 64 to 65535, not 10"):
        SoCConfig.build(p, 1, 8, clock_hz=CLOCK_HZ, baud=BAUD, max_payload=10)
    with pytest.raises(ValueError, match="clock_hz must be a positive integer below 2\\*\\*32, not 0"):
        SoCConfig.build(p, 1, 8, clock_hz=0, baud=BAUD)
    with pytest.raises(ValueError, match="baud must divide the clock"):
        SoC(SoCConfig.build(p, clock_hz=CLOCK_HZ, baud=3 * BAUD))
    with pytest.raises(TypeError, match="must be a SoCConfig, not Params"):
        ProtocolEngine(p)


def test_space_maps_follow_locate():
    """The counter scheme reproduces AccessMap.locate for every word (checked at construction)."""
    for kw, lanes, W in ((dict(n_in=37, n_out=11), 2, 8), (dict(n_in=12, n_hidden=5, n_out=3), 2, 8),
                         (dict(n_in=9, n_out=1), 2, 16)):
        maps = space_maps(CoreConfig(net(**kw), lanes, W))
        assert {m.name for m in maps} >= {"out.w", "out.S", "out.U"}
        w = next(m for m in maps if m.name == "out.w")
        assert (w.R, w.sh, w.cstride) == (kw.get("n_hidden") or kw["n_in"], 0, 1)
    # the feedback matrix is stored transposed (B[k, i] in the output synapse word (i, k)):
    # consecutive protocol words step a whole padded row in the Core
    p = net(n_in=12, n_hidden=5, n_out=3, feedback="random")
    fb = next(m for m in space_maps(CoreConfig(p, 2, 8)) if m.name == "fb")
    assert (fb.R, fb.cstride, fb.stride) == (p.n_out, 6, 1)

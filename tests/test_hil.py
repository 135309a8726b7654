"""Hardware-in-the-loop training (spikeloop.host.hil) and run records, on the model backend."""

import json

import numpy as np
import pytest

from spikeloop.host.board import Board
from spikeloop.host.hil import HostErrorFilter, hil_params, hil_resume, hil_train
from spikeloop.host.record import RecordError, RunRecord
from spikeloop.host.tasks import fig2_params, make_fig2
from spikeloop.params import Params
from spikeloop.sim.golden import GoldenModel

# A small Fig. 2 task that learns within tens of trials (measured with r0 halved at trial 15:
# first success at trial 16 in target mode, 20 in host mode with a latency of 3 steps).
SEED = 1
N_IN, DUR_MS, N_TGT = 100, 200.0, 3


def base_params():
    return fig2_params(Params(w_init_std_mv=0.5, r0_mv=0.3), n_in=N_IN, duration_ms=DUR_MS)


@pytest.fixture(scope="module")
def task():
    t = make_fig2([SEED], n_in=N_IN, duration_ms=DUR_MS, n_target_spikes=N_TGT)
    return t["inputs"][0], t["targets"], t["task"]


def run(params, task, out, trials, **kw):
    x, y, info = task
    with Board.open("board-model", params=params) as board:
        return hil_train(board, params, x, y, seed=SEED, trials=trials, out_dir=out,
                         backend="board-model", task=info, **kw)


def opener(backend, params):
    assert backend == "board-model"
    return Board.open("board-model", params=params)


def stop_after(trial):
    def hook(k):
        if k == trial:
            raise KeyboardInterrupt
    return hook


# --------------------------------------------------------------------------- learning

@pytest.mark.parametrize("mode, latency", [("target", None), ("host", 3)])
def test_hil_training_learns(mode, latency, task, tmp_path):
    p = hil_params(base_params(), mode, latency)
    m = run(p, task, tmp_path, 30, error_mode=mode, snapshot_every=10, r0_drop=[(15, 2)],
            plots=False)
    rel = np.array(m["per_trial"]["rel_cost"], float)[:, 0]
    assert m["per_trial"]["n_spikes"][0] == [0], "the task starts from a silent output"
    assert m["first_success"][0] is not None and m["first_success"][0] < 25, m["first_success"]
    assert np.median(rel[:10]) > 0.8 and np.median(rel[-10:]) < 0.5, rel
    assert m["complete"] and not m["interrupted"] and m["trials_done"] == 30
    assert m["error_mode"] == mode and m["backend"] == "board-model"


def test_target_mode_matches_the_golden_model_in_process(task, tmp_path):
    """The board runs exactly what GoldenModel runs: outputs every trial and the final state,
    with an r0 drop going through the R0 register."""
    x, y, _ = task
    p = hil_params(base_params())
    run(p, task, tmp_path, 6, r0_drop=[(3, 4)], snapshot_every=3, plots=False)
    rec = RunRecord.open(tmp_path)
    g = GoldenModel(p, seeds=[SEED])
    for k in range(6):
        if k == 3:
            g.r0_q = max(1, g.r0_q // 4)
        s, _ = g.run(x, y, record=())
        assert np.array_equal(s[0], rec.read_trial(k)["outputs"]), f"trial {k}"
    snap = rec.read_snapshot(6)
    for name, v in g.snapshot().items():
        assert np.array_equal(snap["state"][name], v), name
    assert snap["registers"]["R0"] == g.r0_q and snap["registers"]["STEP_COUNT"] == 6 * len(x)


@pytest.mark.parametrize("latency", [1, 4])
def test_host_errors_are_the_on_chip_filter_delayed(latency, task, tmp_path):
    """In trial 0 (weights not yet updated) the host computes, bit for bit, the error the board's
    own filter computes in target mode, ``latency`` steps later."""
    x, y, _ = task
    p = hil_params(base_params(), "host", latency)
    run(p, task, tmp_path, 1, error_mode="host", plots=False)
    sent = RunRecord.open(tmp_path).read_trial(0)["errors"]
    g = GoldenModel(hil_params(base_params()), seeds=[SEED])
    _, rec = g.run(x, y, record=("out.e",))
    on_chip = rec["out.e"][0]
    assert np.abs(on_chip).max() > 0
    assert np.array_equal(sent[latency:], on_chip[:-latency])
    assert not sent[:latency].any()


def test_host_error_filter_checks_its_batches():
    f = HostErrorFilter(hil_params(base_params(), "host", 2))
    with pytest.raises(ValueError, match="a host-error batch must hold 1..2 steps, not 3"):
        f.take(3)


def test_error_mode_must_agree_with_params(task, tmp_path):
    with pytest.raises(ValueError, match="error mode 'host' needs params.error_source = host"):
        run(hil_params(base_params()), task, tmp_path, 1, error_mode="host")
    with pytest.raises(ValueError, match="feedback latency applies to the host error mode only"):
        hil_params(base_params(), "target", 2)
    with pytest.raises(ValueError, match="error mode must be one of target, host, not 'both'"):
        hil_params(base_params(), "both")


# --------------------------------------------------------------------------- records and resume

@pytest.mark.parametrize("mode, latency", [("target", None), ("host", 0)])
def test_resume_ends_bit_identical(mode, latency, task, tmp_path):
    p = hil_params(base_params(), mode, latency)
    kw = dict(error_mode=mode, snapshot_every=4, r0_drop=[(6, 2)], trace_every=5)
    run(p, task, tmp_path / "whole", 12, **kw)
    with pytest.raises(KeyboardInterrupt):
        run(p, task, tmp_path / "cut", 12, on_trial=stop_after(9), **kw)
    cut = RunRecord.open(tmp_path / "cut")
    assert cut.trials_done() == 10 and cut.snapshots()[-1] == 8
    m = hil_resume(opener, tmp_path / "cut")
    a, b = RunRecord.open(tmp_path / "whole"), RunRecord.open(tmp_path / "cut")
    assert a.trials_done() == b.trials_done() == 12
    for k in range(12):
        ta, tb = a.read_trial(k), b.read_trial(k)
        assert np.array_equal(ta["outputs"], tb["outputs"]), k
        assert sorted(ta["traces"]) == sorted(tb["traces"])
        for v in ta["traces"]:
            assert np.array_equal(ta["traces"][v], tb["traces"][v]), (k, v)
        if mode == "host":
            assert np.array_equal(ta["errors"], tb["errors"]), k
    assert a.snapshots() == b.snapshots() == [0, 4, 8, 12]
    for n in a.snapshots():
        sa, sb = a.read_snapshot(n), b.read_snapshot(n)
        assert sa["registers"] == sb["registers"]
        assert sorted(sa["state"]) == sorted(sb["state"])
        for v in sa["state"]:
            assert np.array_equal(sa["state"][v], sb["state"][v]), (n, v)
        for v in sa["host"]:
            assert np.array_equal(sa["host"][v], sb["host"][v]), (n, v)
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert m["per_trial"] == whole["per_trial"] and m["first_success"] == whole["first_success"]
    assert m["complete"] and len(b.manifest["sessions"]) == 2
    assert b.manifest["sessions"][1]["from_trial"] == 8


def test_resume_with_a_hidden_layer_and_random_feedback(tmp_path):
    """B is loaded from the seed, saved in every snapshot and written back on resume."""
    from spikeloop.host.compare import diff_records
    p = hil_params(fig2_params(Params(w_init_std_mv=2.0, r0_mv=0.3), n_in=40, duration_ms=60.0,
                               n_hidden=8, feedback="random"))
    t = make_fig2([1], n_in=40, duration_ms=60.0, n_target_spikes=2, rate_hz=60.0)
    small = (t["inputs"][0], t["targets"], t["task"])
    run(p, small, tmp_path / "whole", 8, snapshot_every=3, plots=False)
    with pytest.raises(KeyboardInterrupt):
        run(p, small, tmp_path / "cut", 8, snapshot_every=3, on_trial=stop_after(5), plots=False)
    hil_resume(opener, tmp_path / "cut", plots=False)
    a, b = RunRecord.open(tmp_path / "whole"), RunRecord.open(tmp_path / "cut")
    assert diff_records(a, b) is None
    fb = a.read_snapshot(8)["state"]["fb"]
    assert fb.shape == (1, 8, 1) and fb.any()
    assert a.read_snapshot(8)["state"]["hid.U"].any()


def test_resume_extends_a_finished_run(task, tmp_path):
    from spikeloop.host.compare import diff_records
    p = hil_params(base_params())
    run(p, task, tmp_path / "four", 4, snapshot_every=2, trace_every=3, plots=False)
    run(p, task, tmp_path / "two", 2, snapshot_every=2, trace_every=3, plots=False)
    m = hil_resume(opener, tmp_path / "two", trials=4, plots=False)
    assert m["complete"] and m["trials_done"] == 4 and m["trials"] == 4
    a, b = RunRecord.open(tmp_path / "four"), RunRecord.open(tmp_path / "two")
    assert [np.array_equal(a.read_trial(k)["outputs"], b.read_trial(k)["outputs"]) for k in range(4)] \
        == [True] * 4
    assert diff_records(a, b) is None
    with pytest.raises(ValueError, match="trials must be an integer >= 4"):
        hil_resume(opener, tmp_path / "two", trials=3)


def test_interrupted_run_keeps_its_record(task, tmp_path):
    p = hil_params(base_params())
    with pytest.raises(KeyboardInterrupt):
        run(p, task, tmp_path, 20, snapshot_every=3, on_trial=stop_after(4))
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["interrupted"] and not m["complete"] and m["trials_done"] == 5
    assert len(m["per_trial"]["cost"]) == 5
    rec = RunRecord.open(tmp_path)
    assert rec.trials_done() == 5 and rec.snapshots() == [0, 3]
    man = rec.manifest
    assert man["backend"] == "board-model" and man["board_spec"] == "board-model"
    assert man["seed"] == SEED and man["trials"] == 20
    assert man["params"] == p.to_dict() and man["identity"]["version"] >= 1
    assert man["options"]["error_mode"] == "target" and man["options"]["snapshot_every"] == 3
    assert {"python", "numpy"} <= set(man["tools"]) and man["protocol"] >= 1
    assert rec.inputs.shape == (200, N_IN) and rec.targets.sum() == N_TGT
    for f in ("learning_curve.png", "raster.png", "traces.npz", "params.json", "stimulus.npz"):
        assert (tmp_path / f).is_file(), f
    # a snapshot holds every variable the board has, restorable as written
    snap = rec.read_snapshot(3)
    assert {"out.w", "out.U", "out.m", "out.q", "out.el", "out.elf", "err.e1"} <= set(snap["state"])
    assert snap["registers"]["STEP_COUNT"] == 3 * 200
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_a_crashing_backend_keeps_the_record(task, tmp_path):
    from spikeloop.host.board import DriverError

    class Crash(DriverError):
        pass

    def hook(k):
        if k == 2:
            raise Crash("the simulator went away")
    with pytest.raises(Crash):
        run(hil_params(base_params()), task, tmp_path, 10, on_trial=hook)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["interrupted"] and m["trials_done"] == 3


def test_record_refuses_to_overwrite_and_resume_needs_a_record(task, tmp_path):
    p = hil_params(base_params())
    run(p, task, tmp_path, 1, plots=False)
    with pytest.raises(RecordError, match="already holds a run record"):
        run(p, task, tmp_path, 1, plots=False)
    with pytest.raises(RecordError, match="is not a run record"):
        hil_resume(opener, tmp_path / "nothing")


def test_resume_refuses_what_it_cannot_restore(task, tmp_path):
    """The σ'/ẑ delay lines of error_delay > 0 are not in the protocol: resume says so."""
    p = hil_params(base_params(), "host", 2)
    with pytest.raises(KeyboardInterrupt):
        run(p, task, tmp_path, 4, error_mode="host", snapshot_every=1, on_trial=stop_after(1),
            plots=False)
    with pytest.raises(RecordError, match="cannot resume with error_delay = 2"):
        hil_resume(opener, tmp_path)


def test_board_with_other_params_is_refused(task, tmp_path):
    p = hil_params(base_params())
    x, y, _ = task
    with Board.open("board-model", params=p.replace(r0_mv=0.2)) as board:
        with pytest.raises(ValueError, match=r"other parameters than the run \(differs in: r0_mv\)"):
            hil_train(board, p, x, y, seed=SEED, trials=1, out_dir=tmp_path, backend="board-model")


@pytest.mark.parametrize("kw, msg", [
    (dict(trials=0), "trials must be an integer >= 1, not 0"),
    (dict(snapshot_every=-1), "snapshot_every must be an integer >= 0, not -1"),
    (dict(batch=0), "batch must be a positive integer, not 0"),
    (dict(trace_vars=("out.X",)), "trace variables must be memory spaces"),
])
def test_bad_arguments_are_refused(kw, msg, task, tmp_path):
    args = dict(trials=1)
    args.update(kw)
    with pytest.raises(ValueError, match=msg):
        run(hil_params(base_params()), task, tmp_path, **args)


@pytest.mark.slow
def test_hil_on_the_rtl_backend_matches_the_model(tmp_path):
    """The gateware behind the link (SoC in Verilator) trains exactly as the model: every output,
    the membrane of two traced trials and the whole state after every trial, through a weight
    update (chunk end at step 500 falls in trial 10). Params of the SoC build test_board uses."""
    pytest.importorskip("spikeloop.hdl.soc")
    from spikeloop.host.compare import compare_backends
    p = Params(n_in=8, n_out=3)
    rng = np.random.default_rng(7)
    x, y = rng.random((50, 8)) < 0.3, rng.random((50, 3)) < 0.05
    res = compare_backends(["rtl", "board-model"], p, x, y, seed=2, trials=12, out_dir=tmp_path,
                           trace_every=0, plots=False)
    assert res["identical"], res["first"]
    rec = RunRecord.open(tmp_path / res["runs"][0])
    w0, w12 = rec.read_snapshot(0)["state"]["out.w"], rec.read_snapshot(12)["state"]["out.w"]
    assert not np.array_equal(w0, w12), "no weight update happened"
    assert rec.read_snapshot(12)["registers"]["STEP_COUNT"] == 600

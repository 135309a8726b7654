"""Training runs: ``spikeloop.host.train.train`` and the ``train`` / ``demo`` commands."""

import json
import struct

import numpy as np
import pytest

from spikeloop.host.cli import main
from spikeloop.host.tasks import (FIG2_DEFAULTS, fig2_params, fig2_r0_drop, fig2_stimulus_seed,
                                  make_fig2, raster_task, update_chunk)
from spikeloop.host.train import train
from spikeloop.params import Params
from spikeloop.sim.golden import GoldenModel
from spikeloop.sim.raster import read_ras, to_dense, write_ras

METRIC_KEYS = {"version", "backend", "params", "seeds", "trials", "trials_done", "complete",
               "interrupted", "tol_ms", "success_rel_cost", "r0_drop", "task", "per_trial",
               "first_success", "summary", "files"}
PER_TRIAL_KEYS = {"cost", "rel_cost", "n_spikes", "matched", "success", "r0_mv"}
SUMMARY_KEYS = {"n_seeds", "n_succeeded", "first_success_mean", "final_rel_cost_mean",
                "final_rel_cost_sd", "final_cost_mean", "wall_time_s", "trials_per_s"}


def assert_png(path, min_bytes=10_000):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])       # IHDR
    assert width >= 300 and height >= 200
    assert len(data) >= min_bytes, f"{path} is suspiciously small ({len(data)} bytes)"
    from matplotlib.image import imread
    img = imread(path)
    assert img.shape[:2] == (height, width)
    assert img.std() > 0.01                                # not a blank canvas


def load_metrics(out):
    return json.loads((out / "metrics.json").read_text())


def check_shape(m, trials, n_seeds):
    assert METRIC_KEYS <= set(m)
    assert PER_TRIAL_KEYS == set(m["per_trial"])
    assert SUMMARY_KEYS <= set(m["summary"])
    for key in PER_TRIAL_KEYS - {"r0_mv"}:
        assert len(m["per_trial"][key]) == trials
        assert all(len(row) == n_seeds for row in m["per_trial"][key])
    assert len(m["per_trial"]["r0_mv"]) == trials
    assert len(m["first_success"]) == n_seeds
    assert m["trials_done"] == trials


# --------------------------------------------------------------------------- CLI runs

@pytest.fixture(scope="module")
def fig2_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fig2")
    rc = main(["train", "fig2", "--trials", "3", "--seeds", "2", "--out", str(out),
               "--progress", "never"])
    return rc, out


def test_train_fig2_writes_metrics_and_plots(fig2_run):
    rc, out = fig2_run
    assert rc == 0
    m = load_metrics(out)
    check_shape(m, trials=3, n_seeds=2)
    assert m["complete"] and not m["interrupted"]
    assert m["backend"] == "model" and m["seeds"] == [0, 1] and m["trials"] == 3
    assert m["r0_drop"] == [list(d) for d in FIG2_DEFAULTS["r0_drop"]]
    assert m["params"] == fig2_params().to_dict()
    assert m["task"]["name"] == "fig2" and m["task"]["rate_hz"] == FIG2_DEFAULTS["rate_hz"]
    assert m["per_trial"]["rel_cost"][0] == [1.0, 1.0]
    assert m["summary"]["n_seeds"] == 2
    assert m["version"] == __import__("spikeloop").__version__
    assert Params.load(out / "params.json") == fig2_params()
    for name in ("learning_curve.png", "raster.png"):
        assert_png(out / name)
    with np.load(out / "traces.npz") as tr:
        assert tr["first_u_mv"].shape == (2, 500, 1) and tr["last_spikes"].shape == (2, 500, 1)
        assert int(tr["first_trial"]) == 0 and int(tr["last_trial"]) == 2
        assert tr["inputs"].shape == (500, 100)


def test_train_fig2_writes_its_task(fig2_run):
    _, out = fig2_run
    task = make_fig2([0, 1])
    for b, name in enumerate(["input.ras", "input_seed1.ras"]):
        t, i = read_ras(out / name)
        np.testing.assert_array_equal(to_dense(t, i, 100, 500, 1e-3), task["inputs"][b])
    t, i = read_ras(out / "target.ras")
    np.testing.assert_array_equal(to_dense(t, i, 1, 500, 1e-3), task["targets"])
    assert task["task"]["stimulus_seeds"] == [fig2_stimulus_seed(0), fig2_stimulus_seed(1)]
    assert fig2_stimulus_seed(0) != 0


def test_train_from_files_reproduces_fig2_seed(fig2_run, tmp_path):
    """The written task + params.json replay seed 0 of the fig2 run exactly (integer model)."""
    _, out = fig2_run
    rc = main(["train", "--input", str(out / "input.ras"), "--target", str(out / "target.ras"),
               "--config", str(out / "params.json"), "--trials", "3", "--seed", "0",
               "--r0-drop", "300:10", "--out", str(tmp_path), "--progress", "never"])
    assert rc == 0
    a, b = load_metrics(out), load_metrics(tmp_path)
    assert [row[0] for row in b["per_trial"]["cost"]] == [row[0] for row in a["per_trial"]["cost"]]
    assert b["task"]["name"] == "files"


def test_train_from_ras_files(tmp_path, capsys):
    rng = np.random.default_rng(5)
    x = rng.random((40, 7)) < 0.2
    x[:, 6] = False
    x[3, 6] = True                       # the largest id sets n_in = 7
    steps, ids = np.nonzero(x)
    write_ras(tmp_path / "in.ras", steps * 1e-3, ids)
    write_ras(tmp_path / "tgt.ras", [0.010, 0.025, 0.030], [0, 1, 0])
    out = tmp_path / "out"
    rc = main(["train", "--input", str(tmp_path / "in.ras"), "--target", str(tmp_path / "tgt.ras"),
               "--duration-ms", "40", "--trials", "4", "--seeds", "3", "--seed", "7",
               "--hidden", "5", "--feedback", "random", "--backend", "float", "--out", str(out),
               "--progress", "never"])
    assert rc == 0, capsys.readouterr().err
    m = load_metrics(out)
    check_shape(m, trials=4, n_seeds=3)
    p = m["params"]
    assert (p["n_in"], p["n_hidden"], p["n_out"], p["chunk_steps"]) == (7, 5, 2, 40)
    assert p["feedback"] == "random" and m["backend"] == "float" and m["seeds"] == [7, 8, 9]
    assert m["r0_drop"] == []
    assert_png(out / "raster.png")
    assert "results in" in capsys.readouterr().out


def test_train_from_files_lasts_to_the_last_spike(tmp_path, capsys):
    write_ras(tmp_path / "in.ras", [0.001, 0.700], [0, 1])
    write_ras(tmp_path / "tgt.ras", [0.010], [0])
    rc = main(["train", "--input", str(tmp_path / "in.ras"), "--target", str(tmp_path / "tgt.ras"),
               "--trials", "1", "--backend", "float", "--out", str(tmp_path / "o"),
               "--progress", "never"])
    assert rc == 0, capsys.readouterr().err
    m = load_metrics(tmp_path / "o")
    assert m["task"]["duration_ms"] == 800.0                 # the spike at 700 ms, rounded up
    assert m["params"]["chunk_steps"] == 400                  # two updates per trial


def test_train_from_files_spike_after_the_trial(tmp_path, capsys):
    write_ras(tmp_path / "in.ras", [0.001, 0.700], [0, 1])
    write_ras(tmp_path / "tgt.ras", [0.010], [0])
    rc = main(["train", "--input", str(tmp_path / "in.ras"), "--target", str(tmp_path / "tgt.ras"),
               "--duration-ms", "500", "--trials", "1", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("spikeloop: error: spike times must be before the end of the trial")
    assert "--duration-ms" in err


def test_train_option_before_fig2_is_kept(tmp_path):
    rc = main(["train", "--trials", "2", "fig2", "--seeds", "1", "--n-in", "20",
               "--duration-ms", "100", "--r0-drop", "--out", str(tmp_path), "--progress", "never"])
    assert rc == 0
    m = load_metrics(tmp_path)
    assert m["trials"] == 2 and m["r0_drop"] == [] and m["params"]["chunk_steps"] == 100
    assert m["params"]["n_in"] == 20


# --------------------------------------------------------------------------- train() itself

def small_task(seeds=(0, 1), n_in=20, duration_ms=60.0):
    task = make_fig2(list(seeds), n_in=n_in, duration_ms=duration_ms, n_target_spikes=2)
    return fig2_params(n_in=n_in, duration_ms=duration_ms), task["inputs"], task["targets"]


def test_interrupted_training_keeps_completed_trials(tmp_path, monkeypatch):
    p, x, y = small_task()
    T = x.shape[1]
    real_step = GoldenModel.step
    calls = {"n": 0}

    def step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 3 * T + T // 2:         # in the middle of the 4th trial
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(GoldenModel, "step", step)
    with pytest.raises(KeyboardInterrupt):
        train(p, x, y, seeds=[0, 1], trials=10, out_dir=tmp_path, record_every=0)
    m = load_metrics(tmp_path)
    check_shape(m, trials=3, n_seeds=2)
    assert m["interrupted"] and not m["complete"] and m["trials"] == 10
    assert_png(tmp_path / "learning_curve.png", min_bytes=5_000)
    assert not list(tmp_path.glob(".*tmp*"))      # no temporary files left behind


def test_interrupted_cli_run_exits_130(tmp_path, monkeypatch, capsys):
    def step(self, *a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(GoldenModel, "step", step)
    rc = main(["train", "fig2", "--trials", "5", "--seeds", "1", "--out", str(tmp_path),
               "--progress", "never"])
    assert rc == 130
    assert "interrupted" in capsys.readouterr().err
    m = load_metrics(tmp_path)
    assert m["trials_done"] == 0 and m["interrupted"]


def test_checkpoint_every_n_trials(tmp_path, monkeypatch):
    """A crash that is not an interrupt still leaves the last checkpoint behind."""
    p, x, y = small_task()
    T = x.shape[1]
    real_step = GoldenModel.step
    calls = {"n": 0}

    def step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 5 * T:
            raise RuntimeError("boom")
        return real_step(self, *a, **k)

    monkeypatch.setattr(GoldenModel, "step", step)
    with pytest.raises(RuntimeError):
        train(p, x, y, seeds=[0, 1], trials=10, out_dir=tmp_path, record_every=2)
    m = load_metrics(tmp_path)
    assert m["trials_done"] == 4 and not m["complete"] and not m["interrupted"]


def test_r0_drop_schedule_golden(tmp_path):
    p, x, y = small_task(seeds=(0,))
    m = train(p, x[:1], y, seeds=[0], trials=4, out_dir=tmp_path, plots=False,
              r0_drop=[(1, 2), (2, 3), (3, 10_000)])
    one = p.formats["w"].one
    q0 = p.r0_q
    expected = [q0, q0 // 2, q0 // 2 // 3, 1]
    assert m["per_trial"]["r0_mv"] == pytest.approx([q / one for q in expected], rel=1e-5)
    assert (tmp_path / "metrics.json").exists() and not (tmp_path / "raster.png").exists()


def test_r0_drop_schedule_float(tmp_path):
    p, x, y = small_task(seeds=(0,))
    m = train(p, x, y, seeds=[0], trials=3, backend="float", out_dir=tmp_path, plots=False,
              r0_drop=[(1, 4)])
    assert m["per_trial"]["r0_mv"] == pytest.approx([p.r0_mv, p.r0_mv / 4, p.r0_mv / 4])


def test_shared_inputs_and_seed_independence(tmp_path):
    """A seed's results do not depend on which other seeds share the batch."""
    p, x, y = small_task(seeds=(3, 4))
    both = train(p, x, y, seeds=[3, 4], trials=3, out_dir=tmp_path / "a", plots=False)
    one = train(p, x[1], y, seeds=[4], trials=3, out_dir=tmp_path / "b", plots=False)
    assert [r[1] for r in both["per_trial"]["cost"]] == [r[0] for r in one["per_trial"]["cost"]]


def test_success_bookkeeping_without_targets(tmp_path):
    """No target and no output spikes: cost 0, matched, and a success from the first trial."""
    p = Params(n_in=4, n_out=2, chunk_steps=30, w_init_std_mv=0.0)
    x = np.zeros((30, 4), bool)
    y = np.zeros((30, 2), bool)
    m = train(p, x, y, seeds=[0, 1], trials=2, out_dir=tmp_path, plots=False)
    assert m["per_trial"]["cost"] == [[0.0, 0.0], [0.0, 0.0]]
    assert m["per_trial"]["matched"] == [[True, True], [True, True]]
    assert m["first_success"] == [0, 0] and m["summary"]["n_succeeded"] == 2


def test_progress_line(tmp_path, capsys):
    p, x, y = small_task()
    train(p, x, y, seeds=[0, 1], trials=2, out_dir=tmp_path, plots=False, progress="force")
    err = capsys.readouterr().err
    assert "\rtrial 2/2" in err and "ETA" in err and "succeeded" in err and err.endswith("\n")
    train(p, x, y, seeds=[0, 1], trials=2, out_dir=tmp_path, plots=False, progress=True)
    assert capsys.readouterr().err == ""          # stderr is not a terminal under pytest


@pytest.mark.parametrize("kw, msg", [
    (dict(trials=0), "trials must be a positive integer"),
    (dict(backend="rtl"), "backend must be one of model, float"),
    (dict(seeds=[]), "seeds must hold at least one seed"),
    (dict(r0_drop=[(1, 0)]), "r0_drop factor must be a positive number"),
    (dict(r0_drop=[(-1, 2)]), "r0_drop trial must be a non-negative integer"),
    (dict(seeds=[0, 1, 2]), r"inputs must be shaped \(T, n_in\) or \(3, T, n_in\)"),
])
def test_train_rejects_bad_arguments(tmp_path, kw, msg):
    p, x, y = small_task()
    args = dict(seeds=[0, 1], trials=1, out_dir=tmp_path)
    args.update(kw)
    with pytest.raises(ValueError, match=msg):
        train(p, x, y, **args)


def test_raster_task_honours_the_headers(tmp_path):
    """A target whose highest neurons are silent still gets all its outputs, and a trial that
    ends after its last spike keeps its length."""
    write_ras(tmp_path / "in.ras", [0.001, 0.002], [0, 4], n_neurons=10, duration_s=3.5)
    write_ras(tmp_path / "tgt.ras", [0.010], [0], n_neurons=100)
    p, task = raster_task(tmp_path / "in.ras", tmp_path / "tgt.ras")
    assert (p.n_in, p.n_out) == (10, 100)
    assert task["inputs"].shape == (3500, 10) and task["targets"].shape == (3500, 100)
    assert p.chunk_steps == 500
    p, task = raster_task(tmp_path / "in.ras", tmp_path / "tgt.ras", duration_ms=700.0)
    assert task["inputs"].shape[0] == 700 and p.chunk_steps == 350
    p, _ = raster_task(tmp_path / "in.ras", tmp_path / "tgt.ras", chunk_steps=3500)
    assert p.chunk_steps == 3500


def test_raster_task_refuses_an_id_above_its_header(tmp_path):
    (tmp_path / "in.ras").write_text("# neurons 3\n0.001 3\n")
    write_ras(tmp_path / "tgt.ras", [0.010], [0])
    with pytest.raises(ValueError, match=r"neuron id 3 is not below its '# neurons 3' header"):
        raster_task(tmp_path / "in.ras", tmp_path / "tgt.ras")


@pytest.mark.parametrize("steps, chunk", [(1, 1), (40, 40), (500, 500), (3500, 500), (700, 350),
                                          (1000, 500), (1002, 334), (997, 500), (3499, 500)])
def test_update_chunk(steps, chunk):
    """The longest chunk of 250 to 500 ms that divides the trial; 500 ms when none does
    (in steps of dt = 1 ms; at dt = 0.5 ms, trials up to 1000 steps are one chunk)."""
    assert update_chunk(steps, 1.0) == chunk
    if steps <= 1000:
        assert update_chunk(steps, 0.5) == steps


def test_fig2_schedule_depends_on_the_hidden_layer(tmp_path):
    assert fig2_r0_drop(0) == FIG2_DEFAULTS["r0_drop"]
    assert fig2_r0_drop(4) == FIG2_DEFAULTS["r0_drop_hidden"] != FIG2_DEFAULTS["r0_drop"]
    rc = main(["train", "fig2", "--hidden", "2", "--trials", "1", "--seeds", "1", "--n-in", "20",
               "--duration-ms", "50", "--backend", "float", "--out", str(tmp_path),
               "--progress", "never"])
    assert rc == 0
    assert load_metrics(tmp_path)["r0_drop"] == [list(d) for d in FIG2_DEFAULTS["r0_drop_hidden"]]

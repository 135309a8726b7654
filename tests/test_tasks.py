"""Generated tasks of ``train``: ``train pattern`` (a word written into spike times) and
``train fig4`` (Fig. 2 through 4 hidden neurons, per feedback mode)."""

import csv
import json

import numpy as np
import pytest

from spikeloop.host.cli import FIG4_COLUMNS, main
from spikeloop.host.tasks import (FIG2_DEFAULTS, FIG4_HIDDEN, PATTERN_DEFAULTS, make_pattern,
                                  pattern_params, update_chunk)
from spikeloop.sim.raster import read_ras, read_ras_header, to_dense
from spikeloop.sim.stimuli import frozen_poisson, text_raster


def load_metrics(out):
    return json.loads((out / "metrics.json").read_text())


def _err(capsys):
    return capsys.readouterr().err


# --------------------------------------------------------------------------- pattern

def test_pattern_defaults_are_the_measured_long_trial_task():
    """What docs/learning.md ("Long trials") measured: 100-32-100, symmetric, r0 0.1 mV, a weight
    update every 500 ms of 3.5 s, 10 Hz input of seed 1, the word written by text_raster."""
    p = pattern_params()
    assert (p.n_in, p.n_hidden, p.n_out, p.chunk_steps) == (100, 32, 100, 500)
    assert p.feedback.value == "symmetric" and p.r0_mv == 0.1
    t = make_pattern([0, 1])
    assert t["inputs"].shape == (2, 3500, 100)
    np.testing.assert_array_equal(t["inputs"][1], frozen_poisson(100, 3500, 10.0, 1e-3, 1))
    np.testing.assert_array_equal(t["inputs"][0], t["inputs"][1])
    np.testing.assert_array_equal(t["targets"], text_raster(PATTERN_DEFAULTS["word"], 100, 3500))
    assert t["seeds"] == [0, 1] and t["stimulus_seeds"] == [1, 1]
    assert t["task"] == dict(name="pattern", word="SPIKE", n_in=100, n_out=100, duration_ms=3500.0,
                             rate_hz=10.0, input_seed=1, stimulus_seeds=[1, 1])


@pytest.fixture(scope="module")
def pattern_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pattern")
    rc = main(["train", "pattern", "--word", "hi", "--hidden", "3", "--feedback", "random",
               "--input-seed", "4", "--input-rate-hz", "20", "--duration-ms", "600",
               "--trials", "2", "--seeds", "2", "--backend", "float", "--out", str(out),
               "--progress", "never"])
    return rc, out


def test_train_pattern_writes_metrics(pattern_run):
    rc, out = pattern_run
    assert rc == 0
    m = load_metrics(out)
    assert m["complete"] and m["backend"] == "float" and m["seeds"] == [0, 1] and m["trials"] == 2
    assert m["task"] == dict(name="pattern", word="HI", n_in=100, n_out=100, duration_ms=600.0,
                             rate_hz=20.0, input_seed=4, stimulus_seeds=[4, 4])
    assert m["r0_drop"] == []
    p = m["params"]
    assert (p["n_in"], p["n_hidden"], p["n_out"]) == (100, 3, 100)
    assert p["feedback"] == "random" and p["chunk_steps"] == update_chunk(600, 1.0) == 300
    assert len(m["per_trial"]["cost"]) == 2 and all(len(r) == 2 for r in m["per_trial"]["cost"])
    for name in ("learning_curve.png", "raster.png", "params.json", "traces.npz"):
        assert (out / name).is_file(), name


def test_train_pattern_writes_its_task_with_headers(pattern_run):
    """One input.ras (the seeds share it) and target.ras, each saying its size and length, as
    silent outputs and the trial's end are not in the spikes."""
    _, out = pattern_run
    task = make_pattern([0], word="HI", duration_ms=600.0, rate_hz=20.0, input_seed=4)
    for name, want in (("input.ras", task["inputs"][0]), ("target.ras", task["targets"])):
        assert read_ras_header(out / name) == {"neurons": 100, "duration_s": 0.6}
        t, i = read_ras(out / name)
        np.testing.assert_array_equal(to_dense(t, i, 100, 600, 1e-3), want)
    assert not list(out.glob("input_seed*.ras"))


def test_train_from_files_replays_the_pattern_run(pattern_run, tmp_path):
    _, out = pattern_run
    rc = main(["train", "--input", str(out / "input.ras"), "--target", str(out / "target.ras"),
               "--config", str(out / "params.json"), "--trials", "2", "--seed", "1",
               "--backend", "float", "--out", str(tmp_path), "--progress", "never"])
    assert rc == 0
    a, b = load_metrics(out), load_metrics(tmp_path)
    assert [r[0] for r in b["per_trial"]["cost"]] == [r[1] for r in a["per_trial"]["cost"]]
    assert b["params"] == a["params"]


def test_train_pattern_on_the_board_model(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "pattern", "--backend", "board-model", "--hidden", "2",
               "--duration-ms", "60", "--trials", "1", "--out", str(out), "--progress", "never"])
    assert rc == 0, _err(capsys)
    m = load_metrics(out)
    assert m["trials_done"] == 1 and m["seeds"] == [0] and m["task"]["name"] == "pattern"
    for f in ("manifest.json", "input.ras", "target.ras"):
        assert (out / f).is_file(), f


# --------------------------------------------------------------------------- fig4

@pytest.fixture(scope="module")
def fig4_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fig4")
    rc = main(["train", "fig4", "--feedback", "uniform", "random", "--trials", "2", "--seeds", "2",
               "--backend", "float", "--out", str(out), "--progress", "never"])
    return rc, out


def test_train_fig4_runs_each_mode_through_four_hidden_neurons(fig4_run):
    rc, out = fig4_run
    assert rc == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["random", "uniform"]
    for mode in ("uniform", "random"):
        m = load_metrics(out / mode)
        assert m["params"]["n_hidden"] == FIG4_HIDDEN == 4 and m["params"]["feedback"] == mode
        assert m["task"]["name"] == "fig2" and m["seeds"] == [0, 1] and m["trials"] == 2
        assert m["r0_drop"] == [list(d) for d in FIG2_DEFAULTS["r0_drop_hidden"]]
        assert (out / mode / "input.ras").is_file() and (out / mode / "input_seed1.ras").is_file()


def test_train_fig4_writes_and_prints_its_summary(fig4_run, capsys):
    _, out = fig4_run
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == FIG4_COLUMNS
    assert [r["feedback"] for r in rows] == ["uniform", "random"]
    for r in rows:
        m = load_metrics(out / r["feedback"])
        last = m["per_trial"]["cost"][-1]
        assert int(r["n_seeds"]) == 2 and int(r["n_succeeded"]) == m["summary"]["n_succeeded"]
        assert float(r["final_cost_mean"]) == pytest.approx(np.mean(last))
        assert float(r["final_cost_sd"]) == pytest.approx(np.std(last))
        assert float(r["final_rel_cost_mean"]) == pytest.approx(m["summary"]["final_rel_cost_mean"])
        assert r["first_success_mean"] == ("" if m["summary"]["first_success_mean"] is None
                                           else str(m["summary"]["first_success_mean"]))


def test_train_fig4_table_on_stdout(tmp_path, capsys):
    rc = main(["train", "fig4", "--feedback", "symmetric", "--trials", "1", "--seeds", "1",
               "--backend", "float", "--out", str(tmp_path), "--progress", "never"])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("feedback "))
    assert lines[head].split() == ["feedback", "succeeded", "first", "success", "final", "cost",
                                   "final", "/", "first"]
    assert lines[head + 1].split()[:4] == ["symmetric", "0", "/", "1"]
    assert lines[-1] == f"summary in {tmp_path / 'summary.csv'}; each mode's run in {tmp_path}/MODE/"


def test_train_fig4_on_the_board_model(tmp_path, capsys):
    rc = main(["train", "fig4", "--feedback", "uniform", "--backend", "board-model", "--trials", "1",
               "--out", str(tmp_path), "--progress", "never"])
    assert rc == 0, _err(capsys)
    assert load_metrics(tmp_path / "uniform")["params"]["n_hidden"] == 4
    assert (tmp_path / "summary.csv").read_text().splitlines()[1].startswith("uniform,1,")


# --------------------------------------------------------------------------- option errors

@pytest.mark.parametrize("argv, msg", [
    (["train", "pattern", "--word", "HI!"], "argument --word: must be letters A-Z and spaces, not 'HI!'"),
    (["train", "pattern", "--word", ""], "argument --word: must be letters A-Z and spaces, not ''"),
    (["train", "--input", "in.ras", "pattern"],
     "--input does not apply to 'train pattern' (the task is generated)"),
    (["train", "pattern", "--input-rate-hz", "0"], "argument --input-rate-hz: must be a positive number"),
    (["train", "pattern", "--duration-ms", "0.5"],
     "duration must be a whole number of steps of dt = 1 ms, not 0.5 ms"),
    (["train", "pattern", "--backend", "rtl", "--seeds", "2"],
     "a board backend trains one network per run: --seeds must be 1, not 2"),
    (["train", "fig4", "--feedback", "none"], "argument --feedback: invalid choice: 'none'"),
    (["train", "--hidden", "8", "fig4"],
     "--hidden does not apply to 'train fig4' (it trains 4 hidden neurons afresh per feedback mode)"),
    (["train", "fig4", "--resume", "run"],
     "--resume does not apply to 'train fig4' (it trains 4 hidden neurons afresh per feedback mode)"),
    (["train", "--target", "t.ras", "fig4"],
     "--target does not apply to 'train fig4' (the task is generated)"),
    (["train", "fig4", "--backend", "board-model", "--seeds", "2"],
     "a board backend trains one network per run: --seeds must be 1, not 2"),
])
def test_task_option_errors(argv, msg, tmp_path, capsys):
    assert main(argv + ["--out", str(tmp_path / "x")]) == 2
    assert f"error: {msg}" in _err(capsys)


@pytest.mark.parametrize("words", [["train", "pattern"], ["train", "fig4"]])
def test_task_help(words, capsys):
    assert main(words + ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: spikeloop {' '.join(words)}")
    if words[1] == "pattern":
        assert "(default SPIKE)" in out and "(default 32)" in out and "(default 150)" in out
    else:
        assert "(default: symmetric random uniform)" in out and "--hidden" not in out

"""spikeloop compare on every task: fig2, pattern, xor (a new stimulus every trial, host errors)
and a stimulus given as .ras files; identical between two backends that run the golden model."""

import json

import numpy as np
import pytest

from spikeloop.host.board import Board
from spikeloop.host.cli import main
from spikeloop.host.record import RunRecord
from spikeloop.sim.raster import write_ras

BASE = ["--trials", "2", "--progress", "never", "--trace-every", "0"]


def _compare(tmp_path, capsys, *argv):
    rc = main(["compare", "--backends", "model,board-model", "--out", str(tmp_path), *BASE, *argv])
    out = capsys.readouterr().out
    return rc, out


def test_compare_pattern_is_identical(tmp_path, capsys):
    rc, out = _compare(tmp_path, capsys, "--task", "pattern", "--duration-ms", "30", "--hidden", "4")
    assert rc == 0, out
    assert out.splitlines()[0] == "identical"
    res = json.loads((tmp_path / "compare.json").read_text())
    rec = RunRecord.open(tmp_path / res["runs"][0])
    assert rec.manifest["task"]["name"] == "pattern" and rec.targets.shape == (30, 100)
    assert rec.manifest["params"]["n_hidden"] == 4


def test_compare_xor_is_identical_and_runs_a_new_stimulus_every_trial(tmp_path, capsys):
    rc, out = _compare(tmp_path, capsys, "--task", "xor", "--n-in", "12", "--feedback", "random")
    assert rc == 0, out
    res = json.loads((tmp_path / "compare.json").read_text())
    rec = RunRecord.open(tmp_path / res["runs"][1])
    m = rec.manifest
    assert m["task"]["name"] == "xor" and m["options"]["error_mode"] == "host"
    assert m["options"]["feedback_latency"] == 5 and m["params"]["feedback"] == "random"
    assert rec.read_trial(0)["errors"].shape == (400, 2)
    assert (tmp_path / "compare.png").is_file()


def test_compare_xor_finds_a_divergence(tmp_path, capsys, monkeypatch):
    """One output weight a LSB off on one side: compare says where (before any step)."""
    import spikeloop.host.compare as cmp

    def opener(backend, params):
        b = Board.open("board-model", params=params)
        if backend == "rtl":
            load = b.load_weights

            def perturbed(weights, feedback=None):
                w = [np.array(a) for a in weights]
                w[-1][1, 2] += 1
                load(w, feedback)
            b.load_weights = perturbed
        return b
    monkeypatch.setattr(cmp, "open_board", opener)
    rc = main(["compare", "--backends", "board-model,rtl", "--out", str(tmp_path), *BASE,
               "--task", "xor", "--n-in", "12", "--trials", "1"])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert out.startswith("first divergence: out.w[1, 2] at the snapshot after 0 trials")


def test_compare_files_is_identical(tmp_path, capsys):
    rng = np.random.default_rng(3)
    t, i = np.nonzero(rng.random((80, 10)) < 0.05)
    write_ras(tmp_path / "in.ras", t / 1000.0, i, n_neurons=10, duration_s=0.08)
    write_ras(tmp_path / "tgt.ras", np.array([0.02, 0.05]), np.array([0, 1]), n_neurons=2,
              duration_s=0.08)
    rc, out = _compare(tmp_path / "run", capsys, "--input", str(tmp_path / "in.ras"),
                       "--target", str(tmp_path / "tgt.ras"), "--hidden", "3")
    assert rc == 0, out
    res = json.loads((tmp_path / "run" / "compare.json").read_text())
    m = RunRecord.open(tmp_path / "run" / res["runs"][0]).manifest
    assert m["task"]["name"] == "files" and m["params"]["n_in"] == 10 and m["params"]["n_hidden"] == 3


@pytest.mark.parametrize("argv, msg", [
    (["--task", "xor", "--duration-ms", "50"], "--duration-ms does not apply to the xor task"),
    (["--task", "xor", "--error-mode", "target"], "--error-mode must be host"),
    (["--task", "pattern", "--n-target-spikes", "3"], "--n-target-spikes does not apply to the pattern task"),
    (["--task", "fig2", "--hidden", "3"], "--hidden does not apply to the fig2 task"),
    (["--task", "pattern", "--input", "a.ras", "--target", "b.ras"], "do not go with --task pattern"),
    (["--input", "a.ras"], "needs both --input and --target"),
    (["--input", "nope.ras", "--target", "nope.ras"], "--input: no such file: nope.ras"),
    (["--task", "braille"], "argument --task: invalid choice: 'braille'"),
])
def test_compare_task_errors_are_clean(argv, msg, tmp_path, capsys):
    assert main(["compare", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("argv", [
    ["--task", "xor", "--n-in", "12"],
    pytest.param(["--task", "pattern", "--duration-ms", "40", "--hidden", "4"], marks=pytest.mark.heavy),
])
def test_compare_on_the_rtl_backend_is_identical(argv, tmp_path, capsys):
    """The gateware (Verilator) against the golden model behind the protocol, on a short run of
    pattern and of xor (host errors 5 steps late: the σ'/ẑ delay lines of the RTL)."""
    pytest.importorskip("spikeloop.hdl.soc")
    rc = main(["compare", "--backends", "rtl,board-model", "--out", str(tmp_path), *BASE, *argv])
    out = capsys.readouterr().out
    assert rc == 0, out

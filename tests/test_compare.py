"""spikeloop compare: the same HIL run on two backends, and the first divergence between them."""

import json

import numpy as np
import pytest

from spikeloop.host.board import Board
from spikeloop.host.cli import main
from spikeloop.host.compare import compare_backends, diff_records, format_divergence, run_dir_name
from spikeloop.host.hil import hil_params
from spikeloop.host.record import RunRecord
from spikeloop.host.tasks import fig2_params, make_fig2
from spikeloop.params import Params

N_IN, DUR_MS, TRIALS = 30, 60.0, 3
#: The weight perturbed on one board: output 0, input 7, by one LSB.
PERTURB = (0, 7)


def setup():
    p = hil_params(fig2_params(Params(w_init_std_mv=0.5, r0_mv=0.3), n_in=N_IN, duration_ms=DUR_MS))
    t = make_fig2([0], n_in=N_IN, duration_ms=DUR_MS, n_target_spikes=2, rate_hz=50.0)
    return p, t["inputs"][0], t["targets"]


class PerturbedBoard:
    """A board whose loaded weight ``PERTURB`` is one LSB off: a stand-in for a faulty device."""

    def __init__(self, board):
        self._board = board

    def __getattr__(self, name):
        return getattr(self._board, name)

    def load_weights(self, weights, feedback=None):
        w = [np.array(a) for a in weights]
        w[-1][PERTURB] += 1
        self._board.load_weights(w, feedback)


def opener(perturb=()):
    def open_(backend, params):
        b = Board.open("board-model", params=params)
        return PerturbedBoard(b) if backend in perturb else b
    return open_


def test_same_backend_twice_is_identical(tmp_path):
    p, x, y = setup()
    res = compare_backends(["board-model", "board-model"], p, x, y, seed=0, trials=TRIALS,
                           out_dir=tmp_path, opener=opener())
    assert res["identical"] and res["first"] is None
    assert format_divergence(res["first"], res["backends"]) == "identical"
    assert (tmp_path / "compare.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "compare.json").read_text())["identical"] is True
    for d in res["runs"]:
        assert RunRecord.open(tmp_path / d).trials_done() == TRIALS


def test_perturbed_weight_is_the_first_divergence(tmp_path):
    p, x, y = setup()
    res = compare_backends(["board-model", "rtl"], p, x, y, seed=0, trials=TRIALS, out_dir=tmp_path,
                           opener=opener(perturb=("rtl",)))
    d = res["first"]
    assert not res["identical"]
    assert d["variable"] == "out.w" and tuple(d["index"]) == PERTURB
    assert d["step"] == -1 and d["where"] == "snapshot after 0 trials"   # before any step
    assert d["b"] == d["a"] + 1
    line = format_divergence(d, res["backends"])
    assert line.startswith("first divergence: out.w[0, 7] at the snapshot after 0 trials")
    assert (tmp_path / "compare.png").is_file()


def test_divergence_in_the_outputs_is_located_to_the_step(tmp_path):
    """With the initial snapshots equal, a difference shows first where a spike differs."""
    p, x, y = setup()
    compare_backends(["board-model", "board-model"], p, x, y, seed=0, trials=TRIALS,
                     out_dir=tmp_path, opener=opener(), plots=False)
    a, b = (RunRecord.open(tmp_path / run_dir_name(t, "board-model")) for t in "ab")
    T = x.shape[0]
    tr = b.read_trial(1)
    tr["outputs"][17, 0] = ~tr["outputs"][17, 0]
    b.write_trial(1, tr["outputs"], traces=tr["traces"])
    d = diff_records(a, b)
    assert (d["variable"], d["index"], d["step"], d["trial"], d["step_in_trial"]) == \
        ("outputs", (0,), T + 17, 1, 17)


def test_trace_divergence_precedes_a_later_snapshot(tmp_path):
    p, x, y = setup()
    compare_backends(["board-model", "board-model"], p, x, y, seed=0, trials=TRIALS,
                     out_dir=tmp_path, opener=opener(), plots=False)
    a, b = (RunRecord.open(tmp_path / run_dir_name(t, "board-model")) for t in "ab")
    tr = b.read_trial(2)
    tr["traces"]["out.U"][5, 0] += 1
    b.write_trial(2, tr["outputs"], traces=tr["traces"])
    snap = b.read_snapshot(3)
    snap["state"]["out.m"][0, 0, 3] += 1
    b.write_snapshot(3, snap["state"], snap["registers"], snap["host"])
    d = diff_records(a, b)
    assert (d["variable"], d["index"], d["step"]) == ("trace:out.U", (0,), 2 * x.shape[0] + 5)


def test_compare_needs_two_backends(tmp_path):
    p, x, y = setup()
    with pytest.raises(ValueError, match="compare needs exactly two backends, not 1"):
        compare_backends(["board-model"], p, x, y, seed=0, trials=1, out_dir=tmp_path)


# --------------------------------------------------------------------------- the command

def test_cli_compare_identical_exits_0(tmp_path, capsys):
    rc = main(["compare", "--backends", "board-model,board-model", "--trials", "2", "--n-in", "20",
               "--duration-ms", "40", "--out", str(tmp_path), "--progress", "never", "--neuron", "0"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.splitlines()[0] == "identical"
    assert (tmp_path / "compare.png").is_file()


def test_cli_compare_divergence_exits_1(tmp_path, capsys, monkeypatch):
    import spikeloop.host.compare as cmp
    monkeypatch.setattr(cmp, "open_board", opener(perturb=("rtl",)))
    rc = main(["compare", "--backends", "board-model,rtl", "--trials", "2", "--n-in", "20",
               "--duration-ms", "40", "--out", str(tmp_path), "--progress", "never"])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert out.startswith("first divergence: out.w[0, 7] at the snapshot after 0 trials (step -1): "
                          "board-model ")


@pytest.mark.parametrize("argv, msg", [
    (["--backends", "rtl"], "must be two backends A,B (e.g. rtl,board-model), not 'rtl'"),
    (["--backends", "rtl,float"], "must be rtl, board-model or serial:PORT, not 'float'"),
    (["--feedback-latency", "3"], "--feedback-latency applies to --error-mode host only"),
    (["--neuron", "1"], "--neuron must be below n_out = 1, not 1"),
    (["--trials", "0"], "argument --trials: must be a positive integer, not '0'"),
])
def test_cli_compare_errors_are_clean(argv, msg, tmp_path, capsys):
    assert main(["compare", "--out", str(tmp_path)] + argv) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


class LateFaultBoard(PerturbedBoard):
    """Loads the right weights, then one weight goes one LSB off after the first trial."""

    def load_weights(self, weights, feedback=None):
        self._board.load_weights(weights, feedback)

    def run(self, inputs, targets=None, errors=None):
        if int(self._board.read_reg("STEP_COUNT")) == self._T:
            w = self._board.read_mem("out.w")
            w[PERTURB[1]] += 1
            self._board.write_mem("out.w", w)
        return self._board.run(inputs, targets=targets, errors=errors)


def test_untraced_divergent_trial_is_replayed_for_the_plot(tmp_path):
    p, x, y = setup()

    def open_(backend, params):
        b = Board.open("board-model", params=params)
        if backend == "rtl":
            b = LateFaultBoard(b)
            b._T = x.shape[0]
        return b
    res = compare_backends(["board-model", "rtl"], p, x, y, seed=0, trials=4, out_dir=tmp_path,
                           trace_every=0, opener=open_)
    d = res["first"]
    assert (d["variable"], tuple(d["index"]), d["where"]) == ("out.w", PERTURB, "snapshot after 2 trials")
    assert d["trial"] == 1 and res["replayed_trial"] == 1
    assert RunRecord.open(tmp_path / res["runs"][0]).read_trial(1)["traces"] == {}   # not traced
    assert json.loads((tmp_path / "compare.json").read_text())["replayed_trial"] == 1


def test_replay_reproduces_a_recorded_trace(tmp_path):
    from spikeloop.host.hil import replay_trial
    p, x, y = setup()
    compare_backends(["board-model", "board-model"], p, x, y, seed=0, trials=4, out_dir=tmp_path,
                     snapshot_every=2, opener=opener(), plots=False, r0_drop=[(3, 2)])
    rec = RunRecord.open(tmp_path / run_dir_name("a", "board-model"))
    with Board.open("board-model", params=p) as b:
        got = replay_trial(b, rec, 3)
    want = rec.read_trial(3)
    assert np.array_equal(got["outputs"], want["outputs"])
    assert np.array_equal(got["traces"]["out.U"], want["traces"]["out.U"])
    assert got["traces"]["out.U"].any()

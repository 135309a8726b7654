"""The XOR task (SuperSpike Fig. 5): stimulus, the host's error rule, scoring, and training on
the golden model in-process and behind the protocol."""

import json

import numpy as np
import pytest

from spikeloop.host.cli import main
from spikeloop.host.hil import HostErrorFilter, hil_train, open_board
from spikeloop.host.record import RunRecord
from spikeloop.host.xor import (XorErrorFilter, XorScorer, XorStimulus, stimulus_from_task,
                                train_xor, xor_impulses, xor_params, xor_stimulus_seed, xor_task)

N_IN = 12          # small networks: the tests check the plumbing, docs/learning.md the learning


def test_stimulus_is_reproducible_and_shaped_as_described():
    a, b = XorStimulus(7), XorStimulus(7)
    xa, wa = a.trial(3)
    xb, wb = b.trial(3)
    assert np.array_equal(xa, xb) and np.array_equal(wa, wb)
    assert xa.shape == (400, 100) and wa.shape == (400, 2)
    assert not np.array_equal(XorStimulus(8).times, a.times)        # another seed, other times
    orders = {tuple(a.order(k)) for k in range(20)}
    assert len(orders) > 3 and all(sorted(o) == [0, 1, 2, 3] for o in orders)
    for j, pat in enumerate(a.order(3)):
        on = j * 100
        burst = xa[on:on + 10]
        # every input of the active groups fires exactly once in the pattern window, at its time
        assert np.array_equal(burst.sum(axis=0), a.active(pat).astype(int))
        idx = np.flatnonzero(a.active(pat))
        assert burst[a.times[idx], idx].all()
        # the response window of the pattern's class, 10..25 ms after the onset
        c = XorStimulus.label(pat)
        assert wa[on + 10:on + 25, c].all() and not wa[on:on + 10].any()
        assert not wa[on + 10:on + 25, 1 - c].any() and not wa[on + 25:on + 100].any()
    assert np.array_equal(a.group[a.active(0)], np.zeros(34))       # 00: the reference only
    assert [XorStimulus.label(p) for p in range(4)] == [0, 1, 1, 0]
    # background noise between the patterns only, near 4 Hz
    rate = xa.copy()
    for j in range(4):
        rate[j * 100:j * 100 + 10] = False
    assert 0 < rate.sum() < 3 * 4 * 0.36 * 100


def test_stimulus_seed_is_derived_and_the_task_rebuilds_it():
    assert xor_stimulus_seed(0) != 0 and xor_stimulus_seed(0) != xor_stimulus_seed(1)
    task = xor_task([3, 4], n_in=N_IN)
    s = stimulus_from_task(task, 1)
    assert s.seed == xor_stimulus_seed(4) and s.n_in == N_IN
    assert np.array_equal(s.trial(2)[0], XorStimulus(xor_stimulus_seed(4), n_in=N_IN).trial(2)[0])
    assert json.loads(json.dumps(task)) == task


@pytest.mark.parametrize("kw, msg", [
    (dict(n_in=2), "at least 3 inputs"),
    (dict(window_start_ms=80.0, window_ms=20.0), "must end before the slot"),
    (dict(pattern_ms=2.5), "whole number of steps"),
])
def test_bad_geometry_is_refused(kw, msg):
    with pytest.raises(ValueError, match=msg):
        XorStimulus(0, **kw)


def _hand_made():
    """Windows: output 0 at steps 5..9, output 1 at 15..19 (exclusive ends 10 and 20)."""
    w = np.zeros((30, 2), bool)
    w[5:10, 0] = True
    w[15:20, 1] = True
    s = np.zeros((30, 2), bool)
    s[7, 0] = True           # right output in its window: no error
    s[8, 0] = True           # a second spike in the window: no error either
    s[3, 1] = True           # output 1 outside its window: wrong
    s[12, 0] = True          # output 0 after its window: wrong
    return w, s              # output 1 misses its window 15..19


def test_error_rule_on_hand_made_spike_trains():
    w, s = _hand_made()
    imp = xor_impulses(w, s)
    want = np.zeros((30, 2), int)
    want[3, 1] = -1          # wrong spike -> negative at that step
    want[12, 0] = -1
    want[20, 1] = +1         # missed window -> positive at its end
    assert np.array_equal(imp, want)
    # output 0 fired in its window: nothing at its end; a silent network only misses windows
    silent = xor_impulses(w, np.zeros_like(s))
    assert silent[10, 0] == 1 and silent[20, 1] == 1 and np.abs(silent).sum() == 2
    # a spike at the step a window closes is outside it (and the window still counts as missed)
    late = np.zeros_like(s)
    late[10, 0] = True
    assert xor_impulses(w, late)[10, 0] == 0          # +1 (missed) -1 (wrong)
    assert xor_impulses(w, late)[20, 1] == 1


@pytest.mark.parametrize("latency", [0, 1, 4])
def test_error_filter_is_the_boards_filter_of_the_impulses(latency):
    """The filtered error is the on-chip filter of Fig. 2 (HostErrorFilter) with the impulses for
    target − output, ``L = max(D, 1)`` steps late; batches of at most L steps give the same."""
    w, s = _hand_made()
    p = xor_params(n_in=N_IN, feedback_latency=latency)
    imp = xor_impulses(w, s)
    ours, ref = XorErrorFilter(p), HostErrorFilter(p)
    L = ours.latency
    got, exp = [], []
    for a in range(0, 30, L):
        n = min(L, 30 - a)
        got.append(ours.take(n))
        exp.append(ref.take(n))
        ours.feed(w[a:a + n], s[a:a + n])
        ref.feed(imp[a:a + n] > 0, imp[a:a + n] < 0)
    got, exp = np.concatenate(got), np.concatenate(exp)
    assert np.array_equal(got, exp)
    assert not got[:L].any()                               # nothing is known before L steps
    assert got[3 + L, 1] < 0 and got[12 + L, 0] < 0            # a wrong spike pushes down
    assert got[20 + L, 1] > got[19 + L, 1]                      # a missed window pushes up
    assert got[7 + L, 0] == 0                              # the right spike left no error
    with pytest.raises(ValueError, match=f"must hold 1..{L} steps"):
        ours.take(L + 1)
    st = ours.state()
    other = XorErrorFilter(p)
    other.restore(st)
    assert all(np.array_equal(other.state()[k], v) for k, v in st.items())


def test_scorer_counts_patterns_classified_right():
    st = XorStimulus(1, n_in=N_IN)
    sc = XorScorer([st, st, st])
    w = st.windows(0)
    right = w.copy()                  # every window answered by its class's output only
    both = w | w[:, ::-1]             # both outputs fire in every window
    one = right.copy()
    j = int(np.flatnonzero(st.order(0) == 3)[0])    # pattern 11 (class 0) wrongly answered by 1
    one[j * 100 + 10:j * 100 + 25] = [False, True]
    sc.add(np.stack([right, both, one]), 0.1)
    assert sc.hist["accuracy"][0] == [1.0, 0.0, 0.75]
    assert sc.hist["correct"][0][2] == [True, True, True, False]
    assert sc.hist["wrong_spikes"][0] == [0, 60, 15]      # 4 windows x 15 steps
    assert sc.first_success == [0, None, None]
    s = sc.summary(1.0)
    assert s["final_accuracy"] == [1.0, 0.0, 0.75] and s["n_succeeded"] == 1


def test_model_and_board_model_train_the_same_network(tmp_path):
    """The host's error loop on the in-process model and on the golden model behind the protocol
    (batches of the feedback latency): the same spikes every trial, the same weights after."""
    p = xor_params(n_in=N_IN, w_init_mean_mv=8.0, w_init_std_mv=3.0, w_max_mv=30.0, r0_mv=0.5)
    seed, trials = 1, 3
    m = train_xor(p, seeds=[0, seed], trials=trials, out_dir=tmp_path / "model", plots=False)
    task = xor_task([seed], dt_ms=p.dt_ms, n_in=N_IN)
    x, w = stimulus_from_task(task).trial(0)
    with open_board("board-model", p) as b:
        h = hil_train(b, p, x, w, seed=seed, trials=trials, out_dir=tmp_path / "hil",
                      backend="board-model", error_mode="host", task=task, snapshot_every=1,
                      plots=False)
    assert [a[1] for a in m["per_trial"]["n_spikes"]] == [a[0] for a in h["per_trial"]["n_spikes"]]
    assert [a[1] for a in m["per_trial"]["accuracy"]] == [a[0] for a in h["per_trial"]["accuracy"]]
    assert sum(a[1] for a in m["per_trial"]["n_spikes"]) > 0, "no output spike: a weak test"
    rec = RunRecord.open(tmp_path / "hil")
    assert not np.array_equal(rec.read_snapshot(0)["state"]["out.w"],
                              rec.read_snapshot(trials)["state"]["out.w"])
    # every trial ran its own stimulus, and the record holds the errors sent
    for k in range(trials):
        assert rec.read_trial(k)["errors"].any()
    from spikeloop.sim.golden import GoldenModel
    g = GoldenModel(p, seeds=[seed])
    st, filt = stimulus_from_task(task), XorErrorFilter(p)
    for k in range(trials):
        xs, ws = st.trial(k)
        for n in range(len(xs)):
            s = g.step(xs[n], error=filt.take(1)[0])
            filt.feed(ws[n:n + 1], s)
        assert np.array_equal(g.layers[-1].S[0], rec.read_trial(k)["outputs"][-1])
    assert np.array_equal(g.weights[-1][0], rec.read_snapshot(trials)["state"]["out.w"].reshape(2, -1))


def test_cli_train_xor_model_and_board_model(tmp_path, capsys):
    rc = main(["train", "xor", "--trials", "2", "--seeds", "2", "--n-in", str(N_IN),
               "--configs", "symmetric-reg", "no-hidden", "--out", str(tmp_path / "m"),
               "--progress", "never"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "symmetric-reg" in out and "no-hidden" in out and "accuracy" in out
    csv = (tmp_path / "m" / "summary.csv").read_text().splitlines()
    assert csv[0].startswith("config,n_hidden,feedback,regulariser") and len(csv) == 3
    m = json.loads((tmp_path / "m" / "no-hidden" / "metrics.json").read_text())
    assert m["params"]["n_hidden"] == 0 and m["task"]["name"] == "xor"
    assert len(m["per_trial"]["accuracy"]) == 2 and len(m["per_trial"]["accuracy"][0]) == 2
    assert (tmp_path / "m" / "symmetric-reg" / "learning_curve.png").stat().st_size > 5000
    rc = main(["train", "xor", "--trials", "2", "--backend", "board-model", "--n-in", str(N_IN),
               "--out", str(tmp_path / "b"), "--progress", "never"])
    assert rc == 0
    assert "XOR task (Fig. 5)" in capsys.readouterr().out
    m = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert m["error_mode"] == "host" and m["feedback_latency"] == 5
    assert (tmp_path / "b" / "raster.png").is_file()


@pytest.mark.parametrize("argv, msg", [
    (["--configs", "foo"], "--configs must name configurations of symmetric"),
    (["--configs", "all", "--hidden", "3"], "--hidden sets up a single run"),
    (["--backend", "float"], "runs on the 'model' backend or a board backend"),
    (["--backend", "board-model", "--seeds", "2"], "--seeds must be 1, not 2"),
    (["--snapshot-every", "3"], "--snapshot-every applies to the board backends"),
    (["--hidden", "0", "--regulariser"], "regulariser acts on the hidden layer"),
    (["--n-in", "2"], "at least 3 inputs"),
])
def test_cli_train_xor_errors_are_clean(argv, msg, tmp_path, capsys):
    assert main(["train", "xor", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_cli_train_before_xor_options_are_checked(tmp_path, capsys):
    assert main(["train", "--tol-ms", "2", "xor", "--out", str(tmp_path)]) == 2
    assert "--tol-ms does not apply to 'train xor'" in capsys.readouterr().err


def test_help_texts(capsys):
    assert main(["train", "xor", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--configs NAME" in out and "no-hidden" in out
    assert main(["compare", "--help"]) == 0
    assert "--task {fig2,pattern,xor}" in capsys.readouterr().out

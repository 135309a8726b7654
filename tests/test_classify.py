"""Classification tasks (``train braille``, ``train randman``): encoder, splits, generator,
scoring, and short end-to-end runs on the golden model and on the model board."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from spikeloop.host import classify as C
from spikeloop.host.cli import main

REPO = Path(__file__).resolve().parents[1]


def _braille_file():
    """The Braille archive: $SPIKELOOP_BRAILLE, else the documented location next to the repo."""
    env = os.environ.get(C.BRAILLE_ENV)
    for p in ([Path(env)] if env else []) + [REPO / C.BRAILLE_DEFAULTS["data"],
                                             Path.cwd() / C.BRAILLE_DEFAULTS["data"]]:
        if p.is_file():
            return p
    return None


BRAILLE = _braille_file()
needs_braille = pytest.mark.skipif(
    BRAILLE is None, reason=f"braille_taxels.npz not found (set {C.BRAILLE_ENV} or put it at "
                            f"{C.BRAILLE_DEFAULTS['data']} relative to the repository)")


# --------------------------------------------------------------------------- encoder

def test_sigma_delta_by_hand():
    """One channel, threshold 2, two steps per frame, frames 0, 5, 5, 1.

    The reference starts at 0. Frame 1 (value 5): step 2 ON (ref 2), step 3 ON (ref 4); frame 2
    (5 - 4 = 1 < 2): nothing; frame 3 (value 1, 4 - 1 = 3): step 6 OFF (ref 2), step 7 (2 - 1 =
    1 < 2) nothing. With length 3, frame 3 holds frame 2's 5: no OFF event."""
    sig = np.array([[0.0], [5.0], [5.0], [1.0]])
    ev = C.sigma_delta(sig, 2.0, 2, length=3)
    assert ev.shape == (8, 2)
    on, off = np.flatnonzero(ev[:, 0]), np.flatnonzero(ev[:, 1])
    assert on.tolist() == [2, 3] and off.tolist() == []
    ev = C.sigma_delta(sig, 2.0, 2)
    assert np.flatnonzero(ev[:, 0]).tolist() == [2, 3]
    assert np.flatnonzero(ev[:, 1]).tolist() == [6]
    # two channels interleave ON/OFF per channel; a batch of recordings gives the same per row
    two = np.array([[0.0, 9.0], [0.0, 6.0]])
    ev = C.sigma_delta(two, 3.0, 1)
    assert ev[1].tolist() == [False, False, False, True]          # channel 1 OFF at step 1
    batch = C.sigma_delta(np.stack([sig, sig * 0]), 2.0, 2, length=np.array([3, 4]))
    np.testing.assert_array_equal(batch[0], C.sigma_delta(sig, 2.0, 2, length=3))
    assert not batch[1].any()
    np.testing.assert_array_equal(C.sigma_delta(sig, 2.0, 2), C.sigma_delta(sig, 2.0, 2))


def test_sigma_delta_rejects_bad_settings():
    with pytest.raises(ValueError, match="threshold must be a positive number, not 0"):
        C.sigma_delta(np.zeros((3, 1)), 0, 1)
    with pytest.raises(ValueError, match="frame_steps must be a positive integer, not 0"):
        C.sigma_delta(np.zeros((3, 1)), 1.0, 0)


# --------------------------------------------------------------------------- splits

def test_braille_split_is_stratified_and_fixed():
    labels = np.repeat(np.arange(3), 50)
    reps = np.tile(np.arange(50), 3)
    tr, te = C.braille_split(reps, 40)
    assert len(tr) == 120 and len(te) == 30
    assert np.bincount(labels[te]).tolist() == [10, 10, 10]
    assert set(reps[te]) == set(range(40, 50)) and set(reps[tr]) == set(range(40))
    tr2, va = C.braille_split(reps, 30, (30, 40))
    assert set(reps[va]) == set(range(30, 40)) and not set(va) & set(te)
    np.testing.assert_array_equal(C.braille_split(reps, 40)[1], te)


def test_stratified_split_seeded():
    labels = np.repeat(np.arange(4), [10, 10, 20, 5])
    tr, te = C.stratified_split(labels, 0.2, seed=3)
    assert np.bincount(labels[te]).tolist() == [2, 2, 4, 1]
    assert not set(tr) & set(te) and len(tr) + len(te) == len(labels)
    tr2, te2 = C.stratified_split(labels, 0.2, seed=3)
    np.testing.assert_array_equal(te, te2)
    assert not np.array_equal(te, C.stratified_split(labels, 0.2, seed=4)[1])
    with pytest.raises(ValueError, match=r"test fraction must be in \(0, 1\), not 1.5"):
        C.stratified_split(labels, 1.5, 0)


# --------------------------------------------------------------------------- randman

def test_randman_reproducible_per_seed_and_different_across_seeds():
    kw = dict(n_in=6, classes=3, dim=2, samples_per_class=8, window_steps=20, tail_steps=5)
    a, la = C.make_randman(7, **kw)
    b, lb = C.make_randman(7, **kw)
    c, _ = C.make_randman(8, **kw)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert a.shape == (24, 25, 6) and la.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    assert not np.array_equal(a, c)
    assert (a.sum(axis=1) == 1).all()                 # every input fires once per sample...
    assert not a[:, 20:].any()                        # ... inside the window
    # the classes are different manifolds: class means of the spike times differ
    times = a.argmax(axis=1).astype(float)
    means = [times[la == k].mean(axis=0) for k in range(3)]
    assert not np.allclose(means[0], means[1])
    with pytest.raises(ValueError, match="randman classes must be an integer >= 2, not 1"):
        C.make_randman(0, **{**kw, "classes": 1})


# --------------------------------------------------------------------------- scoring

def test_predict_accuracy_confusion_by_hand():
    counts = np.array([[3, 1, 0],     # -> 0
                       [0, 0, 0],     # no spike -> none
                       [2, 2, 1],     # tie -> none
                       [0, 1, 4],     # -> 2
                       [5, 0, 1]])    # -> 0
    labels = np.array([0, 1, 1, 1, 2])
    pred = C.predict(counts)
    assert pred.tolist() == [0, C.NONE, C.NONE, 2, 0]
    assert C.accuracy(pred, labels) == pytest.approx(1 / 5)
    m = C.confusion(pred, labels, 3)
    assert m.tolist() == [[1, 0, 0, 0],
                          [0, 0, 1, 2],
                          [1, 0, 0, 0]]


def test_class_targets():
    y = C.class_targets(3, 12, 2, 4)
    assert y.shape == (3, 12, 3)
    assert np.flatnonzero(y[1, :, 1]).tolist() == [2, 6, 10]
    assert y[1].sum() == 3 and not y[1][:, [0, 2]].any()


# --------------------------------------------------------------------------- braille data

@needs_braille
def test_braille_task_from_the_archive():
    t = C.make_braille_task(BRAILLE)
    assert t["inputs"].shape == (1350, 77 * C.BRAILLE_DEFAULTS["frame_steps"], 24)
    assert t["inputs"].dtype == bool and t["inputs"].any()
    assert len(t["train"]) == 27 * 40 and len(t["test"]) == 27 * 10
    assert np.bincount(t["labels"][t["test"]]).tolist() == [10] * 27
    assert t["task"]["chance"] == pytest.approx(1 / 27)
    # deterministic
    np.testing.assert_array_equal(C.make_braille_task(BRAILLE)["inputs"], t["inputs"])


def test_missing_braille_file_says_where_and_how(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(C.BRAILLE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "braille", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "shared/data/braille/braille_taxels.npz" in err
    assert "--data FILE" in err and C.BRAILLE_ENV in err and "Traceback" not in err
    monkeypatch.setenv(C.BRAILLE_ENV, str(tmp_path / "nope.npz"))
    assert main(["train", "braille"]) == 2
    assert f"nope.npz (from ${C.BRAILLE_ENV})" in capsys.readouterr().err
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert main(["train", "braille", "--data", str(tmp_path / "bad.npz")]) == 2
    assert "not the braille archive" in capsys.readouterr().err


def test_bad_options_are_clear(capsys):
    assert main(["train", "--trials", "3", "randman"]) == 2
    assert "--trials does not apply to 'train randman'" in capsys.readouterr().err
    assert main(["train", "randman", "--epochs", "0"]) == 2
    assert "--epochs: must be a positive integer, not '0'" in capsys.readouterr().err
    assert main(["train", "randman", "--backend", "nope"]) == 2
    assert "--backend" in capsys.readouterr().err


# --------------------------------------------------------------------------- end to end

TINY = ["--train-per-class", "2", "--test-per-class", "1", "--epochs", "2", "--hidden", "8",
        "--progress", "never"]


def _check_outputs(out: Path, n_classes: int, n_seeds: int, epochs: int = 2):
    m = json.loads((out / "metrics.json").read_text())
    for f in ("metrics.json", "params.json", "weights.npz", "confusion.csv", "confusion.png",
              "learning_curve.png"):
        assert (out / f).is_file(), f
    assert m["per_epoch"]["epoch"] == list(range(epochs + 1))
    assert len(m["per_epoch"]["test_acc"]) == epochs + 1
    assert all(len(row) == n_seeds for row in m["per_epoch"]["test_acc"])
    rows = list(csv.reader((out / "confusion.csv").open()))
    assert len(rows) == n_classes + 1 and len(rows[0]) == n_classes + 2
    total = sum(int(v) for r in rows[1:] for v in r[1:])
    assert total == n_seeds * m["task"]["n_test"]
    # the confusion's diagonal is the last epoch's test accuracy
    diag = sum(int(rows[1 + k][1 + k]) for k in range(n_classes))
    assert diag == pytest.approx(sum(m["per_epoch"]["test_acc"][-1]) * m["task"]["n_test"], abs=0.01)
    return m


@needs_braille
def test_braille_cli_model_short_run(tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["train", "braille", "--data", str(BRAILLE), "--seeds", "2", "--out", str(out),
                 *TINY]) == 0
    m = _check_outputs(out, 27, 2)
    assert m["backend"] == "model" and m["task"]["encoder"]["channels"] == 24
    assert "test accuracy after 2 epoch(s)" in capsys.readouterr().out


def test_randman_model_equals_board_model(tmp_path):
    """The in-process golden model and the golden model behind the link protocol (per-sample
    RESET_STATE, R0 = 0 while scoring) train to the same weights, bit for bit."""
    runs = {}
    for backend in ("model", "board-model"):
        out = tmp_path / backend
        assert main(["train", "randman", "--backend", backend, "--seeds", "1", "--classes", "3",
                     "--samples-per-class", "10", "--r0-mv", "0.5", "--out", str(out), *TINY]) == 0
        runs[backend] = (_check_outputs(out, 3, 1), np.load(out / "weights.npz"))
    (ma, wa), (mb, wb) = runs["model"], runs["board-model"]
    assert ma["per_epoch"] == mb["per_epoch"]
    for k in ("hid.w", "out.w"):
        np.testing.assert_array_equal(wa[k], wb[k])
    from spikeloop.params import Params
    from spikeloop.sim.golden import init_weights
    w0, _ = init_weights(Params.from_dict(ma["params"]), [0])
    assert (w0[0] != wa["hid.w"]).any()               # it did learn something


def test_randman_float_short_run(tmp_path):
    out = tmp_path / "f"
    assert main(["train", "randman", "--backend", "float", "--seeds", "2", "--classes", "3",
                 "--samples-per-class", "10", "--out", str(out), *TINY]) == 0
    m = _check_outputs(out, 3, 2)
    assert m["backend"] == "float"


def test_frozen_evaluation_leaves_weights_and_matches_r0_zero():
    """Scoring with learning off (the frozen copy) gives the spikes of the normal model run with
    r0 = 0, and the trained model's weights are untouched."""
    from spikeloop.sim.golden import GoldenModel
    x, labels = C.make_randman(2, n_in=10, classes=2, dim=1, samples_per_class=3,
                               window_steps=20, tail_steps=10)
    p = C.classify_params(C.RANDMAN_DEFAULTS, 10, 2, 30, n_hidden=6)
    m = GoldenModel(p, seeds=[0, 1])
    w = [L.w.astype(np.int64) for L in m.layers]
    counts = C._evaluate_in_process(p, "model", w, m.fb, x, chunk=4)
    ref = GoldenModel(p, seeds=[0, 1])
    ref.r0_q = 0
    for j in range(len(x)):
        C.reset_dynamics(ref)
        out, _ = ref.run(x[j], None, record=())
        np.testing.assert_array_equal(counts[:, j], out.sum(axis=1))
    for L, w0 in zip(ref.layers, w):
        np.testing.assert_array_equal(L.w, w0)

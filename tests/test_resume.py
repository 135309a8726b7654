"""Resumable in-process runs: ``spikeloop train xor|braille|randman --out DIR``, interrupted,
and ``spikeloop train --resume DIR`` end exactly where an uninterrupted run with the same seeds
ends (weights, every score, the confusion matrix), on the golden model.

The runs are tiny (randman: 3 classes, 6 training samples each; XOR: 12 inputs, a few trials);
what is tested is that nothing of the state is lost or counted twice, not the learning.
"""

import json

import numpy as np
import pytest

from spikeloop.host import classify as C
from spikeloop.host import xor
from spikeloop.host.cli import main
from spikeloop.host.record import RecordError
from spikeloop.host.train import (CHECKPOINT, model_state, read_checkpoint, restore_model_state,
                                  write_checkpoint)

RANDMAN = ["--hidden", "8", "--classes", "3", "--samples-per-class", "20", "--train-per-class",
           "6", "--test-per-class", "3", "--seeds", "2", "--progress", "never"]
XOR = ["--n-in", "12", "--seeds", "2", "--checkpoint-every", "2", "--progress", "never"]


def _weights(d):
    with np.load(d / "weights.npz") as z:
        return {k: z[k] for k in z.files}


def _model_arrays(d):
    return {k: v for k, v in read_checkpoint(d)[1].items() if k.startswith("model:")}


def _no_temporaries(d):
    return not [p.name for p in d.iterdir() if p.name.startswith(".")]


def test_model_state_round_trips_every_variable():
    from spikeloop.sim.golden import GoldenModel
    p = xor.xor_params(n_in=12)
    a, b = GoldenModel(p, seeds=[0, 1]), GoldenModel(p, seeds=[5, 6])
    rng = np.random.default_rng(0)
    for _ in range(30):                           # state in the delay rings, traces, counters
        a.step(rng.random((2, 12)) < 0.3, error=rng.integers(-3, 4, (2, 2)))
    a.r0_q //= 2
    st = model_state(a)
    assert {"model.t", "model.r0_q", "layer0.sigma_d", "layer1.el"} <= set(st)
    restore_model_state(b, st)
    assert b.t == a.t == 30 and b.r0_q == a.r0_q
    x = rng.random((20, 2, 12)) < 0.3
    out_a = [a.step(x[n], error=np.ones((2, 2), int)) for n in range(20)]
    out_b = [b.step(x[n], error=np.ones((2, 2), int)) for n in range(20)]
    np.testing.assert_array_equal(out_a, out_b)
    for k, v in model_state(a).items():
        np.testing.assert_array_equal(model_state(b)[k], v, err_msg=k)
    other = GoldenModel(xor.xor_params(n_in=13), seeds=[0, 1])
    with pytest.raises(RecordError, match="does not fit this network"):
        restore_model_state(other, st)


def test_randman_resumed_to_n_epochs_equals_an_uninterrupted_run(tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", "randman", *RANDMAN, "--epochs", "3", "--out", str(full)]) == 0
    assert main(["train", "randman", *RANDMAN, "--epochs", "1", "--out", str(part)]) == 0
    m1 = json.loads((part / "metrics.json").read_text())
    assert (m1["epochs_done"], m1["complete"]) == (1, True)
    # the same --out again is refused: it would overwrite a run that can be continued
    assert main(["train", "randman", *RANDMAN, "--epochs", "3", "--out", str(part)]) == 2
    assert "continue it with spikeloop train --resume" in capsys.readouterr().err
    w1 = _model_arrays(part)["model:layer1.w"]
    assert main(["train", "--resume", str(part), "--epochs", "3", "--progress", "never"]) == 0
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (full, part))
    assert b["per_epoch"] == a["per_epoch"] and len(a["per_epoch"]["test_acc"]) == 4
    assert b["summary"]["test_acc_mean"] == a["summary"]["test_acc_mean"]
    assert (b["epochs_done"], b["complete"]) == (3, True)
    wa, wb = _weights(full), _weights(part)
    assert set(wa) == {"seeds", "hid.w", "out.w"}
    for k in wa:
        np.testing.assert_array_equal(wb[k], wa[k], err_msg=k)
    # epochs 2 and 3 moved the weights, so equal weights say something
    assert not np.array_equal(wa["out.w"], w1)
    assert (full / "confusion.csv").read_text() == (part / "confusion.csv").read_text()
    assert _no_temporaries(part)


def test_randman_interrupted_mid_run_keeps_its_epochs_and_resumes_exactly(tmp_path, capsys):
    task = C.make_randman_task(classes=3, samples_per_class=20, train_per_class=6, test_per_class=3)
    p = C.classify_params(C.RANDMAN_DEFAULTS, 20, 3, 80, n_hidden=8)
    full = C.train_classifier(p, task, seeds=[0, 1], epochs=3, out_dir=tmp_path / "full",
                              plots=False)
    w_after = {}

    def stop_after_epoch_1(ep):
        w_after[ep] = _model_arrays(tmp_path / "cut")["model:layer1.w"]
        if ep == 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        C.train_classifier(p, task, seeds=[0, 1], epochs=3, out_dir=tmp_path / "cut", plots=False,
                           on_epoch=stop_after_epoch_1)
    cut = tmp_path / "cut"
    m = json.loads((cut / "metrics.json").read_text())       # intact JSON, two epochs
    assert (m["epochs_done"], m["complete"], m["interrupted"]) == (2, False, True)
    assert m["per_epoch"]["test_acc"] == full["per_epoch"]["test_acc"][:3]
    assert not (cut / "weights.npz").exists() and _no_temporaries(cut)
    assert not np.array_equal(w_after[0], w_after[1])          # training moved the weights
    assert main(["train", "--resume", str(cut), "--progress", "never"]) == 0
    assert "test accuracy after 3 epoch(s)" in capsys.readouterr().out
    m = json.loads((cut / "metrics.json").read_text())
    assert m["per_epoch"] == full["per_epoch"] and m["complete"]
    for k, v in _weights(tmp_path / "full").items():
        np.testing.assert_array_equal(_weights(cut)[k], v, err_msg=k)


def test_xor_interrupted_after_its_checkpoint_resumes_to_the_same_weights(tmp_path, capsys):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["train", "xor", *XOR, "--trials", "6", "--out", str(full)]) == 0
    p, task = xor.xor_params(n_in=12), xor.xor_task([0, 1], n_in=12)

    def stop_in_trial_4(k):       # trials 0-4 ran, the checkpoint holds 4: trial 4 runs again
        if k == 4:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        xor.train_xor(p, seeds=[0, 1], trials=6, out_dir=cut, task=task, record_every=2,
                      on_trial=stop_in_trial_4)
    m = json.loads((cut / "metrics.json").read_text())
    assert (m["trials_done"], m["complete"], m["interrupted"]) == (5, False, True)
    assert read_checkpoint(cut, "xor")[0]["trials_done"] == 4 and _no_temporaries(cut)
    w4 = _model_arrays(cut)["model:layer0.w"]
    assert main(["train", "--resume", str(cut), "--progress", "never"]) == 0
    assert "XOR task" in capsys.readouterr().out
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (full, cut))
    assert b["per_trial"] == a["per_trial"] and b["first_success"] == a["first_success"]
    assert b["summary"]["final_accuracy"] == a["summary"]["final_accuracy"]
    ma, mb = _model_arrays(full), _model_arrays(cut)
    assert set(ma) == set(mb) and "model:layer0.w" in ma
    for k in ma:
        np.testing.assert_array_equal(mb[k], ma[k], err_msg=k)
    assert not np.array_equal(ma["model:layer0.w"], w4)       # trials 4-5 changed the weights


def test_xor_extended_with_more_trials_equals_the_longer_run(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", "xor", *XOR, "--trials", "5", "--out", str(full)]) == 0
    assert main(["train", "xor", *XOR, "--trials", "3", "--out", str(part)]) == 0
    assert main(["train", "--resume", str(part), "--trials", "5", "--progress", "never"]) == 0
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (full, part))
    assert b["per_trial"] == a["per_trial"] and b["trials_done"] == 5
    for k, v in _model_arrays(full).items():
        np.testing.assert_array_equal(_model_arrays(part)[k], v, err_msg=k)


def test_resume_refusals_say_why(tmp_path, capsys):
    rm, xr = tmp_path / "rm", tmp_path / "xor"
    assert main(["train", "randman", *RANDMAN, "--epochs", "1", "--out", str(rm)]) == 0
    assert main(["train", "xor", *XOR, "--trials", "2", "--out", str(xr)]) == 0
    capsys.readouterr()
    for argv, message in (
            (["--resume", str(rm), "--trials", "4"], "counts epochs, extend it with --epochs N"),
            (["--resume", str(xr), "--epochs", "4"], "counts trials, extend it with --trials N"),
            (["--resume", str(rm), "--backend", "float"], "resumes on its own backend"),
            (["--resume", str(xr), "--trials", "1"], "trials must be >= 2"),
            (["--resume", str(rm), "--seeds", "3"], "--seeds cannot be changed"),
            (["--resume", str(tmp_path / "none")], "is not a run record"),
            (["--epochs", "3", "--input", "a.ras"], "--epochs applies to 'train braille'")):
        assert main(["train", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    # a checkpoint of another network is refused, not half-applied
    meta, arrays = read_checkpoint(rm)
    arrays["model:layer1.w"] = arrays["model:layer1.w"][..., :-1]
    write_checkpoint(rm, meta, arrays)
    assert main(["train", "--resume", str(rm), "--progress", "never"]) == 2
    assert "does not fit this network" in capsys.readouterr().err
    (xr / CHECKPOINT).write_bytes(b"not a checkpoint")
    assert main(["train", "--resume", str(xr)]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err

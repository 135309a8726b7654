"""The ``spikeloop`` command line: help, argument errors, info, bench and the host-in-the-loop
options of train/demo (training itself: test_train.py, test_hil.py; compare: test_compare.py)."""

import json

import pytest

from spikeloop.host.cli import main
from spikeloop.sim.raster import write_ras

SUBCOMMANDS = [[], ["info"], ["demo"], ["train"], ["train", "fig2"], ["compare"], ["bench"],
               ["bench", "model"]]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=lambda w: " ".join(w) or "top")
def test_help_exits_0(words, capsys):
    assert main(words + ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: spikeloop")


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("spikeloop ")


def test_no_command_exits_2(capsys):
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().err


def test_info_runs(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for text in ("spikeloop", "n_in=100", "(463, 9)", "SQ9.10", "UQ0.8", "model", "float",
                 "amaranth", "cocotb", "verilator"):
        assert text in out, text
    backends = out.split("Backends")[1].split("Toolchain")[0]
    for name in ("model", "float", "rtl", "board-model", "serial:PORT"):
        assert f"\n  {name} " in backends, name
    assert "(not yet)" not in backends
    assert "board-model  the golden model answering the link protocol, host in the loop (available)" \
        in backends


# --------------------------------------------------------------------------- argument errors

def _err(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_missing_input_file(tmp_path, capsys):
    tgt = tmp_path / "tgt.ras"
    write_ras(tgt, [0.01], [0])
    missing = tmp_path / "nope.ras"
    rc = main(["train", "--input", str(missing), "--target", str(tgt), "--trials", "2",
               "--out", str(tmp_path / "out")])
    assert rc == 2
    assert _err(capsys) == f"spikeloop: error: --input: no such file: {missing}\n"


def test_missing_config_file(tmp_path, capsys):
    rc = main(["train", "fig2", "--config", str(tmp_path / "p.json"), "--out", str(tmp_path)])
    assert rc == 2
    assert _err(capsys) == f"spikeloop: error: --config: no such file: {tmp_path / 'p.json'}\n"


@pytest.mark.parametrize("words", [["train", "fig2"], ["train", "--trials", "2"]])
def test_invalid_feedback(words, capsys):
    assert main(words + ["--feedback", "sideways"]) == 2
    err = _err(capsys)
    assert "error: argument --feedback: invalid choice: 'sideways'" in err


@pytest.mark.parametrize("value", ["0", "-3", "ten"])
@pytest.mark.parametrize("words", [["train"], ["train", "fig2"], ["demo"]])
def test_non_positive_trials(words, value, capsys):
    assert main(words + ["--trials", value]) == 2
    assert f"error: argument --trials: must be a positive integer, not '{value}'" in _err(capsys)


def test_bad_r0_drop(capsys):
    assert main(["train", "fig2", "--r0-drop", "300x10"]) == 2
    assert "argument --r0-drop: must be TRIAL:FACTOR (e.g. 300:10), not '300x10'" in _err(capsys)


def test_file_mode_needs_its_arguments(capsys):
    assert main(["train", "--trials", "3"]) == 2
    assert _err(capsys) == ("spikeloop: error: the following arguments are required: --input, "
                            "--target, --out (or use 'train fig2')\n")


def test_bad_config_value_is_a_clean_error(tmp_path, capsys):
    cfg = tmp_path / "p.json"
    cfg.write_text(json.dumps({"w_max_mv": 1000.0}))
    assert main(["train", "fig2", "--config", str(cfg), "--trials", "1", "--out", str(tmp_path)]) == 2
    err = _err(capsys)
    assert err.startswith("spikeloop: error: w_max_mv must be within the 'w' format")


def test_unknown_config_key_is_a_clean_error(tmp_path, capsys):
    cfg = tmp_path / "p.toml"
    cfg.write_text("n_inputs = 3\n")
    assert main(["train", "fig2", "--config", str(cfg), "--trials", "1", "--out", str(tmp_path)]) == 2
    assert _err(capsys).startswith("spikeloop: error: unknown parameter(s) n_inputs")


def test_bench_what_must_be_model_rtl_or_link(capsys):
    assert main(["bench", "disk"]) == 2
    assert "argument what: invalid choice: 'disk'" in _err(capsys)


def test_bench_link_calls_bench_link_and_prints_its_table(tmp_path, capsys, monkeypatch):
    import spikeloop.host.bench_link as bl
    calls = []
    monkeypatch.setattr(bl, "bench_link", lambda: calls.append(1) or {"results": [7]})
    monkeypatch.setattr(bl, "format_table", lambda res: f"TABLE {res['results']}")
    path = tmp_path / "link.json"
    assert main(["bench", "link", "--json", str(path)]) == 0
    assert calls == [1]
    assert capsys.readouterr().out.startswith("TABLE [7]\n")
    assert json.loads(path.read_text()) == {"results": [7]}


# --------------------------------------------------------------------------- bench

def test_bench_model_tiny(tmp_path, capsys):
    path = tmp_path / "b.json"
    rc = main(["bench", "model", "--sizes", "5x0x1", "4x3x2", "--steps", "5", "--repeats", "2",
               "--json", str(path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "golden/float" in out and "4-3-2" in out
    res = json.loads(path.read_text())
    assert res["repeats"] == 2 and len(res["results"]) == 2
    r = res["results"][1]
    assert (r["n_in"], r["n_hidden"], r["n_out"], r["n_synapses"], r["steps"]) == (4, 3, 2, 18, 5)
    for name in ("golden", "float"):
        assert r[name]["synapse_steps_per_s"] > 0
        assert r[name]["synapse_steps_per_s"] == pytest.approx(18 * r[name]["steps_per_s"])
    assert r["ratio"] == pytest.approx(r["golden"]["synapse_steps_per_s"] / r["float"]["synapse_steps_per_s"])


def test_bench_model_function_defaults_to_auto_steps():
    from spikeloop.host.bench import bench_model
    res = bench_model(sizes=((3, 0, 1),), seconds=0.01, repeats=1, warmup=2, out=False)
    assert res["results"][0]["steps"] >= 50
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        bench_model(sizes=((3, 0, 1),), steps=0, out=False)


def test_cli_pins_threads_before_numpy_loads(tmp_path):
    """Run as a program, the CLI limits BLAS/OpenMP to one thread unless the user set otherwise."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["OMP_NUM_THREADS"] = "3"
    path = tmp_path / "b.json"
    r = subprocess.run([sys.executable, "-m", "spikeloop.host.cli", "bench", "model", "--sizes",
                        "3x0x1", "--steps", "3", "--repeats", "1", "--json", str(path)],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    threads = json.loads(path.read_text())["threads"]
    if threads["method"] == "environment":
        assert threads["OPENBLAS_NUM_THREADS"] == "1" and threads["MKL_NUM_THREADS"] == "1"
        assert threads["OMP_NUM_THREADS"] == "3"


def test_plot_compares_runs_on_one_axis(tmp_path):
    from spikeloop.host.cli import main
    for backend in ("model", "float"):
        assert main(["train", "fig2", "--trials", "2", "--seeds", "2", "--backend", backend,
                     "--out", str(tmp_path / backend), "--progress", "never"]) == 0
    png = tmp_path / "cmp.png"
    assert main(["plot", str(tmp_path / "model"), str(tmp_path / "float"), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def _spy_accuracy_plot(monkeypatch):
    """Record what ``spikeloop plot`` hands to the accuracy figure (and still draw it)."""
    from spikeloop.host import plots
    real, calls = plots.plot_compare_accuracy, []

    def spy(runs, path, **kw):
        calls.append(dict(runs=runs, **kw))
        return real(runs, path, **kw)
    monkeypatch.setattr(plots, "plot_compare_accuracy", spy)
    return calls


def test_plot_draws_xor_and_classification_runs_by_accuracy(tmp_path, monkeypatch, capsys):
    import numpy as np
    from spikeloop.host.cli import main
    calls = _spy_accuracy_plot(monkeypatch)
    xor, rm = tmp_path / "xor", tmp_path / "randman"
    assert main(["train", "xor", "--trials", "3", "--seeds", "2", "--n-in", "12", "--out", str(xor),
                 "--progress", "never"]) == 0
    assert main(["train", "randman", "--epochs", "2", "--seeds", "2", "--hidden", "8",
                 "--classes", "3", "--samples-per-class", "20", "--train-per-class", "6",
                 "--test-per-class", "3", "--out", str(rm), "--progress", "never"]) == 0
    for run, unit, n, label in ((xor, "trial", 3, "XOR accuracy"), (rm, "epoch", 3, "test accuracy")):
        png = tmp_path / f"{run.name}.png"
        assert main(["plot", str(run), "--out", str(png)]) == 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        call = calls[-1]
        assert call["unit"] == unit and call["ylabel"].startswith(label)
        assert "higher is better" in call["ylabel"]
        (curve,) = call["runs"].values()
        m = json.loads((run / "metrics.json").read_text())
        raw = np.array(m["per_trial"]["accuracy"] if unit == "trial" else m["per_epoch"]["test_acc"])
        assert curve.shape == (n, 2)
        if unit == "trial":            # running mean over the trials so far
            np.testing.assert_allclose(curve, np.cumsum(raw, axis=0) / np.arange(1, 4)[:, None])
        else:
            np.testing.assert_array_equal(curve, raw)
            assert call["chance"] == pytest.approx(1 / 3)
    capsys.readouterr()
    assert main(["plot", str(xor), str(rm), "--out", str(tmp_path / "both.png")]) == 2
    err = capsys.readouterr().err
    assert "cannot draw xor runs" in err and "classification runs" in err
    assert not (tmp_path / "both.png").exists()


def test_plot_refuses_a_directory_without_metrics(tmp_path, capsys):
    from spikeloop.host.cli import main
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "no metrics.json" in capsys.readouterr().err


# --------------------------------------------------------------------------- host in the loop

SMALL = ["--n-in", "30", "--duration-ms", "40", "--n-target-spikes", "2", "--progress", "never"]


@pytest.mark.parametrize("argv, msg", [
    (["train", "fig2", "--backend", "float", "--error-mode", "host"],
     "--error-mode applies to the board backends (rtl, board-model, serial:PORT), not to --backend float"),
    (["train", "fig2", "--snapshot-every", "3"],
     "--snapshot-every applies to the board backends (rtl, board-model, serial:PORT), not to --backend model"),
    (["train", "fig2", "--takeover"],
     "--takeover applies to the board backends (rtl, board-model, serial:PORT), not to --backend model"),
    (["train", "fig2", "--backend", "board-model", "--seeds", "3"],
     "a board backend trains one network per run: --seeds must be 1, not 3"),
    (["train", "fig2", "--backend", "board-model", "--feedback-latency", "2"],
     "--feedback-latency applies to --error-mode host only"),
    (["train", "fig2", "--backend", "serial:"],
     "argument --backend: must be model, float, rtl, board-model or serial:PORT, not 'serial:'"),
    (["train", "fig2", "--backend", "fpga"],
     "argument --backend: must be model, float, rtl, board-model or serial:PORT, not 'fpga'"),
    (["train", "fig2", "--error-mode", "both"], "argument --error-mode: invalid choice: 'both'"),
    (["train", "--resume", "run", "--seed", "3"],
     "--resume continues a recorded run with its own settings; --seed cannot be changed"),
    (["train", "--resume", "run", "--backend", "float"],
     "--resume needs a board backend (rtl, board-model, serial:PORT), not 'float'"),
    (["demo", "--backend", "model"], "argument --backend: must be rtl, board-model or serial:PORT"),
])
def test_hil_argument_errors_are_clean(argv, msg, capsys):
    assert main(argv) == 2
    assert msg in _err(capsys)


def test_resume_of_a_directory_without_a_record(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert f"error: {tmp_path} is not a run record (no manifest.json)" in _err(capsys)


def test_train_on_board_model_then_resume_to_more_trials(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "fig2", "--backend", "board-model", "--trials", "3", "--seed", "2",
               "--out", str(out), "--snapshot-every", "2", "--error-mode", "host",
               "--feedback-latency", "2"] + SMALL)
    assert rc == 0, _err(capsys)
    text = capsys.readouterr().out
    assert "golden model behind the protocol (board-model) with the host in the loop (host errors)" in text
    m = json.loads((out / "metrics.json").read_text())
    assert m["trials_done"] == 3 and m["seeds"] == [2] and m["feedback_latency"] == 2
    for f in ("manifest.json", "input.ras", "target.ras", "raster.png", "learning_curve.png"):
        assert (out / f).is_file(), f
    # the same --out again is refused (the record would be lost); resume extends it
    assert main(["train", "fig2", "--backend", "board-model", "--out", str(out)] + SMALL) == 2
    assert f"{out} already holds a run record; continue it with --resume {out}" in _err(capsys)
    assert main(["train", "--resume", str(out), "--trials", "5", "--progress", "never"]) == 2
    assert "cannot resume with error_delay = 2" in _err(capsys)


def test_resume_continues_an_interrupted_cli_run(tmp_path, capsys, monkeypatch):
    import spikeloop.host.hil as hil
    out = tmp_path / "run"
    real = hil._Run.run_trial

    def crash_in_trial_3(self, k):
        if k == 3:
            raise KeyboardInterrupt
        return real(self, k)
    monkeypatch.setattr(hil._Run, "run_trial", crash_in_trial_3)
    rc = main(["train", "fig2", "--backend", "board-model", "--trials", "5", "--out", str(out),
               "--snapshot-every", "2"] + SMALL)
    assert rc == 130
    assert f"continue with: spikeloop train --resume {out}" in _err(capsys)
    assert json.loads((out / "metrics.json").read_text())["trials_done"] == 3
    monkeypatch.setattr(hil._Run, "run_trial", real)
    assert main(["train", "--resume", str(out), "--progress", "never"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["complete"] and m["trials_done"] == 5


def test_demo_on_board_model(tmp_path, capsys):
    rc = main(["demo", "--backend", "board-model", "--trials", "2", "--out", str(tmp_path),
               "--progress", "never"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "board-model vs board-model: identical" in out
    run = tmp_path / "a-board-model"
    for f in ("learning_curve.png", "raster.png", "metrics.json", "manifest.json"):
        assert (run / f).is_file(), f
    assert (tmp_path / "compare.png").is_file() and (tmp_path / "input.ras").is_file()


def test_plot_draws_a_hil_run_next_to_a_model_run(tmp_path):
    hil, model = tmp_path / "hil", tmp_path / "model"
    assert main(["train", "fig2", "--backend", "board-model", "--trials", "3", "--out", str(hil)]
                + SMALL) == 0
    assert main(["train", "fig2", "--trials", "3", "--seeds", "2", "--out", str(model)] + SMALL) == 0
    png = tmp_path / "both.png"
    assert main(["plot", str(hil), str(model), "--out", str(png)]) == 0
    assert png.stat().st_size > 10_000


def test_compare_takes_model_as_the_protocol_level_model():
    from spikeloop.host.cli import build_parser
    args = build_parser().parse_args(["compare", "--backends", "rtl,model"])
    assert args.backends == ("rtl", "board-model")


def test_transcript_then_replay_on_board_model(tmp_path, capsys):
    f = tmp_path / "t.json"
    assert main(["transcript", "--out", str(f)]) == 0
    assert main(["replay", str(f), "--backend", "board-model"]) == 0
    assert "byte-identical" in capsys.readouterr().out
    d = json.loads(f.read_text())
    req, rep = d["exchanges"][3]
    d["exchanges"][3] = [req, rep[:-6] + ("00" if rep[-6:-4] != "00" else "01") + rep[-4:]]
    f.write_text(json.dumps(d))
    assert main(["replay", str(f), "--backend", "board-model"]) == 1
    assert "exchange 3 of" in capsys.readouterr().out
    assert main(["replay", str(tmp_path / "none.json"), "--backend", "board-model"]) == 2
    assert "no such transcript" in capsys.readouterr().err


def test_train_takeover_opens_the_board_with_a_takeover(monkeypatch, tmp_path):
    """--takeover reaches Board.open (a board another host's killed run still holds)."""
    from spikeloop.host.board import Board
    seen = []
    real = Board.open

    def spy(*a, **kw):
        seen.append(kw.get("takeover"))
        return real(*a, **kw)
    monkeypatch.setattr(Board, "open", spy)
    assert main(["train", "fig2", "--backend", "board-model", "--takeover", "--trials", "1",
                 "--out", str(tmp_path / "r"), *SMALL]) == 0
    assert seen and all(seen)

"""``spikeloop sweep`` and ``spikeloop report``: job hashes, seeds, the store (reuse, resume after an
interrupt), the Dask path through a real LocalCluster, and a report that is the same when rerun.

The sweeps are tiny (Fig. 2 with 10 inputs, 40 ms trials, 2 trials per job), so every job takes
milliseconds; what is tested is the bookkeeping, not the learning.
"""

import copy
import json

import pytest

from spikeloop.host import sweep
from spikeloop.host.cli import main
from spikeloop.host.report import build_report
from spikeloop.host.sweep import SweepTask, Store, expand_grid, job_hash, run_sweep

TINY = dict(n_in=10, duration_ms=40.0)
GRID = dict(task=["fig2"], seeds=2, trials=2, options=TINY)
TINY_ARGS = ["--task", "fig2", "--trials", "2", "--seeds", "2", "--set", "n_in=10",
             "--set", "duration_ms=40"]


def _jobs(**changes):
    return expand_grid({**copy.deepcopy(GRID), **changes})[1]


# --------------------------------------------------------------------------- hashes and seeds

def test_job_hash_is_stable_and_canonical():
    job = _jobs()[0]
    h = job_hash(job)
    assert len(h) == 64 and h == job_hash(copy.deepcopy(job))
    # key order does not matter; the same grid expands to the same hashes every time
    assert job_hash(dict(reversed(list(job.items())))) == h
    assert [job_hash(j) for j in _jobs()] == [job_hash(j) for j in _jobs()]
    # an int given for a float option is the same job (duration_ms 40 == 40.0)
    assert job_hash(_jobs(options=dict(n_in=10, duration_ms=40))[0]) == h


def _leaves(d, path=()):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _leaves(v, path + (k,))
        else:
            yield path + (k,), v


def _changed(v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, (int, float)):
        return v + 1
    if isinstance(v, str):
        return v + "x"
    if isinstance(v, list):
        return v + [[1, 2]]
    return {"x": 1} if v in ({}, None) else None


def test_job_hash_changes_with_every_config_field_and_the_code():
    job = _jobs()[0]
    h = job_hash(job)
    seen = {h}
    for path, value in _leaves(job):
        other = copy.deepcopy(job)
        d = other
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = _changed(value)
        h2 = job_hash(other)
        assert h2 not in seen, path
        seen.add(h2)
    assert len(seen) > 30           # the whole Params dict is in the config
    assert job_hash(job, digest="0" * 64) != h
    assert job_hash(job, version="0.0.0") != h


def test_code_digest_is_a_sha256_of_the_package():
    d = sweep.code_digest()
    assert len(d) == 64 and int(d, 16) >= 0
    sweep._DIGEST.clear()
    assert sweep.code_digest() == d


def test_seeds_are_derived_from_the_grid_only():
    jobs = _jobs(seeds=3, seed=5, hidden=[0, 4], feedback=["symmetric", "random"])
    # 3 configurations (no feedback without hidden neurons), each with seeds 5, 6, 7
    assert [j["seed"] for j in jobs] == [5, 6, 7] * 3
    assert [(j["hidden"], j["feedback"]) for j in jobs[::3]] == [(0, None), (4, "symmetric"),
                                                                  (4, "random")]
    # more seeds or more configurations leave the existing jobs as they were (reused)
    more = _jobs(seeds=4, seed=5, hidden=[0, 4, 8], feedback=["symmetric", "random"])
    assert {job_hash(j) for j in jobs} < {job_hash(j) for j in more}
    assert sweep.job_seeds(5, 3) == [5, 6, 7]
    assert [j["seed"] for j in _jobs(seeds=[9, 2])] == [9, 2]


def test_a_job_trains_the_seed_train_trains(tmp_path):
    """A job equals that seed of the batched ``train fig2`` run (same network and stimulus)."""
    from spikeloop.host.tasks import fig2_params, make_fig2
    from spikeloop.host.train import train
    job = _jobs(hidden=[4], feedback=["random"])[1]
    res = sweep.run_job(job)
    p = fig2_params(n_in=10, duration_ms=40.0, n_hidden=4, feedback="random")
    assert job["params"] == p.to_dict()
    t = make_fig2([0, 1], n_in=10, duration_ms=40.0)
    m = train(p, t["inputs"], t["targets"], seeds=[0, 1], trials=2, out_dir=tmp_path,
              r0_drop=[(400, 10)], plots=False)
    assert res["curves"]["cost"] == [row[1] for row in m["per_trial"]["cost"]]
    assert res["task"]["stimulus_seeds"] == [t["stimulus_seeds"][1]]


# --------------------------------------------------------------------------- grids and options

def test_grid_file_and_options(tmp_path):
    f = tmp_path / "grid.toml"
    f.write_text('task = "fig2"\nhidden = [0, 4]\nfeedback = ["random"]\nseeds = 2\ntrials = 2\n'
                 '[options]\nn_in = 10\nduration_ms = 40\n')
    grid = sweep.merge_grid(sweep.load_grid(f), seeds=3, options=sweep.parse_set(["n_in=12"]))
    configs, jobs = expand_grid(grid)
    assert [(c["hidden"], c["feedback"]) for c in configs] == [(0, None), (4, "random")]
    assert len(jobs) == 6 and all(j["options"]["n_in"] == 12 for j in jobs)
    assert configs[0]["options"]["r0_drop"] == [[200, 10]]     # the Fig. 2 schedules by hidden
    assert configs[1]["options"]["r0_drop"] == [[400, 10]]
    # fig4 is fig2 through 4 hidden neurons with every feedback mode, sharing fig2's jobs
    fig4 = expand_grid(dict(task=["fig4"], options=TINY))[0]
    assert [(c["task"], c["hidden"], c["feedback"]) for c in fig4] == [
        ("fig2", 4, "symmetric"), ("fig2", 4, "random"), ("fig2", 4, "uniform")]
    assert sweep.parse_set(["word=LOOP", "r0_drop=[[5, 2]]", "rate_hz=20.5"]) == dict(
        word="LOOP", r0_drop=[[5, 2]], rate_hz=20.5)


def test_formats_axis_takes_a_files_formats(tmp_path):
    f = tmp_path / "narrow.toml"
    f.write_text("n_in = 100\n[formats]\nm = { bits = 20, frac = 10, signed = true }\n"
                 "q = { bits = 20, frac = 10, signed = false }\n")
    configs, _ = expand_grid({**GRID, "formats": ["default", str(f)]})
    assert [c["formats"]["name"] for c in configs] == ["default", "narrow"]
    assert configs[1]["params"]["formats"]["m"] == dict(bits=20, frac=10, signed=True)
    assert configs[1]["params"]["n_in"] == 10                 # only the formats are taken


@pytest.mark.parametrize("grid, message", [
    (dict(task=["xyz"]), "task must be one of fig2"),
    (dict(task=[]), "at least one task"),
    (dict(GRID, options=dict(n_inn=3)), "unknown option(s) n_inn"),
    (dict(GRID, options=dict(n_in="ten")), "option 'n_in' of task fig2 must be an integer"),
    (dict(GRID, options=dict(duration_ms=40.5)), "whole number of steps"),
    (dict(GRID, options=dict(r0_drop=[[1]])), "r0_drop entries must be (trial, factor) pairs"),
    (dict(GRID, feedback=["sideways"]), "feedback must be one of symmetric"),
    (dict(GRID, backend="rtl"), "backend must be one of model, float"),
    (dict(GRID, seeds=0), "seeds must be an integer >= 1"),
    (dict(GRID, formats=["nope.toml"]), "formats: no such file: nope.toml"),
    (dict(GRID, colour="red"), "unknown grid key(s) colour"),
])
def test_bad_grids_say_what_was_expected(grid, message):
    with pytest.raises(sweep.SweepError) as e:
        expand_grid(grid)
    assert message in str(e.value)


def test_bad_options_exit_2_with_a_message(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("task = [fig2\n")
    for argv, message in ([["--grid", str(bad)], "not valid TOML"],
                          [["--grid", str(tmp_path / "none.toml")], "--grid: no such file"],
                          [["--task", "fig2", "--set", "n_in"], "--set must be KEY=VALUE"],
                          [["--task", "fig2", "--workers", "1", "--scheduler", "tcp://x:1"],
                           "exclude each other"]):
        assert main(["sweep", *argv, "--store", str(tmp_path / "s")]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert main(["report", "--store", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    assert "no finished jobs" in capsys.readouterr().err


# --------------------------------------------------------------------------- store, reuse, resume

def test_tiny_sweep_stores_results_and_a_rerun_computes_nothing(tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["sweep", *TINY_ARGS, "--workers", "0", "--store", str(store)]) == 0
    assert "2 jobs: 0 reused, 2 computed, 0 failed" in capsys.readouterr().out
    recs = Store(store).records()
    assert sorted(r["config"]["seed"] for r in recs) == [0, 1]
    for r in recs:
        assert r["hash"] == job_hash(r["config"])
        assert len(r["result"]["curves"]["rel_cost"]) == 2 and r["result"]["trials_done"] == 2
        assert r["command"].startswith("spikeloop sweep --task fig2 --seeds 2 --trials 2")
    assert not list((store / "jobs").glob(".*"))            # no temporary file left behind
    before = {p.name: p.read_bytes() for p in (store / "jobs").iterdir()}
    assert main(["sweep", *TINY_ARGS, "--workers", "0", "--store", str(store)]) == 0
    assert "2 jobs: 2 reused, 0 computed, 0 failed" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in (store / "jobs").iterdir()} == before


def test_an_interrupted_sweep_resumes_with_the_rest(tmp_path, monkeypatch):
    jobs = _jobs(seeds=4)
    store = Store(tmp_path / "store")
    real, ran = sweep.TASKS["fig2"].run, []

    def once_then_interrupt(config, seed, out):
        if ran:
            raise KeyboardInterrupt
        ran.append(seed)
        return real(config, seed, out)

    monkeypatch.setitem(sweep.TASKS, "fig2", SweepTask(**{
        **sweep.TASKS["fig2"].__dict__, "run": once_then_interrupt}))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(jobs, store, workers=0)
    assert [r["config"]["seed"] for r in store.records()] == [0]
    monkeypatch.undo()
    computed = []
    monkeypatch.setitem(sweep.TASKS, "fig2", SweepTask(**{
        **sweep.TASKS["fig2"].__dict__,
        "run": lambda c, s, o: computed.append(s) or real(c, s, o)}))
    res = run_sweep(jobs, store, workers=0)
    assert (res["reused"], res["computed"], res["failed"]) == (1, 3, [])
    assert computed == [1, 2, 3]
    assert sorted(r["config"]["seed"] for r in store.records()) == [0, 1, 2, 3]


def test_a_failing_job_is_reported_not_stored(tmp_path, monkeypatch, capsys):
    real = sweep.TASKS["fig2"].run

    def fail_seed_1(config, seed, out):
        if seed == 1:
            raise RuntimeError("no luck")
        return real(config, seed, out)

    monkeypatch.setitem(sweep.TASKS, "fig2", SweepTask(**{
        **sweep.TASKS["fig2"].__dict__, "run": fail_seed_1}))
    store = Store(tmp_path / "store")
    res = run_sweep(_jobs(), store, workers=0)
    assert res["computed"] == 1 and len(res["failed"]) == 1
    assert "RuntimeError: no luck" in res["failed"][0][1]
    assert "seed 1) failed: RuntimeError: no luck" in capsys.readouterr().err
    assert [r["config"]["seed"] for r in store.records()] == [0]


def test_a_truncated_result_counts_as_missing(tmp_path):
    store = Store(tmp_path / "store")
    jobs = _jobs()
    run_sweep(jobs, store, workers=0)
    path = store.path(job_hash(jobs[0]))
    path.write_text(path.read_text()[:100])
    assert not store.has(job_hash(jobs[0]))
    res = run_sweep(jobs, store, workers=0)
    assert (res["reused"], res["computed"]) == (1, 1)
    assert json.loads(path.read_text())["hash"] == job_hash(jobs[0])


def test_a_worker_with_other_code_refuses_the_job():
    with pytest.raises(sweep.SweepError, match="runs other spikeloop code"):
        sweep.run_job(_jobs()[0], code="0" * 64)


def test_pattern_jobs_run():
    configs, jobs = expand_grid(dict(task=["pattern"], hidden=[4], trials=2, options=dict(
        n_in=10, n_out=14, duration_ms=100, word="A")))
    assert [(c["hidden"], c["feedback"], c["params"]["n_out"]) for c in configs] == [
        (4, "symmetric", 14)]
    res = sweep.run_job(jobs[0])
    assert res["trials_done"] == 2 and res["task"]["word"] == "A"


def test_the_dask_path_through_a_scheduler_address(tmp_path):
    """--scheduler: the jobs go to a running cluster (here one thread worker in this process)."""
    distributed = pytest.importorskip("distributed")
    store = Store(tmp_path / "store")
    jobs = _jobs()
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        res = run_sweep(jobs, store, scheduler=cluster.scheduler_address, command="test")
    assert (res["computed"], res["failed"]) == (2, [])
    serial = Store(tmp_path / "serial")
    run_sweep(jobs, serial, workers=0)
    assert [r["result"]["curves"] for r in store.records()] == \
        [r["result"]["curves"] for r in serial.records()]


def test_the_command_on_a_local_cluster_of_worker_processes(tmp_path, capsys):
    """The default path: LocalCluster worker processes (pickled job, imported on the worker)."""
    pytest.importorskip("distributed")
    store = tmp_path / "store"
    assert main(["sweep", *TINY_ARGS, "--workers", "1", "--store", str(store)]) == 0
    cap = capsys.readouterr()
    assert "running 2 job(s) on a LocalCluster of 1 worker(s)" in cap.err
    assert "2 jobs: 0 reused, 2 computed, 0 failed" in cap.out
    serial = Store(tmp_path / "serial")
    run_sweep(_jobs(), serial, workers=0)
    assert [r["result"]["curves"] for r in Store(store).records()] == \
        [r["result"]["curves"] for r in serial.records()]


# --------------------------------------------------------------------------- report

def test_report_writes_md_png_csv_and_is_identical_when_rerun(tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["sweep", *TINY_ARGS, "--workers", "0", "--store", str(store)]) == 0
    out = tmp_path / "results"
    assert main(["report", "--store", str(store), "--out", str(out)]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert "README.md" in files and "fig2.csv" in files and "fig2.png" in files
    assert sum(f.endswith(".png") for f in files) == 2 and sum(f.endswith(".csv") for f in files) == 2
    md = (out / "README.md").read_text()
    assert "spikeloop sweep --task fig2 --seeds 2 --trials 2" in md
    assert f"spikeloop report --store {store} --out {out}" in md
    assert f"code digest `{sweep.code_digest()[:12]}`" in md
    for f in files:
        if f != "README.md":
            assert f"({f})" in md, f
    rows = (out / "fig2.csv").read_text().splitlines()
    assert rows[0].startswith("configuration,") and len(rows) == 2
    assert ",2,0 1," in rows[1]                              # n_seeds, seeds
    curve = [f for f in files if f.startswith("fig2-") and f.endswith(".csv")][0]
    lines = (out / curve).read_text().splitlines()
    assert lines[0] == "trial,rel_cost_mean,rel_cost_sd,seed_0,seed_1" and len(lines) == 3
    before = {f: (out / f).read_bytes() for f in files}
    build_report(store, out, command=f"spikeloop report --store {store} --out {out}")
    assert {f: (out / f).read_bytes() for f in files} == before
    # a file of a configuration the store no longer holds goes; files the report never wrote stay
    (out / "old-config.png").write_bytes(b"x")
    (out / "notes.txt").write_text("mine")
    (out / "README.md").write_text((out / "README.md").read_text() + "![old](old-config.png)\n")
    build_report(store, out, command=f"spikeloop report --store {store} --out {out}")
    assert sorted(p.name for p in out.iterdir()) == sorted(files + ["notes.txt"])


@pytest.mark.parametrize("words", [["sweep"], ["report"]])
def test_help_exits_0(words, capsys):
    assert main(words + ["--help"]) == 0
    assert capsys.readouterr().out.startswith(f"usage: spikeloop {words[0]}")


def test_dry_run_lists_the_configurations(tmp_path, capsys):
    assert main(["sweep", *TINY_ARGS, "--hidden", "0", "4", "--feedback", "symmetric", "random",
                 "--dry-run", "--store", str(tmp_path / "s")]) == 0
    cap = capsys.readouterr()
    assert "3 configurations x 2 seed(s) = 6 jobs; 0 already in" in cap.err
    assert "fig2 hidden 4 feedback random formats default, 2 trials, model" in cap.out
    assert not (tmp_path / "s").exists()


# --------------------------------------------------------------------------- accuracy tasks

XOR_TINY = ["--task", "xor", "--hidden", "4", "--regulariser", "off", "on", "--trials", "2",
            "--seeds", "2", "--set", "n_in=12"]
RANDMAN_TINY = ["--task", "randman", "--hidden", "8", "--epochs", "2", "--seeds", "2",
                "--set", "classes=3", "--set", "samples_per_class=20", "--set", "train_per_class=6",
                "--set", "test_per_class=3"]


def test_xor_and_randman_grids_map_onto_their_tasks_options():
    configs, jobs = expand_grid(dict(task=["xor"], hidden=[0, 4], regulariser=[False, True],
                                     trials=2, seeds=1, options=dict(n_in=12, rate_hz=2)))
    # no hidden layer: no feedback, no regulariser, trained once
    assert [(c["hidden"], c["feedback"], c["regulariser"]) for c in configs] == [
        (0, None, False), (4, "symmetric", False), (4, "symmetric", True)]
    assert [c["params"]["regulariser"] for c in configs] == [False, False, True]
    assert all(c["params"]["error_source"] == "host" and c["params"]["n_in"] == 12
               and c["params"]["error_delay"] == 5 and c["options"]["rate_hz"] == 2.0
               for c in configs)
    configs, _ = expand_grid(dict(task=["randman"], hidden=[8], feedback=["random"], epochs=3,
                                  options=dict(classes=4, n_in=10, r0_mv=0.5)))
    (c,) = configs
    assert "trials" not in c and c["epochs"] == 3
    assert (c["params"]["n_in"], c["params"]["n_hidden"], c["params"]["n_out"],
            c["params"]["feedback"], c["params"]["r0_mv"], c["params"]["chunk_steps"]) == (
        10, 8, 4, "random", 0.5, 80)
    # braille's network needs no data (24 channels, 27 letters, 77 frames x frame_steps)
    (b,), _ = expand_grid(dict(task=["braille"], options=dict(frame_steps=1)))
    assert (b["params"]["n_in"], b["params"]["n_out"], b["params"]["chunk_steps"]) == (24, 27, 77)


@pytest.mark.parametrize("grid, message", [
    (dict(task=["randman"], trials=3), "task randman does not take grid key 'trials'; it trains "
                                       "for epochs"),
    (dict(task=["braille"], regulariser=[True]), "task braille does not take grid key 'regulariser'"),
    (dict(task=["fig2"], epochs=2), "task fig2 does not take grid key 'epochs'"),
    (dict(task=["xor"], epochs=2), "task xor does not take grid key 'epochs'; it trains for trials"),
    (dict(task=["xor"], backend="float"), "task xor does not take backend 'float'"),
    (dict(task=["xor", "randman"], trials=2), "task randman does not take grid key 'trials'; it "
                                               "trains for epochs (grid key 'epochs', --epochs); "
                                               "sweep the tasks one at a time"),
    (dict(task=["xor"], regulariser=["yes"]), "regulariser entries must be true or false"),
    (dict(task=["xor"], options=dict(classes=3)), "unknown option(s) classes for task(s) xor"),
    (dict(task=["xor"], options=dict(n_in=2)), "at least 3 inputs"),
    (dict(task=["randman"], options=dict(classes=1)), "randman classes must be an integer >= 2"),
    (dict(task=["randman"], options=dict(train_per_class=0)), "'train_per_class' must be a "
                                                               "positive integer"),
])
def test_keys_a_task_cannot_take_are_refused_by_name(grid, message):
    with pytest.raises(sweep.SweepError) as e:
        expand_grid(grid)
    assert message in str(e.value)


def test_an_xor_job_trains_the_seed_train_xor_trains(tmp_path):
    from spikeloop.host import xor
    job = expand_grid(dict(task=["xor"], trials=3, seeds=2, options=dict(n_in=12)))[1][1]
    assert job["seed"] == 1
    res = sweep.run_job(job)
    p = xor.xor_params(n_in=12)
    assert job["params"] == p.to_dict()
    m = xor.train_xor(p, seeds=[0, 1], trials=3, out_dir=tmp_path, plots=False)
    assert res["curves"]["accuracy"] == [row[1] for row in m["per_trial"]["accuracy"]]
    assert res["final"]["accuracy"] == m["summary"]["final_accuracy"][1]
    assert res["task"]["stimulus_seeds"] == [m["task"]["stimulus_seeds"][1]]
    assert (res["metric"], res["direction"], res["unit"], res["trials_done"]) == (
        "accuracy", "max", "trial", 3)


def test_a_randman_job_trains_the_seed_train_randman_trains(tmp_path):
    from spikeloop.host import classify as C
    job = expand_grid(dict(task=["randman"], hidden=[8], epochs=2, seeds=2, options=dict(
        classes=3, samples_per_class=20, train_per_class=6, test_per_class=3)))[1][1]
    res = sweep.run_job(job)
    task = C.make_randman_task(classes=3, samples_per_class=20, train_per_class=6, test_per_class=3)
    p = C.classify_params(C.RANDMAN_DEFAULTS, 20, 3, 80, n_hidden=8)
    assert job["params"] == p.to_dict()
    m = C.train_classifier(p, task, seeds=[0, 1], epochs=2, out_dir=tmp_path, plots=False)
    assert res["curves"]["test_acc"] == [row[1] for row in m["per_epoch"]["test_acc"]]
    assert res["curves"]["train_acc"] == [None] + [row[1] for row in m["per_epoch"]["train_acc"][1:]]
    assert (res["metric"], res["direction"], res["unit"], res["epochs_done"]) == (
        "test_acc", "max", "epoch", 2)
    assert res["chance"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("argv, n_jobs, task", [(XOR_TINY, 4, "xor"), (RANDMAN_TINY, 2, "randman")])
def test_tiny_accuracy_sweeps_store_rerun_and_report(tmp_path, capsys, argv, n_jobs, task):
    store, out = tmp_path / "store", tmp_path / "results"
    assert main(["sweep", *argv, "--workers", "0", "--store", str(store)]) == 0
    assert f"{n_jobs} jobs: 0 reused, {n_jobs} computed, 0 failed" in capsys.readouterr().out
    recs = Store(store).records()
    assert len(recs) == n_jobs and all(r["hash"] == job_hash(r["config"]) for r in recs)
    # the stored command is the grid written as options: it expands to the same jobs
    command = {r["command"] for r in recs}.pop()
    assert command.startswith(f"spikeloop sweep --task {task} --hidden ")
    assert ("--regulariser off on --trials 2" if task == "xor" else "--epochs 2") in command
    assert main(command.split()[1:] + ["--store", str(store), "--dry-run"]) == 0
    assert f"= {n_jobs} jobs; {n_jobs} already in" in capsys.readouterr().err
    before = {p.name: p.read_bytes() for p in (store / "jobs").iterdir()}
    assert main(["sweep", *argv, "--workers", "0", "--store", str(store)]) == 0
    assert f"{n_jobs} jobs: {n_jobs} reused, 0 computed, 0 failed" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in (store / "jobs").iterdir()} == before

    assert main(["report", "--store", str(store), "--out", str(out)]) == 0
    files = sorted(p.name for p in out.iterdir())
    n_conf = n_jobs // 2
    assert f"{task}.csv" in files and f"{task}.png" in files
    assert sum(f.endswith(".png") for f in files) == 1 + n_conf
    md = (out / "README.md").read_text()
    assert "higher is better" in md and "van Rossum" not in md
    head = (out / f"{task}.csv").read_text().splitlines()[0].split(",")
    curve = sorted(f for f in files if f.startswith(f"{task}-") and f.endswith(".csv"))[0]
    lines = (out / curve).read_text().splitlines()
    if task == "xor":
        # a success notion (all four patterns right); accuracy per trial
        assert "regulariser" in head and "n_succeeded" in head and "final_accuracy_mean" in head
        assert "| regulariser | seeds | succeeded |" in md
        assert lines[0] == "trial,accuracy_mean,accuracy_sd,seed_0,seed_1" and len(lines) == 3
        acc = [r["result"]["final"]["accuracy"] for r in recs
               if not r["config"]["regulariser"]]
    else:
        # no success notion; test accuracy per epoch, epoch 0 before training
        assert "n_succeeded" not in head and "final_test_acc_mean" in head
        assert lines[0] == "epoch,test_acc_mean,test_acc_sd,seed_0,seed_1" and len(lines) == 4
        acc = [r["result"]["final"]["test_acc"] for r in recs]
        assert [r["config"]["epochs"] for r in recs] == [2, 2]
    rows = (out / f"{task}.csv").read_text().splitlines()
    mean = float(rows[1].split(",")[head.index(f"final_{'accuracy' if task == 'xor' else 'test_acc'}_mean")])
    assert mean == pytest.approx(sum(acc) / len(acc), abs=1e-5)


def test_accuracy_jobs_on_dask_store_what_the_serial_path_stores(tmp_path):
    pytest.importorskip("distributed")
    jobs = expand_grid(dict(task=["xor"], hidden=[4], trials=2, seeds=2, options=dict(n_in=12)))[1]
    dask, serial = Store(tmp_path / "dask"), Store(tmp_path / "serial")
    res = run_sweep(jobs, dask, workers=1, processes=False)
    assert (res["computed"], res["failed"]) == (2, [])
    assert run_sweep(jobs, serial, workers=0)["computed"] == 2
    assert [r["result"]["curves"] for r in dask.records()] == \
        [r["result"]["curves"] for r in serial.records()]
    assert run_sweep(jobs, dask, workers=0)["reused"] == 2


def test_a_braille_job_without_its_data_fails_saying_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPIKELOOP_BRAILLE", str(tmp_path / "missing.npz"))
    store = tmp_path / "store"
    assert main(["sweep", "--task", "braille", "--hidden", "8", "--epochs", "1", "--seeds", "1",
                 "--workers", "0", "--store", str(store)]) == 1
    cap = capsys.readouterr()
    assert "1 jobs: 0 reused, 0 computed, 1 failed" in cap.out
    assert "braille data: no such file" in cap.err and "missing.npz" in cap.err
    assert "--set data=FILE" in cap.err and "Traceback" not in cap.err
    assert Store(store).records() == []


def _braille_file():
    import os
    from pathlib import Path
    from spikeloop.host.classify import BRAILLE_DEFAULTS, BRAILLE_ENV
    env = os.environ.get(BRAILLE_ENV)
    repo = Path(__file__).resolve().parents[1]
    for p in ([Path(env)] if env else []) + [repo / BRAILLE_DEFAULTS["data"]]:
        if p.is_file():
            return p
    return None


@pytest.mark.skipif(_braille_file() is None, reason="braille_taxels.npz not found (set "
                    "SPIKELOOP_BRAILLE or put it at ../shared/data/braille/ next to the repository)")
def test_a_tiny_braille_sweep(tmp_path, capsys):
    store = tmp_path / "store"
    argv = ["sweep", "--task", "braille", "--hidden", "8", "--epochs", "1", "--seeds", "1",
            "--set", f"data={_braille_file()}", "--set", "train_per_class=2",
            "--set", "test_per_class=1", "--workers", "0", "--store", str(store)]
    assert main(argv) == 0
    (rec,) = Store(store).records()
    assert len(rec["result"]["curves"]["test_acc"]) == 2 and len(rec["result"]["data_sha256"]) == 64
    assert main(argv) == 0
    assert "1 jobs: 1 reused, 0 computed, 0 failed" in capsys.readouterr().out

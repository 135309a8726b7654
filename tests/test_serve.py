"""spikeloop serve (a device behind a pty), boards / serial:auto discovery, link recording."""

import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from spikeloop.host import discovery
from spikeloop.host.board import RTL_TIMEOUT, BackendError, Board
from spikeloop.host.board_ids import BOARD_SERIAL_IDS, SUPPORTED_BOARDS
from spikeloop.host.cli import main
from spikeloop.host.hil import hil_params, hil_train
from spikeloop.host.linklog import Transcript, recording_opener, replay_on
from spikeloop.host.record import RunRecord
from spikeloop.host.serve import PtyServer, ServeError, open_device, serve_config, served_params
from spikeloop.host.tasks import fig2_params, make_fig2
from spikeloop.params import Params

SEED, N_IN, DUR_MS = 1, 100, 200.0


def base_params():
    return hil_params(fig2_params(Params(w_init_std_mv=0.5, r0_mv=0.3), n_in=N_IN, duration_ms=DUR_MS))


def start_serve(args, wait_s=120.0):
    """``spikeloop serve ARGS`` as a subprocess; (process, pty path) once it prints its line."""
    proc = subprocess.Popen([sys.executable, "-m", "spikeloop.host.cli", "serve", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline, seen = time.monotonic() + wait_s, []
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 1.0)
        if r:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith("serving "):
                return proc, line.split(" on ")[1].split()[0]
    stop_serve(proc)
    raise AssertionError("serve did not start:\n" + "".join(seen))


def descendants(pid):
    """Every live process below ``pid`` (the rtl server runs in a session of its own)."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def gone(pids, wait_s=15.0):
    """The processes of ``pids`` that are still alive after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        left = [p for p in pids if os.path.exists(f"/proc/{p}") and not _zombie(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def stop_serve(proc, sig=signal.SIGINT):
    """SIGINT (Ctrl-C) as a user would; then make sure the whole session is gone, and every
    process serve started (an rtl simulation) with it."""
    below = descendants(proc.pid)
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    tail = proc.stdout.read()
    proc.stdout.close()
    try:
        os.killpg(proc.pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    if alive:                                    # nothing it started may outlive it
        os.killpg(proc.pid, signal.SIGKILL)
    assert not alive, "serve left processes behind"
    left = gone(below)
    assert not left, f"serve left processes behind: {left}"
    return proc.returncode, tail


@pytest.fixture
def served(tmp_path):
    cfg = tmp_path / "params.json"
    Params(w_init_std_mv=0.5, r0_mv=0.3).save(cfg)
    proc, path = start_serve(["--backend", "board-model", "--config", str(cfg), "--n-in", str(N_IN),
                              "--duration-ms", str(DUR_MS)])
    yield path
    rc, tail = stop_serve(proc)
    assert rc == 0 and "stopped:" in tail, tail


@pytest.fixture
def task():
    t = make_fig2([SEED], n_in=N_IN, duration_ms=DUR_MS, n_target_spikes=3)
    return t["inputs"][0], t["targets"], t["task"]


def train(spec, p, task, out, trials=6, **kw):
    x, y, info = task
    with Board.open(spec, p, **kw) as board:
        return hil_train(board, p, x, y, seed=SEED, trials=trials, out_dir=out, backend=spec,
                         task=info, snapshot_every=3, r0_drop=[(3, 4)], plots=False)


def assert_same_runs(a, b, trials):
    ra, rb = RunRecord.open(a), RunRecord.open(b)
    for k in range(trials):
        assert np.array_equal(ra.read_trial(k)["outputs"], rb.read_trial(k)["outputs"]), f"trial {k}"
    sa, sb = ra.read_snapshot(trials)["state"], rb.read_snapshot(trials)["state"]
    assert sa.keys() == sb.keys()
    for name in sa:
        assert np.array_equal(sa[name], sb[name]), name


# --------------------------------------------------------------------------- serve
def test_training_through_the_pty_equals_the_in_process_run(served, task, tmp_path):
    p = base_params()
    m = train(f"serial:{served}", p, task, tmp_path / "pty")
    train("board-model", p, task, tmp_path / "direct")
    assert m["trials_done"] == 6
    assert_same_runs(tmp_path / "pty", tmp_path / "direct", 6)


def test_a_host_may_disconnect_and_reconnect(served):
    p = base_params()
    x = np.random.default_rng(0).random((300, p.n_in)) < 0.05
    with Board.open(f"serial:{served}", p) as b:
        b.run(x[:200])
        assert b.identity.baud == 3_000_000 and b.identity.clock_hz == 12_000_000
    # a host that vanishes mid-request leaves a cut-off frame and an unread reply behind
    fd = os.open(served, os.O_RDWR | os.O_NOCTTY)
    os.write(fd, bytes.fromhex("00 07 01 02"))
    os.close(fd)
    with Board.open(f"serial:{served}", p) as b:              # the same device, still powered
        assert b.read_reg("STEP_COUNT") == 200
        b.run(x[200:])
        assert b.read_reg("STEP_COUNT") == 300


def test_cli_trains_through_serve(served, tmp_path):
    cfg = tmp_path / "params.json"                            # written by the fixture
    rec = tmp_path / "link.json"
    rc = main(["train", "fig2", "--backend", f"serial:{served}", "--config", str(cfg), "--n-in", str(N_IN),
               "--duration-ms", str(DUR_MS), "--trials", "2", "--out", str(tmp_path / "run"),
               "--record-link", str(rec), "--progress", "never"])
    assert rc == 0
    t = Transcript.load(rec)
    assert t.exchanges and t.config["baud"] == 3_000_000
    assert replay_on(t, "board-model") is None                # a fresh device answers the same


def test_serve_refuses_what_it_cannot_serve():
    with pytest.raises(ServeError, match="serve takes --backend board-model or rtl"):
        open_device("serial", serve_config(base_params()))
    with pytest.raises(ServeError, match="--baud 5000000"):
        serve_config(base_params(), baud=5_000_000)         # fewer than 4 clocks per bit at 12 MHz
    assert serve_config(base_params(), baud=1_000_000).baud == 1_000_000
    assert main(["serve", "--backend", "model"]) == 2
    assert main(["serve", "--config", "/nonexistent.json"]) == 2


def test_served_params_are_what_train_fig2_expects():
    assert served_params() == hil_params(fig2_params())
    assert served_params(error_mode="host", feedback_latency=3).error_delay == 3
    assert served_params(Params(n_in=7), network="config").n_in == 7


# --------------------------------------------------------------------------- discovery
class FakePort:
    def __init__(self, device, vid=None, pid=None, description="n/a"):
        self.device, self.vid, self.pid, self.description = device, vid, pid, description


@pytest.fixture
def in_thread():
    """Devices served by PtyServer in this process (faster than a subprocess)."""
    servers = []

    def start(p=None):
        s = PtyServer(open_device("board-model", serve_config(p or base_params())))
        s.start_thread()
        servers.append(s)
        return s.path
    yield start
    for s in servers:
        s.close()


def test_boards_finds_the_served_device(in_thread, monkeypatch, capsys):
    pty = in_thread()
    ports = [FakePort(pty, 0x0403, 0x6010, "Dual RS232-HS"), FakePort("/dev/spikeloop-none", 0x0403, 0x6015),
             FakePort("/dev/ttyS0")]
    monkeypatch.setattr(discovery, "comports", lambda: ports)
    found = {f.device: f for f in discovery.discover()}
    assert found[pty].answered and found[pty].board == "iCEBreaker"      # 12 MHz: not the Tang Nano
    assert found[pty].identity.params == base_params()
    assert found["/dev/spikeloop-none"].probed and not found["/dev/spikeloop-none"].answered
    assert "cannot open" in found["/dev/spikeloop-none"].error
    assert not found["/dev/ttyS0"].probed
    assert discovery.auto_port() == pty
    with Board.open("serial:auto", base_params()) as b:
        assert b.params == base_params()
    assert main(["boards"]) == 0
    out = capsys.readouterr().out
    assert "spikeloop board: iCEBreaker" in out and "3000000 baud" in out and "1 spikeloop board found" in out


def test_serial_auto_names_the_ports_when_not_exactly_one(in_thread, monkeypatch):
    a, b = in_thread(), in_thread()
    monkeypatch.setattr(discovery, "comports", lambda: [FakePort(a, 0x0403, 0x6010), FakePort(b, 0x0403, 0x6015)])
    with pytest.raises(BackendError, match=f"found 2 boards .*{a}.*{b}.*serial:PORT"):
        Board.open("serial:auto", base_params())
    monkeypatch.setattr(discovery, "comports", lambda: [FakePort("/dev/ttyS0")])
    with pytest.raises(BackendError, match="no spikeloop board.*other ports: /dev/ttyS0"):
        discovery.auto_port()
    # a port with a board's chip that does not answer: named, with why
    monkeypatch.setattr(discovery, "comports", lambda: [FakePort(os.devnull, 0x0403, 0x6010)])
    with pytest.raises(BackendError, match=f"probed {os.devnull}"):
        discovery.auto_port(timeout=0.1)


def test_the_usb_table_has_every_supported_board():
    assert set(SUPPORTED_BOARDS) == {"icebreaker", "ulx3s", "tangnano9k"}
    assert BOARD_SERIAL_IDS[(0x0403, 0x6010)] == ("icebreaker", "tangnano9k")
    assert BOARD_SERIAL_IDS[(0x0403, 0x6015)] == ("ulx3s",)


# --------------------------------------------------------------------------- link transcripts
def test_a_recorded_session_replays_on_a_fresh_device(task, tmp_path):
    p = base_params()
    path = tmp_path / "session.json"
    train("board-model", p, task, tmp_path / "run", trials=2, record_link=path)
    t = Transcript.load(path)
    assert t.source == "board-model" and t.soc_config().params == p
    times = t.meta["timestamps"]
    assert len(times) == len(t.exchanges) and all(r is not None and r >= s for s, r in times)
    assert times == sorted(times)
    assert replay_on(t, "board-model") is None
    # the replay is a real check: a different device answers differently
    other = Transcript(t.soc_config().replace(baud=1_000_000).to_dict(), t.exchanges)
    assert replay_on(other, "board-model") is not None


def test_compare_records_one_transcript_per_side(tmp_path):
    p = base_params()
    x = np.zeros((50, p.n_in), bool)
    opener = recording_opener(tmp_path / "link.json")
    for name in ("board-model", "board-model"):
        with opener(name, p) as b:
            b.run(x)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["link-a-board-model.json", "link-b-board-model.json"]


# --------------------------------------------------------------------------- rtl behind the pty
@pytest.mark.slow
def test_rtl_behind_the_pty_matches_board_model(tmp_path):
    cfg = tmp_path / "params.json"
    p = Params(n_in=8, n_out=3)                # the SoC build the rtl backend tests share
    p.save(cfg)
    proc, path = start_serve(["--backend", "rtl", "--config", str(cfg), "--network", "config"], wait_s=900)
    try:
        want = hil_params(p)
        x = np.random.default_rng(4).random((60, p.n_in)) < 0.3
        with Board.open(f"serial:{path}", want, timeout=RTL_TIMEOUT) as b:
            assert b.identity.baud == 3_000_000
            got = b.run(x)
            state = b.state()
        with Board.open("board-model", want) as m:
            assert np.array_equal(got, m.run(x))
            ref = m.state()
        for name in ref:
            assert np.array_equal(state[name], ref[name]), name
    finally:
        rc, tail = stop_serve(proc)
    assert rc == 0, tail


@pytest.mark.slow
def test_a_killed_rtl_serve_leaves_no_simulation(tmp_path):
    """SIGKILL gives serve no chance to clean up: the rtl server notices its parent is gone."""
    cfg = tmp_path / "params.json"
    Params(n_in=8, n_out=3).save(cfg)
    proc, path = start_serve(["--backend", "rtl", "--config", str(cfg), "--network", "config"], wait_s=900)
    assert descendants(proc.pid), "the rtl simulation runs below serve"
    rc, _ = stop_serve(proc, signal.SIGKILL)
    assert rc == -signal.SIGKILL

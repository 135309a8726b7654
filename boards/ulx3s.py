"""Radiona ULX3S: Lattice ECP5 (12F, 25F, 45F or 85F), 25 MHz oscillator, FTDI FT231X.

The SoC runs from the 25 MHz oscillator (it meets timing there, see docs/boards.md); the link
runs at 1 Mbaud, the fastest FT231X rate that 25 MHz divides exactly (25 clocks per bit; the
chip's 3 Mbaud would need 8.33). Each variant's preset fills most of its block RAM.
"""

from __future__ import annotations

from functools import partial

from spikeloop.host.board_ids import SUPPORTED_BOARDS

from .board import Board, BoardTop, Resources

__all__ = ["BOARDS", "Top", "preset"]

# ECP5 family data sheet (Lattice FPGA-DS-02012): sysMEM EBR of 18 kbit, as 16k x 1 ... 512 x 36
# (36 in pseudo-dual-port mode), byte enables of 9 bits in the 18- and 36-bit shapes.
_ECP5_MODES = ((1, 16384, 1), (2, 8192, 2), (4, 4096, 4), (9, 2048, 9), (18, 1024, 9),
               (36, 512, 9))

# (LUTs, EBR blocks, 18 x 18 multipliers) from the same data sheet's device table.
_DEVICES = {
    "12f": (12_000, 32, 28),
    "25f": (24_000, 56, 28),
    "45f": (44_000, 108, 72),
    "85f": (84_000, 208, 156),
}

# Network per variant that fills most of its EBR at the default formats: the 72-bit synapse word
# (36 write-enable groups of 2 bits) and the 24-bit q take 48 EBR per 8192 synapses per lane;
# (n_in, n_hidden, n_out).
_PRESETS = {
    "12f": (64, 32, 64),
    "25f": (128, 32, 128),
    "45f": (200, 32, 200),
    "85f": (256, 64, 128),
}


def preset(variant: str = "85f"):
    """The preset network of the ULX3S ``variant`` (default formats, one lane)."""
    from spikeloop.hdl.config import CoreConfig
    from spikeloop.params import Params
    n_in, n_hidden, n_out = _PRESETS[variant]
    return CoreConfig.for_lanes(Params(n_in=n_in, n_hidden=n_hidden, n_out=n_out), 1)


class Top(BoardTop):
    """The SoC on the ULX3S: LED 0 heartbeat, 1 executing, 2 sending, 3 link error."""
    LEDS = {"heartbeat": ("led", 0), "busy": ("led", 1), "tx": ("led", 2), "error": ("led", 3)}


def _board(variant: str) -> Board:
    luts, ebr, mult = _DEVICES[variant]
    return Board(
        name=f"ulx3s-{variant}",
        title=f"Radiona ULX3S ({variant.upper()})",
        platform=f"amaranth_boards.ulx3s:ULX3S_{variant.upper()}_Platform",
        family="ecp5",
        device=f"LFE5U-{variant.upper()}",
        usb=SUPPORTED_BOARDS["ulx3s"],
        osc_hz=25_000_000,
        resources=Resources(logic=luts, bram=ebr, bram_bits=18432, bram_modes=_ECP5_MODES,
                            mult=mult, lutram=(4, 16)),
        preset=partial(preset, variant),
        top="spikeloop.boards.ulx3s:Top",
        notes="USB ID: FTDI's default for the FT231X, which the ULX3S keeps. nextpnr builds "
              "the 12F on the 25F die and reports the 25F's resources as available.",
    )


BOARDS = {b.name: b for b in map(_board, _DEVICES)}

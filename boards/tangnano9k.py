"""Sipeed Tang Nano 9K: Gowin GW1NR-9 (LV9QN88PC6/I5), 27 MHz oscillator, BL702 USB bridge.

amaranth-boards has the platform (``TangNano9kPlatform``: clock on pin 52, UART rx 18 / tx 17,
six LEDs). It builds with the open Gowin flow (Yosys, nextpnr-himbaechel, gowin_pack; see
:mod:`.gowin`) and is programmed with ``openFPGALoader -b tangnano9k`` (``spikeloop flash``).

The SoC does not fit yet, and no preset can make it: the logic is the engine and the Core's
control, not the network. Packed by nextpnr, 8-0-2 takes LUT4 7818 + ALU 2222 = 10040 of the
8640 LUT positions, the preset 13282 (docs/boards.md). The preset stays the network whose
memories fill the block RAM (nextpnr: 23 of 26 BSRAM), for when the logic shrinks.
"""

from __future__ import annotations

from spikeloop.host.board_ids import SUPPORTED_BOARDS

from .board import Board, BoardTop, Resources

__all__ = ["BOARD", "Top", "preset"]


def preset():
    """A 64-32-32 network: 3072 synapses, 25 of the 26 BSRAMs estimated (nextpnr packed 23) at
    the default formats."""
    from spikeloop.hdl.config import CoreConfig
    from spikeloop.params import Params
    return CoreConfig.for_lanes(Params(n_in=64, n_hidden=32, n_out=32), 1)


class Top(BoardTop):
    """The SoC on the Tang Nano 9K: LED 0 heartbeat, 1 executing, 2 sending, 3 link error."""
    LEDS = {"heartbeat": ("led", 0), "busy": ("led", 1), "tx": ("led", 2), "error": ("led", 3)}


BOARD = Board(
    name="tangnano9k",
    title="Sipeed Tang Nano 9K",
    platform="amaranth_boards.tang_nano_9k:TangNano9kPlatform",
    family="gowin",
    device="GW1NR-LV9QN88PC6/I5",
    usb=SUPPORTED_BOARDS["tangnano9k"],
    osc_hz=27_000_000,
    # Gowin GW1NR series data sheet (DS117): GW1NR-9 8640 LUT4s, 26 B-SRAM blocks of 18 kbit
    # (468 kbit), 20 18 x 18 multipliers (nextpnr-himbaechel reports the same 8640 LUT4, 26
    # BSRAM and 20 MULT18X18). Byte enables assumed as on the ECP5: the estimate gave 25 BSRAM
    # for the preset, nextpnr packed 23.
    resources=Resources(logic=8640, bram=26, bram_bits=18432,
                        bram_modes=((1, 16384, 1), (2, 8192, 2), (4, 4096, 4), (9, 2048, 9),
                                    (18, 1024, 9), (36, 512, 9)),
                        mult=20, lutram=(4, 16)),
    preset=preset,
    top="spikeloop.boards.tangnano9k:Top",
    notes="USB ID: Sipeed's BL702 firmware enumerates as an FT2232 (0403:6010) so that "
          "openFPGALoader's FTDI cable drives it; not checked on a board here.",
)

"""1BitSquared iCEBreaker: iCE40 UP5K, 12 MHz oscillator, FTDI FT2232H (channel B is the UART).

The whole SoC does not fit the UP5K yet (about 8900 of its 5280 logic cells): ``spikeloop build
--board icebreaker`` reports nextpnr's reason. The preset is the 100-32-100 network whose synapse
words fill one row of the four SPRAMs (``configs/up5k-100x32x100.toml``, ``single_port``).
"""

from __future__ import annotations

from spikeloop.host.board_ids import SUPPORTED_BOARDS

from .board import CONFIGS, Board, BoardTop, Resources

__all__ = ["BOARD", "Top", "preset"]


def preset():
    """The 100-32-100 network in the UP5K's SPRAMs (narrow formats, one lane, single port)."""
    from spikeloop.hdl.config import CoreConfig
    from spikeloop.params import Params
    return CoreConfig.for_lanes(Params.load(CONFIGS / "up5k-100x32x100.toml"), 1, single_port=True)


class Top(BoardTop):
    """The SoC on the iCEBreaker: green LED heartbeat, red LED link activity."""
    LEDS = {"heartbeat": ("led_g", 0), "activity": ("led_r", 0)}


BOARD = Board(
    name="icebreaker",
    title="1BitSquared iCEBreaker",
    platform="amaranth_boards.icebreaker:ICEBreakerPlatform",
    family="ice40",
    device="iCE40UP5K-SG48",
    usb=SUPPORTED_BOARDS["icebreaker"],
    osc_hz=12_000_000,
    # iCE40 UltraPlus data sheet (Lattice FPGA-DS-02008): UP5K 5280 LUT4s, 30 sysMEM blocks of
    # 4 kbit (a bit-wise write mask only as 256 x 16), 4 SPRAM blocks of 256 kbit, 8 DSP
    # (16 x 16 multiply-accumulate) blocks.
    resources=Resources(logic=5280, bram=30, bram_bits=4096,
                        bram_modes=((16, 256, 1), (8, 512, 8), (4, 1024, 4), (2, 2048, 2)),
                        spram=4, spram_bits=16384 * 16, mult=8),
    preset=preset,
    top="spikeloop.boards.icebreaker:Top",
    notes="USB ID: FTDI's default for the FT2232H, which the iCEBreaker keeps.",
)

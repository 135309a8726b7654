"""What a board offers, and the top level that puts the SoC on it.

A :class:`Board` is plain data (device, clock, serial chip, resources) so the registry, the
resource check and the CLI can describe a board without importing its platform; :class:`BoardTop`
is the shared top level the board modules specialise with their LED map.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib import io

from spikeloop.host.board_ids import BoardUSB

__all__ = ["Board", "Resources", "BoardTop", "CONFIGS"]

#: The repository's ``configs/`` folder (the presets' parameter files).
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@dataclass(frozen=True)
class Resources:
    """Datasheet resources of the FPGA (what nextpnr should report as "available").

    Parameters
    ----------
    logic : int
        Logic cells (iCE40 LCs, ECP5 / Gowin LUT4s).
    bram : int
        Block RAMs.
    bram_bits : int
        Bits of one block RAM.
    bram_modes : tuple of (width, depth, byte-enable bits)
        The shapes one block RAM takes and the bits each of its write enables covers (the
        packing the check assumes).
    spram, spram_bits : int
        Single-port RAMs and their bits (the UP5K's four 16k x 16).
    mult : int
        Hard multipliers (iCE40 SB_MAC16, ECP5 / Gowin 18 x 18).
    lutram : (width, depth) or None
        The LUT RAM primitive (the ECP5's DPR16X4 is 4 x 16); None when the family has none
        (the iCE40).
    """
    logic: int
    bram: int
    bram_bits: int
    bram_modes: tuple[tuple[int, int, int], ...]
    spram: int = 0
    spram_bits: int = 0
    mult: int = 0
    lutram: tuple[int, int] | None = None

    # Yosys' memory_libmap costs (ECP5 library: a block RAM 128, a 16 x 4 LUT RAM 4) and the read
    # multiplexer of a LUT RAM deeper than one primitive, 2 per bit and extra primitive row: the
    # value that reproduces every choice in the ULX3S builds of docs/boards.md.
    BRAM_COST, LUTRAM_COST, MUX_COST = 128, 4, 2

    def in_lutram(self, width: int, depth: int, groups: int = 1, transparent: bool = False) -> bool:
        """Whether Yosys puts this memory in LUT RAM (or LUT ROM) rather than block RAM."""
        if self.lutram is None:
            return False
        if transparent:            # a write-through read costs block RAM extra logic
            return True
        lw, ld = self.lutram
        rows = -(-depth // ld)
        cost = self.LUTRAM_COST * -(-width // lw) * rows + self.MUX_COST * (rows - 1) * width
        return cost <= self.BRAM_COST * self.blocks(width, depth, groups)   # a tie: LUT RAM

    @property
    def bram_total_bits(self) -> int:
        return self.bram * self.bram_bits

    def blocks(self, width: int, depth: int, groups: int = 1) -> int:
        """Block RAMs one ``width`` x ``depth`` memory takes in its best shape, when its word has
        ``groups`` write enables of ``width // groups`` bits each.

        Yosys puts each write-enable group on whole byte-enable lanes of a block (a shape
        without byte enables has one lane, the whole width): the synapse word's 2-bit groups
        make the ECP5 use its 8192 x 2 shape (checked against the ULX3S-85F build, where this
        gives nextpnr's 161 DP16KD exactly).
        """
        g = width // groups
        best = None
        for mw, md, lane in self.bram_modes:
            rows = -(-depth // md)
            if groups == 1:
                cols = -(-width // mw)
            else:
                lanes, per_group = mw // lane, -(-g // lane)
                cols = (-(-groups // (lanes // per_group)) if per_group <= lanes
                        else groups * -(-g // mw))
            best = rows * cols if best is None else min(best, rows * cols)
        return best


@dataclass(frozen=True)
class Board:
    """One board the SoC can be built for.

    Parameters
    ----------
    name : str
        Registry key (``spikeloop build --board NAME``).
    title : str
    platform : str
        ``"module:Class"`` of its Amaranth platform, imported only when building.
    family : str
        ``"ice40"``, ``"ecp5"`` or ``"gowin"``: which nextpnr and which report cell names.
    device : str
        The FPGA part, as the datasheet names it.
    usb : BoardUSB
        Its entry of :data:`spikeloop.host.board_ids.SUPPORTED_BOARDS`: the USB-serial chip (where
        the host finds the board), the SoC clock of a default build and its link rate.
    osc_hz : int
        The board's oscillator (the platform's default clock). A build for another clock gets
        it from the PLL (:mod:`spikeloop.boards.pll`).
    resources : Resources
    preset : callable
        ``preset() -> SoCConfig`` minus the link: the network that fills this board's memory.
    top : str
        ``"module:Class"`` of the board's top level.
    notes : str
        Where the facts above come from.
    """
    name: str
    title: str
    platform: str
    family: str
    device: str
    usb: BoardUSB
    osc_hz: int
    resources: Resources
    preset: Callable = field(compare=False)
    top: str = ""
    notes: str = ""

    @property
    def clock_hz(self) -> int:
        """The SoC clock of a default build (the oscillator, or the PLL's output)."""
        return self.usb.clock_hz

    @property
    def baud(self) -> int:
        """The link rate of a default build."""
        return self.usb.baud

    def baud_for(self, clock_hz: int) -> int:
        """The fastest rate the board's serial chip runs that divides ``clock_hz`` exactly with at
        least 4 clocks per bit (the UART's divisor is an integer; an exact one costs no margin)."""
        for baud in self.usb.bauds:
            if clock_hz % baud == 0 and clock_hz // baud >= 4:
                return baud
        rates = ", ".join(f"{b:,}" for b in self.usb.bauds)
        raise ValueError(f"no link rate of the {self.usb.chip} ({rates} baud) divides a "
                         f"{clock_hz / 1e6:g} MHz clock exactly")

    def pll(self, clock_hz: int):
        """The PLL setting that makes ``clock_hz`` (None for the oscillator itself); raises
        :class:`spikeloop.boards.pll.PLLError` when the PLL cannot make it exactly."""
        from .pll import pll_setting
        return None if clock_hz == self.osc_hz else pll_setting(self.family, self.osc_hz, clock_hz)

    @property
    def usb_id(self) -> str:
        return self.usb.usb_id

    @property
    def usb_chip(self) -> str:
        return self.usb.chip

    def platform_class(self):
        mod, cls = self.platform.split(":")
        return getattr(importlib.import_module(mod), cls)

    def top_class(self):
        mod, cls = self.top.split(":")
        return getattr(importlib.import_module(mod), cls)

    def soc_config(self, core, clock_hz: int | None = None, rx_fifo: int | None = None):
        """The SoC configuration of ``core`` on this board at ``clock_hz`` (default: the board's
        default clock) and the fastest link rate that clock divides; ``rx_fifo`` as in
        :class:`~spikeloop.hdl.config.SoCConfig`."""
        from spikeloop.hdl.config import SoCConfig
        clock = self.clock_hz if clock_hz is None else int(clock_hz)
        baud = self.baud if clock == self.clock_hz else self.baud_for(clock)
        return SoCConfig(core, clock_hz=clock, baud=baud, rx_fifo=rx_fifo)


def _family(platform) -> str:
    from amaranth.vendor import LatticeECP5Platform, LatticeICE40Platform
    if isinstance(platform, LatticeECP5Platform):
        return "ecp5"
    if isinstance(platform, LatticeICE40Platform):
        return "ice40"
    return type(platform).__name__


class BoardTop(Elaboratable):
    """The SoC on a board: the oscillator as ``sync``, the UART on the USB-serial chip's pins, LEDs.

    ``LEDS`` maps a role to a platform resource ``(name, number)``: ``heartbeat`` (the clock runs),
    ``busy`` (executing a request), ``tx`` (sending), ``error`` (a link error was counted) and
    ``activity`` (busy or sending). The SoC's status bits last a few cycles, so each LED is held
    on for ``2**HOLD_BITS`` cycles after the bit falls, long enough to see.

    Parameters
    ----------
    config : SoCConfig
        Its ``clock_hz`` is the oscillator (the platform's default clock domain) or a clock the
        FPGA's PLL makes from it exactly (:func:`spikeloop.boards.pll.pll_clock_domain`).
    """
    LEDS: dict[str, tuple[str, int]] = {}
    HOLD_BITS = 20

    def __init__(self, config):
        from spikeloop.hdl.soc import SoC
        self.config = config
        self.soc = SoC(config)

    def elaborate(self, platform):
        from .pll import pll_clock_domain, pll_setting
        m = Module()
        osc = int(platform.default_clk_frequency)
        if osc != self.config.clock_hz:
            pll_clock_domain(m, platform, pll_setting(_family(platform), osc, self.config.clock_hz))
        m.submodules.soc = soc = self.soc
        uart = platform.request("uart", 0, dir="-")   # rts/dtr (ULX3S) stay unused
        m.submodules.rx_buf = rx = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx = io.Buffer("o", uart.tx)
        m.d.comb += [soc.rx.eq(rx.i), tx.o.eq(soc.tx)]   # the UART synchronises rx itself

        beat = Signal(max(1, self.config.clock_hz.bit_length()))
        m.d.sync += beat.eq(beat + 1)
        level = {"heartbeat": beat[-1], "busy": soc.status[0], "tx": soc.status[1],
                 "error": soc.status[2], "activity": soc.status[0] | soc.status[1]}
        for role, (name, number) in self.LEDS.items():
            led = Signal(name=f"led_{role}")
            if role == "heartbeat":
                m.d.comb += led.eq(level[role])
            else:
                hold = Signal(self.HOLD_BITS, name=f"hold_{role}")
                with m.If(level[role]):
                    m.d.sync += hold.eq((1 << self.HOLD_BITS) - 1)
                with m.Elif(hold != 0):
                    m.d.sync += hold.eq(hold - 1)
                m.d.comb += led.eq(hold != 0)
            m.submodules[f"led_{role}_buf"] = buf = io.Buffer(
                "o", platform.request(name, number, dir="-"))
            m.d.comb += buf.o.eq(led)
        return m


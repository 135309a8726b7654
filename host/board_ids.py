"""USB serial chips of the supported boards: which ports ``spikeloop boards`` and ``serial:auto`` probe.

One table, imported by discovery (:mod:`spikeloop.host.discovery`) and meant to be imported by the
``boards/`` package too, so that a board's USB identity is written down once. A VID:PID only says
which serial chip is on the other end of the cable (two boards here share one), so discovery
always asks the device itself (IDENTIFY) and uses the clock it reports to tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BoardUSB", "SUPPORTED_BOARDS", "BOARD_SERIAL_IDS", "boards_for"]


@dataclass(frozen=True)
class BoardUSB:
    """How a board shows up on USB, and the clock and link rate its build runs at (what IDENTIFY
    reports). :mod:`spikeloop.boards` takes these from here, so they are written down once."""
    name: str
    title: str
    chip: str
    vid: int
    pid: int
    clock_hz: int
    baud: int
    bauds: tuple[int, ...] = ()

    def __post_init__(self):
        if not self.bauds:
            object.__setattr__(self, "bauds", (self.baud,))

    @property
    def usb_id(self) -> str:
        """``"VID:PID"`` in hex, as ``lsusb`` prints it."""
        return f"{self.vid:04x}:{self.pid:04x}"


#: Sources: iCEBreaker — FTDI FT2232H, FTDI's default 0403:6010 (the FPGA UART is its second
#: interface, usually the higher-numbered ttyUSB); ULX3S — FTDI FT231X, FTDI's default 0403:6015;
#: Tang Nano 9K — its on-board BL702 runs a firmware that presents itself as an FT2232 (JTAG on the
#: first interface, UART on the second), 0403:6010: openFPGALoader's board table
#: (src/board.hpp) drives "tangnano9k" through its "ft2232" cable, defined as 0403:6010 in
#: src/cable.hpp. Oscillators: 12 MHz (iCEBreaker), 25 MHz (ULX3S), 27 MHz (Tang Nano 9K).
#: ``clock_hz`` is the SoC clock of a default build: the iCEBreaker and the Tang Nano 9K run from their
#: oscillators; the ULX3S from its PLL at 45 MHz (25 MHz x 9 / 5), the fastest clock every ULX3S
#: preset meets with margin (docs/boards.md) that a 3 Mbaud link divides exactly (15 clocks per bit;
#: the oscillator's 25 MHz is 8.33). ``bauds``: the rates the host may use with the chip, fastest first
#: (the FT231X's maximum is 3 Mbaud; the FT2232H runs 3 Mbaud and more, the host opens 3 Mbaud).
SUPPORTED_BOARDS: dict[str, BoardUSB] = {b.name: b for b in (
    BoardUSB("icebreaker", "iCEBreaker", "FTDI FT2232H", 0x0403, 0x6010, 12_000_000, 3_000_000,
             (3_000_000, 2_000_000, 1_000_000)),
    BoardUSB("ulx3s", "ULX3S", "FTDI FT231X", 0x0403, 0x6015, 45_000_000, 3_000_000,
             (3_000_000, 2_000_000, 1_000_000)),
    BoardUSB("tangnano9k", "Tang Nano 9K", "Bouffalo BL702 (FT2232-compatible firmware)",
             0x0403, 0x6010, 27_000_000, 1_000_000),
)}

#: (VID, PID) -> the names of the boards whose serial chip reports it.
BOARD_SERIAL_IDS: dict[tuple[int, int], tuple[str, ...]] = {}
for _b in SUPPORTED_BOARDS.values():
    BOARD_SERIAL_IDS[(_b.vid, _b.pid)] = BOARD_SERIAL_IDS.get((_b.vid, _b.pid), ()) + (_b.name,)
del _b


def boards_for(vid: int | None, pid: int | None, clock_hz: int | None = None) -> tuple[BoardUSB, ...]:
    """The supported boards a port with this VID:PID can be; narrowed by the clock IDENTIFY
    reported, when given (falls back to all candidates when no clock matches)."""
    if vid is None or pid is None:
        return ()
    found = tuple(SUPPORTED_BOARDS[n] for n in BOARD_SERIAL_IDS.get((vid, pid), ()))
    if clock_hz is not None:
        return tuple(b for b in found if b.clock_hz == clock_hz) or found
    return found

"""The spikeloop system on chip: UART, protocol engine and Core behind two pins.

:class:`EngineCore` is the engine and the Core joined, with byte streams instead of pins (what the
cocotb tests drive, one byte per clock); :class:`SoC` adds the UART. A board file wraps
:class:`SoC`; the simulation bridge drives its ``rx`` / ``tx``. See ``docs/link.md``.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .config import SoCConfig
from .core import Core
from .engine import ProtocolEngine
from .uart import UART, uart_divisor

__all__ = ["EngineCore", "SoC"]


class EngineCore(wiring.Component):
    """:class:`ProtocolEngine` driving a :class:`Core`, with byte streams for the link.

    Parameters
    ----------
    config : SoCConfig
        The Core's configuration (``config.core``) and the engine's link settings.

    Members
    -------
    rx : In(stream.Signature(8))
        Received bytes (the engine's input).
    tx : Out(stream.Signature(8))
        Bytes to send.
    uart_lost : In(1)
        The UART dropped a received byte in this cycle (0 when there is no UART).
    status : Out(3)
        The engine's status bits.
    """

    def __init__(self, config: SoCConfig):
        self.config = config
        self.engine = ProtocolEngine(config)
        self.core = Core(config.core)
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "uart_lost": In(1),
            "status": Out(3),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = eng = self.engine
        m.submodules.core = self.core
        wiring.connect(m, eng.core, self.core)
        wiring.connect(m, wiring.flipped(self.rx), eng.rx)
        wiring.connect(m, eng.tx, wiring.flipped(self.tx))
        m.d.comb += [eng.uart_lost.eq(self.uart_lost), self.status.eq(eng.status)]
        return m


class SoC(wiring.Component):
    """UART + :class:`ProtocolEngine` + :class:`Core`: the whole device behind ``rx`` / ``tx``.

    Parameters
    ----------
    config : SoCConfig
        The Core's configuration (``config.core``) and the link's: the UART divisor is
        ``round(clock_hz / baud)`` (at least 4, within 2 %); ``max_payload`` is the engine's
        frame and reply buffer limit (reported by IDENTIFY).

    Members
    -------
    rx : In(1)
        Serial input, idle high.
    tx : Out(1)
        Serial output, idle high.
    status : Out(3)
        For LEDs: bit 0 executing a request, bit 1 transmitting, bit 2 a link error was counted.

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`SoCConfig`.
    ValueError
        If the baud rate does not divide the clock (see ``uart_divisor``) or the engine refuses
        the Core's address map.
    """

    def __init__(self, config: SoCConfig):
        try:
            if not isinstance(config, SoCConfig):
                raise TypeError(f"config must be a SoCConfig, not {type(config).__name__}")
            uart_divisor(config.clock_hz, config.baud)
        except (TypeError, ValueError):
            self._MustUse__silence = True
            raise
        self.config = config
        self.params, self.lanes, self.in_width = config.params, config.lanes, config.in_width
        self.clock_hz, self.baud, self.max_payload = config.clock_hz, config.baud, config.max_payload
        self.link = EngineCore(config)
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "status": Out(3),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart = uart = UART(self.clock_hz, self.baud)
        m.submodules.link = link = self.link
        # the engine takes no bytes while it checks and executes a frame: the next ones wait here
        if self.config.rx_fifo_bytes:
            m.submodules.rx_fifo = fifo = SyncFIFOBuffered(width=8, depth=self.config.rx_fifo_bytes)
            wiring.connect(m, uart.rx_data, fifo.w_stream)
            wiring.connect(m, fifo.r_stream, link.rx)
        else:
            wiring.connect(m, uart.rx_data, link.rx)
        wiring.connect(m, link.tx, uart.tx_data)
        m.d.comb += [
            uart.rx.eq(self.rx), self.tx.eq(uart.tx),
            link.uart_lost.eq(uart.lost), self.status.eq(link.status),
        ]
        return m

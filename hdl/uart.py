"""8N1 UART: :class:`UARTRx`, :class:`UARTTx` and the :class:`UART` wrapper.

Frames are 8N1, LSB first, idle high: one start bit (0), eight data bits, one stop bit (1).
Both halves count ``divisor`` clocks per bit (``divisor >= 4``); :class:`UART` derives the
divisor from the clock and baud rates. See ``docs/hardware.md`` ("UART").
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UART", "UARTRx", "UARTTx", "uart_divisor", "MIN_DIVISOR", "BAUD_TOLERANCE",
           "COUNTER_BITS"]

#: Fewest clocks per bit the receiver supports (the start-bit check and ±2 % need them).
MIN_DIVISOR = 4
#: Largest relative error allowed between ``clk_hz / divisor`` and the requested baud rate.
BAUD_TOLERANCE = 0.02
#: Width of the saturating ``overrun`` and ``frame_error`` counters.
COUNTER_BITS = 16


def _check_divisor(component, divisor) -> int:
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < MIN_DIVISOR:
        component._MustUse__silence = True   # no "created but never used" warning
        raise ValueError(f"divisor must be an integer of at least {MIN_DIVISOR} clocks per bit, "
                         f"not {divisor!r}")
    return divisor


def _hz(f: float) -> str:
    for scale, unit in ((1e6, "MHz"), (1e3, "kHz")):
        if f >= scale:
            return f"{f / scale:g} {unit}"
    return f"{f:g} Hz"


def _num(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:g}"


def uart_divisor(clk_hz: float, baud: float) -> int:
    """Clocks per bit for *baud* at *clk_hz*: ``round(clk_hz / baud)``.

    Raises ``ValueError`` unless that is at least :data:`MIN_DIVISOR` and the resulting baud
    rate ``clk_hz / divisor`` is within :data:`BAUD_TOLERANCE` (2 %) of *baud*.
    """
    if not clk_hz > 0 or not baud > 0:
        raise ValueError(f"clock and baud rates must be positive, got a {_hz(clk_hz)} clock "
                         f"and {_num(baud)} baud")
    ratio = clk_hz / baud
    divisor = round(ratio)
    if divisor >= MIN_DIVISOR and abs(ratio / divisor - 1) <= BAUD_TOLERANCE:
        return divisor
    good = clk_hz / MIN_DIVISOR
    raise ValueError(
        f"baud must divide the clock to within 2 % with at least {MIN_DIVISOR} clocks per bit; "
        f"{_hz(clk_hz)} / {_num(baud)} = {ratio:.2f} clocks per bit "
        f"(usable rates are {_hz(clk_hz)} / n for an integer n >= {MIN_DIVISOR}, "
        f"e.g. {_num(good)}, {_num(clk_hz / (MIN_DIVISOR + 1))} or "
        f"{_num(clk_hz / (MIN_DIVISOR * 2))} baud)")


def _sat_inc(m: Module, counter: Signal) -> None:
    with m.If(counter != (1 << len(counter)) - 1):
        m.d.sync += counter.eq(counter + 1)


class UARTRx(wiring.Component):
    """8N1 receiver; ``divisor`` clocks per bit.

    Ports
    -----
    rx : In(1)
        Serial input (asynchronous, idle high); synchronised through two flip-flops.
    data : Out(stream.Signature(8))
        Received bytes. One-entry output register: ``valid`` stays high (payload stable) until
        ``ready``. A byte that completes while the register is still full (and not being taken
        in that cycle) is dropped and counted in ``overrun``; the line is never stalled.
    overrun : Out(16)
        Saturating count of bytes dropped because the consumer was not ready.
    lost : Out(1)
        High for the cycle in which a byte is dropped, also once ``overrun`` has saturated: what
        a counter that may be cleared (the engine's ``UART_OVERRUNS``) must count.
    frame_error : Out(16)
        Saturating count of frames whose stop bit was 0; such a frame emits no byte, and the
        receiver then waits for the line to go high before hunting for the next start bit.

    Timing: the falling edge of the start bit is seen (after the synchroniser) in cycle ``t0``;
    the start bit is re-checked at ``t0 + (divisor - 1) // 2`` (a shorter low pulse is ignored)
    and data/stop bits are sampled every ``divisor`` clocks after that. The byte appears on
    ``data`` in the cycle after the stop bit's mid-point sample, when the receiver is already
    hunting for the next start bit, so back-to-back frames from a transmitter up to ±2 % off
    the nominal rate are received.
    """

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(self, divisor)
        super().__init__({
            "rx": In(1, init=1),
            "data": Out(stream.Signature(8)),
            "overrun": Out(COUNTER_BITS),
            "lost": Out(1),
            "frame_error": Out(COUNTER_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        half = (d - 1) // 2

        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1, stages=2)

        count = Signal(range(d))      # clocks to the next sample point
        bits = Signal(range(8))       # data bits still to come, minus one
        shift = Signal(8)

        # Output register: taken when valid & ready; loadable if empty or being taken.
        with m.If(self.data.ready):
            m.d.sync += self.data.valid.eq(0)
        can_load = ~self.data.valid | self.data.ready

        tick = count == 0
        with m.If(~tick):
            m.d.sync += count.eq(count - 1)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += count.eq(half - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(tick):
                    with m.If(rx):
                        m.next = "IDLE"   # glitch: too short to be a start bit
                    with m.Else():
                        m.d.sync += [count.eq(d - 1), bits.eq(7)]
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(tick):
                    m.d.sync += [count.eq(d - 1), shift.eq(Cat(shift[1:], rx)),
                                 bits.eq(bits - 1)]
                    with m.If(bits == 0):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(tick):
                    with m.If(rx):
                        with m.If(can_load):
                            m.d.sync += [self.data.payload.eq(shift), self.data.valid.eq(1)]
                        with m.Else():
                            _sat_inc(m, self.overrun)
                            m.d.comb += self.lost.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        _sat_inc(m, self.frame_error)
                        m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter; ``divisor`` clocks per bit.

    Ports
    -----
    data : In(stream.Signature(8))
        Bytes to send. ``ready`` is high when idle and in the last clock of a stop bit, so a
        byte offered while one is being sent starts right after its stop bit (no idle gap).
        ``ready`` depends only on internal state.
    tx : Out(1)
        Serial output, registered, idle high.
    busy : Out(1)
        A frame is being sent (high from the byte's acceptance to the end of its stop bit).
    """

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(self, divisor)
        super().__init__({
            "data": In(stream.Signature(8)),
            "tx": Out(1, init=1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        d = self.divisor

        count = Signal(range(d))     # clocks left in the current bit, minus one
        left = Signal(range(11))     # bits left in the frame, including the current one
        shift = Signal(9, init=0x1FF)  # bits after the current one (data, then stop)

        tick = count == 0
        m.d.comb += [
            self.busy.eq(left != 0),
            self.data.ready.eq((left == 0) | ((left == 1) & tick)),
        ]
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [
                self.tx.eq(0),
                shift.eq(Cat(self.data.payload, 1)),
                left.eq(10),
                count.eq(d - 1),
            ]
        with m.Elif(left != 0):
            with m.If(tick):
                m.d.sync += [
                    self.tx.eq(shift[0]),
                    shift.eq(Cat(shift[1:], 1)),
                    left.eq(left - 1),
                    count.eq(d - 1),
                ]
            with m.Else():
                m.d.sync += count.eq(count - 1)
        return m


class UART(wiring.Component):
    """:class:`UARTRx` plus :class:`UARTTx` at ``baud`` from a ``clk_hz`` clock.

    The divisor is ``round(clk_hz / baud)`` (see :func:`uart_divisor`), e.g. 4 for 3 Mbaud
    from 12 MHz or 12 Mbaud from 48 MHz.

    Ports
    -----
    rx : In(1)                         serial input (idle high)
    tx : Out(1)                        serial output (idle high)
    rx_data : Out(stream.Signature(8)) received bytes
    tx_data : In(stream.Signature(8))  bytes to send
    tx_busy : Out(1)                   the transmitter is sending a frame
    overrun : Out(16)                  received bytes dropped (consumer not ready)
    lost : Out(1)                      a received byte is dropped in this cycle
    frame_error : Out(16)              frames with a 0 stop bit (dropped)
    """

    def __init__(self, clk_hz: float, baud: float):
        self.clk_hz = clk_hz
        self.baud = baud
        try:
            self.divisor = uart_divisor(clk_hz, baud)
        except ValueError:
            self._MustUse__silence = True
            raise
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "rx_data": Out(stream.Signature(8)),
            "tx_data": In(stream.Signature(8)),
            "tx_busy": Out(1),
            "overrun": Out(COUNTER_BITS),
            "lost": Out(1),
            "frame_error": Out(COUNTER_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = rx = UARTRx(self.divisor)
        m.submodules.tx = tx = UARTTx(self.divisor)
        wiring.connect(m, rx.data, wiring.flipped(self.rx_data))
        wiring.connect(m, wiring.flipped(self.tx_data), tx.data)
        m.d.comb += [
            rx.rx.eq(self.rx),
            self.tx.eq(tx.tx),
            self.tx_busy.eq(tx.busy),
            self.overrun.eq(rx.overrun),
            self.lost.eq(rx.lost),
            self.frame_error.eq(rx.frame_error),
        ]
        return m

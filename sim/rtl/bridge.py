"""Simulation-only byte pump around a design's UART pins, so Python moves whole words, not bits.

:class:`SimLinkBridge` wraps any component whose only link to the outside is a pair of UART
pins (``rx: In(1)``, ``tx: Out(1)``, 8N1) and gives the testbench two wide ports instead:

* **in** — Python writes up to ``width`` bytes into ``in_data`` with their number in
  ``in_count`` and toggles ``in_seq``. The bridge copies the word into its shift buffer as soon
  as the previous one is drained (``in_taken`` then equals ``in_seq`` again, so Python may load
  the next word: two words in flight, no gap on the line) and serialises it through its own
  :class:`~spikeloop.hdl.uart.UARTTx` into the design's ``rx`` pin, back to back.
* **out** — a :class:`~spikeloop.hdl.uart.UARTRx` on the design's ``tx`` pin collects bytes into
  an accumulator and hands it over (``out_data``, ``out_count``, ``out_seq`` toggles) when it
  holds ``width`` bytes, when a 0x00 delimiter arrives after at least one other byte (a COBS
  frame ends), or when the line has been quiet for ``idle_cycles`` with bytes pending. The
  handed-over word stays until Python toggles ``out_ack`` to match ``out_seq``; meanwhile the
  accumulator keeps collecting (and the receiver's one-byte register absorbs one more frame),
  and a hand-over due in that time happens at the release, with the bytes that came since.

Python therefore wakes once per word or frame, when the link goes quiet and on a slow poll
tick (all folded into one ``attn`` toggle), never per clock or per bit; the UART between the
bridge and the design is the real gateware, at ``divisor`` clocks per bit both ways.
"""

from __future__ import annotations

from collections.abc import Callable

from amaranth.hdl import Module, Shape, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from spikeloop.hdl.uart import COUNTER_BITS, MIN_DIVISOR, UARTRx, UARTTx

__all__ = ["SimLinkBridge", "BITS_PER_FRAME", "POLL_BITS"]

#: Bit times per byte on the wire: start, 8 data, stop.
BITS_PER_FRAME = 10
#: Width of the ``poll_cycles`` input.
POLL_BITS = 24


def _check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or (hi is not None and value > hi):
        rng = f"of at least {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"{name} must be an integer {rng}, not {value!r}")
    return value


class SimLinkBridge(wiring.Component):
    """Bulk byte pump between a testbench and a design's UART pins (simulation only).

    Parameters
    ----------
    dut_factory : callable
        Zero-argument callable returning the design: a ``wiring.Component`` with ports
        ``rx: In(1)`` and ``tx: Out(1)`` (any other ports are left unconnected).
    divisor : int
        Clocks per bit of the bridge's UART (``>= 4``); the design must use the same rate.
    width : int
        Bytes per word in each direction (1..1024).
    idle_cycles : int or None
        Quiet clocks on the design's ``tx`` after which pending bytes are handed over and
        ``line_idle`` rises; default four byte times (``40 * divisor``).

    Members
    -------
    dut : wiring.Component
        The wrapped design (instantiated once, here).
    in_data, in_count, in_seq : In
        Word to send, its byte count (0..width), and a toggle that hands it over.
    in_taken : Out(1)
        Equals ``in_seq`` once the word has been copied into the shift buffer.
    in_busy : Out(1)
        A word is waiting or bytes are still being shifted out.
    out_data, out_count, out_seq : Out
        Word received, its byte count (1..width), and a toggle on every hand-over.
    out_ack : In(1)
        Set equal to ``out_seq`` to release the handed-over word.
    line_idle : Out(1)
        The design's ``tx`` has been quiet for ``idle_cycles`` and nothing is left to hand over.
    poll_cycles : In(24)
        Period of the poll tick (0: none).
    attn : Out(1)
        Toggles at every event the testbench may want to act on: a word handed over, an input
        word taken, ``line_idle`` rising, ``in_busy`` falling, a poll tick. One ``ValueChange``
        on it is all the testbench waits for.
    overrun, frame_error : Out(16)
        The receiver's saturating counters: bytes lost (must stay 0) and bad stop bits.

    Raises
    ------
    ValueError
        If ``divisor``, ``width`` or ``idle_cycles`` is out of range.
    TypeError
        If ``dut_factory`` is not callable or the design lacks the UART pins.
    """

    def __init__(self, dut_factory: Callable[[], wiring.Component], divisor: int, *, width: int = 64,
                 idle_cycles: int | None = None):
        self.divisor = _check_int("divisor", divisor, MIN_DIVISOR)
        self.width = _check_int("width", width, 1, 1024)
        default_idle = 4 * BITS_PER_FRAME * divisor
        self.idle_cycles = _check_int("idle_cycles", default_idle if idle_cycles is None else idle_cycles, 1)
        if not callable(dut_factory):
            raise TypeError(f"dut_factory must be a callable returning a component, not {dut_factory!r}")
        dut = dut_factory()
        sig = getattr(dut, "signature", None)
        members = getattr(sig, "members", {})
        def pin(name, flow):
            if name not in members:
                return False
            mem = members[name]
            return (mem.is_port and mem.flow == flow
                    and Shape.cast(mem.shape).width == 1)
        ok = pin("rx", wiring.In) and pin("tx", wiring.Out)
        if not ok:
            dut._MustUse__silence = True       # refused, so never elaborated: no warning for it
            raise TypeError(f"the design must be a wiring.Component with ports rx: In(1) and tx: Out(1), "
                            f"not {sig!r}")
        self.dut = dut
        word = data.ArrayLayout(8, width)
        super().__init__({
            "in_data": In(word),
            "in_count": In(range(width + 1)),
            "in_seq": In(1),
            "in_taken": Out(1),
            "in_busy": Out(1),
            "out_data": Out(word),
            "out_count": Out(range(width + 1)),
            "out_seq": Out(1),
            "out_ack": In(1),
            "line_idle": Out(1),
            "poll_cycles": In(POLL_BITS),
            "attn": Out(1),
            "overrun": Out(COUNTER_BITS),
            "frame_error": Out(COUNTER_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        W, d = self.width, self.divisor
        m.submodules.dut = dut = self.dut
        m.submodules.pump = tx = UARTTx(d)
        m.submodules.collect = rx = UARTRx(d)
        m.d.comb += [
            dut.rx.eq(tx.tx),
            rx.rx.eq(dut.tx),
            self.overrun.eq(rx.overrun),
            self.frame_error.eq(rx.frame_error),
        ]

        # ---- in: input word -> shift buffer -> UARTTx -> design's rx
        buf = Signal(8 * W)
        left = Signal(range(W + 1))          # bytes still in buf
        m.d.comb += [
            tx.data.payload.eq(buf[:8]),
            tx.data.valid.eq(left != 0),
            self.in_busy.eq((left != 0) | tx.busy | (self.in_seq != self.in_taken)),
        ]
        with m.If(tx.data.valid & tx.data.ready):
            m.d.sync += [buf.eq(buf >> 8), left.eq(left - 1)]
        with m.If((self.in_seq != self.in_taken) & (left == 0)):    # "load" below
            m.d.sync += [
                buf.eq(self.in_data.as_value()),
                left.eq(self.in_count),
                self.in_taken.eq(self.in_seq),
            ]

        # ---- out: design's tx -> UARTRx -> accumulator -> handed-over word
        acc = Signal(data.ArrayLayout(8, W))
        n = Signal(range(W + 1))             # bytes in acc
        delim = Signal()                     # acc ends with a 0x00 that is not its first byte
        quiet = Signal(range(self.idle_cycles + 1))
        hold_free = self.out_seq == self.out_ack
        flush = hold_free & ((n == W) | delim | ((quiet == self.idle_cycles) & (n != 0)))
        m.d.comb += rx.data.ready.eq(~flush & (n != W))
        take = rx.data.valid & rx.data.ready
        with m.If(take):
            m.d.sync += [
                acc[n].eq(rx.data.payload),
                n.eq(n + 1),
                delim.eq((rx.data.payload == 0) & (n != 0)),
            ]
        with m.If(flush):
            m.d.sync += [
                self.out_data.eq(acc),
                self.out_count.eq(n),
                self.out_seq.eq(~self.out_seq),
                n.eq(0),
                delim.eq(0),
            ]
        with m.If(~dut.tx | take):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet != self.idle_cycles):
            m.d.sync += quiet.eq(quiet + 1)
        m.d.comb += self.line_idle.eq((quiet == self.idle_cycles) & (n == 0) & ~rx.data.valid)

        # ---- attention: one toggle per cycle with any event
        tick = Signal(POLL_BITS)
        was_idle, was_busy = Signal(), Signal()
        m.d.sync += [was_idle.eq(self.line_idle), was_busy.eq(self.in_busy)]
        poll = (tick == 1)
        with m.If((tick <= 1) & (self.poll_cycles != 0)):
            m.d.sync += tick.eq(self.poll_cycles)
        with m.Elif(tick != 0):
            m.d.sync += tick.eq(tick - 1)
        load = (self.in_seq != self.in_taken) & (left == 0)
        event = (flush | load | poll | (self.line_idle & ~was_idle) | (~self.in_busy & was_busy))
        with m.If(event):
            m.d.sync += self.attn.eq(~self.attn)
        return m

"""Stream source and sink for cocotb testbenches, with pluggable pause generators.

An Amaranth ``stream.Signature`` port ``name`` appears in the Verilog as ``name__valid``,
``name__ready`` and ``name__payload``. :class:`StreamSource` drives one, :class:`StreamSink`
takes from one; both change their signals at falling edges and sample after ``ReadOnly``, so a
beat moves when valid and ready are both 1 just before a rising edge. Whether the source idles
or the sink holds back in a cycle is asked of a *pause generator* (an iterator of bools, as in
cocotbext-axi's ``set_pause_generator``): :func:`random_pauses` for random stalls and
backpressure, :func:`no_pauses` for full speed. Every testbench of the project uses these two
instead of its own copy.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator

from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

__all__ = ["StreamSource", "StreamSink", "random_pauses", "no_pauses"]


def random_pauses(rng: random.Random, probability: float) -> Iterator[bool]:
    """Pause with ``probability`` in each cycle, drawing one number of ``rng`` per cycle."""
    while True:
        yield rng.random() < probability


def no_pauses() -> Iterator[bool]:
    return itertools.repeat(False)


class _Port:
    def __init__(self, dut, name: str, clk=None, pause: Iterable[bool] | None = None):
        self.dut = dut
        self.clk = clk if clk is not None else dut.clk
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.set_pause_generator(pause)

    def set_pause_generator(self, pause: Iterable[bool] | None) -> None:
        self.pause = iter(pause) if pause is not None else no_pauses()


class StreamSource(_Port):
    """Drives ``valid``/``payload`` of stream ``name``; pauses (valid low) before a beat while the
    pause generator says so."""

    async def send(self, words: Iterable[int]) -> None:
        """Send every word, in order; returns at the falling edge after the last beat moved."""
        valid, payload, ready, clk = self.valid, self.payload, self.ready, self.clk
        for w in words:
            while next(self.pause):
                valid.value = 0
                await FallingEdge(clk)
            valid.value, payload.value = 1, w
            while True:
                await ReadOnly()
                done = bool(ready.value)
                await FallingEdge(clk)
                if done:
                    break
        valid.value = 0


class StreamSink(_Port):
    """Takes beats from stream ``name``; holds ``ready`` low in the cycles the pause generator
    picks (backpressure)."""

    async def receive(self, n: int, limit: int = 100_000) -> list[int]:
        """The next ``n`` beats (driving ``ready`` every cycle); raises AssertionError after
        ``limit`` cycles without them. ``ready`` is left low."""
        got: list[int] = []
        for _ in range(limit):
            if len(got) >= n:
                break
            self.ready.value = int(not next(self.pause))
            await ReadOnly()
            if self.valid.value and self.ready.value:
                got.append(self.payload.value.to_unsigned())
            await FallingEdge(self.clk)
        else:
            raise AssertionError(f"{len(got)} of {n} beats after {limit} cycles")
        self.ready.value = 0
        return got

    async def monitor(self, into: list) -> None:
        """Run forever (start it with ``cocotb.start_soon``): append every beat to ``into``.
        While the stream is idle it sleeps until ``valid`` rises instead of waking every cycle."""
        while True:
            await FallingEdge(self.clk)
            self.ready.value = int(not next(self.pause))
            await ReadOnly()
            if self.valid.value:
                if self.ready.value:
                    into.append(self.payload.value.to_unsigned())
            else:
                await RisingEdge(self.valid)

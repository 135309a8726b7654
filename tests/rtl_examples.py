"""Tiny Amaranth designs used only by the harness tests."""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out


class Counter(wiring.Component):
    """16-bit counter that increments on cycles where ``en`` is high."""

    en: In(1)
    count: Out(16)

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.count.eq(self.count + 1)
        return m


class CounterWithMemory(wiring.Component):
    """Counter plus a 256x16 RAM (one write, one synchronous read port).

    Writes ``count`` at address ``count[:8]`` when ``we``; reads ``raddr``.
    Small enough to synthesise quickly, big enough that it must land in EBR.
    """

    en: In(1)
    we: In(1)
    raddr: In(8)
    count: Out(16)
    rdata: Out(16)

    def elaborate(self, platform):
        m = Module()
        m.submodules.counter = counter = Counter()
        m.submodules.mem = mem = Memory(shape=16, depth=256, init=[])
        wr = mem.write_port()
        rd = mem.read_port()
        m.d.comb += [
            counter.en.eq(self.en),
            self.count.eq(counter.count),
            wr.addr.eq(counter.count[:8]),
            wr.data.eq(counter.count),
            wr.en.eq(self.we),
            rd.addr.eq(self.raddr),
            self.rdata.eq(rd.data),
        ]
        return m

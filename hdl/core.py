"""The spikeloop core: state memories, the step sequencer and the host-facing ports.

First increment: one weight layer (``n_hidden = 0``), ``DOUBLE_EXP`` kernel, RMaxProp,
``error_source = TARGET``, ``error_delay = 0``, no regulariser. Other options raise
``ParamError("Core does not support ... yet")`` (a ``ValueError``).

See :class:`Core` for the interface and ``docs/hardware.md`` ("Core") for the sequencer, the
memories and the access-port address map. The address map lives in :class:`Space` and
:class:`AccessMap`, which host code and tests import.
"""

from __future__ import annotations

import enum
import math

from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from spikeloop.params import ErrorSource, Kernel, Optimiser, ParamError, Params

from .arith import decay_signed, fmt_shape, pipe_delay, pipe_reg, sat
from .chunk import ChunkUnit
from .errorfilter import ErrorFilterUnit
from .layouts import neuron_layout, pretrace_layout, q_layout, synapse_layout
from .neuron import NeuronUnit, drive_bits
from .pretrace import PreTraceUnit
from .synapse import SynapseUnit

__all__ = ["Core", "cycles_per_step", "Space", "Reg", "AccessMap", "Location", "error_layout",
           "ACC_SPACE_BITS"]

#: Width of the access port's space code.
ACC_SPACE_BITS = 4


class Space(enum.IntEnum):
    """Access-port address spaces (``acc_space``); ``acc_index`` is the word index within one.

    ========  ======================================  ===========================================
    space     index                                   word
    ========  ======================================  ===========================================
    NEURON    neuron ``i``                            ``neuron_layout``: U, I, ref
    SIGMA     neuron ``i``                            σ' (UQ0.8)
    SPIKE     word ``k``                              S of neurons ``k·W … k·W + W − 1`` (bit = i mod W)
    ERR       output ``i``                            ``error_layout``: e1, e2 (e = e2)
    PRE       input ``j``                             ``pretrace_layout``: z, ẑ  (lane j mod P)
    SYN       ``i·n_in_pad + j``                      ``synapse_layout``: w, el, elf, m
    Q         ``i·n_in_pad + j``                      ``q_layout``: q
    XBUF      beat ``k``                              input spikes ``k·W …`` (as streamed on ``inp``)
    TBUF      beat ``k``                              target spikes ``k·W …`` (as streamed on ``tgt``)
    REG       :class:`Reg`                            a register (zero-extended)
    ========  ======================================  ===========================================

    ``n_in_pad = P·⌈n_in/P⌉``; per-lane memories hold index ``idx`` in lane ``idx mod P`` at
    address ``idx div P`` (``P`` is a power of two, so these are bit slices).
    """
    NEURON = 0
    SIGMA = 1
    SPIKE = 2
    ERR = 3
    PRE = 4
    SYN = 5
    Q = 6
    XBUF = 7
    TBUF = 8
    REG = 9


class Reg(enum.IntEnum):
    """Registers of :attr:`Space.REG`."""
    R0 = 0            # RMaxProp step r0 in weight LSBs (read/write)
    STEP_COUNT = 1    # steps completed (read/write)
    CYCLES = 2        # cycles of the last step (read only)
    CHUNK_PHASE = 3   # step_count mod chunk_steps, kept as a counter (read/write)


def error_layout(p: Params) -> data.StructLayout:
    """Per-output error filter word: ``e1`` and ``e2`` (both 'err'); ``e2`` is the error ``e``."""
    fe = fmt_shape(p.formats["err"])
    return data.StructLayout({"e1": fe, "e2": fe})


@dataclass(frozen=True)
class Location:
    """Where one word of a golden-model state variable sits behind the access port: the field
    ``[offset, offset + bits)`` of word ``index`` of ``space`` (two's complement if ``signed``)."""
    space: Space
    index: int
    offset: int
    bits: int
    signed: bool

    def extract(self, word: int) -> int:
        v = (word >> self.offset) & ((1 << self.bits) - 1)
        return v - (1 << self.bits) if self.signed and v >> (self.bits - 1) else v

    def insert(self, word: int, value: int) -> int:
        mask = ((1 << self.bits) - 1) << self.offset
        return (word & ~mask) | ((value << self.offset) & mask)


class AccessMap:
    """Host-side view of the access port's address map for one ``(params, lanes, in_width)``."""

    def __init__(self, params: Params, lanes: int = 1, in_width: int = 8):
        p = self.params = params
        self.lanes, self.in_width = lanes, in_width
        self.cols = -(-p.n_in // lanes)              # columns per lane, C
        self.n_in_pad = self.cols * lanes
        self.x_beats = -(-p.n_in // in_width)
        self.t_beats = -(-p.n_out // in_width)
        self.layouts = {
            Space.NEURON: neuron_layout(p), Space.PRE: pretrace_layout(p),
            Space.SYN: synapse_layout(p), Space.Q: q_layout(p), Space.ERR: error_layout(p),
        }
        self.depth = {
            Space.NEURON: p.n_out, Space.SIGMA: p.n_out, Space.SPIKE: self.t_beats,
            Space.ERR: p.n_out, Space.PRE: self.n_in_pad,
            Space.SYN: p.n_out * self.n_in_pad, Space.Q: p.n_out * self.n_in_pad,
            Space.XBUF: self.x_beats, Space.TBUF: self.t_beats, Space.REG: len(Reg),
        }
        self.width = {
            Space.NEURON: neuron_layout(p).size, Space.SIGMA: p.formats["sigma"].bits,
            Space.SPIKE: in_width, Space.ERR: error_layout(p).size,
            Space.PRE: pretrace_layout(p).size, Space.SYN: synapse_layout(p).size,
            Space.Q: q_layout(p).size, Space.XBUF: in_width, Space.TBUF: in_width, Space.REG: 32,
        }
        self.data_bits = max(self.width.values())
        self.index_bits = max(1, ceil_log2(max(self.depth.values())))

    def syn_index(self, i: int, j: int) -> int:
        return i * self.n_in_pad + j

    def names(self) -> list[str]:
        """The golden-snapshot variables (``"out.w"``, ``"err.e1"``, ...) this core holds."""
        p = self.params
        out = ["out.U", "out.I", "out.ref", "out.S", "out.sigma", "out.z", "out.zh", "out.w",
               *(f"out.{f}" for f in ("el", "elf") if f in self.layouts[Space.SYN].members),
               "out.m"]
        if Space.Q in self.layouts and "q" in self.layouts[Space.Q].members:
            out.append("out.q")
        out += ["out.e", "err.e1", "err.e2"]
        return out

    def locate(self, name: str, k: int) -> Location:
        """Word ``k`` of snapshot variable ``name`` (row-major without the batch axis, so
        synapse ``(i, j)`` is ``k = i·n_pre + j``), as the protocol's memory spaces number it."""
        p = self.params
        if name not in self.names():
            raise KeyError(f"name must be one of {', '.join(self.names())}, not {name!r}")
        field = name.split(".")[1]
        sp, idx, lay = {
            "U": (Space.NEURON, k, Space.NEURON), "I": (Space.NEURON, k, Space.NEURON),
            "ref": (Space.NEURON, k, Space.NEURON), "sigma": (Space.SIGMA, k, None),
            "S": (Space.SPIKE, k // self.in_width, None), "e": (Space.ERR, k, Space.ERR),
            "e1": (Space.ERR, k, Space.ERR), "e2": (Space.ERR, k, Space.ERR),
            "z": (Space.PRE, k, Space.PRE), "zh": (Space.PRE, k, Space.PRE),
            "q": (Space.Q, None, Space.Q),
        }.get(field, (Space.SYN, None, Space.SYN))
        depth = p.n_in if sp is Space.PRE else p.n_out * (p.n_in if sp in (Space.SYN, Space.Q) else 1)
        if not 0 <= k < depth:
            raise IndexError(f"{name} index must be in 0..{depth - 1}, not {k}")
        if idx is None:
            idx = self.syn_index(*divmod(k, p.n_in))
        if field == "S":
            return Location(sp, idx, k % self.in_width, 1, False)
        if field == "sigma":
            return Location(sp, idx, 0, p.formats["sigma"].bits, False)
        f = self.layouts[lay][{"e": "e2"}.get(field, field)]
        shape = Shape.cast(f.shape)
        return Location(sp, idx, f.offset, shape.width, shape.signed)

    def pack_bits(self, bits) -> list[int]:
        """Spike vector -> stream words, ``in_width`` bits per beat, bit ``j mod W`` of beat ``j div W``."""
        W = self.in_width
        words = [0] * (-(-len(bits) // W))
        for j, b in enumerate(bits):
            if b:
                words[j // W] |= 1 << (j % W)
        return words


def cycles_per_step(p: Params, lanes: int = 1, chunk: bool = False) -> int:
    """Cycles of one step of :class:`Core` (``out`` drained in time), with or without a chunk end.

    Each pass takes ``items + 1 + latency`` cycles (one issue per item, one cycle of block-RAM
    read, the unit's latency; the last write-back shares the pass's final cycle), and the final
    state one more. The front (``N`` neurons with the error filter chained, ``N + 1 + L_n +
    L_e``, alongside ``C = ⌈n_in/P⌉`` pre-traces, ``C + 1 + L_p``) takes the longer of its two
    passes; then ``N·C`` synapse words per lane (and ``N·C`` again at a chunk end).
    """
    C = -(-p.n_in // lanes)
    L_n = _latency(NeuronUnit(p, n_pre=p.n_in))
    L_s = _latency(SynapseUnit(p, feedback=False))
    front = max(p.n_out + 1 + L_n + ErrorFilterUnit.latency, C + 1 + PreTraceUnit.latency)
    n = front + (p.n_out * C + 1 + L_s) + 1
    if chunk:
        n += p.n_out * C + 1 + _latency(ChunkUnit(p))
    return n


def _check(p: Params, lanes: int, in_width: int):
    def no(what):
        raise ParamError(f"Core does not support {what} yet")
    if p.n_hidden:
        no("a hidden layer (n_hidden > 0)")
    if p.kernel is not Kernel.DOUBLE_EXP:
        no(f"kernel {p.kernel.value!r}")
    if p.optimiser is not Optimiser.RMAXPROP:
        no(f"optimiser {p.optimiser.value!r}")
    if p.error_source is not ErrorSource.TARGET:
        no(f"error_source {p.error_source.value!r}")
    if p.error_delay:
        no("error_delay > 0")
    if p.regulariser:
        no("the regulariser")
    for name, v in (("lanes", lanes), ("in_width", in_width)):
        if not isinstance(v, int) or v < 1 or v & (v - 1):
            raise ParamError(f"Core: {name} must be a power of two, not {v!r}")
    if in_width % lanes:
        raise ParamError(f"Core: in_width ({in_width}) must be a multiple of lanes ({lanes})")


class Core(wiring.Component):
    """One weight layer of spikeloop: every state word in block RAM, one time step per ``start``.

    Parameters
    ----------
    params : Params
    lanes : int
        ``P``, a power of two: lane ``l`` owns inputs ``j ≡ l (mod P)``.
    in_width : int
        ``W``, bits per stream beat (a power of two, a multiple of ``P``).

    Members
    -------
    inp : In(stream.Signature(W))
        Input spikes of the next step, ``⌈n_in/W⌉`` beats, bit ``j mod W`` of beat ``j div W``.
        Accepted only while idle; a beat counter wraps after the last beat and restarts at 0
        on ``start``.
    tgt : In(stream.Signature(W))
        Target spikes, packed likewise over ``n_out``; same rules.
    out : Out(stream.Signature(W))
        Output spikes of each step, ``⌈n_out/W⌉`` beats packed like ``tgt``. Streamed from the
        spike memory once the neuron pass is done; the step does not finish (``busy`` stays 1)
        until the last beat is accepted, so backpressure never loses data.
    start : In(1)
        Strobe, honoured while idle: run one step with the buffered inputs and targets.
    busy : Out(1)
    cycles : Out(32)
        Cycles from ``start`` to the end of the last step.
    step_count : Out(32)
    r0 : Out(w.bits − 1)
        The RMaxProp step register (reset value ``params.r0_q``), written through the access port.
    acc_space, acc_index, acc_wdata, acc_we, acc_re : In
        Access port, honoured while idle. ``acc_we`` writes ``acc_wdata`` (low bits) to the word
        ``(acc_space, acc_index)``; ``acc_re`` reads it: ``acc_rvalid`` pulses two cycles later
        with the word (zero-extended) on ``acc_rdata``, which then holds until the next read.
        See :class:`Space` for the map.
    acc_rdata, acc_rvalid : Out
    """

    def __init__(self, params: Params, lanes: int = 1, in_width: int = 8):
        try:
            _check(params, lanes, in_width)
        except ValueError:
            self._MustUse__silence = True
            raise
        self.params = p = params
        self.lanes, self.in_width = lanes, in_width
        self.map = amap = AccessMap(p, lanes, in_width)
        self.syn_latency = _latency(SynapseUnit(p, feedback=False))
        self.chunk_latency = _latency(ChunkUnit(p))
        super().__init__({
            "inp": In(stream.Signature(in_width)),
            "tgt": In(stream.Signature(in_width)),
            "out": Out(stream.Signature(in_width)),
            "start": In(1),
            "busy": Out(1),
            "cycles": Out(32),
            "step_count": Out(32),
            "r0": Out(unsigned(p.formats["w"].bits - 1), init=p.r0_q),
            "acc_space": In(ACC_SPACE_BITS),
            "acc_index": In(amap.index_bits),
            "acc_wdata": In(amap.data_bits),
            "acc_we": In(1),
            "acc_re": In(1),
            "acc_rdata": Out(amap.data_bits),
            "acc_rvalid": Out(1),
        })

    def cycles_per_step(self, chunk: bool = False) -> int:
        """Cycles of one step (``out`` drained in time), with or without a chunk end."""
        return cycles_per_step(self.params, self.lanes, chunk)

    def elaborate(self, platform):
        p, F, amap = self.params, self.params.formats, self.map
        P, W, N, C = self.lanes, self.in_width, p.n_out, amap.cols
        lp, lw = ceil_log2(P), ceil_log2(W)
        m = Module()

        # ------------------------------------------------------------ memories
        def mem(name, shape, depth, read_ports=1):
            mm = Memory(shape=shape, depth=max(1, depth), init=[])
            m.submodules[name] = mm
            rds = [mm.read_port() for _ in range(read_ports)]
            return mm, rds, mm.write_port()

        nl, pl, sl, ql, el = (neuron_layout(p), pretrace_layout(p), synapse_layout(p),
                              q_layout(p), error_layout(p))
        _, (sig_rd,), sig_wr = mem("sig", fmt_shape(F["sigma"]), N)
        _, (spk_rd, spk_rd2), spk_wr = mem("spk", W, amap.t_beats, read_ports=2)
        _, (err_rd,), err_wr = mem("err", el, N)
        _, (xb_rd,), xb_wr = mem("xbuf", W, amap.x_beats)
        _, (tb_rd,), tb_wr = mem("tbuf", W, amap.t_beats)
        pre = [mem(f"pre{l}", pl, C) for l in range(P)]
        qm = [mem(f"q{l}", ql, N * C) for l in range(P)]
        pre_rd = [r[1][0] for r in pre]
        pre_wr = [r[2] for r in pre]
        q_rd = [r[1][0] for r in qm]
        q_wr = [r[2] for r in qm]

        def gmem(name, layout, depth):
            """A memory of ``layout`` words stored as plain bits, with a write port whose
            granularity is the gcd of the field widths, so a pass can write some fields of a
            word and leave the others in place (instead of carrying them down a pipe).
            Returns the ports, a view of the read data, a view to drive the write data, and
            ``en(*fields)``, the write enable of those fields."""
            g = math.gcd(*(Shape.cast(f.shape).width for _, f in layout))
            mm = Memory(shape=unsigned(layout.size), depth=max(1, depth), init=[])
            m.submodules[name] = mm
            rd, wr = mm.read_port(), mm.write_port(granularity=g)
            wdata = Signal(layout, name=f"{name}_wdata")
            m.d.comb += wr.data.eq(wdata)

            def en(*fields):
                bits = 0
                for fname, f in layout:
                    if not fields or fname in fields:
                        for b in range(f.offset // g, (f.offset + Shape.cast(f.shape).width) // g):
                            bits |= 1 << b
                return Const(bits, layout.size // g)
            return rd, wr, layout(rd.data), wdata, en

        # Synapse words: the chunk-end pass rewrites only ``w`` and ``m`` and leaves ``el``,
        # ``el_flt`` in place instead of carrying them around ChunkUnit.
        syn_rd, syn_wr, syn_rdata, syn_wdata = [], [], [], []
        for l in range(P):
            rd, wr, rdata, wdata_, en_syn = gmem(f"syn{l}", sl, N * C)
            syn_rd.append(rd)
            syn_wr.append(wr)
            syn_rdata.append(rdata)
            syn_wdata.append(wdata_)
        en_all, en_wm = en_syn(), en_syn("w", "m")
        # Neuron words: the front pass writes ``U``, ``ref``, the learning pass ``I``.
        neur_rd, neur_wr, neur_rdata, neur_wdata, en_neur = gmem("neur", nl, N)

        # ------------------------------------------------------------ units
        m.submodules.neuron = nu = NeuronUnit(p, n_pre=p.n_in)
        ptu = []
        for l in range(P):
            u = PreTraceUnit(p)
            m.submodules[f"pretrace{l}"] = u
            ptu.append(u)
        m.submodules.errf = efu = ErrorFilterUnit(p)
        snu, chu = [], []
        for l in range(P):
            u = SynapseUnit(p, feedback=False)
            m.submodules[f"synapse{l}"] = u
            snu.append(u)
            c = ChunkUnit(p)
            m.submodules[f"chunk{l}"] = c
            chu.append(c)
        Ln, Lp, Le, Ls, Lc = nu.latency, PreTraceUnit.latency, efu.latency, snu[0].latency, \
            chu[0].latency

        # ------------------------------------------------------------ registers
        step_count = Signal(32)
        cycles = Signal(32)
        cyc = Signal(32)
        phase = Signal(range(max(2, p.chunk_steps)))
        r0 = Signal(unsigned(F["w"].bits - 1), init=p.r0_q)
        m.d.comb += [self.step_count.eq(step_count), self.cycles.eq(cycles), self.r0.eq(r0)]

        big = max(N * C, N, C) + max(Ln, Lp, Le, Ls, Lc) + 4
        k = Signal(range(big + 1))         # pass cycle counter
        ci = Signal(range(max(2, N + 1)))  # row counter
        cc = Signal(range(max(2, C + 1)))  # column counter
        ca = Signal(range(max(2, N * C + 1)))  # synapse address counter
        do_chunk = Signal()
        out_go = Signal()
        out_done = Signal()

        def lane_ok(c, l):
            """Lane ``l`` holds a real input in column ``c`` (the last column may be padding)."""
            last = p.n_in - (C - 1) * P                # real inputs in the last column
            if l < last:
                return Const(1)
            return c != C - 1

        def advance_2d():
            with m.If(cc == C - 1):
                m.d.sync += [cc.eq(0), ci.eq(ci + 1)]
            with m.Else():
                m.d.sync += cc.eq(cc + 1)
            m.d.sync += ca.eq(ca + 1)

        def reset_counters():
            m.d.sync += [k.eq(0), ci.eq(0), cc.eq(0), ca.eq(0)]

        # ------------------------------------------------------------ idle: streams, access port
        idle = Signal()
        m.d.comb += self.busy.eq(~idle)
        x_ptr = Signal(range(max(2, amap.x_beats)))
        t_ptr = Signal(range(max(2, amap.t_beats)))
        m.d.comb += [self.inp.ready.eq(idle), self.tgt.ready.eq(idle)]

        sp, ix = self.acc_space, self.acc_index
        lane_of = ix[:lp] if lp else Const(0)
        addr_of = ix.shift_right(lp)
        acc_w = idle & self.acc_we
        acc_r = idle & self.acc_re

        def wdata(layout_or_width):
            n = layout_or_width.size if isinstance(layout_or_width, data.Layout) else layout_or_width
            return self.acc_wdata[:n]

        # access-port read pipeline: address this cycle, data next, registered after.
        r1_valid = Signal()
        r1_space = Signal(ACC_SPACE_BITS)
        r1_lane = Signal(max(1, lp))
        r1_index = Signal(amap.index_bits)
        m.d.sync += [r1_valid.eq(acc_r), r1_space.eq(sp), r1_lane.eq(lane_of), r1_index.eq(ix)]
        m.d.sync += self.acc_rvalid.eq(r1_valid)

        with m.If(r1_valid):
            with m.Switch(r1_space):
                for space, v in (
                        (Space.NEURON, neur_rd.data), (Space.SIGMA, sig_rd.data),
                        (Space.SPIKE, spk_rd.data), (Space.ERR, err_rd.data),
                        (Space.XBUF, xb_rd.data), (Space.TBUF, tb_rd.data),
                        (Space.PRE, _lane_select([r.data for r in pre_rd], r1_lane)),
                        (Space.SYN, _lane_select([r.data for r in syn_rd], r1_lane)),
                        (Space.Q, _lane_select([r.data for r in q_rd], r1_lane))):
                    with m.Case(space):
                        m.d.sync += self.acc_rdata.eq(_raw(v))
                with m.Case(Space.REG):
                    with m.Switch(r1_index):
                        for reg, v in ((Reg.R0, r0), (Reg.STEP_COUNT, step_count),
                                       (Reg.CYCLES, cycles), (Reg.CHUNK_PHASE, phase)):
                            with m.Case(reg):
                                m.d.sync += self.acc_rdata.eq(v)
                        with m.Default():
                            m.d.sync += self.acc_rdata.eq(0)

        # ------------------------------------------------------------ output stream
        o_k = Signal(range(max(2, amap.t_beats + 1)))
        m.d.comb += spk_rd2.addr.eq(o_k)
        with m.FSM(name="outfsm"):
            with m.State("O_IDLE"):
                with m.If(out_go):
                    m.d.sync += [o_k.eq(0), out_done.eq(0)]
                    m.next = "O_READ"
            with m.State("O_READ"):
                m.next = "O_LOAD"
            with m.State("O_LOAD"):
                m.d.sync += [self.out.payload.eq(spk_rd2.data), self.out.valid.eq(1)]
                m.next = "O_SEND"
            with m.State("O_SEND"):
                with m.If(self.out.ready):
                    m.d.sync += [self.out.valid.eq(0), o_k.eq(o_k + 1)]
                    with m.If(o_k == amap.t_beats - 1):
                        m.d.sync += out_done.eq(1)
                        m.next = "O_IDLE"
                    with m.Else():
                        m.next = "O_READ"

        # ------------------------------------------------------------ pass pipelines
        # Each pass issues reads at cycle k (index counters), feeds its unit(s) the read data at
        # k + 1 ("s1") and writes the unit outputs back at k + 1 + latency (delayed addresses).
        # --- neuron pass ----------------------------------------------------
        n_issue = Signal()
        n_s1 = pipe_reg(m, n_issue, "n_s1")
        n_i1 = pipe_reg(m, ci, "n_i1")
        m.d.comb += [
            nu.valid.eq(n_s1), nu.U.eq(neur_rdata.U), nu.I.eq(neur_rdata.I),
            nu.ref.eq(neur_rdata.ref), nu.drive.eq(0), nu.use_rate.eq(0),
        ]
        n_io = pipe_delay(m, n_i1, Ln, "n_i")
        sbuf = Signal(W)
        n_bit = n_io[:lw] if lw else Const(0, 1)
        n_word = Signal(W)
        m.d.comb += n_word.eq(sbuf | (nu.S.as_unsigned() << n_bit)[:W])
        n_flush = (n_bit == W - 1) | (n_io == N - 1) if lw else Const(1)

        FRONT_LAST = max(N + Ln + Le, C + Lp)         # last cycle of the FRONT state

        # --- pre-trace pass -------------------------------------------------
        p_issue = Signal()
        p_s1 = pipe_reg(m, p_issue, "p_s1")
        p_c1 = pipe_reg(m, cc, "p_c1")
        sh = ceil_log2(W // P)                         # columns per input word: 2^sh
        x_addr = cc.shift_right(sh)

        def x_bits(c1):
            off = Cat(Const(0, lp), c1[:sh]) if sh else Const(0, max(1, lp))
            return xb_rd.data.bit_select(off, P)

        p_x = x_bits(p_c1)
        for l in range(P):
            m.d.comb += [ptu[l].valid.eq(p_s1 & lane_ok(p_c1, l)), ptu[l].z.eq(pre_rd[l].data.z),
                         ptu[l].zh.eq(pre_rd[l].data.zh), ptu[l].x.eq(p_x[l])]
        p_co = pipe_delay(m, p_c1, Lp, "p_c")

        # --- error filter, chained to the neuron pipe ---------------------
        # S_i leaves NeuronUnit at cycle i + 1 + Ln; e1, e2 and the target word of neuron i are
        # read one cycle before (address i delayed by Ln) so that they arrive with it.
        e_addr = pipe_delay(m, n_i1, Ln - 1, "e_addr")
        e_bit = n_io[:lw] if lw else Const(0, 1)
        m.d.comb += [
            efu.valid.eq(nu.out_valid), efu.e1.eq(err_rd.data.e1), efu.e2.eq(err_rd.data.e2),
            efu.target.eq(tb_rd.data.bit_select(e_bit, 1)), efu.spike.eq(nu.S),
        ]
        e_io = pipe_delay(m, n_io, Le, "e_i")

        # --- learning pass --------------------------------------------------
        l_issue = Signal()
        l_s1 = pipe_reg(m, l_issue, "l_s1")
        l_c1 = pipe_reg(m, cc, "l_c1")
        l_a1 = pipe_reg(m, ca, "l_a1")
        l_first1 = pipe_reg(m, cc == 0, "l_first1")
        l_last1 = pipe_reg(m, cc == C - 1, "l_last1")
        l_x = x_bits(l_c1)
        for l in range(P):
            u = snu[l]
            rd = syn_rdata[l]
            m.d.comb += [
                u.valid.eq(l_s1 & lane_ok(l_c1, l)), u.w.eq(rd.w), u.el.eq(rd.el),
                u.elf.eq(rd.elf), u.m.eq(rd.m), u.sigma.eq(sig_rd.data), u.e.eq(err_rd.data.e2),
                u.zh.eq(pre_rd[l].data.zh), u.x.eq(l_x[l] & lane_ok(l_c1, l)),
            ]
        l_vo = pipe_delay(m, l_s1, Ls, "l_v")
        l_ao = pipe_delay(m, l_a1, Ls, "l_a")
        l_first_o = pipe_delay(m, l_first1, Ls, "l_first")
        l_last_o = pipe_delay(m, l_last1, Ls, "l_last")
        l_io = pipe_delay(m, pipe_reg(m, ci, "l_i1"), Ls, "l_i")
        l_I = pipe_delay(m, neur_rdata.I, Ls, "l_I")      # the row's I rides with its synapses
        db = drive_bits(p, p.n_in)
        acc = Signal(signed(db))
        tot = Signal(signed(db))
        row_sum = Signal(signed(db))
        m.d.comb += tot.eq(sum(u.drive for u in snu))
        m.d.comb += row_sum.eq(Mux(l_first_o, 0, acc) + tot)
        with m.If(l_vo):
            m.d.sync += acc.eq(row_sum)
        I_new = sat(decay_signed(l_I, p.decay_syn) + row_sum, F["i"])

        # --- chunk pass -----------------------------------------------------
        c_issue = Signal()
        c_s1 = pipe_reg(m, c_issue, "c_s1")
        c_c1 = pipe_reg(m, cc, "c_c1")
        c_a1 = pipe_reg(m, ca, "c_a1")
        for l in range(P):
            u = chu[l]
            rd = syn_rdata[l]
            m.d.comb += [u.valid.eq(c_s1 & lane_ok(c_c1, l)), u.w.eq(rd.w), u.m.eq(rd.m),
                         u.q.eq(q_rd[l].data.q), u.r0.eq(r0)]
        c_ao = pipe_delay(m, c_a1, Lc, "c_a")

        # ------------------------------------------------------------ memory port muxes
        # Idle: access port and streams. Passes: their own addresses (exclusive by state).
        with m.FSM(name="seq") as seq:
            with m.State("IDLE"):
                m.d.comb += idle.eq(1)
                # access port addresses
                m.d.comb += [
                    neur_rd.addr.eq(ix), sig_rd.addr.eq(ix), spk_rd.addr.eq(ix),
                    err_rd.addr.eq(ix), xb_rd.addr.eq(ix), tb_rd.addr.eq(ix),
                ]
                for l in range(P):
                    m.d.comb += [pre_rd[l].addr.eq(addr_of), syn_rd[l].addr.eq(addr_of),
                                 q_rd[l].addr.eq(addr_of)]
                with m.If(acc_w):
                    with m.Switch(sp):
                        with m.Case(Space.NEURON):
                            m.d.comb += [neur_wr.addr.eq(ix), neur_wdata.eq(wdata(nl)),
                                         neur_wr.en.eq(en_neur())]
                        for space, wr, lay in ((Space.SIGMA, sig_wr, F["sigma"].bits),
                                               (Space.SPIKE, spk_wr, W), (Space.ERR, err_wr, el)):
                            with m.Case(space):
                                m.d.comb += [wr.addr.eq(ix), wr.data.eq(wdata(lay)), wr.en.eq(1)]
                        with m.Case(Space.SYN):
                            for l in range(P):
                                m.d.comb += [syn_wr[l].addr.eq(addr_of), syn_wdata[l].eq(wdata(sl)),
                                             syn_wr[l].en.eq(Mux(lane_of == l, en_all, 0))]
                        for space, wrs, lay in ((Space.PRE, pre_wr, pl), (Space.Q, q_wr, ql)):
                            with m.Case(space):
                                for l in range(P):
                                    m.d.comb += [wrs[l].addr.eq(addr_of), wrs[l].data.eq(wdata(lay)),
                                                 wrs[l].en.eq(lane_of == l)]
                        with m.Case(Space.REG):
                            with m.Switch(ix):
                                with m.Case(Reg.R0):
                                    m.d.sync += r0.eq(self.acc_wdata)
                                with m.Case(Reg.STEP_COUNT):
                                    m.d.sync += step_count.eq(self.acc_wdata)
                                with m.Case(Reg.CHUNK_PHASE):
                                    m.d.sync += phase.eq(self.acc_wdata)
                # buffers: the access port wins over the stream on the same cycle
                with m.If(acc_w & (sp == Space.XBUF)):
                    m.d.comb += [xb_wr.addr.eq(ix), xb_wr.data.eq(wdata(W)), xb_wr.en.eq(1)]
                with m.Elif(self.inp.valid):
                    m.d.comb += [xb_wr.addr.eq(x_ptr), xb_wr.data.eq(self.inp.payload),
                                 xb_wr.en.eq(1)]
                    m.d.sync += x_ptr.eq(Mux(x_ptr == amap.x_beats - 1, 0, x_ptr + 1))
                with m.If(acc_w & (sp == Space.TBUF)):
                    m.d.comb += [tb_wr.addr.eq(ix), tb_wr.data.eq(wdata(W)), tb_wr.en.eq(1)]
                with m.Elif(self.tgt.valid):
                    m.d.comb += [tb_wr.addr.eq(t_ptr), tb_wr.data.eq(self.tgt.payload),
                                 tb_wr.en.eq(1)]
                    m.d.sync += t_ptr.eq(Mux(t_ptr == amap.t_beats - 1, 0, t_ptr + 1))
                with m.If(self.start):
                    reset_counters()
                    m.d.sync += [cyc.eq(1), x_ptr.eq(0), t_ptr.eq(0), sbuf.eq(0),
                                 do_chunk.eq(phase == p.chunk_steps - 1)]
                    m.next = "FRONT"

            with m.State("FRONT"):
                # Neuron pass (with the error filter chained to it) and pre-trace pass at once:
                # they touch disjoint memories and neither reads what the other writes.
                m.d.comb += [n_issue.eq(k < N), neur_rd.addr.eq(ci), err_rd.addr.eq(e_addr),
                             tb_rd.addr.eq(e_addr.shift_right(lw))]
                with m.If(k < N):
                    m.d.sync += ci.eq(ci + 1)
                with m.If(nu.out_valid):
                    m.d.comb += [
                        neur_wr.addr.eq(n_io), neur_wr.en.eq(en_neur("U", "ref")),
                        neur_wdata.U.eq(nu.U_next), neur_wdata.ref.eq(nu.ref_next),
                        sig_wr.addr.eq(n_io), sig_wr.data.eq(nu.sigma), sig_wr.en.eq(1),
                    ]
                    with m.If(n_flush):
                        m.d.comb += [spk_wr.addr.eq(n_io.shift_right(lw)), spk_wr.data.eq(n_word),
                                     spk_wr.en.eq(1)]
                        m.d.sync += sbuf.eq(0)
                    with m.Else():
                        m.d.sync += sbuf.eq(n_word)
                with m.If(efu.out_valid):
                    m.d.comb += [err_wr.addr.eq(e_io), err_wr.en.eq(1),
                                 err_wr.data.e1.eq(efu.e1_next), err_wr.data.e2.eq(efu.e2_next)]
                m.d.comb += [p_issue.eq(k < C), xb_rd.addr.eq(x_addr)]
                for l in range(P):
                    m.d.comb += pre_rd[l].addr.eq(cc)
                with m.If(k < C):
                    m.d.sync += cc.eq(cc + 1)
                for l in range(P):
                    with m.If(ptu[l].out_valid):
                        m.d.comb += [pre_wr[l].addr.eq(p_co), pre_wr[l].en.eq(1),
                                     pre_wr[l].data.z.eq(ptu[l].z_next),
                                     pre_wr[l].data.zh.eq(ptu[l].zh_next)]
                m.d.sync += k.eq(k + 1)
                with m.If(k == FRONT_LAST):
                    reset_counters()
                    m.d.sync += out_go.eq(1)
                    m.next = "LEARN"

            with m.State("LEARN"):
                m.d.sync += out_go.eq(0)
                m.d.comb += [l_issue.eq(k < N * C), xb_rd.addr.eq(x_addr), neur_rd.addr.eq(ci),
                             sig_rd.addr.eq(ci), err_rd.addr.eq(ci)]
                for l in range(P):
                    m.d.comb += [pre_rd[l].addr.eq(cc), syn_rd[l].addr.eq(ca)]
                with m.If(k < N * C):
                    advance_2d()
                for l in range(P):
                    u = snu[l]
                    with m.If(u.out_valid):
                        m.d.comb += [syn_wr[l].addr.eq(l_ao), syn_wr[l].en.eq(en_all),
                                     syn_wdata[l].w.eq(u.w_out), syn_wdata[l].el.eq(u.el_next),
                                     syn_wdata[l].elf.eq(u.elf_next),
                                     syn_wdata[l].m.eq(u.m_next)]
                with m.If(l_vo & l_last_o):
                    m.d.comb += [neur_wr.addr.eq(l_io), neur_wr.en.eq(en_neur("I")),
                                 neur_wdata.I.eq(I_new)]
                m.d.sync += k.eq(k + 1)
                with m.If(k == N * C + Ls):
                    reset_counters()
                    with m.If(do_chunk):
                        m.next = "CHUNK"
                    with m.Else():
                        m.next = "FIN"

            with m.State("CHUNK"):
                m.d.comb += c_issue.eq(k < N * C)
                for l in range(P):
                    m.d.comb += [syn_rd[l].addr.eq(ca), q_rd[l].addr.eq(ca)]
                with m.If(k < N * C):
                    advance_2d()
                for l in range(P):
                    u = chu[l]
                    with m.If(u.out_valid):
                        m.d.comb += [syn_wr[l].addr.eq(c_ao), syn_wr[l].en.eq(en_wm),
                                     syn_wdata[l].w.eq(u.w_next), syn_wdata[l].m.eq(u.m_next),
                                     q_wr[l].addr.eq(c_ao), q_wr[l].en.eq(1),
                                     q_wr[l].data.q.eq(u.q_next)]
                m.d.sync += k.eq(k + 1)
                with m.If(k == N * C + Lc):
                    reset_counters()
                    m.next = "FIN"

            with m.State("FIN"):
                with m.If(out_done):
                    m.d.sync += [
                        step_count.eq(step_count + 1), cycles.eq(cyc),
                        phase.eq(Mux(phase == p.chunk_steps - 1, 0, phase + 1)),
                        out_done.eq(0),
                    ]
                    m.next = "IDLE"

        with m.If(~idle):
            m.d.sync += cyc.eq(cyc + 1)
        return m


def _latency(unit) -> int:
    """A unit's latency, without leaving an unused-elaboratable warning behind."""
    unit._MustUse__silence = True
    return unit.latency


def _raw(v):
    from amaranth.hdl import Value
    return Value.cast(v)


def _lane_select(values, lane):
    vals = [_raw(v) for v in values]
    if len(vals) == 1:
        return vals[0]
    out = vals[0]
    for l in range(1, len(vals)):
        out = Mux(lane == l, vals[l], out)
    return out

"""The spikeloop core: state memories, the step sequencer and the host-facing ports.

Every option of :class:`~spikeloop.params.Params` is supported: no hidden layer or one hidden
layer (symmetric, random or uniform feedback), the three eligibility kernels, RMaxProp or a fixed
learning rate, target spikes filtered on chip or errors streamed by the host, ``error_delay``
ring memories, and the hidden layer's rate regulariser.

Both weight layers share one set of units and one set of memories (time-multiplexed: each
memory holds the output layer's words first, then the hidden layer's). See :class:`Core` for
the interface and ``docs/hardware.md`` ("Core") for the sequencer, the memories and the
access-port address map. The address map lives in :mod:`spikeloop.hdl.accessmap` and the timing
model (units, latencies, cycles per step) in :mod:`spikeloop.hdl.timing`, both of which host code
imports without building a Core. ``elaborate`` is a sequence of builders, one per memory group,
unit group, pass and sequencer state, sharing one :class:`_Scope`.
"""

from __future__ import annotations

import math

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.utils import ceil_log2

from spikeloop.params import ErrorSource, Feedback, Kernel, Optimiser

from .accessmap import ACC_SPACE_BITS, Reg, Space, error_layout, hacc_bits, rate_layout
from .arith import decay_signed, fmt_shape, mul_const, pipe_delay, pipe_reg, resize, sat, \
    shift_trunc
from .chunk import RegCoef
from .config import CoreConfig
from .errorfilter import ErrorFilterUnit
from .layouts import neuron_layout, pretrace_layout, q_layout, synapse_layout
from .neuron import NeuronUnit, drive_bits
from .pretrace import PreTraceUnit
from .timing import chunk_unit, front_last, synapse_unit

__all__ = ["Core"]


class _Scope(SimpleNamespace):
    """The scope :meth:`Core.elaborate`'s builders share: each takes the names it uses and leaves
    the ones it binds, in build order, so a later builder sees what an earlier one made."""

    def take(self, *names):
        return tuple(getattr(self, n, None) for n in names)

    def leave(self, names: dict):
        for n, v in names.items():
            if n not in ("self", "scope"):
                setattr(self, n, v)


class Core(wiring.Component):
    """spikeloop's learning core: every state word in block RAM, one time step per ``start``.

    Parameters
    ----------
    config : CoreConfig
        ``(params, lanes, in_width, single_port)``, validated. ``lanes`` (``P``): lane ``l`` owns
        each layer's inputs ``j ≡ l (mod P)``; ``in_width`` (``W``): bits per stream beat.
        ``single_port`` keeps each lane's synapse words (and RMaxProp's ``q`` words, in a second
        half) in one memory with a single port shared by reads and writes, which is what the
        iCE40's SPRAM offers (``synth_ice40 -spram`` infers it; a word must then be at most 64
        bits, the width of the UP5K's four SPRAMs). Each word is read and written in its own
        cycles, so the learning pass takes 2 cycles per word and lane, a RMaxProp chunk end 4
        (the divider then iterates). Default ``False``: dual-ported block RAM, one word per cycle
        and lane.

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`CoreConfig` (which raises ``ParamError`` for bad values).

    Members
    -------
    inp : In(stream.Signature(W))
        Input spikes of the next step, ``⌈n_in/W⌉`` beats, bit ``j mod W`` of beat ``j div W``.
        Accepted only while idle; a beat counter wraps after the last beat and restarts at 0
        on ``start``.
    tgt : In(stream.Signature(W))
        ``error_source = target`` only. Target spikes, packed likewise over ``n_out``; same rules.
    err : In(stream.Signature(signed(err.bits)))
        ``error_source = host`` only. The errors ``e_i`` of the next step, one 'err' word per
        beat, ``n_out`` beats (output ``i`` on beat ``i``); same rules as ``inp``.
    out : Out(stream.Signature(W))
        Output spikes of each step, ``⌈n_out/W⌉`` beats packed like ``tgt``. Streamed from the
        spike memory once the output layer's neuron pass is done; the step does not finish
        (``busy`` stays 1) until the last beat is accepted, so backpressure never loses data.
    start : In(1)
        Strobe, honoured while idle: run one step with the buffered inputs and targets/errors.
    busy : Out(1)
    cycles : Out(32)
        Cycles from ``start`` to the end of the last step; saturates at ``2^cycle_bits − 1``
        (a step held up by ``out`` backpressure for more than four chunk-end steps).
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

    def __init__(self, config: CoreConfig):
        if not isinstance(config, CoreConfig):
            self._MustUse__silence = True
            raise TypeError(f"Core takes a CoreConfig, not {type(config).__name__}: "
                            f"CoreConfig(params, lanes, in_width, single_port)")
        self.config = config
        self.params = config.params
        self.lanes, self.in_width, self.single_port = config.lanes, config.in_width, config.single_port
        self.map, self.latencies, self.timing = config.map, config.latencies, config.timing
        #: Width of the cycle counter behind ``cycles`` / ``CYCLES``: room for four times the
        #: longest step (a chunk end) when ``out`` is drained in time; it saturates beyond.
        self.cycle_bits = config.cycle_bits
        #: Memories meant for the iCE40's SPRAM (``single_port``): they have no initial contents
        #: on the device, so synthesis drops their zeros (``synth_ice40(uninitialised=...)``)
        #: and the host clears them (RESET_STATE) before use.
        self.spram_memories = config.spram_memories
        super().__init__(config.signature)

    def cycles_per_step(self, chunk: bool = False) -> int:
        """Cycles of one step (``out`` drained in time), with or without a chunk end."""
        return self.config.cycles_per_step(chunk)

    def elaborate(self, platform):
        scope = _Scope()
        for build in (self._setup, self._memories, self._units, self._registers,
                      self._access, self._out_stream, self._front_passes,
                      self._learn_pass, self._chunk_pass):
            build(scope)
        m = scope.m
        # ------------------------------------------------------------ sequencer and port muxes
        # Idle: access port and streams. Passes: their own addresses (exclusive by state).
        with m.FSM(name="seq"):
            with m.State("IDLE"):
                self._seq_idle(scope)
            with m.State("FRONT"):
                self._seq_front(scope)
            with m.State("LEARN"):
                self._seq_learn(scope)
            with m.State("CHUNK"):
                self._seq_chunk(scope)
            with m.State("FIN"):
                self._seq_fin(scope)
        self._tail(scope)
        return m

    def _setup(self, scope: _Scope):
        """What the configuration says, as the short names the builders use."""
        p, F, amap = self.params, self.params.formats, self.map
        P, W = self.lanes, self.in_width
        sp1, T = self.single_port, self.timing
        LY = amap.layer_list
        two = len(LY) == 2
        NN, CC, SS = amap.n_neurons, amap.n_cols, amap.n_syn
        target = p.error_source is ErrorSource.TARGET
        rmax = p.optimiser is Optimiser.RMAXPROP
        traces = p.kernel is not Kernel.FACTORISED
        double = p.kernel is Kernel.DOUBLE_EXP
        has_b = two and p.feedback is not Feedback.SYMMETRIC
        reg = p.regulariser
        D = p.error_delay
        lp, lw = ceil_log2(P), ceil_log2(W)
        m = Module()
        scope.leave(locals())

    def _memories(self, scope: _Scope):
        """Every state memory, one per lane where a lane owns the words."""
        (m, rmax, p, F, NN, W, amap, target, P, CC, sp1, SS, two, LY, has_b, D, reg) = scope.take(
            'm', 'rmax', 'p', 'F', 'NN', 'W', 'amap', 'target', 'P', 'CC', 'sp1', 'SS', 'two',
            'LY', 'has_b', 'D', 'reg')
        # ------------------------------------------------------------ memories
        def mem(name, shape, depth, read_ports=1, init=(), transparent=False):
            mm = Memory(shape=shape, depth=max(1, depth), init=list(init))
            m.submodules[name] = mm
            wr = mm.write_port()
            rds = [mm.read_port(transparent_for=(wr,) if transparent else ())
                   for _ in range(read_ports)]
            return mm, rds, wr

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
            return rd, wr, layout(rd.data), wdata, _field_enables(layout, g)

        def spmem(name, layout, depth, q_sel):
            """:func:`gmem` for ``single_port``: one read port and one write port on one address,
            the read disabled while writing (SPRAM's single port). With RMaxProp the ``q`` words
            live in the second half, ``depth`` on. The returned ports stand in for separate
            synapse and ``q`` memories (``addr``, ``en``, ``data``), so the passes and the
            access port address them as in the dual-port case; a write wins the port, and a
            read of a ``q`` row is flagged by ``q_sel``."""
            # write-enable granularity: only the boundaries between the fields the chunk end
            # writes (w, m) and those it keeps matter, and SPRAM masks nibbles, so the
            # granularity is the gcd of those boundaries (4 for 16 + 14 + 14 + 20 bits, where
            # the gcd of all the field widths would be 2)
            edges, prev = [layout.size], None
            for fname, f in layout:
                if (fname in ("w", "m")) != prev:
                    edges.append(f.offset)
                    prev = fname in ("w", "m")
            g = math.gcd(*edges)
            words = layout.size // g
            mm = Memory(shape=unsigned(layout.size), depth=max(1, depth * (2 if rmax else 1)),
                        init=[])
            m.submodules[name] = mm
            rd, wr = mm.read_port(), mm.write_port(granularity=g)
            a_bits = range(max(2, depth))
            s_rd = SimpleNamespace(addr=Signal(a_bits, name=f"{name}_raddr"), data=rd.data)
            s_wr = SimpleNamespace(addr=Signal(a_bits, name=f"{name}_waddr"),
                                   en=Signal(words, name=f"{name}_wen"))
            wdata = Signal(layout, name=f"{name}_wdata")
            q_rd = q_wr = None
            addr = Mux(s_wr.en.any(), s_wr.addr, s_rd.addr)
            m.d.comb += [wr.data.eq(wdata), wr.en.eq(s_wr.en)]
            if rmax:
                ql = q_layout(p)
                q_rd = SimpleNamespace(addr=Signal(a_bits, name=f"{name}_qraddr"),
                                       data=ql(rd.data[:ql.size]))
                q_wr = SimpleNamespace(addr=Signal(a_bits, name=f"{name}_qwaddr"),
                                       en=Signal(name=f"{name}_qwen"),
                                       data=Signal(ql, name=f"{name}_qwdata"))
                with m.If(q_wr.en):
                    m.d.comb += [wr.data.eq(q_wr.data.as_value()), wr.en.eq((1 << words) - 1)]
                addr = Mux(s_wr.en.any(), s_wr.addr,
                           Mux(q_wr.en, depth + q_wr.addr, Mux(q_sel, depth + q_rd.addr, s_rd.addr)))
                writing = s_wr.en.any() | q_wr.en
            else:
                writing = s_wr.en.any()
            m.d.comb += [rd.addr.eq(addr), wr.addr.eq(addr), rd.en.eq(~writing)]
            return s_rd, s_wr, layout(rd.data), wdata, _field_enables(layout, g), q_rd, q_wr

        nl, pl, sl = neuron_layout(p), pretrace_layout(p), synapse_layout(p)
        fe = fmt_shape(F["err"])
        _, (sig_rd,), sig_wr = mem("sig", fmt_shape(F["sigma"]), NN)
        _, (spk_rd, spk_rd2), spk_wr = mem("spk", W, amap.spike_words, read_ports=2)
        _, (xb_rd,), xb_wr = mem("xbuf", W, amap.x_beats)
        if target:
            el = error_layout(p)
            _, (err_rd,), err_wr = mem("err", el, p.n_out)
            _, (tb_rd,), tb_wr = mem("tbuf", W, amap.t_beats)
        else:
            _, (eb_rd,), eb_wr = mem("ebuf", fe, p.n_out)
        pre = [mem(f"pre{l}", pl, CC) for l in range(P)]
        pre_rd = [r[1][0] for r in pre]
        pre_wr = [r[2] for r in pre]
        if rmax:
            ql = q_layout(p)
        if rmax and not sp1:
            qm = [mem(f"q{l}", ql, SS) for l in range(P)]
            q_rd = [r[1][0] for r in qm]
            q_wr = [r[2] for r in qm]
        if two:
            hb = hacc_bits(p)
            hm = [mem(f"herr{l}", signed(hb), LY[0].C, transparent=True) for l in range(P)]
            h_rd = [r[1][0] for r in hm]
            h_wr = [r[2] for r in hm]
        if has_b:
            b_init = [F["fb"].one] * (LY[0].N * LY[0].C) if p.feedback is Feedback.UNIFORM else []
            bm = [mem(f"fb{l}", fmt_shape(F["fb"]), LY[0].N * LY[0].C, init=b_init)
                  for l in range(P)]
            b_rd = [r[1][0] for r in bm]
            b_wr = [r[2] for r in bm]
        if D:
            _, (sd_rd,), sd_wr = mem("sdly", fmt_shape(F["sigma"]), (D + 1) * NN)
            zd = [mem(f"zdly{l}", fmt_shape(F["zh"]), (D + 1) * CC) for l in range(P)]
            zd_rd = [r[1][0] for r in zd]
            zd_wr = [r[2] for r in zd]

        # Synapse words: the chunk-end pass rewrites only ``w`` and ``m`` and leaves ``el``,
        # ``el_flt`` in place instead of carrying them around ChunkUnit.
        syn_rd, syn_wr, syn_rdata, syn_wdata = [], [], [], []
        if sp1:
            q_rd, q_wr = [], []
            q_sel = Signal()          # this cycle's read is of a q row
        for l in range(P):
            if sp1:
                rd, wr, rdata, wdata_, en_syn, qrd, qwr = spmem(f"syn{l}", sl, SS, q_sel)
                if rmax:
                    q_rd.append(qrd)
                    q_wr.append(qwr)
            else:
                rd, wr, rdata, wdata_, en_syn = gmem(f"syn{l}", sl, SS)
            syn_rd.append(rd)
            syn_wr.append(wr)
            syn_rdata.append(rdata)
            syn_wdata.append(wdata_)
        en_all, en_wm = en_syn(), en_syn("w", "m")
        # Neuron words: the front pass writes ``U``, ``ref``, the learning pass ``I``.
        neur_rd, neur_wr, neur_rdata, neur_wdata, en_neur = gmem("neur", nl, NN)
        if reg:
            rl = rate_layout(p)
            rate_rd, rate_wr, rate_rdata, rate_wdata, en_rate = gmem("ratem", rl, NN)
        scope.leave(locals())

    def _units(self, scope: _Scope):
        """The arithmetic units: one neuron unit, per lane a pre-trace, synapse and chunk unit."""
        p, sp1, m, P, target, reg = scope.take('p', 'sp1', 'm', 'P', 'target', 'reg')
        # ------------------------------------------------------------ units
        m.submodules.neuron = nu = NeuronUnit(p, register_inputs=sp1)
        ptu = []
        for l in range(P):
            u = PreTraceUnit(p)
            m.submodules[f"pretrace{l}"] = u
            ptu.append(u)
        if target:
            m.submodules.errf = efu = ErrorFilterUnit(p)
        snu, chu = [], []
        for l in range(P):
            u = synapse_unit(p)
            m.submodules[f"synapse{l}"] = u
            snu.append(u)
            c = chunk_unit(p, sp1)
            m.submodules[f"chunk{l}"] = c
            chu.append(c)
        if reg:
            m.submodules.regcoef = rcu = RegCoef(p)
        lat = self.latencies
        Ln, Lp, Ls = nu.latency, PreTraceUnit.latency, snu[0].latency
        Lc0 = chu[0].latency                      # ChunkUnit alone
        assert Lc0 == lat["chunk_unit"]
        assert Ls == lat["syn"] and Ln == lat["neuron"]
        scope.leave(locals())

    def _registers(self, scope: _Scope):
        """Registers, pass counters and the per-layer constants the sequencer selects by ``lay``."""
        (p, F, D, m, T, Ln, LY, Lp, SS, two, P, NN, CC) = scope.take(
            'p', 'F', 'D', 'm', 'T', 'Ln', 'LY', 'Lp', 'SS', 'two', 'P', 'NN', 'CC')
        # ------------------------------------------------------------ registers
        step_count = Signal(32)
        cycles = Signal(self.cycle_bits)
        cyc = Signal(self.cycle_bits)
        phase = Signal(range(max(2, p.chunk_steps)))
        r0 = Signal(unsigned(F["w"].bits - 1), init=p.r0_q)
        dslot = Signal(range(D + 1)) if D else None
        m.d.comb += [self.step_count.eq(step_count), self.cycles.eq(cycles), self.r0.eq(r0)]

        big = max(max(T.learn_last(L.N * L.C), T.chunk_last(L.N * L.C), L.N + Ln + 4,
                      L.C + Lp + 4) for L in LY) + 8
        k = Signal(range(big + 1))          # pass cycle counter
        maxN = max(L.N for L in LY)
        maxC = max(L.C for L in LY)
        ci = Signal(range(max(2, maxN + 1)))  # row counter (within the layer)
        cc = Signal(range(max(2, maxC + 1)))  # column counter (within the layer)
        ca = Signal(range(max(2, SS + 1)))    # synapse address (absolute)
        # write-back address of the synapse passes: words come back in issue order, so a
        # counter stepped by each returning issue slot replaces a delay line of addresses
        wa = Signal(range(max(2, SS + 1)))
        lay = Signal()                         # 0: output layer, 1: hidden layer
        do_chunk = Signal()
        out_go = Signal()
        out_done = Signal()

        def per(key):
            """A per-layer constant for the layer being processed."""
            vals = [key(L) if callable(key) else getattr(L, key) for L in LY]
            if not two or vals[0] == vals[1]:
                return Const(vals[0], range(max(2, vals[0] + 1)))
            r = range(max(2, max(vals) + 1))
            return Mux(lay, Const(vals[1], r), Const(vals[0], r))

        lN, lC, lNC = per("N"), per("C"), per(lambda L: L.N * L.C)
        nbase, pbase, sbase, kbase = per("nbase"), per("pbase"), per("sbase"), per("kbase")
        is_out = ~lay
        x_spk = lay == 0 if two else Const(0)   # the layer's inputs are the hidden spike words

        def lane_ok(c, l):
            """Lane ``l`` holds a real input in column ``c`` of this layer (the last column may
            be padding)."""
            conds = []
            for L in LY:
                last = L.n_pre - (L.C - 1) * P        # real inputs in the last column
                conds.append(Const(1) if l < last else (c != L.C - 1))
            return conds[0] if not two else Mux(lay, conds[1], conds[0])

        def advance_2d():
            with m.If(cc == lC - 1):
                m.d.sync += [cc.eq(0), ci.eq(ci + 1)]
            with m.Else():
                m.d.sync += cc.eq(cc + 1)
            m.d.sync += ca.eq(ca + 1)

        def reset_counters(next_lay):
            base = LY[next_lay].sbase
            m.d.sync += [k.eq(0), ci.eq(0), cc.eq(0), ca.eq(base), wa.eq(base), lay.eq(next_lay)]

        # error_delay rings: slot ``dslot`` is written this step, slot ``dslot + 1`` (mod D + 1),
        # written D steps ago, is read.
        if D:
            rslot = Signal(range(D + 1))
            m.d.comb += rslot.eq(Mux(dslot == D, 0, dslot + 1))
            sd_wbase = mul_const(dslot, NN)
            sd_rbase = mul_const(rslot, NN)
            zd_wbase = mul_const(dslot, CC)
            zd_rbase = mul_const(rslot, CC)
        scope.leave(locals())

    def _access(self, scope: _Scope):
        """Idle-time inputs: the stream pointers and the access port's read pipeline."""
        (m, amap, target, p, lp, neur_rd, sig_rd, spk_rd, xb_rd, pre_rd, syn_rd, err_rd, tb_rd,
         eb_rd, rmax, q_rd, two, h_rd, has_b, b_rd, reg, rate_rd, D, sd_rd, zd_rd, r0, step_count,
         cycles, phase, dslot) = scope.take(
            'm', 'amap', 'target', 'p', 'lp', 'neur_rd', 'sig_rd', 'spk_rd', 'xb_rd', 'pre_rd',
            'syn_rd', 'err_rd', 'tb_rd', 'eb_rd', 'rmax', 'q_rd', 'two', 'h_rd', 'has_b', 'b_rd',
            'reg', 'rate_rd', 'D', 'sd_rd', 'zd_rd', 'r0', 'step_count', 'cycles', 'phase',
            'dslot')
        # ------------------------------------------------------------ idle: streams, access port
        idle = Signal()
        m.d.comb += self.busy.eq(~idle)
        x_ptr = Signal(range(max(2, amap.x_beats)))
        m.d.comb += self.inp.ready.eq(idle)
        if target:
            t_ptr = Signal(range(max(2, amap.t_beats)))
            m.d.comb += self.tgt.ready.eq(idle)
        else:
            e_ptr = Signal(range(max(2, p.n_out)))
            m.d.comb += self.err.ready.eq(idle)

        sp, ix = self.acc_space, self.acc_index
        lane_of = ix[:lp] if lp else Const(0)
        addr_of = ix.shift_right(lp)
        acc_w = idle & self.acc_we
        acc_r = idle & self.acc_re

        def wdata(layout_or_width):
            n = layout_or_width.size if isinstance(layout_or_width, data.Layout) else \
                (layout_or_width if isinstance(layout_or_width, int) else Shape.cast(layout_or_width).width)
            return self.acc_wdata[:n]

        # access-port read pipeline: address this cycle, data next, registered after.
        r1_valid = Signal()
        r1_space = Signal(ACC_SPACE_BITS)
        r1_lane = Signal(max(1, lp))
        r1_index = Signal(amap.index_bits)
        m.d.sync += [r1_valid.eq(acc_r), r1_space.eq(sp), r1_lane.eq(lane_of), r1_index.eq(ix)]
        m.d.sync += self.acc_rvalid.eq(r1_valid)

        def lanes_data(rds):
            return _lane_select([r.data for r in rds], r1_lane)

        rsources = [(Space.NEURON, neur_rd.data), (Space.SIGMA, sig_rd.data),
                    (Space.SPIKE, spk_rd.data), (Space.XBUF, xb_rd.data),
                    (Space.PRE, lanes_data(pre_rd)), (Space.SYN, lanes_data(syn_rd))]
        if target:
            rsources += [(Space.ERR, err_rd.data), (Space.TBUF, tb_rd.data)]
        else:
            rsources.append((Space.EBUF, eb_rd.data))
        if rmax:
            rsources.append((Space.Q, lanes_data(q_rd)))
        if two:
            rsources.append((Space.HERR, lanes_data(h_rd)))
        if has_b:
            rsources.append((Space.FB, lanes_data(b_rd)))
        if reg:
            rsources.append((Space.RATE, rate_rd.data))
        if D:
            rsources += [(Space.SDLY, sd_rd.data), (Space.ZDLY, lanes_data(zd_rd))]
        with m.If(r1_valid):
            with m.Switch(r1_space):
                for space, v in rsources:
                    with m.Case(space):
                        m.d.sync += self.acc_rdata.eq(_raw(v).as_unsigned())
                with m.Case(Space.REG):
                    with m.Switch(r1_index):
                        regs = [(Reg.R0, r0), (Reg.STEP_COUNT, step_count),
                                (Reg.CYCLES, cycles), (Reg.CHUNK_PHASE, phase)]
                        if D:
                            regs.append((Reg.DELAY_SLOT, dslot))
                        for rg, v in regs:
                            with m.Case(rg):
                                m.d.sync += self.acc_rdata.eq(v)
                        with m.Default():
                            m.d.sync += self.acc_rdata.eq(0)
                with m.Default():
                    m.d.sync += self.acc_rdata.eq(0)
        scope.leave(locals())

    def _out_stream(self, scope: _Scope):
        """The output stream: the output layer's spike words, beat by beat, under backpressure."""
        amap, spk_rd2, m, out_go, out_done = scope.take('amap', 'spk_rd2', 'm', 'out_go', 'out_done')
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
        scope.leave(locals())

    def _front_passes(self, scope: _Scope):
        """Neuron and pre-trace pipelines (and the error filter chained to the neuron pipe)."""
        (W, P, cc, two, LY, m, x_spk, spk_rd, xb_rd, lp, ci, nu, neur_rdata, reg, lay, rate_rdata,
         Ln, NN, nbase, lw, lN, per, p, lat, ptu, lane_ok, pre_rd, Lp, CC, pbase, target, efu,
         is_out, err_rd, tb_rd) = scope.take(
            'W', 'P', 'cc', 'two', 'LY', 'm', 'x_spk', 'spk_rd', 'xb_rd', 'lp', 'ci', 'nu',
            'neur_rdata', 'reg', 'lay', 'rate_rdata', 'Ln', 'NN', 'nbase', 'lw', 'lN', 'per', 'p',
            'lat', 'ptu', 'lane_ok', 'pre_rd', 'Lp', 'CC', 'pbase', 'target', 'efu', 'is_out',
            'err_rd', 'tb_rd')
        # ------------------------------------------------------------ pass pipelines
        # Each pass issues reads at cycle k (index counters), feeds its unit(s) the read data at
        # k + 1 ("s1") and writes the unit outputs back at k + 1 + latency (delayed addresses).
        sh = ceil_log2(W // P)                         # columns per input word: 2^sh
        x_addr = cc.shift_right(sh)
        x_word = Signal(W)
        hid_kbase = LY[1].kbase if two else 0
        x_spk1 = pipe_reg(m, x_spk, "x_spk1")
        m.d.comb += x_word.eq(Mux(x_spk1, spk_rd.data, xb_rd.data))

        def x_bits(c1):
            off = Cat(Const(0, lp), c1[:sh]) if sh else Const(0, max(1, lp))
            return x_word.bit_select(off, P)

        def x_read():
            """Address the input words of this layer's column ``cc``."""
            m.d.comb += [xb_rd.addr.eq(x_addr), spk_rd.addr.eq(hid_kbase + x_addr)]

        # --- neuron pass ----------------------------------------------------
        n_issue = Signal()
        n_s1 = pipe_reg(m, n_issue, "n_s1")
        n_i1 = pipe_reg(m, ci, "n_i1")
        m.d.comb += [
            nu.valid.eq(n_s1), nu.U.eq(neur_rdata.U), nu.I.eq(neur_rdata.I),
            nu.ref.eq(neur_rdata.ref), nu.drive.eq(0),
        ]
        if reg:
            m.d.comb += [nu.use_rate.eq(pipe_reg(m, lay, "n_hid1")), nu.rate.eq(rate_rdata.rate),
                         nu.racc.eq(rate_rdata.racc)]
        else:
            m.d.comb += nu.use_rate.eq(0)
        n_io = pipe_delay(m, n_i1, Ln, "n_i")
        n_abs = Signal(range(max(2, NN)))
        m.d.comb += n_abs.eq(nbase + n_io)
        sbuf = Signal(W)
        n_bit = n_io[:lw] if lw else Const(0, 1)
        n_word = Signal(W)
        m.d.comb += n_word.eq(sbuf | (nu.S.as_unsigned() << n_bit)[:W])
        n_flush = (n_bit == W - 1) | (n_io == lN - 1) if lw else Const(1)
        FRONT_LAST = per(lambda L: front_last(p, L, lat))

        # --- pre-trace pass -------------------------------------------------
        p_issue = Signal()
        p_s1 = pipe_reg(m, p_issue, "p_s1")
        p_c1 = pipe_reg(m, cc, "p_c1")
        p_x = x_bits(p_c1)
        for l in range(P):
            m.d.comb += [ptu[l].valid.eq(p_s1 & lane_ok(p_c1, l)), ptu[l].z.eq(pre_rd[l].data.z),
                         ptu[l].zh.eq(pre_rd[l].data.zh), ptu[l].x.eq(p_x[l])]
        p_co = pipe_delay(m, p_c1, Lp, "p_c")
        p_abs = Signal(range(max(2, CC)))
        m.d.comb += p_abs.eq(pbase + p_co)

        # --- output error, chained to the neuron pipe (output layer only) -
        # S_i leaves NeuronUnit at cycle i + 1 + Ln; e1, e2 and the target word of neuron i are
        # read one cycle before (address i delayed by Ln) so that they arrive with it.
        if target:
            e_addr = pipe_delay(m, n_i1, Ln - 1, "e_addr")
            e_bit = n_io[:lw] if lw else Const(0, 1)
            m.d.comb += [
                efu.valid.eq(nu.out_valid & is_out), efu.e1.eq(err_rd.data.e1),
                efu.e2.eq(err_rd.data.e2), efu.target.eq(tb_rd.data.bit_select(e_bit, 1)),
                efu.spike.eq(nu.S),
            ]
            e_io = pipe_delay(m, n_io, efu.latency, "e_i")
        scope.leave(locals())

    def _learn_pass(self, scope: _Scope):
        """The learning pass: synapse units, the row sum into ``I``, the hidden-error accumulators."""
        (m, cc, ci, lC, x_bits, D, sd_rd, sig_rd, P, zd_rd, pre_rd, target, err_rd, eb_rd, two, lp,
         h_rd, F, lay, snu, syn_rdata, lane_ok, traces, double, has_b, b_rd, Ls, neur_rdata, p,
         per, T, k, ca, lNC, LY, hb, is_out) = scope.take(
            'm', 'cc', 'ci', 'lC', 'x_bits', 'D', 'sd_rd', 'sig_rd', 'P', 'zd_rd', 'pre_rd',
            'target', 'err_rd', 'eb_rd', 'two', 'lp', 'h_rd', 'F', 'lay', 'snu', 'syn_rdata',
            'lane_ok', 'traces', 'double', 'has_b', 'b_rd', 'Ls', 'neur_rdata', 'p', 'per', 'T',
            'k', 'ca', 'lNC', 'LY', 'hb', 'is_out')
        # --- learning pass --------------------------------------------------
        l_issue = Signal()
        l_s1 = pipe_reg(m, l_issue, "l_s1")
        l_c1 = pipe_reg(m, cc, "l_c1")
        l_i1 = pipe_reg(m, ci, "l_i1")
        l_first1 = pipe_reg(m, cc == 0, "l_first1")
        l_last1 = pipe_reg(m, cc == lC - 1, "l_last1")
        l_x = x_bits(l_c1)
        # σ' of the row and ẑ of the column, error_delay steps late when D > 0
        l_sigma = sd_rd.data if D else sig_rd.data
        l_zh = [zd_rd[l].data for l in range(P)] if D else [pre_rd[l].data.zh for l in range(P)]
        # e of the row: the output error, or the hidden error from the accumulators
        e_out = err_rd.data.e2 if target else eb_rd.data
        if two:
            l_lane1 = l_i1[:lp] if lp else Const(0)
            e_hid = _lane_select([r.data for r in h_rd], l_lane1)[:F["err"].bits].as_signed()
            l_e = Mux(pipe_reg(m, lay, "l_hid1"), e_hid, e_out)
        else:
            l_e = e_out
        for l in range(P):
            u = snu[l]
            rd = syn_rdata[l]
            m.d.comb += [
                u.valid.eq(l_s1 & lane_ok(l_c1, l)), u.w.eq(rd.w), u.m.eq(rd.m),
                u.sigma.eq(l_sigma), u.e.eq(l_e),
                u.zh.eq(l_zh[l]), u.x.eq(l_x[l] & lane_ok(l_c1, l)),
            ]
            if traces:
                m.d.comb += u.el.eq(rd.el)
            if double:
                m.d.comb += u.elf.eq(rd.elf)
            if has_b:
                m.d.comb += u.b.eq(b_rd[l].data)
        l_vo = pipe_delay(m, l_s1, Ls, "l_v")
        l_first_o = pipe_delay(m, l_first1, Ls, "l_first")
        l_last_o = pipe_delay(m, l_last1, Ls, "l_last")
        # The row's I is read as its words leave the unit (the neuron memory's read port has
        # nothing else to do in LEARN), not carried down the pipe beside them: I is written
        # only by its own row's last word, so the value read then is still the old one. It is
        # read two cycles ahead and its decay registered, off the write-back's path.
        l_i_pre = pipe_delay(m, l_i1, Ls - 2, "l_i")      # row of the word leaving in 2 cycles
        l_io = pipe_delay(m, l_i_pre, 2, "l_io")
        l_Id = pipe_reg(m, decay_signed(neur_rdata.I, p.decay_syn), "l_Id")
        db = drive_bits(p)
        acc = Signal(signed(db))
        tot = Signal(signed(db))
        row_sum = Signal(signed(db))
        m.d.comb += tot.eq(sum(u.drive for u in snu))
        m.d.comb += row_sum.eq(Mux(l_first_o, 0, acc) + tot)
        with m.If(l_vo):
            m.d.sync += acc.eq(row_sum)
        I_new = sat(l_Id + row_sum, F["i"])
        LEARN_LAST = per(lambda L: T.learn_last(L.N * L.C))
        l_go = Signal()                     # LEARN issues a word this cycle
        if T.g_learn:
            g = T.g_learn                   # single port: g reads, then g write slots
            m.d.comb += l_go.eq((k[:ceil_log2(2 * g)] < g)
                                & (ca != per(lambda L: L.sbase + L.N * L.C)))
        else:
            m.d.comb += l_go.eq(k < lNC)
        # the synapse fields written back as a word leaves the unit
        l_wb = [{"w": u.w_out, "m": u.m_next, **({"el": u.el_next} if traces else {}),
                 **({"elf": u.elf_next} if double else {})} for u in snu]

        # Hidden error (output layer's pass): acc[k] += b_ki·e_i for every synapse (i, k) as it
        # leaves the unit. Column k comes back every C_o cycles; its accumulator is read one
        # cycle ahead through a read port transparent to the write port, so even C_o = 1 sees
        # the previous row's sum. The last row writes e_k = sat((Σ) >>₀ frac) in its place.
        if two:
            h_c = pipe_delay(m, l_c1, Ls - 1, "h_c")       # column, one cycle before out_valid
            h_first = pipe_delay(m, pipe_reg(m, ci == 0, "h_first1"), Ls, "h_first")
            h_last = pipe_delay(m, pipe_reg(m, ci == LY[0].N - 1, "h_last1"), Ls, "h_last")
            h_co = pipe_reg(m, h_c, "h_co")
            h_frac = F["w"].frac if p.feedback is Feedback.SYMMETRIC else F["fb"].frac
            # With C_o ≥ 2 a column comes back two cycles later at the earliest, so the sum is
            # registered and written (or turned into e_k) one cycle later, when the transparent
            # port still forwards it in time: the read-add-shift-saturate-write loop becomes
            # two short paths. C_o = 1 needs the sum on the very next cycle: one cycle.
            h_pipe = LY[0].C >= 2
            h_new, h_fin, h_w = [], [], []
            for l in range(P):
                s = Signal(signed(hb), name=f"h_new{l}")
                m.d.comb += s.eq(Mux(h_first, 0, h_rd[l].data) + snu[l].fb)
                if h_pipe:
                    s = pipe_reg(m, s, f"h_sum{l}")
                f = Signal(signed(hb), name=f"h_fin{l}")
                m.d.comb += f.eq(resize(sat(shift_trunc(s, h_frac), F["err"]), signed(hb)))
                h_new.append(s)
                h_fin.append(f)
                if h_pipe:       # (valid, address, data) of the registered write
                    h_w.append((pipe_reg(m, snu[l].out_valid & is_out, f"h_wv{l}"),
                                pipe_reg(m, h_co, f"h_wa{l}"),
                                Mux(pipe_reg(m, h_last, f"h_wl{l}"), f, s)))
        scope.leave(locals())

    def _chunk_pass(self, scope: _Scope):
        """The chunk-end pass: ChunkUnits rewrite ``w`` and ``m`` (and ``q``)."""
        (m, cc, ca, lC, nbase, ci, P, lane_ok, reg, rcu, rate_rdata, sp1, rmax, syn_rdata, q_rd,
         chu, r0, T, Lc0, wa, per, k) = scope.take(
            'm', 'cc', 'ca', 'lC', 'nbase', 'ci', 'P', 'lane_ok', 'reg', 'rcu', 'rate_rdata',
            'sp1', 'rmax', 'syn_rdata', 'q_rd', 'chu', 'r0', 'T', 'Lc0', 'wa', 'per', 'k')
        # --- chunk pass -----------------------------------------------------
        c_issue = Signal()
        c_s1 = pipe_reg(m, c_issue, "c_s1")
        c_c1 = pipe_reg(m, cc, "c_c1")
        c_a1 = pipe_reg(m, ca, "c_a1")
        c_last1 = pipe_reg(m, cc == lC - 1, "c_last1")
        c_n1 = pipe_reg(m, nbase + ci, "c_n1")
        c_ok = [c_s1 & lane_ok(c_c1, l) for l in range(P)]
        if reg:
            m.d.comb += rcu.racc.eq(rate_rdata.racc)
        if sp1 and rmax:
            # single port: the q row is read the cycle after the synapse row (whose w, m wait a
            # register); the row's regulariser coefficient is ready by then too.
            c_in = [dict(valid=pipe_reg(m, c_ok[l], f"c_v2_{l}"),
                         w=pipe_reg(m, syn_rdata[l].w, f"c_w2_{l}"),
                         m=pipe_reg(m, syn_rdata[l].m, f"c_m2_{l}"),
                         q=q_rd[l].data.q) for l in range(P)]
        elif reg:
            # The row's coefficient takes one cycle (RegCoef): the synapse waits one register.
            c_in = [dict(valid=pipe_reg(m, c_ok[l], f"c_v2_{l}"),
                         w=pipe_reg(m, syn_rdata[l].w, f"c_w2_{l}"),
                         m=pipe_reg(m, syn_rdata[l].m, f"c_m2_{l}"),
                         **({"q": pipe_reg(m, q_rd[l].data.q, f"c_q2_{l}")} if rmax else {}))
                    for l in range(P)]
        else:
            c_in = [dict(valid=c_ok[l], w=syn_rdata[l].w, m=syn_rdata[l].m,
                         **({"q": q_rd[l].data.q} if rmax else {})) for l in range(P)]
        for l in range(P):
            u = chu[l]
            m.d.comb += [u.valid.eq(c_in[l]["valid"]), u.w.eq(c_in[l]["w"]), u.m.eq(c_in[l]["m"])]
            if rmax:
                m.d.comb += [u.q.eq(c_in[l]["q"]), u.r0.eq(r0)]
            if reg:
                m.d.comb += u.c.eq(rcu.c)
        assert T.in_chunk == (2 if sp1 and rmax else 1 + reg)
        # write-back of w, m (and q): ``pad_chunk`` cycles after the unit; with a single port
        # the q row is written one cycle after the synapse row.
        c_wv = pipe_delay(m, c_s1, T.in_chunk - 1 + Lc0 + T.pad_chunk, "c_wv")  # write slot
        c_wb = []
        for l in range(P):
            u = chu[l]
            wv = pipe_delay(m, u.out_valid, T.pad_chunk, f"c_wv{l}")
            fields = {f: pipe_delay(m, getattr(u, f"{f}_next"), T.pad_chunk, f"c_w{f}{l}")
                      for f in ("w", "m")}
            if rmax:
                qd = T.pad_chunk + (1 if sp1 else 0)
                q_wb = (pipe_delay(m, u.out_valid, qd, f"c_qv{l}"),
                        pipe_reg(m, wa, f"c_qa{l}") if sp1 else wa,
                        pipe_delay(m, u.q_next, qd, f"c_wq{l}"))
            else:
                q_wb = None
            c_wb.append((wv, fields, q_wb))
        CHUNK_LAST = per(lambda L: T.chunk_last(L.N * L.C))
        tc_bits = ceil_log2(T.t_chunk)
        c_go = Signal()                     # CHUNK issues a word this cycle
        m.d.comb += c_go.eq(((k[:tc_bits] == 0) if tc_bits else 1)
                            & (k < per(lambda L: T.t_chunk * L.N * L.C)))
        scope.leave(locals())

    def _seq_idle(self, scope: _Scope):
        """IDLE: the access port owns the memories; the streams fill the buffers; ``start`` runs a step."""
        (idle, m, neur_rd, ix, sig_rd, spk_rd, xb_rd, target, err_rd, tb_rd, eb_rd, reg, rate_rd,
         D, sd_rd, sp1, rmax, q_sel, sp, P, pre_rd, addr_of, syn_rd, q_rd, two, h_rd, has_b, b_rd,
         zd_rd, acc_w, neur_wr, neur_wdata, wdata, nl, en_neur, rate_wr, rate_wdata, rl, en_rate,
         sig_wr, F, spk_wr, W, err_wr, el, sd_wr, syn_wr, syn_wdata, sl, lane_of, en_all, pre_wr,
         pl, q_wr, ql, h_wr, hb, b_wr, zd_wr, r0, step_count, phase, dslot, xb_wr, x_ptr, amap,
         tb_wr, t_ptr, eb_wr, fe, e_ptr, p, reset_counters, cyc, sbuf, do_chunk) = scope.take(
            'idle', 'm', 'neur_rd', 'ix', 'sig_rd', 'spk_rd', 'xb_rd', 'target', 'err_rd', 'tb_rd',
            'eb_rd', 'reg', 'rate_rd', 'D', 'sd_rd', 'sp1', 'rmax', 'q_sel', 'sp', 'P', 'pre_rd',
            'addr_of', 'syn_rd', 'q_rd', 'two', 'h_rd', 'has_b', 'b_rd', 'zd_rd', 'acc_w',
            'neur_wr', 'neur_wdata', 'wdata', 'nl', 'en_neur', 'rate_wr', 'rate_wdata', 'rl',
            'en_rate', 'sig_wr', 'F', 'spk_wr', 'W', 'err_wr', 'el', 'sd_wr', 'syn_wr',
            'syn_wdata', 'sl', 'lane_of', 'en_all', 'pre_wr', 'pl', 'q_wr', 'ql', 'h_wr', 'hb',
            'b_wr', 'zd_wr', 'r0', 'step_count', 'phase', 'dslot', 'xb_wr', 'x_ptr', 'amap',
            'tb_wr', 't_ptr', 'eb_wr', 'fe', 'e_ptr', 'p', 'reset_counters', 'cyc', 'sbuf',
            'do_chunk')
        m.d.comb += idle.eq(1)
        # access port addresses
        m.d.comb += [neur_rd.addr.eq(ix), sig_rd.addr.eq(ix), spk_rd.addr.eq(ix),
                     xb_rd.addr.eq(ix)]
        if target:
            m.d.comb += [err_rd.addr.eq(ix), tb_rd.addr.eq(ix)]
        else:
            m.d.comb += eb_rd.addr.eq(ix)
        if reg:
            m.d.comb += rate_rd.addr.eq(ix)
        if D:
            m.d.comb += sd_rd.addr.eq(ix)
        if sp1 and rmax:
            m.d.comb += q_sel.eq(sp == Space.Q)
        for l in range(P):
            m.d.comb += [pre_rd[l].addr.eq(addr_of), syn_rd[l].addr.eq(addr_of)]
            if rmax:
                m.d.comb += q_rd[l].addr.eq(addr_of)
            if two:
                m.d.comb += h_rd[l].addr.eq(addr_of)
            if has_b:
                m.d.comb += b_rd[l].addr.eq(addr_of)
            if D:
                m.d.comb += zd_rd[l].addr.eq(addr_of)
        with m.If(acc_w):
            with m.Switch(sp):
                with m.Case(Space.NEURON):
                    m.d.comb += [neur_wr.addr.eq(ix), neur_wdata.eq(wdata(nl)),
                                 neur_wr.en.eq(en_neur())]
                if reg:
                    with m.Case(Space.RATE):
                        m.d.comb += [rate_wr.addr.eq(ix), rate_wdata.eq(wdata(rl)),
                                     rate_wr.en.eq(en_rate())]
                single = [(Space.SIGMA, sig_wr, F["sigma"].bits), (Space.SPIKE, spk_wr, W)]
                if target:
                    single.append((Space.ERR, err_wr, el))
                if D:
                    single.append((Space.SDLY, sd_wr, F["sigma"].bits))
                for space, wr, lay_ in single:
                    with m.Case(space):
                        m.d.comb += [wr.addr.eq(ix), wr.data.eq(wdata(lay_)), wr.en.eq(1)]
                with m.Case(Space.SYN):
                    for l in range(P):
                        m.d.comb += [syn_wr[l].addr.eq(addr_of), syn_wdata[l].eq(wdata(sl)),
                                     syn_wr[l].en.eq(Mux(lane_of == l, en_all, 0))]
                laned = [(Space.PRE, pre_wr, pl)]
                if rmax:
                    laned.append((Space.Q, q_wr, ql))
                if two:
                    laned.append((Space.HERR, h_wr, hb))
                if has_b:
                    laned.append((Space.FB, b_wr, F["fb"].bits))
                if D:
                    laned.append((Space.ZDLY, zd_wr, F["zh"].bits))
                for space, wrs, lay_ in laned:
                    with m.Case(space):
                        for l in range(P):
                            m.d.comb += [wrs[l].addr.eq(addr_of), wrs[l].data.eq(wdata(lay_)),
                                         wrs[l].en.eq(lane_of == l)]
                with m.Case(Space.REG):
                    with m.Switch(ix):
                        with m.Case(Reg.R0):
                            m.d.sync += r0.eq(self.acc_wdata)
                        with m.Case(Reg.STEP_COUNT):
                            m.d.sync += step_count.eq(self.acc_wdata)
                        with m.Case(Reg.CHUNK_PHASE):
                            m.d.sync += phase.eq(self.acc_wdata)
                        if D:
                            with m.Case(Reg.DELAY_SLOT):
                                m.d.sync += dslot.eq(Mux(self.acc_wdata > D, D,
                                                         self.acc_wdata))
        # buffers: the access port wins over the stream on the same cycle
        def fill(space, wr, width, stream_, ptr, beats):
            with m.If(acc_w & (sp == space)):
                m.d.comb += [wr.addr.eq(ix), wr.data.eq(wdata(width)), wr.en.eq(1)]
            with m.Elif(stream_.valid):
                m.d.comb += [wr.addr.eq(ptr), wr.data.eq(stream_.payload), wr.en.eq(1)]
                m.d.sync += ptr.eq(Mux(ptr == beats - 1, 0, ptr + 1))

        fill(Space.XBUF, xb_wr, W, self.inp, x_ptr, amap.x_beats)
        if target:
            fill(Space.TBUF, tb_wr, W, self.tgt, t_ptr, amap.t_beats)
        else:
            fill(Space.EBUF, eb_wr, fe, self.err, e_ptr, p.n_out)
        with m.If(self.start):
            reset_counters(0)
            m.d.sync += [cyc.eq(1), x_ptr.eq(0), sbuf.eq(0),
                         do_chunk.eq(phase == p.chunk_steps - 1)]
            m.d.sync += (t_ptr if target else e_ptr).eq(0)
            m.next = "FRONT"
        scope.leave(locals())

    def _seq_front(self, scope: _Scope):
        """FRONT: the neuron and pre-trace passes of one layer at once (disjoint memories)."""
        (n_issue, k, lN, neur_rd, nbase, ci, m, reg, rate_rd, target, err_rd, e_addr, tb_rd, lw,
         nu, neur_wr, n_abs, en_neur, neur_wdata, sig_wr, rate_wr, en_rate, rate_wdata, D, sd_wr,
         sd_wbase, n_flush, spk_wr, kbase, n_io, n_word, sbuf, efu, err_wr, e_io, p_issue, lC,
         x_read, P, pre_rd, pbase, cc, ptu, pre_wr, p_abs, zd_wr, zd_wbase, FRONT_LAST, ca, sbase,
         wa, is_out, out_go) = scope.take(
            'n_issue', 'k', 'lN', 'neur_rd', 'nbase', 'ci', 'm', 'reg', 'rate_rd', 'target',
            'err_rd', 'e_addr', 'tb_rd', 'lw', 'nu', 'neur_wr', 'n_abs', 'en_neur', 'neur_wdata',
            'sig_wr', 'rate_wr', 'en_rate', 'rate_wdata', 'D', 'sd_wr', 'sd_wbase', 'n_flush',
            'spk_wr', 'kbase', 'n_io', 'n_word', 'sbuf', 'efu', 'err_wr', 'e_io', 'p_issue', 'lC',
            'x_read', 'P', 'pre_rd', 'pbase', 'cc', 'ptu', 'pre_wr', 'p_abs', 'zd_wr', 'zd_wbase',
            'FRONT_LAST', 'ca', 'sbase', 'wa', 'is_out', 'out_go')
        # Neuron pass (with the error filter chained to it for the output layer) and
        # pre-trace pass at once: they touch disjoint memories and neither reads what
        # the other writes.
        m.d.comb += [n_issue.eq(k < lN), neur_rd.addr.eq(nbase + ci)]
        if reg:
            m.d.comb += rate_rd.addr.eq(nbase + ci)
        if target:
            m.d.comb += [err_rd.addr.eq(e_addr), tb_rd.addr.eq(e_addr.shift_right(lw))]
        with m.If(k < lN):
            m.d.sync += ci.eq(ci + 1)
        with m.If(nu.out_valid):
            m.d.comb += [
                neur_wr.addr.eq(n_abs), neur_wr.en.eq(en_neur("U", "ref")),
                neur_wdata.U.eq(nu.U_next), neur_wdata.ref.eq(nu.ref_next),
                sig_wr.addr.eq(n_abs), sig_wr.data.eq(nu.sigma), sig_wr.en.eq(1),
            ]
            if reg:
                m.d.comb += [rate_wr.addr.eq(n_abs), rate_wr.en.eq(en_rate()),
                             rate_wdata.rate.eq(nu.rate_next),
                             rate_wdata.racc.eq(nu.racc_next)]
            if D:
                m.d.comb += [sd_wr.addr.eq(sd_wbase + n_abs), sd_wr.data.eq(nu.sigma),
                             sd_wr.en.eq(1)]
            with m.If(n_flush):
                m.d.comb += [spk_wr.addr.eq(kbase + n_io.shift_right(lw)),
                             spk_wr.data.eq(n_word), spk_wr.en.eq(1)]
                m.d.sync += sbuf.eq(0)
            with m.Else():
                m.d.sync += sbuf.eq(n_word)
        if target:
            with m.If(efu.out_valid):
                m.d.comb += [err_wr.addr.eq(e_io), err_wr.en.eq(1),
                             err_wr.data.e1.eq(efu.e1_next), err_wr.data.e2.eq(efu.e2_next)]
        m.d.comb += p_issue.eq(k < lC)
        x_read()
        for l in range(P):
            m.d.comb += pre_rd[l].addr.eq(pbase + cc)
        with m.If(k < lC):
            m.d.sync += cc.eq(cc + 1)
        for l in range(P):
            with m.If(ptu[l].out_valid):
                m.d.comb += [pre_wr[l].addr.eq(p_abs), pre_wr[l].en.eq(1),
                             pre_wr[l].data.z.eq(ptu[l].z_next),
                             pre_wr[l].data.zh.eq(ptu[l].zh_next)]
                if D:
                    m.d.comb += [zd_wr[l].addr.eq(zd_wbase + p_abs), zd_wr[l].en.eq(1),
                                 zd_wr[l].data.eq(ptu[l].zh_next)]
        m.d.sync += k.eq(k + 1)
        with m.If(k == FRONT_LAST):
            m.d.sync += [k.eq(0), ci.eq(0), cc.eq(0), ca.eq(sbase), wa.eq(sbase)]
            with m.If(is_out):
                m.d.sync += out_go.eq(1)
            m.next = "LEARN"
        scope.leave(locals())

    def _seq_learn(self, scope: _Scope):
        """LEARN: one pass over the layer's synapse words."""
        (out_go, m, l_issue, l_go, neur_rd, nbase, l_i_pre, D, sd_rd, sd_rbase, ci, sig_rd, target,
         err_rd, eb_rd, x_read, P, syn_rd, ca, zd_rd, zd_rbase, pbase, cc, pre_rd, has_b, b_rd,
         two, h_rd, lay, lp, h_c, advance_2d, snu, syn_wr, wa, en_all, l_wb, syn_wdata, h_pipe,
         is_out, h_wr, h_co, h_last, h_fin, h_new, l_vo, l_last_o, neur_wr, l_io, en_neur,
         neur_wdata, I_new, k, LEARN_LAST, reset_counters, do_chunk) = scope.take(
            'out_go', 'm', 'l_issue', 'l_go', 'neur_rd', 'nbase', 'l_i_pre', 'D', 'sd_rd',
            'sd_rbase', 'ci', 'sig_rd', 'target', 'err_rd', 'eb_rd', 'x_read', 'P', 'syn_rd', 'ca',
            'zd_rd', 'zd_rbase', 'pbase', 'cc', 'pre_rd', 'has_b', 'b_rd', 'two', 'h_rd', 'lay',
            'lp', 'h_c', 'advance_2d', 'snu', 'syn_wr', 'wa', 'en_all', 'l_wb', 'syn_wdata',
            'h_pipe', 'is_out', 'h_wr', 'h_co', 'h_last', 'h_fin', 'h_new', 'l_vo', 'l_last_o',
            'neur_wr', 'l_io', 'en_neur', 'neur_wdata', 'I_new', 'k', 'LEARN_LAST',
            'reset_counters', 'do_chunk')
        m.d.sync += out_go.eq(0)
        m.d.comb += [l_issue.eq(l_go), neur_rd.addr.eq(nbase + l_i_pre)]
        if D:
            m.d.comb += sd_rd.addr.eq(sd_rbase + nbase + ci)
        else:
            m.d.comb += sig_rd.addr.eq(nbase + ci)
        if target:
            m.d.comb += err_rd.addr.eq(ci)
        else:
            m.d.comb += eb_rd.addr.eq(ci)
        x_read()
        for l in range(P):
            m.d.comb += syn_rd[l].addr.eq(ca)
            if D:
                m.d.comb += zd_rd[l].addr.eq(zd_rbase + pbase + cc)
            else:
                m.d.comb += pre_rd[l].addr.eq(pbase + cc)
            if has_b:
                m.d.comb += b_rd[l].addr.eq(ca)
            if two:
                m.d.comb += h_rd[l].addr.eq(Mux(lay, ci.shift_right(lp), h_c))
        with m.If(l_go):
            advance_2d()
        for l in range(P):
            u = snu[l]
            with m.If(u.out_valid):
                m.d.comb += [syn_wr[l].addr.eq(wa), syn_wr[l].en.eq(en_all)]
                m.d.comb += [getattr(syn_wdata[l], f).eq(v) for f, v in l_wb[l].items()]
                if two and not h_pipe:
                    with m.If(is_out):
                        m.d.comb += [h_wr[l].addr.eq(h_co), h_wr[l].en.eq(1),
                                     h_wr[l].data.eq(Mux(h_last, h_fin[l], h_new[l]))]
        with m.If(l_vo & l_last_o):
            m.d.comb += [neur_wr.addr.eq(nbase + l_io), neur_wr.en.eq(en_neur("I")),
                         neur_wdata.I.eq(I_new)]
        with m.If(l_vo):                  # a word's write slot, on any lane
            m.d.sync += wa.eq(wa + 1)
        m.d.sync += k.eq(k + 1)
        with m.If(k == LEARN_LAST):
            if two:
                with m.If(is_out):
                    reset_counters(1)
                    m.next = "FRONT"
                with m.Elif(do_chunk):
                    reset_counters(0)
                    m.next = "CHUNK"
                with m.Else():
                    m.next = "FIN"
            else:
                with m.If(do_chunk):
                    reset_counters(0)
                    m.next = "CHUNK"
                with m.Else():
                    m.next = "FIN"
        scope.leave(locals())

    def _seq_chunk(self, scope: _Scope):
        """CHUNK: the weight update over the layer's synapse words."""
        (c_issue, c_go, m, reg, rate_rd, nbase, ci, c_s1, c_last1, rate_wr, c_n1, en_rate,
         rate_wdata, P, syn_rd, ca, rmax, q_rd, sp1, c_a1, q_sel, advance_2d, c_wb, syn_wr, wa,
         en_wm, syn_wdata, q_wr, c_wv, k, CHUNK_LAST, two, is_out, reset_counters) = scope.take(
            'c_issue', 'c_go', 'm', 'reg', 'rate_rd', 'nbase', 'ci', 'c_s1', 'c_last1', 'rate_wr',
            'c_n1', 'en_rate', 'rate_wdata', 'P', 'syn_rd', 'ca', 'rmax', 'q_rd', 'sp1', 'c_a1',
            'q_sel', 'advance_2d', 'c_wb', 'syn_wr', 'wa', 'en_wm', 'syn_wdata', 'q_wr', 'c_wv',
            'k', 'CHUNK_LAST', 'two', 'is_out', 'reset_counters')
        m.d.comb += c_issue.eq(c_go)
        if reg:
            m.d.comb += rate_rd.addr.eq(nbase + ci)
            # the row's racc was read by its last synapse: clear it (chunk consumed)
            with m.If(c_s1 & c_last1):
                m.d.comb += [rate_wr.addr.eq(c_n1), rate_wr.en.eq(en_rate("racc")),
                             rate_wdata.racc.eq(0)]
        for l in range(P):
            m.d.comb += syn_rd[l].addr.eq(ca)
            if rmax:
                m.d.comb += q_rd[l].addr.eq(c_a1 if sp1 else ca)
        if sp1 and rmax:
            m.d.comb += q_sel.eq(c_s1)
        with m.If(c_go):
            advance_2d()
        for l in range(P):
            wv, wf, q_wb = c_wb[l]
            with m.If(wv):
                m.d.comb += [syn_wr[l].addr.eq(wa), syn_wr[l].en.eq(en_wm),
                             syn_wdata[l].w.eq(wf["w"]), syn_wdata[l].m.eq(wf["m"])]
            if rmax:
                qv, qa, qq = q_wb
                with m.If(qv):
                    m.d.comb += [q_wr[l].addr.eq(qa), q_wr[l].en.eq(1),
                                 q_wr[l].data.q.eq(qq)]
        with m.If(c_wv):
            m.d.sync += wa.eq(wa + 1)
        m.d.sync += k.eq(k + 1)
        with m.If(k == CHUNK_LAST):
            if two:
                with m.If(is_out):
                    reset_counters(1)
                with m.Else():
                    m.next = "FIN"
            else:
                m.next = "FIN"
        scope.leave(locals())

    def _seq_fin(self, scope: _Scope):
        """FIN: the step ends once ``out`` is drained."""
        (m, out_done, step_count, cycles, cyc, phase, p, lay, D, dslot, rslot) = scope.take(
            'm', 'out_done', 'step_count', 'cycles', 'cyc', 'phase', 'p', 'lay', 'D', 'dslot',
            'rslot')
        with m.If(out_done):
            m.d.sync += [
                # saturates like every counter (docs/protocol.md): 0xFFFFFFFF stays, never wraps
                step_count.eq(Mux(step_count.all(), step_count, step_count + 1)), cycles.eq(cyc),
                phase.eq(Mux(phase == p.chunk_steps - 1, 0, phase + 1)),
                out_done.eq(0), lay.eq(0),
            ]
            if D:
                m.d.sync += dslot.eq(rslot)
            m.next = "IDLE"
        scope.leave(locals())

    def _tail(self, scope: _Scope):
        """Outside the sequencer: the cycle counter and the registered hidden-error write."""
        (m, idle, cyc, two, h_pipe, h_w, h_wr) = scope.take(
            'm', 'idle', 'cyc', 'two', 'h_pipe', 'h_w', 'h_wr')
        with m.If(~idle):
            with m.If(~cyc.all()):
                m.d.sync += cyc.eq(cyc + 1)
        if two and h_pipe:
            # the registered hidden-error write lands one cycle after its word left the unit,
            # possibly in the first cycle of FRONT(hid), which touches no ``herr`` word
            for l, (hv, ha, hd) in enumerate(h_w):
                with m.If(hv):
                    m.d.comb += [h_wr[l].addr.eq(ha), h_wr[l].en.eq(1), h_wr[l].data.eq(hd)]
        scope.leave(locals())


def _field_enables(layout: data.StructLayout, g: int):
    """``en(*fields)``: the write enable (one bit per ``g`` bits) of those fields of ``layout``
    (every field when none is named)."""
    def en(*fields):
        bits = 0
        for fname, f in layout:
            if not fields or fname in fields:
                for b in range(f.offset // g, (f.offset + Shape.cast(f.shape).width) // g):
                    bits |= 1 << b
        return Const(bits, layout.size // g)
    return en


def _raw(v):
    return Value.cast(v)


def _lane_select(values, lane):
    vals = [_raw(v) for v in values]
    if len(vals) == 1:
        return vals[0]
    out = vals[0]
    for l in range(1, len(vals)):
        out = Mux(lane == l, vals[l], out)
    return out

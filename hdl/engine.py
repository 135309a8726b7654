"""The gateware protocol engine: UART bytes in, COBS frames checked and executed on the Core, replies out.

The rules are those of ``spikeloop/protocol.py`` (``FrameDecoder``, ``SequenceTracker``, the
register map, the memory spaces, the payload layouts); the choices the module leaves open are
settled in ``docs/protocol.md`` ("Device behaviour"). ``docs/link.md`` shows the block diagram, the
states, the buffers and the latencies.

The framing (CRC network, frame receiver, COBS transmitter) is ``hdl/framing.py``; how protocol
words reach the Core's access port is ``hdl/spacemap.py``. This module is the command state
machine, built by :class:`_Build` in named sections (checks, commands, reply assembly).
"""

from __future__ import annotations

import enum

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from spikeloop import protocol as pr
from spikeloop.params import ErrorSource

from .config import SoCConfig
from .accessmap import Space
from .framing import FrameReceiver, cobs_transmitter, crc16_step, sat_inc
from .spacemap import SpaceMap, space_maps

__all__ = ["ProtocolEngine", "SpaceMap", "space_maps", "crc16_step"]

#: Reply buffer slot for replies that are not cached (link NAKs, BAD_SEQUENCE, bare duplicate ACKs):
#: header 6 + payload ≤ 2 + CRC 2.
SMALL_SLOT = 10
#: The reply header: cmd, seq, length, session.
_H = pr.HEADER_SIZE
#: Bytes EMIT can send from the header registers: the header and the 6-byte head.
_SR_BYTES = _H + 6
_ANON = "$signal"   # the name Amaranth gives a signal whose variable it cannot trace
#: Bit of the RESET_STATE mask byte of each class.
_RBIT = {c: c.bit_length() - 1 for c in pr.ResetMask}
#: The counters the engine holds (register names), in the order they are built.
_COUNTERS = ("FRAMES_OK", "CRC_ERRORS", "FRAMING_ERRORS", "LENGTH_ERRORS", "RESYNCS", "GARBAGE_BYTES",
             "NAKS_SENT", "DUPLICATES", "UART_OVERRUNS", "CHUNK_COUNT")


def _shape(s: SpaceMap) -> tuple:
    """What the access port's field logic of space ``s`` depends on: field offset, width, words
    per access word (log2), signedness, protocol word bytes and the bits a written word may use."""
    return (s.off0, s.bits, s.sh, s.signed, s.fmt.nbytes, s.check_bits)


class _Op(enum.IntEnum):
    NONE = 0
    IDENT = 1
    RREG = 2
    RMEM = 3
    RUN = 4


class _Ret(enum.IntEnum):
    BODY = 0
    TRAILER = 1
    RREG = 2
    RMEM = 3


class ProtocolEngine(wiring.Component):
    """Receives frames, checks them, executes them on the Core and sends one reply per request.

    Parameters
    ----------
    config : SoCConfig
        The Core this engine drives (``config.core``: its signature and address map) and the link:
        ``clock_hz`` and ``baud`` are reported by IDENTIFY and the ``CLOCK_HZ`` / ``BAUD``
        registers; ``max_payload`` is the largest request and reply payload (frame and reply
        buffers are ``max_payload + 6`` bytes). ``SoCConfig`` validates them.

    Members
    -------
    rx : In(stream.Signature(8))
        Bytes from the UART receiver. Ready while a frame is being received; not ready while a
        complete frame is checked and executed (the UART then counts overruns).
    tx : Out(stream.Signature(8))
        Bytes to the UART transmitter: ``0x00 · COBS(reply) · 0x00``.
    uart_lost : In(1)
        The UART dropped a received byte in this cycle; counted in ``UART_OVERRUNS`` (a strobe,
        not the UART's own counter, whose changes stop once it saturates).
    core : In(Core signature)
        Drives the Core's streams, ``start`` and access port (connect to the Core).
    status : Out(3)
        bit 0: executing a request, bit 1: transmitting, bit 2: a link error was counted.

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`SoCConfig`.
    ValueError
        If the Core's address map has a shape the engine cannot follow with counters.
    """

    def __init__(self, config: SoCConfig):
        try:
            self._setup(config)
        except (TypeError, ValueError):
            self._MustUse__silence = True
            raise
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "uart_lost": In(1),
            "core": In(config.core.signature),
            "status": Out(3),
        })

    def _setup(self, config):
        if not isinstance(config, SoCConfig):
            raise TypeError(f"config must be a SoCConfig, not {type(config).__name__}")
        self.config = config
        c = config.core
        self.params, self.lanes, self.in_width = c.params, c.lanes, c.in_width
        self.clock_hz, self.baud, self.max_payload = config.clock_hz, config.baud, config.max_payload
        self.amap = c.map
        self.spaces = space_maps(c)
        self.max_steps = config.max_steps
        # the identity ROM: the reply after its session head (nonce, session), which EMIT sends
        self.ident = pr.pack_identify(config.identity)[pr.SESSION_HEAD.size:]
        self.second = "tgt" if c.params.error_source is ErrorSource.TARGET else "err"

    def elaborate(self, platform):
        return _Build(self).build()


class _Build:
    """The engine's gateware, built into one :class:`Module` section by section.

    Each section adds its signals (as attributes, for the sections after it) and statements; the
    order of the sections, and of the statements within them, is the circuit's (it fixes the
    generated Verilog, which this split must not change).
    """

    def __init__(self, eng: ProtocolEngine):
        self.eng = eng
        self.m = Module()

    def build(self) -> Module:
        self.sizes()
        self.buffers()
        self.counters()
        self.request_state()
        self.register_map()
        self.memory_spaces()
        self.access_port()
        self.reset_jobs()
        self.run_streams()
        self.verdicts()
        with self.m.FSM(name="eng") as fsm:
            self.st_receive()
            self.st_dispatch()
            self.st_validate()
            self.st_write_reg()
            self.st_read_reg()
            self.st_memory()
            self.st_reset()
            self.st_run()
            self.st_reply()
        self.transmitter()
        m, eng = self.m, self.eng
        m.d.comb += [eng.status[0].eq(~fsm.ongoing("RX")), eng.status[1].eq(~self.tx_idle),
                     eng.status[2].eq(self.link_err)]
        return m

    # ================================================================ helpers
    def registered(self, value, width, name):
        """Request arithmetic, registered: the head is stable from the closing delimiter on, and
        VALIDATE runs at least two cycles later, so these cost no cycle and keep the multiplies
        and wide compares out of the state machine's paths."""
        r = Signal(width, name=name)
        self.m.d.sync += r.eq(value)
        return r

    def emit(self, v):
        """Write reply byte ``v`` (at ``wptr``, through the CRC)."""
        self.m.d.comb += [self.emit_en.eq(1), self.emit_data.eq(v)]

    def acc_read(self, space, index):
        acc = self.acc
        self.m.d.comb += [acc.acc_space.eq(space), acc.acc_index.eq(index), acc.acc_re.eq(1)]

    def acc_write(self, space, index, value):
        acc = self.acc
        self.m.d.comb += [acc.acc_space.eq(space), acc.acc_index.eq(index),
                          acc.acc_wdata.eq(value), acc.acc_we.eq(1)]

    def gather(self):
        """Gather one byte of the frame buffer into ``word``."""
        self.m.d.sync += [self.word.eq(Cat(self.word[8:], self.fbyte)), self.bi.eq(self.bi + 1)]
        self.m.d.comb += self.rptr_nx.eq(self.rptr + 1)

    def advance_word(self):
        m = self.m
        col, cv, rowb = self.col, self.cv, self.rowb
        with m.If(col == self.d_R - 1):
            m.d.sync += [col.eq(0), cv.eq(0), rowb.eq(rowb + self.d_stride)]
        with m.Else():
            m.d.sync += [col.eq(col + 1), cv.eq(cv + self.d_cs)]

    def reply(self, main, rcmd, rlen, head_bytes=(), the_op=_Op.NONE):
        """Start a reply (state REPLY): to the main region (``main``) or the small slot."""
        vals = list(head_bytes)
        self.m.d.sync += [self.r_main.eq(main), self.r_cmd.eq(rcmd), self.r_len.eq(rlen),
                          self.r_head.eq(Cat(*vals) if vals else 0), self.r_head_n.eq(len(vals)),
                          self.op.eq(the_op)]
        self.m.next = "REPLY"

    def nak(self, reason, main, echo=None):
        r = Const(int(reason), 8) if isinstance(reason, int) else reason
        self.reply(main, pr.Command.NAK, 2, (r, self.cmd if echo is None else echo))

    def bare_ack(self):
        self.reply(1, pr.Command.ACK, 0)

    # ================================================================ sections
    def sizes(self):
        eng = self.eng
        p, W = eng.params, eng.in_width
        self.p, self.amap, self.W = p, eng.amap, W
        self.MB = W // 8                          # bytes per stream beat
        self.core = eng.core
        self.BUF = eng.max_payload + pr.HEADER_SIZE + pr.CRC_SIZE
        # the IDENTIFY reply may be longer than max_payload (it is not a request buffer)
        self.RMAIN = RMAIN = (max(eng.max_payload, pr.SESSION_HEAD.size + len(eng.ident))
                              + pr.HEADER_SIZE + pr.CRC_SIZE)
        self.RDEPTH = RMAIN + SMALL_SLOT
        self.n_in_b, self.n_out_b = n_in_b, n_out_b = pr.bitmap_bytes(p.n_in), pr.bitmap_bytes(p.n_out)
        if eng.second == "tgt":
            sec_bytes, sec_nb = n_out_b, 1
        else:
            sec_nb = pr.WordFormat(p.formats["err"].bits, True).nbytes
            sec_bytes = p.n_out * sec_nb
        self.sec_bytes, self.sec_nb = sec_bytes, sec_nb
        self.REC = n_in_b + sec_bytes

    def buffers(self):
        m, BUF, RDEPTH, ident = self.m, self.BUF, self.RDEPTH, self.eng.ident
        m.submodules.fbuf = fbuf = Memory(shape=8, depth=BUF, init=[])
        f_wr, f_rd = fbuf.write_port(), fbuf.read_port()
        m.submodules.rbuf = rbuf = Memory(shape=8, depth=RDEPTH, init=[])
        r_wr, r_rd = rbuf.write_port(), rbuf.read_port()
        self.f_wr, self.r_wr = f_wr, r_wr
        m.submodules.idrom = idrom = Memory(shape=8, depth=len(ident), init=list(ident))
        id_rd = idrom.read_port()
        self.r_rd, self.id_rd = r_rd, id_rd

        # look-ahead read pointers: the port's address is the pointer's next value, so the
        # read data always shows the byte at the pointer's current value.
        def lookahead(port, depth, name):
            ptr = Signal(range(depth + 1), name=name)
            nxt = Signal(range(depth + 1), name=name + "_nx")
            m.d.comb += [nxt.eq(ptr), port.addr.eq(nxt)]
            m.d.sync += ptr.eq(nxt)
            return ptr, nxt

        self.rptr, self.rptr_nx = lookahead(f_rd, BUF, "rptr")
        self.iptr, self.iptr_nx = lookahead(id_rd, len(ident), "iptr")
        self.tptr, self.tptr_nx = lookahead(r_rd, RDEPTH, "tptr")
        self.fbyte = f_rd.data

    def counters(self):
        """The counter registers the engine holds, the link-error flag, the UART's overruns."""
        m, eng = self.m, self.eng
        self.regs_w = regs_w = {r.name: r.width for r in pr.REGISTERS}
        self.cnt = cnt = {n: Signal(regs_w[n], name=n.lower()) for n in _COUNTERS}
        self.link_err = link_err = Signal()
        m.d.comb += link_err.eq((cnt["CRC_ERRORS"] != 0) | (cnt["FRAMING_ERRORS"] != 0)
                                | (cnt["LENGTH_ERRORS"] != 0) | (cnt["UART_OVERRUNS"] != 0))
        with m.If(eng.uart_lost):
            sat_inc(m, cnt["UART_OVERRUNS"])
        self.cycles_valid = Signal()

    def request_state(self):
        """The frame receiver's state (the captured header), the request and reply state, the
        reply buffer's write port with its CRC, and the request head's fields."""
        m, RDEPTH = self.m, self.RDEPTH
        self.rx_ = rx_ = FrameReceiver(m, self.BUF)
        self.cmd, self.seq, self.length, self.hb = rx_.cmd, rx_.seq, rx_.length, rx_.hb
        self.session = rx_.session
        hb = rx_.hb

        have_last, last_seq, last_cmd = Signal(), Signal(8), Signal(8)
        cached_len, cached_nak = Signal(16), Signal()
        # Four signals keep the anonymous names they had before the engine was split into
        # builders, so that the generated Verilog (and Verilator's cache key) is unchanged.
        r_cmd, r_len = Signal(8), Signal(16, name=_ANON)
        r_head, r_head_n = Signal(48), Signal(range(7), name=_ANON)
        r_sess = Signal(16)              # the reply's session field: the request's (0: link reject)
        r_main, op = Signal(), Signal(_Op, name=_ANON)
        forget_after = Signal()
        wptr = Signal(range(RDEPTH + 1))
        rbase = Signal(range(RDEPTH + 1))
        tcrc = Signal(16)
        # EMIT sends bytes e_i .. e_end - 1 of ``cmd · seq · length · r_head``: the header and the
        # head on a new reply, then r_head reloaded with a register value, a memory word or the CRC
        e_i = Signal(range(_SR_BYTES + 1))
        e_end = Signal(range(_SR_BYTES + 1))
        ret = Signal(_Ret)
        tx_go, tx_base, tx_len = Signal(), Signal(range(RDEPTH + 1)), Signal(range(RDEPTH + 1))
        tx_idle = Signal()

        m.d.sync += tx_go.eq(0)          # a one-cycle pulse, after tx_base and tx_len
        emit_en, emit_data = Signal(), Signal(8, name=_ANON)
        m.d.comb += [self.r_wr.addr.eq(wptr), self.r_wr.data.eq(emit_data), self.r_wr.en.eq(emit_en)]
        with m.If(emit_en):
            m.d.sync += [wptr.eq(wptr + 1), tcrc.eq(crc16_step(tcrc, emit_data))]

        word = Signal(48)                # bytes gathered from the frame buffer, shifted in at the top
        bi = Signal(range(8))            # bytes gathered into ``word``
        nleft = Signal(32)               # words / steps / bytes left
        idx2 = Signal(17)                # register address / index within a job
        vars(self).update(
            have_last=have_last, last_seq=last_seq, last_cmd=last_cmd, cached_len=cached_len,
            cached_nak=cached_nak, r_cmd=r_cmd, r_len=r_len, r_head=r_head, r_head_n=r_head_n,
            r_main=r_main, op=op, r_sess=r_sess, forget_after=forget_after, wptr=wptr, rbase=rbase, tcrc=tcrc,
            e_i=e_i, e_end=e_end, ret=ret, tx_go=tx_go, tx_base=tx_base, tx_len=tx_len,
            tx_idle=tx_idle, emit_en=emit_en, emit_data=emit_data, word=word, bi=bi, nleft=nleft,
            idx2=idx2)

        # request head fields
        self.reg_addr, self.reg_count = Cat(hb[0], hb[1]), Cat(hb[2], hb[3])
        self.sid, self.mstart, self.mcount = hb[0], Cat(hb[1], hb[2], hb[3], hb[4]), Cat(hb[5], hb[6])
        self.run_k = Cat(hb[0], hb[1])
        self.rmask = hb[0]

    def register_map(self):
        """Which register addresses READ_REG / WRITE_REG may cover, and where each one lives."""
        m = self.m
        #: registers the Core holds: name -> index in its REG access space
        self.core_regs = core_regs = {r.name: r.core_index for r in pr.REGISTERS
                                      if r.core_index is not None}
        reg_addr, reg_count = self.reg_addr, self.reg_count

        def runs(addrs):
            addrs, out = sorted(addrs), []
            for a in addrs:
                if out and out[-1][1] == a - 1:
                    out[-1][1] = a
                else:
                    out.append([a, a])
            return out

        def range_ok(write):
            rs = runs(r.addr for r in pr.REGISTERS if not write or r.access is pr.Access.RW)
            end = Signal(18)
            m.d.comb += end.eq(reg_addr + reg_count)
            ok = reg_count == 0
            for a, b in rs:
                ok = ok | ((reg_addr >= a) & (end <= b + 1))
            return ok

        self.rd_ok = self.registered(range_ok(False), 1, "rd_ok")
        self.wr_ok = self.registered(range_ok(True), 1, "wr_ok")
        in_core = Signal()                 # the register lives in the Core (read via the access port)
        m.d.comb += in_core.eq(sum((self.idx2 == pr.register(n).addr) for n in core_regs) != 0)
        self.in_core = in_core
        known = set(core_regs) | set(self.cnt) | {"STATUS", "MAGIC", "VERSION", "CLOCK_HZ", "BAUD"}
        for r in pr.REGISTERS:
            if r.name not in known:
                raise ValueError(f"register {r.name} has no source in the protocol engine")

    def memory_spaces(self):
        """The space of a memory request and its constants, registered (like the request
        arithmetic): ``sid`` is stable from the closing delimiter on; the word counters."""
        m = self.m
        self.SP = SP = self.eng.spaces
        d_c, d_ok_c = Signal(range(max(2, len(SP)))), Signal()
        #: the field shapes of the spaces: spaces of one shape share the access port's logic
        self.shapes = shapes = sorted({_shape(s) for s in SP})
        k_c = Signal(range(max(2, len(shapes))))
        with m.Switch(self.sid):
            for i, s in enumerate(SP):
                with m.Case(s.id):
                    m.d.comb += [d_c.eq(i), d_ok_c.eq(1), k_c.eq(shapes.index(_shape(s)))]
        self.d = d = self.registered(d_c, len(d_c), "space")
        self.d_ok = self.registered(d_ok_c, 1, "space_ok")
        self.dk = self.registered(k_c, len(k_c), "shape")
        maxdep = max(s.depth for s in SP)
        col = Signal(range(maxdep + 1))     # column of the current word
        cv = Signal(range(max(s.R * s.cstride for s in SP) + 1))   # column · cstride
        ccnt = Signal(range(maxdep + 1))    # SEEK: columns stepped so far
        rowb = Signal(range(max(s.base + maxdep * max(1, s.stride) for s in SP) + 2))
        d_depth, d_nb, d_R, d_stride, d_cs = (Signal(32), Signal(4), Signal(range(maxdep + 1)),
                                              Signal(len(rowb)), Signal(len(cv)))
        for i, s in enumerate(SP):
            with m.If(d == i):
                m.d.sync += [d_depth.eq(s.depth), d_nb.eq(s.fmt.nbytes), d_R.eq(s.R),
                             d_stride.eq(s.stride), d_cs.eq(s.cstride)]
        v_idx = Signal(len(rowb))
        m.d.comb += v_idx.eq(rowb + cv)
        vars(self).update(col=col, cv=cv, ccnt=ccnt, rowb=rowb, d_depth=d_depth, d_nb=d_nb, d_R=d_R,
                          d_stride=d_stride, d_cs=d_cs, v_idx=v_idx)

    def access_port(self):
        """The access port's address for memory words, and the field of word ``v_idx`` in the
        access word: the read value, the word gathered for a write and inserted, its range check.
        Built once per field shape (``_shape``), not per space: the UP5K build's 28 spaces have 13."""
        m, d, dk, v_idx, word = self.m, self.d, self.dk, self.v_idx, self.word
        self.acc = acc = self.core
        self.idx_w = len(acc.acc_index)
        fld_val = Signal(48)           # field, sign- or zero-extended
        ins_word = Signal(len(acc.acc_rdata))
        new_val = Signal(48)           # the gathered word (value in the low bits)
        fits = Signal()
        acc_index = Signal(self.idx_w)
        with m.Switch(dk):
            for k, (off0, bits, sh, signed, nbytes, check_bits) in enumerate(self.shapes):
                with m.Case(k):
                    sub = v_idx[:sh] if sh else Const(0, 1)
                    off = Signal(range(len(ins_word)), name=f"off_{k}")
                    m.d.comb += off.eq(off0 + sub * bits)
                    raw = acc.acc_rdata.bit_select(off, bits) if sh else acc.acc_rdata[off0:off0 + bits]
                    m.d.comb += fld_val.eq(raw.as_signed() if signed else raw)
                    mask = Const((1 << bits) - 1, len(ins_word))
                    fmask = (mask << off)[:len(ins_word)] if sh else Const(mask.value << off0, len(ins_word))
                    val = (new_val[:bits] << off)[:len(ins_word)] if sh else \
                        (new_val[:bits] << off0)[:len(ins_word)]
                    m.d.comb += ins_word.eq((acc.acc_rdata & ~fmask) | val)
                    nb8 = 8 * nbytes
                    v = word[48 - nb8:48]
                    m.d.comb += [new_val.eq(v), acc_index.eq(v_idx >> sh)]
                    b = check_bits
                    if b >= nb8:
                        m.d.comb += fits.eq(1)
                    elif signed:
                        top = v[b - 1:nb8]
                        m.d.comb += fits.eq((top == 0) | (top == (1 << (nb8 - b + 1)) - 1))
                    else:
                        m.d.comb += fits.eq(v[b:nb8] == 0)
        with m.If(self.d_ok):
            m.d.comb += acc.acc_index.eq(acc_index)
            with m.Switch(d):
                for i, s in enumerate(self.SP):
                    with m.Case(i):
                        m.d.comb += acc.acc_space.eq(s.acc_space)
        self.fld_val, self.ins_word, self.new_val, self.fits = fld_val, ins_word, new_val, fits

    def reset_jobs(self):
        """RESET_STATE DYNAMICS / LEARNING: per access space, the field mask each class clears,
        from the spaces' ``reset_class`` (plus the delay rings, which have no protocol space)."""
        m, amap, rmask = self.m, self.amap, self.rmask
        jobs = {}
        for s in self.SP:
            if not (s.dynamics or s.learning):
                continue
            dm, lm = jobs.setdefault(s.acc_space, [0, 0])
            mk = 0
            for sub in range(s.per):
                mk |= s.field_mask(sub)
            jobs[s.acc_space] = [dm | (mk if s.dynamics else 0), lm | (mk if s.learning else 0)]
        for ring in ("SDLY", "ZDLY"):             # delay lines: dynamics without a snapshot name
            sp_ = getattr(Space, ring, None)
            if sp_ is not None and sp_ in amap.depth:
                jobs[int(sp_)] = [(1 << amap.width[sp_]) - 1, 0]
        self.jobs = jobs = [(sp_, amap.depth[Space(sp_)], dm, lm) for sp_, (dm, lm) in sorted(jobs.items())]
        job = Signal(range(len(jobs) + 1))
        j_space, j_depth, j_clr = Signal(4), Signal(self.idx_w + 1), Signal(len(self.ins_word))
        dyn, lrn = rmask[_RBIT[pr.ResetMask.DYNAMICS]], rmask[_RBIT[pr.ResetMask.LEARNING]]
        for i, (sp_, dep, dm, lm) in enumerate(jobs):
            with m.If(job == i):
                m.d.comb += [j_space.eq(sp_), j_depth.eq(dep),
                             j_clr.eq(Mux(dyn, dm, 0) | Mux(lrn, lm, 0))]
        self.job, self.j_space, self.j_depth, self.j_clr = job, j_space, j_depth, j_clr

    def run_streams(self):
        """RUN_STEPS: the stream beat being gathered or spread and its counters."""
        p, amap, W, MB = self.p, self.amap, self.W, self.MB
        beat = Signal(W)
        beats = Signal(range(max(amap.x_beats, amap.t_beats, p.n_out) + 2))
        blft = Signal(range(max(self.n_in_b, self.sec_bytes) + 2))     # bitmap bytes left
        chunk_flag = Signal()
        out_left = Signal(range(self.n_out_b + 2))
        beat_bytes = Signal(range(MB + 1))
        self.sec = getattr(self.core, self.eng.second)
        self.LAST_MASK = (1 << (p.n_out % 8)) - 1 if p.n_out % 8 else 0xFF
        vars(self).update(beat=beat, beats=beats, blft=blft, chunk_flag=chunk_flag, out_left=out_left,
                          beat_bytes=beat_bytes)

    def verdicts(self):
        """Every sequence, size and range verdict of DISPATCH and VALIDATE, registered (PREP
        gives the chained ones a cycle)."""
        m, eng, reg = self.m, self.eng, self.registered
        cmd, seq, length = self.cmd, self.seq, self.length
        mstart, mcount, run_k, reg_count = self.mstart, self.mcount, self.run_k, self.reg_count
        self.seq_new = reg((~self.have_last) | (cmd == pr.Command.IDENTIFY)
                           | (seq == (self.last_seq + 1)[:8]), 1, "seq_new")
        self.seq_dup = reg(self.have_last & (seq == self.last_seq) & (cmd == self.last_cmd), 1, "seq_dup")
        want_c = Signal(32)
        for i, s in enumerate(self.SP):
            with m.If(self.d == i):
                m.d.comb += want_c.eq(mcount * s.fmt.nbytes)
        self.want = want = reg(want_c, 32, "want")                 # data bytes of a memory request
        end = reg(mstart + mcount, 33, "mem_end")
        run_len = reg(run_k * self.REC + 2, 32, "run_len")
        self.run_bad_k = reg((run_k == 0) | (run_k > eng.max_steps), 1, "run_bad_k")
        sc_sum = Signal(33)             # the ACK's STEP_COUNT after the batch, saturated as the Core counts
        m.d.comb += sc_sum.eq(self.core.step_count + run_k)
        self.run_sc = reg(Mux(sc_sum[32], 0xFFFFFFFF, sc_sum[:32]), 32, "run_sc")
        self.run_rlen = reg(run_k * self.n_out_b + 6, 32, "run_rlen")
        requests = [c.value for c in pr.Command if c.is_request]
        self.cmd_ok = reg((cmd >= min(requests)) & (cmd <= max(requests)), 1, "cmd_ok")
        self.is_w = is_w = cmd == pr.Command.WRITE_MEM
        self.bad_len4 = reg(length != 4, 1, "bad_len4")
        self.bad_wreg_len = reg((length < 4) | (length != Cat(Const(0, 2), reg_count) + 4), 1,
                                "bad_wreg_len")
        self.count0 = reg(reg_count == 0, 1, "count0")
        self.rreg_big = reg(reg_count > eng.max_payload // 4, 1, "rreg_big")
        self.mem_short = reg(length < 7, 1, "mem_short")
        self.mem_badlen = reg(length != Mux(is_w, want, 0) + 7, 1, "mem_badlen")
        self.mem_range = reg(end > self.d_depth, 1, "mem_range")
        self.mem_badval = reg((mcount == 0) | (~is_w & (want > eng.max_payload)), 1, "mem_badval")
        self.run_badlen = reg((length < 2) | (length != run_len), 1, "run_badlen")
        self.bad_len1 = reg(length != 1, 1, "bad_len1")
        self.bad_mask = reg(self.rmask[max(pr.ResetMask).bit_length():] != 0, 1, "bad_mask")
        link_reason = Signal(8)
        link_nak = Signal()
        self.link_reason, self.link_nak = link_reason, link_nak
        self.session_verdicts()

    def session_verdicts(self):
        """The session registers and IDENTIFY's verdicts (``protocol.SessionState``)."""
        m, reg, hb, length = self.m, self.registered, self.hb, self.length
        F = pr.IdentifyFlags
        self.sess = sess = Signal(16)             # the open session (0: none)
        self.sess_nonce = nonce_r = Signal(32)    # the nonce that opened it
        self.sess_opened = opened = Signal(16)    # sessions opened since reset, mod 2^16
        empty = length == 0
        flags = Mux(empty, 0, hb[0])
        nonce = Mux(empty, 0, Cat(hb[1], hb[2], hb[3], hb[4]))
        self.id_badlen = reg(~empty & (length != pr.IDENTIFY_REQ.size), 1, "id_badlen")
        self.id_badflags = reg(~((flags == 0) | (flags == F.OPEN) | (flags == F.OPEN | F.TAKEOVER)
                                 | (flags == F.CLOSE)), 1, "id_badflags")
        self.id_open, self.id_close = reg(flags[0], 1, "id_open"), reg(flags[2], 1, "id_close")
        self.id_nonce = reg(nonce, 32, "id_nonce")
        self.id_same = reg((sess != 0) & (nonce == nonce_r), 1, "id_same")
        self.id_in_use = reg((sess != 0) & ~flags[1], 1, "id_in_use")
        c1, c2 = Signal(16), Signal(16)
        m.d.comb += [c1.eq(opened + 1), c2.eq(opened + 2)]
        new_c = Mux((nonce[:16] ^ c1) == 0, c2, c1)       # protocol.session_for: never 0
        self.id_new_c = reg(new_c, 16, "id_new_c")
        self.id_new_s = reg(nonce[:16] ^ new_c, 16, "id_new_s")

    # ================================================================ states
    def st_receive(self):
        """RX: the frame receiver; CHECK: its link checks (``hdl/framing.py``)."""
        m, rx_ = self.m, self.rx_
        with m.State("RX"):
            rx_.receive(self.eng.rx, self.f_wr, self.cnt, "CHECK")
        with m.State("CHECK"):
            # the body is complete: the link checks of FrameDecoder, in its order
            rx_.check(self.cnt, self.link_nak, self.link_reason, "DISPATCH", "RX")

    def st_dispatch(self):
        """DISPATCH: steps 1–4′ of the order of checks (docs/protocol.md, "Device behaviour")."""
        m, cnt, cmd = self.m, self.cnt, self.cmd
        with m.State("DISPATCH"):
            m.d.sync += [self.forget_after.eq(0), self.bi.eq(0)]
            with m.If(self.tx_idle):
                with m.If(self.link_nak):
                    self.nak(self.link_reason, 0, Const(0xFF, 8))
                with m.Elif(self.length > self.eng.max_payload):
                    self.nak(pr.Nak.BAD_LENGTH, 0)
                with m.Elif((cmd != pr.Command.IDENTIFY) & (self.session != self.sess)):
                    self.nak(pr.Nak.BAD_SESSION, 0)
                with m.Elif(self.seq_new):
                    with m.If(~self.cmd_ok):
                        self.nak(pr.Nak.BAD_COMMAND, 1)
                    with m.Else():
                        m.next = "PREP"
                with m.Elif(self.seq_dup):
                    sat_inc(m, cnt["DUPLICATES"])
                    with m.If(self.cached_nak | (cmd == pr.Command.RUN_STEPS)):
                        # the cached reply (main region of the reply buffer) again
                        m.d.sync += [self.tx_go.eq(1), self.tx_base.eq(0), self.tx_len.eq(self.cached_len)]
                        with m.If(self.cached_nak):
                            sat_inc(m, cnt["NAKS_SENT"])
                        m.next = "RX"
                    with m.Elif((cmd == pr.Command.READ_REG) | (cmd == pr.Command.READ_MEM)):
                        m.next = "PREP"              # side-effect free: read again
                    with m.Else():
                        self.reply(0, pr.Command.ACK, 0)  # writes, RESET_STATE: a bare ACK
                with m.Else():
                    self.nak(pr.Nak.BAD_SEQUENCE, 0)

        with m.State("PREP"):
            m.next = "VALIDATE"              # the registered verdicts settle

    def st_validate(self):
        """VALIDATE: steps 5–8 for the command, from the registered verdicts."""
        m, nak, hb = self.m, self.nak, self.hb
        with m.State("VALIDATE"):
            with m.Switch(self.cmd):
                with m.Case(pr.Command.IDENTIFY):
                    self.identify()
                with m.Case(pr.Command.READ_REG):
                    with m.If(self.bad_len4):
                        nak(pr.Nak.BAD_LENGTH, 0)
                    with m.Elif(~self.rd_ok):
                        nak(pr.Nak.BAD_ADDRESS, 1)
                    with m.Elif(self.count0 | self.rreg_big):
                        nak(pr.Nak.BAD_VALUE, 1)
                    with m.Else():
                        m.d.sync += [self.idx2.eq(self.reg_addr), self.nleft.eq(self.reg_count)]
                        self.reply(1, pr.Command.ACK, self.reg_count << 2, (), _Op.RREG)
                with m.Case(pr.Command.WRITE_REG):
                    with m.If(self.bad_wreg_len):
                        nak(pr.Nak.BAD_LENGTH, 0)
                    with m.Elif(~self.wr_ok):
                        nak(pr.Nak.BAD_ADDRESS, 1)
                    with m.Elif(self.count0):
                        nak(pr.Nak.BAD_VALUE, 1)
                    with m.Else():
                        m.d.sync += [self.idx2.eq(self.reg_addr), self.nleft.eq(self.reg_count)]
                        m.d.comb += self.rptr_nx.eq(_H + 4)
                        m.next = "WREG_CHK"
                with m.Case(pr.Command.READ_MEM, pr.Command.WRITE_MEM):
                    with m.If(self.mem_short):
                        nak(pr.Nak.BAD_LENGTH, 0)
                    with m.Elif(~self.d_ok):
                        nak(pr.Nak.BAD_ADDRESS, 1)
                    with m.Elif(self.mem_badlen):
                        nak(pr.Nak.BAD_LENGTH, 0)
                    with m.Elif(self.mem_range):
                        nak(pr.Nak.BAD_ADDRESS, 1)
                    with m.Elif(self.mem_badval):
                        nak(pr.Nak.BAD_VALUE, 1)
                    with m.Else():
                        m.d.sync += [self.nleft.eq(self.mcount), self.col.eq(self.mstart), self.cv.eq(0),
                                     self.ccnt.eq(0), self.r_len.eq(self.want)]
                        for i, s in enumerate(self.SP):
                            with m.If(self.d == i):
                                m.d.sync += self.rowb.eq(s.base)
                        m.d.comb += self.rptr_nx.eq(_H + 7)
                        with m.If(self.is_w):
                            m.next = "WMEM_CHK"
                        with m.Else():
                            m.next = "SEEK"
                with m.Case(pr.Command.RUN_STEPS):
                    with m.If(self.run_badlen):
                        nak(pr.Nak.BAD_LENGTH, 0)
                    with m.Elif(self.run_bad_k):
                        nak(pr.Nak.BAD_VALUE, 1)
                    with m.Else():
                        sc = self.run_sc
                        m.d.sync += self.nleft.eq(self.run_k)
                        m.d.comb += self.rptr_nx.eq(_H + 2)
                        self.reply(1, pr.Command.ACK, self.run_rlen,
                                   (sc[0:8], sc[8:16], sc[16:24], sc[24:32], hb[0], hb[1]), _Op.RUN)
                with m.Case(pr.Command.RESET_STATE):
                    with m.If(self.bad_len1):
                        nak(pr.Nak.BAD_LENGTH, 0)
                    with m.Elif(self.bad_mask):
                        nak(pr.Nak.BAD_VALUE, 1)
                    with m.Else():
                        m.d.sync += [self.job.eq(0), self.idx2.eq(0)]
                        m.next = "RS_JOB"

    def identify(self):
        """IDENTIFY: the session rule (a refused one changes nothing), then the identity."""
        m, nak, sess = self.m, self.nak, self.sess
        with m.If(self.id_badlen):
            nak(pr.Nak.BAD_LENGTH, 0)
        with m.Elif(self.id_badflags):
            nak(pr.Nak.BAD_VALUE, 0)
        with m.Elif(self.id_open & ~self.id_same & self.id_in_use):
            nak(pr.Nak.IN_USE, 0)
        with m.Elif(~self.id_open & (self.session != sess)):
            nak(pr.Nak.BAD_SESSION, 0)
        with m.Else():
            fresh = self.id_open & ~self.id_same
            after = Signal(16)
            m.d.comb += after.eq(Mux(fresh, self.id_new_s, Mux(self.id_close, 0, sess)))
            with m.If(fresh):
                m.d.sync += [sess.eq(self.id_new_s), self.sess_nonce.eq(self.id_nonce),
                             self.sess_opened.eq(self.id_new_c)]
            with m.If(self.id_close):
                m.d.sync += [sess.eq(0), self.sess_nonce.eq(0)]
            m.d.comb += self.iptr_nx.eq(0)
            n = self.id_nonce
            self.reply(1, pr.Command.ACK, pr.SESSION_HEAD.size + len(self.eng.ident),
                       (n[0:8], n[8:16], n[16:24], n[24:32], after[0:8], after[8:16]), _Op.IDENT)

    def st_write_reg(self):
        """WRITE_REG: a check pass over the values (``register_max``), then the apply pass."""
        m, p, idx2, nleft, bi = self.m, self.p, self.idx2, self.nleft, self.bi
        word = self.word

        def reg_word():
            return word[16:48]

        with m.State("WREG_CHK"):
            with m.If(nleft == 0):
                m.d.sync += [idx2.eq(self.reg_addr), nleft.eq(self.reg_count), bi.eq(0)]
                m.d.comb += self.rptr_nx.eq(_H + 4)
                m.next = "WREG_DO"
            with m.Elif(bi != 4):
                self.gather()
            with m.Else():
                v = reg_word()
                bad = 0                # registers that hold less than their width
                for r in pr.REGISTERS:
                    if pr.register_max(r, p) < (1 << r.width) - 1:
                        bad |= (idx2 == r.addr) & (v[:r.width] > pr.register_max(r, p))
                with m.If(bad):
                    self.nak(pr.Nak.BAD_VALUE, 1)
                with m.Else():
                    m.d.sync += [bi.eq(0), idx2.eq(idx2 + 1), nleft.eq(nleft - 1)]

        with m.State("WREG_DO"):
            with m.If(nleft == 0):
                self.bare_ack()
            with m.Elif(bi != 4):
                self.gather()
            with m.Else():
                v = reg_word()
                m.d.sync += [bi.eq(0), idx2.eq(idx2 + 1), nleft.eq(nleft - 1)]
                with m.Switch(idx2):
                    for r in pr.REGISTERS:            # the Core's writable registers
                        if r.core_index is not None and r.access is pr.Access.RW:
                            with m.Case(r.addr):
                                self.acc_write(Space.REG, r.core_index, v[:self.regs_w[r.name]])
                    for name, c in self.cnt.items():
                        if pr.register(name).access is pr.Access.RW:
                            with m.Case(pr.register(name).addr):
                                m.d.sync += c.eq(v[:len(c)])

    def st_read_reg(self):
        """READ_REG: one register per pass, from the Core (access port) or the engine."""
        m, eng, idx2, cnt, acc = self.m, self.eng, self.idx2, self.cnt, self.acc
        with m.State("RREG"):
            with m.If(self.nleft == 0):
                m.next = "TRAILER"
            with m.Elif(self.in_core):
                self.acc_read(Space.REG, idx2)
                m.next = "RREG_W"
            with m.Else():
                val = Signal(32)
                with m.Switch(idx2):
                    consts = {"MAGIC": int.from_bytes(pr.MAGIC, "little"),
                              "VERSION": pr.PROTOCOL_VERSION, "CLOCK_HZ": eng.clock_hz,
                              "BAUD": eng.baud}
                    for r in pr.REGISTERS:
                        with m.Case(r.addr):
                            if r.name in cnt:
                                m.d.comb += val.eq(cnt[r.name])
                            elif r.name in consts:
                                m.d.comb += val.eq(consts[r.name])
                            elif r.name == "STATUS":
                                m.d.comb += val.eq(self.link_err << 2)
                m.d.sync += [self.r_head.eq(val), self.e_i.eq(_H), self.e_end.eq(_H + 4), self.ret.eq(_Ret.RREG)]
                m.next = "EMIT"

        with m.State("RREG_W"):
            with m.If(acc.acc_rvalid):
                with m.If((idx2 == self.core_regs["CYCLES"]) & ~self.cycles_valid):
                    m.d.sync += self.r_head.eq(0)     # cleared by RESET_STATE COUNTERS
                with m.Else():
                    m.d.sync += self.r_head.eq(acc.acc_rdata[:32])
                m.d.sync += [self.e_i.eq(_H), self.e_end.eq(_H + 4), self.ret.eq(_Ret.RREG)]
                m.next = "EMIT"

    def st_memory(self):
        """READ_MEM / WRITE_MEM: SEEK the first word, then read or check and read-modify-write."""
        m, acc, nleft, bi = self.m, self.acc, self.nleft, self.bi
        col, cv, ccnt, rowb, d_R, d_cs, d_nb = (self.col, self.cv, self.ccnt, self.rowb, self.d_R,
                                                self.d_cs, self.d_nb)
        with m.State("SEEK"):
            # row and column of the first word, by repeated subtraction (once per request)
            with m.If(col >= d_R):
                m.d.sync += [col.eq(col - d_R), rowb.eq(rowb + self.d_stride)]
            with m.Elif((ccnt != col) & (d_cs == 1)):
                m.d.sync += [ccnt.eq(col), cv.eq(col)]
            with m.Elif(ccnt != col):              # then the column offset, step by step
                m.d.sync += [ccnt.eq(ccnt + 1), cv.eq(cv + d_cs)]
            with m.Elif(self.cmd == pr.Command.WRITE_MEM):
                m.d.sync += [nleft.eq(self.mcount), bi.eq(0)]
                m.d.comb += self.rptr_nx.eq(_H + 7)
                m.next = "WMEM_G"
            with m.Else():
                self.reply(1, pr.Command.ACK, self.r_len, (), _Op.RMEM)

        with m.State("RMEM"):
            with m.If(nleft == 0):
                m.next = "TRAILER"
            with m.Else():
                m.d.comb += acc.acc_re.eq(1)
                m.next = "RMEM_W"

        with m.State("RMEM_W"):
            with m.If(acc.acc_rvalid):
                m.d.sync += [self.r_head.eq(self.fld_val), self.e_i.eq(_H), self.e_end.eq(d_nb + _H),
                             self.ret.eq(_Ret.RMEM), nleft.eq(nleft - 1)]
                self.advance_word()
                m.next = "EMIT"

        with m.State("WMEM_CHK"):
            with m.If(nleft == 0):
                m.d.sync += [col.eq(self.mstart), cv.eq(0), ccnt.eq(0)]
                m.next = "SEEK"
            with m.Elif(bi != d_nb):
                self.gather()
            with m.Else():
                with m.If(~self.fits):
                    self.nak(pr.Nak.BAD_VALUE, 1)
                with m.Else():
                    m.d.sync += [bi.eq(0), nleft.eq(nleft - 1)]

        with m.State("WMEM_G"):
            with m.If(nleft == 0):
                self.bare_ack()
            with m.Elif(bi != d_nb):
                self.gather()
            with m.Else():
                m.d.comb += acc.acc_re.eq(1)
                m.next = "WMEM_W"

        with m.State("WMEM_W"):
            with m.If(acc.acc_rvalid):
                m.d.comb += [acc.acc_wdata.eq(self.ins_word), acc.acc_we.eq(1)]
                m.d.sync += [bi.eq(0), nleft.eq(nleft - 1)]
                self.advance_word()
                m.next = "WMEM_G"

    def st_reset(self):
        """RESET_STATE: the DYNAMICS / LEARNING jobs (read, clear the masked bits, write), then the
        registers of ``reset_class`` COUNTERS (one Core register write per state) and LINK."""
        m, acc, idx2, job, cnt, rmask = self.m, self.acc, self.idx2, self.job, self.cnt, self.rmask
        COUNTERS, LINK = pr.ResetMask.COUNTERS, pr.ResetMask.LINK
        with m.State("RS_JOB"):
            with m.If(job == len(self.jobs)):
                m.next = "RS_CNT"
            with m.Elif((self.j_clr == 0) | (idx2 == self.j_depth)):
                m.d.sync += [job.eq(job + 1), idx2.eq(0)]
            with m.Else():
                self.acc_read(self.j_space, idx2)
                m.next = "RS_W"

        with m.State("RS_W"):
            with m.If(acc.acc_rvalid):
                self.acc_write(self.j_space, idx2, acc.acc_rdata & ~self.j_clr)
                m.d.sync += idx2.eq(idx2 + 1)
                m.next = "RS_JOB"

        # COUNTERS: the Core's writable registers are written 0 (one per state), the engine's
        # counters set to 0, and CYCLES (read-only in the Core) reads 0 until the next step.
        clear = [r for r in pr.REGISTERS if r.reset_class is COUNTERS]
        core_w = [r for r in clear if r.core_index is not None and r.access is pr.Access.RW]
        here = [cnt[r.name].eq(0) for r in clear if r.core_index is None]
        for r in clear:
            if r.core_index is None and r.name not in cnt or r.core_index is not None \
                    and r.access is not pr.Access.RW and r.name != "CYCLES":
                raise ValueError(f"RESET_STATE COUNTERS cannot clear register {r.name}")
        if any(r.name == "CYCLES" for r in clear):
            here.append(self.cycles_valid.eq(0))
        link = [c for name, c in cnt.items() if pr.register(name).reset_class is LINK]
        if len(core_w) != 2:
            raise ValueError(f"RESET_STATE COUNTERS clears the Core registers in two states, "
                             f"not {len(core_w)}: {[r.name for r in core_w]}")
        counters, link_class = rmask[_RBIT[COUNTERS]], rmask[_RBIT[LINK]]
        # One access-port write per state. The two ``If``s stay on separate lines: Amaranth merges
        # identical conditions on one source line, which would renumber the netlist's cells.
        with m.State("RS_CNT"):
            with m.If(counters):
                self.acc_write(Space.REG, core_w[0].core_index, 0)
                m.d.sync += here
            m.next = "RS_CNT2"
        with m.State("RS_CNT2"):
            with m.If(counters):
                self.acc_write(Space.REG, core_w[1].core_index, 0)
            with m.If(link_class):
                for c in link:
                    m.d.sync += c.eq(0)
                m.d.sync += self.forget_after.eq(1)
            self.bare_ack()

    def _stream_bitmap(self, prefix, port, nxt_state, nxt_setup):
        """RUN_STEPS: stream a bitmap of the frame buffer into ``port``, a beat at a time."""
        m, MB, fbyte, beats, beat, bi, blft = (self.m, self.MB, self.fbyte, self.beats, self.beat,
                                               self.bi, self.blft)
        if MB == 1:
            # a beat is one bitmap byte: straight from the frame buffer, one per cycle
            with m.State(prefix + "_G"):
                m.d.comb += [port.valid.eq(1), port.payload.eq(fbyte)]
                with m.If(port.ready):
                    m.d.comb += self.rptr_nx.eq(self.rptr + 1)
                    m.d.sync += beats.eq(beats - 1)
                    with m.If(beats == 1):
                        nxt_setup()
                        m.next = nxt_state
            return
        with m.State(prefix + "_G"):
            with m.If(bi == MB):
                m.next = prefix + "_S"
            with m.Else():
                with m.If(blft != 0):
                    m.d.sync += [beat.eq(Cat(beat[8:], fbyte)), blft.eq(blft - 1)]
                    m.d.comb += self.rptr_nx.eq(self.rptr + 1)
                with m.Else():
                    m.d.sync += beat.eq(Cat(beat[8:], Const(0, 8)))
                m.d.sync += bi.eq(bi + 1)
        with m.State(prefix + "_S"):
            m.d.comb += [port.valid.eq(1), port.payload.eq(beat)]
            with m.If(port.ready):
                m.d.sync += [beats.eq(beats - 1), bi.eq(0)]
                with m.If(beats == 1):
                    nxt_setup()
                    m.next = nxt_state
                with m.Else():
                    m.next = prefix + "_G"

    def st_run(self):
        """RUN_STEPS: per step the chunk phase, the input and target / error streams, ``start``,
        and the output beats into the reply."""
        m, p, amap, core, MB, sec = self.m, self.p, self.amap, self.core, self.MB, self.sec
        beats, beat, bi, out_left, nleft = self.beats, self.beat, self.bi, self.out_left, self.nleft
        with m.State("RU_PH"):
            with m.If(nleft == 0):
                m.next = "TRAILER"
            with m.Else():
                self.acc_read(Space.REG, self.core_regs["CHUNK_PHASE"])
                m.next = "RU_PHW"

        with m.State("RU_PHW"):
            with m.If(self.acc.acc_rvalid):
                m.d.sync += [self.chunk_flag.eq(self.acc.acc_rdata[:20] == p.chunk_steps - 1),
                             beats.eq(amap.x_beats), self.blft.eq(self.n_in_b), bi.eq(0)]
                m.next = "RU_IN_G"

        if self.eng.second == "tgt":
            def to_tgt():
                m.d.sync += [beats.eq(amap.t_beats), self.blft.eq(self.n_out_b)]
            self._stream_bitmap("RU_IN", core.inp, "RU_SEC_G", to_tgt)
            self._stream_bitmap("RU_SEC", core.tgt, "RU_GO", lambda: None)
        else:
            def to_err():
                m.d.sync += beats.eq(p.n_out)
            self._stream_bitmap("RU_IN", core.inp, "RU_SEC", to_err)
            with m.State("RU_SEC"):
                # n_out error words, sec_nb bytes each, one stream beat per word
                sec_nb, word = self.sec_nb, self.word
                with m.If(bi != sec_nb):
                    self.gather()
                with m.Else():
                    ew = len(sec.payload)
                    m.d.comb += [sec.valid.eq(1),
                                 sec.payload.eq(word[48 - 8 * sec_nb:48 - 8 * sec_nb + ew])]
                    with m.If(sec.ready):
                        m.d.sync += [beats.eq(beats - 1), bi.eq(0)]
                        with m.If(beats == 1):
                            m.next = "RU_GO"

        with m.State("RU_GO"):
            m.d.comb += core.start.eq(1)
            m.d.sync += [beats.eq(amap.t_beats), out_left.eq(self.n_out_b)]
            m.next = "RU_W1"

        with m.State("RU_W1"):
            m.next = "RU_RUN"

        LAST_MASK = self.LAST_MASK
        with m.State("RU_RUN"):
            with m.If(beats != 0):
                m.d.comb += core.out.ready.eq(1)
                with m.If(core.out.valid):
                    m.d.sync += beats.eq(beats - 1)
                    if MB == 1:              # one reply byte per beat, written at once
                        ob = core.out.payload[:8]
                        self.emit(Mux(out_left == 1, ob & LAST_MASK, ob))
                        m.d.sync += out_left.eq(out_left - 1)
                    else:
                        m.d.sync += [beat.eq(core.out.payload), self.beat_bytes.eq(0)]
                        m.next = "RU_OB"
            with m.Elif(~core.busy):
                m.d.sync += [nleft.eq(nleft - 1), self.cycles_valid.eq(1)]
                with m.If(self.chunk_flag):
                    sat_inc(m, self.cnt["CHUNK_COUNT"])
                m.next = "RU_PH"

        if MB > 1:
            beat_bytes = self.beat_bytes
            with m.State("RU_OB"):             # the bytes of a wide output beat
                with m.If((beat_bytes == MB) | (out_left == 0)):
                    m.next = "RU_RUN"
                with m.Else():
                    self.emit(Mux(out_left == 1, beat[:8] & LAST_MASK, beat[:8]))
                    m.d.sync += [beat.eq(beat >> 8), beat_bytes.eq(beat_bytes + 1),
                                 out_left.eq(out_left - 1)]

    def st_reply(self):
        """Reply assembly: REPLY starts it, EMIT writes header, head and reloaded values, IDENT
        the identity ROM, TRAILER the CRC; LAUNCH hands it to the transmitter."""
        m, e_i, e_end, ret, r_head = self.m, self.e_i, self.e_end, self.ret, self.r_head
        r_len, r_cmd, tcrc = self.r_len, self.r_cmd, self.tcrc
        with m.State("REPLY"):
            base = Mux(self.r_main, 0, self.RMAIN)
            m.d.sync += [self.wptr.eq(base), self.rbase.eq(base), tcrc.eq(pr.CRC16_INIT),
                         e_i.eq(0), e_end.eq(self.r_head_n + _H),
                         self.r_sess.eq(Mux(self.link_nak, 0, self.session)),
                         ret.eq(_Ret.BODY)]
            with m.If(r_cmd == pr.Command.NAK):
                sat_inc(m, self.cnt["NAKS_SENT"])
            with m.If(self.r_main):
                m.d.sync += [self.have_last.eq(~self.forget_after), self.last_seq.eq(self.seq),
                             self.last_cmd.eq(self.cmd), self.cached_len.eq(r_len + _H + pr.CRC_SIZE),
                             self.cached_nak.eq(r_cmd == pr.Command.NAK)]
            m.next = "EMIT"

        with m.State("EMIT"):
            vec = Cat(r_cmd, self.seq, r_len, self.r_sess, r_head)
            self.emit(vec.word_select(e_i, 8))
            m.d.sync += e_i.eq(e_i + 1)
            with m.If(e_i == e_end - 1):
                with m.Switch(ret):
                    with m.Case(_Ret.TRAILER):
                        m.next = "LAUNCH"
                    with m.Case(_Ret.RREG):
                        m.d.sync += [self.idx2.eq(self.idx2 + 1), self.nleft.eq(self.nleft - 1)]
                        m.next = "RREG"
                    with m.Case(_Ret.RMEM):
                        m.next = "RMEM"
                    with m.Default():
                        with m.Switch(self.op):
                            with m.Case(_Op.IDENT):
                                m.next = "IDENT"
                            with m.Case(_Op.RREG):
                                m.next = "RREG"
                            with m.Case(_Op.RMEM):
                                m.next = "RMEM"
                            with m.Case(_Op.RUN):
                                m.next = "RU_PH"
                            with m.Default():
                                m.next = "TRAILER"

        with m.State("IDENT"):
            self.emit(self.id_rd.data)
            m.d.comb += self.iptr_nx.eq(self.iptr + 1)
            with m.If(self.iptr == len(self.eng.ident) - 1):
                m.next = "TRAILER"

        with m.State("TRAILER"):
            m.d.sync += [r_head.eq(Cat(tcrc[8:], tcrc[:8])), e_i.eq(_H), e_end.eq(_H + 2),
                         ret.eq(_Ret.TRAILER)]
            m.next = "EMIT"

        with m.State("LAUNCH"):
            m.d.sync += self.tx_go.eq(1)
            m.d.sync += [self.tx_base.eq(self.rbase), self.tx_len.eq(r_len + _H + pr.CRC_SIZE)]
            m.next = "RX"

    def transmitter(self):
        """The COBS transmitter (``hdl/framing.py``), its own state machine."""
        cobs_transmitter(self.m, self.eng.tx, self.r_rd, self.tptr, self.tptr_nx, self.tx_go,
                         self.tx_base, self.tx_len, self.tx_idle, self.RDEPTH)

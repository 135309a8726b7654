"""The gateware protocol engine: UART bytes in, COBS frames checked and executed on the Core, replies out.

The rules are those of ``spikeloop/protocol.py`` (``FrameDecoder``, ``SequenceTracker``, the
register map, the memory spaces, the payload layouts); the choices the module leaves open are
settled in ``docs/protocol.md`` ("Device behaviour"). ``docs/link.md`` shows the block diagram, the
states, the buffers and the latencies.
"""

from __future__ import annotations

import enum

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from spikeloop import protocol as pr
from spikeloop.params import ErrorSource, Params

from .core import AccessMap, Core, Reg, Space

__all__ = ["ProtocolEngine", "SpaceMap", "space_maps", "crc16_step"]

#: Reply buffer slot for replies that are not cached (link NAKs, BAD_SEQUENCE, bare duplicate ACKs):
#: header 4 + payload ≤ 2 + CRC 2.
SMALL_SLOT = 8
#: Bytes EMIT can send from the header registers: cmd, seq, length (4) and the 6-byte head.
_SR_BYTES = 10


def _crc16_matrix():
    """For each bit of the next CRC, the CRC bits and data bits it is the XOR of (CRC is linear)."""
    rows = []
    for out in range(16):
        cb = [k for k in range(16) if pr.crc16_update_byte(1 << k, 0) >> out & 1]
        db = [k for k in range(8) if pr.crc16_update_byte(0, 1 << k) >> out & 1]
        rows.append((cb, db))
    return rows


_CRC_ROWS = _crc16_matrix()


def crc16_step(crc, byte):
    """One byte of CRC-16/CCITT-FALSE as an XOR network (``protocol.crc16_update_byte`` in gates)."""
    return Cat(*(Cat(*(crc[k] for k in cb), *(byte[k] for k in db)).xor() for cb, db in _CRC_ROWS))


class SpaceMap:
    """How protocol word ``k`` of one memory space reaches the Core's access port, without a divider.

    ``v = base + (k div R)·stride + (k mod R)·cstride``; the access word is ``v >> sh`` of
    ``acc_space``,
    the field ``[off0 + (v mod 2^sh)·bits, + bits)``. Derived from ``AccessMap.locate`` by probing
    and then checked against it for every ``k`` (so a Core whose map does not have this shape is
    refused at construction instead of being mis-addressed).
    """

    def __init__(self, amap: AccessMap, s: pr.MemorySpace, p: Params):
        self.name, self.id = s.name, s.id
        self.fmt = s.word(p)
        self.kind = s.kind
        self.depth = D = s.depth(p)
        loc = [amap.locate(s.name, k) for k in range(D)]
        L0 = loc[0]
        self.acc_space, self.bits, self.signed = int(L0.space), L0.bits, L0.signed
        self.off0 = L0.offset
        per = 1                                   # protocol words per access word
        while per < D and loc[per].index == L0.index:
            per += 1
        if per == D and D > 1:                    # one access word holds them all
            per = 1 << ceil_log2(D)
        if per & (per - 1):
            raise ValueError(f"space {s.name}: words per access word must be a power of two, not {per}")
        self.sh = ceil_log2(per)
        R, cs = D, 1                              # row length, column step (fb: transposed)
        if per == 1 and D > 1:
            cs = loc[1].index - L0.index
            if cs < 1:
                raise ValueError(f"space {s.name}: words must ascend in the access port, "
                                 f"word 1 is at {loc[1].index}, word 0 at {L0.index}")
            for k in range(1, D):
                if loc[k].index != L0.index + k * cs:
                    R = k
                    break
        self.R, self.cstride = R, cs
        self.stride = (loc[R].index - L0.index) if R < D else R * cs
        self.base = L0.index << self.sh
        for k, L in enumerate(loc):
            v = self.base + (k // R) * self.stride + (k % R) * cs
            want = (int(L.space), L.index, L.offset, L.bits, L.signed)
            got = (self.acc_space, v >> self.sh, self.off0 + (v % per) * self.bits, self.bits,
                   self.signed)
            if want != got:
                raise ValueError(f"space {s.name}: word {k} is at {want}, which the engine's "
                                 f"counter scheme would place at {got}")
        if self.signed != self.fmt.signed:
            raise ValueError(f"space {s.name}: the Core's field must be "
                             f"{'signed' if self.fmt.signed else 'unsigned'} like its word format")
        if self.bits > 8 * self.fmt.nbytes:
            raise ValueError(f"space {s.name}: a {self.bits}-bit field does not fit its "
                             f"{self.fmt.nbytes}-byte word")
        if self.bits != self.fmt.bits:
            raise ValueError(f"space {s.name}: the Core's {self.bits}-bit field must be as wide as "
                             f"its {self.fmt.bits}-bit word format")
        #: bits a written word may use (its format's, which is the Core field's width)
        self.check_bits = self.fmt.bits
        self.per = per

    @property
    def dynamics(self) -> bool:
        """Cleared by RESET_STATE DYNAMICS (everything but synapse-kind and feedback words)."""
        return self.kind in ("neuron", "pre", "filter")

    @property
    def learning(self) -> bool:
        """Cleared by RESET_STATE LEARNING (synapse words except the weights)."""
        return self.kind == "synapse" and not self.name.endswith(".w")

    def field_mask(self, sub: int = 0) -> int:
        return ((1 << self.bits) - 1) << (self.off0 + sub * self.bits)


def space_maps(p: Params, lanes: int = 1, in_width: int = 8) -> list[SpaceMap]:
    """The memory spaces the engine serves: those of ``spaces_for(p)`` that the Core holds."""
    amap = AccessMap(p, lanes, in_width)
    names = amap.names()
    return [SpaceMap(amap, s, p) for s in pr.spaces_for(p) if s.name in names]


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


def _sat_inc(m, sig):
    with m.If(sig != (1 << len(sig)) - 1):
        m.d.sync += sig.eq(sig + 1)


def _sat_add(m, sig, n):
    s = Signal(len(sig) + 1)
    m.d.comb += s.eq(sig + n)
    m.d.sync += sig.eq(Mux(s[len(sig)], (1 << len(sig)) - 1, s[:len(sig)]))


class ProtocolEngine(wiring.Component):
    """Receives frames, checks them, executes them on the Core and sends one reply per request.

    Parameters
    ----------
    params : Params
    lanes, in_width : int
        Those of the :class:`Core` this engine drives.
    clock_hz, baud : int
        Reported by IDENTIFY and the ``CLOCK_HZ`` / ``BAUD`` registers.
    max_payload : int
        Largest request and reply payload (frame and reply buffers are ``max_payload + 6`` bytes).

    Members
    -------
    rx : In(stream.Signature(8))
        Bytes from the UART receiver. Ready while a frame is being received; not ready while a
        complete frame is checked and executed (the UART then counts overruns).
    tx : Out(stream.Signature(8))
        Bytes to the UART transmitter: ``0x00 · COBS(reply) · 0x00``.
    uart_overrun : In(16)
        The UART's overrun counter; each change counts in ``UART_OVERRUNS``.
    core : In(Core signature)
        Drives the Core's streams, ``start`` and access port (connect to the Core).
    status : Out(3)
        bit 0: executing a request, bit 1: transmitting, bit 2: a link error was counted.

    Raises
    ------
    ValueError
        If a parameter is out of range or the Core's address map has a shape the engine cannot
        follow with counters.
    """

    def __init__(self, params: Params, lanes: int = 1, in_width: int = 8, *, clock_hz: int,
                 baud: int, max_payload: int = 1024):
        try:
            self._setup(params, lanes, in_width, clock_hz, baud, max_payload)
        except ValueError:
            self._MustUse__silence = True
            raise
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "uart_overrun": In(16),
            "core": In(self._core_sig),
            "status": Out(3),
        })

    def _setup(self, p, lanes, in_width, clock_hz, baud, max_payload):
        if not isinstance(p, Params):
            raise ValueError(f"params must be a Params, not {p!r}")
        for name, v in (("clock_hz", clock_hz), ("baud", baud)):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 < v < 1 << 32:
                raise ValueError(f"{name} must be a positive integer below 2**32, not {v!r}")
        if not isinstance(in_width, int) or in_width < 8 or in_width % 8:
            raise ValueError(f"in_width must be a multiple of 8 for the protocol engine, not {in_width!r}")
        core = Core(p, lanes, in_width)          # for its signature and address map only
        core._MustUse__silence = True
        self._core_sig = core.signature
        self.params, self.lanes, self.in_width = p, lanes, in_width
        self.clock_hz, self.baud = clock_hz, baud
        self.amap = core.map
        self.spaces = space_maps(p, lanes, in_width)
        self.max_steps = pr.max_steps_per_frame(p, max_payload) if isinstance(max_payload, int) else 0
        ident = pr.Identity(p, lanes, clock_hz, baud, max_payload if isinstance(max_payload, int) else 0,
                            self.max_steps)
        self.ident = pr.pack_identify(ident) if isinstance(max_payload, int) and max_payload < 1 << 16 else b""
        if (not isinstance(max_payload, int) or isinstance(max_payload, bool)
                or not 64 <= max_payload <= 0xFFFF):
            raise ValueError(f"max_payload must be an integer from 64 to 65535, not {max_payload!r}")
        if self.max_steps < 1:
            raise ValueError(f"max_payload must fit one RUN_STEPS step, not {max_payload}")
        self.max_payload = max_payload
        members = self._core_sig.members
        if p.error_source is ErrorSource.TARGET:
            if "tgt" not in members:
                raise ValueError("error_source target needs a Core with a 'tgt' stream")
            self.second = "tgt"
        else:
            if "err" not in members:
                raise ValueError("error_source host needs a Core with an 'err' stream")
            self.second = "err"

    # ------------------------------------------------------------------ gateware
    def elaborate(self, platform):
        p, amap, W = self.params, self.amap, self.in_width
        MB = W // 8                               # bytes per stream beat
        m = Module()
        core = self.core
        BUF = self.max_payload + pr.HEADER_SIZE + pr.CRC_SIZE
        MAXENC = BUF + pr.cobs_max_overhead(BUF)
        # the IDENTIFY reply may be longer than max_payload (it is not a request buffer)
        RMAIN = max(self.max_payload, len(self.ident)) + pr.HEADER_SIZE + pr.CRC_SIZE
        RDEPTH = RMAIN + SMALL_SLOT
        n_in_b, n_out_b = pr.bitmap_bytes(p.n_in), pr.bitmap_bytes(p.n_out)
        if self.second == "tgt":
            sec_bytes, sec_nb = n_out_b, 1
        else:
            sec_nb = pr.WordFormat(p.formats["err"].bits, True).nbytes
            sec_bytes = p.n_out * sec_nb
        REC = n_in_b + sec_bytes

        # ------------------------------------------------------------ buffers
        m.submodules.fbuf = fbuf = Memory(shape=8, depth=BUF, init=[])
        f_wr, f_rd = fbuf.write_port(), fbuf.read_port()
        m.submodules.rbuf = rbuf = Memory(shape=8, depth=RDEPTH, init=[])
        r_wr, r_rd = rbuf.write_port(), rbuf.read_port()
        m.submodules.idrom = idrom = Memory(shape=8, depth=len(self.ident), init=list(self.ident))
        id_rd = idrom.read_port()

        # look-ahead read pointers: the port's address is the pointer's next value, so the
        # read data always shows the byte at the pointer's current value.
        def lookahead(port, depth, name):
            ptr = Signal(range(depth + 1), name=name)
            nxt = Signal(range(depth + 1), name=name + "_nx")
            m.d.comb += [nxt.eq(ptr), port.addr.eq(nxt)]
            m.d.sync += ptr.eq(nxt)
            return ptr, nxt

        rptr, rptr_nx = lookahead(f_rd, BUF, "rptr")
        iptr, iptr_nx = lookahead(id_rd, len(self.ident), "iptr")
        tptr, tptr_nx = lookahead(r_rd, RDEPTH, "tptr")
        fbyte = f_rd.data

        # ------------------------------------------------------------ counters (registers)
        regs_w = {r.name: r.width for r in pr.REGISTERS}
        cnt = {n: Signal(regs_w[n], name=n.lower()) for n in (
            "FRAMES_OK", "CRC_ERRORS", "FRAMING_ERRORS", "LENGTH_ERRORS", "RESYNCS", "GARBAGE_BYTES",
            "NAKS_SENT", "DUPLICATES", "UART_OVERRUNS", "CHUNK_COUNT")}
        link_err = Signal()
        m.d.comb += link_err.eq((cnt["CRC_ERRORS"] != 0) | (cnt["FRAMING_ERRORS"] != 0)
                                | (cnt["LENGTH_ERRORS"] != 0) | (cnt["UART_OVERRUNS"] != 0))
        ovr_prev = Signal(16)
        m.d.sync += ovr_prev.eq(self.uart_overrun)
        with m.If(self.uart_overrun != ovr_prev):
            _sat_inc(m, cnt["UART_OVERRUNS"])
        cycles_valid = Signal()

        # ------------------------------------------------------------ receive state
        hunting = Signal(init=1)
        enc_len = Signal(range(MAXENC + 2))
        code_left = Signal(8)
        last_ff = Signal()
        dec_len = Signal(range(MAXENC + 2))
        rcrc = Signal(16, init=pr.CRC16_INIT)
        cmd = Signal(8)
        seq = Signal(8)
        length = Signal(16)
        head = Signal(56)
        hb = [head[8 * i:8 * i + 8] for i in range(7)]

        # ------------------------------------------------------------ request / reply state
        have_last, last_seq, last_cmd = Signal(), Signal(8), Signal(8)
        cached_len, cached_nak = Signal(16), Signal()
        r_cmd, r_len = Signal(8), Signal(16)
        r_head, r_head_n = Signal(48), Signal(range(7))
        r_main, op = Signal(), Signal(_Op)
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
        emit_en, emit_data = Signal(), Signal(8)
        m.d.comb += [r_wr.addr.eq(wptr), r_wr.data.eq(emit_data), r_wr.en.eq(emit_en)]
        with m.If(emit_en):
            m.d.sync += [wptr.eq(wptr + 1), tcrc.eq(crc16_step(tcrc, emit_data))]

        def emit(v):
            m.d.comb += [emit_en.eq(1), emit_data.eq(v)]

        word = Signal(48)                # bytes gathered from the frame buffer, shifted in at the top
        bi = Signal(range(8))            # bytes gathered into ``word``
        nleft = Signal(32)               # words / steps / bytes left
        idx2 = Signal(17)                # register address / index within a job

        # request head fields
        reg_addr, reg_count = Cat(hb[0], hb[1]), Cat(hb[2], hb[3])
        sid, mstart, mcount = hb[0], Cat(hb[1], hb[2], hb[3], hb[4]), Cat(hb[5], hb[6])
        run_k = Cat(hb[0], hb[1])
        rmask = hb[0]

        # ------------------------------------------------------------ register map
        core_regs = {r.name: int(r) for r in Reg if r.name in {x.name for x in pr.REGISTERS}}
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

        # Request arithmetic, registered: the head is stable from the closing delimiter on, and
        # VALIDATE runs at least two cycles later, so these cost no cycle and keep the
        # multiplies and wide compares out of the state machine's paths.
        def registered(value, width, name):
            r = Signal(width, name=name)
            m.d.sync += r.eq(value)
            return r
        rd_ok = registered(range_ok(False), 1, "rd_ok")
        wr_ok = registered(range_ok(True), 1, "wr_ok")
        in_core = Signal()                 # the register lives in the Core (read via the access port)
        m.d.comb += in_core.eq(sum((idx2 == pr.register(n).addr) for n in core_regs) != 0)
        known = set(core_regs) | set(cnt) | {"STATUS", "MAGIC", "VERSION", "CLOCK_HZ", "BAUD"}
        for r in pr.REGISTERS:
            if r.name not in known:
                raise ValueError(f"register {r.name} has no source in the protocol engine")

        # ------------------------------------------------------------ memory spaces
        SP = self.spaces
        # The space of a memory request and its constants, registered (like the request
        # arithmetic): ``sid`` is stable from the closing delimiter on.
        d_c, d_ok_c = Signal(range(max(2, len(SP)))), Signal()
        with m.Switch(sid):
            for i, s in enumerate(SP):
                with m.Case(s.id):
                    m.d.comb += [d_c.eq(i), d_ok_c.eq(1)]
        d = registered(d_c, len(d_c), "space")
        d_ok = registered(d_ok_c, 1, "space_ok")
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

        # ------------------------------------------------------------ access port defaults
        acc = core
        idx_w = len(acc.acc_index)

        def acc_read(space, index):
            m.d.comb += [acc.acc_space.eq(space), acc.acc_index.eq(index), acc.acc_re.eq(1)]

        def acc_write(space, index, value):
            m.d.comb += [acc.acc_space.eq(space), acc.acc_index.eq(index),
                         acc.acc_wdata.eq(value), acc.acc_we.eq(1)]

        # the field of word ``v_idx`` in the access word: read value and inserted word
        fld_val = Signal(48)           # field, sign- or zero-extended
        ins_word = Signal(len(acc.acc_rdata))
        new_val = Signal(48)           # the gathered word (value in the low bits)
        fits = Signal()
        for i, s in enumerate(SP):
            with m.If(d == i):
                per = s.per
                sub = v_idx[:s.sh] if s.sh else Const(0, 1)
                off = Signal(range(len(ins_word)), name=f"off_{i}")
                m.d.comb += off.eq(s.off0 + sub * s.bits)
                raw = acc.acc_rdata.bit_select(off, s.bits) if s.sh else acc.acc_rdata[s.off0:s.off0 + s.bits]
                if s.signed:
                    m.d.comb += fld_val.eq(raw.as_signed())
                else:
                    m.d.comb += fld_val.eq(raw)
                mask = Const((1 << s.bits) - 1, len(ins_word))
                fmask = (mask << off)[:len(ins_word)] if s.sh else Const(s.field_mask(), len(ins_word))
                val = (new_val[:s.bits] << off)[:len(ins_word)] if s.sh else \
                    (new_val[:s.bits] << s.off0)[:len(ins_word)]
                m.d.comb += ins_word.eq((acc.acc_rdata & ~fmask) | val)
                nb8 = 8 * s.fmt.nbytes
                v = word[48 - nb8:48]
                m.d.comb += new_val.eq(v)
                b = s.check_bits
                if b >= nb8:
                    m.d.comb += fits.eq(1)
                elif s.fmt.signed:
                    top = v[b - 1:nb8]
                    m.d.comb += fits.eq((top == 0) | (top == (1 << (nb8 - b + 1)) - 1))
                else:
                    m.d.comb += fits.eq(v[b:nb8] == 0)
        with m.If(d_ok):
            for i, s in enumerate(SP):
                with m.If(d == i):
                    m.d.comb += acc.acc_index.eq(v_idx >> s.sh), acc.acc_space.eq(s.acc_space)

        # gather one byte of the frame buffer into ``word``
        def gather():
            m.d.sync += [word.eq(Cat(word[8:], fbyte)), bi.eq(bi + 1)]
            m.d.comb += rptr_nx.eq(rptr + 1)

        def advance_word():
            with m.If(col == d_R - 1):
                m.d.sync += [col.eq(0), cv.eq(0), rowb.eq(rowb + d_stride)]
            with m.Else():
                m.d.sync += [col.eq(col + 1), cv.eq(cv + d_cs)]

        # ------------------------------------------------------------ reset jobs
        jobs = {}
        for s in SP:
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
        jobs = [(sp_, amap.depth[Space(sp_)], dm, lm) for sp_, (dm, lm) in sorted(jobs.items())]
        job = Signal(range(len(jobs) + 1))
        j_space, j_depth, j_clr = Signal(4), Signal(idx_w + 1), Signal(len(ins_word))
        for i, (sp_, dep, dm, lm) in enumerate(jobs):
            with m.If(job == i):
                m.d.comb += [j_space.eq(sp_), j_depth.eq(dep),
                             j_clr.eq(Mux(rmask[0], dm, 0) | Mux(rmask[1], lm, 0))]

        # ------------------------------------------------------------ RUN_STEPS streams
        beat = Signal(W)
        beats = Signal(range(max(amap.x_beats, amap.t_beats, p.n_out) + 2))
        blft = Signal(range(max(n_in_b, sec_bytes) + 2))     # bitmap bytes left
        chunk_flag = Signal()
        out_left = Signal(range(n_out_b + 2))
        beat_bytes = Signal(range(MB + 1))
        sec = getattr(core, self.second)
        LAST_MASK = (1 << (p.n_out % 8)) - 1 if p.n_out % 8 else 0xFF

        # ------------------------------------------------------------ main FSM
        seq_new = registered((~have_last) | (cmd == pr.Command.IDENTIFY) | (seq == (last_seq + 1)[:8]),
                             1, "seq_new")
        seq_dup = registered(have_last & (seq == last_seq) & (cmd == last_cmd), 1, "seq_dup")
        want_c = Signal(32)
        for i, s in enumerate(SP):
            with m.If(d == i):
                m.d.comb += want_c.eq(mcount * s.fmt.nbytes)
        want = registered(want_c, 32, "want")                 # data bytes of a memory request
        end = registered(mstart + mcount, 33, "mem_end")
        run_len = registered(run_k * REC + 2, 32, "run_len")
        run_bad_k = registered((run_k == 0) | (run_k > self.max_steps), 1, "run_bad_k")
        run_sc = registered(core.step_count + run_k, 32, "run_sc")
        run_rlen = registered(run_k * n_out_b + 6, 32, "run_rlen")
        requests = [c.value for c in pr.Command if c.is_request]
        cmd_ok = registered((cmd >= min(requests)) & (cmd <= max(requests)), 1, "cmd_ok")
        is_w = cmd == pr.Command.WRITE_MEM
        # every size and range verdict of VALIDATE, registered (PREP gives them a cycle)
        bad_len0 = registered(length != 0, 1, "bad_len0")
        bad_len4 = registered(length != 4, 1, "bad_len4")
        bad_wreg_len = registered((length < 4) | (length != Cat(Const(0, 2), reg_count) + 4), 1,
                                  "bad_wreg_len")
        count0 = registered(reg_count == 0, 1, "count0")
        rreg_big = registered(reg_count > self.max_payload // 4, 1, "rreg_big")
        mem_short = registered(length < 7, 1, "mem_short")
        mem_badlen = registered(length != Mux(is_w, want, 0) + 7, 1, "mem_badlen")
        mem_range = registered(end > d_depth, 1, "mem_range")
        mem_badval = registered((mcount == 0) | (~is_w & (want > self.max_payload)), 1, "mem_badval")
        run_badlen = registered((length < 2) | (length != run_len), 1, "run_badlen")
        bad_len1 = registered(length != 1, 1, "bad_len1")
        bad_mask = registered(rmask[4:] != 0, 1, "bad_mask")
        link_reason = Signal(8)
        link_nak = Signal()

        def reply(main, rcmd, rlen, head_bytes=(), the_op=_Op.NONE):
            vals = list(head_bytes)
            m.d.sync += [r_main.eq(main), r_cmd.eq(rcmd), r_len.eq(rlen),
                         r_head.eq(Cat(*vals) if vals else 0), r_head_n.eq(len(vals)), op.eq(the_op)]
            m.next = "REPLY"

        def nak(reason, main, echo=None):
            r = Const(int(reason), 8) if isinstance(reason, int) else reason
            reply(main, pr.Command.NAK, 2, (r, cmd if echo is None else echo))

        def bare_ack():
            reply(1, pr.Command.ACK, 0)

        with m.FSM(name="eng") as eng:
            with m.State("RX"):
                m.d.comb += self.rx.ready.eq(1)
                b = self.rx.payload
                with m.If(self.rx.valid):
                    with m.If(b == 0):
                        with m.If(hunting):
                            m.d.sync += hunting.eq(0)
                            _sat_inc(m, cnt["RESYNCS"])
                        with m.Elif(enc_len != 0):
                            m.next = "CHECK"
                    with m.Elif(hunting):
                        _sat_inc(m, cnt["GARBAGE_BYTES"])
                    with m.Elif(enc_len == MAXENC):
                        # oversize: the body so far and this byte are garbage; hunt (no NAK)
                        _sat_add(m, cnt["GARBAGE_BYTES"], enc_len + 1)
                        _sat_inc(m, cnt["LENGTH_ERRORS"])
                        m.d.sync += [hunting.eq(1), enc_len.eq(0), dec_len.eq(0), code_left.eq(0),
                                     rcrc.eq(pr.CRC16_INIT)]
                    with m.Else():
                        m.d.sync += enc_len.eq(enc_len + 1)
                        dv, de = Signal(8), Signal()
                        with m.If(code_left == 0):
                            m.d.sync += [code_left.eq(b - 1), last_ff.eq(b == 0xFF)]
                            m.d.comb += [dv.eq(0), de.eq((enc_len != 0) & ~last_ff)]
                        with m.Else():
                            m.d.sync += code_left.eq(code_left - 1)
                            m.d.comb += [dv.eq(b), de.eq(1)]
                        with m.If(de):
                            m.d.comb += [f_wr.addr.eq(dec_len), f_wr.data.eq(dv),
                                         f_wr.en.eq(dec_len < BUF)]
                            m.d.sync += [dec_len.eq(dec_len + 1), rcrc.eq(crc16_step(rcrc, dv))]
                            with m.Switch(dec_len):
                                with m.Case(0):
                                    m.d.sync += cmd.eq(dv)
                                with m.Case(1):
                                    m.d.sync += seq.eq(dv)
                                with m.Case(2):
                                    m.d.sync += length[:8].eq(dv)
                                with m.Case(3):
                                    m.d.sync += length[8:].eq(dv)
                                for i in range(7):
                                    with m.Case(4 + i):
                                        m.d.sync += hb[i].eq(dv)

            with m.State("CHECK"):
                # the body is complete: the link checks of FrameDecoder, in its order
                m.d.sync += [enc_len.eq(0), dec_len.eq(0), code_left.eq(0), rcrc.eq(pr.CRC16_INIT),
                             link_nak.eq(0)]
                with m.If(code_left != 0):
                    _sat_inc(m, cnt["FRAMING_ERRORS"])       # malformed COBS: no seq, no NAK
                    m.next = "RX"
                with m.Elif(dec_len < 6):
                    _sat_inc(m, cnt["FRAMING_ERRORS"])
                    m.d.sync += [link_nak.eq(1), link_reason.eq(pr.Nak.BAD_FRAMING)]
                    with m.If(dec_len >= 2):
                        m.next = "DISPATCH"
                    with m.Else():
                        m.next = "RX"              # no seq byte to answer with: only counted
                with m.Elif(rcrc != 0):
                    _sat_inc(m, cnt["CRC_ERRORS"])
                    m.d.sync += [link_nak.eq(1), link_reason.eq(pr.Nak.BAD_CRC)]
                    m.next = "DISPATCH"
                with m.Elif(length != dec_len - 6):
                    _sat_inc(m, cnt["LENGTH_ERRORS"])
                    m.d.sync += [link_nak.eq(1), link_reason.eq(pr.Nak.BAD_LENGTH)]
                    m.next = "DISPATCH"
                with m.Else():
                    _sat_inc(m, cnt["FRAMES_OK"])
                    m.next = "DISPATCH"

            with m.State("DISPATCH"):
                # the order of checks of docs/protocol.md, "Device behaviour"
                m.d.sync += [forget_after.eq(0), bi.eq(0)]
                with m.If(tx_idle):
                    with m.If(link_nak):
                        nak(link_reason, 0, Const(0xFF, 8))
                    with m.Elif(length > self.max_payload):
                        nak(pr.Nak.BAD_LENGTH, 0)
                    with m.Elif(seq_new):
                        with m.If(~cmd_ok):
                            nak(pr.Nak.BAD_COMMAND, 1)
                        with m.Else():
                            m.next = "PREP"
                    with m.Elif(seq_dup):
                        _sat_inc(m, cnt["DUPLICATES"])
                        with m.If(cached_nak | (cmd == pr.Command.RUN_STEPS)):
                            # the cached reply (main region of the reply buffer) again
                            m.d.sync += [tx_go.eq(1), tx_base.eq(0), tx_len.eq(cached_len)]
                            with m.If(cached_nak):
                                _sat_inc(m, cnt["NAKS_SENT"])
                            m.next = "RX"
                        with m.Elif((cmd == pr.Command.READ_REG) | (cmd == pr.Command.READ_MEM)):
                            m.next = "PREP"              # side-effect free: read again
                        with m.Else():
                            reply(0, pr.Command.ACK, 0)  # writes, RESET_STATE: a bare ACK
                    with m.Else():
                        nak(pr.Nak.BAD_SEQUENCE, 0)

            with m.State("PREP"):
                m.next = "VALIDATE"              # the registered verdicts settle

            with m.State("VALIDATE"):
                with m.Switch(cmd):
                    with m.Case(pr.Command.IDENTIFY):
                        with m.If(bad_len0):
                            nak(pr.Nak.BAD_LENGTH, 0)
                        with m.Else():
                            m.d.comb += iptr_nx.eq(0)
                            reply(1, pr.Command.ACK, len(self.ident), (), _Op.IDENT)
                    with m.Case(pr.Command.READ_REG):
                        with m.If(bad_len4):
                            nak(pr.Nak.BAD_LENGTH, 0)
                        with m.Elif(~rd_ok):
                            nak(pr.Nak.BAD_ADDRESS, 1)
                        with m.Elif(count0 | rreg_big):
                            nak(pr.Nak.BAD_VALUE, 1)
                        with m.Else():
                            m.d.sync += [idx2.eq(reg_addr), nleft.eq(reg_count)]
                            reply(1, pr.Command.ACK, reg_count << 2, (), _Op.RREG)
                    with m.Case(pr.Command.WRITE_REG):
                        with m.If(bad_wreg_len):
                            nak(pr.Nak.BAD_LENGTH, 0)
                        with m.Elif(~wr_ok):
                            nak(pr.Nak.BAD_ADDRESS, 1)
                        with m.Elif(count0):
                            nak(pr.Nak.BAD_VALUE, 1)
                        with m.Else():
                            m.d.sync += [idx2.eq(reg_addr), nleft.eq(reg_count)]
                            m.d.comb += rptr_nx.eq(8)
                            m.next = "WREG_CHK"
                    with m.Case(pr.Command.READ_MEM, pr.Command.WRITE_MEM):
                        with m.If(mem_short):
                            nak(pr.Nak.BAD_LENGTH, 0)
                        with m.Elif(~d_ok):
                            nak(pr.Nak.BAD_ADDRESS, 1)
                        with m.Elif(mem_badlen):
                            nak(pr.Nak.BAD_LENGTH, 0)
                        with m.Elif(mem_range):
                            nak(pr.Nak.BAD_ADDRESS, 1)
                        with m.Elif(mem_badval):
                            nak(pr.Nak.BAD_VALUE, 1)
                        with m.Else():
                            m.d.sync += [nleft.eq(mcount), col.eq(mstart), cv.eq(0), ccnt.eq(0),
                                         r_len.eq(want)]
                            for i, s in enumerate(SP):
                                with m.If(d == i):
                                    m.d.sync += rowb.eq(s.base)
                            m.d.comb += rptr_nx.eq(11)
                            with m.If(is_w):
                                m.next = "WMEM_CHK"
                            with m.Else():
                                m.next = "SEEK"
                    with m.Case(pr.Command.RUN_STEPS):
                        with m.If(run_badlen):
                            nak(pr.Nak.BAD_LENGTH, 0)
                        with m.Elif(run_bad_k):
                            nak(pr.Nak.BAD_VALUE, 1)
                        with m.Else():
                            sc = run_sc
                            m.d.sync += nleft.eq(run_k)
                            m.d.comb += rptr_nx.eq(6)
                            reply(1, pr.Command.ACK, run_rlen,
                                  (sc[0:8], sc[8:16], sc[16:24], sc[24:32], hb[0], hb[1]), _Op.RUN)
                    with m.Case(pr.Command.RESET_STATE):
                        with m.If(bad_len1):
                            nak(pr.Nak.BAD_LENGTH, 0)
                        with m.Elif(bad_mask):
                            nak(pr.Nak.BAD_VALUE, 1)
                        with m.Else():
                            m.d.sync += [job.eq(0), idx2.eq(0)]
                            m.next = "RS_JOB"

            # ---------------------------------------------------------- WRITE_REG
            def reg_word():
                return word[16:48]

            with m.State("WREG_CHK"):
                with m.If(nleft == 0):
                    m.d.sync += [idx2.eq(reg_addr), nleft.eq(reg_count), bi.eq(0)]
                    m.d.comb += rptr_nx.eq(8)
                    m.next = "WREG_DO"
                with m.Elif(bi != 4):
                    gather()
                with m.Else():
                    v = reg_word()
                    bad = 0                # registers that hold less than their width
                    for r in pr.REGISTERS:
                        if pr.register_max(r, p) < (1 << r.width) - 1:
                            bad |= (idx2 == r.addr) & (v[:r.width] > pr.register_max(r, p))
                    with m.If(bad):
                        nak(pr.Nak.BAD_VALUE, 1)
                    with m.Else():
                        m.d.sync += [bi.eq(0), idx2.eq(idx2 + 1), nleft.eq(nleft - 1)]

            with m.State("WREG_DO"):
                with m.If(nleft == 0):
                    bare_ack()
                with m.Elif(bi != 4):
                    gather()
                with m.Else():
                    v = reg_word()
                    m.d.sync += [bi.eq(0), idx2.eq(idx2 + 1), nleft.eq(nleft - 1)]
                    with m.Switch(idx2):
                        for name in ("R0", "STEP_COUNT", "CHUNK_PHASE"):
                            with m.Case(pr.register(name).addr):
                                acc_write(Space.REG, core_regs[name], v[:regs_w[name]])
                        for name, c in cnt.items():
                            if pr.register(name).access is pr.Access.RW:
                                with m.Case(pr.register(name).addr):
                                    m.d.sync += c.eq(v[:len(c)])

            # ---------------------------------------------------------- READ_REG
            with m.State("RREG"):
                with m.If(nleft == 0):
                    m.next = "TRAILER"
                with m.Elif(in_core):
                    acc_read(Space.REG, idx2)
                    m.next = "RREG_W"
                with m.Else():
                    val = Signal(32)
                    with m.Switch(idx2):
                        consts = {"MAGIC": int.from_bytes(pr.MAGIC, "little"),
                                  "VERSION": pr.PROTOCOL_VERSION, "CLOCK_HZ": self.clock_hz,
                                  "BAUD": self.baud}
                        for r in pr.REGISTERS:
                            with m.Case(r.addr):
                                if r.name in cnt:
                                    m.d.comb += val.eq(cnt[r.name])
                                elif r.name in consts:
                                    m.d.comb += val.eq(consts[r.name])
                                elif r.name == "STATUS":
                                    m.d.comb += val.eq(link_err << 2)
                    m.d.sync += [r_head.eq(val), e_i.eq(4), e_end.eq(8), ret.eq(_Ret.RREG)]
                    m.next = "EMIT"

            with m.State("RREG_W"):
                with m.If(acc.acc_rvalid):
                    with m.If((idx2 == core_regs["CYCLES"]) & ~cycles_valid):
                        m.d.sync += r_head.eq(0)     # cleared by RESET_STATE COUNTERS
                    with m.Else():
                        m.d.sync += r_head.eq(acc.acc_rdata[:32])
                    m.d.sync += [e_i.eq(4), e_end.eq(8), ret.eq(_Ret.RREG)]
                    m.next = "EMIT"

            # ---------------------------------------------------------- memory
            with m.State("SEEK"):
                # row and column of the first word, by repeated subtraction (once per request)
                with m.If(col >= d_R):
                    m.d.sync += [col.eq(col - d_R), rowb.eq(rowb + d_stride)]
                with m.Elif((ccnt != col) & (d_cs == 1)):
                    m.d.sync += [ccnt.eq(col), cv.eq(col)]
                with m.Elif(ccnt != col):              # then the column offset, step by step
                    m.d.sync += [ccnt.eq(ccnt + 1), cv.eq(cv + d_cs)]
                with m.Elif(cmd == pr.Command.WRITE_MEM):
                    m.d.sync += [nleft.eq(mcount), bi.eq(0)]
                    m.d.comb += rptr_nx.eq(11)
                    m.next = "WMEM_G"
                with m.Else():
                    reply(1, pr.Command.ACK, r_len, (), _Op.RMEM)

            with m.State("RMEM"):
                with m.If(nleft == 0):
                    m.next = "TRAILER"
                with m.Else():
                    m.d.comb += acc.acc_re.eq(1)
                    m.next = "RMEM_W"

            with m.State("RMEM_W"):
                with m.If(acc.acc_rvalid):
                    m.d.sync += [r_head.eq(fld_val), e_i.eq(4), e_end.eq(d_nb + 4), ret.eq(_Ret.RMEM),
                                 nleft.eq(nleft - 1)]
                    advance_word()
                    m.next = "EMIT"

            with m.State("WMEM_CHK"):
                with m.If(nleft == 0):
                    m.d.sync += [col.eq(mstart), cv.eq(0), ccnt.eq(0)]
                    m.next = "SEEK"
                with m.Elif(bi != d_nb):
                    gather()
                with m.Else():
                    with m.If(~fits):
                        nak(pr.Nak.BAD_VALUE, 1)
                    with m.Else():
                        m.d.sync += [bi.eq(0), nleft.eq(nleft - 1)]

            with m.State("WMEM_G"):
                with m.If(nleft == 0):
                    bare_ack()
                with m.Elif(bi != d_nb):
                    gather()
                with m.Else():
                    m.d.comb += acc.acc_re.eq(1)
                    m.next = "WMEM_W"

            with m.State("WMEM_W"):
                with m.If(acc.acc_rvalid):
                    m.d.comb += [acc.acc_wdata.eq(ins_word), acc.acc_we.eq(1)]
                    m.d.sync += [bi.eq(0), nleft.eq(nleft - 1)]
                    advance_word()
                    m.next = "WMEM_G"

            # ---------------------------------------------------------- RESET_STATE
            with m.State("RS_JOB"):
                with m.If(job == len(jobs)):
                    m.next = "RS_CNT"
                with m.Elif((j_clr == 0) | (idx2 == j_depth)):
                    m.d.sync += [job.eq(job + 1), idx2.eq(0)]
                with m.Else():
                    acc_read(j_space, idx2)
                    m.next = "RS_W"

            with m.State("RS_W"):
                with m.If(acc.acc_rvalid):
                    acc_write(j_space, idx2, acc.acc_rdata & ~j_clr)
                    m.d.sync += idx2.eq(idx2 + 1)
                    m.next = "RS_JOB"

            with m.State("RS_CNT"):
                with m.If(rmask[2]):
                    acc_write(Space.REG, core_regs["STEP_COUNT"], 0)
                    m.d.sync += [cnt["CHUNK_COUNT"].eq(0), cycles_valid.eq(0)]
                m.next = "RS_CNT2"

            with m.State("RS_CNT2"):
                with m.If(rmask[2]):
                    acc_write(Space.REG, core_regs["CHUNK_PHASE"], 0)
                with m.If(rmask[3]):
                    for name, c in cnt.items():
                        if name != "CHUNK_COUNT":
                            m.d.sync += c.eq(0)
                    m.d.sync += forget_after.eq(1)
                bare_ack()

            # ---------------------------------------------------------- RUN_STEPS
            with m.State("RU_PH"):
                with m.If(nleft == 0):
                    m.next = "TRAILER"
                with m.Else():
                    acc_read(Space.REG, core_regs["CHUNK_PHASE"])
                    m.next = "RU_PHW"

            with m.State("RU_PHW"):
                with m.If(acc.acc_rvalid):
                    m.d.sync += [chunk_flag.eq(acc.acc_rdata[:20] == p.chunk_steps - 1),
                                 beats.eq(amap.x_beats), blft.eq(n_in_b), bi.eq(0)]
                    m.next = "RU_IN_G"

            def stream_bitmap(prefix, port, nxt_state, nxt_setup):
                if MB == 1:
                    # a beat is one bitmap byte: straight from the frame buffer, one per cycle
                    with m.State(prefix + "_G"):
                        m.d.comb += [port.valid.eq(1), port.payload.eq(fbyte)]
                        with m.If(port.ready):
                            m.d.comb += rptr_nx.eq(rptr + 1)
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
                            m.d.comb += rptr_nx.eq(rptr + 1)
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

            if self.second == "tgt":
                def to_tgt():
                    m.d.sync += [beats.eq(amap.t_beats), blft.eq(n_out_b)]
                stream_bitmap("RU_IN", core.inp, "RU_SEC_G", to_tgt)
                stream_bitmap("RU_SEC", core.tgt, "RU_GO", lambda: None)
            else:
                def to_err():
                    m.d.sync += beats.eq(p.n_out)
                stream_bitmap("RU_IN", core.inp, "RU_SEC", to_err)
                with m.State("RU_SEC"):
                    # n_out error words, sec_nb bytes each, one stream beat per word
                    with m.If(bi != sec_nb):
                        gather()
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
                m.d.sync += [beats.eq(amap.t_beats), out_left.eq(n_out_b)]
                m.next = "RU_W1"

            with m.State("RU_W1"):
                m.next = "RU_RUN"

            with m.State("RU_RUN"):
                with m.If(beats != 0):
                    m.d.comb += core.out.ready.eq(1)
                    with m.If(core.out.valid):
                        m.d.sync += beats.eq(beats - 1)
                        if MB == 1:              # one reply byte per beat, written at once
                            ob = core.out.payload[:8]
                            emit(Mux(out_left == 1, ob & LAST_MASK, ob))
                            m.d.sync += out_left.eq(out_left - 1)
                        else:
                            m.d.sync += [beat.eq(core.out.payload), beat_bytes.eq(0)]
                            m.next = "RU_OB"
                with m.Elif(~core.busy):
                    m.d.sync += [nleft.eq(nleft - 1), cycles_valid.eq(1)]
                    with m.If(chunk_flag):
                        _sat_inc(m, cnt["CHUNK_COUNT"])
                    m.next = "RU_PH"

            if MB > 1:
                with m.State("RU_OB"):             # the bytes of a wide output beat
                    with m.If((beat_bytes == MB) | (out_left == 0)):
                        m.next = "RU_RUN"
                    with m.Else():
                        emit(Mux(out_left == 1, beat[:8] & LAST_MASK, beat[:8]))
                        m.d.sync += [beat.eq(beat >> 8), beat_bytes.eq(beat_bytes + 1),
                                     out_left.eq(out_left - 1)]

            # ---------------------------------------------------------- reply assembly
            with m.State("REPLY"):
                base = Mux(r_main, 0, RMAIN)
                m.d.sync += [wptr.eq(base), rbase.eq(base), tcrc.eq(pr.CRC16_INIT),
                             e_i.eq(0), e_end.eq(r_head_n + 4),
                             ret.eq(_Ret.BODY)]
                with m.If(r_cmd == pr.Command.NAK):
                    _sat_inc(m, cnt["NAKS_SENT"])
                with m.If(r_main):
                    m.d.sync += [have_last.eq(~forget_after), last_seq.eq(seq), last_cmd.eq(cmd),
                                 cached_len.eq(r_len + 6), cached_nak.eq(r_cmd == pr.Command.NAK)]
                m.next = "EMIT"

            with m.State("EMIT"):
                vec = Cat(r_cmd, seq, r_len, r_head)
                emit(vec.word_select(e_i, 8))
                m.d.sync += e_i.eq(e_i + 1)
                with m.If(e_i == e_end - 1):
                    with m.Switch(ret):
                        with m.Case(_Ret.TRAILER):
                            m.next = "LAUNCH"
                        with m.Case(_Ret.RREG):
                            m.d.sync += [idx2.eq(idx2 + 1), nleft.eq(nleft - 1)]
                            m.next = "RREG"
                        with m.Case(_Ret.RMEM):
                            m.next = "RMEM"
                        with m.Default():
                            with m.Switch(op):
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
                emit(id_rd.data)
                m.d.comb += iptr_nx.eq(iptr + 1)
                with m.If(iptr == len(self.ident) - 1):
                    m.next = "TRAILER"

            with m.State("TRAILER"):
                m.d.sync += [r_head.eq(Cat(tcrc[8:], tcrc[:8])), e_i.eq(4), e_end.eq(6),
                             ret.eq(_Ret.TRAILER)]
                m.next = "EMIT"

            with m.State("LAUNCH"):
                m.d.sync += tx_go.eq(1)
                m.d.sync += [tx_base.eq(rbase), tx_len.eq(r_len + 6)]
                m.next = "RX"

        # ------------------------------------------------------------ transmitter (COBS encoder)
        tp, tend = Signal(range(RDEPTH + 1)), Signal(range(RDEPTH + 1))
        tcnt = Signal(8)
        tfull, tzero = Signal(), Signal()
        tb = r_rd.data
        with m.FSM(name="txf"):
            with m.State("T_IDLE"):
                m.d.comb += tx_idle.eq(~tx_go)
                with m.If(tx_go):
                    m.d.sync += [tp.eq(tx_base), tend.eq(tx_base + tx_len)]
                    m.next = "T_D0"
            with m.State("T_D0"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(0), tptr_nx.eq(tp)]
                m.d.sync += tcnt.eq(0)
                with m.If(self.tx.ready):
                    m.next = "T_SCAN"
            with m.State("T_SCAN"):
                # count the non-zero bytes of this block (look-ahead of up to 254 bytes)
                stop = (tptr == tend) | (tb == 0) | (tcnt == 254)
                with m.If(~stop):
                    m.d.sync += tcnt.eq(tcnt + 1)
                    m.d.comb += tptr_nx.eq(tptr + 1)
                with m.Else():
                    m.d.sync += [tfull.eq(tcnt == 254), tzero.eq((tcnt != 254) & (tptr != tend))]
                    m.d.comb += tptr_nx.eq(tp)
                    m.next = "T_CODE"
            with m.State("T_CODE"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(tcnt + 1)]
                with m.If(self.tx.ready):
                    with m.If(tcnt == 0):
                        m.next = "T_NEXT"
                    with m.Else():
                        m.next = "T_DATA"
            with m.State("T_DATA"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(tb)]
                with m.If(self.tx.ready):
                    m.d.comb += tptr_nx.eq(tptr + 1)
                    m.d.sync += tcnt.eq(tcnt - 1)
                    with m.If(tcnt == 1):
                        m.next = "T_NEXT"
            with m.State("T_NEXT"):
                m.d.sync += tcnt.eq(0)
                with m.If(tfull):
                    m.d.sync += tp.eq(tptr)
                    with m.If(tptr == tend):
                        m.next = "T_END"
                    with m.Else():
                        m.next = "T_SCAN"
                with m.Elif(tzero):
                    m.d.sync += tp.eq(tptr + 1)
                    m.d.comb += tptr_nx.eq(tptr + 1)
                    m.next = "T_SCAN"
                with m.Else():
                    m.next = "T_END"
            with m.State("T_END"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(0)]
                with m.If(self.tx.ready):
                    m.next = "T_IDLE"

        m.d.comb += [self.status[0].eq(~eng.ongoing("RX")), self.status[1].eq(~tx_idle),
                     self.status[2].eq(link_err)]
        return m

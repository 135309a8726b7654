"""The link's framing in gateware: the CRC network, the frame receiver and the COBS transmitter.

These are the gateware twins of :class:`spikeloop.protocol.FrameDecoder` (delimiter hunt, COBS
decode, the length and CRC checks) and :func:`spikeloop.protocol.encode_frame` (COBS encode
between two delimiters). They are builders, not submodules: they add their signals and
statements to the protocol engine's module (``hdl/engine.py``), the receiver inside the engine's
``RX`` and ``CHECK`` states, so the engine's state machine owns the flow. ``docs/link.md``
("Receive path", "Transmitter") describes them.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Mux, Signal

from spikeloop import protocol as pr

__all__ = ["crc16_step", "sat_inc", "sat_add", "FrameReceiver", "cobs_transmitter"]


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


def sat_inc(m, sig):
    """``sig`` += 1 (sync), saturating at its all-ones value."""
    with m.If(sig != (1 << len(sig)) - 1):
        m.d.sync += sig.eq(sig + 1)


def sat_add(m, sig, n):
    """``sig`` += ``n`` (sync), saturating at its all-ones value."""
    s = Signal(len(sig) + 1)
    m.d.comb += s.eq(sig + n)
    m.d.sync += sig.eq(Mux(s[len(sig)], (1 << len(sig)) - 1, s[:len(sig)]))


class FrameReceiver:
    """Bytes in, a checked frame body in the frame buffer: ``FrameDecoder``'s rules, one byte per cycle.

    Parameters
    ----------
    m : Module
        The module the receiver adds to (the protocol engine's).
    buf_depth : int
        Bytes of the frame buffer (``max_payload`` + header + CRC); a body up to
        ``buf_depth + cobs_max_overhead(buf_depth)`` encoded bytes is received, a longer one is
        dropped as garbage.

    Members
    -------
    hunting : Signal
        Set at reset and after an oversize body: bytes until the next 0x00 are garbage.
    enc_len, dec_len : Signal
        Encoded bytes received and decoded bytes stored, of the current body.
    code_left, last_ff : Signal
        The COBS decoder's state: bytes left in the block, whether its code was 0xFF.
    rcrc : Signal(16)
        The running CRC of the decoded bytes (residue 0 for an intact body).
    cmd, seq, length, session, head : Signal
        Bytes 0, 1, 2–3, 4–5 and 6–12 of the decoded body, captured as they arrive; ``hb`` lists
        the bytes of ``head`` (the first seven payload bytes).
    """

    def __init__(self, m, buf_depth: int):
        self.m = m
        self.buf_depth = BUF = buf_depth
        self.max_encoded = MAXENC = BUF + pr.cobs_max_overhead(BUF)
        self.hunting = Signal(init=1)
        self.enc_len = Signal(range(MAXENC + 2))
        self.code_left = Signal(8)
        self.last_ff = Signal()
        self.dec_len = Signal(range(MAXENC + 2))
        self.rcrc = Signal(16, init=pr.CRC16_INIT)
        self.cmd = Signal(8)
        self.seq = Signal(8)
        self.length = Signal(16)
        self.session = Signal(16)
        self.head = Signal(56)
        head = self.head
        self.hb = [head[8 * i:8 * i + 8] for i in range(7)]

    def receive(self, rx, f_wr, cnt, check_state: str):
        """The body of the receiving state: take one byte of ``rx`` per cycle, hunt for the
        delimiter, COBS-decode into the frame buffer (write port ``f_wr``), update the CRC and
        capture the header. A closing delimiter of a non-empty body goes to ``check_state``.
        ``cnt`` maps counter register names to their signals (``RESYNCS``, ``GARBAGE_BYTES``,
        ``LENGTH_ERRORS`` are counted here)."""
        m, BUF, MAXENC = self.m, self.buf_depth, self.max_encoded
        hunting, enc_len, code_left, last_ff = self.hunting, self.enc_len, self.code_left, self.last_ff
        dec_len, rcrc, cmd, seq, length, session, hb = (self.dec_len, self.rcrc, self.cmd, self.seq,
                                                        self.length, self.session, self.hb)
        m.d.comb += rx.ready.eq(1)
        b = rx.payload
        with m.If(rx.valid):
            with m.If(b == 0):
                with m.If(hunting):
                    m.d.sync += hunting.eq(0)
                    sat_inc(m, cnt["RESYNCS"])
                with m.Elif(enc_len != 0):
                    m.next = check_state
            with m.Elif(hunting):
                sat_inc(m, cnt["GARBAGE_BYTES"])
            with m.Elif(enc_len == MAXENC):
                # oversize: the body so far and this byte are garbage; hunt (no NAK)
                sat_add(m, cnt["GARBAGE_BYTES"], enc_len + 1)
                sat_inc(m, cnt["LENGTH_ERRORS"])
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
                        with m.Case(4):
                            m.d.sync += session[:8].eq(dv)
                        with m.Case(5):
                            m.d.sync += session[8:].eq(dv)
                        for i in range(7):
                            with m.Case(pr.HEADER_SIZE + i):
                                m.d.sync += hb[i].eq(dv)

    def check(self, cnt, link_nak, link_reason, ok_state: str, drop_state: str):
        """The body of the checking state (one cycle after the closing delimiter): the link checks
        of ``FrameDecoder``, in its order. Counts the verdict, sets ``link_nak`` / ``link_reason``
        for a reject that has a seq byte to answer with, and goes to ``ok_state`` (frames and
        answerable rejects) or back to ``drop_state`` (rejects that are only counted). Clears the
        receiver for the next body."""
        m = self.m
        m.d.sync += [self.enc_len.eq(0), self.dec_len.eq(0), self.code_left.eq(0),
                     self.rcrc.eq(pr.CRC16_INIT), link_nak.eq(0)]
        dec_len = self.dec_len
        with m.If(self.code_left != 0):
            sat_inc(m, cnt["FRAMING_ERRORS"])       # malformed COBS: no seq, no NAK
            m.next = drop_state
        with m.Elif(dec_len < pr.HEADER_SIZE + pr.CRC_SIZE):
            sat_inc(m, cnt["FRAMING_ERRORS"])
            m.d.sync += [link_nak.eq(1), link_reason.eq(pr.Nak.BAD_FRAMING)]
            with m.If(dec_len >= 2):
                m.next = ok_state
            with m.Else():
                m.next = drop_state              # no seq byte to answer with: only counted
        with m.Elif(self.rcrc != 0):
            sat_inc(m, cnt["CRC_ERRORS"])
            m.d.sync += [link_nak.eq(1), link_reason.eq(pr.Nak.BAD_CRC)]
            m.next = ok_state
        with m.Elif(self.length != dec_len - (pr.HEADER_SIZE + pr.CRC_SIZE)):
            sat_inc(m, cnt["LENGTH_ERRORS"])
            m.d.sync += [link_nak.eq(1), link_reason.eq(pr.Nak.BAD_LENGTH)]
            m.next = ok_state
        with m.Else():
            sat_inc(m, cnt["FRAMES_OK"])
            m.next = ok_state


def cobs_transmitter(m, tx, r_rd, tptr, tptr_nx, tx_go, tx_base, tx_len, tx_idle, depth: int):
    """The COBS encoder: on a ``tx_go`` pulse, send ``0x00 · COBS(buffer[tx_base : tx_base +
    tx_len]) · 0x00`` on the byte stream ``tx``, like ``protocol.cobs_encode`` between delimiters.

    ``r_rd`` is the reply buffer's read port, addressed through the look-ahead pointer ``tptr``
    (``tptr_nx`` its next value); ``depth`` is the buffer's size. ``tx_idle`` is driven 1 while
    the transmitter waits and no ``tx_go`` is pending. Adds its own state machine (``txf``) to
    ``m``: for each block it scans ahead up to 254 bytes, sends the code byte, rewinds and sends
    the block.
    """
    RDEPTH = depth
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
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(0), tptr_nx.eq(tp)]
            m.d.sync += tcnt.eq(0)
            with m.If(tx.ready):
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
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(tcnt + 1)]
            with m.If(tx.ready):
                with m.If(tcnt == 0):
                    m.next = "T_NEXT"
                with m.Else():
                    m.next = "T_DATA"
        with m.State("T_DATA"):
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(tb)]
            with m.If(tx.ready):
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
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(0)]
            with m.If(tx.ready):
                m.next = "T_IDLE"

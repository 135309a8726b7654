"""The spikeloop core: state memories, the step sequencer and the host-facing ports.

Every option of :class:`~spikeloop.params.Params` is supported: no hidden layer or one hidden
layer (symmetric, random or uniform feedback), the three eligibility kernels, RMaxProp or a fixed
learning rate, target spikes filtered on chip or errors streamed by the host, ``error_delay``
ring memories, and the hidden layer's rate regulariser.

Both weight layers share one set of units and one set of memories (time-multiplexed: each
memory holds the output layer's words first, then the hidden layer's). See :class:`Core` for
the interface and ``docs/hardware.md`` ("Core") for the sequencer, the memories and the
access-port address map. The address map lives in :class:`Space` and :class:`AccessMap`, which
host code and tests import.
"""

from __future__ import annotations

import enum
import math

from dataclasses import dataclass
from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from spikeloop.params import ErrorSource, Feedback, Kernel, Optimiser, ParamError, Params

from .arith import decay_signed, fmt_shape, mul_const, pipe_delay, pipe_reg, resize, sat, \
    shift_trunc
from .chunk import ChunkUnit, RegCoef
from .errorfilter import ErrorFilterUnit
from .layouts import neuron_layout, pretrace_layout, q_layout, synapse_layout
from .neuron import RACC_BITS, NeuronUnit, drive_bits
from .pretrace import PreTraceUnit
from .synapse import SynapseUnit

__all__ = ["Core", "cycles_per_step", "Space", "Reg", "AccessMap", "Location", "error_layout",
           "rate_layout", "hacc_bits", "ACC_SPACE_BITS"]

#: Width of the access port's space code.
ACC_SPACE_BITS = 4


class Space(enum.IntEnum):
    """Access-port address spaces (``acc_space``); ``acc_index`` is the word index within one.

    ========  ========================================  =========================================
    space     index                                     word
    ========  ========================================  =========================================
    NEURON    neuron ``n``                              ``neuron_layout``: U, I, ref
    SIGMA     neuron ``n``                              σ' (UQ0.8)
    SPIKE     word ``k``                                S, ``W`` neurons per word (see below)
    ERR       output ``i``                              ``error_layout``: e1, e2 (e = e2); target
    PRE       ``c·P + l`` (column ``c``, lane ``l``)    ``pretrace_layout``: z, ẑ
    SYN       ``a·P + l`` (address ``a``, lane ``l``)   ``synapse_layout``: w, el, elf, m
    Q         like SYN                                  ``q_layout``: q (RMaxProp only)
    XBUF      beat ``k``                                input spikes ``k·W …`` (as streamed on ``inp``)
    TBUF      beat ``k``                                target spikes (as streamed on ``tgt``); target
    REG       :class:`Reg`                              a register (zero-extended)
    EBUF      output ``i``                              host error word 'err' (= out.e); host
    FB        like SYN (output-layer synapses only)     feedback weight B ('fb'); random/uniform
    HERR      hidden ``k`` (lane ``k mod P``)           hidden error: accumulator, = hid.e after a step
    RATE      neuron ``n``                              ``rate_layout``: rate, racc (regulariser)
    SDLY      ``s·N_tot + n``                           σ' delay ring, slot ``s`` (error_delay > 0)
    ZDLY      ``(s·C_tot + c)·P + l``                   ẑ delay ring, slot ``s`` (error_delay > 0)
    ========  ========================================  =========================================

    Neurons are numbered output layer first (``n = i``), then the hidden layer
    (``n = n_out + k``); likewise columns (output layer: ``C_o = ⌈n_hidden/P⌉`` or ``⌈n_in/P⌉``
    without a hidden layer, then the hidden layer's ``⌈n_in/P⌉``), synapse addresses (output layer
    ``i·C_o + c``, then the hidden layer's rows) and spike words (``⌈n_out/W⌉`` words of the output
    layer, then ``⌈n_hidden/W⌉`` of the hidden layer). Lane ``l`` of a layer owns its inputs
    ``j ≡ l (mod P)``. :meth:`AccessMap.locate` does this arithmetic for every snapshot variable.
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
    EBUF = 10
    FB = 11
    HERR = 12
    RATE = 13
    SDLY = 14
    ZDLY = 15


class Reg(enum.IntEnum):
    """Registers of :attr:`Space.REG`."""
    R0 = 0            # RMaxProp step r0 in weight LSBs (read/write)
    STEP_COUNT = 1    # steps completed (read/write)
    CYCLES = 2        # cycles of the last step (read only; saturates, see Core.cycle_bits)
    CHUNK_PHASE = 3   # step_count mod chunk_steps, kept as a counter (read/write)
    DELAY_SLOT = 4    # error_delay ring slot written by the next step, 0..D (read/write)


def error_layout(p: Params) -> data.StructLayout:
    """Per-output error filter word: ``e1`` and ``e2`` (both 'err'); ``e2`` is the error ``e``."""
    fe = fmt_shape(p.formats["err"])
    return data.StructLayout({"e1": fe, "e2": fe})


def rate_layout(p: Params) -> data.StructLayout:
    """Per-neuron regulariser word: ``rate`` ('rate') and ``racc`` (47 bits)."""
    return data.StructLayout({"rate": fmt_shape(p.formats["rate"]), "racc": unsigned(RACC_BITS)})


def hacc_bits(p: Params) -> int:
    """Width of a hidden-error accumulator: ``Σ_i b·e`` over ``n_out`` exact products."""
    F = p.formats
    fbw = F["w"] if p.feedback is Feedback.SYMMETRIC else F["fb"]
    return fbw.bits + F["err"].bits + ceil_log2(p.n_out + 1)


@dataclass(frozen=True)
class _Layer:
    """Where one weight layer lives in the shared memories (see :class:`Space`)."""
    name: str           # "out" or "hid"
    n_pre: int
    N: int              # postsynaptic neurons
    C: int              # columns per lane, ⌈n_pre/P⌉
    nbase: int          # first neuron index
    pbase: int          # first column (pre-trace memories)
    sbase: int          # first synapse address (per lane)
    kbase: int          # first spike word
    x_from_spk: bool    # inputs are the hidden layer's spike words (else the input buffer)


def _layers(p: Params, P: int, W: int) -> list[_Layer]:
    """The layers in processing order: the output layer, then the hidden layer (if any)."""
    cdiv = lambda a, b: -(-a // b)  # noqa: E731
    if not p.n_hidden:
        return [_Layer("out", p.n_in, p.n_out, cdiv(p.n_in, P), 0, 0, 0, 0, False)]
    Co, Ch = cdiv(p.n_hidden, P), cdiv(p.n_in, P)
    return [_Layer("out", p.n_hidden, p.n_out, Co, 0, 0, 0, 0, True),
            _Layer("hid", p.n_in, p.n_hidden, Ch, p.n_out, Co, p.n_out * Co, cdiv(p.n_out, W),
                   False)]


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
    """Host-side view of the access port's address map for one ``(params, lanes, in_width)``.

    ``depth`` and ``width`` hold exactly the spaces this configuration has.
    """

    def __init__(self, params: Params, lanes: int = 1, in_width: int = 8):
        p = self.params = params
        self.lanes, self.in_width = lanes, in_width
        P, W = lanes, in_width
        self.layer_list = L = _layers(p, P, W)
        self.layer = {l.name: l for l in L}
        self.cols = L[0].C                            # output layer columns per lane
        self.n_in_pad = self.cols * lanes             # output layer's padded input count
        self.x_beats = -(-p.n_in // in_width)
        self.t_beats = -(-p.n_out // in_width)       # output spike words
        self.n_neurons = sum(l.N for l in L)
        self.n_cols = sum(l.C for l in L)
        self.n_syn = sum(l.N * l.C for l in L)        # per lane
        self.spike_words = self.t_beats + (-(-p.n_hidden // in_width) if p.n_hidden else 0)
        target = p.error_source is ErrorSource.TARGET
        D = p.error_delay
        self.layouts = {
            Space.NEURON: neuron_layout(p), Space.PRE: pretrace_layout(p),
            Space.SYN: synapse_layout(p),
        }
        if p.optimiser is Optimiser.RMAXPROP:
            self.layouts[Space.Q] = q_layout(p)
        if target:
            self.layouts[Space.ERR] = error_layout(p)
        if p.regulariser:
            self.layouts[Space.RATE] = rate_layout(p)
        F = p.formats
        dw = {
            Space.NEURON: (self.n_neurons, neuron_layout(p).size),
            Space.SIGMA: (self.n_neurons, F["sigma"].bits),
            Space.SPIKE: (self.spike_words, in_width),
            Space.PRE: (self.n_cols * P, pretrace_layout(p).size),
            Space.SYN: (self.n_syn * P, synapse_layout(p).size),
            Space.XBUF: (self.x_beats, in_width),
            Space.REG: (len(Reg), 32),
        }
        if p.optimiser is Optimiser.RMAXPROP:
            dw[Space.Q] = (self.n_syn * P, q_layout(p).size)
        if target:
            dw[Space.ERR] = (p.n_out, error_layout(p).size)
            dw[Space.TBUF] = (self.t_beats, in_width)
        else:
            dw[Space.EBUF] = (p.n_out, F["err"].bits)
        if p.n_hidden:
            dw[Space.HERR] = (L[0].C * P, hacc_bits(p))
            if p.feedback is not Feedback.SYMMETRIC:
                dw[Space.FB] = (L[0].N * L[0].C * P, F["fb"].bits)
        if p.regulariser:
            dw[Space.RATE] = (self.n_neurons, rate_layout(p).size)
        if D:
            dw[Space.SDLY] = ((D + 1) * self.n_neurons, F["sigma"].bits)
            dw[Space.ZDLY] = ((D + 1) * self.n_cols * P, F["zh"].bits)
        dw = dict(sorted(dw.items()))
        self.depth = {s: d for s, (d, _) in dw.items()}
        self.width = {s: w for s, (_, w) in dw.items()}
        self.data_bits = max(self.width.values())
        self.index_bits = max(1, ceil_log2(max(self.depth.values())))

    def syn_index(self, i: int, j: int, layer: str = "out") -> int:
        """Access index of synapse ``(i, j)`` (neuron ``i``, input ``j``) of ``layer``."""
        L = self.layer[layer]
        return (L.sbase + i * L.C) * self.lanes + j

    def names(self) -> list[str]:
        """The golden-snapshot variables (``"out.w"``, ``"err.e1"``, ...) this core holds, plus
        ``"fb"`` (the feedback matrix) when it has one."""
        p = self.params
        out = []
        for L in reversed(self.layer_list):           # hidden layer first, as the model lists them
            n = L.name
            out += [f"{n}.U", f"{n}.I", f"{n}.ref", f"{n}.S", f"{n}.sigma", f"{n}.z", f"{n}.zh",
                    f"{n}.w", *(f"{n}.{f}" for f in ("el", "elf") if f in self.layouts[Space.SYN].members),
                    f"{n}.m"]
            if Space.Q in self.layouts:
                out.append(f"{n}.q")
            out.append(f"{n}.e")
            if p.regulariser:
                out += [f"{n}.rate", f"{n}.racc"]
        if p.error_source is ErrorSource.TARGET:
            out += ["err.e1", "err.e2"]
        if Space.FB in self.depth:
            out.append("fb")
        return out

    def depth_of(self, name: str) -> int:
        """Number of words of snapshot variable ``name`` (row-major, without the batch axis)."""
        p = self.params
        if name == "fb":
            return p.n_hidden * p.n_out
        layer, field = name.split(".")
        if layer == "err":
            return p.n_out
        L = self.layer[layer]
        if field in ("z", "zh"):
            return L.n_pre
        if field in ("w", "el", "elf", "m", "q"):
            return L.N * L.n_pre
        return L.N

    def locate(self, name: str, k: int) -> Location:
        """Word ``k`` of snapshot variable ``name`` (row-major without the batch axis, so
        synapse ``(i, j)`` is ``k = i·n_pre + j``; ``"fb"`` is ``k = k_hid·n_out + i``), as the
        protocol's memory spaces number it."""
        p, P, W = self.params, self.lanes, self.in_width
        if name not in self.names():
            raise KeyError(f"name must be one of {', '.join(self.names())}, not {name!r}")
        depth = self.depth_of(name)
        if not 0 <= k < depth:
            raise IndexError(f"{name} index must be in 0..{depth - 1}, not {k}")
        F = p.formats
        if name == "fb":
            kh, i = divmod(k, p.n_out)
            f = F["fb"]
            return Location(Space.FB, self.syn_index(i, kh, "out"), 0, f.bits, True)
        layer, field = name.split(".")
        if layer == "err":
            return self._field(Space.ERR, k, field)
        L = self.layer[layer]
        if field in ("U", "I", "ref"):
            return self._field(Space.NEURON, L.nbase + k, field)
        if field in ("rate", "racc"):
            return self._field(Space.RATE, L.nbase + k, field)
        if field == "sigma":
            return Location(Space.SIGMA, L.nbase + k, 0, F["sigma"].bits, False)
        if field == "S":
            return Location(Space.SPIKE, L.kbase + k // W, k % W, 1, False)
        if field in ("z", "zh"):
            return self._field(Space.PRE, L.pbase * P + k, field)
        if field in ("w", "el", "elf", "m"):
            return self._field(Space.SYN, self.syn_index(*divmod(k, L.n_pre), layer), field)
        if field == "q":
            return self._field(Space.Q, self.syn_index(*divmod(k, L.n_pre), layer), field)
        assert field == "e"
        if layer == "hid":
            return Location(Space.HERR, k, 0, F["err"].bits, True)
        if p.error_source is ErrorSource.TARGET:
            return self._field(Space.ERR, k, "e2")
        return Location(Space.EBUF, k, 0, F["err"].bits, True)

    def _field(self, space: Space, index: int, field: str) -> Location:
        f = self.layouts[space][field]
        shape = Shape.cast(f.shape)
        return Location(space, index, f.offset, shape.width, shape.signed)

    def pack_bits(self, bits) -> list[int]:
        """Spike vector -> stream words, ``in_width`` bits per beat, bit ``j mod W`` of beat ``j div W``."""
        W = self.in_width
        words = [0] * (-(-len(bits) // W))
        for j, b in enumerate(bits):
            if b:
                words[j // W] |= 1 << (j % W)
        return words


def _chunk_unit(p: Params, single_port: bool = False) -> ChunkUnit:
    """The shared ChunkUnit: with single-port synapse memory a RMaxProp chunk end takes 4 cycles
    per word anyway, so the divider may iterate (far fewer logic cells)."""
    rmax = p.optimiser is Optimiser.RMAXPROP
    return ChunkUnit(p, interval=4) if single_port and rmax else ChunkUnit(p)


def _latencies(p: Params, single_port: bool = False) -> dict[str, int]:
    """Latencies of the units the Core instantiates for ``p`` (``chunk`` includes the register
    that waits for the regulariser coefficient, ``chunk_unit`` is the unit alone)."""
    Lc0 = _latency(_chunk_unit(p, single_port))
    return {
        "neuron": _latency(NeuronUnit(p, register_inputs=single_port)),
        "pre": PreTraceUnit.latency,
        "errf": ErrorFilterUnit.latency if p.error_source is ErrorSource.TARGET else 0,
        "syn": _latency(_synapse_unit(p)),
        "chunk": Lc0 + (RegCoef.latency if p.regulariser else 0),
        "chunk_unit": Lc0,
    }


def _front_last(p: Params, L: _Layer, lat: dict) -> int:
    """Last cycle (counted from 0) of a layer's front pass."""
    Le = lat["errf"] if L.name == "out" else 0
    return max(L.N + lat["neuron"] + Le, L.C + lat["pre"])


@dataclass(frozen=True)
class _SynTiming:
    """How the two synapse passes use the synapse memory.

    Dual-ported memory: one word per lane every cycle, written back ``d_learn`` / ``d_chunk``
    cycles after its issue. Single port (the iCE40's SPRAM), shared by reads and writes:

    - learning pass: groups of ``2g`` cycles, ``g`` reads then ``g`` write-backs, with ``g`` the
      largest power of two dividing ``1 + L_s``: a word read at offset ``r < g`` of a group is
      written ``1 + L_s ≡ g (mod 2g)`` cycles later, at offset ``r + g`` of a later group, so
      no write-back needs a padding register;
    - chunk end: ``t_chunk`` cycles per word (RMaxProp: read the synapse row, read the q row,
      write both; fixed rate: read, write), the ChunkUnit's outputs padded by ``pad_chunk``.
    """
    g_learn: int        # single port: reads per group (0: dual port, a word every cycle)
    d_learn: int        # issue of a word -> its write-back
    t_chunk: int        # cycles per word, chunk end
    d_chunk: int        # issue -> last write-back of a word (the q row in single-port RMaxProp)
    in_chunk: int       # issue -> ChunkUnit input
    pad_chunk: int      # write-back registers added after ChunkUnit

    def learn_issue(self, n: int) -> int:
        """Cycle of the pass (from 0) at which word ``n`` is issued."""
        g = self.g_learn
        return n if not g else 2 * g * (n // g) + n % g

    def learn_last(self, words: int) -> int:
        """Last cycle (from 0) of a learning pass over ``words`` words per lane."""
        return self.learn_issue(words - 1) + self.d_learn

    def chunk_last(self, words: int) -> int:
        """Last cycle (from 0) of a chunk-end pass over ``words`` words per lane."""
        return self.t_chunk * (words - 1) + self.d_chunk


def _syn_timing(p: Params, single_port: bool) -> _SynTiming:
    lat = _latencies(p, single_port)
    Ls, Lc0 = lat["syn"], lat["chunk_unit"]
    reg = int(p.regulariser)
    if not single_port:
        return _SynTiming(0, 1 + Ls, 1, 1 + reg + Lc0, 1 + reg, 0)
    g = (1 + Ls) & -(1 + Ls)          # largest power of two dividing 1 + L_s
    if p.optimiser is Optimiser.RMAXPROP:
        # slot of 4: read the synapse row, read the q row, write the synapse row, write q.
        pad_c = -Lc0 % 4
        return _SynTiming(g, 1 + Ls, 4, 3 + Lc0 + pad_c, 2, pad_c)
    pad_c = (1 + reg + Lc0 + 1) % 2   # slot of 2: read, write
    return _SynTiming(g, 1 + Ls, 2, 1 + reg + Lc0 + pad_c, 1 + reg, pad_c)


def cycles_per_step(p: Params, lanes: int = 1, chunk: bool = False, in_width: int = 8,
                    single_port: bool = False) -> int:
    """Cycles of one step of :class:`Core` (``out`` drained in time), with or without a chunk end.

    Each pass takes ``items + 1 + latency`` cycles (one issue per item, one cycle of block-RAM
    read, the unit's latency; the last write-back shares the pass's final cycle), and the final
    state one more. Per layer (output layer first, then the hidden layer): the front (``N``
    neurons, with the error filter chained for the output layer: ``N + 1 + L_n (+ L_e)``,
    alongside ``C = ⌈n_pre/P⌉`` pre-traces, ``C + 1 + L_p``) takes the longer of its two passes;
    then ``N·C`` synapse words per lane (``+ 1 + L_s``). At a chunk end every layer's ``N·C``
    words again (``+ 1 + L_c``, ``L_c`` including one cycle for the regulariser's coefficient).
    With ``single_port`` the synapse passes take about 2 cycles per word (learning; 4 at a
    RMaxProp chunk end), see :class:`_SynTiming`.
    ``in_width`` does not enter (kept for symmetry with :class:`Core`).
    """
    lat = _latencies(p, single_port)
    t = _syn_timing(p, single_port)
    n = 1
    for L in _layers(p, lanes, in_width):
        NC = L.N * L.C
        n += _front_last(p, L, lat) + 1 + t.learn_last(NC) + 1
        if chunk:
            n += t.chunk_last(NC) + 1
    return n


def _synapse_unit(p: Params) -> SynapseUnit:
    """The shared SynapseUnit: with the feedback product when there is a hidden layer. Uniform
    feedback is built like random feedback with ``B`` stored (``1.0`` at reset), so the host may
    read and rewrite ``B`` as for random feedback."""
    if p.n_hidden and p.feedback is Feedback.UNIFORM:
        return SynapseUnit(p.replace(feedback="random"), feedback=True)
    return SynapseUnit(p, feedback=bool(p.n_hidden))


def _check(p: Params, lanes: int, in_width: int):
    for name, v in (("lanes", lanes), ("in_width", in_width)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1 or v & (v - 1):
            raise ParamError(f"Core: {name} must be a power of two, not {v!r}")
    if in_width % lanes:
        raise ParamError(f"Core: in_width ({in_width}) must be a multiple of lanes ({lanes})")


class Core(wiring.Component):
    """spikeloop's learning core: every state word in block RAM, one time step per ``start``.

    Parameters
    ----------
    params : Params
    lanes : int
        ``P``, a power of two: lane ``l`` owns each layer's inputs ``j ≡ l (mod P)``.
    in_width : int
        ``W``, bits per stream beat (a power of two, a multiple of ``P``).
    single_port : bool
        Keep each lane's synapse words (and RMaxProp's ``q`` words, in a second half) in one
        memory with a single port shared by reads and writes, which is what the iCE40's SPRAM
        offers (``synth_ice40 -spram`` infers it; a word must then be at most 64 bits, the width
        of the UP5K's four SPRAMs). Each word is read and written in its own cycles, so the
        learning pass takes 2 cycles per word and lane, a RMaxProp chunk end 4 (the divider then
        iterates). Default ``False``: dual-ported block RAM, one word per cycle and lane.

    Raises
    ------
    ParamError
        If ``lanes`` or ``in_width`` is not a power of two, or ``in_width`` not a multiple of
        ``lanes``.

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

    def __init__(self, params: Params, lanes: int = 1, in_width: int = 8, single_port: bool = False):
        try:
            _check(params, lanes, in_width)
            if not isinstance(single_port, bool):
                raise ParamError(f"Core: single_port must be True or False, not {single_port!r}")
        except ValueError:
            self._MustUse__silence = True
            raise
        self.params = p = params
        self.lanes, self.in_width, self.single_port = lanes, in_width, single_port
        self.map = amap = AccessMap(p, lanes, in_width)
        self.latencies = _latencies(p, single_port)
        self.timing = _syn_timing(p, single_port)
        #: Width of the cycle counter behind ``cycles`` / ``CYCLES``: room for four times the
        #: longest step (a chunk end) when ``out`` is drained in time; it saturates beyond.
        self.cycle_bits = min(32, (4 * cycles_per_step(p, lanes, True, in_width,
                                                       single_port)).bit_length())
        #: Memories meant for the iCE40's SPRAM (``single_port``): they have no initial contents
        #: on the device, so synthesis drops their zeros (``synth_ice40(uninitialised=...)``)
        #: and the host clears them (RESET_STATE) before use.
        self.spram_memories = tuple(f"syn{l}" for l in range(lanes)) if single_port else ()
        ports = {"inp": In(stream.Signature(in_width))}
        if p.error_source is ErrorSource.TARGET:
            ports["tgt"] = In(stream.Signature(in_width))
        else:
            ports["err"] = In(stream.Signature(fmt_shape(p.formats["err"])))
        ports.update({
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
        super().__init__(ports)

    def cycles_per_step(self, chunk: bool = False) -> int:
        """Cycles of one step (``out`` drained in time), with or without a chunk end."""
        return cycles_per_step(self.params, self.lanes, chunk, self.in_width, self.single_port)

    def elaborate(self, platform):
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
            u = _synapse_unit(p)
            m.submodules[f"synapse{l}"] = u
            snu.append(u)
            c = _chunk_unit(p, sp1)
            m.submodules[f"chunk{l}"] = c
            chu.append(c)
        if reg:
            m.submodules.regcoef = rcu = RegCoef(p)
        lat = self.latencies
        Ln, Lp, Ls = nu.latency, PreTraceUnit.latency, snu[0].latency
        Lc0 = chu[0].latency                      # ChunkUnit alone
        assert Lc0 == lat["chunk_unit"]
        assert Ls == lat["syn"] and Ln == lat["neuron"]

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
        FRONT_LAST = per(lambda L: _front_last(p, L, lat))

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

        # ------------------------------------------------------------ sequencer and port muxes
        # Idle: access port and streams. Passes: their own addresses (exclusive by state).
        with m.FSM(name="seq"):
            with m.State("IDLE"):
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

            with m.State("FRONT"):
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

            with m.State("LEARN"):
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

            with m.State("CHUNK"):
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

            with m.State("FIN"):
                with m.If(out_done):
                    m.d.sync += [
                        step_count.eq(step_count + 1), cycles.eq(cyc),
                        phase.eq(Mux(phase == p.chunk_steps - 1, 0, phase + 1)),
                        out_done.eq(0), lay.eq(0),
                    ]
                    if D:
                        m.d.sync += dslot.eq(rslot)
                    m.next = "IDLE"

        with m.If(~idle):
            with m.If(~cyc.all()):
                m.d.sync += cyc.eq(cyc + 1)
        if two and h_pipe:
            # the registered hidden-error write lands one cycle after its word left the unit,
            # possibly in the first cycle of FRONT(hid), which touches no ``herr`` word
            for l, (hv, ha, hd) in enumerate(h_w):
                with m.If(hv):
                    m.d.comb += [h_wr[l].addr.eq(ha), h_wr[l].en.eq(1), h_wr[l].data.eq(hd)]
        return m


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

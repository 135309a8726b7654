"""The Core's access-port address map: spaces, registers and where each state variable's words sit.

Host code, the protocol engine and the tests import this without building a Core: the map follows
from ``(params, lanes, in_width)`` alone (:attr:`spikeloop.hdl.config.CoreConfig.map` holds the one
for a build). ``docs/hardware.md`` ("Access port") shows the spaces; ``docs/protocol.md`` how the
link's memory spaces reach them.
"""

from __future__ import annotations

import enum

from dataclasses import dataclass

from amaranth.hdl import Shape, unsigned
from amaranth.lib import data
from amaranth.utils import ceil_log2

from spikeloop.params import ErrorSource, Feedback, Optimiser, Params
from spikeloop.protocol import CORE_REGISTERS

from .arith import fmt_shape
from .layouts import neuron_layout, pretrace_layout, q_layout, synapse_layout
from .neuron import RACC_BITS

__all__ = ["ACC_SPACE_BITS", "Space", "Reg", "Layer", "layers", "Location", "AccessMap",
           "error_layout", "rate_layout", "hacc_bits"]


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


#: Registers of :attr:`Space.REG`, by index: built from :data:`spikeloop.protocol.CORE_REGISTERS`
#: (which says each one's width, reset, access and protocol address, or why it has none).
Reg = enum.IntEnum("Reg", [(r.name, r.index) for r in CORE_REGISTERS])


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
class Layer:
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


def layers(p: Params, P: int, W: int) -> list[Layer]:
    """The layers in processing order: the output layer, then the hidden layer (if any)."""
    cdiv = lambda a, b: -(-a // b)  # noqa: E731
    if not p.n_hidden:
        return [Layer("out", p.n_in, p.n_out, cdiv(p.n_in, P), 0, 0, 0, 0, False)]
    Co, Ch = cdiv(p.n_hidden, P), cdiv(p.n_in, P)
    return [Layer("out", p.n_hidden, p.n_out, Co, 0, 0, 0, 0, True),
            Layer("hid", p.n_in, p.n_hidden, Ch, p.n_out, Co, p.n_out * Co, cdiv(p.n_out, W),
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
        self.layer_list = L = layers(p, P, W)
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

"""Memory words of the core as :class:`amaranth.lib.data.StructLayout` s, generated from ``Params``.

One function per memory (``docs/hardware.md``, "Memory words"). Fields are listed least
significant first; each has exactly the width of its format in ``Params.formats``, so a word
is as narrow as the model allows and changing a format changes the memory width with it.

:func:`pack` and :func:`unpack` convert between such words and Python ``dict`` s of field
integers (signed fields as negative numbers), for tests and for the host's access port, which
sees the memories as raw words.
"""

from __future__ import annotations

from collections.abc import Mapping

from amaranth.hdl import Shape, unsigned
from amaranth.lib import data

from spikeloop.params import Params

from .arith import fmt_shape

__all__ = [
    "ref_bits", "neuron_layout", "pretrace_layout", "synapse_layout", "q_layout", "pack", "unpack",
]


def ref_bits(p: Params) -> int:
    """Width of the refractory counter: holds ``R = p.refractory_steps`` (at least one bit)."""
    return p.ref_bits


def neuron_layout(p: Params) -> data.StructLayout:
    """Per-neuron state word: ``U`` (signed, 'u'), ``I`` (signed, 'i'), ``ref`` (unsigned)."""
    F = p.formats
    return data.StructLayout({
        "U": fmt_shape(F["u"]),
        "I": fmt_shape(F["i"]),
        "ref": unsigned(ref_bits(p)),
    })


def pretrace_layout(p: Params) -> data.StructLayout:
    """Per-input presynaptic trace word: ``z`` and ``zh`` (ẑ), both unsigned."""
    F = p.formats
    return data.StructLayout({"z": fmt_shape(F["z"]), "zh": fmt_shape(F["zh"])})


def synapse_layout(p: Params) -> data.StructLayout:
    """Per-synapse word: ``w``, then the traces the kernel keeps, then ``m``.

    ``FACTORISED`` keeps no per-synapse trace (``λ`` is formed from ``σ'`` and ``ẑ`` on the fly)
    and ``SINGLE_EXP`` no filtered trace, so their words omit ``el`` / ``elf`` and the block RAM
    is that much narrower.
    """
    return data.StructLayout({name: fmt_shape(p.formats[name]) for name in p.synapse_words})


def q_layout(p: Params) -> data.StructLayout:
    """RMaxProp normaliser word: ``q`` (unsigned). Kept apart from the synapse word because it
    is touched only at chunk end (and absent with the fixed optimiser)."""
    return data.StructLayout({"q": fmt_shape(p.formats["q"])})


def _fields(layout: data.StructLayout):
    for name, field in layout:
        yield name, field.offset, Shape.cast(field.shape)


def pack(layout: data.StructLayout, values: Mapping[str, int]) -> int:
    """The word (a non-negative ``int``, ``layout.size`` bits) holding ``values``.

    Raises
    ------
    KeyError
        If a field of the layout is missing from ``values`` or ``values`` names an unknown one.
    ValueError
        If a value does not fit its field: packing never wraps silently.
    """
    names = {name for name, _, _ in _fields(layout)}
    unknown = set(values) - names
    if unknown:
        raise KeyError(f"no field(s) {', '.join(sorted(unknown))} in layout with {', '.join(names)}")
    word = 0
    for name, offset, shape in _fields(layout):
        v = int(values[name])
        lo = -(1 << (shape.width - 1)) if shape.signed else 0
        hi = (1 << (shape.width - 1)) - 1 if shape.signed else (1 << shape.width) - 1
        if not lo <= v <= hi:
            raise ValueError(f"field {name!r} = {v} does not fit {shape!r} ({lo}..{hi})")
        word |= (v & ((1 << shape.width) - 1)) << offset
    return word


def unpack(layout: data.StructLayout, word: int) -> dict[str, int]:
    """The field values of ``word`` (inverse of :func:`pack`); signed fields come out negative."""
    word = int(word)
    if not 0 <= word < (1 << layout.size):
        raise ValueError(f"word {word:#x} does not fit a {layout.size}-bit layout")
    out = {}
    for name, offset, shape in _fields(layout):
        v = (word >> offset) & ((1 << shape.width) - 1)
        if shape.signed and v >> (shape.width - 1):
            v -= 1 << shape.width
        out[name] = v
    return out

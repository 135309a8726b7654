"""How the protocol's memory spaces reach the Core's access port: the engine's counter scheme.

Pure Python (no Amaranth): :class:`SpaceMap` derives, for one protocol memory space, the constants
with which the protocol engine (``hdl/engine.py``) steps through the space's words with counters
instead of a divider, and checks them against :meth:`~spikeloop.hdl.accessmap.AccessMap.locate` for
every word; :func:`space_maps` lists those of the spaces a Core build holds. See ``docs/link.md``
("Memory words without a divider").
"""

from __future__ import annotations

from spikeloop import protocol as pr
from spikeloop.params import Params

__all__ = ["SpaceMap", "space_maps"]


def _ceil_log2(n: int) -> int:
    """``amaranth.utils.ceil_log2`` (without the import)."""
    return (n - 1).bit_length() if n > 0 else 0


class SpaceMap:
    """How protocol word ``k`` of one memory space reaches the Core's access port, without a divider.

    ``v = base + (k div R)·stride + (k mod R)·cstride``; the access word is ``v >> sh`` of
    ``acc_space``,
    the field ``[off0 + (v mod 2^sh)·bits, + bits)``. Derived from ``AccessMap.locate`` by probing
    and then checked against it for every ``k`` (so a Core whose map does not have this shape is
    refused at construction instead of being mis-addressed).

    Parameters
    ----------
    amap : AccessMap
        The Core's access-port address map.
    s : MemorySpace
        The protocol space.
    p : Params

    Raises
    ------
    ValueError
        If the space's words do not follow the counter scheme, or the Core's field does not match
        the space's word format.
    """

    def __init__(self, amap, s: pr.MemorySpace, p: Params):
        self.name, self.id = s.name, s.id
        self.fmt = s.word(p)
        self.kind = s.kind
        #: The RESET_STATE class that clears the space (``MemorySpace.reset_class``).
        self.reset_class = s.reset_class
        self.depth = D = s.depth(p)
        loc = [amap.locate(s.name, k) for k in range(D)]
        L0 = loc[0]
        self.acc_space, self.bits, self.signed = int(L0.space), L0.bits, L0.signed
        self.off0 = L0.offset
        per = 1                                   # protocol words per access word
        while per < D and loc[per].index == L0.index:
            per += 1
        if per == D and D > 1:                    # one access word holds them all
            per = 1 << _ceil_log2(D)
        if per & (per - 1):
            raise ValueError(f"space {s.name}: words per access word must be a power of two, not {per}")
        self.sh = _ceil_log2(per)
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
        """Cleared by RESET_STATE DYNAMICS (the space's ``reset_class``)."""
        return self.reset_class is pr.ResetMask.DYNAMICS

    @property
    def learning(self) -> bool:
        """Cleared by RESET_STATE LEARNING (the space's ``reset_class``)."""
        return self.reset_class is pr.ResetMask.LEARNING

    def field_mask(self, sub: int = 0) -> int:
        return ((1 << self.bits) - 1) << (self.off0 + sub * self.bits)


def space_maps(config) -> list[SpaceMap]:
    """The memory spaces the engine serves: those of ``spaces_for(params)`` that the Core of
    ``config`` (a :class:`~spikeloop.hdl.config.CoreConfig`) holds, in protocol order."""
    amap, p = config.map, config.params
    names = amap.names()
    return [SpaceMap(amap, s, p) for s in pr.spaces_for(p) if s.name in names]

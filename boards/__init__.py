"""One module per board: the SoC's top level for it, what the board offers, and its preset.

``BOARDS`` maps a name (``spikeloop build --board NAME``) to a :class:`~.board.Board`;
:func:`check_resources` refuses a configuration that cannot fit a board before anything is
synthesised, from the memories the configuration's gateware actually instantiates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import icebreaker, tangnano9k, ulx3s
from .board import Board, BoardTop, Resources

__all__ = ["BOARDS", "Board", "BoardTop", "Resources", "MemoryShape", "board", "memory_shapes",
           "check_resources", "format_bits"]

BOARDS: dict[str, Board] = {
    icebreaker.BOARD.name: icebreaker.BOARD,
    **ulx3s.BOARDS,
    tangnano9k.BOARD.name: tangnano9k.BOARD,
}


def board(name: str) -> Board:
    """The board called ``name``.

    Raises
    ------
    ValueError
        If there is no such board (the message lists the known ones).
    """
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}") from None


@dataclass(frozen=True)
class MemoryShape:
    """One memory of the elaborated design: where it is, its word width and depth."""
    path: tuple[str, ...]
    width: int
    depth: int
    writable: bool
    groups: int = 1
    transparent: bool = False

    @property
    def granularity(self) -> int:
        """Bits per write enable (``width`` when one enable writes the whole word)."""
        return self.width // self.groups

    @property
    def bits(self) -> int:
        return self.width * self.depth

    @property
    def synapse(self) -> bool:
        """Per-synapse state (``syn<l>``, ``q<l>`` of the Core): what grows with the network."""
        return bool(re.fullmatch(r"(syn|q)\d+", self.path[-1]))


def memory_shapes(config) -> list[MemoryShape]:
    """Every memory the gateware of ``config`` (a CoreConfig or SoCConfig) instantiates.

    Elaborated rather than recomputed, so the check cannot drift from ``Core._memories``; it
    takes well under a second, no synthesis involved.
    """
    from amaranth.hdl import Fragment, Shape
    from amaranth.hdl._mem import MemoryInstance

    from spikeloop.hdl.config import SoCConfig
    if isinstance(config, SoCConfig):
        from spikeloop.hdl.soc import SoC
        top = SoC(config)
    else:
        from spikeloop.hdl.core import Core
        top = Core(config)
    found = []

    def walk(frag, path):
        for sub, name, *_ in frag.subfragments:
            here = (*path, str(name))
            if isinstance(sub, MemoryInstance):
                data = sub._data
                groups = max((len(w._en) for w in sub._write_ports), default=1)
                transparent = any(r._transparent_for for r in sub._read_ports)
                found.append(MemoryShape(here, Shape.cast(data.shape).width, data.depth,
                                         bool(sub._write_ports), groups, transparent))
            else:
                walk(sub, here)
    walk(Fragment.get(top, None), ())
    return found


def format_bits(bits: int) -> str:
    """Bits the way data sheets count them (1 kbit = 1024 bits)."""
    if bits >= 1 << 20:
        return f"{bits / (1 << 20):.1f} Mbit"
    return f"{bits / (1 << 10):.1f} kbit"


def check_resources(config, board: Board) -> dict:
    """Refuse a configuration (SoCConfig, or CoreConfig on the board's clock) whose memories
    cannot fit ``board``, before synthesis.

    ``single_port`` synapse memories go to SPRAM (the UP5K rule of
    :func:`spikeloop.sim.synth.check_spram_fit`); every other memory (ROMs too: the engine's
    identity ROM) goes to block RAM unless Yosys would find LUT RAM cheaper
    (:meth:`Resources.in_lutram`), each packed in its best block shape with its write enables on
    the blocks' byte enables (:meth:`Resources.blocks`).
    Logic and multipliers are not predicted: nextpnr reports them.

    Returns
    -------
    dict
        ``synapse_bits``, ``bram_blocks`` (estimated), ``synapse_blocks``, ``bram_bits_used``.

    Raises
    ------
    ValueError
        If the synapse memory has more bits than the board's block RAM, the memories need more
        blocks than it has, or ``single_port`` is asked of a board without SPRAM or does not fit
        its SPRAM.
    """
    from spikeloop.hdl.config import SoCConfig
    if not isinstance(config, SoCConfig):
        config = board.soc_config(config)      # the board gets the whole SoC, engine included
    core = config.core
    R, dev = board.resources, board.device
    shapes = memory_shapes(config)
    syn = [m for m in shapes if m.synapse]
    syn_bits = sum(m.bits for m in syn)
    fixes = "use a smaller network, a single-exponential kernel, a fixed learning rate or narrower formats"
    if core.single_port:
        if not R.spram:
            raise ValueError(f"single_port puts the synapse words in SPRAM, but the {dev} has "
                             f"none; build without single_port")
        from spikeloop.sim.synth import check_spram_fit
        check_spram_fit(core)
        in_bram = [m for m in shapes if not m.synapse]
    else:
        if syn_bits > R.bram_total_bits:
            raise ValueError(f"synapse memory needs {format_bits(syn_bits)}, the {dev} has "
                             f"{format_bits(R.bram_total_bits)} of block RAM; {fixes}")
        in_bram = shapes
    in_bram = [m for m in in_bram
               if not R.in_lutram(m.width, m.depth, m.groups, m.transparent)]
    blocks = sum(R.blocks(m.width, m.depth, m.groups) for m in in_bram)
    syn_blocks = sum(R.blocks(m.width, m.depth, m.groups) for m in in_bram if m.synapse)
    if blocks > R.bram:
        raise ValueError(f"the memories need {blocks} block RAMs of {R.bram_bits // 1024} kbit "
                         f"(the synapse memory {syn_blocks}), the {dev} has {R.bram}; {fixes}")
    return {"synapse_bits": syn_bits, "bram_blocks": blocks, "synapse_blocks": syn_blocks,
            "bram_bits_used": sum(m.bits for m in in_bram)}

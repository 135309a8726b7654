"""The Core's timing model: which units it instantiates, their latencies, how many cycles a step takes.

The sequencer in :mod:`spikeloop.hdl.core` counts its passes with these numbers, and host code
(bench, the virtual board's ``CYCLES``) predicts them without elaborating anything; the RTL tests
check the prediction against the cycles measured in simulation. A :class:`~spikeloop.hdl.config.CoreConfig`
caches each (``config.latencies``, ``config.timing``, ``config.cycles_per_step()``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from spikeloop.params import ErrorSource, Feedback, Optimiser, Params

from .accessmap import Layer
from .chunk import ChunkUnit, RegCoef
from .errorfilter import ErrorFilterUnit
from .neuron import NeuronUnit
from .pretrace import PreTraceUnit
from .synapse import SynapseUnit

if TYPE_CHECKING:
    from .config import CoreConfig

__all__ = ["chunk_unit", "synapse_unit", "unit_latency", "latencies", "front_last", "SynTiming",
           "syn_timing", "cycles_per_step"]


def chunk_unit(p: Params, single_port: bool = False) -> ChunkUnit:
    """The shared ChunkUnit: with single-port synapse memory a RMaxProp chunk end takes 4 cycles
    per word anyway, so the divider may iterate (far fewer logic cells)."""
    rmax = p.optimiser is Optimiser.RMAXPROP
    return ChunkUnit(p, interval=4) if single_port and rmax else ChunkUnit(p)


def latencies(config: CoreConfig) -> dict[str, int]:
    """Latencies of the units the Core instantiates (``chunk`` includes the register that waits
    for the regulariser coefficient, ``chunk_unit`` is the unit alone)."""
    p, single_port = config.params, config.single_port
    Lc0 = unit_latency(chunk_unit(p, single_port))
    return {
        "neuron": unit_latency(NeuronUnit(p, register_inputs=single_port)),
        "pre": PreTraceUnit.latency,
        "errf": ErrorFilterUnit.latency if p.error_source is ErrorSource.TARGET else 0,
        "syn": unit_latency(synapse_unit(p)),
        "chunk": Lc0 + (RegCoef.latency if p.regulariser else 0),
        "chunk_unit": Lc0,
    }


def front_last(p: Params, L: Layer, lat: dict) -> int:
    """Last cycle (counted from 0) of a layer's front pass."""
    Le = lat["errf"] if L.name == "out" else 0
    return max(L.N + lat["neuron"] + Le, L.C + lat["pre"])


@dataclass(frozen=True)
class SynTiming:
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


def syn_timing(config: CoreConfig) -> SynTiming:
    """How this build's synapse passes use the synapse memory."""
    p, single_port = config.params, config.single_port
    lat = config.latencies
    Ls, Lc0 = lat["syn"], lat["chunk_unit"]
    reg = int(p.regulariser)
    if not single_port:
        return SynTiming(0, 1 + Ls, 1, 1 + reg + Lc0, 1 + reg, 0)
    g = (1 + Ls) & -(1 + Ls)          # largest power of two dividing 1 + L_s
    if p.optimiser is Optimiser.RMAXPROP:
        # slot of 4: read the synapse row, read the q row, write the synapse row, write q.
        pad_c = -Lc0 % 4
        return SynTiming(g, 1 + Ls, 4, 3 + Lc0 + pad_c, 2, pad_c)
    pad_c = (1 + reg + Lc0 + 1) % 2   # slot of 2: read, write
    return SynTiming(g, 1 + Ls, 2, 1 + reg + Lc0 + pad_c, 1 + reg, pad_c)


def cycles_per_step(config: CoreConfig, chunk: bool = False) -> int:
    """Cycles of one step of :class:`~spikeloop.hdl.core.Core` (``out`` drained in time), with or without a chunk end.

    Each pass takes ``items + 1 + latency`` cycles (one issue per item, one cycle of block-RAM
    read, the unit's latency; the last write-back shares the pass's final cycle), and the final
    state one more. Per layer (output layer first, then the hidden layer): the front (``N``
    neurons, with the error filter chained for the output layer: ``N + 1 + L_n (+ L_e)``,
    alongside ``C = ⌈n_pre/P⌉`` pre-traces, ``C + 1 + L_p``) takes the longer of its two passes;
    then ``N·C`` synapse words per lane (``+ 1 + L_s``). At a chunk end every layer's ``N·C``
    words again (``+ 1 + L_c``, ``L_c`` including one cycle for the regulariser's coefficient).
    With ``single_port`` the synapse passes take about 2 cycles per word (learning; 4 at a
    RMaxProp chunk end), see :class:`SynTiming`.
    """
    p, lat, t = config.params, config.latencies, config.timing
    n = 1
    for L in config.layers:
        NC = L.N * L.C
        n += front_last(p, L, lat) + 1 + t.learn_last(NC) + 1
        if chunk:
            n += t.chunk_last(NC) + 1
    return n


def synapse_unit(p: Params) -> SynapseUnit:
    """The shared SynapseUnit: with the feedback product when there is a hidden layer. Uniform
    feedback is built like random feedback with ``B`` stored (``1.0`` at reset), so the host may
    read and rewrite ``B`` as for random feedback."""
    if p.n_hidden and p.feedback is Feedback.UNIFORM:
        return SynapseUnit(p.replace(feedback="random"), feedback=True)
    return SynapseUnit(p, feedback=bool(p.n_hidden))


def unit_latency(unit) -> int:
    """A unit's latency, without leaving an unused-elaboratable warning behind."""
    unit._MustUse__silence = True
    return unit.latency

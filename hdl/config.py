"""The build configuration: what one Core (and the SoC around it) is built from, validated once.

:class:`CoreConfig` is ``(params, lanes, in_width, single_port)``; :class:`SoCConfig` adds the link
(``clock_hz``, ``baud``, ``max_payload``). Both are frozen and validated on construction, with the
messages the tests pin, and they own what follows from them: the access-port address map, the
layer/timing model, ``cycles_per_step()`` and the Core's signature. Every layer takes one of them
(Core, engine, SoC, VirtualBoard, the rtl backend, bench, verify, synth) instead of the loose
group, so a value is checked in one place and never re-derived.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from spikeloop.params import ErrorSource, ParamError, Params

__all__ = ["CoreConfig", "SoCConfig"]


def _power_of_two(name: str, v) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1 or v & (v - 1):
        raise ParamError(f"Core: {name} must be a power of two, not {v!r}")
    return v


def _int_in(name: str, v, lo: int, hi: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ParamError(f"{name} must be an integer from {lo} to {hi}, not {v!r}")
    return v


@dataclass(frozen=True, eq=True)
class CoreConfig:
    """One Core build: the parameters and the gateware's own options.

    Parameters
    ----------
    params : Params
    lanes : int
        ``P``, a power of two: lane ``l`` owns each layer's inputs ``j ≡ l (mod P)``.
    in_width : int
        ``W``, bits per stream beat (a power of two, a multiple of ``P``).
    single_port : bool
        Synapse (and ``q``) words in one single-ported memory per lane (the iCE40's SPRAM); see
        :class:`~spikeloop.hdl.core.Core`.

    Raises
    ------
    ParamError
        If ``params`` is not a :class:`Params`, ``lanes`` or ``in_width`` is not a power of two,
        ``in_width`` is not a multiple of ``lanes``, ``single_port`` is not a bool, or a unit
        refuses the parameters.
    """
    params: Params
    lanes: int = 1
    in_width: int = 8
    single_port: bool = False

    def __post_init__(self):
        if not isinstance(self.params, Params):
            raise TypeError(f"params must be a Params, not {type(self.params).__name__}")
        _power_of_two("lanes", self.lanes)
        _power_of_two("in_width", self.in_width)
        if self.in_width % self.lanes:
            raise ParamError(f"Core: in_width ({self.in_width}) must be a multiple of lanes ({self.lanes})")
        if not isinstance(self.single_port, bool):
            raise ParamError(f"Core: single_port must be True or False, not {self.single_port!r}")
        self.latencies            # builds the units once: a unit that refuses the params raises here

    @classmethod
    def for_lanes(cls, params: Params, lanes: int = 1, **kw) -> "CoreConfig":
        """The configuration with the narrowest stream that ``lanes`` allows (``in_width =
        max(8, lanes)``), what the board backends build."""
        if isinstance(lanes, int) and not isinstance(lanes, bool) and lanes > 0:
            kw.setdefault("in_width", max(8, lanes))
        return cls(params, lanes, **kw)

    def replace(self, **changes) -> "CoreConfig":
        return replace(self, **changes)

    # ------------------------------------------------------------------ what follows from it
    @cached_property
    def map(self):
        """The access port's address map (:class:`~spikeloop.hdl.accessmap.AccessMap`)."""
        from .accessmap import AccessMap
        return AccessMap(self.params, self.lanes, self.in_width)

    @cached_property
    def layers(self):
        """The weight layers in processing order (output layer first)."""
        return self.map.layer_list

    @cached_property
    def latencies(self) -> dict[str, int]:
        """Latencies of the units the Core instantiates."""
        from .timing import latencies
        return latencies(self)

    @cached_property
    def timing(self):
        """How the synapse passes use the synapse memory (:class:`~spikeloop.hdl.timing.SynTiming`)."""
        from .timing import syn_timing
        return syn_timing(self)

    def cycles_per_step(self, chunk: bool = False) -> int:
        """Cycles of one step of the Core (``out`` drained in time), with or without a chunk end."""
        from .timing import cycles_per_step
        return cycles_per_step(self, chunk)

    @cached_property
    def cycle_bits(self) -> int:
        """Width of the cycle counter: room for four chunk-end steps; it saturates beyond."""
        return min(32, (4 * self.cycles_per_step(True)).bit_length())

    @cached_property
    def spram_memories(self) -> tuple[str, ...]:
        """Memories meant for the iCE40's SPRAM (no initial contents on the device)."""
        return tuple(f"syn{l}" for l in range(self.lanes)) if self.single_port else ()

    @cached_property
    def signature(self):
        """The Core's ``wiring.Signature`` (what the protocol engine drives)."""
        from amaranth.hdl import unsigned
        from amaranth.lib import stream, wiring
        from amaranth.lib.wiring import In, Out

        from .arith import fmt_shape
        from .accessmap import ACC_SPACE_BITS
        p, amap, W = self.params, self.map, self.in_width
        ports = {"inp": In(stream.Signature(W))}
        if p.error_source is ErrorSource.TARGET:
            ports["tgt"] = In(stream.Signature(W))
        else:
            ports["err"] = In(stream.Signature(fmt_shape(p.formats["err"])))
        ports.update({
            "out": Out(stream.Signature(W)),
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
        return wiring.Signature(ports)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params.to_dict(), "lanes": self.lanes, "in_width": self.in_width,
                "single_port": self.single_port}

    @classmethod
    def from_dict(cls, d: dict) -> "CoreConfig":
        if not isinstance(d, dict) or "params" not in d:
            raise ParamError(f"a CoreConfig dict must have 'params', not {d!r}")
        extra = set(d) - {"params", "lanes", "in_width", "single_port"}
        if extra:
            raise ParamError(f"unknown CoreConfig keys {sorted(extra)}")
        return cls(Params.from_dict(d["params"]), **{k: v for k, v in d.items() if k != "params"})


@dataclass(frozen=True, eq=True)
class SoCConfig:
    """One SoC build: the Core's configuration and the link's.

    Parameters
    ----------
    core : CoreConfig
    clock_hz, baud : int
        The system clock and the UART's bit rate (reported by IDENTIFY).
    max_payload : int
        Largest request and reply payload, 64..65535; one RUN_STEPS step must fit.
    rx_fifo : int, optional
        Bytes of the SoC's receive FIFO (block RAM) where frames sent while one executes wait;
        default one largest request on the wire (``frame_wire_size(max_payload)``), 0 for none
        (the engine then drops what arrives while it executes, counted in ``UART_OVERRUNS``).

    Raises
    ------
    ParamError
        If a value is out of range, ``in_width`` is not a multiple of 8 (the engine moves whole
        bytes) or one step does not fit ``max_payload``.
    """
    core: CoreConfig
    clock_hz: int = 12_000_000
    baud: int = 3_000_000
    max_payload: int = 1024
    rx_fifo: int | None = None

    def __post_init__(self):
        from spikeloop import protocol as pr
        if not isinstance(self.core, CoreConfig):
            raise TypeError(f"core must be a CoreConfig, not {type(self.core).__name__}")
        for name in ("clock_hz", "baud"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 < v < 1 << 32:
                raise ParamError(f"{name} must be a positive integer below 2**32, not {v!r}")
        W = self.core.in_width
        if W < 8 or W % 8:
            raise ParamError(f"in_width must be a multiple of 8 for the protocol engine, not {W!r}")
        mp = self.max_payload
        if not isinstance(mp, int) or isinstance(mp, bool) or not 64 <= mp <= 0xFFFF:
            raise ParamError(f"max_payload must be an integer from 64 to 65535, not {mp!r}")
        if pr.max_steps_per_frame(self.core.params, mp) < 1:
            raise ParamError(f"max_payload must fit one RUN_STEPS step, not {mp}")
        f = self.rx_fifo
        if f is not None and (not isinstance(f, int) or isinstance(f, bool) or not (f == 0 or 16 <= f <= 0xFFFF)):
            raise ParamError(f"rx_fifo must be 0 (none) or 16..65535 bytes, not {f!r}")

    @classmethod
    def build(cls, params: Params, lanes: int = 1, in_width: int | None = None, *,
              single_port: bool = False, **link) -> "SoCConfig":
        """Shorthand: ``SoCConfig(CoreConfig(params, lanes, in_width or max(8, lanes), single_port), **link)``."""
        core = (CoreConfig(params, lanes, in_width, single_port) if in_width is not None
                else CoreConfig.for_lanes(params, lanes, single_port=single_port))
        return cls(core, **link)

    def replace(self, **changes) -> "SoCConfig":
        return replace(self, **changes)

    @property
    def params(self) -> Params:
        return self.core.params

    @property
    def lanes(self) -> int:
        return self.core.lanes

    @property
    def in_width(self) -> int:
        return self.core.in_width

    @cached_property
    def max_steps(self) -> int:
        """Largest K of one RUN_STEPS frame."""
        from spikeloop import protocol as pr
        return pr.max_steps_per_frame(self.core.params, self.max_payload)

    @cached_property
    def rx_fifo_bytes(self) -> int:
        """The SoC's receive FIFO (``rx_fifo``): by default one largest request on the wire
        (worst-case COBS), so the next frame waits in it, whole, while the engine executes one."""
        from spikeloop import protocol as pr
        return pr.frame_wire_size(self.max_payload) if self.rx_fifo is None else self.rx_fifo

    @cached_property
    def identity(self):
        """What IDENTIFY reports (:class:`spikeloop.protocol.Identity`)."""
        from spikeloop import protocol as pr
        return pr.Identity(self.core.params, self.core.lanes, self.clock_hz, self.baud,
                           self.max_payload, self.max_steps)

    def to_dict(self) -> dict[str, Any]:
        d = {"core": self.core.to_dict(), "clock_hz": self.clock_hz, "baud": self.baud,
             "max_payload": self.max_payload}
        if self.rx_fifo is not None:
            d["rx_fifo"] = self.rx_fifo
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SoCConfig":
        if not isinstance(d, dict) or "core" not in d:
            raise ParamError(f"a SoCConfig dict must have 'core', not {d!r}")
        extra = set(d) - {"core", "clock_hz", "baud", "max_payload", "rx_fifo"}
        if extra:
            raise ParamError(f"unknown SoCConfig keys {sorted(extra)}")
        return cls(CoreConfig.from_dict(d["core"]), **{k: v for k, v in d.items() if k != "core"})

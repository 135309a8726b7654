"""The backend registry: every name a user can give ``--backend`` or :meth:`Board.open`, once.

Each :class:`Backend` says what it is, whether it trains in-process (a batch of seeds through a
numpy model) or behind the link protocol (one network, host in the loop, through
:class:`~spikeloop.host.board.Board`), what it needs installed, and how it opens. One name has
one meaning everywhere: ``model`` is the golden model in-process, ``board-model`` the golden
model answering the protocol (:class:`~spikeloop.host.virtual_board.VirtualBoard`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

__all__ = ["Backend", "BACKENDS", "DEFAULT_BOARD_BACKEND", "lookup", "parse_spec", "is_board_backend",
           "board_backend_names", "in_process_names", "choices_text", "label"]


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class Backend:
    """One backend.

    Members
    -------
    name : str
        What ``--backend`` and :meth:`Board.open` take (``serial`` takes ``serial:PORT``).
    summary : str
        One line for ``spikeloop info`` and help texts.
    protocol : bool
        Reached through the link protocol (a :class:`Board`); else trained in-process.
    needs : tuple of (module, what) pairs
        What must be importable to run it; :meth:`available` checks, it does not assume.
    opener : str
        For protocol backends, the name of the function in this module that opens its transport.
    takes_port : bool
        The name is ``NAME:PORT``.
    label : str
        How summaries and plots name it.
    """
    name: str
    summary: str
    protocol: bool
    needs: tuple[tuple[str, str], ...] = ()
    opener: str = ""
    takes_port: bool = False
    label: str = ""

    def __post_init__(self):
        if not self.label:
            object.__setattr__(self, "label", self.name)

    def missing(self) -> list[str]:
        """What of :attr:`needs` is not installed (empty when the backend can run)."""
        return [what for mod, what in self.needs if not _have(mod)]

    def available(self) -> bool:
        return not self.missing()

    def open_transport(self, config, port: str | None = None, **kw):
        """The transport of a protocol backend for ``config`` (a :class:`SoCConfig`, or None for
        ``serial``)."""
        if not self.protocol:
            raise ValueError(f"the {self.name} backend trains in-process and has no transport")
        return globals()[self.opener](config, port, **kw)


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("model", "golden model in-process, batched seeds: integer numpy, the specification",
            protocol=False, label="golden model"),
    Backend("float", "float64 reference in-process, batched seeds", protocol=False,
            label="float reference"),
    Backend("rtl", "the gateware (SoC) in Verilator behind the link protocol, host in the loop; the "
                   "default board backend", protocol=True,
            needs=(("spikeloop.hdl.soc", "the SoC"), ("cocotb", "cocotb"), ("verilator", "Verilator")),
            opener="_open_rtl", label="simulated gateware (rtl)"),
    Backend("board-model", "the golden model answering the link protocol, host in the loop",
            protocol=True, needs=(("spikeloop.host.virtual_board", "spikeloop.host.virtual_board"),),
            opener="_open_board_model", label="golden model behind the protocol (board-model)"),
    Backend("serial", "an FPGA board on a serial port, host in the loop", protocol=True,
            needs=(("serial", "pyserial"),), opener="_open_serial", takes_port=True),
)}

#: What :meth:`Board.open` opens when given no name.
DEFAULT_BOARD_BACKEND = "rtl"


def label(spec: str) -> str:
    """How summaries name a backend (the name itself when it is not a registered one)."""
    try:
        return parse_spec(spec)[0].label if spec else spec
    except (TypeError, ValueError):
        return spec


def board_backend_names() -> tuple[str, ...]:
    return tuple(n for n, b in BACKENDS.items() if b.protocol)


def in_process_names() -> tuple[str, ...]:
    return tuple(n for n, b in BACKENDS.items() if not b.protocol)


def _display(b: Backend) -> str:
    return f"{b.name}:PORT" if b.takes_port else b.name


def choices_text(protocol: bool | None = None) -> str:
    """``"model, float, rtl, board-model or serial:PORT"`` (optionally only one kind)."""
    names = [_display(b) for b in BACKENDS.values() if protocol is None or b.protocol is protocol]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def parse_spec(spec: str | None) -> tuple[Backend, str | None]:
    """``"board-model"`` → (its Backend, None), ``"serial:COM5"`` → (serial, ``"COM5"``); None or
    ``""`` → the default board backend.

    Raises
    ------
    TypeError
        If ``spec`` is not a string.
    ValueError
        If it names no backend, or ``serial:`` has no port.
    """
    if spec is None or spec == "":
        spec = DEFAULT_BOARD_BACKEND
    if not isinstance(spec, str):
        raise TypeError(f"backend must be a string, not {type(spec).__name__}")
    name, colon, port = spec.partition(":")
    b = BACKENDS.get(name)
    if b is not None and b.takes_port:
        if not port:
            raise ValueError(f"the {name} backend needs a port: {name}:PORT (e.g. serial:/dev/ttyUSB1, "
                             f"serial:COM5, serial:/dev/serial/by-id/..., a pyserial URL such as "
                             f"socket://host:port), not {spec!r}")
        return b, port
    if b is not None and not colon:
        return b, None
    raise ValueError(f"backend must be {choices_text()}, not {spec!r}")


def lookup(spec: str | None, *, protocol: bool | None = None) -> tuple[Backend, str | None]:
    """:func:`parse_spec`, refusing a backend of the other kind when ``protocol`` is given."""
    try:
        b, port = parse_spec(spec)
    except ValueError:
        if protocol is None or spec.partition(":")[0] in BACKENDS:
            raise
        raise ValueError(f"backend must be {choices_text(protocol)}, not {spec!r}") from None
    if protocol is not None and b.protocol is not protocol:
        raise ValueError(f"backend must be {choices_text(protocol)}, not {spec!r}")
    return b, port


def is_board_backend(spec: str) -> bool:
    """True for a protocol backend name (``rtl``, ``board-model``, ``serial:PORT``)."""
    try:
        return parse_spec(spec)[0].protocol
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------------- openers
def _open_board_model(config, port, *, max_steps: int | None = None):
    """The reference behind the protocol; by default it reports the ``max_steps`` the SoC's
    engine reports (``config.max_steps``), so that it answers IDENTIFY as the gateware does."""
    from spikeloop.host.virtual_board import ModelTransport, VirtualBoard
    return ModelTransport(VirtualBoard(config, max_steps=config.max_steps if max_steps is None else max_steps))


def _open_rtl(config, port, **kw):
    from spikeloop.host.board import BackendError
    try:
        from spikeloop.sim.rtl import open_rtl
    except ModuleNotFoundError as e:
        if e.name in ("spikeloop.sim.rtl", "spikeloop.sim.rtl.client"):
            raise BackendError("the rtl backend (spikeloop.sim.rtl) is not part of this installation; "
                               "use 'board-model' or 'serial:PORT'") from None
        raise BackendError(f"the rtl backend needs the module {e.name!r}, which is not installed") from e
    return open_rtl(config, **kw)


def _open_serial(config, port, **kw):
    from spikeloop.host.board import BackendError
    try:
        from spikeloop.host.transport import SerialTransport
        return SerialTransport(port, **kw)
    except ModuleNotFoundError as e:
        raise BackendError(f"the serial backend needs pyserial ({e.name} is not installed)") from None
    except OSError as e:            # serial.SerialException is an IOError
        raise BackendError(f"cannot open serial port {port}: {e}") from e


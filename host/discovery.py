"""Finding boards: ``spikeloop boards`` and ``serial:auto``.

Every serial port pyserial lists is shown; the ones whose USB VID:PID is a supported board's
serial chip (:data:`~spikeloop.host.board_ids.BOARD_SERIAL_IDS`) are asked IDENTIFY through the
driver with a short timeout, because only the device itself can say that it runs spikeloop (an
FT2232 is also a JTAG probe, and its first interface is no UART at all). ``serial:auto`` opens
the one port that answered.
"""

from __future__ import annotations

from dataclasses import dataclass

from spikeloop.host.board import BackendError, DriverError, NakError
from spikeloop.protocol import Nak
from spikeloop.host.board_ids import BOARD_SERIAL_IDS, BoardUSB, boards_for

__all__ = ["Found", "comports", "discover", "auto_port", "format_found", "PROBE_TIMEOUT"]

#: Seconds to wait for an IDENTIFY reply from each candidate (a board at 3 Mbaud answers in ~1 ms).
PROBE_TIMEOUT = 0.5


@dataclass
class Found:
    """One serial port: what USB says about it and, if it was probed, what it answered."""
    device: str
    description: str = ""
    vid: int | None = None
    pid: int | None = None
    candidates: tuple[BoardUSB, ...] = ()
    probed: bool = False
    identity: object = None           # spikeloop.protocol.Identity when it answered
    error: str = ""

    @property
    def answered(self) -> bool:
        return self.identity is not None

    @property
    def usb_id(self) -> str:
        return f"{self.vid:04x}:{self.pid:04x}" if self.vid is not None and self.pid is not None else "-"

    @property
    def board(self) -> str:
        """The board this most likely is (by VID:PID, narrowed by the clock it reported)."""
        clock = self.identity.clock_hz if self.identity is not None else None
        bs = boards_for(self.vid, self.pid, clock)
        return " or ".join(b.title for b in bs) if bs else ("unknown board" if self.answered else "-")


def comports():
    """pyserial's port list (a function of its own, so tests can substitute it)."""
    try:
        from serial.tools import list_ports
    except ModuleNotFoundError:
        raise BackendError("finding boards needs pyserial (pip install pyserial)") from None
    return list_ports.comports()


def _probe(device: str, timeout: float, baud: int | None) -> tuple[object, str]:
    from spikeloop.host.board import Board
    from spikeloop.host.transport import SerialTransport
    try:
        transport = SerialTransport(device, **({"baud": baud} if baud else {}))
    except (OSError, ValueError) as e:           # serial.SerialException is an OSError
        return None, f"cannot open: {e}"
    try:
        board = Board(transport, timeout=timeout, retries=1, name=device, session=False)
    except NakError as e:
        transport.close()
        if e.reason == Nak.BAD_SESSION:
            return None, "a spikeloop board, in use by another host's session"
        return None, f"no spikeloop answer ({e})"
    except DriverError as e:
        transport.close()
        return None, f"no spikeloop answer ({e})"
    except Exception as e:                       # a port that misbehaves must not end the scan
        transport.close()
        return None, f"no spikeloop answer ({type(e).__name__}: {e})"
    ident = board.identity
    board.close()
    return ident, ""


def discover(*, probe_all: bool = False, timeout: float = PROBE_TIMEOUT, baud: int | None = None) -> list[Found]:
    """Every serial port, the candidates (or, with ``probe_all``, every port) probed with IDENTIFY,
    at ``baud`` or else at the link rate of each board the port's VID:PID can be."""
    out = []
    for info in sorted(comports(), key=lambda i: i.device):
        vid, pid = getattr(info, "vid", None), getattr(info, "pid", None)
        f = Found(info.device, getattr(info, "description", "") or "", vid, pid, boards_for(vid, pid))
        if f.candidates or probe_all:
            f.probed = True
            # Boards sharing one serial chip may run different link rates: ask at each of them.
            for rate in ([baud] if baud else sorted({b.baud for b in f.candidates}, reverse=True)
                         or [None]):
                f.identity, f.error = _probe(f.device, timeout, rate)
                if f.answered:
                    break
        out.append(f)
    return out


def auto_port(*, timeout: float = PROBE_TIMEOUT, baud: int | None = None, probe_all: bool = False) -> str:
    """The one port whose device answered IDENTIFY; :class:`BackendError` naming what was found
    when none or several did."""
    found = discover(probe_all=probe_all, timeout=timeout, baud=baud)
    answered = [f for f in found if f.answered]
    if len(answered) == 1:
        return answered[0].device
    if answered:
        raise BackendError(f"serial:auto found {len(answered)} boards ({', '.join(f.device for f in answered)}); "
                           f"choose one with serial:PORT")
    probed = [f"{f.device} ({f.board}: {f.error})" for f in found if f.probed]
    others = [f.device for f in found if not f.probed]
    chips = ", ".join(f"{v:04x}:{p:04x}" for v, p in BOARD_SERIAL_IDS)
    raise BackendError("serial:auto found no spikeloop board: "
                       + (f"probed {'; '.join(probed)}" if probed else f"no port has a board's USB id ({chips})")
                       + (f"; other ports: {', '.join(others)}" if others else "; no other serial ports")
                       + ". Is the board plugged in and flashed? Otherwise give serial:PORT "
                         "(spikeloop boards --all probes every port)")


def format_found(found: list[Found]) -> str:
    """The ``spikeloop boards`` table."""
    if not found:
        return "no serial ports found"
    lines = []
    for f in found:
        head = f"{f.device}  [{f.usb_id}] {f.description}".rstrip()
        if f.answered:
            i, p = f.identity, f.identity.params
            lines.append(f"{head}\n    spikeloop board: {f.board}; network {p.n_in}-{p.n_hidden}-{p.n_out}, "
                         f"{i.lanes} lane(s), {p.error_source.value} errors; clock {i.clock_hz} Hz, "
                         f"{i.baud} baud, frames up to {i.max_payload} B, protocol v{i.version}")
        elif f.probed:
            guess = f"{f.board}? " if f.candidates else ""
            lines.append(f"{head}\n    {guess}{f.error}")
        else:
            lines.append(f"{head}\n    not a supported board's serial chip (not probed; --all probes it)")
    n = sum(f.answered for f in found)
    lines.append(f"{n} spikeloop board{'s' if n != 1 else ''} found")
    return "\n".join(lines)

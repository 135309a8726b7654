"""Link transcripts: a session's bytes, request by request, saved to a file and replayed.

A transcript is what a device was sent and what it answered, byte for byte. Recorded once (from
the reference, :class:`~spikeloop.host.virtual_board.VirtualBoard`, or from a real board), it
becomes a fixture: replaying the requests against another device from power-up must give exactly
the recorded replies. The committed conformance fixture ``tests/fixtures/link_transcript.json``
is regenerated with ``spikeloop transcript --out tests/fixtures/link_transcript.json`` when the
protocol changes on purpose (review the diff: every changed reply is a protocol change); the
registers-and-counters-at-their-limits fixture ``tests/fixtures/boundary_transcript.json`` with
``spikeloop transcript --session boundary --out tests/fixtures/boundary_transcript.json``.

File format (JSON): ``format`` (``"spikeloop link transcript"``), ``version`` (1), ``config``
(``SoCConfig.to_dict()`` of the device), ``source`` (who answered), ``meta`` (free-form), and
``exchanges``: a list of ``[request_hex, reply_hex]``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Transcript", "TranscriptError", "conformance_transcript", "boundary_session", "replay", "replay_on",
           "describe_mismatch", "FORMAT", "CONFORMANCE_PARAMS"]

FORMAT = "spikeloop link transcript"
VERSION = 1

#: The network of the committed conformance fixture: the SoC build the rtl backend tests share.
CONFORMANCE_PARAMS = {"n_in": 8, "n_out": 3}
CONFORMANCE_SEED = 3
CONFORMANCE_STEPS = 120


class TranscriptError(ValueError):
    """A transcript file is missing, malformed or of another format."""


@dataclass
class Transcript:
    """Requests and replies of one session, with the configuration of the device that answered."""
    config: dict
    exchanges: list[tuple[bytes, bytes]]
    source: str = ""
    meta: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": VERSION, "config": self.config,
                           "source": self.source, "meta": self.meta,
                           "exchanges": [[q.hex(), r.hex()] for q, r in self.exchanges]},
                          indent=0, sort_keys=True) + "\n"

    def save(self, path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)

    @classmethod
    def load(cls, path) -> "Transcript":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise TranscriptError(f"no such transcript: {path}") from None
        except (OSError, ValueError) as e:
            raise TranscriptError(f"{path} is not a transcript: {e}") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise TranscriptError(f"{path} is not a {FORMAT!r} file")
        if d.get("version") != VERSION:
            raise TranscriptError(f"{path}: transcript version must be {VERSION}, not {d.get('version')!r}")
        try:
            ex = [(bytes.fromhex(q), bytes.fromhex(r)) for q, r in d["exchanges"]]
        except (KeyError, TypeError, ValueError) as e:
            raise TranscriptError(f"{path}: malformed exchanges: {e}") from None
        return cls(d.get("config") or {}, ex, d.get("source", ""), d.get("meta") or {})

    def soc_config(self):
        """The :class:`~spikeloop.hdl.config.SoCConfig` of the device that was recorded."""
        from spikeloop.hdl.config import SoCConfig
        return SoCConfig.from_dict(self.config)


def conformance_transcript(params=None, *, seed: int = CONFORMANCE_SEED,
                           steps: int = CONFORMANCE_STEPS) -> Transcript:
    """The conformance session of :func:`spikeloop.host.virtual_board.transcript`, answered by
    the reference for the configuration the rtl backend builds (``max_steps`` as the engine's)."""
    from spikeloop.hdl.config import SoCConfig
    from spikeloop.host.virtual_board import transcript
    from spikeloop.params import Params
    p = params if params is not None else Params(**CONFORMANCE_PARAMS)
    config = SoCConfig.build(p, 1)
    ex = transcript(config, seed=seed, steps=steps, max_steps=config.max_steps)
    return Transcript(config.to_dict(), ex, source="VirtualBoard",
                      meta={"seed": seed, "steps": steps, "what": "conformance session"})


def boundary_session(params=None) -> Transcript:
    """The boundary session of :func:`spikeloop.host.virtual_board.boundary_transcript` (every
    register and counter at its limits), answered by the reference for the configuration the rtl
    backend builds, the same build as :func:`conformance_transcript`'s so the two share it."""
    from spikeloop.hdl.config import SoCConfig
    from spikeloop.host.virtual_board import boundary_transcript
    from spikeloop.params import Params
    p = params if params is not None else Params(**CONFORMANCE_PARAMS)
    config = SoCConfig.build(p, 1)
    ex = boundary_transcript(config, max_steps=config.max_steps)
    return Transcript(config.to_dict(), ex, source="VirtualBoard",
                      meta={"what": "registers and counters at their limits"})


def replay(transport, exchanges, *, reply_timeout: float = 60.0, quiet_s: float = 1.0):
    """Send each request to ``transport`` and collect its reply; return the index of the first
    exchange whose reply differs, with what came back, or ``None`` when every byte matched.

    A request whose recorded reply is empty waits ``quiet_s`` for silence.
    """
    for n, (req, want) in enumerate(exchanges):
        transport.write(req)
        got, deadline = b"", time.monotonic() + (reply_timeout if want else quiet_s)
        while len(got) < len(want) or not want:
            chunk = transport.read(1 << 16, 0.3)
            got += chunk
            if time.monotonic() > deadline or (not want and not chunk):
                break
        if got != want:
            return n, got
    return None


def replay_on(transcript: Transcript, spec: str | None = None, **kw):
    """Replay ``transcript`` on a protocol backend (``rtl`` by default, ``board-model`` or
    ``serial:PORT``) built for (or expected to be) the recorded configuration; the device must
    come fresh from power-up. Returns what :func:`replay` returns. ``kw`` goes to the backend's
    opener (e.g. ``calibrate_s`` for rtl, ``baud`` for serial)."""
    from spikeloop.host.backends import lookup
    backend, port = lookup(spec, protocol=True)
    config = transcript.soc_config()
    if backend.takes_port:
        kw.setdefault("baud", config.baud)
    transport = backend.open_transport(None if backend.takes_port else config, port, **kw)
    try:
        return replay(transport, transcript.exchanges)
    finally:
        transport.close()


def describe_mismatch(transcript: Transcript, index: int, got: bytes) -> str:
    """What the request ``index`` was, what was recorded and what came back, frame by frame."""
    from spikeloop import protocol as P

    def frames(data: bytes) -> str:
        dec = P.FrameDecoder(max_payload=0xFFFF)
        fs = dec.feed(data)
        shown = [f"{P.Command(f.cmd).name if f.cmd in set(P.Command) else hex(f.cmd)} seq={f.seq} "
                 f"payload={f.payload.hex() or '-'}" for f in fs]
        return "; ".join(shown) or (data.hex() or "nothing")

    req, want = transcript.exchanges[index]
    return (f"exchange {index} of {len(transcript.exchanges)}: request {frames(req)}\n"
            f"  recorded reply: {frames(want)}\n  got:            {frames(got)}")

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

A live session is recorded in the same format by :class:`RecordingTransport` (``Board.open(...,
record_link=PATH)``, ``--record-link FILE``): each write of the driver is a request, every byte
read until the next write its reply; ``meta`` adds ``recorded`` (UTC start time) and
``timestamps``, one ``[sent_s, last_reply_byte_s]`` per exchange in seconds from the start (the
reply time is null when nothing came back). Replaying such a file on a device fresh from
power-up must give the recorded replies, unless the session had timeouts or retransmissions.
"""

from __future__ import annotations

import datetime
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Transcript", "TranscriptError", "conformance_transcript", "boundary_session", "replay",
           "replay_on", "describe_mismatch", "RecordingTransport", "recording_opener", "FORMAT",
           "CONFORMANCE_PARAMS"]

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


# ---------------------------------------------------------------------------------- recording
from spikeloop.host.transport import Transport  # noqa: E402  (transport imports nothing of ours)


class RecordingTransport(Transport):
    """Wraps a transport and writes the session, byte for byte, as a :class:`Transcript` at
    :meth:`close` (so a recorded session can be replayed with :func:`replay_on`, or kept as the
    fixture of a board run).

    ``config`` (a ``SoCConfig`` dict) may be set later, e.g. once IDENTIFY told what the device is;
    :meth:`save` may be called at any time and rewrites the file with what was recorded so far.
    """

    def __init__(self, inner: Transport, path, *, config: dict | None = None, source: str = "",
                 meta: dict | None = None):
        self.inner, self.path = inner, Path(path)
        self.config, self.source, self.meta = dict(config or {}), source, dict(meta or {})
        self.exchanges: list[list] = []          # [request, reply (bytearray), t_sent, t_reply]
        self._t0 = time.monotonic()
        self._started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self._closed = False

    def _now(self) -> float:
        return round(time.monotonic() - self._t0, 6)

    def write(self, data: bytes) -> None:
        self.exchanges.append([bytes(data), bytearray(), self._now(), None])
        self.inner.write(data)

    def read(self, n: int, timeout: float | None = 0.0) -> bytes:
        data = self.inner.read(n, timeout)
        if data:
            if not self.exchanges:           # bytes before any request (a device talking first)
                self.exchanges.append([b"", bytearray(), 0.0, None])
            ex = self.exchanges[-1]
            ex[1] += data
            ex[3] = self._now()
        return data

    def __getattr__(self, name):
        # in_waiting, stats, pid ... of the wrapped transport (never "inner" itself: no recursion
        # before __init__ has set it)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def transcript(self) -> Transcript:
        meta = dict(self.meta, recorded=self._started, timestamps=[[e[2], e[3]] for e in self.exchanges])
        return Transcript(self.config, [(q, bytes(r)) for q, r, _, _ in self.exchanges], self.source, meta)

    def save(self) -> None:
        self.transcript().save(self.path)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.save()
        finally:
            self.inner.close()


def recording_opener(path, opener=None):
    """An ``opener(backend, params)`` for :func:`~spikeloop.host.compare.compare_backends` that
    records each board it opens: the first to ``STEM-a-BACKEND.json``, the second to
    ``STEM-b-BACKEND.json`` next to ``path`` (one file per side, as the run records are)."""
    from spikeloop.host.compare import run_dir_name
    from spikeloop.host.hil import open_board
    path = Path(path)
    count = [0]

    def open_recording(backend, params, **kw):
        tag = "ab"[count[0]] if count[0] < 2 else str(count[0])
        count[0] += 1
        target = path.with_name(f"{path.stem}-{run_dir_name(tag, backend)}{path.suffix or '.json'}")
        if opener is not None:
            return opener(backend, params, record_link=target, **kw)
        return open_board(backend, params, record_link=target, **kw)
    return open_recording

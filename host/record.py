"""Run records: everything a hardware-in-the-loop run sent, received and read back, on disk.

A record is a directory written incrementally and atomically (every file is written to a temporary
name, flushed and renamed), so a run that stops for any reason (Ctrl-C, a backend that crashed, a
power cut) leaves a consistent record of every trial it completed. ``spikeloop train --resume DIR``
continues from the last full state snapshot (:mod:`spikeloop.host.hil`).

Layout (``FORMAT`` = 1; see ``docs/host.md``, "Run records")::

    manifest.json          what was run: params, backend, board identity, versions, task, schedule,
                           options, and one entry per session (first run and each resume)
    stimulus.npz           inputs (T, n_in) bool and targets (T, n_out) bool, stored once
    trials/NNNNNN.npz      trial NNNNNN (0-based): outputs (T, n_out) bool; errors (T, n_out) int64
                           (host error mode); trace:<var> (T, ...) int64 for traced trials
    snapshots/NNNNNN.npz   the board after NNNNNN trials: state:<var> (every variable the board
                           holds, batch axis 1 as in GoldenModel.snapshot), reg:<name> (registers),
                           host:<name> (host-side state of the error loop)
    metrics.json           the training metrics, compatible with ``spikeloop plot``
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np

__all__ = ["RunRecord", "RecordError", "FORMAT", "atomic_savez", "atomic_write_json"]

#: Version of the directory layout; bumped on an incompatible change.
FORMAT = 1

_NUM = re.compile(r"^(\d{6})\.npz$")


class RecordError(ValueError):
    """A run record is missing, incomplete, of another format, or does not fit the request."""


def _fsync_replace(tmp: Path, path: Path) -> None:
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` so that readers see the old or the new file, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    _fsync_replace(tmp, path)


def atomic_savez(path, arrays: dict) -> None:
    """``numpy.savez_compressed`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
    np.savez_compressed(tmp, **arrays)
    _fsync_replace(tmp, path)


class RunRecord:
    """One run directory (see the module docstring).

    Use :meth:`create` for a new run and :meth:`open` to read or resume one.

    Members
    -------
    path : Path
    manifest : dict
    inputs, targets : bool arrays (T, n_in), (T, n_out)
    """

    def __init__(self, path, manifest: dict, inputs: np.ndarray, targets: np.ndarray):
        self.path = Path(path)
        self.manifest = manifest
        self.inputs = inputs
        self.targets = targets

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(cls, path, manifest: dict, inputs, targets) -> "RunRecord":
        """Start a record in ``path`` (created if missing).

        Raises
        ------
        RecordError
            If ``path`` already holds a record (resume it, or choose another directory).
        """
        path = Path(path)
        if (path / "manifest.json").exists():
            raise RecordError(f"{path} already holds a run record; resume it with --resume {path} "
                              f"or choose another --out")
        (path / "trials").mkdir(parents=True, exist_ok=True)
        (path / "snapshots").mkdir(exist_ok=True)
        inputs, targets = np.asarray(inputs, bool), np.asarray(targets, bool)
        manifest = dict(manifest, format=FORMAT)
        manifest.setdefault("sessions", [])
        atomic_savez(path / "stimulus.npz", dict(inputs=inputs, targets=targets))
        atomic_write_json(path / "manifest.json", manifest)
        return cls(path, manifest, inputs, targets)

    @classmethod
    def open(cls, path) -> "RunRecord":
        """Read an existing record.

        Raises
        ------
        RecordError
            If ``path`` is not a record of this format.
        """
        path = Path(path)
        mf = path / "manifest.json"
        if not mf.is_file():
            raise RecordError(f"{path} is not a run record (no manifest.json)")
        manifest = json.loads(mf.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise RecordError(f"record format must be {FORMAT}, not {manifest.get('format')!r} ({mf})")
        if not (path / "stimulus.npz").is_file():
            raise RecordError(f"{path} is incomplete: stimulus.npz is missing")
        with np.load(path / "stimulus.npz") as z:
            inputs, targets = z["inputs"], z["targets"]
        return cls(path, manifest, inputs, targets)

    def save_manifest(self) -> None:
        atomic_write_json(self.path / "manifest.json", self.manifest)

    def start_session(self, **info) -> None:
        """Append a session entry (UTC start time plus ``info``) to the manifest."""
        info = dict(started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **info)
        self.manifest.setdefault("sessions", []).append(info)
        self.save_manifest()

    # ------------------------------------------------------------------ trials
    def _file(self, kind: str, n: int) -> Path:
        return self.path / kind / f"{int(n):06d}.npz"

    def _numbers(self, kind: str) -> list[int]:
        d = self.path / kind
        if not d.is_dir():
            return []
        return sorted(int(m.group(1)) for f in d.iterdir() if (m := _NUM.match(f.name)))

    def write_trial(self, k: int, outputs, errors=None, traces: dict | None = None) -> None:
        """Record trial ``k``: its output spikes, the errors sent (host mode) and per-step traces."""
        arrays = dict(outputs=np.asarray(outputs, bool))
        if errors is not None:
            arrays["errors"] = np.asarray(errors, np.int64)
        for name, v in (traces or {}).items():
            arrays[f"trace:{name}"] = np.asarray(v, np.int64)
        atomic_savez(self._file("trials", k), arrays)

    def trials_done(self) -> int:
        """Number of consecutive trials recorded from trial 0."""
        n = 0
        for k in self._numbers("trials"):
            if k != n:
                break
            n += 1
        return n

    def read_trial(self, k: int) -> dict:
        """``outputs``, optionally ``errors`` and ``traces`` ({var: (T, ...)}) of trial ``k``."""
        f = self._file("trials", k)
        if not f.is_file():
            raise RecordError(f"{self.path}: trial {k} is not recorded")
        with np.load(f) as z:
            out = dict(outputs=z["outputs"], traces={})
            for key in z.files:
                if key == "errors":
                    out["errors"] = z[key]
                elif key.startswith("trace:"):
                    out["traces"][key[6:]] = z[key]
        return out

    # ------------------------------------------------------------------ snapshots
    def write_snapshot(self, n: int, state: dict, registers: dict, host: dict | None = None) -> None:
        """The board after ``n`` trials: every state variable, the registers and the host state."""
        arrays = {f"state:{k}": np.asarray(v) for k, v in state.items()}
        arrays.update({f"reg:{k}": np.asarray(int(v), np.int64) for k, v in registers.items()})
        arrays.update({f"host:{k}": np.asarray(v) for k, v in (host or {}).items()})
        atomic_savez(self._file("snapshots", n), arrays)

    def snapshots(self) -> list[int]:
        """Trial counts at which a snapshot exists, ascending."""
        return self._numbers("snapshots")

    def read_snapshot(self, n: int) -> dict:
        """``{"state": {...}, "registers": {...}, "host": {...}}`` after ``n`` trials."""
        f = self._file("snapshots", n)
        if not f.is_file():
            raise RecordError(f"{self.path}: no snapshot after {n} trials")
        out = dict(state={}, registers={}, host={})
        with np.load(f) as z:
            for key in z.files:
                kind, name = key.split(":", 1)
                if kind == "state":
                    out["state"][name] = z[key]
                elif kind == "reg":
                    out["registers"][name] = int(z[key])
                elif kind == "host":
                    out["host"][name] = z[key]
        return out

    def truncate(self, n: int) -> None:
        """Drop trials ``>= n`` and snapshots after ``n`` trials (before continuing from ``n``)."""
        for k in self._numbers("trials"):
            if k >= n:
                self._file("trials", k).unlink()
        for k in self._numbers("snapshots"):
            if k > n:
                self._file("snapshots", k).unlink()

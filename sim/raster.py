"""Spike rasters: the ``.ras`` text format and conversion to/from dense boolean arrays.

The Supervised Spiking Benchmark Suite stores a spike train as a ``.ras`` file: one spike per
line, ``time_in_seconds neuron_id`` separated by whitespace, in any order; lines starting with
``#`` and blank lines are ignored, except two header comments that say what the spikes alone
cannot: ``# neurons N`` (the population size, when the highest neurons are silent) and
``# duration_s X`` (the trial length, when it ends after the last spike). Files are the
interchange format between the host, the golden model and recorded hardware runs; dense ``(n_steps, n_neurons)`` boolean arrays are what the
simulators consume step by step.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

import numpy as np

__all__ = ["read_ras", "read_ras_header", "write_ras", "to_dense", "from_dense"]

#: Added to ``t / dt`` before flooring so a time written as ``step * dt`` (and rounded on the way
#: through decimal text) lands in ``step`` and not ``step - 1``.
_BIN_EPS = 1e-9


# --------------------------------------------------------------------------- validation helpers

def _check_pos_int(name: str, x) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x <= 0:
        raise ValueError(f"{name} must be a positive int, not {x!r}")
    return int(x)


def _check_pos_float(name: str, x) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x) or x <= 0:
        raise ValueError(f"{name} must be a positive finite number, not {x!r}")
    return float(x)


def _check_spikes(times_s, ids) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (times, ids) pair and return them as float64 / int64 1-D arrays."""
    times = np.asarray(times_s)
    idarr = np.asarray(ids)
    if times.ndim != 1:
        raise ValueError(f"times_s must be a 1-D array, not shape {times.shape!r}")
    if idarr.ndim != 1:
        raise ValueError(f"ids must be a 1-D array, not shape {idarr.shape!r}")
    if times.shape != idarr.shape:
        raise ValueError(
            f"times_s and ids must have the same length, not {times.size!r} and {idarr.size!r}")
    if times.size and not (np.issubdtype(times.dtype, np.floating)
                           or np.issubdtype(times.dtype, np.integer)):
        raise ValueError(f"times_s must be real numbers, not dtype {times.dtype!r}")
    times = times.astype(np.float64, copy=False)
    bad = ~np.isfinite(times) | (times < 0)
    if bad.any():
        raise ValueError(
            f"times_s must be finite and non-negative, not {float(times[bad][0])!r}")
    if idarr.size and (idarr.dtype == np.bool_ or not np.issubdtype(idarr.dtype, np.integer)):
        raise ValueError(f"ids must be integers, not dtype {idarr.dtype!r}")
    idarr = idarr.astype(np.int64, copy=False)
    if (idarr < 0).any():
        raise ValueError(f"ids must be non-negative, not {int(idarr[idarr < 0][0])!r}")
    return times, idarr


def _sorted(times: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((ids, times))
    return times[order], ids[order]


# --------------------------------------------------------------------------- file I/O

def read_ras(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a ``.ras`` spike file.

    Files may be unsorted, so the spikes are returned sorted (by time, then neuron id) to make
    the result independent of how the file was written.

    Parameters
    ----------
    path : str or path-like
        File to read.

    Returns
    -------
    times_s : ndarray of float64
        Spike times in seconds.
    ids : ndarray of int64
        Neuron index of each spike.

    Raises
    ------
    ValueError
        On a malformed line (not exactly two fields, a field that is not a number, a negative or
        non-integral id, a negative or non-finite time); the message names the file and the
        line number so the offending line can be found.
    """
    path = Path(path)
    times: list[float] = []
    ids: list[int] = []
    with path.open("r", encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path}, line {lineno}"
            fields = line.split()
            if len(fields) != 2:
                raise ValueError(
                    f"{where}: a spike line must have 2 fields 'time_in_seconds neuron_id', "
                    f"not {len(fields)} in {line!r}")
            t_tok, id_tok = fields
            try:
                t = float(t_tok)
            except ValueError:
                raise ValueError(f"{where}: time must be a number, not {t_tok!r}") from None
            if not math.isfinite(t) or t < 0:
                raise ValueError(
                    f"{where}: time must be finite and non-negative, not {t_tok!r}")
            try:
                nid = int(id_tok)
            except ValueError:
                # Some tools write ids as floats ("3.0"); accept them when integral.
                try:
                    f = float(id_tok)
                except ValueError:
                    raise ValueError(
                        f"{where}: neuron_id must be an integer, not {id_tok!r}") from None
                if not (math.isfinite(f) and f.is_integer()):
                    raise ValueError(
                        f"{where}: neuron_id must be an integer, not {id_tok!r}") from None
                nid = int(f)
            if nid < 0:
                raise ValueError(f"{where}: neuron_id must be non-negative, not {id_tok!r}")
            times.append(t)
            ids.append(nid)
    return _sorted(np.asarray(times, dtype=np.float64), np.asarray(ids, dtype=np.int64))


_HEADER_KEYS = {"neurons": int, "duration_s": float}


def read_ras_header(path: str | os.PathLike) -> dict:
    """The header comments of a ``.ras`` file: ``{"neurons": int, "duration_s": float}``, each
    key present only when the file states it (``# neurons 100``, ``# duration_s 3.5``).

    Raises
    ------
    ValueError
        If a header value is not a positive number (the message names file and line).
    """
    path = Path(path)
    found: dict = {}
    with path.open("r", encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            fields = raw.strip().lstrip("#").split()
            if not raw.lstrip().startswith("#") or len(fields) != 2 or fields[0] not in _HEADER_KEYS:
                continue
            key, tok = fields
            kind = _HEADER_KEYS[key]
            try:
                value = kind(tok)
            except ValueError:
                value = None
            if value is None or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{path}, line {lineno}: '# {key}' must be a positive "
                                 f"{'integer' if kind is int else 'number'}, not {tok!r}")
            found[key] = value
    return found


def write_ras(path: str | os.PathLike, times_s, ids, comment: str | None = None, *,
              n_neurons: int | None = None, duration_s: float | None = None) -> None:
    """Write spikes to a ``.ras`` file.

    Times are written with ``%.6f`` (1 µs resolution, which is finer than any time step we
    simulate), so ``read_ras`` returns every time within 0.5 µs of the original, and exactly
    when the original is a whole number of microseconds. Spikes are written sorted by time then
    id so that files are deterministic and diff cleanly.

    Parameters
    ----------
    path : str or path-like
        Destination; overwritten if it exists.
    times_s : array_like of float
        Spike times in seconds, finite and non-negative.
    ids : array_like of int
        Neuron index of each spike, non-negative, same length as ``times_s``.
    comment : str, optional
        Written first as ``# ...`` lines (one per line of ``comment``) to record provenance.
    n_neurons, duration_s : optional
        Written as the ``# neurons`` and ``# duration_s`` headers (see :func:`read_ras_header`);
        every id must be below ``n_neurons`` and every time before ``duration_s``.
    """
    times, idarr = _check_spikes(times_s, ids)
    if comment is not None and not isinstance(comment, str):
        raise ValueError(f"comment must be a str or None, not {comment!r}")
    times, idarr = _sorted(times, idarr)
    lines = [f"# {c}".rstrip() + "\n" for c in (comment.splitlines() if comment else [])]
    if n_neurons is not None:
        n_neurons = _check_pos_int("n_neurons", n_neurons)
        if idarr.size and idarr.max() >= n_neurons:
            raise ValueError(f"ids must be below n_neurons={n_neurons}, not {int(idarr.max())}")
        lines.append(f"# neurons {n_neurons}\n")
    if duration_s is not None:
        duration_s = _check_pos_float("duration_s", duration_s)
        if times.size and times.max() >= duration_s:
            raise ValueError(f"spike times must be before duration_s={duration_s!r}, "
                             f"not {float(times.max())!r}")
        lines.append(f"# duration_s {duration_s:.6f}\n")
    lines.extend(f"{t:.6f} {i:d}\n" for t, i in zip(times.tolist(), idarr.tolist()))
    with Path(path).open("w", encoding="utf-8") as fh:
        fh.writelines(lines)


# --------------------------------------------------------------------------- dense conversion

def to_dense(times_s, ids, n_neurons: int, n_steps: int, dt_s: float) -> np.ndarray:
    """Bin spikes into a dense boolean raster for step-by-step simulation.

    A spike at time ``t`` falls in step ``floor(t / dt_s + 1e-9)``; the small epsilon keeps
    times that are exact multiples of ``dt_s`` (after decimal round-off) in their own step.
    Several spikes of one neuron in the same step collapse to a single ``True``, because the
    simulated neurons can emit and receive at most one spike per step.

    Parameters
    ----------
    times_s, ids : array_like
        Spike times in seconds and neuron indices, as returned by :func:`read_ras`.
    n_neurons : int
        Number of columns; every id must be below it.
    n_steps : int
        Number of rows; every spike must lie before ``n_steps * dt_s``.
    dt_s : float
        Step length in seconds.

    Returns
    -------
    ndarray of bool, shape (n_steps, n_neurons)

    Raises
    ------
    ValueError
        If a spike falls at or after the end of the trial or has an id ``>= n_neurons``:
        silently dropping it would hide a mismatch between file and configuration.
    """
    times, idarr = _check_spikes(times_s, ids)
    n_neurons = _check_pos_int("n_neurons", n_neurons)
    n_steps = _check_pos_int("n_steps", n_steps)
    dt_s = _check_pos_float("dt_s", dt_s)
    if idarr.size and idarr.max() >= n_neurons:
        bad = int(idarr.max())
        raise ValueError(
            f"ids must be below n_neurons={n_neurons}, not {bad!r}")
    steps_f = np.floor(times / dt_s + _BIN_EPS)
    late = steps_f >= n_steps
    if late.any():
        k = int(np.argmax(late))
        raise ValueError(
            f"spike times must be before the end of the trial "
            f"(n_steps * dt_s = {n_steps} * {dt_s!r} s), "
            f"not {float(times[k])!r} s (neuron {int(idarr[k])}, step {int(steps_f[k])})")
    dense = np.zeros((n_steps, n_neurons), dtype=bool)
    dense[steps_f.astype(np.int64), idarr] = True
    return dense


def from_dense(spikes_bool, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Turn a dense raster back into spike times and ids (time = step * dt_s).

    Parameters
    ----------
    spikes_bool : array_like of bool, shape (n_steps, n_neurons)
        Integer arrays holding only 0 and 1 are accepted too.
    dt_s : float
        Step length in seconds.

    Returns
    -------
    times_s : ndarray of float64
    ids : ndarray of int64
        Sorted by time, then id (the order :func:`read_ras` returns).
    """
    dt_s = _check_pos_float("dt_s", dt_s)
    s = np.asarray(spikes_bool)
    if s.ndim != 2:
        raise ValueError(f"spikes_bool must be a 2-D (n_steps, n_neurons) array, "
                         f"not shape {s.shape!r}")
    if s.dtype != np.bool_:
        if not np.issubdtype(s.dtype, np.integer) or not np.isin(s, (0, 1)).all():
            raise ValueError(f"spikes_bool must be boolean (or 0/1 integers), "
                             f"not dtype {s.dtype!r}")
        s = s.astype(bool)
    steps, ids = np.nonzero(s)   # row-major: already sorted by step, then id
    return steps.astype(np.float64) * dt_s, ids.astype(np.int64)

"""Scores for output spike trains: the SuperSpike van Rossum cost and spike matching.

``van_rossum`` is the quantity SuperSpike descends, so tracking it shows whether learning
works; ``match_spikes`` is the pass/fail criterion ("every target spike reproduced within a
tolerance, nothing extra") that a cost value alone cannot express.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

__all__ = ["van_rossum", "match_spikes", "spike_steps"]


def _check_pos_float(name: str, x) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x) or x <= 0:
        raise ValueError(f"{name} must be a positive finite number, not {x!r}")
    return float(x)


def _check_train_array(name: str, x) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype != np.bool_ and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be a bool or integer array, not dtype {a.dtype!r}")
    if a.ndim not in (2, 3):
        raise ValueError(f"{name} must be shaped (T, N) or (B, T, N), not {a.shape!r}")
    return a


def van_rossum(out, target, dt_s: float, tau_mem_s: float = 10e-3,
               tau_syn_s: float = 5e-3) -> np.ndarray:
    """SuperSpike's van Rossum cost between output and target spike trains.

    The difference ``target - out`` is filtered with the double-exponential α kernel, in the
    same per-step order as the learning rule's error signal::

        a += x;  b += dt/tau_mem * (a - b);  a *= exp(-dt/tau_syn)

    (float64, ``a`` and ``b`` start at 0), and the cost is ``0.5 * sum_t b(t)**2 * dt_s``.

    Parameters
    ----------
    out, target : array_like of bool or int, shape (T, N) or (B, T, N)
        Spike trains (integers allow counts); both must have the same shape.
    dt_s : float
        Step length in seconds; must not exceed ``tau_mem_s`` (Euler step of the filter).
    tau_mem_s, tau_syn_s : float
        Kernel time constants in seconds.

    Returns
    -------
    ndarray of float64, shape (N,) or (B, N)
        Cost per neuron (and per batch entry); 0 exactly when the trains are identical.
    """
    out = _check_train_array("out", out)
    target = _check_train_array("target", target)
    if out.shape != target.shape:
        raise ValueError(
            f"out and target must have the same shape, not {out.shape!r} and {target.shape!r}")
    dt_s = _check_pos_float("dt_s", dt_s)
    tau_mem_s = _check_pos_float("tau_mem_s", tau_mem_s)
    tau_syn_s = _check_pos_float("tau_syn_s", tau_syn_s)
    if dt_s > tau_mem_s:
        raise ValueError(f"dt_s must be at most tau_mem_s={tau_mem_s!r}, not {dt_s!r}")

    x = target.astype(np.float64) - out.astype(np.float64)
    x = np.moveaxis(x, -2, 0)                     # time first: (T, N) or (T, B, N)
    r = dt_s / tau_mem_s
    q = math.exp(-dt_s / tau_syn_s)
    a = np.zeros(x.shape[1:])
    b = np.zeros(x.shape[1:])
    acc = np.zeros(x.shape[1:])
    for xt in x:
        a += xt
        b += r * (a - b)
        a *= q
        acc += b * b
    return 0.5 * acc * dt_s


def spike_steps(dense_bool_1d) -> np.ndarray:
    """Step indices of the spikes in one neuron's dense train (input for :func:`match_spikes`).

    Parameters
    ----------
    dense_bool_1d : array_like of bool, shape (T,)

    Returns
    -------
    ndarray of int64, ascending
    """
    a = np.asarray(dense_bool_1d)
    if a.ndim != 1:
        raise ValueError(f"dense_bool_1d must be a 1-D array, not shape {a.shape!r}")
    if a.dtype != np.bool_ and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"dense_bool_1d must be a bool or integer array, not dtype {a.dtype!r}")
    return np.flatnonzero(a).astype(np.int64)


def _check_steps(name: str, x) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of steps, not shape {a.shape!r}")
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must hold integer steps, not dtype {a.dtype!r}")
    return np.sort(a.astype(np.int64))


def match_spikes(out_steps_list: Sequence, target_steps_list: Sequence,
                 tol_steps: int) -> dict:
    """Pair output spikes with target spikes, one-to-one, within ``±tol_steps``.

    Per neuron, output spikes are visited in time order and each takes the earliest still
    unmatched target ``s`` with ``|s - o| <= tol_steps``. Because every output's window has
    the same width, this greedy order finds a maximum matching, so ``all_matched`` is False
    only when no one-to-one assignment exists.

    Parameters
    ----------
    out_steps_list, target_steps_list : sequence of array_like of int
        One array of spike steps per neuron (e.g. from :func:`spike_steps`); same length.
    tol_steps : int
        Largest allowed timing error in steps, non-negative.

    Returns
    -------
    dict
        ``matched`` (int, pairs found), ``missed`` (int, targets without an output),
        ``extra`` (int, outputs without a target), ``all_matched`` (bool, nothing missed and
        nothing extra) and ``pairs`` (list per neuron of ``(out_step, target_step)`` tuples).
    """
    if isinstance(tol_steps, bool) or not isinstance(tol_steps, numbers.Integral) \
            or tol_steps < 0:
        raise ValueError(f"tol_steps must be a non-negative int, not {tol_steps!r}")
    tol = int(tol_steps)
    if any(isinstance(x, np.ndarray) and x.ndim == 1
           for x in (out_steps_list, target_steps_list)):
        raise ValueError("out_steps_list and target_steps_list must be sequences with one "
                         "array per neuron, not a single 1-D array")
    if len(out_steps_list) != len(target_steps_list):
        raise ValueError(
            f"out_steps_list and target_steps_list must have one entry per neuron each, "
            f"not {len(out_steps_list)!r} and {len(target_steps_list)!r}")

    matched = missed = extra = 0
    pairs: list[list[tuple[int, int]]] = []
    for n, (o_raw, t_raw) in enumerate(zip(out_steps_list, target_steps_list)):
        outs = _check_steps(f"out_steps_list[{n}]", o_raw).tolist()
        tgts = _check_steps(f"target_steps_list[{n}]", t_raw).tolist()
        used = [False] * len(tgts)
        lo = 0                       # targets before tgts[lo] are too early for later outputs
        neuron_pairs: list[tuple[int, int]] = []
        for o in outs:
            while lo < len(tgts) and tgts[lo] < o - tol:
                lo += 1
            j = lo
            while j < len(tgts) and (used[j] or tgts[j] < o - tol):
                j += 1
            if j < len(tgts) and tgts[j] <= o + tol:
                used[j] = True
                neuron_pairs.append((o, tgts[j]))
        pairs.append(neuron_pairs)
        matched += len(neuron_pairs)
        missed += len(tgts) - len(neuron_pairs)
        extra += len(outs) - len(neuron_pairs)
    return dict(matched=matched, missed=missed, extra=extra,
                all_matched=(missed == 0 and extra == 0), pairs=pairs)

"""Seeded input and target spike trains for the learning experiments.

Every generator returns a dense boolean array shaped ``(n_steps, n_neurons)`` and draws only
from ``numpy.random.default_rng(seed)``, so a seed fully determines a stimulus: the golden
model, the float reference and the hardware run can all be fed the same "frozen" trains.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["frozen_poisson", "equidistant_targets", "fig2_task", "GLYPHS", "text_raster"]


def _check_int(name: str, x, minimum: int) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {what}, not {x!r}")
    return int(x)


def _check_real(name: str, x, *, positive: bool) -> float:
    ok = (not isinstance(x, bool) and isinstance(x, numbers.Real) and math.isfinite(x)
          and (x > 0 if positive else x >= 0))
    if not ok:
        what = "positive" if positive else "non-negative"
        raise ValueError(f"{name} must be a finite {what} number, not {x!r}")
    return float(x)


def frozen_poisson(n_neurons: int, n_steps: int, rate_hz: float, dt_s: float,
                   seed: int) -> np.ndarray:
    """Bernoulli approximation of independent Poisson spike trains, fixed by ``seed``.

    Each neuron spikes in each step independently with probability ``rate_hz * dt_s``, so at
    most one spike per step per neuron (what the simulated synapses can deliver) and the mean
    rate is exactly ``rate_hz``.

    Parameters
    ----------
    n_neurons, n_steps : int
        Output shape is ``(n_steps, n_neurons)``.
    rate_hz : float
        Mean firing rate, non-negative; ``rate_hz * dt_s`` must not exceed 1.
    dt_s : float
        Step length in seconds.
    seed : int
        Seed for ``numpy.random.default_rng``; the same seed gives the same trains.

    Returns
    -------
    ndarray of bool, shape (n_steps, n_neurons)
    """
    n_neurons = _check_int("n_neurons", n_neurons, 1)
    n_steps = _check_int("n_steps", n_steps, 1)
    rate_hz = _check_real("rate_hz", rate_hz, positive=False)
    dt_s = _check_real("dt_s", dt_s, positive=True)
    seed = _check_int("seed", seed, 0)
    p = rate_hz * dt_s
    if p > 1.0:
        raise ValueError(
            f"rate_hz * dt_s must be at most 1 (one spike per step), not {p!r}")
    rng = np.random.default_rng(seed)
    return rng.random((n_steps, n_neurons)) < p


def _equidistant_steps(n_steps: int, n_spikes: int) -> np.ndarray:
    """Steps ``round((k + 0.5) * n_steps / n_spikes)``, computed exactly in integers.

    Ties round down (``ceil(x - 0.5)``): unlike round-half-up this never yields step
    ``n_steps``, and unlike round-half-even it keeps the spikes distinct even when
    ``n_spikes == n_steps``.
    """
    k = np.arange(n_spikes, dtype=np.int64)
    num = (2 * k + 1) * n_steps - n_spikes          # 2*n_spikes * (x - 0.5) >= 0
    den = 2 * n_spikes
    return -((-num) // den)                          # ceil(num / den)


def equidistant_targets(n_steps: int, n_spikes: int, n_neurons: int = 1) -> np.ndarray:
    """Target trains with ``n_spikes`` spikes spread evenly over the trial (SuperSpike Fig. 2).

    Spike ``k`` (``k = 0 .. n_spikes-1``) sits at step ``round((k + 0.5) * n_steps / n_spikes)``,
    the centre of the k-th of ``n_spikes`` equal slices of the trial, identically for every
    neuron. Exact ties (``.5``) round down so the spikes stay distinct and inside the trial.
    The result is deterministic; no seed is involved.

    Parameters
    ----------
    n_steps : int
        Trial length in steps.
    n_spikes : int
        Spikes per neuron, ``0 <= n_spikes <= n_steps``.
    n_neurons : int, default 1
        Number of (identical) target neurons.

    Returns
    -------
    ndarray of bool, shape (n_steps, n_neurons)
    """
    n_steps = _check_int("n_steps", n_steps, 1)
    n_spikes = _check_int("n_spikes", n_spikes, 0)
    n_neurons = _check_int("n_neurons", n_neurons, 1)
    if n_spikes > n_steps:
        raise ValueError(
            f"n_spikes must be at most n_steps={n_steps} (one spike per step), not {n_spikes!r}")
    out = np.zeros((n_steps, n_neurons), dtype=bool)
    if n_spikes:
        out[_equidistant_steps(n_steps, n_spikes), :] = True
    return out


def fig2_task(seed: int, n_in: int = 100, duration_s: float = 0.5, dt_s: float = 1e-3,
              rate_hz: float = 10.0, n_target_spikes: int = 5) -> dict:
    """The SuperSpike Fig. 2 task: map one frozen Poisson pattern onto an evenly spaced train.

    A single output neuron must learn to fire ``n_target_spikes`` equidistant spikes in
    response to ``n_in`` frozen Poisson inputs; it is the smallest end-to-end learning check.

    Parameters
    ----------
    seed : int
        Seed of the input pattern (the target is deterministic).
    n_in : int, default 100
        Number of input neurons.
    duration_s : float, default 0.5
        Trial length; must be a whole number of steps.
    dt_s : float, default 1e-3
        Step length in seconds.
    rate_hz : float, default 10.0
        Input firing rate.
    n_target_spikes : int, default 5
        Number of target spikes.

    Returns
    -------
    dict
        ``inputs`` (bool, (T, n_in)), ``targets`` (bool, (T, 1)), ``dt_s`` and ``seed``.
    """
    seed = _check_int("seed", seed, 0)
    duration_s = _check_real("duration_s", duration_s, positive=True)
    dt_s = _check_real("dt_s", dt_s, positive=True)
    n_steps_f = duration_s / dt_s
    n_steps = round(n_steps_f)
    if n_steps < 1 or abs(n_steps_f - n_steps) > 1e-9 * max(1.0, n_steps_f):
        raise ValueError(
            f"duration_s must be a positive whole number of steps of dt_s={dt_s!r}, "
            f"not {duration_s!r}")
    inputs = frozen_poisson(n_in, n_steps, rate_hz, dt_s, seed)
    targets = equidistant_targets(n_steps, n_target_spikes, 1)
    return dict(inputs=inputs, targets=targets, dt_s=dt_s, seed=seed)


#: 5x7 pixel glyphs for :func:`text_raster`, one string of 7 rows per character (``#`` = on).
GLYPHS: dict[str, tuple[str, ...]] = {
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "B": ("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "J": ("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "N": ("#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "Q": (".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "V": ("#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."),
    "W": ("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "##.##", "#...#"),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
    " ": (".....",) * 7,
}


def text_raster(text: str, n_neurons: int = 100, n_steps: int = 3500, *, period_steps: int = 25,
                seed: int = 0) -> np.ndarray:
    """``text`` written into spike times: neurons are the rows of a 5x7 pixel font (row 0 at the
    top), time runs left to right, one column of blank pixels between characters. A neuron in an
    "on" pixel fires every ``period_steps`` steps, at a phase drawn per neuron from ``seed``, so
    the pattern has structure a hidden layer can share between outputs, unlike Poisson targets.

    Returns a bool array (n_steps, n_neurons).
    """
    n_neurons = _check_int("n_neurons", n_neurons, 7)
    n_steps = _check_int("n_steps", n_steps, 1)
    period_steps = _check_int("period_steps", period_steps, 1)
    if not isinstance(text, str) or not text or any(c not in GLYPHS for c in text.upper()):
        raise ValueError(f"text must be a non-empty string of the letters A-Z and spaces, not {text!r}")
    columns = []                                  # per pixel column: 7 booleans, top to bottom
    for ch in text.upper():
        g = GLYPHS[ch]
        columns.extend([[g[r][c] == "#" for r in range(7)] for c in range(5)])
        columns.append([False] * 7)
    columns.pop()
    row_of = np.arange(n_neurons) * 7 // n_neurons                    # pixel row of each neuron
    col_of = np.arange(n_steps) * len(columns) // n_steps             # pixel column of each step
    on = np.asarray(columns, dtype=bool)[col_of][:, row_of]           # (n_steps, n_neurons)
    phase = np.random.default_rng(seed).integers(0, period_steps, n_neurons)
    beat = (np.arange(n_steps)[:, None] + phase[None, :]) % period_steps == 0
    return on & beat

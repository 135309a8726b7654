"""Integer arithmetic primitives of the golden model, each one a hardware operation.

All take and return numpy integer arrays (or Python ints). The rules they encode
(``docs/model.md``, "Arithmetic"): every shift that scales a signed value rounds toward zero, so
decays reach exactly zero from either side; every add saturates at the format's ends.
"""

from __future__ import annotations

import numpy as np

from spikeloop.params import Decay, Fmt

__all__ = ["sat", "shift_trunc", "decay", "decay_signed", "lowpass", "lowpass_signed"]


def sat(x, fmt: Fmt):
    """Clamp to the range of ``fmt`` (the one saturation rule: no add ever wraps)."""
    return np.minimum(np.maximum(x, fmt.min), fmt.max)


def shift_trunc(t, s: int):
    """``t / 2^s`` rounded toward zero: ``(t + (2^s − 1 if t < 0 else 0)) >> s``."""
    t = np.asarray(t)
    if s == 0:
        return t
    sign = t >> (8 * t.dtype.itemsize - 1)          # −1 where negative, else 0
    return (t + (sign & ((1 << s) - 1))) >> s


def decay(x, d: Decay):
    """Unsigned decay ``⌊x · M / 2^K⌋``; reaches 0 from any value since M < 2^K."""
    return (np.asarray(x) * d.M) >> d.K


def decay_signed(x, d: Decay):
    """Signed decay, truncated toward zero (an arithmetic shift alone would stick at −1)."""
    return shift_trunc(np.asarray(x) * d.M, d.K)


def lowpass(y, x, d: Decay):
    """Unsigned low-pass ``⌊(M·y + A·x) / 2^K⌋ = ⌊f·y + (1 − f)·x⌋``: stays within [min(x,y), max(x,y)]."""
    return (np.asarray(y) * d.M + np.asarray(x) * d.A) >> d.K


def lowpass_signed(y, x, d: Decay):
    """Signed low-pass, truncated toward zero; decays to exactly 0 when ``x`` is 0."""
    return shift_trunc(np.asarray(y) * d.M + np.asarray(x) * d.A, d.K)

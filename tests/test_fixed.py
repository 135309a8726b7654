"""Every arithmetic piece of the golden model, in isolation (docs/model.md, "Arithmetic")."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from spikeloop.params import Decay, Fmt, Params
from spikeloop.sim import fixed

codes = st.builds(lambda k, frac: Decay(max(1, min((1 << k) - 1, int(frac * (1 << k)))), k),
                  st.integers(1, 16), st.floats(0.01, 0.999))


@given(t=st.integers(-(1 << 40), 1 << 40), s=st.integers(0, 20))
def test_shift_trunc_rounds_toward_zero(t, s):
    got = int(fixed.shift_trunc(np.int64(t), s))
    want = abs(t) // (1 << s) * (1 if t >= 0 else -1)
    assert got == want


@given(d=codes, x=st.integers(0, (1 << 20) - 1))
def test_unsigned_decay_reaches_exactly_zero(d, x):
    x = np.int64(x)
    for _ in range(100000):
        if x == 0:
            break
        nxt = fixed.decay(x, d)
        assert 0 <= nxt < x, "an unsigned decay must strictly shrink a non-zero value"
        x = nxt
    assert x == 0


@given(d=codes, x=st.integers(-(1 << 20), (1 << 20) - 1))
def test_signed_decay_reaches_exactly_zero_from_both_sides(d, x):
    x = np.int64(x)
    for _ in range(100000):
        if x == 0:
            break
        nxt = fixed.decay_signed(x, d)
        assert abs(nxt) < abs(x) and (nxt == 0 or np.sign(nxt) == np.sign(x))
        x = nxt
    assert x == 0


def test_arithmetic_shift_would_stick_at_minus_one():
    """The trap the round-toward-zero rule avoids."""
    d = Decay(463, 9)
    assert (np.int64(-1) * d.M) >> d.K == -1
    assert fixed.decay_signed(np.int64(-1), d) == 0


@given(d=codes, y=st.integers(0, 65535), x=st.integers(0, 65535))
def test_lowpass_stays_between_input_and_state(d, y, x):
    r = int(fixed.lowpass(np.int64(y), np.int64(x), d))
    assert min(x, y) <= r <= max(x, y)


@given(d=codes, y=st.integers(-(1 << 19), (1 << 19) - 1), x=st.integers(-(1 << 19), (1 << 19) - 1))
def test_signed_lowpass_stays_between_input_and_state(d, y, x):
    r = int(fixed.lowpass_signed(np.int64(y), np.int64(x), d))
    assert min(x, y) <= r <= max(x, y)


@given(d=codes, y=st.integers(-(1 << 19), (1 << 19) - 1))
def test_lowpass_with_zero_input_reaches_zero(d, y):
    y = np.int64(y)
    for _ in range(200000):
        if y == 0:
            break
        y = fixed.lowpass_signed(y, 0, d)
    assert y == 0


@pytest.mark.parametrize("fmt", [Fmt(16, 12, False), Fmt(20, 10, True), Fmt(8, 8, False), Fmt(24, 14, True)])
def test_saturation_at_both_ends(fmt):
    big = np.array([fmt.min - 5, fmt.min, 0, fmt.max, fmt.max + 5], np.int64)
    assert list(fixed.sat(big, fmt)) == [fmt.min, fmt.min, 0, fmt.max, fmt.max]
    assert fmt.quantise(1e9) == fmt.max and fmt.quantise(-1e9) == fmt.min


def test_sigma_table_symmetric_and_monotone():
    from spikeloop.sim.golden import GoldenModel
    p = Params()
    table = p.sigma_table
    assert np.all(np.diff(table) <= 0), "σ' must not increase with |V − ϑ|"
    assert p.formats["sigma"].max >= table[0] > table[-1] >= 0
    # Symmetry about the threshold, through the model's own address path.
    g = GoldenModel(p)
    L = g.layers[0]
    d = np.arange(0, 40 * p.formats["u"].one, 37)
    sig = {}
    for sign in (1, -1):
        L.U[:] = 0
        vals = []
        for dv in d:
            L.I[:] = 0
            L.U[:] = p.threshold_q + sign * dv      # V = U when I = U: set I = U
            L.I[:] = L.U
            L.ref[:] = 0
            g.neuron_pass(L, np.zeros((1, 1), np.int64))
            vals.append(int(L.sigma[0, 0]))
        sig[sign] = vals
    assert sig[1] == sig[-1]


def test_decay_codes_realise_their_time_constants():
    p = Params()
    for name in ("mem", "syn", "rate", "q"):
        d = getattr(p, f"decay_{name}")
        exact = -1.0 / np.log(p.exact_factor(name))
        assert abs(d.tau() - exact) / exact <= 0.01

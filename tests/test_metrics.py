"""Tests for spikeloop.sim.metrics: van Rossum cost and spike matching."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeloop.sim.metrics import match_spikes, spike_steps, van_rossum


# ----------------------------------------------------------------------------- van_rossum

def _train(n_steps, steps, n_neurons=1, neuron=0):
    x = np.zeros((n_steps, n_neurons), bool)
    x[list(steps), neuron] = True
    return x


def test_van_rossum_zero_for_identical_trains():
    rng = np.random.default_rng(0)
    s = rng.random((200, 6)) < 0.05
    c = van_rossum(s, s.copy(), 1e-3)
    assert c.shape == (6,) and c.dtype == np.float64
    assert np.all(c == 0.0)


def test_van_rossum_positive_for_different_trains():
    a = _train(100, [10, 50])
    b = _train(100, [12, 50])
    assert van_rossum(a, b, 1e-3)[0] > 0
    assert van_rossum(a, np.zeros_like(a), 1e-3)[0] > 0


def test_van_rossum_single_spike_hand_computed():
    # One target spike at step 0, no output, 3 steps, dt = 1 ms, tau_mem = 10 ms, tau_syn = 5 ms.
    # r = dt/tau_mem = 0.1, q = exp(-dt/tau_syn) = exp(-0.2).
    # step 0: a = 1,   b0 = 0 + 0.1 * (1 - 0)            = 0.1;  then a = q
    # step 1: a = q,   b1 = b0 + 0.1 * (q - b0)          = 0.09 + 0.1 q;  then a = q^2
    # step 2: a = q^2, b2 = b1 + 0.1 * (q^2 - b1)        = 0.9 b1 + 0.1 q^2
    q = math.exp(-0.2)
    b0 = 0.1
    b1 = 0.09 + 0.1 * q
    b2 = 0.9 * b1 + 0.1 * q * q
    expected = 0.5 * (b0**2 + b1**2 + b2**2) * 1e-3
    got = van_rossum(np.zeros((3, 1), bool), _train(3, [0]), 1e-3)
    assert got.shape == (1,)
    assert got[0] == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(4.4349562e-05, rel=1e-7)   # the number itself


def test_van_rossum_single_spike_closed_form_long_trial():
    # b_t = r * sum_{s<=t} (1-r)^(t-s) q^s = r * ((1-r)^(t+1) - q^(t+1)) / ((1-r) - q)
    dt, tm, ts, T, t0 = 0.5e-3, 20e-3, 5e-3, 400, 37
    r, q = dt / tm, math.exp(-dt / ts)
    t = np.arange(T - t0)
    b = r * ((1 - r) ** (t + 1) - q ** (t + 1)) / ((1 - r) - q)
    expected = 0.5 * np.sum(b**2) * dt
    got = van_rossum(_train(T, [t0]), np.zeros((T, 1), bool), dt, tau_mem_s=tm, tau_syn_s=ts)
    assert got[0] == pytest.approx(expected, rel=1e-10)


def test_van_rossum_symmetric_and_per_neuron():
    T = 120
    out = np.zeros((T, 3), bool)
    tgt = np.zeros((T, 3), bool)
    out[20, 0] = True          # neuron 0: extra output spike
    tgt[20, 1] = True          # neuron 1: missed target spike (same cost by symmetry)
    c = van_rossum(out, tgt, 1e-3)
    assert c[0] == pytest.approx(c[1], rel=1e-15) and c[0] > 0
    assert c[2] == 0.0
    np.testing.assert_allclose(van_rossum(tgt, out, 1e-3), c, rtol=1e-15)


def test_van_rossum_accepts_int_counts():
    out = np.zeros((50, 1), np.int8)
    tgt = np.zeros((50, 1), np.int8)
    tgt[5, 0] = 2
    one = van_rossum(np.zeros((50, 1), bool), _train(50, [5]), 1e-3)
    np.testing.assert_allclose(van_rossum(out, tgt, 1e-3), 4 * one, rtol=1e-12)  # linear filter


def test_van_rossum_batch_matches_loop():
    rng = np.random.default_rng(5)
    out = rng.random((4, 80, 3)) < 0.05
    tgt = rng.random((4, 80, 3)) < 0.05
    c = van_rossum(out, tgt, 1e-3)
    assert c.shape == (4, 3)
    for k in range(4):
        np.testing.assert_allclose(c[k], van_rossum(out[k], tgt[k], 1e-3), rtol=1e-15)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(out=np.zeros(5, bool)), "out must be shaped"),
    (dict(target=np.zeros((6, 2), bool)), "must have the same shape"),
    (dict(out=np.zeros((5, 2))), "out must be a bool or integer array"),
    (dict(dt_s=0.0), "dt_s must be a positive finite number, not 0.0"),
    (dict(tau_mem_s=-1.0), "tau_mem_s must be a positive finite number, not -1.0"),
    (dict(tau_syn_s=float("inf")), "tau_syn_s must be a positive finite number"),
    (dict(dt_s=20e-3), "dt_s must be at most tau_mem_s"),
])
def test_van_rossum_validation(kwargs, fragment):
    args = dict(out=np.zeros((5, 2), bool), target=np.zeros((5, 2), bool), dt_s=1e-3) | kwargs
    with pytest.raises(ValueError, match=fragment):
        van_rossum(**args)


# ----------------------------------------------------------------------------- spike_steps

def test_spike_steps():
    s = spike_steps(np.array([0, 1, 0, 0, 1, 1], bool))
    assert s.dtype == np.int64 and s.tolist() == [1, 4, 5]
    assert spike_steps(np.zeros(4, bool)).tolist() == []
    with pytest.raises(ValueError, match="1-D"):
        spike_steps(np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="bool or integer"):
        spike_steps(np.zeros(3, float))


# ----------------------------------------------------------------------------- match_spikes

def _m(out, tgt, tol):
    r = match_spikes([out], [tgt], tol)
    return r["matched"], r["missed"], r["extra"], r["all_matched"]


def test_match_tolerance_edges():
    assert _m([10], [13], 3) == (1, 0, 0, True)     # exactly +tol
    assert _m([13], [10], 3) == (1, 0, 0, True)     # exactly -tol
    assert _m([10], [14], 3) == (0, 1, 1, False)    # tol + 1
    assert _m([14], [10], 3) == (0, 1, 1, False)
    assert _m([10], [10], 0) == (1, 0, 0, True)     # tol = 0 needs exact steps
    assert _m([10], [11], 0) == (0, 1, 1, False)


def test_match_empty():
    assert _m([], [], 2) == (0, 0, 0, True)
    assert _m([], [5, 9], 2) == (0, 2, 0, False)
    assert _m([5], [], 2) == (0, 0, 1, False)
    r = match_spikes([], [], 1)
    assert r["all_matched"] and r["matched"] == 0 and r["pairs"] == []


def test_match_one_to_one():
    # Two outputs near one target: only one can take it.
    assert _m([9, 11], [10], 1) == (1, 0, 1, False)
    # Two targets near one output: only one is matched.
    assert _m([10], [9, 11], 1) == (1, 1, 0, False)
    # Duplicate output steps can match two distinct targets.
    assert _m([10, 10], [9, 11], 1) == (2, 0, 0, True)


def test_match_greedy_is_maximum():
    # A "nearest target" rule would give output 1 the target 2 and strand output 0 or 3;
    # earliest-available assignment matches everything.
    assert _m([1, 3], [0, 2], 1) == (2, 0, 0, True)
    assert _m([0, 2], [1, 3], 1) == (2, 0, 0, True)
    assert _m([2, 1], [3, 0], 1) == (2, 0, 0, True)            # unsorted input is fine


def test_match_pairs_and_multi_neuron_totals():
    r = match_spikes([np.array([50, 152, 300]), [10]], [[50, 150, 250], np.array([], int)], 3)
    assert r["pairs"] == [[(50, 50), (152, 150)], []]
    assert (r["matched"], r["missed"], r["extra"], r["all_matched"]) == (2, 1, 2, False)


def test_match_with_spike_steps_from_dense():
    out = np.zeros((500, 1), bool)
    out[[49, 151, 250, 352, 448], 0] = True
    tgt = np.zeros((500, 1), bool)
    tgt[[50, 150, 250, 350, 450], 0] = True
    r = match_spikes([spike_steps(out[:, 0])], [spike_steps(tgt[:, 0])], 2)
    assert r["all_matched"] and r["matched"] == 5


@pytest.mark.parametrize("args, fragment", [
    (([[1]], [[1]], -1), "tol_steps must be a non-negative int, not -1"),
    (([[1]], [[1]], 1.0), "tol_steps must be a non-negative int, not 1.0"),
    (([[1]], [[1], [2]], 1), "one entry per neuron"),
    ((np.array([1, 2]), [[1]], 1), "one array per neuron"),
    (([[1.5]], [[1]], 1), "out_steps_list\\[0\\] must hold integer steps"),
    (([[1]], [[[1]]], 1), "target_steps_list\\[0\\] must be a 1-D array"),
])
def test_match_validation(args, fragment):
    with pytest.raises(ValueError, match=fragment):
        match_spikes(*args)


def _max_matching(outs, tgts, tol):
    """Reference: maximum bipartite matching by augmenting paths (Kuhn)."""
    owner = [-1] * len(tgts)

    def augment(i, seen):
        for j, t in enumerate(tgts):
            if abs(t - outs[i]) <= tol and not seen[j]:
                seen[j] = True
                if owner[j] < 0 or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return sum(augment(i, [False] * len(tgts)) for i in range(len(outs)))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 30), max_size=8), st.lists(st.integers(0, 30), max_size=8),
       st.integers(0, 4))
def test_match_count_equals_maximum_matching(outs, tgts, tol):
    r = match_spikes([outs], [tgts], tol)
    assert r["matched"] == _max_matching(outs, tgts, tol)
    assert r["missed"] == len(tgts) - r["matched"]
    assert r["extra"] == len(outs) - r["matched"]
    for o, t in r["pairs"][0]:
        assert abs(o - t) <= tol
    used_t = sorted(t for _, t in r["pairs"][0])
    assert all(used_t.count(t) <= tgts.count(t) for t in set(used_t))

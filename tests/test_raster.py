"""Tests for spikeloop.sim.raster: .ras I/O and dense conversion."""

import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeloop.sim.raster import from_dense, read_ras, read_ras_header, to_dense, write_ras


def _write(tmp_path, text, name="x.ras"):
    p = tmp_path / name
    p.write_text(text)
    return p


# ----------------------------------------------------------------------------- reading

def test_read_sorts_and_skips_comments_and_blanks(tmp_path):
    p = _write(tmp_path, "# header\n\n0.003 2\n  0.001\t5  \n# mid\n0.001 1\n\n0.002 0\n")
    t, i = read_ras(p)
    assert t.dtype == np.float64 and i.dtype == np.int64
    np.testing.assert_array_equal(t, [0.001, 0.001, 0.002, 0.003])
    np.testing.assert_array_equal(i, [1, 5, 0, 2])


def test_read_empty_and_comment_only(tmp_path):
    for text in ("", "# nothing\n\n"):
        t, i = read_ras(_write(tmp_path, text))
        assert t.shape == (0,) and i.shape == (0,)
        assert t.dtype == np.float64 and i.dtype == np.int64


def test_read_accepts_integral_float_ids_and_exponent_times(tmp_path):
    t, i = read_ras(_write(tmp_path, "1e-3 3.0\n"))
    assert t.tolist() == [0.001] and i.tolist() == [3]


@pytest.mark.parametrize("bad_line, fragment", [
    ("0.1", "2 fields"),
    ("0.1 2 3", "2 fields"),
    ("abc 2", "time must be a number"),
    ("0.1 x", "neuron_id must be an integer"),
    ("0.1 2.5", "neuron_id must be an integer"),
    ("0.1 -1", "non-negative"),
    ("-0.1 1", "non-negative"),
    ("nan 1", "finite"),
    ("inf 1", "finite"),
])
def test_read_malformed_names_file_and_line(tmp_path, bad_line, fragment):
    p = _write(tmp_path, f"# c\n0.0 1\n\n{bad_line}\n0.2 3\n", name="bad.ras")
    with pytest.raises(ValueError) as exc:
        read_ras(p)
    msg = str(exc.value)
    assert "line 4" in msg
    assert "bad.ras" in msg
    assert fragment in msg


# ----------------------------------------------------------------------------- writing

def test_write_format_and_comment(tmp_path):
    p = tmp_path / "w.ras"
    write_ras(p, [0.5, 0.0015], [7, 2], comment="made by test\nseed=3")
    assert p.read_text() == "# made by test\n# seed=3\n0.001500 2\n0.500000 7\n"


def test_write_empty(tmp_path):
    p = tmp_path / "e.ras"
    write_ras(p, [], [])
    t, i = read_ras(p)
    assert t.size == 0 and i.size == 0


@pytest.mark.parametrize("times, ids, fragment", [
    ([0.1, 0.2], [1], "same length"),
    ([[0.1]], [1], "1-D"),
    ([-0.1], [1], "non-negative"),
    ([np.nan], [1], "finite"),
    ([0.1], [-2], "non-negative"),
    ([0.1], [1.5], "integers"),
])
def test_write_rejects_bad_input(tmp_path, times, ids, fragment):
    with pytest.raises(ValueError, match=fragment):
        write_ras(tmp_path / "x.ras", times, ids)


def test_write_rejects_non_str_comment(tmp_path):
    with pytest.raises(ValueError, match="comment must be"):
        write_ras(tmp_path / "x.ras", [0.1], [1], comment=3)


spikes_us = st.lists(
    st.tuples(st.integers(0, 10**9), st.integers(0, 10**6)), max_size=40)


@settings(max_examples=60, deadline=None)
@given(spikes_us, st.one_of(st.none(), st.text(max_size=30)))
def test_ras_round_trip_exact_on_microsecond_grid(spikes, comment):
    times = np.array([us / 1e6 for us, _ in spikes], dtype=np.float64)
    ids = np.array([n for _, n in spikes], dtype=np.int64)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "rt.ras"
        write_ras(p, times, ids, comment=comment)
        t2, i2 = read_ras(p)
    assert sorted(zip(times.tolist(), ids.tolist())) == list(zip(t2.tolist(), i2.tolist()))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e3, allow_nan=False), st.integers(0, 1000)),
                max_size=30))
def test_ras_round_trip_arbitrary_times_within_half_microsecond(spikes):
    times = np.array([t for t, _ in spikes], dtype=np.float64)
    ids = np.array([n for _, n in spikes], dtype=np.int64)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "rt.ras"
        write_ras(p, times, ids)
        t2, i2 = read_ras(p)
    assert t2.shape == times.shape
    # Same multiset of ids, and times within 0.5 µs (+ float slack) of the originals.
    assert sorted(i2.tolist()) == sorted(ids.tolist())
    np.testing.assert_allclose(np.sort(t2), np.sort(times), rtol=0, atol=0.5e-6 + 1e-9)


# ----------------------------------------------------------------------------- dense

def test_to_dense_binning_and_collapse():
    dt = 1e-3
    t = [0.0, 0.0009999, 0.001, 0.0025, 0.0025, 0.0049]
    i = [0, 0, 1, 2, 2, 3]
    d = to_dense(t, i, n_neurons=4, n_steps=5, dt_s=dt)
    assert d.shape == (5, 4) and d.dtype == bool
    expected = np.zeros((5, 4), bool)
    expected[0, 0] = expected[1, 1] = expected[2, 2] = expected[4, 3] = True
    np.testing.assert_array_equal(d, expected)
    assert d.sum() == 4   # two spikes in one step of neuron 0 and of neuron 2 collapse


def test_to_dense_epsilon_keeps_decimal_multiples_in_their_step():
    # 0.003 / 0.001 = 2.9999999999999996 in float64; it must land in step 3.
    d = to_dense([0.003], [0], n_neurons=1, n_steps=5, dt_s=0.001)
    assert np.flatnonzero(d[:, 0]).tolist() == [3]


def test_to_dense_rejects_late_spikes_and_big_ids():
    with pytest.raises(ValueError, match="end of the trial"):
        to_dense([0.005], [0], n_neurons=1, n_steps=5, dt_s=1e-3)
    with pytest.raises(ValueError, match="end of the trial"):
        to_dense([0.0049999999999], [0], n_neurons=1, n_steps=5, dt_s=1e-3)
    with pytest.raises(ValueError, match="n_neurons=3"):
        to_dense([0.001], [3], n_neurons=3, n_steps=5, dt_s=1e-3)


@pytest.mark.parametrize("kw, fragment", [
    (dict(n_neurons=0), "n_neurons must be a positive int, not 0"),
    (dict(n_steps=2.0), "n_steps must be a positive int, not 2.0"),
    (dict(n_steps=True), "n_steps must be a positive int, not True"),
    (dict(dt_s=0.0), "dt_s must be a positive finite number, not 0.0"),
])
def test_to_dense_validates_sizes(kw, fragment):
    args = dict(n_neurons=2, n_steps=3, dt_s=1e-3) | kw
    with pytest.raises(ValueError, match=fragment):
        to_dense([], [], **args)


def test_from_dense_times_and_order():
    d = np.zeros((4, 3), bool)
    d[3, 0] = d[1, 2] = d[1, 0] = True
    t, i = from_dense(d, 0.5)
    np.testing.assert_array_equal(t, [0.5, 0.5, 1.5])
    np.testing.assert_array_equal(i, [0, 2, 0])
    assert t.dtype == np.float64 and i.dtype == np.int64


def test_from_dense_validates():
    with pytest.raises(ValueError, match="2-D"):
        from_dense(np.zeros(3, bool), 1e-3)
    with pytest.raises(ValueError, match="boolean"):
        from_dense(np.full((2, 2), 2), 1e-3)
    with pytest.raises(ValueError, match="boolean"):
        from_dense(np.zeros((2, 2), float), 1e-3)
    t, i = from_dense(np.eye(2, dtype=int), 1e-3)
    assert i.tolist() == [0, 1]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(1, 8), st.sampled_from([1e-4, 1e-3, 5e-4, 1e-2]),
       st.integers(0, 2**32 - 1))
def test_dense_round_trip(n_steps, n_neurons, dt, seed):
    rng = np.random.default_rng(seed)
    d = rng.random((n_steps, n_neurons)) < 0.2
    t, i = from_dense(d, dt)
    np.testing.assert_array_equal(to_dense(t, i, n_neurons, n_steps, dt), d)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 200), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_dense_round_trip_through_file(n_steps, n_neurons, seed):
    dt = 1e-3
    rng = np.random.default_rng(seed)
    d = rng.random((n_steps, n_neurons)) < 0.2
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "d.ras"
        write_ras(p, *from_dense(d, dt))
        t, i = read_ras(p)
    np.testing.assert_array_equal(to_dense(t, i, n_neurons, n_steps, dt), d)


def test_header_round_trip(tmp_path):
    p = tmp_path / "h.ras"
    write_ras(p, [0.5, 0.0015], [7, 2], comment="made by test", n_neurons=100, duration_s=3.5)
    assert p.read_text() == ("# made by test\n# neurons 100\n# duration_s 3.500000\n"
                             "0.001500 2\n0.500000 7\n")
    assert read_ras_header(p) == {"neurons": 100, "duration_s": 3.5}
    assert read_ras(p)[1].tolist() == [2, 7]
    write_ras(p, [0.1], [0], comment="neurons of the retina")     # a comment, not a header
    assert read_ras_header(p) == {}


@pytest.mark.parametrize("header, fragment", [
    ("# neurons 0", "'# neurons' must be a positive integer, not '0'"),
    ("# neurons 2.5", "'# neurons' must be a positive integer, not '2.5'"),
    ("# duration_s -1", "'# duration_s' must be a positive number, not '-1'"),
    ("# duration_s nan", "'# duration_s' must be a positive number, not 'nan'"),
])
def test_bad_header(tmp_path, header, fragment):
    p = tmp_path / "b.ras"
    p.write_text(f"{header}\n0.1 0\n")
    with pytest.raises(ValueError, match="line 1: " + re.escape(fragment)):
        read_ras_header(p)


@pytest.mark.parametrize("kw, fragment", [
    (dict(n_neurons=7), "ids must be below n_neurons=7, not 7"),
    (dict(duration_s=0.5), "spike times must be before duration_s=0.5, not 0.5"),
])
def test_write_refuses_spikes_outside_the_header(tmp_path, kw, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        write_ras(tmp_path / "x.ras", [0.5, 0.0015], [7, 2], **kw)

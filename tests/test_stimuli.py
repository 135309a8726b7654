"""Tests for spikeloop.sim.stimuli: seeded input and target spike trains."""

import re

import numpy as np
import pytest

from spikeloop.sim.stimuli import GLYPHS, equidistant_targets, fig2_task, frozen_poisson, text_raster


# ----------------------------------------------------------------------------- frozen_poisson

def test_poisson_shape_dtype():
    s = frozen_poisson(7, 11, 20.0, 1e-3, seed=1)
    assert s.shape == (11, 7) and s.dtype == bool


def test_poisson_same_seed_same_trains_different_seed_differs():
    a = frozen_poisson(50, 400, 20.0, 1e-3, seed=123)
    b = frozen_poisson(50, 400, 20.0, 1e-3, seed=123)
    c = frozen_poisson(50, 400, 20.0, 1e-3, seed=124)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_poisson_uses_default_rng():
    expected = np.random.default_rng(9).random((30, 4)) < 0.05
    np.testing.assert_array_equal(frozen_poisson(4, 30, 50.0, 1e-3, seed=9), expected)


@pytest.mark.parametrize("rate, dt", [(10.0, 1e-3), (200.0, 1e-3), (5.0, 1e-4)])
def test_poisson_rate_within_statistical_bounds(rate, dt):
    n_neurons, n_steps = 1000, 2000
    s = frozen_poisson(n_neurons, n_steps, rate, dt, seed=2024)
    p = rate * dt
    n = n_neurons * n_steps
    count = int(s.sum())
    sd = np.sqrt(n * p * (1 - p))
    assert abs(count - n * p) < 5 * sd
    assert s.sum(axis=1).max() <= n_neurons   # trivially at most one spike per step/neuron


def test_poisson_edge_rates():
    assert not frozen_poisson(3, 10, 0.0, 1e-3, seed=0).any()
    assert frozen_poisson(3, 10, 1000.0, 1e-3, seed=0).all()


@pytest.mark.parametrize("args, fragment", [
    ((0, 10, 10.0, 1e-3, 0), "n_neurons must be a positive int, not 0"),
    ((3, -1, 10.0, 1e-3, 0), "n_steps must be a positive int, not -1"),
    ((3, 10, -1.0, 1e-3, 0), "rate_hz must be a finite non-negative number, not -1.0"),
    ((3, 10, float("nan"), 1e-3, 0), "rate_hz must be"),
    ((3, 10, 10.0, 0, 0), "dt_s must be a finite positive number, not 0"),
    ((3, 10, 10.0, 1e-3, -5), "seed must be an int >= 0, not -5"),
    ((3, 10, 10.0, 1e-3, 1.5), "seed must be an int >= 0, not 1.5"),
    ((3, 10, 2000.0, 1e-3, 0), "rate_hz \\* dt_s must be at most 1"),
])
def test_poisson_validation(args, fragment):
    with pytest.raises(ValueError, match=fragment):
        frozen_poisson(*args)


# ----------------------------------------------------------------------------- equidistant

def test_equidistant_fig2_positions():
    t = equidistant_targets(500, 5)
    assert t.shape == (500, 1) and t.dtype == bool
    assert np.flatnonzero(t[:, 0]).tolist() == [50, 150, 250, 350, 450]


@pytest.mark.parametrize("n_steps, n_spikes", [(500, 5), (100, 3), (7, 7), (10, 4), (1, 1),
                                               (13, 1), (1000, 17), (9, 2)])
def test_equidistant_matches_formula(n_steps, n_spikes):
    t = equidistant_targets(n_steps, n_spikes, n_neurons=3)
    assert t.shape == (n_steps, 3)
    steps = np.flatnonzero(t[:, 0])
    assert len(steps) == n_spikes                          # distinct, all inside the trial
    x = (np.arange(n_spikes) + 0.5) * n_steps / n_spikes
    assert np.all(np.abs(steps - x) <= 0.5)               # nearest step (ties either way)
    # Where there is no tie, it is exactly Python's round.
    no_tie = np.abs(x - np.floor(x) - 0.5) > 1e-9
    assert steps[no_tie].tolist() == [round(v) for v in x[no_tie]]
    for n in range(1, 3):
        np.testing.assert_array_equal(t[:, n], t[:, 0])   # same train for every neuron


def test_equidistant_ties_round_down():
    # (k + 0.5) * 1 -> 0.5, 1.5, 2.5: half-down keeps them distinct and inside [0, 3).
    assert np.flatnonzero(equidistant_targets(3, 3)[:, 0]).tolist() == [0, 1, 2]
    # 9 steps, 2 spikes: x = 2.25, 6.75.
    assert np.flatnonzero(equidistant_targets(9, 2)[:, 0]).tolist() == [2, 7]


def test_equidistant_zero_spikes():
    assert not equidistant_targets(10, 0).any()


@pytest.mark.parametrize("args, fragment", [
    ((0, 1), "n_steps must be a positive int, not 0"),
    ((10, -1), "n_spikes must be an int >= 0, not -1"),
    ((10, 11), "n_spikes must be at most n_steps=10"),
    ((10, 2, 0), "n_neurons must be a positive int, not 0"),
])
def test_equidistant_validation(args, fragment):
    with pytest.raises(ValueError, match=fragment):
        equidistant_targets(*args)


# ----------------------------------------------------------------------------- fig2_task

def test_fig2_task_defaults():
    task = fig2_task(seed=7)
    assert set(task) == {"inputs", "targets", "dt_s", "seed"}
    assert task["inputs"].shape == (500, 100) and task["inputs"].dtype == bool
    assert task["targets"].shape == (500, 1) and task["targets"].dtype == bool
    assert task["dt_s"] == 1e-3 and task["seed"] == 7
    assert np.flatnonzero(task["targets"][:, 0]).tolist() == [50, 150, 250, 350, 450]
    np.testing.assert_array_equal(task["inputs"], frozen_poisson(100, 500, 10.0, 1e-3, 7))


def test_fig2_task_reproducible_and_seed_dependent():
    a, b, c = fig2_task(1), fig2_task(1), fig2_task(2)
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    assert not np.array_equal(a["inputs"], c["inputs"])
    np.testing.assert_array_equal(a["targets"], c["targets"])


def test_fig2_task_custom():
    task = fig2_task(3, n_in=20, duration_s=0.2, dt_s=0.5e-3, rate_hz=30.0, n_target_spikes=4)
    assert task["inputs"].shape == (400, 20)
    assert np.flatnonzero(task["targets"][:, 0]).tolist() == [50, 150, 250, 350]


def test_fig2_task_validation():
    with pytest.raises(ValueError, match="duration_s must be a positive whole number of steps"):
        fig2_task(0, duration_s=0.0105, dt_s=1e-3)
    with pytest.raises(ValueError, match="duration_s must be a finite positive number"):
        fig2_task(0, duration_s=-1.0)
    with pytest.raises(ValueError, match="seed must be"):
        fig2_task(None)


def test_text_raster_draws_the_glyphs():
    r = text_raster("LI", n_neurons=7, n_steps=11 * 4, period_steps=1)
    # one neuron per pixel row, four steps per pixel column, 5 + 1 + 5 columns
    cols = r[::4].T                                   # (rows, columns)
    drawn = tuple("".join("#" if v else "." for v in row) for row in cols)
    assert drawn == tuple(a + "." + b for a, b in zip(GLYPHS["L"], GLYPHS["I"]))


def test_text_raster_rate_and_seed():
    r = text_raster("SPIKE", seed=3)
    assert r.shape == (3500, 100) and r.dtype == bool
    isi = np.diff(np.flatnonzero(r[:, 0]))
    assert isi.min() >= 25                                    # never faster than the period
    assert (text_raster("SPIKE", seed=3) == r).all() and (text_raster("SPIKE", seed=4) != r).any()


@pytest.mark.parametrize("kw, fragment", [
    (dict(text=""), "text must be a non-empty string of the letters A-Z and spaces, not ''"),
    (dict(text="A1"), "not 'A1'"),
    (dict(text="A", n_neurons=6), "n_neurons"),
    (dict(text="A", period_steps=0), "period_steps"),
])
def test_text_raster_refuses(kw, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        text_raster(**kw)

"""The small network and random stimulus that the board and virtual-board tests share."""

import numpy as np

from spikeloop.hdl.config import SoCConfig
from spikeloop.params import Params


def net(**kw):
    """20 inputs × 5 outputs, chunk ends every 40 steps, weights large enough to spike."""
    base = dict(n_in=20, n_out=5, chunk_steps=40, w_init_mean_mv=2.0, w_init_std_mv=3.0)
    base.update(kw)
    return Params(**base)


def stimulus(p, T, seed=1):
    """``T`` steps of 20 % input and 5 % target spikes."""
    rng = np.random.default_rng(seed)
    return rng.random((T, p.n_in)) < 0.2, rng.random((T, p.n_out)) < 0.05


def vboard(p=None, lanes=1, *, max_steps=0, **link):
    """A fresh VirtualBoard of ``net()`` (or ``p``) with ``lanes`` and the link settings ``link``."""
    from spikeloop.host.virtual_board import VirtualBoard
    return VirtualBoard(SoCConfig.build(p or net(), lanes, **link), max_steps=max_steps)

"""SynapseUnit and ChunkUnit against the golden model, bit for bit, under cocotb + Verilator.

Expected values come from the golden model itself: a batch of networks is loaded with random
per-synapse words (``w, el, el_flt, m, q``), per-row values (``σ', e, racc``) and per-column values
(``ẑ, x``), then ``GoldenModel.learn_pass`` / ``chunk_end_pass`` runs once and its arrays are read
back. Each synapse of the batch is one test vector (25 networks × 20 rows × 10 columns = 5000),
streamed into the unit with about 30 % bubbles by ``tests/cocotb_synapse.py``. ``ChunkUnit``'s
iterative divider (``interval`` = k) gets the same vectors at least k cycles apart (random bubbles
on top), so vectors arrive both exactly k apart and further.

Values are drawn from a mixture that puts weight on the format ends (exact min/max, a few LSBs
from them), on small and log-uniform magnitudes and on uniform values, and the first rows and
columns hold the exact extremes of ``σ', e, ẑ, racc``; :func:`_coverage` checks that the cases that
matter (saturation at both ends of ``el``/``m``/``w``, ``q = 0``, ``m = 0``, ``m = min``...) occur.
"""

from __future__ import annotations

import gc
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Module, Shape, UnusedElaboratable
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from spikeloop.hdl.chunk import RACC_BITS, ChunkUnit, RegCoef
from spikeloop.hdl.synapse import SynapseUnit
from spikeloop.params import Fmt, Kernel, Optimiser, Params
from spikeloop.sim.golden import GoldenModel
from spikeloop.sim.rtl_runner import CocotbTestFailure, build_and_test, default_build_dir

HERE = Path(__file__).parent
COCOTB = HERE / "cocotb_synapse.py"
BUILD = default_build_dir()      # Verilator builds cached across runs

BATCH, N_POST, N_PRE = 25, 20, 10          # 5000 synapses per parameter set
BUBBLE = 0.3

ODD = {"el": Fmt(12, 8, False), "elf": Fmt(12, 8, False), "m": Fmt(20, 10, True),
       "q": Fmt(20, 10, False), "err": Fmt(14, 10, True)}

SYNAPSE_SETS = {
    "double_exp": dict(kernel="double_exp"),
    "single_exp": dict(kernel="single_exp"),
    "factorised": dict(kernel="factorised"),
    "odd": dict(kernel="double_exp", formats=ODD, ratio_bits=6),
    # elf narrower than el (the model's extra clamp), other decay codes, random feedback (b·e).
    "narrow_elf": dict(kernel="double_exp", feedback="random", formats={"elf": Fmt(14, 12, False)},
                       decay_codes={"mem": [15, 4], "syn": [3, 2]}),
}

CHUNK_SETS = {
    "rmaxprop": dict(optimiser="rmaxprop"),
    "fixed": dict(optimiser="fixed"),
    # q narrower than m (a = min(|m|, q_max) clamps), a larger ε, the regulariser, a lowered r0.
    "rmaxprop_reg": dict(optimiser="rmaxprop", n_hidden=N_POST, regulariser=True, eps=0.05,
                         formats={"q": Fmt(23, 14, False)}, r0_q=37),
    "odd": dict(optimiser="rmaxprop", formats=ODD, ratio_bits=6, r0_q="w_max"),
    "fixed_reg": dict(optimiser="fixed", lr_shift=0, n_hidden=N_POST, regulariser=True, rho=0.25,
                      formats={"q": Fmt(23, 14, False)}),
}

# ChunkUnit(interval=k), a few CHUNK_SETS (each new k is a Verilator build): the defaults at
# k = 2, 3, 4 (4 bits × 2 cycles; 3 bits × 3, where the ninth quotient bit is computed and
# dropped; 2 bits × 4); "odd" (R = 6) at k = 2 (3 bits × 2) and k = 4 (2 bits × 3 cycles, fewer
# than k, so the block idles between synapses); the regulariser with a narrower q (a narrower
# divider); the fixed rate, which accepts k and builds the same Verilog as k = 1.
CHUNK_INTERVALS = [("rmaxprop", 2), ("rmaxprop", 3), ("rmaxprop", 4), ("odd", 2), ("odd", 4),
                   ("rmaxprop_reg", 4), ("fixed_reg", 4)]


# ------------------------------------------------------------------ value generation
def _mix(rng, lo: int, hi: int, shape) -> np.ndarray:
    """Integers in ``[lo, hi]`` weighted towards the interesting places (see module doc)."""
    kind = rng.random(shape)
    uni = rng.integers(lo, hi, shape, endpoint=True)
    ends = np.where(rng.random(shape) < 0.5, lo, hi)
    off = rng.integers(0, 8, shape)
    near = np.where(rng.random(shape) < 0.5, lo + off, hi - off)
    small = rng.integers(-8, 9, shape)
    bits = max(1, int(max(abs(lo), abs(hi))).bit_length())
    mag = np.floor(2.0 ** rng.uniform(0, bits, shape)).astype(np.int64)
    logu = np.where((rng.random(shape) < 0.5) & (lo < 0), -mag, mag)
    out = np.select([kind < 0.1, kind < 0.2, kind < 0.3, kind < 0.55], [ends, near, small, logu], uni)
    return np.clip(out, lo, hi).astype(np.int64)


def _fmt_mix(rng, fmt: Fmt, shape) -> np.ndarray:
    return _mix(rng, fmt.min, fmt.max, shape)


def _with_extremes(arr: np.ndarray, values) -> np.ndarray:
    """Put ``values`` into the first entries along the last axis of every batch member 0 .. k."""
    flat = arr.reshape(-1, arr.shape[-1])
    for k, v in enumerate(values):
        flat[k % flat.shape[0], k // flat.shape[0] % flat.shape[1]] = v
    return arr


def _params(cfg: dict) -> Params:
    cfg = dict(cfg)
    n_hidden = cfg.pop("n_hidden", 0)
    cfg.pop("r0_q", None)
    if n_hidden:        # the hidden layer (layer 0) is the one under test: n_in → N_POST
        return Params(n_in=N_PRE, n_hidden=n_hidden, n_out=1, **cfg)
    return Params(n_in=N_PRE, n_out=N_POST, **cfg)


def _signature_info(unit):
    signed, widths = {}, {}
    for name, member in unit.signature.members.items():
        shape = Shape.cast(member.shape)
        signed[name] = shape.signed
        widths[name] = shape.width
    return signed, widths


# ------------------------------------------------------------------ synapse vectors
def synapse_vectors(p: Params, unit: SynapseUnit, seed: int):
    """Inputs and golden outputs of ``learn_pass`` for BATCH × N_POST × N_PRE synapses."""
    F = p.formats
    rng = np.random.default_rng(seed)
    model = GoldenModel(p, seeds=range(BATCH))
    L = model.layers[0]
    shape = (BATCH, N_POST, N_PRE)
    sigma = _with_extremes(_fmt_mix(rng, F["sigma"], (BATCH, N_POST)), [0, F["sigma"].max, 1])
    e = _with_extremes(_fmt_mix(rng, F["err"], (BATCH, N_POST)),
                       [F["err"].min, F["err"].max, 0, -1, 1, F["err"].min + 1])
    zh = _with_extremes(_fmt_mix(rng, F["zh"], (BATCH, N_PRE)), [0, F["zh"].max, 1])
    x = rng.random((BATCH, N_PRE)) < 0.5
    w = _fmt_mix(rng, F["w"], shape)
    m = _fmt_mix(rng, F["m"], shape)
    ins = {"w": w, "m": m, "sigma": np.broadcast_to(sigma[:, :, None], shape),
           "e": np.broadcast_to(e[:, :, None], shape), "zh": np.broadcast_to(zh[:, None, :], shape),
           "x": np.broadcast_to(x[:, None, :], shape).astype(np.int64)}
    L.w[:] = w
    L.m[:] = m
    L.sigma[:] = sigma
    L.e[:] = e
    L.zh[:] = zh
    if p.kernel is not Kernel.FACTORISED:
        ins["el"] = _fmt_mix(rng, F["el"], shape)
        L.el[:] = ins["el"]
    if p.kernel is Kernel.DOUBLE_EXP:
        ins["elf"] = _fmt_mix(rng, F["elf"], shape)
        L.elf[:] = ins["elf"]
    model.learn_pass(L)

    outs = {"w_out": w, "m_next": L.m, "drive": np.where(ins["x"] != 0, w, 0)}
    if p.kernel is not Kernel.FACTORISED:
        outs["el_next"] = L.el
    if p.kernel is Kernel.DOUBLE_EXP:
        outs["elf_next"] = L.elf
    if unit.feedback:
        if unit.fb_source == "b":
            ins["b"] = _fmt_mix(rng, F["fb"], shape)
            outs["fb"] = ins["b"] * ins["e"]
        else:
            outs["fb"] = w * ins["e"]
    flat = lambda a: np.ascontiguousarray(a, dtype=np.int64).reshape(-1)  # noqa: E731
    return {k: flat(v) for k, v in ins.items()}, {k: flat(v) for k, v in outs.items()}


def _synapse_coverage(p: Params, ins, outs):
    F = p.formats
    cov = {
        "m saturates high": np.sum(outs["m_next"] == F["m"].max),
        "m saturates low": np.sum(outs["m_next"] == F["m"].min),
        "e = min": np.sum(ins["e"] == F["err"].min),
        "e = max": np.sum(ins["e"] == F["err"].max),
        "m = 0 in": np.sum(ins["m"] == 0),
        "x = 1": np.sum(ins["x"] == 1),
    }
    if "el" in ins:
        inc = (ins["zh"] * ins["sigma"]) >> p.el_shift
        cov["el saturates"] = np.sum(ins["el"] + inc > F["el"].max)
    if "elf" in ins and F["elf"].max < F["el"].max:
        cov["el_flt clamps"] = np.sum((outs["elf_next"] == F["elf"].max) & (ins["elf"] < F["elf"].max))
    return cov


# ------------------------------------------------------------------ chunk vectors
class ChunkWithRegCoef(wiring.Component):
    """Test top: :class:`RegCoef` feeding :class:`ChunkUnit`, so ``racc`` (what the golden model
    holds) is the input and both units are checked; the other inputs are delayed to match."""

    def __init__(self, params: Params, interval: int = 1):
        self.unit = ChunkUnit(params, interval)
        self.coef = RegCoef(params)
        self.latency = self.unit.latency + RegCoef.latency
        members = {k: v for k, v in self.unit.signature.members.items() if k != "c"}
        members["racc"] = In(RACC_BITS)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit, m.submodules.coef = u, c = self.unit, self.coef
        m.d.comb += [c.racc.eq(self.racc), u.c.eq(c.c)]
        for name, member in u.signature.members.items():
            if name == "c":
                continue
            if member.flow is wiring.In:
                if name == "r0":
                    m.d.comb += u.r0.eq(self.r0)
                else:
                    m.d.sync += getattr(u, name).eq(getattr(self, name))
            else:
                m.d.comb += getattr(self, name).eq(getattr(u, name))
        return m


def chunk_vectors(p: Params, r0: int, seed: int):
    """Inputs and golden outputs of ``chunk_end_pass`` for BATCH × N_POST × N_PRE synapses."""
    F = p.formats
    rng = np.random.default_rng(seed)
    model = GoldenModel(p, seeds=range(BATCH))
    model.r0_q = r0
    L = model.layers[0]
    shape = (BATCH, N_POST, N_PRE)
    # Mostly inside ±w_max (where stored weights live, so Δw shows), some anywhere in the format.
    w = np.where(rng.random(shape) < 0.7, _mix(rng, -p.w_max_q, p.w_max_q, shape),
                 _fmt_mix(rng, F["w"], shape))
    m = _fmt_mix(rng, F["m"], shape)
    _with_extremes(m, [0, F["m"].min, F["m"].max, -1, 1])
    L.w[:] = w
    L.w_f[:] = w
    L.m[:] = m
    ins = {"w": w, "m": m}
    if p.optimiser is Optimiser.RMAXPROP:
        q = _fmt_mix(rng, F["q"], shape)
        # A third of q near |m| (ratios close to 2^R, q decaying just above or below |m|).
        near = np.clip(np.abs(m) + rng.integers(-40, 41, shape), 0, F["q"].max)
        q = np.where(rng.random(shape) < 0.33, near, q)
        _with_extremes(q, [0, 0, F["q"].max, 0, 1])
        L.q[:] = q
        ins["q"] = q
    if p.regulariser:
        one, rho = p.formats["rate"].one, p.rho_q
        T = -(-(one << 16) // rho)
        racc = _mix(rng, 0, (1 << RACC_BITS) - 1, (BATCH, N_POST))
        around = np.clip(T + rng.integers(-3, 4, (BATCH, N_POST)), 0, None)
        below = rng.integers(0, T, (BATCH, N_POST))
        pick = rng.random((BATCH, N_POST))
        racc = np.where(pick < 0.2, around, np.where(pick < 0.6, below, racc))
        _with_extremes(racc, [0, T - 1, T, (1 << RACC_BITS) - 1, 1])
        L.racc[:] = racc
        ins["racc"] = np.broadcast_to(racc[:, :, None], shape)
    model.chunk_end_pass(L)
    outs = {"w_next": L.w, "m_next": L.m}
    if p.optimiser is Optimiser.RMAXPROP:
        outs["q_next"] = L.q
    flat = lambda a: np.ascontiguousarray(a, dtype=np.int64).reshape(-1)  # noqa: E731
    return {k: flat(v) for k, v in ins.items()}, {k: flat(v) for k, v in outs.items()}


def _chunk_coverage(p: Params, ins, outs):
    F = p.formats
    cov = {
        "w clips high": np.sum(outs["w_next"] == p.w_max_q),
        "w clips low": np.sum(outs["w_next"] == -p.w_max_q),
        "m = 0": np.sum(ins["m"] == 0),
        "m = min": np.sum(ins["m"] == F["m"].min),
        "w moved, not clipped": np.sum((outs["w_next"] != ins["w"]) & (np.abs(outs["w_next"]) < p.w_max_q)),
    }
    if "q" in ins:
        cov["q = 0"] = np.sum(ins["q"] == 0)
        cov["q grows to |m|"] = np.sum(outs["q_next"] > ins["q"])
        cov["q decays"] = np.sum(outs["q_next"] < ins["q"])
    return cov


# ------------------------------------------------------------------ running
def _run(unit, toplevel, ins, outs, tmp_path, name, static=None, seed=1, latency=None, interval=1):
    signed, widths = _signature_info(unit)
    path = tmp_path / f"{name}.npz"
    np.savez(path, **{f"in_{k}": v for k, v in ins.items()}, **{f"out_{k}": v for k, v in outs.items()})
    return build_and_test(unit, toplevel, COCOTB, build_dir=BUILD, params={
        "vectors": str(path), "signed": signed, "widths": widths, "static": static or {},
        "latency": unit.latency if latency is None else latency, "bubble": BUBBLE, "seed": seed,
        "interval": interval})


def _synapse_case(name):
    p = _params(SYNAPSE_SETS[name])
    unit = SynapseUnit(p, feedback=True)
    ins, outs = synapse_vectors(p, unit, seed=sorted(SYNAPSE_SETS).index(name) + 11)
    return p, unit, ins, outs


def _chunk_case(name, interval=1):
    cfg = CHUNK_SETS[name]
    p = _params(cfg)
    r0 = cfg.get("r0_q", p.r0_q)
    r0 = p.w_max_q if r0 == "w_max" else r0
    unit = ChunkWithRegCoef(p, interval) if p.regulariser else ChunkUnit(p, interval)
    ins, outs = chunk_vectors(p, r0, seed=sorted(CHUNK_SETS).index(name) + 101)
    static = {"r0": r0} if p.optimiser is Optimiser.RMAXPROP else {}
    return p, unit, ins, outs, static


@pytest.mark.parametrize("name", list(SYNAPSE_SETS))
def test_synapse_unit_matches_golden(name, tmp_path):
    p, unit, ins, outs = _synapse_case(name)
    cov = _synapse_coverage(p, ins, outs)
    missing = [k for k, v in cov.items() if v == 0]
    assert not missing, f"vectors do not cover: {missing}"
    _run(unit, "synapse_unit", ins, outs, tmp_path, name)


@pytest.mark.parametrize("name", list(CHUNK_SETS))
def test_chunk_unit_matches_golden(name, tmp_path):
    p, unit, ins, outs, static = _chunk_case(name)
    cov = _chunk_coverage(p, ins, outs)
    missing = [k for k, v in cov.items() if v == 0]
    assert not missing, f"vectors do not cover: {missing}"
    _run(unit, "chunk_unit", ins, outs, tmp_path, name, static=static)


@pytest.mark.parametrize("name,interval", CHUNK_INTERVALS,
                         ids=[f"{n}-k{k}" for n, k in CHUNK_INTERVALS])
def test_chunk_unit_interval_matches_golden(name, interval, tmp_path):
    """The iterative divider: same vectors and results as ``interval`` = 1, fed ≥ interval apart."""
    p, unit, ins, outs, static = _chunk_case(name, interval)
    _run(unit, "chunk_unit", ins, outs, tmp_path, f"{name}_k{interval}", static=static,
         seed=interval, interval=interval)


def _truncate(d, n):
    return {k: v[:n] for k, v in d.items()}


def test_synapse_mismatch_is_reported(tmp_path):
    """The check can fail: one corrupted golden value is found and reported precisely."""
    p, unit, ins, outs = _synapse_case("double_exp")
    ins, outs = _truncate(ins, 400), _truncate(outs, 400)
    outs["m_next"] = outs["m_next"].copy()
    outs["m_next"][321] += 1
    with pytest.raises(CocotbTestFailure, match=r"vector 321: field m_next: rtl=-?\d+, golden=-?\d+"):
        _run(unit, "synapse_unit", ins, outs, tmp_path, "corrupt")


def test_chunk_mismatch_and_latency_are_reported(tmp_path):
    p, unit, ins, outs, static = _chunk_case("rmaxprop")
    ins, outs = _truncate(ins, 300), _truncate(outs, 300)
    bad = {k: v.copy() for k, v in outs.items()}
    bad["q_next"][123] ^= 4
    with pytest.raises(CocotbTestFailure, match=r"vector 123: field q_next"):
        _run(unit, "chunk_unit", ins, bad, tmp_path, "corrupt", static=static)
    with pytest.raises(CocotbTestFailure, match=r"vector 0: result after \d+ cycles, expected latency"):
        _run(unit, "chunk_unit", ins, outs, tmp_path, "latency", static=static, latency=unit.latency + 1)


def _built(unit):
    """``unit`` for an inspection-only test (tells Amaranth it is not a forgotten elaboratable)."""
    unit._MustUse__silence = True
    return unit


def test_latency_attributes():
    p = Params()
    assert _built(SynapseUnit(p)).latency == 5
    assert _built(SynapseUnit(p.replace(kernel="single_exp"))).latency == 4
    assert _built(ChunkUnit(p)).latency == p.ratio_bits + 4
    assert _built(ChunkUnit(p.replace(optimiser="fixed"))).latency == 3
    # Iterative divider: ⌈R / ⌈R/k⌉⌉ cycles + 4 (R = 8: 4 bits × 2, 3 bits × 3, 2 bits × 4, ...).
    for k, lat in {1: 12, 2: 6, 3: 7, 4: 8, 5: 8, 7: 8, 8: 12, 100: 12}.items():
        assert _built(ChunkUnit(p, interval=k)).latency == lat, k
    assert _built(ChunkUnit(p.replace(ratio_bits=6), interval=4)).latency == 7     # 2 bits × 3
    assert _built(ChunkUnit(p.replace(optimiser="fixed"), interval=4)).latency == 3
    members = lambda **kw: _built(SynapseUnit(p.replace(**kw))).signature.members  # noqa: E731
    assert "fb" not in members()                          # no hidden layer: no product
    assert "fb" in members(n_hidden=4) and "b" not in members(n_hidden=4)
    assert "b" in members(n_hidden=4, feedback="random")
    assert "fb" not in members(n_hidden=4, feedback="uniform")
    assert "el" not in members(kernel="factorised") and "elf" not in members(kernel="single_exp")


@pytest.mark.parametrize("interval", [0, -2, 2.0, True, "4", None])
def test_chunk_interval_is_validated(interval):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)   # the refused, half-built unit
        with pytest.raises(ValueError, match=r"^ChunkUnit: interval must be an integer >= 1, not "
                                             + re.escape(repr(interval)) + "$"):
            ChunkUnit(Params(), interval=interval)
        gc.collect()

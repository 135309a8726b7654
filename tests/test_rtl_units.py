# amaranth: UnusedElaboratable=no
"""NeuronUnit, PreTraceUnit and ErrorFilterUnit against the golden model, bit for bit.

For each unit and parameter set, ``N_VECTORS`` random input vectors (with the format extremes,
potentials around the threshold, every interesting refractory count, large drives...) are pushed
through the golden model itself (a ``GoldenModel`` whose layer holds the vectors as its neurons
or inputs) and through the gateware under cocotb + Verilator with ~30 % bubbles; every output
field of every vector must agree. The arithmetic helpers of ``hdl/arith.py`` are also checked
directly against ``sim/fixed.py`` in Amaranth's simulator.
"""
# (the first line: some units are built here only to read their widths and latencies)

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from spikeloop.hdl import arith
from spikeloop.hdl.errorfilter import ErrorFilterUnit
from spikeloop.hdl.layouts import (neuron_layout, pack, pretrace_layout, q_layout, ref_bits,
                                   synapse_layout, unpack)
from spikeloop.hdl.neuron import RACC_BITS, NeuronUnit
from spikeloop.hdl.pretrace import PreTraceUnit
from spikeloop.params import Decay, Fmt, Params
from spikeloop.sim import fixed
from spikeloop.sim.golden import GoldenModel
from spikeloop.sim.rtl_runner import CocotbTestFailure, build_and_test, default_build_dir

HERE = Path(__file__).parent
TEST_MODULE = HERE / "cocotb_units.py"
BUILD_DIR = default_build_dir()      # Verilator builds cached across runs
N_VECTORS = 5000
BUBBLE = 0.3

PARAM_SETS = {
    "default": {},
    # Odd widths and fractions, other time constants, a short refractory period.
    "odd": dict(
        formats={"u": [18, 9, True], "i": [18, 9, True], "w": [14, 9, True],
                 "z": [12, 10, False], "zh": [12, 10, False], "err": [14, 11, True]},
        threshold_mv=5.0, sigma_addr_bits=5, sigma_shift=7, tau_ref_ms=3.0,
        tau_mem_ms=20.0, tau_syn_ms=3.0, n_in=37),
    # Regulariser with a = 3, a wider rate word, no refractory period, short decay codes, an
    # 'i' wider than 'u' (so V = sat_u(...) clamps).
    "reg3": dict(
        n_in=20, n_hidden=50, regulariser=True, reg_exponent=3, tau_ref_ms=0.0,
        formats={"rate": [20, 12, False], "i": [22, 10, True]},
        decay_codes={"mem": [7, 3], "syn": [3, 2], "rate": [255, 8]}),
    # Regulariser with a = 8: the 2^40 cap on rate^a is reached; beta and shift changed.
    "reg8": dict(
        n_in=300, n_hidden=8, regulariser=True, reg_exponent=8, beta_per_mv=0.5,
        sigma_shift=9, sigma_addr_bits=4, tau_ref_ms=7.0),
}


def params_for(name: str) -> Params:
    return Params(**PARAM_SETS[name])


# ------------------------------------------------------------------------------ vector generation
def _mix(rng, n, parts):
    """``n`` values drawn from ``parts`` = [(weight, sampler(k) -> array)], shuffled."""
    w = np.array([p[0] for p in parts], float)
    counts = rng.multinomial(n, w / w.sum())
    out = np.concatenate([np.asarray(f(c), np.int64) for (_, f), c in zip(parts, counts)])
    return out[rng.permutation(n)]


def _full(rng, lo, hi):
    return lambda k: rng.integers(lo, hi + 1, k)


def _pick(rng, values):
    values = np.asarray(sorted(set(int(v) for v in values)), np.int64)
    return lambda k: rng.choice(values, k)


def _fmt_values(rng, f: Fmt, n, extra=()):
    edge = [f.min, f.max, 0, 1, f.one, f.max - 1, f.min + 1, *extra]
    if f.signed:
        edge += [-1, -f.one]
    edge = [v for v in edge if f.min <= v <= f.max]
    return _mix(rng, n, [(0.7, _full(rng, f.min, f.max)), (0.2, _pick(rng, edge)),
                         (0.1, _full(rng, 0, min(f.max, 4 * f.one)))])


def neuron_vectors(p: Params, unit: NeuronUnit, n: int, seed: int):
    """Inputs for NeuronUnit and the golden model's outputs for them."""
    rng = np.random.default_rng(seed)
    F = p.formats
    fu, fi, fr = F["u"], F["i"], F["rate"]
    th = p.threshold_q
    near = ((1 << p.sigma_addr_bits) + 2) << p.sigma_shift  # every σ' ROM bin on both sides
    kind = rng.choice(4, n, p=[0.35, 0.35, 0.15, 0.15])
    U = _fmt_values(rng, fu, n, extra=[th, th + 1, th - 1])
    I = _fmt_values(rng, fi, n, extra=[th, th + 1, th - 1])
    # kind 1: U and I both close to ϑ, so V lands around the threshold.
    d = rng.integers(-near, near + 1, (2, n))
    U = np.where(kind == 1, np.clip(th + d[0], fu.min, fu.max), U)
    I = np.where(kind == 1, np.clip(th + d[1], fi.min, fi.max), I)
    # kind 2: U = I, so V = U exactly (V = ϑ, ϑ ± 1, ... included).
    e = rng.integers(-3, 4, n)
    U = np.where(kind == 2, th + e, U)
    I = np.where(kind == 2, U, I)
    rmax = (1 << unit.ref_bits) - 1
    R = p.refractory_steps
    ref = _mix(rng, n, [(0.5, lambda k: np.zeros(k)), (0.3, _pick(rng, [1, R, rmax, max(R - 1, 0)])),
                        (0.2, _full(rng, 0, rmax))])
    dmax = (1 << (unit.drive_bits - 1)) - 1
    wmax = F["w"].max
    drive = _mix(rng, n, [(0.2, lambda k: np.zeros(k)), (0.4, _full(rng, -4 * wmax, 4 * wmax)),
                          (0.3, _full(rng, -dmax - 1, dmax)),
                          (0.1, _pick(rng, [-dmax - 1, dmax, -dmax, dmax - 1, fi.max, fi.min]))])
    rate = _fmt_values(rng, fr, n)
    amax = (1 << RACC_BITS) - 1
    racc = _mix(rng, n, [(0.5, _full(rng, 0, amax)), (0.2, lambda k: np.zeros(k)),
                         (0.3, lambda k: amax - rng.integers(0, 1 << 42, k))])
    use_rate = (rng.random(n) < 0.8).astype(np.int64)

    # The golden model, with the vectors as the neurons of its first layer.
    if p.regulariser:   # regulariser updates act on the hidden layer only
        gp = p.replace(n_in=1, n_hidden=n, n_out=1)
    else:
        gp = p.replace(n_in=1, n_hidden=0, n_out=n)
    g = GoldenModel(gp, seeds=0)
    L = g.layers[0]
    L.U[0], L.I[0], L.ref[0] = U, I, ref
    if p.regulariser:
        L.rate[0], L.racc[0] = rate, racc
    g.neuron_pass(L, drive[None, :].copy())
    # V is local to neuron_pass: recompute it with the same primitives, then tie it to the model.
    V = fixed.sat(fixed.lowpass_signed(U, I, p.decay_mem), fu)
    V = np.where(ref > 0, 0, V)
    S = L.S[0].astype(np.int64)
    assert np.array_equal(S, ((V > th) & (ref == 0)).astype(np.int64))
    assert np.array_equal(L.U[0][S == 0], V[S == 0])
    if p.regulariser:
        rate_next = np.where(use_rate == 1, L.rate[0], rate)
        racc_next = np.where(use_rate == 1, L.racc[0], racc)
    else:
        rate_next, racc_next = rate, racc
    inputs = dict(U=U, I=I, ref=ref, drive=drive, use_rate=use_rate, rate=rate, racc=racc)
    outputs = dict(V=V, S=S, U_next=L.U[0], ref_next=L.ref[0], sigma=L.sigma[0], I_next=L.I[0],
                   rate_next=rate_next, racc_next=racc_next)
    # Coverage of what the vectors were chosen for.
    assert S.sum() > n // 20 and (V == th).any() and (V == th + 1).any()
    assert outputs["ref_next"].max() >= R and (outputs["ref_next"] == 0).any()
    assert set(outputs["sigma"].tolist()) == set(p.sigma_table.tolist())
    assert (outputs["I_next"] == fi.max).any() and (outputs["I_next"] == fi.min).any()
    if p.regulariser:
        assert (racc_next == amax).any()
    return inputs, outputs, ["V", "U_next", "I_next"]


def pretrace_vectors(p: Params, unit: PreTraceUnit, n: int, seed: int):
    rng = np.random.default_rng(seed)
    F = p.formats
    z = _fmt_values(rng, F["z"], n, extra=[F["z"].max - F["z"].one, F["z"].max - F["z"].one + 1])
    zh = _fmt_values(rng, F["zh"], n)
    x = (rng.random(n) < 0.5).astype(np.int64)
    g = GoldenModel(p.replace(n_in=n, n_hidden=0, n_out=1, regulariser=False), seeds=0)
    L = g.layers[0]
    L.z[0], L.zh[0] = z, zh
    g.pre_trace_pass(L, x[None, :].astype(bool))
    return dict(z=z, zh=zh, x=x), dict(z_next=L.z[0], zh_next=L.zh[0]), []


def errorfilter_vectors(p: Params, unit: ErrorFilterUnit, n: int, seed: int):
    rng = np.random.default_rng(seed)
    fe = p.formats["err"]
    e1 = _fmt_values(rng, fe, n)
    e2 = _fmt_values(rng, fe, n)
    target = rng.integers(0, 2, n)
    spike = rng.integers(0, 2, n)
    # One step of a model whose output neurons spike exactly where `spike` says: U = I = 2ϑ
    # (V = U, above threshold) or 0, no input spikes, so no drive.
    gp = p.replace(n_in=1, n_hidden=0, n_out=n, regulariser=False, error_source="target")
    g = GoldenModel(gp, seeds=0, weights=[np.zeros((1, n, 1), np.int64)])
    out = g.layers[-1]
    out.U[0] = out.I[0] = np.where(spike == 1, 2 * p.threshold_q, 0)
    out.ref[0] = 0
    g.e1[0], g.e2[0] = e1, e2
    S = g.step(np.zeros(1, bool), target=target.astype(bool))
    assert np.array_equal(S[0].astype(np.int64), spike)
    return (dict(e1=e1, e2=e2, target=target, spike=spike),
            dict(e1_next=g.e1[0], e2_next=g.e2[0]), ["e1_next", "e2_next"])


UNITS = {
    "neuron": (NeuronUnit, neuron_vectors),
    "pretrace": (PreTraceUnit, pretrace_vectors),
    "errorfilter": (ErrorFilterUnit, errorfilter_vectors),
}


def run_unit(unit_name, set_name, tmp_path, seed=1, corrupt=None, n=N_VECTORS):
    cls, gen = UNITS[unit_name]
    p = params_for(set_name)
    unit = cls(p)
    vin, vexp, signed_out = gen(p, unit, n, seed)
    if corrupt is not None:                    # a deliberately wrong expectation
        field, k = corrupt
        vexp[field] = vexp[field].copy()
        vexp[field][k] ^= 1
    path = tmp_path / f"{unit_name}-{set_name}.npz"
    np.savez(path, **{f"in_{k}": v for k, v in vin.items()}, **{f"out_{k}": v for k, v in vexp.items()})
    return build_and_test(
        unit, f"{unit_name}_unit", TEST_MODULE, build_dir=BUILD_DIR, seed=seed,
        params={"vectors": str(path), "inputs": list(vin), "outputs": list(vexp),
                "signed_outputs": signed_out, "latency": unit.latency, "bubble": BUBBLE,
                "seed": seed})


@pytest.mark.parametrize("set_name", list(PARAM_SETS))
@pytest.mark.parametrize("unit_name", list(UNITS))
def test_unit_matches_golden(unit_name, set_name, tmp_path):
    result = run_unit(unit_name, set_name, tmp_path, seed=zlib.crc32(f"{unit_name}/{set_name}".encode()) % 1000)
    assert result.passed


def test_mismatch_is_reported(tmp_path):
    """The check can fail: a flipped bit in one expected field names field, vector and values."""
    with pytest.raises(CocotbTestFailure, match=r"vector 1234: field sigma: got \d+, expected \d+"):
        run_unit("neuron", "default", tmp_path, corrupt=("sigma", 1234), n=1500)


# ------------------------------------------------------------------------------ unit properties
def test_latencies_and_widths():
    p = params_for("default")
    nu = NeuronUnit(p)
    assert nu.latency == 3 and nu.drive_bits == 16 + 7 and nu.ref_bits == 3
    assert NeuronUnit(params_for("reg3")).latency == 3 + 4
    assert NeuronUnit(params_for("reg8")).latency == 3 + 9
    assert len(nu.V) == 20 and nu.V.shape().signed and len(nu.sigma) == 8
    assert len(nu.racc_next) == RACC_BITS
    assert NeuronUnit(p, n_pre=1).drive_bits == 17
    assert PreTraceUnit(p).latency == 2 and ErrorFilterUnit(p).latency == 2
    with pytest.raises(ValueError, match="zh"):
        PreTraceUnit(p.replace(formats={"zh": [12, 12, False]}))


def test_layouts():
    p = params_for("default")
    assert neuron_layout(p).size == 20 + 20 + 3
    assert pretrace_layout(p).size == 32
    assert synapse_layout(p).size == 16 + 16 + 16 + 24
    assert list(dict(synapse_layout(p.replace(kernel="single_exp")))) == ["w", "el", "m"]
    assert list(dict(synapse_layout(p.replace(kernel="factorised")))) == ["w", "m"]
    assert q_layout(p).size == 24
    assert ref_bits(p.replace(tau_ref_ms=0.0)) == 1 and ref_bits(p.replace(tau_ref_ms=8.0)) == 4
    lay = neuron_layout(p)
    vals = {"U": -5, "I": (1 << 19) - 1, "ref": 5}
    word = pack(lay, vals)
    assert word == ((-5) & 0xFFFFF) | (((1 << 19) - 1) << 20) | (5 << 40)
    assert unpack(lay, word) == vals
    # The Amaranth layout agrees with pack(): a const built from the same fields has this value.
    assert lay.const(vals).as_value().value == word
    with pytest.raises(ValueError):
        pack(lay, {"U": 1 << 19, "I": 0, "ref": 0})
    with pytest.raises(KeyError):
        pack(lay, {"U": 0, "I": 0, "ref": 0, "x": 1})


# ------------------------------------------------------------------------------ arith helpers
def _eval_comb(inputs: dict[str, Signal], outputs: dict[str, object], vectors: dict[str, list]):
    """Evaluate combinational expressions for each vector in Amaranth's simulator."""
    m = Module()
    outs = {}
    for name, expr in outputs.items():
        s = Signal(expr.shape(), name=name)
        m.d.comb += s.eq(expr)
        outs[name] = s
    n = len(next(iter(vectors.values())))
    got = {name: [] for name in outs}

    async def bench(ctx):
        for k in range(n):
            for name, sig in inputs.items():
                ctx.set(sig, int(vectors[name][k]))
            for name, sig in outs.items():
                got[name].append(ctx.get(sig))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return {k: np.array(v, np.int64) for k, v in got.items()}


@pytest.mark.parametrize("bits", [1, 7, 11])
def test_mul_const_exact(bits):
    """Shift-and-add constant products equal ``x·k`` for every x and assorted k (both signs)."""
    ks = [0, 1, 2, 3, 5, 7, 105, 255, 256, 463, 2031, 4055, (1 << 12) - 1, 0b101010101]
    xs, xu = Signal(signed(max(2, bits)), name="xs"), Signal(unsigned(bits), name="xu")
    vs = np.arange(-(1 << (len(xs) - 1)), 1 << (len(xs) - 1))
    vu = np.arange(0, 1 << bits)
    n = max(len(vs), len(vu))
    vs, vu = np.resize(vs, n), np.resize(vu, n)
    exprs = {}
    for k in ks:
        exprs[f"s{k}"] = arith.mul_const(xs, k)
        exprs[f"u{k}"] = arith.mul_const(xu, k)
        assert exprs[f"s{k}"].shape().signed and not exprs[f"u{k}"].shape().signed
    got = _eval_comb({"xs": xs, "xu": xu}, exprs, {"xs": vs, "xu": vu})
    for k in ks:
        assert np.array_equal(got[f"s{k}"], vs * k), k
        assert np.array_equal(got[f"u{k}"], vu * k), k


@pytest.mark.parametrize("bits", [5, 13, 20])
def test_arith_matches_fixed(bits):
    rng = np.random.default_rng(bits)
    d = Decay(105, 7) if bits != 5 else Decay(3, 2)
    fs = Fmt(max(2, bits - 3), 2, True)
    fu = Fmt(max(2, bits - 3), 2, False)
    xs, ys = Signal(signed(bits), name="xs"), Signal(signed(bits), name="ys")
    xu, yu = Signal(unsigned(bits), name="xu"), Signal(unsigned(bits), name="yu")
    n = 400
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    edge = [lo, hi, 0, -1, 1, lo + 1, hi - 1]
    vs = np.concatenate([edge, rng.integers(lo, hi + 1, n - len(edge))])
    ws = np.concatenate([edge[::-1], rng.integers(lo, hi + 1, n - len(edge))])
    vu, wu = vs - lo, ws - lo
    exprs = {
        "sat_s": arith.sat(xs + ys, fs), "sat_u": arith.sat(xu + yu, fu),
        "sat_su": arith.sat(xs, fu), "sat_us": arith.sat(xu, fs),
        "trunc0": arith.shift_trunc(xs, 0), "trunc3": arith.shift_trunc(xs, 3),
        "trunc_u": arith.shift_trunc(xu, 3),
        "decay": arith.decay(xu, d), "decay_s": arith.decay_signed(xs, d),
        "lp": arith.lowpass(yu, xu, d), "lp_s": arith.lowpass_signed(ys, xs, d),
    }
    got = _eval_comb({"xs": xs, "ys": ys, "xu": xu, "yu": yu}, exprs,
                     {"xs": vs, "ys": ws, "xu": vu, "yu": wu})
    want = {
        "sat_s": fixed.sat(vs + ws, fs), "sat_u": fixed.sat(vu + wu, fu),
        "sat_su": fixed.sat(vs, fu), "sat_us": fixed.sat(vu, fs),
        "trunc0": fixed.shift_trunc(vs, 0), "trunc3": fixed.shift_trunc(vs, 3),
        "trunc_u": fixed.shift_trunc(vu, 3),
        "decay": fixed.decay(vu, d), "decay_s": fixed.decay_signed(vs, d),
        "lp": fixed.lowpass(wu, vu, d), "lp_s": fixed.lowpass_signed(ws, vs, d),
    }
    for name in exprs:
        bad = np.nonzero(got[name] != want[name])[0]
        assert not len(bad), (f"{name}: first mismatch at {bad[0]}: got {got[name][bad[0]]}, "
                              f"expected {want[name][bad[0]]}")
    assert exprs["sat_s"].shape() == signed(fs.bits) and exprs["sat_u"].shape() == unsigned(fu.bits)

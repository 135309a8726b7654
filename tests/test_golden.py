"""Golden model behaviour: ranges, batching, and each rule option doing what docs/model.md says."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from spikeloop.params import ErrorSource, Feedback, Fmt, Kernel, Optimiser, Params
from spikeloop.sim.golden import GoldenModel
from spikeloop.sim.stepmodel import STATE_WORDS

FMT_OF = dict(STATE_WORDS, e1="err", e2="err")


def assert_in_format(p, snap, where=""):
    for name, v in snap.items():
        fmt = FMT_OF.get(name.split(".")[1])
        if fmt is None:
            continue
        F = p.formats[fmt]
        assert v.min() >= F.min and v.max() <= F.max, f"{name} left its format {F} {where}"


def random_drive(p, rng, steps, batch, rate=0.3):
    x = rng.random((batch, steps, p.n_in)) < rate
    if p.error_source is ErrorSource.HOST:
        F = p.formats["err"]
        return x, None, rng.integers(F.min - 100, F.max + 100, (batch, steps, p.n_out))
    return x, rng.random((batch, steps, p.n_out)) < rate, None


EXTREME = [
    dict(kernel="double_exp", error_source="host", w_init_mean_mv=6.0, w_init_std_mv=8.0),
    dict(kernel="single_exp", error_source="target", optimiser="fixed", lr_shift=0, n_hidden=6,
         feedback="random", regulariser=True, rho=0.5),
    dict(kernel="factorised", error_source="host", n_hidden=4, feedback="symmetric", chunk_steps=7,
         w_init_std_mv=10.0, error_delay=3),
    dict(kernel="double_exp", error_source="host", n_hidden=3, feedback="uniform", chunk_steps=1,
         formats={"el": Fmt(10, 6, False), "elf": Fmt(10, 6, False), "m": Fmt(12, 2, True),
                  "q": Fmt(12, 2, False), "z": Fmt(14, 12, False), "zh": Fmt(14, 12, False),
                  "i": Fmt(14, 10, True), "u": Fmt(16, 10, True)}),
]


@pytest.mark.parametrize("cfg", EXTREME, ids=lambda c: c["kernel"] + "-" + c["error_source"])
def test_no_wraparound_over_1e5_random_steps(cfg):
    """10 networks x 10^4 steps of saturating drive: every word stays in its format, and the int32
    fast path equals an all-int64 run bit for bit (so no intermediate wrapped)."""
    p = Params(n_in=13, n_out=5, **{"chunk_steps": 50, **cfg})
    rng = np.random.default_rng(7)
    narrow, wide = GoldenModel(p, seeds=range(10)), GoldenModel(p, seeds=range(10), narrow=False)
    steps = 10_000
    x, tgt, err = random_drive(p, rng, steps, 10)
    for n in range(steps):
        a = narrow.step(x[:, n], None if tgt is None else tgt[:, n], None if err is None else err[:, n])
        b = wide.step(x[:, n], None if tgt is None else tgt[:, n], None if err is None else err[:, n])
        assert np.array_equal(a, b)
        if n % 97 == 0 or n == steps - 1:
            sa, sb = narrow.snapshot(), wide.snapshot()
            for k in sa:
                assert np.array_equal(sa[k], sb[k]), f"{k} differs at step {n}"
            assert_in_format(p, sa, f"at step {n}")


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), kernel=st.sampled_from(list(Kernel)), opt=st.sampled_from(list(Optimiser)),
       el_bits=st.integers(6, 16), m_bits=st.integers(8, 28), rate=st.floats(0.0, 1.0))
def test_random_formats_stay_in_range(seed, kernel, opt, el_bits, m_bits, rate):
    fm = {"el": Fmt(el_bits, 6, False), "elf": Fmt(el_bits, 6, False),
          "m": Fmt(m_bits, 4, True), "q": Fmt(m_bits, 4, False)}
    p = Params(n_in=7, n_hidden=3, n_out=2, kernel=kernel, optimiser=opt, chunk_steps=20,
               error_source="host", formats=fm, w_init_std_mv=5.0, lr_shift=2)
    rng = np.random.default_rng(seed)
    g = GoldenModel(p, seeds=[seed % 1000, 1])
    x, _, err = random_drive(p, rng, 200, 2, rate)
    for n in range(200):
        g.step(x[:, n], error=err[:, n])
        assert_in_format(p, g.snapshot())


def test_batch_equals_separate_networks():
    p = Params(n_in=20, n_hidden=6, n_out=3, feedback="random", chunk_steps=40, w_init_std_mv=4.0)
    rng = np.random.default_rng(1)
    x = rng.random((3, 200, 20)) < 0.1
    tgt = rng.random((3, 200, 3)) < 0.05
    batched = GoldenModel(p, seeds=[4, 5, 6])
    out_b, rec_b = batched.run(x, tgt, record=("out.U", "hid.m"))
    for i, s in enumerate([4, 5, 6]):
        single = GoldenModel(p, seeds=[s])
        out_s, rec_s = single.run(x[i:i + 1], tgt[i:i + 1], record=("out.U", "hid.m"))
        assert np.array_equal(out_b[i], out_s[0])
        for k in rec_s:
            assert np.array_equal(rec_b[k][i], rec_s[k][0])
        for k, v in single.snapshot().items():
            assert np.array_equal(batched.snapshot()[k][i], v[0])


def test_silence_stays_silent_and_traces_decay_to_zero():
    p = Params(n_in=10, n_out=2, w_init_std_mv=3.0, chunk_steps=10**6)
    g = GoldenModel(p, seeds=[0])
    rng = np.random.default_rng(0)
    g.run(rng.random((100, 10)) < 0.5, rng.random((100, 2)) < 0.2, record=())
    assert g.snapshot()["out.el"].max() > 0
    g.run(np.zeros((3000, 10), bool), None, record=())
    snap = g.snapshot()
    for name in ("out.U", "out.I", "out.z", "out.zh", "out.el", "out.elf", "out.e", "err.e1", "err.e2"):
        assert not snap[name].any(), f"{name} did not decay to exactly zero"


def test_refractory_clamps_for_exactly_R_steps():
    p = Params(n_in=1, n_out=1, w_init_mean_mv=31.0, w_init_std_mv=0.0, w_max_mv=31.0, chunk_steps=10**6)
    g = GoldenModel(p)
    x = np.zeros((40, 1), bool)
    x[0:30] = True
    out, rec = g.run(x, None, record=("out.U", "out.ref"))
    spikes = np.nonzero(out[0, :, 0])[0]
    assert len(spikes) >= 2
    gaps = np.diff(spikes)
    assert gaps.min() == p.refractory_steps + 1     # clamped R steps, may fire on the next
    s0 = spikes[0]
    assert (rec["out.U"][0, s0:s0 + p.refractory_steps + 1, 0] == 0).all()


def test_rmaxprop_step_never_exceeds_r0():
    p = Params(n_in=30, n_out=4, chunk_steps=25, w_init_std_mv=2.0, error_source="host", r0_mv=0.05)
    g = GoldenModel(p, seeds=[0, 1])
    rng = np.random.default_rng(3)
    F = p.formats["err"]
    w_prev = g.weights[0]
    moved = 0
    for c in range(20):
        g.run(rng.random((25, 30)) < 0.2, errors=rng.integers(F.min, F.max, (25, 4)), record=())
        dw = np.abs(g.weights[0] - w_prev)
        assert dw.max() <= p.r0_q
        moved += int((dw >= p.r0_q // 2).sum())
        w_prev = g.weights[0]
    assert moved > 0


def test_uniform_feedback_sums_output_errors_exactly():
    p = Params(n_in=5, n_hidden=4, n_out=3, feedback="uniform", error_source="host")
    g = GoldenModel(p)
    err = np.array([100, -2000, 37])
    g.step(np.zeros(5, bool), error=err)
    assert (g.layer("hid").e == err.sum()).all()
    assert (g.layer("out").e == err).all()


def test_symmetric_feedback_reads_output_weights():
    p = Params(n_in=5, n_hidden=4, n_out=3, feedback="symmetric", error_source="host", w_init_std_mv=3.0)
    g = GoldenModel(p)
    err = np.array([1000, -2000, 4096])
    g.step(np.zeros(5, bool), error=err)
    w = g.weights[1][0]                          # (n_out, n_hidden)
    want = np.trunc((w * err[:, None]).sum(0) / 1024).astype(np.int64)
    assert (g.layer("hid").e[0] == want).all()


def test_error_delay_shifts_the_eligibility_by_D_steps():
    base = dict(n_in=8, n_out=2, chunk_steps=10**6, w_init_std_mv=4.0, error_source="host")
    rng = np.random.default_rng(9)
    x = rng.random((120, 8)) < 0.2
    _, r0 = GoldenModel(Params(**base)).run(x, record=("out.el", "out.elf"))
    _, r3 = GoldenModel(Params(error_delay=3, **base)).run(x, record=("out.el", "out.elf"))
    for k in r0:
        assert np.array_equal(r3[k][:, 3:], r0[k][:, :-3])
        assert not r3[k][:, :3].any()


def test_input_shapes_are_checked():
    g = GoldenModel(Params(n_in=4, n_out=2), seeds=[0, 1])
    with pytest.raises(ValueError, match=r"x must have shape \(4,\) or \(2, 4\), not \(3, 4\)"):
        g.step(np.zeros((3, 4), bool))

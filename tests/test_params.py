"""Parameter validation: the messages are part of the interface, so they are pinned here."""

import json

import pytest

from spikeloop.params import Decay, Fmt, Kernel, ParamError, Params


@pytest.mark.parametrize("kwargs, message", [
    ({"n_in": 0}, "n_in must be an integer in 1..65536, not 0"),
    ({"n_out": 2.5}, "n_out must be an integer in 1..65536, not 2.5"),
    ({"n_hidden": -1}, "n_hidden must be an integer in 0..65536, not -1"),
    ({"tau_mem_ms": -3.0}, "tau_mem_ms must be a positive finite number, not -3.0"),
    ({"dt_ms": float("nan")}, "dt_ms must be a positive finite number, not nan"),
    ({"kernel": "triple"}, "kernel must be one of 'double_exp', 'single_exp', 'factorised', not 'triple'"),
    ({"feedback": "mirror"}, "feedback must be one of 'symmetric', 'random', 'uniform', not 'mirror'"),
    ({"optimiser": "adam"}, "optimiser must be one of 'rmaxprop', 'fixed', not 'adam'"),
    ({"error_source": "oracle"}, "error_source must be one of 'host', 'target', not 'oracle'"),
    ({"chunk_steps": 0}, "chunk_steps must be an integer in 1..1048576, not 0"),
    ({"w_max_mv": 100.0}, "w_max_mv must be within the 'w' format (SQ5.10: at most 31.999), not 100.0"),
    ({"r0_mv": 1e-6}, "r0_mv must be between one LSB of 'w' (0.000976562 mV) and w_max_mv, not 1e-06"),
    ({"regulariser": True}, "regulariser acts on the hidden layer: it needs n_hidden > 0"),
    ({"formats": {"w": Fmt(16, 8, True)}}, "formats 'u', 'i' and 'w' must have the same frac (all in mV)"),
    ({"formats": {"el": Fmt(16, 12, True)}}, "formats['el'] must be unsigned"),
    ({"formats": {"volts": Fmt(16, 12, True)}}, "formats has no word 'volts'"),
    ({"decay_codes": {"mem": [600, 9]}}, "a decay code's M must be an integer in 1..2^K-1 = 511, not 600"),
    ({"decay_codes": {"fast": [1, 2]}}, "decay_codes has no decay 'fast'"),
    ({"error_delay": 100}, "error_delay must be an integer in 0..64, not 100"),
    ({"rho": 2.0}, "rho must be in (0, 1]"),
])
def test_bad_values_raise_with_what_was_expected(kwargs, message):
    with pytest.raises(ParamError) as exc:
        Params(**kwargs)
    assert message in str(exc.value)


def test_fmt_rejects_bad_widths():
    with pytest.raises(ParamError, match=r"Fmt.bits must be an integer in 2..32, not 40"):
        Fmt(40, 3, True)


def test_json_and_toml_round_trip(tmp_path):
    p = Params(n_in=37, n_hidden=5, n_out=11, kernel=Kernel.SINGLE_EXP, feedback="random",
               decay_codes={"syn": [7, 3]}, formats={"m": Fmt(28, 14, True), "q": Fmt(28, 14, False)})
    path = tmp_path / "p.json"
    p.save(path)
    assert Params.load(path) == p
    assert json.loads(path.read_text())["kernel"] == "single_exp"
    toml = tmp_path / "p.toml"
    toml.write_text('n_in = 37\nn_out = 11\nkernel = "factorised"\n[formats.m]\nbits = 28\nfrac = 14\nsigned = true\n'
                    '[formats.q]\nbits = 28\nfrac = 14\nsigned = false\n')
    q = Params.load(toml)
    assert q.n_in == 37 and q.kernel is Kernel.FACTORISED and q.formats["m"] == Fmt(28, 14, True)
    assert q.decay_syn == Params().decay_syn


def test_unknown_keys_and_bad_files_are_refused(tmp_path):
    with pytest.raises(ParamError, match="unknown parameter.*n_inputs"):
        Params.from_dict({"n_inputs": 3})
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ParamError, match="not valid json"):
        Params.load(bad)


def test_derived_constants():
    p = Params()
    assert p.threshold_q == 10 * 1024
    assert p.refractory_steps == 5
    assert p.layers == ((100, 1),) and p.n_synapses == 100
    assert Params(n_hidden=32, n_out=100).layers == ((100, 32), (32, 100))
    assert p.el_shift == 8 and p.m_shift == 10
    assert p.decay_codes == {} and Params(decay_codes={"mem": [7, 3]}).decay_mem == Decay(7, 3)


@pytest.mark.parametrize("formats, message", [
    ({"zh": Fmt(14, 12, False)}, "format 'zh' must have the frac of 'z' and at least its bits"),
    ({"rate": Fmt(24, 12, False)}, "format 'rate' must be at most 23 bits (its powers are formed in 64 bits), not 24"),
])
def test_formats_the_arithmetic_cannot_hold_are_refused(formats, message):
    with pytest.raises(ParamError) as exc:
        Params(formats=formats)
    assert message in str(exc.value)

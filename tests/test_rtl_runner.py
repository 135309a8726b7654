"""The cocotb/Verilator harness builds, caches, and reports failures."""

from pathlib import Path

import pytest

from rtl_examples import Counter
from spikeloop.sim.rtl_runner import (CocotbTestFailure, RTLBuildError,
                                      build_and_test, verilator_env)

HERE = Path(__file__).parent
TEST_MODULE = HERE / "cocotb_counter.py"


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("rtl")


def test_counter_matches_python_model(build_dir):
    result = build_and_test(Counter, "counter", TEST_MODULE, build_dir=build_dir,
                            params={"cycles": 200}, seed=1234)
    assert result.passed
    assert [t.name for t in result.tests if t.status == "passed"] == ["counts_enabled_cycles"]
    # Second run of the same design reuses the build.
    again = build_and_test(Counter(), "counter", TEST_MODULE, build_dir=build_dir,
                           params={"cycles": 50})
    assert again.cached_build and again.build_dir == result.build_dir


def test_failing_cocotb_test_raises(build_dir):
    with pytest.raises(CocotbTestFailure, match=r"counts_enabled_cycles failed: cycle 0: count=\d+, expected \d+"):
        build_and_test(Counter, "counter", TEST_MODULE, build_dir=build_dir,
                       env={"COUNTER_EXPECT_OFFSET": 1})


def test_missing_test_module_raises(build_dir):
    with pytest.raises(CocotbTestFailure, match="no test results"):
        build_and_test(Counter, "counter", "no_such_cocotb_module", build_dir=build_dir)


def test_verilator_env_is_idempotent():
    import os
    before = os.environ["PATH"]
    with verilator_env() as bindir:
        with verilator_env():
            path = os.environ["PATH"].split(os.pathsep)
            assert path[0] == str(bindir)
            assert path.count(str(bindir)) == 1
    assert os.environ["PATH"] == before


def test_icarus_requires_iverilog(build_dir, monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(RTLBuildError, match="iverilog"):
        build_and_test(Counter, "counter", TEST_MODULE, build_dir=build_dir, sim="icarus")

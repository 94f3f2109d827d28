"""Target selection and THE kernel contract: every target module exports the same API."""

import importlib
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

import jitnet
from jitnet.kernels import CONTRACT, numpy_ref


def test_set_get_and_use_target():
    previous = jitnet.get_target()
    try:
        jitnet.set_target("numpy")
        assert jitnet.get_target() == "numpy"
        with jitnet.use_target("cpu"):
            assert jitnet.get_target() == "cpu"
        assert jitnet.get_target() == "numpy"
        with pytest.raises(KeyError):
            with jitnet.use_target("cpu"):
                raise KeyError("boom")
        assert jitnet.get_target() == "numpy"  # restored on error too
    finally:
        jitnet.set_target(previous)


def test_unknown_target_is_a_value_error():
    with pytest.raises(ValueError, match=r"unknown target 'tpu': expected one of numpy, cpu, cuda"):
        jitnet.set_target("tpu")
    with pytest.raises(ValueError, match="unknown target"):
        with jitnet.use_target("gpu"):
            pass


def test_available_targets():
    names = jitnet.available_targets()
    assert names[:2] == ["numpy", "cpu"]
    assert set(names) <= {"numpy", "cpu", "cuda"}


def test_cuda_unavailable_says_why():
    if "cuda" in jitnet.available_targets():
        pytest.skip("cuda is usable here (GPU or NUMBA_ENABLE_CUDASIM=1)")
    previous = jitnet.get_target()
    with pytest.raises(
        jitnet.TargetUnavailableError, match="the cuda target is unavailable: .+"
    ) as info:
        jitnet.set_target("cuda")
    assert isinstance(info.value, RuntimeError)
    assert jitnet.get_target() == previous  # a failed switch changes nothing


def test_to_numpy_and_asarray():
    with jitnet.use_target("numpy"):
        a = jitnet.asarray(np.arange(6.0).reshape(2, 3).T)
        assert isinstance(a, np.ndarray) and a.flags.c_contiguous
        assert jitnet.asarray(np.ones(2), "float32").dtype == np.float32
        np.testing.assert_array_equal(jitnet.to_numpy(a), np.arange(6.0).reshape(2, 3).T)
    assert isinstance(jitnet.to_numpy([1, 2]), np.ndarray)


def run_python(code, **env):
    environment = {k: v for k, v in os.environ.items() if k != "JITNET_TARGET"}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=120
    )


def test_jitnet_target_environment_variable():
    done = run_python("import jitnet; print(jitnet.get_target())", JITNET_TARGET="numpy")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "numpy"
    done = run_python("import jitnet", JITNET_TARGET="tpu")
    assert done.returncode != 0
    assert "JITNET_TARGET='tpu' is not a target" in done.stderr


def importable_target_modules():
    modules = []
    for name in ("numpy_ref", "cpu", "cuda"):
        try:
            modules.append(pytest.param(importlib.import_module("jitnet.kernels." + name), id=name))
        except ImportError as exc:
            modules.append(pytest.param(None, id=name, marks=pytest.mark.skip(reason=str(exc))))
    return modules


@pytest.mark.parametrize("module", importable_target_modules())
def test_every_target_module_exports_the_contract(module):
    missing = [name for name in CONTRACT if not callable(getattr(module, name, None))]
    assert not missing, f"{module.__name__} lacks {missing}"
    for name in CONTRACT:
        expected = list(inspect.signature(getattr(numpy_ref, name)).parameters)
        got = list(inspect.signature(getattr(module, name)).parameters)
        assert got == expected, (
            f"{module.__name__}.{name}{tuple(got)} differs from numpy_ref {tuple(expected)}"
        )


def test_numpy_ref_documents_every_kernel():
    for name in CONTRACT:
        doc = getattr(numpy_ref, name).__doc__
        assert doc and doc.strip(), name

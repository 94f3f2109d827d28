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


@pytest.mark.parametrize("name, error, message", [
    (None, TypeError, "set_target expected a target name, one of numpy, cpu, cuda "
                      r"\(a str\), got None \(NoneType\)"),
    (1, TypeError, r"set_target expected a target name, .*got 1 \(int\)"),
    ("", ValueError, "unknown target ''"),
])
def test_set_target_rejects_what_is_no_target_name(name, error, message):
    # a value of the wrong kind is a TypeError, an unknown name a ValueError
    previous = jitnet.get_target()
    with pytest.raises(error, match=message):
        jitnet.set_target(name)
    with pytest.raises(error, match=message):
        with jitnet.use_target(name):
            pass
    assert jitnet.get_target() == previous


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


def test_cuda_without_numba_cuda_says_how_to_install_it(monkeypatch):
    from jitnet import targets

    real = importlib.import_module

    def import_module(name, package=None):  # as on a machine without numba-cuda
        if name == ".kernels.cuda":
            raise ImportError("No module named 'numba.cuda'")
        return real(name, package)

    monkeypatch.setattr(targets.importlib, "import_module", import_module)
    assert jitnet.available_targets() == ["numpy", "cpu"]
    previous = jitnet.get_target()
    with pytest.raises(jitnet.TargetUnavailableError, match=(
            r"^the cuda target is unavailable: numba-cuda is not installed \(No module named "
            r"'numba\.cuda'\); install it with `pip install 'jitnet\[cuda\]'` \(or set "
            r"NUMBA_ENABLE_CUDASIM=1 for the simulator\)$")):
        jitnet.set_target("cuda")
    assert jitnet.get_target() == previous


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


@pytest.mark.parametrize("value, error", [
    ("tpu", "ValueError: JITNET_TARGET='tpu' is not a target: expected one of numpy, cpu, cuda"),
    ("cuda", "TargetUnavailableError: JITNET_TARGET=cuda, but the cuda target is unavailable"),
])
def test_a_bad_jitnet_target_fails_at_first_use_not_at_import(value, error):
    """The import works (so `jitnet info` and `--target cpu` do); every use of the
    active target says what is wrong until set_target chooses one."""
    if value == "cuda" and "cuda" in jitnet.available_targets():
        pytest.skip("cuda is usable here")
    code = (
        "import jitnet, numpy as np\n"
        "for use in (jitnet.get_target, lambda: jitnet.nn.Linear(2, 3)):\n"
        "    try:\n"
        "        use()\n"
        "    except Exception as exc:\n"
        "        print(type(exc).__name__ + ': ' + str(exc))\n"
        "jitnet.set_target('numpy')\n"
        "print(jitnet.get_target(), jitnet.nn.Linear(2, 3)(np.ones((1, 2), np.float32)).shape)\n"
    )
    done = run_python(code, JITNET_TARGET=value)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith(error) for line in lines[:2]), lines
    assert lines[2] == "numpy (1, 3)"


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

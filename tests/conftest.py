"""Shared test fixtures.

``tests/cuda`` runs in its own pytest process (``NUMBA_ENABLE_CUDASIM=1`` must
be set before numba is imported), so the main run leaves it out unless the
simulator is on or ``JITNET_TEST_CUDA=1`` says a real GPU is there.

The tests start no precompile helper process (``JITNET_PRECOMPILE=0``, set before
jitnet is imported); ``test_precompile.py`` turns it on where it tests it.
"""

import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("JITNET_PRECOMPILE", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

collect_ignore = []
if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1" and os.environ.get("JITNET_TEST_CUDA") != "1":
    collect_ignore.append("cuda")

#: The real CIFAR-10 subset beside the checkout (absent outside the workplace).
SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-subset"


@pytest.fixture
def shared_cifar_root():
    """Path of the shared real CIFAR-10 subset; skips the test when it is absent."""
    folder = SHARED_CIFAR / "cifar-10-batches-py"
    if not folder.is_dir():
        pytest.skip(f"shared CIFAR-10 subset not found at {folder}")
    return SHARED_CIFAR


@pytest.fixture(autouse=True)
def _global_state_unchanged(request):
    """Fail a test that leaves the process's settings changed, and put them back.

    The active target, Numba's thread count and NumPy's error handling hold for
    every test after it, which would run under them without saying so: a
    ``main(["train", "--target", "numpy", ...])`` that kept numpy active once
    made the cpu kernel's bit-for-bit HoG test compare the numpy target's features.
    """
    import numba

    from jitnet import targets

    def state():
        return {"active target": (targets._active, targets._environment_error),
                "numba threads": numba.get_num_threads(), "np.geterr()": np.geterr()}

    before = state()
    yield
    after = state()
    if after != before:
        targets._active, targets._environment_error = before["active target"]
        numba.set_num_threads(before["numba threads"])
        np.seterr(**before["np.geterr()"])
        changed = "; ".join(f"{key} {before[key]!r} -> {after[key]!r}"
                            for key in before if after[key] != before[key])
        pytest.fail(f"{request.node.nodeid} left {changed} (use jitnet.use_target, "
                    "try/finally or np.errstate)", pytrace=False)


@pytest.fixture
def rng():
    """A fresh, seeded NumPy generator per test."""
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def load_benchmark():
    """``load_benchmark("bench_train")``: that script of ``benchmarks/`` imported as a
    module, with ``benchmarks/`` on ``sys.path`` for the test module (the scripts
    import its ``common``)."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(folder))

    def load(name):
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    try:
        yield load
    finally:
        sys.path.remove(str(folder))

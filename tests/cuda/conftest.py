"""Fixtures of the cuda tests (run with ``NUMBA_ENABLE_CUDASIM=1`` or ``JITNET_TEST_CUDA=1``).

Launch shapes are patched tiny, so that on the small shapes the simulator can
afford every grid-stride loop wraps (more items than ``blocks * threads``) and
every shared-memory tile has a ragged edge.
"""

import os

import pytest

import jitnet
from jitnet import config

#: The cuda tests were asked for (the simulator, or a run on a GPU): then a cuda target
#: that cannot run fails the run instead of skipping every test, which would pass.
REQUESTED = any(os.environ.get(name) == "1" for name in ("NUMBA_ENABLE_CUDASIM",
                                                          "JITNET_TEST_CUDA"))


def pytest_collection_modifyitems(config, items):
    if not REQUESTED:
        return
    try:
        import jitnet.kernels.cuda  # noqa: F401
        jitnet.targets.backend("cuda")
    except Exception as exc:  # ImportError, TargetUnavailableError: say which and why
        raise pytest.UsageError(
            "the cuda tests were asked for (NUMBA_ENABLE_CUDASIM=1 or JITNET_TEST_CUDA=1) "
            f"but the cuda target cannot run: {type(exc).__name__}: {exc}") from None


@pytest.fixture(autouse=True)
def tiny_launches(monkeypatch):
    """32 threads per block, 4x4 tiles, at most 2 blocks per grid-stride launch."""
    monkeypatch.setattr(config, "CUDA_THREADS_PER_BLOCK", 32)
    monkeypatch.setattr(config, "CUDA_TILE", 4)
    monkeypatch.setattr(config, "CUDA_MAX_BLOCKS", 2)


@pytest.fixture(autouse=True)
def cuda_target():
    """Every test runs with "cuda" as the active target (skipped when it cannot run)."""
    previous = jitnet.get_target()
    try:
        jitnet.set_target("cuda")
    except jitnet.TargetUnavailableError as exc:
        pytest.skip(str(exc))
    yield
    jitnet.set_target(previous)

"""Fixtures of the cuda tests (run with ``NUMBA_ENABLE_CUDASIM=1`` or ``JITNET_TEST_CUDA=1``).

Launch shapes are patched tiny, so that on the small shapes the simulator can
afford every grid-stride loop wraps (more items than ``blocks * threads``) and
every shared-memory tile has a ragged edge.
"""

import pytest

import jitnet
from jitnet import config


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

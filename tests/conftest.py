"""Shared test fixtures.

``tests/cuda`` runs in its own pytest process (``NUMBA_ENABLE_CUDASIM=1`` must
be set before numba is imported), so the main run leaves it out unless the
simulator is on or ``JITNET_TEST_CUDA=1`` says a real GPU is there.
"""

import os
from pathlib import Path

import numpy as np
import pytest

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


@pytest.fixture
def rng():
    """A fresh, seeded NumPy generator per test."""
    return np.random.default_rng(1234)

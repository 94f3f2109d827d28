"""The target fixtures' common part, for the test modules that run on every target.

Each module keeps its own ``target`` fixture (they choose different targets: the
model tests leave out the simulated GPU, too slow for their shapes) and delegates to
:func:`enter` here.
"""

import pytest

import jitnet
from jitnet.kernels import CONTRACT
from jitnet.targets import backend


def enter(name, seed=0):
    """Yield ``name`` with it as the active target (and jitnet seeded with ``seed``,
    unless None); skip the test when its kernel module does not import or lacks
    part of the kernel contract. A generator, for a fixture to ``yield from``."""
    try:
        module = backend(name)
    except (ImportError, jitnet.TargetUnavailableError) as exc:
        pytest.skip(f"target {name} not ready: {exc}")
    missing = [n for n in CONTRACT if not hasattr(module, n)]
    if missing:
        pytest.skip(f"target {name} lacks {missing}")
    with jitnet.use_target(name):
        if seed is not None:
            jitnet.manual_seed(seed)
        yield name

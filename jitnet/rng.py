"""One seedable generator behind initialisation, shuffling, dropout and augmentation."""

import numpy as np

from ._checks import check_int

_generator = np.random.default_rng()


def manual_seed(seed):
    """Seed jitnet's global generator so that runs are reproducible.

    Parameters
    ----------
    seed : int
        Any non-negative integer (Python's or NumPy's; not a bool, float or str).

    Raises
    ------
    TypeError
        For a seed that is no int; ``ValueError`` for a negative one.
    """
    global _generator
    _generator = np.random.default_rng(check_int("manual_seed", "seed", seed, 0))


def generator():
    """The global ``np.random.Generator`` (replaced by :func:`manual_seed`)."""
    return _generator


def next_seed():
    """Draw a fresh 63-bit seed for a kernel that needs its own random stream."""
    return int(_generator.integers(0, 2**63 - 1))


def get_state():
    """The generator's state as a JSON-able dict (saved in checkpoints)."""
    return _generator.bit_generator.state


def set_state(state):
    """Restore a state returned by :func:`get_state`."""
    _generator.bit_generator.state = state

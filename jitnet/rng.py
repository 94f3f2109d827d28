"""One seedable generator behind initialisation, shuffling, dropout and augmentation."""

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed):
    """Seed jitnet's global generator so that runs are reproducible.

    Parameters
    ----------
    seed : int
        Any non-negative integer.
    """
    global _generator
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed expected a non-negative int, got {seed!r}")
    _generator = np.random.default_rng(int(seed))


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

"""Dropout: a counter-based (splitmix64) mask every target reproduces exactly."""

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def dropout_uniform(seed, size):
    """The uniform numbers in [0, 1) behind dropout's mask: splitmix64 of the index.

    Parameters
    ----------
    seed : int
        In ``[0, 2**64)``.
    size : int
        How many numbers (element ``i`` belongs to flat index ``i``).

    Returns
    -------
    np.ndarray, shape (size,), float64
    """
    i = np.arange(1, size + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + i * _GOLDEN  # uint64 arithmetic wraps modulo 2**64
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def dropout_forward(x, p, seed):
    """Inverted dropout with a counter-based mask every target reproduces exactly.

    Parameters
    ----------
    x : np.ndarray, any shape, float32 or float64
    p : float
        Probability of dropping an element, in ``[0, 1]``.
    seed : int
        In ``[0, 2**63)``; the same seed gives the same mask on every target.

    Returns
    -------
    y : np.ndarray, shape of ``x``
        ``x * mask``.
    mask : np.ndarray, shape of ``x``, dtype of ``x``
        ``1 / (1 - p)`` where kept, 0 where dropped (all 0 when ``p == 1``).

    Notes
    -----
    Element ``i`` of ``x`` in C order (flat index, from 0) is kept when ``u >= p``,
    with ``u`` from splitmix64 on uint64 arithmetic (wrapping modulo 2**64)::

        z = seed + (i + 1) * 0x9E3779B97F4A7C15
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB
        z = z ^ (z >> 31)
        u = (z >> 11) * 2.0**-53          # float64 in [0, 1)

    The mask depends only on ``(seed, i)``, not on thread layout, so the cpu and
    cuda kernels compute each element independently and agree bit for bit.
    """
    u = dropout_uniform(seed, x.size).reshape(x.shape)
    scale = 0.0 if p >= 1 else 1.0 / (1.0 - p)
    mask = np.where(u >= p, scale, 0.0).astype(x.dtype)
    return x * mask, mask


def dropout_backward(dy, mask):
    """Gradient of :func:`dropout_forward`.

    Parameters
    ----------
    dy : np.ndarray, any shape
    mask : np.ndarray, shape and dtype of ``dy``
        From :func:`dropout_forward`.

    Returns
    -------
    dx : np.ndarray, shape and dtype of ``dy``
        ``dy * mask``.
    """
    return dy * mask

"""Inverted dropout on the cpu target: the keep mask is splitmix64 of (seed, flat
index), the formula of :mod:`jitnet.kernels.numpy_ref`, so every target draws the
same mask for the same seed.
"""

import numpy as np
from numba import prange

from ...codegen import njit
from ._common import _JIT_EXACT
from .activations import _flat
from .arrays import _empty


@njit(**_JIT_EXACT)
def _dropout_forward(x, p, seed, y, mask):
    scale = x.dtype.type(0.0 if p >= 1.0 else 1.0 / (1.0 - p))
    zero = x.dtype.type(0)
    s = np.uint64(seed)
    golden = np.uint64(0x9E3779B97F4A7C15)
    mix1 = np.uint64(0xBF58476D1CE4E5B9)
    mix2 = np.uint64(0x94D049BB133111EB)
    # No race: iteration i owns y[i] and mask[i]; the mask depends only on
    # (seed, i), so it is the same whatever the thread layout.
    for i in prange(x.size):
        z = s + np.uint64(i + 1) * golden  # uint64 wraps modulo 2**64
        z = (z ^ (z >> np.uint64(30))) * mix1
        z = (z ^ (z >> np.uint64(27))) * mix2
        z = z ^ (z >> np.uint64(31))
        u = np.float64(z >> np.uint64(11)) * 1.1102230246251565e-16  # 2**-53
        m = scale if u >= p else zero
        mask[i] = m
        y[i] = x[i] * m


def dropout_forward(x, p, seed):
    """Inverted dropout; the keep mask is splitmix64 of (seed, flat index).

    Parameters
    ----------
    x : ndarray, any shape, float32 or float64
    p : float, drop probability in [0, 1]
    seed : int, in [0, 2**63)

    Returns
    -------
    y : ndarray, x's shape, ``x * mask``
    mask : ndarray, x's shape and dtype, ``1 / (1 - p)`` where kept, else 0

    Notes
    -----
    Element ``i`` (C order) is kept when ``u >= p`` with ``u`` the top 53 bits of
    splitmix64(seed + (i + 1) * 0x9E3779B97F4A7C15) scaled to [0, 1): the formula of
    :func:`jitnet.kernels.numpy_ref.dropout_forward`, so masks agree bit for bit.
    """
    y = _empty(x.shape, dtype=x.dtype)
    mask = _empty(x.shape, dtype=x.dtype)
    _dropout_forward(_flat(x), float(p), np.uint64(seed), y.reshape(-1), mask.reshape(-1))
    return y, mask


@njit(**_JIT_EXACT)
def _multiply(a, b, out):
    for i in prange(a.size):  # no race: owns out[i]
        out[i] = a[i] * b[i]


def dropout_backward(dy, mask):
    """``dy * mask``, with ``mask`` from :func:`dropout_forward`."""
    dx = _empty(dy.shape, dtype=dy.dtype)
    _multiply(_flat(dy), _flat(mask), dx.reshape(-1))
    return dx

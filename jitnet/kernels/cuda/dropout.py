"""Inverted dropout: splitmix64 of the flat index, bit for bit the formula of
:mod:`jitnet.kernels.numpy_ref`.
"""

import numpy as np

from ._launch import _grid_1d
from .activations import _map
from .arrays import _dev, _empty, _flat
from .device import SIMULATOR, cuda, jit

_UINT64_MASK = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TWO_POW_M53 = 2.0**-53


if SIMULATOR:
    # The simulator runs kernels as Python on NumPy scalars, where uint64 overflow
    # wraps too but warns; exact Python integers avoid the warnings.
    @jit(device=True)
    def _wrapping_mul(a, b):
        return np.uint64((int(a) * int(b)) & _UINT64_MASK)

    @jit(device=True)
    def _wrapping_add(a, b):
        return np.uint64((int(a) + int(b)) & _UINT64_MASK)

else:
    # On the device uint64 arithmetic wraps modulo 2**64, as splitmix64 wants.
    @jit(device=True)
    def _wrapping_mul(a, b):
        return a * b

    @jit(device=True)
    def _wrapping_add(a, b):
        return a + b


@jit(device=True)
def _dropout_uniform(seed, i):
    """Uniform float64 in [0, 1) of flat index ``i``: splitmix64 of ``seed`` and ``i``."""
    z = _wrapping_add(seed, _wrapping_mul(np.uint64(i + 1), _GOLDEN))
    z = _wrapping_mul(z ^ (z >> np.uint64(30)), _MIX1)
    z = _wrapping_mul(z ^ (z >> np.uint64(27)), _MIX2)
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * _TWO_POW_M53


@jit(cache=True)
def _dropout_forward_kernel(x, seed, p, scale, y, mask):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, step):
        mask[i] = scale if _dropout_uniform(seed, i) >= p else 0
        y[i] = x[i] * mask[i]  # the stored (rounded) mask, as numpy_ref multiplies


@jit(cache=True)
def _multiply_kernel(a, b, out):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, a.size, step):
        out[i] = a[i] * b[i]


def dropout_forward(x, p, seed):
    """Inverted dropout; the mask equals ``numpy_ref``'s bit for bit for the same seed.

    Parameters
    ----------
    x : device array, any shape, float32 or float64
    p : float
        Drop probability in ``[0, 1]``.
    seed : int
        In ``[0, 2**63)``.

    Returns
    -------
    y : device array, shape of ``x``
        ``x * mask``.
    mask : device array, shape of ``x``, dtype of ``x``
        ``1 / (1 - p)`` where kept (``u >= p``), 0 where dropped.

    Notes
    -----
    Thread ``i`` computes the splitmix64 uniform ``u`` of flat index ``i`` (see
    ``numpy_ref.dropout_forward`` for the formula): the mask does not depend on the
    launch shape.
    """
    x = _dev(x)
    p = float(p)
    scale = 0.0 if p >= 1 else 1.0 / (1.0 - p)
    y = _empty(x.shape, dtype=x.dtype)
    mask = _empty(x.shape, dtype=x.dtype)
    if x.size:
        seed = np.uint64(int(seed) & _UINT64_MASK)
        _dropout_forward_kernel[_grid_1d(x.size)](
            _flat(x), seed, p, x.dtype.type(scale), _flat(y), _flat(mask)
        )
    return y, mask


def dropout_backward(dy, mask):
    """``dy * mask``, with ``mask`` from :func:`dropout_forward`."""
    return _map(_multiply_kernel, [dy, mask])

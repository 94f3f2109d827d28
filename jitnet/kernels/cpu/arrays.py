"""Arrays of the cpu target: host NumPy arrays, 64-byte aligned, large ones drawn
from a pool (:mod:`jitnet.kernels.pool`) so that a training step reuses its memory.
"""

import math

import numpy as np

from ..pool import ArrayPool


def asarray(a, dtype=None):
    """``a`` as a C-contiguous host array (of ``dtype`` when given).

    An array of at least ``_ALIGN_MIN_BYTES`` comes back 64-byte aligned, copied
    if it was not (see :func:`_aligned_empty`): a parameter created by NumPy is
    then aligned for every step that reads it. Smaller ones are not copied. A scalar
    comes back 0-d, as ``np.asarray`` makes it (``np.ascontiguousarray`` makes it 1-d).
    """
    a = np.asarray(a, dtype=dtype, order="C")
    if a.nbytes >= _ALIGN_MIN_BYTES and a.__array_interface__["data"][0] % _ALIGN:
        aligned = _aligned_empty(a.shape, a.dtype)
        aligned[...] = a
        return aligned
    return a


def to_numpy(a):
    """The array itself: the cpu target's arrays already are ``np.ndarray``."""
    return np.asarray(a)


#: Byte boundary of the arrays the wrappers allocate: a cache line, one AVX-512 vector.
_ALIGN = 64
#: :func:`asarray` copies a misaligned array from this size on.
_ALIGN_MIN_BYTES = 4096


def _aligned_empty(shape, dtype):
    """``np.empty`` whose data starts on a ``_ALIGN``-byte boundary (from
    ``_ALIGN_MIN_BYTES`` on).

    NumPy's large arrays start 16 bytes past a page (glibc's ``mmap`` header), so
    every 64-byte vector load of a row straddles two cache lines. Aligned operands
    made the matrix-product micro-kernel 12-26% faster on fc1's three shapes
    (measured on the same kernel, 16-byte against 64-byte aligned).
    """
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < _ALIGN_MIN_BYTES:
        return np.empty(shape, dtype=dtype)  # not worth the extra view
    raw = np.empty(nbytes + _ALIGN, dtype=np.uint8)
    start = -raw.__array_interface__["data"][0] % _ALIGN
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def empty(shape, dtype):
    """Uninitialised host array of ``shape`` and ``dtype`` (64-byte aligned)."""
    return _aligned_empty(shape, dtype)


# The wrappers take their arrays from a pool that hands a large array out again once
# released: fresh memory would page-fault on first touch at every training step.
_POOL = ArrayPool(_aligned_empty)


def _empty(shape, dtype=np.float64):
    """``np.empty``, from the pool when large."""
    return _POOL.empty((shape,) if isinstance(shape, (int, np.integer)) else shape, dtype)


def _zeros(shape, dtype=np.float64):
    """``np.zeros``, from the pool when large."""
    return _POOL.zeros((shape,) if isinstance(shape, (int, np.integer)) else shape, dtype)


def zeros(shape, dtype):
    """Zero-filled host array of ``shape`` and ``dtype`` (64-byte aligned)."""
    a = _aligned_empty(shape, dtype)
    a.fill(0)
    return a

"""The target's arrays: numba device arrays, the copies to and from the host, and the
pool of device arrays that every wrapper's outputs come from.
"""

import sys

import numpy as np

from ..pool import ArrayPool
from ._launch import _grid_1d
from .device import SIMULATOR, _pool_usable, cuda, jit


def _is_device(a):
    return hasattr(a, "copy_to_host")


@jit(cache=True)
def _cast_kernel(src, dst):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, dst.size, step):
        dst[i] = src[i]


@jit(cache=True)
def _fill_kernel(dst, value):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, dst.size, step):
        dst[i] = value


def _flat(a):
    """The 1-D view of a C-contiguous device array (element-wise kernels index flat);
    a 1-D array itself (numba-cuda's ``reshape`` builds a new array object even to the
    same shape, and the optimizer flattens every bias each step)."""
    if not a.is_c_contiguous():
        raise ValueError(
            f"cuda kernels expected a C-contiguous device array, got strides {a.strides} "
            f"for shape {a.shape}; make a contiguous copy first"
        )
    return a if a.ndim == 1 else a.reshape(a.size)


def asarray(a, dtype=None):
    """``a`` as a C-contiguous device array (of ``dtype`` when given).

    Parameters
    ----------
    a : array_like or device array
        A device array passes through as it is (cast into a new array on the device
        when ``dtype`` differs); anything else is copied to the device.
    dtype : dtype, optional
        Wanted dtype; by default the dtype of ``a`` is kept.

    Returns
    -------
    numba device array
    """
    if _is_device(a):
        if dtype is None or np.dtype(dtype) == a.dtype:
            return a
        out = _empty(a.shape, a.dtype if dtype is None else dtype)
        if out.size:
            _cast_kernel[_grid_1d(out.size)](_flat(a), _flat(out))
        return out
    return _to_device(np.asarray(a, dtype=dtype, order="C"))  # 0-d stays 0-d


def _dev(a):
    """A read-only input as a device array (host arrays are copied over once)."""
    return a if _is_device(a) else _to_device(np.asarray(a, order="C"))


def _to_device(host):
    """A copy of the C-contiguous ``host`` array in a pooled device array."""
    if not host.size:
        return cuda.to_device(host)
    out = _empty(host.shape, host.dtype)
    # flat on both sides: the simulator's copy mishandles the strides NumPy may give
    # a dimension of length 1
    _flat(out).copy_to_device(host.reshape(host.size))
    return out


def to_numpy(a):
    """A device array copied to the host as ``np.ndarray`` (host arrays pass through)."""
    return a.copy_to_host() if _is_device(a) else np.asarray(a)


def empty(shape, dtype):
    """An uninitialised device array of ``shape`` and ``dtype``."""
    return cuda.device_array(shape, dtype=np.dtype(dtype))


def zeros(shape, dtype):
    """A device array of zeros of ``shape`` and ``dtype`` (filled by a kernel)."""
    return fill_zeros(cuda.device_array(shape, dtype=np.dtype(dtype)))


def fill_zeros(out):
    """Fill the C-contiguous device array ``out`` with zeros in place (one launch); ``out``.

    Not part of the kernel contract: :func:`zeros` and the pool's arrays use it, and
    ``zero_grad(set_to_none=False)`` for gradients already on the device."""
    if out.size:
        _fill_kernel[_grid_1d(out.size)](_flat(out), out.dtype.type(0))
    return out


def _memory_shared(a):
    """True while something besides the device array ``a`` itself refers to its memory.

    A device array's views (``reshape``, slices) hold its memory, not the array
    object, so the pool's reference count of ``a`` cannot see them. numba-cuda
    counts them on the allocation (``refct``, one per owning pointer; a reshape
    shares ``a``'s pointer object); the simulator's views are NumPy views of the
    array it wraps. Memory this cannot account for counts as shared (never reused).
    """
    if SIMULATOR:
        return sys.getrefcount(a._ary) > 2  # a's attribute and the argument
    data = a.gpu_data
    base = getattr(data, "_mem", None)
    # references to data: a's attribute, the local name, getrefcount's argument
    return base is None or sys.getrefcount(data) > 3 or base.refct > 1


# Every wrapper output and host copy comes from here. A fresh device array is a
# cuMemAlloc, and numba-cuda's deferred frees call cuMemFree, which can wait for the
# device; a training step reuses the same shapes every time. Kernels run in the order
# they are launched (one stream), so memory handed out again is written only after
# the kernels that read it before have finished.
_POOL = ArrayPool(lambda shape, dtype: cuda.device_array(shape, dtype=dtype), min_bytes=1,
                  shared=_memory_shared)


def _empty(shape, dtype):
    """An uninitialised device array from the pool, reused once no one holds it."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else shape
    if not _pool_usable():
        return cuda.device_array(shape, dtype=np.dtype(dtype))
    return _POOL.empty(shape, dtype)


def _zeros(shape, dtype):
    """:func:`_empty` filled with zeros by a kernel."""
    return fill_zeros(_empty(shape, dtype))


def _zero_bias(bias, length, dtype):
    """``bias`` on the device, or zeros when it is None (one kernel handles both)."""
    return _zeros((length,), dtype) if bias is None else _dev(bias)

"""Arrays recycled across calls, so that a training step stops paying for fresh memory.

A training step allocates the same large arrays every time: activations, their
gradients, padded copies of the input. glibc hands a freed block of that size
back to the system, so the next step's array is fresh memory again, and every
4 KiB page of it faults on first touch. (A profile of the reference ConvNet at
batch 64 went from 17.4 to 16.0 ms with this pool; see ``benchmarks/RESULTS.md``.)

:class:`ArrayPool` keeps each large array it hands out and hands it out again,
for the same shape and dtype, once nothing but the pool refers to it
(``sys.getrefcount``). An array the caller still holds, or any view of it (a
NumPy view holds its base), is never handed out twice. Small host arrays are not
worth the bookkeeping and come straight from the allocator.

The cuda target keeps its device arrays in a pool of its own (every allocation
there is a driver call, and numba-cuda's frees can synchronise the device). A
device array's views do not hold the array object, only its memory, so that
pool also asks ``shared(array)`` whether such a view is still alive.
"""

import math
import sys
import threading

import numpy as np

from .. import config

# references to an idle pooled array inside _take_idle: the pool's list, the local
# variable and getrefcount's own argument
_IDLE_REFS = 3


class ArrayPool:
    """Arrays of at least ``config.ARRAY_POOL_MIN_BYTES``, reused once released.

    Parameters
    ----------
    allocate : callable ``(shape, dtype) -> array``
        Makes a new array (``np.empty`` for the cpu target).
    min_bytes : int, optional
        Smaller arrays bypass the pool; by default ``config.ARRAY_POOL_MIN_BYTES``,
        read at every call.
    shared : callable ``array -> bool``, optional
        True while something other than the array object refers to its memory (a
        device array's views); such an array is not handed out again.

    Notes
    -----
    The pool holds at most ``config.ARRAY_POOL_MAX_BYTES``: past that, idle
    arrays of the least recently used shapes are dropped, and a new array that
    still does not fit is handed out without being kept. Thread-safe.
    """

    def __init__(self, allocate, min_bytes=None, shared=None):
        self._allocate = allocate
        self._min_bytes = min_bytes
        self._shared = shared
        self._arrays = {}  # (shape, dtype) -> [array, ...], least recently used first
        self._bytes = 0
        self._lock = threading.Lock()

    def empty(self, shape, dtype):
        """An uninitialised array of ``shape`` and ``dtype`` that no one else holds."""
        shape = tuple(int(s) for s in shape)
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        min_bytes = config.ARRAY_POOL_MIN_BYTES if self._min_bytes is None else self._min_bytes
        if nbytes < min_bytes:
            return self._allocate(shape, dtype)
        key = (shape, dtype)
        with self._lock:
            arrays = self._arrays.pop(key, [])
            self._arrays[key] = arrays  # now the most recently used shape
            array = self._take_idle(arrays, shape, dtype)
            if array is not None:
                return array
            array = self._allocate(shape, dtype)
            if self._make_room(nbytes):
                arrays.append(array)
                self._bytes += nbytes
            elif not arrays:
                del self._arrays[key]  # keep no entry for a shape the pool does not hold
            return array

    def zeros(self, shape, dtype):
        """A zero-filled host array of ``shape`` and ``dtype`` that no one else holds."""
        array = self.empty(shape, dtype)
        array.fill(0)
        return array

    def clear(self):
        """Forget every pooled array (those still in use live on with their holders)."""
        with self._lock:
            self._arrays.clear()
            self._bytes = 0

    @property
    def nbytes(self):
        """Bytes of the arrays the pool keeps, idle or in use."""
        return self._bytes

    def _take_idle(self, arrays, shape, dtype):
        """The first of ``arrays`` that nothing outside the list refers to, or None.

        An idle array whose shape, dtype or layout was changed in place (``a.shape =
        ...`` is legal NumPy) no longer fits its slot: it is dropped.
        """
        for i in range(len(arrays)):
            array = arrays[i]
            if sys.getrefcount(array) != _IDLE_REFS or (self._shared and self._shared(array)):
                continue
            if array.shape == shape and array.dtype == dtype and array.flags["C_CONTIGUOUS"]:
                return array
            del arrays[i]
            self._bytes -= array.nbytes
            return None
        return None

    def _make_room(self, nbytes):
        """Drop idle arrays, least recently used shape first, until ``nbytes`` fit."""
        budget = config.ARRAY_POOL_MAX_BYTES
        for arrays in list(self._arrays.values()):
            if self._bytes + nbytes <= budget:
                break
            for i in reversed(range(len(arrays))):
                if sys.getrefcount(arrays[i]) == _IDLE_REFS - 1:  # list + argument
                    self._bytes -= arrays.pop(i).nbytes
                    if self._bytes + nbytes <= budget:
                        break
        return self._bytes + nbytes <= budget

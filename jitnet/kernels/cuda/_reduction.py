"""The shared-memory block reduction (a device function factory), and the one-block
sum that brings a loss value back to the host.
"""

import functools

import numba
import numpy as np

from ._launch import _reduction_threads
from .arrays import _empty
from .device import cuda, jit


@functools.lru_cache(maxsize=None)
def _make_block_sum(threads):
    """A device function summing one value per thread of a ``threads``-thread block.

    Every thread of the block must call it (it synchronises) with the same shared
    scratch array of at least ``threads`` elements; every thread gets the total. The
    tree is fixed, so the sum is reproducible.
    """

    @jit(device=True)
    def block_sum(scratch, tid, value):
        scratch[tid] = value
        cuda.syncthreads()
        half = threads // 2
        while half > 0:
            if tid < half:
                scratch[tid] += scratch[tid + half]
            cuda.syncthreads()
            half //= 2
        total = scratch[0]
        cuda.syncthreads()  # all have read scratch[0] before it is reused
        return total

    return block_sum


@functools.lru_cache(maxsize=None)
def _make_sum_kernel(threads):
    """One block sums a flat float64 array into ``out[0] * scale`` (loss values)."""
    block_sum = _make_block_sum(threads)

    @jit
    def sum_kernel(values, scale, out):
        scratch = cuda.shared.array(threads, numba.float64)
        tid = cuda.threadIdx.x
        acc = 0.0
        for i in range(tid, values.size, threads):
            acc += values[i]
        total = block_sum(scratch, tid, acc)
        if tid == 0:
            out[0] = total * scale

    return sum_kernel


def _mean_to_host(values):
    """Mean of a flat float64 device array as a Python float: the one host copy."""
    threads = _reduction_threads()
    out = _empty(1, np.float64)
    _make_sum_kernel(threads)[1, threads](values, 1.0 / max(values.size, 1), out)
    return float(out.copy_to_host()[0])

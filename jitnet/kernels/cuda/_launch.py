"""Launch shapes, read from :mod:`jitnet.config` at every call (never inside a
kernel), so tests can patch them tiny.
"""

import numba
import numpy as np

from ... import config


def _grid_1d(n):
    """``(blocks, threads)`` for a 1-D grid-stride loop over ``n`` items."""
    threads = int(config.CUDA_THREADS_PER_BLOCK)
    blocks = min(max(1, -(-n // threads)), int(config.CUDA_MAX_BLOCKS))
    return blocks, threads


def _reduction_threads():
    """Threads per block of a shared-memory tree reduction: a power of two."""
    return 1 << (max(1, int(config.CUDA_THREADS_PER_BLOCK)).bit_length() - 1)


def _tile():
    """Side of the square tiles; at most 32, as a block holds at most 1024 threads."""
    return min(32, max(1, int(config.CUDA_TILE)))


def _numba_type(dtype):
    return numba.from_dtype(np.dtype(dtype))


def _cdiv(a, b):
    return -(-a // b)

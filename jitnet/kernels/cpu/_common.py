"""What every module of the cpu target shares: Numba's options for each kind of
kernel, and the normalisers of ``stride`` / ``padding`` arguments."""

from ... import config

_JIT = dict(parallel=True, cache=True, fastmath=config.FASTMATH)
# Exact kernels (losses, dropout masks, optimizer steps) keep IEEE semantics so
# that every target rounds the same way.
_JIT_EXACT = dict(parallel=True, cache=True)
# Kernels whose work is always tiny (packing a weight, a bias, a row of
# scores) run serially: starting a parallel region costs more than the work,
# and every region is a barrier that stalls when the machine is busy.
_JIT_SMALL = dict(cache=True, fastmath=config.FASTMATH)
_JIT_EXACT_SMALL = dict(cache=True)
# Long sums that fast-math would let LLVM reorder, written out in lanes instead
# (the batch-norm statistics and gradients): without ``reassoc`` LLVM keeps the
# order of the source, and the lanes are what vectorises. With it, a parallel
# kernel's sums came out with other last bits in the process that compiled it than
# in one that loaded it from Numba's cache: Numba runs a prange body as compiled on
# its own, but caches the copy it optimised again inside its caller (numba#10617
# reports the same difference as a speed one). Found by
# ``tests/test_cache_bits.py``, which compares every kernel both ways.
_JIT_ORDERED = dict(parallel=True, cache=True,
                    fastmath=config.FASTMATH - {"reassoc"})


def _pair(v):
    """``v`` as a pair of ints (an int means the same value for height and width)."""
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _square(name, v):
    """The one int of a square ``stride`` / ``padding`` (an int or an equal pair)."""
    a, b = _pair(v)
    if a != b:
        raise ValueError(f"the cpu convolution expected a square {name}, got {v!r}")
    return a

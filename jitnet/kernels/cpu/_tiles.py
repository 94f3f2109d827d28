"""Register tiles: the vector width the kernels are compiled for and the shapes of
the tiles the convolution and matrix-product kernels keep in registers.

A tile is 16 AVX-512 accumulators in float32, and per reduction step 16 fused
multiply-adds take 10 loads (the row weight gradient's: 20 accumulators, 20
multiply-adds for 9 loads). With 256-bit vectors (AVX2: 16 registers, 8 lanes) the
tiles shrink to 8 accumulators (``_LANES``, ``_PIX``, ``_ROWS_OUT``, ``_WROWS_OUT``):
the 16-lane tiles on such a CPU spilled their accumulators to the stack, and every
kernel ran 2-5x slower. The statements for the tile are written out by hand: LLVM
keeps it in registers only when every access has a constant offset (no inner loop
with a runtime trip count). Column indices are unsigned: Numba's negative-index
fix-up otherwise costs four integer instructions per load (measured: conv2 forward
100 -> 154 GFLOP/s per core).

Only LLVM's loop vectoriser makes the vector code: Numba runs LLVM without the
SLP vectoriser (off by default since 2023 for miscompilations, numba PR #8852).
A loop with a constant trip count and a small body is unrolled in full before
the loop vectoriser runs, and what is left is scalar. The tiles' lane loops keep
their vectors (their bodies, 16 multiply-adds, are not unrolled); a store
epilogue's ``for lane in range(_LANES)`` became 16 scalar stores a row (conv1's
forward 2.2x slower), so the epilogues loop to a count known only at run time
(:func:`.conv_rows._store_tile`).
"""

import numba

from ...codegen import njit, vector_lanes

#: float32 lanes of one vector register as the kernels are compiled: 16 with
#: 512-bit vectors (AVX-512), else 8 (:func:`jitnet.codegen.vector_lanes`).
_LANES = vector_lanes()
#: Output channels per register tile (two vectors).
_FB = 2 * _LANES
#: Output pixels (or rows of ``a``) per register tile: 8 x 2 vectors with the 32
#: vector registers of AVX-512, 4 x 2 with AVX2's 16 (8 accumulators, 2 vectors
#: and 4 broadcasts). The micro-kernels write out 8 and leave the last 4 to
#: ``if _PIX == 8`` (a constant: the dead statements are not compiled); an 8 x 2
#: tile of 256-bit vectors spilled a register per multiply-add (2-core Zen 3, batch
#: 64: conv2 forward 13.4 -> 6.4 ms, fc1 forward 5.6 -> 1.7 ms; with 6 rows LLVM
#: still spilled, as it loads every broadcast first).
_PIX = 8 if _LANES == 16 else 4


def _conv_out_size(size, k, s, p):
    return (size + 2 * p - k) // s + 1


@njit(inline="always")
def _tile_fma(acc, j, s0, s1, s2, s3, s4, s5, s6, s7, va, vb):
    """Lane ``j`` of the ``_PIX`` x ``2 _LANES`` register tile: ``acc[p, j] += s_p * va``
    and ``acc[p, _LANES + j] += s_p * vb`` for its rows ``p`` (8, or 4 with AVX2).

    Inlined into the caller's lane loop ``for j in range(_LANES)``, whose iterations
    the vectoriser turns into vector instructions on two vectors ``va``, ``vb`` and
    ``_PIX`` broadcast scalars ``s_p``: fused multiply-adds on accumulators that
    stay in registers (every index a constant offset).
    """
    acc[0, j] += s0 * va
    acc[1, j] += s1 * va
    acc[2, j] += s2 * va
    acc[3, j] += s3 * va
    acc[0, _LANES + j] += s0 * vb
    acc[1, _LANES + j] += s1 * vb
    acc[2, _LANES + j] += s2 * vb
    acc[3, _LANES + j] += s3 * vb
    if _PIX == 8:  # a constant: the rows that 32 vector registers have room for
        acc[4, j] += s4 * va
        acc[5, j] += s5 * va
        acc[6, j] += s6 * va
        acc[7, j] += s7 * va
        acc[4, _LANES + j] += s4 * vb
        acc[5, _LANES + j] += s5 * vb
        acc[6, _LANES + j] += s6 * vb
        acc[7, _LANES + j] += s7 * vb


def _blocks(n):
    return (n + _FB - 1) // _FB


def _chunks(n_tiles):
    """Chunks of tiles for a chunked kernel: a few per thread balance the load.

    Every chunked kernel sums each output in a fixed order, so results do not
    depend on this number (nor on the thread count).
    """
    return min(n_tiles, 2 * numba.get_num_threads())

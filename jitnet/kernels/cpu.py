"""The ``"cpu"`` target: parallel Numba kernels.

Every public function has the signature of its twin in :mod:`.numpy_ref` (the
reference and test oracle). A public function is a thin wrapper that
normalises arguments and allocates outputs; the work happens in an
``@njit(parallel=True, cache=True)`` core named ``_<name>`` (STUMPY style).

Race freedom: every ``prange`` below carries a comment naming the output
slice its iterations own. Reductions across the parallel axis (weight and
bias gradients, batch-norm statistics, loss sums) are arranged so that each
iteration owns one output element or row and sums in a fixed order, so
results are bitwise reproducible whatever the thread count.
"""

import functools
import math
import sys
import types

import numba
import numpy as np
from llvmlite import binding as _llvm_binding
from llvmlite import ir as _llvm_ir
from numba import prange
from numba.core import cgutils as _cgutils
from numba.cpython.unsafe.numbers import trailing_zeros as _trailing_zeros
from numba.extending import intrinsic as _intrinsic

from .. import config
from ..codegen import njit, vector_lanes
from . import conv_pool_backward_calls
from .pool import ArrayPool

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


# --------------------------------------------------------------------------
# arrays of the target
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# convolution
#
# Two register-blocked micro-kernel layouts, each chosen where it fills more
# vector lanes (measured tables in the wrappers' docstrings):
#
# - Row vectors (stride 1): vectors run along an output row, on zero-padded
#   NCHW planes, so nothing is transposed. Forward and input gradient tile 8
#   output channels x 2 rows x 16 columns (:func:`_conv2d_rows`); the weight
#   gradient tiles 4 output channels x 5 (c, kh, kw) triples and sums the lanes
#   at the end (:func:`_conv2d_weight_rows`); a 3x3 kernel's, 2 output channels
#   x one input channel's 9 taps, two rows at a time (:func:`_conv2d_weight_rows3x3`).
# - Channel vectors: images are channel-last and zero-padded,
#   ``xh[n, g, h, w * Cg + c]`` (group-major, NHWC within a group), so that one
#   kernel row of one output pixel, ``(kw, c)``, is a contiguous span of
#   ``KW * Cg`` numbers whatever the stride. Weights are packed as
#   ``wpk[g, fb, kh, kw * Cg + c, j]`` with ``j`` a block of ``_FB`` output
#   channels (zero-padded). The tile is 8 output pixels x 32 output channels
#   (:func:`_conv2d_tiles`, :func:`_conv2d_weight_tiles`): strided
#   convolutions, narrow planes, and weight gradients with much reduction
#   per pixel.
#
# Either way a tile is 16 AVX-512 accumulators in float32, and per reduction
# step 16 fused multiply-adds take 10 loads (the row weight gradient's: 20
# accumulators, 20 multiply-adds for 9 loads). With 256-bit vectors (AVX2: 16
# registers, 8 lanes) the tiles shrink to 8 accumulators (``_LANES``, ``_PIX``,
# ``_ROWS_OUT``, ``_WROWS_OUT``): the 16-lane tiles on such a CPU spilled their
# accumulators to the stack, and every kernel ran 2-5x slower. The statements for the tile are
# written out by hand: LLVM keeps it in registers only when every access has a
# constant offset (no inner loop with a runtime trip count). Column indices are
# unsigned: Numba's negative-index fix-up otherwise costs four integer
# instructions per load (measured: conv2 forward 100 -> 154 GFLOP/s per core).
#
# Only LLVM's loop vectoriser makes the vector code: Numba runs LLVM without the
# SLP vectoriser (off by default since 2023 for miscompilations, numba PR #8852).
# A loop with a constant trip count and a small body is unrolled in full before
# the loop vectoriser runs, and what is left is scalar. The tiles' lane loops keep
# their vectors (their bodies, 16 multiply-adds, are not unrolled); a store
# epilogue's ``for lane in range(_LANES)`` became 16 scalar stores a row (conv1's
# forward 2.2x slower), so the epilogues loop to a count known only at run time
# (:func:`_store_tile`).
# --------------------------------------------------------------------------

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


@njit(**_JIT)
def _to_padded_nhwc(x, xh, top, left, sh, sw):
    """``x`` (N, C, H, W) into ``xh`` (N, G, Hp, Wp * Cg), every element of ``xh``
    written: element ``x[n, g * Cg + c, h, w]`` at row ``top + h * sh``, column
    ``left + w * sw``, zeros everywhere else.

    ``sh = sw = 1`` is plain padding, larger values dilate (the upstream gradient of
    a strided convolution, for its input gradient). Offsets below zero crop.
    """
    n_img, n_ch, h_n, w_n = x.shape
    groups, hp_n = xh.shape[1], xh.shape[2]
    cg = n_ch // groups
    wp_n = xh.shape[3] // cg
    zero = xh.dtype.type(0)
    # No race: iteration t owns row t % Hp of xh[t // Hp]. Writes run along the
    # channel-last row and reads gather from the C input rows of one image row (a
    # few KiB, in L1): 2.4x faster than scattering along the input rows for 32
    # channels on 32x32 (0.9 vs 2.2 ms at batch 64). The zeros are written here
    # rather than by NumPy before: the border's four slice assignments took 0.065
    # of 0.145 ms for conv2's weight gradient at batch 64 (2-core Zen 5).
    # Plain padding (sh = sw = 1) takes a row's zeros and its copied run as loops of
    # their own, with unsigned offsets, rather than a test of every column: 0.12 ->
    # 0.08 ms for conv2's input at batch 64, 0.14 -> 0.07 for conv1's (3 channels).
    xf = x.reshape((n_img, n_ch, h_n * w_n))
    for t in prange(n_img * hp_n):
        n = t // hp_n
        i = t % hp_n
        hs = i - top  # the source row times sh, when that is one
        if sh == 1 and sw == 1:
            j0 = min(max(left, 0), wp_n)  # the first column with a source element
            j1 = min(max(left + w_n, 0), wp_n)  # and its end
            if hs < 0 or hs >= h_n:
                j0 = j1 = wp_n
            for g in range(groups):
                row = xh[n, g, i]
                for j in range(j0 * cg):
                    row[j] = zero
                for j in range(j1 * cg, wp_n * cg):
                    row[j] = zero
                src = np.uint64(hs * w_n - left)  # column j's source is src + j
                for j in range(j0, j1):
                    base = np.uint64(j * cg)
                    for c in range(cg):
                        row[base + np.uint64(c)] = xf[n, g * cg + c, src + np.uint64(j)]
            continue
        h = hs // sh
        row_in = hs >= 0 and hs % sh == 0 and h < h_n
        for g in range(groups):
            for j in range(wp_n):
                ws = j - left
                w = ws // sw
                base = np.uint64(j * cg)
                if row_in and ws >= 0 and ws % sw == 0 and w < w_n:
                    for c in range(cg):
                        xh[n, g, i, base + np.uint64(c)] = x[n, g * cg + c, h, w]
                else:
                    for c in range(cg):
                        xh[n, g, i, base + np.uint64(c)] = zero


@njit(**_JIT_SMALL)
def _pack_weight(weight, wpk, flip):
    """``weight`` (G * Fg, Cg, KH, KW) -> ``wpk`` (G, FB, KH, KW * Cg, _FB), zero-padded.

    With ``flip`` the kernel is turned by 180 degrees (``kh -> KH-1-kh``, same
    for ``kw``), as the input gradient needs.
    """
    groups, n_blocks, kh_n = wpk.shape[0], wpk.shape[1], wpk.shape[2]
    f_per_group, cg, kw_n = weight.shape[0] // groups, weight.shape[1], weight.shape[3]
    for t in range(groups * n_blocks):
        g = t // n_blocks
        fb = t % n_blocks
        for kh in range(kh_n):
            for kw in range(kw_n):
                for c in range(cg):
                    for j in range(_FB):
                        f = fb * _FB + j
                        v = weight.dtype.type(0)
                        if f < f_per_group:
                            if flip:
                                v = weight[g * f_per_group + f, c, kh_n - 1 - kh, kw_n - 1 - kw]
                            else:
                                v = weight[g * f_per_group + f, c, kh, kw]
                        wpk[g, fb, kh, kw * cg + c, j] = v


@njit(**_JIT)
def _conv2d_tiles(xh, wpk, bias, y, s, cg, n_chunks):
    """The forward micro-kernel: ``y`` (N, F, HO, WO) from ``xh`` and ``wpk``.

    One tile is 8 output pixels of one row times 32 output channels. The
    last tile of a row recomputes the row's last pixel in its unused slots
    (clamped indices) and stores only the valid ones.
    """
    n_img, n_out, ho_n, wo_n = y.shape
    groups, n_blocks, kh_n, r_n = wpk.shape[0], wpk.shape[1], wpk.shape[2], wpk.shape[3]
    f_per_group = n_out // groups
    n_tiles = (wo_n + _PIX - 1) // _PIX
    last = wo_n - 1
    n_rows = n_img * ho_n
    per_chunk = (n_rows + n_chunks - 1) // max(n_chunks, 1)
    # No race: iteration chunk owns its rows t, and t the output row y[n, :, ho, :].
    # (Chunks of rows, so that each allocates its tile once, as in _conv2d_rows.)
    for chunk in prange(n_chunks):
        acc = np.empty((_PIX, _FB), dtype=y.dtype)
        for t in range(chunk * per_chunk, min(chunk * per_chunk + per_chunk, n_rows)):
            n = t // ho_n
            ho = t % ho_n
            for g in range(groups):
                for fb in range(n_blocks):
                    for tile in range(n_tiles):
                        wo0 = tile * _PIX
                        # Column of pixel p's window in the channel-last row. Unsigned:
                        # no negative-index fix-up (4 integer instructions) per load.
                        i0 = np.uint64(min(wo0, last) * s * cg)
                        i1 = np.uint64(min(wo0 + 1, last) * s * cg)
                        i2 = np.uint64(min(wo0 + 2, last) * s * cg)
                        i3 = np.uint64(min(wo0 + 3, last) * s * cg)
                        i4 = np.uint64(min(wo0 + 4, last) * s * cg)
                        i5 = np.uint64(min(wo0 + 5, last) * s * cg)
                        i6 = np.uint64(min(wo0 + 6, last) * s * cg)
                        i7 = np.uint64(min(wo0 + 7, last) * s * cg)
                        for j in range(_FB):
                            for p in range(_PIX):
                                acc[p, j] = 0
                        for kh in range(kh_n):
                            h = ho * s + kh
                            for r in range(r_n):
                                u = np.uint64(r)
                                x0 = xh[n, g, h, i0 + u]
                                x1 = xh[n, g, h, i1 + u]
                                x2 = xh[n, g, h, i2 + u]
                                x3 = xh[n, g, h, i3 + u]
                                x4 = xh[n, g, h, i4 + u]
                                x5 = xh[n, g, h, i5 + u]
                                x6 = xh[n, g, h, i6 + u]
                                x7 = xh[n, g, h, i7 + u]
                                for j in range(_LANES):
                                    wa = wpk[g, fb, kh, r, j]
                                    wb = wpk[g, fb, kh, r, _LANES + j]
                                    _tile_fma(acc, j, x0, x1, x2, x3, x4, x5, x6, x7, wa, wb)
                        f0 = g * f_per_group + fb * _FB
                        for j in range(min(_FB, f_per_group - fb * _FB)):
                            b = bias[f0 + j]
                            for p in range(min(_PIX, wo_n - wo0)):
                                y[n, f0 + j, ho, wo0 + p] = acc[p, j] + b


def _blocks(n):
    return (n + _FB - 1) // _FB


def _chunks(n_tiles):
    """Chunks of tiles for a chunked kernel: a few per thread balance the load.

    Every chunked kernel sums each output in a fixed order, so results do not
    depend on this number (nor on the thread count).
    """
    return min(n_tiles, 2 * numba.get_num_threads())


def _conv_channel_last(x, groups, top, left, hp, wp, sh=1, sw=1):
    """``x`` (N, C, H, W) as zero-padded (optionally dilated) channel-last ``xh``."""
    n, c = x.shape[0], x.shape[1]
    xh = _empty((n, groups, hp, wp * (c // groups)), dtype=x.dtype)
    _to_padded_nhwc(x, xh, top, left, sh, sw)
    return xh


def _conv_forward_core(xh, weight, bias, y, stride, groups, flip=False):
    f, cg, kh, _ = weight.shape
    wpk = _empty((groups, _blocks(f // groups), kh, weight.shape[3] * cg, _FB), dtype=y.dtype)
    _pack_weight(weight, wpk, flip)
    _conv2d_tiles(xh, wpk, bias, y, stride, cg, _chunks(y.shape[0] * y.shape[2]))


def conv2d_forward(x, weight, bias, stride, padding, groups):
    """2-D cross-correlation, as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : ndarray, (N, C, H, W), float32 or float64
    weight : ndarray, (F, C // groups, KH, KW), x's dtype
    bias : ndarray, (F,), or None
    stride, padding : int (or a pair of equal ints)
    groups : int, divides C and F

    Returns
    -------
    y : ndarray, (N, F, HO, WO), x's dtype,
        ``HO = (H + 2 * padding - KH) // stride + 1`` (likewise WO).

    Notes
    -----
    ``y[n, f, i, j] = bias[f] + sum_{c, a, b} weight[f, c, a, b] *
    xpad[n, g * C/G + c, i * stride + a, j * stride + b]`` computed directly
    (no im2col buffer): for stride 1 on wide enough rows by :func:`_conv2d_rows`
    on zero-padded planes, otherwise by :func:`_conv2d_tiles` on a channel-last
    padded copy (see :func:`_rows_pay`).
    """
    x, weight, b, s, p, groups, out_shape = _conv_arguments(x, weight, bias, stride, padding,
                                                           groups)
    if s == 1 and _rows_pay(out_shape[1] // groups, out_shape[3]):
        return _conv_rows(x, weight, b, out_shape, p, p, groups)
    h, w = x.shape[2], x.shape[3]
    xh = _conv_channel_last(x, groups, p, p, h + 2 * p, w + 2 * p)
    y = _empty(out_shape, dtype=x.dtype)
    _conv_forward_core(xh, weight, b, y, s, groups)
    return y


def _conv_arguments(x, weight, bias, stride, padding, groups):
    """The forward's arguments as its kernels take them, and its output shape.

    Returns ``(x, weight, bias, stride, padding, groups, (N, F, HO, WO))``: C-contiguous
    arrays of x's dtype (a zero bias for None), and plain ints.
    """
    s = _square("stride", stride)
    p = _square("padding", padding)
    x = np.ascontiguousarray(x)
    dtype = x.dtype
    n, _, h, w = x.shape
    f, _, kh, kw = weight.shape
    out_shape = (n, f, _conv_out_size(h, kh, s, p), _conv_out_size(w, kw, s, p))
    b = _zeros(f, dtype=dtype) if bias is None else np.ascontiguousarray(bias, dtype=dtype)
    weight = np.ascontiguousarray(weight, dtype=dtype)
    return x, weight, b, s, p, int(groups), out_shape


def conv2d_maxpool2d_forward(x, weight, bias, stride, padding, groups, pool_size, pool_stride,
                             relu=False):
    """:func:`conv2d_forward` then :func:`maxpool2d_forward` (then, with ``relu``,
    :func:`relu_forward` of the pooling), equal bit for bit.

    Returns ``(y, argmax)`` of the pooling. A stride-1 convolution on the row kernel
    with 2x2 pooling (stride 2) pools in the kernel's epilogue (:func:`_conv2d_rows`
    with ``pooled``): the convolution's output, the largest array of a first layer,
    is neither written nor read back. At batch 64, two threads: conv1
    and its pooling 1.12 -> 0.87 ms, conv2 and its pooling 2.66-2.85 -> 2.40-2.54 ms.
    The ReLU rides in the same epilogue. Any other case runs the kernels in turn.
    """
    x, weight, b, s, p, groups, out_shape = _conv_arguments(x, weight, bias, stride, padding,
                                                           groups)
    pool_2x2 = int(pool_size) == int(pool_stride) == 2
    if s == 1 and pool_2x2 and _rows_pay(out_shape[1] // groups, out_shape[3]):
        return _conv_rows(x, weight, b, out_shape, p, p, groups, pool=True, relu=relu)
    y, argmax = maxpool2d_forward(conv2d_forward(x, weight, b, s, p, groups), pool_size,
                                  pool_stride)
    return (relu_forward(y) if relu else y), argmax


#: Images a weight-gradient tile sums in registers before it adds them to ``part``
#: (the block's inputs stay in cache for all the chunk's tiles).
_WTILE_IMAGES = 8


@njit(inline="always")
def _pixel_offsets(xh, ho_n, wo_n, s, cg):
    """``(HO * WO, row length, offsets, flat xh)`` for a weight-gradient tile that runs
    over an image's output pixels in one loop.

    ``offsets[ho * WO + wo]`` (unsigned) is where the window of output pixel
    ``(ho, wo)`` starts in the flat padded image ``xh[n, g]`` (row ``ho * s``,
    column ``wo * s``). With a loop per output row LLVM stored the 16 accumulators
    and worked out the rows' addresses at every row's end: conv2's weight gradient,
    batch 64, 3.92 -> 3.59 ms (``benchmarks/ab.py --kernels``, same bits).
    """
    hw = ho_n * wo_n
    row_n = xh.shape[3]
    offsets = np.empty(hw, dtype=np.uint64)
    for i in range(hw):
        offsets[i] = (i // wo_n) * s * row_n + (i % wo_n) * s * cg
    return hw, row_n, offsets, xh.reshape((xh.shape[0], xh.shape[1], xh.shape[2] * row_n))


@njit(inline="always")
def _triple_at(q, q_n, r_n, row_n):
    """Unsigned offset of ``(kh, kw, c)`` triple ``q`` (clamped to the last) in a flat
    channel-last image with rows of ``row_n``: ``kh * row_n + kw * Cg + c``."""
    q = min(q, q_n - 1)
    return np.uint64(q // r_n * row_n + q % r_n)


@njit(**_JIT)
def _conv2d_weight_tiles(dyh, xh, dweight, s, n_chunks, part):
    """Weight gradient micro-kernel.

    ``dweight[g * Fg + f, c, kh, kw] = sum_{n, ho, wo} dy[n, g * Fg + f, ho, wo] *
    xpad[n, g * Cg + c, ho * s + kh, wo * s + kw]``. ``dyh`` is the upstream
    gradient in channel blocks, ``dyh[n, g, fb, ho, wo, j] = dy[n, g * Fg + fb * 32 + j,
    ho, wo]`` (zero past Fg). A tile is 8 consecutive ``(kh, kw, c)`` triples
    times 32 output channels (16 registers). ``part`` (tiles, 8, 32), zeroed by
    the caller, holds each tile's running sums between blocks of images.

    Notes
    -----
    Iteration ``chunk`` of the ``prange`` owns a contiguous run of tiles and
    visits them a block of ``_WTILE_IMAGES`` images at a time, so the block of
    ``dyh`` and ``xh`` is read from cache by all its tiles rather than the whole
    batch streaming from memory once per tile. A tile sums a block in registers,
    ``n``, ``ho``, ``wo`` in ascending order, and adds it to ``part``; the blocks
    are added in order, whatever ``n_chunks`` and the thread count.
    """
    n_img, groups, n_blocks, ho_n, wo_n = dyh.shape[:5]
    n_out, cg, kh_n, kw_n = dweight.shape
    f_per_group = n_out // groups
    r_n = kw_n * cg
    q_n = kh_n * r_n
    n_qt = (q_n + _PIX - 1) // _PIX
    n_t = groups * n_blocks * n_qt
    hw, row_n, x_at, xf = _pixel_offsets(xh, ho_n, wo_n, s, cg)
    dyf = dyh.reshape((n_img, groups, n_blocks, hw, _FB))
    per_chunk = (n_t + n_chunks - 1) // n_chunks
    # No race: iteration chunk owns tiles [t0, t1) of part and of dweight.
    for chunk in prange(n_chunks):
        t0 = chunk * per_chunk
        t1 = min(t0 + per_chunk, n_t)
        acc = np.empty((_PIX, _FB), dtype=dweight.dtype)
        for n0 in range(0, n_img, _WTILE_IMAGES):
            n1 = min(n0 + _WTILE_IMAGES, n_img)
            for t in range(t0, t1):
                g = t // (n_blocks * n_qt)
                fb = (t // n_qt) % n_blocks
                q0 = (t % n_qt) * _PIX
                # Unsigned offset of triple q0 + p, kernel row * row_n + its column in
                # the row (no negative-index fix-up per load); slots past the end
                # repeat the last triple.
                o0 = _triple_at(q0, q_n, r_n, row_n)
                o1 = _triple_at(q0 + 1, q_n, r_n, row_n)
                o2 = _triple_at(q0 + 2, q_n, r_n, row_n)
                o3 = _triple_at(q0 + 3, q_n, r_n, row_n)
                o4 = _triple_at(q0 + 4, q_n, r_n, row_n)
                o5 = _triple_at(q0 + 5, q_n, r_n, row_n)
                o6 = _triple_at(q0 + 6, q_n, r_n, row_n)
                o7 = _triple_at(q0 + 7, q_n, r_n, row_n)
                for p in range(_PIX):
                    for j in range(_FB):
                        acc[p, j] = 0
                for n in range(n0, n1):
                    for i in range(hw):
                        col = x_at[i]
                        x0 = xf[n, g, col + o0]
                        x1 = xf[n, g, col + o1]
                        x2 = xf[n, g, col + o2]
                        x3 = xf[n, g, col + o3]
                        x4 = xf[n, g, col + o4]
                        x5 = xf[n, g, col + o5]
                        x6 = xf[n, g, col + o6]
                        x7 = xf[n, g, col + o7]
                        for j in range(_LANES):
                            da = dyf[n, g, fb, i, j]
                            db = dyf[n, g, fb, i, _LANES + j]
                            _tile_fma(acc, j, x0, x1, x2, x3, x4, x5, x6, x7, da, db)
                for p in range(_PIX):
                    for j in range(_FB):
                        part[t, p, j] += acc[p, j]
        for t in range(t0, t1):
            g = t // (n_blocks * n_qt)
            fb = (t // n_qt) % n_blocks
            q0 = (t % n_qt) * _PIX
            for p in range(min(_PIX, q_n - q0)):
                q = q0 + p
                kh = q // r_n
                kw = (q % r_n) // cg
                c = q % cg
                for j in range(min(_FB, f_per_group - fb * _FB)):
                    dweight[g * f_per_group + fb * _FB + j, c, kh, kw] = part[t, p, j]


@njit(**_JIT)
def _conv2d_weight_channel_tiles(dy, xh, dweight, s, n_chunks, part, dbias, bias_part):
    """Weight gradient with vectors over input channels: ``dy`` stays NCHW.

    ``xh`` is the channel-last padded input of :func:`_conv_channel_last` with
    ``Cg`` a multiple of 32. A tile is 8 output channels (broadcast from ``dy``,
    each plane read along its row) times 32 input channels of one ``(kh, kw)``
    (two vectors of ``xh``): per output pixel 8 broadcasts and 2 vector loads for
    16 fused multiply-adds, and no copy of ``dy`` into channel blocks. ``part``
    (tiles, 8, 32), zeroed by the caller, holds each tile's sums between blocks
    of images.

    With ``dbias`` (F,) not empty, it gets the bias gradient: the tile of each 8
    output channels' first ``(kh, kw)`` and channel block sums their planes of
    ``dy`` after its pixel loop, while the block's images are in cache, into
    ``bias_part`` (G * tiles of 8 channels, 8), zeroed by the caller. (``np.sum``
    over conv2's ``dy``, a pass of its own, took 0.21 ms of a 9.6 ms training step:
    batch 64, 2-core Zen 5.)

    Notes
    -----
    As in :func:`_conv2d_weight_tiles`, iteration ``chunk`` owns a contiguous run
    of tiles and visits them a block of images at a time, in one fixed order
    whatever ``n_chunks``. Channels past a group's end
    repeat its last one and are not stored.
    """
    n_img, n_out, ho_n, wo_n = dy.shape
    groups = xh.shape[1]
    cg, kh_n, kw_n = dweight.shape[1], dweight.shape[2], dweight.shape[3]
    fg = n_out // groups
    n_ft = (fg + _PIX - 1) // _PIX
    n_cb = cg // _FB
    n_t = groups * n_ft * kh_n * kw_n * n_cb
    hw, row_n, x_at, xf = _pixel_offsets(xh, ho_n, wo_n, s, cg)
    dyf = dy.reshape((n_img, n_out, hw))
    summing = dbias.size > 0
    per_chunk = (n_t + n_chunks - 1) // n_chunks
    # No race: iteration chunk owns tiles [t0, t1) of part and their dweight entries
    # (and bias_part's and dbias's entries of the channels of its first-tap tiles).
    for chunk in prange(n_chunks):
        t0 = chunk * per_chunk
        t1 = min(t0 + per_chunk, n_t)
        acc = np.empty((_PIX, _FB), dtype=dweight.dtype)
        for n0 in range(0, n_img, _WTILE_IMAGES):
            n1 = min(n0 + _WTILE_IMAGES, n_img)
            for t in range(t0, t1):
                cb = t % n_cb
                kw = (t // n_cb) % kw_n
                kh = (t // (n_cb * kw_n)) % kh_n
                ft = (t // (n_cb * kw_n * kh_n)) % n_ft
                g = t // (n_cb * kw_n * kh_n * n_ft)
                f_last = g * fg + fg - 1
                f0 = min(g * fg + ft * _PIX, f_last)
                f1 = min(g * fg + ft * _PIX + 1, f_last)
                f2 = min(g * fg + ft * _PIX + 2, f_last)
                f3 = min(g * fg + ft * _PIX + 3, f_last)
                f4 = min(g * fg + ft * _PIX + 4, f_last)
                f5 = min(g * fg + ft * _PIX + 5, f_last)
                f6 = min(g * fg + ft * _PIX + 6, f_last)
                f7 = min(g * fg + ft * _PIX + 7, f_last)
                # Unsigned offset of channel cb * 32 of tap (kh, kw): no fix-up per load.
                c0 = np.uint64(kh * row_n + kw * cg + cb * _FB)
                for p in range(_PIX):
                    for j in range(_FB):
                        acc[p, j] = 0
                for n in range(n0, n1):
                    for i in range(hw):
                        d0 = dyf[n, f0, i]
                        d1 = dyf[n, f1, i]
                        d2 = dyf[n, f2, i]
                        d3 = dyf[n, f3, i]
                        d4 = dyf[n, f4, i]
                        d5 = dyf[n, f5, i]
                        d6 = dyf[n, f6, i]
                        d7 = dyf[n, f7, i]
                        col = x_at[i] + c0
                        for j in range(_LANES):
                            xa = xf[n, g, col + np.uint64(j)]
                            xb = xf[n, g, col + np.uint64(_LANES + j)]
                            _tile_fma(acc, j, d0, d1, d2, d3, d4, d5, d6, d7, xa, xb)
                for p in range(_PIX):
                    for j in range(_FB):
                        part[t, p, j] += acc[p, j]
                if summing and kh == 0 and kw == 0 and cb == 0:
                    for n in range(n0, n1):
                        for p in range(_PIX):
                            f = min(g * fg + ft * _PIX + p, f_last)
                            total = dy.dtype.type(0)
                            for i in range(hw):
                                total += dyf[n, f, i]
                            bias_part[g * n_ft + ft, p] += total
        for t in range(t0, t1):
            cb = t % n_cb
            kw = (t // n_cb) % kw_n
            kh = (t // (n_cb * kw_n)) % kh_n
            ft = (t // (n_cb * kw_n * kh_n)) % n_ft
            g = t // (n_cb * kw_n * kh_n * n_ft)
            for p in range(min(_PIX, fg - ft * _PIX)):
                for j in range(_FB):
                    dweight[g * fg + ft * _PIX + p, cb * _FB + j, kh, kw] = part[t, p, j]
                if summing and kh == 0 and kw == 0 and cb == 0:
                    dbias[g * fg + ft * _PIX + p] = bias_part[g * n_ft + ft, p]


# --------------------------------------------------------------------------
# The input gradient behind a max pooling
#
# A convolution followed by ReLU and a 2x2 max pooling gets an upstream gradient
# with at most one nonzero in four (0.19-0.23 in the reference net's second layer
# at batch 64): the pooling routes each window's gradient to its argmax, the ReLU
# zeroes the negative ones. The dense kernels multiply the zeros too.
# :func:`_conv2d_input_sparse` visits only the nonzeros; it is taken where ``dy`` is
# at most a quarter nonzero (:func:`_sparse_dy`). Skipping a zero drops the
# products ``0 * w``, which are 0 unless ``w`` is infinite or NaN: the weight must
# be finite too.
#
# The weight gradient's twin (each plane's nonzeros compacted, then a register
# tile per output channel; the same bits as the dense tiles) was tried and
# dropped: in the training step, against the dense tiles, 0.965x the step's time
# at batch 64 and 1.039x at 128 (2-core Zen 5, interleaved in one process). A
# nonzero there shares no load with other channels, and LLVM kept storing its
# accumulators on every nonzero.
# --------------------------------------------------------------------------

#: Kernel taps per sparse register tile (two vectors, ``_FB`` channels, each): 9 with
#: AVX-512's 32 registers (18 accumulators), 3 with AVX2's 16 (6).
_SPARSE_TAPS = 9 if _LANES == 16 else 3
#: Largest fraction of nonzeros in ``dy`` for which :func:`_conv2d_input_sparse`
#: runs; a 2x2 max pooling leaves at most a quarter. Measured on the reference net's
#: second layer (batch 64, 2-core Zen 5): 0.12 + 3.0 * density ms, against 1.32 for
#: the dense kernel.
_SPARSE_MAX_DENSITY = 0.25


@njit(inline="always")
def _taps_fma(acc, j, d, wf, col, o0, o1, o2, o3, o4, o5, o6, o7, o8):
    """``acc[t, j] += d * wf[col + o_t + j]`` and the same at ``_LANES + j`` for the
    tile's taps ``t``: lanes ``j`` of their two vectors of channels (the statements
    written out: see the convolution notes above)."""
    u = np.uint64(j)
    v = np.uint64(_LANES + j)
    acc[0, j] += d * wf[col + o0 + u]
    acc[0, _LANES + j] += d * wf[col + o0 + v]
    acc[1, j] += d * wf[col + o1 + u]
    acc[1, _LANES + j] += d * wf[col + o1 + v]
    acc[2, j] += d * wf[col + o2 + u]
    acc[2, _LANES + j] += d * wf[col + o2 + v]
    if _SPARSE_TAPS == 9:
        acc[3, j] += d * wf[col + o3 + u]
        acc[3, _LANES + j] += d * wf[col + o3 + v]
        acc[4, j] += d * wf[col + o4 + u]
        acc[4, _LANES + j] += d * wf[col + o4 + v]
        acc[5, j] += d * wf[col + o5 + u]
        acc[5, _LANES + j] += d * wf[col + o5 + v]
        acc[6, j] += d * wf[col + o6 + u]
        acc[6, _LANES + j] += d * wf[col + o6 + v]
        acc[7, j] += d * wf[col + o7 + u]
        acc[7, _LANES + j] += d * wf[col + o7 + v]
        acc[8, j] += d * wf[col + o8 + u]
        acc[8, _LANES + j] += d * wf[col + o8 + v]


def _sparse_dy(dy):
    """True when ``dy`` (N, F, HO, WO) is at most ``_SPARSE_MAX_DENSITY`` nonzero, as
    counted in its first image (a max pooling's gradient is sparse in every image)."""
    if dy.shape[0] == 0 or dy[0].size == 0:
        return False
    return np.count_nonzero(dy[0]) <= _SPARSE_MAX_DENSITY * dy[0].size


@njit(**_JIT)
def _conv2d_input_sparse(dy, wpk, dx, pad, n_chunks, dyc, g, relu_y, argmax):
    """Input gradient of a stride-1, one-group convolution from the nonzeros of ``dy``.

    ``dx[n, c, h, w] = sum_{f, kh, kw} dy[n, f, h + pad - kh, w + pad - kw] *
    weight[f, c, kh, kw]``, with ``wpk`` (F, KH, KW, C) the weight channel-last. Every
    nonzero of ``dy[n]`` at output pixel ``i`` adds itself times the weights of its
    channel ``f`` to the ``KH x KW`` window of ``dx`` that pixel ``i`` saw. So the
    nonzeros of one pixel, whatever their channel, go to the same window: a tile of
    ``_SPARSE_TAPS`` taps x ``_FB`` channels of it sums them in registers, two vectors
    of the weight per tap and nonzero, and is then added to ``buf``, a zero-padded
    channel-last copy of ``dx[n]`` (``(HO + KH - 1) x (WO + KW - 1) x C``, 41 KiB for
    the reference net's second layer), whose inside is finally written to ``dx[n]``.

    A pixel's nonzero channels are found from a bit mask (bit ``f % 64`` of word
    ``f // 64``), made by one vectorised pass over ``dy[n]``, and visited by their
    trailing zeros, without a branch per channel. The same pass copies ``dy[n]``
    into ``dyc[chunk]`` (n_chunks, F, HO * WO), from which the nonzeros are read:
    read from ``dy`` itself, the kernel was 1.4x slower (conv2 at batch 64, 2-core
    Zen 5; a copy with rows 16 numbers longer was as slow; not understood).
    ``C`` is a multiple of ``_FB`` and ``KH * KW`` of ``_SPARSE_TAPS``; ``wpk`` starts
    on a cache line, as :func:`_empty` allocates it (a NumPy copy 32 bytes into a line
    split every vector load in two: 1.18 against 0.88 ms).

    With ``g`` not empty, ``dy`` is not read (it may be empty): it is the backward of
    a 2x2 max pooling (stride 2) of gradient ``g`` (N, F, U) over the convolution's
    output, each window's value at its ``argmax`` (N, F, U), zero where ``relu_y``
    (N, F, U, or empty: no ReLU) is not positive. The first pass then scatters the
    windows into ``dyc[chunk]`` and the masks instead of copying ``dy[n]``: the same
    ``dyc`` and masks, so the same ``dx``, bit for bit, without the pooling's dense
    ``dy`` (4 MiB for the reference net's second layer at batch 64).

    Notes
    -----
    Iteration ``chunk`` of the ``prange`` owns images ``[n0, n1)`` of ``dx`` and
    ``dyc[chunk]``. Each element of ``dx`` sums over the pixels of ``dy`` in
    ascending order, within a pixel over ``f`` ascending: one fixed order whatever
    ``n_chunks`` and the thread count.

    LLVM keeps the tile in registers across the loop over a pixel's nonzeros (its
    18 multiply-adds take their weights straight from memory) only as written here:
    a flag set inside that loop made it store the tile after every nonzero (1.76x
    slower at 0.19 nonzero), and the pixel's window offset worked out with a
    division at each pixel rather than read from ``corner_at`` cost 1.26x. The
    kernel takes 2.5 s to compile (1.0 s as a serial function: Numba's parallel
    passes over its large loop body); the same loops in a serial function called
    from the ``prange`` compiled slower still and ran 2x slower.
    """
    n_img, n_ch, h_n, w_n = dx.shape
    n_out, kh_n, kw_n = wpk.shape[0], wpk.shape[1], wpk.shape[2]
    ho_n, wo_n = h_n + 2 * pad - kh_n + 1, w_n + 2 * pad - kw_n + 1  # dy's plane
    windows = g.size > 0
    relu = relu_y.size > 0
    q_n = kh_n * kw_n
    n_qt = q_n // _SPARSE_TAPS
    n_tiles = (n_ch // _FB) * n_qt
    n_words = (n_out + 63) // 64
    hw = ho_n * wo_n
    wb = wo_n + kw_n - 1  # buf's row length in pixels
    size = (ho_n + kh_n - 1) * wb * n_ch
    dyf = dy.reshape((dy.shape[0], dy.shape[1], dy.shape[2] * dy.shape[3]))
    wf = wpk.reshape(wpk.size)
    per_chunk = (n_img + n_chunks - 1) // n_chunks
    zero = dx.dtype.type(0)
    # No race: iteration chunk owns dx[n0:n1] and dyc[chunk].
    for chunk in prange(n_chunks):
        n0 = chunk * per_chunk
        n1 = min(n0 + per_chunk, n_img)
        buf = np.empty(size, dtype=dx.dtype)
        acc = np.empty((_SPARSE_TAPS, _FB), dtype=dx.dtype)
        mask = np.empty((n_words, hw), dtype=np.uint64)
        tap = np.empty(q_n, dtype=np.uint64)  # tap q's offset in buf from a window's corner
        for q in range(q_n):
            tap[q] = ((q // kw_n) * wb + q % kw_n) * n_ch
        corner_at = np.empty(hw, dtype=np.uint64)  # where pixel i's window starts in buf
        for i in range(hw):
            corner_at[i] = ((i // wo_n) * wb + i % wo_n) * n_ch
        for n in range(n0, n1):
            for i in range(size):
                buf[i] = zero
            for word in range(n_words):
                for i in range(hw):
                    mask[word, i] = 0
            if windows:
                for f in range(n_out):
                    for i in range(hw):
                        dyc[chunk, f, i] = zero
                    bit = np.uint64(f % 64)
                    for u in range(g.shape[2]):
                        v = g[n, f, u]
                        if relu:
                            v = v if relu_y[n, f, u] > zero else zero
                        i = np.uint64(argmax[n, f, u])
                        mask[f // 64, i] |= np.uint64(v != 0) << bit  # NaN too
                        dyc[chunk, f, i] = v
            else:
                for f in range(n_out):
                    bit = np.uint64(f % 64)
                    for i in range(hw):
                        v = dyf[n, f, i]
                        mask[f // 64, i] |= np.uint64(v != 0) << bit  # NaN too
                        dyc[chunk, f, i] = v
            for tw in range(n_words * n_tiles):
                word = tw // n_tiles
                q0 = (tw % n_qt) * _SPARSE_TAPS
                c0 = ((tw % n_tiles) // n_qt) * _FB
                # Where the tile's taps (channels c0 on) lie in channel f's row of wpk
                o0 = np.uint64(q0 * n_ch + c0)
                o1 = o0 + np.uint64(n_ch)
                o2 = o1 + np.uint64(n_ch)
                o3 = o2 + np.uint64(n_ch)
                o4 = o3 + np.uint64(n_ch)
                o5 = o4 + np.uint64(n_ch)
                o6 = o5 + np.uint64(n_ch)
                o7 = o6 + np.uint64(n_ch)
                o8 = o7 + np.uint64(n_ch)
                for i in range(hw):
                    m = mask[word, i]
                    if m == 0:
                        continue
                    for p in range(_SPARSE_TAPS):
                        for j in range(_FB):
                            acc[p, j] = 0
                    while m != 0:
                        f = word * 64 + _trailing_zeros(m)
                        m &= m - np.uint64(1)
                        d = dyc[chunk, f, i]
                        col = np.uint64(f * q_n * n_ch)
                        for j in range(_LANES):
                            _taps_fma(acc, j, d, wf, col, o0, o1, o2, o3, o4, o5, o6, o7,
                                      o8)
                    corner = corner_at[i] + np.uint64(c0)
                    for p in range(_SPARSE_TAPS):
                        o = corner + tap[q0 + p]
                        for j in range(_FB):
                            buf[o + np.uint64(j)] += acc[p, j]
            for c in range(n_ch):
                for h in range(h_n):
                    row = np.uint64(((h + pad) * wb + pad) * n_ch + c)
                    for w in range(w_n):
                        dx[n, c, h, w] = buf[row + np.uint64(w * n_ch)]


# --------------------------------------------------------------------------
# The weight gradient behind a max pooling, from the pooling's windows
#
# The weight gradient of a convolution followed by a 2x2 max pooling used to run on
# the dense ``dy`` that the pooling's backward writes (8 MiB for the reference net's
# first layer at batch 64, three zeros in four). The pooling's gradient holds one
# number per window and its argmax says which output pixel it goes to, so the
# weight gradient can be summed from the windows directly: per window and output
# channel, the gradient times the input patch under that pixel, a quarter of the
# dense kernel's multiply-adds. The input is copied channel-last and padded, so a
# patch row is ``KW * C`` consecutive numbers:
#
# - :func:`_conv2d_weight_pooled`, inputs of few channels (a first layer), whose
#   patch row fits one vector of 16 lanes: three loads and three multiply-adds per
#   window and output channel, 4 output channels a tile. One channel at 4
#   consecutive windows (a quarter of the row pointers) was 2.8x slower (1.09
#   against 0.38 ms).
# - :func:`_conv2d_weight_pooled_taps`, channels in whole blocks of ``_FB``: 9 taps x
#   32 channels of one output channel a tile, 18 multiply-adds a window, as the
#   sparse input gradient's tile. The reference net's second layer at batch 64: 0.79
#   ms against 1.47 for the pooling's backward, the channel-last copy and the dense
#   tiles, the training step 0.910 (``ab.py``).
#
# Both sum in another order than the dense kernels: the last bits differ (the calls
# of :func:`conv2d_maxpool2d_backward` that take them are bitwise reproducible,
# whatever the thread count).
# --------------------------------------------------------------------------

#: Lanes of one patch row in :func:`_conv2d_weight_pooled`: ``KW * C`` of them are
#: the kernel row's (the rest belong to the next pixel and are not used).
_POOLED_LANES = 16
#: Output channels per tile of :func:`_conv2d_weight_pooled`: 4 x 3 patch rows of 16
#: lanes, 12 AVX-512 registers; 2 with AVX2's 16 registers (a row is two of them).
#: Eight channels (24 registers, and their bias sums) spilled to the stack: 0.58 ms
#: against 0.42 for 4, the reference net's first layer at batch 64.
_PW_OUT = 4 if _LANES == 16 else 2
#: Images per block of :func:`_conv2d_weight_pooled`'s sums (fixed, so that the sums
#: do not depend on the thread count).
_PW_IMAGES = 8


@njit(**_JIT)
def _conv2d_weight_pooled(g, relu_y, argmax, xf, pix, img, rs, kh_n, part, bpart):
    """Partial weight and bias gradients of a stride-1, one-group convolution from
    the gradient ``g`` (N, F, U) of its 2x2 max pooling's U windows.

    ``argmax`` (N, F, U) is each window's flat pixel in the convolution's output
    plane, ``relu_y`` (N, F, U) the output of a ReLU after the pooling (or empty: no
    ReLU), whose non-positive entries stop their window's gradient. ``xf`` is the
    zero-padded input, channel-last, flat: image ``n`` starts at ``n * img``, its
    rows ``rs`` numbers apart, with room for two rows and a vector past the end;
    ``pix[a]`` is the offset of output pixel ``a``'s patch corner in an image.

    Task ``(pass, block, tile)`` sums kernel rows ``3 * pass`` to ``3 * pass + 2``
    (rows past ``KH`` are read and not used) for the tile's ``_PW_OUT`` output
    channels over block ``block`` of ``_PW_IMAGES`` images, window by window, into
    ``part[pass, block, tile]`` (``_PW_OUT``, 3, 16): lane ``kw * C + c`` of row ``r``
    is ``dweight[f, c, 3 * pass + r, kw]``'s. The first pass also sums the bias
    gradient into ``bpart[block, tile]``. Channels past ``F`` repeat the last.
    """
    n_img, n_f, n_u = g.shape
    relu = relu_y.size > 0
    n_ft = (n_f + _PW_OUT - 1) // _PW_OUT
    n_ib = (n_img + _PW_IMAGES - 1) // _PW_IMAGES
    n_pass = (kh_n + 2) // 3
    zero = g.dtype.type(0)
    r1 = np.uint64(rs)
    r2 = np.uint64(2 * rs)
    # No race: task t owns part[pass, block, tile] and, in the first pass,
    # bpart[block, tile].
    for t in prange(n_pass * n_ib * n_ft):
        ps = t // (n_ib * n_ft)
        ib = t // n_ft % n_ib
        ft = t % n_ft
        f0 = min(ft * _PW_OUT, n_f - 1)
        f1 = min(ft * _PW_OUT + 1, n_f - 1)
        f2 = min(ft * _PW_OUT + 2, n_f - 1)
        f3 = min(ft * _PW_OUT + 3, n_f - 1)
        acc = np.zeros((_PW_OUT, 3, _POOLED_LANES), dtype=part.dtype)
        # The bias sums in scalars: in an array, their stores between the
        # multiply-adds kept LLVM from holding acc in registers.
        b0 = b1 = b2 = b3 = zero
        for n in range(ib * _PW_IMAGES, min(ib * _PW_IMAGES + _PW_IMAGES, n_img)):
            xb = np.uint64(n * img + 3 * ps * rs)
            for u in range(n_u):
                v0 = g[n, f0, u]
                v1 = g[n, f1, u]
                v2 = g[n, f2, u]
                v3 = g[n, f3, u]
                if relu:
                    v0 = v0 if relu_y[n, f0, u] > zero else zero
                    v1 = v1 if relu_y[n, f1, u] > zero else zero
                    v2 = v2 if relu_y[n, f2, u] > zero else zero
                    v3 = v3 if relu_y[n, f3, u] > zero else zero
                b0 += v0
                b1 += v1
                b2 += v2
                b3 += v3
                o0 = xb + pix[np.uint64(argmax[n, f0, u])]
                o1 = xb + pix[np.uint64(argmax[n, f1, u])]
                o2 = xb + pix[np.uint64(argmax[n, f2, u])]
                o3 = xb + pix[np.uint64(argmax[n, f3, u])]
                for lane in range(_POOLED_LANES):
                    j = np.uint64(lane)
                    acc[0, 0, lane] += v0 * xf[o0 + j]
                    acc[0, 1, lane] += v0 * xf[o0 + r1 + j]
                    acc[0, 2, lane] += v0 * xf[o0 + r2 + j]
                    acc[1, 0, lane] += v1 * xf[o1 + j]
                    acc[1, 1, lane] += v1 * xf[o1 + r1 + j]
                    acc[1, 2, lane] += v1 * xf[o1 + r2 + j]
                    if _PW_OUT == 4:  # a constant (see _PW_OUT)
                        acc[2, 0, lane] += v2 * xf[o2 + j]
                        acc[2, 1, lane] += v2 * xf[o2 + r1 + j]
                        acc[2, 2, lane] += v2 * xf[o2 + r2 + j]
                        acc[3, 0, lane] += v3 * xf[o3 + j]
                        acc[3, 1, lane] += v3 * xf[o3 + r1 + j]
                        acc[3, 2, lane] += v3 * xf[o3 + r2 + j]
        if ps == 0:
            bpart[ib, ft, 0] = b0
            bpart[ib, ft, 1] = b1
            if _PW_OUT == 4:
                bpart[ib, ft, 2] = b2
                bpart[ib, ft, 3] = b3
        for a in range(_PW_OUT):
            for r in range(3):
                for lane in range(_POOLED_LANES):
                    part[ps, ib, ft, a, r, lane] = acc[a, r, lane]


@njit(**_JIT)
def _conv2d_weight_pooled_taps(g, relu_y, argmax, xf, pix, img, taps, n_cb, part, bpart):
    """:func:`_conv2d_weight_pooled` for inputs whose channels fill whole vectors
    (``C`` a multiple of ``_FB``): a tile is ``_SPARSE_TAPS`` kernel taps x ``_FB``
    channels of one output channel (18 AVX-512 registers), as the sparse input
    gradient's (:func:`_taps_fma`), loaded straight from the channel-last input.

    ``taps`` holds the flat offset of each tap ``(kh, kw)`` from a patch's corner,
    ``kh * rs + kw * C``, in groups of ``_SPARSE_TAPS`` (the last group padded with
    the last tap, summed and not used). Task ``(tap group, channel block, image block,
    f)`` sums into ``part[group, block, image block, f]`` (``_SPARSE_TAPS``, ``_FB``);
    the first tap group of the first channel block also sums the bias gradient into
    ``bpart[image block, f]``.

    No branch in the window loop: with one (skipping a zero gradient), LLVM stored
    the 18 accumulators after every window (1.9 against 0.79 ms, the reference net's
    second layer at batch 64).
    """
    n_img, n_f, n_u = g.shape
    relu = relu_y.size > 0
    n_ib = (n_img + _PW_IMAGES - 1) // _PW_IMAGES
    n_tg = taps.size // _SPARSE_TAPS
    zero = g.dtype.type(0)
    last = _SPARSE_TAPS - 1
    # No race: task t owns part[group, block, image block, f] and, for the first
    # group and block, bpart[image block, f].
    for t in prange(n_tg * n_cb * n_ib * n_f):
        f = t % n_f
        ib = t // n_f % n_ib
        cb = t // (n_f * n_ib) % n_cb
        tg = t // (n_f * n_ib * n_cb)
        q0 = tg * _SPARSE_TAPS
        # (with AVX2's 3 taps a tile, o3 to o8 repeat o2 and are not used)
        o0, o1, o2 = taps[q0], taps[q0 + 1], taps[q0 + 2]
        o3, o4, o5 = taps[q0 + min(3, last)], taps[q0 + min(4, last)], taps[q0 + min(5, last)]
        o6, o7, o8 = taps[q0 + min(6, last)], taps[q0 + min(7, last)], taps[q0 + min(8, last)]
        acc = np.zeros((_SPARSE_TAPS, _FB), dtype=part.dtype)
        b = zero
        for n in range(ib * _PW_IMAGES, min(ib * _PW_IMAGES + _PW_IMAGES, n_img)):
            xb = np.uint64(n * img + cb * _FB)
            for u in range(n_u):
                v = g[n, f, u]
                if relu:
                    v = v if relu_y[n, f, u] > zero else zero
                b += v
                col = xb + pix[np.uint64(argmax[n, f, u])]
                for j in range(_LANES):
                    _taps_fma(acc, j, v, xf, col, o0, o1, o2, o3, o4, o5, o6, o7, o8)
        if tg == 0 and cb == 0:
            bpart[ib, f] = b
        for a in range(_SPARSE_TAPS):
            for j in range(_FB):
                part[tg, cb, ib, f, a, j] = acc[a, j]


@functools.lru_cache(maxsize=64)
def _patch_offsets(ho, wo, rs, c):
    """``pix[oh * wo + ow] = oh * rs + ow * c``: where output pixel ``(oh, ow)``'s patch
    starts in a padded channel-last image with rows ``rs`` numbers apart."""
    a = np.arange(ho * wo)
    pix = ((a // wo) * rs + (a % wo) * c).astype(np.uint64)
    pix.flags.writeable = False
    return pix


def _pooled_weight_grad_pays(x, weight, s, groups, pool_size, pool_stride):
    """:func:`_conv_weight_grad_pooled` applies: stride 1, one group, 2x2 pooling of
    stride 2, a patch row that fits its vector or channels in whole blocks of
    ``_FB``, and a finite ``x`` (a window's gradient misses the zeros of ``dy`` that
    the dense kernel multiplies by ``x``, which are NaN where ``x`` is infinite or
    NaN)."""
    f, c, kh, kw = weight.shape
    return (s == 1 and groups == 1 and int(pool_size) == int(pool_stride) == 2
            and (kw * c <= _POOLED_LANES or c % _FB == 0) and x.size > 0 and f > 0
            and np.isfinite(x).all())


def _conv_weight_grad_pooled(dy, relu_y, argmax, x, weight_shape, p, conv_shape):
    """``(dweight, dbias)`` of a stride-1, one-group convolution from the gradient
    ``dy`` of its 2x2 max pooling: :func:`_conv2d_weight_pooled` where a patch row
    fits a vector, else :func:`_conv2d_weight_pooled_taps`."""
    n, c, h, w = x.shape
    f, _, kh, kw = weight_shape
    hp, wp = h + 2 * p, w + 2 * p
    rs = wp * c
    img = hp * rs
    dtype = x.dtype
    narrow = kw * c <= _POOLED_LANES
    # Narrow rows: two rows and a vector past the last image (a pass reads three
    # kernel rows, and each row a whole vector).
    xf = _empty(n * img + (2 * rs + _POOLED_LANES if narrow else 0), dtype=dtype)
    xf[n * img:] = 0
    _to_padded_nhwc(x, xf[:n * img].reshape(n, 1, hp, rs), p, p, 1, 1)
    pix = _patch_offsets(conv_shape[2], conv_shape[3], rs, c)
    windows = dy.shape[2] * dy.shape[3]
    n_ib = -(-n // _PW_IMAGES)
    g = dy.reshape(n, f, windows)
    argmax = argmax.reshape(n, f, windows)
    relu_y = (np.empty((0, 0, 0), dtype=dtype) if relu_y is None
              else relu_y.reshape(n, f, windows))
    dweight = _empty((f, c, kh, kw), dtype=dtype)
    dbias = _empty(f, dtype=dtype)
    # The image blocks' sums in block order (NumPy adds the slices of a reduced outer
    # axis one after another).
    if narrow:
        n_pass = (kh + 2) // 3
        n_ft = -(-f // _PW_OUT)
        part = _empty((n_pass, n_ib, n_ft, _PW_OUT, 3, _POOLED_LANES), dtype=dtype)
        bpart = _empty((n_ib, n_ft, _PW_OUT), dtype=dtype)
        _conv2d_weight_pooled(g, relu_y, argmax, xf, pix, img, rs, kh, part, bpart)
        # rows (pass, r) of the kernel, lanes (kw, c)
        rows = part.sum(axis=1).transpose(1, 2, 0, 3, 4).reshape(n_ft * _PW_OUT, n_pass * 3,
                                                                  _POOLED_LANES)
        dweight[...] = rows[:f, :kh, :kw * c].reshape(f, kh, kw, c).transpose(0, 3, 1, 2)
        dbias[...] = bpart.sum(axis=0).reshape(-1)[:f]
        return dweight, dbias
    k = kh * kw
    n_tg = -(-k // _SPARSE_TAPS)
    q = np.minimum(np.arange(n_tg * _SPARSE_TAPS), k - 1)
    taps = ((q // kw) * rs + (q % kw) * c).astype(np.uint64)
    n_cb = c // _FB
    part = _empty((n_tg, n_cb, n_ib, f, _SPARSE_TAPS, _FB), dtype=dtype)
    bpart = _empty((n_ib, f), dtype=dtype)
    _conv2d_weight_pooled_taps(g, relu_y, argmax, xf, pix, img, taps, n_cb, part, bpart)
    # (f, channel block, channel, tap group, tap) -> (f, c, kh, kw)
    sums = part.sum(axis=2).transpose(2, 1, 4, 0, 3).reshape(f, c, n_tg * _SPARSE_TAPS)
    dweight[...] = sums[:, :, :k].reshape(f, c, kh, kw)
    dbias[...] = bpart.sum(axis=0)
    return dweight, dbias


def conv2d_maxpool2d_backward(dy, x, weight, argmax, stride, padding, groups, pool_size,
                              pool_stride, input_grad=True, relu_y=None):
    """Gradients of :func:`conv2d_maxpool2d_forward`: :func:`maxpool2d_backward` (with
    ``relu_y``, :func:`maxpool2d_relu_backward`) then :func:`conv2d_backward`.

    Where the pooling is 2x2 (stride 2) and the convolution a stride-1 one of one
    group on a finite input with few channels (``KW * C <= 16``: a first layer) or
    channels in whole blocks of ``_FB``, the weight and bias gradients are summed
    from the pooling's windows (:func:`_conv2d_weight_pooled`,
    :func:`_conv2d_weight_pooled_taps`), and the convolution's dense ``dy`` is not
    written unless ``dx`` needs it. Those two gradients then differ from the calls'
    in the last bits. Where the sparse input gradient applies (channels in whole
    blocks, taps in whole tiles, a finite weight), ``dx`` comes from the windows too
    (:func:`_conv2d_input_sparse` scatters them), bit for bit the calls' ``dx``, and
    no dense ``dy`` is written at all. The reference net at batch 64 (2-core Zen 5),
    the pooling's backward and the weight gradient: first layer 0.69 -> 0.53 ms with
    caches warm, 0.89 -> 0.57 with them flushed; second layer 1.47 -> 0.79; the
    second layer's input gradient from the windows: the step 0.969.
    """
    s = _square("stride", stride)
    p = _square("padding", padding)
    groups = int(groups)
    x = np.ascontiguousarray(x)
    dy = np.ascontiguousarray(dy, dtype=x.dtype)
    weight = np.ascontiguousarray(weight, dtype=x.dtype)
    argmax = np.ascontiguousarray(argmax, dtype=np.int32)
    if relu_y is not None:
        relu_y = np.ascontiguousarray(relu_y, dtype=x.dtype)
    n, c, h, w = x.shape
    f, _, kh, kw = weight.shape
    conv_shape = (n, f, _conv_out_size(h, kh, s, p), _conv_out_size(w, kw, s, p))
    if not _pooled_weight_grad_pays(x, weight, s, groups, pool_size, pool_stride):
        return conv_pool_backward_calls(sys.modules[__name__], dy, x, weight, argmax, s, p,
                                        groups, pool_size, pool_stride, input_grad, relu_y)
    dx = None
    if input_grad and _sparse_input_grad_pays(weight, s, groups, c):
        # each window's gradient straight to its pixel, no dense dy
        dx = _sparse_input_grad(None, weight, x.shape, p, (dy, relu_y, argmax))
    elif input_grad:
        dconv = _route_to_argmax(dy, argmax, conv_shape, relu_y, pool_size, pool_stride)
        dx = _conv_input_grad(dconv, weight, x.shape, s, p, groups)
    dweight, dbias = _conv_weight_grad_pooled(dy, relu_y, argmax, x, weight.shape, p,
                                              conv_shape)
    return dx, dweight, dbias


#: Tile of the row-vector weight-gradient kernel: output channels x (c, kh, kw)
#: triples, 4 x 5 vectors with AVX-512's 32 registers, 2 x 5 with AVX2's 16 (the
#: kernel writes out 4 and leaves the last 2 to ``_WROWS_OUT == 4``). On a 2-core
#: Zen 3, conv1 at batch 64: 2 x 5 1.89-1.91 ms, 3 x 5 1.91-1.97, 2 x 4 2.12-2.17,
#: 3 x 4 2.14-2.29.
_WROWS_OUT = 4 if _LANES == 16 else 2
_WROWS_TAPS = 5
#: A row-kernel tile's accumulators, one flat vector (see ``_row_fma``).
_WROWS_ACC = _WROWS_OUT * _WROWS_TAPS * _LANES
#: Rows a row-kernel tile sums before it adds its accumulators to ``part`` (whole
#: images, at least one): two 32 x 32 images' rows of dy stay in L1 for all the
#: triple tiles of their output channels.
_WROWS_ROWS = 64


@njit(inline="always")
def _row_fma(acc, k, lane, d, x0, x1, x2, x3, x4):
    """Lane ``lane`` of one output channel's ``_WROWS_TAPS`` accumulators, from
    ``acc[k]``: ``+= d * x_b``. A constant ``k`` keeps them in registers."""
    acc[k + lane] += d * x0
    acc[k + _LANES + lane] += d * x1
    acc[k + 2 * _LANES + lane] += d * x2
    acc[k + 3 * _LANES + lane] += d * x3
    acc[k + 4 * _LANES + lane] += d * x4


@njit(**_JIT)
def _conv2d_weight_rows(dyp, xps, dweight, part, bias_slot, dbias):
    """Stride-1 weight gradient with vectors along the output row (NCHW as it comes).

    ``dyp`` (N, F, HO, WV) is the upstream gradient with ``WV`` a multiple of 16
    and zeros past ``WO``; ``xps`` (K, N, C, HO + KH - 1, WV + KW - 1) holds K
    copies of the zero-padded input, one for each of the K parallel iterations
    (:func:`_pad_planes`). A tile is 4 output channels of one group times 5
    consecutive ``(c, kh, kw)`` triples (dweight's memory order) on one 16-column
    block of the rows: 20 accumulators of 16 lanes, and per row 4 + 5 vector loads
    for 20 fused multiply-adds. The lanes and blocks of each accumulator are summed once,
    at the end. ``part`` (tiles, 4 * 5 * 16), zeroed by the caller, holds each
    tile's lane sums between blocks of images.

    With ``bias_slot``, ``xps`` has one more channel, all ones, after the input's,
    and the first unused slot of the last triple tile reads it: its sums are the
    bias gradient, written to ``dbias`` (F,). A 3-channel 1x1 kernel has 3 triples
    in a tile of 5, so the bias costs no extra FMA and no extra pass over dy. (A 3x3
    kernel takes :func:`_conv2d_weight_rows3x3`; the figures below are from when this
    kernel ran conv1's 27 triples, in 6 tiles of 5.)

    Notes
    -----
    No copy of ``dy`` into channel blocks (the cost that dominated a first layer's
    weight gradient). Iteration ``chunk`` owns a contiguous run of tiles and visits
    them a block of images at a time (``_WROWS_ROWS`` rows: two 32 x 32 images);
    every lane sums in one fixed order (block, image, row), whatever K.
    Channels past a group's end repeat its last one and are not stored.

    Every iteration reads all of the padded input, so there is one copy of it per
    iteration, padded by the thread that reads it. From one shared copy, padded in
    parallel by images, half came from the other core's cache, and in phases of
    minutes on the 2-vCPU cloud machine that handoff made the kernel 1.2-1.3x
    slower. Timed in turn with the shared copy, conv1 at batch 64, 2 threads, in
    three runs of 5-8 minutes: 0.83-0.87 of its time in those phases, the same
    time in the others (0.99-1.01), 1.00-1.09 with the caches evicted.

    A tile's accumulators are one flat array, added to ``part`` by one loop whose
    count is known only at run time, so that LLVM vectorises it: 20 vector adds.
    With a constant count it is unrolled into 320 scalar adds, as Numba runs LLVM
    without the SLP vectoriser, and that cost made blocks of fewer than 8 images
    slower. A block of 2 keeps its rows of ``dy`` in L1 for all the triple tiles
    of their output channels. Measured in one process, conv1 at batch 64, 2
    threads: 0.85-0.92 of the time of 3-D accumulators in blocks of 8, warm; no
    change with the caches evicted or in the batch-norm ConvNet's step.

    The inner loop is 20 accumulators, not 24: 24 plus the 10 loaded vectors
    overflow the 32 vector registers, and LLVM shuffled them through copies every
    row. With flat planes, unsigned offsets and one column block per tile it is 38
    instructions for 20 FMAs (it was 164 for 24). Measured together, interleaved
    A/B on conv1 at batch 64, 2 threads: 1.11-1.19 -> 1.03-1.08 ms.
    """
    n_img, n_out, ho_n, wv_n = dyp.shape
    cg, kh_n, kw_n = dweight.shape[1], dweight.shape[2], dweight.shape[3]
    # one iteration per copy of the padded input
    n_chunks, n_planes, hx, wx = xps.shape[0], xps.shape[2], xps.shape[3], xps.shape[4]
    groups = (n_planes - bias_slot) // cg  # the plane of ones is no group's
    fg = n_out // groups
    k_n = kh_n * kw_n
    q_n = cg * k_n
    n_ft = (fg + _WROWS_OUT - 1) // _WROWS_OUT
    n_qt = (q_n + _WROWS_TAPS - 1) // _WROWS_TAPS
    n_v = wv_n // _LANES
    n_t = groups * n_ft * n_qt * n_v
    # Flat planes and unsigned offsets (a row index ``ho + kh`` pays Numba's
    # negative-index fix-up: 5 instructions per tap and row).
    dyf = dyp.reshape((n_img, n_out, ho_n * wv_n))
    xf = xps.reshape((n_chunks * n_img, n_planes, hx * wx))
    # Each tile's output channels, and its triples' channels and flat offsets (kernel
    # row * wx + kernel column + the block's column), worked out once rather than
    # with a dozen integer divisions per image and tile.
    # (Four columns, as written out below; a tile of 2 repeats its first.)
    outs = np.empty((n_t, 4), dtype=np.int64)
    chans = np.empty((n_t, _WROWS_TAPS), dtype=np.int64)
    offs = np.empty((n_t, _WROWS_TAPS), dtype=np.uint64)
    cols = np.empty(n_t, dtype=np.uint64)
    for t in range(n_t):
        # t = ((group * n_ft + channel tile) * n_v + block) * n_qt + triple tile: the
        # triple tiles of one block run in turn, on the same rows of dy and x
        qt = t % n_qt
        gft = t // (n_qt * n_v)
        g = gft // n_ft
        f_base = g * fg + (gft % n_ft) * _WROWS_OUT
        for a in range(_WROWS_OUT):
            outs[t, a] = min(f_base + a, g * fg + fg - 1)
        cols[t] = (t // n_qt) % n_v * _LANES
        for b in range(_WROWS_TAPS):
            if bias_slot and qt * _WROWS_TAPS + b == q_n:  # the plane of ones
                chans[t, b] = n_planes - 1
                offs[t, b] = cols[t]
                continue
            q = min(qt * _WROWS_TAPS + b, q_n - 1)
            chans[t, b] = g * cg + q // k_n
            offs[t, b] = (q % k_n) // kw_n * wx + q % kw_n + cols[t]
        for a in range(_WROWS_OUT, 4):
            outs[t, a] = outs[t, 0]
    per_chunk = (n_t + n_chunks - 1) // n_chunks
    n_acc = part.shape[1]
    n_blk = max(1, _WROWS_ROWS // ho_n)
    # No race: iteration chunk owns tiles [t0, t1) of part and their dweight entries.
    for chunk in prange(n_chunks):
        t0 = chunk * per_chunk
        t1 = min(t0 + per_chunk, n_t)
        acc = np.empty(_WROWS_ACC, dtype=dweight.dtype)
        for n0 in range(0, n_img, n_blk):
            n1 = min(n0 + n_blk, n_img)
            for t in range(t0, t1):
                f0, f1, f2, f3 = outs[t, 0], outs[t, 1], outs[t, 2], outs[t, 3]
                c0, c1, c2, c3, c4 = chans[t, 0], chans[t, 1], chans[t, 2], chans[t, 3], chans[t, 4]
                o0, o1, o2, o3, o4 = offs[t, 0], offs[t, 1], offs[t, 2], offs[t, 3], offs[t, 4]
                col = cols[t]
                for k in range(n_acc):
                    acc[k] = 0
                for n in range(n0, n1):
                    m = chunk * n_img + n  # this iteration's copy of image n
                    for ho in range(ho_n):
                        drow = np.uint64(ho * wv_n) + col
                        xrow = np.uint64(ho * wx)
                        for lane in range(_LANES):
                            u = drow + np.uint64(lane)
                            d0 = dyf[n, f0, u]
                            d1 = dyf[n, f1, u]
                            d2 = dyf[n, f2, u]
                            d3 = dyf[n, f3, u]
                            i = xrow + np.uint64(lane)
                            x0 = xf[m, c0, i + o0]
                            x1 = xf[m, c1, i + o1]
                            x2 = xf[m, c2, i + o2]
                            x3 = xf[m, c3, i + o3]
                            x4 = xf[m, c4, i + o4]
                            _row_fma(acc, 0, lane, d0, x0, x1, x2, x3, x4)
                            _row_fma(acc, _WROWS_TAPS * _LANES, lane, d1, x0, x1, x2, x3, x4)
                            if _WROWS_OUT == 4:  # a constant (see _WROWS_OUT)
                                _row_fma(acc, 2 * _WROWS_TAPS * _LANES, lane, d2,
                                         x0, x1, x2, x3, x4)
                                _row_fma(acc, 3 * _WROWS_TAPS * _LANES, lane, d3,
                                         x0, x1, x2, x3, x4)
                for k in range(n_acc):  # a count known at run time: vector adds
                    part[t, k] += acc[k]
    # The lane sums, serially: a second parallel loop cost 0.9 s of compilation (4.2
    # -> 3.3 s for this kernel) to save microseconds (conv1: 96 tiles of 320 sums).
    for tile in range(n_t // n_v):  # tile = (group * n_ft + channel tile) * n_qt + qt
        gft, qt = tile // n_qt, tile % n_qt
        g = gft // n_ft
        fl = (gft % n_ft) * _WROWS_OUT
        q0 = qt * _WROWS_TAPS
        for a in range(min(_WROWS_OUT, fg - fl)):
            for b in range(min(_WROWS_TAPS, q_n - q0)):
                total = dweight.dtype.type(0)
                for v in range(n_v):
                    t = (gft * n_v + v) * n_qt + qt
                    for lane in range(_LANES):
                        total += part[t, (a * _WROWS_TAPS + b) * _LANES + lane]
                q = q0 + b
                dweight[g * fg + fl + a, q // k_n, (q % k_n) // kw_n, q % kw_n] = total
            if bias_slot and q0 <= q_n < q0 + _WROWS_TAPS:
                total = dweight.dtype.type(0)
                for v in range(n_v):
                    t = (gft * n_v + v) * n_qt + qt
                    for lane in range(_LANES):
                        total += part[t, (a * _WROWS_TAPS + q_n - q0) * _LANES + lane]
                dbias[g * fg + fl + a] = total


#: Tile of the 3x3 row weight-gradient kernel (:func:`_conv2d_weight_rows3x3`):
#: output channels x (one input channel's 9 taps and the bias sum), 2 x 10 vectors
#: with AVX-512's 32 registers, 1 x 10 with AVX2's 16.
_W3_OUT = 2 if _LANES == 16 else 1
_W3_ACC = _W3_OUT * 10 * _LANES


@njit(inline="always")
def _taps3x3_fma(acc, k, lane, d, x0, x1, x2, x3, x4, x5, x6, x7, x8, unit):
    """Lane ``lane`` of one output channel's 9 tap accumulators, from ``acc[k]``:
    ``+= d * x_b``; and of its bias sum after them: ``+= d * unit`` (``unit`` is 1)."""
    acc[k + lane] += d * x0
    acc[k + _LANES + lane] += d * x1
    acc[k + 2 * _LANES + lane] += d * x2
    acc[k + 3 * _LANES + lane] += d * x3
    acc[k + 4 * _LANES + lane] += d * x4
    acc[k + 5 * _LANES + lane] += d * x5
    acc[k + 6 * _LANES + lane] += d * x6
    acc[k + 7 * _LANES + lane] += d * x7
    acc[k + 8 * _LANES + lane] += d * x8
    acc[k + 9 * _LANES + lane] += d * unit


@njit(inline="always")
def _w3_tile(t, n_v, cg, n_ft, fg):
    """Tile ``t`` of :func:`_conv2d_weight_rows3x3`: its output channels (a last
    tile of 1 repeats it), input plane and first column."""
    gft = t // (n_v * cg)  # t = ((group * n_ft + channel tile) * n_v + block) * cg + c
    g = gft // n_ft
    f0 = g * fg + (gft % n_ft) * _W3_OUT
    return f0, min(f0 + 1, g * fg + fg - 1), g * cg + t % cg, np.uint64((t // cg) % n_v * _LANES)


@njit(**_JIT)
def _conv2d_weight_rows3x3(dyp, xps, dweight, part, dbias, unit):
    """Stride-1 weight gradient of a 3x3 kernel, vectors along the output row, two
    output rows at a time.

    ``dyp`` (N, F, HO, WV) is the upstream gradient with ``HO`` even, ``WV`` a
    multiple of ``_LANES`` and zeros past the outputs; ``xps`` (K, N, C, HO + 2, WV + 2)
    holds K copies of the zero-padded input, one for each parallel iteration, as in
    :func:`_conv2d_weight_rows`. ``dweight`` is (F, C / G, 3, 3), ``dbias`` (F,) or
    empty (not written), ``part`` (tiles, ``_W3_ACC``) zeroed by the caller, ``unit``
    1 of dweight's dtype (see the notes).

    A tile is 2 output channels of one group (1 with AVX2) times one input channel's
    9 taps on a ``_LANES``-column block of the rows. Output rows ``r`` and ``r + 1``
    read padded input rows ``r`` to ``r + 3``: per row pair 4 vector loads of ``dy``
    and 12 of ``x`` for 36 fused multiply-adds, into 18 accumulators, and 2 more sum
    ``dy`` for the bias (every tile sums them; those of channel 0 are kept).

    Notes
    -----
    The 4 x 5 tile of :func:`_conv2d_weight_rows` takes any kernel's (c, kh, kw)
    triples in turn, one row at a time: 9 loads for 20 multiply-adds, and 3 of a
    3-channel 3x3 kernel's 30 slots idle. Here each row of ``x`` loaded serves two
    output rows and no slot idles: a row pair is 67 instructions for 36 multiply-adds,
    the bias's 2 adds and 2 multiply-adds and 4 prefetches, 3 of them reloads from
    the stack, where the 4 x 5 loop took 74 for 40 multiply-adds, 8 of them reloads.
    Each lane sums in the order of that kernel's (block, image, row, then column
    block and lane): the weights' bits are that kernel's. The bias sums are
    multiply-adds by ``unit``, a 1 that LLVM cannot see. As plain adds (which
    fastmath lets it reorder) they came out with other last bits in a process that
    compiled the kernel than in one that loaded it from Numba's cache (see
    ``_JIT_ORDERED``); by ``unit`` they are the same in both (``tests/test_cache_bits.py``),
    though not the 4 x 5 kernel's bits (LLVM adds a row pair's two ``dy`` first).

    With a tile of 2 output channels, a block of columns' rows of ``dy`` serve 3
    tiles (one per input channel of a first layer) where they served 6: read cold
    from memory, that took the kernel to 0.98-1.09 of the 4 x 5 one's time (twenty
    runs). So each tile asks for the rows of ``dy`` that the tile after its channel
    tiles reads (``_prefetch_to_l2``, 4 lines a row pair).

    Measured against the 4 x 5 kernel (``_conv_weight_grad``, conv1 at batch 64, 2
    threads, timed in turn in one process, 2026-12-07, Zen 5): 0.86-0.92 of its time
    warm, 0.78-0.84 with the caches evicted; batch 128 0.82 and 0.75-0.78; depthwise
    3x3 on 32 channels 0.73; four output rows at a time 1.08-1.14 (the rows no longer
    fit the registers). Compiled for AVX2 (``NUMBA_CPU_NAME=haswell``, 8 lanes) on the
    same machine: 1.04 warm, 0.77 with the caches evicted, depthwise 0.74. (Those with
    the bias sums as plain adds; by ``unit``, conv1: 0.89-0.90 warm, 0.80 with the
    caches evicted, batch 128 0.73.)
    """
    n_img, n_out, ho_n, wv_n = dyp.shape
    cg = dweight.shape[1]
    # one iteration per copy of the padded input
    n_chunks, n_planes, hx, wx = xps.shape[0], xps.shape[2], xps.shape[3], xps.shape[4]
    groups = n_planes // cg
    fg = n_out // groups
    n_ft = (fg + _W3_OUT - 1) // _W3_OUT
    n_v = wv_n // _LANES
    n_t = groups * n_ft * n_v * cg
    dyf = dyp.reshape((n_img, n_out, ho_n * wv_n))
    xf = xps.reshape((n_chunks * n_img, n_planes, hx * wx))
    dyl = dyp.reshape(-1)  # for the prefetches
    dy1 = np.uint64(wv_n)  # the second row's offsets
    x1, x2, x3 = np.uint64(wx), np.uint64(2 * wx), np.uint64(3 * wx)
    per_chunk = (n_t + n_chunks - 1) // n_chunks
    n_acc = part.shape[1]
    n_blk = max(1, _WROWS_ROWS // ho_n)
    # No race: iteration chunk owns tiles [t0, t1) of part.
    for chunk in prange(n_chunks):
        t0 = chunk * per_chunk
        t1 = min(t0 + per_chunk, n_t)
        acc = np.empty(_W3_ACC, dtype=dweight.dtype)
        for n0 in range(0, n_img, n_blk):
            n1 = min(n0 + n_blk, n_img)
            for t in range(t0, t1):
                # the tiles of one block of columns run in turn over the input
                # channels, on the same rows of dy
                f0, f1, plane, col = _w3_tile(t, n_v, cg, n_ft, fg)
                # and the next block of columns (or output channels) reads these rows
                # next: asked into L2 while this one runs
                p0, p1, _, pcol = _w3_tile(min(t + cg, n_t - 1), n_v, cg, n_ft, fg)
                for k in range(n_acc):
                    acc[k] = 0
                for n in range(n0, n1):
                    m = chunk * n_img + n  # this iteration's copy of image n
                    q0 = np.uint64((n * n_out + p0) * ho_n * wv_n) + pcol
                    q1 = np.uint64((n * n_out + p1) * ho_n * wv_n) + pcol
                    for hp in range(ho_n // 2):
                        drow = np.uint64(2 * hp * wv_n) + col
                        xrow = np.uint64(2 * hp * wx) + col
                        prow = np.uint64(2 * hp * wv_n)
                        _prefetch_to_l2(dyl, q0 + prow)
                        _prefetch_to_l2(dyl, q0 + prow + dy1)
                        _prefetch_to_l2(dyl, q1 + prow)
                        _prefetch_to_l2(dyl, q1 + prow + dy1)
                        for lane in range(_LANES):
                            u = drow + np.uint64(lane)
                            i = xrow + np.uint64(lane)
                            d0 = dyf[n, f0, u]
                            e0 = dyf[n, f0, u + dy1]
                            a0 = xf[m, plane, i]
                            a1 = xf[m, plane, i + np.uint64(1)]
                            a2 = xf[m, plane, i + np.uint64(2)]
                            b0 = xf[m, plane, i + x1]
                            b1 = xf[m, plane, i + x1 + np.uint64(1)]
                            b2 = xf[m, plane, i + x1 + np.uint64(2)]
                            c0 = xf[m, plane, i + x2]
                            c1 = xf[m, plane, i + x2 + np.uint64(1)]
                            c2 = xf[m, plane, i + x2 + np.uint64(2)]
                            g0 = xf[m, plane, i + x3]
                            g1 = xf[m, plane, i + x3 + np.uint64(1)]
                            g2 = xf[m, plane, i + x3 + np.uint64(2)]
                            _taps3x3_fma(acc, 0, lane, d0, a0, a1, a2, b0, b1, b2, c0, c1, c2,
                                         unit)
                            if _W3_OUT == 2:  # a constant (see _W3_OUT)
                                d1 = dyf[n, f1, u]
                                _taps3x3_fma(acc, 10 * _LANES, lane, d1,
                                             a0, a1, a2, b0, b1, b2, c0, c1, c2, unit)
                            _taps3x3_fma(acc, 0, lane, e0, b0, b1, b2, c0, c1, c2, g0, g1, g2,
                                         unit)
                            if _W3_OUT == 2:
                                e1 = dyf[n, f1, u + dy1]
                                _taps3x3_fma(acc, 10 * _LANES, lane, e1,
                                             b0, b1, b2, c0, c1, c2, g0, g1, g2, unit)
                for k in range(n_acc):  # a count known at run time: vector adds
                    part[t, k] += acc[k]
    # The lane sums, serially, in the order of _conv2d_weight_rows'.
    for gft in range(groups * n_ft):
        f_base = gft // n_ft * fg + (gft % n_ft) * _W3_OUT
        for a in range(min(_W3_OUT, gft // n_ft * fg + fg - f_base)):
            for c in range(cg):
                for b in range(10 if c == 0 and dbias.size else 9):  # taps, then the bias
                    total = dweight.dtype.type(0)
                    for v in range(n_v):
                        t = (gft * n_v + v) * cg + c
                        for lane in range(_LANES):
                            total += part[t, (a * 10 + b) * _LANES + lane]
                    if b == 9:
                        dbias[f_base + a] = total
                    else:
                        dweight[f_base + a, c, b // 3, b % 3] = total


def _conv_bias_grad(dy, dbias):
    """``dbias[f] = dy[:, f].sum()`` by NumPy, where no weight-gradient kernel sums it
    on the way: 0.27 ms against a parallel kernel's 0.21 for the reference net's
    second layer (batch 64), and no parallel kernel to compile on a cold start (0.8 s)."""
    np.sum(dy, axis=(0, 2, 3), out=dbias)


def conv2d_backward(dy, x, weight, stride, padding, groups, input_grad=True):
    """Gradients of :func:`conv2d_forward`.

    Parameters
    ----------
    dy : ndarray, (N, F, HO, WO)
        Upstream gradient.
    x : ndarray, (N, C, H, W)
        The forward input.
    weight : ndarray, (F, C // groups, KH, KW)
    stride, padding : int (or a pair of equal ints)
    groups : int
    input_grad : bool, default True
        False skips ``dx`` (returned as None): a network's input needs no gradient.

    Returns
    -------
    dx : ndarray, (N, C, H, W), or None
    dweight : ndarray, (F, C // groups, KH, KW)
    dbias : ndarray, (F,)

    Notes
    -----
    ``dx`` is a forward convolution of ``dy`` dilated by the stride (zeros
    between rows and columns) and padded by ``K - 1 - padding``, with the
    kernel turned by 180 degrees and its in/out channels swapped within each
    group; it runs on the forward micro-kernel. ``dweight`` has its own
    micro-kernel (:func:`_conv2d_weight_tiles`).
    """
    s = _square("stride", stride)
    p = _square("padding", padding)
    groups = int(groups)
    x = np.ascontiguousarray(x)
    dy = np.ascontiguousarray(dy, dtype=x.dtype)
    weight = np.ascontiguousarray(weight, dtype=x.dtype)
    dx = _conv_input_grad(dy, weight, x.shape, s, p, groups) if input_grad else None
    dbias = _empty(dy.shape[1], dtype=x.dtype)
    dweight = _conv_weight_grad(dy, x, weight.shape, s, p, groups, dbias)
    return dx, dweight, dbias


#: Output channels per tile of the row kernel (two rows of one vector each): 8 with
#: AVX-512's 32 registers, 4 with AVX2's 16, as :data:`_PIX`.
_ROWS_OUT = 8 if _LANES == 16 else 4
#: Where the tile's second row starts in its flat accumulators (``acc[r * _BELOW + q *
#: _LANES + lane]`` is row ``r``, channel ``q``, lane ``lane``).
_BELOW = _ROWS_OUT * _LANES


@njit(inline="always")
def _rows_tile(acc, xflat, w8, taps, g, fb, top, bottom):
    """The taps of one :func:`_conv2d_rows` tile into ``acc``, flat (2, ``_ROWS_OUT``,
    ``_LANES``): output channels ``fb * _ROWS_OUT ...`` of group ``g``, rows at flat
    corners ``top``, ``bottom``."""
    q_n = w8.shape[2]
    for r in range(2):
        for q in range(_ROWS_OUT):
            for lane in range(_LANES):
                acc[r * _BELOW + q * _LANES + lane] = 0
    for q in range(q_n):
        w0 = w8[g, fb, q, 0]
        w1 = w8[g, fb, q, 1]
        w2 = w8[g, fb, q, 2]
        w3 = w8[g, fb, q, 3]
        if _ROWS_OUT == 8:  # a constant (see _ROWS_OUT)
            w4 = w8[g, fb, q, 4]
            w5 = w8[g, fb, q, 5]
            w6 = w8[g, fb, q, 6]
            w7 = w8[g, fb, q, 7]
        tap = taps[g, q]
        for lane in range(_LANES):
            xa = xflat[top + tap + np.uint64(lane)]
            xb = xflat[bottom + tap + np.uint64(lane)]
            acc[0 * _LANES + lane] += w0 * xa
            acc[1 * _LANES + lane] += w1 * xa
            acc[2 * _LANES + lane] += w2 * xa
            acc[3 * _LANES + lane] += w3 * xa
            acc[_BELOW + 0 * _LANES + lane] += w0 * xb
            acc[_BELOW + 1 * _LANES + lane] += w1 * xb
            acc[_BELOW + 2 * _LANES + lane] += w2 * xb
            acc[_BELOW + 3 * _LANES + lane] += w3 * xb
            if _ROWS_OUT == 8:
                acc[4 * _LANES + lane] += w4 * xa
                acc[5 * _LANES + lane] += w5 * xa
                acc[6 * _LANES + lane] += w6 * xa
                acc[7 * _LANES + lane] += w7 * xa
                acc[_BELOW + 4 * _LANES + lane] += w4 * xb
                acc[_BELOW + 5 * _LANES + lane] += w5 * xb
                acc[_BELOW + 6 * _LANES + lane] += w6 * xb
                acc[_BELOW + 7 * _LANES + lane] += w7 * xb


#: LLVM's prefetch intrinsic, named for its pointer argument: opaque since LLVM 15.
_LLVM_PREFETCH = ("llvm.prefetch.p0" if _llvm_binding.llvm_version_info >= (15,)
                  else "llvm.prefetch.p0i8")


def _prefetch_codegen(write, locality):
    """Code of ``llvm.prefetch`` on the address of ``flat[index]`` (a 1-D array,
    ``index`` an unsigned integer): for writing (1) or reading (0), kept down to cache
    level ``locality`` (3: every level, 2: L2 and beyond), a data line."""
    def codegen(context, builder, sig, args):
        array = context.make_array(sig.args[0])(context, builder, args[0])
        pointer = builder.gep(array.data, [args[1]])
        byte_pointer = _llvm_ir.IntType(8).as_pointer()
        i32 = _llvm_ir.IntType(32)
        signature = _llvm_ir.FunctionType(_llvm_ir.VoidType(), [byte_pointer, i32, i32, i32])
        prefetch = _cgutils.get_or_insert_function(builder.module, signature, _LLVM_PREFETCH)
        builder.call(prefetch, [builder.bitcast(pointer, byte_pointer), i32(write),
                                i32(locality), i32(1)])
        return context.get_dummy_value()

    return codegen


@_intrinsic
def _prefetch_for_write(typingctx, flat, index):
    """Ask the CPU to bring the cache line of ``flat[index]`` (a 1-D array, ``index``
    an unsigned integer) into its caches for writing (x86's ``prefetchw``, LLVM's
    ``llvm.prefetch``): a hint, with no effect on results. Numba has no such function."""
    return numba.types.none(flat, index), _prefetch_codegen(1, 3)


@_intrinsic
def _prefetch_to_l2(typingctx, flat, index):
    """Ask the CPU to bring the cache line of ``flat[index]`` into its L2 for reading
    (x86's ``prefetcht1``): a hint, as :func:`_prefetch_for_write` is."""
    return numba.types.none(flat, index), _prefetch_codegen(0, 2)


@njit(inline="always")
def _prefetch_run(flat, start, length):
    """:func:`_prefetch_for_write` for every cache line of ``flat[start:start + length]``."""
    step = 64 // flat.itemsize
    for i in range(0, length, step):
        _prefetch_for_write(flat, np.uint64(start + i))


#: Row pairs ahead of the one it computes whose output :func:`_conv2d_rows`
#: prefetches for writing, when the kernel has at most ``_PREFETCH_TAPS`` taps (see
#: the notes there).
_PREFETCH_AHEAD = 1
_PREFETCH_TAPS = 32


@njit(**_JIT)
def _conv2d_rows(xflat, x_shape, w8, taps, bias_win, y_shape, y, pooled, argmax, relu,
                 n_chunks):
    """Stride-1 convolution with vectors along the output row: NCHW in, NCHW out.

    ``xflat`` is the zero-padded input ``xp`` (N, C, HO + KH - 1, WV + KW - 1),
    flattened (``x_shape`` is its shape), ``WV`` the output width rounded up to 16
    (zeros past the end, so every load is a whole vector). Tap ``q`` of group ``g``
    (one ``(c, kh, kw)`` of the kernel) reads the input at flat offset
    ``taps[g, q]`` from the tile's corner, and ``w8[g, fb, q, j]`` is its weight for
    output channel ``g * Fg + fb * _ROWS_OUT + j`` (zero past ``Fg``); ``bias_win``
    holds the bias, as :func:`_pool_tile` reads it. A tile is
    ``_ROWS_OUT`` output channels times 2 rows times one vector (8 x 2 x 16 with
    AVX-512: 16 accumulators, and per tap 2 input vectors and 8 weight broadcasts
    for 16 fused multiply-adds; 4 x 2 x 8 with AVX2). Rows and columns
    are stored as they are laid out, so neither the input nor the output is
    transposed; a last odd row recomputes the one before it and is not stored twice.

    Notes
    -----
    The taps run as one loop over precomputed offsets (27 trips for a 3-channel
    3x3 kernel) rather than three nested ones; measured no faster, but it is one
    loop to read.

    ``y_shape`` is the convolution's output shape. With ``pooled`` not empty, the
    output's 2x2 max pooling (stride 2) goes to ``pooled`` and ``argmax`` instead of
    ``y`` (then empty): a tile's two rows and 16 columns are 8 whole windows, so the
    convolution's output never reaches memory (:func:`_pool_tile`); with ``relu``
    the maxima pass through a ReLU on the way out. The tile leaves
    by :func:`_store_tile` or :func:`_pool_tile`, functions of their own: the pooling
    epilogue inlined here, in any form tried, kept the accumulators out of registers
    in the tap loop (2.3-4x slower, pooled or not).

    The accumulators are one flat array (see :data:`_BELOW`) that the epilogues
    take as it is, and each of the ``n_chunks`` iterations (runs of row pairs)
    allocates its arrays once. A 3-D tile that :func:`_pool_tile` reshaped cost a
    call into Numba's runtime and two reference counts per tile, and arrays made
    per row pair a ``malloc`` each: conv1 with its pooling 0.68 -> 0.47 ms, conv2's
    1.52 -> 1.41 (batch 64, 2-core Zen 5, the same bits). (A 3-D view reshaped from
    the flat array had run-time strides, and the tap loop's accumulators left the
    registers: 10-28x slower.)

    A first layer's outputs take long to write next to its few multiply-adds (27 a
    pixel and channel for 3 channels): in a training step its 8 MiB have left the
    caches since the step before, and each store waited for its line to come from
    memory. With at most ``_PREFETCH_TAPS`` taps, unpooled, an iteration asks for the
    lines of the next row pair's outputs (:func:`_prefetch_for_write`) before it
    computes its own. conv1 at batch 64 (2-core Zen 5, one process): 0.84-0.94 ->
    0.60-0.69 ms with the caches evicted, 0.42-0.46 warm either way; in the step of
    the batch-norm ConvNet 0.76 -> 0.56 ms, the step 0.96-0.99x. conv2 (288 taps) lost
    0.06 ms in that step, and the pooled first layer of the reference net gained
    nothing in its step (it writes a quarter as much): neither prefetches. The
    prefetching costs 0.4 s of this kernel's compilation (2.3 -> 2.7 s).
    """
    n_img, n_out, ho_n, wo_n = y_shape[0], y_shape[1], y_shape[2], y_shape[3]
    groups, n_fb = w8.shape[0], w8.shape[1]
    c_n, hp_n, wp_n = x_shape[1], x_shape[2], x_shape[3]
    fg = n_out // groups
    pool = pooled.size > 0
    # Row pairs; pooled, a last single row belongs to no window.
    n_rp = ho_n // 2 if pool else (ho_n + 1) // 2
    n_cv = (wo_n + _LANES - 1) // _LANES
    yflat = y.reshape(y.size)
    pflat = pooled.reshape(pooled.size)
    aflat = argmax.reshape(argmax.size)
    n_rows = n_img * n_rp
    # Prefetching the outputs pays where they take long to write next to their
    # few multiply-adds (see _PREFETCH_TAPS), and not pooled.
    prefetch = taps.shape[1] <= _PREFETCH_TAPS and not pool
    per_chunk = (n_rows + n_chunks - 1) // max(n_chunks, 1)
    # No race: iteration chunk owns its row pairs t, and t owns output rows h0 and
    # h0 + 1 of image n, every channel.
    for chunk in prange(n_chunks):
        acc = np.empty(2 * _BELOW, dtype=y.dtype)  # flat: see _BELOW
        best_v = np.empty(_ROWS_OUT * _LANES // 2, dtype=y.dtype)
        best_at = np.empty(_ROWS_OUT * _LANES // 2, dtype=np.int32)
        t_end = min(chunk * per_chunk + per_chunk, n_rows)
        for t in range(chunk * per_chunk, t_end):
            n = t // n_rp
            h0 = (t % n_rp) * 2
            h1 = min(h0 + 1, ho_n - 1)
            tp = t + _PREFETCH_AHEAD
            if prefetch and tp < t_end:
                h_p = (tp % n_rp) * 2
                for f in range(n_out):
                    _prefetch_run(yflat, (((tp // n_rp) * n_out + f) * ho_n + h_p) * wo_n,
                                  min(2, ho_n - h_p) * wo_n)
            for g in range(groups):
                for fb in range(n_fb):
                    f0 = g * fg + fb * _ROWS_OUT
                    n_ch = min(_ROWS_OUT, fg - fb * _ROWS_OUT)
                    for cv in range(n_cv):
                        wo0 = cv * _LANES
                        # Unsigned flat corners of the two rows: no negative-index fix-up.
                        top = np.uint64((n * c_n * hp_n + h0) * wp_n + wo0)
                        bottom = np.uint64((n * c_n * hp_n + h1) * wp_n + wo0)
                        _rows_tile(acc, xflat, w8, taps, g, fb, top, bottom)
                        if pool:
                            _pool_tile(acc, bias_win, pflat, aflat, best_v, best_at, n, f0,
                                       n_ch, h0, wo0, wo_n, n_rp, wo_n // 2, n_out, relu)
                        else:
                            _store_tile(acc, bias_win, yflat, n, f0, n_ch, h0, h1, wo0, wo_n,
                                        ho_n, n_out)


@njit(**_JIT_SMALL)
def _store_tile(acc, bias_win, yflat, n, f0, n_ch, h0, h1, wo0, wo_n, ho_n, n_out):
    """A :func:`_conv2d_rows` tile ``acc`` (flat) plus the bias (``bias_win``, as in
    :func:`_pool_tile`) to the flat output ``yflat``: rows ``h0`` and ``h1`` (the same
    row for a last odd one), columns from ``wo0``.

    The row loops run to ``n_valid``, not to the constant ``_LANES`` even for whole
    tiles: a constant trip count is unrolled into scalar stores (see the notes at
    the head of the convolution section). This epilogue, the call included, is
    about a quarter of conv1's forward (2-core Zen 4, batch 64, the kernel alone:
    0.78-0.80 ms, 0.57-0.67 without its stores).
    """
    n_valid = np.uint64(min(_LANES, wo_n - wo0))
    for q in range(n_ch):
        b = bias_win[(f0 + q) * (_LANES // 2)]
        top = np.uint64(((n * n_out + f0 + q) * ho_n + h0) * wo_n + wo0)
        bottom = np.uint64(((n * n_out + f0 + q) * ho_n + h1) * wo_n + wo0)
        for lane in range(n_valid):
            yflat[top + lane] = acc[q * _LANES + lane] + b
        for lane in range(n_valid):
            yflat[bottom + lane] = acc[_BELOW + q * _LANES + lane] + b


@njit(inline="always")
def _window_max(top_left, top_right, bottom_left, bottom_right, wide):
    """The maximum of a 2x2 window and where it is: 0, 1, ``wide`` or ``wide + 1``
    (int32) for the four values in this order, as in the flat input plane.

    Strict ``>`` keeps the first maximum (as PyTorch); a NaN wins, so that it
    propagates. Bitwise operators and selects, not ``and`` / ``or`` and branches: the
    callers' loops over windows are vectorised (with branches they stayed scalar).
    """
    best = top_left
    at = np.int32(0)
    take = (top_right > best) | ((top_right != top_right) & (best == best))
    best = top_right if take else best
    at = np.int32(1) if take else at
    take = (bottom_left > best) | ((bottom_left != bottom_left) & (best == best))
    best = bottom_left if take else best
    at = wide if take else at
    take = (bottom_right > best) | ((bottom_right != bottom_right) & (best == best))
    best = bottom_right if take else best
    at = wide + np.int32(1) if take else at
    return best, at


@njit(**_JIT_SMALL)
def _pool_tile(acc, bias_win, pflat, aflat, best_v, best_at, n, f0, n_ch, h0, wo0, wo_n, ho_q,
               wo_q, n_out, relu):
    """The 2x2 windows of a :func:`_conv2d_rows` tile ``acc`` (flat, as
    :data:`_BELOW` says; rows ``h0``, ``h0 + 1``, columns from ``wo0``; the bias not
    yet added): maxima to the flat pooled output
    ``pflat`` (N, F, ``ho_q``, ``wo_q``), their flat positions in the convolution's
    output plane to ``aflat``. ``bias_win[f * _LANES // 2 + i]`` is the bias of
    channel ``f``, once for each of a tile's windows ``i``, zero past the last
    channel. With ``relu`` a maximum that is not positive (nor NaN) is stored as 0,
    as :func:`relu_forward` would make it; the argmax is unchanged.

    A function of its own, not inlined: inlined into the kernel, this code kept the
    kernel's accumulators out of registers in the tap loop (2.3-4x slower). The
    comparisons are bitwise and selects, over every window of the tile at once (a
    constant count, ``_ROWS_OUT * _LANES // 2``, of adjacent pairs in the flat
    tile) into ``best_v`` and ``best_at``, and only then are the valid ones stored.
    So the vectoriser takes it at any vector width; a loop over one channel's
    windows, 4 with AVX2, stayed scalar with a branch per comparison (2-core Zen 3:
    conv1 with its pooling 8.1 ms, the convolution alone 3.0). The bias is read
    per window, beside the tile's values, rather than added to the tile in a pass of
    its own: that pass cost a quarter of the fused call at 16 lanes (2-core Zen 4,
    conv1 at batch 64, one thread, interleaved: 2.70 -> 2.17 ms; 3.78 -> 3.46 at 8
    lanes; bitwise the same results).
    """
    half = _LANES // 2
    win_b = np.uint64(f0 * half)
    below = np.uint64(_BELOW)
    wide = np.int32(wo_n)
    zero = acc.dtype.type(0)
    for k in range(np.uint64(_ROWS_OUT * half)):
        c = np.uint64(2) * k
        b = bias_win[win_b + k]  # y's values, as _maxpool2x2_forward reads them
        best, at = _window_max(acc[c] + b, acc[c + np.uint64(1)] + b,
                               acc[below + c] + b, acc[below + c + np.uint64(1)] + b, wide)
        if relu:
            best = best if (best > zero) | (best != best) else zero
        best_v[k] = best
        best_at[k] = np.int32(c % np.uint64(_LANES)) + at
    hq = h0 // 2
    n_win = min(half, wo_q - wo0 // 2)
    corner = np.int32(h0 * wo_n + wo0)
    for q in range(n_ch):
        out = np.uint64(((n * n_out + f0 + q) * ho_q + hq) * wo_q + wo0 // 2)
        for i in range(n_win):
            pflat[out + np.uint64(i)] = best_v[q * half + i]
            aflat[out + np.uint64(i)] = corner + best_at[q * half + i]


def _pack_rows_weight(weight, groups, flip):
    """``weight`` (G * Fg, Cg, KH, KW) -> ``w8`` (G, Fg / 8, Cg * KH * KW, 8), zero-padded.

    With ``flip`` the kernel is turned by 180 degrees, as the input gradient needs.
    """
    f, cg, kh, kw = weight.shape
    fg = f // groups
    n_fb = -(-fg // _ROWS_OUT)
    w = weight[:, :, ::-1, ::-1] if flip else weight
    w8 = _zeros((groups, n_fb * _ROWS_OUT, cg, kh, kw), dtype=weight.dtype)
    w8[:, :fg] = w.reshape(groups, fg, cg, kh, kw)
    w8 = w8.reshape(groups, n_fb, _ROWS_OUT, cg * kh * kw).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(w8)


def _rows_pay(out_per_group, wo):
    """True when the row kernel fills at least as many lanes as the channel tiles.

    Row tiles are ``_ROWS_OUT`` channels x ``_LANES`` columns, channel tiles ``_FB``
    channels x ``_PIX`` columns (8 x 16 and 32 x 8 with AVX-512); on a tie the row
    kernel wins (it copies nothing into channel-last order). Measured at
    batch 64, 2 threads, forward / input gradient in ms, rows vs tiles: 3->32 on 32x32
    0.79 / 1.46 vs 1.01 / 6.13; 32->64 on 16x16 2.28 / 2.50 vs 2.61 / 3.94; 64->64 on
    8x8 2.24 / 2.19 vs 1.35 / 1.34; depthwise 32x32 2.89 / 2.43 vs 7.67 / 7.35.
    """
    def used(n, block):
        return n / (-(-n // block) * block)

    rows = used(wo, _LANES) * used(out_per_group, _ROWS_OUT)
    tiles = used(out_per_group, _FB) * used(wo, _PIX)
    return rows >= tiles


def _conv_rows(x, weight, bias, out_shape, top, left, groups, flip=False, pool=False,
               relu=False):
    """Stride-1 correlation of ``x`` padded by ``top`` / ``left`` on :func:`_conv2d_rows`.

    With ``pool``, its 2x2 max pooling (stride 2) instead: ``(y, argmax)``, and with
    ``relu`` too, the ReLU of the pooling.
    """
    n, c = x.shape[0], x.shape[1]
    _, _, ho, wo = out_shape
    kh, kw = weight.shape[2], weight.shape[3]
    wv = -(-wo // _LANES) * _LANES
    hp, wp = ho + kh - 1, wv + kw - 1
    xp = _empty((n, c, hp, wp), dtype=x.dtype)
    _pad_planes(x, xp[None], top, left)
    # Flat offset of tap (c, kh, kw) of group g from a tile's corner, in weight order.
    cg = weight.shape[1]
    tap = np.arange(cg)[:, None, None] * (hp * wp) + np.arange(kh)[:, None] * wp + np.arange(kw)
    taps = (np.arange(groups)[:, None] * (cg * hp * wp) + tap.ravel()).astype(np.uint64)
    w8 = _pack_rows_weight(weight, groups, flip)
    dims = np.array(xp.shape, dtype=np.int64), np.array(out_shape, dtype=np.int64)
    # The bias of each window of a tile in turn (see _pool_tile), zeros past the end.
    half = _LANES // 2
    bias_win = np.zeros((out_shape[1] + _ROWS_OUT) * half, dtype=x.dtype)
    bias_win[:out_shape[1] * half] = np.repeat(bias, half)
    if pool:
        y = np.empty((0,) * 4, dtype=x.dtype)
        pooled = _empty((n, out_shape[1], out_shape[2] // 2, out_shape[3] // 2), dtype=x.dtype)
        argmax = _empty(pooled.shape, dtype=np.int32)
    else:
        y = _empty(out_shape, dtype=x.dtype)
        pooled = np.empty((0,) * 4, dtype=x.dtype)
        argmax = np.empty((0,) * 4, dtype=np.int32)
    row_pairs = n * (ho // 2 if pool else (ho + 1) // 2)
    _conv2d_rows(xp.reshape(-1), dims[0], w8, taps, bias_win, dims[1], y, pooled, argmax, relu,
                 _chunks(row_pairs))
    return (pooled, argmax) if pool else y


@njit(**_JIT)
def _pad_planes(src, dst, top, left):
    """``dst[k, n, c, i, j] = src[n, c, i - top, j - left]`` where that exists, else
    0, for ``src``'s channels and every copy ``k``; channels of ``dst`` past
    ``src``'s are all ones (the row weight-gradient kernel's bias plane).

    Row by row: zeros, the source row's run (a plain copy the vectoriser takes),
    zeros. (A test of both bounds at every element: 0.36 ms for conv2's input
    gradient at batch 64, against 0.0 ms.)

    The iterations run over (copy, image) in that order, so under a static schedule
    (Numba's omp and workqueue layers) with one copy per thread, each thread pads
    the copy that its iteration of :func:`_conv2d_weight_rows` reads: none of it
    moves between cores' caches.
    """
    n_img, n_ch, h_n, w_n = src.shape
    n_copies, n_dst, h_d, w_d = dst.shape[0], dst.shape[2], dst.shape[3], dst.shape[4]
    j0 = min(max(left, 0), w_d)  # dst's first column with a source element
    j1 = min(max(left + w_n, 0), w_d)  # and its end
    zero = dst.dtype.type(0)
    # Flat planes and unsigned offsets: the row copy's loads and stores contiguous.
    sf = src.reshape((n_img, n_ch, h_n * w_n))
    df = dst.reshape((n_copies * n_img, n_dst, h_d * w_d))
    # Source column of dst's column j0 (wraps when src lies past dst's right edge,
    # and then no row copies anything).
    shift = np.uint64(j0 - left)
    # No race: iteration kn owns dst[kn // n_img, kn % n_img].
    for kn in prange(n_copies * n_img):
        n = kn % n_img
        for c in range(n_ch):
            src_plane = sf[n, c]
            dst_plane = df[kn, c]
            for i in range(h_d):
                si = i - top
                d = np.uint64(i * w_d)
                if si < 0 or si >= h_n:
                    for j in range(w_d):
                        dst_plane[d + np.uint64(j)] = zero
                    continue
                srow = np.uint64(si * w_n) + shift
                for j in range(j0):
                    dst_plane[d + np.uint64(j)] = zero
                for j in range(j1 - j0):
                    dst_plane[d + np.uint64(j0 + j)] = src_plane[srow + np.uint64(j)]
                for j in range(j1, w_d):
                    dst_plane[d + np.uint64(j)] = zero
        for c in range(n_ch, n_dst):
            for i in range(h_d * w_d):
                df[kn, c, i] = 1


def _sparse_input_grad_pays(weight, s, groups, c):
    """:func:`_conv2d_input_sparse` applies to the convolution (given a ``dy`` that is
    mostly zeros): stride 1, one group, whole channel blocks and tap tiles, and a
    finite weight (a skipped zero would drop ``0 * inf``)."""
    kh, kw = weight.shape[2], weight.shape[3]
    return (s == 1 and groups == 1 and c % _FB == 0 and (kh * kw) % _SPARSE_TAPS == 0
            and np.isfinite(weight).all())


def _sparse_input_grad(dy, weight, x_shape, p, windows=None):
    """``dx`` on :func:`_conv2d_input_sparse`, from ``dy``, or with ``windows``, a 2x2
    max pooling's ``(g, relu_y or None, argmax)`` (``dy`` then None)."""
    dtype = weight.dtype
    n, c, h, w = x_shape
    f, _, kh, kw = weight.shape
    dx = _empty((n, c, h, w), dtype=dtype)
    n_chunks = _chunks(n)
    dyc = _empty((n_chunks, f, _conv_out_size(h, kh, 1, p) * _conv_out_size(w, kw, 1, p)),
                 dtype=dtype)
    wpk = _empty((f, kh, kw, c), dtype=dtype)  # 64-byte aligned: no load splits a line
    wpk[...] = weight.transpose(0, 2, 3, 1)
    none = np.empty((0, 0, 0), dtype=dtype)
    if windows is None:
        _conv2d_input_sparse(dy, wpk, dx, p, n_chunks, dyc, none, none,
                             np.empty((0, 0, 0), dtype=np.int32))
        return dx
    g, relu_y, argmax = windows
    u = g.shape[2] * g.shape[3]
    _conv2d_input_sparse(np.empty((0, 0, 0, 0), dtype=dtype), wpk, dx, p, n_chunks, dyc,
                         g.reshape(n, f, u), none if relu_y is None else relu_y.reshape(n, f, u),
                         argmax.reshape(n, f, u))
    return dx


def _conv_input_grad(dy, weight, x_shape, s, p, groups):
    """``dx`` (N, C, H, W): the dilated, padded ``dy`` correlated with the turned kernel,
    or, for a ``dy`` that is mostly zeros, the sum over its nonzeros
    (:func:`_conv2d_input_sparse`)."""
    dtype = dy.dtype
    n, c, h, w = x_shape
    f, cg, kh, kw = weight.shape
    if _sparse_input_grad_pays(weight, s, groups, c) and _sparse_dy(dy):
        return _sparse_input_grad(dy, weight, x_shape, p)
    fg = f // groups
    # In/out channels swapped within each group: wt[g*Cg + c, fg] = weight[g*Fg + fg, c].
    wt = np.ascontiguousarray(
        weight.reshape(groups, fg, cg, kh, kw).transpose(0, 2, 1, 3, 4).reshape(c, fg, kh, kw)
    )
    bias = _zeros(c, dtype=dtype)
    if s == 1 and _rows_pay(cg, w):
        return _conv_rows(dy, wt, bias, x_shape, kh - 1 - p, kw - 1 - p, groups, flip=True)
    dyd = _conv_channel_last(dy, groups, kh - 1 - p, kw - 1 - p, h + kh - 1, w + kw - 1, s, s)
    dx = _empty((n, c, h, w), dtype=dtype)
    _conv_forward_core(dyd, wt, bias, dx, 1, groups, flip=True)
    return dx


def _conv_weight_grad_rows(dy, x, weight_shape, p, groups, dbias):
    """Stride-1 ``dweight`` on a row-vector kernel: ``dy`` and ``x`` stay NCHW.

    A 3x3 kernel takes :func:`_conv2d_weight_rows3x3` (two output rows at a time, and
    the bias), any other :func:`_conv2d_weight_rows`. ``dbias`` (F,), when given, is
    filled with the bias gradient: by the kernel, or by :func:`_conv_bias_grad` when
    the 4 x 5 kernel's last triple tile has no slot to spare.
    """
    n, c, h, w = x.shape
    f, cg, kh, kw = weight_shape
    ho, wo = dy.shape[2], dy.shape[3]
    pairs = kh == kw == 3
    hv = ho + ho % 2 if pairs else ho  # whole row pairs
    wv = -(-wo // _LANES) * _LANES  # whole vectors
    if (hv, wv) == (ho, wo):
        dyp = dy
    else:  # zero rows and columns past the outputs
        dyp = _empty((n, f, hv, wv), dtype=dy.dtype)
        _pad_planes(dy, dyp[None], 0, 0)
    fg = f // groups
    if pairs:
        bias_slot = False
        n_tiles = groups * -(-fg // _W3_OUT) * cg * (wv // _LANES)
    else:
        bias_slot = dbias is not None and (cg * kh * kw) % _WROWS_TAPS != 0
        n_tiles = (groups * -(-fg // _WROWS_OUT) * -(-(cg * kh * kw) // _WROWS_TAPS)
                   * (wv // _LANES))
    # One iteration of the kernel a thread, each with its own padded copy of x (the
    # input's channels, then the bias slot's plane of ones)
    n_copies = min(n_tiles, numba.get_num_threads())
    xps = _empty((n_copies, n, c + bias_slot, hv + kh - 1, wv + kw - 1), dtype=x.dtype)
    _pad_planes(x, xps, p, p)
    part = _zeros((n_tiles, _W3_ACC if pairs else _WROWS_ACC), dtype=x.dtype)
    dweight = _empty(weight_shape, dtype=x.dtype)
    no_bias = np.empty(0, dtype=x.dtype)
    if pairs:
        _conv2d_weight_rows3x3(dyp, xps, dweight, part, no_bias if dbias is None else dbias,
                               x.dtype.type(1))
        return dweight
    _conv2d_weight_rows(dyp, xps, dweight, part, bias_slot, dbias if bias_slot else no_bias)
    if dbias is not None and not bias_slot:
        _conv_bias_grad(dy, dbias)
    return dweight


def _conv_weight_grad(dy, x, weight_shape, s, p, groups, dbias=None):
    """``dweight`` (F, C/G, KH, KW) on the kernel that suits the shape.

    ``dbias`` (F,), when given, is filled with the bias gradient too: the row kernel
    folds it into its weight-gradient tiles where it can, the input-channel tiles
    sum ``dy``'s planes as they go, and only the channel-block tiles leave it to a
    pass of its own (:func:`_conv_bias_grad`).

    The row kernel wins where each output sees little reduction per pixel (a first
    layer, 1x1, depthwise: no copy, no wasted lanes), the tiles where it sees much
    (measured at batch 64, 2 threads: Cg * K * K = 27: 1.1 vs 3.3 ms; depthwise
    32 channels: 1.9 vs 41 ms; 144 on 16x16: 2.2 vs 1.5 ms; 288: 8.4 vs 3.9 ms).
    With whole blocks of 32 input channels the tiles take their vectors from ``x``
    and leave ``dy`` in place (the reference net's second layer: 3.0 vs 4.0 ms).
    """
    f, cg, kh, kw = weight_shape
    if s == 1 and (cg * kh * kw <= 72 or f // groups < 16):
        return _conv_weight_grad_rows(dy, x, weight_shape, p, groups, dbias)
    n, _, h, w = x.shape
    ho, wo = dy.shape[2], dy.shape[3]
    xh = _conv_channel_last(x, groups, p, p, h + 2 * p, w + 2 * p)
    dweight = _empty(weight_shape, dtype=x.dtype)
    if cg % _FB == 0:
        n_ft = groups * -(-(f // groups) // _PIX)
        n_tiles = n_ft * kh * kw * (cg // _FB)
        n_chunks = _chunks(n_tiles)
        part = _zeros((n_tiles, _PIX, _FB), dtype=x.dtype)
        bias_part = _zeros((n_ft if dbias is not None else 0, _PIX), dtype=x.dtype)
        _conv2d_weight_channel_tiles(dy, xh, dweight, s, n_chunks, part,
                                     np.empty(0, dtype=x.dtype) if dbias is None else dbias,
                                     bias_part)
        return dweight
    if dbias is not None:
        _conv_bias_grad(dy, dbias)
    dyh = _zeros((n, groups, _blocks(f // groups), ho, wo, _FB), dtype=x.dtype)
    _to_channel_blocks(dy, dyh)
    n_tiles = groups * _blocks(f // groups) * -(-(cg * kh * kw) // _PIX)
    n_chunks = _chunks(n_tiles)
    part = _zeros((n_tiles, _PIX, _FB), dtype=x.dtype)
    _conv2d_weight_tiles(dyh, xh, dweight, s, n_chunks, part)
    return dweight


@njit(**_JIT)
def _to_channel_blocks(dy, dyh):
    """``dy`` (N, G * Fg, HO, WO) -> ``dyh[n, g, f // 32, ho, wo, f % 32]`` (pre-zeroed)."""
    n_img, n_out, ho_n, wo_n = dy.shape
    groups = dyh.shape[1]
    fg = n_out // groups
    # No race: iteration n owns dyh[n]. (Reading along rows and writing with a
    # stride of 32 measured faster than the transposed order.)
    for n in prange(n_img):
        for f in range(n_out):
            g = f // fg
            ff = f % fg
            for i in range(ho_n):
                for j in range(wo_n):
                    dyh[n, g, ff // _FB, i, j, ff % _FB] = dy[n, f, i, j]


# --------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------


@njit(**_JIT)
def _maxpool2d_forward(x, y, argmax, kh_n, kw_n, sh, sw):
    n_img, n_ch, ho_n, wo_n = y.shape
    w_n = x.shape[3]
    # No race: iteration t owns the output planes y[n, c] and argmax[n, c].
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        plane = x[n, c]
        for ho in range(ho_n):
            for wo in range(wo_n):
                h0 = ho * sh
                w0 = wo * sw
                best = plane[h0, w0]
                at = h0 * w_n + w0
                for i in range(kh_n):
                    for j in range(kw_n):
                        v = plane[h0 + i, w0 + j]
                        # Strict ">" keeps the first maximum (as PyTorch);
                        # a NaN wins so that it propagates.
                        if v > best or (v != v and best == best):
                            best = v
                            at = (h0 + i) * w_n + w0 + j
                y[n, c, ho, wo] = best
                argmax[n, c, ho, wo] = at


@njit(**_JIT)
def _maxpool2x2_forward(x, y, argmax):
    """:func:`_maxpool2d_forward` for 2x2 windows with stride 2, unrolled.

    An iteration is a plane, not a row (it found its row by three integer divisions,
    for 8 outputs at the second pooling), and the comparisons are selects: pool2
    0.44-0.48 -> 0.22-0.25 ms, pool1 0.42-0.43 -> 0.29-0.30 ms at batch 64. Flat
    planes and unsigned offsets let the vectoriser see the window's two loads as
    one interleaved pair; with signed row views it left AVX2 code scalar, with a
    branch per comparison (2-core Zen 3, pool1: 4.5 -> 0.5 ms).
    """
    n_img, n_ch, ho_n, wo_n = y.shape
    w_n = x.shape[3]
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    af = argmax.reshape(argmax.size)
    wide = np.int32(w_n)
    # No race: iteration t owns the output planes y[n, c] and argmax[n, c].
    for t in prange(n_img * n_ch):
        for ho in range(ho_n):
            top = np.uint64((t * x.shape[2] + 2 * ho) * w_n)
            bottom = top + np.uint64(w_n)
            out = np.uint64((t * ho_n + ho) * wo_n)
            corner = np.int32(2 * ho * w_n)
            for wo in range(np.uint64(wo_n)):
                c = np.uint64(2) * wo
                one = np.uint64(1)
                best, at = _window_max(xf[top + c], xf[top + c + one], xf[bottom + c],
                                       xf[bottom + c + one], wide)
                yf[out + wo] = best
                af[out + wo] = corner + np.int32(c) + at


def maxpool2d_forward(x, kernel_size, stride):
    """Max pooling without padding; records where each maximum came from.

    Parameters
    ----------
    x : ndarray, (N, C, H, W)
    kernel_size : int or (int, int)
    stride : int or (int, int), or None for ``kernel_size``

    Returns
    -------
    y : ndarray, (N, C, HO, WO), ``HO = (H - KH) // stride + 1``
    argmax : ndarray, (N, C, HO, WO), int32
        Flat index ``h * W + w`` of the (first) maximum in the input plane.
    """
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    ho = (h - kh) // sh + 1
    wo = (w - kw) // sw + 1
    y = _empty((n, c, ho, wo), dtype=x.dtype)
    argmax = _empty((n, c, ho, wo), dtype=np.int32)
    if kh == kw == sh == sw == 2:
        _maxpool2x2_forward(x, y, argmax)  # the reference net's pooling
    else:
        _maxpool2d_forward(x, y, argmax, kh, kw, sh, sw)
    return y, argmax


@njit(**_JIT)
def _maxpool2d_backward(dy, argmax, dx, relu_y):
    """``dx`` (N * C, H * W), zeroed here, gets each ``dy`` at its flat argmax.

    With ``relu_y`` not empty (the output of a ReLU run after the pooling), ``dy``
    counts only where ``relu_y > 0``: that ReLU's backward, without its own pass.
    """
    n_img, n_ch, ho_n, wo_n = dy.shape
    relu = relu_y.size > 0
    zero = dx.dtype.type(0)
    # No race: iteration t owns the input plane dx[t]; overlapping windows
    # (stride < kernel) add into it sequentially within the iteration.
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        plane = dx[t]
        plane[:] = 0
        for ho in range(ho_n):
            for wo in range(wo_n):
                g = dy[n, c, ho, wo]
                if relu and not relu_y[n, c, ho, wo] > zero:
                    g = zero
                plane[argmax[n, c, ho, wo]] += g


#: Windows per row that :func:`_maxpool2x2_backward` needs a multiple of: measured on
#: a 2-core Zen 4 at batch 64, relu backward included, the scatter against the
#: gather, pool1 (16 windows a row) 0.39 -> 0.20 ms with AVX-512 and 0.62 -> 0.49
#: compiled for AVX2, pool2 (8) 0.16 -> 0.19 and 0.18 -> 1.6. Presumably the
#: vectorised loop takes 16 windows a step at both widths, and shorter rows go
#: through the scalar loop (not checked in the assembly).
_GATHER_WINDOWS = 16


@njit(**_JIT)
def _maxpool2x2_backward(dy, argmax, dx, relu_y):
    """:func:`_maxpool2d_backward` for 2x2 windows with stride 2, as a gather: every
    element of ``dx`` (N, C, H, W) is written once, ``dy`` of its window where the
    window's argmax is it, else 0 (a last odd row or column, in no window, is 0).

    The scatter zeroes each plane and then adds into it at random places: two
    passes over ``dx``, the second not vectorised. Here a row is one loop of selects
    over flat planes with unsigned offsets, as in :func:`_maxpool2x2_forward`; it
    pays only on long enough rows (see :data:`_GATHER_WINDOWS`).
    """
    n_img, n_ch, ho_n, wo_n = dy.shape
    h_n, w_n = dx.shape[2], dx.shape[3]
    dyf = dy.reshape(dy.size)
    af = argmax.reshape(argmax.size)
    dxf = dx.reshape(dx.size)
    rf = relu_y.reshape(relu_y.size)
    relu = relu_y.size > 0
    zero = dx.dtype.type(0)
    # No race: iteration t owns the input plane dx[t // C, t % C].
    for t in prange(n_img * n_ch):
        for h in range(h_n):
            row = np.uint64((t * h_n + h) * w_n)
            ho = h // 2
            if ho == ho_n:  # the last of an odd number of rows
                for w in range(np.uint64(w_n)):
                    dxf[row + w] = zero
                continue
            src = np.uint64((t * ho_n + ho) * wo_n)
            left = np.int32(h * w_n)
            for wo in range(np.uint64(wo_n)):
                g = dyf[src + wo]
                if relu:
                    g = g if rf[src + wo] > zero else zero
                # 0 where the maximum was the row's left of the window, 1 its right
                at = af[src + wo] - left - np.int32(2) * np.int32(wo)
                c = np.uint64(2) * wo
                dxf[row + c] = g if at == 0 else zero
                dxf[row + c + np.uint64(1)] = g if at == 1 else zero
            if w_n % 2:  # the last of an odd number of columns
                dxf[row + np.uint64(w_n - 1)] = zero


def maxpool2d_backward(dy, argmax, x_shape, kernel_size=None, stride=None):
    """Route each output gradient to the input element that won its window.

    Parameters
    ----------
    dy : ndarray, (N, C, HO, WO)
    argmax : ndarray, (N, C, HO, WO), int32, from :func:`maxpool2d_forward`
    x_shape : tuple, (N, C, H, W)
    kernel_size, stride : int, optional
        The forward's window. Without them the gradients are scattered, which
        is right for any window; with 2x2 windows of stride 2 (and rows of 16,
        32, ... windows) they are gathered, each element of ``dx`` written once:
        the same values, faster.

    Returns
    -------
    dx : ndarray, x_shape, dy's dtype
    """
    return _route_to_argmax(dy, argmax, x_shape, None, kernel_size, stride)


def maxpool2d_relu_backward(dy, y, argmax, x_shape, kernel_size=None, stride=None):
    """:func:`relu_backward` (``y`` the ReLU's output) then :func:`maxpool2d_backward`,
    bit for bit, in one pass: the masked gradient is routed as it is read."""
    return _route_to_argmax(dy, argmax, x_shape, y, kernel_size, stride)


def _route_to_argmax(dy, argmax, x_shape, relu_y, kernel_size, stride):
    """The two backwards above: ``relu_y`` None, or the ReLU's output."""
    dy = np.ascontiguousarray(dy)
    n, c, h, w = (int(s) for s in x_shape)
    dx = _empty((n, c, h, w), dtype=dy.dtype)
    argmax = np.ascontiguousarray(argmax, dtype=np.int32)
    if relu_y is None:
        relu_y = np.empty((0,) * 4, dtype=dy.dtype)
    relu_y = np.ascontiguousarray(relu_y, dtype=dy.dtype)
    window = None if kernel_size is None else _pair(kernel_size)
    step = window if stride is None else _pair(stride)
    if window == (2, 2) and step == (2, 2) and dy.shape[3] % _GATHER_WINDOWS == 0:
        _maxpool2x2_backward(dy, argmax, dx, relu_y)
        return dx
    # Flat planes: the argmax indexes them directly (a row / column split of it
    # cost an integer division per element, 0.88 -> 0.26 ms for the first pooling).
    _maxpool2d_backward(dy, argmax, dx.reshape(n * c, h * w), relu_y)
    return dx


# --------------------------------------------------------------------------
# fully connected and maxout
#
# The matrix products run on a Numba micro-kernel (same register tile as the
# convolution: 8 rows x 32 columns) rather than on BLAS: OpenBLAS keeps its
# own thread pool, and on a small machine its spinning threads fight Numba's
# for the cores between calls.
# --------------------------------------------------------------------------

_GEMM_COLS = _FB


#: Reduction steps per panel of :func:`_gemm`: a 32-column block of ``b`` over one
#: panel is 32 KiB, 8 rows of ``a`` 8 KiB.
_GEMM_KC = 256

#: Largest ``b`` that :func:`_matmul` re-reads for every 8 rows of ``a`` (it stays
#: in a core's L2). fc1's weight gradient at batch 64, ``dy.T @ x`` with x 1 MiB,
#: went from 8-row strips of its 4 MiB result to whole rows: training step 17.7 ->
#: 17.2 ms (interleaved A/B medians), though no faster timed alone.
_GEMM_REREAD_BYTES = 1 << 20

#: :func:`_matmul` packs ``b`` (:func:`_pack_columns`) for a product of at least this
#: many 8-row tiles of ``a``, each of which reads all of ``b``. Measured on a 2-core
#: Zen 4 (each best of 4 medians, interleaved processes): fc1's weight gradient
#: (32 tiles) 1.05-1.12 -> 0.82-0.93 ms, its input gradient at batch 128 (16)
#: 1.54-1.79 -> 1.47-1.55, and at batch 64 (8 tiles) 0.68-0.72 -> 0.75-0.81 (the
#: packing of the 4 MiB weight not paid back).
_GEMM_PACK_ROW_TILES = 16


@njit(**_JIT)
def _gemm(a, bf, k_step, cb_step, c, column_major, n_chunks, part):
    """``c[i, j] = sum_k a[i, k] * b[k, j]`` for the columns ``j`` that ``c`` has.

    ``a`` is (I, K); ``c`` is (I, J). ``b`` (K, J) comes flat, as ``bf`` with
    ``b[k, 32 cb + j] = bf[cb * cb_step + k * k_step + j]`` for ``j < 32``: either
    ``b`` itself (``k_step = J``, ``cb_step = 32``; J a multiple of 32) or packed
    in blocks of 32 columns by :func:`_pack_columns` (``k_step = 32``,
    ``cb_step = 32 K``; zeros past J). A tile is 8 rows times 32 columns;
    the last row tile repeats its last row in unused slots (clamped indices) and
    stores only the valid rows. ``part`` (tiles, 8, 32) holds each tile's sums
    between panels.

    Notes
    -----
    Iteration ``chunk`` owns a contiguous run of tiles and sweeps them once per
    panel of ``_GEMM_KC`` reduction steps, so the panel's slices of ``a`` and
    ``b`` are read from cache by all its tiles (the whole of a 4096-deep ``b``
    block would not stay there). The tile order decides which operand
    consecutive tiles share: with ``column_major`` a column block of ``b``,
    else 8 rows of ``a``; the caller re-reads the smaller one. Every element
    sums ``k`` in ascending order, whatever ``n_chunks``.

    Packed, a tile reads its block of ``b`` front to back. In ``b``'s own layout
    the block's rows lie a row of ``b`` apart, 16 KiB for fc1's 4096 columns, so
    all of them fall in the same two sets of the L1 cache: a product that
    re-reads ``b`` for many row tiles pays for that (see :func:`_matmul`).
    """
    i_n, k_n = a.shape
    n_cb = (c.shape[1] + _GEMM_COLS - 1) // _GEMM_COLS
    ks = np.uint64(k_step)
    n_rt = (i_n + _PIX - 1) // _PIX
    n_t = n_rt * n_cb
    last = i_n - 1
    cflat = c.reshape(c.size)
    per_chunk = (n_t + n_chunks - 1) // n_chunks
    # No race: iteration chunk owns tiles [t0, t1): their part and c entries.
    for chunk in prange(n_chunks):
        t0 = chunk * per_chunk
        t1 = min(t0 + per_chunk, n_t)
        acc = np.empty((_PIX, _GEMM_COLS), dtype=c.dtype)
        for k0 in range(0, k_n, _GEMM_KC):
            k1 = min(k0 + _GEMM_KC, k_n)
            for t in range(t0, t1):
                if column_major:
                    i0 = (t % n_rt) * _PIX
                    cb = t // n_rt
                else:
                    i0 = (t // n_cb) * _PIX
                    cb = t % n_cb
                r0 = min(i0, last)
                r1 = min(i0 + 1, last)
                r2 = min(i0 + 2, last)
                r3 = min(i0 + 3, last)
                r4 = min(i0 + 4, last)
                r5 = min(i0 + 5, last)
                r6 = min(i0 + 6, last)
                r7 = min(i0 + 7, last)
                for p in range(_PIX):
                    for j in range(_GEMM_COLS):
                        acc[p, j] = 0 if k0 == 0 else part[t, p, j]
                for k in range(k0, k1):
                    u = np.uint64(k)  # unsigned: no negative-index fix-up per load
                    a0 = a[r0, u]
                    a1 = a[r1, u]
                    a2 = a[r2, u]
                    a3 = a[r3, u]
                    a4 = a[r4, u]
                    a5 = a[r5, u]
                    a6 = a[r6, u]
                    a7 = a[r7, u]
                    row = np.uint64(cb * cb_step) + u * ks  # unsigned, as u
                    for j in range(_LANES):
                        ba = bf[row + np.uint64(j)]
                        bb = bf[row + np.uint64(_LANES + j)]
                        _tile_fma(acc, j, a0, a1, a2, a3, a4, a5, a6, a7, ba, bb)
                if k1 < k_n:
                    for p in range(_PIX):
                        for j in range(_GEMM_COLS):
                            part[t, p, j] = acc[p, j]
                else:
                    _gemm_store(acc, cflat, i_n, c.shape[1], i0, cb * _GEMM_COLS)


#: Columns of a packed block that one thread of _pack_columns writes: 16 are a
#: whole 64-byte cache line of float32 (and two of float64).
_PACK_COLS = min(16, _GEMM_COLS)


@njit(**_JIT)
def _pack_columns(b, transposed, bp):
    """``bp[cb, k, j] = B[k, 32 cb + j]``, zero past B's columns, for ``B = b``
    (K, J) or, with ``transposed``, ``B = b.T`` with ``b`` (J, K): :func:`_gemm`'s
    operand. Either way ``b`` is read row by row."""
    k_n = b.shape[1] if transposed else b.shape[0]
    j_n = b.shape[0] if transposed else b.shape[1]
    n_cb = bp.shape[0]
    zero = bp.dtype.type(0)
    if transposed:
        # No race: iteration q owns _PACK_COLS columns of bp's rows, which are whole
        # cache lines (64 bytes of float32, 128 of float64), zero padding included.
        # (Iterations over 8 columns had two threads write into the same lines: the
        # batch-16 fc1 forward took 2.5x the time of batch 32.) b is read row by row.
        per_cb = _GEMM_COLS // _PACK_COLS
        for q in prange(n_cb * per_cb):
            cb = q // per_cb
            for j in range(q % per_cb * _PACK_COLS, q % per_cb * _PACK_COLS + _PACK_COLS):
                col = cb * _GEMM_COLS + j
                if col < j_n:
                    for k in range(k_n):
                        bp[cb, k, j] = b[col, k]
                else:
                    for k in range(k_n):
                        bp[cb, k, j] = zero
        return
    # No race: iteration kb owns bp[:, 8 kb : 8 kb + 8].
    for kb in prange((k_n + 7) // 8):
        for cb in range(n_cb):
            n_cols = min(_GEMM_COLS, j_n - cb * _GEMM_COLS)
            for k in range(kb * 8, min(kb * 8 + 8, k_n)):
                for j in range(n_cols):
                    bp[cb, k, j] = b[k, cb * _GEMM_COLS + j]
                for j in range(n_cols, _GEMM_COLS):
                    bp[cb, k, j] = zero


@njit(**_JIT_SMALL)
def _gemm_store(acc, cflat, i_n, j_n, i0, j0):
    """A :func:`_gemm` tile ``acc`` (8, 32) to ``c[i0:, j0:]``, as far as ``c`` (I, J),
    flat as ``cflat``, goes.

    A function of its own (its run-time loops vectorise; inlined, the variable-count
    stores became scatter instructions). It takes ``c`` flat, not reshaping it
    itself: a reshape is a call into Numba's runtime and two reference counts, and
    per tile that was a quarter of conv1's pooled forward in
    :func:`_pool_tile` (see there)."""
    n_cols = np.uint64(min(_GEMM_COLS, j_n - j0))
    for p in range(min(_PIX, i_n - i0)):
        row = np.uint64((i0 + p) * j_n + j0)
        for j in range(n_cols):
            cflat[row + j] = acc[p, j]


def _matmul(a, b, dtype, b_transposed=False):
    """``a @ b`` on :func:`_gemm`; ``a`` (I, K) and ``b`` (K, J) any layout, or with
    ``b_transposed`` ``a @ b.T`` for ``b`` (J, K) (packed from its rows, no copy of
    the transpose)."""
    a = np.ascontiguousarray(a, dtype=dtype)
    b = np.ascontiguousarray(b, dtype=dtype)
    k, j = b.shape[::-1] if b_transposed else b.shape
    c = _empty((a.shape[0], j), dtype=dtype)
    if c.size == 0:  # no rows (an empty batch) or no columns: no tile to share out
        return c
    if k == 0:  # an empty sum: _gemm would store no tile
        c.fill(0)
        return c
    n_cb = -(-j // _GEMM_COLS)
    n_rt = -(-a.shape[0] // _PIX)
    if b_transposed or j % _GEMM_COLS or n_rt >= _GEMM_PACK_ROW_TILES:
        bf = _empty((n_cb, k, _GEMM_COLS), dtype=dtype)
        _pack_columns(b, b_transposed, bf)
        k_step, cb_step = _GEMM_COLS, k * _GEMM_COLS
    else:
        bf, k_step, cb_step = b, j, _GEMM_COLS
    n_tiles = n_rt * n_cb
    n_chunks = _chunks(n_tiles)
    part = _empty((n_tiles if k > _GEMM_KC else 0, _PIX, _GEMM_COLS), dtype=dtype)
    # Row-major tile order re-reads b and writes c along its rows; column-major
    # re-reads a and writes c in 8-row strips (see _gemm's notes). Re-read b when it
    # stays in cache, else the smaller operand.
    column_major = b.nbytes > _GEMM_REREAD_BYTES and b.size > a.size
    _gemm(a, bf.reshape(-1), k_step, cb_step, c, column_major, n_chunks, part)
    return c


@njit(**_JIT_SMALL)
def _transpose_add_bias(yt, bias, y):
    n_img, m = y.shape
    for i in range(n_img):
        for j in range(m):
            y[i, j] = yt[j, i] + bias[j]


def linear_forward(x, weight, bias, relu=False):
    """Batched fully connected layer, ``y = x @ weight.T + bias``.

    Parameters
    ----------
    x : ndarray, (N, D)
    weight : ndarray, (M, D)
    bias : ndarray, (M,), or None
    relu : bool, default False
        Return :func:`relu_forward` of ``y`` instead, bit for bit (by that kernel, in
        place: on the cpu a ReLU over one layer's outputs costs microseconds).

    Returns
    -------
    y : ndarray, (N, M), x's dtype

    Notes
    -----
    Computed as ``y.T = weight @ x.T`` so that the micro-kernel's vectors run
    along the batch (``x.T`` packed from x's rows) and weight rows are read in place.
    """
    x = np.ascontiguousarray(x)
    dtype = x.dtype
    m = weight.shape[0]
    b = _zeros(m, dtype=dtype) if bias is None else np.ascontiguousarray(bias, dtype=dtype)
    yt = _matmul(weight, x, dtype, b_transposed=True)
    y = _empty((x.shape[0], m), dtype=dtype)
    _transpose_add_bias(yt, b, y)
    if relu:  # in place, by relu_forward's kernel
        _relu_forward(y.reshape(-1), y.reshape(-1))
    return y


@njit(**_JIT_SMALL)
def _column_sums(a, out):
    n_rows, n_cols = a.shape
    for j in range(n_cols):  # rows are added in order
        s = a.dtype.type(0)
        for i in range(n_rows):
            s += a[i, j]
        out[j] = s


def linear_backward(dy, x, weight, input_grad=True, relu_y=None):
    """Gradients of :func:`linear_forward`.

    Parameters
    ----------
    dy : ndarray, (N, M)
    x : ndarray, (N, D)
    weight : ndarray, (M, D)
    input_grad : bool, default True
        False skips ``dx`` (returned as None).
    relu_y : ndarray, (N, D), optional
        The output of a ReLU that ran just before this layer: ``dx`` goes back
        through it too, ``relu_backward(dy @ weight, relu_y)``, bit for bit.

    Returns
    -------
    dx : ndarray, (N, D), ``dy @ weight``, or None
    dweight : ndarray, (M, D), ``dy.T @ x``
    dbias : ndarray, (M,), ``dy.sum(0)``
    """
    x = np.ascontiguousarray(x)
    dtype = x.dtype
    dy = np.ascontiguousarray(dy, dtype=dtype)
    dx = _matmul(dy, weight, dtype) if input_grad else None
    if dx is not None and relu_y is not None:  # in place, by relu_backward's kernel
        _relu_backward(dx.reshape(-1), _flat(relu_y), dx.reshape(-1))
    dweight = _matmul(dy.T, x, dtype)
    dbias = _empty(weight.shape[0], dtype=dtype)
    _column_sums(dy, dbias)
    return dx, dweight, dbias


@njit(**_JIT_SMALL)
def _maxout_select(z, y, argmax, pieces):
    n_img, m = y.shape
    for i in range(n_img):
        for j in range(m):
            best = z[i, j * pieces]
            at = 0
            for k in range(1, pieces):
                v = z[i, j * pieces + k]
                # First maximum wins; a NaN wins so that it propagates.
                if v > best or (v != v and best == best):
                    best = v
                    at = k
            y[i, j] = best
            argmax[i, j] = at


def maxout_forward(x, weight, bias, pieces):
    """Maxout units, ``y[n, j] = max_k (x[n] @ weight[j*pieces + k] + bias[j*pieces + k])``.

    Parameters
    ----------
    x : ndarray, (N, D)
    weight : ndarray, (M * pieces, D); row ``j * pieces + k`` is piece k of unit j
    bias : ndarray, (M * pieces,), or None
    pieces : int

    Returns
    -------
    y : ndarray, (N, M), x's dtype
    argmax : ndarray, (N, M), int32, winning piece (first on ties)
    """
    pieces = int(pieces)
    z = linear_forward(x, weight, bias)
    m = z.shape[1] // pieces
    y = _empty((z.shape[0], m), dtype=z.dtype)
    argmax = _empty((z.shape[0], m), dtype=np.int32)
    _maxout_select(z, y, argmax, pieces)
    return y, argmax


@njit(**_JIT_SMALL)
def _maxout_scatter(dy, argmax, dz, pieces):
    n_img, m = dy.shape
    for i in range(n_img):
        for j in range(m):
            for k in range(pieces):
                dz[i, j * pieces + k] = 0
            dz[i, j * pieces + argmax[i, j]] = dy[i, j]


def maxout_backward(dy, x, weight, argmax, pieces):
    """Gradients of :func:`maxout_forward`.

    Parameters
    ----------
    dy : ndarray, (N, M)
    x : ndarray, (N, D)
    weight : ndarray, (M * pieces, D)
    argmax : ndarray, (N, M), int32
    pieces : int

    Returns
    -------
    dx : ndarray, (N, D)
    dweight : ndarray, (M * pieces, D)
    dbias : ndarray, (M * pieces,)
    """
    pieces = int(pieces)
    dy = np.ascontiguousarray(dy, dtype=x.dtype)
    dz = _empty((dy.shape[0], dy.shape[1] * pieces), dtype=dy.dtype)
    _maxout_scatter(dy, np.ascontiguousarray(argmax, dtype=np.int32), dz, pieces)
    return linear_backward(dz, x, weight)


# --------------------------------------------------------------------------
# element-wise activations: any shape, computed on the flat C-order view
# --------------------------------------------------------------------------


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


#: Elements below which an element-wise kernel runs serially (256 KiB of float32).
_PARALLEL_MIN_ELEMENTS = 1 << 16


class _Elementwise:
    """An element-wise kernel compiled twice: ``parallel`` for large arrays, ``serial``
    below :data:`_PARALLEL_MIN_ELEMENTS` (its first argument's size).

    A small array is done before the threads of a parallel region would have
    started, and a parallel kernel costs about 0.3 s more to compile: the reference
    net's only unfused activation, fc1's ReLU (16,384 elements at batch 64), paid
    0.6 s of a cold start for its two kernels. Each twin compiles on first use. The
    serial one is a copy of the function under another name (``_serial`` appended),
    so that Numba's on-disk cache, which keys on the name, keeps the two apart.
    """

    def __init__(self, py_func):
        self.parallel = njit(**_JIT)(py_func)
        twin = types.FunctionType(py_func.__code__, py_func.__globals__,
                                  py_func.__name__ + "_serial", py_func.__defaults__,
                                  py_func.__closure__)
        twin.__qualname__ = py_func.__qualname__ + "_serial"
        twin.__doc__ = py_func.__doc__
        self.serial = njit(**_JIT_SMALL)(twin)  # a prange is a range there

    def __call__(self, a, *args):
        kernel = self.parallel if a.size >= _PARALLEL_MIN_ELEMENTS else self.serial
        return kernel(a, *args)


@_Elementwise
def _relu_forward(x, y):
    zero = x.dtype.type(0)
    # No race: iteration i owns y[i] (likewise in every element-wise kernel below).
    for i in prange(x.size):
        v = x[i]
        y[i] = v if (v > zero or v != v) else zero


@_Elementwise
def _relu_backward(dy, y, dx):
    zero = dy.dtype.type(0)
    for i in prange(dy.size):  # no race: owns dx[i]
        dx[i] = dy[i] if y[i] > zero else zero


@_Elementwise
def _leaky_relu_forward(x, slope, y):
    s = x.dtype.type(slope)
    for i in prange(x.size):  # no race: owns y[i]
        v = x[i]
        y[i] = v if v > 0 else v * s


@_Elementwise
def _leaky_relu_backward(dy, x, slope, dx):
    s = dy.dtype.type(slope)
    for i in prange(dy.size):  # no race: owns dx[i]
        dx[i] = dy[i] if x[i] > 0 else dy[i] * s


@_Elementwise
def _sigmoid_forward(x, y):
    one = x.dtype.type(1)
    for i in prange(x.size):  # no race: owns y[i]
        v = x[i]
        e = np.exp(-abs(v))  # in (0, 1]: never overflows
        y[i] = one / (one + e) if v >= 0 else e / (one + e)


@_Elementwise
def _sigmoid_backward(dy, y, dx):
    one = dy.dtype.type(1)
    for i in prange(dy.size):  # no race: owns dx[i]
        dx[i] = dy[i] * y[i] * (one - y[i])


@_Elementwise
def _tanh_forward(x, y):
    for i in prange(x.size):  # no race: owns y[i]
        y[i] = np.tanh(x[i])


@_Elementwise
def _tanh_backward(dy, y, dx):
    one = dy.dtype.type(1)
    for i in prange(dy.size):  # no race: owns dx[i]
        dx[i] = dy[i] * (one - y[i] * y[i])


@_Elementwise
def _elu_forward(x, alpha, y):
    a = x.dtype.type(alpha)
    for i in prange(x.size):  # no race: owns y[i]
        v = x[i]
        y[i] = v if v > 0 else a * np.expm1(v)


@_Elementwise
def _elu_backward(dy, x, y, alpha, dx):
    a = dy.dtype.type(alpha)
    for i in prange(dy.size):  # no race: owns dx[i]
        dx[i] = dy[i] if x[i] > 0 else dy[i] * a * math.exp(x[i])


def relu_forward(x):
    """``max(x, 0)`` element-wise; NaN stays NaN. Any shape, x's dtype."""
    y = _empty(x.shape, dtype=x.dtype)
    _relu_forward(_flat(x), y.reshape(-1))
    return y


def relu_backward(dy, y):
    """``dy`` where the forward output ``y > 0``, else 0. Any shape, dy's dtype."""
    dx = _empty(dy.shape, dtype=dy.dtype)
    _relu_backward(_flat(dy), _flat(y), dx.reshape(-1))
    return dx


def leaky_relu_forward(x, negative_slope):
    """``x`` where ``x > 0``, else ``negative_slope * x``. Any shape, x's dtype."""
    y = _empty(x.shape, dtype=x.dtype)
    _leaky_relu_forward(_flat(x), float(negative_slope), y.reshape(-1))
    return y


def leaky_relu_backward(dy, x, negative_slope):
    """``dy`` where the forward input ``x > 0``, else ``negative_slope * dy``."""
    dx = _empty(dy.shape, dtype=dy.dtype)
    _leaky_relu_backward(_flat(dy), _flat(x), float(negative_slope), dx.reshape(-1))
    return dx


def sigmoid_forward(x):
    """Logistic sigmoid, without overflow for large ``|x|``. Any shape, x's dtype."""
    y = _empty(x.shape, dtype=x.dtype)
    _sigmoid_forward(_flat(x), y.reshape(-1))
    return y


def sigmoid_backward(dy, y):
    """``dy * y * (1 - y)`` with ``y`` the forward output."""
    dx = _empty(dy.shape, dtype=dy.dtype)
    _sigmoid_backward(_flat(dy), _flat(y), dx.reshape(-1))
    return dx


def tanh_forward(x):
    """Hyperbolic tangent. Any shape, x's dtype."""
    y = _empty(x.shape, dtype=x.dtype)
    _tanh_forward(_flat(x), y.reshape(-1))
    return y


def tanh_backward(dy, y):
    """``dy * (1 - y**2)`` with ``y`` the forward output."""
    dx = _empty(dy.shape, dtype=dy.dtype)
    _tanh_backward(_flat(dy), _flat(y), dx.reshape(-1))
    return dx


def elu_forward(x, alpha):
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)``. Any shape, x's dtype."""
    y = _empty(x.shape, dtype=x.dtype)
    _elu_forward(_flat(x), float(alpha), y.reshape(-1))
    return y


def elu_backward(dy, x, y, alpha):
    """``dy`` where ``x > 0``, else ``dy * alpha * exp(x)`` (from ``x``: ``y + alpha``,
    the same in exact arithmetic, cancels as ``exp(x)`` falls below ``alpha``'s rounding)."""
    dx = _empty(dy.shape, dtype=dy.dtype)
    _elu_backward(_flat(dy), _flat(x), _flat(y), float(alpha), dx.reshape(-1))
    return dx


# --------------------------------------------------------------------------
# dropout: splitmix64 of (seed, flat index), the formula of numpy_ref
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# batch normalisation
# --------------------------------------------------------------------------


#: float64 partial sums per channel of the batch-norm kernels (two 512-bit vectors,
#: four 256-bit ones): element ``i`` of a plane goes to lane ``i % _SUM_LANES``, up to
#: the plane's last whole group of lanes, the rest to a tail sum.
_SUM_LANES = 16


@njit(**_JIT_ORDERED)
def _batchnorm2d_stats(x, mean, var):
    """Per-channel mean and biased variance of ``x`` (N, C, H, W), in float64.

    One pass over ``x`` (it was two: 0.61 -> 0.15 ms for the reference net's first
    layer at batch 64), summing ``d = x - k`` and ``d * d`` with ``k`` the channel's
    first value, so that the sum of squares does not cancel when the mean is large
    against the spread. The sums run in ``_SUM_LANES`` lanes over the images in
    turn, then the tail, then the lanes are added in order (``_JIT_ORDERED``: the
    same bits wherever the kernel was compiled; at the speed of the plain sums,
    which LLVM had vectorised in an order of its own).
    """
    n_img, n_ch = x.shape[0], x.shape[1]
    hw = x.shape[2] * x.shape[3]
    count = hw * n_img
    whole = hw - hw % _SUM_LANES
    xf = x.reshape((n_img, n_ch, hw))
    # No race: iteration c owns mean[c] and var[c]; its sums run in a fixed order.
    for c in prange(n_ch):
        k = np.float64(xf[0, c, 0]) if count > 0 else 0.0
        lanes = np.zeros(2 * _SUM_LANES)  # the sums of d, then of d * d
        s_tail = 0.0
        q_tail = 0.0
        for n in range(n_img):
            for i0 in range(0, whole, _SUM_LANES):
                for lane in range(_SUM_LANES):
                    d = np.float64(xf[n, c, np.uint64(i0 + lane)]) - k  # unsigned: no gather
                    lanes[lane] += d
                    lanes[_SUM_LANES + lane] += d * d
            for i in range(whole, hw):
                d = np.float64(xf[n, c, i]) - k
                s_tail += d
                q_tail += d * d
        s = 0.0
        q = 0.0
        for lane in range(_SUM_LANES):
            s += lanes[lane]
            q += lanes[_SUM_LANES + lane]
        mu = (s + s_tail) / count
        mean[c] = k + mu
        var[c] = max((q + q_tail) / count - mu * mu, 0.0)


@njit(**_JIT)
def _batchnorm2d_apply(x, scale, shift, y):
    n_img, n_ch = x.shape[0], x.shape[1]
    # No race: iteration t owns the plane y[n, c].
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        a = scale[c]
        b = shift[c]
        src = x[n, c]
        dst = y[n, c]
        for i in range(src.shape[0]):
            for j in range(src.shape[1]):
                dst[i, j] = src[i, j] * a + b


def batchnorm2d_forward(x, weight, bias, running_mean, running_var, momentum, eps, training):
    """Batch normalisation per channel over the (N, H, W) axes.

    Parameters
    ----------
    x : ndarray, (N, C, H, W)
    weight, bias : ndarray, (C,)
    running_mean, running_var : ndarray, (C,)
        Updated in place when ``training`` (unbiased variance, as PyTorch).
    momentum, eps : float
    training : bool
        Batch statistics when true, running statistics when false.

    Returns
    -------
    y : ndarray, (N, C, H, W), ``(x - mean) * invstd * weight + bias``
    mean : ndarray, (C,), the mean used
    invstd : ndarray, (C,), ``1 / sqrt(var + eps)`` (biased batch variance)
    """
    x = np.ascontiguousarray(x)
    scale, shift, mean, invstd = _batchnorm2d_affine(x, weight, bias, running_mean,
                                                     running_var, momentum, eps, training)
    y = _empty(x.shape, dtype=x.dtype)  # pooled: fresh memory page-faults every step
    _batchnorm2d_apply(x, scale, shift, y)
    return y, mean, invstd


def _batchnorm2d_affine(x, weight, bias, running_mean, running_var, momentum, eps, training):
    """``(scale, shift, mean, invstd)`` of :func:`batchnorm2d_forward`, whose output is
    ``x * scale + shift`` per channel; updates the running statistics when training."""
    dtype = x.dtype
    if training:
        n = x.size // x.shape[1]
        mean64 = _empty(x.shape[1])
        var64 = _empty(x.shape[1])
        _batchnorm2d_stats(x, mean64, var64)
        mean = mean64.astype(dtype)
        var = var64.astype(dtype)
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += (momentum * n / max(n - 1, 1)) * var
    else:
        mean = np.array(running_mean, dtype=dtype)
        var = running_var
    invstd = (1 / np.sqrt(var + eps)).astype(dtype, copy=False)
    scale = np.ascontiguousarray(weight * invstd, dtype=dtype)
    shift = np.ascontiguousarray(bias - mean * weight * invstd, dtype=dtype)
    return scale, shift, mean, invstd


@njit(**_JIT)
def _batchnorm2d_pool2x2(x, scale, shift, y, argmax, relu):
    """:func:`_batchnorm2d_apply` then :func:`_maxpool2x2_forward` (then, with ``relu``,
    :func:`_relu_forward`), the normalised value of each input computed as the window
    reads it: the same expressions, so the same bits, and the normalised images
    (the size of ``x``) are never stored."""
    n_img, n_ch, ho_n, wo_n = y.shape
    w_n = x.shape[3]
    wide = np.int32(w_n)
    zero = y.dtype.type(0)
    # No race: iteration t owns the output planes y[n, c] and argmax[n, c].
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t - n * n_ch
        a = scale[c]
        b = shift[c]
        for ho in range(ho_n):
            top = x[n, c, 2 * ho]
            bottom = x[n, c, 2 * ho + 1]
            for wo in range(wo_n):
                best, at = _window_max(top[2 * wo] * a + b, top[2 * wo + 1] * a + b,
                                       bottom[2 * wo] * a + b, bottom[2 * wo + 1] * a + b,
                                       wide)
                if relu:
                    best = best if (best > zero) | (best != best) else zero
                y[n, c, ho, wo] = best
                argmax[n, c, ho, wo] = 2 * ho * w_n + 2 * wo + at


def batchnorm2d_maxpool2d_forward(x, weight, bias, running_mean, running_var, momentum, eps,
                                  training, pool_size, pool_stride, relu=False):
    """:func:`batchnorm2d_forward` then :func:`maxpool2d_forward` (then, with ``relu``,
    :func:`relu_forward` of the pooling), bit for bit; ``(y, argmax, mean, invstd)``.

    For 2x2 pooling (stride 2) one kernel normalises each value as its window reads
    it (:func:`_batchnorm2d_pool2x2`): the normalised images, which only the pooling
    reads, are neither written nor read back. Any other pooling runs the kernels in
    turn.
    """
    x = np.ascontiguousarray(x)
    if not int(pool_size) == int(pool_stride) == 2:
        z, mean, invstd = batchnorm2d_forward(x, weight, bias, running_mean, running_var,
                                              momentum, eps, training)
        y, argmax = maxpool2d_forward(z, pool_size, pool_stride)
        return (relu_forward(y) if relu else y), argmax, mean, invstd
    scale, shift, mean, invstd = _batchnorm2d_affine(x, weight, bias, running_mean,
                                                     running_var, momentum, eps, training)
    n, c, h, w = x.shape
    y = _empty((n, c, h // 2, w // 2), dtype=x.dtype)
    argmax = _empty(y.shape, dtype=np.int32)
    _batchnorm2d_pool2x2(x, scale, shift, y, argmax, bool(relu))
    return y, argmax, mean, invstd


@njit(**_JIT_ORDERED)
def _batchnorm2d_backward(dy, x, weight, mean, invstd, dx, dweight, dbias):
    n_img, n_ch = x.shape[0], x.shape[1]
    hw = x.shape[2] * x.shape[3]
    count = hw * n_img
    whole = hw - hw % _SUM_LANES
    # Flat planes: each plane's sums are one loop, vectorised (0.82 -> 0.59 ms for the
    # reference net's first layer at batch 64).
    dyf = dy.reshape((n_img, n_ch, hw))
    xf = x.reshape((n_img, n_ch, hw))
    dxf = dx.reshape((n_img, n_ch, hw))
    # No race: iteration c owns channel c of dx, dweight and dbias; its sums
    # run in float64 in a fixed order (in lanes, as _batchnorm2d_stats').
    for c in prange(n_ch):
        mu = mean[c]
        istd = invstd[c]
        lanes = np.zeros(2 * _SUM_LANES)  # the sums of dy, then of dy * xhat
        b_tail = 0.0
        w_tail = 0.0
        for n in range(n_img):
            for i0 in range(0, whole, _SUM_LANES):
                for lane in range(_SUM_LANES):
                    i = np.uint64(i0 + lane)
                    g = dyf[n, c, i]
                    lanes[lane] += g
                    lanes[_SUM_LANES + lane] += g * ((xf[n, c, i] - mu) * istd)
            for i in range(whole, hw):
                g = dyf[n, c, i]
                b_tail += g
                w_tail += g * ((xf[n, c, i] - mu) * istd)
        sb = 0.0
        sw = 0.0
        for lane in range(_SUM_LANES):
            sb += lanes[lane]
            sw += lanes[_SUM_LANES + lane]
        sb += b_tail
        sw += w_tail
        dbias[c] = sb
        dweight[c] = sw
        k = weight[c] * istd
        mb = sb / count
        mw = sw / count
        for n in range(n_img):
            for i in range(hw):
                xhat = (xf[n, c, i] - mu) * istd
                dxf[n, c, i] = k * (dyf[n, c, i] - mb - xhat * mw)


def batchnorm2d_backward(dy, x, weight, mean, invstd):
    """Gradients of :func:`batchnorm2d_forward` in training mode.

    Parameters
    ----------
    dy, x : ndarray, (N, C, H, W)
    weight, mean, invstd : ndarray, (C,)

    Returns
    -------
    dx : ndarray, (N, C, H, W)
    dweight, dbias : ndarray, (C,)
    """
    x = np.ascontiguousarray(x)
    dtype = x.dtype
    dy = np.ascontiguousarray(dy, dtype=dtype)
    dx = _empty(x.shape, dtype=dtype)
    dweight = _empty(x.shape[1], dtype=dtype)
    dbias = _empty(x.shape[1], dtype=dtype)
    _batchnorm2d_backward(
        dy,
        x,
        np.ascontiguousarray(weight, dtype=dtype),
        np.ascontiguousarray(mean, dtype=dtype),
        np.ascontiguousarray(invstd, dtype=dtype),
        dx,
        dweight,
        dbias,
    )
    return dx, dweight, dbias


# --------------------------------------------------------------------------
# losses: (Python float, gradient), mean reduction
# --------------------------------------------------------------------------


@njit(**_JIT_EXACT_SMALL)
def _softmax_cross_entropy(scores, labels, dscores, row_loss):
    n_img, n_cls = scores.shape
    inv_n = scores.dtype.type(1.0 / n_img)
    for i in range(n_img):
        top = scores[i, 0]
        for j in range(1, n_cls):
            top = max(top, scores[i, j])
        total = scores.dtype.type(0)
        for j in range(n_cls):
            e = np.exp(scores[i, j] - top)
            dscores[i, j] = e
            total += e
        y = labels[i]
        row_loss[i] = -((scores[i, y] - top) - np.log(total))
        for j in range(n_cls):
            dscores[i, j] = dscores[i, j] / total
        dscores[i, y] -= 1
        for j in range(n_cls):
            dscores[i, j] *= inv_n


def softmax_cross_entropy(scores, labels):
    """Softmax cross-entropy, ``mean_n(-log softmax(scores[n])[labels[n]])``.

    Parameters
    ----------
    scores : ndarray, (N, C)
    labels : ndarray, (N,), integers in [0, C)

    Returns
    -------
    loss : float
    dscores : ndarray, (N, C), ``(softmax(scores) - onehot(labels)) / N``
    """
    scores = np.ascontiguousarray(scores)
    dscores = np.empty_like(scores)
    row_loss = _empty(scores.shape[0], dtype=np.float64)
    _softmax_cross_entropy(scores, np.ascontiguousarray(labels, dtype=np.int64), dscores, row_loss)
    return float(row_loss.sum() / scores.shape[0]), dscores


@njit(**_JIT_EXACT_SMALL)
def _multiclass_hinge(scores, labels, margin, dscores, row_loss):
    n_img, n_cls = scores.shape
    inv_n = scores.dtype.type(1.0 / n_img)
    mgn = scores.dtype.type(margin)
    zero = scores.dtype.type(0)
    for i in range(n_img):
        y = labels[i]
        correct = scores[i, y]
        total = 0.0
        count = 0
        for j in range(n_cls):
            d = scores[i, j] - correct + mgn
            if j != y and d > 0:
                total += d
                count += 1
                dscores[i, j] = inv_n
            else:
                dscores[i, j] = zero
        dscores[i, y] = -count * inv_n
        row_loss[i] = total


def multiclass_hinge(scores, labels, margin):
    """Multiclass SVM loss, ``mean_n sum_{j != y_n} max(0, s_j - s_{y_n} + margin)``.

    Parameters
    ----------
    scores : ndarray, (N, C)
    labels : ndarray, (N,), integers in [0, C)
    margin : float

    Returns
    -------
    loss : float
    dscores : ndarray, (N, C), ``1/N`` where the margin is positive, minus their count at y
    """
    scores = np.ascontiguousarray(scores)
    dscores = np.empty_like(scores)
    row_loss = _empty(scores.shape[0], dtype=np.float64)
    _multiclass_hinge(
        scores, np.ascontiguousarray(labels, dtype=np.int64), float(margin), dscores, row_loss
    )
    return float(row_loss.sum() / scores.shape[0]), dscores


@njit(**_JIT_EXACT_SMALL)
def _bce_with_logits(s, t, ds, parts):
    size = s.size
    inv = s.dtype.type(1.0 / size)
    one = s.dtype.type(1)
    n_parts = parts.size
    chunk = (size + n_parts - 1) // n_parts
    # Partial sums per chunk, added in order by the caller.
    for k in range(n_parts):
        acc = 0.0
        for i in range(k * chunk, min(size, (k + 1) * chunk)):
            v = s[i]
            tv = t[i]
            e = np.exp(-abs(v))
            acc += max(v, 0) - v * tv + np.log1p(e)
            sig = one / (one + e) if v >= 0 else e / (one + e)
            ds[i] = (sig - tv) * inv
        parts[k] = acc


def bce_with_logits(scores, targets):
    """Sigmoid + binary cross-entropy per element, mean over all elements.

    Parameters
    ----------
    scores : ndarray, any shape (logits)
    targets : ndarray, scores' shape, probabilities in [0, 1]

    Returns
    -------
    loss : float, ``mean(max(s, 0) - s * t + log1p(exp(-|s|)))``
    dscores : ndarray, scores' shape, ``(sigmoid(s) - t) / scores.size``
    """
    s = _flat(scores)
    ds = _empty(scores.shape, dtype=s.dtype)
    parts = _empty(64)
    _bce_with_logits(s, _flat(np.asarray(targets, dtype=s.dtype)), ds.reshape(-1), parts)
    return float(parts.sum() / s.size), ds


@njit(**_JIT_EXACT_SMALL)
def _regression(p, t, l1, dp, parts):
    size = p.size
    scale = p.dtype.type((1.0 if l1 else 2.0) / size)
    zero = p.dtype.type(0)
    one = p.dtype.type(1)
    n_parts = parts.size
    chunk = (size + n_parts - 1) // n_parts
    # Partial sums per chunk, added in order by the caller.
    for k in range(n_parts):
        acc = 0.0
        for i in range(k * chunk, min(size, (k + 1) * chunk)):
            d = p[i] - t[i]
            if l1:
                acc += abs(d)
                sign = one if d > 0 else (-one if d < 0 else (zero if d == 0 else d))
                dp[i] = sign * scale
            else:
                acc += d * d
                dp[i] = d * scale
        parts[k] = acc


def mse(pred, target):
    """Mean squared error over all elements.

    Returns
    -------
    loss : float, ``mean((pred - target)**2)``
    dpred : ndarray, pred's shape, ``2 * (pred - target) / pred.size``
    """
    p = _flat(pred)
    dp = _empty(pred.shape, dtype=p.dtype)
    parts = _empty(64)
    _regression(p, _flat(np.asarray(target, dtype=p.dtype)), False, dp.reshape(-1), parts)
    return float(parts.sum() / p.size), dp


def l1(pred, target):
    """Mean absolute error over all elements.

    Returns
    -------
    loss : float, ``mean(|pred - target|)``
    dpred : ndarray, pred's shape, ``sign(pred - target) / pred.size`` (0 where equal)
    """
    p = _flat(pred)
    dp = _empty(pred.shape, dtype=p.dtype)
    parts = _empty(64)
    _regression(p, _flat(np.asarray(target, dtype=p.dtype)), True, dp.reshape(-1), parts)
    return float(parts.sum() / p.size), dp


# --------------------------------------------------------------------------
# optimizer updates, in place
# --------------------------------------------------------------------------


@njit(**_JIT_EXACT)
def _sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    t = param.dtype.type
    lr_, mom, wd = t(lr), t(momentum), t(weight_decay)
    # No race: iteration i owns param[i] and velocity[i].
    for i in prange(param.size):
        g = grad[i]
        if weight_decay != 0:
            g = g + wd * param[i]
        if momentum != 0:
            v = velocity[i] * mom + g
            velocity[i] = v
            g = g + mom * v if nesterov else v
        param[i] -= lr_ * g


def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """One SGD step in place, as ``torch.optim.SGD`` (no dampening).

    Parameters
    ----------
    param : ndarray, any shape, C-contiguous; updated in place
    grad : ndarray, param's shape
    velocity : ndarray, param's shape, or None when ``momentum == 0``; updated in place
    lr, momentum, weight_decay : float
    nesterov : bool
    """
    flat = param.reshape(-1)  # a view: param is contiguous
    vel = flat if velocity is None else velocity.reshape(-1)
    _sgd_update(
        flat,
        _flat(np.asarray(grad, dtype=param.dtype)),
        vel,
        float(lr),
        float(momentum) if velocity is not None else 0.0,
        bool(nesterov),
        float(weight_decay),
    )


def sgd_update_many(params, grads, velocities, lr, momentum, nesterov, weight_decay):
    """:func:`sgd_update` of every ``(param, grad, velocity)``, in turn.

    Parameters
    ----------
    params, grads : sequences of ndarray, pairwise of one shape
    velocities : sequence of ndarray (or of None when ``momentum == 0``)
    lr, momentum, weight_decay : float
    nesterov : bool
    """
    for param, grad, velocity in zip(params, grads, velocities):
        sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay)


@njit(**_JIT_EXACT)
def _adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    t = param.dtype.type
    b1, b2, wd = t(beta1), t(beta2), t(weight_decay)
    one_b1, one_b2 = t(1 - beta1), t(1 - beta2)
    step_size = t(lr / (1 - beta1**step))
    bc2 = t(np.sqrt(1 - beta2**step))
    eps_ = t(eps)
    # No race: iteration i owns param[i], m[i] and v[i].
    for i in prange(param.size):
        g = grad[i]
        if weight_decay != 0:
            g = g + wd * param[i]
        mi = m[i] * b1 + one_b1 * g
        vi = v[i] * b2 + one_b2 * (g * g)
        m[i] = mi
        v[i] = vi
        param[i] -= step_size * mi / (np.sqrt(vi) / bc2 + eps_)


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """One Adam step in place, as ``torch.optim.Adam`` (L2 weight decay, not AdamW).

    Parameters
    ----------
    param : ndarray, any shape, C-contiguous; updated in place
    grad : ndarray, param's shape
    m, v : ndarray, param's shape; moment estimates, updated in place
    lr, beta1, beta2, eps, weight_decay : float
    step : int, number of this step, from 1
    """
    _adam_update(
        param.reshape(-1),
        _flat(np.asarray(grad, dtype=param.dtype)),
        m.reshape(-1),
        v.reshape(-1),
        float(lr),
        float(beta1),
        float(beta2),
        float(eps),
        float(weight_decay),
        int(step),
    )


def adam_update_many(params, grads, ms, vs, lr, beta1, beta2, eps, weight_decay, steps):
    """:func:`adam_update` of every ``(param, grad, m, v, step)``, in turn.

    Parameters
    ----------
    params, grads, ms, vs : sequences of ndarray, of one shape per index
    lr, beta1, beta2, eps, weight_decay : float
    steps : sequence of int, from 1
    """
    for param, grad, m, v, step in zip(params, grads, ms, vs, steps):
        adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step)

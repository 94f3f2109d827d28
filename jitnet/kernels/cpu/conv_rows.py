"""The convolution's row-vector layout (stride 1): vectors along an output row, on
zero-padded NCHW planes, so nothing is transposed.

- Forward and input gradient (:func:`_conv2d_rows`, through :func:`_conv_rows`):
  tiles of 8 output channels x 2 rows x 16 columns, optionally with the bias, a ReLU
  and a 2x2 max pooling applied as each tile is stored.
- Weight gradient (:func:`_conv2d_weight_rows`, through
  :func:`_conv_weight_grad_rows`): tiles of 4 output channels x 5 (c, kh, kw)
  triples whose lanes are summed at the end; a 3x3 kernel's
  (:func:`_conv2d_weight_rows3x3`), 2 output channels x one input channel's 9 taps,
  two rows at a time.

:mod:`.conv` chooses between this layout and :mod:`.conv_tiles`
(:func:`_rows_pay`).
"""

import numba
import numpy as np
from llvmlite import binding as _llvm_binding
from llvmlite import ir as _llvm_ir
from numba import prange
from numba.core import cgutils as _cgutils
from numba.extending import intrinsic as _intrinsic

from ...codegen import njit
from ._common import _JIT, _JIT_SMALL
from ._tiles import _FB, _LANES, _PIX, _chunks
from .arrays import _empty, _zeros
from .maxpool import _window_max

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
    as :func:`.activations.relu_forward` would make it; the argmax is unchanged.

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

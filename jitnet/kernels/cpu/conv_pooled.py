"""A convolution behind a 2x2 max pooling: its gradients from the pooling's windows.

The pooling's gradient holds one number per window and its argmax says which output
pixel it goes to. The input gradient visits only the nonzeros of the dense ``dy``
it stands for (:func:`_sparse_input_grad`), and the weight gradient is summed from
the windows directly (:func:`_conv_weight_grad_pooled`). :mod:`.conv`'s
``conv2d_maxpool2d_backward`` takes them where they pay.
"""

import functools

import numpy as np
from numba import prange
from numba.cpython.unsafe.numbers import trailing_zeros as _trailing_zeros

from ...codegen import njit
from ._common import _JIT
from ._tiles import _FB, _LANES, _chunks, _conv_out_size
from .arrays import _empty
from .conv_tiles import _to_padded_nhwc

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
    written out: see :mod:`._tiles`)."""
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
# of :func:`.conv.conv2d_maxpool2d_backward` that take them are bitwise reproducible,
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

"""The convolution's channel-vector layout: channel-last, zero-padded images and
register tiles of 8 output pixels x ``_FB`` output channels, for the forward (and
the input gradient) and the weight gradient of any stride and groups.

Images are copied to ``xh[n, g, h, w * Cg + c]`` (group-major, NHWC within a
group, :func:`_to_padded_nhwc`), so that one kernel row of one output pixel,
``(kw, c)``, is a contiguous span of ``KW * Cg`` numbers whatever the stride;
weights are packed as ``wpk[g, fb, kh, kw * Cg + c, j]`` with ``j`` a block of
``_FB`` output channels, zero-padded (:func:`_pack_weight`). :mod:`.conv` chooses
between this layout and :mod:`.conv_rows`.
"""

import numpy as np
from numba import prange

from ...codegen import njit
from ._common import _JIT, _JIT_SMALL
from ._tiles import _FB, _LANES, _PIX, _blocks, _chunks, _tile_fma
from .arrays import _empty


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
    # Which way a padded row's copied run goes (plain padding): gathering a column's
    # channels for each output element, or one channel's run of the input row at a
    # time, scattered into the row (which stays in L1). The gather reads Cg rows of
    # the image at once, a stride of H * W apart; on wide planes and large images
    # that loses to reading each row in one pass. Batch 64, 2 threads, 2-core Zen 5,
    # gather vs by channel, ms: 32 channels on 32x32 0.83 vs 0.35, 64 on 32x32 3.7 vs
    # 1.6, 128 on 16x16 0.95 vs 0.41, 3 on 64x64 0.27 vs 0.14, 64 on 16x16 0.29 vs
    # 0.18; but 32 on 16x16 0.07 vs 0.10, 128 on 8x8 0.09 vs 0.12.
    by_channel = w_n >= 32 or cg * h_n * w_n >= 16384
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
                if by_channel:
                    for c in range(cg):
                        plane = xf[n, g * cg + c]
                        for j in range(j0, j1):
                            row[np.uint64(j * cg + c)] = plane[src + np.uint64(j)]
                    continue
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

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

import numpy as np
from numba import njit, prange

from .. import config

_JIT = dict(parallel=True, cache=True, fastmath=config.FASTMATH)
# Exact kernels (losses, dropout masks, optimizer steps) keep IEEE semantics so
# that every target rounds the same way.
_JIT_EXACT = dict(parallel=True, cache=True)
# Kernels whose work is always tiny (packing a weight, a bias, a row of
# scores) run serially: starting a parallel region costs more than the work,
# and every region is a barrier that stalls when the machine is busy.
_JIT_SMALL = dict(cache=True, fastmath=config.FASTMATH)
_JIT_EXACT_SMALL = dict(cache=True)


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
    """``a`` as a C-contiguous host array (of ``dtype`` when given)."""
    return np.ascontiguousarray(a, dtype=dtype)


def to_numpy(a):
    """The array itself: the cpu target's arrays already are ``np.ndarray``."""
    return np.asarray(a)


def empty(shape, dtype):
    """Uninitialised host array of ``shape`` and ``dtype``."""
    return np.empty(shape, dtype=dtype)


def zeros(shape, dtype):
    """Zero-filled host array of ``shape`` and ``dtype``."""
    return np.zeros(shape, dtype=dtype)


# --------------------------------------------------------------------------
# convolution
#
# All three convolution passes run on one register-blocked micro-kernel
# layout. Inside the kernels, images are channel-last and zero-padded,
# ``xh[n, g, h, w * Cg + c]`` (group-major, NHWC within a group), so that one
# kernel row of one output pixel, ``(kw, c)``, is a contiguous span of
# ``KW * Cg`` numbers whatever the stride. Weights are packed as
# ``wpk[g, fb, kh, kw * Cg + c, j]`` with ``j`` a block of ``_FB`` output
# channels (zero-padded), so that one weight vector is a contiguous,
# unit-stride run the vectoriser turns into two 16-lane loads.
#
# The micro-kernel keeps an ``_PIX x _FB`` accumulator tile (8 output pixels x
# 32 output channels = 16 AVX-512 registers in float32) and, per reduction
# step, broadcasts 8 input values and loads 2 weight vectors: 16 fused
# multiply-adds for 10 loads. The pixel statements are written out by hand:
# LLVM keeps the tile in registers only when every access has a constant
# offset (no inner loop over pixels with a runtime trip count).
# --------------------------------------------------------------------------

#: Output channels per register tile (a multiple of 16 lanes).
_FB = 32
#: Output pixels per register tile (written out in the micro-kernels).
_PIX = 8


def _conv_out_size(size, k, s, p):
    return (size + 2 * p - k) // s + 1


@njit(**_JIT)
def _to_padded_nhwc(x, xh, top, left, sh, sw):
    """Scatter ``x`` (N, C, H, W) into zeroed ``xh`` (N, G, Hp, Wp * Cg).

    Element ``x[n, g * Cg + c, h, w]`` goes to row ``top + h * sh``, column
    ``left + w * sw``; ``sh = sw = 1`` is plain padding, larger values dilate
    (the upstream gradient of a strided convolution, for its input gradient).
    Positions outside ``xh`` are dropped (negative padding crops).
    """
    n_img, n_ch, h_n, w_n = x.shape
    groups, hp_n = xh.shape[1], xh.shape[2]
    cg = n_ch // groups
    wp_n = xh.shape[3] // cg
    # No race: iteration t owns the image xh[n].
    for n in prange(n_img):
        for c in range(n_ch):
            g = c // cg
            cc = c % cg
            for h in range(h_n):
                i = top + h * sh
                if i < 0 or i >= hp_n:
                    continue
                for w in range(w_n):
                    j = left + w * sw
                    if j >= 0 and j < wp_n:
                        xh[n, g, i, j * cg + cc] = x[n, c, h, w]


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
def _conv2d_tiles(xh, wpk, bias, y, s, cg):
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
    # No race: iteration t owns the output row y[n, :, ho, :].
    for t in prange(n_img * ho_n):
        n = t // ho_n
        ho = t % ho_n
        acc = np.empty((_PIX, _FB), dtype=y.dtype)
        for g in range(groups):
            for fb in range(n_blocks):
                for tile in range(n_tiles):
                    wo0 = tile * _PIX
                    # Column of pixel p's window in the channel-last row.
                    i0 = min(wo0, last) * s * cg
                    i1 = min(wo0 + 1, last) * s * cg
                    i2 = min(wo0 + 2, last) * s * cg
                    i3 = min(wo0 + 3, last) * s * cg
                    i4 = min(wo0 + 4, last) * s * cg
                    i5 = min(wo0 + 5, last) * s * cg
                    i6 = min(wo0 + 6, last) * s * cg
                    i7 = min(wo0 + 7, last) * s * cg
                    for j in range(_FB):
                        for p in range(_PIX):
                            acc[p, j] = 0
                    for kh in range(kh_n):
                        h = ho * s + kh
                        for r in range(r_n):
                            x0 = xh[n, g, h, i0 + r]
                            x1 = xh[n, g, h, i1 + r]
                            x2 = xh[n, g, h, i2 + r]
                            x3 = xh[n, g, h, i3 + r]
                            x4 = xh[n, g, h, i4 + r]
                            x5 = xh[n, g, h, i5 + r]
                            x6 = xh[n, g, h, i6 + r]
                            x7 = xh[n, g, h, i7 + r]
                            for j in range(16):
                                wa = wpk[g, fb, kh, r, j]
                                wb = wpk[g, fb, kh, r, 16 + j]
                                acc[0, j] += x0 * wa
                                acc[1, j] += x1 * wa
                                acc[2, j] += x2 * wa
                                acc[3, j] += x3 * wa
                                acc[4, j] += x4 * wa
                                acc[5, j] += x5 * wa
                                acc[6, j] += x6 * wa
                                acc[7, j] += x7 * wa
                                acc[0, 16 + j] += x0 * wb
                                acc[1, 16 + j] += x1 * wb
                                acc[2, 16 + j] += x2 * wb
                                acc[3, 16 + j] += x3 * wb
                                acc[4, 16 + j] += x4 * wb
                                acc[5, 16 + j] += x5 * wb
                                acc[6, 16 + j] += x6 * wb
                                acc[7, 16 + j] += x7 * wb
                    f0 = g * f_per_group + fb * _FB
                    for j in range(min(_FB, f_per_group - fb * _FB)):
                        b = bias[f0 + j]
                        for p in range(min(_PIX, wo_n - wo0)):
                            y[n, f0 + j, ho, wo0 + p] = acc[p, j] + b


def _blocks(n):
    return (n + _FB - 1) // _FB


def _conv_channel_last(x, groups, top, left, hp, wp, sh=1, sw=1):
    """``x`` (N, C, H, W) as zero-padded (optionally dilated) channel-last ``xh``."""
    n, c = x.shape[0], x.shape[1]
    xh = np.zeros((n, groups, hp, wp * (c // groups)), dtype=x.dtype)
    _to_padded_nhwc(x, xh, top, left, sh, sw)
    return xh


def _conv_forward_core(xh, weight, bias, y, stride, groups, flip=False):
    f, cg, kh, _ = weight.shape
    wpk = np.empty((groups, _blocks(f // groups), kh, weight.shape[3] * cg, _FB), dtype=y.dtype)
    _pack_weight(weight, wpk, flip)
    _conv2d_tiles(xh, wpk, bias, y, stride, cg)


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
    (no im2col buffer) by :func:`_conv2d_tiles` on a channel-last padded copy.
    """
    s = _square("stride", stride)
    p = _square("padding", padding)
    groups = int(groups)
    x = np.ascontiguousarray(x)
    dtype = x.dtype
    n, _, h, w = x.shape
    f, _, kh, kw = weight.shape
    ho = _conv_out_size(h, kh, s, p)
    wo = _conv_out_size(w, kw, s, p)
    xh = _conv_channel_last(x, groups, p, p, h + 2 * p, w + 2 * p)
    b = np.zeros(f, dtype=dtype) if bias is None else np.ascontiguousarray(bias, dtype=dtype)
    y = np.empty((n, f, ho, wo), dtype=dtype)
    _conv_forward_core(xh, np.ascontiguousarray(weight, dtype=dtype), b, y, s, groups)
    return y


@njit(**_JIT)
def _conv2d_weight_tiles(dyh, xh, dweight, s, wo_n):
    """Weight gradient micro-kernel.

    ``dweight[g * Fg + f, c, kh, kw] = sum_{n, ho, wo} dy[n, g * Fg + f, ho, wo] *
    xpad[n, g * Cg + c, ho * s + kh, wo * s + kw]``. ``dyh`` is the upstream
    gradient in channel blocks, ``dyh[n, g, fb, ho, wo, j] = dy[n, g * Fg + fb * 32 + j,
    ho, wo]`` (zero past Fg). A tile is 8 consecutive ``(kh, kw, c)`` triples
    times 32 output channels; its 16 registers run over the whole batch.
    """
    n_img, groups, n_blocks, ho_n = dyh.shape[0], dyh.shape[1], dyh.shape[2], dyh.shape[3]
    n_out, cg, kh_n, kw_n = dweight.shape
    f_per_group = n_out // groups
    r_n = kw_n * cg
    q_n = kh_n * r_n
    n_qt = (q_n + _PIX - 1) // _PIX
    # No race: iteration t owns the tile of dweight for (g, fb, q-tile); each
    # tile sums the batch in a fixed order, so results do not depend on the
    # thread count.
    for t in prange(groups * n_blocks * n_qt):
        g = t // (n_blocks * n_qt)
        fb = (t // n_qt) % n_blocks
        q0 = (t % n_qt) * _PIX
        acc = np.empty((_PIX, _FB), dtype=dweight.dtype)
        for j in range(_FB):
            for p in range(_PIX):
                acc[p, j] = 0
        # Row and column of triple q0 + p; slots past the end repeat the last.
        q = min(q0, q_n - 1)
        h0, r0 = q // r_n, q % r_n
        q = min(q0 + 1, q_n - 1)
        h1, r1 = q // r_n, q % r_n
        q = min(q0 + 2, q_n - 1)
        h2, r2 = q // r_n, q % r_n
        q = min(q0 + 3, q_n - 1)
        h3, r3 = q // r_n, q % r_n
        q = min(q0 + 4, q_n - 1)
        h4, r4 = q // r_n, q % r_n
        q = min(q0 + 5, q_n - 1)
        h5, r5 = q // r_n, q % r_n
        q = min(q0 + 6, q_n - 1)
        h6, r6 = q // r_n, q % r_n
        q = min(q0 + 7, q_n - 1)
        h7, r7 = q // r_n, q % r_n
        for n in range(n_img):
            for ho in range(ho_n):
                hs = ho * s
                for wo in range(wo_n):
                    col = wo * s * cg
                    x0 = xh[n, g, hs + h0, col + r0]
                    x1 = xh[n, g, hs + h1, col + r1]
                    x2 = xh[n, g, hs + h2, col + r2]
                    x3 = xh[n, g, hs + h3, col + r3]
                    x4 = xh[n, g, hs + h4, col + r4]
                    x5 = xh[n, g, hs + h5, col + r5]
                    x6 = xh[n, g, hs + h6, col + r6]
                    x7 = xh[n, g, hs + h7, col + r7]
                    for j in range(16):
                        da = dyh[n, g, fb, ho, wo, j]
                        db = dyh[n, g, fb, ho, wo, 16 + j]
                        acc[0, j] += x0 * da
                        acc[1, j] += x1 * da
                        acc[2, j] += x2 * da
                        acc[3, j] += x3 * da
                        acc[4, j] += x4 * da
                        acc[5, j] += x5 * da
                        acc[6, j] += x6 * da
                        acc[7, j] += x7 * da
                        acc[0, 16 + j] += x0 * db
                        acc[1, 16 + j] += x1 * db
                        acc[2, 16 + j] += x2 * db
                        acc[3, 16 + j] += x3 * db
                        acc[4, 16 + j] += x4 * db
                        acc[5, 16 + j] += x5 * db
                        acc[6, 16 + j] += x6 * db
                        acc[7, 16 + j] += x7 * db
        for p in range(min(_PIX, q_n - q0)):
            q = q0 + p
            kh = q // r_n
            kw = (q % r_n) // cg
            c = q % cg
            for j in range(min(_FB, f_per_group - fb * _FB)):
                dweight[g * f_per_group + fb * _FB + j, c, kh, kw] = acc[p, j]


@njit(**_JIT)
def _conv_bias_grad(dy, dbias):
    n_img, n_out = dy.shape[0], dy.shape[1]
    # No race: iteration f owns dbias[f]; the batch is summed in order.
    for f in prange(n_out):
        acc = dy.dtype.type(0)
        for n in range(n_img):
            plane = dy[n, f]
            for i in range(plane.shape[0]):
                for j in range(plane.shape[1]):
                    acc += plane[i, j]
        dbias[f] = acc


def conv2d_backward(dy, x, weight, stride, padding, groups):
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

    Returns
    -------
    dx : ndarray, (N, C, H, W)
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
    dx = _conv_input_grad(dy, weight, x.shape, s, p, groups)
    dweight = _conv_weight_grad(dy, x, weight.shape, s, p, groups)
    dbias = np.empty(dy.shape[1], dtype=x.dtype)
    _conv_bias_grad(dy, dbias)
    return dx, dweight, dbias


@njit(**_JIT)
def _conv2d_rows_few_outputs(xp, w4, y):
    """Stride-1 convolution for few output channels: vectors run along the row.

    ``xp`` is the padded NCHW input with 32 spare zero columns (N, C, Hp, Wp + 32);
    ``w4[fb, c, kh, kw, q]`` is output channel ``4 * fb + q`` (zero-padded).
    A tile is 4 output channels times 32 consecutive output pixels of a row
    (8 AVX-512 registers); per step it broadcasts 4 weights and loads 2
    input vectors. The input gradient of a first layer (3 colour channels)
    runs here: the channel-vector kernel would waste 29 of its 32 lanes.
    """
    n_img, n_out, ho_n, wo_n = y.shape
    n_fb, n_in, kh_n, kw_n = w4.shape[0], w4.shape[1], w4.shape[2], w4.shape[3]
    n_vt = (wo_n + 31) // 32
    # No race: iteration t owns the output row y[n, :, ho, :].
    for t in prange(n_img * ho_n):
        n = t // ho_n
        ho = t % ho_n
        acc = np.empty((4, 32), dtype=y.dtype)
        for fb in range(n_fb):
            for vt in range(n_vt):
                wo0 = vt * 32
                for i in range(32):
                    for q in range(4):
                        acc[q, i] = 0
                for c in range(n_in):
                    for kh in range(kh_n):
                        for kw in range(kw_n):
                            w0 = w4[fb, c, kh, kw, 0]
                            w1 = w4[fb, c, kh, kw, 1]
                            w2 = w4[fb, c, kh, kw, 2]
                            w3 = w4[fb, c, kh, kw, 3]
                            # Unsigned column: no negative-index fix-up, so the
                            # 16 loads are seen as one contiguous vector.
                            col = np.uint64(wo0 + kw)
                            for i in range(16):
                                xa = xp[n, c, ho + kh, col + np.uint64(i)]
                                xb = xp[n, c, ho + kh, col + np.uint64(16 + i)]
                                acc[0, i] += w0 * xa
                                acc[1, i] += w1 * xa
                                acc[2, i] += w2 * xa
                                acc[3, i] += w3 * xa
                                acc[0, 16 + i] += w0 * xb
                                acc[1, 16 + i] += w1 * xb
                                acc[2, 16 + i] += w2 * xb
                                acc[3, 16 + i] += w3 * xb
                for q in range(min(4, n_out - fb * 4)):
                    for i in range(min(32, wo_n - wo0)):
                        y[n, fb * 4 + q, ho, wo0 + i] = acc[q, i]


@njit(**_JIT)
def _pad_planes(src, dst, top, left):
    """``dst[n, c, i, j] = src[n, c, i - top, j - left]`` where that exists, else 0."""
    n_img, n_ch, h_n, w_n = src.shape
    # No race: iteration n owns dst[n].
    for n in prange(n_img):
        for c in range(n_ch):
            for i in range(dst.shape[2]):
                si = i - top
                for j in range(dst.shape[3]):
                    sj = j - left
                    inside = si >= 0 and si < h_n and sj >= 0 and sj < w_n
                    dst[n, c, i, j] = src[n, c, si, sj] if inside else 0


def _conv_input_grad_few_channels(dy, weight, x_shape, p):
    """``dx`` for stride 1, one group and few input channels, on the row kernel."""
    n, c, h, w = x_shape
    f, _, kh, kw = weight.shape
    top, left = kh - 1 - p, kw - 1 - p
    # The row kernel reads whole 32-wide vectors: spare zero columns past the end.
    width = max(w + kw - 1, -(-w // 32) * 32 + kw - 1)
    dyp = np.empty((n, f, h + kh - 1, width), dtype=dy.dtype)
    _pad_planes(dy, dyp, top, left)
    n_fb = -(-c // 4)
    # w4[fb, f, a, b, q] = weight[f, 4 fb + q] turned by 180 degrees.
    w4 = np.zeros((n_fb * 4, f, kh, kw), dtype=dy.dtype)
    w4[:c] = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
    w4 = np.ascontiguousarray(w4.reshape(n_fb, 4, f, kh, kw).transpose(0, 2, 3, 4, 1))
    dx = np.empty(x_shape, dtype=dy.dtype)
    _conv2d_rows_few_outputs(dyp, w4, dx)
    return dx


def _conv_input_grad(dy, weight, x_shape, s, p, groups):
    """``dx`` (N, C, H, W): the dilated, padded ``dy`` correlated with the turned kernel."""
    dtype = dy.dtype
    n, c, h, w = x_shape
    f, cg, kh, kw = weight.shape
    fg = f // groups
    if s == 1 and groups == 1 and c <= 8:
        return _conv_input_grad_few_channels(dy, weight, x_shape, p)
    dyd = _conv_channel_last(dy, groups, kh - 1 - p, kw - 1 - p, h + kh - 1, w + kw - 1, s, s)
    # In/out channels swapped within each group: wt[g*Cg + c, fg] = weight[g*Fg + fg, c].
    wt = np.empty((c, fg, kh, kw), dtype=dtype)
    wt.reshape(groups, cg, fg, kh, kw)[...] = weight.reshape(groups, fg, cg, kh, kw).transpose(
        0, 2, 1, 3, 4
    )
    dx = np.empty((n, c, h, w), dtype=dtype)
    _conv_forward_core(dyd, wt, np.zeros(c, dtype=dtype), dx, 1, groups, flip=True)
    return dx


def _conv_weight_grad(dy, x, weight_shape, s, p, groups):
    """``dweight`` (F, C/G, KH, KW) from ``dy`` in channel blocks and ``x`` channel-last."""
    n, _, h, w = x.shape
    f = weight_shape[0]
    ho, wo = dy.shape[2], dy.shape[3]
    dyh = np.zeros((n, groups, _blocks(f // groups), ho, wo, _FB), dtype=x.dtype)
    _to_channel_blocks(dy, dyh)
    xh = _conv_channel_last(x, groups, p, p, h + 2 * p, w + 2 * p)
    dweight = np.empty(weight_shape, dtype=x.dtype)
    _conv2d_weight_tiles(dyh, xh, dweight, s, wo)
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
    """:func:`_maxpool2d_forward` for 2x2 windows with stride 2, unrolled."""
    n_img, n_ch, ho_n, wo_n = y.shape
    w_n = x.shape[3]
    # No race: iteration t owns the output rows y[n, c, ho] and argmax[n, c, ho].
    for t in prange(n_img * n_ch * ho_n):
        n = t // (n_ch * ho_n)
        c = (t // ho_n) % n_ch
        ho = t % ho_n
        top = x[n, c, 2 * ho]
        bottom = x[n, c, 2 * ho + 1]
        for wo in range(wo_n):
            best = top[2 * wo]
            at = 0
            v = top[2 * wo + 1]
            if v > best or (v != v and best == best):
                best = v
                at = 1
            v = bottom[2 * wo]
            if v > best or (v != v and best == best):
                best = v
                at = w_n
            v = bottom[2 * wo + 1]
            if v > best or (v != v and best == best):
                best = v
                at = w_n + 1
            y[n, c, ho, wo] = best
            argmax[n, c, ho, wo] = 2 * ho * w_n + 2 * wo + at


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
    y = np.empty((n, c, ho, wo), dtype=x.dtype)
    argmax = np.empty((n, c, ho, wo), dtype=np.int32)
    if kh == kw == sh == sw == 2:
        _maxpool2x2_forward(x, y, argmax)  # the reference net's pooling
    else:
        _maxpool2d_forward(x, y, argmax, kh, kw, sh, sw)
    return y, argmax


@njit(**_JIT)
def _maxpool2d_backward(dy, argmax, dx):
    n_img, n_ch, ho_n, wo_n = dy.shape
    w_n = dx.shape[3]
    # No race: iteration t owns the input plane dx[n, c]; overlapping windows
    # (stride < kernel) add into it sequentially within the iteration.
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        plane = dx[n, c]
        plane[:, :] = 0
        for ho in range(ho_n):
            for wo in range(wo_n):
                at = argmax[n, c, ho, wo]
                plane[at // w_n, at % w_n] += dy[n, c, ho, wo]


def maxpool2d_backward(dy, argmax, x_shape):
    """Route each output gradient to the input element that won its window.

    Parameters
    ----------
    dy : ndarray, (N, C, HO, WO)
    argmax : ndarray, (N, C, HO, WO), int32, from :func:`maxpool2d_forward`
    x_shape : tuple, (N, C, H, W)

    Returns
    -------
    dx : ndarray, x_shape, dy's dtype
    """
    dy = np.ascontiguousarray(dy)
    dx = np.empty(tuple(int(s) for s in x_shape), dtype=dy.dtype)
    argmax = np.ascontiguousarray(argmax, dtype=np.int32)
    _maxpool2d_backward(dy, argmax, dx)
    return dx


# --------------------------------------------------------------------------
# fully connected and maxout
#
# The matrix products run on a Numba micro-kernel (same register tile as the
# convolution: 8 rows x 32 columns) rather than on BLAS: OpenBLAS keeps its
# own thread pool, and on a small machine its spinning threads fight Numba's
# for the cores between calls.
# --------------------------------------------------------------------------

_GEMM_COLS = 32


@njit(**_JIT)
def _gemm(a, b3, c):
    """``c[i, j] = sum_k a[i, k] * b[k, j]`` for the columns ``j`` that ``c`` has.

    ``a`` is (I, K); ``b3`` is ``b`` (K, J) viewed as (K, J / 32, 32) with J a
    multiple of 32 (zero-padded by the caller); ``c`` is (I, J') with J' <= J.
    A tile is 8 rows times 32 columns; the last row tile repeats its last row
    in unused slots (clamped indices) and stores only the valid rows.
    """
    i_n, k_n = a.shape
    n_cb = b3.shape[1]
    j_n = c.shape[1]
    n_rt = (i_n + _PIX - 1) // _PIX
    last = i_n - 1
    # No race: iteration t owns the tile c[8 rows, 32 columns] it stores.
    for t in prange(n_rt * n_cb):
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
        acc = np.empty((_PIX, _GEMM_COLS), dtype=c.dtype)
        for j in range(_GEMM_COLS):
            for p in range(_PIX):
                acc[p, j] = 0
        for k in range(k_n):
            a0 = a[r0, k]
            a1 = a[r1, k]
            a2 = a[r2, k]
            a3 = a[r3, k]
            a4 = a[r4, k]
            a5 = a[r5, k]
            a6 = a[r6, k]
            a7 = a[r7, k]
            for j in range(16):
                ba = b3[k, cb, j]
                bb = b3[k, cb, 16 + j]
                acc[0, j] += a0 * ba
                acc[1, j] += a1 * ba
                acc[2, j] += a2 * ba
                acc[3, j] += a3 * ba
                acc[4, j] += a4 * ba
                acc[5, j] += a5 * ba
                acc[6, j] += a6 * ba
                acc[7, j] += a7 * ba
                acc[0, 16 + j] += a0 * bb
                acc[1, 16 + j] += a1 * bb
                acc[2, 16 + j] += a2 * bb
                acc[3, 16 + j] += a3 * bb
                acc[4, 16 + j] += a4 * bb
                acc[5, 16 + j] += a5 * bb
                acc[6, 16 + j] += a6 * bb
                acc[7, 16 + j] += a7 * bb
        j0 = cb * _GEMM_COLS
        for p in range(min(_PIX, i_n - i0)):
            for j in range(min(_GEMM_COLS, j_n - j0)):
                c[i0 + p, j0 + j] = acc[p, j]


def _matmul(a, b, dtype):
    """``a @ b`` on :func:`_gemm`; ``a`` (I, K) and ``b`` (K, J) any layout."""
    a = np.ascontiguousarray(a, dtype=dtype)
    k, j = b.shape
    j_pad = -(-j // _GEMM_COLS) * _GEMM_COLS
    if j_pad == j and b.flags.c_contiguous and b.dtype == dtype:
        bp = b
    else:
        bp = np.zeros((k, j_pad), dtype=dtype)
        bp[:, :j] = b
    c = np.empty((a.shape[0], j), dtype=dtype)
    _gemm(a, bp.reshape(k, j_pad // _GEMM_COLS, _GEMM_COLS), c)
    return c


@njit(**_JIT_SMALL)
def _transpose_add_bias(yt, bias, y):
    n_img, m = y.shape
    for i in range(n_img):
        for j in range(m):
            y[i, j] = yt[j, i] + bias[j]


def linear_forward(x, weight, bias):
    """Batched fully connected layer, ``y = x @ weight.T + bias``.

    Parameters
    ----------
    x : ndarray, (N, D)
    weight : ndarray, (M, D)
    bias : ndarray, (M,), or None

    Returns
    -------
    y : ndarray, (N, M), x's dtype

    Notes
    -----
    Computed as ``y.T = weight @ x.T`` so that the micro-kernel's vectors run
    along the batch (``x.T`` is one small copy) and weight rows are read in place.
    """
    x = np.ascontiguousarray(x)
    dtype = x.dtype
    m = weight.shape[0]
    b = np.zeros(m, dtype=dtype) if bias is None else np.ascontiguousarray(bias, dtype=dtype)
    yt = _matmul(weight, x.T, dtype)
    y = np.empty((x.shape[0], m), dtype=dtype)
    _transpose_add_bias(yt, b, y)
    return y


@njit(**_JIT_SMALL)
def _column_sums(a, out):
    n_rows, n_cols = a.shape
    for j in range(n_cols):  # rows are added in order
        s = a.dtype.type(0)
        for i in range(n_rows):
            s += a[i, j]
        out[j] = s


def linear_backward(dy, x, weight):
    """Gradients of :func:`linear_forward`.

    Parameters
    ----------
    dy : ndarray, (N, M)
    x : ndarray, (N, D)
    weight : ndarray, (M, D)

    Returns
    -------
    dx : ndarray, (N, D), ``dy @ weight``
    dweight : ndarray, (M, D), ``dy.T @ x``
    dbias : ndarray, (M,), ``dy.sum(0)``
    """
    x = np.ascontiguousarray(x)
    dtype = x.dtype
    dy = np.ascontiguousarray(dy, dtype=dtype)
    dx = _matmul(dy, weight, dtype)
    dweight = _matmul(dy.T, x, dtype)
    dbias = np.empty(weight.shape[0], dtype=dtype)
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
    y = np.empty((z.shape[0], m), dtype=z.dtype)
    argmax = np.empty((z.shape[0], m), dtype=np.int32)
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
    dz = np.empty((dy.shape[0], dy.shape[1] * pieces), dtype=dy.dtype)
    _maxout_scatter(dy, np.ascontiguousarray(argmax, dtype=np.int32), dz, pieces)
    return linear_backward(dz, x, weight)


# --------------------------------------------------------------------------
# element-wise activations: any shape, computed on the flat C-order view
# --------------------------------------------------------------------------


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


@njit(**_JIT)
def _relu_forward(x, y):
    zero = x.dtype.type(0)
    # No race: iteration i owns y[i] (likewise in every element-wise kernel below).
    for i in prange(x.size):
        v = x[i]
        y[i] = v if (v > zero or v != v) else zero


@njit(**_JIT)
def _relu_backward(dy, y, dx):
    zero = dy.dtype.type(0)
    for i in prange(dy.size):  # no race: owns dx[i]
        dx[i] = dy[i] if y[i] > zero else zero


@njit(**_JIT)
def _leaky_relu_forward(x, slope, y):
    s = x.dtype.type(slope)
    for i in prange(x.size):  # no race: owns y[i]
        v = x[i]
        y[i] = v if v > 0 else v * s


@njit(**_JIT)
def _leaky_relu_backward(dy, x, slope, dx):
    s = dy.dtype.type(slope)
    for i in prange(dy.size):  # no race: owns dx[i]
        dx[i] = dy[i] if x[i] > 0 else dy[i] * s


@njit(**_JIT)
def _sigmoid_forward(x, y):
    one = x.dtype.type(1)
    for i in prange(x.size):  # no race: owns y[i]
        v = x[i]
        e = np.exp(-abs(v))  # in (0, 1]: never overflows
        y[i] = one / (one + e) if v >= 0 else e / (one + e)


@njit(**_JIT)
def _sigmoid_backward(dy, y, dx):
    one = dy.dtype.type(1)
    for i in prange(dy.size):  # no race: owns dx[i]
        dx[i] = dy[i] * y[i] * (one - y[i])


@njit(**_JIT)
def _tanh_forward(x, y):
    for i in prange(x.size):  # no race: owns y[i]
        y[i] = np.tanh(x[i])


@njit(**_JIT)
def _tanh_backward(dy, y, dx):
    one = dy.dtype.type(1)
    for i in prange(dy.size):  # no race: owns dx[i]
        dx[i] = dy[i] * (one - y[i] * y[i])


@njit(**_JIT)
def _elu_forward(x, alpha, y):
    a = x.dtype.type(alpha)
    for i in prange(x.size):  # no race: owns y[i]
        v = x[i]
        y[i] = v if v > 0 else a * np.expm1(v)


@njit(**_JIT)
def _elu_backward(dy, x, y, alpha, dx):
    a = dy.dtype.type(alpha)
    for i in prange(dy.size):  # no race: owns dx[i]
        dx[i] = dy[i] if x[i] > 0 else dy[i] * (y[i] + a)


def relu_forward(x):
    """``max(x, 0)`` element-wise; NaN stays NaN. Any shape, x's dtype."""
    y = np.empty(x.shape, dtype=x.dtype)
    _relu_forward(_flat(x), y.reshape(-1))
    return y


def relu_backward(dy, y):
    """``dy`` where the forward output ``y > 0``, else 0. Any shape, dy's dtype."""
    dx = np.empty(dy.shape, dtype=dy.dtype)
    _relu_backward(_flat(dy), _flat(y), dx.reshape(-1))
    return dx


def leaky_relu_forward(x, negative_slope):
    """``x`` where ``x > 0``, else ``negative_slope * x``. Any shape, x's dtype."""
    y = np.empty(x.shape, dtype=x.dtype)
    _leaky_relu_forward(_flat(x), float(negative_slope), y.reshape(-1))
    return y


def leaky_relu_backward(dy, x, negative_slope):
    """``dy`` where the forward input ``x > 0``, else ``negative_slope * dy``."""
    dx = np.empty(dy.shape, dtype=dy.dtype)
    _leaky_relu_backward(_flat(dy), _flat(x), float(negative_slope), dx.reshape(-1))
    return dx


def sigmoid_forward(x):
    """Logistic sigmoid, without overflow for large ``|x|``. Any shape, x's dtype."""
    y = np.empty(x.shape, dtype=x.dtype)
    _sigmoid_forward(_flat(x), y.reshape(-1))
    return y


def sigmoid_backward(dy, y):
    """``dy * y * (1 - y)`` with ``y`` the forward output."""
    dx = np.empty(dy.shape, dtype=dy.dtype)
    _sigmoid_backward(_flat(dy), _flat(y), dx.reshape(-1))
    return dx


def tanh_forward(x):
    """Hyperbolic tangent. Any shape, x's dtype."""
    y = np.empty(x.shape, dtype=x.dtype)
    _tanh_forward(_flat(x), y.reshape(-1))
    return y


def tanh_backward(dy, y):
    """``dy * (1 - y**2)`` with ``y`` the forward output."""
    dx = np.empty(dy.shape, dtype=dy.dtype)
    _tanh_backward(_flat(dy), _flat(y), dx.reshape(-1))
    return dx


def elu_forward(x, alpha):
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)``. Any shape, x's dtype."""
    y = np.empty(x.shape, dtype=x.dtype)
    _elu_forward(_flat(x), float(alpha), y.reshape(-1))
    return y


def elu_backward(dy, x, y, alpha):
    """``dy`` where ``x > 0``, else ``dy * (y + alpha)`` (``= dy * alpha * exp(x)``)."""
    dx = np.empty(dy.shape, dtype=dy.dtype)
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
    y = np.empty(x.shape, dtype=x.dtype)
    mask = np.empty(x.shape, dtype=x.dtype)
    _dropout_forward(_flat(x), float(p), np.uint64(seed), y.reshape(-1), mask.reshape(-1))
    return y, mask


@njit(**_JIT_EXACT)
def _multiply(a, b, out):
    for i in prange(a.size):  # no race: owns out[i]
        out[i] = a[i] * b[i]


def dropout_backward(dy, mask):
    """``dy * mask``, with ``mask`` from :func:`dropout_forward`."""
    dx = np.empty(dy.shape, dtype=dy.dtype)
    _multiply(_flat(dy), _flat(mask), dx.reshape(-1))
    return dx


# --------------------------------------------------------------------------
# batch normalisation
# --------------------------------------------------------------------------


@njit(**_JIT)
def _batchnorm2d_stats(x, mean, var):
    n_img, n_ch = x.shape[0], x.shape[1]
    count = x.shape[2] * x.shape[3] * n_img
    # No race: iteration c owns mean[c] and var[c]. Sums run in float64 in a
    # fixed order (two passes: mean, then squared deviations).
    for c in prange(n_ch):
        s = 0.0
        for n in range(n_img):
            plane = x[n, c]
            for i in range(plane.shape[0]):
                for j in range(plane.shape[1]):
                    s += plane[i, j]
        mu = s / count
        q = 0.0
        for n in range(n_img):
            plane = x[n, c]
            for i in range(plane.shape[0]):
                for j in range(plane.shape[1]):
                    d = plane[i, j] - mu
                    q += d * d
        mean[c] = mu
        var[c] = q / count


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
    dtype = x.dtype
    if training:
        n = x.size // x.shape[1]
        mean64 = np.empty(x.shape[1])
        var64 = np.empty(x.shape[1])
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
    y = np.empty_like(x)
    _batchnorm2d_apply(x, scale, shift, y)
    return y, mean, invstd


@njit(**_JIT)
def _batchnorm2d_backward(dy, x, weight, mean, invstd, dx, dweight, dbias):
    n_img, n_ch = x.shape[0], x.shape[1]
    count = x.shape[2] * x.shape[3] * n_img
    # No race: iteration c owns channel c of dx, dweight and dbias; its sums
    # run in float64 in a fixed order.
    for c in prange(n_ch):
        mu = mean[c]
        istd = invstd[c]
        sb = 0.0
        sw = 0.0
        for n in range(n_img):
            for i in range(x.shape[2]):
                for j in range(x.shape[3]):
                    g = dy[n, c, i, j]
                    sb += g
                    sw += g * ((x[n, c, i, j] - mu) * istd)
        dbias[c] = sb
        dweight[c] = sw
        k = weight[c] * istd
        mb = sb / count
        mw = sw / count
        for n in range(n_img):
            for i in range(x.shape[2]):
                for j in range(x.shape[3]):
                    xhat = (x[n, c, i, j] - mu) * istd
                    dx[n, c, i, j] = k * (dy[n, c, i, j] - mb - xhat * mw)


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
    dx = np.empty_like(x)
    dweight = np.empty(x.shape[1], dtype=dtype)
    dbias = np.empty(x.shape[1], dtype=dtype)
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
    row_loss = np.empty(scores.shape[0], dtype=np.float64)
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
    row_loss = np.empty(scores.shape[0], dtype=np.float64)
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
    ds = np.empty(scores.shape, dtype=s.dtype)
    parts = np.empty(64)
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
    dp = np.empty(pred.shape, dtype=p.dtype)
    parts = np.empty(64)
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
    dp = np.empty(pred.shape, dtype=p.dtype)
    parts = np.empty(64)
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

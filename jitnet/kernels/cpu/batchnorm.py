"""Batch normalisation on the cpu target: statistics over (N, H, W) per channel,
summed in a fixed order (lanes, not fast-math's reassociation: see ``_JIT_ORDERED``
in :mod:`._common`), so that the results are the same bits at every thread count
and whether a kernel was compiled or loaded from Numba's cache.
"""

import numpy as np
from numba import prange

from ...codegen import njit
from ._common import _JIT, _JIT_ORDERED
from .activations import relu_forward
from .arrays import _empty
from .maxpool import _window_max, maxpool2d_forward

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
        n = x.size // max(x.shape[1], 1)  # zero channels: no statistics
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
    """:func:`_batchnorm2d_apply` then :func:`.maxpool._maxpool2x2_forward` (then, with ``relu``,
    :func:`.activations._relu_forward`), the normalised value of each input computed as the window
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

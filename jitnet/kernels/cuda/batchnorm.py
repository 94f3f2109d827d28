"""Batch normalisation: per-channel statistics in one block each, then element-wise."""

import functools
import math

import numpy as np

from ... import config
from ._launch import _grid_1d, _numba_type, _reduction_threads
from ._reduction import _make_block_sum
from .arrays import _dev, _empty
from .device import cuda, jit
from .maxpool import _nchw, _pool_outputs, _takes


@functools.lru_cache(maxsize=None)
def _make_batchnorm_stats_kernel(dtype, threads):
    """Batch mean and ``1/sqrt(var + eps)`` per channel, and the running statistics.

    One block per channel (grid-stride over channels): a first pass sums ``x`` for
    the mean, a second sums squared deviations (two passes are more exact than
    ``E[x^2] - E[x]^2`` in float32). Thread 0 writes the channel's outputs.
    """
    nt = _numba_type(dtype)
    zero = np.dtype(dtype).type(0)
    block_sum = _make_block_sum(threads)

    @jit
    def batchnorm_stats_kernel(
        x, eps, keep, mean_rate, var_rate, running_mean, running_var, mean, invstd
    ):
        scratch = cuda.shared.array(threads, nt)
        n_img, channels, h, w = x.shape
        count = n_img * h * w
        tid = cuda.threadIdx.x
        for c in range(cuda.blockIdx.x, channels, cuda.gridDim.x):
            acc = zero
            for p in range(tid, count, threads):
                acc += x[p // (h * w), c, (p // w) % h, p % w]
            mu = block_sum(scratch, tid, acc) / count
            acc = zero
            for p in range(tid, count, threads):
                d = x[p // (h * w), c, (p // w) % h, p % w] - mu
                acc += d * d
            var = block_sum(scratch, tid, acc) / count
            if tid == 0:
                mean[c] = mu
                invstd[c] = 1 / math.sqrt(var + eps)
                running_mean[c] = running_mean[c] * keep + mean_rate * mu
                running_var[c] = running_var[c] * keep + var_rate * var

    return batchnorm_stats_kernel


@jit(cache=True)
def _batchnorm_eval_stats_kernel(running_mean, running_var, eps, mean, invstd):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for c in range(start, mean.size, step):
        mean[c] = running_mean[c]
        invstd[c] = 1 / math.sqrt(running_var[c] + eps)


@jit(device=True, cache=True)
def _bn_affine(weight, bias, mean, invstd, c):
    """Channel ``c``'s ``(scale, shift)``: a batch norm maps ``x`` to ``x * scale + shift``."""
    scale = weight[c] * invstd[c]
    return scale, bias[c] - mean[c] * weight[c] * invstd[c]


@jit(device=True, cache=True)
def _bn_value(v, scale, shift):
    return v * scale + shift


@jit(cache=True)
def _batchnorm_apply_kernel(x, weight, bias, mean, invstd, y):
    # One thread per element; channel c = (i // (H*W)) % C of the flat NCHW index.
    _, channels, h, w = x.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, step):
        n, c, r, s = _nchw(i, channels, h, w)
        scale, shift = _bn_affine(weight, bias, mean, invstd, c)
        y[n, c, r, s] = _bn_value(x[n, c, r, s], scale, shift)


@jit(cache=True)
def _batchnorm_maxpool2d_kernel(x, weight, bias, mean, invstd, k, stride, relu, y, argmax):
    # _batchnorm_apply_kernel then _maxpool2d_forward_kernel in one launch: each thread
    # normalises its window's values as it reads them, by the same device functions
    # (so the same bits), and the normalised images are never stored.
    _, channels, h, w = x.shape
    _, _, ho, wo = y.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, y.size, step):
        n, c, oh, ow = _nchw(i, channels, ho, wo)
        scale, shift = _bn_affine(weight, bias, mean, invstd, c)
        h0 = oh * stride
        w0 = ow * stride
        best = _bn_value(x[n, c, h0, w0], scale, shift)
        best_at = h0 * w + w0
        for a in range(k):
            for b in range(k):
                v = _bn_value(x[n, c, h0 + a, w0 + b], scale, shift)
                if _takes(v, best):
                    best = v
                    best_at = (h0 + a) * w + w0 + b
        if relu and best < 0:
            best = 0
        y[n, c, oh, ow] = best
        argmax[n, c, oh, ow] = best_at


def batchnorm2d_maxpool2d_forward(x, weight, bias, running_mean, running_var, momentum, eps,
                                  training, pool_size, pool_stride, relu=False):
    """:func:`batchnorm2d_forward` then :func:`maxpool2d_forward` (then, with ``relu``,
    :func:`relu_forward`), bit for bit; ``(y, argmax, mean, invstd)``. Two launches:
    the statistics, then one thread per pooled element that normalises its window as
    it reads it (:func:`_batchnorm_maxpool2d_kernel`), so the normalised images are
    neither written nor read back."""
    x, weight, bias = _dev(x), _dev(weight), _dev(bias)
    mean, invstd = _batchnorm_statistics(x, running_mean, running_var, momentum, eps,
                                         training)
    k, stride = int(pool_size), int(pool_stride)
    y, argmax = _pool_outputs(x, k, stride)
    if y.size:
        _batchnorm_maxpool2d_kernel[_grid_1d(y.size)](x, weight, bias, mean, invstd, k, stride,
                                                      bool(relu), y, argmax)
    return y, argmax, mean, invstd


def batchnorm2d_forward(x, weight, bias, running_mean, running_var, momentum, eps, training):
    """Batch normalisation per channel over the (N, H, W) axes (see ``numpy_ref``).

    Parameters
    ----------
    x : device array, shape (N, C, H, W)
    weight, bias : device array, shape (C,)
    running_mean, running_var : device array, shape (C,)
        Updated in place when ``training`` (unbiased variance, as PyTorch).
    momentum, eps : float
    training : bool

    Returns
    -------
    y : device array, shape (N, C, H, W)
    mean : device array, shape (C,)
    invstd : device array, shape (C,)
        ``1 / sqrt(var + eps)`` with the biased batch variance (or ``running_var``).
    """
    x, weight, bias = _dev(x), _dev(weight), _dev(bias)
    mean, invstd = _batchnorm_statistics(x, running_mean, running_var, momentum, eps,
                                         training)
    y = _empty(x.shape, dtype=x.dtype)
    if y.size:
        _batchnorm_apply_kernel[_grid_1d(y.size)](x, weight, bias, mean, invstd, y)
    return y, mean, invstd


def _batchnorm_statistics(x, running_mean, running_var, momentum, eps, training):
    """``(mean, invstd)`` of :func:`batchnorm2d_forward`, one launch; in training the
    batch's, updating the running statistics, else the running ones."""
    n, c, h, w = x.shape
    mean = _empty((c,), dtype=x.dtype)
    invstd = _empty((c,), dtype=x.dtype)
    if c == 0:
        return mean, invstd
    typed = x.dtype.type
    if training:
        count = n * h * w
        rtype = running_mean.dtype.type
        threads = _reduction_threads()
        blocks = min(c, int(config.CUDA_MAX_BLOCKS))
        kernel = _make_batchnorm_stats_kernel(x.dtype.str, threads)
        kernel[blocks, threads](
            x, typed(eps), rtype(1 - momentum), rtype(momentum),
            rtype(momentum * count / max(count - 1, 1)),
            running_mean, running_var, mean, invstd,
        )
    else:
        _batchnorm_eval_stats_kernel[_grid_1d(c)](
            _dev(running_mean), _dev(running_var), typed(eps), mean, invstd
        )
    return mean, invstd


@functools.lru_cache(maxsize=None)
def _make_batchnorm_backward_stats_kernel(dtype, threads):
    """Per channel ``dbias = sum(dy)`` and ``dweight = sum(dy * xhat)``: a block each."""
    nt = _numba_type(dtype)
    zero = np.dtype(dtype).type(0)
    block_sum = _make_block_sum(threads)

    @jit
    def batchnorm_backward_stats_kernel(dy, x, mean, invstd, dweight, dbias):
        scratch = cuda.shared.array(threads, nt)
        n_img, channels, h, w = x.shape
        tid = cuda.threadIdx.x
        for c in range(cuda.blockIdx.x, channels, cuda.gridDim.x):
            acc_b = zero
            acc_w = zero
            for p in range(tid, n_img * h * w, threads):
                n = p // (h * w)
                r = (p // w) % h
                s = p % w
                g = dy[n, c, r, s]
                acc_b += g
                acc_w += g * ((x[n, c, r, s] - mean[c]) * invstd[c])
            total_b = block_sum(scratch, tid, acc_b)
            total_w = block_sum(scratch, tid, acc_w)
            if tid == 0:
                dbias[c] = total_b
                dweight[c] = total_w

    return batchnorm_backward_stats_kernel


@jit(cache=True)
def _batchnorm_backward_apply_kernel(dy, x, weight, mean, invstd, dweight, dbias, dx):
    # dx = weight * invstd * (dy - dbias / n - xhat * dweight / n), per element.
    n_img, channels, h, w = x.shape
    count = n_img * h * w
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, step):
        n, c, r, s = _nchw(i, channels, h, w)
        xhat = (x[n, c, r, s] - mean[c]) * invstd[c]
        dx[n, c, r, s] = (weight[c] * invstd[c]) * (
            dy[n, c, r, s] - dbias[c] / count - xhat * (dweight[c] / count)
        )


def batchnorm2d_backward(dy, x, weight, mean, invstd):
    """Gradients of :func:`batchnorm2d_forward` in training mode.

    Parameters
    ----------
    dy, x : device array, shape (N, C, H, W)
    weight : device array, shape (C,)
    mean, invstd : device array, shape (C,)

    Returns
    -------
    dx : device array, shape (N, C, H, W)
    dweight : device array, shape (C,)
    dbias : device array, shape (C,)
    """
    dy, x, weight, mean, invstd = (_dev(a) for a in (dy, x, weight, mean, invstd))
    c = x.shape[1]
    dx = _empty(x.shape, dtype=dy.dtype)
    dweight = _empty((c,), dtype=dy.dtype)
    dbias = _empty((c,), dtype=dy.dtype)
    if c == 0:
        return dx, dweight, dbias
    threads = _reduction_threads()
    blocks = min(c, int(config.CUDA_MAX_BLOCKS))
    kernel = _make_batchnorm_backward_stats_kernel(dy.dtype.str, threads)
    kernel[blocks, threads](dy, x, mean, invstd, dweight, dbias)
    if dx.size:
        _batchnorm_backward_apply_kernel[_grid_1d(dx.size)](
            dy, x, weight, mean, invstd, dweight, dbias, dx
        )
    return dx, dweight, dbias

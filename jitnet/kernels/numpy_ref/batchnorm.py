"""Batch normalisation."""

import numpy as np

from .activations import relu_forward
from .maxpool import maxpool2d_forward


def batchnorm2d_forward(x, weight, bias, running_mean, running_var, momentum, eps, training):
    """Batch normalisation per channel over the (N, H, W) axes.

    Parameters
    ----------
    x : np.ndarray, shape (N, C, H, W)
    weight, bias : np.ndarray, shape (C,)
        Scale (gamma) and shift (beta).
    running_mean, running_var : np.ndarray, shape (C,)
        Updated in place when ``training``:
        ``running = (1 - momentum) * running + momentum * batch_statistic``, with the
        unbiased batch variance (``* n / (n - 1)``, ``n = N*H*W``), as PyTorch.
    momentum, eps : float
    training : bool
        Batch statistics when true; the running statistics when false.

    Returns
    -------
    y : np.ndarray, shape (N, C, H, W)
        ``(x - mean) * invstd * weight + bias``.
    mean : np.ndarray, shape (C,)
        The mean used (the batch's, or ``running_mean``).
    invstd : np.ndarray, shape (C,)
        ``1 / sqrt(var + eps)`` with the biased batch variance (or ``running_var``).
    """
    if training:
        n = x.size // max(x.shape[1], 1)  # zero channels: nothing to normalise
        mean = x.mean(axis=(0, 2, 3))
        var = x.var(axis=(0, 2, 3))
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += (momentum * n / max(n - 1, 1)) * var
    else:
        mean = running_mean.copy()
        var = running_var
    invstd = (1 / np.sqrt(var + eps)).astype(x.dtype, copy=False)
    scale = (weight * invstd).reshape(1, -1, 1, 1)
    shift = (bias - mean * weight * invstd).reshape(1, -1, 1, 1)
    return x * scale + shift, mean, invstd


def batchnorm2d_maxpool2d_forward(x, weight, bias, running_mean, running_var, momentum, eps,
                                  training, pool_size, pool_stride, relu=False):
    """:func:`batchnorm2d_forward` then :func:`maxpool2d_forward` (then, with ``relu``,
    :func:`relu_forward` of the pooling), bit for bit.

    ``nn.Sequential`` calls it for a ``BatchNorm2d`` followed by a ``MaxPool2d``: the
    cpu target then never stores the normalised images, which only the pooling reads.

    Returns
    -------
    y, argmax : np.ndarray
        The pooling's (as :func:`maxpool2d_forward`).
    mean, invstd : np.ndarray, shape (C,)
        As :func:`batchnorm2d_forward`.
    """
    z, mean, invstd = batchnorm2d_forward(x, weight, bias, running_mean, running_var,
                                          momentum, eps, training)
    y, argmax = maxpool2d_forward(z, pool_size, pool_stride)
    return (relu_forward(y) if relu else y), argmax, mean, invstd


def batchnorm2d_backward(dy, x, weight, mean, invstd):
    """Gradients of :func:`batchnorm2d_forward` in training mode (batch statistics).

    Parameters
    ----------
    dy, x : np.ndarray, shape (N, C, H, W)
    weight : np.ndarray, shape (C,)
    mean, invstd : np.ndarray, shape (C,)
        As returned by the forward call.

    Returns
    -------
    dx : np.ndarray, shape (N, C, H, W)
    dweight : np.ndarray, shape (C,)
    dbias : np.ndarray, shape (C,)

    Notes
    -----
    With ``xhat = (x - mean) * invstd`` and ``n = N*H*W``, per channel:
    ``dbias = sum(dy)``, ``dweight = sum(dy * xhat)`` and
    ``dx = weight * invstd * (dy - dbias / n - xhat * dweight / n)``
    (the mean and variance depend on ``x``, hence the two correction terms).
    """
    # n in x's dtype: NumPy 1.x would promote float32 / int(n) to float64 from n = 65536
    n = x.dtype.type(x.size // max(x.shape[1], 1))  # (zero channels: empty gradients)
    c = (1, -1, 1, 1)
    xhat = (x - mean.reshape(c)) * invstd.reshape(c)
    dbias = dy.sum(axis=(0, 2, 3))
    dweight = (dy * xhat).sum(axis=(0, 2, 3))
    dx = (weight * invstd).reshape(c) * (
        dy - (dbias / n).reshape(c) - xhat * (dweight / n).reshape(c)
    )
    return dx, dweight, dbias

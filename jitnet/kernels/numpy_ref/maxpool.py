"""Max pooling: one ``argmax`` over a window view; and the convolution's and
ReLU's fusions with it."""

import sys

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import conv_pool_backward_calls
from .activations import relu_backward, relu_forward
from .conv import conv2d_forward


def maxpool2d_forward(x, kernel_size, stride):
    """Max pooling over square windows, no padding.

    Parameters
    ----------
    x : np.ndarray, shape (N, C, H, W)
    kernel_size : int
    stride : int

    Returns
    -------
    y : np.ndarray, shape (N, C, HO, WO), dtype of ``x``
        ``HO = (H - kernel_size) // stride + 1``, likewise ``WO``.
    argmax : np.ndarray, shape (N, C, HO, WO), int32
        Flat index ``h * W + w`` into the input plane ``x[n, c]`` of each window's
        maximum. On ties the first in row-major window order wins (as PyTorch); a NaN
        in a window is its maximum, so NaN propagates.
    """
    n, c, h, w = x.shape
    k = kernel_size
    windows = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    ho, wo = windows.shape[2], windows.shape[3]
    flat = windows.reshape(n, c, ho, wo, k * k)
    local = np.argmax(flat, axis=-1)  # first occurrence wins; NaN counts as the max
    y = np.take_along_axis(flat, local[..., None], axis=-1)[..., 0]
    rows = np.arange(ho).reshape(ho, 1) * stride + local // k
    cols = np.arange(wo).reshape(1, wo) * stride + local % k
    argmax = (rows * w + cols).astype(np.int32)
    return np.ascontiguousarray(y), argmax


def maxpool2d_relu_backward(dy, y, argmax, x_shape, kernel_size=None, stride=None):
    """:func:`relu_backward` of a ReLU run after the pooling, then :func:`maxpool2d_backward`.

    Parameters
    ----------
    dy : np.ndarray, shape (N, C, HO, WO), the gradient of the ReLU's output
    y : np.ndarray, shape (N, C, HO, WO), the ReLU's output
    argmax, x_shape, kernel_size, stride
        As :func:`maxpool2d_backward`.

    Returns
    -------
    dx : np.ndarray, shape ``x_shape``
        Equal, bit for bit, to the two calls; ``nn.Sequential`` calls it for a
        pooling whose ReLU runs after it.
    """
    return maxpool2d_backward(relu_backward(dy, y), argmax, x_shape, kernel_size, stride)


def conv2d_maxpool2d_forward(x, weight, bias, stride, padding, groups, pool_size, pool_stride,
                             relu=False):
    """:func:`conv2d_forward`, then :func:`maxpool2d_forward` of its output, then with
    ``relu`` :func:`relu_forward` of the pooling.

    Parameters
    ----------
    x, weight, bias, stride, padding, groups
        As :func:`conv2d_forward`.
    pool_size, pool_stride : int
        ``kernel_size`` and ``stride`` of :func:`maxpool2d_forward`.
    relu : bool, default False
        Apply a ReLU to the pooled result (``max(y, 0)`` commutes with the pooling's
        maximum, so this is also the pooling of a ReLU'd convolution).

    Returns
    -------
    y : np.ndarray, the pooled convolution (ReLU'd with ``relu``)
    argmax : np.ndarray, int32
        As :func:`maxpool2d_forward`'s, into the planes of the convolution's output.

    Notes
    -----
    Every target returns the calls' results bit for bit; a target may compute
    them without storing the convolution's output (the cpu and cuda targets do for
    2x2 pooling). ``nn.Sequential`` calls it for a ``Conv2d`` followed by a ``MaxPool2d``
    (and a ``ReLU``, which it runs after the pooling).
    """
    y = conv2d_forward(x, weight, bias, stride, padding, groups)
    y, argmax = maxpool2d_forward(y, pool_size, pool_stride)
    return (relu_forward(y) if relu else y), argmax


def conv2d_maxpool2d_backward(dy, x, weight, argmax, stride, padding, groups, pool_size,
                              pool_stride, input_grad=True, relu_y=None):
    """Gradients of :func:`conv2d_maxpool2d_forward`: :func:`maxpool2d_backward` of
    ``dy`` (with ``relu_y``, :func:`maxpool2d_relu_backward`), then
    :func:`conv2d_backward` of the result.

    Parameters
    ----------
    dy : np.ndarray, shape (N, F, PH, PW)
        Gradient of the pooled output (of the ReLU's, with ``relu_y``).
    x, weight, stride, padding, groups
        As :func:`conv2d_backward`.
    argmax : np.ndarray, shape (N, F, PH, PW), int32
        From :func:`conv2d_maxpool2d_forward`: into the planes of the convolution's
        output.
    pool_size, pool_stride : int
        The pooling's ``kernel_size`` and ``stride``.
    input_grad : bool, default True
        False skips ``dx`` (returned as None).
    relu_y : np.ndarray, optional
        The output of a ReLU run after the pooling (``conv2d_maxpool2d_forward`` with
        ``relu``).

    Returns
    -------
    dx, dweight, dbias
        As :func:`conv2d_backward`.

    Notes
    -----
    ``nn.Sequential`` calls it for a ``Conv2d`` followed by a ``MaxPool2d`` (and a
    ``ReLU``, which it runs after the pooling). The numpy and cuda targets return the
    calls' results bit for bit. The cpu target sums the weight and bias gradients of
    a stride-1 convolution with 2x2 pooling from the pooling's windows, without the
    convolution's dense ``dy`` where ``dx`` needs none: the same gradients, summed in
    another order (the last bits differ).
    """
    return conv_pool_backward_calls(sys.modules[__package__], dy, x, weight, argmax, stride,
                                    padding, groups, pool_size, pool_stride, input_grad, relu_y)


def maxpool2d_backward(dy, argmax, x_shape, kernel_size=None, stride=None):
    """Route each upstream gradient to its window's maximum.

    Parameters
    ----------
    dy : np.ndarray, shape (N, C, HO, WO)
    argmax : np.ndarray, shape (N, C, HO, WO), int32
        From :func:`maxpool2d_forward`.
    x_shape : tuple of int
        ``(N, C, H, W)``, the forward input's shape.
    kernel_size, stride : int, optional
        The forward's window. The result does not depend on them; a target may use
        them to pick a faster kernel (the cuda target, for windows that do not
        overlap).

    Returns
    -------
    dx : np.ndarray, shape ``x_shape``, dtype of ``dy``
        Zero except at maxima; where windows overlap (``stride < kernel_size``) one
        input can be the maximum of several windows and its gradients add up.
    """
    n, c, h, w = x_shape
    plane = np.arange(n * c, dtype=np.int64).reshape(n, c, 1, 1) * (h * w)
    index = (plane + argmax).ravel()
    # bincount adds up repeated indices (like np.add.at, much faster); it sums in
    # float64, which is at least as exact as summing in dy's dtype.
    dx = np.bincount(index, weights=dy.ravel(), minlength=n * c * h * w)
    return dx.astype(dy.dtype, copy=False).reshape(x_shape)

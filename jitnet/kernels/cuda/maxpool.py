"""Max pooling with argmax routing, alone and fused into the convolution's epilogue,
and the backward passes of both.
"""

import sys

import numpy as np

from .. import conv_pool_backward_calls
from ._launch import _grid_1d, _tile
from .activations import relu_backward
from .arrays import _dev, _empty, _flat, _zeros
from .conv import _conv2d
from .device import cuda, jit


@jit(device=True)
def _nchw(i, channels, h, w):
    """The ``(n, c, row, column)`` of flat index ``i`` into a C-contiguous NCHW array."""
    return i // (w * h * channels), (i // (w * h)) % channels, (i // w) % h, i % w


@jit(device=True, cache=True)
def _takes(v, best):
    """Whether window value ``v`` replaces the maximum so far: strictly greater, so the
    first maximum wins; the first NaN wins over any number (np.argmax's rule), so NaN
    propagates."""
    return v > best or (v != v and best == best)


@jit(cache=True)
def _maxpool2d_forward_kernel(x, k, stride, relu, y, argmax):
    # One thread per output element (grid-stride); it owns y and argmax there. With
    # relu, the maximum leaves through a ReLU (relu_forward's rule), argmax unchanged.
    _, channels, h, w = x.shape
    _, _, ho, wo = y.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, y.size, step):
        n, c, oh, ow = _nchw(i, channels, ho, wo)
        h0 = oh * stride
        w0 = ow * stride
        best = x[n, c, h0, w0]
        best_at = h0 * w + w0
        for a in range(k):
            for b in range(k):
                v = x[n, c, h0 + a, w0 + b]
                if _takes(v, best):
                    best = v
                    best_at = (h0 + a) * w + w0 + b
        if relu and best < 0:
            best = 0
        y[n, c, oh, ow] = best
        argmax[n, c, oh, ow] = best_at


@jit(cache=True)
def _maxpool2d_backward_kernel(dy, argmax, plane, dx_flat):
    # Scatter: dx_flat must start at zero. Overlapping windows (stride < kernel)
    # can send two gradients to the same input, hence the atomic add.
    _, channels, ho, wo = dy.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, dy.size, step):
        n, c, oh, ow = _nchw(i, channels, ho, wo)
        nc = n * channels + c
        cuda.atomic.add(dx_flat, nc * plane + argmax[n, c, oh, ow], dy[n, c, oh, ow])


def maxpool2d_forward(x, kernel_size, stride):
    """Max pooling over square windows, no padding (see ``numpy_ref``).

    Parameters
    ----------
    x : device array, shape (N, C, H, W)
    kernel_size, stride : int

    Returns
    -------
    y : device array, shape (N, C, HO, WO), dtype of ``x``
        ``HO = (H - kernel_size) // stride + 1``, likewise ``WO``.
    argmax : device array, shape (N, C, HO, WO), int32
        Flat index ``h * W + w`` into the plane ``x[n, c]``; first maximum wins, NaN wins.
    """
    return _maxpool2d(_dev(x), int(kernel_size), int(stride), False)


def _pool_outputs(x, k, stride):
    """Fresh ``(y, argmax)`` for a ``k x k`` pooling of ``x`` with ``stride``."""
    n, c, h, w = x.shape
    shape = (n, c, (h - k) // stride + 1, (w - k) // stride + 1)
    return _empty(shape, dtype=x.dtype), _empty(shape, dtype=np.int32)


def _maxpool2d(x, k, stride, relu):
    y, argmax = _pool_outputs(x, k, stride)
    if y.size:
        _maxpool2d_forward_kernel[_grid_1d(y.size)](x, k, stride, relu, y, argmax)
    return y, argmax


def conv2d_maxpool2d_forward(x, weight, bias, stride, padding, groups, pool_size, pool_stride,
                             relu=False):
    """:func:`conv2d_forward`, then :func:`maxpool2d_forward`, then with ``relu``
    :func:`relu_forward`: for 2x2 pooling (stride 2) one launch, the convolution
    kernel pooling its own block of outputs (see :func:`_make_conv2d_forward_kernel`);
    otherwise two, the ReLU inside the pooling's."""
    x, weight = _dev(x), _dev(weight)
    stride, padding, groups = int(stride), int(padding), int(groups)
    if int(pool_size) == int(pool_stride) == 2 and _tile() % 2 == 0:
        return _conv2d(x, weight, bias, stride, padding, groups, True, bool(relu))
    y = _conv2d(x, weight, bias, stride, padding, groups, False, False)[0]
    return _maxpool2d(y, int(pool_size), int(pool_stride), bool(relu))


@jit(cache=True)
def _maxpool2d_backward_gather_kernel(dy, argmax, k, stride, relu, relu_y, dx):
    # Windows that do not overlap (k <= stride): one thread per input element (grid-
    # stride) takes the gradient of the one window holding it, if it won there, else
    # 0. Every element is written once, so neither a zero fill nor atomics. With
    # relu, also 0 where relu_y (a ReLU's output after the pooling) is not positive:
    # that ReLU's backward, without its own launch.
    _, channels, h, w = dx.shape
    _, _, ho, wo = dy.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, dx.size, step):
        n, c, ih, iw = _nchw(i, channels, h, w)
        oh = ih // stride
        ow = iw // stride
        inside = oh < ho and ow < wo and ih - oh * stride < k and iw - ow * stride < k
        if inside and argmax[n, c, oh, ow] == ih * w + iw and (
            not relu or relu_y[n, c, oh, ow] > 0
        ):
            dx[n, c, ih, iw] = dy[n, c, oh, ow]
        else:
            dx[n, c, ih, iw] = 0


def maxpool2d_backward(dy, argmax, x_shape, kernel_size=None, stride=None):
    """Route each upstream gradient to its window's maximum.

    Parameters
    ----------
    dy : device array, shape (N, C, HO, WO)
    argmax : device array, shape (N, C, HO, WO), int32
    x_shape : tuple of int
        ``(N, C, H, W)``.
    kernel_size, stride : int, optional
        The forward's window. Given, and with windows that do not overlap
        (``kernel_size <= stride``, as ``nn.MaxPool2d`` passes for the reference
        net), ``dx`` takes one launch that writes each element once; otherwise a
        zero fill and an atomic scatter.

    Returns
    -------
    dx : device array, shape ``x_shape``, dtype of ``dy``
    """
    dy, argmax = _dev(dy), _dev(argmax)
    if _gather_pays(kernel_size, stride):
        return _maxpool2d_gather(dy, argmax, x_shape, kernel_size, stride, None)
    x_shape = tuple(int(s) for s in x_shape)
    dx = _zeros(x_shape, dy.dtype)
    if dy.size:
        plane = x_shape[2] * x_shape[3]
        _maxpool2d_backward_kernel[_grid_1d(dy.size)](dy, argmax, plane, _flat(dx))
    return dx


def _gather_pays(kernel_size, stride):
    """The one-launch gather needs the window and windows that do not overlap."""
    return kernel_size is not None and stride is not None and int(kernel_size) <= int(stride)


def _maxpool2d_gather(dy, argmax, x_shape, kernel_size, stride, relu_y):
    """The gather launch; ``relu_y`` None, or the output of a ReLU after the pooling."""
    dx = _empty(tuple(int(s) for s in x_shape), dtype=dy.dtype)
    if dx.size:
        relu = relu_y is not None
        _maxpool2d_backward_gather_kernel[_grid_1d(dx.size)](
            dy, argmax, int(kernel_size), int(stride), relu, relu_y if relu else dy, dx
        )
    return dx


def maxpool2d_relu_backward(dy, y, argmax, x_shape, kernel_size=None, stride=None):
    """:func:`relu_backward` (``y`` the ReLU's output) then :func:`maxpool2d_backward`:
    one launch where the gather applies (the ReLU's mask read as the gradient is
    routed), else the two."""
    dy, y, argmax = _dev(dy), _dev(y), _dev(argmax)
    if _gather_pays(kernel_size, stride):
        return _maxpool2d_gather(dy, argmax, x_shape, kernel_size, stride, y)
    return maxpool2d_backward(relu_backward(dy, y), argmax, x_shape, kernel_size, stride)


def conv2d_maxpool2d_backward(dy, x, weight, argmax, stride, padding, groups, pool_size,
                              pool_stride, input_grad=True, relu_y=None):
    """:func:`maxpool2d_backward` (with ``relu_y``, :func:`maxpool2d_relu_backward`)
    then :func:`conv2d_backward`: their launches in turn, bit for bit."""
    return conv_pool_backward_calls(sys.modules[__package__], dy, x, weight, argmax, stride,
                                    padding, groups, pool_size, pool_stride, input_grad, relu_y)

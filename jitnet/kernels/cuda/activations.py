"""Element-wise activations: one thread per element (grid-stride), flat indexing."""

import math

from ._launch import _grid_1d
from .arrays import _dev, _empty, _flat
from .device import cuda, jit


@jit(cache=True)
def _relu_forward_kernel(x, y):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, step):
        v = x[i]
        y[i] = 0 if v < 0 else v  # NaN fails the test and propagates


@jit(cache=True)
def _relu_backward_kernel(dy, y, dx):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, dy.size, step):
        dx[i] = dy[i] if y[i] > 0 else 0


@jit(cache=True)
def _leaky_relu_forward_kernel(x, slope, y):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, step):
        v = x[i]
        y[i] = v if v > 0 else v * slope


@jit(cache=True)
def _leaky_relu_backward_kernel(dy, x, slope, dx):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, dy.size, step):
        dx[i] = dy[i] if x[i] > 0 else dy[i] * slope


@jit(device=True)
def _sigmoid(v):
    e = math.exp(-abs(v))  # in (0, 1]: never overflows
    return 1 / (1 + e) if v >= 0 else e / (1 + e)


@jit(cache=True)
def _sigmoid_forward_kernel(x, y):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, step):
        y[i] = _sigmoid(x[i])


@jit(cache=True)
def _sigmoid_backward_kernel(dy, y, dx):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, dy.size, step):
        dx[i] = dy[i] * y[i] * (1 - y[i])


@jit(cache=True)
def _tanh_forward_kernel(x, y):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, step):
        y[i] = math.tanh(x[i])


@jit(cache=True)
def _tanh_backward_kernel(dy, y, dx):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, dy.size, step):
        dx[i] = dy[i] * (1 - y[i] * y[i])


@jit(cache=True)
def _elu_forward_kernel(x, alpha, y):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, step):
        v = x[i]
        y[i] = v if v > 0 else alpha * math.expm1(v)


@jit(cache=True)
def _elu_backward_kernel(dy, x, y, alpha, dx):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, dy.size, step):
        dx[i] = dy[i] if x[i] > 0 else dy[i] * alpha * math.exp(x[i])


def _map(kernel, inputs, scalars=()):
    """Launch element-wise ``kernel(*flat inputs, *scalars, flat out)``; out like inputs[0]."""
    inputs = [_dev(a) for a in inputs]
    out = _empty(inputs[0].shape, dtype=inputs[0].dtype)
    if out.size:
        scalars = [inputs[0].dtype.type(s) for s in scalars]  # keep float32 in float32
        kernel[_grid_1d(out.size)](*[_flat(a) for a in inputs], *scalars, _flat(out))
    return out


def relu_forward(x):
    """``max(x, 0)`` element-wise; NaN stays NaN. ``x``: device array, any shape."""
    return _map(_relu_forward_kernel, [x])


def relu_backward(dy, y):
    """``dy`` where the forward output ``y > 0``, else 0."""
    return _map(_relu_backward_kernel, [dy, y])


def leaky_relu_forward(x, negative_slope):
    """``x`` where ``x > 0``, else ``negative_slope * x``."""
    return _map(_leaky_relu_forward_kernel, [x], [negative_slope])


def leaky_relu_backward(dy, x, negative_slope):
    """``dy`` where the forward input ``x > 0``, else ``negative_slope * dy``."""
    return _map(_leaky_relu_backward_kernel, [dy, x], [negative_slope])


def sigmoid_forward(x):
    """Logistic sigmoid, without overflow for large ``|x|``."""
    return _map(_sigmoid_forward_kernel, [x])


def sigmoid_backward(dy, y):
    """``dy * y * (1 - y)`` with ``y`` the forward output."""
    return _map(_sigmoid_backward_kernel, [dy, y])


def tanh_forward(x):
    """Hyperbolic tangent."""
    return _map(_tanh_forward_kernel, [x])


def tanh_backward(dy, y):
    """``dy * (1 - y**2)`` with ``y`` the forward output."""
    return _map(_tanh_backward_kernel, [dy, y])


def elu_forward(x, alpha):
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)``."""
    return _map(_elu_forward_kernel, [x], [alpha])


def elu_backward(dy, x, y, alpha):
    """``dy`` where ``x > 0``, else ``dy * alpha * exp(x)``."""
    return _map(_elu_backward_kernel, [dy, x, y], [alpha])

"""Element-wise activations on the cpu target: any shape, computed on the flat
C-order view.
"""

import math
import types

import numpy as np
from numba import prange

from ...codegen import njit
from ._common import _JIT, _JIT_SMALL
from .arrays import _empty


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


#: Elements below which an element-wise kernel runs serially (256 KiB of float32).
_PARALLEL_MIN_ELEMENTS = 1 << 16


class _Elementwise:
    """An element-wise kernel compiled twice: ``parallel`` for large arrays, ``serial``
    below :data:`_PARALLEL_MIN_ELEMENTS` (its first argument's size).

    A small array is done before the threads of a parallel region would have
    started, and a parallel kernel costs about 0.3 s more to compile: the reference
    net's only unfused activation, fc1's ReLU (16,384 elements at batch 64), paid
    0.6 s of a cold start for its two kernels. Each twin compiles on first use. The
    serial one is a copy of the function under another name (``_serial`` appended),
    so that Numba's on-disk cache, which keys on the name, keeps the two apart.
    """

    def __init__(self, py_func):
        self.parallel = njit(**_JIT)(py_func)
        twin = types.FunctionType(py_func.__code__, py_func.__globals__,
                                  py_func.__name__ + "_serial", py_func.__defaults__,
                                  py_func.__closure__)
        twin.__qualname__ = py_func.__qualname__ + "_serial"
        twin.__doc__ = py_func.__doc__
        self.serial = njit(**_JIT_SMALL)(twin)  # a prange is a range there

    def __call__(self, a, *args):
        kernel = self.parallel if a.size >= _PARALLEL_MIN_ELEMENTS else self.serial
        return kernel(a, *args)


@_Elementwise
def _relu_forward(x, y):
    zero = x.dtype.type(0)
    # No race: iteration i owns y[i] (likewise in every element-wise kernel below).
    for i in prange(x.size):
        v = x[i]
        y[i] = v if (v > zero or v != v) else zero


@_Elementwise
def _relu_backward(dy, y, dx):
    zero = dy.dtype.type(0)
    for i in prange(dy.size):  # no race: owns dx[i]
        dx[i] = dy[i] if y[i] > zero else zero


@_Elementwise
def _leaky_relu_forward(x, slope, y):
    s = x.dtype.type(slope)
    for i in prange(x.size):  # no race: owns y[i]
        v = x[i]
        y[i] = v if v > 0 else v * s


@_Elementwise
def _leaky_relu_backward(dy, x, slope, dx):
    s = dy.dtype.type(slope)
    for i in prange(dy.size):  # no race: owns dx[i]
        dx[i] = dy[i] if x[i] > 0 else dy[i] * s


@_Elementwise
def _sigmoid_forward(x, y):
    one = x.dtype.type(1)
    for i in prange(x.size):  # no race: owns y[i]
        v = x[i]
        e = np.exp(-abs(v))  # in (0, 1]: never overflows
        y[i] = one / (one + e) if v >= 0 else e / (one + e)


@_Elementwise
def _sigmoid_backward(dy, y, dx):
    one = dy.dtype.type(1)
    for i in prange(dy.size):  # no race: owns dx[i]
        dx[i] = dy[i] * y[i] * (one - y[i])


@_Elementwise
def _tanh_forward(x, y):
    for i in prange(x.size):  # no race: owns y[i]
        y[i] = np.tanh(x[i])


@_Elementwise
def _tanh_backward(dy, y, dx):
    one = dy.dtype.type(1)
    for i in prange(dy.size):  # no race: owns dx[i]
        dx[i] = dy[i] * (one - y[i] * y[i])


@_Elementwise
def _elu_forward(x, alpha, y):
    a = x.dtype.type(alpha)
    for i in prange(x.size):  # no race: owns y[i]
        v = x[i]
        y[i] = v if v > 0 else a * np.expm1(v)


@_Elementwise
def _elu_backward(dy, x, y, alpha, dx):
    a = dy.dtype.type(alpha)
    for i in prange(dy.size):  # no race: owns dx[i]
        dx[i] = dy[i] if x[i] > 0 else dy[i] * a * math.exp(x[i])


def relu_forward(x):
    """``max(x, 0)`` element-wise; NaN stays NaN. Any shape, x's dtype."""
    y = _empty(x.shape, dtype=x.dtype)
    _relu_forward(_flat(x), y.reshape(-1))
    return y


def relu_backward(dy, y):
    """``dy`` where the forward output ``y > 0``, else 0. Any shape, dy's dtype."""
    dx = _empty(dy.shape, dtype=dy.dtype)
    _relu_backward(_flat(dy), _flat(y), dx.reshape(-1))
    return dx


def leaky_relu_forward(x, negative_slope):
    """``x`` where ``x > 0``, else ``negative_slope * x``. Any shape, x's dtype."""
    y = _empty(x.shape, dtype=x.dtype)
    _leaky_relu_forward(_flat(x), float(negative_slope), y.reshape(-1))
    return y


def leaky_relu_backward(dy, x, negative_slope):
    """``dy`` where the forward input ``x > 0``, else ``negative_slope * dy``."""
    dx = _empty(dy.shape, dtype=dy.dtype)
    _leaky_relu_backward(_flat(dy), _flat(x), float(negative_slope), dx.reshape(-1))
    return dx


def sigmoid_forward(x):
    """Logistic sigmoid, without overflow for large ``|x|``. Any shape, x's dtype."""
    y = _empty(x.shape, dtype=x.dtype)
    _sigmoid_forward(_flat(x), y.reshape(-1))
    return y


def sigmoid_backward(dy, y):
    """``dy * y * (1 - y)`` with ``y`` the forward output."""
    dx = _empty(dy.shape, dtype=dy.dtype)
    _sigmoid_backward(_flat(dy), _flat(y), dx.reshape(-1))
    return dx


def tanh_forward(x):
    """Hyperbolic tangent. Any shape, x's dtype."""
    y = _empty(x.shape, dtype=x.dtype)
    _tanh_forward(_flat(x), y.reshape(-1))
    return y


def tanh_backward(dy, y):
    """``dy * (1 - y**2)`` with ``y`` the forward output."""
    dx = _empty(dy.shape, dtype=dy.dtype)
    _tanh_backward(_flat(dy), _flat(y), dx.reshape(-1))
    return dx


def elu_forward(x, alpha):
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)``. Any shape, x's dtype."""
    y = _empty(x.shape, dtype=x.dtype)
    _elu_forward(_flat(x), float(alpha), y.reshape(-1))
    return y


def elu_backward(dy, x, y, alpha):
    """``dy`` where ``x > 0``, else ``dy * alpha * exp(x)`` (from ``x``: ``y + alpha``,
    the same in exact arithmetic, cancels as ``exp(x)`` falls below ``alpha``'s rounding)."""
    dx = _empty(dy.shape, dtype=dy.dtype)
    _elu_backward(_flat(dy), _flat(x), _flat(y), float(alpha), dx.reshape(-1))
    return dx

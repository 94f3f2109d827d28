"""Layers: thin holders of parameters that call the active target's kernels.

Each ``forward`` validates its input, calls one kernel of
:func:`jitnet.targets.backend` and keeps on ``self`` (``_saved_*``) what its
``backward`` needs; ``backward(dy)`` returns ``dx`` and overwrites the ``grad`` of
the layer's parameters. Activations are only ever touched by kernels and by
``.reshape`` / ``.shape`` / ``.dtype``, so the same code runs on NumPy arrays and on
numba.cuda device arrays.
"""

import math

import numpy as np

from .. import config, rng
from .._checks import check_flag, check_int, check_real
from ..targets import backend, get_target, is_device_array, to_numpy
from .module import Module, Parameter, _float_dtype, as_input, check_placement, kaiming_uniform

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# -- validation helpers ------------------------------------------------------------------


#: The arguments PyTorch also takes as a pair ``(h, w)``; jitnet takes a square one.
_PAIRS = ("kernel_size", "stride", "padding")


def _positive_int(owner, name, value, minimum=1):
    """:func:`~jitnet._checks.check_int`, also taking a square pair ``(k, k)`` for the
    arguments in :data:`_PAIRS` (a pair elsewhere, ``Linear((4, 4), 2)``, is refused)."""
    if name in _PAIRS and isinstance(value, (tuple, list)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"{owner} supports square {name} only, got {value!r}")
        value = value[0]
    return check_int(owner, name, value, minimum)


def _input(owner, x, ndim, layout, dtype=None):
    """``x`` as an array of the active target, after checking it is a float array of
    ``ndim`` dims (any with None; ``layout`` names them) and ``dtype`` (when given).

    Something that is no array at all (None, a str, a list: PyTorch's layers take no
    list either) or an array of no numbers is a TypeError naming what came; a
    numeric array of the wrong dtype or shape a ValueError.
    """
    if not (isinstance(x, (np.ndarray, np.generic)) or is_device_array(x)
            or hasattr(x, "__array__")):
        raise TypeError(
            f"{owner} expected an input array {layout or '(any shape)'} of float32 or "
            f"float64, got {type(x).__name__}"
        )
    x = as_input(x)
    x_dtype = np.dtype(x.dtype)
    if x_dtype not in _FLOATS:
        if x_dtype.kind not in "biufc":
            raise TypeError(f"{owner} expected a float32 or float64 input, got an array of "
                            f"dtype {x_dtype}")
        raise ValueError(f"{owner} expected a float32 or float64 input, got {x_dtype}")
    if ndim is not None and len(x.shape) != ndim:
        raise ValueError(f"{owner} expected a {ndim}-D input {layout}, got shape {tuple(x.shape)}")
    if dtype is not None and x_dtype != dtype:
        raise ValueError(
            f"{owner} expected a {dtype} input (the dtype of its parameters), got {x_dtype}; "
            f"cast the input or call .to(dtype={x_dtype.name!r}) on the model"
        )
    return x


def _check_param(owner, name, param, shape, layout, dtype=None):
    """The dtype of ``param`` (a Parameter, or a buffer's array), after checking that its
    array lives on the active target and has ``shape`` (``layout`` names its axes) and
    ``dtype`` (by default float32 or float64: give the weight's for the others).

    The kernels take each parameter's size from the layer's configuration: on the cpu
    target one of another shape (``layer.weight.data = ...``) was read past its end.
    Attributes are compared only, nothing is read: this runs on every forward and
    backward.
    """
    data = param.data if isinstance(param, Parameter) else param
    if not (isinstance(data, np.ndarray) or is_device_array(data)):
        raise TypeError(
            f"{owner} expected {name} to be an array of shape {shape} {layout}, got "
            f"{type(data).__name__}"
        )
    check_placement(owner, data)
    if data.shape != shape:
        raise ValueError(
            f"{owner} expected {name} of shape {shape} {layout}, got {tuple(data.shape)}"
        )
    got = data.dtype
    if dtype is None:
        if got not in _FLOATS:
            raise ValueError(f"{owner} expected {name} of dtype float32 or float64, got {got}")
    elif got != dtype:
        raise ValueError(
            f"{owner} expected {name} of dtype {dtype} (the weight's), got {got}; "
            f".to(dtype=...) casts every parameter of a model"
        )
    return got


def _check_size(owner, what, expected, got, shape):
    if got != expected:
        raise ValueError(f"{owner} expected {expected} {what}, got {got} (input shape {shape})")


def _dtype(owner, dtype):
    """A layer's parameter dtype: ``config.DTYPE`` by default, else float32 or float64."""
    return _float_dtype(owner, config.DTYPE if dtype is None else dtype)


# -- what backward checks: that forward ran, and the upstream gradient ---------------------


def _saved(layer, *names):
    """The arrays ``layer``'s forward kept for backward, or a RuntimeError when there are none.

    They are missing before the first forward, and after ``Module.to`` (which drops
    them: they may live on the other target).
    """
    values = [getattr(layer, name, None) for name in names]
    if any(v is None for v in values):
        raise RuntimeError(
            f"{type(layer).__name__}.backward called before its forward pass (or after "
            f"Module.to, which drops what forward kept): run forward first"
        )
    return values[0] if len(values) == 1 else values


def _saved_relu_output(relu, shape):
    """The output ``relu`` kept for backward, after checking it has ``shape``: the fused
    kernels that take it trust its size (the cpu target would read past its end)."""
    y = _saved(relu, "_saved_y")
    if tuple(y.shape) != tuple(shape):
        raise RuntimeError(
            f"ReLU.backward: the output its last forward kept has shape {tuple(y.shape)}, "
            f"expected {tuple(shape)}: it ran on another input since this forward pass "
            "(is one ReLU object used in two places? each place needs its own)"
        )
    return y


def _upstream(layer, dy, shape, dtype):
    """``dy`` as an array of the active target, after checking it is the gradient of the
    output ``layer``'s forward returned: that output's ``shape`` and ``dtype``.

    The kernels trust their arguments: a ``dy`` of another shape would read or write
    past the ends of the buffers on the cpu target, so it stops here.
    """
    owner = type(layer).__name__
    if is_device_array(dy) and get_target() != "cuda":
        raise ValueError(
            f"{owner}.backward got dy on the cuda device but the active target is "
            f"{get_target()!r}: pass a host array, or jitnet.set_target('cuda')"
        )
    if not (is_device_array(dy) or isinstance(dy, (np.ndarray, np.generic))):
        raise TypeError(
            f"{owner}.backward expected dy to be an array of shape {tuple(shape)}, got "
            f"{type(dy).__name__}"
        )
    dy = as_input(dy)
    got = np.dtype(dy.dtype)
    if tuple(dy.shape) != tuple(shape) or got != dtype:
        raise ValueError(
            f"{owner}.backward expected dy of shape {tuple(shape)} and dtype {np.dtype(dtype)} "
            f"(those of its forward output), got shape {tuple(dy.shape)} and dtype {got}"
        )
    return dy


# -- convolution and pooling -------------------------------------------------------------


class Conv2d(Module):
    """2-D convolution (cross-correlation) over NCHW images, as ``torch.nn.Conv2d``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int
        Square kernels only.
    stride : int, default 1
    padding : int, default 0
        Zeros on every side.
    groups : int, default 1
        Must divide both channel counts; ``groups == in_channels`` is depthwise.
    bias : bool, default True
    dtype : {"float32", "float64"}, optional
        Default :data:`jitnet.config.DTYPE`.

    Attributes
    ----------
    weight : Parameter, shape (out_channels, in_channels / groups, k, k)
    bias : Parameter, shape (out_channels,), or None
        Both ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, ``fan_in = in_channels/groups*k*k``.

    Notes
    -----
    Input ``(N, in_channels, H, W)`` gives ``(N, out_channels, HO, WO)`` with
    ``HO = (H + 2*padding - k) // stride + 1`` and likewise ``WO``.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        groups=1,
        bias=True,
        dtype=None,
    ):
        super().__init__()
        self.in_channels = _positive_int("Conv2d", "in_channels", in_channels)
        self.out_channels = _positive_int("Conv2d", "out_channels", out_channels)
        self.kernel_size = _positive_int("Conv2d", "kernel_size", kernel_size)
        self.stride = _positive_int("Conv2d", "stride", stride)
        self.padding = _positive_int("Conv2d", "padding", padding, minimum=0)
        self.groups = _positive_int("Conv2d", "groups", groups)
        if self.in_channels % self.groups:
            raise ValueError(
                f"Conv2d: in_channels ({self.in_channels}) must be divisible by groups "
                f"({self.groups})"
            )
        if self.out_channels % self.groups:
            raise ValueError(
                f"Conv2d: out_channels ({self.out_channels}) must be divisible by groups "
                f"({self.groups})"
            )
        bias = check_flag("Conv2d", "bias", bias)
        dtype = _dtype("Conv2d", dtype)
        k = self.kernel_size
        fan_in = self.in_channels // self.groups * k * k
        self.weight = Parameter(
            kaiming_uniform(
                (self.out_channels, self.in_channels // self.groups, k, k), fan_in, dtype
            )
        )
        self.bias = (
            Parameter(kaiming_uniform((self.out_channels,), fan_in, dtype)) if bias else None
        )

    def forward(self, x):
        x = self._checked(x)
        self._saved_x = x
        bias = self.bias.data if self.bias is not None else None
        return backend().conv2d_forward(
            x, self.weight.data, bias, self.stride, self.padding, self.groups
        )

    def _forward_pooled(self, x, pool, relu=None):
        """``pool(self(x))`` in one kernel call, with both layers ready for backward.

        ``pool`` is a ``MaxPool2d``; ``relu``, a ``ReLU`` to run after it in the same
        call, or None. The result and every gradient are those of the separate calls,
        bit for bit; the cpu and cuda targets skip storing the convolution's output (for
        2x2 pooling). ``Sequential`` calls it for a convolution followed by a pooling.
        """
        x = self._checked(x)
        out_shape = self._output_shape(x.shape)
        pool._check_shape(out_shape)
        self._saved_x = x
        bias = self.bias.data if self.bias is not None else None
        y, argmax = backend().conv2d_maxpool2d_forward(
            x, self.weight.data, bias, self.stride, self.padding, self.groups,
            pool.kernel_size, pool.stride, relu=relu is not None,
        )
        pool._keep(argmax, out_shape, relu, y)
        return y

    def _backward_pooled(self, dy, pool, relu=None, input_grad=True):
        """``self.backward(pool.backward(dy))`` in one kernel call, for the layers that
        ``_forward_pooled`` ran (``relu``: the ``ReLU`` that ran after ``pool``, or None).

        ``Sequential`` calls it. The gradients are those of the separate calls; the
        cpu target may sum the weight and bias gradients from the pooling's windows,
        in another order (see ``conv2d_maxpool2d_backward``).
        """
        x = _saved(self, "_saved_x")
        self._check_params()
        dy, argmax, shape = pool._upstream(dy, relu)
        if shape != self._output_shape(x.shape):  # not this layer's output pooled
            dy = pool.backward(dy) if relu is None else pool._backward_relu(dy, relu)
            return self.backward(dy, input_grad)
        relu_y = None if relu is None else _saved_relu_output(relu, dy.shape)
        dx, dweight, dbias = backend().conv2d_maxpool2d_backward(
            dy, x, self.weight.data, argmax, self.stride, self.padding, self.groups,
            pool.kernel_size, pool.stride, input_grad, relu_y,
        )
        self.weight.grad = dweight
        if self.bias is not None:
            self.bias.grad = dbias
        return dx

    def _checked(self, x):
        """``x`` as an input of the active target, after the checks of ``forward``."""
        x = _input("Conv2d", x, 4, "(N, C, H, W)", self._check_params())
        n, c, h, w = x.shape
        _check_size("Conv2d", "input channels", self.in_channels, c, tuple(x.shape))
        k, p = self.kernel_size, self.padding
        if h + 2 * p < k or w + 2 * p < k:
            raise ValueError(
                f"Conv2d kernel size {k} is larger than the padded input "
                f"{h + 2 * p}x{w + 2 * p} (input shape {tuple(x.shape)}, padding {p})"
            )
        return x

    def _check_params(self):
        """The weight's dtype, after checking the parameters' arrays (see _check_param)."""
        k = self.kernel_size
        shape = (self.out_channels, self.in_channels // self.groups, k, k)
        dtype = _check_param(
            "Conv2d", "weight", self.weight, shape, "(out_channels, in_channels/groups, k, k)"
        )
        if self.bias is not None:
            _check_param("Conv2d", "bias", self.bias, shape[:1], "(out_channels,)", dtype)
        return dtype

    def _output_shape(self, in_shape):
        """``(N, out_channels, HO, WO)`` of an input of shape ``in_shape``."""
        n, _, h, w = in_shape
        k, p, s = self.kernel_size, self.padding, self.stride
        return (n, self.out_channels, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)

    def backward(self, dy, input_grad=True):
        """``dx`` (None with ``input_grad=False``); sets ``weight.grad`` and ``bias.grad``."""
        x = _saved(self, "_saved_x")
        dy = _upstream(self, dy, self._output_shape(x.shape), self._check_params())
        dx, dweight, dbias = backend().conv2d_backward(
            dy, x, self.weight.data, self.stride, self.padding, self.groups, input_grad,
        )
        self.weight.grad = dweight
        if self.bias is not None:
            self.bias.grad = dbias
        return dx

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if self.stride != 1:
            s += f", stride={self.stride}"
        if self.padding:
            s += f", padding={self.padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class MaxPool2d(Module):
    """Max pooling over square windows (no padding), as ``torch.nn.MaxPool2d``.

    Parameters
    ----------
    kernel_size : int
    stride : int, optional
        Default ``kernel_size`` (non-overlapping windows).

    Notes
    -----
    ``(N, C, H, W) -> (N, C, (H - k) // stride + 1, (W - k) // stride + 1)``. Forward
    records the argmax of every window; backward routes each gradient to it.
    """

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = _positive_int("MaxPool2d", "kernel_size", kernel_size)
        self.stride = (
            self.kernel_size if stride is None else _positive_int("MaxPool2d", "stride", stride)
        )

    def forward(self, x):
        x = _input("MaxPool2d", x, 4, "(N, C, H, W)")
        self._check_shape(tuple(x.shape))
        y, argmax = backend().maxpool2d_forward(x, self.kernel_size, self.stride)
        self._keep(argmax, x.shape, None, y)
        return y

    def _keep(self, argmax, in_shape, relu, y):
        """What backward needs, from this pooling's forward or a fused call: the argmax
        and input shape, and for ``relu`` (a ``ReLU`` that ran after it, or None) the
        output ``y`` it produced."""
        self._saved_argmax = argmax
        self._saved_shape = tuple(in_shape)
        self._saved_dtype = np.dtype(y.dtype)
        if relu is not None:
            relu._saved_y = y

    def _check_shape(self, shape):
        k = self.kernel_size
        if shape[2] < k or shape[3] < k:
            raise ValueError(
                f"MaxPool2d kernel size {k} is larger than the input "
                f"{shape[2]}x{shape[3]} (input shape {shape})"
            )

    def _upstream(self, dy, owner=None):
        """``(dy, argmax, input shape)`` after the checks of backward (``owner``: the
        layer whose output ``dy`` is the gradient of, when not this one)."""
        argmax, shape, dtype = _saved(self, "_saved_argmax", "_saved_shape", "_saved_dtype")
        n, c, h, w = shape
        k, s = self.kernel_size, self.stride
        out_shape = (n, c, (h - k) // s + 1, (w - k) // s + 1)
        dy = _upstream(owner or self, dy, out_shape, dtype)
        return dy, argmax, shape

    def backward(self, dy):
        dy, argmax, shape = self._upstream(dy)
        return backend().maxpool2d_backward(dy, argmax, shape, self.kernel_size, self.stride)

    def _backward_relu(self, dy, relu):
        """``self.backward(relu.backward(dy))`` in one kernel call, for a ``ReLU`` that ran
        after this pooling (``Sequential`` calls it)."""
        dy, argmax, shape = self._upstream(dy, relu)
        y = _saved_relu_output(relu, dy.shape)
        return backend().maxpool2d_relu_backward(
            dy, y, argmax, shape, self.kernel_size, self.stride
        )

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


# -- fully connected ---------------------------------------------------------------------


class Linear(Module):
    """Fully connected layer, ``y = x @ weight.T + bias``, as ``torch.nn.Linear``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default True
    dtype : {"float32", "float64"}, optional

    Attributes
    ----------
    weight : Parameter, shape (out_features, in_features)
    bias : Parameter, shape (out_features,), or None
        Both ``U(-1/sqrt(in_features), 1/sqrt(in_features))``.

    Notes
    -----
    ``(N, in_features) -> (N, out_features)``.
    """

    def __init__(self, in_features, out_features, bias=True, dtype=None):
        super().__init__()
        self.in_features = _positive_int("Linear", "in_features", in_features)
        self.out_features = _positive_int("Linear", "out_features", out_features)
        bias = check_flag("Linear", "bias", bias)
        dtype = _dtype("Linear", dtype)
        d = self.in_features
        self.weight = Parameter(kaiming_uniform((self.out_features, d), d, dtype))
        self.bias = Parameter(kaiming_uniform((self.out_features,), d, dtype)) if bias else None

    def forward(self, x):
        return self._forward(x, None)

    def backward(self, dy, input_grad=True):
        """``dx`` (None with ``input_grad=False``); sets ``weight.grad`` and ``bias.grad``."""
        return self._backward(dy, input_grad, None)

    def _forward_relu(self, x, relu):
        """``relu(self(x))`` in one kernel call, ``relu`` (a ``ReLU``) ready for backward;
        bit for bit the separate calls. ``Sequential`` calls it for a Linear then a ReLU."""
        return self._forward(x, relu)

    def _backward_relu(self, dy, relu):
        """``relu.backward(self.backward(dy))`` in one kernel call, for the ``ReLU`` that
        ran just before this layer (``Sequential`` calls it); bit for bit."""
        return self._backward(dy, True, relu)

    def _check_params(self):
        """The weight's dtype, after checking the parameters' arrays (see _check_param)."""
        shape = (self.out_features, self.in_features)
        dtype = _check_param("Linear", "weight", self.weight, shape, "(out_features, in_features)")
        if self.bias is not None:
            _check_param("Linear", "bias", self.bias, shape[:1], "(out_features,)", dtype)
        return dtype

    def _forward(self, x, relu):
        x = _input("Linear", x, 2, "(N, in_features)", self._check_params())
        _check_size("Linear", "input features", self.in_features, x.shape[1], tuple(x.shape))
        self._saved_x = x
        bias = self.bias.data if self.bias is not None else None
        y = backend().linear_forward(x, self.weight.data, bias, relu=relu is not None)
        if relu is not None:
            relu._saved_y = y
        return y

    def _backward(self, dy, input_grad, relu):
        x = _saved(self, "_saved_x")
        relu_y = None if relu is None else _saved_relu_output(relu, x.shape)
        dy = _upstream(self, dy, (x.shape[0], self.out_features), self._check_params())
        dx, dweight, dbias = backend().linear_backward(
            dy, x, self.weight.data, input_grad, relu_y=relu_y
        )
        self.weight.grad = dweight
        if self.bias is not None:
            self.bias.grad = dbias
        return dx

    def extra_repr(self):
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class Maxout(Module):
    """Maxout units: ``y[:, j] = max_k (x @ W_k.T + b_k)[:, j]``.

    Parameters
    ----------
    in_features, out_features : int
    pieces : int, default 2
        Linear pieces per unit.
    dtype : {"float32", "float64"}, optional

    Attributes
    ----------
    weight : Parameter, shape (out_features * pieces, in_features)
        Row ``j * pieces + k`` is piece ``k`` of unit ``j``.
    bias : Parameter, shape (out_features * pieces,)
        Initialised as a Linear layer of ``in_features`` inputs.
    """

    def __init__(self, in_features, out_features, pieces=2, dtype=None):
        super().__init__()
        self.in_features = _positive_int("Maxout", "in_features", in_features)
        self.out_features = _positive_int("Maxout", "out_features", out_features)
        self.pieces = _positive_int("Maxout", "pieces", pieces)
        dtype = _dtype("Maxout", dtype)
        rows = self.out_features * self.pieces
        self.weight = Parameter(kaiming_uniform((rows, self.in_features), self.in_features, dtype))
        self.bias = Parameter(kaiming_uniform((rows,), self.in_features, dtype))

    def _check_params(self):
        """The weight's dtype, after checking the parameters' arrays (see _check_param)."""
        shape = (self.out_features * self.pieces, self.in_features)
        dtype = _check_param(
            "Maxout", "weight", self.weight, shape, "(out_features * pieces, in_features)"
        )
        _check_param("Maxout", "bias", self.bias, shape[:1], "(out_features * pieces,)", dtype)
        return dtype

    def forward(self, x):
        x = _input("Maxout", x, 2, "(N, in_features)", self._check_params())
        _check_size("Maxout", "input features", self.in_features, x.shape[1], tuple(x.shape))
        y, argmax = backend().maxout_forward(x, self.weight.data, self.bias.data, self.pieces)
        self._saved_x = x
        self._saved_argmax = argmax
        return y

    def backward(self, dy):
        x, argmax = _saved(self, "_saved_x", "_saved_argmax")
        dy = _upstream(self, dy, (x.shape[0], self.out_features), self._check_params())
        dx, dweight, dbias = backend().maxout_backward(
            dy, x, self.weight.data, argmax, self.pieces
        )
        self.weight.grad = dweight
        self.bias.grad = dbias
        return dx

    def extra_repr(self):
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"pieces={self.pieces}"
        )


class Flatten(Module):
    """``(N, d1, d2, ...) -> (N, d1 * d2 * ...)``: keeps the batch axis."""

    def forward(self, x):
        x = _input("Flatten", x, None, "")
        if len(x.shape) < 2:
            raise ValueError(
                f"Flatten expected an input with a batch axis and at least one more, "
                f"got shape {tuple(x.shape)}"
            )
        self._saved_shape = tuple(x.shape)
        self._saved_dtype = np.dtype(x.dtype)
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))

    def backward(self, dy):
        shape, dtype = _saved(self, "_saved_shape", "_saved_dtype")
        dy = _upstream(self, dy, (shape[0], math.prod(shape[1:])), dtype)
        return dy.reshape(shape)


# -- element-wise activations ------------------------------------------------------------


class ReLU(Module):
    """``max(x, 0)``, any shape."""

    def forward(self, x):
        x = _input("ReLU", x, None, "")
        self._saved_y = backend().relu_forward(x)
        return self._saved_y

    def backward(self, dy):
        y = _saved(self, "_saved_y")
        return backend().relu_backward(_upstream(self, dy, y.shape, y.dtype), y)


class LeakyReLU(Module):
    """``x`` where positive, else ``negative_slope * x``, any shape."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = check_real("LeakyReLU", "negative_slope", negative_slope)

    def forward(self, x):
        x = _input("LeakyReLU", x, None, "")
        self._saved_x = x
        return backend().leaky_relu_forward(x, self.negative_slope)

    def backward(self, dy):
        x = _saved(self, "_saved_x")
        dy = _upstream(self, dy, x.shape, x.dtype)
        return backend().leaky_relu_backward(dy, x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Module):
    """Logistic sigmoid, any shape."""

    def forward(self, x):
        x = _input("Sigmoid", x, None, "")
        self._saved_y = backend().sigmoid_forward(x)
        return self._saved_y

    def backward(self, dy):
        y = _saved(self, "_saved_y")
        return backend().sigmoid_backward(_upstream(self, dy, y.shape, y.dtype), y)


class Tanh(Module):
    """Hyperbolic tangent, any shape."""

    def forward(self, x):
        x = _input("Tanh", x, None, "")
        self._saved_y = backend().tanh_forward(x)
        return self._saved_y

    def backward(self, dy):
        y = _saved(self, "_saved_y")
        return backend().tanh_backward(_upstream(self, dy, y.shape, y.dtype), y)


class ELU(Module):
    """``x`` where positive, else ``alpha * (exp(x) - 1)``, any shape."""

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = check_real("ELU", "alpha", alpha)

    def forward(self, x):
        x = _input("ELU", x, None, "")
        self._saved_x = x
        self._saved_y = backend().elu_forward(x, self.alpha)
        return self._saved_y

    def backward(self, dy):
        x, y = _saved(self, "_saved_x", "_saved_y")
        return backend().elu_backward(_upstream(self, dy, y.shape, y.dtype), x, y, self.alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}"


# -- regularisation and normalisation ----------------------------------------------------


class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability ``p`` and scale
    the rest by ``1 / (1 - p)``; the identity in eval mode.

    Each training forward draws a seed from :func:`jitnet.rng.next_seed`, so
    :func:`jitnet.manual_seed` makes the masks reproducible, and every target draws
    the same mask for the same seed.
    """

    def __init__(self, p=0.5):
        super().__init__()
        self.p = check_real("Dropout", "p", p, "in [0, 1] (a probability)", lambda v: 0 <= v <= 1)

    def forward(self, x):
        x = _input("Dropout", x, None, "")
        self._saved_shape, self._saved_dtype = tuple(x.shape), np.dtype(x.dtype)
        if not self.training or self.p == 0.0:
            self._saved_mask = None
            return x
        y, self._saved_mask = backend().dropout_forward(x, self.p, rng.next_seed())
        return y

    def backward(self, dy):
        dy = _upstream(self, dy, *_saved(self, "_saved_shape", "_saved_dtype"))
        if self._saved_mask is None:
            return dy
        return backend().dropout_backward(dy, self._saved_mask)

    def extra_repr(self):
        return f"p={self.p}"


class BatchNorm2d(Module):
    """Batch normalisation of NCHW images per channel, as ``torch.nn.BatchNorm2d``.

    Parameters
    ----------
    num_features : int
        Channels ``C``.
    eps : float, default 1e-5
    momentum : float, default 0.1
        Weight of the new batch in the running statistics.
    dtype : {"float32", "float64"}, optional

    Attributes
    ----------
    weight, bias : Parameter, shape (C,)
        Ones and zeros.
    running_mean, running_var : array, shape (C,)
        Buffers (zeros and ones), updated in training mode with the unbiased batch
        variance, used in eval mode; saved by ``state_dict``.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype=None):
        super().__init__()
        self.num_features = _positive_int("BatchNorm2d", "num_features", num_features)
        self.eps = check_real("BatchNorm2d", "eps", eps, "> 0", lambda v: v > 0)
        self.momentum = check_real("BatchNorm2d", "momentum", momentum, "in [0, 1]",
                                   lambda v: 0 <= v <= 1)
        dtype = _dtype("BatchNorm2d", dtype)
        c = self.num_features
        b = backend()
        self.weight = Parameter(b.asarray(np.ones(c, dtype)))
        self.bias = Parameter(b.asarray(np.zeros(c, dtype)))
        self.register_buffer("running_mean", b.asarray(np.zeros(c, dtype)))
        self.register_buffer("running_var", b.asarray(np.ones(c, dtype)))

    def forward(self, x):
        x = self._checked(x)
        y, mean, invstd = backend().batchnorm2d_forward(
            x,
            self.weight.data,
            self.bias.data,
            self.running_mean,
            self.running_var,
            self.momentum,
            self.eps,
            self.training,
        )
        self._saved_x, self._saved_mean, self._saved_invstd = x, mean, invstd
        self._saved_training = self.training
        return y

    def _forward_pooled(self, x, pool, relu=None):
        """``pool(self(x))`` (then ``relu`` of it, a ``ReLU`` or None) in one kernel call,
        every layer ready for backward; bit for bit the separate calls. ``Sequential``
        calls it for a batch norm followed by a pooling: the cpu target (for 2x2
        pooling) and the cuda target never store the normalised images."""
        x = self._checked(x)
        pool._check_shape(tuple(x.shape))
        y, argmax, mean, invstd = backend().batchnorm2d_maxpool2d_forward(
            x, self.weight.data, self.bias.data, self.running_mean, self.running_var,
            self.momentum, self.eps, self.training, pool.kernel_size, pool.stride,
            relu=relu is not None,
        )
        self._saved_x, self._saved_mean, self._saved_invstd = x, mean, invstd
        self._saved_training = self.training
        pool._keep(argmax, x.shape, relu, y)
        return y

    def _checked(self, x):
        """``x`` as an input of the active target, after the checks of ``forward``."""
        x = _input("BatchNorm2d", x, 4, "(N, C, H, W)", self._check_params())
        n, c, h, w = x.shape
        _check_size("BatchNorm2d", "channels", self.num_features, c, tuple(x.shape))
        if self.training and n * h * w < 2:
            raise ValueError(
                f"BatchNorm2d expected more than 1 value per channel when training, "
                f"got input shape {tuple(x.shape)}"
            )
        return x

    def _check_params(self):
        """The weight's dtype, after checking the parameters' and running statistics'
        arrays (see _check_param)."""
        shape = (self.num_features,)
        dtype = _check_param("BatchNorm2d", "weight", self.weight, shape, "(num_features,)")
        for name in ("bias", "running_mean", "running_var"):
            _check_param("BatchNorm2d", name, getattr(self, name), shape, "(num_features,)",
                         dtype)
        return dtype

    def backward(self, dy):
        b = backend()
        x = _saved(self, "_saved_x", "_saved_mean", "_saved_invstd")[0]
        dy = _upstream(self, dy, x.shape, self._check_params())
        if self._saved_training:
            dx, dweight, dbias = b.batchnorm2d_backward(
                dy, self._saved_x, self.weight.data, self._saved_mean, self._saved_invstd
            )
        else:
            dx, dweight, dbias = self._eval_backward(b, dy)
        self.weight.grad = dweight
        self.bias.grad = dbias
        return dx

    def _eval_backward(self, b, dy):
        """Backward through fixed running statistics: a per-channel affine map.

        ``y = xhat * weight + bias`` with ``xhat = (x - mean) * invstd`` constant in the
        batch is a depthwise 1x1 convolution, so the conv kernels give it on every
        target: ``xhat`` is a depthwise conv of ``x``, and the depthwise conv backward
        of ``xhat`` with weights ``weight * invstd`` returns ``dx = dy * weight *
        invstd``, ``sum(dy * xhat)`` and ``sum(dy)`` per channel.
        """
        c = self.num_features
        mean = to_numpy(self._saved_mean)
        invstd = to_numpy(self._saved_invstd)
        gamma = to_numpy(self.weight.data)
        dtype = gamma.dtype
        xhat = b.conv2d_forward(
            self._saved_x,
            b.asarray(invstd.reshape(c, 1, 1, 1).astype(dtype)),
            b.asarray((-mean * invstd).astype(dtype)),
            1,
            0,
            c,
        )
        scale = b.asarray((gamma * invstd).reshape(c, 1, 1, 1).astype(dtype))
        dx, dweight, dbias = b.conv2d_backward(dy, xhat, scale, 1, 0, c)
        return dx, dweight.reshape(c), dbias

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"

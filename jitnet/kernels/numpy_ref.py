"""The reference target: every kernel of the contract in vectorised NumPy.

This module is the test oracle that the ``cpu`` and ``cuda`` kernels are checked
against, and the baseline they are benchmarked against. It is written the way a
NumPy user would write it for speed: convolution as im2col (a strided window view,
one copy) followed by one batched BLAS matmul per call, max pooling as one
``argmax`` over a window view, everything else as whole-array expressions.

Every function takes and returns ``np.ndarray``; float32 and float64 both work and
the output dtype is the input dtype. Kernels trust their inputs: the layers of
:mod:`jitnet.nn` validate shapes and dtypes before calling them.
"""

import sys

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import conv_pool_backward_calls

# --------------------------------------------------------------------------------------
# arrays of the target
# --------------------------------------------------------------------------------------


def asarray(a, dtype=None):
    """A host array as an array of this target: a C-contiguous ``np.ndarray``.

    Parameters
    ----------
    a : array_like
        Any array, list or scalar.
    dtype : dtype, optional
        Wanted dtype; by default the dtype of ``a`` is kept (integers stay integers).

    Returns
    -------
    np.ndarray
        ``a`` itself when it is already contiguous with the wanted dtype, else a copy;
        of ``a``'s shape, 0-d for a scalar (where ``np.ascontiguousarray`` gives 1-d).
    """
    return np.asarray(a, dtype=dtype, order="C")


def to_numpy(a):
    """This target's array as a host array.

    Parameters
    ----------
    a : np.ndarray

    Returns
    -------
    np.ndarray
        ``a`` itself (no copy on this target: copy it before mutating).
    """
    return np.asarray(a)


def empty(shape, dtype):
    """An uninitialised array.

    Parameters
    ----------
    shape : tuple of int
    dtype : dtype

    Returns
    -------
    np.ndarray, C-contiguous
    """
    return np.empty(shape, dtype=dtype)


def zeros(shape, dtype):
    """An array of zeros.

    Parameters
    ----------
    shape : tuple of int
    dtype : dtype

    Returns
    -------
    np.ndarray, C-contiguous
    """
    return np.zeros(shape, dtype=dtype)


# --------------------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------------------


def _pad(x, padding):
    if padding == 0:
        return x
    p = padding
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))


def _im2col(x, kh, kw, stride, padding, groups):
    """Columns of every receptive field, grouped.

    Parameters
    ----------
    x : np.ndarray, shape (N, C, H, W)

    Returns
    -------
    cols : np.ndarray, shape (G, N * HO * WO, C/G * KH * KW)
        Row ``(n, ho, wo)`` of group ``g`` holds the window of channels
        ``g*C/G .. (g+1)*C/G - 1`` whose top-left corner is ``(ho*stride, wo*stride)`` of
        the padded input, flattened in (channel, kh, kw) order: the order of a
        weight row ``weight[f].ravel()``.
    ho, wo : int
        Output height and width.
    """
    n, c, _, _ = x.shape
    # (N, C, H', W', KH, KW) view of every window; no copy until the reshape below.
    windows = sliding_window_view(_pad(x, padding), (kh, kw), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]
    ho, wo = windows.shape[2], windows.shape[3]
    cg = c // groups
    windows = windows.reshape(n, groups, cg, ho, wo, kh, kw)
    cols = windows.transpose(1, 0, 3, 4, 2, 5, 6).reshape(groups, n * ho * wo, cg * kh * kw)
    return cols, ho, wo


def conv2d_forward(x, weight, bias, stride, padding, groups):
    """2-D cross-correlation (PyTorch's ``conv2d``), with stride, zero padding and groups.

    Parameters
    ----------
    x : np.ndarray, shape (N, C, H, W), float32 or float64
    weight : np.ndarray, shape (F, C/groups, KH, KW), same dtype
    bias : np.ndarray, shape (F,), or None
    stride : int
        Step between windows, the same along both axes.
    padding : int
        Zeros added on every side of each input plane.
    groups : int
        Channels and filters are split into ``groups`` independent groups; filter ``f``
        sees input channels ``g*C/G .. (g+1)*C/G - 1`` with ``g = f // (F/G)``.
        ``groups == C == F`` is a depthwise convolution.

    Returns
    -------
    y : np.ndarray, shape (N, F, HO, WO), dtype of ``x``
        ``HO = (H + 2*padding - KH) // stride + 1``, likewise ``WO``.

    Notes
    -----
    ``y[n, f, i, j] = bias[f] + sum_{c, a, b} weight[f, c, a, b] *
    xpad[n, g*C/G + c, i*stride + a, j*stride + b]``: im2col, then one batched matmul
    over the groups, ``(G, N*HO*WO, C/G*KH*KW) @ (G, C/G*KH*KW, F/G)``.
    """
    n = x.shape[0]
    f, _, kh, kw = weight.shape
    cols, ho, wo = _im2col(x, kh, kw, stride, padding, groups)
    w = weight.reshape(groups, f // groups, -1).transpose(0, 2, 1)
    out = np.matmul(cols, w)  # (G, N*HO*WO, F/G)
    y = out.reshape(groups, n, ho, wo, f // groups).transpose(1, 0, 4, 2, 3)
    y = y.reshape(n, f, ho, wo)
    if bias is not None:
        y = y + bias.reshape(1, f, 1, 1)
    return np.ascontiguousarray(y)


def conv2d_backward(dy, x, weight, stride, padding, groups, input_grad=True):
    """Gradients of :func:`conv2d_forward`.

    Parameters
    ----------
    dy : np.ndarray, shape (N, F, HO, WO)
        Upstream gradient.
    x : np.ndarray, shape (N, C, H, W)
        The forward input.
    weight : np.ndarray, shape (F, C/groups, KH, KW)
    stride, padding, groups : int
        As in the forward call.
    input_grad : bool, default True
        False skips ``dx`` (returned as None): a network's input needs no gradient.

    Returns
    -------
    dx : np.ndarray, shape (N, C, H, W), or None
    dweight : np.ndarray, shape (F, C/groups, KH, KW)
    dbias : np.ndarray, shape (F,)
        Always returned (the layer ignores it when it has no bias).

    Notes
    -----
    With ``cols`` the im2col matrix of the forward pass and ``D`` the upstream
    gradient as ``(G, N*HO*WO, F/G)``: ``dweight = D^T @ cols`` and
    ``dcols = D @ W``. ``dcols`` is scattered back (col2im) with one strided slice-add
    per kernel offset ``(a, b)``; windows overlap when ``stride < KH``, so the adds
    accumulate.
    """
    n, c, h, w_in = x.shape
    f, cg, kh, kw = weight.shape
    fg = f // groups
    ho, wo = dy.shape[2], dy.shape[3]
    cols, _, _ = _im2col(x, kh, kw, stride, padding, groups)
    d = dy.reshape(n, groups, fg, ho, wo).transpose(1, 0, 3, 4, 2).reshape(groups, -1, fg)
    wmat = weight.reshape(groups, fg, cg * kh * kw)

    dbias = dy.sum(axis=(0, 2, 3))
    dweight = np.matmul(d.transpose(0, 2, 1), cols).reshape(f, cg, kh, kw)
    if not input_grad:
        return None, dweight, dbias

    dcols = np.matmul(d, wmat).reshape(groups, n, ho, wo, cg, kh, kw)
    # -> (KH, KW, N, C, HO, WO): one (N, C, HO, WO) block per kernel offset.
    dcols = dcols.transpose(5, 6, 1, 0, 4, 2, 3).reshape(kh, kw, n, c, ho, wo)
    dxp = np.zeros((n, c, h + 2 * padding, w_in + 2 * padding), dtype=dy.dtype)
    for a in range(kh):
        for b in range(kw):
            dxp[:, :, a : a + stride * ho : stride, b : b + stride * wo : stride] += dcols[a, b]
    dx = dxp[:, :, padding : padding + h, padding : padding + w_in]
    return np.ascontiguousarray(dx), dweight, dbias


# --------------------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------------------


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
    return conv_pool_backward_calls(sys.modules[__name__], dy, x, weight, argmax, stride,
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


# --------------------------------------------------------------------------------------
# fully connected and maxout
# --------------------------------------------------------------------------------------


def linear_forward(x, weight, bias, relu=False):
    """Batched fully connected layer, ``y = x @ weight.T + bias``.

    Parameters
    ----------
    x : np.ndarray, shape (N, D)
    weight : np.ndarray, shape (M, D)
    bias : np.ndarray, shape (M,), or None
    relu : bool, default False
        Return :func:`relu_forward` of ``y`` instead, bit for bit (``nn.Sequential``
        asks for it for a ``Linear`` followed by a ``ReLU``).

    Returns
    -------
    y : np.ndarray, shape (N, M), dtype of ``x``
    """
    y = x @ weight.T
    if bias is not None:
        y += bias
    return relu_forward(y) if relu else y


def linear_backward(dy, x, weight, input_grad=True, relu_y=None):
    """Gradients of :func:`linear_forward`.

    Parameters
    ----------
    dy : np.ndarray, shape (N, M)
    x : np.ndarray, shape (N, D)
    weight : np.ndarray, shape (M, D)
    input_grad : bool, default True
        False skips ``dx`` (returned as None).
    relu_y : np.ndarray, shape (N, D), optional
        The output of a ReLU that ran just before this layer (``x`` itself, in a
        ``nn.Sequential``): ``dx`` then goes back through it too,
        ``relu_backward(dy @ weight, relu_y)``, bit for bit.

    Returns
    -------
    dx : np.ndarray, shape (N, D), or None
        ``dy @ weight``
    dweight : np.ndarray, shape (M, D)
        ``dy.T @ x``
    dbias : np.ndarray, shape (M,)
        ``dy.sum(0)``
    """
    dx = dy @ weight if input_grad else None
    if dx is not None and relu_y is not None:
        dx = relu_backward(dx, relu_y)
    return dx, dy.T @ x, dy.sum(axis=0)


def maxout_forward(x, weight, bias, pieces):
    """Maxout units: ``y[n, j] = max_k (x[n] @ weight[j*pieces + k] + bias[j*pieces + k])``.

    Parameters
    ----------
    x : np.ndarray, shape (N, D)
    weight : np.ndarray, shape (M * pieces, D)
        Row ``j * pieces + k`` is piece ``k`` of unit ``j``.
    bias : np.ndarray, shape (M * pieces,), or None
    pieces : int

    Returns
    -------
    y : np.ndarray, shape (N, M), dtype of ``x``
    argmax : np.ndarray, shape (N, M), int32
        The winning piece ``k`` of each unit (first on ties, NaN wins).
    """
    z = linear_forward(x, weight, bias)
    z = z.reshape(x.shape[0], weight.shape[0] // pieces, pieces)  # -1 fails on N = 0
    k = np.argmax(z, axis=-1)
    y = np.take_along_axis(z, k[..., None], axis=-1)[..., 0]
    return np.ascontiguousarray(y), k.astype(np.int32)


def maxout_backward(dy, x, weight, argmax, pieces):
    """Gradients of :func:`maxout_forward`.

    Parameters
    ----------
    dy : np.ndarray, shape (N, M)
    x : np.ndarray, shape (N, D)
    weight : np.ndarray, shape (M * pieces, D)
    argmax : np.ndarray, shape (N, M), int32
    pieces : int

    Returns
    -------
    dx : np.ndarray, shape (N, D)
    dweight : np.ndarray, shape (M * pieces, D)
    dbias : np.ndarray, shape (M * pieces,)

    Notes
    -----
    Only the winning piece of each unit gets the unit's gradient: ``dz`` (N, M*pieces)
    is ``dy`` placed at column ``j * pieces + argmax[n, j]``, then it is a linear
    layer's backward.
    """
    n, m = dy.shape
    dz = np.zeros((n, m, pieces), dtype=dy.dtype)
    np.put_along_axis(dz, argmax[..., None].astype(np.intp), dy[..., None], axis=-1)
    return linear_backward(dz.reshape(n, m * pieces), x, weight)


# --------------------------------------------------------------------------------------
# element-wise activations (any shape; dtype of the input)
# --------------------------------------------------------------------------------------


def relu_forward(x):
    """Rectified linear unit, ``max(x, 0)``.

    Parameters
    ----------
    x : np.ndarray, any shape, float32 or float64

    Returns
    -------
    y : np.ndarray, shape and dtype of ``x``
        NaN stays NaN.
    """
    return np.maximum(x, x.dtype.type(0))


def relu_backward(dy, y):
    """Gradient of :func:`relu_forward`.

    Parameters
    ----------
    dy : np.ndarray, any shape
        Upstream gradient.
    y : np.ndarray, shape of ``dy``
        The forward *output*.

    Returns
    -------
    dx : np.ndarray, shape and dtype of ``dy``
        ``dy`` where ``y > 0``, else 0 (0 at ``x == 0``, as PyTorch).
    """
    return np.where(y > 0, dy, dy.dtype.type(0))


def leaky_relu_forward(x, negative_slope):
    """Leaky ReLU.

    Parameters
    ----------
    x : np.ndarray, any shape, float32 or float64
    negative_slope : float

    Returns
    -------
    y : np.ndarray, shape and dtype of ``x``
        ``x`` where ``x > 0``, else ``negative_slope * x``.
    """
    return np.where(x > 0, x, x * x.dtype.type(negative_slope))


def leaky_relu_backward(dy, x, negative_slope):
    """Gradient of :func:`leaky_relu_forward`.

    Parameters
    ----------
    dy : np.ndarray, any shape
    x : np.ndarray, shape of ``dy``
        The forward *input*.
    negative_slope : float

    Returns
    -------
    dx : np.ndarray, shape and dtype of ``dy``
        ``dy`` where ``x > 0``, else ``negative_slope * dy``.
    """
    return np.where(x > 0, dy, dy * dy.dtype.type(negative_slope))


def sigmoid_forward(x):
    """Logistic sigmoid ``1 / (1 + exp(-x))``.

    Parameters
    ----------
    x : np.ndarray, any shape, float32 or float64

    Returns
    -------
    y : np.ndarray, shape and dtype of ``x``

    Notes
    -----
    With ``e = exp(-|x|)`` (never overflows): ``1 / (1 + e)`` for ``x >= 0`` and
    ``e / (1 + e)`` otherwise, so large ``|x|`` gives exactly 0 or 1, not NaN.
    """
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def sigmoid_backward(dy, y):
    """Gradient of :func:`sigmoid_forward`.

    Parameters
    ----------
    dy : np.ndarray, any shape
    y : np.ndarray, shape of ``dy``
        The forward *output*.

    Returns
    -------
    dx : np.ndarray, shape and dtype of ``dy``
        ``dy * y * (1 - y)``.
    """
    return dy * y * (1 - y)


def tanh_forward(x):
    """Hyperbolic tangent.

    Parameters
    ----------
    x : np.ndarray, any shape, float32 or float64

    Returns
    -------
    y : np.ndarray, shape and dtype of ``x``
    """
    return np.tanh(x)


def tanh_backward(dy, y):
    """Gradient of :func:`tanh_forward`.

    Parameters
    ----------
    dy : np.ndarray, any shape
    y : np.ndarray, shape of ``dy``
        The forward *output*.

    Returns
    -------
    dx : np.ndarray, shape and dtype of ``dy``
        ``dy * (1 - y**2)``.
    """
    return dy * (1 - y * y)


def elu_forward(x, alpha):
    """Exponential linear unit.

    Parameters
    ----------
    x : np.ndarray, any shape, float32 or float64
    alpha : float

    Returns
    -------
    y : np.ndarray, shape and dtype of ``x``
        ``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)`` (``expm1`` of ``min(x, 0)``,
        so large positive ``x`` does not overflow in the unused branch).
    """
    neg = x.dtype.type(alpha) * np.expm1(np.minimum(x, x.dtype.type(0)))
    return np.where(x > 0, x, neg)


def elu_backward(dy, x, y, alpha):
    """Gradient of :func:`elu_forward`.

    Parameters
    ----------
    dy : np.ndarray, any shape
    x, y : np.ndarray, shape of ``dy``
        The forward input and output.
    alpha : float

    Returns
    -------
    dx : np.ndarray, shape and dtype of ``dy``
        ``dy`` where ``x > 0``, else ``dy * alpha * exp(x)``, as PyTorch: from ``x``, since
        ``y + alpha`` (the same in exact arithmetic) cancels once ``exp(x)`` falls below
        ``alpha``'s rounding (float32: 4e-4 off at ``x`` = -10, 44% at -17, 0 at -20).
    """
    # exp of x <= 0 only: no overflow warning from the positive side np.where drops
    return np.where(x > 0, dy, dy * dy.dtype.type(alpha) * np.exp(np.minimum(x, x.dtype.type(0))))


# --------------------------------------------------------------------------------------
# dropout
# --------------------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def dropout_uniform(seed, size):
    """The uniform numbers in [0, 1) behind dropout's mask: splitmix64 of the index.

    Parameters
    ----------
    seed : int
        In ``[0, 2**64)``.
    size : int
        How many numbers (element ``i`` belongs to flat index ``i``).

    Returns
    -------
    np.ndarray, shape (size,), float64
    """
    i = np.arange(1, size + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + i * _GOLDEN  # uint64 arithmetic wraps modulo 2**64
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def dropout_forward(x, p, seed):
    """Inverted dropout with a counter-based mask every target reproduces exactly.

    Parameters
    ----------
    x : np.ndarray, any shape, float32 or float64
    p : float
        Probability of dropping an element, in ``[0, 1]``.
    seed : int
        In ``[0, 2**63)``; the same seed gives the same mask on every target.

    Returns
    -------
    y : np.ndarray, shape of ``x``
        ``x * mask``.
    mask : np.ndarray, shape of ``x``, dtype of ``x``
        ``1 / (1 - p)`` where kept, 0 where dropped (all 0 when ``p == 1``).

    Notes
    -----
    Element ``i`` of ``x`` in C order (flat index, from 0) is kept when ``u >= p``,
    with ``u`` from splitmix64 on uint64 arithmetic (wrapping modulo 2**64)::

        z = seed + (i + 1) * 0x9E3779B97F4A7C15
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB
        z = z ^ (z >> 31)
        u = (z >> 11) * 2.0**-53          # float64 in [0, 1)

    The mask depends only on ``(seed, i)``, not on thread layout, so the cpu and
    cuda kernels compute each element independently and agree bit for bit.
    """
    u = dropout_uniform(seed, x.size).reshape(x.shape)
    scale = 0.0 if p >= 1 else 1.0 / (1.0 - p)
    mask = np.where(u >= p, scale, 0.0).astype(x.dtype)
    return x * mask, mask


def dropout_backward(dy, mask):
    """Gradient of :func:`dropout_forward`.

    Parameters
    ----------
    dy : np.ndarray, any shape
    mask : np.ndarray, shape and dtype of ``dy``
        From :func:`dropout_forward`.

    Returns
    -------
    dx : np.ndarray, shape and dtype of ``dy``
        ``dy * mask``.
    """
    return dy * mask


# --------------------------------------------------------------------------------------
# batch normalisation
# --------------------------------------------------------------------------------------


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
        n = x.size // x.shape[1]
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
    n = x.dtype.type(x.size // x.shape[1])
    c = (1, -1, 1, 1)
    xhat = (x - mean.reshape(c)) * invstd.reshape(c)
    dbias = dy.sum(axis=(0, 2, 3))
    dweight = (dy * xhat).sum(axis=(0, 2, 3))
    dx = (weight * invstd).reshape(c) * (
        dy - (dbias / n).reshape(c) - xhat * (dweight / n).reshape(c)
    )
    return dx, dweight, dbias


# --------------------------------------------------------------------------------------
# losses: (Python float, gradient), mean reduction as PyTorch's default
# --------------------------------------------------------------------------------------


def softmax_cross_entropy(scores, labels):
    """Softmax cross-entropy, ``mean_n(-log softmax(scores[n])[labels[n]])``.

    Parameters
    ----------
    scores : np.ndarray, shape (N, C)
    labels : np.ndarray, shape (N,), integer in ``[0, C)``

    Returns
    -------
    loss : float
    dscores : np.ndarray, shape (N, C), dtype of ``scores``
        ``(softmax(scores) - onehot(labels)) / N``.

    Notes
    -----
    Computed through log-sum-exp of ``scores - max(scores)``, so no ``exp`` overflows.
    """
    n = scores.shape[0]
    rows = np.arange(n)
    shifted = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    log_probs = shifted - np.log(total)
    loss = -log_probs[rows, labels].mean()
    dscores = e / total
    dscores[rows, labels] -= 1
    dscores /= n
    return float(loss), dscores


def multiclass_hinge(scores, labels, margin):
    """Multiclass SVM loss, ``mean_n sum_{j != y_n} max(0, s_j - s_{y_n} + margin)``.

    Parameters
    ----------
    scores : np.ndarray, shape (N, C)
    labels : np.ndarray, shape (N,), integer in ``[0, C)``
    margin : float

    Returns
    -------
    loss : float
        Mean over the batch of the sum over classes (PyTorch's ``MultiMarginLoss``
        also divides by ``C``; this is the cs231n SVM loss).
    dscores : np.ndarray, shape (N, C), dtype of ``scores``
        ``1/N`` at each ``j != y`` with a positive margin, minus their count at ``y``.
    """
    n = scores.shape[0]
    rows = np.arange(n)
    correct = scores[rows, labels][:, None]
    margins = scores - correct + scores.dtype.type(margin)
    margins[rows, labels] = 0
    active = margins > 0
    loss = np.where(active, margins, 0).sum() / n
    dscores = active.astype(scores.dtype)
    dscores[rows, labels] = -active.sum(axis=1)
    dscores /= n
    return float(loss), dscores


def bce_with_logits(scores, targets):
    """Sigmoid + binary cross-entropy per element, mean over all elements.

    Parameters
    ----------
    scores : np.ndarray, any shape
        Logits.
    targets : np.ndarray, shape of ``scores``
        Probabilities in ``[0, 1]``.

    Returns
    -------
    loss : float
        ``mean(max(s, 0) - s * t + log1p(exp(-|s|)))``, which equals
        ``-t log sigmoid(s) - (1 - t) log(1 - sigmoid(s))`` without overflow.
    dscores : np.ndarray, shape of ``scores``
        ``(sigmoid(s) - t) / scores.size``.
    """
    t = targets.astype(scores.dtype, copy=False)
    loss = np.maximum(scores, 0) - scores * t + np.log1p(np.exp(-np.abs(scores)))
    dscores = (sigmoid_forward(scores) - t) / scores.dtype.type(scores.size)
    return float(loss.mean()), dscores


def mse(pred, target):
    """Mean squared error over all elements.

    Parameters
    ----------
    pred, target : np.ndarray, same shape

    Returns
    -------
    loss : float
        ``mean((pred - target)**2)``
    dpred : np.ndarray, shape of ``pred``
        ``2 * (pred - target) / pred.size``
    """
    diff = pred - target.astype(pred.dtype, copy=False)
    return float(np.mean(diff * diff)), diff * pred.dtype.type(2.0 / pred.size)


def l1(pred, target):
    """Mean absolute error over all elements.

    Parameters
    ----------
    pred, target : np.ndarray, same shape

    Returns
    -------
    loss : float
        ``mean(|pred - target|)``
    dpred : np.ndarray, shape of ``pred``
        ``sign(pred - target) / pred.size`` (0 where they are equal, as PyTorch).
    """
    diff = pred - target.astype(pred.dtype, copy=False)
    return float(np.mean(np.abs(diff))), np.sign(diff) * pred.dtype.type(1.0 / pred.size)


# --------------------------------------------------------------------------------------
# optimizer updates (in place)
# --------------------------------------------------------------------------------------


def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """One SGD step in place, as ``torch.optim.SGD`` (no dampening).

    Parameters
    ----------
    param : np.ndarray, any shape
        Updated in place.
    grad : np.ndarray, shape of ``param``
        Not modified.
    velocity : np.ndarray, shape of ``param``, or None
        Momentum buffer, updated in place; unused (may be None) when ``momentum == 0``.
    lr, momentum, weight_decay : float
    nesterov : bool

    Notes
    -----
    ``g = grad + weight_decay * param``; with momentum ``v = momentum * v + g`` and the
    step is ``g + momentum * v`` (Nesterov) or ``v``; ``param -= lr * step``. A zero
    initial ``v`` makes the first step ``v = g``, PyTorch's first step.
    """
    g = grad + weight_decay * param if weight_decay != 0 else grad
    if momentum != 0:
        velocity *= momentum
        velocity += g
        g = g + momentum * velocity if nesterov else velocity
    param -= lr * g


def sgd_update_many(params, grads, velocities, lr, momentum, nesterov, weight_decay):
    """:func:`sgd_update` of every parameter of an optimizer step.

    Parameters
    ----------
    params, grads : sequences of np.ndarray, pairwise of one shape
        ``params[i]`` is updated in place with ``grads[i]``.
    velocities : sequence of np.ndarray (or of None when ``momentum == 0``)
        ``velocities[i]`` is the momentum buffer of ``params[i]``, updated in place.
    lr, momentum, weight_decay : float
    nesterov : bool

    Notes
    -----
    Every element gets exactly :func:`sgd_update`'s arithmetic. The targets that pay
    per launch fuse the updates (the cuda target: one kernel for up to 16 tensors).
    """
    for param, grad, velocity in zip(params, grads, velocities):
        sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay)


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """One Adam step in place, as ``torch.optim.Adam`` (L2 weight decay, not AdamW).

    Parameters
    ----------
    param : np.ndarray, any shape
        Updated in place.
    grad : np.ndarray, shape of ``param``
        Not modified.
    m, v : np.ndarray, shape of ``param``
        First and second moment estimates, updated in place (zeros before step 1).
    lr, beta1, beta2, eps, weight_decay : float
    step : int
        Number of this step, starting at 1 (for the bias corrections).

    Notes
    -----
    ``g = grad + weight_decay * param``; ``m = beta1*m + (1-beta1)*g``;
    ``v = beta2*v + (1-beta2)*g**2``;
    ``param -= lr / (1 - beta1**step) * m / (sqrt(v) / sqrt(1 - beta2**step) + eps)``.
    """
    g = grad + weight_decay * param if weight_decay != 0 else grad
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * (g * g)
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = np.sqrt(1 - beta2**step)
    denom = np.sqrt(v) / param.dtype.type(bias_correction2_sqrt) + param.dtype.type(eps)
    param -= param.dtype.type(lr / bias_correction1) * m / denom


def adam_update_many(params, grads, ms, vs, lr, beta1, beta2, eps, weight_decay, steps):
    """:func:`adam_update` of every parameter of an optimizer step.

    Parameters
    ----------
    params, grads, ms, vs : sequences of np.ndarray, of one shape per index
        ``params[i]``, ``ms[i]`` and ``vs[i]`` are updated in place.
    lr, beta1, beta2, eps, weight_decay : float
    steps : sequence of int
        ``steps[i]`` is the number of this step of ``params[i]``, from 1.

    Notes
    -----
    Every element gets exactly :func:`adam_update`'s arithmetic; the cuda target
    fuses the updates of tensors that share a dtype and a step count.
    """
    for param, grad, m, v, step in zip(params, grads, ms, vs, steps):
        adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step)

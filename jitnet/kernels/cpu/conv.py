"""Convolution on the cpu target: the contract's four functions, and which kernel
each call takes.

Two register-blocked micro-kernel layouts, each chosen where it fills more vector
lanes (measured tables in the wrappers' docstrings; the tiles in :mod:`._tiles`):

- Row vectors (stride 1, :mod:`.conv_rows`): vectors run along an output row, on
  zero-padded NCHW planes, so nothing is transposed. Forward and input gradient
  tile 8 output channels x 2 rows x 16 columns (``_conv2d_rows``); the weight
  gradient tiles 4 output channels x 5 (c, kh, kw) triples and sums the lanes at
  the end (``_conv2d_weight_rows``); a 3x3 kernel's, 2 output channels x one input
  channel's 9 taps, two rows at a time (``_conv2d_weight_rows3x3``).
- Channel vectors (:mod:`.conv_tiles`): images are channel-last and zero-padded,
  ``xh[n, g, h, w * Cg + c]`` (group-major, NHWC within a group), so that one
  kernel row of one output pixel, ``(kw, c)``, is a contiguous span of ``KW * Cg``
  numbers whatever the stride. Weights are packed as ``wpk[g, fb, kh, kw * Cg + c,
  j]`` with ``j`` a block of ``_FB`` output channels (zero-padded). The tile is 8
  output pixels x 32 output channels (``_conv2d_tiles``, ``_conv2d_weight_tiles``):
  strided convolutions, narrow planes, and weight gradients with much reduction
  per pixel.

Behind a 2x2 max pooling, the gradients come from the pooling's windows instead
(:mod:`.conv_pooled`): the input gradient skips the zeros of ``dy``, the weight
gradient sums a quarter of the dense kernel's multiply-adds.

The input gradient is a forward convolution of the padded ``dy`` with the flipped
kernel, so it takes the forward's kernels.

Two kinds of convolution fill neither layout's lanes and have their own route: a
depthwise one (:mod:`.conv_depthwise`, vectors along flat planes) and, where it
pays, a strided one, run as a stride-1 convolution of its input's phases
(:mod:`.conv_phases`, :func:`_phases_pay`).
"""

import sys

import numpy as np

from .. import conv_pool_backward_calls
from ._common import _square
from ._tiles import _FB, _PIX, _blocks, _chunks, _conv_out_size
from .activations import relu_forward
from .arrays import _empty, _zeros
from .conv_depthwise import _depthwise_forward, _depthwise_input_grad, _depthwise_weight_grad
from .conv_phases import (
    _from_phase,
    _from_phases,
    _phase_shape,
    _phase_weight,
    _phase_weight_grad,
    _phases,
    _sub_kernel,
)
from .conv_pooled import (
    _conv_weight_grad_pooled,
    _pooled_weight_grad_pays,
    _sparse_dy,
    _sparse_input_grad,
    _sparse_input_grad_pays,
)
from .conv_rows import _conv_bias_grad, _conv_rows, _conv_weight_grad_rows, _rows_pay
from .conv_tiles import (
    _conv2d_weight_channel_tiles,
    _conv2d_weight_tiles,
    _conv_channel_last,
    _conv_forward_core,
    _to_channel_blocks,
)
from .maxpool import _route_to_argmax, maxpool2d_forward


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
    (no im2col buffer): for stride 1 on wide enough rows by :func:`.conv_rows._conv2d_rows`
    on zero-padded planes, otherwise by :func:`.conv_tiles._conv2d_tiles` on a channel-last
    padded copy (see :func:`_rows_pay`).
    """
    x, weight, b, s, p, groups, out_shape = _conv_arguments(x, weight, bias, stride, padding,
                                                           groups)
    if _depthwise(weight.shape, groups):
        return _depthwise_forward(x, weight, b, s, p)
    if s == 1 and _rows_pay(out_shape[1] // groups, out_shape[3]):
        return _conv_rows(x, weight, b, out_shape, p, p, groups)
    if s > 1 and _phases_pay("forward", weight.shape, s):
        xp = _phases(x, s, p, weight.shape[2], weight.shape[3], out_shape[2], out_shape[3])
        return conv2d_forward(xp, _phase_weight(weight, s), b, 1, 0, groups)
    h, w = x.shape[2], x.shape[3]
    xh = _conv_channel_last(x, groups, p, p, h + 2 * p, w + 2 * p)
    y = _empty(out_shape, dtype=x.dtype)
    _conv_forward_core(xh, weight, b, y, s, groups)
    return y


def _conv_arguments(x, weight, bias, stride, padding, groups):
    """The forward's arguments as its kernels take them, and its output shape.

    Returns ``(x, weight, bias, stride, padding, groups, (N, F, HO, WO))``: C-contiguous
    arrays of x's dtype (a zero bias for None), and plain ints.
    """
    s = _square("stride", stride)
    p = _square("padding", padding)
    x = np.ascontiguousarray(x)
    dtype = x.dtype
    n, _, h, w = x.shape
    f, _, kh, kw = weight.shape
    out_shape = (n, f, _conv_out_size(h, kh, s, p), _conv_out_size(w, kw, s, p))
    b = _zeros(f, dtype=dtype) if bias is None else np.ascontiguousarray(bias, dtype=dtype)
    weight = np.ascontiguousarray(weight, dtype=dtype)
    return x, weight, b, s, p, int(groups), out_shape


def conv2d_maxpool2d_forward(x, weight, bias, stride, padding, groups, pool_size, pool_stride,
                             relu=False):
    """:func:`conv2d_forward` then :func:`maxpool2d_forward` (then, with ``relu``,
    :func:`relu_forward` of the pooling), equal bit for bit.

    Returns ``(y, argmax)`` of the pooling. A stride-1 convolution on the row kernel
    with 2x2 pooling (stride 2) pools in the kernel's epilogue (:func:`.conv_rows._conv2d_rows`
    with ``pooled``): the convolution's output, the largest array of a first layer,
    is neither written nor read back. At batch 64, two threads: conv1
    and its pooling 1.12 -> 0.87 ms, conv2 and its pooling 2.66-2.85 -> 2.40-2.54 ms.
    The ReLU rides in the same epilogue. Any other case runs the kernels in turn.
    """
    x, weight, b, s, p, groups, out_shape = _conv_arguments(x, weight, bias, stride, padding,
                                                           groups)
    pool_2x2 = int(pool_size) == int(pool_stride) == 2
    if (s == 1 and pool_2x2 and not _depthwise(weight.shape, groups)
            and _rows_pay(out_shape[1] // groups, out_shape[3])):
        return _conv_rows(x, weight, b, out_shape, p, p, groups, pool=True, relu=relu)
    y, argmax = maxpool2d_forward(conv2d_forward(x, weight, b, s, p, groups), pool_size,
                                  pool_stride)
    return (relu_forward(y) if relu else y), argmax


def conv2d_maxpool2d_backward(dy, x, weight, argmax, stride, padding, groups, pool_size,
                              pool_stride, input_grad=True, relu_y=None):
    """Gradients of :func:`conv2d_maxpool2d_forward`: :func:`.maxpool.maxpool2d_backward` (with
    ``relu_y``, :func:`.maxpool.maxpool2d_relu_backward`) then :func:`conv2d_backward`.

    Where the pooling is 2x2 (stride 2) and the convolution a stride-1 one of one
    group on a finite input with few channels (``KW * C <= 16``: a first layer) or
    channels in whole blocks of ``_FB``, the weight and bias gradients are summed
    from the pooling's windows (:func:`.conv_pooled._conv2d_weight_pooled`,
    :func:`.conv_pooled._conv2d_weight_pooled_taps`), and the convolution's dense ``dy`` is not
    written unless ``dx`` needs it. Those two gradients then differ from the calls'
    in the last bits. Where the sparse input gradient applies (channels in whole
    blocks, taps in whole tiles, a finite weight), ``dx`` comes from the windows too
    (:func:`.conv_pooled._conv2d_input_sparse` scatters them), bit for bit the calls' ``dx``, and
    no dense ``dy`` is written at all. The reference net at batch 64 (2-core Zen 5),
    the pooling's backward and the weight gradient: first layer 0.69 -> 0.53 ms with
    caches warm, 0.89 -> 0.57 with them flushed; second layer 1.47 -> 0.79; the
    second layer's input gradient from the windows: the step 0.969.
    """
    s = _square("stride", stride)
    p = _square("padding", padding)
    groups = int(groups)
    x = np.ascontiguousarray(x)
    dy = np.ascontiguousarray(dy, dtype=x.dtype)
    weight = np.ascontiguousarray(weight, dtype=x.dtype)
    argmax = np.ascontiguousarray(argmax, dtype=np.int32)
    if relu_y is not None:
        relu_y = np.ascontiguousarray(relu_y, dtype=x.dtype)
    n, c, h, w = x.shape
    f, _, kh, kw = weight.shape
    conv_shape = (n, f, _conv_out_size(h, kh, s, p), _conv_out_size(w, kw, s, p))
    if not _pooled_weight_grad_pays(x, weight, s, groups, pool_size, pool_stride):
        return conv_pool_backward_calls(sys.modules[__package__], dy, x, weight, argmax, s, p,
                                        groups, pool_size, pool_stride, input_grad, relu_y)
    dx = None
    if input_grad and _sparse_input_grad_pays(weight, s, groups, c):
        # each window's gradient straight to its pixel, no dense dy
        dx = _sparse_input_grad(None, weight, x.shape, p, (dy, relu_y, argmax))
    elif input_grad:
        dconv = _route_to_argmax(dy, argmax, conv_shape, relu_y, pool_size, pool_stride)
        dx = _conv_input_grad(dconv, weight, x.shape, s, p, groups)
    dweight, dbias = _conv_weight_grad_pooled(dy, relu_y, argmax, x, weight.shape, p,
                                              conv_shape)
    return dx, dweight, dbias


def conv2d_backward(dy, x, weight, stride, padding, groups, input_grad=True):
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
    input_grad : bool, default True
        False skips ``dx`` (returned as None): a network's input needs no gradient.

    Returns
    -------
    dx : ndarray, (N, C, H, W), or None
    dweight : ndarray, (F, C // groups, KH, KW)
    dbias : ndarray, (F,)

    Notes
    -----
    ``dx`` is a forward convolution of ``dy`` dilated by the stride (zeros
    between rows and columns) and padded by ``K - 1 - padding``, with the
    kernel turned by 180 degrees and its in/out channels swapped within each
    group; it runs on the forward micro-kernel. ``dweight`` has its own
    micro-kernel (:func:`.conv_tiles._conv2d_weight_tiles`).
    """
    s = _square("stride", stride)
    p = _square("padding", padding)
    groups = int(groups)
    x = np.ascontiguousarray(x)
    dy = np.ascontiguousarray(dy, dtype=x.dtype)
    weight = np.ascontiguousarray(weight, dtype=x.dtype)
    dx = _conv_input_grad(dy, weight, x.shape, s, p, groups) if input_grad else None
    dbias = _empty(dy.shape[1], dtype=x.dtype)
    dweight = _conv_weight_grad(dy, x, weight.shape, s, p, groups, dbias)
    return dx, dweight, dbias


def _conv_input_grad(dy, weight, x_shape, s, p, groups):
    """``dx`` (N, C, H, W): the dilated, padded ``dy`` correlated with the turned kernel,
    or, for a ``dy`` that is mostly zeros, the sum over its nonzeros
    (:func:`.conv_pooled._conv2d_input_sparse`)."""
    dtype = dy.dtype
    n, c, h, w = x_shape
    f, cg, kh, kw = weight.shape
    if _depthwise(weight.shape, groups):
        return _depthwise_input_grad(dy, weight, x_shape, s, p)
    if s > 1 and _sub_pixel_pays(weight.shape, s, groups):
        return _sub_pixel_input_grad(dy, weight, x_shape, s, p, groups)
    if s > 1 and _phases_pay("input", weight.shape, s):
        sh, sw, kh2, kw2 = _phase_shape(kh, kw, s)
        xp_shape = (n, c * sh * sw, dy.shape[2] + kh2 - 1, dy.shape[3] + kw2 - 1)
        dxp = _conv_input_grad(dy, _phase_weight(weight, s), xp_shape, 1, 0, groups)
        dx = _empty(x_shape, dtype=dtype)
        _from_phases(dxp, dx, s, p, sh, sw)
        return dx
    if _sparse_input_grad_pays(weight, s, groups, c) and _sparse_dy(dy):
        return _sparse_input_grad(dy, weight, x_shape, p)
    fg = f // groups
    # In/out channels swapped within each group: wt[g*Cg + c, fg] = weight[g*Fg + fg, c].
    wt = np.ascontiguousarray(
        weight.reshape(groups, fg, cg, kh, kw).transpose(0, 2, 1, 3, 4).reshape(c, fg, kh, kw)
    )
    bias = _zeros(c, dtype=dtype)
    if s == 1 and _rows_pay(cg, w):
        return _conv_rows(dy, wt, bias, x_shape, kh - 1 - p, kw - 1 - p, groups, flip=True)
    dyd = _conv_channel_last(dy, groups, kh - 1 - p, kw - 1 - p, h + kh - 1, w + kw - 1, s, s)
    dx = _empty((n, c, h, w), dtype=dtype)
    _conv_forward_core(dyd, wt, bias, dx, 1, groups, flip=True)
    return dx


def _sub_pixel_input_grad(dy, weight, x_shape, s, p, groups):
    """``dx`` (N, C, H, W) of a stride-``s`` convolution as ``s * s`` stride-1 ones, one
    for each phase of ``dx``.

    Row ``h`` of ``x`` (``h + p`` of the padded input) is read by tap ``a = (h + p) % s
    + t * s`` of output row ``i = (h + p) // s - t``, for each ``t``: by the taps of
    one phase, ``ra = (h + p) % s``, alone (likewise the columns). So the pixels of
    phase ``(ra, rb)`` get the input gradient of a stride-1 convolution with that
    phase's ``T x U`` taps (:func:`.conv_phases._sub_kernel`), on an input ``T - 1``
    rows and ``U - 1`` columns larger than ``dy``, at ``((h + p) // s, (w + p) // s)``
    (:func:`.conv_phases._from_phase`). No multiply-add meets a zero: neither a dilated
    ``dy``'s nor a zero tap's.
    """
    n, c = x_shape[0], x_shape[1]
    ho, wo = dy.shape[2], dy.shape[3]
    dx = _empty(x_shape, dtype=dy.dtype)
    for ra in range(s):
        for rb in range(s):
            sub = _sub_kernel(weight, s, ra, rb)
            if sub.size:
                shape = (n, c, ho + sub.shape[2] - 1, wo + sub.shape[3] - 1)
                dxs = _conv_input_grad(dy, sub, shape, 1, 0, groups)
            else:  # no tap in this phase (a kernel smaller than the stride)
                dxs = np.empty((n, c, 0, 0), dtype=dy.dtype)
            _from_phase(dxs, dx, s, p, ra, rb)
    return dx


def _conv_weight_grad(dy, x, weight_shape, s, p, groups, dbias=None):
    """``dweight`` (F, C/G, KH, KW) on the kernel that suits the shape.

    ``dbias`` (F,), when given, is filled with the bias gradient too: the row kernel
    folds it into its weight-gradient tiles where it can, the input-channel tiles
    sum ``dy``'s planes as they go, and only the channel-block tiles leave it to a
    pass of its own (:func:`_conv_bias_grad`).

    The row kernel wins where each output sees little reduction per pixel (a first
    layer, 1x1, depthwise: no copy, no wasted lanes), the tiles where it sees much
    (measured at batch 64, 2 threads: Cg * K * K = 27: 1.1 vs 3.3 ms; depthwise
    32 channels: 1.9 vs 41 ms; 144 on 16x16: 2.2 vs 1.5 ms; 288: 8.4 vs 3.9 ms).
    With whole blocks of 32 input channels the tiles take their vectors from ``x``
    and leave ``dy`` in place (the reference net's second layer: 3.0 vs 4.0 ms).
    Without them, the tiles copy ``dy`` into blocks of ``_FB`` output channels, and
    the row kernel wins on fewer outputs or planes 32 wide (tiles vs rows, ms: 16 ->
    16 on 32x32 2.56 vs 1.03, 16 on 16x16 0.58 vs 0.34; 16 -> 64 on 32x32 6.6 vs
    4.3; 3 -> 32, 5x5, on 32x32 2.06 vs 1.29; but 48 -> 96 on 8x8 1.16 vs 3.31, 8
    -> 64, 5x5, on 16x16 1.47 vs 1.67).
    """
    f, cg, kh, kw = weight_shape
    fg = f // groups
    if s > 1 and _depthwise(weight_shape, groups):  # at stride 1 the row kernel is faster
        return _depthwise_weight_grad(dy, x, weight_shape, s, p, dbias)
    if s > 1 and _phases_pay("weight", weight_shape, s):
        sh, sw, kh2, kw2 = _phase_shape(kh, kw, s)
        xp = _phases(x, s, p, kh, kw, dy.shape[2], dy.shape[3])
        dweight = _conv_weight_grad(dy, xp, (f, cg * sh * sw, kh2, kw2), 1, 0, groups, dbias)
        return _phase_weight_grad(dweight, weight_shape, s)
    if s == 1 and (cg * kh * kw <= 72 or fg < 16
                   or (cg % _FB and (fg < _FB or dy.shape[3] >= 32))):
        return _conv_weight_grad_rows(dy, x, weight_shape, p, groups, dbias)
    n, _, h, w = x.shape
    ho, wo = dy.shape[2], dy.shape[3]
    xh = _conv_channel_last(x, groups, p, p, h + 2 * p, w + 2 * p)
    dweight = _empty(weight_shape, dtype=x.dtype)
    if cg % _FB == 0:
        n_ft = groups * -(-fg // _PIX)
        n_tiles = n_ft * kh * kw * (cg // _FB)
        n_chunks = _chunks(n_tiles)
        part = _zeros((n_tiles, _PIX, _FB), dtype=x.dtype)
        bias_part = _zeros((n_ft if dbias is not None else 0, _PIX), dtype=x.dtype)
        _conv2d_weight_channel_tiles(dy, xh, dweight, s, n_chunks, part,
                                     np.empty(0, dtype=x.dtype) if dbias is None else dbias,
                                     bias_part)
        return dweight
    if dbias is not None:
        _conv_bias_grad(dy, dbias)
    dyh = _zeros((n, groups, _blocks(fg), ho, wo, _FB), dtype=x.dtype)
    _to_channel_blocks(dy, dyh)
    n_tiles = groups * _blocks(fg) * -(-(cg * kh * kw) // _PIX)
    n_chunks = _chunks(n_tiles)
    part = _zeros((n_tiles, _PIX, _FB), dtype=x.dtype)
    _conv2d_weight_tiles(dyh, xh, dweight, s, n_chunks, part)
    return dweight


def _depthwise(weight_shape, groups):
    """True for a depthwise convolution (one input channel per group), which
    :mod:`.conv_depthwise` runs: with one input channel per output channel, the other
    kernels' channel tiles leave most lanes idle. ``benchmarks/bench_conv.py``, batch
    64, 2 threads (2-core Zen 5), 3x3, ms before and after: 64 channels on 16x16,
    forward 0.81 -> 0.29, backward 1.22 -> 0.80 (its weight gradient stays on the row
    kernel, as fast); stride 2, forward 1.63 -> 0.26, backward 9.73 -> 1.01, weight
    gradient alone 4.02 -> 0.34; 32 channels on 32x32, forward 1.30 -> 0.43, backward
    2.47 -> 1.54."""
    return weight_shape[1] == 1 and groups > 1


def _phases_pay(kind, weight_shape, s):
    """True when a stride-``s`` convolution's ``kind`` of work ("forward", "input" or
    "weight" gradient) pays to run as a stride-1 one on its input's phases
    (:mod:`.conv_phases`).

    The phases fill the row kernel's vectors where the direct kernels' channel tiles
    waste lanes on few channels or short sums, and the input gradient's tiles also
    multiply the zeros of the dilated ``dy`` (three in four at stride 2); against
    that, the phase kernel's zero taps (3x3, stride 2: 16 multiply-adds for 9; none
    for 1x1, 2x2 or 4x4). Measured at batch 64, 2 threads (2-core Zen 5), direct vs
    phases, ms (``benchmarks/bench_conv.py`` has more):

    ======================  ===========  =============  ===========
    C -> F, plane, kernel    forward      input grad     weight grad
    ======================  ===========  =============  ===========
    3 -> 16, 64x64, 3x3      0.76 / 0.60  6.46 / 0.98   2.62 / 1.08
    3 -> 64, 64x64, 7x7      4.27 / 4.38  114.7 / 14.8  9.79 / 9.48
    8 -> 16, 32x32, 3x3      0.50 / 0.52  1.65 / 0.83   1.05 / 0.68
    16 -> 32, 32x32, 3x3     0.68 / 1.10  3.19 / 2.14   1.87 / 2.23
    32 -> 64, 32x32, 3x3     2.72 / 3.68  6.73 / 8.29   3.49 / 5.94
    32 -> 64, 32x32, 5x5     5.00 / 7.96  15.3 / 12.4   4.80 / 8.70
    16 -> 32, 32x32, 1x1     0.40 / 0.27  0.81 / 0.34   0.50 / 0.24
    64 -> 128, 16x16, 1x1    0.76 / 0.54  1.04 / 0.66   0.44 / 1.04
    ======================  ===========  =============  ===========
    """
    f, cg, kh, kw = weight_shape
    sh, sw, kh2, kw2 = _phase_shape(kh, kw, s)
    taps = sh * sw * kh2 * kw2 / (kh * kw)  # the phases' multiply-adds per direct one
    if kind == "forward":  # the channel tiles fill when each output sums enough
        return taps == 1 or cg * kh * kw <= 32
    if kind == "input":
        return cg <= 16 or taps <= 1.5
    return cg <= 8 or (taps == 1 and cg <= 16)


def _sub_pixel_pays(weight_shape, s, groups):
    """True when a stride-``s`` convolution's input gradient pays to run one phase of
    ``dx`` at a time (:func:`_sub_pixel_input_grad`) rather than on the input's phases
    or directly.

    It does the fewest multiply-adds, but in ``s * s`` calls on planes ``s`` times
    narrower, whose sums (``F`` times a phase's taps) are short: it wins where the
    kernel has zero taps in the phases (3x3 at stride 2), with channels enough to fill
    the row kernel's tiles (8-16) or many outputs to sum. Batch 64, 2 threads (2-core
    Zen 5), 3x3/2, direct / phases / one phase at a time, best of 12 rounds, ms: 8 -> 16
    on 32x32 1.59 / 0.83 / 0.68; 16 -> 32 on 32x32 3.09 / 2.10 / 1.52; 64 -> 128 on
    16x16 5.63 / 7.27 / 4.30; 32 -> 64 on 32x32 6.10 / 6.38 / 6.11; but 32 -> 32 on 16x16
    0.84 / 1.36 / 0.99, 128 -> 128 on 8x8 2.88 / 4.82 / 2.98. Few channels (3 -> 32 on
    32x32: 2.89 / 0.59 / 0.79), groups (two of 32 -> 32 on 32x32: 7.11 / 11.06 / 10.11)
    and kernels with no or few zero taps in the phases (1x1, 3x3/3, 5x5/2) go elsewhere.
    """
    f, cg, kh, kw = weight_shape
    sh, sw, kh2, kw2 = _phase_shape(kh, kw, s)
    zero_taps = sh * sw * kh2 * kw2 > 1.5 * kh * kw
    return groups == 1 and zero_taps and (8 <= cg <= 16 or f >= 2 * cg >= 16)

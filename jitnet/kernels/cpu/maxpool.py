"""Max pooling on the cpu target: the forward records each window's argmax (a flat
index ``h * W + w`` into the input plane), the backward routes each gradient to it.
2x2 windows of stride 2, the reference net's, take kernels of their own.
"""

import numpy as np
from numba import prange

from ...codegen import njit
from ._common import _JIT, _pair
from .arrays import _empty


@njit(inline="always")
def _window_max(top_left, top_right, bottom_left, bottom_right, wide):
    """The maximum of a 2x2 window and where it is: 0, 1, ``wide`` or ``wide + 1``
    (int32) for the four values in this order, as in the flat input plane.

    Strict ``>`` keeps the first maximum (as PyTorch); a NaN wins, so that it
    propagates. Bitwise operators and selects, not ``and`` / ``or`` and branches: the
    callers' loops over windows are vectorised (with branches they stayed scalar).
    """
    best = top_left
    at = np.int32(0)
    take = (top_right > best) | ((top_right != top_right) & (best == best))
    best = top_right if take else best
    at = np.int32(1) if take else at
    take = (bottom_left > best) | ((bottom_left != bottom_left) & (best == best))
    best = bottom_left if take else best
    at = wide if take else at
    take = (bottom_right > best) | ((bottom_right != bottom_right) & (best == best))
    best = bottom_right if take else best
    at = wide + np.int32(1) if take else at
    return best, at


@njit(**_JIT)
def _maxpool2d_forward(x, y, argmax, kh_n, kw_n, sh, sw):
    n_img, n_ch, ho_n, wo_n = y.shape
    w_n = x.shape[3]
    # No race: iteration t owns the output planes y[n, c] and argmax[n, c].
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        plane = x[n, c]
        for ho in range(ho_n):
            for wo in range(wo_n):
                h0 = ho * sh
                w0 = wo * sw
                best = plane[h0, w0]
                at = h0 * w_n + w0
                for i in range(kh_n):
                    for j in range(kw_n):
                        v = plane[h0 + i, w0 + j]
                        # Strict ">" keeps the first maximum (as PyTorch);
                        # a NaN wins so that it propagates.
                        if v > best or (v != v and best == best):
                            best = v
                            at = (h0 + i) * w_n + w0 + j
                y[n, c, ho, wo] = best
                argmax[n, c, ho, wo] = at


@njit(**_JIT)
def _maxpool2x2_forward(x, y, argmax):
    """:func:`_maxpool2d_forward` for 2x2 windows with stride 2, unrolled.

    An iteration is a plane, not a row (it found its row by three integer divisions,
    for 8 outputs at the second pooling), and the comparisons are selects: pool2
    0.44-0.48 -> 0.22-0.25 ms, pool1 0.42-0.43 -> 0.29-0.30 ms at batch 64. Flat
    planes and unsigned offsets let the vectoriser see the window's two loads as
    one interleaved pair; with signed row views it left AVX2 code scalar, with a
    branch per comparison (2-core Zen 3, pool1: 4.5 -> 0.5 ms).
    """
    n_img, n_ch, ho_n, wo_n = y.shape
    w_n = x.shape[3]
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    af = argmax.reshape(argmax.size)
    wide = np.int32(w_n)
    # No race: iteration t owns the output planes y[n, c] and argmax[n, c].
    for t in prange(n_img * n_ch):
        for ho in range(ho_n):
            top = np.uint64((t * x.shape[2] + 2 * ho) * w_n)
            bottom = top + np.uint64(w_n)
            out = np.uint64((t * ho_n + ho) * wo_n)
            corner = np.int32(2 * ho * w_n)
            for wo in range(np.uint64(wo_n)):
                c = np.uint64(2) * wo
                one = np.uint64(1)
                best, at = _window_max(xf[top + c], xf[top + c + one], xf[bottom + c],
                                       xf[bottom + c + one], wide)
                yf[out + wo] = best
                af[out + wo] = corner + np.int32(c) + at


def maxpool2d_forward(x, kernel_size, stride):
    """Max pooling without padding; records where each maximum came from.

    Parameters
    ----------
    x : ndarray, (N, C, H, W)
    kernel_size : int or (int, int)
    stride : int or (int, int), or None for ``kernel_size``

    Returns
    -------
    y : ndarray, (N, C, HO, WO), ``HO = (H - KH) // stride + 1``
    argmax : ndarray, (N, C, HO, WO), int32
        Flat index ``h * W + w`` of the (first) maximum in the input plane.
    """
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    ho = (h - kh) // sh + 1
    wo = (w - kw) // sw + 1
    y = _empty((n, c, ho, wo), dtype=x.dtype)
    argmax = _empty((n, c, ho, wo), dtype=np.int32)
    if kh == kw == sh == sw == 2:
        _maxpool2x2_forward(x, y, argmax)  # the reference net's pooling
    else:
        _maxpool2d_forward(x, y, argmax, kh, kw, sh, sw)
    return y, argmax


@njit(**_JIT)
def _maxpool2d_backward(dy, argmax, dx, relu_y):
    """``dx`` (N * C, H * W), zeroed here, gets each ``dy`` at its flat argmax.

    With ``relu_y`` not empty (the output of a ReLU run after the pooling), ``dy``
    counts only where ``relu_y > 0``: that ReLU's backward, without its own pass.
    """
    n_img, n_ch, ho_n, wo_n = dy.shape
    relu = relu_y.size > 0
    zero = dx.dtype.type(0)
    # No race: iteration t owns the input plane dx[t]; overlapping windows
    # (stride < kernel) add into it sequentially within the iteration.
    for t in prange(n_img * n_ch):
        n = t // n_ch
        c = t % n_ch
        plane = dx[t]
        plane[:] = 0
        for ho in range(ho_n):
            for wo in range(wo_n):
                g = dy[n, c, ho, wo]
                if relu and not relu_y[n, c, ho, wo] > zero:
                    g = zero
                plane[argmax[n, c, ho, wo]] += g


#: Windows per row that :func:`_maxpool2x2_backward` needs a multiple of: measured on
#: a 2-core Zen 4 at batch 64, relu backward included, the scatter against the
#: gather, pool1 (16 windows a row) 0.39 -> 0.20 ms with AVX-512 and 0.62 -> 0.49
#: compiled for AVX2, pool2 (8) 0.16 -> 0.19 and 0.18 -> 1.6. Presumably the
#: vectorised loop takes 16 windows a step at both widths, and shorter rows go
#: through the scalar loop (not checked in the assembly).
_GATHER_WINDOWS = 16


@njit(**_JIT)
def _maxpool2x2_backward(dy, argmax, dx, relu_y):
    """:func:`_maxpool2d_backward` for 2x2 windows with stride 2, as a gather: every
    element of ``dx`` (N, C, H, W) is written once, ``dy`` of its window where the
    window's argmax is it, else 0 (a last odd row or column, in no window, is 0).

    The scatter zeroes each plane and then adds into it at random places: two
    passes over ``dx``, the second not vectorised. Here a row is one loop of selects
    over flat planes with unsigned offsets, as in :func:`_maxpool2x2_forward`; it
    pays only on long enough rows (see :data:`_GATHER_WINDOWS`).
    """
    n_img, n_ch, ho_n, wo_n = dy.shape
    h_n, w_n = dx.shape[2], dx.shape[3]
    dyf = dy.reshape(dy.size)
    af = argmax.reshape(argmax.size)
    dxf = dx.reshape(dx.size)
    rf = relu_y.reshape(relu_y.size)
    relu = relu_y.size > 0
    zero = dx.dtype.type(0)
    # No race: iteration t owns the input plane dx[t // C, t % C].
    for t in prange(n_img * n_ch):
        for h in range(h_n):
            row = np.uint64((t * h_n + h) * w_n)
            ho = h // 2
            if ho == ho_n:  # the last of an odd number of rows
                for w in range(np.uint64(w_n)):
                    dxf[row + w] = zero
                continue
            src = np.uint64((t * ho_n + ho) * wo_n)
            left = np.int32(h * w_n)
            for wo in range(np.uint64(wo_n)):
                g = dyf[src + wo]
                if relu:
                    g = g if rf[src + wo] > zero else zero
                # 0 where the maximum was the row's left of the window, 1 its right
                at = af[src + wo] - left - np.int32(2) * np.int32(wo)
                c = np.uint64(2) * wo
                dxf[row + c] = g if at == 0 else zero
                dxf[row + c + np.uint64(1)] = g if at == 1 else zero
            if w_n % 2:  # the last of an odd number of columns
                dxf[row + np.uint64(w_n - 1)] = zero


def maxpool2d_backward(dy, argmax, x_shape, kernel_size=None, stride=None):
    """Route each output gradient to the input element that won its window.

    Parameters
    ----------
    dy : ndarray, (N, C, HO, WO)
    argmax : ndarray, (N, C, HO, WO), int32, from :func:`maxpool2d_forward`
    x_shape : tuple, (N, C, H, W)
    kernel_size, stride : int, optional
        The forward's window. Without them the gradients are scattered, which
        is right for any window; with 2x2 windows of stride 2 (and rows of 16,
        32, ... windows) they are gathered, each element of ``dx`` written once:
        the same values, faster.

    Returns
    -------
    dx : ndarray, x_shape, dy's dtype
    """
    return _route_to_argmax(dy, argmax, x_shape, None, kernel_size, stride)


def maxpool2d_relu_backward(dy, y, argmax, x_shape, kernel_size=None, stride=None):
    """:func:`.activations.relu_backward` (``y`` the ReLU's output) then :func:`maxpool2d_backward`,
    bit for bit, in one pass: the masked gradient is routed as it is read."""
    return _route_to_argmax(dy, argmax, x_shape, y, kernel_size, stride)


def _route_to_argmax(dy, argmax, x_shape, relu_y, kernel_size, stride):
    """The two backwards above: ``relu_y`` None, or the ReLU's output."""
    dy = np.ascontiguousarray(dy)
    n, c, h, w = (int(s) for s in x_shape)
    dx = _empty((n, c, h, w), dtype=dy.dtype)
    argmax = np.ascontiguousarray(argmax, dtype=np.int32)
    if relu_y is None:
        relu_y = np.empty((0,) * 4, dtype=dy.dtype)
    relu_y = np.ascontiguousarray(relu_y, dtype=dy.dtype)
    window = None if kernel_size is None else _pair(kernel_size)
    step = window if stride is None else _pair(stride)
    if window == (2, 2) and step == (2, 2) and dy.shape[3] % _GATHER_WINDOWS == 0:
        _maxpool2x2_backward(dy, argmax, dx, relu_y)
        return dx
    # Flat planes: the argmax indexes them directly (a row / column split of it
    # cost an integer division per element, 0.88 -> 0.26 ms for the first pooling).
    _maxpool2d_backward(dy, argmax, dx.reshape(n * c, h * w), relu_y)
    return dx

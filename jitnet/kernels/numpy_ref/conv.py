"""Convolution: im2col (a strided window view, one copy), then one batched
BLAS matmul per call."""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


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

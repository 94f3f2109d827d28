"""Losses on the cpu target: each returns its value as a Python float and the
gradient with respect to its first argument, with the mean reduction of PyTorch's
defaults. They keep IEEE semantics (no fast-math), so every target rounds alike.
"""

import numpy as np

from ...codegen import njit
from ._common import _JIT_EXACT_SMALL
from .activations import _flat
from .arrays import _empty


@njit(**_JIT_EXACT_SMALL)
def _softmax_cross_entropy(scores, labels, dscores, row_loss):
    n_img, n_cls = scores.shape
    inv_n = scores.dtype.type(1.0 / n_img)
    for i in range(n_img):
        top = scores[i, 0]
        for j in range(1, n_cls):
            top = max(top, scores[i, j])
        total = scores.dtype.type(0)
        for j in range(n_cls):
            e = np.exp(scores[i, j] - top)
            dscores[i, j] = e
            total += e
        y = labels[i]
        row_loss[i] = -((scores[i, y] - top) - np.log(total))
        for j in range(n_cls):
            dscores[i, j] = dscores[i, j] / total
        dscores[i, y] -= 1
        for j in range(n_cls):
            dscores[i, j] *= inv_n


def softmax_cross_entropy(scores, labels):
    """Softmax cross-entropy, ``mean_n(-log softmax(scores[n])[labels[n]])``.

    Parameters
    ----------
    scores : ndarray, (N, C)
    labels : ndarray, (N,), integers in [0, C)

    Returns
    -------
    loss : float
    dscores : ndarray, (N, C), ``(softmax(scores) - onehot(labels)) / N``
    """
    scores = np.ascontiguousarray(scores)
    dscores = np.empty_like(scores)
    if scores.shape[0] == 0:  # the mean over no row (the kernel would divide by zero)
        return float("nan"), dscores
    row_loss = _empty(scores.shape[0], dtype=np.float64)
    _softmax_cross_entropy(scores, np.ascontiguousarray(labels, dtype=np.int64), dscores, row_loss)
    return float(row_loss.sum() / scores.shape[0]), dscores


@njit(**_JIT_EXACT_SMALL)
def _multiclass_hinge(scores, labels, margin, dscores, row_loss):
    n_img, n_cls = scores.shape
    inv_n = scores.dtype.type(1.0 / n_img)
    mgn = scores.dtype.type(margin)
    zero = scores.dtype.type(0)
    for i in range(n_img):
        y = labels[i]
        correct = scores[i, y]
        total = 0.0
        count = 0
        for j in range(n_cls):
            d = scores[i, j] - correct + mgn
            if j != y and d > 0:
                total += d
                count += 1
                dscores[i, j] = inv_n
            else:
                dscores[i, j] = zero
        dscores[i, y] = -count * inv_n
        row_loss[i] = total


def multiclass_hinge(scores, labels, margin):
    """Multiclass SVM loss, ``mean_n sum_{j != y_n} max(0, s_j - s_{y_n} + margin)``.

    Parameters
    ----------
    scores : ndarray, (N, C)
    labels : ndarray, (N,), integers in [0, C)
    margin : float

    Returns
    -------
    loss : float
    dscores : ndarray, (N, C), ``1/N`` where the margin is positive, minus their count at y
    """
    scores = np.ascontiguousarray(scores)
    dscores = np.empty_like(scores)
    if scores.shape[0] == 0:
        return float("nan"), dscores
    row_loss = _empty(scores.shape[0], dtype=np.float64)
    _multiclass_hinge(
        scores, np.ascontiguousarray(labels, dtype=np.int64), float(margin), dscores, row_loss
    )
    return float(row_loss.sum() / scores.shape[0]), dscores


@njit(**_JIT_EXACT_SMALL)
def _bce_with_logits(s, t, ds, parts):
    size = s.size
    inv = s.dtype.type(1.0 / size)
    one = s.dtype.type(1)
    n_parts = parts.size
    chunk = (size + n_parts - 1) // n_parts
    # Partial sums per chunk, added in order by the caller.
    for k in range(n_parts):
        acc = 0.0
        for i in range(k * chunk, min(size, (k + 1) * chunk)):
            v = s[i]
            tv = t[i]
            e = np.exp(-abs(v))
            acc += max(v, 0) - v * tv + np.log1p(e)
            sig = one / (one + e) if v >= 0 else e / (one + e)
            ds[i] = (sig - tv) * inv
        parts[k] = acc


def bce_with_logits(scores, targets):
    """Sigmoid + binary cross-entropy per element, mean over all elements.

    Parameters
    ----------
    scores : ndarray, any shape (logits)
    targets : ndarray, scores' shape, probabilities in [0, 1]

    Returns
    -------
    loss : float, ``mean(max(s, 0) - s * t + log1p(exp(-|s|)))``
    dscores : ndarray, scores' shape, ``(sigmoid(s) - t) / scores.size``
    """
    s = _flat(scores)
    ds = _empty(scores.shape, dtype=s.dtype)
    if s.size == 0:  # the mean over nothing (the kernel would divide by zero)
        return float("nan"), ds
    parts = _empty(64)
    _bce_with_logits(s, _flat(np.asarray(targets, dtype=s.dtype)), ds.reshape(-1), parts)
    return float(parts.sum() / s.size), ds


@njit(**_JIT_EXACT_SMALL)
def _regression(p, t, l1, dp, parts):
    size = p.size
    scale = p.dtype.type((1.0 if l1 else 2.0) / size)
    zero = p.dtype.type(0)
    one = p.dtype.type(1)
    n_parts = parts.size
    chunk = (size + n_parts - 1) // n_parts
    # Partial sums per chunk, added in order by the caller.
    for k in range(n_parts):
        acc = 0.0
        for i in range(k * chunk, min(size, (k + 1) * chunk)):
            d = p[i] - t[i]
            if l1:
                acc += abs(d)
                sign = one if d > 0 else (-one if d < 0 else (zero if d == 0 else d))
                dp[i] = sign * scale
            else:
                acc += d * d
                dp[i] = d * scale
        parts[k] = acc


def mse(pred, target):
    """Mean squared error over all elements.

    Returns
    -------
    loss : float, ``mean((pred - target)**2)``
    dpred : ndarray, pred's shape, ``2 * (pred - target) / pred.size``
    """
    p = _flat(pred)
    dp = _empty(pred.shape, dtype=p.dtype)
    if p.size == 0:
        return float("nan"), dp
    parts = _empty(64)
    _regression(p, _flat(np.asarray(target, dtype=p.dtype)), False, dp.reshape(-1), parts)
    return float(parts.sum() / p.size), dp


def l1(pred, target):
    """Mean absolute error over all elements.

    Returns
    -------
    loss : float, ``mean(|pred - target|)``
    dpred : ndarray, pred's shape, ``sign(pred - target) / pred.size`` (0 where equal)
    """
    p = _flat(pred)
    dp = _empty(pred.shape, dtype=p.dtype)
    if p.size == 0:
        return float("nan"), dp
    parts = _empty(64)
    _regression(p, _flat(np.asarray(target, dtype=p.dtype)), True, dp.reshape(-1), parts)
    return float(parts.sum() / p.size), dp

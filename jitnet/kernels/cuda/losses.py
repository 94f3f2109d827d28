"""Losses: per-row or per-element values on the device, then one block sums them."""

import functools
import math

import numba
import numpy as np

from ._launch import _grid_1d, _reduction_threads
from ._reduction import _make_block_sum, _mean_to_host
from .activations import _sigmoid
from .arrays import _dev, _empty, _flat, asarray
from .device import cuda, jit


@jit(device=True)
def _bad_label_row(n, dscores):
    # A label out of range (which the loss module checks on the host only when the
    # loss comes out NaN, for labels already on the device): NaN, and nothing read.
    for j in range(dscores.shape[1]):
        dscores[n, j] = math.nan
    return math.nan


@jit(device=True)
def _softmax_cross_entropy_row(scores, labels, margin, n, n_rows, dscores):
    # Row n: its max, log-sum-exp, loss (returned) and gradient. (margin: unused.)
    n_classes = scores.shape[1]
    if labels[n] < 0 or labels[n] >= n_classes:
        return _bad_label_row(n, dscores)
    top = scores[n, 0]
    for j in range(1, n_classes):
        top = max(top, scores[n, j])
    total = 0.0
    for j in range(n_classes):
        e = math.exp(scores[n, j] - top)
        dscores[n, j] = e
        total += e
    y = labels[n]
    loss = math.log(total) - (scores[n, y] - top)
    for j in range(n_classes):
        d = dscores[n, j] / total
        if j == y:
            d -= 1
        dscores[n, j] = d / n_rows
    return loss


@jit(device=True)
def _multiclass_hinge_row(scores, labels, margin, n, n_rows, dscores):
    # Row n; the gradient at the label is minus the count of violators.
    n_classes = scores.shape[1]
    y = labels[n]
    if y < 0 or y >= n_classes:
        return _bad_label_row(n, dscores)
    correct = scores[n, y]
    loss = 0.0
    active = 0
    for j in range(n_classes):
        m = scores[n, j] - correct + margin
        if j != y and m > 0:
            loss += m
            active += 1
            dscores[n, j] = 1 / n_rows
        else:
            dscores[n, j] = 0
    dscores[n, y] = -active / n_rows
    return loss


@functools.lru_cache(maxsize=None)
def _make_row_loss_kernel(row, threads):
    """One block: ``row`` of every score row (a thread per row, striding) and the mean
    of their losses in ``out[0]``, the tree of :func:`_make_sum_kernel` in the same
    order. One launch for a classification loss, not one for the rows and one for
    their sum. Rows are short (classes), so a thread per row is the cheap layout."""
    block_sum = _make_block_sum(threads)

    @jit
    def row_loss_kernel(scores, labels, margin, n_rows, dscores, out):
        scratch = cuda.shared.array(threads, numba.float64)
        tid = cuda.threadIdx.x
        acc = 0.0
        for n in range(tid, scores.shape[0], threads):
            acc += row(scores, labels, margin, n, n_rows, dscores)
        total = block_sum(scratch, tid, acc)
        if tid == 0:
            out[0] = total / scores.shape[0]

    return row_loss_kernel


@jit(cache=True)
def _bce_with_logits_kernel(scores, targets, size, losses, dscores):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, scores.size, step):
        s = scores[i]
        t = targets[i]
        losses[i] = (s if s > 0 else 0) - s * t + math.log1p(math.exp(-abs(s)))
        dscores[i] = (_sigmoid(s) - t) / size


@jit(cache=True)
def _mse_kernel(pred, target, scale, losses, dpred):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, pred.size, step):
        d = pred[i] - target[i]
        losses[i] = d * d
        dpred[i] = d * scale


@jit(cache=True)
def _l1_kernel(pred, target, scale, losses, dpred):
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, pred.size, step):
        d = pred[i] - target[i]
        losses[i] = abs(d)
        # np.sign: 0 at equality, NaN stays NaN.
        sign = 1 if d > 0 else (-1 if d < 0 else d)
        dpred[i] = sign * scale


def _row_loss(row, scores, labels, margin):
    scores, labels = _dev(scores), _dev(labels)
    n = scores.shape[0]
    dscores = _empty(scores.shape, dtype=scores.dtype)
    if n == 0:
        return float("nan"), dscores
    threads = _reduction_threads()
    out = _empty(1, np.float64)
    t = scores.dtype.type
    _make_row_loss_kernel(row, threads)[1, threads](scores, labels, t(margin), t(n), dscores, out)
    return float(out.copy_to_host()[0]), dscores


def _elementwise_loss(kernel, pred, target, scale):
    pred = _dev(pred)
    target = asarray(target, pred.dtype)
    losses = _empty((pred.size,), dtype=np.float64)
    dpred = _empty(pred.shape, dtype=pred.dtype)
    if pred.size == 0:
        return float("nan"), dpred
    kernel[_grid_1d(pred.size)](
        _flat(pred), _flat(target), pred.dtype.type(scale), losses, _flat(dpred)
    )
    return _mean_to_host(losses), dpred


def softmax_cross_entropy(scores, labels):
    """Softmax cross-entropy, mean over the batch.

    Parameters
    ----------
    scores : device array, shape (N, C)
    labels : device or host array, shape (N,), integer in ``[0, C)`` (a row with a label
        out of range makes the loss NaN and its gradient NaN, reading nothing out of
        bounds: the loss module checks device labels only then)

    Returns
    -------
    loss : float
    dscores : device array, shape (N, C), dtype of ``scores``
        ``(softmax(scores) - onehot(labels)) / N``.
    """
    return _row_loss(_softmax_cross_entropy_row, scores, labels, 0)


def multiclass_hinge(scores, labels, margin):
    """Multiclass SVM loss, ``mean_n sum_{j != y_n} max(0, s_j - s_{y_n} + margin)``.

    Parameters
    ----------
    scores : device array, shape (N, C)
    labels : device or host array, shape (N,), integer in ``[0, C)`` (out of range: as
        :func:`softmax_cross_entropy`)
    margin : float

    Returns
    -------
    loss : float
    dscores : device array, shape (N, C), dtype of ``scores``
    """
    return _row_loss(_multiclass_hinge_row, scores, labels, margin)


def bce_with_logits(scores, targets):
    """Sigmoid + binary cross-entropy per element, mean over all elements.

    Parameters
    ----------
    scores : device array, any shape
    targets : device or host array, shape of ``scores``, in ``[0, 1]``

    Returns
    -------
    loss : float
    dscores : device array, shape of ``scores``
        ``(sigmoid(s) - t) / scores.size``.
    """
    scores = _dev(scores)
    return _elementwise_loss(_bce_with_logits_kernel, scores, targets, scores.size)


def mse(pred, target):
    """Mean squared error over all elements; gradient ``2 * (pred - target) / size``.

    Parameters
    ----------
    pred : device array, any shape
    target : device or host array, shape of ``pred``

    Returns
    -------
    loss : float
    dpred : device array, shape of ``pred``
    """
    pred = _dev(pred)
    return _elementwise_loss(_mse_kernel, pred, target, 2.0 / max(pred.size, 1))


def l1(pred, target):
    """Mean absolute error over all elements; gradient ``sign(pred - target) / size``.

    Parameters
    ----------
    pred : device array, any shape
    target : device or host array, shape of ``pred``

    Returns
    -------
    loss : float
    dpred : device array, shape of ``pred``
    """
    pred = _dev(pred)
    return _elementwise_loss(_l1_kernel, pred, target, 1.0 / max(pred.size, 1))

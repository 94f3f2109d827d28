"""Losses: (Python float, gradient), mean reduction as PyTorch's default."""

import numpy as np

from .activations import sigmoid_forward


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
    # an empty pred: the mean of nothing is NaN, the gradient empty
    return float(np.mean(diff * diff)), diff * pred.dtype.type(2.0 / max(pred.size, 1))


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
    # an empty pred: the mean of nothing is NaN, the gradient empty
    return float(np.mean(np.abs(diff))), np.sign(diff) * pred.dtype.type(1.0 / max(pred.size, 1))

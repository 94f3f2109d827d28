"""Loss modules: ``loss = loss_fn(scores, target)`` (a Python float, mean reduction),
then ``loss_fn.backward()`` gives the gradient with respect to ``scores``.
"""

import math

import numpy as np

from .._checks import check_real
from ..targets import backend, get_target, is_device_array, to_numpy
from .layers import _input
from .module import Module


def _check_not_empty(owner, scores):
    """Raise ValueError for scores with no element: the mean of nothing is no loss."""
    if math.prod(scores.shape) == 0:
        raise ValueError(
            f"{owner} expected at least one score to average over, got shape "
            f"{tuple(scores.shape)}"
        )


def _host_numbers(owner, what, value):
    """``value`` (not a device array) as a host array, or a TypeError naming its Python
    type when it holds no numbers: None, a str, a dict, objects."""
    host = np.asarray(value)
    if host.dtype.kind not in "biufc":
        kind = type(value).__name__
        if isinstance(value, np.ndarray):
            kind += f" of dtype {value.dtype}"
        raise TypeError(f"{owner} expected {what}, got {kind}")
    return host


def _check_labels(owner, scores, labels, values=True):
    """Validate integer class labels against ``scores (N, C)``; labels as the target's int64.

    Labels already on the device are not copied to the host to be checked (that would
    wait for the forward pass, and copy them back): with ``values`` False their dtype
    and shape are checked here and their values by :func:`_check_label_values` once the
    loss came out NaN, which the cuda kernels make it for a label out of range.
    """
    n, c = scores.shape
    if not is_device_array(labels):
        labels = _host_numbers(owner, f"integer class labels of shape ({n},)", labels)
    elif values:
        labels = to_numpy(labels)
    _check_not_empty(owner, scores)
    if np.dtype(labels.dtype).kind not in "iu":
        raise ValueError(f"{owner} expected integer class labels, got dtype {labels.dtype}")
    if tuple(labels.shape) != (n,):
        raise ValueError(
            f"{owner} expected labels of shape ({n},) for scores of shape {(n, c)}, "
            f"got {tuple(labels.shape)}"
        )
    if values:
        _check_label_values(owner, c, labels)
    return backend().asarray(labels, np.int64)


def _check_label_values(owner, c, labels):
    """Raise ValueError unless every label is in ``[0, c)``."""
    host = to_numpy(labels)
    if host.size and (host.min() < 0 or host.max() >= c):
        raise ValueError(
            f"{owner} expected labels in [0, {c - 1}] for {c} classes, "
            f"got values in [{host.min()}, {host.max()}]"
        )


def _class_loss(owner, kernel, scores, labels, *args):
    """``kernel(scores, labels, *args)`` -> ``(loss, dscores)`` after the labels' checks;
    on the cuda target, device labels' values are checked only when the loss is NaN
    (see :func:`_check_labels`)."""
    lazy = is_device_array(labels) and get_target() == "cuda"
    checked = _check_labels(owner, scores, labels, values=not lazy)
    loss, dscores = kernel(scores, checked, *args)
    if lazy and loss != loss:
        _check_label_values(owner, scores.shape[1], checked)
    return loss, dscores


def _check_target(owner, pred, target):
    """Validate a regression / probability target of ``pred``'s shape; cast to its dtype."""
    if is_device_array(target):
        host = to_numpy(target)
    else:
        host = _host_numbers(owner, f"a numeric target of shape {tuple(pred.shape)}", target)
    if host.shape != tuple(pred.shape):
        raise ValueError(
            f"{owner} expected a target of shape {tuple(pred.shape)} (the input's), "
            f"got {host.shape}"
        )
    _check_not_empty(owner, pred)
    if host.dtype.kind not in "fiub":
        # complex numbers are numbers too: name the kinds a target may hold
        raise ValueError(f"{owner} expected a real target (bool, int or float), "
                         f"got dtype {host.dtype}")
    return backend().asarray(host, pred.dtype)


class _Loss(Module):
    """Base: ``__call__`` returns the loss value and keeps the gradient for ``backward``."""

    def backward(self, dy=None):
        """Gradient of the loss with respect to the scores, shape of the scores."""
        if getattr(self, "_saved_grad", None) is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before the forward pass")
        return self._saved_grad


class SoftmaxCrossEntropyLoss(_Loss):
    """``mean_n(-log softmax(scores[n])[y[n]])``, computed through log-sum-exp.

    ``scores`` is ``(N, C)`` float, ``y`` is ``(N,)`` integer in ``[0, C)``. The same as
    ``torch.nn.CrossEntropyLoss()``.
    """

    def forward(self, scores, labels):
        scores = _input(type(self).__name__, scores, 2, "(N, C)")
        loss, self._saved_grad = _class_loss(type(self).__name__,
                                             backend().softmax_cross_entropy, scores, labels)
        return loss


class MulticlassHingeLoss(_Loss):
    """Multiclass SVM loss, ``mean_n sum_{j != y_n} max(0, s_j - s_{y_n} + margin)``.

    Unlike ``torch.nn.MultiMarginLoss`` the sum over classes is not divided by ``C``
    (this is the loss of the cs231n SVM classifier).
    """

    def __init__(self, margin=1.0):
        super().__init__()
        self.margin = check_real("MulticlassHingeLoss", "margin", margin)

    def forward(self, scores, labels):
        scores = _input(type(self).__name__, scores, 2, "(N, C)")
        loss, self._saved_grad = _class_loss(type(self).__name__, backend().multiclass_hinge,
                                             scores, labels, self.margin)
        return loss

    def extra_repr(self):
        return f"margin={self.margin}"


class BCEWithLogitsLoss(_Loss):
    """Sigmoid + binary cross-entropy per element, mean over all elements.

    ``targets`` has the shape of ``scores`` and holds probabilities in ``[0, 1]``;
    stable for large ``|scores|``, as ``torch.nn.BCEWithLogitsLoss()``.
    """

    def forward(self, scores, targets):
        scores = _input(type(self).__name__, scores, None, "")
        targets = _check_target(type(self).__name__, scores, targets)
        loss, self._saved_grad = backend().bce_with_logits(scores, targets)
        return loss


class MSELoss(_Loss):
    """Mean over all elements of ``(pred - target)**2``, as ``torch.nn.MSELoss()``."""

    def forward(self, pred, target):
        pred = _input(type(self).__name__, pred, None, "")
        target = _check_target(type(self).__name__, pred, target)
        loss, self._saved_grad = backend().mse(pred, target)
        return loss


class L1Loss(_Loss):
    """Mean over all elements of ``|pred - target|``, as ``torch.nn.L1Loss()``."""

    def forward(self, pred, target):
        pred = _input(type(self).__name__, pred, None, "")
        target = _check_target(type(self).__name__, pred, target)
        loss, self._saved_grad = backend().l1(pred, target)
        return loss

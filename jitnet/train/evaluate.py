"""Evaluation: batched prediction in eval mode, confusion matrices, parameter counts."""

import numpy as np

from .._checks import check_int
from ..targets import to_numpy
from ._arguments import _check_callable, _check_images, _check_label_range, _check_model, _kind


def predict(model, x, *, batch_size=256, transform=None):
    """Class predictions of ``model`` for images ``x``, in eval mode, batch by batch.

    Parameters
    ----------
    model : jitnet.nn.Module
        Returns scores ``(B, C)`` for a batch.
    x : np.ndarray
        Images ``(N, C, H, W)``: uint8 (0..255, scaled to [0, 1] batch by batch, as
        :class:`jitnet.data.DataLoader` does) or float ([0, 1]). Each batch is cast to
        the model's dtype (that of its first parameter; float32 without parameters).
    batch_size : int
        Images per forward pass (an int >= 1; a TypeError for another kind).
    transform : callable, optional
        Applied to each batch, in the model's dtype, before the model (for example
        normalisation).

    Returns
    -------
    np.ndarray
        ``(N,)`` int64 predicted labels. The model is left in eval mode.

    Raises
    ------
    TypeError
        For a model that is no ``jitnet.nn.Module``, ``x`` that is no ``np.ndarray``
        (a list), or a transform that is not callable.
    ValueError
        For ``x`` that is not 4-D, or of another dtype than uint8 or float: other
        integer images would be read as [0, 1] floats, 255 times too bright.
    """
    _check_model("predict", model)
    _check_images("predict", "x", x)
    batch_size = check_int("predict", "batch_size", batch_size, 1)
    _check_callable("predict", "transform", transform)
    first = next(iter(model.parameters()), None)
    dtype = np.dtype(np.float32) if first is None else first.dtype
    model.eval()
    out = np.empty(len(x), dtype=np.int64)
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        if xb.dtype == np.uint8:
            xb = xb.astype(dtype) * dtype.type(1.0 / 255.0)
        else:
            xb = xb.astype(dtype, copy=False)
        if transform is not None:
            xb = transform(xb)
        scores = to_numpy(model(np.ascontiguousarray(xb)))
        out[start:start + batch_size] = scores.argmax(axis=1)
    return out


def confusion_matrix(y_true, y_pred, num_classes=10):
    """Counts of (true, predicted) label pairs, as scikit-learn's ``confusion_matrix``.

    Parameters
    ----------
    y_true, y_pred : array-like of int, shape (N,)
        Class labels in ``[0, num_classes)``, one prediction per true label.
    num_classes : int
        ``>= 1``.

    Returns
    -------
    np.ndarray
        ``(num_classes, num_classes)`` int64 counts: row = true class, column =
        predicted.

    Raises
    ------
    TypeError
        For labels that are no numbers (None, strings) or ``num_classes`` no int.
    ValueError
        For labels that are not 1-D, of two lengths, not integers or outside
        ``[0, num_classes)`` (naming the first bad one): a label of -1 would be
        counted in the last class, and one prediction for two labels broadcast.
    """
    who = "confusion_matrix"
    num_classes = check_int(who, "num_classes", num_classes, 1)
    labels = {name: _class_labels(who, name, y) for name, y in (("y_true", y_true),
                                                                ("y_pred", y_pred))}
    if len(labels["y_true"]) != len(labels["y_pred"]):
        raise ValueError(f"{who} expected y_true and y_pred of the same length (one "
                         f"prediction per label), got {len(labels['y_true'])} and "
                         f"{len(labels['y_pred'])}")
    for name, y in labels.items():
        _check_label_range(y, num_classes, f"{who} expected {name} to be labels in "
                                           f"0..{num_classes - 1}")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels["y_true"].astype(np.int64), labels["y_pred"].astype(np.int64)),
              1)
    return matrix


def _class_labels(who, name, y):
    """``y`` as a 1-D integer array (``[]`` included), after checking it is one."""
    labels = np.asarray(y)
    if labels.dtype.kind not in "biuf":
        got = f"dtype {labels.dtype}" if labels.ndim else _kind(y)
        raise TypeError(f"{who} expected {name} to be integer class labels, got {got}")
    if labels.ndim != 1:
        raise ValueError(f"{who} expected {name} to be 1-D (one label per sample), got "
                         f"shape {labels.shape}")
    if labels.dtype.kind not in "iu" and labels.size:  # [] is float64 to NumPy
        raise ValueError(f"{who} expected {name} to be integer class labels, got "
                         f"{labels[0].item()!r} at index 0 (dtype {labels.dtype})")
    return labels


def count_parameters(model):
    """Number of trainable scalars of ``model``."""
    return int(sum(int(np.prod(p.data.shape)) for p in model.parameters()))

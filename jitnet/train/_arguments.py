"""The checks of the training functions' arguments, with the messages they share."""

import numpy as np

from .._checks import check_image_dtype
from ..nn.module import Module


def _kind(value):
    """What a message says came: the type's name, or for a class passed where an
    instance belongs (``nn.SoftmaxCrossEntropyLoss`` for ``...Loss()``) that slip."""
    if isinstance(value, type):
        return f"the class {value.__name__} itself (create one: {value.__name__}(...))"
    return type(value).__name__


def _check_model(who, model):
    if not isinstance(model, Module):
        raise TypeError(f"{who} expected model to be a jitnet.nn.Module, got {_kind(model)}")


def _check_callable(who, name, value):
    """``value`` None or callable (a transform)."""
    if value is not None and not callable(value):
        raise TypeError(f"{who} expected {name} to be a callable or None, got {_kind(value)}")


def _check_images(who, name, x, layout="(N, C, H, W)"):
    """Raise unless ``x`` is a host ``layout`` array of uint8 (0..255) or float ([0, 1])
    images: other integers would be taken as [0, 1] floats, 255 times too bright."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{who} expected {name} to be an np.ndarray of images {layout}, "
                        f"got {_kind(x)}")
    if x.ndim != 4:
        raise ValueError(f"{who} expected {name} to be images {layout}, got shape {x.shape}")
    check_image_dtype(who, x.dtype, name, f"{name} to be ")


def _check_label_range(y, num_classes, expected):
    """Raise ``ValueError("<expected>, got <label> at index <i>")`` for the first label
    of the integer array ``y`` outside ``[0, num_classes)``."""
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(f"{expected}, got {y[index]} at index {index}")

"""Layers with explicit backward passes, on the kernels of the active target.

``Module`` / ``Parameter`` / ``Sequential`` are in :mod:`.module`, the layers in
:mod:`.layers` and the losses in :mod:`.losses`. A layer's ``backward(dy)`` returns
the gradient with respect to its input and overwrites (never accumulates) the
``grad`` of its parameters.
"""

from .layers import (
    ELU,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    LeakyReLU,
    Linear,
    Maxout,
    MaxPool2d,
    ReLU,
    Sigmoid,
    Tanh,
)
from .losses import (
    BCEWithLogitsLoss,
    L1Loss,
    MSELoss,
    MulticlassHingeLoss,
    SoftmaxCrossEntropyLoss,
)
from .module import Module, Parameter, Sequential

__all__ = [
    "BCEWithLogitsLoss",
    "BatchNorm2d",
    "Conv2d",
    "Dropout",
    "ELU",
    "Flatten",
    "L1Loss",
    "LeakyReLU",
    "Linear",
    "MSELoss",
    "MaxPool2d",
    "Maxout",
    "Module",
    "MulticlassHingeLoss",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "SoftmaxCrossEntropyLoss",
    "Tanh",
]

"""Model builders: the reference ConvNet and the HoG-linear classifier."""

from .convnet import convnet
from .hog_linear import HogLinearClassifier

__all__ = ["HogLinearClassifier", "convnet"]

"""Data: CIFAR-10 (safe loader, download), synthetic CIFAR, batching and augmentation."""

from . import transforms
from .cifar import (
    CIFAR10_CLASSES,
    DataError,
    cifar10_classes,
    default_root,
    download_cifar10,
    load_cifar10,
)
from .loader import DataLoader
from .synthetic import CLASS_NAMES, synthetic_cifar

__all__ = [
    "CIFAR10_CLASSES",
    "CLASS_NAMES",
    "DataError",
    "DataLoader",
    "cifar10_classes",
    "default_root",
    "download_cifar10",
    "load_cifar10",
    "synthetic_cifar",
    "transforms",
]

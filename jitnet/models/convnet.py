"""The reference ConvNet of the design: two conv blocks and two fully connected layers."""

from .. import nn
from .._checks import check_flag, check_int


def convnet(num_classes=10, batchnorm=False):
    """The reference ConvNet for 3x32x32 images.

    ``conv3x3(3->32) [BN] ReLU maxpool2 | conv3x3(32->64) [BN] ReLU maxpool2 | flatten |
    linear(4096->256) ReLU | linear(256->num_classes)``.

    Parameters
    ----------
    num_classes : int, default 10
    batchnorm : bool, default False
        Put a ``BatchNorm2d`` after each convolution.

    Returns
    -------
    nn.Sequential
        Input ``(N, 3, 32, 32)`` float32, output scores ``(N, num_classes)``.

    Raises
    ------
    TypeError
        For a ``num_classes`` that is not an int (a bool is not) or a ``batchnorm``
        that is not a bool.
    ValueError
        For ``num_classes < 1``.
    """
    num_classes = check_int("convnet", "num_classes", num_classes, 1)
    batchnorm = check_flag("convnet", "batchnorm", batchnorm)

    def block(c_in, c_out):
        layers = [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)]
        if batchnorm:
            layers.append(nn.BatchNorm2d(c_out))
        return layers + [nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(
        *block(3, 32),
        *block(32, 64),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 256),
        nn.ReLU(),
        nn.Linear(256, num_classes),
    )

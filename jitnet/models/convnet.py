"""The reference ConvNet of the design: two conv blocks and two fully connected layers."""

from .. import nn


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
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"convnet expected num_classes to be an int >= 1, got {num_classes!r}")

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

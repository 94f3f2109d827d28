"""Placeholder."""

def convnet(num_classes=10, batchnorm=False):
    raise NotImplementedError

"""Fully connected and maxout."""

import numpy as np

from .activations import relu_backward, relu_forward


def linear_forward(x, weight, bias, relu=False):
    """Batched fully connected layer, ``y = x @ weight.T + bias``.

    Parameters
    ----------
    x : np.ndarray, shape (N, D)
    weight : np.ndarray, shape (M, D)
    bias : np.ndarray, shape (M,), or None
    relu : bool, default False
        Return :func:`relu_forward` of ``y`` instead, bit for bit (``nn.Sequential``
        asks for it for a ``Linear`` followed by a ``ReLU``).

    Returns
    -------
    y : np.ndarray, shape (N, M), dtype of ``x``
    """
    y = x @ weight.T
    if bias is not None:
        y += bias
    return relu_forward(y) if relu else y


def linear_backward(dy, x, weight, input_grad=True, relu_y=None):
    """Gradients of :func:`linear_forward`.

    Parameters
    ----------
    dy : np.ndarray, shape (N, M)
    x : np.ndarray, shape (N, D)
    weight : np.ndarray, shape (M, D)
    input_grad : bool, default True
        False skips ``dx`` (returned as None).
    relu_y : np.ndarray, shape (N, D), optional
        The output of a ReLU that ran just before this layer (``x`` itself, in a
        ``nn.Sequential``): ``dx`` then goes back through it too,
        ``relu_backward(dy @ weight, relu_y)``, bit for bit.

    Returns
    -------
    dx : np.ndarray, shape (N, D), or None
        ``dy @ weight``
    dweight : np.ndarray, shape (M, D)
        ``dy.T @ x``
    dbias : np.ndarray, shape (M,)
        ``dy.sum(0)``
    """
    dx = dy @ weight if input_grad else None
    if dx is not None and relu_y is not None:
        dx = relu_backward(dx, relu_y)
    return dx, dy.T @ x, dy.sum(axis=0)


def maxout_forward(x, weight, bias, pieces):
    """Maxout units: ``y[n, j] = max_k (x[n] @ weight[j*pieces + k] + bias[j*pieces + k])``.

    Parameters
    ----------
    x : np.ndarray, shape (N, D)
    weight : np.ndarray, shape (M * pieces, D)
        Row ``j * pieces + k`` is piece ``k`` of unit ``j``.
    bias : np.ndarray, shape (M * pieces,), or None
    pieces : int

    Returns
    -------
    y : np.ndarray, shape (N, M), dtype of ``x``
    argmax : np.ndarray, shape (N, M), int32
        The winning piece ``k`` of each unit (first on ties, NaN wins).
    """
    z = linear_forward(x, weight, bias)
    z = z.reshape(x.shape[0], weight.shape[0] // pieces, pieces)  # -1 fails on N = 0
    k = np.argmax(z, axis=-1)
    y = np.take_along_axis(z, k[..., None], axis=-1)[..., 0]
    return np.ascontiguousarray(y), k.astype(np.int32)


def maxout_backward(dy, x, weight, argmax, pieces):
    """Gradients of :func:`maxout_forward`.

    Parameters
    ----------
    dy : np.ndarray, shape (N, M)
    x : np.ndarray, shape (N, D)
    weight : np.ndarray, shape (M * pieces, D)
    argmax : np.ndarray, shape (N, M), int32
    pieces : int

    Returns
    -------
    dx : np.ndarray, shape (N, D)
    dweight : np.ndarray, shape (M * pieces, D)
    dbias : np.ndarray, shape (M * pieces,)

    Notes
    -----
    Only the winning piece of each unit gets the unit's gradient: ``dz`` (N, M*pieces)
    is ``dy`` placed at column ``j * pieces + argmax[n, j]``, then it is a linear
    layer's backward.
    """
    n, m = dy.shape
    dz = np.zeros((n, m, pieces), dtype=dy.dtype)
    np.put_along_axis(dz, argmax[..., None].astype(np.intp), dy[..., None], axis=-1)
    return linear_backward(dz.reshape(n, m * pieces), x, weight)

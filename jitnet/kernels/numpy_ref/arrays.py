"""Arrays of the numpy target: C-contiguous ``np.ndarray``, as they are."""

import numpy as np


def asarray(a, dtype=None):
    """A host array as an array of this target: a C-contiguous ``np.ndarray``.

    Parameters
    ----------
    a : array_like
        Any array, list or scalar.
    dtype : dtype, optional
        Wanted dtype; by default the dtype of ``a`` is kept (integers stay integers).

    Returns
    -------
    np.ndarray
        ``a`` itself when it is already contiguous with the wanted dtype, else a copy;
        of ``a``'s shape, 0-d for a scalar (where ``np.ascontiguousarray`` gives 1-d).
    """
    return np.asarray(a, dtype=dtype, order="C")


def to_numpy(a):
    """This target's array as a host array.

    Parameters
    ----------
    a : np.ndarray

    Returns
    -------
    np.ndarray
        ``a`` itself (no copy on this target: copy it before mutating).
    """
    return np.asarray(a)


def empty(shape, dtype):
    """An uninitialised array.

    Parameters
    ----------
    shape : tuple of int
    dtype : dtype

    Returns
    -------
    np.ndarray, C-contiguous
    """
    return np.empty(shape, dtype=dtype)


def zeros(shape, dtype):
    """An array of zeros.

    Parameters
    ----------
    shape : tuple of int
    dtype : dtype

    Returns
    -------
    np.ndarray, C-contiguous
    """
    return np.zeros(shape, dtype=dtype)

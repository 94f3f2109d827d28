"""Mini-batches: a fresh permutation every epoch, transforms, then the active target."""

import numpy as np

from .. import rng as _rng
from .. import targets
from .._checks import check_flag, check_image_dtype, check_int
from .transforms import _check_seed

_INT64 = np.iinfo(np.int64)


def _integer_labels(who, y):
    """``y`` as int64 labels: an integer array, or floats that are all whole numbers.

    Casting ``[0.9, 1.7]`` would truncate them to ``[0, 1]``, silently wrong class
    indices, so a non-integral value raises ValueError naming the first one (one
    vectorised pass; integer arrays are only range-checked).

    Parameters
    ----------
    who : str
        The start of the messages (the caller, or the file).
    y : np.ndarray
        Any shape.

    Returns
    -------
    np.ndarray of int64, the shape of ``y`` (``y`` itself when it is int64)
    """
    if y.dtype.kind == "u" and y.size and y.max() > _INT64.max:
        raise ValueError(f"{who} expected labels that fit int64, got {y.max()}")
    if y.dtype.kind in "iu":
        return y.astype(np.int64, copy=False)
    if y.dtype.kind != "f":
        raise ValueError(f"{who} expected integer class labels, got dtype {y.dtype}")
    # -2**63 and 2**63 are floats exactly; NaN fails every comparison
    bad = ~((y == np.trunc(y)) & (y >= float(_INT64.min)) & (y < -float(_INT64.min)))
    if bad.any():
        first = np.flatnonzero(bad.ravel())[0]
        raise ValueError(
            f"{who} expected integer class labels, got {y.ravel()[first].item()!r} at index "
            f"{first} (dtype {y.dtype})"
        )
    return y.astype(np.int64)


class DataLoader:
    """Iterate over ``(images, labels)`` in mini-batches.

    Parameters
    ----------
    x : np.ndarray, shape (N, C, H, W)
        Images: uint8 (scaled to float32 in [0, 1] batch by batch) or float.
    y : np.ndarray of int, shape (N,)
        Class labels: integers, or floats that are whole numbers (others raise
        ValueError rather than being truncated).
    batch_size : int
        Images per batch (a positive int, not a bool).
    shuffle : bool, default False
        Visit the images in a fresh random permutation every epoch (each image
        exactly once: no sampling with replacement); in order when False, as
        PyTorch's default, so that an evaluation loader's batches line up with ``y``.
    drop_last : bool
        Leave out the last batch when it is smaller than ``batch_size``.
    transform : callable, optional
        Applied to each host float32 batch (N, C, H, W), e.g. a
        :class:`~jitnet.data.transforms.Compose` of augmentations and Normalize. It
        must return a host float ``np.ndarray`` (N, C, H', W') of the same N; anything
        else raises TypeError (not an array) or ValueError when the batch is made.
    seed : int, optional
        Seed of this loader's own generator for the permutations; jitnet's
        global one (:func:`jitnet.manual_seed`) when ``None``.

    Yields
    ------
    xb : array of float32, shape (B, C, H', W')
        On the active target (``jitnet.targets.backend().asarray``).
    yb : np.ndarray of int64, shape (B,)
        On the host: layers and losses accept host labels.
    """

    def __init__(self, x, y, batch_size, shuffle=False, drop_last=False, transform=None,
                 seed=None):
        x = np.asarray(x)
        y = np.asarray(y)
        if x.ndim != 4:
            raise ValueError(f"DataLoader expected images of shape (N, C, H, W), got {x.shape}")
        check_image_dtype("DataLoader", x.dtype)
        if y.shape != (len(x),):
            raise ValueError(
                f"DataLoader expected labels of shape ({len(x)},) to match the images, "
                f"got {y.shape}"
            )
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader expected a callable transform or None, got {transform!r} "
                            f"({type(transform).__name__})")
        self.x = x
        self.y = _integer_labels("DataLoader", y)
        self.batch_size = check_int("DataLoader", "batch_size", batch_size, 1)
        self.shuffle = check_flag("DataLoader", "shuffle", shuffle)
        self.drop_last = check_flag("DataLoader", "drop_last", drop_last)
        self.transform = transform
        self.seed = _check_seed("DataLoader", seed)
        self._own = None if seed is None else np.random.default_rng(seed)

    def __len__(self):
        """Number of batches per epoch."""
        if self.drop_last:
            return len(self.x) // self.batch_size
        return -(-len(self.x) // self.batch_size)

    def _order(self):
        if not self.shuffle:
            return np.arange(len(self.x))
        gen = self._own if self._own is not None else _rng.generator()
        return gen.permutation(len(self.x))

    def __iter__(self):
        order = self._order()
        backend = targets.backend()
        for b in range(len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            xb = self.x[index]
            if xb.dtype == np.uint8:
                xb = xb.astype(np.float32) * np.float32(1.0 / 255.0)
            else:
                xb = xb.astype(np.float32, copy=False)
            if self.transform is not None:
                xb = self.transform(xb)
                _check_transformed(self.transform, xb, len(index))
            yield backend.asarray(np.ascontiguousarray(xb, dtype=np.float32)), self.y[index]


def _transform_name(transform):
    """``<lambda>``, ``normalise`` or ``Compose([...])``: how messages name a transform."""
    return getattr(transform, "__qualname__", None) or repr(transform)


def _check_transformed(transform, xb, n):
    """Raise unless ``xb``, what ``transform`` returned for a batch of ``n``, is a host
    ``(n, C, H, W)`` float array.

    Otherwise it would be cast to float32 whatever it was: ``None`` (a transform that
    forgot its ``return``) into a batch of one NaN, ints silently, a shorter batch
    out of step with its labels. Only attributes are read: this runs for every batch.
    """
    def fail(error, got, hint=""):
        raise error(
            f"DataLoader: transform {_transform_name(transform)} returned {got} (expected "
            f"an (N, C, H, W) float array with N={n}, the batch it was given){hint}"
        )

    if not isinstance(xb, np.ndarray):
        fail(TypeError, "None" if xb is None else f"a {type(xb).__name__}")
    if xb.ndim != 4:
        fail(ValueError, f"an array of shape {xb.shape}")
    if xb.dtype.kind != "f":
        fail(ValueError, f"an array of dtype {xb.dtype}")
    if len(xb) != n:
        fail(ValueError, f"{len(xb)} images, shape {xb.shape}", "; the labels pair up "
             "with the images by position, so a transform must keep every image")

"""Mini-batches: a fresh permutation every epoch, transforms, then the active target."""

import numpy as np

from .. import rng as _rng
from .. import targets


class DataLoader:
    """Iterate over ``(images, labels)`` in mini-batches.

    Parameters
    ----------
    x : np.ndarray, shape (N, C, H, W)
        Images: uint8 (scaled to float32 in [0, 1] batch by batch) or float.
    y : np.ndarray of int, shape (N,)
        Labels.
    batch_size : int
        Images per batch.
    shuffle : bool
        Visit the images in a fresh random permutation every epoch (each image
        exactly once: no sampling with replacement); in order when False.
    drop_last : bool
        Leave out the last batch when it is smaller than ``batch_size``.
    transform : callable, optional
        Applied to each host float32 batch (N, C, H, W), e.g. a
        :class:`~jitnet.data.transforms.Compose` of augmentations and Normalize.
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

    def __init__(self, x, y, batch_size, shuffle=True, drop_last=False, transform=None,
                 seed=None):
        x = np.asarray(x)
        y = np.asarray(y)
        if x.ndim != 4:
            raise ValueError(f"DataLoader expected images of shape (N, C, H, W), got {x.shape}")
        if y.shape != (len(x),):
            raise ValueError(
                f"DataLoader expected labels of shape ({len(x)},) to match the images, "
                f"got {y.shape}"
            )
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"DataLoader expected a positive int batch_size, got {batch_size!r}")
        self.x = x
        self.y = y.astype(np.int64, copy=False)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.transform = transform
        self.seed = seed
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
            yield backend.asarray(np.ascontiguousarray(xb, dtype=np.float32)), self.y[index]

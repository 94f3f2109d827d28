"""Batch-wise augmentation and normalisation of host float32 NCHW images.

Each transform takes and returns a host ``np.ndarray`` of shape (N, C, H, W)
(float32, or float64 which stays float64); the :class:`~jitnet.data.DataLoader`
moves the result to the active target. Random choices (crop offsets, flip
flags) are drawn on the host from the transform's generator (``seed=`` or
jitnet's global one, :func:`jitnet.manual_seed`), then one parallel kernel
applies them, one image per ``prange`` iteration.
"""

import numpy as np
from numba import njit, prange

from .. import config
from .. import rng as _rng

__all__ = ["Compose", "Normalize", "RandomCrop", "RandomHorizontalFlip", "ToFloat"]


def _check_batch(x, who):
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        shape = getattr(x, "shape", None)
        raise ValueError(f"{who} expected a host NCHW array (N, C, H, W), got shape {shape}")


class _Random:
    """Holds the generator of a random transform: its own when seeded, else jitnet's."""

    def __init__(self, seed):
        self.seed = seed
        self._own = None if seed is None else np.random.default_rng(seed)

    def _generator(self):
        return self._own if self._own is not None else _rng.generator()


@njit(parallel=True, cache=True, fastmath=config.FASTMATH)
def _crop_kernel(x, offsets, padding, out):
    n, c, h, w = x.shape
    size_h, size_w = out.shape[2], out.shape[3]
    for i in prange(n):  # no race: iteration i writes only out[i]
        top = offsets[i, 0] - padding
        left = offsets[i, 1] - padding
        for ch in range(c):
            for y in range(size_h):
                sy = y + top
                for xx in range(size_w):
                    sx = xx + left
                    if 0 <= sy < h and 0 <= sx < w:
                        out[i, ch, y, xx] = x[i, ch, sy, sx]
                    else:
                        out[i, ch, y, xx] = 0.0  # zero padding
    return out


@njit(parallel=True, cache=True, fastmath=config.FASTMATH)
def _flip_kernel(x, flip, out):
    n, c, h, w = x.shape
    for i in prange(n):  # no race: iteration i writes only out[i]
        for ch in range(c):
            for y in range(h):
                for xx in range(w):
                    out[i, ch, y, xx] = x[i, ch, y, w - 1 - xx] if flip[i] else x[i, ch, y, xx]
    return out


@njit(parallel=True, cache=True, fastmath=config.FASTMATH)
def _normalize_kernel(x, mean, invstd, out):
    n, c, h, w = x.shape
    for i in prange(n):  # no race: iteration i writes only out[i]
        for ch in range(c):
            for y in range(h):
                for xx in range(w):
                    out[i, ch, y, xx] = (x[i, ch, y, xx] - mean[ch]) * invstd[ch]
    return out


class ToFloat:
    """uint8 images in [0, 255] to float32 in [0, 1]; float input passes unchanged.

    The DataLoader already does this before any transform; it is here for use
    outside a loader.
    """

    def __call__(self, x):
        x = np.asarray(x)
        if x.dtype == np.uint8:
            return x.astype(np.float32) * np.float32(1.0 / 255.0)
        return x

    def __repr__(self):
        return "ToFloat()"


class RandomCrop(_Random):
    """Zero-pad each image by ``padding`` on every side and crop a random ``size`` window.

    Parameters
    ----------
    size : int or (int, int)
        Output height and width.
    padding : int
        Zeros added on each side before cropping (4 for CIFAR).
    seed : int, optional
        Seed of this transform's own generator; jitnet's global one when ``None``.

    Notes
    -----
    Image ``i`` gets offsets ``(top, left)`` in ``0 .. H + 2 * padding - size``,
    and ``out[i, :, y, x] = padded[i, :, y + top, x + left]``.
    """

    def __init__(self, size, padding=0, seed=None):
        super().__init__(seed)
        self.size = (size, size) if np.isscalar(size) else tuple(size)
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"RandomCrop expected a positive size or (h, w), got {size!r}")
        if padding < 0:
            raise ValueError(f"RandomCrop expected padding >= 0, got {padding}")
        self.padding = int(padding)

    def __call__(self, x):
        """Crop ``x`` (N, C, H, W) to (N, C, size_h, size_w)."""
        _check_batch(x, "RandomCrop")
        h, w = x.shape[2] + 2 * self.padding, x.shape[3] + 2 * self.padding
        if self.size[0] > h or self.size[1] > w:
            raise ValueError(
                f"RandomCrop of size {self.size} does not fit images of padded size ({h}, {w})"
            )
        gen = self._generator()
        offsets = np.empty((len(x), 2), dtype=np.int64)
        offsets[:, 0] = gen.integers(0, h - self.size[0] + 1, size=len(x))
        offsets[:, 1] = gen.integers(0, w - self.size[1] + 1, size=len(x))
        out = np.empty(x.shape[:2] + self.size, dtype=x.dtype)
        return _crop_kernel(np.ascontiguousarray(x), offsets, self.padding, out)

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding}, seed={self.seed})"


class RandomHorizontalFlip(_Random):
    """Mirror each image left-right with probability ``p``.

    Parameters
    ----------
    p : float
        Probability of a flip, in [0, 1].
    seed : int, optional
        Seed of this transform's own generator; jitnet's global one when ``None``.
    """

    def __init__(self, p=0.5, seed=None):
        super().__init__(seed)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip expected p in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, x):
        """Flip ``x`` (N, C, H, W); the flipped images equal ``x[i, :, :, ::-1]``."""
        _check_batch(x, "RandomHorizontalFlip")
        flip = self._generator().random(len(x)) < self.p
        out = np.empty_like(x)
        return _flip_kernel(np.ascontiguousarray(x), flip, out)

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p}, seed={self.seed})"


class Normalize:
    """Subtract a per-channel mean and divide by a per-channel standard deviation.

    Parameters
    ----------
    mean, std : sequence of float, length C
        Per-channel statistics (for images already scaled to [0, 1]).
    """

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.std = np.asarray(std, dtype=np.float64).reshape(-1)
        if self.mean.shape != self.std.shape:
            raise ValueError(
                f"Normalize expected mean and std of one length, got {self.mean.shape} "
                f"and {self.std.shape}"
            )
        if np.any(self.std <= 0):
            raise ValueError(f"Normalize expected positive std, got {self.std}")

    @classmethod
    def fit(cls, x):
        """A Normalize with the per-channel mean and std of a training set.

        Parameters
        ----------
        x : np.ndarray, shape (N, C, H, W)
            uint8 images (scaled by 1/255 first, as the DataLoader does) or floats.
        """
        _check_batch(x, "Normalize.fit")
        scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
        mean = np.empty(x.shape[1])
        std = np.empty(x.shape[1])
        for ch in range(x.shape[1]):  # one channel at a time: no float64 copy of the whole set
            plane = x[:, ch].astype(np.float64) * scale
            mean[ch] = plane.mean()
            std[ch] = plane.std()
        return cls(mean, np.maximum(std, 1e-12))

    from_data = fit

    def __call__(self, x):
        """``(x - mean[c]) / std[c]`` for every channel ``c`` of ``x`` (N, C, H, W)."""
        _check_batch(x, "Normalize")
        if x.shape[1] != len(self.mean):
            raise ValueError(
                f"Normalize expected {len(self.mean)} channels, got {x.shape[1]} "
                f"(input shape {x.shape})"
            )
        mean = self.mean.astype(x.dtype)
        invstd = (1.0 / self.std).astype(x.dtype)
        return _normalize_kernel(np.ascontiguousarray(x), mean, invstd, np.empty_like(x))

    def __repr__(self):
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x):
        for transform in self.transforms:
            x = transform(x)
        return x

    def __repr__(self):
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"

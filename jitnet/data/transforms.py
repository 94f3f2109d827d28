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
from .._checks import check_image_dtype, check_int, check_real, is_real

__all__ = ["Compose", "Normalize", "RandomCrop", "RandomHorizontalFlip", "ToFloat"]


#: What the crop and flip kernels are compiled for (each dtype is one more compile);
#: float16 and object arrays have no Numba kernel at all
_KERNEL_DTYPES = (np.dtype(np.uint8), np.dtype(np.float32), np.dtype(np.float64))
_FLOAT_DTYPES = _KERNEL_DTYPES[1:]


def _names(dtypes):
    """``"uint8, float32 or float64"``."""
    names = [d.name for d in dtypes]
    return ", ".join(names[:-1]) + " or " + names[-1]


def _check_batch(x, who, dtypes=None, hint=""):
    """Raise unless ``x`` is a host ``(N, C, H, W)`` array of one of ``dtypes``: a
    TypeError for what is no ``np.ndarray`` (a list, a device array), else a ValueError."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{who} expected a host NCHW array (N, C, H, W), an np.ndarray, got "
                        f"{type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{who} expected a host NCHW array (N, C, H, W), got shape {x.shape}")
    if dtypes is not None and x.dtype not in dtypes:
        raise ValueError(
            f"{who} expected a {_names(dtypes)} batch, got dtype {x.dtype} (input shape "
            f"{x.shape}){hint}"
        )


def _check_seed(who, seed):
    """``seed``, None or an int >= 0 (NumPy's seeds), after checking it is one."""
    return None if seed is None else check_int(who, "seed", seed, 0)


class _Random:
    """Holds the generator of a random transform: its own when seeded, else jitnet's."""

    def __init__(self, seed):
        self.seed = _check_seed(type(self).__name__, seed)
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
    outside a loader. As the DataLoader, it takes a host ``np.ndarray`` (TypeError
    otherwise) of uint8 or floats: other integers raise ValueError rather than pass
    unscaled (0..255 where uint8 gives 0..1).
    """

    def __call__(self, x):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"ToFloat expected a host np.ndarray of uint8 or float images, "
                            f"got {type(x).__name__}")
        check_image_dtype("ToFloat", x.dtype)
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
        Output height and width (positive ints; NumPy integers too, not floats or bools).
    padding : int
        Zeros added on each side before cropping (4 for CIFAR), ``>= 0``.
    seed : int, optional
        Seed of this transform's own generator; jitnet's global one when ``None``.

    Calls take a uint8, float32 or float64 batch and return one of the same dtype.

    Notes
    -----
    Image ``i`` gets offsets ``(top, left)`` in ``0 .. H + 2 * padding - size``,
    and ``out[i, :, y, x] = padded[i, :, y + top, x + left]``.
    """

    def __init__(self, size, padding=0, seed=None):
        pair = (size, size) if isinstance(size, (int, np.integer)) else size
        if not isinstance(pair, (tuple, list)):
            raise TypeError(f"RandomCrop expected size to be an int or (h, w), got {size!r} "
                            f"({type(size).__name__})")
        if len(pair) != 2:
            raise ValueError(f"RandomCrop expected size to be an int or (h, w), got {size!r}")
        size = tuple(check_int("RandomCrop", "size", s, 1) for s in pair)
        padding = check_int("RandomCrop", "padding", padding, 0)
        super().__init__(seed)
        self.size = size
        self.padding = padding

    def __call__(self, x):
        """Crop ``x`` (N, C, H, W) to (N, C, size_h, size_w)."""
        _check_batch(x, "RandomCrop", _KERNEL_DTYPES)
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
        Probability of a flip, a real number in [0, 1] (not a bool or a string).
    seed : int, optional
        Seed of this transform's own generator; jitnet's global one when ``None``.

    Calls take a uint8, float32 or float64 batch and return one of the same dtype.
    """

    def __init__(self, p=0.5, seed=None):
        p = check_real("RandomHorizontalFlip", "p", p, "in [0, 1] (a probability)",
                       lambda v: 0 <= v <= 1)
        super().__init__(seed)
        self.p = p

    def __call__(self, x):
        """Flip ``x`` (N, C, H, W); the flipped images equal ``x[i, :, :, ::-1]``."""
        _check_batch(x, "RandomHorizontalFlip", _KERNEL_DTYPES)
        flip = self._generator().random(len(x)) < self.p
        out = np.empty_like(x)
        return _flip_kernel(np.ascontiguousarray(x), flip, out)

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p}, seed={self.seed})"


class Normalize:
    """Subtract a per-channel mean and divide by a per-channel standard deviation.

    Parameters
    ----------
    mean, std : float or sequence of float, length C or 1
        Per-channel statistics (for images already scaled to [0, 1]); finite, and
        ``std > 0``. A single value is used for every channel, as torchvision
        broadcasts one (``Normalize([0.5], [0.25])`` on RGB images).

    Calls take a float32 or float64 batch (as torchvision's Normalize, a float
    tensor: convert uint8 images with :class:`ToFloat` first) and return one of
    the same dtype.
    """

    def __init__(self, mean, std):
        mean, std = (self._channels(name, value) for name, value in (("mean", mean),
                                                                     ("std", std)))
        if len(mean) != len(std) and 1 not in (len(mean), len(std)):
            raise ValueError(
                f"Normalize expected mean and std of one length (or a single value for "
                f"every channel), got {len(mean)} and {len(std)} values"
            )
        if not np.all(std > 0):  # also refuses NaN
            raise ValueError(f"Normalize expected positive std, got {std}")
        self.mean, self.std = mean, std

    @staticmethod
    def _channels(name, value):
        """``value`` as a float64 vector of at least one finite number: a TypeError for
        what holds no numbers (a str, None, bools), a ValueError for no or bad ones."""
        try:
            array = np.asarray(value)
            if array.size and (array.dtype.kind not in "iufO" or (  # str, bool, complex
                    array.dtype.kind == "O" and not all(map(is_real, array.ravel())))):
                raise TypeError
            array = array.astype(np.float64).reshape(-1)
        except (TypeError, ValueError):  # also a ragged sequence
            raise TypeError(
                f"Normalize expected {name} to be a sequence of numbers, one per channel, "
                f"got {value!r} ({type(value).__name__})"
            ) from None
        if array.size == 0 or not np.all(np.isfinite(array)):
            raise ValueError(
                f"Normalize expected {name} to hold one finite number per channel, "
                f"got {value!r}"
            )
        return array

    @classmethod
    def fit(cls, x):
        """A Normalize with the per-channel mean and std of a training set.

        Parameters
        ----------
        x : np.ndarray, shape (N, C, H, W)
            uint8 images (scaled by 1/255 first, as the DataLoader does) or floats;
            at least one image of at least one pixel.

        A channel that holds one value throughout gets std 1, as scikit-learn's
        ``StandardScaler`` gives zero-variance features: its std is zero up to
        rounding, and dividing by it would blow the rounding of ``ToFloat`` (one
        float32 ulp) up to thousands.
        """
        _check_batch(x, "Normalize.fit", (np.dtype(np.uint8), np.dtype(np.float16),
                                          *_FLOAT_DTYPES))
        if x.shape[0] * x.shape[2] * x.shape[3] == 0:
            raise ValueError(
                f"Normalize.fit expected at least one image of at least one pixel, got "
                f"shape {x.shape}"
            )
        scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
        mean = np.empty(x.shape[1])
        std = np.empty(x.shape[1])
        for ch in range(x.shape[1]):  # one channel at a time: no float64 copy of the whole set
            plane = x[:, ch].astype(np.float64) * scale
            mean[ch] = plane.mean()
            std[ch] = plane.std()
        # zero up to float64 rounding: a constant channel (7 / 255 gives 3.5e-18)
        constant = std <= 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)
        return cls(mean, np.where(constant, 1.0, std))

    from_data = fit

    def __call__(self, x):
        """``(x - mean[c]) / std[c]`` for every channel ``c`` of ``x`` (N, C, H, W)."""
        # uint8 would cast mean and std to uint8 (0), ints truncate: both silently wrong
        _check_batch(x, "Normalize", _FLOAT_DTYPES, "; convert uint8 images with ToFloat()")
        channels = max(len(self.mean), len(self.std))
        if channels != 1 and x.shape[1] != channels:
            raise ValueError(
                f"Normalize expected {channels} channels (one per value of its mean and "
                f"std), got {x.shape[1]} (input shape {x.shape})"
            )
        # a single value stands for every channel; the kernel reads one per channel
        mean = np.broadcast_to(self.mean, x.shape[1:2]).astype(x.dtype)
        invstd = np.broadcast_to(1.0 / self.std, x.shape[1:2]).astype(x.dtype)
        return _normalize_kernel(np.ascontiguousarray(x), mean, invstd, np.empty_like(x))

    def __repr__(self):
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms):
        try:
            self.transforms = list(transforms)
        except TypeError:
            raise TypeError(
                f"Compose expected a sequence of transforms, got {transforms!r} "
                f"({type(transforms).__name__})"
            ) from None
        for i, transform in enumerate(self.transforms):
            if not callable(transform):
                raise TypeError(
                    f"Compose expected callable transforms, got {transform!r} at index {i} "
                    f"({type(transform).__name__})"
                )

    def __call__(self, x):
        for transform in self.transforms:
            x = transform(x)
        return x

    def __repr__(self):
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"

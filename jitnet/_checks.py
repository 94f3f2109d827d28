"""Checks of the scalar arguments the package takes: counts, real numbers, flags.

One rule for all of them: a value of the wrong kind is a TypeError, a value of the
right kind out of range a ValueError, and the message says who checked, which
argument, what was expected and what came::

    SGD expected lr to be a finite number >= 0, got '0.1' (str)
    RandomCrop expected padding to be an int >= 0, got -1

A bool is no number here (Python counts ``True`` as 1, but ``lr=True`` is a slip),
and only a bool is a flag (``bool("False")`` is True). A float is no count:
``int(2.5)`` would truncate it.
"""

import math
import numbers

import numpy as np

_BOOLS = (bool, np.bool_)


def is_int(value):
    """Whether ``value`` is a Python or NumPy integer (a bool is not)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, _BOOLS)


def is_real(value):
    """Whether ``value`` is a Python or NumPy real number (a bool is not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, _BOOLS)


def _got(value, of_kind):
    """``'0.1' (str)``: the value, and its type where the type is what was wrong."""
    return f"{value!r}" if of_kind else f"{value!r} ({type(value).__name__})"


def check_int(owner, name, value, minimum):
    """``value`` as an int, after checking it is an integer ``>= minimum``."""
    expected = f"{owner} expected {name} to be an int >= {minimum}"
    if not is_int(value):
        raise TypeError(f"{expected}, got {_got(value, False)}")
    if value < minimum:
        raise ValueError(f"{expected}, got {_got(value, True)}")
    return int(value)


def check_real(owner, name, value, condition="", ok=None):
    """``value`` as a float, after checking it is a finite real number that passes
    ``ok`` (``condition`` says ``ok`` in words for the message: ``"> 0"``)."""
    expected = f"{owner} expected {name} to be a finite number"
    if condition:
        expected += f" {condition}"
    if not is_real(value):
        raise TypeError(f"{expected}, got {_got(value, False)}")
    if not math.isfinite(value) or (ok is not None and not ok(value)):
        raise ValueError(f"{expected}, got {_got(value, True)}")
    return float(value)


def check_flag(owner, name, value):
    """``value`` as a bool, after checking it is one (``True``, ``np.True_``, ...)."""
    if not isinstance(value, _BOOLS):
        raise TypeError(f"{owner} expected {name} to be True or False, got "
                        f"{_got(value, False)}")
    return bool(value)


def check_image_dtype(owner, dtype, name="x", subject=""):
    """Raise ValueError unless ``dtype`` is uint8 (images in 0..255) or a float ([0, 1]).

    Other integer images would be taken as [0, 1] floats, 255 times too bright, so
    every entry point that scales images refuses them, with the cast that fixes it::

        DataLoader expected uint8 or float images, got dtype int64 (for 0..255 images,
        pass x.astype(np.uint8))

    ``subject`` goes between "expected" and "uint8" (``"x to be "``); ``name`` is the
    argument the hint casts.
    """
    dtype = np.dtype(dtype)
    if dtype != np.uint8 and dtype.kind != "f":
        hint = f" (for 0..255 images, pass {name}.astype(np.uint8))" if dtype.kind in "iu" else ""
        raise ValueError(f"{owner} expected {subject}uint8 or float images, got dtype "
                         f"{dtype}{hint}")

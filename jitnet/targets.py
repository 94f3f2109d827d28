"""Targets: where arrays live and kernels run.

``"numpy"`` is the vectorised reference, ``"cpu"`` the parallel Numba kernels
(the default) and ``"cuda"`` the numba.cuda kernels. Each target is one package
under :mod:`jitnet.kernels` exporting the same functions (the kernel contract,
:data:`jitnet.kernels.CONTRACT`); :func:`backend` hands back the active one.
"""

import contextlib
import importlib

import numpy as np

from . import config

TARGETS = ("numpy", "cpu", "cuda")
_MODULE_NAMES = {"numpy": "numpy_ref", "cpu": "cpu", "cuda": "cuda"}


class TargetUnavailableError(RuntimeError):
    """The requested target cannot run here; the message says why and what to do."""


def _check_name(name, who="set_target"):
    if not isinstance(name, str):
        raise TypeError(f"{who} expected a target name, one of {', '.join(TARGETS)} (a str), "
                        f"got {name!r} ({type(name).__name__})")
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}: expected one of {', '.join(TARGETS)}")


def _cuda_unavailable_reason():
    """``None`` when the cuda target can run, else a sentence saying why not."""
    try:
        module = importlib.import_module(".kernels.cuda", __package__)
    except ImportError as exc:
        return (
            f"numba-cuda is not installed ({exc}); install it with "
            "`pip install 'jitnet[cuda]'` (or set NUMBA_ENABLE_CUDASIM=1 for the simulator)"
        )
    return module.unavailable_reason()


def available_targets():
    """Targets usable on this machine: ``["numpy", "cpu"]`` plus ``"cuda"`` when usable."""
    names = ["numpy", "cpu"]
    if _cuda_unavailable_reason() is None:
        names.append("cuda")
    return names


_MODULES = {}


def _check_usable(name):
    """Raise :class:`TargetUnavailableError` unless target ``name`` can run here."""
    if name == "cuda":
        reason = _cuda_unavailable_reason()
        if reason is not None:
            raise TargetUnavailableError(f"the cuda target is unavailable: {reason}")


def backend(name=None):
    """The kernel module of target ``name`` (default: the active target)."""
    name = get_target() if name is None else name
    module = _MODULES.get(name)
    if module is None:  # checked and imported once: every layer asks at every call
        _check_name(name, "backend")
        _check_usable(name)
        module = _MODULES[name] = importlib.import_module(
            ".kernels." + _MODULE_NAMES[name], __package__
        )
    return module


def set_target(name):
    """Make ``name`` ("numpy", "cpu" or "cuda") the active target.

    Raises
    ------
    TypeError
        For a name that is no str (``None``, ``1``).
    ValueError
        For an unknown name.
    TargetUnavailableError
        When the target cannot run here (for cuda: no numba-cuda, no driver, no GPU).
    """
    global _active, _environment_error
    _check_name(name)  # before backend(), which takes None for the active target
    _check_usable(name)  # every time: backend() checks only its first call
    backend(name)
    _active, _environment_error = name, None


def get_target():
    """The active target's name.

    Raises
    ------
    ValueError, TargetUnavailableError
        While the target ``JITNET_TARGET`` chose at import is unknown or cannot run
        here, until :func:`set_target` chooses another.
    """
    if _environment_error is not None:
        kind, message = _environment_error
        raise kind(message)  # a new one each time: a raised exception keeps its traceback
    return _active


@contextlib.contextmanager
def use_target(name):
    """Switch to target ``name`` inside a ``with`` block; the previous one is restored."""
    global _active, _environment_error
    previous = _active, _environment_error
    set_target(name)
    try:
        yield
    finally:
        _active, _environment_error = previous


def is_device_array(a):
    """True for a numba.cuda device array (anything with ``copy_to_host``)."""
    return hasattr(a, "copy_to_host")


def to_numpy(a):
    """Any target's array (or a scalar / list) as a ``np.ndarray`` on the host."""
    if is_device_array(a):
        return a.copy_to_host()
    return np.asarray(a)


def asarray(a, dtype=None):
    """A host array as an array of the active target (a device array on cuda)."""
    return backend().asarray(a, dtype)


def _initial_target():
    """The target ``JITNET_TARGET`` names (else the default), and why it cannot be
    used (an exception class and its message) or None.

    A bad choice does not fail the import: ``jitnet info`` and ``--target cpu`` still
    work, and :func:`get_target` (so every kernel call) raises the reason until
    :func:`set_target` chooses a target.
    """
    name = config.ENV_TARGET or config.DEFAULT_TARGET
    if name not in TARGETS:
        return name, (ValueError, f"JITNET_TARGET={name!r} is not a target: expected one "
                                  f"of {', '.join(TARGETS)}")
    if name == "cuda":
        reason = _cuda_unavailable_reason()
        if reason is not None:
            return name, (TargetUnavailableError,
                          f"JITNET_TARGET=cuda, but the cuda target is unavailable: {reason}; "
                          "unset JITNET_TARGET or choose another target")
    return name, None


_active, _environment_error = _initial_target()

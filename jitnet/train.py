"""The training loop: epochs, evaluation, history, checkpoints and resuming.

:func:`fit` trains any :class:`jitnet.nn.Module` with an explicit backward pass
on the active target::

    for x, y in loader:                       # one epoch
        scores = model(x)
        loss = loss_fn(scores, y)             # a Python float
        optimizer.zero_grad()
        model.backward(loss_fn.backward(), input_grad=False)  # no gradient for x
        optimizer.step()

and after each epoch evaluates on the test set (eval mode, batched), appends an
entry to the history and writes ``OUT/checkpoint.npz`` atomically. A checkpoint
holds everything the next epoch depends on (parameters and buffers, optimizer
and schedule state, jitnet's generator, the generators of the loader and of its
seeded transforms, the history),
so ``resume=True`` ends with exactly the parameters of an uninterrupted run.

A checkpoint is a plain ``.npz``: arrays under ``model/<name>`` and
``optimizer/<i>``, and JSON strings for everything else; it is read with
``allow_pickle=False``, so loading one runs no code.
"""

import json
import math
import os
import secrets
import sys
import time
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path

import numpy as np

from . import rng
from ._checks import check_flag, check_image_dtype, check_int, check_real
from .nn.module import Module, backward_without_input_grad
from .targets import asarray, get_target, to_numpy

#: Version tag written into every checkpoint.
CHECKPOINT_FORMAT = "jitnet-checkpoint-1"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``str(exc)`` says where the checkpoint is."""


def is_interrupt(exc):
    """True for Ctrl-C: a ``KeyboardInterrupt``, or the ``SystemError`` ("returned a
    result with an exception set") that Python raises from one when the signal
    arrived while a compiled Numba kernel ran and its dispatcher returned anyway."""
    return isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, SystemError) and isinstance(exc.__cause__, KeyboardInterrupt))


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or does not fit the model."""


# ------------------------------------------------------------------ argument checks


def _kind(value):
    """What a message says came: the type's name, or for a class passed where an
    instance belongs (``nn.SoftmaxCrossEntropyLoss`` for ``...Loss()``) that slip."""
    if isinstance(value, type):
        return f"the class {value.__name__} itself (create one: {value.__name__}(...))"
    return type(value).__name__


def _check_model(who, model):
    if not isinstance(model, Module):
        raise TypeError(f"{who} expected model to be a jitnet.nn.Module, got {_kind(model)}")


def _check_callable(who, name, value):
    """``value`` None or callable (a transform)."""
    if value is not None and not callable(value):
        raise TypeError(f"{who} expected {name} to be a callable or None, got {_kind(value)}")


def _check_images(who, name, x, layout="(N, C, H, W)"):
    """Raise unless ``x`` is a host ``layout`` array of uint8 (0..255) or float ([0, 1])
    images: other integers would be taken as [0, 1] floats, 255 times too bright."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{who} expected {name} to be an np.ndarray of images {layout}, "
                        f"got {_kind(x)}")
    if x.ndim != 4:
        raise ValueError(f"{who} expected {name} to be images {layout}, got shape {x.shape}")
    check_image_dtype(who, x.dtype, name, f"{name} to be ")


def _check_label_range(y, num_classes, expected):
    """Raise ``ValueError("<expected>, got <label> at index <i>")`` for the first label
    of the integer array ``y`` outside ``[0, num_classes)``."""
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(f"{expected}, got {y[index]} at index {index}")


# --------------------------------------------------------------------------- files


def atomic_write(path, write):
    """Write a file so that ``path`` is either the old or the complete new file.

    ``write(f)`` fills a temporary file in the same folder, which then replaces
    ``path`` with :func:`os.replace` (atomic on POSIX and Windows): a crash or
    Ctrl-C mid-write never leaves a broken file behind. The file gets the mode
    ``open()`` gives a new file (``0o666`` less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_file_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _new_file_beside(path):
    """``(fd, name)`` of a new, empty file ``<path>.<random>.tmp``, open for writing.

    Created with mode ``0o666``, which the OS reduces by the umask as for
    ``open()``, as the PNGs beside it are. Not ``tempfile.mkstemp``: its 0600
    would survive :func:`os.replace`, and changing that to the umask's mode means
    reading the umask, which only setting it does (for a moment, for every thread).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        name = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path} in 100 tries")


def write_json(path, obj):
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


# --------------------------------------------------------------------- state trees


def _pack(obj, arrays, prefix):
    """A JSON-able skeleton of a nested state; arrays go into ``arrays``.

    Optimizer and schedule states are nests of dicts, lists, numbers and arrays
    (on any target). Arrays are replaced by ``{"__array__": key}`` and stored
    under that key in the ``.npz``, so the file needs no pickle.
    """
    if isinstance(obj, dict):
        return {"__dict__": [[_pack(k, arrays, prefix), _pack(v, arrays, prefix)]
                             for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_pack(v, arrays, prefix) for v in obj],
                "tuple": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        # JSON has no NaN/inf; repr round-trips every float64 exactly
        return {"__float__": repr(float(obj))}
    key = f"{prefix}/{len(arrays)}"
    arrays[key] = to_numpy(obj)
    return {"__array__": key}


def _unpack(obj, arrays):
    """Inverse of :func:`_pack`; arrays come back as host ``np.ndarray``."""
    if isinstance(obj, dict):
        if "__dict__" in obj:
            return {_unpack(k, arrays): _unpack(v, arrays) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            items = [_unpack(v, arrays) for v in obj["__list__"]]
            return tuple(items) if obj.get("tuple") else items
        if "__float__" in obj:
            return float(obj["__float__"])
        return arrays[obj["__array__"]]
    return obj


def _loader_state(loader):
    """The states of the loader's random generators: its own (shuffling) and those of
    its transforms that have one (``seed=`` augmentations), so that a resumed run
    draws the same permutations, crops and flips as an uninterrupted one."""
    if hasattr(loader, "state_dict"):
        return loader.state_dict()
    generator = _loader_generator(loader)
    return {
        "generator": None if generator is None else generator.bit_generator.state,
        "transforms": [None if g is None else g.bit_generator.state
                       for g in _transform_generators(getattr(loader, "transform", None))],
    }


def _set_loader_state(loader, state, path):
    if state is None:
        return
    if hasattr(loader, "load_state_dict"):
        loader.load_state_dict(state)
        return
    if "transforms" not in state:  # a checkpoint from before transforms were saved
        state = {"generator": state, "transforms": None}
    generators = _transform_generators(getattr(loader, "transform", None))
    saved = state["transforms"]
    if saved is not None and [s is None for s in saved] != [g is None for g in generators]:
        raise CheckpointError(
            f"checkpoint {path} does not fit this loader: it holds the generators of "
            f"{sum(s is not None for s in saved)} seeded transforms out of {len(saved)}, "
            f"the loader has {sum(g is not None for g in generators)} out of "
            f"{len(generators)}")
    generator = _loader_generator(loader)
    if generator is not None and state["generator"] is not None:
        generator.bit_generator.state = state["generator"]
    for generator, saved_state in zip(generators, saved or ()):
        if generator is not None:
            generator.bit_generator.state = saved_state


def _transform_generators(transform):
    """The own generator (or None) of ``transform`` and of each transform inside it (a
    ``Compose``'s ``transforms``), depth first, in order."""
    if transform is None:
        return []
    found = [_loader_generator(transform)]
    for inner in getattr(transform, "transforms", None) or ():
        found += _transform_generators(inner)
    return found


def _loader_generator(loader):
    # jitnet.data.DataLoader and the random transforms keep their seeded generator in
    # ``_own`` (None: they draw from jitnet's global generator, which the checkpoint
    # saves anyway)
    for name in ("generator", "rng", "_own", "_generator", "_rng"):
        generator = getattr(loader, name, None)
        if isinstance(generator, np.random.Generator):
            return generator
    return None


# --------------------------------------------------------------------- checkpoints


def save_checkpoint(path, model, optimizer=None, scheduler=None, *, epoch, loader=None,
                    history=(), meta=None):
    """Write a checkpoint atomically (see the module docstring for its contents).

    Parameters
    ----------
    path : str or Path
        Usually ``OUT/checkpoint.npz``.
    model : jitnet.nn.Module
        Its ``state_dict()`` (parameters and buffers) is saved.
    optimizer, scheduler : optional
        Saved through their ``state_dict()``.
    epoch : int
        Number of completed epochs.
    loader : jitnet.data.DataLoader, optional
        Its generator's state and those of its seeded transforms are saved, so that
        the next epoch shuffles and augments the same way.
    history : list of dict
        One entry per completed epoch.
    meta : dict, optional
        Anything JSON-able (model name, target, configuration).

    Raises
    ------
    TypeError, ValueError
        For a model that is no ``jitnet.nn.Module``, an optimizer without
        ``state_dict()``, an epoch that is no int ``>= 0`` (``1.7`` is not truncated)
        or a meta that is no dict; nothing is written then.
    """
    _check_model("save_checkpoint", model)
    if optimizer is not None and not callable(getattr(optimizer, "state_dict", None)):
        raise TypeError(f"save_checkpoint expected optimizer to be None or a jitnet.optim "
                        f"optimizer (with state_dict()), got {_kind(optimizer)}")
    epoch = check_int("save_checkpoint", "epoch", epoch, 0)
    if meta is not None and not isinstance(meta, dict):
        # load_checkpoint would refuse the file
        raise TypeError(f"save_checkpoint expected meta to be a dict or None, got "
                        f"{_kind(meta)}")
    arrays = {}
    for name, value in model.state_dict().items():
        arrays["model/" + name] = to_numpy(value)
    fields = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "optimizer": _pack(optimizer.state_dict(), arrays, "optimizer")
        if optimizer is not None else None,
        "scheduler": _pack(_scheduler_state(scheduler), arrays, "scheduler")
        if scheduler is not None else None,
        "rng": _pack(rng.get_state(), arrays, "rng"),
        "loader": _pack(_loader_state(loader), arrays, "loader") if loader is not None else None,
        "history": list(history),
        "meta": meta or {},
    }
    for key, value in fields.items():
        arrays[key] = np.array(json.dumps(value, default=_json_default))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path):
    """Read a checkpoint into a dict; raise :class:`CheckpointError` naming the file.

    Returns
    -------
    dict
        ``model`` (name -> ``np.ndarray``), ``optimizer``, ``scheduler``, ``rng``,
        ``loader`` (states as saved), ``epoch`` (int >= 0), ``history`` (list),
        ``meta``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")

    def refuse(why):
        return CheckpointError(f"cannot read checkpoint {path}: not a jitnet checkpoint "
                               f"({why}); delete it to start again")

    if not zipfile.is_zipfile(path):  # np.load would take it for a pickle and say so
        raise refuse("not an .npz archive")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc):  # NumPy's advice to load it unsafely: never here
            raise refuse("it holds pickled objects, which jitnet never loads") from None
        raise refuse(f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # zip and npy errors
        raise refuse(f"{type(exc).__name__}: {exc}") from None
    kinds = {"format": (str, "a str"), "epoch": (int, "an int"), "history": (list, "a list"),
             "meta": (dict, "a dict")}
    fields = {}
    for key in ("format", "epoch", "optimizer", "scheduler", "rng", "loader", "history",
                "meta"):
        if key not in arrays:
            raise refuse(f"no {key!r} entry")
        try:
            fields[key] = json.loads(str(arrays[key]))
        except ValueError as exc:
            raise refuse(f"its {key!r} entry is no JSON: {exc}") from None
        kind, wanted = kinds.get(key, (object, ""))
        if not isinstance(fields[key], kind) or isinstance(fields[key], bool):
            raise refuse(f"its {key!r} entry is a {type(fields[key]).__name__}, expected "
                         f"{wanted}")
    if fields["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is a {fields['format']!r} file, "
                              f"expected {CHECKPOINT_FORMAT!r}")
    if fields["epoch"] < 0:
        raise refuse(f"its 'epoch' entry is {fields['epoch']}, expected an int >= 0")
    if not isinstance(fields["meta"].get("config", {}), dict):
        raise refuse("its meta's 'config' is no dict")
    state = {
        "model": {key[len("model/"):]: value for key, value in arrays.items()
                  if key.startswith("model/")},
        "epoch": fields["epoch"],
        "history": fields["history"],
        "meta": fields["meta"],
    }
    try:
        for key in ("optimizer", "scheduler", "rng", "loader"):
            state[key] = _unpack(fields[key], arrays)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise refuse(f"its {key!r} entry does not unpack: {type(exc).__name__}: {exc}") \
            from None
    return state


def _scheduler_state(scheduler):
    if hasattr(scheduler, "state_dict"):
        return scheduler.state_dict()
    return {key: value for key, value in vars(scheduler).items()
            if isinstance(value, (int, float, list, tuple)) and not key.startswith("_")}


def _set_scheduler_state(scheduler, state):
    if hasattr(scheduler, "load_state_dict"):
        scheduler.load_state_dict(state)
    else:
        vars(scheduler).update(state)


def _restore(state, path, model, optimizer, scheduler, loader):
    """Load the checkpoint ``state`` into the run's objects: all of it, or nothing.

    Each ``load_state_dict`` checks its part before it sets it, but a part can be
    refused after those before it were loaded (an Adam checkpoint by an SGD
    optimizer, once the model has the checkpoint's parameters; a loader with other
    seeded transforms). So the objects' states are copied first and put back when a
    part fails: after a :class:`CheckpointError` the model, optimizer, schedule,
    jitnet's generator and the loader's are as they were.
    """
    undo = _snapshot(model, optimizer, scheduler, loader)
    try:
        model.load_state_dict(state["model"])
        if optimizer is not None and state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            _set_scheduler_state(scheduler, state["scheduler"])
        rng.set_state(state["rng"])
        if loader is not None:
            _set_loader_state(loader, state["loader"], path)
    except BaseException as exc:
        undo()
        if isinstance(exc, CheckpointError) or not isinstance(exc, (KeyError, ValueError,
                                                                    TypeError)):
            raise
        raise CheckpointError(f"checkpoint {path} does not fit this model, optimizer, "
                              f"schedule or loader: {exc}") from None


def _snapshot(model, optimizer, scheduler, loader):
    """A function that puts the states of the run's objects back as they are now."""
    saved = [(model.load_state_dict, model.state_dict())]
    if scheduler is not None:
        saved.append((partial(_set_scheduler_state, scheduler), _scheduler_state(scheduler)))
    if optimizer is not None:  # after the schedule, whose load_state_dict sets lr
        saved.append((optimizer.load_state_dict, optimizer.state_dict()))
    saved.append((rng.set_state, rng.get_state()))
    if loader is not None:
        saved.append((partial(_set_loader_state, loader, path=None), _loader_state(loader)))

    def undo():
        for load, state in saved:
            load(state)

    return undo


# ---------------------------------------------------------------------- evaluation


def predict(model, x, *, batch_size=256, transform=None):
    """Class predictions of ``model`` for images ``x``, in eval mode, batch by batch.

    Parameters
    ----------
    model : jitnet.nn.Module
        Returns scores ``(B, C)`` for a batch.
    x : np.ndarray
        Images ``(N, C, H, W)``: uint8 (0..255, scaled to [0, 1] batch by batch, as
        :class:`jitnet.data.DataLoader` does) or float ([0, 1]). Each batch is cast to
        the model's dtype (that of its first parameter; float32 without parameters).
    batch_size : int
        Images per forward pass (an int >= 1; a TypeError for another kind).
    transform : callable, optional
        Applied to each batch, in the model's dtype, before the model (for example
        normalisation).

    Returns
    -------
    np.ndarray
        ``(N,)`` int64 predicted labels. The model is left in eval mode.

    Raises
    ------
    TypeError
        For a model that is no ``jitnet.nn.Module``, ``x`` that is no ``np.ndarray``
        (a list), or a transform that is not callable.
    ValueError
        For ``x`` that is not 4-D, or of another dtype than uint8 or float: other
        integer images would be read as [0, 1] floats, 255 times too bright.
    """
    _check_model("predict", model)
    _check_images("predict", "x", x)
    batch_size = check_int("predict", "batch_size", batch_size, 1)
    _check_callable("predict", "transform", transform)
    first = next(iter(model.parameters()), None)
    dtype = np.dtype(np.float32) if first is None else first.dtype
    model.eval()
    out = np.empty(len(x), dtype=np.int64)
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        if xb.dtype == np.uint8:
            xb = xb.astype(dtype) * dtype.type(1.0 / 255.0)
        else:
            xb = xb.astype(dtype, copy=False)
        if transform is not None:
            xb = transform(xb)
        scores = to_numpy(model(np.ascontiguousarray(xb)))
        out[start:start + batch_size] = scores.argmax(axis=1)
    return out


def confusion_matrix(y_true, y_pred, num_classes=10):
    """Counts of (true, predicted) label pairs, as scikit-learn's ``confusion_matrix``.

    Parameters
    ----------
    y_true, y_pred : array-like of int, shape (N,)
        Class labels in ``[0, num_classes)``, one prediction per true label.
    num_classes : int
        ``>= 1``.

    Returns
    -------
    np.ndarray
        ``(num_classes, num_classes)`` int64 counts: row = true class, column =
        predicted.

    Raises
    ------
    TypeError
        For labels that are no numbers (None, strings) or ``num_classes`` no int.
    ValueError
        For labels that are not 1-D, of two lengths, not integers or outside
        ``[0, num_classes)`` (naming the first bad one): a label of -1 would be
        counted in the last class, and one prediction for two labels broadcast.
    """
    who = "confusion_matrix"
    num_classes = check_int(who, "num_classes", num_classes, 1)
    labels = {name: _class_labels(who, name, y) for name, y in (("y_true", y_true),
                                                                ("y_pred", y_pred))}
    if len(labels["y_true"]) != len(labels["y_pred"]):
        raise ValueError(f"{who} expected y_true and y_pred of the same length (one "
                         f"prediction per label), got {len(labels['y_true'])} and "
                         f"{len(labels['y_pred'])}")
    for name, y in labels.items():
        _check_label_range(y, num_classes, f"{who} expected {name} to be labels in "
                                           f"0..{num_classes - 1}")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels["y_true"].astype(np.int64), labels["y_pred"].astype(np.int64)),
              1)
    return matrix


def _class_labels(who, name, y):
    """``y`` as a 1-D integer array (``[]`` included), after checking it is one."""
    labels = np.asarray(y)
    if labels.dtype.kind not in "biuf":
        got = f"dtype {labels.dtype}" if labels.ndim else _kind(y)
        raise TypeError(f"{who} expected {name} to be integer class labels, got {got}")
    if labels.ndim != 1:
        raise ValueError(f"{who} expected {name} to be 1-D (one label per sample), got "
                         f"shape {labels.shape}")
    if labels.dtype.kind not in "iu" and labels.size:  # [] is float64 to NumPy
        raise ValueError(f"{who} expected {name} to be integer class labels, got "
                         f"{labels[0].item()!r} at index 0 (dtype {labels.dtype})")
    return labels


def count_parameters(model):
    """Number of trainable scalars of ``model``."""
    return int(sum(int(np.prod(p.data.shape)) for p in model.parameters()))


# ------------------------------------------------------------------------ training


def fit(model, loss_fn, optimizer, train_loader, x_test, y_test, *, epochs, scheduler=None,
        out_dir=None, resume=False, quiet=False, eval_transform=None, eval_batch_size=256,
        model_name="model", config=None, progress=None):
    """Train ``model`` for ``epochs`` epochs, evaluating on the test set after each.

    Parameters
    ----------
    model : jitnet.nn.Module
        On the active target (:func:`jitnet.get_target`).
    loss_fn : jitnet.nn loss
        ``loss_fn(scores, y)`` returns a float, ``loss_fn.backward()`` the score gradient.
    optimizer : jitnet.optim optimizer
        Over ``model.parameters()``.
    train_loader : jitnet.data.DataLoader
        Yields ``(x, y)`` batches: float32 ``(B, 3, H, W)`` images (already
        transformed; host or target arrays) and int64 ``(B,)`` labels.
    x_test : np.ndarray
        ``(M, 3, H, W)`` test images: uint8 (scaled to [0, 1] first, as the
        DataLoader does) or float; ``eval_transform`` is then applied per batch.
    y_test : np.ndarray
        ``(M,)`` int labels.
    epochs : int
        Total number of epochs (a resumed run counts those already done).
    scheduler : jitnet.optim schedule, optional
        Stepped once at the end of every epoch.
    out_dir : str or Path, optional
        Where ``checkpoint.npz`` is written after every epoch. ``None``: no files.
    resume : bool
        Continue from ``out_dir/checkpoint.npz``; raises :class:`CheckpointError`
        when it is missing or unreadable.
    quiet : bool
        No progress bar and no per-epoch lines.
    eval_transform : callable, optional
        Applied to each test batch (normalisation).
    eval_batch_size : int
        Images per forward pass during evaluation.
    model_name : str
        Recorded in the metrics and the checkpoint.
    config : dict, optional
        The run's settings, recorded in the metrics and the checkpoint.
    progress : file, optional
        Where per-epoch lines go (default ``sys.stderr``).

    Returns
    -------
    dict
        The metrics: ``model``, ``target``, ``test_accuracy`` (after the last
        epoch), ``train_seconds`` (summed over epochs, including resumed ones),
        ``images_per_second``, ``parameters``, ``epochs``, ``config``,
        ``history`` (one dict per epoch: ``epoch``, ``loss``, ``train_accuracy``,
        ``test_accuracy``, ``seconds``, ``images_per_second``, ``lr``: the rate the
        epoch trained with, of the first parameter group).

    Raises
    ------
    TypeError, ValueError
        For an argument of the wrong kind (``epochs=True``, ``quiet="no"``, a list
        for ``y_test``, the class ``nn.SoftmaxCrossEntropyLoss`` for an instance of
        it, ``None`` for the optimizer, a tuple ``(x, y)`` for the loader) or a bad
        value (an empty test set, ``y_test`` not one label per test image,
        ``eval_batch_size=0``): all checked before any training and before
        anything is written.
    CheckpointError
        With ``resume=True``: no readable checkpoint, one of another model or of
        other settings, one that already holds more than ``epochs`` epochs, or one
        whose states do not fit the model, optimizer, schedule or loader. Nothing
        is changed then: a part refused after others were loaded puts them back.
    TrainingDiverged
        When the loss becomes NaN or infinite; the checkpoint on disk is the
        last good epoch.
    TrainingInterrupted
        On Ctrl-C, after making sure the last completed epoch is saved.
    """
    epochs = check_int("fit", "epochs", epochs, 0)
    resume = check_flag("fit", "resume", resume)
    quiet = check_flag("fit", "quiet", quiet)
    eval_batch_size = check_int("fit", "eval_batch_size", eval_batch_size, 1)
    _check_test_set("fit", x_test, y_test)
    _check_training_objects(model, loss_fn, optimizer, train_loader, scheduler,
                            needs_state=out_dir is not None)
    _check_callable("fit", "eval_transform", eval_transform)
    if not isinstance(model_name, str):
        raise TypeError(f"fit expected model_name to be a str, got {model_name!r} "
                        f"({type(model_name).__name__})")
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"fit expected config to be a dict or None, got {config!r} "
                        f"({type(config).__name__})")
    if out_dir is not None and not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"fit expected out_dir to be a folder path (str or os.PathLike) or "
                        f"None, got {out_dir!r} ({type(out_dir).__name__})")
    if resume and out_dir is None:
        raise ValueError("fit expected an out_dir holding checkpoint.npz with resume=True, "
                         "got out_dir=None")
    progress = sys.stderr if progress is None else progress
    target = get_target()
    path = None if out_dir is None else Path(out_dir) / "checkpoint.npz"
    meta = {"model": model_name, "target": target, "config": config or {}}
    history, start = [], 0
    if resume:
        state = load_checkpoint(path)
        saved_name = state["meta"].get("model")
        if saved_name not in (None, model_name):
            raise CheckpointError(f"checkpoint {path} is of model {saved_name!r}, "
                                  f"not {model_name!r}")
        _check_same_run(state["meta"].get("config", {}), config or {}, path)
        if state["epoch"] > epochs:
            # the loop would run no epoch and the metrics would say epochs=N beside a
            # longer history: a finished run of more epochs cannot be cut back
            raise CheckpointError(
                f"checkpoint {path} already holds {state['epoch']} epochs, more than the "
                f"{epochs} asked for; resume with epochs >= {state['epoch']}, or train "
                "afresh into another folder")
        _restore(state, path, model, optimizer, scheduler, train_loader)
        history, start = list(state["history"]), int(state["epoch"])
        saved_target = state["meta"].get("target")
        if saved_target not in (None, target):
            # allowed, as PyTorch loads a checkpoint onto another device; but the
            # targets round differently, so say what is given up
            warnings.warn(f"resuming {path}, saved on the {saved_target} target, on the "
                          f"{target} target: training continues, but not bit for bit as "
                          f"it would have on {saved_target}", RuntimeWarning, stacklevel=2)
        if not quiet:
            print(f"resuming {path} after epoch {start}", file=progress, flush=True)

    saved = [start]  # epochs held by the checkpoint on disk

    def save(epoch_done):
        if path is not None:
            save_checkpoint(path, model, optimizer, scheduler, epoch=epoch_done,
                            loader=train_loader, history=history, meta=meta)
            saved[0] = epoch_done

    if not resume:
        save(0)  # so that Ctrl-C in the first epoch still leaves a checkpoint to resume
    bar_off = quiet or not _isatty(progress)
    epoch = start
    try:
        for epoch in range(start, epochs):
            history.append(_train_epoch(model, loss_fn, optimizer, train_loader, epoch, epochs,
                                        bar_off, path, progress))
            _check_finite_parameters(model, epoch, history[-1]["lr"], path)
            if scheduler is not None:
                scheduler.step()
            predictions = predict(model, x_test, batch_size=eval_batch_size,
                                  transform=eval_transform)
            history[-1]["test_accuracy"] = float(np.mean(predictions == np.asarray(y_test)))
            save(epoch + 1)
            if not quiet:
                print(_epoch_line(history[-1], epochs), file=progress, flush=True)
    except (KeyboardInterrupt, SystemError) as exc:
        if not is_interrupt(exc):
            raise
        # the parameters in memory are mid-epoch; the checkpoint on disk (written
        # atomically after every epoch) is the state to continue from exactly
        if path is None:
            raise TrainingInterrupted(f"interrupted in epoch {epoch + 1}") from None
        raise TrainingInterrupted(
            f"interrupted in epoch {epoch + 1}; saved {path} after epoch {saved[0]} "
            "(continue with --resume)") from None

    test_accuracy = history[-1]["test_accuracy"] if history else float(np.mean(
        predict(model, x_test, batch_size=eval_batch_size, transform=eval_transform)
        == np.asarray(y_test)))
    seconds = float(sum(h["seconds"] for h in history))
    images = float(sum(h["images"] for h in history))
    return {
        "model": model_name,
        "target": target,
        "test_accuracy": test_accuracy,
        "train_seconds": seconds,
        "images_per_second": images / seconds if seconds > 0 else 0.0,
        "parameters": count_parameters(model),
        "epochs": len(history),
        "config": config or {},
        "history": history,
    }


def _check_training_objects(model, loss_fn, optimizer, train_loader, scheduler, needs_state):
    """Raise TypeError unless :func:`fit`'s objects are of the kinds its loop uses
    (``needs_state``: the optimizer is saved in checkpoints too), so that a slip such
    as the loss class for an instance fails before the first checkpoint is written."""
    _check_model("fit", model)
    if isinstance(loss_fn, type) or not callable(loss_fn) or not callable(
            getattr(loss_fn, "backward", None)):
        raise TypeError(f"fit expected loss_fn to be a loss such as "
                        f"nn.SoftmaxCrossEntropyLoss() (called as loss_fn(scores, y), with "
                        f"a backward()), got {_kind(loss_fn)}")
    methods = ("step", "zero_grad", *(("state_dict", "load_state_dict") if needs_state
                                      else ()))
    if isinstance(optimizer, type) or not all(callable(getattr(optimizer, name, None))
                                              for name in methods):
        raise TypeError(f"fit expected optimizer to be a jitnet.optim optimizer (with "
                        f"{', '.join(name + '()' for name in methods)}), got "
                        f"{_kind(optimizer)}")
    if isinstance(train_loader, (tuple, list)) and any(isinstance(item, np.ndarray)
                                                       for item in train_loader):
        raise TypeError(f"fit expected train_loader to yield (x, y) batches, got a "
                        f"{type(train_loader).__name__} of arrays; wrap them in a loader: "
                        f"jitnet.data.DataLoader(x, y, batch_size)")
    if (isinstance(train_loader, (type, str, bytes, np.ndarray, Mapping))
            or not isinstance(train_loader, Iterable)):
        raise TypeError(f"fit expected train_loader to be an iterable of (x, y) batches "
                        f"such as jitnet.data.DataLoader(x, y, batch_size), got "
                        f"{_kind(train_loader)}")
    if scheduler is not None and (isinstance(scheduler, type)
                                  or not callable(getattr(scheduler, "step", None))):
        raise TypeError(f"fit expected scheduler to be None or a jitnet.optim schedule "
                        f"(with step()), got {_kind(scheduler)}")


def _check_test_set(who, x_test, y_test):
    """Raise unless ``x_test`` is a non-empty host ``(M, C, H, W)`` array of uint8 or
    float images and ``y_test`` ``(M,)`` integer labels: checked before the first
    epoch, not found by a broadcast error after it."""
    _check_images(who, "x_test", x_test, "(M, C, H, W)")
    if not hasattr(y_test, "shape") or not hasattr(y_test, "dtype"):
        raise TypeError(f"{who} expected y_test to be an array, got {_kind(y_test)}")
    if x_test.shape[0] == 0:
        raise ValueError(f"{who} expected at least one test image, got x_test of shape "
                         f"{x_test.shape}")
    if tuple(y_test.shape) != (x_test.shape[0],):
        raise ValueError(f"{who} expected y_test to hold one label per image of x_test: "
                         f"shape ({x_test.shape[0]},), got {tuple(y_test.shape)}")
    if np.dtype(y_test.dtype).kind not in "iu":
        raise ValueError(f"{who} expected y_test to be integer class labels, got dtype "
                         f"{y_test.dtype}")


def _check_same_run(saved, config, path):
    """Raise :class:`CheckpointError` when the run resuming from ``path`` differs from the
    one that wrote it in any setting but ``epochs`` (which a resumed run may raise):
    its history and metrics would mix the two."""
    differ = [key for key in sorted(set(saved) | set(config))
              if key != "epochs" and saved.get(key) != _json_round_trip(config.get(key))]
    if differ:
        shown = ", ".join(f"{key}={saved.get(key)!r} there, {config.get(key)!r} now"
                          for key in differ[:3])
        raise CheckpointError(f"checkpoint {path} was written by a run with other settings "
                              f"({shown}); resume with the same ones, or train afresh "
                              "into another folder")


def _json_round_trip(value):
    """``value`` as it reads back from a checkpoint's JSON (tuples become lists)."""
    return json.loads(json.dumps(value, default=_json_default))


def _check_finite_parameters(model, epoch, lr, path):
    """Raise :class:`TrainingDiverged` when a parameter stopped being finite: a step
    can overflow the weights while the loss it was taken on was still finite."""
    for p in model.parameters():
        if not np.isfinite(to_numpy(p.data)).all():
            kept = f"; the last good checkpoint is kept at {path}" if path else ""
            raise TrainingDiverged(
                f"training diverged: the parameters became non-finite in epoch {epoch + 1} "
                f"(learning rate {lr}); lower the learning rate{kept}")


def _learning_rate(optimizer):
    """The rate an epoch records: the first parameter group's (``param_groups[0]["lr"]``,
    as PyTorch users read it; jitnet's ``optimizer.lr`` refuses to pick one of groups
    whose rates differ), else ``optimizer.lr``, else None (an optimizer without one)."""
    groups = getattr(optimizer, "param_groups", None)
    if isinstance(groups, (list, tuple)) and groups and isinstance(groups[0], Mapping):
        return groups[0].get("lr")
    return getattr(optimizer, "lr", None)


def _train_epoch(model, loss_fn, optimizer, loader, epoch, epochs, bar_off, path, progress):
    """One pass over ``loader``; returns the history entry (without test accuracy)."""
    from tqdm.auto import tqdm

    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    lr = _learning_rate(optimizer)
    start = time.perf_counter()
    with tqdm(total=_len(loader), desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
              disable=bar_off, leave=False, file=progress) as bar:
        for batch, (xb, yb) in enumerate(loader):
            yb = to_numpy(yb)
            # the labels go to the target with the images, not in mid-step (on a GPU a
            # copy from the host waits for the kernels before it)
            labels = asarray(yb)
            scores = model(xb)  # host or device batch: layers move host arrays themselves
            loss = float(loss_fn(scores, labels))
            if not math.isfinite(loss):
                kept = f"; the last good checkpoint is kept at {path}" if path else ""
                raise TrainingDiverged(
                    f"training diverged: the loss became {loss} in epoch {epoch + 1}, "
                    f"batch {batch + 1} (learning rate {lr}); lower the learning rate{kept}")
            # the scores now, while reading the loss has waited for them: read after the
            # update, they would wait for the whole backward pass on a GPU, which can
            # instead run while the loader makes the next batch
            correct += int(np.sum(to_numpy(scores).argmax(axis=1) == yb))
            optimizer.zero_grad()
            backward_without_input_grad(model, loss_fn.backward())  # the batch needs none
            optimizer.step()
            n = len(yb)
            total_loss += loss * n
            seen += n
            bar.update(1)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}",
                            refresh=False)
    seconds = time.perf_counter() - start
    return {
        "epoch": epoch + 1,
        "loss": total_loss / max(seen, 1),
        "train_accuracy": correct / max(seen, 1),
        "test_accuracy": None,
        "seconds": seconds,
        "images": seen,
        "images_per_second": seen / seconds if seconds > 0 else 0.0,
        "lr": None if lr is None else float(lr),
    }


def _epoch_line(entry, epochs):
    return (f"epoch {entry['epoch']}/{epochs}  loss {entry['loss']:.4f}  "
            f"train {100 * entry['train_accuracy']:.1f}%  "
            f"test {100 * entry['test_accuracy']:.1f}%  {entry['seconds']:.1f} s  "
            f"{entry['images_per_second']:.0f} img/s")


def _len(loader):
    try:
        return len(loader)
    except TypeError:
        return None


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# ------------------------------------------------------------------------- recipes

#: ConvNet recipe defaults (see the README, "How the defaults were chosen", for the
#: measurements).
CONVNET_DEFAULTS = {
    "batch_size": 64,
    "lr": 0.01,
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 5e-4,
    "batchnorm": True,
    "augment": True,
    "schedule": "cosine",
}


def default_epochs(n_train):
    """Default ConvNet epochs for a training set of ``n_train`` images.

    About 120,000 training images seen, clipped to 10..30 epochs: 24 epochs of
    the 5,000-image synthetic set (a default ``jitnet compare`` takes about two
    minutes on 2 idle cores, compilation included), 29 of a 4,153-image CIFAR
    subset, 10 of the full 50,000-image CIFAR-10.
    """
    return int(min(30, max(10, round(120_000 / max(n_train, 1)))))


def channel_stats(x):
    """Per-channel mean and standard deviation of images on the [0, 1] scale.

    Images are scaled as everywhere in the package (:class:`jitnet.data.DataLoader`,
    ``Normalize.fit``, :func:`fit`, :func:`predict`): uint8 by 1/255, float images
    taken as they are (already in [0, 1]). So ``Normalize(*channel_stats(x))``
    fits the batches a loader over ``x`` makes, whichever the dtype.

    Parameters
    ----------
    x : np.ndarray
        ``(N, C, H, W)`` images: uint8 (0..255) or float ([0, 1]); at least one
        image of at least one pixel.

    Returns
    -------
    (np.ndarray, np.ndarray)
        ``(C,)`` float32 means and standard deviations (1 for a channel that holds
        one value throughout, as ``Normalize.fit`` gives it).

    Raises
    ------
    TypeError
        For ``x`` that is no ``np.ndarray``.
    ValueError
        For ``x`` that is not 4-D, holds no pixel (the statistics would be NaN), or
        is of another dtype than uint8 or float.
    """
    _check_images("channel_stats", "x", x)
    count = x.shape[0] * x.shape[2] * x.shape[3]
    if count == 0:
        raise ValueError(f"channel_stats expected at least one image of at least one pixel, "
                         f"got shape {x.shape}")
    if x.dtype == np.uint8:
        # Exact integer sums from each channel's histogram of the 256 values: 10x
        # faster than float64 sums over the images (0.39 -> 0.04 s on 5,000), and the
        # same float32 results on the synthetic set and the real CIFAR-10 subset.
        values = np.arange(256, dtype=np.int64)
        counts = np.stack([np.bincount(x[:, c].ravel(), minlength=256)
                           for c in range(x.shape[1])])
        mean = (counts @ values) / (255.0 * count)
        square = (counts @ (values * values)) / (255.0 ** 2 * count)
    else:
        mean = np.zeros(x.shape[1])
        square = np.zeros(x.shape[1])
        # in chunks: a float64 copy of 50,000 images would take 1.2 GB
        for start in range(0, len(x), 4096):
            chunk = x[start:start + 4096].astype(np.float64)  # float: in [0, 1] already
            mean += chunk.sum(axis=(0, 2, 3))
            square += (chunk * chunk).sum(axis=(0, 2, 3))
        mean /= count
        square /= count
    var = square - mean * mean
    # zero up to rounding (a channel of one value): std 1, as Normalize.fit and
    # scikit-learn's StandardScaler give it, not a floor that blows rounding up
    constant = var <= 10 * np.finfo(np.float64).eps * square
    std = np.where(constant, 1.0, np.sqrt(np.maximum(var, 1e-12)))
    return mean.astype(np.float32), std.astype(np.float32)


def check_images_and_labels(x_train, y_train, x_test, y_test, *, num_classes=10,
                            image_shape=None):
    """Raise ``ValueError`` unless the four arrays are what the recipes train on.

    ``x_train``, ``x_test``: non-empty ``(N, 3, H, W)`` uint8 arrays (``H, W`` =
    ``image_shape`` when given); ``y_train``, ``y_test``: ``(N,)`` integer labels in
    ``[0, num_classes)``, one per image. Checked before any work, so that a bad test
    set does not surface as a broadcast error after the first epoch.
    """
    for name, x, y_name, y in (("x_train", x_train, "y_train", y_train),
                               ("x_test", x_test, "y_test", y_test)):
        x = np.asarray(x)
        wanted = "(N, 3, H, W)" if image_shape is None else "(N, 3, {}, {})".format(*image_shape)
        if (x.ndim != 4 or x.shape[1] != 3
                or (image_shape is not None and tuple(x.shape[2:]) != tuple(image_shape))):
            raise ValueError(f"{name} must be {wanted} uint8 images, got shape {x.shape}")
        if x.dtype != np.uint8:
            raise ValueError(f"{name} must be uint8 images (0..255), got dtype {x.dtype}")
        if len(x) == 0:
            raise ValueError(f"{name} is empty: expected at least one image")
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x):
            raise ValueError(f"{y_name} must hold one label per image of {name}: expected "
                             f"shape ({len(x)},), got {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{y_name} must be integer class labels, got dtype {y.dtype}")
        _check_label_range(y, num_classes, f"{y_name} must be labels in 0..{num_classes - 1}")


class TrainResult:
    """What a recipe hands back: the trained model, its metrics and test predictions.

    Attributes
    ----------
    model : object
        The trained model (a ``jitnet.nn.Module`` or a ``HogLinearClassifier``).
    metrics : dict
        As written to ``metrics.json``.
    predictions : np.ndarray
        ``(M,)`` int64 predicted labels of the test images.
    transform : callable or None
        The evaluation transform the model expects (normalisation), if any.
    """

    def __init__(self, model, metrics, predictions, transform=None):
        self.model = model
        self.metrics = metrics
        self.predictions = predictions
        self.transform = transform


def train_convnet(x_train, y_train, x_test, y_test, *, epochs=None, batch_size=None, lr=None,
                  seed=0, out_dir=None, resume=False, quiet=False, data_name="cifar10",
                  **options):
    """Train the reference ConvNet with jitnet's default recipe on the active target.

    The recipe (``CONVNET_DEFAULTS``): BatchNorm after each convolution, SGD
    with momentum 0.9, learning rate 0.01 and weight decay 5e-4, a cosine learning-rate
    schedule, random crops (padding 4) and horizontal flips, inputs normalised
    by the training set's channel statistics.

    Parameters
    ----------
    x_train, x_test : np.ndarray
        ``(N, 3, 32, 32)`` uint8 images.
    y_train, y_test : np.ndarray
        ``(N,)`` int labels.
    epochs : int, optional
        Default :func:`default_epochs` of the training-set size.
    batch_size, lr : optional
        Override ``CONVNET_DEFAULTS``.
    seed : int
        Seeds initialisation, shuffling and augmentation.
    out_dir : str or Path, optional
        Writes ``checkpoint.npz`` and ``metrics.json`` there.
    resume, quiet : bool
        As :func:`fit`.
    data_name : str
        Which data set this is, recorded in the config.
    **options
        Any other key of ``CONVNET_DEFAULTS``.

    Returns
    -------
    TrainResult
    """
    from . import nn, optim

    unknown = set(options) - set(CONVNET_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown ConvNet options {sorted(unknown)}; "
                         f"expected some of {sorted(CONVNET_DEFAULTS)}")
    check_images_and_labels(x_train, y_train, x_test, y_test, image_shape=(32, 32))
    # labels may come as lists (checked as arrays above); fit takes arrays
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    settings = dict(CONVNET_DEFAULTS, **options)
    if batch_size is not None:
        settings["batch_size"] = check_int("train_convnet", "batch_size", batch_size, 1)
    if lr is not None:
        settings["lr"] = check_real("train_convnet", "lr", lr, "> 0", lambda v: v > 0)
    if epochs is None:
        epochs = default_epochs(len(x_train))
    epochs = check_int("train_convnet", "epochs", epochs, 0)
    seed = check_int("train_convnet", "seed", seed, 0)
    mean, std = channel_stats(x_train)
    settings.update(epochs=epochs, seed=seed, data=data_name,
                    mean=mean.tolist(), std=std.tolist(),
                    n_train=int(len(x_train)), n_test=int(len(x_test)))

    rng.manual_seed(seed)
    model, optimizer, normalize, loader = _convnet_parts(x_train, y_train, settings)
    scheduler = _schedule(optim, optimizer, settings["schedule"], epochs)
    metrics = fit(model, nn.SoftmaxCrossEntropyLoss(), optimizer, loader, x_test, y_test,
                  epochs=epochs, scheduler=scheduler, out_dir=out_dir, resume=resume,
                  quiet=quiet, eval_transform=normalize, model_name="convnet",
                  config=settings)
    predictions = predict(model, x_test, transform=normalize)
    metrics["confusion_matrix"] = confusion_matrix(y_test, predictions).tolist()
    if out_dir is not None:
        write_json(Path(out_dir) / "metrics.json", metrics)
    return TrainResult(model, metrics, predictions, normalize)


def _convnet_parts(x_train, y_train, settings):
    """:func:`train_convnet`'s model (on the active target), SGD optimizer, Normalize
    transform and training loader, from its ``settings``."""
    from . import data, models, optim

    model = models.convnet(num_classes=10, batchnorm=settings["batchnorm"])
    model.to(get_target())
    optimizer = optim.SGD(model.parameters(), lr=settings["lr"], momentum=settings["momentum"],
                          nesterov=settings["nesterov"], weight_decay=settings["weight_decay"])
    T = data.transforms
    normalize = T.Normalize(settings["mean"], settings["std"])
    train_transform = (T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), normalize])
                       if settings["augment"] else normalize)
    loader = data.DataLoader(x_train, y_train, batch_size=settings["batch_size"], shuffle=True,
                             drop_last=False, transform=train_transform, seed=settings["seed"])
    return model, optimizer, normalize, loader


def precompile_convnet(x_train, y_train):
    """Start compiling :func:`train_convnet`'s kernels in a helper process, now.

    ``jitnet compare`` calls it before it trains the HoG classifier: on a cold Numba
    cache the ConvNet's kernels, forward and backward, compile meanwhile (see
    :func:`jitnet.kernels.precompile.ahead`). Nothing happens on a warm cache, on one
    CPU or off the cpu target; jitnet's generator is left as it was.
    """
    from . import nn
    from .kernels import precompile

    # A few images, one batch of them: the kernels' types do not depend on the batch
    # size, nor on the normalisation's statistics.
    few = min(len(x_train), 8)
    mean, std = channel_stats(x_train[:few])
    settings = dict(CONVNET_DEFAULTS, batch_size=few, seed=0, mean=mean.tolist(),
                    std=std.tolist())
    state = rng.get_state()
    try:
        model, _, normalize, loader = _convnet_parts(x_train[:few], y_train[:few], settings)
    finally:
        rng.set_state(state)
    precompile.ahead(model, nn.SoftmaxCrossEntropyLoss(), loader, eval_transform=normalize)


def _schedule(optim, optimizer, name, epochs):
    if name == "cosine":
        return optim.CosineLR(optimizer, max(epochs, 1))
    if name == "step":
        return optim.StepLR(optimizer, step_size=max(epochs // 3, 1), gamma=0.1)
    if name in (None, "none", "constant"):
        return None
    raise ValueError(f"unknown schedule {name!r}: expected 'cosine', 'step' or 'none'")


def train_hog_linear(x_train, y_train, x_test, y_test, *, epochs=None, lr=None,
                     batch_size=None, seed=0, out_dir=None, quiet=False, **options):
    """Fit ``HogLinearClassifier`` (HoG + colour features into one linear layer).

    Parameters
    ----------
    x_train, x_test : np.ndarray
        ``(N, 3, 32, 32)`` uint8 images.
    y_train, y_test : np.ndarray
        ``(N,)`` int labels.
    epochs, lr, batch_size : optional
        Override the classifier's defaults (8 epochs, 0.01, 256).
    seed : int
        Seeds the classifier.
    out_dir : str or Path, optional
        Writes ``checkpoint.npz`` there (the classifier's
        :meth:`~jitnet.models.HogLinearClassifier.state_dict`, for
        ``HogLinearClassifier().load_state_dict(np.load(path))``) and
        ``metrics.json``. The folder is made before the fit, so that one that
        cannot be made fails first.
    quiet : bool
        No progress output.
    **options
        Passed to ``HogLinearClassifier``.

    Returns
    -------
    TrainResult
    """
    from . import models

    check_images_and_labels(x_train, y_train, x_test, y_test)
    if epochs is not None:
        options["epochs"] = check_int("train_hog_linear", "epochs", epochs, 1)
    if lr is not None:
        options["lr"] = check_real("train_hog_linear", "lr", lr, "> 0", lambda v: v > 0)
    if batch_size is not None:
        options["batch_size"] = check_int("train_hog_linear", "batch_size", batch_size, 1)
    seed = check_int("train_hog_linear", "seed", seed, 0)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    options.setdefault("verbose", not quiet)
    classifier = models.HogLinearClassifier(seed=seed, **options)
    start = time.perf_counter()
    # the test set goes in as validation data so that history_ has a learning curve
    classifier.fit(x_train, y_train, x_test, y_test)
    seconds = float(getattr(classifier, "fit_seconds_", time.perf_counter() - start))
    predictions = np.asarray(classifier.predict(x_test), dtype=np.int64)
    accuracy = float(np.mean(predictions == np.asarray(y_test)))
    history, previous = [], 0.0
    for entry in getattr(classifier, "history_", []):
        entry = dict(entry)
        # history_ counts seconds cumulatively and calls the held-out accuracy val_accuracy;
        # metrics.json records seconds per epoch and test_accuracy for both models
        if "val_accuracy" in entry:
            entry["test_accuracy"] = entry.pop("val_accuracy")
        if "seconds" in entry:
            entry["seconds"], previous = entry["seconds"] - previous, entry["seconds"]
            entry["images_per_second"] = (len(x_train) / entry["seconds"]
                                          if entry["seconds"] > 0 else 0.0)
        history.append(entry)
    config = {key: value for key, value in _params(classifier).items()
              if isinstance(value, (int, float, str, bool, type(None), tuple, list))}
    config.update(n_train=int(len(x_train)), n_test=int(len(x_test)),
                  feature_seconds=getattr(classifier, "feature_seconds_", None))
    metrics = {
        "model": "hog-linear",
        "target": get_target(),
        "test_accuracy": accuracy,
        "train_seconds": float(seconds),
        # images through the whole fit (features once, then every epoch) per second
        "images_per_second": len(x_train) * max(len(history), 1) / seconds if seconds else 0.0,
        "parameters": _hog_parameters(classifier),
        "epochs": len(history),
        "config": config,
        "history": history,
        "confusion_matrix": confusion_matrix(y_test, predictions).tolist(),
    }
    if not quiet:
        print(f"hog-linear: test accuracy {100 * accuracy:.1f}% in {seconds:.1f} s",
              file=sys.stderr, flush=True)
    if out_dir is not None:
        state = classifier.state_dict()
        atomic_write(Path(out_dir) / "checkpoint.npz", lambda f: np.savez(f, **state))
        write_json(Path(out_dir) / "metrics.json", metrics)
    return TrainResult(classifier, metrics, predictions)


def _params(estimator):
    if hasattr(estimator, "get_params"):
        return estimator.get_params()
    return {key: value for key, value in vars(estimator).items() if not key.endswith("_")}


def _hog_parameters(classifier):
    for name in ("coef_", "weight_"):
        value = getattr(classifier, name, None)
        if value is not None:
            count = int(np.size(value))
            bias = getattr(classifier, "intercept_", None)
            return count + (int(np.size(bias)) if bias is not None else 0)
    model = getattr(classifier, "model_", None)
    if model is not None and hasattr(model, "parameters"):
        return count_parameters(model)
    return None

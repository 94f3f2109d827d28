"""Checkpoints: everything the next epoch depends on, in a plain ``.npz`` read with
``allow_pickle=False`` (arrays under ``model/<name>`` and ``optimizer/<i>``, JSON
strings for everything else), and putting it back for ``resume=True``."""

import json
import zipfile
from functools import partial
from pathlib import Path

import numpy as np

from .. import rng
from .._checks import check_int
from ..targets import to_numpy
from ._arguments import _check_model, _kind
from .files import _json_default, atomic_write

#: Version tag written into every checkpoint.
CHECKPOINT_FORMAT = "jitnet-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or does not fit the model."""


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

    try:
        with open(path, "rb") as f:
            start = f.read(4)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    # np.load reads a file as an .npz only when it starts as a zip; else (a damaged
    # start, which zipfile.is_zipfile still accepts) it takes it for a pickle and says so
    if start not in (b"PK\x03\x04", b"PK\x05\x06") or not zipfile.is_zipfile(path):
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

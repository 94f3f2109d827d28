""":func:`fit`, the training loop: epochs, the test set's accuracy after each, the
history, a checkpoint per epoch and resuming from one."""

import json
import math
import os
import sys
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .._checks import check_flag, check_int
from ..nn.module import backward_without_input_grad
from ..targets import asarray, get_target, to_numpy
from ._arguments import _check_callable, _check_images, _check_model, _kind
from .checkpoint import CheckpointError, _restore, load_checkpoint, save_checkpoint
from .evaluate import count_parameters, predict
from .files import _json_default


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

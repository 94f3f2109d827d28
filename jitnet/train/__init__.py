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

from .checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from .evaluate import confusion_matrix, count_parameters, predict
from .files import atomic_write, write_json
from .loop import TrainingDiverged, TrainingInterrupted, fit, is_interrupt
from .recipes import (
    CONVNET_DEFAULTS,
    TrainResult,
    channel_stats,
    check_images_and_labels,
    default_epochs,
    precompile_convnet,
    train_convnet,
    train_hog_linear,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CONVNET_DEFAULTS",
    "CheckpointError",
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "atomic_write",
    "channel_stats",
    "check_images_and_labels",
    "confusion_matrix",
    "count_parameters",
    "default_epochs",
    "fit",
    "is_interrupt",
    "load_checkpoint",
    "precompile_convnet",
    "predict",
    "save_checkpoint",
    "train_convnet",
    "train_hog_linear",
    "write_json",
]

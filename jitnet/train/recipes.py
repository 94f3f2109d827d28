"""The two models of ``jitnet compare`` trained with their defaults:
:func:`train_convnet` and :func:`train_hog_linear`, and how the defaults are chosen."""

import sys
import time
from pathlib import Path

import numpy as np

from .. import rng
from .._checks import check_flag, check_int, check_real
from ..targets import get_target
from ._arguments import _check_images, _check_label_range
from .evaluate import confusion_matrix, predict
from .files import atomic_write, write_json
from .loop import fit

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
    from .. import nn, optim

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
    settings["augment"] = check_flag("train_convnet", "augment", settings["augment"])
    mean, std = channel_stats(x_train)
    settings.update(epochs=epochs, seed=seed, data=data_name,
                    mean=mean.tolist(), std=std.tolist(),
                    n_train=int(len(x_train)), n_test=int(len(x_test)))

    state = rng.get_state()
    rng.manual_seed(seed)
    try:  # a setting refused here (momentum=-1, schedule="linear") reseeds nothing
        model, optimizer, normalize, loader = _convnet_parts(x_train, y_train, settings)
        scheduler = _schedule(optim, optimizer, settings["schedule"], epochs)
    except BaseException:
        rng.set_state(state)
        raise
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
    from .. import data, models, optim

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
    from .. import nn
    from ..kernels import precompile

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
    raise ValueError(f"unknown schedule {name!r}: expected 'cosine', 'step' or 'none' "
                     f"('constant' and None are 'none' too)")


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
    from .. import models

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
    config = {key: value for key, value in classifier.get_params().items()
              if isinstance(value, (int, float, str, bool, type(None), tuple, list))}
    config.update(n_train=int(len(x_train)), n_test=int(len(x_test)),
                  feature_seconds=classifier.feature_seconds_)
    metrics = {
        "model": "hog-linear",
        "target": get_target(),
        "test_accuracy": accuracy,
        "train_seconds": float(seconds),
        # images through the whole fit (features once, then every epoch) per second
        "images_per_second": len(x_train) * max(len(history), 1) / seconds if seconds else 0.0,
        "parameters": int(classifier.coef_.size + classifier.intercept_.size),
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

"""The comparison report, its pictures, and the ``jitnet bench`` timings.

Pictures are drawn with Matplotlib's ``Agg`` backend (no display needed):
learning curves, confusion matrices, the ConvNet's first-layer filters, HoG
pictures of sample images and example predictions of both models.
"""

import statistics
import time
from pathlib import Path

import numpy as np

from .kernels import precompile
from .targets import to_numpy

#: Row order and labels of the comparison table.
_COLUMNS = (("test accuracy", "test_accuracy", "{:.1%}"),
            ("train time (s)", "train_seconds", "{:.1f}"),
            ("images/s", "images_per_second", "{:,.0f}"),
            ("parameters", "parameters", "{:,}"),
            ("epochs", "epochs", "{}"))

_TITLES = {"hog_linear": "HoG + linear", "convnet": "ConvNet"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; works without a display
    import matplotlib.pyplot as plt

    return plt


def _format(fmt, value):
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def comparison_table(metrics, markdown=False):
    """A side-by-side table of ``{"hog_linear": metrics, "convnet": metrics}`` as text.

    Parameters
    ----------
    metrics : dict
        Model key -> metrics dict (``test_accuracy``, ``train_seconds``, ...).
    markdown : bool
        A Markdown table instead of aligned plain text.
    """
    keys = list(metrics)
    header = [""] + [_TITLES.get(k, k) for k in keys]
    rows = [[label] + [_format(fmt, metrics[k].get(field)) for k in keys]
            for label, field, fmt in _COLUMNS]
    if markdown:
        lines = ["| " + " | ".join(header) + " |",
                 "| --- |" + " ---: |" * len(keys)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------------ pictures


def plot_learning_curves(histories, path):
    """Training loss and accuracies per epoch of each model.

    Parameters
    ----------
    histories : dict
        Model key -> list of per-epoch dicts (``loss``, ``train_accuracy``,
        ``test_accuracy`` where known).
    path : str or Path
        PNG file to write.
    """
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for index, (key, history) in enumerate(histories.items()):
        title = _TITLES.get(key, key)
        color = f"C{index}"  # one colour per model: dashed train, solid test
        epochs = np.arange(1, len(history) + 1)
        # a marker at every epoch: a line alone draws nothing for a 1-epoch run
        marker = {"marker": "o", "markersize": 4 if len(history) > 1 else 6}
        losses = [h.get("loss") for h in history]
        if any(v is not None for v in losses):
            ax_loss.plot(epochs, [np.nan if v is None else v for v in losses], color=color,
                         label=title, **marker)
        for field, style in (("train_accuracy", "--"), ("test_accuracy", "-")):
            values = [h.get(field) for h in history]
            if any(v is not None for v in values):
                ax_acc.plot(epochs, [np.nan if v is None else v for v in values], style,
                            color=color, label=f"{title} ({field.split('_')[0]})",
                            fillstyle="none" if field == "train_accuracy" else "full",
                            **marker)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion_matrices(matrices, class_names, path):
    """Confusion matrices side by side (rows: true class, columns: predicted).

    Parameters
    ----------
    matrices : dict
        Model key -> ``(C, C)`` int counts.
    class_names : sequence of str
        ``C`` names.
    path : str or Path
        PNG file to write.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(matrices), figsize=(5.5 * len(matrices), 5))
    axes = np.atleast_1d(axes)
    for ax, (key, matrix) in zip(axes, matrices.items()):
        matrix = np.asarray(matrix)
        rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
        ticks = np.arange(len(class_names))
        ax.set_xticks(ticks, class_names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(ticks, class_names, fontsize=8)
        accuracy = np.trace(matrix) / max(matrix.sum(), 1)
        ax.set(xlabel="predicted", ylabel="true",
               title=f"{_TITLES.get(key, key)} ({accuracy:.1%})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def first_conv_weight(model):
    """The first 4-D parameter of ``model`` (the first convolution's weight), on the host."""
    for parameter in model.parameters():
        data = to_numpy(parameter.data)
        if data.ndim == 4:
            return data
    raise ValueError("the model has no convolution weight (no 4-D parameter)")


def plot_filters(weight, path):
    """The first layer's filters as small RGB tiles, each scaled to its own range.

    Parameters
    ----------
    weight : np.ndarray
        ``(F, 3, K, K)`` convolution weight.
    path : str or Path
        PNG file to write.
    """
    plt = _pyplot()
    weight = np.asarray(weight, dtype=np.float64)
    count = weight.shape[0]
    cols = min(8, count)
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.1 + 0.4))
    axes = np.atleast_1d(axes).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, w in zip(axes, weight):
        low, high = w.min(), w.max()
        tile = (w - low) / (high - low) if high > low else np.zeros_like(w)
        if tile.shape[0] == 3:
            ax.imshow(tile.transpose(1, 2, 0), interpolation="nearest")
        else:
            ax.imshow(tile.mean(axis=0), cmap="gray", interpolation="nearest")
    fig.suptitle(f"first convolution: {count} filters {weight.shape[2]}x{weight.shape[3]}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_hog(images, path, count=6):
    """Sample images above their HoG pictures (the oriented-gradient histograms).

    Parameters
    ----------
    images : np.ndarray
        ``(N, 3, H, W)`` uint8 images; the first ``count`` are drawn.
    path : str or Path
        PNG file to write.
    """
    from . import features

    plt = _pyplot()
    images = np.asarray(images[:count])
    fig, axes = plt.subplots(2, len(images), figsize=(1.7 * len(images), 3.6))
    axes = np.asarray(axes).reshape(2, len(images))
    for i, image in enumerate(images):
        picture = np.asarray(features.hog_image(image, channel_axis=0))
        axes[0, i].imshow(image.transpose(1, 2, 0), interpolation="nearest")
        axes[1, i].imshow(picture, cmap="gray", interpolation="nearest")
        for ax in axes[:, i]:
            ax.axis("off")
    fig.suptitle("images and their HoG pictures", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_predictions(images, labels, predictions, class_names, path, count=16):
    """Test images labelled with each model's prediction (green right, red wrong).

    Parameters
    ----------
    images : np.ndarray
        ``(N, 3, H, W)`` uint8 test images.
    labels : np.ndarray
        ``(N,)`` true labels.
    predictions : dict
        Model key -> ``(N,)`` predicted labels.
    class_names : sequence of str
    path : str or Path
        PNG file to write.
    count : int
        How many images (the first ``count``).
    """
    plt = _pyplot()
    count = min(count, len(images))
    cols = 8
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 2.4 + 0.5))
    axes = np.atleast_1d(axes).ravel()
    for ax in axes:
        ax.axis("off")
    for i in range(count):
        ax = axes[i]
        ax.imshow(np.asarray(images[i]).transpose(1, 2, 0), interpolation="nearest")
        ax.set_title(class_names[labels[i]], fontsize=7)
        for row, (key, predicted) in enumerate(predictions.items()):
            right = predicted[i] == labels[i]
            short = "HoG" if key == "hog_linear" else "CNN"
            ax.text(0.5, -0.08 - 0.14 * row, f"{short}: {class_names[predicted[i]]}",
                    transform=ax.transAxes, ha="center", va="top", fontsize=6.5,
                    color="green" if right else "red")
    fig.suptitle("example test predictions (true class above)", fontsize=9)
    # room under each image for the prediction lines (tight_layout ignores them)
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - 0.5 / (rows * 2.4 + 0.5),
                        bottom=0.12 / rows, hspace=0.45, wspace=0.15)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -------------------------------------------------------------------------- report


def write_report(out_dir, results, x_test, y_test, *, class_names, data="synthetic",
                 wall_seconds=None):
    """Write ``report.json``, ``report.md`` and the pictures into ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Output folder (created).
    results : dict
        ``{"hog_linear": TrainResult, "convnet": TrainResult}``.
    x_test, y_test : np.ndarray
        ``(M, 3, 32, 32)`` uint8 test images and ``(M,)`` labels.
    class_names : sequence of str
    data : str
        Name of the data set, for the text.
    wall_seconds : float, optional
        Wall time of the whole comparison.

    Returns
    -------
    Path
        The ``report.md`` written.
    """
    from .train import write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {key: result.metrics for key, result in results.items()}
    write_json(out / "report.json", metrics)
    pictures = []

    def draw(name, caption, function, *args):
        try:
            function(*args, out / name)
        except Exception as exc:  # one picture failing must not lose the report
            pictures.append((None, f"{caption}: not drawn ({type(exc).__name__}: {exc})"))
        else:
            pictures.append((name, caption))

    draw("learning_curves.png", "Learning curves", plot_learning_curves,
         {key: m.get("history", []) for key, m in metrics.items()})
    draw("confusion_matrices.png", "Confusion matrices (rows: true class)",
         plot_confusion_matrices, {key: m["confusion_matrix"] for key, m in metrics.items()},
         class_names)
    if "convnet" in results:
        draw("filters.png", "The ConvNet's first-layer filters", plot_filters,
             first_conv_weight(results["convnet"].model))
    draw("hog.png", "Sample images and their HoG pictures", plot_hog, x_test)
    draw("predictions.png", "Example predictions (green: right, red: wrong)", plot_predictions,
         x_test, np.asarray(y_test), {key: r.predictions for key, r in results.items()},
         class_names)

    any_metrics = next(iter(metrics.values()))
    lines = [
        "# jitnet compare: HoG + linear classifier against a ConvNet",
        "",
        f"Data: {data}, {any_metrics['config'].get('n_train', '?')} training and "
        f"{len(y_test)} test images; target: {any_metrics['target']}"
        + (f"; wall time {wall_seconds:.0f} s." if wall_seconds is not None else "."),
        "",
        comparison_table(metrics, markdown=True),
        "",
        "Images/s counts training images processed per second (HoG: feature extraction "
        "and all epochs of the linear layer).",
        "",
    ]
    for name, caption in pictures:
        lines += [f"## {caption.split(' (')[0]}", ""]
        lines += [f"![{caption}]({name})" if name else caption, ""]
    text = "\n".join(lines)
    from .train import atomic_write

    atomic_write(out / "report.md", lambda f: f.write(text.encode("utf-8")))
    return out / "report.md"


# --------------------------------------------------------------------------- bench


def _median_ms(function, repeat):
    function()  # the first call compiles (Numba) and warms caches: not timed
    # On a cold cache the training step's first call started the helper that compiles
    # the backward kernels beside it (jitnet.kernels.precompile): let it finish, so that
    # it does not take a core from the timed calls (a cpu step measured 24 ms beside it,
    # 11 ms without it, batch 64 on 2 cores).
    precompile.wait()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _sync(target):
    if target == "cuda":
        from .targets import backend

        module = backend("cuda")
        if hasattr(module, "synchronize"):
            module.synchronize()


def _bench_target(target, batch_size, repeat):
    """Median milliseconds of each ConvNet kernel and of a training step on ``target``."""
    from . import models, nn, optim, rng
    from .targets import backend, use_target

    with use_target(target):
        k = backend(target)
        data = np.random.default_rng(0)
        f32 = np.float32

        def arr(*shape):
            return k.asarray(data.standard_normal(shape).astype(f32))

        x = arr(batch_size, 3, 32, 32)
        w1, b1 = arr(32, 3, 3, 3), arr(32)
        h1 = arr(batch_size, 32, 32, 32)
        dh1 = arr(batch_size, 32, 32, 32)
        x2, w2, b2 = arr(batch_size, 32, 16, 16), arr(64, 32, 3, 3), arr(64)
        dy2 = arr(batch_size, 64, 16, 16)
        xf, wf, bf = arr(batch_size, 4096), arr(256, 4096), arr(256)
        dyf = arr(batch_size, 256)
        _, argmax = k.maxpool2d_forward(h1, 2, 2)
        dp = arr(batch_size, 32, 16, 16)

        def timed(call):
            def run():
                call()
                _sync(target)
            return _median_ms(run, repeat)

        rows = {
            "conv1 forward (3->32, 32x32)": timed(lambda: k.conv2d_forward(x, w1, b1, 1, 1, 1)),
            # as a training step takes them: no input gradient for the first layer
            "conv1 backward": timed(lambda: k.conv2d_backward(dh1, x, w1, 1, 1, 1,
                                                              input_grad=False)),
            "conv2 forward (32->64, 16x16)": timed(lambda: k.conv2d_forward(x2, w2, b2, 1, 1, 1)),
            "conv2 backward": timed(lambda: k.conv2d_backward(dy2, x2, w2, 1, 1, 1)),
            "maxpool forward (32x32)": timed(lambda: k.maxpool2d_forward(h1, 2, 2)),
            # the window given, as MaxPool2d gives it
            "maxpool backward": timed(lambda: k.maxpool2d_backward(dp, argmax, h1.shape,
                                                                   2, 2)),
            "linear forward (4096->256)": timed(lambda: k.linear_forward(xf, wf, bf)),
            "linear backward": timed(lambda: k.linear_backward(dyf, xf, wf)),
            "relu forward (32x32x32)": timed(lambda: k.relu_forward(h1)),
        }

        rng.manual_seed(0)
        model = models.convnet(num_classes=10, batchnorm=True)
        model.to(target)
        model.train()
        optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        loss_fn = nn.SoftmaxCrossEntropyLoss()
        images = k.asarray(data.standard_normal((batch_size, 3, 32, 32)).astype(f32))
        labels_host = data.integers(0, 10, batch_size).astype(np.int64)
        labels = k.asarray(labels_host, labels_host.dtype)

        def step():
            loss_fn(model(images), labels)
            optimizer.zero_grad()
            model.backward(loss_fn.backward())
            optimizer.step()

        rows["training step (ConvNet + BatchNorm, SGD)"] = timed(step)
    return rows


def benchmark(target, batch_size=64, repeat=5):
    """Time the ConvNet's kernels and a training step on ``target`` and on numpy.

    Returns
    -------
    list of dict
        One row per kernel: ``name``, ``numpy_ms``, ``target_ms``, ``speedup``
        (numpy time / target time), medians of ``repeat`` calls after a warm-up call
        and after the helper process it may start (:mod:`jitnet.kernels.precompile`)
        is done.
    """
    reference = _bench_target("numpy", batch_size, repeat)
    timings = reference if target == "numpy" else _bench_target(target, batch_size, repeat)
    rows = []
    for name, numpy_ms in reference.items():
        target_ms = timings[name]
        rows.append({"name": name, "numpy_ms": numpy_ms, "target_ms": target_ms,
                     "speedup": numpy_ms / target_ms if target_ms > 0 else None})
    step = rows[-1]
    step["images_per_second"] = 1000.0 * batch_size / step["target_ms"]
    return rows


def bench_table(rows, target, batch_size):
    """The rows of :func:`benchmark` as an aligned text table."""
    header = ("kernel (batch %d)" % batch_size, "numpy ms", f"{target} ms", "speedup")
    body = [(r["name"], f"{r['numpy_ms']:.2f}", f"{r['target_ms']:.2f}",
             "-" if r["speedup"] is None else f"{r['speedup']:.1f}x") for r in rows]
    widths = [max(len(row[i]) for row in [header] + body) for i in range(4)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths))) for row in [header] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    step = rows[-1]
    lines.append(f"\ntraining step on {target}: {step['images_per_second']:.0f} images/s")
    return "\n".join(lines)

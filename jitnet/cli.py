"""The ``jitnet`` command: ``train``, ``compare``, ``bench`` and ``info``.

``python -m jitnet`` is the same program. Errors a user can fix (a missing data
folder, an unavailable target, a corrupt checkpoint) print one line and exit
with a non-zero status; set ``JITNET_DEBUG=1`` to see the traceback instead.

Exit status: 0 success, 2 bad input (also input too large for the memory) or
unavailable target, 3 training diverged, 130 interrupted (Ctrl-C; the checkpoint
of the last completed epoch is kept).
"""

import argparse
import contextlib
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from . import __version__, targets
from .data import default_root
from .targets import TargetUnavailableError

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130

#: Default size of the synthetic data set (``--n-train`` / ``--n-test``).
SYNTHETIC_TRAIN = 5000
SYNTHETIC_TEST = 1000


# -------------------------------------------------------------------------- parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Appends "(default: X)" to an option's help unless its text already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        # identity, not ==: a default of 0 (--seed) equals False but is worth saying
        unsaid = any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS))
        if "default" not in text and not unsaid and action.option_strings:
            text += " (default: %(default)s)"
        return text


def build_parser():
    """The argument parser of the ``jitnet`` command."""
    parser = argparse.ArgumentParser(
        prog="jitnet", formatter_class=_Formatter,
        description="Train convolutional networks on readable Numba kernels and compare a "
                    "ConvNet with a HoG + linear classifier.",
        epilog="Exit status: 0 ok, 2 bad input or unavailable target, 3 training diverged, "
               "130 interrupted. JITNET_DEBUG=1 shows tracebacks.")
    parser.add_argument("--version", action="version", version=f"jitnet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser(
        "train", formatter_class=_Formatter, help="train one model, write metrics and checkpoint",
        description="Train one model on one data set and write OUT/metrics.json and "
                    "OUT/checkpoint.npz (the ConvNet's after every epoch, for --resume; "
                    "hog-linear's, its state_dict, at the end).")
    train.add_argument("--model", choices=("convnet", "hog-linear"), default="convnet",
                       help="the ConvNet (BatchNorm, SGD, cosine schedule, crop + flip) or "
                            "HoG features into a linear classifier")
    _add_data_options(train)
    _add_budget_options(train, "train")
    train.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="output folder (default: runs/<model>)")
    train.add_argument("--resume", action="store_true",
                       help="continue the interrupted run whose checkpoint is in OUT "
                            "(ConvNet only); ends with exactly the parameters of an "
                            "uninterrupted run")
    train.set_defaults(func=cmd_train)

    compare = commands.add_parser(
        "compare", formatter_class=_Formatter,
        help="train HoG-linear and the ConvNet on the same data, write a report",
        description="Train the HoG-linear classifier and the ConvNet on the same data and "
                    "target; print a side-by-side table and write OUT/report.json, "
                    "OUT/report.md and pictures (learning curves, confusion matrices, "
                    "first-layer filters, HoG pictures, example predictions).")
    _add_data_options(compare)
    _add_budget_options(compare, "compare")
    compare.add_argument("--out", type=Path, default=Path("runs/compare"), metavar="DIR",
                         help="output folder")
    compare.set_defaults(func=cmd_compare)

    bench = commands.add_parser(
        "bench", formatter_class=_Formatter,
        help="time the kernels and a ConvNet training step on a target against numpy",
        description="Time each ConvNet layer kernel and a whole training step (forward, "
                    "backward, SGD update) on --target and on the numpy reference; medians "
                    "of a few repetitions after a warm-up call that compiles (and once the "
                    "helper process compiling the backward kernels beside it is done).")
    _add_target_option(bench)
    bench.add_argument("--batch-size", type=_positive_int, default=64, metavar="B",
                       help="images per batch")
    bench.add_argument("--repeat", type=_positive_int, default=5, metavar="N",
                       help="timed repetitions (the median is reported)")
    bench.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="also write OUT/bench.json (default: print only)")
    bench.set_defaults(func=cmd_bench)

    info = commands.add_parser(
        "info", formatter_class=_Formatter,
        help="versions, threads, targets and GPU",
        description="Print jitnet, Python, NumPy and Numba versions, Numba's thread count and "
                    "threading layer, the available targets, and the GPU (or why there is "
                    "none).")
    info.set_defaults(func=cmd_info)
    return parser


def _add_target_option(parser):
    # No default here: the active target, which JITNET_TARGET chose at import, stays
    # (read only once the command runs, where a bad choice is a one-line error).
    parser.add_argument("--target", choices=targets.TARGETS, default=None,
                        help="where kernels run: numpy (reference), cpu (Numba, parallel) or "
                             "cuda (numba.cuda); the default comes from JITNET_TARGET, else cpu")


def _add_data_options(parser):
    parser.add_argument("--data", choices=("synthetic", "cifar10"), default="synthetic",
                        help="the embedded synthetic CIFAR-style set (generated with seed 0) "
                             "or real CIFAR-10 from --data-dir")
    parser.add_argument("--data-dir", type=Path, default=default_root(), metavar="DIR",
                        help="folder holding cifar-10-batches-py (or that folder itself) "
                             "(default: %(default)s, where jitnet.data.download_cifar10() "
                             "puts it)")
    parser.add_argument("--n-train", type=_positive_int, default=None, metavar="N",
                        help=f"training images: the synthetic set's size (default "
                             f"{SYNTHETIC_TRAIN}), or the first N of CIFAR-10 (default all)")
    parser.add_argument("--n-test", type=_positive_int, default=None, metavar="N",
                        help=f"test images, likewise (synthetic default {SYNTHETIC_TEST})")
    _add_target_option(parser)


def _add_budget_options(parser, command):
    # train applies them to the model it trains; compare to the ConvNet only: the
    # HoG-linear classifier there keeps the defaults it was tuned with
    convnet_epochs = ("ConvNet epochs; default about 120,000 images seen, clipped to 10..30: "
                      "24 on the 5,000-image synthetic set, 29 on a 4,153-image CIFAR "
                      "subset, 10 on full CIFAR-10")
    if command == "train":
        helps = (convnet_epochs + "; hog-linear: its epochs, at least 1 (default 8)",
                 "images per SGD step (ConvNet default 64, hog-linear default 256)",
                 "peak learning rate, decayed to 0 by a cosine schedule (ConvNet default "
                 "0.01, hog-linear default 0.01)")
    else:
        helps = (convnet_epochs + ". For the ConvNet only: the HoG-linear classifier keeps "
                                  "its tuned 8 epochs",
                 "ConvNet images per SGD step (default 64); the HoG-linear classifier keeps "
                 "its tuned 256",
                 "ConvNet peak learning rate, decayed to 0 by a cosine schedule (default "
                 "0.01); the HoG-linear classifier keeps its tuned 0.01")
    parser.add_argument("--epochs", type=_non_negative_int, default=None, metavar="N",
                        help=helps[0])
    parser.add_argument("--batch-size", type=_positive_int, default=None, metavar="B",
                        help=helps[1])
    parser.add_argument("--lr", type=_positive_float, default=None, metavar="LR",
                        help=helps[2])
    parser.add_argument("--seed", type=_non_negative_int, default=0, metavar="S",
                        help="seeds initialisation, shuffling and augmentation")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars or per-epoch lines")


def _number(kind, accept, wanted):
    """An argparse ``type``: ``kind(text)`` where ``accept`` takes it, else a usage error
    saying ``wanted`` (also for text that is no number at all)."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, lambda v: v > 0, "a positive integer")
_non_negative_int = _number(int, lambda v: v >= 0, "a non-negative integer")
_positive_float = _number(float, lambda v: v > 0 and np.isfinite(v), "a positive finite number")


# ---------------------------------------------------------------------------- main


@contextlib.contextmanager
def _one_line_warnings():
    """Warnings as ``jitnet: warning: ...`` lines on stderr, as the errors are (without
    Python's file, line number and source line)."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"jitnet: warning: {message}", file=sys.stderr if file is None else file,
              flush=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv=None):
    """Run the ``jitnet`` command with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (status 2)
        return exc.code if isinstance(exc.code, int) else 2
    from .train import CheckpointError, TrainingDiverged, is_interrupt

    debug = os.environ.get("JITNET_DEBUG") == "1"
    try:
        # --target holds for this command only: a caller of main() in its own process
        # (a notebook, a test) keeps its active target
        target = getattr(args, "target", None)
        choice = contextlib.nullcontext() if target is None else targets.use_target(target)
        # overflow warnings from NumPy are noise here: a loss that goes non-finite
        # stops training with its own message (TrainingDiverged)
        with choice, np.errstate(over="ignore", invalid="ignore"), _one_line_warnings():
            return args.func(args)
    except (KeyboardInterrupt, SystemError) as exc:
        if not is_interrupt(exc):
            raise
        message = (str(exc) if isinstance(exc, KeyboardInterrupt) else "") or "interrupted"
        print(f"jitnet: {message}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except TrainingDiverged as exc:
        if debug:
            raise
        print(f"jitnet: {exc}", file=sys.stderr, flush=True)
        return EXIT_DIVERGED
    except MemoryError as exc:  # NumPy's says how much it could not allocate
        if debug:
            raise
        print(f"jitnet: error: out of memory: {_one_line(exc)}; use fewer images "
              "(--n-train, --n-test) or a smaller --batch-size", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except (TargetUnavailableError, CheckpointError, OSError, ValueError) as exc:
        # DataError is a ValueError or OSError subclass in jitnet.data; all of these are
        # about the user's input or machine, so a traceback would only hide the message
        if debug:
            raise
        print(f"jitnet: error: {_one_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT


def _one_line(exc):
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return " ".join(text.split())


# ------------------------------------------------------------------------ commands


def load_data(args):
    """``(x_train, y_train, x_test, y_test)`` for the ``--data`` options."""
    from . import data

    if args.data == "synthetic":
        n_train = args.n_train or SYNTHETIC_TRAIN
        n_test = args.n_test or SYNTHETIC_TEST
        return data.synthetic_cifar(n_train=n_train, n_test=n_test, seed=0)
    root = Path(args.data_dir)
    if not root.exists():
        raise FileNotFoundError(
            f"CIFAR-10 folder {root} not found; pass --data-dir (the folder holding "
            "cifar-10-batches-py) or download it with "
            f"python -c \"import jitnet; jitnet.data.download_cifar10('{root}')\"")
    x_train, y_train, x_test, y_test = data.load_cifar10(root)
    if args.n_train:
        x_train, y_train = x_train[:args.n_train], y_train[:args.n_train]
    if args.n_test:
        x_test, y_test = x_test[:args.n_test], y_test[:args.n_test]
    return x_train, y_train, x_test, y_test


def check_out_folder(out):
    """Raise ValueError unless ``out`` is a folder or can be made one: checked before any
    work, so that a bad ``--out`` does not fail only once the results are in."""
    path = Path(out)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "a file" if existing == path else f"{existing} is a file"
        raise ValueError(f"--out expected a folder, got {out} ({where})")
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out expected a folder that can be written, got {out} "
                         f"({existing} is not writable)")


def _describe(args, x_train, x_test):
    return (f"{args.data} ({len(x_train)} train / {len(x_test)} test images) "
            f"on the {targets.get_target()} target")


def cmd_train(args):
    """``jitnet train``."""
    from . import train

    if args.resume and args.model != "convnet":
        raise ValueError("--resume is for --model convnet (hog-linear fits in one go)")
    out = args.out if args.out is not None else Path("runs") / args.model
    check_out_folder(out)
    x_train, y_train, x_test, y_test = load_data(args)
    if not args.quiet:
        print(f"training {args.model} on {_describe(args, x_train, x_test)}; writing to {out}",
              file=sys.stderr, flush=True)
    if args.model == "convnet":
        result = train.train_convnet(
            x_train, y_train, x_test, y_test, epochs=args.epochs, batch_size=args.batch_size,
            lr=args.lr, seed=args.seed, out_dir=out, resume=args.resume, quiet=args.quiet,
            data_name=args.data)
    else:
        result = train.train_hog_linear(
            x_train, y_train, x_test, y_test, epochs=args.epochs, lr=args.lr,
            batch_size=args.batch_size, seed=args.seed, out_dir=out, quiet=args.quiet)
    m = result.metrics
    print(f"{args.model}: test accuracy {100 * m['test_accuracy']:.1f}%, "
          f"{m['train_seconds']:.1f} s training; metrics in {out / 'metrics.json'}")
    return 0


def cmd_compare(args):
    """``jitnet compare``."""
    from . import report, train

    out = args.out
    check_out_folder(out)
    x_train, y_train, x_test, y_test = load_data(args)
    if not args.quiet:
        print(f"comparing hog-linear and convnet on {_describe(args, x_train, x_test)}",
              file=sys.stderr, flush=True)
    start = time.perf_counter()
    # On a cold Numba cache the ConvNet's kernels compile in a helper process while
    # the HoG classifier trains (nothing happens once they are cached).
    train.precompile_convnet(x_train, y_train)
    hog = train.train_hog_linear(x_train, y_train, x_test, y_test, seed=args.seed,
                                 out_dir=out / "hog_linear", quiet=args.quiet)
    net = train.train_convnet(
        x_train, y_train, x_test, y_test, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, out_dir=out / "convnet", quiet=args.quiet,
        data_name=args.data)
    wall = time.perf_counter() - start
    class_names = _class_names(args)
    written = report.write_report(
        out, {"hog_linear": hog, "convnet": net}, x_test, y_test, class_names=class_names,
        data=args.data, wall_seconds=wall)
    print(report.comparison_table({"hog_linear": hog.metrics, "convnet": net.metrics}))
    print(f"\nreport: {written}  (wall time {wall:.0f} s)")
    return 0


def _class_names(args):
    from . import data

    if args.data == "synthetic":
        return list(data.CLASS_NAMES)
    return list(getattr(data, "CIFAR10_CLASSES", None) or (
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck"))


def cmd_bench(args):
    """``jitnet bench``."""
    from . import report

    target = targets.get_target()  # --target's, else JITNET_TARGET's (set in main)
    if args.out is not None:
        check_out_folder(args.out)
    rows = report.benchmark(target, batch_size=args.batch_size, repeat=args.repeat)
    print(report.bench_table(rows, target, args.batch_size))
    if args.out is not None:
        from .train import write_json

        write_json(Path(args.out) / "bench.json", {
            "target": target, "batch_size": args.batch_size, "repeat": args.repeat,
            "machine": _machine(), "rows": rows})
        print(f"\nwritten: {Path(args.out) / 'bench.json'}")
    return 0


def _machine():
    return {"processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version()}


def cmd_info(args):
    """``jitnet info``."""
    import numba

    lines = [
        ("jitnet", __version__),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("numpy", np.__version__),
        ("numba", numba.__version__),
        ("platform", f"{platform.platform()}, {os.cpu_count()} CPUs"),
        ("NUMBA_NUM_THREADS", str(numba.config.NUMBA_NUM_THREADS)),
        ("threading layer", _threading_layer()),
        ("cpu vectors", _cpu_vectors()),
        ("cpu kernels", _cpu_opt_level()),
        ("active target", _active_target()),
        ("available targets", ", ".join(targets.available_targets())),
    ]
    lines += _gpu_lines()
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        print(f"{key:<{width}}  {value}")
    return 0


def _cpu_vectors():
    """LLVM's CPU name, whether jitnet lifted its 256-bit vector preference, and the
    vector width the kernels' register tiles are sized for."""
    import llvmlite.binding as llvm

    from . import codegen

    return (f"{llvm.get_host_cpu_name()}; 512-bit preference {codegen.status}; "
            f"tiles for {codegen.vector_lanes()} float32 lanes")


def _cpu_opt_level():
    """The LLVM level jitnet's cpu kernels compile at (see :mod:`jitnet.codegen`)."""
    import numba

    from . import codegen

    level = codegen.opt_level()
    if level is None:
        return f"LLVM -O{int(numba.config.OPT)} (Numba's level, NUMBA_OPT)"
    return f"LLVM -O{level}"


def _threading_layer():
    """Numba's threading layer, known only once a parallel function has run."""
    import numba

    @numba.njit(parallel=True)
    def _sum(x):
        total = 0.0
        for i in numba.prange(x.shape[0]):  # a reduction numba privatises per thread
            total += x[i]
        return total

    try:
        _sum(np.ones(8))
        return numba.threading_layer()
    except Exception as exc:  # no layer (tbb/omp/workqueue) could start: say so
        return f"unavailable ({_one_line(exc)})"


def _active_target():
    try:
        return targets.get_target()
    except (ValueError, TargetUnavailableError) as exc:  # JITNET_TARGET's choice: say why
        return f"none ({_one_line(exc)})"


def _gpu_lines():
    try:
        module = targets.backend("cuda")
    except TargetUnavailableError as exc:
        reason = _one_line(exc).replace("the cuda target is unavailable: ", "")
        return [("cuda", f"unavailable: {reason}")]
    try:
        details = module.device_info()
    except Exception as exc:  # informational only: report, do not fail
        return [("cuda", f"available, but device_info failed: {_one_line(exc)}")]
    if isinstance(details, dict):
        return [(f"gpu {key}", str(value)) for key, value in details.items()]
    return [("gpu", str(details))]

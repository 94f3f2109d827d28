"""Time one training step of the reference ConvNet: jitnet against PyTorch.

A step is forward + softmax cross-entropy + backward + SGD (momentum 0.9) on a
random float32 batch of 3x32x32 images; with ``--batchnorm`` the ConvNet has a batch
norm after each convolution, the model that ``jitnet compare`` trains. Each
contender runs in a fresh process of its own, so no thread pool of another library
spins beside it. Reported:
the median step time after warm-up (compilation excluded, the helper process that
compiles backward kernels on a cold cache waited for; best of
``--rounds`` runs taken in turn), images per second and ratios; peak resident
memory of a process that runs a few steps; and cold start, the time from a
fresh process to the end of its first training step with an empty Numba cache
directory (everything compiles) and again with that directory filled.

Usage::

    python benchmarks/bench_train.py                       # cpu target, batches 64 and 128
    python benchmarks/bench_train.py --target cuda         # jitnet cuda vs cpu vs torch cuda
                                                           # (float32, and its TF32 default)
    python benchmarks/bench_train.py --batch-size 64 --repeat 20 --no-cold
    python benchmarks/bench_train.py --batchnorm --no-numpy   # jitnet compare's ConvNet

Set ``NUMBA_NUM_THREADS`` to the thread count you compare at; PyTorch gets
``--threads`` (default: the same number). Every contender runs with glibc's mmap
threshold fixed at 32 MiB (``MALLOC_MMAP_THRESHOLD_``, as bench_kernels.py does), so
that no large array is a fresh ``mmap`` that page-faults on first touch, as in a
long-running process. ``--default-malloc`` leaves glibc's default instead, which
affects PyTorch most: each step's activations then come from fresh mmaps, about 4,000
page faults a step at batch 64 (a step 23.7 ms instead of 18.7 on a 2-core Zen 5). The
numpy target, which allocates its temporaries afresh every step too, also slows down;
jitnet's cpu target reuses its arrays and does not depend on the setting. The report
says which setting ran.
"""

import time

_PROCESS_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    STEADY_MALLOC_ENV,
    default_threads,
    machine,
    peak_rss_mb,
    table,
    torch_or_none,
)


def _batch(batch, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, batch).astype(np.int64)
    return x, y


def jitnet_step(target, batch, package="jitnet", batchnorm=False):
    """A zero-argument training step of jitnet on ``target``, and a sync function.

    The step returns its loss (computed before the backward pass and the update);
    ``step.state()`` returns what the steps so far have left, host copies of the
    model's and the optimizer's state dicts. ``package`` is the name jitnet is
    imported under (``ab.py`` gives each revision its own); ``batchnorm`` puts a
    batch norm after each convolution."""
    import importlib

    jitnet = importlib.import_module(package)
    models, nn, optim = (importlib.import_module(f"{package}.{m}")
                         for m in ("models", "nn", "optim"))

    jitnet.set_target(target)
    jitnet.manual_seed(0)
    model = models.convnet(batchnorm=batchnorm).to(target)
    model.train()
    loss_fn = nn.SoftmaxCrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = _batch(batch)
    x, y = jitnet.asarray(x), jitnet.asarray(y)

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        model.backward(loss_fn.backward(), input_grad=False)  # as jitnet.train.fit
        opt.step()
        return loss

    def state():
        """Host copies of the model's parameters and buffers and of the optimizer's
        state (momentum buffers): what the steps so far have left (``ab.py``)."""
        return model.state_dict(), opt.state_dict()

    step.state = state
    sync = None
    if target == "cuda":
        sync = importlib.import_module(f"{package}.kernels.cuda").synchronize
    return step, sync


def torch_step(torch, device, batch, batchnorm=False):
    """The same step in PyTorch, and a sync function.

    ``device`` is "cpu", "cuda" (float32 throughout, as jitnet computes) or
    "cuda-tf32": PyTorch's own default on Ampere and later GPUs, where cuDNN runs
    the convolutions on the tensor cores in TF32 (10-bit mantissas). The report
    shows both, so that jitnet's float32 is compared with PyTorch's float32 and
    with what a PyTorch user gets by default.
    """
    nn = torch.nn
    if device.startswith("cuda"):
        torch.backends.cudnn.allow_tf32 = device == "cuda-tf32"
        torch.backends.cuda.matmul.allow_tf32 = False  # PyTorch's default already
        device = "cuda"
    torch.manual_seed(0)

    def block(c_in, c_out):  # as jitnet.models.convnet
        norm = [nn.BatchNorm2d(c_out)] if batchnorm else []
        return [nn.Conv2d(c_in, c_out, 3, padding=1), *norm, nn.ReLU(), nn.MaxPool2d(2)]

    model = nn.Sequential(
        *block(3, 32), *block(32, 64),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 256), nn.ReLU(), nn.Linear(256, 10),
    ).to(device)
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = _batch(batch)
    x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    sync = torch.cuda.synchronize if device == "cuda" else None
    return step, sync


# -- child processes: memory and cold start ---------------------------------------------


def _child(kind, batch, steps, threads, batchnorm):
    """Run in a fresh process: ``steps`` steps, then print timings and peak RSS as JSON."""
    if kind.startswith("torch"):
        torch = torch_or_none(threads)
        step, sync = torch_step(torch, kind.split("-", 1)[1], batch, batchnorm)
    else:
        step, sync = jitnet_step(kind, batch, batchnorm=batchnorm)
    step()
    if sync is not None:
        sync()
    first = time.perf_counter() - _PROCESS_START
    if steps > 1:  # the second step is warm-up too (allocator, caches)
        step()
        if sync is not None:
            sync()
    if not kind.startswith("torch"):
        # On a cold cache the first step started the helper that compiles the backward
        # kernels beside it (jitnet.kernels.precompile): let it finish before timing,
        # or it takes a core from the steps timed (14.6 against 6.6 ms a step).
        from jitnet.kernels import precompile

        precompile.wait()
    times = []
    for _ in range(steps - 2):
        start = time.perf_counter()
        step()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - start)
    rss_mb = peak_rss_mb()  # the child's own, not its parent's (see common.py)
    step_ms = 1000.0 * float(np.median(times)) if times else float("nan")
    result = {"first_step_s": first, "maxrss_mb": rss_mb, "step_ms": step_ms}
    if kind == "cuda":  # a small net on a big GPU is launch-bound: count them (after timing)
        from jitnet.kernels import cuda

        with cuda.count_launches() as launches:
            step()
            sync()
        result["launches"] = sum(launches.values())
    print(json.dumps(result))


def _run_child(kind, batch, steps, threads, batchnorm, env=None):
    cmd = [sys.executable, __file__, "--child", kind, "--batch-size", str(batch),
           "--steps", str(steps), "--threads", str(threads)] + ["--batchnorm"] * batchnorm
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - start
    return result


# -- main ---------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=["numpy", "cpu", "cuda"], default="cpu")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2,
                        help="runs per contender, taken in turn; the best median counts")
    parser.add_argument("--threads", type=int, default=None,
                        help="PyTorch threads (default: jitnet's, numba.get_num_threads(): "
                             "NUMBA_NUM_THREADS or the CPUs this process may use)")
    parser.add_argument("--no-numpy", action="store_true", help="skip the (slow) numpy target")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-cold", action="store_true", help="skip memory and cold start")
    parser.add_argument("--batchnorm", action="store_true",
                        help="a batch norm after each convolution (jitnet compare's ConvNet)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's mmap threshold at its default in every contender "
                             "(PyTorch then page-faults on its fresh activations every step) "
                             "instead of fixing it at 32 MiB")
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    threads = default_threads(args.threads)
    if not args.default_malloc:  # children inherit it; glibc reads it at their start
        os.environ.update(STEADY_MALLOC_ENV)
    if args.child:
        _child(args.child, args.batch_size[0], args.steps, threads, args.batchnorm)
        return

    if args.target == "cuda":
        import jitnet

        if "cuda" not in jitnet.available_targets():
            sys.exit("bench_train: the cuda target is unavailable here (no GPU or numba-cuda); "
                     "run it on a machine with an NVIDIA GPU, or choose --target cpu")
    torch = None if args.no_torch else torch_or_none(threads)
    if torch is not None and args.target == "cuda" and not torch.cuda.is_available():
        torch = None  # a CPU-only torch: compare jitnet cuda with jitnet cpu only
    model = "the reference ConvNet" + (" with batch norm" if args.batchnorm else "")
    numpy_repeat = max(3, args.repeat // 3)  # the slow reference: fewer steps
    with_numpy = args.target == "numpy" or not args.no_numpy
    lines = [f"# Training step of {model} ({args.target} target)", "",
             f"Machine: {machine()}; jitnet threads: "
             f"{default_threads()}, torch threads: {threads}.",
             f"Each contender runs in its own fresh process (no other thread pool in it): "
             f"median of {args.repeat} steps"
             + (f" ({numpy_repeat} for the numpy target)" if with_numpy else "")
             + ", the `steps timed` column, after 2 warm-up steps (compilation excluded, "
             "jitnet's precompile helper waited for); "
             f"the contenders take turns for {args.rounds} rounds and the best round counts.",
             "glibc's mmap threshold: " + (
                 "the allocator's default in every contender (`--default-malloc`): PyTorch, "
                 "the contender it affects most, page-faults on fresh activations every "
                 "step (about 4,000 faults a step at batch 64)." if args.default_malloc else
                 "fixed at 32 MiB in every contender (the default; `--default-malloc` leaves "
                 "glibc's own, which affects PyTorch most: about 4,000 page faults a step at "
                 "batch 64)."),
             ""]

    # Who runs: the chosen target first, then the references.
    contenders = [f"jitnet {args.target}"]
    if args.target == "cuda":
        contenders.append("jitnet cpu")
    if args.target != "numpy" and not args.no_numpy:
        contenders.append("jitnet numpy")
    if torch is not None:
        contenders += ["torch cuda", "torch cuda-tf32"] if args.target == "cuda" else ["torch cpu"]

    rows = []
    launches = {}
    for batch in args.batch_size:
        times = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name in contenders:
                lib, where = name.split()
                kind = f"torch-{where}" if lib == "torch" else where
                repeat = numpy_repeat if where == "numpy" else args.repeat
                result = _run_child(kind, batch, repeat + 2, threads, args.batchnorm)
                times[name].append(result["step_ms"])
                if "launches" in result:
                    launches[batch] = result["launches"]
                print(f"batch {batch:4d}  {name:14s} {result['step_ms']:9.2f} ms/step",
                      file=sys.stderr)
        best = {name: min(t) for name, t in times.items()}
        base = best[contenders[0]]
        for name in contenders:
            spread = f"{min(times[name]):.1f} - {max(times[name]):.1f}"
            steps = numpy_repeat if name.endswith("numpy") else args.repeat
            rows.append([batch, name, f"{best[name]:.1f}", spread, steps,
                         f"{1000 * batch / best[name]:.0f}",
                         "1.00" if name == contenders[0] else f"{best[name] / base:.2f}"])
    lines += ["## Step time", "",
              table(["batch", "who", "ms / step", "range over rounds", "steps timed", "img / s",
                     f"time / time of {contenders[0]}"], rows), ""]
    if launches:
        lines += ["Kernel launches per jitnet cuda step: " + ", ".join(
            f"{n} at batch {b}" for b, n in launches.items()) + ".", ""]

    if not args.no_cold:
        rows = []
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, NUMBA_CACHE_DIR=cache)
            batch = args.batch_size[0]
            cold = _run_child(args.target, batch, 3, threads, args.batchnorm, env)
            warm = _run_child(args.target, batch, 3, threads, args.batchnorm, env)
            rows.append([f"jitnet {args.target}", f"{cold['first_step_s']:.1f}",
                         f"{warm['first_step_s']:.1f}", f"{warm['maxrss_mb']:.0f}"])
        if args.target == "cpu":  # and without the helper process that compiles beside it
            with tempfile.TemporaryDirectory() as cache:
                env = dict(os.environ, NUMBA_CACHE_DIR=cache, JITNET_PRECOMPILE="0")
                alone = _run_child(args.target, batch, 3, threads, args.batchnorm, env)
                rows.append(["jitnet cpu, `JITNET_PRECOMPILE=0`",
                             f"{alone['first_step_s']:.1f}", "-", "-"])
        if torch is not None:
            device = "cuda" if args.target == "cuda" else "cpu"
            t = _run_child(f"torch-{device}", batch, 3, threads, args.batchnorm)
            rows.append([f"torch {device}", "-", f"{t['first_step_s']:.1f}",
                         f"{t['maxrss_mb']:.0f}"])
        lines += [f"## Cold start and memory (batch {batch}, fresh process, 3 steps)", "",
                  "Seconds from process start (imports included) to the end of the first "
                  "step; `cold` has an empty Numba cache directory, `warm` the one the cold "
                  "run filled. A cold cpu run compiles its backward kernels in a helper "
                  "process beside it (`jitnet.kernels.precompile`); `JITNET_PRECOMPILE=0` "
                  "is the same run in one process. Peak memory is the process's maximum "
                  "resident set size.", "",
                  table(["who", "cold first step (s)", "warm first step (s)", "peak RSS (MiB)"],
                        rows), ""]

    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()

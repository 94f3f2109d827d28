"""Time convolutions beyond the reference ConvNet's: jitnet cpu vs PyTorch.

``bench_kernels.py`` times the two 3x3, stride-1 layers of the reference net. The
layers people build around them take other routes through jitnet's kernels: a
strided stem, strided and 1x1 downsampling, 5x5 kernels, few channels on wide
planes, many on small ones, depthwise convolutions. For each (batch ``B``, float32,
bias on): the forward, the whole backward (input, weight and bias gradients: the
one ``aten::convolution_backward`` call of PyTorch's autograd) and the backward
without the input gradient (a network's first layer). Each is checked against
PyTorch's result before it is timed. Median of ``--repeat`` calls after warm-up
(compilation excluded), each library's group in turn with a pause between (their
thread pools spin for a while after a call), the best of ``--rounds`` rounds.

Usage::

    NUMBA_NUM_THREADS=2 python benchmarks/bench_conv.py [--batch-size 64] [--rounds 3]
        [--cases stem,depthwise] [--out FILE.md]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    default_threads,
    machine,
    median_ms,
    steady_malloc,
    table,
    torch_or_none,
)

from jitnet.kernels import cpu  # noqa: E402

#: name -> (C, F, plane, kernel, stride, padding, groups), square planes and kernels
SHAPES = {
    "stem 3->64 7x7/2 on 64x64": (3, 64, 64, 7, 2, 3, 1),
    "3->32 3x3/2 on 32x32": (3, 32, 32, 3, 2, 1, 1),
    "32->64 3x3/2 on 32x32": (32, 64, 32, 3, 2, 1, 1),
    "64->128 3x3/2 on 16x16": (64, 128, 16, 3, 2, 1, 1),
    "64->128 1x1/2 on 16x16": (64, 128, 16, 1, 2, 0, 1),
    "3->32 5x5 on 32x32": (3, 32, 32, 5, 1, 2, 1),
    "16->16 3x3 on 32x32": (16, 16, 32, 3, 1, 1, 1),
    "64->128 3x3 on 8x8": (64, 128, 8, 3, 1, 1, 1),
    "64->128 1x1 on 16x16": (64, 128, 16, 1, 1, 0, 1),
    "depthwise 64 3x3 on 16x16": (64, 64, 16, 3, 1, 1, 64),
    "depthwise 64 3x3/2 on 16x16": (64, 64, 16, 3, 2, 1, 64),
    "depthwise 32 3x3 on 32x32": (32, 32, 32, 3, 1, 1, 32),
}

WORK = ("forward", "backward", "backward, no input grad")


def _calls(shape, batch, rng, torch=None):
    """``{work: (jitnet call, PyTorch call or None)}`` for one shape, jitnet's results
    checked against PyTorch's (float32, relative 2-norm error at most 1e-4)."""
    c, f, size, k, s, p, groups = shape
    x = rng.standard_normal((batch, c, size, size), dtype=np.float32)
    w = (rng.standard_normal((f, c // groups, k, k), dtype=np.float32)
         / np.float32(np.sqrt(k * k * c // groups)))
    b = rng.standard_normal(f, dtype=np.float32)
    y = cpu.conv2d_forward(x, w, b, s, p, groups)
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    calls = {
        "forward": [lambda: cpu.conv2d_forward(x, w, b, s, p, groups), None],
        "backward": [lambda: cpu.conv2d_backward(dy, x, w, s, p, groups), None],
        "backward, no input grad":
            [lambda: cpu.conv2d_backward(dy, x, w, s, p, groups, False), None],
    }
    if torch is None:
        return calls
    tx, tw, tb, tdy = (torch.from_numpy(a) for a in (x, w, b, dy))

    def backward(input_grad):
        return torch.ops.aten.convolution_backward(
            tdy, tx, tw, [f], [s, s], [p, p], [1, 1], False, [0, 0], groups,
            [input_grad, True, True])

    calls["forward"][1] = lambda: torch.nn.functional.conv2d(tx, tw, tb, s, p, 1, groups)
    calls["backward"][1] = lambda: backward(True)
    calls["backward, no input grad"][1] = lambda: backward(False)
    for work, (ours, theirs) in calls.items():
        got = ours()
        want = theirs()
        got, want = ((got,), (want,)) if work == "forward" else (got, want)
        for a, e in zip(got, want):
            if a is None and e is None:
                continue
            e = e.numpy()
            err = np.linalg.norm((a - e).ravel()) / max(np.linalg.norm(e.ravel()), 1e-30)
            if not err <= 1e-4:
                raise AssertionError(f"{shape} {work}: jitnet and PyTorch differ by {err:.2g}")
    return calls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3,
                        help="turns each library's group takes; the best counts")
    parser.add_argument("--cases", default="",
                        help="comma-separated words; only the shapes whose names hold one")
    parser.add_argument("--threads", type=int, default=None,
                        help="PyTorch threads (default: jitnet's, numba.get_num_threads())")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    args = parser.parse_args(argv)
    words = [w for w in args.cases.split(",") if w]
    shapes = {name: shape for name, shape in SHAPES.items()
              if not words or any(w in name for w in words)}
    if not shapes:
        parser.error(f"no shape's name holds any of {words}; the shapes: {list(SHAPES)}")
    threads = default_threads(args.threads)
    steady = steady_malloc()
    torch = None if args.no_torch else torch_or_none(threads)
    rng = np.random.default_rng(0)
    calls = {name: _calls(shape, args.batch_size, rng, torch) for name, shape in shapes.items()}
    libs = ["jitnet"] + (["torch"] if torch is not None else [])
    best = {lib: {} for lib in libs}
    for _ in range(args.rounds):
        for column, lib in enumerate(libs):
            time.sleep(0.5)
            for name in shapes:
                for work in WORK:
                    t = median_ms(calls[name][work][column], repeat=args.repeat)
                    key = (name, work)
                    best[lib][key] = min(t, best[lib].get(key, t))
    rows = []
    for name in shapes:
        for work in WORK:
            t_jit, t_torch = best["jitnet"][(name, work)], best.get("torch", {}).get((name, work))
            rows.append([name, work, f"{t_jit:.2f}", f"{t_torch:.2f}" if t_torch else "-",
                         f"{t_torch / t_jit:.2f}x" if t_torch else "-"])
    lines = [
        f"# Convolutions beyond the reference ConvNet, batch {args.batch_size}, float32", "",
        f"Machine: {machine()}; jitnet threads: {default_threads()}, torch threads: "
        f"{threads}. Median of {args.repeat} calls after 2 warm-up calls, the best of "
        f"{args.rounds} rounds taken in turn by the libraries; `speed-up` is PyTorch's "
        "time over jitnet cpu's (> 1: jitnet cpu is faster). glibc's mmap threshold: "
        + ("fixed at 32 MiB." if steady else "the allocator's default."), "",
        table(["convolution", "work", "jitnet cpu ms", "PyTorch ms", "speed-up"], rows),
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()

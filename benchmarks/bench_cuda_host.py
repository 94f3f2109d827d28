"""jitnet's own host time per cuda training step, measured without a GPU.

A small net on a big GPU is bound by the host: the step takes as long as Python
takes to issue its launches. Part of that is numba-cuda's (typing the arguments,
launching), which needs a GPU to measure; the rest is jitnet's (layers, kernel
wrappers, the array pool, the optimizer), which runs the same under Numba's
simulator. Here every kernel launch is replaced by a no-op (device functions and
everything else run as usual), so what is timed is jitnet's part alone: the step
of ``bench_train.py`` (forward, softmax cross-entropy, backward, SGD with
momentum), split into its phases, median over ``--steps`` steps after warm-up.

The simulator's device arrays stand in for numba-cuda's (attribute access goes
through a Python wrapper there), so read the figures as an estimate of jitnet's
share, not as a GPU's step time. The outputs of the no-op kernels are whatever the
pool's arrays held: the values computed are meaningless, the work is not.

Usage::

    NUMBA_ENABLE_CUDASIM=1 python benchmarks/bench_cuda_host.py [--batch-size 64]
        [--steps 200] [--batchnorm] [--out FILE.md]
"""

import argparse
import collections
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table  # noqa: E402

PHASES = ("zero_grad", "forward", "loss", "loss backward", "backward", "optimizer step")


def phase_times(batch, steps, batchnorm, warmup=20):
    """``({phase: median µs}, launches per step)`` of jitnet's host work per step."""
    from bench_train import _batch

    import jitnet
    from jitnet import models, nn, optim
    from jitnet.kernels import cuda

    launches = collections.Counter()

    def skip(name):  # count the launch, then leave it out
        launches[name] += 1
        return False

    with cuda.intercept_launches(skip):
        jitnet.set_target("cuda")
        jitnet.manual_seed(0)
        model = models.convnet(batchnorm=batchnorm).to("cuda")
        model.train()
        loss_fn = nn.SoftmaxCrossEntropyLoss()
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x, y = (jitnet.asarray(a) for a in _batch(batch))
        times = {phase: [] for phase in PHASES}
        for i in range(warmup + steps):
            if i == warmup:
                launches.clear()
            t0 = time.perf_counter()
            opt.zero_grad()
            t1 = time.perf_counter()
            scores = model(x)
            t2 = time.perf_counter()
            loss_fn(scores, y)
            t3 = time.perf_counter()
            grad = loss_fn.backward()
            t4 = time.perf_counter()
            model.backward(grad, input_grad=False)  # as jitnet.train.fit
            t5 = time.perf_counter()
            opt.step()
            t6 = time.perf_counter()
            if i >= warmup:
                marks = (t0, t1, t2, t3, t4, t5, t6)
                for phase, start, stop in zip(PHASES, marks, marks[1:]):
                    times[phase].append(stop - start)
    medians = {phase: 1e6 * statistics.median(t) for phase, t in times.items()}
    return medians, sum(launches.values()) / steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batchnorm", action="store_true",
                        help="the ConvNet with batch norms (jitnet compare's)")
    parser.add_argument("--out", help="also write the Markdown report here")
    args = parser.parse_args(argv)
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        sys.exit("bench_cuda_host: run it under the simulator (NUMBA_ENABLE_CUDASIM=1); "
                 "on a GPU, benchmarks/bench_train.py --target cuda times the whole step")
    medians, launches = phase_times(args.batch_size, args.steps, args.batchnorm)
    model = "the ConvNet with batch norms" if args.batchnorm else "the reference ConvNet"
    rows = [[phase, f"{us:.0f}"] for phase, us in medians.items()]
    rows.append(["step (sum of the medians)", f"{sum(medians.values()):.0f}"])
    lines = [f"# jitnet's host time per cuda step of {model}, batch {args.batch_size}", "",
             f"Machine: {machine()}. Numba's simulator, every launch a no-op; median of "
             f"{args.steps} steps after warm-up. Kernel launches per step: {launches:g}.",
             "", table(["phase", "µs"], rows)]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)


if __name__ == "__main__":
    main()

"""Sweep the cuda target's launch shapes on a real GPU.

For each ``(CUDA_TILE, CUDA_THREADS_PER_BLOCK)`` pair, time the reference ConvNet's
heaviest kernels at its training shapes (batch ``B``, float32): the median of
``--repeat`` calls after one untimed (compiling) call, synchronising before each
timer stops. ``jitnet bench --target cuda`` compares the default shapes against
NumPy; this script helps choose the defaults in ``jitnet/config.py``.

Usage (on a machine with an NVIDIA GPU)::

    python benchmarks/bench_cuda.py --batch-size 64 --repeat 10 --out bench_cuda.json

It refuses to run under ``NUMBA_ENABLE_CUDASIM=1``: simulator timings mean nothing.
"""

import argparse
import json
import statistics
import time

import numpy as np

from jitnet import config
from jitnet.kernels import cuda as k


def _median_ms(call, repeat):
    call()  # compiles for this launch shape: not timed
    k.synchronize()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        k.synchronize()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _kernels(batch):
    rng = np.random.default_rng(0)

    def arr(*shape):
        return k.asarray(rng.standard_normal(shape).astype(np.float32))

    x, w1, b1 = arr(batch, 3, 32, 32), arr(32, 3, 3, 3), arr(32)
    wd = arr(32, 1, 3, 3)
    h1 = arr(batch, 32, 32, 32)
    x2, w2, b2, dy2 = arr(batch, 32, 16, 16), arr(64, 32, 3, 3), arr(64), arr(batch, 64, 16, 16)
    xf, wf, bf, dyf = arr(batch, 4096), arr(256, 4096), arr(256), arr(batch, 256)
    _, argmax = k.maxpool2d_forward(h1, 2, 2)
    dp = arr(batch, 32, 16, 16)
    gamma, beta, mean, var = arr(32), arr(32), k.zeros((32,), "f4"), arr(32)
    return {
        "conv1 forward (3->32, 32x32)": lambda: k.conv2d_forward(x, w1, b1, 1, 1, 1),
        "conv1 backward": lambda: k.conv2d_backward(h1, x, w1, 1, 1, 1),
        "conv2 forward (32->64, 16x16)": lambda: k.conv2d_forward(x2, w2, b2, 1, 1, 1),
        "conv2 backward": lambda: k.conv2d_backward(dy2, x2, w2, 1, 1, 1),
        "depthwise forward (32, 16x16)": lambda: k.conv2d_forward(x2, wd, b1, 1, 1, 32),
        "maxpool forward (32x32)": lambda: k.maxpool2d_forward(h1, 2, 2),
        "maxpool backward": lambda: k.maxpool2d_backward(dp, argmax, h1.shape),
        "linear forward (4096->256)": lambda: k.linear_forward(xf, wf, bf),
        "linear backward": lambda: k.linear_backward(dyf, xf, wf),
        "batchnorm forward (32, 32x32)": lambda: k.batchnorm2d_forward(
            h1, gamma, beta, mean, var, 0.1, 1e-5, True
        ),
        "relu forward (32x32x32)": lambda: k.relu_forward(h1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--tiles", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--threads", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--out", default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)

    reason = k.unavailable_reason()
    if reason is not None or k.SIMULATOR:
        raise SystemExit(f"bench_cuda needs a real GPU: {reason or 'the simulator is on'}")
    info = k.device_info()
    print(
        f"device: {info.get('name')} (cc {info.get('compute_capability')}), "
        f"numba-cuda {info.get('numba_cuda_version')}, batch {args.batch_size}"
    )
    kernels = _kernels(args.batch_size)
    results = []
    for tile in args.tiles:
        for threads in args.threads:
            config.CUDA_TILE, config.CUDA_THREADS_PER_BLOCK = tile, threads
            row = {"tile": tile, "threads": threads}
            row.update({name: _median_ms(call, args.repeat) for name, call in kernels.items()})
            results.append(row)
            print(f"\ntile {tile}, threads {threads}")
            for name in kernels:
                print(f"  {name:32s} {row[name]:8.3f} ms")
    if args.out:
        with open(args.out, "w") as f:
            record = {"device": info, "batch_size": args.batch_size, "results": results}
            json.dump(record, f, indent=2, default=str)


if __name__ == "__main__":
    main()

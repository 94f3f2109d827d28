"""HoG on a batch of CIFAR-size colour images: jitnet cpu vs the numpy target vs skimage.

Usage::

    python benchmarks/bench_hog.py [--n 1000] [--repeats 7] [--data-dir DIR]

Times ``jitnet.features.hog(images, channel_axis=1)`` (9 orientations, 8x8
cells, 2x2 blocks, L2-Hys) on each available target and a Python loop over
``skimage.feature.hog``; every timing is the median of ``--repeats`` runs (the
slower references fewer: the numpy target ``max(3, repeats // 2)``, the skimage loop
``--skimage-repeats``; the ``runs`` column gives each count) after one warm-up call
(which also compiles), so compilation is excluded; the CPU
column (process time, all threads) is steadier than wall time on a busy machine. Images are
the real CIFAR-10 subset when ``--data-dir`` (or the shared default) holds it,
else random uint8 images of the same size. The "cuda" row, when that target is
available, runs jitnet's HoG with the cuda target active.
"""

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numba
import numpy as np

import jitnet

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-subset"
HOG_ARGS = dict(orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2),
                block_norm="L2-Hys")


def machine():
    """A one-line description of the CPU this runs on."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{name}, {os.cpu_count()} cores, numba threads {numba.get_num_threads()}, "
            f"{platform.system()} {platform.python_version()}")


def load_images(data_dir, n):
    if (Path(data_dir) / "cifar-10-batches-py" / "test_batch").is_file():
        # jitnet's restricted unpickler, never a plain pickle.load of downloaded files
        x_train, _, x_test, _ = jitnet.data.load_cifar10(data_dir)
        images = np.concatenate([x_test, x_train])
        while len(images) < n:
            images = np.concatenate([images, images])
        return images[:n], "real CIFAR-10 subset"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), "random uint8"


def median_seconds(fn, repeats):
    """Median wall and process-CPU seconds of ``fn()`` over ``repeats`` calls after a warm-up.

    CPU time (summed over threads) is less disturbed than wall time on a shared machine.
    """
    fn()  # warm-up: compiles, fills caches
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="images per batch")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--skimage-repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    args = parser.parse_args(argv)

    images, source = load_images(args.data_dir, args.n)
    rows = []
    for target in jitnet.available_targets():
        repeats = args.repeats if target != "numpy" else max(3, args.repeats // 2)
        with jitnet.use_target(target):
            seconds = median_seconds(
                lambda: jitnet.to_numpy(jitnet.features.hog(images, channel_axis=1, **HOG_ARGS)),
                repeats,
            )
        rows.append((f"jitnet {target}", seconds, repeats))

    from skimage.feature import hog as skimage_hog

    def skimage_loop():
        return np.stack([skimage_hog(image, channel_axis=0, **HOG_ARGS) for image in images])

    rows.append(("skimage loop", median_seconds(skimage_loop, args.skimage_repeats),
                 args.skimage_repeats))

    seconds_of = {name: seconds for name, (seconds, _), _ in rows}
    reference, cpu = seconds_of["skimage loop"], seconds_of["jitnet cpu"]
    print(f"HoG of {args.n} colour 32x32 images ({source}), {HOG_ARGS}")
    print(f"machine: {machine()}")
    print(f"{'implementation':<16} {'median ms':>10} {'CPU ms':>8} {'runs':>5} {'images/s':>10} "
          f"{'vs skimage':>11} {'vs cpu':>8}")
    for name, (seconds, cpu_seconds), repeats in rows:
        print(f"{name:<16} {1e3 * seconds:>10.1f} {1e3 * cpu_seconds:>8.1f} {repeats:>5} "
              f"{args.n / seconds:>10.0f} {reference / seconds:>10.1f}x {cpu / seconds:>7.2f}x")


if __name__ == "__main__":
    main()

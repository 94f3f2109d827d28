"""The HoG-linear side of the comparison on real photographs: jitnet vs scikit-learn.

Usage::

    python benchmarks/bench_hog_linear.py [--data-dir DIR]

On the shared real CIFAR-10 subset (train ``data_batch_1..4``, test ``test_batch``)
this fits the default ``jitnet.models.HogLinearClassifier`` (its first fit includes
Numba compilation unless the cache is warm, so it is timed twice) and, as the
reference, scikit-learn's ``LinearSVC`` on standardised features computed by
scikit-image and matplotlib, independently of jitnet:

- ``classic``: colour HoG (9 orientations, 8x8 cells, 2x2 blocks, L2-Hys) and the
  10-bin hue histogram of cs231n's ``color_histogram_hsv``;
- ``classic HoG only``: the same HoG without the histogram;
- ``jitnet's features``: what the default classifier uses (6x6 cells, 3x3 blocks,
  hue, saturation and value histograms).

``LinearSVC`` is reported for each ``C`` in the grid (squared hinge, one-vs-rest);
choosing the best on the test set flatters the reference, which is the conservative
side. Needs scikit-learn (not a jitnet dependency): ``pip install scikit-learn``.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import jitnet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-subset"
C_GRID = (0.001, 0.01, 0.1, 1.0)


def skimage_features(images, pixels_per_cell, cells_per_block, channels):
    """Colour HoG (skimage) and HSV histograms (matplotlib + np.histogram) per image."""
    from matplotlib.colors import rgb_to_hsv
    from skimage.feature import hog

    rows = []
    for image in images:
        hwc = image.transpose(1, 2, 0)
        parts = [hog(hwc, orientations=9, pixels_per_cell=(pixels_per_cell,) * 2,
                     cells_per_block=(cells_per_block,) * 2, block_norm="L2-Hys",
                     channel_axis=-1)]
        hsv = rgb_to_hsv(hwc / 255.0)
        for k in ("hsv".index(c) for c in channels):
            counts, _ = np.histogram(hsv[..., k], bins=10, range=(0.0, 1.0))
            parts.append(counts / hsv[..., k].size)
        rows.append(np.concatenate(parts))
    return np.array(rows)


def linear_svc_scores(train, y_train, test, y_test):
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    scaler = StandardScaler().fit(train)
    train, test = scaler.transform(train), scaler.transform(test)
    scores = {}
    for c in C_GRID:
        start = time.perf_counter()
        model = LinearSVC(C=c, max_iter=5000).fit(train, y_train)
        scores[c] = (model.score(test, y_test), time.perf_counter() - start)
    return scores


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    args = parser.parse_args(argv)
    x_train, y_train, x_test, y_test = jitnet.data.load_cifar10(args.data_dir)
    print(f"# HoG + linear classifier on {len(x_train)} / {len(x_test)} real CIFAR-10 images")
    print(f"\nMachine: {machine()}\n")

    print("| model | features | test accuracy | fit seconds |")
    print("|---|---|---|---|")
    for run in ("first fit", "second fit"):
        start = time.perf_counter()
        clf = jitnet.models.HogLinearClassifier(verbose=False).fit(x_train, y_train)
        seconds = time.perf_counter() - start
        print(f"| jitnet HogLinearClassifier ({run}) | default (6x6 / 3x3 HoG + HSV) | "
              f"{clf.score(x_test, y_test):.1%} | {seconds:.1f} |")

    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("\nscikit-learn is not installed: no LinearSVC reference "
              "(pip install scikit-learn)")
        return
    sets = {
        "classic (8x8 / 2x2 HoG + hue)": (8, 2, "h"),
        "classic HoG only": (8, 2, ""),
        "jitnet's features (6x6 / 3x3 HoG + HSV)": (6, 3, "hsv"),
    }
    for name, (cell, block, channels) in sets.items():
        start = time.perf_counter()
        train = skimage_features(x_train, cell, block, channels)
        test = skimage_features(x_test, cell, block, channels)
        extract = time.perf_counter() - start
        for c, (accuracy, seconds) in linear_svc_scores(train, y_train, test, y_test).items():
            print(f"| LinearSVC C={c:g} | {name} | {accuracy:.1%} | "
                  f"{seconds:.1f} (+ {extract:.0f} s skimage features) |")


if __name__ == "__main__":
    main()

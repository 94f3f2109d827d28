"""Draw docs/synthetic_classes.png: eight samples of each synthetic class, for the README.

Usage: python scripts/make_class_grid.py [--out docs/synthetic_classes.png] [--seed 0]
"""

import argparse
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402  (installed with matplotlib)

from jitnet.data import CLASS_NAMES, synthetic_cifar  # noqa: E402

SAMPLES = 8


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=Path(__file__).resolve().parents[1] / "docs"
                        / "synthetic_classes.png", type=Path)
    parser.add_argument("--seed", default=0, type=int)
    args = parser.parse_args()

    x, y, _, _ = synthetic_cifar(n_train=10 * SAMPLES * 3, n_test=0, seed=args.seed)
    fig, axes = plt.subplots(len(CLASS_NAMES), SAMPLES, figsize=(SAMPLES * 0.8 + 0.9, 8.2))
    for label, name in enumerate(CLASS_NAMES):
        for j, i in enumerate(np.flatnonzero(y == label)[:SAMPLES]):
            ax = axes[label, j]
            ax.imshow(x[i].transpose(1, 2, 0), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(f"jitnet.data.synthetic_cifar(seed={args.seed}): {SAMPLES} samples per class",
                 fontsize=9)
    fig.subplots_adjust(left=0.14, right=0.99, top=0.95, bottom=0.01, wspace=0.05, hspace=0.05)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=72, format="png")
    # A 256-colour palette keeps the noisy images under 200 KB for the README.
    image = Image.open(buffer).convert("RGB").quantize(256, dither=Image.Dither.NONE)
    image.save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()

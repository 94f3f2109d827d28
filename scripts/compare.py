"""HoG + linear classifier against a ConvNet on the same data: the lecture in one script.

    python scripts/compare.py                          # synthetic data, cpu target
    python scripts/compare.py --data-dir data          # real CIFAR-10

The same as ``jitnet compare``: it writes report.md, report.json and pictures.
"""

import argparse
import time

import jitnet
from jitnet import data, report
from jitnet.train import train_convnet, train_hog_linear


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="CIFAR-10 folder (default: synthetic data)")
    parser.add_argument("--target", default="cpu", choices=["numpy", "cpu", "cuda"])
    parser.add_argument("--epochs", type=int, default=None, help="ConvNet epochs")
    parser.add_argument("--out", default="runs/compare_script")
    args = parser.parse_args()

    jitnet.set_target(args.target)
    if args.data_dir:
        x_train, y_train, x_test, y_test = data.load_cifar10(args.data_dir)
        names = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]
    else:
        x_train, y_train, x_test, y_test = data.synthetic_cifar(n_train=5000, n_test=1000)
        names = list(data.CLASS_NAMES)

    start = time.perf_counter()
    results = {
        "hog_linear": train_hog_linear(x_train, y_train, x_test, y_test, seed=0,
                                       out_dir=f"{args.out}/hog_linear"),
        "convnet": train_convnet(x_train, y_train, x_test, y_test, epochs=args.epochs,
                                 seed=0, out_dir=f"{args.out}/convnet",
                                 data_name="cifar10" if args.data_dir else "synthetic"),
    }
    seconds = time.perf_counter() - start

    print(report.comparison_table({key: r.metrics for key, r in results.items()}))
    path = report.write_report(args.out, results, x_test, y_test, class_names=names,
                               wall_seconds=seconds)
    print(f"report: {path}")


if __name__ == "__main__":
    main()

"""Fit the HoG + linear classifier: hand-made features, one learned layer.

    python scripts/train_hog_linear.py                   # synthetic data, cpu target
    python scripts/train_hog_linear.py --data-dir data   # real CIFAR-10

The same as ``jitnet train --model hog-linear``, written out so you can change it.
"""

import argparse

import numpy as np

import jitnet
from jitnet import data, models


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="CIFAR-10 folder (default: synthetic data)")
    parser.add_argument("--target", default="cpu", choices=["numpy", "cpu", "cuda"])
    parser.add_argument("--loss", default="softmax", choices=["softmax", "hinge"])
    args = parser.parse_args()

    jitnet.set_target(args.target)
    if args.data_dir:
        x_train, y_train, x_test, y_test = data.load_cifar10(args.data_dir)
    else:
        x_train, y_train, x_test, y_test = data.synthetic_cifar(n_train=5000, n_test=1000)

    # HoG + an HSV colour histogram, standardised, into one Linear layer trained with
    # softmax (or the multiclass SVM loss); the other defaults were tuned on real CIFAR-10
    classifier = models.HogLinearClassifier(loss=args.loss, seed=0)
    classifier.fit(x_train, y_train, x_test, y_test)  # test accuracy per epoch in history_

    for entry in classifier.history_:
        print(f"epoch {entry['epoch']:2d}  loss {entry['loss']:.3f}  "
              f"train {entry['train_accuracy']:.1%}  test {entry.get('val_accuracy', np.nan):.1%}")
    print(f"{classifier.coef_.shape[1]} features per image; "
          f"test accuracy {classifier.score(x_test, y_test):.1%} "
          f"(fit in {classifier.fit_seconds_:.1f} s)")


if __name__ == "__main__":
    main()

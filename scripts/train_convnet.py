"""Train the reference ConvNet with jitnet's default recipe, step by step.

    python scripts/train_convnet.py                          # synthetic data, cpu target
    python scripts/train_convnet.py --data-dir data          # real CIFAR-10
    python scripts/train_convnet.py --target numpy --epochs 2

The same as ``jitnet train --model convnet``, written out so you can change it.
"""

import argparse

import jitnet
from jitnet import data, models, nn, optim
from jitnet.train import channel_stats, fit


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="CIFAR-10 folder (default: synthetic data)")
    parser.add_argument("--target", default="cpu", choices=["numpy", "cpu", "cuda"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="runs/train_convnet")
    args = parser.parse_args()

    jitnet.set_target(args.target)
    jitnet.manual_seed(0)  # initialisation, shuffling and augmentation are reproducible

    if args.data_dir:
        x_train, y_train, x_test, y_test = data.load_cifar10(args.data_dir)
    else:
        x_train, y_train, x_test, y_test = data.synthetic_cifar(n_train=5000, n_test=1000)

    # inputs scaled by the training set's per-channel statistics; crops and flips
    # show the network a slightly different picture each epoch
    T = data.transforms
    normalize = T.Normalize(*channel_stats(x_train))
    augment = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), normalize])
    loader = data.DataLoader(x_train, y_train, batch_size=64, shuffle=True,
                             transform=augment, seed=0)

    model = models.convnet(num_classes=10, batchnorm=True).to()
    print(model)
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    scheduler = optim.CosineLR(optimizer, args.epochs)  # decays the rate to 0 by the end

    metrics = fit(model, nn.SoftmaxCrossEntropyLoss(), optimizer, loader, x_test, y_test,
                  epochs=args.epochs, scheduler=scheduler, eval_transform=normalize,
                  out_dir=args.out, model_name="convnet")
    print(f"test accuracy {metrics['test_accuracy']:.1%} after {metrics['epochs']} epochs, "
          f"{metrics['train_seconds']:.0f} s, {metrics['images_per_second']:.0f} images/s")
    print(f"checkpoint: {args.out}/checkpoint.npz")


if __name__ == "__main__":
    main()

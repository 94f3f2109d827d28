"""jitnet.data.synthetic: the embedded synthetic CIFAR-style set."""

import hashlib

import numpy as np
import pytest

from jitnet.data import CLASS_NAMES, synthetic_cifar


def test_shapes_dtypes_balance():
    x_train, y_train, x_test, y_test = synthetic_cifar(n_train=203, n_test=50, seed=3)
    assert x_train.shape == (203, 3, 32, 32) and x_train.dtype == np.uint8
    assert x_test.shape == (50, 3, 32, 32) and x_test.dtype == np.uint8
    assert y_train.shape == (203,) and y_train.dtype == np.int64
    assert y_test.dtype == np.int64
    assert len(CLASS_NAMES) == 10
    counts = np.bincount(y_train, minlength=10)
    assert counts.min() == 20 and counts.max() == 21
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10), 5)
    assert x_train.std() > 20  # images, not a constant


def test_same_seed_same_bytes_other_seed_differs():
    a = synthetic_cifar(n_train=60, n_test=20, seed=11)
    b = synthetic_cifar(n_train=60, n_test=20, seed=11)
    c = synthetic_cifar(n_train=60, n_test=20, seed=12)
    for u, v in zip(a, b):
        assert u.tobytes() == v.tobytes()
    assert a[0].tobytes() != c[0].tobytes()
    assert not np.array_equal(a[1], c[1])


def test_train_and_test_differ():
    x_train, _, x_test, _ = synthetic_cifar(n_train=20, n_test=20, seed=0)
    assert x_train.tobytes() != x_test.tobytes()


def test_the_test_set_does_not_depend_on_n_train():
    # a learning curve (accuracy against training-set size) scores every point on one
    # test set; before, the test images were drawn after the training ones, from
    # the same stream
    _, _, x_a, y_a = synthetic_cifar(n_train=0, n_test=20, seed=4)
    _, _, x_b, y_b = synthetic_cifar(n_train=37, n_test=20, seed=4)
    x_train, y_train, _, _ = synthetic_cifar(n_train=20, n_test=0, seed=4)
    np.testing.assert_array_equal(x_a, x_b)
    np.testing.assert_array_equal(y_a, y_b)
    assert x_a.tobytes() != x_train.tobytes()  # its own stream, not the training one's


def test_known_digest():
    # Pins the bytes of seed 0 (numpy's PCG64 streams are stable across versions and
    # machines, and the renderer uses only exactly rounded float operations).
    x_train, y_train, _, _ = synthetic_cifar(n_train=30, n_test=0, seed=0)
    digest = hashlib.sha256(x_train.tobytes() + y_train.tobytes()).hexdigest()
    assert digest == DIGEST
    _, _, x_test, y_test = synthetic_cifar(n_train=0, n_test=30, seed=0)
    digest = hashlib.sha256(x_test.tobytes() + y_test.tobytes()).hexdigest()
    assert digest == TEST_DIGEST  # SeedSequence's spawn is as stable as PCG64


@pytest.mark.parametrize("kwargs, error", [
    ({"n_train": -1}, ValueError), ({"seed": -2}, ValueError),
    ({"n_test": 1.5}, TypeError), ({"n_train": True}, TypeError), ({"seed": True}, TypeError),
    ({"seed": "0"}, TypeError),
])
def test_bad_arguments(kwargs, error):
    # the wrong kind (bools are no counts) is a TypeError, a negative count a ValueError
    (name, value), = kwargs.items()
    with pytest.raises(error, match=f"synthetic_cifar expected {name} to be an int >= 0, "
                                    f"got {value!r}"):
        synthetic_cifar(**kwargs)


DIGEST = "b8f13a9908c7a32962ea6f0fbcdcab0267b8be5478212e36438a49ba526c0b58"
TEST_DIGEST = "7ca0841f54b6dac6c2e6e540f42405082cdd0968d9df3855583486b49be2759b"

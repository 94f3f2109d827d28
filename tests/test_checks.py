"""The shared checks of scalar arguments (jitnet._checks): one rule for the package."""

import re

import numpy as np
import pytest

from jitnet._checks import check_flag, check_int, check_real


def test_numpy_scalars_are_numbers_and_flags():
    assert check_int("f", "n", np.int64(3), 1) == 3
    assert type(check_int("f", "n", np.uint8(0), 0)) is int
    assert check_real("f", "x", np.float32(0.5)) == 0.5 and check_real("f", "x", 2) == 2.0
    assert check_flag("f", "b", np.True_) is True and check_flag("f", "b", False) is False


@pytest.mark.parametrize("value", [True, np.False_, 2.0, "3", None, [1]])
def test_a_count_of_the_wrong_kind_is_a_type_error_naming_its_type(value):
    kind = type(value).__name__
    with pytest.raises(TypeError, match=rf"^f expected n to be an int >= 1, got .* \({kind}\)$"):
        check_int("f", "n", value, 1)


@pytest.mark.parametrize("value", [True, "0.1", None, [0.1], 1j])
def test_a_real_of_the_wrong_kind_is_a_type_error(value):
    with pytest.raises(TypeError, match=r"^f expected x to be a finite number > 0, got "):
        check_real("f", "x", value, "> 0", lambda v: v > 0)


@pytest.mark.parametrize("value", [0, -1.5, float("nan"), float("inf"), np.float64(-np.inf)])
def test_a_real_out_of_range_is_a_value_error_without_its_type(value):
    message = f"f expected x to be a finite number > 0, got {value!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_real("f", "x", value, "> 0", lambda v: v > 0)


def test_below_the_minimum_is_a_value_error():
    with pytest.raises(ValueError, match=r"^f expected n to be an int >= 0, got -1$"):
        check_int("f", "n", -1, 0)


@pytest.mark.parametrize("value", [1, 0, "False", None])
def test_only_a_bool_is_a_flag(value):
    with pytest.raises(TypeError, match=r"^f expected b to be True or False, got "):
        check_flag("f", "b", value)


def _wrong_kinds():
    import jitnet
    from jitnet import data
    from jitnet.data import transforms as T

    x, y = np.zeros((4, 3, 8, 8), np.float32), np.arange(4)
    return [
        ("synthetic_cifar(n_train=True)", lambda: data.synthetic_cifar(n_train=True, n_test=0),
         "synthetic_cifar expected n_train to be an int >= 0, got True"),
        ("synthetic_cifar(seed=True)", lambda: data.synthetic_cifar(5, 0, seed=True),
         "synthetic_cifar expected seed to be an int >= 0, got True"),
        ("manual_seed(True)", lambda: jitnet.manual_seed(True),
         "manual_seed expected seed to be an int >= 0, got True"),
        ("manual_seed('1')", lambda: jitnet.manual_seed("1"), r"got '1' \(str\)"),
        ("manual_seed(1.0)", lambda: jitnet.manual_seed(1.0), r"got 1.0 \(float\)"),
        ("set_target(None)", lambda: jitnet.set_target(None),
         r"set_target expected a target name.*got None \(NoneType\)"),
        ("set_target(1)", lambda: jitnet.set_target(1), r"got 1 \(int\)"),
        ("load_cifar10(123)", lambda: data.load_cifar10(123),
         r"load_cifar10 expected root to be a folder path .*got 123 \(int\)"),
        ("load_cifar10(None)", lambda: data.load_cifar10(None), r"got None \(NoneType\)"),
        ("DataLoader(transform=5)", lambda: data.DataLoader(x, y, 4, transform=5),
         r"DataLoader expected a callable transform or None, got 5 \(int\)"),
        ("RandomCrop('32')", lambda: T.RandomCrop("32"),
         r"RandomCrop expected size to be an int or \(h, w\), got '32' \(str\)"),
        ("RandomCrop(32.0)", lambda: T.RandomCrop(32.0), r"got 32.0 \(float\)"),
        ("Compose(5)", lambda: T.Compose(5),
         r"Compose expected a sequence of transforms, got 5 \(int\)"),
        ("Compose([5])", lambda: T.Compose([5]),
         r"Compose expected callable transforms, got 5 at index 0 \(int\)"),
        ("Normalize('abc', [1])", lambda: T.Normalize("abc", [1]),
         r"Normalize expected mean to be a sequence of numbers, one per channel, got 'abc' "
         r"\(str\)"),
    ]


@pytest.mark.parametrize("call, make, message", _wrong_kinds(),
                         ids=[case[0] for case in _wrong_kinds()])
def test_the_package_raises_type_error_for_the_wrong_kind(call, make, message):
    # these raised ValueError or were accepted (bools taken for numbers)
    import jitnet

    previous = jitnet.rng.get_state(), jitnet.get_target()
    try:
        with pytest.raises(TypeError, match=message):
            make()
    finally:
        jitnet.rng.set_state(previous[0])
        jitnet.set_target(previous[1])

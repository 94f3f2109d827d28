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

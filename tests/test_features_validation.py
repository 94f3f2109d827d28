"""Bad input to jitnet.features and HogLinearClassifier: a clear ValueError that names what
was expected and what came, raised before any work, and a rejected fit loses nothing."""

import copy

import numpy as np
import pytest

import jitnet
from jitnet.features import color_histogram, hog, hog_image, n_hog_features
from jitnet.models import HogLinearClassifier
from jitnet.models import hog_linear as hog_linear_module

TARGETS = ["numpy", "cpu"]
EMPTY = "at least one image, with at least one channel and one pixel"


@pytest.fixture(params=TARGETS)
def target(request):
    with jitnet.use_target(request.param):
        yield request.param


# ---------------------------------------------------------------- empty axes
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize(
    "shape, channel_axis",
    [((1, 0, 16, 16), 1), ((1, 16, 16, 0), -1), ((0, 3, 16, 16), 1), ((0, 16, 16), None),
     ((2, 3, 0, 16), 1), ((2, 16, 0), None)],
)
def test_hog_refuses_empty_axes_on_every_target(target, dtype, shape, channel_axis):
    # a batch without channels crashed the cpu kernel (uint8) or gave zeros (float32)
    with pytest.raises(ValueError, match=EMPTY) as info:
        hog(np.zeros(shape, dtype), pixels_per_cell=4, channel_axis=channel_axis)
    assert str(shape) in str(info.value)


@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
@pytest.mark.parametrize("shape, channel_axis",
                         [((2, 3, 0, 8), 1), ((2, 3, 8, 0), 1), ((0, 3, 8, 8), 1),
                          ((2, 0, 8, 3), -1)])
def test_color_histogram_refuses_empty_axes_on_every_target(target, dtype, shape, channel_axis):
    # no pixels divided by zero on cpu and gave NaN on numpy; no images disagreed
    with pytest.raises(ValueError, match=EMPTY) as info:
        color_histogram(np.zeros(shape, dtype), channel_axis=channel_axis)
    assert str(shape) in str(info.value)


def test_hog_image_refuses_an_empty_image():
    with pytest.raises(ValueError, match=EMPTY):
        hog_image(np.zeros((0, 16, 16)), channel_axis=0)


# ---------------------------------------------------------------- parameters
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        # the wrong kind is a TypeError, as everywhere (jitnet._checks)
        ({"orientations": True}, TypeError, r"orientations must be a positive int, got True \(b"),
        ({"orientations": 9.0}, TypeError, "orientations must be a positive int, got 9.0"),
        ({"pixels_per_cell": (True, True)}, TypeError, r"pixels_per_cell .* got \(True, True\)"),
        ({"pixels_per_cell": (8.0, 8)}, TypeError, r"pixels_per_cell .* got \(8.0, 8\)"),
        ({"pixels_per_cell": "8"}, TypeError, r"pixels_per_cell .* got '8' \(str\)"),
        ({"pixels_per_cell": "88"}, TypeError, "pixels_per_cell .* got '88'"),
        ({"pixels_per_cell": np.array(8)}, TypeError, "pixels_per_cell .* got array"),
        ({"cells_per_block": True}, TypeError, "cells_per_block .* got True"),
        ({"block_norm": ["L2"]}, TypeError, r"block_norm must be a str.* got \['L2'\] \(list\)"),
        ({"block_norm": 1}, TypeError, "block_norm must be a str.* got 1"),
        # the right kind out of range is a ValueError
        ({"orientations": 0}, ValueError, "orientations must be a positive int, got 0"),
        ({"pixels_per_cell": (0, 8)}, ValueError, r"pixels_per_cell .* got \(0, 8\)"),
        ({"cells_per_block": (2, 2, 2)}, ValueError,
         "cells_per_block must be a positive int or a pair"),
        ({"block_norm": "L3"}, ValueError, "unknown block_norm 'L3'"),
        ({"channel_axis": True}, TypeError, r"channel_axis must be an int .* got True \(bool\)"),
        ({"channel_axis": "1"}, TypeError, r"channel_axis must be an int .* got '1' \(str\)"),
        ({"channel_axis": 4}, ValueError, r"channel_axis=4 does not exist .* \(2, 3, 16, 16\)"),
        ({"channel_axis": -4}, ValueError, "names the batch axis"),
    ],
)
def test_hog_parameters_are_ints_that_are_ints(kwargs, error, message):
    images = np.zeros((2, 3, 16, 16), np.uint8)
    kwargs = {"channel_axis": 1, **kwargs}
    with pytest.raises(error, match=message):
        hog(images, **kwargs)


def test_hog_accepts_numpy_ints_with_the_same_result():
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 16, 16), dtype=np.uint8)
    want = hog(images, orientations=9, pixels_per_cell=(4, 4), cells_per_block=2, channel_axis=1)
    got = hog(images, orientations=np.int64(9), pixels_per_cell=np.array([4, 4]),
              cells_per_block=np.int32(2), channel_axis=np.int8(1))
    np.testing.assert_array_equal(got, want)


def test_n_hog_features_checks_orientations():
    assert n_hog_features((16, 16), 9, 4, 2) == 9 * 9 * 4
    with pytest.raises(TypeError, match="orientations must be a positive int, got True"):
        n_hog_features((16, 16), orientations=True)


@pytest.mark.parametrize(
    "image, channel_axis, message",
    [
        (np.zeros((3, 16, 16)), 3, "channel_axis=3 does not exist .* shape \\(3, 16, 16\\)"),
        (np.zeros((16, 16)), 0, "hog_image expected one image.* got 2-D input"),
        (np.zeros((3, 16, 16)), None, "hog_image expected one image.* got 3-D input"),
        (np.zeros((3, 16, 16), bool), 0, "real-valued"),
    ],
)
def test_hog_image_names_channel_axis_and_shape(image, channel_axis, message):
    with pytest.raises(ValueError, match=message):
        hog_image(image, pixels_per_cell=4, channel_axis=channel_axis)


def test_hog_image_channel_axis_of_the_wrong_kind():
    with pytest.raises(TypeError, match=r"hog_image: channel_axis must be an int .* got '0'"):
        hog_image(np.zeros((3, 16, 16)), pixels_per_cell=4, channel_axis="0")


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"bins": True}, TypeError, "expected bins to be an int >= 1, got True"),
        ({"bins": 10.0}, TypeError, "expected bins to be an int >= 1, got 10.0"),
        ({"bins": 0}, ValueError, "expected bins to be an int >= 1, got 0"),
        ({"channel_axis": True}, TypeError, r"channel_axis must be an int .* got True \(bool\)"),
        ({"channel_axis": None}, TypeError, r"channel_axis must be an int .* got None"),
        ({"channels": ""}, ValueError, "expected channels to be a non-empty string"),
        ({"channels": "x"}, ValueError, "expected channels to be a non-empty string"),
        ({"channels": ["h"]}, TypeError, r"non-empty string .* got \['h'\] \(list\)"),
    ],
)
def test_color_histogram_parameters(kwargs, error, message):
    with pytest.raises(error, match=message):
        color_histogram(np.zeros((2, 3, 8, 8), np.uint8), **kwargs)


# ---------------------------------------------------------------- HogLinearClassifier
SMALL = dict(pixels_per_cell=4, cells_per_block=2, epochs=2, batch_size=16, verbose=False)
FITTED = ("coef_", "intercept_", "classes_", "mean_", "scale_", "image_shape_",
          "n_features_in_", "history_", "fit_seconds_")


def images(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 16, 16), dtype=np.uint8), np.arange(n) % 2


@pytest.fixture(scope="module")
def fitted():
    x, y = images(24, 0)
    return HogLinearClassifier(**SMALL).fit(x, y)


def assert_unchanged(model, before):
    for name in FITTED:
        np.testing.assert_array_equal(getattr(model, name), getattr(before, name), err_msg=name)


@pytest.mark.parametrize(
    "error, params, call, message",
    [
        (ValueError, {}, lambda x, y: (x, np.zeros(40)),
         r"inconsistent numbers of samples: \[24, 40\]"),
        (ValueError, {}, lambda x, y: (x, y[:, None]),
         r"y to be a 1-D array .* got shape \(24, 1\)"),
        (ValueError, {}, lambda x, y: (x[:, :, :4, :4], y), "too small for one block"),
        (ValueError, {"lr": -1}, None,
         "HogLinearClassifier expected lr to be a finite number > 0, got -1"),
        (TypeError, {"lr": True}, None, "lr to be a finite number > 0, got True \\(bool\\)"),
        (ValueError, {"reg": -1}, None, "reg to be a finite number >= 0, got -1"),
        (TypeError, {"momentum": "0.9"}, None,
         "momentum to be a finite number in \\[0, 1\\], got '0.9'"),
        (ValueError, {"momentum": float("nan")}, None, "momentum to be a finite number"),
        (ValueError, {"seed": -1}, None, "seed to be an int >= 0, got -1"),
        (TypeError, {"epochs": True}, None, "epochs to be an int >= 1, got True"),
        (TypeError, {"batch_size": 8.0}, None, "batch_size to be an int >= 1, got 8.0"),
        (ValueError, {"color_bins": 0}, None, "color_bins to be an int >= 1, got 0"),
        (ValueError, {"color_channels": "x"}, None, "color_channels"),
        (TypeError, {"color_channels": 1}, None, r"color_channels .* got 1 \(int\)"),
        (TypeError, {"verbose": "no"}, None,
         r"HogLinearClassifier expected verbose to be True or False, got 'no' \(str\)"),
        (TypeError, {"orientations": True}, None, "orientations must be a positive int"),
        (TypeError, {"pixels_per_cell": "6"}, None, "pixels_per_cell .* got '6'"),
        (TypeError, {"block_norm": 1}, None, "block_norm must be a str"),
        (ValueError, {"block_norm": "L3"}, None, "unknown block_norm 'L3'"),
        # a str option that is no str is the wrong kind, an unknown str a bad value
        (TypeError, {"schedule": None}, None,
         "HogLinearClassifier expected schedule to be a str, .* got None \\(NoneType\\)"),
        (TypeError, {"loss": ["softmax"]}, None, "expected loss to be a str"),
        (TypeError, {"loss": 1}, None, r"expected loss to be a str, one of \('softmax', "
                                      r"'hinge'\), got 1 \(int\)"),
        (TypeError, {"features": 1}, None, "expected features to be a str"),
        (TypeError, {"optimizer": 1}, None, "expected optimizer to be a str"),
        (TypeError, {"schedule": 1}, None, "expected schedule to be a str"),
        (ValueError, {"loss": "l2"}, None, "unknown loss 'l2'"),
        (ValueError, {"features": "hog+colour"}, None, "unknown features 'hog\\+colour'"),
        (ValueError, {"optimizer": "rmsprop"}, None, "unknown optimizer 'rmsprop'"),
        (ValueError, {"schedule": "step"}, None, "unknown schedule 'step'"),
        (ValueError, {}, lambda x, y: (x, y, x[:5]),
         "X_val and y_val together .* X_val without y_val"),
        (ValueError, {}, lambda x, y: (x, y, None, y[:5]), "y_val without X_val"),
        (ValueError, {}, lambda x, y: (x, y, x[:5], y[:3]),
         r"inconsistent numbers of samples: \[5, 3\]"),
        (ValueError, {}, lambda x, y: (x, y, x[:5, :, :8], y[:5]),
         r"X_val must be images of the training"),
    ],
)
def test_rejected_fit_does_no_work_and_keeps_the_last_fit(target, fitted, monkeypatch, error,
                                                          params, call, message):
    model = copy.deepcopy(fitted)
    before = copy.deepcopy(fitted)
    x, y = images(24, 1)
    model.set_params(**params)

    def no_work(*args, **kwargs):
        raise AssertionError("features were extracted before the arguments were checked")

    monkeypatch.setattr(hog_linear_module._features, "hog", no_work)
    monkeypatch.setattr(hog_linear_module._features, "color_histogram", no_work)
    with pytest.raises(error, match=message):
        model.fit(*(call(x, y) if call else (x, y)))
    assert_unchanged(model, before)
    monkeypatch.undo()
    model.set_params(**before.get_params())
    np.testing.assert_array_equal(model.predict(x), before.predict(x))


def test_fit_interrupted_during_training_keeps_the_last_fit(fitted, monkeypatch):
    model, before = copy.deepcopy(fitted), copy.deepcopy(fitted)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hog_linear_module.optim.SGD, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.fit(*images(24, 2))
    assert_unchanged(model, before)


@pytest.mark.parametrize(
    "labels, message",
    [
        (lambda y: 0, r"y to be a 1-D array of labels of shape \(24,\), got shape \(\)"),
        (lambda y: y[:, None], r"got shape \(24, 1\)"),
        (lambda y: y[:3], r"Found input variables with inconsistent numbers of samples: \[24, 3\]"),
    ],
)
def test_score_refuses_labels_that_would_broadcast(fitted, labels, message):
    x, y = images(24, 3)
    with pytest.raises(ValueError, match=message):
        fitted.score(x, labels(y))
    assert fitted.score(x, y) == np.mean(fitted.predict(x) == y)


def test_validation_rows_and_images_give_the_same_history(fitted):
    x, y = images(24, 4)
    with_images = copy.deepcopy(fitted).fit(x, y, x[:6], y[:6])
    with_rows = copy.deepcopy(fitted).fit(x, y, x[:6].reshape(6, -1), y[:6])
    assert [e["val_accuracy"] for e in with_images.history_] == \
        [e["val_accuracy"] for e in with_rows.history_]
    np.testing.assert_array_equal(with_images.coef_, with_rows.coef_)

"""HogLinearClassifier: the scikit-learn surface, training on separable data, errors."""

import numpy as np
import pytest

import jitnet
from jitnet.features import color_histogram, hog
from jitnet.models import HogLinearClassifier
from jitnet.models.hog_linear import NotFittedError


def stripes(rng, n, size=16):
    """Two classes told apart by their HoG: horizontal vs vertical stripes, in noise,
    each in random colours (so hue alone cannot tell them)."""
    y = rng.integers(0, 2, n)
    phase = rng.integers(0, 4, n)
    line = (np.arange(size)[None, :] + phase[:, None]) % 4 < 2  # (n, size)
    pattern = np.where(y[:, None, None] == 0, line[:, :, None], line[:, None, :])
    colour = rng.integers(60, 256, (n, 3, 1, 1))
    images = pattern[:, None] * colour + rng.integers(0, 40, (n, 3, size, size))
    return np.clip(images, 0, 255).astype(np.uint8), np.array(["horizontal", "vertical"])[y]


SMALL = dict(pixels_per_cell=4, epochs=5, batch_size=16, verbose=False)


@pytest.fixture
def data(rng):
    return stripes(rng, 64), stripes(rng, 32)


def test_fits_separable_problem_with_sklearn_surface(data):
    (x, y), (x_test, y_test) = data
    model = HogLinearClassifier(**SMALL)
    assert model.fit(x, y, x_test, y_test) is model
    assert model.score(x_test, y_test) == 1.0
    assert list(model.classes_) == ["horizontal", "vertical"]
    assert set(model.predict(x_test)) <= set(model.classes_)
    n_features = hog(x[:1], pixels_per_cell=4, cells_per_block=3, channel_axis=1).shape[1] + 30
    assert model.coef_.shape == (2, n_features) and model.intercept_.shape == (2,)
    assert isinstance(model.coef_, np.ndarray)
    assert model.n_features_in_ == 3 * 16 * 16 and model.image_shape_ == (3, 16, 16)
    assert model.decision_function(x_test).shape == (32, 2)
    assert len(model.history_) == 5
    assert {"epoch", "loss", "train_accuracy", "val_accuracy", "seconds", "lr"} <= set(
        model.history_[0])
    assert model.history_[-1]["loss"] < model.history_[0]["loss"]
    assert model.fit_seconds_ > 0
    # rows of raw values work too, once the image shape is known
    np.testing.assert_array_equal(model.predict(x_test.reshape(32, -1)), model.predict(x_test))


def test_features_are_standardised_hog_then_colour(data):
    (x, y), _ = data
    model = HogLinearClassifier(**SMALL).fit(x, y)
    raw = np.hstack([hog(x, pixels_per_cell=4, cells_per_block=3, channel_axis=1),
                     color_histogram(x, channels="hsv")])
    np.testing.assert_allclose(model.transform(x), raw, atol=1e-6)
    np.testing.assert_allclose(model.mean_, raw.mean(0), atol=1e-5)
    expected = (raw - raw.mean(0)) / np.where(raw.std(0) > 0, raw.std(0), 1)
    scores = expected @ model.coef_.T + model.intercept_
    np.testing.assert_allclose(model.decision_function(x), scores, atol=1e-3)


@pytest.mark.parametrize("options", [
    dict(loss="hinge"), dict(optimizer="adam", lr=1e-2), dict(features="hog"),
    dict(schedule="constant", color_channels="h", cells_per_block=2),
])
def test_other_losses_optimizers_and_features(data, options):
    (x, y), (x_test, y_test) = data
    model = HogLinearClassifier(**{**SMALL, **options}).fit(x, y)
    assert model.score(x_test, y_test) >= 0.9


def test_reproducible_with_seed(data):
    (x, y), _ = data
    first = HogLinearClassifier(**SMALL, seed=3).fit(x, y)
    second = HogLinearClassifier(**SMALL, seed=3).fit(x, y)
    other = HogLinearClassifier(**SMALL, seed=4).fit(x, y)
    np.testing.assert_array_equal(first.coef_, second.coef_)
    assert [e["loss"] for e in first.history_] == [e["loss"] for e in second.history_]
    assert not np.array_equal(first.coef_, other.coef_)


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_history_records_each_epochs_learning_rate(data, schedule):
    # README: every history entry has lr; the rate used in the epoch, before the
    # schedule steps (CosineLR over the epochs: lr * (1 + cos(pi * e / epochs)) / 2)
    (x, y), _ = data
    model = HogLinearClassifier(**{**SMALL, "lr": 0.02, "schedule": schedule}).fit(x, y)
    epochs = SMALL["epochs"]
    if schedule == "cosine":
        want = [0.02 * (1 + np.cos(np.pi * e / epochs)) / 2 for e in range(epochs)]
    else:
        want = [0.02] * epochs
    assert [entry["lr"] for entry in model.history_] == pytest.approx(want, rel=1e-12)
    assert all(type(entry["lr"]) is float for entry in model.history_)


def test_numpy_target_trains_the_same_model(data):
    (x, y), _ = data
    with jitnet.use_target("numpy"):
        reference = HogLinearClassifier(**SMALL).fit(x, y)
    fast = HogLinearClassifier(**SMALL).fit(x, y)
    np.testing.assert_allclose(fast.coef_, reference.coef_, atol=1e-4)


def test_not_fitted_and_wrong_inputs(data):
    (x, y), _ = data
    model = HogLinearClassifier(**SMALL)
    for method in (model.predict, model.decision_function):
        with pytest.raises(NotFittedError, match="not fitted"):
            method(x)
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)
    model.fit(x, y)
    with pytest.raises(ValueError, match=r"fitted on images of shape \(3, 16, 16\)"):
        model.predict(x[:, :, :8])
    with pytest.raises(ValueError, match="768 values"):
        model.predict(x.reshape(64, -1)[:, :100])
    with pytest.raises(ValueError, match="images \\(N, C, H, W\\)"):
        HogLinearClassifier(**SMALL).fit(x[0], y)
    with pytest.raises(ValueError, match="labels of shape"):
        HogLinearClassifier(**SMALL).fit(x, y[:3])
    with pytest.raises(ValueError, match="needs RGB"):
        HogLinearClassifier(**SMALL).fit(x[:, :1], y)
    with pytest.raises(ValueError, match="unknown loss"):
        HogLinearClassifier(loss="l2").fit(x, y)
    with pytest.raises(ValueError, match=r"^HogLinearClassifier expected at least one image, "
                                         r"got input of shape \(0, 3, 16, 16\)$"):
        HogLinearClassifier(**SMALL).fit(x[:0], y[:0])


@pytest.mark.parametrize("labels, message", [
    (lambda y: np.array([1 if v == "vertical" else "a" for v in y], dtype=object),
     r"^HogLinearClassifier expected sortable labels, got '<' not supported between instances "
     r"of '\w+' and '\w+'$"),
    (lambda y: np.full_like(y, "vertical"),
     r"^HogLinearClassifier needs at least 2 classes, got \['vertical'\]$"),
], ids=["str_and_int", "one_class"])
def test_labels_that_make_no_classes_are_refused_and_change_nothing(data, labels, message):
    (x, y), (x_test, _) = data
    model = HogLinearClassifier(**SMALL).fit(x, y)
    coef, predictions = model.coef_.copy(), model.predict(x_test)
    with pytest.raises(ValueError, match=message):
        model.fit(x, labels(y))
    np.testing.assert_array_equal(model.coef_, coef)  # still the model fitted before
    np.testing.assert_array_equal(model.predict(x_test), predictions)


def test_transform_before_fit_gives_the_raw_features_of_checked_parameters(data):
    (x, y), _ = data
    raw = HogLinearClassifier(**SMALL).transform(x)
    np.testing.assert_array_equal(raw, HogLinearClassifier(**SMALL).fit(x, y).transform(x))
    model = HogLinearClassifier(features="edges")
    with pytest.raises(ValueError, match=r"^unknown features 'edges': expected one of "):
        model.transform(x)
    assert not hasattr(model, "image_shape_")


@pytest.mark.parametrize("bad, what", [(np.nan, "NaN"), (np.inf, "infinity"),
                                       (-np.inf, "infinity")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_images_holding_nan_or_infinity_are_refused(data, bad, what, dtype):
    # predict returned a label for an all-NaN image; scikit-learn says "Input X contains NaN"
    (x, y), (x_val, y_val) = data
    xf = (x / 255).astype(dtype)
    broken = xf.copy()
    broken[5, 1, 2, 3] = bad
    message = (rf"Input X contains {what} \(HogLinearClassifier expected finite images, got "
               rf"{what} in image 5\)")
    model = HogLinearClassifier(**SMALL)
    with pytest.raises(ValueError, match=message):
        model.fit(broken, y)
    assert not hasattr(model, "coef_")
    bad_val = (x_val / 255).astype(dtype)
    bad_val[-1, 0, 0, 0] = bad
    with pytest.raises(ValueError, match=rf"Input X_val contains {what} .* in image 31\)"):
        model.fit(xf, y, bad_val, y_val)
    model.fit(xf, y)
    coef = model.coef_.copy()
    for method in (model.predict, model.decision_function, model.transform):
        with pytest.raises(ValueError, match=message):
            method(broken)
    with pytest.raises(ValueError, match=message):
        model.predict(broken.reshape(len(broken), -1))  # rows of values too
    with pytest.raises(ValueError, match=message):
        model.score(broken, y)
    np.testing.assert_array_equal(model.coef_, coef)
    # large finite values are fine, also where their float64 sum overflows
    model.predict(np.full_like(xf, np.finfo(dtype).max))


def test_init_only_stores_and_params_roundtrip():
    model = HogLinearClassifier(reg=0.5, epochs=3)
    assert model.get_params()["reg"] == 0.5
    assert model.set_params(lr=0.2) is model and model.lr == 0.2
    assert "reg=0.5" in repr(model)
    with pytest.raises(ValueError, match="no parameter"):
        model.set_params(colour=1)
    with pytest.raises(TypeError):
        HogLinearClassifier("softmax")  # keyword-only


@pytest.mark.parametrize("options", [
    dict(), dict(features="hog", pixels_per_cell=(4, 8), cells_per_block=2),
    dict(features="color", color_channels="hv"),
])
def test_state_dict_round_trip_through_npz(data, options, tmp_path):
    (x, y), (x_test, _) = data
    model = HogLinearClassifier(**{**SMALL, **options}).fit(x, y)
    state = model.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    np.savez(tmp_path / "hog.npz", **state)
    with np.load(tmp_path / "hog.npz", allow_pickle=False) as npz:  # no pickle needed
        loaded = HogLinearClassifier().load_state_dict(npz)
    assert loaded.get_params()["features"] == model.features
    assert loaded.pixels_per_cell == model.pixels_per_cell
    assert loaded.image_shape_ == (3, 16, 16) and loaded.n_features_in_ == 3 * 16 * 16
    np.testing.assert_array_equal(loaded.predict(x_test), model.predict(x_test))
    np.testing.assert_array_equal(loaded.decision_function(x_test),
                                  model.decision_function(x_test))
    assert list(loaded.classes_) == ["horizontal", "vertical"]


def test_load_state_dict_checks_keys_and_shapes(data):
    (x, y), (x_test, _) = data
    state = HogLinearClassifier(**SMALL).fit(x, y).state_dict()
    fresh = HogLinearClassifier()
    with pytest.raises(ValueError, match=r"missing keys \['coef_'\], unexpected keys "
                                         r"\['weights'\]"):
        fresh.load_state_dict({**{k: v for k, v in state.items() if k != "coef_"},
                               "weights": state["coef_"]})
    with pytest.raises(ValueError, match=r"expected coef_ of shape \(2, \d+\) \(float\), "
                                         r"as classes_ .* got shape \(2, 5\)"):
        fresh.load_state_dict({**state, "coef_": state["coef_"][:, :5]})
    # HoG parameters that make another number of features than the weights have
    with pytest.raises(ValueError, match="expected coef_ of shape"):
        fresh.load_state_dict({**state, "pixels_per_cell": np.array(5)})
    with pytest.raises(ValueError, match="classes_ to be at least 2 labels"):
        fresh.load_state_dict({**state, "classes_": state["classes_"][:1]})
    with pytest.raises(ValueError, match="unknown features"):
        fresh.load_state_dict({**state, "features": np.array("pixels")})
    # a parameter of the wrong kind in a state is a bad state, as the docstring says
    with pytest.raises(ValueError, match="load_state_dict: block_norm must be a str"):
        fresh.load_state_dict({**state, "block_norm": np.array(1)})
    with pytest.raises(ValueError, match="load_state_dict: orientations must be a positive"):
        fresh.load_state_dict({**state, "orientations": np.array("9")})
    with pytest.raises(ValueError, match=r"load_state_dict expected orientations to be a 0-d "
                                         r"str or int array \(or a pair of ints\), got dtype "
                                         r"float64 shape \(\)$"):
        fresh.load_state_dict({**state, "orientations": np.array(9.0)})
    with pytest.raises(ValueError, match=r"load_state_dict expected image_shape_ to be 3 "
                                         r"positive ints \(C, H, W\), got array\(\[ ?3, 16\]\)$"):
        fresh.load_state_dict({**state, "image_shape_": np.array([3, 16])})
    with pytest.raises(TypeError, match="expected a mapping"):
        fresh.load_state_dict([1, 2])
    with pytest.raises(NotFittedError):  # each refusal left it as it was: unfitted
        fresh.predict(x_test)
    with pytest.raises(NotFittedError):
        HogLinearClassifier().state_dict()


def test_state_dict_refuses_labels_only_a_pickle_could_store(data):
    (x, y), _ = data
    model = HogLinearClassifier(**SMALL).fit(x, y.astype(object))
    assert model.classes_.dtype == object
    with pytest.raises(ValueError, match=r"^HogLinearClassifier\.state_dict cannot store "
                                         r"classes_ of dtype object without a pickle; fit on "
                                         r"numeric or string labels$"):
        model.state_dict()

"""Tests of jitnet.train's argument checks: predict, confusion_matrix, channel_stats,
save_checkpoint / load_checkpoint, fit's objects, and a refused resume changing nothing."""

import json

import numpy as np
import pytest
from test_train import _NoEpoch  # the loader that fails a test when an epoch starts

import jitnet
from jitnet import nn, optim, rng
from jitnet.train import (
    CheckpointError,
    channel_stats,
    confusion_matrix,
    fit,
    load_checkpoint,
    predict,
    save_checkpoint,
)


def _data(n=16, size=8, seed=0):
    r = np.random.default_rng(seed)
    return (r.integers(0, 256, (n, 3, size, size)).astype(np.uint8),
            r.integers(0, 10, n).astype(np.int64))


def _linear(size=8, dtype="float32"):
    jitnet.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, 10)).to(dtype=dtype)


def _tiny_model():
    # BatchNorm buffers and Dropout (jitnet's generator): all a resume restores
    return nn.Sequential(
        nn.Conv2d(3, 4, kernel_size=3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(4 * 4 * 4, 10),
    )


# ------------------------------------------------------------------------- predict


def test_predict_refuses_integer_images_other_than_uint8():
    # int64 0..255 images were taken as [0, 1] floats: silently different predictions
    x, _ = _data(4)
    with pytest.raises(ValueError, match=r"predict expected x to be uint8 or float images, "
                                         r"got dtype int64 \(for 0\.\.255 images, pass "
                                         r"x\.astype\(np\.uint8\)\)"):
        predict(_linear(), x.astype(np.int64))
    with pytest.raises(ValueError, match="got dtype bool"):
        predict(_linear(), x > 128)


@pytest.mark.parametrize("x, error, message", [
    ([[1.0]], TypeError, r"predict expected x to be an np.ndarray of images \(N, C, H, W\), "
                         "got list"),
    (None, TypeError, "got NoneType"),
    (np.zeros((2, 3, 8), np.float32), ValueError,
     r"predict expected x to be images \(N, C, H, W\), got shape \(2, 3, 8\)"),
])
def test_predict_checks_the_kind_and_shape_of_x(x, error, message):
    x = _data(2)[0].tolist() if isinstance(x, list) else x  # a list of images
    with pytest.raises(error, match=message):
        predict(_linear(), x)


def test_predict_checks_model_and_transform():
    x, _ = _data(2)
    with pytest.raises(TypeError, match="predict expected model to be a jitnet.nn.Module, got "
                                        "NoneType"):
        predict(None, x)
    with pytest.raises(TypeError, match="predict expected transform to be a callable or None, "
                                        "got int"):
        predict(_linear(), x, transform=3)


@pytest.mark.parametrize("target", ["numpy", "cpu"])
def test_predict_keeps_the_dtype_of_the_model(target):
    # every batch was cast to float32, which a float64 model refuses
    x, _ = _data(6)
    with jitnet.use_target(target):
        model = _linear(dtype="float64")
        seen = []

        def record(batch):
            seen.append(batch.dtype)
            return batch

        for images in (x, x / 255.0, (x / 255.0).astype(np.float32)):
            pred = predict(model, images, batch_size=4, transform=record)
            want = jitnet.to_numpy(model(x.astype(np.float64) / 255.0)).argmax(axis=1)
            np.testing.assert_array_equal(pred, want)
        assert seen == [np.float64] * 6
        # a float32 model still gets float32 batches, scaled as the DataLoader scales
        model = _linear()
        pred = predict(model, x)
        scaled = x.astype(np.float32) * np.float32(1.0 / 255.0)
        np.testing.assert_array_equal(pred, jitnet.to_numpy(model(scaled)).argmax(axis=1))


@pytest.mark.parametrize("target", ["numpy", "cpu"])
def test_predict_runs_the_model_in_eval_mode(target):
    # a model left in training mode: Dropout would drop and BatchNorm would use (and
    # update) batch statistics; predict scores as model.eval() does and leaves it there
    x, _ = _data(16)
    with jitnet.use_target(target):
        jitnet.manual_seed(0)
        model = _tiny_model()
        model(x.astype(np.float32) / 255)  # running statistics away from their start
        bn = model[1]
        stats = [jitnet.to_numpy(bn.running_mean).copy(), jitnet.to_numpy(bn.running_var).copy()]
        want = jitnet.to_numpy(model.eval()(x.astype(np.float32) * np.float32(1 / 255)))
        model.train()
        pred = predict(model, x, batch_size=5)
        assert not model.training and not any(m.training for m in model.modules())
        np.testing.assert_array_equal(pred, want.argmax(axis=1))
        np.testing.assert_array_equal(jitnet.to_numpy(bn.running_mean), stats[0])
        np.testing.assert_array_equal(jitnet.to_numpy(bn.running_var), stats[1])


def test_predict_of_no_image_is_empty():
    pred = predict(_linear(), np.zeros((0, 3, 8, 8), np.uint8))
    assert pred.shape == (0,) and pred.dtype == np.int64


# ---------------------------------------------------------------- confusion_matrix


@pytest.mark.parametrize("y_true, y_pred, error, message", [
    ([-1, 0], [0, 0], ValueError, "confusion_matrix expected y_true to be labels in 0..2, "
                                  "got -1 at index 0"),
    ([0, 1], [0, 3], ValueError, "expected y_pred to be labels in 0..2, got 3 at index 1"),
    ([1, 2], [0], ValueError, "confusion_matrix expected y_true and y_pred of the same "
                              r"length \(one prediction per label\), got 2 and 1"),
    ([1.0], [0.0], ValueError, r"expected y_true to be integer class labels, got 1.0 at "
                               r"index 0 \(dtype float64\)"),
    ([True], [0], ValueError, "expected y_true to be integer class labels, got True"),
    ([[1]], [1], ValueError, r"expected y_true to be 1-D \(one label per sample\), got "
                             r"shape \(1, 1\)"),
    (None, [0], TypeError, "expected y_true to be integer class labels, got NoneType"),
    ([0], ["a"], TypeError, "expected y_pred to be integer class labels, got dtype <U1"),
])
def test_confusion_matrix_checks_its_labels(y_true, y_pred, error, message):
    # a -1 was counted in the last class, one prediction broadcast over two labels
    with pytest.raises(error, match=message):
        confusion_matrix(y_true, y_pred, num_classes=3)


@pytest.mark.parametrize("num_classes, error", [(0, ValueError), (2.0, TypeError)])
def test_confusion_matrix_checks_num_classes(num_classes, error):
    with pytest.raises(error, match="confusion_matrix expected num_classes to be an int >= 1"):
        confusion_matrix([0], [0], num_classes=num_classes)


def test_confusion_matrix_counts():
    matrix = confusion_matrix(np.array([0, 2, 2, 1], np.uint8), [0, 2, 1, 1], num_classes=3)
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    assert matrix.dtype == np.int64
    np.testing.assert_array_equal(confusion_matrix([], [], num_classes=2), np.zeros((2, 2)))


# ------------------------------------------------------------------- channel_stats


@pytest.mark.parametrize("x, error, message", [
    (np.zeros((0, 3, 4, 4), np.uint8), ValueError,
     r"channel_stats expected at least one image of at least one pixel, got shape "
     r"\(0, 3, 4, 4\)"),
    (np.zeros((2, 3, 0, 4), np.float32), ValueError, "at least one image of at least one pixel"),
    (np.zeros((3, 4, 4), np.uint8), ValueError,
     r"channel_stats expected x to be images \(N, C, H, W\), got shape \(3, 4, 4\)"),
    (np.zeros((1, 3, 4, 4), np.int64), ValueError,
     r"got dtype int64 \(for 0\.\.255 images, pass x\.astype\(np\.uint8\)\)"),
    (None, TypeError, "channel_stats expected x to be an np.ndarray of images"),
])
def test_channel_stats_checks_its_images(x, error, message):
    # empty input gave NaN statistics with RuntimeWarnings, 3-D an IndexError
    with pytest.raises(error, match=message):
        channel_stats(x)


# -------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("changes, error, message", [
    ({"epoch": 1.7}, TypeError, r"save_checkpoint expected epoch to be an int >= 0, got 1.7 "
                                r"\(float\)"),
    ({"epoch": True}, TypeError, "save_checkpoint expected epoch to be an int >= 0, got True"),
    ({"epoch": "x"}, TypeError, "save_checkpoint expected epoch to be an int >= 0, got 'x'"),
    ({"epoch": -1}, ValueError, "save_checkpoint expected epoch to be an int >= 0, got -1"),
    ({"model": None}, TypeError, "save_checkpoint expected model to be a jitnet.nn.Module, "
                                 "got NoneType"),
    ({"optimizer": 3}, TypeError, "save_checkpoint expected optimizer to be None or a "
                                  r"jitnet.optim optimizer \(with state_dict\(\)\), got int"),
    ({"meta": [1]}, TypeError, "save_checkpoint expected meta to be a dict or None, got list"),
])
def test_save_checkpoint_checks_its_arguments(tmp_path, changes, error, message):
    # an epoch of 1.7 was saved as 1, of -1 made a resumed run train an epoch too many
    model = _linear()
    arguments = {"model": model, "optimizer": optim.SGD(model.parameters(), lr=0.1),
                 "epoch": 1, **changes}
    path = tmp_path / "c.npz"
    with pytest.raises(error, match=message):
        save_checkpoint(path, **arguments)
    assert not path.exists()


def test_save_checkpoint_keeps_numpy_integer_epochs(tmp_path):
    save_checkpoint(tmp_path / "c.npz", _linear(), epoch=np.int64(3))
    assert load_checkpoint(tmp_path / "c.npz")["epoch"] == 3


def test_load_checkpoint_refuses_a_negative_epoch(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, _linear(), epoch=1)
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["epoch"] = np.array("-1")
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*c.npz: not a jitnet "
                                              r"checkpoint \(its 'epoch' entry is -1, expected "
                                              r"an int >= 0\)"):
        load_checkpoint(path)


# ---------------------------------------------------------------- fit's objects


class _StepOnly:
    """An optimizer with step() and zero_grad(), but no state_dict() to checkpoint."""

    def __init__(self, params):
        self.params = list(params)

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        for p in self.params:
            p.data -= 0.01 * p.grad


def _bad_objects():
    x, y = _data()
    return [
        ("model None", {"model": None}, "fit expected model to be a jitnet.nn.Module, got "
                                        "NoneType"),
        ("model class", {"model": nn.Sequential},
         r"got the class Sequential itself \(create one: Sequential\(...\)\)"),
        ("loss class", {"loss_fn": nn.SoftmaxCrossEntropyLoss},
         r"fit expected loss_fn to be a loss such as nn.SoftmaxCrossEntropyLoss\(\) .*got the "
         r"class SoftmaxCrossEntropyLoss itself \(create one: SoftmaxCrossEntropyLoss\(...\)\)"),
        ("loss function", {"loss_fn": lambda s, y: 0.0}, "fit expected loss_fn to be a loss .*"
                                                         "got function"),
        ("optimizer None", {"optimizer": None},
         r"fit expected optimizer to be a jitnet.optim optimizer \(with step\(\), "
         r"zero_grad\(\), state_dict\(\), load_state_dict\(\)\), got NoneType"),
        ("optimizer class", {"optimizer": optim.SGD}, "got the class SGD itself"),
        ("optimizer without state_dict", {"optimizer": "step only"},
         r"with step\(\), zero_grad\(\), state_dict\(\), load_state_dict\(\)\), got _StepOnly"),
        ("loader a tuple of arrays", {"train_loader": (x, y)},
         "fit expected train_loader to yield \\(x, y\\) batches, got a tuple of arrays; wrap "
         "them in a loader: jitnet.data.DataLoader\\(x, y, batch_size\\)"),
        ("loader an array", {"train_loader": x}, "fit expected train_loader to be an iterable "
                                                 "of .* got ndarray"),
        ("loader None", {"train_loader": None}, "fit expected train_loader .* got NoneType"),
        ("loader a dict", {"train_loader": {"x": x}}, "train_loader .* got dict"),
        ("scheduler 3", {"scheduler": 3}, r"fit expected scheduler to be None or a jitnet.optim "
                                          r"schedule \(with step\(\)\), got int"),
        ("eval_transform 3", {"eval_transform": 3}, "fit expected eval_transform to be a "
                                                    "callable or None, got int"),
    ]


@pytest.mark.parametrize("name, changes, message", _bad_objects(),
                         ids=[case[0] for case in _bad_objects()])
def test_fit_checks_its_objects_before_writing_anything(name, changes, message, tmp_path):
    # an AttributeError or an unpacking error came after checkpoint.npz was written
    x, y = _data()
    with jitnet.use_target("numpy"):
        model = _linear()
        arguments = {"model": model, "loss_fn": nn.SoftmaxCrossEntropyLoss(),
                     "optimizer": optim.SGD(model.parameters(), lr=0.1),
                     "train_loader": _NoEpoch(), "x_test": x, "y_test": y, "epochs": 1,
                     "out_dir": tmp_path / "out", "quiet": True, **changes}
        if arguments["optimizer"] == "step only":
            arguments["optimizer"] = _StepOnly(model.parameters())
        with pytest.raises(TypeError, match=message):
            fit(**arguments)
    assert not (tmp_path / "out").exists()


def test_fit_takes_a_list_of_batches_and_an_optimizer_without_state_when_saving_nothing():
    # the checks leave alone what the loop can use
    x, y = _data()
    with jitnet.use_target("numpy"):
        model = _linear()
        batches = [(x[:8] / np.float32(255), y[:8]), (x[8:] / np.float32(255), y[8:])]
        metrics = fit(model, nn.SoftmaxCrossEntropyLoss(), _StepOnly(model.parameters()),
                      batches, x, y, epochs=1, quiet=True)
    assert metrics["epochs"] == 1 and metrics["history"][0]["images"] == 16


# ------------------------------------------------ a refused resume changes nothing


def _objects(loader, optimizer_class=optim.SGD):
    jitnet.manual_seed(0)
    model = _tiny_model()
    optimizer = optimizer_class(model.parameters(), lr=0.05)
    return model, optimizer, optim.CosineLR(optimizer, 3), loader


def _fit(objects, x, y, out_dir, epochs, resume=False):
    model, optimizer, scheduler, loader = objects
    return fit(model, nn.SoftmaxCrossEntropyLoss(), optimizer, loader, x, y, epochs=epochs,
               scheduler=scheduler, out_dir=out_dir, resume=resume, quiet=True,
               model_name="tiny")


def _state_of(objects):
    """Everything a resume sets, as plain values to compare."""
    model, optimizer, scheduler, loader = objects
    transforms = getattr(loader.transform, "transforms", [loader.transform])
    return {
        "model": model.state_dict(),
        "optimizer": [{key: jitnet.to_numpy(value) for key, value in p.state.items()}
                      for p in optimizer.params],
        "lr": optimizer.lr,
        "scheduler": scheduler.state_dict(),
        "rng": rng.get_state(),
        "loader": None if loader._own is None else loader._own.bit_generator.state,
        "transforms": [getattr(t, "_own", None) and t._own.bit_generator.state
                       for t in transforms],
    }


def _assert_same(before, after):
    assert before.keys() == after.keys()
    for key in before:
        if key in ("model",):
            assert before[key].keys() == after[key].keys()
            for name in before[key]:
                np.testing.assert_array_equal(before[key][name], after[key][name], err_msg=name)
        elif key == "optimizer":
            for a, b in zip(before[key], after[key]):
                assert a.keys() == b.keys()
                for name in a:
                    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        else:
            assert before[key] == after[key], key


def _loader(x, y, seeded):
    T = jitnet.data.transforms
    transform = (T.Compose([T.RandomCrop(8, padding=2, seed=1), T.RandomHorizontalFlip(seed=2)])
                 if seeded else T.Compose([T.RandomCrop(8, padding=2),
                                           T.RandomHorizontalFlip()]))
    return jitnet.data.DataLoader(x, y, batch_size=8, shuffle=True, transform=transform,
                                  seed=3)


def _refused_resume(tmp_path, x, y, objects, first=None):
    """Train an epoch, then step ``objects`` one epoch (so their state is no fresh one),
    and resume the first run into them: it must fail and change nothing."""
    _fit(first or _objects(_loader(x, y, True)), x, y, tmp_path / "run", 1)
    _fit(objects, x, y, None, 1)
    jitnet.manual_seed(5)
    before = _state_of(objects)
    with pytest.raises(CheckpointError) as info:
        _fit(objects, x, y, tmp_path / "run", 2, resume=True)
    _assert_same(before, _state_of(objects))
    return str(info.value)


def test_a_resume_refused_for_the_optimizer_changes_nothing(tmp_path):
    # the model had the checkpoint's parameters before the optimizer's state was refused
    x, y = _data()
    with jitnet.use_target("numpy"):
        message = _refused_resume(tmp_path, x, y, _objects(_loader(x, y, True)),
                                  first=_objects(_loader(x, y, True), optim.Adam))
    assert "does not fit this model, optimizer, schedule or loader" in message
    assert "SGD.load_state_dict" in message


def test_a_resume_refused_for_the_loader_changes_nothing(tmp_path):
    # model, optimizer (buffers, lr), schedule and jitnet's generator were all loaded
    # before the loader's transforms were found to differ
    x, y = _data()
    with jitnet.use_target("numpy"):
        message = _refused_resume(tmp_path, x, y, _objects(_loader(x, y, False)))
    assert "does not fit this loader" in message


def test_a_resume_refused_for_the_generator_state_changes_nothing(tmp_path):
    # a generator state NumPy refuses came through as its own ValueError, after the
    # model, optimizer and schedule were loaded
    x, y = _data()
    with jitnet.use_target("numpy"):
        objects = _objects(_loader(x, y, True))
        _fit(_objects(_loader(x, y, True)), x, y, tmp_path / "run", 1)
        path = tmp_path / "run" / "checkpoint.npz"
        with np.load(path) as npz:
            arrays = {key: npz[key] for key in npz.files}
        arrays["rng"] = np.array(json.dumps({"__dict__": [["bit_generator", "MT19937"]]}))
        np.savez(path, **arrays)
        _fit(objects, x, y, None, 1)
        before = _state_of(objects)
        with pytest.raises(CheckpointError, match="does not fit this model, optimizer, "
                                                  "schedule or loader"):
            _fit(objects, x, y, tmp_path / "run", 2, resume=True)
        _assert_same(before, _state_of(objects))

"""Bad input to jitnet.data (transforms, DataLoader, CIFAR-10): a clear TypeError (a value
of the wrong kind) or ValueError (a bad value) that names the parameter, what was expected
and what came, before anything is done."""

import pickle
import re

import numpy as np
import pytest

import jitnet
from jitnet.data import DataError, DataLoader, cifar10_classes, download_cifar10, load_cifar10
from jitnet.data.transforms import (
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    ToFloat,
)


@pytest.fixture
def batch(rng):
    return rng.random((4, 3, 6, 5)).astype(np.float32)


# ---------------------------------------------------------------- transforms: dtypes
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float16, object])
def test_normalize_takes_float_batches_only(batch, dtype):
    # uint8 cast mean and std to uint8 (all 0), int32 truncated them: silently wrong
    with pytest.raises(ValueError, match=f"expected a float32 or float64 batch, got dtype "
                                         f"{np.dtype(dtype)}.*ToFloat"):
        Normalize([0.5] * 3, [0.25] * 3)((batch * 255).astype(dtype))


@pytest.mark.parametrize("transform", [RandomCrop(4, padding=1), RandomHorizontalFlip()],
                         ids=["crop", "flip"])
@pytest.mark.parametrize("dtype", [np.float16, np.int32, object, bool])
def test_crop_and_flip_name_the_dtypes_they_take(batch, transform, dtype):
    with pytest.raises(ValueError, match="expected a uint8, float32 or float64 batch, got dtype "
                                         f"{np.dtype(dtype)}"):
        transform(batch.astype(dtype))


def test_crop_and_flip_keep_uint8(batch):
    x = (batch * 255).astype(np.uint8)
    np.testing.assert_array_equal(RandomHorizontalFlip(p=1.0)(x), x[..., ::-1])
    out = RandomCrop((6, 5), padding=0)(x)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint16, np.int8])
def test_to_float_refuses_other_integers_with_the_loaders_hint(batch, dtype):
    # they were returned unchanged, 0..255 where uint8 gives 0..1 ("float passes unchanged")
    with pytest.raises(ValueError, match=rf"ToFloat expected uint8 or float images, got dtype "
                                         rf"{np.dtype(dtype)} \(for 0..255 images, pass "
                                         r"x.astype\(np.uint8\)\)"):
        ToFloat()((batch * 100).astype(dtype))
    with pytest.raises(ValueError, match="got dtype bool$"):
        ToFloat()(batch > 0.5)


def test_to_float_keeps_its_contract_for_uint8_and_floats(batch):
    x8 = (batch * 255).astype(np.uint8)
    np.testing.assert_array_equal(ToFloat()(x8), x8.astype(np.float32) * np.float32(1 / 255))
    assert ToFloat()(batch) is batch
    assert ToFloat()(batch.astype(np.float64)).dtype == np.float64


@pytest.mark.parametrize(
    "transform",
    [ToFloat(), RandomCrop(4, padding=1), RandomHorizontalFlip(), Normalize([0.5], [0.25])],
    ids=["to_float", "crop", "flip", "normalize"],
)
@pytest.mark.parametrize("kind", [list, tuple, type(None)])
def test_transforms_name_the_type_of_what_is_no_array(batch, transform, kind):
    # ToFloat made an int64 array of a list; the others said "got shape None"
    value = None if kind is type(None) else kind(batch.tolist())
    name = type(transform).__name__
    with pytest.raises(TypeError, match=rf"{name} expected a host .*np\.ndarray.*, got "
                                        rf"{kind.__name__}$"):
        transform(value)


def test_transforms_name_the_shape_of_an_array_that_is_no_batch(batch):
    with pytest.raises(ValueError, match=r"RandomCrop expected a host NCHW array \(N, C, H, "
                                         r"W\), got shape \(3, 6, 5\)"):
        RandomCrop(4)(batch[0])


@pytest.mark.parametrize("size, padding, padded", [(7, 0, (6, 5)), ((6, 8), 1, (8, 7))])
def test_random_crop_larger_than_the_padded_images_is_refused(batch, size, padding, padded):
    crop = RandomCrop(size, padding=padding, seed=0)
    state = crop._own.bit_generator.state
    with pytest.raises(ValueError, match=rf"^RandomCrop of size \({crop.size[0]}, "
                                         rf"{crop.size[1]}\) does not fit images of padded "
                                         rf"size \({padded[0]}, {padded[1]}\)$"):
        crop(batch)
    assert crop._own.bit_generator.state == state  # refused before any draw


@pytest.mark.parametrize("mean, std", [([0.5], [0.25]), (0.5, 0.25), ([0.5], [0.2, 0.25, 0.5]),
                                       ([0.1, 0.5, 0.9], 0.25)],
                         ids=["lists", "floats", "one_mean", "one_std"])
def test_normalize_uses_a_single_value_for_every_channel(batch, mean, std):
    # torchvision broadcasts one mean / std; this was "expected 1 channels, got 3"
    out = Normalize(mean, std)(batch)
    m = np.broadcast_to(np.asarray(mean, np.float64).reshape(-1), (3,))
    s = np.broadcast_to(np.asarray(std, np.float64).reshape(-1), (3,))
    ref = (batch - m[:, None, None]) / s[:, None, None]
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    assert out.dtype == np.float32


def test_normalize_per_channel_values_must_agree():
    with pytest.raises(ValueError, match=r"Normalize expected mean and std of one length \(or "
                                         r"a single value for every channel\), got 2 and 3"):
        Normalize([0.5, 0.5], [0.2, 0.2, 0.2])
    with pytest.raises(ValueError, match=r"expected 3 channels \(one per value of its mean "
                                         r"and std\), got 1"):
        Normalize([0.5], [0.2, 0.2, 0.2])(np.zeros((2, 1, 3, 3), np.float32))


# ---------------------------------------------------------------- transforms: parameters
@pytest.mark.parametrize(
    "error, make, message",
    [
        (TypeError, lambda: RandomCrop(2.5),
         "RandomCrop expected size to be an int or \\(h, w\\), got 2.5"),
        (TypeError, lambda: RandomCrop("8"),
         "RandomCrop expected size to be an int or \\(h, w\\), got '8'"),
        (ValueError, lambda: RandomCrop((8,)),
         "RandomCrop expected size to be an int or \\(h, w\\), got \\(8,\\)"),
        (TypeError, lambda: RandomCrop(True), "size to be an int >= 1, got True"),
        (TypeError, lambda: RandomCrop((8, 8.0)), "size to be an int >= 1, got 8.0"),
        (ValueError, lambda: RandomCrop((8, 0)), "size to be an int >= 1, got 0"),
        (TypeError, lambda: RandomCrop(8, padding=1.7), "padding to be an int >= 0, got 1.7"),
        (TypeError, lambda: RandomCrop(8, padding=True), "padding to be an int >= 0, got True"),
        (ValueError, lambda: RandomCrop(8, padding=-1), "padding to be an int >= 0, got -1"),
        (ValueError, lambda: RandomCrop(8, seed=-1),
         "RandomCrop expected seed to be an int >= 0, got -1"),
        (TypeError, lambda: RandomHorizontalFlip("0.5"),
         r"p to be a finite number in \[0, 1\] \(a probability\), got '0.5'"),
        (TypeError, lambda: RandomHorizontalFlip(True),
         r"p to be a finite number in \[0, 1\] \(a probability\), got True"),
        (ValueError, lambda: RandomHorizontalFlip(float("nan")),
         r"p to be a finite number in \[0, 1\] \(a probability\), got nan"),
        (ValueError, lambda: RandomHorizontalFlip(1.5),
         r"p to be a finite number in \[0, 1\] \(a probability\), got 1.5"),
        (TypeError, lambda: RandomHorizontalFlip(seed=0.5), "seed to be an int >= 0, got 0.5"),
        (TypeError, lambda: Normalize("abc", [1.0]), "mean to be a sequence of numbers.*'abc'"),
        (TypeError, lambda: Normalize([0.5], None), "std to be a sequence of numbers.*None"),
        (TypeError, lambda: Normalize([True], [1.0]), "mean to be a sequence of numbers"),
        (ValueError, lambda: Normalize([], []), "mean to hold one finite number per channel"),
        (ValueError, lambda: Normalize([np.nan], [1.0]), "mean to hold one finite number"),
        (ValueError, lambda: Normalize([0.5], [np.nan]), "std to hold one finite number"),
        (ValueError, lambda: Normalize([0.5], [0.0]), "positive std"),
        (TypeError, lambda: Compose([RandomHorizontalFlip(), 1]),
         "callable transforms, got 1 at index 1"),
        (TypeError, lambda: Compose(5), "sequence of transforms, got 5"),
    ],
)
def test_constructors_check_their_parameters(error, make, message):
    # the wrong kind of value is a TypeError, a value out of range a ValueError
    with pytest.raises(error, match=message):
        make()


def test_numpy_ints_and_reals_are_accepted(batch):
    crop = RandomCrop(np.int64(4), padding=np.int32(1), seed=np.uint8(3))
    assert crop.size == (4, 4) and crop.padding == 1
    np.testing.assert_array_equal(crop(batch), RandomCrop(4, padding=1, seed=3)(batch))
    assert RandomHorizontalFlip(np.float32(0.5)).p == 0.5 and RandomHorizontalFlip(1).p == 1.0


def test_normalize_fit_needs_pixels():
    with pytest.raises(ValueError, match=r"at least one image of at least one pixel.*\(0, 3"):
        Normalize.fit(np.zeros((0, 3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="got dtype object"):
        Normalize.fit(np.zeros((2, 3, 4, 4), object))


# ---------------------------------------------------------------- DataLoader
def test_float_labels_must_be_whole_numbers(batch):
    # they were truncated: [0.9, 1.7, ...] came out as [0, 1, ...]
    with pytest.raises(ValueError, match="integer class labels, got 1.7 at index 1"):
        DataLoader(batch, [0.0, 1.7, 2.5, 3.0], batch_size=2)
    for bad in (np.nan, np.inf, 2.0**63):
        with pytest.raises(ValueError, match="integer class labels, got .* at index 2"):
            DataLoader(batch, [0.0, 1.0, bad, 3.0], batch_size=2)
    loader = DataLoader(batch, np.array([3.0, 1.0, 0.0, -0.0]), batch_size=4, shuffle=False)
    _, labels = next(iter(loader))
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [3, 1, 0, 0])


@pytest.mark.parametrize(
    "error, kwargs, message",
    [
        (ValueError, {"y": ["a", "b", "c", "d"]}, "integer class labels, got dtype <U1"),
        (ValueError, {"y": [True, False, True, False]}, "integer class labels, got dtype bool"),
        (ValueError, {"y": np.array([2**64 - 1, 0, 0, 0], np.uint64)}, "fit int64"),
        (TypeError, {"batch_size": True}, "batch_size to be an int >= 1, got True"),
        (TypeError, {"batch_size": 2.0}, "batch_size to be an int >= 1, got 2.0"),
        (ValueError, {"seed": -1}, "DataLoader expected seed to be an int >= 0, got -1"),
        (TypeError, {"seed": "1"}, "DataLoader expected seed to be an int >= 0, got '1'"),
        (TypeError, {"shuffle": "no"}, "shuffle to be True or False, got 'no'"),
        (TypeError, {"drop_last": None}, "drop_last to be True or False, got None"),
        (TypeError, {"transform": 5}, "callable transform or None, got 5"),
        (ValueError, {"x": np.zeros((4, 3, 6, 5), np.int64)},
         "uint8 or float images, got dtype int64"),
        (ValueError, {"x": np.zeros((4, 3, 6, 5), object)},
         "uint8 or float images, got dtype object"),
    ],
)
def test_loader_arguments_name_the_parameter(batch, error, kwargs, message):
    arguments = {"x": batch, "y": np.arange(4), "batch_size": 2, **kwargs}
    with pytest.raises(error, match=message):
        DataLoader(**arguments)


def _forgot_return(xb):
    xb * 2  # the commonest transform bug: no return


@pytest.mark.parametrize(
    "transform, error, message",
    [
        # each was cast to float32 and yielded: None as a batch of one NaN, the short
        # batch out of step with its labels, the ints unscaled
        (_forgot_return, TypeError, r"DataLoader: transform _forgot_return returned None "
                                    r"\(expected an \(N, C, H, W\) float array with N=3"),
        (lambda b: b[:2], ValueError,
         r"transform <lambda> returned 2 images, shape \(2, 3, 6, 5\) \(expected .* with "
         r"N=3, the batch it was given\); the labels pair up with the images by position"),
        (lambda b: b[0], ValueError, r"returned an array of shape \(3, 6, 5\) \(expected"),
        (lambda b: (b * 255).astype(np.int64), ValueError,
         r"returned an array of dtype int64 \(expected an \(N, C, H, W\) float array"),
        (lambda b: "abc", TypeError, "transform <lambda> returned a str"),
        (lambda b: b.tolist(), TypeError, "transform <lambda> returned a list"),
        (Compose([RandomHorizontalFlip(), lambda b: b[:, 0]]), ValueError,
         r"transform Compose\(\[RandomHorizontalFlip\(p=0.5, seed=None\), .*\]\) returned "
         r"an array of shape \(3, 6, 5\)"),
    ],
    ids=["none", "fewer_images", "3d", "int64", "str", "list", "compose"],
)
def test_loader_checks_what_the_transform_returns(batch, transform, error, message):
    loader = DataLoader(batch, np.arange(4), batch_size=3, shuffle=False, transform=transform)
    with pytest.raises(error, match=message):
        next(iter(loader))


def test_loader_takes_any_float_batch_of_the_same_length_from_a_transform(batch):
    # float64 is cast to float32, and the images may change size (a crop)
    loader = DataLoader(batch, np.arange(4), batch_size=3, shuffle=False,
                        transform=lambda b: b[:, :, 1:, 1:].astype(np.float64))
    shapes = [(jitnet.to_numpy(xb).shape, jitnet.to_numpy(xb).dtype, len(yb))
              for xb, yb in loader]
    assert shapes == [((3, 3, 5, 4), np.float32, 3), ((1, 3, 5, 4), np.float32, 1)]


@pytest.mark.parametrize("target", ["numpy", "cpu"])
def test_loader_batches_unchanged_for_valid_input(batch, target):
    with jitnet.use_target(target):
        loader = DataLoader(batch, np.arange(4), batch_size=3, shuffle=True, seed=np.int64(5))
        (first, labels), _ = list(loader)
    order = np.random.default_rng(5).permutation(4)[:3]
    np.testing.assert_array_equal(jitnet.to_numpy(first), batch[order])
    np.testing.assert_array_equal(labels, order)


# ---------------------------------------------------------------- CIFAR-10
def write_batches(folder, labels):
    """A CIFAR-format folder whose data_batch_1 holds ``labels`` (and a valid test_batch)."""
    folder.mkdir(parents=True)
    for name, values in (("data_batch_1", labels), ("test_batch", [0, 1])):
        data = np.zeros((len(values), 3072), np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": values}, f, protocol=2)
    return folder


@pytest.mark.parametrize(
    "labels, message",
    [
        ([0.9, 1.7, 2.0], r"data_batch_1: 'labels' expected integer class labels, got 0.9 at "
                          "index 0"),
        (["a", "b", "c"], "data_batch_1: 'labels' expected integer class labels, got dtype"),
        ([0, None, 1], "data_batch_1: 'labels' expected integer class labels, got dtype object"),
        ([0, [1], 2], "data_batch_1: 'labels' are not integers"),
    ],
)
def test_cifar_labels_must_be_integers(tmp_path, labels, message):
    folder = write_batches(tmp_path / "cifar-10-batches-py", labels)
    with pytest.raises(DataError, match=message):
        load_cifar10(folder)


@pytest.mark.parametrize("labels, got", [([0, 10, 3], "0..10"), ([-1, 2, 3], "-1..3"),
                                         ([9, 255, 0], "0..255")])
def test_cifar_labels_must_lie_in_0_to_9(tmp_path, labels, got):
    # the DataError names the file; train_convnet's later check would not
    write_batches(tmp_path / "cifar-10-batches-py", labels)
    message = rf"data_batch_1: labels should lie in 0\.\.9, got {re.escape(got)}$"
    with pytest.raises(DataError, match=message):
        load_cifar10(tmp_path)


def test_cifar_whole_float_labels_load_as_int64(tmp_path):
    folder = write_batches(tmp_path / "cifar-10-batches-py", [3.0, 9.0, 0.0])
    _, y_train, _, _ = load_cifar10(tmp_path)
    assert y_train.dtype == np.int64
    np.testing.assert_array_equal(y_train, [3, 9, 0])
    assert folder.is_dir()


@pytest.mark.parametrize("load", [load_cifar10, cifar10_classes])
def test_cifar_root_is_a_folder_path(tmp_path, load):
    with pytest.raises(TypeError, match=f"{load.__name__} expected root to be a folder path "
                                         r"\(str or os.PathLike\), got None"):
        load(None)
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0")
    with pytest.raises(DataError, match=f"{a_file} is not a folder"):
        load(a_file)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"url": "not a url"}, ValueError,
         "url to be an http\\(s\\), ftp or file URL, got 'not a url'"),
        ({"url": None}, ValueError, "url to be an http\\(s\\), ftp or file URL, got None"),
        ({"url": "http://"}, ValueError, "got 'http://'"),
        ({"md5": "xyz"}, ValueError, "md5 to be 32 hex digits or None, got 'xyz'"),
        ({"timeout": 0}, ValueError, "timeout to be a finite number > 0 \\(seconds\\), got 0"),
        ({"timeout": float("inf")}, ValueError, "timeout to be a finite number .* got inf"),
        ({"timeout": "60"}, TypeError, "timeout to be a finite number .* got '60' \\(str\\)"),
        ({"root": 3}, TypeError, "download_cifar10 expected root to be a folder path"),
    ],
)
def test_download_arguments_checked_before_anything_is_created(tmp_path, kwargs, error, message):
    root = tmp_path / "data"
    with pytest.raises(error, match=message):
        download_cifar10(**{"root": root, **kwargs})
    assert not root.exists()

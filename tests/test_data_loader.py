"""jitnet.data.loader and jitnet.data.transforms."""

import numpy as np
import pytest

import jitnet
from jitnet.data import DataLoader
from jitnet.data.transforms import (
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    ToFloat,
)
from jitnet.train import channel_stats


@pytest.fixture
def data(rng):
    x = rng.integers(0, 256, (23, 3, 8, 6), dtype=np.uint8)
    y = np.arange(23, dtype=np.int64)  # label = index: batches show which images came
    return x, y


def _epoch(loader):
    return [(jitnet.to_numpy(xb), yb) for xb, yb in loader]


def test_each_index_once_per_epoch_and_fresh_permutation(data):
    x, y = data
    loader = DataLoader(x, y, batch_size=5, shuffle=True, seed=0)
    assert len(loader) == 5
    first = _epoch(loader)
    second = _epoch(loader)
    for epoch in (first, second):
        seen = np.concatenate([yb for _, yb in epoch])
        np.testing.assert_array_equal(np.sort(seen), y)
        assert [len(yb) for _, yb in epoch] == [5, 5, 5, 5, 3]
    assert not np.array_equal(np.concatenate([b for _, b in first]),
                              np.concatenate([b for _, b in second]))


def test_batches_float32_scaled_labels_int64(data):
    x, y = data
    for xb, yb in _epoch(DataLoader(x, y, batch_size=4, shuffle=False)):
        assert xb.dtype == np.float32 and xb.shape[1:] == (3, 8, 6)
        assert yb.dtype == np.int64 and isinstance(yb, np.ndarray)
        np.testing.assert_allclose(xb, x[yb].astype(np.float32) / 255, rtol=1e-6)


def test_in_order_by_default_as_pytorch(data):
    # an evaluation loader's batches line up with y_test (the default shuffled before)
    x, y = data
    np.testing.assert_array_equal(np.concatenate([b for _, b in DataLoader(x, y, 6)]), y)


def test_drop_last_and_no_shuffle(data):
    x, y = data
    loader = DataLoader(x, y, batch_size=5, shuffle=False, drop_last=True)
    assert len(loader) == 4
    np.testing.assert_array_equal(np.concatenate([b for _, b in loader]), np.arange(20))


def test_reproducible_with_seed_and_manual_seed(data):
    x, y = data

    def order(loader):
        return np.concatenate([b for _, b in loader])

    def shuffled(seed=None):
        return DataLoader(x, y, 4, shuffle=True, seed=seed)

    assert np.array_equal(order(shuffled(5)), order(shuffled(5)))
    jitnet.manual_seed(9)
    a = order(shuffled())
    jitnet.manual_seed(9)
    assert np.array_equal(a, order(shuffled()))
    assert not np.array_equal(a, np.arange(len(y)))  # shuffled at all


def test_without_a_seed_the_order_comes_from_jitnets_generator(data):
    # seed=None draws from jitnet's global generator: manual_seed decides the order,
    # and each epoch draws a fresh permutation (as with a seed)
    x, y = data
    loader = DataLoader(x, y, 4, shuffle=True)

    def order():
        return np.concatenate([b for _, b in loader])

    jitnet.manual_seed(9)
    first, second = order(), order()
    assert not np.array_equal(first, second)
    jitnet.manual_seed(10)
    assert not np.array_equal(first, order())
    jitnet.manual_seed(9)
    np.testing.assert_array_equal(order(), first)
    np.testing.assert_array_equal(order(), second)


def test_bad_arguments(data):
    x, y = data
    with pytest.raises(ValueError, match="labels of shape"):
        DataLoader(x, y[:-1], 4)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(x, y, 0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        DataLoader(x[0], y[:3], 4)


def _reference_crop(x, offsets, size, padding):
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    return np.stack([padded[i, :, top:top + size[0], left:left + size[1]]
                     for i, (top, left) in enumerate(offsets)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_crop_matches_numpy(rng, dtype):
    x = rng.standard_normal((6, 3, 9, 7)).astype(dtype)
    out = RandomCrop((8, 6), padding=2, seed=4)(x)
    gen = np.random.default_rng(4)  # the same draws as the transform
    offsets = np.stack([gen.integers(0, 9 + 4 - 8 + 1, 6), gen.integers(0, 7 + 4 - 6 + 1, 6)], 1)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, _reference_crop(x, offsets, (8, 6), 2))


def test_flip_matches_reversed_columns(rng):
    x = rng.standard_normal((9, 3, 5, 4)).astype(np.float32)
    out = RandomHorizontalFlip(p=0.5, seed=1)(x)
    flipped = np.random.default_rng(1).random(9) < 0.5
    assert 0 < flipped.sum() < 9
    np.testing.assert_array_equal(out[flipped], x[flipped][..., ::-1])
    np.testing.assert_array_equal(out[~flipped], x[~flipped])
    np.testing.assert_array_equal(RandomHorizontalFlip(p=1.0)(x), x[..., ::-1])


def test_normalize_matches_numpy(rng):
    x8 = rng.integers(0, 256, (10, 3, 4, 5), dtype=np.uint8)
    norm = Normalize.fit(x8)
    xf = x8.astype(np.float64) / 255
    np.testing.assert_allclose(norm.mean, xf.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(norm.std, xf.std(axis=(0, 2, 3)))
    x = ToFloat()(x8)
    ref = (x - norm.mean[None, :, None, None]) / norm.std[None, :, None, None]
    np.testing.assert_allclose(norm(x), ref, rtol=1e-5, atol=1e-6)
    out = Normalize.from_data(x8)(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    with pytest.raises(ValueError, match=r"expected 3 channels \(one per value of its mean "
                                         r"and std\), got 2"):
        norm(x[:, :2])


@pytest.mark.parametrize("value", [0, 7, 255])
def test_normalize_fit_on_a_constant_channel_is_usable(rng, value):
    # a channel with std 0 (a blank channel of a data set; 0 and 255 give exactly 0, 7 a
    # float64 rounding residue): no error, no NaN or inf
    x8 = rng.integers(0, 256, (5, 3, 4, 5), dtype=np.uint8)
    x8[:, 1] = value
    norm = Normalize.fit(x8)
    assert norm.std[1] > 0
    np.testing.assert_allclose(norm.mean[1], value / 255)
    x = ToFloat()(x8)
    out = norm(x)
    assert np.all(np.isfinite(out))
    assert np.unique(out[:, 1]).size == 1  # still one value
    for ch in (0, 2):
        np.testing.assert_allclose(out[:, ch], (x[:, ch] - norm.mean[ch]) / norm.std[ch],
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("value", [0, 7, 100, 255])
def test_normalize_fit_maps_a_constant_channel_to_zero(value):
    # the 1e-12 std floor there was turned the float32 rounding of ToFloat (1 ulp) into
    # 1862 for 7 and 29802 for 100; such a channel now gets std 1, as in scikit-learn
    x8 = np.full((2, 1, 3, 3), value, np.uint8)
    norm = Normalize.fit(x8)
    assert norm.std[0] == 1.0
    np.testing.assert_allclose(norm(ToFloat()(x8)), 0, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_channel_stats_of_a_constant_channel_normalise_it_to_zero(dtype):
    # a variance floor of 1e-12 (std 1e-6) turned ToFloat's 1-ulp rounding into 0.002
    x8 = np.stack([np.full((2, 3, 3), v, np.uint8) for v in (0, 7, 100)], axis=1)
    x = x8 if dtype == np.uint8 else ToFloat()(x8)
    mean, std = channel_stats(x)
    np.testing.assert_array_equal(std, 1.0)
    np.testing.assert_allclose(Normalize(mean, std)(ToFloat()(x8)), 0, atol=1e-6)


def test_augmented_loader_keeps_shapes_labels_and_is_reproducible(data):
    x, y = data

    def run(seed):
        t = Compose([RandomCrop((8, 6), padding=2, seed=seed), RandomHorizontalFlip(seed=seed),
                     Normalize.fit(x)])
        return _epoch(DataLoader(x, y, batch_size=6, shuffle=True, transform=t, seed=seed))

    a, b, c = run(3), run(3), run(4)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert xa.shape[1:] == (3, 8, 6) and xa.dtype == np.float32
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(u[0], v[0]) for u, v in zip(a, c))


def test_transforms_repr_shows_their_settings():
    t = Compose([ToFloat(), RandomCrop((8, 6), padding=2, seed=3), RandomHorizontalFlip(p=0.25),
                 Normalize([0.5], [0.25, 0.5, 1.0])])
    assert repr(t) == ("Compose([ToFloat(), RandomCrop(size=(8, 6), padding=2, seed=3), "
                       "RandomHorizontalFlip(p=0.25, seed=None), "
                       "Normalize(mean=[0.5], std=[0.25, 0.5, 1.0])])")


def test_labels_travel_with_their_images(data):
    x, y = data
    t = Compose([RandomCrop((8, 6), padding=0), RandomHorizontalFlip(p=1.0)])
    for xb, yb in _epoch(DataLoader(x, y, batch_size=6, transform=t, seed=0)):
        np.testing.assert_allclose(xb, x[yb][..., ::-1].astype(np.float32) / 255, rtol=1e-6)


@pytest.mark.parametrize("target", ["numpy", "cpu"])
def test_batches_on_active_target(data, target):
    x, y = data
    with jitnet.use_target(target):
        xb, yb = next(iter(DataLoader(x, y, batch_size=4)))
    assert isinstance(jitnet.to_numpy(xb), np.ndarray) and yb.dtype == np.int64

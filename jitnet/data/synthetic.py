"""A synthetic CIFAR-style data set: the embedded default of ``jitnet compare``.

Ten classes of 32x32 colour images drawn from shapes, textures and
arrangements of parts, each at a random position, scale, rotation and colour,
over a shaded background with clutter and noise. It is built to teach the
lecture: a linear classifier on HoG features scores clearly above chance but
clearly below a ConvNet, because

- the shape classes differ by the *arrangement* of edges (a ring against a
  filled disc, a cross against an L corner, a triangle against a square) and a
  random rotation spreads each over every orientation bin;
- the texture classes (stripes, checkerboard, dots) differ by local structure
  at a similar scale, which cell histograms blur;
- a random position moves the object across HoG cells, which a linear model
  on a fixed cell grid cannot pool over, while a ConvNet's pooling does;
- colour tells the class only weakly (one image in four takes a class hue).

Determinism: every random number comes from ``np.random.default_rng(seed)``
through ``random()`` and ``integers()`` only, and the pixel maths uses only
``+ - * /``, ``sqrt``, ``floor``, ``abs``, ``min``, ``max`` and ``clip`` in
float64, which IEEE 754 rounds exactly: no ``sin``, ``cos`` or ``exp``, whose
last bit may differ between libm builds and SIMD paths. Rotations come from
random points of the unit disc (rejection sampling) instead of angles. So a
seed gives the same bytes on any machine.
"""

import numpy as np

from .._checks import check_int

#: Names of the ten synthetic classes, in label order.
CLASS_NAMES = (
    "disc",
    "ring",
    "square",
    "triangle",
    "cross",
    "corner",
    "pair",
    "stripes",
    "checker",
    "dots",
)

_SIZE = 32
_CHUNK = 512  # images rendered at once: bounds the float64 temporaries (~30 MB each)

#: Class hues (RGB in [0, 1]) that one image in four of a class takes.
_CLASS_HUES = np.array(
    [
        [0.85, 0.25, 0.20],
        [0.20, 0.55, 0.85],
        [0.25, 0.75, 0.30],
        [0.90, 0.75, 0.15],
        [0.65, 0.30, 0.80],
        [0.15, 0.75, 0.75],
        [0.90, 0.50, 0.15],
        [0.55, 0.35, 0.20],
        [0.85, 0.40, 0.65],
        [0.45, 0.60, 0.25],
    ]
)
_CLASS_HUE_PROBABILITY = 0.25


def synthetic_cifar(n_train=5000, n_test=1000, seed=0):
    """Generate the synthetic CIFAR-style data set.

    Parameters
    ----------
    n_train, n_test : int
        Number of training and test images (non-negative ints, not bools). Classes are
        balanced: each holds ``n // 10`` or ``n // 10 + 1`` images.
    seed : int
        Seed of ``np.random.default_rng``; the same seed gives the same bytes on
        any machine, different seeds give different images. The test set comes
        from a stream of its own, so a seed's test images do not depend on
        ``n_train``: runs with more or fewer training images score on the same
        test set (the training images are those of ``default_rng(seed)``).

    Returns
    -------
    x_train : np.ndarray of uint8, shape (n_train, 3, 32, 32)
    y_train : np.ndarray of int64, shape (n_train,)
        Labels in ``0..9``, names in :data:`CLASS_NAMES`.
    x_test : np.ndarray of uint8, shape (n_test, 3, 32, 32)
    y_test : np.ndarray of int64, shape (n_test,)
    """
    n_train = check_int("synthetic_cifar", "n_train", n_train, 0)
    n_test = check_int("synthetic_cifar", "n_test", n_test, 0)
    seed = check_int("synthetic_cifar", "seed", seed, 0)
    x_train, y_train = _generate(np.random.default_rng(seed), n_train)
    # a child of the seed's SeedSequence: a stream independent of the training one
    (test_seed,) = np.random.SeedSequence(seed).spawn(1)
    x_test, y_test = _generate(np.random.default_rng(test_seed), n_test)
    return x_train, y_train, x_test, y_test


def _generate(rng, n):
    """``n`` balanced, shuffled images and labels from ``rng``."""
    labels = rng.permutation(np.arange(n, dtype=np.int64) % len(CLASS_NAMES))
    params = _draw_params(rng, labels)
    images = np.empty((n, 3, _SIZE, _SIZE), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        part = slice(start, min(start + _CHUNK, n))
        chunk = {key: value[part] for key, value in params.items()}
        noise = rng.random((part.stop - part.start, 3, _SIZE, _SIZE))
        images[part] = _render(labels[part], chunk, noise)
    return images, labels


def _unit_vectors(rng, n):
    """``n`` uniformly random directions as (cos, sin), each of shape (n,), without trig.

    Points uniform in the square are kept when they fall in the annulus
    0.1 < r < 1 (a uniform direction); of eight tries per row the first that
    falls in is used (all eight miss with probability 1e-5: then (1, 0)).
    """
    tries = rng.random((n, 8, 2)) * 2.0 - 1.0
    r2 = tries[..., 0] * tries[..., 0] + tries[..., 1] * tries[..., 1]
    inside = (r2 < 1.0) & (r2 > 0.01)
    first = np.argmax(inside, axis=1)
    rows = np.arange(n)
    point = tries[rows, first]
    point[~inside[rows, first]] = (1.0, 0.0)
    norm = np.sqrt(point[:, 0] * point[:, 0] + point[:, 1] * point[:, 1])
    return point[:, 0] / norm, point[:, 1] / norm


def _draw_params(rng, labels):
    """Every per-image random quantity, drawn in a fixed order (arrays of shape (n,) or (n, k))."""
    n = len(labels)
    p = {}
    p["cos"], p["sin"] = _unit_vectors(rng, n)
    p["cx"] = 16.0 + (rng.random(n) * 2.0 - 1.0) * 6.0
    p["cy"] = 16.0 + (rng.random(n) * 2.0 - 1.0) * 6.0
    p["scale"] = 6.0 + rng.random(n) * 4.5  # object radius in pixels
    p["shape_a"] = rng.random(n)  # class-specific shape parameters
    p["shape_b"] = rng.random(n)
    # Colours: background, and a foreground that differs from it by a random,
    # never tiny, contrast; one image in four uses its class hue.
    background = 0.15 + rng.random((n, 3)) * 0.7
    foreground = rng.random((n, 3))
    use_hue = rng.random(n) < _CLASS_HUE_PROBABILITY
    hue = _CLASS_HUES[labels] + (rng.random((n, 3)) - 0.5) * 0.2
    foreground[use_hue] = hue[use_hue]
    contrast = 0.25 + rng.random(n) * 0.45
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    grey_bg = (background[:, 0] + background[:, 1] + background[:, 2]) / 3.0
    grey_fg = (foreground[:, 0] + foreground[:, 1] + foreground[:, 2]) / 3.0
    # Shift the foreground so its grey level sits `contrast` away from the background's.
    target = np.clip(grey_bg + sign * contrast, 0.05, 0.95)
    target = np.where(np.abs(target - grey_bg) < 0.2, grey_bg - sign * contrast, target)
    p["foreground"] = np.clip(foreground + (target - grey_fg)[:, None], 0.0, 1.0)
    p["background"] = background
    # A linear shading ramp across the background.
    p["ramp_cos"], p["ramp_sin"] = _unit_vectors(rng, n)
    p["ramp"] = (rng.random(n) - 0.5) * 0.4
    # Clutter: up to three small bars and squares of random colour behind the object.
    k = 3
    p["clutter_on"] = rng.random((n, k)) < 0.6
    p["clutter_x"] = rng.random((n, k)) * 32.0
    p["clutter_y"] = rng.random((n, k)) * 32.0
    p["clutter_cos"], p["clutter_sin"] = (v.reshape(n, k) for v in _unit_vectors(rng, n * k))
    p["clutter_len"] = 1.5 + rng.random((n, k)) * 4.0
    p["clutter_wid"] = 0.6 + rng.random((n, k)) * 1.2
    p["clutter_colour"] = rng.random((n, k, 3))
    p["noise"] = 0.02 + rng.random(n) * 0.08
    return p


def _soft(distance):
    """Coverage of a pixel by a shape from its signed distance in pixels (< 0 inside)."""
    return np.clip(0.5 - distance, 0.0, 1.0)


def _box(u, v, half_u, half_v):
    """Signed distance (approximate outside the corners) to an axis-aligned box."""
    return np.maximum(np.abs(u) - half_u, np.abs(v) - half_v)


def _tri_wave(t):
    """A triangle wave of period 1 in [0, 1]: 0 at integers, 1 at half-integers."""
    return 2.0 * np.abs(t - np.floor(t + 0.5))


def _render(labels, p, noise):
    """Render a chunk of images as uint8 (n, 3, 32, 32) from its parameters."""
    n = len(labels)
    centre = np.arange(_SIZE, dtype=np.float64) + 0.5
    X = centre[None, None, :]
    Y = centre[None, :, None]

    def col(a):  # a per-image value broadcast over (n, 32, 32)
        return a[:, None, None]

    # Background: colour plus a linear ramp.
    ramp = (col(p["ramp_cos"]) * (X - 16.0) + col(p["ramp_sin"]) * (Y - 16.0)) / 16.0
    image = p["background"][:, :, None, None] + (col(p["ramp"]) * ramp)[:, None]
    image = np.broadcast_to(image, (n, 3, _SIZE, _SIZE)).copy()

    # Clutter behind the object.
    for j in range(p["clutter_on"].shape[1]):
        dx = X - p["clutter_x"][:, j, None, None]
        dy = Y - p["clutter_y"][:, j, None, None]
        c, s = p["clutter_cos"][:, j, None, None], p["clutter_sin"][:, j, None, None]
        u, v = c * dx + s * dy, -s * dx + c * dy
        alpha = _soft(_box(u, v, p["clutter_len"][:, j, None, None],
                           p["clutter_wid"][:, j, None, None]))
        alpha = alpha * p["clutter_on"][:, j, None, None]
        image = (image * (1.0 - alpha[:, None])
                 + p["clutter_colour"][:, j, :, None, None] * alpha[:, None])

    # The object, in its own rotated frame (u, v) measured in pixels.
    dx, dy = X - col(p["cx"]), Y - col(p["cy"])
    c, s = col(p["cos"]), col(p["sin"])
    u, v = c * dx + s * dy, -s * dx + c * dy
    alpha = np.zeros((n, _SIZE, _SIZE))
    for label in range(len(CLASS_NAMES)):
        rows = np.flatnonzero(labels == label)
        if len(rows):
            q = {key: value[rows] for key, value in p.items()}
            alpha[rows] = _SHAPES[label](u[rows], v[rows], col(q["scale"]), col(q["shape_a"]),
                                         col(q["shape_b"]))
    fg = p["foreground"][:, :, None, None]
    image = image * (1.0 - alpha[:, None]) + fg * alpha[:, None]

    image = image + (noise - 0.5) * (2.0 * p["noise"][:, None, None, None])
    return np.floor(np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# Shapes: each maps the rotated frame (u, v) (n, 32, 32), the radius r and two
# uniform shape parameters a, b (n, 1, 1) to a coverage in [0, 1].


def _disc(u, v, r, a, b):
    return _soft(np.sqrt(u * u + v * v) - r)


def _ring(u, v, r, a, b):
    width = 1.0 + a * 0.25 * r  # half-width of the band, at least a pixel
    return _soft(np.abs(np.sqrt(u * u + v * v) - (r - width)) - width)


def _square(u, v, r, a, b):
    half = r * (0.8 + 0.1 * a)
    return _soft(_box(u, v, half, half))


def _triangle(u, v, r, a, b):
    # Equilateral: the maximum of three half-plane distances (normals 120 degrees apart).
    h = r * (0.55 + 0.1 * a)
    k = np.sqrt(3.0) / 2.0
    d = np.maximum(np.maximum(-v, k * u + 0.5 * v), -k * u + 0.5 * v) - h
    return _soft(d)


def _cross(u, v, r, a, b):
    w = 1.0 + a * 0.15 * r
    return _soft(np.minimum(_box(u, v, r, w), _box(u, v, w, r)))


def _corner(u, v, r, a, b):
    # An L: two bars meeting at a right angle, centred on the shape's centre.
    w = 1.0 + a * 0.15 * r
    half = r * 0.9
    bar_u = _box(u, v + half - w, half, w)
    bar_v = _box(u + half - w, v, w, half)
    return _soft(np.minimum(bar_u, bar_v))


def _pair(u, v, r, a, b):
    # Two discs side by side.
    radius = r * (0.4 + 0.1 * a)
    gap = r - radius
    left = np.sqrt((u + gap) * (u + gap) + v * v)
    right = np.sqrt((u - gap) * (u - gap) + v * v)
    return _soft(np.minimum(left, right) - radius)


def _patch(u, v, r):
    """Coverage of the round patch that holds a texture."""
    return _soft(np.sqrt(u * u + v * v) - r * 1.1)


def _stripes(u, v, r, a, b):
    period = 3.0 + a * 2.0
    return _patch(u, v, r) * _soft((_tri_wave(u / period) - 0.5) * period * 0.5)


def _checker(u, v, r, a, b):
    period = 4.0 + a * 2.0
    su = _tri_wave(u / period) - 0.5
    sv = _tri_wave(v / period) - 0.5
    return _patch(u, v, r) * _soft(-su * sv * period)


def _dots(u, v, r, a, b):
    period = 4.0 + a * 2.0
    du = (_tri_wave(u / period)) * 0.5 * period
    dv = (_tri_wave(v / period)) * 0.5 * period
    return _patch(u, v, r) * _soft(np.sqrt(du * du + dv * dv) - period * 0.3)


_SHAPES = (_disc, _ring, _square, _triangle, _cross, _corner, _pair, _stripes, _checker, _dots)

"""Hand-made image features: HoG (equal to scikit-image's) and colour histograms.

Both take a batch with a leading image axis and compute it in one parallel
kernel on the cpu target (a vectorised NumPy reference on the numpy target).
"""

from .color import color_histogram
from .hog import hog, hog_image, n_hog_features

__all__ = ["color_histogram", "hog", "hog_image", "n_hog_features"]

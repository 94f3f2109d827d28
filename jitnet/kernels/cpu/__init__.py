"""The ``"cpu"`` target: parallel Numba kernels.

Every public function has the signature of its twin in :mod:`..numpy_ref` (the
reference and test oracle). A public function is a thin wrapper that
normalises arguments and allocates outputs; the work happens in an
``@njit(parallel=True, cache=True)`` core named ``_<name>`` (STUMPY style).

One module a layer: :mod:`.conv` (with the kernels of its layouts in
:mod:`.conv_rows`, :mod:`.conv_tiles` and :mod:`.conv_pooled`, the depthwise ones in
:mod:`.conv_depthwise`, and strided convolutions' phases in :mod:`.conv_phases`), :mod:`.maxpool`,
:mod:`.linear`, :mod:`.activations`, :mod:`.dropout`, :mod:`.batchnorm`,
:mod:`.losses` and :mod:`.optim`; :mod:`.arrays` holds the target's arrays,
:mod:`._tiles` the register tiles' shapes, :mod:`._common` Numba's options. The
modules call each other's kernels, which Numba compiles into the caller's code, so
Numba's on-disk cache of a kernel is keyed by the sources of this whole folder
(:class:`jitnet.codegen._KernelCache`).

Race freedom: every ``prange`` carries a comment naming the output slice its
iterations own. Reductions across the parallel axis (weight and bias gradients,
batch-norm statistics, loss sums) are arranged so that each iteration owns one
output element or row and sums in a fixed order, so results are bitwise
reproducible whatever the thread count.
"""

from .. import CONTRACT
from .activations import (
    elu_backward,
    elu_forward,
    leaky_relu_backward,
    leaky_relu_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    tanh_backward,
    tanh_forward,
)
from .arrays import asarray, empty, to_numpy, zeros
from .batchnorm import batchnorm2d_backward, batchnorm2d_forward, batchnorm2d_maxpool2d_forward
from .conv import (
    conv2d_backward,
    conv2d_forward,
    conv2d_maxpool2d_backward,
    conv2d_maxpool2d_forward,
)
from .dropout import dropout_backward, dropout_forward
from .linear import linear_backward, linear_forward, maxout_backward, maxout_forward
from .losses import bce_with_logits, l1, mse, multiclass_hinge, softmax_cross_entropy
from .maxpool import maxpool2d_backward, maxpool2d_forward, maxpool2d_relu_backward
from .optim import adam_update, adam_update_many, sgd_update, sgd_update_many

#: The kernel contract, in its order.
__all__ = list(CONTRACT)

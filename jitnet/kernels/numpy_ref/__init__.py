"""The reference target: every kernel of the contract in vectorised NumPy.

This package is the test oracle that the ``cpu`` and ``cuda`` kernels are checked
against, and the baseline they are benchmarked against. It is written the way a
NumPy user would write it for speed: convolution as im2col (a strided window view,
one copy) followed by one batched BLAS matmul per call, max pooling as one
``argmax`` over a window view, everything else as whole-array expressions.

Every function takes and returns ``np.ndarray``; float32 and float64 both work and
the output dtype is the input dtype. Kernels trust their inputs: the layers of
:mod:`jitnet.nn` validate shapes and dtypes before calling them.

One module a layer, as in the cpu and cuda targets: :mod:`.arrays` (the target's
arrays), :mod:`.conv`, :mod:`.maxpool` (with the fused convolution + pooling
kernels), :mod:`.linear` (fully connected and maxout), :mod:`.activations`,
:mod:`.dropout` (with :func:`dropout_uniform`, the mask's numbers),
:mod:`.batchnorm`, :mod:`.losses` and :mod:`.optim`.
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
from .conv import conv2d_backward, conv2d_forward
from .dropout import dropout_backward, dropout_forward, dropout_uniform
from .linear import linear_backward, linear_forward, maxout_backward, maxout_forward
from .losses import bce_with_logits, l1, mse, multiclass_hinge, softmax_cross_entropy
from .maxpool import (
    conv2d_maxpool2d_backward,
    conv2d_maxpool2d_forward,
    maxpool2d_backward,
    maxpool2d_forward,
    maxpool2d_relu_backward,
)
from .optim import adam_update, adam_update_many, sgd_update, sgd_update_many

#: The kernel contract, in its order, and the mask's numbers of :func:`dropout_forward`.
__all__ = list(CONTRACT) + ["dropout_uniform"]

"""The ``"cuda"`` target: ``numba.cuda`` kernels and their launch wrappers.

Every public function has the signature of its twin in :mod:`..numpy_ref` (the
reference and test oracle) and takes and returns numba device arrays; a host
``np.ndarray`` given as a read-only input is copied to the device first. A public
function validates nothing (the layers do), takes its outputs from a pool of
device arrays reused across calls (:func:`.arrays._empty`) and launches one or more
``_name_kernel`` kernels. Nothing comes back to the host except the loss value
(one scalar copy per loss call).

One module a layer, as on the cpu target: :mod:`.conv`, :mod:`.maxpool`,
:mod:`.linear` (and maxout), :mod:`.activations`, :mod:`.dropout`,
:mod:`.batchnorm`, :mod:`.losses` and :mod:`.optim`, with :mod:`.features` (HoG and
colour histograms, outside the contract); :mod:`.arrays` holds the target's arrays,
:mod:`._launch` the launch shapes and :mod:`._reduction` the block sum. Only
:mod:`.device` imports ``numba.cuda``: the others take ``cuda`` and the ``@jit``
decorator from it, so a move to another package with the same kernel language
touches that one file. It also answers whether a GPU is usable
(:func:`unavailable_reason`, :func:`device_info`) and counts launches
(:func:`count_launches`).

Launch shapes are read from :mod:`jitnet.config` at every call, never inside a
kernel, so tests can patch them tiny:

- element-wise kernels are 1-D grid-stride loops of ``CUDA_THREADS_PER_BLOCK``
  threads over at most ``CUDA_MAX_BLOCKS`` blocks;
- convolution and matmul use square ``CUDA_TILE x CUDA_TILE`` blocks with
  shared-memory tiles of the input and the weights, several outputs per thread;
- reductions (bias and weight gradients, batch-norm statistics, loss sums) give
  each output one block that sums in shared memory with a fixed tree (or one
  thread, for the short column sums of a linear layer's bias gradient), so every
  output element has exactly one writer and results are reproducible;
- bias adds are fused into the epilogues of the convolution and matmul kernels.

Kernels that need shared or local arrays (whose shapes and dtype must be
compile-time constants) are built by ``_make_*`` factories, cached per dtype and
launch shape for the process: the CUDA analogue of a C++ template instantiation.
Module-level kernels are also cached on disk (``cache=True``), keyed by the sources
of this whole folder, since kernels call device functions across its files
(:func:`.device.jit`).

The only atomics are in :func:`maxpool2d_backward`: its signature does not carry
the window size, so each upstream gradient is added at its recorded argmax.
Windows do not overlap in the usual ``stride == kernel_size`` case, so the adds
never contend there.

With ``NUMBA_ENABLE_CUDASIM=1`` the same kernels run in Numba's simulator (slowly,
as Python threads), which is how CI tests them.
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
from .arrays import asarray, empty, fill_zeros, to_numpy, zeros
from .batchnorm import batchnorm2d_backward, batchnorm2d_forward, batchnorm2d_maxpool2d_forward
from .conv import conv2d_backward, conv2d_forward
from .device import (
    SIMULATOR,
    count_launches,
    cuda,
    device_info,
    intercept_launches,
    synchronize,
    unavailable_reason,
)
from .dropout import dropout_backward, dropout_forward
from .features import color_histogram, hog, hog_blocks, hog_cells
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

#: The kernel contract, in its order, then what only this target has: the device's
#: availability and launches, ``fill_zeros``, and the kernels of the features.
__all__ = list(CONTRACT) + [
    "SIMULATOR", "unavailable_reason", "device_info", "synchronize", "intercept_launches",
    "count_launches", "fill_zeros", "hog_cells", "hog_blocks", "hog", "color_histogram",
]

"""jitnet: convolutional networks on kernels you can read.

Every layer's forward and backward pass is a kernel of the active target:
``"numpy"`` (vectorised reference), ``"cpu"`` (Numba, parallel, the default)
or ``"cuda"`` (numba.cuda).
"""

from . import config
from .codegen import prefer_512_bit_vectors

prefer_512_bit_vectors()  # before any @njit: Numba fixes its CPU features at the first one

from .rng import manual_seed  # noqa: E402, I001  (data etc. import after targets)
from .targets import (  # noqa: E402
    TargetUnavailableError,
    asarray,
    available_targets,
    get_target,
    set_target,
    to_numpy,
    use_target,
)
from . import data, features, gradcheck, models, nn, optim  # noqa: E402  (after targets)

__version__ = "0.1.0"

__all__ = [
    "TargetUnavailableError",
    "asarray",
    "available_targets",
    "config",
    "data",
    "features",
    "get_target",
    "gradcheck",
    "manual_seed",
    "models",
    "nn",
    "optim",
    "set_target",
    "to_numpy",
    "use_target",
]

"""How Numba compiles the cpu kernels: 512-bit vectors on AVX-512 CPUs.

Numba builds one LLVM target machine per process, at the first ``@njit``
decoration, from the host CPU's name and features. For Intel CPUs with AVX-512
(Skylake-X and later) LLVM's tuning adds ``prefer-256-bit``: the vectorisers then
emit 8-lane ymm code, and the 16-lane register tiles of the convolution and
matrix kernels (see ``jitnet/kernels/cpu.py``) run at half width. Appending
``-prefer-256-bit`` to the host's features lifts that preference (measured on a
2-core Xeon: conv2 forward 4.8 -> 3.3 ms, fc1 backward 6.9 -> 2.1 ms); AMD Zen 4 has
no such preference and is unaffected.

The setting is Numba's documented ``NUMBA_CPU_FEATURES``, so it applies to every
function Numba compiles in the process, and it only changes vector widths: code
compiled without fast-math computes the same bits. It is left alone when the
user chose ``NUMBA_CPU_NAME`` or ``NUMBA_CPU_FEATURES``, when Numba was already in
use (a function decorated) before jitnet was imported, or with ``JITNET_PREFER_512_BIT=0``
(:data:`jitnet.config.PREFER_512_BIT`). Numba's on-disk cache keys every entry by
the features, so the two settings never share compiled code.
"""

import numba
from numba.core.registry import cpu_target

from . import config

#: What :func:`prefer_512_bit_vectors` did, for ``jitnet info``.
status = "not applied"


def _codegen_started():
    # CPUTarget builds its target context (and the LLVM target machine) lazily,
    # as a cached property, at the first @njit decoration.
    return "_toplevel_target_context" in cpu_target.__dict__


def prefer_512_bit_vectors():
    """Append ``-prefer-256-bit`` to Numba's CPU features where it helps and is allowed.

    Must run before the first ``@njit`` decoration in the process (jitnet calls it
    first thing on import). Returns True when the features were changed.
    """
    global status
    if not config.PREFER_512_BIT:
        status = "off (JITNET_PREFER_512_BIT=0)"
        return False
    if numba.config.CPU_NAME is not None or numba.config.CPU_FEATURES is not None:
        status = "left to NUMBA_CPU_NAME / NUMBA_CPU_FEATURES"
        return False
    if _codegen_started():
        status = "not applied: Numba was in use before jitnet was imported"
        return False
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    if not features.get("avx512f", False):
        status = "not needed (no AVX-512)"
        return False
    numba.config.CPU_FEATURES = features.flatten() + ",-prefer-256-bit"
    status = "on (host features, -prefer-256-bit)"
    return True

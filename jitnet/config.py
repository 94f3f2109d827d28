"""Tunables read by kernel wrappers (never inside kernels).

Tests patch these (for example ``CUDA_THREADS_PER_BLOCK``) to exercise edge
cases such as grid-stride loops with tiny blocks.
"""

import os

#: Target chosen at import when ``JITNET_TARGET`` is unset.
DEFAULT_TARGET = "cpu"

#: Target named in the environment at import time (may be ``None``).
ENV_TARGET = os.environ.get("JITNET_TARGET")

#: LLVM fast-math flags for the cpu kernels. ``nnan`` and ``ninf`` are left
#: out on purpose (as STUMPY does): NaN and inf in the input must propagate,
#: not be optimised away.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

#: Let Numba use 512-bit vectors on Intel AVX-512 CPUs, whose LLVM tuning prefers
#: 256-bit ones (see :mod:`jitnet.codegen`). ``JITNET_PREFER_512_BIT=0`` turns it off.
PREFER_512_BIT = os.environ.get("JITNET_PREFER_512_BIT", "1") != "0"

#: float32 lanes per vector that the cpu kernels' register tiles are sized for:
#: 16 (512-bit vectors) or 8 (256-bit). None works it out from the CPU features Numba
#: compiles for (:func:`jitnet.codegen.vector_lanes`); ``JITNET_VECTOR_LANES=8`` or
#: ``16`` chooses (either computes the same results, at a different speed).
VECTOR_LANES = os.environ.get("JITNET_VECTOR_LANES") or None

#: LLVM optimisation level of jitnet's cpu kernels (Numba's default is 3; see
#: :mod:`jitnet.codegen`). None leaves Numba's; ``NUMBA_OPT`` in the environment wins.
LLVM_OPT = 2

#: Most seconds a cpu kernel's compilation waits for another process compiling the same
#: kernel (:func:`jitnet.codegen.compile_lock`) before it compiles the kernel itself.
COMPILE_LOCK_TIMEOUT = 120.0

#: On a first training run (empty Numba cache), compile the backward kernels in a
#: helper process beside the forward ones (:mod:`jitnet.kernels.precompile`).
#: ``JITNET_PRECOMPILE=0`` turns it off.
PRECOMPILE = os.environ.get("JITNET_PRECOMPILE", "1") != "0"

#: Threads per block for 1-D grid-stride CUDA launches.
CUDA_THREADS_PER_BLOCK = 256

#: Side of the square 2-D thread blocks used by tiled CUDA kernels.
CUDA_TILE = 16

#: Default float dtype of parameters and activations.
DTYPE = "float32"

#: Most blocks of a 1-D grid-stride CUDA launch (and of one-block-per-output
#: reductions); larger arrays make each thread loop. Tests patch it tiny.
CUDA_MAX_BLOCKS = 4096

#: Arrays of at least this many bytes come from the cpu target's array pool
#: (:mod:`jitnet.kernels.pool`): reused across calls once released, where a
#: fresh allocation would page-fault on first touch.
ARRAY_POOL_MIN_BYTES = 1 << 18

#: Most bytes the cpu target's array pool keeps (idle arrays of the least recently
#: used shapes go first). 0 turns the pool off.
ARRAY_POOL_MAX_BYTES = 1 << 30

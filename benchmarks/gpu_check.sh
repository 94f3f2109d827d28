#!/usr/bin/env bash
# The checks that only a real GPU can do, in one call, for a lent device machine
# (issue 4): the cuda test suite on the hardware, then the training-step benchmark
# of jitnet cuda against jitnet cpu and PyTorch on the same GPU (PyTorch twice: in
# float32, as jitnet computes, and with its default TF32 convolutions), for the
# reference ConvNet and, at batch 256, for the one `jitnet compare` trains (a batch
# norm after each convolution).
#
#     bash benchmarks/gpu_check.sh            # writes its logs under $OUT (or ./gpu_check)
#
# It installs nothing: the machine's python3 must have numba, numba-cuda, numpy,
# scikit-image and pytest (the lent H200 image has them, and PyTorch), and jitnet
# runs from this checkout through PYTHONPATH. Each part has its own time limit, so a
# hang in one still leaves the others' logs; the last lines printed are the summary.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-/tmp/jitnet_numba_cache}

start=$(date +%s)
{
    date -u
    nvidia-smi -L
    "$PY" -c "import sys, numpy, numba, numba_cuda; print('python', sys.version.split()[0], \
'numpy', numpy.__version__, 'numba', numba.__version__, 'numba-cuda', numba_cuda.__version__)"
    "$PY" -m jitnet info
} > "$OUT/info.txt" 2>&1
echo "info rc=$?" > "$OUT/summary.txt"

# The cuda tests on the hardware (kernels compile at first use; pytest-xdist, when
# there, compiles in parallel).
workers=$("$PY" -c "import xdist" 2>/dev/null && echo "-n 8" || echo "")
JITNET_TEST_CUDA=1 timeout 300 "$PY" -m pytest -q -p no:cacheprovider $workers tests/cuda \
    > "$OUT/tests_cuda.txt" 2>&1
echo "tests/cuda rc=$? ($(tail -n 1 "$OUT/tests_cuda.txt"))" >> "$OUT/summary.txt"

# jitnet cuda vs jitnet cpu vs torch cuda, batch 64, 256 and 1024 (the numpy target
# is left out: at batch 1024 it alone would take minutes).
timeout 240 "$PY" benchmarks/bench_train.py --target cuda --batch-size 64 256 1024 \
    --rounds 2 --no-numpy --out "$OUT/bench_train_cuda.md" > "$OUT/bench_train_cuda.txt" 2>&1
echo "bench_train --target cuda rc=$?" >> "$OUT/summary.txt"

# jitnet compare's ConvNet, batch norms included (their cuda kernels' only timing).
timeout 120 "$PY" benchmarks/bench_train.py --target cuda --batchnorm --batch-size 256 \
    --rounds 2 --no-numpy --no-cold --out "$OUT/bench_train_cuda_bn.md" \
    > "$OUT/bench_train_cuda_bn.txt" 2>&1
echo "bench_train --target cuda --batchnorm rc=$?" >> "$OUT/summary.txt"

echo "total $(( $(date +%s) - start )) s" >> "$OUT/summary.txt"
cat "$OUT/info.txt" "$OUT/summary.txt"
[ -f "$OUT/bench_train_cuda.md" ] && cat "$OUT/bench_train_cuda.md"
[ -f "$OUT/bench_train_cuda_bn.md" ] && cat "$OUT/bench_train_cuda_bn.md"
tail -n 25 "$OUT/tests_cuda.txt"

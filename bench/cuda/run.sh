#!/bin/sh
# bench/cuda/run.sh - on a machine with an NVIDIA GPU, from the repository root:
# build the tests and the bench library, run the tests, compute-sanitizer
# (memcheck and racecheck on the quick set, when compute-sanitizer is there),
# then the bench table. OUT (default build/cuda) receives the logs.
#   sh bench/cuda/run.sh [--quick] [--no-tests] [--no-bench]
set -u
OUT=${OUT:-build/cuda}
mkdir -p "$OUT" build/cuda
ARCH=${ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)}
ARCH=${ARCH:-90}
NVCC=${NVCC:-nvcc}
PY=${PY:-python3}
quick=""; tests=1; benchit=1
for a in "$@"; do
    case $a in --quick) quick=--quick;; --no-tests) tests=0;; --no-bench) benchit=0;; esac
done
rc=0
# Hopper (sm_90): build for sm_90a, where the wgmma kernel exists, and have
# the tests insist that it runs
GENCODE="-arch=sm_$ARCH"; EXPECT=""
[ "$ARCH" = 90 ] && { GENCODE="-gencode arch=compute_90a,code=sm_90a"; EXPECT=--expect-wgmma; }
echo "== build ($GENCODE)"
cc -O2 -std=c99 -Iinclude -c tests/cuda/cpu_impl.c -o build/cuda/cpu_impl.o || exit 1
$NVCC -O2 -std=c++17 -Iinclude $GENCODE -lineinfo tests/cuda/test_cuda.cu build/cuda/cpu_impl.o -o build/cuda/test_cuda -lm -lpthread &
$NVCC -O3 -std=c++17 -Iinclude $GENCODE -Xcompiler -fPIC -shared bench/cuda/bench_lib.cu -o build/cuda/libsdpa_cuda_bench.so &
wait
[ -x build/cuda/test_cuda ] && [ -f build/cuda/libsdpa_cuda_bench.so ] || { echo "build failed"; exit 1; }
if [ $tests = 1 ]; then
    echo "== tests"
    ./build/cuda/test_cuda $quick $EXPECT 2>&1 | tee "$OUT/test.log" | grep -v '^ok' | tail -40
    [ "$(tail -1 "$OUT/test.log" | grep -c 'all passed')" = 1 ] || rc=1
    if command -v compute-sanitizer >/dev/null 2>&1; then
        for tool in memcheck racecheck; do
            echo "== compute-sanitizer --tool $tool (quick set)"
            timeout ${SAN_TIMEOUT:-200} compute-sanitizer --tool $tool --error-exitcode 9 ./build/cuda/test_cuda --quick $EXPECT > "$OUT/$tool.log" 2>&1
            s=$?
            tail -3 "$OUT/$tool.log"
            [ $s = 0 ] || { echo "$tool: exit $s"; rc=1; }
        done
    else
        echo "compute-sanitizer not found: skipped"
    fi
fi
if [ $benchit = 1 ]; then
    echo "== bench"
    PYTHONUNBUFFERED=1 $PY bench/cuda/bench.py build/cuda/libsdpa_cuda_bench.so $quick 2>&1 | tee "$OUT/bench.log"
fi
exit $rc

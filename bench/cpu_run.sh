#!/usr/bin/env bash
# One command for a bigger x86 machine (the GPU machine's 16-core Xeon host is
# where the avx512 and amx paths were measured): builds, runs the suite once
# per code path the CPU has (plus the bf16-emulation build and ASan+UBSan on
# the SIMD paths), then the bench with thread scaling, then `make run` in F32
# and BF16. Logs go to $OUT (default build/cpu_run/).
#
#   bench/cpu_run.sh [THREADS]      THREADS: all-threads runs (default: nproc)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-build/cpu_run}
thr=${1:-$(nproc)}
mkdir -p "$out"
{
    echo "== machine"; lscpu | grep -E 'Model name|^CPU\(s\)|Thread|L2|L3'; uname -r; ${CC:-gcc} --version | head -1
    make -s -j"$thr" build/test_sdpa build/test_sdpa_bf16emu build/bench build/olmo_layer || exit 1
    echo "== tests, one run per path"
    for p in $(./build/test_sdpa --paths); do
        echo "-- SDPA_PATH=$p"
        SDPA_PATH=$p ./build/test_sdpa | grep -v '^\[ OK'
    done
    echo "-- bf16 mode emulated in plain C"
    ./build/test_sdpa_bf16emu | grep -v '^\[ OK'
    echo "== ASan + UBSan, --quick, SIMD paths"
    ${CC:-gcc} -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -Iinclude tests/test_sdpa.c \
        -o build/test_sdpa_asan -lm -pthread &&
    for p in $(./build/test_sdpa --paths | grep -v scalar); do
        echo "-- SDPA_PATH=$p"
        SDPA_PATH=$p ./build/test_sdpa_asan --quick | grep -v '^\[ OK' | tail -3
    done
} 2>&1 | tee "$out/tests.log"
./build/bench --threads "$thr" --scaling 2>&1 | tee "$out/bench.log"
{
    for dt in f32 bf16; do ./build/olmo_layer --threads "$thr" --dtype $dt; done
} 2>&1 | tee "$out/run.log"

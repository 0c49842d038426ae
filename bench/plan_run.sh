#!/usr/bin/env bash
# bench/plan_run.sh OUT - the trade-off map (issue 6) on a bigger machine in
# one command: builds, runs the planner's tests, then the bench's map modes
# in two timed phases, and draws the plots when gnuplot is there. Meant for
# the GPU machine's 16-core Xeon host (AVX-512, AMX, torch at python3):
# about 6-7 minutes there, each phase capped so that the whole stays under 8.
#
#   bench/plan_run.sh OUT [THREADS]
#
# OUT gets: machine.txt, test_plan.log, map.log + map.json (memory, parity,
# Pareto sweep, planner against exhaustive search), suite.log + suite.json
# (OLMo-2-7B prefill and decode per path/mode/storage/threads, naive and
# PyTorch baselines), suite_h64.log + .json and h64/ (the 64-head shape),
# every table as OUT/<table>.csv, and the PNGs (or a line saying gnuplot is
# missing: then run `make plots DATA=OUT` elsewhere). Phases: 180 + 180 + 60 s
# at most, plus the build: under 8 minutes.
# PyTorch: bench/torch_sdpa.py through $BENCH_PYTHON (default python3), skipped
# with a line when torch cannot be imported. OpenBLAS: dlopen'ed when present,
# skipped with a line otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bench/plan_run.sh OUT [THREADS]}
thr=${2:-$(nproc)}
mkdir -p "$out"
t0=$(date +%s)
{
    echo "== machine"; lscpu | grep -E 'Model name|^CPU\(s\)|Thread|Flags' | cut -c1-400; uname -r
    ${CC:-gcc} --version | head -1
    ${BENCH_PYTHON:-python3} -c 'import torch; print("torch", torch.__version__, "threads", torch.get_num_threads())' 2>&1 | tail -1
    ls /usr/lib/*/libopenblas.so.0 2>/dev/null || echo "no libopenblas.so.0"
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"
make -s -j"$thr" build/bench build/libsdpa_bench.so build/test_sdpa || exit 1
echo "== planner tests (build/test_sdpa planner: every path's picks, memory against the library, the probe)"
./build/test_sdpa planner 2>&1 | tee "$out/test_plan.log" | tail -8
echo "== map: memory, parity, Pareto sweep, planner against exhaustive search (cap 180 s)"
timeout -k 15 180 ./build/bench --memory --parity --pareto --plan-eval --sweep-budget 100 --threads "$thr" \
    --out "$out" --json "$out/map.json" > "$out/map.log" 2>&1
echo "   exit $? after $(( $(date +%s) - t0 )) s"; grep -A6 "fitted to all sweeps" "$out/map.log"
echo "== suite, OLMo-2-7B: prefill L 512..4096, decode 4k..64k, per path/mode/storage/threads (cap 180 s)"
timeout -k 15 180 ./build/bench --suite --configs 1 --reps 3 --threads "$thr" --out "$out" \
    --json "$out/suite.json" > "$out/suite.log" 2>&1
echo "   exit $? after $(( $(date +%s) - t0 )) s"
echo "== suite, 64 query heads / 8 kv heads: prefill L 1024, 4096, decode 16k, 64k (cap 60 s)"
mkdir -p "$out/h64"
timeout -k 10 60 ./build/bench --suite --configs 3 --reps 3 --lens 1024,4096 --ctxs 16384,65536 --threads "$thr" \
    --out "$out/h64" --json "$out/suite_h64.json" > "$out/suite_h64.log" 2>&1
echo "   exit $? after $(( $(date +%s) - t0 )) s"
python3 bench/plots.py "$out" --title "$(lscpu | sed -n 's/^Model name: *//p' | head -1), $thr threads" 2>&1 | tail -5
echo "plan_run: done in $(( $(date +%s) - t0 )) s; logs, CSV, JSON and PNGs in $out"

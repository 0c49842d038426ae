#!/usr/bin/env bash
# tests/fuzz/run.sh DIR SECONDS MODE NAME...
#
# Runs the libFuzzer harnesses DIR/fuzz_NAME (built by make fuzz-build) for
# SECONDS each, MODE "parallel" (all at once) or "serial" (one after the
# other). Each starts from its committed seed corpus tests/fuzz/corpus/NAME
# (replayed first: every input there must pass, the inputs of fixed bugs
# included), grows a working corpus in DIR/corpus-NAME (never the committed
# one) and writes a failing input to DIR/crashes/NAME-crash-*. The log of each
# run is DIR/NAME.log; the summary prints runs, executions per second and new
# corpus entries. Exit status: non-zero when any harness failed.
set -u
dir=$1 secs=$2 mode=$3
shift 3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$dir/crashes"

maxlen() {
    case $1 in attention) echo 512 ;; kv_cache) echo 1024 ;; *) echo 256 ;; esac
}

run_one() {
    local name=$1 bin=$dir/fuzz_$1 seeds=$here/corpus/$1 work=$dir/corpus-$1 log=$dir/$1.log
    mkdir -p "$work"
    # the committed seeds, replayed as they are, then the timed run
    if ! "$bin" -runs=0 -artifact_prefix="$dir/crashes/$name-seed-" "$seeds" >"$log" 2>&1; then
        echo "fuzz $name: a committed seed fails (log: $log)"
        grep -a -m1 -A12 "FUZZ CHECK FAILED\|ERROR: AddressSanitizer\|runtime error\|ERROR: libFuzzer\|ERROR: LeakSanitizer" "$log"
        return 1
    fi
    cp -n "$seeds"/* "$work"/ 2>/dev/null
    if ! "$bin" -max_total_time="$secs" -max_len="$(maxlen "$name")" -timeout=30 -rss_limit_mb=2048 \
            -print_final_stats=1 -artifact_prefix="$dir/crashes/$name-" "$work" >>"$log" 2>&1; then
        echo "fuzz $name: FAILED (log: $log; input: $(ls -t "$dir/crashes/$name-"* 2>/dev/null | head -n1))"
        grep -a -m1 -A12 "FUZZ CHECK FAILED\|ERROR: AddressSanitizer\|runtime error\|ERROR: libFuzzer\|ERROR: LeakSanitizer" "$log"
        return 1
    fi
    awk -v n="$name" -v s="$secs" '
        /stat::number_of_executed_units/ {runs = $2}
        /stat::average_exec_per_sec/ {eps = $2}
        /stat::new_units_added/ {added = $2}
        /stat::peak_rss_mb/ {rss = $2}
        END {printf "fuzz %-9s ok: %d runs in %d s (%d exec/s), %d new corpus entries, peak RSS %d MB\n", n, runs, s, eps, added, rss}' "$log"
}

failed=""
if [ "$mode" = parallel ]; then
    pids=()
    for n in "$@"; do run_one "$n" & pids+=($!); done
    i=0
    for n in "$@"; do wait "${pids[$i]}" || failed="$failed $n"; i=$((i + 1)); done
else
    for n in "$@"; do run_one "$n" || failed="$failed $n"; done
fi
if [ -n "$failed" ]; then echo "fuzz: FAILED:$failed"; exit 1; fi
echo "fuzz: all passed ($*; $secs s each, $mode)"

#!/usr/bin/env bash
# The machine code of sdpa.h's kernels, for people who study it and for CI.
#
#   tests/asm.sh dump  OUTDIR   per kernel: annotated disassembly (source
#                               interleaved) as OUTDIR/<kernel>.s, plus the
#                               compilers' vectorisation reports
#   tests/asm.sh check OUTDIR   each SIMD kernel must contain the instructions
#                               it promises (ymm FMAs, F16C converts, masked
#                               tails; NEON: fmla, fcvtl in the inner loops),
#                               read from the object code; exit 1 if not
#
# CC (default gcc) builds the object with the project's default flags: no -m
# options, so the SIMD kernels get their ISA from target attributes alone.
set -euo pipefail

mode=${1:-}
out=${2:-build/asm}
CC=${CC:-gcc}
OBJDUMP=${OBJDUMP:-objdump}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$out"
src="$out/kernels.c"
obj="$out/kernels.o"

# One translation unit holding the implementation; its kernels are static but
# stay in the object (the dispatch table takes their addresses).
printf '#define SDPA_IMPLEMENTATION\n#include "sdpa.h"\n' > "$src"
"$CC" -std=c99 -O3 -g -I"$here/include" -c "$src" -o "$obj"

# The disassembly of one function, source interleaved; empty if absent.
"$OBJDUMP" -d -S -l --no-show-raw-insn "$obj" > "$out/kernels.dis"
fn_body() {
    awk -v f="<$1>:" '$2 == f { p = 1; next } p && /^[0-9a-f]+ <.*>:$/ { exit } p' "$out/kernels.dis"
}

# kernels and the path they belong to; scalar ones show what the compiler did
kernels="sdpa__gemm_scalar sdpa__exp_row sdpa__row_max sdpa__load_row
sdpa__gemm_avx2 sdpa__exp_row_avx2 sdpa__row_max_avx2 sdpa__load_row_avx2 sdpa__load_col_avx2"
kernels="$kernels sdpa__gemm_neon sdpa__exp_row_neon sdpa__row_max_neon sdpa__load_row_neon sdpa__load_col_neon"

# hot_loop KERNEL REGEX: the number of instructions matching REGEX in the
# kernel's innermost loop (a backward branch with no other inside it) that
# holds the most of them; 0 when it has no loop.
hot_loop() {
    fn_body "$1" | awk -F '\t' -v re="$2" '
        function hex(s,   i, v) { v = 0; for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1; return v }
        $0 ~ /^ *[0-9a-f]+:\t/ {
            n++; a = $1; gsub(/[ :]/, "", a); addr[n] = hex(a); ins[n] = $2 " " $3
            if (match($3, /[0-9a-f]+ </)) {
                t = hex(substr($3, RSTART, RLENGTH - 2))
                if (t < addr[n]) { nl++; lo[nl] = t; hi[nl] = addr[n] }
            }
        }
        END {
            best = 0
            for (l = 1; l <= nl; l++) {
                inner = 1
                for (m = 1; m <= nl; m++)
                    if (m != l && lo[m] >= lo[l] && hi[m] <= hi[l] && (lo[m] != lo[l] || hi[m] != hi[l])) inner = 0
                if (!inner) continue
                c = 0
                for (i = 1; i <= n; i++) if (addr[i] >= lo[l] && addr[i] <= hi[l] && ins[i] ~ re) c++
                if (c > best) best = c
            }
            print best
        }'
}

case "$mode" in
dump)
    for k in $kernels; do
        body=$(fn_body "$k")
        [ -n "$body" ] || continue
        printf '%s\n' "$body" > "$out/$k.s"
        echo "$out/$k.s: $(grep -cE '^\s+[0-9a-f]+:' "$out/$k.s") instructions"
    done
    "$CC" -std=c99 -O3 -I"$here/include" -c "$src" -o /dev/null \
        -fopt-info-vec-all="$out/vec-report-gcc.txt" 2>/dev/null || true
    [ -s "$out/vec-report-gcc.txt" ] && echo "$out/vec-report-gcc.txt: gcc -fopt-info-vec-all"
    if command -v clang >/dev/null 2>&1; then
        clang -std=c99 -O3 -I"$here/include" -c "$src" -o /dev/null \
            -Rpass=loop-vectorize -Rpass-missed=loop-vectorize -Rpass-analysis=loop-vectorize \
            2> "$out/vec-report-clang.txt" || true
        echo "$out/vec-report-clang.txt: clang -Rpass=loop-vectorize -Rpass-missed=loop-vectorize"
    fi
    ;;
check)
    fail=0
    # need KERNEL MIN REGEX WHAT: at least MIN matching instructions in KERNEL
    need() {
        local body n
        body=$(fn_body "$1")
        if [ -z "$body" ]; then echo "check-asm: $1: not in the object"; fail=1; return; fi
        n=$(grep -cE "$3" <<< "$body" || true)
        if [ "$n" -ge "$2" ]; then
            echo "check-asm: $1: $n $4 (>= $2): ok"
        else
            echo "check-asm: $1: $n $4, want >= $2: FAIL"; fail=1
        fi
    }
    # need_loop KERNEL MIN REGEX WHAT: the same, counted in its hottest inner loop
    need_loop() {
        local n
        if [ -z "$(fn_body "$1")" ]; then echo "check-asm: $1: not in the object"; fail=1; return; fi
        n=$(hot_loop "$1" "$3")
        if [ "$n" -ge "$2" ]; then
            echo "check-asm: $1: $n $4 in its inner loop (>= $2): ok"
        else
            echo "check-asm: $1: $n $4 in its inner loop, want >= $2: FAIL"; fail=1
        fi
    }
    arch=$("$CC" -dumpmachine)
    case "$arch" in
    x86_64*|i?86*)
        # the 4x16 micro-kernel: 8 ymm FMAs per k step, 4 broadcasts
        need sdpa__gemm_avx2 8 'vfmadd[0-9]+ps\s+.*%ymm' "ymm FMAs"
        need sdpa__gemm_avx2 4 'vbroadcastss' "broadcasts"
        # exp: the polynomial as ymm FMAs, tails through masked moves
        need sdpa__exp_row_avx2 7 'vfn?madd[0-9]+ps\s+.*%ymm' "ymm FMAs"
        need sdpa__exp_row_avx2 1 'vmaskmovps' "masked loads/stores"
        need sdpa__row_max_avx2 1 'vmaxps\s+.*%ymm' "ymm max"
        need sdpa__load_row_avx2 1 'vcvtph2ps\s+.*%ymm' "F16C converts"
        need sdpa__load_col_avx2 1 'vcvtph2ps\s+.*%ymm' "F16C converts"
        # what the auto-vectoriser made of the portable micro-kernel
        need sdpa__gemm_scalar 4 '(mul|add)ps\s' "packed SSE multiplies/adds"
        ;;
    aarch64*)
        # in the kernels' innermost loops, not merely somewhere in them:
        # the 4x16 micro-kernel, k unrolled by 4: 64 fmla by lane per loop
        need_loop sdpa__gemm_neon 64 '^fmla v[0-9]+\.4s, v[0-9]+\.4s, v[0-9]+\.s\[' "fmla by lane"
        # exp on two vectors a step: 2 x (1 + 2 + 7) fused multiply-adds
        need_loop sdpa__exp_row_neon 20 '^fml[as] v[0-9]+\.4s' "vector fmla/fmls"
        need_loop sdpa__row_max_neon 2 '^fmaxnm v[0-9]+\.4s' "vector fmaxnm"
        need_loop sdpa__load_row_neon 2 '^fcvtl2? v[0-9]+\.4s' "F16 widenings (fcvtl)"
        need_loop sdpa__load_row_neon 2 '^(shll2?|ushll2?) v[0-9]+\.4s' "BF16 widenings (shll)"
        need_loop sdpa__load_col_neon 2 '^fcvtl2? v[0-9]+\.4s' "F16 widenings (fcvtl)"
        ;;
    *)
        echo "check-asm: $arch has no SIMD path yet; nothing to check"
        ;;
    esac
    exit "$fail"
    ;;
*)
    echo "usage: $0 dump|check [OUTDIR]" >&2
    exit 2
    ;;
esac

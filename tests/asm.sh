#!/usr/bin/env bash
# The machine code of sdpa.h's kernels, for people who study it and for CI.
#
#   tests/asm.sh dump  OUTDIR   per kernel: annotated disassembly (source
#                               interleaved) as OUTDIR/<kernel>.s, plus the
#                               compilers' vectorisation reports
#   tests/asm.sh check OUTDIR   each SIMD kernel must contain the instructions
#                               it promises (ymm FMAs, F16C converts, masked
#                               tails), read from the object code; exit 1 if not
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
sdpa__gemm_avx2 sdpa__exp_row_avx2 sdpa__row_max_avx2 sdpa__load_row_avx2 sdpa__load_col_avx2
sdpa__gemm_avx512 sdpa__exp_row_avx512 sdpa__row_max_avx512 sdpa__load_row_avx512 sdpa__load_col_avx512
sdpa__bgemm_avx512 sdpa__bgemm_amx sdpa__split_row_bf16 sdpa__pack_vpair_bf16"

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
        # AVX-512: 8 x 32 blocks, 16 zmm FMAs per k step, 8 broadcasts of A
        need sdpa__gemm_avx512 16 'vfmadd[0-9]+ps\s+.*%zmm' "zmm FMAs"
        need sdpa__gemm_avx512 8 'vbroadcastss|\{1to16\}' "broadcasts of A (vbroadcastss or {1to16} operands)"
        need sdpa__exp_row_avx512 7 'vfn?madd[0-9]+ps\s+.*%zmm' "zmm FMAs"
        need sdpa__exp_row_avx512 1 'vscalefps' "vscalefps (2^n)"
        need sdpa__exp_row_avx512 2 '\{%k[1-7]\}' "opmasked instructions (tails)"
        need sdpa__row_max_avx512 1 'vmaxps\s+.*%zmm' "zmm max"
        need sdpa__load_row_avx512 1 'vcvtph2ps\s+.*%zmm' "zmm F16 converts"
        # bf16 products: vdpbf16ps blocks and AMX tiles
        need sdpa__bgemm_avx512 16 'vdpbf16ps\s+.*%zmm' "zmm vdpbf16ps"
        need sdpa__bgemm_amx 4 'tdpbf16ps' "AMX tdpbf16ps"
        need sdpa__bgemm_amx 4 'tileloadd' "AMX tile loads"
        need sdpa__bgemm_amx 1 'ldtilecfg' "tile configuration"
        # what the auto-vectoriser made of the portable micro-kernel
        need sdpa__gemm_scalar 4 '(mul|add)ps\s' "packed SSE multiplies/adds"
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

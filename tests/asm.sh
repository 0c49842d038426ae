#!/usr/bin/env bash
# The machine code of sdpa.h's kernels, for people who study it and for CI.
#
#   tests/asm.sh dump  OUTDIR   per kernel and per path: annotated disassembly
#                               (source interleaved) as OUTDIR/<kernel>.s, the
#                               vectoriser's remarks on its loops as
#                               OUTDIR/<kernel>.vec-gcc.txt (and .vec-clang.txt),
#                               the same from clang under OUTDIR/clang/, the whole
#                               reports, and OUTDIR/summary.txt (instruction mix
#                               per kernel and compiler)
#   tests/asm.sh check OUTDIR   each SIMD kernel must contain the instructions
#                               it promises (ymm FMAs, F16C converts, masked
#                               tails; NEON: fmla, fcvtl in the inner loops),
#                               read from the object code; exit 1 if not
#
# Three versions of each core loop are dumped: plain_* (bench/plain_kernels.h,
# the textbook loops), sdpa__* (the portable C written for the
# auto-vectoriser) and sdpa__*_avx2 (intrinsics).
#
# CC (default gcc) builds the objects with the project's default flags: no -m
# options, so the SIMD kernels get their ISA from target attributes alone.
# -gdwarf-4: objdump 2.40 files part of gcc 12's DWARF 5 line table under the
# .c file instead of sdpa.h, and then interleaves no source there.
set -euo pipefail

mode=${1:-}
out=${2:-build/asm}
CC=${CC:-gcc}
OBJDUMP=${OBJDUMP:-objdump}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$out"
src="$out/kernels.c"
psrc="$out/plain.c"

# One translation unit holding the implementation; its kernels are static but
# stay in the object (the dispatch table takes their addresses). The plain
# versions get a unit of their own, so that they cannot change what the
# compiler does with the library's (inlining budgets are per unit); an
# external table of their addresses keeps them.
printf '#define SDPA_IMPLEMENTATION\n#include "sdpa.h"\n' > "$src"
cat > "$psrc" <<'EOC'
#define SDPA_IMPLEMENTATION
#include "sdpa.h"
#include "plain_kernels.h"
void (*const plain_kernels_keep[])(void) = {
    (void (*)(void))plain_gemm, (void (*)(void))plain_row_max,
    (void (*)(void))plain_exp_row, (void (*)(void))plain_load_row};
EOC
FLAGS=(-std=c99 -O3 -I"$here/include" -I"$here/bench")

# build DIR COMPILER: DIR/kernels.o, DIR/plain.o and their disassembly
build() {
    mkdir -p "$1"
    "$2" "${FLAGS[@]}" -g -gdwarf-4 -c "$src" -o "$1/kernels.o"
    "$2" "${FLAGS[@]}" -g -gdwarf-4 -c "$psrc" -o "$1/plain.o"
    "$OBJDUMP" -d -r -S -l --no-show-raw-insn "$1/kernels.o" "$1/plain.o" > "$1/kernels.dis"
}

# The disassembly of one function from DIR/kernels.dis, source interleaved;
# empty if absent.
fn_body_in() {
    awk -v f="<$2>:" '$2 == f { p = 1; next } p && /^[0-9a-f]+ <.*>:$/ { exit } p' "$1/kernels.dis"
}
fn_body() { fn_body_in "$out" "$1"; }

# kernels, the source that defines them and the path they belong to; the
# plain and portable ones show what the compiler did on its own
plain_kernels="plain_gemm plain_exp_row plain_row_max plain_load_row"
scalar_kernels="sdpa__gemm_scalar sdpa__exp_row sdpa__row_max sdpa__load_row"
simd_kernels="sdpa__gemm_avx2 sdpa__exp_row_avx2 sdpa__row_max_avx2 sdpa__load_row_avx2 sdpa__load_kt_avx2 sdpa__pack_k_avx2"
# the AVX-512 and NEON versions, dumped when the build has them (absent: skipped)
other_kernels="sdpa__gemm_avx512 sdpa__exp_row_avx512 sdpa__row_max_avx512 sdpa__load_row_avx512
sdpa__softmax_block_avx512 sdpa__bgemm_amx sdpa__tiles_amx sdpa__softmax_block_amx sdpa__split_row_bf16 sdpa__pack_vpair_bf16
sdpa__gemm_neon sdpa__exp_row_neon sdpa__row_max_neon sdpa__load_row_neon sdpa__load_kt_neon
sdpa__qk_i8_scalar sdpa__qk_i8_avx2 sdpa__qk_i8_vnni sdpa__qk_i8_amx sdpa__qk_i8_neon sdpa__qk_i8_sdot
sdpa__kdot16_avx2 sdpa__kdot16_vnni sdpa__vacc8_avx2 sdpa__vacc8_vnni"
kernels="$plain_kernels $scalar_kernels $simd_kernels $other_kernels"
src_of() { case "$1" in plain_*) echo "$here/bench/plain_kernels.h" ;; *) echo "$here/include/sdpa.h" ;; esac; }

# "FIRST LAST": the lines of function $1's definition in its source (from the
# line that names it to the closing brace in column 0)
fn_lines() {
    awk -v f="$1" '
        $0 ~ "^[A-Za-z_].*[ *]" f "\\(" { cand = NR }
        cand && !start && /;[ \t]*$/ { cand = 0 }    # a prototype, not the definition
        cand && /^\{/ && !start { start = cand }
        start && /^\}/ { print start, NR; exit }' "$(src_of "$1")"
}

# The remarks of report $2 on lines of kernel $1, in line order, each once.
# gcc: "file:line:col: optimized|missed: ..."; clang: "file:line:col: remark: ...".
remarks() {
    local first last file
    read -r first last <<< "$(fn_lines "$1")"
    file=$(src_of "$1")
    [ -n "$first" ] || return 0
    # clang names the file as the include path found it, sometimes relative
    grep -E "(^|/)${file#"$here"/}:" "$2" | grep -E ': (optimized|missed|remark):|vectorized [0-9]+ loops' \
        | awk -F: -v a="$first" -v b="$last" '$2 >= a && $2 <= b' \
        | sort -t: -k2,2n -k3,3n -s | awk '!seen[$0]++' | sed "s|^$here/||" || true
}

# One line of the instruction mix of a disassembled body: instructions, float
# arithmetic on 128-bit vectors (x86 xmm *ps, AArch64 .4s), on 256-bit ones
# (ymm), scalar float arithmetic (x86 *ss, AArch64 f* on s registers), and
# calls, named by their relocations (the object is not linked yet). Moves,
# loads and stores are not arithmetic and not counted.
mix() {
    awk -F'\t' -v arm="$1" '
        /^\t+[0-9a-f]+: R_/ {
            if (wantcallee) { t = $NF; sub(/[-+].*/, "", t); callee[t] = 1 }
            wantcallee = 0; next
        }
        /^ *[0-9a-f]+:\t/ {
            l = $0; sub(/^ *[0-9a-f]+:\t/, "", l); gsub(/\t/, " ", l)   # AArch64: a tab before the operands
            n++; split(l, w, " "); op = w[1]; args = substr(l, length(op) + 1); wantcallee = 0
            if (op ~ /^(call|bl)$/ || op ~ /^call/) { calls++; wantcallee = 1 }
            if (arm) {
                if (op ~ /^f/ && op !~ /^fmov/ && args ~ /v[0-9]+\.4s/) v128++
                else if (op ~ /^f/ && op !~ /^fmov/ && args ~ /(^|[ ,])s[0-9]+/) ss++
            } else {
                if (op ~ /ps$/ && op !~ /^v?mov/) { if (args ~ /%ymm/) v256++; else if (args ~ /%xmm/) v128++ }
                if (op ~ /ss$/ && op !~ /^v?mov/ && op !~ /^v?broadcast/) ss++
            }
        }
        END {
            c = ""; for (t in callee) c = c (c ? "," : "") t
            printf "%5d insns  %4d 128-bit  %4d 256-bit  %4d scalar  %3d calls%s\n",
                   n, v128, v256, ss, calls, calls ? " (" c ")" : ""
        }'
}

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
    build "$out" "$CC"
    case "$("$CC" -dumpmachine)" in aarch64*|arm64*) arm=1 ;; *) arm=0 ;; esac
    # the whole reports (the plain unit's appended); gcc appends to an
    # existing file, so start from none
    rm -f "$out/vec-report-gcc.txt" "$out/vec-report-gcc-plain.txt"
    "$CC" "${FLAGS[@]}" -c "$src" -o /dev/null -fopt-info-vec-all="$out/vec-report-gcc.txt" 2>/dev/null || true
    "$CC" "${FLAGS[@]}" -c "$psrc" -o /dev/null -fopt-info-vec-all="$out/vec-report-gcc-plain.txt" 2>/dev/null || true
    cat "$out/vec-report-gcc-plain.txt" >> "$out/vec-report-gcc.txt" 2>/dev/null || true
    rm -f "$out/vec-report-gcc-plain.txt"
    [ -s "$out/vec-report-gcc.txt" ] && echo "$out/vec-report-gcc.txt: $CC -fopt-info-vec-all"
    have_clang=0
    # clang beside it, when installed and building for the same architecture
    if command -v clang >/dev/null 2>&1 &&
        [ "$(clang -dumpmachine | cut -d- -f1)" = "$("$CC" -dumpmachine | cut -d- -f1)" ]; then
        have_clang=1
        build "$out/clang" clang
        : > "$out/vec-report-clang.txt"
        for f in "$src" "$psrc"; do
            clang "${FLAGS[@]}" -c "$f" -o /dev/null \
                -Rpass='loop-vectorize|slp-vectorizer' -Rpass-missed=loop-vectorize \
                -Rpass-analysis=loop-vectorize \
                2>> "$out/vec-report-clang.txt" || true
        done
        echo "$out/vec-report-clang.txt: clang -Rpass='loop-vectorize|slp-vectorizer' -Rpass-missed=loop-vectorize"
    fi
    {
        echo "# instruction mix per kernel, -O3 and no -m flags: instructions in the body,"
        echo "# float arithmetic on 128-bit and 256-bit vectors and on scalars, calls"
        for k in $kernels; do
            body=$(fn_body "$k")
            [ -n "$body" ] || continue
            printf '%s\n' "$body" > "$out/$k.s"
            remarks "$k" "$out/vec-report-gcc.txt" > "$out/$k.vec-gcc.txt"
            printf '%-22s %-6s %s\n' "$k" "$CC" "$(printf '%s\n' "$body" | mix "$arm")"
            if [ "$have_clang" = 1 ]; then
                body=$(fn_body_in "$out/clang" "$k")
                if [ -n "$body" ]; then
                    printf '%s\n' "$body" > "$out/clang/$k.s"
                    printf '%-22s %-6s %s\n' "" clang "$(printf '%s\n' "$body" | mix "$arm")"
                else
                    printf '%-22s %-6s %s\n' "" clang "inlined everywhere: no body of its own"
                fi
                remarks "$k" "$out/vec-report-clang.txt" > "$out/$k.vec-clang.txt"
            fi
        done
    } > "$out/summary.txt"
    for k in $kernels; do
        [ -f "$out/$k.s" ] || continue
        echo "$out/$k.s: $(grep -cE '^ +[0-9a-f]+:' "$out/$k.s") instructions; remarks: $k.vec-gcc.txt$([ "$have_clang" = 1 ] && echo ", $k.vec-clang.txt, clang/$k.s")"
    done
    echo "$out/summary.txt: instruction mix per kernel and compiler"
    cat "$out/summary.txt"
    ;;
check)
    build "$out" "$CC"
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
        # the K block transposed 8 x 8 in registers (F32 path) and bf16 pairs packed alike
        shuf='v(unpck[lh]p[sd]|shufp[sd]|perm2f128|insertf128|permpd|permps|blendps|movlhps|movhlps)\s+.*%ymm'
        need sdpa__load_kt_avx2 16 "$shuf" "ymm shuffles (8 x 8 transpose)"
        need sdpa__load_kt_avx2 1 'vcvtph2ps\s+.*%ymm' "F16C converts"
        need sdpa__pack_k_avx2 16 "$shuf" "ymm shuffles (8 x 8 transpose)"
        # AVX-512: 8 x 32 blocks, 16 zmm FMAs per k step, 8 broadcasts of A
        need sdpa__gemm_avx512 16 'vfmadd[0-9]+ps\s+.*%zmm' "zmm FMAs"
        need sdpa__gemm_avx512 8 'vbroadcastss|\{1to16\}' "broadcasts of A (vbroadcastss or {1to16} operands)"
        need sdpa__exp_row_avx512 7 'vfn?madd[0-9]+ps\s+.*%zmm' "zmm FMAs"
        need sdpa__exp_row_avx512 1 'vscalefps' "vscalefps (2^n)"
        need sdpa__exp_row_avx512 2 '\{%k[1-7]\}' "opmasked instructions (tails)"
        need sdpa__row_max_avx512 1 'vmaxps\s+.*%zmm' "zmm max"
        need sdpa__load_row_avx512 1 'vcvtph2ps\s+.*%zmm' "zmm F16 converts"
        # the softmax of a key block: the exp's polynomial, 2^n by vscalefps, opmasked tails
        need sdpa__softmax_block_avx512 7 'vfn?madd[0-9]+ps\s+.*%zmm' "zmm FMAs"
        need sdpa__softmax_block_avx512 1 'vscalefps' "vscalefps (2^n)"
        need sdpa__softmax_block_avx512 2 '\{%k[1-7]\}' "opmasked instructions (tails)"
        # bf16 products on AMX tiles (P's hi and lo parts: 4 + 4 per step)
        need sdpa__bgemm_amx 8 'tdpbf16ps' "AMX tdpbf16ps"
        need sdpa__bgemm_amx 4 'tileloadd' "AMX tile loads"
        need sdpa__tiles_amx 1 'ldtilecfg' "tile configuration"
        need sdpa__tiles_amx 1 'tilerelease' "tile release"
        # int8 mode's single-bf16 P.V on the avx512 path (AMD): 8 x 32 blocks
        # of O, 16 vdpbf16ps per key pair reading P's pairs as {1to16}
        # broadcasts; V's pairs packed with vcvtneps2bf16; P from the softmax
        need sdpa__bgemm_avx512bf 16 'vdpbf16ps\s+.*\{1to16\}.*%zmm' "zmm vdpbf16ps on broadcast pairs of P"
        need sdpa__vpack_hi_avx512bf 2 'vcvtneps2bf16' "bf16 converts (V's pairs)"
        need sdpa__softmax_block_avx512bf 1 'vcvtneps2bf16' "bf16 converts (P)"
        # its softmax: the same exp, and P split into bf16 hi and lo parts
        need sdpa__softmax_block_amx 7 'vfn?madd[0-9]+ps\s+.*%zmm' "zmm FMAs"
        need sdpa__softmax_block_amx 2 'vcvtneps2bf16' "bf16 converts (P's hi and lo)"
        # the fused softmax steps are held to the portable step bit for bit:
        # built in GNU mode (gcc's default, -ffp-contract=fast, which fuses
        # a vector product into a following add), they must keep the fused
        # multiply-adds they have in ISO mode and gain none
        if ! "$CC" --version | grep -q clang; then
            mkdir -p "$out/gnu"
            "$CC" -std=gnu11 -O3 -I"$here/include" -c "$src" -o "$out/gnu/kernels.o"
            "$OBJDUMP" -d --no-show-raw-insn "$out/gnu/kernels.o" > "$out/gnu/kernels.dis"
            for k in sdpa__softmax_block_avx512 sdpa__softmax_block_avx512bf sdpa__softmax_block_amx; do
                iso=$(fn_body "$k" | grep -cE '\svfn?m(add|sub)[0-9]+[ps]s\s' || true)
                gnu=$(fn_body_in "$out/gnu" "$k" | grep -cE '\svfn?m(add|sub)[0-9]+[ps]s\s' || true)
                if [ "$iso" = "$gnu" ]; then
                    echo "check-asm: $k: $gnu fused multiply-adds built in GNU mode, as in ISO mode: ok"
                else
                    echo "check-asm: $k: $gnu fused multiply-adds built in GNU mode, $iso in ISO mode: FAIL"; fail=1
                fi
            done
        fi
        # int8 Q.K^T: per quad step and 8 keys of a row, vpsignb, vpmaddubsw
        # (never saturating: see the kernel), vpmaddwd by ones; 4 x 16 block
        need sdpa__qk_i8_avx2 8 'vpsignb\s+.*%ymm' "vpsignb"
        need sdpa__qk_i8_avx2 8 'vpmaddubsw\s+.*%ymm' "vpmaddubsw"
        need sdpa__qk_i8_avx2 8 'vpmaddwd\s+.*%ymm' "vpmaddwd"
        # AVX512-VNNI: 4 x 32 blocks, 8 vpdpbusd per quad step
        need sdpa__qk_i8_vnni 8 'vpdpbusd\s+.*%zmm' "zmm vpdpbusd"
        # AMX-INT8: a 2 x 2 block of C tiles, 4 tdpbssd per 64-dim step
        need sdpa__qk_i8_amx 4 'tdpbssd' "AMX tdpbssd"
        need sdpa__qk_i8_amx 4 'tileloadd' "AMX tile loads"
        # KV cache, I8 storage: int16 queries x int8 keys (4 x 2 blocks: 8
        # vpmaddwd per step), and P V in integer arithmetic: key pairs
        # interleaved (vpunpck[lh]wd), 8 vpmaddwd / vpdpwssd per pair
        need sdpa__kdot16_avx2 8 'vpmaddwd\s+.*%ymm' "ymm vpmaddwd"
        need sdpa__kdot16_vnni 8 'vpdpwssd\s+.*%zmm' "zmm vpdpwssd"
        need sdpa__vacc8_avx2 8 'vpmaddwd\s+.*%ymm' "ymm vpmaddwd"
        need sdpa__vacc8_avx2 4 'vpunpck[lh]wd\s+.*%ymm' "ymm key-pair interleaves"
        need sdpa__vacc8_vnni 8 'vpdpwssd\s+.*%zmm' "zmm vpdpwssd"
        # what the auto-vectoriser made of the portable kernels (SSE2 only:
        # no -m flags): the micro-kernel; the exp loop, which vectorises only
        # while sdpa__expf stays branch-free (its degree-7 polynomial alone is
        # 14 multiplies and adds per vector); the F32 and BF16 row loads
        need sdpa__gemm_scalar 4 '(mul|add)ps\s' "packed SSE multiplies/adds"
        need sdpa__exp_row 16 '(mul|add)ps\s' "packed SSE multiplies/adds"
        need sdpa__load_row 2 'mulps\s' "packed SSE multiplies"
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
        need_loop sdpa__load_kt_neon 2 '^fcvtl2? v[0-9]+\.4s' "F16 widenings (fcvtl)"
        # int8 Q.K^T, 4 x 16 block: 4 quad steps x 16 sdot by element per loop
        # (gcc builds; clang builds have the kernel only with +dotprod)
        if [ -n "$(fn_body sdpa__qk_i8_sdot)" ] || ! "$CC" --version | grep -q clang; then
            need_loop sdpa__qk_i8_sdot 64 '^sdot v[0-9]+\.4s, v[0-9]+\.16b, v[0-9]+\.4b\[' "sdot by element"
        fi
        # without dotprod: 4 rows x 8 keys, smull/smull2 and sadalp per quad step
        need_loop sdpa__qk_i8_neon 16 '^smull2? v[0-9]+\.8h' "smull/smull2"
        need_loop sdpa__qk_i8_neon 16 '^sadalp v[0-9]+\.4s' "sadalp"
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

/* bench/plain_kernels.h - the core loops as a newcomer would first write them.
 *
 * The first of three versions of each kernel that `make bench-kernels` times:
 *   plain_*        here: textbook loops, no restrict, branches, libm's expf
 *   sdpa__*        sdpa.h's portable C, written for the auto-vectoriser
 *                  (restrict, fixed 16-lane trip counts, branch-free exp)
 *   sdpa__*_avx2   sdpa.h's intrinsics (and _avx512, _neon where built)
 * Each has the signature of the library kernel it stands beside, so the bench
 * treats all versions alike. Not part of the library and never called by it:
 * this is the baseline the other two are measured against, and what
 * `make asm` shows the compilers failing to vectorise (README: Reading the
 * assembly). Do not "fix" these loops; their faults are the point.
 *
 * Include after sdpa.h's implementation (it uses sdpa_f16_to_f32 and friends).
 */
#ifndef SDPA_BENCH_PLAIN_KERNELS_H
#define SDPA_BENCH_PLAIN_KERNELS_H

#include <math.h>
#include <stdint.h>

/* C[M x N] = (accumulate ? C : 0) + A[M x K] B[K x N], the i-j-k triple loop:
 * each C element is a dot product summed in place in memory. C might alias A
 * or B, so the compiler must store C[i][j] at every step; the k loop is a
 * float sum it may not reorder, with B read down a column (stride ldb): not
 * vectorised by gcc or clang, even with -ffast-math. 2 M N K flops. */
static void plain_gemm(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                       const float *B, int64_t ldb, float *C, int64_t ldc, int accumulate)
{
    int64_t i, j, k;
    for (i = 0; i < M; i++)
        for (j = 0; j < N; j++) {
            if (!accumulate) C[i * ldc + j] = 0.0f;
            for (k = 0; k < K; k++) C[i * ldc + j] += A[i * lda + k] * B[k * ldb + j];
        }
}

/* Maximum of s[0..n) with a branch per element; NaN entries are skipped, as
 * in sdpa__row_max. Compilers make the branch a maxss but keep the chain
 * serial: in another order the compares could return -0.0 for +0.0 (gcc
 * vectorises it under -fno-signed-zeros -ffinite-math-only). */
static float plain_row_max(const float *s, int64_t n)
{
    float m = -INFINITY;
    int64_t j;
    for (j = 0; j < n; j++)
        if (s[j] > m) m = s[j];
    return m;
}

/* s[j] = exp(s[j] - m), skipping masked (-inf) scores, and returns the sum:
 * libm's expf (an opaque call per element), a branch, and a serial float sum.
 * (With -ffast-math gcc calls glibc's 4-lane _ZGVbN4v_expf instead, and may
 * then assume that no score is -inf.) */
static float plain_exp_row(float *s, int64_t n, float m)
{
    float sum = 0.0f;
    int64_t j;
    for (j = 0; j < n; j++) {
        if (s[j] == -INFINITY) {
            s[j] = 0.0f;
        } else {
            s[j] = expf(s[j] - m);
            sum += s[j];
        }
    }
    return sum;
}

/* dst[0..n) = mul * src[0..n) widened from dtype t: the dtype decided per
 * element, the library's scalar converters, dst and src free to overlap. */
static void plain_load_row(float *dst, const char *src, sdpa_dtype t, int64_t n, float mul)
{
    int64_t i;
    for (i = 0; i < n; i++) {
        float x;
        switch (t) {
        case SDPA_F16: x = sdpa_f16_to_f32(((const uint16_t *)(const void *)src)[i]); break;
        case SDPA_BF16: x = sdpa_bf16_to_f32(((const uint16_t *)(const void *)src)[i]); break;
        default: x = ((const float *)(const void *)src)[i]; break;
        }
        dst[i] = x * mul;
    }
}

#endif /* SDPA_BENCH_PLAIN_KERNELS_H */

/* bench/sleef_copy.h - the entry points of bench/sleef_copy.c, the copy of
 * sdpa.h built with SDPA_USE_SLEEF. Include after sdpa.h's implementation:
 * the SDPA__HAVE_* macros of this build say which kernels exist (both
 * copies are compiled with the same compiler and flags). */
#ifndef BENCH_SLEEF_COPY_H
#define BENCH_SLEEF_COPY_H

int bsl_attention(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v, const sdpa_tensor *out,
                  const sdpa_params *params);
#ifdef SDPA__HAVE_AVX2
float bsl_exp_row_avx2(float *s, int64_t n, float m);
#endif
#ifdef SDPA__HAVE_AVX512
float bsl_exp_row_avx512(float *s, int64_t n, float m);
#endif
#ifdef SDPA__HAVE_NEON
float bsl_exp_row_neon(float *s, int64_t n, float m);
#endif

#endif

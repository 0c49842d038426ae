/* bench/sleef_copy.c - a second copy of sdpa.h, built with SDPA_USE_SLEEF.
 *
 * `make bench SLEEF=1` and `make bench-kernels SLEEF=1` link this beside the
 * bench's own copy (built-in exp), so that one process times both exps side
 * by side, taking turns, and drift on a shared machine hits them alike.
 * SDPA_STATIC keeps this copy's names to itself; the bsl_ functions below
 * are its entry points (bench/sleef_copy.h). Link with -lsleef.
 */
#define SDPA_STATIC
#define SDPA_USE_SLEEF
#define SDPA_IMPLEMENTATION
#include "sdpa.h"
#include "sleef_copy.h"

int bsl_attention(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v, const sdpa_tensor *out,
                  const sdpa_params *params)
{
    return sdpa_attention(q, k, v, out, params);
}

#ifdef SDPA__HAVE_AVX2
float bsl_exp_row_avx2(float *s, int64_t n, float m) { return sdpa__exp_row_avx2(s, n, m); }
#endif
#ifdef SDPA__HAVE_AVX512
float bsl_exp_row_avx512(float *s, int64_t n, float m) { return sdpa__exp_row_avx512(s, n, m); }
#endif
#ifdef SDPA__HAVE_NEON
float bsl_exp_row_neon(float *s, int64_t n, float m) { return sdpa__exp_row_neon(s, n, m); }
#endif

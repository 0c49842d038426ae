/* bench/shim.c - sdpa.h as a shared library for bench/torch_sdpa.py
 * (build/libsdpa_bench.so): the whole library, plus one flat entry point
 * so that the Python driver needs no mirror of sdpa_params (whose layout
 * may grow) in ctypes.
 *
 *   int sdpa_bench_attention(q, k, v, out, dtype, B, Hq, Hkv, Lq, Lk, D,
 *                            causal, threads, path, precision)
 *
 * q, k, v, out contiguous [B, H, L, D] of one dtype (0 F32, 1 F16, 2 BF16);
 * causal: bottom-right aligned (as the bench's problems are); returns the
 * library's code.
 */
#define SDPA_IMPLEMENTATION
#include "sdpa.h"

#if defined(__GNUC__) || defined(__clang__)
__attribute__((visibility("default")))
#endif
int sdpa_bench_attention(void *q, void *k, void *v, void *out, int dtype, int64_t B, int64_t Hq, int64_t Hkv,
                         int64_t Lq, int64_t Lk, int64_t D, int causal, int threads, int path, int precision);

int sdpa_bench_attention(void *q, void *k, void *v, void *out, int dtype, int64_t B, int64_t Hq, int64_t Hkv,
                         int64_t Lq, int64_t Lk, int64_t D, int causal, int threads, int path, int precision)
{
    sdpa_tensor tq = {NULL, SDPA_F32, {0, 0, 0, 0}, {0}}, tk, tv, to;
    sdpa_params p;
    tq.data = q;
    tq.dtype = (sdpa_dtype)dtype;
    tq.shape[0] = B; tq.shape[1] = Hq; tq.shape[2] = Lq; tq.shape[3] = D;
    tk = tq; tk.data = k; tk.shape[1] = Hkv; tk.shape[2] = Lk;
    tv = tk; tv.data = v;
    to = tq; to.data = out;
    memset(&p, 0, sizeof p);
    p.causal = causal ? SDPA_CAUSAL_BOTTOM_RIGHT : SDPA_CAUSAL_NONE;
    p.num_threads = threads;
    p.path = (sdpa_path)path;
    p.precision = precision;
    return sdpa_attention(&tq, &tk, &tv, &to, &p);
}

/* bench/cuda/bench_lib.cu - sdpa_cuda.h as a shared object with flat entry
 * points for bench.py (ctypes): contiguous tensors, plain arguments. */
#define SDPA_CUDA_IMPLEMENTATION
#include "sdpa_cuda.h"
#include <chrono>

extern "C" {

int bench_attention_p(void *q, void *k, void *v, void *o, int dt, long long B, long long Hq, long long Hkv, long long L, long long D,
                      int causal, int kernel, int precision, void *stream)
{
    sdpa_tensor tq = {q, (sdpa_dtype)dt, {B, Hq, L, D}, {0}}, tk = {k, (sdpa_dtype)dt, {B, Hkv, L, D}, {0}},
                tv = {v, (sdpa_dtype)dt, {B, Hkv, L, D}, {0}}, to = {o, (sdpa_dtype)dt, {B, Hq, L, D}, {0}};
    sdpa_params p;
    memset(&p, 0, sizeof p);
    p.causal = causal ? SDPA_CAUSAL_TOP_LEFT : SDPA_CAUSAL_NONE;
    p.precision = precision;
    return sdpa_cuda_attention_kernel(&tq, &tk, &tv, &to, &p, (cudaStream_t)stream, (sdpa_cuda_kernel)kernel);
}

int bench_attention(void *q, void *k, void *v, void *o, int dt, long long B, long long Hq, long long Hkv, long long L, long long D,
                    int causal, int kernel, void *stream)
{
    return bench_attention_p(q, k, v, o, dt, B, Hq, Hkv, L, D, causal, kernel, 0, stream);
}

void *bench_kv_create(int dt, long long nseq, long long H, long long D, long long ps, long long max_pages)
{
    sdpa_kv_cache_config c;
    sdpa_cuda_kv_cache *kc = NULL;
    memset(&c, 0, sizeof c);
    c.num_seqs = nseq; c.kv_heads = H; c.head_dim = D; c.dtype = (sdpa_dtype)dt; c.page_size = ps; c.max_pages = max_pages;
    return sdpa_cuda_kv_cache_create(&c, &kc) == SDPA_OK ? (void *)kc : NULL;
}

int bench_kv_append(void *c, long long seq, void *k, void *v, int dt, long long H, long long n, long long D, void *stream)
{
    sdpa_tensor tk = {k, (sdpa_dtype)dt, {1, H, n, D}, {0}}, tv = {v, (sdpa_dtype)dt, {1, H, n, D}, {0}};
    return sdpa_cuda_kv_cache_append((sdpa_cuda_kv_cache *)c, seq, &tk, &tv, (cudaStream_t)stream);
}

int bench_kv_attention(void *c, void *q, void *o, int dt, long long B, long long Hq, long long D, void *stream)
{
    sdpa_tensor tq = {q, (sdpa_dtype)dt, {B, Hq, 1, D}, {0}}, to = {o, (sdpa_dtype)dt, {B, Hq, 1, D}, {0}};
    return sdpa_cuda_kv_cache_attention((const sdpa_cuda_kv_cache *)c, NULL, &tq, &to, NULL, (cudaStream_t)stream);
}

/* n decode calls back to back on the stream, from a host that has not
 * waited for it: host[0] the host's microseconds per call to enqueue them,
 * host[1] the wall microseconds per call until the stream is done. With the
 * GPU held busy before (bench.py runs a sleep kernel first) host[0] is the
 * library's host cost alone; after a synchronize, host[1] is the larger of
 * that and the GPU's time per call. 0, or the first failing call's code. */
int bench_kv_host(void *c, void *q, void *o, int dt, long long B, long long Hq, long long D, void *stream, int n, double *host)
{
    typedef std::chrono::steady_clock clk;
    int i, rc = 0;
    clk::time_point t0 = clk::now();
    for (i = 0; i < n && !rc; i++) rc = bench_kv_attention(c, q, o, dt, B, Hq, D, stream);
    clk::time_point t1 = clk::now();
    if (cudaStreamSynchronize((cudaStream_t)stream) != cudaSuccess && !rc) rc = -1;
    clk::time_point t2 = clk::now();
    host[0] = std::chrono::duration<double, std::micro>(t1 - t0).count() / n;
    host[1] = std::chrono::duration<double, std::micro>(t2 - t0).count() / n;
    return rc;
}

void bench_kv_destroy(void *c) { sdpa_cuda_kv_cache_destroy((sdpa_cuda_kv_cache *)c); }
}

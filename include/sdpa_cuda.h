/* sdpa_cuda.h - sdpa.h's attention as CUDA kernels, callable from C.     v0.1.0
 *
 * WHAT IT DOES
 *   The same function as sdpa.h's sdpa_attention (PyTorch's
 *   F.scaled_dot_product_attention semantics, GQA, masks, both causal
 *   alignments, sliding window, softcap, ALiBi, LSE, variable lengths) on an
 *   NVIDIA GPU, on device pointers and a cudaStream_t; plus a paged KV cache
 *   in device memory (F16, BF16, F32 or I8 pages with the CPU cache's page
 *   layout and per-token scales) and flash-decoding over it.
 *
 * HOW TO USE
 *   In exactly one .cu file, compiled by nvcc:
 *       #define SDPA_CUDA_IMPLEMENTATION
 *       #include "sdpa_cuda.h"
 *   Everywhere else (C or C++) just #include "sdpa_cuda.h" (it includes
 *   sdpa.h for the types and <cuda_runtime_api.h>); link the object with
 *   -lcudart. Build for the GPU you run on, e.g.
 *       nvcc -O3 -arch=sm_80 -c sdpa_cuda_impl.cu   (A100; sm_86/89: RTX)
 *       nvcc -O3 -gencode arch=compute_90a,code=sm_90a -c sdpa_cuda_impl.cu
 *                                                  (H100/H200: the wgmma kernel)
 *   The kernels need compute capability 8.0 or newer (mma.sync bf16, cp.async).
 *   A plain -arch=sm_90 build runs on Hopper without the wgmma kernel.
 *
 *       sdpa_tensor q = { dq, SDPA_BF16, {B, Hq, Lq, D}, {0} };  // device pointers
 *       ... k, v, o likewise ...
 *       sdpa_params p = {0};  p.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
 *       int rc = sdpa_cuda_attention(&q, &k, &v, &o, &p, stream);
 *       if (rc) fprintf(stderr, "%s\n", sdpa_cuda_strerror(rc));
 *
 * WHAT DIFFERS FROM sdpa.h
 *   Pointers: q, k, v, out, mask->data and lse are device pointers (or
 *   managed memory). alibi_slopes, seqlens_q, seqlens_kv and cu_seqlens_* are
 *   HOST arrays: they are validated on the host, then copied to the device
 *   on the stream (stream-ordered cudaMallocAsync; freed the same way).
 *   That memory, and int8 mode's scratch below, comes from the device's
 *   default memory pool, which gives its free memory back to the system at
 *   every synchronize unless its release threshold is raised; the next call
 *   then maps memory again (about 50 us on an H100). A caller that
 *   synchronizes between calls can keep it with
 *   cudaDeviceGetDefaultMemPool + cudaMemPoolSetAttribute(pool,
 *   cudaMemPoolAttrReleaseThreshold, &bytes) (the device KV cache keeps a
 *   pool of its own for its decode scratch).
 *   Not supported: score_mod (a host function; SDPA_ERR_PARAM) and SDPA_I8
 *   q or k (pre-quantised input, with params->q_scale / k_scale;
 *   SDPA_ERR_DTYPE). num_threads, parallel_for, allocator, path, tile_q and
 *   tile_k are ignored.
 *   Calls are asynchronous: they return after the launches; errors of
 *   arguments come back before anything is launched, launch errors as
 *   SDPA_ERR_CUDA (the CUDA error string goes to params->errbuf).
 *
 * KERNELS
 *   F16/BF16 q, k, v with head_dim == head_dim_v, head_dim a multiple of 8
 *   and at most 256, and every stride but the last a multiple of 8 (16-byte
 *   rows, 16-byte aligned data), and Lq, Lk < 2^30: the tensor-core kernel
 *   (FlashAttention-2 style: mma.sync m16n8k16 with fp32 accumulators,
 *   ldmatrix, a two-stage cp.async pipeline over K/V tiles; 4 warps of 32
 *   query rows per block for head dims up to 128, 16 rows for 256), compiled
 *   for head_dim 64, 96, 128 and 256, each with and without softcap, ALiBi
 *   and the mask; other head dims take the next of those with zero-filled
 *   columns.
 *   On Hopper (compute capability 9.0, this file built for sm_90a), the
 *   calls of that kernel with scale > 0 and no softcap, ALiBi or mask (and
 *   not int8 mode) take a wgmma kernel instead: two
 *   warpgroups of 64 query rows per block, S = Q K^T and O += P V on
 *   wgmma.mma_async (Q, K, V in 128-byte-swizzled shared memory, P from
 *   registers), the two warpgroups half a key tile apart so that one's
 *   softmax overlaps the other's products; compiled for head_dim 64 (128-key
 *   tiles, two blocks per SM), 128 (128-key tiles) and 256 (64-key tiles).
 *   Both tensor-core kernels store O through shared memory in 16-byte row
 *   chunks when out has q's dtype and 16-byte aligned rows.
 *   The first call on a device reads a 4-byte flag from it (whether the
 *   loaded code has the kernel). SDPA_CUDA_NO_WGMMA leaves it out.
 *   Everything else (F32, head_dim not a multiple of 8, head_dim != head_dim_v,
 *   odd strides): a generic kernel on the CUDA cores in fp32, one warp per
 *   query row, head dims up to 256.
 *   int8 mode (params->precision = SDPA_PRECISION_INT8_QK, sdpa.h's scheme,
 *   SageAttention's idea): a pre-pass on the stream takes the mean key of
 *   each sequence and kv head, quantises every key (minus that mean) and
 *   every query row to int8 with one float scale per row (the attention
 *   scale folded into the query's) into scratch (cudaMallocAsync, about
 *   (B Hq Lq + B Hkv Lk) (head_dim + 12) bytes, freed on the stream); then
 *   the same two kernels run with Q.K^T on int8 operands: the tensor-core
 *   kernel on mma.sync m16n8k32 (s8 x s8 -> s32; P.V stays F16/BF16), the
 *   generic one in exact fp32 sums of integer products. Scores are int32 *
 *   (scale_q scale_k) + scale q.mean (the smoothing's shift), so lse,
 *   softcap, ALiBi and masks see the true score. INT8_QK_NOSMOOTH skips the
 *   mean; INT8_QK_BF16_PV computes as INT8_QK (P.V is already F16/BF16). A NaN/Inf key makes the rows that see it NaN (as in sdpa.h).
 *   Decoding over the cache: with BF16 or I8 pages and a BF16 query, or F16
 *   pages and an F16 query, head_dim == head_dim_v in {64, 128} and two or
 *   more query rows per kv head (GQA, or n > 1 queries), a tensor-core
 *   kernel (the rows as mma.sync's M side, P split into two 16-bit halves
 *   so results stay at fp32 accuracy); otherwise
 *   CUDA-core kernels (one row per kv head: 16-byte loads, in-register dot
 *   products). Split keys meet in a merge kernel, launched on sm_90 builds
 *   with programmatic dependent launch (it starts while the decode blocks
 *   finish and waits for their results); it captures into CUDA graphs.
 *
 * NUMERICS
 *   fp32 accumulation and fp32 softmax statistics everywhere. The tensor-core
 *   kernel rounds P to the input type before P.V (as FlashAttention does;
 *   so SDPA_PRECISION_BF16_PV, accepted, computes as the default);
 *   tests/cuda holds it to relative L2 <= 2e-3 (F16) and 1.6e-2 (BF16)
 *   against a float64 reference on the same inputs (BF16 out measured 3e-3);
 *   the generic kernel's F32 outputs meet sdpa.h's F32 bound. A query row
 *   that sees no key gives out = 0 and lse = -inf. Results are deterministic:
 *   every output is computed by one thread block in a fixed order, and the
 *   decode split count depends on the shapes only, except for the
 *   tensor-core decode (16-bit or I8 pages, several rows per kv head), whose
 *   splits fill the waves of the GPU in use: fixed on one GPU model, its
 *   last bits may differ on another.
 *   int8 mode: relative L2 about 1e-2 against float64 on random bf16 data
 *   (bench/cuda), 2e-3 with outlier channels in K (tests/cuda; 2.7e-2
 *   without the smoothing); the tests hold it to 0.04.
 *   Keys past a sequence's length are never read. A NaN or Inf in a K/V row
 *   inside the sequence that a row cannot see (causal, window, mask) may still
 *   reach that row when both share a tensor-core tile (0 * Inf in P.V);
 *   sdpa.h keeps such rows clean.
 *
 * BUILD CHECKS
 *   With SDPA_CUDA_FEW_KERNELS defined, each kernel template (tensor-core
 *   prefill, the decode kernels) is compiled at one parameter set only and
 *   their launches return SDPA_ERR_CUDA ("operation not supported"): a quick
 *   check that the header compiles for an architecture, for machines without
 *   a GPU (make test-cuda uses it there). Never define it in a real build.
 *
 * LICENCE: MIT, as sdpa.h.
 */
#ifndef SDPA_CUDA_H
#define SDPA_CUDA_H

#include "sdpa.h"
#include <cuda_runtime_api.h>

#ifndef SDPA_CUDA_API
#ifdef SDPA_STATIC
#define SDPA_CUDA_API static
#else
#define SDPA_CUDA_API extern
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* A CUDA call failed (launch, allocation, copy): the CUDA error string is in
 * params->errbuf. Outside sdpa.h's argument (-1..-19) and resource (-20..-22)
 * codes already taken. */
#define SDPA_ERR_CUDA (-29)

/* Which kernel a call takes (for tests and measurements). */
typedef enum sdpa_cuda_kernel {
    SDPA_CUDA_KERNEL_AUTO = 0,
    SDPA_CUDA_KERNEL_GENERIC = 1,  /* fp32 CUDA cores, every supported input */
    SDPA_CUDA_KERNEL_MMA = 2,      /* tensor cores, F16/BF16 (see KERNELS); SDPA_ERR_PATH when not eligible */
    SDPA_CUDA_KERNEL_WGMMA = 3     /* Hopper's wgmma (sm_90a builds on a compute capability 9.0 GPU): MMA's
                                      cases without softcap/ALiBi/mask, scale > 0, not int8 mode; else
                                      SDPA_ERR_PATH */
} sdpa_cuda_kernel;

SDPA_CUDA_API int sdpa_cuda_attention(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v,
                                      const sdpa_tensor *out, const sdpa_params *params, cudaStream_t stream);
SDPA_CUDA_API int sdpa_cuda_attention_kernel(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v,
                                             const sdpa_tensor *out, const sdpa_params *params, cudaStream_t stream,
                                             sdpa_cuda_kernel kernel);
/* The kernel sdpa_cuda_attention would take for these arguments, or a
 * negative error code (the same validation, nothing launched). */
SDPA_CUDA_API int sdpa_cuda_kernel_for(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v,
                                       const sdpa_tensor *out, const sdpa_params *params);

/* sdpa_strerror's words for every code, and SDPA_ERR_CUDA's. */
SDPA_CUDA_API const char *sdpa_cuda_strerror(int code);

/* ---- KV cache in device memory ----
 * The pages have the CPU cache's layout without its host header: K
 * [kv_heads][page_size][head_dim], V [kv_heads][page_size][head_dim_v] and,
 * for I8, the K and V scales [kv_heads][page_size] (fp32, max|x| / 127 per
 * token and head; values rounded to nearest, ties away from zero; a row with
 * NaN or Inf is stored as zeros with a NaN scale), every part 64-byte
 * aligned: appending the same tokens to this cache and to an sdpa.h cache
 * made with kscale = SDPA_KV_KSCALE_TOKEN stores the same bytes. I8 keys are
 * scaled per token here whatever config->kscale says (sdpa.h's default,
 * per channel and page, is not ported yet). config->max_pages (>= 1) pages are allocated at creation
 * (one cudaMalloc), with a memory pool for the decode's scratch (it keeps
 * up to 64 MiB between calls); each sequence holds a page table of up to max_pages
 * entries. Sequences grow by appending, shrink by truncate or reset; fork
 * and evict are not provided. The host keeps the page tables: calls that
 * change the cache need the caller's exclusive access, as in sdpa.h. */
typedef struct sdpa_cuda_kv_cache sdpa_cuda_kv_cache;

SDPA_CUDA_API int  sdpa_cuda_kv_cache_create(const sdpa_kv_cache_config *config, sdpa_cuda_kv_cache **cache);
SDPA_CUDA_API void sdpa_cuda_kv_cache_destroy(sdpa_cuda_kv_cache *cache);
/* k [1, kv_heads, n, head_dim], v [1, kv_heads, n, head_dim_v]: device
 * tensors, F32, F16 or BF16. All or nothing on argument and capacity errors. */
SDPA_CUDA_API int sdpa_cuda_kv_cache_append(sdpa_cuda_kv_cache *cache, int64_t seq, const sdpa_tensor *k,
                                            const sdpa_tensor *v, cudaStream_t stream);
SDPA_CUDA_API int sdpa_cuda_kv_cache_truncate(sdpa_cuda_kv_cache *cache, int64_t seq, int64_t len);
SDPA_CUDA_API int sdpa_cuda_kv_cache_reset(sdpa_cuda_kv_cache *cache, int64_t seq); /* -1: every sequence */
SDPA_CUDA_API int64_t sdpa_cuda_kv_cache_len(const sdpa_cuda_kv_cache *cache, int64_t seq);
/* Tokens pos..pos+n-1 of seq as stored (I8 dequantized: scale * q, one float
 * product) into device tensors k [1, kv_heads, n, head_dim] and
 * v [1, kv_heads, n, head_dim_v] (F32, F16 or BF16; either may be NULL). */
SDPA_CUDA_API int sdpa_cuda_kv_cache_read(const sdpa_cuda_kv_cache *cache, int64_t seq, int64_t pos,
                                          const sdpa_tensor *k, const sdpa_tensor *v, cudaStream_t stream);
/* As sdpa_kv_cache_attention: q [B, Hq, n, head_dim] (device, F32, F16 or
 * BF16) over the cache; seqs (HOST array, may be NULL) picks each batch
 * entry's sequence; its n queries are the sequence's last n tokens (or the
 * last seqlens_q[b], a host array). Options: scale, causal (NONE or
 * BOTTOM_RIGHT), window, softcap, alibi_slopes (host), lse, seqlens_q; the
 * rest as sdpa_kv_cache_attention refuses them, and score_mod. Keys are split
 * into chunks over thread blocks (flash-decoding) and merged exactly through
 * their log-sum-exp in a fixed order. */
SDPA_CUDA_API int sdpa_cuda_kv_cache_attention(const sdpa_cuda_kv_cache *cache, const int64_t *seqs, const sdpa_tensor *q,
                                               const sdpa_tensor *out, const sdpa_params *params, cudaStream_t stream);
/* Device bytes the cache holds: its pages, page tables, and what its decode
 * scratch pool holds right now (kept between calls up to 64 MiB; the
 * split partials of a call, 2 MiB for a batch-1 decode with 32 heads). */
SDPA_CUDA_API int64_t sdpa_cuda_kv_cache_bytes(const sdpa_cuda_kv_cache *cache);

#ifdef __cplusplus
}
#endif
#endif /* SDPA_CUDA_H */

/* ======================================================================== */
/*                              IMPLEMENTATION                              */
/* ======================================================================== */
#if defined(SDPA_CUDA_IMPLEMENTATION) && !defined(SDPA_CUDA__IMPLEMENTATION_DONE)
#define SDPA_CUDA__IMPLEMENTATION_DONE

#ifndef __CUDACC__
#error "SDPA_CUDA_IMPLEMENTATION must be compiled by nvcc (a .cu file)"
#endif

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <atomic>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SDPA__CU_MAXD 256          /* head dims the kernels take */

/* ---- host: errors, tensors ----------------------------------------------- */

static int sdpa__cu_fail(const sdpa_params *p, int code, const char *fmt, ...)
{
    if (p && p->errbuf && p->errbuf_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->errbuf, p->errbuf_size, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int sdpa__cu_err(const sdpa_params *p, cudaError_t e, const char *what)
{
    return sdpa__cu_fail(p, SDPA_ERR_CUDA, "sdpa_cuda: %s: %s", what, cudaGetErrorString(e));
}

SDPA_CUDA_API const char *sdpa_cuda_strerror(int code)
{
    switch (code) {
    case SDPA_OK: return "no error";
    case SDPA_ERR_NULL: return "a required pointer is NULL";
    case SDPA_ERR_DTYPE: return "unsupported dtype or dtype combination";
    case SDPA_ERR_SHAPE: return "negative or inconsistent shapes";
    case SDPA_ERR_STRIDE: return "invalid strides (negative, stride[3] != 1, or overlapping out rows)";
    case SDPA_ERR_OVERFLOW: return "a size or offset overflows";
    case SDPA_ERR_HEADS: return "q heads are not a multiple of kv heads";
    case SDPA_ERR_MASK: return "mask dtype or shape not broadcastable";
    case SDPA_ERR_PARAM: return "invalid or unsupported option value";
    case SDPA_ERR_SEQLENS: return "variable-length arrays out of range or not monotonic";
    case SDPA_ERR_ALIAS: return "out or lse overlaps an input or each other";
    case SDPA_ERR_PATH: return "the requested kernel is not available for these arguments";
    case SDPA_ERR_NOMEM: return "out of memory";
    case SDPA_ERR_THREADS: return "the parallel_for hook reported failure";
    case SDPA_ERR_CAPACITY: return "the KV cache is full (max_pages reached)";
    case SDPA_ERR_CUDA: return "a CUDA call failed";
    default: return "unknown error";
    }
}

typedef struct sdpa__cu_tens {
    const char *data;
    int dtype;
    int64_t n[4], s[4], esize;
    uintptr_t lo, hi;
} sdpa__cu_tens;

static int64_t sdpa__cu_esize(int t)
{
    return t == SDPA_F32 ? 4 : (t == SDPA_F16 || t == SDPA_BF16) ? 2 : (t == SDPA_I8 || t == SDPA_BOOL) ? 1 : 0;
}
static int sdpa__cu_mul(int64_t a, int64_t b, int64_t *r)
{
    if (a < 0 || b < 0 || (a != 0 && b > INT64_MAX / a)) return 0;
    *r = a * b;
    return 1;
}
static int sdpa__cu_add(int64_t a, int64_t b, int64_t *r)
{
    if (a < 0 || b < 0 || a > INT64_MAX - b) return 0;
    *r = a + b;
    return 1;
}
static int sdpa__cu_isf(int t) { return t == SDPA_F32 || t == SDPA_F16 || t == SDPA_BF16; }

/* sdpa.h's tensor rules: shapes >= 0, strides >= 0 with stride[3] == 1 (all
 * zero = contiguous), extent and bytes overflow-checked, size-1 dims get
 * stride 0. */
static int sdpa__cu_tensor(const sdpa_params *pp, const char *name, const sdpa_tensor *x, sdpa__cu_tens *t)
{
    int d, contiguous = 1;
    int64_t numel = 1, extent = 1, bytes;
    if (!x) return sdpa__cu_fail(pp, SDPA_ERR_NULL, "sdpa_cuda: tensor %s is NULL", name);
    t->dtype = (int)x->dtype;
    t->esize = sdpa__cu_esize((int)x->dtype);
    if (t->esize == 0) return sdpa__cu_fail(pp, SDPA_ERR_DTYPE, "sdpa_cuda: %s has unknown dtype %d", name, (int)x->dtype);
    for (d = 0; d < 4; d++) {
        if (x->shape[d] < 0)
            return sdpa__cu_fail(pp, SDPA_ERR_SHAPE, "sdpa_cuda: %s.shape[%d] = %lld is negative", name, d, (long long)x->shape[d]);
        if (x->stride[d] != 0) contiguous = 0;
        if (!sdpa__cu_mul(numel, x->shape[d], &numel))
            return sdpa__cu_fail(pp, SDPA_ERR_OVERFLOW, "sdpa_cuda: %s element count overflows", name);
        t->n[d] = x->shape[d];
    }
    if (contiguous) {
        int64_t s = 1;
        for (d = 3; d >= 0; d--) {
            t->s[d] = s;
            if (!sdpa__cu_mul(s, x->shape[d] > 1 ? x->shape[d] : 1, &s)) s = 0;
        }
    } else {
        for (d = 0; d < 4; d++) {
            if (x->stride[d] < 0)
                return sdpa__cu_fail(pp, SDPA_ERR_STRIDE, "sdpa_cuda: %s.stride[%d] = %lld is negative", name, d,
                                     (long long)x->stride[d]);
            t->s[d] = x->stride[d];
        }
        if (x->stride[3] != 1)
            return sdpa__cu_fail(pp, SDPA_ERR_STRIDE, "sdpa_cuda: %s.stride[3] = %lld, must be 1", name, (long long)x->stride[3]);
    }
    for (d = 0; d < 4; d++)
        if (t->n[d] == 1) t->s[d] = 0;
    if (numel > 0) {
        for (d = 0; d < 4; d++) {
            int64_t span;
            if (!sdpa__cu_mul(t->n[d] - 1, t->s[d], &span) || !sdpa__cu_add(extent, span, &extent))
                return sdpa__cu_fail(pp, SDPA_ERR_OVERFLOW, "sdpa_cuda: %s strides overflow", name);
        }
        if (!sdpa__cu_mul(extent, t->esize, &bytes))
            return sdpa__cu_fail(pp, SDPA_ERR_OVERFLOW, "sdpa_cuda: %s spans more bytes than addressable", name);
        if (!x->data) return sdpa__cu_fail(pp, SDPA_ERR_NULL, "sdpa_cuda: %s.data is NULL", name);
        t->lo = (uintptr_t)x->data;
        if (t->lo > UINTPTR_MAX - (uintptr_t)bytes)
            return sdpa__cu_fail(pp, SDPA_ERR_OVERFLOW, "sdpa_cuda: %s wraps around the address space", name);
        t->hi = t->lo + (uintptr_t)bytes;
    } else {
        t->lo = t->hi = 0;
    }
    t->data = (const char *)x->data;
    return SDPA_OK;
}

static int sdpa__cu_injective(const sdpa__cu_tens *t)
{
    int idx[4], n = 0, a, b;
    int64_t need = 1;
    for (a = 0; a < 4; a++)
        if (t->n[a] > 1) idx[n++] = a;
    for (a = 1; a < n; a++)
        for (b = a; b > 0 && t->s[idx[b]] < t->s[idx[b - 1]]; b--) {
            int tmp = idx[b]; idx[b] = idx[b - 1]; idx[b - 1] = tmp;
        }
    for (a = 0; a < n; a++) {
        if (t->s[idx[a]] < need) return 0;
        need = t->s[idx[a]] * t->n[idx[a]];
    }
    return 1;
}

static int sdpa__cu_overlap(const sdpa__cu_tens *a, uintptr_t lo, uintptr_t hi)
{
    return a->lo < a->hi && lo < hi && a->lo < hi && lo < a->hi;
}

/* ---- the arguments the kernels see ---------------------------------------- */

typedef struct sdpa__cu_args {
    const char *q, *k, *v, *m;
    char *o;
    float *lse;
    int64_t qs[4], ks[4], vs[4], os[4], ms[4];
    int qdt, odt, has_mask, mask_bool;
    int64_t B, Hq, Hkv, G, Lq, Lk, D, Dv;
    float scale, softcap;
    int causal, window, packed, extras;  /* extras: softcap, alibi or mask present */
    int ovec;                            /* out has q's dtype and 16-byte aligned rows: the tensor-core
                                            kernels store O in 16-byte row chunks through shared memory */
    int64_t wl, wr;
    const float *alibi;                  /* device copies */
    const int64_t *sq, *skv, *cuq, *cuk;
    int64_t nseq, seq0;                  /* sequences; the generic kernel's first (blockIdx.z + seq0) */
    /* int8 mode: q and k point at the pre-pass's int8 rows; per row scales
     * (qsc: the attention scale folded in), qmv = scale * q.mean */
    const float *qsc, *qmv, *ksc;
} sdpa__cu_args;

typedef struct sdpa__cu_seq {
    int64_t bt, q0, nq, vq, k0, vk;
} sdpa__cu_seq;

__device__ __forceinline__ void sdpa__cu_seq_get(const sdpa__cu_args &a, int64_t s, sdpa__cu_seq *q)
{
    if (!a.packed) {
        q->bt = s; q->q0 = 0; q->nq = a.Lq;
        q->vq = a.sq ? a.sq[s] : a.Lq;
        q->k0 = 0;
        q->vk = a.skv ? a.skv[s] : a.Lk;
    } else if (s < a.nseq - 1) {
        q->bt = 0; q->q0 = a.cuq[s];
        q->nq = q->vq = a.cuq[s + 1] - a.cuq[s];
        q->k0 = a.cuk[s];
        q->vk = a.cuk[s + 1] - a.cuk[s];
    } else {
        q->bt = 0; q->q0 = a.cuq[s]; q->nq = a.Lq - q->q0; q->vq = 0; q->k0 = 0; q->vk = 0;
    }
}

/* Position of query i on the key axis, and its visible keys [lo, hi]
 * (hi < lo: none). */
__device__ __forceinline__ int64_t sdpa__cu_pos(int causal, int64_t i, int64_t vq, int64_t vk)
{
    return causal == SDPA_CAUSAL_TOP_LEFT ? i : i + vk - vq;
}
__device__ __forceinline__ void sdpa__cu_range(int causal, int window, int64_t wl, int64_t wr, int64_t i, int64_t vq,
                                               int64_t vk, int64_t *lo, int64_t *hi)
{
    int64_t pos = sdpa__cu_pos(causal, i, vq, vk), l = 0, h = vk - 1;
    if (i >= vq) h = -1;
    if (causal != SDPA_CAUSAL_NONE && pos < h) h = pos;
    if (window && wl >= 0 && pos - wl > l) l = pos - wl;
    if (window && wr >= 0 && pos + wr < h) h = pos + wr;
    if (h < l) { l = 0; h = -1; }
    *lo = l;
    *hi = h;
}

__device__ __forceinline__ int64_t sdpa__cu_esize_d(int t) { return t == SDPA_F32 ? 4 : (t == SDPA_I8 || t == SDPA_BOOL) ? 1 : 2; }

__device__ __forceinline__ float sdpa__cu_ld(const char *p, int dt)
{
    if (dt == SDPA_F32) return *(const float *)p;
    if (dt == SDPA_F16) return __half2float(*(const __half *)p);
    if (dt == SDPA_BF16) return __bfloat162float(*(const __nv_bfloat16 *)p);
    return (float)*(const signed char *)p;
}
__device__ __forceinline__ void sdpa__cu_st(char *p, int dt, float x)
{
    if (dt == SDPA_F32) *(float *)p = x;
    else if (dt == SDPA_F16) *(__half *)p = __float2half_rn(x);
    else *(__nv_bfloat16 *)p = __float2bfloat16_rn(x);
}

/* softcap, ALiBi and mask on a scaled score s of query i (within its
 * sequence) and key j, head h; the key is visible. */
__device__ __forceinline__ float sdpa__cu_extras(const sdpa__cu_args &a, const sdpa__cu_seq &sq, int64_t h, int64_t i,
                                                 int64_t j, float s)
{
    if (a.softcap > 0.0f) s = a.softcap * tanhf(s / a.softcap);
    if (a.alibi) {
        int64_t dist = sdpa__cu_pos(a.causal, i, sq.vq, sq.vk) - j;
        s -= a.alibi[h] * (float)(dist < 0 ? -dist : dist);
    }
    if (a.has_mask) {
        const char *mp = a.m + (sq.bt * a.ms[0] + h * a.ms[1] + (sq.q0 + i) * a.ms[2] + (sq.k0 + j) * a.ms[3]) *
                                   (a.mask_bool ? 1 : 4);
        if (a.mask_bool) {
            if (!*(const unsigned char *)mp) s = -INFINITY;
        } else {
            s += *(const float *)mp;
        }
    }
    return s;
}

/* ---- generic kernel: fp32 on the CUDA cores ------------------------------ */

/* One warp per query row (sequence blockIdx.z, head blockIdx.y, row from
 * blockIdx.x and the warp); lane l holds q and the output accumulators for
 * dims l, l+32, ... (head dims <= 256). For each visible key: a dot product
 * reduced across the warp, then one online-softmax step. Reads K and V once
 * per query row: O(Lq * Lk * D) bytes (mostly from cache). */
#define SDPA__CU_GW 4
__global__ void __launch_bounds__(32 * SDPA__CU_GW) sdpa__cu_fwd_generic(const sdpa__cu_args a)
{
    const int lane = threadIdx.x & 31;
    const int64_t s = blockIdx.z + a.seq0, h = blockIdx.y;
    const int64_t i = (int64_t)blockIdx.x * SDPA__CU_GW + (threadIdx.x >> 5);
    sdpa__cu_seq sq;
    sdpa__cu_seq_get(a, s, &sq);
    if (i >= sq.nq) return;
    const int64_t g = h / a.G;
    int64_t lo, hi;
    sdpa__cu_range(a.causal, a.window, a.wl, a.wr, i, sq.vq, sq.vk, &lo, &hi);
    /* int8 mode: q and k are the pre-pass's int8 rows; the sums of their
     * products are integers below 2^24, exact in fp32 in any order */
    const bool i8 = a.qsc != nullptr;
    const int qkdt = i8 ? SDPA_I8 : a.qdt;
    const int64_t es = sdpa__cu_esize_d(a.qdt), qes = sdpa__cu_esize_d(qkdt), ix = (sq.bt * a.Hq + h) * a.Lq + sq.q0 + i;
    const float qsc = i8 ? a.qsc[ix] : 0.0f, qmv = i8 ? a.qmv[ix] : 0.0f;
    const float *ksc = i8 ? a.ksc + (sq.bt * a.Hkv + g) * a.Lk + sq.k0 : nullptr;
    float qr[8], acc[8];
    const char *qp = a.q + (sq.bt * a.qs[0] + h * a.qs[1] + (sq.q0 + i) * a.qs[2]) * qes;
#pragma unroll
    for (int t = 0; t < 8; t++) {
        int64_t d = lane + 32 * t;
        qr[t] = (i < sq.vq && d < a.D) ? sdpa__cu_ld(qp + d * qes, qkdt) * (i8 ? 1.0f : a.scale) : 0.0f;
        acc[t] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int64_t j = lo; j <= hi; j++) {
        const char *kp = a.k + (sq.bt * a.ks[0] + g * a.ks[1] + (sq.k0 + j) * a.ks[2]) * qes;
        float part = 0.0f;
#pragma unroll
        for (int t = 0; t < 8; t++) {
            int64_t d = lane + 32 * t;
            if (d < a.D) part += qr[t] * sdpa__cu_ld(kp + d * qes, qkdt);
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
        float sc = i8 ? fmaf(part, qsc * ksc[j], qmv) : part;
        if (a.extras) sc = sdpa__cu_extras(a, sq, h, i, j, sc);
        if (sc == -INFINITY) continue;
        float mn = fmaxf(m, sc);            /* NaN scores propagate through sc below */
        float alpha = expf(m - mn), p = expf(sc - mn);
        if (sc != sc) { mn = sc; alpha = p = sc; }
        l = l * alpha + p;
        m = mn;
        const char *vp = a.v + (sq.bt * a.vs[0] + g * a.vs[1] + (sq.k0 + j) * a.vs[2]) * es;
#pragma unroll
        for (int t = 0; t < 8; t++) {
            int64_t d = lane + 32 * t;
            if (d < a.Dv) acc[t] = acc[t] * alpha + p * sdpa__cu_ld(vp + d * es, a.qdt);
        }
    }
    const float inv = l > 0.0f ? 1.0f / l : (l != l ? l : 0.0f);
    char *op = a.o + (sq.bt * a.os[0] + h * a.os[1] + (sq.q0 + i) * a.os[2]) * sdpa__cu_esize_d(a.odt);
#pragma unroll
    for (int t = 0; t < 8; t++) {
        int64_t d = lane + 32 * t;
        if (d < a.Dv) sdpa__cu_st(op + d * sdpa__cu_esize_d(a.odt), a.odt, l > 0.0f || l != l ? acc[t] * inv : 0.0f);
    }
    if (a.lse && lane == 0)
        a.lse[(sq.bt * a.Hq + h) * a.Lq + sq.q0 + i] = l > 0.0f ? m + logf(l) : (l != l ? l : -INFINITY);
}

/* ---- tensor-core kernel --------------------------------------------------- */

__device__ __forceinline__ uint32_t sdpa__cu_sa(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

/* 16 bytes global -> shared, asynchronously; bytes = 0 writes zeros (src is
 * then not read, but stays a valid address). */
__device__ __forceinline__ void sdpa__cu_cp16(uint32_t dst, const void *src, int bytes)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void sdpa__cu_cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void sdpa__cu_cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

/* ldmatrix without a memory clobber (the compiler may schedule it freely
 * among loads): shared memory it reads must come from cp.async (whose asm
 * clobbers memory) or, when written by plain stores, be followed by a
 * compiler barrier, asm volatile("" ::: "memory"), after the block or warp
 * barrier; otherwise the read may be hoisted above the stores. */
__device__ __forceinline__ void sdpa__cu_ldm4(uint32_t addr, uint32_t *r)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void sdpa__cu_ldm4t(uint32_t addr, uint32_t *r)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

template <typename T> struct sdpa__cu_mma;
template <> struct sdpa__cu_mma<__half> {
    static __device__ __forceinline__ void run(float *c, const uint32_t *a, uint32_t b0, uint32_t b1)
    {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ uint32_t pack(float x, float y)
    {
        __half2 h = __floats2half2_rn(x, y);
        return *(uint32_t *)&h;
    }
    /* (x, y) = hi + lo, both rounded to T: hi's pair and the remainder's */
    static __device__ __forceinline__ void split(float x, float y, uint32_t *hi, uint32_t *lo)
    {
        const __half2 h = __floats2half2_rn(x, y), l = __floats2half2_rn(x - __low2float(h), y - __high2float(h));
        *hi = *(const uint32_t *)&h;
        *lo = *(const uint32_t *)&l;
    }
};
template <> struct sdpa__cu_mma<__nv_bfloat16> {
    static __device__ __forceinline__ void run(float *c, const uint32_t *a, uint32_t b0, uint32_t b1)
    {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ uint32_t pack(float x, float y)
    {
        __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
        return *(uint32_t *)&h;
    }
    static __device__ __forceinline__ void split(float x, float y, uint32_t *hi, uint32_t *lo)
    {
        const __nv_bfloat162 h = __floats2bfloat162_rn(x, y), l = __floats2bfloat162_rn(x - __low2float(h), y - __high2float(h));
        *hi = *(const uint32_t *)&h;
        *lo = *(const uint32_t *)&l;
    }
};

/* int8 m16n8k32 (s8 x s8 -> s32); the int32 accumulators travel as the bit
 * patterns of the float arrays the bf16 path uses (moves, no conversions) */
__device__ __forceinline__ void sdpa__cu_mma_i8(float *c, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    int c0 = __float_as_int(c[0]), c1 = __float_as_int(c[1]), c2 = __float_as_int(c[2]), c3 = __float_as_int(c[3]);
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+r"(c0), "+r"(c1), "+r"(c2), "+r"(c3)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    c[0] = __int_as_float(c0); c[1] = __int_as_float(c1); c[2] = __int_as_float(c2); c[3] = __int_as_float(c3);
}

/* 4 bytes global -> shared, asynchronously; bytes = 0 writes zeros */
__device__ __forceinline__ void sdpa__cu_cp4(uint32_t dst, const void *src, int bytes)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}

/* Unclamped visible range of query i: [max(0, pos - wl), min(vk - 1, pos, pos + wr)]. */
__device__ __forceinline__ void sdpa__cu_range_raw(const sdpa__cu_args &a, int64_t i, int64_t vq, int64_t vk, int64_t *lo,
                                                   int64_t *hi)
{
    int64_t pos = sdpa__cu_pos(a.causal, i, vq, vk), l = 0, h = vk - 1;
    if (a.causal != SDPA_CAUSAL_NONE && pos < h) h = pos;
    if (a.window && a.wl >= 0 && pos - a.wl > l) l = pos - a.wl;
    if (a.window && a.wr >= 0 && pos + a.wr < h) h = pos + a.wr;
    *lo = l;
    *hi = h;
}

__device__ __forceinline__ float sdpa__cu_ex2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* Programmatic dependent launch (sm_90): the decode kernels signal when a
 * block's partial results are written, so that the merge kernel, launched
 * with the programmatic serialization attribute, is scheduled before they
 * all exit; it waits for their completion and memory before reading.
 * Elsewhere both are no-ops, and the host launches the merge plainly. */
__device__ __forceinline__ void sdpa__cu_pdl_trigger(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void sdpa__cu_pdl_wait(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

/* FlashAttention-2's forward on mma.sync. A block owns BM = NW * MT * 16
 * query rows of one head (each warp MT row tiles of 16) and walks the K/V
 * tiles of BN keys that any of its rows can see, two stages deep through
 * cp.async: S = Q K^T (A from Q, B from K rows: ldmatrix), online softmax on
 * the accumulators in registers (exp2 of log2-scaled scores; results below
 * 2^-126 flush to zero, against a row sum >= 1), P rounded to T in registers
 * as the A operand of O += P V (V through ldmatrix.trans). With MT = 1 and
 * DP <= 128 Q's fragments stay in registers; otherwise they are read from
 * shared memory per 16 dims, and each K/V fragment then feeds MT row tiles.
 * Shared rows are padded by 16 bytes: ldmatrix's eight row addresses then
 * fall in distinct banks. Shared memory: (BM + 4 BN) (DP + 8) * 2 bytes.
 * Columns past D and keys outside the block's range are zero-filled, never
 * read. EX compiles in softcap, ALiBi and the mask (a.extras); without it
 * only the tiles that cut a row's visible range pay for per-element checks.
 * Positions are int (the host sends sequences of 2^30 or more to the
 * generic kernel); element offsets are int64. O leaves through shared
 * memory in 16-byte chunks of a row where out has q's dtype and 16-byte
 * aligned rows (at L = 1024 7-20% faster than 2-byte stores of the
 * scattered fragments), element by element otherwise.
 * I8 (int8 mode, SageAttention's scheme): q and k are the pre-pass's int8
 * rows (DP bytes, zero-padded, K smoothed), S = Q K^T on m16n8k32 int8
 * mma.sync in int32; the scaled true score is int32 * qsc_i * ksc_j + qmv_i
 * (qmv: the smoothing's shift). Per element that costs an integer add and
 * one FMA: |int32| <= 127^2 * 256 < 2^22, so the int plus 0x4B400000 is
 * the float 1.5 * 2^23 + int32, and fma(that, ksc_j, -1.5 * 2^23 * ksc_j)
 * gives int32 * ksc_j (to half a unit of the sum). Without EX, qsc_i joins
 * the exp's multiplier and qmv_i (the same for a whole row, so softmax
 * ignores it) only the lse; EX forms the true score for the extras. The
 * keys' scales travel with their tile. Q/K rows in shared memory are DP +
 * 16 bytes: the same ldmatrix addressing in 16-bit units, half the
 * k-steps. */
template <typename T, int DP, int NW, int MT, int BN, bool EX, bool I8>
__global__ void __launch_bounds__(NW * 32) sdpa__cu_fwd_mma(const sdpa__cu_args a, int nqb)
{
    constexpr int BM = NW * 16 * MT, LD = DP + 8, CH = DP / 8, NT = BN / 8, DT = DP / 8;
    /* Q/K rows: LQK 16-bit units, CHQ 16-byte chunks, KS k-steps of S */
    constexpr int LQK = I8 ? DP / 2 + 8 : LD, CHQ = I8 ? DP / 16 : CH, KS = I8 ? DP / 32 : DP / 16, EB = I8 ? 1 : 2;
    constexpr bool QREG = MT == 1 && DP <= 128; /* Q's fragments stay in registers */
    const float LOG2E = 1.4426950408889634f;
    extern __shared__ __align__(16) unsigned char sdpa__cu_sm[];
    T *Qs = (T *)sdpa__cu_sm, *Ks = Qs + BM * LQK, *Vs = Ks + 2 * BN * LQK;
    float *Kss = (float *)(void *)(Vs + 2 * BN * LD); /* I8: the keys' scales, [2][BN] */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int64_t s = (int64_t)blockIdx.x / nqb, h = blockIdx.y;
    const int i0 = (nqb - 1 - (int)(blockIdx.x % (unsigned)nqb)) * BM; /* longest causal rows first */
    sdpa__cu_seq sq;
    sdpa__cu_seq_get(a, s, &sq);
    if (i0 >= sq.nq) return;
    const int nq = (int)sq.nq, vq = (int)sq.vq, vk = (int)sq.vk;
    const int64_t g = h / a.G;
    const int ilast = (i0 + BM < nq ? i0 + BM : nq) - 1;
    int klo = 0, khi = -1, flo = 1, fhi = 0;
    if (i0 < vq) {
        int64_t iv = ilast < vq - 1 ? ilast : vq - 1, l0, h0, l1, h1;
        sdpa__cu_range_raw(a, i0, vq, vk, &l0, &h0);
        sdpa__cu_range_raw(a, iv, vq, vk, &l1, &h1);
        klo = (int)(l0 > 0 ? l0 : 0); /* lo and hi grow with i */
        khi = (int)(h1 < vk - 1 ? h1 : vk - 1);
        if (iv == ilast && l1 <= h0) { flo = (int)l1; fhi = (int)h0; } /* keys every row of the block sees */
    }
    int rlo[MT][2], rhi[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            int64_t l, hh;
            sdpa__cu_range(a.causal, a.window, a.wl, a.wr, i0 + warp * MT * 16 + mt * 16 + rr * 8 + (lane >> 2), vq, vk, &l, &hh);
            rlo[mt][rr] = (int)l;
            rhi[mt][rr] = (int)hh;
        }

    const char *qb = a.q + (sq.bt * a.qs[0] + h * a.qs[1] + sq.q0 * a.qs[2]) * EB;
    const char *kb = a.k + (sq.bt * a.ks[0] + g * a.ks[1] + sq.k0 * a.ks[2]) * EB;
    const char *vb = a.v + (sq.bt * a.vs[0] + g * a.vs[1] + sq.k0 * a.vs[2]) * 2;
    static_assert(BM * CHQ % (NW * 32) == 0, "whole Q tile copies per thread");
#pragma unroll
    for (int it = 0; it < BM * CHQ / (NW * 32); it++) {
        const int c = tid + it * NW * 32, r = c / CHQ, cc = c % CHQ;
        bool ok = i0 + r < vq && (I8 || cc * 8 < a.D);
        sdpa__cu_cp16(sdpa__cu_sa(Qs + r * LQK + cc * 8), ok ? (const void *)(qb + (int64_t)(i0 + r) * a.qs[2] * EB + cc * 16) : a.q,
                      ok ? 16 : 0);
    }
    sdpa__cu_cp_commit();
    const int jstart = khi >= klo ? klo / BN * BN : 0;
    const int ntiles = khi >= klo ? (khi - jstart) / BN + 1 : 0;
    /* With NW * 32 a multiple of CH, each thread copies the same 16-byte
     * column cc of rows r0, r0 + RS, ...: one address, stepped (ROWS);
     * otherwise (DP = 96) chunk by chunk. */
    static_assert(BN * CH % (NW * 32) == 0 && BN <= NW * 32, "whole K/V tile copies per thread");
    constexpr bool ROWS = NW * 32 % CH == 0;
    constexpr int RS = ROWS ? NW * 32 / CH : 1;
    const int r0 = ROWS ? tid / CH : 0, cc0 = ROWS ? tid % CH : 0;
    const bool cok = cc0 * 8 < a.D;
    const int64_t kst = a.ks[2] * EB, vst = a.vs[2] * 2;
    const uint32_t kd0 = sdpa__cu_sa(Ks + r0 * LD + cc0 * 8), vd0 = sdpa__cu_sa(Vs + r0 * LD + cc0 * 8);
    const float *kscb = I8 ? a.ksc + (sq.bt * a.Hkv + g) * a.Lk + sq.k0 : nullptr;
    /* I8: K's int8 rows (always whole) the same way, CHQ chunks per row */
    constexpr bool ROWSQ = NW * 32 % CHQ == 0;
    constexpr int RSQ = ROWSQ ? NW * 32 / CHQ : 1;
    const int rq0 = ROWSQ ? tid / CHQ : 0, cq0 = ROWSQ ? tid % CHQ : 0;
    const uint32_t kq0 = sdpa__cu_sa(Ks + rq0 * LQK + cq0 * 8);
    auto load_kv = [&](int stage, int j0) {
        if (I8 && ROWSQ) {
            const char *kp = kb + (int64_t)(j0 + rq0) * kst + cq0 * 16;
#pragma unroll
            for (int it = 0; it < BN / RSQ; it++) {
                const int j = j0 + rq0 + it * RSQ;
                const bool ok = j >= klo && j <= khi;
                sdpa__cu_cp16(kq0 + (uint32_t)((stage * BN + it * RSQ) * LQK * 2), ok ? (const void *)(kp + it * RSQ * kst) : a.k,
                              ok ? 16 : 0);
            }
        } else if (I8) {
#pragma unroll
            for (int it = 0; it < (BN * CHQ + NW * 32 - 1) / (NW * 32); it++) {
                const int c = tid + it * NW * 32, r = c / CHQ, cc = c % CHQ, j = j0 + r;
                const bool ok = j >= klo && j <= khi;
                if (BN * CHQ % (NW * 32) != 0 && c >= BN * CHQ) break;
                sdpa__cu_cp16(sdpa__cu_sa(Ks + (stage * BN + r) * LQK + cc * 8), ok ? (const void *)(kb + j * kst + cc * 16) : a.k,
                              ok ? 16 : 0);
            }
        }
        if (I8 && tid < BN) { /* the keys' scales */
            const bool ok = j0 + tid >= klo && j0 + tid <= khi;
            sdpa__cu_cp4(sdpa__cu_sa(Kss + stage * BN + tid), ok ? (const void *)(kscb + j0 + tid) : a.ksc, ok ? 4 : 0);
        }
        if (ROWS) {
            const char *kp = kb + (int64_t)(j0 + r0) * kst + cc0 * 16, *vp = vb + (int64_t)(j0 + r0) * vst + cc0 * 16;
#pragma unroll
            for (int it = 0; it < BN / RS; it++) {
                const int j = j0 + r0 + it * RS;
                const bool ok = cok && j >= klo && j <= khi;
                const uint32_t off = (uint32_t)((stage * BN + it * RS) * LD * 2);
                if (!I8) sdpa__cu_cp16(kd0 + off, ok ? (const void *)(kp + it * RS * kst) : a.k, ok ? 16 : 0);
                sdpa__cu_cp16(vd0 + off, ok ? (const void *)(vp + it * RS * vst) : a.v, ok ? 16 : 0);
            }
        } else {
#pragma unroll
            for (int it = 0; it < BN * CH / (NW * 32); it++) {
                const int c = tid + it * NW * 32, r = c / CH, cc = c % CH, j = j0 + r;
                const bool ok = cc * 8 < a.D && j >= klo && j <= khi;
                const uint32_t off = (uint32_t)(((stage * BN + r) * LD + cc * 8) * 2);
                if (!I8) sdpa__cu_cp16(sdpa__cu_sa(Ks) + off, ok ? (const void *)(kb + j * kst + cc * 16) : a.k, ok ? 16 : 0);
                sdpa__cu_cp16(sdpa__cu_sa(Vs) + off, ok ? (const void *)(vb + j * vst + cc * 16) : a.v, ok ? 16 : 0);
            }
        }
    };
    if (ntiles > 0) load_kv(0, jstart);
    sdpa__cu_cp_commit();

    float o[MT][DT][4], mrow[MT][2], lrow[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int dt = 0; dt < DT; dt++) o[mt][dt][0] = o[mt][dt][1] = o[mt][dt][2] = o[mt][dt][3] = 0.0f;
        mrow[mt][0] = mrow[mt][1] = -INFINITY;
        lrow[mt][0] = lrow[mt][1] = 0.0f;
    }
    const float sl2 = a.scale * LOG2E;
    uint32_t qf[QREG ? KS : 1][4];
    /* I8: this lane's rows' scales (without EX: times LOG2E, the exp's
     * multiplier; never 0, which would turn masked -inf into NaN) and, for
     * EX, shifts; rows past vq (padding: out = 0 whatever they hold) get 0 */
    float qsr[MT][2], qmr[MT][EX ? 2 : 1];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            const int i = i0 + warp * MT * 16 + mt * 16 + rr * 8 + (lane >> 2);
            const int64_t ix = (sq.bt * a.Hq + h) * a.Lq + sq.q0 + i;
            float x = I8 && i < vq ? a.qsc[ix] : 0.0f;
            if (!EX) x = x * LOG2E == 0.0f ? 1.17549435e-38f : x * LOG2E;
            qsr[mt][rr] = x;
            if (EX) qmr[mt][EX ? rr : 0] = I8 && i < vq ? a.qmv[ix] : 0.0f;
        }

    for (int t = 0; t < ntiles; t++) {
        if (t + 1 < ntiles) {
            load_kv((t + 1) & 1, jstart + (t + 1) * BN);
            sdpa__cu_cp_commit();
            sdpa__cu_cp_wait<1>();
        } else {
            sdpa__cu_cp_wait<0>();
        }
        __syncthreads();
        const T *Kst = Ks + (t & 1) * BN * LQK, *Vst = Vs + (t & 1) * BN * LD;
        if (QREG && t == 0)
#pragma unroll
            for (int kk = 0; kk < KS; kk++)
                sdpa__cu_ldm4(sdpa__cu_sa(Qs + (warp * 16 + (lane & 15)) * LQK + kk * 16 + (lane >> 4) * 8), qf[QREG ? kk : 0]);
        float sc[MT][NT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++) sc[mt][nt][0] = sc[mt][nt][1] = sc[mt][nt][2] = sc[mt][nt][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            uint32_t af[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                if (QREG) { af[mt][0] = qf[kk][0]; af[mt][1] = qf[kk][1]; af[mt][2] = qf[kk][2]; af[mt][3] = qf[kk][3]; }
                else sdpa__cu_ldm4(sdpa__cu_sa(Qs + (warp * MT * 16 + mt * 16 + (lane & 15)) * LQK + kk * 16 + (lane >> 4) * 8), af[mt]);
#pragma unroll
            for (int nb = 0; nb < BN / 16; nb++) {
                uint32_t b[4];
                sdpa__cu_ldm4(sdpa__cu_sa(Kst + (nb * 16 + ((lane >> 4) & 1) * 8 + (lane & 7)) * LQK + kk * 16 + ((lane >> 3) & 1) * 8), b);
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
                    if (I8) {
                        sdpa__cu_mma_i8(sc[mt][2 * nb], af[mt], b[0], b[1]);
                        sdpa__cu_mma_i8(sc[mt][2 * nb + 1], af[mt], b[2], b[3]);
                    } else {
                        sdpa__cu_mma<T>::run(sc[mt][2 * nb], af[mt], b[0], b[1]);
                        sdpa__cu_mma<T>::run(sc[mt][2 * nb + 1], af[mt], b[2], b[3]);
                    }
            }
        }
        if (I8) { /* int32 -> int32 * ksc_j (EX: the true scaled score) */
            const float *kss = Kss + (t & 1) * BN + 2 * (lane & 3);
            const float BIAS = 12582912.0f; /* 1.5 * 2^23 */
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                const float2 ks2 = *(const float2 *)(kss + nt * 8);
                const float c0 = -BIAS * ks2.x, c1 = -BIAS * ks2.y;
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int rr = 0; rr < 2; rr++) {
                        float *x = &sc[mt][nt][2 * rr];
                        x[0] = fmaf(__int_as_float(__float_as_int(x[0]) + 0x4B400000), ks2.x, c0);
                        x[1] = fmaf(__int_as_float(__float_as_int(x[1]) + 0x4B400000), ks2.y, c1);
                        if (EX) {
                            x[0] = fmaf(x[0], qsr[mt][rr], qmr[mt][EX ? rr : 0]);
                            x[1] = fmaf(x[1], qsr[mt][rr], qmr[mt][EX ? rr : 0]);
                        }
                    }
            }
        }
        const int j0 = jstart + t * BN;
        const bool need = EX || !(j0 >= flo && j0 + BN - 1 <= fhi);
        /* Scores in log2 units are x * mul: EX turns them to that in place
         * (scale, extras, LOG2E); otherwise they stay raw and the scale
         * (> 0 here: the host sends other scales to EX) folds into one FMA
         * with the max below (I8: the row's scale, qsr). */
        const float mul0 = EX ? 1.0f : sl2;
        float mxs[MT][2];
        bool grow = false;
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int rr = 0; rr < 2; rr++) {
                /* this lane's keys are jb + c, c = nt * 8 + e: the range check
                 * compares the constant c with lo and hi */
                const int jb = j0 + 2 * (lane & 3), lo = rlo[mt][rr] - jb, hi = rhi[mt][rr] - jb;
                if (EX) {
#pragma unroll
                    for (int nt = 0; nt < NT; nt++)
#pragma unroll
                        for (int e = 0; e < 2; e++) {
                            const int c = nt * 8 + e;
                            float &x = sc[mt][nt][2 * rr + e];
                            x = c < lo || c > hi ? -INFINITY
                                                 : sdpa__cu_extras(a, sq, h, i0 + warp * MT * 16 + mt * 16 + rr * 8 + (lane >> 2),
                                                                   jb + c, I8 ? x : x * a.scale) *
                                                       LOG2E;
                        }
                } else if (need) { /* the tile cuts this block's ranges */
#pragma unroll
                    for (int nt = 0; nt < NT; nt++)
#pragma unroll
                        for (int e = 0; e < 2; e++)
                            if (nt * 8 + e < lo || nt * 8 + e > hi) sc[mt][nt][2 * rr + e] = -INFINITY;
                }
                float mx = -INFINITY;
#pragma unroll
                for (int nt = 0; nt < NT; nt++) mx = fmaxf(mx, fmaxf(sc[mt][nt][2 * rr], sc[mt][nt][2 * rr + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                mxs[mt][rr] = mx * (I8 && !EX ? qsr[mt][rr] : mul0);
                grow |= mxs[mt][rr] > mrow[mt][rr] + 8.0f;
            }
        /* The running max moves only when some row of the warp outgrows it by
         * more than 2^8: until then the weights exp2(x - m) stay <= 256 (fp32
         * sums and P's relative rounding do not mind), and O and l skip their
         * rescaling. The first tile with a visible key always sets it. */
        if (__any_sync(0xffffffffu, grow)) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int rr = 0; rr < 2; rr++) {
                    const float mn = fmaxf(mrow[mt][rr], mxs[mt][rr]), mu = mn == -INFINITY ? 0.0f : mn;
                    const float alpha = sdpa__cu_ex2(mrow[mt][rr] - mu);
                    mrow[mt][rr] = mn;
                    lrow[mt][rr] *= alpha;
#pragma unroll
                    for (int dt = 0; dt < DT; dt++) {
                        o[mt][dt][2 * rr] *= alpha;
                        o[mt][dt][2 * rr + 1] *= alpha;
                    }
                }
        }
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int rr = 0; rr < 2; rr++) {
                const float nmu = mrow[mt][rr] == -INFINITY ? 0.0f : -mrow[mt][rr], mul = I8 && !EX ? qsr[mt][rr] : mul0;
                float ls = 0.0f;
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        float p = sdpa__cu_ex2(fmaf(sc[mt][nt][2 * rr + e], mul, nmu));
                        sc[mt][nt][2 * rr + e] = p;
                        ls += p;
                    }
                lrow[mt][rr] += ls;
            }
#pragma unroll
        for (int kt = 0; kt < BN / 16; kt++) {
            uint32_t pa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                pa[mt][0] = sdpa__cu_mma<T>::pack(sc[mt][2 * kt][0], sc[mt][2 * kt][1]);
                pa[mt][1] = sdpa__cu_mma<T>::pack(sc[mt][2 * kt][2], sc[mt][2 * kt][3]);
                pa[mt][2] = sdpa__cu_mma<T>::pack(sc[mt][2 * kt + 1][0], sc[mt][2 * kt + 1][1]);
                pa[mt][3] = sdpa__cu_mma<T>::pack(sc[mt][2 * kt + 1][2], sc[mt][2 * kt + 1][3]);
            }
#pragma unroll
            for (int dp = 0; dp < DP / 16; dp++) {
                uint32_t b[4];
                sdpa__cu_ldm4t(sdpa__cu_sa(Vst + (kt * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD + dp * 16 + (lane >> 4) * 8), b);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    sdpa__cu_mma<T>::run(o[mt][2 * dp], pa[mt], b[0], b[1]);
                    sdpa__cu_mma<T>::run(o[mt][2 * dp + 1], pa[mt], b[2], b[3]);
                }
            }
        }
        __syncthreads(); /* the next load overwrites this stage */
    }
    sdpa__cu_cp_wait<0>();

    const int64_t oes = a.odt == SDPA_F32 ? 4 : 2;
    float inv[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            float l = lrow[mt][rr];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            inv[mt][rr] = l > 0.0f ? 1.0f / l : (l != l ? l : 0.0f);
            const int i = i0 + warp * MT * 16 + mt * 16 + rr * 8 + (lane >> 2);
            if (a.lse && (lane & 3) == 0 && i < nq) {
                const int64_t ix = (sq.bt * a.Hq + h) * a.Lq + sq.q0 + i;
                /* I8 without EX: the scores left out the row's shift */
                a.lse[ix] = l > 0.0f ? (mrow[mt][rr] + log2f(l)) * 0.6931471805599453f + (I8 && !EX ? a.qmv[ix] : 0.0f)
                                     : (l != l ? l : -INFINITY);
            }
        }
    if (a.ovec) {
        /* O through shared memory (rows of LD elements from the start, past
         * every reader: the barrier), then out in 16-byte row chunks; a warp
         * stores the rows it wrote */
        static_assert(BM * LD <= (BM + 2 * BN) * LQK + 2 * BN * LD, "O fits the block's shared memory");
        __syncthreads();
        const uint32_t ob = sdpa__cu_sa(Qs);
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int rr = 0; rr < 2; rr++) {
                const int r = warp * MT * 16 + mt * 16 + rr * 8 + (lane >> 2);
#pragma unroll
                for (int dt = 0; dt < DT; dt++) {
                    const uint32_t w = sdpa__cu_mma<T>::pack(o[mt][dt][2 * rr] * inv[mt][rr], o[mt][dt][2 * rr + 1] * inv[mt][rr]);
                    asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(ob + (uint32_t)(r * LD + dt * 8) * 2 + (uint32_t)(lane & 3) * 4), "r"(w) : "memory");
                }
            }
        __syncwarp();
#pragma unroll
        for (int it = 0; it < MT * 16 * CH / 32; it++) {
            const int idx = lane + it * 32, r = warp * MT * 16 + idx / CH, c = idx % CH, i = i0 + r;
            if (i < nq && c * 8 < a.Dv) {
                uint4 u;
                asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
                             : "=r"(u.x), "=r"(u.y), "=r"(u.z), "=r"(u.w) : "r"(ob + (uint32_t)(r * LD + c * 8) * 2) : "memory");
                *(uint4 *)(a.o + (sq.bt * a.os[0] + h * a.os[1] + (sq.q0 + i) * a.os[2]) * 2 + c * 16) = u;
            }
        }
        return;
    }
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            const int i = i0 + warp * MT * 16 + mt * 16 + rr * 8 + (lane >> 2);
            if (i >= nq) continue;
            char *op = a.o + (sq.bt * a.os[0] + h * a.os[1] + (sq.q0 + i) * a.os[2]) * oes;
#pragma unroll
            for (int dt = 0; dt < DT; dt++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    int col = dt * 8 + 2 * (lane & 3) + e;
                    if (col < a.Dv) sdpa__cu_st(op + col * oes, a.odt, o[mt][dt][2 * rr + e] * inv[mt][rr]);
                }
        }
}

/* ---- Hopper: the forward on wgmma (sm_90a) --------------------------------- */

/* Compiled where nvcc builds for sm_90a (-gencode arch=compute_90a,code=sm_90a):
 * wgmma exists only there. Elsewhere the kernel's body is empty and the host
 * never launches it (sdpa__cu_wg_ok). SDPA_CUDA_NO_WGMMA leaves it out. */
#if !defined(SDPA_CUDA_NO_WGMMA) && defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SDPA__CU_WG_BODY 1
#endif
#ifndef SDPA_CUDA_NO_WGMMA
__device__ const int sdpa__cu_wg_flag =
#ifdef SDPA__CU_WG_BODY
    1;
#else
    0;
#endif
#endif

/* A shared-memory matrix descriptor for wgmma with the 128-byte swizzle:
 * start address, leading and stride byte offsets (all >> 4), mode 1 in bits
 * 62-63. Tiles are stored as 128-byte rows (64 bf16/f16 values), the 16-byte
 * chunk c of row r at chunk c ^ (r & 7), in 1024-byte aligned slabs of 64
 * columns: the layout the swizzle mode reads, for K-major operands (Q, K:
 * the stride between groups of 8 rows 1024 bytes, steps of 16 along K one
 * 32-byte move of the start) and for V read transposed (MN-major: the 16
 * keys of a step are two groups of 8 rows 1024 bytes apart, the 64-column
 * slabs of a row BN * 128 bytes apart). */
__device__ __forceinline__ uint64_t sdpa__cu_wg_desc(uint32_t saddr, uint32_t lbo, uint32_t sbo)
{
    return (uint64_t)((saddr & 0x3FFFF) >> 4) | ((uint64_t)((lbo & 0x3FFFF) >> 4) << 16) | ((uint64_t)((sbo & 0x3FFFF) >> 4) << 32) |
           ((uint64_t)1 << 62);
}
__device__ __forceinline__ void sdpa__cu_wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void sdpa__cu_wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void sdpa__cu_wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
/* after the wait: the accumulators are read only from here on */
template <int N> __device__ __forceinline__ void sdpa__cu_wg_hold(float *d)
{
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}

/* m64nNk16 with fp32 accumulators d (N / 2 per thread), N = 64, 128, 256:
 * ss takes A and B from shared memory (acc = 0: d = A B), rs takes A from
 * registers (the mma.sync m16n8k16 A layout, warp w of the
 * group rows 16 w ..) and B transposed (MN-major). */
template <int N, typename T> struct sdpa__cu_wg;
/* The accumulator operands of one wgmma, d[0 .. n), and their placeholders */
#define SDPA__CU_D8(b)                                                                                   \
    "+f"(d[b]), "+f"(d[b + 1]), "+f"(d[b + 2]), "+f"(d[b + 3]), "+f"(d[b + 4]), "+f"(d[b + 5]), "+f"(d[b + 6]), "+f"(d[b + 7])
#define SDPA__CU_D32(b) SDPA__CU_D8(b), SDPA__CU_D8(b + 8), SDPA__CU_D8(b + 16), SDPA__CU_D8(b + 24)
#define SDPA__CU_D64(b) SDPA__CU_D32(b), SDPA__CU_D32(b + 32)
#define SDPA__CU_DN_32 SDPA__CU_D32(0)
#define SDPA__CU_DN_64 SDPA__CU_D64(0)
#define SDPA__CU_DN_128 SDPA__CU_D64(0), SDPA__CU_D64(64)
#define SDPA__CU_PL_32                                                                                   \
    "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31"
#define SDPA__CU_PL_64                                                                                   \
    SDPA__CU_PL_32 ",%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58" \
                   ",%59,%60,%61,%62,%63"
#define SDPA__CU_PL_128                                                                                  \
    SDPA__CU_PL_64 ",%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90" \
                   ",%91,%92,%93,%94,%95,%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,%112"         \
                   ",%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127"

/* sdpa__cu_wg<N, T>: TY the type's PTX name, PL and DN the accumulators'
 * placeholders and operands, then the operands that follow them: ss's A
 * and B descriptors (SSAB) and its accumulate flag (SSACC), rs's four A
 * registers and B descriptor (RSAB) */
#define SDPA__CU_WG_DEF(N, T, TY, PL, DN, SSAB, SSACC, RSAB)                                             \
    template <> struct sdpa__cu_wg<N, T> {                                                                 \
        static __device__ __forceinline__ void ss(float *d, uint64_t da, uint64_t db, int acc)            \
        {                                                                                                  \
            asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " SSACC ", 0;\n"                               \
                         "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TY "." TY " {" PL "}, " SSAB   \
                         ", p, 1, 1, 0, 0;\n}\n"                                                          \
                         : DN                                                                              \
                         : "l"(da), "l"(db), "r"(acc));                                                   \
        }                                                                                                  \
        static __device__ __forceinline__ void rs(float *d, const uint32_t *a, uint64_t db)               \
        {                                                                                                  \
            asm volatile("wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TY "." TY " {" PL "}, " RSAB   \
                         ", 1, 1, 1, 1;\n"                                                                 \
                         : DN                                                                              \
                         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));                           \
        }                                                                                                  \
    };
SDPA__CU_WG_DEF(64, __nv_bfloat16, "bf16", SDPA__CU_PL_32, SDPA__CU_DN_32, "%32, %33", "%34", "{%32,%33,%34,%35}, %36")
SDPA__CU_WG_DEF(64, __half, "f16", SDPA__CU_PL_32, SDPA__CU_DN_32, "%32, %33", "%34", "{%32,%33,%34,%35}, %36")
SDPA__CU_WG_DEF(128, __nv_bfloat16, "bf16", SDPA__CU_PL_64, SDPA__CU_DN_64, "%64, %65", "%66", "{%64,%65,%66,%67}, %68")
SDPA__CU_WG_DEF(128, __half, "f16", SDPA__CU_PL_64, SDPA__CU_DN_64, "%64, %65", "%66", "{%64,%65,%66,%67}, %68")
SDPA__CU_WG_DEF(256, __nv_bfloat16, "bf16", SDPA__CU_PL_128, SDPA__CU_DN_128, "%128, %129", "%130", "{%128,%129,%130,%131}, %132")
SDPA__CU_WG_DEF(256, __half, "f16", SDPA__CU_PL_128, SDPA__CU_DN_128, "%128, %129", "%130", "{%128,%129,%130,%131}, %132")
#undef SDPA__CU_WG_DEF
#undef SDPA__CU_PL_32
#undef SDPA__CU_PL_64
#undef SDPA__CU_PL_128
#undef SDPA__CU_D8
#undef SDPA__CU_D32
#undef SDPA__CU_D64
#undef SDPA__CU_DN_32
#undef SDPA__CU_DN_64
#undef SDPA__CU_DN_128

/* FlashAttention's forward on Hopper's warpgroup MMA. A block of 256
 * threads, two warpgroups of 64 query rows each (BM = 128), walks the key
 * tiles of BN = 128 that its rows can see, two stages deep through
 * cp.async: S = Q K^T by wgmma with Q and K from shared memory, the online
 * softmax in registers exactly as sdpa__cu_fwd_mma does it (the
 * accumulators of a warp are mma.sync's C fragments for its 16 rows), P
 * rounded to T in registers as the A operand of O += P V (V from shared
 * memory, read transposed). Head dims DP = 64, 128 or 256 with BN = 128,
 * 128 or 64 (columns past D are zero-filled); at DP = 64 two blocks share an
 * SM (128 registers), so one block's start and end overlap the other's
 * products (ptxas then reports its wgmma serialized for want of registers;
 * measured, it is 1.03-1.47x the one-block 256-key version, 0.96x at L
 * 16384 causal). No extras and a positive scale (the host's choice), not int8
 * mode. Shared memory: (BM + 5 BN) DP * 2 bytes plus 1 KiB for alignment.
 * At the end each warpgroup writes its O rows, rounded to T, into its own Q
 * rows and stores them in 16-byte chunks of a row (when out has q's dtype
 * and 16-byte aligned rows; else element by element from registers). */
#define SDPA__CU_WG_BM 128
template <typename T, int DP, int BN>
__global__ void __launch_bounds__(256, DP == 64 ? 2 : 1) sdpa__cu_fwd_wg(const sdpa__cu_args a, int nqb)
{
#ifdef SDPA__CU_WG_BODY
    constexpr int BM = SDPA__CU_WG_BM, CH = DP / 8, NT = BN / 8, DT = DP / 8, NS = DP / 64;
    constexpr uint32_t QB = BM * 128, KB = BN * 128; /* bytes of one 64-column slab */
    const float LOG2E = 1.4426950408889634f;
    extern __shared__ __align__(16) unsigned char sdpa__cu_sm[];
    const uint32_t sbase = (sdpa__cu_sa(sdpa__cu_sm) + 1023u) & ~1023u;
    const uint32_t Qs = sbase, Ks = Qs + NS * QB, Vs = Ks + 2 * NS * KB; /* Q, K [2], V [3] */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, wg = warp >> 2;
    const int64_t s = (int64_t)blockIdx.x / nqb, h = blockIdx.y;
    const int i0 = (nqb - 1 - (int)(blockIdx.x % (unsigned)nqb)) * BM; /* longest causal rows first */
    sdpa__cu_seq sq;
    sdpa__cu_seq_get(a, s, &sq);
    if (i0 >= sq.nq) return;
    const int nq = (int)sq.nq, vq = (int)sq.vq, vk = (int)sq.vk;
    const int64_t g = h / a.G;
    const int ilast = (i0 + BM < nq ? i0 + BM : nq) - 1;
    int klo = 0, khi = -1, flo = 1, fhi = 0;
    if (i0 < vq) {
        int64_t iv = ilast < vq - 1 ? ilast : vq - 1, l0, h0, l1, h1;
        sdpa__cu_range_raw(a, i0, vq, vk, &l0, &h0);
        sdpa__cu_range_raw(a, iv, vq, vk, &l1, &h1);
        klo = (int)(l0 > 0 ? l0 : 0);
        khi = (int)(h1 < vk - 1 ? h1 : vk - 1);
        if (iv == ilast && l1 <= h0) { flo = (int)l1; fhi = (int)h0; }
    }
    const int wrow = i0 + warp * 16 + (lane >> 2); /* this lane's first row; the second is 8 below */
    int rlo[2], rhi[2];
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        int64_t l, hh;
        sdpa__cu_range(a.causal, a.window, a.wl, a.wr, wrow + rr * 8, vq, vk, &l, &hh);
        rlo[rr] = (int)l;
        rhi[rr] = (int)hh;
    }
    const char *qb = a.q + (sq.bt * a.qs[0] + h * a.qs[1] + sq.q0 * a.qs[2]) * 2;
    const char *kb = a.k + (sq.bt * a.ks[0] + g * a.ks[1] + sq.k0 * a.ks[2]) * 2;
    const char *vb = a.v + (sq.bt * a.vs[0] + g * a.vs[1] + sq.k0 * a.vs[2]) * 2;
    /* Each thread copies the 16-byte column cc of rows r0, r0 + 256 / CH, ... */
    constexpr int RS = 256 / CH;
    const int r0 = tid / CH, cc = tid % CH;
    const bool cok = cc * 8 < a.D;
    /* swizzled offset of (row r, chunk cc): r0 + it * RS keeps r & 7 (RS is a multiple of 8) */
    const uint32_t coff = (uint32_t)((((cc & 7) ^ (r0 & 7)) << 4) + r0 * 128);
    static_assert(RS % 8 == 0 && BM % RS == 0 && BN % RS == 0, "whole tiles per thread, rows keep their swizzle phase");
#pragma unroll
    for (int it = 0; it < BM / RS; it++) {
        const int r = r0 + it * RS;
        const bool ok = cok && i0 + r < vq;
        sdpa__cu_cp16(Qs + (uint32_t)(cc >> 3) * QB + coff + (uint32_t)(it * RS * 128),
                      ok ? (const void *)(qb + (int64_t)(i0 + r) * a.qs[2] * 2 + cc * 16) : a.q, ok ? 16 : 0);
    }
    sdpa__cu_cp_commit();
    const int jstart = khi >= klo ? klo / BN * BN : 0;
    const int ntiles = khi >= klo ? (khi - jstart) / BN + 1 : 0;
    const int64_t kst = a.ks[2] * 2, vst = a.vs[2] * 2;
    /* tile t: K in stage t & 1, V in stage t % 3 (the second warpgroup reads
     * V one tile late) */
    auto load_kv = [&](int t) {
        const int j0 = jstart + t * BN;
        const char *kp = kb + (int64_t)(j0 + r0) * kst + cc * 16, *vp = vb + (int64_t)(j0 + r0) * vst + cc * 16;
        const uint32_t off = (uint32_t)(cc >> 3) * KB + coff;
        const uint32_t kd = Ks + (uint32_t)(t & 1) * NS * KB + off, vd = Vs + (uint32_t)(t % 3) * NS * KB + off;
#pragma unroll
        for (int it = 0; it < BN / RS; it++) {
            const int j = j0 + r0 + it * RS;
            const bool ok = cok && j >= klo && j <= khi;
            sdpa__cu_cp16(kd + (uint32_t)(it * RS * 128), ok ? (const void *)(kp + it * RS * kst) : a.k, ok ? 16 : 0);
            sdpa__cu_cp16(vd + (uint32_t)(it * RS * 128), ok ? (const void *)(vp + it * RS * vst) : a.v, ok ? 16 : 0);
        }
    };
    if (ntiles > 0) load_kv(0);
    sdpa__cu_cp_commit();

    float o[DT * 4], sc[NT * 4], mrow[2], lrow[2];
#pragma unroll
    for (int i = 0; i < DT * 4; i++) o[i] = 0.0f;
    mrow[0] = mrow[1] = -INFINITY;
    lrow[0] = lrow[1] = 0.0f;
    const float sl2 = a.scale * LOG2E;
    const uint32_t qw = Qs + (uint32_t)wg * 64 * 128; /* this warpgroup's 64 rows */

    /* S = Q K^T of tile t into sc */
    auto s_gemm = [&](int t) {
        const uint32_t Kt = Ks + (uint32_t)(t & 1) * NS * KB;
        sdpa__cu_wg_fence();
#pragma unroll
        for (int kk = 0; kk < DP / 16; kk++) {
            const uint32_t ko = (uint32_t)(kk & 3) * 32; /* 16 columns: 32 bytes into the slab */
            sdpa__cu_wg<BN, T>::ss(sc, sdpa__cu_wg_desc(qw + (uint32_t)(kk >> 2) * QB + ko, 16, 1024),
                                   sdpa__cu_wg_desc(Kt + (uint32_t)(kk >> 2) * KB + ko, 16, 1024), kk > 0);
        }
        sdpa__cu_wg_commit();
        sdpa__cu_wg_wait0();
        sdpa__cu_wg_hold<NT * 4>(sc);
    };
    /* the online softmax of tile t's scores in sc, then O += P V */
    auto softmax_pv = [&](int t) {
        const uint32_t Vt = Vs + (uint32_t)(t % 3) * NS * KB;
        const int j0 = jstart + t * BN;
        const bool need = !(j0 >= flo && j0 + BN - 1 <= fhi);
        float mxs[2];
        bool grow = false;
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            const int jb = j0 + 2 * (lane & 3), lo = rlo[rr] - jb, hi = rhi[rr] - jb;
            if (need) {
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
#pragma unroll
                    for (int e = 0; e < 2; e++)
                        if (nt * 8 + e < lo || nt * 8 + e > hi) sc[nt * 4 + 2 * rr + e] = -INFINITY;
            }
            float mx = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < NT; nt++) mx = fmaxf(mx, fmaxf(sc[nt * 4 + 2 * rr], sc[nt * 4 + 2 * rr + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            mxs[rr] = mx * sl2;
            grow |= mxs[rr] > mrow[rr] + 8.0f;
        }
        /* as in sdpa__cu_fwd_mma: rescale only when a row's max grows past 2^8 */
        if (__any_sync(0xffffffffu, grow)) {
#pragma unroll
            for (int rr = 0; rr < 2; rr++) {
                const float mn = fmaxf(mrow[rr], mxs[rr]), mu = mn == -INFINITY ? 0.0f : mn;
                const float alpha = sdpa__cu_ex2(mrow[rr] - mu);
                mrow[rr] = mn;
                lrow[rr] *= alpha;
#pragma unroll
                for (int dt = 0; dt < DT; dt++) {
                    o[dt * 4 + 2 * rr] *= alpha;
                    o[dt * 4 + 2 * rr + 1] *= alpha;
                }
            }
        }
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            const float nmu = mrow[rr] == -INFINITY ? 0.0f : -mrow[rr];
            float ls = 0.0f;
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float p = sdpa__cu_ex2(fmaf(sc[nt * 4 + 2 * rr + e], sl2, nmu));
                    sc[nt * 4 + 2 * rr + e] = p;
                    ls += p;
                }
            lrow[rr] += ls;
        }
        uint32_t pa[BN / 16][4];
#pragma unroll
        for (int kt = 0; kt < BN / 16; kt++) {
            pa[kt][0] = sdpa__cu_mma<T>::pack(sc[8 * kt + 0], sc[8 * kt + 1]);
            pa[kt][1] = sdpa__cu_mma<T>::pack(sc[8 * kt + 2], sc[8 * kt + 3]);
            pa[kt][2] = sdpa__cu_mma<T>::pack(sc[8 * kt + 4], sc[8 * kt + 5]);
            pa[kt][3] = sdpa__cu_mma<T>::pack(sc[8 * kt + 6], sc[8 * kt + 7]);
        }
        sdpa__cu_wg_fence();
#pragma unroll
        for (int kt = 0; kt < BN / 16; kt++)
            sdpa__cu_wg<DP, T>::rs(o, pa[kt], sdpa__cu_wg_desc(Vt + (uint32_t)kt * 16 * 128, KB, 1024));
        sdpa__cu_wg_commit();
        sdpa__cu_wg_wait0();
        sdpa__cu_wg_hold<DT * 4>(o);
    };

    /* The two warpgroups run half a tile apart, so that one's softmax meets
     * the other's products on the tensor cores: in step t the first computes
     * S of tile t, its softmax and P V; the second the softmax and P V of
     * tile t - 1, then S of tile t (kept in registers across the barrier).
     * One barrier per step: after it, tile t is in shared memory (each
     * thread waited for its own copies) and nobody reads the stages tile
     * t + 1 then overwrites (K of t - 1, V of t - 2). */
    for (int t = 0; t <= ntiles; t++) {
        sdpa__cu_cp_wait<0>();
        /* cp.async wrote through the generic proxy; wgmma reads through the async one */
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        __syncthreads();
        if (t + 1 < ntiles) {
            load_kv(t + 1);
            sdpa__cu_cp_commit();
        }
        if (wg == 0) {
            if (t < ntiles) {
                s_gemm(t);
                softmax_pv(t);
            }
        } else {
            if (t > 0) softmax_pv(t - 1);
            if (t < ntiles) s_gemm(t);
        }
    }
    sdpa__cu_cp_wait<0>();

    const int64_t oes = a.odt == SDPA_F32 ? 4 : 2;
    float inv[2];
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        float l = lrow[rr];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        inv[rr] = l > 0.0f ? 1.0f / l : (l != l ? l : 0.0f);
        const int i = wrow + rr * 8;
        if (a.lse && (lane & 3) == 0 && i < nq) {
            const int64_t ix = (sq.bt * a.Hq + h) * a.Lq + sq.q0 + i;
            a.lse[ix] = l > 0.0f ? (mrow[rr] + log2f(l)) * 0.6931471805599453f : (l != l ? l : -INFINITY);
        }
    }
    if (a.ovec) {
        /* O through this warpgroup's own Q rows (its last S has been waited
         * for), swizzled as Q is, then out in 16-byte row chunks */
        const int rl = (warp & 3) * 16 + (lane >> 2);
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            const int r = rl + rr * 8;
#pragma unroll
            for (int dt = 0; dt < DT; dt++) {
                const uint32_t w = sdpa__cu_mma<T>::pack(o[dt * 4 + 2 * rr] * inv[rr], o[dt * 4 + 2 * rr + 1] * inv[rr]);
                const uint32_t ad = qw + (uint32_t)(dt >> 3) * QB + (uint32_t)r * 128 + ((uint32_t)((dt & 7) ^ (r & 7)) << 4) + (uint32_t)(lane & 3) * 4;
                asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(ad), "r"(w) : "memory");
            }
        }
        asm volatile("bar.sync %0, 128;\n" ::"r"(1 + wg) : "memory");
        const int tw = tid & 127;
#pragma unroll
        for (int it = 0; it < 64 * CH / 128; it++) {
            const int idx = tw + it * 128, r = idx / CH, c = idx % CH, i = i0 + wg * 64 + r;
            if (i < nq && c * 8 < a.Dv) {
                uint4 u;
                const uint32_t ad = qw + (uint32_t)(c >> 3) * QB + (uint32_t)r * 128 + ((uint32_t)((c & 7) ^ (r & 7)) << 4);
                asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n" : "=r"(u.x), "=r"(u.y), "=r"(u.z), "=r"(u.w) : "r"(ad) : "memory");
                *(uint4 *)(a.o + (sq.bt * a.os[0] + h * a.os[1] + (sq.q0 + i) * a.os[2]) * 2 + c * 16) = u;
            }
        }
        return;
    }
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        const int i = wrow + rr * 8;
        if (i >= nq) continue;
        char *op = a.o + (sq.bt * a.os[0] + h * a.os[1] + (sq.q0 + i) * a.os[2]) * oes;
#pragma unroll
        for (int dt = 0; dt < DT; dt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int col = dt * 8 + 2 * (lane & 3) + e;
                if (col < a.Dv) sdpa__cu_st(op + col * oes, a.odt, o[dt * 4 + 2 * rr + e] * inv[rr]);
            }
    }
#else
    (void)a;
    (void)nqb;
#endif
}

/* 8 elements d0..d0 + 7 of a row of dtype dt as floats (zeros past n); vec:
 * 16-byte loads (the caller knows the row is aligned for them) */
__device__ __forceinline__ void sdpa__cu_ld8(const char *row, int dt, int64_t d0, int64_t n, bool vec, float *x)
{
    if (vec && d0 + 8 <= n) {
        if (dt == SDPA_F16 || dt == SDPA_BF16) {
            uint4 u = *(const uint4 *)(row + d0 * 2);
            const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
            for (int e = 0; e < 4; e++) {
                if (dt == SDPA_F16) {
                    __half2 hh = *(const __half2 *)&w[e];
                    float2 f = __half22float2(hh);
                    x[2 * e] = f.x; x[2 * e + 1] = f.y;
                } else {
                    x[2 * e] = __uint_as_float(w[e] << 16);
                    x[2 * e + 1] = __uint_as_float(w[e] & 0xffff0000u);
                }
            }
        } else if (dt == SDPA_I8) {
            uint2 u = *(const uint2 *)(row + d0);
#pragma unroll
            for (int e = 0; e < 4; e++) {
                x[e] = (float)(signed char)((u.x >> (8 * e)) & 0xff);
                x[4 + e] = (float)(signed char)((u.y >> (8 * e)) & 0xff);
            }
        } else {
            float4 a = *(const float4 *)(row + d0 * 4), b = *(const float4 *)(row + d0 * 4 + 16);
            x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w; x[4] = b.x; x[5] = b.y; x[6] = b.z; x[7] = b.w;
        }
        return;
    }
#pragma unroll
    for (int e = 0; e < 8; e++) x[e] = d0 + e < n ? sdpa__cu_ld(row + (d0 + e) * sdpa__cu_esize_d(dt), dt) : 0.0f;
}

/* ---- int8 mode: the pre-pass ---------------------------------------------- */

/* Both pre-pass kernels give a row TPR threads of 8 elements each (TPR a
 * power of 2, 8 TPR >= dp), several rows per warp: shuffles stay inside a
 * row's group (xor offsets below TPR) and every lane runs the same trips. */
#define SDPA__CU_QROWS 64 /* rows per block of sdpa__cu_i8_quant */

/* The mean key of (sequence blockIdx.x, kv head blockIdx.y) over its visible
 * keys, in fp32 in a fixed order (each group of TPR threads sums rows
 * grp, grp + NG, ..., four loads in flight; then thread d sums the groups in
 * order); zeros without smoothing, without keys, or when not finite (a NaN
 * or Inf key: the scores it reaches turn NaN through its scale instead). */
__global__ void __launch_bounds__(512) sdpa__cu_i8_mean(const sdpa__cu_args a, float *mean, int smooth, int vec, int tpr)
{
    __shared__ float part[512 * 8];
    const int64_t s = blockIdx.x, g = blockIdx.y, es = sdpa__cu_esize_d(a.qdt);
    const int sub = threadIdx.x % tpr, grp = threadIdx.x / tpr, ng = 512 / tpr;
    sdpa__cu_seq sq;
    sdpa__cu_seq_get(a, s, &sq);
    float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    const char *kb = a.k + (sq.bt * a.ks[0] + g * a.ks[1] + sq.k0 * a.ks[2]) * es;
    const int64_t kst = a.ks[2] * es;
    if (smooth && sub * 8 < a.D)
        for (int64_t j = grp; j < sq.vk; j += 4 * ng) {
            float x[4][8];
#pragma unroll
            for (int u = 0; u < 4; u++)
                if (j + u * ng < sq.vk) sdpa__cu_ld8(kb + (j + u * ng) * kst, a.qdt, sub * 8, a.D, vec != 0, x[u]);
                else for (int e = 0; e < 8; e++) x[u][e] = 0.0f;
#pragma unroll
            for (int u = 0; u < 4; u++)
#pragma unroll
                for (int e = 0; e < 8; e++) acc[e] += x[u][e];
        }
#pragma unroll
    for (int e = 0; e < 8; e++) part[threadIdx.x * 8 + e] = acc[e]; /* = part[grp][sub * 8 + e] */
    __syncthreads();
    const int d = threadIdx.x;
    float m = 0.0f;
    if (d < a.D && sq.vk > 0) {
        for (int k = 0; k < ng; k++) m += part[k * tpr * 8 + d];
        m /= (float)sq.vk;
    }
    const int bad = __syncthreads_or(!(fabsf(m) <= 3.4028235e38f));
    if (d < a.D) mean[(s * a.Hkv + g) * a.D + d] = bad ? 0.0f : m;
}

/* Rows of k (isq = 0: B * Hkv * Lk rows, the mean of its sequence and kv
 * head subtracted) or of q (isq = 1: B * Hq * Lq rows); block (x, y): rows
 * x * QROWS.. of (batch, head) y (and y + gridDim.y, ...). sc = max|x| / 127
 * (times the attention scale for q), x / sc rounded to nearest even (never
 * -128) into dp bytes with zeros past D; q rows also get shift = scale *
 * q.mean, the score the smoothing took away. A row with NaN or Inf gets
 * sc = NaN (its scores turn NaN) and zero bytes; an all-zero row sc = 0. */
__global__ void __launch_bounds__(256) sdpa__cu_i8_quant(const sdpa__cu_args a, int isq, int vec, int tpr, int64_t dp, const float *mean,
                                                         int8_t *dst, float *scl, float *shift)
{
    const int sub = threadIdx.x % tpr, grp = threadIdx.x / tpr, ng = 256 / tpr;
    const int64_t H = isq ? a.Hq : a.Hkv, L = isq ? a.Lq : a.Lk, es = sdpa__cu_esize_d(a.qdt);
    const int64_t *st = isq ? a.qs : a.ks;
    for (int64_t y = blockIdx.y; y < a.B * H; y += gridDim.y) {
        const int64_t b = y / H, hh = y % H, g = isq ? hh / a.G : hh;
        for (int jj = 0; jj < SDPA__CU_QROWS; jj += ng) {
            const int64_t j = (int64_t)blockIdx.x * SDPA__CU_QROWS + jj + grp, r = y * L + j;
            const bool row = j < L;
            int64_t s = b;
            if (a.packed && row) { /* the last sequence whose first row is <= j */
                const int64_t *cu = isq ? a.cuq : a.cuk;
                int64_t lo = 0, hi = a.nseq - 1;
                while (lo < hi) {
                    const int64_t mid = (lo + hi + 1) / 2;
                    if (cu[mid] <= j) lo = mid; else hi = mid - 1;
                }
                s = lo;
            }
            const float *mn = mean + (s * a.Hkv + g) * a.D;
            float x[8], amax = 0.0f, dot = 0.0f;
            int bad = 0;
            if (row && sub * 8 < a.D) sdpa__cu_ld8((isq ? a.q : a.k) + (b * st[0] + hh * st[1] + j * st[2]) * es, a.qdt, sub * 8, a.D,
                                                   vec != 0, x);
#pragma unroll
            for (int t = 0; t < 8; t++) {
                const int64_t d = sub * 8 + t;
                if (row && d < a.D) {
                    if (isq) dot = fmaf(x[t], mn[d], dot);
                    else x[t] -= mn[d];
                } else {
                    x[t] = 0.0f;
                }
                bad |= !(fabsf(x[t]) <= 3.4028235e38f);
                amax = fmaxf(amax, fabsf(x[t]));
            }
            for (int o = tpr / 2; o > 0; o >>= 1) {
                amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
                dot += __shfl_xor_sync(0xffffffffu, dot, o);
                bad |= __shfl_xor_sync(0xffffffffu, bad, o);
            }
            if (!row) continue;
            const float inv = !bad && amax > 0.0f ? 127.0f / amax : 0.0f;
            uint32_t w[2] = {0u, 0u};
#pragma unroll
            for (int t = 0; t < 8; t++) {
                int v = __float2int_rn(x[t] * inv);
                v = v < -127 ? -127 : v > 127 ? 127 : v;
                w[t / 4] |= (uint32_t)(v & 0xff) << (8 * (t % 4));
            }
            if (sub * 8 < dp) *(uint2 *)(void *)(dst + r * dp + sub * 8) = make_uint2(w[0], w[1]);
            if (sub == 0) {
                const float sc = bad ? __int_as_float(0x7fc00000) : amax / 127.0f;
                scl[r] = isq ? sc * a.scale : sc;
                if (isq) shift[r] = a.scale * dot;
            }
        }
    }
}

/* ---- host: validation and launch ----------------------------------------- */

typedef struct sdpa__cu_plan {
    sdpa__cu_args a;
    int64_t maxnq;              /* most query rows of one sequence */
    int mma;                    /* eligible for the tensor-core kernel */
    int i8, i8_smooth;          /* int8 mode (params->precision), K smoothed */
    /* host arrays to copy to the device */
    const float *alibi;
    const int64_t *sq, *skv, *cuq, *cuk;
    int64_t ncu;                /* entries of each cu_seqlens array */
} sdpa__cu_plan;

static int sdpa__cu_plan_make(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v, const sdpa_tensor *out,
                              const sdpa_params *pp, sdpa__cu_plan *P)
{
    sdpa_params zero;
    const sdpa_params *p = pp;
    sdpa__cu_tens tq, tk, tv, to, tm;
    sdpa__cu_args *A = &P->a;
    int rc, d;
    int64_t s, lse_n = 0;
    uintptr_t lse_lo = 0, lse_hi = 0;
    memset(P, 0, sizeof *P);
    memset(&zero, 0, sizeof zero);
    memset(&tm, 0, sizeof tm);
    if (!p) p = &zero;
    if ((rc = sdpa__cu_tensor(pp, "q", q, &tq)) != SDPA_OK) return rc;
    if ((rc = sdpa__cu_tensor(pp, "k", k, &tk)) != SDPA_OK) return rc;
    if ((rc = sdpa__cu_tensor(pp, "v", v, &tv)) != SDPA_OK) return rc;
    if ((rc = sdpa__cu_tensor(pp, "out", out, &to)) != SDPA_OK) return rc;
    if (!sdpa__cu_isf(tv.dtype) || tq.dtype != tv.dtype || tk.dtype != tv.dtype)
        return sdpa__cu_fail(pp, SDPA_ERR_DTYPE, "sdpa_cuda: q, k, v must share one dtype of F32, F16, BF16 (got %d, %d, %d)",
                             tq.dtype, tk.dtype, tv.dtype);
    if (!sdpa__cu_isf(to.dtype))
        return sdpa__cu_fail(pp, SDPA_ERR_DTYPE, "sdpa_cuda: out dtype must be F32, F16 or BF16 (got %d)", to.dtype);
    A->B = tq.n[0]; A->Hq = tq.n[1]; A->Lq = tq.n[2]; A->D = tq.n[3];
    A->Hkv = tk.n[1]; A->Lk = tk.n[2]; A->Dv = tv.n[3];
    if (tk.n[0] != A->B || tv.n[0] != A->B || to.n[0] != A->B)
        return sdpa__cu_fail(pp, SDPA_ERR_SHAPE, "sdpa_cuda: batch sizes differ (q %lld, k %lld, v %lld, out %lld)",
                             (long long)A->B, (long long)tk.n[0], (long long)tv.n[0], (long long)to.n[0]);
    if (tk.n[3] != A->D)
        return sdpa__cu_fail(pp, SDPA_ERR_SHAPE, "sdpa_cuda: head_dim of q (%lld) and k (%lld) differ", (long long)A->D,
                             (long long)tk.n[3]);
    if (A->D < 1) return sdpa__cu_fail(pp, SDPA_ERR_SHAPE, "sdpa_cuda: head_dim of q and k must be at least 1");
    if (A->D > SDPA__CU_MAXD || A->Dv > SDPA__CU_MAXD)
        return sdpa__cu_fail(pp, SDPA_ERR_SHAPE, "sdpa_cuda: head dims up to %d are supported (got %lld, %lld)", SDPA__CU_MAXD,
                             (long long)A->D, (long long)A->Dv);
    if (tv.n[1] != A->Hkv || tv.n[2] != A->Lk)
        return sdpa__cu_fail(pp, SDPA_ERR_SHAPE, "sdpa_cuda: v is [%lld, %lld, %lld, .] but k is [., %lld, %lld, .]",
                             (long long)tv.n[0], (long long)tv.n[1], (long long)tv.n[2], (long long)A->Hkv, (long long)A->Lk);
    if (to.n[1] != A->Hq || to.n[2] != A->Lq || to.n[3] != A->Dv)
        return sdpa__cu_fail(pp, SDPA_ERR_SHAPE, "sdpa_cuda: out must be [B, Hq, Lq, Dv] = [%lld, %lld, %lld, %lld]",
                             (long long)A->B, (long long)A->Hq, (long long)A->Lq, (long long)A->Dv);
    if (A->Hkv == 0 ? A->Hq != 0 : A->Hq % A->Hkv != 0)
        return sdpa__cu_fail(pp, SDPA_ERR_HEADS, "sdpa_cuda: q heads (%lld) must be a multiple of kv heads (%lld)",
                             (long long)A->Hq, (long long)A->Hkv);
    A->G = A->Hkv ? A->Hq / A->Hkv : 1;
    if (!sdpa__cu_injective(&to))
        return sdpa__cu_fail(pp, SDPA_ERR_STRIDE, "sdpa_cuda: out strides make distinct elements overlap");
    if (p->mask) {
        static const char *dn[4] = {"batch", "heads", "Lq", "Lk"};
        int64_t want[4];
        if ((rc = sdpa__cu_tensor(pp, "mask", p->mask, &tm)) != SDPA_OK)
            return rc == SDPA_ERR_DTYPE ? sdpa__cu_fail(pp, SDPA_ERR_MASK, "sdpa_cuda: mask has unknown dtype") : rc;
        if (tm.dtype != SDPA_F32 && tm.dtype != SDPA_BOOL)
            return sdpa__cu_fail(pp, SDPA_ERR_MASK, "sdpa_cuda: mask dtype must be F32 (additive) or BOOL");
        want[0] = A->B; want[1] = A->Hq; want[2] = A->Lq; want[3] = A->Lk;
        for (d = 0; d < 4; d++)
            if (tm.n[d] != 1 && tm.n[d] != want[d])
                return sdpa__cu_fail(pp, SDPA_ERR_MASK, "sdpa_cuda: mask.shape[%d] (%s) is %lld, must be 1 or %lld", d, dn[d],
                                     (long long)tm.n[d], (long long)want[d]);
        A->has_mask = 1;
        A->mask_bool = tm.dtype == SDPA_BOOL;
    }
    if (p->scale != p->scale || p->scale == (float)INFINITY || p->scale == -(float)INFINITY)
        return sdpa__cu_fail(pp, SDPA_ERR_PARAM, "sdpa_cuda: scale must be finite");
    A->scale = p->scale != 0.0f ? p->scale : (float)(1.0 / sqrt((double)A->D));
    if (!(p->softcap >= 0.0f) || p->softcap == (float)INFINITY)
        return sdpa__cu_fail(pp, SDPA_ERR_PARAM, "sdpa_cuda: softcap must be finite and >= 0");
    A->softcap = p->softcap;
    if (p->causal != SDPA_CAUSAL_NONE && p->causal != SDPA_CAUSAL_TOP_LEFT && p->causal != SDPA_CAUSAL_BOTTOM_RIGHT)
        return sdpa__cu_fail(pp, SDPA_ERR_PARAM, "sdpa_cuda: causal = %d is not an sdpa_causal value", (int)p->causal);
    A->causal = (int)p->causal;
    A->window = p->window != 0;
    {
        int64_t far = (A->Lq > INT64_MAX / 4 || A->Lk > INT64_MAX / 4) ? INT64_MAX / 4 : A->Lq + A->Lk;
        A->wl = p->window_left < far ? p->window_left : far;
        A->wr = p->window_right < far ? p->window_right : far;
    }
    if (p->score_mod) return sdpa__cu_fail(pp, SDPA_ERR_PARAM, "sdpa_cuda: score_mod (a host function) is not supported");
    if (p->precision < SDPA_PRECISION_DEFAULT || p->precision > SDPA_PRECISION_INT8_QK_BF16_PV)
        return sdpa__cu_fail(pp, SDPA_ERR_PARAM, "sdpa_cuda: precision = %d is not an sdpa_precision value", p->precision);
    /* BF16_PV changes nothing here: the tensor-core kernel already rounds P
     * to the input type, and the fp32 kernel has no bf16 products; so
     * INT8_QK_BF16_PV computes as INT8_QK */
    P->i8 = p->precision == SDPA_PRECISION_INT8_QK || p->precision == SDPA_PRECISION_INT8_QK_NOSMOOTH ||
            p->precision == SDPA_PRECISION_INT8_QK_BF16_PV;
    P->i8_smooth = p->precision == SDPA_PRECISION_INT8_QK || p->precision == SDPA_PRECISION_INT8_QK_BF16_PV;
    if (p->num_threads < 0) return sdpa__cu_fail(pp, SDPA_ERR_PARAM, "sdpa_cuda: num_threads must be >= 0");
    P->alibi = p->alibi_slopes;

    if ((p->seqlens_q || p->seqlens_kv) && (p->cu_seqlens_q || p->cu_seqlens_kv))
        return sdpa__cu_fail(pp, SDPA_ERR_SEQLENS, "sdpa_cuda: seqlens_* and cu_seqlens_* cannot be combined");
    for (s = 0; s < A->B; s++) {
        if (p->seqlens_q && (p->seqlens_q[s] < 0 || p->seqlens_q[s] > A->Lq))
            return sdpa__cu_fail(pp, SDPA_ERR_SEQLENS, "sdpa_cuda: seqlens_q[%lld] = %lld is outside [0, %lld]", (long long)s,
                                 (long long)p->seqlens_q[s], (long long)A->Lq);
        if (p->seqlens_kv && (p->seqlens_kv[s] < 0 || p->seqlens_kv[s] > A->Lk))
            return sdpa__cu_fail(pp, SDPA_ERR_SEQLENS, "sdpa_cuda: seqlens_kv[%lld] = %lld is outside [0, %lld]", (long long)s,
                                 (long long)p->seqlens_kv[s], (long long)A->Lk);
    }
    P->sq = p->seqlens_q;
    P->skv = p->seqlens_kv;
    P->maxnq = A->Lq;
    if (p->cu_seqlens_q || p->cu_seqlens_kv) {
        if (!p->cu_seqlens_q || !p->cu_seqlens_kv)
            return sdpa__cu_fail(pp, SDPA_ERR_SEQLENS, "sdpa_cuda: cu_seqlens_q and cu_seqlens_kv must be given together");
        if (A->B != 1)
            return sdpa__cu_fail(pp, SDPA_ERR_SEQLENS, "sdpa_cuda: packed sequences (cu_seqlens) need batch 1, got %lld",
                                 (long long)A->B);
        if (p->num_seqs < 0 || p->num_seqs > INT64_MAX / 16 - 2)
            return sdpa__cu_fail(pp, SDPA_ERR_SEQLENS, "sdpa_cuda: num_seqs = %lld is invalid", (long long)p->num_seqs);
        if (p->cu_seqlens_q[0] != 0 || p->cu_seqlens_kv[0] != 0)
            return sdpa__cu_fail(pp, SDPA_ERR_SEQLENS, "sdpa_cuda: cu_seqlens must start at 0");
        P->maxnq = 0;
        for (s = 0; s < p->num_seqs; s++) {
            if (p->cu_seqlens_q[s + 1] < p->cu_seqlens_q[s] || p->cu_seqlens_kv[s + 1] < p->cu_seqlens_kv[s])
                return sdpa__cu_fail(pp, SDPA_ERR_SEQLENS, "sdpa_cuda: cu_seqlens decrease at index %lld", (long long)s + 1);
            if (p->cu_seqlens_q[s + 1] - p->cu_seqlens_q[s] > P->maxnq) P->maxnq = p->cu_seqlens_q[s + 1] - p->cu_seqlens_q[s];
        }
        if (p->cu_seqlens_q[p->num_seqs] > A->Lq || p->cu_seqlens_kv[p->num_seqs] > A->Lk)
            return sdpa__cu_fail(pp, SDPA_ERR_SEQLENS, "sdpa_cuda: cu_seqlens end past Lq (%lld) or Lk (%lld)", (long long)A->Lq,
                                 (long long)A->Lk);
        if (A->Lq - p->cu_seqlens_q[p->num_seqs] > P->maxnq) P->maxnq = A->Lq - p->cu_seqlens_q[p->num_seqs];
        A->packed = 1;
        P->cuq = p->cu_seqlens_q;
        P->cuk = p->cu_seqlens_kv;
        P->ncu = p->num_seqs + 1;
        A->nseq = p->num_seqs + 1;
    } else {
        A->nseq = A->B;
    }
    if (p->lse) {
        if (!sdpa__cu_mul(A->B, A->Hq, &lse_n) || !sdpa__cu_mul(lse_n, A->Lq, &lse_n) || lse_n > INT64_MAX / 4)
            return sdpa__cu_fail(pp, SDPA_ERR_OVERFLOW, "sdpa_cuda: lse size overflows");
        lse_lo = (uintptr_t)p->lse;
        lse_hi = lse_lo + (uintptr_t)lse_n * 4u;
        if (lse_n > 0 && lse_hi < lse_lo) return sdpa__cu_fail(pp, SDPA_ERR_OVERFLOW, "sdpa_cuda: lse wraps around the address space");
    }
    {
        const sdpa__cu_tens *in[4] = {&tq, &tk, &tv, &tm};
        static const char *nm[4] = {"q", "k", "v", "mask"};
        int i;
        for (i = 0; i < 4; i++) {
            if (sdpa__cu_overlap(in[i], to.lo, to.hi)) return sdpa__cu_fail(pp, SDPA_ERR_ALIAS, "sdpa_cuda: out overlaps %s", nm[i]);
            if (sdpa__cu_overlap(in[i], lse_lo, lse_hi)) return sdpa__cu_fail(pp, SDPA_ERR_ALIAS, "sdpa_cuda: lse overlaps %s", nm[i]);
        }
        if (sdpa__cu_overlap(&to, lse_lo, lse_hi)) return sdpa__cu_fail(pp, SDPA_ERR_ALIAS, "sdpa_cuda: lse overlaps out");
    }
    if (A->Hq > 65535) return sdpa__cu_fail(pp, SDPA_ERR_SHAPE, "sdpa_cuda: at most 65535 q heads (a grid dimension)");
    if (A->nseq > 0 && (P->maxnq + 3) / 4 > (int64_t)0x7fffffff / A->nseq)
        return sdpa__cu_fail(pp, SDPA_ERR_OVERFLOW, "sdpa_cuda: too many query rows for one launch");

    A->q = tq.data; A->k = tk.data; A->v = tv.data; A->o = (char *)(uintptr_t)to.data; A->m = tm.data;
    A->lse = p->lse;
    for (d = 0; d < 4; d++) { A->qs[d] = tq.s[d]; A->ks[d] = tk.s[d]; A->vs[d] = tv.s[d]; A->os[d] = to.s[d]; A->ms[d] = tm.s[d]; }
    A->qdt = tq.dtype;
    A->odt = to.dtype;
    A->ovec = to.dtype == tq.dtype && (((uintptr_t)to.data | (uintptr_t)(to.s[0] | to.s[1] | to.s[2]) * 2) & 15) == 0;
    A->extras = p->softcap > 0.0f || p->alibi_slopes || A->has_mask;
    {
        int ok = (tq.dtype == SDPA_F16 || tq.dtype == SDPA_BF16) && A->D == A->Dv && A->D % 8 == 0;
        for (d = 0; d < 3 && ok; d++) ok = tq.s[d] % 8 == 0 && tk.s[d] % 8 == 0 && tv.s[d] % 8 == 0;
        ok = ok && ((uintptr_t)tq.data | (uintptr_t)tk.data | (uintptr_t)tv.data) % 16 == 0;
        ok = ok && A->Lq < ((int64_t)1 << 30) && A->Lk < ((int64_t)1 << 30); /* positions fit its int arithmetic */
        P->mma = ok;
    }
    return SDPA_OK;
}

/* Copies the host arrays the kernels read (slopes, lengths) into one device
 * buffer taken on the stream; *dbuf is NULL when there are none. */
static int sdpa__cu_upload(sdpa__cu_plan *P, const sdpa_params *pp, cudaStream_t st, void **dbuf)
{
    sdpa__cu_args *A = &P->a;
    int64_t nal = P->alibi ? A->Hq : 0, nsq = P->sq ? A->B : 0, nskv = P->skv ? A->B : 0, ncu = P->cuq ? P->ncu : 0;
    size_t bytes = (size_t)(nal * 4 + 7) / 8 * 8 + (size_t)(nsq + nskv + 2 * ncu) * 8, off = 0;
    char *h, *dev = NULL;
    cudaError_t e;
    *dbuf = NULL;
    if (bytes == 0) return SDPA_OK;
    h = (char *)malloc(bytes);
    if (!h) return sdpa__cu_fail(pp, SDPA_ERR_NOMEM, "sdpa_cuda: out of host memory");
    if ((e = cudaMallocAsync((void **)&dev, bytes, st)) != cudaSuccess) { free(h); return sdpa__cu_err(pp, e, "cudaMallocAsync"); }
    if (nal) { memcpy(h, P->alibi, (size_t)nal * 4); A->alibi = (const float *)dev; off = (size_t)(nal * 4 + 7) / 8 * 8; }
    if (nsq) { memcpy(h + off, P->sq, (size_t)nsq * 8); A->sq = (const int64_t *)(dev + off); off += (size_t)nsq * 8; }
    if (nskv) { memcpy(h + off, P->skv, (size_t)nskv * 8); A->skv = (const int64_t *)(dev + off); off += (size_t)nskv * 8; }
    if (ncu) {
        memcpy(h + off, P->cuq, (size_t)ncu * 8); A->cuq = (const int64_t *)(dev + off); off += (size_t)ncu * 8;
        memcpy(h + off, P->cuk, (size_t)ncu * 8); A->cuk = (const int64_t *)(dev + off); off += (size_t)ncu * 8;
    }
    e = cudaMemcpyAsync(dev, h, bytes, cudaMemcpyHostToDevice, st); /* pageable: staged before it returns */
    free(h);
    if (e != cudaSuccess) { cudaFreeAsync(dev, st); return sdpa__cu_err(pp, e, "cudaMemcpyAsync"); }
    *dbuf = dev;
    return SDPA_OK;
}

template <typename T, int DP, int NW, int MT, int BN, bool EX, bool I8>
static cudaError_t sdpa__cu_launch_mma(const sdpa__cu_plan *P, cudaStream_t st)
{
    constexpr int BM = NW * 16 * MT, LQK = I8 ? DP / 2 + 8 : DP + 8;
    const size_t smem = (size_t)(BM + 2 * BN) * LQK * sizeof(T) + (size_t)2 * BN * (DP + 8) * sizeof(T) + (I8 ? 2 * BN * 4 : 0);
    cudaError_t e = cudaFuncSetAttribute(sdpa__cu_fwd_mma<T, DP, NW, MT, BN, EX, I8>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    int64_t nqb = (P->maxnq + BM - 1) / BM;
    if (nqb == 0 || P->a.nseq == 0 || P->a.Hq == 0) return cudaSuccess;
    dim3 grid((unsigned)(nqb * P->a.nseq), (unsigned)P->a.Hq);
    sdpa__cu_fwd_mma<T, DP, NW, MT, BN, EX, I8><<<grid, NW * 32, smem, st>>>(P->a, (int)nqb);
    return cudaGetLastError();
}

template <typename T, int DP, int NW, int MT, int BN, bool I8>
static cudaError_t sdpa__cu_launch_mma_x(const sdpa__cu_plan *P, cudaStream_t st)
{
    return P->a.extras || !(P->a.scale > 0.0f) ? sdpa__cu_launch_mma<T, DP, NW, MT, BN, true, I8>(P, st)
                                               : sdpa__cu_launch_mma<T, DP, NW, MT, BN, false, I8>(P, st);
}

/* The head dim the tensor-core kernel is compiled for, for head_dim D */
static int64_t sdpa__cu_mma_dp(int64_t D) { return D <= 64 ? 64 : D <= 96 ? 96 : D <= 128 ? 128 : 256; }

template <typename T, bool I8> static cudaError_t sdpa__cu_launch_mma_t(const sdpa__cu_plan *P, cudaStream_t st)
{
    const int64_t D = P->a.D;
#ifdef SDPA_CUDA_FEW_KERNELS
    if (D >= 0) return cudaErrorNotSupported;                 /* always: no launch in a check build */
    return sdpa__cu_launch_mma<T, 128, 4, 2, 32, false, I8>(P, st); /* one instantiation, compiled */
#else
    switch (sdpa__cu_mma_dp(D)) { /* the int8 pre-pass sizes its rows by the same choice */
    case 64: return sdpa__cu_launch_mma_x<T, 64, 4, 2, 64, I8>(P, st);
    case 96: return sdpa__cu_launch_mma_x<T, 96, 4, 2, 32, I8>(P, st);
    case 128: return sdpa__cu_launch_mma_x<T, 128, 4, 2, 32, I8>(P, st);
    default: return sdpa__cu_launch_mma_x<T, 256, 4, 1, 32, I8>(P, st);
    }
#endif
}

template <typename T, int DP, int BN> static cudaError_t sdpa__cu_launch_wg(const sdpa__cu_plan *P, cudaStream_t st)
{
    const size_t smem = (size_t)(SDPA__CU_WG_BM + 5 * BN) * DP * 2 + 1024;
    cudaError_t e = cudaFuncSetAttribute(sdpa__cu_fwd_wg<T, DP, BN>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    int64_t nqb = (P->maxnq + SDPA__CU_WG_BM - 1) / SDPA__CU_WG_BM;
    if (nqb == 0 || P->a.nseq == 0 || P->a.Hq == 0) return cudaSuccess;
    dim3 grid((unsigned)(nqb * P->a.nseq), (unsigned)P->a.Hq);
    sdpa__cu_fwd_wg<T, DP, BN><<<grid, 256, smem, st>>>(P->a, (int)nqb);
    return cudaGetLastError();
}

template <typename T> static cudaError_t sdpa__cu_launch_wg_t(const sdpa__cu_plan *P, cudaStream_t st)
{
#ifdef SDPA_CUDA_FEW_KERNELS
    if (P->a.D >= 0) return cudaErrorNotSupported; /* always: no launch in a check build */
    return sdpa__cu_launch_wg<T, 128, 128>(P, st);
#else
    return P->a.D <= 64    ? sdpa__cu_launch_wg<T, 64, 128>(P, st)
           : P->a.D <= 128 ? sdpa__cu_launch_wg<T, 128, 128>(P, st)
                           : sdpa__cu_launch_wg<T, 256, 64>(P, st);
#endif
}

/* int8 mode's scratch, in this order: k rows [B][Hkv][Lk][dp] and q rows
 * [B][Hq][Lq][dp] (int8), then k scales [B][Hkv][Lk], q scales and shifts
 * [B][Hq][Lq], means [nseq][Hkv][D] (fp32). dp: the tensor-core kernel's
 * head dim, or head_dim rounded up to 16 for the generic kernel. */
typedef struct sdpa__cu_i8lay {
    int64_t dp, nk, nq, bytes;
} sdpa__cu_i8lay;

static int sdpa__cu_i8_size(const sdpa__cu_plan *P, const sdpa_params *pp, int which, sdpa__cu_i8lay *L)
{
    const sdpa__cu_args *A = &P->a;
    int64_t t, b = 0;
    L->dp = which == SDPA_CUDA_KERNEL_MMA ? sdpa__cu_mma_dp(A->D) : (A->D + 15) / 16 * 16;
    if (!sdpa__cu_mul(A->B, A->Hkv, &L->nk) || !sdpa__cu_mul(L->nk, A->Lk, &L->nk) || !sdpa__cu_mul(A->B, A->Hq, &L->nq) ||
        !sdpa__cu_mul(L->nq, A->Lq, &L->nq) || !sdpa__cu_add(L->nk, L->nq, &t) || !sdpa__cu_mul(t, L->dp + 12, &b) ||
        !sdpa__cu_mul(A->nseq, A->Hkv, &t) || !sdpa__cu_mul(t, A->D, &t) || t > INT64_MAX / 8 || !sdpa__cu_add(b, 4 * t + 64, &b) ||
        (uint64_t)b > (uint64_t)SIZE_MAX)
        return sdpa__cu_fail(pp, SDPA_ERR_OVERFLOW, "sdpa_cuda: int8 mode: scratch size overflows");
    L->bytes = b;
    return SDPA_OK;
}

/* Runs the pre-pass into scratch taken on the stream (*dbuf) and points
 * P->a's q, k (strides too) and scales at its results. */
static int sdpa__cu_i8_prep(sdpa__cu_plan *P, const sdpa_params *pp, cudaStream_t st, const sdpa__cu_i8lay *L, void **dbuf)
{
    sdpa__cu_args *A = &P->a;
    char *dev = NULL;
    int8_t *kq, *qq;
    float *ksc, *qsc, *qmv, *mean;
    cudaError_t e;
    *dbuf = NULL;
    if ((e = cudaMallocAsync((void **)&dev, (size_t)L->bytes, st)) != cudaSuccess) return sdpa__cu_err(pp, e, "cudaMallocAsync");
    kq = (int8_t *)dev;
    qq = kq + L->nk * L->dp;
    ksc = (float *)(void *)(qq + L->nq * L->dp); /* dp is a multiple of 16 */
    qsc = ksc + L->nk;
    qmv = qsc + L->nq;
    mean = qmv + L->nq;
    /* rows fit 16-byte loads: aligned data, every stride a multiple of 16 bytes */
    const int64_t es = sdpa__cu_esize(A->qdt);
    int vq = (uintptr_t)A->q % 16 == 0, vk = (uintptr_t)A->k % 16 == 0, d;
    for (d = 0; d < 3; d++) {
        vq = vq && A->qs[d] * es % 16 == 0;
        vk = vk && A->ks[d] * es % 16 == 0;
    }
    int tpr = 8;
    while (tpr * 8 < L->dp) tpr *= 2; /* dp <= 256: tpr <= 32 */
    if (A->nseq > 0 && A->Hkv > 0) {
        dim3 grid((unsigned)A->nseq, (unsigned)A->Hkv);
        sdpa__cu_i8_mean<<<grid, 512, 0, st>>>(*A, mean, P->i8_smooth, vk, tpr);
    }
    if (L->nk > 0) { /* Lk < 2^30 on the tensor-core path; the generic path may need the y loop */
        dim3 grid((unsigned)((A->Lk + SDPA__CU_QROWS - 1) / SDPA__CU_QROWS), (unsigned)(A->B * A->Hkv < 65535 ? A->B * A->Hkv : 65535));
        sdpa__cu_i8_quant<<<grid, 256, 0, st>>>(*A, 0, vk, tpr, L->dp, mean, kq, ksc, NULL);
    }
    if (L->nq > 0) {
        dim3 grid((unsigned)((A->Lq + SDPA__CU_QROWS - 1) / SDPA__CU_QROWS), (unsigned)(A->B * A->Hq < 65535 ? A->B * A->Hq : 65535));
        sdpa__cu_i8_quant<<<grid, 256, 0, st>>>(*A, 1, vq, tpr, L->dp, mean, qq, qsc, qmv);
    }
    if ((e = cudaGetLastError()) != cudaSuccess) { cudaFreeAsync(dev, st); return sdpa__cu_err(pp, e, "int8 pre-pass launch"); }
    A->q = (const char *)qq;
    A->k = (const char *)kq;
    A->qs[3] = A->ks[3] = 1;
    A->qs[2] = A->ks[2] = L->dp;
    A->qs[1] = A->Lq * L->dp; A->qs[0] = A->Hq * A->qs[1];
    A->ks[1] = A->Lk * L->dp; A->ks[0] = A->Hkv * A->ks[1];
    A->qsc = qsc; A->qmv = qmv; A->ksc = ksc;
    *dbuf = dev;
    return SDPA_OK;
}

/* Whether the current device runs sdpa__cu_fwd_wg: compute capability 9.0
 * and this program's code for it built for sm_90a (the kernel's flag, read
 * once per device: the first call on a device copies 4 bytes from it). */
static int sdpa__cu_wg_ok(void)
{
#ifdef SDPA_CUDA_NO_WGMMA
    return 0;
#else
    static std::atomic<int> state[64]; /* per device: 0 unknown, 1 no, 2 yes (zero-initialised: static) */
    int dev = 0, major = 0, minor = 0, st, flag = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) { cudaGetLastError(); return 0; }
    if (dev < 0 || dev >= 64) return 0;
    st = state[dev].load(std::memory_order_relaxed);
    if (st) return st == 2;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    if (major == 9 && minor == 0 && cudaMemcpyFromSymbol(&flag, sdpa__cu_wg_flag, sizeof flag) != cudaSuccess) {
        cudaGetLastError();
        flag = 0;
    }
    st = major == 9 && minor == 0 && flag == 1 ? 2 : 1;
    state[dev].store(st, std::memory_order_relaxed);
    return st == 2;
#endif
}

/* The wgmma kernel's cases: sdpa__cu_fwd_wg's, on a device that has it */
static int sdpa__cu_wg_fits(const sdpa__cu_plan *P)
{
    return P->mma && !P->i8 && !P->a.extras && P->a.scale > 0.0f && sdpa__cu_wg_ok();
}

static int sdpa__cu_choose(const sdpa__cu_plan *P, const sdpa_params *pp, sdpa_cuda_kernel kernel)
{
    if (kernel == SDPA_CUDA_KERNEL_GENERIC) return SDPA_CUDA_KERNEL_GENERIC;
    if (kernel == SDPA_CUDA_KERNEL_WGMMA && !sdpa__cu_wg_fits(P))
        return sdpa__cu_fail(pp, SDPA_ERR_PATH, "sdpa_cuda: the wgmma kernel needs a compute capability 9.0 GPU, this program "
                                                "built for sm_90a, and a call the tensor-core kernel takes with no softcap, "
                                                "ALiBi or mask, scale > 0 and not int8 mode");
    if (kernel == SDPA_CUDA_KERNEL_WGMMA) return SDPA_CUDA_KERNEL_WGMMA;
    if (kernel == SDPA_CUDA_KERNEL_MMA && !P->mma)
        return sdpa__cu_fail(pp, SDPA_ERR_PATH, "sdpa_cuda: the tensor-core kernel needs F16/BF16 q, k, v, head_dim == head_dim_v, "
                                                "a multiple of 8, strides multiples of 8, 16-byte aligned data and "
                                                "Lq, Lk < 2^30");
    if (kernel != SDPA_CUDA_KERNEL_AUTO && kernel != SDPA_CUDA_KERNEL_MMA)
        return sdpa__cu_fail(pp, SDPA_ERR_PATH, "sdpa_cuda: kernel = %d is not an sdpa_cuda_kernel value", (int)kernel);
    /* AUTO takes wgmma wherever it runs: on an H100 it measured 1.05-1.20x the
     * mma.sync kernel at hd 64, 1.16-1.39x at hd 128 and 1.5-2.0x at hd 256,
     * L 1024 to 16384 */
    if (kernel == SDPA_CUDA_KERNEL_AUTO && sdpa__cu_wg_fits(P)) return SDPA_CUDA_KERNEL_WGMMA;
    return P->mma ? SDPA_CUDA_KERNEL_MMA : SDPA_CUDA_KERNEL_GENERIC;
}

SDPA_CUDA_API int sdpa_cuda_kernel_for(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v, const sdpa_tensor *out,
                                       const sdpa_params *params)
{
    sdpa__cu_plan P;
    int rc = sdpa__cu_plan_make(q, k, v, out, params, &P);
    return rc != SDPA_OK ? rc : sdpa__cu_choose(&P, params, SDPA_CUDA_KERNEL_AUTO);
}

SDPA_CUDA_API int sdpa_cuda_attention_kernel(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v,
                                             const sdpa_tensor *out, const sdpa_params *params, cudaStream_t stream,
                                             sdpa_cuda_kernel kernel)
{
    sdpa__cu_plan P;
    sdpa__cu_i8lay L = {0, 0, 0, 0};
    void *dbuf = NULL, *i8buf = NULL;
    cudaError_t e = cudaSuccess;
    int rc = sdpa__cu_plan_make(q, k, v, out, params, &P), which;
    if (rc != SDPA_OK) return rc;
    if ((which = sdpa__cu_choose(&P, params, kernel)) < 0) return which;
    if (P.i8 && (rc = sdpa__cu_i8_size(&P, params, which, &L)) != SDPA_OK) return rc;
    if (P.maxnq == 0 || P.a.Hq == 0 || P.a.nseq == 0) return SDPA_OK;
    if ((rc = sdpa__cu_upload(&P, params, stream, &dbuf)) != SDPA_OK) return rc;
    if (P.i8 && (rc = sdpa__cu_i8_prep(&P, params, stream, &L, &i8buf)) != SDPA_OK) {
        if (dbuf) cudaFreeAsync(dbuf, stream);
        return rc;
    }
    if (which == SDPA_CUDA_KERNEL_WGMMA) {
        e = P.a.qdt == SDPA_F16 ? sdpa__cu_launch_wg_t<__half>(&P, stream) : sdpa__cu_launch_wg_t<__nv_bfloat16>(&P, stream);
    } else if (which == SDPA_CUDA_KERNEL_MMA) {
        if (P.i8)
            e = P.a.qdt == SDPA_F16 ? sdpa__cu_launch_mma_t<__half, true>(&P, stream) : sdpa__cu_launch_mma_t<__nv_bfloat16, true>(&P, stream);
        else
            e = P.a.qdt == SDPA_F16 ? sdpa__cu_launch_mma_t<__half, false>(&P, stream) : sdpa__cu_launch_mma_t<__nv_bfloat16, false>(&P, stream);
    } else {
        int64_t nb = (P.maxnq + SDPA__CU_GW - 1) / SDPA__CU_GW;
        dim3 grid((unsigned)nb, (unsigned)P.a.Hq, 1);
        /* sequences beyond gridDim.z's limit go in several launches */
        for (int64_t s0 = 0; s0 < P.a.nseq && e == cudaSuccess; s0 += 65535) {
            sdpa__cu_args a = P.a;
            int64_t ns = P.a.nseq - s0 < 65535 ? P.a.nseq - s0 : 65535;
            a.seq0 = s0;
            grid.z = (unsigned)ns;
            sdpa__cu_fwd_generic<<<grid, 32 * SDPA__CU_GW, 0, stream>>>(a);
            e = cudaGetLastError();
        }
    }
    if (i8buf) cudaFreeAsync(i8buf, stream);
    if (dbuf) cudaFreeAsync(dbuf, stream);
    return e == cudaSuccess ? SDPA_OK : sdpa__cu_err(params, e, "kernel launch");
}

SDPA_CUDA_API int sdpa_cuda_attention(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v, const sdpa_tensor *out,
                                      const sdpa_params *params, cudaStream_t stream)
{
    return sdpa_cuda_attention_kernel(q, k, v, out, params, stream, SDPA_CUDA_KERNEL_AUTO);
}

/* ---- KV cache ------------------------------------------------------------- */

struct sdpa_cuda_kv_cache {
    int64_t nseq, H, D, Dv, ps, max_pages, esize;
    int dt;
    int64_t off_k, off_v, off_ks, off_vs, page_bytes;
    char *pool;          /* device: max_pages pages */
    int32_t *dtable;     /* device: [nseq][max_pages] page of each sequence's page slot */
    int32_t *table;      /* host copy */
    int64_t *len;        /* host: tokens of each sequence */
    int32_t *freel;      /* host: stack of free pages */
    int64_t nfree;
    char *errbuf;
    size_t errbuf_size;
    cudaMemPool_t scratch; /* decode scratch, kept between calls (has_scratch) */
    int has_scratch;
};

typedef struct sdpa__cu_kvargs {
    const char *pool;
    int64_t page_bytes, off_k, off_v, off_ks, off_vs, ps, tld;
    const int32_t *table;
    int dt;
    int64_t H, D, Dv;
} sdpa__cu_kvargs;

/* Positions are below 2^31 (append checks): 32-bit page arithmetic. */
__device__ __forceinline__ const char *sdpa__cu_kv_row(const sdpa__cu_kvargs &c, int64_t seq, int64_t pos, int64_t h, int v,
                                                       const float **scale)
{
    const uint32_t pu = (uint32_t)pos, psu = (uint32_t)c.ps, pi = pu / psu;
    const char *pg = c.pool + (int64_t)c.table[seq * c.tld + pi] * c.page_bytes;
    int64_t slot = (int64_t)(pu - pi * psu), es = c.dt == SDPA_F32 ? 4 : c.dt == SDPA_I8 ? 1 : 2;
    *scale = (const float *)(pg + (v ? c.off_vs : c.off_ks)) + h * c.ps + slot;
    return pg + (v ? c.off_v : c.off_k) + (h * c.ps + slot) * (v ? c.Dv : c.D) * es;
}

/* One warp per (token, head, K or V): the row converted (or quantised: one
 * scale per row, the rule of sdpa.h's cache) into its page slot. */
__global__ void sdpa__cu_kv_put(sdpa__cu_kvargs c, int64_t seq, int64_t pos0, const char *src, int sdt, int64_t s1, int64_t s2,
                                int v)
{
    const int lane = threadIdx.x & 31;
    const int64_t t = blockIdx.x, h = blockIdx.y, n = v ? c.Dv : c.D;
    const int64_t ses = sdpa__cu_esize_d(sdt);
    const char *row = src + (h * s1 + t * s2) * ses;
    const float *scp;
    char *dst = (char *)(uintptr_t)sdpa__cu_kv_row(c, seq, pos0 + t, h, v, &scp);
    if (c.dt != SDPA_I8) {
        for (int64_t d = lane; d < n; d += 32) sdpa__cu_st(dst + d * (c.dt == SDPA_F32 ? 4 : 2), c.dt, sdpa__cu_ld(row + d * ses, sdt));
        return;
    }
    float amax = 0.0f;
    int bad = 0;
    for (int64_t d = lane; d < n; d += 32) {
        float a = fabsf(sdpa__cu_ld(row + d * ses, sdt));
        if (!(a <= 3.402823466e38f)) bad = 1;
        else amax = fmaxf(amax, a);
    }
    for (int o = 16; o > 0; o >>= 1) {
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        bad |= __shfl_xor_sync(0xffffffffu, bad, o);
    }
    float *sc = (float *)(uintptr_t)scp;
    if (bad) {
        for (int64_t d = lane; d < n; d += 32) dst[d] = 0;
        if (lane == 0) *sc = __int_as_float(0x7fc00000);
        return;
    }
    const double inv = amax > 0.0f ? 127.0 / (double)amax : 0.0;
    for (int64_t d = lane; d < n; d += 32) {
        double y = (double)sdpa__cu_ld(row + d * ses, sdt) * inv;
        long long r = (long long)(y + (y >= 0.0 ? 0.5 : -0.5));
        dst[d] = (signed char)(r > 127 ? 127 : (r < -127 ? -127 : r));
    }
    if (lane == 0) *sc = (float)((double)amax / 127.0);
}

__global__ void sdpa__cu_kv_get(sdpa__cu_kvargs c, int64_t seq, int64_t pos0, char *dst, int ddt, int64_t s1, int64_t s2, int v)
{
    const int lane = threadIdx.x & 31;
    const int64_t t = blockIdx.x, h = blockIdx.y, n = v ? c.Dv : c.D;
    const int64_t des = sdpa__cu_esize_d(ddt), es = sdpa__cu_esize_d(c.dt);
    const float *scp;
    const char *row = sdpa__cu_kv_row(c, seq, pos0 + t, h, v, &scp);
    const float sc = c.dt == SDPA_I8 ? *scp : 1.0f;
    for (int64_t d = lane; d < n; d += 32) sdpa__cu_st(dst + (h * s1 + t * s2 + d) * des, ddt, sdpa__cu_ld(row + d * es, c.dt) * sc);
}

/* Per batch entry of a cache attention call. */
typedef struct sdpa__cu_kvb {
    int64_t seq, len, vq;
} sdpa__cu_kvb;

/* Batch entries up to this many travel in the kernels' parameters (no copy
 * to the device before the launch); more go through device memory. */
#define SDPA__CU_BIN 64
typedef struct sdpa__cu_dargs {
    sdpa__cu_kvargs c;
    const sdpa__cu_kvb *bi;     /* NULL: bin */
    sdpa__cu_kvb bin[SDPA__CU_BIN];
    const char *q;
    int64_t qs[4];
    int qdt;
    char *o;
    int64_t os[4];
    int odt;
    float *lse;
    float *part;                /* [B][Hq][n][nsplit][Dv + 2]: o (unnormalised), m (log2), l */
    int64_t B, Hq, G, n, nrb, nsplit, chunk;
    float scale, softcap;
    int causal, window, vec;
    int q16;                    /* q's address and strides multiples of 16 bytes: 16-byte loads of its rows */
    int direct;                 /* one split, every row live: the fast kernels write out and lse themselves */
    int64_t wl, wr;
    const float *alibi;
} sdpa__cu_dargs;

/* Batch entry b's sequence, length and query count: from the parameters or device memory */
__device__ __forceinline__ sdpa__cu_kvb sdpa__cu_dbatch(const sdpa__cu_dargs &a, int64_t b) { return a.bi ? a.bi[b] : a.bin[b]; }

/* Keys [*lo, *hi] of the cache that query i (of the sequence's last bi.vq)
 * sees, bottom-right causal and window applied; *hi < *lo when none. */
__device__ __forceinline__ void sdpa__cu_drange(const sdpa__cu_dargs &a, const sdpa__cu_kvb &bi, int64_t i, int64_t *lo, int64_t *hi)
{
    const int64_t pos = bi.len - bi.vq + i;
    int64_t l = 0, h = bi.len - 1;
    if (a.causal != SDPA_CAUSAL_NONE && pos < h) h = pos;
    if (a.window && a.wl >= 0 && pos - a.wl > l) l = pos - a.wl;
    if (a.window && a.wr >= 0 && pos + a.wr < h) h = pos + a.wr;
    *lo = l;
    *hi = h;
}

/* Split sp's keys [*k0, *k1) that some row of the block sees (rows' union
 * [kmin, kmax]; positions < 2^31); returns the split's first key. */
__device__ __forceinline__ int sdpa__cu_dsplit(const sdpa__cu_dargs &a, const sdpa__cu_kvb &bi, int64_t sp, int kmin, int kmax, int *k0,
                                               int *k1)
{
    const int cb = (int)(sp * a.chunk);
    *k0 = cb;
    *k1 = (int)(sp * a.chunk + a.chunk < bi.len ? sp * a.chunk + a.chunk : bi.len);
    if (kmin > *k0) *k0 = kmin;
    if (kmax + 1 < *k1) *k1 = kmax + 1;
    return cb;
}

/* A decode row's finish from its merged m (log2 units), l and unnormalised
 * o: shared by the merge kernel and the one-split decode blocks, so that
 * both write the same bits. l = 0 (no key) gives 0 and lse = -inf; a NaN l
 * keeps the row NaN. */
__device__ __forceinline__ float sdpa__cu_dfin_inv(float L) { return L > 0.0f ? 1.0f / L : (L != L ? L : 0.0f); }
__device__ __forceinline__ float sdpa__cu_dfin_out(float acc, float L, float inv) { return L > 0.0f || L != L ? acc * inv : 0.0f; }
__device__ __forceinline__ float sdpa__cu_dfin_lse(float M, float L)
{
    return L > 0.0f ? (M + log2f(L)) * 0.6931471805599453f : (L != L ? L : -INFINITY);
}

/* The end of a decode block: its NW warps' partial rows (o unnormalised,
 * m in log2 units, l; warp w's row r at w * RS + r in shared memory) merged
 * in warp order, then row r0 + r's part for split sp written to a.part; with
 * a.direct (one split), the row's output and lse instead, computed as
 * sdpa__cu_merge computes them from the one part (the same bits). */
template <int NW, int RS, int D>
__device__ __forceinline__ void sdpa__cu_dmerge(const sdpa__cu_dargs &a, const sdpa__cu_kvb &bi, int64_t b, int64_t g, int64_t r0, int64_t sp,
                                                int nr, const float *sm_o, const float *sm_m, const float *sm_l)
{
    for (int x = threadIdx.x; x < nr * D; x += NW * 32) {
        const int r = x / D, d = x % D;
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < NW; w++) M = fmaxf(M, sm_m[w * RS + r]);
        float o = 0.0f, L = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; w++)
            if (sm_l[w * RS + r] != 0.0f) {
                const float f = exp2f(sm_m[w * RS + r] - M);
                o += f * sm_o[(w * RS + r) * D + d];
                L += f * sm_l[w * RS + r];
            }
        const int64_t hh = (r0 + r) / bi.vq, i = (r0 + r) % bi.vq, h = g * a.G + hh;
        if (a.direct) {
            const int64_t oes = a.odt == SDPA_F32 ? 4 : 2;
            const float acc = 0.0f + o; /* -0 -> +0, as the merge's sum */
            sdpa__cu_st(a.o + (b * a.os[0] + h * a.os[1] + i * a.os[2] + d) * oes, a.odt, sdpa__cu_dfin_out(acc, L, sdpa__cu_dfin_inv(L)));
            if (a.lse && d == 0) a.lse[(b * a.Hq + h) * a.n + i] = sdpa__cu_dfin_lse(M, L);
            continue;
        }
        float *pp = a.part + (((b * a.Hq + h) * a.n + i) * a.nsplit + sp) * (D + 2);
        pp[d] = o;
        if (d == 0) { pp[D] = M; pp[D + 1] = L; }
    }
    sdpa__cu_pdl_trigger();
}

/* Flash-decoding over the paged cache. Block (split x, kv head and row block
 * y, batch entry z) takes up to RB query rows of one kv head (its G heads x
 * the n queries) against keys [x * chunk, (x + 1) * chunk) of the sequence.
 * Groups of L lanes own one key each (lane l: elements 8l..8l+7 of the row,
 * 16-byte loads), U keys per group per step: the group's dot products reduce
 * by shuffles into a score tile in shared memory, a warp per row updates the
 * running max and sum, then each group adds p * V of its keys into its
 * accumulators; the groups' sums meet in shared memory at the end, in a
 * fixed order. K and V are read once per row block: the bytes are the
 * cache's, the arithmetic ~4 flops per byte. */
template <int L, int RB>
__global__ void __launch_bounds__(128) sdpa__cu_decode(const sdpa__cu_dargs a)
{
    constexpr int NG = 128 / L, U = RB >= 8 ? 2 : RB >= 4 ? 4 : 8, T = NG * U, DX = 8 * L;
    const float LOG2E = 1.4426950408889634f;
    __shared__ float S[RB][T];
    __shared__ float alpha_s[RB], m_s[RB], l_s[RB];
    __shared__ int64_t rlo[RB], rhi[RB];
    __shared__ float red[NG * RB * DX > 8 ? NG * RB * DX : 8];
    const int tid = threadIdx.x, warp = tid >> 5, grp = tid / L, gl = tid % L;
    const int64_t b = blockIdx.z, sp = blockIdx.x;
    const int64_t g = blockIdx.y / a.nrb, rb = blockIdx.y % a.nrb;
    const sdpa__cu_kvb bi = sdpa__cu_dbatch(a, b);
    const int64_t R = a.G * bi.vq, r0 = rb * RB;
    const int nr = (int)(R - r0 < RB ? (R - r0 > 0 ? R - r0 : 0) : RB);
    const bool ext = a.softcap > 0.0f || a.alibi;
    const float qmul = ext ? a.scale : a.scale * LOG2E;
    const int64_t es = a.c.dt == SDPA_F32 ? 4 : a.c.dt == SDPA_I8 ? 1 : 2;

    float qr[RB][8], acc[RB][8];
#pragma unroll
    for (int r = 0; r < RB; r++) {
        int64_t lo = 0, hi = -1;
#pragma unroll
        for (int e = 0; e < 8; e++) { qr[r][e] = 0.0f; acc[r][e] = 0.0f; }
        if (r < nr) {
            const int64_t hh = (r0 + r) / bi.vq, i = (r0 + r) % bi.vq, h = g * a.G + hh;
            const char *qp = a.q + (b * a.qs[0] + h * a.qs[1] + i * a.qs[2]) * sdpa__cu_esize_d(a.qdt);
            sdpa__cu_ld8(qp, a.qdt, (int64_t)gl * 8, a.c.D, false, qr[r]);
#pragma unroll
            for (int e = 0; e < 8; e++) qr[r][e] *= qmul;
            sdpa__cu_drange(a, bi, i, &lo, &hi);
        }
        if (tid == 0) { m_s[r] = -INFINITY; l_s[r] = 0.0f; rlo[r] = lo; rhi[r] = hi; }
    }
    __syncthreads();
    int64_t k0 = sp * a.chunk, k1 = k0 + a.chunk < bi.len ? k0 + a.chunk : bi.len;
    {   /* the keys some row of the block sees */
        int64_t lo = INT64_MAX, hi = -1;
        for (int r = 0; r < nr; r++)
            if (rhi[r] >= rlo[r]) { lo = rlo[r] < lo ? rlo[r] : lo; hi = rhi[r] > hi ? rhi[r] : hi; }
        if (lo > k0) k0 = lo;
        if (hi + 1 < k1) k1 = hi + 1;
    }
    __syncthreads();
    for (int64_t jt = k0 - (k0 - sp * a.chunk) % T; jt < k1; jt += T) {
        float kf[U][8], vf[U][8], ksc[U], vsc[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int64_t j = jt + u * NG + grp;
            ksc[u] = vsc[u] = 1.0f;
            if (j >= k0 && j < k1) {
                const float *ks, *vs;
                const char *kp = sdpa__cu_kv_row(a.c, bi.seq, j, g, 0, &ks), *vp = sdpa__cu_kv_row(a.c, bi.seq, j, g, 1, &vs);
                sdpa__cu_ld8(kp, a.c.dt, (int64_t)gl * 8, a.c.D, a.vec, kf[u]);
                sdpa__cu_ld8(vp, a.c.dt, (int64_t)gl * 8, a.c.Dv, a.vec, vf[u]);
                if (a.c.dt == SDPA_I8) { ksc[u] = *ks; vsc[u] = *vs; }
            } else {
#pragma unroll
                for (int e = 0; e < 8; e++) kf[u][e] = vf[u][e] = 0.0f;
            }
        }
        (void)es;
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int64_t j = jt + u * NG + grp;
#pragma unroll
            for (int r = 0; r < RB; r++) {
                if (r >= nr) break;
                float part = 0.0f;
#pragma unroll
                for (int e = 0; e < 8; e++) part += qr[r][e] * kf[u][e];
#pragma unroll
                for (int o = L / 2; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
                if (gl == 0) {
                    float x = part * ksc[u];
                    if (j < k0 || j >= k1 || j < rlo[r] || j > rhi[r]) {
                        x = -INFINITY;
                    } else if (ext) {
                        if (a.softcap > 0.0f) x = a.softcap * tanhf(x / a.softcap);
                        if (a.alibi) {
                            const int64_t hh = (r0 + r) / bi.vq, i = (r0 + r) % bi.vq;
                            int64_t dist = bi.len - bi.vq + i - j;
                            x -= a.alibi[g * a.G + hh] * (float)(dist < 0 ? -dist : dist);
                        }
                        x *= LOG2E;
                    }
                    S[r][u * NG + grp] = x;
                }
            }
        }
        __syncthreads();
        for (int r = warp; r < nr; r += 4) {
            float mx = -INFINITY;
            for (int j = tid & 31; j < T; j += 32) mx = fmaxf(mx, S[r][j]);
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            const float mo = m_s[r], mn = fmaxf(mo, mx), mu = mn == -INFINITY ? 0.0f : mn;
            float sum = 0.0f;
            for (int j = tid & 31; j < T; j += 32) {
                float p = exp2f(S[r][j] - mu);
                S[r][j] = p;
                sum += p;
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            __syncwarp();
            if ((tid & 31) == 0) {
                const float al = exp2f(mo - mu);
                alpha_s[r] = al;
                l_s[r] = l_s[r] * al + sum;
                m_s[r] = mn;
            }
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < RB; r++) {
            if (r >= nr) break;
            const float al = alpha_s[r];
#pragma unroll
            for (int e = 0; e < 8; e++) acc[r][e] *= al;
#pragma unroll
            for (int u = 0; u < U; u++) {
                const float p = S[r][u * NG + grp] * vsc[u];
                if (p != 0.0f || p != p)
#pragma unroll
                    for (int e = 0; e < 8; e++) acc[r][e] += p * vf[u][e];
            }
        }
        __syncthreads();
    }
    /* the groups' partial sums, added in group order */
#pragma unroll
    for (int r = 0; r < RB; r++) {
        if (r >= nr) break;
#pragma unroll
        for (int e = 0; e < 8; e++) red[(grp * RB + r) * DX + gl * 8 + e] = acc[r][e];
    }
    __syncthreads();
    const int64_t Dv = a.c.Dv;
    for (int64_t x = tid; x < (int64_t)nr * Dv; x += 128) {
        const int r = (int)(x / Dv), d = (int)(x % Dv);
        float s = 0.0f;
        for (int gg = 0; gg < NG; gg++) s += red[(gg * RB + r) * DX + d];
        const int64_t hh = (r0 + r) / bi.vq, i = (r0 + r) % bi.vq, h = g * a.G + hh;
        float *pp = a.part + (((b * a.Hq + h) * a.n + i) * a.nsplit + sp) * (Dv + 2);
        pp[d] = s;
        if (d == 0) { pp[Dv] = m_s[r]; pp[Dv + 1] = l_s[r]; }
    }
    if (Dv == 0)
        for (int r = tid; r < nr; r += 128) {
            const int64_t hh = (r0 + r) / bi.vq, i = (r0 + r) % bi.vq, h = g * a.G + hh;
            float *pp = a.part + (((b * a.Hq + h) * a.n + i) * a.nsplit + sp) * 2;
            pp[0] = m_s[r]; pp[1] = l_s[r];
        }
}

/* E cache elements (8 of F16/BF16: 16 bytes; 8 or 16 of I8) as floats. I8 by the
 * 2^23 trick: the byte, its sign bit flipped, as the mantissa of 2^23 + 128 +
 * x (one PRMT and one FADD per element, no I2F). */
template <int ST, int E> __device__ __forceinline__ void sdpa__cu_cvt(const uint4 u, float *x)
{
    if (ST == SDPA_I8) {
        const uint32_t w[4] = {u.x ^ 0x80808080u, u.y ^ 0x80808080u, u.z ^ 0x80808080u, u.w ^ 0x80808080u};
#pragma unroll
        for (int e = 0; e < E; e++) x[e] = __uint_as_float(__byte_perm(w[e / 4], 0x4b000000u, 0x7540 | (e % 4))) - 8388736.0f;
    } else {
        const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int e = 0; e < 4; e++) {
            if (ST == SDPA_F16) {
                float2 f = __half22float2(*(const __half2 *)&w[e]);
                x[2 * e] = f.x; x[2 * e + 1] = f.y;
            } else {
                x[2 * e] = __uint_as_float(w[e] << 16);
                x[2 * e + 1] = __uint_as_float(w[e] & 0xffff0000u);
            }
        }
    }
}

/* Flash-decoding over the paged cache, fast path: F16/BF16/I8 storage,
 * head_dim == head_dim_v == D in {64, 128, 256}. Block (split x, kv head and
 * row block y, batch z), 4 warps; the block's RB query rows (its kv head's G
 * heads x n queries) against keys [x * chunk, (x + 1) * chunk). Each warp
 * runs its own online softmax over steps of KS keys (warp w: steps w, w + 4,
 * ...), so the loop has no block barrier: D/E lanes own a key (E = 8
 * elements each, one 16-byte load; I8: 16 elements in one 16-byte load when
 * RB = 1, else 8 bytes), U keys per group per step; the
 * dot products reduce by xor shuffles inside the group, the step's max
 * across groups. Loads in flight: with 16-bit pages RB = 1 keeps the step's
 * 2U loads in registers, issued before any use; I8 pages and RB >= 4 copy
 * each lane's own K/V chunks (and I8 scales) with cp.async into a private
 * S-stage ring in shared memory, S - 1 steps ahead, so each lane waits on
 * its own copies only (no barrier); a step inside one page and the split
 * (all but a split's ends) copies from one address per lane at constant
 * offsets, with no per-key checks; softcap and ALiBi are one uniform branch
 * a step. I8 MHA, hd 128: 1-3% less time on the H100 with the same splits
 * (ncu before: DRAM 87% busy, issue slots 66%, so the H200's 1.4x the
 * bandwidth asked for more issue than was left), and with the splits of
 * sdpa_cuda_kv_cache_attention since the same day 8-23% on the H200. The
 * register kernels measured 1-4% slower with the branch moved, so they
 * keep it per key. At the end the groups' sums meet by shuffles and the 4
 * warps' in shared memory, in a fixed order. Bytes: the cache's K and V
 * rows (and scales) once per row block.
 * I8 with one row (MHA decode) kept its loads in registers too until
 * 2026-11-24: 163 registers, 3 blocks per SM, nothing in flight while a
 * step computed. Its ring (2 stages of 4 keys, 16-byte chunks, at most 128
 * registers so 4 blocks per SM), H100, MHA, 32 heads, hd 128, bench.py
 * against the header before in the same run, us: B 1 4k 38.2 -> 31.7,
 * B 1 32k 143.5 -> 130.3, B 16 4k 236.4 -> 215.1, B 16 32k 1614 -> 1524,
 * B 64 4k 812.0 -> 763.2, B 64 32k 6365 -> 6008 (H200: 5-23% less time).
 * The same ring for 16-bit pages (4 stages of 4 keys) measured slower
 * there (B 1 4k 44.4 -> 49.6, B 16 4k 372.1 -> 383.2): they keep the
 * registers. */
template <int ST, int D, int RB> struct sdpa__cu_dfc {
    /* E elements per lane: 16 for I8 with one row (16-byte chunks there too) */
    static constexpr bool I1 = ST == SDPA_I8 && RB <= 1;
    static constexpr int E = I1 ? 16 : 8;
    static constexpr int NW = 4, LK = D / E, KW = 32 / LK, U = RB <= 1 ? (I1 ? 4 : 8) : RB <= 4 ? 4 : 2, KS = U * KW,
                         S = RB > 1 ? 16 / U : I1 ? 2 : 0, EB = ST == SDPA_I8 ? 1 : 2, CB = E * EB; /* bytes of a lane's chunk */
    /* the launch bounds' blocks per SM: I8 with one row, 4 (<= 128 registers) */
    static constexpr int MINB = I1 ? 4 : 1;
    static constexpr int RING = S * U * NW * 32 * (2 * CB + (ST == SDPA_I8 ? 8 : 0));
    static constexpr int MERGE = NW * RB * (D + 2) * 4;
    static constexpr int SMEM = RING > MERGE ? RING : MERGE;
};

template <int ST, int D, int RB>
__global__ void __launch_bounds__(128, sdpa__cu_dfc<ST, D, RB>::MINB) sdpa__cu_decode_fast(const sdpa__cu_dargs a)
{
    typedef sdpa__cu_dfc<ST, D, RB> C;
    constexpr int E = C::E, NW = C::NW, LK = C::LK, KW = C::KW, U = C::U, KS = C::KS, S = C::S, EB = C::EB, CB = C::CB;
    const float LOG2E = 1.4426950408889634f;
    extern __shared__ __align__(16) char sdpa__cu_dsm[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, grp = lane / LK, gl = lane % LK;
    const int64_t b = blockIdx.z, sp = blockIdx.x;
    const int64_t g = blockIdx.y / a.nrb, rb = blockIdx.y % a.nrb;
    const sdpa__cu_kvb bi = sdpa__cu_dbatch(a, b);
    const int64_t R = a.G * bi.vq, r0 = rb * RB;
    const int nr = (int)(R - r0 < RB ? (R - r0 > 0 ? R - r0 : 0) : RB);
    const bool ext = a.softcap > 0.0f || a.alibi;
    const float qmul = ext ? a.scale : a.scale * LOG2E;

    float qr[RB][E], acc[RB][E], m[RB], l[RB];
    int lo[RB], hi[RB];
    int kmin = 0x7fffffff, kmax = -1;
#pragma unroll
    for (int r = 0; r < RB; r++) {
        int64_t rl = 0, rh = -1;
        m[r] = -INFINITY; l[r] = 0.0f;
#pragma unroll
        for (int e = 0; e < E; e++) { qr[r][e] = 0.0f; acc[r][e] = 0.0f; }
        if (r < nr) {
            const int64_t hh = (r0 + r) / bi.vq, i = (r0 + r) % bi.vq, h = g * a.G + hh;
            const char *qp = a.q + (b * a.qs[0] + h * a.qs[1] + i * a.qs[2]) * sdpa__cu_esize_d(a.qdt);
            for (int e = 0; e < E; e += 8) sdpa__cu_ld8(qp, a.qdt, (int64_t)gl * E + e, D, false, qr[r] + e);
#pragma unroll
            for (int e = 0; e < E; e++) qr[r][e] *= qmul;
            sdpa__cu_drange(a, bi, i, &rl, &rh);
            if (rh >= rl) { kmin = (int)rl < kmin ? (int)rl : kmin; kmax = (int)rh > kmax ? (int)rh : kmax; }
        }
        lo[r] = (int)rl; hi[r] = rh < rl ? -1 : (int)rh;
    }
    int k0, k1;
    const int cb = sdpa__cu_dsplit(a, bi, sp, kmin, kmax, &k0, &k1);
    const uint32_t ps = (uint32_t)a.c.ps;
    const int32_t *tab = a.c.table + bi.seq * a.c.tld;
    const int64_t hk = g * (int64_t)ps * D * EB, hs = g * (int64_t)ps; /* the head's offset in a page (rows, scales) */
    /* warp w's steps start at jfirst + i * NW * KS, i < nsteps; none when no
     * row sees a key of the split (k0 may be INT_MAX then: no arithmetic on it) */
    const int jfirst = k0 < k1 ? cb + (k0 - cb) / KS * KS + warp * KS : 0;
    const int nsteps = k0 < k1 && jfirst < k1 ? (k1 - jfirst + NW * KS - 1) / (NW * KS) : 0;

    /* the step's page (when the whole step lies in one), then the addresses of
     * this lane's K/V chunks (and scales) for key jt + u * KW + grp (< len) */
    struct pgs { const char *pg; uint32_t s0; bool one; };
    auto page = [&](int jt) {
        pgs r;
        const uint32_t pi = (uint32_t)jt / ps;
        r.s0 = (uint32_t)jt - pi * ps;
        r.one = r.s0 + KS <= ps;
        r.pg = a.c.pool + (int64_t)tab[pi] * a.c.page_bytes;
        return r;
    };
    auto addr = [&](int jt, const pgs &P, int u, const char **kp, const char **vp, const float **ksp, const float **vsp) {
        const char *pg = P.pg;
        uint32_t slot = P.s0 + u * KW + grp;
        if (!P.one) { /* the step straddles pages */
            const uint32_t j = (uint32_t)(jt + u * KW + grp), pj = j / ps;
            pg = a.c.pool + (int64_t)tab[pj] * a.c.page_bytes;
            slot = j - pj * ps;
        }
        *kp = pg + a.c.off_k + hk + ((int64_t)slot * D + gl * E) * EB;
        *vp = pg + a.c.off_v + hk + ((int64_t)slot * D + gl * E) * EB;
        *ksp = (const float *)(pg + a.c.off_ks) + hs + slot;
        *vsp = (const float *)(pg + a.c.off_vs) + hs + slot;
    };
    /* the ring: [S][U][K, V][128 lanes] chunks, then [S][U][K, V][128] scales */
    const uint32_t ring = (uint32_t)__cvta_generic_to_shared(sdpa__cu_dsm);
    auto put = [&](uint32_t o, const char *kp, const char *vp, const float *ksp, const float *vsp) { /* one key's copies into slot o */
        if (CB == 8) { /* I8 with several rows: 8-byte chunks */
            asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(ring + o * CB), "l"(kp) : "memory");
            asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(ring + (o + 128) * CB), "l"(vp) : "memory");
        } else {
            sdpa__cu_cp16(ring + o * CB, kp, 16);
            sdpa__cu_cp16(ring + (o + 128) * CB, vp, 16);
        }
        if (ST == SDPA_I8) {
            const uint32_t so = (uint32_t)(S * U * 2 * 128 * CB) + o * 4;
            asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(ring + so), "l"(ksp) : "memory");
            asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(ring + so + 512), "l"(vsp) : "memory");
        }
    };
    auto issue = [&](int i) { /* step i's copies into stage i % S, one commit group */
        if (S > 0 && i < nsteps) {
            const int jt = jfirst + i * NW * KS, st = i % (S > 0 ? S : 1);
            const pgs P = page(jt);
            if (P.one && jt >= k0 && jt + KS <= k1) {
                /* the whole step in one page and in the split (all but a
                 * split's ends): each copy at a constant offset from the
                 * lane's first, no per-key checks or page lookups */
                const char *kp, *vp;
                const float *ksp, *vsp;
                addr(jt, P, 0, &kp, &vp, &ksp, &vsp);
#pragma unroll
                for (int u = 0; u < U; u++)
                    put((uint32_t)((st * U + u) * 2 * 128 + threadIdx.x), kp + u * KW * D * EB, vp + u * KW * D * EB, ksp + u * KW,
                        vsp + u * KW);
            } else
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int j = jt + u * KW + grp;
                if (j >= k0 && j < k1) {
                    const char *kp, *vp;
                    const float *ksp, *vsp;
                    addr(jt, P, u, &kp, &vp, &ksp, &vsp);
                    put((uint32_t)((st * U + u) * 2 * 128 + threadIdx.x), kp, vp, ksp, vsp);
                }
            }
        }
        sdpa__cu_cp_commit();
    };
    if (S > 0) {
#pragma unroll
        for (int i = 0; i < (S > 1 ? S - 1 : 1); i++) issue(i);
    }

    for (int i = 0; i < nsteps; i++) {
        const int jt = jfirst + i * NW * KS;
        uint4 kr[U], vr[U];
        float ksc[U], vsc[U];
        if (S > 0) {
            issue(i + S - 1);
            sdpa__cu_cp_wait<(S > 1 ? S - 1 : 0)>();
            const int st = i % (S > 0 ? S : 1);
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int j = jt + u * KW + grp;
                const bool ok = j >= k0 && j < k1;
                const int o = ((st * U + u) * 2) * 128 + threadIdx.x;
                kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
                ksc[u] = vsc[u] = 1.0f;
                if (ok) {
                    if (CB == 8) {
                        const uint2 k2 = *(const uint2 *)(sdpa__cu_dsm + o * CB), v2 = *(const uint2 *)(sdpa__cu_dsm + (o + 128) * CB);
                        kr[u].x = k2.x; kr[u].y = k2.y; vr[u].x = v2.x; vr[u].y = v2.y;
                    } else {
                        kr[u] = *(const uint4 *)(sdpa__cu_dsm + o * CB);
                        vr[u] = *(const uint4 *)(sdpa__cu_dsm + (o + 128) * CB);
                    }
                    if (ST == SDPA_I8) {
                        const float *sc = (const float *)(sdpa__cu_dsm + S * U * 2 * 128 * CB) + o;
                        ksc[u] = sc[0]; vsc[u] = sc[128];
                    }
                }
            }
        } else {
            const pgs P = page(jt);
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int j = jt + u * KW + grp;
                kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
                ksc[u] = vsc[u] = 1.0f;
                if (j >= k0 && j < k1) {
                    const char *kp, *vp;
                    const float *ksp, *vsp;
                    addr(jt, P, u, &kp, &vp, &ksp, &vsp);
                    if (ST == SDPA_I8 && E == 8) {
                        const uint2 k2 = __ldg((const uint2 *)kp), v2 = __ldg((const uint2 *)vp);
                        kr[u].x = k2.x; kr[u].y = k2.y; vr[u].x = v2.x; vr[u].y = v2.y;
                        ksc[u] = __ldg(ksp);
                        vsc[u] = __ldg(vsp);
                    } else if (ST == SDPA_I8) {
                        kr[u] = __ldg((const uint4 *)kp);
                        vr[u] = __ldg((const uint4 *)vp);
                        ksc[u] = __ldg(ksp);
                        vsc[u] = __ldg(vsp);
                    } else {
                        kr[u] = __ldg((const uint4 *)kp);
                        vr[u] = __ldg((const uint4 *)vp);
                    }
                }
            }
        }
        /* softcap, ALiBi, then to base 2, for a key row r sees */
        auto extf = [&](float x, int r, int j) {
            if (a.softcap > 0.0f) x = a.softcap * tanhf(x / a.softcap);
            if (a.alibi) {
                const int64_t hh = (r0 + r) / bi.vq, i = (r0 + r) % bi.vq;
                const int64_t dist = bi.len - bi.vq + i - j;
                x -= a.alibi[g * a.G + hh] * (float)(dist < 0 ? -dist : dist);
            }
            return x * LOG2E;
        };
        float s[U][RB];
        bool vis[U][RB];
#pragma unroll
        for (int u = 0; u < U; u++) {
            float kf[E];
            sdpa__cu_cvt<ST, E>(kr[u], kf);
            const int j = jt + u * KW + grp;
#pragma unroll
            for (int r = 0; r < RB; r++) {
                float part = 0.0f;
#pragma unroll
                for (int e = 0; e < E; e++) part = fmaf(qr[r][e], kf[e], part);
#pragma unroll
                for (int o = LK / 2; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
                vis[u][r] = j >= k0 && j < k1 && j >= lo[r] && j <= hi[r];
                s[u][r] = !vis[u][r] ? -INFINITY : S == 0 && ext ? extf(part * ksc[u], r, j) : part * ksc[u];
            }
        }
        /* the ring kernels: softcap and ALiBi in one uniform branch a step */
        if (S > 0 && ext)
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int r = 0; r < RB; r++)
                    if (vis[u][r]) s[u][r] = extf(s[u][r], r, jt + u * KW + grp);
#pragma unroll
        for (int r = 0; r < RB; r++) {
            float mx = s[0][r];
#pragma unroll
            for (int u = 1; u < U; u++) mx = fmaxf(mx, s[u][r]);
#pragma unroll
            for (int o = LK; o < 32; o <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            const float mn = fmaxf(m[r], mx), mu = mn == -INFINITY ? 0.0f : mn, al = exp2f(m[r] - mu);
            m[r] = mn;
            l[r] *= al;
#pragma unroll
            for (int e = 0; e < E; e++) acc[r][e] *= al;
#pragma unroll
            for (int u = 0; u < U; u++) {
                const float p = exp2f(s[u][r] - mu);
                l[r] += p;
                s[u][r] = p * vsc[u];
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            float vf[E];
            sdpa__cu_cvt<ST, E>(vr[u], vf);
#pragma unroll
            for (int r = 0; r < RB; r++) {
                const float p = s[u][r];
                if (p != 0.0f || p != p) /* a key a row cannot see adds nothing, NaN or Inf in V included */
#pragma unroll
                    for (int e = 0; e < E; e++) acc[r][e] = fmaf(p, vf[e], acc[r][e]);
            }
        }
    }
    if (S > 0) sdpa__cu_cp_wait<0>(); /* the empty tail groups */
    __syncthreads(); /* the ring becomes the merge area */
    float *sm_o = (float *)(void *)sdpa__cu_dsm, *sm_m = sm_o + NW * RB * D, *sm_l = sm_m + NW * RB;
    /* the warp's groups, by xor shuffles (a fixed tree), then the warps in order */
#pragma unroll
    for (int r = 0; r < RB; r++) {
#pragma unroll
        for (int o = LK; o < 32; o <<= 1) {
            l[r] += __shfl_xor_sync(0xffffffffu, l[r], o);
#pragma unroll
            for (int e = 0; e < E; e++) acc[r][e] += __shfl_xor_sync(0xffffffffu, acc[r][e], o);
        }
        if (lane < LK) {
#pragma unroll
            for (int e = 0; e < E; e += 4)
                *(float4 *)&sm_o[(warp * RB + r) * D + gl * E + e] = make_float4(acc[r][e], acc[r][e + 1], acc[r][e + 2], acc[r][e + 3]);
        }
        if (lane == 0) { sm_m[warp * RB + r] = m[r]; sm_l[warp * RB + r] = l[r]; }
    }
    __syncthreads();
    sdpa__cu_dmerge<NW, RB, D>(a, bi, b, g, r0, sp, nr, sm_o, sm_m, sm_l);
}

/* Launch with the block's dynamic shared memory (over 48 KiB needs the opt-in). */
template <int ST, int D, int RB> static cudaError_t sdpa__cu_decode_fast_launch(dim3 grid, cudaStream_t st, const sdpa__cu_dargs &A)
{
    const int sm = sdpa__cu_dfc<ST, D, RB>::SMEM;
    if (sm > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(sdpa__cu_decode_fast<ST, D, RB>, cudaFuncAttributeMaxDynamicSharedMemorySize, sm);
        if (e != cudaSuccess) return e;
    }
    sdpa__cu_decode_fast<ST, D, RB><<<grid, 128, sm, st>>>(A);
    return cudaGetLastError();
}

/* Flash-decoding on tensor cores for BF16 or I8 pages and a BF16 query, or
 * F16 pages and an F16 query, with several query rows per kv head (GQA
 * groups, or n > 1 queries),
 * head_dim == head_dim_v == D in {64, 128}: the block's RB = 16 rows (the kv head's G
 * heads x n queries; rows past nr are zero) are the M side of mma.sync
 * m16n8k16, so the dot products and P.V cost tensor-core work instead of
 * 4-8 FMAs per key byte. Grid as sdpa__cu_decode_fast; each of the NW warps
 * (4 for 16-bit pages, 2 blocks per SM; 12 for I8, one block per SM)
 * walks its own steps of KT = 16 keys (warp w: steps w, w + NW, ...) through a
 * private S-stage cp.async ring (keys outside the split or the sequence are
 * zero-filled, never read), with its own online softmax, then the warps
 * merge in shared memory in a fixed order. I8 pages: the ring holds the
 * int8 rows (16-byte chunks swizzled, see swz) and their scales; Q.K^T
 * runs in F16: q converted once with a power-of-2 scale per row (exact
 * for elements above 2^-28 of the row's largest; smaller ones, whose
 * products are below that too, round as f16 subnormals),
 * the A fragments in a permuted k order so that each lane's B fragment is
 * 4 consecutive int8 of a key, read straight from the ring and made two f16
 * pairs by a byte permute and one HSUB2 (exact); V's rows are read by
 * ldmatrix.trans as 8 x 8 matrices of byte pairs, each register then two
 * BF16 B fragments (an even-dims and an odd-dims n tile) by byte permutes
 * and BF16 subtractions (exact: integers up to 128; f16 would not do: a
 * value scale folded into P could underflow it); the key
 * scales multiply the scores, the value scales the weights. Numerics stay
 * fp32: q and the keys are exact in BF16/F16, their products exact in the
 * fp32 accumulators, and each weight p goes into P.V as two halves of the
 * pages' type (p = hi + lo: BF16 error about 2^-17 p; F16 pages take
 * 256 p, <= 256, so that lo stays normal down to p = 2^-15 (error below
 * 2^-33 absolute), and O is scaled back by 2^-8, exactly). As in the prefill kernel, a NaN/Inf V row that a row cannot see
 * reaches it when they share a step (0 * Inf). */
__device__ __forceinline__ float sdpa__cu_tof(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float sdpa__cu_tof(__half x) { return __half2float(x); }
template <int ST> struct sdpa__cu_dmt { typedef __nv_bfloat16 T; }; /* the mma type of ST's pages */
template <> struct sdpa__cu_dmt<SDPA_F16> { typedef __half T; };
template <int ST, int D, int W> struct sdpa__cu_dmc {
    typedef typename sdpa__cu_dmt<ST>::T T;
    static constexpr bool I8 = ST == SDPA_I8;
    /* CH 16-byte chunks per stored row; a stage: K and V tiles (BF16: rows of
     * LD elements, ready for ldmatrix; I8: packed rows, then KT + KT scales).
     * I8 reads both K and V straight from the ring (2 ring stages were no
     * better). I8 runs 12 warps in one block per SM (168 registers, 153
     * KiB of shared memory) where 3 blocks of 4 ran before: the same warps
     * per SM, but one block covers what took 3 splits, so the merge kernel
     * is left out more often (H100, GQA 32/8, kernel time:
     * B 16 4k 54.0 + 3.2 merge -> 55.0-56.5 us, B 1 4k 14.3 -> 11.4, B 64
     * 4k 213.9 + 5.8 -> 202.5; 8 warps: B 64 4k 215.0). GPUs that give a
     * block less shared memory (99 KiB on sm_86 and sm_89) run I8 in the
     * blocks of 4 warps, W = 4, three per SM */
    static constexpr int NW = W, KT = 16, S = 3, LD = D + 8, CH = I8 ? D / 16 : D / 8, RSW = 32 / CH;
    static constexpr int PER_SM = I8 && NW == 4 ? 3 : I8 ? 1 : 2; /* the launch bounds' blocks per SM */
    static constexpr int STAGE = I8 ? 2 * KT * D + 2 * KT * 4 : 2 * KT * LD * 2;
    static constexpr int QB = 16 * LD * 2, RING = NW * S * STAGE, MERGE = NW * 16 * (D + 2) * 4;
    static constexpr int SMEM = QB + RING > MERGE ? QB + RING : MERGE;
    /* I8 K and V rows keep their 16-byte chunk cc at cc ^ swz(r): the 8 rows
     * that one 4-byte fragment read (K) or one ldmatrix matrix (V) touches
     * then fall in distinct banks */
    static __device__ __forceinline__ int swz(int r) { return D == 128 ? (r & 7) : ((r >> 1) & 3); }
};
/* 4 int8 (bytes b0..b3 of w) -> 4 BF16, exact, without float conversions:
 * *ev = (b0, b2), *od = (b1, b3) as BF16 pairs (the tensor-core decode's V
 * fragments: keys 2t, 2t + 1 of an even and an odd dim). BF16 0x43XX is
 * 128 + XX for XX < 128, so the low 7 bits of each byte under 0x43 give
 * 128 + (x & 127); from that 128 (0x4300) or, for a negative x, 256
 * (0x4380: the sign bit lands in the exponent's last bit) is taken away,
 * leaving x (every integer in [-128, 127] is a BF16). Two byte permutes
 * per pair and one BF16x2 subtraction. */
__device__ __forceinline__ void sdpa__cu_i8bf_eo(const uint32_t w, uint32_t *ev, uint32_t *od)
{
    const uint32_t m = w & 0x7f7f7f7fu, sg = w & 0x80808080u;
    const uint32_t a0 = __byte_perm(m, 0x43434343u, 0x4240), a1 = __byte_perm(m, 0x43434343u, 0x4341);
    const uint32_t b0 = __byte_perm(sg, 0x43434343u, 0x4240), b1 = __byte_perm(sg, 0x43434343u, 0x4341);
    const __nv_bfloat162 h0 = __hsub2(*(const __nv_bfloat162 *)&a0, *(const __nv_bfloat162 *)&b0);
    const __nv_bfloat162 h1 = __hsub2(*(const __nv_bfloat162 *)&a1, *(const __nv_bfloat162 *)&b1);
    *ev = *(const uint32_t *)&h0;
    *od = *(const uint32_t *)&h1;
}
template <int ST, int D, int W>
__global__ void __launch_bounds__(W * 32, sdpa__cu_dmc<ST, D, W>::PER_SM) sdpa__cu_decode_mma(const sdpa__cu_dargs a)
{
    typedef sdpa__cu_dmc<ST, D, W> C;
    typedef typename C::T T;
    constexpr float PS = ST == SDPA_F16 ? 256.0f : 1.0f; /* P's scale in P.V */
    constexpr bool I8 = C::I8;
    constexpr int NW = C::NW, KT = C::KT, S = C::S, LD = C::LD, CH = C::CH, RSW = C::RSW, DT = D / 8, EB = I8 ? 1 : 2;
    static_assert(32 % CH == 0 && KT % RSW == 0, "whole rows per copy pass");
    const float LOG2E = 1.4426950408889634f;
    extern __shared__ __align__(16) char sdpa__cu_dsm[];
    T *Qs = (T *)(void *)sdpa__cu_dsm;
    char *ring = sdpa__cu_dsm + C::QB;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t b = blockIdx.z, sp = blockIdx.x;
    const int64_t g = blockIdx.y / a.nrb, rb = blockIdx.y % a.nrb;
    const sdpa__cu_kvb bi = sdpa__cu_dbatch(a, b);
    const int64_t R = a.G * bi.vq, r0 = rb * 16;
    const int nr = (int)(R - r0 < 16 ? (R - r0 > 0 ? R - r0 : 0) : 16);
    const bool ext = a.softcap > 0.0f || a.alibi, two = nr > 8; /* two: rows 8-15 in use */
    const float qmul = ext ? a.scale : a.scale * LOG2E;

    /* Q rows, stored into shared memory (zeros past nr) after the first K/V
     * copies are issued below; one 16-byte load per chunk when q's layout
     * allows (a.q16), else 2-byte loads (any stride). Splits under 1024 keys
     * load Q first (its loads behind the K/V copies' burst delay the first
     * step: H100, I8 GQA 32/8, B 1 4k, 512 keys a split, 20.2 -> 18.1 us);
     * longer ones after the copies (B 1 32k, 2048 keys, 40.3 -> 38.6 us,
     * B 4 8k 39.5 -> 38.2, B 16 4k 59.1 -> 58.2; measured, not explained) */
    constexpr int QC = (16 * (D / 8) + NW * 32 - 1) / (NW * 32); /* 16-byte chunks per thread */
    uint4 qc[QC];
    auto qrow = [&](int c) -> const unsigned short * { /* chunk c's first element; NULL past nr */
        const int r = c / (D / 8), cc = c % (D / 8);
        if (c >= 16 * (D / 8) || r >= nr) return NULL;
        const int64_t hh = (r0 + r) / bi.vq, i = (r0 + r) % bi.vq, h = g * a.G + hh;
        return (const unsigned short *)(a.q + (b * a.qs[0] + h * a.qs[1] + i * a.qs[2]) * 2) + cc * 8;
    };
    auto qload = [&]() {
        if (a.q16) {
#pragma unroll
            for (int t = 0; t < QC; t++) {
                const unsigned short *qp = qrow(threadIdx.x + t * NW * 32);
                qc[t] = qp ? *(const uint4 *)(const void *)qp : make_uint4(0, 0, 0, 0);
            }
        } else {
#pragma unroll
            for (int t = 0; t < QC; t++) {
                const unsigned short *qp = qrow(threadIdx.x + t * NW * 32);
                qc[t] = make_uint4(0, 0, 0, 0);
                if (qp) {
                    qc[t].x = qp[0] | (uint32_t)qp[1] << 16; qc[t].y = qp[2] | (uint32_t)qp[3] << 16;
                    qc[t].z = qp[4] | (uint32_t)qp[5] << 16; qc[t].w = qp[6] | (uint32_t)qp[7] << 16;
                }
            }
        }
    };
    const bool qlate = a.chunk >= 1024;
    if (!qlate) qload();
    /* visible keys: per row of this thread (ra = lane / 4 and ra + 8), and the block's span */
    auto range = [&](int r, int *rl, int *rh) { /* [rl, rh], empty when rh < rl */
        int64_t l0, h0;
        sdpa__cu_drange(a, bi, (r0 + r) % bi.vq, &l0, &h0);
        *rl = (int)l0;
        *rh = h0 < l0 ? (int)l0 - 1 : (int)h0;
    };
    int lo[2] = {0, 0}, hi[2] = {-1, -1}, kmin = 0x7fffffff, kmax = -1;
    int lmax = -1, hmin = 0x7fffffff; /* keys every row sees: [lmax, hmin] */
    for (int r = 0; r < nr; r++) {
        int rl, rh;
        range(r, &rl, &rh);
        if (rh >= rl) { kmin = rl < kmin ? rl : kmin; kmax = rh > kmax ? rh : kmax; }
        lmax = rl > lmax ? rl : lmax;
        hmin = rh < hmin ? rh : hmin;
    }
    if ((lane >> 2) < nr) range(lane >> 2, &lo[0], &hi[0]);
    if ((lane >> 2) + 8 < nr) range((lane >> 2) + 8, &lo[1], &hi[1]);
    int k0, k1;
    const int cb = sdpa__cu_dsplit(a, bi, sp, kmin, kmax, &k0, &k1);
    const uint32_t ps = (uint32_t)a.c.ps;
    const int32_t *tab = a.c.table + bi.seq * a.c.tld;
    const int64_t hk = g * (int64_t)ps * D * EB, hs = g * (int64_t)ps * 4;
    const int jfirst = k0 < k1 ? cb + (k0 - cb) / KT * KT + warp * KT : 0;
    const int nsteps = k0 < k1 && jfirst < k1 ? (k1 - jfirst + NW * KT - 1) / (NW * KT) : 0;
    const int cr = lane / CH, cc = lane % CH; /* this lane copies column chunk cc of rows cr, cr + RSW, ... */
    const uint32_t wring = sdpa__cu_sa(ring + warp * S * C::STAGE);
    auto pageof = [&](int j, uint32_t *slot) { /* page base and slot of key j */
        const uint32_t pj = (uint32_t)j / ps;
        *slot = (uint32_t)j - pj * ps;
        return a.c.pool + (int64_t)tab[pj] * a.c.page_bytes;
    };
    auto issue = [&](int i) {
        if (i < nsteps) {
            const int jt = jfirst + i * NW * KT, st = i % S;
            uint32_t s0;
            const char *pg0 = pageof(jt, &s0);
            const bool one = s0 + KT <= ps;
            const uint32_t sb = wring + (uint32_t)(st * C::STAGE);
            if (one && jt >= k0 && jt + KT <= k1) { /* the usual step: every key in the split and in one page;
                                                     * two base addresses, fixed offsets per row */
                const char *gk = pg0 + a.c.off_k + hk + (int64_t)(s0 + cr) * D * EB + cc * 16;
                const int64_t dvk = a.c.off_v - a.c.off_k;
                const uint32_t sk = sb + (uint32_t)(I8 ? cr * D : (cr * LD + cc * 8) * 2);
#pragma unroll
                for (int it = 0; it < KT / RSW; it++) {
                    const int r = cr + it * RSW;
                    const uint32_t dk = I8 ? sk + (uint32_t)(it * RSW * D + (cc ^ C::swz(r)) * 16) : sk + (uint32_t)(it * RSW * LD * 2);
                    const uint32_t dv = dk + (uint32_t)(I8 ? KT * D : KT * LD * 2);
                    sdpa__cu_cp16(dk, gk + it * RSW * D * EB, 16);
                    sdpa__cu_cp16(dv, gk + dvk + it * RSW * D * EB, 16);
                }
                if (I8) {
                    const char *src = pg0 + (lane < 16 ? a.c.off_ks : a.c.off_vs) + hs + (s0 + (lane & 15)) * 4;
                    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(sb + (uint32_t)(2 * KT * D + lane * 4)), "l"(src) : "memory");
                }
                sdpa__cu_cp_commit();
                return;
            }
#pragma unroll
            for (int it = 0; it < KT / RSW; it++) {
                const int r = cr + it * RSW, j = jt + r;
                const uint32_t base = sb + (uint32_t)(I8 ? r * D + cc * 16 : (r * LD + cc * 8) * 2);
                const uint32_t dk = I8 ? sb + (uint32_t)(r * D + (cc ^ C::swz(r)) * 16) : base; /* I8: swizzled chunks */
                const uint32_t dv = dk + (uint32_t)(I8 ? KT * D : KT * LD * 2);
                if (j >= k0 && j < k1) {
                    const char *pg = pg0;
                    uint32_t slot = s0 + r;
                    if (!one) pg = pageof(j, &slot);
                    const int64_t off = hk + (int64_t)slot * D * EB + cc * 16;
                    sdpa__cu_cp16(dk, pg + a.c.off_k + off, 16);
                    sdpa__cu_cp16(dv, pg + a.c.off_v + off, 16);
                } else {
                    sdpa__cu_cp16(dk, a.c.pool, 0);
                    sdpa__cu_cp16(dv, a.c.pool, 0);
                }
            }
            if (I8) { /* lanes 0-15: the keys' scales, 16-31: the values' */
                const int r = lane & 15, j = jt + r;
                const uint32_t ds = sb + (uint32_t)(2 * KT * D + lane * 4);
                if (j >= k0 && j < k1) {
                    const char *pg = pg0;
                    uint32_t slot = s0 + r;
                    if (!one) pg = pageof(j, &slot);
                    const char *src = pg + (lane < 16 ? a.c.off_ks : a.c.off_vs) + hs + slot * 4;
                    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(ds), "l"(src) : "memory");
                } else {
                    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, 0;\n" ::"r"(ds), "l"(a.c.pool) : "memory");
                }
            }
        }
        sdpa__cu_cp_commit();
    };
#pragma unroll
    for (int i = 0; i < S - 1; i++) issue(i);
    if (qlate) qload();
#pragma unroll
    for (int t = 0; t < QC; t++) {
        const int c = threadIdx.x + t * NW * 32;
        if (c < 16 * (D / 8)) *(uint4 *)(void *)(Qs + (c / (D / 8)) * LD + (c % (D / 8)) * 8) = qc[t];
    }
    __syncthreads(); /* Q in shared memory */
    asm volatile("" ::: "memory"); /* and the ldmatrix below after its stores */
    uint32_t qf[D / 16][4];
    float qm[2] = {qmul, qmul}; /* the scores' multiplier for this lane's rows */
    if (!I8) {
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) sdpa__cu_ldm4(sdpa__cu_sa(Qs + (lane & 15) * LD + kk * 16 + (lane >> 4) * 8), qf[kk]);
    } else {
        /* I8: Q.K^T runs in F16 (int8 keys are exact there): each Q row
         * times 2^-e, max|q| into [2^14, 2^15); BF16 values keep all their
         * bits in f16 down to 2^-28 of the row's largest (below that, as f16
         * subnormals, they round; so do their tiny products); 2^e goes into
         * the row's multiplier, kept in the row's padding columns. NaN stays
         * NaN; a row with Inf keeps e = 0. Thread t < 128: row t / 8,
         * elements (t % 8) * D / 8 on (the warps past 4 read the same rows
         * again and write nothing). */
        {
            const int r = (threadIdx.x >> 3) & 15, e0 = (threadIdx.x & 7) * (D / 8);
            const bool own = threadIdx.x < 128;
            T *row = Qs + r * LD + e0;
            float v[D / 8], amax = 0.0f;
#pragma unroll
            for (int e = 0; e < D / 8; e++) {
                v[e] = sdpa__cu_tof(row[e]);
                amax = fmaxf(amax, fabsf(v[e]));
            }
            amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
            amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
            amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 4));
            int ex = 0;
            if (amax > 0.0f && amax <= 3.4028235e38f) {
                ex = ((__float_as_int(amax) >> 23) & 0xff) - 127 - 14;
                ex = ex < -110 ? -110 : ex;
            }
            __syncthreads(); /* the whole row read before it is rewritten */
            const float sc = __int_as_float((127 - ex) << 23);
            __half *hrow = (__half *)(void *)row;
            if (own) {
#pragma unroll
                for (int e = 0; e < D / 8; e++) hrow[e] = __float2half_rn(v[e] * sc);
                if ((threadIdx.x & 7) == 0) *(float *)(void *)(Qs + r * LD + D) = __int_as_float((127 + ex) << 23);
            }
        }
        __syncthreads();
        /* A fragments in the permuted k order (k slots 2t, 2t + 1, 2t + 8,
         * 2t + 9 hold elements 4t..4t + 3 of each 16), matching the B
         * fragments read from the int8 rows below */
        const int g8 = lane >> 2, t4 = (lane & 3) * 4;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const uint2 lo = *(const uint2 *)(const void *)(Qs + g8 * LD + kk * 16 + t4);
            const uint2 hi = *(const uint2 *)(const void *)(Qs + (g8 + 8) * LD + kk * 16 + t4);
            qf[kk][0] = lo.x; qf[kk][1] = hi.x; qf[kk][2] = lo.y; qf[kk][3] = hi.y;
        }
        qm[0] = qmul * *(const float *)(const void *)(Qs + g8 * LD + D);
        qm[1] = qmul * *(const float *)(const void *)(Qs + (g8 + 8) * LD + D);
    }

    float o[DT][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int dt = 0; dt < DT; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
    for (int i = 0; i < nsteps; i++) {
        const int jt = jfirst + i * NW * KT;
        issue(i + S - 1);
        sdpa__cu_cp_wait<S - 1>();
        __syncwarp();
        const char *stg = ring + (warp * S + i % S) * C::STAGE;
        const T *Kst = (const T *)(const void *)stg, *Vst = Kst + KT * LD;
        const float *ksc = (const float *)(const void *)(stg + 2 * KT * D), *vsc = ksc + KT;
        /* every row sees every key of the step: no masks (rows past nr compute what they like, unread) */
        const bool full = jt >= k0 && jt + KT <= k1 && jt >= lmax && jt + KT - 1 <= hmin;
        float s[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
        if (I8) { /* B fragments straight from the int8 rows: 4 bytes -> two f16 pairs, exact */
            const int g8 = lane >> 2, t4 = (lane & 3) * 4;
            const __half2 off = __floats2half2_rn(1152.0f, 1152.0f); /* f16 0x64XX is 1024 + XX; x + 128 = XX */
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
                for (int nt = 0; nt < 2; nt++) {
                    const int r = nt * 8 + g8;
                    const uint32_t w = *(const uint32_t *)(const void *)(stg + r * D + ((kk ^ C::swz(r)) * 16) + t4) ^ 0x80808080u;
                    const uint32_t p0 = __byte_perm(w, 0x64646464u, 0x5140), p1 = __byte_perm(w, 0x64646464u, 0x7362);
                    const __half2 h0 = __hsub2(*(const __half2 *)&p0, off), h1 = __hsub2(*(const __half2 *)&p1, off);
                    sdpa__cu_mma<__half>::run(s[nt], qf[kk], *(const uint32_t *)&h0, *(const uint32_t *)&h1);
                }
        } else {
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                uint32_t bf[4];
                sdpa__cu_ldm4(sdpa__cu_sa(Kst + (((lane >> 4) & 1) * 8 + (lane & 7)) * LD + kk * 16 + ((lane >> 3) & 1) * 8), bf);
                sdpa__cu_mma<T>::run(s[0], qf[kk], bf[0], bf[1]);
                sdpa__cu_mma<T>::run(s[1], qf[kk], bf[2], bf[3]);
            }
        }
        float al[2] = {1.0f, 1.0f};
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            if (rr == 1 && !two) { /* rows 8-15 hold nothing: zero weights */
                s[0][2] = s[0][3] = s[1][2] = s[1][3] = 0.0f;
                break;
            }
            float mx = -INFINITY;
            if (full && !ext) {
#pragma unroll
                for (int nt = 0; nt < 2; nt++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        float x = s[nt][2 * rr + e] * qm[rr];
                        if (I8) x *= ksc[nt * 8 + 2 * (lane & 3) + e];
                        s[nt][2 * rr + e] = x;
                        mx = fmaxf(mx, x);
                    }
            } else {
#pragma unroll
                for (int nt = 0; nt < 2; nt++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const int j = jt + nt * 8 + 2 * (lane & 3) + e;
                        float x = s[nt][2 * rr + e] * qm[rr];
                        if (I8) x *= ksc[nt * 8 + 2 * (lane & 3) + e];
                        if (j < k0 || j >= k1 || j < lo[rr] || j > hi[rr]) {
                            x = -INFINITY;
                        } else if (ext) {
                            if (a.softcap > 0.0f) x = a.softcap * tanhf(x / a.softcap);
                            if (a.alibi) {
                                const int64_t r = (lane >> 2) + 8 * rr, hh = (r0 + r) / bi.vq, qi = (r0 + r) % bi.vq;
                                const int64_t dist = bi.len - bi.vq + qi - j;
                                x -= a.alibi[g * a.G + hh] * (float)(dist < 0 ? -dist : dist);
                            }
                            x *= LOG2E;
                        }
                        s[nt][2 * rr + e] = x;
                        mx = fmaxf(mx, x);
                    }
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float mn = fmaxf(m[rr], mx), mu = mn == -INFINITY ? 0.0f : mn;
            al[rr] = sdpa__cu_ex2(m[rr] - mu);
            m[rr] = mn;
            l[rr] *= al[rr];
#pragma unroll
            for (int nt = 0; nt < 2; nt++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const float p = sdpa__cu_ex2(s[nt][2 * rr + e] - mu);
                    l[rr] += p;
                    s[nt][2 * rr + e] = I8 ? p * vsc[nt * 8 + 2 * (lane & 3) + e] : p;
                }
        }
        if (!__all_sync(0xffffffffu, al[0] == 1.0f && al[1] == 1.0f)) { /* skipped once the maxima settle */
#pragma unroll
            for (int dt = 0; dt < DT; dt++) { o[dt][0] *= al[0]; o[dt][1] *= al[0]; }
            if (two)
#pragma unroll
                for (int dt = 0; dt < DT; dt++) { o[dt][2] *= al[1]; o[dt][3] *= al[1]; }
        }
        /* P as the A operand in two halves of T */
        uint32_t ph[4], pl[4];
#pragma unroll
        for (int f = 0; f < 4; f++) sdpa__cu_mma<T>::split(s[f >> 1][2 * (f & 1)] * PS, s[f >> 1][2 * (f & 1) + 1] * PS, &ph[f], &pl[f]);
        if (I8) { /* V's int8 rows as 8 x 8 matrices of byte pairs, transposed by ldmatrix: a lane's
                   * register holds keys 2t and 2t + 1 of dims 2g and 2g + 1 (t = lane % 4,
                   * g = lane / 4), i.e. the B fragments of an even-dims and an odd-dims n tile
                   * after a byte permute; so o[4q + j] holds dims 32q + 16(j / 2) + (j % 2) + 2c
                   * (written back in order below) */
            const int key = ((lane >> 3) & 1) * 8 + (lane & 7), c0 = lane >> 4;
#pragma unroll
            for (int q = 0; q < D / 32; q++) {
                uint32_t v[4], e[4], od[4];
                sdpa__cu_ldm4t(sdpa__cu_sa(stg + KT * D + key * D + (((2 * q + c0) ^ C::swz(key)) * 16)), v);
#pragma unroll
                for (int f = 0; f < 4; f++) sdpa__cu_i8bf_eo(v[f], &e[f], &od[f]);
                sdpa__cu_mma<T>::run(o[4 * q], ph, e[0], e[1]);
                sdpa__cu_mma<T>::run(o[4 * q + 1], ph, od[0], od[1]);
                sdpa__cu_mma<T>::run(o[4 * q + 2], ph, e[2], e[3]);
                sdpa__cu_mma<T>::run(o[4 * q + 3], ph, od[2], od[3]);
                sdpa__cu_mma<T>::run(o[4 * q], pl, e[0], e[1]);
                sdpa__cu_mma<T>::run(o[4 * q + 1], pl, od[0], od[1]);
                sdpa__cu_mma<T>::run(o[4 * q + 2], pl, e[2], e[3]);
                sdpa__cu_mma<T>::run(o[4 * q + 3], pl, od[2], od[3]);
            }
        } else {
#pragma unroll
            for (int dp = 0; dp < D / 16; dp++) {
                uint32_t bf[4];
                sdpa__cu_ldm4t(sdpa__cu_sa(Vst + (((lane >> 3) & 1) * 8 + (lane & 7)) * LD + dp * 16 + (lane >> 4) * 8), bf);
                sdpa__cu_mma<T>::run(o[2 * dp], ph, bf[0], bf[1]);
                sdpa__cu_mma<T>::run(o[2 * dp + 1], ph, bf[2], bf[3]);
                sdpa__cu_mma<T>::run(o[2 * dp], pl, bf[0], bf[1]);
                sdpa__cu_mma<T>::run(o[2 * dp + 1], pl, bf[2], bf[3]);
            }
        }
        __syncwarp(); /* the stage is refilled by the next step's issue */
    }
    sdpa__cu_cp_wait<0>(); /* the empty tail groups */
    __syncthreads();       /* shared memory becomes the merge area */
    float *sm_o = (float *)(void *)sdpa__cu_dsm, *sm_m = sm_o + NW * 16 * D, *sm_l = sm_m + NW * 16;
#pragma unroll
    for (int rr = 0; rr < 2; rr++) {
        const int r = (lane >> 2) + 8 * rr;
        float ls = l[rr];
        ls += __shfl_xor_sync(0xffffffffu, ls, 1);
        ls += __shfl_xor_sync(0xffffffffu, ls, 2);
        if (r < nr) {
#pragma unroll
            for (int dt = 0; dt < DT; dt++)
                if (!I8) *(float2 *)&sm_o[(warp * 16 + r) * D + dt * 8 + 2 * (lane & 3)] = make_float2(o[dt][2 * rr] * (1.0f / PS), o[dt][2 * rr + 1] * (1.0f / PS));
                else if (dt % 2 == 0) /* I8: tiles dt, dt + 1 hold dims 32q + 16(dt % 4 / 2) + 4t..4t + 3 */
                    *(float4 *)&sm_o[(warp * 16 + r) * D + dt / 4 * 32 + (dt % 4) / 2 * 16 + 4 * (lane & 3)] =
                        make_float4(o[dt][2 * rr], o[dt + 1][2 * rr], o[dt][2 * rr + 1], o[dt + 1][2 * rr + 1]);
            if ((lane & 3) == 0) { sm_m[warp * 16 + r] = m[rr]; sm_l[warp * 16 + r] = ls; }
        }
    }
    __syncthreads();
    sdpa__cu_dmerge<NW, 16, D>(a, bi, b, g, r0, sp, nr, sm_o, sm_m, sm_l);
}

template <int ST, int D, int W> static cudaError_t sdpa__cu_decode_mma_launch(dim3 grid, cudaStream_t st, const sdpa__cu_dargs &A)
{
    const int sm = sdpa__cu_dmc<ST, D, W>::SMEM;
    if (sm > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(sdpa__cu_decode_mma<ST, D, W>, cudaFuncAttributeMaxDynamicSharedMemorySize, sm);
        if (e != cudaSuccess) return e;
    }
    sdpa__cu_decode_mma<ST, D, W><<<grid, W * 32, sm, st>>>(A);
    return cudaGetLastError();
}

/* The current GPU's SM count for the tensor-core decode's split choice, and
 * in *per_sm the blocks of the kernel that fit on one SM; 0 when CUDA cannot
 * say, or when a block needs more shared memory than this GPU gives one
 * (the 12-warp I8 block on sm_86 and sm_89). */
template <int ST, int D, int W> static int64_t sdpa__cu_decode_mma_sms(int64_t *per_sm)
{
    /* per device and kernel, asked until CUDA answers: 0 not yet, else
     * (sms << 16 | per) + 1 (the opt-in above 48 KiB goes with the first ask;
     * a launch sets it again) */
    static std::atomic<int64_t> known[64];
    const int sm = sdpa__cu_dmc<ST, D, W>::SMEM;
    int dev = 0, sms = 0, per = 0;
    int64_t k;
    if (cudaGetDevice(&dev) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    k = dev >= 0 && dev < 64 ? known[dev].load(std::memory_order_relaxed) : 0;
    if (!k) {
        if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
            (sm > 48 * 1024 && cudaFuncSetAttribute(sdpa__cu_decode_mma<ST, D, W>, cudaFuncAttributeMaxDynamicSharedMemorySize, sm) != cudaSuccess) ||
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, sdpa__cu_decode_mma<ST, D, W>, W * 32, sm) != cudaSuccess) {
            cudaGetLastError(); /* not this call's error */
            return 0;
        }
        if (sms < 0 || per < 0 || per > 0xffff) return 0;
        k = ((int64_t)sms << 16 | per) + 1;
        if (dev >= 0 && dev < 64) known[dev].store(k, std::memory_order_relaxed);
    }
    k -= 1;
    sms = (int)(k >> 16);
    per = (int)(k & 0xffff);
    *per_sm = per;
    return per < 1 ? 0 : (int64_t)sms;
}

/* Most splits of one decode row: the host keeps to it, and the merge's
 * shared memory and registers are sized by it. */
#define SDPA__CU_MAXSPLIT 128

/* Whether the merge kernel's loaded code was built for sm_90 or later (its
 * griddepcontrol wait is there, so it may be launched with programmatic
 * dependent launch): per device, asked once. */
__global__ void __launch_bounds__(128) sdpa__cu_merge(const sdpa__cu_dargs a);
static int sdpa__cu_merge_pdl(void)
{
    static std::atomic<int> state[64]; /* 0 unknown, 1 no, 2 yes */
    cudaFuncAttributes fa;
    int dev = 0, st;
    if (cudaGetDevice(&dev) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    st = dev >= 0 && dev < 64 ? state[dev].load(std::memory_order_relaxed) : 0;
    if (!st) {
        st = cudaFuncGetAttributes(&fa, sdpa__cu_merge) == cudaSuccess && fa.ptxVersion >= 90 ? 2 : 1;
        if (st == 1) cudaGetLastError(); /* not this call's error */
        if (dev >= 0 && dev < 64) state[dev].store(st, std::memory_order_relaxed);
    }
    return st == 2;
}

/* One block per output row (b, h, i). Warp 0 reads the row's nsplit (m, l)
 * pairs, a lane per split: the largest m (exact in any order), each split's
 * weight exp2(m - M) into shared memory, and sum l (each lane's splits in
 * order, then a butterfly: a fixed order, the same bits every run). Then
 * each output element sums its weighted parts in split order, loads eight
 * splits ahead (the old three passes per element over the splits, one load
 * at a time, cost 3-11 us at B 1 and 32k keys). Rows past seqlens_q give 0
 * and lse = -inf. */
__global__ void __launch_bounds__(128) sdpa__cu_merge(const sdpa__cu_dargs a)
{
    __shared__ float sw[SDPA__CU_MAXSPLIT], sml[2];
    const int64_t row = blockIdx.x, i = row % a.n, h = (row / a.n) % a.Hq, b = row / (a.n * a.Hq);
    const int64_t Dv = a.c.Dv, oes = a.odt == SDPA_F32 ? 4 : 2;
    const int ns = (int)a.nsplit;
    const bool live = i < sdpa__cu_dbatch(a, b).vq;
    const float *pp = a.part + row * ns * (Dv + 2);
    sdpa__cu_pdl_wait();
    if (threadIdx.x < 32) {
        const int lane = threadIdx.x;
        float m[SDPA__CU_MAXSPLIT / 32], l[SDPA__CU_MAXSPLIT / 32], M = -INFINITY, Ls = 0.0f;
#pragma unroll
        for (int k = 0; k < SDPA__CU_MAXSPLIT / 32; k++) {
            const int s = lane + 32 * k;
            m[k] = live && s < ns ? pp[s * (Dv + 2) + Dv] : -INFINITY;
            l[k] = live && s < ns ? pp[s * (Dv + 2) + Dv + 1] : 0.0f;
            M = fmaxf(M, m[k]);
        }
#pragma unroll
        for (int x = 16; x > 0; x >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, x));
#pragma unroll
        for (int k = 0; k < SDPA__CU_MAXSPLIT / 32; k++) {
            const int s = lane + 32 * k;
            const float f = l[k] != 0.0f ? exp2f(m[k] - M) : 0.0f; /* a split without keys: l = 0, m = -inf */
            if (l[k] != 0.0f) Ls += f * l[k];
            if (s < ns) sw[s] = f;
        }
#pragma unroll
        for (int x = 16; x > 0; x >>= 1) Ls += __shfl_xor_sync(0xffffffffu, Ls, x);
        if (lane == 0) { sml[0] = M; sml[1] = Ls; }
    }
    __syncthreads();
    const float M = sml[0], Ls = sml[1];
    const float inv = sdpa__cu_dfin_inv(Ls);
    char *op = a.o + (b * a.os[0] + h * a.os[1] + i * a.os[2]) * oes;
    for (int64_t d = threadIdx.x; d < Dv; d += blockDim.x) {
        float acc = 0.0f;
        if (live)
#pragma unroll 8
            for (int s = 0; s < ns; s++) acc += sw[s] * pp[s * (Dv + 2) + d];
        sdpa__cu_st(op + d * oes, a.odt, sdpa__cu_dfin_out(acc, Ls, inv));
    }
    if (a.lse && threadIdx.x == 0) a.lse[row] = sdpa__cu_dfin_lse(M, Ls);
}

static int sdpa__cu_kv_fail(const sdpa_cuda_kv_cache *c, int code, const char *fmt, ...)
{
    if (c && c->errbuf && c->errbuf_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->errbuf, c->errbuf_size, fmt, ap);
        va_end(ap);
    }
    return code;
}

static sdpa__cu_kvargs sdpa__cu_kv_args(const sdpa_cuda_kv_cache *c)
{
    sdpa__cu_kvargs k;
    k.pool = c->pool; k.page_bytes = c->page_bytes; k.off_k = c->off_k; k.off_v = c->off_v; k.off_ks = c->off_ks;
    k.off_vs = c->off_vs; k.ps = c->ps; k.tld = c->max_pages; k.table = c->dtable; k.dt = c->dt;
    k.H = c->H; k.D = c->D; k.Dv = c->Dv;
    return k;
}

SDPA_CUDA_API int sdpa_cuda_kv_cache_create(const sdpa_kv_cache_config *cfg, sdpa_cuda_kv_cache **out)
{
    sdpa_cuda_kv_cache tmp, *c;
    int64_t a, b, ks, vs, sc, off, pool, tab;
    cudaError_t e;
    if (!out) return SDPA_ERR_NULL;
    *out = NULL;
    if (!cfg) return SDPA_ERR_NULL;
    memset(&tmp, 0, sizeof tmp);
    tmp.errbuf = cfg->errbuf;
    tmp.errbuf_size = cfg->errbuf_size;
    if (cfg->num_seqs < 1 || cfg->kv_heads < 1 || cfg->head_dim < 1 || cfg->head_dim_v < 0)
        return sdpa__cu_kv_fail(&tmp, SDPA_ERR_SHAPE, "sdpa_cuda_kv_cache: num_seqs, kv_heads and head_dim must be >= 1, head_dim_v >= 0");
    if (cfg->dtype != SDPA_F32 && cfg->dtype != SDPA_F16 && cfg->dtype != SDPA_BF16 && cfg->dtype != SDPA_I8)
        return sdpa__cu_kv_fail(&tmp, SDPA_ERR_DTYPE, "sdpa_cuda_kv_cache: storage dtype must be F32, F16, BF16 or I8 (got %d)",
                                (int)cfg->dtype);
    if (cfg->page_size < 0 || cfg->page_size > 65536 || cfg->max_pages < 1 || cfg->max_pages > 0x7fffffff)
        return sdpa__cu_kv_fail(&tmp, SDPA_ERR_PARAM, "sdpa_cuda_kv_cache: page_size must be in [0, 65536] and max_pages in [1, 2^31 - 1] "
                                                      "(the device pool is allocated at creation)");
    tmp.nseq = cfg->num_seqs; tmp.H = cfg->kv_heads; tmp.D = cfg->head_dim;
    tmp.Dv = cfg->head_dim_v ? cfg->head_dim_v : cfg->head_dim;
    if (tmp.D > SDPA__CU_MAXD || tmp.Dv > SDPA__CU_MAXD)
        return sdpa__cu_kv_fail(&tmp, SDPA_ERR_SHAPE, "sdpa_cuda_kv_cache: head dims up to %d are supported", SDPA__CU_MAXD);
    tmp.ps = cfg->page_size ? cfg->page_size : 64;
    tmp.max_pages = cfg->max_pages;
    tmp.dt = (int)cfg->dtype;
    tmp.esize = sdpa__cu_esize(tmp.dt);
    if (!sdpa__cu_mul(tmp.H, tmp.ps, &a) || !sdpa__cu_mul(a, tmp.D, &b) || !sdpa__cu_mul(b, tmp.esize, &ks) ||
        !sdpa__cu_mul(a, tmp.Dv, &b) || !sdpa__cu_mul(b, tmp.esize, &vs) || !sdpa__cu_mul(a, 4, &sc) || ks > INT64_MAX / 8 ||
        vs > INT64_MAX / 8 || sc > INT64_MAX / 8)
        return sdpa__cu_kv_fail(&tmp, SDPA_ERR_OVERFLOW, "sdpa_cuda_kv_cache: page size overflows");
    off = 0;
    tmp.off_k = off; off += (ks + 63) / 64 * 64;
    tmp.off_v = off; off += (vs + 63) / 64 * 64;
    tmp.off_ks = tmp.off_vs = off;
    if (tmp.dt == SDPA_I8) {
        off += (sc + 63) / 64 * 64;
        tmp.off_vs = off;
        off += (sc + 63) / 64 * 64;
    }
    tmp.page_bytes = off;
    if (!sdpa__cu_mul(off, tmp.max_pages, &pool) || !sdpa__cu_mul(tmp.nseq, tmp.max_pages, &tab) || tab > INT64_MAX / 16)
        return sdpa__cu_kv_fail(&tmp, SDPA_ERR_OVERFLOW, "sdpa_cuda_kv_cache: pool size overflows");
    c = (sdpa_cuda_kv_cache *)calloc(1, sizeof *c);
    if (!c) return sdpa__cu_kv_fail(&tmp, SDPA_ERR_NOMEM, "sdpa_cuda_kv_cache: out of host memory");
    *c = tmp;
    c->table = (int32_t *)malloc((size_t)tab * 4);
    c->len = (int64_t *)calloc((size_t)c->nseq, 8);
    c->freel = (int32_t *)malloc((size_t)c->max_pages * 4);
    if (!c->table || !c->len || !c->freel) {
        sdpa_cuda_kv_cache_destroy(c);
        return sdpa__cu_kv_fail(&tmp, SDPA_ERR_NOMEM, "sdpa_cuda_kv_cache: out of host memory");
    }
    if ((e = cudaMalloc((void **)&c->pool, (size_t)pool)) != cudaSuccess ||
        (e = cudaMalloc((void **)&c->dtable, (size_t)tab * 4)) != cudaSuccess) {
        sdpa_cuda_kv_cache_destroy(c);
        return sdpa__cu_kv_fail(&tmp, e == cudaErrorMemoryAllocation ? SDPA_ERR_NOMEM : SDPA_ERR_CUDA,
                                "sdpa_cuda_kv_cache: cudaMalloc of %lld bytes: %s", (long long)pool, cudaGetErrorString(e));
    }
    for (a = 0; a < c->max_pages; a++) c->freel[a] = (int32_t)(c->max_pages - 1 - a); /* page 0 handed out first */
    c->nfree = c->max_pages;
    {
        /* The decode's scratch (split partials; batch entries past 64 and
         * ALiBi slopes) comes from a memory pool of the cache's own that
         * keeps its memory between calls. The device's default pool gives
         * its free memory back at every synchronize, and the next call's
         * cudaMallocAsync maps it again: on an H100 about 50 us, against a
         * batch-1 decode's 20 us. It keeps up to 64 MiB (a decode's
         * partials: B * Hq * n * splits * (Dv + 2) * 4 bytes, 2 MiB at
         * batch 1 with 32 heads); more goes back at a synchronize, as in the
         * default pool. Where no pool can be made, the default pool serves. */
        cudaMemPoolProps mp = {};
        int dev = 0;
        mp.allocType = cudaMemAllocationTypePinned;
        mp.handleTypes = cudaMemHandleTypeNone;
        mp.location.type = cudaMemLocationTypeDevice;
        uint64_t keep = (uint64_t)64 << 20;
        if (cudaGetDevice(&dev) == cudaSuccess) {
            mp.location.id = dev;
            c->has_scratch = cudaMemPoolCreate(&c->scratch, &mp) == cudaSuccess;
        }
        if (!c->has_scratch || cudaMemPoolSetAttribute(c->scratch, cudaMemPoolAttrReleaseThreshold, &keep) != cudaSuccess)
            cudaGetLastError(); /* not an error of this call: the pool, or the default one, still serves */
    }
    *out = c;
    return SDPA_OK;
}

SDPA_CUDA_API void sdpa_cuda_kv_cache_destroy(sdpa_cuda_kv_cache *c)
{
    if (!c) return;
    /* memory of calls still in flight goes back when their frees have run */
    if (c->has_scratch) cudaMemPoolDestroy(c->scratch);
    if (c->pool) cudaFree(c->pool);
    if (c->dtable) cudaFree(c->dtable);
    free(c->table);
    free(c->len);
    free(c->freel);
    free(c);
}

SDPA_CUDA_API int64_t sdpa_cuda_kv_cache_bytes(const sdpa_cuda_kv_cache *c)
{
    uint64_t r = 0;
    if (!c) return SDPA_ERR_NULL;
    if (c->has_scratch && cudaMemPoolGetAttribute(c->scratch, cudaMemPoolAttrReservedMemCurrent, &r) != cudaSuccess) {
        cudaGetLastError();
        r = 0;
    }
    return c->page_bytes * c->max_pages + c->nseq * c->max_pages * 4 + (r < (uint64_t)INT64_MAX / 2 ? (int64_t)r : 0);
}

SDPA_CUDA_API int64_t sdpa_cuda_kv_cache_len(const sdpa_cuda_kv_cache *c, int64_t seq)
{
    if (!c) return SDPA_ERR_NULL;
    if (seq < 0 || seq >= c->nseq)
        return sdpa__cu_kv_fail(c, SDPA_ERR_PARAM, "sdpa_cuda_kv_cache: sequence %lld is outside [0, %lld)", (long long)seq,
                                (long long)c->nseq);
    return c->len[seq];
}

static int sdpa__cu_kv_tensor(const sdpa_cuda_kv_cache *c, const char *name, const sdpa_tensor *x, int64_t dim, sdpa__cu_tens *t)
{
    sdpa_params ep;
    int rc;
    memset(&ep, 0, sizeof ep);
    ep.errbuf = c->errbuf;
    ep.errbuf_size = c->errbuf_size;
    if ((rc = sdpa__cu_tensor(&ep, name, x, t)) != SDPA_OK) return rc;
    if (!sdpa__cu_isf(t->dtype)) return sdpa__cu_kv_fail(c, SDPA_ERR_DTYPE, "sdpa_cuda_kv_cache: %s must be F32, F16 or BF16", name);
    if (t->n[0] != 1 || t->n[1] != c->H || t->n[3] != dim)
        return sdpa__cu_kv_fail(c, SDPA_ERR_SHAPE, "sdpa_cuda_kv_cache: %s must be [1, %lld, n, %lld]", name, (long long)c->H,
                                (long long)dim);
    if (t->n[2] > 0x7fffffff) return sdpa__cu_kv_fail(c, SDPA_ERR_SHAPE, "sdpa_cuda_kv_cache: %s has too many tokens", name);
    return SDPA_OK;
}

SDPA_CUDA_API int sdpa_cuda_kv_cache_append(sdpa_cuda_kv_cache *c, int64_t seq, const sdpa_tensor *k, const sdpa_tensor *v,
                                            cudaStream_t st)
{
    sdpa__cu_tens tk, tv;
    int64_t n, have, need, p;
    int rc;
    cudaError_t e;
    if (!c) return SDPA_ERR_NULL;
    if (seq < 0 || seq >= c->nseq)
        return sdpa__cu_kv_fail(c, SDPA_ERR_PARAM, "sdpa_cuda_kv_cache_append: sequence %lld is outside [0, %lld)", (long long)seq,
                                (long long)c->nseq);
    if ((rc = sdpa__cu_kv_tensor(c, "k", k, c->D, &tk)) != SDPA_OK) return rc;
    if ((rc = sdpa__cu_kv_tensor(c, "v", v, c->Dv, &tv)) != SDPA_OK) return rc;
    n = tk.n[2];
    if (tv.n[2] != n)
        return sdpa__cu_kv_fail(c, SDPA_ERR_SHAPE, "sdpa_cuda_kv_cache_append: k has %lld tokens, v %lld", (long long)n,
                                (long long)tv.n[2]);
    if (n == 0) return SDPA_OK;
    have = (c->len[seq] + c->ps - 1) / c->ps;
    need = (c->len[seq] + n + c->ps - 1) / c->ps;
    if (c->len[seq] + n > 0x7fffffff)
        return sdpa__cu_kv_fail(c, SDPA_ERR_CAPACITY, "sdpa_cuda_kv_cache_append: a sequence holds at most 2^31 - 1 tokens");
    if (need > c->max_pages || need - have > c->nfree)
        return sdpa__cu_kv_fail(c, SDPA_ERR_CAPACITY, "sdpa_cuda_kv_cache_append: %lld more pages needed, %lld free",
                                (long long)(need - have), (long long)c->nfree);
    for (p = have; p < need; p++) c->table[seq * c->max_pages + p] = c->freel[--c->nfree];
    if (need > have &&
        (e = cudaMemcpyAsync(c->dtable + seq * c->max_pages + have, c->table + seq * c->max_pages + have, (size_t)(need - have) * 4,
                             cudaMemcpyHostToDevice, st)) != cudaSuccess) {
        for (p = need - 1; p >= have; p--) c->freel[c->nfree++] = c->table[seq * c->max_pages + p];
        return sdpa__cu_kv_fail(c, SDPA_ERR_CUDA, "sdpa_cuda_kv_cache_append: cudaMemcpyAsync: %s", cudaGetErrorString(e));
    }
    {
        sdpa__cu_kvargs ka = sdpa__cu_kv_args(c);
        dim3 grid((unsigned)n, (unsigned)c->H);
        sdpa__cu_kv_put<<<grid, 32, 0, st>>>(ka, seq, c->len[seq], tk.data, tk.dtype, tk.s[1], tk.s[2], 0);
        sdpa__cu_kv_put<<<grid, 32, 0, st>>>(ka, seq, c->len[seq], tv.data, tv.dtype, tv.s[1], tv.s[2], 1);
        if ((e = cudaGetLastError()) != cudaSuccess)
            return sdpa__cu_kv_fail(c, SDPA_ERR_CUDA, "sdpa_cuda_kv_cache_append: launch: %s", cudaGetErrorString(e));
    }
    c->len[seq] += n;
    return SDPA_OK;
}

static void sdpa__cu_kv_cut(sdpa_cuda_kv_cache *c, int64_t seq, int64_t len)
{
    int64_t keep = (len + c->ps - 1) / c->ps, have = (c->len[seq] + c->ps - 1) / c->ps, p;
    for (p = have - 1; p >= keep; p--) c->freel[c->nfree++] = c->table[seq * c->max_pages + p];
    c->len[seq] = len;
}

SDPA_CUDA_API int sdpa_cuda_kv_cache_truncate(sdpa_cuda_kv_cache *c, int64_t seq, int64_t len)
{
    if (!c) return SDPA_ERR_NULL;
    if (seq < 0 || seq >= c->nseq)
        return sdpa__cu_kv_fail(c, SDPA_ERR_PARAM, "sdpa_cuda_kv_cache_truncate: sequence %lld is outside [0, %lld)", (long long)seq,
                                (long long)c->nseq);
    if (len < 0 || len > c->len[seq])
        return sdpa__cu_kv_fail(c, SDPA_ERR_PARAM, "sdpa_cuda_kv_cache_truncate: len %lld is outside [0, %lld]", (long long)len,
                                (long long)c->len[seq]);
    sdpa__cu_kv_cut(c, seq, len);
    return SDPA_OK;
}

SDPA_CUDA_API int sdpa_cuda_kv_cache_reset(sdpa_cuda_kv_cache *c, int64_t seq)
{
    int64_t s;
    if (!c) return SDPA_ERR_NULL;
    if (seq < -1 || seq >= c->nseq)
        return sdpa__cu_kv_fail(c, SDPA_ERR_PARAM, "sdpa_cuda_kv_cache_reset: sequence %lld is outside [-1, %lld)", (long long)seq,
                                (long long)c->nseq);
    for (s = 0; s < c->nseq; s++)
        if (seq == -1 || s == seq) sdpa__cu_kv_cut(c, s, 0);
    return SDPA_OK;
}

SDPA_CUDA_API int sdpa_cuda_kv_cache_read(const sdpa_cuda_kv_cache *c, int64_t seq, int64_t pos, const sdpa_tensor *k,
                                          const sdpa_tensor *v, cudaStream_t st)
{
    sdpa__cu_tens t[2];
    int64_t n = -1;
    int rc, w;
    cudaError_t e;
    if (!c) return SDPA_ERR_NULL;
    if (seq < 0 || seq >= c->nseq)
        return sdpa__cu_kv_fail(c, SDPA_ERR_PARAM, "sdpa_cuda_kv_cache_read: sequence %lld is outside [0, %lld)", (long long)seq,
                                (long long)c->nseq);
    if (!k && !v) return sdpa__cu_kv_fail(c, SDPA_ERR_NULL, "sdpa_cuda_kv_cache_read: k and v are both NULL");
    if (k && (rc = sdpa__cu_kv_tensor(c, "k", k, c->D, &t[0])) != SDPA_OK) return rc;
    if (v && (rc = sdpa__cu_kv_tensor(c, "v", v, c->Dv, &t[1])) != SDPA_OK) return rc;
    if (k) n = t[0].n[2];
    if (v) {
        if (n >= 0 && t[1].n[2] != n) return sdpa__cu_kv_fail(c, SDPA_ERR_SHAPE, "sdpa_cuda_kv_cache_read: k and v token counts differ");
        n = t[1].n[2];
    }
    if (pos < 0 || pos > c->len[seq] || n > c->len[seq] - pos)
        return sdpa__cu_kv_fail(c, SDPA_ERR_PARAM, "sdpa_cuda_kv_cache_read: tokens %lld..%lld are outside [0, %lld)", (long long)pos,
                                (long long)(pos + n - 1), (long long)c->len[seq]);
    if ((k && !sdpa__cu_injective(&t[0])) || (v && !sdpa__cu_injective(&t[1])) || (k && v && sdpa__cu_overlap(&t[0], t[1].lo, t[1].hi)))
        return sdpa__cu_kv_fail(c, SDPA_ERR_ALIAS, "sdpa_cuda_kv_cache_read: k and v overlap");
    if (n == 0) return SDPA_OK;
    for (w = 0; w < 2; w++) {
        if (!(w ? v : k)) continue;
        dim3 grid((unsigned)n, (unsigned)c->H);
        sdpa__cu_kv_get<<<grid, 32, 0, st>>>(sdpa__cu_kv_args(c), seq, pos, (char *)(uintptr_t)t[w].data, t[w].dtype, t[w].s[1],
                                              t[w].s[2], w);
    }
    if ((e = cudaGetLastError()) != cudaSuccess)
        return sdpa__cu_kv_fail(c, SDPA_ERR_CUDA, "sdpa_cuda_kv_cache_read: launch: %s", cudaGetErrorString(e));
    return SDPA_OK;
}

SDPA_CUDA_API int sdpa_cuda_kv_cache_attention(const sdpa_cuda_kv_cache *c, const int64_t *seqs, const sdpa_tensor *q,
                                               const sdpa_tensor *out, const sdpa_params *pp, cudaStream_t st)
{
    sdpa_params zero;
    const sdpa_params *p = pp;
    sdpa__cu_tens tq, to;
    sdpa__cu_dargs A;
    int64_t b, lse_n = 0, maxlen = 0, rows_blocks, sms, per_sm = 1;
    uintptr_t lse_lo = 0, lse_hi = 0;
    int rc, d, fast, mmadec;
    cudaError_t e = cudaSuccess;
    memset(&zero, 0, sizeof zero);
    memset(&A, 0, sizeof A);
    if (!p) p = &zero;
    if (!c) return sdpa__cu_fail(pp, SDPA_ERR_NULL, "sdpa_cuda_kv_cache_attention: cache is NULL");
    if ((rc = sdpa__cu_tensor(pp, "q", q, &tq)) != SDPA_OK) return rc;
    if ((rc = sdpa__cu_tensor(pp, "out", out, &to)) != SDPA_OK) return rc;
    if (!sdpa__cu_isf(tq.dtype) || !sdpa__cu_isf(to.dtype))
        return sdpa__cu_fail(pp, SDPA_ERR_DTYPE, "sdpa_cuda_kv_cache_attention: q and out must be F32, F16 or BF16");
    A.B = tq.n[0]; A.Hq = tq.n[1]; A.n = tq.n[2];
    if (tq.n[3] != c->D)
        return sdpa__cu_fail(pp, SDPA_ERR_SHAPE, "sdpa_cuda_kv_cache_attention: q head_dim %lld, the cache's %lld", (long long)tq.n[3],
                             (long long)c->D);
    if (A.Hq % c->H != 0 || A.Hq == 0)
        return sdpa__cu_fail(pp, SDPA_ERR_HEADS, "sdpa_cuda_kv_cache_attention: q heads (%lld) must be a positive multiple of kv heads (%lld)",
                             (long long)A.Hq, (long long)c->H);
    A.G = A.Hq / c->H;
    if (to.n[0] != A.B || to.n[1] != A.Hq || to.n[2] != A.n || to.n[3] != c->Dv)
        return sdpa__cu_fail(pp, SDPA_ERR_SHAPE, "sdpa_cuda_kv_cache_attention: out must be [%lld, %lld, %lld, %lld]", (long long)A.B,
                             (long long)A.Hq, (long long)A.n, (long long)c->Dv);
    if (!sdpa__cu_injective(&to))
        return sdpa__cu_fail(pp, SDPA_ERR_STRIDE, "sdpa_cuda_kv_cache_attention: out strides make distinct elements overlap");
    if (p->mask || p->seqlens_kv || p->cu_seqlens_q || p->cu_seqlens_kv || p->causal == SDPA_CAUSAL_TOP_LEFT || p->score_mod)
        return sdpa__cu_fail(pp, SDPA_ERR_PARAM, "sdpa_cuda_kv_cache_attention: mask, seqlens_kv, cu_seqlens, TOP_LEFT causal and score_mod are not supported");
    if (p->causal != SDPA_CAUSAL_NONE && p->causal != SDPA_CAUSAL_BOTTOM_RIGHT)
        return sdpa__cu_fail(pp, SDPA_ERR_PARAM, "sdpa_cuda_kv_cache_attention: causal = %d is not an sdpa_causal value", (int)p->causal);
    if (p->precision != SDPA_PRECISION_DEFAULT && p->precision != SDPA_PRECISION_BF16_PV) /* BF16_PV: computed as the default */
        return sdpa__cu_fail(pp, SDPA_ERR_PARAM, "sdpa_cuda_kv_cache_attention: the int8 precision modes are not supported");
    if (p->scale != p->scale || p->scale == (float)INFINITY || p->scale == -(float)INFINITY)
        return sdpa__cu_fail(pp, SDPA_ERR_PARAM, "sdpa_cuda_kv_cache_attention: scale must be finite");
    if (!(p->softcap >= 0.0f) || p->softcap == (float)INFINITY)
        return sdpa__cu_fail(pp, SDPA_ERR_PARAM, "sdpa_cuda_kv_cache_attention: softcap must be finite and >= 0");
    if (p->num_threads < 0) return sdpa__cu_fail(pp, SDPA_ERR_PARAM, "sdpa_cuda_kv_cache_attention: num_threads must be >= 0");
    if (A.B > 65535) return sdpa__cu_fail(pp, SDPA_ERR_SHAPE, "sdpa_cuda_kv_cache_attention: batch up to 65535");
    for (b = 0; b < A.B; b++) {
        int64_t sb = seqs ? seqs[b] : b;
        if (seqs && (seqs[b] < 0 || seqs[b] >= c->nseq))
            return sdpa__cu_fail(pp, SDPA_ERR_PARAM, "sdpa_cuda_kv_cache_attention: seqs[%lld] = %lld is outside [0, %lld)", (long long)b,
                                 (long long)seqs[b], (long long)c->nseq);
        if (!seqs && b >= c->nseq)
            return sdpa__cu_fail(pp, SDPA_ERR_SHAPE, "sdpa_cuda_kv_cache_attention: batch %lld > the cache's %lld sequences (pass seqs)",
                                 (long long)A.B, (long long)c->nseq);
        if (p->seqlens_q && (p->seqlens_q[b] < 0 || p->seqlens_q[b] > A.n))
            return sdpa__cu_fail(pp, SDPA_ERR_SEQLENS, "sdpa_cuda_kv_cache_attention: seqlens_q[%lld] = %lld is outside [0, %lld]",
                                 (long long)b, (long long)p->seqlens_q[b], (long long)A.n);
        if (c->len[sb] > maxlen) maxlen = c->len[sb];
    }
    if (p->lse) {
        if (!sdpa__cu_mul(A.B, A.Hq, &lse_n) || !sdpa__cu_mul(lse_n, A.n, &lse_n) || lse_n > INT64_MAX / 4)
            return sdpa__cu_fail(pp, SDPA_ERR_OVERFLOW, "sdpa_cuda_kv_cache_attention: lse size overflows");
        lse_lo = (uintptr_t)p->lse;
        lse_hi = lse_lo + (uintptr_t)lse_n * 4u;
    }
    if (sdpa__cu_overlap(&tq, to.lo, to.hi)) return sdpa__cu_fail(pp, SDPA_ERR_ALIAS, "sdpa_cuda_kv_cache_attention: out overlaps q");
    if (sdpa__cu_overlap(&tq, lse_lo, lse_hi)) return sdpa__cu_fail(pp, SDPA_ERR_ALIAS, "sdpa_cuda_kv_cache_attention: lse overlaps q");
    if (sdpa__cu_overlap(&to, lse_lo, lse_hi)) return sdpa__cu_fail(pp, SDPA_ERR_ALIAS, "sdpa_cuda_kv_cache_attention: lse overlaps out");
    /* the fast kernel: 16-bit or int8 pages, D == Dv in {64, 128, 256} */
    fast = (c->dt == SDPA_F16 || c->dt == SDPA_BF16 || c->dt == SDPA_I8) && c->D == c->Dv &&
           (c->D == 64 || c->D == 128 || c->D == 256);
    /* the tensor-core decode: BF16 or I8 pages and a BF16 query, or F16 pages
     * and an F16 query; D == Dv in {64, 128}, several rows per kv head */
    mmadec = fast && (((c->dt == SDPA_BF16 || c->dt == SDPA_I8) && tq.dtype == SDPA_BF16) || (c->dt == SDPA_F16 && tq.dtype == SDPA_F16)) &&
             c->D <= 128 && A.G * A.n >= 2;
    {
        const int64_t rbk = mmadec ? 16 : A.G * A.n <= 1 ? 1 : A.G * A.n <= 4 ? 4 : 8; /* the kernels' rows per block */
        A.nrb = (A.G * A.n + rbk - 1) / rbk;
    }
    if (A.nrb > 65535 / c->H) return sdpa__cu_fail(pp, SDPA_ERR_SHAPE, "sdpa_cuda_kv_cache_attention: too many query rows per kv head");
    if (A.B * A.Hq * A.n == 0) return SDPA_OK;
    /* splits. The CUDA-core kernels: about 2048 blocks (several waves of
     * 4-warp blocks on a large GPU, so the last wave's tail is short), at
     * least 256 keys each (1024 for the tensor-core kernel where CUDA cannot
     * report its occupancy), from the shapes only; the I8 one-row kernel
     * about 256 blocks of up to 4096 keys, also from the shapes only. The
     * tensor-core kernel (few blocks per SM, each a long stream): sized to
     * this GPU's waves below, so its split count, and the last bits of its
     * results, depend on the GPU model (SM count, blocks per SM); on one GPU
     * they are fixed. */
    rows_blocks = A.B * c->H * A.nrb;
#ifndef SDPA_CUDA_FEW_KERNELS
    int i8w = 0; /* the 12-warp I8 tensor-core decode (not in FEW_KERNELS builds, which launch nothing) */
    sms = !mmadec                ? 0
            : c->dt == SDPA_BF16 ? (c->D == 64 ? sdpa__cu_decode_mma_sms<SDPA_BF16, 64, 4>(&per_sm) : sdpa__cu_decode_mma_sms<SDPA_BF16, 128, 4>(&per_sm))
            : c->dt == SDPA_F16  ? (c->D == 64 ? sdpa__cu_decode_mma_sms<SDPA_F16, 64, 4>(&per_sm) : sdpa__cu_decode_mma_sms<SDPA_F16, 128, 4>(&per_sm))
                                 : 0;
    if (mmadec && c->dt == SDPA_I8) { /* the 12-warp block where it fits, else 4 warps */
#ifndef SDPA__CU_TEST_I8_NARROW /* tests: the 4-warp blocks of smaller GPUs, on any GPU */
        sms = c->D == 64 ? sdpa__cu_decode_mma_sms<SDPA_I8, 64, 12>(&per_sm) : sdpa__cu_decode_mma_sms<SDPA_I8, 128, 12>(&per_sm);
        i8w = sms > 0;
#endif
        if (!i8w) sms = c->D == 64 ? sdpa__cu_decode_mma_sms<SDPA_I8, 64, 4>(&per_sm) : sdpa__cu_decode_mma_sms<SDPA_I8, 128, 4>(&per_sm);
    }
#else
    sms = mmadec ? sdpa__cu_decode_mma_sms<SDPA_BF16, 128, 4>(&per_sm) : 0;
#endif
    if (sms > 0) {
        /* the tensor-core decode: the split count whose blocks keep the
         * busiest SM shortest, cost = its blocks x (keys per split + 256, a
         * block's fixed cost in keys), at least 512 keys per split, the
         * fewer splits on a tie. 16-bit pages: one block already streams at
         * the SM's share of the bandwidth, so blocks per SM add up; H100,
         * bf16, GQA 32/8, B 16 4k: one split, no merge, 110.9 us (counting
         * the 2 blocks per SM that fit as one round chose 2 splits, 118.8).
         * I8 (one 12-warp block per SM): the same count, B 16 4k one split */
        int64_t best = -1, ns;
        for (ns = 1; ns <= 128 && ns <= (maxlen + 511) / 512; ns++) {
            const int64_t ch = ((maxlen + ns - 1) / ns + 255) / 256 * 256, n2 = (maxlen + ch - 1) / ch;
            /* k blocks on the busiest SM, in rounds of per_sm. I8 blocks of
             * 4 warps (sm_86, sm_89: three per SM) run best per_sm at a
             * time: a block alone in its round, or a short last round after
             * full ones, each count 0.6 of a block more (H100, GQA 32/8,
             * B 16 4k 2 splits, 73.3 us where 3 took 79.8; B 64 32k 3 where
             * 2 took 7% longer); with one block per SM the terms are 0 */
            const int64_t k = (rows_blocks * n2 + sms - 1) / sms;
            const int64_t pen = c->dt != SDPA_I8 ? 0 : (k % per_sm == 1 ? 6 : 0) + (k > per_sm && k % per_sm ? 6 : 0);
            const int64_t cost = (10 * k + pen) * (ch + 256);
            if (best < 0 || cost < best) { best = cost; A.chunk = ch; }
        }
        if (best < 0) A.chunk = 512;
    } else if (fast && c->dt == SDPA_I8 && A.G * A.n <= 1) {
        /* the I8 one-row kernel (MHA decode): about 256 blocks, 256 to 4096
         * keys each. Its blocks stream their keys from a copy ring and gain
         * from long splits; H100, 32 heads, hd 128, chunks swept from 256 to
         * 32768 keys: this choice was the fastest or within 0.5% of it at
         * B 1 1000 (256 keys), B 1 4k (512), B 1 32k, B 4 8k, B 16 4k, B 16
         * 32k, B 64 4k and B 64 32k (4096), where the 2048-block rule below
         * took 0-12% longer (B 1 32k 126.7 us, 112.8 with this one) */
        A.nsplit = (256 + rows_blocks - 1) / rows_blocks;
        A.chunk = ((maxlen + A.nsplit - 1) / A.nsplit + 255) / 256 * 256;
        if (A.chunk > 4096) A.chunk = 4096;
        if (A.chunk < 256) A.chunk = 256;
    } else {
        const int64_t mink = mmadec ? 1024 : 256;
        A.nsplit = (2048 + rows_blocks - 1) / rows_blocks;
        if (A.nsplit > (maxlen + mink - 1) / mink) A.nsplit = (maxlen + mink - 1) / mink;
        if (A.nsplit > 128) A.nsplit = 128;
        if (A.nsplit < 1) A.nsplit = 1;
        A.chunk = ((maxlen + A.nsplit - 1) / A.nsplit + 255) / 256 * 256;
        if (A.chunk < mink) A.chunk = mink;
    }
    if ((maxlen + A.chunk - 1) / A.chunk > SDPA__CU_MAXSPLIT) /* both choices above keep within it; the merge relies on it */
        A.chunk = ((maxlen + SDPA__CU_MAXSPLIT - 1) / SDPA__CU_MAXSPLIT + 255) / 256 * 256;
    A.nsplit = (maxlen + A.chunk - 1) / A.chunk;
    if (A.nsplit < 1) A.nsplit = 1;
    if (A.B * A.Hq * A.n > 0x7fffffff || A.B * A.Hq * A.n > INT64_MAX / (A.nsplit * (c->Dv + 2) * 4))
        return sdpa__cu_fail(pp, SDPA_ERR_OVERFLOW, "sdpa_cuda_kv_cache_attention: too many rows for one launch");

    A.c = sdpa__cu_kv_args(c);
    A.q = tq.data; A.qdt = tq.dtype; A.o = (char *)(uintptr_t)to.data; A.odt = to.dtype; A.lse = p->lse;
    for (d = 0; d < 4; d++) { A.qs[d] = tq.s[d]; A.os[d] = to.s[d]; }
    A.scale = p->scale != 0.0f ? p->scale : (float)(1.0 / sqrt((double)c->D));
    A.softcap = p->softcap;
    A.causal = (int)p->causal;
    A.window = p->window != 0;
    A.wl = p->window_left < INT64_MAX / 4 ? p->window_left : INT64_MAX / 4;
    A.wr = p->window_right < INT64_MAX / 4 ? p->window_right : INT64_MAX / 4;
    A.vec = c->D % 8 == 0 && c->Dv % 8 == 0;
    A.q16 = (uintptr_t)tq.data % 16 == 0 && tq.s[0] % 8 == 0 && tq.s[1] % 8 == 0 && tq.s[2] % 8 == 0;
    {
        /* batch entries in the parameters when they fit (then, without
         * ALiBi slopes, nothing is copied before the launch) */
        const int inl = A.B <= SDPA__CU_BIN;
        size_t nb = inl ? 0 : (size_t)A.B * sizeof(sdpa__cu_kvb), na = p->alibi_slopes ? (size_t)A.Hq * 4 : 0;
        /* one split (B 64, short contexts): the fast kernels write the
         * output, no parts and no merge kernel (H100, B 64 4k GQA bf16
         * 394 -> 386 us, MHA 1401 -> 1390) */
        A.direct = fast && A.nsplit == 1 && !p->seqlens_q;
        size_t partb = A.direct ? 0 : (size_t)(A.B * A.Hq * A.n * A.nsplit * (c->Dv + 2)) * 4;
        char *h = nb + na ? (char *)malloc(nb + na) : NULL, *dev = NULL;
        sdpa__cu_kvb *bi = inl ? A.bin : (sdpa__cu_kvb *)(void *)h;
        if (nb + na && !h) return sdpa__cu_fail(pp, SDPA_ERR_NOMEM, "sdpa_cuda_kv_cache_attention: out of host memory");
        for (b = 0; b < A.B; b++) {
            bi[b].seq = seqs ? seqs[b] : b;
            bi[b].len = c->len[bi[b].seq];
            bi[b].vq = p->seqlens_q ? p->seqlens_q[b] : A.n;
        }
        if (na) memcpy(h + nb, p->alibi_slopes, na);
        if (nb + na + partb && (e = c->has_scratch ? cudaMallocFromPoolAsync((void **)&dev, nb + na + partb + 16, c->scratch, st)
                                                   : cudaMallocAsync((void **)&dev, nb + na + partb + 16, st)) != cudaSuccess) {
            free(h);
            return sdpa__cu_err(pp, e, "kv cache attention scratch");
        }
        if (nb + na) e = cudaMemcpyAsync(dev, h, nb + na, cudaMemcpyHostToDevice, st);
        free(h);
        if (e == cudaSuccess) {
            A.bi = inl ? NULL : (const sdpa__cu_kvb *)(void *)dev;
            A.alibi = na ? (const float *)(void *)(dev + nb) : NULL;
            A.part = partb ? (float *)(void *)(dev + (nb + na + 15) / 16 * 16) : NULL;
            int64_t L = 1;
            while (L * 8 < (c->D > c->Dv ? c->D : c->Dv)) L *= 2;
            if (L < 8) L = 8;
            dim3 grid((unsigned)A.nsplit, (unsigned)(c->H * A.nrb), (unsigned)A.B);
            const int64_t R = A.G * A.n; /* rows per kv head: 1 (MHA decode), <= 4 (GQA), more */
#define SDPA__CU_DEC(LL)                                                              \
    do {                                                                              \
        if (R <= 1) sdpa__cu_decode<LL, 1><<<grid, 128, 0, st>>>(A);                  \
        else if (R <= 4) sdpa__cu_decode<LL, 4><<<grid, 128, 0, st>>>(A);             \
        else sdpa__cu_decode<LL, 8><<<grid, 128, 0, st>>>(A);                         \
    } while (0)
#define SDPA__CU_DECF(ST, DD)                                                         \
    do {                                                                              \
        if (R <= 1) e = sdpa__cu_decode_fast_launch<ST, DD, 1>(grid, st, A);          \
        else if (R <= 4) e = sdpa__cu_decode_fast_launch<ST, DD, 4>(grid, st, A);     \
        else e = sdpa__cu_decode_fast_launch<ST, DD, 8>(grid, st, A);                 \
    } while (0)
#define SDPA__CU_DECD(ST)                                                             \
    do {                                                                              \
        if (c->D == 64) SDPA__CU_DECF(ST, 64);                                        \
        else if (c->D == 128) SDPA__CU_DECF(ST, 128);                                 \
        else SDPA__CU_DECF(ST, 256);                                                  \
    } while (0)
#ifdef SDPA_CUDA_FEW_KERNELS
            if (R < 0 && fast) { /* never taken: keeps one instantiation of each kernel template compiled */
                sdpa__cu_decode<16, 4><<<grid, 128, 0, st>>>(A);
                e = sdpa__cu_decode_fast_launch<SDPA_BF16, 128, 1>(grid, st, A);
                e = sdpa__cu_decode_fast_launch<SDPA_I8, 128, 1>(grid, st, A);
                e = sdpa__cu_decode_fast_launch<SDPA_I8, 128, 4>(grid, st, A);
                e = sdpa__cu_decode_mma_launch<SDPA_BF16, 128, 4>(grid, st, A);
                e = sdpa__cu_decode_mma_launch<SDPA_F16, 128, 4>(grid, st, A);
                e = sdpa__cu_decode_mma_launch<SDPA_I8, 128, 12>(grid, st, A);
            }
            (void)mmadec;
            e = cudaErrorNotSupported;
            (void)L;
#else
            if (mmadec && c->dt == SDPA_BF16) e = c->D == 64 ? sdpa__cu_decode_mma_launch<SDPA_BF16, 64, 4>(grid, st, A)
                                                             : sdpa__cu_decode_mma_launch<SDPA_BF16, 128, 4>(grid, st, A);
            else if (mmadec && c->dt == SDPA_F16) e = c->D == 64 ? sdpa__cu_decode_mma_launch<SDPA_F16, 64, 4>(grid, st, A)
                                                                 : sdpa__cu_decode_mma_launch<SDPA_F16, 128, 4>(grid, st, A);
            else if (mmadec && i8w) e = c->D == 64 ? sdpa__cu_decode_mma_launch<SDPA_I8, 64, 12>(grid, st, A)
                                                   : sdpa__cu_decode_mma_launch<SDPA_I8, 128, 12>(grid, st, A);
            else if (mmadec) e = c->D == 64 ? sdpa__cu_decode_mma_launch<SDPA_I8, 64, 4>(grid, st, A)
                                            : sdpa__cu_decode_mma_launch<SDPA_I8, 128, 4>(grid, st, A);
            else if (fast && c->dt == SDPA_F16) SDPA__CU_DECD(SDPA_F16);
            else if (fast && c->dt == SDPA_BF16) SDPA__CU_DECD(SDPA_BF16);
            else if (fast) SDPA__CU_DECD(SDPA_I8);
            else if (L <= 8) SDPA__CU_DEC(8);
            else if (L == 16) SDPA__CU_DEC(16);
            else SDPA__CU_DEC(32);
#endif
#undef SDPA__CU_DEC
#undef SDPA__CU_DECF
#undef SDPA__CU_DECD
            if (e == cudaSuccess && (e = cudaGetLastError()) == cudaSuccess && !A.direct) {
                /* with PDL where the merge kernel's code waits for it (built for sm_90 or later) */
                cudaLaunchConfig_t lc = {};
                cudaLaunchAttribute at[1] = {};
                const int pdl = sdpa__cu_merge_pdl();
                lc.gridDim = dim3((unsigned)(A.B * A.Hq * A.n));
                lc.blockDim = dim3(128);
                lc.stream = st;
                at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
                at[0].val.programmaticStreamSerializationAllowed = 1;
                lc.attrs = at;
                lc.numAttrs = pdl ? 1 : 0;
                e = cudaLaunchKernelEx(&lc, sdpa__cu_merge, A);
            }
        }
        if (dev) cudaFreeAsync(dev, st);
        if (e != cudaSuccess) return sdpa__cu_err(pp, e, "sdpa_cuda_kv_cache_attention");
    }
    return SDPA_OK;
}

#endif /* SDPA_CUDA_IMPLEMENTATION */

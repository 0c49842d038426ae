/* sdpa.h - scaled-dot-product attention in one portable C header.    v0.1.0
 *
 * WHAT IT DOES
 *   out = softmax(scale * Q Kᵀ + bias) V, with the semantics of PyTorch's
 *   F.scaled_dot_product_attention (grouped-query attention included), plus
 *   sliding windows, logit soft-capping, ALiBi, a score-modification callback,
 *   variable-length batches (padded and packed), and the log-sum-exp output.
 *   It is computed the FlashAttention way: Q tiles against K/V tiles with a
 *   running max and sum per row, so memory is O(tile * head_dim) per thread
 *   and the Lq x Lk score matrix never exists. A paged KV cache (F32, F16,
 *   BF16, I8 storage) serves decoding, and sdpa_plan picks the fastest
 *   configuration (path, dtype, int8 mode, KV storage, tiles, threads)
 *   within a memory budget and an error tolerance.
 *
 * HOW TO USE
 *   In exactly one C or C++ file:
 *       #define SDPA_IMPLEMENTATION
 *       #include "sdpa.h"
 *   Everywhere else just #include "sdpa.h". Link with -lm, and -pthread where
 *   the platform needs it (glibc before 2.34).
 *
 *       sdpa_tensor q = { qbuf, SDPA_F32, {B, Hq, Lq, D}, {0} };  // strides 0 = contiguous
 *       sdpa_tensor k = { kbuf, SDPA_F32, {B, Hkv, Lk, D}, {0} };
 *       sdpa_tensor v = { vbuf, SDPA_F32, {B, Hkv, Lk, Dv}, {0} };
 *       sdpa_tensor o = { obuf, SDPA_F32, {B, Hq, Lq, Dv}, {0} };
 *       sdpa_params p = {0};  p.causal = SDPA_CAUSAL_TOP_LEFT;
 *       int rc = sdpa_attention(&q, &k, &v, &o, &p);
 *       if (rc != SDPA_OK) fprintf(stderr, "sdpa: %s\n", sdpa_strerror(rc));
 *
 * CONFIGURATION MACROS (define before including the implementation)
 *   SDPA_STATIC          give every public function static linkage (default: extern)
 *   SDPA_NO_THREADS      no built-in threads; num_threads is honoured only
 *                        through a user parallel_for hook (default: threads on)
 *   SDPA_MALLOC/SDPA_FREE  default allocator (default: malloc/free), used when
 *                        params->allocator is NULL
 *   SDPA_TILE_Q          default query rows per tile (default: 64; the
 *                        avx2, avx512 and amx paths take 128 or 256 where the
 *                        call gives enough tiles, see sdpa__auto_tiles);
 *                        defined, it is the default on every path
 *   SDPA_TILE_K          default keys per tile (default: 64; 128 in the amx
 *                        path's bf16 mode); defined, the same
 *   SDPA_MAX_THREADS     cap on worker threads (default 256)
 *   SDPA_NO_SIMD         build only the portable scalar path
 *   SDPA_NO_AVX2         leave out the AVX2 path and the paths above it (x86
 *                        with gcc or clang)
 *   SDPA_NO_AVX512       leave out the AVX-512 and AMX paths (x86-64, gcc >= 9
 *                        or clang >= 8)
 *   SDPA_NO_AMX          leave out the AMX path (it needs gcc >= 11 or
 *                        clang >= 12)
 *   SDPA_NO_NEON         leave out the NEON path (AArch64)
 *   SDPA_USE_SLEEF       the avx2, avx512/amx and neon paths take their
 *                        vector exp from SLEEF (Sleef_expf8_u10avx2,
 *                        Sleef_expf16_u10avx512f, Sleef_expf4_u10advsimd);
 *                        needs <sleef.h> and linking with -lsleef (Debian:
 *                        libsleef-dev). The scalar path and the per-row
 *                        rescale factor keep the built-in exp. (default: off,
 *                        the built-in polynomial everywhere)
 *   Built-in threads are POSIX threads on Unix-like systems; with OpenMP
 *   (-fopenmp, _OPENMP defined) OpenMP is used instead; elsewhere the library
 *   runs on the calling thread unless a parallel_for hook is given.
 *
 * SEMANTICS
 *   q [B, Hq, Lq, D], k [B, Hkv, Lk, D], v [B, Hkv, Lk, Dv], out [B, Hq, Lq, Dv]
 *     s[b,h,i,j] = scale * dot(q[b,h,i,:], k[b,g,j,:]),  g = h / (Hq / Hkv)
 *     s = softcap * tanh(s / softcap)                    (if softcap > 0)
 *     s += -alibi_slopes[h] * |pos(i) - j|               (if alibi_slopes)
 *     s += mask[b,h,i,j]                                 (F32 mask)
 *     s  = score_mod(s, b, h, i, j, user)                (if score_mod)
 *     s  = -inf where key j is not visible to query i    (causal, window,
 *                                                         BOOL mask, lengths)
 *     out[b,h,i,:] = sum_j softmax_j(s) v[b,g,j,:]
 *     lse[b,h,i]   = log(sum_j exp(s))                   (natural log)
 *   pos(i) is the query's position on the key axis: i + Lk - Lq (bottom-right
 *   alignment, as FlashAttention and a KV cache use it), except with
 *   SDPA_CAUSAL_TOP_LEFT where it is i. Causal: j <= pos(i). Window:
 *   pos(i) - window_left <= j <= pos(i) + window_right (negative = unbounded).
 *   With variable lengths, Lq and Lk above are the sequence's own lengths.
 *   Hq must be a multiple of Hkv. A mask dimension of 1 broadcasts.
 *   A query row that sees no key gives out = 0 and lse = -inf, never NaN.
 *
 * NUMERICS
 *   Inputs F32, F16 or BF16 (q, k and v share one dtype); out F32, F16 or BF16.
 *   Products, the running max and the running sum are float32 however long the
 *   sequence; F16/BF16 are widened exactly on load and rounded to nearest-even
 *   once on store. exp is a built-in polynomial with a maximum error of
 *   2 ulp over the float range (tests/test_sdpa.c checks it on a dense sweep).
 *   With SDPA_USE_SLEEF the SIMD paths' exp is SLEEF's u10 expf, documented
 *   as 1.0 ulp at most (the same sweep checks 1 ulp). Both give exp(-inf) = 0
 *   and NaN for NaN, and flush results below FLT_MIN (x < -87.33654) to 0.
 *   Tested bounds against a float64 reference, per output element, with
 *   |v| <= 1:  F32 out: 2e-5 + 1e-4 |ref|;  F16 out: 2e-3 |ref| + 1e-4;
 *   BF16 out: 8e-3 |ref| + 1e-3 (the bound is the final rounding: ref is
 *   computed from the same F16/BF16 inputs).
 *   Results are bitwise identical for any thread count: each output row is
 *   computed by one task in a fixed order. Changing tile_k changes the
 *   summation order and so the last bits.
 *   NaN or Inf in an input confines itself to the rows whose scores or values
 *   it reaches: a key a row cannot see (causal, window, BOOL mask, lengths)
 *   never reaches it, whatever its K and V hold. A NaN score (NaN input, or
 *   score_mod returning NaN) makes that row NaN. lse is within
 *   2e-5 + 2e-6 |ref| of the float64 reference.
 *   The amx path with BF16 inputs computes Q.K^T and P.V on AMX tiles: the
 *   bf16 products are exact and summed in fp32, the scale is applied to the
 *   sums, and P enters P.V as two bf16 parts (hi + lo, 16 significant bits);
 *   the bounds above hold unchanged. params->precision =
 *   SDPA_PRECISION_BF16_PV lets it take P as one bf16 instead, as PyTorch's
 *   and FlashAttention's bf16 kernels do (half the P.V products): each
 *   output then moves by at most 2^-9 max|v| more (see sdpa_precision).
 *   params->precision = SDPA_PRECISION_INT8_QK takes Q.K^T on int8 operands
 *   (see "int8" among the declarations); the bounds above do not hold there:
 *   the README states its measured accuracy and the bounds its tests hold.
 *
 * DISPATCH
 *   One binary picks its path at run time: the x86 kernels are compiled with
 *   per-function target attributes (no -m flags needed) and used when CPUID
 *   reports the instructions and XGETBV shows the OS saves their registers:
 *   avx2 (AVX2, FMA, F16C; ymm), avx512 (F/BW/VL/DQ; zmm and opmasks), amx
 *   (AMX-TILE, AMX-BF16 and AVX512-BF16; tile state, which Linux grants a
 *   process on an arch_prctl(ARCH_REQ_XCOMP_PERM) that the first probe makes).
 *   On AArch64 the NEON kernels (Advanced SIMD, part of the base ISA) are used,
 *   after a check of the kernel's HWCAP_ASIMD on Linux.
 *   int8 mode's Q.K^T uses AMX-INT8 on the amx path where CPUID reports it,
 *   else AVX512-VNNI on the avx512 and amx paths where CPUID reports it (AVX2
 *   otherwise), and sdot on AArch64 where HWCAP_ASIMDDP is set.
 *   params->path or $SDPA_PATH forces a path; sdpa_path_in_use() names it.
 *
 * THREADING AND STATE
 *   No global mutable state (the one static variable caches the CPU's
 *   features, written with atomics). sdpa_attention is reentrant and may be called
 *   from many threads at once. Two copies of the library (e.g. SDPA_STATIC in
 *   two files) coexist. Work is split into tasks of (sequence, kv head, query
 *   rows) and spread over num_threads workers, or over the application's own
 *   pool through params->parallel_for.
 *
 * ERRORS
 *   Every argument is validated before any work: on error a negative code is
 *   returned, nothing is written to out or lse, and params->errbuf (if set)
 *   receives a one-line message naming the argument. sdpa_strerror() gives the
 *   code's words. The library never prints, aborts or exits.
 *   Aliasing: out and lse may not overlap each other or the address range
 *   (first to last byte) of q, k, v or mask; the check compares ranges, so
 *   interleaved tensors that share no element are refused too.
 *   Only SDPA_ERR_THREADS (the application's hook failed) can leave out
 *   partly written; SDPA_ERR_NOMEM leaves out and lse untouched (also in
 *   sdpa_kv_cache_attention). A tensor with a dimension of 0 is valid and has
 *   no elements: its data may be NULL, and no two of its elements overlap.
 *
 * LICENCE: MIT, see the end of this file.
 */
#ifndef SDPA_H
#define SDPA_H

#include <stddef.h>
#include <stdint.h>

#define SDPA_VERSION_MAJOR 0
#define SDPA_VERSION_MINOR 1
#define SDPA_VERSION_PATCH 0
#define SDPA_VERSION_STRING "0.1.0"

#ifndef SDPA_API
#ifdef SDPA_STATIC
#if defined(__GNUC__) || defined(__clang__)
#define SDPA_API static __attribute__((unused)) /* a file may use only some functions */
#else
#define SDPA_API static
#endif
#else
#define SDPA_API extern
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sdpa_dtype { SDPA_F32 = 0, SDPA_F16, SDPA_BF16, SDPA_I8, SDPA_BOOL } sdpa_dtype;

typedef struct sdpa_tensor {
    void      *data;
    sdpa_dtype dtype;
    int64_t    shape[4];   /* q,k,v,out: [batch, heads, seq_len, head_dim]; mask: [batch|1, heads|1, Lq|1, Lk|1] */
    int64_t    stride[4];  /* in elements; all four zero = contiguous row-major; stride[3] must be 1 */
} sdpa_tensor;

typedef enum sdpa_causal { SDPA_CAUSAL_NONE = 0, SDPA_CAUSAL_TOP_LEFT, SDPA_CAUSAL_BOTTOM_RIGHT } sdpa_causal;

/* Return codes. Argument errors are -1..-19, resource errors -20..-29. */
enum {
    SDPA_OK = 0,
    SDPA_ERR_NULL     = -1,  /* a required pointer is NULL */
    SDPA_ERR_DTYPE    = -2,  /* unsupported dtype or dtype combination */
    SDPA_ERR_SHAPE    = -3,  /* negative or inconsistent shapes */
    SDPA_ERR_STRIDE   = -4,  /* negative stride, stride[3] != 1, or out rows that overlap */
    SDPA_ERR_OVERFLOW = -5,  /* a size or offset does not fit int64/size_t */
    SDPA_ERR_HEADS    = -6,  /* q heads not a multiple of kv heads */
    SDPA_ERR_MASK     = -7,  /* mask dtype or shape not broadcastable */
    SDPA_ERR_PARAM    = -8,  /* invalid option value (scale, softcap, threads, tiles, ...) */
    SDPA_ERR_SEQLENS  = -9,  /* variable-length arrays out of range or not monotonic */
    SDPA_ERR_ALIAS    = -10, /* out or lse overlaps an input or each other */
    SDPA_ERR_PATH     = -11, /* the requested code path is unknown or not available here */
    SDPA_ERR_NOMEM    = -20, /* the allocator returned NULL */
    SDPA_ERR_THREADS  = -21, /* the user's parallel_for hook reported failure */
    SDPA_ERR_CAPACITY = -22, /* the KV cache would exceed its max_pages */
    SDPA_ERR_INFEASIBLE = -23 /* sdpa_plan: no configuration fits the memory budget and error tolerance */
    /* -29 is SDPA_ERR_CUDA, defined by sdpa_cuda.h: a CUDA call failed */
};

/* Code paths. A call uses params->path; SDPA_PATH_AUTO (0) means the value
 * of the environment variable SDPA_PATH ("scalar", "avx2", "avx512", "amx",
 * "neon"; for tests and bug reports) if set, else the fastest path this build
 * and CPU support, tried in the order amx, avx512, avx2, neon, scalar. All
 * paths meet the same error bounds; their results differ in the last bits. */
typedef enum sdpa_path {
    SDPA_PATH_AUTO = 0,
    SDPA_PATH_SCALAR = 1,  /* portable C written for the auto-vectoriser: every CPU */
    SDPA_PATH_AVX2 = 2,    /* x86-64 AVX2 + FMA + F16C intrinsics */
    SDPA_PATH_AVX512 = 3,  /* x86-64 AVX-512 F/BW/VL/DQ (+ BF16 dot products where present) */
    SDPA_PATH_AMX = 4,     /* x86-64 AMX-BF16 tiles for BF16/F16 inputs, AVX-512 for the rest */
    SDPA_PATH_NEON = 5     /* AArch64 Advanced SIMD */
} sdpa_path;
#define SDPA__PATH_LAST SDPA_PATH_NEON

/* Allocator hook. alloc returns at least `size` bytes or NULL (alignment
 * `align` = 64 is asked for, but any alignment works); free receives the
 * same pointer and size, and may be NULL for arena allocators that free
 * nothing. An allocator whose alloc is NULL is ignored (malloc/free used). */
typedef struct sdpa_allocator {
    void *(*alloc)(void *user, size_t size, size_t align);
    void  (*free)(void *user, void *ptr, size_t size);
    void  *user;
} sdpa_allocator;

/* A unit of work handed to a thread pool: run task `task` on worker `worker`. */
typedef void (*sdpa_task_fn)(void *ctx, int64_t task, int worker);

/* Parallel-for hook: call fn(ctx, t, w) exactly once for every t in [0, n_tasks),
 * in any order and on any threads, and return when all calls have finished.
 * w must be in [0, n_workers) and no two calls that run at the same time may
 * share a w (w selects the per-worker scratch memory). Return 0 on success. */
typedef int (*sdpa_parallel_for_fn)(void *user, int n_workers, int64_t n_tasks,
                                    sdpa_task_fn fn, void *ctx);

/* Score modification, in the spirit of FlexAttention's score_mod. b is the
 * sequence (batch) index, h the query head, i and j the query and key indices
 * within that sequence. Return -INFINITY to hide the key. Called concurrently
 * from several threads; must be thread-safe. Slower than the built-in options. */
typedef float (*sdpa_score_mod_fn)(float score, int64_t b, int64_t h, int64_t i, int64_t j,
                                   void *user);

typedef struct sdpa_params {      /* all-zero = PyTorch's defaults */
    float              scale;     /* 0 -> 1/sqrt(head_dim); any other finite value is used as is */
    sdpa_causal        causal;
    const sdpa_tensor *mask;      /* NULL, SDPA_F32 additive, or SDPA_BOOL (1 byte each, nonzero = may attend) */
    float             *lse;       /* optional output: natural-log sum-exp, contiguous [batch, q_heads, Lq] */
    int                num_threads; /* 0 -> library default (the CPUs online) */

    /* Sliding window, used when window != 0: keys pos(i)-window_left ..
     * pos(i)+window_right are visible; a negative extent is unbounded. */
    int                window;
    int64_t            window_left;
    int64_t            window_right;

    float              softcap;       /* > 0: s = softcap * tanh(s / softcap); 0 = off */
    const float       *alibi_slopes;  /* [q_heads] or NULL: s += -slope[h] * |pos(i) - j| */

    sdpa_score_mod_fn  score_mod;     /* NULL = none */
    void              *score_mod_user;

    /* Variable lengths, padded layout: sequence b uses the first seqlens_q[b]
     * queries and seqlens_kv[b] keys of its batch entry (either may be NULL =
     * full length). Query rows past seqlens_q[b] get out = 0, lse = -inf. */
    const int64_t     *seqlens_q;
    const int64_t     *seqlens_kv;

    /* Variable lengths, packed layout (FlashAttention's varlen): batch must be
     * 1, sequence s owns query rows cu_seqlens_q[s]..cu_seqlens_q[s+1]-1 and
     * key rows cu_seqlens_kv[s]..cu_seqlens_kv[s+1]-1; both arrays hold
     * num_seqs+1 non-decreasing offsets starting at 0. Rows past the last
     * sequence get out = 0, lse = -inf. Cannot be combined with seqlens_*.
     * A mask is indexed by the packed (global) query and key rows; score_mod
     * gets the sequence index and indices within the sequence. */
    const int64_t     *cu_seqlens_q;
    const int64_t     *cu_seqlens_kv;
    int64_t            num_seqs;

    const sdpa_allocator *allocator;  /* NULL = SDPA_MALLOC/SDPA_FREE */
    sdpa_parallel_for_fn  parallel_for;  /* NULL = built-in threads */
    void                 *parallel_user;

    int                tile_q;        /* query rows per tile, 0 = SDPA_TILE_Q (the avx2, avx512 and amx paths may take more) */
    int                tile_k;        /* keys per tile, 0 = SDPA_TILE_K (amx with BF16 inputs: 128) */

    char              *errbuf;        /* optional: receives a message on error */
    size_t             errbuf_size;

    sdpa_path          path;          /* 0 = $SDPA_PATH or the best available */

    int                precision;     /* an sdpa_precision; 0 = float products (see "int8" below) */
    /* int8 mode with q and/or k given as SDPA_I8: one float scale per token,
     * contiguous [batch, heads, seq_len] of that tensor (value = int8 * scale) */
    const float       *q_scale;
    const float       *k_scale;
} sdpa_params;

SDPA_API int sdpa_attention(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v,
                            const sdpa_tensor *out, const sdpa_params *params);   /* params may be NULL */

SDPA_API const char *sdpa_strerror(int code);  /* SDPA_OK == 0; every error is negative */

/* Bytes of scratch memory sdpa_attention would allocate for these arguments
 * (all workers together), or a negative error code. */
SDPA_API int64_t sdpa_workspace_size(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v,
                                     const sdpa_tensor *out, const sdpa_params *params);

/* Element conversions used by the library (round to nearest even, NaN kept). */
SDPA_API float    sdpa_f16_to_f32(uint16_t h);
SDPA_API uint16_t sdpa_f32_to_f16(float f);
SDPA_API float    sdpa_bf16_to_f32(uint16_t h);
SDPA_API uint16_t sdpa_f32_to_bf16(float f);

SDPA_API const char *sdpa_version(void);

/* Paths: the name of a path ("scalar", "avx2", "auto"; NULL if unknown);
 * whether this build and CPU (and OS, for the wider registers) can run it;
 * and the path a call with these params would take (params may be NULL), or
 * SDPA_ERR_PATH when the requested one, or $SDPA_PATH, is unknown or not
 * available. */
SDPA_API const char *sdpa_path_name(sdpa_path path);
SDPA_API int         sdpa_path_supported(sdpa_path path);
SDPA_API int         sdpa_path_in_use(const sdpa_params *params);

/* ---- int8 ---- */

/* Symmetric int8 quantisation of a rows x cols float matrix (row r at
 * x + r * ldx), with one float scale per row (per token) or per column (per
 * channel): scale = max |x| / 127 over the row or column, q = x / scale
 * rounded to nearest (ties to even), in [-127, 127] (never -128). Round trip:
 * |q * scale - x| <= scale (1/2 + 2^-14) (float roundings). A row (column) whose max |x| is
 * below 1e-30, zeros included, gets scale 0 and q 0. NaN or Inf anywhere in x
 * is refused (SDPA_ERR_PARAM, naming the element) before anything is written.
 * scale has rows (SDPA_QUANT_PER_ROW) or cols (SDPA_QUANT_PER_COL) entries.
 * errbuf (may be NULL) receives a message on error, as params->errbuf does. */
typedef enum sdpa_quant_axis { SDPA_QUANT_PER_ROW = 0, SDPA_QUANT_PER_COL = 1 } sdpa_quant_axis;

SDPA_API int sdpa_quantize_i8(const float *x, int64_t rows, int64_t cols, int64_t ldx, int8_t *q, int64_t ldq,
                              float *scale, sdpa_quant_axis axis, char *errbuf, size_t errbuf_size);
/* x = q * scale (one float product per element; NaN/Inf scales propagate). */
SDPA_API int sdpa_dequantize_i8(const int8_t *q, int64_t rows, int64_t cols, int64_t ldq, const float *scale,
                                sdpa_quant_axis axis, float *x, int64_t ldx, char *errbuf, size_t errbuf_size);

/* params->precision. INT8_QK is SageAttention's idea on CPUs: Q.K^T on int8
 * operands with int32 sums, P.V in float as usual. (On the amx path Q.K^T
 * runs on AMX-INT8 tiles and P.V on AMX-BF16 tiles, each of P and V split
 * into two bf16 as the BF16 mode splits P, (P_hi + P_lo).V_hi + P_hi.V_lo:
 * what that leaves out is below 2^-16 of each product, so its error stays
 * Q.K^T's. A V block holding a value beyond that split's range, non-finite,
 * rounding to Inf in bf16, or nonzero below 2^-100, takes the F32 product.)
 * Each key is smoothed by
 * subtracting the mean key of its sequence and kv head (softmax does not
 * change: q.mean is one constant per row, added back to the scores so that
 * lse, softcap, ALiBi, masks and score_mod see the true score), then each
 * key and each query row is quantised per token (one float scale each; the
 * attention scale folds into the query's). Scores are dequantised as
 * int32 * (scale_q * scale_k) + scale * q.mean. Costs a pre-pass over K (in
 * parallel tasks; O(Lk * head_dim) bytes of scratch, see
 * sdpa_workspace_size) and head_dim <= 65536 (int32 sums cannot overflow).
 * Accuracy: README, "int8 attention". A NaN or Inf in a query row spoils
 * that row only (as in float mode); a NaN or Inf key makes the rows that
 * see it NaN, and turns the smoothing off for its sequence and kv head.
 * INT8_QK_NOSMOOTH is the same without the smoothing: for measurements.
 * q and k may come quantised: dtype SDPA_I8 with params->q_scale / k_scale
 * (per token, see sdpa_params; sdpa_quantize_i8 per row makes them; -128 is
 * read as -127). An I8 k is used as it is, without smoothing (a caller who
 * subtracts the mean key before quantising gets the same out, and lse
 * lowered by scale * q.mean). v stays float.
 *
 * BF16_PV allows P (the softmax's weights, each in (0, 1]) to be rounded to
 * one bf16 before P.V where P.V is a bf16 product: the amx path with BF16
 * q. l still sums the unrounded weights, so an output element moves by
 * |sum_j (bf16(p_j) - p_j) v_j| / l <= 2^-9 max_j |v_j| (the relative
 * rounding error of bf16 is at most 2^-9) beyond the default bounds, and
 * in practice far less: the errors of many keys cancel. It saves about
 * half the P.V work and a part of the softmax's. Every other path and
 * dtype computes exactly as DEFAULT.
 *
 * INT8_QK_BF16_PV is INT8_QK (smoothed) with a single-bf16 P.V: P and V
 * each rounded once to bf16 (nearest even), their products exact and
 * summed in fp32, where P.V is a bf16 product: the avx512 path on AMD
 * CPUs with AVX512-BF16 (vdpbf16ps, at the F32 FMA's instruction rate on
 * Zen 4 with twice its products; Intel's run it at half that rate, so
 * their avx512 path keeps INT8_QK's F32 P.V) and the amx path (AMX-BF16
 * tiles, one product term instead of three). An output element moves by
 * at most 2^-9 max|v| for P's rounding and 2^-9 max|v| for V's beyond
 * INT8_QK's error (measured: relative L2 about 1.5e-3 with exact int8
 * products, against int8's own 2e-3 to 1e-2; README, "int8 attention").
 * V blocks out of bf16's range take the F32 product, as in INT8_QK. Other
 * paths compute it as INT8_QK. */
typedef enum sdpa_precision {
    SDPA_PRECISION_DEFAULT = 0,
    SDPA_PRECISION_INT8_QK = 1,
    SDPA_PRECISION_INT8_QK_NOSMOOTH = 2,
    SDPA_PRECISION_BF16_PV = 3,
    SDPA_PRECISION_INT8_QK_BF16_PV = 4
} sdpa_precision;

/* ---- KV cache ---- */

/* A paged KV cache: K and V of num_seqs sequences x kv_heads, stored in
 * fixed-size pages of page_size tokens taken from the allocator as sequences
 * grow (nothing is ever copied to grow), in F32, F16, BF16 or I8 (int8: values
 * with one fp32 scale per token and head, x = scale * q, scale = max|x| / 127;
 * keys by default with one per channel, head and page, see Numerics below).
 * Sequences can share a prefix's pages (sdpa_kv_cache_fork), roll back
 * (truncate), and drop the middle of their history while keeping the first
 * tokens (evict, StreamingLLM's attention sinks).
 *
 * Positions: a sequence's tokens are numbered 0..len-1 in the order they
 * were appended; after an eviction the kept tokens are renumbered
 * contiguously. These numbers are the key indices j of SEMANTICS.
 *
 * Numerics: F32, F16 and BF16 storage round K and V once on append (to
 * nearest even); attention over them meets sdpa_attention's bounds. I8
 * storage: values x = scale * q per token and head (q rounded to nearest,
 * ties away from zero); keys by default k_d = s_d * q_d with one scale per
 * channel, head and page (config.kscale; KIVI's grouping), each s_d growing
 * as the page fills: a key is off by at most 2.5 steps of its channel's
 * final scale, itself at most 1.25 max|k_d| / 127 over the page (see
 * sdpa__kv_put_kchan); SDPA_KV_KSCALE_TOKEN scales keys per token, like the
 * values (half a step of max|k| / 127). A row holding NaN or Inf is stored
 * with a NaN scale (keys per channel: a NaN factor; the channel scales stay
 * as they were). Keys are dotted in exact integer arithmetic with the query
 * rounded to int16: per row (one scale, max|q| / 32767) for keys per token,
 * per row and page (q_d * s_d, one scale) for keys per channel; head_dim >
 * 4096 uses float products. A score so carries an extra error of at most
 * sum_d |k_d| * max|q| * scale / 65534 (per token) or 127 * head_dim *
 * max_d |q_d s_d| * scale / 65534 (per channel) beyond the F32 bounds over
 * the dequantized K and V. Against F32 storage, I8 decode outputs measured
 * relative L2 7.5e-3 on uniform random K/V either way, and with outlier
 * channels in K (one channel in 17 at 20x) 1.9e-2 with keys per channel
 * against 5.5e-2 per token, whose scale the outlier coarsens for the whole
 * row (tests: "kv cache int8 accuracy"; bench_kscales). The CUDA twin,
 * sdpa_cuda.h, keeps keys per token whatever kscale says.
 *
 * Threads: calls that change a cache (append, truncate, evict, fork, reset,
 * destroy) need the caller's exclusive access; sdpa_kv_cache_attention,
 * _read, _len and _bytes only read it and may run concurrently with each
 * other. Messages of failing cache calls go to the config's errbuf (kept by
 * pointer: it must outlive the cache, and is written without locking). */
typedef struct sdpa_kv_cache sdpa_kv_cache;

/* How I8 storage scales its keys (values always get one scale per token and
 * head). */
typedef enum sdpa_kv_kscale {
    SDPA_KV_KSCALE_CHANNEL = 0, /* one per channel, head and page (KIVI's grouping): the default */
    SDPA_KV_KSCALE_TOKEN = 1    /* one per token and head, as the values */
} sdpa_kv_kscale;

typedef struct sdpa_kv_cache_config {
    int64_t    num_seqs;     /* sequences, >= 1 */
    int64_t    kv_heads;     /* >= 1 */
    int64_t    head_dim;     /* of K, >= 1 */
    int64_t    head_dim_v;   /* of V, 0 = head_dim */
    sdpa_dtype dtype;        /* storage: SDPA_F32, SDPA_F16, SDPA_BF16 or SDPA_I8 */
    int64_t    page_size;    /* tokens per page, 0 = 64; at most 65536 */
    int64_t    max_pages;    /* pages all sequences may hold at once, 0 = no limit */
    const sdpa_allocator *allocator;  /* NULL = SDPA_MALLOC/SDPA_FREE; copied */
    char      *errbuf;       /* optional: receives a message when a call fails */
    size_t     errbuf_size;
    sdpa_kv_kscale kscale;   /* I8 keys' scales; ignored by the other dtypes */
} sdpa_kv_cache_config;

SDPA_API int  sdpa_kv_cache_create(const sdpa_kv_cache_config *config, sdpa_kv_cache **cache);
SDPA_API void sdpa_kv_cache_destroy(sdpa_kv_cache *cache);  /* NULL is a no-op */

/* Appends n tokens to sequence seq: k [1, kv_heads, n, head_dim] and
 * v [1, kv_heads, n, head_dim_v], F32, F16 or BF16 (any strides the core
 * accepts). All or nothing: on error (SDPA_ERR_CAPACITY when max_pages would
 * be exceeded, SDPA_ERR_NOMEM, argument errors) the cache is unchanged. */
SDPA_API int sdpa_kv_cache_append(sdpa_kv_cache *cache, int64_t seq, const sdpa_tensor *k, const sdpa_tensor *v);

/* Keeps the first len tokens of seq (rollback after speculative decoding). */
SDPA_API int sdpa_kv_cache_truncate(sdpa_kv_cache *cache, int64_t seq, int64_t len);

/* Keeps the first n_sink and the last n_recent tokens of seq and drops the
 * rest (nothing happens while len <= n_sink + n_recent). Pages that hold no
 * kept token are released; nothing is copied. */
SDPA_API int sdpa_kv_cache_evict(sdpa_kv_cache *cache, int64_t seq, int64_t n_sink, int64_t n_recent);

/* Makes dst (its old tokens dropped) start with the first len tokens of src,
 * sharing src's pages: a common prompt is stored once. Later appends to
 * either sequence go to pages of their own. dst != src. */
SDPA_API int sdpa_kv_cache_fork(sdpa_kv_cache *cache, int64_t dst, int64_t src, int64_t len);

/* Drops every token of seq, or of every sequence when seq is -1. */
SDPA_API int sdpa_kv_cache_reset(sdpa_kv_cache *cache, int64_t seq);

/* Tokens held by seq, or a negative error code. */
SDPA_API int64_t sdpa_kv_cache_len(const sdpa_kv_cache *cache, int64_t seq);

/* Bytes the cache holds from its allocator right now (pages, page tables and
 * the cache object itself): exact, not an estimate. */
SDPA_API int64_t sdpa_kv_cache_bytes(const sdpa_kv_cache *cache);

/* Copies tokens pos..pos+n-1 of seq, as stored (I8 dequantized), into
 * k [1, kv_heads, n, head_dim] and v [1, kv_heads, n, head_dim_v] (F32, F16
 * or BF16; either may be NULL). */
SDPA_API int sdpa_kv_cache_read(const sdpa_kv_cache *cache, int64_t seq, int64_t pos,
                                const sdpa_tensor *k, const sdpa_tensor *v);

/* Attention of q [B, Hq, n, head_dim] over the cache: batch entry b reads
 * sequence seqs[b] (seqs NULL: sequence b), and its n queries are that
 * sequence's last n tokens, so query i sits at position len - n + i (with
 * params->seqlens_q, the last seqlens_q[b] tokens; rows past them get out = 0
 * and lse = -inf). out is [B, Hq, n, head_dim_v]. Options as in
 * sdpa_attention: scale, causal (NONE or BOTTOM_RIGHT), window, softcap,
 * alibi_slopes, score_mod, lse, seqlens_q, num_threads, parallel_for,
 * allocator, errbuf, path, precision; mask, seqlens_kv, cu_seqlens_*,
 * TOP_LEFT, and an int8 precision mode over a cache that is not I8 are
 * refused (SDPA_ERR_PARAM), tile_q/tile_k and SDPA_PRECISION_BF16_PV are
 * ignored (no bf16 P.V here). With few query rows
 * per kv head (decode), each sequence's keys are split into chunks computed
 * in parallel and merged exactly through their log-sum-exp; the chunking
 * depends only on the lengths, so results are bitwise identical for any
 * thread count. I8 keys and values are read as int8 by the kernels: the
 * query is rounded to int16 (one scale per row, or per row and page with the
 * page's channel scales folded in) for exact int32 Q.K^T sums,
 * and the attention weights times the value scales to int16 (one scale per
 * row and 64-key span, 2^-16 of its largest weight) for exact int32 P.V
 * sums; both roundings sit far below the int8 storage's own. With an int8
 * precision mode (SDPA_PRECISION_INT8_QK; the _NOSMOOTH and _BF16_PV forms
 * act the same here: a cache's keys are not smoothed) the query is rounded
 * to int8 instead (scale max / 127), so that AVX512-VNNI multiplies bytes
 * (vpdpbusd, half the work of the int16 products); the sums stay exact, so
 * every path gives the same bits, but the query's rounding then adds to the
 * storage's error (the README states both). */
SDPA_API int sdpa_kv_cache_attention(const sdpa_kv_cache *cache, const int64_t *seqs, const sdpa_tensor *q,
                                     const sdpa_tensor *out, const sdpa_params *params);

/* ---- thread pool -------------------------------------------------------------
 * A pool of worker threads that stay alive between calls, for callers that
 * make many short calls (decoding: one sdpa_kv_cache_attention per layer and
 * token, each a millisecond or less) where starting threads per call, as the
 * built-in threads do, costs a noticeable share. Pass it as the hook:
 *
 *   sdpa_pool *pool;
 *   if (sdpa_pool_create(16, SDPA_POOL_PIN, &pool) == SDPA_OK) {
 *       p.num_threads = 16;  p.parallel_for = sdpa_pool_parallel_for;  p.parallel_user = pool;
 *       ... calls ...
 *       sdpa_pool_destroy(pool);
 *   }
 *
 * n_threads counts the calling thread, which runs tasks too: n_threads - 1
 * threads are started. Workers that finish a call wait for the next one
 * spinning for about 0.1 ms, then sleep on a condition variable. A pool runs
 * one call at a time (concurrent calls from several threads take turns); a
 * task must not call back into its own pool. Results do not depend on the
 * pool (tasks are the same, whichever thread runs them).
 * SDPA_POOL_PIN pins worker w (1..n_threads-1) to the w-th CPU of the
 * creating thread's affinity mask before sdpa_pool_create returns (Linux on
 * x86-64 and AArch64; elsewhere the flag is ignored and sdpa_pool_pinned
 * reports 0); the caller is not pinned, so keep it on the mask's first CPU
 * for a one-thread-per-CPU layout.
 * Without threads (SDPA_NO_THREADS, OpenMP builds, non-POSIX systems) a pool
 * runs every task on the calling thread. */
typedef struct sdpa_pool sdpa_pool;
#define SDPA_POOL_PIN 1u

/* n_threads in [1, SDPA_MAX_THREADS] (or 0: the number of online CPUs);
 * flags 0 or SDPA_POOL_PIN. SDPA_ERR_PARAM for other values, SDPA_ERR_NOMEM,
 * SDPA_ERR_THREADS when no thread could be started (a pool that started
 * fewer threads than asked works with those: see sdpa_pool_size). */
SDPA_API int sdpa_pool_create(int n_threads, unsigned flags, sdpa_pool **out);
SDPA_API void sdpa_pool_destroy(sdpa_pool *pool);          /* waits for the threads; NULL is a no-op */
SDPA_API int sdpa_pool_size(const sdpa_pool *pool);        /* threads that run tasks, the caller's included */
SDPA_API int sdpa_pool_pinned(const sdpa_pool *pool);      /* worker threads pinned to a CPU */
/* The parallel_for hook (sdpa_parallel_for_fn): user is the sdpa_pool.
 * Runs on min(n_workers, sdpa_pool_size) threads; returns -1 for a NULL pool
 * or fn, 0 otherwise. */
SDPA_API int sdpa_pool_parallel_for(void *user, int n_workers, int64_t n_tasks, sdpa_task_fn fn, void *ctx);

/* ---- planner: the Goldilocks search ---- */

/* sdpa_plan answers "which configuration should run this attention?": the
 * fastest one whose memory fits a budget and whose error fits a tolerance.
 * A configuration is a code path, the dtype the data is held in (prefill:
 * q, k, v and out; decode: the KV cache's storage), the precision mode
 * (prefill), the tile sizes (prefill) and the thread count. Each candidate
 * gets a predicted time, memory and error from a cost model
 * (sdpa_plan_model): per-thread speeds per path, dtype and mode, tile
 * factors, per-task key loading, int8's K pre-pass, a thread-efficiency
 * curve, per-call, per-worker and per-task overheads, and per-configuration
 * errors. The prediction replays the library's own
 * split into tasks (the same tiles, causal extents and decode chunks) on
 * num_threads workers that take tasks in order, as the built-in pool does.
 * Memory is exact where the library can say it: prefill counts q, k, v and
 * out at the candidate's dtype plus the workspace sdpa_workspace_size
 * reports for it; decode counts the KV cache's pages, page tables and
 * object (sdpa_kv_cache_bytes after appending kv_len tokens one page or
 * more at a time), not the call's scratch (about 100 KB per worker at
 * head_dim 128 plus the chunks' partial rows: a few percent of a 4k-token
 * cache, less beyond).
 * The model comes from sdpa_plan_model_default (constants fitted to the
 * bench's measurements: README, "The Goldilocks planner") or from
 * sdpa_plan_probe (about a second of timing on this machine). Errors are
 * relative L2 of out against a float64 reference computed from the F32
 * values, measured on the bench's uniform random data: real activations
 * with outlier channels raise the int8 errors (README, "int8 attention");
 * a caller who measured its own can write them into the model. */
typedef enum sdpa_plan_kind {
    SDPA_PLAN_PREFILL = 0,  /* sdpa_attention over q [B, Hq, q_len, D], k/v [B, Hkv, kv_len, D] */
    SDPA_PLAN_DECODE = 1    /* sdpa_kv_cache_attention: q_len new tokens over a cache of kv_len */
} sdpa_plan_kind;

typedef struct sdpa_plan_problem { /* zero = default where a default is named */
    sdpa_plan_kind kind;
    int64_t batch;          /* sequences, >= 1 */
    int64_t q_heads, kv_heads; /* q_heads a multiple of kv_heads */
    int64_t head_dim;       /* >= 1 */
    int64_t head_dim_v;     /* 0 = head_dim */
    int64_t q_len;          /* query rows per sequence (decode: 0 = 1) */
    int64_t kv_len;         /* keys per sequence (prefill: 0 = q_len); the context for decode */
    int     causal;         /* prefill: nonzero = causal, bottom-right aligned (= top-left when
                               q_len == kv_len); decode is always causal */
    int64_t mem_budget;     /* bytes (see above), 0 = no limit */
    double  max_error;      /* relative L2 tolerance, 0 = 1e-5 (F32 accuracy) */
    int     max_threads;    /* largest thread count to consider, 0 = the CPUs online */
    unsigned dtypes;        /* bit (1u << dtype) per allowed dtype, 0 = all (F32, F16, BF16; I8 for decode) */
    int     no_int8;        /* prefill: nonzero = leave SDPA_PRECISION_INT8_QK out */
    sdpa_path path;         /* 0 = any path this build and CPU support, else only this one */
} sdpa_plan_problem;

typedef struct sdpa_plan_choice {
    sdpa_path  path;
    sdpa_dtype dtype;       /* prefill: q, k, v, out; decode: the cache's storage */
    int        precision;   /* an sdpa_precision (prefill; 0 for decode) */
    int        tile_q, tile_k; /* prefill (0 for decode) */
    int        num_threads;
    double     seconds;     /* predicted time of one call */
    int64_t    bytes;       /* predicted memory (see above) */
    double     error;       /* predicted relative L2 error against float64 */
    int        feasible;    /* within the problem's budget and tolerance */
} sdpa_plan_choice;

#define SDPA_PLAN_NTQ 4     /* tile_q candidates: 32, 64, 128, 256 */
#define SDPA_PLAN_NTK 3     /* tile_k candidates: 32, 64, 128 */

typedef struct sdpa_plan_model {
    /* prefill: GFLOP/s of one thread at tile 64 x 64, non-causal, per
     * [path][dtype F32, F16, BF16][precision DEFAULT, INT8_QK]; FLOPs =
     * 2 (D + Dv) per query/key pair computed; 0 = not a candidate */
    double gflops[SDPA__PATH_LAST + 1][3][2];
    /* speed at tile [tile_q][tile_k] relative to 64 x 64 (0 = not a candidate) */
    double tile_speed[SDPA_PLAN_NTQ][SDPA_PLAN_NTK];
    /* decode, one thread, per [path][storage F32, F16, BF16, I8]: GB/s of
     * K/V bytes (scales included) and GFLOP/s of the products (time =
     * bytes / kv_gbps + flops / kv_gflops); 0 = not a candidate */
    double kv_gbps[SDPA__PATH_LAST + 1][4];
    double kv_gflops[SDPA__PATH_LAST + 1][4];
    double mem_gbps;        /* read bandwidth of all threads: decode's ceiling (0 = none) */
    double thread_eff;      /* parallel efficiency measured at eff_threads (1 = linear) */
    int    eff_threads;     /* the thread count thread_eff was measured at (>= 1) */
    double call_s;          /* fixed cost of one call, seconds */
    double worker_s;        /* added cost per worker thread per call */
    double task_s;          /* cost per task (tile set-up), seconds */
    /* prefill, one thread, per path: seconds per key element (D + Dv per
     * key) a task loads (K transposed or packed, V), paid once per task and
     * key whatever its rows: why few query rows (chunks, short prompts) and
     * small tile_q run below the path's GFLOP/s */
    double key_s[SDPA__PATH_LAST + 1];
    /* INT8_QK's pre-pass over K (smoothing, quantising, packing): seconds
     * per key element (D per key), one thread, per path */
    double i8_key_s[SDPA__PATH_LAST + 1];
    double error[3][2];     /* prefill: rel. L2 per [dtype][precision] */
    double kv_error[4];     /* decode: rel. L2 per storage */
} sdpa_plan_model;

/* Fills *model with the built-in constants (see above). */
SDPA_API void sdpa_plan_model_default(sdpa_plan_model *model);

/* Measures this machine into *model (starting from the defaults, whose
 * errors it keeps): every supported path, dtype and mode on one thread, the
 * tile factors, the thread efficiency and overheads on max_threads (0 = the
 * CPUs online), decode over small caches of every storage type. Allocates
 * about 60 MB and runs for about a second (longer on slow paths); base (may
 * be NULL) gives the allocator and parallel_for hook to time with. Returns
 * SDPA_OK, SDPA_ERR_NOMEM, or SDPA_ERR_PARAM where no clock is available. */
SDPA_API int sdpa_plan_probe(sdpa_plan_model *model, const sdpa_params *base, int max_threads);

/* Predicts one configuration: the caller sets choice->path (not AUTO),
 * dtype, precision, tile_q, tile_k (decode: 0) and num_threads; the
 * prediction and `feasible` are written. model NULL = the defaults.
 * Errors: SDPA_ERR_NULL, _SHAPE, _HEADS, _DTYPE, _PARAM, _PATH (not
 * supported here, or the model has no speed for it), _OVERFLOW. */
SDPA_API int sdpa_plan_predict(const sdpa_plan_problem *problem, const sdpa_plan_model *model, sdpa_plan_choice *choice);

/* Every candidate configuration with its prediction, written to
 * list[0..cap-1] in a fixed order (cap may be 0 to count); *count receives
 * the number of candidates. */
SDPA_API int sdpa_plan_candidates(const sdpa_plan_problem *problem, const sdpa_plan_model *model, sdpa_plan_choice *list,
                                  int64_t cap, int64_t *count);

/* The fastest feasible candidate (ties: less memory, then less error) into
 * *best; SDPA_ERR_INFEASIBLE when none fits (*best then holds the candidate
 * of least memory among those within the tolerance, or of least error, with
 * feasible = 0). To run it: prefill, params.path, .precision, .tile_q,
 * .tile_k and .num_threads from it and the tensors in best->dtype; decode,
 * a cache of storage best->dtype and params.path, .num_threads. */
SDPA_API int sdpa_plan(const sdpa_plan_problem *problem, const sdpa_plan_model *model, sdpa_plan_choice *best);

/* The model's shortlist measured on this problem, for when its time
 * predictions are not to be trusted (a machine unlike the one the model was
 * fitted on, a noisy neighbour). Stage 1 runs the k feasible candidates
 * (0 = 6, at most 64) of least predicted time, at most one per path, dtype,
 * precision and thread count (each with its best-predicted tiles); stage 2
 * (prefill) runs the winner's path, dtype, precision and thread count with
 * its next k - 1 tile shapes by predicted time: at most 2k - 1 candidates.
 * Each runs on random inputs of the problem's shapes: a warm-up call, then
 * at least 3 timed calls, more (up to 31) while they add up to less than
 * 30 ms. The fastest by median is written to *best with `seconds` = that
 * median; bytes and error stay the predictions. k = 1 times sdpa_plan's
 * pick. One candidate's data is allocated at a time (through base's
 * allocator when given): prefill, q, k, v and out in its dtype; decode, a
 * KV cache of kv_len tokens per sequence in its storage, then queries and
 * outputs in F32. base (may be NULL) gives the allocator and parallel_for
 * hook to run with. Returns sdpa_plan's codes (SDPA_ERR_INFEASIBLE: *best
 * as there, nothing run), SDPA_ERR_PARAM for k outside [0, 64] or no clock,
 * SDPA_ERR_NOMEM, or a failed run's code (nothing leaked). */
SDPA_API int sdpa_plan_tune(const sdpa_plan_problem *problem, const sdpa_plan_model *model, const sdpa_params *base, int k,
                            sdpa_plan_choice *best);

#ifdef __cplusplus
}
#endif
#endif /* SDPA_H */

/* ======================================================================== */
/*                              IMPLEMENTATION                              */
/* ======================================================================== */
#if defined(SDPA_IMPLEMENTATION) && !defined(SDPA__IMPLEMENTATION_DONE)
#define SDPA__IMPLEMENTATION_DONE

/* No contraction of a * b + c into fused multiply-adds behind the code's
 * back: clang's default (-ffp-contract=on) fuses within an expression
 * wherever FMA is enabled, so the same C in an FMA-target function and in
 * a portable one rounds differently (sdpa__expf's polynomial inlined into
 * the AVX-512 softmax: m and l a bit off the portable step's, which the
 * tests hold them to, bit for bit). gcc with -std=c99 does not contract;
 * gcc in GNU mode does, and has no such pragma: for that the steps' scalar
 * update (sdpa__ml_step) keeps each product apart by an empty asm, and the
 * AVX-512 softmax multiplies by its scale with an explicit-rounding
 * builtin. The kernels' FMAs are intrinsics and stay. At the end of the
 * implementation FP_CONTRACT DEFAULT gives the code after it the command
 * line's mode back; -ffp-contract=fast overrides the pragma. (Not
 * float_control push/pop: clang 14 rejects that on AArch64.) */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h> /* the planner's probe: clock_gettime where declared */
#if (defined(__unix__) || defined(__APPLE__)) && !defined(CLOCK_MONOTONIC)
#include <sys/time.h> /* else gettimeofday (-std=c99 without POSIX feature macros) */
#define SDPA__PLAN_TIMEOFDAY 1
#endif

#if !defined(SDPA_NO_THREADS) && !defined(_OPENMP) && (defined(__unix__) || defined(__APPLE__))
#define SDPA__PTHREADS 1
#include <pthread.h>
#include <unistd.h>
#endif
#if !defined(SDPA_NO_THREADS) && defined(_OPENMP)
#include <omp.h>
#endif

/* NEON is part of the AArch64 base ISA: no target attributes are needed, and
 * __ARM_NEON is defined unless the user built with +nosimd. */
#if !defined(SDPA_NO_SIMD) && !defined(SDPA_NO_NEON) && defined(__aarch64__) && defined(__ARM_NEON)
#define SDPA__HAVE_NEON 1
#include <arm_neon.h>
#if defined(__linux__)
#include <sys/auxv.h>
#endif
#endif

#if !defined(SDPA_NO_SIMD) && !defined(SDPA_NO_AVX2) && (defined(__x86_64__) || defined(__i386__)) && \
    (defined(__GNUC__) || defined(__clang__))
#define SDPA__HAVE_AVX2 1
#include <cpuid.h>
#include <immintrin.h>
#define SDPA__TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#endif

#if defined(SDPA__HAVE_AVX2) && !defined(SDPA_NO_AVX512) && defined(__x86_64__) && \
    (defined(__clang__) ? __clang_major__ >= 8 : (defined(__GNUC__) && __GNUC__ >= 9))
#define SDPA__HAVE_AVX512 1
#include <cpuid.h>
#include <immintrin.h>
#define SDPA__TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#if !defined(SDPA_NO_AMX) && (defined(__clang__) ? __clang_major__ >= 12 : __GNUC__ >= 11)
#define SDPA__HAVE_AMX 1
#define SDPA__TARGET_AMX __attribute__((target("amx-tile,amx-bf16,amx-int8,avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#endif
#endif

/* SDPA_USE_SLEEF: the vector exp kernels call SLEEF. sleef.h declares its
 * x86 functions only when the compiler's flags enable their ISA (__AVX__,
 * __AVX512F__), which the default flags do not; the ones used are then
 * declared here, with the target attributes that give them their vector
 * ABI (clang refuses the call without). On AArch64 sleef.h declares the
 * AdvSIMD ones itself. */
#if defined(SDPA_USE_SLEEF) && (defined(SDPA__HAVE_AVX2) || defined(SDPA__HAVE_NEON))
#include <sleef.h>
#ifdef __cplusplus
extern "C" {
#endif
#if defined(SDPA__HAVE_AVX2) && !defined(__AVX__)
SDPA__TARGET_AVX2 __m256 Sleef_expf8_u10avx2(__m256);
#endif
#if defined(SDPA__HAVE_AVX512) && !defined(__AVX512F__)
SDPA__TARGET_AVX512 __m512 Sleef_expf16_u10avx512f(__m512);
#endif
#ifdef __cplusplus
}
#endif
#endif

#ifndef SDPA_MALLOC
#define SDPA_MALLOC(sz) malloc(sz)
#define SDPA_FREE(p) free(p)
#endif
#ifndef SDPA_TILE_Q
#define SDPA_TILE_Q 64
#define SDPA__TILE_Q_AUTO 1 /* not pinned by the user: the path may choose */
#endif
#ifndef SDPA_TILE_K
#define SDPA_TILE_K 64
#define SDPA__TILE_K_AUTO 1
#endif
#ifndef SDPA_MAX_THREADS
#define SDPA_MAX_THREADS 256
#endif
#define SDPA__MAX_TILE 4096 /* largest tile_q / tile_k accepted */
#define SDPA__I8_MAXD 65536 /* int8 mode's largest head_dim: 255 * 127 * 65536 < 2^31 */

#ifdef __cplusplus
#define SDPA__RESTRICT __restrict
#else
#define SDPA__RESTRICT restrict
#endif

#define SDPA__MIN(a, b) ((a) < (b) ? (a) : (b))
#define SDPA__MAX(a, b) ((a) > (b) ? (a) : (b))
#define SDPA__ROUND_UP(x, m) (((x) + (m) - 1) / (m) * (m))

#ifdef __cplusplus
extern "C" {
#endif

/* ---- scalar conversions -------------------------------------------------- */

/* Small helpers inlined into the loops that must vectorise. */
#if defined(__GNUC__) || defined(__clang__)
#define SDPA__INLINE static inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define SDPA__INLINE static __forceinline
#else
#define SDPA__INLINE static inline
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SDPA__MAYBE_UNUSED __attribute__((unused))
#else
#define SDPA__MAYBE_UNUSED
#endif

SDPA__INLINE float sdpa__bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
SDPA__INLINE uint32_t sdpa__f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

SDPA_API float sdpa_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = h & 0x7fffu;
    float mag;
    if (em >= 0x7c00u)          /* inf, nan: exponent all ones, keep payload */
        mag = sdpa__bits_f32((em << 13) | 0x7f800000u);
    else if (em >= 0x0400u)     /* normal: rebias 15 -> 127 */
        mag = sdpa__bits_f32((em << 13) + 0x38000000u);
    else                        /* zero, subnormal: em * 2^-24 is exact */
        mag = (float)em * 5.9604644775390625e-8f;
    return sdpa__bits_f32(sdpa__f32_bits(mag) | sign);
}

SDPA_API uint16_t sdpa_f32_to_f16(float f)
{
    uint32_t x = sdpa__f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((x >> 13) & 0x1ffu)); /* nan, quiet */
    if (x >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
    if (x < 0x38800000u) {
        /* below 2^-14: half subnormal. |f| * 2^24 < 1024 is exact; adding 2^23
         * rounds it to an integer, nearest-even, in the default rounding mode. */
        float a = sdpa__bits_f32(x) * 16777216.0f + 8388608.0f;
        return (uint16_t)(sign | (sdpa__f32_bits(a) - 0x4b000000u));
    }
    /* rebias the exponent and round the 13 dropped bits to nearest even; a
     * carry out of the mantissa correctly bumps the exponent */
    x += 0xc8000fffu + ((x >> 13) & 1u);
    return (uint16_t)(sign | (x >> 13));
}

SDPA_API float sdpa_bf16_to_f32(uint16_t h) { return sdpa__bits_f32((uint32_t)h << 16); }

SDPA_API uint16_t sdpa_f32_to_bf16(float f)
{
    uint32_t x = sdpa__f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x0040u); /* quiet nan */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* ---- exp ------------------------------------------------------------------ */

/* expf by range reduction x = n ln2 + r, |r| <= ln2/2, and a degree-7 Taylor
 * polynomial (truncation error < 5e-9 relative), then 2^n applied as two
 * factors so that n = 128 needs no special case. Max error 2 ulp on
 * [-87.33, 88.72] (tests/test_sdpa.c measures it); below -87.33 the result
 * (< FLT_MIN) is flushed to 0, above 88.72 it is inf; exp(-inf) = 0,
 * exp(nan) = nan. The range tests are integer compares on the bits and the
 * selects are masks: float compares may trap (gcc's default -ftrapping-math),
 * which would keep the compiler from vectorising the loops that call this.
 *
 * strict: every product rounded before its sum, whatever the compiler's
 * contraction mode. gcc outside ISO mode (its default -ffp-contract=fast)
 * fuses a * b + c wherever FMA is enabled, so the same C would round
 * differently inside an AVX-512 function than in a portable one; an empty
 * asm that takes the product in a register is a point it cannot fuse
 * across, and costs nothing else. The softmax steps' scalar update uses
 * the strict form (sdpa__ml_step); the vectorised loops use the plain one.
 * On x86-64 only, where the AVX-512 steps are: no other target has a
 * vector step held to the portable one bit for bit. */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define SDPA__ROUNDED(v) __asm__("" : "+x"(v))
#else
#define SDPA__ROUNDED(v) ((void)0)
#endif

SDPA__INLINE float sdpa__muladd(float a, float b, float c, const int strict)
{
    float t = a * b;
    if (strict) SDPA__ROUNDED(t);
    return t + c;
}

SDPA__INLINE float sdpa__expf_body(float x, const int strict)
{
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693145751953125f;       /* 12 significant bits: n*ln2_hi exact */
    const float ln2_lo = 1.428606765330187045e-6f;
    const float shifter = 12582912.0f;             /* 1.5 * 2^23 */
    uint32_t u = sdpa__f32_bits(x), a = u & 0x7fffffffu, neg = u >> 31;
    uint32_t under = neg & (uint32_t)(a > 0x42aeac4fu);        /* x < -87.33654: 0 */
    uint32_t over = (neg ^ 1u) & (uint32_t)(a > 0x42b17217u);  /* x > 88.72283: inf */
    uint32_t nan = (uint32_t)(a > 0x7f800000u);
    uint32_t keep = (under | over | nan) - 1u;                 /* all ones: ordinary x */
    float xc = sdpa__bits_f32(u & keep);                       /* specials computed as 0 */
    float t = sdpa__muladd(xc, log2e, shifter, strict);        /* round to nearest integer */
    float n = t - shifter, r, p;
    /* t's mantissa holds 2^22 + n, n in [-126, 128]: m = n + 256 > 0 */
    uint32_t m = (sdpa__f32_bits(t) & 0x7fffffu) - 0x400000u + 256u, h = m >> 1, pb;
    r = sdpa__muladd(-n, ln2_hi, xc, strict);                   /* xc - n ln2_hi, the same rounding */
    r = sdpa__muladd(-n, ln2_lo, r, strict);
    p = 1.0f / 5040.0f;
    p = sdpa__muladd(p, r, 1.0f / 720.0f, strict);
    p = sdpa__muladd(p, r, 1.0f / 120.0f, strict);
    p = sdpa__muladd(p, r, 1.0f / 24.0f, strict);
    p = sdpa__muladd(p, r, 1.0f / 6.0f, strict);
    p = sdpa__muladd(p, r, 0.5f, strict);
    p = sdpa__muladd(p, r, 1.0f, strict);
    p = sdpa__muladd(p, r, 1.0f, strict);
    /* 2^n = 2^n1 * 2^n2 with n1 = floor(n/2), n2 = n - n1; biased exponents
     * n1 + 127 = h - 1 and n2 + 127 = m - h - 1, in unsigned arithmetic */
    p = p * sdpa__bits_f32((h - 1u) << 23) * sdpa__bits_f32((m - h - 1u) << 23);
    pb = (sdpa__f32_bits(p) & keep) | (0x7f800000u & (0u - over)) | ((u | 0x00400000u) & (0u - nan));
    return sdpa__bits_f32(pb);
}

SDPA__INLINE float sdpa__expf(float x) { return sdpa__expf_body(x, 0); }
SDPA__INLINE float sdpa__expf_strict(float x) { return sdpa__expf_body(x, 1); }

/* ---- errors --------------------------------------------------------------- */

SDPA_API const char *sdpa_strerror(int code)
{
    switch (code) {
    case SDPA_OK: return "success";
    case SDPA_ERR_NULL: return "a required pointer is NULL";
    case SDPA_ERR_DTYPE: return "unsupported dtype or dtype combination";
    case SDPA_ERR_SHAPE: return "negative or inconsistent tensor shapes";
    case SDPA_ERR_STRIDE: return "invalid strides (negative, stride[3] != 1, or overlapping output rows)";
    case SDPA_ERR_OVERFLOW: return "a tensor size or offset overflows";
    case SDPA_ERR_HEADS: return "query heads are not a multiple of key/value heads";
    case SDPA_ERR_MASK: return "mask dtype or shape is invalid";
    case SDPA_ERR_PARAM: return "invalid parameter value";
    case SDPA_ERR_SEQLENS: return "invalid variable-length sequence arrays";
    case SDPA_ERR_ALIAS: return "output memory overlaps an input or the other output";
    case SDPA_ERR_PATH: return "the requested code path is unknown or not available on this CPU/build";
    case SDPA_ERR_NOMEM: return "out of memory";
    case SDPA_ERR_THREADS: return "the parallel_for hook failed";
    case SDPA_ERR_CAPACITY: return "the KV cache is full (max_pages reached)";
    case SDPA_ERR_INFEASIBLE: return "no configuration fits the memory budget and the error tolerance";
    default: return "unknown error code";
    }
}

SDPA_API const char *sdpa_version(void) { return SDPA_VERSION_STRING; }

static int sdpa__fail(const sdpa_params *p, int code, const char *fmt, ...)
{
    if (p && p->errbuf && p->errbuf_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->errbuf, p->errbuf_size, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* ---- validation and the plan -------------------------------------------- */

/* A validated tensor: strides resolved, size-1 dims given stride 0. */
typedef struct sdpa__tens {
    const char *data;
    sdpa_dtype  dtype;
    int64_t     n[4];
    int64_t     s[4];
    int64_t     esize;
    uintptr_t   lo, hi;    /* byte range [lo, hi) touched; lo == hi when empty */
} sdpa__tens;

/* Query rows of one sequence as a task sees them. */
typedef struct sdpa__seq {
    int64_t b;       /* sequence index given to score_mod */
    int64_t bt;      /* batch index into the tensors */
    int64_t q0, nq;  /* first query row in the tensor, rows owned */
    int64_t vq;      /* valid query rows (rows >= vq see no key) */
    int64_t k0, vk;  /* first key row, valid keys */
} sdpa__seq;

typedef void (*sdpa__gemm_fn)(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                              const float *B, int64_t ldb, float *C, int64_t ldc, int accumulate);

struct sdpa__ws;

/* Where a softmax step leaves P: in S as floats (the F32 products), or, for
 * bf16 mode's products, as bf16 hi and lo parts or as hi alone (BF16_PV) */
enum { SDPA__P_F32 = 0, SDPA__P_HILO = 1, SDPA__P_HI = 2 };

typedef struct sdpa__plan {
    sdpa__tens q, k, v, o, m;
    int has_mask, mask_bool;
    int64_t B, Hq, Hkv, G, Lq, Lk, D, Dv;
    float scale, softcap;
    sdpa_causal causal;
    int window;
    int64_t wl, wr;
    const float *alibi;
    sdpa_score_mod_fn score_mod;
    void *score_mod_user;
    float *lse;
    const int64_t *sq, *skv, *cuq, *cuk;
    int64_t nseq;             /* sequences, the packed tail included */
    int packed;
    int64_t tq, tk;           /* tile sizes */
    int64_t tqp, tkp, dvp;    /* padded: rows to 4, keys and Dv to 16 (32 in bf16 mode) */
    int64_t rpad, kpad;       /* the row and key multiples of those paddings */
    /* bf16 mode (BF16 inputs on the amx path): Q.K^T and P.V as bf16
     * products with fp32 sums, on packed operands; with i8 (int8 mode on
     * the amx path) P.V alone, Q.K^T being int8 */
    int bf16;
    int64_t dp;               /* head_dim padded to 32 */
    void (*bgemm)(int64_t M, int64_t N, int64_t K2, const uint16_t *A, const uint16_t *A2, int64_t lda,
                  const uint32_t *B, const uint32_t *B2, int64_t ldb, float *C, int64_t ldc, int accumulate);
    void (*tiles)(int on);    /* AMX: load the tile configuration (1) or release it (0) */
    int n_workers;
    size_t ws_worker;         /* bytes of scratch per worker */
    int64_t *task_start;      /* [nseq + 1] first task of each sequence */
    int64_t n_tasks;
    char *ws;
    sdpa_path path;
    sdpa__gemm_fn gemm;
    float (*row_max)(const float *s, int64_t n);
    float (*exp_row)(float *s, int64_t n, float m);
    void (*scale_row)(float *x, int64_t n, float a);
    /* split: where P goes, an SDPA__P_* below */
    int (*softmax)(const struct sdpa__plan *P, struct sdpa__ws *W, const sdpa__seq *sq, int64_t j0, int64_t nk,
                   int64_t nkp, int64_t nr, int64_t rp, int split);
    void (*load_row)(float *dst, const char *src, sdpa_dtype t, int64_t n, float mul);
    void (*store_row)(char *dst, sdpa_dtype t, const float *src, int64_t n, float mul);
    void (*load_kt)(float *Kt, int64_t ld, const char *kb, int64_t ks, sdpa_dtype t, int64_t nk, int64_t D);
    void (*pack_k)(uint32_t *Kp, int64_t ld, const char *kb, int64_t ks, int64_t nk, int64_t D, int64_t dp);
    int (*pack_v)(uint32_t *dst, const char *v0, const char *v1, int64_t Dv, int64_t dvp);
    void (*split_p)(uint16_t *hi, uint16_t *lo, const float *src, int64_t n, int64_t npad);
    int (*vsplit)(uint32_t *hi, uint32_t *lo, const float *r0, const float *r1, int64_t n, int64_t npad);
    /* int8 mode (params->precision): Q.K^T on int8 operands, K smoothed,
     * quantised and packed by a pre-pass (see "int8 mode") */
    int i8, i8_smooth;
    int p1;                   /* bf16 mode: P enters P.V as one bf16 (SDPA_PRECISION_BF16_PV) */
    const float *qscale, *kscale; /* SDPA_I8 q, k: per-token scales */
    int64_t dq;               /* head_dim padded to 16 (64 with bf16 P.V: the amx path) */
    int64_t kbytes;           /* one packed K block: quads [dq/4][tkp], scales [tkp], key sums [tkp] */
    int64_t nblk, nchk;       /* K blocks, pre-pass chunks (all sequences and kv heads) */
    int64_t *blk0, *chk0;     /* [nseq + 1] first block, first chunk of each sequence */
    char *kq;                 /* the K blocks */
    float *kpart, *kmean;     /* chunk sums [nchk][D]; means [nseq][Hkv][D] */
    size_t i8_bytes;          /* bytes of all that */
    void (*qk_i8)(int64_t M, int64_t N, int64_t P4, const int8_t *A, int64_t lda, const int8_t *B, int64_t ldb,
                  const int32_t *bsum, int32_t *C, int64_t ldc);
    void (*i8_deq)(float *s, const int32_t *si, const float *ks, float a, float c, int64_t n);
} sdpa__plan;

static int64_t sdpa__esize(sdpa_dtype t)
{
    switch (t) {
    case SDPA_F32: return 4;
    case SDPA_F16: case SDPA_BF16: return 2;
    case SDPA_I8: case SDPA_BOOL: return 1;
    default: return 0;
    }
}

static int sdpa__mul_ok(int64_t a, int64_t b, int64_t *r)
{
    if (a < 0 || b < 0) return 0;
    if (a != 0 && b > INT64_MAX / a) return 0;
    *r = a * b;
    return 1;
}

/* True when b bytes can be addressed (ptrdiff_t and size_t). */
static int sdpa__bytes_ok(int64_t b)
{
#if PTRDIFF_MAX < INT64_MAX
    return b >= 0 && (uint64_t)b <= (uint64_t)PTRDIFF_MAX;
#else
    return b >= 0;
#endif
}

static int sdpa__add_ok(int64_t a, int64_t b, int64_t *r)
{
    if (a < 0 || b < 0 || a > INT64_MAX - b) return 0;
    *r = a + b;
    return 1;
}

/* Checks the shape, strides and sizes of one tensor and fills `t`. */
static int sdpa__tensor(const sdpa_params *pp, const char *name, const sdpa_tensor *x, sdpa__tens *t)
{
    int d, contiguous = 1;
    int64_t numel = 1, extent = 1, bytes;
    if (!x) return sdpa__fail(pp, SDPA_ERR_NULL, "sdpa: tensor %s is NULL", name);
    t->dtype = x->dtype;
    t->esize = sdpa__esize(x->dtype);
    if (t->esize == 0) return sdpa__fail(pp, SDPA_ERR_DTYPE, "sdpa: %s has unknown dtype %d", name, (int)x->dtype);
    for (d = 0; d < 4; d++) {
        if (x->shape[d] < 0)
            return sdpa__fail(pp, SDPA_ERR_SHAPE, "sdpa: %s.shape[%d] = %lld is negative", name, d, (long long)x->shape[d]);
        if (x->stride[d] != 0) contiguous = 0;
        if (!sdpa__mul_ok(numel, x->shape[d], &numel))
            return sdpa__fail(pp, SDPA_ERR_OVERFLOW, "sdpa: %s element count overflows", name);
        t->n[d] = x->shape[d];
    }
    if (contiguous) {
        int64_t s = 1;
        for (d = 3; d >= 0; d--) {
            t->s[d] = s;
            /* can only fail when another dim is 0: then nothing is accessed */
            if (!sdpa__mul_ok(s, SDPA__MAX(x->shape[d], 1), &s)) s = 0;
        }
    } else {
        for (d = 0; d < 4; d++) {
            if (x->stride[d] < 0)
                return sdpa__fail(pp, SDPA_ERR_STRIDE, "sdpa: %s.stride[%d] = %lld is negative", name, d, (long long)x->stride[d]);
            t->s[d] = x->stride[d];
        }
        if (x->stride[3] != 1)
            return sdpa__fail(pp, SDPA_ERR_STRIDE, "sdpa: %s.stride[3] = %lld, must be 1", name, (long long)x->stride[3]);
    }
    for (d = 0; d < 4; d++)
        if (t->n[d] == 1) t->s[d] = 0;
    if (numel > 0) {
        for (d = 0; d < 4; d++) {
            int64_t span;
            if (!sdpa__mul_ok(t->n[d] - 1, t->s[d], &span) || !sdpa__add_ok(extent, span, &extent))
                return sdpa__fail(pp, SDPA_ERR_OVERFLOW, "sdpa: %s strides overflow", name);
        }
        if (!sdpa__mul_ok(extent, t->esize, &bytes) || !sdpa__bytes_ok(bytes))
            return sdpa__fail(pp, SDPA_ERR_OVERFLOW, "sdpa: %s spans more bytes than addressable", name);
        if (!x->data) return sdpa__fail(pp, SDPA_ERR_NULL, "sdpa: %s.data is NULL", name);
        t->lo = (uintptr_t)x->data;
        if (t->lo > UINTPTR_MAX - (uintptr_t)bytes)
            return sdpa__fail(pp, SDPA_ERR_OVERFLOW, "sdpa: %s wraps around the address space", name);
        t->hi = t->lo + (uintptr_t)bytes;
        t->data = (const char *)x->data;
    } else {
        /* no elements: offsets are computed but nothing is read or written;
         * zero strides and a non-null base keep that arithmetic defined
         * (data may be NULL, and NULL + 0 is undefined in C) */
        static const char sdpa__no_elements = 0;
        t->lo = t->hi = 0;
        for (d = 0; d < 4; d++) t->s[d] = 0;
        t->data = x->data ? (const char *)x->data : &sdpa__no_elements;
    }
    return SDPA_OK;
}

/* True when distinct indices of `t` never share an element (needed for out).
 * An empty tensor has no elements to share, whatever its strides. */
static int sdpa__injective(const sdpa__tens *t)
{
    int idx[4], n = 0, a, b;
    int64_t need = 1;
    for (a = 0; a < 4; a++)
        if (t->n[a] == 0) return 1;
    for (a = 0; a < 4; a++)
        if (t->n[a] > 1) idx[n++] = a;
    for (a = 1; a < n; a++) /* insertion sort by stride */
        for (b = a; b > 0 && t->s[idx[b]] < t->s[idx[b - 1]]; b--) {
            int tmp = idx[b]; idx[b] = idx[b - 1]; idx[b - 1] = tmp;
        }
    for (a = 0; a < n; a++) {
        if (t->s[idx[a]] < need) return 0;
        need = t->s[idx[a]] * t->n[idx[a]]; /* fits: the extent was checked */
    }
    return 1;
}

static int sdpa__overlap(const sdpa__tens *a, uintptr_t lo, uintptr_t hi)
{
    return a->lo < a->hi && lo < hi && a->lo < hi && lo < a->hi;
}

static int sdpa__is_float(sdpa_dtype t) { return t == SDPA_F32 || t == SDPA_F16 || t == SDPA_BF16; }

static int sdpa__default_threads(void)
{
#if defined(SDPA_NO_THREADS)
    return 1;
#elif defined(_OPENMP)
    return omp_get_max_threads();
#elif defined(SDPA__PTHREADS) && defined(_SC_NPROCESSORS_ONLN)
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > SDPA_MAX_THREADS ? SDPA_MAX_THREADS : (int)n);
#else
    return 1;
#endif
}

/* Worker count for a call with n_tasks tasks: num_threads (0: the CPUs
 * online), capped by SDPA_MAX_THREADS for the built-in threads and by the
 * task count; at least 1. */
static int sdpa__n_workers(const sdpa_params *p, int64_t n_tasks)
{
    int n = p->num_threads ? p->num_threads : sdpa__default_threads();
    if (!p->parallel_for) {
#if defined(SDPA_NO_THREADS)
        n = 1;
#endif
        if (n > SDPA_MAX_THREADS) n = SDPA_MAX_THREADS;
    }
    if ((int64_t)n > n_tasks) n = n_tasks > 0 ? (int)n_tasks : 1;
    return n;
}

/* Scratch memory through params->allocator, else SDPA_MALLOC/SDPA_FREE. */
static void *sdpa__scratch_alloc(const sdpa_params *p, size_t bytes)
{
    if (p && p->allocator && p->allocator->alloc) return p->allocator->alloc(p->allocator->user, bytes, 64);
    return SDPA_MALLOC(bytes);
}

static void sdpa__scratch_free(const sdpa_params *p, void *raw, size_t bytes)
{
    if (p && p->allocator && p->allocator->alloc) {
        if (p->allocator->free) p->allocator->free(p->allocator->user, raw, bytes);
    } else {
        SDPA_FREE(raw);
    }
}

static void sdpa__run_builtin(int n_workers, int64_t n_tasks, sdpa_task_fn fn, void *ctx);

/* Runs fn on tasks 0..n-1 through params->parallel_for, else the built-in
 * threads; SDPA_ERR_THREADS when the hook reports failure. */
static int sdpa__run_tasks(const sdpa_params *p, int n_workers, int64_t n, sdpa_task_fn fn, void *ctx)
{
    if (p && p->parallel_for) {
        if (p->parallel_for(p->parallel_user, n_workers, n, fn, ctx) != 0)
            return sdpa__fail(p, SDPA_ERR_THREADS, "sdpa: the parallel_for hook returned failure");
    } else {
        sdpa__run_builtin(n_workers, n, fn, ctx);
    }
    return SDPA_OK;
}

/* The s in [0, n) with start[s] <= t (the last one) for non-decreasing
 * start: the sequence that task t belongs to. */
static int64_t sdpa__prefix_find(const int64_t *start, int64_t n, int64_t t)
{
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (start[mid] <= t) lo = mid; else hi = mid - 1;
    }
    return lo;
}

/* Query rows of sequence s. */
static void sdpa__seq_get(const sdpa__plan *P, int64_t s, sdpa__seq *q)
{
    if (!P->packed) {
        q->b = q->bt = s;
        q->q0 = 0;
        q->nq = P->Lq;
        q->vq = P->sq ? P->sq[s] : P->Lq;
        q->k0 = 0;
        q->vk = P->skv ? P->skv[s] : P->Lk;
    } else if (s < P->nseq - 1) {
        q->b = s;
        q->bt = 0;
        q->q0 = P->cuq[s];
        q->nq = q->vq = P->cuq[s + 1] - P->cuq[s];
        q->k0 = P->cuk[s];
        q->vk = P->cuk[s + 1] - P->cuk[s];
    } else { /* rows after the last sequence: written as empty rows */
        q->b = s;
        q->bt = 0;
        q->q0 = P->cuq[s];
        q->nq = P->Lq - q->q0;
        q->vq = 0;
        q->k0 = 0;
        q->vk = 0;
    }
}

/* Tiles of one kv head's query rows. Long sequences: tq rows of one head per
 * tile. Short ones (decode): several heads' rows share a tile, so the K/V
 * block loaded for it serves the whole group. */
static int64_t sdpa__tiles_per_group(const sdpa__plan *P, int64_t nq)
{
    if (nq == 0) return 0;
    if (nq >= P->tq) return P->G * ((nq + P->tq - 1) / P->tq);
    {
        int64_t hpt = P->tq / nq;
        return (P->G + hpt - 1) / hpt;
    }
}

/* Tasks of the whole call (every sequence, every kv head) at P->tq; 0 when
 * the count overflows. */
static int sdpa__count_tasks(const sdpa__plan *P, int64_t *total)
{
    int64_t s, t;
    *total = 0;
    for (s = 0; s < P->nseq; s++) {
        sdpa__seq sq;
        sdpa__seq_get(P, s, &sq);
        if (!sdpa__mul_ok(sdpa__tiles_per_group(P, sq.nq), P->Hkv, &t) || !sdpa__add_ok(*total, t, &t)) return 0;
        *total = t;
    }
    return 1;
}

/* The default tiles where the caller left them 0 (and did not pin the
 * macros). The SIMD paths load (pack, widen, check) each K and V block once
 * per tile, so a tile of 128 or 256 rows pays a half or a quarter of that
 * per row: 256 from Lq = 1024, 128 from 512 (causal: at most Lq / 8),
 * halved while the call would have fewer than four tiles per thread. (int8
 * mode quantises K once per call, but still loads V per tile; the avx2 path
 * and int8 mode on avx512 kept 64 rows until a Zen 4 measured them, same
 * bits, interleaved, 1 thread, 2 heads, D 128: avx2 F32 1.07-1.16x at
 * L 512-4096, int8 mode 1.01-1.11x, avx512 int8 mode 1.05-1.11x; 2 threads,
 * 32 heads 1.08-1.13x.) bf16 mode
 * on AMX (and int8 mode's bf16 P.V there) also takes 128 keys per block (the
 * softmax's per-row work and the O tiles' loads and stores are per block;
 * the timings are in the README's Performance section). The row tile never
 * changes a result; the key block changes the last bits (as tile_k does). */
static void sdpa__auto_tiles(sdpa__plan *P, const sdpa_params *p)
{
#ifdef SDPA__TILE_K_AUTO
    if (!p->tile_k && P->bf16 && P->path == SDPA_PATH_AMX) P->tk = 128;
#endif
#ifdef SDPA__TILE_Q_AUTO
    if (!p->tile_q && (P->path == SDPA_PATH_AVX2 || P->path == SDPA_PATH_AVX512 || P->path == SDPA_PATH_AMX)) {
        int64_t tq = P->Lq >= 1024 ? 256 : P->Lq >= 512 ? 128 : SDPA_TILE_Q, tasks;
        int want = sdpa__n_workers(p, INT64_MAX);
        /* causal: the products of a row tile's last key blocks are partly
         * wasted, about tq / Lq of all of them; at most an eighth */
        while (P->causal != SDPA_CAUSAL_NONE && tq > SDPA_TILE_Q && tq > P->Lq / 8) tq /= 2;
        for (; tq > SDPA_TILE_Q; tq /= 2) {
            P->tq = tq;
            if (sdpa__count_tasks(P, &tasks) && tasks >= 4 * (int64_t)want) return;
        }
        P->tq = SDPA_TILE_Q;
    }
#endif
    (void)P; (void)p;
}

static void sdpa__gemm_scalar(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                              const float *B, int64_t ldb, float *C, int64_t ldc, int accumulate);
static int sdpa__resolve_path(const sdpa_params *pp, sdpa_path want);
static void sdpa__set_kernels(sdpa__plan *P);
static void sdpa__set_kernels_i8(sdpa__plan *P);
static int sdpa__softmax_block(const sdpa__plan *P, struct sdpa__ws *W, const sdpa__seq *sq, int64_t j0, int64_t nk,
                               int64_t nkp, int64_t nr, int64_t rp, int split);
#ifdef SDPA__HAVE_AVX512
static int sdpa__softmax_block_avx512(const sdpa__plan *P, struct sdpa__ws *W, const sdpa__seq *sq, int64_t j0,
                                      int64_t nk, int64_t nkp, int64_t nr, int64_t rp, int split);
static int sdpa__softmax_block_avx512bf(const sdpa__plan *P, struct sdpa__ws *W, const sdpa__seq *sq, int64_t j0,
                                        int64_t nk, int64_t nkp, int64_t nr, int64_t rp, int split);
static void sdpa__bgemm_avx512bf(int64_t M, int64_t N, int64_t K2, const uint16_t *A, const uint16_t *A2, int64_t lda,
                                 const uint32_t *B, const uint32_t *B2, int64_t ldb, float *C, int64_t ldc, int accumulate);
static int sdpa__vpack_hi_avx512bf(uint32_t *hi, uint32_t *lo, const float *r0, const float *r1, int64_t n, int64_t npad);
#endif
#ifdef SDPA__HAVE_AMX
static int sdpa__softmax_block_amx(const sdpa__plan *P, struct sdpa__ws *W, const sdpa__seq *sq, int64_t j0,
                                   int64_t nk, int64_t nkp, int64_t nr, int64_t rp, int split);
static int sdpa__vsplit_pair_amx(uint32_t *hi, uint32_t *lo, const float *r0, const float *r1, int64_t n, int64_t npad);
#endif
static int sdpa__i8_plan(sdpa__plan *P, const sdpa_params *pp);
static int sdpa__i8_scales(sdpa__plan *P, const sdpa_params *p, const sdpa_params *pp);

/* Validates everything and resolves defaults into P (no allocation). */
static int sdpa__plan_make(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v,
                           const sdpa_tensor *out, const sdpa_params *pp, sdpa__plan *P)
{
    sdpa_params zero_params;
    const sdpa_params *p = pp;
    int rc, d;
    int64_t s, total, bytes, lse_n = 0;
    uintptr_t lse_lo = 0, lse_hi = 0;

    memset(P, 0, sizeof *P);
    memset(&zero_params, 0, sizeof zero_params);
    if (!p) p = &zero_params;
    if ((rc = sdpa__tensor(pp, "q", q, &P->q)) != SDPA_OK) return rc;
    if ((rc = sdpa__tensor(pp, "k", k, &P->k)) != SDPA_OK) return rc;
    if ((rc = sdpa__tensor(pp, "v", v, &P->v)) != SDPA_OK) return rc;
    if ((rc = sdpa__tensor(pp, "out", out, &P->o)) != SDPA_OK) return rc;

    { /* int8 mode may take q and k as SDPA_I8 */
        int qi8 = P->q.dtype == SDPA_I8, ki8 = P->k.dtype == SDPA_I8;
        if ((qi8 || ki8) && p->precision != SDPA_PRECISION_INT8_QK && p->precision != SDPA_PRECISION_INT8_QK_NOSMOOTH &&
            p->precision != SDPA_PRECISION_INT8_QK_BF16_PV)
            return sdpa__fail(pp, SDPA_ERR_DTYPE, "sdpa: SDPA_I8 q or k needs precision = SDPA_PRECISION_INT8_QK");
        if (!sdpa__is_float(P->v.dtype) || (!qi8 && P->q.dtype != P->v.dtype) || (!ki8 && P->k.dtype != P->v.dtype))
            return sdpa__fail(pp, SDPA_ERR_DTYPE, "sdpa: q, k, v must share one dtype of F32, F16, BF16 (got %d, %d, %d)",
                              (int)P->q.dtype, (int)P->k.dtype, (int)P->v.dtype);
    }
    if (!sdpa__is_float(P->o.dtype))
        return sdpa__fail(pp, SDPA_ERR_DTYPE, "sdpa: out dtype must be F32, F16 or BF16 (got %d)", (int)P->o.dtype);

    P->B = q->shape[0]; P->Hq = q->shape[1]; P->Lq = q->shape[2]; P->D = q->shape[3];
    P->Hkv = k->shape[1]; P->Lk = k->shape[2]; P->Dv = v->shape[3];
    if (k->shape[0] != P->B || v->shape[0] != P->B || out->shape[0] != P->B)
        return sdpa__fail(pp, SDPA_ERR_SHAPE, "sdpa: batch sizes differ (q %lld, k %lld, v %lld, out %lld)",
                          (long long)P->B, (long long)k->shape[0], (long long)v->shape[0], (long long)out->shape[0]);
    if (k->shape[3] != P->D)
        return sdpa__fail(pp, SDPA_ERR_SHAPE, "sdpa: head_dim of q (%lld) and k (%lld) differ", (long long)P->D, (long long)k->shape[3]);
    if (P->D < 1) return sdpa__fail(pp, SDPA_ERR_SHAPE, "sdpa: head_dim of q and k must be at least 1");
    if (v->shape[1] != P->Hkv || v->shape[2] != P->Lk)
        return sdpa__fail(pp, SDPA_ERR_SHAPE, "sdpa: v is [%lld, %lld, %lld, .] but k is [., %lld, %lld, .]",
                          (long long)v->shape[0], (long long)v->shape[1], (long long)v->shape[2], (long long)P->Hkv, (long long)P->Lk);
    if (out->shape[1] != P->Hq || out->shape[2] != P->Lq || out->shape[3] != P->Dv)
        return sdpa__fail(pp, SDPA_ERR_SHAPE, "sdpa: out must be [B, Hq, Lq, Dv] = [%lld, %lld, %lld, %lld]",
                          (long long)P->B, (long long)P->Hq, (long long)P->Lq, (long long)P->Dv);
    if (P->Hkv == 0 ? P->Hq != 0 : P->Hq % P->Hkv != 0)
        return sdpa__fail(pp, SDPA_ERR_HEADS, "sdpa: q heads (%lld) must be a multiple of kv heads (%lld)",
                          (long long)P->Hq, (long long)P->Hkv);
    P->G = P->Hkv ? P->Hq / P->Hkv : 1;
    if (!sdpa__injective(&P->o))
        return sdpa__fail(pp, SDPA_ERR_STRIDE, "sdpa: out strides make distinct elements overlap");

    if (p->mask) {
        static const char *dn[4] = {"batch", "heads", "Lq", "Lk"};
        int64_t want[4];
        if ((rc = sdpa__tensor(pp, "mask", p->mask, &P->m)) != SDPA_OK)
            return rc == SDPA_ERR_DTYPE ? sdpa__fail(pp, SDPA_ERR_MASK, "sdpa: mask has unknown dtype") : rc;
        if (P->m.dtype != SDPA_F32 && P->m.dtype != SDPA_BOOL)
            return sdpa__fail(pp, SDPA_ERR_MASK, "sdpa: mask dtype must be F32 (additive) or BOOL");
        want[0] = P->B; want[1] = P->Hq; want[2] = P->Lq; want[3] = P->Lk;
        for (d = 0; d < 4; d++)
            if (P->m.n[d] != 1 && P->m.n[d] != want[d])
                return sdpa__fail(pp, SDPA_ERR_MASK, "sdpa: mask.shape[%d] (%s) is %lld, must be 1 or %lld",
                                  d, dn[d], (long long)P->m.n[d], (long long)want[d]);
        P->has_mask = 1;
        P->mask_bool = P->m.dtype == SDPA_BOOL;
    }

    if (p->scale != p->scale || p->scale == (float)INFINITY || p->scale == -(float)INFINITY)
        return sdpa__fail(pp, SDPA_ERR_PARAM, "sdpa: scale must be finite");
    P->scale = p->scale != 0.0f ? p->scale : (float)(1.0 / sqrt((double)P->D));
    if (!(p->softcap >= 0.0f) || p->softcap == (float)INFINITY)
        return sdpa__fail(pp, SDPA_ERR_PARAM, "sdpa: softcap must be finite and >= 0");
    P->softcap = p->softcap;
    if (p->causal != SDPA_CAUSAL_NONE && p->causal != SDPA_CAUSAL_TOP_LEFT && p->causal != SDPA_CAUSAL_BOTTOM_RIGHT)
        return sdpa__fail(pp, SDPA_ERR_PARAM, "sdpa: causal = %d is not an sdpa_causal value", (int)p->causal);
    P->causal = p->causal;
    P->window = p->window != 0;
    {
        /* any extent >= Lq + Lk reaches every key: clamping keeps pos +- w
         * from overflowing without changing the result */
        int64_t far = (P->Lq > INT64_MAX / 4 || P->Lk > INT64_MAX / 4) ? INT64_MAX / 4 : P->Lq + P->Lk;
        P->wl = SDPA__MIN(p->window_left, far);
        P->wr = SDPA__MIN(p->window_right, far);
    }
    P->alibi = p->alibi_slopes;
    P->score_mod = p->score_mod;
    P->score_mod_user = p->score_mod_user;
    if (p->num_threads < 0) return sdpa__fail(pp, SDPA_ERR_PARAM, "sdpa: num_threads must be >= 0");
    if (p->tile_q < 0 || p->tile_q > SDPA__MAX_TILE || p->tile_k < 0 || p->tile_k > SDPA__MAX_TILE)
        return sdpa__fail(pp, SDPA_ERR_PARAM, "sdpa: tile_q and tile_k must be in [0, %d]", SDPA__MAX_TILE);
    P->tq = p->tile_q ? p->tile_q : SDPA_TILE_Q;
    P->tk = p->tile_k ? p->tile_k : SDPA_TILE_K;

    /* variable lengths */
    if ((p->seqlens_q || p->seqlens_kv) && (p->cu_seqlens_q || p->cu_seqlens_kv))
        return sdpa__fail(pp, SDPA_ERR_SEQLENS, "sdpa: seqlens_* and cu_seqlens_* cannot be combined");
    for (s = 0; s < P->B; s++) {
        if (p->seqlens_q && (p->seqlens_q[s] < 0 || p->seqlens_q[s] > P->Lq))
            return sdpa__fail(pp, SDPA_ERR_SEQLENS, "sdpa: seqlens_q[%lld] = %lld is outside [0, %lld]",
                              (long long)s, (long long)p->seqlens_q[s], (long long)P->Lq);
        if (p->seqlens_kv && (p->seqlens_kv[s] < 0 || p->seqlens_kv[s] > P->Lk))
            return sdpa__fail(pp, SDPA_ERR_SEQLENS, "sdpa: seqlens_kv[%lld] = %lld is outside [0, %lld]",
                              (long long)s, (long long)p->seqlens_kv[s], (long long)P->Lk);
    }
    P->sq = p->seqlens_q;
    P->skv = p->seqlens_kv;
    if (p->cu_seqlens_q || p->cu_seqlens_kv) {
        if (!p->cu_seqlens_q || !p->cu_seqlens_kv)
            return sdpa__fail(pp, SDPA_ERR_SEQLENS, "sdpa: cu_seqlens_q and cu_seqlens_kv must be given together");
        if (P->B != 1)
            return sdpa__fail(pp, SDPA_ERR_SEQLENS, "sdpa: packed sequences (cu_seqlens) need batch 1, got %lld", (long long)P->B);
        if (p->num_seqs < 0 || p->num_seqs > INT64_MAX - 2)
            return sdpa__fail(pp, SDPA_ERR_SEQLENS, "sdpa: num_seqs = %lld is invalid", (long long)p->num_seqs);
        if (p->cu_seqlens_q[0] != 0 || p->cu_seqlens_kv[0] != 0)
            return sdpa__fail(pp, SDPA_ERR_SEQLENS, "sdpa: cu_seqlens must start at 0");
        for (s = 0; s < p->num_seqs; s++) {
            if (p->cu_seqlens_q[s + 1] < p->cu_seqlens_q[s] || p->cu_seqlens_kv[s + 1] < p->cu_seqlens_kv[s])
                return sdpa__fail(pp, SDPA_ERR_SEQLENS, "sdpa: cu_seqlens decrease at index %lld", (long long)s + 1);
        }
        if (p->cu_seqlens_q[p->num_seqs] > P->Lq || p->cu_seqlens_kv[p->num_seqs] > P->Lk)
            return sdpa__fail(pp, SDPA_ERR_SEQLENS, "sdpa: cu_seqlens end past Lq (%lld) or Lk (%lld)",
                              (long long)P->Lq, (long long)P->Lk);
        P->packed = 1;
        P->cuq = p->cu_seqlens_q;
        P->cuk = p->cu_seqlens_kv;
        P->nseq = p->num_seqs + 1;
    } else {
        P->nseq = P->B;
    }

    /* lse and aliasing */
    if (p->lse) {
        if (!sdpa__mul_ok(P->B, P->Hq, &lse_n) || !sdpa__mul_ok(lse_n, P->Lq, &lse_n) ||
            lse_n > INT64_MAX / 4 || !sdpa__bytes_ok(lse_n * 4))
            return sdpa__fail(pp, SDPA_ERR_OVERFLOW, "sdpa: lse size overflows");
        lse_lo = (uintptr_t)p->lse;
        lse_hi = lse_lo + (uintptr_t)lse_n * 4u;
        if (lse_n > 0 && lse_hi < lse_lo) return sdpa__fail(pp, SDPA_ERR_OVERFLOW, "sdpa: lse wraps around the address space");
    }
    P->lse = p->lse;
    {
        const sdpa__tens *in[4];
        static const char *nm[4] = {"q", "k", "v", "mask"};
        int i;
        in[0] = &P->q; in[1] = &P->k; in[2] = &P->v; in[3] = &P->m;
        for (i = 0; i < 4; i++) {
            if (sdpa__overlap(in[i], P->o.lo, P->o.hi))
                return sdpa__fail(pp, SDPA_ERR_ALIAS, "sdpa: out overlaps %s", nm[i]);
            if (sdpa__overlap(in[i], lse_lo, lse_hi))
                return sdpa__fail(pp, SDPA_ERR_ALIAS, "sdpa: lse overlaps %s", nm[i]);
        }
        if (sdpa__overlap(&P->o, lse_lo, lse_hi)) return sdpa__fail(pp, SDPA_ERR_ALIAS, "sdpa: lse overlaps out");
    }

    if (p->precision < SDPA_PRECISION_DEFAULT || p->precision > SDPA_PRECISION_INT8_QK_BF16_PV)
        return sdpa__fail(pp, SDPA_ERR_PARAM, "sdpa: precision = %d is not an sdpa_precision value", p->precision);
    P->i8 = p->precision == SDPA_PRECISION_INT8_QK || p->precision == SDPA_PRECISION_INT8_QK_NOSMOOTH ||
            p->precision == SDPA_PRECISION_INT8_QK_BF16_PV;
    P->p1 = p->precision == SDPA_PRECISION_BF16_PV || p->precision == SDPA_PRECISION_INT8_QK_BF16_PV;
    P->i8_smooth = (p->precision == SDPA_PRECISION_INT8_QK || p->precision == SDPA_PRECISION_INT8_QK_BF16_PV) &&
                   P->k.dtype != SDPA_I8;
    if (P->i8 && P->D > SDPA__I8_MAXD)
        return sdpa__fail(pp, SDPA_ERR_SHAPE, "sdpa: int8 mode needs head_dim <= %d (got %lld)", SDPA__I8_MAXD, (long long)P->D);
    if (P->i8 && (rc = sdpa__i8_scales(P, p, pp)) != SDPA_OK) return rc;

    rc = sdpa__resolve_path(pp, p->path);
    if (rc < 0) return rc;
    P->path = (sdpa_path)rc;
    sdpa__set_kernels(P);
    sdpa__auto_tiles(P, p);

    /* tiles, tasks and scratch */
    P->rpad = P->bf16 ? 32 : 4;
    P->kpad = P->bf16 ? 32 : 16;
    P->tqp = SDPA__ROUND_UP(P->tq, P->rpad);
    P->tkp = SDPA__ROUND_UP(P->tk, P->kpad);
    P->dvp = SDPA__ROUND_UP(P->Dv, P->bf16 ? 32 : 16);
    P->dp = SDPA__ROUND_UP(P->D, 32);
    {
        /* floats: Q tile, K tile (transposed), scores, V tile, O tile, m, l;
         * bf16 mode adds its packed Q, K, P and V (two bf16 per float);
         * int8 mode its Q tile, scales and shifts, and int32 scores, and
         * with bf16 P.V the packed P and V and V's lo parts (sdpa__ws_carve
         * lays them out in this order); parts not used have size 0 */
        int64_t a[16], b[16], f, wbytes = 0, part;
        int i;
        for (i = 0; i < 16; i++) a[i] = b[i] = 0;
        a[0] = P->tqp;    b[0] = P->D;
        a[1] = P->D;      b[1] = P->tkp;
        a[2] = P->tqp;    b[2] = P->tkp;
        a[3] = P->tk;     b[3] = P->dvp;
        a[4] = P->tqp;    b[4] = P->dvp;
        a[5] = P->tqp;    b[5] = 2;             /* m and the new maxima */
        a[6] = P->tqp;    b[6] = 1;
        if (P->bf16 && !P->i8) {
            a[7] = P->tqp;    b[7] = P->dp / 2;
            a[8] = P->dp / 2; b[8] = P->tkp;
        }
        if (P->bf16) {
            a[9] = P->tqp;      b[9] = P->tkp;     /* P as bf16 hi and lo parts */
            a[10] = P->tkp / 2; b[10] = P->dvp;
        }
        if (P->i8) { /* AMX-INT8 steps through 64 dims, the others 16; D <= SDPA__I8_MAXD */
            P->dq = SDPA__ROUND_UP(P->D, P->bf16 ? 64 : 16);
            a[11] = P->tqp; b[11] = P->dq / 4;
            a[12] = P->tqp; b[12] = 1;
            a[13] = P->tqp; b[13] = 1;
            a[14] = P->tqp; b[14] = P->tkp;
        }
        if (P->bf16 && P->i8) { a[15] = P->tkp / 2; b[15] = P->dvp; }
        for (i = 0; i < 16; i++) { /* a head_dim near INT64_MAX / 4 passes the tensor checks: multiply with care */
            if (!sdpa__mul_ok(a[i], b[i], &f) || f > INT64_MAX - 15 || !sdpa__mul_ok(SDPA__ROUND_UP(f, 16), 4, &part) ||
                !sdpa__add_ok(wbytes, part, &wbytes))
                return sdpa__fail(pp, SDPA_ERR_OVERFLOW, "sdpa: scratch size overflows (head_dim too large)");
        }
        /* per-row bookkeeping: h, i, lo, hi as int64; every part is a
         * multiple of 64 bytes, so each worker's scratch stays aligned */
        if (!sdpa__add_ok(wbytes, P->tqp * 4 * 8, &wbytes))
            return sdpa__fail(pp, SDPA_ERR_OVERFLOW, "sdpa: scratch size overflows");
        P->ws_worker = (size_t)wbytes;
    }
    if (!sdpa__count_tasks(P, &total)) return sdpa__fail(pp, SDPA_ERR_OVERFLOW, "sdpa: task count overflows");
    P->n_tasks = total;
    P->n_workers = sdpa__n_workers(p, total);
    if (P->i8 && (rc = sdpa__i8_plan(P, pp)) != SDPA_OK) return rc;
    if (!sdpa__mul_ok((int64_t)P->ws_worker, P->n_workers, &bytes) || P->nseq > INT64_MAX / 16 ||
        !sdpa__add_ok(bytes, SDPA__ROUND_UP((P->nseq + 1) * 8, 64) + 64, &bytes) ||
        !sdpa__add_ok(bytes, (int64_t)P->i8_bytes, &bytes) || !sdpa__bytes_ok(bytes))
        return sdpa__fail(pp, SDPA_ERR_OVERFLOW, "sdpa: scratch size overflows");
    return SDPA_OK;
}

/* Scratch: the task prefix array, then each worker's part, then int8 mode's
 * K blocks, 64-byte aligned (the final 64 bytes let an unaligned allocation
 * be aligned). */
static size_t sdpa__ws_bytes(const sdpa__plan *P)
{
    if (P->n_tasks == 0) return 0;
    return SDPA__ROUND_UP((size_t)(P->nseq + 1) * 8u, 64u) + P->ws_worker * (size_t)P->n_workers + P->i8_bytes + 64u;
}

SDPA_API int64_t sdpa_workspace_size(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v,
                                     const sdpa_tensor *out, const sdpa_params *params)
{
    sdpa__plan P;
    int rc = sdpa__plan_make(q, k, v, out, params, &P);
    if (rc != SDPA_OK) return rc;
    return (int64_t)sdpa__ws_bytes(&P);
}

/* ---- kernels (portable C, written for the auto-vectoriser) -------------- */

/* C[M x N] = (accumulate ? C : 0) + A[M x K] B[K x N], with M % 4 == 0 and
 * N % 16 == 0: a 4 x 16 register block of C per step, K streamed. This one
 * micro-kernel serves both S = Q Kᵀ (K tile stored transposed) and O += P V. */
static void sdpa__gemm_scalar(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                              const float *B, int64_t ldb, float *C, int64_t ldc, int accumulate)
{
    int64_t i, j, kk;
    int r, c;
    for (i = 0; i < M; i += 4) {
        for (j = 0; j < N; j += 16) {
            float acc[4][16];
            for (r = 0; r < 4; r++)
                for (c = 0; c < 16; c++) acc[r][c] = accumulate ? C[(i + r) * ldc + j + c] : 0.0f;
            for (kk = 0; kk < K; kk++) {
                const float *SDPA__RESTRICT b = B + kk * ldb + j;
                float a0 = A[(i + 0) * lda + kk], a1 = A[(i + 1) * lda + kk];
                float a2 = A[(i + 2) * lda + kk], a3 = A[(i + 3) * lda + kk];
                for (c = 0; c < 16; c++) {
                    acc[0][c] += a0 * b[c];
                    acc[1][c] += a1 * b[c];
                    acc[2][c] += a2 * b[c];
                    acc[3][c] += a3 * b[c];
                }
            }
            for (r = 0; r < 4; r++)
                for (c = 0; c < 16; c++) C[(i + r) * ldc + j + c] = acc[r][c];
        }
    }
}

/* dst[0..n) = mul * src[0..n), widening src of dtype t. */
static void sdpa__load_row(float *SDPA__RESTRICT dst, const char *src, sdpa_dtype t, int64_t n, float mul)
{
    int64_t i;
    if (t == SDPA_F32) {
        const float *s = (const float *)(const void *)src;
        for (i = 0; i < n; i++) dst[i] = s[i] * mul;
    } else if (t == SDPA_F16) {
        const uint16_t *s = (const uint16_t *)(const void *)src;
        for (i = 0; i < n; i++) dst[i] = sdpa_f16_to_f32(s[i]) * mul;
    } else {
        const uint16_t *s = (const uint16_t *)(const void *)src;
        for (i = 0; i < n; i++) dst[i] = sdpa_bf16_to_f32(s[i]) * mul;
    }
}

/* The column form: dst[i * ld] = src[i], for the transposed K tile. */
static void sdpa__load_col(float *dst, int64_t ld, const char *src, sdpa_dtype t, int64_t n)
{
    int64_t i;
    if (t == SDPA_F32) {
        const float *s = (const float *)(const void *)src;
        for (i = 0; i < n; i++) dst[i * ld] = s[i];
    } else if (t == SDPA_F16) {
        const uint16_t *s = (const uint16_t *)(const void *)src;
        for (i = 0; i < n; i++) dst[i * ld] = sdpa_f16_to_f32(s[i]);
    } else {
        const uint16_t *s = (const uint16_t *)(const void *)src;
        for (i = 0; i < n; i++) dst[i * ld] = sdpa_bf16_to_f32(s[i]);
    }
}

/* The K block transposed: Kt[d * ld + j] = key j's element d, for j < nk and
 * d < D; key j starts at kb + j * ks bytes. */
static void sdpa__load_kt(float *Kt, int64_t ld, const char *kb, int64_t ks, sdpa_dtype t, int64_t nk, int64_t D)
{
    int64_t j;
    for (j = 0; j < nk; j++) sdpa__load_col(Kt + j, ld, kb + j * ks, t, D);
}

static void sdpa__store_row(char *dst, sdpa_dtype t, const float *src, int64_t n, float mul)
{
    int64_t i;
    if (t == SDPA_F32) {
        float *d = (float *)(void *)dst;
        for (i = 0; i < n; i++) d[i] = src[i] * mul;
    } else if (t == SDPA_F16) {
        uint16_t *d = (uint16_t *)(void *)dst;
        for (i = 0; i < n; i++) d[i] = sdpa_f32_to_f16(src[i] * mul);
    } else {
        uint16_t *d = (uint16_t *)(void *)dst;
        for (i = 0; i < n; i++) d[i] = sdpa_f32_to_bf16(src[i] * mul);
    }
}

/* Maximum of s[0..n), n >= 1; NaN entries are skipped (they poison the row
 * later through exp). 16 lanes, so the loop vectorises. */
static float sdpa__row_max(const float *s, int64_t n)
{
    float lane[16], m;
    int64_t j = 0;
    int c;
    for (c = 0; c < 16; c++) lane[c] = -(float)INFINITY;
    for (; j + 16 <= n; j += 16)
        for (c = 0; c < 16; c++) lane[c] = s[j + c] > lane[c] ? s[j + c] : lane[c];
    m = -(float)INFINITY;
    for (c = 0; c < 16; c++) m = lane[c] > m ? lane[c] : m;
    for (; j < n; j++) m = s[j] > m ? s[j] : m;
    return m;
}

/* s[j] = exp(s[j] - m) for j in [0, n); returns their sum (fixed order). */
static float sdpa__exp_row(float *SDPA__RESTRICT s, int64_t n, float m)
{
    float lane[16], sum = 0.0f;
    int64_t j = 0;
    int c;
    for (c = 0; c < 16; c++) lane[c] = 0.0f;
    for (; j + 16 <= n; j += 16)
        for (c = 0; c < 16; c++) {
            float e = sdpa__expf(s[j + c] - m);
            s[j + c] = e;
            lane[c] += e;
        }
    for (; j < n; j++) {
        float e = sdpa__expf(s[j] - m);
        s[j] = e;
        sum += e;
    }
    for (c = 0; c < 16; c++) sum += lane[c];
    return sum;
}

/* x[0..n) *= a (the online softmax's rescale of an O row, bf16 mode's
 * scaling of a score row). */
static void sdpa__scale_row(float *SDPA__RESTRICT x, int64_t n, float a)
{
    int64_t j;
    for (j = 0; j < n; j++) x[j] *= a;
}

/* 0 when x[0..n) is all finite, NaN otherwise (x * 0 is NaN only for inf
 * and NaN). 16 lanes, so it vectorises; costs one pass over the V block. */
static float sdpa__nonfinite_probe(const float *x, int64_t n)
{
    float lane[16], acc = 0.0f;
    int64_t j = 0;
    int c;
    for (c = 0; c < 16; c++) lane[c] = 0.0f;
    for (; j + 16 <= n; j += 16)
        for (c = 0; c < 16; c++) lane[c] += x[j + c] * 0.0f;
    for (; j < n; j++) acc += x[j] * 0.0f;
    for (c = 0; c < 16; c++) acc += lane[c];
    return acc;
}

/* O[M x N] += P[M x K] V[K x N], skipping zero probabilities, so a key that
 * a row cannot see contributes nothing even when its V row is not finite. */
static void sdpa__pv_skip_zeros(int64_t M, int64_t N, int64_t K, const float *P, int64_t ldp,
                                const float *V, float *O)
{
    int64_t r, j, d;
    for (r = 0; r < M; r++)
        for (j = 0; j < K; j++) {
            float p = P[r * ldp + j];
            float *SDPA__RESTRICT o = O + r * N;
            const float *SDPA__RESTRICT v = V + j * N;
            if (p == 0.0f) continue;
            for (d = 0; d < N; d++) o[d] += p * v[d];
        }
}

/* ---- NEON kernels (AArch64; chosen at run time) --------------------------- */

#ifdef SDPA__HAVE_NEON
/* The 4 x 16 micro-kernel in 16 q-register accumulators. k is unrolled by 4:
 * one 4-float load from each A row feeds four k steps through fmla's lane
 * form, so a step costs four 16-byte loads of B and 16 fmla, and the loop
 * body is 20 loads and 64 fmla for 4 k. 16 accumulators + 4 A + 4 B vectors
 * fit AArch64's 32 registers with room to spare. M % 4 == 0, N % 16 == 0;
 * no load reaches past row ends (A is read 4 at a time only while kk+4 <= K). */
#define SDPA__NEON_KSTEP(bp, va0, va1, va2, va3, l)                                                    \
    do {                                                                                               \
        float32x4_t b0_ = vld1q_f32(bp), b1_ = vld1q_f32((bp) + 4);                                    \
        float32x4_t b2_ = vld1q_f32((bp) + 8), b3_ = vld1q_f32((bp) + 12);                             \
        x00 = vfmaq_laneq_f32(x00, b0_, va0, l); x01 = vfmaq_laneq_f32(x01, b1_, va0, l);              \
        x02 = vfmaq_laneq_f32(x02, b2_, va0, l); x03 = vfmaq_laneq_f32(x03, b3_, va0, l);              \
        x10 = vfmaq_laneq_f32(x10, b0_, va1, l); x11 = vfmaq_laneq_f32(x11, b1_, va1, l);              \
        x12 = vfmaq_laneq_f32(x12, b2_, va1, l); x13 = vfmaq_laneq_f32(x13, b3_, va1, l);              \
        x20 = vfmaq_laneq_f32(x20, b0_, va2, l); x21 = vfmaq_laneq_f32(x21, b1_, va2, l);              \
        x22 = vfmaq_laneq_f32(x22, b2_, va2, l); x23 = vfmaq_laneq_f32(x23, b3_, va2, l);              \
        x30 = vfmaq_laneq_f32(x30, b0_, va3, l); x31 = vfmaq_laneq_f32(x31, b1_, va3, l);              \
        x32 = vfmaq_laneq_f32(x32, b2_, va3, l); x33 = vfmaq_laneq_f32(x33, b3_, va3, l);              \
    } while (0)

static void sdpa__gemm_neon(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                            const float *B, int64_t ldb, float *C, int64_t ldc, int accumulate)
{
    int64_t i, j, kk;
    for (i = 0; i < M; i += 4) {
        const float *a0 = A + i * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
        for (j = 0; j < N; j += 16) {
            float *c0 = C + i * ldc + j, *c1 = c0 + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc;
            float32x4_t x00, x01, x02, x03, x10, x11, x12, x13, x20, x21, x22, x23, x30, x31, x32, x33;
            if (accumulate) {
                x00 = vld1q_f32(c0); x01 = vld1q_f32(c0 + 4); x02 = vld1q_f32(c0 + 8); x03 = vld1q_f32(c0 + 12);
                x10 = vld1q_f32(c1); x11 = vld1q_f32(c1 + 4); x12 = vld1q_f32(c1 + 8); x13 = vld1q_f32(c1 + 12);
                x20 = vld1q_f32(c2); x21 = vld1q_f32(c2 + 4); x22 = vld1q_f32(c2 + 8); x23 = vld1q_f32(c2 + 12);
                x30 = vld1q_f32(c3); x31 = vld1q_f32(c3 + 4); x32 = vld1q_f32(c3 + 8); x33 = vld1q_f32(c3 + 12);
            } else {
                x00 = x01 = x02 = x03 = x10 = x11 = x12 = x13 = vdupq_n_f32(0.0f);
                x20 = x21 = x22 = x23 = x30 = x31 = x32 = x33 = vdupq_n_f32(0.0f);
            }
            for (kk = 0; kk + 4 <= K; kk += 4) {
                const float *b = B + kk * ldb + j;
                float32x4_t va0 = vld1q_f32(a0 + kk), va1 = vld1q_f32(a1 + kk);
                float32x4_t va2 = vld1q_f32(a2 + kk), va3 = vld1q_f32(a3 + kk);
                SDPA__NEON_KSTEP(b, va0, va1, va2, va3, 0);
                SDPA__NEON_KSTEP(b + ldb, va0, va1, va2, va3, 1);
                SDPA__NEON_KSTEP(b + 2 * ldb, va0, va1, va2, va3, 2);
                SDPA__NEON_KSTEP(b + 3 * ldb, va0, va1, va2, va3, 3);
            }
            for (; kk < K; kk++) { /* K % 4 steps: A broadcast one float at a time */
                const float *b = B + kk * ldb + j;
                float32x4_t va0 = vld1q_dup_f32(a0 + kk), va1 = vld1q_dup_f32(a1 + kk);
                float32x4_t va2 = vld1q_dup_f32(a2 + kk), va3 = vld1q_dup_f32(a3 + kk);
                SDPA__NEON_KSTEP(b, va0, va1, va2, va3, 0);
            }
            vst1q_f32(c0, x00); vst1q_f32(c0 + 4, x01); vst1q_f32(c0 + 8, x02); vst1q_f32(c0 + 12, x03);
            vst1q_f32(c1, x10); vst1q_f32(c1 + 4, x11); vst1q_f32(c1 + 8, x12); vst1q_f32(c1 + 12, x13);
            vst1q_f32(c2, x20); vst1q_f32(c2 + 4, x21); vst1q_f32(c2 + 8, x22); vst1q_f32(c2 + 12, x23);
            vst1q_f32(c3, x30); vst1q_f32(c3 + 4, x31); vst1q_f32(c3 + 8, x32); vst1q_f32(c3 + 12, x33);
        }
    }
}
#undef SDPA__NEON_KSTEP

#ifdef SDPA_USE_SLEEF
/* SLEEF's expf on 4 lanes (1.0 ulp), flushed below -87.33654 as on x86. */
SDPA__INLINE float32x4_t sdpa__exp4_neon(float32x4_t x)
{
    uint32x4_t under = vcltq_f32(x, vdupq_n_f32(-87.33654f));
    return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(Sleef_expf4_u10advsimd(x)), under));
}
#else
/* sdpa__expf on 4 lanes: the same reduction, polynomial and two-factor 2^n,
 * with fused multiply-adds; max error 2 ulp (checked by the tests). The
 * range tests are float compares here: intrinsics need no if-conversion. */
SDPA__INLINE float32x4_t sdpa__exp4_neon(float32x4_t x)
{
    const float32x4_t shifter = vdupq_n_f32(12582912.0f);
    uint32x4_t under = vcltq_f32(x, vdupq_n_f32(-87.33654f)); /* bits 0xc2aeac4f, as scalar */
    uint32x4_t over = vcgtq_f32(x, vdupq_n_f32(88.72283f));   /* bits 0x42b17217 */
    uint32x4_t nan = vmvnq_u32(vceqq_f32(x, x));
    uint32x4_t special = vorrq_u32(vorrq_u32(under, over), nan);
    float32x4_t xc = vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(x), special));
    float32x4_t t = vfmaq_f32(shifter, xc, vdupq_n_f32(1.44269504088896341f));
    float32x4_t n = vsubq_f32(t, shifter);
    float32x4_t r = vfmsq_f32(xc, n, vdupq_n_f32(0.693145751953125f));
    float32x4_t p = vdupq_n_f32(1.0f / 5040.0f);
    uint32x4_t m, h, pb;
    r = vfmsq_f32(r, n, vdupq_n_f32(1.428606765330187045e-6f));
    p = vfmaq_f32(vdupq_n_f32(1.0f / 720.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 120.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 24.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 6.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    /* m = n + 256 from t's mantissa; 2^n = 2^(h-128) * 2^(m-h-128), h = m/2 */
    m = vsubq_u32(vandq_u32(vreinterpretq_u32_f32(t), vdupq_n_u32(0x7fffffu)), vdupq_n_u32(0x400000u - 256u));
    h = vshrq_n_u32(m, 1);
    p = vmulq_f32(p, vreinterpretq_f32_u32(vshlq_n_u32(vsubq_u32(h, vdupq_n_u32(1u)), 23)));
    p = vmulq_f32(p, vreinterpretq_f32_u32(vshlq_n_u32(vsubq_u32(vsubq_u32(m, h), vdupq_n_u32(1u)), 23)));
    pb = vbicq_u32(vreinterpretq_u32_f32(p), special);
    pb = vorrq_u32(pb, vandq_u32(over, vdupq_n_u32(0x7f800000u)));
    pb = vorrq_u32(pb, vandq_u32(nan, vorrq_u32(vreinterpretq_u32_f32(x), vdupq_n_u32(0x00400000u))));
    return vreinterpretq_f32_u32(pb);
}
#endif /* SDPA_USE_SLEEF */

/* Lane sums in a fixed order, so results do not depend on threads. */
SDPA__INLINE float sdpa__hsum_neon(float32x4_t v)
{
    return ((vgetq_lane_f32(v, 0) + vgetq_lane_f32(v, 1)) + vgetq_lane_f32(v, 2)) + vgetq_lane_f32(v, 3);
}

/* fmaxnm takes the number when one operand is a (quiet) NaN: NaN scores are
 * skipped, as in the scalar kernel; 8 floats a step in two chains. */
static float sdpa__row_max_neon(const float *s, int64_t n)
{
    float32x4_t m0 = vdupq_n_f32(-(float)INFINITY), m1 = m0;
    float m;
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        m0 = vmaxnmq_f32(m0, vld1q_f32(s + j));
        m1 = vmaxnmq_f32(m1, vld1q_f32(s + j + 4));
    }
    if (j + 4 <= n) {
        m0 = vmaxnmq_f32(m0, vld1q_f32(s + j));
        j += 4;
    }
    m = vmaxnmvq_f32(vmaxnmq_f32(m0, m1));
    for (; j < n; j++) m = s[j] > m ? s[j] : m;
    return m;
}

static void sdpa__scale_row_neon(float *x, int64_t n, float a)
{
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) vst1q_f32(x + j, vmulq_n_f32(vld1q_f32(x + j), a));
    for (; j < n; j++) x[j] *= a;
}

/* s[j] = exp(s[j] - m), 8 a step in two independent chains (an in-order
 * core such as the A53 overlaps them); the last n % 4 go through a 4-float
 * copy on the stack, so nothing past s[n-1] is read or written. */
static float sdpa__exp_row_neon(float *s, int64_t n, float m)
{
    float32x4_t vm = vdupq_n_f32(m), acc0 = vdupq_n_f32(0.0f), acc1 = acc0;
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        float32x4_t e0 = sdpa__exp4_neon(vsubq_f32(vld1q_f32(s + j), vm));
        float32x4_t e1 = sdpa__exp4_neon(vsubq_f32(vld1q_f32(s + j + 4), vm));
        vst1q_f32(s + j, e0);
        vst1q_f32(s + j + 4, e1);
        acc0 = vaddq_f32(acc0, e0);
        acc1 = vaddq_f32(acc1, e1);
    }
    if (j + 4 <= n) {
        float32x4_t e0 = sdpa__exp4_neon(vsubq_f32(vld1q_f32(s + j), vm));
        vst1q_f32(s + j, e0);
        acc0 = vaddq_f32(acc0, e0);
        j += 4;
    }
    if (j < n) {
        static const uint32_t idx[4] = {0, 1, 2, 3};
        float tmp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        uint32x4_t live = vcltq_u32(vld1q_u32(idx), vdupq_n_u32((uint32_t)(n - j)));
        float32x4_t e;
        memcpy(tmp, s + j, (size_t)(n - j) * sizeof(float));
        e = sdpa__exp4_neon(vsubq_f32(vld1q_f32(tmp), vm));
        e = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(e), live));
        vst1q_f32(tmp, e);
        memcpy(s + j, tmp, (size_t)(n - j) * sizeof(float));
        acc1 = vaddq_f32(acc1, e);
    }
    return sdpa__hsum_neon(vaddq_f32(acc0, acc1));
}

/* Widening loads, 8 elements a step: F16 by fcvtl/fcvtl2 (ARMv8.0, exact
 * for every half), BF16 by a 16-bit left shift (shll), F32 as it is. */
SDPA__INLINE void sdpa__widen8_neon(const char *src, sdpa_dtype t, int64_t i, float32x4_t *lo, float32x4_t *hi)
{
    if (t == SDPA_F32) {
        const float *s = (const float *)(const void *)src + i;
        *lo = vld1q_f32(s);
        *hi = vld1q_f32(s + 4);
    } else {
        uint16x8_t u = vld1q_u16((const uint16_t *)(const void *)src + i);
        if (t == SDPA_F16) {
            float16x8_t f = vreinterpretq_f16_u16(u);
            *lo = vcvt_f32_f16(vget_low_f16(f));
            *hi = vcvt_high_f32_f16(f);
        } else {
            *lo = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(u), 16));
            *hi = vreinterpretq_f32_u32(vshll_high_n_u16(u, 16));
        }
    }
}

static void sdpa__load_row_neon(float *dst, const char *src, sdpa_dtype t, int64_t n, float mul)
{
    float32x4_t vm = vdupq_n_f32(mul), lo, hi;
    int64_t i = 0;
    /* one loop per dtype, so the dtype test is not in the loop */
    if (t == SDPA_F32)
        for (; i + 8 <= n; i += 8) {
            sdpa__widen8_neon(src, SDPA_F32, i, &lo, &hi);
            vst1q_f32(dst + i, vmulq_f32(lo, vm)); vst1q_f32(dst + i + 4, vmulq_f32(hi, vm));
        }
    else if (t == SDPA_F16)
        for (; i + 8 <= n; i += 8) {
            sdpa__widen8_neon(src, SDPA_F16, i, &lo, &hi);
            vst1q_f32(dst + i, vmulq_f32(lo, vm)); vst1q_f32(dst + i + 4, vmulq_f32(hi, vm));
        }
    else
        for (; i + 8 <= n; i += 8) {
            sdpa__widen8_neon(src, SDPA_BF16, i, &lo, &hi);
            vst1q_f32(dst + i, vmulq_f32(lo, vm)); vst1q_f32(dst + i + 4, vmulq_f32(hi, vm));
        }
    if (i < n) sdpa__load_row(dst + i, src + i * sdpa__esize(t), t, n - i, mul);
}

/* The column form, dst[i * ld] = src[i]: widened 8 at a time as above, then
 * stored one lane at a time (the K tile is transposed by these stores). */
static void sdpa__load_col_neon(float *dst, int64_t ld, const char *src, sdpa_dtype t, int64_t n)
{
    float32x4_t lo, hi;
    int64_t i = 0;
    if (t == SDPA_F32) { /* nothing to widen: the scalar loop is the same stores */
        sdpa__load_col(dst, ld, src, t, n);
        return;
    }
    for (; i + 8 <= n; i += 8) {
        float *d = dst + i * ld;
        if (t == SDPA_F16)
            sdpa__widen8_neon(src, SDPA_F16, i, &lo, &hi);
        else
            sdpa__widen8_neon(src, SDPA_BF16, i, &lo, &hi);
        vst1q_lane_f32(d, lo, 0); vst1q_lane_f32(d + ld, lo, 1);
        vst1q_lane_f32(d + 2 * ld, lo, 2); vst1q_lane_f32(d + 3 * ld, lo, 3);
        vst1q_lane_f32(d + 4 * ld, hi, 0); vst1q_lane_f32(d + 5 * ld, hi, 1);
        vst1q_lane_f32(d + 6 * ld, hi, 2); vst1q_lane_f32(d + 7 * ld, hi, 3);
    }
    if (i < n) sdpa__load_col(dst + i * ld, ld, src + i * sdpa__esize(t), t, n - i);
}

static void sdpa__load_kt_neon(float *Kt, int64_t ld, const char *kb, int64_t ks, sdpa_dtype t, int64_t nk, int64_t D)
{
    int64_t j;
    for (j = 0; j < nk; j++) sdpa__load_col_neon(Kt + j, ld, kb + j * ks, t, D);
}

/* AArch64 features, as SDPA__ARM_* bits. ASIMD (NEON) is in the base ISA;
 * the others are for later kernels: fp16 arithmetic (ARMv8.2 FEAT_FP16),
 * dotprod (sdot/udot), bf16 (bfdot, bfmmla), i8mm (smmla). Linux reports
 * them in the auxiliary vector (a read of a libc variable, no system call,
 * so nothing is cached); elsewhere (Apple, other systems) the answer is what
 * the compiler was told to target. */
enum { SDPA__ARM_ASIMD = 1, SDPA__ARM_FP16 = 2, SDPA__ARM_DOTPROD = 4, SDPA__ARM_BF16 = 8, SDPA__ARM_I8MM = 16 };

static unsigned sdpa__cpu_arm(void)
{
    unsigned f = 0;
#if defined(__linux__)
    /* the kernel's uapi values, for libc headers that predate them */
    unsigned long hw = getauxval(16 /* AT_HWCAP */), hw2 = getauxval(26 /* AT_HWCAP2 */);
    if (hw & (1ul << 1)) f |= SDPA__ARM_ASIMD;     /* HWCAP_ASIMD */
    if (hw & (1ul << 10)) f |= SDPA__ARM_FP16;     /* HWCAP_ASIMDHP */
    if (hw & (1ul << 20)) f |= SDPA__ARM_DOTPROD;  /* HWCAP_ASIMDDP */
    if (hw2 & (1ul << 14)) f |= SDPA__ARM_BF16;    /* HWCAP2_BF16 */
    if (hw2 & (1ul << 13)) f |= SDPA__ARM_I8MM;    /* HWCAP2_I8MM */
#else
    f |= SDPA__ARM_ASIMD;
#if defined(__ARM_FEATURE_FP16_VECTOR_ARITHMETIC)
    f |= SDPA__ARM_FP16;
#endif
#if defined(__ARM_FEATURE_DOTPROD)
    f |= SDPA__ARM_DOTPROD;
#endif
#if defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC)
    f |= SDPA__ARM_BF16;
#endif
#if defined(__ARM_FEATURE_MATMUL_INT8)
    f |= SDPA__ARM_I8MM;
#endif
#endif
    return f;
}
#endif /* SDPA__HAVE_NEON */

/* ---- AVX2 + FMA kernels (x86; chosen at run time) ------------------------- */

#ifdef SDPA__HAVE_AVX2
/* The scalar micro-kernel's job with intrinsics: a 4 x 16 block of C in 8
 * ymm accumulators; per k, two 8-float loads of B, four broadcasts of A and
 * eight FMAs. M % 4 == 0, N % 16 == 0; B rows must hold N floats. */
SDPA__TARGET_AVX2 static void sdpa__gemm_avx2(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                                              const float *B, int64_t ldb, float *C, int64_t ldc, int accumulate)
{
    int64_t i, j, kk;
    for (i = 0; i < M; i += 4) {
        const float *a0 = A + i * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
        for (j = 0; j < N; j += 16) {
            float *c0 = C + i * ldc + j, *c1 = c0 + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc;
            __m256 x00, x01, x10, x11, x20, x21, x30, x31;
            if (accumulate) {
                x00 = _mm256_loadu_ps(c0); x01 = _mm256_loadu_ps(c0 + 8);
                x10 = _mm256_loadu_ps(c1); x11 = _mm256_loadu_ps(c1 + 8);
                x20 = _mm256_loadu_ps(c2); x21 = _mm256_loadu_ps(c2 + 8);
                x30 = _mm256_loadu_ps(c3); x31 = _mm256_loadu_ps(c3 + 8);
            } else {
                x00 = x01 = x10 = x11 = x20 = x21 = x30 = x31 = _mm256_setzero_ps();
            }
            for (kk = 0; kk < K; kk++) {
                const float *b = B + kk * ldb + j;
                __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), a;
                a = _mm256_broadcast_ss(a0 + kk);
                x00 = _mm256_fmadd_ps(a, b0, x00); x01 = _mm256_fmadd_ps(a, b1, x01);
                a = _mm256_broadcast_ss(a1 + kk);
                x10 = _mm256_fmadd_ps(a, b0, x10); x11 = _mm256_fmadd_ps(a, b1, x11);
                a = _mm256_broadcast_ss(a2 + kk);
                x20 = _mm256_fmadd_ps(a, b0, x20); x21 = _mm256_fmadd_ps(a, b1, x21);
                a = _mm256_broadcast_ss(a3 + kk);
                x30 = _mm256_fmadd_ps(a, b0, x30); x31 = _mm256_fmadd_ps(a, b1, x31);
            }
            _mm256_storeu_ps(c0, x00); _mm256_storeu_ps(c0 + 8, x01);
            _mm256_storeu_ps(c1, x10); _mm256_storeu_ps(c1 + 8, x11);
            _mm256_storeu_ps(c2, x20); _mm256_storeu_ps(c2 + 8, x21);
            _mm256_storeu_ps(c3, x30); _mm256_storeu_ps(c3 + 8, x31);
        }
    }
}

#ifdef SDPA_USE_SLEEF
/* SLEEF's expf on 8 lanes (1.0 ulp). Its results below FLT_MIN are
 * subnormal; they are flushed to 0 below -87.33654, as by the built-in exp,
 * so that both meet one contract and no subnormal P enters the P.V FMAs
 * (slow on some cores). SLEEF gives exp(-inf) = 0, NaN for NaN, inf above
 * 88.72283. One call a vector: libsleef is not inlined. */
SDPA__TARGET_AVX2 static __m256 sdpa__exp8_avx2(__m256 x)
{
    __m256 under = _mm256_cmp_ps(x, _mm256_set1_ps(-87.33654f), _CMP_LT_OQ);
    return _mm256_andnot_ps(under, Sleef_expf8_u10avx2(x));
}
#else
/* sdpa__expf on 8 lanes, the same reduction and polynomial with FMAs (max
 * error 2 ulp, checked by the tests): specials by compare masks. */
SDPA__TARGET_AVX2 static __m256 sdpa__exp8_avx2(__m256 x)
{
    const __m256 shifter = _mm256_set1_ps(12582912.0f);
    __m256 under = _mm256_cmp_ps(x, _mm256_set1_ps(-87.33654f), _CMP_LT_OQ);
    __m256 over = _mm256_cmp_ps(x, _mm256_set1_ps(88.72283f), _CMP_GT_OQ);
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    __m256 special = _mm256_or_ps(under, _mm256_or_ps(over, nan));
    __m256 xc = _mm256_andnot_ps(special, x);
    __m256 t = _mm256_fmadd_ps(xc, _mm256_set1_ps(1.44269504088896341f), shifter);
    __m256 n = _mm256_sub_ps(t, shifter);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), xc);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    __m256i m, h;
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-6f), r);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    /* m = n + 256 from t's mantissa; 2^n = 2^(h-128) * 2^(m-h-128), h = m/2 */
    m = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(t), _mm256_set1_epi32(0x7fffff)),
                         _mm256_set1_epi32(0x400000 - 256));
    h = _mm256_srli_epi32(m, 1);
    p = _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_sub_epi32(h, _mm256_set1_epi32(1)), 23)));
    p = _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(
                             _mm256_sub_epi32(_mm256_sub_epi32(m, h), _mm256_set1_epi32(1)), 23)));
    p = _mm256_andnot_ps(special, p);
    p = _mm256_or_ps(p, _mm256_and_ps(over, _mm256_set1_ps((float)INFINITY)));
    return _mm256_or_ps(p, _mm256_and_ps(nan, _mm256_or_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x00400000)))));
}
#endif /* SDPA_USE_SLEEF */

/* Lanes j < n all ones: tails are loaded and stored through this mask, so
 * nothing past s[n-1] is touched. */
SDPA__TARGET_AVX2 static __m256i sdpa__tail_mask_avx2(int64_t n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Lane sums added in a fixed order, so results do not depend on threads. */
SDPA__TARGET_AVX2 static float sdpa__hsum_avx2(__m256 v)
{
    float lane[8], sum = 0.0f;
    int c;
    _mm256_storeu_ps(lane, v);
    for (c = 0; c < 8; c++) sum += lane[c];
    return sum;
}

SDPA__TARGET_AVX2 static float sdpa__row_max_avx2(const float *s, int64_t n)
{
    __m256 mx = _mm256_set1_ps(-(float)INFINITY);
    float lane[8], m = -(float)INFINITY;
    int64_t j = 0;
    int c;
    for (; j + 8 <= n; j += 8) mx = _mm256_max_ps(_mm256_loadu_ps(s + j), mx); /* NaN in s: skipped, as scalar */
    if (j < n) {
        __m256i k = sdpa__tail_mask_avx2(n - j);
        __m256 x = _mm256_blendv_ps(mx, _mm256_maskload_ps(s + j, k), _mm256_castsi256_ps(k));
        mx = _mm256_max_ps(x, mx);
    }
    _mm256_storeu_ps(lane, mx);
    for (c = 0; c < 8; c++) m = lane[c] > m ? lane[c] : m;
    return m;
}

SDPA__TARGET_AVX2 static float sdpa__exp_row_avx2(float *s, int64_t n, float m)
{
    __m256 vm = _mm256_set1_ps(m), acc = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 e = sdpa__exp8_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
        _mm256_storeu_ps(s + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    if (j < n) {
        __m256i k = sdpa__tail_mask_avx2(n - j);
        __m256 e = sdpa__exp8_avx2(_mm256_sub_ps(_mm256_maskload_ps(s + j, k), vm));
        e = _mm256_and_ps(e, _mm256_castsi256_ps(k));
        _mm256_maskstore_ps(s + j, k, e);
        acc = _mm256_add_ps(acc, e);
    }
    return sdpa__hsum_avx2(acc);
}

SDPA__TARGET_AVX2 static void sdpa__scale_row_avx2(float *x, int64_t n, float a)
{
    __m256 va = _mm256_set1_ps(a);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), va));
    if (j < n) {
        __m256i k = sdpa__tail_mask_avx2(n - j);
        _mm256_maskstore_ps(x + j, k, _mm256_mul_ps(_mm256_maskload_ps(x + j, k), va));
    }
}

/* F16 rows widen 8 at a time with F16C's vcvtph2ps (exact, as the scalar
 * conversion); F32 and BF16 go to the scalar loops, which the compiler
 * vectorises. The scalar F16 conversion cost the F16 path 31%. */
SDPA__TARGET_AVX2 static void sdpa__load_row_avx2(float *dst, const char *src, sdpa_dtype t, int64_t n, float mul)
{
    const uint16_t *s = (const uint16_t *)(const void *)src;
    __m256 vm = _mm256_set1_ps(mul);
    int64_t i = 0;
    if (t != SDPA_F16) {
        sdpa__load_row(dst, src, t, n, mul);
        return;
    }
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(s + i))), vm));
    for (; i < n; i++) dst[i] = sdpa_f16_to_f32(s[i]) * mul;
}

/* 8 x 8 transpose of r[0..8) in registers: 24 shuffles. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX2 void sdpa__transpose8_avx2(__m256 r[8])
{
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xee);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xee);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xee);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xee);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20); r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20); r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20); r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20); r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/* 8 elements of dtype t widened to float (F16 by F16C, BF16 by a shift). */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX2 __m256 sdpa__load8_avx2(const char *src, sdpa_dtype t)
{
    if (t == SDPA_F32) return _mm256_loadu_ps((const float *)(const void *)src);
    if (t == SDPA_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)src));
    return _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)src)), 16));
}

/* The K block transposed in 8 x 8 register blocks; keys past the last full
 * eight and elements past the last full eight go one by one. The column-
 * at-a-time form it replaces stored one float per instruction and took a
 * quarter of the AVX-512 path's time. */
SDPA__TARGET_AVX2 static void sdpa__load_kt_avx2(float *Kt, int64_t ld, const char *kb, int64_t ks, sdpa_dtype t,
                                                 int64_t nk, int64_t D)
{
    int64_t j = 0, d, es = t == SDPA_F32 ? 4 : 2, D8 = D / 8 * 8;
    int c;
    for (; j + 8 <= nk; j += 8) {
        for (d = 0; d < D8; d += 8) {
            __m256 r[8];
            for (c = 0; c < 8; c++) r[c] = sdpa__load8_avx2(kb + (j + c) * ks + d * es, t);
            sdpa__transpose8_avx2(r);
            for (c = 0; c < 8; c++) _mm256_storeu_ps(Kt + (d + c) * ld + j, r[c]);
        }
        if (D8 < D)
            for (c = 0; c < 8; c++) sdpa__load_col(Kt + D8 * ld + j + c, ld, kb + (j + c) * ks + D8 * es, t, D - D8);
    }
    for (; j < nk; j++) sdpa__load_col(Kt + j, ld, kb + j * ks, t, D);
}


#endif /* SDPA__HAVE_AVX2 */

/* ---- x86 CPU features ------------------------------------------------------- */

#if defined(SDPA__HAVE_AVX2) || defined(SDPA__HAVE_AVX512)
#define SDPA__CPU_AVX2 1u      /* AVX2 + FMA + F16C, ymm state saved by the OS */
#define SDPA__CPU_AVX512 2u    /* AVX-512 F/BW/VL/DQ, zmm and opmask state saved */
#define SDPA__CPU_BF16 4u      /* AVX512-BF16 (the amx path needs it) */
#define SDPA__CPU_AMX 8u       /* AMX-TILE + AMX-BF16, tile data usable by this process */
#define SDPA__CPU_VNNI 16u     /* AVX512-VNNI (vpdpbusd: int8 mode's Q.K^T) */
#define SDPA__CPU_AMXI8 32u    /* AMX-INT8 besides SDPA__CPU_AMX (tdpbssd: int8 mode on the amx path) */
#define SDPA__CPU_AMD 64u      /* vendor AuthenticAMD (the decode's task shape, sdpa__kv_grouping) */
#define SDPA__CPU_KNOWN 0x100u /* the cache below is filled */

/* Linux hands out AMX tile state only to processes that ask for it (an
 * arch_prctl since 5.16); the permission is per process and harmless to ask
 * for twice. The system call is made directly (x86-64 number 158), so that
 * the header needs no feature-test macro for syscall(). Elsewhere AMX is not
 * used. */
static int sdpa__amx_permit(void)
{
#if defined(__linux__) && defined(SDPA__HAVE_AVX512)
    long ret;
    __asm__ __volatile__("syscall"
                         : "=a"(ret)
                         : "0"(158L /* arch_prctl */), "D"(0x1023L /* ARCH_REQ_XCOMP_PERM */),
                           "S"(18L /* XFEATURE_XTILEDATA */)
                         : "rcx", "r11", "memory");
    return ret == 0;
#else
    return 0;
#endif
}

/* CPUID for the instructions, XGETBV (XCR0) for the OS saving the registers. */
static unsigned sdpa__cpu_probe(void)
{
    unsigned a, b, c, d, x0, xhi, f = 0;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return 0;
    if (b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u) f |= SDPA__CPU_AMD; /* "AuthenticAMD" */
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    if (!(c & (1u << 27))) return f; /* OSXSAVE: XGETBV usable */
    __asm__ __volatile__("xgetbv" : "=a"(x0), "=d"(xhi) : "c"(0));
    (void)xhi;
    if (__get_cpuid_max(0, NULL) < 7 || (x0 & 6u) != 6u) return f;
    {
        int fma = (c >> 12) & 1u, f16c = (c >> 29) & 1u, avx = (c >> 28) & 1u;
        unsigned b7, c7, d7, a71 = 0, t;
        __cpuid_count(7, 0, a, b7, c7, d7);
        if (a >= 1) __cpuid_count(7, 1, a71, t, t, t);
        if (fma && f16c && avx && ((b7 >> 5) & 1u)) f |= SDPA__CPU_AVX2;
        /* F (16), DQ (17), BW (30), VL (31); XCR0 opmask, ZMM_Hi256, Hi16_ZMM */
        if ((f & SDPA__CPU_AVX2) && (b7 & 0xc0030000u) == 0xc0030000u && (x0 & 0xe0u) == 0xe0u) {
            f |= SDPA__CPU_AVX512;
            if ((a71 >> 5) & 1u) f |= SDPA__CPU_BF16;
            if ((c7 >> 11) & 1u) f |= SDPA__CPU_VNNI;
            /* AMX-BF16 (22), AMX-TILE (24); XCR0 XTILECFG and XTILEDATA; the
             * amx path also converts with AVX512-BF16 (every AMX CPU has it) */
            if ((d7 & 0x01400000u) == 0x01400000u && (x0 & 0x60000u) == 0x60000u && ((a71 >> 5) & 1u) &&
                sdpa__amx_permit()) {
                f |= SDPA__CPU_AMX;
                if ((d7 >> 25) & 1u) f |= SDPA__CPU_AMXI8; /* AMX-INT8 (25) */
            }
        }
    }
    return f;
}

/* The probe, cached: under a hypervisor each CPUID traps, and the probe costs
 * about 4 us, a third of a small decode-sized call. The cache holds a fact
 * about the CPU; threads that race store the same value, and relaxed atomics
 * make that race well defined. */
static unsigned sdpa__cpu(void)
{
    static unsigned cached;
    unsigned c = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (!c) {
        c = sdpa__cpu_probe() | SDPA__CPU_KNOWN;
        __atomic_store_n(&cached, c, __ATOMIC_RELAXED);
    }
    return c;
}
#endif

/* ---- AVX-512 kernels (x86-64; chosen at run time) ------------------------- */

#ifdef SDPA__HAVE_AVX512
/* Unmasked forms of several AVX-512 intrinsics start from an "undefined"
 * vector that g++ 12 reports as uninitialised (GCC bug 105593); their
 * zero-masked forms with every lane selected are the same instruction. */
#define SDPA__ALL16 ((__mmask16)0xffffu)
#if defined(__GNUC__) && !defined(__clang__)
#define SDPA__UNROLL _Pragma("GCC unroll 16")
#else
#define SDPA__UNROLL _Pragma("unroll")
#endif

/* An R x 16W block of C (R <= 8 rows, W <= 2 zmm columns) in R*W zmm
 * accumulators: per k, W loads of B and R broadcasts of A (folded into the
 * FMAs as {1to16} memory operands), R*W FMAs. Inlined with constant R and W,
 * the loops unroll and the accumulators stay in registers. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 void
sdpa__block_avx512(const int R, const int W, int64_t K, const float *a, int64_t lda, const float *b, int64_t ldb,
                   float *c, int64_t ldc, int accumulate)
{
    __m512 acc[8][2];
    int64_t kk;
    int r, w;
    SDPA__UNROLL for (r = 0; r < R; r++) SDPA__UNROLL for (w = 0; w < W; w++)
        acc[r][w] = accumulate ? _mm512_loadu_ps(c + r * ldc + 16 * w) : _mm512_setzero_ps();
    for (kk = 0; kk < K; kk++) {
        __m512 b0 = _mm512_loadu_ps(b + kk * ldb), b1 = W > 1 ? _mm512_loadu_ps(b + kk * ldb + 16) : b0;
        SDPA__UNROLL for (r = 0; r < R; r++) {
            __m512 ar = _mm512_set1_ps(a[r * lda + kk]);
            acc[r][0] = _mm512_fmadd_ps(ar, b0, acc[r][0]);
            if (W > 1) acc[r][1] = _mm512_fmadd_ps(ar, b1, acc[r][1]);
        }
    }
    SDPA__UNROLL for (r = 0; r < R; r++) SDPA__UNROLL for (w = 0; w < W; w++)
        _mm512_storeu_ps(c + r * ldc + 16 * w, acc[r][w]);
}

/* The scalar micro-kernel's contract (M % 4 == 0, N % 16 == 0): 8 x 32
 * blocks, 16 accumulators, so the two FMA pipes always have independent
 * work; 4-row and 16-column remainders take the smaller blocks. */
SDPA__TARGET_AVX512 static void sdpa__gemm_avx512(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                                                  const float *B, int64_t ldb, float *C, int64_t ldc, int accumulate)
{
    int64_t i = 0, j;
    for (; i + 8 <= M; i += 8) {
        for (j = 0; j + 32 <= N; j += 32)
            sdpa__block_avx512(8, 2, K, A + i * lda, lda, B + j, ldb, C + i * ldc + j, ldc, accumulate);
        if (j < N) sdpa__block_avx512(8, 1, K, A + i * lda, lda, B + j, ldb, C + i * ldc + j, ldc, accumulate);
    }
    if (i < M) {
        for (j = 0; j + 32 <= N; j += 32)
            sdpa__block_avx512(4, 2, K, A + i * lda, lda, B + j, ldb, C + i * ldc + j, ldc, accumulate);
        if (j < N) sdpa__block_avx512(4, 1, K, A + i * lda, lda, B + j, ldb, C + i * ldc + j, ldc, accumulate);
    }
}

#ifdef SDPA_USE_SLEEF
/* SLEEF's expf on 16 lanes (1.0 ulp), flushed below -87.33654 as on avx2. */
SDPA__TARGET_AVX512 static __m512 sdpa__exp16_avx512(__m512 x)
{
    __mmask16 under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.33654f), _CMP_LT_OQ);
    return _mm512_mask_mov_ps(Sleef_expf16_u10avx512f(x), under, _mm512_setzero_ps());
}
#else
/* sdpa__expf's reduction and polynomial on 16 lanes of finite xc (or NaN,
 * which passes through), 2^n applied by vscalefps (exact, no overflow in
 * the intermediate); lanes outside keep give 0. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 __m512 sdpa__exp16_core_avx512(__m512 xc, __mmask16 keep)
{
    __m512 n = _mm512_maskz_roundscale_ps(SDPA__ALL16, _mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), xc);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-6f), r);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_scalef_ps(keep, p, n);
}

/* sdpa__expf on 16 lanes: specials computed as 0, then set by opmasks. */
SDPA__TARGET_AVX512 static __m512 sdpa__exp16_avx512(__m512 x)
{
    __mmask16 under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.33654f), _CMP_LT_OQ);
    __mmask16 over = _mm512_cmp_ps_mask(x, _mm512_set1_ps(88.72283f), _CMP_GT_OQ);
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    __m512 p = sdpa__exp16_core_avx512(_mm512_maskz_mov_ps((__mmask16)~(under | over | nan), x), SDPA__ALL16);
    p = _mm512_mask_mov_ps(p, under, _mm512_setzero_ps());
    p = _mm512_mask_mov_ps(p, over, _mm512_set1_ps((float)INFINITY));
    return _mm512_mask_mov_ps(p, nan, _mm512_or_ps(x, _mm512_castsi512_ps(_mm512_set1_epi32(0x00400000))));
}
#endif /* SDPA_USE_SLEEF */

/* sdpa__exp16_avx512 for the softmax, whose arguments are s - max <= 0 or
 * NaN: lanes outside k and below -87.33654 give 0, NaN lanes NaN, the rest
 * the same bits as sdpa__exp16_avx512. Without the overflow and NaN masks
 * it compiles to 14 instructions against 25: the clamp keeps -inf out of
 * the reduction, and NaN passes through the polynomial by itself. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 __m512 sdpa__exp16_neg_avx512(__m512 x, __mmask16 k)
{
#ifdef SDPA_USE_SLEEF
    return _mm512_maskz_mov_ps(k, sdpa__exp16_avx512(x));
#else
    __m512 lim = _mm512_set1_ps(-87.33654f);
    __mmask16 keep = _mm512_mask_cmp_ps_mask(k, x, lim, _CMP_NLT_UQ); /* x >= lim or NaN */
    /* NaN x stays NaN (vmaxps returns its second operand) */
    return sdpa__exp16_core_avx512(_mm512_maskz_max_ps(SDPA__ALL16, lim, x), keep);
#endif
}

/* The first min(n, 16) lanes, n >= 0. */
SDPA__TARGET_AVX512 static __mmask16 sdpa__tail_mask_avx512(int64_t n)
{
    return (__mmask16)(n >= 16 ? 0xffffu : (1u << n) - 1u);
}

/* Lane sums added in a fixed order (halves folded: 8 + 8, 4 + 4, 2 + 2,
 * 1 + 1), so results do not depend on threads; four steps of latency
 * rather than sixteen. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 float sdpa__hsum_avx512(__m512 v)
{
    __m256 a = _mm256_add_ps(_mm512_maskz_extractf32x8_ps(0xff, v, 0), _mm512_maskz_extractf32x8_ps(0xff, v, 1));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    b = _mm_add_ps(b, _mm_movehl_ps(b, b));
    return _mm_cvtss_f32(_mm_add_ss(b, _mm_movehdup_ps(b)));
}

/* The largest lane (no lane is NaN), folded in halves as above. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 float sdpa__hmax_avx512(__m512 v)
{
    __m256 a = _mm256_max_ps(_mm512_maskz_extractf32x8_ps(0xff, v, 0), _mm512_maskz_extractf32x8_ps(0xff, v, 1));
    __m128 b = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    b = _mm_max_ps(b, _mm_movehl_ps(b, b));
    return _mm_cvtss_f32(_mm_max_ss(b, _mm_movehdup_ps(b)));
}

SDPA__TARGET_AVX512 static float sdpa__row_max_avx512(const float *s, int64_t n)
{
    __m512 mx = _mm512_set1_ps(-(float)INFINITY);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) mx = _mm512_maskz_max_ps(SDPA__ALL16, _mm512_loadu_ps(s + j), mx); /* NaN in s: skipped */
    if (j < n) {
        __mmask16 k = sdpa__tail_mask_avx512(n - j);
        mx = _mm512_mask_max_ps(mx, k, _mm512_maskz_loadu_ps(k, s + j), mx);
    }
    return sdpa__hmax_avx512(mx);
}

SDPA__TARGET_AVX512 static float sdpa__exp_row_avx512(float *s, int64_t n, float m)
{
    __m512 vm = _mm512_set1_ps(m), acc = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512 e = sdpa__exp16_avx512(_mm512_sub_ps(_mm512_loadu_ps(s + j), vm));
        _mm512_storeu_ps(s + j, e);
        acc = _mm512_add_ps(acc, e);
    }
    if (j < n) { /* masked-off lanes are neither read nor written */
        __mmask16 k = sdpa__tail_mask_avx512(n - j);
        __m512 e = sdpa__exp16_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + j), vm));
        _mm512_mask_storeu_ps(s + j, k, e);
        acc = _mm512_mask_add_ps(acc, k, acc, e);
    }
    return sdpa__hsum_avx512(acc);
}

SDPA__TARGET_AVX512 static void sdpa__scale_row_avx512(float *x, int64_t n, float a)
{
    __m512 va = _mm512_set1_ps(a);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) _mm512_storeu_ps(x + j, _mm512_mul_ps(_mm512_loadu_ps(x + j), va));
    if (j < n) {
        __mmask16 k = sdpa__tail_mask_avx512(n - j);
        _mm512_mask_storeu_ps(x + j, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + j), va));
    }
}

/* sdpa_f32_to_bf16 on 16 lanes (the same bits: round to nearest even, NaN
 * quieted), as 16-bit values. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 __m256i sdpa__bf16_rne_avx512(__m512 x)
{
    __m512i u = _mm512_castps_si512(x);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_maskz_and_epi32(SDPA__ALL16, u, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    __m512i hi = _mm512_maskz_srli_epi32(SDPA__ALL16, u, 16);
    __m512i r = _mm512_maskz_add_epi32(SDPA__ALL16, _mm512_maskz_add_epi32(SDPA__ALL16, u, _mm512_set1_epi32(0x7fff)),
                                       _mm512_maskz_and_epi32(SDPA__ALL16, hi, _mm512_set1_epi32(1)));
    r = _mm512_maskz_srli_epi32(SDPA__ALL16, r, 16);
    r = _mm512_mask_or_epi32(r, nan, hi, _mm512_set1_epi32(0x40));
    return _mm512_maskz_cvtepi32_epi16(SDPA__ALL16, r);
}

/* sdpa__store_row, 16 lanes a step with opmasked tails: F16 by vcvtps2ph
 * (the same rounding and NaN bits as sdpa_f32_to_f16), BF16 as above. */
SDPA__TARGET_AVX512 static void sdpa__store_row_avx512(char *dst, sdpa_dtype t, const float *src, int64_t n, float mul)
{
    __m512 vm = _mm512_set1_ps(mul);
    int64_t i;
    for (i = 0; i < n; i += 16) {
        __mmask16 k = sdpa__tail_mask_avx512(n - i);
        __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, src + i), vm);
        if (t == SDPA_F32)
            _mm512_mask_storeu_ps((float *)(void *)dst + i, k, x);
        else if (t == SDPA_F16)
            _mm256_mask_storeu_epi16((uint16_t *)(void *)dst + i, k,
                                     _mm512_maskz_cvtps_ph(SDPA__ALL16, x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        else
            _mm256_mask_storeu_epi16((uint16_t *)(void *)dst + i, k, sdpa__bf16_rne_avx512(x));
    }
}

/* 16 elements of dtype t at src, widened (lanes outside k read as 0). */
SDPA__TARGET_AVX512 static __m512 sdpa__load16_avx512(const char *src, sdpa_dtype t, __mmask16 k)
{
    if (t == SDPA_F32) return _mm512_maskz_loadu_ps(k, src);
    if (t == SDPA_F16) return _mm512_maskz_cvtph_ps(SDPA__ALL16, _mm256_maskz_loadu_epi16(k, src));
    return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(SDPA__ALL16, _mm512_maskz_cvtepu16_epi32(SDPA__ALL16, _mm256_maskz_loadu_epi16(k, src)), 16));
}

SDPA__TARGET_AVX512 static void sdpa__load_row_avx512(float *dst, const char *src, sdpa_dtype t, int64_t n, float mul)
{
    __m512 vm = _mm512_set1_ps(mul);
    int64_t es = t == SDPA_F32 ? 4 : 2, i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_mul_ps(sdpa__load16_avx512(src + i * es, t, (__mmask16)0xffffu), vm));
    if (i < n) {
        __mmask16 k = sdpa__tail_mask_avx512(n - i);
        _mm512_mask_storeu_ps(dst + i, k, _mm512_mul_ps(sdpa__load16_avx512(src + i * es, t, k), vm));
    }
}

#endif /* SDPA__HAVE_AVX512 */

/* ---- bf16 products on AMX tiles (x86-64; chosen at run time) -------------- */

#ifdef SDPA__HAVE_AMX
/* The kernel computes C[M x N] (+)= (A B2 +) A B (+ A2 B) for bf16 A and
 * A2 [M x 2 K2] (row-major, lda in elements; A2 may be NULL) and B and B2
 * (B2 may be NULL) in pair-packed ("VNNI") form: B[p][n] holds rows 2p and
 * 2p+1 of column n as two bf16 in one 32-bit word (low half first), ldb in
 * words. Products of two bf16 are exact in fp32; the sums are fp32. M, N
 * and 2 K2 are multiples of 32. A2 lets P.V take P's hi and lo parts in one
 * pass over O, B2 V's lo part (int8 mode) in the same pass.
 *
 * AMX: eight tile registers of 16 rows x 64 bytes. tmm0..3 hold a 32 x 32
 * block of C (2 x 2 tiles of 16 x 16 fp32), tmm4/5 two 16-row strips of A
 * (32 bf16 each), then of A2, tmm6/7 two 16-column strips of B2, then of B
 * (16 pairs each); every step is four tdpbf16ps of 16 x 16 x 32 products per
 * product term. The
 * tile configuration is per thread, loaded and released by
 * sdpa__tiles_amx around a task's key blocks. */
typedef struct sdpa__tilecfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} sdpa__tilecfg;

SDPA__TARGET_AMX static void sdpa__tiles_amx(int on)
{
    if (on) {
        sdpa__tilecfg cfg;
        int t;
        memset(&cfg, 0, sizeof cfg);
        cfg.palette = 1;
        for (t = 0; t < 8; t++) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }
        /* not _tile_loadconfig: gcc 12's names only the first 8 bytes as the
         * instruction's operand, so it dropped the memset of the rest as dead
         * stores, and tiles 8..15's rows and colsb came from the stack: #GP
         * (SIGSEGV) on AMX machines with binaries from gcc 12. The whole
         * configuration as the operand keeps every store. */
        __asm__ __volatile__("ldtilecfg %0" ::"m"(cfg));
    } else {
        _tile_release();
    }
}

SDPA__TARGET_AMX static void sdpa__bgemm_amx(int64_t M, int64_t N, int64_t K2, const uint16_t *A, const uint16_t *A2,
                                             int64_t lda, const uint32_t *B, const uint32_t *B2, int64_t ldb, float *C,
                                             int64_t ldc, int accumulate)
{
    int64_t i, j, p, sa = lda * 2, sb = ldb * 4, sc = ldc * 4;
    __asm__ __volatile__("" ::: "memory"); /* the tile loads below read what C code wrote */
    for (i = 0; i < M; i += 32)
        for (j = 0; j < N; j += 32) {
            float *c = C + i * ldc + j;
            const uint16_t *a = A + i * lda, *a2 = A2 ? A2 + i * lda : NULL;
            if (accumulate) {
                _tile_loadd(0, c, sc);
                _tile_loadd(1, c + 16, sc);
                _tile_loadd(2, c + 16 * ldc, sc);
                _tile_loadd(3, c + 16 * ldc + 16, sc);
            } else {
                _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            }
            for (p = 0; p < K2; p += 16) {
                _tile_loadd(4, a + 2 * p, sa);
                _tile_loadd(5, a + 16 * lda + 2 * p, sa);
                if (B2) { /* A.B2 first, while A's tiles serve both */
                    _tile_loadd(6, B2 + p * ldb + j, sb);
                    _tile_loadd(7, B2 + p * ldb + j + 16, sb);
                    _tile_dpbf16ps(0, 4, 6);
                    _tile_dpbf16ps(1, 4, 7);
                    _tile_dpbf16ps(2, 5, 6);
                    _tile_dpbf16ps(3, 5, 7);
                }
                _tile_loadd(6, B + p * ldb + j, sb);
                _tile_loadd(7, B + p * ldb + j + 16, sb);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
                if (a2) {
                    _tile_loadd(4, a2 + 2 * p, sa);
                    _tile_loadd(5, a2 + 16 * lda + 2 * p, sa);
                    _tile_dpbf16ps(0, 4, 6);
                    _tile_dpbf16ps(1, 4, 7);
                    _tile_dpbf16ps(2, 5, 6);
                    _tile_dpbf16ps(3, 5, 7);
                }
            }
            _tile_stored(0, c, sc);
            _tile_stored(1, c + 16, sc);
            _tile_stored(2, c + 16 * ldc, sc);
            _tile_stored(3, c + 16 * ldc + 16, sc);
        }
    __asm__ __volatile__("" ::: "memory"); /* and C code reads what they stored */
}
#endif /* SDPA__HAVE_AMX */

/* ---- bf16 mode: packing (portable C) ------------------------------------------ */

#if defined(SDPA__HAVE_AMX) || defined(SDPA__HAVE_AVX512) || defined(SDPA__TEST_BF16_SCALAR)
/* The bf16 kernels' contract in plain C: the reference the tests hold them
 * to. SDPA__TEST_BF16_SCALAR (tests only) runs bf16 mode with it on any
 * CPU, so machines without AVX512-BF16 or AMX still test the packing. */
SDPA__MAYBE_UNUSED static void sdpa__bgemm_scalar(int64_t M, int64_t N, int64_t K2, const uint16_t *A,
                                                  const uint16_t *A2, int64_t lda, const uint32_t *B,
                                                  const uint32_t *B2, int64_t ldb, float *C, int64_t ldc,
                                                  int accumulate)
{
    int64_t i, j, p;
    int t;
    for (i = 0; i < M; i++)
        for (j = 0; j < N; j++) {
            float acc = accumulate ? C[i * ldc + j] : 0.0f;
            for (p = 0; p < K2; p++)
                for (t = B2 ? 0 : 1; t < (A2 ? 3 : 2); t++) { /* A.B2, A.B, A2.B */
                    const uint16_t *a = (t == 2 ? A2 : A) + i * lda;
                    uint32_t b = (t ? B : B2)[p * ldb + j];
                    acc += sdpa_bf16_to_f32(a[2 * p]) * sdpa_bf16_to_f32((uint16_t)(b & 0xffffu)) +
                           sdpa_bf16_to_f32(a[2 * p + 1]) * sdpa_bf16_to_f32((uint16_t)(b >> 16));
                }
            C[i * ldc + j] = acc;
        }
}
#endif

/* dst[0..n) = the bf16 row src[0..n), then zeros to npad. */
static void sdpa__pack_row_bf16(uint16_t *SDPA__RESTRICT dst, const char *src, int64_t n, int64_t npad)
{
    int64_t i;
    memcpy(dst, src, (size_t)n * 2u);
    for (i = n; i < npad; i++) dst[i] = 0;
}

/* Key j of a block into the pair-packed K^T: Kp[p * ld + j] = k[2p] | k[2p+1] << 16
 * for p0 <= p < dp / 2 (zeros past D). */
static void sdpa__pack_key_bf16(uint32_t *Kp, int64_t ld, int64_t j, const char *src, int64_t p0, int64_t D, int64_t dp)
{
    const uint16_t *k = (const uint16_t *)(const void *)src;
    int64_t p;
    for (p = p0; p < D / 2; p++) Kp[p * ld + j] = (uint32_t)k[2 * p] | (uint32_t)k[2 * p + 1] << 16;
    if (D & 1) Kp[p++ * ld + j] = k[D - 1];
    for (; p < dp / 2; p++) Kp[p * ld + j] = 0;
}

/* The whole K block: keys j < nk at kb + j * ks bytes. */
static void sdpa__pack_k(uint32_t *Kp, int64_t ld, const char *kb, int64_t ks, int64_t nk, int64_t D, int64_t dp)
{
    int64_t j;
    for (j = 0; j < nk; j++) sdpa__pack_key_bf16(Kp, ld, j, kb + j * ks, 0, D, dp);
}


/* src[0..n) split into two bf16 rows, hi = bf16(x) and lo = bf16(x - hi)
 * (x - hi is exact), then zeros to npad: hi + lo carries 16 significant
 * bits, so P.V taken as P_hi.V + P_lo.V loses nothing the F32 tolerance
 * notices (rounding P to one bf16 cost up to 60x the F32 bound and broke
 * even the BF16 bound). NaN stays NaN in hi. Branch-free, so it vectorises. */
SDPA__INLINE uint16_t sdpa__bf16_bits_rne(uint32_t u)
{
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, quiet = (u >> 16) | 0x40u;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}

/* The lo part of x whose hi part is h: bf16(x - h). */
SDPA__INLINE uint16_t sdpa__bf16_lo(float x, uint16_t h)
{
    return sdpa__bf16_bits_rne(sdpa__f32_bits(x - sdpa_bf16_to_f32(h)));
}

static void sdpa__split_row_bf16(uint16_t *SDPA__RESTRICT hi, uint16_t *SDPA__RESTRICT lo,
                                 const float *SDPA__RESTRICT src, int64_t n, int64_t npad)
{
    int64_t j;
    for (j = 0; j < n; j++) {
        uint16_t h = sdpa__bf16_bits_rne(sdpa__f32_bits(src[j]));
        hi[j] = h;
        lo[j] = sdpa__bf16_lo(src[j], h);
    }
    for (; j < npad; j++) hi[j] = lo[j] = 0;
}

/* Two V rows (keys 2i and 2i + 1; r1 NULL: zeros) split as P is into
 * pair-packed hi and lo rows: hi[d] = bf16(r0[d]) | bf16(r1[d]) << 16, lo
 * the same of the rests; zeros from n to npad. Returns nonzero when a value
 * is out of the split's range, an Inf or NaN, one that bf16 rounds to Inf
 * (|v| >= 0x1.ffp127), or one below 2^-100 but not 0, whose lo part AMX
 * would flush as subnormal: the block then takes the F32 product. */
static int sdpa__vsplit_pair(uint32_t *SDPA__RESTRICT hi, uint32_t *SDPA__RESTRICT lo, const float *r0,
                             const float *r1, int64_t n, int64_t npad)
{
    uint32_t out = 0;
    int64_t d;
    for (d = 0; d < n; d++) {
        float x0 = r0[d], x1 = r1 ? r1[d] : 0.0f;
        uint32_t a0 = sdpa__f32_bits(x0) & 0x7fffffffu, a1 = sdpa__f32_bits(x1) & 0x7fffffffu;
        uint16_t h0 = sdpa__bf16_bits_rne(sdpa__f32_bits(x0)), h1 = sdpa__bf16_bits_rne(sdpa__f32_bits(x1));
        uint32_t l0 = sdpa__bf16_lo(x0, h0), l1 = sdpa__bf16_lo(x1, h1);
        out |= (uint32_t)(a0 - 1u < 0x0d7fffffu) | (uint32_t)(a1 - 1u < 0x0d7fffffu) | /* 0 < |v| < 2^-100 */
               (uint32_t)(a0 >= 0x7f7f8000u) | (uint32_t)(a1 >= 0x7f7f8000u);
        hi[d] = (uint32_t)h0 | (uint32_t)h1 << 16;
        lo[d] = l0 | l1 << 16;
    }
    for (; d < npad; d++) hi[d] = lo[d] = 0;
    return out != 0;
}

/* Two V rows (keys 2p and 2p+1; v1 NULL past the block) into one pair-packed
 * row of dvp words; returns nonzero if either holds an Inf or NaN. */
static int sdpa__pack_vpair_bf16(uint32_t *SDPA__RESTRICT dst, const char *v0, const char *v1, int64_t Dv, int64_t dvp)
{
    const uint16_t *a = (const uint16_t *)(const void *)v0, *b = (const uint16_t *)(const void *)v1;
    unsigned bad = 0;
    int64_t n;
    if (b) {
        for (n = 0; n < Dv; n++) {
            dst[n] = (uint32_t)a[n] | (uint32_t)b[n] << 16;
            bad |= (unsigned)((a[n] & 0x7f80u) == 0x7f80u) | (unsigned)((b[n] & 0x7f80u) == 0x7f80u);
        }
    } else {
        for (n = 0; n < Dv; n++) {
            dst[n] = a[n];
            bad |= (unsigned)((a[n] & 0x7f80u) == 0x7f80u);
        }
    }
    for (n = Dv; n < dvp; n++) dst[n] = 0;
    return (int)bad;
}

#ifdef SDPA__HAVE_AVX2
/* The same with the full pairs of eight keys moved as 8 x 8 blocks of 32-bit
 * words by the F32 transpose (pure data movement: the bits pass unchanged);
 * the odd element, the zero padding and leftover keys go one by one. */
SDPA__TARGET_AVX2 static void sdpa__pack_k_avx2(uint32_t *Kp, int64_t ld, const char *kb, int64_t ks, int64_t nk,
                                                int64_t D, int64_t dp)
{
    int64_t j = 0, p, W8 = D / 2 / 8 * 8;
    int c;
    for (; j + 8 <= nk; j += 8) {
        for (p = 0; p < W8; p += 8) {
            __m256 r[8];
            for (c = 0; c < 8; c++) r[c] = _mm256_loadu_ps((const float *)(const void *)(kb + (j + c) * ks + p * 4));
            sdpa__transpose8_avx2(r);
            for (c = 0; c < 8; c++) _mm256_storeu_ps((float *)(void *)(Kp + (p + c) * ld + j), r[c]);
        }
        for (c = 0; c < 8; c++) sdpa__pack_key_bf16(Kp, ld, j + c, kb + (j + c) * ks, W8, D, dp); /* words W8.. */
    }
    for (; j < nk; j++) sdpa__pack_key_bf16(Kp, ld, j, kb + j * ks, 0, D, dp);
}

/* sdpa__bf16_bits_rne on 8 lanes, as 32-bit values. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX2 __m256i sdpa__bf16_rne_avx2(__m256i u)
{
    __m256i one = _mm256_set1_epi32(1);
    __m256i r = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), _mm256_and_si256(_mm256_srli_epi32(u, 16), one)), 16);
    __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
    return _mm256_blendv_epi8(r, quiet, nan);
}

/* 8 32-bit lanes holding 16-bit values, stored as 8 uint16 in order. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX2 void sdpa__store8_u16_avx2(uint16_t *dst, __m256i v)
{
    __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(v, v), 0x08); /* lanes 0-3 and 4-7 low */
    _mm_storeu_si128((__m128i *)(void *)dst, _mm256_castsi256_si128(p));
}

/* sdpa__split_row_bf16, 8 at a time (the same bits). */
SDPA__TARGET_AVX2 static void sdpa__split_row_avx2(uint16_t *hi, uint16_t *lo, const float *src, int64_t n, int64_t npad)
{
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 x = _mm256_loadu_ps(src + j);
        __m256i h = sdpa__bf16_rne_avx2(_mm256_castps_si256(x));
        __m256 rest = _mm256_sub_ps(x, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
        sdpa__store8_u16_avx2(hi + j, h);
        sdpa__store8_u16_avx2(lo + j, sdpa__bf16_rne_avx2(_mm256_castps_si256(rest)));
    }
    sdpa__split_row_bf16(hi + j, lo + j, src + j, n - j, npad - j);
}

/* sdpa__pack_vpair_bf16, 8 columns at a time: two rows interleaved by
 * unpacks, Inf/NaN found by a compare on the exponent bits. */
SDPA__TARGET_AVX2 static int sdpa__pack_vpair_avx2(uint32_t *dst, const char *v0, const char *v1, int64_t Dv, int64_t dvp)
{
    const uint16_t *a = (const uint16_t *)(const void *)v0, *b = (const uint16_t *)(const void *)v1;
    __m128i e = _mm_set1_epi16(0x7f80), bad = _mm_setzero_si128();
    int64_t n = 0;
    for (; n + 8 <= Dv; n += 8) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(a + n));
        __m128i y = b ? _mm_loadu_si128((const __m128i *)(const void *)(b + n)) : _mm_setzero_si128();
        bad = _mm_or_si128(bad, _mm_cmpeq_epi16(_mm_and_si128(x, e), e));
        bad = _mm_or_si128(bad, _mm_cmpeq_epi16(_mm_and_si128(y, e), e));
        _mm_storeu_si128((__m128i *)(void *)(dst + n), _mm_unpacklo_epi16(x, y));
        _mm_storeu_si128((__m128i *)(void *)(dst + n + 4), _mm_unpackhi_epi16(x, y));
    }
    return (_mm_movemask_epi8(bad) != 0) | sdpa__pack_vpair_bf16(dst + n, v0 + n * 2, v1 ? v1 + n * 2 : NULL, Dv - n, dvp - n);
}
#endif

/* ---- dispatch --------------------------------------------------------------- */

SDPA_API const char *sdpa_path_name(sdpa_path path)
{
    switch (path) {
    case SDPA_PATH_AUTO: return "auto";
    case SDPA_PATH_SCALAR: return "scalar";
    case SDPA_PATH_AVX2: return "avx2";
    case SDPA_PATH_AVX512: return "avx512";
    case SDPA_PATH_AMX: return "amx";
    case SDPA_PATH_NEON: return "neon";
    default: return NULL;
    }
}

SDPA_API int sdpa_path_supported(sdpa_path path)
{
    switch (path) {
    case SDPA_PATH_SCALAR: return 1;
#ifdef SDPA__HAVE_AVX2
    case SDPA_PATH_AVX2: return (sdpa__cpu() & SDPA__CPU_AVX2) != 0;
#endif
#ifdef SDPA__HAVE_AVX512
    case SDPA_PATH_AVX512: return (sdpa__cpu() & SDPA__CPU_AVX512) != 0;
#endif
#ifdef SDPA__HAVE_AMX
    case SDPA_PATH_AMX: return (sdpa__cpu() & SDPA__CPU_AMX) != 0;
#endif
#ifdef SDPA__HAVE_NEON
    case SDPA_PATH_NEON: return (sdpa__cpu_arm() & SDPA__ARM_ASIMD) != 0;
#endif
    default: return 0;
    }
}

/* The path for a call: want, else $SDPA_PATH, else the fastest supported. */
static int sdpa__resolve_path(const sdpa_params *pp, sdpa_path want)
{
    if (want == SDPA_PATH_AUTO) {
        const char *env = getenv("SDPA_PATH");
        if (env && *env && strcmp(env, "auto") != 0) {
            int i;
            for (i = SDPA_PATH_SCALAR; i <= SDPA__PATH_LAST; i++)
                if (strcmp(env, sdpa_path_name((sdpa_path)i)) == 0) break;
            if (i > SDPA__PATH_LAST)
                return sdpa__fail(pp, SDPA_ERR_PATH, "sdpa: SDPA_PATH=%.32s is not a path name", env);
            want = (sdpa_path)i;
        }
    }
    if (want == SDPA_PATH_AUTO) { /* the fastest first */
        static const sdpa_path order[] = {SDPA_PATH_AMX, SDPA_PATH_AVX512, SDPA_PATH_AVX2, SDPA_PATH_NEON};
        size_t i;
        for (i = 0; i < sizeof order / sizeof order[0]; i++)
            if (sdpa_path_supported(order[i])) return (int)order[i];
        return SDPA_PATH_SCALAR;
    }
    if (!sdpa_path_name(want))
        return sdpa__fail(pp, SDPA_ERR_PATH, "sdpa: path = %d is not an sdpa_path value", (int)want);
    if (!sdpa_path_supported(want))
        return sdpa__fail(pp, SDPA_ERR_PATH, "sdpa: path %s is not available on this CPU or build", sdpa_path_name(want));
    return (int)want;
}

SDPA_API int sdpa_path_in_use(const sdpa_params *params)
{
    return sdpa__resolve_path(params, params ? params->path : SDPA_PATH_AUTO);
}

static void sdpa__set_kernels(sdpa__plan *P)
{
    P->gemm = sdpa__gemm_scalar;
    P->row_max = sdpa__row_max;
    P->exp_row = sdpa__exp_row;
    P->load_row = sdpa__load_row;
    P->load_kt = sdpa__load_kt;
    P->pack_k = sdpa__pack_k;
    P->pack_v = sdpa__pack_vpair_bf16;
    P->split_p = sdpa__split_row_bf16;
    P->vsplit = sdpa__vsplit_pair;
    P->scale_row = sdpa__scale_row;
    P->store_row = sdpa__store_row;
    P->softmax = sdpa__softmax_block;
    P->tiles = NULL;
#ifdef SDPA__HAVE_AVX2
    if (P->path == SDPA_PATH_AVX2) {
        P->gemm = sdpa__gemm_avx2;
        P->row_max = sdpa__row_max_avx2;
        P->exp_row = sdpa__exp_row_avx2;
        P->load_row = sdpa__load_row_avx2;
        P->load_kt = sdpa__load_kt_avx2;
        P->pack_k = sdpa__pack_k_avx2;
        P->pack_v = sdpa__pack_vpair_avx2;
        P->split_p = sdpa__split_row_avx2;
        P->scale_row = sdpa__scale_row_avx2;
    }
#endif
#ifdef SDPA__HAVE_AVX512
    if (P->path == SDPA_PATH_AVX512 || P->path == SDPA_PATH_AMX) {
        P->gemm = sdpa__gemm_avx512;
        P->row_max = sdpa__row_max_avx512;
        P->exp_row = sdpa__exp_row_avx512;
        P->load_row = sdpa__load_row_avx512;
        P->load_kt = sdpa__load_kt_avx2;
        P->pack_k = sdpa__pack_k_avx2;
        P->pack_v = sdpa__pack_vpair_avx2;
        P->split_p = sdpa__split_row_avx2;
        P->scale_row = sdpa__scale_row_avx512;
        P->store_row = sdpa__store_row_avx512;
        P->softmax = sdpa__softmax_block_avx512;
    }
#endif
    P->bf16 = 0;
    P->bgemm = NULL;
#ifdef SDPA__HAVE_AMX
    /* BF16 inputs on the amx path: bf16 products on AMX tiles. (A vdpbf16ps
     * form for the avx512 path measured 0.36-0.59x of its F32 kernels on a
     * Sapphire Rapids-class Xeon: packing and the split P cost more than the
     * doubled product rate gains; removed.) */
    if (P->q.dtype == SDPA_BF16 && P->path == SDPA_PATH_AMX) {
        P->bf16 = 1;
        P->bgemm = sdpa__bgemm_amx;
        P->tiles = sdpa__tiles_amx;
        P->softmax = sdpa__softmax_block_amx;
    }
#endif
#ifdef SDPA__TEST_BF16_SCALAR
    if (P->q.dtype == SDPA_BF16 && !P->bf16) {
        P->bf16 = 1;
        P->bgemm = sdpa__bgemm_scalar;
    }
#endif
#ifdef SDPA__HAVE_NEON
    if (P->path == SDPA_PATH_NEON) {
        P->gemm = sdpa__gemm_neon;
        P->row_max = sdpa__row_max_neon;
        P->exp_row = sdpa__exp_row_neon;
        P->scale_row = sdpa__scale_row_neon;
        P->load_row = sdpa__load_row_neon;
        P->load_kt = sdpa__load_kt_neon;
    }
#endif
    sdpa__set_kernels_i8(P);
}

/* ---- int8: quantisation (portable C) --------------------------------------- */

/* Symmetric int8 with float scales (see sdpa_quantize_i8): q = rne(x / scale)
 * in [-127, 127], scale = max |x| / 127. -128 is never produced, so every
 * product of two int8 values is at most 127^2 in magnitude: the AVX2 kernel
 * relies on it. */
#define SDPA__I8_TINY 1e-30f   /* max |x| below this: scale 0, q 0 */
#define SDPA__I8_CHUNK 16      /* K blocks per pre-pass task */

/* rne(x * inv) clamped to [-127, 127]; x * inv finite. Adding and removing
 * 1.5 * 2^23 rounds to nearest even (|y| <= 127); the assignments drop any
 * excess precision (C99 with FLT_EVAL_METHOD 2). */
SDPA__INLINE int8_t sdpa__q8(float x, float inv)
{
    float y = x * inv, t;
    y = y > 127.0f ? 127.0f : (y < -127.0f ? -127.0f : y);
    t = y + 12582912.0f;
    y = t - 12582912.0f;
    return (int8_t)(int)y;
}

/* q[0..n) = the int8 form of x[0..n), zeros to npad; returns the scale: 0 when
 * max |x| < SDPA__I8_TINY, NaN when x holds a NaN or Inf (q all zero then). */
static float sdpa__quant_row_i8(int8_t *SDPA__RESTRICT q, const float *SDPA__RESTRICT x, int64_t n, int64_t npad)
{
    float lane[16], amax = 0.0f, inv;
    int64_t i = 0;
    int c, bad;
    for (c = 0; c < 16; c++) lane[c] = 0.0f;
    for (; i + 16 <= n; i += 16)
        for (c = 0; c < 16; c++) {
            float a = fabsf(x[i + c]);
            lane[c] = a > lane[c] ? a : lane[c];
        }
    for (; i < n; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    for (c = 0; c < 16; c++) amax = lane[c] > amax ? lane[c] : amax;
    bad = sdpa__nonfinite_probe(x, n) != 0.0f;
    if (bad || !(amax >= SDPA__I8_TINY)) {
        if (npad > 0) memset(q, 0, (size_t)npad);
        return bad ? (float)NAN : 0.0f;
    }
    inv = 127.0f / amax;
    for (i = 0; i < n; i++) q[i] = sdpa__q8(x[i], inv);
    for (; i < npad; i++) q[i] = 0;
    return amax / 127.0f;
}

/* Checks a rows x cols matrix at base with leading dimension ld (elements of
 * es bytes) and gives its byte range [lo, hi). */
static int sdpa__mat_ok(const sdpa_params *pp, const char *name, const void *base, int64_t rows, int64_t cols,
                        int64_t ld, int64_t es, uintptr_t *lo, uintptr_t *hi)
{
    int64_t n, bytes;
    *lo = *hi = 0;
    if (rows == 0 || cols == 0) return SDPA_OK;
    if (ld < cols) return sdpa__fail(pp, SDPA_ERR_STRIDE, "sdpa: ld of %s (%lld) is below cols (%lld)", name, (long long)ld, (long long)cols);
    if (!base) return sdpa__fail(pp, SDPA_ERR_NULL, "sdpa: %s is NULL", name);
    if (!sdpa__mul_ok(rows - 1, ld, &n) || !sdpa__add_ok(n, cols, &n) || !sdpa__mul_ok(n, es, &bytes) ||
        !sdpa__bytes_ok(bytes) || (uintptr_t)base > UINTPTR_MAX - (uintptr_t)bytes)
        return sdpa__fail(pp, SDPA_ERR_OVERFLOW, "sdpa: %s spans more bytes than addressable", name);
    *lo = (uintptr_t)base;
    *hi = *lo + (uintptr_t)bytes;
    return SDPA_OK;
}

/* The shared checks of sdpa_quantize_i8 and sdpa_dequantize_i8: shapes, the
 * axis, the three ranges (x, q, scale) and that none overlaps the outputs. */
static int sdpa__quant_args(const sdpa_params *pp, const void *x, int64_t ldx, const void *q, int64_t ldq,
                            const float *scale, int64_t rows, int64_t cols, int axis, int x_out)
{
    uintptr_t xl, xh, ql, qh, sl, sh;
    int64_t n;
    int rc;
    if (rows < 0 || cols < 0)
        return sdpa__fail(pp, SDPA_ERR_SHAPE, "sdpa: rows (%lld) and cols (%lld) must be >= 0", (long long)rows, (long long)cols);
    if (axis != SDPA_QUANT_PER_ROW && axis != SDPA_QUANT_PER_COL)
        return sdpa__fail(pp, SDPA_ERR_PARAM, "sdpa: axis = %d is not an sdpa_quant_axis value", axis);
    if ((rc = sdpa__mat_ok(pp, "x", x, rows, cols, ldx, 4, &xl, &xh)) != SDPA_OK) return rc;
    if ((rc = sdpa__mat_ok(pp, "q", q, rows, cols, ldq, 1, &ql, &qh)) != SDPA_OK) return rc;
    n = axis == SDPA_QUANT_PER_ROW ? rows : cols;
    if ((rc = sdpa__mat_ok(pp, "scale", scale, rows && cols ? 1 : 0, n, n, 4, &sl, &sh)) != SDPA_OK) return rc;
    {
        sdpa__tens a, b;
        a.lo = x_out ? xl : ql; a.hi = x_out ? xh : qh;
        b.lo = x_out ? ql : xl; b.hi = x_out ? qh : xh;
        if (sdpa__overlap(&a, b.lo, b.hi)) return sdpa__fail(pp, SDPA_ERR_ALIAS, "sdpa: x and q overlap");
        if (sdpa__overlap(&a, sl, sh)) return sdpa__fail(pp, SDPA_ERR_ALIAS, "sdpa: scale overlaps %s", x_out ? "x" : "q");
        if (!x_out && sdpa__overlap(&b, sl, sh)) return sdpa__fail(pp, SDPA_ERR_ALIAS, "sdpa: scale overlaps x");
    }
    return SDPA_OK;
}

SDPA_API int sdpa_quantize_i8(const float *x, int64_t rows, int64_t cols, int64_t ldx, int8_t *q, int64_t ldq,
                              float *scale, sdpa_quant_axis axis, char *errbuf, size_t errbuf_size)
{
    sdpa_params pp;
    int64_t r, c;
    int rc;
    memset(&pp, 0, sizeof pp);
    pp.errbuf = errbuf;
    pp.errbuf_size = errbuf_size;
    if ((rc = sdpa__quant_args(&pp, x, ldx, q, ldq, scale, rows, cols, (int)axis, 0)) != SDPA_OK) return rc;
    if (rows == 0 || cols == 0) return SDPA_OK;
    for (r = 0; r < rows; r++) /* refuse NaN and Inf before writing anything */
        if (sdpa__nonfinite_probe(x + r * ldx, cols) != 0.0f)
            for (c = 0; c < cols; c++)
                if (x[r * ldx + c] - x[r * ldx + c] != 0.0f)
                    return sdpa__fail(&pp, SDPA_ERR_PARAM, "sdpa: x[%lld][%lld] is NaN or Inf", (long long)r, (long long)c);
    if (axis == SDPA_QUANT_PER_ROW) {
        for (r = 0; r < rows; r++) scale[r] = sdpa__quant_row_i8(q + r * ldq, x + r * ldx, cols, cols);
    } else {
        /* scale[] holds max |x| of each column until the end */
        for (c = 0; c < cols; c++) scale[c] = 0.0f;
        for (r = 0; r < rows; r++)
            for (c = 0; c < cols; c++) scale[c] = fabsf(x[r * ldx + c]) > scale[c] ? fabsf(x[r * ldx + c]) : scale[c];
        for (r = 0; r < rows; r++)
            for (c = 0; c < cols; c++)
                q[r * ldq + c] = sdpa__q8(x[r * ldx + c], scale[c] >= SDPA__I8_TINY ? 127.0f / scale[c] : 0.0f);
        for (c = 0; c < cols; c++) scale[c] = scale[c] >= SDPA__I8_TINY ? scale[c] / 127.0f : 0.0f;
    }
    return SDPA_OK;
}

SDPA_API int sdpa_dequantize_i8(const int8_t *q, int64_t rows, int64_t cols, int64_t ldq, const float *scale,
                                sdpa_quant_axis axis, float *x, int64_t ldx, char *errbuf, size_t errbuf_size)
{
    sdpa_params pp;
    int64_t r, c;
    int rc;
    memset(&pp, 0, sizeof pp);
    pp.errbuf = errbuf;
    pp.errbuf_size = errbuf_size;
    if ((rc = sdpa__quant_args(&pp, x, ldx, q, ldq, scale, rows, cols, (int)axis, 1)) != SDPA_OK) return rc;
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c++)
            x[r * ldx + c] = (float)q[r * ldq + c] * (axis == SDPA_QUANT_PER_ROW ? scale[r] : scale[c]);
    return SDPA_OK;
}

/* int8 mode: the per-token scales of SDPA_I8 q and k, [batch, heads,
 * seq_len] floats; out and lse may not overlap them. */
static int sdpa__i8_scales(sdpa__plan *P, const sdpa_params *p, const sdpa_params *pp)
{
    int w;
    for (w = 0; w < 2; w++) {
        const sdpa__tens *t = w ? &P->k : &P->q;
        const float *sc = w ? p->k_scale : p->q_scale;
        const char *nm = w ? "k_scale" : "q_scale";
        int64_t n, bytes;
        uintptr_t lo, hi;
        sdpa__tens lse;
        if (t->dtype != SDPA_I8) continue;
        if (!sdpa__mul_ok(t->n[0], t->n[1], &n) || !sdpa__mul_ok(n, t->n[2], &n) || !sdpa__mul_ok(n, 4, &bytes) ||
            !sdpa__bytes_ok(bytes))
            return sdpa__fail(pp, SDPA_ERR_OVERFLOW, "sdpa: %s size overflows", nm);
        if (n > 0 && !sc) return sdpa__fail(pp, SDPA_ERR_NULL, "sdpa: %s is NULL but %s is SDPA_I8", nm, w ? "k" : "q");
        lo = (uintptr_t)sc;
        if (n > 0 && lo > UINTPTR_MAX - (uintptr_t)bytes)
            return sdpa__fail(pp, SDPA_ERR_OVERFLOW, "sdpa: %s wraps around the address space", nm);
        hi = n > 0 ? lo + (uintptr_t)bytes : lo;
        lse.lo = (uintptr_t)P->lse;
        lse.hi = P->lse ? lse.lo + (uintptr_t)(P->B * P->Hq * P->Lq) * 4u : lse.lo; /* checked before */
        if (sdpa__overlap(&P->o, lo, hi) || sdpa__overlap(&lse, lo, hi))
            return sdpa__fail(pp, SDPA_ERR_ALIAS, "sdpa: out or lse overlaps %s", nm);
        if (w) P->kscale = sc; else P->qscale = sc;
    }
    return SDPA_OK;
}

/* An SDPA_I8 row into the kernels' form: -128 read as -127, zeros to npad. */
static void sdpa__copy_row_i8(int8_t *SDPA__RESTRICT dst, const char *src, int64_t n, int64_t npad)
{
    const int8_t *x = (const int8_t *)(const void *)src;
    int64_t i;
    for (i = 0; i < n; i++) dst[i] = (int8_t)(x[i] < -127 ? -127 : x[i]);
    for (; i < npad; i++) dst[i] = 0;
}

/* ---- int8: Q.K^T kernels ------------------------------------------------------ */

/* One row's scores from its int32 products: s[j] = si[j] (a ks[j]) + c,
 * a the row's scale, ks the keys' scales, c the smoothing's shift. */
static void sdpa__i8_deq(float *SDPA__RESTRICT s, const int32_t *SDPA__RESTRICT si, const float *SDPA__RESTRICT ks,
                         float a, float c, int64_t n)
{
    int64_t j;
    for (j = 0; j < n; j++) s[j] = (float)si[j] * (a * ks[j]) + c;
}

#ifdef SDPA__HAVE_AVX512
/* The same on zmm registers, rounded as it: the product by the explicit-
 * rounding builtin, which gcc outside ISO mode cannot fuse with the add. */
SDPA__TARGET_AVX512 static void sdpa__i8_deq_avx512(float *s, const int32_t *si, const float *ks, float a, float c,
                                                    int64_t n)
{
    const __m512 va = _mm512_set1_ps(a), vc = _mm512_set1_ps(c);
    int64_t j;
    for (j = 0; j < n; j += 16) {
        __mmask16 k = sdpa__tail_mask_avx512(n - j);
        __m512 x = _mm512_maskz_cvtepi32_ps(k, _mm512_maskz_loadu_epi32(k, si + j)); /* maskz: see the softmax body */
        __m512 f = _mm512_mul_ps(va, _mm512_maskz_loadu_ps(k, ks + j));
        x = _mm512_maskz_mul_round_ps(k, x, f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm512_mask_storeu_ps(s + j, k, _mm512_add_ps(x, vc));
    }
}
#endif

/* C[M x N] = A B in int32, exactly. A: M rows of 4 P4 int8 (lda bytes apart).
 * B quad-packed: the 4 bytes at B + 4 (p ldb + n) are rows 4p..4p+3 of
 * column n. bsum[n] = the sum of column n (for kernels that offset A).
 * M % 4 == 0, N % 16 == 0, P4 % 4 == 0; entries in [-127, 127] and
 * 4 P4 <= SDPA__I8_MAXD, so no sum leaves int32. In int8 mode A is the
 * quantised Q tile, B a K block (column n = key n), C the scores. */
typedef void (*sdpa__qk_i8_fn)(int64_t M, int64_t N, int64_t P4, const int8_t *A, int64_t lda, const int8_t *B,
                               int64_t ldb, const int32_t *bsum, int32_t *C, int64_t ldc);

/* The reference: plain C, a 4 x 16 block per step. A pair of products fits
 * int16 (entries in [-127, 127]), and int16 products are what SSE2
 * multiplies (pmullw): written so, the loop vectorises, about 3x the plain
 * int32 form. */
static void sdpa__qk_i8_scalar(int64_t M, int64_t N, int64_t P4, const int8_t *A, int64_t lda, const int8_t *B,
                               int64_t ldb, const int32_t *bsum, int32_t *C, int64_t ldc)
{
    int64_t i, j, p;
    int c, r;
    (void)bsum;
    for (i = 0; i < M; i += 4)
        for (j = 0; j < N; j += 16) {
            int32_t acc[4][16];
            for (r = 0; r < 4; r++)
                for (c = 0; c < 16; c++) acc[r][c] = 0;
            for (p = 0; p < P4; p++) {
                const int8_t *b = B + 4 * (p * ldb + j);
                int16_t b0[16], b1[16], b2[16], b3[16];
                for (c = 0; c < 16; c++) {
                    b0[c] = b[4 * c];
                    b1[c] = b[4 * c + 1];
                    b2[c] = b[4 * c + 2];
                    b3[c] = b[4 * c + 3];
                }
                for (r = 0; r < 4; r++) {
                    const int8_t *a = A + (i + r) * lda + 4 * p;
                    int16_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
                    for (c = 0; c < 16; c++) /* a pair of products: |sum| <= 2 * 127^2 < 2^15 */
                        acc[r][c] += (int32_t)(int16_t)(a0 * b0[c] + a1 * b1[c]) + (int16_t)(a2 * b2[c] + a3 * b3[c]);
                }
            }
            for (r = 0; r < 4; r++)
                for (c = 0; c < 16; c++) C[(i + r) * ldc + j + c] = acc[r][c];
        }
}

#ifdef SDPA__HAVE_AVX2
/* A 4 x 16 block in 8 ymm accumulators of int32. vpmaddubsw multiplies
 * unsigned by signed bytes and adds pairs into int16 with saturation, so the
 * signs are moved: |a| (unsigned) times sign(a) b. The products are a b
 * exactly, each at most 127^2 (no -128: see SDPA__I8_TINY's note), so a
 * pair sums to at most 32258 < 32767: it never saturates. vpmaddwd by ones
 * then adds the pairs of each key's quad into int32. Per quad step and row:
 * one broadcast, one vpabsb, and per 8 keys vpsignb, vpmaddubsw, vpmaddwd,
 * vpaddd (32 products). */
SDPA__TARGET_AVX2 static void sdpa__qk_i8_avx2(int64_t M, int64_t N, int64_t P4, const int8_t *A, int64_t lda,
                                               const int8_t *B, int64_t ldb, const int32_t *bsum, int32_t *C, int64_t ldc)
{
    const __m256i ones = _mm256_set1_epi16(1);
    int64_t i, j, p;
    (void)bsum;
    for (i = 0; i < M; i += 4)
        for (j = 0; j < N; j += 16) {
            __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
                    c31 = c00;
            const int8_t *b = B + 4 * j, *a = A + i * lda;
            for (p = 0; p < P4; p++, b += 4 * ldb, a += 4) {
                __m256i k0 = _mm256_loadu_si256((const __m256i *)(const void *)b);
                __m256i k1 = _mm256_loadu_si256((const __m256i *)(const void *)(b + 32));
#define SDPA__I8_ROW(r, x0, x1)                                                                               \
    do {                                                                                                      \
        int32_t w;                                                                                            \
        __m256i s, u;                                                                                         \
        memcpy(&w, a + (r) * lda, 4);                                                                         \
        s = _mm256_set1_epi32(w);                                                                             \
        u = _mm256_abs_epi8(s);                                                                               \
        x0 = _mm256_add_epi32(x0, _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_sign_epi8(k0, s)), ones)); \
        x1 = _mm256_add_epi32(x1, _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_sign_epi8(k1, s)), ones)); \
    } while (0)
                SDPA__I8_ROW(0, c00, c01);
                SDPA__I8_ROW(1, c10, c11);
                SDPA__I8_ROW(2, c20, c21);
                SDPA__I8_ROW(3, c30, c31);
#undef SDPA__I8_ROW
            }
            {
                int32_t *c = C + i * ldc + j;
                _mm256_storeu_si256((__m256i *)(void *)c, c00);
                _mm256_storeu_si256((__m256i *)(void *)(c + 8), c01);
                _mm256_storeu_si256((__m256i *)(void *)(c + ldc), c10);
                _mm256_storeu_si256((__m256i *)(void *)(c + ldc + 8), c11);
                _mm256_storeu_si256((__m256i *)(void *)(c + 2 * ldc), c20);
                _mm256_storeu_si256((__m256i *)(void *)(c + 2 * ldc + 8), c21);
                _mm256_storeu_si256((__m256i *)(void *)(c + 3 * ldc), c30);
                _mm256_storeu_si256((__m256i *)(void *)(c + 3 * ldc + 8), c31);
            }
        }
}
#endif

#ifdef SDPA__HAVE_AVX512
#define SDPA__TARGET_VNNI __attribute__((target("avx512vnni,avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
/* AVX512-VNNI: vpdpbusd adds four u8 x s8 products into each int32 lane,
 * without saturation. A is made unsigned by a + 128 (xor 0x80 per byte), so
 * the sums are a.b + 128 sum(b); bsum takes the second term off. Every
 * partial sum is below 255 * 127 * 65536 < 2^31. A 4 x 16W block in 4W zmm
 * accumulators; per quad step W loads of B, 4 broadcasts, 4W vpdpbusd (64
 * products each). */
static inline __attribute__((always_inline)) SDPA__TARGET_VNNI void
sdpa__qk_i8_block_vnni(const int W, int64_t P4, const int8_t *a, int64_t lda, const int8_t *b, int64_t ldb,
                       const int32_t *bsum, int32_t *c, int64_t ldc)
{
    const __m512i flip = _mm512_set1_epi32((int)0x80808080u);
    __m512i acc[4][2];
    int64_t p;
    int r, w;
    SDPA__UNROLL for (r = 0; r < 4; r++) SDPA__UNROLL for (w = 0; w < W; w++) acc[r][w] = _mm512_setzero_si512();
    for (p = 0; p < P4; p++, b += 4 * ldb) {
        __m512i b0 = _mm512_loadu_si512((const void *)b), b1 = W > 1 ? _mm512_loadu_si512((const void *)(b + 64)) : b0;
        SDPA__UNROLL for (r = 0; r < 4; r++) {
            int32_t x;
            __m512i u;
            memcpy(&x, a + r * lda + 4 * p, 4);
            u = _mm512_xor_si512(_mm512_set1_epi32(x), flip);
            acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], u, b0);
            if (W > 1) acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], u, b1);
        }
    }
    SDPA__UNROLL for (w = 0; w < W; w++) {
        __m512i off = _mm512_maskz_slli_epi32(SDPA__ALL16, _mm512_loadu_si512((const void *)(bsum + 16 * w)), 7);
        SDPA__UNROLL for (r = 0; r < 4; r++)
            _mm512_storeu_si512((void *)(c + r * ldc + 16 * w), _mm512_sub_epi32(acc[r][w], off));
    }
}

SDPA__TARGET_VNNI static void sdpa__qk_i8_vnni(int64_t M, int64_t N, int64_t P4, const int8_t *A, int64_t lda,
                                               const int8_t *B, int64_t ldb, const int32_t *bsum, int32_t *C, int64_t ldc)
{
    int64_t i, j;
    for (i = 0; i < M; i += 4) {
        for (j = 0; j + 32 <= N; j += 32)
            sdpa__qk_i8_block_vnni(2, P4, A + i * lda, lda, B + 4 * j, ldb, bsum + j, C + i * ldc + j, ldc);
        if (j < N) sdpa__qk_i8_block_vnni(1, P4, A + i * lda, lda, B + 4 * j, ldb, bsum + j, C + i * ldc + j, ldc);
    }
}
#endif

#ifdef SDPA__HAVE_AMX
/* AMX-INT8 (the amx path): tdpbssd multiplies signed bytes as they are, so
 * neither the flip nor bsum is needed, and the K block's quad packing is the
 * B tile's layout already: tile row p holds quad p of 16 keys (64 bytes).
 * Per step of 64 dims, C tiles of 16 x 16 int32 in a 2 x 2 block (1 x 1 at
 * an edge) gain 16 x 16 x 64 products each. Exact, as every kernel here:
 * the same int32 sums as the others, bit for bit. Needs M, N and P4
 * multiples of 16 and the tile configuration of sdpa__tiles_amx (every
 * tile 16 rows of 64 bytes), loaded by the caller. */
SDPA__TARGET_AMX static void sdpa__qk_i8_amx(int64_t M, int64_t N, int64_t P4, const int8_t *A, int64_t lda,
                                             const int8_t *B, int64_t ldb, const int32_t *bsum, int32_t *C, int64_t ldc)
{
    int64_t i, j, p, sb = 4 * ldb, sc = 4 * ldc;
    (void)bsum;
    __asm__ __volatile__("" ::: "memory"); /* the tile loads below read what C code wrote */
    for (i = 0; i < M; i += 32) {
        const int two_i = i + 32 <= M;
        for (j = 0; j < N; j += 32) {
            const int two_j = j + 32 <= N;
            int32_t *c = C + i * ldc + j;
            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            for (p = 0; p < P4; p += 16) {
                const int8_t *a = A + i * lda + 4 * p, *b = B + 4 * (p * ldb + j);
                _tile_loadd(4, a, lda);
                _tile_loadd(6, b, sb);
                _tile_dpbssd(0, 4, 6);
                if (two_j) {
                    _tile_loadd(7, b + 64, sb);
                    _tile_dpbssd(1, 4, 7);
                }
                if (two_i) {
                    _tile_loadd(5, a + 16 * lda, lda);
                    _tile_dpbssd(2, 5, 6);
                    if (two_j) _tile_dpbssd(3, 5, 7);
                }
            }
            _tile_stored(0, c, sc);
            if (two_j) _tile_stored(1, c + 16, sc);
            if (two_i) _tile_stored(2, c + 16 * ldc, sc);
            if (two_i && two_j) _tile_stored(3, c + 16 * ldc + 16, sc);
        }
    }
    __asm__ __volatile__("" ::: "memory"); /* and C code reads what they stored */
}
#endif

#ifdef SDPA__HAVE_NEON
/* Without dotprod (cortex-a53, a72): smull multiplies 8 byte pairs into
 * int16 (|a b| <= 2^14, exact), sadalp adds neighbouring pairs into int32;
 * a quad of one key leaves two halves in adjacent lanes, added by addp at the
 * end. A 4 x 8 block in 16 accumulators; per quad step and row one
 * broadcast quad, per 4 keys smull, smull2 and two sadalp. */
static void sdpa__qk_i8_neon(int64_t M, int64_t N, int64_t P4, const int8_t *A, int64_t lda, const int8_t *B,
                             int64_t ldb, const int32_t *bsum, int32_t *C, int64_t ldc)
{
    int64_t i, j, p;
    int r;
    (void)bsum;
    for (i = 0; i < M; i += 4)
        for (j = 0; j < N; j += 8) {
            int32x4_t lo[4][2], hi[4][2];
            const int8_t *b = B + 4 * j;
            for (r = 0; r < 4; r++) lo[r][0] = lo[r][1] = hi[r][0] = hi[r][1] = vdupq_n_s32(0);
            for (p = 0; p < P4; p++, b += 4 * ldb) {
                int8x16_t k0 = vld1q_s8(b), k1 = vld1q_s8(b + 16);
                for (r = 0; r < 4; r++) {
                    int32_t x;
                    int8x16_t q;
                    memcpy(&x, A + (i + r) * lda + 4 * p, 4);
                    q = vreinterpretq_s8_s32(vdupq_n_s32(x));
                    lo[r][0] = vpadalq_s16(lo[r][0], vmull_s8(vget_low_s8(k0), vget_low_s8(q)));
                    hi[r][0] = vpadalq_s16(hi[r][0], vmull_high_s8(k0, q));
                    lo[r][1] = vpadalq_s16(lo[r][1], vmull_s8(vget_low_s8(k1), vget_low_s8(q)));
                    hi[r][1] = vpadalq_s16(hi[r][1], vmull_high_s8(k1, q));
                }
            }
            for (r = 0; r < 4; r++) {
                vst1q_s32(C + (i + r) * ldc + j, vpaddq_s32(lo[r][0], hi[r][0]));
                vst1q_s32(C + (i + r) * ldc + j + 4, vpaddq_s32(lo[r][1], hi[r][1]));
            }
        }
}

/* With dotprod (FEAT_DotProd, ARMv8.2+, flagged by HWCAP_ASIMDDP): sdot
 * adds four s8 x s8 products into each int32 lane; the by-element form takes
 * the quad of A from a lane of a 16-byte row load. A 4 x 16 block in 16
 * accumulators; per 4 quad steps 4 row loads, 16 loads of B, 64 sdot. gcc
 * builds it with a target attribute; clang 14 has no such form for the
 * intrinsic, so clang builds use it only when told to target dotprod. */
#if defined(__ARM_FEATURE_DOTPROD)
#define SDPA__HAVE_SDOT 1
#define SDPA__TARGET_DOTPROD
#elif defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 9
#define SDPA__HAVE_SDOT 1
#define SDPA__TARGET_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

#ifdef SDPA__HAVE_SDOT
SDPA__TARGET_DOTPROD static void sdpa__qk_i8_sdot(int64_t M, int64_t N, int64_t P4, const int8_t *A, int64_t lda,
                                                  const int8_t *B, int64_t ldb, const int32_t *bsum, int32_t *C, int64_t ldc)
{
    int64_t i, j, p;
    int r, w;
    (void)bsum;
    for (i = 0; i < M; i += 4)
        for (j = 0; j < N; j += 16) {
            int32x4_t acc[4][4];
            for (r = 0; r < 4; r++)
                for (w = 0; w < 4; w++) acc[r][w] = vdupq_n_s32(0);
            for (p = 0; p < P4; p += 4) {
                int8x16_t a[4];
                const int8_t *b = B + 4 * (p * ldb + j);
                for (r = 0; r < 4; r++) a[r] = vld1q_s8(A + (i + r) * lda + 4 * p);
#define SDPA__SDOT_STEP(l)                                                                   \
    do {                                                                                     \
        for (w = 0; w < 4; w++) {                                                            \
            int8x16_t k = vld1q_s8(b + 4 * ((l) * ldb + 4 * w));                             \
            for (r = 0; r < 4; r++) acc[r][w] = vdotq_laneq_s32(acc[r][w], k, a[r], (l));    \
        }                                                                                    \
    } while (0)
                SDPA__SDOT_STEP(0);
                SDPA__SDOT_STEP(1);
                SDPA__SDOT_STEP(2);
                SDPA__SDOT_STEP(3);
#undef SDPA__SDOT_STEP
            }
            for (r = 0; r < 4; r++)
                for (w = 0; w < 4; w++) vst1q_s32(C + (i + r) * ldc + j + 4 * w, acc[r][w]);
        }
}
#endif
#endif /* SDPA__HAVE_NEON */

static void sdpa__set_kernels_i8(sdpa__plan *P)
{
    P->qk_i8 = sdpa__qk_i8_scalar;
    P->i8_deq = sdpa__i8_deq;
    if (!P->i8) return;
    P->bf16 = 0; /* int8 mode takes the place of bf16 mode's Q.K^T */
    P->bgemm = NULL;
    P->tiles = NULL;
#ifdef SDPA__HAVE_AVX2
    if (P->path == SDPA_PATH_AVX2 || P->path == SDPA_PATH_AVX512 || P->path == SDPA_PATH_AMX) P->qk_i8 = sdpa__qk_i8_avx2;
#endif
#ifdef SDPA__HAVE_AVX512
    if (P->path == SDPA_PATH_AVX512 || P->path == SDPA_PATH_AMX) P->i8_deq = sdpa__i8_deq_avx512;
    if ((P->path == SDPA_PATH_AVX512 || P->path == SDPA_PATH_AMX) && (sdpa__cpu() & SDPA__CPU_VNNI))
        P->qk_i8 = sdpa__qk_i8_vnni;
#endif
#ifdef SDPA__HAVE_AVX512
    /* SDPA_PRECISION_INT8_QK_BF16_PV on the avx512 path of AMD CPUs with
     * AVX512-BF16: P.V as one bf16 product (P and V each rounded once) on
     * vdpbf16ps, which Zen 4 issues at the FMA's rate with twice its
     * products (L 2048, D 128, one thread: 1.91-1.92x F32 against
     * INT8_QK's 1.39-1.41x). Sapphire Rapids issues it at half the FMA's rate: there the
     * avx512 path measured 0.78-0.85x F32 against INT8_QK's 1.08-1.11x, so
     * other CPUs' avx512 path computes the mode as INT8_QK. */
    if (P->p1 && P->path == SDPA_PATH_AVX512 && (sdpa__cpu() & SDPA__CPU_BF16) && (sdpa__cpu() & SDPA__CPU_AMD)) {
        P->bf16 = 1;
        P->bgemm = sdpa__bgemm_avx512bf;
        P->softmax = sdpa__softmax_block_avx512bf;
        P->vsplit = sdpa__vpack_hi_avx512bf;
    }
#endif
#ifdef SDPA__HAVE_AMX
    /* the amx path: P.V on AMX-BF16 tiles with V split as P is (bf16 mode's
     * P.V, see sdpa__pack_v_split), Q.K^T on AMX-INT8 tiles where the CPU
     * has them */
    if (P->path == SDPA_PATH_AMX) {
        P->bf16 = 1;
        P->bgemm = sdpa__bgemm_amx;
        P->tiles = sdpa__tiles_amx;
        P->softmax = sdpa__softmax_block_amx;
        P->vsplit = sdpa__vsplit_pair_amx;
        if (sdpa__cpu() & SDPA__CPU_AMXI8) P->qk_i8 = sdpa__qk_i8_amx;
    }
#endif
#ifdef SDPA__TEST_BF16_SCALAR
    if (!P->bf16) { /* the tests' plain-C emulation of that P.V, on any path */
        P->bf16 = 1;
        P->bgemm = sdpa__bgemm_scalar;
    }
#endif
#ifdef SDPA__HAVE_NEON
    if (P->path == SDPA_PATH_NEON) {
        P->qk_i8 = sdpa__qk_i8_neon;
#ifdef SDPA__HAVE_SDOT
        if (sdpa__cpu_arm() & SDPA__ARM_DOTPROD) P->qk_i8 = sdpa__qk_i8_sdot;
#endif
    }
#endif
}

/* ---- the tiled forward ---------------------------------------------------- */

typedef struct sdpa__ws {
    float *Q, *Kt, *S, *V, *O, *m, *l;
    float *mn;         /* [tqp] the zmm softmax's new row maxima */
    uint16_t *Qb, *Pb; /* bf16 mode: Q [tqp][dp]; P [2][tqp][tkp], hi then lo */
    uint32_t *Kp, *Vp; /* bf16 pairs: K^T [dp/2][tkp], V [tkp/2][dvp] */
    uint32_t *Vl;      /* int8 mode with bf16 P.V: V's lo parts, as Vp */
    int8_t *Qi;        /* int8 mode: Q [tqp][dq], its scales qs and shifts qc, scores Si [tqp][tkp] */
    float *qs, *qc;
    int32_t *Si;
    int64_t *h, *i, *lo, *hi;
} sdpa__ws;

static void sdpa__ws_carve(const sdpa__plan *P, char *base, sdpa__ws *W)
{
    float *f = (float *)(void *)base;
    W->Q = f;  f += SDPA__ROUND_UP(P->tqp * P->D, 16);
    W->Kt = f; f += SDPA__ROUND_UP(P->D * P->tkp, 16);
    W->S = f;  f += SDPA__ROUND_UP(P->tqp * P->tkp, 16);
    W->V = f;  f += SDPA__ROUND_UP(P->tk * P->dvp, 16);
    W->O = f;  f += SDPA__ROUND_UP(P->tqp * P->dvp, 16);
    W->m = f;  W->mn = f + P->tqp; f += SDPA__ROUND_UP(2 * P->tqp, 16);
    W->l = f;  f += SDPA__ROUND_UP(P->tqp, 16);
    W->Qb = W->Pb = NULL;
    W->Kp = W->Vp = W->Vl = NULL;
    if (P->bf16 && !P->i8) {
        W->Qb = (uint16_t *)(void *)f; f += SDPA__ROUND_UP(P->tqp * P->dp / 2, 16);
        W->Kp = (uint32_t *)(void *)f; f += SDPA__ROUND_UP(P->dp / 2 * P->tkp, 16);
    }
    if (P->bf16) {
        W->Pb = (uint16_t *)(void *)f; f += SDPA__ROUND_UP(P->tqp * P->tkp, 16);
        W->Vp = (uint32_t *)(void *)f; f += SDPA__ROUND_UP(P->tkp / 2 * P->dvp, 16);
    }
    W->Qi = NULL;
    W->qs = W->qc = NULL;
    W->Si = NULL;
    if (P->i8) {
        W->Qi = (int8_t *)(void *)f;   f += SDPA__ROUND_UP(P->tqp * P->dq / 4, 16);
        W->qs = f;                     f += SDPA__ROUND_UP(P->tqp, 16);
        W->qc = f;                     f += SDPA__ROUND_UP(P->tqp, 16);
        W->Si = (int32_t *)(void *)f;  f += SDPA__ROUND_UP(P->tqp * P->tkp, 16);
    }
    if (P->bf16 && P->i8) {
        W->Vl = (uint32_t *)(void *)f; f += SDPA__ROUND_UP(P->tkp / 2 * P->dvp, 16);
    }
    W->h = (int64_t *)(void *)f;
    W->i = W->h + P->tqp;
    W->lo = W->i + P->tqp;
    W->hi = W->lo + P->tqp;
}

/* ---- int8 mode: the K pre-pass and the scores ---------------------------------- */

/* K is smoothed, quantised and packed once per call, before the tiles run:
 * for each sequence s and kv head g, its keys in blocks of tk (aligned as the
 * tiles read them), each block [dq/4][tkp] quads, then tkp scales and tkp
 * key sums (padding keys: zeros). Blocks of (s, g) are consecutive; blk0[s]
 * is the first block of sequence s (kv heads included), chk0[s] its first
 * pre-pass task. A task is a chunk of SDPA__I8_CHUNK blocks of one (s, g):
 * the first pass sums its keys (kpart), the second takes the mean from those
 * sums (in chunk order) and quantises its blocks. The chunks depend on tk
 * only, so the result is the same for any thread count. */


/* Blocks and chunks of a sequence with vk keys, per kv head. */
static int64_t sdpa__i8_nblk(const sdpa__plan *P, int64_t vk) { return (vk + P->tk - 1) / P->tk; }
static int64_t sdpa__i8_nchk(const sdpa__plan *P, int64_t vk)
{
    return (sdpa__i8_nblk(P, vk) + SDPA__I8_CHUNK - 1) / SDPA__I8_CHUNK;
}

/* Sizes the pre-pass: block and chunk counts and the bytes of its memory. */
static int sdpa__i8_plan(sdpa__plan *P, const sdpa_params *pp)
{
    int64_t s, nb = 0, nc = 0, t, bytes, part;
    P->kbytes = P->dq * P->tkp + 8 * P->tkp;
    for (s = 0; s < P->nseq; s++) {
        sdpa__seq sq;
        sdpa__seq_get(P, s, &sq);
        if (!sdpa__mul_ok(sdpa__i8_nblk(P, sq.vk), P->Hkv, &t) || !sdpa__add_ok(nb, t, &nb) ||
            !sdpa__mul_ok(sdpa__i8_nchk(P, sq.vk), P->Hkv, &t) || !sdpa__add_ok(nc, t, &nc))
            return sdpa__fail(pp, SDPA_ERR_OVERFLOW, "sdpa: int8 mode: block count overflows");
    }
    P->nblk = nb;
    P->nchk = nc;
    /* blk0, chk0; K blocks; chunk sums [nchk][D]; means [nseq * Hkv][D] */
    bytes = 2 * SDPA__ROUND_UP((P->nseq + 1) * 8, 64);
    if (!sdpa__mul_ok(nb, P->kbytes, &part) || !sdpa__add_ok(bytes, part, &bytes) ||
        !sdpa__mul_ok(nc, P->D, &part) || part > INT64_MAX / 8 || !sdpa__add_ok(bytes, SDPA__ROUND_UP(part * 4, 64), &bytes) ||
        !sdpa__mul_ok(P->nseq, P->Hkv, &part) || !sdpa__mul_ok(part, P->D, &part) || part > INT64_MAX / 8 ||
        !sdpa__add_ok(bytes, SDPA__ROUND_UP(part * 4, 64), &bytes) || !sdpa__bytes_ok(bytes))
        return sdpa__fail(pp, SDPA_ERR_OVERFLOW, "sdpa: int8 mode: scratch size overflows");
    P->i8_bytes = (size_t)bytes;
    return SDPA_OK;
}

/* Lays the pre-pass memory out at base (64-byte aligned) and fills blk0, chk0. */
static void sdpa__i8_carve(sdpa__plan *P, char *base)
{
    int64_t s, nb = 0, nc = 0, arr = SDPA__ROUND_UP((P->nseq + 1) * 8, 64);
    P->blk0 = (int64_t *)(void *)base;
    P->chk0 = (int64_t *)(void *)(base + arr);
    P->kq = base + 2 * arr;
    P->kpart = (float *)(void *)(P->kq + P->nblk * P->kbytes);
    P->kmean = P->kpart + SDPA__ROUND_UP(P->nchk * P->D, 16);
    for (s = 0; s < P->nseq; s++) {
        sdpa__seq sq;
        sdpa__seq_get(P, s, &sq);
        P->blk0[s] = nb;
        P->chk0[s] = nc;
        nb += sdpa__i8_nblk(P, sq.vk) * P->Hkv;
        nc += sdpa__i8_nchk(P, sq.vk) * P->Hkv;
    }
    P->blk0[P->nseq] = nb;
    P->chk0[P->nseq] = nc;
}

/* Pre-pass task t: its sequence, kv head g, chunk c and the chunks per head. */
static void sdpa__i8_task_get(const sdpa__plan *P, int64_t t, sdpa__seq *sq, int64_t *g, int64_t *c, int64_t *nc)
{
    int64_t lo = sdpa__prefix_find(P->chk0, P->nseq, t);
    sdpa__seq_get(P, lo, sq);
    *nc = sdpa__i8_nchk(P, sq->vk);
    *g = (t - P->chk0[lo]) / *nc;
    *c = (t - P->chk0[lo]) % *nc;
}

static const char *sdpa__i8_key(const sdpa__plan *P, const sdpa__seq *sq, int64_t g, int64_t j)
{
    return P->k.data + (sq->bt * P->k.s[0] + g * P->k.s[1] + (sq->k0 + j) * P->k.s[2]) * P->k.esize;
}

/* First pass: kpart[t] = the sum of the chunk's keys (fp32, in key order). */
static void sdpa__i8_sum_task(void *ctx, int64_t t, int worker)
{
    const sdpa__plan *P = (const sdpa__plan *)ctx;
    sdpa__ws W;
    sdpa__seq sq;
    int64_t g, c, nc, j, j1, d, D = P->D;
    float *sum = P->kpart + t * D;
    if (t < 0 || t >= P->nchk || worker < 0 || worker >= P->n_workers) return;
    for (d = 0; d < D; d++) sum[d] = 0.0f;
    if (!P->i8_smooth) return;
    sdpa__ws_carve(P, P->ws + (size_t)worker * P->ws_worker, &W);
    sdpa__i8_task_get(P, t, &sq, &g, &c, &nc);
    j1 = SDPA__MIN(sq.vk, (c + 1) * SDPA__I8_CHUNK * P->tk);
    for (j = c * SDPA__I8_CHUNK * P->tk; j < j1; j++) {
        P->load_row(W.Q, sdpa__i8_key(P, &sq, g, j), P->k.dtype, D, 1.0f);
        for (d = 0; d < D; d++) sum[d] += W.Q[d];
    }
}

/* The mean key of (sequence, g) from its chunk sums; zeros without smoothing
 * or when it is not finite (a NaN or Inf key: the scores it reaches are NaN
 * anyway, and the other keys keep their own values). */
static void sdpa__i8_mean(const sdpa__plan *P, const float *part, int64_t nc, int64_t vk, float *mean)
{
    int64_t c, d, D = P->D;
    for (d = 0; d < D; d++) mean[d] = 0.0f;
    if (!P->i8_smooth) return;
    for (c = 0; c < nc; c++)
        for (d = 0; d < D; d++) mean[d] += part[c * D + d];
    for (d = 0; d < D; d++) mean[d] /= (float)vk;
    if (sdpa__nonfinite_probe(mean, D) != 0.0f)
        for (d = 0; d < D; d++) mean[d] = 0.0f;
}

/* Second pass: the chunk's blocks, smoothed, quantised and packed. */
static void sdpa__i8_quant_task(void *ctx, int64_t t, int worker)
{
    const sdpa__plan *P = (const sdpa__plan *)ctx;
    sdpa__ws W;
    sdpa__seq sq;
    int64_t g, c, nc, nb, blk, d, D = P->D, dq = P->dq, tkp = P->tkp;
    float *row, *mean;
    int8_t *q;
    if (t < 0 || t >= P->nchk || worker < 0 || worker >= P->n_workers) return;
    sdpa__ws_carve(P, P->ws + (size_t)worker * P->ws_worker, &W);
    row = W.Q;    /* D floats of the tqp x D tile */
    mean = W.Kt;  /* D floats of the D x tkp tile */
    q = W.Qi;     /* dq bytes */
    sdpa__i8_task_get(P, t, &sq, &g, &c, &nc);
    nb = sdpa__i8_nblk(P, sq.vk);
    sdpa__i8_mean(P, P->kpart + (t - c) * D, nc, sq.vk, mean);
    if (c == 0) memcpy(P->kmean + (sq.b * P->Hkv + g) * D, mean, (size_t)D * 4u);
    for (blk = c * SDPA__I8_CHUNK; blk < SDPA__MIN(nb, (c + 1) * SDPA__I8_CHUNK); blk++) {
        char *base = P->kq + (P->blk0[sq.b] + g * nb + blk) * P->kbytes;
        int8_t *quads = (int8_t *)base;
        float *scl = (float *)(void *)(base + dq * tkp);
        int32_t *ksum = (int32_t *)(void *)(scl + tkp);
        int64_t j, j0 = blk * P->tk, nk = SDPA__MIN(P->tk, sq.vk - j0), p;
        for (j = 0; j < nk; j++) {
            int32_t s = 0;
            if (P->kscale) { /* given quantised */
                sdpa__copy_row_i8(q, sdpa__i8_key(P, &sq, g, j0 + j), D, dq);
                scl[j] = P->kscale[(sq.bt * P->Hkv + g) * P->Lk + sq.k0 + j0 + j];
            } else {
                P->load_row(row, sdpa__i8_key(P, &sq, g, j0 + j), P->k.dtype, D, 1.0f);
                for (d = 0; d < D; d++) row[d] -= mean[d];
                scl[j] = sdpa__quant_row_i8(q, row, D, dq);
            }
            for (d = 0; d < D; d++) s += q[d];
            ksum[j] = s;
            for (p = 0; p < dq / 4; p++) memcpy(quads + 4 * (p * tkp + j), q + 4 * p, 4);
        }
        for (; j < tkp; j++) {
            scl[j] = 0.0f;
            ksum[j] = 0;
            for (p = 0; p < dq / 4; p++) memset(quads + 4 * (p * tkp + j), 0, 4);
        }
    }
}

/* Runs both passes through the hook or the built-in threads. */
static int sdpa__i8_prepass(sdpa__plan *P, const sdpa_params *pp)
{
    int pass;
    if (P->nchk == 0) return SDPA_OK;
    for (pass = 0; pass < 2; pass++) {
        int rc = sdpa__run_tasks(pp, P->n_workers, P->nchk, pass ? sdpa__i8_quant_task : sdpa__i8_sum_task, P);
        if (rc != SDPA_OK) return rc;
    }
    return SDPA_OK;
}

/* The Q tile in int8 mode: rows quantised one by one (so a row's result does
 * not depend on its tile), their scales times the attention scale, and
 * qc[r] = scale * q.mean, the smoothing's score shift; padding rows zero. */
static void sdpa__i8_q_tile(const sdpa__plan *P, sdpa__ws *W, const sdpa__seq *sq, int64_t g, int64_t nr, int64_t rp)
{
    int64_t r, d, D = P->D;
    const float *mean = P->kmean + (sq->b * P->Hkv + g) * D;
    for (r = 0; r < nr; r++) {
        const char *src = P->q.data + (sq->bt * P->q.s[0] + W->h[r] * P->q.s[1] + (sq->q0 + W->i[r]) * P->q.s[2]) * P->q.esize;
        float c = 0.0f;
        if (P->qscale) { /* given quantised */
            float qsc = P->qscale[(sq->bt * P->Hq + W->h[r]) * P->Lq + sq->q0 + W->i[r]];
            int8_t *qi = W->Qi + r * P->dq;
            sdpa__copy_row_i8(qi, src, D, P->dq);
            W->qs[r] = qsc * P->scale;
            for (d = 0; d < D && P->i8_smooth; d++) W->Q[d] = (float)qi[d] * qsc;
        } else {
            P->load_row(W->Q, src, P->q.dtype, D, 1.0f);
            W->qs[r] = sdpa__quant_row_i8(W->Qi + r * P->dq, W->Q, D, P->dq) * P->scale;
        }
        if (sq->vk > 0 && P->i8_smooth) /* else no key is seen or the mean is 0 */
            for (d = 0; d < D; d++) c += W->Q[d] * mean[d];
        W->qc[r] = c * P->scale;
    }
    for (; r < rp; r++) {
        memset(W->Qi + r * P->dq, 0, (size_t)P->dq);
        W->qs[r] = W->qc[r] = 0.0f;
    }
}

/* Scores of rows [0, nr) against keys j0.. of the block: S = dequantised
 * int32 products plus the shift. */
static void sdpa__i8_scores(const sdpa__plan *P, sdpa__ws *W, const sdpa__seq *sq, int64_t g, int64_t j0, int64_t nk,
                            int64_t nkp, int64_t nr, int64_t rp)
{
    int64_t nb = sdpa__i8_nblk(P, sq->vk), r, tkp = P->tkp;
    const char *base = P->kq + (P->blk0[sq->b] + g * nb + j0 / P->tk) * P->kbytes;
    const float *ks = (const float *)(const void *)(base + P->dq * tkp);
    P->qk_i8(rp, nkp, P->dq / 4, W->Qi, P->dq, (const int8_t *)base, tkp, (const int32_t *)(const void *)(ks + tkp),
             W->Si, tkp);
    for (r = 0; r < nr; r++) P->i8_deq(W->S + r * tkp, W->Si + r * tkp, ks, W->qs[r], W->qc[r], nk);
}

/* int8 mode's V block for the bf16 P.V (the amx path), from any V dtype:
 * rows loaded into W->V, then each value v split as P is, hi = bf16(v) and
 * lo = bf16(v - hi), pair-packed into W->Vp and W->Vl (keys nk..nkp and
 * columns Dv..dvp zero) by P->vsplit. With P split too, P.V = (P_hi +
 * P_lo).V_hi + P_hi.V_lo: the terms left out, P_lo.V_lo and what two bf16
 * do not hold (v - hi - lo, nothing for F16 and BF16 V), are below 2^-16 of
 * each product, so the mode's error stays its Q.K^T's. Returns nonzero when
 * the block needs the F32 product instead (see sdpa__vsplit_pair). */
static int sdpa__pack_v_split(const sdpa__plan *P, sdpa__ws *W, const char *vb, int64_t nk, int64_t nkp)
{
    int64_t j, d, dvp = P->dvp, vs = P->v.s[2] * P->v.esize;
    for (j = 0; j < nk; j++) P->load_row(W->V + j * dvp, vb + j * vs, P->v.dtype, P->Dv, 1.0f);
    for (j = 0; j < nkp; j += 2) {
        uint32_t *hi = W->Vp + (j / 2) * dvp, *lo = W->Vl + (j / 2) * dvp;
        if (j >= nk) {
            for (d = 0; d < dvp; d++) hi[d] = lo[d] = 0;
        } else if (P->vsplit(hi, lo, W->V + j * dvp, j + 1 < nk ? W->V + (j + 1) * dvp : NULL, P->Dv, dvp)) {
            return 1;
        }
    }
    return 0;
}

/* Position of query i on the key axis (see SEMANTICS in the header). */
static int64_t sdpa__pos(const sdpa__plan *P, const sdpa__seq *sq, int64_t i)
{
    return P->causal == SDPA_CAUSAL_TOP_LEFT ? i : i + sq->vk - sq->vq;
}

/* Applies softcap, ALiBi, the mask and score_mod to s[jlo..jhi] of one row;
 * keys j0 + jj, query i of head h. */
static void sdpa__score_extras(const sdpa__plan *P, const sdpa__seq *sq, int64_t h, int64_t i,
                               int64_t j0, float *s, int64_t jlo, int64_t jhi)
{
    int64_t jj;
    float slope = P->alibi ? P->alibi[h] : 0.0f;
    int64_t pos = sdpa__pos(P, sq, i);
    const char *mrow = NULL;
    if (P->has_mask)
        mrow = P->m.data + (sq->bt * P->m.s[0] + h * P->m.s[1] + (sq->q0 + i) * P->m.s[2] +
                            (sq->k0 + j0) * P->m.s[3]) * P->m.esize;
    if (P->softcap > 0.0f) {
        float cap = P->softcap, inv = 1.0f / P->softcap;
        for (jj = jlo; jj <= jhi; jj++) s[jj] = cap * tanhf(s[jj] * inv);
    }
    if (P->alibi)
        for (jj = jlo; jj <= jhi; jj++) {
            int64_t dist = pos - (j0 + jj);
            s[jj] -= slope * (float)(dist < 0 ? -dist : dist);
        }
    if (mrow && !P->mask_bool) {
        const float *mf = (const float *)(const void *)mrow;
        for (jj = jlo; jj <= jhi; jj++) s[jj] += mf[jj * P->m.s[3]];
    } else if (mrow) {
        const unsigned char *mb = (const unsigned char *)mrow;
        for (jj = jlo; jj <= jhi; jj++)
            if (!mb[jj * P->m.s[3]]) s[jj] = -(float)INFINITY;
    }
    if (P->score_mod)
        for (jj = jlo; jj <= jhi; jj++)
            if (s[jj] != -(float)INFINITY)
                s[jj] = P->score_mod(s[jj], sq->b, h, i, j0 + jj, P->score_mod_user);
}

/* P's rows [0, rp) in S into bf16 rows [0, nkp) of W->Pb: hi and lo
 * (SDPA__P_HILO), or hi alone (SDPA__P_HI). */
static void sdpa__split_rows(const sdpa__plan *P, sdpa__ws *W, int64_t nk, int64_t nkp, int64_t rp, int split)
{
    int64_t r, j;
    for (r = 0; r < rp; r++) {
        uint16_t *hi = W->Pb + r * P->tkp;
        const float *s = W->S + r * P->tkp;
        if (split == SDPA__P_HILO) {
            P->split_p(hi, W->Pb + (P->tqp + r) * P->tkp, s, nk, nkp);
            continue;
        }
        for (j = 0; j < nk; j++) hi[j] = sdpa__bf16_bits_rne(sdpa__f32_bits(s[j]));
        for (; j < nkp; j++) hi[j] = 0;
    }
}

/* A row's m and l moving to the new maximum m_new: returns the factor
 * alpha = exp(m - m_new) for O (0 when m was -inf), sets l = l * alpha +
 * sum and m = m_new. Shared by every softmax step (the KV cache's decode
 * step too), in the strict arithmetic (see sdpa__expf_body), so that a
 * compiler that fuses a * b + c where FMA is enabled (gcc outside ISO
 * mode; any -march=native build) rounds it inside an AVX-512 step as in
 * the portable one. Inline: as an out-of-line call (once, for the same
 * reason) it made the avx512 and amx prefill 20-45% slower on the Xeon,
 * the call clearing the zmm state the step keeps in registers. */
SDPA__INLINE float sdpa__ml_step(float *m, float *l, float m_new, float sum)
{
    float alpha = *m == m_new ? 1.0f : sdpa__expf_strict(*m - m_new);
    *l = sdpa__muladd(*l, alpha, sum, 1);
    *m = m_new;
    return alpha;
}

/* The online-softmax step of one key block (keys j0 .. j0 + nk - 1, padded
 * to nkp) for the tile's rows [0, rp): each row's scores in S become
 * P = exp(S - m_new), zero for keys the row does not see and in rows that
 * see none (padding rows included); m and l are updated and the O row
 * rescaled. bf16 mode: the scores are multiplied by the scale first, and
 * with split P is also written to W->Pb for the P.V product, as two bf16
 * rows, hi and lo, or as hi alone. Returns whether any row saw a key. */
static int sdpa__softmax_block(const sdpa__plan *P, sdpa__ws *W, const sdpa__seq *sq, int64_t j0, int64_t nk,
                               int64_t nkp, int64_t nr, int64_t rp, int split)
{
    const int has_extras = P->softcap > 0.0f || P->alibi || P->has_mask || P->score_mod;
    int64_t r, j, tkp = P->tkp;
    int any = 0;
    for (r = 0; r < rp; r++) {
        float *s = W->S + r * tkp;
        int64_t jlo = r < nr ? SDPA__MAX(W->lo[r] - j0, 0) : 1;
        int64_t jhi = r < nr ? SDPA__MIN(W->hi[r] - j0, nk - 1) : 0;
        float mnew, alpha, sum;
        if (jlo > jhi) { for (j = 0; j < nk; j++) s[j] = 0.0f; continue; }
        if (P->bf16 && !P->i8) P->scale_row(s + jlo, jhi - jlo + 1, P->scale);
        if (has_extras) sdpa__score_extras(P, sq, W->h[r], W->i[r], j0, s, jlo, jhi);
        mnew = P->row_max(s + jlo, jhi - jlo + 1);
        mnew = W->m[r] > mnew ? W->m[r] : mnew;
        if (mnew == -(float)INFINITY) { for (j = 0; j < nk; j++) s[j] = 0.0f; continue; }
        for (j = 0; j < jlo; j++) s[j] = 0.0f;
        for (j = jhi + 1; j < nk; j++) s[j] = 0.0f;
        sum = P->exp_row(s + jlo, jhi - jlo + 1, mnew);
        alpha = sdpa__ml_step(&W->m[r], &W->l[r], mnew, sum);
        if (alpha != 1.0f) P->scale_row(W->O + r * P->dvp, P->dvp, alpha);
        any = 1;
    }
    if (split) sdpa__split_rows(P, W, nk, nkp, rp, split);
    return any;
}

#ifdef SDPA__HAVE_AVX512
/* 16 floats to bf16 (round to nearest even) by vcvtneps2bf16. Inline
 * assembly, so that the softmax body below compiles for avx512 alone: only
 * the amx path's copy of it executes this, and that path is chosen only
 * where CPUID reports AVX512-BF16 (sdpa__cpu_probe). */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 __m256i sdpa__bf16x16_avx512(__m512 x)
{
    __m256i r;
    __asm__("vcvtneps2bf16 %1, %0" : "=v"(r) : "v"(x));
    return r;
}

/* sdpa__softmax_block on zmm registers, in two passes over the rows: first
 * each row's new maximum (rows are independent, so their reductions
 * overlap), then per row one pass that takes exp, sums, and writes P: in S,
 * or with split as the hi and lo parts straight from the exp's registers
 * (hi = bf16(p), lo = bf16(p - hi), as sdpa__split_row_bf16 up to the
 * instruction's flush of subnormal lo parts, below 2^-126 where the sum is
 * at least 1). bf16 mode's scale is folded into the exp's argument: for
 * scale > 0 the maximum of the scaled scores is the scaled maximum, rounding
 * being monotonic. The 16-lane groups start at jlo, so l is summed in the
 * order of sdpa__exp_row_avx512. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 int
sdpa__softmax_body_avx512(const sdpa__plan *P, sdpa__ws *W, const sdpa__seq *sq, int64_t j0, int64_t nk, int64_t nkp,
                          int64_t nr, int64_t rp, const int split)
{
    const int has_extras = P->softcap > 0.0f || P->alibi || P->has_mask || P->score_mod;
    /* bf16 mode's Q.K^T (int8 mode's scores come scaled): with extras (or
     * a scale <= 0) the rows are scaled first, else in the exp's argument */
    const int raw = P->bf16 && !P->i8, prescale = raw && (has_extras || P->scale <= 0.0f);
    const float sc = raw && !prescale ? P->scale : 1.0f;
    int64_t r, j, tkp = P->tkp, dvp = P->dvp;
    int any = 0;
    for (r = 0; r < rp; r++) {
        float *s = W->S + r * tkp, mnew = -(float)INFINITY;
        int64_t jlo = r < nr ? SDPA__MAX(W->lo[r] - j0, 0) : 1;
        int64_t jhi = r < nr ? SDPA__MIN(W->hi[r] - j0, nk - 1) : 0;
        if (jlo <= jhi) {
            __m512 mx = _mm512_set1_ps(-(float)INFINITY);
            if (prescale) sdpa__scale_row_avx512(s + jlo, jhi - jlo + 1, P->scale);
            if (has_extras) sdpa__score_extras(P, sq, W->h[r], W->i[r], j0, s, jlo, jhi);
            for (j = jlo; j <= jhi; j += 16) { /* NaN lanes are skipped */
                __mmask16 k = sdpa__tail_mask_avx512(jhi + 1 - j);
                mx = _mm512_mask_max_ps(mx, k, _mm512_maskz_loadu_ps(k, s + j), mx);
            }
            mnew = sdpa__hmax_avx512(mx) * sc;
            mnew = W->m[r] > mnew ? W->m[r] : mnew;
        }
        W->mn[r] = mnew;
    }
    for (r = 0; r < rp; r++) {
        float *s = W->S + r * tkp, mnew = W->mn[r], alpha;
        uint16_t *hi = split ? W->Pb + r * tkp : NULL, *lo = split == SDPA__P_HILO ? W->Pb + (P->tqp + r) * tkp : NULL;
        int64_t jlo = r < nr ? SDPA__MAX(W->lo[r] - j0, 0) : 1;
        int64_t jhi = r < nr ? SDPA__MIN(W->hi[r] - j0, nk - 1) : 0;
        __m512 acc = _mm512_setzero_ps(), vm = _mm512_set1_ps(mnew), vsc = _mm512_set1_ps(sc);
        if (mnew == -(float)INFINITY) { /* no key seen yet (or none visible) */
            for (j = 0; j < nk && !split; j++) s[j] = 0.0f;
            for (j = 0; j < nkp && split; j++) hi[j] = 0;
            for (j = 0; j < nkp && lo; j++) lo[j] = 0;
            continue;
        }
        for (j = jlo; j <= jhi; j += 16) {
            __mmask16 k = sdpa__tail_mask_avx512(jhi + 1 - j);
            /* the scaled score rounded on its own, as sdpa__scale_row_avx512
             * rounds it: the explicit-rounding form is a builtin, not a
             * vector product, so gcc outside ISO mode (-ffp-contract=fast)
             * cannot fuse it with the subtraction below. (maskz: gcc 12's
             * unmasked form starts from an undefined vector, which C++
             * builds at -O2 -Wall report as maybe-uninitialized.) */
            __m512 x = _mm512_maskz_mul_round_ps(k, _mm512_maskz_loadu_ps(k, s + j), vsc,
                                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            __m512 e = sdpa__exp16_neg_avx512(_mm512_sub_ps(x, vm), k);
            acc = _mm512_add_ps(acc, e);
            if (split) {
                __m256i h = sdpa__bf16x16_avx512(e);
                _mm256_mask_storeu_epi16(hi + j, k, h);
                if (split == SDPA__P_HILO) {
                    __m512 rest = _mm512_sub_ps(e, _mm512_castsi512_ps(_mm512_maskz_slli_epi32(SDPA__ALL16, _mm512_maskz_cvtepu16_epi32(SDPA__ALL16, h), 16)));
                    _mm256_mask_storeu_epi16(lo + j, k, sdpa__bf16x16_avx512(rest));
                }
            } else {
                _mm512_mask_storeu_ps(s + j, k, e);
            }
        }
        for (j = 0; j < jlo && !split; j++) s[j] = 0.0f;
        for (j = jhi + 1; j < nk && !split; j++) s[j] = 0.0f;
        for (j = 0; j < jlo && split; j++) hi[j] = 0;
        for (j = jhi + 1; j < nkp && split; j++) hi[j] = 0;
        for (j = 0; j < jlo && lo; j++) lo[j] = 0;
        for (j = jhi + 1; j < nkp && lo; j++) lo[j] = 0;
        alpha = sdpa__ml_step(&W->m[r], &W->l[r], mnew, sdpa__hsum_avx512(acc));
        if (alpha != 1.0f) sdpa__scale_row_avx512(W->O + r * dvp, dvp, alpha);
        any = 1;
    }
    return any;
}

/* The avx512 path (F32 mode). bf16 mode reaches it only in the tests'
 * plain-C emulation, which splits P with the portable kernel. */
SDPA__TARGET_AVX512 static int sdpa__softmax_block_avx512(const sdpa__plan *P, sdpa__ws *W, const sdpa__seq *sq,
                                                          int64_t j0, int64_t nk, int64_t nkp, int64_t nr, int64_t rp,
                                                          int split)
{
    int any = sdpa__softmax_body_avx512(P, W, sq, j0, nk, nkp, nr, rp, 0);
    if (split) sdpa__split_rows(P, W, nk, nkp, rp, split);
    return any;
}

/* int8 mode with bf16 P.V on the avx512 path (AMD CPUs with AVX512-BF16): P's
 * bf16 parts straight from the exp's registers (vcvtneps2bf16), as the amx
 * path writes them. */
SDPA__TARGET_AVX512 static int sdpa__softmax_block_avx512bf(const sdpa__plan *P, sdpa__ws *W, const sdpa__seq *sq,
                                                            int64_t j0, int64_t nk, int64_t nkp, int64_t nr, int64_t rp,
                                                            int split)
{
    return sdpa__softmax_body_avx512(P, W, sq, j0, nk, nkp, nr, rp, split);
}

/* acc + a_lo * b_lo + a_hi * b_hi per 32-bit lane for the bf16 pair *a
 * (broadcast) and the pairs of b, fp32 sums (AVX512-BF16; written as the
 * instruction with its {1to16} memory operand, so that no compiler flag or
 * intrinsic header version is needed, like vcvtneps2bf16 above). */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 __m512 sdpa__dpbf16_avx512(__m512 acc, const uint16_t *a, __m512i b)
{
    __asm__("vdpbf16ps %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(b), "m"(*(const char(*)[4])(const void *)a));
    return acc;
}

/* sdpa__vsplit_pair on zmm registers, 16 columns a step (npad a multiple
 * of 16, as dvp is), with its range check; the lo rows only when with_lo
 * (a constant in each caller). vcvtneps2bf16 rounds as the portable split
 * does but flushes subnormal lo parts, which tdpbf16ps would read as zero
 * anyway (and which only values within 2^8 of a bf16 have; the range keeps
 * those losses below 2^-26 of a value). */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 int
sdpa__vsplit_body_avx512(const int with_lo, uint32_t *hi, uint32_t *lo, const float *r0, const float *r1, int64_t n, int64_t npad)
{
    const __m512i absm = _mm512_set1_epi32(0x7fffffff), one = _mm512_set1_epi32(1);
    const __m512i tiny = _mm512_set1_epi32(0x0d7fffff), big = _mm512_set1_epi32(0x7f7f7fff);
    __mmask16 out = 0;
    int64_t d;
    for (d = 0; d < npad; d += 16) {
        __mmask16 k = d < n ? sdpa__tail_mask_avx512(n - d) : 0;
        __m512 x0 = _mm512_maskz_loadu_ps(k, r0 + d), x1 = r1 ? _mm512_maskz_loadu_ps(k, r1 + d) : _mm512_setzero_ps();
        __m512i w0 = _mm512_maskz_cvtepu16_epi32(SDPA__ALL16, sdpa__bf16x16_avx512(x0));
        __m512i w1 = _mm512_maskz_cvtepu16_epi32(SDPA__ALL16, sdpa__bf16x16_avx512(x1));
        __m512i a0 = _mm512_and_si512(_mm512_castps_si512(x0), absm), a1 = _mm512_and_si512(_mm512_castps_si512(x1), absm);
        _mm512_storeu_si512((void *)(hi + d), _mm512_or_si512(w0, _mm512_maskz_slli_epi32(SDPA__ALL16, w1, 16)));
        if (with_lo) {
            __m512 e0 = _mm512_sub_ps(x0, _mm512_castsi512_ps(_mm512_maskz_slli_epi32(SDPA__ALL16, w0, 16)));
            __m512 e1 = _mm512_sub_ps(x1, _mm512_castsi512_ps(_mm512_maskz_slli_epi32(SDPA__ALL16, w1, 16)));
            __m512i l0 = _mm512_maskz_cvtepu16_epi32(SDPA__ALL16, sdpa__bf16x16_avx512(e0));
            __m512i l1 = _mm512_maskz_cvtepu16_epi32(SDPA__ALL16, sdpa__bf16x16_avx512(e1));
            _mm512_storeu_si512((void *)(lo + d), _mm512_or_si512(l0, _mm512_maskz_slli_epi32(SDPA__ALL16, l1, 16)));
        }
        out |= _mm512_cmplt_epu32_mask(_mm512_sub_epi32(a0, one), tiny) | _mm512_cmplt_epu32_mask(_mm512_sub_epi32(a1, one), tiny) |
               _mm512_cmpgt_epu32_mask(a0, big) | _mm512_cmpgt_epu32_mask(a1, big);
    }
    return out != 0;
}

/* The hi rows alone (the lo rows are not written: int8 mode's single-bf16
 * P.V reads V's hi part only). */
SDPA__TARGET_AVX512 static int sdpa__vpack_hi_avx512bf(uint32_t *hi, uint32_t *lo, const float *r0, const float *r1, int64_t n,
                                                       int64_t npad)
{
    return sdpa__vsplit_body_avx512(0, hi, lo, r0, r1, n, npad);
}

/* R rows x 16W columns of sdpa__bgemm_scalar's C on vdpbf16ps: per key
 * pair, W loads of B's pairs and R broadcasts of A's pair; one term
 * (A B, A B2 or A2 B) at a time. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 void
sdpa__bgemm_blk_avx512bf(const int R, const int W, int64_t K2, const uint16_t *A, int64_t lda, const uint32_t *B,
                         int64_t ldb, __m512 acc[8][2], __mmask16 last)
{
    int64_t p;
    int r, w;
    for (p = 0; p < K2; p++) {
        __m512i b[2];
        SDPA__UNROLL for (w = 0; w < W; w++)
            b[w] = _mm512_maskz_loadu_epi32(w == W - 1 ? last : SDPA__ALL16, B + p * ldb + 16 * w);
        SDPA__UNROLL for (r = 0; r < R; r++)
            SDPA__UNROLL for (w = 0; w < W; w++) acc[r][w] = sdpa__dpbf16_avx512(acc[r][w], A + r * lda + 2 * p, b[w]);
    }
}

static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 void
sdpa__bgemm_tile_avx512bf(const int R, const int W, int64_t K2, const uint16_t *A, const uint16_t *A2, int64_t lda,
                          const uint32_t *B, const uint32_t *B2, int64_t ldb, float *C, int64_t ldc, int accumulate,
                          __mmask16 last)
{
    __m512 acc[8][2];
    int r, w;
    SDPA__UNROLL for (r = 0; r < R; r++) SDPA__UNROLL for (w = 0; w < W; w++)
        acc[r][w] = accumulate ? _mm512_maskz_loadu_ps(w == W - 1 ? last : SDPA__ALL16, C + r * ldc + 16 * w) : _mm512_setzero_ps();
    if (B2) sdpa__bgemm_blk_avx512bf(R, W, K2, A, lda, B2, ldb, acc, last);
    sdpa__bgemm_blk_avx512bf(R, W, K2, A, lda, B, ldb, acc, last);
    if (A2) sdpa__bgemm_blk_avx512bf(R, W, K2, A2, lda, B, ldb, acc, last);
    SDPA__UNROLL for (r = 0; r < R; r++) SDPA__UNROLL for (w = 0; w < W; w++)
        _mm512_mask_storeu_ps(C + r * ldc + 16 * w, w == W - 1 ? last : SDPA__ALL16, acc[r][w]);
}

/* sdpa__bgemm_scalar's contract (any M, N, K2) in 8 x 32 blocks of C. */
SDPA__TARGET_AVX512 static void sdpa__bgemm_avx512bf(int64_t M, int64_t N, int64_t K2, const uint16_t *A, const uint16_t *A2,
                                                     int64_t lda, const uint32_t *B, const uint32_t *B2, int64_t ldb,
                                                     float *C, int64_t ldc, int accumulate)
{
    int64_t i = 0, j;
#define SDPA__BGEMM512(R_, W_, LAST_)                                                                                 \
    sdpa__bgemm_tile_avx512bf(R_, W_, K2, A + i * lda, A2 ? A2 + i * lda : NULL, lda, B + j, B2 ? B2 + j : NULL, ldb, \
                              C + i * ldc + j, ldc, accumulate, LAST_)
    for (; i + 8 <= M; i += 8) {
        for (j = 0; j + 32 <= N; j += 32) SDPA__BGEMM512(8, 2, SDPA__ALL16);
        for (; j + 16 <= N; j += 16) SDPA__BGEMM512(8, 1, SDPA__ALL16);
        if (j < N) SDPA__BGEMM512(8, 1, sdpa__tail_mask_avx512(N - j));
    }
    for (; i < M; i++) {
        for (j = 0; j + 32 <= N; j += 32) SDPA__BGEMM512(1, 2, SDPA__ALL16);
        for (; j + 16 <= N; j += 16) SDPA__BGEMM512(1, 1, SDPA__ALL16);
        if (j < N) SDPA__BGEMM512(1, 1, sdpa__tail_mask_avx512(N - j));
    }
#undef SDPA__BGEMM512
}
#endif

#ifdef SDPA__HAVE_AMX
SDPA__TARGET_AMX static int sdpa__softmax_block_amx(const sdpa__plan *P, sdpa__ws *W, const sdpa__seq *sq, int64_t j0,
                                                    int64_t nk, int64_t nkp, int64_t nr, int64_t rp, int split)
{
    return sdpa__softmax_body_avx512(P, W, sq, j0, nk, nkp, nr, rp, split);
}

/* sdpa__vsplit_pair, hi and lo rows (the AMX path's three-term P.V). */
SDPA__TARGET_AMX static int sdpa__vsplit_pair_amx(uint32_t *hi, uint32_t *lo, const float *r0, const float *r1, int64_t n,
                                                  int64_t npad)
{
    return sdpa__vsplit_body_avx512(1, hi, lo, r0, r1, n, npad);
}
#endif

/* One task: query rows of tile `tile` of kv head g in sequence sq, against
 * every K/V block any of them can see. Scratch O(tile * head_dim). */
static void sdpa__run_tile(const sdpa__plan *P, sdpa__ws *W, const sdpa__seq *sq, int64_t g, int64_t tile)
{
    int64_t nr = 0, r, rp, klo = INT64_MAX, khi = -1, j0, d;
    int64_t D = P->D, Dv = P->Dv, tkp = P->tkp, dvp = P->dvp;

    /* the rows: (head, query index) pairs */
    if (sq->nq >= P->tq) {
        int64_t tph = (sq->nq + P->tq - 1) / P->tq;
        int64_t hg = tile / tph, i0 = (tile % tph) * P->tq, cnt = SDPA__MIN(P->tq, sq->nq - i0);
        for (r = 0; r < cnt; r++) { W->h[nr] = g * P->G + hg; W->i[nr] = i0 + r; nr++; }
    } else {
        int64_t hpt = P->tq / sq->nq, hg0 = tile * hpt, hcnt = SDPA__MIN(hpt, P->G - hg0), hh, ii;
        for (hh = 0; hh < hcnt; hh++)
            for (ii = 0; ii < sq->nq; ii++) { W->h[nr] = g * P->G + hg0 + hh; W->i[nr] = ii; nr++; }
    }
    rp = SDPA__ROUND_UP(nr, P->rpad);

    /* each row's visible key range [lo, hi] from lengths, causal and window */
    for (r = 0; r < nr; r++) {
        int64_t i = W->i[r], lo = 0, hi = sq->vk - 1, pos = sdpa__pos(P, sq, i);
        if (i >= sq->vq) hi = -1;
        if (P->causal != SDPA_CAUSAL_NONE) hi = SDPA__MIN(hi, pos);
        if (P->window && P->wl >= 0) lo = SDPA__MAX(lo, pos - P->wl);
        if (P->window && P->wr >= 0) hi = SDPA__MIN(hi, pos + P->wr);
        if (hi < lo) { lo = 0; hi = -1; }
        W->lo[r] = lo;
        W->hi[r] = hi;
        if (hi >= lo) { klo = SDPA__MIN(klo, lo); khi = SDPA__MAX(khi, hi); }
    }

    /* Q tile, pre-scaled (bf16 mode: as stored, scaled in S; int8 mode:
     * quantised, scaled in S); padding rows are zero */
    if (P->i8) sdpa__i8_q_tile(P, W, sq, g, nr, rp);
    for (r = 0; r < nr && !P->i8; r++) {
        const char *src = P->q.data + (sq->bt * P->q.s[0] + W->h[r] * P->q.s[1] + (sq->q0 + W->i[r]) * P->q.s[2]) * P->q.esize;
        if (P->bf16)
            sdpa__pack_row_bf16(W->Qb + r * P->dp, src, D, P->dp);
        else
            P->load_row(W->Q + r * D, src, P->q.dtype, D, P->scale);
    }
    if (P->i8)
        ; /* sdpa__i8_q_tile zeroed them */
    else if (P->bf16)
        for (r = nr * P->dp; r < rp * P->dp; r++) W->Qb[r] = 0;
    else
        for (r = nr * D; r < rp * D; r++) W->Q[r] = 0.0f;
    for (r = 0; r < rp; r++) { W->m[r] = -(float)INFINITY; W->l[r] = 0.0f; }
    for (r = 0; r < rp * dvp; r++) W->O[r] = 0.0f;

    /* key blocks aligned to multiples of tk, so a row's result does not
     * depend on which other rows share its tile */
    if (P->tiles && khi >= 0) P->tiles(1);
    for (j0 = khi < 0 ? 0 : klo / P->tk * P->tk; j0 <= khi; j0 += P->tk) {
        int64_t nk = SDPA__MIN(P->tk, khi + 1 - j0), nkp = SDPA__ROUND_UP(nk, P->kpad), j;
        const char *kb = P->k.data + (sq->bt * P->k.s[0] + g * P->k.s[1] + (sq->k0 + j0) * P->k.s[2]) * P->k.esize;
        const char *vb = P->v.data + (sq->bt * P->v.s[0] + g * P->v.s[1] + (sq->k0 + j0) * P->v.s[2]) * P->v.esize;
        int any, vbad, split;

        if (P->i8) {
            sdpa__i8_scores(P, W, sq, g, j0, nk, nkp, nr, rp);
        } else if (P->bf16) {
            P->pack_k(W->Kp, tkp, kb, P->k.s[2] * P->k.esize, nk, D, P->dp);
            for (d = 0; d < P->dp / 2; d++)
                for (j = nk; j < nkp; j++) W->Kp[d * tkp + j] = 0;
            P->bgemm(rp, nkp, P->dp / 2, W->Qb, NULL, P->dp, W->Kp, NULL, tkp, W->S, tkp, 0); /* scaled in the softmax */
        } else {
            P->load_kt(W->Kt, tkp, kb, P->k.s[2] * P->k.esize, P->k.dtype, nk, D);
            if (nkp > nk)
                for (d = 0; d < D; d++)
                    for (j = nk; j < nkp; j++) W->Kt[d * tkp + j] = 0.0f;
            P->gemm(rp, nkp, D, W->Q, D, W->Kt, tkp, W->S, tkp, 0);
        }

        /* bf16 mode: V pair-packed first, so that the softmax knows whether
         * P goes to the bf16 product (split into hi and lo) or, when V holds
         * an Inf or NaN, stays in S for the F32 one below */
        vbad = 0;
        if (P->bf16 && P->i8 && Dv > 0)
            vbad = sdpa__pack_v_split(P, W, vb, nk, nkp);
        else if (P->bf16 && Dv > 0)
            for (j = 0; j < nkp; j += 2) {
                uint32_t *dst = W->Vp + (j / 2) * dvp;
                if (j >= nk) { for (d = 0; d < dvp; d++) dst[d] = 0; continue; }
                vbad |= P->pack_v(dst, vb + j * P->v.s[2] * P->v.esize,
                                  j + 1 < nk ? vb + (j + 1) * P->v.s[2] * P->v.esize : NULL, Dv, dvp);
            }
        split = P->bf16 && Dv > 0 && !vbad ? (P->p1 ? SDPA__P_HI : SDPA__P_HILO) : SDPA__P_F32;

        /* online softmax: S becomes P = exp(S - m_new), m, l and O rescaled */
        any = P->softmax(P, W, sq, j0, nk, nkp, nr, rp, split);
        if (P->tiles && P->score_mod) P->tiles(1); /* score_mod may have run anything, AMX included */
        if (!any || Dv == 0) continue;

        if (split) { /* P.V as (P_hi + P_lo).V, one pass over O, or as P_hi.V; int8 mode
                      * adds P_hi.V_lo in the same pass (bf16 V has no lo part) */
            P->bgemm(rp, dvp, nkp / 2, W->Pb, split == SDPA__P_HILO ? W->Pb + P->tqp * tkp : NULL, tkp, W->Vp,
                     P->i8 && !P->p1 && P->v.dtype != SDPA_BF16 ? W->Vl : NULL, dvp, W->O, dvp, 1);
            continue;
        }
        {
            float bad = 0.0f; /* becomes NaN iff the block holds a NaN or Inf */
            for (j = 0; j < nk; j++) {
                float *vr = W->V + j * dvp;
                P->load_row(vr, vb + j * P->v.s[2] * P->v.esize, P->v.dtype, Dv, 1.0f);
                for (d = Dv; d < dvp; d++) vr[d] = 0.0f;
                bad += sdpa__nonfinite_probe(vr, Dv);
            }
            if (bad == 0.0f)
                P->gemm(rp, dvp, nk, W->S, tkp, W->V, dvp, W->O, dvp, 1);
            else /* keep 0 * inf of hidden keys out of the rows (rare path) */
                sdpa__pv_skip_zeros(rp, dvp, nk, W->S, tkp, W->V, W->O);
        }
    }

    if (P->tiles && khi >= 0) P->tiles(0);

    /* normalise and store; rows that saw no key give 0 and lse = -inf */
    for (r = 0; r < nr; r++) {
        int64_t h = W->h[r], i = W->i[r];
        float l = W->l[r], mul = l > 0.0f ? 1.0f / l : l; /* NaN l keeps the row NaN */
        float *o = W->O + r * dvp;
        if (l == 0.0f) { /* O may hold 0 * inf from hidden keys: write true zeros */
            for (d = 0; d < Dv; d++) o[d] = 0.0f;
            mul = 1.0f;
        }
        if (Dv > 0)
            P->store_row((char *)(uintptr_t)P->o.data +
                                (sq->bt * P->o.s[0] + h * P->o.s[1] + (sq->q0 + i) * P->o.s[2]) * P->o.esize,
                            P->o.dtype, o, Dv, mul);
        if (P->lse)
            P->lse[(sq->bt * P->Hq + h) * P->Lq + sq->q0 + i] =
                l > 0.0f ? W->m[r] + logf(l) : (l == 0.0f ? -(float)INFINITY : l);
    }
}

static void sdpa__task(void *ctx, int64_t task, int worker)
{
    const sdpa__plan *P = (const sdpa__plan *)ctx;
    sdpa__ws W;
    sdpa__seq sq;
    int64_t lo, rem, tpg;
    if (task < 0 || task >= P->n_tasks || worker < 0 || worker >= P->n_workers) return;
    lo = sdpa__prefix_find(P->task_start, P->nseq, task);
    sdpa__seq_get(P, lo, &sq);
    rem = task - P->task_start[lo];
    tpg = sdpa__tiles_per_group(P, sq.nq);
    sdpa__ws_carve(P, P->ws + (size_t)worker * P->ws_worker, &W);
    if (P->causal != SDPA_CAUSAL_NONE && sq.nq >= P->tq) {
        /* a causal row tile's work grows with its position: hand out the
         * sequence's last row tiles of every head first and the first ones
         * last, so the threads finish together (only the order of the
         * tasks changes, not what any of them computes) */
        int64_t tph = (sq.nq + P->tq - 1) / P->tq, t = rem / P->Hkv, g = rem % P->Hkv;
        sdpa__run_tile(P, &W, &sq, g, (t % P->G) * tph + tph - 1 - t / P->G);
    } else {
        sdpa__run_tile(P, &W, &sq, rem / tpg, rem % tpg);
    }
}

/* ---- threads -------------------------------------------------------------- */

#if defined(SDPA__PTHREADS)
typedef struct sdpa__pool {
    pthread_mutex_t mu;
    int64_t next, n;
    sdpa_task_fn fn;
    void *ctx;
} sdpa__pool;

typedef struct sdpa__worker_arg {
    sdpa__pool *pool;
    int worker;
} sdpa__worker_arg;

static void *sdpa__worker_main(void *arg)
{
    sdpa__worker_arg *a = (sdpa__worker_arg *)arg;
    sdpa__pool *pool = a->pool;
    for (;;) {
        int64_t t;
        pthread_mutex_lock(&pool->mu);
        t = pool->next++;
        pthread_mutex_unlock(&pool->mu);
        if (t >= pool->n) break;
        pool->fn(pool->ctx, t, a->worker);
    }
    return NULL;
}
#endif

/* Runs every task on up to n_workers threads (the caller's included). A
 * thread that cannot be created just leaves its share to the others. */
static void sdpa__run_builtin(int n_workers, int64_t n_tasks, sdpa_task_fn fn, void *ctx)
{
#if defined(SDPA__PTHREADS)
    if (n_workers > 1) {
        pthread_t th[SDPA_MAX_THREADS];
        sdpa__worker_arg args[SDPA_MAX_THREADS];
        int started[SDPA_MAX_THREADS];
        sdpa__pool pool;
        int w;
        if (pthread_mutex_init(&pool.mu, NULL) == 0) {
            pool.next = 0;
            pool.n = n_tasks;
            pool.fn = fn;
            pool.ctx = ctx;
            for (w = 0; w < n_workers; w++) {
                args[w].pool = &pool;
                args[w].worker = w;
                started[w] = w > 0 && pthread_create(&th[w], NULL, sdpa__worker_main, &args[w]) == 0;
            }
            sdpa__worker_main(&args[0]);
            for (w = 1; w < n_workers; w++)
                if (started[w]) pthread_join(th[w], NULL);
            pthread_mutex_destroy(&pool.mu);
            return;
        }
    }
#elif defined(_OPENMP) && !defined(SDPA_NO_THREADS)
    if (n_workers > 1) {
        int64_t t;
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_workers)
        for (t = 0; t < n_tasks; t++) fn(ctx, t, omp_get_thread_num());
        return;
    }
#endif
    {
        int64_t t;
        (void)n_workers;
        for (t = 0; t < n_tasks; t++) fn(ctx, t, 0);
    }
}

/* The call's scratch (sdpa__ws_bytes: *bytes): 64-byte aligned, the
 * per-sequence task prefixes (P->task_start) first, then each worker's part
 * (P->ws). NULL when the allocator fails; free with sdpa__scratch_free. */
static void *sdpa__plan_scratch(sdpa__plan *P, const sdpa_params *params, size_t *bytes)
{
    char *base;
    int64_t s, acc = 0;
    void *raw;
    *bytes = sdpa__ws_bytes(P);
    raw = sdpa__scratch_alloc(params, *bytes);
    if (!raw) return NULL;
    base = (char *)raw + ((64u - ((uintptr_t)raw & 63u)) & 63u);
    P->task_start = (int64_t *)(void *)base;
    P->ws = base + SDPA__ROUND_UP((size_t)(P->nseq + 1) * 8u, 64u);
    for (s = 0; s < P->nseq; s++) {
        sdpa__seq sq;
        sdpa__seq_get(P, s, &sq);
        P->task_start[s] = acc;
        acc += sdpa__tiles_per_group(P, sq.nq) * P->Hkv;
    }
    P->task_start[P->nseq] = acc;
    return raw;
}

/* ---- the entry point ------------------------------------------------------ */

SDPA_API int sdpa_attention(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v,
                            const sdpa_tensor *out, const sdpa_params *params)
{
    sdpa__plan P;
    size_t bytes;
    void *raw;
    int rc = sdpa__plan_make(q, k, v, out, params, &P);
    if (rc != SDPA_OK) return rc;
    if (P.n_tasks == 0) return SDPA_OK;

    raw = sdpa__plan_scratch(&P, params, &bytes);
    if (!raw) return sdpa__fail(params, SDPA_ERR_NOMEM, "sdpa: could not allocate %llu bytes of scratch", (unsigned long long)bytes);
    if (P.i8) {
        sdpa__i8_carve(&P, P.ws + P.ws_worker * (size_t)P.n_workers);
        rc = sdpa__i8_prepass(&P, params);
    }

    if (rc == SDPA_OK) rc = sdpa__run_tasks(params, P.n_workers, P.n_tasks, sdpa__task, &P);
    sdpa__scratch_free(params, raw, bytes);
    return rc;
}


/* ---- KV cache ------------------------------------------------------------- */

#define SDPA__KV_SPAN 64          /* keys per online-softmax step */
#define SDPA__KV_ROWS 64          /* query rows per task */
#ifndef SDPA__KV_VPF
#define SDPA__KV_VPF 131072       /* bytes of V a task's heads read per span, at most, for V to be prefetched during Q K^T */
#endif
#ifndef SDPA__KV_TASKS
#define SDPA__KV_TASKS 4          /* decode tasks per worker, at least, when kv heads share tasks */
#endif
#ifndef SDPA__KV_STEP
#define SDPA__KV_STEP 8           /* keys per kernel call (prefetch granularity) */
#endif
#ifndef SDPA__KV_PF
#define SDPA__KV_PF 3
#endif
#define SDPA__KV_CHUNK 512        /* keys per split (decode), at least */
#define SDPA__KV_MAX_CHUNKS 64    /* splits per sequence, at most */
#define SDPA__KV_MAX_PAGE 65536

/* Tokens slot..slot+n-1 of `page` are the sequence's positions pos..pos+n-1. */
typedef struct sdpa__kv_run {
    char *page;
    int64_t slot, n, pos;
} sdpa__kv_run;

typedef struct sdpa__kv_seq {
    sdpa__kv_run *run;
    int64_t nrun, cap, len;
} sdpa__kv_seq;

/* A page: this header, a byte per head (set when that head's V holds a
 * non-finite value: those keys then take the careful P.V), then K
 * [heads][page_size][D], V [heads][page_size][Dv] and, for I8, the K and V
 * scales [heads][page_size]; every part 64-byte aligned. */
typedef struct sdpa__kv_page {
    void *raw;     /* what the allocator returned */
    int64_t refs;  /* runs (of any sequence) that use the page */
} sdpa__kv_page;

struct sdpa_kv_cache {
    sdpa_allocator al;         /* al.alloc NULL: SDPA_MALLOC/SDPA_FREE */
    int64_t nseq, H, D, Dv, ps, max_pages;
    sdpa_dtype dt;
    int64_t esize;
    int64_t off_k, off_v, off_ks, off_vs, off_kc, page_bytes;
    int kchan;                 /* I8 keys scaled per channel (off_kc: [H][D] scales; off_ks: 1 or NaN per key) */
    int64_t pages;             /* pages held */
    int64_t bytes;             /* bytes held from the allocator */
    sdpa__kv_seq *seq;
    char *errbuf;
    size_t errbuf_size;
};

/* Errors of cache calls go to the config's errbuf through sdpa__fail. */
static const sdpa_params *sdpa__kv_ep(const sdpa_kv_cache *c, sdpa_params *tmp)
{
    memset(tmp, 0, sizeof *tmp);
    tmp->errbuf = c->errbuf;
    tmp->errbuf_size = c->errbuf_size;
    return tmp;
}

static void *sdpa__kv_alloc(sdpa_kv_cache *c, size_t n)
{
    void *p = c->al.alloc ? c->al.alloc(c->al.user, n, 64) : SDPA_MALLOC(n);
    if (p) c->bytes += (int64_t)n;
    return p;
}

static void sdpa__kv_free(sdpa_kv_cache *c, void *p, size_t n)
{
    if (!p) return;
    c->bytes -= (int64_t)n;
    if (c->al.alloc) {
        if (c->al.free) c->al.free(c->al.user, p, n);
    } else {
        SDPA_FREE(p);
    }
}

static size_t sdpa__kv_page_alloc_bytes(const sdpa_kv_cache *c) { return (size_t)c->page_bytes + 64u; }

static char *sdpa__kv_page_new(sdpa_kv_cache *c)
{
    void *raw = sdpa__kv_alloc(c, sdpa__kv_page_alloc_bytes(c));
    char *pg;
    sdpa__kv_page *hd;
    if (!raw) return NULL;
    pg = (char *)raw + ((64u - ((uintptr_t)raw & 63u)) & 63u);
    hd = (sdpa__kv_page *)(void *)pg;
    hd->raw = raw;
    hd->refs = 1;
    memset(pg + sizeof(sdpa__kv_page), 0, (size_t)c->H); /* no non-finite V yet */
    c->pages++;
    return pg;
}

static void sdpa__kv_page_release(sdpa_kv_cache *c, char *pg)
{
    sdpa__kv_page *hd = (sdpa__kv_page *)(void *)pg;
    if (--hd->refs == 0) {
        sdpa__kv_free(c, hd->raw, sdpa__kv_page_alloc_bytes(c));
        c->pages--;
    }
}

SDPA__INLINE int64_t sdpa__kv_refs(const char *pg) { return ((const sdpa__kv_page *)(const void *)pg)->refs; }
SDPA__INLINE unsigned char *sdpa__kv_flags(const char *pg) { return (unsigned char *)(uintptr_t)(pg + sizeof(sdpa__kv_page)); }

SDPA__INLINE const char *sdpa__kv_kptr(const sdpa_kv_cache *c, const char *pg, int64_t h, int64_t slot)
{
    return pg + c->off_k + (h * c->ps + slot) * c->D * c->esize;
}
SDPA__INLINE const char *sdpa__kv_vptr(const sdpa_kv_cache *c, const char *pg, int64_t h, int64_t slot)
{
    return pg + c->off_v + (h * c->ps + slot) * c->Dv * c->esize;
}
SDPA__INLINE float *sdpa__kv_kscale(const sdpa_kv_cache *c, const char *pg, int64_t h, int64_t slot)
{
    return (float *)(uintptr_t)(pg + c->off_ks) + h * c->ps + slot;
}
SDPA__INLINE float *sdpa__kv_vscale(const sdpa_kv_cache *c, const char *pg, int64_t h, int64_t slot)
{
    return (float *)(uintptr_t)(pg + c->off_vs) + h * c->ps + slot;
}
/* Per-channel key scales of head h in page pg (kchan). */
SDPA__INLINE float *sdpa__kv_kchan(const sdpa_kv_cache *c, const char *pg, int64_t h)
{
    return (float *)(uintptr_t)(pg + c->off_kc) + h * c->D;
}

/* Element i of a row of dtype t (F32, F16, BF16 or I8) as float. */
SDPA__INLINE float sdpa__kv_get(const char *src, sdpa_dtype t, int64_t i)
{
    if (t == SDPA_F32) return ((const float *)(const void *)src)[i];
    if (t == SDPA_F16) return sdpa_f16_to_f32(((const uint16_t *)(const void *)src)[i]);
    if (t == SDPA_BF16) return sdpa_bf16_to_f32(((const uint16_t *)(const void *)src)[i]);
    return (float)((const signed char *)src)[i];
}

SDPA__INLINE int sdpa__kv_finite(float x) { return (sdpa__f32_bits(x) & 0x7f800000u) != 0x7f800000u; }

/* y rounded to nearest (ties away from zero) and clamped to [-127, 127]. */
SDPA__INLINE signed char sdpa__kv_q8(double y)
{
    long r = (long)(y + (y >= 0.0 ? 0.5 : -0.5));
    return (signed char)(r > 127 ? 127 : (r < -127 ? -127 : r));
}

/* Stores n elements of src (dtype st) as dtype dt at dst; I8 rows get one
 * scale: max|x| / 127, values rounded to nearest (ties away from zero). A row
 * with a NaN or Inf is stored as q = 0 with a NaN scale. Returns 1 when the
 * stored row holds a non-finite value. */
static int sdpa__kv_put(char *dst, float *scale, const char *src, sdpa_dtype st, sdpa_dtype dt, int64_t n)
{
    int64_t i;
    int bad = 0;
    if (dt == SDPA_I8) {
        signed char *q = (signed char *)dst;
        float amax = 0.0f;
        double inv;
        for (i = 0; i < n; i++) {
            float a = fabsf(sdpa__kv_get(src, st, i));
            if (!sdpa__kv_finite(a)) bad = 1;
            else if (a > amax) amax = a;
        }
        if (bad) {
            memset(q, 0, (size_t)n);
            *scale = (float)NAN;
            return 1;
        }
        *scale = (float)((double)amax / 127.0);
        inv = amax > 0.0f ? 127.0 / (double)amax : 0.0; /* double: no overflow for tiny amax */
        for (i = 0; i < n; i++) q[i] = sdpa__kv_q8((double)sdpa__kv_get(src, st, i) * inv);
        return 0;
    }
    for (i = 0; i < n; i++) {
        float x = sdpa__kv_get(src, st, i);
        if (dt == SDPA_F32) {
            ((float *)(void *)dst)[i] = x;
        } else if (dt == SDPA_F16) {
            uint16_t h = sdpa_f32_to_f16(x);
            ((uint16_t *)(void *)dst)[i] = h;
            x = sdpa_f16_to_f32(h);
        } else {
            uint16_t h = sdpa_f32_to_bf16(x);
            ((uint16_t *)(void *)dst)[i] = h;
            x = sdpa_bf16_to_f32(h);
        }
        if (!sdpa__kv_finite(x)) bad = 1;
    }
    return bad;
}

/* An I8 key with per-channel scales (kchan): slot `slot` of head h in page
 * pg. A channel's scale grows when a key does not fit it, to |k_d| / 127 or
 * 1.25x the old scale, whichever is larger, and the page's earlier keys of
 * that channel (slots below `slot`: a page fills in slot order) are rounded
 * again to the new scale. With each scale at least 1.25x the one before, the
 * roundings add up to at most 2.5 steps of the final scale s, and s is at
 * most 1.25 max|k_d| / 127 over the page's keys (bench_kscales: this
 * measured as well as growing to |k_d| / 127 exactly, with fewer passes).
 * The key's factor (off_ks) is 1; a key holding NaN or Inf is stored as
 * zeros with a NaN factor and leaves the scales alone. */
static void sdpa__kv_put_kchan(const sdpa_kv_cache *c, char *pg, int64_t h, int64_t slot, const char *src, sdpa_dtype st)
{
    signed char *base = (signed char *)(uintptr_t)sdpa__kv_kptr(c, pg, h, 0), *q = base + slot * c->D;
    float *sc = sdpa__kv_kchan(c, pg, h), *f = sdpa__kv_kscale(c, pg, h, slot);
    int64_t d, u, D = c->D;
    if (slot == 0)
        for (d = 0; d < D; d++) sc[d] = 0.0f;
    for (d = 0; d < D; d++)
        if (!sdpa__kv_finite(sdpa__kv_get(src, st, d))) {
            memset(q, 0, (size_t)D);
            *f = (float)NAN;
            return;
        }
    for (d = 0; d < D; d++) {
        double x = (double)sdpa__kv_get(src, st, d), a = fabs(x);
        if (a > (double)sc[d] * 127.0) {
            float ns = (float)SDPA__MAX(a / 127.0, 1.25 * (double)sc[d]);
            if (ns > 0.0f) { /* else |k_d| < ~2e-43: the scale underflows, the key stays 0 */
                double r = (double)sc[d] / (double)ns; /* < 1 (0 for a new channel) */
                for (u = 0; u < slot; u++) base[u * D + d] = sdpa__kv_q8((double)base[u * D + d] * r);
                sc[d] = ns;
            }
        }
        q[d] = sc[d] > 0.0f ? sdpa__kv_q8(x / (double)sc[d]) : 0;
    }
    *f = 1.0f;
}

SDPA_API int sdpa_kv_cache_create(const sdpa_kv_cache_config *cfg, sdpa_kv_cache **out)
{
    sdpa_params ep;
    sdpa_kv_cache tmp, *c;
    int64_t ks, vs, sc, cs = 0, off, a, b;
    if (!out) return SDPA_ERR_NULL;
    *out = NULL;
    if (!cfg) return SDPA_ERR_NULL;
    memset(&ep, 0, sizeof ep);
    ep.errbuf = cfg->errbuf;
    ep.errbuf_size = cfg->errbuf_size;
    if (cfg->num_seqs < 1 || cfg->kv_heads < 1 || cfg->head_dim < 1 || cfg->head_dim_v < 0)
        return sdpa__fail(&ep, SDPA_ERR_SHAPE, "sdpa_kv_cache: num_seqs, kv_heads and head_dim must be >= 1, head_dim_v >= 0");
    if (cfg->dtype != SDPA_F32 && cfg->dtype != SDPA_F16 && cfg->dtype != SDPA_BF16 && cfg->dtype != SDPA_I8)
        return sdpa__fail(&ep, SDPA_ERR_DTYPE, "sdpa_kv_cache: storage dtype must be F32, F16, BF16 or I8 (got %d)", (int)cfg->dtype);
    if (cfg->page_size < 0 || cfg->page_size > SDPA__KV_MAX_PAGE || cfg->max_pages < 0)
        return sdpa__fail(&ep, SDPA_ERR_PARAM, "sdpa_kv_cache: page_size must be in [0, %d], max_pages >= 0", SDPA__KV_MAX_PAGE);
    if (cfg->kscale != SDPA_KV_KSCALE_CHANNEL && cfg->kscale != SDPA_KV_KSCALE_TOKEN)
        return sdpa__fail(&ep, SDPA_ERR_PARAM, "sdpa_kv_cache: kscale must be SDPA_KV_KSCALE_CHANNEL or _TOKEN (got %d)", (int)cfg->kscale);
    memset(&tmp, 0, sizeof tmp);
    if (cfg->allocator && cfg->allocator->alloc) tmp.al = *cfg->allocator;
    tmp.nseq = cfg->num_seqs;
    tmp.H = cfg->kv_heads;
    tmp.D = cfg->head_dim;
    tmp.Dv = cfg->head_dim_v ? cfg->head_dim_v : cfg->head_dim;
    tmp.ps = cfg->page_size ? cfg->page_size : 64; /* 16 read 0.7x as fast in decode (short runs per head) */
    tmp.max_pages = cfg->max_pages;
    tmp.dt = cfg->dtype;
    tmp.kchan = cfg->dtype == SDPA_I8 && cfg->kscale == SDPA_KV_KSCALE_CHANNEL;
    tmp.esize = sdpa__esize(cfg->dtype);
    tmp.errbuf = cfg->errbuf;
    tmp.errbuf_size = cfg->errbuf_size;
    /* page layout, every size checked: K and V parts, then the scales */
    if (!sdpa__mul_ok(tmp.H, tmp.ps, &a) || !sdpa__mul_ok(a, tmp.D, &b) || !sdpa__mul_ok(b, tmp.esize, &ks) ||
        !sdpa__mul_ok(a, tmp.Dv, &b) || !sdpa__mul_ok(b, tmp.esize, &vs) || !sdpa__mul_ok(a, 4, &sc) ||
        ks > INT64_MAX / 8 || vs > INT64_MAX / 8 || sc > INT64_MAX / 8 || tmp.H > INT64_MAX / 8 ||
        tmp.nseq > INT64_MAX / 64 || !sdpa__mul_ok(tmp.H, tmp.D, &cs) || cs > INT64_MAX / 32)
        return sdpa__fail(&ep, SDPA_ERR_OVERFLOW, "sdpa_kv_cache: page size overflows");
    off = SDPA__ROUND_UP((int64_t)sizeof(sdpa__kv_page) + tmp.H, 64);
    tmp.off_k = off;  off += SDPA__ROUND_UP(ks, 64);
    tmp.off_v = off;  off += SDPA__ROUND_UP(vs, 64);
    tmp.off_ks = tmp.off_vs = tmp.off_kc = off;
    if (tmp.dt == SDPA_I8) {
        off += SDPA__ROUND_UP(sc, 64);
        tmp.off_vs = off;
        off += SDPA__ROUND_UP(sc, 64);
        tmp.off_kc = off;
        if (tmp.kchan) off += SDPA__ROUND_UP(cs * 4, 64);
    }
    tmp.page_bytes = off;
    if (!sdpa__bytes_ok(off + 64) || (uint64_t)(off + 64) > (uint64_t)SIZE_MAX)
        return sdpa__fail(&ep, SDPA_ERR_OVERFLOW, "sdpa_kv_cache: a page would be larger than addressable memory");

    c = (sdpa_kv_cache *)sdpa__kv_alloc(&tmp, sizeof *c);
    if (!c) return sdpa__fail(&ep, SDPA_ERR_NOMEM, "sdpa_kv_cache: could not allocate the cache");
    *c = tmp;
    c->seq = (sdpa__kv_seq *)sdpa__kv_alloc(c, (size_t)c->nseq * sizeof(sdpa__kv_seq));
    if (!c->seq) {
        sdpa__kv_free(c, c, sizeof *c);
        return sdpa__fail(&ep, SDPA_ERR_NOMEM, "sdpa_kv_cache: could not allocate %lld sequence tables", (long long)cfg->num_seqs);
    }
    memset(c->seq, 0, (size_t)c->nseq * sizeof(sdpa__kv_seq));
    *out = c;
    return SDPA_OK;
}

static void sdpa__kv_drop_all(sdpa_kv_cache *c, sdpa__kv_seq *s)
{
    int64_t r;
    for (r = 0; r < s->nrun; r++) sdpa__kv_page_release(c, s->run[r].page);
    sdpa__kv_free(c, s->run, (size_t)s->cap * sizeof(sdpa__kv_run));
    s->run = NULL;
    s->nrun = s->cap = s->len = 0;
}

SDPA_API void sdpa_kv_cache_destroy(sdpa_kv_cache *c)
{
    int64_t s;
    if (!c) return;
    for (s = 0; s < c->nseq; s++) sdpa__kv_drop_all(c, &c->seq[s]);
    sdpa__kv_free(c, c->seq, (size_t)c->nseq * sizeof(sdpa__kv_seq));
    {
        sdpa_kv_cache copy = *c; /* the allocator outlives the object it frees */
        sdpa__kv_free(&copy, c, sizeof *c);
    }
}

/* Makes room for `need` runs in s (nothing changes on failure). */
static int sdpa__kv_reserve(sdpa_kv_cache *c, sdpa__kv_seq *s, int64_t need)
{
    sdpa__kv_run *nr;
    int64_t cap;
    if (need <= s->cap) return 1;
    cap = SDPA__MAX(need, SDPA__MAX(8, s->cap * 2));
    if (cap > (int64_t)(SIZE_MAX / sizeof(sdpa__kv_run)) / 2) return 0;
    nr = (sdpa__kv_run *)sdpa__kv_alloc(c, (size_t)cap * sizeof(sdpa__kv_run));
    if (!nr) return 0;
    if (s->nrun) memcpy(nr, s->run, (size_t)s->nrun * sizeof(sdpa__kv_run));
    sdpa__kv_free(c, s->run, (size_t)s->cap * sizeof(sdpa__kv_run));
    s->run = nr;
    s->cap = cap;
    return 1;
}

static int sdpa__kv_seq_arg(const sdpa_kv_cache *c, const sdpa_params *ep, int64_t seq)
{
    if (seq < 0 || seq >= c->nseq)
        return sdpa__fail(ep, SDPA_ERR_PARAM, "sdpa_kv_cache: sequence %lld is outside [0, %lld)", (long long)seq, (long long)c->nseq);
    return SDPA_OK;
}

/* Validates a [1, kv_heads, n, dim] float tensor of a cache call. */
static int sdpa__kv_tensor(const sdpa_kv_cache *c, const sdpa_params *ep, const char *name, const sdpa_tensor *x,
                           int64_t dim, sdpa__tens *t)
{
    int rc = sdpa__tensor(ep, name, x, t);
    if (rc != SDPA_OK) return rc;
    if (!sdpa__is_float(t->dtype))
        return sdpa__fail(ep, SDPA_ERR_DTYPE, "sdpa_kv_cache: %s must be F32, F16 or BF16", name);
    if (t->n[0] != 1 || t->n[1] != c->H || t->n[3] != dim)
        return sdpa__fail(ep, SDPA_ERR_SHAPE, "sdpa_kv_cache: %s must be [1, %lld, n, %lld], got [%lld, %lld, %lld, %lld]", name,
                          (long long)c->H, (long long)dim, (long long)t->n[0], (long long)t->n[1], (long long)t->n[2],
                          (long long)t->n[3]);
    return SDPA_OK;
}

SDPA_API int sdpa_kv_cache_append(sdpa_kv_cache *c, int64_t seq, const sdpa_tensor *k, const sdpa_tensor *v)
{
    sdpa_params ep;
    sdpa__tens kt, vt;
    sdpa__kv_seq *s;
    int64_t n, room = 0, newp, t, h, i;
    char *pages[64], **pg = pages;
    int rc;
    if (!c) return SDPA_ERR_NULL;
    sdpa__kv_ep(c, &ep);
    if ((rc = sdpa__kv_seq_arg(c, &ep, seq)) != SDPA_OK) return rc;
    if ((rc = sdpa__kv_tensor(c, &ep, "k", k, c->D, &kt)) != SDPA_OK) return rc;
    if ((rc = sdpa__kv_tensor(c, &ep, "v", v, c->Dv, &vt)) != SDPA_OK) return rc;
    n = kt.n[2];
    if (vt.n[2] != n)
        return sdpa__fail(&ep, SDPA_ERR_SHAPE, "sdpa_kv_cache_append: k has %lld tokens, v %lld", (long long)n, (long long)vt.n[2]);
    s = &c->seq[seq];
    if (n == 0) return SDPA_OK;
    if (s->len > INT64_MAX / 2 - n)
        return sdpa__fail(&ep, SDPA_ERR_OVERFLOW, "sdpa_kv_cache_append: sequence length overflows");

    /* the last page takes tokens while it has free slots no one else uses */
    if (s->nrun > 0) {
        const sdpa__kv_run *lr = &s->run[s->nrun - 1];
        if (sdpa__kv_refs(lr->page) == 1) room = c->ps - (lr->slot + lr->n);
    }
    newp = n > room ? (n - room + c->ps - 1) / c->ps : 0;
    if (c->max_pages > 0 && newp > c->max_pages - c->pages)
        return sdpa__fail(&ep, SDPA_ERR_CAPACITY, "sdpa_kv_cache_append: %lld more pages needed, %lld of %lld free",
                          (long long)newp, (long long)(c->max_pages - c->pages), (long long)c->max_pages);
    if (newp > 64) {
        if ((uint64_t)newp > SIZE_MAX / sizeof(char *) ||
            !(pg = (char **)sdpa__kv_alloc(c, (size_t)newp * sizeof(char *))))
            return sdpa__fail(&ep, SDPA_ERR_NOMEM, "sdpa_kv_cache_append: out of memory");
    }
    for (i = 0; i < newp; i++)
        if (!(pg[i] = sdpa__kv_page_new(c))) break;
    if (i < newp || !sdpa__kv_reserve(c, s, s->nrun + newp)) { /* undo: the cache is as it was */
        while (i-- > 0) sdpa__kv_page_release(c, pg[i]);
        if (pg != pages) sdpa__kv_free(c, pg, (size_t)newp * sizeof(char *));
        return sdpa__fail(&ep, SDPA_ERR_NOMEM, "sdpa_kv_cache_append: out of memory for %lld pages", (long long)newp);
    }

    /* every check passed: write */
    for (i = 0; i < newp; i++) {
        sdpa__kv_run *r = &s->run[s->nrun++];
        r->page = pg[i];
        r->slot = 0;
        r->n = 0;
        r->pos = s->len + SDPA__MIN(room, n) + i * c->ps;
    }
    if (pg != pages) sdpa__kv_free(c, pg, (size_t)newp * sizeof(char *));
    {
        int64_t ri = s->nrun - newp - (room > 0 ? 1 : 0); /* the run that takes token 0 */
        for (t = 0; t < n; t++) {
            sdpa__kv_run *r = &s->run[ri];
            int64_t slot;
            if (r->slot + r->n == c->ps) r = &s->run[++ri];
            slot = r->slot + r->n;
            for (h = 0; h < c->H; h++) {
                const char *ks = kt.data + (h * kt.s[1] + t * kt.s[2]) * kt.esize;
                const char *vs = vt.data + (h * vt.s[1] + t * vt.s[2]) * vt.esize;
                if (c->kchan)
                    sdpa__kv_put_kchan(c, r->page, h, slot, ks, kt.dtype);
                else
                    sdpa__kv_put((char *)(uintptr_t)sdpa__kv_kptr(c, r->page, h, slot), sdpa__kv_kscale(c, r->page, h, slot), ks,
                                 kt.dtype, c->dt, c->D);
                if (sdpa__kv_put((char *)(uintptr_t)sdpa__kv_vptr(c, r->page, h, slot), sdpa__kv_vscale(c, r->page, h, slot),
                                 vs, vt.dtype, c->dt, c->Dv))
                    sdpa__kv_flags(r->page)[h] = 1;
            }
            r->n++;
        }
    }
    s->len += n;
    return SDPA_OK;
}

/* Removes positions [a, b) of s (0 <= a <= b <= len); later positions move
 * down by b - a. Fails (NOMEM, s unchanged) only when a run must split and
 * the page table cannot grow. */
static int sdpa__kv_cut(sdpa_kv_cache *c, sdpa__kv_seq *s, int64_t a, int64_t b)
{
    int64_t r, w = 0, cut = b - a;
    if (cut == 0) return 1;
    for (r = 0; r < s->nrun; r++) { /* one run holding the whole cut strictly inside: split it */
        sdpa__kv_run *x = &s->run[r];
        if (x->pos < a && b < x->pos + x->n) {
            sdpa__kv_run tail;
            if (!sdpa__kv_reserve(c, s, s->nrun + 1)) return 0;
            x = &s->run[r];
            tail = *x;
            tail.slot += b - x->pos;
            tail.n = x->pos + x->n - b;
            tail.pos = a;
            x->n = a - x->pos;
            memmove(&s->run[r + 2], &s->run[r + 1], (size_t)(s->nrun - r - 1) * sizeof(sdpa__kv_run));
            s->run[r + 1] = tail;
            s->nrun++;
            ((sdpa__kv_page *)(void *)x->page)->refs++;
            for (r += 2; r < s->nrun; r++) s->run[r].pos -= cut;
            s->len -= cut;
            return 1;
        }
    }
    for (r = 0; r < s->nrun; r++) {
        sdpa__kv_run x = s->run[r];
        int64_t e = x.pos + x.n;
        if (e <= a) { s->run[w++] = x; continue; }
        if (x.pos >= b) { x.pos -= cut; s->run[w++] = x; continue; }
        if (x.pos < a) { x.n = a - x.pos; s->run[w++] = x; continue; }  /* keeps its head */
        if (e > b) {                                                      /* keeps its tail */
            x.slot += b - x.pos;
            x.n = e - b;
            x.pos = a;
            s->run[w++] = x;
            continue;
        }
        sdpa__kv_page_release(c, x.page);                                 /* wholly cut */
    }
    s->nrun = w;
    s->len -= cut;
    return 1;
}

SDPA_API int sdpa_kv_cache_truncate(sdpa_kv_cache *c, int64_t seq, int64_t len)
{
    sdpa_params ep;
    int rc;
    if (!c) return SDPA_ERR_NULL;
    sdpa__kv_ep(c, &ep);
    if ((rc = sdpa__kv_seq_arg(c, &ep, seq)) != SDPA_OK) return rc;
    if (len < 0 || len > c->seq[seq].len)
        return sdpa__fail(&ep, SDPA_ERR_PARAM, "sdpa_kv_cache_truncate: len %lld is outside [0, %lld]", (long long)len,
                          (long long)c->seq[seq].len);
    sdpa__kv_cut(c, &c->seq[seq], len, c->seq[seq].len); /* a tail cut never splits */
    return SDPA_OK;
}

SDPA_API int sdpa_kv_cache_evict(sdpa_kv_cache *c, int64_t seq, int64_t n_sink, int64_t n_recent)
{
    sdpa_params ep;
    sdpa__kv_seq *s;
    int rc;
    if (!c) return SDPA_ERR_NULL;
    sdpa__kv_ep(c, &ep);
    if ((rc = sdpa__kv_seq_arg(c, &ep, seq)) != SDPA_OK) return rc;
    if (n_sink < 0 || n_recent < 0)
        return sdpa__fail(&ep, SDPA_ERR_PARAM, "sdpa_kv_cache_evict: n_sink and n_recent must be >= 0");
    s = &c->seq[seq];
    if (n_sink >= s->len || n_recent >= s->len - n_sink) return SDPA_OK;
    if (!sdpa__kv_cut(c, s, n_sink, s->len - n_recent))
        return sdpa__fail(&ep, SDPA_ERR_NOMEM, "sdpa_kv_cache_evict: could not grow the page table");
    return SDPA_OK;
}

SDPA_API int sdpa_kv_cache_fork(sdpa_kv_cache *c, int64_t dst, int64_t src, int64_t len)
{
    sdpa_params ep;
    sdpa__kv_seq *d, *s;
    int64_t nr = 0, r;
    int rc;
    if (!c) return SDPA_ERR_NULL;
    sdpa__kv_ep(c, &ep);
    if ((rc = sdpa__kv_seq_arg(c, &ep, dst)) != SDPA_OK || (rc = sdpa__kv_seq_arg(c, &ep, src)) != SDPA_OK) return rc;
    if (dst == src) return sdpa__fail(&ep, SDPA_ERR_PARAM, "sdpa_kv_cache_fork: dst and src are both %lld", (long long)dst);
    d = &c->seq[dst];
    s = &c->seq[src];
    if (len < 0 || len > s->len)
        return sdpa__fail(&ep, SDPA_ERR_PARAM, "sdpa_kv_cache_fork: len %lld is outside [0, %lld]", (long long)len, (long long)s->len);
    while (nr < s->nrun && s->run[nr].pos < len) nr++;
    {   /* the new table first, so that a failure leaves dst as it was */
        sdpa__kv_run *tab = NULL;
        if (nr > 0 && !(tab = (sdpa__kv_run *)sdpa__kv_alloc(c, (size_t)nr * sizeof(sdpa__kv_run))))
            return sdpa__fail(&ep, SDPA_ERR_NOMEM, "sdpa_kv_cache_fork: could not allocate the page table");
        sdpa__kv_drop_all(c, d);
        if (nr > 0) {
            memcpy(tab, s->run, (size_t)nr * sizeof(sdpa__kv_run));
            for (r = 0; r < nr; r++) ((sdpa__kv_page *)(void *)tab[r].page)->refs++;
            tab[nr - 1].n = len - tab[nr - 1].pos;
        }
        d->run = tab;
        d->nrun = d->cap = nr;
        d->len = len;
    }
    return SDPA_OK;
}

SDPA_API int sdpa_kv_cache_reset(sdpa_kv_cache *c, int64_t seq)
{
    sdpa_params ep;
    int64_t s;
    if (!c) return SDPA_ERR_NULL;
    sdpa__kv_ep(c, &ep);
    if (seq == -1) {
        for (s = 0; s < c->nseq; s++) sdpa__kv_drop_all(c, &c->seq[s]);
        return SDPA_OK;
    }
    if (sdpa__kv_seq_arg(c, &ep, seq) != SDPA_OK) return SDPA_ERR_PARAM;
    sdpa__kv_drop_all(c, &c->seq[seq]);
    return SDPA_OK;
}

SDPA_API int64_t sdpa_kv_cache_len(const sdpa_kv_cache *c, int64_t seq)
{
    if (!c) return SDPA_ERR_NULL;
    if (seq < 0 || seq >= c->nseq) return SDPA_ERR_PARAM;
    return c->seq[seq].len;
}

SDPA_API int64_t sdpa_kv_cache_bytes(const sdpa_kv_cache *c) { return c ? c->bytes : (int64_t)SDPA_ERR_NULL; }

/* The run of s holding position p (0 <= p < len). */
static int64_t sdpa__kv_find(const sdpa__kv_seq *s, int64_t p)
{
    int64_t lo = 0, hi = s->nrun - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (s->run[mid].pos <= p) lo = mid; else hi = mid - 1;
    }
    return lo;
}

SDPA_API int sdpa_kv_cache_read(const sdpa_kv_cache *c, int64_t seq, int64_t pos, const sdpa_tensor *k, const sdpa_tensor *v)
{
    sdpa_params ep;
    sdpa__tens t[2];
    const sdpa__kv_seq *s;
    int64_t n = -1, x, h, j, d;
    int rc, w;
    if (!c) return SDPA_ERR_NULL;
    sdpa__kv_ep(c, &ep);
    if ((rc = sdpa__kv_seq_arg(c, &ep, seq)) != SDPA_OK) return rc;
    if (!k && !v) return sdpa__fail(&ep, SDPA_ERR_NULL, "sdpa_kv_cache_read: k and v are both NULL");
    if (k && (rc = sdpa__kv_tensor(c, &ep, "k", k, c->D, &t[0])) != SDPA_OK) return rc;
    if (v && (rc = sdpa__kv_tensor(c, &ep, "v", v, c->Dv, &t[1])) != SDPA_OK) return rc;
    if (k) n = t[0].n[2];
    if (v) {
        if (n >= 0 && t[1].n[2] != n) return sdpa__fail(&ep, SDPA_ERR_SHAPE, "sdpa_kv_cache_read: k and v token counts differ");
        n = t[1].n[2];
    }
    s = &c->seq[seq];
    if (pos < 0 || pos > s->len || n > s->len - pos)
        return sdpa__fail(&ep, SDPA_ERR_PARAM, "sdpa_kv_cache_read: tokens %lld..%lld are outside [0, %lld)", (long long)pos,
                          (long long)(pos + n - 1), (long long)s->len);
    if ((k && !sdpa__injective(&t[0])) || (v && !sdpa__injective(&t[1])) || (k && v && sdpa__overlap(&t[0], t[1].lo, t[1].hi)))
        return sdpa__fail(&ep, SDPA_ERR_ALIAS, "sdpa_kv_cache_read: k and v overlap");
    for (x = 0; x < n; x++) {
        const sdpa__kv_run *r = &s->run[sdpa__kv_find(s, pos + x)];
        int64_t slot = r->slot + (pos + x - r->pos);
        for (w = 0; w < 2; w++) {
            int64_t dim = w ? c->Dv : c->D;
            if (!(w ? v : k)) continue;
            for (h = 0; h < c->H; h++) {
                const char *src = w ? sdpa__kv_vptr(c, r->page, h, slot) : sdpa__kv_kptr(c, r->page, h, slot);
                float sc = c->dt != SDPA_I8 ? 1.0f : *(w ? sdpa__kv_vscale(c, r->page, h, slot) : sdpa__kv_kscale(c, r->page, h, slot));
                const float *cs = !w && c->kchan ? sdpa__kv_kchan(c, r->page, h) : NULL; /* k = q * channel scale * factor */
                char *dst = (char *)(uintptr_t)t[w].data + (h * t[w].s[1] + x * t[w].s[2]) * t[w].esize;
                for (j = 0; j < dim; j += 64) { /* through a small buffer: store_row takes floats */
                    float buf[64];
                    int64_t m = SDPA__MIN(64, dim - j);
                    for (d = 0; d < m; d++) buf[d] = (cs ? sdpa__kv_get(src, c->dt, j + d) * cs[j + d] : sdpa__kv_get(src, c->dt, j + d)) * sc;
                    sdpa__store_row(dst + j * t[w].esize, t[w].dtype, buf, m, 1.0f);
                }
            }
        }
    }
    return SDPA_OK;
}

/* ---- attention over the cache: kernels ---------------------------------- */

/* A hint that [p, p + n) is read soon (nothing is read here). The cache's
 * rows are contiguous per head within a page, but the kernels read K and
 * then V one after the other: asking for the V rows while Q K^T runs, and
 * for the next span's K rows while P V runs, keeps two streams in flight.
 * l2: ask for the lines in L2 (prefetcht1 on x86) rather than L1 (see
 * sdpa__kv_grouping for where and why). */
SDPA__INLINE void sdpa__prefetch(const char *p, int64_t n, int l2)
{
#if defined(__GNUC__) || defined(__clang__)
    int64_t o;
    if (l2)
        for (o = 0; o < n; o += 64) __builtin_prefetch(p + o, 0, 2);
    else
        for (o = 0; o < n; o += 64) __builtin_prefetch(p + o, 0, SDPA__KV_PF);
#else
    (void)p, (void)n, (void)l2;
#endif
}

/* S[r * lds + j] = dot(Q row r, key j) * ksc[j] (ksc NULL: 1) for r < M,
 * j < N. Key j is row j of K (D elements of dtype t, F32/F16/BF16/I8, packed
 * rows): read as stored, never widened into a copy of the block. */
typedef void (*sdpa__kdot_fn)(int64_t M, int64_t N, int64_t D, const float *Q, int64_t ldq, const char *K,
                              sdpa_dtype t, const float *ksc, float *S, int64_t lds, float *tmp);
/* O[r * ldo + d] += sum_j P[r * ldp + j] * V row j [d] for r < M, d < Dv. */
typedef void (*sdpa__vacc_fn)(int64_t M, int64_t N, int64_t Dv, const float *P, int64_t ldp, const char *V,
                              sdpa_dtype t, float *O, int64_t ldo, float *tmp);

static void sdpa__kv_widen(float *SDPA__RESTRICT dst, const char *src, sdpa_dtype t, int64_t n)
{
    int64_t i;
    if (t == SDPA_I8) {
        const signed char *s = (const signed char *)src;
        for (i = 0; i < n; i++) dst[i] = (float)s[i];
    } else {
        sdpa__load_row(dst, src, t, n, 1.0f);
    }
}

/* Portable forms: the key (value) row widened once into tmp (one row, in
 * L1), then 8-lane dot products (axpys) that the compiler vectorises. */
static void sdpa__kdot_scalar(int64_t M, int64_t N, int64_t D, const float *Q, int64_t ldq, const char *K,
                              sdpa_dtype t, const float *ksc, float *S, int64_t lds, float *tmp)
{
    int64_t j, r, d, ks = D * sdpa__esize(t);
    for (j = 0; j < N; j++) {
        sdpa__kv_widen(tmp, K + j * ks, t, D);
        for (r = 0; r < M; r++) {
            const float *SDPA__RESTRICT q = Q + r * ldq;
            float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0}, s;
            int c;
            for (d = 0; d + 8 <= D; d += 8)
                for (c = 0; c < 8; c++) lane[c] += q[d + c] * tmp[d + c];
            s = ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7]));
            for (; d < D; d++) s += q[d] * tmp[d];
            S[r * lds + j] = ksc ? s * ksc[j] : s;
        }
    }
}

/* Skips zero probabilities, so a key a row cannot see adds nothing even when
 * its V row holds Inf or NaN: the careful form every path uses for such rows. */
static void sdpa__vacc_scalar(int64_t M, int64_t N, int64_t Dv, const float *P, int64_t ldp, const char *V,
                              sdpa_dtype t, float *O, int64_t ldo, float *tmp)
{
    int64_t j, r, d, vs = Dv * sdpa__esize(t);
    for (j = 0; j < N; j++) {
        sdpa__kv_widen(tmp, V + j * vs, t, Dv);
        for (r = 0; r < M; r++) {
            float p = P[r * ldp + j], *SDPA__RESTRICT o = O + r * ldo;
            if (p == 0.0f) continue;
            for (d = 0; d < Dv; d++) o[d] += p * tmp[d];
        }
    }
}

/* I8 keys against queries rounded to int16 (per row: q = qsc * q16): exact
 * int32 dot products, then S = (float)dot * qsc[r] * ksc[j]. |q16| <= 32767
 * and |k| <= 127, so D <= SDPA__KV_I16_MAX_D keeps every int32 partial sum
 * exact, whatever the order: every path gives the same bits. */
#define SDPA__KV_I16_MAX_D 4096
typedef void (*sdpa__kdot16_fn)(int64_t M, int64_t N, int64_t D, const int16_t *Q, int64_t ldq, const float *qsc,
                                const signed char *K, const float *ksc, float *S, int64_t lds);

static void sdpa__kdot16_scalar(int64_t M, int64_t N, int64_t D, const int16_t *Q, int64_t ldq, const float *qsc,
                                const signed char *K, const float *ksc, float *S, int64_t lds)
{
    int64_t r, j, d;
    for (j = 0; j < N; j++)
        for (r = 0; r < M; r++) {
            const int16_t *q = Q + r * ldq;
            const signed char *k = K + j * D;
            int32_t acc = 0;
            for (d = 0; d < D; d++) acc += (int32_t)q[d] * (int32_t)k[d];
            S[r * lds + j] = (float)acc * qsc[r] * ksc[j];
        }
}

/* P V for I8 values in integer arithmetic: per row, P times the value
 * scales, rounded to int16 with one scale for the call (pq = p' / ps, ps =
 * max p' / 32767), then exact int32 sums of pq * v over the call's keys
 * (N <= SDPA__KV_SPAN, so |sum| <= 64 * 32767 * 127 < 2^31), then
 * O += ps * sum. The rounding of p' costs 2^-16 of the row's largest
 * weight, far below the int8 values' own rounding. A row whose weights are
 * not finite, or so small that 32767 / max overflows, takes the float form
 * (vacc with the scales folded in), as does a page flagged non-finite.
 * P is scratch: the float form overwrites it. pf/pfb: bytes to prefetch
 * (the next span's K rows) while the sums run, into L2 when pfl2. */
typedef void (*sdpa__vacc8_fn)(int64_t M, int64_t N, int64_t Dv, float *P, int64_t ldp, const float *vsc,
                               const signed char *V, float *O, int64_t ldo, float *tmp, const char *pf, int64_t pfb, int pfl2);

/* One row's weights as int16 pairs: pp[j / 2] = pq[j] | pq[j + 1] << 16 (a
 * zero after an odd last key). Returns ps; 0 when every weight is 0 (the
 * row adds nothing); -1 when the row must take the float form. A weight of
 * exactly 0 stays 0 even where the scale is NaN. */
static float sdpa__kv_pq(const float *P, const float *vsc, int64_t N, int32_t *pp)
{
    float x[SDPA__KV_SPAN], amax = 0.0f, inv;
    int64_t j;
    int bad = 0;
    for (j = 0; j < N; j++) {
        float y = P[j] == 0.0f ? 0.0f : P[j] * vsc[j];
        bad |= !(y >= 0.0f && y <= 3.0e38f);
        x[j] = y;
        amax = y > amax ? y : amax;
    }
    if (bad || (amax > 0.0f && amax < 1e-30f)) return -1.0f;
    if (amax == 0.0f) {
        for (j = 0; j < N; j += 2) pp[j / 2] = 0;
        return 0.0f;
    }
    inv = 32767.0f / amax;
    for (j = 0; j < N; j += 2) {
        int32_t a = (int32_t)(x[j] * inv + 0.5f), b = j + 1 < N ? (int32_t)(x[j + 1] * inv + 0.5f) : 0;
        a = a > 32767 ? 32767 : a;
        b = b > 32767 ? 32767 : b;
        pp[j / 2] = (int32_t)((uint32_t)a | ((uint32_t)b << 16));
    }
    return amax / 32767.0f;
}

/* The float form of one row: scales folded into P in place, then vacc. */
static void sdpa__vacc8_row_float(sdpa__vacc_fn vacc, int64_t N, int64_t Dv, float *P, const float *vsc,
                                  const signed char *V, float *O, float *tmp)
{
    int64_t j;
    for (j = 0; j < N; j++) P[j] = P[j] == 0.0f ? 0.0f : P[j] * vsc[j];
    vacc(1, N, Dv, P, 0, (const char *)V, SDPA_I8, O, 0, tmp);
}

/* Portable form: int32 sums in tmp (Dv of them), key by key, in loops the
 * compiler vectorises. */
static void sdpa__vacc8_scalar(int64_t M, int64_t N, int64_t Dv, float *P, int64_t ldp, const float *vsc,
                               const signed char *V, float *O, int64_t ldo, float *tmp, const char *pf, int64_t pfb, int pfl2)
{
    int32_t pp[SDPA__KV_SPAN / 2], *SDPA__RESTRICT acc = (int32_t *)(void *)tmp;
    int64_t r, j, d;
    for (r = 0; r < M; r++) {
        float ps = sdpa__kv_pq(P + r * ldp, vsc, N, pp), *o = O + r * ldo;
        if (ps < 0.0f) {
            sdpa__vacc8_row_float(sdpa__vacc_scalar, N, Dv, P + r * ldp, vsc, V, o, tmp);
            continue;
        }
        if (ps == 0.0f) continue;
        for (d = 0; d < Dv; d++) acc[d] = 0;
        for (j = 0; j < N; j++) {
            const signed char *SDPA__RESTRICT v = V + j * Dv;
            int32_t w = (int32_t)(int16_t)(uint16_t)((uint32_t)pp[j / 2] >> (j % 2 ? 16 : 0));
            for (d = 0; d < Dv; d++) acc[d] += w * (int32_t)v[d];
        }
        for (d = 0; d < Dv; d++) o[d] += ps * (float)acc[d];
    }
    sdpa__prefetch(pf, pfb, pfl2);
}

/* Rounds a query row to integers in [-lim, lim] with one scale (max|x| /
 * lim): lim 32767 (int16, the default) or 127 (int8 mode, SDPA_PRECISION_
 * INT8_QK); a row with a NaN or Inf gets a NaN scale, so its scores are NaN. */
static void sdpa__kv_q16(int16_t *q16, float *qs, const float *x, int64_t n, int lim)
{
    float amax = 0.0f;
    double inv; /* double: 32767 / amax overflows float for amax below ~1e-34 */
    int64_t d;
    int bad = 0;
    for (d = 0; d < n; d++) {
        float a = fabsf(x[d]);
        if (!sdpa__kv_finite(a)) bad = 1;
        else if (a > amax) amax = a;
    }
    *qs = bad ? (float)NAN : amax / (float)lim;
    inv = amax > 0.0f && !bad ? (double)lim / (double)amax : 0.0;
    for (d = 0; d < n; d++) {
        double y = (double)x[d] * inv;
        int32_t v = (int32_t)(y + (y >= 0.0 ? 0.5 : -0.5));
        q16[d] = (int16_t)(v > lim ? lim : (v < -lim ? -lim : v));
    }
}

/* I8 keys scaled per channel: the query row times a page's channel scales
 * cs, rounded to integers in [-lim, lim] (32767, or 127 in int8 mode) with
 * one scale (max / lim), so that the page's keys dot it in the integer
 * kernels. Float products, the scale's reciprocal in
 * float and rounding to nearest even (the default mode): the AVX2 and
 * AVX-512 forms give the same bits. A row whose largest |x| is below 1e-30 becomes
 * zeros (scale 0), one with NaN or Inf zeros with a NaN scale. */
#define SDPA__KV_Q16_TINY 1e-30f
typedef void (*sdpa__kv_q16c_fn)(int16_t *q16, float *qs, const float *q, const float *cs, int64_t n, int lim);

/* The scalar pieces, shared with the vector form's tails: elements [d, n)
 * scanned into *amax (returns 1 for a NaN or Inf), the row's scale set (0
 * when the row becomes zeros), elements [d, n) rounded. */
static int sdpa__kv_q16c_scan(const float *q, const float *cs, int64_t d, int64_t n, float *amax)
{
    int bad = 0;
    for (; d < n; d++) {
        float a = fabsf(q[d] * cs[d]);
        if (!sdpa__kv_finite(a)) bad = 1;
        else if (a > *amax) *amax = a;
    }
    return bad;
}
static float sdpa__kv_q16c_scale(int16_t *q16, float *qs, int bad, float amax, int64_t n, int lim)
{
    if (bad || !(amax >= SDPA__KV_Q16_TINY)) {
        memset(q16, 0, (size_t)n * sizeof(int16_t));
        *qs = bad ? (float)NAN : 0.0f;
        return 0.0f;
    }
    *qs = amax / (float)lim;
    return (float)lim / amax; /* the reciprocal every form multiplies by */
}
static void sdpa__kv_q16c_round(int16_t *q16, const float *q, const float *cs, float inv, int64_t d, int64_t n, int lim)
{
    for (; d < n; d++) {
        long v = lrintf(q[d] * cs[d] * inv); /* |v| <= lim (+1 at most from inv's rounding) */
        q16[d] = (int16_t)(v > lim ? lim : (v < -lim ? -lim : v));
    }
}

static void sdpa__kv_q16c_scalar(int16_t *q16, float *qs, const float *q, const float *cs, int64_t n, int lim)
{
    float amax = 0.0f, inv;
    int bad = sdpa__kv_q16c_scan(q, cs, 0, n, &amax);
    if ((inv = sdpa__kv_q16c_scale(q16, qs, bad, amax, n, lim)) != 0.0f) sdpa__kv_q16c_round(q16, q, cs, inv, 0, n, lim);
}

#ifdef SDPA__HAVE_AVX2
#ifndef SDPA__UNROLL
#if defined(__GNUC__) && !defined(__clang__)
#define SDPA__UNROLL _Pragma("GCC unroll 16")
#else
#define SDPA__UNROLL _Pragma("unroll")
#endif
#endif
/* for (i = 0; i < n; i++) over a block's rows, keys or columns, n <= max and
 * n a constant where the block is inlined: a loop of constant trip count
 * with a guard, which clang unrolls fully before inlining (a loop to n it
 * only partly unrolled, keeping the accumulators in memory: the int8 Q.K^T
 * ran 2.7x slower than gcc's); gcc's code is the same either way. */
#ifndef SDPA__FOR
#define SDPA__FOR(i, n, max) SDPA__UNROLL for (i = 0; i < (max); i++) if (i < (n))
#endif

static inline __attribute__((always_inline)) SDPA__TARGET_AVX2 __m256 sdpa__ld8_kv_avx2(const char *p, sdpa_dtype t)
{
    if (t == SDPA_I8) return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)p)));
    return sdpa__load8_avx2(p, t);
}

/* The lane sums of four accumulators at once, each in the same fixed tree
 * ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7)): a dot product has the
 * same bits whichever block (and which slot of the four) computed it. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX2 __m128 sdpa__hsum4_avx2(__m256 a, __m256 b, __m256 c, __m256 d)
{
    __m256 x = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
}

/* One dot product finished from its lane sum: the D % 8 tail elements
 * added, the key's scale applied. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX2 float
sdpa__kdot_end_avx2(float s, const float *q, const char *kr, sdpa_dtype t, int64_t d, int64_t D, float sc)
{
    for (; d < D; d++) s += q[d] * sdpa__kv_get(kr, t, d);
    return s * sc;
}

/* R query rows x KC keys in R*KC accumulators (R*KC <= 8); each key's 8 elements are
 * loaded and widened once for all R rows. Every dot product is summed in the
 * same order whichever block computes it. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX2 void
sdpa__kdot_blk_avx2(const int R, const int KC, int64_t D, const float *q, int64_t ldq, const char *kr, sdpa_dtype t,
                    const float *ksc, float *S, int64_t lds)
{
    const int64_t es = t == SDPA_F32 ? 4 : (t == SDPA_I8 ? 1 : 2), ks = D * es, D8 = D & ~(int64_t)7;
    __m256 acc[4][4], x[4];
    int64_t d;
    int a, c;
    SDPA__FOR(a, R, 4) SDPA__FOR(c, KC, 4) acc[a][c] = _mm256_setzero_ps();
    for (d = 0; d < D8; d += 8) {
        SDPA__FOR(a, R, 4) x[a] = _mm256_loadu_ps(q + a * ldq + d);
        SDPA__FOR(c, KC, 4) {
            __m256 kv = sdpa__ld8_kv_avx2(kr + c * ks + d * es, t);
            SDPA__FOR(a, R, 4) acc[a][c] = _mm256_fmadd_ps(x[a], kv, acc[a][c]);
        }
    }
    if (R == 4) { /* per key, its four rows */
        SDPA__FOR(c, KC, 4) {
            float h[4];
            _mm_storeu_ps(h, sdpa__hsum4_avx2(acc[0][c], acc[1][c], acc[2][c], acc[3][c]));
            SDPA__UNROLL for (a = 0; a < 4; a++)
                S[a * lds + c] = sdpa__kdot_end_avx2(h[a], q + a * ldq, kr + c * ks, t, D8, D, ksc ? ksc[c] : 1.0f);
        }
    } else { /* per row, its keys (up to four; a single one repeated) */
        SDPA__FOR(a, R, 4) {
            float h[4];
            _mm_storeu_ps(h, sdpa__hsum4_avx2(acc[a][0], acc[a][KC > 1 ? 1 : 0], acc[a][KC > 2 ? 2 : 0], acc[a][KC > 3 ? 3 : 0]));
            SDPA__FOR(c, KC, 4)
                S[a * lds + c] = sdpa__kdot_end_avx2(h[c], q + a * ldq, kr + c * ks, t, D8, D, ksc ? ksc[c] : 1.0f);
        }
    }
}

static inline __attribute__((always_inline)) SDPA__TARGET_AVX2 void
sdpa__kdot_body_avx2(int64_t M, int64_t N, int64_t D, const float *Q, int64_t ldq, const char *K, sdpa_dtype t,
                     const float *ksc, float *S, int64_t lds)
{
    const int64_t ks = D * (t == SDPA_F32 ? 4 : (t == SDPA_I8 ? 1 : 2));
    int64_t r = 0, j;
    for (; r + 4 <= M; r += 4) { /* 4 rows (a GQA group) x 2 keys: each key widened once for 4 rows */
        for (j = 0; j + 2 <= N; j += 2)
            sdpa__kdot_blk_avx2(4, 2, D, Q + r * ldq, ldq, K + j * ks, t, ksc ? ksc + j : NULL, S + r * lds + j, lds);
        if (j < N)
            sdpa__kdot_blk_avx2(4, 1, D, Q + r * ldq, ldq, K + j * ks, t, ksc ? ksc + j : NULL, S + r * lds + j, lds);
    }
    for (; r + 2 <= M; r += 2) { /* row pairs x 4 keys: 8 accumulators */
        for (j = 0; j + 4 <= N; j += 4)
            sdpa__kdot_blk_avx2(2, 4, D, Q + r * ldq, ldq, K + j * ks, t, ksc ? ksc + j : NULL, S + r * lds + j, lds);
        for (; j < N; j++)
            sdpa__kdot_blk_avx2(2, 1, D, Q + r * ldq, ldq, K + j * ks, t, ksc ? ksc + j : NULL, S + r * lds + j, lds);
    }
    if (r < M) { /* the odd row x 4 keys (8 key pointers would not fit the registers) */
        for (j = 0; j + 4 <= N; j += 4)
            sdpa__kdot_blk_avx2(1, 4, D, Q + r * ldq, ldq, K + j * ks, t, ksc ? ksc + j : NULL, S + r * lds + j, lds);
        for (; j < N; j++)
            sdpa__kdot_blk_avx2(1, 1, D, Q + r * ldq, ldq, K + j * ks, t, ksc ? ksc + j : NULL, S + r * lds + j, lds);
    }
}

SDPA__TARGET_AVX2 static void sdpa__kdot_avx2(int64_t M, int64_t N, int64_t D, const float *Q, int64_t ldq, const char *K,
                                              sdpa_dtype t, const float *ksc, float *S, int64_t lds, float *tmp)
{
    (void)tmp;
    switch (t) { /* one copy per dtype: the loads compile to their instructions */
    case SDPA_F32: sdpa__kdot_body_avx2(M, N, D, Q, ldq, K, SDPA_F32, ksc, S, lds); break;
    case SDPA_F16: sdpa__kdot_body_avx2(M, N, D, Q, ldq, K, SDPA_F16, ksc, S, lds); break;
    case SDPA_BF16: sdpa__kdot_body_avx2(M, N, D, Q, ldq, K, SDPA_BF16, ksc, S, lds); break;
    default: sdpa__kdot_body_avx2(M, N, D, Q, ldq, K, SDPA_I8, ksc, S, lds); break;
    }
}

/* The int16 x int8 dot products: 16 keys' bytes widened to int16 once
 * (vpmovsxbw) for R rows, vpmaddwd pairs them with the query, vpaddd sums. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX2 void
sdpa__kdot16_blk_avx2(const int R, const int KC, int64_t D, const int16_t *q, int64_t ldq, const float *qsc,
                      const signed char *k, const float *ksc, float *S, int64_t lds)
{
    const int64_t D16 = D & ~(int64_t)15;
    __m256i acc[4][4];
    int64_t d;
    int a, c;
    SDPA__FOR(a, R, 4) SDPA__FOR(c, KC, 4) acc[a][c] = _mm256_setzero_si256();
    for (d = 0; d < D16; d += 16) {
        __m256i x[4];
        SDPA__FOR(a, R, 4) x[a] = _mm256_loadu_si256((const __m256i *)(const void *)(q + a * ldq + d));
        SDPA__FOR(c, KC, 4) {
            __m256i kv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(k + c * D + d)));
            SDPA__FOR(a, R, 4) acc[a][c] = _mm256_add_epi32(acc[a][c], _mm256_madd_epi16(x[a], kv));
        }
    }
    /* exact integer sums: any order gives the same bits; four at a time */
    if (R == 4) {
        SDPA__FOR(c, KC, 4) {
            int32_t h[4];
            __m256i x = _mm256_hadd_epi32(_mm256_hadd_epi32(acc[0][c], acc[1][c]), _mm256_hadd_epi32(acc[2][c], acc[3][c]));
            _mm_storeu_si128((__m128i *)(void *)h, _mm_add_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1)));
            SDPA__UNROLL for (a = 0; a < 4; a++) {
                int32_t sum = h[a];
                for (d = D16; d < D; d++) sum += (int32_t)q[a * ldq + d] * (int32_t)k[c * D + d];
                S[a * lds + c] = (float)sum * qsc[a] * ksc[c];
            }
        }
    } else {
        SDPA__FOR(a, R, 4) {
            int32_t h[4];
            __m256i x = _mm256_hadd_epi32(_mm256_hadd_epi32(acc[a][0], acc[a][KC > 1 ? 1 : 0]),
                                          _mm256_hadd_epi32(acc[a][KC > 2 ? 2 : 0], acc[a][KC > 3 ? 3 : 0]));
            _mm_storeu_si128((__m128i *)(void *)h, _mm_add_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1)));
            SDPA__FOR(c, KC, 4) {
                int32_t sum = h[c];
                for (d = D16; d < D; d++) sum += (int32_t)q[a * ldq + d] * (int32_t)k[c * D + d];
                S[a * lds + c] = (float)sum * qsc[a] * ksc[c];
            }
        }
    }
}

SDPA__TARGET_AVX2 static void sdpa__kdot16_avx2(int64_t M, int64_t N, int64_t D, const int16_t *Q, int64_t ldq, const float *qsc,
                                                const signed char *K, const float *ksc, float *S, int64_t lds)
{
    int64_t r = 0, j;
    for (; r + 4 <= M; r += 4) { /* 4 rows x 2 keys (GQA groups) */
        for (j = 0; j + 2 <= N; j += 2)
            sdpa__kdot16_blk_avx2(4, 2, D, Q + r * ldq, ldq, qsc + r, K + j * D, ksc + j, S + r * lds + j, lds);
        if (j < N) sdpa__kdot16_blk_avx2(4, 1, D, Q + r * ldq, ldq, qsc + r, K + j * D, ksc + j, S + r * lds + j, lds);
    }
    for (; r < M; r++) { /* single rows x 4 keys */
        for (j = 0; j + 4 <= N; j += 4)
            sdpa__kdot16_blk_avx2(1, 4, D, Q + r * ldq, ldq, qsc + r, K + j * D, ksc + j, S + r * lds + j, lds);
        for (; j < N; j++) sdpa__kdot16_blk_avx2(1, 1, D, Q + r * ldq, ldq, qsc + r, K + j * D, ksc + j, S + r * lds + j, lds);
    }
}

/* sdpa__kv_q16c_scalar on ymm registers: the same float operations, the
 * same bits (vcvtps2dq rounds to nearest even, as lrintf does by default). */
SDPA__TARGET_AVX2 static void sdpa__kv_q16c_avx2(int16_t *q16, float *qs, const float *q, const float *cs, int64_t n, int lim)
{
    const __m256 sign = _mm256_set1_ps(-0.0f), inf = _mm256_set1_ps((float)INFINITY);
    __m256 vmax = _mm256_setzero_ps(), vbad = _mm256_setzero_ps(), vinv;
    float amax, inv, lane[8];
    int64_t d = 0, n8 = n & ~(int64_t)7;
    int bad = 0, c;
    for (; d < n8; d += 8) {
        __m256 a = _mm256_andnot_ps(sign, _mm256_mul_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(cs + d)));
        vbad = _mm256_or_ps(vbad, _mm256_cmp_ps(a, inf, _CMP_NLT_UQ)); /* Inf or NaN */
        vmax = _mm256_max_ps(vmax, a);
    }
    _mm256_storeu_ps(lane, vmax);
    amax = 0.0f;
    for (c = 0; c < 8; c++) amax = lane[c] > amax ? lane[c] : amax;
    bad = sdpa__kv_q16c_scan(q, cs, n8, n, &amax) | (_mm256_movemask_ps(vbad) != 0);
    if ((inv = sdpa__kv_q16c_scale(q16, qs, bad, amax, n, lim)) == 0.0f) return;
    vinv = _mm256_set1_ps(inv);
    for (d = 0; d < n8; d += 8) {
        __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(cs + d)), vinv));
        __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)); /* saturates at +-32767.x */
        w = _mm_max_epi16(_mm_min_epi16(w, _mm_set1_epi16((short)lim)), _mm_set1_epi16((short)-lim));
        _mm_storeu_si128((__m128i *)(void *)(q16 + d), w);
    }
    sdpa__kv_q16c_round(q16, q, cs, inv, n8, n, lim);
}

/* R rows x 8W columns of O in R*W accumulators, over N keys: per key, W
 * loads (widened once for all rows) and R broadcasts. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX2 void
sdpa__vacc_blk_avx2(const int R, const int W, int64_t N, int64_t Dv, const float *P, int64_t ldp, const char *V,
                    sdpa_dtype t, float *O, int64_t ldo)
{
    const int64_t es = t == SDPA_F32 ? 4 : (t == SDPA_I8 ? 1 : 2), vs = Dv * es;
    __m256 acc[4][8];
    int64_t j;
    int a, w;
    SDPA__FOR(a, R, 4) SDPA__FOR(w, W, 8) acc[a][w] = _mm256_loadu_ps(O + a * ldo + 8 * w);
    for (j = 0; j < N; j++) {
        __m256 x[8];
        SDPA__FOR(w, W, 8) x[w] = sdpa__ld8_kv_avx2(V + j * vs + 8 * w * es, t);
        SDPA__FOR(a, R, 4) {
            __m256 p = _mm256_broadcast_ss(P + a * ldp + j);
            SDPA__FOR(w, W, 8) acc[a][w] = _mm256_fmadd_ps(p, x[w], acc[a][w]);
        }
    }
    SDPA__FOR(a, R, 4) SDPA__FOR(w, W, 8) _mm256_storeu_ps(O + a * ldo + 8 * w, acc[a][w]);
}

static inline __attribute__((always_inline)) SDPA__TARGET_AVX2 void
sdpa__vacc_body_avx2(int64_t M, int64_t N, int64_t Dv, const float *P, int64_t ldp, const char *V, sdpa_dtype t,
                     float *O, int64_t ldo)
{
    const int64_t es = t == SDPA_F32 ? 4 : (t == SDPA_I8 ? 1 : 2), vs = Dv * es, D8 = Dv & ~(int64_t)7;
    int64_t r = 0, d, j;
    for (; r + 4 <= M; r += 4) { /* 4 rows x 16 columns */
        for (d = 0; d + 16 <= D8; d += 16) sdpa__vacc_blk_avx2(4, 2, N, Dv, P + r * ldp, ldp, V + d * es, t, O + r * ldo + d, ldo);
        if (d < D8) sdpa__vacc_blk_avx2(4, 1, N, Dv, P + r * ldp, ldp, V + d * es, t, O + r * ldo + d, ldo);
    }
    for (; r < M; r++) { /* single rows x 64 columns */
        for (d = 0; d + 64 <= D8; d += 64) sdpa__vacc_blk_avx2(1, 8, N, Dv, P + r * ldp, ldp, V + d * es, t, O + r * ldo + d, ldo);
        for (; d + 32 <= D8; d += 32) sdpa__vacc_blk_avx2(1, 4, N, Dv, P + r * ldp, ldp, V + d * es, t, O + r * ldo + d, ldo);
        for (; d + 16 <= D8; d += 16) sdpa__vacc_blk_avx2(1, 2, N, Dv, P + r * ldp, ldp, V + d * es, t, O + r * ldo + d, ldo);
        if (d < D8) sdpa__vacc_blk_avx2(1, 1, N, Dv, P + r * ldp, ldp, V + d * es, t, O + r * ldo + d, ldo);
    }
    if (D8 < Dv) /* the Dv % 8 tail, in key order like the vectors */
        for (r = 0; r < M; r++)
            for (j = 0; j < N; j++) {
                float p = P[r * ldp + j];
                for (d = D8; d < Dv; d++) O[r * ldo + d] += p * sdpa__kv_get(V + j * vs, t, d);
            }
}

SDPA__TARGET_AVX2 static void sdpa__vacc_avx2(int64_t M, int64_t N, int64_t Dv, const float *P, int64_t ldp, const char *V,
                                              sdpa_dtype t, float *O, int64_t ldo, float *tmp)
{
    (void)tmp;
    switch (t) {
    case SDPA_F32: sdpa__vacc_body_avx2(M, N, Dv, P, ldp, V, SDPA_F32, O, ldo); break;
    case SDPA_F16: sdpa__vacc_body_avx2(M, N, Dv, P, ldp, V, SDPA_F16, O, ldo); break;
    case SDPA_BF16: sdpa__vacc_body_avx2(M, N, Dv, P, ldp, V, SDPA_BF16, O, ldo); break;
    default: sdpa__vacc_body_avx2(M, N, Dv, P, ldp, V, SDPA_I8, O, ldo); break;
    }
}

/* The integer sums of one row over columns [d0, Dv), in plain C: exact, so
 * every path's vector blocks agree with it. */
static void sdpa__vacc8_cols(int64_t N, int64_t Dv, int64_t d0, const int32_t *pp, float ps, const signed char *V, float *O)
{
    int64_t j, d;
    for (d = d0; d < Dv; d++) {
        int32_t acc = 0;
        for (j = 0; j < N; j++) {
            int32_t w = (int32_t)(int16_t)(uint16_t)((uint32_t)pp[j / 2] >> (j % 2 ? 16 : 0));
            acc += w * (int32_t)V[j * Dv + d];
        }
        O[d] += ps * (float)acc;
    }
}

/* R rows x 16W columns of P V over I8 values (R * W <= 4): each key pair's
 * 16 bytes widened (vpmovsxbw) and interleaved (vpunpck[lh]wd) once for all
 * rows, vpmaddwd against the rows' int16 weight pairs, int32 sums. The
 * unpacks leave columns 0-3, 8-11 in `lo` and 4-7, 12-15 in `hi`; the
 * 128-bit permutes at the end put them back in order. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX2 void
sdpa__vacc8_blk_avx2(const int R, const int W, int64_t N, int64_t Dv, const int32_t (*pp)[SDPA__KV_SPAN / 2],
                     const float *ps, const signed char *V, float *O, int64_t ldo, const char *pf, int64_t pfb, int pfl2)
{
    __m256i lo[4][4], hi[4][4], ul[4], uh[4];
    int64_t j, pstep = pf ? SDPA__ROUND_UP((pfb + N / 2) / (N / 2 + 1), 64) : 0;
    int a, w;
    SDPA__FOR(a, R, 4) SDPA__FOR(w, W, 4) lo[a][w] = hi[a][w] = _mm256_setzero_si256();
    for (j = 0; j < N; j += 2) {
        if (pfb > 0) { /* a slice of the next span's K per key pair */
            sdpa__prefetch(pf, SDPA__MIN(pstep, pfb), pfl2);
            pf += pstep, pfb -= pstep;
        }
        SDPA__FOR(w, W, 4) {
            __m256i x = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(V + j * Dv + 16 * w)));
            __m256i y = j + 1 < N ? _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(V + (j + 1) * Dv + 16 * w)))
                                  : _mm256_setzero_si256();
            ul[w] = _mm256_unpacklo_epi16(x, y);
            uh[w] = _mm256_unpackhi_epi16(x, y);
        }
        SDPA__FOR(a, R, 4) {
            __m256i pw = _mm256_set1_epi32(pp[a][j / 2]);
            SDPA__FOR(w, W, 4) {
                lo[a][w] = _mm256_add_epi32(lo[a][w], _mm256_madd_epi16(ul[w], pw));
                hi[a][w] = _mm256_add_epi32(hi[a][w], _mm256_madd_epi16(uh[w], pw));
            }
        }
    }
    SDPA__FOR(a, R, 4) {
        __m256 s = _mm256_set1_ps(ps[a]);
        SDPA__FOR(w, W, 4) {
            float *o = O + a * ldo + 16 * w;
            __m256 x0 = _mm256_cvtepi32_ps(_mm256_permute2x128_si256(lo[a][w], hi[a][w], 0x20));
            __m256 x1 = _mm256_cvtepi32_ps(_mm256_permute2x128_si256(lo[a][w], hi[a][w], 0x31));
            _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), _mm256_mul_ps(s, x0)));
            _mm256_storeu_ps(o + 8, _mm256_add_ps(_mm256_loadu_ps(o + 8), _mm256_mul_ps(s, x1)));
        }
    }
}

/* sdpa__kv_pq on ymm registers (N <= SDPA__KV_SPAN; the tail through a
 * padded copy, nothing read past P[N - 1] or vsc[N - 1]); rounds to
 * nearest even. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX2 float sdpa__kv_pq_avx2(const float *P, const float *vsc,
                                                                                  int64_t N, int32_t *pp)
{
    float x[SDPA__KV_SPAN + 16], amax;
    __m256 mx = _mm256_setzero_ps(), bad = _mm256_setzero_ps(), big = _mm256_set1_ps(3.0e38f), z = _mm256_setzero_ps(), inv;
    __m128 h;
    int64_t j;
    for (j = 0; j < N; j += 8) {
        __m256 p, v, y;
        if (j + 8 <= N) {
            p = _mm256_loadu_ps(P + j);
            v = _mm256_loadu_ps(vsc + j);
        } else { /* the tail through zero-padded copies */
            float pt[8] = {0, 0, 0, 0, 0, 0, 0, 0}, vt[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            int64_t t;
            for (t = 0; t < N - j; t++) pt[t] = P[j + t], vt[t] = vsc[j + t];
            p = _mm256_loadu_ps(pt);
            v = _mm256_loadu_ps(vt);
        }
        y = _mm256_and_ps(_mm256_mul_ps(p, v), _mm256_cmp_ps(p, z, _CMP_NEQ_UQ)); /* p == 0 gives 0, NaN p NaN */
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(y, z, _CMP_LT_OQ));
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(y, big, _CMP_NLE_UQ)); /* NaN or above 3e38 */
        mx = _mm256_max_ps(mx, y);
        _mm256_storeu_ps(x + j, y);
    }
    if (_mm256_movemask_ps(bad)) return -1.0f;
    h = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    amax = _mm_cvtss_f32(h);
    if (amax > 0.0f && amax < 1e-30f) return -1.0f;
    if (amax == 0.0f) { /* zero weights: a 4-row block still multiplies them (by a zero scale) */
        for (j = 0; j < N; j += 2) pp[j / 2] = 0;
        return 0.0f;
    }
    for (j = N; j < ((N + 15) & ~(int64_t)15); j++) x[j] = 0.0f;
    inv = _mm256_set1_ps(32767.0f / amax);
    for (j = 0; j < N; j += 16) { /* packs interleaves 128-bit lanes; the permute undoes it */
        __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + j), inv));
        __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + j + 8), inv));
        _mm256_storeu_si256((__m256i *)(void *)(pp + j / 2), _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xd8));
    }
    return amax / 32767.0f;
}

/* A group of R rows' weights for the integer sums (pp, ps): 1 when the
 * sums should run; 0 when the rows add nothing, or when a weight is not
 * finite or too small and the rows were done here in the float form
 * (vacc, scales folded in). */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX2 int
sdpa__vacc8_group_avx2(int R, int64_t N, int64_t Dv, float *P, int64_t ldp, const float *vsc, const signed char *V, float *O,
                       int64_t ldo, float *tmp, sdpa__vacc_fn vacc, int32_t (*pp)[SDPA__KV_SPAN / 2], float *ps)
{
    int a, bad = 0, live = 0;
    for (a = 0; a < R; a++) {
        ps[a] = sdpa__kv_pq_avx2(P + a * ldp, vsc, N, pp[a]);
        bad |= ps[a] < 0.0f;
        live |= ps[a] > 0.0f;
    }
    if (!bad) return live;
    for (a = 0; a < R; a++) sdpa__vacc8_row_float(vacc, N, Dv, P + a * ldp, vsc, V, O + a * ldo, tmp);
    return 0;
}

SDPA__TARGET_AVX2 static void sdpa__vacc8_avx2(int64_t M, int64_t N, int64_t Dv, float *P, int64_t ldp, const float *vsc,
                                               const signed char *V, float *O, int64_t ldo, float *tmp, const char *pf, int64_t pfb,
                                               int pfl2)
{
    int32_t pp[4][SDPA__KV_SPAN / 2];
    float ps[4];
    const int64_t D16 = Dv & ~(int64_t)15;
    int64_t r = 0, d;
    while (r < M) {
        int R = M - r >= 4 ? 4 : 1, a;
        if (sdpa__vacc8_group_avx2(R, N, Dv, P + r * ldp, ldp, vsc, V, O + r * ldo, ldo, tmp, sdpa__vacc_avx2, pp, ps)) {
            float *o = O + r * ldo;
            d = 0;
            if (R == 4) {
                for (; d < D16; d += 16, pfb = 0)
                    sdpa__vacc8_blk_avx2(4, 1, N, Dv, (const int32_t(*)[SDPA__KV_SPAN / 2])pp, ps, V + d, o + d, ldo, pf, pfb, pfl2);
            } else {
                for (; d + 64 <= D16; d += 64, pfb = 0)
                    sdpa__vacc8_blk_avx2(1, 4, N, Dv, (const int32_t(*)[SDPA__KV_SPAN / 2])pp, ps, V + d, o + d, ldo, pf, pfb, pfl2);
                for (; d < D16; d += 16, pfb = 0)
                    sdpa__vacc8_blk_avx2(1, 1, N, Dv, (const int32_t(*)[SDPA__KV_SPAN / 2])pp, ps, V + d, o + d, ldo, pf, pfb, pfl2);
            }
            for (a = 0; a < R && D16 < Dv; a++) sdpa__vacc8_cols(N, Dv, D16, pp[a], ps[a], V, O + (r + a) * ldo);
        }
        r += R;
    }
    if (pfb > 0) sdpa__prefetch(pf, pfb, pfl2);
}
#endif /* SDPA__HAVE_AVX2 */

#ifdef SDPA__HAVE_AVX512
/* The cache kernels on zmm registers (paths avx512 and amx): the AVX2 forms
 * at twice the width, D and Dv tails under opmasks (no scalar tail loops, no
 * byte read past a row). Intrinsics whose gcc 12 form starts from an
 * _mm512_undefined_* value are written as their maskz forms with every lane
 * on, as elsewhere in this file: g++ -O2 -Wall warns (maybe-uninitialized)
 * on the plain ones. */

/* 16 elements of storage type t at p (lanes outside k read as 0). */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 __m512 sdpa__ld16_kv_avx512(const char *p, sdpa_dtype t,
                                                                                         __mmask16 k)
{
    if (t == SDPA_I8) return _mm512_maskz_cvtepi32_ps(SDPA__ALL16, _mm512_maskz_cvtepi8_epi32(SDPA__ALL16, _mm_maskz_loadu_epi8(k, p)));
    return sdpa__load16_avx512(p, t, k);
}

/* The lane sums of four accumulators, each in the same fixed tree (128-bit
 * blocks 0+2 and 1+3, then those two, then within the block): a key's dot
 * product has the same bits whichever block of keys computed it. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 void sdpa__sum4_avx512(__m512 a, __m512 b, __m512 c,
                                                                                   __m512 d, float out[4])
{
    __m512 ab = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(SDPA__ALL16, a, b, 0x44), _mm512_maskz_shuffle_f32x4(SDPA__ALL16, a, b, 0xee));
    __m512 cd = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(SDPA__ALL16, c, d, 0x44), _mm512_maskz_shuffle_f32x4(SDPA__ALL16, c, d, 0xee));
    __m512 u = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(SDPA__ALL16, ab, cd, 0x88), _mm512_maskz_shuffle_f32x4(SDPA__ALL16, ab, cd, 0xdd));
    float lane[16];
    u = _mm512_add_ps(u, _mm512_maskz_permute_ps(SDPA__ALL16, u, 0x4e));
    u = _mm512_add_ps(u, _mm512_maskz_permute_ps(SDPA__ALL16, u, 0xb1));
    _mm512_storeu_ps(lane, u);
    out[0] = lane[0], out[1] = lane[4], out[2] = lane[8], out[3] = lane[12];
}

/* The 16 lane sums of a block of 4 rows x 4 keys at once: row a's key c in
 * lane 4a + c, each in sdpa__sum4_avx512's tree (the same bits as the
 * blocks that sum a row's keys with it). The first two levels pair the
 * 128-bit blocks of one key's four rows (block a of u[c]: row a's four
 * partials), the last adds within blocks across the four keys: 30 shuffles
 * and 15 adds for 16 sums, where four sdpa__sum4_avx512 also store and
 * reload every sum one by one. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 __m512 sdpa__sum16_avx512(const __m512 acc[4][4])
{
    __m512 u[4], s01, s23;
    int c;
    SDPA__UNROLL for (c = 0; c < 4; c++) {
        __m512 ab = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(SDPA__ALL16, acc[0][c], acc[1][c], 0x44),
                                  _mm512_maskz_shuffle_f32x4(SDPA__ALL16, acc[0][c], acc[1][c], 0xee));
        __m512 cd = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(SDPA__ALL16, acc[2][c], acc[3][c], 0x44),
                                  _mm512_maskz_shuffle_f32x4(SDPA__ALL16, acc[2][c], acc[3][c], 0xee));
        u[c] = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(SDPA__ALL16, ab, cd, 0x88), _mm512_maskz_shuffle_f32x4(SDPA__ALL16, ab, cd, 0xdd));
    }
    /* per block: lanes x0 + x2 and x1 + x3 of two keys, then their sums */
    s01 = _mm512_add_ps(_mm512_maskz_shuffle_ps(SDPA__ALL16, u[0], u[1], 0x44), _mm512_maskz_shuffle_ps(SDPA__ALL16, u[0], u[1], 0xee));
    s23 = _mm512_add_ps(_mm512_maskz_shuffle_ps(SDPA__ALL16, u[2], u[3], 0x44), _mm512_maskz_shuffle_ps(SDPA__ALL16, u[2], u[3], 0xee));
    return _mm512_add_ps(_mm512_maskz_shuffle_ps(SDPA__ALL16, s01, s23, 0x88), _mm512_maskz_shuffle_ps(SDPA__ALL16, s01, s23, 0xdd));
}

/* A 4 x 4 block of S from lane 4a + c (row a, key c) of v. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 void sdpa__store4x4_avx512(float *S, int64_t lds, __m512 v)
{
    _mm_storeu_ps(S, _mm512_maskz_extractf32x4_ps((__mmask8)0xf, v, 0));
    _mm_storeu_ps(S + lds, _mm512_maskz_extractf32x4_ps((__mmask8)0xf, v, 1));
    _mm_storeu_ps(S + 2 * lds, _mm512_maskz_extractf32x4_ps((__mmask8)0xf, v, 2));
    _mm_storeu_ps(S + 3 * lds, _mm512_maskz_extractf32x4_ps((__mmask8)0xf, v, 3));
}

/* R query rows x KC keys (KC 1, 2 or 4; R * KC <= 16 accumulators). */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 void
sdpa__kdot_blk_avx512(const int R, const int KC, int64_t D, const float *q, int64_t ldq, const char *kr, sdpa_dtype t,
                      const float *ksc, float *S, int64_t lds)
{
    const int64_t es = t == SDPA_F32 ? 4 : (t == SDPA_I8 ? 1 : 2), ks = D * es;
    __m512 acc[4][4], x[4];
    int64_t d;
    int a, c;
    SDPA__FOR(a, R, 4) SDPA__UNROLL for (c = 0; c < 4; c++) acc[a][c] = _mm512_setzero_ps();
    for (d = 0; d < D; d += 16) {
        __mmask16 k = sdpa__tail_mask_avx512(D - d);
        SDPA__FOR(a, R, 4) x[a] = _mm512_maskz_loadu_ps(k, q + a * ldq + d);
        SDPA__FOR(c, KC, 4) {
            __m512 kv = sdpa__ld16_kv_avx512(kr + c * ks + d * es, t, k);
            SDPA__FOR(a, R, 4) acc[a][c] = _mm512_fmadd_ps(x[a], kv, acc[a][c]);
        }
    }
    if (R == 4 && KC == 4) { /* a GQA group's 4 keys: one vector of sums, scaled, four stores */
        __m512 v = _mm512_mul_ps(sdpa__sum16_avx512((const __m512(*)[4])acc),
                                 _mm512_maskz_broadcast_f32x4(SDPA__ALL16, ksc ? _mm_loadu_ps(ksc) : _mm_set1_ps(1.0f)));
        sdpa__store4x4_avx512(S, lds, v);
        return;
    }
    SDPA__FOR(a, R, 4) {
        float s[4];
        sdpa__sum4_avx512(acc[a][0], acc[a][1], acc[a][2], acc[a][3], s);
        SDPA__FOR(c, KC, 4) S[a * lds + c] = s[c] * (ksc ? ksc[c] : 1.0f);
    }
}

static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 void
sdpa__kdot_body_avx512(int64_t M, int64_t N, int64_t D, const float *Q, int64_t ldq, const char *K, sdpa_dtype t,
                       const float *ksc, float *S, int64_t lds)
{
    const int64_t ks = D * (t == SDPA_F32 ? 4 : (t == SDPA_I8 ? 1 : 2));
    int64_t r = 0, j;
#define SDPA__KDOT512(R_, KC_) \
    sdpa__kdot_blk_avx512(R_, KC_, D, Q + r * ldq, ldq, K + j * ks, t, ksc ? ksc + j : NULL, S + r * lds + j, lds)
    for (; r + 4 <= M; r += 4) { /* 4 rows (a GQA group) x 4 keys: each key widened once for 4 rows */
        for (j = 0; j + 4 <= N; j += 4) SDPA__KDOT512(4, 4);
        for (; j < N; j++) SDPA__KDOT512(4, 1);
    }
    for (; r + 2 <= M; r += 2) {
        for (j = 0; j + 4 <= N; j += 4) SDPA__KDOT512(2, 4);
        for (; j < N; j++) SDPA__KDOT512(2, 1);
    }
    if (r < M) {
        for (j = 0; j + 4 <= N; j += 4) SDPA__KDOT512(1, 4);
        for (; j < N; j++) SDPA__KDOT512(1, 1);
    }
#undef SDPA__KDOT512
}

SDPA__TARGET_AVX512 static void sdpa__kdot_avx512(int64_t M, int64_t N, int64_t D, const float *Q, int64_t ldq, const char *K,
                                                  sdpa_dtype t, const float *ksc, float *S, int64_t lds, float *tmp)
{
    (void)tmp;
    switch (t) {
    case SDPA_F32: sdpa__kdot_body_avx512(M, N, D, Q, ldq, K, SDPA_F32, ksc, S, lds); break;
    case SDPA_F16: sdpa__kdot_body_avx512(M, N, D, Q, ldq, K, SDPA_F16, ksc, S, lds); break;
    case SDPA_BF16: sdpa__kdot_body_avx512(M, N, D, Q, ldq, K, SDPA_BF16, ksc, S, lds); break;
    default: sdpa__kdot_body_avx512(M, N, D, Q, ldq, K, SDPA_I8, ksc, S, lds); break;
    }
}

/* The totals of four int32 accumulators in lanes 0..3 (exact: any order). */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 __m128i sdpa__sum4_epi32_avx512(__m512i a, __m512i b,
                                                                                            __m512i c, __m512i d)
{
    __m512i ab = _mm512_add_epi32(_mm512_maskz_shuffle_i32x4(SDPA__ALL16, a, b, 0x44), _mm512_maskz_shuffle_i32x4(SDPA__ALL16, a, b, 0xee));
    __m512i cd = _mm512_add_epi32(_mm512_maskz_shuffle_i32x4(SDPA__ALL16, c, d, 0x44), _mm512_maskz_shuffle_i32x4(SDPA__ALL16, c, d, 0xee));
    __m512i u = _mm512_add_epi32(_mm512_maskz_shuffle_i32x4(SDPA__ALL16, ab, cd, 0x88), _mm512_maskz_shuffle_i32x4(SDPA__ALL16, ab, cd, 0xdd));
    u = _mm512_add_epi32(u, _mm512_maskz_shuffle_epi32(SDPA__ALL16, u, (_MM_PERM_ENUM)0x4e));
    u = _mm512_add_epi32(u, _mm512_maskz_shuffle_epi32(SDPA__ALL16, u, (_MM_PERM_ENUM)0xb1));
    return _mm512_maskz_extracti32x4_epi32((__mmask8)0xf, _mm512_maskz_permutexvar_epi32(SDPA__ALL16, _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0), u), 0);
}

/* The 16 int32 totals of a block of 4 rows x 4 keys, row a's key c in lane
 * 4a + c: sdpa__sum16_avx512's tree on integers (exact: any order). */
#define SDPA__SHUF32(x, y, i) _mm512_castps_si512(_mm512_maskz_shuffle_ps(SDPA__ALL16, _mm512_castsi512_ps(x), _mm512_castsi512_ps(y), i))
static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 __m512i sdpa__sum16_epi32_avx512(const __m512i acc[4][4])
{
    __m512i u[4], s01, s23;
    int c;
    SDPA__UNROLL for (c = 0; c < 4; c++) { /* block a of u[c]: row a's four partials of key c */
        __m512i ab = _mm512_add_epi32(_mm512_maskz_shuffle_i32x4(SDPA__ALL16, acc[0][c], acc[1][c], 0x44),
                                      _mm512_maskz_shuffle_i32x4(SDPA__ALL16, acc[0][c], acc[1][c], 0xee));
        __m512i cd = _mm512_add_epi32(_mm512_maskz_shuffle_i32x4(SDPA__ALL16, acc[2][c], acc[3][c], 0x44),
                                      _mm512_maskz_shuffle_i32x4(SDPA__ALL16, acc[2][c], acc[3][c], 0xee));
        u[c] = _mm512_add_epi32(_mm512_maskz_shuffle_i32x4(SDPA__ALL16, ab, cd, 0x88), _mm512_maskz_shuffle_i32x4(SDPA__ALL16, ab, cd, 0xdd));
    }
    s01 = _mm512_add_epi32(SDPA__SHUF32(u[0], u[1], 0x44), SDPA__SHUF32(u[0], u[1], 0xee));
    s23 = _mm512_add_epi32(SDPA__SHUF32(u[2], u[3], 0x44), SDPA__SHUF32(u[2], u[3], 0xee));
    return _mm512_add_epi32(SDPA__SHUF32(s01, s23, 0x88), SDPA__SHUF32(s01, s23, 0xdd));
}
#undef SDPA__SHUF32

/* The end of an integer Q.K^T block: R x KC int32 sums (acc[a][c] holds
 * row a's partial sums for key c), less 128 * qsum[a] where qsum is given
 * (the int8 form's offset; NULL: none), times qsc[a] and ksc[c], stored to
 * S. A GQA group's 4 x 4 in one tree and four stores; other shapes row by
 * row, the KC sums side by side (as the scalar form scales them). */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 void
sdpa__kdot_i32_end_avx512(const int R, const int KC, const __m512i acc[4][4], const float *qsc, const int32_t *qsum,
                          const float *ksc, float *S, int64_t lds)
{
    int a;
    if (R == 4 && KC == 4) { /* lane 4a + c: row a's key c, times qsc[a], then ksc[c] */
        const __m512i rows = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
        __m512i t = sdpa__sum16_epi32_avx512(acc);
        __m512 v;
        if (qsum)
            t = _mm512_sub_epi32(t, _mm512_maskz_slli_epi32(SDPA__ALL16, _mm512_maskz_permutexvar_epi32(SDPA__ALL16, rows,
                                       _mm512_maskz_broadcast_i32x4(SDPA__ALL16, _mm_loadu_si128((const __m128i *)(const void *)qsum))), 7));
        v = _mm512_maskz_cvtepi32_ps(SDPA__ALL16, t);
        v = _mm512_mul_ps(v, _mm512_maskz_permutexvar_ps(SDPA__ALL16, rows, _mm512_maskz_broadcast_f32x4(SDPA__ALL16, _mm_loadu_ps(qsc))));
        v = _mm512_mul_ps(v, _mm512_maskz_broadcast_f32x4(SDPA__ALL16, _mm_loadu_ps(ksc)));
        sdpa__store4x4_avx512(S, lds, v);
        return;
    }
    SDPA__FOR(a, R, 4) {
        const __mmask8 km = (__mmask8)((1u << KC) - 1u);
        __m128i t = sdpa__sum4_epi32_avx512(acc[a][0], KC > 1 ? acc[a][1] : acc[a][0], KC > 2 ? acc[a][2] : acc[a][0],
                                            KC > 3 ? acc[a][3] : acc[a][0]);
        __m128 sum;
        if (qsum) t = _mm_sub_epi32(t, _mm_set1_epi32(qsum[a] * 128));
        sum = _mm_mul_ps(_mm_mul_ps(_mm_cvtepi32_ps(t), _mm_set1_ps(qsc[a])), _mm_maskz_loadu_ps(km, ksc));
        _mm_mask_storeu_ps(S + a * lds, km, sum);
    }
}

/* int16 queries x int8 keys, 32 pairs per step: the keys' bytes widened to
 * int16 (vpmovsxbw) once for R rows; with VNNI one vpdpwssd multiplies,
 * pairs and accumulates, without it vpmaddwd + vpaddd. Exact either way. */
static inline __attribute__((always_inline)) SDPA__TARGET_VNNI void
sdpa__kdot16_blk_avx512(const int R, const int KC, const int vnni, int64_t D, const int16_t *q, int64_t ldq,
                        const float *qsc, const signed char *k, const float *ksc, float *S, int64_t lds)
{
    __m512i acc[4][4];
    int64_t d;
    int a, c;
    SDPA__FOR(a, R, 4) SDPA__FOR(c, KC, 4) acc[a][c] = _mm512_setzero_si512();
    /* whole 32-pair steps with plain loads, then the D % 32 tail masked (one
     * loop with a mask per step ran 1.2x slower: gcc shuffled the
     * accumulators between registers every step) */
#define SDPA__KDOT16_STEP(LDQ, LDK)                                                                  \
    do {                                                                                             \
        __m512i x[4];                                                                                \
        SDPA__FOR(a, R, 4) x[a] = LDQ(q + a * ldq + d);                                              \
        SDPA__FOR(c, KC, 4) {                                                                        \
            __m512i kv = _mm512_cvtepi8_epi16(LDK(k + c * D + d));                                   \
            SDPA__FOR(a, R, 4) acc[a][c] = vnni ? _mm512_dpwssd_epi32(acc[a][c], x[a], kv)           \
                                                : _mm512_add_epi32(acc[a][c], _mm512_madd_epi16(x[a], kv)); \
        }                                                                                            \
    } while (0)
#define SDPA__LDQ_FULL(p) _mm512_loadu_si512((const void *)(p))
#define SDPA__LDK_FULL(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define SDPA__LDQ_TAIL(p) _mm512_maskz_loadu_epi16(m, p)
#define SDPA__LDK_TAIL(p) _mm256_maskz_loadu_epi8(m, p)
    for (d = 0; d + 32 <= D; d += 32) SDPA__KDOT16_STEP(SDPA__LDQ_FULL, SDPA__LDK_FULL);
    if (d < D) {
        const __mmask32 m = (__mmask32)((1u << (D - d)) - 1u);
        SDPA__KDOT16_STEP(SDPA__LDQ_TAIL, SDPA__LDK_TAIL);
    }
#undef SDPA__LDQ_FULL
#undef SDPA__LDK_FULL
#undef SDPA__LDQ_TAIL
#undef SDPA__LDK_TAIL
#undef SDPA__KDOT16_STEP
    sdpa__kdot_i32_end_avx512(R, KC, (const __m512i(*)[4])acc, qsc, NULL, ksc, S, lds);
}

static inline __attribute__((always_inline)) SDPA__TARGET_VNNI void
sdpa__kdot16_body_avx512(const int vnni, int64_t M, int64_t N, int64_t D, const int16_t *Q, int64_t ldq, const float *qsc,
                         const signed char *K, const float *ksc, float *S, int64_t lds)
{
    int64_t r = 0, j;
#define SDPA__KDOT16_512(R_, KC_) \
    sdpa__kdot16_blk_avx512(R_, KC_, vnni, D, Q + r * ldq, ldq, qsc + r, K + j * D, ksc + j, S + r * lds + j, lds)
    for (; r + 4 <= M; r += 4) { /* 4 rows x 4 keys (GQA groups) */
        for (j = 0; j + 4 <= N; j += 4) SDPA__KDOT16_512(4, 4);
        for (; j < N; j++) SDPA__KDOT16_512(4, 1);
    }
    for (; r < M; r++) { /* single rows x 4 keys */
        for (j = 0; j + 4 <= N; j += 4) SDPA__KDOT16_512(1, 4);
        for (; j < N; j++) SDPA__KDOT16_512(1, 1);
    }
#undef SDPA__KDOT16_512
}

/* Two copies: vpdpwssd needs AVX512-VNNI, the other only AVX512BW. */
SDPA__TARGET_VNNI static void sdpa__kdot16_vnni(int64_t M, int64_t N, int64_t D, const int16_t *Q, int64_t ldq,
                                                const float *qsc, const signed char *K, const float *ksc, float *S,
                                                int64_t lds)
{
    sdpa__kdot16_body_avx512(1, M, N, D, Q, ldq, qsc, K, ksc, S, lds);
}

/* int8 mode (SDPA_PRECISION_INT8_QK) on AVX512-VNNI: queries rounded to
 * [-127, 127] (sdpa__kv_q16 and q16c with lim 127) packed to bytes with
 * their sums (sdpa__kv_pack8), then vpdpbusd multiplies 64 pairs per step:
 * it takes unsigned bytes on one side, so the keys go in as k + 128 (k xor
 * 0x80) and each sum comes out as q.k + 128 * sum(q), the second term
 * subtracted at the end. |q.(k + 128)| <= 127 * 255 * D < 2^31 for D <=
 * SDPA__KV_I16_MAX_D: exact, so the scores are the int16 kernels' on the
 * same rounded queries, bit for bit (sdpa__kdot16_scalar is its reference).
 * Half the multiplies of the int16 form and no widening of the keys. */
typedef void (*sdpa__kdot8_fn)(int64_t M, int64_t N, int64_t D, const int8_t *Q, int64_t ldq, const float *qsc,
                               const int32_t *qsum, const signed char *K, const float *ksc, float *S, int64_t lds);

static inline __attribute__((always_inline)) SDPA__TARGET_VNNI void
sdpa__kdot8_blk_vnni(const int R, const int KC, int64_t D, const int8_t *q, int64_t ldq, const float *qsc, const int32_t *qsum,
                     const signed char *k, const float *ksc, float *S, int64_t lds)
{
    const __m512i x80 = _mm512_set1_epi8((char)0x80);
    __m512i acc[4][4];
    int64_t d;
    int a, c;
    SDPA__FOR(a, R, 4) SDPA__FOR(c, KC, 4) acc[a][c] = _mm512_setzero_si512();
#define SDPA__KDOT8_STEP(LDQ, LDK)                                                                          \
    do {                                                                                                    \
        __m512i x[4];                                                                                       \
        SDPA__FOR(a, R, 4) x[a] = LDQ(q + a * ldq + d);                                                     \
        SDPA__FOR(c, KC, 4) {                                                                               \
            __m512i kv = _mm512_xor_si512(LDK(k + c * D + d), x80);                                         \
            SDPA__FOR(a, R, 4) acc[a][c] = _mm512_dpbusd_epi32(acc[a][c], kv, x[a]);                        \
        }                                                                                                   \
    } while (0)
#define SDPA__LD8_FULL(p) _mm512_loadu_si512((const void *)(p))
#define SDPA__LD8_TAIL(p) _mm512_maskz_loadu_epi8(m, p)
    for (d = 0; d + 64 <= D; d += 64) SDPA__KDOT8_STEP(SDPA__LD8_FULL, SDPA__LD8_FULL);
    if (d < D) { /* the tail's masked-off bytes: 0 on the query side, so k + 128 there adds nothing */
        const __mmask64 m = (__mmask64)(~(uint64_t)0 >> (64 - (D - d)));
        SDPA__KDOT8_STEP(SDPA__LD8_TAIL, SDPA__LD8_TAIL);
    }
#undef SDPA__LD8_FULL
#undef SDPA__LD8_TAIL
#undef SDPA__KDOT8_STEP
    sdpa__kdot_i32_end_avx512(R, KC, (const __m512i(*)[4])acc, qsc, qsum, ksc, S, lds);
}

SDPA__TARGET_VNNI static void sdpa__kdot8_vnni(int64_t M, int64_t N, int64_t D, const int8_t *Q, int64_t ldq, const float *qsc,
                                               const int32_t *qsum, const signed char *K, const float *ksc, float *S, int64_t lds)
{
    int64_t r = 0, j;
#define SDPA__KDOT8_512(R_, KC_) \
    sdpa__kdot8_blk_vnni(R_, KC_, D, Q + r * ldq, ldq, qsc + r, qsum + r, K + j * D, ksc + j, S + r * lds + j, lds)
    for (; r + 4 <= M; r += 4) { /* 4 rows x 4 keys (GQA groups) */
        for (j = 0; j + 4 <= N; j += 4) SDPA__KDOT8_512(4, 4);
        for (; j < N; j++) SDPA__KDOT8_512(4, 1);
    }
    for (; r < M; r++) { /* single rows x 4 keys */
        for (j = 0; j + 4 <= N; j += 4) SDPA__KDOT8_512(1, 4);
        for (; j < N; j++) SDPA__KDOT8_512(1, 1);
    }
#undef SDPA__KDOT8_512
}

/* Rows of int8-mode queries (values in [-127, 127], int16, row stride ld)
 * to bytes (stride ld) and their sums, for sdpa__kdot8_vnni. */
SDPA__TARGET_AVX512 static void sdpa__kv_pack8(int8_t *q8, int32_t *qsum, const int16_t *q16, int64_t ld, int64_t rows, int64_t n)
{
    int64_t r, d;
    for (r = 0; r < rows; r++) {
        __m512i sum = _mm512_setzero_si512();
        for (d = 0; d < n; d += 32) {
            const __mmask32 m = (__mmask32)(n - d >= 32 ? 0xffffffffu : (1u << (n - d)) - 1u);
            __m512i x = _mm512_maskz_loadu_epi16(m, q16 + r * ld + d);
            _mm256_mask_storeu_epi8(q8 + r * ld + d, m, _mm512_maskz_cvtepi16_epi8((__mmask32)0xffffffffu, x));
            sum = _mm512_add_epi32(sum, _mm512_madd_epi16(x, _mm512_set1_epi16(1)));
        }
        qsum[r] = _mm_cvtsi128_si32(sdpa__sum4_epi32_avx512(sum, sum, sum, sum));
    }
}

SDPA__TARGET_AVX512 static void sdpa__kdot16_avx512(int64_t M, int64_t N, int64_t D, const int16_t *Q, int64_t ldq,
                                                    const float *qsc, const signed char *K, const float *ksc, float *S,
                                                    int64_t lds)
{
    int64_t r = 0, j;
    for (; r < M; r++) /* without VNNI: the plain AVX512BW body, kept out of the VNNI-targeted inline */
        for (j = 0; j < N; j += 4) {
            int64_t n = N - j < 4 ? N - j : 4, c;
            for (c = 0; c < n; c++) {
                const int16_t *q = Q + r * ldq;
                const signed char *k = K + (j + c) * D;
                __m512i acc = _mm512_setzero_si512();
                int64_t d;
                for (d = 0; d < D; d += 32) {
                    __mmask32 m = (__mmask32)(D - d >= 32 ? 0xffffffffu : (1u << (D - d)) - 1u);
                    acc = _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maskz_loadu_epi16(m, q + d),
                                                                  _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, k + d))));
                }
                S[r * lds + j + c] = (float)_mm_cvtsi128_si32(sdpa__sum4_epi32_avx512(acc, acc, acc, acc)) * qsc[r] * ksc[j + c];
            }
        }
}

/* sdpa__kv_q16c_scalar on zmm registers, the tail masked: the same bits
 * (vpmovsdw saturates at +-32767.x, the min and max clamp to lim). */
SDPA__TARGET_AVX512 static void sdpa__kv_q16c_avx512(int16_t *q16, float *qs, const float *q, const float *cs, int64_t n, int lim)
{
    const __m512 inf = _mm512_set1_ps((float)INFINITY);
    __m512 vmax = _mm512_setzero_ps(), vinv;
    __mmask16 bad = 0;
    float inv, amax = 0.0f, lane[16];
    int64_t d;
    for (d = 0; d < n; d += 16) {
        const __mmask16 m = d + 16 <= n ? SDPA__ALL16 : sdpa__tail_mask_avx512(n - d);
        __m512 a = _mm512_abs_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, q + d), _mm512_maskz_loadu_ps(m, cs + d)));
        bad |= _mm512_cmp_ps_mask(a, inf, _CMP_NLT_UQ); /* Inf or NaN */
        vmax = _mm512_maskz_max_ps(SDPA__ALL16, vmax, a);
    }
    _mm512_storeu_ps(lane, vmax);
    for (d = 0; d < 16; d++) amax = lane[d] > amax ? lane[d] : amax;
    if ((inv = sdpa__kv_q16c_scale(q16, qs, bad != 0, amax, n, lim)) == 0.0f) return;
    vinv = _mm512_set1_ps(inv);
    for (d = 0; d < n; d += 16) {
        const __mmask16 m = d + 16 <= n ? SDPA__ALL16 : sdpa__tail_mask_avx512(n - d);
        __m512i v = _mm512_maskz_cvtps_epi32(SDPA__ALL16, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, q + d), _mm512_maskz_loadu_ps(m, cs + d)), vinv));
        __m256i w = _mm256_max_epi16(_mm256_min_epi16(_mm512_maskz_cvtsepi32_epi16(SDPA__ALL16, v), _mm256_set1_epi16((short)lim)),
                                     _mm256_set1_epi16((short)-lim));
        _mm256_mask_storeu_epi16(q16 + d, m, w);
    }
}

/* R rows x 16W columns of O in R*W accumulators over N keys; the Dv % 16
 * tail in one masked block. */
static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 void
sdpa__vacc_blk_avx512(const int R, const int W, int64_t N, int64_t Dv, const float *P, int64_t ldp, const char *V,
                      sdpa_dtype t, float *O, int64_t ldo, __mmask16 last)
{
    const int64_t es = t == SDPA_F32 ? 4 : (t == SDPA_I8 ? 1 : 2), vs = Dv * es;
    __m512 acc[4][8];
    int64_t j;
    int a, w;
    SDPA__FOR(a, R, 4) SDPA__FOR(w, W, 8)
        acc[a][w] = _mm512_maskz_loadu_ps(w == W - 1 ? last : SDPA__ALL16, O + a * ldo + 16 * w);
    for (j = 0; j < N; j++) {
        __m512 x[8];
        SDPA__FOR(w, W, 8) x[w] = sdpa__ld16_kv_avx512(V + j * vs + 16 * w * es, t, w == W - 1 ? last : SDPA__ALL16);
        SDPA__FOR(a, R, 4) {
            __m512 p = _mm512_set1_ps(P[a * ldp + j]);
            SDPA__FOR(w, W, 8) acc[a][w] = _mm512_fmadd_ps(p, x[w], acc[a][w]);
        }
    }
    SDPA__FOR(a, R, 4) SDPA__FOR(w, W, 8)
        _mm512_mask_storeu_ps(O + a * ldo + 16 * w, w == W - 1 ? last : SDPA__ALL16, acc[a][w]);
}

static inline __attribute__((always_inline)) SDPA__TARGET_AVX512 void
sdpa__vacc_body_avx512(int64_t M, int64_t N, int64_t Dv, const float *P, int64_t ldp, const char *V, sdpa_dtype t,
                       float *O, int64_t ldo)
{
    const int64_t es = t == SDPA_F32 ? 4 : (t == SDPA_I8 ? 1 : 2);
    int64_t r = 0, d;
#define SDPA__VACC512(R_, W_, LAST_) \
    sdpa__vacc_blk_avx512(R_, W_, N, Dv, P + r * ldp, ldp, V + d * es, t, O + r * ldo + d, ldo, LAST_)
    for (; r + 4 <= M; r += 4) { /* 4 rows x 64 columns: 16 accumulators */
        for (d = 0; d + 64 <= Dv; d += 64) SDPA__VACC512(4, 4, SDPA__ALL16);
        for (; d + 16 <= Dv; d += 16) SDPA__VACC512(4, 1, SDPA__ALL16);
        if (d < Dv) SDPA__VACC512(4, 1, sdpa__tail_mask_avx512(Dv - d));
    }
    for (; r < M; r++) { /* single rows x 128 columns: 8 accumulators */
        for (d = 0; d + 128 <= Dv; d += 128) SDPA__VACC512(1, 8, SDPA__ALL16);
        for (; d + 64 <= Dv; d += 64) SDPA__VACC512(1, 4, SDPA__ALL16);
        for (; d + 16 <= Dv; d += 16) SDPA__VACC512(1, 1, SDPA__ALL16);
        if (d < Dv) SDPA__VACC512(1, 1, sdpa__tail_mask_avx512(Dv - d));
    }
#undef SDPA__VACC512
}

SDPA__TARGET_AVX512 static void sdpa__vacc_avx512(int64_t M, int64_t N, int64_t Dv, const float *P, int64_t ldp, const char *V,
                                                  sdpa_dtype t, float *O, int64_t ldo, float *tmp)
{
    (void)tmp;
    switch (t) {
    case SDPA_F32: sdpa__vacc_body_avx512(M, N, Dv, P, ldp, V, SDPA_F32, O, ldo); break;
    case SDPA_F16: sdpa__vacc_body_avx512(M, N, Dv, P, ldp, V, SDPA_F16, O, ldo); break;
    case SDPA_BF16: sdpa__vacc_body_avx512(M, N, Dv, P, ldp, V, SDPA_BF16, O, ldo); break;
    default: sdpa__vacc_body_avx512(M, N, Dv, P, ldp, V, SDPA_I8, O, ldo); break;
    }
}

/* The integer P V (see sdpa__vacc8_fn) on zmm registers with AVX512-VNNI:
 * R rows x 32W columns (R * W <= 4), each key pair's 32 bytes widened and
 * interleaved once for all rows, one vpdpwssd per 16 products-pairs. The
 * unpacks leave, per 128-bit block, columns 8k..8k+3 in `lo` and
 * 8k+4..8k+7 in `hi`; two block shuffles restore the order. Without VNNI
 * the AVX2 form serves (vpmaddwd + vpaddd would gain little at this width). */
static inline __attribute__((always_inline)) SDPA__TARGET_VNNI void
sdpa__vacc8_blk_vnni(const int R, const int W, int64_t N, int64_t Dv, const int32_t (*pp)[SDPA__KV_SPAN / 2], const float *ps,
                     const signed char *V, float *O, int64_t ldo, const char *pf, int64_t pfb, int pfl2)
{
    __m512i lo[4][4], hi[4][4], ul[4], uh[4];
    int64_t j, pstep = pf ? SDPA__ROUND_UP((pfb + N / 2) / (N / 2 + 1), 64) : 0;
    int a, w;
    SDPA__FOR(a, R, 4) SDPA__FOR(w, W, 4) lo[a][w] = hi[a][w] = _mm512_setzero_si512();
    for (j = 0; j < N; j += 2) {
        if (pfb > 0) {
            sdpa__prefetch(pf, SDPA__MIN(pstep, pfb), pfl2);
            pf += pstep, pfb -= pstep;
        }
        SDPA__FOR(w, W, 4) {
            __m512i x = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(V + j * Dv + 32 * w)));
            __m512i y = j + 1 < N ? _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(V + (j + 1) * Dv + 32 * w)))
                                  : _mm512_setzero_si512();
            ul[w] = _mm512_maskz_unpacklo_epi16((__mmask32)0xffffffffu, x, y);
            uh[w] = _mm512_maskz_unpackhi_epi16((__mmask32)0xffffffffu, x, y);
        }
        SDPA__FOR(a, R, 4) {
            __m512i pw = _mm512_set1_epi32(pp[a][j / 2]);
            SDPA__FOR(w, W, 4) {
                lo[a][w] = _mm512_dpwssd_epi32(lo[a][w], ul[w], pw);
                hi[a][w] = _mm512_dpwssd_epi32(hi[a][w], uh[w], pw);
            }
        }
    }
    SDPA__FOR(a, R, 4) {
        __m512 s = _mm512_set1_ps(ps[a]);
        SDPA__FOR(w, W, 4) {
            float *o = O + a * ldo + 32 * w;
            __m512i t0 = _mm512_maskz_shuffle_i32x4(SDPA__ALL16, lo[a][w], hi[a][w], 0x44); /* lo0 lo1 hi0 hi1 */
            __m512i t1 = _mm512_maskz_shuffle_i32x4(SDPA__ALL16, lo[a][w], hi[a][w], 0xee); /* lo2 lo3 hi2 hi3 */
            t0 = _mm512_maskz_shuffle_i32x4(SDPA__ALL16, t0, t0, 0xd8);                     /* columns 0..15 */
            t1 = _mm512_maskz_shuffle_i32x4(SDPA__ALL16, t1, t1, 0xd8);                     /* columns 16..31 */
            _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), _mm512_mul_ps(s, _mm512_maskz_cvtepi32_ps(SDPA__ALL16, t0))));
            _mm512_storeu_ps(o + 16, _mm512_add_ps(_mm512_loadu_ps(o + 16), _mm512_mul_ps(s, _mm512_maskz_cvtepi32_ps(SDPA__ALL16, t1))));
        }
    }
}

SDPA__TARGET_VNNI static void sdpa__vacc8_vnni(int64_t M, int64_t N, int64_t Dv, float *P, int64_t ldp, const float *vsc,
                                               const signed char *V, float *O, int64_t ldo, float *tmp, const char *pf, int64_t pfb,
                                               int pfl2)
{
    int32_t pp[4][SDPA__KV_SPAN / 2];
    float ps[4];
    const int64_t D32 = Dv & ~(int64_t)31;
    int64_t r = 0, d;
    while (r < M) {
        int R = M - r >= 4 ? 4 : 1, a;
        if (sdpa__vacc8_group_avx2(R, N, Dv, P + r * ldp, ldp, vsc, V, O + r * ldo, ldo, tmp, sdpa__vacc_avx512, pp, ps)) {
            float *o = O + r * ldo;
            d = 0;
            if (R == 4) {
                for (; d < D32; d += 32, pfb = 0)
                    sdpa__vacc8_blk_vnni(4, 1, N, Dv, (const int32_t(*)[SDPA__KV_SPAN / 2])pp, ps, V + d, o + d, ldo, pf, pfb, pfl2);
            } else {
                for (; d + 128 <= D32; d += 128, pfb = 0)
                    sdpa__vacc8_blk_vnni(1, 4, N, Dv, (const int32_t(*)[SDPA__KV_SPAN / 2])pp, ps, V + d, o + d, ldo, pf, pfb, pfl2);
                for (; d < D32; d += 32, pfb = 0)
                    sdpa__vacc8_blk_vnni(1, 1, N, Dv, (const int32_t(*)[SDPA__KV_SPAN / 2])pp, ps, V + d, o + d, ldo, pf, pfb, pfl2);
            }
            for (a = 0; a < R && D32 < Dv; a++) sdpa__vacc8_cols(N, Dv, D32, pp[a], ps[a], V, O + (r + a) * ldo);
        }
        r += R;
    }
    if (pfb > 0) sdpa__prefetch(pf, pfb, pfl2);
}
#endif /* SDPA__HAVE_AVX512 */

/* ---- attention over the cache: the forward -------------------------------- */

/* One call's plan. Batch entry b: its sequence, n rows per head (vq valid),
 * rows = G * vq query rows per kv head in blocks of SDPA__KV_ROWS, its keys
 * in nch chunks of ch keys. Tasks are (b, group of kv heads, row block,
 * chunk): a group is one kv head, or with few rows per head (decode) several
 * (sdpa__kv_hpt), so that a task reads whole pages. With nch > 1 each task
 * writes a partial (m, l, unnormalised O) per row, and a merge task per
 * (b, kv head) combines them in chunk order. */
typedef struct sdpa__kvplan {
    sdpa__plan P;                 /* options, kernels, q and out */
    const sdpa_kv_cache *c;
    const int64_t *seqs;
    sdpa__kdot_fn kdot;
    sdpa__vacc_fn vacc;
    sdpa__kdot16_fn kdot16;       /* I8 storage: int16 queries against int8 keys; NULL: kdot */
#ifdef SDPA__HAVE_AVX512
    sdpa__kdot8_fn kdot8;         /* int8 mode on AVX512-VNNI: byte queries (packed from the int16 rows); NULL: kdot16 */
#endif
    int qlim;                     /* the int16 queries' range: 32767, or 127 in int8 mode */
    sdpa__kv_q16c_fn q16c;        /* I8 keys per channel: a page's int16 query */
    sdpa__vacc8_fn vacc8;         /* I8 storage: integer P V; NULL: vacc with the scales folded in */
    int64_t ldq16;                /* int16 query row stride */
    int64_t *task_start;          /* [B + 1] */
    int64_t *merge_start;         /* [B + 1] */
    int64_t *part_start;          /* [B + 1] in rows of Dv + 2 floats */
    int64_t *nch, *ch;            /* [B] */
    float *part;
    int64_t ldo;                  /* O row stride in scratch */
    int64_t n_merge;
    int64_t hpt;                  /* kv heads per task, at most (sdpa__kv_hpt) */
    int pfl2;                     /* prefetches into L2 rather than L1 (sdpa__kv_grouping) */
} sdpa__kvplan;

static void sdpa__kv_seqinfo(const sdpa__kvplan *K, int64_t b, sdpa__seq *sq, const sdpa__kv_seq **s)
{
    int64_t sb = K->seqs ? K->seqs[b] : b;
    *s = &K->c->seq[sb];
    sq->b = sq->bt = b;
    sq->q0 = 0;
    sq->nq = K->P.Lq;
    sq->vq = K->P.sq ? K->P.sq[b] : K->P.Lq;
    sq->k0 = 0;
    sq->vk = (*s)->len;
}

static int64_t sdpa__kv_rblocks(const sdpa__kvplan *K, const sdpa__seq *sq)
{
    return (K->P.G * sq->vq + SDPA__KV_ROWS - 1) / SDPA__KV_ROWS;
}

/* kv heads per task for a batch entry with `rows` query rows per kv head,
 * at most `want` (the plan's K->hpt): as many as fit in SDPA__KV_ROWS rows,
 * evened out over the groups. Which heads share a task changes only the
 * order of the work, never a row's arithmetic. */
static int64_t sdpa__kv_heads_per_task(int64_t H, int64_t rows, int64_t want)
{
    int64_t h = rows <= 0 || rows > SDPA__KV_ROWS ? 1 : SDPA__MIN(SDPA__MIN(want, H), SDPA__KV_ROWS / rows), groups;
    if (h <= 1) return 1;
    groups = (H + h - 1) / h;
    return (H + groups - 1) / groups;
}

/* Whether decode tasks group kv heads (sdpa__kv_heads_per_task) on this CPU.
 * Measured with one query token, 32 heads, D 128, F16 and I8 caches, 4k-64k
 * keys (interleaved A/B in one process, L3 evicted between steps):
 * - Zen 4 (2 threads): grouped 1.26-1.88x (F16 MHA), 0.94-1.23x (F16
 *   GQA), 1.58-2.06x (I8 MHA) and 1.07-1.38x (I8 GQA) the one-head tasks;
 * - Sapphire Rapids Xeon (2-16 threads): grouped 0.70-0.86x; with every V
 *   run prefetched during Q K^T still 0.84-1.05x.
 * So AMD CPUs group and the others keep one head per task. The result's bits
 * are the same either way. sdpa__kv_group_force (tests): 1 always, 2 never.
 * Grouped tasks also prefetch into L2 (prefetcht1), and with V prefetched
 * (sdpa__kv_task's vpf: GQA) ask for each head's next-span K rows during
 * its own P V, not only the first head's: on the Zen 4, F16 GQA 32/8 at 16k
 * keys, one thread, L3 evicted, 52.8 -> 41.2 ns a key (BF16 pages: t1
 * alone 52.2 -> 49.7, the per-head K alone 51.8); two threads 33.6 -> 24.3
 * (64k: 31.4 -> 21.8); I8 GQA 31.0 -> 28.7. MHA (32 heads a task, V over
 * SDPA__KV_VPF so not prefetched) is unchanged and keeps the first head's
 * next K only: every head's there cost 1.25x. What the probes showed
 * before: perf put the task's own time on its prefetcht0 instructions, and
 * the Q K^T kernel over 128 KiB K runs took 25 ns a key with each head's Q
 * rows and 16.5 with one Q for every head (the K stream evicts a head's Q
 * from L1; the reloads wait behind the K misses). Our reading: prefetches
 * into L1 queue for its few miss buffers. */
static int sdpa__kv_group_force;

static int sdpa__kv_grouping(sdpa_path path)
{
    if (sdpa__kv_group_force) return sdpa__kv_group_force == 1;
#if defined(SDPA__HAVE_AVX2) || defined(SDPA__HAVE_AVX512)
    return (path == SDPA_PATH_AVX2 || path == SDPA_PATH_AVX512) && (sdpa__cpu() & SDPA__CPU_AMD) != 0;
#else
    (void)path;
    return 0;
#endif
}

static int64_t sdpa__kv_hpt(const sdpa__kvplan *K, const sdpa__seq *sq)
{
    return sdpa__kv_heads_per_task(K->c->H, K->P.G * sq->vq, K->hpt);
}

/* Keys per chunk and chunks for a batch entry with `rows` query rows per kv
 * head over len keys: split only for few rows (decode) and long contexts. */
static int64_t sdpa__kv_chunks(int64_t rows, int64_t len, int64_t *ch)
{
    *ch = SDPA__MAX(len, 1);
    if (rows <= 0 || rows > SDPA__KV_ROWS || len <= SDPA__KV_CHUNK) return 1;
    *ch = SDPA__ROUND_UP(SDPA__MAX(SDPA__KV_CHUNK, (len + SDPA__KV_MAX_CHUNKS - 1) / SDPA__KV_MAX_CHUNKS), SDPA__KV_SPAN);
    return (len + *ch - 1) / *ch;
}

/* Writes one finished row: out = O / l, lse = m + log l; l == 0 gives zeros
 * and -inf, a NaN l a NaN row. */
static void sdpa__kv_store(const sdpa__plan *P, int64_t b, int64_t h, int64_t i, float *o, float m, float l)
{
    int64_t d;
    float mul = l > 0.0f ? 1.0f / l : l;
    if (l == 0.0f) {
        for (d = 0; d < P->Dv; d++) o[d] = 0.0f;
        mul = 1.0f;
    }
    P->store_row((char *)(uintptr_t)P->o.data + (b * P->o.s[0] + h * P->o.s[1] + i * P->o.s[2]) * P->o.esize, P->o.dtype, o,
                    P->Dv, mul);
    if (P->lse) P->lse[(b * P->Hq + h) * P->Lq + i] = l > 0.0f ? m + logf(l) : (l == 0.0f ? -(float)INFINITY : l);
}

/* A worker's scratch: Q [rows][D], Q times a page's key scales [rows][D]
 * (only for I8 keys per channel), Q as int16 [rows][ldq16] and its scales,
 * S [rows][span], one K/V row, O [rows][ldo], m, l, then h, i, lo, hi; each
 * part a multiple of 64 bytes. */
static void sdpa__kv_carve(const sdpa__kvplan *K, int worker, sdpa__ws *W, float **tmp, float **qc)
{
    float *f = (float *)(void *)(K->P.ws + (size_t)worker * K->P.ws_worker);
    W->Q = f;  f += SDPA__ROUND_UP(SDPA__KV_ROWS * K->P.D, 16);
    *qc = f;   f += K->c->kchan ? SDPA__ROUND_UP(SDPA__KV_ROWS * K->P.D, 16) : 0;
    W->Qb = (uint16_t *)(void *)f; f += SDPA__KV_ROWS * K->ldq16 / 2; /* int16 queries (I8 storage) */
    W->Kt = f; f += SDPA__KV_ROWS;                                     /* their scales */
    W->Qi = (int8_t *)(void *)f; f += SDPA__KV_ROWS * K->ldq16 / 4;  /* int8 mode: the queries as bytes */
    W->Si = (int32_t *)(void *)f; f += SDPA__KV_ROWS;                  /* and their sums */
    W->S = f;  f += SDPA__KV_ROWS * SDPA__KV_SPAN;
    *tmp = f;  f += SDPA__ROUND_UP(SDPA__MAX(K->P.D, K->ldo), 16);
    W->O = f;  f += SDPA__KV_ROWS * K->ldo;
    W->m = f;  f += SDPA__KV_ROWS;
    W->l = f;  f += SDPA__KV_ROWS;
    W->mn = NULL;
    W->h = (int64_t *)(void *)f;
    W->i = W->h + SDPA__KV_ROWS;
    W->lo = W->i + SDPA__KV_ROWS;
    W->hi = W->lo + SDPA__KV_ROWS;
}

static void sdpa__kv_task(void *ctx, int64_t task, int worker)
{
    const sdpa__kvplan *K = (const sdpa__kvplan *)ctx;
    const sdpa__plan *P = &K->P;
    const sdpa_kv_cache *c = K->c;
    const int has_extras = P->softcap > 0.0f || P->alibi || P->score_mod;
    const sdpa__kv_seq *s;
    sdpa__seq sq;
    sdpa__ws W;
    int64_t b, rem, nrb, nch, hpt, g0, nh, nrh, rb, ci, r0, nr, r, c0, c1, klo = INT64_MAX, khi = -1, s0, j, d, k;
    int64_t D = P->D, Dv = P->Dv, ldo = K->ldo, krow = D * c->esize, vrow = Dv * c->esize, nkb, nslot, ncnt;
    const char *nk;
    const sdpa__kv_run *xn;
    float *tmp, *qc;
    unsigned char act[SDPA__KV_ROWS]; /* per head of the task: a row saw a key in this span */
    int vpf;
    if (task < 0 || task >= P->n_tasks || worker < 0 || worker >= P->n_workers) return;
    b = sdpa__prefix_find(K->task_start, P->B, task);
    sdpa__kv_seqinfo(K, b, &sq, &s);
    nrb = sdpa__kv_rblocks(K, &sq);
    nch = K->nch[b];
    hpt = sdpa__kv_hpt(K, &sq);
    rem = task - K->task_start[b];
    g0 = rem / (nrb * nch) * hpt;
    rem %= nrb * nch;
    rb = rem / nch;
    ci = rem % nch;
    nh = SDPA__MIN(hpt, c->H - g0);
    sdpa__kv_carve(K, worker, &W, &tmp, &qc);
    r0 = rb * SDPA__KV_ROWS;
    nrh = SDPA__MIN(SDPA__KV_ROWS, P->G * sq.vq - r0); /* rows per head; nh * nrh <= SDPA__KV_ROWS */
    nr = nh * nrh;
    vpf = nh * SDPA__KV_SPAN * vrow <= SDPA__KV_VPF; /* the V rows asked for during Q K^T stay in L2 until P V */
    c0 = ci * K->ch[b];
    c1 = SDPA__MIN(sq.vk, c0 + K->ch[b]);

    /* row r: head g0 + r / nrh, row q = r0 + r % nrh of it: query i = q / G
     * (position i + len - vq), q head (g0 + r / nrh) * G + q % G */
    for (r = 0; r < nr; r++) {
        int64_t q = r0 + r % nrh, i = q / P->G, lo = c0, hi = c1 - 1, pos = sdpa__pos(P, &sq, i);
        W.h[r] = (g0 + r / nrh) * P->G + q % P->G;
        W.i[r] = i;
        if (P->causal != SDPA_CAUSAL_NONE) hi = SDPA__MIN(hi, pos);
        if (P->window && P->wl >= 0) lo = SDPA__MAX(lo, pos - P->wl);
        if (P->window && P->wr >= 0) hi = SDPA__MIN(hi, pos + P->wr);
        if (hi < lo) { lo = 0; hi = -1; }
        W.lo[r] = lo;
        W.hi[r] = hi;
        if (hi >= lo) { klo = SDPA__MIN(klo, lo); khi = SDPA__MAX(khi, hi); }
        P->load_row(W.Q + r * D, P->q.data + (b * P->q.s[0] + W.h[r] * P->q.s[1] + i * P->q.s[2]) * P->q.esize,
                    P->q.dtype, D, P->scale);
        if (K->kdot16 && !c->kchan) sdpa__kv_q16((int16_t *)(void *)W.Qb + r * K->ldq16, W.Kt + r, W.Q + r * D, D, K->qlim);
        W.m[r] = -(float)INFINITY;
        W.l[r] = 0.0f;
        for (d = 0; d < Dv; d++) W.O[r * ldo + d] = 0.0f;
    }
#ifdef SDPA__HAVE_AVX512
    if (K->kdot8 && !c->kchan) sdpa__kv_pack8(W.Qi, W.Si, (const int16_t *)(const void *)W.Qb, K->ldq16, nr, D);
#endif

    /* spans of SDPA__KV_SPAN keys aligned to multiples of it, so a row's
     * result does not depend on the rows that share its task. Within a span
     * the heads' K runs are read one after another, then their V runs: in a
     * page, K [heads][slots][D] then V, so a task with every head of a page
     * reads it in address order. */
    for (s0 = khi < 0 ? 0 : klo / SDPA__KV_SPAN * SDPA__KV_SPAN; s0 <= khi; s0 += SDPA__KV_SPAN) {
        int64_t ns = SDPA__MIN(SDPA__KV_SPAN, khi + 1 - s0), ri0 = sdpa__kv_find(s, s0), ri;
        int any = 0;
        for (k = 0; k < nh; k++) {
            int64_t g = g0 + k;
            const int16_t *qb = (const int16_t *)(const void *)W.Qb + k * nrh * K->ldq16;
            float *sk = W.S + k * nrh * SDPA__KV_SPAN;
            for (ri = ri0, j = s0; j < s0 + ns; ri++) { /* S = Q K^T, run by run, SDPA__KV_STEP keys at a time */
                const sdpa__kv_run *x = &s->run[ri];
                int64_t slot = x->slot + (j - x->pos), cnt = SDPA__MIN(x->pos + x->n, s0 + ns) - j, jj, n;
                const char *kp = sdpa__kv_kptr(c, x->page, g, slot), *vp = sdpa__kv_vptr(c, x->page, g, slot);
                const float *ksc = c->dt == SDPA_I8 ? sdpa__kv_kscale(c, x->page, g, slot) : NULL, *qk = W.Q + k * nrh * D;
                if (c->kchan) { /* the page's channel scales go into the query: q_d * s_d * k_d */
                    const float *cs = sdpa__kv_kchan(c, x->page, g);
                    if (K->kdot16) {
                        for (r = k * nrh; r < (k + 1) * nrh; r++)
                            K->q16c((int16_t *)(void *)W.Qb + r * K->ldq16, W.Kt + r, W.Q + r * D, cs, D, K->qlim);
#ifdef SDPA__HAVE_AVX512
                        if (K->kdot8)
                            sdpa__kv_pack8(W.Qi + k * nrh * K->ldq16, W.Si + k * nrh, qb, K->ldq16, nrh, D);
#endif
                    } else {
                        for (r = k * nrh; r < (k + 1) * nrh; r++)
                            for (d = 0; d < D; d++) qc[r * D + d] = W.Q[r * D + d] * cs[d];
                        qk = qc + k * nrh * D;
                    }
                }
                for (jj = 0; jj < cnt; jj += n) {
                    n = SDPA__MIN(SDPA__KV_STEP, cnt - jj);
                    if (vpf) sdpa__prefetch(vp + jj * vrow, n * vrow, K->pfl2); /* these keys' V rows, read after the softmax */
#ifdef SDPA__HAVE_AVX512
                    if (K->kdot8)
                        K->kdot8(nrh, n, D, W.Qi + k * nrh * K->ldq16, K->ldq16, W.Kt + k * nrh, W.Si + k * nrh,
                                 (const signed char *)kp + jj * krow, ksc + jj, sk + (j - s0) + jj, SDPA__KV_SPAN);
                    else
#endif
                    if (K->kdot16)
                        K->kdot16(nrh, n, D, qb, K->ldq16, W.Kt + k * nrh, (const signed char *)kp + jj * krow, ksc + jj,
                                  sk + (j - s0) + jj, SDPA__KV_SPAN);
                    else
                        K->kdot(nrh, n, D, qk, D, kp + jj * krow, c->dt, ksc ? ksc + jj : NULL, sk + (j - s0) + jj, SDPA__KV_SPAN, tmp);
                }
                j += cnt;
            }
        }
        for (k = 0; k < nh; k++) act[k] = 0;
        for (r = 0; r < nr; r++) { /* online softmax, as in sdpa__run_tile */
            float *sr = W.S + r * SDPA__KV_SPAN, mnew, alpha, sum;
            int64_t jlo = SDPA__MAX(W.lo[r] - s0, 0), jhi = SDPA__MIN(W.hi[r] - s0, ns - 1);
            if (jlo > jhi) { for (j = 0; j < ns; j++) sr[j] = 0.0f; continue; }
            if (has_extras) sdpa__score_extras(P, &sq, W.h[r], W.i[r], s0, sr, jlo, jhi);
            mnew = P->row_max(sr + jlo, jhi - jlo + 1);
            mnew = W.m[r] > mnew ? W.m[r] : mnew;
            if (mnew == -(float)INFINITY) { for (j = 0; j < ns; j++) sr[j] = 0.0f; continue; }
            for (j = 0; j < jlo; j++) sr[j] = 0.0f;
            for (j = jhi + 1; j < ns; j++) sr[j] = 0.0f;
            sum = P->exp_row(sr + jlo, jhi - jlo + 1, mnew);
            alpha = sdpa__ml_step(&W.m[r], &W.l[r], mnew, sum);
            if (alpha != 1.0f) P->scale_row(W.O + r * ldo, Dv, alpha);
            act[r / nrh] = 1;
            any = 1;
        }
        if (!any || Dv == 0) continue;
        /* the next span's K rows, asked for while P V runs: with V prefetched
         * (vpf) each head's while its own P V runs, else the first head's
         * during the last head's */
        xn = NULL, nslot = ncnt = 0;
        if (s0 + SDPA__KV_SPAN <= khi) {
            xn = &s->run[sdpa__kv_find(s, s0 + SDPA__KV_SPAN)];
            nslot = xn->slot + (s0 + SDPA__KV_SPAN - xn->pos);
            ncnt = SDPA__MIN(SDPA__MIN(xn->pos + xn->n, khi + 1) - (s0 + SDPA__KV_SPAN), SDPA__KV_SPAN);
        }
        for (k = 0; k < nh; k++) {
            int64_t g = g0 + k;
            float *ok = W.O + k * nrh * ldo;
            nk = NULL, nkb = 0;
            if (xn && (vpf || k + 1 == nh)) {
                const int64_t gp = vpf ? g : g0;
                nk = sdpa__kv_kptr(c, xn->page, gp, nslot), nkb = ncnt * krow;
                if (c->dt == SDPA_I8) { /* and its key scales: per key, and per channel (kchan), apart from the rows */
                    sdpa__prefetch((const char *)sdpa__kv_kscale(c, xn->page, gp, nslot), ncnt * 4, K->pfl2);
                    if (c->kchan) sdpa__prefetch((const char *)sdpa__kv_kchan(c, xn->page, gp), D * 4, K->pfl2);
                }
            }
            if (!act[k]) {
                sdpa__prefetch(nk, nkb, K->pfl2);
                continue;
            }
            for (ri = ri0, j = s0; j < s0 + ns; ri++) { /* O += P V, run by run */
                const sdpa__kv_run *x = &s->run[ri];
                int64_t slot = x->slot + (j - x->pos), cnt = SDPA__MIN(x->pos + x->n, s0 + ns) - j, jj, n;
                float *pj = W.S + k * nrh * SDPA__KV_SPAN + (j - s0);
                if (K->vacc8 && !sdpa__kv_flags(x->page)[g]) {
                    K->vacc8(nrh, cnt, Dv, pj, SDPA__KV_SPAN, sdpa__kv_vscale(c, x->page, g, slot),
                             (const signed char *)sdpa__kv_vptr(c, x->page, g, slot), ok, ldo, tmp, nk, nkb, K->pfl2);
                    nkb = 0;
                    j += cnt;
                    continue;
                }
                if (c->dt == SDPA_I8) { /* the value scales folded into P; a hidden key stays 0 even with a NaN scale */
                    const float *vsc = sdpa__kv_vscale(c, x->page, g, slot);
                    for (r = 0; r < nrh; r++)
                        for (jj = 0; jj < cnt; jj++) {
                            float *pv = pj + r * SDPA__KV_SPAN + jj;
                            *pv = *pv == 0.0f ? 0.0f : *pv * vsc[jj];
                        }
                }
                for (jj = 0; jj < cnt; jj += n) {
                    n = SDPA__MIN(SDPA__KV_STEP, cnt - jj);
                    if (nkb > 0) {
                        sdpa__prefetch(nk, SDPA__MIN(nkb, n * krow), K->pfl2);
                        nk += n * krow, nkb -= n * krow;
                    }
                    (sdpa__kv_flags(x->page)[g] ? sdpa__vacc_scalar : K->vacc)(nrh, n, Dv, pj + jj, SDPA__KV_SPAN,
                                                                               sdpa__kv_vptr(c, x->page, g, slot + jj), c->dt, ok, ldo, tmp);
                }
                j += cnt;
            }
            sdpa__prefetch(nk, nkb, K->pfl2); /* what the runs above left (none when they took it all) */
        }
    }

    if (nch == 1) {
        for (r = 0; r < nr; r++) sdpa__kv_store(P, b, W.h[r], W.i[r], W.O + r * ldo, W.m[r], W.l[r]);
    } else {
        for (r = 0; r < nr; r++) { /* partial row: m, l, O (zeros when no key was seen) */
            float *pr = K->part + (K->part_start[b] + ((g0 + r / nrh) * nch + ci) * P->G * sq.vq + r0 + r % nrh) * (Dv + 2);
            pr[0] = W.m[r];
            pr[1] = W.l[r];
            if (W.l[r] == 0.0f) memset(pr + 2, 0, (size_t)Dv * sizeof(float));
            else memcpy(pr + 2, W.O + r * ldo, (size_t)Dv * sizeof(float));
        }
    }
}

/* Combines a (b, kv head)'s chunk partials in chunk order: m = max m_c,
 * l = sum l_c e^(m_c - m), O = sum O_c e^(m_c - m). */
static void sdpa__kv_merge(void *ctx, int64_t task, int worker)
{
    const sdpa__kvplan *K = (const sdpa__kvplan *)ctx;
    const sdpa__plan *P = &K->P;
    const sdpa__kv_seq *s;
    sdpa__seq sq;
    sdpa__ws W;
    float *tmp, *qc;
    int64_t b, g, r, rows, ci, nch, d, Dv = P->Dv;
    if (task < 0 || task >= K->n_merge || worker < 0 || worker >= P->n_workers) return;
    b = sdpa__prefix_find(K->merge_start, P->B, task);
    sdpa__kv_seqinfo(K, b, &sq, &s);
    g = task - K->merge_start[b];
    nch = K->nch[b];
    rows = P->G * sq.vq;
    sdpa__kv_carve(K, worker, &W, &tmp, &qc);
    for (r = 0; r < rows; r++) {
        float m = -(float)INFINITY, l = 0.0f;
        const float *pr = K->part + (K->part_start[b] + g * nch * rows + r) * (Dv + 2);
        for (ci = 0; ci < nch; ci++) {
            float mc = pr[ci * rows * (Dv + 2)];
            m = mc > m ? mc : m;
        }
        for (d = 0; d < Dv; d++) W.O[d] = 0.0f;
        for (ci = 0; ci < nch; ci++) {
            const float *x = pr + ci * rows * (Dv + 2);
            float w;
            if (x[1] == 0.0f) continue; /* saw no key */
            w = sdpa__expf(x[0] - m);   /* a NaN l or m makes the row NaN */
            l += x[1] * w;
            for (d = 0; d < Dv; d++) W.O[d] += x[2 + d] * w;
        }
        sdpa__kv_store(P, b, g * P->G + r % P->G, r / P->G, W.O, m, l);
    }
}

SDPA_API int sdpa_kv_cache_attention(const sdpa_kv_cache *c, const int64_t *seqs, const sdpa_tensor *q,
                                     const sdpa_tensor *out, const sdpa_params *pp)
{
    sdpa_params zero_params;
    const sdpa_params *p = pp ? pp : &zero_params;
    sdpa__kvplan K;
    sdpa__plan *P = &K.P;
    int64_t b, nparts = 0, ntask = 0, nmerge = 0, lse_n = 0, a[8], e[8], wbytes = 0, f, hdr, bytes;
    uintptr_t lse_lo = 0, lse_hi = 0;
    size_t total;
    void *raw;
    char *base;
    int rc, i, int8;

    memset(&zero_params, 0, sizeof zero_params);
    memset(&K, 0, sizeof K);
    if (!c) return sdpa__fail(pp, SDPA_ERR_NULL, "sdpa_kv_cache_attention: cache is NULL");
    if ((rc = sdpa__tensor(pp, "q", q, &P->q)) != SDPA_OK) return rc;
    if ((rc = sdpa__tensor(pp, "out", out, &P->o)) != SDPA_OK) return rc;
    if (!sdpa__is_float(P->q.dtype) || !sdpa__is_float(P->o.dtype))
        return sdpa__fail(pp, SDPA_ERR_DTYPE, "sdpa_kv_cache_attention: q and out must be F32, F16 or BF16");
    P->B = P->q.n[0]; P->Hq = P->q.n[1]; P->Lq = P->q.n[2]; P->D = P->q.n[3];
    P->Hkv = c->H; P->Dv = c->Dv; P->Lk = 0;
    if (P->D != c->D)
        return sdpa__fail(pp, SDPA_ERR_SHAPE, "sdpa_kv_cache_attention: q head_dim %lld, the cache's %lld", (long long)P->D,
                          (long long)c->D);
    if (P->Hq % c->H != 0 || P->Hq == 0)
        return sdpa__fail(pp, SDPA_ERR_HEADS, "sdpa_kv_cache_attention: q heads (%lld) must be a positive multiple of kv heads (%lld)",
                          (long long)P->Hq, (long long)c->H);
    P->G = P->Hq / c->H;
    if (P->o.n[0] != P->B || P->o.n[1] != P->Hq || P->o.n[2] != P->Lq || P->o.n[3] != P->Dv)
        return sdpa__fail(pp, SDPA_ERR_SHAPE, "sdpa_kv_cache_attention: out must be [%lld, %lld, %lld, %lld]", (long long)P->B,
                          (long long)P->Hq, (long long)P->Lq, (long long)P->Dv);
    if (!sdpa__injective(&P->o))
        return sdpa__fail(pp, SDPA_ERR_STRIDE, "sdpa_kv_cache_attention: out strides make distinct elements overlap");
    if (p->mask || p->seqlens_kv || p->cu_seqlens_q || p->cu_seqlens_kv || p->causal == SDPA_CAUSAL_TOP_LEFT)
        return sdpa__fail(pp, SDPA_ERR_PARAM, "sdpa_kv_cache_attention: mask, seqlens_kv, cu_seqlens and TOP_LEFT causal are not supported");
    if (p->causal != SDPA_CAUSAL_NONE && p->causal != SDPA_CAUSAL_BOTTOM_RIGHT)
        return sdpa__fail(pp, SDPA_ERR_PARAM, "sdpa_kv_cache_attention: causal = %d is not an sdpa_causal value", (int)p->causal);
    if (p->precision < SDPA_PRECISION_DEFAULT || p->precision > SDPA_PRECISION_INT8_QK_BF16_PV)
        return sdpa__fail(pp, SDPA_ERR_PARAM, "sdpa_kv_cache_attention: precision = %d is not an sdpa_precision value", p->precision);
    int8 = p->precision == SDPA_PRECISION_INT8_QK || p->precision == SDPA_PRECISION_INT8_QK_NOSMOOTH ||
           p->precision == SDPA_PRECISION_INT8_QK_BF16_PV; /* BF16_PV: no bf16 P.V here; no smoothing of a cache's keys */
    if (int8 && (c->dt != SDPA_I8 || c->D > SDPA__KV_I16_MAX_D))
        return sdpa__fail(pp, SDPA_ERR_PARAM, "sdpa_kv_cache_attention: the int8 precision modes need an I8 cache with head_dim <= %d",
                          SDPA__KV_I16_MAX_D);
    if (p->scale != p->scale || p->scale == (float)INFINITY || p->scale == -(float)INFINITY)
        return sdpa__fail(pp, SDPA_ERR_PARAM, "sdpa_kv_cache_attention: scale must be finite");
    if (!(p->softcap >= 0.0f) || p->softcap == (float)INFINITY)
        return sdpa__fail(pp, SDPA_ERR_PARAM, "sdpa_kv_cache_attention: softcap must be finite and >= 0");
    if (p->num_threads < 0) return sdpa__fail(pp, SDPA_ERR_PARAM, "sdpa_kv_cache_attention: num_threads must be >= 0");
    for (b = 0; b < P->B; b++) {
        if (seqs && (seqs[b] < 0 || seqs[b] >= c->nseq))
            return sdpa__fail(pp, SDPA_ERR_PARAM, "sdpa_kv_cache_attention: seqs[%lld] = %lld is outside [0, %lld)", (long long)b,
                              (long long)seqs[b], (long long)c->nseq);
        if (!seqs && b >= c->nseq)
            return sdpa__fail(pp, SDPA_ERR_SHAPE, "sdpa_kv_cache_attention: batch %lld > the cache's %lld sequences (pass seqs)",
                              (long long)P->B, (long long)c->nseq);
        if (p->seqlens_q && (p->seqlens_q[b] < 0 || p->seqlens_q[b] > P->Lq))
            return sdpa__fail(pp, SDPA_ERR_SEQLENS, "sdpa_kv_cache_attention: seqlens_q[%lld] = %lld is outside [0, %lld]",
                              (long long)b, (long long)p->seqlens_q[b], (long long)P->Lq);
    }
    P->scale = p->scale != 0.0f ? p->scale : (float)(1.0 / sqrt((double)P->D));
    P->softcap = p->softcap;
    P->causal = p->causal;
    P->window = p->window != 0;
    P->wl = SDPA__MIN(p->window_left, INT64_MAX / 4); /* positions stay below INT64_MAX / 2 */
    P->wr = SDPA__MIN(p->window_right, INT64_MAX / 4);
    P->alibi = p->alibi_slopes;
    P->score_mod = p->score_mod;
    P->score_mod_user = p->score_mod_user;
    P->sq = p->seqlens_q;
    if (p->lse) {
        if (!sdpa__mul_ok(P->B, P->Hq, &lse_n) || !sdpa__mul_ok(lse_n, P->Lq, &lse_n) || lse_n > INT64_MAX / 4 ||
            !sdpa__bytes_ok(lse_n * 4))
            return sdpa__fail(pp, SDPA_ERR_OVERFLOW, "sdpa_kv_cache_attention: lse size overflows");
        lse_lo = (uintptr_t)p->lse;
        lse_hi = lse_lo + (uintptr_t)lse_n * 4u;
        if (lse_n > 0 && lse_hi < lse_lo) return sdpa__fail(pp, SDPA_ERR_OVERFLOW, "sdpa_kv_cache_attention: lse wraps around");
    }
    P->lse = p->lse;
    if (sdpa__overlap(&P->q, P->o.lo, P->o.hi)) return sdpa__fail(pp, SDPA_ERR_ALIAS, "sdpa_kv_cache_attention: out overlaps q");
    if (sdpa__overlap(&P->q, lse_lo, lse_hi)) return sdpa__fail(pp, SDPA_ERR_ALIAS, "sdpa_kv_cache_attention: lse overlaps q");
    if (sdpa__overlap(&P->o, lse_lo, lse_hi)) return sdpa__fail(pp, SDPA_ERR_ALIAS, "sdpa_kv_cache_attention: lse overlaps out");
    rc = sdpa__resolve_path(pp, p->path);
    if (rc < 0) return rc;
    P->path = (sdpa_path)rc;
    sdpa__set_kernels(P); /* row_max, exp_row and load_row; no bf16 mode here */
    P->bf16 = 0;
    K.kdot = sdpa__kdot_scalar;
    K.vacc = sdpa__vacc_scalar;
    K.q16c = sdpa__kv_q16c_scalar;
#ifdef SDPA__HAVE_AVX2
    if (P->path == SDPA_PATH_AVX2 || P->path == SDPA_PATH_AVX512 || P->path == SDPA_PATH_AMX) {
        K.kdot = sdpa__kdot_avx2;
        K.vacc = sdpa__vacc_avx2;
        K.q16c = sdpa__kv_q16c_avx2;
        K.kdot16 = sdpa__kdot16_avx2;
        K.vacc8 = sdpa__vacc8_avx2;
    }
#endif
#ifdef SDPA__HAVE_AVX512
    if (P->path == SDPA_PATH_AVX512 || P->path == SDPA_PATH_AMX) {
        K.kdot = sdpa__kdot_avx512;
        K.vacc = sdpa__vacc_avx512;
        K.kdot16 = (sdpa__cpu() & SDPA__CPU_VNNI) ? sdpa__kdot16_vnni : sdpa__kdot16_avx512;
        K.q16c = sdpa__kv_q16c_avx512;
        if (sdpa__cpu() & SDPA__CPU_VNNI) K.vacc8 = sdpa__vacc8_vnni;
    }
#endif
    if (c->dt != SDPA_I8 || P->D > SDPA__KV_I16_MAX_D) K.kdot16 = NULL;
    else if (!K.kdot16) K.kdot16 = sdpa__kdot16_scalar;
    K.qlim = int8 ? 127 : 32767;
#ifdef SDPA__HAVE_AVX512
    if (int8 && (P->path == SDPA_PATH_AVX512 || P->path == SDPA_PATH_AMX) && (sdpa__cpu() & SDPA__CPU_VNNI)) K.kdot8 = sdpa__kdot8_vnni;
#endif
    if (c->dt != SDPA_I8) K.vacc8 = NULL;
    else if (!K.vacc8) K.vacc8 = sdpa__vacc8_scalar;
    K.ldq16 = SDPA__ROUND_UP(P->D, 32);
    K.c = c;
    K.seqs = seqs;

    /* per-worker scratch (sdpa__kv_carve), sizes checked */
    K.ldo = SDPA__ROUND_UP(P->Dv, 16);
    a[0] = (c->kchan ? 2 : 1) * SDPA__KV_ROWS; e[0] = P->D; /* Q, and Q times a page's key scales */
    a[1] = SDPA__KV_ROWS;      e[1] = SDPA__KV_SPAN;
    a[2] = 1;                  e[2] = SDPA__MAX(P->D, K.ldo);
    a[3] = SDPA__KV_ROWS;      e[3] = K.ldo;
    a[4] = 2 * SDPA__KV_ROWS;  e[4] = 1;
    a[5] = 8 * SDPA__KV_ROWS;  e[5] = 1; /* the int64 h, i, lo, hi */
    a[6] = SDPA__KV_ROWS;      e[6] = K.ldq16 / 2 + 1;  /* int16 queries and their scales */
    a[7] = SDPA__KV_ROWS;      e[7] = K.ldq16 / 4 + 1;  /* int8 mode's byte queries and their sums */
    for (i = 0; i < 8; i++)
        if (!sdpa__mul_ok(a[i], e[i], &f) || f > INT64_MAX - 15 || !sdpa__mul_ok(SDPA__ROUND_UP(f, 16), 4, &f) ||
            !sdpa__add_ok(wbytes, f, &wbytes))
            return sdpa__fail(pp, SDPA_ERR_OVERFLOW, "sdpa_kv_cache_attention: scratch size overflows");
    P->ws_worker = (size_t)wbytes;

    /* tasks and partials; the chunking depends on the lengths only */
    for (b = 0; b < P->B; b++) {
        sdpa__seq sq;
        const sdpa__kv_seq *s;
        int64_t rows, nch, ch, t;
        sdpa__kv_seqinfo(&K, b, &sq, &s);
        rows = P->G * sq.vq;
        nch = sdpa__kv_chunks(rows, sq.vk, &ch);
        if (nch > 1) {
            if (!sdpa__mul_ok(rows * nch, c->H, &t) || !sdpa__add_ok(nparts, t, &nparts))
                return sdpa__fail(pp, SDPA_ERR_OVERFLOW, "sdpa_kv_cache_attention: partial results overflow");
            nmerge += c->H;
        }
        if (!sdpa__mul_ok(sdpa__kv_rblocks(&K, &sq) * nch, c->H, &t) || !sdpa__add_ok(ntask, t, &ntask))
            return sdpa__fail(pp, SDPA_ERR_OVERFLOW, "sdpa_kv_cache_attention: task count overflows");
    }
    /* kv heads per task: as many as leave SDPA__KV_TASKS tasks per worker
     * (the counts above are per head, so the grouped ones are no larger) */
    K.hpt = sdpa__kv_grouping(P->path) ? SDPA__MAX(1, ntask / ((int64_t)SDPA__KV_TASKS * sdpa__n_workers(p, ntask))) : 1;
    K.pfl2 = sdpa__kv_grouping(P->path);
    for (ntask = 0, b = 0; b < P->B; b++) {
        sdpa__seq sq;
        const sdpa__kv_seq *s;
        int64_t ch, rows;
        sdpa__kv_seqinfo(&K, b, &sq, &s);
        rows = P->G * sq.vq;
        ntask += sdpa__kv_rblocks(&K, &sq) * sdpa__kv_chunks(rows, sq.vk, &ch) * ((c->H + sdpa__kv_hpt(&K, &sq) - 1) / sdpa__kv_hpt(&K, &sq));
    }
    P->n_workers = sdpa__n_workers(p, ntask);
    P->n_tasks = ntask;
    K.n_merge = nmerge;
    hdr = SDPA__ROUND_UP((5 * P->B + 3) * 8, 64);
    if (P->B > INT64_MAX / 64 || !sdpa__mul_ok(nparts, P->Dv + 2, &f) || f > INT64_MAX / 8 ||
        !sdpa__mul_ok((int64_t)P->ws_worker, P->n_workers, &bytes) || !sdpa__add_ok(bytes, hdr + SDPA__ROUND_UP(f * 4, 64) + 64, &bytes) ||
        !sdpa__bytes_ok(bytes) || (uint64_t)bytes > (uint64_t)SIZE_MAX)
        return sdpa__fail(pp, SDPA_ERR_OVERFLOW, "sdpa_kv_cache_attention: scratch size overflows");

    /* every check passed: the scratch (so that SDPA_ERR_NOMEM leaves out
     * untouched), rows past seqlens_q, then the tasks */
    total = (size_t)bytes;
    raw = NULL;
    if (ntask > 0 && !(raw = sdpa__scratch_alloc(p, total)))
        return sdpa__fail(pp, SDPA_ERR_NOMEM, "sdpa_kv_cache_attention: could not allocate %llu bytes of scratch", (unsigned long long)total);
    for (b = 0; b < P->B; b++) {
        int64_t vq = P->sq ? P->sq[b] : P->Lq, h, ii, d;
        for (h = 0; h < P->Hq; h++)
            for (ii = vq; ii < P->Lq; ii++) {
                char *dst = (char *)(uintptr_t)P->o.data + (b * P->o.s[0] + h * P->o.s[1] + ii * P->o.s[2]) * P->o.esize;
                float zero[16] = {0};
                for (d = 0; d < P->Dv; d += 16) sdpa__store_row(dst + d * P->o.esize, P->o.dtype, zero, SDPA__MIN(16, P->Dv - d), 1.0f);
                if (P->lse) P->lse[(b * P->Hq + h) * P->Lq + ii] = -(float)INFINITY;
            }
    }
    if (ntask == 0) return SDPA_OK;
    base = (char *)raw + ((64u - ((uintptr_t)raw & 63u)) & 63u);
    K.task_start = (int64_t *)(void *)base;
    K.merge_start = K.task_start + P->B + 1;
    K.part_start = K.merge_start + P->B + 1;
    K.nch = K.part_start + P->B + 1;
    K.ch = K.nch + P->B;
    K.part = (float *)(void *)(base + hdr);
    P->ws = base + hdr + SDPA__ROUND_UP(f * 4, 64);
    ntask = nmerge = nparts = 0;
    for (b = 0; b < P->B; b++) {
        sdpa__seq sq;
        const sdpa__kv_seq *s;
        int64_t rows, ch;
        sdpa__kv_seqinfo(&K, b, &sq, &s);
        rows = P->G * sq.vq;
        K.nch[b] = sdpa__kv_chunks(rows, sq.vk, &ch);
        K.ch[b] = ch;
        K.task_start[b] = ntask;
        K.merge_start[b] = nmerge;
        K.part_start[b] = nparts;
        if (K.nch[b] > 1) {
            nparts += rows * K.nch[b] * c->H;
            nmerge += c->H;
        }
        ntask += sdpa__kv_rblocks(&K, &sq) * K.nch[b] * ((c->H + sdpa__kv_hpt(&K, &sq) - 1) / sdpa__kv_hpt(&K, &sq));
    }
    K.task_start[P->B] = ntask;
    K.merge_start[P->B] = nmerge;
    K.part_start[P->B] = nparts;

    rc = sdpa__run_tasks(pp, P->n_workers, ntask, sdpa__kv_task, &K);
    if (rc == SDPA_OK && nmerge > 0) rc = sdpa__run_tasks(pp, P->n_workers, nmerge, sdpa__kv_merge, &K);
    sdpa__scratch_free(p, raw, total);
    return rc;
}

/* ---- thread pool ------------------------------------------------------------ */

#if defined(SDPA__PTHREADS)
struct sdpa__pool_slot {
    struct sdpa_pool *pool;
    int w;
};

struct sdpa_pool {
    pthread_mutex_t call;        /* one parallel_for at a time */
    pthread_mutex_t mu;          /* everything below */
    pthread_cond_t wake, done;
    unsigned long gen;           /* job number; workers wait for it to change */
    int quit;
    int n, started, pinned;      /* threads incl. the caller; worker threads running; pinned */
    int ready;                   /* worker threads past their start (pinning done) */
    sdpa_task_fn fn;             /* the job */
    void *ctx;
    int64_t n_tasks, next;
    int nw, busy;                /* workers 0..nw-1 take part; worker threads still in the job */
    int cpu[SDPA_MAX_THREADS];   /* worker w's CPU, -1: not pinned */
    pthread_t th[SDPA_MAX_THREADS];
    struct sdpa__pool_slot slot[SDPA_MAX_THREADS];
};

#if defined(__linux__) && (defined(__x86_64__) || defined(__aarch64__))
#define SDPA__CAN_PIN 1
/* sched_getaffinity / sched_setaffinity of the calling thread, made directly
 * like the AMX permission (no feature-test macro for the libc wrappers). */
static long sdpa__affinity(int set, unsigned long *mask, unsigned long bytes)
{
    long ret;
#if defined(__x86_64__)
    __asm__ __volatile__("syscall"
                         : "=a"(ret)
                         : "0"(set ? 203L : 204L), "D"(0L), "S"(bytes), "d"(mask)
                         : "rcx", "r11", "memory");
#else
    register long x8 __asm__("x8") = set ? 122L : 123L;
    register long x0 __asm__("x0") = 0L;
    register long x1 __asm__("x1") = (long)bytes;
    register long x2 __asm__("x2") = (long)mask;
    __asm__ __volatile__("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
    ret = x0;
#endif
    return ret;
}
#endif

static void sdpa__pool_pause(void)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_ia32_pause();
#elif defined(__GNUC__) && defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

/* Takes tasks until none is left; mu held on entry and on return. */
static void sdpa__pool_drain(sdpa_pool *pool, int w)
{
    while (pool->next < pool->n_tasks) {
        int64_t t = pool->next++;
        pthread_mutex_unlock(&pool->mu);
        pool->fn(pool->ctx, t, w);
        pthread_mutex_lock(&pool->mu);
    }
}

static void *sdpa__pool_main(void *arg)
{
    struct sdpa__pool_slot *s = (struct sdpa__pool_slot *)arg;
    sdpa_pool *pool = s->pool;
    unsigned long seen = 0;
    int w = s->w;
#ifdef SDPA__CAN_PIN
    if (pool->cpu[w] >= 0) {
        unsigned long m[SDPA_MAX_THREADS / (8 * sizeof(unsigned long)) + 16];
        memset(m, 0, sizeof m);
        m[(unsigned)pool->cpu[w] / (8 * sizeof(unsigned long))] |= 1ul << ((unsigned)pool->cpu[w] % (8 * sizeof(unsigned long)));
        if (sdpa__affinity(1, m, sizeof m) == 0) {
            pthread_mutex_lock(&pool->mu);
            pool->pinned++;
            pthread_mutex_unlock(&pool->mu);
        }
    }
#endif
    pthread_mutex_lock(&pool->mu); /* sdpa_pool_create returns once every worker got here */
    pool->ready++;
    pthread_cond_signal(&pool->done);
    pthread_mutex_unlock(&pool->mu);
    for (;;) {
#if defined(__GNUC__)
        int i; /* a short spin first: back-to-back calls skip the sleep and wake-up */
        for (i = 0; i < 2000 && __atomic_load_n(&pool->gen, __ATOMIC_ACQUIRE) == seen &&
                    !__atomic_load_n(&pool->quit, __ATOMIC_ACQUIRE); i++)
            sdpa__pool_pause();
#endif
        pthread_mutex_lock(&pool->mu);
        while (pool->gen == seen && !pool->quit) pthread_cond_wait(&pool->wake, &pool->mu);
        if (pool->quit) {
            pthread_mutex_unlock(&pool->mu);
            return NULL;
        }
        seen = pool->gen;
        if (w < pool->nw) {
            sdpa__pool_drain(pool, w);
            if (--pool->busy == 0) pthread_cond_signal(&pool->done);
        }
        pthread_mutex_unlock(&pool->mu);
    }
}
#else
struct sdpa_pool {
    int n;
};
#endif

SDPA_API int sdpa_pool_create(int n_threads, unsigned flags, sdpa_pool **out)
{
    sdpa_pool *pool;
    if (!out) return SDPA_ERR_NULL;
    *out = NULL;
    if (n_threads == 0) n_threads = sdpa__default_threads();
    if (n_threads < 1 || n_threads > SDPA_MAX_THREADS || (flags & ~SDPA_POOL_PIN)) return SDPA_ERR_PARAM;
    pool = (sdpa_pool *)SDPA_MALLOC(sizeof *pool);
    if (!pool) return SDPA_ERR_NOMEM;
    memset(pool, 0, sizeof *pool);
#if defined(SDPA__PTHREADS)
    {
        int w, ok = 1;
        for (w = 0; w < n_threads; w++) pool->cpu[w] = -1;
#ifdef SDPA__CAN_PIN
        if (flags & SDPA_POOL_PIN) { /* worker w on the w-th CPU that this thread may run on */
            unsigned long m[SDPA_MAX_THREADS / (8 * sizeof(unsigned long)) + 16];
            long got;
            memset(m, 0, sizeof m);
            got = sdpa__affinity(0, m, sizeof m);
            if (got > 0) {
                int c, k = 0;
                for (c = 0; c < (int)(got * 8) && k < n_threads; c++)
                    if ((m[c / (8 * (int)sizeof(unsigned long))] >> (c % (8 * (int)sizeof(unsigned long)))) & 1ul)
                        pool->cpu[k++] = c;
                pool->cpu[0] = -1; /* the caller is not pinned */
            }
        }
#else
        (void)flags;
#endif
        if (pthread_mutex_init(&pool->call, NULL) != 0) ok = 0;
        else if (pthread_mutex_init(&pool->mu, NULL) != 0) { pthread_mutex_destroy(&pool->call); ok = 0; }
        else if (pthread_cond_init(&pool->wake, NULL) != 0) {
            pthread_mutex_destroy(&pool->mu), pthread_mutex_destroy(&pool->call);
            ok = 0;
        } else if (pthread_cond_init(&pool->done, NULL) != 0) {
            pthread_cond_destroy(&pool->wake), pthread_mutex_destroy(&pool->mu), pthread_mutex_destroy(&pool->call);
            ok = 0;
        }
        if (!ok) {
            SDPA_FREE(pool);
            return SDPA_ERR_THREADS;
        }
        pool->n = 1;
        for (w = 1; w < n_threads; w++) { /* slot w runs as worker w; a failed start ends the list */
            pool->slot[w].pool = pool;
            pool->slot[w].w = w;
            if (pthread_create(&pool->th[w], NULL, sdpa__pool_main, &pool->slot[w]) != 0) break;
            pool->n = w + 1;
        }
        pool->started = pool->n - 1;
        pthread_mutex_lock(&pool->mu);
        while (pool->ready < pool->started) pthread_cond_wait(&pool->done, &pool->mu);
        pthread_mutex_unlock(&pool->mu);
        if (n_threads > 1 && pool->n == 1) {
            sdpa_pool_destroy(pool);
            return SDPA_ERR_THREADS;
        }
    }
#else
    (void)flags;
    pool->n = 1;
#endif
    *out = pool;
    return SDPA_OK;
}

SDPA_API void sdpa_pool_destroy(sdpa_pool *pool)
{
    if (!pool) return;
#if defined(SDPA__PTHREADS)
    {
        int w;
        pthread_mutex_lock(&pool->mu);
#if defined(__GNUC__)
        __atomic_store_n(&pool->quit, 1, __ATOMIC_RELEASE); /* the spinning workers read it without mu */
#else
        pool->quit = 1;
#endif
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->mu);
        for (w = 1; w <= pool->started; w++) pthread_join(pool->th[w], NULL);
        pthread_cond_destroy(&pool->done);
        pthread_cond_destroy(&pool->wake);
        pthread_mutex_destroy(&pool->mu);
        pthread_mutex_destroy(&pool->call);
    }
#endif
    SDPA_FREE(pool);
}

SDPA_API int sdpa_pool_size(const sdpa_pool *pool) { return pool ? pool->n : 0; }

SDPA_API int sdpa_pool_pinned(const sdpa_pool *pool)
{
#if defined(SDPA__PTHREADS)
    int n;
    if (!pool) return 0;
    pthread_mutex_lock((pthread_mutex_t *)&pool->mu);
    n = pool->pinned;
    pthread_mutex_unlock((pthread_mutex_t *)&pool->mu);
    return n;
#else
    (void)pool;
    return 0;
#endif
}

SDPA_API int sdpa_pool_parallel_for(void *user, int n_workers, int64_t n_tasks, sdpa_task_fn fn, void *ctx)
{
    sdpa_pool *pool = (sdpa_pool *)user;
    if (!pool || !fn) return -1;
    if (n_tasks <= 0) return 0;
#if defined(SDPA__PTHREADS)
    if (n_workers > 1 && pool->n > 1) {
        int nw = SDPA__MIN(n_workers, pool->n);
        pthread_mutex_lock(&pool->call);
        pthread_mutex_lock(&pool->mu);
        pool->fn = fn;
        pool->ctx = ctx;
        pool->n_tasks = n_tasks;
        pool->next = 0;
        pool->nw = nw;
        pool->busy = nw - 1;
#if defined(__GNUC__)
        __atomic_store_n(&pool->gen, pool->gen + 1, __ATOMIC_RELEASE);
#else
        pool->gen++;
#endif
        pthread_cond_broadcast(&pool->wake);
        sdpa__pool_drain(pool, 0);
        while (pool->busy > 0) pthread_cond_wait(&pool->done, &pool->mu);
        pool->fn = NULL;
        pthread_mutex_unlock(&pool->mu);
        pthread_mutex_unlock(&pool->call);
        return 0;
    }
#endif
    {
        int64_t t;
        (void)n_workers;
        for (t = 0; t < n_tasks; t++) fn(ctx, t, 0);
    }
    return 0;
}

/* ======================================================================== */
/* ---- planner: the Goldilocks search (sdpa_plan*) ------------------------ */
/* ======================================================================== */
/* How a candidate is predicted: see "planner" among the declarations. The
 * task replay below mirrors sdpa_attention's split (sdpa__tiles_per_group,
 * sdpa__run_tile) and sdpa_kv_cache_attention's (sdpa__kv_chunks,
 * sdpa__kv_rblocks, sdpa__kv_heads_per_task); a change there should be mirrored here (the planner's
 * tests compare its memory with the library's own numbers). */

static const int sdpa__plan_tq[SDPA_PLAN_NTQ] = {32, 64, 128, 256};
static const int sdpa__plan_tk[SDPA_PLAN_NTK] = {32, 64, 128};
static const sdpa_dtype sdpa__plan_dt[4] = {SDPA_F32, SDPA_F16, SDPA_BF16, SDPA_I8};

/* dtype -> its row in the model's tables (F32 0, F16 1, BF16 2, I8 3), -1 otherwise */
static int sdpa__plan_dix(sdpa_dtype t)
{
    switch (t) {
    case SDPA_F32: return 0;
    case SDPA_F16: return 1;
    case SDPA_BF16: return 2;
    case SDPA_I8: return 3;
    default: return -1;
    }
}

SDPA_API void sdpa_plan_model_default(sdpa_plan_model *m)
{
    /* GFLOP/s of one thread at L = 1024..2048, D = 128, tile 64 x 64, not
     * causal, with the key loading (key_s) taken out: scalar and avx2 on the
     * 2-core Zen 3 the bench ran on, avx512 and amx on the 16-core Xeon
     * (README, Performance); F16 and BF16 in: the widened rows (amx: BF16 on
     * AMX tiles, F16 widened on the avx512 kernels). On avx2 the tile sweep
     * (tile_q 32, 64, 128 at 59.0, 66.4, 71.2 GFLOP/s) gives 75.9 GFLOP/s
     * for the products and 31 ns per key (0.12 ns per element) per task;
     * the other paths' rates are their measured ones x 1.15 (amx int8: 204
     * GFLOP/s with F32 inputs, the median of 8 interleaved rounds, F16
     * inputs given the same, unmeasured; with BF16 inputs 0.69x the BF16
     * mode, as in 7 interleaved rounds, 178 against 256 GFLOP/s). */
    static const double gf[SDPA__PATH_LAST + 1][3][2] = {
        {{0, 0}, {0, 0}, {0, 0}},                 /* auto: never a candidate */
        {{28.0, 17.4}, {25.3, 16.7}, {26.5, 17.0}}, /* scalar */
        {{75.9, 79.1}, {69.0, 73.6}, {70.2, 74.8}}, /* avx2 */
        {{94.9, 109.3}, {89.7, 103.5}, {92.0, 105.8}}, /* avx512 */
        {{94.9, 234.5}, {89.7, 234.5}, {170.1, 117.6}}, /* amx */
        {{23.0, 25.3}, {20.7, 23.0}, {20.7, 23.0}}, /* neon (a guess: no AArch64 hardware measured) */
    };
    /* the products' speed at tile [tile_q][tile_k] relative to 64 x 64, the
     * key loading taken out: avx2, 1 thread, L = 1024, D = 128 (Zen 3) */
    static const double ts[SDPA_PLAN_NTQ][SDPA_PLAN_NTK] = {
        {0.95, 1.00, 0.96}, {0.95, 1.00, 0.96}, {0.93, 1.00, 0.95}, {0.91, 0.96, 0.91},
    };
    static const double ks[SDPA__PATH_LAST + 1] = {0, 0.3e-9, 0.12e-9, 0.08e-9, 0.08e-9, 0.3e-9};
    static const double i8k[SDPA__PATH_LAST + 1] = {0, 2e-9, 1e-9, 0.8e-9, 0.8e-9, 2e-9};
    /* decode, one thread, F32 / F16 / BF16 / I8 storage */
    static const double kvb[4] = {12.0, 8.0, 8.5, 5.0}, kvf[4] = {40.0, 30.0, 32.0, 20.0};
    static const double err[3][2] = {{3e-7, 7e-3}, {4e-4, 7e-3}, {3e-3, 8e-3}};
    static const double kverr[4] = {3e-7, 4e-4, 3e-3, 6.5e-3};
    int p, d, e;
    memset(m, 0, sizeof *m);
    for (p = 0; p <= SDPA__PATH_LAST; p++)
        for (d = 0; d < 3; d++)
            for (e = 0; e < 2; e++) m->gflops[p][d][e] = gf[p][d][e];
    for (p = 0; p < SDPA_PLAN_NTQ; p++)
        for (d = 0; d < SDPA_PLAN_NTK; d++) m->tile_speed[p][d] = ts[p][d];
    for (p = 0; p <= SDPA__PATH_LAST; p++) { m->key_s[p] = ks[p]; m->i8_key_s[p] = i8k[p]; }
    for (p = 1; p <= SDPA__PATH_LAST; p++)
        for (d = 0; d < 4; d++) {
            double f = p == SDPA_PATH_SCALAR ? 0.5 : (p == SDPA_PATH_NEON ? 0.6 : 1.0);
            m->kv_gbps[p][d] = kvb[d] * f;
            m->kv_gflops[p][d] = kvf[d] * f;
        }
    m->mem_gbps = 20.0;
    m->thread_eff = 0.9;
    m->eff_threads = 2;
    m->call_s = 5e-6;
    m->worker_s = 2e-5;
    m->task_s = 2e-7;
    for (d = 0; d < 3; d++)
        for (e = 0; e < 2; e++) m->error[d][e] = err[d][e];
    for (d = 0; d < 4; d++) m->kv_error[d] = kverr[d];
}

/* A problem with its defaults resolved and its sizes checked. */
typedef struct sdpa__pprob {
    int decode, causal, maxw, no_int8;
    int64_t B, Hq, Hkv, G, D, Dv, Lq, Lk, budget;
    double tol;
    unsigned dtypes;
    sdpa_path path;
} sdpa__pprob;

static int sdpa__plan_resolve(const sdpa_plan_problem *pb, const sdpa_plan_model *m, sdpa__pprob *r)
{
    int64_t t;
    if (!pb) return SDPA_ERR_NULL;
    memset(r, 0, sizeof *r);
    if (pb->kind != SDPA_PLAN_PREFILL && pb->kind != SDPA_PLAN_DECODE) return SDPA_ERR_PARAM;
    r->decode = pb->kind == SDPA_PLAN_DECODE;
    if (pb->batch < 1 || pb->q_heads < 1 || pb->kv_heads < 1 || pb->head_dim < 1 || pb->head_dim_v < 0 ||
        pb->q_len < 0 || pb->kv_len < 0 || (!r->decode && pb->q_len < 1))
        return SDPA_ERR_SHAPE;
    if (pb->q_heads % pb->kv_heads != 0) return SDPA_ERR_HEADS;
    if (pb->mem_budget < 0 || !(pb->max_error >= 0.0) || pb->max_error > 1e300 || pb->max_threads < 0 ||
        pb->max_threads > SDPA_MAX_THREADS || (pb->path != SDPA_PATH_AUTO && !sdpa_path_name(pb->path)) ||
        (unsigned)pb->path > (unsigned)SDPA__PATH_LAST || (m && (m->eff_threads < 1 || !(m->thread_eff > 0.0))))
        return SDPA_ERR_PARAM;
    if (pb->dtypes & ~((1u << SDPA_F32) | (1u << SDPA_F16) | (1u << SDPA_BF16) | (1u << SDPA_I8))) return SDPA_ERR_DTYPE;
    if (!r->decode && (pb->dtypes & (1u << SDPA_I8))) return SDPA_ERR_DTYPE; /* int8 prefill is a precision mode */
    r->B = pb->batch; r->Hq = pb->q_heads; r->Hkv = pb->kv_heads; r->G = r->Hq / r->Hkv;
    r->D = pb->head_dim; r->Dv = pb->head_dim_v ? pb->head_dim_v : pb->head_dim;
    r->Lq = r->decode && pb->q_len == 0 ? 1 : pb->q_len;
    r->Lk = !r->decode && pb->kv_len == 0 ? r->Lq : pb->kv_len;
    r->causal = r->decode || pb->causal;
    r->budget = pb->mem_budget;
    r->tol = pb->max_error > 0.0 ? pb->max_error : 1e-5;
    r->maxw = pb->max_threads ? pb->max_threads : sdpa__default_threads();
    r->dtypes = pb->dtypes ? pb->dtypes
                           : (1u << SDPA_F32) | (1u << SDPA_F16) | (1u << SDPA_BF16) | (r->decode ? (1u << SDPA_I8) : 0u);
    r->no_int8 = pb->no_int8;
    r->path = pb->path;
    /* q + out and k + v elements, times 4 bytes and some, must fit int64:
     * the tensors (or the cache) could not exist otherwise */
    if (r->D > INT64_MAX / 2 || r->Dv > INT64_MAX / 2 || !sdpa__mul_ok(r->B, r->Hq, &t) || !sdpa__mul_ok(t, r->Lq, &t) ||
        !sdpa__mul_ok(t, r->D + r->Dv, &t) || t > INT64_MAX / 16 || !sdpa__mul_ok(r->B, r->Hkv, &t) ||
        !sdpa__mul_ok(t, r->Lk, &t) || !sdpa__mul_ok(t, r->D + r->Dv, &t) || t > INT64_MAX / 16)
        return SDPA_ERR_OVERFLOW;
    if (m) { /* a model with negative or NaN costs would make the search meaningless */
        int p, d;
        double x = m->call_s + m->worker_s + m->task_s + m->mem_gbps;
        for (p = 0; p <= SDPA__PATH_LAST; p++) x += m->key_s[p] + m->i8_key_s[p];
        for (d = 0; d < 3; d++) x += m->error[d][0] + m->error[d][1];
        for (d = 0; d < 4; d++) x += m->kv_error[d];
        if (!(x >= 0.0) || !(m->call_s >= 0.0) || !(m->worker_s >= 0.0) || !(m->task_s >= 0.0) || !(m->mem_gbps >= 0.0))
            return SDPA_ERR_PARAM;
        for (p = 0; p <= SDPA__PATH_LAST; p++)
            if (!(m->key_s[p] >= 0.0) || !(m->i8_key_s[p] >= 0.0)) return SDPA_ERR_PARAM;
        for (d = 0; d < 3; d++)
            if (!(m->error[d][0] >= 0.0) || !(m->error[d][1] >= 0.0)) return SDPA_ERR_PARAM;
        for (d = 0; d < 4; d++)
            if (!(m->kv_error[d] >= 0.0)) return SDPA_ERR_PARAM;
    }
    return SDPA_OK;
}

/* Worker-free times as a min-heap: the next task goes to the worker that
 * is free first, as the built-in pool's shared counter hands them out. */
static void sdpa__plan_heap_push_min(double *h, int n, double add)
{
    int i = 0;
    double x = h[0] + add;
    for (;;) { /* sift the new root down */
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h[c + 1] < h[c]) c++;
        if (h[c] >= x) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

/* Replays a prefill's tasks on W workers in task order. A task of `rows`
 * query rows (padded to 4) and `keys` keys computed costs
 * a * rows * keys + b * keys + c seconds. Returns the makespan; *total the
 * sum, *ntasks the task count. Beyond 4096 tasks the tail is estimated
 * (then the balance is within about half a task of perfect). */
static double sdpa__plan_prefill_span(const sdpa__pprob *r, int64_t tq, int64_t tk, int W, double a, double b, double c,
                                      double *total, int64_t *ntasks)
{
    double h[SDPA_MAX_THREADS], maxc = 0.0, tot = 0.0, span = 0.0;
    int64_t tph, hpt, per_group, groups = r->B * r->Hkv, t, g;
    int w, exact;
    if (r->Lq >= tq) { tph = (r->Lq + tq - 1) / tq; hpt = 1; per_group = r->G * tph; }
    else { tph = 1; hpt = tq / r->Lq; per_group = (r->G + hpt - 1) / hpt; }
    *ntasks = groups * per_group;
    exact = *ntasks <= 4096;
    for (w = 0; w < W; w++) h[w] = 0.0;
    for (g = 0; g < (exact ? groups : 1); g++)
        for (t = 0; t < per_group; t++) { /* a task's cost depends on its row tile only */
            int64_t i0, cnt, khi, keys;
            double x;
            if (hpt == 1) { i0 = (t % tph) * tq; cnt = SDPA__MIN(tq, r->Lq - i0); }
            else { i0 = 0; cnt = r->Lq * SDPA__MIN(hpt, r->G - t * hpt); }
            khi = r->Lk - 1;
            if (r->causal) khi = SDPA__MIN(khi, (hpt == 1 ? i0 + cnt - 1 : r->Lq - 1) + r->Lk - r->Lq);
            keys = khi < 0 ? 0 : SDPA__MIN(r->Lk, SDPA__ROUND_UP(khi + 1, tk));
            x = a * (double)SDPA__ROUND_UP(cnt, 4) * (double)keys + b * (double)keys + c;
            tot += x;
            if (x > maxc) maxc = x;
            if (exact) sdpa__plan_heap_push_min(h, W, x);
        }
    if (exact) {
        for (w = 0; w < W; w++) span = h[w] > span ? h[w] : span;
    } else {
        tot *= (double)groups;
        span = tot / W + 0.5 * maxc;
    }
    *total = tot;
    return span;
}

static double sdpa__plan_eff(const sdpa_plan_model *m, int W)
{
    double e;
    if (W <= 1 || m->eff_threads <= 1) return 1.0;
    e = 1.0 - (1.0 - m->thread_eff) * (double)(W - 1) / (double)(m->eff_threads - 1);
    return e < 0.05 ? 0.05 : (e > 1.0 ? 1.0 : e);
}

/* Workspace of a prefill candidate, from sdpa__plan_make itself: tensors
 * with fake, non-overlapping addresses (nothing is read through them). */
static int sdpa__plan_workspace(const sdpa__pprob *r, const sdpa_plan_choice *c, int64_t *ws)
{
    sdpa_tensor q, k, v, o;
    sdpa_params p;
    sdpa__plan P;
    int64_t es = sdpa__esize(c->dtype), nq, nk, nv, no;
    uintptr_t at = 4096;
    int rc;
    memset(&q, 0, sizeof q);
    q.dtype = c->dtype;
    q.shape[0] = r->B; q.shape[1] = r->Hq; q.shape[2] = r->Lq; q.shape[3] = r->D;
    k = q; k.shape[1] = r->Hkv; k.shape[2] = r->Lk;
    v = k; v.shape[3] = r->Dv;
    o = q; o.shape[3] = r->Dv;
    nq = r->B * r->Hq * r->Lq * r->D * es; nk = r->B * r->Hkv * r->Lk * r->D * es;
    nv = r->B * r->Hkv * r->Lk * r->Dv * es; no = r->B * r->Hq * r->Lq * r->Dv * es; /* fit: resolve checked */
    if ((uint64_t)nq + (uint64_t)nk + (uint64_t)nv + (uint64_t)no + 8192u > (uint64_t)(UINTPTR_MAX - at))
        return SDPA_ERR_OVERFLOW;
    q.data = (void *)at; at += (uintptr_t)nq + 64u;
    k.data = (void *)at; at += (uintptr_t)nk + 64u;
    v.data = (void *)at; at += (uintptr_t)nv + 64u;
    o.data = (void *)at;
    memset(&p, 0, sizeof p);
    p.causal = r->causal ? SDPA_CAUSAL_BOTTOM_RIGHT : SDPA_CAUSAL_NONE;
    p.path = c->path;
    p.precision = c->precision;
    p.tile_q = c->tile_q;
    p.tile_k = c->tile_k;
    p.num_threads = c->num_threads;
    p.parallel_for = NULL;
    rc = sdpa__plan_make(&q, &k, &v, &o, &p, &P);
    if (rc != SDPA_OK) return rc;
    *ws = (int64_t)sdpa__ws_bytes(&P);
    return SDPA_OK;
}

/* Bytes of a cache of this problem's shape, storage st, after kv_len
 * tokens per sequence: the object and sequence tables from an empty cache
 * the library builds, the page size from its layout, the run tables as
 * appends one page at a time grow them (8, 16, 32, ... entries). */
static int sdpa__plan_cache_bytes(const sdpa__pprob *r, sdpa_dtype st, int64_t *bytes)
{
    sdpa_kv_cache_config cfg;
    sdpa_kv_cache *c = NULL;
    int64_t pages, cap = 8, per, b0, pb, tot;
    int rc;
    memset(&cfg, 0, sizeof cfg);
    cfg.num_seqs = r->B; cfg.kv_heads = r->Hkv; cfg.head_dim = r->D; cfg.head_dim_v = r->Dv; cfg.dtype = st;
    rc = sdpa_kv_cache_create(&cfg, &c);
    if (rc != SDPA_OK) return rc;
    b0 = c->bytes;
    pb = (int64_t)sdpa__kv_page_alloc_bytes(c);
    pages = (r->Lk + c->ps - 1) / c->ps;
    sdpa_kv_cache_destroy(c);
    if (pages == 0) { *bytes = b0; return SDPA_OK; }
    while (cap < pages) cap *= 2;
    if (!sdpa__mul_ok(pages, pb, &per) || !sdpa__add_ok(per, cap * (int64_t)sizeof(sdpa__kv_run), &per) ||
        !sdpa__mul_ok(per, r->B, &tot) || !sdpa__add_ok(tot, b0, &tot))
        return SDPA_ERR_OVERFLOW;
    *bytes = tot;
    return SDPA_OK;
}

/* Predicts one candidate (its configuration fields set) into c. */
static int sdpa__plan_predict(const sdpa__pprob *r, const sdpa_plan_model *m, sdpa_plan_choice *c)
{
    int di = sdpa__plan_dix(c->dtype), W = c->num_threads, rc;
    double eff, fpp = 2.0 * (double)(r->D + r->Dv), secs;
    if ((unsigned)c->path > (unsigned)SDPA__PATH_LAST || c->path == SDPA_PATH_AUTO || !sdpa_path_supported(c->path))
        return SDPA_ERR_PATH;
    if (W < 1 || W > SDPA_MAX_THREADS) return SDPA_ERR_PARAM;
    eff = sdpa__plan_eff(m, W);
    if (r->decode) {
        int64_t rows = r->G * r->Lq, ch, nch, rb, ntask, hpt, bytes;
        double bpk, perkey, span, tot, kvbytes;
        if (di < 0 || c->precision != 0 || c->tile_q != 0 || c->tile_k != 0) return SDPA_ERR_PARAM;
        if (!(m->kv_gbps[c->path][di] > 0.0) || !(m->kv_gflops[c->path][di] > 0.0)) return SDPA_ERR_PATH;
        nch = sdpa__kv_chunks(rows, r->Lk, &ch);
        rb = (rows + SDPA__KV_ROWS - 1) / SDPA__KV_ROWS;
        ntask = r->B * r->Hkv * rb * nch;
        hpt = sdpa__kv_grouping(c->path) ? sdpa__kv_heads_per_task(r->Hkv, rows, SDPA__MAX(1, ntask / ((int64_t)SDPA__KV_TASKS * SDPA__MIN(W, ntask)))) : 1;
        ntask = r->B * ((r->Hkv + hpt - 1) / hpt) * rb * nch;
        bpk = (double)(r->D + r->Dv) * (double)sdpa__esize(c->dtype) + (c->dtype == SDPA_I8 ? 8.0 : 0.0);
        /* one task: its chunk of keys, read once for up to SDPA__KV_ROWS rows */
        perkey = bpk / (m->kv_gbps[c->path][di] * 1e9) +
                 fpp * (double)SDPA__MIN(rows, SDPA__KV_ROWS) / (m->kv_gflops[c->path][di] * 1e9);
        tot = (double)ntask * ((double)(ch * hpt) * perkey + m->task_s);
        span = (double)((ntask + W - 1) / W) * ((double)(ch * hpt) * perkey + m->task_s);
        if (span > tot) span = tot;
        kvbytes = bpk * (double)r->Lk * (double)r->Hkv * (double)r->B;
        secs = span / eff;
        if (m->mem_gbps > 0.0 && kvbytes / (m->mem_gbps * 1e9) > secs) secs = kvbytes / (m->mem_gbps * 1e9);
        c->seconds = m->call_s + (W > 1 ? W * m->worker_s : 0.0) + secs;
        if ((rc = sdpa__plan_cache_bytes(r, c->dtype, &bytes)) != SDPA_OK) return rc;
        c->bytes = bytes;
        c->error = m->kv_error[di];
    } else {
        int qi = -1, ki = -1, i, pi = c->precision == SDPA_PRECISION_INT8_QK ? 1 : 0;
        int64_t ntasks, ws, es, t, tb = 0;
        double total, span, rate;
        if (di < 0 || di > 2) return SDPA_ERR_DTYPE;
        if (c->precision != SDPA_PRECISION_DEFAULT && c->precision != SDPA_PRECISION_INT8_QK) return SDPA_ERR_PARAM;
        for (i = 0; i < SDPA_PLAN_NTQ; i++) if (sdpa__plan_tq[i] == c->tile_q) qi = i;
        for (i = 0; i < SDPA_PLAN_NTK; i++) if (sdpa__plan_tk[i] == c->tile_k) ki = i;
        if (qi < 0 || ki < 0) return SDPA_ERR_PARAM;
        rate = m->gflops[c->path][di][pi] * m->tile_speed[qi][ki];
        if (!(rate > 0.0)) return SDPA_ERR_PATH;
        { /* the library caps workers at the task count (as sdpa__tiles_per_group counts them) */
            int64_t nt0 = r->B * r->Hkv *
                          (r->Lq >= c->tile_q ? r->G * ((r->Lq + c->tile_q - 1) / c->tile_q)
                                              : (r->G + c->tile_q / r->Lq - 1) / (c->tile_q / r->Lq));
            if (W > nt0) W = nt0 > 0 ? (int)nt0 : 1;
        }
        span = sdpa__plan_prefill_span(r, c->tile_q, c->tile_k, W, fpp / (rate * 1e9),
                                       (double)(r->D + r->Dv) * m->key_s[c->path], m->task_s, &total, &ntasks);
        if (pi) /* the K pre-pass, in parallel chunks */
            span += (double)r->B * (double)r->Hkv * (double)r->Lk * (double)r->D * m->i8_key_s[c->path] / W;
        eff = sdpa__plan_eff(m, W);
        secs = span / eff;
        c->seconds = m->call_s + (W > 1 ? W * m->worker_s : 0.0) + secs;
        if ((rc = sdpa__plan_workspace(r, c, &ws)) != SDPA_OK) return rc;
        es = sdpa__esize(c->dtype);
        t = r->B * r->Hq * r->Lq * (r->D + r->Dv) * es; /* q and out; sizes checked in resolve */
        tb = r->B * r->Hkv * r->Lk * (r->D + r->Dv) * es; /* k and v */
        if (!sdpa__add_ok(t, tb, &t) || !sdpa__add_ok(t, ws, &t)) return SDPA_ERR_OVERFLOW;
        c->bytes = t;
        c->error = m->error[di][pi];
        (void)qi;
    }
    c->feasible = (r->budget == 0 || c->bytes <= r->budget) && c->error <= r->tol;
    return SDPA_OK;
}

SDPA_API int sdpa_plan_predict(const sdpa_plan_problem *pb, const sdpa_plan_model *model, sdpa_plan_choice *c)
{
    sdpa_plan_model def;
    sdpa__pprob r;
    int rc;
    if (!pb || !c) return SDPA_ERR_NULL;
    if (!model) { sdpa_plan_model_default(&def); model = &def; }
    if ((rc = sdpa__plan_resolve(pb, model, &r)) != SDPA_OK) return rc;
    if (r.path != SDPA_PATH_AUTO && c->path != r.path) return SDPA_ERR_PATH;
    if (!(r.dtypes & (1u << c->dtype))) return SDPA_ERR_DTYPE;
    return sdpa__plan_predict(&r, model, c);
}

/* Calls fn on every candidate in a fixed order: path, dtype, precision,
 * tile_q, tile_k, threads (1, 2, 4, ... and max_threads). A candidate the
 * model has no speed for, or whose path is unsupported, is skipped. */
typedef int (*sdpa__plan_fn)(void *ctx, const sdpa_plan_choice *c);

static int sdpa__plan_each(const sdpa__pprob *r, const sdpa_plan_model *m, sdpa__plan_fn fn, void *ctx)
{
    int path, di, pi, qi, ki, w, rc;
    for (path = SDPA_PATH_SCALAR; path <= SDPA__PATH_LAST; path++) {
        if (!sdpa_path_supported((sdpa_path)path) || (r->path != SDPA_PATH_AUTO && path != (int)r->path)) continue;
        for (di = 0; di < 4; di++) {
            if (!(r->dtypes & (1u << sdpa__plan_dt[di]))) continue;
            for (pi = 0; pi < (r->decode || r->no_int8 ? 1 : 2); pi++)
                for (qi = 0; qi < (r->decode ? 1 : SDPA_PLAN_NTQ); qi++)
                    for (ki = 0; ki < (r->decode ? 1 : SDPA_PLAN_NTK); ki++)
                        for (w = 1;; w = w * 2 < r->maxw ? w * 2 : r->maxw) {
                            sdpa_plan_choice c;
                            memset(&c, 0, sizeof c);
                            c.path = (sdpa_path)path;
                            c.dtype = sdpa__plan_dt[di];
                            c.precision = pi ? SDPA_PRECISION_INT8_QK : SDPA_PRECISION_DEFAULT;
                            c.tile_q = r->decode ? 0 : sdpa__plan_tq[qi];
                            c.tile_k = r->decode ? 0 : sdpa__plan_tk[ki];
                            c.num_threads = w;
                            rc = sdpa__plan_predict(r, m, &c);
                            if (rc == SDPA_OK) {
                                if ((rc = fn(ctx, &c)) != SDPA_OK) return rc;
                            } else if (rc != SDPA_ERR_PATH) {
                                return rc;
                            }
                            if (w >= r->maxw) break;
                        }
        }
    }
    return SDPA_OK;
}

typedef struct sdpa__plan_list { sdpa_plan_choice *list; int64_t cap, n; } sdpa__plan_list;

static int sdpa__plan_collect(void *ctx, const sdpa_plan_choice *c)
{
    sdpa__plan_list *L = (sdpa__plan_list *)ctx;
    if (L->n < L->cap) L->list[L->n] = *c;
    L->n++;
    return SDPA_OK;
}

SDPA_API int sdpa_plan_candidates(const sdpa_plan_problem *pb, const sdpa_plan_model *model, sdpa_plan_choice *list,
                                  int64_t cap, int64_t *count)
{
    sdpa_plan_model def;
    sdpa__pprob r;
    sdpa__plan_list L;
    int rc;
    if (!pb || !count || (cap > 0 && !list)) return SDPA_ERR_NULL;
    if (cap < 0) return SDPA_ERR_PARAM;
    *count = 0;
    if (!model) { sdpa_plan_model_default(&def); model = &def; }
    if ((rc = sdpa__plan_resolve(pb, model, &r)) != SDPA_OK) return rc;
    L.list = list; L.cap = cap; L.n = 0;
    rc = sdpa__plan_each(&r, model, sdpa__plan_collect, &L);
    if (rc == SDPA_OK) *count = L.n;
    return rc;
}

typedef struct sdpa__plan_best {
    sdpa_plan_choice best, fallback;
    int have, have_fb, fb_tol; /* fb_tol: the fallback meets the tolerance */
    double tol;
} sdpa__plan_best;

static int sdpa__plan_better(const sdpa_plan_choice *a, const sdpa_plan_choice *b)
{
    if (a->seconds != b->seconds) return a->seconds < b->seconds;
    if (a->bytes != b->bytes) return a->bytes < b->bytes;
    return a->error < b->error;
}

static int sdpa__plan_keep(void *ctx, const sdpa_plan_choice *c)
{
    sdpa__plan_best *B = (sdpa__plan_best *)ctx;
    if (c->feasible) {
        if (!B->have || sdpa__plan_better(c, &B->best)) B->best = *c;
        B->have = 1;
    } else if (!B->have) {
        /* the closest miss: least memory among those within the tolerance, else least error */
        int tol = c->error <= B->tol;
        if (!B->have_fb || (tol && !B->fb_tol) ||
            (tol == B->fb_tol && (tol ? c->bytes < B->fallback.bytes : c->error < B->fallback.error))) {
            B->fallback = *c;
            B->fb_tol = tol;
        }
        B->have_fb = 1;
    }
    return SDPA_OK;
}

SDPA_API int sdpa_plan(const sdpa_plan_problem *pb, const sdpa_plan_model *model, sdpa_plan_choice *best)
{
    sdpa_plan_model def;
    sdpa__pprob r;
    sdpa__plan_best B;
    int rc;
    if (!pb || !best) return SDPA_ERR_NULL;
    memset(best, 0, sizeof *best);
    if (!model) { sdpa_plan_model_default(&def); model = &def; }
    if ((rc = sdpa__plan_resolve(pb, model, &r)) != SDPA_OK) return rc;
    memset(&B, 0, sizeof B);
    B.tol = r.tol;
    if ((rc = sdpa__plan_each(&r, model, sdpa__plan_keep, &B)) != SDPA_OK) return rc;
    if (B.have) { *best = B.best; return SDPA_OK; }
    if (B.have_fb) *best = B.fallback;
    return SDPA_ERR_INFEASIBLE;
}

/* GFLOP of the products and key elements loaded that a one-thread prefill
 * of H heads, Lq x Lk, head_dim D (not causal, tile 64 x 64) computes, as
 * the replay counts them. */
static void sdpa__plan_units(int64_t H, int64_t Lq, int64_t Lk, int64_t D, double *gflop, double *keyel)
{
    sdpa__pprob r;
    int64_t nt;
    memset(&r, 0, sizeof r);
    r.B = 1; r.Hq = r.Hkv = H; r.G = 1; r.D = r.Dv = D; r.Lq = Lq; r.Lk = Lk;
    (void)sdpa__plan_prefill_span(&r, 64, 64, 1, 2.0 * (double)(2 * D) * 1e-9, 0.0, 0.0, gflop, &nt);
    (void)sdpa__plan_prefill_span(&r, 64, 64, 1, 0.0, (double)(2 * D), 0.0, keyel, &nt);
}

/* ---- the probe ---- */

/* Seconds on a monotonic clock where the platform has one, else -1. */
static double sdpa__plan_now(void)
{
#if defined(CLOCK_MONOTONIC)
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    return -1.0;
#elif defined(SDPA__PLAN_TIMEOFDAY)
    struct timeval tv;
    if (gettimeofday(&tv, NULL) == 0) return (double)tv.tv_sec + 1e-6 * (double)tv.tv_usec;
    return -1.0;
#else
    return -1.0;
#endif
}

typedef struct sdpa__probe_bw {
    const float *buf;
    int64_t chunk, n;
    float sink[SDPA_MAX_THREADS];
} sdpa__probe_bw;

static void sdpa__probe_bw_task(void *ctx, int64_t task, int worker)
{
    sdpa__probe_bw *b = (sdpa__probe_bw *)ctx;
    const float *x = b->buf + task * b->chunk;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    int64_t i;
    for (i = 0; i + 4 <= b->chunk; i += 4) { s0 += x[i]; s1 += x[i + 1]; s2 += x[i + 2]; s3 += x[i + 3]; }
    b->sink[worker] += s0 + s1 + s2 + s3;
}

/* n uniform values in [-1, 1) as dtype t (F32, F16 or BF16) from *seed:
 * the probe's and the tuning's inputs. */
static void sdpa__plan_fill(void *dst, sdpa_dtype t, size_t n, uint32_t *seed)
{
    size_t i;
    for (i = 0; i < n; i++) {
        float x;
        *seed = *seed * 1664525u + 1013904223u;
        x = (float)((double)(*seed >> 8) * (2.0 / 16777216.0) - 1.0);
        if (t == SDPA_F32) ((float *)dst)[i] = x;
        else ((uint16_t *)dst)[i] = t == SDPA_F16 ? sdpa_f32_to_f16(x) : sdpa_f32_to_bf16(x);
    }
}

/* Best time of `reps` calls (after one warm-up), or -1 if a call failed. */
static double sdpa__probe_time(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v, const sdpa_tensor *o,
                               const sdpa_params *p, int reps)
{
    double best = -1.0;
    int r;
    for (r = 0; r <= reps; r++) {
        double t0 = sdpa__plan_now(), t;
        if (sdpa_attention(q, k, v, o, p) != SDPA_OK) return -1.0;
        t = sdpa__plan_now() - t0;
        if (r > 0 && (best < 0.0 || t < best)) best = t;
    }
    return best;
}

static double sdpa__probe_kv_time(const sdpa_kv_cache *c, const sdpa_tensor *q, const sdpa_tensor *o, const sdpa_params *p,
                                  int reps)
{
    double best = -1.0;
    int r;
    for (r = 0; r <= reps; r++) {
        double t0 = sdpa__plan_now(), t;
        if (sdpa_kv_cache_attention(c, NULL, q, o, p) != SDPA_OK) return -1.0;
        t = sdpa__plan_now() - t0;
        if (r > 0 && (best < 0.0 || t < best)) best = t;
    }
    return best;
}

SDPA_API int sdpa_plan_probe(sdpa_plan_model *m, const sdpa_params *base, int max_threads)
{
    enum { L = 512, D = 128, HP = 2, KVH = 8, KVL = 2048, BWF = 8 << 20 };
    int64_t HW;
    sdpa_params p0, p;
    sdpa_plan_model def;
    float *f = NULL, *bw = NULL;
    uint16_t *h = NULL;
    size_t nin = (size_t)HP * L * D, nbig, nf, i;
    int W, path, di, pi, qi, ki, rc = SDPA_OK;
    double flops, base_rate = 0.0;
    uint32_t seed = 12345u;
    if (!m) return SDPA_ERR_NULL;
    if (max_threads < 0 || max_threads > SDPA_MAX_THREADS) return SDPA_ERR_PARAM;
    if (sdpa__plan_now() < 0.0) return SDPA_ERR_PARAM;
    W = max_threads ? max_threads : sdpa__default_threads();
    HW = SDPA__MAX(HP, (W + 1) / 2); /* heads of the W-thread run: 4W tasks of 64 rows */
    sdpa_plan_model_default(&def);
    memset(&p0, 0, sizeof p0);
    if (base) { p0.allocator = base->allocator; p0.parallel_for = base->parallel_for; p0.parallel_user = base->parallel_user; }
    /* q, k, v, out in F32 (4 x nin) and q, k, v in 16 bits (3 x nin); the
     * decode queries [1, 32, 1, D] and outputs, and a chunk of K/V rows */
    nbig = (size_t)HW * L * D; /* the W-thread run's q, k, v, out */
    /* f: those, then the decode queries and outputs and a chunk of K/V rows;
     * at least the small prefill runs' q, k, v, out (4 rows over 4096 keys) */
    nf = 4 * nbig + 4 * 32 * D + 2 * (size_t)KVH * 256 * D;
    if (nf < 8 * (size_t)HP * D + 2 * (size_t)HP * 4096 * D) nf = 8 * (size_t)HP * D + 2 * (size_t)HP * 4096 * D;
    f = (float *)sdpa__scratch_alloc(&p0, nf * sizeof(float));
    h = (uint16_t *)sdpa__scratch_alloc(&p0, 3 * nin * sizeof(uint16_t));
    bw = (float *)sdpa__scratch_alloc(&p0, (size_t)BWF * sizeof(float));
    if (!f || !h || !bw) { rc = SDPA_ERR_NOMEM; goto done; }
    sdpa__plan_fill(f, SDPA_F32, nf, &seed);
    for (i = 0; i < (size_t)BWF; i++) bw[i] = (float)(i & 255);
    *m = def;

    /* 1. prefill, one thread, every path x dtype x precision: HP heads, L x L
     * (t_big) and 4 query rows over KS keys (t_small), tile 64 x 64. Both
     * are a * GFLOP + key_s * key elements (+ the call): two equations give
     * the products' speed and the per-task key loading; int8's pre-pass is
     * what its small run costs beyond the float one. */
    {
        enum { KS = 4096 };
        double gb, kb, gs, k4; /* GFLOP and key elements the replay counts: L x L, and 4 x KS */
        sdpa__plan_units(HP, L, L, D, &gb, &kb);
        sdpa__plan_units(HP, 4, KS, D, &gs, &k4);
        flops = gb * 1e9;
        for (path = SDPA_PATH_SCALAR; path <= SDPA__PATH_LAST; path++) {
            double ts[2] = {-1.0, -1.0}, ks = 0.0, pre = 0.0;
            m->key_s[path] = m->i8_key_s[path] = 0.0;
            for (di = 0; di < 3; di++) for (pi = 0; pi < 2; pi++) m->gflops[path][di][pi] = 0.0;
            if (!sdpa_path_supported((sdpa_path)path)) continue;
            for (pi = 0; pi < 2; pi++) { /* the small runs, F32 */
                sdpa_tensor q = {0, SDPA_F32, {1, HP, 4, D}, {0}}, k, v, o;
                q.data = f; k = q; k.shape[2] = KS; k.data = f + 4 * HP * D; v = k; v.data = f + 4 * HP * D + (size_t)HP * KS * D;
                o = q; o.data = f + 4 * HP * D + 2 * (size_t)HP * KS * D;
                p = p0; p.path = (sdpa_path)path; p.precision = pi ? SDPA_PRECISION_INT8_QK : 0; p.num_threads = 1;
                p.parallel_for = NULL;
                ts[pi] = sdpa__probe_time(&q, &k, &v, &o, &p, 2);
            }
            for (di = 0; di < 3; di++)
                for (pi = 0; pi < 2; pi++) {
                    sdpa_tensor q = {0, SDPA_F32, {1, HP, L, D}, {0}}, k, v, o;
                    double t, x;
                    q.data = f; q.dtype = sdpa__plan_dt[di];
                    k = q; v = q; o = q;
                    k.data = f + nin; v.data = f + 2 * nin; o.data = f + 3 * nin; o.dtype = SDPA_F32;
                    if (di) {
                        for (i = 0; i < 3 * nin; i++) h[i] = di == 1 ? sdpa_f32_to_f16(f[i]) : sdpa_f32_to_bf16(f[i]);
                        q.data = h; k.data = h + nin; v.data = h + 2 * nin;
                    }
                    p = p0;
                    p.path = (sdpa_path)path; p.precision = pi ? SDPA_PRECISION_INT8_QK : 0; p.num_threads = 1;
                    p.parallel_for = NULL;
                    t = sdpa__probe_time(&q, &k, &v, &o, &p, 2);
                    if (t <= 0.0) continue;
                    if (di == 0 && pi == 0 && ts[0] > 0.0) { /* solve for 1/rate and key_s */
                        double det = gb * k4 - kb * gs, tb = t, tsm = ts[0];
                        x = det != 0.0 ? (tb * k4 - kb * tsm) / det : -1.0;
                        ks = det != 0.0 ? (gb * tsm - gs * tb) / det : -1.0;
                        if (!(x > 0.0) || !(ks >= 0.0)) { ks = 0.0; }
                        m->key_s[path] = ks;
                        if (ts[1] > ts[0]) pre = (ts[1] - ts[0]) / ((double)HP * KS * D);
                        m->i8_key_s[path] = pre;
                    }
                    t -= kb * ks + (pi ? (double)HP * L * D * pre : 0.0);
                    if (t <= 0.05 * (t + kb * ks)) t = 0.05 * (t + kb * ks); /* keep the rate finite */
                    m->gflops[path][di][pi] = gb / t;
                }
        }
    }

    /* 2. tiles and 3. threads on the auto path, F32 */
    {
        sdpa_tensor q = {0, SDPA_F32, {1, HP, L, D}, {0}}, k, v, o;
        int ap = sdpa_path_in_use(&p0);
        double t64;
        if (ap < 0) { rc = ap; goto done; }
        q.data = f; k = q; v = q; o = q;
        k.data = f + nin; v.data = f + 2 * nin; o.data = f + 3 * nin;
        p = p0; p.path = (sdpa_path)ap; p.num_threads = 1; p.parallel_for = NULL;
        { /* two rounds over the tiles, the best time of each: a noisy neighbour spoils one sample, rarely two */
            double tt[SDPA_PLAN_NTQ][SDPA_PLAN_NTK];
            int round;
            for (round = 0; round < 2; round++)
                for (qi = 0; qi < SDPA_PLAN_NTQ; qi++)
                    for (ki = 0; ki < SDPA_PLAN_NTK; ki++) {
                        double t;
                        p.tile_q = sdpa__plan_tq[qi]; p.tile_k = sdpa__plan_tk[ki];
                        t = sdpa__probe_time(&q, &k, &v, &o, &p, 1);
                        if (round == 0 || (t > 0.0 && (tt[qi][ki] <= 0.0 || t < tt[qi][ki]))) tt[qi][ki] = t;
                    }
            t64 = tt[1][1];
            for (qi = 0; qi < SDPA_PLAN_NTQ; qi++)
                for (ki = 0; ki < SDPA_PLAN_NTK; ki++)
                    m->tile_speed[qi][ki] = tt[qi][ki] > 0.0 && t64 > 0.0 ? t64 / tt[qi][ki] : 0.0;
        }
        base_rate = t64 > 0.0 ? flops / t64 : 0.0;
        /* call overhead: one query, one key, one thread; then W threads with W tasks */
        {
            sdpa_tensor q1 = q, k1, v1, o1;
            double t1 = 1e30, tw = 1e30;
            int r;
            q1.shape[1] = W; q1.shape[2] = 1;
            k1 = q1; v1 = q1; o1 = q1;
            k1.data = f + nbig; v1.data = f + 2 * nbig; o1.data = f + 3 * nbig;
            p = p0; p.path = (sdpa_path)ap; p.num_threads = 1; p.parallel_for = NULL;
            q1.shape[1] = k1.shape[1] = v1.shape[1] = o1.shape[1] = 1;
            for (r = 0; r < 20; r++) {
                double t = sdpa__probe_time(&q1, &k1, &v1, &o1, &p, 1);
                if (t > 0.0 && t < t1) t1 = t;
            }
            q1.shape[1] = k1.shape[1] = v1.shape[1] = o1.shape[1] = W;
            p = p0; p.path = (sdpa_path)ap; p.num_threads = W;
            for (r = 0; r < 20 && W > 1; r++) {
                double t = sdpa__probe_time(&q1, &k1, &v1, &o1, &p, 1);
                if (t > 0.0 && t < tw) tw = t;
            }
            if (t1 < 1e30) m->call_s = t1;
            if (W > 1 && tw < 1e30) m->worker_s = tw > t1 ? (tw - t1) / W : 0.0;
        }
        /* threads: HW heads on W workers against the one-thread rate */
        if (W > 1 && base_rate > 0.0) {
            sdpa_tensor qw = q, kw, vw, ow;
            double t;
            qw.shape[1] = HW; qw.data = f;
            kw = qw; vw = qw; ow = qw;
            kw.data = f + nbig; vw.data = f + 2 * nbig; ow.data = f + 3 * nbig;
            p = p0; p.path = (sdpa_path)ap; p.num_threads = W;
            t = sdpa__probe_time(&qw, &kw, &vw, &ow, &p, 2);
            t -= m->call_s + W * m->worker_s;
            if (t > 0.0) {
                double e = (flops * (double)HW / HP / t) / (base_rate * W);
                m->thread_eff = e > 1.0 ? 1.0 : (e < 0.05 ? 0.05 : e);
                m->eff_threads = W;
            }
        } else {
            m->thread_eff = 1.0; m->eff_threads = 1;
        }
    }

    /* 4. read bandwidth, W workers, over BWF floats in 64 KiB chunks */
    {
        sdpa__probe_bw B;
        double best = 0.0;
        int r;
        memset(&B, 0, sizeof B);
        B.buf = bw; B.chunk = 16384; B.n = BWF / 16384;
        p = p0; p.num_threads = W;
        for (r = 0; r < 4; r++) {
            double t0 = sdpa__plan_now(), t;
            if ((rc = sdpa__run_tasks(&p, sdpa__n_workers(&p, B.n), B.n, sdpa__probe_bw_task, &B)) != SDPA_OK) goto done;
            t = sdpa__plan_now() - t0;
            if (r > 0 && t > 0.0 && (double)BWF * 4.0 / t * 1e-9 > best) best = (double)BWF * 4.0 / t * 1e-9;
        }
        m->mem_gbps = best;
    }

    /* 5. decode, one thread: KVH kv heads x KVL tokens per storage; MHA (KVH
     * query heads) and GQA (4 KVH) separate the bytes from the products */
    for (di = 0; di < 4; di++) {
        sdpa_kv_cache_config cfg;
        sdpa_kv_cache *c = NULL;
        int64_t t0;
        memset(&cfg, 0, sizeof cfg);
        cfg.num_seqs = 1; cfg.kv_heads = KVH; cfg.head_dim = D; cfg.dtype = sdpa__plan_dt[di];
        cfg.allocator = p0.allocator;
        if ((rc = sdpa_kv_cache_create(&cfg, &c)) != SDPA_OK) goto done;
        for (t0 = 0; t0 < KVL && rc == SDPA_OK; t0 += 256) {
            float *kb = f + 4 * nbig + 4 * 32 * D;
            sdpa_tensor kt = {0, SDPA_F32, {1, KVH, 256, D}, {0}}, vt;
            kt.data = kb; vt = kt; vt.data = kb + (size_t)KVH * 256 * D;
            rc = sdpa_kv_cache_append(c, 0, &kt, &vt);
        }
        for (path = SDPA_PATH_SCALAR; path <= SDPA__PATH_LAST && rc == SDPA_OK; path++) {
            sdpa_tensor q = {0, SDPA_F32, {1, KVH, 1, D}, {0}}, o;
            double t1, t4, bytes = (double)KVL * KVH * (2.0 * D * (double)sdpa__esize(cfg.dtype) + (di == 3 ? 8.0 : 0.0));
            double fl = 2.0 * 2.0 * D * (double)KVL * KVH, gb, gf;
            m->kv_gbps[path][di] = m->kv_gflops[path][di] = 0.0;
            if (!sdpa_path_supported((sdpa_path)path)) continue;
            q.data = f + 4 * nbig; o = q; o.data = f + 4 * nbig + 32 * D;
            p = p0; p.path = (sdpa_path)path; p.num_threads = 1; p.parallel_for = NULL;
            p.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
            { /* MHA and GQA in turns, the best of 4 each */
                int r;
                t1 = t4 = 1e30;
                for (r = 0; r < 4; r++) {
                    double a, b;
                    q.shape[1] = o.shape[1] = KVH;
                    a = sdpa__probe_kv_time(c, &q, &o, &p, 1);
                    q.shape[1] = o.shape[1] = 4 * KVH;
                    b = sdpa__probe_kv_time(c, &q, &o, &p, 1);
                    if (a <= 0.0 || b <= 0.0) { t1 = -1.0; break; }
                    t1 = a < t1 ? a : t1;
                    t4 = b < t4 ? b : t4;
                }
            }
            if (t1 <= 0.0 || t4 <= 0.0) continue;
            t1 -= m->call_s; t4 -= m->call_s;
            gf = t4 > t1 ? 3.0 * fl / (t4 - t1) : 1e6;
            if (t1 - fl / gf <= 0.05 * t1) gf = fl / (0.95 * t1); /* at least 5% of the time to the bytes */
            gb = bytes / (t1 - fl / gf);
            if (gb > 1e11) gb = 1e11; /* ill-conditioned when the cache sits in a big L3: keep it plausible */
            m->kv_gbps[path][di] = gb * 1e-9;
            m->kv_gflops[path][di] = gf * 1e-9;
        }
        sdpa_kv_cache_destroy(c);
        if (rc != SDPA_OK) goto done;
    }

done:
    if (f) sdpa__scratch_free(&p0, f, nf * sizeof(float));
    if (h) sdpa__scratch_free(&p0, h, 3 * nin * sizeof(uint16_t));
    if (bw) sdpa__scratch_free(&p0, bw, (size_t)BWF * sizeof(float));
    if (rc != SDPA_OK) *m = def;
    return rc;
}

/* ---- tuning: the shortlist measured ---- */

#define SDPA__TUNE_MAX 64
#define SDPA__TUNE_CALLS 31       /* timed calls per candidate, at most */
#define SDPA__TUNE_SECONDS 0.03   /* at least 3 of them, and this long in all */

/* Same path, dtype, precision and thread count: one shortlist entry. */
static int sdpa__tune_same(const sdpa_plan_choice *a, const sdpa_plan_choice *b)
{
    return a->path == b->path && a->dtype == b->dtype && a->precision == b->precision && a->num_threads == b->num_threads;
}

/* The index in list[0..n) of the next shortlist entry, -1 if none: the best
 * predicted feasible candidate that pick[0..np) does not cover. Groups
 * (tiles = 0): one whose group no pick has. Tiles (tiles = 1): one of
 * pick[0]'s group whose tile shape no pick has. */
static int64_t sdpa__tune_next(const sdpa_plan_choice *list, int64_t n, const sdpa_plan_choice *pick, int np, int tiles)
{
    int64_t i, at = -1;
    int j, taken;
    for (i = 0; i < n; i++) {
        if (!list[i].feasible || (tiles && !sdpa__tune_same(&list[i], &pick[0]))) continue;
        for (j = 0, taken = 0; j < np && !taken; j++)
            taken = tiles ? list[i].tile_q == pick[j].tile_q && list[i].tile_k == pick[j].tile_k : sdpa__tune_same(&list[i], &pick[j]);
        if (!taken && (at < 0 || sdpa__plan_better(&list[i], &list[at]))) at = i;
    }
    return at;
}

/* Runs one candidate on the problem: after a warm-up call, at least 3
 * timed calls and at least SDPA__TUNE_SECONDS of them (at most
 * SDPA__TUNE_CALLS); their median into *secs, or the first failing call's
 * code. Its buffers are allocated here and freed before returning. */
static int sdpa__tune_run(const sdpa__pprob *r, const sdpa_params *p0, const sdpa_plan_choice *c, double *secs)
{
    sdpa_params p = *p0;
    int64_t nq = r->B * r->Hq * r->Lq * r->D, no = r->B * r->Hq * r->Lq * r->Dv;
    int64_t nk = r->B * r->Hkv * r->Lk * r->D, nv = r->B * r->Hkv * r->Lk * r->Dv;
    size_t es = r->decode ? 4u : (size_t)sdpa__esize(c->dtype), bytes[4];
    void *buf[4] = {NULL, NULL, NULL, NULL};
    sdpa_kv_cache *cache = NULL;
    uint32_t seed = 2463534242u;
    double ts[SDPA__TUNE_CALLS], total = 0.0;
    int rc = SDPA_OK, i, nt = 0, a, b;
    /* sdpa__plan_resolve bounded the element counts by INT64_MAX / 16; a
     * 32-bit size_t may still be too small for them */
    if ((uint64_t)SDPA__MAX(SDPA__MAX(nq, no), SDPA__MAX(nk, nv)) > (uint64_t)(SIZE_MAX / 16)) return SDPA_ERR_OVERFLOW;
    p.path = c->path;
    p.precision = c->precision;
    p.tile_q = c->tile_q;
    p.tile_k = c->tile_k;
    p.num_threads = c->num_threads;
    p.causal = r->causal ? SDPA_CAUSAL_BOTTOM_RIGHT : SDPA_CAUSAL_NONE;
    if (r->decode) { /* the cache, filled a chunk of up to 256 tokens at a time */
        sdpa_kv_cache_config cfg;
        int64_t chunk = SDPA__MIN(r->Lk, 256), t0;
        memset(&cfg, 0, sizeof cfg);
        cfg.num_seqs = r->B; cfg.kv_heads = r->Hkv; cfg.head_dim = r->D; cfg.head_dim_v = r->Dv; cfg.dtype = c->dtype;
        cfg.allocator = p0->allocator;
        bytes[2] = (size_t)(r->Hkv * SDPA__MAX(chunk, 1) * r->D) * 4u;
        bytes[3] = (size_t)(r->Hkv * SDPA__MAX(chunk, 1) * r->Dv) * 4u;
        if ((rc = sdpa_kv_cache_create(&cfg, &cache)) != SDPA_OK) return rc;
        if (!(buf[2] = sdpa__scratch_alloc(p0, bytes[2])) || !(buf[3] = sdpa__scratch_alloc(p0, bytes[3]))) {
            rc = SDPA_ERR_NOMEM;
            goto done;
        }
        sdpa__plan_fill(buf[2], SDPA_F32, bytes[2] / 4u, &seed);
        sdpa__plan_fill(buf[3], SDPA_F32, bytes[3] / 4u, &seed);
        for (i = 0; i < (int)r->B && rc == SDPA_OK; i++)
            for (t0 = 0; t0 < r->Lk && rc == SDPA_OK; t0 += chunk) {
                sdpa_tensor kt = {0, SDPA_F32, {1, 0, 0, 0}, {0}}, vt;
                kt.data = buf[2];
                kt.shape[1] = r->Hkv; kt.shape[2] = SDPA__MIN(chunk, r->Lk - t0); kt.shape[3] = r->D;
                vt = kt; vt.data = buf[3]; vt.shape[3] = r->Dv;
                rc = sdpa_kv_cache_append(cache, i, &kt, &vt);
            }
        if (rc != SDPA_OK) goto done;
        sdpa__scratch_free(p0, buf[2], bytes[2]);
        sdpa__scratch_free(p0, buf[3], bytes[3]);
        buf[2] = buf[3] = NULL;
    }
    bytes[0] = (size_t)nq * es;
    bytes[1] = (size_t)no * es;
    bytes[2] = r->decode ? 0u : (size_t)nk * es;
    bytes[3] = r->decode ? 0u : (size_t)nv * es;
    for (i = 0; i < 4; i++) {
        if (bytes[i] == 0) continue;
        if (!(buf[i] = sdpa__scratch_alloc(p0, bytes[i]))) { rc = SDPA_ERR_NOMEM; goto done; }
        if (i != 1) sdpa__plan_fill(buf[i], r->decode ? SDPA_F32 : c->dtype, bytes[i] / es, &seed);
    }
    {
        sdpa_dtype t = r->decode ? SDPA_F32 : c->dtype;
        sdpa_tensor q = {0, SDPA_F32, {0, 0, 0, 0}, {0}}, k, v, o;
        q.data = buf[0]; q.dtype = t;
        q.shape[0] = r->B; q.shape[1] = r->Hq; q.shape[2] = r->Lq; q.shape[3] = r->D;
        o = q; o.data = buf[1]; o.shape[3] = r->Dv;
        k = q; k.data = buf[2]; k.shape[1] = r->Hkv; k.shape[2] = r->Lk;
        v = k; v.data = buf[3]; v.shape[3] = r->Dv;
        for (i = 0; rc == SDPA_OK; i++) { /* a warm-up, then timed calls */
            double t0 = sdpa__plan_now(), t;
            rc = r->decode ? sdpa_kv_cache_attention(cache, NULL, &q, &o, &p) : sdpa_attention(&q, &k, &v, &o, &p);
            t = sdpa__plan_now() - t0;
            if (i == 0) continue;
            ts[nt++] = t;
            total += t;
            if (nt == SDPA__TUNE_CALLS || (nt >= 3 && total >= SDPA__TUNE_SECONDS)) break;
        }
        for (a = 1; a < nt; a++) /* the median (the lower one for an even count) */
            for (b = a; b > 0 && ts[b - 1] > ts[b]; b--) { double x = ts[b]; ts[b] = ts[b - 1]; ts[b - 1] = x; }
        if (rc == SDPA_OK) *secs = ts[(nt - 1) / 2];
    }
done:
    for (i = 0; i < 4; i++)
        if (buf[i]) sdpa__scratch_free(p0, buf[i], bytes[i]);
    sdpa_kv_cache_destroy(cache);
    return rc;
}

SDPA_API int sdpa_plan_tune(const sdpa_plan_problem *pb, const sdpa_plan_model *model, const sdpa_params *base, int k,
                            sdpa_plan_choice *best)
{
    sdpa_plan_model def;
    sdpa_params p0;
    sdpa__pprob r;
    sdpa_plan_choice *list = NULL, pick[SDPA__TUNE_MAX];
    int64_t n = 0, i;
    size_t lbytes = 0;
    int npick = 0, j, rc, have = 0, stage;
    double tbest = 0.0;
    if (!pb || !best) return SDPA_ERR_NULL;
    memset(best, 0, sizeof *best);
    if (k < 0 || k > SDPA__TUNE_MAX) return SDPA_ERR_PARAM;
    if (k == 0) k = 6;
    if (!model) { sdpa_plan_model_default(&def); model = &def; }
    if ((rc = sdpa_plan(pb, model, best)) != SDPA_OK) return rc; /* also checks every argument */
    memset(&p0, 0, sizeof p0);
    if (base) { p0.allocator = base->allocator; p0.parallel_for = base->parallel_for; p0.parallel_user = base->parallel_user; }
    if (sdpa__plan_now() < 0.0) rc = SDPA_ERR_PARAM;
    if (rc == SDPA_OK) rc = sdpa__plan_resolve(pb, model, &r);
    if (rc == SDPA_OK) rc = sdpa_plan_candidates(pb, model, NULL, 0, &n);
    lbytes = (size_t)n * sizeof *list;
    if (rc == SDPA_OK && !(list = (sdpa_plan_choice *)sdpa__scratch_alloc(&p0, lbytes))) rc = SDPA_ERR_NOMEM;
    if (rc == SDPA_OK) rc = sdpa_plan_candidates(pb, model, list, n, &n);
    if (rc != SDPA_OK) goto done;
    /* the shortlist: the best feasible candidate of a group not yet taken, k times */
    while (npick < k && (i = sdpa__tune_next(list, n, pick, npick, 0)) >= 0) pick[npick++] = list[i];
    /* stage 2: the winning group's next k - 1 tile shapes by predicted time */
    for (stage = 0; stage < 2; stage++) {
        for (j = stage ? 1 : 0; j < npick; j++) {
            double t = 0.0;
            if ((rc = sdpa__tune_run(&r, &p0, &pick[j], &t)) != SDPA_OK) goto done;
            if (!have || t < tbest) {
                *best = pick[j];
                best->seconds = t;
                tbest = t;
                have = 1;
            }
        }
        if (stage || r.decode) break;
        pick[0] = *best; /* measured already; then the group's other tiles, best predicted first */
        npick = 1;
        while (npick < k && (i = sdpa__tune_next(list, n, pick, npick, 1)) >= 0) pick[npick++] = list[i];
    }
done:
    if (list) sdpa__scratch_free(&p0, list, lbytes);
    if (rc != SDPA_OK) memset(best, 0, sizeof *best);
    return rc;
}

#ifdef __cplusplus
}
#endif
#if defined(__clang__)
#pragma STDC FP_CONTRACT DEFAULT
#endif
#endif /* SDPA_IMPLEMENTATION */

/*
 * MIT License
 *
 * Copyright (c) 2026 the sdpa.h authors
 *
 * Permission is hereby granted, free of charge, to any person obtaining a copy
 * of this software and associated documentation files (the "Software"), to deal
 * in the Software without restriction, including without limitation the rights
 * to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 * copies of the Software, and to permit persons to whom the Software is
 * furnished to do so, subject to the following conditions:
 *
 * The above copyright notice and this permission notice shall be included in
 * all copies or substantial portions of the Software.
 *
 * THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 * IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 * FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 * AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 * LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 * OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
 * SOFTWARE.
 */

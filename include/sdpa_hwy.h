/* sdpa_hwy.h - sdpa.h's attention with Google Highway kernels.       v0.1.0
 *
 * WHAT IT DOES
 *   sdpa_hwy_attention() is sdpa_attention() (sdpa.h: the same arguments, the
 *   same semantics, bounds and error codes) with its inner loops written once
 *   in Highway (https://github.com/google/highway) and compiled for every
 *   target Highway knows: SSSE3, SSE4, AVX2, AVX-512 on x86; NEON, SVE, SVE2
 *   (any vector length) on AArch64; and others (RISC-V V, POWER, WASM). One
 *   binary picks the best target its CPU runs, at run time, through
 *   HWY_DYNAMIC_DISPATCH. The hand-written sdpa.h paths (avx2, avx512, amx,
 *   neon) stay the first choice where they exist (README: "Highway
 *   backend"); this backend brings the CPUs they do not cover.
 *
 * HOW TO USE
 *   Optional, and C++17 on the inside: in exactly one C++ file,
 *       #define SDPA_HWY_IMPLEMENTATION
 *       #include "sdpa_hwy.h"
 *   compiled without -march flags (Highway adds each target's own), with the
 *   directory of sdpa_hwy.h on the include path (Highway re-includes the file
 *   by name, "sdpa_hwy.h", once per target), and link with -lhwy (Debian:
 *   libhwy-dev). C and C++ files just #include "sdpa_hwy.h": the declarations
 *   are plain C99. That file brings its own private copy of sdpa.h's
 *   implementation (SDPA_STATIC: nothing of it is exported), so the program
 *   may also have sdpa.h's implementation in a C file, as usual; its C++ file
 *   must not include sdpa.h before sdpa_hwy.h unless it defines
 *   SDPA_IMPLEMENTATION itself (then that copy is used).
 *       g++ -std=c++17 -O2 -Iinclude -c sdpa_hwy.cc
 *       gcc -std=c99 -O2 -Iinclude main.c sdpa_hwy.o -lhwy -lstdc++ -lm -pthread
 *
 * WHAT IS HIGHWAY AND WHAT IS SDPA.H
 *   Validation, the plan (tiles, tasks, scratch), threads, the online-softmax
 *   bookkeeping, the score options (softcap, ALiBi, masks, score_mod) and the
 *   final store are sdpa.h's own code, called from here. The loops that cost:
 *   the Q.K^T tile and P.V (one register-blocked micro-kernel: 4 rows x 2 or
 *   4 vectors), exp and the row maximum, widening F16/BF16 rows to float, and
 *   the transposed K tile (4 x 4 blocks in registers) are Highway code.
 *
 * SEMANTICS AND NUMERICS
 *   As sdpa.h's (its header comment): F32, F16, BF16 inputs and outputs;
 *   float32 products, running max and sum; exp is sdpa.h's polynomial (2 ulp,
 *   flushes below -87.33654 to 0, exp(-inf) = 0, NaN kept) in Highway ops;
 *   the same tested bounds against float64; results bitwise identical for
 *   any thread count. Across targets results differ in the last bits (FMA
 *   or not, lane count). Not supported: params->precision's int8 modes:
 *   SDPA_ERR_PARAM (SDPA_PRECISION_BF16_PV is accepted and changes nothing:
 *   the products are float32). params->path and $SDPA_PATH are ignored: the target is
 *   Highway's choice, or the one sdpa_hwy_force_target() set.
 *
 * TARGETS
 *   sdpa_hwy_targets() lists the targets compiled into this binary that this
 *   CPU runs, best first; sdpa_hwy_target_name() names one ("AVX2", "SVE2");
 *   sdpa_hwy_target() names the one the next call takes.
 *   sdpa_hwy_force_target() is for tests and benchmarks: it sets Highway's
 *   process-wide dispatch state (hwy::SetSupportedTargetsForTest), so it
 *   affects every HWY_DYNAMIC_DISPATCH in the process, and must not run
 *   while another thread is inside sdpa_hwy_attention.
 *
 * LICENCE: MIT, as sdpa.h.
 */
#ifndef SDPA_HWY_H
#define SDPA_HWY_H

#if defined(SDPA_HWY_IMPLEMENTATION) && !defined(SDPA_H)
/* the implementation file's private copy of the core */
#define SDPA_STATIC
#define SDPA_IMPLEMENTATION
#endif
#include "sdpa.h"
#if defined(SDPA_HWY_IMPLEMENTATION) && !defined(SDPA__IMPLEMENTATION_DONE)
#error "sdpa_hwy.h: include it before sdpa.h in the SDPA_HWY_IMPLEMENTATION file, or define SDPA_IMPLEMENTATION there"
#endif

#ifndef SDPA_HWY_API
#define SDPA_HWY_API extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* sdpa_attention's contract, computed with the Highway kernels (see above). */
SDPA_HWY_API int sdpa_hwy_attention(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v,
                                    const sdpa_tensor *out, const sdpa_params *params);

/* Bytes of scratch sdpa_hwy_attention would allocate, or a negative error. */
SDPA_HWY_API int64_t sdpa_hwy_workspace_size(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v,
                                             const sdpa_tensor *out, const sdpa_params *params);

/* Targets compiled here that this CPU runs (while one is forced: that one),
 * best first, as Highway's target bits: fills min(count, cap) entries of
 * targets (may be NULL when cap is 0) and returns the count. */
SDPA_HWY_API int sdpa_hwy_targets(int64_t *targets, int cap);

/* A target's name ("AVX2", "SVE2_128", "NEON", "SCALAR"), or NULL when the
 * value is not one Highway target bit. */
SDPA_HWY_API const char *sdpa_hwy_target_name(int64_t target);

/* The name of the target the next sdpa_hwy_attention call uses. */
SDPA_HWY_API const char *sdpa_hwy_target(void);

/* Makes every later call use `target` (one of sdpa_hwy_targets()); 0 goes
 * back to the best. SDPA_ERR_PATH when the target is not compiled here or
 * this CPU cannot run it. Process-wide: see TARGETS above. */
SDPA_HWY_API int sdpa_hwy_force_target(int64_t target);

/* For tests: the kernels of the target the next call uses. Shapes and
 * preconditions as the sdpa__plan members of the same names in sdpa.h
 * (gemm: M % 4 == 0, N % 16 == 0). */
typedef struct sdpa_hwy__kernels {
    const char *target;
    void (*gemm)(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                 float *C, int64_t ldc, int accumulate);
    float (*row_max)(const float *s, int64_t n);
    float (*exp_row)(float *s, int64_t n, float m);
    void (*load_row)(float *dst, const char *src, sdpa_dtype t, int64_t n, float mul);
    void (*load_kt)(float *Kt, int64_t ld, const char *kb, int64_t ks, sdpa_dtype t, int64_t nk, int64_t D);
} sdpa_hwy__kernels;
SDPA_HWY_API void sdpa_hwy__get_kernels(sdpa_hwy__kernels *ks);

#ifdef __cplusplus
}
#endif
#endif /* SDPA_HWY_H */

/* ======================================================================== */
/*                              IMPLEMENTATION                              */
/* ======================================================================== */
/* Outside the include guard: Highway's foreach_target.h includes this file
 * again once per target, with HWY_TARGET and HWY_NAMESPACE set to it; the
 * kernels below are compiled each time, the rest (HWY_ONCE) once. */
#if defined(SDPA_HWY_IMPLEMENTATION)
#ifndef __cplusplus
#error "sdpa_hwy.h: SDPA_HWY_IMPLEMENTATION needs a C++17 compiler (Highway is C++)"
#endif

#include <math.h>
#include <string.h>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "sdpa_hwy.h"
#include <hwy/foreach_target.h>
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace sdpa_hwy {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

/* Lanes of the widest vector of this target: the size of the tail buffers. */
#define SDPA_HWY__MAXF (HWY_MAX_BYTES / 4)

/* sdpa__expf (sdpa.h) on a vector, operation for operation: range reduction
 * x = n ln2 + r, a degree-7 polynomial, 2^n as two exponent factors. 2 ulp
 * on [-87.33, 88.72]; below: 0; above: inf; exp(-inf) = 0, NaN kept (quiet).
 * The range tests are integer compares on the bits. */
template <class D>
HWY_INLINE hn::Vec<D> Exp(D d, hn::Vec<D> x)
{
    const hn::RebindToSigned<D> di;
    const auto u = hn::BitCast(di, x);
    const auto a = hn::And(u, hn::Set(di, 0x7fffffff));
    const auto neg = hn::Lt(u, hn::Zero(di));
    const auto under = hn::And(neg, hn::Gt(a, hn::Set(di, 0x42aeac4f)));    /* x < -87.33654 */
    const auto over = hn::AndNot(neg, hn::Gt(a, hn::Set(di, 0x42b17217))); /* x > 88.72283 */
    const auto nan = hn::Gt(a, hn::Set(di, 0x7f800000));
    const auto special = hn::Or(hn::Or(under, over), nan);
    const auto xc = hn::IfThenZeroElse(hn::RebindMask(d, special), x);
    const auto shifter = hn::Set(d, 12582912.0f); /* 1.5 * 2^23 */
    const auto t = hn::MulAdd(xc, hn::Set(d, 1.44269504088896341f), shifter);
    const auto n = hn::Sub(t, shifter);
    /* t's mantissa holds 2^22 + n, n in [-126, 128]: m = n + 256 > 0 */
    const auto m = hn::Add(hn::Sub(hn::And(hn::BitCast(di, t), hn::Set(di, 0x7fffff)), hn::Set(di, 0x400000)),
                           hn::Set(di, 256));
    const auto h = hn::ShiftRight<1>(m);
    auto r = hn::NegMulAdd(n, hn::Set(d, 0.693145751953125f), xc); /* n * ln2_hi is exact */
    r = hn::NegMulAdd(n, hn::Set(d, 1.428606765330187045e-6f), r);
    auto p = hn::Set(d, 1.0f / 5040.0f);
    p = hn::MulAdd(p, r, hn::Set(d, 1.0f / 720.0f));
    p = hn::MulAdd(p, r, hn::Set(d, 1.0f / 120.0f));
    p = hn::MulAdd(p, r, hn::Set(d, 1.0f / 24.0f));
    p = hn::MulAdd(p, r, hn::Set(d, 1.0f / 6.0f));
    p = hn::MulAdd(p, r, hn::Set(d, 0.5f));
    p = hn::MulAdd(p, r, hn::Set(d, 1.0f));
    p = hn::MulAdd(p, r, hn::Set(d, 1.0f));
    /* 2^n = 2^n1 * 2^n2, biased exponents h - 1 and m - h - 1 */
    const auto one = hn::Set(di, 1);
    p = hn::Mul(p, hn::BitCast(d, hn::ShiftLeft<23>(hn::Sub(h, one))));
    p = hn::Mul(p, hn::BitCast(d, hn::ShiftLeft<23>(hn::Sub(hn::Sub(m, h), one))));
    p = hn::IfThenZeroElse(hn::RebindMask(d, under), p);
    p = hn::IfThenElse(hn::RebindMask(d, over), hn::Set(d, HUGE_VALF), p);
    return hn::IfThenElse(hn::RebindMask(d, nan), hn::BitCast(d, hn::Or(u, hn::Set(di, 0x400000))), p);
}

/* Maximum of s[0..n), n >= 1; NaN entries are skipped (as sdpa__row_max:
 * they poison the row later, through exp). The tail goes through a buffer
 * padded with -inf, so nothing past s[n-1] is read. */
static float RowMax(const float *HWY_RESTRICT s, int64_t n)
{
    const hn::ScalableTag<float> d;
    const int64_t L = (int64_t)hn::Lanes(d);
    HWY_ALIGN float buf[SDPA_HWY__MAXF];
    auto mx = hn::Set(d, -HUGE_VALF);
    float m = -HUGE_VALF;
    int64_t j = 0, c;
    for (; j + L <= n; j += L) {
        const auto x = hn::LoadU(d, s + j);
        mx = hn::IfThenElse(hn::Gt(x, mx), x, mx); /* not Max: its NaN result is target-defined */
    }
    if (j < n) {
        for (c = 0; c < L; c++) buf[c] = -HUGE_VALF;
        memcpy(buf, s + j, (size_t)(n - j) * sizeof(float));
        const auto x = hn::Load(d, buf);
        mx = hn::IfThenElse(hn::Gt(x, mx), x, mx);
    }
    hn::Store(mx, d, buf);
    for (c = 0; c < L; c++) m = buf[c] > m ? buf[c] : m;
    return m;
}

/* s[j] = exp(s[j] - m) for j < n; returns their sum: lane sums, added in
 * lane order at the end (fixed order: the same for any thread count). */
static float ExpRow(float *HWY_RESTRICT s, int64_t n, float m)
{
    const hn::ScalableTag<float> d;
    const int64_t L = (int64_t)hn::Lanes(d);
    HWY_ALIGN float buf[SDPA_HWY__MAXF];
    const auto vm = hn::Set(d, m);
    auto acc = hn::Zero(d);
    float sum = 0.0f;
    int64_t j = 0, c;
    for (; j + L <= n; j += L) {
        const auto e = Exp(d, hn::Sub(hn::LoadU(d, s + j), vm));
        hn::StoreU(e, d, s + j);
        acc = hn::Add(acc, e);
    }
    if (j < n) { /* padding lanes: -inf, whose exp is 0 */
        for (c = 0; c < L; c++) buf[c] = -HUGE_VALF;
        memcpy(buf, s + j, (size_t)(n - j) * sizeof(float));
        const auto e = Exp(d, hn::Sub(hn::Load(d, buf), vm));
        hn::Store(e, d, buf);
        memcpy(s + j, buf, (size_t)(n - j) * sizeof(float));
        acc = hn::Add(acc, e);
    }
    hn::Store(acc, d, buf);
    for (c = 0; c < L; c++) sum += buf[c];
    return sum;
}

/* Targets whose float16 PromoteTo is an instruction (F16C, fcvtl, SVE fcvt).
 * Highway 1.0.3's emulation on the others (SSSE3, SSE4, SCALAR) turns
 * infinities and NaNs into finite numbers (0x7c00 -> 65536; the tests
 * check all 65536 values), so F16 is widened by F16ToF32 there. */
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL || HWY_ARCH_ARM_A64
#define SDPA_HWY__NATIVE_F16 1
#else
#define SDPA_HWY__NATIVE_F16 0
#endif

#if !SDPA_HWY__NATIVE_F16
/* sdpa_f16_to_f32 on a vector, in integer ops: exponent rebiased for
 * normals, kept all ones for inf and NaN (payload kept), em * 2^-24 (exact)
 * for zeros and subnormals; the sign put back. */
template <class D>
HWY_INLINE hn::Vec<D> F16ToF32(D d, const uint16_t *p)
{
    const hn::RebindToSigned<D> di;
    const hn::Rebind<uint16_t, D> d16;
    const hn::Rebind<int32_t, D> di32;
    const auto h = hn::BitCast(di, hn::PromoteTo(hn::RebindToUnsigned<D>(), hn::LoadU(d16, p)));
    const auto em = hn::And(h, hn::Set(di, 0x7fff));
    const auto sh = hn::ShiftLeft<13>(em);
    const auto sub = hn::BitCast(di, hn::Mul(hn::ConvertTo(d, hn::BitCast(di32, em)), hn::Set(d, 5.9604644775390625e-8f)));
    auto r = hn::IfThenElse(hn::Lt(em, hn::Set(di, 0x400)), sub, hn::Add(sh, hn::Set(di, 0x38000000)));
    r = hn::IfThenElse(hn::Gt(em, hn::Set(di, 0x7bff)), hn::Or(sh, hn::Set(di, 0x7f800000)), r);
    return hn::BitCast(d, hn::Or(r, hn::ShiftLeft<16>(hn::And(h, hn::Set(di, 0x8000)))));
}
#endif

/* Lanes(d) elements of a row of dtype t from element i on, widened to float
 * (exactly: F16 and BF16 are subsets of float). */
template <class D>
HWY_INLINE hn::Vec<D> Widen(D d, const char *row, sdpa_dtype t, int64_t i)
{
    if (t == SDPA_F32) return hn::LoadU(d, (const float *)(const void *)row + i);
    if (t == SDPA_F16) {
#if SDPA_HWY__NATIVE_F16
        const hn::Rebind<hwy::float16_t, D> dh;
        return hn::PromoteTo(d, hn::LoadU(dh, (const hwy::float16_t *)(const void *)row + i));
#else
        return F16ToF32(d, (const uint16_t *)(const void *)row + i);
#endif
    }
    const hn::Rebind<hwy::bfloat16_t, D> db;
    return hn::PromoteTo(d, hn::LoadU(db, (const hwy::bfloat16_t *)(const void *)row + i));
}

/* dst[0..n) = mul * src[0..n) widened from dtype t; whole vectors, then the
 * tail one element at a time (nothing past src[n-1] is read). */
static void LoadRow(float *HWY_RESTRICT dst, const char *src, sdpa_dtype t, int64_t n, float mul)
{
    const hn::ScalableTag<float> d;
    const int64_t L = (int64_t)hn::Lanes(d);
    const auto vm = hn::Set(d, mul);
    int64_t i = 0;
    for (; i + L <= n; i += L) hn::StoreU(hn::Mul(Widen(d, src, t, i), vm), d, dst + i);
    if (t == SDPA_F32)
        for (; i < n; i++) dst[i] = ((const float *)(const void *)src)[i] * mul;
    else if (t == SDPA_F16)
        for (; i < n; i++) dst[i] = sdpa_f16_to_f32(((const uint16_t *)(const void *)src)[i]) * mul;
    else
        for (; i < n; i++) dst[i] = sdpa_bf16_to_f32(((const uint16_t *)(const void *)src)[i]) * mul;
}

static HWY_INLINE float Widen1(const char *p, sdpa_dtype t)
{
    uint16_t h;
    float f;
    if (t == SDPA_F32) { memcpy(&f, p, 4); return f; }
    memcpy(&h, p, 2);
    return t == SDPA_F16 ? sdpa_f16_to_f32(h) : sdpa_bf16_to_f32(h);
}


/* The K block transposed: Kt[d * ld + j] = key j's element d, j < nk, d < D;
 * key j starts at kb + j * ks bytes. 4 keys x 4 elements at a time, turned
 * in 128-bit registers by two rounds of interleaves (every target but
 * SCALAR has 128-bit vectors); the edges one element at a time. */
static void LoadKt(float *HWY_RESTRICT Kt, int64_t ld, const char *kb, int64_t ks, sdpa_dtype t, int64_t nk, int64_t D)
{
    const int64_t es = t == SDPA_F32 ? 4 : 2;
    int64_t j = 0, e;
#if HWY_TARGET != HWY_SCALAR
    const hn::FixedTag<float, 4> d4;
    const hn::Repartition<uint64_t, decltype(d4)> d64;
    for (; j + 4 <= nk; j += 4) {
        const char *k0 = kb + j * ks, *k1 = k0 + ks, *k2 = k1 + ks, *k3 = k2 + ks;
        for (e = 0; e + 4 <= D; e += 4) {
            const auto r0 = Widen(d4, k0, t, e), r1 = Widen(d4, k1, t, e);
            const auto r2 = Widen(d4, k2, t, e), r3 = Widen(d4, k3, t, e);
            const auto t0 = hn::BitCast(d64, hn::InterleaveLower(d4, r0, r1)); /* a0 b0 a1 b1 */
            const auto t1 = hn::BitCast(d64, hn::InterleaveLower(d4, r2, r3)); /* c0 d0 c1 d1 */
            const auto t2 = hn::BitCast(d64, hn::InterleaveUpper(d4, r0, r1)); /* a2 b2 a3 b3 */
            const auto t3 = hn::BitCast(d64, hn::InterleaveUpper(d4, r2, r3)); /* c2 d2 c3 d3 */
            float *o = Kt + e * ld + j;
            hn::StoreU(hn::BitCast(d4, hn::InterleaveLower(d64, t0, t1)), d4, o);
            hn::StoreU(hn::BitCast(d4, hn::InterleaveUpper(d64, t0, t1)), d4, o + ld);
            hn::StoreU(hn::BitCast(d4, hn::InterleaveLower(d64, t2, t3)), d4, o + 2 * ld);
            hn::StoreU(hn::BitCast(d4, hn::InterleaveUpper(d64, t2, t3)), d4, o + 3 * ld);
        }
        for (; e < D; e++) {
            Kt[e * ld + j] = Widen1(k0 + e * es, t);
            Kt[e * ld + j + 1] = Widen1(k1 + e * es, t);
            Kt[e * ld + j + 2] = Widen1(k2 + e * es, t);
            Kt[e * ld + j + 3] = Widen1(k3 + e * es, t);
        }
    }
#endif
    for (; j < nk; j++)
        for (e = 0; e < D; e++) Kt[e * ld + j] = Widen1(kb + j * ks + e * es, t);
}

/* Vector registers per row of the micro-kernel's C block: 4 where the ISA
 * has 32 registers (4 x 4 accumulators, 4 B loads, 1 broadcast), else 2. */
#if HWY_ARCH_ARM || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL || HWY_TARGET == HWY_SCALAR
#define SDPA_HWY__NV 4
#else
#define SDPA_HWY__NV 2
#endif

/* C[4 x NV*L] (+)= A[4 x K] B[K x NV*L]: the block in 4*NV accumulators;
 * per k, NV loads of B, four broadcasts of A, 4*NV FMAs. (Scalable vectors
 * cannot live in arrays, hence the names.) */
template <int NV, class D>
HWY_INLINE void Block4(D d, int64_t K, const float *HWY_RESTRICT A, int64_t lda, const float *HWY_RESTRICT B,
                       int64_t ldb, float *HWY_RESTRICT C, int64_t ldc, int accumulate)
{
    const size_t L = hn::Lanes(d);
    const float *a0 = A, *a1 = A + lda, *a2 = A + 2 * lda, *a3 = A + 3 * lda;
    float *c0 = C, *c1 = C + ldc, *c2 = C + 2 * ldc, *c3 = C + 3 * ldc;
    auto x00 = hn::Zero(d), x01 = x00, x02 = x00, x03 = x00;
    auto x10 = x00, x11 = x00, x12 = x00, x13 = x00;
    auto x20 = x00, x21 = x00, x22 = x00, x23 = x00;
    auto x30 = x00, x31 = x00, x32 = x00, x33 = x00;
    int64_t kk;
    if (accumulate) {
        x00 = hn::LoadU(d, c0); x10 = hn::LoadU(d, c1); x20 = hn::LoadU(d, c2); x30 = hn::LoadU(d, c3);
        if (NV >= 2) {
            x01 = hn::LoadU(d, c0 + L); x11 = hn::LoadU(d, c1 + L);
            x21 = hn::LoadU(d, c2 + L); x31 = hn::LoadU(d, c3 + L);
        }
        if (NV >= 4) {
            x02 = hn::LoadU(d, c0 + 2 * L); x12 = hn::LoadU(d, c1 + 2 * L);
            x22 = hn::LoadU(d, c2 + 2 * L); x32 = hn::LoadU(d, c3 + 2 * L);
            x03 = hn::LoadU(d, c0 + 3 * L); x13 = hn::LoadU(d, c1 + 3 * L);
            x23 = hn::LoadU(d, c2 + 3 * L); x33 = hn::LoadU(d, c3 + 3 * L);
        }
    }
    for (kk = 0; kk < K; kk++) {
        const float *b = B + kk * ldb;
        const auto b0 = hn::LoadU(d, b);
        const auto b1 = NV >= 2 ? hn::LoadU(d, b + L) : b0;
        const auto b2 = NV >= 4 ? hn::LoadU(d, b + 2 * L) : b0;
        const auto b3 = NV >= 4 ? hn::LoadU(d, b + 3 * L) : b0;
        auto a = hn::Set(d, a0[kk]);
        x00 = hn::MulAdd(a, b0, x00);
        if (NV >= 2) x01 = hn::MulAdd(a, b1, x01);
        if (NV >= 4) { x02 = hn::MulAdd(a, b2, x02); x03 = hn::MulAdd(a, b3, x03); }
        a = hn::Set(d, a1[kk]);
        x10 = hn::MulAdd(a, b0, x10);
        if (NV >= 2) x11 = hn::MulAdd(a, b1, x11);
        if (NV >= 4) { x12 = hn::MulAdd(a, b2, x12); x13 = hn::MulAdd(a, b3, x13); }
        a = hn::Set(d, a2[kk]);
        x20 = hn::MulAdd(a, b0, x20);
        if (NV >= 2) x21 = hn::MulAdd(a, b1, x21);
        if (NV >= 4) { x22 = hn::MulAdd(a, b2, x22); x23 = hn::MulAdd(a, b3, x23); }
        a = hn::Set(d, a3[kk]);
        x30 = hn::MulAdd(a, b0, x30);
        if (NV >= 2) x31 = hn::MulAdd(a, b1, x31);
        if (NV >= 4) { x32 = hn::MulAdd(a, b2, x32); x33 = hn::MulAdd(a, b3, x33); }
    }
    hn::StoreU(x00, d, c0); hn::StoreU(x10, d, c1); hn::StoreU(x20, d, c2); hn::StoreU(x30, d, c3);
    if (NV >= 2) {
        hn::StoreU(x01, d, c0 + L); hn::StoreU(x11, d, c1 + L);
        hn::StoreU(x21, d, c2 + L); hn::StoreU(x31, d, c3 + L);
    }
    if (NV >= 4) {
        hn::StoreU(x02, d, c0 + 2 * L); hn::StoreU(x12, d, c1 + 2 * L);
        hn::StoreU(x22, d, c2 + 2 * L); hn::StoreU(x32, d, c3 + 2 * L);
        hn::StoreU(x03, d, c0 + 3 * L); hn::StoreU(x13, d, c1 + 3 * L);
        hn::StoreU(x23, d, c2 + 3 * L); hn::StoreU(x33, d, c3 + 3 * L);
    }
}

/* C[M x N] = (accumulate ? C : 0) + A[M x K] B[K x N], M % 4 == 0,
 * N % 16 == 0: sdpa.h's one micro-kernel for S = Q K^T (K^T from LoadKt)
 * and O += P V. Vectors are capped at 16 floats, so that L divides 16 and
 * every column is covered by whole vectors (SVE up to 2048 bits
 * included). Cost: M N K FMAs, B streamed from L1 once per 4 rows. */
static void Gemm(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb, float *C,
                 int64_t ldc, int accumulate)
{
    const hn::CappedTag<float, 16> d;
    const int64_t L = (int64_t)hn::Lanes(d), W = SDPA_HWY__NV * L;
    int64_t i, j;
    for (i = 0; i < M; i += 4) {
        for (j = 0; j + W <= N; j += W)
            Block4<SDPA_HWY__NV>(d, K, A + i * lda, lda, B + j, ldb, C + i * ldc + j, ldc, accumulate);
        for (; j + L <= N; j += L) Block4<1>(d, K, A + i * lda, lda, B + j, ldb, C + i * ldc + j, ldc, accumulate);
    }
}

static void GetKernels(sdpa_hwy__kernels *ks)
{
    ks->target = hwy::TargetName(HWY_TARGET);
    ks->gemm = Gemm;
    ks->row_max = RowMax;
    ks->exp_row = ExpRow;
    ks->load_row = LoadRow;
    ks->load_kt = LoadKt;
}

#undef SDPA_HWY__NV
#undef SDPA_HWY__NATIVE_F16
#undef SDPA_HWY__MAXF
} /* namespace HWY_NAMESPACE */
} /* namespace sdpa_hwy */
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace sdpa_hwy {
HWY_EXPORT(GetKernels);
} /* namespace sdpa_hwy */

/* The plan as sdpa_attention makes it, on the scalar path (so that no
 * packed bf16 mode is planned), then the Highway kernels put in. */
static int sdpa_hwy__plan(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v, const sdpa_tensor *out,
                          const sdpa_params *params, sdpa_params *pp, sdpa__plan *P)
{
    sdpa_hwy__kernels ks;
    int rc;
    if (params) *pp = *params;
    else memset(pp, 0, sizeof *pp);
    if (pp->precision != SDPA_PRECISION_DEFAULT && pp->precision != SDPA_PRECISION_BF16_PV)
        return sdpa__fail(pp, SDPA_ERR_PARAM, "sdpa_hwy: precision = %d: the Highway backend has no int8 mode",
                          pp->precision);
    pp->path = SDPA_PATH_SCALAR;
    rc = sdpa__plan_make(q, k, v, out, pp, P);
    if (rc != SDPA_OK) return rc;
    HWY_DYNAMIC_DISPATCH(sdpa_hwy::GetKernels)(&ks);
    P->gemm = ks.gemm;
    P->row_max = ks.row_max;
    P->exp_row = ks.exp_row;
    P->load_row = ks.load_row;
    P->load_kt = ks.load_kt;
    return SDPA_OK;
}

extern "C" {

SDPA_HWY_API int sdpa_hwy_attention(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v,
                                    const sdpa_tensor *out, const sdpa_params *params)
{
    sdpa__plan P;
    sdpa_params pp;
    size_t bytes;
    void *raw;
    int rc = sdpa_hwy__plan(q, k, v, out, params, &pp, &P);
    if (rc != SDPA_OK) return rc;
    if (P.n_tasks == 0) return SDPA_OK;

    raw = sdpa__plan_scratch(&P, &pp, &bytes); /* as sdpa_attention's */
    if (!raw) return sdpa__fail(&pp, SDPA_ERR_NOMEM, "sdpa_hwy: could not allocate %llu bytes of scratch",
                                (unsigned long long)bytes);
    rc = sdpa__run_tasks(&pp, P.n_workers, P.n_tasks, sdpa__task, &P);
    sdpa__scratch_free(&pp, raw, bytes);
    return rc;
}

SDPA_HWY_API int64_t sdpa_hwy_workspace_size(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v,
                                             const sdpa_tensor *out, const sdpa_params *params)
{
    sdpa__plan P;
    sdpa_params pp;
    int rc = sdpa_hwy__plan(q, k, v, out, params, &pp, &P);
    if (rc != SDPA_OK) return rc;
    return (int64_t)sdpa__ws_bytes(&P);
}

SDPA_HWY_API int sdpa_hwy_targets(int64_t *targets, int cap)
{
    int64_t bits = hwy::SupportedTargets() & HWY_TARGETS;
    int n = 0;
    for (; bits != 0; bits &= bits - 1) { /* lower bits are better targets */
        if (targets && n < cap) targets[n] = bits & -bits;
        n++;
    }
    return n;
}

SDPA_HWY_API const char *sdpa_hwy_target_name(int64_t target)
{
    const char *name;
    if (target <= 0 || (target & (target - 1)) != 0) return NULL;
    name = hwy::TargetName(target);
    return name && strcmp(name, "Unknown") != 0 ? name : NULL;
}

SDPA_HWY_API const char *sdpa_hwy_target(void)
{
    sdpa_hwy__kernels ks;
    HWY_DYNAMIC_DISPATCH(sdpa_hwy::GetKernels)(&ks);
    return ks.target;
}

SDPA_HWY_API int sdpa_hwy_force_target(int64_t target)
{
    if (target != 0) {
        int64_t bits;
        hwy::SetSupportedTargetsForTest(0); /* the real set, not a previous mock's */
        bits = hwy::SupportedTargets() & HWY_TARGETS;
        if (target < 0 || (target & (target - 1)) != 0 || (bits & target) == 0) return SDPA_ERR_PATH;
    }
    hwy::SetSupportedTargetsForTest(target);
    return SDPA_OK;
}

SDPA_HWY_API void sdpa_hwy__get_kernels(sdpa_hwy__kernels *ks) { HWY_DYNAMIC_DISPATCH(sdpa_hwy::GetKernels)(ks); }

} /* extern "C" */
#endif /* HWY_ONCE */
#endif /* SDPA_HWY_IMPLEMENTATION */

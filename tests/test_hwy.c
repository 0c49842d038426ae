/* Tests of the Highway backend (include/sdpa_hwy.h), in C99, linked with
 * tests/hwy_impl.cc and libhwy.
 *
 * For every Highway target compiled in and runnable here (or those named in
 * $SDPA_HWY_TARGETS, e.g. "SVE2 SVE_256"), forced in turn:
 *   - its kernels against sdpa.h's scalar ones and float64: exp on a dense
 *     sweep (2 ulp) and its special values, the row max (NaN skipped), the
 *     exp row, every F16 and BF16 value widened, the transposed K tile and
 *     the micro-kernel, over sizes that hit every tail; each source buffer
 *     ends at a PROT_NONE page, so a read past it crashes the test;
 *   - sdpa_hwy_attention through tests/test_sdpa.c's groups (this file
 *     includes it, with sdpa_attention and sdpa_workspace_size pointed at the
 *     Highway entry points): float64 reference, documented bounds, poisoned
 *     outputs, every option, layouts, dtypes, thread counts, hooks, errors.
 * --quick (or SDPA_TEST_QUICK=1) runs fewer random cases (for qemu).
 * Arguments other than --quick select groups by substring, as test_sdpa's. */
#define SDPA_IMPLEMENTATION
#include "sdpa.h"
#include "sdpa_hwy.h"

#include <sys/mman.h>
#include <unistd.h>

static int hwy_attention_under_test(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v,
                                    const sdpa_tensor *out, const sdpa_params *params)
{
    return sdpa_hwy_attention(q, k, v, out, params);
}
static int64_t hwy_workspace_under_test(const sdpa_tensor *q, const sdpa_tensor *k, const sdpa_tensor *v,
                                        const sdpa_tensor *out, const sdpa_params *params)
{
    return sdpa_hwy_workspace_size(q, k, v, out, params);
}

/* test_sdpa.c's harness, reference and groups, calling the Highway backend */
#define sdpa_attention hwy_attention_under_test
#define sdpa_workspace_size hwy_workspace_under_test
#define main test_sdpa_main
#include "test_sdpa.c"
#undef main
#undef sdpa_workspace_size
#undef sdpa_attention

/* ------------------------------------------------------------------------ */
/* Memory that ends where a PROT_NONE page begins.                           */

typedef struct hfence {
    char *raw, *end;
    size_t pg;
} hfence;

static void *hfence_alloc(hfence *f, size_t bytes)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), body = (bytes + pg - 1) / pg * pg;
    char *base;
    f->pg = pg;
    f->raw = (char *)xcalloc(body + 2 * pg, 1);
    base = f->raw + (pg - (size_t)((uintptr_t)f->raw % pg)) % pg;
    f->end = base + body;
    if (mprotect(f->end, pg, PROT_NONE) != 0) f->end = NULL; /* no fence: the checks still run */
    return base + body - bytes;
}

static void hfence_free(hfence *f)
{
    if (f->end) mprotect(f->end, f->pg, PROT_READ | PROT_WRITE);
    free(f->raw);
}

static int64_t hwy_ulp(float got, float want)
{
    int64_t a = f32_ord(got), b = f32_ord(want);
    return a > b ? a - b : b - a;
}

static int same_bits_or_nan(float a, float b) { return f32_bits(a) == f32_bits(b) || (a != a && b != b); }

/* ------------------------------------------------------------------------ */
/* The kernels of the target in use.                                         */

static void test_hwy_exp(const sdpa_hwy__kernels *ks)
{
    /* through exp_row with m = 0: every element is one exp */
    enum { N = 4099 };
    hfence f;
    float *s = (float *)hfence_alloc(&f, N * sizeof(float)), *x = (float *)xcalloc(N, sizeof(float));
    int64_t worst = 0, i, n;
    int bad = 0;
    case_begin("exp: within 2 ulp of float64 exp on a sweep of [-87.3, 88.7], 0 below, inf above");
    for (n = 0; n < 2000000 / (g_quick ? 8 : 1); n += N) {
        for (i = 0; i < N; i++) {
            double t = (double)(n + i) / (2000000.0 / (g_quick ? 8 : 1));
            x[i] = (float)(-87.3 + t * (88.7 + 87.3));
            if (i % 7 == 3) x[i] = (float)rnd_range(-90, 90);
            s[i] = x[i];
        }
        ks->exp_row(s, N, 0.0f);
        for (i = 0; i < N; i++) {
            double want = exp((double)x[i]);
            float w = (float)want;
            int64_t u = hwy_ulp(s[i], w);
            if (x[i] < -87.33654f) {
                if (s[i] != 0.0f && bad++ < 3) case_fail("exp(%.9g) = %.9g, want 0 (flushed)", x[i], s[i]);
            } else if (x[i] > 88.72283f) {
                if (s[i] != HUGE_VALF && bad++ < 3) case_fail("exp(%.9g) = %.9g, want inf", x[i], s[i]);
            } else {
                if (u > worst) worst = u;
                if (!(u <= 2) && bad++ < 3) case_fail("exp(%.9g) = %.9g, float64 %.9g: %lld ulp", x[i], s[i], want, LL(u));
            }
        }
    }
    case_end();

    case_begin("exp: special values (-inf, +-0, NaN, +inf, edges of the range)");
    {
        static const float xs[] = {-HUGE_VALF, -0.0f, 0.0f, HUGE_VALF, -87.33654f, -87.3366f, 88.72283f, 88.7229f,
                                   -1000.0f, 1000.0f, 1e-30f, -1e-30f};
        /* -1: a tiny normal (about FLT_MIN); -2: a huge finite value (about FLT_MAX) */
        static const float want[] = {0.0f, 1.0f, 1.0f, HUGE_VALF, -1.0f, 0.0f, -2.0f, HUGE_VALF, 0.0f, HUGE_VALF,
                                     1.0f, 1.0f};
        int k;
        for (k = 0; k < (int)(sizeof xs / sizeof xs[0]); k++) {
            float e;
            s[N - 1] = xs[k];
            ks->exp_row(s + N - 1, 1, 0.0f);
            e = s[N - 1];
            if (want[k] >= 0.0f)
                CHECK(e == want[k], "exp(%.9g) = %.9g, want %.9g", xs[k], e, want[k]);
            else if (want[k] == -1.0f)
                CHECK(e >= 1.1e-38f && e < 1.2e-38f, "exp(%.9g) = %.9g, want about FLT_MIN", xs[k], e);
            else
                CHECK(e > 3.4e38f && e < HUGE_VALF, "exp(%.9g) = %.9g, want about FLT_MAX", xs[k], e);
        }
        s[N - 1] = NAN;
        ks->exp_row(s + N - 1, 1, 0.0f);
        CHECK(s[N - 1] != s[N - 1], "exp(NaN) = %.9g, want NaN", s[N - 1]);
        s[N - 1] = 1.0f;
        ks->exp_row(s + N - 1, 1, NAN);
        CHECK(s[N - 1] != s[N - 1], "exp(1 - NaN) = %.9g, want NaN", s[N - 1]);
    }
    case_end();
    printf("       exp on %s: largest error %lld ulp\n", ks->target, LL(worst));
    free(x);
    hfence_free(&f);
}

static void test_hwy_rows(const sdpa_hwy__kernels *ks)
{
    static const int64_t ns[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 129, 1000};
    int a, rep;
    for (a = 0; a < (int)(sizeof ns / sizeof ns[0]); a++)
        for (rep = 0; rep < 3; rep++) {
            int64_t n = ns[a], i;
            hfence f;
            float *s = (float *)hfence_alloc(&f, (size_t)n * sizeof(float));
            float *x = (float *)xcalloc((size_t)n, sizeof(float));
            float got, want, m, sum;
            double dsum = 0;
            case_begin("row_max and exp_row, n=%lld rep %d", LL(n), rep);
            for (i = 0; i < n; i++) x[i] = (float)rnd_range(-30, 30);
            /* rep 1: a -inf first, a NaN last (the max stays finite: run_tile
             * never calls exp_row with m = -inf); rep 2: the max in the tail */
            if (rep == 1 && n > 1) x[0] = -HUGE_VALF;
            if (rep == 1 && n > 2) x[n - 1] = NAN;
            if (rep == 2) x[n - 1] = 40.0f;
            memcpy(s, x, (size_t)n * sizeof(float));
            got = ks->row_max(s, n);
            want = sdpa__row_max(x, n);
            CHECK(same_bits_or_nan(got, want), "row_max = %.9g, scalar %.9g", got, want);
            CHECK(got == got, "row_max = NaN: NaN entries must be skipped");
            m = want;
            sum = ks->exp_row(s, n, m);
            for (i = 0; i < n; i++) {
                double e = exp((double)(float)(x[i] - m)); /* the kernel's argument: the float difference */
                if (x[i] != x[i]) {
                    CHECK(s[i] != s[i], "exp_row[%lld] = %.9g for a NaN entry", LL(i), s[i]);
                    continue;
                }
                dsum += e;
                CHECK(fabs(s[i] - e) <= 3e-7 * e, "exp_row[%lld] = %.9g, float64 %.9g", LL(i), s[i], e);
            }
            if (rep == 1 && n > 2) CHECK(sum != sum, "exp_row sum %.9g with a NaN entry, want NaN", sum);
            else CHECK(fabs(sum - dsum) <= 1e-6 * dsum * (double)n, "exp_row sum %.9g, float64 %.9g", sum, dsum);
            case_end();
            free(x);
            hfence_free(&f);
        }
}

/* Every F16 and BF16 bit pattern, through load_row, against sdpa.h's exact
 * scalar conversions; and F32 rows scaled. Sources end at a fence. */
static void test_hwy_load_row(const sdpa_hwy__kernels *ks)
{
    int dt;
    for (dt = 0; dt < 2; dt++) {
        hfence f;
        uint16_t *src = (uint16_t *)hfence_alloc(&f, 65536 * 2);
        float *dst = (float *)xcalloc(65536 + 16, sizeof(float));
        int64_t i;
        int bad = 0, k;
        case_begin("load_row widens all 65536 %s values exactly (mul 1 and 0.37), no write past n",
                   dt ? "BF16" : "F16");
        for (i = 0; i < 65536; i++) src[i] = (uint16_t)i;
        for (k = 0; k < 2; k++) {
            float mul = k ? 0.37f : 1.0f;
            for (i = 0; i < 65536 + 16; i++) dst[i] = 12345.0f;
            ks->load_row(dst, (const char *)src, dt ? SDPA_BF16 : SDPA_F16, 65536, mul);
            for (i = 0; i < 65536; i++) {
                float w = (dt ? sdpa_bf16_to_f32((uint16_t)i) : sdpa_f16_to_f32((uint16_t)i)) * mul;
                if (!same_bits_or_nan(dst[i], w) && bad++ < 3)
                    case_fail("0x%04x -> %.9g (0x%08x), want %.9g (0x%08x)", (unsigned)i, dst[i], f32_bits(dst[i]), w,
                              f32_bits(w));
            }
            for (i = 65536; i < 65536 + 16; i++) CHECK(dst[i] == 12345.0f, "dst[%lld] written past n", LL(i));
        }
        /* tails: rows of every short length ending at the fence */
        for (i = 1; i <= 67; i++) {
            const uint16_t *s = src + 65536 - i;
            int64_t e;
            for (e = 0; e < i + 1; e++) dst[e] = 12345.0f;
            ks->load_row(dst, (const char *)s, dt ? SDPA_BF16 : SDPA_F16, i, 1.0f);
            for (e = 0; e < i; e++) {
                float w = dt ? sdpa_bf16_to_f32(s[e]) : sdpa_f16_to_f32(s[e]);
                if (!same_bits_or_nan(dst[e], w) && bad++ < 3) case_fail("n=%lld: dst[%lld] = %.9g, want %.9g", LL(i), LL(e), dst[e], w);
            }
            CHECK(dst[i] == 12345.0f, "n=%lld: dst[n] written", LL(i));
        }
        case_end();
        free(dst);
        hfence_free(&f);
    }
    {
        hfence f;
        float *src = (float *)hfence_alloc(&f, 67 * sizeof(float)), dst[68];
        int64_t n, e;
        case_begin("load_row F32 rows n = 1..67, scaled, ending at a fence");
        for (e = 0; e < 67; e++) src[e] = (float)rnd_range(-2, 2);
        for (n = 1; n <= 67; n++) {
            for (e = 0; e <= n; e++) dst[e] = 12345.0f;
            ks->load_row(dst, (const char *)(src + 67 - n), SDPA_F32, n, 0.125f);
            for (e = 0; e < n; e++)
                CHECK(dst[e] == src[67 - n + e] * 0.125f, "n=%lld: dst[%lld] = %.9g", LL(n), LL(e), dst[e]);
            CHECK(dst[n] == 12345.0f, "n=%lld: dst[n] written", LL(n));
        }
        case_end();
        hfence_free(&f);
    }
}

/* The transposed K tile against sdpa__load_kt, bitwise, for every dtype,
 * key counts and head dims around the 4 x 4 blocks, padded key strides;
 * the last key row ends at a fence, and Kt's unused entries stay put. */
static void test_hwy_load_kt(const sdpa_hwy__kernels *ks)
{
    static const sdpa_dtype dts[3] = {SDPA_F32, SDPA_F16, SDPA_BF16};
    static const int64_t nks[] = {1, 2, 3, 4, 5, 7, 8, 13, 16, 17, 63, 64};
    static const int64_t Ds[] = {1, 2, 3, 4, 5, 8, 9, 40, 64, 72, 127, 128};
    int t, a, b;
    for (t = 0; t < 3; t++) {
        case_begin("load_kt %s: nk x D over {1..64} x {1..128}, padded strides, fence after the last key",
                   dt_name(dts[t]));
        for (a = 0; a < (int)(sizeof nks / sizeof nks[0]); a++)
            for (b = 0; b < (int)(sizeof Ds / sizeof Ds[0]); b++) {
                int64_t nk = nks[a], D = Ds[b], es = dts[t] == SDPA_F32 ? 4 : 2;
                int64_t ks_el = D + rnd_int(0, 3), ld = SDPA__ROUND_UP(nk, 16) + 16 * rnd_int(0, 1), i, e;
                size_t bytes = (size_t)(((nk - 1) * ks_el + D) * es);
                hfence f;
                char *kb = (char *)hfence_alloc(&f, bytes);
                float *got = (float *)xcalloc((size_t)(D * ld), sizeof(float));
                float *want = (float *)xcalloc((size_t)(D * ld), sizeof(float));
                for (i = 0; i < (int64_t)bytes / es; i++) {
                    float v = (float)rnd_range(-3, 3);
                    if (es == 4) memcpy(kb + i * 4, &v, 4);
                    else {
                        uint16_t h = dts[t] == SDPA_F16 ? sdpa_f32_to_f16(v) : sdpa_f32_to_bf16(v);
                        memcpy(kb + i * 2, &h, 2);
                    }
                }
                for (i = 0; i < D * ld; i++) got[i] = want[i] = -7.0f;
                ks->load_kt(got, ld, kb, ks_el * es, dts[t], nk, D);
                sdpa__load_kt(want, ld, kb, ks_el * es, dts[t], nk, D);
                for (e = 0; e < D; e++)
                    for (i = 0; i < ld; i++)
                        if (!same_bits_or_nan(got[e * ld + i], want[e * ld + i])) {
                            case_fail("nk=%lld D=%lld: Kt[%lld][%lld] = %.9g, scalar %.9g", LL(nk), LL(D), LL(e), LL(i),
                                      got[e * ld + i], want[e * ld + i]);
                            e = D;
                            break;
                        }
                free(got);
                free(want);
                hfence_free(&f);
            }
        case_end();
    }
}

/* The micro-kernel against float64, both uses (S = Q K^T from zero, O += P V
 * accumulating), M, N, K around the blocks; C's padding columns and the rows
 * after M stay put. */
static void test_hwy_gemm(const sdpa_hwy__kernels *ks)
{
    static const int64_t Ms[] = {4, 8, 12, 64};
    static const int64_t Ns[] = {16, 32, 48, 64, 80, 96, 112, 128, 144, 272};
    static const int64_t Ks[] = {0, 1, 2, 3, 7, 16, 17, 64, 65, 128};
    int a, b, c, acc;
    case_begin("gemm: M x N x K over {4..64} x {16..272} x {0..128}, from zero and accumulating");
    for (a = 0; a < 4; a++)
        for (b = 0; b < 10; b++)
            for (c = 0; c < 10; c++)
                for (acc = 0; acc < 2; acc++) {
                    int64_t M = Ms[a], N = Ns[b], K = Ks[c], lda = K + rnd_int(0, 3), ldb = N + 16 * rnd_int(0, 1);
                    int64_t ldc = N + 16 * rnd_int(0, 1), i, j, kk, bad = 0;
                    float *A = (float *)xcalloc((size_t)(M * lda + 1), sizeof(float));
                    float *B = (float *)xcalloc((size_t)(K * ldb + 1), sizeof(float));
                    float *C = (float *)xcalloc((size_t)((M + 1) * ldc), sizeof(float));
                    float *C0 = (float *)xcalloc((size_t)((M + 1) * ldc), sizeof(float));
                    if (g_quick && (b + c) % 3 != 0) goto next;
                    for (i = 0; i < M * lda; i++) A[i] = (float)rnd_range(-1, 1);
                    for (i = 0; i < K * ldb; i++) B[i] = (float)rnd_range(-1, 1);
                    for (i = 0; i < (M + 1) * ldc; i++) C[i] = C0[i] = (float)rnd_range(-1, 1);
                    ks->gemm(M, N, K, A, lda, B, ldb, C, ldc, acc);
                    for (i = 0; i < M + 1; i++)
                        for (j = 0; j < ldc; j++) {
                            double want = acc ? C0[i * ldc + j] : 0, mag = fabs(want);
                            if (i >= M || j >= N) {
                                if (C[i * ldc + j] != C0[i * ldc + j] && bad++ < 2)
                                    case_fail("M=%lld N=%lld K=%lld: C[%lld][%lld] outside the block written", LL(M),
                                              LL(N), LL(K), LL(i), LL(j));
                                continue;
                            }
                            for (kk = 0; kk < K; kk++) {
                                want += (double)A[i * lda + kk] * B[kk * ldb + j];
                                mag += fabs((double)A[i * lda + kk] * B[kk * ldb + j]);
                            }
                            if (!(fabs(C[i * ldc + j] - want) <= 1e-6 * (mag + 1)) && bad++ < 2)
                                case_fail("M=%lld N=%lld K=%lld acc=%d: C[%lld][%lld] = %.9g, float64 %.9g", LL(M),
                                          LL(N), LL(K), acc, LL(i), LL(j), C[i * ldc + j], want);
                        }
                next:
                    free(A), free(B), free(C), free(C0);
                }
    case_end();
}

static void test_hwy_kernels(void)
{
    sdpa_hwy__kernels ks;
    static char name[64];
    sdpa_hwy__get_kernels(&ks);
    snprintf(name, sizeof name, "hwy kernels (%s)", ks.target);
    if (!group_begin(name)) return;
    test_hwy_exp(&ks);
    test_hwy_rows(&ks);
    test_hwy_load_row(&ks);
    test_hwy_load_kt(&ks);
    test_hwy_gemm(&ks);
    group_end();
}

/* The API around the targets, and the int8 refusal. */
static void test_hwy_api(int64_t target)
{
    if (!group_begin("hwy api")) return;
    case_begin("sdpa_hwy_target names the forced target; bad targets refused");
    {
        const char *n = sdpa_hwy_target(), *want = sdpa_hwy_target_name(target);
        int64_t t[64];
        int cnt = sdpa_hwy_targets(t, 64);
        CHECK(n && want && strcmp(n, want) == 0, "sdpa_hwy_target() = %s, forced %s", n ? n : "NULL",
              want ? want : "NULL");
        CHECK(cnt == 1 && t[0] == target, "sdpa_hwy_targets while forced: %d targets, first %lld", cnt, LL(t[0]));
        CHECK(sdpa_hwy_force_target(3) == SDPA_ERR_PATH, "two bits accepted as a target");
        CHECK(sdpa_hwy_force_target(-1) == SDPA_ERR_PATH, "-1 accepted as a target");
        CHECK(sdpa_hwy_target_name(3) == NULL, "sdpa_hwy_target_name(3) is not NULL");
        CHECK(sdpa_hwy_force_target(target) == SDPA_OK, "re-forcing %lld failed", LL(target));
    }
    case_end();
    case_begin("precision = SDPA_PRECISION_INT8_QK refused with SDPA_ERR_PARAM and a message, out untouched");
    {
        float q[16], k[16], v[16], o[16];
        char err[128] = "";
        sdpa_tensor tq = {q, SDPA_F32, {1, 1, 4, 4}, {0}}, tk = {k, SDPA_F32, {1, 1, 4, 4}, {0}};
        sdpa_tensor tv = {v, SDPA_F32, {1, 1, 4, 4}, {0}}, to = {o, SDPA_F32, {1, 1, 4, 4}, {0}};
        sdpa_params p;
        int i, rc;
        memset(&p, 0, sizeof p);
        for (i = 0; i < 16; i++) q[i] = k[i] = v[i] = 0.5f, o[i] = -3.0f;
        p.precision = SDPA_PRECISION_INT8_QK;
        p.errbuf = err;
        p.errbuf_size = sizeof err;
        rc = sdpa_hwy_attention(&tq, &tk, &tv, &to, &p);
        CHECK(rc == SDPA_ERR_PARAM, "rc = %d", rc);
        CHECK(strstr(err, "int8") != NULL, "errbuf: \"%s\"", err);
        for (i = 0; i < 16; i++) CHECK(o[i] == -3.0f, "out[%d] written", i);
        CHECK(sdpa_hwy_workspace_size(&tq, &tk, &tv, &to, &p) == SDPA_ERR_PARAM, "workspace size accepted int8");
        p.precision = 0;
        p.path = (sdpa_path)99; /* ignored by the backend, documented */
        rc = sdpa_hwy_attention(&tq, &tk, &tv, &to, &p);
        CHECK(rc == SDPA_OK, "rc = %d with an ignored path", rc);
        for (i = 0; i < 16; i++) CHECK(fabsf(o[i] - 0.5f) < 1e-6f, "out[%d] = %.9g, want 0.5", i, o[i]);
        p.precision = SDPA_PRECISION_BF16_PV; /* accepted: no bf16 products here */
        for (i = 0; i < 16; i++) o[i] = -3.0f;
        rc = sdpa_hwy_attention(&tq, &tk, &tv, &to, &p);
        CHECK(rc == SDPA_OK, "rc = %d with SDPA_PRECISION_BF16_PV", rc);
        for (i = 0; i < 16; i++) CHECK(fabsf(o[i] - 0.5f) < 1e-6f, "BF16_PV: out[%d] = %.9g, want 0.5", i, o[i]);
    }
    case_end();
    group_end();
}

/* The groups of tests/test_sdpa.c that exercise sdpa_attention's contract
 * (the path, SIMD-kernel, int8 and KV-cache groups test sdpa.h's own code). */
static void run_attention_groups(void)
{
    test_err_null();
    test_err_dtype();
    test_err_shape();
    test_err_stride();
    test_err_overflow();
    test_err_mask();
    test_err_param();
    test_err_seqlens();
    test_err_alias();
    test_lenient_params();
    test_head_dims();
    test_lengths();
    test_gqa();
    test_layouts();
    test_dtypes();
    test_causal();
    test_window();
    test_softcap();
    test_alibi();
    test_masks(1);
    test_masks(2);
    test_score_mod_group();
    test_seqlens();
    test_cu_seqlens();
    test_large_logits();
    test_masked_rows();
    test_empty();
    test_nonfinite();
    test_tiles();
    test_threads();
    test_hooks();
    test_allocator();
    test_workspace();
    test_concurrent();
    test_random();
}

int main(int argc, char **argv)
{
    const char *env_seed = getenv("SDPA_TEST_SEED"), *env_quick = getenv("SDPA_TEST_QUICK");
    const char *only = getenv("SDPA_HWY_TARGETS");
    int64_t targets[64];
    uint64_t seed;
    double t0 = now_s();
    int i, n, ran = 0;
    g_filter = (char **)xcalloc((size_t)argc, sizeof(char *));
    for (i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--quick") == 0) g_quick = 1;
        else if (strcmp(argv[i], "--targets") == 0) {
            n = sdpa_hwy_targets(targets, 64);
            for (i = 0; i < n && i < 64; i++) printf("%s%s", i ? " " : "", sdpa_hwy_target_name(targets[i]));
            printf("\n");
            return 0;
        } else g_filter[g_nfilter++] = argv[i];
    }
    if (env_quick && env_quick[0] && strcmp(env_quick, "0") != 0) g_quick = 1;
    seed = env_seed && env_seed[0] ? (uint64_t)strtoull(env_seed, NULL, 0)
                                   : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    n = sdpa_hwy_targets(targets, 64);
    printf("sdpa_hwy tests: seed %llu%s; targets here:", (unsigned long long)seed, g_quick ? ", quick" : "");
    for (i = 0; i < n && i < 64; i++) printf(" %s", sdpa_hwy_target_name(targets[i]));
    printf("%s%s (rerun with SDPA_TEST_SEED=%llu)\n", only ? "; testing " : "", only ? only : "",
           (unsigned long long)seed);
    fflush(stdout);
    for (i = 0; i < n && i < 64; i++) {
        const char *name = sdpa_hwy_target_name(targets[i]);
        double tt = now_s();
        long f0 = g_fail, p0 = g_pass;
        if (only && *only) { /* whole words of $SDPA_HWY_TARGETS */
            const char *s = only;
            size_t len = strlen(name);
            int hit = 0;
            while ((s = strstr(s, name)) != NULL) {
                if ((s == only || s[-1] == ' ') && (s[len] == '\0' || s[len] == ' ')) hit = 1;
                s += len;
            }
            if (!hit) continue;
        }
        g_rng = seed; /* the same cases on every target */
        if (sdpa_hwy_force_target(targets[i]) != SDPA_OK) {
            printf("[FAIL] could not force target %s\n", name);
            g_fail++;
            continue;
        }
        printf("==> target %s\n", name);
        fflush(stdout);
        test_hwy_api(targets[i]);
        test_hwy_kernels();
        run_attention_groups();
        printf("<== target %s: %ld passed, %ld failed, %.1f s\n", name, g_pass - p0, g_fail - f0, now_s() - tt);
        ran++;
    }
    sdpa_hwy_force_target(0);
    if (ran == 0) {
        printf("[FAIL] no target tested (SDPA_HWY_TARGETS=\"%s\" names none of those here)\n", only ? only : "");
        g_fail++;
    }
    printf("largest err/tol: F32 out %.3f, F16 out %.3f, BF16 out %.3f, lse %.3f; total %.1f s\n", g_ratio[0],
           g_ratio[1], g_ratio[2], g_ratio[3], now_s() - t0);
    printf("%ld passed, %ld failed on %d target%s\n", g_pass, g_fail, ran, ran == 1 ? "" : "s");
    free(g_filter);
    return g_fail ? 1 : 0;
}

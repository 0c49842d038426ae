/* compile_smoke.h - a small run of every public function, shared by the
 * compile tests (compile_c99.c as C, compile_cxx.cpp as C++). It is written in
 * the common subset of C99 and C++11 so that both languages compile the same
 * user code, and it uses every public function so that SDPA_STATIC builds have
 * no unused static function.
 *
 * Not the test suite (tests/test_sdpa.c is): it checks that each build
 * configuration links and gives right answers on one small problem:
 *   B=2, Hq=4, Hkv=2 (GQA), Lq=9 > Lk=7 bottom-right causal (so rows 0-1 see
 *   no key), D=5, Dv=3, against a float64 reference; bitwise equality across
 *   thread counts and through the allocator / parallel_for hooks; an error
 *   path that must leave out untouched.
 * Include after sdpa.h. Call smoke_run(); it returns the number of failures.
 */
#ifndef COMPILE_SMOKE_H
#define COMPILE_SMOKE_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SM_B = 2, SM_HQ = 4, SM_HKV = 2, SM_LQ = 9, SM_LK = 7, SM_D = 5, SM_DV = 3 };
#define SM_NQ  (SM_B * SM_HQ * SM_LQ * SM_D)
#define SM_NK  (SM_B * SM_HKV * SM_LK * SM_D)
#define SM_NV  (SM_B * SM_HKV * SM_LK * SM_DV)
#define SM_NO  (SM_B * SM_HQ * SM_LQ * SM_DV)
#define SM_NL  (SM_B * SM_HQ * SM_LQ)

typedef struct smoke_data {
    float q[SM_NQ], k[SM_NK], v[SM_NV];
    double ref[SM_NO], ref_lse[SM_NL];
} smoke_data;

static float smoke_rand(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xFFFF) / 32768.0f - 1.0f;
}

static void smoke_tensor(sdpa_tensor *t, void *data, sdpa_dtype dt,
                         int64_t b, int64_t h, int64_t l, int64_t d) {
    memset(t, 0, sizeof *t);
    t->data = data;
    t->dtype = dt;
    t->shape[0] = b; t->shape[1] = h; t->shape[2] = l; t->shape[3] = d;
}

/* float64 reference, bottom-right causal: key j visible to query i iff j <= i + Lk - Lq. */
static void smoke_reference(smoke_data *s) {
    int b, h, i, j, d;
    double scale = 1.0 / sqrt((double)SM_D);
    for (b = 0; b < SM_B; b++)
    for (h = 0; h < SM_HQ; h++)
    for (i = 0; i < SM_LQ; i++) {
        int g = h / (SM_HQ / SM_HKV);
        const float *qr = s->q + ((b * SM_HQ + h) * SM_LQ + i) * SM_D;
        double sc[SM_LK], m = -INFINITY, sum = 0.0;
        double *o = s->ref + ((b * SM_HQ + h) * SM_LQ + i) * SM_DV;
        int last = i + SM_LK - SM_LQ;
        for (d = 0; d < SM_DV; d++) o[d] = 0.0;
        for (j = 0; j <= last && j < SM_LK; j++) {
            const float *kr = s->k + ((b * SM_HKV + g) * SM_LK + j) * SM_D;
            double dot = 0.0;
            for (d = 0; d < SM_D; d++) dot += (double)qr[d] * kr[d];
            sc[j] = dot * scale;
            if (sc[j] > m) m = sc[j];
        }
        for (j = 0; j <= last && j < SM_LK; j++) {
            const float *vr = s->v + ((b * SM_HKV + g) * SM_LK + j) * SM_DV;
            double p = exp(sc[j] - m);
            sum += p;
            for (d = 0; d < SM_DV; d++) o[d] += p * vr[d];
        }
        if (sum > 0.0) {
            for (d = 0; d < SM_DV; d++) o[d] /= sum;
            s->ref_lse[(b * SM_HQ + h) * SM_LQ + i] = m + log(sum);
        } else {
            s->ref_lse[(b * SM_HQ + h) * SM_LQ + i] = -INFINITY;
        }
    }
}

/* The allocator hook: counts, so that the test can check every block is freed. */
typedef struct smoke_alloc_state { long live; long calls; } smoke_alloc_state;
static void *smoke_alloc(void *user, size_t size, size_t align) {
    smoke_alloc_state *st = (smoke_alloc_state *)user;
    void *p;
    size_t a = align < sizeof(void *) ? sizeof(void *) : align;
    /* over-allocate and align by hand: C99 has no aligned_alloc */
    unsigned char *raw = (unsigned char *)malloc(size + a + sizeof(void *));
    if (!raw) return NULL;
    p = (void *)(((uintptr_t)(raw + sizeof(void *)) + (a - 1)) & ~(uintptr_t)(a - 1));
    ((void **)p)[-1] = raw;
    st->live++;
    st->calls++;
    return p;
}
static void smoke_free(void *user, void *ptr, size_t size) {
    smoke_alloc_state *st = (smoke_alloc_state *)user;
    (void)size;
    if (!ptr) return;
    free(((void **)ptr)[-1]);
    st->live--;
}

/* The parallel_for hook: a serial "pool" that runs the tasks backwards on
 * worker 0, to show that the order of tasks does not change the result. */
static int smoke_parallel_for(void *user, int n_workers, int64_t n_tasks, sdpa_task_fn fn, void *ctx) {
    int64_t t;
    int *calls = (int *)user;
    (void)n_workers;
    (*calls)++;
    for (t = n_tasks - 1; t >= 0; t--) fn(ctx, t, 0);
    return 0;
}

static float smoke_identity_mod(float score, int64_t b, int64_t h, int64_t i, int64_t j, void *user) {
    (void)b; (void)h; (void)i; (void)j; (void)user;
    return score;
}

static int smoke_compare(const char *what, const float *out, const float *lse, const smoke_data *s) {
    int n, fails = 0;
    for (n = 0; n < SM_NO; n++) {
        double r = s->ref[n], e = fabs((double)out[n] - r);
        if (!(e <= 2e-5 + 1e-4 * fabs(r))) {
            if (fails++ < 5) fprintf(stderr, "%s: out[%d] = %.9g, reference %.9g\n", what, n, out[n], r);
        }
    }
    if (lse) {
        for (n = 0; n < SM_NL; n++) {
            double r = s->ref_lse[n];
            int ok = isinf(r) ? (isinf(lse[n]) && lse[n] < 0) : fabs((double)lse[n] - r) <= 1e-4 + 1e-5 * fabs(r);
            if (!ok && fails++ < 5) fprintf(stderr, "%s: lse[%d] = %.9g, reference %.9g\n", what, n, lse[n], r);
        }
    }
    return fails != 0;
}

static int smoke_run(void) {
    static smoke_data s;
    static float out[SM_NO], out2[SM_NO], lse[SM_NL], lse2[SM_NL];
    static uint16_t q16[SM_NQ], k16[SM_NK], v16[SM_NV];
    sdpa_tensor q, k, v, o, o2;
    sdpa_params p;
    sdpa_allocator alloc;
    smoke_alloc_state ast;
    unsigned seed = 12345u;
    int n, rc, fails = 0, pf_calls = 0;
    int64_t ws;
    char errbuf[128];
    static const int codes[] = { SDPA_OK, SDPA_ERR_NULL, SDPA_ERR_DTYPE, SDPA_ERR_SHAPE, SDPA_ERR_STRIDE,
                                 SDPA_ERR_OVERFLOW, SDPA_ERR_HEADS, SDPA_ERR_MASK, SDPA_ERR_PARAM,
                                 SDPA_ERR_SEQLENS, SDPA_ERR_ALIAS, SDPA_ERR_NOMEM, SDPA_ERR_THREADS };

    for (n = 0; n < SM_NQ; n++) s.q[n] = smoke_rand(&seed);
    for (n = 0; n < SM_NK; n++) s.k[n] = smoke_rand(&seed);
    for (n = 0; n < SM_NV; n++) s.v[n] = smoke_rand(&seed);
    smoke_reference(&s);

    smoke_tensor(&q, s.q, SDPA_F32, SM_B, SM_HQ, SM_LQ, SM_D);
    smoke_tensor(&k, s.k, SDPA_F32, SM_B, SM_HKV, SM_LK, SM_D);
    smoke_tensor(&v, s.v, SDPA_F32, SM_B, SM_HKV, SM_LK, SM_DV);
    smoke_tensor(&o, out, SDPA_F32, SM_B, SM_HQ, SM_LQ, SM_DV);
    smoke_tensor(&o2, out2, SDPA_F32, SM_B, SM_HQ, SM_LQ, SM_DV);

    /* 1. several built-in threads, with lse */
    memset(&p, 0, sizeof p);
    p.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
    p.lse = lse;
    p.num_threads = 3;
    rc = sdpa_attention(&q, &k, &v, &o, &p);
    if (rc != SDPA_OK) { fprintf(stderr, "threads=3: %s\n", sdpa_strerror(rc)); return 1; }
    fails += smoke_compare("threads=3", out, lse, &s);

    /* 2. one thread: bitwise the same */
    p.num_threads = 1;
    p.lse = lse2;
    memset(out2, 0xFF, sizeof out2);
    rc = sdpa_attention(&q, &k, &v, &o2, &p);
    if (rc != SDPA_OK || memcmp(out, out2, sizeof out) != 0 || memcmp(lse, lse2, sizeof lse) != 0) {
        fprintf(stderr, "threads=1: rc %d, not bitwise equal to threads=3\n", rc);
        fails++;
    }

    /* 3. allocator and parallel_for hooks: bitwise the same, every block freed */
    ast.live = 0; ast.calls = 0;
    alloc.alloc = smoke_alloc;
    alloc.free = smoke_free;
    alloc.user = &ast;
    p.allocator = &alloc;
    p.parallel_for = smoke_parallel_for;
    p.parallel_user = &pf_calls;
    p.num_threads = 4;
    memset(out2, 0xFF, sizeof out2);
    rc = sdpa_attention(&q, &k, &v, &o2, &p);
    if (rc != SDPA_OK || memcmp(out, out2, sizeof out) != 0 || ast.live != 0) {
        fprintf(stderr, "hooks: rc %d, bitwise %s, %ld blocks live, %d parallel_for calls\n", rc,
                memcmp(out, out2, sizeof out) ? "different" : "equal", ast.live, pf_calls);
        fails++;
    }

    /* 4. a score_mod callback that changes nothing */
    memset(&p, 0, sizeof p);
    p.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
    p.score_mod = smoke_identity_mod;
    memset(out2, 0xFF, sizeof out2);
    rc = sdpa_attention(&q, &k, &v, &o2, &p);
    if (rc != SDPA_OK) { fprintf(stderr, "score_mod: %s\n", sdpa_strerror(rc)); fails++; }
    else fails += smoke_compare("score_mod", out2, NULL, &s);

    /* 5. F16 inputs through the library's own conversions; F32 out */
    for (n = 0; n < SM_NQ; n++) q16[n] = sdpa_f32_to_f16(s.q[n]);
    for (n = 0; n < SM_NK; n++) k16[n] = sdpa_f32_to_f16(s.k[n]);
    for (n = 0; n < SM_NV; n++) v16[n] = sdpa_f32_to_f16(s.v[n]);
    for (n = 0; n < SM_NQ; n++) s.q[n] = sdpa_f16_to_f32(q16[n]);
    for (n = 0; n < SM_NK; n++) s.k[n] = sdpa_f16_to_f32(k16[n]);
    for (n = 0; n < SM_NV; n++) s.v[n] = sdpa_f16_to_f32(v16[n]);
    smoke_reference(&s);
    q.data = q16; q.dtype = SDPA_F16;
    k.data = k16; k.dtype = SDPA_F16;
    v.data = v16; v.dtype = SDPA_F16;
    memset(&p, 0, sizeof p);
    p.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
    memset(out2, 0xFF, sizeof out2);
    rc = sdpa_attention(&q, &k, &v, &o2, &p);
    if (rc != SDPA_OK) { fprintf(stderr, "f16: %s\n", sdpa_strerror(rc)); fails++; }
    else fails += smoke_compare("f16", out2, NULL, &s);
    if (sdpa_f32_to_f16(1.0f) != 0x3C00 || sdpa_f16_to_f32(0xC000) != -2.0f ||
        sdpa_f32_to_bf16(1.0f) != 0x3F80 || sdpa_bf16_to_f32(0xC000) != -2.0f) {
        fprintf(stderr, "conversions: wrong\n");
        fails++;
    }

    /* 6. workspace size */
    ws = sdpa_workspace_size(&q, &k, &v, &o2, NULL);
    if (ws < 0) { fprintf(stderr, "workspace_size: %s\n", sdpa_strerror((int)ws)); fails++; }

    /* 7. an error: q NULL -> SDPA_ERR_NULL, a message, out untouched */
    memset(&p, 0, sizeof p);
    errbuf[0] = '\0';
    p.errbuf = errbuf;
    p.errbuf_size = sizeof errbuf;
    memset(out2, 0x5A, sizeof out2);
    memcpy(out, out2, sizeof out);
    rc = sdpa_attention(NULL, &k, &v, &o2, &p);
    if (rc != SDPA_ERR_NULL || memcmp(out, out2, sizeof out) != 0 || errbuf[0] == '\0') {
        fprintf(stderr, "error path: rc %d (want %d), errbuf '%s'\n", rc, SDPA_ERR_NULL, errbuf);
        fails++;
    }
    for (n = 0; n < (int)(sizeof codes / sizeof codes[0]); n++) {
        const char *msg = sdpa_strerror(codes[n]);
        if (!msg || !msg[0]) { fprintf(stderr, "sdpa_strerror(%d) empty\n", codes[n]); fails++; }
    }
    if (!sdpa_strerror(-12345) || strcmp(sdpa_version(), SDPA_VERSION_STRING) != 0) {
        fprintf(stderr, "strerror(unknown) or version wrong\n");
        fails++;
    }

    /* 8. a path left out at build time is not offered */
#if defined(SDPA_NO_SIMD) || defined(SDPA_NO_NEON)
    if (sdpa_path_supported(SDPA_PATH_NEON)) { fprintf(stderr, "neon offered though left out\n"); fails++; }
#endif
#if defined(SDPA_NO_SIMD) || defined(SDPA_NO_AVX2)
    if (sdpa_path_supported(SDPA_PATH_AVX2)) { fprintf(stderr, "avx2 offered though left out\n"); fails++; }
#endif
#if defined(SDPA_NO_SIMD) || defined(SDPA_NO_AVX2) || defined(SDPA_NO_AVX512)
    if (sdpa_path_supported(SDPA_PATH_AVX512)) { fprintf(stderr, "avx512 offered though left out\n"); fails++; }
#endif
#if defined(SDPA_NO_SIMD) || defined(SDPA_NO_AVX2) || defined(SDPA_NO_AVX512) || defined(SDPA_NO_AMX)
    if (sdpa_path_supported(SDPA_PATH_AMX)) { fprintf(stderr, "amx offered though left out\n"); fails++; }
#endif

    printf("smoke (%s): %s\n", sdpa_version(), fails ? "FAILED" : "ok");
    return fails;
}

#endif /* COMPILE_SMOKE_H */

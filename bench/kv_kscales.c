/* bench/kv_kscales.c - `make bench-kscales`: which int8 scales for the KV
 * cache's keys measure better? The question the int8/KV cache issue asks
 * (KIVI quantises K per channel, V per token); answered by accuracy, before
 * any kernel is written for it.
 *
 *   Decode attention (32 query heads over 8 kv heads, head_dim 128, 4096
 *   keys, 8 random query tokens) through an F32 cache holding keys that went
 *   through int8 and back in each of these ways (values stay F32, so only the
 *   keys' error shows):
 *     token    one scale per token and head: max|k| / 127 (the cache's I8)
 *     channel  one scale per channel, head and 64-token page, from the
 *              whole page (KIVI's grouping; needs the page complete)
 *     stream   the same scales as a cache appending token by token has them:
 *              a scale grows when a token exceeds it (to at least 1.25x the
 *              old, --grow), and the page's earlier keys of that channel
 *              are rounded again to the new scale: what the cache does
 *     smooth   per token after subtracting the page's mean key (kept in
 *              float: q.mean added back per page)
 *   plus the cache's own I8 storage (values per token, so their error
 *   adds in) with its default keys per channel and with keys per token. Reported: relative L2 error and cosine of the outputs
 *   against the F32 cache with the exact keys, for uniform keys and for keys
 *   with outlier channels (every 17th channel 20x larger, as the suite's
 *   accuracy test; and the same channels offset by +20 instead).
 *
 *   bench_kscales [--ctx N] [--grow G]
 */
#define _GNU_SOURCE
#include "common.h"

#define SDPA_IMPLEMENTATION
#include "sdpa.h"

#define PAGE 64

static signed char q8(double y) /* round half away from zero, clamp to +-127 */
{
    long r = (long)(y + (y >= 0.0 ? 0.5 : -0.5));
    return (signed char)(r > 127 ? 127 : (r < -127 ? -127 : r));
}

/* keys [H][L][D] in place: quantised and dequantised the way `how` says */
static void kq_token(float *k, int64_t n, int64_t D, const float *mean)
{
    int64_t t, d;
    for (t = 0; t < n; t++) {
        float *x = k + t * D;
        double amax = 0, s;
        for (d = 0; d < D; d++) { /* plain compares: aarch64 gcc 12 -O3 crashes vectorising fmax reductions */
            double a = fabs(x[d] - (mean ? mean[d] : 0));
            if (a > amax) amax = a;
        }
        s = amax / 127.0;
        for (d = 0; d < D; d++) {
            double m = mean ? mean[d] : 0;
            x[d] = (float)((s > 0 ? q8((x[d] - m) / s) * s : 0.0) + m);
        }
    }
}

static void kq_channel(float *k, int64_t n, int64_t D)
{
    int64_t t, d;
    for (d = 0; d < D; d++) {
        double amax = 0, s;
        for (t = 0; t < n; t++)
            if (fabs(k[t * D + d]) > amax) amax = fabs(k[t * D + d]);
        s = amax / 127.0;
        for (t = 0; t < n; t++) k[t * D + d] = (float)(s > 0 ? q8(k[t * D + d] / s) * s : 0.0);
    }
}

static double g_grow = 1.25; /* a growing scale becomes at least g_grow times the old one (as the cache) */

static void kq_stream(float *k, int64_t n, int64_t D)
{
    signed char *q = (signed char *)bc_xmalloc((size_t)(n * D));
    double *s = (double *)bc_xmalloc((size_t)D * sizeof(double));
    int64_t t, u, d;
    for (d = 0; d < D; d++) s[d] = 0;
    for (t = 0; t < n; t++)
        for (d = 0; d < D; d++) {
            double a = fabs(k[t * D + d]);
            if (a > s[d] * 127.0) { /* the scale grows: earlier keys rounded again */
                double ns = fmax(a / 127.0, s[d] * g_grow);
                for (u = 0; u < t; u++) q[u * D + d] = q8(q[u * D + d] * s[d] / ns);
                s[d] = ns;
            }
            q[t * D + d] = s[d] > 0 ? q8(k[t * D + d] / s[d]) : 0;
        }
    for (t = 0; t < n; t++)
        for (d = 0; d < D; d++) k[t * D + d] = (float)(q[t * D + d] * s[d]);
    free(q), free(s);
}

static void kq_smooth(float *k, int64_t n, int64_t D)
{
    double *m = (double *)bc_xmalloc((size_t)D * sizeof(double));
    float *mf = (float *)bc_xmalloc((size_t)D * sizeof(float));
    int64_t t, d;
    for (d = 0; d < D; d++) m[d] = 0;
    for (t = 0; t < n; t++)
        for (d = 0; d < D; d++) m[d] += k[t * D + d];
    for (d = 0; d < D; d++) mf[d] = (float)(m[d] / (double)n);
    kq_token(k, n, D, mf);
    free(m), free(mf);
}

enum { V_EXACT, V_TOKEN, V_CHANNEL, V_STREAM, V_SMOOTH, V_N };

static void quantise_keys(float *k, int64_t H, int64_t L, int64_t D, int how)
{
    int64_t h, p;
    for (h = 0; h < H; h++)
        for (p = 0; p < L; p += PAGE) {
            float *x = k + (h * L + p) * D;
            int64_t n = L - p < PAGE ? L - p : PAGE;
            if (how == V_TOKEN) kq_token(x, n, D, NULL);
            else if (how == V_CHANNEL) kq_channel(x, n, D);
            else if (how == V_STREAM) kq_stream(x, n, D);
            else if (how == V_SMOOTH) kq_smooth(x, n, D);
        }
}

/* out [Hq][D] of the decode step over a cache of dtype st holding k, v */
static void decode(sdpa_dtype st, sdpa_kv_kscale ks, const float *k, const float *v, const float *q, float *out, int64_t Hq,
                   int64_t H, int64_t L, int64_t D)
{
    sdpa_kv_cache_config cfg;
    sdpa_kv_cache *c = NULL;
    sdpa_tensor kt = {(void *)(uintptr_t)k, SDPA_F32, {1, H, L, D}, {0}}, vt = {(void *)(uintptr_t)v, SDPA_F32, {1, H, L, D}, {0}};
    sdpa_tensor qt = {(void *)(uintptr_t)q, SDPA_F32, {1, Hq, 1, D}, {0}}, ot = {out, SDPA_F32, {1, Hq, 1, D}, {0}};
    sdpa_params p;
    memset(&cfg, 0, sizeof cfg);
    cfg.num_seqs = 1, cfg.kv_heads = H, cfg.head_dim = D, cfg.dtype = st, cfg.page_size = PAGE, cfg.kscale = ks;
    memset(&p, 0, sizeof p);
    p.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
    if (sdpa_kv_cache_create(&cfg, &c) != SDPA_OK || sdpa_kv_cache_append(c, 0, &kt, &vt) != SDPA_OK ||
        sdpa_kv_cache_attention(c, NULL, &qt, &ot, &p) != SDPA_OK) {
        fprintf(stderr, "bench_kscales: a cache call failed\n");
        exit(1);
    }
    sdpa_kv_cache_destroy(c);
}

int main(int argc, char **argv)
{
    int64_t Hq = 32, H = 8, L = 4096, D = 128, nk, nq, i, t;
    const int ntok = 8;
    int data, how, a;
    for (a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--ctx") && a + 1 < argc) L = atoll(argv[++a]);
        else if (!strcmp(argv[a], "--grow") && a + 1 < argc) g_grow = atof(argv[++a]);
        else { fprintf(stderr, "usage: bench_kscales [--ctx N] [--grow G]\n"); return 2; }
    }
    if (L < 1 || L > (1 << 20) || !(g_grow >= 1.0 && g_grow <= 16.0)) {
        fprintf(stderr, "bench_kscales: --ctx in [1, 2^20], --grow in [1, 16]\n");
        return 2;
    }
    nk = H * L * D, nq = Hq * D;
    printf("int8 key scales, decode accuracy: %lld query heads over %lld kv heads, head_dim %lld, %lld keys, "
           "pages of %d, %d query tokens; rel L2 / cosine of out against exact keys (values F32)\n",
           (long long)Hq, (long long)H, (long long)D, (long long)L, PAGE, ntok);
    printf("%-22s %-19s %-19s %-19s %-19s %-19s %-19s\n", "keys", "token", "channel", "stream", "smooth", "cache I8 (default)",
           "cache I8 (K token)");
    for (data = 0; data < 3; data++) {
        float *k = (float *)bc_xmalloc((size_t)nk * 4), *v = (float *)bc_xmalloc((size_t)nk * 4);
        float *kq = (float *)bc_xmalloc((size_t)nk * 4), *q = (float *)bc_xmalloc((size_t)nq * 4);
        float *ref = (float *)bc_xmalloc((size_t)nq * 4), *o = (float *)bc_xmalloc((size_t)nq * 4);
        double num[V_N + 2] = {0}, den = 0, dot[V_N + 2] = {0}, n2[V_N + 2] = {0};
        bc_fill_uniform(k, (size_t)nk, 11, -1.0f, 1.0f);
        bc_fill_uniform(v, (size_t)nk, 12, -1.0f, 1.0f);
        for (i = 0; i < nk; i++)
            if ((i % D) % 17 == 3) k[i] = data == 1 ? k[i] * 20.0f : data == 2 ? k[i] + 20.0f : k[i];
        for (t = 0; t < ntok; t++) {
            bc_fill_uniform(q, (size_t)nq, 100 + (uint64_t)t, -1.0f, 1.0f);
            decode(SDPA_F32, SDPA_KV_KSCALE_CHANNEL, k, v, q, ref, Hq, H, L, D);
            for (i = 0; i < nq; i++) den += (double)ref[i] * ref[i];
            for (how = V_TOKEN; how <= V_N + 1; how++) {
                if (how < V_N) {
                    memcpy(kq, k, (size_t)nk * 4);
                    quantise_keys(kq, H, L, D, how);
                    decode(SDPA_F32, SDPA_KV_KSCALE_CHANNEL, kq, v, q, o, Hq, H, L, D);
                } else {
                    decode(SDPA_I8, how == V_N ? SDPA_KV_KSCALE_CHANNEL : SDPA_KV_KSCALE_TOKEN, k, v, q, o, Hq, H, L, D);
                }
                for (i = 0; i < nq; i++) {
                    double e = (double)o[i] - ref[i];
                    num[how] += e * e, dot[how] += (double)o[i] * ref[i], n2[how] += (double)o[i] * o[i];
                }
            }
        }
        printf("%-22s", data == 0 ? "uniform [-1, 1]" : data == 1 ? "outliers x20 (1 in 17)" : "outliers +20 (1 in 17)");
        for (how = V_TOKEN; how <= V_N + 1; how++) {
            char cell[64];
            snprintf(cell, sizeof cell, "%.2e / %.6f", sqrt(num[how] / den), dot[how] / sqrt(n2[how] * den));
            printf(" %-19s", cell);
        }
        printf("\n");
        free(k), free(v), free(kq), free(q), free(ref), free(o);
    }
    return 0;
}

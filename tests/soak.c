/* tests/soak.c - a long randomized workload in bounded time: does memory
 * stay flat?
 *
 *   soak [seconds] [seed]      (make soak: 180 s; make test-soak: 20 s)
 *
 * Round after round, until the time is up: sdpa_attention calls of random
 * shapes, dtypes and options (1-3 threads, sometimes a parallel_for hook,
 * sometimes int8 mode, sometimes an allocator that fails), a decode loop
 * over two KV caches that append, attend, evict (StreamingLLM), roll back
 * and fork, and int8 quantize round trips. Every allocation of the library
 * goes through a counting allocator, so:
 *   - after every call the scratch allocator holds 0 bytes;
 *   - each cache holds exactly what sdpa_kv_cache_bytes says, and never more
 *     than its bounded token count needs (the evictions must give pages back);
 *   - the process's resident set (/proc/self/statm) after the first tenth of
 *     the run may not grow by more than 8 MB by the end;
 *   - every output is finite (the inputs are).
 * Prints the rounds, calls and memory figures; exits 1 on any failure. */
#define SDPA_IMPLEMENTATION
#include "sdpa.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static uint64_t g_rng;
static uint64_t rnd(void)
{
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static int64_t rint_(int64_t lo, int64_t hi) { return lo + (int64_t)(rnd() % (uint64_t)(hi - lo + 1)); }
static float rval(void) { return (float)((double)(rnd() >> 11) * (2.0 / 9007199254740992.0) - 1.0); }

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + 1e-6 * (double)tv.tv_usec;
}

static long rss_kb(void)
{
    long pages = 0, res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = -1;
    fclose(f);
    return res < 0 ? -1 : res * 4; /* 4 KB pages */
}

static int g_fail;
#define SOAK_CHECK(cond, ...)                                   \
    do {                                                        \
        if (!(cond)) {                                          \
            if (g_fail < 10) {                                  \
                fprintf(stderr, "soak: FAIL (line %d): ", __LINE__); \
                fprintf(stderr, __VA_ARGS__);                   \
                fprintf(stderr, "\n");                          \
            }                                                   \
            g_fail++;                                           \
        }                                                       \
    } while (0)

/* counting allocator (thread-safe: the library's workers may not allocate,
 * but a parallel_for hook's threads are the application's) */
typedef struct {
    pthread_mutex_t mu;
    int64_t live, peak, calls, fail_at;
} calloc_t;

static void *c_alloc(void *user, size_t size, size_t align)
{
    calloc_t *a = (calloc_t *)user;
    unsigned char *p;
    (void)align;
    pthread_mutex_lock(&a->mu);
    if (++a->calls == a->fail_at) { pthread_mutex_unlock(&a->mu); return NULL; }
    a->live += (int64_t)size;
    if (a->live > a->peak) a->peak = a->live;
    pthread_mutex_unlock(&a->mu);
    p = (unsigned char *)malloc(size + 16);
    if (!p) return NULL;
    memcpy(p, &size, sizeof size);
    return p + 16;
}
static void c_free(void *user, void *ptr, size_t size)
{
    calloc_t *a = (calloc_t *)user;
    size_t got;
    memcpy(&got, (unsigned char *)ptr - 16, sizeof got);
    SOAK_CHECK(got == size, "free with size %zu, allocated %zu", size, got);
    pthread_mutex_lock(&a->mu);
    a->live -= (int64_t)size;
    pthread_mutex_unlock(&a->mu);
    free((unsigned char *)ptr - 16);
}

static int pf_hook(void *user, int n_workers, int64_t n_tasks, sdpa_task_fn fn, void *ctx)
{
    int64_t t;
    (void)user;
    for (t = 0; t < n_tasks; t++) fn(ctx, t, (int)(t % n_workers));
    return 0;
}

static calloc_t g_scratch, g_cache;
static sdpa_allocator g_scratch_al = {c_alloc, c_free, &g_scratch}, g_cache_al = {c_alloc, c_free, &g_cache};
static long g_calls;

static void all_finite(const float *x, int64_t n, const char *what)
{
    int64_t i;
    for (i = 0; i < n; i++)
        if (!isfinite(x[i])) { SOAK_CHECK(0, "%s: element %lld is %g", what, (long long)i, x[i]); return; }
}

/* one sdpa_attention call of random shape and options, F32 in and out */
static void round_attention(void)
{
    int64_t B = rint_(1, 2), Hkv = rint_(1, 2), G = rint_(1, 3), Hq = Hkv * G, Lq = rint_(1, 96), Lk = rint_(1, 160);
    int64_t D = rint_(1, 80), Dv = rint_(1, 80), nq = B * Hq * Lq * D, nk = B * Hkv * Lk * D, nv = B * Hkv * Lk * Dv;
    int64_t no = B * Hq * Lq * Dv, i;
    float *q = (float *)malloc((size_t)nq * 4), *k = (float *)malloc((size_t)nk * 4), *v = (float *)malloc((size_t)nv * 4);
    float *o = (float *)malloc((size_t)no * 4), *lse = (float *)malloc((size_t)(B * Hq * Lq) * 4);
    sdpa_tensor qt = {q, SDPA_F32, {B, Hq, Lq, D}, {0}}, kt = {k, SDPA_F32, {B, Hkv, Lk, D}, {0}};
    sdpa_tensor vt = {v, SDPA_F32, {B, Hkv, Lk, Dv}, {0}}, ot = {o, SDPA_F32, {B, Hq, Lq, Dv}, {0}};
    sdpa_params p;
    int rc, failing;
    for (i = 0; i < nq; i++) q[i] = rval();
    for (i = 0; i < nk; i++) k[i] = rval();
    for (i = 0; i < nv; i++) v[i] = rval();
    memset(&p, 0, sizeof p);
    p.causal = (sdpa_causal)rint_(0, 2);
    if (rint_(0, 3) == 0) p.window = 1, p.window_left = rint_(-1, 64), p.window_right = rint_(-1, 8);
    if (rint_(0, 3) == 0) p.softcap = 30.0f;
    if (rint_(0, 4) == 0) p.precision = SDPA_PRECISION_INT8_QK;
    if (rint_(0, 2) == 0) p.lse = lse;
    p.num_threads = (int)rint_(1, 3);
    if (rint_(0, 4) == 0) p.parallel_for = pf_hook;
    p.tile_q = rint_(0, 1) ? 0 : (int)rint_(1, 100);
    p.tile_k = rint_(0, 1) ? 0 : (int)rint_(1, 100);
    p.allocator = rint_(0, 2) ? &g_scratch_al : NULL; /* NULL: malloc, seen only by the RSS check */
    failing = p.allocator && rint_(0, 9) == 0;
    g_scratch.fail_at = failing ? g_scratch.calls + 1 : 0;
    rc = sdpa_attention(&qt, &kt, &vt, &ot, &p);
    g_scratch.fail_at = 0;
    g_calls++;
    SOAK_CHECK(rc == (failing ? SDPA_ERR_NOMEM : SDPA_OK), "sdpa_attention: rc %d (%s)", rc, sdpa_strerror(rc));
    if (rc == SDPA_OK) all_finite(o, no, "sdpa_attention out"); /* rows that see no key are 0 */
    SOAK_CHECK(g_scratch.live == 0, "sdpa_attention left %lld bytes allocated", (long long)g_scratch.live);
    free(q), free(k), free(v), free(o), free(lse);
}

/* a decode session: two caches, appends, evictions, rollbacks, forks, attention */
typedef struct {
    sdpa_kv_cache *c;
    int64_t H, D, ps;
} soak_cache;

static void round_kv(soak_cache *sc, int64_t limit)
{
    int64_t H = sc->H, D = sc->D, G = 2, seq = rint_(0, 2), n = rint_(1, 40), i, len;
    float *kv = (float *)malloc((size_t)(H * n * D) * 4), q[3 * 8 * 128], o[3 * 8 * 128];
    sdpa_tensor t = {kv, SDPA_F32, {1, H, n, D}, {0}};
    sdpa_tensor qt = {q, SDPA_F32, {3, H * G, 1, D}, {0}}, ot = {o, SDPA_F32, {3, H * G, 1, D}, {0}};
    sdpa_params p;
    int rc, op = (int)rint_(0, 9);
    for (i = 0; i < H * n * D; i++) kv[i] = rval();
    rc = sdpa_kv_cache_append(sc->c, seq, &t, &t);
    g_calls++;
    SOAK_CHECK(rc == SDPA_OK, "append: rc %d", rc);
    len = sdpa_kv_cache_len(sc->c, seq);
    if (len > limit) { /* StreamingLLM: 4 sinks and the recent window */
        rc = sdpa_kv_cache_evict(sc->c, seq, 4, limit / 2);
        SOAK_CHECK(rc == SDPA_OK, "evict: rc %d", rc);
    }
    if (op == 0) SOAK_CHECK(sdpa_kv_cache_truncate(sc->c, seq, sdpa_kv_cache_len(sc->c, seq) / 2) == SDPA_OK, "truncate");
    if (op == 1) SOAK_CHECK(sdpa_kv_cache_fork(sc->c, (seq + 1) % 3, seq, sdpa_kv_cache_len(sc->c, seq)) == SDPA_OK, "fork");
    if (op == 2) SOAK_CHECK(sdpa_kv_cache_reset(sc->c, seq) == SDPA_OK, "reset");
    for (i = 0; i < 3 * H * G * D; i++) q[i] = rval();
    memset(&p, 0, sizeof p);
    p.causal = SDPA_CAUSAL_BOTTOM_RIGHT, p.num_threads = (int)rint_(1, 3);
    p.allocator = rint_(0, 2) ? &g_scratch_al : NULL;
    rc = sdpa_kv_cache_attention(sc->c, NULL, &qt, &ot, &p);
    g_calls += 3;
    SOAK_CHECK(rc == SDPA_OK, "kv attention: rc %d", rc);
    if (rc == SDPA_OK) all_finite(o, 3 * H * G * D, "kv attention out");
    SOAK_CHECK(g_scratch.live == 0, "kv attention left %lld bytes of scratch", (long long)g_scratch.live);
    free(kv);
}

static void round_quant(void)
{
    int64_t rows = rint_(1, 64), cols = rint_(1, 256), i;
    float *x = (float *)malloc((size_t)(rows * cols) * 4), *y = (float *)malloc((size_t)(rows * cols) * 4);
    float *sc = (float *)malloc((size_t)(rows > cols ? rows : cols) * 4);
    int8_t *q = (int8_t *)malloc((size_t)(rows * cols));
    sdpa_quant_axis ax = rint_(0, 1) ? SDPA_QUANT_PER_COL : SDPA_QUANT_PER_ROW;
    for (i = 0; i < rows * cols; i++) x[i] = rval() * 10.0f;
    SOAK_CHECK(sdpa_quantize_i8(x, rows, cols, cols, q, cols, sc, ax, NULL, 0) == SDPA_OK, "quantize");
    SOAK_CHECK(sdpa_dequantize_i8(q, rows, cols, cols, sc, ax, y, cols, NULL, 0) == SDPA_OK, "dequantize");
    for (i = 0; i < rows * cols; i++)
        if (!(fabsf(y[i] - x[i]) <= 10.0f / 127.0f)) { SOAK_CHECK(0, "round trip %g -> %g", x[i], y[i]); break; }
    g_calls += 2;
    free(x), free(y), free(sc), free(q);
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 180.0, t0 = now_s(), t;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 0) : (uint64_t)time(NULL);
    soak_cache sc[2];
    sdpa_kv_cache_config cfg;
    long rss_base = -1, rss_end, rss_max = 0, rounds = 0;
    int64_t limit = 300, cache_peak = 0, cache_cap;
    int i;
    g_rng = seed;
    pthread_mutex_init(&g_scratch.mu, NULL);
    pthread_mutex_init(&g_cache.mu, NULL);
    printf("soak: %.0f s, seed %llu (rerun: soak %.0f %llu)\n", secs, (unsigned long long)seed, secs, (unsigned long long)seed);
    fflush(stdout);
    for (i = 0; i < 2; i++) {
        memset(&cfg, 0, sizeof cfg);
        sc[i].H = i ? 4 : 2, sc[i].D = i ? 64 : 128, sc[i].ps = i ? 16 : 0;
        cfg.num_seqs = 3, cfg.kv_heads = sc[i].H, cfg.head_dim = sc[i].D, cfg.page_size = sc[i].ps;
        cfg.dtype = i ? SDPA_I8 : SDPA_F16, cfg.allocator = &g_cache_al;
        cfg.kscale = rint_(0, 1) ? SDPA_KV_KSCALE_TOKEN : SDPA_KV_KSCALE_CHANNEL; /* I8 keys' scales */
        if (sdpa_kv_cache_create(&cfg, &sc[i].c) != SDPA_OK) { printf("soak: create failed\n"); return 1; }
    }
    /* what two caches of 3 sequences can need at most: each sequence's tokens
     * (limit + one append) on their own pages, plus partial pages, page
     * tables and the objects; the pages of a fork are shared, not copied */
    cache_cap = 0;
    for (i = 0; i < 2; i++) {
        int64_t ps = sc[i].ps ? sc[i].ps : 64, pages = 3 * ((limit + 40) / ps + 3) * 2;
        int64_t page = sc[i].H * ps * sc[i].D * 2 * (i ? 1 : 2) + sc[i].H * ps * 8 + 256 + (i ? sc[i].H * sc[i].D * 4 + 64 : 0);
        cache_cap += pages * page + 3 * 4096 + 1024;
    }
    while ((t = now_s() - t0) < secs && g_fail == 0) {
        long r;
        round_attention();
        round_kv(&sc[0], limit);
        round_kv(&sc[1], limit);
        if (rounds % 4 == 0) round_quant();
        SOAK_CHECK(sdpa_kv_cache_bytes(sc[0].c) + sdpa_kv_cache_bytes(sc[1].c) == g_cache.live,
                   "caches say %lld bytes, the allocator %lld",
                   (long long)(sdpa_kv_cache_bytes(sc[0].c) + sdpa_kv_cache_bytes(sc[1].c)), (long long)g_cache.live);
        if (g_cache.live > cache_peak) cache_peak = g_cache.live;
        SOAK_CHECK(g_cache.live <= cache_cap, "the caches hold %lld bytes, more than %lld for their bounded tokens",
                   (long long)g_cache.live, (long long)cache_cap);
        rounds++;
        r = rss_kb();
        if (r > rss_max) rss_max = r;
        if (rss_base < 0 && t >= secs * 0.1) rss_base = rss_max; /* after the warm-up: the peak so far */
    }
    for (i = 0; i < 2; i++) sdpa_kv_cache_destroy(sc[i].c);
    rss_end = rss_kb();
    SOAK_CHECK(g_cache.live == 0, "destroy left %lld bytes", (long long)g_cache.live);
    if (rss_base < 0) rss_base = rss_max;
    SOAK_CHECK(rss_max - rss_base <= 8192, "resident set grew from %ld KB (after the first tenth) to %ld KB", rss_base, rss_max);
    printf("soak: %ld rounds, %ld library calls in %.1f s; scratch peak %lld bytes, 0 left; caches peak %lld bytes "
           "(bound %lld), 0 left; RSS %ld KB after warm-up, %ld KB peak, %ld KB at the end: %s\n",
           rounds, g_calls, now_s() - t0, (long long)g_scratch.peak, (long long)cache_peak, (long long)cache_cap, rss_base,
           rss_max, rss_end, g_fail ? "FAILED" : "ok");
    return g_fail ? 1 : 0;
}

/* bench/decode.c - `make bench-decode`: one decode step of attention over the
 * KV cache, per storage type, against this machine's read bandwidth.
 *
 *   One sequence, 32 query heads, head_dim 128, MHA (32 kv heads) and GQA
 *   (8 kv heads), contexts 4k / 16k / 64k (--quick: 4k, 16k). Per case one
 *   cache per storage type is filled with the same random K/V, then one query
 *   token attends over each in rounds (one step per storage type, in an order
 *   that rotates): warm-ups discarded, medians over --reps rounds, all threads
 *   pinned (worker w on CPU w). Reported: time per step, tokens/s (one
 *   attention layer), K/V bytes read per second and against the read rate of
 *   the eviction pass just before the step (a shared machine's bandwidth
 *   drifts from minute to minute: a probe at the start alone misleads), the
 *   cache's bytes, the output's relative L2 error against the F32 cache, and
 *   I8 / F16 tokens/s as the median of the rounds' ratios.
 *   Storage types: F32, F16, BF16, I8 (keys scaled per channel and page, the
 *   default) and I8t (keys scaled per token).
 *   The threads are an sdpa_pool (pinned, alive across steps, as a decoder
 *   would keep them); --spawn starts pinned threads for every call instead.
 *   Before each step 512 MiB of other memory is read (timed apart), so the cache
 *   comes from DRAM as it does in a model whose other layers' caches pass
 *   through the last-level cache in between (a 4k-context cache fits in the
 *   Xeon's L3 otherwise); --warm leaves it out.
 *
 *   With --torch, each case also times PyTorch's CPU F.scaled_dot_product_attention
 *   on K/V tensors of the same shape (F32, BF16, F16; enable_gqa for GQA),
 *   through bench/torch_sdpa.py (python3, or $BENCH_PYTHON), with the same
 *   threads, steps and eviction; a clear line when torch cannot be imported.
 *
 *   --hugepages puts the cache's pages in transparent huge pages (Linux;
 *   bc_huge in common.h) instead of malloc's blocks. --page N gives the
 *   cache's page size in tokens (default: the library's, 64). --int8 runs
 *   the I8 and I8t steps in int8 mode (params.precision =
 *   SDPA_PRECISION_INT8_QK: queries rounded to 8 bits instead of 16).
 *
 *   bench_decode [--quick] [--csv] [--spawn] [--warm] [--torch] [--hugepages] [--int8] [--threads N] [--reps N]
 *                [--warmup N] [--page N]
 *
 * Exit status: 0 ok, 1 a step failed or an output is off by more than its
 * storage's bound, 2 bad usage.
 */
#define _GNU_SOURCE
#include "common.h"

#define SDPA_IMPLEMENTATION
#include "sdpa.h"

/* The eviction pass: reads buf on `threads` pinned threads, `streams` at a
 * time each (bc__bw_worker), which pushes the cache out of L3; its read rate
 * is the step's bandwidth sample. The caller goes back to CPU 0 after it
 * (worker 0 of the pool) when repin. Returns GB/s, 0 without a buffer. */
typedef struct { bc__bw_ctx c; int streams; } evict_ctx;
static double evict_pass(evict_ctx *e, int threads, int repin)
{
    double end = 0.0;
    int w;
    if (!e->c.n) return 0.0;
    if (threads > 256) threads = 256;
    e->c.ready = 0;
    e->c.streams = e->streams;
    bc_parallel_run(threads, 1, bc__bw_worker, &e->c);
    if (repin) bc_pin_to_cpu(0);
    for (w = 0; w < threads; w++) end = e->c.t1[w] > end ? e->c.t1[w] : end;
    return end > e->c.t0 ? (double)(e->c.n / (size_t)threads * (size_t)threads) * 4.0 / (end - e->c.t0) * 1e-9 : 0.0;
}

static uint32_t *evbuf_new(size_t n)
{
    uint32_t *b = (uint32_t *)bc_xmalloc(n * 4);
    size_t i;
    for (i = 0; i < n; i++) b[i] = (uint32_t)i;
    return b;
}

/* --hugepages: the cache's pages from a region of transparent huge pages
 * (bc_huge_*, common.h) through the cache's allocator hook; Linux only. */
static sdpa_allocator g_hal; /* the cache copies it; user points at the current arena */
static int64_t g_page;       /* --page: tokens per page, 0 = the library's default */

/* I8: keys scaled per channel and page (the default); I8t: per token */
#define N_ST 5
static const sdpa_dtype k_st[N_ST] = {SDPA_F32, SDPA_F16, SDPA_BF16, SDPA_I8, SDPA_I8};
static const char *const k_st_name[N_ST] = {"F32", "F16", "BF16", "I8", "I8t"};

/* Fills seq 0 of a new cache with len tokens of random K/V (same values for
 * every storage type: the seed fixes them), appended 1024 at a time. */
static sdpa_kv_cache *make_cache(sdpa_dtype st, sdpa_kv_kscale ks, int64_t Hkv, int64_t D, int64_t len, bc_huge *ha)
{
    sdpa_kv_cache_config cfg;
    sdpa_kv_cache *c = NULL;
    int64_t chunk = 1024, t;
    float *k = (float *)bc_xmalloc((size_t)(Hkv * chunk * D) * 4), *v = (float *)bc_xmalloc((size_t)(Hkv * chunk * D) * 4);
    memset(&cfg, 0, sizeof cfg);
    cfg.num_seqs = 1, cfg.kv_heads = Hkv, cfg.head_dim = D, cfg.dtype = st, cfg.kscale = ks, cfg.page_size = g_page;
    if (ha) { /* room for the F32 cache (the largest) and its tables, twice */
        if (bc_huge_open(ha, (size_t)(2 * len * Hkv * (2 * D * 4 + 16)) + ((size_t)64 << 20)) != 0) {
            perror("bench_decode: mmap");
            exit(2);
        }
        g_hal.alloc = bc_huge_alloc, g_hal.free = bc_huge_free, g_hal.user = ha;
        cfg.allocator = &g_hal;
    }
    if (sdpa_kv_cache_create(&cfg, &c) != SDPA_OK) { fprintf(stderr, "bench_decode: create failed\n"); exit(2); }
    for (t = 0; t < len; t += chunk) {
        int64_t n = len - t < chunk ? len - t : chunk;
        sdpa_tensor kt = {k, SDPA_F32, {1, Hkv, n, D}, {0}}, vt = {v, SDPA_F32, {1, Hkv, n, D}, {0}};
        bc_fill_uniform(k, (size_t)(Hkv * n * D), 1000 + (uint64_t)t, -1.0f, 1.0f);
        bc_fill_uniform(v, (size_t)(Hkv * n * D), 2000 + (uint64_t)t, -1.0f, 1.0f);
        if (sdpa_kv_cache_append(c, 0, &kt, &vt) != SDPA_OK) { fprintf(stderr, "bench_decode: append failed (memory?)\n"); exit(2); }
    }
    free(k), free(v);
    return c;
}

static FILE *T; /* the tables: stdout, or stderr under --csv */

/* PyTorch's rows for one case, printed beside ours: tokens/s, GB/s, and
 * our best tokens/s (over the storage types) against torch's best. Returns
 * -1 once torch is found missing (not tried again). */
static int torch_decode(int64_t Hq, int64_t Hkv, int64_t ctx, int64_t D, int threads, int reps, int warmup, int evict,
                        double bw, double ours_best)
{
    const char *py = getenv("BENCH_PYTHON");
    char cmd[1024], line[1024];
    FILE *f;
    double best = 0.0;
    int ran = 0;
    snprintf(cmd, sizeof cmd, "%s bench/torch_sdpa.py decode %lld %lld %lld %lld %d %d %d %d 2>&1", py && py[0] ? py : "python3",
             (long long)Hq, (long long)Hkv, (long long)ctx, (long long)D, threads, reps, warmup, evict);
    f = popen(cmd, "r");
    if (!f) { fprintf(T, "    PyTorch: skipped (cannot run python3)\n"); return -1; }
    while (fgets(line, sizeof line, f)) {
        char dt[32];
        int thr;
        double med, lo, hi, kvb;
        line[strcspn(line, "\n")] = 0;
        if (sscanf(line, "row,decode,torch,%31[^,],%d,%lf,%lf,%lf,%lf", dt, &thr, &med, &lo, &hi, &kvb) == 6) {
            fprintf(T, "    torch %-8s %9.1f us [%8.1f..%8.1f] %8.1f tok/s %7.1f GB/s %4.0f%% of bw\n", dt, med * 1e6, lo * 1e6,
                    hi * 1e6, 1.0 / med, kvb / med * 1e-9, 100.0 * kvb / med * 1e-9 / bw);
            best = 1.0 / med > best ? 1.0 / med : best;
            ran = 1;
        } else {
            fprintf(T, "    PyTorch: %s\n", line);
        }
    }
    pclose(f);
    if (!ran) return -1;
    fprintf(T, "    ours (best storage) / torch (best dtype) tokens/s: %.2fx\n", ours_best / best);
    return 0;
}

int main(int argc, char **argv)
{
    int quick = 0, csv = 0, spawn = 0, warm = 0, torch = 0, huge = 0, int8 = 0, threads = bc_cpus_online(), reps = 20, warmup = 3, a, bad = 0, ci, hi, si, r;
    int best_st = 1;
    double lo_bw;
    const int64_t ctxs[3] = {4096, 16384, 65536}, hkvs[2] = {32, 8}, Hq = 32, D = 128;
    double bw, res[3][2][N_ST][2]; /* [ctx][heads][storage]: tokens/s, bytes */
    sdpa_pool *pool = NULL;
    evict_ctx ev;
    for (a = 1; a < argc; ++a) {
        if (!strcmp(argv[a], "--quick")) quick = 1;
        else if (!strcmp(argv[a], "--spawn")) spawn = 1;
        else if (!strcmp(argv[a], "--warm")) warm = 1;
        else if (!strcmp(argv[a], "--csv")) csv = 1;
        else if (!strcmp(argv[a], "--torch")) torch = 1;
        else if (!strcmp(argv[a], "--hugepages")) huge = 1;
        else if (!strcmp(argv[a], "--int8")) int8 = 1;
        else if ((!strcmp(argv[a], "--threads") || !strcmp(argv[a], "--reps") || !strcmp(argv[a], "--warmup")) && a + 1 < argc) {
            char *end;
            long x = strtol(argv[a + 1], &end, 10);
            if (*end || x < 1 || x > 256) { fprintf(stderr, "bench_decode: bad value for %s\n", argv[a]); return 2; }
            if (!strcmp(argv[a], "--threads")) threads = (int)x;
            else if (!strcmp(argv[a], "--reps")) reps = (int)x;
            else warmup = (int)x;
            a++;
        } else if (!strcmp(argv[a], "--page") && a + 1 < argc) {
            char *end;
            long x = strtol(argv[a + 1], &end, 10);
            if (*end || x < 1 || x > 65536) { fprintf(stderr, "bench_decode: --page takes 1..65536 tokens\n"); return 2; }
            g_page = x;
            a++;
        } else {
            fprintf(stderr, "usage: bench_decode [--quick] [--csv] [--spawn] [--warm] [--torch] [--hugepages] [--int8] [--threads N] [--reps N]\n"
                            "                    [--warmup N] [--page N]\n");
            return 2;
        }
    }
    if (huge && !BC_HAVE_HUGE) {
        fprintf(stderr, "bench_decode: --hugepages needs Linux's madvise(MADV_HUGEPAGE)\n");
        return 2;
    }
    if (quick) reps = reps > 7 ? 7 : reps;
    if (warmup + reps > 256) { /* the rounds' arrays hold 256 */
        fprintf(stderr, "bench_decode: --warmup plus --reps must be at most 256\n");
        return 2;
    }
    T = csv ? stderr : stdout;
    memset(res, 0, sizeof res);
    bw = bc_measure_read_bw((size_t)512 << 20, threads, 5);
    if (!spawn && threads > 1 && sdpa_pool_create(threads, SDPA_POOL_PIN, &pool) != SDPA_OK) {
        fprintf(stderr, "bench_decode: could not create the thread pool\n");
        return 1;
    }
    if (pool) bc_pin_to_cpu(0); /* the caller is worker 0; the pool pinned the others to CPUs 1.. */
    memset(&ev, 0, sizeof ev);
    ev.c.n = warm ? 0 : ((size_t)512 << 20) / 4;
    ev.c.buf = ev.c.n ? (const uint32_t *)evbuf_new(ev.c.n) : NULL;
    for (r = 0, ev.streams = 1, lo_bw = 0.0; ev.c.n && r < 9; r++) { /* the eviction's streams: the fastest of 1, 2, 4 */
        int st = 1 << (r % 3);
        double g;
        ev.streams = st;
        g = evict_pass(&ev, threads, pool != NULL);
        if (g > lo_bw) lo_bw = g, best_st = st;
    }
    ev.streams = best_st;
    fprintf(T, "sdpa.h %s decode bench: path %s, %d threads (pinned, %s), read bandwidth %.1f GB/s on %d threads\n"
               "  (uint32 sums over 512 MiB, best of 5 passes with each of 1, 2, 4 streams per thread). One query\n"
               "  token, 32 heads, head_dim 128; median of %d rounds after %d warm-ups, a round one step of each\n"
               "  storage type in rotating order. GB/s = K/V bytes read (with I8 scales) / time; err = relative L2\n"
               "  of the output against the F32 cache's; %s\n",
            sdpa_version(), sdpa_path_name((sdpa_path)sdpa_path_in_use(NULL)), threads,
            threads == 1 ? "the calling thread" : spawn ? "started per call" : "an sdpa_pool", bw, threads, reps, warmup,
            warm ? "the cache stays warm between steps (--warm); \"of bw\" against the probe above"
                 : "before each step 512 MiB is read (L3 evicted),\n  and \"of bw\" is the median over rounds of the step's GB/s over that pass's read rate\n"
                   "  (the machine's bandwidth drifts); I8 / F16 the median of the rounds' ratios");
    if (ev.c.n) fprintf(T, "  eviction passes: %d stream%s per thread, %.1f GB/s at the start\n", best_st, best_st > 1 ? "s" : "", lo_bw);
    if (huge) fprintf(T, "  the cache's pages in transparent huge pages (--hugepages)\n");
    if (int8) fprintf(T, "  I8 and I8t in int8 mode: queries rounded to 8 bits (--int8, SDPA_PRECISION_INT8_QK)\n");
    if (g_page) fprintf(T, "  pages of %lld tokens (--page)\n", (long long)g_page);
    if (csv) printf("ctx,q_heads,kv_heads,storage,threads,median_s,min_s,max_s,tokens_per_s,kv_bytes,GBps,frac_bw,cache_bytes,rel_l2\n");
    for (ci = 0; ci < (quick ? 2 : 3); ci++)
        for (hi = 0; hi < 2; hi++) {
            int64_t ctx = ctxs[ci], Hkv = hkvs[hi], n = Hq * D;
            float *q = (float *)bc_xmalloc((size_t)n * 4), *ref = (float *)bc_xmalloc((size_t)n * 4);
            float *out = (float *)bc_xmalloc((size_t)n * 4);
            sdpa_kv_cache *cs[N_ST];
            bc_huge ha[N_ST];
            sdpa_tensor qt = {q, SDPA_F32, {1, Hq, 1, D}, {0}}, ot = {out, SDPA_F32, {1, Hq, 1, D}, {0}};
            sdpa_params p;
            static double t[N_ST][256], f[N_ST][256], ratio[2][256];
            double kvb[N_ST], bws[N_ST * 256];
            int nbw = 0, k;
            bc_fill_uniform(q, (size_t)n, 77, -1.0f, 1.0f);
            fprintf(T, "\n  ctx %6lld, %s (%lld kv heads)\n", (long long)ctx, Hkv == Hq ? "MHA" : "GQA 32/8", (long long)Hkv);
            memset(&p, 0, sizeof p);
            p.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
            p.num_threads = threads;
            p.parallel_for = threads == 1 ? NULL : spawn ? bc_pinned_parallel_for : sdpa_pool_parallel_for;
            p.parallel_user = pool;
            for (si = 0; si < N_ST; si++) {
                double esz = si == 0 ? 4 : (si >= 3 ? 1 : 2);
                memset(&ha[si], 0, sizeof ha[si]);
                cs[si] = make_cache(k_st[si], si == 4 ? SDPA_KV_KSCALE_TOKEN : SDPA_KV_KSCALE_CHANNEL, Hkv, D, ctx, huge ? &ha[si] : NULL);
                /* I8: two fp32 scales per token and head, keys per channel also head_dim per 64-token page */
                kvb[si] = (double)ctx * (double)Hkv * (2.0 * D * esz + (si >= 3 ? 8.0 : 0.0) + (si == 3 ? 4.0 * D / 64.0 : 0.0));
            }
            /* rounds: every storage type once, in an order that rotates, each
             * step after an eviction pass whose read rate is the step's
             * bandwidth sample (the machine's bandwidth drifts) */
            for (r = 0; r < warmup + reps && r < 256 && !bad; r++)
                for (k = 0; k < N_ST; k++) {
                    double g = evict_pass(&ev, threads, pool != NULL), t0, dt;
                    si = (r + k) % N_ST;
                    p.precision = int8 && si >= 3 ? SDPA_PRECISION_INT8_QK : SDPA_PRECISION_DEFAULT;
                    t0 = bc_now();
                    if (sdpa_kv_cache_attention(cs[si], NULL, &qt, &ot, &p) != SDPA_OK) { fprintf(T, "  step failed\n"); bad = 1; break; }
                    dt = bc_now() - t0;
                    if (r < warmup) continue;
                    t[si][r - warmup] = dt;
                    f[si][r - warmup] = g > 0.0 ? kvb[si] / dt * 1e-9 / g : 0.0;
                    if (g > 0.0) bws[nbw++] = g;
                }
            for (r = 0; r < reps; r++) ratio[0][r] = t[1][r] / t[3][r], ratio[1][r] = t[1][r] / t[4][r];
            for (si = 0; si < N_ST && !bad; si++) {
                double med = bc_median(t[si], reps), lo = 1e30, hi2 = 0, num = 0, den = 0, err, fb = ev.c.n ? bc_median(f[si], reps) : 0.0;
                p.precision = int8 && si >= 3 ? SDPA_PRECISION_INT8_QK : SDPA_PRECISION_DEFAULT;
                if (sdpa_kv_cache_attention(cs[si], NULL, &qt, &ot, &p) != SDPA_OK) { fprintf(T, "  step failed\n"); bad = 1; break; }
                for (r = 0; r < reps; r++) { lo = t[si][r] < lo ? t[si][r] : lo; hi2 = t[si][r] > hi2 ? t[si][r] : hi2; }
                if (si == 0) memcpy(ref, out, (size_t)n * 4);
                for (r = 0; r < n; r++) {
                    num += ((double)out[r] - ref[r]) * ((double)out[r] - ref[r]);
                    den += (double)ref[r] * ref[r];
                }
                err = sqrt(num / den);
                if (!(err <= (si == 0 ? 0.0 : si >= 3 ? 0.02 : 0.01))) { fprintf(T, "  CHECK FAILED: error %.2e\n", err); bad = 1; }
                res[ci][hi][si][0] = 1.0 / med;
                res[ci][hi][si][1] = (double)sdpa_kv_cache_bytes(cs[si]);
                fprintf(T, "    %-4s %9.1f us [%8.1f..%8.1f] %8.1f tok/s %7.1f GB/s %4.0f%% of bw  cache %7.1f MiB (%.3f of F32)  err %.1e\n",
                        k_st_name[si], med * 1e6, lo * 1e6, hi2 * 1e6, 1.0 / med, kvb[si] / med * 1e-9,
                        100.0 * (ev.c.n ? fb : kvb[si] / med * 1e-9 / bw), res[ci][hi][si][1] / 1048576.0,
                        res[ci][hi][si][1] / res[ci][hi][0][1], err);
                if (csv)
                    printf("%lld,%lld,%lld,%s,%d,%.6e,%.6e,%.6e,%.2f,%.0f,%.3f,%.4f,%.0f,%.3e\n", (long long)ctx, (long long)Hq,
                           (long long)Hkv, k_st_name[si], threads, med, lo, hi2, 1.0 / med, kvb[si], kvb[si] / med * 1e-9,
                           ev.c.n ? fb : kvb[si] / med * 1e-9 / bw, res[ci][hi][si][1], err);
            }
            if (!bad) {
                fprintf(T, "    I8 / F16 tokens/s: %.2fx (keys per token, I8t: %.2fx), medians of the rounds' ratios\n",
                        bc_median(ratio[0], reps), bc_median(ratio[1], reps));
                if (nbw) fprintf(T, "    read bandwidth of the eviction passes: median %.1f GB/s\n", bc_median(bws, nbw < 256 ? nbw : 256));
            }
            for (si = 0; si < N_ST; si++) {
                sdpa_kv_cache_destroy(cs[si]);
                bc_huge_close(&ha[si]);
            }
            if (torch && !bad) {
                double best = 0.0;
                for (si = 0; si < N_ST; si++) best = res[ci][hi][si][0] > best ? res[ci][hi][si][0] : best;
                if (torch_decode(Hq, Hkv, ctx, D, threads, reps, warmup, !warm, bw, best) != 0) torch = 0;
            }
            free(q), free(ref), free(out);
        }
    sdpa_pool_destroy(pool);
    free((void *)(uintptr_t)ev.c.buf);
    return bad;
}

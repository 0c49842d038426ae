/* bench/kv_hugepages.c - `make bench-hugepages`: does it pay to put the KV
 * cache in transparent huge pages?
 *
 *   Two F16 caches with the same contents, one on malloc's blocks (4 KiB
 *   pages where THP is "madvise" only) and one in a huge-page region
 *   (bc_huge, common.h) through the cache's allocator hook. Decode steps of
 *   the two alternate, with the last-level cache evicted (256 MiB read)
 *   before each, so a noisy neighbour hits both alike; after --warmup pairs,
 *   the median of --reps steps of each. One query token, 32 query heads,
 *   head_dim 128; per context, 32 and 8 kv heads; --threads pinned workers
 *   (an sdpa_pool). Prints the medians, their ratio and the huge pages the
 *   kernel actually gave (AnonHugePages).
 *
 *   bench_hugepages [--threads N] [--reps N] [--warmup N] [--ctx N]
 *
 * Linux only (elsewhere it says so and exits 0). Exit status 1 when a step
 * fails or the two caches' outputs differ.
 */
#define _GNU_SOURCE
#include "common.h"

#define SDPA_IMPLEMENTATION
#include "sdpa.h"

static long anon_huge_kb(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    long kb = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "AnonHugePages: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb;
}

static void evict(const uint32_t *b, size_t n, uint32_t *sink)
{
    uint32_t s = 0;
    size_t i;
    for (i = 0; i < n; i += 16) s += b[i]; /* one word per 64-byte line */
    *sink += s;
}

int main(int argc, char **argv)
{
    int threads = bc_cpus_online(), reps = 31, warmup = 4, a, r, v, hi, bad = 0;
    int64_t ctxs[2] = {4096, 16384}, nctx = 2, ci, Hq = 32, D = 128;
    const int64_t hkvs[2] = {32, 8};
    size_t evn = ((size_t)256 << 20) / 4, i;
    uint32_t *ev, sink = 0;
    sdpa_pool *pool = NULL;
    for (a = 1; a < argc; a += 2) { /* --name value pairs */
        char *end;
        long x;
        if (a + 1 >= argc) goto usage;
        x = strtol(argv[a + 1], &end, 10);
        if (*end || x < 1) goto usage;
        if (!strcmp(argv[a], "--threads") && x <= 256) threads = (int)x;
        else if (!strcmp(argv[a], "--reps") && x <= 1000) reps = (int)x;
        else if (!strcmp(argv[a], "--warmup") && x <= 1000) warmup = (int)x;
        else if (!strcmp(argv[a], "--ctx") && x <= ((long)1 << 24)) ctxs[0] = x, nctx = 1;
        else goto usage;
    }
    if (!BC_HAVE_HUGE) {
        printf("bench_hugepages: no madvise(MADV_HUGEPAGE) here (Linux only): nothing to compare\n");
        return 0;
    }
    ev = (uint32_t *)bc_xmalloc(evn * 4);
    for (i = 0; i < evn; i++) ev[i] = (uint32_t)i;
    if (threads > 1 && sdpa_pool_create(threads, SDPA_POOL_PIN, &pool) != SDPA_OK) {
        fprintf(stderr, "bench_hugepages: could not create the thread pool\n");
        return 1;
    }
    if (pool) bc_pin_to_cpu(0);
    printf("sdpa.h %s: F16 KV cache on malloc's blocks vs in transparent huge pages; decode steps of the two\n"
           "  alternating, 256 MiB read before each; one query token, 32 heads, head_dim 128, %d threads (pinned);\n"
           "  median of %d steps each after %d warm-up pairs\n",
           sdpa_version(), threads, reps, warmup);
    for (ci = 0; ci < nctx; ci++)
        for (hi = 0; hi < 2; hi++) {
            int64_t ctx = ctxs[ci], Hkv = hkvs[hi], chunk = 256, t0, n = Hq * D;
            float *kv = (float *)bc_xmalloc((size_t)(Hkv * chunk * D) * 4), *q = (float *)bc_xmalloc((size_t)n * 4);
            float *out[2];
            double *t[2], med[2];
            sdpa_kv_cache *c[2] = {NULL, NULL};
            sdpa_allocator al;
            bc_huge ha;
            long kb0 = anon_huge_kb(), kb1;
            memset(&ha, 0, sizeof ha);
            out[0] = (float *)bc_xmalloc((size_t)n * 4);
            out[1] = (float *)bc_xmalloc((size_t)n * 4);
            t[0] = (double *)bc_xmalloc((size_t)reps * sizeof(double));
            t[1] = (double *)bc_xmalloc((size_t)reps * sizeof(double));
            bc_fill_uniform(q, (size_t)n, 7, -1.0f, 1.0f);
            if (bc_huge_open(&ha, (size_t)(ctx * Hkv * 2 * D * 2) * 2 + ((size_t)64 << 20)) != 0) {
                perror("bench_hugepages: mmap");
                return 1;
            }
            al.alloc = bc_huge_alloc, al.free = bc_huge_free, al.user = &ha;
            for (v = 0; v < 2; v++) {
                sdpa_kv_cache_config cfg;
                memset(&cfg, 0, sizeof cfg);
                cfg.num_seqs = 1, cfg.kv_heads = Hkv, cfg.head_dim = D, cfg.dtype = SDPA_F16;
                cfg.allocator = v ? &al : NULL;
                if (sdpa_kv_cache_create(&cfg, &c[v]) != SDPA_OK) { fprintf(stderr, "bench_hugepages: create failed\n"); return 1; }
                for (t0 = 0; t0 < ctx; t0 += chunk) {
                    int64_t m = ctx - t0 < chunk ? ctx - t0 : chunk;
                    sdpa_tensor kt = {kv, SDPA_F32, {1, Hkv, m, D}, {0}};
                    bc_fill_uniform(kv, (size_t)(Hkv * m * D), 1000 + (uint64_t)t0, -1.0f, 1.0f);
                    if (sdpa_kv_cache_append(c[v], 0, &kt, &kt) != SDPA_OK) {
                        fprintf(stderr, "bench_hugepages: append failed (memory?)\n");
                        return 1;
                    }
                }
            }
            kb1 = anon_huge_kb();
            for (r = 0; r < warmup + reps; r++)
                for (v = 0; v < 2; v++) {
                    sdpa_tensor qt = {q, SDPA_F32, {1, Hq, 1, D}, {0}}, ot = {out[v], SDPA_F32, {1, Hq, 1, D}, {0}};
                    sdpa_params p;
                    double s;
                    memset(&p, 0, sizeof p);
                    p.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
                    p.num_threads = threads;
                    p.parallel_for = pool ? sdpa_pool_parallel_for : NULL;
                    p.parallel_user = pool;
                    evict(ev, evn, &sink);
                    s = bc_now();
                    if (sdpa_kv_cache_attention(c[v], NULL, &qt, &ot, &p) != SDPA_OK) {
                        printf("  step failed\n");
                        return 1;
                    }
                    s = bc_now() - s;
                    if (r >= warmup) t[v][r - warmup] = s;
                }
            if (memcmp(out[0], out[1], (size_t)n * 4) != 0) { /* same contents, same chunking: the same bits */
                printf("  CHECK FAILED: the two caches' outputs differ\n");
                bad = 1;
            }
            med[0] = bc_median(t[0], reps);
            med[1] = bc_median(t[1], reps);
            printf("  ctx %6lld, %2lld kv heads: malloc %8.1f us %6.1f GB/s | huge pages %8.1f us %6.1f GB/s | %.3fx"
                   " (AnonHugePages +%ld MiB)\n",
                   (long long)ctx, (long long)Hkv, med[0] * 1e6, (double)(ctx * Hkv * 2 * D * 2) / med[0] * 1e-9,
                   med[1] * 1e6, (double)(ctx * Hkv * 2 * D * 2) / med[1] * 1e-9, med[0] / med[1],
                   kb0 >= 0 && kb1 >= 0 ? (kb1 - kb0) / 1024 : -1L);
            sdpa_kv_cache_destroy(c[0]);
            sdpa_kv_cache_destroy(c[1]);
            bc_huge_close(&ha);
            free(kv), free(q), free(out[0]), free(out[1]), free(t[0]), free(t[1]);
        }
    sdpa_pool_destroy(pool);
    free(ev);
    return bad || sink == 0xFFFFFFFFu ? 1 : 0;
usage:
    fprintf(stderr, "usage: bench_hugepages [--threads N] [--reps N] [--warmup N] [--ctx N]\n");
    return 2;
}

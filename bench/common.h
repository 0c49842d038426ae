/* bench/common.h - helpers shared by examples/olmo_layer.c and bench/bench.c.
 *
 * Header-only C99, every function static inline (no unused-function
 * warnings). Not part of the library: it is the measuring kit around it.
 *   - a monotonic timer and peak-RSS readers (VmHWM/VmRSS, ru_maxrss)
 *   - a fixed-seed random fill
 *   - a float64 reference for one query row, to sample the error
 *   - the NAIVE attention that materialises the Lq x Lk score matrix, written
 *     with the same care as the tiled code (cache-blocked, loops the compiler
 *     vectorises), single-threaded or split over heads with pthreads
 *   - small thread helpers (pinning, a parallel run), the FMA-peak and
 *     read-bandwidth probes
 *   - a bump allocator over transparent huge pages, for allocator hooks
 *
 * Include it before anything else, after `#define _GNU_SOURCE` (for
 * clock_gettime, sched_setaffinity and getrusage under -std=c99).
 */
#ifndef SDPA_BENCH_COMMON_H
#define SDPA_BENCH_COMMON_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/time.h>
#if defined(__linux__)
#include <sched.h>
#endif

/* ------------------------------------------------------------------ time */

static inline double bc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline int bc_cpus_online(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

/* ---------------------------------------------------------------- memory */

/* A field of /proc/self/status in KiB ("VmHWM", "VmRSS"), -1 if unavailable. */
static inline int64_t bc_proc_status_kib(const char *field)
{
#if defined(__linux__)
    char line[256];
    size_t n = strlen(field);
    int64_t kib = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            kib = strtoll(line + n + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kib;
#else
    (void)field;
    return -1;
#endif
}

static inline int64_t bc_rss_kib(void) { return bc_proc_status_kib("VmRSS"); }
static inline int64_t bc_hwm_kib(void) { return bc_proc_status_kib("VmHWM"); }

/* getrusage's peak RSS in KiB (it never goes down). */
static inline int64_t bc_maxrss_kib(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
#if defined(__APPLE__)
    return (int64_t)ru.ru_maxrss / 1024;  /* bytes there */
#else
    return (int64_t)ru.ru_maxrss;
#endif
}

/* Reset VmHWM to the current RSS (Linux >= 4.0: "5" > /proc/self/clear_refs),
 * so the next reading is the peak of what follows. Returns 1 on success. */
static inline int bc_reset_hwm(void)
{
#if defined(__linux__)
    FILE *f = fopen("/proc/self/clear_refs", "w");
    int ok;
    if (!f) return 0;
    ok = fputs("5", f) >= 0;
    ok = (fclose(f) == 0) && ok;
    return ok;
#else
    return 0;
#endif
}

/* Peak-RSS probe around a piece of work: bc_peak_begin before, bc_peak_end
 * after; the growth is how far the peak rose above the RSS at the start. */
typedef struct bc_peak {
    int     reset_ok;   /* VmHWM was reset, so the growth is exact */
    int64_t rss0_kib;   /* RSS at the start */
    int64_t hwm0_kib;   /* VmHWM at the start (after the reset) */
    int64_t maxrss0_kib;
    int64_t hwm1_kib;
    int64_t maxrss1_kib;
} bc_peak;

static inline void bc_peak_begin(bc_peak *p)
{
    p->reset_ok = bc_reset_hwm();
    p->rss0_kib = bc_rss_kib();
    p->hwm0_kib = bc_hwm_kib();
    p->maxrss0_kib = bc_maxrss_kib();
    p->hwm1_kib = p->maxrss1_kib = -1;
}

static inline void bc_peak_end(bc_peak *p)
{
    p->hwm1_kib = bc_hwm_kib();
    p->maxrss1_kib = bc_maxrss_kib();
}

/* Growth of the peak in bytes: from VmHWM (exact when it was reset), else from
 * ru_maxrss, which only shows growth beyond the process's earlier peak. */
static inline int64_t bc_peak_growth_bytes(const bc_peak *p)
{
    if (p->hwm1_kib >= 0 && p->rss0_kib >= 0) {
        int64_t base = p->reset_ok ? p->rss0_kib : p->hwm0_kib;
        int64_t g = p->hwm1_kib - base;
        return (g < 0 ? 0 : g) * 1024;
    }
    if (p->maxrss1_kib >= 0 && p->maxrss0_kib >= 0)
        return (p->maxrss1_kib - p->maxrss0_kib) * 1024;
    return -1;
}

static inline void *bc_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory (%.1f MiB)\n", (double)n / 1048576.0);
        exit(2);
    }
    return p;
}

static inline const char *bc_fmt_bytes(double b, char *buf, size_t n)
{
    if (b < 0) snprintf(buf, n, "n/a");
    else if (b >= 1024.0 * 1048576.0) snprintf(buf, n, "%.2f GiB", b / (1024.0 * 1048576.0));
    else if (b >= 1048576.0) snprintf(buf, n, "%.1f MiB", b / 1048576.0);
    else if (b >= 1024.0) snprintf(buf, n, "%.1f KiB", b / 1024.0);
    else snprintf(buf, n, "%.0f B", b);
    return buf;
}

/* ---------------------------------------------------------------- random */

/* splitmix64: fixed seed, same numbers on every machine. */
static inline uint64_t bc_rand_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi). */
static inline void bc_fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi)
{
    uint64_t s = seed;
    size_t i;
    for (i = 0; i < n; ++i) {
        double u = (double)(bc_rand_u64(&s) >> 11) * (1.0 / 9007199254740992.0);
        x[i] = (float)(lo + (hi - lo) * u);
    }
}

/* --------------------------------------------------------------- threads */

#if defined(__linux__)
static inline cpu_set_t *bc__saved_affinity(int *have)
{
    static cpu_set_t saved;   /* the process's mask at first use */
    static int state = 0;     /* 0 unread, 1 read, -1 unavailable */
    if (state == 0)
        state = sched_getaffinity(0, sizeof saved, &saved) == 0 ? 1 : -1;
    *have = state == 1;
    return &saved;
}
#endif

/* Pin the calling thread to one CPU (Linux only; elsewhere a no-op).
 * Threads it creates afterwards inherit the pin: call bc_unpin() first. */
static inline int bc_pin_to_cpu(int cpu)
{
#if defined(__linux__)
    int have;
    cpu_set_t set;
    (void)bc__saved_affinity(&have);
    CPU_ZERO(&set);
    CPU_SET(cpu % bc_cpus_online(), &set);
    return sched_setaffinity(0, sizeof set, &set) == 0;
#else
    (void)cpu;
    return 0;
#endif
}

/* Restore the calling thread's CPU mask to the one the process started with. */
static inline void bc_unpin(void)
{
#if defined(__linux__)
    int have;
    cpu_set_t *saved = bc__saved_affinity(&have);
    if (have) sched_setaffinity(0, sizeof *saved, saved);
#endif
}

typedef void (*bc_worker_fn)(void *ctx, int worker, int n_workers);

typedef struct bc__thread_arg {
    bc_worker_fn fn;
    void        *ctx;
    int          worker, n_workers, pin;
} bc__thread_arg;

static inline void *bc__thread_main(void *p)
{
    bc__thread_arg *a = (bc__thread_arg *)p;
    if (a->pin) bc_pin_to_cpu(a->worker);
    a->fn(a->ctx, a->worker, a->n_workers);
    return NULL;
}

/* Run fn(ctx, w, n) for w in [0, n): w = 0 on the calling thread, the others
 * on fresh pthreads; pin = 1 pins worker w to CPU w (the caller too, restored
 * on return). */
static inline void bc_parallel_run(int n, int pin, bc_worker_fn fn, void *ctx)
{
    pthread_t tid[256];
    bc__thread_arg arg[256];
    int w, started = 0;
    if (n < 1) n = 1;
    if (n > 256) n = 256;
    for (w = 0; w < n; ++w) {
        arg[w].fn = fn; arg[w].ctx = ctx; arg[w].worker = w; arg[w].n_workers = n; arg[w].pin = pin;
    }
    for (w = 1; w < n; ++w) {
        if (pthread_create(&tid[w], NULL, bc__thread_main, &arg[w]) != 0) break;
        started = w;
    }
    if (pin) bc_pin_to_cpu(0);
    fn(ctx, 0, n);
    /* workers that failed to start: run their share here */
    for (w = started + 1; w < n; ++w) fn(ctx, w, n);
    for (w = 1; w <= started; ++w) pthread_join(tid[w], NULL);
    if (pin) bc_unpin();
}

/* A parallel_for hook (sdpa_parallel_for_fn's signature) on a pool whose
 * worker w is pinned to CPU w: without pinning, Linux may run two of the
 * library's threads on one vCPU of this shared machine and the 2-thread
 * timings swing by 1.5x. */
typedef void (*bc_task_fn)(void *ctx, int64_t task, int worker);

typedef struct bc__pinned_job {
    bc_task_fn      fn;
    void           *ctx;
    int64_t         n, next;
    pthread_mutex_t mu;
} bc__pinned_job;

static inline void bc__pinned_worker(void *p, int w, int nw)
{
    bc__pinned_job *j = (bc__pinned_job *)p;
    (void)nw;
    for (;;) {
        int64_t t;
        pthread_mutex_lock(&j->mu);
        t = j->next++;
        pthread_mutex_unlock(&j->mu);
        if (t >= j->n) break;
        j->fn(j->ctx, t, w);
    }
}

static inline int bc_pinned_parallel_for(void *user, int n_workers, int64_t n_tasks, bc_task_fn fn, void *ctx)
{
    bc__pinned_job j;
    (void)user;
    j.fn = fn; j.ctx = ctx; j.n = n_tasks; j.next = 0;
    if (pthread_mutex_init(&j.mu, NULL) != 0) return -1;
    bc_parallel_run(n_workers, 1, bc__pinned_worker, &j);
    pthread_mutex_destroy(&j.mu);
    return 0;
}

/* ------------------------------------------------------ float64 reference */

/* One query row against one head, in float64:
 *   q_row [D], k [Lk, D], v [Lk, Dv] (row strides ldk, ldv), keys 0..nvis-1
 *   visible (TOP_LEFT causal: nvis = min(i+1, Lk); none: nvis = Lk).
 *   out[d] = sum_j softmax_j(scale * q.k_j) v[j,d]; zeros if nvis == 0. */
static inline void bc_ref_row(const float *q_row, const float *k, int64_t ldk,
                              const float *v, int64_t ldv, int64_t nvis,
                              int64_t D, int64_t Dv, double scale, double *out)
{
    double m = -INFINITY, sum = 0.0;
    int64_t j, d;
    for (d = 0; d < Dv; ++d) out[d] = 0.0;
    if (nvis <= 0) return;
    for (j = 0; j < nvis; ++j) {          /* pass 1: the max */
        double s = 0.0;
        for (d = 0; d < D; ++d) s += (double)q_row[d] * (double)k[j * ldk + d];
        s *= scale;
        if (s > m) m = s;
    }
    for (j = 0; j < nvis; ++j) {          /* pass 2: exp, sum, weighted values */
        double s = 0.0, p;
        for (d = 0; d < D; ++d) s += (double)q_row[d] * (double)k[j * ldk + d];
        p = exp(s * scale - m);
        sum += p;
        for (d = 0; d < Dv; ++d) out[d] += p * (double)v[j * ldv + d];
    }
    for (d = 0; d < Dv; ++d) out[d] /= sum;
}

/* --------------------------------------------------- naive materialising */

/* Contiguous row-major q [B,H,Lq,D], k [B,Hkv,Lk,D], v [B,Hkv,Lk,Dv],
 * out [B,H,Lq,Dv]; causal 0 = none, 1 = TOP_LEFT (j <= i). */
typedef struct bc_attn_shape {
    int64_t B, H, Hkv, Lq, Lk, D, Dv;
    float   scale;
    int     causal;
} bc_attn_shape;

/* Visible (i, j) pairs per (b, h): the honest FLOP count is
 * (2*D + 2*Dv) * pairs * B * H  (one multiply-add = 2 FLOPs; softmax not counted). */
static inline double bc_visible_pairs(int64_t Lq, int64_t Lk, int causal)
{
    int64_t i;
    double n = 0.0;
    if (!causal) return (double)Lq * (double)Lk;
    for (i = 0; i < Lq; ++i) n += (double)(i + 1 < Lk ? i + 1 : Lk);
    return n;
}

static inline double bc_attn_flops(const bc_attn_shape *s)
{
    return (double)(2 * s->D + 2 * s->Dv) * bc_visible_pairs(s->Lq, s->Lk, s->causal)
           * (double)s->B * (double)s->H;
}

#define BC_NAIVE_JB 64  /* keys per block of the score GEMM: D x 64 floats of Kᵀ stay in L1/L2 */
#define BC_NAIVE_IB 4   /* query rows updated together: one Kᵀ load feeds 4 rows */

/* Bytes the naive path holds per head in flight: the score matrix plus Kᵀ. */
static inline double bc_naive_bytes_per_head(const bc_attn_shape *s)
{
    return (double)s->Lq * (double)s->Lk * 4.0 + (double)s->D * (double)s->Lk * 4.0;
}

/* The textbook algorithm for one (b, h), materialising S:
 *   Kt [D, Lk]  = Kᵀ (transposed once, so the GEMM's inner loop runs along keys)
 *   S  [Lq, Lk] = scale * Q Kᵀ, causal entries (j > i) are -inf
 *   P  = row softmax(S), in place (the masked entries become exactly 0)
 *   O  [Lq, Dv] = P V
 * Loops are i-k-j ordered with restrict pointers so they vectorise, S is
 * computed in key blocks of BC_NAIVE_JB so the Kᵀ block stays in cache while
 * every query row passes, and work in the causally masked upper triangle is
 * skipped (only written, as P's zeros). Cost 2*(D+Dv) FLOPs per visible pair plus
 * one expf per visible score; memory Lq*Lk*4 bytes for S. */
static inline void bc_naive_head(const float *restrict Q, const float *restrict K,
                                 const float *restrict V, float *restrict O,
                                 float *restrict S, float *restrict Kt,
                                 int64_t Lq, int64_t Lk, int64_t D, int64_t Dv,
                                 float scale, int causal)
{
    int64_t i, j, d, jb, i0;
    /* Kt = Kᵀ */
    for (j = 0; j < Lk; ++j)
        for (d = 0; d < D; ++d) Kt[d * Lk + j] = K[j * D + d];

    /* S = scale * Q Kᵀ, key block by key block */
    for (jb = 0; jb < Lk; jb += BC_NAIVE_JB) {
        int64_t jn = Lk - jb < BC_NAIVE_JB ? Lk - jb : BC_NAIVE_JB;
        int64_t istart = causal ? (jb / BC_NAIVE_IB) * BC_NAIVE_IB : 0;  /* rows i < jb see none of the block */
        for (i0 = istart; i0 < Lq; i0 += BC_NAIVE_IB) {
            int64_t ni = Lq - i0 < BC_NAIVE_IB ? Lq - i0 : BC_NAIVE_IB;
            float *restrict s0 = S + i0 * Lk + jb;
            if (ni == BC_NAIVE_IB) {
                float *restrict s1 = s0 + Lk, *restrict s2 = s1 + Lk, *restrict s3 = s2 + Lk;
                const float *q0 = Q + i0 * D, *q1 = q0 + D, *q2 = q1 + D, *q3 = q2 + D;
                for (j = 0; j < jn; ++j) s0[j] = s1[j] = s2[j] = s3[j] = 0.0f;
                for (d = 0; d < D; ++d) {
                    const float *restrict kt = Kt + d * Lk + jb;
                    float a0 = q0[d] * scale, a1 = q1[d] * scale, a2 = q2[d] * scale, a3 = q3[d] * scale;
                    for (j = 0; j < jn; ++j) {
                        float kv = kt[j];
                        s0[j] += a0 * kv; s1[j] += a1 * kv; s2[j] += a2 * kv; s3[j] += a3 * kv;
                    }
                }
            } else {
                int64_t r;
                for (r = 0; r < ni; ++r) {
                    float *restrict sr = s0 + r * Lk;
                    const float *qr = Q + (i0 + r) * D;
                    for (j = 0; j < jn; ++j) sr[j] = 0.0f;
                    for (d = 0; d < D; ++d) {
                        const float *restrict kt = Kt + d * Lk + jb;
                        float a = qr[d] * scale;
                        for (j = 0; j < jn; ++j) sr[j] += a * kt[j];
                    }
                }
            }
        }
    }

    /* mask, softmax: P = softmax(S) row by row, in place */
    for (i = 0; i < Lq; ++i) {
        float *restrict srow = S + i * Lk;
        int64_t nvis = causal ? (i + 1 < Lk ? i + 1 : Lk) : Lk;
        float m = -INFINITY, sum = 0.0f, inv;
        /* masked scores are -inf and their softmax is exactly 0: store P's 0
         * directly (the whole Lq x Lk matrix is still written, as the
         * materialising algorithm does) */
        for (j = nvis; j < Lk; ++j) srow[j] = 0.0f;
        for (j = 0; j < nvis; ++j) m = srow[j] > m ? srow[j] : m;
        for (j = 0; j < nvis; ++j) { srow[j] = expf(srow[j] - m); sum += srow[j]; }
        inv = nvis > 0 ? 1.0f / sum : 0.0f;
        for (j = 0; j < nvis; ++j) srow[j] *= inv;
    }

    /* O = P V, BC_NAIVE_IB rows at a time so each V row is loaded once per group */
    for (i0 = 0; i0 < Lq; i0 += BC_NAIVE_IB) {
        int64_t ni = Lq - i0 < BC_NAIVE_IB ? Lq - i0 : BC_NAIVE_IB;
        int64_t last = i0 + ni - 1;
        int64_t jend = causal ? (last + 1 < Lk ? last + 1 : Lk) : Lk;  /* P is 0 past each row's nvis */
        float *restrict o0 = O + i0 * Dv;
        for (d = 0; d < ni * Dv; ++d) o0[d] = 0.0f;
        if (ni == BC_NAIVE_IB) {
            float *restrict o1 = o0 + Dv, *restrict o2 = o1 + Dv, *restrict o3 = o2 + Dv;
            const float *p0 = S + i0 * Lk, *p1 = p0 + Lk, *p2 = p1 + Lk, *p3 = p2 + Lk;
            for (j = 0; j < jend; ++j) {
                const float *restrict vj = V + j * Dv;
                float w0 = p0[j], w1 = p1[j], w2 = p2[j], w3 = p3[j];
                for (d = 0; d < Dv; ++d) {
                    float x = vj[d];
                    o0[d] += w0 * x; o1[d] += w1 * x; o2[d] += w2 * x; o3[d] += w3 * x;
                }
            }
        } else {
            int64_t r;
            for (r = 0; r < ni; ++r) {
                const float *pr = S + (i0 + r) * Lk;
                float *restrict orow = o0 + r * Dv;
                int64_t nv = causal ? (i0 + r + 1 < Lk ? i0 + r + 1 : Lk) : Lk;
                for (j = 0; j < nv; ++j) {
                    const float *restrict vj = V + j * Dv;
                    float w = pr[j];
                    for (d = 0; d < Dv; ++d) orow[d] += w * vj[d];
                }
            }
        }
    }
}

/* Per-thread scratch of the naive path, kept across calls so that repeated
 * calls do not pay the page faults of a fresh 64 MiB score matrix each time
 * (that would flatter the tiled path). Zero-initialise; free with
 * bc_naive_ws_free. Worker w fills slot w on first use. */
typedef struct bc_naive_ws {
    float *S[256];
    float *Kt[256];
} bc_naive_ws;

static inline void bc_naive_ws_free(bc_naive_ws *ws)
{
    int w;
    for (w = 0; w < 256; ++w) { free(ws->S[w]); free(ws->Kt[w]); ws->S[w] = ws->Kt[w] = NULL; }
}

typedef struct bc__naive_ctx {
    const float *q, *k, *v;
    float *out;
    const bc_attn_shape *s;
    int64_t h_begin, h_end;   /* (b*H + h) range to do */
    bc_naive_ws *ws;          /* NULL: allocate and free per call */
    int failed;
} bc__naive_ctx;

static inline void bc__naive_worker(void *p, int w, int nw)
{
    bc__naive_ctx *c = (bc__naive_ctx *)p;
    const bc_attn_shape *s = c->s;
    int64_t bh;
    float *S = c->ws ? c->ws->S[w] : NULL, *Kt = c->ws ? c->ws->Kt[w] : NULL;
    if (!S) S = (float *)malloc((size_t)(s->Lq * s->Lk) * sizeof(float) + 4);
    if (!Kt) Kt = (float *)malloc((size_t)(s->D * s->Lk) * sizeof(float) + 4);
    if (c->ws) { c->ws->S[w] = S; c->ws->Kt[w] = Kt; }
    if (!S || !Kt) { c->failed = 1; return; }
    /* static split: head bh goes to worker (bh - begin) % nw; every head costs the same */
    for (bh = c->h_begin + w; bh < c->h_end; bh += nw) {
        int64_t b = bh / s->H, h = bh % s->H, g = h / (s->H / s->Hkv);
        const float *Q = c->q + (size_t)(bh * s->Lq * s->D);
        const float *K = c->k + (size_t)((b * s->Hkv + g) * s->Lk * s->D);
        const float *V = c->v + (size_t)((b * s->Hkv + g) * s->Lk * s->Dv);
        float *O = c->out + (size_t)(bh * s->Lq * s->Dv);
        bc_naive_head(Q, K, V, O, S, Kt, s->Lq, s->Lk, s->D, s->Dv, s->scale, s->causal);
    }
    if (!c->ws) { free(S); free(Kt); }
}

/* Naive attention over the (b, h) pairs [bh_begin, bh_end) of the whole
 * problem (pass 0, B*H for all), split over n_threads pthreads by head
 * (pin = 1: worker w pinned to CPU w). Every thread holds one score matrix,
 * from ws if given (the shape must not grow between calls sharing a ws).
 * Returns 0, or -1 if out of memory. */
static inline int bc_naive_attention(const float *q, const float *k, const float *v, float *out,
                                     const bc_attn_shape *s, int64_t bh_begin, int64_t bh_end,
                                     int n_threads, int pin, bc_naive_ws *ws)
{
    bc__naive_ctx c;
    int64_t nbh = bh_end - bh_begin;
    c.q = q; c.k = k; c.v = v; c.out = out; c.s = s; c.ws = ws;
    c.h_begin = bh_begin; c.h_end = bh_end; c.failed = 0;
    if (n_threads > nbh) n_threads = (int)(nbh > 0 ? nbh : 1);
    bc_parallel_run(n_threads, pin, bc__naive_worker, &c);
    return c.failed ? -1 : 0;
}

/* ---------------------------------------------------------- error check */

typedef struct bc_err {
    double max_abs;      /* max |out - ref| */
    double max_ratio;    /* max |out - ref| / (atol + rtol |ref|); > 1 = out of tolerance */
    int64_t rows, bad, nonfinite;
} bc_err;

static inline void bc_err_init(bc_err *e) { memset(e, 0, sizeof *e); }

static inline void bc_err_add(bc_err *e, const float *got, const double *ref, int64_t n,
                              double atol, double rtol)
{
    int64_t d;
    e->rows++;
    for (d = 0; d < n; ++d) {
        double g = (double)got[d], diff, r;
        if (!(g == g) || g - g != 0.0) { e->nonfinite++; e->bad++; e->max_abs = INFINITY; e->max_ratio = INFINITY; continue; }
        diff = fabs(g - ref[d]);
        r = diff / (atol + rtol * fabs(ref[d]));
        if (diff > e->max_abs) e->max_abs = diff;
        if (r > e->max_ratio) e->max_ratio = r;
        if (r > 1.0) e->bad++;
    }
}

/* ----------------------------------------------------- hardware probes */

#define BC_PEAK_VECS 14  /* independent 4-float chains: > 2 pipes x 6 cycles of mul+add latency,
                            and 14 + 2 constants fit the 16 SSE registers */

typedef struct bc__peak_ctx {
    int64_t iters;
    double  sink[256];
    double  secs[256];
} bc__peak_ctx;

/* FMA-peak probe: 14 x 4 independent float chains acc = acc * m + a. With
 * this build's flags (no -march) it compiles to SSE mulps+addps (or a real
 * FMA where the flags allow); each chain step is counted as 2 FLOPs. */
static inline void bc__peak_worker(void *p, int w, int nw)
{
    bc__peak_ctx *c = (bc__peak_ctx *)p;
    float acc[BC_PEAK_VECS * 4];
    volatile float vm = 0.999999f, va = 1e-7f;
    float m = vm, a = va;
    int64_t it;
    int l;
    double t0;
    (void)nw;
    for (l = 0; l < BC_PEAK_VECS * 4; ++l) acc[l] = (float)l * 1e-3f;
    t0 = bc_now();
    for (it = 0; it < c->iters; ++it)
        for (l = 0; l < BC_PEAK_VECS * 4; ++l) acc[l] = acc[l] * m + a;
    c->secs[w] = bc_now() - t0;
    c->sink[w] = 0.0;
    for (l = 0; l < BC_PEAK_VECS * 4; ++l) c->sink[w] += acc[l];
}

/* GFLOP/s of the probe on n_threads pinned threads (best of `tries`). */
/* Runs a peak probe's worker on n_threads pinned threads, tries times; the
 * best GFLOP/s, each try timed by its slowest thread. flops_per_iter: the
 * FLOPs one thread does per iteration of its loop. */
static inline double bc__best_peak(bc_worker_fn fn, double flops_per_iter, int n_threads, int64_t iters, int tries)
{
    bc__peak_ctx c;
    double best = 0.0;
    int t, w;
    if (n_threads > 256) n_threads = 256;
    c.iters = iters;
    for (t = 0; t < tries; ++t) {
        double slow = 0.0, g;
        bc_parallel_run(n_threads, 1, fn, &c);
        for (w = 0; w < n_threads; ++w) if (c.secs[w] > slow) slow = c.secs[w];
        g = flops_per_iter * (double)iters * n_threads / slow * 1e-9;
        if (g > best) best = g;
    }
    return best;
}

static inline double bc_measure_peak_gflops(int n_threads, int64_t iters, int tries)
{
    return bc__best_peak(bc__peak_worker, 2.0 * BC_PEAK_VECS * 4.0, n_threads, iters, tries);
}

/* The same probe built for AVX2+FMA through a target attribute, run only when
 * the CPU has them: what a run-time-dispatched kernel could reach, beside the
 * peak of this build's flags. 12 chains x 8 lanes of fmaf (2 pipes x 4
 * cycles of latency need 8). Returns 0 where
 * unavailable (not x86-64, not GCC/clang, or the CPU lacks AVX2/FMA). */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define BC_HAVE_AVX2FMA_PROBE 1
__attribute__((target("avx2,fma")))
static void bc__peak_worker_avx2fma(void *p, int w, int nw)
{
    bc__peak_ctx *c = (bc__peak_ctx *)p;
    float acc[12 * 8];
    volatile float vm = 0.999999f, va = 1e-7f;
    float m = vm, a = va;
    int64_t it;
    int l;
    double t0;
    (void)nw;
    for (l = 0; l < 12 * 8; ++l) acc[l] = (float)l * 1e-3f;
    t0 = bc_now();
    for (it = 0; it < c->iters; ++it)
        for (l = 0; l < 12 * 8; ++l) acc[l] = fmaf(acc[l], m, a);
    c->secs[w] = bc_now() - t0;
    c->sink[w] = 0.0;
    for (l = 0; l < 12 * 8; ++l) c->sink[w] += acc[l];
}
#endif

static inline double bc_measure_peak_gflops_avx2fma(int n_threads, int64_t iters, int tries)
{
#if defined(BC_HAVE_AVX2FMA_PROBE)
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return 0.0;
    return bc__best_peak(bc__peak_worker_avx2fma, 2.0 * 12.0 * 8.0, n_threads, iters, tries);
#else
    (void)n_threads; (void)iters; (void)tries;
    return 0.0;
#endif
}

/* The zmm FMA peak, the avx512 path's instructions: 16 independent chains
 * of 16-lane vfmadd (2 pipes x 4 cycles of latency need 8), intrinsics
 * under a target attribute, run only when the CPU and OS have AVX-512F.
 * Returns 0 where unavailable. */
#if (defined(__GNUC__) && __GNUC__ >= 9 || defined(__clang__)) && defined(__x86_64__)
#define BC_HAVE_ZMM_PROBE 1
#include <immintrin.h>
__attribute__((target("avx512f")))
static void bc__peak_worker_zmm(void *p, int w, int nw)
{
    bc__peak_ctx *c = (bc__peak_ctx *)p;
    __m512 acc[16], m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f), sum = _mm512_setzero_ps();
    float lane[16];
    int64_t it;
    int l;
    double t0;
    (void)nw;
    for (l = 0; l < 16; ++l) acc[l] = _mm512_set1_ps((float)l * 1e-3f);
    t0 = bc_now();
    for (it = 0; it < c->iters; ++it) {
#if defined(__clang__)
#pragma unroll
#else
#pragma GCC unroll 16
#endif
        for (l = 0; l < 16; ++l) acc[l] = _mm512_fmadd_ps(acc[l], m, a);
    }
    c->secs[w] = bc_now() - t0;
    for (l = 0; l < 16; ++l) sum = _mm512_add_ps(sum, acc[l]);
    _mm512_storeu_ps(lane, sum);
    c->sink[w] = 0.0;
    for (l = 0; l < 16; ++l) c->sink[w] += lane[l];
}
#endif

static inline double bc_measure_peak_gflops_zmm(int n_threads, int64_t iters, int tries)
{
#if defined(BC_HAVE_ZMM_PROBE)
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f")) return 0.0;
    return bc__best_peak(bc__peak_worker_zmm, 2.0 * 16.0 * 16.0, n_threads, iters, tries);
#else
    (void)n_threads; (void)iters; (void)tries;
    return 0.0;
#endif
}

typedef struct bc__bw_ctx {
    const uint32_t *buf;
    size_t n;            /* words in all */
    uint32_t sink[256];
    int ready;            /* the clock starts when every worker is ready */
    int streams;          /* 1, 2 or 4 per worker */
    double t0, t1[256];
} bc__bw_ctx;

/* A worker reads its share as 1, 2 or 4 streams at once (its halves or
 * quarters, side by side: decode reads K and V blocks as two), timed from
 * a barrier that all workers pass (thread start-up is not counted: it is
 * slow in the GPU machine's sandbox). */
static inline void bc__bw_worker(void *p, int w, int nw)
{
    bc__bw_ctx *c = (bc__bw_ctx *)p;
    size_t chunk = c->n / (size_t)nw, q = chunk / 4, h = chunk / 2, i;
    const uint32_t *restrict b = c->buf + chunk * (size_t)w;
    uint32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    double give_up = bc_now() + 2.0; /* a worker that never started (its share runs later) */
    __atomic_add_fetch(&c->ready, 1, __ATOMIC_ACQ_REL);
    while (__atomic_load_n(&c->ready, __ATOMIC_ACQUIRE) < nw && bc_now() < give_up) {
    }
    if (w == 0) c->t0 = bc_now();
    if (c->streams == 4) {
        for (i = 0; i < q; ++i) {   /* integer sums: vectorise, no FP reassociation needed */
            s0 += b[i];
            s1 += b[q + i];
            s2 += b[2 * q + i];
            s3 += b[3 * q + i];
        }
        for (i = 4 * q; i < chunk; ++i) s0 += b[i];
    } else if (c->streams == 2) {
        for (i = 0; i < h; ++i) {
            s0 += b[i];
            s1 += b[h + i];
        }
        for (i = 2 * h; i < chunk; ++i) s0 += b[i];
    } else {
        for (i = 0; i < chunk; ++i) s0 += b[i];
    }
    c->sink[w] = s0 + s1 + s2 + s3;
    c->t1[w] = bc_now();
}

/* Read bandwidth in GB/s (1e9 B/s) over a `bytes` buffer, n_threads pinned
 * threads: the best of `tries` passes with each of 1, 2 and 4 streams per
 * thread (the first touch is not timed), so that the ceiling reported is
 * the most this probe could read, whichever access pattern that took. */
static inline double bc_measure_read_bw(size_t bytes, int n_threads, int tries)
{
    bc__bw_ctx c;
    double best = 0.0;
    uint32_t *buf;
    size_t i;
    int t;
    c.n = bytes / 4;
    buf = (uint32_t *)bc_xmalloc(c.n * 4);
    for (i = 0; i < c.n; ++i) buf[i] = (uint32_t)i;
    c.buf = buf;
    if (n_threads < 1) n_threads = 1;
    if (n_threads > 256) n_threads = 256;
    for (t = 0; t < 3 * tries; ++t) {
        double g, end = 0.0;
        int w;
        c.ready = 0;
        c.streams = 1 << (t % 3);
        bc_parallel_run(n_threads, 1, bc__bw_worker, &c);
        for (w = 0; w < n_threads; ++w) end = c.t1[w] > end ? c.t1[w] : end;
        g = (double)(c.n / (size_t)n_threads * (size_t)n_threads) * 4.0 / (end - c.t0) * 1e-9;
        if (g > best) best = g;
    }
    free(buf);
    return best;
}

/* Median of n doubles (sorts a copy). */
static inline double bc_median(const double *x, int n)
{
    double tmp[256];
    int i, j;
    if (n <= 0) return 0.0;
    if (n > 256) n = 256;
    for (i = 0; i < n; ++i) tmp[i] = x[i];
    for (i = 1; i < n; ++i)
        for (j = i; j > 0 && tmp[j - 1] > tmp[j]; --j) { double t = tmp[j]; tmp[j] = tmp[j - 1]; tmp[j - 1] = t; }
    return n % 2 ? tmp[n / 2] : 0.5 * (tmp[n / 2 - 1] + tmp[n / 2]);
}

/* A region of transparent huge pages (Linux: mmap + madvise(MADV_HUGEPAGE)),
 * 2 MiB aligned, handed out by a bump allocator whose frees are no-ops; the
 * whole region goes back at bc_huge_close. bc_huge_alloc / bc_huge_free
 * have the signatures of sdpa_allocator's hooks (user = the bc_huge). */
typedef struct bc_huge { char *map, *base; size_t map_len, cap, used; } bc_huge;
#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__linux__) && defined(MADV_HUGEPAGE)
#define BC_HAVE_HUGE 1
static inline void *bc_huge_alloc(void *user, size_t n, size_t align)
{
    bc_huge *a = (bc_huge *)user;
    size_t m = (align < 64 ? 64 : align) - 1, at = (a->used + m) & ~m;
    if (at > a->cap || n > a->cap - at) return NULL;
    a->used = at + n;
    return a->base + at;
}
static inline void bc_huge_free(void *user, void *p, size_t n) { (void)user, (void)p, (void)n; }
/* Reserves cap bytes (address space only, MAP_NORESERVE); 0 or -1. */
static inline int bc_huge_open(bc_huge *a, size_t cap)
{
    const size_t two = (size_t)2 << 20;
    void *m = mmap(NULL, cap + two, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return -1;
    a->map = (char *)m;
    a->map_len = cap + two;
    a->base = (char *)(((uintptr_t)m + two - 1) & ~(uintptr_t)(two - 1));
    a->cap = cap;
    a->used = 0;
    if (madvise(a->base, cap, MADV_HUGEPAGE) != 0) perror("bench: madvise(MADV_HUGEPAGE)");
    return 0;
}
static inline void bc_huge_close(bc_huge *a)
{
    if (a->map) munmap(a->map, a->map_len);
    memset(a, 0, sizeof *a);
}
#else
#define BC_HAVE_HUGE 0
static inline void *bc_huge_alloc(void *user, size_t n, size_t align) { (void)user, (void)n, (void)align; return NULL; }
static inline void bc_huge_free(void *user, void *p, size_t n) { (void)user, (void)p, (void)n; }
static inline int bc_huge_open(bc_huge *a, size_t cap) { (void)a, (void)cap; return -1; }
static inline void bc_huge_close(bc_huge *a) { (void)a; }
#endif

#endif /* SDPA_BENCH_COMMON_H */

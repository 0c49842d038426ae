/* bench/bench.c - `make bench`: check, then time, then print a table.
 *
 *   1. checks: tiled and naive against the float64 reference on small shapes
 *      (every row), and the tiled result bitwise equal for 1 and N threads;
 *      any failure stops here with exit status 1
 *   2. peak memory: causal Lq = Lk = 16384, D = 32, one head, in forked
 *      children (forked first, while this process is small; they check
 *      their own output), against the 64 MiB bound (the score matrix would
 *      be 1 GiB)
 *   3. the machine: FMA peak for this build's flags and read bandwidth
 *   4. tiled vs naive at Lq = Lk = 4096, D = 128, causal and not, 1 thread
 *      (pinned) and all threads: median of the repeats after discarded
 *      warm-ups, min..max spread, GFLOP/s, fraction of peak, naive/tiled
 *   5. each code path at Lq = Lk = 2048, D = 128 (6. with --scaling: threads)
 *   7. built with -DBENCH_SLEEF and bench/sleef_copy.c (make bench SLEEF=1):
 *      per SIMD path, the built-in exp against SLEEF's (a second copy of the
 *      library built with SDPA_USE_SLEEF), section 5's problem on 1 thread,
 *      the two taking turns run by run
 *
 *   bench [--quick] [--csv] [--threads N] [--warmup N] [--reps N] [--help]
 *
 * Exit status: 0 ok; 1 a correctness check failed or the memory bound was
 * broken; 2 bad usage or out of memory. The speed comparison is reported
 * (MET / NOT MET) but does not set the status: timings on a shared machine
 * are noise-prone, the memory bound is not.
 */
#define _GNU_SOURCE
#include "common.h"

#define SDPA_IMPLEMENTATION
#include "sdpa.h"
#ifdef BENCH_SLEEF
#include "sleef_copy.h"
#endif

#include <sys/wait.h>

typedef struct bopts {
    int quick, csv, threads, warmup, reps, scaling;
    /* the trade-off map (bench/map.h) */
    int suite, parity, pareto, plan_eval, memory, no_torch, failed, sweep_reps, cfgs, sweep_budget;
    const char *lens, *ctxs, *outdir, *json;
} bopts;

static bopts O;
static FILE *T;   /* the human-readable text: stdout, or stderr with --csv */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: bench [options]\n"
        "  --quick      smaller sizes and fewer repeats (a smoke run)\n"
        "  --csv        results as CSV on stdout (the text goes to stderr)\n"
        "  --threads N  threads for the all-threads runs (default: the CPUs online)\n"
        "  --warmup N   discarded warm-up runs per case (default 3, at least 1)\n"
        "  --reps N     timed runs per case (default 5; --quick 3)\n"
        "  --scaling    add section 6: thread scaling 1, 2, 4, ... up to --threads per SIMD\n"
        "               path and dtype, on one OLMo-2-7B causal prefill layer\n"
        "  --help       this text\n"
        "the trade-off map (any of these runs section 1's checks, the machine's peaks, then only them):\n"
        "  --suite      OLMo-2 prefill and decode per path, dtype, int8 mode, KV storage, thread count,\n"
        "               with the naive (portable C, OpenBLAS if found) and PyTorch baselines\n"
        "  --parity     every path x dtype x mode and KV storage (and PyTorch) on one problem: all pairs\n"
        "  --memory     bytes against sequence length: naive, tiled, each KV storage type\n"
        "  --pareto     every configuration of the planner's space measured; the Pareto frontier\n"
        "  --plan-eval  the planner's picks against exhaustive search\n"
        "  --map        all five\n"
        "  --lens L,..  prefill lengths of --suite (default 512,1024; 512..4096 with >= 8 threads)\n"
        "  --ctxs C,..  decode contexts of --suite (default 4096,16384; up to 65536 with >= 8 threads)\n"
        "  --configs N  1: OLMo-2-7B only; 2: also 64 heads; 3: 64 heads only (default: 2 with >= 8 threads)\n"
        "  --sweep-reps N  timed runs per configuration in sweeps (default 3)\n"
        "  --sweep-budget S  start no further sweep problem after S seconds (the first two always run)\n"
        "  --no-torch   leave PyTorch out (default: bench/torch_sdpa.py through $BENCH_PYTHON or python3)\n"
        "  --out DIR    also write DIR/<table>.csv (for make plots)\n"
        "  --json FILE  also write every row as JSON\n");
}

static void csv_row(const char *section, const char *name, const char *impl, int threads,
                    int64_t heads, int64_t L, int64_t D, int causal, double med, double lo,
                    double hi, double gflops, double frac_peak, double ratio, double bytes, double err)
{
    if (!O.csv) return;
    printf("%s,%s,%s,%d,%lld,%lld,%lld,%d,%.6f,%.6f,%.6f,%.3f,%.4f,%.4f,%.0f,%.3e\n", section, name, impl,
           threads, (long long)heads, (long long)L, (long long)D, causal, med, lo, hi, gflops,
           frac_peak, ratio, bytes, err);
}

/* ------------------------------------------------------------ problems */

typedef struct problem {
    bc_attn_shape s;
    float *q, *k, *v, *out, *naive_out;
    uint16_t *qb, *kb, *vb; /* BF16 copies when the inputs are BF16 */
    sdpa_tensor tq, tk, tv, to;
    sdpa_params p;
    char errbuf[256];
} problem;

static void problem_make(problem *pr, int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D,
                         int causal, uint64_t seed, int with_naive)
{
    size_t nq, nk, nv, no;
    memset(pr, 0, sizeof *pr);
    pr->s.B = B; pr->s.H = H; pr->s.Hkv = H; pr->s.Lq = Lq; pr->s.Lk = Lk; pr->s.D = D; pr->s.Dv = D;
    pr->s.scale = (float)(1.0 / sqrt((double)D));
    pr->s.causal = causal;
    nq = (size_t)(B * H * Lq * D); nk = (size_t)(B * H * Lk * D); nv = nk; no = nq;
    pr->q = (float *)bc_xmalloc(nq * 4); pr->k = (float *)bc_xmalloc(nk * 4);
    pr->v = (float *)bc_xmalloc(nv * 4); pr->out = (float *)bc_xmalloc(no * 4);
    pr->naive_out = with_naive ? (float *)bc_xmalloc(no * 4) : NULL;
    bc_fill_uniform(pr->q, nq, seed * 3 + 1, -1.0f, 1.0f);
    bc_fill_uniform(pr->k, nk, seed * 3 + 2, -1.0f, 1.0f);
    bc_fill_uniform(pr->v, nv, seed * 3 + 3, -1.0f, 1.0f);
    memset(pr->out, 0xff, no * 4);          /* NaN poison */
    if (pr->naive_out) memset(pr->naive_out, 0xff, no * 4);
    pr->tq.data = pr->q; pr->tq.dtype = SDPA_F32;
    pr->tq.shape[0] = B; pr->tq.shape[1] = H; pr->tq.shape[2] = Lq; pr->tq.shape[3] = D;
    pr->tk = pr->tq; pr->tk.data = pr->k; pr->tk.shape[2] = Lk;
    pr->tv = pr->tk; pr->tv.data = pr->v;
    pr->to = pr->tq; pr->to.data = pr->out;
    pr->p.causal = causal ? SDPA_CAUSAL_TOP_LEFT : SDPA_CAUSAL_NONE;
    pr->p.errbuf = pr->errbuf; pr->p.errbuf_size = sizeof pr->errbuf;
}

static void problem_free(problem *pr)
{
    free(pr->q); free(pr->k); free(pr->v); free(pr->out); free(pr->naive_out);
    free(pr->qb); free(pr->kb); free(pr->vb);
}

/* Makes q, k and v BF16 (rounded copies of the F32 inputs); out stays F32. */
static void problem_bf16(problem *pr)
{
    size_t nq = (size_t)(pr->s.B * pr->s.H * pr->s.Lq * pr->s.D), nk = (size_t)(pr->s.B * pr->s.Hkv * pr->s.Lk * pr->s.D), i;
    pr->qb = (uint16_t *)bc_xmalloc(nq * 2); pr->kb = (uint16_t *)bc_xmalloc(nk * 2); pr->vb = (uint16_t *)bc_xmalloc(nk * 2);
    for (i = 0; i < nq; ++i) pr->qb[i] = sdpa_f32_to_bf16(pr->q[i]);
    for (i = 0; i < nk; ++i) { pr->kb[i] = sdpa_f32_to_bf16(pr->k[i]); pr->vb[i] = sdpa_f32_to_bf16(pr->v[i]); }
    pr->tq.data = pr->qb; pr->tk.data = pr->kb; pr->tv.data = pr->vb;
    pr->tq.dtype = pr->tk.dtype = pr->tv.dtype = SDPA_BF16;
}

static double zmm1, zmmN; /* the zmm FMA peak, 0 without AVX-512 */

/* The peak of the instructions a path runs: this build's (SSE2 on x86-64
 * with default flags) for scalar, the ymm FMA probe for avx2, the zmm one
 * for avx512 and amx (whose F32 work is AVX-512). */
static double path_peak(int path, int one, double peak1, double peakN, double fma1, double fmaN)
{
    if ((path == SDPA_PATH_AVX512 || path == SDPA_PATH_AMX) && zmm1 > 0.0) return one ? zmm1 : zmmN;
    if (path == SDPA_PATH_AVX2 && fma1 > 0.0) return one ? fma1 : fmaN;
    return one ? peak1 : peakN;
}

/* The same peak probed again on one thread, now: the GPU machine's host is
 * a shared VM whose one-thread speed swings by up to 2x from minute to
 * minute, so a rate is also set against the peak measured beside it. */
static double path_peak_now(int path, double fma1, int64_t iters)
{
    if ((path == SDPA_PATH_AVX512 || path == SDPA_PATH_AMX) && zmm1 > 0.0) return bc_measure_peak_gflops_zmm(1, iters, 3);
    if (path == SDPA_PATH_AVX2 && fma1 > 0.0) return bc_measure_peak_gflops_avx2fma(1, iters, 3);
    return bc_measure_peak_gflops(1, iters, 3);
}

static int tiled_run(problem *pr, int threads)
{
    int rc;
    pr->p.num_threads = threads;
    pr->p.parallel_for = threads > 1 ? bc_pinned_parallel_for : NULL;
    rc = sdpa_attention(&pr->tq, &pr->tk, &pr->tv, &pr->to, &pr->p);
    if (rc != SDPA_OK) {
        fprintf(stderr, "bench: sdpa_attention failed: %s (%s)\n", sdpa_strerror(rc), pr->errbuf);
        exit(1);
    }
    return rc;
}

/* Compare `got` with the float64 reference on rows (b*H+h, i) chosen by
 * stride `every` (1 = all rows; the last row of each head always). */
static bc_err check_out(const problem *pr, const float *got, int64_t every)
{
    const bc_attn_shape *s = &pr->s;
    double *ref = (double *)bc_xmalloc((size_t)s->Dv * sizeof(double));
    int64_t bh, i;
    bc_err e;
    bc_err_init(&e);
    if (every < 1) every = 1;
    for (bh = 0; bh < s->B * s->H; ++bh) {
        for (i = 0; i < s->Lq; i = (i + every < s->Lq - 1) ? i + every : s->Lq - 1) {
            int64_t nvis = s->causal ? (i + 1 < s->Lk ? i + 1 : s->Lk) : s->Lk;
            bc_ref_row(pr->q + (size_t)((bh * s->Lq + i) * s->D), pr->k + (size_t)(bh * s->Lk * s->D), s->D,
                       pr->v + (size_t)(bh * s->Lk * s->Dv), s->Dv, nvis, s->D, s->Dv, s->scale, ref);
            bc_err_add(&e, got + (size_t)((bh * s->Lq + i) * s->Dv), ref, s->Dv, 2e-5, 1e-4);
            if (i == s->Lq - 1) break;
        }
    }
    free(ref);
    return e;
}

/* ------------------------------------------------------------- 1. checks */

static int run_checks(int nthreads)
{
    static const struct { int64_t B, H, Lq, Lk, D; int causal; } cases[] = {
        { 1, 2,   67,   67, 128, 1 }, { 1, 2,   67,   67, 128, 0 },
        { 2, 3,  130,  130,  64, 1 }, { 1, 1,    1,    1, 128, 1 },
        { 1, 2,  100,  300,  40, 0 }, { 1, 2,  300,  100,  72, 1 },
        { 1, 4, 1024, 1024, 128, 1 },
    };
    int c, fails = 0;
    fprintf(T, "== 1. checks: tiled (1 and %d threads) and naive vs float64, every row; F32 tolerance 2e-5 + 1e-4|ref|\n",
            nthreads);
    for (c = 0; c < (int)(sizeof cases / sizeof cases[0]); ++c) {
        problem pr;
        bc_err et, en;
        float *one;
        size_t no;
        int same;
        problem_make(&pr, cases[c].B, cases[c].H, cases[c].Lq, cases[c].Lk, cases[c].D, cases[c].causal,
                     100 + (uint64_t)c, 1);
        no = (size_t)(pr.s.B * pr.s.H * pr.s.Lq * pr.s.Dv);
        tiled_run(&pr, 1);
        one = (float *)bc_xmalloc(no * 4);
        memcpy(one, pr.out, no * 4);
        memset(pr.out, 0xff, no * 4);
        tiled_run(&pr, nthreads);
        same = memcmp(one, pr.out, no * 4) == 0;
        free(one);
        if (bc_naive_attention(pr.q, pr.k, pr.v, pr.naive_out, &pr.s, 0, pr.s.B * pr.s.H, nthreads, 0, NULL)) {
            fprintf(stderr, "bench: out of memory\n");
            exit(2);
        }
        et = check_out(&pr, pr.out, 1);
        en = check_out(&pr, pr.naive_out, 1);
        fprintf(T, "  B%lld H%lld Lq%-5lld Lk%-5lld D%-4lld %-8s tiled err %.2e (%.3f of tol)  naive err %.2e (%.3f)  1 vs %d threads %s  %s\n",
                (long long)pr.s.B, (long long)pr.s.H, (long long)pr.s.Lq, (long long)pr.s.Lk, (long long)pr.s.D,
                pr.s.causal ? "causal" : "full", et.max_abs, et.max_ratio, en.max_abs, en.max_ratio,
                nthreads, same ? "bitwise equal" : "DIFFER", (et.bad || en.bad || !same) ? "FAIL" : "ok");
        if (et.bad || en.bad || !same) fails++;
        csv_row("check", same ? "f64_bitwise_equal" : "f64_threads_differ", "tiled", nthreads, pr.s.H, pr.s.Lq,
                pr.s.D, pr.s.causal, 0, 0, 0, 0, 0, 0, 0, et.max_abs);
        csv_row("check", "f64", "naive", nthreads, pr.s.H, pr.s.Lq, pr.s.D, pr.s.causal, 0, 0, 0, 0, 0, 0, 0,
                en.max_abs);
        problem_free(&pr);
    }
    return fails;
}

/* ------------------------------------------------------------ 3. machine */

static const char *build_flags(void)
{
#if defined(__AVX512F__)
    return "AVX-512 (FMA)";
#elif defined(__FMA__)
    return "AVX2+FMA";
#elif defined(__AVX__)
    return "AVX mul+add";
#elif defined(__SSE2__)
    return "SSE2 mulps+addps, no FMA";
#elif defined(__ARM_NEON)
    return "NEON";
#else
    return "scalar";
#endif
}

/* ----------------------------------------------------- 4. tiled vs naive */

typedef struct timing { double med, lo, hi; } timing;

static timing summarise(const double *t, int n)
{
    timing r;
    int i;
    r.med = bc_median(t, n);
    r.lo = r.hi = t[0];
    for (i = 1; i < n; ++i) { if (t[i] < r.lo) r.lo = t[i]; if (t[i] > r.hi) r.hi = t[i]; }
    return r;
}

static timing time_tiled(problem *pr, int threads)
{
    double t[256] = { 0 };
    int r;
    for (r = 0; r < O.warmup; ++r) tiled_run(pr, threads);
    for (r = 0; r < O.reps; ++r) {
        double t0 = bc_now();
        tiled_run(pr, threads);
        t[r] = bc_now() - t0;
    }
    return summarise(t, O.reps);
}

static timing time_naive(problem *pr, int threads, bc_naive_ws *ws)
{
    double t[256] = { 0 };
    int r;
    int64_t nbh = pr->s.B * pr->s.H;
    for (r = 0; r < O.warmup; ++r)
        if (bc_naive_attention(pr->q, pr->k, pr->v, pr->naive_out, &pr->s, 0, nbh, threads, threads > 1, ws))
            { fprintf(stderr, "bench: out of memory\n"); exit(2); }
    for (r = 0; r < O.reps; ++r) {
        double t0 = bc_now();
        bc_naive_attention(pr->q, pr->k, pr->v, pr->naive_out, &pr->s, 0, nbh, threads, threads > 1, ws);
        t[r] = bc_now() - t0;
    }
    return summarise(t, O.reps);
}

#ifdef BENCH_SLEEF
/* One 1-thread run through this copy of the library (built-in exp) or the
 * SDPA_USE_SLEEF copy; returns its time. */
static double exp_run(problem *pr, int sleef)
{
    double t0 = bc_now();
    int rc;
    pr->p.num_threads = 1;
    pr->p.parallel_for = NULL;
    rc = sleef ? bsl_attention(&pr->tq, &pr->tk, &pr->tv, &pr->to, &pr->p)
               : sdpa_attention(&pr->tq, &pr->tk, &pr->tv, &pr->to, &pr->p);
    if (rc != SDPA_OK) {
        fprintf(stderr, "bench: sdpa_attention%s failed: %s (%s)\n", sleef ? " (SLEEF copy)" : "", sdpa_strerror(rc),
                pr->errbuf);
        exit(1);
    }
    return bc_now() - t0;
}
#endif

/* One configuration; returns naive/tiled (median over median). Sets *bad on a
 * failed accuracy check of the timed outputs. */
static double compare_case(int64_t H, int64_t L, int64_t D, int causal, int threads, double peak_tiled,
                           double peak, int *bad)
{
    problem pr;
    bc_naive_ws ws;
    timing tt, tn;
    double flops, gt, gn, ratio;
    bc_err et, en;
    int pinned = 0;
    memset(&ws, 0, sizeof ws);
    problem_make(&pr, 1, H, L, L, D, causal, 7 + (uint64_t)causal, 1);
    flops = bc_attn_flops(&pr.s);
    if (threads == 1) pinned = bc_pin_to_cpu(0);   /* one core, no migration */
    tt = time_tiled(&pr, threads);
    tn = time_naive(&pr, threads, &ws);
    if (pinned) bc_unpin();
    bc_naive_ws_free(&ws);
    et = check_out(&pr, pr.out, L / 16 > 0 ? L / 16 : 1);
    en = check_out(&pr, pr.naive_out, L / 16 > 0 ? L / 16 : 1);
    if (et.bad || en.bad) *bad = 1;
    gt = flops / tt.med * 1e-9;
    gn = flops / tn.med * 1e-9;
    ratio = tn.med / tt.med;
    fprintf(T, "  %-6s %2d%s %5lld  tiled %8.3f s [%7.3f..%7.3f] %6.2f GF/s %4.0f%%   naive %8.3f s [%7.3f..%7.3f] %6.2f GF/s %4.0f%%   %5.2fx%s\n",
            causal ? "causal" : "full", threads, pinned ? "p" : " ", (long long)H,
            tt.med, tt.lo, tt.hi, gt, 100.0 * gt / peak_tiled, tn.med, tn.lo, tn.hi, gn, 100.0 * gn / peak, ratio,
            (et.bad || en.bad) ? "  CHECK FAILED" : "");
    fflush(T);
    csv_row("speed", causal ? "causal" : "full", "tiled", threads, H, L, D, causal, tt.med, tt.lo, tt.hi, gt,
            gt / peak_tiled, ratio, 0, et.max_abs);
    csv_row("speed", causal ? "causal" : "full", "naive", threads, H, L, D, causal, tn.med, tn.lo, tn.hi, gn,
            gn / peak, ratio, 0, en.max_abs);
    problem_free(&pr);
    return ratio;
}

/* ------------------------------------------------------ 2. peak memory */

typedef struct mem_result {
    int     ok, reset_ok, check_bad;
    int64_t growth_hwm, growth_maxrss, rss_before, workspace;
    double  secs, max_err;
} mem_result;

/* In a forked child: allocate and fill the inputs, note the memory, run
 * once, note it again. The parent's heap and the other cases' buffers stay
 * out of the measurement. */
static mem_result peak_memory_case(int64_t L, int64_t D, int threads)
{
    mem_result r;
    int fd[2];
    pid_t pid;
    memset(&r, 0, sizeof r);
    fflush(stdout); fflush(stderr);
    if (pipe(fd) != 0) return r;
    pid = fork();
    if (pid < 0) { close(fd[0]); close(fd[1]); return r; }
    if (pid == 0) {
        problem pr;
        bc_peak pk;
        bc_err e;
        ssize_t wr;
        double t0;
        close(fd[0]);
        problem_make(&pr, 1, 1, L, L, D, 1, 99, 0);   /* nothing freed before the measurement */
        pr.p.num_threads = threads;
        r.workspace = sdpa_workspace_size(&pr.tq, &pr.tk, &pr.tv, &pr.to, &pr.p);
        bc_peak_begin(&pk);
        t0 = bc_now();
        tiled_run(&pr, threads);
        r.secs = bc_now() - t0;
        bc_peak_end(&pk);
        r.reset_ok = pk.reset_ok;
        r.rss_before = pk.rss0_kib * 1024;
        r.growth_hwm = bc_peak_growth_bytes(&pk);
        r.growth_maxrss = (pk.maxrss1_kib - pk.maxrss0_kib) * 1024;
        e = check_out(&pr, pr.out, L / 64);
        r.check_bad = e.bad > 0 || e.rows == 0;
        r.max_err = e.max_abs;
        r.ok = 1;
        wr = write(fd[1], &r, sizeof r);
        _exit(wr == (ssize_t)sizeof r ? 0 : 3);
    }
    close(fd[1]);
    if (read(fd[0], &r, sizeof r) != (ssize_t)sizeof r) memset(&r, 0, sizeof r);
    close(fd[0]);
    waitpid(pid, NULL, 0);
    return r;
}

#include "map.h"

int main(int argc, char **argv)
{
    int a, ncpu = bc_cpus_online(), fails, bad = 0, mem_fail = 0, i, n_mem;
    mem_result mem[2];
    int64_t L_speed, L_mem = 16384, D_mem = 32, H_all;
    double peak1, peakN, fma1, fmaN, bw1, bwN, worst = 1e30, t_start = bc_now();
    int in_use;
    int64_t L_path;
    char b1[32], b2[32], b3[32];

    O.quick = 0; O.csv = 0; O.threads = ncpu; O.warmup = 3; O.reps = -1; O.sweep_reps = 3;
    for (a = 1; a < argc; ++a) {
        const char *arg = argv[a];
        if (!strcmp(arg, "--quick")) O.quick = 1;
        else if (!strcmp(arg, "--csv")) O.csv = 1;
        else if (!strcmp(arg, "--scaling")) O.scaling = 1;
        else if (!strcmp(arg, "--suite")) O.suite = 1;
        else if (!strcmp(arg, "--parity")) O.parity = 1;
        else if (!strcmp(arg, "--pareto")) O.pareto = 1;
        else if (!strcmp(arg, "--plan-eval")) O.plan_eval = 1;
        else if (!strcmp(arg, "--memory")) O.memory = 1;
        else if (!strcmp(arg, "--map")) O.suite = O.parity = O.pareto = O.plan_eval = O.memory = 1;
        else if (!strcmp(arg, "--no-torch")) O.no_torch = 1;
        else if ((!strcmp(arg, "--lens") || !strcmp(arg, "--ctxs") || !strcmp(arg, "--out") || !strcmp(arg, "--json")) &&
                 a + 1 < argc) {
            const char *v = argv[++a];
            if (!strcmp(arg, "--lens")) O.lens = v;
            else if (!strcmp(arg, "--ctxs")) O.ctxs = v;
            else if (!strcmp(arg, "--out")) O.outdir = v;
            else O.json = v;
        } else if ((!strcmp(arg, "--configs") || !strcmp(arg, "--sweep-reps") || !strcmp(arg, "--sweep-budget")) &&
                   a + 1 < argc) {
            char *end;
            long x = strtol(argv[++a], &end, 10);
            if (*end || x < 1 || x > 100000) { fprintf(stderr, "bench: bad value for %s\n", arg); usage(stderr); return 2; }
            if (!strcmp(arg, "--configs")) O.cfgs = (int)(x > 64 ? 64 : x);
            else if (!strcmp(arg, "--sweep-budget")) O.sweep_budget = (int)x;
            else O.sweep_reps = (int)(x > 64 ? 64 : x);
        }
        else if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) { usage(stdout); return 0; }
        else if ((!strcmp(arg, "--threads") || !strcmp(arg, "--warmup") || !strcmp(arg, "--reps")) && a + 1 < argc) {
            char *end;
            long x = strtol(argv[++a], &end, 10);
            if (*end || x < 1 || x > 256) { fprintf(stderr, "bench: bad value for %s\n", arg); usage(stderr); return 2; }
            if (!strcmp(arg, "--threads")) O.threads = (int)x;
            else if (!strcmp(arg, "--warmup")) O.warmup = (int)x;
            else O.reps = (int)x;
        } else { fprintf(stderr, "bench: bad argument '%s'\n", arg); usage(stderr); return 2; }
    }
    if (O.reps < 0) O.reps = O.quick ? 3 : 5;
    T = O.csv ? stderr : stdout;
    setvbuf(stdout, NULL, _IOLBF, 0);
    L_speed = O.quick ? 1024 : 4096;
    L_path = O.quick ? 512 : 2048;
    H_all = O.threads < 2 ? 2 : O.threads;
    if (O.csv)
        printf("section,case,impl,threads,heads,L,D,causal,median_s,min_s,max_s,gflops,frac_peak,naive_over_tiled,peak_bytes,max_abs_err\n");

    fprintf(T, "sdpa.h %s benchmark: %d CPUs online, all-threads runs use %d%s\n", sdpa_version(), ncpu,
            O.threads, O.quick ? "  [--quick]" : "");

    if (O.suite || O.parity || O.pareto || O.plan_eval || O.memory) { /* the trade-off map: checks, then only it */
        int rc;
        const char *slash = strrchr(argv[0], '/');
        const char *env = getenv("BENCH_SDPA_LIB");
        if (env && env[0]) snprintf(torch_lib, sizeof torch_lib, "%s", env);
        else snprintf(torch_lib, sizeof torch_lib, "%.*slibsdpa_bench.so", slash ? (int)(slash - argv[0] + 1) : 0, argv[0]);
        fails = run_checks(O.threads);
        if (fails) {
            fprintf(T, "FAIL: %d check(s) failed; not timing a wrong result\n", fails);
            return 1;
        }
        mt_open(O.outdir, O.json);
        rc = run_map();
        mt_close();
        fprintf(T, "\n== %s (%.0f s)\n", rc ? "FAIL: an accuracy check of a timed output failed" : "done", bc_now() - t_start);
        return rc ? 1 : 0;
    }

    /* the peak-memory children go first, while this process holds nothing
     * big: a child inherits its parent's resident pages and ru_maxrss */
    if (O.quick) L_mem = 8192;
    n_mem = O.threads == 1 ? 1 : 2;
    for (i = 0; i < n_mem; ++i) mem[i] = peak_memory_case(L_mem, D_mem, i == 0 ? 1 : O.threads);

    fails = run_checks(O.threads);
    if (fails) {
        fprintf(T, "FAIL: %d check(s) failed; not timing a wrong result\n", fails);
        return 1;
    }

    fprintf(T, "\n== 2. peak memory: causal Lq = Lk = %lld, D = %lld, one head, F32, in a forked child\n"
               "  growth = VmHWM after the call - RSS before it (inputs %s already resident);\n"
               "  the children were forked at start-up, while this process was small; the kernel\n"
               "  updates RSS counters in batches (~64 pages a thread), so growths under ~1 MiB are\n"
               "  approximate, and ru_maxrss (not resettable) shows only growth past earlier peaks\n",
            (long long)L_mem, (long long)D_mem,
            bc_fmt_bytes(4.0 * (double)L_mem * (double)D_mem * 4.0, b1, sizeof b1));
    for (i = 0; i < n_mem; ++i) {
        int thr = i == 0 ? 1 : O.threads;
        mem_result r = mem[i];
        double flops = 4.0 * (double)D_mem * bc_visible_pairs(L_mem, L_mem, 1);
        if (!r.ok) { fprintf(T, "  %d threads: the child failed\n", thr); mem_fail = 1; continue; }
        fprintf(T, "  %2d threads: %.2f s, %.2f GF/s; peak RSS growth %s (ru_maxrss: %s), workspace %s;"
                   " err %.2e %s%s\n", thr, r.secs, flops / r.secs * 1e-9,
                bc_fmt_bytes((double)r.growth_hwm, b1, sizeof b1), bc_fmt_bytes((double)r.growth_maxrss, b2, sizeof b2),
                bc_fmt_bytes((double)r.workspace, b3, sizeof b3), r.max_err, r.check_bad ? "CHECK FAILED" : "ok",
                r.reset_ok ? "" : " (VmHWM not resettable: approximate)");
        if (r.check_bad) bad = 1;
        if (r.growth_hwm < 0 || r.growth_hwm >= (int64_t)64 << 20 || r.growth_maxrss >= (int64_t)64 << 20)
            mem_fail = 1;
        csv_row("memory", "causal_peak_rss", "tiled", thr, 1, L_mem, D_mem, 1, r.secs, r.secs, r.secs,
                flops / r.secs * 1e-9, 0, 0, (double)r.growth_hwm, r.max_err);
    }
    fprintf(T, "  naive, not run at this size: one %lld x %lld F32 score matrix = %s per head\n",
            (long long)L_mem, (long long)L_mem, bc_fmt_bytes(4.0 * (double)L_mem * (double)L_mem, b1, sizeof b1));
    csv_row("memory", "causal_peak_rss", "naive_would_need", 1, 1, L_mem, D_mem, 1, 0, 0, 0, 0, 0, 0,
            4.0 * (double)L_mem * (double)L_mem, 0);

    fprintf(T, "\n== 3. machine (this build's flags: %s)\n", build_flags());
    peak1 = bc_measure_peak_gflops(1, O.quick ? 5000000 : 20000000, 3);
    peakN = bc_measure_peak_gflops(O.threads, O.quick ? 5000000 : 20000000, 3);
    fma1 = bc_measure_peak_gflops_avx2fma(1, O.quick ? 5000000 : 20000000, 3);
    fmaN = bc_measure_peak_gflops_avx2fma(O.threads, O.quick ? 5000000 : 20000000, 3);
    zmm1 = bc_measure_peak_gflops_zmm(1, O.quick ? 5000000 : 20000000, 3);
    zmmN = bc_measure_peak_gflops_zmm(O.threads, O.quick ? 5000000 : 20000000, 3);
    bw1 = bc_measure_read_bw((size_t)(O.quick ? 64 : 256) << 20, 1, 3);
    bwN = bc_measure_read_bw((size_t)(O.quick ? 64 : 256) << 20, O.threads, 3);
    fprintf(T, "  peak for this build's flags: %.1f GFLOP/s on 1 core, %.1f on %d threads\n"
               "    (56 independent float chains acc = acc*m + a, 2 FLOPs per step, pinned threads)\n"
               "  read bandwidth: %.1f GB/s on 1 core, %.1f on %d threads (uint32 sum over %d MiB)\n",
            peak1, peakN, O.threads, bw1, bwN, O.threads, O.quick ? 64 : 256);
    if (fma1 > 0.0)
        fprintf(T, "  ymm FMA peak, the avx2 path's instructions (same probe, target attribute, run-time\n"
                   "    checked): %.1f GFLOP/s on 1 core, %.1f on %d threads\n", fma1, fmaN, O.threads);
    if (zmm1 > 0.0)
        fprintf(T, "  zmm FMA peak, the avx512 path's instructions (16 chains of 16-lane vfmadd, target\n"
                   "    attribute, run-time checked): %.1f GFLOP/s on 1 core, %.1f on %d threads\n", zmm1, zmmN, O.threads);
    fprintf(T, "  attention at L=%lld, D=128 does ~%.0f FLOPs per byte of q/k/v/out (machine balance\n"
               "    %.1f FLOP/B): compute-bound, so GFLOP/s against peak is the figure that matters\n",
            (long long)L_speed, 4.0 * 128.0 * (double)L_speed * (double)L_speed / (4.0 * 4.0 * (double)L_speed * 128.0),
            peakN / bwN);
    csv_row("machine", "fma_peak_gflops", "probe", 1, 0, 0, 0, 0, 0, 0, 0, peak1, 1, 0, 0, 0);
    csv_row("machine", "fma_peak_gflops", "probe", O.threads, 0, 0, 0, 0, 0, 0, 0, peakN, 1, 0, 0, 0);
    csv_row("machine", "avx2fma_peak_gflops", "probe", 1, 0, 0, 0, 0, 0, 0, 0, fma1, 0, 0, 0, 0);
    csv_row("machine", "avx2fma_peak_gflops", "probe", O.threads, 0, 0, 0, 0, 0, 0, 0, fmaN, 0, 0, 0, 0);
    csv_row("machine", "zmmfma_peak_gflops", "probe", 1, 0, 0, 0, 0, 0, 0, 0, zmm1, 0, 0, 0, 0);
    csv_row("machine", "zmmfma_peak_gflops", "probe", O.threads, 0, 0, 0, 0, 0, 0, 0, zmmN, 0, 0, 0, 0);
    csv_row("machine", "read_bw_GBps", "probe", 1, 0, 0, 0, 0, 0, 0, 0, bw1, 0, 0, 0, 0);
    csv_row("machine", "read_bw_GBps", "probe", O.threads, 0, 0, 0, 0, 0, 0, 0, bwN, 0, 0, 0, 0);

    in_use = sdpa_path_in_use(NULL);
    fprintf(T, "\n== 4. tiled (path %s) vs naive (materialised scores, portable C): Lq = Lk = %lld, D = 128,\n"
               "  F32, batch 1; %d warm-up runs discarded, median of %d [min..max]; GF/s = (2D + 2Dv) per\n"
               "  visible pair (causal: j <= i only), %% of the peak of the instructions each uses, same thread\n"
               "  count; last column naive/tiled\n"
               "  (>1: tiled faster). p = pinned to CPU 0; with more threads, worker w is pinned to CPU w\n"
               "  (sdpa through its parallel_for hook on a pinned pool, the naive on pinned pthreads)\n"
               "  %-6s %3s %5s\n", in_use > 0 ? sdpa_path_name((sdpa_path)in_use) : "?", (long long)L_speed,
               O.warmup, O.reps, "mask", "thr", "heads");
    for (i = 0; i < 4; ++i) {
        int causal = i % 2 == 0, thr = i < 2 ? 1 : O.threads;
        double ratio;
        if (i >= 2 && O.threads == 1) break;
        ratio = compare_case(thr == 1 ? 2 : H_all, L_speed, 128, causal, thr,
                             path_peak(in_use, thr == 1, peak1, peakN, fma1, fmaN), thr == 1 ? peak1 : peakN, &bad);
        if (ratio < worst) worst = ratio;
    }

    fprintf(T, "\n== 5. code paths: Lq = Lk = %lld, D = 128, not causal, %d heads, out F32; median of %d\n"
               "  %% of the peak of the path's F32 instructions (scalar: this build's SSE2 mulps+addps;\n"
               "  avx2: ymm FMA; avx512 and amx: zmm FMA); speedup over the scalar path at the same\n"
               "  dtype and thread count. BF16 rows: inputs rounded to BF16 (amx: AMX-BF16 tiles;\n"
               "  other paths widen BF16 to F32), with their speed against the same path's F32 row\n"
               "  and their largest difference from the F32 output. I8QK rows: F32 inputs, int8 mode\n"
               "  (Q.K^T on int8, K smoothed; the pre-pass over K timed with it), their speed against the\n"
               "  path's F32 row and their relative L2 difference from the F32 output. BF16PV rows (amx):\n"
               "  BF16 inputs with SDPA_PRECISION_BF16_PV (P enters P.V as one bf16), against the F32 and\n"
               "  the BF16 rows. I8PV rows (avx512, amx): F32 inputs, SDPA_PRECISION_INT8_QK_BF16_PV (int8\n"
               "  Q.K^T, P and V each as one bf16 in P.V where the CPU has AVX512-BF16), against the F32\n"
               "  and I8QK rows. One-thread rows also give %% of the same peak probed on their CPU just\n"
               "  before and after them (the larger of the two; this VM's speed drifts between minutes)\n",
            (long long)L_path, (int)H_all, O.reps);
    {
        static const char *const dt_names[5] = {"F32", "BF16", "I8QK", "BF16PV", "I8PV"},
                                 *const dt_csv[5] = {"tiled", "tiled_bf16", "tiled_i8qk", "tiled_bf16pv", "tiled_i8qk_bf16pv"};
        double scalar_med[5][2] = { { 0, 0 }, { 0, 0 }, { 0, 0 }, { 0, 0 }, { 0, 0 } }, f32_med[SDPA_PATH_NEON + 1][2];
        double bf16_med[SDPA_PATH_NEON + 1][2], i8_med[SDPA_PATH_NEON + 1][2];
        float *f32_out = NULL;
        int path, t, dt;
        memset(f32_med, 0, sizeof f32_med);
        memset(bf16_med, 0, sizeof bf16_med);
        memset(i8_med, 0, sizeof i8_med);
        for (dt = 0; dt < 5; ++dt)
            for (path = SDPA_PATH_SCALAR; sdpa_path_name((sdpa_path)path); ++path) {
                if (!sdpa_path_supported((sdpa_path)path)) continue;
                if (dt == 3 && path != SDPA_PATH_AMX) continue; /* elsewhere the same as BF16 */
                if (dt == 4 && path != SDPA_PATH_AVX512 && path != SDPA_PATH_AMX) continue; /* elsewhere I8QK */
                for (t = 0; t < 2; ++t) {
                    int thr = t == 0 ? 1 : O.threads, pinned = 0;
                    problem pr;
                    timing tt;
                    double g, pk = path_peak(path, thr == 1, peak1, peakN, fma1, fmaN), diff = 0.0, num = 0.0, den = 0.0;
                    double pk_now = 0.0, it_now = O.quick ? 5000000 : 20000000;
                    size_t n, e;
                    if (t == 1 && O.threads == 1) break;
                    problem_make(&pr, 1, H_all, L_path, L_path, 128, 0, 11, 0);
                    n = (size_t)(H_all * L_path * 128);
                    if (dt == 1 || dt == 3) problem_bf16(&pr);
                    if (dt == 2) pr.p.precision = SDPA_PRECISION_INT8_QK;
                    if (dt == 3) pr.p.precision = SDPA_PRECISION_BF16_PV;
                    if (dt == 4) pr.p.precision = SDPA_PRECISION_INT8_QK_BF16_PV;
                    pr.p.path = (sdpa_path)path;
                    if (thr == 1) pk_now = path_peak_now(path, fma1, (int64_t)it_now);
                    if (thr == 1) pinned = bc_pin_to_cpu(0);
                    tt = time_tiled(&pr, thr);
                    if (pinned) bc_unpin();
                    if (thr == 1) {
                        double again = path_peak_now(path, fma1, (int64_t)it_now);
                        if (again > pk_now) pk_now = again;
                    }
                    if (path == SDPA_PATH_SCALAR) scalar_med[dt][t] = tt.med;
                    if (!dt) f32_med[path][t] = tt.med;
                    if (dt == 1) bf16_med[path][t] = tt.med;
                    if (dt == 2) i8_med[path][t] = tt.med;
                    if (!dt && !f32_out) { f32_out = (float *)bc_xmalloc(n * 4); memcpy(f32_out, pr.out, n * 4); }
                    for (e = 0; e < n; ++e) {
                        double d = fabs((double)pr.out[e] - (double)f32_out[e]);
                        if (!(d <= diff)) diff = d; /* NaN sticks */
                        num += d * d;
                        den += (double)f32_out[e] * (double)f32_out[e];
                    }
                    if (dt == 2 || dt == 4) diff = diff == diff ? sqrt(num / (den > 0.0 ? den : 1.0)) : diff;
                    g = bc_attn_flops(&pr.s) / tt.med * 1e-9;
                    fprintf(T, "  %-6s %-7s %2d%s  %8.3f s [%7.3f..%7.3f] %7.2f GF/s %4.0f%% of %6.1f", dt_names[dt],
                            sdpa_path_name((sdpa_path)path), thr, pinned ? "p" : " ", tt.med, tt.lo, tt.hi, g,
                            100.0 * g / pk, pk);
                    if (pk_now > 0.0) fprintf(T, " (%3.0f%% of %5.1f beside it)", 100.0 * g / pk_now, pk_now);
                    if (scalar_med[dt][t] > 0.0) fprintf(T, " %6.2fx scalar", scalar_med[dt][t] / tt.med);
                    if (dt == 1) fprintf(T, " %5.2fx F32, max diff %.1e", f32_med[path][t] / tt.med, diff);
                    if (dt == 3)
                        fprintf(T, " %5.2fx F32, %5.2fx BF16, max diff %.1e", f32_med[path][t] / tt.med,
                                bf16_med[path][t] / tt.med, diff);
                    if (dt == 2) fprintf(T, " %5.2fx F32, rel L2 %.1e", f32_med[path][t] / tt.med, diff);
                    else if (dt == 4)
                        fprintf(T, " %5.2fx F32, %5.2fx I8QK, rel L2 %.1e", f32_med[path][t] / tt.med,
                                i8_med[path][t] > 0.0 ? i8_med[path][t] / tt.med : 0.0, diff);
                    else if (dt == 0 && diff > 1e-4) fprintf(T, " max diff %.1e", diff);
                    fprintf(T, "\n");
                    if (!(diff <= (dt == 1 || dt == 3 ? 0.05 : dt == 2 || dt == 4 ? 0.02 : 1e-4))) { fprintf(T, "  CHECK FAILED: output differs from the first F32 run\n"); bad = 1; }
                    csv_row("paths", sdpa_path_name((sdpa_path)path), dt_csv[dt], thr, H_all, L_path,
                            128, 0, tt.med, tt.lo, tt.hi, g, g / pk, scalar_med[dt][t] > 0.0 ? scalar_med[dt][t] / tt.med : 0.0,
                            0, diff);
                    problem_free(&pr);
                }
            }
        free(f32_out);
    }

    if (O.scaling) {
        int64_t Ls = O.quick ? 512 : 2048, Hs = 32;
        int path, dt, thr;
        fprintf(T, "\n== 6. thread scaling: OLMo-2-7B layer, %d heads, Lq = Lk = %lld, D = 128, causal, out F32;\n"
                   "  pinned workers (worker w on CPU w); median of %d; speedup and parallel efficiency\n"
                   "  against the same path and dtype on 1 thread\n", (int)Hs, (long long)Ls, O.reps);
        for (path = SDPA_PATH_AVX2; sdpa_path_name((sdpa_path)path); ++path)
            for (dt = 0; dt < 2; ++dt) {
                double one = 0.0;
                if (!sdpa_path_supported((sdpa_path)path)) continue;
                if (path == SDPA_PATH_AMX && !dt) continue; /* F32 on amx is the avx512 kernels */
                for (thr = 1;; thr = thr * 2 > O.threads && thr < O.threads ? O.threads : thr * 2) {
                    problem pr;
                    timing tt;
                    double g;
                    int pinned = 0;
                    if (thr > O.threads) break;
                    problem_make(&pr, 1, Hs, Ls, Ls, 128, 1, 13, 0);
                    if (dt) problem_bf16(&pr);
                    pr.p.path = (sdpa_path)path;
                    if (thr == 1) pinned = bc_pin_to_cpu(0);
                    tt = time_tiled(&pr, thr);
                    if (pinned) bc_unpin();
                    if (thr == 1) one = tt.med;
                    g = bc_attn_flops(&pr.s) / tt.med * 1e-9;
                    fprintf(T, "  %-4s %-7s %3d  %8.4f s [%7.4f..%7.4f] %8.1f GF/s  %5.2fx  %3.0f%%\n", dt ? "BF16" : "F32",
                            sdpa_path_name((sdpa_path)path), thr, tt.med, tt.lo, tt.hi, g, one / tt.med,
                            100.0 * one / tt.med / thr);
                    csv_row("scaling", sdpa_path_name((sdpa_path)path), dt ? "tiled_bf16" : "tiled", thr, Hs, Ls, 128, 1,
                            tt.med, tt.lo, tt.hi, g, 0, one / tt.med, 0, 0);
                    problem_free(&pr);
                    if (thr == O.threads) break;
                }
            }
    }

#ifdef BENCH_SLEEF
    {
        int path;
        fprintf(T, "\n== 7. exp: built-in polynomial vs SLEEF (SDPA_USE_SLEEF, a second copy of the library):\n"
                   "  Lq = Lk = %lld, D = 128, not causal, %d heads, F32, 1 thread pinned; the two take turns\n"
                   "  run by run after %d warm-ups each; median of %d [min..max]; largest output difference\n",
                (long long)L_path, (int)H_all, O.warmup, O.reps);
        for (path = SDPA_PATH_AVX2; sdpa_path_name((sdpa_path)path); ++path) {
            problem pr;
            double t[2][256], diff = 0.0, g[2];
            float *first;
            timing tm[2];
            size_t n, e;
            int r, c, pinned;
            if (!sdpa_path_supported((sdpa_path)path) || path == SDPA_PATH_AMX) continue; /* amx F32: avx512's */
            problem_make(&pr, 1, H_all, L_path, L_path, 128, 0, 11, 0);
            pr.p.path = (sdpa_path)path;
            n = (size_t)(H_all * L_path * 128);
            first = (float *)bc_xmalloc(n * 4);
            pinned = bc_pin_to_cpu(0);
            for (r = 0; r < O.warmup; ++r) { exp_run(&pr, 0); exp_run(&pr, 1); }
            for (r = 0; r < O.reps; ++r)
                for (c = 0; c < 2; ++c) {
                    t[c][r] = exp_run(&pr, c);
                    if (c == 0) memcpy(first, pr.out, n * 4);
                    else if (r == 0)
                        for (e = 0; e < n; ++e) {
                            double d = fabs((double)pr.out[e] - (double)first[e]);
                            if (!(d <= diff)) diff = d; /* NaN sticks */
                        }
                }
            if (pinned) bc_unpin();
            for (c = 0; c < 2; ++c) {
                tm[c] = summarise(t[c], O.reps);
                g[c] = bc_attn_flops(&pr.s) / tm[c].med * 1e-9;
                csv_row("exp", sdpa_path_name((sdpa_path)path), c ? "sleef" : "builtin", 1, H_all, L_path, 128, 0,
                        tm[c].med, tm[c].lo, tm[c].hi, g[c], 0, c ? tm[0].med / tm[1].med : 1.0, 0, c ? diff : 0);
            }
            fprintf(T, "  %-7s built-in %.4f s [%.4f..%.4f] %6.2f GF/s   SLEEF %.4f s [%.4f..%.4f] %6.2f GF/s"
                       "   SLEEF %5.3fx the speed, max diff %.1e\n",
                    sdpa_path_name((sdpa_path)path), tm[0].med, tm[0].lo, tm[0].hi, g[0], tm[1].med, tm[1].lo,
                    tm[1].hi, g[1], tm[0].med / tm[1].med, diff);
            if (!(diff <= 1e-4)) { fprintf(T, "  CHECK FAILED: SLEEF's output differs from the built-in's\n"); bad = 1; }
            free(first);
            problem_free(&pr);
        }
    }
#endif

    fprintf(T, "\n== summary (%.0f s)\n", bc_now() - t_start);
    fprintf(T, "  tiled no slower than naive at L=%lld, D=128: %s (worst naive/tiled %.2fx)%s\n",
            (long long)L_speed, worst >= 1.0 ? "MET" : "NOT MET", worst,
            O.quick ? " [--quick: not the 4096 of the requirement]" : "");
    fprintf(T, "  causal L=%lld, D=32, one head grows peak RSS < 64 MiB: %s\n", (long long)L_mem,
            mem_fail ? "NOT MET" : "MET");
    if (bad) fprintf(T, "  FAIL: an accuracy check of a timed output failed\n");
    return (bad || mem_fail) ? 1 : 0;
}

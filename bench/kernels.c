/* bench/kernels.c - `make bench-kernels`: three versions of each core loop.
 *
 * For each kernel of the tiled forward, at the shapes the forward calls it
 * with, times:
 *   plain    bench/plain_kernels.h: the textbook loop
 *   autovec  sdpa.h's portable C, written for the auto-vectoriser (the
 *            scalar path's kernel)
 *   avx2     sdpa.h's intrinsics (and avx512, neon, when this build has them
 *            and the CPU runs them)
 *   +sleef   built with -DBENCH_SLEEF and bench/sleef_copy.c (make
 *            bench-kernels SLEEF=1): each SIMD path's exp_row from the copy
 *            of sdpa.h built with SDPA_USE_SLEEF, beside the built-in one
 * Kernels: the gemm micro-kernel as S = Q Kᵀ (M 64, N 64, K 128) and as
 * O += P V (M 64, N 128, K 64); exp_row, row_max and load_row (F16) over rows
 * of 64 to 4096 floats.
 *
 *   1. checks: every version's output against autovec's (and autovec's gemm
 *      against float64) on fresh random data, tolerances printed; any
 *      failure stops here with exit status 1
 *   2. times: pinned to one CPU; per sample, enough calls to fill ~2 ms
 *      (--quick 0.5 ms); the versions take turns sample by sample, so drift on
 *      a shared machine hits them alike; warm-up samples discarded; median
 *      and min..max of the rates; GFLOP/s for gemm (2 M N K per call),
 *      elements/ns for the others; ratios of median times against plain and
 *      against autovec
 *
 *   bench_kernels [--quick] [--csv] [--cpu N] [--warmup N] [--reps N] [--threads N] [--help]
 *
 * Exit status: 0 ok; 1 a check failed; 2 bad usage or out of memory.
 */
#define _GNU_SOURCE
#include "common.h"

#define SDPA_IMPLEMENTATION
#include "sdpa.h"
#include "plain_kernels.h"
#ifdef BENCH_SLEEF
#include "sleef_copy.h"
#endif

#include <float.h>

typedef void (*gemm_fn)(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                        int64_t ldb, float *C, int64_t ldc, int accumulate);
typedef float (*row_max_fn)(const float *s, int64_t n);
typedef float (*exp_row_fn)(float *s, int64_t n, float m);
typedef void (*load_row_fn)(float *dst, const char *src, sdpa_dtype t, int64_t n, float mul);

/* One version of every kernel. A path's entry exists where sdpa.h built that
 * path; a NULL kernel is skipped. Entry 1 (autovec) is the reference. */
typedef struct version {
    const char *name;
    sdpa_path   path;   /* SDPA_PATH_SCALAR for the portable C: runs everywhere */
    gemm_fn     gemm;
    row_max_fn  row_max;
    exp_row_fn  exp_row;
    load_row_fn load_row;
} version;

static const version VERSIONS[] = {
    {"plain", SDPA_PATH_SCALAR, plain_gemm, plain_row_max, plain_exp_row, plain_load_row},
    {"autovec", SDPA_PATH_SCALAR, sdpa__gemm_scalar, sdpa__row_max, sdpa__exp_row, sdpa__load_row},
#ifdef SDPA__HAVE_AVX2
    {"avx2", SDPA_PATH_AVX2, sdpa__gemm_avx2, sdpa__row_max_avx2, sdpa__exp_row_avx2, sdpa__load_row_avx2},
#ifdef BENCH_SLEEF
    {"avx2+sleef", SDPA_PATH_AVX2, NULL, NULL, bsl_exp_row_avx2, NULL},
#endif
#endif
#ifdef SDPA__HAVE_AVX512
    {"avx512", SDPA_PATH_AVX512, sdpa__gemm_avx512, sdpa__row_max_avx512, sdpa__exp_row_avx512,
     sdpa__load_row_avx512},
#ifdef BENCH_SLEEF
    {"avx512+sleef", SDPA_PATH_AVX512, NULL, NULL, bsl_exp_row_avx512, NULL},
#endif
#endif
#ifdef SDPA__HAVE_NEON
    {"neon", SDPA_PATH_NEON, sdpa__gemm_neon, sdpa__row_max_neon, sdpa__exp_row_neon, sdpa__load_row_neon},
#ifdef BENCH_SLEEF
    {"neon+sleef", SDPA_PATH_NEON, NULL, NULL, bsl_exp_row_neon, NULL},
#endif
#endif
};
#define NV ((int)(sizeof VERSIONS / sizeof VERSIONS[0]))
#define REF 1

typedef struct kopts {
    int quick, csv, cpu, warmup, reps;
} kopts;

static kopts O;
static FILE *T; /* the human-readable text: stdout, or stderr with --csv */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: bench_kernels [options]\n"
        "  --quick      fewer sizes, shorter samples, fewer repeats (a smoke run)\n"
        "  --csv        results as CSV on stdout (the text goes to stderr)\n"
        "  --cpu N      the CPU to pin to (default 0)\n"
        "  --warmup N   discarded warm-up samples per version and case (default 2)\n"
        "  --reps N     timed samples per version and case (default 15; --quick 5)\n"
        "  --threads N  accepted and ignored (one core is timed), so that make bench's\n"
        "               ARGS serve bench and bench_kernels alike\n"
        "  --help       this text\n");
}

static const char *compiler(void)
{
#if defined(__clang__)
    static char buf[128]; /* __clang_version__ may end in a space */
    size_t n = (size_t)snprintf(buf, sizeof buf, "clang %s", __clang_version__);
    if (n >= sizeof buf) n = sizeof buf - 1;
    while (n > 0 && buf[n - 1] == ' ') buf[--n] = 0;
    return buf;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#else
    return "unknown compiler";
#endif
}

#ifndef BK_CFLAGS
#define BK_CFLAGS "(not recorded)"
#endif

static void cpu_model(char *buf, size_t n)
{
    char line[256];
    FILE *f = fopen("/proc/cpuinfo", "r");
    snprintf(buf, n, "unknown CPU");
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        char *c = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && c) {
            snprintf(buf, n, "%s", c + 2);
            buf[strcspn(buf, "\n")] = 0;
            break;
        }
    }
    fclose(f);
}

static int version_runs(int v) { return sdpa_path_supported(VERSIONS[v].path); }

/* ------------------------------------------------------------ the cases */

typedef enum kkind { K_GEMM, K_EXP, K_MAX, K_LOAD } kkind;

typedef struct kcase {
    kkind       kind;
    const char *kernel, *shape;
    int64_t     M, N, K;    /* gemm; n = N for the row kernels */
    int         accumulate; /* gemm */
    /* buffers, owned by the case */
    float      *A, *B, *C, *row;
    uint16_t   *half;
    double      sink;
} kcase;

static void *xcalloc_f(size_t n) { return bc_xmalloc(n * sizeof(float)); }

/* Random halves: every finite F16 value, subnormals included. */
static void fill_f16(uint16_t *h, size_t n, uint64_t seed)
{
    uint64_t s = seed;
    size_t i;
    for (i = 0; i < n; i++) {
        uint16_t x;
        do x = (uint16_t)bc_rand_u64(&s); while ((x & 0x7c00u) == 0x7c00u);
        h[i] = x;
    }
}

static void case_init(kcase *c)
{
    int64_t M = c->M, N = c->N, K = c->K;
    c->A = c->B = c->C = c->row = NULL;
    c->half = NULL;
    c->sink = 0.0;
    if (c->kind == K_GEMM) {
        c->A = (float *)xcalloc_f((size_t)(M * K));
        c->B = (float *)xcalloc_f((size_t)(K * N));
        c->C = (float *)xcalloc_f((size_t)(M * N));
        bc_fill_uniform(c->A, (size_t)(M * K), 1, -1.0f, 1.0f);
        bc_fill_uniform(c->B, (size_t)(K * N), 2, -1.0f, 1.0f);
        bc_fill_uniform(c->C, (size_t)(M * N), 3, -1.0f, 1.0f);
    } else {
        c->row = (float *)xcalloc_f((size_t)N);
        c->half = (uint16_t *)bc_xmalloc((size_t)N * 2);
        /* exp_row's timing input: (0, 1] with m = 1, so s - m lies in (-1, 0]
         * and exp maps the row into (1/e, 1], inside (0, 1] again: it can
         * run over the same row call after call, with no copy to time */
        bc_fill_uniform(c->row, (size_t)N, 4, 1e-3f, 1.0f);
        fill_f16(c->half, (size_t)N, 5);
    }
}

static void case_free(kcase *c)
{
    free(c->A); free(c->B); free(c->C); free(c->row); free(c->half);
}

static double case_work(const kcase *c)
{
    return c->kind == K_GEMM ? 2.0 * (double)c->M * (double)c->N * (double)c->K : (double)c->N;
}

/* `iters` calls of version v's kernel on the case's buffers. The function
 * pointer is read through a volatile lvalue so the compiler calls the kernel
 * as compiled on its own, never a copy inlined and specialised here. */
static void case_run(kcase *c, int v, int64_t iters)
{
    const version *ver = &VERSIONS[v];
    int64_t it;
    switch (c->kind) {
    case K_GEMM: {
        gemm_fn f = *(gemm_fn const volatile *)&ver->gemm;
        int64_t lda = c->K, ldb = c->N, ldc = c->N;
        for (it = 0; it < iters; it++) f(c->M, c->N, c->K, c->A, lda, c->B, ldb, c->C, ldc, c->accumulate);
        break;
    }
    case K_EXP: {
        exp_row_fn f = *(exp_row_fn const volatile *)&ver->exp_row;
        float acc = 0.0f;
        for (it = 0; it < iters; it++) acc += f(c->row, c->N, 1.0f);
        c->sink += acc;
        break;
    }
    case K_MAX: {
        row_max_fn f = *(row_max_fn const volatile *)&ver->row_max;
        float acc = 0.0f;
        for (it = 0; it < iters; it++) acc += f(c->row, c->N);
        c->sink += acc;
        break;
    }
    case K_LOAD: {
        load_row_fn f = *(load_row_fn const volatile *)&ver->load_row;
        for (it = 0; it < iters; it++) f(c->row, (const char *)c->half, SDPA_F16, c->N, 0.125f);
        break;
    }
    }
}

static int has_kernel(const kcase *c, int v)
{
    const version *ver = &VERSIONS[v];
    switch (c->kind) {
    case K_GEMM: return ver->gemm != NULL;
    case K_EXP: return ver->exp_row != NULL;
    case K_MAX: return ver->row_max != NULL;
    case K_LOAD: return ver->load_row != NULL;
    }
    return 0;
}

/* -------------------------------------------------------------- checks */

/* Each version against autovec on fresh data. Tolerances:
 *   gemm     |got - ref| <= 2 K eps (|C0| + sum_k |a b|): float sums of K
 *            terms in another order, or with FMA; autovec itself against a
 *            float64 product with the same bound
 *   exp_row  elements within 8 ulp (|got - ref| <= 1e-6 |ref|: both exps are
 *            within 2 ulp of exp), the sum within 1e-5 relative (order);
 *            the row holds -inf (masked scores), which must give 0
 *   row_max  exact (max is exact in any order)
 *   load_row exact (F16 widens exactly; both then multiply by the same mul)
 * Row kernels are also checked at n = 77 (a tail in every vector width). */
static int check_gemm(const kcase *c, int v, double *worst)
{
    int64_t M = c->M, N = c->N, K = c->K, i, j, k;
    float *C0 = (float *)xcalloc_f((size_t)(M * N)), *got = (float *)xcalloc_f((size_t)(M * N));
    float *ref = (float *)xcalloc_f((size_t)(M * N));
    int bad = 0;
    bc_fill_uniform(C0, (size_t)(M * N), 7, -1.0f, 1.0f);
    memcpy(ref, C0, (size_t)(M * N) * 4);
    memcpy(got, C0, (size_t)(M * N) * 4);
    VERSIONS[REF].gemm(M, N, K, c->A, K, c->B, N, ref, N, c->accumulate);
    VERSIONS[v].gemm(M, N, K, c->A, K, c->B, N, got, N, c->accumulate);
    *worst = 0.0;
    for (i = 0; i < M; i++)
        for (j = 0; j < N; j++) {
            double abs_sum = c->accumulate ? fabs((double)C0[i * N + j]) : 0.0;
            double exact = c->accumulate ? (double)C0[i * N + j] : 0.0, tol, r;
            for (k = 0; k < K; k++) {
                double p = (double)c->A[i * K + k] * (double)c->B[k * N + j];
                exact += p;
                abs_sum += fabs(p);
            }
            tol = 2.0 * (double)K * FLT_EPSILON * abs_sum + 1e-30;
            r = fabs((double)got[i * N + j] - (double)ref[i * N + j]) / tol;
            if (v == REF) r = fabs((double)ref[i * N + j] - exact) / tol;
            if (!(r <= 1.0)) bad = 1;
            if (!(r <= *worst)) *worst = r;
        }
    free(C0); free(got); free(ref);
    return bad;
}

static int check_row(const kcase *c, int v, int64_t n, double *worst)
{
    float *in = (float *)xcalloc_f((size_t)n), *a = (float *)xcalloc_f((size_t)n), *b = (float *)xcalloc_f((size_t)n);
    int64_t i;
    int bad = 0;
    *worst = 0.0;
    if (c->kind == K_LOAD) {
        uint16_t *h = (uint16_t *)bc_xmalloc((size_t)n * 2);
        fill_f16(h, (size_t)n, 11);
        VERSIONS[REF].load_row(a, (const char *)h, SDPA_F16, n, 0.125f);
        VERSIONS[v].load_row(b, (const char *)h, SDPA_F16, n, 0.125f);
        bad = memcmp(a, b, (size_t)n * 4) != 0;
        free(h);
    } else if (c->kind == K_MAX) {
        float ra, rb;
        bc_fill_uniform(in, (size_t)n, 12, -50.0f, 50.0f);
        ra = VERSIONS[REF].row_max(in, n);
        rb = VERSIONS[v].row_max(in, n);
        bad = memcmp(&ra, &rb, 4) != 0;
        if (bad) *worst = fabs((double)ra - (double)rb);
    } else {
        float sa, sb, m = 3.0f;
        double r;
        /* scores in [-30, 3], every 9th masked */
        bc_fill_uniform(in, (size_t)n, 13, -30.0f, 3.0f);
        for (i = 0; i < n; i += 9) in[i] = -INFINITY;
        memcpy(a, in, (size_t)n * 4);
        memcpy(b, in, (size_t)n * 4);
        sa = VERSIONS[REF].exp_row(a, n, m);
        sb = VERSIONS[v].exp_row(b, n, m);
        for (i = 0; i < n; i++) {
            r = fabs((double)a[i] - (double)b[i]) / (1e-6 * fabs((double)a[i]) + 1e-37);
            if (!(r <= 1.0)) bad = 1;
            if (!(r <= *worst)) *worst = r;
        }
        r = fabs((double)sa - (double)sb) / (1e-5 * fabs((double)sa));
        if (!(r <= 1.0)) bad = 1;
        if (!(r <= *worst)) *worst = r;
    }
    free(in); free(a); free(b);
    return bad;
}

static int run_checks(kcase *cases, int ncases)
{
    int i, v, fails = 0;
    fprintf(T, "== 1. checks: each version against autovec on fresh random data (gemm: 2 K eps sum|a b|;\n"
               "   exp_row: 1e-6 relative per element, 1e-5 for the sum; row_max, load_row F16: exact)\n");
    for (i = 0; i < ncases; i++) {
        kcase *c = &cases[i];
        int64_t sizes[2];
        int ns = 1, s;
        sizes[0] = c->N;
        if (c->kind != K_GEMM && (i + 1 == ncases || cases[i + 1].kind != c->kind)) sizes[ns++] = 77;
        for (s = 0; s < ns; s++) {
            fprintf(T, "  %-8s %-22s", c->kernel, s == 0 ? c->shape : "n = 77 (tails)");
            for (v = 0; v < NV; v++) {
                double worst;
                int bad;
                if (!version_runs(v) || !has_kernel(c, v)) continue;
                bad = c->kind == K_GEMM ? check_gemm(c, v, &worst) : check_row(c, v, sizes[s], &worst);
                fprintf(T, "  %s%s %.2f%s", VERSIONS[v].name, v == REF && c->kind == K_GEMM ? " vs f64" : "",
                        worst, bad ? " FAIL" : "");
                if (bad) fails++;
            }
            fprintf(T, "  (worst error / tolerance)\n");
        }
    }
    return fails;
}

/* --------------------------------------------------------------- timing */

/* Calls per sample: enough that one sample lasts `target` seconds. */
static int64_t calibrate(kcase *c, int v, double target)
{
    int64_t iters = 1;
    for (;;) {
        double t0 = bc_now(), dt;
        case_run(c, v, iters);
        dt = bc_now() - t0;
        if (dt >= target / 4 || iters > ((int64_t)1 << 40)) {
            int64_t n = (int64_t)((double)iters * target / (dt > 1e-9 ? dt : 1e-9));
            return n < 1 ? 1 : n;
        }
        iters *= 4;
    }
}

typedef struct vtime {
    double med, lo, hi; /* seconds per call: median, fastest, slowest sample */
} vtime;

static void time_case(kcase *c, vtime *out)
{
    double secs[NV][256], target = O.quick ? 0.5e-3 : 2e-3;
    int64_t iters[NV];
    int v, r;
    for (v = 0; v < NV; v++) {
        out[v].med = out[v].lo = out[v].hi = 0.0;
        if (version_runs(v) && has_kernel(c, v)) iters[v] = calibrate(c, v, target);
        else iters[v] = 0;
    }
    /* round robin: a slow spell on the shared CPU lands on every version */
    for (r = -O.warmup; r < O.reps; r++)
        for (v = 0; v < NV; v++) {
            double t0, dt;
            if (!iters[v]) continue;
            t0 = bc_now();
            case_run(c, v, iters[v]);
            dt = (bc_now() - t0) / (double)iters[v];
            if (r >= 0) secs[v][r] = dt;
        }
    for (v = 0; v < NV; v++) {
        if (!iters[v]) continue;
        out[v].med = bc_median(secs[v], O.reps);
        out[v].lo = out[v].hi = secs[v][0];
        for (r = 1; r < O.reps; r++) {
            if (secs[v][r] < out[v].lo) out[v].lo = secs[v][r];
            if (secs[v][r] > out[v].hi) out[v].hi = secs[v][r];
        }
    }
}

/* ----------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    static const int64_t row_sizes[] = {64, 256, 1024, 4096}, row_sizes_quick[] = {64, 4096};
    kcase cases[2 + 3 * 4];
    int ncases = 0, a, i, v, nrows, pinned, vw = 8; /* vw: width of the version column */
    const int64_t *rows;
    char model[128];
    double t_start = bc_now();

    O.quick = 0; O.csv = 0; O.cpu = 0; O.warmup = 2; O.reps = -1;
    for (a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (!strcmp(arg, "--quick")) O.quick = 1;
        else if (!strcmp(arg, "--csv")) O.csv = 1;
        else if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) { usage(stdout); return 0; }
        else if (!strcmp(arg, "--threads") && a + 1 < argc) a++;
        else if ((!strcmp(arg, "--cpu") || !strcmp(arg, "--warmup") || !strcmp(arg, "--reps")) && a + 1 < argc) {
            char *end;
            long x = strtol(argv[++a], &end, 10);
            if (*end || x < 0 || x > 256 || (x < 1 && strcmp(arg, "--cpu") != 0)) {
                fprintf(stderr, "bench_kernels: bad value for %s\n", arg);
                usage(stderr);
                return 2;
            }
            if (!strcmp(arg, "--cpu")) O.cpu = (int)x;
            else if (!strcmp(arg, "--warmup")) O.warmup = (int)x;
            else O.reps = (int)x;
        } else { fprintf(stderr, "bench_kernels: bad argument '%s'\n", arg); usage(stderr); return 2; }
    }
    if (O.reps < 0) O.reps = O.quick ? 5 : 15;
    T = O.csv ? stderr : stdout;
    setvbuf(stdout, NULL, _IOLBF, 0);

    rows = O.quick ? row_sizes_quick : row_sizes;
    nrows = O.quick ? 2 : 4;
    {
        kcase g = {K_GEMM, "gemm", "S=Q*Kt  64x64, k 128", 64, 64, 128, 0, NULL, NULL, NULL, NULL, NULL, 0};
        kcase p = {K_GEMM, "gemm", "O+=P*V  64x128, k 64", 64, 128, 64, 1, NULL, NULL, NULL, NULL, NULL, 0};
        cases[ncases++] = g;
        cases[ncases++] = p;
    }
    {
        static const struct { kkind kind; const char *name; } rk[] = {
            {K_EXP, "exp_row"}, {K_MAX, "row_max"}, {K_LOAD, "load_row"}};
        static char shapes[3][4][32];
        int k, s;
        for (k = 0; k < 3; k++)
            for (s = 0; s < nrows; s++) {
                kcase c;
                memset(&c, 0, sizeof c);
                c.kind = rk[k].kind;
                c.kernel = rk[k].name;
                snprintf(shapes[k][s], sizeof shapes[k][s], "n = %lld%s", (long long)rows[s],
                         rk[k].kind == K_LOAD ? ", F16" : "");
                c.shape = shapes[k][s];
                c.M = 1; c.N = rows[s]; c.K = 1;
                cases[ncases++] = c;
            }
    }
    for (i = 0; i < ncases; i++) case_init(&cases[i]);

    cpu_model(model, sizeof model);
    fprintf(T, "sdpa.h %s kernel benchmark: plain / autovec / intrinsics\n", sdpa_version());
    fprintf(T, "  built by %s, flags %s\n", compiler(), BK_CFLAGS);
    fprintf(T, "  CPU: %s; versions:", model);
    for (v = 0; v < NV; v++) fprintf(T, " %s%s", VERSIONS[v].name, version_runs(v) ? "" : " (not on this CPU)");
    fprintf(T, "%s\n", O.quick ? "  [--quick]" : "");
    if (O.csv)
        printf("kernel,shape,version,compiler,work_per_call,median_s,min_s,max_s,rate,rate_unit,"
               "plain_over_this,autovec_over_this\n");

    if (run_checks(cases, ncases)) {
        fprintf(T, "FAIL: a version disagrees with autovec; not timing a wrong result\n");
        return 1;
    }

    O.cpu %= bc_cpus_online(); /* as bc_pin_to_cpu does */
    pinned = bc_pin_to_cpu(O.cpu);
    fprintf(T, "\n== 2. times: %s CPU %d; %d warm-up + %d samples of ~%.1f ms per version, taking turns;\n"
               "   rate of the median sample [rates of the slowest..fastest]; ratios of median times\n",
            pinned ? "pinned to" : "NOT pinned (sched_setaffinity failed) to", O.cpu, O.warmup, O.reps,
            O.quick ? 0.5 : 2.0);
    for (v = 0; v < NV; v++) vw = (int)strlen(VERSIONS[v].name) > vw ? (int)strlen(VERSIONS[v].name) : vw;
    fprintf(T, "  %-8s %-22s %-*s %10s  %-26s %9s %9s\n", "kernel", "shape", vw, "version", "per call",
            "rate [slowest..fastest]", "vs plain", "vs autov");
    for (i = 0; i < ncases; i++) {
        kcase *c = &cases[i];
        vtime t[NV];
        double w = case_work(c);
        const char *unit = c->kind == K_GEMM ? "GFLOP/s" : "elem/ns";
        time_case(c, t);
        for (v = 0; v < NV; v++) {
            char rate[64];
            if (t[v].med <= 0.0) continue;
            snprintf(rate, sizeof rate, "%7.2f [%.2f..%.2f] %s", w / t[v].med * 1e-9, w / t[v].hi * 1e-9,
                     w / t[v].lo * 1e-9, unit);
            fprintf(T, "  %-8s %-22s %-*s %8.3f us  %-26s %8.2fx %8.2fx\n", v == 0 ? c->kernel : "",
                    v == 0 ? c->shape : "", vw, VERSIONS[v].name, t[v].med * 1e6, rate, t[0].med / t[v].med,
                    t[REF].med / t[v].med);
            if (O.csv)
                printf("%s,\"%s\",%s,\"%s\",%.0f,%.9f,%.9f,%.9f,%.4f,%s,%.4f,%.4f\n", c->kernel, c->shape,
                       VERSIONS[v].name, compiler(), w, t[v].med, t[v].lo, t[v].hi, w / t[v].med * 1e-9, unit,
                       t[0].med / t[v].med, t[REF].med / t[v].med);
        }
    }
    if (pinned) bc_unpin();
    fprintf(T, "\n== done (%.0f s)\n", bc_now() - t_start);
    for (i = 0; i < ncases; i++) case_free(&cases[i]);
    return 0;
}

/* bench/map.h - the trade-off map (issue 6), included by bench/bench.c after
 * the library: the modes that measure the space the planner searches.
 *
 *   --suite     OLMo-2 prefill and decode per path, dtype, int8 mode, KV
 *               storage and thread count: time, GFLOP/s, GB/s, fractions of
 *               the measured peaks, workspace, peak RSS growth, error
 *               against float64; baselines in the same run: the naive
 *               algorithm (portable C, and OpenBLAS sgemm when libopenblas
 *               can be dlopen'ed) and PyTorch's CPU SDPA through
 *               bench/torch_sdpa.py (skipped with a line when python3 or
 *               torch is missing)
 *   --parity    one problem through every path x dtype x int8 mode and every
 *               KV cache storage type (and PyTorch): per pair max abs, rel L2,
 *               cosine
 *   --pareto    every configuration the planner considers, measured (time,
 *               memory, error) on a prefill and a decode problem; the Pareto
 *               frontier over time x memory x error
 *   --plan-eval exhaustive search against the planner's picks (default
 *               model, the probe, a model fitted to the other problems'
 *               sweeps) over budgets x tolerances; how often it picks the
 *               best and how far otherwise
 *   --memory    bytes against sequence length: naive, tiled, each KV storage
 *
 * Rows go to the text on T, to stdout as CSV with --csv (first column the
 * table), to DIR/<table>.csv with --out DIR, and to one JSON file with
 * --json FILE.
 */
#include <dlfcn.h>
#include <signal.h>
#include <sys/stat.h>

/* ------------------------------------------------------------ output */

#define MT_MAX 16
typedef struct mt_table {
    const char *name;
    FILE *csv;     /* --out DIR/<name>.csv */
    int header;    /* the CSV header was written */
} mt_table;

static struct {
    mt_table t[MT_MAX];
    int n;
    FILE *json;
    int json_rows;
    const char *dir;
    /* the row being built */
    mt_table *cur;
    char keys[2048], vals[4096], js[8192];
    int nf;
} M;

static mt_table *mt_get(const char *name)
{
    int i;
    for (i = 0; i < M.n; i++)
        if (!strcmp(M.t[i].name, name)) return &M.t[i];
    if (M.n == MT_MAX) { fprintf(stderr, "bench: too many tables\n"); exit(2); }
    M.t[M.n].name = name;
    M.t[M.n].csv = NULL;
    M.t[M.n].header = 0;
    if (M.dir) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s.csv", M.dir, name);
        M.t[M.n].csv = fopen(path, "w");
        if (!M.t[M.n].csv) fprintf(stderr, "bench: cannot write %s\n", path);
    }
    return &M.t[M.n++];
}

static void row_begin(const char *table)
{
    M.cur = mt_get(table);
    M.keys[0] = M.vals[0] = M.js[0] = 0;
    M.nf = 0;
}

static void row__add(const char *key, const char *csvval, const char *jsval)
{
    size_t k = strlen(M.keys), v = strlen(M.vals), j = strlen(M.js);
    snprintf(M.keys + k, sizeof M.keys - k, "%s%s", M.nf ? "," : "", key);
    snprintf(M.vals + v, sizeof M.vals - v, "%s%s", M.nf ? "," : "", csvval);
    snprintf(M.js + j, sizeof M.js - j, ", \"%s\": %s", key, jsval);
    M.nf++;
}

static void row_s(const char *key, const char *s)
{
    char js[512];
    snprintf(js, sizeof js, "\"%.500s\"", s);
    row__add(key, s, js);
}

static void row_i(const char *key, int64_t x)
{
    char b[32];
    snprintf(b, sizeof b, "%lld", (long long)x);
    row__add(key, b, b);
}

static void row_f(const char *key, double x)
{
    char b[48];
    if (x != x || x - x != 0.0) { row__add(key, x != x ? "nan" : (x > 0 ? "inf" : "-inf"), "null"); return; }
    snprintf(b, sizeof b, "%.6g", x);
    row__add(key, b, b);
}

/* SIGTERM / SIGINT (bench/plan_run.sh's timeouts): the next finished row
 * closes the files, so the CSV and the JSON stay whole, and the bench exits. */
static volatile sig_atomic_t mt_stop;
static void mt_on_signal(int sig) { (void)sig; mt_stop = 1; }
static void mt_close(void);

static void row_end(void)
{
    mt_table *t = M.cur;
    if (!t) return;
    if (!t->header) {
        if (O.csv) printf("#table,%s\n", M.keys);
        if (t->csv) fprintf(t->csv, "%s\n", M.keys);
        t->header = 1;
    }
    if (O.csv) printf("%s,%s\n", t->name, M.vals);
    if (t->csv) { fprintf(t->csv, "%s\n", M.vals); fflush(t->csv); }
    if (M.json) fprintf(M.json, "%s\n  {\"table\": \"%s\"%s}", M.json_rows++ ? "," : "", t->name, M.js);
    M.cur = NULL;
    if (mt_stop) {
        fprintf(T, "\nbench: stopped by a signal after %d rows; the CSV and JSON files are closed\n", M.json_rows);
        mt_close();
        exit(3);
    }
}

static void mt_open(const char *dir, const char *json)
{
    signal(SIGTERM, mt_on_signal);
    signal(SIGINT, mt_on_signal);
    M.dir = dir;
    if (dir) mkdir(dir, 0777); /* one level; an existing folder is fine */
    if (json) {
        M.json = fopen(json, "w");
        if (!M.json) { fprintf(stderr, "bench: cannot write %s\n", json); exit(2); }
        fprintf(M.json, "{\"bench\": \"sdpa.h %s\", \"rows\": [", sdpa_version());
    }
}

static void mt_close(void)
{
    int i;
    for (i = 0; i < M.n; i++)
        if (M.t[i].csv) fclose(M.t[i].csv);
    if (M.json) { fprintf(M.json, "\n]}\n"); fclose(M.json); }
}

/* ---------------------------------------------------------- machine */

typedef struct machine {
    double peak1, peakN, fma1, fmaN, zmm1, zmmN, bw1, bwN;
} machine;
static machine MC;

static void machine_measure(void)
{
    int64_t it = O.quick ? 5000000 : 20000000;
    MC.peak1 = bc_measure_peak_gflops(1, it, 3);
    MC.peakN = bc_measure_peak_gflops(O.threads, it, 3);
    MC.fma1 = bc_measure_peak_gflops_avx2fma(1, it, 3);
    MC.fmaN = bc_measure_peak_gflops_avx2fma(O.threads, it, 3);
    MC.zmm1 = bc_measure_peak_gflops_zmm(1, it, 3);
    MC.zmmN = bc_measure_peak_gflops_zmm(O.threads, it, 3);
    MC.bw1 = bc_measure_read_bw((size_t)(O.quick ? 64 : 256) << 20, 1, 3);
    MC.bwN = bc_measure_read_bw((size_t)(O.quick ? 64 : 256) << 20, O.threads, 3);
    zmm1 = MC.zmm1; zmmN = MC.zmmN;
    fprintf(T, "== machine: FMA peaks (GFLOP/s, 1 / %d threads): build flags %.1f / %.1f, ymm FMA %.1f / %.1f,"
               " zmm FMA %.1f / %.1f; read bandwidth %.1f / %.1f GB/s\n",
            O.threads, MC.peak1, MC.peakN, MC.fma1, MC.fmaN, MC.zmm1, MC.zmmN, MC.bw1, MC.bwN);
    row_begin("machine");
    row_i("cpus", bc_cpus_online()); row_i("threads", O.threads);
    row_f("peak1", MC.peak1); row_f("peakN", MC.peakN); row_f("ymm1", MC.fma1); row_f("ymmN", MC.fmaN);
    row_f("zmm1", MC.zmm1); row_f("zmmN", MC.zmmN); row_f("bw1", MC.bw1); row_f("bwN", MC.bwN);
    row_end();
}

static double mpeak(int path, int thr)
{
    return path_peak(path, thr == 1, MC.peak1, MC.peakN, MC.fma1, MC.fmaN);
}

/* ---------------------------------------------------------- statistics */

static int thread_list(int *t)
{
    int n = 0;
    t[n++] = 1;
    if (O.threads > 1) t[n++] = O.threads;
    return n;
}

/* Error of got against ref: max abs, relative L2, cosine. NaN sticks. */
typedef struct errs { double max_abs, rel_l2, cosine; } errs;

static errs err_of(const double *got, const double *ref, int64_t n)
{
    errs e;
    double num = 0, den = 0, gg = 0, gr = 0, mx = 0;
    int64_t i;
    for (i = 0; i < n; i++) {
        double d = got[i] - ref[i];
        if (!(fabs(d) <= mx)) mx = fabs(d);
        num += d * d; den += ref[i] * ref[i]; gg += got[i] * got[i]; gr += got[i] * ref[i];
    }
    e.max_abs = mx;
    e.rel_l2 = sqrt(num / (den > 0 ? den : 1));
    e.cosine = gg > 0 && den > 0 ? gr / sqrt(gg * den) : (gg == den ? 1.0 : 0.0);
    if (mx != mx) e.rel_l2 = e.cosine = NAN;
    return e;
}

/* --------------------------------------------------- the data of a problem */

/* q [B, Hq, Lq, D], k, v [B, Hkv, Lk, D] in F32 with F16 and BF16 copies;
 * causal = bottom-right (the planner's and the cache's alignment). The
 * float64 reference covers sampled rows: every head, rows i = 0, s, 2s, ...
 * and the last. */
typedef struct mprob {
    int64_t B, Hq, Hkv, G, Lq, Lk, D;
    int causal;
    float *q, *k, *v;
    uint16_t *h16[3], *b16[3];
    int64_t nq, nk;
    int64_t *rows;      /* sampled (b*Hq + h) * Lq + i */
    int64_t nrows;
    double *ref;        /* [nrows][D] */
} mprob;

static void mprob_make(mprob *P, int64_t B, int64_t Hq, int64_t Hkv, int64_t Lq, int64_t Lk, int64_t D, int causal,
                       uint64_t seed, int want_ref)
{
    int64_t i, s, bh, r;
    memset(P, 0, sizeof *P);
    P->B = B; P->Hq = Hq; P->Hkv = Hkv; P->G = Hq / Hkv; P->Lq = Lq; P->Lk = Lk; P->D = D; P->causal = causal;
    P->nq = B * Hq * Lq * D; P->nk = B * Hkv * Lk * D;
    P->q = (float *)bc_xmalloc((size_t)P->nq * 4);
    P->k = (float *)bc_xmalloc((size_t)P->nk * 4);
    P->v = (float *)bc_xmalloc((size_t)P->nk * 4);
    bc_fill_uniform(P->q, (size_t)P->nq, seed * 3 + 1, -2.0f, 2.0f);
    bc_fill_uniform(P->k, (size_t)P->nk, seed * 3 + 2, -2.0f, 2.0f);
    bc_fill_uniform(P->v, (size_t)P->nk, seed * 3 + 3, -1.0f, 1.0f);
    for (i = 0; i < 3 && !(want_ref & 4); i++) { /* 4: no F16/BF16 copies (decode) */
        const float *src = i == 0 ? P->q : (i == 1 ? P->k : P->v);
        int64_t n = i == 0 ? P->nq : P->nk, j;
        P->h16[i] = (uint16_t *)bc_xmalloc((size_t)n * 2);
        P->b16[i] = (uint16_t *)bc_xmalloc((size_t)n * 2);
        for (j = 0; j < n; j++) { P->h16[i][j] = sdpa_f32_to_f16(src[j]); P->b16[i][j] = sdpa_f32_to_bf16(src[j]); }
    }
    want_ref &= 3;
    if (!want_ref) return;
    s = want_ref == 2 ? 1 : (Lq / 16 > 0 ? Lq / 16 : 1); /* 2: every row */
    P->rows = (int64_t *)bc_xmalloc((size_t)(B * Hq * (Lq / s + 2)) * sizeof(int64_t));
    for (bh = 0; bh < B * Hq; bh++)
        for (i = 0; i < Lq; i = (i + s < Lq - 1) ? i + s : Lq - 1) {
            P->rows[P->nrows++] = bh * Lq + i;
            if (i == Lq - 1) break;
        }
    P->ref = (double *)bc_xmalloc((size_t)(P->nrows * D) * sizeof(double));
    for (r = 0; r < P->nrows; r++) {
        int64_t row = P->rows[r], bhq = row / Lq, ii = row % Lq, b = bhq / Hq, h = bhq % Hq, g = h / P->G;
        int64_t nvis = causal ? ii + Lk - Lq + 1 : Lk;
        const float *K = P->k + (size_t)((b * Hkv + g) * Lk * D), *V = P->v + (size_t)((b * Hkv + g) * Lk * D);
        if (nvis < 0) nvis = 0;
        if (nvis > Lk) nvis = Lk;
        bc_ref_row(P->q + (size_t)(row * D), K, D, V, D, nvis, D, D, 1.0 / sqrt((double)D), P->ref + r * D);
    }
}

static void mprob_free(mprob *P)
{
    int i;
    free(P->q); free(P->k); free(P->v); free(P->rows); free(P->ref);
    for (i = 0; i < 3; i++) { free(P->h16[i]); free(P->b16[i]); }
}

/* An output of dtype dt [B, Hq, Lq, D] on the sampled rows, as doubles. */
static void mprob_sample(const mprob *P, const void *out, sdpa_dtype dt, double *got)
{
    int64_t r, d;
    for (r = 0; r < P->nrows; r++)
        for (d = 0; d < P->D; d++) {
            int64_t at = P->rows[r] * P->D + d;
            got[r * P->D + d] = dt == SDPA_F32 ? (double)((const float *)out)[at]
                              : dt == SDPA_F16 ? (double)sdpa_f16_to_f32(((const uint16_t *)out)[at])
                                               : (double)sdpa_bf16_to_f32(((const uint16_t *)out)[at]);
        }
}

static void mprob_tensors(const mprob *P, sdpa_dtype dt, void *out, sdpa_tensor *q, sdpa_tensor *k, sdpa_tensor *v,
                          sdpa_tensor *o)
{
    int i = dt == SDPA_F32 ? 0 : (dt == SDPA_F16 ? 1 : 2);
    memset(q, 0, sizeof *q);
    q->dtype = dt;
    q->shape[0] = P->B; q->shape[1] = P->Hq; q->shape[2] = P->Lq; q->shape[3] = P->D;
    *k = *q; k->shape[1] = P->Hkv; k->shape[2] = P->Lk;
    *v = *k; *o = *q;
    q->data = i == 0 ? (void *)P->q : (i == 1 ? (void *)P->h16[0] : (void *)P->b16[0]);
    k->data = i == 0 ? (void *)P->k : (i == 1 ? (void *)P->h16[1] : (void *)P->b16[1]);
    v->data = i == 0 ? (void *)P->v : (i == 1 ? (void *)P->h16[2] : (void *)P->b16[2]);
    o->data = out;
}

/* A cache of storage st holding the problem's K and V (batch entry b in
 * sequence b), appended a page-multiple at a time. */
static sdpa_kv_cache *mprob_cache(const mprob *P, sdpa_dtype st)
{
    sdpa_kv_cache_config cfg;
    sdpa_kv_cache *c = NULL;
    int64_t b, t, chunk = 1024;
    memset(&cfg, 0, sizeof cfg);
    cfg.num_seqs = P->B; cfg.kv_heads = P->Hkv; cfg.head_dim = P->D; cfg.dtype = st;
    if (sdpa_kv_cache_create(&cfg, &c) != SDPA_OK) { fprintf(stderr, "bench: cache create failed\n"); exit(2); }
    for (b = 0; b < P->B; b++)
        for (t = 0; t < P->Lk; t += chunk) {
            int64_t n = P->Lk - t < chunk ? P->Lk - t : chunk;
            sdpa_tensor kt = {NULL, SDPA_F32, {1, P->Hkv, n, P->D}, {0}}, vt;
            kt.data = P->k + (size_t)(b * P->Hkv * P->Lk * P->D + t * P->D);
            kt.stride[0] = P->Hkv * P->Lk * P->D; kt.stride[1] = P->Lk * P->D; kt.stride[2] = P->D; kt.stride[3] = 1;
            vt = kt;
            vt.data = P->v + (size_t)(b * P->Hkv * P->Lk * P->D + t * P->D);
            if (sdpa_kv_cache_append(c, b, &kt, &vt) != SDPA_OK) { fprintf(stderr, "bench: append failed\n"); exit(2); }
        }
    return c;
}

/* ------------------------------------------------------------- timing */

typedef struct mrun {
    const mprob *P;
    sdpa_tensor q, k, v, o;
    sdpa_params p;
    const sdpa_kv_cache *cache;
} mrun;

static int mrun_call(mrun *r)
{
    return r->cache ? sdpa_kv_cache_attention(r->cache, NULL, &r->q, &r->o, &r->p)
                    : sdpa_attention(&r->q, &r->k, &r->v, &r->o, &r->p);
}

/* warm-ups discarded, then reps timed; threads > 1 on the pinned pool, one
 * thread pinned to CPU 0 */
static timing mrun_time(mrun *r, int threads, int warmup, int reps)
{
    double t[256];
    int i, pinned = 0, rc;
    r->p.num_threads = threads;
    r->p.parallel_for = threads > 1 ? bc_pinned_parallel_for : NULL;
    if (threads == 1) pinned = bc_pin_to_cpu(0);
    for (i = 0; i < warmup + reps && i < 256 + warmup; i++) {
        double t0 = bc_now();
        rc = mrun_call(r);
        if (rc != SDPA_OK) {
            fprintf(stderr, "bench: a timed call failed: %s\n", sdpa_strerror(rc));
            exit(1);
        }
        if (i >= warmup) t[i - warmup] = bc_now() - t0;
    }
    if (pinned) bc_unpin();
    return summarise(t, reps);
}

/* FLOPs computed (and visible) for the problem: 2 (D + Dv) per visible pair */
static double mprob_flops(const mprob *P)
{
    double pairs = 0;
    int64_t i;
    for (i = 0; i < P->Lq; i++) {
        int64_t n = P->causal ? i + P->Lk - P->Lq + 1 : P->Lk;
        pairs += (double)(n < 0 ? 0 : (n > P->Lk ? P->Lk : n));
    }
    return 4.0 * (double)P->D * pairs * (double)(P->B * P->Hq);
}

/* ------------------------------------------------------ naive baselines */

/* OpenBLAS through dlopen: the naive materialising algorithm as PyTorch's
 * math backend runs it (S = Q K^T by sgemm, softmax, O = P V by sgemm).
 * Absent library: a skip line, nothing else. */
typedef void (*mt_sgemm_fn)(int order, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                            const float *B, int ldb, float beta, float *C, int ldc);
static struct { void *h; mt_sgemm_fn sgemm; void (*set_threads)(int); const char *name; int tried; } BL;

static int blas_load(void)
{
    static const char *const names[] = {"libopenblas.so.0", "libopenblas.so", "libopenblasp.so.0", NULL};
    int i;
    if (BL.tried) return BL.sgemm != NULL;
    BL.tried = 1;
    for (i = 0; names[i] && !BL.h; i++) { BL.h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL); BL.name = names[i]; }
    if (!BL.h) return 0;
    *(void **)(&BL.sgemm) = dlsym(BL.h, "cblas_sgemm");
    *(void **)(&BL.set_threads) = dlsym(BL.h, "openblas_set_num_threads");
    return BL.sgemm != NULL;
}

/* Naive attention, one (b, h) at a time, all threads inside OpenBLAS:
 * S [Lq, Lk] = scale Q K^T; causal entries -inf; softmax rows; O = S V. */
static void blas_naive(const mprob *P, float *out, float *S, int threads)
{
    int64_t bh, i, j;
    float scale = (float)(1.0 / sqrt((double)P->D));
    if (BL.set_threads) BL.set_threads(threads);
    for (bh = 0; bh < P->B * P->Hq; bh++) {
        int64_t b = bh / P->Hq, h = bh % P->Hq, g = h / P->G;
        const float *Q = P->q + (size_t)(bh * P->Lq * P->D), *K = P->k + (size_t)((b * P->Hkv + g) * P->Lk * P->D),
                    *V = P->v + (size_t)((b * P->Hkv + g) * P->Lk * P->D);
        /* CblasRowMajor 101, NoTrans 111, Trans 112 */
        BL.sgemm(101, 111, 112, (int)P->Lq, (int)P->Lk, (int)P->D, scale, Q, (int)P->D, K, (int)P->D, 0.0f, S, (int)P->Lk);
        for (i = 0; i < P->Lq; i++) {
            float *s = S + i * P->Lk, m = -INFINITY, sum = 0;
            int64_t nv = P->causal ? i + P->Lk - P->Lq + 1 : P->Lk;
            for (j = nv; j < P->Lk; j++) s[j] = 0.0f;
            for (j = 0; j < nv; j++) m = s[j] > m ? s[j] : m;
            for (j = 0; j < nv; j++) { s[j] = expf(s[j] - m); sum += s[j]; }
            for (j = 0; j < nv; j++) s[j] /= sum;
        }
        BL.sgemm(101, 111, 111, (int)P->Lq, (int)P->D, (int)P->Lk, 1.0f, S, (int)P->Lk, V, (int)P->D, 0.0f,
                 out + (size_t)(bh * P->Lq * P->D), (int)P->D);
    }
}

/* ---------------------------------------------------------- PyTorch */

/* Runs bench/torch_sdpa.py with args; each "row,..." line it prints is
 * handed to fn. Returns 0 when it ran, -1 with its skip line printed. */
static const char *torch_py(void)
{
    const char *e = getenv("BENCH_PYTHON");
    return e && e[0] ? e : "python3";
}

static char torch_lib[1024];

static int torch_run(const char *args, void (*fn)(const char *line, void *ctx), void *ctx)
{
    char cmd[4096], line[4096];
    FILE *f;
    int st, ran = 0;
    if (O.no_torch) return -1;
    snprintf(cmd, sizeof cmd, "%s bench/torch_sdpa.py --lib %s %s 2>&1", torch_py(), torch_lib, args);
    f = popen(cmd, "r");
    if (!f) { fprintf(T, "  PyTorch: skipped (cannot run %s)\n", torch_py()); return -1; }
    while (fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        if (n && line[n - 1] == '\n') line[--n] = 0;
        if (!strncmp(line, "row,", 4)) { fn(line + 4, ctx); ran = 1; }
        else if (!strncmp(line, "SKIP", 4)) fprintf(T, "  PyTorch: skipped: %s\n", line + 5);
        else fprintf(T, "  [torch_sdpa.py] %s\n", line);
    }
    st = pclose(f);
    if (!ran && st != 0) fprintf(T, "  PyTorch: skipped (%s bench/torch_sdpa.py exited with %d)\n", torch_py(), st);
    if (!ran) O.no_torch = 1; /* said once; not tried again in this run */
    return ran ? 0 : -1;
}

/* -------------------------------------------------------------- suite */

typedef struct mcfg { const char *name; int64_t Hq, Hkv; } mcfg;
/* The OLMo-2 shapes: 7B 32 heads (MHA, as its config has); 32B and
 * 70B 64 query heads, taken here with 8 kv heads (GQA; the issue gives the
 * query heads only). head_dim 128. */
static const mcfg k_cfgs[] = {{"olmo2-7b", 32, 32}, {"olmo2-64h", 64, 8}};

static int64_t parse_list(const char *s, int64_t *out, int max)
{
    int n = 0;
    while (s && *s && n < max) {
        char *end;
        long long x = strtoll(s, &end, 10);
        if (end == s || x < 1) { fprintf(stderr, "bench: bad list '%s'\n", s); exit(2); }
        out[n++] = x;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') { fprintf(stderr, "bench: bad list '%s'\n", s); exit(2); }
    }
    return n;
}

typedef struct torch_ctx { const mcfg *c; int64_t L; double flops; } torch_ctx;

static void torch_time_row(const char *line, void *vctx)
{
    torch_ctx *c = (torch_ctx *)vctx;
    char kind[32], impl[32], dt[32];
    int thr;
    double med, lo, hi, mx, rl2, cosv;
    if (sscanf(line, "%31[^,],%31[^,],%31[^,],%d,%lf,%lf,%lf,%lf,%lf,%lf", kind, impl, dt, &thr, &med, &lo, &hi, &mx, &rl2,
               &cosv) != 10)
        return;
    fprintf(T, "  %-12s %-9s %-14s %-9s %3d  %9.4f s [%8.4f..%8.4f] %7.1f GF/s  err vs f64: rel L2 %.1e, max %.1e\n",
            impl, c->c->name, "", dt, thr, med, lo, hi, c->flops / med * 1e-9, rl2, mx);
    row_begin("suite_prefill");
    row_s("config", c->c->name); row_i("L", c->L); row_s("path", impl); row_s("mode", dt); row_i("threads", thr);
    row_f("median_s", med); row_f("min_s", lo); row_f("max_s", hi); row_f("gflops", c->flops / med * 1e-9);
    row_f("frac_peak", NAN); row_f("GBps", NAN); row_f("frac_bw", NAN); row_i("workspace", -1); row_i("rss_growth", -1);
    row_f("rel_l2", rl2); row_f("max_abs", mx);
    row_end();
}

static const char *const k_mode_name[4] = {"F32", "F16in", "BF16in", "I8QK"};

static void suite_prefill(const int64_t *lens, int nl, int c0, int ncfg)
{
    int ci, li, path, mode, ti, thr[4], nthr = thread_list(thr);
    fprintf(T, "\n== suite: prefill, causal, head_dim 128, batch 1; %d warm-ups, median of %d [min..max]; GF/s over\n"
               "  visible pairs; %% of the path's FMA peak; GB/s = q, k, v, out bytes / time; workspace from\n"
               "  sdpa_workspace_size; RSS = peak RSS growth of the first call; err = rel L2 vs float64 (sampled rows)\n",
            O.warmup, O.reps);
    for (ci = c0; ci < ncfg; ci++)
        for (li = 0; li < nl; li++) {
            const mcfg *c = &k_cfgs[ci];
            int64_t L = lens[li];
            mprob P;
            double flops, *got;
            int64_t n;
            void *out;
            mprob_make(&P, 1, c->Hq, c->Hkv, L, L, 128, 1, 21 + (uint64_t)L, 1);
            flops = mprob_flops(&P);
            n = P.nq;
            out = bc_xmalloc((size_t)n * 4);
            memset(out, 0, (size_t)n * 4); /* resident before the RSS probe: it measures the call's own growth */
            got = (double *)bc_xmalloc((size_t)(P.nrows * P.D) * sizeof(double));
            fprintf(T, " %s (%lld/%lld heads), L = %lld: %.2f GFLOP\n", c->name, (long long)c->Hq, (long long)c->Hkv,
                    (long long)L, flops * 1e-9);
            for (path = SDPA_PATH_SCALAR; sdpa_path_name((sdpa_path)path); path++) {
                if (!sdpa_path_supported((sdpa_path)path)) continue;
                for (mode = 0; mode < 4; mode++) {
                    sdpa_dtype dt = mode == 1 ? SDPA_F16 : (mode == 2 ? SDPA_BF16 : SDPA_F32);
                    if (path == SDPA_PATH_SCALAR && (L > 2048 || (L > 1024 && O.threads < 8))) continue; /* minutes */
                    for (ti = 0; ti < nthr; ti++) {
                        if (thr[ti] == 1 && nthr > 1 && flops > 12e9) continue; /* one thread: up to ~L 1024 (7B) */
                        mrun r;
                        timing tm;
                        bc_peak pk;
                        errs e;
                        int64_t ws;
                        double bytes = (double)(2 * P.nq + 2 * P.nk) * (dt == SDPA_F32 ? 4.0 : 2.0), g;
                        memset(&r, 0, sizeof r);
                        r.P = &P;
                        mprob_tensors(&P, dt, out, &r.q, &r.k, &r.v, &r.o);
                        r.p.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
                        r.p.path = (sdpa_path)path;
                        r.p.precision = mode == 3 ? SDPA_PRECISION_INT8_QK : 0;
                        r.p.num_threads = thr[ti];
                        ws = sdpa_workspace_size(&r.q, &r.k, &r.v, &r.o, &r.p);
                        bc_peak_begin(&pk);
                        r.p.parallel_for = thr[ti] > 1 ? bc_pinned_parallel_for : NULL;
                        if (mrun_call(&r) != SDPA_OK) { fprintf(stderr, "bench: suite call failed\n"); exit(1); }
                        bc_peak_end(&pk);
                        tm = mrun_time(&r, thr[ti], O.warmup, O.reps);
                        mprob_sample(&P, out, dt, got);
                        e = err_of(got, P.ref, P.nrows * P.D);
                        g = flops / tm.med * 1e-9;
                        fprintf(T, "  %-12s %-9s %-14s %-9s %3d  %9.4f s [%8.4f..%8.4f] %7.1f GF/s %4.0f%% %6.1f GB/s"
                                   "  ws %7.1f KiB  RSS +%7.1f KiB  err %.1e\n",
                                sdpa_path_name((sdpa_path)path), c->name, "", k_mode_name[mode], thr[ti], tm.med, tm.lo, tm.hi,
                                g, 100.0 * g / mpeak(path, thr[ti]), bytes / tm.med * 1e-9, (double)ws / 1024.0,
                                (double)bc_peak_growth_bytes(&pk) / 1024.0, e.rel_l2);
                        row_begin("suite_prefill");
                        row_s("config", c->name); row_i("L", L); row_s("path", sdpa_path_name((sdpa_path)path));
                        row_s("mode", k_mode_name[mode]); row_i("threads", thr[ti]);
                        row_f("median_s", tm.med); row_f("min_s", tm.lo); row_f("max_s", tm.hi); row_f("gflops", g);
                        row_f("frac_peak", g / mpeak(path, thr[ti])); row_f("GBps", bytes / tm.med * 1e-9);
                        row_f("frac_bw", bytes / tm.med * 1e-9 / (thr[ti] == 1 ? MC.bw1 : MC.bwN));
                        row_i("workspace", ws); row_i("rss_growth", bc_peak_growth_bytes(&pk));
                        row_f("rel_l2", e.rel_l2); row_f("max_abs", e.max_abs);
                        row_end();
                        if (!(e.rel_l2 <= (mode == 0 ? 1e-5 : 0.05))) {
                            fprintf(T, "  CHECK FAILED: rel L2 %.2e\n", e.rel_l2);
                            O.failed = 1;
                        }
                    }
                }
            }
            /* baselines: naive portable C (all threads), naive OpenBLAS, PyTorch */
            for (ti = 0; ti < nthr; ti++) {
                double t[64], S_bytes = (double)L * (double)L * 4.0;
                timing tm;
                errs e;
                int i, pinned;
                bc_naive_ws ws;
                bc_attn_shape s;
                if (L > 2048 && O.threads < 8) break; /* the score matrices: minutes here */
                if (thr[ti] == 1 && nthr > 1 && flops > 12e9) continue;
                memset(&ws, 0, sizeof ws);
                s.B = 1; s.H = c->Hq; s.Hkv = c->Hkv; s.Lq = s.Lk = L; s.D = s.Dv = 128;
                s.scale = (float)(1.0 / sqrt(128.0)); s.causal = 1;
                pinned = thr[ti] == 1 ? bc_pin_to_cpu(0) : 0;
                for (i = 0; i < 1 + O.reps && i < 64; i++) {
                    double t0 = bc_now();
                    if (bc_naive_attention(P.q, P.k, P.v, (float *)out, &s, 0, c->Hq, thr[ti], thr[ti] > 1, &ws)) exit(2);
                    if (i) t[i - 1] = bc_now() - t0;
                }
                if (pinned) bc_unpin();
                bc_naive_ws_free(&ws);
                tm = summarise(t, O.reps);
                mprob_sample(&P, out, SDPA_F32, got);
                e = err_of(got, P.ref, P.nrows * P.D);
                fprintf(T, "  %-12s %-9s %-14s %-9s %3d  %9.4f s [%8.4f..%8.4f] %7.1f GF/s  scores %s per thread  err %.1e\n",
                        "naive-c", c->name, "", "F32", thr[ti], tm.med, tm.lo, tm.hi, flops / tm.med * 1e-9,
                        bc_fmt_bytes(S_bytes, (char[32]){0}, 32), e.rel_l2);
                row_begin("suite_prefill");
                row_s("config", c->name); row_i("L", L); row_s("path", "naive-c"); row_s("mode", "F32"); row_i("threads", thr[ti]);
                row_f("median_s", tm.med); row_f("min_s", tm.lo); row_f("max_s", tm.hi); row_f("gflops", flops / tm.med * 1e-9);
                row_f("frac_peak", flops / tm.med * 1e-9 / (thr[ti] == 1 ? MC.peak1 : MC.peakN)); row_f("GBps", NAN);
                row_f("frac_bw", NAN); row_i("workspace", (int64_t)(S_bytes * thr[ti])); row_i("rss_growth", -1);
                row_f("rel_l2", e.rel_l2); row_f("max_abs", e.max_abs);
                row_end();
            }
            if (!blas_load()) {
                if (li == 0 && ci == 0) fprintf(T, "  naive-openblas: skipped: libopenblas.so.0 not found (Debian: apt-get install libopenblas0)\n");
            } else if (L <= 4096) {
                float *S = (float *)bc_xmalloc((size_t)(L * L) * 4);
                for (ti = 0; ti < nthr; ti++) {
                    double t[64];
                    timing tm;
                    errs e;
                    int i;
                    if (thr[ti] == 1 && nthr > 1 && flops > 12e9) continue;
                    for (i = 0; i < 1 + O.reps && i < 64; i++) {
                        double t0 = bc_now();
                        blas_naive(&P, (float *)out, S, thr[ti]);
                        if (i) t[i - 1] = bc_now() - t0;
                    }
                    tm = summarise(t, O.reps);
                    mprob_sample(&P, out, SDPA_F32, got);
                    e = err_of(got, P.ref, P.nrows * P.D);
                    fprintf(T, "  %-12s %-9s %-14s %-9s %3d  %9.4f s [%8.4f..%8.4f] %7.1f GF/s  (%s, its threads)  err %.1e\n",
                            "naive-blas", c->name, "", "F32", thr[ti], tm.med, tm.lo, tm.hi, flops / tm.med * 1e-9, BL.name,
                            e.rel_l2);
                    row_begin("suite_prefill");
                    row_s("config", c->name); row_i("L", L); row_s("path", "naive-openblas"); row_s("mode", "F32");
                    row_i("threads", thr[ti]); row_f("median_s", tm.med); row_f("min_s", tm.lo); row_f("max_s", tm.hi);
                    row_f("gflops", flops / tm.med * 1e-9); row_f("frac_peak", NAN); row_f("GBps", NAN); row_f("frac_bw", NAN);
                    row_i("workspace", L * L * 4); row_i("rss_growth", -1); row_f("rel_l2", e.rel_l2); row_f("max_abs", e.max_abs);
                    row_end();
                }
                free(S);
            }
            if (!O.no_torch) {
                char args[256];
                torch_ctx tc;
                tc.c = c; tc.L = L; tc.flops = flops;
                for (ti = 0; ti < nthr; ti++) {
                    if (thr[ti] == 1 && nthr > 1 && flops > 12e9) continue;
                    snprintf(args, sizeof args, "time 1 %lld %lld %lld %lld 128 1 %d %d", (long long)c->Hq, (long long)c->Hkv,
                             (long long)L, (long long)L, thr[ti], O.reps);
                    if (torch_run(args, torch_time_row, &tc) != 0) break;
                }
            }
            free(out);
            free(got);
            mprob_free(&P);
        }
}

static void suite_decode(const int64_t *ctxs, int nc, int c0, int ncfg)
{
    int ci, xi, st, path, ti, thr[4], nthr = thread_list(thr);
    static const sdpa_dtype sts[4] = {SDPA_F32, SDPA_F16, SDPA_BF16, SDPA_I8};
    static const char *const stn[4] = {"F32", "F16", "BF16", "I8"};
    fprintf(T, "\n== suite: decode, one query token over the KV cache, head_dim 128, batch 1; median of %d;\n"
               "  GB/s = K/V bytes read (I8: with scales) / time, %% of the read bandwidth; cache = sdpa_kv_cache_bytes;\n"
               "  err = rel L2 vs float64 over the F32 values\n", O.reps);
    for (ci = c0; ci < ncfg; ci++)
        for (xi = 0; xi < nc; xi++) {
            const mcfg *c = &k_cfgs[ci];
            mprob P;
            double *got;
            float *out;
            mprob_make(&P, 1, c->Hq, c->Hkv, 1, ctxs[xi], 128, 1, 31 + (uint64_t)ctxs[xi], 1 | 4);
            out = (float *)bc_xmalloc((size_t)P.nq * 4);
            got = (double *)bc_xmalloc((size_t)(P.nrows * P.D) * sizeof(double));
            fprintf(T, " %s (%lld/%lld heads), context %lld\n", c->name, (long long)c->Hq, (long long)c->Hkv, (long long)ctxs[xi]);
            for (st = 0; st < 4; st++) {
                sdpa_kv_cache *cache = mprob_cache(&P, sts[st]);
                double kvb = (double)ctxs[xi] * (double)c->Hkv * (2.0 * 128 * (st == 0 ? 4 : st == 3 ? 1 : 2) + (st == 3 ? 8 : 0));
                for (path = SDPA_PATH_SCALAR; sdpa_path_name((sdpa_path)path); path++) {
                    /* the cache kernels: portable C, AVX2, zmm (avx512; amx takes the same ones), NEON */
                    if (!sdpa_path_supported((sdpa_path)path) || path == SDPA_PATH_AMX) continue;
                    for (ti = 0; ti < nthr; ti++) {
                        mrun r;
                        timing tm;
                        errs e;
                        double gb;
                        memset(&r, 0, sizeof r);
                        r.P = &P;
                        r.cache = cache;
                        mprob_tensors(&P, SDPA_F32, out, &r.q, &r.k, &r.v, &r.o);
                        r.p.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
                        r.p.path = (sdpa_path)path;
                        tm = mrun_time(&r, thr[ti], O.warmup, O.reps * 3);
                        mprob_sample(&P, out, SDPA_F32, got);
                        e = err_of(got, P.ref, P.nrows * P.D);
                        gb = kvb / tm.med * 1e-9;
                        fprintf(T, "  %-7s %-5s %3d  %9.1f us [%8.1f..%8.1f] %8.1f tok/s %7.1f GB/s %4.0f%% of bw  cache %8.1f MiB  err %.1e\n",
                                sdpa_path_name((sdpa_path)path), stn[st], thr[ti], tm.med * 1e6, tm.lo * 1e6, tm.hi * 1e6,
                                1.0 / tm.med, gb, 100.0 * gb / (thr[ti] == 1 ? MC.bw1 : MC.bwN),
                                (double)sdpa_kv_cache_bytes(cache) / 1048576.0, e.rel_l2);
                        row_begin("suite_decode");
                        row_s("config", c->name); row_i("ctx", ctxs[xi]); row_s("path", sdpa_path_name((sdpa_path)path));
                        row_s("storage", stn[st]); row_i("threads", thr[ti]); row_f("median_s", tm.med); row_f("min_s", tm.lo);
                        row_f("max_s", tm.hi); row_f("tok_per_s", 1.0 / tm.med); row_f("GBps", gb);
                        row_f("frac_bw", gb / (thr[ti] == 1 ? MC.bw1 : MC.bwN)); row_i("cache_bytes", sdpa_kv_cache_bytes(cache));
                        row_f("rel_l2", e.rel_l2); row_f("max_abs", e.max_abs);
                        row_end();
                        if (!(e.rel_l2 <= (st == 0 ? 1e-5 : 0.05))) {
                            fprintf(T, "  CHECK FAILED: rel L2 %.2e\n", e.rel_l2);
                            O.failed = 1;
                        }
                    }
                }
                sdpa_kv_cache_destroy(cache);
            }
            free(out);
            free(got);
            mprob_free(&P);
        }
}

/* ------------------------------------------------------------- parity */

typedef struct pout { char name[48]; double *x; } pout;

static void parity_torch_row(const char *line, void *ctx)
{
    char kind[32], a[64], b[64];
    double mx, rl2, cosv;
    (void)ctx;
    if (sscanf(line, "%31[^,],%63[^,],%63[^,],%lf,%lf,%lf", kind, a, b, &mx, &rl2, &cosv) != 6) return;
    fprintf(T, "  %-24s vs %-24s max abs %.2e  rel L2 %.2e  cos %.8f\n", a, b, mx, rl2, cosv);
    row_begin("parity_torch");
    row_s("a", a); row_s("b", b); row_f("max_abs", mx); row_f("rel_l2", rl2); row_f("cosine", cosv);
    row_end();
}

static void run_parity(void)
{
    static const sdpa_dtype dts[3] = {SDPA_F32, SDPA_F16, SDPA_BF16}, sts[4] = {SDPA_F32, SDPA_F16, SDPA_BF16, SDPA_I8};
    static const char *const dtn[4] = {"F32", "F16", "BF16", "I8"}, *const prn[3] = {"", "+i8qk", "+i8qk-nosmooth"};
    const int64_t Hq = 8, Hkv = 2, L = 256, D = 128;
    mprob P;
    pout outs[96];
    int n = 0, path, di, pi, st, i, j;
    int64_t N;
    float *out = (float *)bc_xmalloc((size_t)(Hq * L * D) * 4);
    mprob_make(&P, 1, Hq, Hkv, L, L, D, 1, 77, 2);
    N = P.nrows * D;
    fprintf(T, "\n== parity: one problem (q [1, %lld, %lld, %lld], GQA %lld kv heads, causal, q/k uniform in [-2, 2],\n"
               "  v in [-1, 1]) through every path x input dtype x precision mode (out F32), and through the KV cache\n"
               "  (the same keys appended, the %lld queries as the last tokens) per storage type and path; every\n"
               "  output element against float64 and against each other (all pairs in the CSV/JSON)\n",
            (long long)Hq, (long long)L, (long long)D, (long long)Hkv, (long long)L);
    for (path = SDPA_PATH_SCALAR; sdpa_path_name((sdpa_path)path); path++) {
        if (!sdpa_path_supported((sdpa_path)path)) continue;
        for (di = 0; di < 3; di++)
            for (pi = 0; pi < 3; pi++) {
                mrun r;
                memset(&r, 0, sizeof r);
                mprob_tensors(&P, dts[di], out, &r.q, &r.k, &r.v, &r.o);
                r.o.dtype = SDPA_F32;
                r.p.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
                r.p.path = (sdpa_path)path;
                r.p.precision = pi;
                memset(out, 0xff, (size_t)(Hq * L * D) * 4);
                if (mrun_call(&r) != SDPA_OK) { fprintf(stderr, "bench: parity call failed\n"); exit(1); }
                snprintf(outs[n].name, sizeof outs[n].name, "%s/%s%s", sdpa_path_name((sdpa_path)path), dtn[di], prn[pi]);
                outs[n].x = (double *)bc_xmalloc((size_t)N * sizeof(double));
                mprob_sample(&P, out, SDPA_F32, outs[n].x);
                n++;
            }
    }
    for (st = 0; st < 4; st++) {
        sdpa_kv_cache *c = mprob_cache(&P, sts[st]);
        for (path = SDPA_PATH_SCALAR; sdpa_path_name((sdpa_path)path); path++) {
            mrun r;
            if (!sdpa_path_supported((sdpa_path)path)) continue;
            memset(&r, 0, sizeof r);
            r.cache = c;
            mprob_tensors(&P, SDPA_F32, out, &r.q, &r.k, &r.v, &r.o);
            r.p.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
            r.p.path = (sdpa_path)path;
            memset(out, 0xff, (size_t)(Hq * L * D) * 4);
            if (mrun_call(&r) != SDPA_OK) { fprintf(stderr, "bench: parity cache call failed\n"); exit(1); }
            snprintf(outs[n].name, sizeof outs[n].name, "%s/kv-%s", sdpa_path_name((sdpa_path)path), dtn[st]);
            outs[n].x = (double *)bc_xmalloc((size_t)N * sizeof(double));
            mprob_sample(&P, out, SDPA_F32, outs[n].x);
            n++;
        }
        sdpa_kv_cache_destroy(c);
    }
    fprintf(T, "  %-28s %10s %10s %12s   %10s %10s   (vs %s)\n", "output", "max abs", "rel L2", "cosine", "max abs", "rel L2",
            outs[0].name);
    for (i = 0; i < n; i++) {
        errs e = err_of(outs[i].x, P.ref, N), f = err_of(outs[i].x, outs[0].x, N);
        fprintf(T, "  %-28s %10.2e %10.2e %12.8f   %10.2e %10.2e\n", outs[i].name, e.max_abs, e.rel_l2, e.cosine, f.max_abs,
                f.rel_l2);
        row_begin("parity");
        row_s("a", outs[i].name); row_s("b", "float64"); row_f("max_abs", e.max_abs); row_f("rel_l2", e.rel_l2);
        row_f("cosine", e.cosine);
        row_end();
        if (!(e.cosine > 0.99)) { fprintf(T, "  CHECK FAILED: %s far from float64\n", outs[i].name); O.failed = 1; }
    }
    for (i = 0; i < n; i++)
        for (j = i + 1; j < n; j++) {
            errs e = err_of(outs[i].x, outs[j].x, N);
            row_begin("parity");
            row_s("a", outs[i].name); row_s("b", outs[j].name); row_f("max_abs", e.max_abs); row_f("rel_l2", e.rel_l2);
            row_f("cosine", e.cosine);
            row_end();
        }
    {
        /* the same configuration on different paths: how far apart */
        double worst = 0.0;
        char wa[48] = "", wb[48] = "";
        for (i = 0; i < n; i++)
            for (j = i + 1; j < n; j++) {
                const char *a = strchr(outs[i].name, '/'), *b = strchr(outs[j].name, '/');
                if (a && b && !strcmp(a, b)) {
                    errs e = err_of(outs[i].x, outs[j].x, N);
                    if (!(e.rel_l2 <= worst)) { worst = e.rel_l2; snprintf(wa, sizeof wa, "%s", outs[i].name); snprintf(wb, sizeof wb, "%s", outs[j].name); }
                }
            }
        fprintf(T, "  same configuration across paths: largest rel L2 %.2e (%s vs %s)\n", worst, wa, wb);
    }
    if (!O.no_torch) {
        char args[128];
        fprintf(T, "  PyTorch (its own random inputs of the same shape; bench/torch_sdpa.py):\n");
        snprintf(args, sizeof args, "parity 1 %lld %lld %lld %lld %lld 1", (long long)Hq, (long long)Hkv, (long long)L,
                 (long long)L, (long long)D);
        torch_run(args, parity_torch_row, NULL);
    }
    for (i = 0; i < n; i++) free(outs[i].x);
    free(out);
    mprob_free(&P);
}

/* ------------------------------------------------------------- memory */

static void run_memory(const int64_t *lens, int nl)
{
    int li, di;
    static const char *const dtn[4] = {"F32", "F16", "BF16", "I8"};
    fprintf(T, "\n== memory against sequence length, OLMo-2-7B layer (32 heads, head_dim 128, batch 1, %d threads):\n"
               "  prefill: q, k, v, out + scratch (tiled: sdpa_workspace_size; naive: one L x L F32 score matrix per\n"
               "  thread); decode: the KV cache (sdpa_kv_cache_bytes, as the planner predicts it, tested equal)\n",
            O.threads);
    fprintf(T, "  %7s %12s %12s %12s %12s | %12s %12s %12s %12s\n", "L", "naive F32", "tiled F32", "tiled F16", "tiled BF16",
            "KV F32", "KV F16", "KV BF16", "KV I8");
    for (li = 0; li < nl; li++) {
        int64_t L = lens[li], tiled[3], kv[4], naive;
        sdpa_plan_problem pb;
        sdpa_plan_choice c;
        char b[9][32];
        memset(&pb, 0, sizeof pb);
        pb.batch = 1; pb.q_heads = 32; pb.kv_heads = 32; pb.head_dim = 128; pb.q_len = L; pb.causal = 1;
        pb.max_threads = O.threads; pb.max_error = 1;
        for (di = 0; di < 3; di++) {
            memset(&c, 0, sizeof c);
            c.path = SDPA_PATH_SCALAR; c.dtype = di == 0 ? SDPA_F32 : (di == 1 ? SDPA_F16 : SDPA_BF16);
            c.tile_q = c.tile_k = 64; c.num_threads = O.threads;
            tiled[di] = sdpa_plan_predict(&pb, NULL, &c) == SDPA_OK ? c.bytes : -1;
        }
        naive = 32 * L * 128 * 4 * 4 + (int64_t)O.threads * (L * L * 4 + 128 * L * 4);
        pb.kind = SDPA_PLAN_DECODE; pb.q_len = 1; pb.kv_len = L;
        for (di = 0; di < 4; di++) {
            memset(&c, 0, sizeof c);
            c.path = SDPA_PATH_SCALAR; c.dtype = di == 0 ? SDPA_F32 : (di == 1 ? SDPA_F16 : (di == 2 ? SDPA_BF16 : SDPA_I8));
            c.num_threads = O.threads;
            kv[di] = sdpa_plan_predict(&pb, NULL, &c) == SDPA_OK ? c.bytes : -1;
        }
        fprintf(T, "  %7lld %12s %12s %12s %12s | %12s %12s %12s %12s\n", (long long)L, bc_fmt_bytes((double)naive, b[0], 32),
                bc_fmt_bytes((double)tiled[0], b[1], 32), bc_fmt_bytes((double)tiled[1], b[2], 32),
                bc_fmt_bytes((double)tiled[2], b[3], 32), bc_fmt_bytes((double)kv[0], b[4], 32),
                bc_fmt_bytes((double)kv[1], b[5], 32), bc_fmt_bytes((double)kv[2], b[6], 32), bc_fmt_bytes((double)kv[3], b[7], 32));
        row_begin("memory");
        row_i("L", L); row_i("naive_f32", naive);
        for (di = 0; di < 3; di++) { char k[32]; snprintf(k, sizeof k, "tiled_%s", dtn[di]); row_i(k, tiled[di]); }
        for (di = 0; di < 4; di++) { char k[32]; snprintf(k, sizeof k, "kv_%s", dtn[di]); row_i(k, kv[di]); }
        row_end();
    }
}

/* ------------------------------------------------- sweep, Pareto, planner */

/* Every candidate of a problem measured: time (median of sweep_reps after
 * one warm-up), memory (the planner's exact bytes), error (rel L2 against
 * float64 on sampled rows). */
typedef struct msweep {
    char name[64];
    sdpa_plan_problem pb;
    sdpa_plan_choice *c;   /* the candidates, as the default model predicts them */
    int64_t n;
    double *med, *lo, *hi, *err;
} msweep;

static void sweep_free(msweep *S)
{
    free(S->c); free(S->med); free(S->lo); free(S->hi); free(S->err);
    memset(S, 0, sizeof *S);
}

static void sweep_run(msweep *S, const char *name, const sdpa_plan_problem *pb)
{
    mprob P;
    void *out;
    double *got;
    sdpa_kv_cache *caches[4] = {NULL, NULL, NULL, NULL};
    int64_t i;
    int decode = pb->kind == SDPA_PLAN_DECODE, rc;
    double t0 = bc_now();
    memset(S, 0, sizeof *S);
    snprintf(S->name, sizeof S->name, "%.63s", name);
    S->pb = *pb;
    S->pb.max_error = 1.0; /* every candidate: the constraints are applied afterwards */
    S->pb.mem_budget = 0;
    rc = sdpa_plan_candidates(&S->pb, NULL, NULL, 0, &S->n);
    if (rc != SDPA_OK || S->n <= 0) { fprintf(stderr, "bench: candidates: %s\n", sdpa_strerror(rc)); exit(1); }
    S->c = (sdpa_plan_choice *)bc_xmalloc((size_t)S->n * sizeof *S->c);
    S->med = (double *)bc_xmalloc((size_t)S->n * sizeof(double));
    S->lo = (double *)bc_xmalloc((size_t)S->n * sizeof(double));
    S->hi = (double *)bc_xmalloc((size_t)S->n * sizeof(double));
    S->err = (double *)bc_xmalloc((size_t)S->n * sizeof(double));
    sdpa_plan_candidates(&S->pb, NULL, S->c, S->n, &S->n);
    mprob_make(&P, pb->batch, pb->q_heads, pb->kv_heads, decode ? (pb->q_len ? pb->q_len : 1) : pb->q_len,
               pb->kv_len ? pb->kv_len : pb->q_len, pb->head_dim, decode || pb->causal, 5, decode ? 1 | 4 : 1);
    out = bc_xmalloc((size_t)P.nq * 4);
    got = (double *)bc_xmalloc((size_t)(P.nrows * P.D) * sizeof(double));
    for (i = 0; i < S->n; i++) {
        const sdpa_plan_choice *c = &S->c[i];
        mrun r;
        timing tm;
        errs e;
        memset(&r, 0, sizeof r);
        mprob_tensors(&P, decode ? SDPA_F32 : c->dtype, out, &r.q, &r.k, &r.v, &r.o);
        if (decode) {
            int di = c->dtype == SDPA_F32 ? 0 : c->dtype == SDPA_F16 ? 1 : c->dtype == SDPA_BF16 ? 2 : 3;
            if (!caches[di]) caches[di] = mprob_cache(&P, c->dtype);
            r.cache = caches[di];
        }
        r.p.causal = P.causal ? SDPA_CAUSAL_BOTTOM_RIGHT : SDPA_CAUSAL_NONE;
        r.p.path = c->path;
        r.p.precision = c->precision;
        r.p.tile_q = c->tile_q;
        r.p.tile_k = c->tile_k;
        tm = mrun_time(&r, c->num_threads, O.warmup, O.sweep_reps);
        mprob_sample(&P, out, decode ? SDPA_F32 : c->dtype, got);
        e = err_of(got, P.ref, P.nrows * P.D);
        S->med[i] = tm.med; S->lo[i] = tm.lo; S->hi[i] = tm.hi; S->err[i] = e.rel_l2;
    }
    for (i = 0; i < 4; i++) sdpa_kv_cache_destroy(caches[i]);
    free(out);
    free(got);
    mprob_free(&P);
    fprintf(T, "  swept %s: %lld configurations in %.1f s\n", S->name, (long long)S->n, bc_now() - t0);
}

static const char *dt_name(sdpa_dtype t)
{
    return t == SDPA_F32 ? "F32" : t == SDPA_F16 ? "F16" : t == SDPA_BF16 ? "BF16" : t == SDPA_I8 ? "I8" : "?";
}

static void choice_str(const sdpa_plan_choice *c, int decode, char *buf, size_t n)
{
    if (decode)
        snprintf(buf, n, "%s kv-%s %dt", sdpa_path_name(c->path), dt_name(c->dtype), c->num_threads);
    else
        snprintf(buf, n, "%s %s%s %dx%d %dt", sdpa_path_name(c->path), dt_name(c->dtype),
                 c->precision ? "+i8qk" : "", c->tile_q, c->tile_k, c->num_threads);
}

/* The Pareto frontier over (time, memory, error): the points no other point
 * beats or equals in all three while beating in one. */
static void pareto_print(const msweep *S)
{
    int64_t i, j, nf = 0;
    int decode = S->pb.kind == SDPA_PLAN_DECODE;
    char *front = (char *)calloc((size_t)S->n, 1);
    for (i = 0; i < S->n; i++) {
        int dominated = 0;
        for (j = 0; j < S->n && !dominated; j++)
            if (j != i && S->med[j] <= S->med[i] && S->c[j].bytes <= S->c[i].bytes && S->err[j] <= S->err[i] &&
                (S->med[j] < S->med[i] || S->c[j].bytes < S->c[i].bytes || S->err[j] < S->err[i]))
                dominated = 1;
        front[i] = !dominated;
        nf += front[i];
    }
    fprintf(T, "\n  Pareto frontier of %s: %lld of %lld configurations (time x memory x error)\n", S->name, (long long)nf,
            (long long)S->n);
    fprintf(T, "    %-32s %10s %10s %10s %10s | predicted %10s %9s\n", "configuration", "median s", "spread", "memory",
            "rel L2", "s", "rel L2");
    for (i = 0; i < S->n; i++) {
        char cs[96], mb[32];
        choice_str(&S->c[i], decode, cs, sizeof cs);
        row_begin("pareto");
        row_s("problem", S->name); row_s("config", cs); row_s("path", sdpa_path_name(S->c[i].path));
        row_s("dtype", dt_name(S->c[i].dtype)); row_i("precision", S->c[i].precision); row_i("tile_q", S->c[i].tile_q);
        row_i("tile_k", S->c[i].tile_k); row_i("threads", S->c[i].num_threads); row_f("median_s", S->med[i]);
        row_f("min_s", S->lo[i]); row_f("max_s", S->hi[i]); row_i("bytes", S->c[i].bytes); row_f("rel_l2", S->err[i]);
        row_f("pred_s", S->c[i].seconds); row_f("pred_rel_l2", S->c[i].error); row_i("frontier", front[i]);
        row_end();
        if (!front[i]) continue;
        fprintf(T, "    %-32s %10.5f %9.0f%% %10s %10.2e | %10.5f %9.1e\n", cs, S->med[i],
                100.0 * (S->hi[i] - S->lo[i]) / S->med[i], bc_fmt_bytes((double)S->c[i].bytes, mb, sizeof mb), S->err[i],
                S->c[i].seconds, S->c[i].error);
    }
    free(front);
}

/* A model fitted to sweeps (all but `skip`), starting from `base` (whose
 * key loading, pre-pass, overheads and bandwidth it keeps): per path, dtype
 * and mode the products' speed from the one-thread 64 x 64 points, the tile
 * factors and the thread efficiency as medians of ratios, the errors as
 * measured; decode speeds scaled by the median of measured / predicted.
 * Times become rates through the planner's own replay: a prediction with
 * unit speeds and nothing else is the GFLOP a candidate computes; one with
 * infinite speed is what the rest costs. */
static double dmedian(double *x, int n)
{
    int i, j;
    for (i = 1; i < n; i++)
        for (j = i; j > 0 && x[j - 1] > x[j]; j--) { double t = x[j]; x[j] = x[j - 1]; x[j - 1] = t; }
    return n == 0 ? 0.0 : (n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]));
}

static int dix3(sdpa_dtype t) { return t == SDPA_F32 ? 0 : t == SDPA_F16 ? 1 : 2; }

/* the products' GFLOP/s a measured prefill candidate shows under model m
 * (its tile factor and thread efficiency included), or 0 */
static double fit_rate(const msweep *S, int64_t i, const sdpa_plan_model *m)
{
    sdpa_plan_model unit = *m, rest = *m;
    sdpa_plan_choice u = S->c[i], k = S->c[i];
    int p, d, e;
    for (p = 0; p <= SDPA__PATH_LAST; p++) {
        unit.key_s[p] = unit.i8_key_s[p] = 0.0;
        for (d = 0; d < 3; d++)
            for (e = 0; e < 2; e++) {
                unit.gflops[p][d][e] = m->gflops[p][d][e] > 0 ? 1.0 : 0.0;
                rest.gflops[p][d][e] = m->gflops[p][d][e] > 0 ? 1e12 : 0.0;
            }
    }
    unit.call_s = unit.worker_s = unit.task_s = 0.0;
    unit.thread_eff = 1.0; unit.eff_threads = 1;
    for (p = 0; p < SDPA_PLAN_NTQ; p++) for (d = 0; d < SDPA_PLAN_NTK; d++) unit.tile_speed[p][d] = 1.0;
    if (sdpa_plan_predict(&S->pb, &unit, &u) != SDPA_OK || sdpa_plan_predict(&S->pb, &rest, &k) != SDPA_OK) return 0.0;
    if (!(S->med[i] > k.seconds)) return 0.0;
    return u.seconds / (S->med[i] - k.seconds);
}

static void model_fit(sdpa_plan_model *m, const sdpa_plan_model *base, const msweep *S, int ns, int skip)
{
    static double buf[1 << 16];
    int s, p, d, e, qi, ki, nb;
    int64_t i;
    *m = *base;
    m->thread_eff = 1.0; m->eff_threads = 1;
    for (qi = 0; qi < SDPA_PLAN_NTQ; qi++) for (ki = 0; ki < SDPA_PLAN_NTK; ki++) m->tile_speed[qi][ki] = 1.0;
#define FIT_EACH(cond, expr)                                                          \
    nb = 0;                                                                           \
    for (s = 0; s < ns; s++) {                                                        \
        if (s == skip || S[s].pb.kind != SDPA_PLAN_PREFILL) continue;                 \
        for (i = 0; i < S[s].n && nb < (1 << 16); i++) {                             \
            const sdpa_plan_choice *c = &S[s].c[i];                                   \
            double x;                                                                 \
            if (!(cond)) continue;                                                    \
            x = (expr);                                                               \
            if (x > 0.0) buf[nb++] = x;                                               \
        }                                                                             \
    }
    /* 1. the products' speed (tile factors 1, one thread) */
    for (p = 1; p <= SDPA__PATH_LAST; p++)
        for (d = 0; d < 3; d++)
            for (e = 0; e < 2; e++) {
                FIT_EACH((int)c->path == p && dix3(c->dtype) == d && (c->precision != 0) == e && c->num_threads == 1 &&
                             c->tile_q == 64 && c->tile_k == 64,
                         fit_rate(&S[s], i, m))
                if (nb) m->gflops[p][d][e] = dmedian(buf, nb);
            }
    /* 2. tile factors: the rate at each tile over the path's fitted rate */
    {
        sdpa_plan_model m1 = *m;
        for (qi = 0; qi < SDPA_PLAN_NTQ; qi++)
            for (ki = 0; ki < SDPA_PLAN_NTK; ki++) {
                FIT_EACH(c->num_threads == 1 && c->tile_q == (32 << qi) && c->tile_k == (32 << ki) &&
                             m1.gflops[c->path][dix3(c->dtype)][c->precision ? 1 : 0] > 0,
                         fit_rate(&S[s], i, &m1) / m1.gflops[c->path][dix3(c->dtype)][c->precision ? 1 : 0])
                if (nb) m->tile_speed[qi][ki] = dmedian(buf, nb);
            }
    }
    /* 3. thread efficiency at O.threads */
    if (O.threads > 1) {
        sdpa_plan_model m1 = *m;
        FIT_EACH(c->num_threads == O.threads && m1.gflops[c->path][dix3(c->dtype)][c->precision ? 1 : 0] > 0,
                 fit_rate(&S[s], i, &m1) / m1.gflops[c->path][dix3(c->dtype)][c->precision ? 1 : 0])
        if (nb) {
            double e1 = dmedian(buf, nb);
            m->thread_eff = e1 > 1.0 ? 1.0 : (e1 < 0.05 ? 0.05 : e1);
            m->eff_threads = O.threads;
        }
    }
    /* 4. errors as measured */
    for (d = 0; d < 3; d++)
        for (e = 0; e < 2; e++) {
            FIT_EACH(dix3(c->dtype) == d && (c->precision != 0) == e, S[s].err[i])
            if (nb) m->error[d][e] = dmedian(buf, nb);
        }
#undef FIT_EACH
    /* decode: the base model's speeds scaled by predicted / measured, per path and storage */
    for (p = 1; p <= SDPA__PATH_LAST; p++)
        for (d = 0; d < 4; d++) {
            sdpa_dtype st = d == 0 ? SDPA_F32 : d == 1 ? SDPA_F16 : d == 2 ? SDPA_BF16 : SDPA_I8;
            nb = 0;
            for (s = 0; s < ns; s++) {
                if (s == skip || S[s].pb.kind != SDPA_PLAN_DECODE) continue;
                for (i = 0; i < S[s].n; i++) {
                    sdpa_plan_choice c = S[s].c[i];
                    if ((int)c.path == p && c.dtype == st && c.num_threads == 1 && nb < (1 << 16) &&
                        sdpa_plan_predict(&S[s].pb, base, &c) == SDPA_OK)
                        buf[nb++] = c.seconds / S[s].med[i];
                }
            }
            if (nb) { double f = dmedian(buf, nb); m->kv_gbps[p][d] = base->kv_gbps[p][d] * f; m->kv_gflops[p][d] = base->kv_gflops[p][d] * f; }
            nb = 0;
            for (s = 0; s < ns; s++) {
                if (s == skip || S[s].pb.kind != SDPA_PLAN_DECODE) continue;
                for (i = 0; i < S[s].n; i++)
                    if (S[s].c[i].dtype == st && nb < (1 << 16)) buf[nb++] = S[s].err[i];
            }
            if (nb && p == 1) m->kv_error[d] = dmedian(buf, nb);
        }
}

static void model_print(const char *name, const sdpa_plan_model *m)
{
    int p, d, ap = sdpa_path_in_use(NULL) > 0 ? sdpa_path_in_use(NULL) : SDPA_PATH_SCALAR;
    fprintf(T, "  model %s: GFLOP/s per thread (F32, F16, BF16 in; /int8):", name);
    for (p = 1; p <= SDPA__PATH_LAST; p++) {
        if (!sdpa_path_supported((sdpa_path)p)) continue;
        fprintf(T, " %s", sdpa_path_name((sdpa_path)p));
        for (d = 0; d < 3; d++) fprintf(T, " %.1f/%.1f", m->gflops[p][d][0], m->gflops[p][d][1]);
        fprintf(T, ";");
    }
    fprintf(T, " eff %.2f at %d thr; tile 128x64 %.2f, 32x32 %.2f; key load %.2g s/elem (auto path), i8 pre-pass %.2g;"
               " errors F32 %.1e BF16 %.1e i8 %.1e kv-I8 %.1e\n",
            m->thread_eff, m->eff_threads, m->tile_speed[2][1], m->tile_speed[0][0], m->key_s[ap], m->i8_key_s[ap],
            m->error[0][0], m->error[2][0], m->error[0][1], m->kv_error[3]);
    row_begin("model");
    row_s("model", name);
    for (p = 1; p <= SDPA__PATH_LAST; p++) {
        char k[48];
        if (!sdpa_path_supported((sdpa_path)p)) continue;
        for (d = 0; d < 3; d++) {
            snprintf(k, sizeof k, "%s_%s", sdpa_path_name((sdpa_path)p), d == 0 ? "F32" : d == 1 ? "F16" : "BF16");
            row_f(k, m->gflops[p][d][0]);
            snprintf(k, sizeof k, "%s_%s_i8", sdpa_path_name((sdpa_path)p), d == 0 ? "F32" : d == 1 ? "F16" : "BF16");
            row_f(k, m->gflops[p][d][1]);
        }
    }
    for (p = 1; p <= SDPA__PATH_LAST; p++) {
        char k[48];
        if (!sdpa_path_supported((sdpa_path)p)) continue;
        snprintf(k, sizeof k, "%s_key_s", sdpa_path_name((sdpa_path)p));
        row_f(k, m->key_s[p]);
        snprintf(k, sizeof k, "%s_i8_key_s", sdpa_path_name((sdpa_path)p));
        row_f(k, m->i8_key_s[p]);
    }
    for (d = 0; d < SDPA_PLAN_NTQ * SDPA_PLAN_NTK; d++) {
        char k[48];
        snprintf(k, sizeof k, "tile_%dx%d", 32 << (d / SDPA_PLAN_NTK), 32 << (d % SDPA_PLAN_NTK));
        row_f(k, m->tile_speed[d / SDPA_PLAN_NTK][d % SDPA_PLAN_NTK]);
    }
    row_f("thread_eff", m->thread_eff); row_i("eff_threads", m->eff_threads); row_f("call_s", m->call_s);
    row_f("worker_s", m->worker_s); row_f("mem_gbps", m->mem_gbps);
    row_end();
}

/* The index in S of the candidate equal to c, -1 if none. */
static int64_t sweep_find(const msweep *S, const sdpa_plan_choice *c)
{
    int64_t i;
    for (i = 0; i < S->n; i++)
        if (S->c[i].path == c->path && S->c[i].dtype == c->dtype && S->c[i].precision == c->precision &&
            S->c[i].tile_q == c->tile_q && S->c[i].tile_k == c->tile_k && S->c[i].num_threads == c->num_threads)
            return i;
    return -1;
}

typedef struct evalsum { int n, hit, within5, within10, viol, none; double ratio_sum, ratio_max; double ratios[512]; } evalsum;

static void plan_eval(msweep *S, int ns)
{
    static const double tols[3] = {1e-5, 1e-3, 2e-2};
    const char *mname[4] = {"default", "probe", "fitted (leave-one-out)", "probe + tune (k 6)"};
    sdpa_plan_model models[3];
    evalsum sum[4];
    sdpa_params base;
    int s, mi, ti, bi, have_probe;
    double tune_s = 0.0;
    memset(sum, 0, sizeof sum);
    sdpa_plan_model_default(&models[0]);
    memset(&base, 0, sizeof base);
    base.parallel_for = O.threads > 1 ? bc_pinned_parallel_for : NULL;
    have_probe = sdpa_plan_probe(&models[1], &base, O.threads) == SDPA_OK;
    fprintf(T, "\n== planner against exhaustive search: %d problems x 3 budgets x 3 tolerances; the best = the\n"
               "  fastest measured configuration whose memory fits and whose measured error fits; a pick\n"
               "  counts as a hit when it is that configuration, 'within 5%%' when its measured median is\n"
               "  within 5%% of the best's (timings here swing more than that), a violation when its\n"
               "  measured error breaks the tolerance\n", ns);
    model_print("default", &models[0]);
    if (have_probe) model_print("probe", &models[1]);
    else fprintf(T, "  model probe: sdpa_plan_probe failed; skipped\n");
    for (s = 0; s < ns; s++) {
        int decode = S[s].pb.kind == SDPA_PLAN_DECODE;
        int64_t i, minb = INT64_MAX, f32b = 0;
        for (i = 0; i < S[s].n; i++) {
            if (S[s].c[i].bytes < minb) minb = S[s].c[i].bytes;
            if (S[s].c[i].dtype == SDPA_F32 && S[s].c[i].bytes > f32b) f32b = S[s].c[i].bytes;
        }
        model_fit(&models[2], have_probe ? &models[1] : &models[0], S, ns, s);
        for (bi = 0; bi < 3; bi++)
            for (ti = 0; ti < 3; ti++) {
                sdpa_plan_problem pb = S[s].pb;
                int64_t best = -1;
                pb.max_error = tols[ti];
                pb.mem_budget = bi == 0 ? 0 : (bi == 1 ? (int64_t)((double)f32b * 0.75) : minb + minb / 50);
                for (i = 0; i < S[s].n; i++)
                    if ((pb.mem_budget == 0 || S[s].c[i].bytes <= pb.mem_budget) && S[s].err[i] <= pb.max_error &&
                        (best < 0 || S[s].med[i] < S[s].med[best]))
                        best = i;
                for (mi = 0; mi < 4; mi++) {
                    sdpa_plan_choice pick;
                    int rc;
                    int64_t at;
                    char bs[96], ps[96];
                    double ratio;
                    if (mi == 1 && !have_probe) continue;
                    if (mi == 3) { /* the probe's (or the defaults') shortlist, measured on this problem */
                        double t0 = bc_now();
                        rc = sdpa_plan_tune(&pb, have_probe ? &models[1] : &models[0], &base, 0, &pick);
                        tune_s += bc_now() - t0;
                    } else {
                        rc = sdpa_plan(&pb, &models[mi], &pick);
                    }
                    if (best < 0) {
                        if (rc != SDPA_OK) continue; /* both say: nothing fits */
                        sum[mi].n++; sum[mi].viol++;
                        continue;
                    }
                    sum[mi].n++;
                    if (rc != SDPA_OK) { sum[mi].none++; continue; }
                    at = sweep_find(&S[s], &pick);
                    if (at < 0) { sum[mi].none++; continue; }
                    ratio = S[s].med[at] / S[s].med[best];
                    if (S[s].err[at] > pb.max_error) sum[mi].viol++;
                    if (at == best) sum[mi].hit++;
                    if (ratio <= 1.05) sum[mi].within5++;
                    if (ratio <= 1.10) sum[mi].within10++;
                    sum[mi].ratio_sum += ratio;
                    if (ratio > sum[mi].ratio_max) sum[mi].ratio_max = ratio;
                    if (sum[mi].n - 1 < 512) sum[mi].ratios[sum[mi].n - 1] = ratio;
                    choice_str(&S[s].c[best], decode, bs, sizeof bs);
                    choice_str(&pick, decode, ps, sizeof ps);
                    row_begin("plan_eval");
                    row_s("problem", S[s].name); row_s("model", mname[mi]); row_i("budget", pb.mem_budget);
                    row_f("tol", pb.max_error); row_s("best", bs); row_f("best_s", S[s].med[best]); row_s("pick", ps);
                    row_f("pick_s", S[s].med[at]); row_f("pick_pred_s", pick.seconds); row_f("ratio", ratio);
                    row_f("pick_err", S[s].err[at]); row_i("hit", at == best);
                    row_end();
                    if (mi != 1)
                        fprintf(T, "  %-22s %-8s budget %10lld tol %.0e: best %-30s %.5f s | pick %-30s %.5f s (%.2fx)%s\n",
                                S[s].name, mi == 0 ? "default" : mi == 2 ? "fitted" : "tuned", (long long)pb.mem_budget, pb.max_error, bs,
                                S[s].med[best], ps, S[s].med[at], ratio, at == best ? " hit" : "");
                }
            }
    }
    {
        sdpa_plan_model all;
        model_fit(&all, have_probe ? &models[1] : &models[0], S, ns, -1);
        model_print("fitted to all sweeps", &all);
    }
    fprintf(T, "  summary (pick's measured median / the best's; the tuned picks took %.1f s of timing in all):\n", tune_s);
    for (mi = 0; mi < 4; mi++) {
        if (!sum[mi].n) continue;
        fprintf(T, "    %-24s %3d problems: best picked %3d (%3.0f%%), within 5%% %3d, within 10%% %3d; mean %.3fx, worst %.2fx;"
                   " error violations %d, no pick %d\n",
                mname[mi], sum[mi].n, sum[mi].hit, 100.0 * sum[mi].hit / sum[mi].n, sum[mi].within5, sum[mi].within10,
                sum[mi].n - sum[mi].none > 0 ? sum[mi].ratio_sum / (sum[mi].n - sum[mi].none) : 0.0, sum[mi].ratio_max,
                sum[mi].viol, sum[mi].none);
        row_begin("plan_eval_summary");
        row_s("model", mname[mi]); row_i("problems", sum[mi].n); row_i("hits", sum[mi].hit); row_i("within5", sum[mi].within5);
        row_i("within10", sum[mi].within10);
        row_f("mean_ratio", sum[mi].n - sum[mi].none > 0 ? sum[mi].ratio_sum / (sum[mi].n - sum[mi].none) : 0.0);
        row_f("median_ratio", dmedian(sum[mi].ratios, sum[mi].n - sum[mi].none < 512 ? sum[mi].n - sum[mi].none : 512));
        row_f("worst_ratio", sum[mi].ratio_max); row_i("violations", sum[mi].viol); row_i("no_pick", sum[mi].none);
        row_end();
    }
}

/* The problems of --pareto and --plan-eval: small enough to sweep here. */
static int sweep_problems(sdpa_plan_problem *pb, char (*names)[64], int eval)
{
    int n = 0;
    int64_t Ls = O.quick ? 128 : 512;  /* a sweep runs ~1500 configurations on a 16-core AVX-512/AMX machine */
    int64_t ctx = O.quick ? 2048 : (O.threads >= 8 ? 16384 : 8192);
#define ADD(kind_, hq, hkv, lq, lk, causal_, nm)                                  \
    do {                                                                         \
        memset(&pb[n], 0, sizeof pb[n]);                                         \
        pb[n].kind = kind_; pb[n].batch = 1; pb[n].q_heads = hq; pb[n].kv_heads = hkv; \
        pb[n].head_dim = 128; pb[n].q_len = lq; pb[n].kv_len = lk; pb[n].causal = causal_; \
        pb[n].max_threads = O.threads;                                           \
        snprintf(names[n], 64, "%s", nm);                                        \
        n++;                                                                     \
    } while (0)
    {
        char nm[64];
        snprintf(nm, sizeof nm, "prefill 7b-8h L%lld", (long long)Ls);
        ADD(SDPA_PLAN_PREFILL, 8, 8, Ls, 0, 1, nm);
        snprintf(nm, sizeof nm, "decode 7b ctx%lld", (long long)ctx);
        ADD(SDPA_PLAN_DECODE, 32, 32, 1, ctx, 1, nm);
        if (eval) { /* the cheap ones first: --sweep-budget cuts from the end */
            snprintf(nm, sizeof nm, "prefill 1h L64");
            ADD(SDPA_PLAN_PREFILL, 1, 1, 64, 0, 1, nm);
            snprintf(nm, sizeof nm, "decode 7b ctx%lld", (long long)(ctx / 8));
            ADD(SDPA_PLAN_DECODE, 32, 32, 1, ctx / 8, 1, nm);
            snprintf(nm, sizeof nm, "decode 64h/8 ctx%lld", (long long)ctx);
            ADD(SDPA_PLAN_DECODE, 64, 8, 1, ctx, 1, nm);
            snprintf(nm, sizeof nm, "chunk 4h q64 k%lld", (long long)(4 * Ls));
            ADD(SDPA_PLAN_PREFILL, 4, 4, 64, 4 * Ls, 1, nm);
            snprintf(nm, sizeof nm, "prefill gqa-16/4 L%lld", (long long)(Ls / 2));
            ADD(SDPA_PLAN_PREFILL, 16, 4, Ls / 2, 0, 1, nm);
            snprintf(nm, sizeof nm, "prefill 2h L%lld full", (long long)Ls);
            ADD(SDPA_PLAN_PREFILL, 2, 2, Ls, 0, 0, nm);
        }
    }
#undef ADD
    return n;
}

static void run_sweeps(int pareto, int eval)
{
    sdpa_plan_problem pb[16];
    char names[16][64];
    msweep S[16];
    int n = sweep_problems(pb, names, eval), i;
    double t0 = bc_now();
    fprintf(T, "\n== sweep: every configuration the planner considers, measured (median of %d after %d warm-ups)\n",
            O.sweep_reps, O.warmup);
    for (i = 0; i < n; i++) {
        if (i >= 2 && O.sweep_budget > 0 && bc_now() - t0 > O.sweep_budget) {
            fprintf(T, "  --sweep-budget %d s spent: the last %d problems left out\n", O.sweep_budget, n - i);
            n = i;
            break;
        }
        sweep_run(&S[i], names[i], &pb[i]);
    }
    if (pareto)
        for (i = 0; i < (eval ? 2 : n); i++) pareto_print(&S[i]);
    if (eval) plan_eval(S, n);
    for (i = 0; i < n; i++) sweep_free(&S[i]);
}

/* ------------------------------------------------------------- driver */

static int run_map(void)
{
    int64_t lens[16], ctxs[16], mlens[16];
    int nl, nc, nm, ncfg = O.cfgs;
    machine_measure();
    nl = (int)parse_list(O.lens ? O.lens : (O.quick ? "256" : (O.threads >= 8 ? "512,1024,2048,4096" : "512,1024")), lens, 16);
    nc = (int)parse_list(O.ctxs ? O.ctxs : (O.quick ? "2048" : (O.threads >= 8 ? "4096,16384,65536" : "4096,16384")), ctxs, 16);
    nm = (int)parse_list("256,512,1024,2048,4096,8192,16384,32768,65536", mlens, 16);
    if (ncfg < 1 || ncfg > 3) ncfg = O.threads >= 8 ? 2 : 1;
    if (O.memory) run_memory(mlens, nm);
    if (O.parity) run_parity();
    if (O.suite) { /* --configs 1: 7B, 2: both, 3: the 64-head one */
        int c0 = ncfg == 3 ? 1 : 0, c1 = ncfg == 1 ? 1 : 2;
        suite_prefill(lens, nl, c0, c1);
        suite_decode(ctxs, nc, c0, c1);
    }
    if (O.pareto || O.plan_eval) run_sweeps(O.pareto, O.plan_eval);
    return O.failed;
}

/* examples/olmo_layer.c - the main job (`make run`).
 *
 * One OLMo-2-7B attention layer on this CPU: batch 1, 32 heads, head_dim 128,
 * a 4096-token causal prompt (TOP_LEFT), F32, the library's default thread
 * count. It runs sdpa.h's tiled attention and the naive algorithm that
 * materialises the Lq x Lk scores, and prints for both: time, GFLOP/s, peak
 * memory growth and the max error against a float64 reference on sampled
 * rows; then a one-line verdict. Exits nonzero if an error is out of
 * tolerance or the library fails, so garbage cannot pass as a result.
 *
 *   build/olmo_layer [--seq N] [--heads N] [--dim N] [--threads N]
 *                    [--dtype f32|f16|bf16] [--no-naive] [--help]
 */
#define _GNU_SOURCE
#include "../bench/common.h"

#define SDPA_IMPLEMENTATION
#include "sdpa.h"

#define N_SAMPLES 64          /* query rows checked against float64 */
#ifndef NAIVE_BUDGET_S
#define NAIVE_BUDGET_S 40.0   /* projected seconds past which the naive stops and its time is extrapolated */
#endif

typedef struct opts {
    int64_t seq, heads, dim;
    int threads;              /* 0 = library default */
    sdpa_dtype dtype;
    int naive;
} opts;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: olmo_layer [options]\n"
        "  One OLMo-2-7B attention layer (causal prompt) with sdpa.h's tiled\n"
        "  attention and with the naive algorithm that materialises the scores.\n"
        "  --seq N      prompt length, Lq = Lk (default 4096)\n"
        "  --heads N    attention heads (default 32)\n"
        "  --dim N      head dim (default 128)\n"
        "  --threads N  threads for both paths (default 0 = the library's default)\n"
        "  --dtype T    q/k/v/out dtype: f32 (default), f16, bf16\n"
        "  --no-naive   skip the naive algorithm\n"
        "  --help       this text\n"
        "Exit status: 0 ok, 1 error out of tolerance or library failure, 2 bad usage.\n");
}

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    long long v;
    if (!s) return 0;
    v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) return 0;
    *out = (int64_t)v;
    return 1;
}

static int parse_args(int argc, char **argv, opts *o)
{
    int a;
    o->seq = 4096; o->heads = 32; o->dim = 128; o->threads = 0;
    o->dtype = SDPA_F32; o->naive = 1;
    for (a = 1; a < argc; ++a) {
        const char *arg = argv[a], *val = a + 1 < argc ? argv[a + 1] : NULL;
        int64_t x;
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) { usage(stdout); exit(0); }
        else if (!strcmp(arg, "--no-naive")) o->naive = 0;
        else if (!strcmp(arg, "--seq")) { if (!parse_i64(val, 1, 1 << 20, &x)) goto bad; o->seq = x; ++a; }
        else if (!strcmp(arg, "--heads")) { if (!parse_i64(val, 1, 1024, &x)) goto bad; o->heads = x; ++a; }
        else if (!strcmp(arg, "--dim")) { if (!parse_i64(val, 1, 1024, &x)) goto bad; o->dim = x; ++a; }
        else if (!strcmp(arg, "--threads")) { if (!parse_i64(val, 0, 256, &x)) goto bad; o->threads = (int)x; ++a; }
        else if (!strcmp(arg, "--dtype")) {
            if (!val) goto bad;
            if (!strcmp(val, "f32")) o->dtype = SDPA_F32;
            else if (!strcmp(val, "f16")) o->dtype = SDPA_F16;
            else if (!strcmp(val, "bf16")) o->dtype = SDPA_BF16;
            else goto bad;
            ++a;
        } else goto bad;
        continue;
    bad:
        fprintf(stderr, "olmo_layer: bad argument '%s'%s%s\n", arg, val ? " or value " : "", val ? val : "");
        usage(stderr);
        return 0;
    }
    return 1;
}

static const char *dtype_name(sdpa_dtype t)
{
    return t == SDPA_F16 ? "F16" : t == SDPA_BF16 ? "BF16" : "F32";
}

/* The per-element tolerance the header documents for each output dtype. */
static void tolerance(sdpa_dtype out, double *atol, double *rtol)
{
    if (out == SDPA_F16) { *atol = 1e-4; *rtol = 2e-3; }
    else if (out == SDPA_BF16) { *atol = 1e-3; *rtol = 8e-3; }
    else { *atol = 2e-5; *rtol = 1e-4; }
}

/* Round x to the dtype in place (so the float copy holds exactly what the
 * library reads) and store the 16-bit form in h. */
static void round_to(sdpa_dtype t, float *x, uint16_t *h, size_t n)
{
    size_t i;
    for (i = 0; i < n; ++i) {
        if (t == SDPA_F16) { h[i] = sdpa_f32_to_f16(x[i]); x[i] = sdpa_f16_to_f32(h[i]); }
        else { h[i] = sdpa_f32_to_bf16(x[i]); x[i] = sdpa_bf16_to_f32(h[i]); }
    }
}

static float out_at(sdpa_dtype t, const void *buf, size_t idx)
{
    if (t == SDPA_F16) return sdpa_f16_to_f32(((const uint16_t *)buf)[idx]);
    if (t == SDPA_BF16) return sdpa_bf16_to_f32(((const uint16_t *)buf)[idx]);
    return ((const float *)buf)[idx];
}

/* Sample s of N_SAMPLES: (head, row). Rows spread evenly from the first to
 * the last; heads cycle with a stride coprime to 32 so all get visited. */
static void sample_at(int s, int64_t H, int64_t L, int64_t *h, int64_t *i)
{
    *i = (int64_t)((double)s * (double)(L - 1) / (double)(N_SAMPLES - 1) + 0.5);
    *h = ((int64_t)s * 13) % H;
}

/* Check the sampled rows of out (dtype t) whose head is < h_limit. */
static bc_err check_rows(const float *q, const float *k, const float *v, const void *out,
                         sdpa_dtype t, const bc_attn_shape *s, int64_t h_limit,
                         double atol, double rtol)
{
    bc_err e;
    double *ref = (double *)bc_xmalloc((size_t)s->Dv * sizeof(double));
    float *got = (float *)bc_xmalloc((size_t)s->Dv * sizeof(float));
    int n;
    bc_err_init(&e);
    for (n = 0; n < N_SAMPLES; ++n) {
        int64_t h, i, d, nvis;
        size_t row;
        sample_at(n, s->H, s->Lq, &h, &i);
        if (h >= h_limit) continue;
        nvis = s->causal ? (i + 1 < s->Lk ? i + 1 : s->Lk) : s->Lk;
        bc_ref_row(q + (size_t)((h * s->Lq + i) * s->D), k + (size_t)(h * s->Lk * s->D), s->D,
                   v + (size_t)(h * s->Lk * s->Dv), s->Dv, nvis, s->D, s->Dv, s->scale, ref);
        row = (size_t)((h * s->Lq + i) * s->Dv);
        for (d = 0; d < s->Dv; ++d) got[d] = out_at(t, out, row + (size_t)d);
        bc_err_add(&e, got, ref, s->Dv, atol, rtol);
    }
    free(ref);
    free(got);
    return e;
}

int main(int argc, char **argv)
{
    opts o;
    bc_attn_shape s;
    sdpa_tensor tq, tk, tv, to;
    sdpa_params p;
    size_t nq, nk, nv, no, esz;
    float *q, *k, *v, *naive_out = NULL;
    void *qd, *kd, *vd, *out;
    double atol, rtol, flops, t0, t_tiled, t_naive = 0.0, t_phase;
    int64_t ws, grow_tiled, grow_naive = -1, naive_heads = 0;
    int threads, rc, fail = 0, extrapolated = 0;
    bc_peak pk;
    bc_err e_tiled, e_naive;
    char b1[32], b2[32], b3[32], errbuf[256];

    if (!parse_args(argc, argv, &o)) return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);

    s.B = 1; s.H = o.heads; s.Hkv = o.heads; s.Lq = o.seq; s.Lk = o.seq;
    s.D = o.dim; s.Dv = o.dim; s.scale = (float)(1.0 / sqrt((double)o.dim));
    s.causal = 1;
    nq = (size_t)(s.B * s.H * s.Lq * s.D); nk = (size_t)(s.B * s.Hkv * s.Lk * s.D);
    nv = (size_t)(s.B * s.Hkv * s.Lk * s.Dv); no = (size_t)(s.B * s.H * s.Lq * s.Dv);
    esz = o.dtype == SDPA_F32 ? 4 : 2;
    threads = o.threads > 0 ? o.threads : bc_cpus_online();
    tolerance(o.dtype, &atol, &rtol);
    flops = bc_attn_flops(&s);

    printf("sdpa.h %s - main job: one OLMo-2-7B attention layer on this CPU\n", sdpa_version());
    printf("  shape    q, k, v, out [batch %lld, heads %lld, seq %lld, head_dim %lld], causal TOP_LEFT,"
           " scale 1/sqrt(%lld)\n", (long long)s.B, (long long)s.H, (long long)s.Lq, (long long)s.D,
           (long long)s.D);
    printf("  dtype    %s in, %s out, float32 accumulation\n", dtype_name(o.dtype), dtype_name(o.dtype));
    if (o.threads == 0)
        printf("  threads  %d (num_threads = 0: the library's default, the CPUs online)\n", threads);
    else
        printf("  threads  %d (--threads)\n", threads);
    {
        int path = sdpa_path_in_use(NULL);
        const char *env = getenv("SDPA_PATH");
        if (path <= 0)
            printf("  path     none (SDPA_PATH=%.32s names no path this build and CPU have)\n", env ? env : "");
        else
            printf("  path     %s (%s)\n", sdpa_path_name((sdpa_path)path),
                   env && *env ? "forced by SDPA_PATH" : "the best this CPU supports; SDPA_PATH=scalar forces the portable C");
    }
    printf("  FLOPs    %.1f GFLOP: 2*D (q.k) + 2*Dv (p*v) per visible (i, j) pair, j <= i only\n"
           "           (%.0f%% of the dense 4*L*L*D*H), softmax not counted\n",
           flops * 1e-9, 100.0 * bc_visible_pairs(s.Lq, s.Lk, 1) / ((double)s.Lq * (double)s.Lk));
    printf("  check    %d sampled rows (first and last included) vs float64; tolerance per element\n"
           "           %g + %g*|ref| (%s out)\n", N_SAMPLES, atol, rtol, dtype_name(o.dtype));

    /* ---- inputs: float copies (for the reference and the naive), and the
     * tensors the library reads (the same buffers for F32) */
    t_phase = bc_now();
    printf("[1/4] inputs: q, k, v %s each, out %s ... ",
           bc_fmt_bytes((double)nq * (double)esz, b1, sizeof b1),
           bc_fmt_bytes((double)no * (double)esz, b2, sizeof b2));
    fflush(stdout);
    q = (float *)bc_xmalloc(nq * 4); k = (float *)bc_xmalloc(nk * 4); v = (float *)bc_xmalloc(nv * 4);
    bc_fill_uniform(q, nq, 0x5d9a0001u, -1.0f, 1.0f);
    bc_fill_uniform(k, nk, 0x5d9a0002u, -1.0f, 1.0f);
    bc_fill_uniform(v, nv, 0x5d9a0003u, -1.0f, 1.0f);
    if (o.dtype == SDPA_F32) {
        qd = q; kd = k; vd = v;
    } else {
        qd = bc_xmalloc(nq * 2); kd = bc_xmalloc(nk * 2); vd = bc_xmalloc(nv * 2);
        round_to(o.dtype, q, (uint16_t *)qd, nq);
        round_to(o.dtype, k, (uint16_t *)kd, nk);
        round_to(o.dtype, v, (uint16_t *)vd, nv);
    }
    out = bc_xmalloc(no * esz);
    memset(out, 0xff, no * esz);   /* NaN poison: a row the library skips fails the check */
    if (o.naive) {
        naive_out = (float *)bc_xmalloc(no * 4);
        memset(naive_out, 0xff, no * 4);
    }
    printf("done (%.1f s)\n", bc_now() - t_phase);

    memset(&tq, 0, sizeof tq);
    tq.data = qd; tq.dtype = o.dtype;
    tq.shape[0] = s.B; tq.shape[1] = s.H; tq.shape[2] = s.Lq; tq.shape[3] = s.D;
    tk = tq; tk.data = kd; tk.shape[1] = s.Hkv; tk.shape[2] = s.Lk;
    tv = tk; tv.data = vd; tv.shape[3] = s.Dv;
    to = tq; to.data = out; to.shape[3] = s.Dv;
    memset(&p, 0, sizeof p);
    p.causal = SDPA_CAUSAL_TOP_LEFT;
    p.num_threads = o.threads;
    errbuf[0] = '\0';
    p.errbuf = errbuf; p.errbuf_size = sizeof errbuf;

    ws = sdpa_workspace_size(&tq, &tk, &tv, &to, &p);
    if (ws < 0) {
        fprintf(stderr, "sdpa_workspace_size: %s (%s)\n", sdpa_strerror((int)ws), errbuf);
        return 1;
    }

    /* ---- tiled */
    printf("[2/4] tiled sdpa_attention: one call, %lld heads, %d threads ... ", (long long)s.H, threads);
    fflush(stdout);
    bc_peak_begin(&pk);
    t0 = bc_now();
    rc = sdpa_attention(&tq, &tk, &tv, &to, &p);
    t_tiled = bc_now() - t0;
    bc_peak_end(&pk);
    grow_tiled = bc_peak_growth_bytes(&pk);
    if (rc != SDPA_OK) {
        printf("failed\n");
        fprintf(stderr, "sdpa_attention: %s (%s)\n", sdpa_strerror(rc), errbuf);
        return 1;
    }
    printf("%.2f s\n", t_tiled);
    e_tiled = check_rows(q, k, v, out, o.dtype, &s, s.H, atol, rtol);

    /* ---- naive, in groups of `threads` heads so it can stop early */
    if (o.naive) {
        double naive_atol, naive_rtol;
        printf("[3/4] naive (materialises the %lld x %lld scores, %s per head in flight), %d threads over heads:\n",
               (long long)s.Lq, (long long)s.Lk, bc_fmt_bytes((double)s.Lq * (double)s.Lk * 4.0, b1, sizeof b1),
               threads);
        bc_naive_ws nws;
        double shown = 0.0;
        memset(&nws, 0, sizeof nws);
        bc_peak_begin(&pk);
        while (naive_heads < s.H) {
            int64_t next = naive_heads + threads < s.H ? naive_heads + threads : s.H;
            t0 = bc_now();
            if (bc_naive_attention(q, k, v, naive_out, &s, naive_heads, next, threads, 0, &nws) != 0) {
                fprintf(stderr, "naive: out of memory\n");
                return 2;
            }
            t_naive += bc_now() - t0;
            naive_heads = next;
            if (naive_heads == s.H || t_naive - shown >= 1.0) {   /* a progress line a second */
                printf("      heads %lld/%lld, %.2f s\n", (long long)naive_heads, (long long)s.H, t_naive);
                shown = t_naive;
            }
            if (naive_heads < s.H && t_naive * (double)s.H / (double)naive_heads > NAIVE_BUDGET_S) {
                printf("      heads %lld/%lld, %.2f s\n", (long long)naive_heads, (long long)s.H, t_naive);
                extrapolated = 1;
                break;
            }
        }
        bc_peak_end(&pk);
        bc_naive_ws_free(&nws);
        grow_naive = bc_peak_growth_bytes(&pk);
        if (extrapolated) {
            printf("      stopping: all %lld heads would take ~%.0f s; the time below is extrapolated\n"
                   "      from %lld heads (x %.2f), the error is checked on those heads only\n",
                   (long long)s.H, t_naive * (double)s.H / (double)naive_heads,
                   (long long)naive_heads, (double)s.H / (double)naive_heads);
            t_naive *= (double)s.H / (double)naive_heads;
        }
        if (o.dtype != SDPA_F32)
            printf("      (the naive reads the same %s-rounded inputs widened to F32 and writes F32,\n"
                   "      so it is checked at the F32 tolerance)\n", dtype_name(o.dtype));
        tolerance(SDPA_F32, &naive_atol, &naive_rtol);
        e_naive = check_rows(q, k, v, naive_out, SDPA_F32, &s, naive_heads, naive_atol, naive_rtol);
    } else {
        printf("[3/4] naive skipped (--no-naive)\n");
        bc_err_init(&e_naive);
    }

    /* ---- results */
    printf("[4/4] results\n");
    printf("  %-26s %9s %10s %18s %12s %9s\n", "", "time", "GFLOP/s", "peak mem growth", "max |err|", "err/tol");
    printf("  %-26s %8.2fs %10.2f %18s %12.3g %9.3f\n", "tiled (sdpa.h)", t_tiled, flops / t_tiled * 1e-9,
           bc_fmt_bytes((double)grow_tiled, b1, sizeof b1), e_tiled.max_abs, e_tiled.max_ratio);
    if (o.naive)
        printf("  %-26s %8.2fs %10.2f %18s %12.3g %9.3f\n",
               extrapolated ? "naive (extrapolated time)" : "naive (materialised S)", t_naive,
               flops / t_naive * 1e-9, bc_fmt_bytes((double)grow_naive, b2, sizeof b2),
               e_naive.max_abs, e_naive.max_ratio);
    printf("  tiled workspace (sdpa_workspace_size): %s, all workers;\n"
           "  naive needs %d x (S %s + Kt %s) in flight (one per thread)\n",
           bc_fmt_bytes((double)ws, b1, sizeof b1), threads < s.H ? threads : (int)s.H,
           bc_fmt_bytes((double)s.Lq * (double)s.Lk * 4.0, b2, sizeof b2),
           bc_fmt_bytes((double)s.D * (double)s.Lk * 4.0, b3, sizeof b3));
    printf("  peak mem growth = rise of VmHWM above the RSS before the call (inputs and\n"
           "  outputs already resident)%s\n", pk.reset_ok ? "" : "; VmHWM could not be reset, so it is approximate");

    if (e_tiled.bad || e_tiled.rows == 0) {
        printf("FAIL: tiled output out of tolerance in %lld of %lld checked values (%lld not finite)\n",
               (long long)e_tiled.bad, (long long)(e_tiled.rows * s.Dv), (long long)e_tiled.nonfinite);
        fail = 1;
    }
    if (o.naive && (e_naive.bad || e_naive.rows == 0)) {
        printf("FAIL: naive output out of tolerance in %lld values: the comparison is void\n",
               (long long)e_naive.bad);
        fail = 1;
    }
    if (!fail && o.naive) {
        double speed = t_naive / t_tiled;
        double mt = (double)(grow_tiled > ws ? grow_tiled : ws);
        if (mt < 4096.0) mt = 4096.0;
        printf("verdict: tiled is %.2fx %s the naive (%.3g s vs %.3g s%s) and needs %.3gx less extra memory\n"
               "         (tiled %s, the larger of workspace and growth; naive %s); both within\n"
               "         tolerance (tiled on %lld sampled rows, naive on %lld)\n",
               speed >= 1.0 ? speed : 1.0 / speed, speed >= 1.0 ? "faster than" : "SLOWER than",
               t_tiled, t_naive, extrapolated ? ", naive extrapolated" : "",
               (double)grow_naive / mt, bc_fmt_bytes(mt, b1, sizeof b1),
               bc_fmt_bytes((double)grow_naive, b2, sizeof b2), (long long)e_tiled.rows,
               (long long)e_naive.rows);
    } else if (!fail) {
        printf("verdict: tiled %.2f s, %.2f GFLOP/s, within tolerance on %lld sampled rows\n",
               t_tiled, flops / t_tiled * 1e-9, (long long)e_tiled.rows);
    }

    if (o.dtype != SDPA_F32) { free(qd); free(kd); free(vd); }
    free(q); free(k); free(v); free(out); free(naive_out);
    return fail;
}

/* bench/hwy.c - the Highway backend against sdpa.h's hand-written paths, on
 * the same shapes, in the same run (make bench-hwy).
 *
 * For each shape: every sdpa.h path this CPU runs (scalar, avx2, avx512,
 * amx, neon; forced through params.path) and every Highway target
 * (forced through sdpa_hwy_force_target), each first checked against a
 * float64 reference on sampled rows (the documented bound: a row outside it
 * marks the result BAD), then timed: one warm-up call, then --reps calls
 * (default 5), the median and the spread (min..max) reported, as GFLOP/s
 * of the visible (i, j) pairs, and as a ratio to the best hand-written path
 * of the same width class. One thread by default (--threads N).
 *
 *   build/hwy/bench_hwy [--reps N] [--threads N] [--quick]
 */
#define _GNU_SOURCE
#include "common.h"

#define SDPA_IMPLEMENTATION
#include "sdpa.h"
#include "sdpa_hwy.h"

typedef struct shape {
    const char *name;
    int64_t B, H, Hkv, L, D;
    sdpa_dtype dt;
    int causal;
} shape;

static const char *dt_str(sdpa_dtype t) { return t == SDPA_F32 ? "F32" : t == SDPA_F16 ? "F16" : "BF16"; }

typedef struct run {
    char name[48];
    double med, lo, hi; /* seconds */
    double err;         /* largest err / tol over the sampled rows */
} run;

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Widen a tensor's storage to float for the reference. */
static void to_f32(float *dst, const void *src, sdpa_dtype t, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        dst[i] = t == SDPA_F32 ? ((const float *)src)[i]
                 : t == SDPA_F16 ? sdpa_f16_to_f32(((const uint16_t *)src)[i])
                                 : sdpa_bf16_to_f32(((const uint16_t *)src)[i]);
}

int main(int argc, char **argv)
{
    shape shapes[] = {
        {"prefill", 1, 8, 8, 1024, 128, SDPA_F32, 0},
        {"prefill causal", 1, 8, 8, 2048, 64, SDPA_F32, 1},
        {"prefill", 1, 8, 8, 1024, 128, SDPA_F16, 0},
        {"prefill", 1, 8, 8, 1024, 128, SDPA_BF16, 0},
        {"GQA 32/8 causal", 1, 32, 8, 512, 128, SDPA_F32, 1},
    };
    int reps = 5, threads = 1, quick = 0, si, a;
    for (a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--reps") && a + 1 < argc) reps = atoi(argv[++a]);
        else if (!strcmp(argv[a], "--threads") && a + 1 < argc) threads = atoi(argv[++a]);
        else if (!strcmp(argv[a], "--quick")) quick = 1;
        else { fprintf(stderr, "usage: %s [--reps N] [--threads N] [--quick]\n", argv[0]); return 2; }
    }
    if (reps < 1) reps = 1;
    {
        int64_t tg[64];
        int n = sdpa_hwy_targets(tg, 64), i;
        printf("bench-hwy: %d thread%s, %d timed reps (median, min..max), GFLOP/s of visible pairs; Highway targets:",
               threads, threads == 1 ? "" : "s", reps);
        for (i = 0; i < n && i < 64; i++) printf(" %s", sdpa_hwy_target_name(tg[i]));
        printf("\n");
#if defined(BC_HAVE_AVX2FMA_PROBE)
        printf("FMA peak of one core (avx2+fma probe): %.1f GFLOP/s\n", bc_measure_peak_gflops_avx2fma(1, 20000000, 3));
#endif
    }
    for (si = 0; si < (int)(sizeof shapes / sizeof shapes[0]); si++) {
        shape S = shapes[si];
        int64_t L = quick ? S.L / 4 : S.L, D = S.D;
        size_t nq = (size_t)(S.B * S.H * L * D), nk = (size_t)(S.B * S.Hkv * L * D), es = S.dt == SDPA_F32 ? 4 : 2;
        void *q = bc_xmalloc(nq * es), *k = bc_xmalloc(nk * es), *v = bc_xmalloc(nk * es);
        float *qf = (float *)bc_xmalloc(nq * 4), *kf = (float *)bc_xmalloc(nk * 4), *vf = (float *)bc_xmalloc(nk * 4);
        float *o = (float *)bc_xmalloc(nq * 4);
        double *ref = (double *)bc_xmalloc((size_t)D * sizeof(double)), flops, times[64];
        bc_attn_shape as;
        run runs[32];
        int nr = 0, impl, r, i;
        size_t z;
        int64_t hand_best = -1;
        sdpa_tensor tq, tk, tv, to;
        bc_fill_uniform(qf, nq, 1 + si, -1, 1);
        bc_fill_uniform(kf, nk, 2 + si, -1, 1);
        bc_fill_uniform(vf, nk, 3 + si, -1, 1);
        for (z = 0; z < nq; z++) { /* store, then read back what is stored: the reference sees the same values */
            if (S.dt == SDPA_F16) ((uint16_t *)q)[z] = sdpa_f32_to_f16(qf[z]);
            else if (S.dt == SDPA_BF16) ((uint16_t *)q)[z] = sdpa_f32_to_bf16(qf[z]);
            else ((float *)q)[z] = qf[z];
        }
        for (z = 0; z < nk; z++) {
            if (S.dt == SDPA_F16) ((uint16_t *)k)[z] = sdpa_f32_to_f16(kf[z]), ((uint16_t *)v)[z] = sdpa_f32_to_f16(vf[z]);
            else if (S.dt == SDPA_BF16) ((uint16_t *)k)[z] = sdpa_f32_to_bf16(kf[z]), ((uint16_t *)v)[z] = sdpa_f32_to_bf16(vf[z]);
            else ((float *)k)[z] = kf[z], ((float *)v)[z] = vf[z];
        }
        to_f32(qf, q, S.dt, nq);
        to_f32(kf, k, S.dt, nk);
        to_f32(vf, v, S.dt, nk);
        memset(&tq, 0, sizeof tq);
        tk = tv = to = tq;
        tq.data = q, tq.dtype = S.dt, tq.shape[0] = S.B, tq.shape[1] = S.H, tq.shape[2] = L, tq.shape[3] = D;
        tk.data = k, tk.dtype = S.dt, tk.shape[0] = S.B, tk.shape[1] = S.Hkv, tk.shape[2] = L, tk.shape[3] = D;
        tv = tk, tv.data = v;
        to = tq, to.data = o, to.dtype = SDPA_F32;
        as.B = S.B, as.H = S.H, as.Hkv = S.Hkv, as.Lq = as.Lk = L, as.D = as.Dv = D, as.scale = 0, as.causal = S.causal;
        flops = bc_attn_flops(&as);
        printf("\n%s %s: B=%lld H=%lld Hkv=%lld L=%lld D=%lld (%.2f GFLOP per call)\n", S.name, dt_str(S.dt),
               (long long)S.B, (long long)S.H, (long long)S.Hkv, (long long)L, (long long)D, flops * 1e-9);

        /* implementations: hand paths 1..SDPA__PATH_LAST, then Highway targets */
        for (impl = 0; impl < 2 * 64; impl++) {
            sdpa_params p;
            int64_t tg[64];
            int ntg = sdpa_hwy_force_target(0) == SDPA_OK ? sdpa_hwy_targets(tg, 64) : 0, hwy = impl >= 64, rc = 0;
            double worst = 0;
            if (!hwy && (impl < SDPA_PATH_SCALAR || impl > SDPA__PATH_LAST || !sdpa_path_supported((sdpa_path)impl)))
                continue;
            if (hwy && impl - 64 >= ntg) continue;
            memset(&p, 0, sizeof p);
            p.num_threads = threads;
            p.causal = S.causal ? SDPA_CAUSAL_TOP_LEFT : SDPA_CAUSAL_NONE;
            if (hwy) {
                sdpa_hwy_force_target(tg[impl - 64]);
                snprintf(runs[nr].name, sizeof runs[nr].name, "hwy %s", sdpa_hwy_target_name(tg[impl - 64]));
            } else {
                p.path = (sdpa_path)impl;
                snprintf(runs[nr].name, sizeof runs[nr].name, "sdpa.h %s", sdpa_path_name((sdpa_path)impl));
            }
            /* check: sampled rows against float64 */
            for (r = 0; r <= reps && rc == 0; r++) {
                double t0 = bc_now();
                rc = hwy ? sdpa_hwy_attention(&tq, &tk, &tv, &to, &p) : sdpa_attention(&tq, &tk, &tv, &to, &p);
                if (r > 0) times[r - 1] = bc_now() - t0;
                if (r == 0) {
                    int64_t h, row;
                    for (h = 0; h < S.H && rc == 0; h += S.H > 4 ? S.H / 4 : 1)
                        for (row = 0; row < L; row += L / 7 + 1) {
                            int64_t g = h / (S.H / S.Hkv), nvis = S.causal ? row + 1 : L, d;
                            const float *got = o + (size_t)((h * L + row) * D);
                            bc_ref_row(qf + (size_t)((h * L + row) * D), kf + (size_t)(g * L * D), D,
                                       vf + (size_t)(g * L * D), D, nvis, D, D, 1.0 / sqrt((double)D), ref);
                            for (d = 0; d < D; d++) {
                                double e = fabs((double)got[d] - ref[d]) / (2e-5 + 1e-4 * fabs(ref[d]));
                                if (!(e <= worst)) worst = e; /* NaN makes it NaN */
                            }
                        }
                }
            }
            if (rc != 0) {
                printf("  %-16s failed: %s\n", runs[nr].name, sdpa_strerror(rc));
                continue;
            }
            qsort(times, (size_t)reps, sizeof times[0], cmp_d);
            runs[nr].med = reps % 2 ? times[reps / 2] : 0.5 * (times[reps / 2 - 1] + times[reps / 2]);
            runs[nr].lo = times[0];
            runs[nr].hi = times[reps - 1];
            runs[nr].err = worst;
            if (!hwy && impl != SDPA_PATH_SCALAR && (hand_best < 0 || runs[nr].med < runs[hand_best].med))
                hand_best = nr;
            nr++;
        }
        sdpa_hwy_force_target(0);
        printf("  %-16s %10s %12s %8s %10s %s\n", "implementation", "median ms", "GFLOP/s", "x best", "err/tol", "spread ms");
        for (i = 0; i < nr; i++)
            printf("  %-16s %10.2f %12.2f %8.2f %10.3f%s %.2f..%.2f\n", runs[i].name, runs[i].med * 1e3,
                   flops / runs[i].med * 1e-9, hand_best >= 0 ? runs[hand_best].med / runs[i].med : 0.0, runs[i].err,
                   runs[i].err <= 1.0 ? "" : " BAD", runs[i].lo * 1e3, runs[i].hi * 1e3);
        if (hand_best >= 0) printf("  (x best: time of %s / time of the row)\n", runs[hand_best].name);
        free(q), free(k), free(v), free(qf), free(kf), free(vf), free(o), free(ref);
    }
    return 0;
}

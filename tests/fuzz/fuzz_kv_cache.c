/* tests/fuzz/fuzz_kv_cache.c - libFuzzer harness for the paged KV cache.
 *
 * The input bytes choose a cache (sequences, heads, head dims, storage
 * F32/F16/BF16/I8, page size, a page limit, an allocator that may fail) and
 * then a sequence of operations: append (any input dtype and layout, NaN or
 * Inf planted now and then), truncate, evict, fork, reset, read, attention
 * (GQA, causal, window, softcap, ALiBi, score_mod, lse, seqlens_q, threads
 * or a parallel_for hook, the path) and calls with bad arguments. A model
 * keeps each sequence's tokens as the cache must store them:
 *   - every call agrees with the model (lengths; read gives the stored
 *     values: F32 exact, F16/BF16 the round-to-nearest-even value, I8 within
 *     scale/2 of the input (plus the float rounding of the scale and of the
 *     product read back), a NaN scale for a row holding NaN/Inf; I8 keys
 *     scaled per channel (kscale, chosen from the cache's shape so that the
 *     corpus keeps its meaning) within the header's 2.5 steps of a channel
 *     scale of at most 1.25 max|k_d| / 127, and re-read after each append:
 *     a growing scale rounds the page's earlier keys again);
 *   - attention matches a float64 reference over the stored values within
 *     the header's F32 bounds (I8: plus its documented int16 roundings of
 *     the query and of the weights in P.V) on rows no NaN/Inf reaches; rows
 *     past seqlens_q are 0 / -inf;
 *   - a failing call (bad argument, SDPA_ERR_CAPACITY, SDPA_ERR_NOMEM)
 *     changes nothing: lengths, contents, bytes held, out;
 *   - sdpa_kv_cache_bytes equals what the allocator holds after every call,
 *     and destroy gives everything back. */

#include "sdpa.h"
#include "fuzz_common.h"

#define MAXSEQ 4
#define MAXH 3
#define MAXDIM 24
#define MAXTOK 160 /* tokens per sequence the harness lets a sequence reach */

typedef struct {
    int64_t len;
    float *k, *v; /* [len][H][D], [len][H][Dv]: the stored values (I8 dequantized) */
} mseq;

typedef struct {
    int64_t nseq, H, D, Dv, ps, max_pages;
    sdpa_dtype dt;
    int kchan;                 /* I8 keys scaled per channel */
    float kmax[MAXH][MAXDIM];  /* the largest finite |k| ever appended (bounds a page's channel scale) */
    mseq s[MAXSEQ];
} model;

static void m_reserve(model *m, mseq *s, int64_t len)
{
    s->k = (float *)realloc(s->k, (size_t)(len * m->H * m->D + 1) * sizeof(float));
    s->v = (float *)realloc(s->v, (size_t)(len * m->H * m->Dv + 1) * sizeof(float));
}

/* removes tokens [a, b) */
static void m_cut(model *m, mseq *s, int64_t a, int64_t b)
{
    int64_t rk = m->H * m->D, rv = m->H * m->Dv;
    if (a == b) return;
    memmove(s->k + a * rk, s->k + b * rk, (size_t)((s->len - b) * rk) * sizeof(float));
    memmove(s->v + a * rv, s->v + b * rv, (size_t)((s->len - b) * rv) * sizeof(float));
    s->len -= b - a;
}

static int same_f(float a, float b) { return a == b || (a != a && b != b); }

static float round_to(sdpa_dtype dt, float x)
{
    if (dt == SDPA_F16) return sdpa_f16_to_f32(sdpa_f32_to_f16(x));
    if (dt == SDPA_BF16) return sdpa_bf16_to_f32(sdpa_f32_to_bf16(x));
    return x;
}

static fz_alloc g_al;
static int g_use_al; /* the cache takes its memory from g_al */

static void check_bytes(const sdpa_kv_cache *c)
{
    if (g_use_al) FZ_CHECK(sdpa_kv_cache_bytes(c) == g_al.live, "sdpa_kv_cache_bytes %lld, the allocator holds %lld",
             (long long)sdpa_kv_cache_bytes(c), (long long)g_al.live);
}

/* every token of every sequence read back (F32) equals the model */
FZ_NOCOV static void check_contents(const sdpa_kv_cache *c, const model *m)
{
    int64_t q, x, n;
    for (q = 0; q < m->nseq; q++) {
        const mseq *s = &m->s[q];
        float *kb, *vb;
        sdpa_tensor kt = {0}, vt = {0};
        FZ_CHECK(sdpa_kv_cache_len(c, q) == s->len, "seq %lld: len %lld, model %lld", (long long)q,
                 (long long)sdpa_kv_cache_len(c, q), (long long)s->len);
        n = s->len;
        kb = (float *)malloc((size_t)(n * m->H * m->D + 1) * sizeof(float));
        vb = (float *)malloc((size_t)(n * m->H * m->Dv + 1) * sizeof(float));
        /* [1, H, n, dim] read through strides that put the token outermost, as the model holds it */
        kt.data = kb, kt.dtype = SDPA_F32, kt.shape[0] = 1, kt.shape[1] = m->H, kt.shape[2] = n, kt.shape[3] = m->D;
        kt.stride[0] = n * m->H * m->D, kt.stride[1] = m->D, kt.stride[2] = m->H * m->D, kt.stride[3] = 1;
        vt = kt, vt.data = vb, vt.shape[3] = m->Dv;
        vt.stride[0] = n * m->H * m->Dv, vt.stride[1] = m->Dv, vt.stride[2] = m->H * m->Dv;
        FZ_CHECK(sdpa_kv_cache_read(c, q, 0, &kt, &vt) == SDPA_OK, "read of seq %lld", (long long)q);
        for (x = 0; x < n * m->H * m->D; x++)
            FZ_CHECK(same_f(kb[x], s->k[x]), "seq %lld token %lld: k %.9g, model %.9g", (long long)q,
                     (long long)(x / (m->H * m->D)), kb[x], s->k[x]);
        for (x = 0; x < n * m->H * m->Dv; x++)
            FZ_CHECK(same_f(vb[x], s->v[x]), "seq %lld token %lld: v %.9g, model %.9g", (long long)q,
                     (long long)(x / (m->H * m->Dv)), vb[x], s->v[x]);
        free(kb), free(vb);
    }
}

/* Appends n tokens to seq q; returns the code. On success the model takes
 * the stored values: computed for F32/F16/BF16, read back for I8 after
 * checking them against the input (|stored - x| <= scale/2). */
FZ_NOCOV static int op_append(fz_in *in, sdpa_kv_cache *c, model *m, int64_t q, int64_t n, int may_fail)
{
    static const sdpa_dtype dts[3] = {SDPA_F32, SDPA_F16, SDPA_BF16};
    sdpa_dtype idt = dts[fz_range(in, 0, 2)];
    int lay = (int)fz_range(in, 0, 2), w, rc;
    int64_t H = m->H, t, h, d, before = sdpa_kv_cache_bytes(c), old = m->s[q].len;
    int64_t bad_tok = fz_chance(in, 2) ? fz_range(in, 0, n > 0 ? n - 1 : 0) : -1, bad_w = fz_bit(in);
    float *x[2];
    unsigned char *buf[2];
    sdpa_tensor ten[2];
    for (w = 0; w < 2; w++) {
        int64_t dim = w ? m->Dv : m->D, pad = lay == 2 ? fz_range(in, 0, 3) : 0, es = idt == SDPA_F32 ? 4 : 2, elems;
        memset(&ten[w], 0, sizeof ten[w]);
        ten[w].dtype = idt;
        ten[w].shape[0] = 1, ten[w].shape[1] = H, ten[w].shape[2] = n, ten[w].shape[3] = dim;
        if (lay == 0) { /* contiguous [1, H, n, dim] */
            elems = H * n * dim;
        } else { /* token-major [1, n, H, dim] seen through strides, rows padded */
            ten[w].stride[0] = n * H * (dim + pad) + 1, ten[w].stride[1] = dim + pad, ten[w].stride[2] = H * (dim + pad);
            ten[w].stride[3] = 1;
            elems = n * H * (dim + pad);
        }
        buf[w] = (unsigned char *)malloc((size_t)(elems * es + 1));
        memset(buf[w], 0x7F, (size_t)(elems * es)); /* padding: huge values, caught if ever read */
        ten[w].data = elems ? buf[w] : (fz_bit(in) ? NULL : buf[w]);
        x[w] = (float *)malloc((size_t)(n * H * dim + 1) * sizeof(float));
        for (t = 0; t < n; t++)
            for (h = 0; h < H; h++)
                for (d = 0; d < dim; d++) {
                    float val = round_to(idt, (float)fz_uniform(-1, 1));
                    int64_t off = lay == 0 ? (h * n + t) * dim + d : (t * H + h) * (dim + pad) + d;
                    if (t == bad_tok && w == bad_w && h == 0 && d == dim / 2) val = fz_bit(in) ? NAN : -INFINITY;
                    x[w][(t * H + h) * dim + d] = val;
                    if (idt == SDPA_F32) memcpy(buf[w] + off * 4, &val, 4);
                    else {
                        uint16_t hv = idt == SDPA_F16 ? sdpa_f32_to_f16(val) : sdpa_f32_to_bf16(val);
                        memcpy(buf[w] + off * 2, &hv, 2);
                    }
                }
    }
    rc = sdpa_kv_cache_append(c, q, &ten[0], &ten[1]);
    check_bytes(c);
    if (rc != SDPA_OK) {
        FZ_CHECK(may_fail && (rc == SDPA_ERR_CAPACITY || rc == SDPA_ERR_NOMEM), "append of %lld tokens: rc %d (%s)",
                 (long long)n, rc, sdpa_strerror(rc));
        FZ_CHECK(sdpa_kv_cache_bytes(c) == before, "a failed append changed the bytes held");
        FZ_CHECK(sdpa_kv_cache_len(c, q) == old, "a failed append changed the length");
    } else {
        mseq *s = &m->s[q];
        m_reserve(m, s, old + n);
        for (w = 0; w < 2; w++) {
            int64_t dim = w ? m->Dv : m->D;
            float *dst = (w ? s->v : s->k) + old * H * dim;
            if (m->dt != SDPA_I8) {
                for (t = 0; t < n * H * dim; t++) dst[t] = round_to(m->dt, x[w][t]);
            } else { /* read back, then hold it to the documented rounding */
                sdpa_tensor rt = {0};
                rt.data = dst, rt.dtype = SDPA_F32, rt.shape[0] = 1, rt.shape[1] = H, rt.shape[2] = n, rt.shape[3] = dim;
                rt.stride[0] = n * H * dim, rt.stride[1] = dim, rt.stride[2] = H * dim, rt.stride[3] = 1;
                FZ_CHECK(sdpa_kv_cache_read(c, q, old, w ? NULL : &rt, w ? &rt : NULL) == SDPA_OK, "read after append");
                for (t = 0; t < n * H && m->kchan && !w; t++) { /* the whole append's keys first: later keys grow scales */
                    int finite = 1;
                    for (d = 0; d < dim; d++) finite &= fabsf(x[w][t * dim + d]) <= 3.4e38f;
                    for (d = 0; d < dim && finite; d++) m->kmax[t % H][d] = fmaxf(m->kmax[t % H][d], fabsf(x[w][t * dim + d]));
                }
                for (t = 0; t < n * H; t++) {
                    float amax = 0;
                    int finite = 1, kc = m->kchan && !w;
                    for (d = 0; d < dim; d++) {
                        float a = fabsf(x[w][t * dim + d]);
                        if (!(a <= 3.4e38f)) finite = 0;
                        else if (a > amax) amax = a;
                    }
                    for (d = 0; d < dim; d++) {
                        float got = dst[t * dim + d], want = x[w][t * dim + d];
                        double cmax = kc ? (double)m->kmax[t % H][d] : (double)amax; /* bounds the scale's base */
                        if (!finite) FZ_CHECK(got != got, "I8 row with NaN/Inf: element %g, want NaN", got);
                        else FZ_CHECK(fabs((double)got - want) <= cmax / 127.0 * (kc ? 2.5 * 1.25 : 0.5) + cmax * 2.4e-7 + 1e-30 &&
                                          fabs((double)got) <= cmax * (kc ? 1.25 : 1.0) * (1 + 1e-6),
                                      "I8 stored %.9g for %.9g (row max %g, channel max %g)", got, want, amax, cmax);
                    }
                }
            }
        }
        s->len = old + n;
        if (m->kchan && old > 0) { /* the earlier keys of the page may have been rounded again */
            sdpa_tensor rt = {0};
            rt.data = s->k, rt.dtype = SDPA_F32, rt.shape[0] = 1, rt.shape[1] = H, rt.shape[2] = old, rt.shape[3] = m->D;
            rt.stride[0] = old * H * m->D, rt.stride[1] = m->D, rt.stride[2] = H * m->D, rt.stride[3] = 1;
            FZ_CHECK(sdpa_kv_cache_read(c, q, 0, &rt, NULL) == SDPA_OK, "read back after append");
            for (t = 0; t < old * H; t++) /* still within the bound of the (grown) channel scales */
                for (d = 0; d < m->D; d++) {
                    float got = s->k[t * m->D + d];
                    FZ_CHECK(got != got || fabs((double)got) <= (double)m->kmax[t % H][d] * 1.25 * (1 + 1e-6),
                             "I8 key %lld [%lld] re-read as %.9g, channel max %g", (long long)(t / H), (long long)d, got,
                             m->kmax[t % H][d]);
                }
        }
    }
    free(x[0]), free(x[1]), free(buf[0]), free(buf[1]);
    return rc;
}

/* ---- attention ---- */
static double smod_d(double s, int64_t b, int64_t h, int64_t i, int64_t j)
{
    if ((i * 5 + j * 3 + h + b) % 7 == 0) return -INFINITY;
    return 0.75 * s + 0.01 * (double)((i - j) % 5);
}
static float smod_f(float s, int64_t b, int64_t h, int64_t i, int64_t j, void *user)
{
    (void)user;
    if ((i * 5 + j * 3 + h + b) % 7 == 0) return -INFINITY;
    return 0.75f * s + 0.01f * (float)((i - j) % 5);
}
static int pf_rev(void *user, int n_workers, int64_t n_tasks, sdpa_task_fn fn, void *ctx)
{
    int64_t t;
    (void)user;
    for (t = n_tasks - 1; t >= 0; t--) fn(ctx, t, (int)(t % n_workers));
    return 0;
}

FZ_NOCOV static void op_attention(fz_in *in, const sdpa_kv_cache *c, const model *m)
{
    static const sdpa_dtype dts[3] = {SDPA_F32, SDPA_F16, SDPA_BF16};
    int64_t B = fz_range(in, 1, 3), G = fz_range(in, 1, 3), n = fz_range(in, 0, 5), Hq = m->H * G, D = m->D, Dv = m->Dv;
    int64_t seqs[3], sql[3], b, h, i, j, d, nq, nout, nl;
    sdpa_dtype qdt = dts[fz_range(in, 0, 2)], odt = dts[fz_range(in, 0, 2)];
    sdpa_params p;
    float *qv, *ov, *lse = NULL, *alibi = NULL;
    sdpa_tensor qt = {0}, ot = {0};
    unsigned char *obuf;
    int use_seqs = B > m->nseq || fz_bit(in), rc, with_sql;
    double scale;
    memset(&p, 0, sizeof p);
    for (b = 0; b < B; b++) seqs[b] = use_seqs ? fz_range(in, 0, m->nseq - 1) : b;
    p.causal = fz_bit(in) ? SDPA_CAUSAL_BOTTOM_RIGHT : SDPA_CAUSAL_NONE;
    if (fz_chance(in, 4)) p.window = 1, p.window_left = fz_range(in, -1, 40), p.window_right = fz_range(in, -1, 8);
    if (fz_chance(in, 3)) p.softcap = (float)fz_range(in, 1, 40) * 0.5f;
    if (fz_chance(in, 3)) p.scale = (float)(fz_range(in, -30, 30) * 0.05);
    if (fz_chance(in, 3)) {
        alibi = (float *)malloc((size_t)Hq * sizeof(float));
        for (h = 0; h < Hq; h++) alibi[h] = (float)fz_uniform(0, 0.5);
        p.alibi_slopes = alibi;
    }
    if (fz_chance(in, 2)) p.score_mod = smod_f;
    with_sql = fz_chance(in, 3);
    for (b = 0; b < B; b++) sql[b] = with_sql ? fz_range(in, 0, n) : n;
    if (with_sql) p.seqlens_q = sql;
    p.num_threads = fz_chance(in, 3) ? (int)fz_range(in, 2, 3) : 1;
    if (fz_chance(in, 2)) p.parallel_for = pf_rev, p.num_threads = (int)fz_range(in, 1, 4);
    p.path = fz_bit(in) ? SDPA_PATH_SCALAR : SDPA_PATH_AUTO;
    if (fz_chance(in, 2) && sdpa_path_supported(SDPA_PATH_AVX2)) p.path = SDPA_PATH_AVX2;
    if (fz_chance(in, 2)) p.allocator = NULL; /* else the counting one, failing maybe */
    else {
        static sdpa_allocator al = {fz_alloc_fn, fz_free_fn, &g_al};
        p.allocator = &al;
    }
    nq = B * Hq * n * D;
    nout = B * Hq * n * Dv;
    nl = B * Hq * n;
    qv = (float *)malloc((size_t)(nq + 1) * sizeof(float));
    ov = (float *)malloc((size_t)(nout + 1) * sizeof(float));
    obuf = (unsigned char *)malloc((size_t)(nout * 4 + 1));
    for (i = 0; i < nq; i++) qv[i] = round_to(qdt, (float)fz_uniform(-1, 1));
    if (qdt != SDPA_F32) { /* the same values as F16/BF16, in place */
        uint16_t *q16 = (uint16_t *)(void *)qv;
        for (i = 0; i < nq; i++) q16[i] = qdt == SDPA_F16 ? sdpa_f32_to_f16(qv[i]) : sdpa_f32_to_bf16(qv[i]);
    }
    qt.data = qv, qt.dtype = qdt, qt.shape[0] = B, qt.shape[1] = Hq, qt.shape[2] = n, qt.shape[3] = D;
    ot.data = obuf, ot.dtype = odt, ot.shape[0] = B, ot.shape[1] = Hq, ot.shape[2] = n, ot.shape[3] = Dv;
    memset(obuf, 0xFF, (size_t)(nout * 4 + 1));
    if (fz_chance(in, 8)) {
        lse = (float *)malloc((size_t)(nl + 1) * sizeof(float));
        for (i = 0; i < nl; i++) lse[i] = NAN;
        p.lse = lse;
    }
    g_al.fail_at = fz_chance(in, 1) ? g_al.calls + 1 : 0;
    rc = sdpa_kv_cache_attention(c, use_seqs ? seqs : NULL, &qt, &ot, &p);
    g_al.fail_at = 0;
    check_bytes(c);
    if (rc == SDPA_ERR_NOMEM && p.allocator) {
        size_t z;
        for (z = 0; z < (size_t)(nout * (odt == SDPA_F32 ? 4 : 2)); z++)
            FZ_CHECK(obuf[z] == 0xFF, "out written by a call failing with SDPA_ERR_NOMEM (byte %zu)", z);
        for (i = 0; lse && i < nl; i++) FZ_CHECK(lse[i] != lse[i], "lse written by a call failing with SDPA_ERR_NOMEM");
        goto done;
    }
    FZ_CHECK(rc == SDPA_OK, "attention: rc %d (%s)", rc, sdpa_strerror(rc));
    scale = p.scale != 0.0f ? (double)p.scale : 1.0 / sqrt((double)D);
    /* the query values back as float (F16/BF16 exact) */
    if (qdt != SDPA_F32) {
        uint16_t *q16 = (uint16_t *)(void *)qv;
        for (i = nq - 1; i >= 0; i--) qv[i] = qdt == SDPA_F16 ? sdpa_f16_to_f32(q16[i]) : sdpa_bf16_to_f32(q16[i]);
    }
    for (b = 0; b < B; b++) {
        const mseq *s = &m->s[seqs[b]];
        int64_t len = s->len, vq = sql[b];
        for (h = 0; h < Hq; h++)
            for (i = 0; i < n; i++) {
                int64_t g = h / G, pos = i + len - vq, row = (b * Hq + h) * n + i;
                const float *qr = qv + row * D;
                double sc[MAXTOK], mx = -INFINITY, sum = 0, ref[MAXDIM], rl, qmax = 0, delta = 0, pverr = 0;
                int clean = 1;
                for (d = 0; d < D; d++) qmax = fmax(qmax, fabs(qr[d] * scale));
                for (j = 0; j < len; j++) {
                    const float *kr = s->k + (j * m->H + g) * D, *vr = s->v + (j * m->H + g) * Dv;
                    double x = 0, ksum = 0;
                    sc[j] = -INFINITY;
                    if (i >= vq) continue;
                    if (p.causal == SDPA_CAUSAL_BOTTOM_RIGHT && j > pos) continue;
                    if (p.window && p.window_left >= 0 && pos - j > p.window_left) continue;
                    if (p.window && p.window_right >= 0 && j - pos > p.window_right) continue;
                    for (d = 0; d < D; d++) x += (double)qr[d] * kr[d], ksum += fabs(kr[d]);
                    for (d = 0; d < Dv; d++) clean &= isfinite(vr[d]) != 0;
                    if (!isfinite(x)) clean = 0;
                    if (m->kchan) { /* the int16 query per page: 127 * D * max|q_d s_d|, s_d <= 1.25 max|k_d| / 127 */
                        ksum = 0;
                        for (d = 0; d < D; d++) ksum = fmax(ksum, 1.25 * (double)D * m->kmax[g][d]);
                    }
                    if (m->dt == SDPA_I8 && D <= 4096) delta = fmax(delta, ksum * qmax / 65534.0);
                    x *= scale;
                    if (p.softcap > 0) x = p.softcap * tanh(x / p.softcap);
                    if (alibi) x -= (double)alibi[h] * (double)llabs(pos - j);
                    if (p.score_mod) x = smod_d(x, b, h, i, j);
                    sc[j] = x;
                    if (x > mx) mx = x;
                }
                if (!clean) continue;
                for (d = 0; d < Dv; d++) ref[d] = 0;
                rl = -INFINITY;
                if (mx > -INFINITY) {
                    for (j = 0; j < len; j++) {
                        double wgt = sc[j] == -INFINITY ? 0 : exp(sc[j] - mx);
                        sum += wgt;
                        if (wgt != 0)
                            for (d = 0; d < Dv; d++) ref[d] += wgt * s->v[(j * m->H + g) * Dv + d];
                    }
                    for (d = 0; d < Dv; d++) ref[d] /= sum;
                    rl = mx + log(sum);
                    if (m->dt == SDPA_I8) { /* integer P.V: weights x value scales to int16 per run of a 64-key span */
                        int64_t j0;
                        for (j0 = 0; j0 < len; j0 += 64) {
                            double top = 0;
                            int64_t cnt = 0;
                            for (j = j0; j < len && j < j0 + 64; j++) {
                                double vm = 0;
                                if (sc[j] == -INFINITY) continue;
                                for (d = 0; d < Dv; d++) vm = fmax(vm, fabs(s->v[(j * m->H + g) * Dv + d]));
                                top = fmax(top, exp(sc[j] - mx) * vm);
                                cnt++;
                            }
                            pverr += (double)cnt * top;
                        }
                        pverr = pverr / 65534.0 / sum * 1.01;
                    }
                }
                for (d = 0; d < Dv; d++) {
                    double got, tol;
                    if (odt == SDPA_F32) {
                        float f;
                        memcpy(&f, obuf + (row * Dv + d) * 4, 4);
                        got = f;
                        tol = 2e-5 + 1e-4 * fabs(ref[d]);
                    } else {
                        uint16_t hv;
                        memcpy(&hv, obuf + (row * Dv + d) * 2, 2);
                        got = odt == SDPA_F16 ? fz_f16_value(hv) : fz_bf16_value(hv);
                        tol = odt == SDPA_F16 ? 2e-3 * fabs(ref[d]) + 1e-4 : 8e-3 * fabs(ref[d]) + 1e-3;
                    }
                    tol += 4 * delta + pverr;
                    FZ_CHECK(fabs(got - ref[d]) <= tol, "attention b%lld (seq %lld, len %lld) h%lld i%lld d%lld: %.9g, reference %.9g",
                             (long long)b, (long long)seqs[b], (long long)len, (long long)h, (long long)i, (long long)d, got,
                             ref[d]);
                }
                if (lse) {
                    if (rl == -INFINITY) FZ_CHECK(lse[row] == -INFINITY, "lse %g, want -inf", lse[row]);
                    else FZ_CHECK(fabs(lse[row] - rl) <= 2e-5 + 2e-6 * fabs(rl) + 2 * delta, "lse %.9g, reference %.9g",
                                  lse[row], rl);
                }
            }
    }
done:
    free(qv), free(ov), free(obuf), free(lse), free(alibi);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size, 0};
    static const sdpa_dtype sdts[4] = {SDPA_F32, SDPA_F16, SDPA_BF16, SDPA_I8};
    sdpa_kv_cache_config cfg;
    sdpa_allocator al = {fz_alloc_fn, fz_free_fn, &g_al};
    sdpa_kv_cache *c = NULL;
    model m;
    char eb[64];
    int rc, step, use_al;
    int64_t q;

    memset(&g_al, 0, sizeof g_al);
    memset(&m, 0, sizeof m);
    memset(&cfg, 0, sizeof cfg);
    fz_seed(&in);
    fz_what = "create";
    m.nseq = cfg.num_seqs = fz_range(&in, 1, MAXSEQ);
    m.H = cfg.kv_heads = fz_range(&in, 1, MAXH);
    m.D = cfg.head_dim = fz_range(&in, 1, MAXDIM);
    cfg.head_dim_v = fz_range(&in, 0, MAXDIM);
    m.Dv = cfg.head_dim_v ? cfg.head_dim_v : cfg.head_dim;
    m.dt = cfg.dtype = sdts[fz_range(&in, 0, 3)];
    cfg.page_size = fz_range(&in, 0, 9);
    if (cfg.page_size == 9) cfg.page_size = 16;
    m.ps = cfg.page_size ? cfg.page_size : 64;
    m.max_pages = cfg.max_pages = fz_chance(&in, 4) ? fz_range(&in, 1, 12) : 0;
    cfg.kscale = (m.nseq + m.H + m.D + cfg.head_dim_v + cfg.page_size) % 2 ? SDPA_KV_KSCALE_TOKEN : SDPA_KV_KSCALE_CHANNEL;
    m.kchan = m.dt == SDPA_I8 && cfg.kscale == SDPA_KV_KSCALE_CHANNEL;
    g_use_al = use_al = fz_chance(&in, 12);
    cfg.allocator = use_al ? &al : NULL;
    cfg.errbuf = eb, cfg.errbuf_size = sizeof eb;
    if (use_al && fz_chance(&in, 1)) { /* creation itself fails */
        g_al.fail_at = fz_range(&in, 1, 2);
        rc = sdpa_kv_cache_create(&cfg, &c);
        FZ_CHECK(rc == SDPA_ERR_NOMEM && c == NULL, "create with allocation %lld failing: rc %d", (long long)g_al.fail_at, rc);
        FZ_CHECK(g_al.live == 0, "a failed create holds %lld bytes", (long long)g_al.live);
        return 0;
    }
    rc = sdpa_kv_cache_create(&cfg, &c);
    FZ_CHECK(rc == SDPA_OK && c, "create: rc %d (%s)", rc, eb);

    for (step = 0; step < 48 && in.at < in.n; step++) {
        int op = (int)fz_range(&in, 0, 11);
        int fail_alloc = use_al && fz_chance(&in, 1);
        int64_t before = sdpa_kv_cache_bytes(c);
        q = fz_range(&in, 0, m.nseq - 1);
        if (fail_alloc) g_al.fail_at = g_al.calls + fz_range(&in, 1, 3);
        switch (op) {
        case 0: case 1: case 2: { /* append */
            int64_t n = fz_range(&in, 0, 2 * m.ps + 3);
            fz_what = "append";
            if (m.s[q].len + n > MAXTOK) n = MAXTOK - m.s[q].len;
            op_append(&in, c, &m, q, n, fail_alloc || m.max_pages > 0);
            break;
        }
        case 3: { /* truncate (rollback) */
            int64_t to = fz_range(&in, -1, m.s[q].len + 1);
            fz_what = "truncate";
            rc = sdpa_kv_cache_truncate(c, q, to);
            if (to < 0 || to > m.s[q].len) FZ_CHECK(rc == SDPA_ERR_PARAM, "truncate to %lld of %lld: rc %d", (long long)to,
                                                     (long long)m.s[q].len, rc);
            else {
                FZ_CHECK(rc == SDPA_OK, "truncate: rc %d", rc);
                m_cut(&m, &m.s[q], to, m.s[q].len);
            }
            break;
        }
        case 4: { /* evict: sinks and a recent window */
            int64_t sink = fz_range(&in, -1, 6), recent = fz_range(&in, -1, 30), len = m.s[q].len;
            fz_what = "evict";
            rc = sdpa_kv_cache_evict(c, q, sink, recent);
            if (sink < 0 || recent < 0) FZ_CHECK(rc == SDPA_ERR_PARAM, "evict(%lld, %lld): rc %d", (long long)sink, (long long)recent, rc);
            else if (rc == SDPA_ERR_NOMEM) FZ_CHECK(fail_alloc && sdpa_kv_cache_bytes(c) == before, "evict NOMEM");
            else {
                FZ_CHECK(rc == SDPA_OK, "evict: rc %d", rc);
                if (len > sink + recent) m_cut(&m, &m.s[q], sink, len - recent);
            }
            break;
        }
        case 5: { /* fork a prefix */
            int64_t dst = fz_range(&in, 0, m.nseq - 1), len = fz_range(&in, -1, m.s[q].len + 1);
            fz_what = "fork";
            rc = sdpa_kv_cache_fork(c, dst, q, len);
            if (dst == q || len < 0 || len > m.s[q].len) FZ_CHECK(rc == SDPA_ERR_PARAM, "fork %lld <- %lld len %lld: rc %d",
                                                                 (long long)dst, (long long)q, (long long)len, rc);
            else if (rc == SDPA_ERR_NOMEM) FZ_CHECK(fail_alloc && sdpa_kv_cache_bytes(c) == before, "fork NOMEM");
            else {
                mseq *d = &m.s[dst], *s = &m.s[q];
                FZ_CHECK(rc == SDPA_OK, "fork: rc %d", rc);
                m_reserve(&m, d, len);
                if (len > 0) {
                    memcpy(d->k, s->k, (size_t)(len * m.H * m.D) * sizeof(float));
                    memcpy(d->v, s->v, (size_t)(len * m.H * m.Dv) * sizeof(float));
                }
                d->len = len;
            }
            break;
        }
        case 6: { /* reset one or all */
            int all = fz_chance(&in, 2);
            fz_what = "reset";
            rc = sdpa_kv_cache_reset(c, all ? -1 : q);
            FZ_CHECK(rc == SDPA_OK, "reset: rc %d", rc);
            if (all) for (q = 0; q < m.nseq; q++) m.s[q].len = 0;
            else m.s[q].len = 0;
            break;
        }
        case 7: { /* read a window, in some dtype */
            static const sdpa_dtype dts[3] = {SDPA_F32, SDPA_F16, SDPA_BF16};
            int64_t pos = fz_range(&in, 0, m.s[q].len), n = fz_range(&in, 0, m.s[q].len - pos + 1), x, h, d;
            sdpa_dtype rdt = dts[fz_range(&in, 0, 2)];
            size_t es = rdt == SDPA_F32 ? 4 : 2;
            unsigned char *kb = (unsigned char *)malloc((size_t)(n * m.H * m.D) * es + 1);
            sdpa_tensor kt = {0};
            fz_what = "read";
            kt.data = kb, kt.dtype = rdt, kt.shape[0] = 1, kt.shape[1] = m.H, kt.shape[2] = n, kt.shape[3] = m.D;
            memset(kb, 0x5A, (size_t)(n * m.H * m.D) * es + 1);
            rc = sdpa_kv_cache_read(c, q, pos, &kt, NULL);
            if (pos + n > m.s[q].len) {
                FZ_CHECK(rc == SDPA_ERR_PARAM, "read %lld tokens at %lld of %lld: rc %d", (long long)n, (long long)pos,
                         (long long)m.s[q].len, rc);
                for (x = 0; x < (int64_t)((size_t)(n * m.H * m.D) * es); x++) FZ_CHECK(kb[x] == 0x5A, "a failed read wrote");
            } else {
                FZ_CHECK(rc == SDPA_OK, "read: rc %d", rc);
                for (h = 0; h < m.H; h++)
                    for (x = 0; x < n; x++)
                        for (d = 0; d < m.D; d++) {
                            float want = round_to(rdt, m.s[q].k[((pos + x) * m.H + h) * m.D + d]), got;
                            int64_t off = (h * n + x) * m.D + d;
                            if (rdt == SDPA_F32) memcpy(&got, kb + off * 4, 4);
                            else {
                                uint16_t hv;
                                memcpy(&hv, kb + off * 2, 2);
                                got = rdt == SDPA_F16 ? sdpa_f16_to_f32(hv) : sdpa_bf16_to_f32(hv);
                            }
                            FZ_CHECK(same_f(got, want), "read seq %lld token %lld: %.9g, want %.9g", (long long)q,
                                     (long long)(pos + x), got, want);
                        }
            }
            free(kb);
            break;
        }
        case 8: case 9: /* attention */
            fz_what = "attention";
            op_attention(&in, c, &m);
            break;
        case 10: { /* bad arguments: refused, nothing changes */
            float kb[8];
            sdpa_tensor kt = {0};
            int which = (int)fz_range(&in, 0, 5);
            fz_what = "bad arguments";
            kt.data = kb, kt.dtype = SDPA_F32, kt.shape[0] = 1, kt.shape[1] = m.H + 1, kt.shape[2] = 1, kt.shape[3] = m.D;
            switch (which) {
            case 0: rc = sdpa_kv_cache_append(c, m.nseq, &kt, &kt); FZ_CHECK(rc == SDPA_ERR_PARAM, "append to seq nseq: %d", rc); break;
            case 1: rc = sdpa_kv_cache_append(c, q, &kt, &kt); FZ_CHECK(rc == SDPA_ERR_SHAPE, "append with H+1 heads: %d", rc); break;
            case 2: rc = sdpa_kv_cache_append(c, q, NULL, &kt); FZ_CHECK(rc == SDPA_ERR_NULL, "append NULL k: %d", rc); break;
            case 3: rc = sdpa_kv_cache_reset(c, -2); FZ_CHECK(rc == SDPA_ERR_PARAM, "reset(-2): %d", rc); break;
            case 4: FZ_CHECK(sdpa_kv_cache_len(c, -1) == SDPA_ERR_PARAM, "len(-1)"); break;
            default: rc = sdpa_kv_cache_fork(c, q, m.nseq + 3, 0); FZ_CHECK(rc == SDPA_ERR_PARAM, "fork from a bad seq: %d", rc); break;
            }
            FZ_CHECK(sdpa_kv_cache_bytes(c) == before, "a refused call changed the bytes held");
            break;
        }
        default:
            fz_what = "contents";
            check_contents(c, &m);
            break;
        }
        g_al.fail_at = 0;
        check_bytes(c);
    }
    fz_what = "final contents";
    check_contents(c, &m);
    sdpa_kv_cache_destroy(c);
    if (use_al) FZ_CHECK(g_al.live == 0, "destroy left %lld bytes allocated", (long long)g_al.live);
    for (q = 0; q < MAXSEQ; q++) free(m.s[q].k), free(m.s[q].v);
    return 0;
}

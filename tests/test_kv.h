/* KV cache tests, included by test_sdpa.c (they use its harness, tensors and
 * conversions). A model holds what each sequence should contain as floats;
 * every check reads the cache back or runs attention over it and compares
 * with the model and with a float64 reference computed here. */

/* ---- the model ------------------------------------------------------------ */

typedef struct {
    float *k, *v;     /* [len][H][D], [len][H][Dv]: the values appended */
    int64_t len, cap;
} kv_mseq;

typedef struct {
    int64_t nseq, H, D, Dv;
    sdpa_dtype dt;
    int kchan;        /* I8 keys scaled per channel and page */
    float *kmax;      /* [H][D]: the largest |k| ever appended (bounds a page's channel scale) */
    kv_mseq *s;
} kv_model;

static void km_init(kv_model *m, int64_t nseq, int64_t H, int64_t D, int64_t Dv, sdpa_dtype dt, int kchan)
{
    m->nseq = nseq, m->H = H, m->D = D, m->Dv = Dv, m->dt = dt, m->kchan = dt == SDPA_I8 && kchan;
    m->kmax = (float *)xcalloc((size_t)(H * D), sizeof(float));
    m->s = (kv_mseq *)xcalloc((size_t)nseq, sizeof(kv_mseq));
}

static void km_free(kv_model *m)
{
    int64_t i;
    for (i = 0; i < m->nseq; i++) free(m->s[i].k), free(m->s[i].v);
    free(m->s);
    free(m->kmax);
}

static void km_reserve(kv_model *m, kv_mseq *s, int64_t len)
{
    if (len <= s->cap) return;
    s->cap = len * 2 + 16;
    s->k = (float *)realloc(s->k, (size_t)(s->cap * m->H * m->D) * sizeof(float));
    s->v = (float *)realloc(s->v, (size_t)(s->cap * m->H * m->Dv) * sizeof(float));
    if (!s->k || !s->v) { fprintf(stderr, "test_kv: out of memory\n"); exit(2); }
}

/* removes tokens [a, b) */
static void km_cut(kv_model *m, kv_mseq *s, int64_t a, int64_t b)
{
    size_t kr = (size_t)(m->H * m->D), vr = (size_t)(m->H * m->Dv);
    if (b == a) return; /* also keeps NULL arrays away from memmove */
    memmove(s->k + a * kr, s->k + b * kr, (size_t)(s->len - b) * kr * sizeof(float));
    memmove(s->v + a * vr, s->v + b * vr, (size_t)(s->len - b) * vr * sizeof(float));
    s->len -= b - a;
}

/* A random [1, H, n, dim] tensor (random dtype and layout) whose values are
 * also written, as floats, to dst[t][h][d] (token-major, like the model). */
static void kv_rand_tensor(tbuf *tb, sdpa_dtype dt, int64_t H, int64_t n, int64_t dim, float *dst, double amp,
                           int outlier)
{
    int64_t h, t, d;
    tb_alloc(tb, dt, 1, H, n, dim, (int)rnd_int(LAY_ZERO, LAY_PERM), 16);
    for (h = 0; h < H; h++)
        for (t = 0; t < n; t++)
            for (d = 0; d < dim; d++) {
                double x = rnd_range(-amp, amp);
                if (outlier && d % 17 == 3) x *= 20.0; /* a few large channels, as real K has */
                tb_put(tb, tb_off(tb, 0, h, t, d), x);
                dst[(t * H + h) * dim + d] = (float)tb_get(tb, tb_off(tb, 0, h, t, d));
            }
}

static int kv_append(sdpa_kv_cache *c, kv_model *m, int64_t seq, int64_t n, double amp, int outlier)
{
    kv_mseq *s = &m->s[seq];
    tbuf k, v;
    sdpa_dtype dt = (sdpa_dtype)rnd_int(SDPA_F32, SDPA_BF16);
    int rc;
    km_reserve(m, s, s->len + n);
    kv_rand_tensor(&k, dt, m->H, n, m->D, s->k + s->len * m->H * m->D, amp, outlier);
    kv_rand_tensor(&v, dt, m->H, n, m->Dv, s->v + s->len * m->H * m->Dv, amp, 0);
    {
        const float *x = s->k + s->len * m->H * m->D;
        int64_t i;
        for (i = 0; i < n * m->H * m->D; i++) {
            float *km = &m->kmax[i % (m->H * m->D)], a = fabsf(x[i]); /* x is [n][H][D] */
            if (a > *km) *km = a;
        }
    }
    rc = sdpa_kv_cache_append(c, seq, &k.t, &v.t);
    if (rc == SDPA_OK) s->len += n;
    tb_free(&k);
    tb_free(&v);
    return rc;
}

/* The value the cache should return for x stored as dt, or for I8 the
 * largest error allowed: half a quantization step of a row with max amax
 * (per token), or for keys scaled per channel (kchan) the header's 2.5 steps
 * of a scale of at most 1.25 amax / 127, amax then bounding the channel. */
static int kv_stored_ok(sdpa_dtype dt, int kchan, float x, float got, float amax)
{
    double steps = kchan ? 2.5 * 1.25 : 0.5;
    if (dt == SDPA_F32) return f32_bits(x) == f32_bits(got);
    if (dt == SDPA_F16) return f32_bits((float)ref_f16_value(ref_f32_to_f16(x))) == f32_bits(got);
    if (dt == SDPA_BF16) return f32_bits(bits_f32((uint32_t)ref_f32_to_bf16(x) << 16)) == f32_bits(got);
    return fabs((double)got - x) <= (double)amax / 127.0 * steps + (double)amax * 2.4e-7; /* + the float scale's and got's rounding */
}

/* Reads every token of seq back (F32) and compares with the model. */
static void kv_check_contents(const sdpa_kv_cache *c, const kv_model *m, int64_t seq)
{
    const kv_mseq *s = &m->s[seq];
    int64_t len = sdpa_kv_cache_len(c, seq), t, h, d, w, bad = 0;
    tbuf k, v;
    CHECK(len == s->len, "seq %lld: len %lld, model %lld", LL(seq), LL(len), LL(s->len));
    if (len != s->len || len == 0) return;
    tb_alloc(&k, SDPA_F32, 1, m->H, len, m->D, (int)rnd_int(LAY_ZERO, LAY_PADROW), 16);
    tb_alloc(&v, SDPA_F32, 1, m->H, len, m->Dv, LAY_CONTIG, 16);
    CHECK(sdpa_kv_cache_read(c, seq, 0, &k.t, &v.t) == SDPA_OK, "read failed");
    for (w = 0; w < 2; w++) {
        const tbuf *tb = w ? &v : &k;
        int64_t dim = w ? m->Dv : m->D;
        const float *src = w ? s->v : s->k;
        for (t = 0; t < len; t++)
            for (h = 0; h < m->H; h++) {
                float amax = 0.0f;
                for (d = 0; d < dim; d++) amax = fmaxf(amax, fabsf(src[(t * m->H + h) * dim + d]));
                for (d = 0; d < dim; d++) {
                    float x = src[(t * m->H + h) * dim + d], got = (float)tb_get(tb, tb_off(tb, 0, h, t, d));
                    int kchan = m->kchan && !w;
                    if (!kv_stored_ok(m->dt, kchan, x, got, kchan ? m->kmax[h * dim + d] : amax) && bad++ < 3)
                        case_fail("seq %lld %s token %lld head %lld [%lld]: got %.9g for %.9g (%s, row max %.9g)", LL(seq), w ? "v" : "k",
                                  LL(t), LL(h), LL(d), got, x, dt_name(m->dt), amax);
                }
            }
    }
    tb_free(&k);
    tb_free(&v);
}

/* ---- attention: the float64 reference -------------------------------------- */

/* out[b][h][i][:] for q (a tbuf [B, Hq, n, D]) over K/V given as float
 * arrays per batch entry: kk[b][(t * H + g) * D + d]. pverr (may be NULL):
 * per row, the error I8 values' integer P.V may add (header: the weights
 * times the value scales rounded to int16 per row and run of a 64-key span,
 * one step = the largest / 32767): half a step per nonzero weight times its
 * int8 value (<= 127), so per span n * max_j(w_j * max|v_j|) / 65534 with
 * w_j = exp(s_j - max), over the sum of the weights. */
static void kv_reference(const tbuf *q, int64_t H, int64_t D, int64_t Dv, float *const *kk, float *const *vv,
                         const int64_t *len, const sdpa_params *p, double *out, double *lse, double *pverr)
{
    int64_t B = q->t.shape[0], Hq = q->t.shape[1], n = q->t.shape[2], G = Hq / H, b, h, i, j, d;
    double scale = p->scale != 0.0f ? p->scale : 1.0 / sqrt((double)D);
    for (b = 0; b < B; b++) {
        int64_t vq = p->seqlens_q ? p->seqlens_q[b] : n, L = len[b];
        double *s = (double *)xcalloc((size_t)(L > 0 ? L : 1), sizeof(double));
        for (h = 0; h < Hq; h++)
            for (i = 0; i < n; i++) {
                int64_t g = h / G, pos = i + L - vq;
                double mx = -INFINITY, sum = 0.0;
                double *o = out + ((b * Hq + h) * n + i) * Dv;
                for (d = 0; d < Dv; d++) o[d] = 0.0;
                lse[(b * Hq + h) * n + i] = -INFINITY;
                if (pverr) pverr[(b * Hq + h) * n + i] = 0.0;
                if (i >= vq) continue;
                for (j = 0; j < L; j++) {
                    int vis = 1;
                    double x = 0.0;
                    if (p->causal == SDPA_CAUSAL_BOTTOM_RIGHT && j > pos) vis = 0;
                    if (p->window && p->window_left >= 0 && j < pos - p->window_left) vis = 0;
                    if (p->window && p->window_right >= 0 && j > pos + p->window_right) vis = 0;
                    if (!vis) { s[j] = -INFINITY; continue; }
                    for (d = 0; d < D; d++) x += tb_get(q, tb_off(q, b, h, i, d)) * (double)kk[b][(j * H + g) * D + d];
                    x *= scale;
                    if (p->softcap > 0.0f) x = p->softcap * tanh(x / p->softcap);
                    if (p->alibi_slopes) x -= p->alibi_slopes[h] * (double)(pos > j ? pos - j : j - pos);
                    s[j] = x;
                    if (x > mx) mx = x;
                }
                if (mx == -INFINITY) continue;
                for (j = 0; j < L; j++)
                    if (s[j] != -INFINITY) {
                        double e = exp(s[j] - mx);
                        sum += e;
                        for (d = 0; d < Dv; d++) o[d] += e * (double)vv[b][(j * H + g) * Dv + d];
                    }
                for (d = 0; d < Dv; d++) o[d] /= sum;
                lse[(b * Hq + h) * n + i] = mx + log(sum);
                if (pverr) {
                    double e = 0.0;
                    int64_t j0;
                    for (j0 = 0; j0 < L; j0 += 64) {
                        double top = 0.0;
                        int64_t cnt = 0;
                        for (j = j0; j < L && j < j0 + 64; j++) {
                            double w, vm = 0.0, a;
                            if (s[j] == -INFINITY) continue;
                            for (d = 0; d < Dv; d++)
                                if ((a = fabs((double)vv[b][(j * H + g) * Dv + d])) > vm) vm = a;
                            w = exp(s[j] - mx) * vm;
                            if (w > top) top = w;
                            cnt++;
                        }
                        e += (double)cnt * top;
                    }
                    pverr[(b * Hq + h) * n + i] = e / 65534.0 / sum;
                }
            }
        free(s);
    }
}

/* The extra error the header states for I8 storage: scores off by at most
 * (sum_d |k_d|) * max|q| * scale / 65534 (err), outputs by twice that times
 * max|v| (out). Keys scaled per channel: 127 * D * max|q_d s_d| in place of
 * the sum, with the page's channel scales s_d <= 1.25 max|k_d| / 127.
 * Plain compares, not fmax: aarch64 gcc 12 -O3 crashed vectorising fmax
 * reductions here (internal compiler error). */
static void kv_q16_bound(const tbuf *q, const kv_model *m, float *const *kk, float *const *vv, const int64_t *len,
                         int64_t B, int64_t n, float scale, int lim, double *err, double *out)
{
    double qmax = 0.0, ksum = 0.0, vmax = 0.0, sc = scale != 0.0f ? scale : 1.0 / sqrt((double)m->D), a;
    int64_t Hq = q->t.shape[1], b, h, i, d;
    for (b = 0; b < B; b++)
        for (h = 0; h < Hq; h++)
            for (i = 0; i < n; i++)
                for (d = 0; d < m->D; d++)
                    if ((a = fabs(tb_get(q, tb_off(q, b, h, i, d)))) > qmax) qmax = a;
    for (b = 0; b < B; b++)
        for (i = 0; i < len[b] * m->H; i++) {
            double sum = 0.0;
            for (d = 0; d < m->D; d++) sum += fabs(kk[b][i * m->D + d]);
            if (sum > ksum) ksum = sum;
            for (d = 0; d < m->Dv; d++)
                if ((a = fabs(vv[b][i * m->Dv + d])) > vmax) vmax = a;
        }
    if (m->kchan) {
        double km = 0.0;
        for (i = 0; i < m->H * m->D; i++)
            if (m->kmax[i] > km) km = m->kmax[i];
        ksum = 1.25 * (double)m->D * km;
    }
    *err = ksum * qmax * sc / (2.0 * lim);
    *out = expm1(2.0 * *err) * vmax;
}

/* I8 caches in kv_check_attention: 1 = the int8 precision modes (queries
 * rounded to 8 bits), 0 = the default (16 bits) */
static int g_kv_int8 = 0;

/* Runs attention over the cache for batch entries seqs[] with random
 * options, and checks out and lse against the reference over what the cache
 * returns on read (so I8 is checked against its own dequantized values).
 * Also: a second run with another thread count must be bitwise identical. */
static void kv_check_attention(const sdpa_kv_cache *c, const kv_model *m, const int64_t *seqs, int64_t B, int64_t G,
                               int64_t n, int opts)
{
    int64_t Hq = m->H * G, b, h, i, d, len[8], sl[8];
    float *kk[8], *vv[8], *lse1, *lse2, slopes[64];
    double *ref, *rlse, *pverr, worst = 0.0, q16_err = 0.0, q16_out = 0.0;
    tbuf q, o, o2;
    sdpa_params p;
    sdpa_dtype odt = (sdpa_dtype)rnd_int(SDPA_F32, SDPA_BF16);
    int rc, bad = 0;
    memset(&p, 0, sizeof p);
    if (opts) {
        if (rnd_int(0, 2)) p.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
        if (rnd_int(0, 3) == 0) { p.window = 1; p.window_left = rnd_int(-1, 300); p.window_right = rnd_int(-1, 3); }
        if (rnd_int(0, 4) == 0) p.softcap = (float)rnd_range(0.5, 5.0);
        if (rnd_int(0, 4) == 0 && Hq <= 64) {
            for (h = 0; h < Hq; h++) slopes[h] = (float)rnd_range(0.0, 0.1);
            p.alibi_slopes = slopes;
        }
        if (rnd_int(0, 3) == 0) {
            for (b = 0; b < B; b++) sl[b] = rnd_int(0, n);
            p.seqlens_q = sl;
        }
        if (rnd_int(0, 3) == 0) p.scale = (float)rnd_range(0.05, 0.5);
    }
    for (b = 0; b < B; b++) {
        len[b] = sdpa_kv_cache_len(c, seqs[b]);
        kk[b] = (float *)xcalloc((size_t)(len[b] * m->H * m->D + 1), sizeof(float));
        vv[b] = (float *)xcalloc((size_t)(len[b] * m->H * m->Dv + 1), sizeof(float));
        if (len[b] > 0) { /* what the cache holds, token-major */
            sdpa_tensor kt = {kk[b], SDPA_F32, {1, m->H, len[b], m->D}, {0, m->D, m->H * m->D, 1}};
            sdpa_tensor vt = {vv[b], SDPA_F32, {1, m->H, len[b], m->Dv}, {0, m->Dv, m->H * m->Dv, 1}};
            CHECK(sdpa_kv_cache_read(c, seqs[b], 0, &kt, &vt) == SDPA_OK, "read failed");
        }
    }
    tb_alloc(&q, (sdpa_dtype)rnd_int(SDPA_F32, SDPA_BF16), B, Hq, n, m->D, (int)rnd_int(LAY_ZERO, LAY_PERM), 16);
    for (b = 0; b < B; b++)
        for (h = 0; h < Hq; h++)
            for (i = 0; i < n; i++)
                for (d = 0; d < m->D; d++) tb_put(&q, tb_off(&q, b, h, i, d), rnd_range(-1.0, 1.0));
    tb_alloc(&o, odt, B, Hq, n, m->Dv, (int)rnd_int(LAY_ZERO, LAY_PERM), 16);
    tb_alloc(&o2, odt, B, Hq, n, m->Dv, LAY_CONTIG, 16);
    lse1 = (float *)xcalloc((size_t)(B * Hq * n + 1), sizeof(float));
    lse2 = (float *)xcalloc((size_t)(B * Hq * n + 1), sizeof(float));
    for (i = 0; i < B * Hq * n; i++) lse1[i] = lse2[i] = NAN;
    ref = (double *)xcalloc((size_t)(B * Hq * n * m->Dv + 1), sizeof(double));
    rlse = (double *)xcalloc((size_t)(B * Hq * n + 1), sizeof(double));
    pverr = (double *)xcalloc((size_t)(B * Hq * n + 1), sizeof(double));
    kv_reference(&q, m->H, m->D, m->Dv, kk, vv, len, &p, ref, rlse, m->dt == SDPA_I8 ? pverr : NULL);

    if (m->dt == SDPA_I8 && g_kv_int8) /* int8 mode: any of the three, all the same here */
        p.precision = (int)rnd_of((const int64_t[]){SDPA_PRECISION_INT8_QK, SDPA_PRECISION_INT8_QK_NOSMOOTH, SDPA_PRECISION_INT8_QK_BF16_PV}, 3);
    if (m->dt == SDPA_I8) /* I8: queries rounded to 16 (8) bits per row, or per row and page (header) */
        kv_q16_bound(&q, m, kk, vv, len, B, n, p.scale, g_kv_int8 ? 127 : 32767, &q16_err, &q16_out);
    p.lse = lse1;
    p.num_threads = (int)rnd_int(1, 4);
    rc = sdpa_kv_cache_attention(c, seqs, &q.t, &o.t, &p);
    CHECK(rc == SDPA_OK, "attention: %s", sdpa_strerror(rc));
    for (b = 0; b < B && rc == SDPA_OK; b++)
        for (h = 0; h < Hq; h++)
            for (i = 0; i < n; i++) {
                double rl = rlse[(b * Hq + h) * n + i], gl = lse1[(b * Hq + h) * n + i];
                if (!(rl == gl || fabs(gl - rl) <= tol_lse(rl) + q16_err) && bad++ < 3)
                    case_fail("lse b %lld h %lld i %lld: %.9g, ref %.9g", LL(b), LL(h), LL(i), gl, rl);
                for (d = 0; d < m->Dv; d++) {
                    double r = ref[((b * Hq + h) * n + i) * m->Dv + d], g = tb_get(&o, tb_off(&o, b, h, i, d));
                    double e = fabs(g - r), t = tol_out(odt, r) + q16_out + pverr[(b * Hq + h) * n + i] * 1.01;
                    if (!(e <= t) && bad++ < 3)
                        case_fail("out b %lld h %lld i %lld d %lld: %.9g, ref %.9g (len %lld)", LL(b), LL(h), LL(i), LL(d), g, r,
                                  LL(len[b]));
                    if (e / t > worst) worst = e / t;
                }
            }
    if (odt == SDPA_F32 && worst > g_ratio[0]) g_ratio[0] = worst;
    /* another thread count, through the parallel_for-less built-in pool */
    p.lse = lse2;
    p.num_threads = p.num_threads == 1 ? 3 : 1;
    rc = sdpa_kv_cache_attention(c, seqs, &q.t, &o2.t, &p);
    CHECK(rc == SDPA_OK, "attention (threads %d): %s", p.num_threads, sdpa_strerror(rc));
    for (b = 0; b < B && rc == SDPA_OK; b++)
        for (h = 0; h < Hq; h++)
            for (i = 0; i < n; i++) {
                float a1 = lse1[(b * Hq + h) * n + i], a2 = lse2[(b * Hq + h) * n + i];
                if (f32_bits(a1) != f32_bits(a2) && bad++ < 3) case_fail("lse differs between thread counts");
                for (d = 0; d < m->Dv; d++) {
                    double g1 = tb_get(&o, tb_off(&o, b, h, i, d)), g2 = tb_get(&o2, tb_off(&o2, b, h, i, d));
                    if (g1 != g2 && bad++ < 3) case_fail("out differs between thread counts: %.9g vs %.9g", g1, g2);
                }
            }
    for (b = 0; b < B; b++) free(kk[b]), free(vv[b]);
    free(ref), free(rlse), free(pverr), free(lse1), free(lse2);
    tb_free(&q), tb_free(&o), tb_free(&o2);
}

/* I8 keys' scales of the caches kv_new makes: -1 = either, at random */
static int g_kv_kscale = -1;

static sdpa_kv_cache *kv_new(kv_model *m, int64_t nseq, int64_t H, int64_t D, int64_t Dv, sdpa_dtype dt, int64_t ps,
                             int64_t max_pages, const sdpa_allocator *al)
{
    sdpa_kv_cache_config cfg;
    sdpa_kv_cache *c = NULL;
    int rc;
    memset(&cfg, 0, sizeof cfg);
    cfg.num_seqs = nseq, cfg.kv_heads = H, cfg.head_dim = D, cfg.head_dim_v = Dv == D && rnd_int(0, 1) ? 0 : Dv;
    cfg.dtype = dt, cfg.page_size = ps, cfg.max_pages = max_pages, cfg.allocator = al;
    cfg.kscale = g_kv_kscale >= 0 ? (sdpa_kv_kscale)g_kv_kscale : (sdpa_kv_kscale)rnd_int(0, 1);
    rc = sdpa_kv_cache_create(&cfg, &c);
    CHECK(rc == SDPA_OK && c, "create: %s", sdpa_strerror(rc));
    km_init(m, nseq, H, D, Dv, dt, cfg.kscale == SDPA_KV_KSCALE_CHANNEL);
    return c;
}

static const sdpa_dtype k_kv_dts[4] = {SDPA_F32, SDPA_F16, SDPA_BF16, SDPA_I8};

/* ---- groups ----------------------------------------------------------------- */

/* Attention over the cache against the reference: page sizes, head dims,
 * GQA, lengths on both sides of the split (512 keys), appends of any size,
 * several sequences with a seqs map, every option. */
static void test_kv_attention(void)
{
    static const int64_t dims[] = {1, 7, 8, 16, 33, 64, 128};
    static const int64_t pss[] = {1, 3, 16, 16, 64, 100};
    static const int64_t lens[] = {0, 1, 5, 63, 64, 65, 200, 513, 1100, 2100};
    int cases = g_quick ? 40 : 160, ci;
    if (!group_begin("kv cache attention")) return;
    for (ci = 0; ci < cases; ci++) {
        kv_model m;
        sdpa_kv_cache *c;
        int64_t nseq = rnd_int(1, 3), H = rnd_int(1, 3), G = rnd_of((const int64_t[]){1, 1, 2, 4, 5}, 5);
        int64_t D = rnd_of(dims, 7), Dv = rnd_int(0, 3) ? D : rnd_of(dims, 7), ps = rnd_of(pss, 6), s, seqs[8], B, n;
        sdpa_dtype dt = k_kv_dts[ci % 4];
        if (D * H * G > 2000 && ci % 2) D = Dv = 16;
        g_kv_int8 = dt == SDPA_I8 && ci % 8 == 7; /* every other I8 case in int8 mode */
        case_begin("%s%s page %lld H %lld G %lld D %lld Dv %lld seqs %lld", dt_name(dt), g_kv_int8 ? " int8 mode" : "", LL(ps), LL(H),
                   LL(G), LL(D), LL(Dv), LL(nseq));
        c = kv_new(&m, nseq, H, D, Dv, dt, ps, 0, NULL);
        if (!c) { case_end(); continue; }
        for (s = 0; s < nseq; s++) {
            int64_t want = rnd_of(lens, g_quick ? 8 : 10);
            while (m.s[s].len < want) { /* appends of random sizes: page boundaries anywhere */
                int64_t k = rnd_int(1, 300);
                CHECK(kv_append(c, &m, s, k < want - m.s[s].len ? k : want - m.s[s].len, 1.0, 0) == SDPA_OK, "append");
            }
        }
        B = rnd_int(1, 3);
        for (s = 0; s < B; s++) seqs[s] = rnd_int(0, nseq - 1);
        n = rnd_of((const int64_t[]){1, 1, 2, 3, 5, 17, 40}, 7);
        for (s = 0; s < nseq; s++) kv_check_contents(c, &m, s);
        kv_check_attention(c, &m, seqs, B, G, n, 1);
        g_kv_int8 = 0;
        sdpa_kv_cache_destroy(c);
        km_free(&m);
        case_end();
    }
    group_end();
}

/* F32 storage: attention over the cache against sdpa_attention over the same
 * contiguous K/V (different kernels and summation order: near, not bitwise). */
static void test_kv_vs_sdpa(void)
{
    int ci;
    if (!group_begin("kv cache vs sdpa_attention")) return;
    for (ci = 0; ci < (g_quick ? 6 : 20); ci++) {
        kv_model m;
        int64_t H = rnd_int(1, 4), G = rnd_int(1, 4), D = rnd_of((const int64_t[]){8, 64, 80, 128}, 4), L = rnd_int(1, 1500);
        int64_t n = rnd_int(1, 9), Hq = H * G, i, total;
        sdpa_kv_cache *c = kv_new(&m, 1, H, D, D, SDPA_F32, rnd_int(1, 40), 0, NULL);
        float *qv, *o1, *o2;
        sdpa_params p;
        double worst = 0.0;
        case_begin("H %lld G %lld D %lld L %lld n %lld", LL(H), LL(G), LL(D), LL(L), LL(n));
        if (!c) { case_end(); continue; }
        while (m.s[0].len < L) {
            int64_t k = rnd_int(1, 500);
            kv_append(c, &m, 0, k < L - m.s[0].len ? k : L - m.s[0].len, 1.0, 0);
        }
        total = Hq * n * D;
        qv = (float *)xcalloc((size_t)total, sizeof(float));
        o1 = (float *)xcalloc((size_t)total, sizeof(float));
        o2 = (float *)xcalloc((size_t)total, sizeof(float));
        for (i = 0; i < total; i++) qv[i] = (float)rnd_range(-1, 1);
        memset(&p, 0, sizeof p);
        p.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
        {
            sdpa_tensor q = {qv, SDPA_F32, {1, Hq, n, D}, {0}}, o = {o1, SDPA_F32, {1, Hq, n, D}, {0}};
            sdpa_tensor o_ = {o2, SDPA_F32, {1, Hq, n, D}, {0}};
            sdpa_tensor k = {m.s[0].k, SDPA_F32, {1, H, L, D}, {0, D, H * D, 1}}, v = {m.s[0].v, SDPA_F32, {1, H, L, D}, {0, D, H * D, 1}};
            CHECK(sdpa_kv_cache_attention(c, NULL, &q, &o, &p) == SDPA_OK, "cache attention failed");
            CHECK(sdpa_attention(&q, &k, &v, &o_, &p) == SDPA_OK, "sdpa_attention failed");
        }
        for (i = 0; i < total; i++) {
            double e = fabs((double)o1[i] - o2[i]) / (1e-6 + 1e-5 * fabs(o2[i]));
            if (!(e <= 1.0)) { case_fail("[%lld]: cache %.9g, sdpa %.9g", LL(i), o1[i], o2[i]); break; }
            if (e > worst) worst = e;
        }
        free(qv), free(o1), free(o2);
        sdpa_kv_cache_destroy(c);
        km_free(&m);
        case_end();
    }
    group_end();
}

/* Counting allocator: live bytes, and a failure after `fail_after` calls. */
typedef struct {
    int64_t live, calls, fail_after; /* fail_after < 0: never */
} kv_alloc_state;

static void *kv_alloc_fn(void *user, size_t size, size_t align)
{
    kv_alloc_state *a = (kv_alloc_state *)user;
    void *p;
    (void)align;
    if (a->fail_after >= 0 && a->calls >= a->fail_after) return NULL;
    a->calls++;
    p = malloc(size + 16); /* misaligned on purpose: the cache must align its pages */
    if (!p) return NULL;
    memcpy(p, &size, sizeof size);
    a->live += (int64_t)size;
    return (char *)p + 8;
}

static void kv_free_fn(void *user, void *ptr, size_t size)
{
    kv_alloc_state *a = (kv_alloc_state *)user;
    size_t got;
    memcpy(&got, (char *)ptr - 8, sizeof got);
    if (got != size) a->live = INT64_MIN / 2; /* a size mismatch shows as a huge leak */
    a->live -= (int64_t)size;
    free((char *)ptr - 8);
}

/* Random sequences of append / truncate / evict / fork / reset against the
 * model, with the contents, the byte count and attention checked as it goes. */
static void test_kv_ops(void)
{
    int ci, steps = g_quick ? 60 : 200;
    if (!group_begin("kv cache operations")) return;
    for (ci = 0; ci < (g_quick ? 8 : 24); ci++) {
        kv_alloc_state as = {0, 0, -1};
        sdpa_allocator al = {kv_alloc_fn, kv_free_fn, NULL};
        kv_model m;
        int64_t nseq = rnd_int(2, 4), H = rnd_int(1, 2), D = rnd_of((const int64_t[]){3, 8, 24, 64}, 4), ps = rnd_int(1, 20);
        sdpa_dtype dt = k_kv_dts[ci % 4];
        sdpa_kv_cache *c;
        int st;
        al.user = &as;
        case_begin("%s page %lld H %lld D %lld seqs %lld", dt_name(dt), LL(ps), LL(H), LL(D), LL(nseq));
        c = kv_new(&m, nseq, H, D, D, dt, ps, 0, &al);
        if (!c) { case_end(); continue; }
        CHECK(sdpa_kv_cache_bytes(c) == as.live, "bytes %lld, allocator says %lld", LL(sdpa_kv_cache_bytes(c)), LL(as.live));
        for (st = 0; st < steps && g_case_ok; st++) {
            int64_t s = rnd_int(0, nseq - 1), len = m.s[s].len, op = rnd_int(0, 9);
            if (op <= 3) {
                CHECK(kv_append(c, &m, s, rnd_int(0, 3 * ps + 2), 1.0, 0) == SDPA_OK, "append");
            } else if (op == 4) { /* rollback */
                int64_t to = rnd_int(0, len);
                CHECK(sdpa_kv_cache_truncate(c, s, to) == SDPA_OK, "truncate");
                km_cut(&m, &m.s[s], to, len);
            } else if (op == 5) { /* StreamingLLM eviction */
                int64_t sink = rnd_int(0, 6), recent = rnd_int(0, 40);
                CHECK(sdpa_kv_cache_evict(c, s, sink, recent) == SDPA_OK, "evict");
                if (len > sink + recent) km_cut(&m, &m.s[s], sink, len - recent);
            } else if (op == 6) { /* a shared prefix */
                int64_t d = rnd_int(0, nseq - 1), n = rnd_int(0, len), before = sdpa_kv_cache_bytes(c);
                if (d == s) continue;
                CHECK(sdpa_kv_cache_fork(c, d, s, n) == SDPA_OK, "fork");
                km_reserve(&m, &m.s[d], n);
                if (n > 0) {
                    memcpy(m.s[d].k, m.s[s].k, (size_t)(n * H * D) * sizeof(float));
                    memcpy(m.s[d].v, m.s[s].v, (size_t)(n * H * D) * sizeof(float));
                }
                m.s[d].len = n;
                (void)before;
            } else if (op == 7) {
                CHECK(sdpa_kv_cache_reset(c, s) == SDPA_OK, "reset");
                m.s[s].len = 0;
            } else if (op == 8) {
                int64_t seqs[3], G = rnd_int(1, 3), k;
                for (k = 0; k < 3; k++) seqs[k] = rnd_int(0, nseq - 1);
                kv_check_attention(c, &m, seqs, rnd_int(1, 3), G, rnd_int(1, 4), 1);
            } else {
                kv_check_contents(c, &m, s);
            }
            CHECK(sdpa_kv_cache_bytes(c) == as.live, "step %d: bytes %lld, allocator says %lld", st,
                  LL(sdpa_kv_cache_bytes(c)), LL(as.live));
        }
        {
            int64_t s;
            for (s = 0; s < nseq; s++) kv_check_contents(c, &m, s);
        }
        CHECK(sdpa_kv_cache_reset(c, -1) == SDPA_OK, "reset all");
        CHECK(sdpa_kv_cache_bytes(c) == as.live && as.live < 4096, "after reset: %lld bytes held", LL(as.live));
        sdpa_kv_cache_destroy(c);
        CHECK(as.live == 0, "%lld bytes leaked", LL(as.live));
        km_free(&m);
        case_end();
    }
    group_end();
}

/* Pages: sharing saves memory and writes stay private; capacity and
 * allocation failures leave the cache exactly as it was. */
static void test_kv_pages(void)
{
    int dti;
    if (!group_begin("kv cache pages and limits")) return;
    for (dti = 0; dti < 4; dti++) {
        sdpa_dtype dt = k_kv_dts[dti];
        kv_alloc_state as = {0, 0, -1};
        sdpa_allocator al = {kv_alloc_fn, kv_free_fn, NULL};
        kv_model m;
        sdpa_kv_cache *c;
        int64_t b0, b1, b2, i, seqs[2] = {0, 1};
        al.user = &as;

        case_begin("%s: fork shares the prefix's pages", dt_name(dt));
        c = kv_new(&m, 2, 2, 32, 32, dt, 16, 0, &al);
        kv_append(c, &m, 0, 100, 1.0, 0);
        b0 = sdpa_kv_cache_bytes(c);
        CHECK(sdpa_kv_cache_fork(c, 1, 0, 100) == SDPA_OK, "fork");
        b1 = sdpa_kv_cache_bytes(c);
        CHECK(b1 - b0 < 1024, "fork of 100 tokens took %lld bytes", LL(b1 - b0));
        km_reserve(&m, &m.s[1], 100);
        memcpy(m.s[1].k, m.s[0].k, 100 * 2 * 32 * sizeof(float));
        memcpy(m.s[1].v, m.s[0].v, 100 * 2 * 32 * sizeof(float));
        m.s[1].len = 100;
        kv_append(c, &m, 1, 5, 1.0, 0); /* 100 % 16 != 0: the shared last page is not written */
        kv_append(c, &m, 0, 7, 1.0, 0);
        kv_check_contents(c, &m, 0);
        kv_check_contents(c, &m, 1);
        kv_check_attention(c, &m, seqs, 2, 2, 3, 1);
        case_end();

        case_begin("%s: capacity", dt_name(dt));
        sdpa_kv_cache_destroy(c);
        km_free(&m);
        c = kv_new(&m, 2, 2, 32, 32, dt, 16, 7, &al); /* 7 pages of 16 tokens */
        CHECK(kv_append(c, &m, 0, 100, 1.0, 0) == SDPA_OK, "100 tokens fit in 7 pages");
        b0 = sdpa_kv_cache_bytes(c);
        CHECK(kv_append(c, &m, 1, 17, 1.0, 0) == SDPA_ERR_CAPACITY, "17 more tokens need 2 pages, 0 free");
        CHECK(kv_append(c, &m, 0, 13, 1.0, 0) == SDPA_ERR_CAPACITY, "13 more need a page");
        CHECK(kv_append(c, &m, 0, 12, 1.0, 0) == SDPA_OK, "12 fit the last page");
        CHECK(sdpa_kv_cache_bytes(c) == b0, "bytes changed without a new page");
        CHECK(sdpa_kv_cache_len(c, 1) == 0 && sdpa_kv_cache_len(c, 0) == 112, "lengths after the failures");
        CHECK(sdpa_kv_cache_evict(c, 0, 4, 20) == SDPA_OK, "evict");
        km_cut(&m, &m.s[0], 4, 92);
        CHECK(kv_append(c, &m, 1, 64, 1.0, 0) == SDPA_OK, "evicted pages are free again");
        kv_check_contents(c, &m, 0);
        kv_check_contents(c, &m, 1);
        case_end();

        case_begin("%s: allocation failures change nothing", dt_name(dt));
        for (i = 0; i < 12; i++) {
            int rc;
            b2 = sdpa_kv_cache_bytes(c);
            as.fail_after = as.calls + i % 3;
            rc = i % 2 ? sdpa_kv_cache_fork(c, 1, 0, sdpa_kv_cache_len(c, 0)) : kv_append(c, &m, 1, 40, 1.0, 0);
            as.fail_after = -1;
            if (rc == SDPA_OK) {
                if (i % 2) {
                    int64_t n = m.s[0].len;
                    km_reserve(&m, &m.s[1], n);
                    memcpy(m.s[1].k, m.s[0].k, (size_t)(n * 2 * 32) * sizeof(float));
                    memcpy(m.s[1].v, m.s[0].v, (size_t)(n * 2 * 32) * sizeof(float));
                    m.s[1].len = n;
                }
            } else {
                CHECK(rc == SDPA_ERR_NOMEM || rc == SDPA_ERR_CAPACITY, "failure %d: %s", (int)i, sdpa_strerror(rc));
                CHECK(sdpa_kv_cache_bytes(c) == b2, "a failed call changed the bytes held");
            }
            CHECK(sdpa_kv_cache_bytes(c) == as.live, "bytes %lld, allocator %lld", LL(sdpa_kv_cache_bytes(c)), LL(as.live));
            kv_check_contents(c, &m, 0);
            kv_check_contents(c, &m, 1);
        }
        sdpa_kv_cache_destroy(c);
        km_free(&m);
        CHECK(as.live == 0, "%lld bytes leaked", LL(as.live));
        case_end();
    }
    group_end();
}

/* Memory: bytes per token of each storage type against F32 (head_dim 128,
 * the default page size); I8 with keys scaled per channel (the default) and
 * per token. */
static void test_kv_memory(void)
{
    int64_t bytes[5], i;
    int dti;
    if (!group_begin("kv cache memory")) return;
    case_begin("bytes per storage type, 8 heads x 128, 4096 tokens");
    for (dti = 0; dti < 5; dti++) {
        kv_model m;
        sdpa_kv_cache *c;
        g_kv_kscale = dti == 4 ? SDPA_KV_KSCALE_TOKEN : SDPA_KV_KSCALE_CHANNEL;
        c = kv_new(&m, 1, 8, 128, 128, k_kv_dts[dti < 4 ? dti : 3], 0, 0, NULL);
        g_kv_kscale = -1;
        for (i = 0; i < 4096; i += 512) kv_append(c, &m, 0, 512, 1.0, 0);
        bytes[dti] = sdpa_kv_cache_bytes(c);
        sdpa_kv_cache_destroy(c);
        km_free(&m);
    }
    CHECK(bytes[1] <= bytes[0] * 0.51 && bytes[2] <= bytes[0] * 0.51, "F16/BF16 %.3f / %.3f of F32",
          (double)bytes[1] / bytes[0], (double)bytes[2] / bytes[0]);
    printf("       I8 bytes of F32: %.4f keys per channel, %.4f per token (64-token pages)\n", (double)bytes[3] / bytes[0],
           (double)bytes[4] / bytes[0]);
    CHECK(bytes[3] <= bytes[0] * 0.27 && bytes[4] <= bytes[0] * 0.27, "I8 %.3f (channel) / %.3f (token) of F32 (issue: at most 0.27)",
          (double)bytes[3] / bytes[0], (double)bytes[4] / bytes[0]);
    CHECK(bytes[0] >= 4096 * 8 * 128 * 2 * 4, "F32 %lld bytes is less than the data", LL(bytes[0]));
    case_end();
    group_end();
}

/* int8 storage against F32 storage: relative L2 error and cosine similarity
 * of decode outputs, random data and data with outlier channels in K.
 * 16 query heads x 8 query tokens: with one token per head (as before) the
 * statistic had a heavy tail, one sharply peaked head carrying most of the
 * error (uniform keys per channel: median 7.6e-3, worst of 800 seeds 1.7e-2,
 * over the old bound 1.2e-2 in 2 of the 800; the per-channel to
 * per-token ratio with outliers reached 0.83, over its bound 0.8). */
static void test_kv_i8_accuracy(void)
{
    int outl, ks, i8;
    double rel_of[2][2];
    if (!group_begin("kv cache int8 accuracy")) return;
    for (outl = 0; outl < 2; outl++)
    for (ks = 0; ks < 2; ks++)
    for (i8 = 0; i8 < 2; i8++) {
        kv_model m8, m32;
        int64_t H = 4, G = 4, D = 128, L = 2048, n = 8, Hq = H * G, i, total = Hq * n * D;
        sdpa_kv_cache *c8, *c32;
        float *qv = (float *)xcalloc((size_t)total, sizeof(float)), *o8 = (float *)xcalloc((size_t)total, sizeof(float));
        float *o32 = (float *)xcalloc((size_t)total, sizeof(float));
        double num = 0, den = 0, dot = 0, n8 = 0, rel, cosv;
        sdpa_tensor q = {qv, SDPA_F32, {1, Hq, n, D}, {0}}, a = {o8, SDPA_F32, {1, Hq, n, D}, {0}};
        sdpa_tensor b = {o32, SDPA_F32, {1, Hq, n, D}, {0}};
        sdpa_params p;
        g_kv_kscale = ks ? SDPA_KV_KSCALE_TOKEN : SDPA_KV_KSCALE_CHANNEL;
        c8 = kv_new(&m8, 1, H, D, D, SDPA_I8, 0, 0, NULL);
        c32 = kv_new(&m32, 1, H, D, D, SDPA_F32, 0, 0, NULL);
        g_kv_kscale = -1;
        case_begin("%s, keys scaled per %s%s", outl ? "outlier channels in K" : "uniform random", ks ? "token" : "channel",
                   i8 ? ", int8 mode" : "");
        memset(&p, 0, sizeof p);
        p.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
        while (m8.s[0].len < L) { /* the same tokens into both caches */
            uint64_t r = g_rng;
            kv_append(c8, &m8, 0, 256, 2.0, outl);
            g_rng = r;
            kv_append(c32, &m32, 0, 256, 2.0, outl);
        }
        for (i = 0; i < total; i++) qv[i] = (float)rnd_range(-2, 2);
        p.precision = i8 ? SDPA_PRECISION_INT8_QK : 0;
        CHECK(sdpa_kv_cache_attention(c8, NULL, &q, &a, &p) == SDPA_OK, "i8 attention");
        p.precision = 0;
        CHECK(sdpa_kv_cache_attention(c32, NULL, &q, &b, &p) == SDPA_OK, "f32 attention");
        for (i = 0; i < total; i++) {
            num += ((double)o8[i] - o32[i]) * ((double)o8[i] - o32[i]);
            den += (double)o32[i] * o32[i];
            dot += (double)o8[i] * o32[i];
            n8 += (double)o8[i] * o8[i];
        }
        rel = sqrt(num / den);
        cosv = dot / sqrt(n8 * den);
        printf("       int8 KV cache%s vs F32 (%s, keys per %s, D 128, 2048 keys, 16 heads x 8 queries): rel L2 %.2e, cosine %.6f\n",
               i8 ? " in int8 mode" : "", outl ? "outlier channels" : "uniform", ks ? "token" : "channel", rel, cosv);
        if (i8) { /* int8 mode: over 8 seeds, median / worst rel L2 uniform 9.7e-3 / 1.0e-2 per channel, 9.0e-3 / 9.2e-3
                   * per token; outlier channels 5.6e-2 / 6.4e-2 per channel (the channel scales folded into the
                   * query leave the other channels few of its 8 bits), 5.4e-2 / 6.1e-2 per token. Bounds ~2x. */
            CHECK(rel > 0.0 && (outl ? rel < 0.12 && cosv > 0.995 : rel < 0.02 && cosv > 0.9999), "rel L2 %.3g, cosine %.6f", rel,
                  cosv);
            free(qv), free(o8), free(o32);
            sdpa_kv_cache_destroy(c8), sdpa_kv_cache_destroy(c32);
            km_free(&m8), km_free(&m32);
            case_end();
            continue;
        }
        rel_of[outl][ks] = rel;
        /* Over 600 seeds (avx2), median / worst rel L2: uniform 7.7e-3 / 9.7e-3
         * per channel, 7.1e-3 / 8.5e-3 per token; outlier channels 1.9e-2 /
         * 2.4e-2 per channel, 5.3e-2 / 6.4e-2 per token (a per-token scale
         * lets an outlier channel coarsen its token's whole row). The bounds
         * are about 2x the median, 1.5x the worst. */
        CHECK(rel > 0.0 && (outl ? rel < (ks ? 0.1 : 0.04) && cosv > (ks ? 0.995 : 0.9993) : rel < 0.015 && cosv > 0.99985),
              "rel L2 %.3g, cosine %.6f", rel, cosv);
        if (outl && ks == 1) /* why per channel is the default: the ratio measured 0.35 median, 0.46 worst of 600 seeds */
            CHECK(rel_of[1][0] < 0.7 * rel_of[1][1], "outliers: per-channel rel L2 %.3g not below 0.7x per-token %.3g",
                  rel_of[1][0], rel_of[1][1]);
        free(qv), free(o8), free(o32);
        sdpa_kv_cache_destroy(c8), sdpa_kv_cache_destroy(c32);
        km_free(&m8), km_free(&m32);
        case_end();
    }
    group_end();
}

/* Non-finite values stay in the rows that see them; I8 stores them as a
 * NaN scale. */
static void test_kv_nonfinite(void)
{
    int dti;
    if (!group_begin("kv cache NaN/Inf")) return;
    for (dti = 0; dti < 4; dti++) {
        kv_model m;
        sdpa_dtype dt = k_kv_dts[dti];
        int64_t D = 16, L = 40, n = 4, i, d, bad = 20; /* token 38: seen by queries at 38, 39 only */
        sdpa_kv_cache *c = kv_new(&m, 1, 1, D, D, dt, 8, 0, NULL);
        float qv[4 * 16], ov[4 * 16], *kk, *vv;
        sdpa_tensor q = {qv, SDPA_F32, {1, 1, n, D}, {0}}, o = {ov, SDPA_F32, {1, 1, n, D}, {0}};
        sdpa_params p;
        int w;
        for (w = 0; w < 2; w++) {
            case_begin("%s: %s in V, then in K, of a key hidden by causal from two rows", dt_name(dt), w ? "Inf" : "NaN");
            sdpa_kv_cache_reset(c, 0);
            m.s[0].len = 0;
            kv_append(c, &m, 0, L, 1.0, 0);
            kk = (float *)xcalloc((size_t)(L * D), sizeof(float));
            vv = (float *)xcalloc((size_t)(L * D), sizeof(float));
            memcpy(kk, m.s[0].k, (size_t)(L * D) * sizeof(float));
            memcpy(vv, m.s[0].v, (size_t)(L * D) * sizeof(float));
            vv[38 * D + 5] = w ? INFINITY : NAN;
            bad = 38;
            {
                sdpa_tensor kt = {kk, SDPA_F32, {1, 1, L, D}, {0}}, vt = {vv, SDPA_F32, {1, 1, L, D}, {0}};
                sdpa_kv_cache_reset(c, 0);
                CHECK(sdpa_kv_cache_append(c, 0, &kt, &vt) == SDPA_OK, "append");
            }
            for (i = 0; i < n * D; i++) qv[i] = (float)rnd_range(-1, 1);
            memset(&p, 0, sizeof p);
            p.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
            CHECK(sdpa_kv_cache_attention(c, NULL, &q, &o, &p) == SDPA_OK, "attention");
            for (i = 0; i < n; i++) { /* query i sits at position 36 + i */
                int fin = 1;
                for (d = 0; d < D; d++) fin &= isfinite(ov[i * D + d]) != 0;
                if (36 + i < bad) CHECK(fin, "row %lld does not see key %lld but is not finite", LL(i), LL(bad));
                else CHECK(!isfinite(ov[i * D + 5]), "row %lld sees the non-finite V but is finite", LL(i));
            }
            free(kk), free(vv);
            case_end();
        }
        sdpa_kv_cache_destroy(c);
        km_free(&m);
    }
    { /* keys per channel at the ends of the float range: scales that underflow, denormal ones, huge ones */
        kv_model m;
        const int64_t D = 8, L = 24;
        float kk[24 * 8], vv[24 * 8], got[24 * 8];
        int64_t t, d;
        sdpa_kv_cache *c;
        sdpa_tensor kt = {kk, SDPA_F32, {1, 1, L, D}, {0}}, vt = {vv, SDPA_F32, {1, 1, L, D}, {0}};
        sdpa_tensor rt = {got, SDPA_F32, {1, 1, L, D}, {0}};
        case_begin("I8 keys per channel: magnitudes from 1e-45 to 3e38 in one page");
        g_kv_kscale = SDPA_KV_KSCALE_CHANNEL;
        c = kv_new(&m, 1, 1, D, D, SDPA_I8, 32, 0, NULL);
        g_kv_kscale = -1;
        for (t = 0; t < L; t++)
            for (d = 0; d < D; d++) { /* channel d grows from its tiny start by 10^(t/2) */
                static const float start[8] = {1e-45f, 1e-43f, 1e-40f, 1e-38f, 1e-30f, 1.0f, 1e30f, 3e38f};
                double x = (double)start[d] * pow(10.0, (double)t / 2.0) * (t % 3 == 1 ? -1.0 : 1.0);
                kk[t * D + d] = (float)(fabs(x) > 3.3e38 ? 3.3e38 : x);
                vv[t * D + d] = 0.5f;
            }
        CHECK(sdpa_kv_cache_append(c, 0, &kt, &vt) == SDPA_OK, "append");
        CHECK(sdpa_kv_cache_read(c, 0, 0, &rt, NULL) == SDPA_OK, "read");
        for (d = 0; d < D; d++) {
            double mx = 0.0, e;
            for (t = 0; t < L; t++) mx = fabs(kk[t * D + d]) > mx ? fabs(kk[t * D + d]) : mx;
            for (t = 0; t < L; t++) {
                e = fabs((double)got[t * D + d] - kk[t * D + d]);
                CHECK(e <= mx / 127.0 * 2.5 * 1.25 + mx * 2.4e-7 + 2e-43, "channel %lld token %lld: %.9g for %.9g (max %.3g)", LL(d),
                      LL(t), got[t * D + d], kk[t * D + d], mx);
            }
        }
        sdpa_kv_cache_destroy(c);
        km_free(&m);
        case_end();
    }
    group_end();
}

/* Bad arguments: the right code, a message, nothing written. */
static void test_kv_errors(void)
{
    sdpa_kv_cache_config cfg;
    sdpa_kv_cache *c = NULL;
    char eb[256];
    float kb[2 * 3 * 8], qv[4 * 8], ov[4 * 8], o2[4 * 8];
    sdpa_tensor k = {kb, SDPA_F32, {1, 2, 3, 8}, {0}}, q = {qv, SDPA_F32, {1, 4, 1, 8}, {0}}, o = {ov, SDPA_F32, {1, 4, 1, 8}, {0}};
    sdpa_params p;
    int64_t i, seq = 1;
    if (!group_begin("kv cache errors")) return;
    memset(&cfg, 0, sizeof cfg);
    cfg.num_seqs = 2, cfg.kv_heads = 2, cfg.head_dim = 8, cfg.dtype = SDPA_F16, cfg.errbuf = eb, cfg.errbuf_size = sizeof eb;
    for (i = 0; i < (int64_t)(sizeof kb / 4); i++) kb[i] = (float)i / 50.0f;
    for (i = 0; i < 32; i++) qv[i] = 0.1f * (float)i;

    case_begin("create");
    cfg.dtype = SDPA_BOOL;
    CHECK(sdpa_kv_cache_create(&cfg, &c) == SDPA_ERR_DTYPE && !c, "BOOL storage");
    CHECK(strstr(eb, "dtype") != NULL, "message: %s", eb);
    cfg.dtype = SDPA_F16;
    cfg.head_dim = 0;
    CHECK(sdpa_kv_cache_create(&cfg, &c) == SDPA_ERR_SHAPE && !c, "head_dim 0");
    cfg.head_dim = 8;
    cfg.page_size = -1;
    CHECK(sdpa_kv_cache_create(&cfg, &c) == SDPA_ERR_PARAM && !c, "page_size -1");
    cfg.page_size = 0;
    cfg.head_dim = INT64_MAX / 4;
    CHECK(sdpa_kv_cache_create(&cfg, &c) == SDPA_ERR_OVERFLOW && !c, "huge head_dim");
    cfg.head_dim = 8;
    CHECK(sdpa_kv_cache_create(NULL, &c) == SDPA_ERR_NULL, "NULL config");
    CHECK(sdpa_kv_cache_create(&cfg, &c) == SDPA_OK && c, "a good config");
    case_end();
    if (!c) { group_end(); return; }

    case_begin("append, truncate, evict, fork, read");
    CHECK(sdpa_kv_cache_append(c, 2, &k, &k) == SDPA_ERR_PARAM, "sequence 2 of 2");
    CHECK(sdpa_kv_cache_append(c, -1, &k, &k) == SDPA_ERR_PARAM, "sequence -1");
    k.shape[1] = 3;
    CHECK(sdpa_kv_cache_append(c, 0, &k, &k) == SDPA_ERR_SHAPE, "3 heads, cache has 2");
    k.shape[1] = 2;
    k.dtype = SDPA_I8;
    CHECK(sdpa_kv_cache_append(c, 0, &k, &k) == SDPA_ERR_DTYPE, "I8 input");
    k.dtype = SDPA_F32;
    CHECK(sdpa_kv_cache_append(c, 0, &k, NULL) == SDPA_ERR_NULL, "NULL v");
    CHECK(sdpa_kv_cache_len(c, 0) == 0 && sdpa_kv_cache_len(c, 5) == SDPA_ERR_PARAM, "len");
    CHECK(sdpa_kv_cache_append(c, 1, &k, &k) == SDPA_OK, "good append");
    CHECK(sdpa_kv_cache_truncate(c, 1, 4) == SDPA_ERR_PARAM, "truncate past the end");
    CHECK(sdpa_kv_cache_truncate(c, 1, -1) == SDPA_ERR_PARAM, "truncate to -1");
    CHECK(sdpa_kv_cache_evict(c, 1, -1, 2) == SDPA_ERR_PARAM, "evict -1 sinks");
    CHECK(sdpa_kv_cache_fork(c, 1, 1, 1) == SDPA_ERR_PARAM, "fork onto itself");
    CHECK(sdpa_kv_cache_fork(c, 0, 1, 4) == SDPA_ERR_PARAM, "fork 4 of 3 tokens");
    CHECK(sdpa_kv_cache_reset(c, 7) == SDPA_ERR_PARAM, "reset 7");
    CHECK(sdpa_kv_cache_read(c, 1, 1, &k, NULL) == SDPA_ERR_PARAM, "read 3 tokens from 1 of 3");
    CHECK(sdpa_kv_cache_len(c, 1) == 3, "the failures changed the length");
    case_end();

    case_begin("attention: bad arguments write nothing");
    memset(&p, 0, sizeof p);
    for (i = 0; i < 32; i++) ov[i] = o2[i] = NAN;
    p.causal = SDPA_CAUSAL_TOP_LEFT;
    CHECK(sdpa_kv_cache_attention(c, &seq, &q, &o, &p) == SDPA_ERR_PARAM, "TOP_LEFT");
    p.causal = SDPA_CAUSAL_NONE;
    p.mask = &q;
    CHECK(sdpa_kv_cache_attention(c, &seq, &q, &o, &p) == SDPA_ERR_PARAM, "mask");
    p.mask = NULL;
    q.shape[1] = 3;
    CHECK(sdpa_kv_cache_attention(c, &seq, &q, &o, &p) == SDPA_ERR_HEADS, "3 q heads over 2 kv heads");
    q.shape[1] = 4;
    o.shape[3] = 7;
    CHECK(sdpa_kv_cache_attention(c, &seq, &q, &o, &p) == SDPA_ERR_SHAPE, "out head_dim 7");
    o.shape[3] = 8;
    seq = 2;
    CHECK(sdpa_kv_cache_attention(c, &seq, &q, &o, &p) == SDPA_ERR_PARAM, "seqs[0] = 2");
    seq = 1;
    p.precision = SDPA_PRECISION_INT8_QK;
    CHECK(sdpa_kv_cache_attention(c, &seq, &q, &o, &p) == SDPA_ERR_PARAM, "an int8 precision mode on an F16 cache");
    p.precision = 99;
    CHECK(sdpa_kv_cache_attention(c, &seq, &q, &o, &p) == SDPA_ERR_PARAM, "precision 99");
    p.precision = 0;
    o.data = qv;
    CHECK(sdpa_kv_cache_attention(c, &seq, &q, &o, &p) == SDPA_ERR_ALIAS, "out is q");
    o.data = ov;
    CHECK(memcmp(ov, o2, sizeof ov) == 0, "out was written by a failing call");
    CHECK(sdpa_kv_cache_attention(c, &seq, &q, &o, &p) == SDPA_OK, "good call");
    for (i = 0; i < 32; i++) CHECK(isfinite(ov[i]), "out[%lld] = %g", LL(i), ov[i]);
    memcpy(o2, ov, sizeof ov);
    p.precision = SDPA_PRECISION_BF16_PV; /* accepted: the cache's P.V has no bf16 products */
    CHECK(sdpa_kv_cache_attention(c, &seq, &q, &o, &p) == SDPA_OK, "SDPA_PRECISION_BF16_PV refused");
    CHECK(memcmp(ov, o2, sizeof ov) == 0, "SDPA_PRECISION_BF16_PV changed the output");
    case_end();
    sdpa_kv_cache_destroy(c);
    group_end();
}

/* Allocation failures injected through the allocator hook: creating a
 * cache, attention over it (SDPA_ERR_NOMEM must leave out and lse as they
 * were, rows past seqlens_q included), and sdpa_attention's int8 mode: the
 * error, and nothing left allocated. */
static void test_kv_nomem(void)
{
    int k;
    if (!group_begin("allocation failures (kv, int8)")) return;
    for (k = 0; k < 2; k++) {
        kv_alloc_state as = {0, 0, k};
        sdpa_allocator al = {kv_alloc_fn, kv_free_fn, NULL};
        sdpa_kv_cache_config cfg;
        sdpa_kv_cache *c = (sdpa_kv_cache *)&cfg; /* must come back NULL */
        int rc;
        al.user = &as;
        memset(&cfg, 0, sizeof cfg);
        cfg.num_seqs = 3, cfg.kv_heads = 2, cfg.head_dim = 8, cfg.dtype = k_kv_dts[k * 3], cfg.allocator = &al;
        case_begin("create: allocation %d fails", k + 1);
        rc = sdpa_kv_cache_create(&cfg, &c);
        CHECK(rc == SDPA_ERR_NOMEM && c == NULL, "rc %d, cache %p", rc, (void *)c);
        CHECK(as.live == 0, "%lld bytes left allocated", LL(as.live));
        case_end();
    }
    for (k = 0; k < 4; k++) {
        kv_alloc_state as = {0, 0, -1}, sa = {0, 0, 0};
        sdpa_allocator al = {kv_alloc_fn, kv_free_fn, NULL}, sal = {kv_alloc_fn, kv_free_fn, NULL};
        kv_model m;
        sdpa_kv_cache *c;
        int64_t H = 2, G = 2, D = 16, n = 3, B = 2, i, sq[2] = {1, 3}, total = B * H * G * n * D;
        float qv[2 * 4 * 3 * 16], ov[2 * 4 * 3 * 16], lse[2 * 4 * 3];
        sdpa_tensor q = {qv, SDPA_F32, {2, 4, 3, 16}, {0}}, o = {ov, SDPA_F32, {2, 4, 3, 16}, {0}};
        sdpa_params p;
        int rc, same = 1;
        al.user = &as, sal.user = &sa;
        case_begin("%s: attention with seqlens_q, scratch allocation fails: SDPA_ERR_NOMEM, out and lse untouched",
                   dt_name(k_kv_dts[k]));
        c = kv_new(&m, 2, H, D, D, k_kv_dts[k], 8, 0, &al);
        if (!c) { case_end(); continue; }
        kv_append(c, &m, 0, 40, 1.0, 0);
        kv_append(c, &m, 1, 700, 1.0, 0); /* long enough to be split into chunks */
        for (i = 0; i < total; i++) qv[i] = (float)rnd_range(-1, 1), ov[i] = NAN;
        for (i = 0; i < B * H * G * n; i++) lse[i] = NAN;
        memset(&p, 0, sizeof p);
        p.seqlens_q = sq, p.lse = lse, p.allocator = &sal, p.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
        p.num_threads = 1 + k % 2;
        rc = sdpa_kv_cache_attention(c, NULL, &q, &o, &p);
        CHECK(rc == SDPA_ERR_NOMEM, "rc %d (%s)", rc, sdpa_strerror(rc));
        for (i = 0; i < total; i++) same &= ov[i] != ov[i];
        for (i = 0; i < B * H * G * n; i++) same &= lse[i] != lse[i];
        CHECK(same, "out or lse written by a call that failed with SDPA_ERR_NOMEM");
        CHECK(sa.live == 0, "scratch: %lld bytes left allocated", LL(sa.live));
        sa.fail_after = -1;
        rc = sdpa_kv_cache_attention(c, NULL, &q, &o, &p);
        CHECK(rc == SDPA_OK, "the same call with memory: rc %d", rc);
        CHECK(ov[(0 * 4 * 3 + 1) * 16] == 0.0f && lse[0 * 4 * 3 + 1] == -INFINITY, "row past seqlens_q: %g, lse %g",
              ov[16], lse[1]);
        CHECK(sa.live == 0 && sa.calls == 1, "scratch: %lld bytes left, %lld allocations", LL(sa.live), LL(sa.calls));
        sdpa_kv_cache_destroy(c);
        CHECK(as.live == 0, "cache: %lld bytes leaked", LL(as.live));
        km_free(&m);
        case_end();
    }
    for (k = 0; k < 2; k++) { /* int8 mode: its pre-pass shares the call's one scratch block */
        float qv[2 * 70 * 24], kb[70 * 24], vb[70 * 24], ov[2 * 70 * 24];
        sdpa_tensor q = {qv, SDPA_F32, {1, 2, 70, 24}, {0}}, kt = {kb, SDPA_F32, {1, 1, 70, 24}, {0}};
        sdpa_tensor vt = {vb, SDPA_F32, {1, 1, 70, 24}, {0}}, o = {ov, SDPA_F32, {1, 2, 70, 24}, {0}};
        cnt_alloc a;
        sdpa_allocator al;
        sdpa_params p;
        int64_t i, n, nalloc;
        int rc, same = 1;
        for (i = 0; i < 70 * 24; i++) kb[i] = (float)rnd_range(-1, 1), vb[i] = (float)rnd_range(-1, 1);
        for (i = 0; i < 2 * 70 * 24; i++) qv[i] = (float)rnd_range(-1, 1);
        memset(&p, 0, sizeof p);
        p.precision = k ? SDPA_PRECISION_INT8_QK_NOSMOOTH : SDPA_PRECISION_INT8_QK, p.causal = SDPA_CAUSAL_TOP_LEFT;
        p.num_threads = 2, p.tile_k = 16;
        ca_init(&a, &al, 0);
        p.allocator = &al;
        case_begin("int8 mode (%s): allocation n of N fails: SDPA_ERR_NOMEM, out untouched, nothing leaked",
                   k ? "no smoothing" : "smoothed K");
        CHECK(sdpa_attention(&q, &kt, &vt, &o, &p) == SDPA_OK, "int8 call with memory");
        ca_check_balance(&a);
        nalloc = a.n_alloc;
        CHECK(nalloc >= 1, "no allocation through the hook");
        pthread_mutex_destroy(&a.mu);
        for (n = 1; n <= nalloc; n++) {
            ca_init(&a, &al, n);
            for (i = 0; i < 2 * 70 * 24; i++) ov[i] = NAN;
            rc = sdpa_attention(&q, &kt, &vt, &o, &p);
            CHECK(rc == SDPA_ERR_NOMEM, "allocation %lld of %lld fails: rc %d", LL(n), LL(nalloc), rc);
            ca_check_balance(&a);
            for (i = 0; i < 2 * 70 * 24; i++) same &= ov[i] != ov[i];
            pthread_mutex_destroy(&a.mu);
        }
        CHECK(same, "out written by a call that failed with SDPA_ERR_NOMEM");
        case_end();
    }
    group_end();
}

/* ---- many threads: each on its own cache, and all reading a shared one ---- */

typedef struct {
    uint64_t rng;
    int id, fail;
    char why[160];
    const sdpa_kv_cache *shared; /* read-only phase */
    const float *want;           /* serial results over the shared cache */
    const float *q;
    int64_t want_n;
} kvt_arg;

static uint64_t kvt_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static float kvt_val(uint64_t *s) { return (float)((double)(kvt_next(s) >> 11) * (2.0 / 9007199254740992.0) - 1.0); }

#define KVT_FAIL(a, ...) do { if (!(a)->fail) snprintf((a)->why, sizeof (a)->why, __VA_ARGS__); (a)->fail = 1; } while (0)

enum { KVT_H = 2, KVT_D = 32, KVT_G = 2, KVT_B = 3 };

/* decode attention of 3 sequences over cache c: q [3, 4, 1, 32] -> out */
static int kvt_attend(const sdpa_kv_cache *c, const float *q, float *out, int threads)
{
    sdpa_tensor qt = {(void *)(uintptr_t)q, SDPA_F32, {KVT_B, KVT_H * KVT_G, 1, KVT_D}, {0}};
    sdpa_tensor ot = {out, SDPA_F32, {KVT_B, KVT_H * KVT_G, 1, KVT_D}, {0}};
    sdpa_params p;
    memset(&p, 0, sizeof p);
    p.causal = SDPA_CAUSAL_BOTTOM_RIGHT, p.num_threads = threads;
    return sdpa_kv_cache_attention(c, NULL, &qt, &ot, &p);
}

/* Decode tasks take several kv heads at once when the thread count leaves
 * few tasks per worker (sdpa__kv_hpt; on AMD CPUs, forced on here): which
 * heads share a task must not change a bit. One thread (the most heads per
 * task), a serial hook claiming 256 workers (one head per task) and 3
 * threads, against each other. */
static void test_kv_grouped(void)
{
    static const int64_t lens[] = {1, 2, 100, 513, 700, 1500, 3000};
    static const int64_t pss[] = {1, 7, 16, 64};
    static const int64_t gs[] = {1, 2, 3, 4, 8, 16, 40};
    int cases = g_quick ? 16 : 48, ci, grouped = 0;
    if (!group_begin("kv cache heads per task")) return;
    sdpa__kv_group_force = 1;
    for (ci = 0; ci < cases; ci++) {
        kv_model m;
        sdpa_kv_cache *c;
        int64_t H = rnd_int(1, 12), G = rnd_of(gs, 7), D = rnd_of((const int64_t[]){8, 33, 64, 128}, 4), ps = rnd_of(pss, 4);
        int64_t nseq = rnd_int(1, 3), B = rnd_int(1, 3), n = rnd_of((const int64_t[]){1, 1, 2, 3}, 4), seqs[3], s, i, nq, run;
        sdpa_dtype dt = k_kv_dts[ci % 4];
        float *q, *out[3], *lse[3], slopes[12 * 40];
        pf_state st;
        sdpa_params p;
        int rc[3];
        case_begin("%s page %lld H %lld G %lld D %lld n %lld seqs %lld", dt_name(dt), LL(ps), LL(H), LL(G), LL(D), LL(n), LL(nseq));
        c = kv_new(&m, nseq, H, D, D, dt, ps, 0, NULL);
        if (!c) { case_end(); continue; }
        for (s = 0; s < nseq; s++) CHECK(kv_append(c, &m, s, rnd_of(lens, 7), 1.0, 0) == SDPA_OK, "append");
        for (s = 0; s < B; s++) seqs[s] = rnd_int(0, nseq - 1);
        nq = B * H * G * n;
        q = (float *)xcalloc((size_t)(nq * D), sizeof(float));
        for (i = 0; i < nq * D; i++) q[i] = (float)rnd_range(-1, 1);
        memset(&p, 0, sizeof p);
        if (rnd_int(0, 1)) p.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
        if (rnd_int(0, 3) == 0) { p.window = 1; p.window_left = rnd_int(-1, 600); p.window_right = rnd_int(-1, 3); }
        if (rnd_int(0, 3) == 0) p.softcap = (float)rnd_range(0.5, 5.0);
        if (rnd_int(0, 3) == 0) {
            for (i = 0; i < H * G; i++) slopes[i] = (float)rnd_range(0.0, 0.1);
            p.alibi_slopes = slopes;
        }
        if (dt == SDPA_I8 && rnd_int(0, 1)) p.precision = SDPA_PRECISION_INT8_QK; /* the byte queries of grouped heads too */
        for (s = 0; s < B; s++) { /* does one thread group heads here? (the library's own rule) */
            int64_t len = sdpa_kv_cache_len(c, seqs[s]), ch, nch = sdpa__kv_chunks(G * n, len, &ch), tasks = 0, b2;
            for (b2 = 0; b2 < B; b2++) tasks += sdpa__kv_chunks(G * n, sdpa_kv_cache_len(c, seqs[b2]), &ch) * H;
            (void)nch;
            if (sdpa__kv_heads_per_task(H, G * n, SDPA__MAX(1, tasks / SDPA__KV_TASKS)) > 1) { grouped++; break; }
        }
        for (run = 0; run < 3; run++) {
            sdpa_tensor qt = {q, SDPA_F32, {B, H * G, n, D}, {0}}, ot;
            out[run] = (float *)xcalloc((size_t)(nq * D), sizeof(float));
            lse[run] = (float *)xcalloc((size_t)nq, sizeof(float));
            for (i = 0; i < nq * D; i++) out[run][i] = NAN;
            ot = qt, ot.data = out[run];
            p.lse = lse[run];
            memset(&st, 0, sizeof st);
            p.parallel_for = run == 1 ? test_parallel_for : NULL, p.parallel_user = &st;
            p.num_threads = run == 0 ? 1 : run == 1 ? 256 : 3;
            rc[run] = sdpa_kv_cache_attention(c, seqs, &qt, &ot, &p);
            CHECK(rc[run] == SDPA_OK, "attention (threads %d): %s", p.num_threads, sdpa_strerror(rc[run]));
        }
        for (run = 1; run < 3 && rc[0] == SDPA_OK && rc[run] == SDPA_OK; run++) {
            int bad = 0;
            for (i = 0; i < nq * D && !bad; i++)
                if (f32_bits(out[0][i]) != f32_bits(out[run][i]) || out[0][i] != out[0][i]) {
                    case_fail("out[%lld] %.9g with one thread, %.9g with %s", LL(i), out[0][i], out[run][i], run == 1 ? "256" : "3");
                    bad = 1;
                }
            for (i = 0; i < nq && !bad; i++)
                if (f32_bits(lse[0][i]) != f32_bits(lse[run][i])) {
                    case_fail("lse[%lld] %.9g with one thread, %.9g with %s", LL(i), lse[0][i], lse[run][i], run == 1 ? "256" : "3");
                    bad = 1;
                }
        }
        for (run = 0; run < 3; run++) free(out[run]), free(lse[run]);
        free(q);
        sdpa_kv_cache_destroy(c);
        km_free(&m);
        case_end();
    }
    sdpa__kv_group_force = 0;
    case_begin("heads were grouped in %d of %d cases", grouped, cases);
    CHECK(grouped >= cases / 8, "only %d cases grouped heads: the test does not reach the grouped tasks", grouped);
    case_end();
    group_end();
}

/* Own cache: a random workload of appends, rollbacks, evictions and forks,
 * its contents checked against the values appended (F32 storage: exact) and
 * attention checked bitwise between 1 and 3 worker threads. */
static void *kvt_own(void *arg)
{
    kvt_arg *a = (kvt_arg *)arg;
    kv_alloc_state as = {0, 0, -1};
    sdpa_allocator al = {kv_alloc_fn, kv_free_fn, NULL};
    sdpa_kv_cache_config cfg;
    sdpa_kv_cache *c = NULL;
    enum { CAP = 400 };
    static const int64_t nk = KVT_H * KVT_D;
    float *mk[KVT_B], q[KVT_B * KVT_H * KVT_G * KVT_D], o1[KVT_B * KVT_H * KVT_G * KVT_D], o3[KVT_B * KVT_H * KVT_G * KVT_D];
    float tok[16 * KVT_H * KVT_D], back[CAP * KVT_H * KVT_D];
    int64_t len[KVT_B] = {0, 0, 0}, s, i, step;
    al.user = &as;
    memset(&cfg, 0, sizeof cfg);
    cfg.num_seqs = KVT_B, cfg.kv_heads = KVT_H, cfg.head_dim = KVT_D, cfg.dtype = SDPA_F32, cfg.page_size = 1 + a->id * 5;
    cfg.allocator = &al;
    if (sdpa_kv_cache_create(&cfg, &c) != SDPA_OK) { KVT_FAIL(a, "create"); return NULL; }
    for (s = 0; s < KVT_B; s++) mk[s] = (float *)malloc(CAP * nk * sizeof(float)); /* token-major [t][h][d] */
    for (step = 0; step < 60 && !a->fail; step++) {
        int op = (int)(kvt_next(&a->rng) % 6);
        s = (int64_t)(kvt_next(&a->rng) % KVT_B);
        if (op <= 2 && len[s] + 16 <= CAP) { /* append n tokens given token-major through strides */
            int64_t n = 1 + (int64_t)(kvt_next(&a->rng) % 16);
            sdpa_tensor kt = {tok, SDPA_F32, {1, KVT_H, n, KVT_D}, {n * nk, KVT_D, nk, 1}};
            for (i = 0; i < n * nk; i++) tok[i] = kvt_val(&a->rng);
            if (sdpa_kv_cache_append(c, s, &kt, &kt) != SDPA_OK) KVT_FAIL(a, "append");
            memcpy(mk[s] + len[s] * nk, tok, (size_t)(n * nk) * sizeof(float));
            len[s] += n;
        } else if (op == 3) {
            int64_t to = (int64_t)(kvt_next(&a->rng) % (uint64_t)(len[s] + 1));
            if (sdpa_kv_cache_truncate(c, s, to) != SDPA_OK) KVT_FAIL(a, "truncate");
            len[s] = to;
        } else if (op == 4 && len[s] > 12) {
            if (sdpa_kv_cache_evict(c, s, 4, 8) != SDPA_OK) KVT_FAIL(a, "evict");
            memmove(mk[s] + 4 * nk, mk[s] + (len[s] - 8) * nk, (size_t)(8 * nk) * sizeof(float));
            len[s] = 12;
        } else if (op == 5) {
            int64_t d = (s + 1) % KVT_B, n = len[s] / 2;
            if (sdpa_kv_cache_fork(c, d, s, n) != SDPA_OK) KVT_FAIL(a, "fork");
            memcpy(mk[d], mk[s], (size_t)(n * nk) * sizeof(float));
            len[d] = n;
        }
        if (sdpa_kv_cache_bytes(c) != as.live) KVT_FAIL(a, "step %lld: bytes %lld, allocator %lld", LL(step), LL(sdpa_kv_cache_bytes(c)), LL(as.live));
        if (step % 10 == 9) {
            for (i = 0; i < (int64_t)(sizeof q / sizeof q[0]); i++) q[i] = kvt_val(&a->rng);
            if (kvt_attend(c, q, o1, 1) != SDPA_OK || kvt_attend(c, q, o3, 3) != SDPA_OK) KVT_FAIL(a, "attention");
            else if (memcmp(o1, o3, sizeof o1) != 0) KVT_FAIL(a, "step %lld: attention differs between 1 and 3 threads", LL(step));
            for (s = 0; s < KVT_B; s++) {
                sdpa_tensor kt = {back, SDPA_F32, {1, KVT_H, len[s], KVT_D}, {len[s] * nk, KVT_D, nk, 1}};
                if (sdpa_kv_cache_len(c, s) != len[s]) KVT_FAIL(a, "seq %lld: len %lld, want %lld", LL(s), LL(sdpa_kv_cache_len(c, s)), LL(len[s]));
                else if (sdpa_kv_cache_read(c, s, 0, &kt, NULL) != SDPA_OK) KVT_FAIL(a, "read");
                else if (len[s] && memcmp(back, mk[s], (size_t)(len[s] * nk) * sizeof(float)) != 0) KVT_FAIL(a, "seq %lld: contents differ", LL(s));
            }
        }
    }
    sdpa_kv_cache_destroy(c);
    if (as.live != 0) KVT_FAIL(a, "%lld bytes leaked", LL(as.live));
    for (s = 0; s < KVT_B; s++) free(mk[s]);
    return NULL;
}

/* Shared cache, read-only: attention (1 to 3 workers), read, len, bytes. */
static void *kvt_shared(void *arg)
{
    kvt_arg *a = (kvt_arg *)arg;
    float out[KVT_B * KVT_H * KVT_G * KVT_D], kb[8 * KVT_H * KVT_D];
    int r;
    for (r = 0; r < 4 && !a->fail; r++) {
        sdpa_tensor kt = {kb, SDPA_F32, {1, KVT_H, 8, KVT_D}, {0}};
        if (kvt_attend(a->shared, a->q, out, 1 + (a->id + r) % 3) != SDPA_OK) KVT_FAIL(a, "attention");
        else if (memcmp(out, a->want, sizeof out) != 0) KVT_FAIL(a, "round %d: attention differs from the serial call", r);
        if (sdpa_kv_cache_read(a->shared, r % 2, 3, &kt, NULL) != SDPA_OK) KVT_FAIL(a, "read");
        if (sdpa_kv_cache_len(a->shared, 0) != a->want_n || sdpa_kv_cache_bytes(a->shared) <= 0) KVT_FAIL(a, "len or bytes");
    }
    return NULL;
}

static void test_kv_threads(void)
{
    enum { NT = 4 };
    pthread_t th[NT];
    kvt_arg args[NT];
    int i, started[NT], dti;
    if (!group_begin("kv cache threads")) return;
    for (i = 0; i < NT; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i].id = i, args[i].rng = rnd_u64();
    }
    case_begin("%d threads, each a random workload on its own cache (checked contents, bytes, 1 vs 3 workers)", NT);
    for (i = 0; i < NT; i++) started[i] = pthread_create(&th[i], NULL, kvt_own, &args[i]) == 0;
    for (i = 0; i < NT; i++) {
        if (started[i]) pthread_join(th[i], NULL);
        CHECK(started[i], "thread %d did not start", i);
        CHECK(!args[i].fail, "thread %d: %s", i, args[i].why);
    }
    case_end();
    for (dti = 0; dti < 2; dti++) {
        kv_model m;
        sdpa_kv_cache *c = kv_new(&m, KVT_B, KVT_H, KVT_D, KVT_D, dti ? SDPA_I8 : SDPA_F16, 16, 0, NULL);
        float q[KVT_B * KVT_H * KVT_G * KVT_D], want[KVT_B * KVT_H * KVT_G * KVT_D];
        case_begin("%d threads reading one %s cache at once (decode split into chunks): bitwise the serial result", NT,
                   dti ? "I8" : "F16");
        if (!c) { case_end(); continue; }
        kv_append(c, &m, 0, 700, 1.0, 0);
        kv_append(c, &m, 1, 90, 1.0, 0);
        kv_append(c, &m, 2, 1, 1.0, 0);
        for (i = 0; i < (int)(sizeof q / sizeof q[0]); i++) q[i] = (float)rnd_range(-1, 1);
        CHECK(kvt_attend(c, q, want, 1) == SDPA_OK, "serial attention");
        for (i = 0; i < NT; i++) {
            memset(&args[i], 0, sizeof args[i]);
            args[i].id = i, args[i].shared = c, args[i].want = want, args[i].q = q, args[i].want_n = 700;
        }
        for (i = 0; i < NT; i++) started[i] = pthread_create(&th[i], NULL, kvt_shared, &args[i]) == 0;
        for (i = 0; i < NT; i++) {
            if (started[i]) pthread_join(th[i], NULL);
            CHECK(started[i], "thread %d did not start", i);
            CHECK(!args[i].fail, "thread %d: %s", i, args[i].why);
        }
        sdpa_kv_cache_destroy(c);
        km_free(&m);
        case_end();
    }
    group_end();
}

/* The integer P V kernels (I8 values) against float64: random rows with
 * zero weights (some over keys whose scale is NaN: they must stay hidden),
 * rows of zeros, of tiny weights and with a NaN weight (the float form),
 * M 1..9 (the 4-row blocks and single rows), N 1..64, Dv 1..130 (every
 * 16-column block and tail). O starts random: the kernel adds to it. Bound:
 * the weights' int16 rounding, N * 127 * max w / 65534, plus float
 * rounding. */
static void test_vacc8_kernel(const char *name, sdpa__vacc8_fn fn)
{
    int it;
    for (it = 0; it < (g_quick ? 40 : 150); it++) {
        int64_t M = rnd_int(1, 9), N = rnd_int(1, SDPA__KV_SPAN), Dv = it < 20 ? rnd_int(1, 20) : rnd_int(1, 130), r, j, d;
        int64_t ldp = SDPA__KV_SPAN, ldo = Dv + rnd_int(0, 5);
        float *P = (float *)xcalloc((size_t)(M * ldp), sizeof(float)), *vsc = (float *)xcalloc((size_t)N, sizeof(float));
        float *Pc = (float *)xcalloc((size_t)(M * ldp), sizeof(float)); /* the kernel may overwrite P (scratch) */
        float *O = (float *)xcalloc((size_t)(M * ldo), sizeof(float)), *O0 = (float *)xcalloc((size_t)(M * ldo), sizeof(float));
        float *tmp = (float *)xcalloc((size_t)SDPA__ROUND_UP(ldo, 16) + 16, sizeof(float));
        signed char *V = (signed char *)xcalloc((size_t)(N * Dv), 1);
        char *pf = (char *)xcalloc(4096, 1);
        int kind[9];
        case_begin("%s: M %lld N %lld Dv %lld", name, LL(M), LL(N), LL(Dv));
        for (j = 0; j < N; j++) vsc[j] = (float)rnd_range(1e-4, 0.05);
        for (j = 0; j < N * Dv; j++) V[j] = (signed char)rnd_int(-127, 127);
        for (r = 0; r < M; r++) {
            kind[r] = (int)rnd_int(0, 9); /* 0: all zero, 1: tiny, 2: a NaN weight, else random with zeros */
            for (j = 0; j < N; j++) {
                float w = rnd_int(0, 3) == 0 ? 0.0f : (float)rnd_unit();
                P[r * ldp + j] = kind[r] == 0 ? 0.0f : kind[r] == 1 ? w * 1e-36f : w;
            }
            if (kind[r] == 2) P[r * ldp + rnd_int(0, N - 1)] = NAN;
            for (d = 0; d < ldo; d++) O[r * ldo + d] = O0[r * ldo + d] = (float)rnd_range(-1, 1);
        }
        for (j = 0; j < N; j++) /* a hidden key (weight 0 in every row) with a NaN scale */
            if (rnd_int(0, 7) == 0) {
                int zero = 1;
                for (r = 0; r < M; r++) zero &= P[r * ldp + j] == 0.0f;
                if (zero) vsc[j] = NAN;
            }
        memcpy(Pc, P, (size_t)(M * ldp) * sizeof(float));
        fn(M, N, Dv, Pc, ldp, vsc, V, O, ldo, tmp, pf, rnd_int(0, 1) ? 4096 : 0, rnd_int(0, 1));
        for (r = 0; r < M; r++) {
            double amax = 0.0, sa = 0.0;
            int nan_row = 0;
            for (j = 0; j < N; j++) {
                double w = P[r * ldp + j] == 0.0f ? 0.0 : (double)P[r * ldp + j] * vsc[j];
                if (w != w) nan_row = 1;
                else amax = w > amax ? w : amax;
            }
            for (d = 0; d < Dv; d++) {
                double ref = O0[r * ldo + d], got = O[r * ldo + d], tol;
                sa = fabs(ref);
                for (j = 0; j < N; j++) {
                    double w = P[r * ldp + j] == 0.0f ? 0.0 : (double)P[r * ldp + j] * vsc[j];
                    ref += w * V[j * Dv + d];
                    sa += fabs(w * V[j * Dv + d]);
                }
                tol = (double)N * 127.0 * amax / 65534.0 * 1.01 + 2e-6 * sa + 1e-30;
                if (nan_row) CHECK(got != got, "row %lld col %lld: a NaN weight gave %g", LL(r), LL(d), got);
                else CHECK(fabs(got - ref) <= tol, "row %lld (kind %d) col %lld: %.9g, want %.9g (tol %.3g)", LL(r), kind[r],
                           LL(d), got, ref, tol);
            }
            for (d = Dv; d < ldo; d++) CHECK(O[r * ldo + d] == O0[r * ldo + d], "row %lld col %lld past Dv written", LL(r), LL(d));
        }
        free(P), free(Pc), free(vsc), free(O), free(O0), free(tmp), free(V), free(pf);
        case_end();
    }
}

/* S (M x N in a (M + 1) x lds block poisoned with NaN) from an integer
 * Q.K^T kernel on the int16 rows Q: every entry against float64 and bit for
 * bit against sdpa__kdot16_scalar, nothing written around the block; *bad
 * counts failures (only the first is reported). */
static void kdot16_check_block(int64_t M, int64_t N, int64_t D, const int16_t *Q, int64_t ldq, const float *qsc,
                               const signed char *K, const float *ksc, const float *S, int64_t lds, int64_t *bad)
{
    float *S0 = (float *)xcalloc((size_t)((M + 1) * lds), sizeof(float));
    int64_t r, j, d;
    sdpa__kdot16_scalar(M, N, D, Q, ldq, qsc, K, ksc, S0, lds);
    for (r = 0; r < M + 1; r++)
        for (j = 0; j < lds; j++) {
            float got = S[r * lds + j];
            if (r < M && j < N) {
                int64_t acc = 0;
                double ref;
                for (d = 0; d < D; d++) acc += (int64_t)Q[r * ldq + d] * K[j * D + d];
                ref = (double)acc * qsc[r] * ksc[j];
                if ((!(fabs(got - ref) <= 4e-7 * fabs(ref) + 1e-30) || memcmp(&got, &S0[r * lds + j], 4) != 0) && !(*bad)++) {
                    /* the case's first wrong entry */
                    CHECK(fabs(got - ref) <= 4e-7 * fabs(ref) + 1e-30, "row %lld key %lld: %.9g, want %.9g", LL(r), LL(j), got, ref);
                    CHECK(memcmp(&got, &S0[r * lds + j], 4) == 0, "row %lld key %lld: %.9g, the scalar kernel %.9g", LL(r), LL(j),
                          got, S0[r * lds + j]);
                }
            } else if (got == got) {
                CHECK(0, "S[%lld][%lld] outside the M x N block written", LL(r), LL(j));
            }
        }
    free(S0);
}

/* The int16-query x int8-key Q.K^T kernels (I8 keys): every S entry
 * against float64 (the int32 sum is exact, then (float)sum * qsc * ksc:
 * three roundings) and bit for bit against the scalar kernel; M 1..9 (the
 * 4-row blocks and the single rows), N 1..64 (4-key blocks and
 * tails), D 1..160 and 128 (every 32-element step and tail), queries over
 * the whole int16 range, S poisoned with NaN around the written block. */
static void test_kdot16_kernel(const char *name, sdpa__kdot16_fn fn)
{
    int it;
    for (it = 0; it < (g_quick ? 40 : 150); it++) {
        int64_t M = rnd_int(1, 9), N = rnd_int(1, SDPA__KV_SPAN), D = it % 3 == 0 ? 128 : rnd_int(1, 160), r, j;
        int64_t ldq = D + rnd_int(0, 40), lds = N + rnd_int(0, 5), bad = 0;
        int16_t *Q = (int16_t *)xcalloc((size_t)(M * ldq), sizeof(int16_t));
        signed char *K = (signed char *)xcalloc((size_t)(N * D), 1);
        float *qsc = (float *)xcalloc((size_t)M, sizeof(float)), *ksc = (float *)xcalloc((size_t)N, sizeof(float));
        float *S = (float *)xcalloc((size_t)((M + 1) * lds), sizeof(float));
        case_begin("%s: M %lld N %lld D %lld", name, LL(M), LL(N), LL(D));
        for (j = 0; j < M * ldq; j++) Q[j] = (int16_t)rnd_int(-32767, 32767);
        for (j = 0; j < N * D; j++) K[j] = (signed char)rnd_int(-127, 127);
        for (r = 0; r < M; r++) qsc[r] = (float)rnd_range(1e-6, 1e-3);
        for (j = 0; j < N; j++) ksc[j] = (float)rnd_range(1e-3, 0.05);
        for (j = 0; j < (M + 1) * lds; j++) S[j] = NAN;
        fn(M, N, D, Q, ldq, qsc, K, ksc, S, lds);
        kdot16_check_block(M, N, D, Q, ldq, qsc, K, ksc, S, lds, &bad);
        free(Q), free(K), free(qsc), free(ksc), free(S);
        case_end();
    }
}

/* The float cache kernels (Q.K^T and P.V over F32, F16, BF16 and I8 rows,
 * the I8 ones with the scales folded in) on their own: against float64 on
 * the stored values, M 1..9 rows (4-row groups and single rows), N 1..20
 * keys, D 1..160 (every vector tail), key scales or none; S and O poisoned
 * with NaN around the block (a row below, columns past it), O accumulated
 * onto random values. */
static void test_kdot_vacc_kernels(const char *name, sdpa__kdot_fn kdot, sdpa__vacc_fn vacc)
{
    int it;
    for (it = 0; it < (g_quick ? 40 : 160); it++) {
        sdpa_dtype t = k_kv_dts[it % 4];
        int64_t M = rnd_int(1, 9), N = rnd_int(1, 20), D = it % 5 == 0 ? 128 : rnd_int(1, 160), es = sdpa__esize(t), r, j, d;
        int64_t ldq = D + rnd_int(0, 9), lds = N + rnd_int(0, 5), ldp = N + rnd_int(0, 5), ldo = D + rnd_int(0, 17), bad = 0;
        float *Q = (float *)xcalloc((size_t)(M * ldq), sizeof(float)), *ksc = rnd_int(0, 2) ? (float *)xcalloc((size_t)N, 4) : NULL;
        char *K = (char *)xcalloc((size_t)(N * D * es), 1); /* exact: ASan and valgrind see any read past it */
        float *S = (float *)xcalloc((size_t)((M + 1) * lds), sizeof(float)), *P = (float *)xcalloc((size_t)(M * ldp), sizeof(float));
        float *O = (float *)xcalloc((size_t)((M + 1) * ldo), sizeof(float)), *O0 = (float *)xcalloc((size_t)((M + 1) * ldo), sizeof(float));
        float *tmp = (float *)xcalloc(4096, sizeof(float));
        case_begin("%s Q.K^T and P.V over %s rows: M %lld N %lld D %lld", name, dt_name(t), LL(M), LL(N), LL(D));
        for (j = 0; j < M * ldq; j++) Q[j] = (float)rnd_range(-1, 1);
        for (j = 0; j < N * D; j++) /* I8: a byte in [-127, 127] */
            put_elem((unsigned char *)K + j * es, t, t == SDPA_I8 ? (double)(rnd_int(-127, 127) & 0xff) : rnd_range(-2, 2));
        for (j = 0; ksc && j < N; j++) ksc[j] = (float)rnd_range(0.001, 0.05);
        for (j = 0; j < M * ldp; j++) P[j] = rnd_int(0, 5) ? (float)rnd_range(0, 1) : 0.0f;
        for (j = 0; j < (M + 1) * lds; j++) S[j] = NAN;
        for (r = 0; r < M + 1; r++)
            for (d = 0; d < ldo; d++) O[r * ldo + d] = O0[r * ldo + d] = r < M && d < D ? (float)rnd_range(-1, 1) : NAN;
        kdot(M, N, D, Q, ldq, K, t, ksc, S, lds, tmp);
        vacc(M, N, D, P, ldp, K, t, O, ldo, tmp);
        for (r = 0; r < M + 1; r++) {
            for (j = 0; j < lds; j++) {
                float got = S[r * lds + j];
                if (r < M && j < N) {
                    double ref = 0.0, mag = 0.0;
                    for (d = 0; d < D; d++) {
                        double x = (double)Q[r * ldq + d] * sdpa__kv_get(K + j * D * es, t, d);
                        ref += x, mag += fabs(x);
                    }
                    ref *= ksc ? ksc[j] : 1.0, mag *= ksc ? ksc[j] : 1.0;
                    if (!(fabs(got - ref) <= 2e-6 * mag + 1e-30) && !bad++)
                        CHECK(0, "S row %lld key %lld: %.9g, want %.9g", LL(r), LL(j), got, ref);
                } else if (got == got && !bad++) {
                    CHECK(0, "S[%lld][%lld] outside the M x N block written", LL(r), LL(j));
                }
            }
            for (d = 0; d < ldo; d++) {
                float got = O[r * ldo + d];
                if (r < M && d < D) {
                    double ref = O0[r * ldo + d], mag = fabs(ref);
                    for (j = 0; j < N; j++) {
                        double x = (double)P[r * ldp + j] * sdpa__kv_get(K + j * D * es, t, d);
                        ref += x, mag += fabs(x);
                    }
                    if (!(fabs(got - ref) <= 2e-6 * mag + 1e-30) && !bad++)
                        CHECK(0, "O row %lld column %lld: %.9g, want %.9g", LL(r), LL(d), got, ref);
                } else if (got == got && !bad++) {
                    CHECK(0, "O[%lld][%lld] outside the M x D block written", LL(r), LL(d));
                }
            }
        }
        free(Q), free(ksc), free(K), free(S), free(P), free(O), free(O0), free(tmp);
        case_end();
    }
}

#ifdef SDPA__HAVE_AVX512
/* int8 mode's Q.K^T on AVX512-VNNI: int8-valued query rows (the full range,
 * -127 and 127 included) packed by sdpa__kv_pack8, against float64 and bit
 * for bit against the int16 scalar kernel on the same rows; M 1..9, N 1..64,
 * D 1..200 (the 64-byte steps' tails), S poisoned around the block. */
static void test_kdot8_kernel(void)
{
    int it;
    for (it = 0; it < (g_quick ? 40 : 150); it++) {
        int64_t M = rnd_int(1, 9), N = rnd_int(1, SDPA__KV_SPAN), D = it % 3 == 0 ? 128 : rnd_int(1, 200), r, j, d;
        int64_t ldq = SDPA__ROUND_UP(D, 32) + 32 * rnd_int(0, 1), lds = N + rnd_int(0, 5), bad = 0;
        int16_t *Q = (int16_t *)xcalloc((size_t)(M * ldq), sizeof(int16_t));
        int8_t *Q8 = (int8_t *)xcalloc((size_t)(M * ldq), 1);
        int32_t *qsum = (int32_t *)xcalloc((size_t)M, sizeof(int32_t));
        signed char *K = (signed char *)xcalloc((size_t)(N * D), 1);
        float *qsc = (float *)xcalloc((size_t)M, sizeof(float)), *ksc = (float *)xcalloc((size_t)N, sizeof(float));
        float *S = (float *)xcalloc((size_t)((M + 1) * lds), sizeof(float));
        case_begin("Q.K^T int8 mode avx512-vnni: M %lld N %lld D %lld", LL(M), LL(N), LL(D));
        for (j = 0; j < M * ldq; j++) Q[j] = (int16_t)(rnd_int(0, 9) == 0 ? 127 * (rnd_int(0, 1) ? 1 : -1) : rnd_int(-127, 127));
        for (j = 0; j < N * D; j++) K[j] = (signed char)rnd_int(-127, 127);
        for (r = 0; r < M; r++) qsc[r] = (float)rnd_range(1e-6, 1e-3);
        for (j = 0; j < N; j++) ksc[j] = (float)rnd_range(1e-3, 0.05);
        for (j = 0; j < (M + 1) * lds; j++) S[j] = NAN;
        sdpa__kv_pack8(Q8, qsum, Q, ldq, M, D);
        for (r = 0; r < M; r++) {
            int64_t sum = 0;
            for (d = 0; d < D; d++) {
                sum += Q[r * ldq + d];
                if (Q8[r * ldq + d] != Q[r * ldq + d] && !bad++) CHECK(0, "packed row %lld [%lld]: %d, want %d", LL(r), LL(d), Q8[r * ldq + d], Q[r * ldq + d]);
            }
            CHECK(qsum[r] == sum, "row %lld: sum %ld, want %lld", LL(r), (long)qsum[r], LL(sum));
        }
        sdpa__kdot8_vnni(M, N, D, Q8, ldq, qsc, qsum, K, ksc, S, lds);
        kdot16_check_block(M, N, D, Q, ldq, qsc, K, ksc, S, lds, &bad);
        free(Q), free(Q8), free(qsum), free(K), free(qsc), free(ksc), free(S);
        case_end();
    }
}
#endif

/* The per-page int16 query of keys scaled per channel: the scalar form
 * against its definition (round to nearest, one scale max / lim, lim 32767
 * or 127 for int8 mode), the AVX2 and AVX-512 forms bit for bit against the
 * scalar one; lengths through the tails, zero, tiny, NaN and Inf rows. */
static void test_kv_q16c(void)
{
    int64_t n, d, it;
    case_begin("per-page int16/int8 queries (keys per channel): scalar within half a step, avx2 and avx512 bitwise");
    for (it = 0; it < 400; it++) {
        float q[300], cs[300], qs1, qs2;
        int16_t a[300], b[300];
        int kind = (int)rnd_int(0, 5), lim = it % 2 ? 127 : 32767; /* kind 0-2 random, 3 zeros, 4 tiny, 5 a NaN or Inf */
        double amax = 0.0;
        n = rnd_int(1, 300);
        for (d = 0; d < n; d++) {
            q[d] = kind == 3 ? 0.0f : (float)rnd_range(-2, 2) * (kind == 4 ? 1e-33f : 1.0f);
            cs[d] = (float)rnd_range(0, 0.05) * (rnd_int(0, 9) == 0 ? 20.0f : 1.0f);
        }
        if (kind == 5) q[rnd_int(0, n - 1)] = rnd_int(0, 1) ? NAN : -INFINITY;
        for (d = 0; d < n; d++) { double ax = fabs((double)(q[d] * cs[d])); if (ax > amax) amax = ax; } /* no fmax: see kv_q16_bound */
        sdpa__kv_q16c_scalar(a, &qs1, q, cs, n, lim);
        if (kind == 5) {
            CHECK(qs1 != qs1, "NaN/Inf row: scale %g, want NaN", qs1);
            for (d = 0; d < n; d++) CHECK(a[d] == 0, "NaN/Inf row: element %lld is %d", LL(d), a[d]);
        } else if (amax < 1e-30) {
            CHECK(qs1 == 0.0f, "tiny row (max %g): scale %g, want 0", amax, qs1);
            for (d = 0; d < n; d++) CHECK(a[d] == 0, "tiny row: element %lld is %d", LL(d), a[d]);
        } else {
            CHECK(qs1 == (float)amax / (float)lim, "scale %.9g for max %.9g", qs1, amax);
            for (d = 0; d < n; d++) {
                double x = (double)(q[d] * cs[d]);
                CHECK(a[d] >= -lim && a[d] <= lim && fabs(a[d] * (double)qs1 - x) <= 0.5 * qs1 * (1 + 1e-4) + fabs(x) * 1e-6,
                      "lim %d n %lld [%lld]: %d * %.9g for %.9g", lim, LL(n), LL(d), a[d], qs1, x);
            }
        }
#ifdef SDPA__HAVE_AVX2
        if (sdpa__cpu() & SDPA__CPU_AVX2) {
            memset(b, 0x55, sizeof b);
            sdpa__kv_q16c_avx2(b, &qs2, q, cs, n, lim);
            CHECK(memcmp(&qs1, &qs2, 4) == 0 || (qs1 != qs1 && qs2 != qs2), "avx2 scale %.9g, scalar %.9g", qs2, qs1);
            CHECK(memcmp(a, b, (size_t)n * 2) == 0, "n %lld: avx2 int16 query differs from the scalar one", LL(n));
            for (d = n; d < 300; d++) CHECK(b[d] == 0x5555, "avx2 wrote element %lld past n %lld", LL(d), LL(n));
        }
#endif
#ifdef SDPA__HAVE_AVX512
        if (sdpa__cpu() & SDPA__CPU_AVX512) {
            memset(b, 0x55, sizeof b);
            sdpa__kv_q16c_avx512(b, &qs2, q, cs, n, lim);
            CHECK(memcmp(&qs1, &qs2, 4) == 0 || (qs1 != qs1 && qs2 != qs2), "avx512 scale %.9g, scalar %.9g", qs2, qs1);
            CHECK(memcmp(a, b, (size_t)n * 2) == 0, "n %lld: avx512 int16 query differs from the scalar one", LL(n));
            for (d = n; d < 300; d++) CHECK(b[d] == 0x5555, "avx512 wrote element %lld past n %lld", LL(d), LL(n));
        }
#endif
        (void)qs2, (void)b;
    }
    case_end();
}

static void test_kv_vacc8(void)
{
    if (!group_begin("kv cache kernels (Q.K^T, P.V, page queries)")) return;
    test_kv_q16c();
    test_kdot_vacc_kernels("scalar", sdpa__kdot_scalar, sdpa__vacc_scalar);
#ifdef SDPA__HAVE_AVX2
    if (sdpa__cpu() & SDPA__CPU_AVX2) test_kdot_vacc_kernels("avx2", sdpa__kdot_avx2, sdpa__vacc_avx2);
#endif
#ifdef SDPA__HAVE_AVX512
    if (sdpa__cpu() & SDPA__CPU_AVX512) test_kdot_vacc_kernels("avx512", sdpa__kdot_avx512, sdpa__vacc_avx512);
#endif
    test_kdot16_kernel("Q.K^T scalar", sdpa__kdot16_scalar);
#ifdef SDPA__HAVE_AVX2
    if (sdpa__cpu() & SDPA__CPU_AVX2) test_kdot16_kernel("Q.K^T avx2", sdpa__kdot16_avx2);
#endif
#ifdef SDPA__HAVE_AVX512
    if (sdpa__cpu() & SDPA__CPU_AVX512) test_kdot16_kernel("Q.K^T avx512", sdpa__kdot16_avx512);
    if ((sdpa__cpu() & SDPA__CPU_AVX512) && (sdpa__cpu() & SDPA__CPU_VNNI)) test_kdot16_kernel("Q.K^T avx512-vnni", sdpa__kdot16_vnni);
    if ((sdpa__cpu() & SDPA__CPU_AVX512) && (sdpa__cpu() & SDPA__CPU_VNNI)) test_kdot8_kernel();
#endif
    test_vacc8_kernel("scalar", sdpa__vacc8_scalar);
#ifdef SDPA__HAVE_AVX2
    if (sdpa__cpu() & SDPA__CPU_AVX2) test_vacc8_kernel("avx2", sdpa__vacc8_avx2);
#endif
#ifdef SDPA__HAVE_AVX512
    if ((sdpa__cpu() & SDPA__CPU_AVX512) && (sdpa__cpu() & SDPA__CPU_VNNI)) test_vacc8_kernel("avx512-vnni", sdpa__vacc8_vnni);
#endif
    group_end();
}

static void test_kv(void)
{
    test_kv_vacc8();
    test_kv_nomem();
    test_kv_threads();
    test_kv_errors();
    test_kv_attention();
    test_kv_vs_sdpa();
    test_kv_grouped();
    test_kv_ops();
    test_kv_pages();
    test_kv_memory();
    test_kv_nonfinite();
    test_kv_i8_accuracy();
}

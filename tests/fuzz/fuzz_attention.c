/* tests/fuzz/fuzz_attention.c - libFuzzer harness for sdpa_attention.
 *
 * The input bytes choose the shapes (bounded: batch <= 3, heads <= 6,
 * lengths <= 40, head dims <= 40), the dtypes, each tensor's layout
 * (contiguous, or permuted with padding and odd strides on size-1 dims),
 * and the options: causal both ways, window, softcap, ALiBi, F32/BOOL masks
 * with broadcasting, score_mod, lse, padded or packed variable lengths,
 * scale, tiles, threads or a parallel_for hook, the path, int8 mode with
 * float or SDPA_I8 q/k, NaN/Inf planted in q, k, v or the mask, and an
 * allocator that may fail. Four bytes seed the values.
 *
 * A valid call must return SDPA_OK and match a float64 reference written
 * from the header's SEMANTICS within the NUMERICS bounds (int8 mode: plus
 * the bound that int8 rounding of the row's q and keys allows, i8_score_err;
 * none for SDPA_I8 q and k), on every row that no NaN/Inf reaches;
 * out's padding (bytes that are no element) must stay untouched, the inputs
 * must not change, scratch must stay within sdpa_workspace_size and every
 * allocation must be freed. Otherwise the harness makes exactly one argument
 * invalid and checks the error code, the message and that nothing was
 * written. */

#include "sdpa.h"
#include "fuzz_common.h"

#define MAXL 40
#define MAXD 40

typedef struct {
    sdpa_tensor t;
    unsigned char *buf; /* exactly the bytes the tensor spans (ASan sees overreads) */
    size_t bytes;
    int64_t s[4];       /* effective strides */
} ftens;

static size_t dt_size(sdpa_dtype d) { return d == SDPA_F32 ? 4 : (d == SDPA_F16 || d == SDPA_BF16) ? 2 : 1; }

/* Lays a tensor out as the input says: layout 0 = strides 0 (contiguous),
 * 1 = explicit row-major strides, 2 = outer dims permuted, rows padded,
 * size-1 dims given a stride that means nothing. */
static void ft_make(fz_in *in, ftens *f, sdpa_dtype dt, int64_t n0, int64_t n1, int64_t n2, int64_t n3, int allow_null)
{
    int64_t n[4], ext = 1, numel, size, d;
    int lay = (int)fz_range(in, 0, 2), order[3] = {2, 1, 0};
    n[0] = n0, n[1] = n1, n[2] = n2, n[3] = n3;
    memset(f, 0, sizeof *f);
    f->t.dtype = dt;
    for (d = 0; d < 4; d++) f->t.shape[d] = n[d];
    numel = n0 * n1 * n2 * n3;
    if (lay == 2) { /* a permutation of the outer dims, innermost first */
        int a = (int)fz_range(in, 0, 5);
        static const int perms[6][3] = {{2, 1, 0}, {1, 2, 0}, {2, 0, 1}, {0, 2, 1}, {1, 0, 2}, {0, 1, 2}};
        memcpy(order, perms[a], sizeof order);
    }
    size = n3 + (lay == 2 ? fz_range(in, 0, 3) : 0);
    f->s[3] = 1;
    for (d = 0; d < 3; d++) {
        int dim = order[d];
        f->s[dim] = size;
        size = size * (n[dim] > 0 ? n[dim] : 1) + (lay == 2 ? fz_range(in, 0, 2) : 0);
    }
    if (lay == 2)
        for (d = 0; d < 3; d++)
            if (n[d] == 1 && fz_bit(in)) f->s[d] = (int64_t)fz_u16(in) * 4099; /* never used */
    if (lay != 0)
        for (d = 0; d < 4; d++) f->t.stride[d] = f->s[d];
    if (lay == 0) { /* what the library derives */
        int64_t s = 1;
        for (d = 3; d >= 0; d--) f->s[d] = s, s *= (n[d] > 0 ? n[d] : 1);
    }
    for (d = 0; d < 4; d++)
        if (n[d] == 1) f->s[d] = 0;
    if (numel > 0)
        for (d = 0; d < 4; d++) ext += (n[d] - 1) * f->s[d];
    f->bytes = numel > 0 ? (size_t)ext * dt_size(dt) : 0;
    if (f->bytes > 0 || !allow_null || fz_bit(in)) f->buf = (unsigned char *)malloc(f->bytes ? f->bytes : 1);
    if (f->buf) memset(f->buf, 0xEE, f->bytes ? f->bytes : 1);
    f->t.data = f->buf;
}

FZ_NOCOV static int64_t ft_off(const ftens *f, int64_t a, int64_t b, int64_t c, int64_t d)
{
    return a * f->s[0] + b * f->s[1] + c * f->s[2] + d * f->s[3];
}

FZ_NOCOV static void ft_put(ftens *f, int64_t off, double x)
{
    unsigned char *p = f->buf + off * (int64_t)dt_size(f->t.dtype);
    float v = (float)x;
    uint16_t h;
    switch (f->t.dtype) {
    case SDPA_F32: memcpy(p, &v, 4); break;
    case SDPA_F16: h = sdpa_f32_to_f16(v); memcpy(p, &h, 2); break;
    case SDPA_BF16: h = sdpa_f32_to_bf16(v); memcpy(p, &h, 2); break;
    default: *(int8_t *)p = (int8_t)x; break; /* I8 and BOOL: x is an integer */
    }
}

FZ_NOCOV static double ft_get(const ftens *f, int64_t off)
{
    const unsigned char *p = f->buf + off * (int64_t)dt_size(f->t.dtype);
    float v;
    uint16_t h;
    switch (f->t.dtype) {
    case SDPA_F32: memcpy(&v, p, 4); return v;
    case SDPA_F16: memcpy(&h, p, 2); return fz_f16_value(h);
    case SDPA_BF16: memcpy(&h, p, 2); return fz_bf16_value(h);
    default: return (double)*(const int8_t *)p;
    }
}

FZ_NOCOV static void ft_fill(ftens *f, double amp)
{
    int64_t a, b, c, d;
    for (a = 0; a < f->t.shape[0]; a++)
        for (b = 0; b < f->t.shape[1]; b++)
            for (c = 0; c < f->t.shape[2]; c++)
                for (d = 0; d < f->t.shape[3]; d++) ft_put(f, ft_off(f, a, b, c, d), fz_uniform(-amp, amp));
}

/* score_mod: a smooth change and a pattern of hidden keys, the same function
 * of (s, b, h, i, j) in float for the library and in double for the reference */
FZ_NOCOV static double smod_d(double s, int64_t b, int64_t h, int64_t i, int64_t j)
{
    if ((i * 7 + j * 3 + h + b) % 11 == 0) return -INFINITY;
    return 0.75 * s + 0.01 * (double)((i - j) % 5);
}
static float smod_f(float s, int64_t b, int64_t h, int64_t i, int64_t j, void *user)
{
    (void)user;
    if ((i * 7 + j * 3 + h + b) % 11 == 0) return -INFINITY;
    return 0.75f * s + 0.01f * (float)((i - j) % 5);
}

/* parallel_for hook: tasks in reverse order on worker n_workers - 1, or a failure */
typedef struct { int fail; int64_t calls; } pf_user;
static int pf_serial(void *user, int n_workers, int64_t n_tasks, sdpa_task_fn fn, void *ctx)
{
    pf_user *u = (pf_user *)user;
    int64_t t;
    FZ_CHECK(n_workers >= 1, "parallel_for got %d workers", n_workers);
    u->calls++;
    if (u->fail) return 1;
    for (t = n_tasks - 1; t >= 0; t--) fn(ctx, t, n_workers - 1);
    return 0;
}

typedef struct {
    int64_t B, Hq, Hkv, Lq, Lk, D, Dv;
    ftens q, k, v, o, m;
    int has_mask;
    float *lse, *alibi, *qsc, *ksc;
    int64_t *sq, *skv, *cuq, *cuk, nseqs;
    sdpa_params p;
    int i8, qi8, ki8;
    double *qd, *kd, *vd; /* the logical values, dense, for the reference */
} fcase;

/* the value of q (k) element as the library must read it: I8 with its scale */
FZ_NOCOV static double q_val0(const fcase *c, int64_t b, int64_t h, int64_t i, int64_t d)
{
    double x = ft_get(&c->q, ft_off(&c->q, b, h, i, d));
    if (!c->qi8) return x;
    return (x < -127 ? -127 : x) * (double)c->qsc[(b * c->Hq + h) * c->Lq + i];
}
FZ_NOCOV static double k_val0(const fcase *c, int64_t b, int64_t h, int64_t j, int64_t d)
{
    double x = ft_get(&c->k, ft_off(&c->k, b, h, j, d));
    if (!c->ki8) return x;
    return (x < -127 ? -127 : x) * (double)c->ksc[(b * c->Hkv + h) * c->Lk + j];
}
#define Q_AT(c, b, h, i, d) (c)->qd[(((b) * (c)->Hq + (h)) * (c)->Lq + (i)) * (c)->D + (d)]
#define K_AT(c, b, h, j, d) (c)->kd[(((b) * (c)->Hkv + (h)) * (c)->Lk + (j)) * (c)->D + (d)]
#define V_AT(c, b, h, j, d) (c)->vd[(((b) * (c)->Hkv + (h)) * (c)->Lk + (j)) * (c)->Dv + (d)]

FZ_NOCOV static void dense_values(fcase *c)
{
    int64_t b, h, i, d;
    c->qd = (double *)malloc((size_t)(c->B * c->Hq * c->Lq * c->D + 1) * sizeof(double));
    c->kd = (double *)malloc((size_t)(c->B * c->Hkv * c->Lk * c->D + 1) * sizeof(double));
    c->vd = (double *)malloc((size_t)(c->B * c->Hkv * c->Lk * c->Dv + 1) * sizeof(double));
    for (b = 0; b < c->B; b++) {
        for (h = 0; h < c->Hq; h++)
            for (i = 0; i < c->Lq; i++)
                for (d = 0; d < c->D; d++) Q_AT(c, b, h, i, d) = q_val0(c, b, h, i, d);
        for (h = 0; h < c->Hkv; h++)
            for (i = 0; i < c->Lk; i++) {
                for (d = 0; d < c->D; d++) K_AT(c, b, h, i, d) = k_val0(c, b, h, i, d);
                for (d = 0; d < c->Dv; d++) V_AT(c, b, h, i, d) = ft_get(&c->v, ft_off(&c->v, b, h, i, d));
            }
    }
}

static double tol_out(sdpa_dtype odt, double ref)
{
    if (odt == SDPA_F16) return 2e-3 * fabs(ref) + 1e-4;
    if (odt == SDPA_BF16) return 8e-3 * fabs(ref) + 1e-3;
    return 2e-5 + 1e-4 * fabs(ref);
}

/* Half a quantisation step of a row whose largest |element| is amax (the
 * library's per-token scale is amax / 127; below SDPA__I8_TINY the row
 * becomes zeros, an error of amax). */
FZ_NOCOV static double i8_half_step(double amax) { return amax < 1e-30 ? amax : amax / 254.0; }

/* int8 mode with a float q or k: how far the score of query row qrow and key
 * krow may move when the library rounds them to int8. The library rounds q
 * and k~ = k - mean (mean: the sequence's mean key, zeros when not smoothing)
 * per token, so with errors |eq| <= hq, |ek| <= hk elementwise the score moves
 * by |scale * (q.ek + eq.k~ + eq.ek)| <= |scale| * sum(|q| hk + |k~| hq + hq hk);
 * plus float rounding of the int32 dequantisation and of scale * q.mean. */
FZ_NOCOV static double i8_score_err(const fcase *c, const double *qrow, const double *krow, const double *mean, double scale)
{
    double hq = 0, hk = 0, amax = 0, e = 0, mag = 0;
    int64_t d;
    if (!c->qi8) {
        for (d = 0; d < c->D; d++) amax = fmax(amax, fabs(qrow[d]));
        hq = i8_half_step(amax);
    }
    if (!c->ki8) {
        for (amax = 0, d = 0; d < c->D; d++) amax = fmax(amax, fabs(krow[d] - mean[d]));
        hk = i8_half_step(amax);
    }
    for (d = 0; d < c->D; d++) {
        e += fabs(qrow[d]) * hk + fabs(krow[d] - mean[d]) * hq + hq * hk;
        mag += fabs(qrow[d]) * (fabs(krow[d]) + 2 * fabs(mean[d]));
    }
    return fabs(scale) * (1.001 * e + 1e-6 * mag);
}

/* float64 reference for one query row; returns 0 when a NaN/Inf reaches it
 * (then nothing is checked), else fills out[Dv] and *lse. In int8 mode with a
 * float q or k, *lerr gets a bound on |lse error| (the largest score error E
 * over the visible keys, i8_score_err) and oerr[Dv] bounds on the out errors:
 * scores that move by at most E move each softmax weight by a factor within
 * exp(+-2E), so sum |dp| <= exp(2E) - 1 and |d out[d]| <= (exp(2E) - 1) max |v[d]|.
 * Otherwise both are zero; SDPA_PRECISION_BF16_PV adds its stated 2^-9 max |v[d]|
 * to oerr, SDPA_PRECISION_INT8_QK_BF16_PV 2^-8 max |v[d]| (P and V rounded). */
FZ_NOCOV static int ref_row(const fcase *c, int64_t seq, int64_t bt, int64_t h, int64_t i, int64_t q0, int64_t vq, int64_t k0,
                   int64_t vk, double *out, double *lse, double *lerr, double *oerr)
{
    const sdpa_params *p = &c->p;
    int64_t G = c->Hq / c->Hkv, g = h / G, j, d;
    int64_t pos = p->causal == SDPA_CAUSAL_TOP_LEFT ? i : i + vk - vq;
    double scale = p->scale != 0.0f ? (double)p->scale : 1.0 / sqrt((double)c->D);
    double s[MAXL], mx = -INFINITY, sum = 0, mean[MAXD] = {0}, vmax[MAXD] = {0}, err = 0;
    int clean = 1, qbad = 0, loose = c->i8 && !(c->qi8 && c->ki8);
    const double *qrow = &Q_AT(c, bt, h, q0 + i, 0);
    for (d = 0; d < c->D; d++) qbad |= !isfinite(qrow[d]);
    if (loose && (c->p.precision == SDPA_PRECISION_INT8_QK || c->p.precision == SDPA_PRECISION_INT8_QK_BF16_PV) && !c->ki8 &&
        vk > 0) { /* the smoothing's mean key */
        int fin = 1;
        for (j = 0; j < vk; j++)
            for (d = 0; d < c->D; d++) mean[d] += K_AT(c, bt, g, k0 + j, d) / (double)vk;
        for (d = 0; d < c->D; d++) fin &= isfinite(mean[d]) != 0;
        if (!fin) /* the library drops the smoothing then */
            for (d = 0; d < c->D; d++) mean[d] = 0;
    }
    for (j = 0; j < vk; j++) {
        double x = 0, mval = 0;
        int vis = 1;
        if (p->causal != SDPA_CAUSAL_NONE && j > pos) vis = 0;
        if (p->window && p->window_left >= 0 && pos - j > p->window_left) vis = 0; /* |pos - j| <= 2 MAXL */
        if (p->window && p->window_right >= 0 && j - pos > p->window_right) vis = 0;
        if (c->has_mask) {
            const ftens *m = &c->m;
            int64_t mb = m->t.shape[0] == 1 ? 0 : bt, mh = m->t.shape[1] == 1 ? 0 : h;
            int64_t mi = m->t.shape[2] == 1 ? 0 : q0 + i, mj = m->t.shape[3] == 1 ? 0 : k0 + j;
            mval = ft_get(m, ft_off(m, mb, mh, mi, mj));
            if (m->t.dtype == SDPA_BOOL && mval == 0) vis = 0;
        }
        s[j] = -INFINITY;
        if (!vis) continue;
        if (qbad) clean = 0;
        {
            const double *krow = &K_AT(c, bt, g, k0 + j, 0), *vrow = &V_AT(c, bt, g, k0 + j, 0);
            for (d = 0; d < c->D; d++) x += qrow[d] * krow[d];
            if (!isfinite(x)) /* NaN, or an Inf in q or k (a finite overflow cannot happen here) */
                for (d = 0; d < c->D; d++) clean &= isfinite(krow[d]) != 0;
            for (d = 0; d < c->Dv; d++) clean &= isfinite(vrow[d]) != 0, vmax[d] = fmax(vmax[d], fabs(vrow[d]));
            if (loose) err = fmax(err, i8_score_err(c, qrow, krow, mean, scale));
        }
        x *= scale;
        if (p->softcap > 0) x = p->softcap * tanh(x / p->softcap);
        if (p->alibi_slopes) x -= (double)p->alibi_slopes[h] * (double)llabs(pos - j);
        if (c->has_mask && c->m.t.dtype == SDPA_F32) {
            if (isnan(mval) || mval == INFINITY) clean = 0;
            x += mval;
        }
        if (p->score_mod && x != -INFINITY) x = smod_d(x, seq, h, i, j);
        s[j] = x;
        if (x > mx) mx = x;
    }
    if (!clean) return 0;
    *lerr = err;
    for (d = 0; d < c->Dv; d++) out[d] = 0, oerr[d] = expm1(2 * err) * vmax[d];
    if (p->precision == SDPA_PRECISION_BF16_PV) /* the mode's stated 2^-9 max|v| */
        for (d = 0; d < c->Dv; d++) oerr[d] += 1.01 * ldexp(vmax[d], -9);
    if (p->precision == SDPA_PRECISION_INT8_QK_BF16_PV) /* 2^-9 max|v| for P's rounding, as much for V's */
        for (d = 0; d < c->Dv; d++) oerr[d] += 1.01 * ldexp(vmax[d], -8);
    if (mx == -INFINITY) { *lse = -INFINITY; return 1; }
    for (j = 0; j < vk; j++) {
        double w = s[j] == -INFINITY ? 0 : exp(s[j] - mx);
        sum += w;
        if (w != 0)
            for (d = 0; d < c->Dv; d++) out[d] += w * V_AT(c, bt, g, k0 + j, d);
    }
    for (d = 0; d < c->Dv; d++) out[d] /= sum;
    *lse = mx + log(sum);
    return 1;
}

/* Compares every row of out (and lse) with the reference. */
FZ_NOCOV static void check_result(const fcase *c)
{
    int64_t nseq = c->cuq ? c->nseqs + 1 : c->B, s, h, i, d;
    double ref[MAXD], rl, oerr[MAXD], lerr;
    for (s = 0; s < nseq; s++) {
        int64_t bt, q0, nq, vq, k0, vk;
        if (c->cuq) {
            bt = 0, q0 = c->cuq[s];
            if (s < c->nseqs) nq = vq = c->cuq[s + 1] - q0, k0 = c->cuk[s], vk = c->cuk[s + 1] - k0;
            else nq = c->Lq - q0, vq = 0, k0 = 0, vk = 0;
        } else {
            bt = s, q0 = 0, nq = c->Lq, vq = c->sq ? c->sq[s] : c->Lq, k0 = 0, vk = c->skv ? c->skv[s] : c->Lk;
        }
        for (h = 0; h < c->Hq; h++)
            for (i = 0; i < nq; i++) {
                int ok;
                if (i >= vq) {
                    for (d = 0; d < c->Dv; d++) ref[d] = 0;
                    rl = -INFINITY, ok = 1, lerr = 0;
                    for (d = 0; d < c->Dv; d++) oerr[d] = 0;
                } else {
                    ok = ref_row(c, s, bt, h, i, q0, vq, k0, vk, ref, &rl, &lerr, oerr);
                }
                if (!ok) continue;
                for (d = 0; d < c->Dv; d++) {
                    double got = ft_get(&c->o, ft_off(&c->o, bt, h, q0 + i, d));
                    double tol = tol_out(c->o.t.dtype, ref[d]) * (c->i8 ? 4 : 1) + oerr[d];
                    FZ_CHECK(fabs(got - ref[d]) <= tol, "out[b%lld,h%lld,i%lld,d%lld] = %.9g, reference %.9g (seq %lld)",
                             (long long)bt, (long long)h, (long long)(q0 + i), (long long)d, got, ref[d], (long long)s);
                }
                if (c->lse) {
                    double got = c->lse[(bt * c->Hq + h) * c->Lq + q0 + i];
                    if (rl == -INFINITY) FZ_CHECK(got == -INFINITY, "lse[b%lld,h%lld,i%lld] = %g, want -inf", (long long)bt,
                                                  (long long)h, (long long)(q0 + i), got);
                    else FZ_CHECK(fabs(got - rl) <= (2e-5 + 2e-6 * fabs(rl)) * (c->i8 ? 4 : 1) + lerr,
                                  "lse[b%lld,h%lld,i%lld] = %.9g, reference %.9g", (long long)bt, (long long)h,
                                  (long long)(q0 + i), got, rl);
                }
            }
    }
}

/* bytes of out that are no element must keep their poison */
FZ_NOCOV static void check_padding(const ftens *o, const unsigned char *before)
{
    unsigned char *is_el;
    int64_t a, b, c2, d, es = (int64_t)dt_size(o->t.dtype);
    size_t z;
    if (!o->bytes) return;
    is_el = (unsigned char *)calloc(o->bytes, 1);
    for (a = 0; a < o->t.shape[0]; a++)
        for (b = 0; b < o->t.shape[1]; b++)
            for (c2 = 0; c2 < o->t.shape[2]; c2++)
                for (d = 0; d < o->t.shape[3]; d++) memset(is_el + ft_off(o, a, b, c2, d) * es, 1, (size_t)es);
    for (z = 0; z < o->bytes; z++)
        FZ_CHECK(is_el[z] || o->buf[z] == before[z], "out byte %zu (between elements) was written", z);
    free(is_el);
}

/* The mutations: one invalid argument each, and the codes it may give. */
enum { MUT_NONE = 0, MUT_COUNT = 27 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size, 0};
    fcase c;
    sdpa_dtype idt, odt;
    sdpa_tensor qx, kx, vx, ox, mx;
    const sdpa_tensor *qp = &qx, *kp = &kx, *vp = &vx, *op = &ox;
    fz_alloc al_state;
    sdpa_allocator al;
    pf_user pfu = {0, 0};
    char errbuf[80];
    size_t eb_size;
    unsigned char *o_before = NULL, *q_before = NULL, *k_before = NULL, *v_before = NULL;
    float *lse_before = NULL;
    int64_t G, b, i, d, lse_n = 0, ws;
    int want_lse, mut, rc, want[3] = {SDPA_OK, SDPA_OK, SDPA_OK}, nan_kind, nwant = 1;
    static const sdpa_dtype dts[3] = {SDPA_F32, SDPA_F16, SDPA_BF16};

    memset(&c, 0, sizeof c);
    memset(&al_state, 0, sizeof al_state);
    fz_seed(&in);
    fz_what = "decode";
    c.B = fz_range(&in, 0, 3);
    c.Hkv = fz_range(&in, 1, 3);
    G = fz_range(&in, 1, 3);
    c.Hq = c.Hkv * G;
    if (fz_chance(&in, 1)) c.Hkv = 0, c.Hq = 0; /* no heads at all: a valid empty call */
    c.Lq = fz_range(&in, 0, MAXL);
    c.Lk = fz_range(&in, 0, MAXL);
    c.D = fz_range(&in, 1, MAXD);
    c.Dv = fz_range(&in, 0, MAXD);
    idt = dts[fz_range(&in, 0, 2)];
    odt = dts[fz_range(&in, 0, 2)];
    c.i8 = fz_chance(&in, 3);
    if (c.i8) {
        c.p.precision = fz_chance(&in, 4) ? SDPA_PRECISION_INT8_QK_NOSMOOTH : SDPA_PRECISION_INT8_QK;
        /* odd head dims take the bf16 P.V form: no byte more is read, so the
         * corpus's inputs decode as they did */
        if (c.p.precision == SDPA_PRECISION_INT8_QK && (c.D & 1)) c.p.precision = SDPA_PRECISION_INT8_QK_BF16_PV;
        c.qi8 = fz_chance(&in, 6);
        c.ki8 = fz_chance(&in, 6);
    } else if (fz_chance(&in, 4)) {
        c.p.precision = SDPA_PRECISION_BF16_PV; /* P as one bf16 where bf16 products are made */
    }

    /* options */
    c.p.causal = (sdpa_causal)fz_range(&in, 0, 2);
    if (fz_chance(&in, 4)) {
        c.p.window = 1;
        c.p.window_left = fz_range(&in, -1, MAXL);
        c.p.window_right = fz_range(&in, -1, MAXL);
        if (fz_chance(&in, 1)) c.p.window_left = INT64_MAX; /* huge extents: clamped, not overflowing */
    }
    if (fz_chance(&in, 3)) c.p.softcap = (float)fz_range(&in, 1, 60) * 0.5f;
    if (fz_chance(&in, 3)) c.p.scale = (float)(fz_range(&in, -40, 40) * 0.05);
    if (fz_chance(&in, 3)) {
        c.alibi = (float *)malloc((size_t)(c.Hq ? c.Hq : 1) * sizeof(float));
        for (i = 0; i < c.Hq; i++) c.alibi[i] = (float)fz_uniform(0, 1);
        c.p.alibi_slopes = c.alibi;
    }
    if (fz_chance(&in, 2)) c.p.score_mod = smod_f;
    want_lse = fz_chance(&in, 8);
    if (fz_chance(&in, 4)) c.p.tile_q = (int)fz_range(&in, 1, 70);
    if (fz_chance(&in, 4)) c.p.tile_k = (int)fz_range(&in, 1, 70);
    c.p.num_threads = fz_chance(&in, 3) ? (int)fz_range(&in, 2, 3) : 1; /* threads cost ~100 us a call */
    if (fz_chance(&in, 3)) c.p.parallel_for = pf_serial, c.p.parallel_user = &pfu, c.p.num_threads = (int)fz_range(&in, 0, 5);
    {
        int pth = (int)fz_range(&in, 0, 2);
        c.p.path = pth == 0 ? SDPA_PATH_AUTO : pth == 1 ? SDPA_PATH_SCALAR : SDPA_PATH_AVX2;
        if (!sdpa_path_supported(c.p.path)) c.p.path = SDPA_PATH_SCALAR;
    }
    /* variable lengths: padded or (batch 1) packed */
    {
        int vl = (int)fz_range(&in, 0, 3);
        if (vl == 1 && c.B > 0) {
            c.sq = (int64_t *)malloc((size_t)c.B * sizeof(int64_t));
            c.skv = (int64_t *)malloc((size_t)c.B * sizeof(int64_t));
            for (b = 0; b < c.B; b++) c.sq[b] = fz_range(&in, 0, c.Lq), c.skv[b] = fz_range(&in, 0, c.Lk);
            if (fz_bit(&in)) c.p.seqlens_q = c.sq;
            else free(c.sq), c.sq = NULL;
            if (fz_bit(&in) || !c.sq) c.p.seqlens_kv = c.skv;
            else free(c.skv), c.skv = NULL;
        } else if (vl == 2) {
            c.B = 1;
            c.nseqs = fz_range(&in, 0, 4);
            c.cuq = (int64_t *)malloc((size_t)(c.nseqs + 1) * sizeof(int64_t));
            c.cuk = (int64_t *)malloc((size_t)(c.nseqs + 1) * sizeof(int64_t));
            c.cuq[0] = c.cuk[0] = 0;
            for (i = 1; i <= c.nseqs; i++) {
                c.cuq[i] = c.cuq[i - 1] + fz_range(&in, 0, (c.Lq - c.cuq[i - 1]) / 2 + 1);
                c.cuk[i] = c.cuk[i - 1] + fz_range(&in, 0, (c.Lk - c.cuk[i - 1]) / 2 + 1);
                if (c.cuq[i] > c.Lq) c.cuq[i] = c.Lq;
                if (c.cuk[i] > c.Lk) c.cuk[i] = c.Lk;
            }
            c.p.cu_seqlens_q = c.cuq, c.p.cu_seqlens_kv = c.cuk, c.p.num_seqs = c.nseqs;
        }
    }

    if (want_lse) { /* after the packed case has set the batch to 1 */
        lse_n = c.B * c.Hq * c.Lq;
        c.lse = (float *)malloc((size_t)(lse_n ? lse_n : 1) * sizeof(float));
        c.p.lse = c.lse;
    }

    /* tensors */
    ft_make(&in, &c.q, c.qi8 ? SDPA_I8 : idt, c.B, c.Hq, c.Lq, c.D, 1);
    ft_make(&in, &c.k, c.ki8 ? SDPA_I8 : idt, c.B, c.Hkv, c.Lk, c.D, 1);
    ft_make(&in, &c.v, idt, c.B, c.Hkv, c.Lk, c.Dv, 1);
    ft_make(&in, &c.o, odt, c.B, c.Hq, c.Lq, c.Dv, 1);
    {
        double amp = fz_chance(&in, 4) ? 0.25 : fz_chance(&in, 8) ? 1.0 : 2.0;
        if (c.qi8) {
            int64_t n = c.B * c.Hq * c.Lq;
            c.qsc = (float *)malloc((size_t)(n ? n : 1) * sizeof(float));
            for (i = 0; i < n; i++) c.qsc[i] = (float)fz_uniform(0, amp / 127.0);
            ft_fill(&c.q, 0);
            for (b = 0; b < c.B; b++) /* integers in [-128, 127] */
                for (i = 0; i < c.Hq * c.Lq; i++)
                    for (d = 0; d < c.D; d++)
                        ft_put(&c.q, ft_off(&c.q, b, i / (c.Lq ? c.Lq : 1), i % (c.Lq ? c.Lq : 1), d),
                               (double)((int)(fz_next() % 256u) - 128));
            c.p.q_scale = c.qsc;
        } else {
            ft_fill(&c.q, amp);
        }
        if (c.ki8) {
            int64_t n = c.B * c.Hkv * c.Lk;
            c.ksc = (float *)malloc((size_t)(n ? n : 1) * sizeof(float));
            for (i = 0; i < n; i++) c.ksc[i] = (float)fz_uniform(0, amp / 127.0);
            for (b = 0; b < c.B; b++)
                for (i = 0; i < c.Hkv * c.Lk; i++)
                    for (d = 0; d < c.D; d++)
                        ft_put(&c.k, ft_off(&c.k, b, i / c.Lk, i % c.Lk, d), (double)((int)(fz_next() % 256u) - 128));
            c.p.k_scale = c.ksc;
        } else {
            ft_fill(&c.k, amp);
        }
        ft_fill(&c.v, 1.0);
    }
    if (fz_chance(&in, 5)) { /* mask: dims broadcast or full */
        int mb = (int)fz_u8(&in);
        sdpa_dtype mdt = (mb & 16) ? SDPA_BOOL : SDPA_F32;
        int64_t n0 = (mb & 1) ? c.B : 1, n1 = (mb & 2) ? c.Hq : 1, n2 = (mb & 4) ? c.Lq : 1, n3 = (mb & 8) ? c.Lk : 1;
        int64_t a2, b2, c2, d2;
        double big = (mb & 32) ? 85.0 : (mb & 64) ? -120.0 : 0.0; /* exp overflow without the max subtraction */
        ft_make(&in, &c.m, mdt, n0, n1, n2, n3, 1);
        for (a2 = 0; a2 < n0; a2++)
            for (b2 = 0; b2 < n1; b2++)
                for (c2 = 0; c2 < n2; c2++)
                    for (d2 = 0; d2 < n3; d2++) {
                        double x;
                        if (mdt == SDPA_BOOL) x = (fz_next() % 4u) != 0;
                        else x = (fz_next() % 8u) == 0 ? -INFINITY : big + fz_uniform(-2, 2);
                        ft_put(&c.m, ft_off(&c.m, a2, b2, c2, d2), x);
                    }
        c.has_mask = 1;
        c.p.mask = &c.m.t;
    }
    /* NaN / Inf planted in one element */
    nan_kind = fz_chance(&in, 3) ? (int)fz_range(&in, 1, 8) : 0;
    if (nan_kind) {
        ftens *t = nan_kind <= 2 ? &c.q : nan_kind <= 4 ? &c.k : nan_kind <= 6 ? &c.v : &c.m;
        double bad = (nan_kind & 1) ? NAN : (fz_bit(&in) ? INFINITY : -INFINITY);
        if (t->buf && t->bytes && (t->t.dtype == SDPA_F32 || t->t.dtype == SDPA_F16 || t->t.dtype == SDPA_BF16)) {
            int64_t e0 = fz_range(&in, 0, t->t.shape[0] - 1), e1 = fz_range(&in, 0, t->t.shape[1] - 1);
            int64_t e2 = fz_range(&in, 0, t->t.shape[2] - 1), e3 = fz_range(&in, 0, t->t.shape[3] - 1);
            ft_put(t, ft_off(t, e0, e1, e2, e3), bad);
        }
    }
    if (fz_chance(&in, 2)) { /* the allocator hook, perhaps failing */
        al.alloc = fz_alloc_fn, al.free = fz_free_fn, al.user = &al_state;
        c.p.allocator = &al;
    }
    eb_size = (size_t)fz_range(&in, 0, 64);
    memset(errbuf, 'Z', sizeof errbuf);
    c.p.errbuf = errbuf, c.p.errbuf_size = eb_size;

    /* one invalid argument, or none */
    qx = c.q.t, kx = c.k.t, vx = c.v.t, ox = c.o.t;
    mut = fz_chance(&in, 5) ? (int)fz_range(&in, 1, MUT_COUNT) : MUT_NONE;
    fz_what = "mutation";
    switch (mut) {
    case 1: qp = NULL; want[0] = SDPA_ERR_NULL; break;
    case 2:
        if (c.o.bytes) ox.data = NULL, want[0] = SDPA_ERR_NULL;
        break;
    case 3: kx.shape[2] = -1 - (int64_t)fz_u8(&in); want[0] = SDPA_ERR_SHAPE; break;
    case 4: /* stride[3] != 1 */
        vx.stride[0] = c.v.s[0], vx.stride[1] = c.v.s[1], vx.stride[2] = c.v.s[2], vx.stride[3] = 2;
        want[0] = SDPA_ERR_STRIDE;
        break;
    case 5: qx.stride[3] = 1, qx.stride[1] = -1; want[0] = SDPA_ERR_STRIDE; break;
    case 6: ox.dtype = (sdpa_dtype)(5 + (int)fz_u8(&in) % 50); want[0] = SDPA_ERR_DTYPE; break;
    case 7:
        if (!c.qi8 && !c.ki8) vx.dtype = idt == SDPA_F32 ? SDPA_F16 : SDPA_F32, want[0] = SDPA_ERR_DTYPE;
        break;
    case 8: ox.dtype = SDPA_BOOL; want[0] = SDPA_ERR_DTYPE; break;
    case 9: kx.shape[3] = c.D + 1; want[0] = SDPA_ERR_SHAPE; break;
    case 10:
        if (c.Hkv >= 2) qx.shape[1] = ox.shape[1] = c.Hq + 1, want[0] = SDPA_ERR_HEADS;
        break;
    case 11:
        if (c.o.bytes && c.q.bytes) ox.data = c.q.buf, want[0] = SDPA_ERR_ALIAS;
        break;
    case 12:
        if (lse_n > 0 && c.o.bytes) c.p.lse = (float *)(void *)c.o.buf, want[0] = SDPA_ERR_ALIAS;
        break;
    case 13: c.p.scale = fz_bit(&in) ? NAN : -INFINITY; want[0] = SDPA_ERR_PARAM; break;
    case 14: c.p.softcap = fz_bit(&in) ? -1.0f : NAN; want[0] = SDPA_ERR_PARAM; break;
    case 15: c.p.causal = (sdpa_causal)(3 + fz_u8(&in)); want[0] = SDPA_ERR_PARAM; break;
    case 16: c.p.num_threads = -1 - (int)fz_u8(&in); want[0] = SDPA_ERR_PARAM; break;
    case 17: c.p.tile_k = 4097 + (int)fz_u16(&in); want[0] = SDPA_ERR_PARAM; break;
    case 18:
        if (c.sq && c.B > 0) c.sq[fz_range(&in, 0, c.B - 1)] = c.Lq + 1, want[0] = SDPA_ERR_SEQLENS;
        else if (c.skv && c.B > 0) c.skv[fz_range(&in, 0, c.B - 1)] = -1, want[0] = SDPA_ERR_SEQLENS;
        break;
    case 19:
        if (c.cuq && c.nseqs > 0) c.cuk[c.nseqs] = c.Lk + 1, want[0] = SDPA_ERR_SEQLENS;
        break;
    case 20:
        if (c.cuq) c.p.seqlens_q = c.cuq, want[0] = SDPA_ERR_SEQLENS;
        break;
    case 21:
        if (c.has_mask) {
            mx = c.m.t;
            mx.shape[2] = c.Lq + 2; /* neither 1 nor Lq */
            mx.stride[0] = mx.stride[1] = mx.stride[2] = 0, mx.stride[3] = 0;
            c.p.mask = &mx;
            want[0] = SDPA_ERR_MASK, want[1] = SDPA_ERR_NULL, nwant = 2; /* data NULL if empty */
        }
        break;
    case 22: /* SDPA_I8 q or k then needs an int8 mode first */
        c.p.precision = SDPA_PRECISION_INT8_QK_BF16_PV + 1 + (int)fz_u8(&in);
        want[0] = c.qi8 || c.ki8 ? SDPA_ERR_DTYPE : SDPA_ERR_PARAM;
        break;
    case 23:
        if (!c.i8 && idt == SDPA_F32) qx.dtype = SDPA_I8, want[0] = SDPA_ERR_DTYPE;
        break;
    case 24: c.p.path = (sdpa_path)(6 + fz_u8(&in)); want[0] = SDPA_ERR_PATH; break;
    case 25:
        if (c.Lq > 1 && c.Hq > 0 && c.B > 0 && c.Dv > 0)
            ox.stride[0] = c.o.s[0], ox.stride[1] = c.o.s[1], ox.stride[2] = 0, ox.stride[3] = 1, want[0] = SDPA_ERR_STRIDE;
        break;
    case 26: /* 2^62 query rows: too many bytes, unless another dim is 0 */
        qx.shape[2] = ox.shape[2] = (int64_t)1 << 62;
        want[0] = SDPA_ERR_OVERFLOW;
        if (c.has_mask && c.m.t.shape[2] != 1) want[nwant++] = SDPA_ERR_MASK; /* when q has no elements */
        if (c.B * c.Hq == 0) want[nwant++] = SDPA_OK;
        else if (!qx.data || (!ox.data && c.Dv > 0)) want[nwant++] = SDPA_ERR_NULL; /* was empty: NULL data allowed then */
        break;
    case 27:
        if (c.qi8 && c.B * c.Hq * c.Lq > 0) c.p.q_scale = NULL, want[0] = SDPA_ERR_NULL;
        else if (c.p.allocator) al_state.fail_at = 1, want[0] = SDPA_ERR_NOMEM, want[1] = SDPA_OK, nwant = 2;
        break;
    }
    if (mut == MUT_NONE && c.p.allocator && fz_chance(&in, 2)) { /* a later allocation fails */
        al_state.fail_at = fz_range(&in, 1, 3);
        want[0] = SDPA_ERR_NOMEM, want[1] = SDPA_OK, nwant = 2;
    }
    if (mut == MUT_NONE && c.p.parallel_for && fz_chance(&in, 1)) pfu.fail = 1;

    /* snapshots */
    if (c.o.bytes) o_before = (unsigned char *)malloc(c.o.bytes), memcpy(o_before, c.o.buf, c.o.bytes);
    if (c.q.bytes) q_before = (unsigned char *)malloc(c.q.bytes), memcpy(q_before, c.q.buf, c.q.bytes);
    if (c.k.bytes) k_before = (unsigned char *)malloc(c.k.bytes), memcpy(k_before, c.k.buf, c.k.bytes);
    if (c.v.bytes) v_before = (unsigned char *)malloc(c.v.bytes), memcpy(v_before, c.v.buf, c.v.bytes);
    if (c.lse) {
        lse_before = (float *)malloc((size_t)(lse_n ? lse_n : 1) * sizeof(float));
        for (i = 0; i < lse_n; i++) c.lse[i] = lse_before[i] = (float)NAN;
    }

    if (getenv("FUZZ_VERBOSE")) {
        const sdpa_tensor *ts[4] = {qp, kp, vp, op};
        int t;
        fprintf(stderr, "mutation %d; path %d threads %d hook %d; causal %d window %d (%lld, %lld) softcap %g scale %g alibi %d "
                "score_mod %d mask %d lse %d seqlens %d/%d cu %lld; precision %d q_i8 %d k_i8 %d; tiles %d/%d; alloc fail_at %lld\n",
                mut, (int)c.p.path, c.p.num_threads, c.p.parallel_for != NULL, (int)c.p.causal, c.p.window,
                (long long)c.p.window_left, (long long)c.p.window_right, c.p.softcap, c.p.scale, c.alibi != NULL,
                c.p.score_mod != NULL, c.has_mask ? (int)c.m.t.dtype + 1 : 0, c.lse != NULL, c.p.seqlens_q != NULL,
                c.p.seqlens_kv != NULL, c.cuq ? (long long)c.nseqs : -1LL, c.p.precision, c.qi8, c.ki8, c.p.tile_q, c.p.tile_k,
                (long long)al_state.fail_at);
        for (t = 0; t < 4; t++)
            if (ts[t]) fprintf(stderr, "  %c dtype %d shape [%lld %lld %lld %lld] stride [%lld %lld %lld %lld] data %s\n", "qkvo"[t],
                               (int)ts[t]->dtype, (long long)ts[t]->shape[0], (long long)ts[t]->shape[1], (long long)ts[t]->shape[2],
                               (long long)ts[t]->shape[3], (long long)ts[t]->stride[0], (long long)ts[t]->stride[1],
                               (long long)ts[t]->stride[2], (long long)ts[t]->stride[3], ts[t]->data ? "set" : "NULL");
    }
    fz_what = "sdpa_workspace_size";
    ws = sdpa_workspace_size(qp, kp, vp, op, &c.p);
    fz_what = "sdpa_attention";
    rc = sdpa_attention(qp, kp, vp, op, &c.p);

    FZ_CHECK(al_state.live == 0, "%lld bytes of scratch not freed (rc %d)", (long long)al_state.live, rc);
    if (c.q.bytes) FZ_CHECK(memcmp(q_before, c.q.buf, c.q.bytes) == 0, "q was modified");
    if (c.k.bytes) FZ_CHECK(memcmp(k_before, c.k.buf, c.k.bytes) == 0, "k was modified");
    if (c.v.bytes) FZ_CHECK(memcmp(v_before, c.v.buf, c.v.bytes) == 0, "v was modified");
    if (pfu.fail && pfu.calls > 0) {
        FZ_CHECK(rc == SDPA_ERR_THREADS, "the hook failed, rc = %d", rc);
    } else if (rc != SDPA_OK || want[0] != SDPA_OK) {
        int hit = 0;
        for (i = 0; i < nwant; i++) hit |= rc == want[i];
        FZ_CHECK(hit, "mutation %d: rc = %d (%s), want %d; errbuf \"%.*s\"", mut, rc, sdpa_strerror(rc), want[0],
                 (int)(eb_size ? eb_size - 1 : 0), errbuf);
        if (rc != SDPA_OK) {
            FZ_CHECK(ws < 0 || rc == SDPA_ERR_NOMEM || rc == SDPA_ERR_THREADS, "sdpa_workspace_size %lld for a call failing %d",
                     (long long)ws, rc);
            if (c.o.bytes) FZ_CHECK(memcmp(o_before, c.o.buf, c.o.bytes) == 0, "out written by a failing call (rc %d)", rc);
            for (i = 0; i < lse_n; i++) FZ_CHECK(isnan(c.lse[i]), "lse written by a failing call (rc %d)", rc);
            if (rc != SDPA_ERR_NOMEM && rc != SDPA_ERR_THREADS)
                FZ_CHECK(ws == rc, "sdpa_workspace_size gave %lld, sdpa_attention %d", (long long)ws, rc);
            if (eb_size > 0) {
                FZ_CHECK(memchr(errbuf, 0, eb_size) != NULL, "errbuf not terminated");
                FZ_CHECK(eb_size == 1 || errbuf[0] != 0, "no message for rc %d", rc);
            }
            FZ_CHECK(errbuf[eb_size] == 'Z', "errbuf written past errbuf_size");
        }
    }
    if (rc == SDPA_OK && !pfu.fail) {
        fz_what = "result";
        FZ_CHECK(ws >= 0, "sdpa_workspace_size = %lld for a good call", (long long)ws);
        FZ_CHECK(al_state.peak <= ws && al_state.total <= ws, "allocated %lld bytes, workspace size %lld",
                 (long long)al_state.total, (long long)ws);
        FZ_CHECK(errbuf[0] == 'Z' || eb_size == 0, "errbuf written by a good call");
        dense_values(&c);
        check_result(&c);
        check_padding(&c.o, o_before);
    }

    free(c.q.buf), free(c.k.buf), free(c.v.buf), free(c.o.buf), free(c.m.buf);
    free(c.qd), free(c.kd), free(c.vd);
    free(c.lse), free(c.alibi), free(c.qsc), free(c.ksc), free(c.sq), free(c.skv), free(c.cuq), free(c.cuk);
    free(o_before), free(q_before), free(k_before), free(v_before), free(lse_before);
    return 0;
}

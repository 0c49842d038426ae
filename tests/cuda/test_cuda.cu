/* tests/cuda/test_cuda.cu - sdpa_cuda.h against a float64 reference and sdpa.h.
 *
 *   test_cuda            host-side checks, then every device check
 *   test_cuda --quick    fewer and smaller device cases (for compute-sanitizer)
 *   test_cuda --host     host-side checks only
 *
 * Host-side checks need no GPU (argument validation, kernel choice, error
 * words). Without a CUDA device the rest prints "skipped: no CUDA device".
 * Every device case draws fresh random inputs, poisons out and lse with NaN,
 * and compares with a float64 reference on the same (rounded) inputs and
 * with sdpa.h's CPU result; a self-test first shows that the checker flags a
 * corrupted element. */
#define SDPA_CUDA_IMPLEMENTATION
#include "sdpa_cuda.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

static int g_fail = 0, g_pass = 0;
#define CHECK(cond, ...)                                                                                   \
    do {                                                                                                   \
        if (cond) g_pass++;                                                                                \
        else { g_fail++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } \
    } while (0)
#define CU(x)                                                                                              \
    do {                                                                                                   \
        cudaError_t e_ = (x);                                                                              \
        if (e_ != cudaSuccess) { printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); exit(2); } \
    } while (0)

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static double urand(void) /* [0, 1) */
{
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) * (1.0 / 9007199254740992.0);
}

static float round_to(float x, int dt)
{
    if (dt == SDPA_F16) return sdpa_f16_to_f32(sdpa_f32_to_f16(x));
    if (dt == SDPA_BF16) return sdpa_bf16_to_f32(sdpa_f32_to_bf16(x));
    return x;
}
static int64_t esz(int dt) { return dt == SDPA_F32 ? 4 : 2; }
static void put(char *p, int dt, float x)
{
    if (dt == SDPA_F32) memcpy(p, &x, 4);
    else { uint16_t h = dt == SDPA_F16 ? sdpa_f32_to_f16(x) : sdpa_f32_to_bf16(x); memcpy(p, &h, 2); }
}
static float get(const char *p, int dt)
{
    if (dt == SDPA_F32) { float x; memcpy(&x, p, 4); return x; }
    uint16_t h; memcpy(&h, p, 2);
    return dt == SDPA_F16 ? sdpa_f16_to_f32(h) : sdpa_bf16_to_f32(h);
}

static const std::vector<float> *g_kofs = nullptr, *g_kmul = nullptr; /* K's channels: x * mul + offset (run_case) */
static int g_prec = 0;         /* params.precision of run_case */
static int g_nobound = 0;      /* run_case: check finiteness only, not the error bound */
static int g_opad = 0;         /* run_case: out's rows padded by this many elements (checked untouched) */
static double g_last_rel = 0;  /* run_case's rel. L2 against the reference */

/* A [n0, n1, n2, n3] tensor: logical values (rounded to dtype) on the host,
 * a device copy with row stride n3 + pad (pad 0: contiguous, strides 0). */
struct Tens {
    int dt; int64_t n[4], s[4]; std::vector<float> h; void *d = nullptr; size_t bytes = 0;
    void make(int dtype, int64_t a, int64_t b, int64_t c, int64_t e, int pad, float lo, float hi)
    {
        dt = dtype; n[0] = a; n[1] = b; n[2] = c; n[3] = e;
        s[3] = 1; s[2] = e + pad; s[1] = c * s[2]; s[0] = b * s[1];
        h.resize((size_t)(a * b * c * e));
        for (auto &x : h) x = round_to((float)(lo + (hi - lo) * urand()), dt);
        bytes = (size_t)(a * s[0]) * esz(dt) + 64;
        CU(cudaMalloc(&d, bytes));
        upload();
        if (pad == 0) s[0] = s[1] = s[2] = s[3] = 0;
    }
    void upload() /* h to the device; padding holds NaN */
    {
        std::vector<char> buf(bytes);
        for (size_t i = 0; i < bytes; i++) buf[i] = (char)0xff;
        for (int64_t i = 0; i < (int64_t)h.size(); i++) put(buf.data() + off(i) * esz(dt), dt, h[(size_t)i]);
        CU(cudaMemcpy(d, buf.data(), bytes, cudaMemcpyHostToDevice));
    }
    int64_t off(int64_t lin) const
    {
        int64_t i3 = lin % n[3], i2 = lin / n[3] % n[2], i1 = lin / (n[3] * n[2]) % n[1], i0 = lin / (n[3] * n[2] * n[1]);
        int64_t st2 = s[2] ? s[2] : n[3], st1 = s[1] ? s[1] : n[2] * n[3], st0 = s[0] ? s[0] : n[1] * n[2] * n[3];
        return i0 * st0 + i1 * st1 + i2 * st2 + i3;
    }
    sdpa_tensor t() const
    {
        sdpa_tensor x; x.data = d; x.dtype = (sdpa_dtype)dt;
        for (int i = 0; i < 4; i++) { x.shape[i] = n[i]; x.stride[i] = s[i]; }
        return x;
    }
    std::vector<float> down() const
    {
        std::vector<char> buf(bytes);
        CU(cudaMemcpy(buf.data(), d, bytes, cudaMemcpyDeviceToHost));
        std::vector<float> r(h.size());
        for (int64_t i = 0; i < (int64_t)h.size(); i++) r[(size_t)i] = get(buf.data() + off(i) * esz(dt), dt);
        return r;
    }
    void poison() { CU(cudaMemset(d, 0xff, bytes)); }
    int pad_intact() const /* after poison(): no byte outside the elements written */
    {
        std::vector<char> buf(bytes), in(bytes, 0);
        CU(cudaMemcpy(buf.data(), d, bytes, cudaMemcpyDeviceToHost));
        for (int64_t i = 0; i < (int64_t)h.size(); i++)
            for (int b = 0; b < esz(dt); b++) in[(size_t)(off(i) * esz(dt) + b)] = 1;
        for (size_t i = 0; i < bytes; i++)
            if (!in[i] && buf[i] != (char)0xff) return 0;
        return 1;
    }
    void host_tensor(sdpa_tensor *x) const /* the logical values as a contiguous F32 host tensor */
    {
        x->data = (void *)h.data(); x->dtype = SDPA_F32;
        for (int i = 0; i < 4; i++) { x->shape[i] = n[i]; x->stride[i] = 0; }
    }
    ~Tens() { if (d) cudaFree(d); }
};

struct Opt {
    int causal = 0, window = 0; int64_t wl = -1, wr = -1;
    float scale = 0, softcap = 0;
    std::vector<float> alibi;
    int mask = 0;  /* 0 none, 1 F32, 2 BOOL */
    std::vector<float> maskv; int64_t mn[4];
    std::vector<int64_t> sq, skv, cuq, cuk;
};

/* float64 reference of sdpa.h's SEMANTICS (lse natural log; no key: 0, -inf). */
static void reference(const Tens &q, const Tens &k, const Tens &v, const Opt &o, std::vector<double> &out, std::vector<double> &lse)
{
    int64_t B = q.n[0], Hq = q.n[1], Lq = q.n[2], D = q.n[3], Hkv = k.n[1], Lk = k.n[2], Dv = v.n[3], G = Hq / Hkv;
    double scale = o.scale != 0 ? o.scale : 1.0 / sqrt((double)D);
    out.assign((size_t)(B * Hq * Lq * Dv), 0.0);
    lse.assign((size_t)(B * Hq * Lq), -INFINITY);
    int64_t nseq = o.cuq.empty() ? B : (int64_t)o.cuq.size() - 1;
    std::vector<double> s((size_t)Lk + 1);
    for (int64_t sqi = 0; sqi < nseq; sqi++) {
        int64_t bt = o.cuq.empty() ? sqi : 0, q0 = o.cuq.empty() ? 0 : o.cuq[sqi], k0 = o.cuq.empty() ? 0 : o.cuk[sqi];
        int64_t vq = o.cuq.empty() ? (o.sq.empty() ? Lq : o.sq[sqi]) : o.cuq[sqi + 1] - o.cuq[sqi];
        int64_t vk = o.cuq.empty() ? (o.skv.empty() ? Lk : o.skv[sqi]) : o.cuk[sqi + 1] - o.cuk[sqi];
        for (int64_t h = 0; h < Hq; h++)
            for (int64_t i = 0; i < vq; i++) {
                int64_t pos = o.causal == SDPA_CAUSAL_TOP_LEFT ? i : i + vk - vq;
                double mx = -INFINITY;
                for (int64_t j = 0; j < vk; j++) {
                    bool vis = true;
                    if (o.causal && j > pos) vis = false;
                    if (o.window && o.wl >= 0 && j < pos - o.wl) vis = false;
                    if (o.window && o.wr >= 0 && j > pos + o.wr) vis = false;
                    double x = -INFINITY;
                    if (vis) {
                        x = 0;
                        for (int64_t d = 0; d < D; d++)
                            x += (double)q.h[(size_t)((((bt * Hq + h) * Lq) + q0 + i) * D + d)] *
                                 (double)k.h[(size_t)((((bt * Hkv + h / G) * Lk) + k0 + j) * D + d)];
                        x *= scale;
                        if (o.softcap > 0) x = o.softcap * tanh(x / o.softcap);
                        if (!o.alibi.empty()) x -= o.alibi[(size_t)h] * fabs((double)(pos - j));
                        if (o.mask) {
                            int64_t mi = ((o.mn[0] > 1 ? bt : 0) * o.mn[1] + (o.mn[1] > 1 ? h : 0)) * o.mn[2] * o.mn[3] +
                                         (o.mn[2] > 1 ? q0 + i : 0) * o.mn[3] + (o.mn[3] > 1 ? k0 + j : 0);
                            if (o.mask == 1) x += o.maskv[(size_t)mi];
                            else if (o.maskv[(size_t)mi] == 0) x = -INFINITY;
                        }
                    }
                    s[(size_t)j] = x;
                    if (x > mx) mx = x;
                }
                if (mx == -INFINITY) continue;
                double sum = 0;
                for (int64_t j = 0; j < vk; j++) { s[(size_t)j] = exp(s[(size_t)j] - mx); sum += s[(size_t)j]; }
                double *orow = &out[(size_t)(((bt * Hq + h) * Lq + q0 + i) * Dv)];
                for (int64_t j = 0; j < vk; j++)
                    if (s[(size_t)j] != 0)
                        for (int64_t d = 0; d < Dv; d++)
                            orow[d] += s[(size_t)j] / sum * (double)v.h[(size_t)((((bt * Hkv + h / G) * Lk) + k0 + j) * Dv + d)];
                lse[(size_t)((bt * Hq + h) * Lq + q0 + i)] = mx + log(sum);
            }
    }
}

/* Compares got with ref: every element finite (NaN never passes), relative
 * L2 <= tol and max |err| <= 8 tol max|ref| (+ a floor for tiny refs);
 * elements whose reference is exactly 0 because their row sees no key must
 * be exactly 0. Returns 1 when it passes. */
static int compare(const std::vector<float> &got, const std::vector<double> &ref, double tol, double *rel_out)
{
    double num = 0, den = 0, amax = 0, emax = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        if (!(fabsf(got[i]) <= 3.4e38f)) { *rel_out = NAN; return 0; }
        double e = fabs((double)got[i] - ref[i]);
        num += e * e; den += ref[i] * ref[i];
        amax = fmax(amax, fabs(ref[i])); emax = fmax(emax, e);
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    *rel_out = rel;
    return rel <= tol && emax <= 8 * tol * amax + 1e-6;
}

static int lse_ok(const std::vector<float> &got, const std::vector<double> &ref, double tol)
{
    for (size_t i = 0; i < ref.size(); i++) {
        if (ref[i] == -INFINITY) { if (got[i] != -INFINITY) return 0; continue; }
        if (!(fabs((double)got[i] - ref[i]) <= tol * (1 + fabs(ref[i])))) return 0;
    }
    return 1;
}

static double tol_for(int dt, int odt, int mma)
{
    double t = dt == SDPA_F32 ? 2e-5 : dt == SDPA_F16 ? 2e-3 : 1.6e-2;
    if (!mma && dt != SDPA_F32) t = dt == SDPA_F16 ? 1e-4 : 1e-4; /* fp32 arithmetic on exact inputs */
    if (odt == SDPA_F16) t = fmax(t, 1.2e-3);
    if (odt == SDPA_BF16) t = fmax(t, 8e-3);
    return t;
}

static int g_quick = 0;
static int g_wg = 0; /* the wgmma kernel runs here (sdpa__cu_wg_ok) */

/* One attention case; returns 1 on pass. */
static void run_case(const char *name, int dt, int odt, int kernel, int64_t B, int64_t Hq, int64_t Hkv, int64_t Lq, int64_t Lk,
                     int64_t D, int64_t Dv, int pad, Opt &o, int with_lse, int cpu_compare)
{
    Tens q, k, v, out, mask;
    q.make(dt, B, Hq, Lq, D, pad, -1, 1);
    k.make(dt, B, Hkv, Lk, D, pad, -1, 1);
    if (g_kofs) { /* outlier channels, as real K has */
        for (size_t i = 0; i < k.h.size(); i++) k.h[i] = round_to(k.h[i] * (*g_kmul)[i % (size_t)D] + (*g_kofs)[i % (size_t)D], dt);
        k.upload();
    }
    v.make(dt, B, Hkv, Lk, Dv, pad, -1, 1);
    out.make(odt, B, Hq, Lq, Dv, g_opad, 0, 0);
    out.poison();
    sdpa_params p;
    memset(&p, 0, sizeof p);
    char err[256] = "";
    p.errbuf = err; p.errbuf_size = sizeof err;
    p.causal = (sdpa_causal)o.causal; p.window = o.window; p.window_left = o.wl; p.window_right = o.wr;
    p.scale = o.scale; p.softcap = o.softcap;
    p.precision = g_prec;
    if (!o.alibi.empty()) p.alibi_slopes = o.alibi.data();
    sdpa_tensor mt, qt = q.t(), kt = k.t(), vt = v.t(), ot = out.t();
    if (o.mask) {
        int mdt = o.mask == 1 ? SDPA_F32 : SDPA_BOOL;
        o.maskv.resize((size_t)(o.mn[0] * o.mn[1] * o.mn[2] * o.mn[3]));
        std::vector<char> mb(o.maskv.size() * (mdt == SDPA_F32 ? 4 : 1));
        for (size_t i = 0; i < o.maskv.size(); i++) {
            if (mdt == SDPA_F32) { o.maskv[i] = urand() < 0.1 ? -INFINITY : (float)(urand() * 2 - 1); memcpy(&mb[i * 4], &o.maskv[i], 4); }
            else { o.maskv[i] = urand() < 0.3 ? 0.0f : 1.0f; mb[i] = (char)(o.maskv[i] != 0); }
        }
        CU(cudaMalloc(&mask.d, mb.size() + 16));
        CU(cudaMemcpy(mask.d, mb.data(), mb.size(), cudaMemcpyHostToDevice));
        mt.data = mask.d; mt.dtype = (sdpa_dtype)mdt;
        for (int i = 0; i < 4; i++) { mt.shape[i] = o.mn[i]; mt.stride[i] = 0; }
        p.mask = &mt;
    }
    if (!o.sq.empty()) p.seqlens_q = o.sq.data();
    if (!o.skv.empty()) p.seqlens_kv = o.skv.data();
    if (!o.cuq.empty()) { p.cu_seqlens_q = o.cuq.data(); p.cu_seqlens_kv = o.cuk.data(); p.num_seqs = (int64_t)o.cuq.size() - 1; }
    float *dlse = nullptr;
    size_t nl = (size_t)(B * Hq * Lq);
    if (with_lse) { CU(cudaMalloc(&dlse, nl * 4 + 4)); CU(cudaMemset(dlse, 0xff, nl * 4)); p.lse = dlse; }
    int want = sdpa_cuda_kernel_for(&qt, &kt, &vt, &ot, &p);
    int used = kernel ? kernel : want;
    int rc = sdpa_cuda_attention_kernel(&qt, &kt, &vt, &ot, &p, 0, (sdpa_cuda_kernel)kernel);
    CU(cudaDeviceSynchronize());
    CU(cudaGetLastError());
    CHECK(rc == SDPA_OK, "%s: rc %d (%s)", name, rc, err);
    if (rc != SDPA_OK) { if (dlse) cudaFree(dlse); return; }
    std::vector<double> ref, rlse;
    reference(q, k, v, o, ref, rlse);
    std::vector<float> got = out.down();
    double rel, tol = tol_for(dt, odt, used >= SDPA_CUDA_KERNEL_MMA);
    if (g_prec) tol = ref.size() < 256 ? 0.15 : 0.04; /* int8 Q.K^T: sdpa.h's int8 bounds (README) */
    int ok = compare(got, ref, tol, &rel);
    if (g_nobound) ok = rel == rel;
    g_last_rel = rel;
    /* rows that see no key: exactly zero */
    for (size_t i = 0; i < ref.size() && ok; i++)
        if (rlse[i / (size_t)(Dv ? Dv : 1)] == -INFINITY && Dv && got[i] != 0.0f) ok = 0;
    CHECK(ok, "%s [%s%s, in %d, out %d, B%lld Hq%lld Hkv%lld Lq%lld Lk%lld D%lld Dv%lld pad%d]: rel L2 %.3g > tol %.3g (or unwritten/nonzero empty rows)",
          name, used == SDPA_CUDA_KERNEL_WGMMA ? "wgmma" : used == SDPA_CUDA_KERNEL_MMA ? "mma" : "generic", g_prec ? " int8" : "", dt, odt, (long long)B, (long long)Hq, (long long)Hkv, (long long)Lq, (long long)Lk,
          (long long)D, (long long)Dv, pad, rel, tol);
    if (g_opad) CHECK(out.pad_intact(), "%s: wrote into out's row padding", name);
    if (with_lse) {
        std::vector<float> gl(nl);
        CU(cudaMemcpy(gl.data(), dlse, nl * 4, cudaMemcpyDeviceToHost));
        CHECK(lse_ok(gl, rlse, g_prec ? 0.1 : dt == SDPA_F32 ? 1e-5 : 2e-3), "%s: lse differs from the reference", name);
        cudaFree(dlse);
    }
    if (cpu_compare) { /* sdpa.h on the same values, F32 */
        sdpa_tensor hq, hk, hv, ho;
        std::vector<float> co(got.size());
        q.host_tensor(&hq); k.host_tensor(&hk); v.host_tensor(&hv);
        ho.data = co.data(); ho.dtype = SDPA_F32;
        for (int i = 0; i < 4; i++) { ho.shape[i] = out.n[i]; ho.stride[i] = 0; }
        sdpa_params cp = p;
        cp.lse = NULL;
        std::vector<char> hmask;
        sdpa_tensor hmt;
        if (o.mask) {
            hmask.resize(o.maskv.size() * (o.mask == 1 ? 4 : 1));
            CU(cudaMemcpy(hmask.data(), mask.d, hmask.size(), cudaMemcpyDeviceToHost));
            hmt = mt; hmt.data = hmask.data(); cp.mask = &hmt;
        }
        int crc = sdpa_attention(&hq, &hk, &hv, &ho, &cp);
        CHECK(crc == SDPA_OK, "%s: sdpa.h rc %d (%s)", name, crc, err);
        double crel;
        std::vector<double> cd(co.begin(), co.end());
        CHECK(compare(got, cd, tol * 1.5, &crel), "%s: differs from sdpa.h's CPU result: rel L2 %.3g", name, crel);
    }
    g_pass += 0;
}

static void host_checks(void)
{
    /* validation needs no device: fake pointers are never touched on error */
    char *fake = (char *)(uintptr_t)0x10000000;
    sdpa_tensor q = {fake, SDPA_BF16, {1, 4, 16, 64}, {0}}, k = {fake + (1 << 20), SDPA_BF16, {1, 2, 16, 64}, {0}},
                v = {fake + (2 << 20), SDPA_BF16, {1, 2, 16, 64}, {0}}, o = {fake + (3 << 20), SDPA_BF16, {1, 4, 16, 64}, {0}};
    sdpa_params p;
    char err[256];
    memset(&p, 0, sizeof p);
    p.errbuf = err; p.errbuf_size = sizeof err;
    /* the tensor-core kernel AUTO picks where no option needs the sm_80 one:
     * wgmma on a compute capability 9.0 GPU with this program built for
     * sm_90a, at every head dim and length */
    const int tc = g_wg ? SDPA_CUDA_KERNEL_WGMMA : SDPA_CUDA_KERNEL_MMA;
    CHECK(sdpa_cuda_kernel_for(&q, &k, &v, &o, &p) == tc, "bf16 d64, 16 keys: the tensor-core kernel (%d)", tc);
    {
        sdpa_params ps = p;
        ps.softcap = 5.0f;
        CHECK(sdpa_cuda_kernel_for(&q, &k, &v, &o, &ps) == SDPA_CUDA_KERNEL_MMA, "softcap: the mma.sync kernel");
        CHECK(sdpa_cuda_attention_kernel(&q, &k, &v, &o, &ps, 0, SDPA_CUDA_KERNEL_WGMMA) == SDPA_ERR_PATH, "forcing wgmma with softcap");
        ps = p;
        ps.scale = -0.5f;
        CHECK(sdpa_cuda_kernel_for(&q, &k, &v, &o, &ps) == SDPA_CUDA_KERNEL_MMA, "negative scale: the mma.sync kernel");
        sdpa_tensor q2 = q, k2 = k, v2 = v, o2 = o;
        q2.shape[3] = k2.shape[3] = v2.shape[3] = o2.shape[3] = 256;
        CHECK(sdpa_cuda_kernel_for(&q2, &k2, &v2, &o2, &p) == tc, "head_dim 256: the tensor-core kernel (%d)", tc);
        q2.shape[3] = k2.shape[3] = v2.shape[3] = o2.shape[3] = 128;
        CHECK(sdpa_cuda_kernel_for(&q2, &k2, &v2, &o2, &p) == tc, "head_dim 128: the tensor-core kernel (%d)", tc);
        if (!g_wg)
            CHECK(sdpa_cuda_attention_kernel(&q, &k, &v, &o, &p, 0, SDPA_CUDA_KERNEL_WGMMA) == SDPA_ERR_PATH,
                  "forcing wgmma without a device that runs it");
    }
    sdpa_tensor q32 = q, k32 = k, v32 = v;
    q32.dtype = k32.dtype = v32.dtype = SDPA_F32;
    CHECK(sdpa_cuda_kernel_for(&q32, &k32, &v32, &o, &p) == SDPA_CUDA_KERNEL_GENERIC, "F32 takes the generic kernel");
    CHECK(sdpa_cuda_attention_kernel(&q32, &k32, &v32, &o, &p, 0, SDPA_CUDA_KERNEL_MMA) == SDPA_ERR_PATH, "forcing mma on F32");
    CHECK(sdpa_cuda_attention_kernel(&q32, &k32, &v32, &o, &p, 0, SDPA_CUDA_KERNEL_WGMMA) == SDPA_ERR_PATH, "forcing wgmma on F32");
    CHECK(sdpa_cuda_attention_kernel(&q, &k, &v, &o, &p, 0, (sdpa_cuda_kernel)4) == SDPA_ERR_PATH, "kernel 4");
    sdpa_tensor qs = q; qs.stride[0] = 4 * 16 * 68; qs.stride[1] = 16 * 68; qs.stride[2] = 68; qs.stride[3] = 1;
    CHECK(sdpa_cuda_kernel_for(&qs, &k, &v, &o, &p) == SDPA_CUDA_KERNEL_GENERIC, "row stride 68 (not 16-byte rows) -> generic");
    {   /* 2^30 keys (rows broadcast through stride 0): past the tensor-core kernel's int positions */
        sdpa_tensor kl = k, vl = v;
        kl.shape[2] = vl.shape[2] = (int64_t)1 << 30;
        kl.stride[0] = kl.stride[1] = kl.stride[2] = 0; kl.stride[3] = 1;
        vl.stride[0] = vl.stride[1] = vl.stride[2] = 0; vl.stride[3] = 1;
        CHECK(sdpa_cuda_kernel_for(&q, &kl, &vl, &o, &p) == SDPA_CUDA_KERNEL_GENERIC, "2^30 keys -> generic");
        kl.shape[2] = vl.shape[2] = ((int64_t)1 << 30) - 1;
        CHECK(sdpa_cuda_kernel_for(&q, &kl, &vl, &o, &p) == tc, "2^30 - 1 keys -> tensor cores (%d)", tc);
    }
    CHECK(sdpa_cuda_attention(NULL, &k, &v, &o, &p, 0) == SDPA_ERR_NULL, "NULL q");
    CHECK(sdpa_cuda_attention(&q32, &k, &v, &o, &p, 0) == SDPA_ERR_DTYPE, "mixed dtypes");
    sdpa_tensor bad = k; bad.shape[3] = 32;
    CHECK(sdpa_cuda_attention(&q, &bad, &v, &o, &p, 0) == SDPA_ERR_SHAPE, "head_dim mismatch");
    bad = k; bad.shape[1] = 3; sdpa_tensor badv = v; badv.shape[1] = 3;
    CHECK(sdpa_cuda_attention(&q, &bad, &badv, &o, &p, 0) == SDPA_ERR_HEADS, "4 q heads over 3 kv heads");
    sdpa_tensor big = q; big.shape[3] = 320; sdpa_tensor bigk = k; bigk.shape[3] = 320;
    CHECK(sdpa_cuda_attention(&big, &bigk, &v, &o, &p, 0) == SDPA_ERR_SHAPE, "head_dim 320 > 256");
    bad = o; bad.stride[0] = 1; bad.stride[1] = 1; bad.stride[2] = 1; bad.stride[3] = 1;
    CHECK(sdpa_cuda_attention(&q, &k, &v, &bad, &p, 0) == SDPA_ERR_STRIDE, "overlapping out rows");
    bad = o; bad.stride[3] = 2; bad.stride[2] = 128; bad.stride[1] = 2048; bad.stride[0] = 8192;
    CHECK(sdpa_cuda_attention(&q, &k, &v, &bad, &p, 0) == SDPA_ERR_STRIDE, "stride[3] != 1");
    bad = o; bad.data = fake;
    CHECK(sdpa_cuda_attention(&q, &k, &v, &bad, &p, 0) == SDPA_ERR_ALIAS, "out overlaps q");
    bad = q; bad.shape[2] = INT64_MAX / 2; bad.shape[3] = 64;
    CHECK(sdpa_cuda_attention(&bad, &k, &v, &o, &p, 0) == SDPA_ERR_OVERFLOW || sdpa_cuda_attention(&bad, &k, &v, &o, &p, 0) == SDPA_ERR_SHAPE,
          "huge Lq overflows");
    sdpa_params pp = p;
    pp.scale = NAN;
    CHECK(sdpa_cuda_attention(&q, &k, &v, &o, &pp, 0) == SDPA_ERR_PARAM, "NaN scale");
    pp = p; pp.softcap = -1;
    CHECK(sdpa_cuda_attention(&q, &k, &v, &o, &pp, 0) == SDPA_ERR_PARAM, "negative softcap");
    pp = p; pp.causal = (sdpa_causal)7;
    CHECK(sdpa_cuda_attention(&q, &k, &v, &o, &pp, 0) == SDPA_ERR_PARAM, "causal 7");
    pp = p; pp.precision = 5;
    CHECK(sdpa_cuda_attention(&q, &k, &v, &o, &pp, 0) == SDPA_ERR_PARAM, "precision 5 accepted");
    pp = p; pp.precision = SDPA_PRECISION_INT8_QK;
    CHECK(sdpa_cuda_kernel_for(&q, &k, &v, &o, &pp) == SDPA_CUDA_KERNEL_MMA, "int8 mode, bf16 d64: the tensor-core kernel");
    CHECK(sdpa_cuda_attention_kernel(&q, &k, &v, &o, &pp, 0, SDPA_CUDA_KERNEL_WGMMA) == SDPA_ERR_PATH, "forcing wgmma in int8 mode");
    CHECK(sdpa_cuda_kernel_for(&q32, &k32, &v32, &o, &pp) == SDPA_CUDA_KERNEL_GENERIC, "int8 mode, F32: the generic kernel");
    {
        sdpa_tensor qi = q; qi.dtype = SDPA_I8;
        CHECK(sdpa_cuda_attention(&qi, &k, &v, &o, &pp, 0) == SDPA_ERR_DTYPE, "SDPA_I8 q refused (pre-quantised input is CPU-only)");
        sdpa_tensor bq = q, bk = k; /* B Hq Lq rows + B Hkv Lk rows of int8 scratch: the size overflows */
        bq.shape[0] = bk.shape[0] = ((int64_t)1 << 40); bq.stride[0] = bk.stride[0] = 0;
        bq.shape[2] = bk.shape[2] = ((int64_t)1 << 20);
        sdpa_tensor bv = bk, bo = bq; bv.data = v.data; bo.data = o.data;
        bq.stride[1] = bq.stride[2] = bq.stride[3] = 0; bk.stride[1] = bk.stride[2] = bk.stride[3] = 0;
        int rc = sdpa_cuda_attention(&bq, &bk, &bv, &bo, &pp, 0);
        CHECK(rc == SDPA_ERR_OVERFLOW || rc == SDPA_ERR_SHAPE || rc == SDPA_ERR_STRIDE, "int8 scratch of 2^60 rows: rc %d", rc);
    }
    int64_t sl[1] = {17};
    pp = p; pp.seqlens_q = sl;
    CHECK(sdpa_cuda_attention(&q, &k, &v, &o, &pp, 0) == SDPA_ERR_SEQLENS, "seqlens_q past Lq");
    int64_t cq[3] = {0, 9, 5}, ck[3] = {0, 4, 8};
    pp = p; pp.cu_seqlens_q = cq; pp.cu_seqlens_kv = ck; pp.num_seqs = 2;
    CHECK(sdpa_cuda_attention(&q, &k, &v, &o, &pp, 0) == SDPA_ERR_SEQLENS, "cu_seqlens decrease");
    sdpa_tensor m = {fake + (5 << 20), SDPA_F32, {1, 4, 15, 16}, {0}};
    pp = p; pp.mask = &m;
    CHECK(sdpa_cuda_attention(&q, &k, &v, &o, &pp, 0) == SDPA_ERR_MASK, "mask Lq 15");
    pp = p; pp.lse = (float *)(void *)(fake + (3 << 20) + 64);
    CHECK(sdpa_cuda_attention(&q, &k, &v, &o, &pp, 0) == SDPA_ERR_ALIAS, "lse overlaps out");
    CHECK(strcmp(sdpa_cuda_strerror(SDPA_ERR_CUDA), "a CUDA call failed") == 0, "SDPA_ERR_CUDA words");
    CHECK(strlen(sdpa_cuda_strerror(SDPA_ERR_ALIAS)) > 0 && strcmp(sdpa_cuda_strerror(-999), "unknown error") == 0, "strerror");
    sdpa_kv_cache_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.num_seqs = 1; cfg.kv_heads = 2; cfg.head_dim = 64; cfg.dtype = SDPA_I8; cfg.max_pages = 0;
    sdpa_cuda_kv_cache *c = (sdpa_cuda_kv_cache *)(uintptr_t)1;
    CHECK(sdpa_cuda_kv_cache_create(&cfg, &c) == SDPA_ERR_PARAM && c == NULL, "device cache needs max_pages");
    cfg.max_pages = 4; cfg.dtype = SDPA_BOOL;
    CHECK(sdpa_cuda_kv_cache_create(&cfg, &c) == SDPA_ERR_DTYPE, "BOOL cache");
    /* the checker itself: a corrupted element or a NaN must fail */
    std::vector<double> r(100);
    std::vector<float> g(100);
    for (int i = 0; i < 100; i++) { r[(size_t)i] = urand() - 0.5; g[(size_t)i] = (float)r[(size_t)i]; }
    double rel;
    CHECK(compare(g, r, 1e-5, &rel), "checker passes an exact copy");
    g[37] += 0.05f;
    CHECK(!compare(g, r, 1e-3, &rel), "checker flags one corrupted element");
    g[37] = NAN;
    CHECK(!compare(g, r, 1e9, &rel), "checker flags NaN whatever the tolerance");
}

static void attention_cases(void)
{
    const int dts[2] = {SDPA_BF16, SDPA_F16};
    const int64_t dims[] = {64, 96, 128, 256, 40, 72, 8};
    const int64_t lens[][2] = {{1, 1}, {17, 17}, {65, 130}, {130, 65}, {200, 257}, {1, 300}, {128, 128}};
    int nd = g_quick ? 4 : 7, nl = g_quick ? 4 : 7, ci = 0;
    for (int a = 0; a < 2; a++)
        for (int di = 0; di < nd; di++)
            for (int li = 0; li < nl; li++) {
                Opt o;
                o.causal = ci++ % 3;
                run_case("tc", dts[a], dts[a], 0, 2, 4, 2, lens[li][0], lens[li][1], dims[di], dims[di], 0, o, 1, li == 2);
                /* where wgmma runs, both tensor-core kernels forced on the same shape */
                if (g_wg) {
                    run_case("mma forced", dts[a], dts[a], SDPA_CUDA_KERNEL_MMA, 2, 4, 2, lens[li][0], lens[li][1], dims[di], dims[di], 0, o, 0, 0);
                    run_case("wgmma forced", dts[a], dts[a], SDPA_CUDA_KERNEL_WGMMA, 2, 4, 2, lens[li][0], lens[li][1], dims[di], dims[di], 0, o,
                             1, 0);
                }
            }
    /* many key tiles (both warpgroups' stages wrap around), GQA, odd lengths;
     * wgmma forced where it runs */
    {
        const int kf = g_wg ? SDPA_CUDA_KERNEL_WGMMA : 0;
        const int64_t ld[][3] = {{1031, 1031, 128}, {700, 1500, 64}, {1500, 700, 256}, {333, 2049, 40}, {900, 900, 200}};
        for (int li = 0; li < (g_quick ? 2 : 5); li++)
            for (int c = 0; c < 3; c++) {
                Opt o;
                o.causal = c;
                run_case("tc long", SDPA_BF16, SDPA_BF16, kf, 1, 4, 2, ld[li][0], ld[li][1], ld[li][2], ld[li][2], 0, o, 1, c == 1);
                if (c == 2) { o.window = 1; o.wl = 300; o.wr = 40; run_case("tc long window 300/40", SDPA_F16, SDPA_F16, kf, 1, 4, 1, ld[li][0], ld[li][1], ld[li][2], ld[li][2], 0, o, 1, 1); }
            }
    }
    /* the generic kernel: F32 (and forced for F16), odd head dims, Dv != D */
    const int64_t gd[][2] = {{13, 13}, {64, 64}, {128, 128}, {256, 256}, {40, 24}, {1, 5}};
    for (int di = 0; di < (g_quick ? 3 : 6); di++)
        for (int li = 0; li < (g_quick ? 3 : 6); li++) {
            Opt o;
            o.causal = ci++ % 3;
            run_case("generic f32", SDPA_F32, SDPA_F32, 0, 2, 4, 1, lens[li][0], lens[li][1], gd[di][0], gd[di][1], 0, o, 1, li == 3);
            if (di < 3) run_case("generic f16 forced", SDPA_F16, SDPA_F32, SDPA_CUDA_KERNEL_GENERIC, 1, 2, 2, lens[li][0], lens[li][1],
                                 gd[di][0], gd[di][1], 0, o, 1, 0);
        }
    /* options, on every kernel: AUTO's tensor-core choice (wgmma where it
     * takes the case), the generic one, and mma.sync forced where AUTO took
     * wgmma for some */
    for (int kern = 0; kern < 3; kern++) {
        if (kern == 2 && !g_wg) continue;
        int dt = kern == 1 ? SDPA_F32 : SDPA_BF16;
        int64_t D = kern == 1 ? 72 : 128, Lq = g_quick ? 70 : 150, Lk = g_quick ? 90 : 190;
        const char *kn = kern == 1 ? "generic" : kern == 2 ? "mma forced" : "tc";
        const int kf = kern == 2 ? SDPA_CUDA_KERNEL_MMA : 0;
        char name[128];
        for (int c = 0; c < 3; c++) {
            Opt o; o.causal = c; o.window = 1; o.wl = 20; o.wr = 5;
            snprintf(name, sizeof name, "%s window 20/5 causal %d", kn, c);
            run_case(name, dt, dt, kf, 2, 4, 2, Lq, Lk, D, D, 0, o, 1, 1);
            Opt w; w.causal = c; w.window = 1; w.wl = -1; w.wr = 0;
            snprintf(name, sizeof name, "%s window -1/0 causal %d", kn, c);
            run_case(name, dt, dt, kf, 1, 2, 1, Lq, Lk, D, D, 0, w, 1, 0);
        }
        { Opt o; o.softcap = 5.0f; o.scale = 0.3f; snprintf(name, sizeof name, "%s softcap 5 scale 0.3", kn);
          run_case(name, dt, dt, kf, 2, 4, 2, Lq, Lk, D, D, 0, o, 1, 1); }
        { Opt o; o.causal = SDPA_CAUSAL_BOTTOM_RIGHT; for (int h = 0; h < 4; h++) o.alibi.push_back(0.05f * (h + 1));
          snprintf(name, sizeof name, "%s alibi", kn); run_case(name, dt, dt, kf, 2, 4, 2, Lq, Lk, D, D, 0, o, 1, 1); }
        { Opt o; o.mask = 1; o.mn[0] = 2; o.mn[1] = 1; o.mn[2] = Lq; o.mn[3] = Lk;
          snprintf(name, sizeof name, "%s F32 mask [B,1,Lq,Lk]", kn); run_case(name, dt, dt, kf, 2, 4, 2, Lq, Lk, D, D, 0, o, 1, 1); }
        { Opt o; o.mask = 2; o.causal = 1; o.mn[0] = 1; o.mn[1] = 4; o.mn[2] = Lq; o.mn[3] = Lk;
          snprintf(name, sizeof name, "%s BOOL mask [1,H,Lq,Lk] causal", kn); run_case(name, dt, dt, kf, 2, 4, 2, Lq, Lk, D, D, 0, o, 1, 1); }
        { Opt o; o.mask = 1; o.mn[0] = 1; o.mn[1] = 1; o.mn[2] = 1; o.mn[3] = Lk;
          snprintf(name, sizeof name, "%s F32 mask [1,1,1,Lk]", kn); run_case(name, dt, dt, kf, 2, 4, 2, Lq, Lk, D, D, 0, o, 1, 0); }
        { Opt o; o.causal = 2; o.sq = {Lq - 3, 1}; o.skv = {Lk, 7};
          snprintf(name, sizeof name, "%s seqlens causal", kn); run_case(name, dt, dt, kf, 2, 4, 2, Lq, Lk, D, D, 0, o, 1, 1); }
        { Opt o; o.causal = 1; o.sq = {0, Lq}; o.skv = {Lk, 0};
          snprintf(name, sizeof name, "%s seqlens 0", kn); run_case(name, dt, dt, kf, 2, 4, 2, Lq, Lk, D, D, 0, o, 1, 1); }
        for (int c = 0; c < 3; c++) {
            Opt o; o.causal = c; o.cuq = {0, 5, 5, Lq / 2, Lq - 9}; o.cuk = {0, 40, 41, 41, Lk - 1};
            snprintf(name, sizeof name, "%s packed cu_seqlens causal %d", kn, c);
            run_case(name, dt, dt, kf, 1, 4, 2, Lq, Lk, D, D, 0, o, 1, 1);
        }
        { Opt o; o.causal = 2; snprintf(name, sizeof name, "%s strided rows (pad 8)", kn);
          run_case(name, dt, dt, kf, 2, 4, 2, Lq, Lk, D, D, 8, o, 1, 0); }
        if (kern != 2) { /* rows of 16-byte multiples only on the tensor cores: generic */
          Opt o; o.causal = 1; snprintf(name, sizeof name, "%s strided rows (pad 3)", kn);
          run_case(name, dt, dt, kf, 2, 4, 2, Lq, Lk, D, D, 3, o, 1, 0); }
        { Opt o; o.causal = 2; snprintf(name, sizeof name, "%s MQA 8/1", kn);
          run_case(name, dt, dt, kf, 1, 8, 1, Lq, Lk, D, D, 0, o, 1, 0); }
        { Opt o; snprintf(name, sizeof name, "%s out F32", kn);
          run_case(name, kern == 1 ? SDPA_F16 : SDPA_BF16, SDPA_F32, kf, 1, 2, 2, Lq, Lk, D, D, 0, o, 1, 0); }
    }
    /* out's layout: the tensor-core kernels store O in 16-byte row chunks
     * through shared memory where out has q's dtype and 16-byte rows (pad 8),
     * element by element otherwise (pad 3, another dtype); nothing lands in
     * the padding; on every tensor-core kernel, at head dims 64 and 256 */
    for (int kern = 0; kern < 3; kern++) {
        if (kern == 2 && !g_wg) continue;
        const int kf = kern == 0 ? 0 : kern == 1 ? SDPA_CUDA_KERNEL_MMA : SDPA_CUDA_KERNEL_WGMMA;
        const char *kn = kern == 0 ? "tc" : kern == 1 ? "mma forced" : "wgmma forced";
        const int64_t D = kern == 2 ? 256 : 64;
        char name[128];
        for (int pad = 3; pad <= 8; pad += 5) {
            Opt o; o.causal = pad == 8 ? 2 : 0;
            g_opad = pad;
            snprintf(name, sizeof name, "%s out rows pad %d", kn, pad);
            run_case(name, SDPA_BF16, SDPA_BF16, kf, 2, 4, 2, 130, 200, D, D, 0, o, 1, 0);
            snprintf(name, sizeof name, "%s out rows pad %d hd 128", kn, pad);
            run_case(name, SDPA_F16, SDPA_F16, kf, 1, 2, 1, 257, 130, 128, 128, 8, o, 0, 0);
            g_opad = 0;
        }
        Opt o; o.causal = 1;
        snprintf(name, sizeof name, "%s bf16 in, f16 out", kn);
        run_case(name, SDPA_BF16, SDPA_F16, kf, 2, 4, 2, 130, 200, D, D, 0, o, 1, 0);
    }
    /* large logits: exp would overflow without the max subtraction */
    {
        Opt o; o.scale = 60.0f; o.causal = 2;
        run_case("mma large logits", SDPA_F16, SDPA_F16, 0, 1, 2, 1, 100, 100, 64, 64, 0, o, 1, 1);
        if (g_wg) run_case("wgmma large logits", SDPA_F16, SDPA_F16, SDPA_CUDA_KERNEL_WGMMA, 1, 2, 1, 300, 300, 128, 128, 0, o, 1, 1);
        run_case("generic large logits", SDPA_F32, SDPA_F32, 0, 1, 2, 1, 100, 100, 64, 64, 0, o, 1, 1);
    }
}

/* ---- int8 mode (params.precision) ---- */
static void int8_cases(void)
{
    const int64_t dims[] = {64, 96, 128, 256, 40};
    const int64_t lens[][2] = {{1, 1}, {17, 17}, {130, 65}, {200, 257}, {64, 640}};
    char name[160];
    int ci = 0;
    g_prec = SDPA_PRECISION_INT8_QK;
    for (int a = 0; a < 2; a++)
        for (int di = 0; di < (g_quick ? 3 : 5); di++)
            for (int li = 0; li < (g_quick ? 3 : 5); li++) {
                Opt o;
                o.causal = ci++ % 3;
                snprintf(name, sizeof name, "int8 mma D%lld causal %d", (long long)dims[di], o.causal);
                run_case(name, a ? SDPA_F16 : SDPA_BF16, a ? SDPA_F16 : SDPA_BF16, 0, 2, 4, 2, lens[li][0], lens[li][1], dims[di],
                         dims[di], 0, o, 1, li == 3);
            }
    /* the generic kernel in int8 mode: F32, odd head dims, Dv != D, forced */
    const int64_t gd[][2] = {{13, 13}, {64, 64}, {256, 256}, {40, 24}};
    for (int di = 0; di < 4; di++)
        for (int li = 1; li < (g_quick ? 3 : 5); li++) {
            Opt o;
            o.causal = ci++ % 3;
            snprintf(name, sizeof name, "int8 generic f32 D%lld/%lld", (long long)gd[di][0], (long long)gd[di][1]);
            run_case(name, SDPA_F32, SDPA_F32, 0, 2, 4, 1, lens[li][0], lens[li][1], gd[di][0], gd[di][1], 0, o, 1, li == 3);
        }
    { Opt o; o.causal = 2; run_case("int8 generic forced bf16", SDPA_BF16, SDPA_F32, SDPA_CUDA_KERNEL_GENERIC, 1, 2, 2, 150, 190, 128, 128, 0, o, 1, 1); }
    /* options (both instantiations of the tensor-core kernel: extras and not) */
    {
        const int64_t D = 128, Lq = g_quick ? 70 : 150, Lk = g_quick ? 90 : 190;
        const int dt = SDPA_BF16;
        for (int c = 0; c < 3; c++) {
            Opt o; o.causal = c; o.window = 1; o.wl = 20; o.wr = 5;
            snprintf(name, sizeof name, "int8 window 20/5 causal %d", c);
            run_case(name, dt, dt, 0, 2, 4, 2, Lq, Lk, D, D, 0, o, 1, 1);
        }
        { Opt o; o.softcap = 5.0f; o.scale = 0.3f; run_case("int8 softcap 5 scale 0.3", dt, dt, 0, 2, 4, 2, Lq, Lk, D, D, 0, o, 1, 1); }
        { Opt o; o.scale = -0.05f; o.causal = 1; run_case("int8 negative scale", dt, dt, 0, 2, 4, 2, Lq, Lk, D, D, 0, o, 1, 1); }
        { Opt o; o.causal = SDPA_CAUSAL_BOTTOM_RIGHT; for (int h = 0; h < 4; h++) o.alibi.push_back(0.05f * (h + 1));
          run_case("int8 alibi", dt, dt, 0, 2, 4, 2, Lq, Lk, D, D, 0, o, 1, 1); }
        { Opt o; o.mask = 1; o.mn[0] = 2; o.mn[1] = 1; o.mn[2] = Lq; o.mn[3] = Lk;
          run_case("int8 F32 mask", dt, dt, 0, 2, 4, 2, Lq, Lk, D, D, 0, o, 1, 1); }
        { Opt o; o.mask = 2; o.causal = 1; o.mn[0] = 1; o.mn[1] = 4; o.mn[2] = Lq; o.mn[3] = Lk;
          run_case("int8 BOOL mask causal", dt, dt, 0, 2, 4, 2, Lq, Lk, D, D, 0, o, 1, 1); }
        { Opt o; o.causal = 2; o.sq = {Lq - 3, 1}; o.skv = {Lk, 7};
          run_case("int8 seqlens causal", dt, dt, 0, 2, 4, 2, Lq, Lk, D, D, 0, o, 1, 1); }
        { Opt o; o.causal = 1; o.sq = {0, Lq}; o.skv = {Lk, 0};
          run_case("int8 seqlens 0", dt, dt, 0, 2, 4, 2, Lq, Lk, D, D, 0, o, 1, 1); }
        for (int c = 0; c < 3; c++) {
            Opt o; o.causal = c; o.cuq = {0, 5, 5, Lq / 2, Lq - 9}; o.cuk = {0, 40, 41, 41, Lk - 1};
            snprintf(name, sizeof name, "int8 packed cu_seqlens causal %d", c);
            run_case(name, dt, dt, 0, 1, 4, 2, Lq, Lk, D, D, 0, o, 1, 1);
        }
        { Opt o; o.causal = 2; run_case("int8 strided rows (pad 8)", SDPA_F16, SDPA_F16, 0, 2, 4, 2, Lq, Lk, D, D, 8, o, 1, 1); }
        { Opt o; o.causal = 2; run_case("int8 MQA 8/1", dt, dt, 0, 1, 8, 1, Lq, Lk, D, D, 0, o, 1, 0); }
        { Opt o; run_case("int8 out F32", dt, SDPA_F32, 0, 1, 2, 2, Lq, Lk, D, D, 0, o, 1, 0); }
        for (int pad = 3; pad <= 8; pad += 5) {
            Opt o; o.causal = 1;
            g_opad = pad;
            snprintf(name, sizeof name, "int8 out rows pad %d", pad);
            run_case(name, dt, dt, 0, 1, 4, 2, Lq, Lk, D, D, 0, o, 1, 0);
            g_opad = 0;
        }
    }
    /* Outlier channels (1 in 16 offset by +-(20..100) with 1-3x the spread,
     * the rest offset in +-0.5): smoothing keeps them out of the scales; the
     * unsmoothed error must be at least 3x larger, which also shows Q.K^T
     * really runs on int8 (float products would not care). */
    {
        const int64_t D = 128;
        std::vector<float> ofs((size_t)D), mul((size_t)D);
        for (int64_t d = 0; d < D; d++) {
            int out = d % 16 == 5;
            ofs[(size_t)d] = out ? (float)((urand() < 0.5 ? -1 : 1) * (20 + 80 * urand())) : (float)(urand() - 0.5);
            mul[(size_t)d] = out ? (float)(1 + 2 * urand()) : 1.0f;
        }
        g_kofs = &ofs; g_kmul = &mul;
        const int kdt[2] = {SDPA_BF16, SDPA_F32};
        for (int kk = 0; kk < 2; kk++) {
            Opt o;
            o.scale = 0.02f; /* logits of a few units despite the offsets */
            g_prec = SDPA_PRECISION_INT8_QK;
            snprintf(name, sizeof name, "int8 outlier channels, smoothed (%s)", kk ? "generic f32" : "mma bf16");
            run_case(name, kdt[kk], kdt[kk], 0, 1, 2, 2, 256, g_quick ? 256 : 1024, D, D, 0, o, 1, 1);
            double sm = g_last_rel;
            g_prec = SDPA_PRECISION_INT8_QK_NOSMOOTH;
            g_rng ^= 0x5bd1e995u; /* fresh inputs, the same channel statistics */
            snprintf(name, sizeof name, "int8 outlier channels, not smoothed (%s)", kk ? "generic f32" : "mma bf16");
            g_nobound = 1; /* a large error is expected here: finite outputs and the ratio are checked */
            run_case(name, kdt[kk], kdt[kk], 0, 1, 2, 2, 256, g_quick ? 256 : 1024, D, D, 0, o, 0, 0);
            g_nobound = 0;
            double ns = g_last_rel;
            printf("int8 outlier channels (%s): rel. L2 smoothed %.4f, not smoothed %.4f\n", kk ? "generic f32" : "mma bf16", sm, ns);
            CHECK(ns >= 3 * sm, "int8 outliers (%s): not smoothed %.4f is not 3x smoothed %.4f", kk ? "generic" : "mma", ns, sm);
        }
        g_kofs = g_kmul = nullptr;
    }
    /* NaN in q's padding rows (past seqlens_q) and in k's (past seqlens_kv):
     * never seen, out = 0 and lse = -inf there, the other rows exact */
    for (int kern = 0; kern < 2; kern++) {
        const int64_t Lq = 80, Lk = 100, D = kern ? 40 : 128;
        const int dt = kern ? SDPA_F32 : SDPA_BF16;
        Tens q, k, v;
        Opt o; o.causal = 2; o.sq = {Lq - 20, Lq}; o.skv = {Lk, Lk - 30};
        q.make(dt, 2, 4, Lq, D, 0, -1, 1); k.make(dt, 2, 2, Lk, D, 0, -1, 1); v.make(dt, 2, 2, Lk, D, 0, -1, 1);
        for (int64_t h = 0; h < 4; h++)
            for (int64_t i = Lq - 20; i < Lq; i++) q.h[(size_t)((h * Lq + i) * D + i % D)] = NAN; /* batch 0 */
        for (int64_t h = 0; h < 2; h++)
            for (int64_t j = Lk - 30; j < Lk; j++) k.h[(size_t)(((2 + h) * Lk + j) * D + j % D)] = NAN; /* batch 1 */
        q.upload(); k.upload();
        Tens out; out.make(SDPA_F32, 2, 4, Lq, D, 0, 0, 0); out.poison();
        float *dl; CU(cudaMalloc(&dl, 2 * 4 * Lq * 4)); CU(cudaMemset(dl, 0xff, 2 * 4 * Lq * 4));
        sdpa_params p; memset(&p, 0, sizeof p);
        p.precision = SDPA_PRECISION_INT8_QK; p.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
        p.seqlens_q = o.sq.data(); p.seqlens_kv = o.skv.data(); p.lse = dl;
        sdpa_tensor qt = q.t(), kt = k.t(), vt = v.t(), ot = out.t();
        int rc = sdpa_cuda_attention(&qt, &kt, &vt, &ot, &p, 0);
        CU(cudaDeviceSynchronize());
        for (auto &x : q.h) if (x != x) x = 0; /* the reference never reads them either */
        for (auto &x : k.h) if (x != x) x = 0;
        std::vector<double> ref, rlse;
        reference(q, k, v, o, ref, rlse);
        std::vector<float> got = out.down(), gl((size_t)(2 * 4 * Lq));
        CU(cudaMemcpy(gl.data(), dl, gl.size() * 4, cudaMemcpyDeviceToHost));
        cudaFree(dl);
        double rel;
        int ok = rc == SDPA_OK && compare(got, ref, 0.04, &rel) && lse_ok(gl, rlse, 0.1);
        for (size_t i = 0; i < ref.size() && ok; i++)
            if (rlse[i / (size_t)D] == -INFINITY && got[i] != 0.0f) ok = 0;
        CHECK(ok, "int8 NaN in padding rows (%s): rc %d; out must match the reference, padding rows 0 / -inf",
              kern ? "generic" : "mma", rc);
    }
    /* the same call twice gives the same bytes (pre-pass sums in a fixed order) */
    for (int kern = 0; kern < 2; kern++) {
        Tens q, k, v, o1, o2;
        const int dt = kern ? SDPA_F32 : SDPA_BF16;
        q.make(dt, 2, 4, 300, 128, 0, -1, 1); k.make(dt, 2, 2, 700, 128, 0, -1, 1); v.make(dt, 2, 2, 700, 128, 0, -1, 1);
        o1.make(dt, 2, 4, 300, 128, 0, 0, 0); o2.make(dt, 2, 4, 300, 128, 0, 0, 0);
        sdpa_params p; memset(&p, 0, sizeof p);
        p.precision = SDPA_PRECISION_INT8_QK; p.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
        sdpa_tensor qt = q.t(), kt = k.t(), vt = v.t(), t1 = o1.t(), t2 = o2.t();
        int rc1 = sdpa_cuda_attention(&qt, &kt, &vt, &t1, &p, 0), rc2 = sdpa_cuda_attention(&qt, &kt, &vt, &t2, &p, 0);
        CU(cudaDeviceSynchronize());
        std::vector<char> b1(o1.bytes), b2(o2.bytes);
        CU(cudaMemcpy(b1.data(), o1.d, o1.bytes, cudaMemcpyDeviceToHost));
        CU(cudaMemcpy(b2.data(), o2.d, o2.bytes, cudaMemcpyDeviceToHost));
        CHECK(rc1 == SDPA_OK && rc2 == SDPA_OK && memcmp(b1.data(), b2.data(), b1.size() - 64) == 0,
              "int8 mode (%s) is not deterministic", kern ? "generic" : "mma");
    }
    /* a NaN key: rows that see it are NaN, rows that do not are untouched */
    for (int kern = 0; kern < 2; kern++) {
        const int64_t Lq = 96, Lk = 96, D = 64;
        Tens q, k, v, out;
        const int dt = kern ? SDPA_F32 : SDPA_BF16;
        q.make(dt, 1, 2, Lq, D, 0, -1, 1); k.make(dt, 1, 2, Lk, D, 0, -1, 1); v.make(dt, 1, 2, Lk, D, 0, -1, 1);
        out.make(SDPA_F32, 1, 2, Lq, D, 0, 0, 0);
        out.poison();
        k.h[(size_t)(50 * D + 7)] = NAN; /* head 0, key 50 */
        k.upload();
        sdpa_params p;
        memset(&p, 0, sizeof p);
        p.precision = SDPA_PRECISION_INT8_QK; p.causal = SDPA_CAUSAL_TOP_LEFT;
        sdpa_tensor qt = q.t(), kt = k.t(), vt = v.t(), ot = out.t();
        int rc = sdpa_cuda_attention(&qt, &kt, &vt, &ot, &p, 0);
        CU(cudaDeviceSynchronize());
        std::vector<float> got = out.down();
        int bad = rc != SDPA_OK;
        for (int64_t i = 0; i < Lq && !bad; i++)
            for (int64_t d = 0; d < D; d++) {
                float x = got[(size_t)(i * D + d)], y = got[(size_t)((Lq + i) * D + d)];
                if ((i < 50) != (x == x) || !(fabsf(y) <= 1.0f)) { bad = 1; break; }
            }
        CHECK(!bad, "int8 NaN key (%s): rc %d, rows before it must be finite, from it NaN, head 1 clean",
              kern ? "generic" : "mma", rc);
    }
    g_prec = 0;
}

/* ---- KV cache ---- */
/* kv heads H: 2 (GQA, 4 q heads each) or 8 (MHA); page sizes that are not a
 * multiple of the decode kernel's step make steps straddle pages */
static void kv_case(int st, int64_t D, int64_t Dv, int64_t ps, int qdt, int64_t H = 2, int64_t ntok = 0)
{
    char err[256] = "", cerr[256] = "";
    sdpa_kv_cache_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.num_seqs = 3; cfg.kv_heads = H; cfg.head_dim = D; cfg.head_dim_v = Dv; cfg.dtype = (sdpa_dtype)st; cfg.page_size = ps;
    cfg.kscale = SDPA_KV_KSCALE_TOKEN; /* the device cache's I8 keys: the CPU cache stores the same bytes then */
    cfg.errbuf = err; cfg.errbuf_size = sizeof err;
    sdpa_kv_cache *cc = NULL;
    sdpa_kv_cache_config ccfg = cfg;
    ccfg.errbuf = cerr;
    CHECK(sdpa_kv_cache_create(&ccfg, &cc) == SDPA_OK, "cpu cache: %s", cerr);
    const int64_t Hq = 8, G = Hq / H;
    int64_t total = ntok ? ntok : g_quick ? 900 : 6000;
    cfg.max_pages = (total + 3 * ps) / ps + 3;
    sdpa_cuda_kv_cache *gc = NULL;
    int rc = sdpa_cuda_kv_cache_create(&cfg, &gc);
    CHECK(rc == SDPA_OK, "device cache create: %d %s", rc, err);
    if (rc) { sdpa_kv_cache_destroy(cc); return; }
    const int64_t bytes0 = sdpa_cuda_kv_cache_bytes(gc); /* pages and tables: no call has taken scratch yet */
    /* appends: seq 0 one token, seq 1 two pieces, seq 2 a long one, truncated and extended */
    int64_t pieces[][2] = {{0, 1}, {1, 37}, {1, 100}, {2, total - 200}, {2, 30}};
    for (auto &pc : pieces) {
        Tens k, v;
        k.make(SDPA_F32, 1, H, pc[1], D, 0, -2, 2);
        v.make(SDPA_F16, 1, H, pc[1], Dv, 0, -1, 1);
        sdpa_tensor kt = k.t(), vt = v.t(), hk, hv;
        CHECK(sdpa_cuda_kv_cache_append(gc, pc[0], &kt, &vt, 0) == SDPA_OK, "append: %s", err);
        k.host_tensor(&hk); v.host_tensor(&hv);
        CHECK(sdpa_kv_cache_append(cc, pc[0], &hk, &hv) == SDPA_OK, "cpu append: %s", cerr);
        CU(cudaDeviceSynchronize());
        if (pc[0] == 2 && pc[1] > 100) {
            CHECK(sdpa_cuda_kv_cache_truncate(gc, 2, pc[1] - 77) == SDPA_OK, "truncate");
            CHECK(sdpa_kv_cache_truncate(cc, 2, pc[1] - 77) == SDPA_OK, "cpu truncate");
        }
    }
    {   /* capacity: all or nothing */
        Tens k, v;
        int64_t n = cfg.max_pages * ps;
        k.make(SDPA_F32, 1, H, n, D, 0, -1, 1); v.make(SDPA_F32, 1, H, n, Dv, 0, -1, 1);
        sdpa_tensor kt = k.t(), vt = v.t();
        int64_t before = sdpa_cuda_kv_cache_len(gc, 0);
        CHECK(sdpa_cuda_kv_cache_append(gc, 0, &kt, &vt, 0) == SDPA_ERR_CAPACITY && sdpa_cuda_kv_cache_len(gc, 0) == before,
              "append past max_pages refused, cache unchanged");
    }
    int64_t lens[3];
    for (int s = 0; s < 3; s++) {
        lens[s] = sdpa_cuda_kv_cache_len(gc, s);
        CHECK(lens[s] == sdpa_kv_cache_len(cc, s), "len of seq %d: %lld vs %lld", s, (long long)lens[s], (long long)sdpa_kv_cache_len(cc, s));
    }
    /* read: the stored bytes, dequantized, must equal sdpa.h's bit for bit */
    std::vector<std::vector<float>> ck(3), cv(3);
    int same = 1;
    for (int s = 0; s < 3; s++) {
        Tens k, v;
        k.make(SDPA_F32, 1, H, lens[s], D, 0, 0, 0); v.make(SDPA_F32, 1, H, lens[s], Dv, 0, 0, 0);
        k.poison(); v.poison();
        sdpa_tensor kt = k.t(), vt = v.t(), hk, hv;
        CHECK(sdpa_cuda_kv_cache_read(gc, s, 0, &kt, &vt, 0) == SDPA_OK, "read: %s", err);
        ck[s].resize(k.h.size()); cv[s].resize(v.h.size());
        hk.data = ck[s].data(); hk.dtype = SDPA_F32; hv.data = cv[s].data(); hv.dtype = SDPA_F32;
        for (int i = 0; i < 4; i++) { hk.shape[i] = k.n[i]; hv.shape[i] = v.n[i]; hk.stride[i] = hv.stride[i] = 0; }
        CHECK(sdpa_kv_cache_read(cc, s, 0, &hk, &hv) == SDPA_OK, "cpu read");
        std::vector<float> gk = k.down(), gv = v.down();
        if (memcmp(gk.data(), ck[s].data(), gk.size() * 4) || memcmp(gv.data(), cv[s].data(), gv.size() * 4)) same = 0;
    }
    CHECK(same, "storage %d D %lld: device pages differ from sdpa.h's cache", st, (long long)D);
    /* attention: n = 1 (decode) and n = 3 with seqlens_q, options */
    for (int variant = 0; variant < 6; variant++) {
        int64_t n = variant < 2 ? 1 : 3, B = 3;
        Tens q, out;
        q.make(qdt, B, Hq, n, D, variant % 2 ? 3 : 0, -1, 1); /* odd variants: rows 3 elements apart (no 16-byte loads) */
        out.make(SDPA_F32, B, Hq, n, Dv, 0, 0, 0);
        out.poison();
        sdpa_params p;
        memset(&p, 0, sizeof p);
        p.errbuf = err; p.errbuf_size = sizeof err;
        std::vector<float> slopes;
        int64_t sq[3] = {1, 3, 0}, seqs[3] = {2, 1, 0};
        if (variant == 1) p.softcap = 4.0f;
        if (variant >= 2) p.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
        if (variant == 3) { p.window = 1; p.window_left = 50; p.window_right = -1; }
        if (variant == 4) { for (int h = 0; h < Hq; h++) slopes.push_back(0.01f * (h + 1)); p.alibi_slopes = slopes.data(); }
        if (variant == 5) p.seqlens_q = sq;
        float *dl;
        CU(cudaMalloc(&dl, (size_t)(B * Hq * n) * 4));
        CU(cudaMemset(dl, 0xff, (size_t)(B * Hq * n) * 4));
        p.lse = dl;
        sdpa_tensor qt = q.t(), ot = out.t();
        rc = sdpa_cuda_kv_cache_attention(gc, seqs, &qt, &ot, &p, 0);
        CU(cudaDeviceSynchronize());
        CHECK(rc == SDPA_OK, "kv attention rc %d: %s", rc, err);
        std::vector<float> got = out.down(), gl((size_t)(B * Hq * n));
        CU(cudaMemcpy(gl.data(), dl, gl.size() * 4, cudaMemcpyDeviceToHost));
        cudaFree(dl);
        /* float64 reference over the dequantized cache */
        std::vector<double> ref(got.size(), 0.0), rl(gl.size(), -INFINITY);
        double scale = 1.0 / sqrt((double)D);
        for (int64_t b = 0; b < B; b++) {
            int64_t s = seqs[b], len = lens[s], vq = p.seqlens_q ? sq[b] : n;
            for (int64_t h = 0; h < Hq; h++)
                for (int64_t i = 0; i < vq; i++) {
                    int64_t pos = len - vq + i;
                    std::vector<double> sc((size_t)len, -INFINITY);
                    double mx = -INFINITY;
                    for (int64_t j = 0; j < len; j++) {
                        if (p.causal && j > pos) continue;
                        if (p.window && j < pos - p.window_left) continue;
                        double x = 0;
                        for (int64_t d = 0; d < D; d++)
                            x += (double)q.h[(size_t)(((b * Hq + h) * n + i) * D + d)] * ck[s][(size_t)(((h / G) * len + j) * D + d)];
                        x *= scale;
                        if (p.softcap > 0) x = p.softcap * tanh(x / p.softcap);
                        if (p.alibi_slopes) x -= slopes[(size_t)h] * fabs((double)(pos - j));
                        sc[(size_t)j] = x;
                        mx = fmax(mx, x);
                    }
                    if (mx == -INFINITY) continue;
                    double sum = 0;
                    for (auto &x : sc) { x = exp(x - mx); sum += x; }
                    for (int64_t j = 0; j < len; j++)
                        for (int64_t d = 0; d < Dv; d++)
                            ref[(size_t)(((b * Hq + h) * n + i) * Dv + d)] += sc[(size_t)j] / sum * cv[s][(size_t)(((h / G) * len + j) * Dv + d)];
                    rl[(size_t)((b * Hq + h) * n + i)] = mx + log(sum);
                }
        }
        double rel;
        int ok = compare(got, ref, 2e-5, &rel);
        CHECK(ok, "kv attention storage %d D %lld Dv %lld q %d variant %d: rel L2 %.3g", st, (long long)D, (long long)Dv, qdt, variant, rel);
        CHECK(lse_ok(gl, rl, 1e-5), "kv attention lse, storage %d variant %d", st, variant);
        /* and sdpa.h's cache attention on the same query */
        std::vector<float> co(got.size());
        sdpa_tensor hq, ho;
        q.host_tensor(&hq);
        ho.data = co.data(); ho.dtype = SDPA_F32;
        for (int i = 0; i < 4; i++) { ho.shape[i] = out.n[i]; ho.stride[i] = 0; }
        sdpa_params cp = p;
        cp.lse = NULL; cp.errbuf = cerr;
        CHECK(sdpa_kv_cache_attention(cc, seqs, &hq, &ho, &cp) == SDPA_OK, "cpu kv attention: %s", cerr);
        std::vector<double> cd(co.begin(), co.end());
        double crel;
        CHECK(compare(got, cd, st == SDPA_I8 ? 2e-3 : 3e-5, &crel), "kv attention storage %d variant %d vs sdpa.h: rel L2 %.3g", st, variant, crel);
    }
    /* deterministic: the same call twice gives the same bits */
    {
        Tens q, o1, o2;
        q.make(SDPA_BF16, 3, Hq, 1, D, 0, -1, 1);
        o1.make(SDPA_F32, 3, Hq, 1, Dv, 0, 0, 0); o2.make(SDPA_F32, 3, Hq, 1, Dv, 0, 0, 0);
        sdpa_tensor qt = q.t(), t1 = o1.t(), t2 = o2.t();
        sdpa_cuda_kv_cache_attention(gc, NULL, &qt, &t1, NULL, 0);
        sdpa_cuda_kv_cache_attention(gc, NULL, &qt, &t2, NULL, 0);
        std::vector<float> a = o1.down(), b = o2.down();
        CHECK(memcmp(a.data(), b.data(), a.size() * 4) == 0, "kv attention is deterministic");
        {   /* SDPA_PRECISION_BF16_PV is accepted and computes as the default */
            sdpa_params pb;
            memset(&pb, 0, sizeof pb);
            pb.precision = SDPA_PRECISION_BF16_PV;
            o2.poison();
            CHECK(sdpa_cuda_kv_cache_attention(gc, NULL, &qt, &t2, &pb, 0) == SDPA_OK, "kv attention with BF16_PV refused");
            std::vector<float> c2 = o2.down();
            CHECK(memcmp(a.data(), c2.data(), a.size() * 4) == 0, "kv attention: BF16_PV changed the output");
        }
        /* seqlens_q with every row live takes the parts and the merge kernel
         * even where one split lets the kernels write the output directly:
         * the same bits either way */
        Tens o3;
        o3.make(SDPA_F32, 3, Hq, 1, Dv, 0, 0, 0);
        o3.poison();
        sdpa_params p3;
        memset(&p3, 0, sizeof p3);
        int64_t live[3] = {1, 1, 1};
        p3.seqlens_q = live;
        sdpa_tensor t3 = o3.t();
        CHECK(sdpa_cuda_kv_cache_attention(gc, NULL, &qt, &t3, &p3, 0) == SDPA_OK, "kv attention with seqlens_q");
        std::vector<float> c3 = o3.down();
        CHECK(memcmp(a.data(), c3.data(), a.size() * 4) == 0, "kv attention: seqlens_q all live gives the same bits (storage %d D %lld, %lld tokens)",
              st, (long long)D, (long long)total);
        /* that call's partials came from the cache's scratch pool, which
         * keeps them past the synchronize (no mapping again next call) and
         * counts them in the cache's bytes, within its 64 MiB */
        {
            const int64_t b3 = sdpa_cuda_kv_cache_bytes(gc);
            CHECK(b3 > bytes0 && b3 <= bytes0 + ((int64_t)64 << 20), "kv cache bytes after a split decode: %lld, pages and tables %lld",
                  (long long)b3, (long long)bytes0);
        }
        /* captured in a CUDA graph (on sm_90 the merge kernel's programmatic
         * dependent launch becomes a programmatic edge), replayed twice: the
         * same bits */
        Tens o4;
        o4.make(SDPA_F32, 3, Hq, 1, Dv, 0, 0, 0);
        sdpa_tensor t4 = o4.t();
        cudaStream_t gs;
        cudaGraph_t gr = NULL;
        cudaGraphExec_t ge = NULL;
        CU(cudaStreamCreateWithFlags(&gs, cudaStreamNonBlocking));
        CU(cudaStreamBeginCapture(gs, cudaStreamCaptureModeThreadLocal));
        const int grc = sdpa_cuda_kv_cache_attention(gc, NULL, &qt, &t4, NULL, gs);
        CU(cudaStreamEndCapture(gs, &gr));
        CHECK(grc == SDPA_OK, "kv attention under stream capture: %d %s", grc, err);
        if (grc == SDPA_OK) {
            CU(cudaGraphInstantiate(&ge, gr, 0));
            int same4 = 1;
            for (int rep = 0; rep < 2; rep++) {
                o4.poison();
                CU(cudaDeviceSynchronize()); /* the poison (legacy stream) before the replay on gs */
                CU(cudaGraphLaunch(ge, gs));
                CU(cudaStreamSynchronize(gs));
                std::vector<float> c4 = o4.down();
                if (memcmp(a.data(), c4.data(), a.size() * 4)) same4 = 0;
            }
            CHECK(same4, "kv attention replayed from a CUDA graph gives the same bits (storage %d D %lld, %lld tokens)", st, (long long)D,
                  (long long)total);
            CU(cudaGraphExecDestroy(ge));
        }
        if (gr) CU(cudaGraphDestroy(gr));
        CU(cudaStreamDestroy(gs));
    }
    sdpa_cuda_kv_cache_destroy(gc);
    sdpa_kv_cache_destroy(cc);
}

/* A batch past the kernels' in-parameter batch entries (SDPA__CU_BIN): 70
 * sequences of 1..40 tokens, the batch entries then go through device
 * memory; storages that take the tensor-core and the CUDA-core decode. */
static void kv_batch_case(int st, int qdt = SDPA_BF16)
{
    const int64_t NS = SDPA__CU_BIN + 6, H = 2, Hq = 8, D = 64;
    char err[256] = "", cerr[256] = "";
    sdpa_kv_cache_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.num_seqs = NS; cfg.kv_heads = H; cfg.head_dim = D; cfg.head_dim_v = D; cfg.dtype = (sdpa_dtype)st; cfg.page_size = 16;
    cfg.kscale = SDPA_KV_KSCALE_TOKEN;
    cfg.max_pages = NS * 3;
    sdpa_kv_cache_config ccfg = cfg;
    cfg.errbuf = err; cfg.errbuf_size = sizeof err;
    ccfg.errbuf = cerr; ccfg.errbuf_size = sizeof cerr;
    sdpa_kv_cache *cc = NULL;
    sdpa_cuda_kv_cache *gc = NULL;
    CHECK(sdpa_kv_cache_create(&ccfg, &cc) == SDPA_OK, "cpu cache: %s", cerr);
    CHECK(sdpa_cuda_kv_cache_create(&cfg, &gc) == SDPA_OK, "device cache: %s", err);
    if (!cc || !gc) { sdpa_kv_cache_destroy(cc); sdpa_cuda_kv_cache_destroy(gc); return; }
    for (int64_t sq = 0; sq < NS; sq++) {
        Tens k, v;
        const int64_t n = 1 + (sq * 7) % 40;
        k.make(SDPA_F32, 1, H, n, D, 0, -2, 2);
        v.make(SDPA_F32, 1, H, n, D, 0, -1, 1);
        sdpa_tensor kt = k.t(), vt = v.t(), hk, hv;
        CHECK(sdpa_cuda_kv_cache_append(gc, sq, &kt, &vt, 0) == SDPA_OK, "append: %s", err);
        k.host_tensor(&hk); v.host_tensor(&hv);
        CHECK(sdpa_kv_cache_append(cc, sq, &hk, &hv) == SDPA_OK, "cpu append: %s", cerr);
        CU(cudaDeviceSynchronize());
    }
    Tens q, out;
    q.make(qdt, NS, Hq, 1, D, 0, -1, 1);
    out.make(SDPA_F32, NS, Hq, 1, D, 0, 0, 0);
    out.poison();
    sdpa_params p;
    memset(&p, 0, sizeof p);
    p.errbuf = err; p.errbuf_size = sizeof err;
    sdpa_tensor qt = q.t(), ot = out.t();
    CHECK(sdpa_cuda_kv_cache_attention(gc, NULL, &qt, &ot, &p, 0) == SDPA_OK, "kv attention, batch %lld: %s", (long long)NS, err);
    CU(cudaDeviceSynchronize());
    std::vector<float> got = out.down(), co(got.size());
    sdpa_tensor hq, ho;
    q.host_tensor(&hq);
    ho.data = co.data(); ho.dtype = SDPA_F32;
    for (int i = 0; i < 4; i++) { ho.shape[i] = out.n[i]; ho.stride[i] = 0; }
    sdpa_params cp = p;
    cp.errbuf = cerr;
    CHECK(sdpa_kv_cache_attention(cc, NULL, &hq, &ho, &cp) == SDPA_OK, "cpu kv attention: %s", cerr);
    std::vector<double> cd(co.begin(), co.end());
    double rel;
    CHECK(compare(got, cd, st == SDPA_I8 ? 2e-3 : 3e-5, &rel), "kv attention, batch %lld, storage %d, vs sdpa.h: rel L2 %.3g",
          (long long)NS, st, rel);
    sdpa_kv_cache_destroy(cc);
    sdpa_cuda_kv_cache_destroy(gc);
}

/* The int8 -> BF16 widening of the tensor-core decode's values (byte
 * permutes and a BF16 subtraction, no float conversion) on every byte value
 * in every byte position: exact, bit for bit, against (float)x rounded to
 * BF16, in its order (bytes 0, 2, then 1, 3 of each word). */
__global__ void i8bf_kernel(const uint32_t *in, uint2 *out, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) sdpa__cu_i8bf_eo(in[i], &out[i].x, &out[i].y);
}
static void i8bf_case(void)
{
    const int n = 256; /* word i holds bytes i, i + 1, i + 2, i + 3 (mod 256) */
    std::vector<uint8_t> in((size_t)n * 4);
    std::vector<uint16_t> out((size_t)n * 4, 0xffff);
    for (int i = 0; i < n; i++)
        for (int e = 0; e < 4; e++) in[(size_t)(i * 4 + e)] = (uint8_t)(i + e);
    void *din, *dout;
    CU(cudaMalloc(&din, in.size()));
    CU(cudaMalloc(&dout, out.size() * 2));
    CU(cudaMemcpy(din, in.data(), in.size(), cudaMemcpyHostToDevice));
    CU(cudaMemset(dout, 0xff, out.size() * 2));
    i8bf_kernel<<<1, n>>>((const uint32_t *)din, (uint2 *)dout, n);
    CU(cudaGetLastError());
    CU(cudaMemcpy(out.data(), dout, out.size() * 2, cudaMemcpyDeviceToHost));
    cudaFree(din);
    cudaFree(dout);
    static const int perm[4] = {0, 2, 1, 3};
    int bad = 0;
    for (size_t i = 0; i < in.size(); i++) {
        const int x = (int8_t)in[i / 4 * 4 + perm[i % 4]];
        const uint16_t want = sdpa_f32_to_bf16((float)x);
        if (out[i] != want && bad++ < 4) printf("  element %d (byte %d) -> bf16 0x%04x, want 0x%04x\n", (int)i, x, out[i], want);
    }
    CHECK(bad == 0, "int8 -> BF16 widening: %d of %d values wrong", bad, (int)in.size());
}

int main(int argc, char **argv)
{
    int host_only = 0, ndev = 0, expect_wg = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) g_quick = 1;
        else if (!strcmp(argv[i], "--host")) host_only = 1;
        else if (!strcmp(argv[i], "--expect-wgmma")) expect_wg = 1;
    }
    if (getenv("SDPA_TEST_SEED")) g_rng = strtoull(getenv("SDPA_TEST_SEED"), NULL, 0) | 1;
    g_wg = sdpa__cu_wg_ok();
    host_checks();
    printf("test_cuda: host-side checks: %d passed, %d failed\n", g_pass, g_fail);
    if (host_only) return g_fail ? 1 : 0;
#ifdef SDPA_CUDA_FEW_KERNELS
    printf("test_cuda: skipped: no CUDA device checks in a host-check build (SDPA_CUDA_FEW_KERNELS: kernels compiled, not launched)\n");
    return g_fail ? 1 : 0;
#endif
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        cudaGetLastError();
        printf("test_cuda: skipped: no CUDA device (device checks not run)\n");
        return g_fail ? 1 : 0;
    }
    cudaDeviceProp prop;
    CU(cudaGetDeviceProperties(&prop, 0));
    printf("test_cuda: device %s (sm_%d%d), seed %llu%s\n", prop.name, prop.major, prop.minor, (unsigned long long)g_rng,
           g_quick ? ", quick" : "");
    printf("test_cuda: wgmma kernel: %s\n", g_wg ? "runs here" : "not here (needs sm_90 and an sm_90a build)");
    /* run.sh builds for sm_90a on Hopper: there the kernel must run */
    CHECK(!expect_wg || g_wg, "--expect-wgmma: the wgmma kernel does not run on this device and build");
    i8bf_case();
    attention_cases();
    printf("test_cuda: attention: %d passed, %d failed\n", g_pass, g_fail);
    int8_cases();
    printf("test_cuda: int8 mode: %d passed, %d failed\n", g_pass, g_fail);
    const int st[4] = {SDPA_F16, SDPA_BF16, SDPA_I8, SDPA_F32};
    for (int i = 0; i < 4; i++) kv_case(st[i], 128, 128, 16, SDPA_F16);
    kv_case(SDPA_I8, 64, 64, 64, SDPA_F32);
    kv_case(SDPA_BF16, 128, 128, 24, SDPA_BF16, 8);
    kv_case(SDPA_BF16, 128, 128, 24, SDPA_BF16); /* tensor-core decode: G = 4, steps straddle pages */
    kv_case(SDPA_BF16, 64, 64, 7, SDPA_BF16, 1); /* G = 8: 24 rows with n = 3, two row blocks; pages of 7 */
    kv_case(SDPA_F16, 128, 128, 24, SDPA_F16);   /* the same for F16 pages and an F16 query (P scaled by 2^8) */
    kv_case(SDPA_F16, 64, 64, 7, SDPA_F16, 1);
    kv_case(SDPA_I8, 128, 128, 24, SDPA_BF16);   /* the same for int8 pages (widened per step, scales) */
    kv_case(SDPA_I8, 64, 64, 7, SDPA_BF16, 1);
    kv_case(SDPA_I8, 128, 128, 7, SDPA_F16, 8);
    kv_case(SDPA_I8, 64, 64, 7, SDPA_BF16, 8); /* MHA: one row per block, the I8 ring of 16-byte chunks, steps straddling pages */
    /* a long sequence: 117 splits of 256 keys (the merge's lanes take up to
     * four splits each), and one wave of the GPU's SMs on the tensor-core
     * decode (40 splits of 768 keys on an H100) */
    kv_case(SDPA_F16, 64, 64, 256, SDPA_BF16, 1, 30000); /* F16 pages, a BF16 query: the CUDA-core kernel */
    kv_case(SDPA_BF16, 128, 128, 256, SDPA_BF16, 1, 30000);
    /* short sequences (at most 137 tokens): one split, the output written by
     * the decode kernels themselves (CUDA-core kernel MHA, tensor cores GQA) */
    kv_case(SDPA_F16, 64, 64, 16, SDPA_F16, 8, 300);
    kv_case(SDPA_BF16, 128, 128, 16, SDPA_BF16, 2, 300);
    kv_case(SDPA_I8, 128, 128, 16, SDPA_BF16, 2, 300);
    kv_case(SDPA_I8, 128, 128, 16, SDPA_BF16, 8, 300); /* the I8 one-row kernel (ring) writing out */
    kv_batch_case(SDPA_BF16); /* tensor-core decode */
    kv_batch_case(SDPA_F16);  /* CUDA-core decode (a BF16 query) */
    kv_batch_case(SDPA_F16, SDPA_F16); /* tensor-core decode */
    kv_batch_case(SDPA_I8);
    if (!g_quick) { kv_case(SDPA_F16, 64, 64, 16, SDPA_BF16, 8); kv_case(SDPA_BF16, 256, 256, 5, SDPA_F32, 8); kv_case(SDPA_I8, 128, 128, 64, SDPA_BF16, 8); }
    if (!g_quick) { kv_case(SDPA_BF16, 40, 24, 64, SDPA_BF16); kv_case(SDPA_I8, 256, 256, 32, SDPA_BF16); kv_case(SDPA_F16, 36, 36, 7, SDPA_F16); }
    if (!g_quick) { kv_case(SDPA_I8, 256, 256, 5, SDPA_BF16, 8); kv_case(SDPA_I8, 128, 128, 24, SDPA_BF16, 8, 30000); kv_case(SDPA_F16, 128, 128, 7, SDPA_F16, 8, 30000); }
    printf("test_cuda: %s: %d checks passed, %d failed\n", g_fail ? "FAILED" : "all passed", g_pass, g_fail);
    return g_fail ? 1 : 0;
}

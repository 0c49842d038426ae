/* examples/decode.c - a toy decoder loop on the KV cache.
 *
 * A few attention layers with random weights (no MLP, no norms: the point is
 * the cache, not the model): the prompt is prefilled in one call per layer,
 * then tokens are generated greedily, one at a time, each layer appending its
 * K/V to its cache and attending over it. Run once per storage type, and
 * once more on I8 in int8 mode (params.precision = SDPA_PRECISION_INT8_QK:
 * the query rounded to 8 bits rather than 16 for the integer Q.K^T); prints
 * tokens/s, the cache's memory, and how many generated tokens agree with the
 * F32 cache's run.
 *
 *   cc -O2 -Iinclude examples/decode.c -o decode -lm -pthread
 *   ./decode [prompt_tokens [new_tokens [threads]]]     (defaults 512 256 0)
 *
 * threads 0 means one per online CPU; they live in one sdpa_pool for the
 * whole run (a decode step is too short to start threads for each call).
 */
#define SDPA_IMPLEMENTATION
#include "sdpa.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { LAYERS = 4, DM = 512, HQ = 8, HKV = 2, HD = 64, VOCAB = 512 };

typedef struct {
    float *wq, *wk, *wv, *wo; /* [DM][HQ*HD], [DM][HKV*HD] x2, [HQ*HD][DM] */
    sdpa_kv_cache *cache;
} layer;

static uint64_t g_seed = 42;
static int g_precision = SDPA_PRECISION_DEFAULT; /* params.precision of the attention calls */
static float frand(void) /* uniform in [-1, 1) */
{
    g_seed = g_seed * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((g_seed >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static float *rand_matrix(int rows, int cols, float scale)
{
    float *m = (float *)malloc(sizeof(float) * (size_t)rows * (size_t)cols);
    int i;
    if (!m) { fprintf(stderr, "decode: out of memory\n"); exit(1); }
    for (i = 0; i < rows * cols; i++) m[i] = frand() * scale;
    return m;
}

/* y[n][cols] = x[n][rows] W[rows][cols] */
static void matmul(const float *x, const float *w, float *y, int n, int rows, int cols)
{
    int i, r, c;
    for (i = 0; i < n; i++) {
        float *yi = y + (size_t)i * cols;
        memset(yi, 0, sizeof(float) * (size_t)cols);
        for (r = 0; r < rows; r++) {
            float a = x[(size_t)i * rows + r];
            const float *wr = w + (size_t)r * cols;
            for (c = 0; c < cols; c++) yi[c] += a * wr[c];
        }
    }
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int check(int rc, const char *what, const char *errbuf)
{
    if (rc != SDPA_OK) {
        fprintf(stderr, "decode: %s: %s (%s)\n", what, sdpa_strerror(rc), errbuf);
        exit(1);
    }
    return rc;
}

/* Runs n tokens (token-major x [n][DM]) through every layer, their K/V
 * appended to the caches; x is updated in place (residual stream). */
static void forward(layer *L, float *x, int n, sdpa_pool *pool)
{
    float *q = (float *)malloc(sizeof(float) * (size_t)n * HQ * HD), *k = (float *)malloc(sizeof(float) * (size_t)n * HKV * HD);
    float *v = (float *)malloc(sizeof(float) * (size_t)n * HKV * HD), *o = (float *)malloc(sizeof(float) * (size_t)n * HQ * HD);
    float *y = (float *)malloc(sizeof(float) * (size_t)n * DM);
    char err[256] = "";
    int l, i;
    if (!q || !k || !v || !o || !y) { fprintf(stderr, "decode: out of memory\n"); exit(1); }
    for (l = 0; l < LAYERS; l++) {
        /* token-major [n][heads][HD] is the tensor [1, heads, n, HD] with
         * strides {0, HD, heads*HD, 1}: no transposes needed */
        sdpa_tensor qt = {q, SDPA_F32, {1, HQ, n, HD}, {0, HD, HQ * HD, 1}};
        sdpa_tensor kt = {k, SDPA_F32, {1, HKV, n, HD}, {0, HD, HKV * HD, 1}};
        sdpa_tensor vt = {v, SDPA_F32, {1, HKV, n, HD}, {0, HD, HKV * HD, 1}};
        sdpa_tensor ot = {o, SDPA_F32, {1, HQ, n, HD}, {0, HD, HQ * HD, 1}};
        sdpa_params p;
        memset(&p, 0, sizeof p);
        p.causal = SDPA_CAUSAL_BOTTOM_RIGHT; /* the n new tokens are the cache's last n */
        p.precision = g_precision;
        p.num_threads = sdpa_pool_size(pool); /* threads that stay alive from call to call */
        p.parallel_for = sdpa_pool_parallel_for;
        p.parallel_user = pool;
        p.errbuf = err;
        p.errbuf_size = sizeof err;
        matmul(x, L[l].wq, q, n, DM, HQ * HD);
        matmul(x, L[l].wk, k, n, DM, HKV * HD);
        matmul(x, L[l].wv, v, n, DM, HKV * HD);
        check(sdpa_kv_cache_append(L[l].cache, 0, &kt, &vt), "append", err);
        check(sdpa_kv_cache_attention(L[l].cache, NULL, &qt, &ot, &p), "attention", err);
        matmul(o, L[l].wo, y, n, HQ * HD, DM);
        for (i = 0; i < n * DM; i++) x[i] += y[i];
    }
    free(q), free(k), free(v), free(o), free(y);
}

static int argmax_token(const float *x, const float *emb)
{
    int t, d, best = 0;
    float bv = -INFINITY;
    for (t = 0; t < VOCAB; t++) {
        float s = 0.0f;
        for (d = 0; d < DM; d++) s += x[d] * emb[(size_t)t * DM + d];
        if (s > bv) bv = s, best = t;
    }
    return best;
}

int main(int argc, char **argv)
{
    int prompt = argc > 1 ? atoi(argv[1]) : 512, gen = argc > 2 ? atoi(argv[2]) : 256, threads = argc > 3 ? atoi(argv[3]) : 0;
    static const sdpa_dtype st[5] = {SDPA_F32, SDPA_F16, SDPA_BF16, SDPA_I8, SDPA_I8};
    static const char *const name[5] = {"F32", "F16", "BF16", "I8", "I8q"}; /* I8q: I8 in int8 mode */
    float *emb, *x;
    int *ref_tokens, *tokens, s, t, l, i;
    layer L[LAYERS];
    sdpa_pool *pool;
    if (prompt < 1 || gen < 1 || threads < 0) { fprintf(stderr, "usage: decode [prompt_tokens [new_tokens [threads]]]\n"); return 1; }
    if (sdpa_pool_create(threads, 0, &pool) != SDPA_OK) { fprintf(stderr, "decode: could not create the thread pool\n"); return 1; }
    emb = rand_matrix(VOCAB, DM, 1.0f);
    for (l = 0; l < LAYERS; l++) {
        L[l].wq = rand_matrix(DM, HQ * HD, 1.0f / sqrtf((float)DM));
        L[l].wk = rand_matrix(DM, HKV * HD, 1.0f / sqrtf((float)DM));
        L[l].wv = rand_matrix(DM, HKV * HD, 1.0f / sqrtf((float)DM));
        L[l].wo = rand_matrix(HQ * HD, DM, 0.5f / sqrtf((float)(HQ * HD)));
    }
    x = (float *)malloc(sizeof(float) * (size_t)prompt * DM);
    ref_tokens = (int *)calloc((size_t)gen, sizeof(int));
    tokens = (int *)calloc((size_t)gen, sizeof(int));
    if (!x || !ref_tokens || !tokens) { fprintf(stderr, "decode: out of memory\n"); return 1; }
    printf("toy decoder: %d layers, d_model %d, %d q heads / %d kv heads x %d, vocab %d; prompt %d, %d new tokens, %s %s, %d threads\n",
           LAYERS, DM, HQ, HKV, HD, VOCAB, prompt, gen, sdpa_path_name((sdpa_path)sdpa_path_in_use(NULL)), "path", sdpa_pool_size(pool));
    for (s = 0; s < 5; s++) {
        sdpa_kv_cache_config cfg;
        double t0, t1, t2;
        int64_t bytes = 0;
        int agree = 0;
        memset(&cfg, 0, sizeof cfg);
        cfg.num_seqs = 1, cfg.kv_heads = HKV, cfg.head_dim = HD, cfg.dtype = st[s];
        g_precision = s == 4 ? SDPA_PRECISION_INT8_QK : SDPA_PRECISION_DEFAULT;
        for (l = 0; l < LAYERS; l++)
            if (sdpa_kv_cache_create(&cfg, &L[l].cache) != SDPA_OK) { fprintf(stderr, "decode: cache create failed\n"); return 1; }
        g_seed = 7; /* the same prompt for every storage type */
        for (i = 0; i < prompt * DM; i++) x[i] = frand();
        t0 = now_s();
        forward(L, x, prompt, pool); /* prefill: one call per layer for the whole prompt */
        t1 = now_s();
        for (t = 0; t < gen; t++) { /* decode: next token from the last position, embedded, fed back */
            int tok = argmax_token(x + (size_t)(t == 0 ? prompt - 1 : 0) * DM, emb);
            tokens[t] = tok;
            memcpy(x, emb + (size_t)tok * DM, sizeof(float) * DM);
            forward(L, x, 1, pool);
        }
        t2 = now_s();
        for (l = 0; l < LAYERS; l++) bytes += sdpa_kv_cache_bytes(L[l].cache);
        if (s == 0) memcpy(ref_tokens, tokens, sizeof(int) * (size_t)gen);
        for (t = 0; t < gen && tokens[t] == ref_tokens[t]; t++) agree++;
        printf("  %-4s prefill %7.1f tok/s, decode %7.1f tok/s, cache %7.2f MiB for %d tokens; "
               "first %d of %d tokens equal F32's\n",
               name[s], prompt / (t1 - t0), gen / (t2 - t1), (double)bytes / 1048576.0, prompt + gen, agree, gen);
        for (l = 0; l < LAYERS; l++) sdpa_kv_cache_destroy(L[l].cache);
    }
    for (l = 0; l < LAYERS; l++) free(L[l].wq), free(L[l].wk), free(L[l].wv), free(L[l].wo);
    free(emb), free(x), free(ref_tokens), free(tokens);
    sdpa_pool_destroy(pool);
    return 0;
}

/* two_copies_main.c - two copies of the library in one process.
 *
 * tests/two_copies_a.c and tests/two_copies_b.c each hold a private
 * (SDPA_STATIC) copy of the implementation; this file holds a third, extern
 * one. Three threads start together, each calling one copy (each call also
 * using the library's own worker threads) on the same read-only inputs, over
 * two problems, many times. Every result must be bitwise the same across calls
 * and across copies, within the documented bounds of a float64 reference, and
 * the inputs must be left unchanged. Exit 0 on success.
 *
 *   problem 1: F32, GQA 8:2, Lq=65 < Lk=130 bottom-right causal, D=40, Dv=24, lse
 *   problem 2: BF16 in, F16 out, window [-16, +0], softcap 30, ALiBi, BOOL mask
 *              [1, 1, Lq, Lk] with two fully masked rows, D=64
 */
#define _POSIX_C_SOURCE 200809L
#define SDPA_IMPLEMENTATION
#include "sdpa.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*two_copies_fn)(const sdpa_tensor *, const sdpa_tensor *, const sdpa_tensor *,
                             const sdpa_tensor *, const sdpa_params *);
two_copies_fn two_copies_a_attention(void);
two_copies_fn two_copies_b_attention(void);
const char *two_copies_a_version(void);
const char *two_copies_b_version(void);
int two_copies_a_selfcheck(void);
int two_copies_b_selfcheck(void);

enum { N_COPIES = 3, N_PROBLEMS = 2, ITERATIONS = 25 };

typedef struct problem {
    sdpa_tensor q, k, v, out, mask;
    sdpa_params params;
    size_t q_bytes, k_bytes, v_bytes, out_bytes, lse_count;
    void *q_copy, *k_copy, *v_copy;   /* pristine copies of the inputs */
    float slopes[8];
    double *ref, *ref_lse;            /* float64 reference */
    double tol_abs, tol_rel;
} problem;

static problem problems[N_PROBLEMS];

static unsigned rng_state = 2024u;
static float rnd(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xFFFF) / 32768.0f - 1.0f;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}

static size_t dtype_size(sdpa_dtype t) { return t == SDPA_F32 ? 4 : t == SDPA_BOOL || t == SDPA_I8 ? 1 : 2; }

static sdpa_tensor tensor(sdpa_dtype dt, int64_t b, int64_t h, int64_t l, int64_t d) {
    sdpa_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dt;
    t.shape[0] = b; t.shape[1] = h; t.shape[2] = l; t.shape[3] = d;
    t.data = xmalloc((size_t)(b * h * l * d) * dtype_size(dt));
    return t;
}

static size_t numel(const sdpa_tensor *t) {
    return (size_t)(t->shape[0] * t->shape[1] * t->shape[2] * t->shape[3]);
}

static double load(const sdpa_tensor *t, size_t i) {
    switch (t->dtype) {
    case SDPA_F32:  return ((const float *)t->data)[i];
    case SDPA_F16:  return sdpa_f16_to_f32(((const uint16_t *)t->data)[i]);
    case SDPA_BF16: return sdpa_bf16_to_f32(((const uint16_t *)t->data)[i]);
    default:        return 0.0;
    }
}

static void fill(sdpa_tensor *t) {
    size_t i, n = numel(t);
    for (i = 0; i < n; i++) {
        float x = rnd();
        if (t->dtype == SDPA_F32) ((float *)t->data)[i] = x;
        else if (t->dtype == SDPA_F16) ((uint16_t *)t->data)[i] = sdpa_f32_to_f16(x);
        else ((uint16_t *)t->data)[i] = sdpa_f32_to_bf16(x);
    }
}

/* The header's semantics, written out in float64 for contiguous tensors. */
static void reference(problem *pr) {
    const sdpa_tensor *q = &pr->q, *k = &pr->k, *v = &pr->v;
    const sdpa_params *p = &pr->params;
    int64_t B = q->shape[0], Hq = q->shape[1], Lq = q->shape[2], D = q->shape[3];
    int64_t Hkv = k->shape[1], Lk = k->shape[2], Dv = v->shape[3];
    int64_t b, h, i, j, d;
    double scale = p->scale > 0 ? p->scale : 1.0 / sqrt((double)D);
    double *s = (double *)xmalloc((size_t)Lk * sizeof(double));
    pr->ref = (double *)xmalloc((size_t)(B * Hq * Lq * Dv) * sizeof(double));
    pr->ref_lse = (double *)xmalloc((size_t)(B * Hq * Lq) * sizeof(double));
    for (b = 0; b < B; b++)
    for (h = 0; h < Hq; h++)
    for (i = 0; i < Lq; i++) {
        int64_t g = h / (Hq / Hkv);
        int64_t pos = p->causal == SDPA_CAUSAL_TOP_LEFT ? i : i + Lk - Lq;
        double m = -INFINITY, sum = 0.0;
        double *o = pr->ref + ((b * Hq + h) * Lq + i) * Dv;
        for (j = 0; j < Lk; j++) {
            int visible = 1;
            double dot = 0.0;
            for (d = 0; d < D; d++)
                dot += load(q, (size_t)(((b * Hq + h) * Lq + i) * D + d)) *
                       load(k, (size_t)(((b * Hkv + g) * Lk + j) * D + d));
            dot *= scale;
            if (p->softcap > 0) dot = p->softcap * tanh(dot / p->softcap);
            if (p->alibi_slopes) dot += -(double)p->alibi_slopes[h] * fabs((double)(pos - j));
            if (p->causal != SDPA_CAUSAL_NONE && j > pos) visible = 0;
            if (p->window) {
                if (p->window_left >= 0 && j < pos - p->window_left) visible = 0;
                if (p->window_right >= 0 && j > pos + p->window_right) visible = 0;
            }
            if (p->mask) {
                const sdpa_tensor *mk = p->mask;
                int64_t mb = mk->shape[0] == 1 ? 0 : b, mh = mk->shape[1] == 1 ? 0 : h;
                int64_t mi = mk->shape[2] == 1 ? 0 : i, mj = mk->shape[3] == 1 ? 0 : j;
                size_t at = (size_t)(((mb * mk->shape[1] + mh) * mk->shape[2] + mi) * mk->shape[3] + mj);
                if (mk->dtype == SDPA_BOOL) { if (!((const unsigned char *)mk->data)[at]) visible = 0; }
                else dot += ((const float *)mk->data)[at];
            }
            s[j] = visible ? dot : -INFINITY;
            if (s[j] > m) m = s[j];
        }
        for (d = 0; d < Dv; d++) o[d] = 0.0;
        if (m > -INFINITY) {
            for (j = 0; j < Lk; j++) {
                double w = s[j] > -INFINITY ? exp(s[j] - m) : 0.0;
                sum += w;
                for (d = 0; d < Dv; d++) o[d] += w * load(v, (size_t)(((b * Hkv + g) * Lk + j) * Dv + d));
            }
            for (d = 0; d < Dv; d++) o[d] /= sum;
        }
        pr->ref_lse[(b * Hq + h) * Lq + i] = m > -INFINITY ? m + log(sum) : -INFINITY;
    }
    free(s);
}

static void setup(void) {
    problem *p1 = &problems[0], *p2 = &problems[1];
    size_t i;
    int64_t r, c;

    memset(problems, 0, sizeof problems);
    p1->q = tensor(SDPA_F32, 2, 8, 65, 40);
    p1->k = tensor(SDPA_F32, 2, 2, 130, 40);
    p1->v = tensor(SDPA_F32, 2, 2, 130, 24);
    p1->out = tensor(SDPA_F32, 2, 8, 65, 24);
    p1->params.causal = SDPA_CAUSAL_BOTTOM_RIGHT;
    p1->params.num_threads = 2;
    p1->lse_count = 2 * 8 * 65;
    p1->tol_abs = 2e-5; p1->tol_rel = 1e-4;           /* the header's F32 bound */

    p2->q = tensor(SDPA_BF16, 1, 4, 100, 64);
    p2->k = tensor(SDPA_BF16, 1, 4, 100, 64);
    p2->v = tensor(SDPA_BF16, 1, 4, 100, 64);
    p2->out = tensor(SDPA_F16, 1, 4, 100, 64);
    p2->mask = tensor(SDPA_BOOL, 1, 1, 100, 100);
    for (r = 0; r < 100; r++)
        for (c = 0; c < 100; c++)
            ((unsigned char *)p2->mask.data)[r * 100 + c] = (unsigned char)(r == 17 || r == 60 ? 0 : rnd() > -0.6f);
    for (i = 0; i < 4; i++) p2->slopes[i] = 0.5f / (float)(1 << i);
    p2->params.mask = &p2->mask;
    p2->params.window = 1;
    p2->params.window_left = 16;
    p2->params.window_right = 0;
    p2->params.softcap = 30.0f;
    p2->params.alibi_slopes = p2->slopes;
    p2->params.scale = 0.2f;
    p2->params.num_threads = 3;
    p2->lse_count = 4 * 100;
    p2->tol_abs = 1e-4 + 1e-3; p2->tol_rel = 2e-3;    /* F16 out bound, with slack for -16 keys */

    for (i = 0; i < N_PROBLEMS; i++) {
        problem *pr = &problems[i];
        fill(&pr->q); fill(&pr->k); fill(&pr->v);
        pr->q_bytes = numel(&pr->q) * dtype_size(pr->q.dtype);
        pr->k_bytes = numel(&pr->k) * dtype_size(pr->k.dtype);
        pr->v_bytes = numel(&pr->v) * dtype_size(pr->v.dtype);
        pr->out_bytes = numel(&pr->out) * dtype_size(pr->out.dtype);
        pr->q_copy = xmalloc(pr->q_bytes); memcpy(pr->q_copy, pr->q.data, pr->q_bytes);
        pr->k_copy = xmalloc(pr->k_bytes); memcpy(pr->k_copy, pr->k.data, pr->k_bytes);
        pr->v_copy = xmalloc(pr->v_bytes); memcpy(pr->v_copy, pr->v.data, pr->v_bytes);
        reference(pr);
    }
}

typedef struct caller {
    const char *name;
    two_copies_fn fn;
    void *out[N_PROBLEMS];      /* the first result of each problem */
    float *lse[N_PROBLEMS];
    int failures;
} caller;

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static int gate_open = 0;

static void *caller_main(void *arg) {
    caller *c = (caller *)arg;
    int it, pi;
    pthread_mutex_lock(&gate_lock);
    while (!gate_open) pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);

    for (it = 0; it < ITERATIONS; it++) {
        for (pi = 0; pi < N_PROBLEMS; pi++) {
            const problem *pr = &problems[pi];
            sdpa_tensor out = pr->out;
            sdpa_params params = pr->params;
            void *buf = xmalloc(pr->out_bytes);
            float *lse = (float *)xmalloc(pr->lse_count * sizeof(float));
            int rc;
            memset(buf, 0xFF, pr->out_bytes);          /* poison: NaN in every dtype */
            out.data = buf;
            params.lse = lse;
            rc = c->fn(&pr->q, &pr->k, &pr->v, &out, &params);
            if (rc != SDPA_OK) {
                if (c->failures++ < 3) fprintf(stderr, "%s: problem %d: %s\n", c->name, pi + 1, sdpa_strerror(rc));
                free(buf); free(lse);
                continue;
            }
            if (!c->out[pi]) {
                c->out[pi] = buf;
                c->lse[pi] = lse;
                continue;
            }
            if (memcmp(buf, c->out[pi], pr->out_bytes) != 0 ||
                memcmp(lse, c->lse[pi], pr->lse_count * sizeof(float)) != 0) {
                if (c->failures++ < 3)
                    fprintf(stderr, "%s: problem %d, call %d: result differs from the first call\n", c->name, pi + 1, it);
            }
            free(buf); free(lse);
        }
    }
    return NULL;
}

static int check_reference(const char *name, const problem *pr, const void *out, const float *lse) {
    size_t i, n = numel(&pr->out);
    sdpa_tensor o = pr->out;
    int bad = 0;
    o.data = (void *)out;
    for (i = 0; i < n; i++) {
        double got = load(&o, i), want = pr->ref[i];
        if (!(fabs(got - want) <= pr->tol_abs + pr->tol_rel * fabs(want))) {
            if (bad++ < 3) fprintf(stderr, "%s: out[%zu] = %.7g, reference %.7g\n", name, i, got, want);
        }
    }
    for (i = 0; i < pr->lse_count; i++) {
        double want = pr->ref_lse[i];
        int ok = isinf(want) ? (isinf(lse[i]) && lse[i] < 0) : fabs(lse[i] - want) <= 1e-4 + 1e-5 * fabs(want);
        if (!ok && bad++ < 3) fprintf(stderr, "%s: lse[%zu] = %.7g, reference %.7g\n", name, i, lse[i], want);
    }
    return bad;
}

int main(void) {
    caller callers[N_COPIES];
    pthread_t threads[N_COPIES];
    int i, pi, failures = 0;

    if (two_copies_a_attention() == two_copies_b_attention() || two_copies_a_attention() == sdpa_attention ||
        two_copies_b_attention() == sdpa_attention) {
        fprintf(stderr, "the three copies are not distinct functions (identical code folding?)\n");
        return 1;
    }
    if (strcmp(two_copies_a_version(), SDPA_VERSION_STRING) || strcmp(two_copies_b_version(), sdpa_version()) ||
        !two_copies_a_selfcheck() || !two_copies_b_selfcheck()) {
        fprintf(stderr, "a copy's version or self-check is wrong\n");
        return 1;
    }

    setup();
    memset(callers, 0, sizeof callers);
    callers[0].name = "copy A (static)"; callers[0].fn = two_copies_a_attention();
    callers[1].name = "copy B (static)"; callers[1].fn = two_copies_b_attention();
    callers[2].name = "copy C (extern)"; callers[2].fn = sdpa_attention;
    for (i = 0; i < N_COPIES; i++) {
        if (pthread_create(&threads[i], NULL, caller_main, &callers[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    pthread_mutex_lock(&gate_lock);
    gate_open = 1;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
    for (i = 0; i < N_COPIES; i++) pthread_join(threads[i], NULL);

    for (i = 0; i < N_COPIES; i++) failures += callers[i].failures;
    for (pi = 0; pi < N_PROBLEMS && failures == 0; pi++) {
        const problem *pr = &problems[pi];
        for (i = 1; i < N_COPIES; i++) {
            if (memcmp(callers[i].out[pi], callers[0].out[pi], pr->out_bytes) != 0 ||
                memcmp(callers[i].lse[pi], callers[0].lse[pi], pr->lse_count * sizeof(float)) != 0) {
                fprintf(stderr, "problem %d: %s and %s differ\n", pi + 1, callers[i].name, callers[0].name);
                failures++;
            }
        }
        failures += check_reference("problem", pr, callers[0].out[pi], callers[0].lse[pi]) != 0;
        if (memcmp(pr->q.data, pr->q_copy, pr->q_bytes) || memcmp(pr->k.data, pr->k_copy, pr->k_bytes) ||
            memcmp(pr->v.data, pr->v_copy, pr->v_bytes)) {
            fprintf(stderr, "problem %d: an input was modified\n", pi + 1);
            failures++;
        }
    }

    for (pi = 0; pi < N_PROBLEMS; pi++) {
        problem *pr = &problems[pi];
        for (i = 0; i < N_COPIES; i++) { free(callers[i].out[pi]); free(callers[i].lse[pi]); }
        free(pr->q.data); free(pr->k.data); free(pr->v.data); free(pr->out.data); free(pr->mask.data);
        free(pr->q_copy); free(pr->k_copy); free(pr->v_copy); free(pr->ref); free(pr->ref_lse);
    }
    printf("two_copies: %d copies x %d calls x %d problems, concurrently: %s\n", N_COPIES, ITERATIONS, N_PROBLEMS,
           failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}

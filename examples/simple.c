/* simple.c - the smallest complete program using sdpa.h: causal self-attention
 * over one sequence of 128 tokens with 4 heads of dimension 64.
 * Build: cc -std=c99 -O2 -Iinclude examples/simple.c -lm -pthread */
#define SDPA_IMPLEMENTATION            /* in exactly one file of your program */
#include "sdpa.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum { B = 1, H = 4, L = 128, D = 64 };

int main(void) {
    size_t n = (size_t)B * H * L * D, i;
    float *q = malloc(n * sizeof *q), *k = malloc(n * sizeof *k);
    float *v = malloc(n * sizeof *v), *out = malloc(n * sizeof *out);
    if (!q || !k || !v || !out) return 1;
    for (i = 0; i < n; i++) {
        q[i] = (float)(rand() % 1000) / 1000.0f - 0.5f;
        k[i] = (float)(rand() % 1000) / 1000.0f - 0.5f;
        v[i] = (float)(rand() % 1000) / 1000.0f - 0.5f;
    }

    /* [batch, heads, seq_len, head_dim], contiguous (strides left zero) */
    sdpa_tensor tq = { .data = q,   .dtype = SDPA_F32, .shape = { B, H, L, D } };
    sdpa_tensor tk = { .data = k,   .dtype = SDPA_F32, .shape = { B, H, L, D } };
    sdpa_tensor tv = { .data = v,   .dtype = SDPA_F32, .shape = { B, H, L, D } };
    sdpa_tensor to = { .data = out, .dtype = SDPA_F32, .shape = { B, H, L, D } };
    sdpa_params p = { .causal = SDPA_CAUSAL_TOP_LEFT };   /* the rest: PyTorch's defaults */

    int rc = sdpa_attention(&tq, &tk, &tv, &to, &p);
    if (rc != SDPA_OK) {
        fprintf(stderr, "sdpa_attention: %s\n", sdpa_strerror(rc));
        return 1;
    }

    /* Causal: token 0 sees only key 0, so its output is exactly v's row 0. */
    for (i = 0; i < D; i++)
        if (fabsf(out[i] - v[i]) > 1e-6f) { fprintf(stderr, "unexpected result\n"); return 1; }
    printf("sdpa %s: out[0, 0, %d, 0:4] = %.4f %.4f %.4f %.4f\n", sdpa_version(), L - 1,
           out[(L - 1) * D], out[(L - 1) * D + 1], out[(L - 1) * D + 2], out[(L - 1) * D + 3]);
    free(q); free(k); free(v); free(out);
    return 0;
}

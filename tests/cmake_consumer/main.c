/* The consumer's one file: the implementation and a small call, checked. */
#define SDPA_IMPLEMENTATION
#include <sdpa.h>

#include <math.h>
#include <stdio.h>

int main(void) {
    /* one head, two keys: query 0 sees key 0 only (causal), query 1 both */
    float q[2 * 2] = { 1, 0, 0, 1 }, k[2 * 2] = { 1, 0, 0, 1 }, v[2 * 2] = { 1, 2, 3, 4 }, out[2 * 2];
    sdpa_tensor tq = { q, SDPA_F32, { 1, 1, 2, 2 }, { 0, 0, 0, 0 } };
    sdpa_tensor tk = { k, SDPA_F32, { 1, 1, 2, 2 }, { 0, 0, 0, 0 } };
    sdpa_tensor tv = { v, SDPA_F32, { 1, 1, 2, 2 }, { 0, 0, 0, 0 } };
    sdpa_tensor to = { out, SDPA_F32, { 1, 1, 2, 2 }, { 0, 0, 0, 0 } };
    sdpa_params p = { 0 };
    double w, e0, e1;
    int rc;

    p.causal = SDPA_CAUSAL_TOP_LEFT;
    rc = sdpa_attention(&tq, &tk, &tv, &to, &p);
    if (rc != SDPA_OK) {
        fprintf(stderr, "consumer: %s\n", sdpa_strerror(rc));
        return 1;
    }
    /* query 1: scores (0, 1/sqrt 2), weights softmax of those */
    w = 1.0 / (1.0 + exp(-1.0 / sqrt(2.0)));
    e0 = fabs(out[2] - ((1 - w) * 1 + w * 3));
    e1 = fabs(out[3] - ((1 - w) * 2 + w * 4));
    if (fabs(out[0] - 1.0) > 1e-6 || fabs(out[1] - 2.0) > 1e-6 || e0 > 1e-6 || e1 > 1e-6) {
        fprintf(stderr, "consumer: wrong result %g %g %g %g\n", out[0], out[1], out[2], out[3]);
        return 1;
    }
    printf("consumer: sdpa %s ok\n", sdpa_version());
    return 0;
}

/* tests/fuzz/fuzz_quant.c - libFuzzer harness for sdpa_quantize_i8 and
 * sdpa_dequantize_i8.
 *
 * The input bytes choose the matrix (rows <= 24, cols <= 48, leading
 * dimensions with padding), the axis, and the magnitudes: per row or column
 * a power of two from subnormal to near FLT_MAX, zeros, rows below the
 * 1e-30 cut-off, and planted NaN/Inf. Checked against the header's words:
 *   quantize: q in [-127, 127]; scale = max|x| / 127 (0 with q 0 for a
 *   max below 1e-30); the round trip |q * scale - x| <= scale (1/2 + 2^-14);
 *   the largest |x| of a row or column maps to +-127; NaN/Inf anywhere is
 *   SDPA_ERR_PARAM with nothing written;
 *   dequantize: x = q * scale, one float product, bit for bit (NaN/Inf
 *   scales propagate); dequantize(quantize(x)) is the round trip above;
 *   both: padding between rows never written, exactly-sized buffers (ASan),
 *   and bad arguments (negative sizes, ld < cols, NULL, a bad axis, sizes
 *   that overflow, overlapping x / q / scale) refused with the documented
 *   code and nothing written. */

#include "sdpa.h"
#include "fuzz_common.h"

#include <float.h>

static int same_bits(float a, float b) { return memcmp(&a, &b, 4) == 0; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size, 0};
    int64_t rows, cols, ldx, ldq, nsc, r, c2, i, nx, nq;
    sdpa_quant_axis axis;
    float *x, *sc, *x2, *sc_before;
    int8_t *q, *q_before;
    char eb[48];
    int rc, bad = 0, mut, want = SDPA_OK;

    fz_seed(&in);
    rows = fz_range(&in, 0, 24);
    cols = fz_range(&in, 0, 48);
    ldx = cols + fz_range(&in, 0, 3);
    ldq = cols + fz_range(&in, 0, 5);
    axis = fz_bit(&in) ? SDPA_QUANT_PER_COL : SDPA_QUANT_PER_ROW;
    nsc = axis == SDPA_QUANT_PER_ROW ? rows : cols;
    nx = rows ? (rows - 1) * ldx + cols : 0;
    nq = rows ? (rows - 1) * ldq + cols : 0;
    x = (float *)malloc((size_t)(nx ? nx : 1) * sizeof(float));
    x2 = (float *)malloc((size_t)(nx ? nx : 1) * sizeof(float));
    q = (int8_t *)malloc((size_t)(nq ? nq : 1));
    q_before = (int8_t *)malloc((size_t)(nq ? nq : 1));
    sc = (float *)malloc((size_t)(nsc ? nsc : 1) * sizeof(float));
    sc_before = (float *)malloc((size_t)(nsc ? nsc : 1) * sizeof(float));

    /* values: per row (or column) a magnitude 2^e, some zero or tiny lines */
    for (i = 0; i < nx; i++) x[i] = -12345.0f; /* padding */
    {
        int64_t lines = axis == SDPA_QUANT_PER_ROW ? rows : cols, ln;
        for (ln = 0; ln < lines; ln++) {
            int kind = (int)fz_range(&in, 0, 7), e = (int)fz_range(&in, -149, 127);
            for (i = 0; i < (axis == SDPA_QUANT_PER_ROW ? cols : rows); i++) {
                int64_t rr = axis == SDPA_QUANT_PER_ROW ? ln : i, cc = axis == SDPA_QUANT_PER_ROW ? i : ln;
                double v;
                switch (kind) {
                case 0: v = 0; break;
                case 1: v = fz_uniform(-1, 1) * 1e-31; break; /* below the cut-off */
                case 2: v = fz_uniform(-1, 1) * ldexp(1.0, e); break;
                case 3: v = (fz_next() & 1 ? 1.0 : -1.0) * (double)FLT_MAX * fz_uniform(0.5, 1); break;
                case 4: v = (double)((int64_t)(fz_next() % 255) - 127) * 0.5; break; /* ties */
                default: v = fz_uniform(-1, 1) * ldexp(1.0, e / 8); break;
                }
                x[rr * ldx + cc] = (float)v;
            }
        }
    }
    if (nx && fz_chance(&in, 2)) { /* NaN or Inf somewhere */
        int64_t rr = fz_range(&in, 0, rows - 1), cc = fz_range(&in, 0, cols > 0 ? cols - 1 : 0);
        if (cols > 0) x[rr * ldx + cc] = fz_bit(&in) ? NAN : (fz_bit(&in) ? INFINITY : -INFINITY), bad = 1;
    }
    for (i = 0; i < nq; i++) q[i] = q_before[i] = (int8_t)0x5A;
    for (i = 0; i < nsc; i++) sc[i] = sc_before[i] = -777.0f;
    memset(eb, 'Z', sizeof eb);

    /* one bad argument, or none */
    mut = fz_chance(&in, 4) ? (int)fz_range(&in, 1, 9) : 0;
    {
        const float *xa = x;
        int8_t *qa = q;
        float *sa = sc;
        int64_t ra = rows, ca = cols, lxa = ldx, lqa = ldq;
        int ax = (int)axis;
        fz_what = "quantize";
        switch (mut) {
        case 1: ra = -1 - (int64_t)fz_u8(&in); want = SDPA_ERR_SHAPE; break;
        case 2: if (rows && cols) lxa = cols - 1, want = SDPA_ERR_STRIDE; break;
        case 3: if (rows && cols) xa = NULL, want = SDPA_ERR_NULL; break;
        case 4: ax = 2 + (int)fz_u8(&in); want = SDPA_ERR_PARAM; break;
        case 5: if (rows > 1 && cols) lxa = INT64_MAX / 2, want = SDPA_ERR_OVERFLOW; break;
        case 6: if (rows && cols) qa = (int8_t *)(void *)(x + nx / 2), want = SDPA_ERR_ALIAS; break; /* q inside x */
        case 7: if (rows && cols) sa = (float *)(void *)q, want = SDPA_ERR_ALIAS; break;          /* scale over q */
        case 8: if (rows && cols) sa = x + (nx > 1 ? 1 : 0) /* empty matrices: nothing can overlap */, want = SDPA_ERR_ALIAS; break;        /* scale over x */
        case 9: if (rows && cols) lqa = cols - 1, want = SDPA_ERR_STRIDE; break;
        }
        if (want == SDPA_OK && bad) want = SDPA_ERR_PARAM;
        rc = sdpa_quantize_i8(xa, ra, ca, lxa, qa, lqa, sa, (sdpa_quant_axis)ax, eb, sizeof eb - 8);
        FZ_CHECK(rc == want, "mutation %d: rc %d (%s), want %d; rows %lld cols %lld", mut, rc, sdpa_strerror(rc), want,
                 (long long)rows, (long long)cols);
        if (rc != SDPA_OK) {
            FZ_CHECK(memcmp(q, q_before, (size_t)nq) == 0, "q written by a failing call");
            FZ_CHECK(memcmp(sc, sc_before, (size_t)nsc * sizeof(float)) == 0, "scale written by a failing call");
            FZ_CHECK(eb[0] != 'Z' && memchr(eb, 0, sizeof eb - 8) && eb[sizeof eb - 8] == 'Z', "errbuf: no message or overrun");
        }
    }
    if (rc == SDPA_OK) {
        fz_what = "quantize result";
        for (r = 0; r < rows; r++)
            for (i = cols; i < ldq && r < rows - 1; i++) FZ_CHECK(q[r * ldq + i] == 0x5A, "q padding written");
        for (i = 0; i < nsc && rows && cols; i++) { /* an empty matrix: nothing is written */
            double amax = 0, s = sc[i];
            int64_t n = axis == SDPA_QUANT_PER_ROW ? cols : rows, at = -1, j;
            for (j = 0; j < n; j++) {
                float v = axis == SDPA_QUANT_PER_ROW ? x[i * ldx + j] : x[j * ldx + i];
                if (fabs(v) > amax) amax = fabs(v), at = j;
            }
            if (amax < 1e-30) {
                FZ_CHECK(s == 0, "line %lld: max %g below 1e-30, scale %g", (long long)i, amax, s);
            } else {
                FZ_CHECK(same_bits(sc[i], (float)(amax / 127.0)) || fabs(s - amax / 127.0) <= 1.2e-7 * (amax / 127.0),
                         "line %lld: scale %.9g, max/127 = %.9g", (long long)i, s, amax / 127.0);
                {
                    int8_t qm = axis == SDPA_QUANT_PER_ROW ? q[i * ldq + at] : q[at * ldq + i];
                    FZ_CHECK(qm == 127 || qm == -127, "line %lld: the largest element quantised to %d", (long long)i, qm);
                }
            }
            for (j = 0; j < n; j++) {
                int64_t rr = axis == SDPA_QUANT_PER_ROW ? i : j, cc = axis == SDPA_QUANT_PER_ROW ? j : i;
                int8_t qv = q[rr * ldq + cc];
                double xv = x[rr * ldx + cc];
                FZ_CHECK(qv >= -127, "q = -128");
                FZ_CHECK(fabs((double)qv * s - xv) <= s * (0.5 + 1.0 / 16384) || (s == 0 && qv == 0),
                         "x[%lld][%lld] = %.9g -> q %d, scale %.9g: round trip %.9g", (long long)rr, (long long)cc, xv, qv, s,
                         (double)qv * s);
            }
        }
        /* dequantize what came out: the same bound, bit for bit q * scale */
        fz_what = "round trip";
        for (i = 0; i < nx; i++) x2[i] = -9999.0f;
        rc = sdpa_dequantize_i8(q, rows, cols, ldq, sc, axis, x2, ldx, NULL, 0);
        FZ_CHECK(rc == SDPA_OK, "dequantize: rc %d", rc);
        for (r = 0; r < rows; r++)
            for (c2 = 0; c2 < ldx && (r < rows - 1 || c2 < cols); c2++) {
                float got = x2[r * ldx + c2];
                if (c2 >= cols) { FZ_CHECK(got == -9999.0f, "x padding written"); continue; }
                FZ_CHECK(same_bits(got, (float)q[r * ldq + c2] * sc[axis == SDPA_QUANT_PER_ROW ? r : c2]),
                         "dequantize [%lld][%lld]: %.9g", (long long)r, (long long)c2, got);
            }
    }

    /* dequantize on its own: any q (-128 included), any scale (NaN, Inf, 0, subnormal) */
    fz_what = "dequantize";
    for (i = 0; i < nq; i++) q[i] = (int8_t)(fz_next() & 255u);
    for (i = 0; i < nsc; i++) {
        unsigned k = (unsigned)(fz_next() % 8u);
        sc[i] = k == 0 ? NAN : k == 1 ? INFINITY : k == 2 ? 0.0f : k == 3 ? 1e-45f : (float)fz_uniform(-2, 2);
    }
    for (i = 0; i < nx; i++) x2[i] = -9999.0f;
    mut = fz_chance(&in, 4) ? (int)fz_range(&in, 1, 4) : 0;
    want = SDPA_OK;
    {
        float *xa = x2;
        int64_t lxa = ldx;
        switch (mut) {
        case 1: if (rows && cols) xa = (float *)(void *)q, want = SDPA_ERR_ALIAS; break;
        case 2: if (rows && cols) xa = sc, want = SDPA_ERR_ALIAS; break;
        case 3: if (rows && cols) lxa = cols - 1, want = SDPA_ERR_STRIDE; break;
        case 4: if (rows && cols) xa = NULL, want = SDPA_ERR_NULL; break;
        }
        for (i = 0; i < nq; i++) q_before[i] = q[i];
        for (i = 0; i < nsc; i++) sc_before[i] = sc[i];
        rc = sdpa_dequantize_i8(q, rows, cols, ldq, sc, axis, xa, lxa, eb, sizeof eb);
        FZ_CHECK(rc == want, "dequantize mutation %d: rc %d, want %d", mut, rc, want);
        FZ_CHECK(memcmp(q, q_before, (size_t)nq) == 0, "dequantize wrote q");
        FZ_CHECK(memcmp(sc, sc_before, (size_t)nsc * sizeof(float)) == 0 || nsc == 0, "dequantize wrote scale");
        for (r = 0; r < rows; r++)
            for (c2 = 0; c2 < ldx && (r < rows - 1 || c2 < cols); c2++) {
                float got = x2[r * ldx + c2];
                if (c2 >= cols || rc != SDPA_OK) FZ_CHECK(got == -9999.0f, "x written where it may not be");
                else FZ_CHECK(same_bits(got, (float)q[r * ldq + c2] * sc[axis == SDPA_QUANT_PER_ROW ? r : c2]),
                              "dequantize [%lld][%lld] = %.9g", (long long)r, (long long)c2, got);
            }
    }
    free(x), free(x2), free(q), free(q_before), free(sc), free(sc_before);
    return 0;
}

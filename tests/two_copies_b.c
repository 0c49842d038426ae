/* two_copies_b.c - copy B of the library, private to this file (SDPA_STATIC).
 * tests/two_copies_main.c links it with copy A and with an extern copy of
 * its own and calls all three at once from different threads. */
#define SDPA_STATIC
#define SDPA_IMPLEMENTATION
#include "sdpa.h"

typedef int (*two_copies_fn)(const sdpa_tensor *, const sdpa_tensor *, const sdpa_tensor *,
                             const sdpa_tensor *, const sdpa_params *);

/* This copy's sdpa_attention, and the address of its version string (distinct
 * copies have distinct functions and data). */
two_copies_fn two_copies_b_attention(void);
const char *two_copies_b_version(void);

two_copies_fn two_copies_b_attention(void) { return sdpa_attention; }
const char *two_copies_b_version(void) { return sdpa_version(); }

/* Use the rest of the API so that -Wunused-function stays quiet. */
int two_copies_b_selfcheck(void);
int two_copies_b_selfcheck(void) {
    int64_t ws = sdpa_workspace_size(0, 0, 0, 0, 0);
    const char *e = sdpa_strerror(SDPA_ERR_NULL);
    return ws < 0 && e && e[0] && sdpa_f16_to_f32(sdpa_f32_to_f16(1.0f)) == 1.0f &&
           sdpa_bf16_to_f32(sdpa_f32_to_bf16(1.0f)) == 1.0f;
}

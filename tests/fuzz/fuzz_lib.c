/* tests/fuzz/fuzz_lib.c - the library, compiled once for the three fuzz
 * harnesses (with coverage and the sanitizers, -fsanitize=fuzzer-no-link):
 * each harness includes sdpa.h for the declarations only. */
#define SDPA_IMPLEMENTATION
#include "sdpa.h"

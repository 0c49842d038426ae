/* compile_c99.c - the header with its implementation as plain C.
 *
 * `make test` builds this file with gcc and clang (when installed) at
 * -std=c99 and -std=c11, -pedantic -Wall -Wextra -Werror, and again with
 * -DSDPA_NO_THREADS, -DSDPA_STATIC and (gcc) -fopenmp; each binary then runs
 * the smoke test in compile_smoke.h.
 *
 *   -DCOMPILE_TEST_SYSTEM_FIRST  include system headers before sdpa.h, as many
 *                                user files do (feature-test macros are then
 *                                fixed before the implementation sees them)
 *   -DCOMPILE_TEST_NO_MAIN       only the implementation: the object that the
 *                                C++ link test (compile_cxx.cpp) links against
 */
#ifdef COMPILE_TEST_SYSTEM_FIRST
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#endif

#define SDPA_IMPLEMENTATION
#include "sdpa.h"

#ifndef COMPILE_TEST_NO_MAIN
#include "compile_smoke.h"

int main(void) {
    return smoke_run() ? 1 : 0;
}
#endif

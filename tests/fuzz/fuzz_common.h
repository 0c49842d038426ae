/* tests/fuzz/fuzz_common.h - what the libFuzzer harnesses share: a reader
 * that decodes the input bytes into bounded choices, a generator for the
 * bulk values, a counting allocator that can fail on request, and the
 * failure report (abort: libFuzzer then saves the input as a crash).
 *
 * Each harness is one .c file that includes this and defines
 * LLVMFuzzerTestOneInput, linked with the library compiled once from
 * fuzz_lib.c; built with clang -fsanitize=fuzzer,address,undefined (make
 * fuzz-build), or with -DFUZZ_STANDALONE_MAIN into a program that runs the
 * files named on its command line (any compiler, e.g. to replay the seeds
 * under valgrind: cc -DFUZZ_STANDALONE_MAIN -Iinclude
 * tests/fuzz/fuzz_quant.c tests/fuzz/fuzz_lib.c -lm -pthread). */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The harness's own loops (the reference, the checks) need no coverage
 * feedback; their comparison tracing would cost most of the run time. */
#if defined(__clang__) && __clang_major__ >= 13
#define FZ_NOCOV __attribute__((no_sanitize("coverage")))
#else
#define FZ_NOCOV
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FZ_MAYBE_UNUSED __attribute__((unused)) /* not every harness uses every helper */
#else
#define FZ_MAYBE_UNUSED
#endif

/* ---- the input, read front to back; past its end every read gives 0 ---- */
typedef struct {
    const uint8_t *p;
    size_t n, at;
} fz_in;

static unsigned fz_u8(fz_in *in) { return in->at < in->n ? in->p[in->at++] : 0u; }
static unsigned fz_u16(fz_in *in) { unsigned a = fz_u8(in); return a | (fz_u8(in) << 8); }
/* lo..hi inclusive, from one byte (two when the range is wider than 256) */
static int64_t fz_range(fz_in *in, int64_t lo, int64_t hi)
{
    uint64_t span = (uint64_t)(hi - lo) + 1u;
    unsigned x = span > 256u ? fz_u16(in) : fz_u8(in);
    return lo + (int64_t)((uint64_t)x % span);
}
static int fz_bit(fz_in *in) { return (int)(fz_u8(in) & 1u); }
/* true with probability about k/16 */
static int fz_chance(fz_in *in, unsigned k) { return (fz_u8(in) & 15u) < k; }

/* ---- bulk values: splitmix64 seeded from the input ---- */
static uint64_t fz_rng;
static uint64_t fz_next(void)
{
    uint64_t z = (fz_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double fz_unit(void) { return (double)(fz_next() >> 11) * (1.0 / 9007199254740992.0); }
static double fz_uniform(double lo, double hi) { return lo + (hi - lo) * fz_unit(); }
static void fz_seed(fz_in *in)
{
    uint64_t s = 0;
    int i;
    for (i = 0; i < 4; i++) s = (s << 8) | fz_u8(in);
    fz_rng = s * 0x2545F4914F6CDD1Dull + 1u;
}

/* ---- failure: print what went wrong and abort, so libFuzzer keeps the input ---- */
static const char *fz_what = "";
#define FZ_CHECK(cond, ...)                                                         \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "\nFUZZ CHECK FAILED (%s:%d) [%s]: ", __FILE__, __LINE__, fz_what); \
            fprintf(stderr, __VA_ARGS__);                                           \
            fprintf(stderr, "\n");                                                  \
            abort();                                                                \
        }                                                                           \
    } while (0)

/* ---- counting allocator; fails the fail_at-th call (1-based; 0 = never) ---- */
typedef struct {
    int64_t calls, fail_at, live, peak, total;
} fz_alloc;

FZ_MAYBE_UNUSED static void *fz_alloc_fn(void *user, size_t size, size_t align)
{
    fz_alloc *a = (fz_alloc *)user;
    unsigned char *p;
    FZ_CHECK(align != 0 && (align & (align - 1)) == 0, "alignment %zu", align);
    if (++a->calls == a->fail_at) return NULL;
    p = (unsigned char *)malloc(size + 16);
    if (!p) return NULL;
    memcpy(p, &size, sizeof size); /* the size, to check free's argument */
    memset(p + 16, 0xA5, size);    /* scratch starts as garbage */
    a->live += (int64_t)size;
    a->total += (int64_t)size;
    if (a->live > a->peak) a->peak = a->live;
    return p + 16; /* 16-byte aligned only: the library must align what it needs */
}

FZ_MAYBE_UNUSED static void fz_free_fn(void *user, void *ptr, size_t size)
{
    fz_alloc *a = (fz_alloc *)user;
    size_t got;
    FZ_CHECK(ptr != NULL, "free(NULL) through the hook");
    memcpy(&got, (unsigned char *)ptr - 16, sizeof got);
    FZ_CHECK(got == size, "free with size %zu, allocated %zu", size, got);
    a->live -= (int64_t)size;
    free((unsigned char *)ptr - 16);
}

/* ---- IEEE half and bfloat16, exactly (for the reference) ---- */
FZ_MAYBE_UNUSED static double fz_f16_value(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 31) v = m ? NAN : INFINITY;
    else if (e == 0) v = ldexp((double)m, -24);
    else v = ldexp((double)(m + 1024), e - 25);
    return (h & 0x8000u) ? -v : v;
}
FZ_MAYBE_UNUSED static double fz_bf16_value(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return (double)f;
}

#ifdef FUZZ_STANDALONE_MAIN
/* Without libFuzzer: run each file given (a corpus replay). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int main(int argc, char **argv)
{
    int i;
    for (i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        unsigned char *buf;
        long n;
        if (!f) { perror(argv[i]); return 1; }
        fseek(f, 0, SEEK_END);
        n = ftell(f);
        fseek(f, 0, SEEK_SET);
        buf = (unsigned char *)malloc((size_t)(n > 0 ? n : 1));
        if (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) { perror(argv[i]); return 1; }
        fclose(f);
        LLVMFuzzerTestOneInput(buf, (size_t)n);
        free(buf);
    }
    printf("%d inputs ran\n", argc - 1);
    return 0;
}
#endif

#endif

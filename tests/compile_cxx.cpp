// compile_cxx.cpp - the header with its implementation as C++.
//
// `make test` builds this file with g++ and clang++ (when installed) at
// -std=c++11 and -std=c++17, -Wall -Wextra -Werror, also with -DSDPA_NO_THREADS
// and -DSDPA_STATIC. Each binary runs the smoke test in compile_smoke.h, then
// calls sdpa_attention from several std::threads at once (each call using
// library threads too) and checks every result is bitwise the same as a
// single-threaded call.
//
//   -DCOMPILE_TEST_DECL_ONLY  declarations only; linked with compile_c99.c built
//                             as C with -DCOMPILE_TEST_NO_MAIN, which checks the
//                             extern "C" linkage of the API
#ifndef COMPILE_TEST_DECL_ONLY
#define SDPA_IMPLEMENTATION
#endif
#include "sdpa.h"
#include "compile_smoke.h"

#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

namespace {

struct Problem {
    int64_t B, Hq, Hkv, Lq, Lk, D;
    std::vector<float> q, k, v;
};

sdpa_tensor make_tensor(void *data, int64_t b, int64_t h, int64_t l, int64_t d) {
    sdpa_tensor t = {};
    t.data = data;
    t.dtype = SDPA_F32;
    t.shape[0] = b; t.shape[1] = h; t.shape[2] = l; t.shape[3] = d;
    return t;
}

int run(const Problem &pr, std::vector<float> &out, int threads) {
    sdpa_tensor q = make_tensor(const_cast<float *>(pr.q.data()), pr.B, pr.Hq, pr.Lq, pr.D);
    sdpa_tensor k = make_tensor(const_cast<float *>(pr.k.data()), pr.B, pr.Hkv, pr.Lk, pr.D);
    sdpa_tensor v = make_tensor(const_cast<float *>(pr.v.data()), pr.B, pr.Hkv, pr.Lk, pr.D);
    sdpa_tensor o = make_tensor(out.data(), pr.B, pr.Hq, pr.Lq, pr.D);
    sdpa_params p = {};
    p.causal = SDPA_CAUSAL_TOP_LEFT;
    p.num_threads = threads;
    return sdpa_attention(&q, &k, &v, &o, &p);
}

int threads_test() {
    Problem pr = { 2, 8, 2, 70, 70, 40, {}, {}, {} };
    unsigned seed = 777u;
    pr.q.resize(size_t(pr.B * pr.Hq * pr.Lq * pr.D));
    pr.k.resize(size_t(pr.B * pr.Hkv * pr.Lk * pr.D));
    pr.v.resize(size_t(pr.B * pr.Hkv * pr.Lk * pr.D));
    for (float &x : pr.q) x = smoke_rand(&seed);
    for (float &x : pr.k) x = smoke_rand(&seed);
    for (float &x : pr.v) x = smoke_rand(&seed);

    const size_t n_out = size_t(pr.B * pr.Hq * pr.Lq * pr.D);
    std::vector<float> expect(n_out);
    int rc = run(pr, expect, 1);
    if (rc != SDPA_OK) {
        std::fprintf(stderr, "threads: %s\n", sdpa_strerror(rc));
        return 1;
    }

    const int n_callers = 4, iterations = 8;
    std::vector<int> bad(n_callers, 0);
    std::vector<std::thread> callers;
    for (int t = 0; t < n_callers; t++) {
        callers.emplace_back([&, t]() {
            std::vector<float> out(n_out);
            for (int it = 0; it < iterations; it++) {
                std::memset(out.data(), 0xFF, n_out * sizeof(float));
                if (run(pr, out, 1 + (t + it) % 3) != SDPA_OK ||
                    std::memcmp(out.data(), expect.data(), n_out * sizeof(float)) != 0)
                    bad[size_t(t)]++;
            }
        });
    }
    for (std::thread &th : callers) th.join();
    int fails = 0;
    for (int t = 0; t < n_callers; t++) fails += bad[size_t(t)];
    std::printf("threads (%d callers x %d calls): %s\n", n_callers, iterations, fails ? "FAILED" : "ok");
    return fails;
}

} // namespace

int main() {
    int fails = smoke_run();
    fails += threads_test();
    return fails ? 1 : 0;
}

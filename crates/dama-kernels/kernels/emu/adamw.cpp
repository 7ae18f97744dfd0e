// CPU emulation test of kernels/adamw.cu (no GPU needed): runs the kernel through emu.h (one
// std::thread per CUDA thread, blocks one after another) on the grid src/cuda/adamw.rs
// launches (ADAMW_U elements per thread) and checks every element against a plain loop over
// the same arithmetic, bit for bit: sizes around the block and unroll boundaries, every
// variable / gradient dtype pair, with and without a master copy, weight decay, and bf16
// stochastic rounding, a gradient scale (clipping). What it guards: the index coverage of the unrolled grid-stride loop.
// Run: kernels/emu/run.sh.
#include "emu.h"
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
// IEEE round-to-nearest single operations (compiled with -ffp-contract=off: no fused ops)
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
using std::isnan;
#define DAMA_EMU 1
#include "../adamw.cu"
#include <random>

static uint32_t bits(float x) { return __float_as_uint(x); }
static uint16_t bits(__nv_bfloat16 x) { uint16_t u; memcpy(&u, &x, 2); return u; }

template <typename P, typename G>
int run(long long n, bool master, bool wd, bool sr, uint64_t seed, bool scaled = false) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    const int k = master ? 3 : 2;
    std::vector<float> state((size_t)k * n);
    std::vector<P> p(n);
    std::vector<G> g(n);
    for (auto& x : state) x = std::abs(nd(rng)) * 1e-3f;
    for (auto& x : p) x = from_f<P>(nd(rng));
    for (auto& x : g) x = from_f<G>(nd(rng) * 1e-2f);
    if (master) for (long long i = 0; i < n; ++i) state[i] = to_f(p[i]) + 1e-4f;
    // the reference: the same arithmetic, one element at a time
    std::vector<float> rs = state;
    std::vector<P> rp = p;
    const float decay = 0.99f, b1 = 0.9f, omb1 = 0.1f, b2 = 0.999f, omb2 = 0.001f, ibc = 1.3f,
                eps = 1e-8f, ss = 1e-3f;
    const unsigned long long key = 0x1234abcdull;
    const float gscale = 0.37f;
    float* rm = rs.data() + (master ? n : 0);
    float* rv = rm + n;
    for (long long i = 0; i < n; ++i) {
        float w = master ? rs[i] : to_f(rp[i]), mi = rm[i], vi = rv[i];
        const float gi = scaled ? to_f(g[i]) * gscale : to_f(g[i]);
        adamw_math(gi, w, mi, vi, wd, decay, b1, omb1, b2, omb2, ibc, eps, ss);
        rm[i] = mi;
        rv[i] = vi;
        if (master) rs[i] = w;
        adamw_store<P>(&rp[i], w, sr, key, i);
    }
    // the kernel, on src/cuda/adamw.rs's grid
    const unsigned threads = 256;
    const unsigned blocks = (unsigned)std::max<long long>(1, ((n + ADAMW_U - 1) / ADAMW_U + threads - 1) / threads);
    launch(Dim3{blocks, 1, 1}, threads, [&] {
        adamw<P, G>(state.data(), p.data(), g.data(), n, master, wd, decay, b1, omb1, b2, omb2, ibc, eps, ss, sr, key, scaled, gscale);
    });
    long long bad = 0;
    for (size_t i = 0; i < state.size(); ++i) bad += bits(state[i]) != bits(rs[i]);
    for (long long i = 0; i < n; ++i) bad += bits(p[i]) != bits(rp[i]);
    printf("n %lld master %d wd %d sr %d scaled %d p %zu g %zu: %lld mismatches %s\n", n, master, wd, sr, scaled, sizeof(P), sizeof(G), bad, bad ? "FAIL" : "ok");
    return bad ? 1 : 0;
}

int main() {
    int fails = 0;
    for (long long n : {1LL, 3LL, 255LL, 1024LL, 1025LL, 4099LL}) {
        fails += run<float, float>(n, false, true, false, n);
        fails += run<float, __nv_bfloat16>(n, false, false, false, n + 1);
        fails += run<__nv_bfloat16, float>(n, true, true, false, n + 2);
        fails += run<__nv_bfloat16, __nv_bfloat16>(n, true, false, false, n + 3);
        fails += run<__nv_bfloat16, __nv_bfloat16>(n, false, true, true, n + 4);
        fails += run<float, float>(n, false, false, false, n + 5, true);
        fails += run<__nv_bfloat16, __nv_bfloat16>(n, true, true, false, n + 6, true);
    }
    printf("%s\n", fails ? "FAILED" : "all ok");
    return fails;
}

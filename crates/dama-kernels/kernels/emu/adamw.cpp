// CPU emulation test of kernels/adamw.cu (no GPU needed): runs the kernel through emu.h (one
// std::thread per CUDA thread, blocks one after another) on the grid src/cuda/adamw.rs
// launches (ADAMW_U elements per thread) and checks every element against a plain loop over
// the same arithmetic, bit for bit: sizes around the block and unroll boundaries, every
// variable / gradient dtype pair, with and without a master copy, weight decay, and bf16
// stochastic rounding, a gradient scale (clipping). What it guards: the index coverage of the unrolled grid-stride loop.
// The 8-bit kernel (adamw8) is checked the same way against a plain per-block loop that finds
// the nearest map value by a linear scan (not the kernel's binary search), on sizes around the
// quantisation block (2048) and the 8-bit threshold, all-zero blocks included, over three steps
// (the second and third read the codes the kernel wrote).
// Run: kernels/emu/run.sh.
#include "emu.h"
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
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

// The nearest map value by a linear scan, ties to the lower index (quant8::nearest).
static unsigned char nearest_scan(const float* map, float x) {
    int best = 0;
    for (int j = 1; j < 256; ++j)
        if (std::fabs(map[j] - x) < std::fabs(map[best] - x)) best = j;
    return (unsigned char)best;
}

template <typename P, typename G>
int run8(long long n, bool master, bool wd, bool sr, uint64_t seed, bool scaled = false) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    const long long nb = (n + QBLOCK - 1) / QBLOCK;
    const long long off = master ? n : 0;
    std::vector<float> state(off + 2 * nb, 0.f), qs(256), qu(256);
    for (int k = 0; k < 256; ++k) { qs[k] = __uint_as_float(QMAP8_SIGNED_BITS[k]); qu[k] = __uint_as_float(QMAP8_UNSIGNED_BITS[k]); }
    std::vector<unsigned char> codes(2 * n);
    for (long long i = 0; i < n; ++i) { codes[i] = 127; codes[n + i] = 0; }
    std::vector<P> p(n);
    for (auto& x : p) x = from_f<P>(nd(rng));
    if (master) for (long long i = 0; i < n; ++i) state[i] = to_f(p[i]) + 1e-4f;
    std::vector<float> rs = state;
    std::vector<unsigned char> rc = codes;
    std::vector<P> rp = p;
    const float decay = 0.99f, b1 = 0.9f, omb1 = 0.1f, b2 = 0.999f, omb2 = 0.001f, ibc = 1.3f,
                eps = 1e-8f, ss = 1e-3f, gscale = 0.37f;
    const unsigned long long key = 0x1234abcdull;
    long long bad = 0;
    for (int t = 0; t < 3; ++t) {
        std::vector<G> g(n);
        for (long long i = 0; i < n; ++i) {
            // magnitudes over 5 decades; the second block of a large tensor stays all zero
            const bool zero_block = n > 2 * QBLOCK && i / QBLOCK == 1;
            g[i] = from_f<G>(zero_block ? 0.f : nd(rng) * std::pow(10.f, -1.f - 5.f * (float)(rng() % 1000) / 1000.f));
        }
        // the reference: block by block, one element at a time
        for (long long blk = 0; blk < nb; ++blk) {
            const long long lo = blk * QBLOCK, hi = std::min(n, lo + QBLOCK);
            std::vector<float> m(hi - lo), v(hi - lo);
            float nm = 0.f, nv = 0.f;
            for (long long i = lo; i < hi; ++i) {
                float w = master ? rs[i] : to_f(rp[i]);
                float mi = qs[rc[i]] * rs[off + blk], vi = qu[rc[n + i]] * rs[off + nb + blk];
                const float gi = scaled ? to_f(g[i]) * gscale : to_f(g[i]);
                adamw_math(gi, w, mi, vi, wd, decay, b1, omb1, b2, omb2, ibc, eps, ss);
                if (master) rs[i] = w;
                adamw_store<P>(&rp[i], w, sr, key, i);
                m[i - lo] = mi; v[i - lo] = vi;
                nm = std::max(nm, std::fabs(mi)); nv = std::max(nv, std::fabs(vi));
            }
            rs[off + blk] = nm; rs[off + nb + blk] = nv;
            for (long long i = lo; i < hi; ++i) {
                rc[i] = nearest_scan(qs.data(), nm > 0.f ? m[i - lo] / nm : 0.f);
                rc[n + i] = nearest_scan(qu.data(), nv > 0.f ? v[i - lo] / nv : 0.f);
            }
        }
        // the kernel, on src/cuda/adamw.rs's grid: one CUDA block per quantisation block
        launch(Dim3{(unsigned)nb, 1, 1}, ADAMW8_THREADS, [&] {
            adamw8<P, G>(state.data(), codes.data(), p.data(), g.data(), n, master, wd, decay, b1, omb1, b2, omb2, ibc, eps, ss, sr, key, scaled, gscale);
        });
        for (size_t i = 0; i < state.size(); ++i) bad += bits(state[i]) != bits(rs[i]);
        for (long long i = 0; i < n; ++i) bad += bits(p[i]) != bits(rp[i]);
        for (long long i = 0; i < 2 * n; ++i) bad += codes[i] != rc[i];
    }
    printf("8-bit n %lld master %d wd %d sr %d scaled %d p %zu g %zu: %lld mismatches %s\n", n, master, wd, sr, scaled, sizeof(P), sizeof(G), bad, bad ? "FAIL" : "ok");
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
    for (long long n : {4096LL, 4097LL, 6200LL, 2 * 2048LL + 1}) {
        fails += run8<float, float>(n, false, true, false, n);
        fails += run8<float, __nv_bfloat16>(n, false, false, false, n + 1, true);
        fails += run8<__nv_bfloat16, float>(n, true, true, false, n + 2);
        fails += run8<__nv_bfloat16, __nv_bfloat16>(n, false, true, true, n + 3);
        fails += run8<__nv_bfloat16, __nv_bfloat16>(n, true, false, false, n + 4, true);
    }
    printf("%s\n", fails ? "FAILED" : "all ok");
    return fails;
}

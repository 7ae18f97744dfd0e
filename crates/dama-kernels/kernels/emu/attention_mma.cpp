// CPU emulation test of kernels/attention_mma.cu (no GPU needed): every CUDA thread of a block
// is a std::thread, __syncthreads and the warp collectives are barriers, mma.m16n8k16 is
// computed from the PTX ISA's fragment layouts (emu.h). Runs the forward, dQ and dK/dV kernels
// on causal+padding and shared-prefix masks, GQA, strided and misaligned q rows, d = 32, 64,
// 80, 96, 128, t up to 736, against a double-precision reference; bf16 tolerance 2e-2 of the
// largest entry. Every case runs twice: fragments by scalar shared loads (attn_mma_*) and by
// ldmatrix (attn_mma_ldsm_*, emulated in emu.h).
// Run: kernels/emu/run.sh (g++ with C++20 and the CUDA headers; ~1.5 min, ASAN=1 slower).
#include "emu.h"
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
#define DAMA_EMU 1
#include "../attention_mma.cu"
#include <cstdio>
#include <random>
#include <algorithm>

static float rbf(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

struct Case { int b, t, hq, hkv, d; int kind; int qpad = 8; };  // kind 0 causal+padding, 1 shared prefix

int run(Case c, uint64_t seed, bool ldsm) {
    const int b = c.b, t = c.t, hq = c.hq, hkv = c.hkv, d = c.d;
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    // q with a padded row stride (strided view) to exercise strides; k, v contiguous
    const int qpad = c.qpad;
    std::vector<bf16> q((size_t)b * t * hq * (d + qpad)), k((size_t)b * t * hkv * d), v(k.size()), go((size_t)b * t * hq * d);
    for (auto& x : q) x = __float2bfloat16_rn(nd(rng));
    for (auto& x : k) x = __float2bfloat16_rn(nd(rng));
    for (auto& x : v) x = __float2bfloat16_rn(nd(rng));
    for (auto& x : go) x = __float2bfloat16_rn(nd(rng));
    auto Q = [&](int bi, int i, int h, int e) { return __bfloat162float(q[(((size_t)bi * t + i) * hq + h) * (d + qpad) + e]); };
    auto K = [&](int bi, int j, int g, int e) { return __bfloat162float(k[(((size_t)bi * t + j) * hkv + g) * d + e]); };
    auto V = [&](int bi, int j, int g, int e) { return __bfloat162float(v[(((size_t)bi * t + j) * hkv + g) * d + e]); };
    auto G = [&](int bi, int i, int h, int e) { return __bfloat162float(go[(((size_t)bi * t + i) * hq + h) * d + e]); };
    std::vector<uint4> spans((size_t)b * t);
    for (int bi = 0; bi < b; ++bi) {
        int len = bi == 0 ? t : std::max(1, t * 2 / 3 - 5 * bi);
        int P = t / 3 + 1, C = (len - P) / 2;
        for (int i = 0; i < t; ++i) {
            uint4 s = make_uint4(0, 0, 0, 0);
            if (i < len) {
                if (c.kind == 0) s = make_uint4(0, i + 1, 0, 0);
                else if (i < P + C) s = make_uint4(0, i + 1, 0, 0);
                else s = make_uint4(0, P, P + C, i + 1);  // rejected sees prefix + itself
            }
            spans[(size_t)bi * t + i] = s;
        }
    }
    auto allowed = [&](int bi, int i, int j) { uint4 s = spans[(size_t)bi * t + i]; return ((unsigned)j >= s.x && (unsigned)j < s.y) || ((unsigned)j >= s.z && (unsigned)j < s.w); };
    const float scale = 1.0f / std::sqrt((float)d);
    // reference in double
    std::vector<double> O((size_t)b * t * hq * d, 0), L((size_t)b * t * hq), dQ(O.size(), 0), dK((size_t)b * t * hkv * d, 0), dV(dK.size(), 0);
    for (int bi = 0; bi < b; ++bi) for (int h = 0; h < hq; ++h) {
        int g = h / (hq / hkv);
        for (int i = 0; i < t; ++i) {
            std::vector<double> s(t, -INFINITY); double mx = -INFINITY;
            for (int j = 0; j < t; ++j) if (allowed(bi, i, j)) { double a = 0; for (int e = 0; e < d; ++e) a += (double)Q(bi, i, h, e) * K(bi, j, g, e); s[j] = a * scale; mx = std::max(mx, s[j]); }
            size_t r = ((size_t)bi * t + i) * hq + h;
            if (mx == -INFINITY) { L[r] = -INFINITY; continue; }
            double l = 0; for (int j = 0; j < t; ++j) if (s[j] > -INFINITY) l += std::exp(s[j] - mx);
            L[r] = mx + std::log(l);
            std::vector<double> p(t, 0); for (int j = 0; j < t; ++j) if (s[j] > -INFINITY) p[j] = std::exp(s[j] - L[r]);
            for (int e = 0; e < d; ++e) { double a = 0; for (int j = 0; j < t; ++j) a += p[j] * V(bi, j, g, e); O[r * d + e] = a; }
            double D = 0; for (int e = 0; e < d; ++e) D += G(bi, i, h, e) * O[r * d + e];
            for (int j = 0; j < t; ++j) if (p[j] > 0) {
                double dp = 0; for (int e = 0; e < d; ++e) dp += G(bi, i, h, e) * V(bi, j, g, e);
                double ds = p[j] * (dp - D);
                for (int e = 0; e < d; ++e) {
                    dQ[r * d + e] += scale * ds * K(bi, j, g, e);
                    dK[(((size_t)bi * t + j) * hkv + g) * d + e] += scale * ds * Q(bi, i, h, e);
                    dV[(((size_t)bi * t + j) * hkv + g) * d + e] += p[j] * G(bi, i, h, e);
                }
            }
        }
    }
    // kernels
    std::vector<bf16> out(O.size()), dq(O.size()), dk(dK.size()), dv(dK.size());
    std::vector<float> lse(L.size()), delta(L.size());
    Strides qs{(long long)t * hq * (d + qpad), (long long)hq * (d + qpad), d + qpad}, ks{(long long)t * hkv * d, (long long)hkv * d, d}, gs{(long long)t * hq * d, (long long)hq * d, d};
#define FWD(D) case D: (ldsm ? attn_mma_ldsm_fwd_d##D : attn_mma_fwd_d##D)(q.data(), k.data(), v.data(), spans.data(), out.data(), lse.data(), t, hq, hkv, qs.s0, qs.s1, qs.s2, ks.s0, ks.s1, ks.s2, ks.s0, ks.s1, ks.s2, scale); break;
    auto fwd = [&] { switch (d) { FWD(32) FWD(64) FWD(80) FWD(96) FWD(128) } };
    launch(Dim3{(unsigned)((t + 63) / 64), (unsigned)hq, (unsigned)b}, 128, fwd);
    for (size_t r = 0; r < L.size(); ++r) { double s = 0; for (int e = 0; e < d; ++e) s += (double)__bfloat162float(out[r * d + e]) * __bfloat162float(go[r * d + e]); delta[r] = (float)s; }
#define BWD(D) case D: (ldsm ? attn_mma_ldsm_bwd_dq_d##D : attn_mma_bwd_dq_d##D)(q.data(), k.data(), v.data(), go.data(), spans.data(), lse.data(), delta.data(), dq.data(), t, hq, hkv, qs.s0, qs.s1, qs.s2, ks.s0, ks.s1, ks.s2, ks.s0, ks.s1, ks.s2, gs.s0, gs.s1, gs.s2, scale); break;
#define KV(D) case D: (ldsm ? attn_mma_ldsm_bwd_dkdv_d##D : attn_mma_bwd_dkdv_d##D)(q.data(), k.data(), v.data(), go.data(), spans.data(), lse.data(), delta.data(), dk.data(), dv.data(), t, hq, hkv, qs.s0, qs.s1, qs.s2, ks.s0, ks.s1, ks.s2, ks.s0, ks.s1, ks.s2, gs.s0, gs.s1, gs.s2, scale); break;
    launch(Dim3{(unsigned)((t + 63) / 64), (unsigned)hq, (unsigned)b}, 128, [&] { switch (d) { BWD(32) BWD(64) BWD(80) BWD(96) BWD(128) } });
    launch(Dim3{(unsigned)((t + 31) / 32), (unsigned)hkv, (unsigned)b}, 64, [&] { switch (d) { KV(32) KV(64) KV(80) KV(96) KV(128) } });
    auto err = [](const std::vector<bf16>& a, const std::vector<double>& r) {
        double mx = 1e-30, df = 0;
        for (size_t i = 0; i < r.size(); ++i) { mx = std::max(mx, std::abs(r[i])); double x = __bfloat162float(a[i]); df = std::max(df, std::isnan(x) ? INFINITY : std::abs(x - r[i])); }
        return df / mx;
    };
    double le = 0; for (size_t r = 0; r < L.size(); ++r) { if (std::isinf(L[r])) { if (!(std::isinf(lse[r]) && lse[r] < 0)) le = INFINITY; } else le = std::max(le, std::abs(lse[r] - L[r])); }
    double eo = err(out, O), eq = err(dq, dQ), ek = err(dk, dK), ev = err(dv, dV);
    bool ok = eo < 2e-2 && eq < 2e-2 && ek < 2e-2 && ev < 2e-2 && le < 2e-2;
    printf("%s b%d t%d hq%d hkv%d d%d kind%d: out %.2e lse %.2e dq %.2e dk %.2e dv %.2e %s\n", ldsm ? "ldmatrix" : "scalar  ", b, t, hq, hkv, d, c.kind, eo, le, eq, ek, ev, ok ? "ok" : "FAIL");
    return ok ? 0 : 1;
}

int main(int argc, char** argv) {
    int fails = 0;
    Case cs[] = {{2, 150, 4, 2, 64, 0}, {2, 90, 2, 2, 128, 1}, {1, 70, 2, 1, 32, 0}, {1, 70, 2, 1, 80, 0}, {2, 130, 8, 2, 128, 0}, {2, 130, 3, 3, 64, 1}, {1, 17, 1, 1, 64, 0}, {2, 77, 2, 1, 64, 1, 2}, {1, 40, 2, 2, 128, 0, 6}, {1, 100, 2, 1, 96, 1}, {1, 736, 2, 1, 128, 0}};
    // both fragment loaders: scalar shared-memory loads and ldmatrix
    for (bool ldsm : {false, true})
        for (auto& c : cs) fails += run(c, 42, ldsm);
    printf("%s\n", fails ? "FAILED" : "all ok");
    return fails;
}

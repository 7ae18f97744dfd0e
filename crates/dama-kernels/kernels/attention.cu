// Flash-style masked attention, forward and backward, f32 arithmetic.
//
// One warp per query row (forward, dQ) or key row (dK/dV); a warp's 32 lanes split the head
// dimension (lane l holds dims l, l + 32, ...; M = ceil(d / 32) per lane), so a score is one
// warp reduction. Blocks of WARPS rows share tiles of the other side (keys/values, or queries
// and output gradients) in shared memory; tiles no row of the block may attend to are
// skipped. Scores are kept in log2 units (scaled by log2 e) so the softmax uses exp2f; the
// log-sum-exp is saved in natural log, −inf for a query with no allowed key.
//
// Masks: per (row, query) key spans [s.x, s.y) ∪ [s.z, s.w) (dama_kernels::AttnMask).
// Layouts: q (b, t, hq, d), k, v (b, t, hkv, d) through strides (elements); out, dq, dk, dv
// contiguous; lse, delta (b, t, hq) f32.
//
// This is the plain-FMA version (no tensor cores): correct for any d <= 256 and any mask.
#include "common.cuh"

#define WARPS 16
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

struct Strides {
    long long s0, s1, s2;
};

template <typename T>
__device__ __forceinline__ const T* row_ptr(const T* base, Strides s, int bi, int ti, int h) {
    return base + bi * s.s0 + ti * s.s1 + h * s.s2;
}

// Lowest first key and highest last key over the block's rows' spans (shared result).
__device__ __forceinline__ void block_range(uint4 s, bool active, unsigned int* lo,
                                            unsigned int* hi, unsigned int t) {
    if (threadIdx.x == 0) {
        *lo = t;
        *hi = 0;
    }
    __syncthreads();
    if (active && threadIdx.x % DAMA_WARP == 0) {
        if (s.y > s.x) {
            atomicMin(lo, s.x);
            atomicMax(hi, s.y);
        }
        if (s.w > s.z) {
            atomicMin(lo, s.z);
            atomicMax(hi, s.w);
        }
    }
    __syncthreads();
}

// Loads rows [r0, r1) of head h of a (b, t, heads, d) tensor into a (BR, W) f32 tile, scaled
// by `mul`, columns >= d zero.
template <typename T, int W>
__device__ __forceinline__ void load_tile(float* tile, const T* src, Strides st, int bi, int h,
                                          int r0, int r1, int d, float mul) {
    for (int e = threadIdx.x; e < (r1 - r0) * W; e += blockDim.x) {
        const int r = e / W, c = e % W;
        tile[e] = c < d ? to_f(row_ptr(src, st, bi, r0 + r, h)[c]) * mul : 0.0f;
    }
}

template <typename T, int M>
__device__ void attn_fwd(const T* q, const T* k, const T* v, const uint4* spans, T* out,
                         float* lse, int t, int hq, int hkv, int d, Strides qs, Strides ks,
                         Strides vs, float scale) {
    constexpr int W = M * DAMA_WARP;
    constexpr int BK = 128 / M;
    __shared__ float ksm[BK * W];
    __shared__ float vsm[BK * W];
    __shared__ unsigned int klo, khi;
    const int warp = threadIdx.x / DAMA_WARP, lane = threadIdx.x % DAMA_WARP;
    const int bi = blockIdx.z, h = blockIdx.y, g = h / (hq / hkv);
    const int i = blockIdx.x * WARPS + warp;
    const bool active = i < t;
    const uint4 s = active ? spans[(size_t)bi * t + i] : make_uint4(0, 0, 0, 0);
    block_range(s, active, &klo, &khi, t);

    float qr[M], acc[M];
    const T* qp = active ? row_ptr(q, qs, bi, i, h) : q;
#pragma unroll
    for (int m = 0; m < M; ++m) {
        const int c = lane + m * DAMA_WARP;
        qr[m] = (active && c < d) ? to_f(qp[c]) * (scale * LOG2E) : 0.0f;
        acc[m] = 0.0f;
    }
    float mx = DAMA_NEG_INF, l = 0.0f;
    for (int j0 = klo; j0 < (int)khi; j0 += BK) {
        const int j1 = min(j0 + BK, (int)khi);
        const bool mine = active && span_meets(s, j0, j1);
        if (!__syncthreads_or(mine)) continue;
        load_tile<T, W>(ksm, k, ks, bi, g, j0, j1, d, 1.0f);
        load_tile<T, W>(vsm, v, vs, bi, g, j0, j1, d, 1.0f);
        __syncthreads();
        if (mine) {
            for (int j = j0; j < j1; ++j) {
                if (!span_has(s, j)) continue;
                const float* kr = ksm + (j - j0) * W;
                const float* vr = vsm + (j - j0) * W;
                float part = 0.0f;
#pragma unroll
                for (int m = 0; m < M; ++m) part += qr[m] * kr[lane + m * DAMA_WARP];
                const float sc = warp_sum(part);
                if (sc > mx) {
                    const float corr = exp2f(mx - sc);
                    l = l * corr + 1.0f;
#pragma unroll
                    for (int m = 0; m < M; ++m) acc[m] = acc[m] * corr + vr[lane + m * DAMA_WARP];
                    mx = sc;
                } else {
                    const float p = exp2f(sc - mx);
                    l += p;
#pragma unroll
                    for (int m = 0; m < M; ++m) acc[m] += p * vr[lane + m * DAMA_WARP];
                }
            }
        }
        __syncthreads();
    }
    if (active) {
        T* o = out + (((size_t)bi * t + i) * hq + h) * d;
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
        for (int m = 0; m < M; ++m) {
            const int c = lane + m * DAMA_WARP;
            if (c < d) o[c] = from_f<T>(acc[m] * inv);
        }
        if (lane == 0)
            lse[((size_t)bi * t + i) * hq + h] = l > 0.0f ? (mx + log2f(l)) * LN2 : DAMA_NEG_INF;
    }
}

// delta[b, i, h] = Σ_c dO·O, one warp per (b, i, h).
template <typename T>
__device__ void attn_bwd_delta(const T* out, const T* dout, Strides gs, float* delta, int b,
                               int t, int hq, int d) {
    const int lane = threadIdx.x % DAMA_WARP;
    const long long rows = (long long)b * t * hq;
    const long long warps = (long long)gridDim.x * (blockDim.x / DAMA_WARP);
    for (long long r = (long long)blockIdx.x * (blockDim.x / DAMA_WARP) + threadIdx.x / DAMA_WARP;
         r < rows; r += warps) {
        const int h = (int)(r % hq), i = (int)((r / hq) % t), bi = (int)(r / ((long long)hq * t));
        const T* o = out + r * d;
        const T* g = row_ptr(dout, gs, bi, i, h);
        float s = 0.0f;
        for (int c = lane; c < d; c += DAMA_WARP) s += to_f(o[c]) * to_f(g[c]);
        s = warp_sum(s);
        if (lane == 0) delta[r] = s;
    }
}

// dQ_i = scale·Σ_j P_ij·(dO_i·V_j − D_i)·K_j, one warp per query row.
template <typename T, int M>
__device__ void attn_bwd_dq(const T* q, const T* k, const T* v, const T* dout,
                            const uint4* spans, const float* lse, const float* delta, T* dq,
                            int t, int hq, int hkv, int d, Strides qs, Strides ks, Strides vs,
                            Strides gs, float scale) {
    constexpr int W = M * DAMA_WARP;
    constexpr int BK = 128 / M;
    __shared__ float ksm[BK * W];
    __shared__ float vsm[BK * W];
    __shared__ unsigned int klo, khi;
    const int warp = threadIdx.x / DAMA_WARP, lane = threadIdx.x % DAMA_WARP;
    const int bi = blockIdx.z, h = blockIdx.y, g = h / (hq / hkv);
    const int i = blockIdx.x * WARPS + warp;
    const bool in_range = i < t;
    const size_t r = ((size_t)bi * t + (in_range ? i : 0)) * hq + h;
    const float l2 = in_range ? lse[r] * LOG2E : DAMA_NEG_INF;
    const bool active = in_range && l2 != DAMA_NEG_INF;
    const uint4 s = active ? spans[(size_t)bi * t + i] : make_uint4(0, 0, 0, 0);
    block_range(s, active, &klo, &khi, t);

    float qr[M], gr[M], acc[M];
    const T* qp = active ? row_ptr(q, qs, bi, i, h) : q;
    const T* gp = active ? row_ptr(dout, gs, bi, i, h) : dout;
#pragma unroll
    for (int m = 0; m < M; ++m) {
        const int c = lane + m * DAMA_WARP;
        qr[m] = (active && c < d) ? to_f(qp[c]) * (scale * LOG2E) : 0.0f;
        gr[m] = (active && c < d) ? to_f(gp[c]) : 0.0f;
        acc[m] = 0.0f;
    }
    const float di = active ? delta[r] : 0.0f;
    for (int j0 = klo; j0 < (int)khi; j0 += BK) {
        const int j1 = min(j0 + BK, (int)khi);
        const bool mine = active && span_meets(s, j0, j1);
        if (!__syncthreads_or(mine)) continue;
        load_tile<T, W>(ksm, k, ks, bi, g, j0, j1, d, 1.0f);
        load_tile<T, W>(vsm, v, vs, bi, g, j0, j1, d, 1.0f);
        __syncthreads();
        if (mine) {
            for (int j = j0; j < j1; ++j) {
                if (!span_has(s, j)) continue;
                const float* kr = ksm + (j - j0) * W;
                const float* vr = vsm + (j - j0) * W;
                float ps = 0.0f, pd = 0.0f;
#pragma unroll
                for (int m = 0; m < M; ++m) {
                    ps += qr[m] * kr[lane + m * DAMA_WARP];
                    pd += gr[m] * vr[lane + m * DAMA_WARP];
                }
                const float p = exp2f(warp_sum(ps) - l2);
                const float ds = p * (warp_sum(pd) - di);
#pragma unroll
                for (int m = 0; m < M; ++m) acc[m] += ds * kr[lane + m * DAMA_WARP];
            }
        }
        __syncthreads();
    }
    if (i < t) {
        T* o = dq + (((size_t)bi * t + i) * hq + h) * d;
#pragma unroll
        for (int m = 0; m < M; ++m) {
            const int c = lane + m * DAMA_WARP;
            if (c < d) o[c] = from_f<T>(acc[m] * scale);
        }
    }
}

// dK_j = scale·Σ_i dS_ij·Q_i and dV_j = Σ_i P_ij·dO_i over the queries of every head of the
// group that see key j; one warp per key row, query tiles in shared memory.
template <typename T, int M>
__device__ void attn_bwd_dkdv(const T* q, const T* k, const T* v, const T* dout,
                              const uint4* spans, const float* lse, const float* delta, T* dk,
                              T* dv, int t, int hq, int hkv, int d, Strides qs, Strides ks,
                              Strides vs, Strides gs, float scale) {
    constexpr int W = M * DAMA_WARP;
    constexpr int BQ = 128 / M;
    __shared__ float qsm[BQ * W];
    __shared__ float gsm[BQ * W];
    __shared__ float l2sm[BQ], dsm[BQ];
    __shared__ uint4 ssm[BQ];
    const int warp = threadIdx.x / DAMA_WARP, lane = threadIdx.x % DAMA_WARP;
    const int bi = blockIdx.z, g = blockIdx.y, rep = hq / hkv;
    const int j0b = blockIdx.x * WARPS, j1b = min(j0b + WARPS, t);
    const int j = j0b + warp;
    const bool active = j < t;
    float kr[M], vr[M], ak[M], av[M];
    const T* kp = active ? row_ptr(k, ks, bi, j, g) : k;
    const T* vp = active ? row_ptr(v, vs, bi, j, g) : v;
#pragma unroll
    for (int m = 0; m < M; ++m) {
        const int c = lane + m * DAMA_WARP;
        kr[m] = (active && c < d) ? to_f(kp[c]) : 0.0f;
        vr[m] = (active && c < d) ? to_f(vp[c]) : 0.0f;
        ak[m] = 0.0f;
        av[m] = 0.0f;
    }
    for (int h = g * rep; h < (g + 1) * rep; ++h) {
        for (int i0 = 0; i0 < t; i0 += BQ) {
            const int i1 = min(i0 + BQ, t);
            bool meet = false;
            for (int ii = i0 + threadIdx.x; ii < i1; ii += blockDim.x)
                meet |= span_meets(spans[(size_t)bi * t + ii], j0b, j1b);
            if (!__syncthreads_or(meet)) continue;
            load_tile<T, W>(qsm, q, qs, bi, h, i0, i1, d, scale * LOG2E);
            load_tile<T, W>(gsm, dout, gs, bi, h, i0, i1, d, 1.0f);
            for (int ii = i0 + threadIdx.x; ii < i1; ii += blockDim.x) {
                const size_t r = ((size_t)bi * t + ii) * hq + h;
                l2sm[ii - i0] = lse[r] * LOG2E;
                dsm[ii - i0] = delta[r];
                ssm[ii - i0] = spans[(size_t)bi * t + ii];
            }
            __syncthreads();
            if (active) {
                for (int ii = i0; ii < i1; ++ii) {
                    if (!span_has(ssm[ii - i0], j)) continue;
                    const float* qrow = qsm + (ii - i0) * W;
                    const float* grow = gsm + (ii - i0) * W;
                    float ps = 0.0f, pd = 0.0f;
#pragma unroll
                    for (int m = 0; m < M; ++m) {
                        ps += qrow[lane + m * DAMA_WARP] * kr[m];
                        pd += grow[lane + m * DAMA_WARP] * vr[m];
                    }
                    const float p = exp2f(warp_sum(ps) - l2sm[ii - i0]);
                    const float ds = p * (warp_sum(pd) - dsm[ii - i0]);
#pragma unroll
                    for (int m = 0; m < M; ++m) {
                        av[m] += p * grow[lane + m * DAMA_WARP];
                        ak[m] += ds * qrow[lane + m * DAMA_WARP];
                    }
                }
            }
            __syncthreads();
        }
    }
    if (active) {
        // the query tile was scaled by scale·log2 e: ak already holds scale·Σ dS·Q·log2 e
        T* ok = dk + (((size_t)bi * t + j) * hkv + g) * d;
        T* ov = dv + (((size_t)bi * t + j) * hkv + g) * d;
#pragma unroll
        for (int m = 0; m < M; ++m) {
            const int c = lane + m * DAMA_WARP;
            if (c < d) {
                ok[c] = from_f<T>(ak[m] * LN2);
                ov[c] = from_f<T>(av[m]);
            }
        }
    }
}

#define STRIDES(p) Strides { p##0, p##1, p##2 }

#define ATTN_M(SUFFIX, T, M)                                                                      \
    extern "C" __global__ void __launch_bounds__(WARPS * DAMA_WARP)                              \
        attn_fwd_##SUFFIX##_m##M(const T* q, const T* k, const T* v, const uint4* spans, T* out, \
                                 float* lse, int t, int hq, int hkv, int d, long long qs0,      \
                                 long long qs1, long long qs2, long long ks0, long long ks1,     \
                                 long long ks2, long long vs0, long long vs1, long long vs2,     \
                                 float scale) {                                                  \
        attn_fwd<T, M>(q, k, v, spans, out, lse, t, hq, hkv, d, STRIDES(qs), STRIDES(ks),        \
                       STRIDES(vs), scale);                                                      \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(WARPS * DAMA_WARP) attn_bwd_dq_##SUFFIX##_m##M( \
        const T* q, const T* k, const T* v, const T* dout, const uint4* spans, const float* lse, \
        const float* delta, T* dq, int t, int hq, int hkv, int d, long long qs0, long long qs1,  \
        long long qs2, long long ks0, long long ks1, long long ks2, long long vs0,               \
        long long vs1, long long vs2, long long gs0, long long gs1, long long gs2, float scale) { \
        attn_bwd_dq<T, M>(q, k, v, dout, spans, lse, delta, dq, t, hq, hkv, d, STRIDES(qs),      \
                          STRIDES(ks), STRIDES(vs), STRIDES(gs), scale);                         \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(WARPS * DAMA_WARP)                              \
        attn_bwd_dkdv_##SUFFIX##_m##M(                                                           \
            const T* q, const T* k, const T* v, const T* dout, const uint4* spans,               \
            const float* lse, const float* delta, T* dk, T* dv, int t, int hq, int hkv, int d,   \
            long long qs0, long long qs1, long long qs2, long long ks0, long long ks1,           \
            long long ks2, long long vs0, long long vs1, long long vs2, long long gs0,           \
            long long gs1, long long gs2, float scale) {                                         \
        attn_bwd_dkdv<T, M>(q, k, v, dout, spans, lse, delta, dk, dv, t, hq, hkv, d,             \
                            STRIDES(qs), STRIDES(ks), STRIDES(vs), STRIDES(gs), scale);          \
    }

#define ATTN(SUFFIX, T)                                                                          \
    ATTN_M(SUFFIX, T, 1)                                                                         \
    ATTN_M(SUFFIX, T, 2)                                                                         \
    ATTN_M(SUFFIX, T, 4)                                                                         \
    ATTN_M(SUFFIX, T, 8)                                                                         \
    extern "C" __global__ void attn_bwd_delta_##SUFFIX(const T* out, const T* dout,              \
                                                       float* delta, long long gs0,              \
                                                       long long gs1, long long gs2, int b,      \
                                                       int t, int hq, int d) {                   \
        attn_bwd_delta<T>(out, dout, STRIDES(gs), delta, b, t, hq, d);                           \
    }

ATTN(f32, float)
ATTN(bf16, __nv_bfloat16)

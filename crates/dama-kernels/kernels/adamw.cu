// The fused AdamW update (src/adamw.rs): one grid-stride pass per variable over its packed f32
// state [master | exp_avg | exp_avg_sq] (no master for an f32 variable, which is its own),
// the gradient (f32 or bf16, multiplied by `gscale` first when `scaled`: gradient clipping)
// and the variable (f32 or bf16), everything in place. f32 with
// explicitly rounded operations (no FMA contraction), in the order of the composed candle ops,
// so that the result equals the CPU's bit for bit.
// With `sr` (a bf16 variable that is its own master, no master in the state) the result is
// rounded to bf16 stochastically with the random bits of (key, i): see adamw::stochastic_bf16.
#include "common.cuh"

__device__ __forceinline__ unsigned long long adamw_mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// adamw::sr_bits then adamw::stochastic_bf16.
__device__ __forceinline__ __nv_bfloat16 adamw_sr_bf16(float x, unsigned long long key,
                                                       long long i) {
    if (isnan(x)) return __float2bfloat16_rn(x);
    const unsigned long long h =
        adamw_mix64(key + ((unsigned long long)i + 1ull) * 0x9E3779B97F4A7C15ull);
    const unsigned int bits = __float_as_uint(x) + (unsigned int)(h >> 48);
    return __ushort_as_bfloat16((unsigned short)(bits >> 16));
}

template <typename P>
__device__ __forceinline__ void adamw_store(P* p, float w, int, unsigned long long, long long) {
    *p = from_f<P>(w);
}
template <>
__device__ __forceinline__ void adamw_store<__nv_bfloat16>(__nv_bfloat16* p, float w, int sr,
                                                           unsigned long long key, long long i) {
    *p = sr ? adamw_sr_bf16(w, key, i) : from_f<__nv_bfloat16>(w);
}

// Elements per thread and pass: each thread loads the inputs of ADAMW_U elements (ADAMW_U
// grid-strides apart, so every load stays coalesced) before it computes any, keeping more
// bytes in flight than one element per thread does. The grid covers n / ADAMW_U threads.
#define ADAMW_U 4

// One element's update: the f32 state values in, the new ones out (same operations, same
// order, as the CPU's AdamWStep::apply in src/adamw.rs).
__device__ __forceinline__ void adamw_math(float gi, float& w, float& mi, float& vi, int wd,
                                           float decay, float b1, float omb1, float b2,
                                           float omb2, float inv_bc2, float eps,
                                           float step_size) {
    if (wd) w = __fmul_rn(w, decay);
    mi = __fadd_rn(__fmul_rn(mi, b1), __fmul_rn(gi, omb1));
    vi = __fadd_rn(__fmul_rn(vi, b2), __fmul_rn(__fmul_rn(gi, gi), omb2));
    const float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(vi), inv_bc2), eps);
    w = __fsub_rn(w, __fmul_rn(__fdiv_rn(mi, denom), step_size));
}

template <typename P, typename G>
__device__ void adamw(float* __restrict__ state, P* __restrict__ p, const G* __restrict__ g,
                      long long n, int has_master, int wd, float decay, float b1, float omb1,
                      float b2, float omb2, float inv_bc2, float eps, float step_size, int sr,
                      unsigned long long key, int scaled, float gscale) {
    float* master = state;
    float* m = state + (has_master ? n : 0);
    float* v = m + n;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i0 = (long long)blockIdx.x * blockDim.x + threadIdx.x; i0 < n;
         i0 += ADAMW_U * stride) {
        float gi[ADAMW_U], w[ADAMW_U], mi[ADAMW_U], vi[ADAMW_U];
#pragma unroll
        for (int u = 0; u < ADAMW_U; ++u) {
            const long long i = i0 + u * stride;
            gi[u] = w[u] = mi[u] = vi[u] = 0.0f;
            if (i < n) {
                gi[u] = scaled ? __fmul_rn(to_f(g[i]), gscale) : to_f(g[i]);
                w[u] = has_master ? master[i] : to_f(p[i]);
                mi[u] = m[i];
                vi[u] = v[i];
            }
        }
#pragma unroll
        for (int u = 0; u < ADAMW_U; ++u) {
            const long long i = i0 + u * stride;
            if (i >= n) continue;
            adamw_math(gi[u], w[u], mi[u], vi[u], wd, decay, b1, omb1, b2, omb2, inv_bc2, eps,
                       step_size);
            m[i] = mi[u];
            v[i] = vi[u];
            if (has_master) master[i] = w[u];
            adamw_store<P>(p + i, w[u], sr, key, i);
        }
    }
}

#define ADAMW(NAME, P, G)                                                                      \
    extern "C" __global__ void NAME(float* state, P* p, const G* g, long long n,                \
                                    int has_master, int wd, float decay, float b1, float omb1,  \
                                    float b2, float omb2, float inv_bc2, float eps,             \
                                    float step_size, int sr, unsigned long long key,            \
                                    int scaled, float gscale) {                                 \
        adamw<P, G>(state, p, g, n, has_master, wd, decay, b1, omb1, b2, omb2, inv_bc2, eps,   \
                    step_size, sr, key, scaled, gscale);                                        \
    }

ADAMW(adamw_f32_f32, float, float)
ADAMW(adamw_f32_bf16, float, __nv_bfloat16)
ADAMW(adamw_bf16_f32, __nv_bfloat16, float)
ADAMW(adamw_bf16_bf16, __nv_bfloat16, __nv_bfloat16)

// ---- 8-bit moments (adamw::StateFormat::Dynamic8, src/quant8.rs) ----
// bitsandbytes' block-wise dynamic quantisation: one CUDA block per quantisation block of
// QBLOCK values (a grid-stride loop over them), ADAMW8_THREADS threads with QBLOCK /
// ADAMW8_THREADS elements each (a stride of ADAMW8_THREADS apart: coalesced). State
// [master | absmax_m (nb) | absmax_v (nb)], codes [m (n) | v (n)]. Per element: dequantise
// (map[code] * absmax), the f32 update of adamw_math (the weight sees the new, unquantised
// moments), then the block's new absmax (max |m|, max v) and the codes of the nearest map
// values (ties to the lower code): the CPU's quant8::{nearest, quantize_block}, bit for bit.
#include "qmap8.cuh"

#define QBLOCK 2048
#define ADAMW8_THREADS 256
#define ADAMW8_PER (QBLOCK / ADAMW8_THREADS)

// quant8::nearest: the last map value <= x by a branch-free binary search, then the closer
// of it and the next one.
__device__ __forceinline__ unsigned char qnearest(const float* map, float x) {
    int j = 0;
#pragma unroll
    for (int s = 128; s > 0; s >>= 1)
        if (j + s < 256 && map[j + s] <= x) j += s;
    if (j < 255 && __fsub_rn(map[j + 1], x) < __fsub_rn(x, map[j])) j += 1;
    return (unsigned char)j;
}

template <typename P, typename G>
__device__ void adamw8(float* __restrict__ state, unsigned char* __restrict__ codes,
                       P* __restrict__ p, const G* __restrict__ g, long long n, int has_master,
                       int wd, float decay, float b1, float omb1, float b2, float omb2,
                       float inv_bc2, float eps, float step_size, int sr, unsigned long long key,
                       int scaled, float gscale) {
    __shared__ float qs[256], qu[256];
    __shared__ float scratch_m[DAMA_WARP], scratch_v[DAMA_WARP];
    const int tid = threadIdx.x;
    for (int k = tid; k < 256; k += blockDim.x) {
        qs[k] = __uint_as_float(QMAP8_SIGNED_BITS[k]);
        qu[k] = __uint_as_float(QMAP8_UNSIGNED_BITS[k]);
    }
    __syncthreads();
    const long long nb = (n + QBLOCK - 1) / QBLOCK;
    float* master = state;
    float* absmax_m = state + (has_master ? n : 0);
    float* absmax_v = absmax_m + nb;
    unsigned char* cm = codes;
    unsigned char* cv = codes + n;
    for (long long blk = blockIdx.x; blk < nb; blk += gridDim.x) {
        const long long base = blk * QBLOCK;
        const float am = absmax_m[blk], av = absmax_v[blk];
        float mi[ADAMW8_PER], vi[ADAMW8_PER];
        float lm = 0.0f, lv = 0.0f;
#pragma unroll
        for (int u = 0; u < ADAMW8_PER; ++u) {
            const long long i = base + u * ADAMW8_THREADS + tid;
            mi[u] = vi[u] = 0.0f;
            if (i < n) {
                const float gi = scaled ? __fmul_rn(to_f(g[i]), gscale) : to_f(g[i]);
                float w = has_master ? master[i] : to_f(p[i]);
                mi[u] = __fmul_rn(qs[cm[i]], am);
                vi[u] = __fmul_rn(qu[cv[i]], av);
                adamw_math(gi, w, mi[u], vi[u], wd, decay, b1, omb1, b2, omb2, inv_bc2, eps,
                           step_size);
                if (has_master) master[i] = w;
                adamw_store<P>(p + i, w, sr, key, i);
                lm = fmaxf(lm, fabsf(mi[u]));
                lv = fmaxf(lv, fabsf(vi[u]));
            }
        }
        // every thread has read am / av above: thread 0 may overwrite them below
        const float nm = block_max(lm, scratch_m);
        const float nv = block_max(lv, scratch_v);
        if (tid == 0) {
            absmax_m[blk] = nm;
            absmax_v[blk] = nv;
        }
#pragma unroll
        for (int u = 0; u < ADAMW8_PER; ++u) {
            const long long i = base + u * ADAMW8_THREADS + tid;
            if (i < n) {
                cm[i] = qnearest(qs, nm > 0.0f ? __fdiv_rn(mi[u], nm) : 0.0f);
                cv[i] = qnearest(qu, nv > 0.0f ? __fdiv_rn(vi[u], nv) : 0.0f);
            }
        }
        // the scratch of block_max is reused by the next block of the loop
        __syncthreads();
    }
}

#define ADAMW8(NAME, P, G)                                                                     \
    extern "C" __global__ void NAME(float* state, unsigned char* codes, P* p, const G* g,       \
                                    long long n, int has_master, int wd, float decay, float b1, \
                                    float omb1, float b2, float omb2, float inv_bc2, float eps, \
                                    float step_size, int sr, unsigned long long key,            \
                                    int scaled, float gscale) {                                 \
        adamw8<P, G>(state, codes, p, g, n, has_master, wd, decay, b1, omb1, b2, omb2,         \
                     inv_bc2, eps, step_size, sr, key, scaled, gscale);                         \
    }

ADAMW8(adamw8_f32_f32, float, float)
ADAMW8(adamw8_f32_bf16, float, __nv_bfloat16)
ADAMW8(adamw8_bf16_f32, __nv_bfloat16, float)
ADAMW8(adamw8_bf16_bf16, __nv_bfloat16, __nv_bfloat16)

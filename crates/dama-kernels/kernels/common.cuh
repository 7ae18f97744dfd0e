// Shared helpers of the dama-kernels CUDA sources: element conversions (f32 and bf16 in,
// f32 arithmetic), the model-dtype rounding transformers applies between ops, and warp /
// block reductions. sm_80+ (bf16 conversions); nothing here needs sm_90.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

#define DAMA_WARP 32
#define DAMA_NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// The value `x` takes once stored in the model dtype (identity for f32).
template <typename T> __device__ __forceinline__ float rnd(float x) { return to_f(from_f<T>(x)); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = DAMA_WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = DAMA_WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the whole block, returned to every thread. `scratch` holds >= 32 floats; every
// thread of the block must call it (it synchronises twice).
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % DAMA_WARP, warp = threadIdx.x / DAMA_WARP;
    const int warps = (blockDim.x + DAMA_WARP - 1) / DAMA_WARP;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(r);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x % DAMA_WARP, warp = threadIdx.x / DAMA_WARP;
    const int warps = (blockDim.x + DAMA_WARP - 1) / DAMA_WARP;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = lane < warps ? scratch[lane] : DAMA_NEG_INF;
    return warp_max(r);
}

// Whether key `j` lies in one of the two spans [s.x, s.y) ∪ [s.z, s.w).
__device__ __forceinline__ bool span_has(uint4 s, uint32_t j) {
    return (s.x <= j && j < s.y) || (s.z <= j && j < s.w);
}

// Whether the spans intersect the key range [a, b).
__device__ __forceinline__ bool span_meets(uint4 s, uint32_t a, uint32_t b) {
    return (s.x < b && a < s.y) || (s.z < b && a < s.w);
}

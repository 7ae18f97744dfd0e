// RMSNorm (forward and backward) and LayerNorm (forward) over the last dimension, one block
// per row (forward) or a grid-stride loop over rows (backward), f32 arithmetic.
#include "common.cuh"

// y = round(x·r)·w, r = 1/sqrt(mean(x²) + eps): transformers' order of roundings.
template <typename T>
__device__ void rms_norm_fwd(const T* x, const T* w, T* y, int rows, int d, float eps) {
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + (size_t)row * d;
        T* yr = y + (size_t)row * d;
        float ss = 0.0f;
        for (int i = threadIdx.x; i < d; i += blockDim.x) {
            float v = to_f(xr[i]);
            ss += v * v;
        }
        ss = block_sum(ss, scratch);
        const float r = 1.0f / sqrtf(ss / (float)d + eps);
        for (int i = threadIdx.x; i < d; i += blockDim.x)
            yr[i] = from_f<T>(rnd<T>(to_f(xr[i]) * r) * to_f(w[i]));
    }
}

// Columns per thread kept in registers by the backward: d <= 256·32 = 8192.
#define RMS_MAX_COLS 32

// dx = r·(g − n̂·mean(g ⊙ n̂)), g = dy ⊙ w, n̂ = x·r; partial dw = Σ_rows dy ⊙ round(n̂) per
// block, summed by column_sum. Launched with 256 threads.
template <typename T>
__device__ void rms_norm_bwd(const T* x, const T* w, const T* dy, T* dx, float* dw_partial,
                             int rows, int d, float eps, int need_dx, int need_dw) {
    __shared__ float scratch[32];
    float acc[RMS_MAX_COLS];
#pragma unroll
    for (int k = 0; k < RMS_MAX_COLS; ++k) acc[k] = 0.0f;
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + (size_t)row * d;
        const T* gr = dy + (size_t)row * d;
        float ss = 0.0f, c = 0.0f;
#pragma unroll
        for (int k = 0; k < RMS_MAX_COLS; ++k) {
            int i = threadIdx.x + k * blockDim.x;
            if (i < d) {
                float v = to_f(xr[i]);
                ss += v * v;
                c += to_f(gr[i]) * to_f(w[i]) * v;
            }
        }
        ss = block_sum(ss, scratch);
        c = block_sum(c, scratch);
        const float r = 1.0f / sqrtf(ss / (float)d + eps);
        c = c * r / (float)d;  // mean(g ⊙ n̂)
#pragma unroll
        for (int k = 0; k < RMS_MAX_COLS; ++k) {
            int i = threadIdx.x + k * blockDim.x;
            if (i < d) {
                float v = to_f(xr[i]), g = to_f(gr[i]);
                if (need_dx) dx[(size_t)row * d + i] = from_f<T>(r * (g * to_f(w[i]) - v * r * c));
                if (need_dw) acc[k] += g * rnd<T>(v * r);
            }
        }
    }
    if (need_dw) {
#pragma unroll
        for (int k = 0; k < RMS_MAX_COLS; ++k) {
            int i = threadIdx.x + k * blockDim.x;
            if (i < d) dw_partial[(size_t)blockIdx.x * d + i] = acc[k];
        }
    }
}

// out[i] = Σ_b partial[b, i] for the weight gradient.
template <typename T>
__device__ void column_sum(const float* partial, T* out, int blocks, int d) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= d) return;
    float s = 0.0f;
    for (int b = 0; b < blocks; ++b) s += partial[(size_t)b * d + i];
    out[i] = from_f<T>(s);
}

// y = (x − mean)/sqrt(var + eps)·w + b in f32, rounded once.
template <typename T>
__device__ void layer_norm_fwd(const T* x, const T* w, const T* b, T* y, int rows, int d, float eps) {
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + (size_t)row * d;
        T* yr = y + (size_t)row * d;
        float s = 0.0f;
        for (int i = threadIdx.x; i < d; i += blockDim.x) s += to_f(xr[i]);
        const float mean = block_sum(s, scratch) / (float)d;
        float v = 0.0f;
        for (int i = threadIdx.x; i < d; i += blockDim.x) {
            float c = to_f(xr[i]) - mean;
            v += c * c;
        }
        const float r = 1.0f / sqrtf(block_sum(v, scratch) / (float)d + eps);
        for (int i = threadIdx.x; i < d; i += blockDim.x)
            yr[i] = from_f<T>((to_f(xr[i]) - mean) * r * to_f(w[i]) + to_f(b[i]));
    }
}

#define NORMS(SUFFIX, T)                                                                         \
    extern "C" __global__ void rms_norm_fwd_##SUFFIX(const T* x, const T* w, T* y, int rows,     \
                                                     int d, float eps) {                         \
        rms_norm_fwd<T>(x, w, y, rows, d, eps);                                                  \
    }                                                                                            \
    extern "C" __global__ void rms_norm_bwd_##SUFFIX(const T* x, const T* w, const T* dy, T* dx, \
                                                     float* dw_partial, int rows, int d,         \
                                                     float eps, int need_dx, int need_dw) {      \
        rms_norm_bwd<T>(x, w, dy, dx, dw_partial, rows, d, eps, need_dx, need_dw);               \
    }                                                                                            \
    extern "C" __global__ void column_sum_##SUFFIX(const float* partial, T* out, int blocks,     \
                                                   int d) {                                      \
        column_sum<T>(partial, out, blocks, d);                                                  \
    }                                                                                            \
    extern "C" __global__ void layer_norm_fwd_##SUFFIX(const T* x, const T* w, const T* b, T* y, \
                                                       int rows, int d, float eps) {             \
        layer_norm_fwd<T>(x, w, b, y, rows, d, eps);                                             \
    }

NORMS(f32, float)
NORMS(bf16, __nv_bfloat16)

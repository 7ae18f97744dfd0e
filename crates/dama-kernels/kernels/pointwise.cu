// Element-wise ops: RoPE (forward and its transpose, the backward), SwiGLU (forward and
// backward), quick-GELU (forward). Grid-stride loops, f32 arithmetic, transformers' roundings.
#include "common.cuh"

// One thread per (token row, head, i < d/2): rotates the pair (i, i + d/2). `src` is read
// through strides (s0, s1, s2) over (b, t, h) with a contiguous last dimension; `out` is a
// contiguous (b, t, h, d) tensor. Tables are (b, t, d) (batched) or (t, d).
// backward = 0: y = round(round(x·cos) + round(rotate_half(x)·sin))
// backward = 1: dx_i = dy_i·c_i + dy_{i+h}·s_{i+h}, dx_{i+h} = dy_{i+h}·c_{i+h} − dy_i·s_i
template <typename T>
__device__ void rope(const T* src, const T* cos, const T* sin, T* out, int b, int t, int h,
                     int d, long long s0, long long s1, long long s2, int batched, int backward) {
    const int half = d / 2;
    const long long total = (long long)b * t * h * half;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        int i, k, ti, bi;
        if (total <= 0x7fffffffLL) {
            // 32-bit index arithmetic (64-bit division is a long software sequence on GPUs)
            unsigned r = (unsigned)idx;
            i = (int)(r % (unsigned)half);
            r /= (unsigned)half;
            k = (int)(r % (unsigned)h);
            r /= (unsigned)h;
            ti = (int)(r % (unsigned)t);
            bi = (int)(r / (unsigned)t);
        } else {
            long long r = idx / half;
            i = (int)(idx % half);
            k = (int)(r % h);
            r /= h;
            ti = (int)(r % t);
            bi = (int)(r / t);
        }
        const T* x = src + bi * s0 + ti * s1 + k * s2;
        const long long tab = (batched ? ((long long)bi * t + ti) : (long long)ti) * d;
        const float c1 = to_f(cos[tab + i]), c2 = to_f(cos[tab + i + half]);
        const float n1 = to_f(sin[tab + i]), n2 = to_f(sin[tab + i + half]);
        const float x1 = to_f(x[i]), x2 = to_f(x[i + half]);
        float y1, y2;
        if (backward) {
            y1 = x1 * c1 + x2 * n2;
            y2 = x2 * c2 - x1 * n1;
        } else {
            y1 = rnd<T>(x1 * c1) + rnd<T>(-x2 * n1);
            y2 = rnd<T>(x2 * c2) + rnd<T>(x1 * n2);
        }
        T* o = out + (((long long)bi * t + ti) * h + k) * d;
        o[i] = from_f<T>(y1);
        o[i + half] = from_f<T>(y2);
    }
}

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + __expf(-x)); }

template <typename T>
__device__ void swiglu_fwd(const T* a, const T* b, T* y, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const float x = to_f(a[i]);
        y[i] = from_f<T>(rnd<T>(x * sigmoidf(x)) * to_f(b[i]));
    }
}

// da = dy·b·σ(a)·(1 + a·(1 − σ(a))), db = dy·round(silu(a)); either output may be skipped.
template <typename T>
__device__ void swiglu_bwd(const T* a, const T* b, const T* dy, T* da, T* db, long long n,
                           int need_da, int need_db) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const float x = to_f(a[i]), g = to_f(dy[i]);
        const float s = sigmoidf(x);
        if (need_da) da[i] = from_f<T>(g * to_f(b[i]) * s * (1.0f + x * (1.0f - s)));
        if (need_db) db[i] = from_f<T>(g * rnd<T>(x * s));
    }
}

template <typename T>
__device__ void quick_gelu_fwd(const T* x, T* y, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const float v = to_f(x[i]);
        y[i] = from_f<T>(v / (1.0f + __expf(-1.702f * v)));
    }
}

// out[r, c] = table[ids[r], c] (0 for an id >= vocab).
template <typename T>
__device__ void embedding_fwd(const T* table, const uint32_t* ids, T* out, long long n, int d,
                              unsigned vocab) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n * d;
         i += (long long)gridDim.x * blockDim.x) {
        const long long r = i / d;
        const int c = (int)(i - r * d);
        const unsigned id = ids[r];
        out[i] = id < vocab ? table[(long long)id * d + c] : from_f<T>(0.0f);
    }
}

// acc[ids[r], c] += dy[r, c] in f32 (acc zeroed beforehand).
template <typename T>
__device__ void embedding_bwd(const T* dy, const uint32_t* ids, float* acc, long long n, int d,
                              unsigned vocab) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n * d;
         i += (long long)gridDim.x * blockDim.x) {
        const long long r = i / d;
        const int c = (int)(i - r * d);
        const unsigned id = ids[r];
        if (id < vocab) atomicAdd(acc + (long long)id * d + c, to_f(dy[i]));
    }
}

template <typename T>
__device__ void cast_from_f32(const float* x, T* y, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        y[i] = from_f<T>(x[i]);
}

#define POINTWISE(SUFFIX, T)                                                                     \
    extern "C" __global__ void rope_##SUFFIX(const T* src, const T* cos, const T* sin, T* out,   \
                                             int b, int t, int h, int d, long long s0,           \
                                             long long s1, long long s2, int batched,            \
                                             int backward) {                                     \
        rope<T>(src, cos, sin, out, b, t, h, d, s0, s1, s2, batched, backward);                  \
    }                                                                                            \
    extern "C" __global__ void swiglu_fwd_##SUFFIX(const T* a, const T* b, T* y, long long n) {  \
        swiglu_fwd<T>(a, b, y, n);                                                               \
    }                                                                                            \
    extern "C" __global__ void swiglu_bwd_##SUFFIX(const T* a, const T* b, const T* dy, T* da,   \
                                                   T* db, long long n, int need_da,              \
                                                   int need_db) {                                \
        swiglu_bwd<T>(a, b, dy, da, db, n, need_da, need_db);                                    \
    }                                                                                            \
    extern "C" __global__ void quick_gelu_fwd_##SUFFIX(const T* x, T* y, long long n) {          \
        quick_gelu_fwd<T>(x, y, n);                                                              \
    }                                                                                            \
    extern "C" __global__ void embedding_fwd_##SUFFIX(const T* table, const uint32_t* ids,       \
                                                      T* out, long long n, int d,                \
                                                      unsigned vocab) {                          \
        embedding_fwd<T>(table, ids, out, n, d, vocab);                                          \
    }                                                                                            \
    extern "C" __global__ void embedding_bwd_##SUFFIX(const T* dy, const uint32_t* ids,          \
                                                      float* acc, long long n, int d,            \
                                                      unsigned vocab) {                          \
        embedding_bwd<T>(dy, ids, acc, n, d, vocab);                                             \
    }                                                                                            \
    extern "C" __global__ void cast_from_f32_##SUFFIX(const float* x, T* y, long long n) {       \
        cast_from_f32<T>(x, y, n);                                                               \
    }

POINTWISE(f32, float)
POINTWISE(bf16, __nv_bfloat16)

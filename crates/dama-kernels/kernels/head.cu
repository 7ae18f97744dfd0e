// The two per-chunk kernels of the chunked log-prob head; the GEMMs around them are cuBLAS.
#include "common.cuh"

// Folds logits (n, cs) of vocabulary ids c0..c0+cs into the per-row state (max, Σ exp(x −
// max), target logit), f32, (n, 3). One block per row. `state_out` may not alias `state_in`.
template <typename T>
__device__ void fold_chunk(const T* logits, const uint32_t* targets, const float* state_in,
                           float* state_out, int n, int cs, int c0) {
    __shared__ float scratch[32];
    for (int row = blockIdx.x; row < n; row += gridDim.x) {
        const T* x = logits + (size_t)row * cs;
        float m = DAMA_NEG_INF;
        for (int i = threadIdx.x; i < cs; i += blockDim.x) m = fmaxf(m, to_f(x[i]));
        m = block_max(m, scratch);
        const float m_old = state_in[row * 3], s_old = state_in[row * 3 + 1];
        const float m_new = fmaxf(m_old, m);
        float s = 0.0f;
        for (int i = threadIdx.x; i < cs; i += blockDim.x) s += expf(to_f(x[i]) - m_new);
        s = block_sum(s, scratch);
        if (threadIdx.x == 0) {
            state_out[row * 3] = m_new;
            state_out[row * 3 + 1] = s_old * expf(m_old - m_new) + s;
            const int y = (int)targets[row] - c0;
            state_out[row * 3 + 2] = (y >= 0 && y < cs) ? to_f(x[y]) : state_in[row * 3 + 2];
        }
    }
}

// G = g·(onehot(y) − exp(logits − lse)) for one chunk, in the logits' dtype.
template <typename T>
__device__ void chunk_grad(const T* logits, const uint32_t* targets, const float* lse,
                           const float* g, T* out, int n, int cs, int c0) {
    const long long total = (long long)n * cs;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const int row = (int)(idx / cs), v = (int)(idx % cs);
        const float p = expf(to_f(logits[idx]) - lse[row]);
        const float hot = ((int)targets[row] - c0 == v) ? 1.0f : 0.0f;
        out[idx] = from_f<T>(g[row] * (hot - p));
    }
}

#define HEAD(SUFFIX, T)                                                                          \
    extern "C" __global__ void fold_chunk_##SUFFIX(const T* logits, const uint32_t* targets,     \
                                                   const float* state_in, float* state_out,      \
                                                   int n, int cs, int c0) {                      \
        fold_chunk<T>(logits, targets, state_in, state_out, n, cs, c0);                          \
    }                                                                                            \
    extern "C" __global__ void chunk_grad_##SUFFIX(const T* logits, const uint32_t* targets,     \
                                                   const float* lse, const float* g, T* out,     \
                                                   int n, int cs, int c0) {                      \
        chunk_grad<T>(logits, targets, lse, g, out, n, cs, c0);                                  \
    }

HEAD(f32, float)
HEAD(bf16, __nv_bfloat16)

// Host emulation of the CUDA features kernels/attention_mma.cu uses (for attention_mma.cpp):
// one std::thread per CUDA thread of a block, barriers for __syncthreads and the warp
// collectives, mma.m16n8k16 built from the PTX ISA's fragment layouts (section "Matrix
// Fragments for mma.m16n8k16 with floating point type"). Blocks run one after another.
#pragma once
#include <cuda_bf16.h>
#include <barrier>
#include <thread>
#include <vector>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <atomic>
#include <functional>
#undef __global__
#define __global__
#undef __shared__
#define __shared__ static
#define __launch_bounds__(x)
#undef __forceinline__
#define __forceinline__ inline
struct Dim3 { unsigned x = 0, y = 0, z = 0; };
inline thread_local Dim3 threadIdx, blockIdx;
inline Dim3 blockDim, gridDim;
inline std::barrier<>* g_block_bar = nullptr;
inline std::barrier<>* g_warp_bar[32];
inline int g_flags[1024];
inline float g_fx[1024];
inline uint32_t g_mma_a[32][32][4], g_mma_b[32][32][2];
inline float g_mma_c[32][32][4];

inline void __syncthreads() { g_block_bar->arrive_and_wait(); }
inline int __syncthreads_or(int p) {
    g_flags[threadIdx.x] = p;
    __syncthreads();
    int r = 0;
    for (unsigned i = 0; i < blockDim.x; ++i) r |= g_flags[i];
    __syncthreads();
    return r != 0;
}
inline void warp_bar() { g_warp_bar[threadIdx.x / 32]->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int o) {
    g_fx[threadIdx.x] = v;
    warp_bar();
    float r = g_fx[(threadIdx.x & ~31u) | ((threadIdx.x % 32) ^ o)];
    warp_bar();
    return r;
}
inline int __any_sync(unsigned, int p) {
    g_flags[threadIdx.x] = p;
    warp_bar();
    int r = 0;
    for (unsigned i = 0; i < 32; ++i) r |= g_flags[(threadIdx.x & ~31u) | i];
    warp_bar();
    return r != 0;
}
inline unsigned atomicMin(unsigned* p, unsigned v) {
    auto* a = reinterpret_cast<std::atomic<unsigned>*>(p);
    unsigned o = a->load();
    while (v < o && !a->compare_exchange_weak(o, v)) {}
    return o;
}
inline unsigned atomicMax(unsigned* p, unsigned v) {
    auto* a = reinterpret_cast<std::atomic<unsigned>*>(p);
    unsigned o = a->load();
    while (v > o && !a->compare_exchange_weak(o, v)) {}
    return o;
}
inline float bf_lo(uint32_t w) { uint32_t u = (w & 0xffffu) << 16; float f; memcpy(&f, &u, 4); return f; }
inline float bf_hi(uint32_t w) { uint32_t u = w & 0xffff0000u; float f; memcpy(&f, &u, 4); return f; }
// mma.m16n8k16.row.col f32.bf16.bf16.f32, fragment layouts of the PTX ISA
inline void emu_mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int i = 0; i < 4; ++i) g_mma_a[w][lane][i] = a[i];
    g_mma_b[w][lane][0] = b0; g_mma_b[w][lane][1] = b1;
    warp_bar();
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; ++l) {
        const int g = l / 4, t = l % 4;
        const uint32_t* r = g_mma_a[w][l];
        A[g][2 * t] = bf_lo(r[0]); A[g][2 * t + 1] = bf_hi(r[0]);
        A[g + 8][2 * t] = bf_lo(r[1]); A[g + 8][2 * t + 1] = bf_hi(r[1]);
        A[g][2 * t + 8] = bf_lo(r[2]); A[g][2 * t + 9] = bf_hi(r[2]);
        A[g + 8][2 * t + 8] = bf_lo(r[3]); A[g + 8][2 * t + 9] = bf_hi(r[3]);
        const uint32_t* b = g_mma_b[w][l];
        B[2 * t][g] = bf_lo(b[0]); B[2 * t + 1][g] = bf_hi(b[0]);
        B[2 * t + 8][g] = bf_lo(b[1]); B[2 * t + 9][g] = bf_hi(b[1]);
    }
    warp_bar();
    const int g = lane / 4, t = lane % 4;
    const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
    for (int e = 0; e < 4; ++e) {
        float s = c[e];
        for (int k = 0; k < 16; ++k) s += A[rows[e]][k] * B[k][cols[e]];
        c[e] = s;
    }
}
// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 (PTX ISA, "Warp-level matrix load
// instruction: ldmatrix"): lane l names row l % 8 of matrix l / 8; register i of lane l gets
// matrix i's elements (row l / 4, columns 2·(l % 4), +1), of the transposed matrix with trans.
inline const void* g_ldsm_rows[32][32];
inline void emu_ldmatrix_x4(uint32_t (&r)[4], const void* p, bool trans) {
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    if ((reinterpret_cast<uintptr_t>(p) & 15) != 0) { fprintf(stderr, "ldmatrix: row address not 16-byte aligned\n"); abort(); }
    g_ldsm_rows[w][lane] = p;
    warp_bar();
    const int g = lane / 4, c = lane % 4;
    for (int i = 0; i < 4; ++i) {
        auto at = [&](int row, int col) -> uint32_t {
            const uint16_t* q = static_cast<const uint16_t*>(g_ldsm_rows[w][8 * i + row]);
            return q[col];
        };
        r[i] = trans ? (at(2 * c, g) | (at(2 * c + 1, g) << 16)) : (at(g, 2 * c) | (at(g, 2 * c + 1) << 16));
    }
    warp_bar();
}
// cp.async.cg.shared.global (16 bytes), commit_group, wait_group N: each copy is delayed to
// the wait that completes its group, and its destination is poisoned (0xff bytes: bf16 NaN)
// from the issue until then, so that a kernel reading a buffer before the wait and barrier
// that make it valid (or overwriting one still being read) computes NaN here.
struct EmuCopy { void* dst; const void* src; };
inline thread_local std::vector<std::vector<EmuCopy>> g_cp_groups;
inline thread_local std::vector<EmuCopy> g_cp_open;
inline void emu_cp_async16(void* dst, const void* src) {
    if (((reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src)) & 15) != 0) {
        fprintf(stderr, "cp.async: address not 16-byte aligned\n");
        abort();
    }
    memset(dst, 0xff, 16);
    g_cp_open.push_back({dst, src});
}
inline void emu_cp_commit() {
    g_cp_groups.push_back(std::move(g_cp_open));
    g_cp_open.clear();
}
inline void emu_cp_wait(size_t pending) {
    while (g_cp_groups.size() > pending) {
        for (auto& c : g_cp_groups.front()) memcpy(c.dst, c.src, 16);
        g_cp_groups.erase(g_cp_groups.begin());
    }
}
// Runs `f` on every block of `grid` with `threads` threads (blocks one after another).
inline void launch(Dim3 grid, unsigned threads, const std::function<void()>& f) {
    gridDim = grid;
    blockDim = Dim3{threads, 1, 1};
    std::barrier<> bb(threads);
    g_block_bar = &bb;
    std::vector<std::barrier<>*> wb;
    for (unsigned w = 0; w < threads / 32; ++w) { g_warp_bar[w] = new std::barrier<>(32); }
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                std::vector<std::thread> ts;
                for (unsigned i = 0; i < threads; ++i)
                    ts.emplace_back([&, i] {
                        threadIdx = Dim3{i, 0, 0};
                        blockIdx = Dim3{x, y, z};
                        f();
                    });
                for (auto& t : ts) t.join();
            }
    for (unsigned w = 0; w < threads / 32; ++w) delete g_warp_bar[w];
}

// Tensor-core flash attention (FlashAttention-2 style), bf16 in, f32 accumulation, forward
// and backward, for head dimensions D in {32, 64, 80, 96, 128}. sm_80+ (mma.sync
// m16n8k16 bf16, inline PTX); nothing newer is used, so the same PTX serves A100 and
// H100/H200. The plain-FMA kernels of attention.cu stay the fallback (f32, other D) and the
// reference the GPU check compares both against.
//
// Fragment layouts of mma.m16n8k16 (PTX ISA), g = lane / 4, c = lane % 4:
//   A (16x16, row-major), 4 regs of 2 bf16: (g, 2c..), (g+8, 2c..), (g, 2c+8..), (g+8, 2c+8..)
//   B (16x8,  col-major), 2 regs of 2 bf16: (k = 2c.., n = g), (k = 2c+8.., n = g)
//   C (16x8,  f32), 4 floats: (g, 2c), (g, 2c+1), (g+8, 2c), (g+8, 2c+1)
// The C fragments of two adjacent 8-column tiles are, packed to bf16, the A fragment of one
// 16-wide k-step, so P and dS never leave registers.
//
// Masks, layouts, log-sum-exp: as attention.cu (per-query key spans [s.x, s.y) ∪ [s.z, s.w);
// q (b, t, hq, D), k, v (b, t, hkv, D) through strides in elements with a contiguous last
// dimension; out, dq, dk, dv contiguous; lse (b, t, hq) f32 in natural log, −inf for a query
// with no allowed key, whose output and dQ are 0). Key tiles no query of a block may see are
// skipped; inside a tile, disallowed (query, key) pairs get probability 0.
#include "common.cuh"

#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

typedef __nv_bfloat16 bf16;

struct Strides {
    long long s0, s1, s2;
};

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
}

// c += a·b, m16n8k16, bf16 inputs, f32 accumulators.
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
#ifdef DAMA_EMU  // kernels/emu: the CPU emulation of one warp's mma (no GPU needed)
    emu_mma(c, a, b0, b1);
    return;
#endif
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Eight bf16 at p: one 16-byte load where p is 16-byte aligned, else eight 2-byte ones.
__device__ __forceinline__ uint4 load8(const bf16* p) {
    if ((reinterpret_cast<uintptr_t>(p) & 15) == 0) return *reinterpret_cast<const uint4*>(p);
    const unsigned short* u = reinterpret_cast<const unsigned short*>(p);
    uint4 v;
    v.x = (uint32_t)u[0] | ((uint32_t)u[1] << 16);
    v.y = (uint32_t)u[2] | ((uint32_t)u[3] << 16);
    v.z = (uint32_t)u[4] | ((uint32_t)u[5] << 16);
    v.w = (uint32_t)u[6] | ((uint32_t)u[7] << 16);
    return v;
}

// Rows [r0, r0 + ROWS) of head h of a (b, t, heads, D) tensor into a shared (ROWS, P) tile;
// rows >= t are zero.
template <int ROWS, int D, int P>
__device__ __forceinline__ void load_rows(bf16* tile, const bf16* src, Strides st, int bi, int h,
                                          int r0, int t) {
    constexpr int CH = D / 8;
    for (int e = threadIdx.x; e < ROWS * CH; e += blockDim.x) {
        const int r = e / CH, c = (e % CH) * 8;
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (r0 + r < t) v = load8(src + bi * st.s0 + (long long)(r0 + r) * st.s1 + h * st.s2 + c);
        *reinterpret_cast<uint4*>(tile + r * P + c) = v;
    }
}

// The A fragment of rows [r0, r0 + 16), columns [k0, k0 + 16) of a shared (., P) tile.
template <int P>
__device__ __forceinline__ void frag_a(uint32_t (&a)[4], const bf16* tile, int r0, int k0) {
    const int g = (threadIdx.x % 32) / 4, c = threadIdx.x % 4;
    const bf16* p = tile + (r0 + g) * P + k0 + 2 * c;
    a[0] = *reinterpret_cast<const uint32_t*>(p);
    a[1] = *reinterpret_cast<const uint32_t*>(p + 8 * P);
    a[2] = *reinterpret_cast<const uint32_t*>(p + 8);
    a[3] = *reinterpret_cast<const uint32_t*>(p + 8 * P + 8);
}

// B[k][n] = tile[n0 + n][k0 + k] (the tile's rows are B's columns: K for Q·Kᵀ).
template <int P>
__device__ __forceinline__ void frag_b_rows(uint32_t& b0, uint32_t& b1, const bf16* tile, int n0,
                                            int k0) {
    const int g = (threadIdx.x % 32) / 4, c = threadIdx.x % 4;
    const bf16* p = tile + (n0 + g) * P + k0 + 2 * c;
    b0 = *reinterpret_cast<const uint32_t*>(p);
    b1 = *reinterpret_cast<const uint32_t*>(p + 8);
}

// B[k][n] = tile[k0 + k][n0 + n] (the tile's rows are B's rows: V for P·V).
template <int P>
__device__ __forceinline__ void frag_b_cols(uint32_t& b0, uint32_t& b1, const bf16* tile, int k0,
                                            int n0) {
    const int g = (threadIdx.x % 32) / 4, c = threadIdx.x % 4;
    const unsigned short* u = reinterpret_cast<const unsigned short*>(tile) + (k0 + 2 * c) * P + n0 + g;
    b0 = (uint32_t)u[0] | ((uint32_t)u[P] << 16);
    b1 = (uint32_t)u[8 * P] | ((uint32_t)u[9 * P] << 16);
}

// The A fragment of k-step kk made of C fragments 2kk and 2kk + 1.
__device__ __forceinline__ void c_to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
    a[0] = pack_bf16(c0[0], c0[1]);
    a[1] = pack_bf16(c0[2], c0[3]);
    a[2] = pack_bf16(c1[0], c1[1]);
    a[3] = pack_bf16(c1[2], c1[3]);
}

// ldmatrix.x4: lane l gives the address of row l % 8 of 8x8 matrix l / 8 (16 bytes each);
// register i of every lane receives its fragment of matrix i (row lane / 4, columns
// 2·(lane % 4) and + 1; with .trans, of the transposed matrix). One instruction loads what
// frag_a / frag_b_* read with four to eight scalar shared-memory loads.
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16* p, bool trans) {
#ifdef DAMA_EMU
    emu_ldmatrix_x4(r, p, trans);
#else
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    if (trans)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a));
#endif
}

// frag_a through ldmatrix: matrices (r0, k0), (r0 + 8, k0), (r0, k0 + 8), (r0 + 8, k0 + 8).
template <int P>
__device__ __forceinline__ void frag_a_ldsm(uint32_t (&a)[4], const bf16* tile, int r0, int k0) {
    const int l = threadIdx.x % 32;
    ldsm_x4(a, tile + (r0 + (l & 7) + ((l >> 3) & 1) * 8) * P + k0 + (l >> 4) * 8, false);
}

// frag_b_rows for the n-tiles n0 and n0 + 8 at once: b[0], b[1] of n0, b[2], b[3] of n0 + 8.
template <int P>
__device__ __forceinline__ void frag_b_rows2(uint32_t (&b)[4], const bf16* tile, int n0, int k0) {
    const int l = threadIdx.x % 32;
    ldsm_x4(b, tile + (n0 + (l & 7) + (l >> 4) * 8) * P + k0 + ((l >> 3) & 1) * 8, false);
}

// frag_b_cols for the n-tiles n0 and n0 + 8 at once (transposed loads).
template <int P>
__device__ __forceinline__ void frag_b_cols2(uint32_t (&b)[4], const bf16* tile, int k0, int n0) {
    const int l = threadIdx.x % 32;
    ldsm_x4(b, tile + (k0 + (l & 7) + ((l >> 3) & 1) * 8) * P + n0 + (l >> 4) * 8, true);
}

// The B fragments of n-tiles n and n + 1 (n even) of a tile read as rows or as columns, by
// ldmatrix (LDSM) or by scalar loads: what the kernels' inner loops call.
template <int P, bool LDSM>
__device__ __forceinline__ void b_rows_pair(uint32_t (&b)[4], const bf16* tile, int n0, int k0) {
    if (LDSM) {
        frag_b_rows2<P>(b, tile, n0, k0);
    } else {
        frag_b_rows<P>(b[0], b[1], tile, n0, k0);
        frag_b_rows<P>(b[2], b[3], tile, n0 + 8, k0);
    }
}
template <int P, bool LDSM>
__device__ __forceinline__ void b_cols_pair(uint32_t (&b)[4], const bf16* tile, int k0, int n0) {
    if (LDSM) {
        frag_b_cols2<P>(b, tile, k0, n0);
    } else {
        frag_b_cols<P>(b[0], b[1], tile, k0, n0);
        frag_b_cols<P>(b[2], b[3], tile, k0, n0 + 8);
    }
}
template <int P, bool LDSM>
__device__ __forceinline__ void a_frag(uint32_t (&a)[4], const bf16* tile, int r0, int k0) {
    if (LDSM)
        frag_a_ldsm<P>(a, tile, r0, k0);
    else
        frag_a<P>(a, tile, r0, k0);
}

// Smallest first key and largest end over the spans of queries [q0, q0 + n) (shared result).
__device__ __forceinline__ void key_range(const uint4* spans, int bi, int t, int q0, int n,
                                          unsigned int* lo, unsigned int* hi) {
    if (threadIdx.x == 0) {
        *lo = (unsigned int)t;
        *hi = 0u;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        if (q0 + i >= t) break;
        const uint4 s = spans[(size_t)bi * t + q0 + i];
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

// ---------------------------------------------------------------------------------------------
// Forward: a block = 4 warps = 64 queries of one (batch, head); key tiles of 64 (32, double
// buffered with cp.async, in the ldmatrix variant).

#define FWD_BQ 64
#define FWD_BK 64
#define FWD_PIPE_BK 32

// cp.async of 16 bytes global -> shared (sm_80+), its commit and wait: the copies of a group
// run while the block computes on the previous tile. kernels/emu delays each copy to the wait
// and poisons its destination meanwhile, so a read before the wait shows up there.
__device__ __forceinline__ void cp_async16(bf16* dst, const bf16* src) {
#ifdef DAMA_EMU
    emu_cp_async16(dst, src);
#else
    const unsigned a = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(a), "l"(src) : "memory");
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#ifdef DAMA_EMU
    emu_cp_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
// Waits until at most one committed group is still in flight.
__device__ __forceinline__ void cp_async_wait1() {
#ifdef DAMA_EMU
    emu_cp_wait(1);
#else
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");
#endif
}

// load_rows with cp.async where a row is 16-byte aligned (rows >= t are zeroed and misaligned
// rows copied with 2-byte loads, both at once): complete after cp_async_commit + wait.
template <int ROWS, int D, int P>
__device__ __forceinline__ void issue_rows(bf16* tile, const bf16* src, Strides st, int bi, int h,
                                           int r0, int t) {
    constexpr int CH = D / 8;
    for (int e = threadIdx.x; e < ROWS * CH; e += blockDim.x) {
        const int r = e / CH, c = (e % CH) * 8;
        bf16* d = tile + r * P + c;
        if (r0 + r >= t) {
            *reinterpret_cast<uint4*>(d) = make_uint4(0u, 0u, 0u, 0u);
            continue;
        }
        const bf16* p = src + bi * st.s0 + (long long)(r0 + r) * st.s1 + h * st.s2 + c;
        if ((reinterpret_cast<uintptr_t>(p) & 15) == 0)
            cp_async16(d, p);
        else
            *reinterpret_cast<uint4*>(d) = load8(p);
    }
}

// Runs `compute(ksm, vsm, j0)` for every key tile [j0, j0 + BK) of [lo, hi) that a query of
// the block sees (in the warps that have such a query), its K and V rows loaded into ksm / vsm
// first.
template <int BK, int D, int P, typename F>
__device__ __forceinline__ void plain_kv_tiles(int lo, int hi, const uint4 (&sp)[2],
                                               const bf16* k, Strides ks, const bf16* v,
                                               Strides vs, int bi, int kvh, int t, bf16* ksm,
                                               bf16* vsm, F compute) {
    for (int j0 = lo; j0 < hi; j0 += BK) {
        const bool mine = span_meets(sp[0], j0, j0 + BK) || span_meets(sp[1], j0, j0 + BK);
        if (!__syncthreads_or(mine)) continue;
        load_rows<BK, D, P>(ksm, k, ks, bi, kvh, j0, t);
        load_rows<BK, D, P>(vsm, v, vs, bi, kvh, j0, t);
        __syncthreads();
        if (__any_sync(0xffffffffu, mine)) compute(ksm, vsm, j0);
        __syncthreads();
    }
}

// plain_kv_tiles with the tile's K and V rows copied with
// cp.async into one of the two BK-row buffers of kbuf / vbuf while the block computes on the
// other. Tiles nobody sees are skipped before they are fetched.
template <int BK, int D, int P, typename F>
__device__ __forceinline__ void pipelined_kv_tiles(int lo, int hi, const uint4 (&sp)[2],
                                                   const bf16* k, Strides ks, const bf16* v,
                                                   Strides vs, int bi, int kvh, int t,
                                                   bf16* kbuf, bf16* vbuf, F compute) {
    auto meets = [&](int j) {
        return span_meets(sp[0], j, j + BK) || span_meets(sp[1], j, j + BK);
    };
    auto active = [&](int j) {
        for (; j < hi; j += BK)
            if (__syncthreads_or(meets(j))) return j;
        return hi;
    };
    int jc = active(lo), buf = 0;
    if (jc < hi) {
        issue_rows<BK, D, P>(kbuf, k, ks, bi, kvh, jc, t);
        issue_rows<BK, D, P>(vbuf, v, vs, bi, kvh, jc, t);
    }
    cp_async_commit();
    while (jc < hi) {
        const int jn = active(jc + BK);
        if (jn < hi) {
            issue_rows<BK, D, P>(kbuf + (buf ^ 1) * BK * P, k, ks, bi, kvh, jn, t);
            issue_rows<BK, D, P>(vbuf + (buf ^ 1) * BK * P, v, vs, bi, kvh, jn, t);
        }
        cp_async_commit();
        cp_async_wait1();  // tile jc's group is done
        __syncthreads();
        if (__any_sync(0xffffffffu, meets(jc)))
            compute(kbuf + buf * BK * P, vbuf + buf * BK * P, jc);
        __syncthreads();  // before the next iteration copies into this buffer
        jc = jn;
        buf ^= 1;
    }
}

// acc += C·tile for the warp's 16 rows: C (16 × BK, f32 C fragments, rounded to bf16 as A
// fragments) times the tile's BK rows of D (P·V in the forward, dS·K in dQ).
template <int D, int BK, bool LDSM>
__device__ __forceinline__ void acc_c_times_rows(float (&acc)[D / 8][4],
                                                 const float (&c)[BK / 8][4], const bf16* tile) {
    constexpr int P = D + 8, NT = D / 8;
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
        uint32_t a[4];
        c_to_a(a, c[2 * kk], c[2 * kk + 1]);
#pragma unroll
        for (int n = 0; n < NT; n += 2) {
            uint32_t b[4];
            b_cols_pair<P, LDSM>(b, tile, kk * 16, n * 8);
            mma16816(acc[n], a, b[0], b[1]);
            mma16816(acc[n + 1], a, b[2], b[3]);
        }
    }
}

// One key tile [j0, j0 + BK) for the warp's 16 queries: S = Q·Kᵀ, the mask, the online-softmax
// update of (mx, l, o), O += P·V. ksm / vsm hold the tile's BK key / value rows.
template <int D, int BK, bool LDSM>
__device__ __forceinline__ void fwd_tile(const uint32_t (&qf)[D / 16][4], const bf16* ksm,
                                         const bf16* vsm, int j0, const uint4 (&sp)[2],
                                         float c2, float (&mx)[2], float (&l)[2],
                                         float (&o)[D / 8][4]) {
    constexpr int P = D + 8, KS = D / 16, NT = D / 8, ST = BK / 8;
    const int cc = (threadIdx.x % 32) % 4;
    const int j1 = j0 + BK;
    float s[ST][4];
#pragma unroll
    for (int n = 0; n < ST; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KS; ++kk)
#pragma unroll
        for (int n = 0; n < ST; n += 2) {
            uint32_t b[4];
            b_rows_pair<P, LDSM>(b, ksm, n * 8, kk * 16);
            mma16816(s[n], qf[kk], b[0], b[1]);
            mma16816(s[n + 1], qf[kk], b[2], b[3]);
        }
    bool full[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) full[r] = sp[r].x <= (unsigned)j0 && (unsigned)j1 <= sp[r].y;
#pragma unroll
    for (int n = 0; n < ST; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int r = e / 2;
            const unsigned j = (unsigned)(j0 + n * 8 + 2 * cc + (e & 1));
            const bool ok = full[r] || span_has(sp[r], j);
            s[n][e] = ok ? s[n][e] * c2 : DAMA_NEG_INF;
        }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float m = DAMA_NEG_INF;
#pragma unroll
        for (int n = 0; n < ST; ++n) m = fmaxf(m, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
        const float mnew = fmaxf(mx[r], m);
        const float base = mnew == DAMA_NEG_INF ? 0.0f : mnew;
        const float corr = exp2f(mx[r] - base);
        mx[r] = mnew;
        float sum = 0.0f;
#pragma unroll
        for (int n = 0; n < ST; ++n) {
            s[n][2 * r] = exp2f(s[n][2 * r] - base);
            s[n][2 * r + 1] = exp2f(s[n][2 * r + 1] - base);
            sum += s[n][2 * r] + s[n][2 * r + 1];
        }
        l[r] = l[r] * corr + sum;
#pragma unroll
        for (int n = 0; n < NT; ++n) {
            o[n][2 * r] *= corr;
            o[n][2 * r + 1] *= corr;
        }
    }
    acc_c_times_rows<D, BK, LDSM>(o, s, vsm);
}

// The output rows and log-sum-exp of the warp's 16 queries.
template <int D>
__device__ __forceinline__ void fwd_store(bf16* out, float* lse, const float (&o)[D / 8][4],
                                          const float (&mx)[2], float (&l)[2],
                                          const int (&row)[2], int bi, int t, int hq, int h) {
    constexpr int NT = D / 8;
    const int cc = (threadIdx.x % 32) % 4;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        if (row[r] >= t) continue;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        bf16* op = out + (((size_t)bi * t + row[r]) * hq + h) * D + 2 * cc;
#pragma unroll
        for (int n = 0; n < NT; ++n)
            *reinterpret_cast<uint32_t*>(op + n * 8) = pack_bf16(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
        if (cc == 0)
            lse[((size_t)bi * t + row[r]) * hq + h] =
                l[r] > 0.0f ? (mx[r] + log2f(l[r])) * LN2 : DAMA_NEG_INF;
    }
}

template <int D, bool LDSM>
__device__ void attn_fwd_mma(const bf16* q, const bf16* k, const bf16* v, const uint4* spans,
                             bf16* out, float* lse, int t, int hq, int hkv, Strides qs, Strides ks,
                             Strides vs, float scale) {
    constexpr int P = D + 8, KS = D / 16, NT = D / 8;
    __shared__ __align__(16) bf16 ksm[FWD_BK * P];
    __shared__ __align__(16) bf16 vsm[FWD_BK * P];
    __shared__ unsigned int klo, khi;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4;
    const int bi = blockIdx.z, h = blockIdx.y, kvh = h / (hq / hkv);
    const int q0 = blockIdx.x * FWD_BQ;
    const int row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
    uint4 sp[2];
#pragma unroll
    for (int r = 0; r < 2; ++r)
        sp[r] = row[r] < t ? spans[(size_t)bi * t + row[r]] : make_uint4(0u, 0u, 0u, 0u);
    key_range(spans, bi, t, q0, FWD_BQ, &klo, &khi);

    // Q through shared memory into A fragments (kept in registers for the whole loop).
    load_rows<FWD_BQ, D, P>(ksm, q, qs, bi, h, q0, t);
    __syncthreads();
    uint32_t qf[KS][4];
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) a_frag<P, LDSM>(qf[kk], ksm, warp * 16, kk * 16);
    __syncthreads();

    float o[NT][4];
#pragma unroll
    for (int n = 0; n < NT; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float mx[2] = {DAMA_NEG_INF, DAMA_NEG_INF}, l[2] = {0.0f, 0.0f};
    const float c2 = scale * LOG2E;
    const int lo = (int)klo, hi = (int)khi;

    if (!LDSM) {
        plain_kv_tiles<FWD_BK, D, P>(
            lo, hi, sp, k, ks, v, vs, bi, kvh, t, ksm, vsm,
            [&](const bf16* kt, const bf16* vt, int j0) {
                fwd_tile<D, FWD_BK, LDSM>(qf, kt, vt, j0, sp, c2, mx, l, o);
            });
    } else {
        // Two buffers of FWD_PIPE_BK keys in the plain tile's shared memory.
        constexpr int BK = FWD_PIPE_BK;
        static_assert(2 * BK <= FWD_BK, "two pipelined tiles fit the plain tile's buffer");
        pipelined_kv_tiles<BK, D, P>(lo, hi, sp, k, ks, v, vs, bi, kvh, t, ksm, vsm,
                                     [&](const bf16* kt, const bf16* vt, int j0) {
                                         fwd_tile<D, BK, LDSM>(qf, kt, vt, j0, sp, c2, mx, l, o);
                                     });
    }
    fwd_store<D>(out, lse, o, mx, l, row, bi, t, hq, h);
}

// ---------------------------------------------------------------------------------------------
// dQ = scale·Σ_j dS_ij·K_j, dS = P ⊙ (dO·Vᵀ − delta): a block = 4 warps = 64 queries of one
// (batch, head); key tiles of 32 (double-buffered with cp.async in the ldmatrix variant).

#define DQ_BQ 64
#define DQ_BK 32

// One key tile [j0, j0 + BK) of dQ for the warp's 16 queries: S and dP = dO·Vᵀ recomputed,
// dS = P ⊙ (dP − delta), acc += dS·K. ksm / vsm hold the tile's BK key / value rows.
template <int D, int BK, bool LDSM>
__device__ __forceinline__ void dq_tile(const uint32_t (&qf)[D / 16][4],
                                        const uint32_t (&gf)[D / 16][4], const bf16* ksm,
                                        const bf16* vsm, int j0, const uint4 (&sp)[2],
                                        const float (&l2)[2], const float (&dl)[2], float c2,
                                        float (&acc)[D / 8][4]) {
    constexpr int P = D + 8, KS = D / 16, ST = BK / 8;
    const int cc = (threadIdx.x % 32) % 4;
    float s[ST][4], dp[ST][4];
#pragma unroll
    for (int n = 0; n < ST; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[n][e] = dp[n][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KS; ++kk)
#pragma unroll
        for (int n = 0; n < ST; n += 2) {
            uint32_t b[4];
            b_rows_pair<P, LDSM>(b, ksm, n * 8, kk * 16);
            mma16816(s[n], qf[kk], b[0], b[1]);
            mma16816(s[n + 1], qf[kk], b[2], b[3]);
            b_rows_pair<P, LDSM>(b, vsm, n * 8, kk * 16);
            mma16816(dp[n], gf[kk], b[0], b[1]);
            mma16816(dp[n + 1], gf[kk], b[2], b[3]);
        }
#pragma unroll
    for (int n = 0; n < ST; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int r = e / 2;
            const unsigned j = (unsigned)(j0 + n * 8 + 2 * cc + (e & 1));
            const float p = span_has(sp[r], j) ? exp2f(s[n][e] * c2 - l2[r]) : 0.0f;
            dp[n][e] = p * (dp[n][e] - dl[r]);
        }
    acc_c_times_rows<D, BK, LDSM>(acc, dp, ksm);
}

template <int D, bool LDSM>
__device__ void attn_bwd_dq_mma(const bf16* q, const bf16* k, const bf16* v, const bf16* dout,
                                const uint4* spans, const float* lse, const float* delta,
                                bf16* dq, int t, int hq, int hkv, Strides qs, Strides ks,
                                Strides vs, Strides gs, float scale) {
    constexpr int P = D + 8, KS = D / 16, NT = D / 8;
    __shared__ __align__(16) bf16 ksm[DQ_BQ * P];  // Q / dO staging, then K tiles (DQ_BK rows)
    __shared__ __align__(16) bf16 vsm[(LDSM ? 2 : 1) * DQ_BK * P];  // two tiles when pipelined
    __shared__ unsigned int klo, khi;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, cc = lane % 4;
    const int bi = blockIdx.z, h = blockIdx.y, kvh = h / (hq / hkv);
    const int q0 = blockIdx.x * DQ_BQ;
    const int row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
    uint4 sp[2];
    float l2[2], dl[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const bool in = row[r] < t;
        const size_t i = ((size_t)bi * t + (in ? row[r] : 0)) * hq + h;
        sp[r] = in ? spans[(size_t)bi * t + row[r]] : make_uint4(0u, 0u, 0u, 0u);
        l2[r] = in ? lse[i] * LOG2E : 0.0f;
        dl[r] = in ? delta[i] : 0.0f;
    }
    key_range(spans, bi, t, q0, DQ_BQ, &klo, &khi);

    uint32_t qf[KS][4], gf[KS][4];
    load_rows<DQ_BQ, D, P>(ksm, q, qs, bi, h, q0, t);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) a_frag<P, LDSM>(qf[kk], ksm, warp * 16, kk * 16);
    __syncthreads();
    load_rows<DQ_BQ, D, P>(ksm, dout, gs, bi, h, q0, t);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) a_frag<P, LDSM>(gf[kk], ksm, warp * 16, kk * 16);
    __syncthreads();

    float acc[NT][4];
#pragma unroll
    for (int n = 0; n < NT; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    const float c2 = scale * LOG2E;
    const int lo = (int)klo, hi = (int)khi;
    if (!LDSM) {
        plain_kv_tiles<DQ_BK, D, P>(lo, hi, sp, k, ks, v, vs, bi, kvh, t, ksm, vsm,
                                    [&](const bf16* kt, const bf16* vt, int j0) {
                                        dq_tile<D, DQ_BK, LDSM>(qf, gf, kt, vt, j0, sp, l2, dl,
                                                                c2, acc);
                                    });
    } else {
        // K and V tiles double-buffered: ksm's 64 rows and vsm's (here) 64 rows, 32 each.
        static_assert(2 * DQ_BK <= DQ_BQ, "two K tiles fit the Q / dO staging buffer");
        pipelined_kv_tiles<DQ_BK, D, P>(lo, hi, sp, k, ks, v, vs, bi, kvh, t, ksm, vsm,
                                        [&](const bf16* kt, const bf16* vt, int j0) {
                                            dq_tile<D, DQ_BK, LDSM>(qf, gf, kt, vt, j0, sp, l2,
                                                                    dl, c2, acc);
                                        });
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        if (row[r] >= t) continue;
        bf16* op = dq + (((size_t)bi * t + row[r]) * hq + h) * D + 2 * cc;
#pragma unroll
        for (int n = 0; n < NT; ++n)
            *reinterpret_cast<uint32_t*>(op + n * 8) =
                pack_bf16(acc[n][2 * r] * scale, acc[n][2 * r + 1] * scale);
    }
}

// ---------------------------------------------------------------------------------------------
// dK = scale·Σ_i dS_ij·Q_i, dV = Σ_i P_ij·dO_i over every head of the group: a block = 2 warps
// = 32 keys of one (batch, kv head); query tiles of 32, transposed scores (keys as rows).

#define KV_BK 32
#define KV_BQ 32

template <int D, bool LDSM>
__device__ void attn_bwd_dkdv_mma(const bf16* q, const bf16* k, const bf16* v, const bf16* dout,
                                  const uint4* spans, const float* lse, const float* delta,
                                  bf16* dk, bf16* dv, int t, int hq, int hkv, Strides qs,
                                  Strides ks, Strides vs, Strides gs, float scale) {
    constexpr int P = D + 8, KS = D / 16, NT = D / 8, ST = KV_BQ / 8;
    __shared__ __align__(16) bf16 ksm[KV_BK * P];
    __shared__ __align__(16) bf16 vsm[KV_BK * P];
    __shared__ __align__(16) bf16 qsm[KV_BQ * P];
    __shared__ __align__(16) bf16 gsm[KV_BQ * P];
    __shared__ float l2sm[KV_BQ], dsm[KV_BQ];
    __shared__ uint4 ssm[KV_BQ];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, cc = lane % 4;
    const int bi = blockIdx.z, kvh = blockIdx.y, rep = hq / hkv;
    const int j0 = blockIdx.x * KV_BK, j1 = j0 + KV_BK;
    const unsigned key[2] = {(unsigned)(j0 + warp * 16 + g), (unsigned)(j0 + warp * 16 + g + 8)};
    load_rows<KV_BK, D, P>(ksm, k, ks, bi, kvh, j0, t);
    load_rows<KV_BK, D, P>(vsm, v, vs, bi, kvh, j0, t);

    float ak[NT][4], av[NT][4];
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) ak[n][e] = av[n][e] = 0.0f;
    const float c2 = scale * LOG2E;
    for (int h = kvh * rep; h < (kvh + 1) * rep; ++h) {
        for (int i0 = 0; i0 < t; i0 += KV_BQ) {
            bool meet = false;
            for (int i = threadIdx.x; i < KV_BQ && i0 + i < t; i += blockDim.x)
                meet |= span_meets(spans[(size_t)bi * t + i0 + i], j0, j1);
            if (!__syncthreads_or(meet)) continue;
            load_rows<KV_BQ, D, P>(qsm, q, qs, bi, h, i0, t);
            load_rows<KV_BQ, D, P>(gsm, dout, gs, bi, h, i0, t);
            for (int i = threadIdx.x; i < KV_BQ; i += blockDim.x) {
                const bool in = i0 + i < t;
                const size_t r = ((size_t)bi * t + (in ? i0 + i : 0)) * hq + h;
                l2sm[i] = in ? lse[r] * LOG2E : 0.0f;
                dsm[i] = in ? delta[r] : 0.0f;
                ssm[i] = in ? spans[(size_t)bi * t + i0 + i] : make_uint4(0u, 0u, 0u, 0u);
            }
            __syncthreads();
            float s[ST][4], dp[ST][4];
#pragma unroll
            for (int n = 0; n < ST; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[n][e] = dp[n][e] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < KS; ++kk) {
                uint32_t a[4], b[4];
                a_frag<P, LDSM>(a, ksm, warp * 16, kk * 16);
                a_frag<P, LDSM>(b, vsm, warp * 16, kk * 16);
#pragma unroll
                for (int n = 0; n < ST; n += 2) {
                    uint32_t f[4];
                    b_rows_pair<P, LDSM>(f, qsm, n * 8, kk * 16);
                    mma16816(s[n], a, f[0], f[1]);
                    mma16816(s[n + 1], a, f[2], f[3]);
                    b_rows_pair<P, LDSM>(f, gsm, n * 8, kk * 16);
                    mma16816(dp[n], b, f[0], f[1]);
                    mma16816(dp[n + 1], b, f[2], f[3]);
                }
            }
#pragma unroll
            for (int n = 0; n < ST; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int qi = n * 8 + 2 * cc + (e & 1);
                    const float p = span_has(ssm[qi], key[e / 2])
                                        ? exp2f(s[n][e] * c2 - l2sm[qi])
                                        : 0.0f;
                    s[n][e] = p;
                    dp[n][e] = p * (dp[n][e] - dsm[qi]);
                }
#pragma unroll
            for (int kk = 0; kk < KV_BQ / 16; ++kk) {
                uint32_t pa[4], da[4];
                c_to_a(pa, s[2 * kk], s[2 * kk + 1]);
                c_to_a(da, dp[2 * kk], dp[2 * kk + 1]);
#pragma unroll
                for (int n = 0; n < NT; n += 2) {
                    uint32_t f[4];
                    b_cols_pair<P, LDSM>(f, gsm, kk * 16, n * 8);
                    mma16816(av[n], pa, f[0], f[1]);
                    mma16816(av[n + 1], pa, f[2], f[3]);
                    b_cols_pair<P, LDSM>(f, qsm, kk * 16, n * 8);
                    mma16816(ak[n], da, f[0], f[1]);
                    mma16816(ak[n + 1], da, f[2], f[3]);
                }
            }
            __syncthreads();
        }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        if (key[r] >= (unsigned)t) continue;
        const size_t o = (((size_t)bi * t + key[r]) * hkv + kvh) * D + 2 * cc;
#pragma unroll
        for (int n = 0; n < NT; ++n) {
            *reinterpret_cast<uint32_t*>(dk + o + n * 8) =
                pack_bf16(ak[n][2 * r] * scale, ak[n][2 * r + 1] * scale);
            *reinterpret_cast<uint32_t*>(dv + o + n * 8) = pack_bf16(av[n][2 * r], av[n][2 * r + 1]);
        }
    }
}

#define STRIDES(p) Strides { p##0, p##1, p##2 }

#define ATTN_MMA(D, PRE, LDSM)                                                                     \
    extern "C" __global__ void __launch_bounds__(128)                                              \
        PRE##_fwd_d##D(const bf16* q, const bf16* k, const bf16* v, const uint4* spans,            \
                          bf16* out, float* lse, int t, int hq, int hkv, long long qs0,            \
                          long long qs1, long long qs2, long long ks0, long long ks1,              \
                          long long ks2, long long vs0, long long vs1, long long vs2,              \
                          float scale) {                                                           \
        attn_fwd_mma<D, LDSM>(q, k, v, spans, out, lse, t, hq, hkv, STRIDES(qs), STRIDES(ks),      \
                        STRIDES(vs), scale);                                                       \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(128) PRE##_bwd_dq_d##D(                           \
        const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const uint4* spans,         \
        const float* lse, const float* delta, bf16* dq, int t, int hq, int hkv, long long qs0,     \
        long long qs1, long long qs2, long long ks0, long long ks1, long long ks2,                 \
        long long vs0, long long vs1, long long vs2, long long gs0, long long gs1,                 \
        long long gs2, float scale) {                                                              \
        attn_bwd_dq_mma<D, LDSM>(q, k, v, dout, spans, lse, delta, dq, t, hq, hkv, STRIDES(qs),    \
                           STRIDES(ks), STRIDES(vs), STRIDES(gs), scale);                          \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(64) PRE##_bwd_dkdv_d##D(                          \
        const bf16* q, const bf16* k, const bf16* v, const bf16* dout, const uint4* spans,         \
        const float* lse, const float* delta, bf16* dk, bf16* dv, int t, int hq, int hkv,          \
        long long qs0, long long qs1, long long qs2, long long ks0, long long ks1,                 \
        long long ks2, long long vs0, long long vs1, long long vs2, long long gs0,                 \
        long long gs1, long long gs2, float scale) {                                               \
        attn_bwd_dkdv_mma<D, LDSM>(q, k, v, dout, spans, lse, delta, dk, dv, t, hq, hkv, STRIDES(qs),\
                             STRIDES(ks), STRIDES(vs), STRIDES(gs), scale);                        \
    }

// attn_mma_*: fragments by scalar shared-memory loads (the default, checked on an H200);
// attn_mma_ldsm_*: the same kernels with fragments by ldmatrix (DAMA_CUDA_ATTN=ldmatrix).
ATTN_MMA(32, attn_mma, false)
ATTN_MMA(64, attn_mma, false)
ATTN_MMA(80, attn_mma, false)
ATTN_MMA(96, attn_mma, false)
ATTN_MMA(128, attn_mma, false)
ATTN_MMA(32, attn_mma_ldsm, true)
ATTN_MMA(64, attn_mma_ldsm, true)
ATTN_MMA(80, attn_mma_ldsm, true)
ATTN_MMA(96, attn_mma_ldsm, true)
ATTN_MMA(128, attn_mma_ldsm, true)

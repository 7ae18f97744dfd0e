//! The CPU kernels, tiled so that rows stay in L1 while a block of the other side streams by:
//!
//! - forward: a task is a block of [`QB`] query rows of one sequence; per head, keys are
//!   visited in blocks of [`KB`] with the flash recurrence (running max and sum, rescaled as the
//!   max grows), each key row used by all the block's queries while it is in cache;
//! - backward: one pass over the allowed (query, key) pairs, `P` and `dS` computed once per
//!   pair; a task is a range of keys of one sequence and key/value head (every query head of
//!   the GQA group), owning its `dK`/`dV` rows and accumulating `dQ` in a private buffer that
//!   is summed afterwards, so no two tasks write the same memory.
//!
//! On x86-64 with AVX2 and FMA (checked at run time) the same code is compiled a second time
//! with those features enabled and used instead.

use num_traits::{Float, Zero};
use rayon::prelude::*;

use crate::elem::{Acc, Elem, axpy, dot};
use crate::io::View4;

/// Query rows per forward task.
const QB: usize = 16;
/// Keys per forward block.
const KB: usize = 64;
/// Keys per backward tile.
const BK: usize = 16;

/// An input tensor: its storage from the layout's start offset, read through `view`.
pub(super) struct Input<'a, T> {
    data: &'a [T],
    pub view: View4,
}

impl<'a, T: Elem> Input<'a, T> {
    pub fn new(data: &'a [T], view: View4) -> Self {
        Self { data, view }
    }

    /// The `d` values at `[b, t, h, :]`.
    #[inline]
    fn row(&self, b: usize, t: usize, h: usize) -> &'a [T] {
        &self.data[self.view.at(b, t, h)..][..self.view.dims[3]]
    }

    /// The whole tensor in the accumulation type, `(b, h, t, d)` order (each head's rows
    /// contiguous), scaled by `mul`: converted once instead of once per reader.
    fn to_acc_bhtd(&self, mul: T::Acc) -> Vec<T::Acc> {
        let [b, t, h, d] = self.view.dims;
        let mut out = vec![T::Acc::zero(); b * h * t * d];
        if out.is_empty() {
            return out;
        }
        out.par_chunks_mut(t * d).enumerate().for_each(|(bh, o)| {
            let (bi, hi) = (bh / h, bh % h);
            for ti in 0..t {
                for (o, x) in o[ti * d..(ti + 1) * d].iter_mut().zip(self.row(bi, ti, hi)) {
                    *o = x.acc() * mul;
                }
            }
        });
        out
    }
}

#[inline(always)]
fn allowed(s: &[u32; 4], j: usize) -> bool {
    let j = j as u32;
    (s[0] <= j && j < s[1]) || (s[2] <= j && j < s[3])
}

/// Calls `$body` (an expression using only `#[inline(always)]` helpers) through a function
/// compiled with AVX2 + FMA when the CPU has them, else through a plain one.
macro_rules! with_simd {
    ($name:ident, $avx:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty, $body:expr) => {
        #[inline(always)]
        fn $name<T: Elem>($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    #[target_feature(enable = "avx2,fma")]
                    fn $avx<T: Elem>($($arg: $ty),*) -> $ret {
                        $body
                    }
                    // SAFETY: the CPU supports the features the function was compiled for.
                    return unsafe { $avx::<T>($($arg),*) };
                }
            }
            $body
        }
    };
}

/// Shared read-only state of the forward.
struct Fwd<'a, T: Elem> {
    q: &'a [T::Acc],
    k: &'a [T::Acc],
    v: &'a [T::Acc],
    spans: &'a [[u32; 4]],
    dims: [usize; 4],
    hkv: usize,
}

/// Output rows `i0..i1` of sequence `bi` (`(i1 − i0)·hq·d` values, `(i1 − i0)·hq` log-sum-exps).
#[inline(always)]
fn forward_block_body<T: Elem>(
    f: &Fwd<'_, T>,
    bi: usize,
    i0: usize,
    i1: usize,
) -> (Vec<T>, Vec<T::Acc>) {
    let [_, t, hq, d] = f.dims;
    let rep = hq / f.hkv;
    let n = i1 - i0;
    let zero = T::Acc::zero();
    let ninf = T::Acc::neg_infinity();
    let mut out = vec![T::zero(); n * hq * d];
    let mut lse = vec![ninf; n * hq];
    let mut acc = vec![zero; n * d];
    let mut m = vec![ninf; n];
    let mut l = vec![zero; n];
    let mut sc = [zero; KB];
    let spans = &f.spans[bi * t + i0..bi * t + i1];
    // keys any query of the block may see
    let lo = spans
        .iter()
        .filter(|s| s[1] > s[0])
        .map(|s| s[0])
        .min()
        .unwrap_or(0) as usize;
    let hi = spans.iter().map(|s| s[1].max(s[3])).max().unwrap_or(0) as usize;
    for h in 0..hq {
        let g = h / rep;
        let qh = &f.q[(bi * hq + h) * t * d..][..t * d];
        let kh = &f.k[(bi * f.hkv + g) * t * d..][..t * d];
        let vh = &f.v[(bi * f.hkv + g) * t * d..][..t * d];
        acc.fill(zero);
        m.fill(ninf);
        l.fill(zero);
        let mut j0 = lo;
        while j0 < hi {
            let j1 = (j0 + KB).min(hi);
            for (r, s) in spans.iter().enumerate() {
                let qi = &qh[(i0 + r) * d..(i0 + r + 1) * d];
                let mut block_max = ninf;
                for j in j0..j1 {
                    let v = if allowed(s, j) {
                        dot(qi, &kh[j * d..(j + 1) * d])
                    } else {
                        ninf
                    };
                    sc[j - j0] = v;
                    block_max = block_max.max(v);
                }
                if block_max == ninf {
                    continue;
                }
                let m_new = m[r].max(block_max);
                let correction = (m[r] - m_new).exp();
                let a = &mut acc[r * d..(r + 1) * d];
                l[r] *= correction;
                for x in a.iter_mut() {
                    *x *= correction;
                }
                for j in j0..j1 {
                    if sc[j - j0] == ninf {
                        continue;
                    }
                    let p = (sc[j - j0] - m_new).exp();
                    l[r] += p;
                    axpy(p, &vh[j * d..(j + 1) * d], a);
                }
                m[r] = m_new;
            }
            j0 = j1;
        }
        for r in 0..n {
            if l[r] > zero {
                let inv = l[r].recip();
                for (o, a) in out[(r * hq + h) * d..][..d]
                    .iter_mut()
                    .zip(&acc[r * d..(r + 1) * d])
                {
                    *o = T::from_acc(*a * inv);
                }
                lse[r * hq + h] = m[r] + l[r].ln();
            }
        }
    }
    (out, lse)
}

with_simd!(forward_block, forward_block_avx2,
    (f: &Fwd<'_, T>, bi: usize, i0: usize, i1: usize) -> (Vec<T>, Vec<T::Acc>),
    forward_block_body(f, bi, i0, i1));

/// `(start, end)` blocks of `len` items of at most `size`.
fn blocks(len: usize, size: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..len.div_ceil(size)).map(move |c| (c * size, ((c + 1) * size).min(len)))
}

/// Output `(b, t, hq, d)` and log-sum-exp `(b, t, hq)` (−∞ for a query that sees no key).
pub(super) fn forward<T: Elem>(
    q: Input<'_, T>,
    k: Input<'_, T>,
    v: Input<'_, T>,
    spans: &[[u32; 4]],
    scale: f64,
) -> (Vec<T>, Vec<T::Acc>) {
    let dims = q.view.dims;
    let [b, t, hq, d] = dims;
    let one = T::Acc::of(1.0);
    // the scale is folded into the queries once
    let (qf, kf, vf) = (
        q.to_acc_bhtd(T::Acc::of(scale)),
        k.to_acc_bhtd(one),
        v.to_acc_bhtd(one),
    );
    let f = Fwd::<T> {
        q: &qf,
        k: &kf,
        v: &vf,
        spans,
        dims,
        hkv: k.view.dims[2],
    };
    let tasks: Vec<(usize, usize, usize)> = (0..b)
        .flat_map(|bi| blocks(t, QB).map(move |(i0, i1)| (bi, i0, i1)))
        .collect();
    let parts: Vec<_> = tasks
        .into_par_iter()
        .map(|(bi, i0, i1)| forward_block(&f, bi, i0, i1))
        .collect();
    let mut out = Vec::with_capacity(b * t * hq * d);
    let mut lse = Vec::with_capacity(b * t * hq);
    for (o, l) in parts {
        out.extend(o);
        lse.extend(l);
    }
    (out, lse)
}

/// Shared read-only state of the backward; q is pre-scaled by `scale`.
struct Bwd<'a, T: Elem> {
    q: &'a [T::Acc],
    k: &'a [T::Acc],
    v: &'a [T::Acc],
    g: &'a [T::Acc],
    lse: &'a [T::Acc],
    delta: &'a [T::Acc],
    spans: &'a [[u32; 4]],
    dims: [usize; 4],
    hkv: usize,
}

/// One task's gradients: `dq` for all `t` queries of the group's heads, `(rep, t, d)` (not yet
/// scaled), and `dk`, `dv` for keys `j0..j1`, `(j1 − j0, d)`.
struct Part<A> {
    bi: usize,
    g: usize,
    j0: usize,
    dq: Vec<A>,
    dk: Vec<A>,
    dv: Vec<A>,
}

#[inline(always)]
fn backward_task_body<T: Elem>(
    w: &Bwd<'_, T>,
    bi: usize,
    g: usize,
    j0: usize,
    j1: usize,
) -> Part<T::Acc> {
    let [_, t, hq, d] = w.dims;
    let rep = hq / w.hkv;
    let zero = T::Acc::zero();
    let mut dq = vec![zero; rep * t * d];
    let mut dk = vec![zero; (j1 - j0) * d];
    let mut dv = vec![zero; (j1 - j0) * d];
    let spans = &w.spans[bi * t..(bi + 1) * t];
    let kh = &w.k[(bi * w.hkv + g) * t * d..][..t * d];
    let vh = &w.v[(bi * w.hkv + g) * t * d..][..t * d];
    for (k0, k1) in blocks(j1 - j0, BK).map(|(a, b)| (a + j0, b + j0)) {
        // queries that may see a key of this tile
        let (a, z) = (k0 as u32, k1 as u32);
        let sees = |s: &[u32; 4]| (s[0] < z && a < s[1]) || (s[2] < z && a < s[3]);
        for r in 0..rep {
            let h = g * rep + r;
            let base = (bi * hq + h) * t;
            for (i, s) in spans.iter().enumerate() {
                if !sees(s) {
                    continue;
                }
                let qi = &w.q[(base + i) * d..][..d];
                let gi = &w.g[(base + i) * d..][..d];
                let (l, di) = (w.lse[(bi * t + i) * hq + h], w.delta[base + i]);
                let dqi = &mut dq[(r * t + i) * d..][..d];
                for j in k0..k1 {
                    if !allowed(s, j) {
                        continue;
                    }
                    let (kj, vj) = (&kh[j * d..(j + 1) * d], &vh[j * d..(j + 1) * d]);
                    let p = (dot(qi, kj) - l).exp();
                    let ds = p * (dot(gi, vj) - di);
                    let jj = (j - j0) * d;
                    axpy(p, gi, &mut dv[jj..jj + d]);
                    axpy(ds, qi, &mut dk[jj..jj + d]);
                    axpy(ds, kj, dqi);
                }
            }
        }
    }
    Part {
        bi,
        g,
        j0,
        dq,
        dk,
        dv,
    }
}

with_simd!(backward_task, backward_task_avx2,
    (w: &Bwd<'_, T>, bi: usize, g: usize, j0: usize, j1: usize) -> Part<T::Acc>,
    backward_task_body(w, bi, g, j0, j1));

/// Gradients `(dq, dk, dv)`, contiguous, shaped like `q`, `k`, `v`.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward<T: Elem>(
    q: Input<'_, T>,
    k: Input<'_, T>,
    v: Input<'_, T>,
    out: Input<'_, T>,
    dout: Input<'_, T>,
    lse: &[T::Acc],
    spans: &[[u32; 4]],
    scale: f64,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let dims = q.view.dims;
    let [b, t, hq, d] = dims;
    let hkv = k.view.dims[2];
    let rep = hq / hkv;
    let zero = T::Acc::zero();
    let one = T::Acc::of(1.0);
    let sc = T::Acc::of(scale);
    let n_kv = b * t * hkv * d;
    if b * t * hq * d == 0 {
        return (
            vec![T::zero(); b * t * hq * d],
            vec![T::zero(); n_kv],
            vec![T::zero(); n_kv],
        );
    }
    let (qf, gf) = (q.to_acc_bhtd(sc), dout.to_acc_bhtd(one));
    let (kf, vf) = (k.to_acc_bhtd(one), v.to_acc_bhtd(one));
    // D = rowsum(dO ⊙ O), (b, hq, t): the softmax backward's correction term.
    let mut delta = vec![zero; b * hq * t];
    delta.par_chunks_mut(t).enumerate().for_each(|(bh, dl)| {
        let (bi, h) = (bh / hq, bh % hq);
        for (i, dl) in dl.iter_mut().enumerate() {
            let g = &gf[(bh * t + i) * d..][..d];
            *dl = g
                .iter()
                .zip(out.row(bi, i, h))
                .map(|(g, o)| *g * o.acc())
                .sum();
        }
    });
    let w = Bwd::<T> {
        q: &qf,
        k: &kf,
        v: &vf,
        g: &gf,
        lse,
        delta: &delta,
        spans,
        dims,
        hkv,
    };
    // enough key ranges per (sequence, group) to keep every thread busy
    let want = 2 * rayon::current_num_threads();
    let per = want.div_ceil(b * hkv).clamp(1, t.div_ceil(BK));
    let size = t.div_ceil(per);
    let tasks: Vec<(usize, usize, usize, usize)> = (0..b)
        .flat_map(|bi| {
            (0..hkv).flat_map(move |g| blocks(t, size).map(move |(j0, j1)| (bi, g, j0, j1)))
        })
        .collect();
    let parts: Vec<Part<T::Acc>> = tasks
        .into_par_iter()
        .map(|(bi, g, j0, j1)| backward_task(&w, bi, g, j0, j1))
        .collect();
    let mut dq_acc = vec![zero; b * t * hq * d];
    let mut dk = vec![T::zero(); n_kv];
    let mut dv = vec![T::zero(); n_kv];
    for p in parts {
        for r in 0..rep {
            let h = p.g * rep + r;
            for i in 0..t {
                let dst = &mut dq_acc[((p.bi * t + i) * hq + h) * d..][..d];
                for (o, x) in dst.iter_mut().zip(&p.dq[(r * t + i) * d..][..d]) {
                    *o += *x;
                }
            }
        }
        for (jj, (kr, vr)) in p.dk.chunks(d).zip(p.dv.chunks(d)).enumerate() {
            let at = ((p.bi * t + p.j0 + jj) * hkv + p.g) * d;
            for ((o, x), (ov, y)) in dk[at..at + d]
                .iter_mut()
                .zip(kr)
                .zip(dv[at..at + d].iter_mut().zip(vr))
            {
                *o = T::from_acc(*x);
                *ov = T::from_acc(*y);
            }
        }
    }
    // q was scaled: dK = Σ dS·(scale·q) already; dQ = scale·Σ dS·k
    let dq = dq_acc.into_iter().map(|x| T::from_acc(x * sc)).collect();
    (dq, dk, dv)
}

//! Fused multi-head attention for short sequences on the CPU (f32): scores, softmax and the
//! weighted sum of values in one pass per (sequence, head, query), reading q, k and v straight
//! out of the fused qkv projection and writing the (b, t, d) output directly.
//!
//! CLIP's texts are ~10–40 tokens and ViT-B/32 has 50: candle's batched matmul would run one
//! tiny GEMM per (sequence, head) — over a thousand per layer for a text batch — plus copies to
//! split and merge the heads, which measured ≈ a fifth of the text tower's time. For long
//! sequences (ViT-L/14-336 has 577 tokens) the GEMM path is faster; [`crate::encoder`] picks.

use candle_core::{CpuStorage, DType, Layout, Result, Shape, Tensor};

use crate::fast::exp_approx;

/// Which keys each query sees.
#[derive(Debug, Clone)]
pub(crate) enum KeyRange {
    /// Every key.
    All,
    /// Keys up to the query's own position (the text tower's causal mask).
    Causal,
    /// Keys up to `last[b]` for every query of sequence b (the pooled row of the text tower).
    UpTo(Vec<usize>),
}

struct FusedAttention {
    heads: usize,
    keys: KeyRange,
}

/// Row-major view of one operand: element (b, i, c) at `start + b·sb + i·si + c`.
#[derive(Clone, Copy)]
struct View {
    start: usize,
    sb: usize,
    si: usize,
}

fn view(l: &Layout) -> Result<View> {
    let s = l.stride();
    if l.dims().len() != 3 || s[2] != 1 {
        candle_core::bail!("fused attention: operands must be (b, t, d) with unit stride in d");
    }
    Ok(View {
        start: l.start_offset(),
        sb: s[0],
        si: s[1],
    })
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn run(
    q: &[f32],
    qv: View,
    k: &[f32],
    kv: View,
    v: &[f32],
    vv: View,
    out: &mut [f32],
    (_, tq, t, d, heads): (usize, usize, usize, usize, usize),
    keys: &KeyRange,
    batches: std::ops::Range<usize>,
) {
    let hd = d / heads;
    let mut scores = vec![0f32; t];
    for bi in batches {
        for qi in 0..tq {
            let last = match keys {
                KeyRange::All => t - 1,
                KeyRange::Causal => qi.min(t - 1),
                KeyRange::UpTo(last) => last[bi].min(t - 1),
            };
            let n = last + 1;
            let out_row = &mut out[(bi * tq + qi) * d..][..d];
            for h in 0..heads {
                let qrow = &q[qv.start + bi * qv.sb + qi * qv.si + h * hd..][..hd];
                let mut max = f32::NEG_INFINITY;
                for (j, s) in scores[..n].iter_mut().enumerate() {
                    let krow = &k[kv.start + bi * kv.sb + j * kv.si + h * hd..][..hd];
                    *s = qrow.iter().zip(krow).map(|(a, b)| a * b).sum::<f32>();
                    max = max.max(*s);
                }
                let mut sum = 0.0;
                for s in scores[..n].iter_mut() {
                    *s = exp_approx(*s - max);
                    sum += *s;
                }
                let inv = 1.0 / sum;
                let o = &mut out_row[h * hd..(h + 1) * hd];
                o.fill(0.0);
                for (j, &p) in scores[..n].iter().enumerate() {
                    let vrow = &v[vv.start + bi * vv.sb + j * vv.si + h * hd..][..hd];
                    let w = p * inv;
                    for (x, y) in o.iter_mut().zip(vrow) {
                        *x += w * y;
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
fn run_avx2(
    q: &[f32],
    qv: View,
    k: &[f32],
    kv: View,
    v: &[f32],
    vv: View,
    out: &mut [f32],
    dims: (usize, usize, usize, usize, usize),
    keys: &KeyRange,
    batches: std::ops::Range<usize>,
) {
    run(q, qv, k, kv, v, vv, out, dims, keys, batches)
}

#[allow(clippy::too_many_arguments)]
fn run_dispatch(
    q: &[f32],
    qv: View,
    k: &[f32],
    kv: View,
    v: &[f32],
    vv: View,
    out: &mut [f32],
    dims: (usize, usize, usize, usize, usize),
    keys: &KeyRange,
    batches: std::ops::Range<usize>,
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { run_avx2(q, qv, k, kv, v, vv, out, dims, keys, batches) };
    }
    run(q, qv, k, kv, v, vv, out, dims, keys, batches)
}

impl candle_core::CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) = (s1, s2, s3) else {
            candle_core::bail!("fused attention: f32 only");
        };
        let (qv, kv, vv) = (view(l1)?, view(l2)?, view(l3)?);
        let &[b, tq, d] = l1.dims() else {
            unreachable!("checked by view")
        };
        let t = l2.dims()[1];
        if l2.dims() != [b, t, d] || l3.dims() != [b, t, d] || t == 0 || d % self.heads != 0 {
            candle_core::bail!(
                "fused attention: q {:?}, k {:?}, v {:?}",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let mut out = vec![0f32; b * tq * d];
        let dims = (b, tq, t, d, self.heads);
        // Split the sequences over the threads candle uses; no threads on wasm32.
        #[cfg(not(target_arch = "wasm32"))]
        {
            let threads = candle_core::utils::get_num_threads().min(b).max(1);
            if threads > 1 && b * tq * t * d > 1 << 16 {
                let per = b.div_ceil(threads);
                std::thread::scope(|scope| {
                    for (i, chunk) in out.chunks_mut(per * tq * d).enumerate() {
                        let keys = &self.keys;
                        let range = i * per..(i * per + per).min(b);
                        scope.spawn(move || {
                            run_chunk(q, qv, k, kv, v, vv, chunk, dims, keys, range);
                        });
                    }
                });
                return Ok((CpuStorage::F32(out), Shape::from((b, tq, d))));
            }
        }
        run_dispatch(q, qv, k, kv, v, vv, &mut out, dims, &self.keys, 0..b);
        Ok((CpuStorage::F32(out), Shape::from((b, tq, d))))
    }
}

/// `run_dispatch` for the sequences `range`, writing into `out` that holds just those.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::too_many_arguments)]
fn run_chunk(
    q: &[f32],
    qv: View,
    k: &[f32],
    kv: View,
    v: &[f32],
    vv: View,
    out: &mut [f32],
    (_, tq, t, d, heads): (usize, usize, usize, usize, usize),
    keys: &KeyRange,
    range: std::ops::Range<usize>,
) {
    // Shift the views so that the chunk's first sequence is sequence 0 of `out`.
    let first = range.start;
    let shift = |x: View| View {
        start: x.start + first * x.sb,
        ..x
    };
    let keys = match keys {
        KeyRange::UpTo(last) => KeyRange::UpTo(last[range.clone()].to_vec()),
        other => other.clone(),
    };
    let n = range.len();
    run_dispatch(
        q,
        shift(qv),
        k,
        shift(kv),
        v,
        shift(vv),
        out,
        (n, tq, t, d, heads),
        &keys,
        0..n,
    );
}

/// Whether the fused kernel applies: CPU, f32, keys no longer than `max_keys`.
pub(crate) fn usable(x: &Tensor, keys: usize, max_keys: usize) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && keys <= max_keys
}

/// Attention of q (b, tq, d) (already scaled) over k, v (b, t, d), each a view with unit stride
/// in d (columns of the fused qkv projection), `heads` heads: (b, tq, d).
pub(crate) fn fused_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    keys: KeyRange,
) -> Result<Tensor> {
    q.apply_op3_no_bwd(k, v, &FusedAttention { heads, keys })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{D, Device};

    /// The plain candle computation the fused kernel replaces.
    fn reference(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        heads: usize,
        mask: Option<&Tensor>,
    ) -> Tensor {
        let split = |x: &Tensor| {
            let (b, t, d) = x.dims3().unwrap();
            x.reshape((b, t, heads, d / heads))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (b, tq, d) = q.dims3().unwrap();
        let s = split(q).matmul(&split(k).t().unwrap()).unwrap();
        let s = match mask {
            Some(m) => s.broadcast_add(m).unwrap(),
            None => s,
        };
        let p = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
        p.matmul(&split(v))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, tq, d))
            .unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn equals_unfused_attention_on_qkv_views() {
        let dev = Device::Cpu;
        let (b, t, d, heads) = (5, 7, 24, 3);
        let qkv = Tensor::randn(0f32, 1.0, (b, t, 3 * d), &dev).unwrap();
        let (q, k, v) = (
            qkv.narrow(2, 0, d).unwrap(),
            qkv.narrow(2, d, d).unwrap(),
            qkv.narrow(2, 2 * d, d).unwrap(),
        );
        let got = fused_attention(&q, &k, &v, heads, KeyRange::All).unwrap();
        assert!(max_diff(&got, &reference(&q, &k, &v, heads, None)) < 1e-5);

        let causal: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let causal = Tensor::from_vec(causal, (t, t), &dev).unwrap();
        let got = fused_attention(&q, &k, &v, heads, KeyRange::Causal).unwrap();
        assert!(max_diff(&got, &reference(&q, &k, &v, heads, Some(&causal))) < 1e-5);

        // One query row per sequence, keys up to a per-sequence limit.
        let last = vec![0, 6, 3, 2, 5];
        let mask: Vec<f32> = last
            .iter()
            .flat_map(|&l| (0..t).map(move |j| if j > l { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (b, 1, 1, t), &dev).unwrap();
        let q1 = Tensor::randn(0f32, 1.0, (b, 1, d), &dev).unwrap();
        let got = fused_attention(&q1, &k, &v, heads, KeyRange::UpTo(last)).unwrap();
        assert!(max_diff(&got, &reference(&q1, &k, &v, heads, Some(&mask))) < 1e-5);
    }

    #[test]
    fn large_batches_split_over_threads_alike() {
        // Big enough for the threaded path (when candle has more than one thread); the
        // per-sequence key limits must follow their sequences into the threads' chunks.
        let dev = Device::Cpu;
        let (b, t, d, heads) = (41, 40, 48, 4);
        let kv = Tensor::randn(0f32, 1.0, (b, t, 2 * d), &dev).unwrap();
        let (k, v) = (kv.narrow(2, 0, d).unwrap(), kv.narrow(2, d, d).unwrap());
        let q1 = Tensor::randn(0f32, 1.0, (b, 1, d), &dev).unwrap();
        let last: Vec<usize> = (0..b).map(|i| (i * 7) % t).collect();
        let mask: Vec<f32> = last
            .iter()
            .flat_map(|&l| (0..t).map(move |j| if j > l { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (b, 1, 1, t), &dev).unwrap();
        let got = fused_attention(&q1, &k, &v, heads, KeyRange::UpTo(last)).unwrap();
        assert!(max_diff(&got, &reference(&q1, &k, &v, heads, Some(&mask))) < 1e-5);
    }
}

use super::*;
use crate::composed;
use crate::testing::{Rng, finite_difference_error, grads, objective, rel_err};
use candle_core::{DType, Var};

/// The shared-prefix layout of dama-llava for rows `(prefix, chosen, rejected)` lengths,
/// right-padded to `t`: tails see the prefix and causally themselves, never each other.
fn shared_prefix_mask(rows: &[(usize, usize, usize)], t: usize) -> AttnMask {
    AttnMask::from_fn(rows.len(), t, |r, q, k| {
        let (p, c, rj) = rows[r];
        let branch = |i: usize| {
            if i < p {
                Some((0, i))
            } else if i < p + c {
                Some((1, i))
            } else if i < p + c + rj {
                Some((2, i - c))
            } else {
                None
            }
        };
        match (branch(q), branch(k)) {
            (Some((bq, pq)), Some((bk, pk))) => pk <= pq && (bk == 0 || bk == bq),
            _ => false,
        }
    })
    .unwrap()
}

struct Case {
    q: Var,
    k: Var,
    v: Var,
    /// Cotangent of the output, zero on queries that see no key (padding), whose outputs
    /// differ by design (zero here, the mean value in the composition) and are never read.
    cot: Tensor,
    mask: AttnMask,
    scale: f64,
}

/// Random q, k, v of shape `(b, t, heads_q | heads_kv, d)` given as `[b, t, hq, hkv, d]`.
fn case(dims: [usize; 5], mask: AttnMask, dtype: DType, seed: u64) -> Case {
    let [b, t, hq, hkv, d] = dims;
    let mut rng = Rng::new(seed);
    let q = rng.var(&[b, t, hq, d], 1.0, dtype).unwrap();
    let k = rng.var(&[b, t, hkv, d], 1.0, dtype).unwrap();
    let v = rng.var(&[b, t, hkv, d], 1.0, dtype).unwrap();
    let mut c = crate::testing::values(&rng.randn(&[b, t, hq, d], 1.0, DType::F64).unwrap());
    for (row, s) in mask.spans().iter().enumerate() {
        if s[1] == s[0] {
            c[row * hq * d..(row + 1) * hq * d].fill(0.0);
        }
    }
    let cot = Tensor::from_vec(c, (b, t, hq, d), &Device::Cpu).unwrap();
    Case {
        q,
        k,
        v,
        cot,
        mask,
        scale: 1.0 / (d as f64).sqrt(),
    }
}

fn dense(c: &Case, dtype: DType) -> Tensor {
    let (b, t) = (c.mask.rows(), c.mask.seq_len());
    Tensor::from_vec(c.mask.to_additive(-1e30), (b, 1, t, t), &Device::Cpu)
        .unwrap()
        .to_dtype(composed::compute_dtype(dtype))
        .unwrap()
}

/// Output on the rows that see keys, and the three gradients, against the composition.
fn compare(c: &Case, tol_out: f64, tol_grad: f64) {
    let (q, k, v) = (c.q.as_tensor(), c.k.as_tensor(), c.v.as_tensor());
    let y = attention(q, k, v, &c.mask, c.scale).unwrap();
    let want = composed::attention(q, k, v, &dense(c, q.dtype()), c.scale).unwrap();
    let live = c.cot.ne(0.0).unwrap().to_dtype(y.dtype()).unwrap();
    let e = rel_err(&(&y * &live).unwrap(), &(&want * &live).unwrap());
    assert!(e < tol_out, "output: {e:e}");
    let g = grads(&y, &c.cot, &[&c.q, &c.k, &c.v]).unwrap();
    let gw = grads(&want, &c.cot, &[&c.q, &c.k, &c.v]).unwrap();
    for (name, (a, b)) in ["dq", "dk", "dv"].iter().zip(g.iter().zip(&gw)) {
        let e = rel_err(a, b);
        assert!(e < tol_grad, "{name}: {e:e}");
    }
}

#[test]
fn causal_with_padding_gqa_and_odd_sizes_matches_the_composition_in_f32() {
    let mask = AttnMask::causal(13, &[13, 9, 1]).unwrap();
    compare(&case([3, 13, 4, 2, 7], mask, DType::F32, 1), 2e-6, 2e-5);
    // longer than one key block, so the online rescaling runs; multi-head without GQA
    let mask = AttnMask::causal(150, &[150, 131]).unwrap();
    compare(&case([2, 150, 2, 2, 16], mask, DType::F32, 2), 2e-6, 2e-5);
}

#[test]
fn shared_prefix_mask_matches_the_composition_in_f32() {
    let mask = shared_prefix_mask(&[(5, 4, 2), (3, 1, 6)], 11);
    compare(&case([2, 11, 6, 3, 9], mask, DType::F32, 3), 2e-6, 2e-5);
    let mask = shared_prefix_mask(&[(70, 41, 30)], 150);
    compare(&case([1, 150, 2, 1, 8], mask, DType::F32, 4), 2e-6, 2e-5);
}

#[test]
fn padding_queries_get_zero_output_and_padding_keys_zero_gradient() {
    let c = case(
        [2, 6, 2, 1, 4],
        AttnMask::causal(6, &[6, 3]).unwrap(),
        DType::F32,
        5,
    );
    let y = attention(
        c.q.as_tensor(),
        c.k.as_tensor(),
        c.v.as_tensor(),
        &c.mask,
        c.scale,
    )
    .unwrap();
    let pad = y.narrow(0, 1, 1).unwrap().narrow(1, 3, 3).unwrap();
    assert_eq!(
        pad.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
    // a cotangent on every row, padding included: still nothing reaches the padding keys
    let all = Tensor::ones((2, 6, 2, 4), DType::F64, &Device::Cpu).unwrap();
    let g = grads(&y, &all, &[&c.k, &c.v]).unwrap();
    for gr in &g {
        let pad = gr.narrow(0, 1, 1).unwrap().narrow(1, 3, 3).unwrap();
        assert_eq!(
            pad.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
    }
}

/// bf16: the fused op keeps scores and probabilities in f32 (SDPA / flash-attention numerics),
/// where the eager composition rounds the scores and probabilities to bf16. Both are compared
/// with the f32 composition on the same inputs: the fused op must be at least as close.
#[test]
fn bf16_is_at_least_as_close_to_f32_as_the_eager_bf16_composition() {
    let mask = shared_prefix_mask(&[(20, 9, 7), (12, 10, 0)], 36);
    let c = case([2, 36, 4, 2, 32], mask, DType::BF16, 6);
    let up = |v: &Var| Var::from_tensor(&v.to_dtype(DType::F32).unwrap()).unwrap();
    let (q32, k32, v32) = (up(&c.q), up(&c.k), up(&c.v));
    let want = composed::attention(&q32, &k32, &v32, &dense(&c, DType::F32), c.scale).unwrap();
    let y = attention(&c.q, &c.k, &c.v, &c.mask, c.scale).unwrap();
    let eager = composed::attention(&c.q, &c.k, &c.v, &dense(&c, DType::BF16), c.scale).unwrap();
    let live = c.cot.ne(0.0).unwrap().to_dtype(DType::F32).unwrap();
    let err = |t: &Tensor| {
        rel_err(
            &(t.to_dtype(DType::F32).unwrap() * &live).unwrap(),
            &(&want * &live).unwrap(),
        )
    };
    let (fused, composed) = (err(&y), err(&eager));
    assert!(
        fused < 8e-3 && fused <= composed * 1.01,
        "fused {fused:e}, eager bf16 {composed:e}"
    );
    let g = grads(&y, &c.cot, &[&c.q, &c.k, &c.v]).unwrap();
    let g32 = grads(&want, &c.cot, &[&q32, &k32, &v32]).unwrap();
    for (a, b) in g.iter().zip(&g32) {
        assert_eq!(a.dtype(), DType::BF16);
        assert!(rel_err(a, b) < 2e-2, "{:e}", rel_err(a, b));
    }
}

#[test]
fn gradients_equal_central_finite_differences_in_f64() {
    let mask = shared_prefix_mask(&[(2, 2, 2)], 7);
    let c = case([1, 7, 2, 1, 3], mask, DType::F64, 7);
    let run = || attention(&c.q, &c.k, &c.v, &c.mask, c.scale);
    let loss = || objective(&run()?, &c.cot)?.to_scalar::<f64>();
    let g = grads(&run().unwrap(), &c.cot, &[&c.q, &c.k, &c.v]).unwrap();
    for (var, gr) in [(&c.q, &g[0]), (&c.k, &g[1]), (&c.v, &g[2])] {
        let e = finite_difference_error(var, gr, 8, 1e-6, 1e-2, &loss).unwrap();
        assert!(e < 1e-6, "{e:e}");
    }
}

#[test]
fn transposed_inputs_and_frozen_values_work_and_bad_shapes_are_errors() {
    let c = case(
        [2, 5, 2, 2, 4],
        AttnMask::causal(5, &[5, 4]).unwrap(),
        DType::F32,
        8,
    );
    // (b, h, t, d) storage viewed as (b, t, h, d)
    let qt =
        c.q.as_tensor()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .transpose(1, 2)
            .unwrap();
    assert!(!qt.is_contiguous());
    let vf = c.v.as_tensor().detach();
    let y1 = attention(&qt, &c.k, &vf, &c.mask, c.scale).unwrap();
    let y2 = attention(&c.q, &c.k, &c.v, &c.mask, c.scale).unwrap();
    assert_eq!(rel_err(&y1, &y2), 0.0);
    let g = objective(&y1, &c.cot).unwrap().backward().unwrap();
    assert!(g.get(&vf).is_none() && g.get(c.k.as_tensor()).is_some());
    let bad_heads = Tensor::zeros((2, 5, 3, 4), DType::F32, &Device::Cpu).unwrap();
    let e = attention(&c.q, &bad_heads, &bad_heads, &c.mask, 1.0).unwrap_err();
    assert!(e.to_string().contains("not a multiple"), "{e}");
    let e = attention(&c.q, &c.k, &c.v, &AttnMask::causal(5, &[5]).unwrap(), 1.0).unwrap_err();
    assert!(e.to_string().contains("mask is for 1 rows"), "{e}");
}

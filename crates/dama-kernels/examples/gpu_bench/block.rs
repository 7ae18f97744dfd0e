//! The block probe of `../shared/bench/torch_block.py` in candle: one LLaMA-1B-shaped decoder
//! block (b=8, t=736, d=2048, 16 heads, SwiGLU 5632, RMSNorm, RoPE, causal attention) and an
//! 80-token log-prob head over a 32064 vocabulary, bf16, forward + backward; once with the
//! fused ops, once with the compositions they replace. Same FLOP count as the torch script.

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor, Var};
use dama_kernels::{AttnMask, reference};
use serde_json::json;

use crate::ops::{rope_tables, var};

/// The probe's shape; `small` is a CPU-sized stand-in that exercises the same code.
#[derive(Clone, Copy)]
pub struct Dims {
    b: usize,
    t: usize,
    d: usize,
    h: usize,
    ff: usize,
    v: usize,
    scored: usize,
}

impl Dims {
    pub const PROBE: Dims = Dims {
        b: 8,
        t: 736,
        d: 2048,
        h: 16,
        ff: 5632,
        v: 32064,
        scored: 80,
    };
    pub const SMALL: Dims = Dims {
        b: 2,
        t: 64,
        d: 256,
        h: 4,
        ff: 512,
        v: 1000,
        scored: 16,
    };
}

struct Weights {
    wq: Var,
    wk: Var,
    wv: Var,
    wo: Var,
    w1: Var,
    w3: Var,
    w2: Var,
    norm: Var,
    emb: Var,
}

struct Inputs {
    ids: Tensor,
    cos: Tensor,
    sin: Tensor,
    mask: AttnMask,
    dense: Tensor,
}

fn forward(z: Dims, w: &Weights, fused: bool, inp: &Inputs) -> Result<Tensor> {
    let Dims {
        b, t, d, h, scored, ..
    } = z;
    let hd = d / h;
    let (ids, cos, sin, mask, dense) = (&inp.ids, &inp.cos, &inp.sin, &inp.mask, &inp.dense);
    let rms = |x: &Tensor| {
        if fused {
            dama_kernels::rms_norm(x, &w.norm, 1e-5)
        } else {
            reference::rms_norm(x, &w.norm, 1e-5)
        }
    };
    let heads = |x: Tensor| x.reshape((b, t, h, hd));
    let flat = ids.flatten_all()?;
    let x = if fused {
        dama_kernels::embedding(&flat, &w.emb)? // (b·t, d)
    } else {
        w.emb.as_tensor().index_select(&flat, 0)?
    };
    let xn = rms(&x)?;
    let q = heads(xn.matmul(&w.wq)?)?;
    let k = heads(xn.matmul(&w.wk)?)?;
    let v = heads(xn.matmul(&w.wv)?)?;
    let scale = 1.0 / (hd as f64).sqrt();
    let y = if fused {
        let q = dama_kernels::rope(&q, cos, sin)?;
        let k = dama_kernels::rope(&k, cos, sin)?;
        dama_kernels::attention(&q, &k, &v, mask, scale)?
    } else {
        let q = reference::rope(&q, cos, sin)?;
        let k = reference::rope(&k, cos, sin)?;
        reference::attention(&q, &k, &v, dense, scale)?
    };
    let x = (x + y.reshape((b * t, d))?.matmul(&w.wo)?)?;
    let xn = rms(&x)?;
    let (g, u) = (xn.matmul(&w.w1)?, xn.matmul(&w.w3)?);
    let m = if fused {
        dama_kernels::swiglu(&g, &u)?
    } else {
        reference::swiglu(&g, &u)?
    };
    let x = (x + m.matmul(&w.w2)?)?;
    let hs = x
        .reshape((b, t, d))?
        .narrow(1, t - scored, scored)?
        .reshape((b * scored, d))?;
    let tgt = ids.narrow(1, t - scored, scored)?.flatten_all()?;
    let lp = if fused {
        dama_kernels::token_logprobs(&hs, &w.emb, &tgt, dama_kernels::DEFAULT_VOCAB_CHUNK)?
    } else {
        reference::token_logprobs(&hs, &w.emb, &tgt)?
    };
    lp.sum_all()?.neg()
}

pub fn run(dev: &Device, z: Dims, iters: usize) -> Result<()> {
    let Dims {
        b, t, d, h, ff, v, ..
    } = z;
    let hd = d / h;
    let dt = DType::BF16;
    let w = Weights {
        wq: var(1, &[d, d], 0.02, dt, dev)?,
        wk: var(2, &[d, d], 0.02, dt, dev)?,
        wv: var(3, &[d, d], 0.02, dt, dev)?,
        wo: var(4, &[d, d], 0.02, dt, dev)?,
        w1: var(5, &[d, ff], 0.02, dt, dev)?,
        w3: var(6, &[d, ff], 0.02, dt, dev)?,
        w2: var(7, &[ff, d], 0.02, dt, dev)?,
        norm: Var::from_tensor(&Tensor::ones(d, dt, dev)?)?,
        emb: var(8, &[v, d], 0.02, dt, dev)?,
    };
    // torch_block.py's ids: (i·7919) mod 32000 (mod the vocabulary for the small stand-in)
    let ids: Vec<u32> = (0..(b * t) as u32)
        .map(|i| i * 7919 % 32000 % v as u32)
        .collect();
    let ids = Tensor::from_vec(ids, (b, t), dev)?;
    let (cos, sin) = rope_tables(1, t, hd, dt, dev)?;
    let (cos, sin) = (cos.squeeze(0)?, sin.squeeze(0)?);
    let mask = AttnMask::causal(t, &vec![t; b])?;
    let dense =
        Tensor::from_vec(mask.to_additive(-1e30), (b, 1, t, t), &Device::Cpu)?.to_device(dev)?;
    let inp = Inputs {
        ids,
        cos,
        sin,
        mask,
        dense,
    };
    let flops =
        6.0 * (4 * d * d + 3 * d * ff) as f64 * (b * t) as f64 + 12.0 * (b * h * t * t * hd) as f64;
    for fused in [true, false] {
        let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
        for i in 0..iters + 3 {
            dev.synchronize()?;
            let t0 = Instant::now();
            let loss = forward(z, &w, fused, &inp)?;
            dev.synchronize()?;
            let t1 = Instant::now();
            let grads = loss.backward()?;
            dev.synchronize()?;
            let t2 = Instant::now();
            let reached = [
                &w.wq, &w.wk, &w.wv, &w.wo, &w.w1, &w.w2, &w.w3, &w.norm, &w.emb,
            ]
            .iter()
            .filter(|v| grads.get(v.as_tensor()).is_some())
            .count();
            if reached != 9 {
                candle_core::bail!("only {reached} of 9 weights got a gradient");
            }
            if i >= 3 {
                fwd.push((t1 - t0).as_secs_f64() * 1e3);
                bwd.push((t2 - t1).as_secs_f64() * 1e3);
            }
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (f, bw) = (median(fwd), median(bwd));
        println!(
            "{}",
            json!({"probe": if fused { "dama_block_fused_bf16" } else { "dama_block_composed_bf16" },
                   "fwd_ms": f, "bwd_ms": bw, "step_ms": f + bw,
                   "tflops": flops / ((f + bw) / 1e3) / 1e12})
        );
    }
    Ok(())
}

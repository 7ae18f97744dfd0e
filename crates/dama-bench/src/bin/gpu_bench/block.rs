//! The block probe of `scripts/bench/torch_block.py` in candle: one LLaMA-1B-shaped decoder
//! block (b=8, t=736, d=2048, 16 heads, SwiGLU 5632, RMSNorm, RoPE, causal attention) and an
//! 80-token log-prob head over a 32064 vocabulary, bf16, forward + backward; once with the
//! fused ops, once with the compositions they replace, then through `dama_llava`'s decoder
//! layer (weights `(out, in)` as in transformers) with its hand-written backward and with
//! candle's autograd. Same FLOP count as the torch script.

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor, Var};
use dama_kernels::{AttnMask, composed};
use dama_llava::Grad;
use dama_llava::config::TextConfig;
use dama_llava::decoder::{DecoderLayer, LayerBackward, LayerRun, layer_forward};
use dama_llava::linear::Linear;
use dama_llava::llama::AttentionInputs;
use serde_json::json;

use dama_bench::ops::{rope_tables, var};

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

/// The probe's block as a `dama_llava` decoder layer: the same weights, transposed to
/// `(out, in)`; the one norm weight serves both norms, as in the probe.
struct Layer {
    layer: DecoderLayer,
    cfg: TextConfig,
    att: AttentionInputs,
}

/// How the probe's block is computed.
#[derive(Clone, Copy)]
enum Kind {
    /// The fused ops, composed with candle's autograd.
    Fused,
    /// The compositions of differentiable candle ops the fused ops replace.
    Composed,
    /// `dama_llava`'s decoder layer with the given backward.
    Layer(LayerBackward),
}

impl Kind {
    fn probe(self) -> &'static str {
        match self {
            Kind::Fused => "dama_block_fused_bf16",
            Kind::Composed => "dama_block_composed_bf16",
            Kind::Layer(LayerBackward::Manual) => "dama_block_layer_manual_bf16",
            Kind::Layer(LayerBackward::Autograd) => "dama_block_layer_autograd_bf16",
        }
    }
}

struct Inputs {
    ids: Tensor,
    cos: Tensor,
    sin: Tensor,
    mask: AttnMask,
    dense: Tensor,
}

fn forward(z: Dims, w: &Weights, kind: Kind, inp: &Inputs, layer: &Layer) -> Result<Tensor> {
    let Dims {
        b, t, d, h, scored, ..
    } = z;
    let fused = !matches!(kind, Kind::Composed);
    let hd = d / h;
    let (ids, cos, sin, mask, dense) = (&inp.ids, &inp.cos, &inp.sin, &inp.mask, &inp.dense);
    let rms = |x: &Tensor| {
        if fused {
            dama_kernels::rms_norm(x, &w.norm, 1e-5)
        } else {
            composed::rms_norm(x, &w.norm, 1e-5)
        }
    };
    let heads = |x: Tensor| x.reshape((b, t, h, hd));
    let flat = ids.flatten_all()?;
    let x = if fused {
        dama_kernels::embedding(&flat, &w.emb)? // (b·t, d)
    } else {
        w.emb.as_tensor().index_select(&flat, 0)?
    };
    let x = if let Kind::Layer(mode) = kind {
        layer_forward(
            &layer.cfg,
            &layer.layer,
            &x,
            &layer.att,
            LayerRun {
                grad: Grad::Track,
                backward: mode,
                recompute: false,
            },
        )?
    } else {
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
            let q = composed::rope(&q, cos, sin)?;
            let k = composed::rope(&k, cos, sin)?;
            composed::attention(&q, &k, &v, dense, scale)?
        };
        let x = (x + y.reshape((b * t, d))?.matmul(&w.wo)?)?;
        let xn = rms(&x)?;
        let (g, u) = (xn.matmul(&w.w1)?, xn.matmul(&w.w3)?);
        let m = if fused {
            dama_kernels::swiglu(&g, &u)?
        } else {
            composed::swiglu(&g, &u)?
        };
        (x + m.matmul(&w.w2)?)?
    };
    let hs = x
        .reshape((b, t, d))?
        .narrow(1, t - scored, scored)?
        .reshape((b * scored, d))?;
    let tgt = ids.narrow(1, t - scored, scored)?.flatten_all()?;
    let lp = if fused {
        dama_kernels::token_logprobs(&hs, &w.emb, &tgt, dama_kernels::DEFAULT_VOCAB_CHUNK)?
    } else {
        composed::token_logprobs(&hs, &w.emb, &tgt)?
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
    let layer = probe_layer(z, &w, &inp)?;
    let flops =
        6.0 * (4 * d * d + 3 * d * ff) as f64 * (b * t) as f64 + 12.0 * (b * h * t * t * hd) as f64;
    let kinds = [
        Kind::Fused,
        Kind::Composed,
        Kind::Layer(LayerBackward::Manual),
        Kind::Layer(LayerBackward::Autograd),
    ];
    for kind in kinds {
        let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
        for i in 0..iters + 3 {
            dev.synchronize()?;
            let t0 = Instant::now();
            let loss = forward(z, &w, kind, &inp, &layer)?;
            dev.synchronize()?;
            let t1 = Instant::now();
            let grads = loss.backward()?;
            dev.synchronize()?;
            let t2 = Instant::now();
            let weights: Vec<&Tensor> = match kind {
                Kind::Layer(_) => {
                    let mut v: Vec<&Tensor> = layer
                        .layer
                        .linears()
                        .into_iter()
                        .map(|l| &l.weight)
                        .collect();
                    v.extend([&layer.layer.input_norm, w.emb.as_tensor()]);
                    v
                }
                _ => [
                    &w.wq, &w.wk, &w.wv, &w.wo, &w.w1, &w.w2, &w.w3, &w.norm, &w.emb,
                ]
                .iter()
                .map(|v| v.as_tensor())
                .collect(),
            };
            let reached = weights.iter().filter(|v| grads.get(v).is_some()).count();
            if reached != 9 {
                candle_core::bail!(
                    "{}: only {reached} of 9 weights got a gradient",
                    kind.probe()
                );
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
            json!({"probe": kind.probe(),
                   "fwd_ms": f, "bwd_ms": bw, "step_ms": f + bw,
                   "tflops": flops / ((f + bw) / 1e3) / 1e12})
        );
    }
    Ok(())
}

/// The probe's weights as a `dama_llava` decoder layer, and its attention inputs.
fn probe_layer(z: Dims, w: &Weights, inp: &Inputs) -> Result<Layer> {
    let Dims { b, t, d, h, ff, .. } = z;
    let hd = d / h;
    let linear = |name: &str, v: &Var| -> Result<Linear> {
        Ok(Linear {
            name: name.into(),
            weight: Var::from_tensor(&v.as_tensor().t()?.contiguous()?)?
                .as_tensor()
                .clone(),
            bias: None,
            lora: None,
        })
    };
    let layer = DecoderLayer {
        input_norm: w.norm.as_tensor().clone(),
        q: linear("q", &w.wq)?,
        k: linear("k", &w.wk)?,
        v: linear("v", &w.wv)?,
        o: linear("o", &w.wo)?,
        post_norm: w.norm.as_tensor().clone(),
        gate: linear("gate", &w.w1)?,
        up: linear("up", &w.w3)?,
        down: linear("down", &w.w2)?,
    };
    let cfg = TextConfig {
        vocab_size: z.v,
        hidden_size: d,
        intermediate_size: ff,
        num_hidden_layers: 1,
        num_attention_heads: h,
        num_key_value_heads: h,
        head_dim: hd,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_linear_factor: 1.0,
        max_position_embeddings: t,
        attention_bias: false,
        mlp_bias: false,
    };
    let table = |x: &Tensor| {
        x.unsqueeze(0)?
            .unsqueeze(0)?
            .broadcast_as((b, 1, t, hd))?
            .contiguous()
    };
    let att = AttentionInputs {
        rows: b,
        seq_len: t,
        cos: table(&inp.cos)?,
        sin: table(&inp.sin)?,
        mask: inp.mask.clone(),
    };
    Ok(Layer { layer, cfg, att })
}

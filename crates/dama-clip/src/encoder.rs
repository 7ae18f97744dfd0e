//! The transformer encoder both CLIP towers share: pre-LayerNorm blocks of multi-head attention
//! and an MLP, with the parameter names of transformers' `CLIPEncoderLayer`
//! (`self_attn.{q,k,v,out}_proj`, `layer_norm1`, `mlp.fc{1,2}`, `layer_norm2`).
//!
//! Inference only, so it is built for speed: candle's fused forward-only `layer_norm`; q, k and
//! v as one matmul; the CPU in-place paths of [`crate::fast`] for the bias and residual adds,
//! the softmax and quick_gelu. Besides the full layer there is [`EncoderLayer::forward_rows`],
//! which computes the layer's output at one row per sequence only (the class token of an image,
//! the end-of-text token of a sentence). CLIP pools exactly one row after the last layer, so the
//! last layer needs every row's keys and values but the queries, attention output and MLP of
//! that row alone: for ViT-B/32 this skips 49 of 50 rows of the last layer's heaviest parts.

use candle_core::{D, Module, Result, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use crate::attention::{self, KeyRange};
use crate::config::Activation;
use crate::fast;

/// Which attention path to take. The fused CPU kernel ([`crate::attention`]) wins on short
/// sequences and on masked ones (it skips the masked half of causal attention): every CLIP
/// text. On ViT-B/32's 50 unmasked tokens the batched matmuls are ≈10% faster (measured), and
/// more so on longer sequences.
fn use_fused(x: &Tensor, keys: usize, masked: bool) -> bool {
    attention::usable(x, keys, if masked { 80 } else { 32 })
}

/// An attention mask in the two forms the two attention paths take: added to the scores
/// (`tensor`, broadcastable to (b, heads, tq, t)) and as key ranges for the fused kernel.
pub(crate) struct Mask {
    pub tensor: Tensor,
    pub keys: KeyRange,
}

/// Shapes shared by the text and vision encoders.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EncoderShape {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_heads: usize,
    pub num_layers: usize,
    pub layer_norm_eps: f64,
    pub act: Activation,
}

/// LayerNorm: candle's fused kernel, or its composed ops for f64, which the kernel lacks (f64
/// is for checking the fast paths against plain ops); on CUDA with the `kernels` feature,
/// dama-kernels' forward-only kernel.
#[derive(Clone)]
pub(crate) struct Norm(LayerNorm);

impl Norm {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "kernels")]
        if x.device().is_cuda() {
            let bias = self.0.bias().expect("CLIP LayerNorms have biases");
            return dama_kernels::layer_norm(x, self.0.weight(), bias, self.0.eps());
        }
        if x.dtype() == candle_core::DType::F64 {
            let bias = self.0.bias().expect("CLIP LayerNorms have biases");
            candle_nn::ops::layer_norm_slow(x, self.0.weight(), bias, self.0.eps() as f32)
        } else {
            self.0.forward(x)
        }
    }
}

pub(crate) fn layer_norm(size: usize, eps: f64, vb: VarBuilder) -> Result<Norm> {
    let weight = vb.get(size, "weight")?;
    let bias = vb.get(size, "bias")?;
    Ok(Norm(LayerNorm::new(weight, bias, eps)))
}

/// A linear layer with bias whose forward adds the bias in place into the fresh matmul output
/// (one pass and one allocation less than candle-nn's `Linear` on the CPU); inputs of any rank
/// are flattened to one matmul.
#[derive(Clone)]
pub(crate) struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn new(weight: Tensor, bias: Tensor) -> Self {
        Self { weight, bias }
    }

    fn weight(&self) -> &Tensor {
        &self.weight
    }

    fn bias(&self) -> &Tensor {
        &self.bias
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let k = *dims.last().expect("rank ≥ 1");
        let rows = x.elem_count() / k.max(1);
        let y = x.reshape((rows, k))?.matmul(&self.weight.t()?)?;
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank ≥ 1") = self.weight.dim(0)?;
        fast::add_bias_owned(y, &self.bias)?.reshape(out_dims)
    }
}

fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get((out_dim, in_dim), "weight")?;
    let bias = vb.get(out_dim, "bias")?;
    Ok(Linear::new(weight, bias))
}

pub(crate) fn activation(act: Activation, xs: &Tensor) -> Result<Tensor> {
    match act {
        Activation::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
        Activation::Gelu => xs.gelu_erf(),
        Activation::GeluNew | Activation::GeluPytorchTanh => xs.gelu(),
        Activation::Relu => xs.relu(),
        Activation::Silu => xs.silu(),
    }
}

/// Multi-head self-attention. q, k and v are one matmul: their weights are concatenated at
/// load time into `qkv` (3d, d); `q` and `kv` are views of its rows, for
/// [`EncoderLayer::forward_rows`], where queries and keys come from different rows.
pub(crate) struct Attention {
    qkv: Linear,
    q: Linear,
    kv: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(shape: &EncoderShape, vb: VarBuilder) -> Result<Self> {
        let d = shape.hidden_size;
        let head_dim = d / shape.num_heads;
        let (q, k, v) = (
            linear(d, d, vb.pp("q_proj"))?,
            linear(d, d, vb.pp("k_proj"))?,
            linear(d, d, vb.pp("v_proj"))?,
        );
        // The 1/√head_dim score scale is folded into the query projection once, instead of
        // scaling every (b, heads, t, t) score tensor. For head_dim 64 (every real CLIP) the
        // scale is a power of two and the result is bit-identical.
        let scale = (head_dim as f64).powf(-0.5);
        let w = Tensor::cat(&[&(q.weight() * scale)?, k.weight(), v.weight()], 0)?;
        let b = Tensor::cat(&[&(q.bias() * scale)?, k.bias(), v.bias()], 0)?;
        let rows = |start: usize, len: usize| -> Result<Linear> {
            Ok(Linear::new(
                w.narrow(0, start, len)?,
                b.narrow(0, start, len)?,
            ))
        };
        Ok(Self {
            q: rows(0, d)?,
            kv: rows(d, 2 * d)?,
            qkv: Linear::new(w, b),
            out_proj: linear(d, d, vb.pp("out_proj"))?,
            num_heads: shape.num_heads,
            head_dim,
        })
    }

    /// (b, t, n·d) → (n, b, heads, t, head_dim), contiguous, for `n` stacked projections.
    fn split_heads(&self, x: &Tensor, n: usize) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        x.reshape((b, t, n, self.num_heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()
    }

    /// Scaled queries (b, heads, tq, hd) against keys and values (b, heads, t, hd); `mask` is
    /// added to the scores and must broadcast to (b, heads, tq, t). Returns (b, tq, d).
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, _, tq, _) = q.dims4()?;
        let scores = q.matmul(&k.t()?)?;
        let scores = match mask {
            Some(mask) => scores.broadcast_add(mask)?,
            None => scores,
        };
        let probs = fast::softmax_owned(scores)?;
        let out =
            probs
                .matmul(v)?
                .transpose(1, 2)?
                .reshape((b, tq, self.num_heads * self.head_dim))?;
        self.out_proj.forward(&out)
    }

    /// Self-attention over x (b, t, d) → (b, t, d).
    pub fn forward(&self, x: &Tensor, mask: Option<&Mask>) -> Result<Tensor> {
        let qkv = self.qkv.forward(x)?;
        let (_, t, _) = x.dims3()?;
        if use_fused(&qkv, t, mask.is_some()) {
            let d = self.num_heads * self.head_dim;
            let (q, k, v) = (
                qkv.narrow(2, 0, d)?,
                qkv.narrow(2, d, d)?,
                qkv.narrow(2, 2 * d, d)?,
            );
            let keys = mask.map_or(KeyRange::All, |m| m.keys.clone());
            return self.out_proj.forward(&attention::fused_attention(
                &q,
                &k,
                &v,
                self.num_heads,
                keys,
            )?);
        }
        let qkv = self.split_heads(&qkv, 3)?;
        self.attend(
            &qkv.get(0)?,
            &qkv.get(1)?,
            &qkv.get(2)?,
            mask.map(|m| &m.tensor),
        )
    }

    /// Queries from `q_in` (b, tq, d) attending over `kv_in` (b, t, d) → (b, tq, d).
    pub fn forward_cross(
        &self,
        q_in: &Tensor,
        kv_in: &Tensor,
        mask: Option<&Mask>,
    ) -> Result<Tensor> {
        let q = self.q.forward(q_in)?;
        let kv = self.kv.forward(kv_in)?;
        let (_, t, _) = kv_in.dims3()?;
        if use_fused(&kv, t, mask.is_some()) {
            let d = self.num_heads * self.head_dim;
            let (k, v) = (kv.narrow(2, 0, d)?, kv.narrow(2, d, d)?);
            let keys = mask.map_or(KeyRange::All, |m| m.keys.clone());
            return self.out_proj.forward(&attention::fused_attention(
                &q,
                &k,
                &v,
                self.num_heads,
                keys,
            )?);
        }
        let q = self.split_heads(&q, 1)?;
        let kv = self.split_heads(&kv, 2)?;
        self.attend(
            &q.get(0)?,
            &kv.get(0)?,
            &kv.get(1)?,
            mask.map(|m| &m.tensor),
        )
    }
}

struct Mlp {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl Mlp {
    fn new(shape: &EncoderShape, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: linear(shape.hidden_size, shape.intermediate_size, vb.pp("fc1"))?,
            fc2: linear(shape.intermediate_size, shape.hidden_size, vb.pp("fc2"))?,
            act: shape.act,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.fc1.forward(x)?;
        let h = match self.act {
            Activation::QuickGelu => fast::quick_gelu_owned(h)?,
            act => activation(act, &h)?,
        };
        self.fc2.forward(&h)
    }
}

pub(crate) struct EncoderLayer {
    self_attn: Attention,
    layer_norm1: Norm,
    mlp: Mlp,
    layer_norm2: Norm,
}

impl EncoderLayer {
    fn new(shape: &EncoderShape, vb: VarBuilder) -> Result<Self> {
        let (d, eps) = (shape.hidden_size, shape.layer_norm_eps);
        Ok(Self {
            self_attn: Attention::new(shape, vb.pp("self_attn"))?,
            layer_norm1: layer_norm(d, eps, vb.pp("layer_norm1"))?,
            mlp: Mlp::new(shape, vb.pp("mlp"))?,
            layer_norm2: layer_norm(d, eps, vb.pp("layer_norm2"))?,
        })
    }

    /// x: (b, t, d) → (b, t, d).
    pub fn forward(&self, x: &Tensor, mask: Option<&Mask>) -> Result<Tensor> {
        let h = self.layer_norm1.forward(x)?;
        let x = fast::add_owned(self.self_attn.forward(&h, mask)?, x)?;
        let h = self.mlp.forward(&self.layer_norm2.forward(&x)?)?;
        fast::add_owned(h, &x)
    }

    /// The layer's output at one row per sequence: `rows` (b,) holds, for each sequence, the
    /// index of its row in `x` flattened to (b·t, d); `mask` must broadcast to
    /// (b, heads, 1, t). Returns (b, d), equal to `forward(x)` at those rows.
    pub fn forward_rows(&self, x: &Tensor, rows: &Tensor, mask: Option<&Mask>) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let h = self.layer_norm1.forward(x)?;
        let h_rows = h
            .reshape((b * t, d))?
            .index_select(rows, 0)?
            .reshape((b, 1, d))?;
        let x_rows = x.reshape((b * t, d))?.index_select(rows, 0)?;
        let attn = self
            .self_attn
            .forward_cross(&h_rows, &h, mask)?
            .reshape((b, d))?;
        let x_rows = fast::add_owned(attn, &x_rows)?;
        let h = self.mlp.forward(&self.layer_norm2.forward(&x_rows)?)?;
        fast::add_owned(h, &x_rows)
    }
}

pub(crate) struct Encoder {
    pub layers: Vec<EncoderLayer>,
}

impl Encoder {
    pub fn new(shape: &EncoderShape, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("layers");
        let layers = (0..shape.num_layers)
            .map(|i| EncoderLayer::new(shape, vb.pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    /// Runs every layer, computing the last one only at `rows` (see
    /// [`EncoderLayer::forward_rows`]): (b, t, d) → (b, d).
    pub fn forward_pooled(
        &self,
        x: &Tensor,
        mask: Option<&Mask>,
        rows: &Tensor,
        rows_mask: Option<&Mask>,
    ) -> Result<Tensor> {
        let Some((last, rest)) = self.layers.split_last() else {
            let (b, t, d) = x.dims3()?;
            return x.reshape((b * t, d))?.index_select(rows, 0);
        };
        let mut x = x.clone();
        for layer in rest {
            x = layer.forward(&x, mask)?;
        }
        last.forward_rows(&x, rows, rows_mask)
    }
}

/// L2-normalises the last dimension without an epsilon, like transformers' `_get_vector_norm`.
pub(crate) fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    x.broadcast_div(&x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{DType, Device};

    use super::*;

    /// A random encoder layer; LayerNorm weights near 1 so that the signal stays O(1).
    fn layer(shape: &EncoderShape, dtype: DType) -> EncoderLayer {
        let (d, i) = (shape.hidden_size, shape.intermediate_size);
        let dev = Device::Cpu;
        let mut ts = HashMap::new();
        let mut put = |name: &str, dims: &[usize], mean: f64| {
            let t = (Tensor::randn(0f64, 0.2, dims, &dev).unwrap() + mean).unwrap();
            ts.insert(name.to_string(), t);
        };
        for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            put(&format!("self_attn.{p}.weight"), &[d, d], 0.0);
            put(&format!("self_attn.{p}.bias"), &[d], 0.0);
        }
        put("mlp.fc1.weight", &[i, d], 0.0);
        put("mlp.fc1.bias", &[i], 0.0);
        put("mlp.fc2.weight", &[d, i], 0.0);
        put("mlp.fc2.bias", &[d], 0.0);
        for n in ["layer_norm1", "layer_norm2"] {
            put(&format!("{n}.weight"), &[d], 1.0);
            put(&format!("{n}.bias"), &[d], 0.0);
        }
        EncoderLayer::new(shape, VarBuilder::from_tensors(ts, dtype, &Device::Cpu)).unwrap()
    }

    /// The CPU f32 fast paths (fused attention, in-place ops) against candle's generic ops,
    /// which f64 takes (as CUDA and f16/bf16 do): full layer, causal, and pooled rows.
    #[test]
    fn fast_paths_equal_generic_ops() {
        let shape = EncoderShape {
            hidden_size: 32,
            intermediate_size: 48,
            num_heads: 4,
            num_layers: 1,
            layer_norm_eps: 1e-5,
            act: Activation::QuickGelu,
        };
        let (b, t) = (3, 9);
        let x64 = Tensor::randn(0f64, 1.0, (b, t, shape.hidden_size), &Device::Cpu).unwrap();
        let x32 = x64.to_dtype(DType::F32).unwrap();
        // Same random weights in both dtypes: seed by building the f64 layer's tensors once.
        let l64 = layer(&shape, DType::F64);
        let l32 = EncoderLayer {
            self_attn: Attention {
                qkv: cast(&l64.self_attn.qkv),
                q: cast(&l64.self_attn.q),
                kv: cast(&l64.self_attn.kv),
                out_proj: cast(&l64.self_attn.out_proj),
                num_heads: l64.self_attn.num_heads,
                head_dim: l64.self_attn.head_dim,
            },
            layer_norm1: cast_ln(&l64.layer_norm1),
            mlp: Mlp {
                fc1: cast(&l64.mlp.fc1),
                fc2: cast(&l64.mlp.fc2),
                act: l64.mlp.act,
            },
            layer_norm2: cast_ln(&l64.layer_norm2),
        };
        let diff = |a: &Tensor, b: &Tensor| -> f64 {
            let a = a.to_dtype(DType::F64).unwrap();
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let mask = |dtype: DType| {
            let m: Vec<f64> = (0..t)
                .flat_map(|i| (0..t).map(move |j| if j > i { f64::NEG_INFINITY } else { 0.0 }))
                .collect();
            Mask {
                tensor: Tensor::from_vec(m, (t, t), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
                keys: KeyRange::Causal,
            }
        };
        for causal in [false, true] {
            let (m32, m64) = (mask(DType::F32), mask(DType::F64));
            let (m32, m64) = if causal {
                (Some(&m32), Some(&m64))
            } else {
                (None, None)
            };
            let d = diff(
                &l32.forward(&x32, m32).unwrap(),
                &l64.forward(&x64, m64).unwrap(),
            );
            assert!(d < 1e-4, "causal {causal}: {d}");
        }
        let pooled = vec![0usize, 8, 4];
        let rows: Vec<u32> = pooled
            .iter()
            .enumerate()
            .map(|(i, &p)| (i * t + p) as u32)
            .collect();
        let rows = Tensor::from_vec(rows, b, &Device::Cpu).unwrap();
        let rows_mask = |dtype: DType| {
            let m: Vec<f64> = pooled
                .iter()
                .flat_map(|&p| (0..t).map(move |j| if j > p { f64::NEG_INFINITY } else { 0.0 }))
                .collect();
            Mask {
                tensor: Tensor::from_vec(m, (b, 1, 1, t), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
                keys: KeyRange::UpTo(pooled.clone()),
            }
        };
        let got = l32
            .forward_rows(&x32, &rows, Some(&rows_mask(DType::F32)))
            .unwrap();
        let want = l64
            .forward_rows(&x64, &rows, Some(&rows_mask(DType::F64)))
            .unwrap();
        assert!(diff(&got, &want) < 1e-4);
        // And the rows equal the full causal layer at those rows.
        let full = l64.forward(&x64, Some(&mask(DType::F64))).unwrap();
        let at_rows = full
            .reshape((b * t, shape.hidden_size))
            .unwrap()
            .index_select(&rows, 0)
            .unwrap();
        assert!(diff(&want, &at_rows) < 1e-12);
    }

    fn cast(l: &Linear) -> Linear {
        Linear::new(
            l.weight.to_dtype(DType::F32).unwrap(),
            l.bias.to_dtype(DType::F32).unwrap(),
        )
    }

    fn cast_ln(l: &Norm) -> Norm {
        let b = l.0.bias().expect("bias").to_dtype(DType::F32).unwrap();
        Norm(LayerNorm::new(
            l.0.weight().to_dtype(DType::F32).unwrap(),
            b,
            l.0.eps(),
        ))
    }
}

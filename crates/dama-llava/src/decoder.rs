//! One LLaMA decoder layer (transformers' `LlamaDecoderLayer`) with its backward written by
//! hand: the forward runs outside candle's graph and keeps what the backward reads; the
//! backward is the layer's chain rule in a fixed order of GEMMs and fused kernels.
//!
//! Why not candle's autograd: it fills a zero tensor and adds into it for every node it visits
//! (reshapes and transposes included), turns each weight gradient into a transposed add, and
//! computes a weight gradient even for a frozen weight. Here each weight gradient is one GEMM
//! into a fresh buffer, a frozen weight costs none, and the saved activations are released as
//! soon as the layer's backward has run, not when the whole graph is dropped.
//! [`layer_forward_autograd`] keeps the graph-built layer: the reference the tests compare
//! against, and the `LayerBackward::Autograd` setting.

use std::sync::{Arc, Mutex};

use candle_core::{Result, Tensor};
use dama_kernels::profile::span;
use dama_kernels::{Backward, LayerGrads, Recompute};

use crate::config::TextConfig;
use crate::linear::Linear;
use crate::llama::AttentionInputs;
use crate::params::{Grad, Projection};

/// How a decoder layer's gradients are computed in a tracked forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerBackward {
    /// The hand-written backward of this module.
    #[default]
    Manual,
    /// candle's autograd through the layer's differentiable ops.
    Autograd,
}

/// The weights of one decoder layer (`Linear` weights `(out, in)`, as transformers stores them).
#[derive(Clone)]
pub struct DecoderLayer {
    pub input_norm: Tensor,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub post_norm: Tensor,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl DecoderLayer {
    pub fn linear(&self, p: Projection) -> &Linear {
        match p {
            Projection::Q => &self.q,
            Projection::K => &self.k,
            Projection::V => &self.v,
            Projection::O => &self.o,
            Projection::Gate => &self.gate,
            Projection::Up => &self.up,
            Projection::Down => &self.down,
        }
    }

    /// The seven projections, in the order of [`Projection::ALL`] and [`DecoderLayer::tensors`].
    pub fn linears(&self) -> [&Linear; 7] {
        Projection::ALL.map(|p| self.linear(p))
    }

    /// Every tensor the layer reads: the two norm weights, then each linear's
    /// [`Linear::tensors`] in the order q, k, v, o, gate, up, down.
    pub fn tensors(&self) -> Vec<Tensor> {
        let mut out = vec![self.input_norm.clone(), self.post_norm.clone()];
        for lin in self.linears() {
            out.extend(lin.tensors());
        }
        out
    }
}

/// One decoder layer: attention and MLP blocks, each pre-normed and residual, built from
/// candle's differentiable ops and the fused ops' own backwards.
pub(crate) fn layer_forward_autograd(
    c: &TextConfig,
    l: &DecoderLayer,
    x: &Tensor,
    att: &AttentionInputs,
    grad: Grad,
) -> Result<Tensor> {
    let (cos, sin) = tables(att)?;
    let scale = 1.0 / (c.head_dim as f64).sqrt();
    layer_forward_with(
        c,
        l,
        x,
        (att.rows, att.seq_len),
        &cos,
        &sin,
        grad,
        |q, k, v| dama_kernels::attention(q, k, v, &att.mask, scale),
    )
}

/// The layer's maths with the attention step supplied by the caller: `attend(q, k, v)` gets
/// the queries and keys after RoPE and the values, `(rows, seq, heads, head_dim)`, and returns
/// `(rows, seq, query_heads, head_dim)`. Training attends within the batch
/// ([`layer_forward_autograd`]); generation attends to its KV cache too
/// (`crate::generate`). `cos`/`sin` are `(rows, seq, head_dim)`, one row per token.
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_forward_with(
    c: &TextConfig,
    l: &DecoderLayer,
    x: &Tensor,
    (b, t): (usize, usize),
    cos: &Tensor,
    sin: &Tensor,
    grad: Grad,
    attend: impl FnOnce(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let hd = c.head_dim;
    let eps = c.rms_norm_eps;
    let h = dama_kernels::rms_norm(x, &grad.w(&l.input_norm), eps)?;
    let heads = |y: Tensor, n: usize| y.reshape((b, t, n, hd));
    let q = heads(l.q.forward(&h, grad)?, c.num_attention_heads)?;
    let k = heads(l.k.forward(&h, grad)?, c.num_key_value_heads)?;
    let v = heads(l.v.forward(&h, grad)?, c.num_key_value_heads)?;
    let q = dama_kernels::rope(&q, cos, sin)?;
    let k = dama_kernels::rope(&k, cos, sin)?;
    let a = attend(&q, &k, &v)?.reshape((b * t, c.num_attention_heads * hd))?;
    let x = (x + l.o.forward(&a, grad)?)?;
    let h = dama_kernels::rms_norm(&x, &grad.w(&l.post_norm), eps)?;
    let m = dama_kernels::swiglu(&l.gate.forward(&h, grad)?, &l.up.forward(&h, grad)?)?;
    x + l.down.forward(&m, grad)?
}

/// What the hand-written backward reads. The normed inputs of the two blocks and the MLP's
/// activation are recomputed from `x`, `x2` and `gate`/`up` (cheap row and pointwise
/// kernels) rather than kept.
struct Saved {
    /// `(b, t, heads, d)` after RoPE, contiguous.
    q: Tensor,
    k: Tensor,
    v: Tensor,
    /// Attention output `(b, t, hq, d)` and its log-sum-exp.
    attn: Tensor,
    lse: Tensor,
    /// The residual stream between the blocks, `(n, hidden)`.
    x2: Tensor,
    gate: Tensor,
    up: Tensor,
}

/// Per-layer constants the forward and backward share.
#[derive(Clone)]
struct Shapes {
    b: usize,
    t: usize,
    hq: usize,
    hkv: usize,
    hd: usize,
    eps: f64,
    scale: f64,
}

impl Shapes {
    fn new(c: &TextConfig, att: &AttentionInputs) -> Self {
        Self {
            b: att.rows,
            t: att.seq_len,
            hq: c.num_attention_heads,
            hkv: c.num_key_value_heads,
            hd: c.head_dim,
            eps: c.rms_norm_eps,
            scale: 1.0 / (c.head_dim as f64).sqrt(),
        }
    }
}

/// The table rows of every token, `(b, t, d)`, as the fused RoPE takes them.
fn tables(att: &AttentionInputs) -> Result<(Tensor, Tensor)> {
    Ok((att.cos.squeeze(1)?, att.sin.squeeze(1)?))
}

/// The layer without a graph; returns the output and what the backward reads.
fn forward_saving(
    s: &Shapes,
    l: &DecoderLayer,
    x: &Tensor,
    att: &AttentionInputs,
) -> Result<(Tensor, Saved)> {
    let x = x.detach();
    let off = Grad::Off;
    let dev = x.device();
    let (cos, sin) = tables(att)?;
    let h = span(dev, "fwd.input_norm", || {
        dama_kernels::rms_norm(&x, &l.input_norm.detach(), s.eps)
    })?;
    let heads = |y: Tensor, n: usize| y.reshape((s.b, s.t, n, s.hd));
    let (q, k, v) = span(dev, "fwd.qkv", || {
        Ok((
            heads(l.q.forward(&h, off)?, s.hq)?,
            heads(l.k.forward(&h, off)?, s.hkv)?,
            heads(l.v.forward(&h, off)?, s.hkv)?.contiguous()?,
        ))
    })?;
    let (q, k) = span(dev, "fwd.rope", || {
        Ok((
            dama_kernels::rope(&q, &cos, &sin)?,
            dama_kernels::rope(&k, &cos, &sin)?,
        ))
    })?;
    let (attn, lse) = span(dev, "fwd.attention", || {
        dama_kernels::attention_forward(&q, &k, &v, &att.mask, s.scale)
    })?;
    let a = attn.reshape((s.b * s.t, s.hq * s.hd))?;
    let x2 = span(dev, "fwd.o_residual", || &x + l.o.forward(&a, off)?)?;
    let h2 = span(dev, "fwd.post_norm", || {
        dama_kernels::rms_norm(&x2, &l.post_norm.detach(), s.eps)
    })?;
    let (gate, up) = span(dev, "fwd.gate_up", || {
        Ok((l.gate.forward(&h2, off)?, l.up.forward(&h2, off)?))
    })?;
    let m = span(dev, "fwd.swiglu", || dama_kernels::swiglu(&gate, &up))?;
    let y = span(dev, "fwd.down_residual", || {
        &x2 + l.down.forward(&m, off)?
    })?;
    let saved = Saved {
        q,
        k,
        v,
        attn,
        lse,
        x2,
        gate,
        up,
    };
    Ok((y, saved))
}

/// Sums the input gradients of linears that read the same input.
fn add_opt(acc: Option<Tensor>, g: Option<Tensor>) -> Result<Option<Tensor>> {
    Ok(match (acc, g) {
        (Some(a), Some(g)) => Some((a + g)?),
        (a, g) => a.or(g),
    })
}

/// One layer's backward: its weights, inputs and shapes, and what the forward kept.
struct LayerTape {
    s: Shapes,
    l: DecoderLayer,
    att: AttentionInputs,
    /// The layer's input, detached.
    x: Tensor,
    /// Taken by the first backward (so the activations go as soon as this layer's backward is
    /// done); `None` when recomputing, or for a second backward, which recompute them.
    saved: Mutex<Option<Saved>>,
}

impl LayerTape {
    fn backward(&self, dy: &Tensor, need: &[bool], need_dx: bool) -> Result<LayerGrads> {
        let saved = self.saved.lock().expect("saved activations lock").take();
        let saved = match saved {
            Some(saved) => saved,
            None => forward_saving(&self.s, &self.l, &self.x, &self.att)?.1,
        };
        backward(self, saved, dy, need, need_dx)
    }
}

/// The layer's chain rule, from the output gradient `dy` `(n, hidden)` back to `x`.
/// `need` flags [`DecoderLayer::tensors`]; the returned slots follow the same order.
fn backward(
    tape: &LayerTape,
    saved: Saved,
    dy: &Tensor,
    need: &[bool],
    need_dx: bool,
) -> Result<LayerGrads> {
    let LayerTape { s, l, att, x, .. } = tape;
    let n = s.b * s.t;
    let (cos, sin) = tables(att)?;
    let (w_in, w_post) = (l.input_norm.detach(), l.post_norm.detach());
    // where each projection's flags sit in `need` (after the two norm weights)
    let mut at = 2;
    let spans = Projection::ALL.map(|p| {
        let len = l.linear(p).tensors().len();
        at += len;
        at - len..at
    });
    let mut params: Vec<Option<Tensor>> = vec![None; need.len()];
    let mut put = |p: Projection, grads: Vec<Option<Tensor>>| {
        for (slot, g) in params[spans[p.index()].clone()].iter_mut().zip(grads) {
            *slot = g;
        }
    };
    let dy = dy.contiguous()?;
    let dev = &dy.device().clone();
    let linear = |p: Projection, x: &Tensor, d: &Tensor| {
        l.linear(p)
            .backward(x, d, &need[spans[p.index()].clone()], true)
    };

    // MLP block: y = x2 + down(swiglu(gate(h2), up(h2))), h2 = rms_norm(x2)
    let Saved {
        q,
        k,
        v,
        attn,
        lse,
        x2,
        gate,
        up,
    } = saved;
    let m = span(dev, "bwd.recompute_swiglu", || {
        dama_kernels::swiglu(&gate, &up)
    })?;
    let (dm, g) = span(dev, "bwd.down", || linear(Projection::Down, &m, &dy))?;
    put(Projection::Down, g);
    drop(m);
    let (dgate, dup) = span(dev, "bwd.swiglu", || {
        dama_kernels::swiglu_backward(&gate, &up, &dm.expect("asked for"), true, true)
    })?;
    drop((gate, up));
    let h2 = span(dev, "bwd.recompute_post_norm", || {
        dama_kernels::rms_norm(&x2, &w_post, s.eps)
    })?;
    let (dh2, g_gate, g_up) = span(dev, "bwd.gate_up", || {
        let (dh2, g_gate) = linear(Projection::Gate, &h2, &dgate.expect("asked for"))?;
        let (dh2_up, g_up) = linear(Projection::Up, &h2, &dup.expect("asked for"))?;
        Ok((add_opt(dh2, dh2_up)?.expect("asked for"), g_gate, g_up))
    })?;
    put(Projection::Gate, g_gate);
    put(Projection::Up, g_up);
    drop(h2);
    let (dx2, dw_post) = span(dev, "bwd.post_norm_residual", || {
        let (dx2, dw) = dama_kernels::rms_norm_backward(&x2, &w_post, &dh2, s.eps, true, need[1])?;
        Ok(((dx2.expect("asked for") + &dy)?, dw))
    })?;
    drop((dh2, x2, dy));

    // attention block: x2 = x + o(attention(rope(q(h)), rope(k(h)), v(h))), h = rms_norm(x)
    let a = attn.reshape((n, s.hq * s.hd))?;
    let (da, g) = span(dev, "bwd.o", || linear(Projection::O, &a, &dx2))?;
    put(Projection::O, g);
    let da = da.expect("asked for").reshape((s.b, s.t, s.hq, s.hd))?;
    let (dq, dk, dv) = span(dev, "bwd.attention", || {
        dama_kernels::attention_backward(&q, &k, &v, &attn, &lse, &da, &att.mask, s.scale)
    })?;
    drop((q, k, v, attn, lse, da));
    let (dq, dk) = span(dev, "bwd.rope", || {
        Ok((
            dama_kernels::rope_backward(&dq, &cos, &sin)?.reshape((n, s.hq * s.hd))?,
            dama_kernels::rope_backward(&dk, &cos, &sin)?.reshape((n, s.hkv * s.hd))?,
        ))
    })?;
    let dv = dv.reshape((n, s.hkv * s.hd))?;
    let h = span(dev, "bwd.recompute_input_norm", || {
        dama_kernels::rms_norm(x, &w_in, s.eps)
    })?;
    let mut dh = None;
    span(dev, "bwd.qkv", || {
        for (p, d) in [
            (Projection::Q, dq),
            (Projection::K, dk),
            (Projection::V, dv),
        ] {
            let (dxi, g) = linear(p, &h, &d)?;
            put(p, g);
            dh = add_opt(dh.take(), dxi)?;
        }
        Ok(())
    })?;
    drop(h);
    let dh = dh.expect("asked for");
    let (dx, dw_in) = span(dev, "bwd.input_norm_residual", || {
        let (dx, dw) = dama_kernels::rms_norm_backward(x, &w_in, &dh, s.eps, need_dx, need[0])?;
        let dx = match dx {
            Some(d) if need_dx => Some((d + dx2)?),
            _ => None,
        };
        Ok((dx, dw))
    })?;
    params[0] = dw_in;
    params[1] = dw_post;
    Ok(LayerGrads { dx, params })
}

/// How a decoder layer runs in a pass: whether it records a graph, which backward computes its
/// gradients, and whether that backward recomputes the layer's activations instead of keeping
/// them. One value, so that a new way of running a layer is one more field, not one more
/// argument threaded through every caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerRun {
    pub grad: Grad,
    pub backward: LayerBackward,
    /// Keep only the layer's input and run its forward again in the backward.
    pub recompute: bool,
}

/// One decoder layer on `x` `(rows·seq, hidden)` in a forward that may track gradients.
/// Untracked, it is the plain forward; tracked, it is [`forward_saving`] wired into the graph
/// with [`backward`] (or with `recompute`, only `x` kept and the forward run again in the
/// backward), or candle's autograd when `run.backward` says so. All of them compute the same
/// values, bit for bit.
pub fn layer_forward(
    c: &TextConfig,
    l: &DecoderLayer,
    x: &Tensor,
    att: &AttentionInputs,
    run: LayerRun,
) -> Result<Tensor> {
    let LayerRun {
        grad,
        backward: mode,
        recompute,
    } = run;
    let tracked = grad == Grad::Track || x.track_op();
    if !tracked {
        return layer_forward_autograd(c, l, x, att, Grad::Off);
    }
    if mode == LayerBackward::Autograd {
        if !recompute {
            return layer_forward_autograd(c, l, x, att, grad);
        }
        let (c, l2, a) = (c.clone(), l.clone(), att.clone());
        let f: Arc<Recompute> = Arc::new(move |x: &Tensor, track: bool| {
            let grad = if track { Grad::Track } else { Grad::Off };
            layer_forward_autograd(&c, &l2, x, &a, grad)
        });
        return dama_kernels::recompute(x, &l.tensors(), f);
    }
    let s = Shapes::new(c, att);
    let params = match grad {
        Grad::Track => l.tensors(),
        // frozen weights: only the input gradient flows
        Grad::Off => l.tensors().iter().map(|t| t.detach()).collect(),
    };
    let (y, saved) = forward_saving(&s, l, x, att)?;
    let tape = LayerTape {
        s,
        l: l.clone(),
        att: att.clone(),
        x: x.detach(),
        saved: Mutex::new((!recompute).then_some(saved)),
    };
    let bwd: Arc<Backward> =
        Arc::new(move |dy: &Tensor, need: &[bool], need_dx: bool| tape.backward(dy, need, need_dx));
    dama_kernels::with_backward(x, y, &params, bwd)
}

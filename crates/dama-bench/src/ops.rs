//! Forward + backward of every fused op next to the composition of differentiable candle ops it
//! replaces (`dama_kernels::composed`), on one device and dtype, at one model shape. Shared by
//! the CPU benchmark and the GPU bench binary.

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor, Var};
use dama_kernels::{AttnMask, composed};

/// The shape of one decoder layer's work.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// rows × tokens per row
    pub rows: usize,
    pub tokens: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub vocab: usize,
    /// scored (answer) tokens of the log-prob head
    pub scored: usize,
}

pub struct Row {
    pub op: &'static str,
    /// forward + backward
    pub fused_ms: f64,
    pub composed_ms: f64,
    /// the fused op's forward alone
    pub fused_fwd_ms: f64,
}

/// Seconds of the fastest of `iters` runs of `f` after one warm-up, `sync` after each run (a
/// device synchronisation on the GPU).
pub fn fastest(
    iters: usize,
    sync: &dyn Fn() -> Result<()>,
    f: &mut dyn FnMut() -> Result<()>,
) -> Result<f64> {
    f()?;
    sync()?;
    let mut best = f64::INFINITY;
    for _ in 0..iters {
        let t0 = Instant::now();
        f()?;
        sync()?;
        best = best.min(t0.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// A deterministic N(0, std²) tensor (SplitMix64 + Box–Muller, generated on the host).
pub fn randn(seed: u64, shape: &[usize], std: f64, dtype: DType, dev: &Device) -> Result<Tensor> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let n: usize = shape.iter().product();
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let (u, w) = (next().max(1e-300), next());
        let r = (-2.0 * u.ln()).sqrt() * std;
        v.push((r * (std::f64::consts::TAU * w).cos()) as f32);
        v.push((r * (std::f64::consts::TAU * w).sin()) as f32);
    }
    v.truncate(n);
    Tensor::from_vec(v, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(dev)
}

pub fn var(seed: u64, shape: &[usize], std: f64, dtype: DType, dev: &Device) -> Result<Var> {
    Var::from_tensor(&randn(seed, shape, std, dtype, dev)?)
}

/// Forward, then backward with an all-ones output gradient (the gradients are dropped).
///
/// `backward()` on a non-scalar seeds the output's gradient with `ones_like`, one cheap
/// element-wise fill. An earlier version backpropagated `y.to_dtype(F32).sum_all()`, which
/// costs a full-size cast and, in candle 0.11's CUDA backend, a sum over all elements run by
/// a single block of 1024 threads (one SM): ~1–3 ms at the block's shapes, more than the
/// element-wise ops being measured.
fn fwd_bwd(y: Tensor) -> Result<()> {
    let _ = y.backward()?;
    Ok(())
}

/// Real RoPE tables `(rows, t, d)` for positions 0..t of every row.
pub fn rope_tables(
    rows: usize,
    t: usize,
    d: usize,
    dtype: DType,
    dev: &Device,
) -> Result<(Tensor, Tensor)> {
    let (mut c, mut s) = (Vec::with_capacity(t * d), Vec::with_capacity(t * d));
    for p in 0..t {
        for i in 0..d {
            let f = 1.0 / 10000f64.powf((2 * (i % (d / 2))) as f64 / d as f64);
            c.push((p as f64 * f).cos() as f32);
            s.push((p as f64 * f).sin() as f32);
        }
    }
    let mk = |v: Vec<f32>| -> Result<Tensor> {
        Tensor::from_vec(v, (1, t, d), &Device::Cpu)?
            .broadcast_as((rows, t, d))?
            .contiguous()?
            .to_dtype(dtype)?
            .to_device(dev)
    };
    Ok((mk(c)?, mk(s)?))
}

/// Times every op, fused and composed; `iters` timed runs each (fastest kept).
pub fn bench_ops(s: Shape, dtype: DType, dev: &Device, iters: usize) -> Result<Vec<Row>> {
    let sync = || dev.synchronize();
    let hd = s.hidden / s.heads;
    let n = s.rows * s.tokens;
    let mut rows = Vec::new();
    let mut run = |op: &'static str,
                   fused_fwd: &mut dyn FnMut() -> Result<Tensor>,
                   composed_fwd: &mut dyn FnMut() -> Result<Tensor>|
     -> Result<()> {
        let fw = fastest(iters, &sync, &mut || fused_fwd().map(drop))?;
        let f = fastest(iters, &sync, &mut || fwd_bwd(fused_fwd()?))?;
        let c = fastest(iters, &sync, &mut || fwd_bwd(composed_fwd()?))?;
        rows.push(Row {
            op,
            fused_ms: f * 1e3,
            composed_ms: c * 1e3,
            fused_fwd_ms: fw * 1e3,
        });
        Ok(())
    };

    let x = var(1, &[n, s.hidden], 1.0, dtype, dev)?;
    let w = var(2, &[s.hidden], 0.1, dtype, dev)?;
    run(
        "rms_norm",
        &mut || dama_kernels::rms_norm(&x, &w, 1e-5),
        &mut || composed::rms_norm(&x, &w, 1e-5),
    )?;

    let q = var(3, &[s.rows, s.tokens, s.heads, hd], 1.0, dtype, dev)?;
    let (cos, sin) = rope_tables(s.rows, s.tokens, hd, dtype, dev)?;
    run(
        "rope",
        &mut || dama_kernels::rope(&q, &cos, &sin),
        &mut || composed::rope(&q, &cos, &sin),
    )?;

    let k = var(4, &[s.rows, s.tokens, s.kv_heads, hd], 1.0, dtype, dev)?;
    let v = var(5, &[s.rows, s.tokens, s.kv_heads, hd], 1.0, dtype, dev)?;
    let mask = AttnMask::causal(s.tokens, &vec![s.tokens; s.rows])?;
    let dense = Tensor::from_vec(
        mask.to_additive(-1e30),
        (s.rows, 1, s.tokens, s.tokens),
        &Device::Cpu,
    )?
    .to_dtype(composed::compute_dtype(dtype))?
    .to_device(dev)?;
    let scale = 1.0 / (hd as f64).sqrt();
    run(
        "attention (causal)",
        &mut || dama_kernels::attention(&q, &k, &v, &mask, scale),
        &mut || composed::attention(&q, &k, &v, &dense, scale),
    )?;

    let a = var(6, &[n, s.ffn], 2.0, dtype, dev)?;
    let b = var(7, &[n, s.ffn], 1.0, dtype, dev)?;
    run("swiglu", &mut || dama_kernels::swiglu(&a, &b), &mut || {
        composed::swiglu(&a, &b)
    })?;

    // the block's token embedding: n ids into a (vocab, hidden) table; composed is candle's
    // index_select, whose backward is index_add
    let table = var(10, &[s.vocab, s.hidden], 0.02, dtype, dev)?;
    let tok: Vec<u32> = (0..n as u32)
        .map(|i| i * 7919 % 32000 % s.vocab as u32)
        .collect();
    let tok = Tensor::from_vec(tok, n, dev)?;
    run(
        "embedding",
        &mut || dama_kernels::embedding(&tok, &table),
        &mut || composed::embedding(&tok, &table),
    )?;

    let h = var(8, &[s.scored, s.hidden], 1.0, dtype, dev)?;
    let lm = var(9, &[s.vocab, s.hidden], 0.02, dtype, dev)?;
    let ids: Vec<u32> = (0..s.scored as u32)
        .map(|i| i * 7919 % s.vocab as u32)
        .collect();
    let ids = Tensor::from_vec(ids, s.scored, dev)?;
    run(
        "answer log-prob head",
        &mut || dama_kernels::token_logprobs(&h, &lm, &ids, dama_kernels::DEFAULT_VOCAB_CHUNK),
        &mut || composed::token_logprobs(&h, &lm, &ids),
    )?;

    // One whole decoder layer (norms, projections, RoPE, attention, MLP), fused vs composed.
    let d = s.hidden;
    let (kvd, f) = (s.kv_heads * hd, s.ffn);
    let lw: Vec<Var> = [(d, d), (d, kvd), (d, kvd), (d, d), (d, f), (d, f), (f, d)]
        .iter()
        .enumerate()
        .map(|(i, &(a, b))| var(20 + i as u64, &[a, b], 1.0 / (a as f64).sqrt(), dtype, dev))
        .collect::<Result<_>>()?;
    let layer = |fused: bool| -> Result<Tensor> {
        let rms = |x: &Tensor| {
            if fused {
                dama_kernels::rms_norm(x, &w, 1e-5)
            } else {
                composed::rms_norm(x, &w, 1e-5)
            }
        };
        let xn = rms(&x)?;
        let q = xn
            .matmul(&lw[0])?
            .reshape((s.rows, s.tokens, s.heads, hd))?;
        let k = xn
            .matmul(&lw[1])?
            .reshape((s.rows, s.tokens, s.kv_heads, hd))?;
        let v = xn
            .matmul(&lw[2])?
            .reshape((s.rows, s.tokens, s.kv_heads, hd))?;
        let a = if fused {
            let (q, k) = (
                dama_kernels::rope(&q, &cos, &sin)?,
                dama_kernels::rope(&k, &cos, &sin)?,
            );
            dama_kernels::attention(&q, &k, &v, &mask, scale)?
        } else {
            let (q, k) = (
                composed::rope(&q, &cos, &sin)?,
                composed::rope(&k, &cos, &sin)?,
            );
            composed::attention(&q, &k, &v, &dense, scale)?
        };
        let x1 = (&*x + a.reshape((n, d))?.matmul(&lw[3])?)?;
        let h = rms(&x1)?;
        let (g, u) = (h.matmul(&lw[4])?, h.matmul(&lw[5])?);
        let m = if fused {
            dama_kernels::swiglu(&g, &u)?
        } else {
            composed::swiglu(&g, &u)?
        };
        x1 + m.matmul(&lw[6])?
    };
    run("decoder layer", &mut || layer(true), &mut || layer(false))?;

    // On CUDA, the attention once per kernel family (the FMA one first: a crash of the
    // tensor-core kernels then loses only their row), whatever DAMA_CUDA_ATTN selects above.
    // The ldmatrix variant only with OPS_LDMATRIX=1 (gpu-bench.sh sets it once its check
    // passed: a fault there would take the whole process and every row with it).
    if dev.is_cuda() {
        let mut kinds = vec![
            ("attention (causal) fma", dama_kernels::CudaAttention::Fma),
            ("attention (causal) mma", dama_kernels::CudaAttention::Mma),
        ];
        if std::env::var("OPS_LDMATRIX").as_deref() == Ok("1") {
            kinds.push((
                "attention (causal) mma_ldsm",
                dama_kernels::CudaAttention::Ldmatrix,
            ));
        }
        for (op, kind) in kinds {
            dama_kernels::set_cuda_attention(Some(kind));
            let r = run(
                op,
                &mut || dama_kernels::attention(&q, &k, &v, &mask, scale),
                &mut || composed::attention(&q, &k, &v, &dense, scale),
            );
            dama_kernels::set_cuda_attention(None);
            r?;
        }
    }
    Ok(rows)
}

pub fn print_rows(rows: &[Row]) {
    println!(
        "{:<24} {:>12} {:>12} {:>12} {:>8}",
        "op (fwd+bwd)", "fused ms", "(fused fwd)", "composed ms", "ratio"
    );
    for r in rows {
        println!(
            "{:<24} {:>12.2} {:>12.2} {:>12.2} {:>7.2}x",
            r.op,
            r.fused_ms,
            r.fused_fwd_ms,
            r.composed_ms,
            r.composed_ms / r.fused_ms
        );
    }
}

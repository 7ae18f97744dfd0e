//! CUDA against CPU, op by op, on small shapes that cross the kernels' tile and block edges:
//! the same inputs on both devices, outputs and gradients of `Σ y ⊙ c` compared. The CPU
//! kernels are the ones the unit tests check against the compositions of candle ops.

use candle_core::{D, DType, Device, Result, Tensor, Var};
use dama_kernels::AttnMask;
use serde_json::json;

use dama_bench::ops::{randn, rope_tables};

type Op<'a> = &'a dyn Fn(&[Tensor], &Device) -> Result<Tensor>;

/// `max |a − b| / max |b|` over all entries (on the host, in f64).
pub fn rel_err(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?;
    let b = b
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?;
    let scale = b.abs()?.max(D::Minus1)?.to_scalar::<f64>()?.max(1e-30);
    let diff = (a - &b)?.abs()?.max(D::Minus1)?.to_scalar::<f64>()?;
    Ok(if diff.is_nan() {
        f64::INFINITY
    } else {
        diff / scale
    })
}

/// Output and input-gradient errors of `op` on `gpu` against the CPU. `inputs` are
/// (shape, std, trainable); constants the op needs it builds itself for the device given.
fn compare(
    gpu: &Device,
    dtype: DType,
    inputs: &[(&[usize], f64, bool)],
    op: Op<'_>,
) -> Result<(f64, Vec<f64>)> {
    let run = |dev: &Device| -> Result<(Tensor, Vec<Tensor>)> {
        let mut vars = Vec::new();
        let mut xs = Vec::new();
        for (i, (shape, std, train)) in inputs.iter().enumerate() {
            let t = randn(100 + i as u64, shape, *std, dtype, dev)?;
            if *train {
                let v = Var::from_tensor(&t)?;
                xs.push(v.as_tensor().clone());
                vars.push(v);
            } else {
                xs.push(t);
            }
        }
        let y = op(&xs, dev)?;
        if vars.is_empty() {
            return Ok((y, vec![]));
        }
        let c = randn(7, y.dims(), 1.0, DType::F32, dev)?;
        let g = (y.to_dtype(DType::F32)? * c)?.sum_all()?.backward()?;
        let grads = vars
            .iter()
            .map(|v| {
                g.get(v.as_tensor())
                    .cloned()
                    .ok_or_else(|| candle_core::Error::Msg("missing gradient".into()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((y, grads))
    };
    let (yc, gc) = run(&Device::Cpu)?;
    let (yg, gg) = run(gpu)?;
    let out = rel_err(&yg, &yc)?;
    let grads = gg
        .iter()
        .zip(&gc)
        .map(|(a, b)| rel_err(a, b))
        .collect::<Result<Vec<_>>>()?;
    Ok((out, grads))
}

/// Shared-prefix layout mask for rows of (prefix, chosen, rejected) lengths, right-padded.
fn shared_mask(rows: &[(usize, usize, usize)], t: usize) -> Result<AttnMask> {
    AttnMask::from_fn(rows.len(), t, |r, q, k| {
        let (p, c, rj) = rows[r];
        let at = |i: usize| {
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
        matches!((at(q), at(k)), (Some((bq, pq)), Some((bk, pk))) if pk <= pq && (bk == 0 || bk == bq))
    })
}

/// Runs every check; prints one JSON line each; returns whether all passed.
pub fn run(gpu: &Device, only: Option<&str>) -> Result<bool> {
    let mut all_ok = true;
    for dtype in [DType::F32, DType::BF16] {
        // f32: accumulation order only; bf16: one rounding of the output may differ
        let tol = if dtype == DType::F32 { 1e-4 } else { 2e-2 };
        let mut check = |name: &str, inputs: &[(&[usize], f64, bool)], op: Op<'_>| -> Result<()> {
            if only.is_some_and(|p| !name.starts_with(p)) {
                return Ok(());
            }
            // an error (not a crash) fails this check only; a crash ends the process, which
            // is why gpu-bench.sh runs the tensor-core attention checks in a process of their own
            let (out, grads, err) = match compare(gpu, dtype, inputs, op) {
                Ok((o, g)) => (o, g, None),
                Err(e) => (f64::INFINITY, vec![], Some(e.to_string())),
            };
            let ok = err.is_none() && out < tol && grads.iter().all(|&g| g < tol);
            all_ok &= ok;
            let shapes: Vec<_> = inputs.iter().map(|i| i.0.to_vec()).collect();
            let mut line = json!({"check": name, "dtype": format!("{dtype:?}"), "inputs": shapes,
                                  "out_err": out, "grad_errs": grads, "tol": tol, "ok": ok});
            if name.starts_with("attention") {
                // the head dimension the op sees (the unaligned-view check narrows 72 to 64)
                let d = if name.contains("unaligned") {
                    64
                } else {
                    *inputs[0].0.last().unwrap_or(&0)
                };
                line["kernel"] = json!(if gpu.is_cuda() {
                    dama_kernels::cuda_attention_path(dtype, d)
                } else {
                    "cpu"
                });
            }
            if let Some(e) = err {
                line["error"] = json!(e);
            }
            println!("{line}");
            Ok(())
        };
        for d in [200usize, 4096] {
            check(
                "rms_norm",
                &[(&[37, d], 1.5, true), (&[d], 0.3, true)],
                &|x, _| dama_kernels::rms_norm(&x[0], &(&x[1] + 1.0)?, 1e-5),
            )?;
        }
        check("rope", &[(&[2, 19, 3, 64], 1.0, true)], &|x, dev| {
            let (c, s) = rope_tables(2, 19, 64, x[0].dtype(), dev)?;
            dama_kernels::rope(&x[0], &c, &s)
        })?;
        check(
            "rope (transposed input)",
            &[(&[2, 3, 19, 64], 1.0, true)],
            &|x, dev| {
                let (c, s) = rope_tables(2, 19, 64, x[0].dtype(), dev)?;
                dama_kernels::rope(
                    &x[0].transpose(1, 2)?,
                    &c.narrow(0, 0, 1)?.squeeze(0)?,
                    &s.narrow(0, 0, 1)?.squeeze(0)?,
                )
            },
        )?;
        check(
            "swiglu",
            &[(&[7, 300], 3.0, true), (&[7, 300], 1.0, true)],
            &|x, _| dama_kernels::swiglu(&x[0], &x[1]),
        )?;
        let causal = AttnMask::causal(150, &[150, 97, 1])?;
        check(
            "attention causal+padding gqa d64",
            &[
                (&[3, 150, 4, 64], 1.0, true),
                (&[3, 150, 2, 64], 1.0, true),
                (&[3, 150, 2, 64], 1.0, true),
            ],
            &|x, _| dama_kernels::attention(&x[0], &x[1], &x[2], &causal, 0.125),
        )?;
        let shared = shared_mask(&[(40, 30, 20), (50, 10, 25)], 90)?;
        check(
            "attention shared-prefix d128",
            &[
                (&[2, 90, 2, 128], 1.0, true),
                (&[2, 90, 2, 128], 1.0, true),
                (&[2, 90, 2, 128], 1.0, true),
            ],
            &|x, _| dama_kernels::attention(&x[0], &x[1], &x[2], &shared, 1.0 / 128f64.sqrt()),
        )?;
        for d in [32usize, 80, 256] {
            let m = AttnMask::causal(70, &[70])?;
            check(
                &format!("attention causal d{d}"),
                &[
                    (&[1, 70, 2, d], 1.0, true),
                    (&[1, 70, 1, d], 1.0, true),
                    (&[1, 70, 1, d], 1.0, true),
                ],
                &|x, _| dama_kernels::attention(&x[0], &x[1], &x[2], &m, 1.0 / (d as f64).sqrt()),
            )?;
        }
        // more shapes for the tensor-core kernels (64-query / 64- and 32-key tiles, 16-row
        // fragments): several tiles, GQA 4:1, padding, a strided and a misaligned view
        let causal = AttnMask::causal(200, &[200, 133])?;
        check(
            "attention causal+padding gqa4 d128 t200",
            &[
                (&[2, 200, 8, 128], 1.0, true),
                (&[2, 200, 2, 128], 1.0, true),
                (&[2, 200, 2, 128], 1.0, true),
            ],
            &|x, _| dama_kernels::attention(&x[0], &x[1], &x[2], &causal, 1.0 / 128f64.sqrt()),
        )?;
        // the block probe's sequence length and head dimension (12 query / 23 key tiles)
        let causal = AttnMask::causal(736, &[736])?;
        check(
            "attention causal d128 t736",
            &[
                (&[1, 736, 2, 128], 1.0, true),
                (&[1, 736, 2, 128], 1.0, true),
                (&[1, 736, 2, 128], 1.0, true),
            ],
            &|x, _| dama_kernels::attention(&x[0], &x[1], &x[2], &causal, 1.0 / 128f64.sqrt()),
        )?;
        let shared = shared_mask(&[(70, 25, 30), (20, 50, 45)], 130)?;
        check(
            "attention shared-prefix+padding d64 t130",
            &[
                (&[2, 130, 3, 64], 1.0, true),
                (&[2, 130, 3, 64], 1.0, true),
                (&[2, 130, 3, 64], 1.0, true),
            ],
            &|x, _| dama_kernels::attention(&x[0], &x[1], &x[2], &shared, 0.125),
        )?;
        let causal = AttnMask::causal(77, &[77, 50])?;
        check(
            "attention strided qkv d64",
            &[(&[2, 77, 6, 64], 1.0, true)],
            &|x, _| {
                let (q, k, v) = (
                    x[0].narrow(2, 0, 2)?,
                    x[0].narrow(2, 2, 2)?,
                    x[0].narrow(2, 4, 2)?,
                );
                dama_kernels::attention(&q, &k, &v, &causal, 0.125)
            },
        )?;
        let causal = AttnMask::causal(45, &[45])?;
        check(
            "attention unaligned view d64",
            &[
                (&[1, 45, 2, 72], 1.0, true),
                (&[1, 45, 2, 72], 1.0, true),
                (&[1, 45, 2, 72], 1.0, true),
            ],
            &|x, _| {
                let n = |t: &Tensor| t.narrow(3, 2, 64);
                dama_kernels::attention(&n(&x[0])?, &n(&x[1])?, &n(&x[2])?, &causal, 0.125)
            },
        )?;
        check("embedding", &[(&[300, 96], 1.0, true)], &|x, dev| {
            // 700 ids over 300 rows: repeats (atomic adds to one row), unused rows
            let ids: Vec<u32> = (0..700u32).map(|i| i * 7919 % 277).collect();
            let ids = Tensor::from_vec(ids, (7, 100), dev)?;
            dama_kernels::embedding(&ids, &x[0])
        })?;
        check(
            "token_logprobs",
            &[(&[33, 64], 1.0, true), (&[1000, 64], 0.3, true)],
            &|x, dev| {
                let ids: Vec<u32> = (0..33u32).map(|i| i * 577 % 1000).collect();
                let ids = Tensor::from_vec(ids, 33, dev)?;
                dama_kernels::token_logprobs(&x[0], &x[1], &ids, 300)
            },
        )?;
        check(
            "layer_norm (forward)",
            &[
                (&[5, 96], 2.0, false),
                (&[96], 1.0, false),
                (&[96], 1.0, false),
            ],
            &|x, _| dama_kernels::layer_norm(&x[0], &x[1], &x[2], 1e-5),
        )?;
        check(
            "quick_gelu (forward)",
            &[(&[3, 1000], 4.0, false)],
            &|x, _| dama_kernels::quick_gelu(&x[0]),
        )?;
    }
    all_ok &= adamw(gpu, only)?;
    Ok(all_ok)
}

/// The fused AdamW update (`dama_kernels::adamw`), CUDA against CPU: four steps from the same
/// variable and gradients, for f32 and bf16 variables and gradients, weight decay on and off
/// (and with it a clipping coefficient, `AdamWStep::with_grad_scale`);
/// the variable, the master and both moments compared afterwards; with 8-bit moments
/// (`StateFormat::Dynamic8`) their codes and block absmaxes too. Both devices round the same
/// f32 operations in the same order, so the expected error is 0.
fn adamw(gpu: &Device, only: Option<&str>) -> Result<bool> {
    use dama_kernels::adamw::{AdamWState, AdamWStep, Master, Moment, StateFormat};
    let mut all_ok = true;
    let shape: &[usize] = &[3, 100_003];
    let tol = 1e-6;
    // (variable dtype, master layout): the f32 master, and bf16 as its own master with
    // stochastic rounding (the random bits are a hash of (seed, step, index) on both devices)
    let sr_master = Master::StochasticBf16 { seed: 1234 };
    let layouts = [
        (DType::F32, Master::F32, StateFormat::F32),
        (DType::BF16, Master::F32, StateFormat::F32),
        (DType::BF16, sr_master, StateFormat::F32),
        (DType::F32, Master::F32, StateFormat::Dynamic8),
        (DType::BF16, Master::F32, StateFormat::Dynamic8),
        (DType::BF16, sr_master, StateFormat::Dynamic8),
    ];
    for (var_dtype, master, format) in layouts {
        for grad_dtype in [DType::F32, DType::BF16] {
            for wd in [0.0, 0.01] {
                let sr = if matches!(master, Master::F32) {
                    ""
                } else {
                    " master bf16-sr"
                };
                // the weight-decay cases also scale the gradient (clipping's coefficient)
                let clip = (wd != 0.0).then_some(0.37);
                let eight = if format == StateFormat::Dynamic8 {
                    " 8bit"
                } else {
                    ""
                };
                let name = format!(
                    "adamw var {var_dtype:?}{sr}{eight} grad {grad_dtype:?} wd {wd}{}",
                    clip.map_or(String::new(), |c| format!(" clip {c}"))
                );
                if only.is_some_and(|p| !name.starts_with(p)) {
                    continue;
                }
                let run = |dev: &Device| -> Result<Vec<Tensor>> {
                    let var = Var::from_tensor(&randn(1, shape, 1.0, var_dtype, dev)?)?;
                    let state = AdamWState::with_options(var.as_tensor(), master, format)?;
                    for t in 1..=4u64 {
                        let g = randn(10 + t, shape, 0.1 * t as f64, grad_dtype, dev)?;
                        let mut step = AdamWStep::new(1e-3 * t as f64, 0.9, 0.999, 1e-8, wd, t);
                        if let Some(c) = clip {
                            step = step.with_grad_scale(c);
                        }
                        state.update(&var, &g, &step)?;
                    }
                    let mut out = vec![
                        var.as_tensor().clone(),
                        state.exp_avg()?,
                        state.exp_avg_sq()?,
                    ];
                    out.extend(state.master()?);
                    for m in [Moment::ExpAvg, Moment::ExpAvgSq] {
                        out.extend(
                            state
                                .codes(m)?
                                .map(|c| c.to_dtype(DType::F32))
                                .transpose()?,
                        );
                        out.extend(state.absmax(m)?);
                    }
                    Ok(out)
                };
                let errs = run(&Device::Cpu).and_then(|c| {
                    let g = run(gpu)?;
                    c.iter()
                        .zip(&g)
                        .map(|(c, g)| rel_err(g, c))
                        .collect::<Result<Vec<_>>>()
                });
                let (errs, err) = match errs {
                    Ok(e) => (e, None),
                    Err(e) => (vec![f64::INFINITY], Some(e.to_string())),
                };
                let ok = err.is_none() && errs.iter().all(|&e| e <= tol);
                all_ok &= ok;
                // out_err: the variable; grad_errs: exp_avg, exp_avg_sq (, master)
                let mut line = json!({"check": name, "dtype": format!("{var_dtype:?}"),
                                      "inputs": [shape], "out_err": errs[0],
                                      "grad_errs": errs[1..], "tol": tol, "ok": ok});
                if let Some(e) = err {
                    line["error"] = json!(e);
                }
                println!("{line}");
            }
        }
    }
    Ok(all_ok)
}

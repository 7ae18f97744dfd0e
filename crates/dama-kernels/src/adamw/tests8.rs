//! The 8-bit moments: the golden trajectory of `scripts/golden_quant8.py`, every layout
//! against a plain loop over dequantise / update / requantise, the f32 fallback of small
//! variables, and the state's views and setters.

use candle_core::{DType, Device, Tensor, Var};
use half::bf16;

use super::*;
use crate::quant8::fixture::{f32s, load, u8s};
use crate::quant8::{self, BLOCK, QMap};

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

fn vec_f32(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn codes(s: &AdamWState, m: Moment) -> Vec<u8> {
    s.codes(m).unwrap().unwrap().to_vec1().unwrap()
}

fn absmax(s: &AdamWState, m: Moment) -> Vec<f32> {
    s.absmax(m).unwrap().unwrap().to_vec1().unwrap()
}

/// The reference's three steps of 8-bit AdamW on an f32 variable (weight decay, a gradient
/// scale on step 3, gradients over five decades), bit for bit: weights, codes and absmaxes.
#[test]
fn eight_bit_steps_equal_the_numpy_reference() {
    let g = load();
    let case = &g["adamw8"];
    let n = case["n"].as_u64().unwrap() as usize;
    let dev = Device::Cpu;
    let var = Var::from_tensor(&Tensor::from_vec(f32s(&case["p0"]), n, &dev).unwrap()).unwrap();
    let state =
        AdamWState::with_options(var.as_tensor(), Master::F32, StateFormat::Dynamic8).unwrap();
    assert_eq!(state.format(), StateFormat::Dynamic8);
    let hp = |k: &str| case[k].as_f64().unwrap();
    for (t, want) in case["steps"].as_array().unwrap().iter().enumerate() {
        let t = t as u64 + 1;
        let grad = Tensor::from_vec(f32s(&case["grads"][t as usize - 1]), n, &dev).unwrap();
        let mut step = AdamWStep::new(
            hp("lr"),
            hp("beta1"),
            hp("beta2"),
            hp("eps"),
            hp("weight_decay"),
            t,
        );
        if let Some(c) = want["scale"].as_f64() {
            step = step.with_grad_scale(c);
        }
        state.update(&var, &grad, &step).unwrap();
        assert_eq!(
            bits(&vec_f32(var.as_tensor())),
            bits(&f32s(&want["p"])),
            "weights, step {t}"
        );
        for (m, key) in [(Moment::ExpAvg, "m"), (Moment::ExpAvgSq, "v")] {
            assert_eq!(
                bits(&absmax(&state, m)),
                bits(&f32s(&want[format!("{key}_absmax")])),
                "{key} absmax, step {t}"
            );
            let (got, exp) = (codes(&state, m), u8s(&want[format!("{key}_codes")]));
            let wrong = got.iter().zip(&exp).filter(|(a, b)| a != b).count();
            assert_eq!(wrong, 0, "{key}: {wrong} codes differ at step {t}");
        }
    }
}

/// A plain loop: dequantise whole moments, the f32 update per element, quantise again.
struct Plain {
    master: Vec<f32>,
    m: (Vec<u8>, Vec<f32>),
    v: (Vec<u8>, Vec<f32>),
}

impl Plain {
    fn new(init: &[f32]) -> Self {
        let n = init.len();
        Self {
            master: init.to_vec(),
            m: quant8::quantize(QMap::Signed, &vec![0.0; n]),
            v: quant8::quantize(QMap::Unsigned, &vec![0.0; n]),
        }
    }

    /// One step; `store` rounds the new weight of element `i` as the variable holds it.
    fn step(&mut self, g: &[f32], s: &AdamWStep, store: impl Fn(f32, usize) -> f32) {
        let mut m = quant8::dequantize(QMap::Signed, &self.m.0, &self.m.1);
        let mut v = quant8::dequantize(QMap::Unsigned, &self.v.0, &self.v.1);
        for i in 0..g.len() {
            let x = s.apply(self.master[i], &mut m[i], &mut v[i], g[i]);
            self.master[i] = store(x, i);
        }
        self.m = quant8::quantize(QMap::Signed, &m);
        self.v = quant8::quantize(QMap::Unsigned, &v);
    }
}

/// Every layout (f32 variable; bf16 with an f32 master; bf16 as its own master, rounded
/// stochastically) and gradient dtype, several rayon tasks and a partial last block, against
/// [`Plain`]: the same bits.
#[test]
fn eight_bit_layouts_equal_a_plain_loop() {
    let dev = Device::Cpu;
    let n = 3 * BLOCK + 777;
    let init = Tensor::randn(0f32, 1.0, n, &dev).unwrap();
    let layouts = [
        (DType::F32, Master::F32),
        (DType::BF16, Master::F32),
        (DType::BF16, Master::StochasticBf16 { seed: 5 }),
    ];
    for (dtype, master) in layouts {
        for grad_dtype in [DType::F32, DType::BF16] {
            let var = Var::from_tensor(&init.to_dtype(dtype).unwrap()).unwrap();
            let state =
                AdamWState::with_options(var.as_tensor(), master, StateFormat::Dynamic8).unwrap();
            let mut plain = Plain::new(&vec_f32(var.as_tensor()));
            let sr = state.sr_seed();
            for t in 1..=4u64 {
                // a zero block (embedding rows no token used) and magnitudes over decades
                let scale: Vec<f32> = (0..n)
                    .map(|i| {
                        if i / BLOCK == 1 {
                            0.0
                        } else {
                            10f32.powi(-((i % 7) as i32))
                        }
                    })
                    .collect();
                let noise = Tensor::randn(0f32, 1.0, n, &dev).unwrap();
                let g = (noise * Tensor::from_vec(scale, n, &dev).unwrap())
                    .unwrap()
                    .to_dtype(grad_dtype)
                    .unwrap();
                let step = AdamWStep::new(1e-3, 0.9, 0.999, 1e-8, 0.01, t).with_grad_scale(0.5);
                state.update(&var, &g, &step).unwrap();
                let key = sr.map(|seed| sr_key(seed, t));
                plain.step(&vec_f32(&g), &step, |x, i| match key {
                    Some(k) => stochastic_bf16(x, sr_bits(k, i as u64)).to_f32(),
                    None => x,
                });
                let what = format!("{dtype:?} {master:?} grad {grad_dtype:?} step {t}");
                assert_eq!(codes(&state, Moment::ExpAvg), plain.m.0, "m codes {what}");
                assert_eq!(codes(&state, Moment::ExpAvgSq), plain.v.0, "v codes {what}");
                assert_eq!(bits(&absmax(&state, Moment::ExpAvg)), bits(&plain.m.1));
                assert_eq!(bits(&absmax(&state, Moment::ExpAvgSq)), bits(&plain.v.1));
                let weights: Vec<f32> = match state.master().unwrap() {
                    Some(m) => vec_f32(&m),
                    None => vec_f32(var.as_tensor()),
                };
                assert_eq!(bits(&weights), bits(&plain.master), "weights {what}");
                if dtype == DType::BF16 {
                    let rounded: Vec<f32> = plain
                        .master
                        .iter()
                        .map(|&x| bf16::from_f32(x).to_f32())
                        .collect();
                    assert_eq!(bits(&vec_f32(var.as_tensor())), bits(&rounded));
                }
            }
        }
    }
}

#[test]
fn small_variables_keep_f32_moments_and_the_bytes_shrink() {
    let dev = Device::Cpu;
    let small = Var::zeros(quant8::MIN_8BIT_SIZE - 1, DType::BF16, &dev).unwrap();
    let s =
        AdamWState::with_options(small.as_tensor(), Master::F32, StateFormat::Dynamic8).unwrap();
    assert_eq!(s.format(), StateFormat::F32);
    assert!(s.codes(Moment::ExpAvg).unwrap().is_none());
    let n = 10 * BLOCK;
    let big = Var::zeros(n, DType::BF16, &dev).unwrap();
    let f32_state =
        AdamWState::with_options(big.as_tensor(), Master::F32, StateFormat::F32).unwrap();
    let eight =
        AdamWState::with_options(big.as_tensor(), Master::F32, StateFormat::Dynamic8).unwrap();
    // master 4 + moments 8 bytes per value, against master 4 + codes 2 + absmaxes
    assert_eq!(f32_state.bytes(), 12 * n);
    assert_eq!(eight.bytes(), 6 * n + 2 * 4 * 10);
    let sr = AdamWState::with_options(
        big.as_tensor(),
        Master::StochasticBf16 { seed: 1 },
        StateFormat::Dynamic8,
    )
    .unwrap();
    assert_eq!(sr.bytes(), 2 * n + 2 * 4 * 10);
    // a fresh state reads back as zeros
    assert!(vec_f32(&eight.exp_avg().unwrap()).iter().all(|&x| x == 0.0));
}

#[test]
fn eight_bit_views_and_setters() {
    let dev = Device::Cpu;
    let n = BLOCK + 100;
    let var = Var::from_tensor(&Tensor::randn(0f32, 1.0, n, &dev).unwrap()).unwrap();
    let s = AdamWState::with_options(var.as_tensor(), Master::F32, StateFormat::Dynamic8)
        .unwrap_or_else(|e| panic!("{e}"));
    // under the 8-bit threshold: f32 after all
    assert_eq!(s.format(), StateFormat::F32);
    let n = 2 * BLOCK + 100;
    let var = Var::from_tensor(&Tensor::randn(0f32, 1.0, n, &dev).unwrap()).unwrap();
    let s = AdamWState::with_options(var.as_tensor(), Master::F32, StateFormat::Dynamic8).unwrap();
    let values = (Tensor::randn(0f32, 1.0, n, &dev).unwrap() * 1e-3).unwrap();
    s.set_exp_avg(&values).unwrap();
    let (want_codes, want_absmax) = quant8::quantize(QMap::Signed, &vec_f32(&values));
    assert_eq!(codes(&s, Moment::ExpAvg), want_codes);
    assert_eq!(absmax(&s, Moment::ExpAvg), want_absmax);
    let back = vec_f32(&s.exp_avg().unwrap());
    assert_eq!(
        back,
        quant8::dequantize(QMap::Signed, &want_codes, &want_absmax)
    );
    // codes and absmaxes copied exactly into another state (what a resume does)
    let other =
        AdamWState::with_options(var.as_tensor(), Master::F32, StateFormat::Dynamic8).unwrap();
    for m in [Moment::ExpAvg, Moment::ExpAvgSq] {
        other.set_codes(m, &s.codes(m).unwrap().unwrap()).unwrap();
        other.set_absmax(m, &s.absmax(m).unwrap().unwrap()).unwrap();
        assert_eq!(codes(&other, m), codes(&s, m));
    }
    // wrong sizes and dtypes are refused, naming the part
    let err = s
        .set_codes(
            Moment::ExpAvgSq,
            &Tensor::zeros(3, DType::U8, &dev).unwrap(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("exp_avg_sq codes"), "{err}");
    assert!(
        s.set_codes(Moment::ExpAvg, &Tensor::zeros(n, DType::F32, &dev).unwrap())
            .is_err()
    );
    let f32_state = AdamWState::new(var.as_tensor()).unwrap();
    assert!(
        f32_state
            .set_absmax(Moment::ExpAvg, &Tensor::zeros(3, DType::F32, &dev).unwrap())
            .is_err()
    );
}

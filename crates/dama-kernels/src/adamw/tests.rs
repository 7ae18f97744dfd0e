use super::cpu::CHUNK;
use super::*;
use candle_core::{Device, Var};

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Several steps of the fused update against the composed candle ops, bit for bit; with
/// `clip`, the fused update scales the gradient itself and the composition is fed the
/// f32 gradient times `clip` (what clipping did before it moved into the update).
fn fused_equals_composed(var_dtype: DType, grad_dtype: DType, wd: f64) {
    fused_equals_composed_clipped(var_dtype, grad_dtype, wd, None)
}

fn fused_equals_composed_clipped(var_dtype: DType, grad_dtype: DType, wd: f64, clip: Option<f64>) {
    let dev = Device::Cpu;
    // more than one rayon chunk, not a multiple of it
    let shape = (3, CHUNK / 2 + 17);
    let init = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
    let var = Var::from_tensor(&init.to_dtype(var_dtype).unwrap()).unwrap();
    let state = AdamWState::new(var.as_tensor()).unwrap();
    assert_eq!(state.has_master(), var_dtype != DType::F32);
    // a copy: the update writes the variable in place
    let mut master = var
        .as_tensor()
        .to_dtype(DType::F32)
        .unwrap()
        .copy()
        .unwrap();
    let mut m = Tensor::zeros(shape, DType::F32, &dev).unwrap();
    let mut v = m.clone();
    let hp = (0.9, 0.999, 1e-8, wd);
    for t in 1..=5u64 {
        let lr = 1e-3 * t as f64;
        let g = (Tensor::randn(0f32, 1.0, shape, &dev).unwrap() * (0.1 * t as f64))
            .unwrap()
            .to_dtype(grad_dtype)
            .unwrap();
        let mut step = AdamWStep::new(lr, hp.0, hp.1, hp.2, hp.3, t);
        let mut g32 = g.to_dtype(DType::F32).unwrap();
        if let Some(c) = clip {
            step = step.with_grad_scale(c);
            g32 = (g32 * c).unwrap();
        }
        state.update(&var, &g, &step).unwrap();
        (master, m, v) = reference_update(&master, &m, &v, &g32, lr, hp, t).unwrap();
        let what = format!("{var_dtype:?}/{grad_dtype:?} wd {wd} clip {clip:?} step {t}");
        assert_eq!(max_diff(&state.exp_avg().unwrap(), &m), 0.0, "m {what}");
        assert_eq!(max_diff(&state.exp_avg_sq().unwrap(), &v), 0.0, "v {what}");
        let got = state
            .master()
            .unwrap()
            .unwrap_or_else(|| var.as_tensor().clone());
        assert_eq!(max_diff(&got, &master), 0.0, "master {what}");
        let rounded = master.to_dtype(var_dtype).unwrap();
        assert_eq!(max_diff(var.as_tensor(), &rounded), 0.0, "var {what}");
    }
}

#[test]
fn f32_variables() {
    fused_equals_composed(DType::F32, DType::F32, 0.0);
    fused_equals_composed(DType::F32, DType::F32, 0.1);
    fused_equals_composed(DType::F32, DType::BF16, 0.1);
}

#[test]
fn bf16_variables() {
    fused_equals_composed(DType::BF16, DType::F32, 0.0);
    fused_equals_composed(DType::BF16, DType::F32, 0.1);
    fused_equals_composed(DType::BF16, DType::BF16, 0.0);
}

#[test]
fn a_gradient_scale_equals_scaling_the_f32_gradient_first() {
    fused_equals_composed_clipped(DType::F32, DType::F32, 0.0, Some(0.37));
    fused_equals_composed_clipped(DType::BF16, DType::BF16, 0.1, Some(0.0123));
    fused_equals_composed_clipped(DType::BF16, DType::F32, 0.0, Some(1.0 / 3.0));
}

#[test]
fn f16_and_f64_variables() {
    fused_equals_composed(DType::F16, DType::F32, 0.1);
    fused_equals_composed(DType::F64, DType::F32, 0.1);
}

#[test]
fn state_views_and_setters() {
    let dev = Device::Cpu;
    let init = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &dev).unwrap();
    let var = Var::from_tensor(&init.to_dtype(DType::BF16).unwrap()).unwrap();
    let s = AdamWState::new(var.as_tensor()).unwrap();
    assert_eq!(s.buffer().dims(), &[12]);
    let x = Tensor::new(&[[5f32, 6.0], [7.0, 8.0]], &dev).unwrap();
    s.set_exp_avg_sq(&x).unwrap();
    assert_eq!(
        s.exp_avg_sq().unwrap().to_vec2::<f32>().unwrap(),
        x.to_vec2::<f32>().unwrap()
    );
    assert_eq!(
        s.master().unwrap().unwrap().to_vec2::<f32>().unwrap(),
        [[1.0, 2.0], [3.0, 4.0]]
    );
    // a state's own view copied onto itself
    s.set_exp_avg(&s.exp_avg_sq().unwrap()).unwrap();
    assert_eq!(max_diff(&s.exp_avg().unwrap(), &x), 0.0);
    assert!(
        s.set_master(&Tensor::zeros(3, DType::F32, &dev).unwrap())
            .is_err()
    );
    // an empty variable: nothing to do
    let empty = Var::zeros(0, DType::F32, &dev).unwrap();
    let se = AdamWState::new(empty.as_tensor()).unwrap();
    let step = AdamWStep::new(1e-3, 0.9, 0.999, 1e-8, 0.0, 1);
    se.update(&empty, &Tensor::zeros(0, DType::F32, &dev).unwrap(), &step)
        .unwrap();
}

#[test]
fn stochastic_rounding_is_unbiased_and_deterministic() {
    // between the bf16 neighbours 1.0 and 1.0078125, and a negative one
    for x in [
        1.0f32 + 0.3 * 0.007_812_5,
        -3.0 - 0.9 * 0.015_625,
        1e-30 * 1.7,
    ] {
        let lo = bf16::from_f32(x);
        let n = 200_000u64;
        let mut sum = 0f64;
        let mut ups = 0u64;
        for i in 0..n {
            let r = stochastic_bf16(x, sr_bits(sr_key(7, 3), i));
            // always one of the two neighbours
            let (a, b) = (
                bf16::from_bits((x.to_bits() >> 16) as u16),
                bf16::from_bits(((x.to_bits() >> 16) + 1) as u16),
            );
            assert!(r == a || r == b, "{x}: {r} not in {{{a}, {b}}}");
            ups += (r == b) as u64;
            sum += r.to_f64();
        }
        let mean = sum / n as f64;
        let ulp = (bf16::from_bits(lo.to_bits() + 1).to_f64() - lo.to_f64()).abs();
        // the standard error of the mean is at most ulp / (2·√n) ≈ 0.0011 ulp
        assert!(
            (mean - x as f64).abs() < 0.006 * ulp,
            "{x}: mean {mean}, ulp {ulp}, {ups} up"
        );
    }
    // exact bf16 values never move; NaN stays NaN
    for i in 0..1000 {
        assert_eq!(stochastic_bf16(1.5, sr_bits(1, i)).to_f32(), 1.5);
        assert_eq!(stochastic_bf16(-0.0, sr_bits(1, i)).to_bits(), 0x8000);
    }
    assert!(stochastic_bf16(f32::NAN, 0xFFFF).is_nan());
    // deterministic, and different per seed, step and index
    let bits = |seed, t| {
        (0..64)
            .map(|i| sr_bits(sr_key(seed, t), i))
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(5, 9), bits(5, 9));
    assert_ne!(bits(5, 9), bits(6, 9));
    assert_ne!(bits(5, 9), bits(5, 10));
    let b = bits(5, 9);
    assert!(b.iter().any(|&x| x != b[0]));
}

/// The stochastic-bf16 layout: no master, the update of each element is the f32 one from
/// the bf16 value, rounded with the bits of (seed, t, i); deterministic across runs.
#[test]
fn stochastic_bf16_master_update() {
    let dev = Device::Cpu;
    let shape = (2, CHUNK + 5);
    let init = Tensor::randn(0f32, 1.0, shape, &dev)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap();
    let grads: Vec<Tensor> = (1..=3)
        .map(|t| (Tensor::randn(0f32, 1.0, shape, &dev).unwrap() * (0.1 * t as f64)).unwrap())
        .collect();
    let run = |seed: u64| {
        let var = Var::from_tensor(&init).unwrap();
        let state =
            AdamWState::with_master(var.as_tensor(), Master::StochasticBf16 { seed }).unwrap();
        assert!(!state.has_master());
        assert_eq!(state.buffer().elem_count(), 2 * init.elem_count());
        let mut p: Vec<f32> = init
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut m = vec![0f32; p.len()];
        let mut v = vec![0f32; p.len()];
        for (t, g) in grads.iter().enumerate() {
            let t = t as u64 + 1;
            let step = AdamWStep::new(1e-3, 0.9, 0.999, 1e-8, 0.01, t);
            state.update(&var, g, &step).unwrap();
            let gv: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
            let key = sr_key(seed, t);
            for i in 0..p.len() {
                let x = step.apply(p[i], &mut m[i], &mut v[i], gv[i]);
                p[i] = stochastic_bf16(x, sr_bits(key, i as u64)).to_f32();
            }
        }
        let got: Vec<f32> = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(got, p);
        let got_m: Vec<f32> = state
            .exp_avg()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(got_m, m);
        got
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
    // an f32 variable ignores the option; an f16 one keeps its f32 master
    let v32 = Var::zeros(4, DType::F32, &dev).unwrap();
    let s = AdamWState::with_master(v32.as_tensor(), Master::StochasticBf16 { seed: 1 }).unwrap();
    assert!(!s.has_master() && s.sr_seed().is_none());
    let v16 = Var::zeros(4, DType::F16, &dev).unwrap();
    let s = AdamWState::with_master(v16.as_tensor(), Master::StochasticBf16 { seed: 1 }).unwrap();
    assert!(s.has_master() && s.sr_seed().is_none());
}

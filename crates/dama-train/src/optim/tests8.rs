use super::*;
use candle_core::Device;

/// An 8-bit state (with each master layout) saved after a few steps and loaded into a
/// fresh optimizer continues bit for bit: weights, codes and absmaxes.
#[test]
fn eight_bit_state_resumes_bit_exactly() {
    let dev = Device::Cpu;
    let n = 5000;
    let init = Tensor::randn(0f32, 1.0, n, &dev).unwrap();
    for (dtype, master) in [
        (DType::F32, Master::F32),
        (DType::BF16, Master::F32),
        (DType::BF16, Master::StochasticBf16 { seed: 3 }),
    ] {
        let mk = || {
            let big = Var::from_tensor(&init.to_dtype(dtype).unwrap()).unwrap();
            let small = Var::from_tensor(&Tensor::ones(7, dtype, &dev).unwrap()).unwrap();
            AdamW::new(
                vec![
                    Param {
                        name: "big".into(),
                        var: big,
                    },
                    Param {
                        name: "small".into(),
                        var: small,
                    },
                ],
                AdamWConfig {
                    weight_decay: 0.01,
                    master,
                    state: StateFormat::Dynamic8,
                    ..Default::default()
                },
            )
            .unwrap()
        };
        // drawn once: both optimizers must see the same gradients
        let all: Vec<Vec<Option<Tensor>>> = (0..=8u64)
            .map(|k| {
                let g = |len: usize| {
                    (Tensor::randn(0f32, 1.0, len, &dev).unwrap() * (1e-3 * k as f64)).unwrap()
                };
                vec![Some(g(n)), Some(g(7))]
            })
            .collect();
        let grads = |k: u64| all[k as usize].clone();
        let mut a = mk();
        for k in 1..=3 {
            a.step(&grads(k), 1e-3).unwrap();
        }
        let saved: HashMap<String, Tensor> = a
            .state_tensors()
            .into_iter()
            .map(|(k, v)| (k, v.copy().unwrap()))
            .collect();
        assert_eq!(saved["big.exp_avg.codes"].dtype(), DType::U8);
        assert_eq!(saved["big.exp_avg_sq.absmax"].dims(), [3]);
        assert!(
            saved.contains_key("small.exp_avg"),
            "small tensors stay f32"
        );
        assert_eq!(
            saved.contains_key("big.master"),
            a.params()[0].var.dtype() == DType::BF16 && master == Master::F32
        );
        let mut b = mk();
        for (pa, pb) in a.params().iter().zip(b.params()) {
            pb.var.set(pa.var.as_tensor()).unwrap();
        }
        b.load_state(&saved, a.steps()).unwrap();
        let values = |o: &AdamW| -> Vec<Vec<f32>> {
            let st = o.state_tensors();
            let mut keys: Vec<&String> = st.keys().collect();
            keys.sort();
            let mut out: Vec<Vec<f32>> = keys
                .into_iter()
                .map(|k| {
                    st[k]
                        .to_dtype(DType::F32)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap()
                })
                .collect();
            out.extend(o.params().iter().map(|p| {
                p.var
                    .as_tensor()
                    .to_dtype(DType::F32)
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            }));
            out
        };
        assert_eq!(values(&a), values(&b));
        for k in 4..=8 {
            a.step(&grads(k), 1e-3).unwrap();
            b.step(&grads(k), 1e-3).unwrap();
        }
        assert_eq!(values(&a), values(&b), "{dtype:?} {master:?}");
        // an f32-state checkpoint does not load into an 8-bit optimizer: the error names
        // the entry it misses
        let mut f32_opt = AdamW::new(
            vec![Param {
                name: "big".into(),
                var: Var::from_tensor(&init.to_dtype(dtype).unwrap()).unwrap(),
            }],
            AdamWConfig {
                master,
                ..Default::default()
            },
        )
        .unwrap();
        f32_opt.step(&grads(1)[..1], 1e-3).unwrap();
        let err = mk()
            .load_state(&f32_opt.state_tensors(), 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("big.exp_avg.codes"), "{err}");
    }
}

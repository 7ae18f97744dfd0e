//! Helpers for the tests of every op: deterministic random tensors, error measures, gradient
//! comparisons and central finite differences.

use candle_core::{DType, Device, Result, Tensor, Var};

/// SplitMix64: a tiny deterministic generator, so that test inputs never change.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// A tensor of N(0, std²) entries, generated in f64 and cast to `dtype`.
    pub fn randn(&mut self, shape: &[usize], std: f64, dtype: DType) -> Result<Tensor> {
        let n = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| self.normal() * std).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)
    }

    pub fn var(&mut self, shape: &[usize], std: f64, dtype: DType) -> Result<Var> {
        Var::from_tensor(&self.randn(shape, std, dtype)?)
    }
}

/// All entries as f64.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("tensor converts to f64")
}

/// `max |a − b| / max |b|`: an error relative to the tensor's scale, so that entries near zero
/// do not dominate. Both must have the same shape.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let (a, b) = (values(a), values(b));
    let scale = b.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-30);
    let diff = a.iter().zip(&b).fold(0f64, |m, (x, y)| {
        if x.is_nan() || y.is_nan() {
            f64::INFINITY
        } else {
            m.max((x - y).abs())
        }
    });
    diff / scale
}

/// `Σ y ⊙ c`: a scalar objective whose gradient w.r.t. `y` is the fixed cotangent `c`.
pub fn objective(y: &Tensor, c: &Tensor) -> Result<Tensor> {
    (y.to_dtype(DType::F64)? * c.to_dtype(DType::F64)?)?.sum_all()
}

/// The gradient of `objective(f(inputs), c)` for each input.
pub fn grads(y: &Tensor, c: &Tensor, inputs: &[&Var]) -> Result<Vec<Tensor>> {
    let g = objective(y, c)?.backward()?;
    inputs
        .iter()
        .map(|v| {
            g.get(v.as_tensor())
                .cloned()
                .ok_or_else(|| candle_core::Error::Msg("no gradient reached an input".into()))
        })
        .collect()
}

/// Compares the analytic gradient `grad` of `loss(var)` with central finite differences at
/// `samples` entries (the largest one and evenly spaced others); returns the worst error
/// relative to `max(|analytic|, floor·max|analytic|)` (entries far below the largest gradient
/// only carry the differences' rounding noise).
pub fn finite_difference_error(
    var: &Var,
    grad: &Tensor,
    samples: usize,
    h: f64,
    floor: f64,
    loss: &dyn Fn() -> Result<f64>,
) -> Result<f64> {
    let g = values(grad);
    let floor = floor * g.iter().fold(0f64, |m, x| m.max(x.abs()));
    let base = values(var.as_tensor());
    let shape = var.shape().clone();
    let top = (0..g.len())
        .max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
        .unwrap_or(0);
    let mut worst = 0f64;
    for s in 0..samples {
        let idx = (top + s * g.len().div_ceil(samples.max(1)) + s) % g.len();
        let at = |delta: f64| -> Result<f64> {
            let mut v = base.clone();
            v[idx] += delta;
            var.set(&Tensor::from_vec(v, shape.clone(), &Device::Cpu)?)?;
            loss()
        };
        let fd = (at(h)? - at(-h)?) / (2.0 * h);
        var.set(&Tensor::from_vec(
            base.clone(),
            shape.clone(),
            &Device::Cpu,
        )?)?;
        worst = worst.max((fd - g[idx]).abs() / g[idx].abs().max(floor));
    }
    Ok(worst)
}

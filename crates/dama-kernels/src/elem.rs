//! Element types the CPU kernels run on, and the wider type each one accumulates in.
//!
//! Every kernel reads its inputs as `T`, does all arithmetic in `T::Acc` (f32 for bf16, f16
//! and f32; f64 for f64, so that finite-difference checks in f64 stay exact) and rounds to `T`
//! only where transformers' eager LLaMA rounds, so that a bf16 model keeps its oracle's numbers.

use std::iter::Sum;
use std::ops::{AddAssign, MulAssign, SubAssign};

use candle_core::{DType, WithDType};
use half::{bf16, f16};
use num_traits::{Float, FromPrimitive};

/// The accumulation type: f32 or f64.
pub trait Acc:
    Float + FromPrimitive + AddAssign + SubAssign + MulAssign + Sum + WithDType + Send + Sync
{
    fn of(v: f64) -> Self {
        <Self as FromPrimitive>::from_f64(v).expect("f64 converts to any float")
    }
}

impl Acc for f32 {}
impl Acc for f64 {}

/// A floating-point element type the kernels accept.
pub trait Elem: WithDType + Copy + Send + Sync + 'static {
    type Acc: Acc;
    fn acc(self) -> Self::Acc;
    fn from_acc(a: Self::Acc) -> Self;
    /// `from_acc` then `acc`: the value as the model dtype would hold it (the identity for f32
    /// and f64). Used where transformers rounds an intermediate result.
    #[inline]
    fn rnd(a: Self::Acc) -> Self::Acc {
        Self::from_acc(a).acc()
    }
}

impl Elem for f32 {
    type Acc = f32;
    #[inline]
    fn acc(self) -> f32 {
        self
    }
    #[inline]
    fn from_acc(a: f32) -> Self {
        a
    }
    #[inline]
    fn rnd(a: f32) -> f32 {
        a
    }
}

impl Elem for f64 {
    type Acc = f64;
    #[inline]
    fn acc(self) -> f64 {
        self
    }
    #[inline]
    fn from_acc(a: f64) -> Self {
        a
    }
    #[inline]
    fn rnd(a: f64) -> f64 {
        a
    }
}

impl Elem for bf16 {
    type Acc = f32;
    #[inline]
    fn acc(self) -> f32 {
        self.to_f32()
    }
    #[inline]
    fn from_acc(a: f32) -> Self {
        bf16::from_f32(a)
    }
}

impl Elem for f16 {
    type Acc = f32;
    #[inline]
    fn acc(self) -> f32 {
        self.to_f32()
    }
    #[inline]
    fn from_acc(a: f32) -> Self {
        f16::from_f32(a)
    }
}

/// Calls `$f::<T>($args)` with `T` the element type of `$dtype`; other dtypes are an error
/// naming the op.
macro_rules! dispatch {
    ($name:expr, $dtype:expr, $f:ident ( $($arg:expr),* $(,)? )) => {
        match $dtype {
            candle_core::DType::F32 => $f::<f32>($($arg),*),
            candle_core::DType::F64 => $f::<f64>($($arg),*),
            candle_core::DType::BF16 => $f::<half::bf16>($($arg),*),
            candle_core::DType::F16 => $f::<half::f16>($($arg),*),
            dt => candle_core::bail!("{}: unsupported dtype {dt:?} (f32, f64, bf16, f16)", $name),
        }
    };
}
pub(crate) use dispatch;

/// The dtype accumulators of a `dtype` model are kept in.
pub fn acc_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F64 => DType::F64,
        _ => DType::F32,
    }
}

/// `Σ a_i·b_i` in eight independent lanes, so that the compiler vectorises it.
#[inline(always)]
pub(crate) fn dot<A: Acc>(a: &[A], b: &[A]) -> A {
    debug_assert_eq!(a.len(), b.len());
    let mut lanes = [A::zero(); 8];
    let (ca, ra) = (a.chunks_exact(8), a.len() % 8);
    for (x, y) in ca.zip(b.chunks_exact(8)) {
        for k in 0..8 {
            lanes[k] += x[k] * y[k];
        }
    }
    let n = a.len() - ra;
    let mut s = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for i in n..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// `y += alpha·x`.
#[inline(always)]
pub(crate) fn axpy<A: Acc>(alpha: A, x: &[A], y: &mut [A]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

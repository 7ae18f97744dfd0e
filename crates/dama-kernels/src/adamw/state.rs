//! One variable's AdamW state and the in-place op that updates it with the variable.

use std::cell::RefCell;

use candle_core::{CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Result, Tensor, Var, bail};

use super::{AdamWStep, Master, StateFormat, sr_key};
use crate::quant8::{self, QMap};

/// One of the two moments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// `exp_avg`, m: the signed map in 8 bits.
    ExpAvg,
    /// `exp_avg_sq`, v: the unsigned map in 8 bits.
    ExpAvgSq,
}

impl Moment {
    fn index(self) -> usize {
        match self {
            Moment::ExpAvg => 0,
            Moment::ExpAvgSq => 1,
        }
    }

    /// The 8-bit map this moment is stored with.
    pub fn map(self) -> QMap {
        match self {
            Moment::ExpAvg => QMap::Signed,
            Moment::ExpAvgSq => QMap::Unsigned,
        }
    }

    /// The name checkpoints use.
    pub fn name(self) -> &'static str {
        match self {
            Moment::ExpAvg => "exp_avg",
            Moment::ExpAvgSq => "exp_avg_sq",
        }
    }
}

/// One variable's AdamW state, on the variable's device: a flat f32 buffer `[master | exp_avg
/// | exp_avg_sq]` (no master for an f32 variable, nor for bf16 under
/// [`Master::StochasticBf16`]); with [`StateFormat::Dynamic8`] the moments are 8-bit codes
/// in a second, u8 buffer `[exp_avg codes | exp_avg_sq codes]` and the f32 buffer holds
/// `[master | exp_avg absmax | exp_avg_sq absmax]`, one absmax per block of
/// [`quant8::BLOCK`] values.
#[derive(Debug, Clone)]
pub struct AdamWState {
    buf: Tensor,
    /// The 8-bit codes (`Some` only for [`StateFormat::Dynamic8`]).
    codes: Option<Tensor>,
    shape: candle_core::Shape,
    has_master: bool,
    /// The stochastic-rounding seed, for a bf16 variable under [`Master::StochasticBf16`].
    sr_seed: Option<u64>,
}

impl AdamWState {
    /// Fresh state for `var`: zero moments, the master its value in f32 (for a non-f32
    /// variable).
    pub fn new(var: &Tensor) -> Result<Self> {
        Self::with_master(var, Master::F32)
    }

    /// Fresh state for `var` with the master layout `master` and f32 moments: an f32 master
    /// copy in the buffer for a non-f32 variable, except a bf16 one under
    /// [`Master::StochasticBf16`].
    pub fn with_master(var: &Tensor, master: Master) -> Result<Self> {
        Self::with_options(var, master, StateFormat::F32)
    }

    /// Fresh state for `var` with the master layout `master` and the moments in `format`
    /// (8-bit only for variables of at least [`quant8::MIN_8BIT_SIZE`] values; smaller ones
    /// keep f32 moments).
    pub fn with_options(var: &Tensor, master: Master, format: StateFormat) -> Result<Self> {
        let n = var.elem_count();
        let sr_seed = match master {
            Master::StochasticBf16 { seed } if var.dtype() == DType::BF16 => Some(seed),
            _ => None,
        };
        let has_master = var.dtype() != DType::F32 && sr_seed.is_none();
        let eight = format == StateFormat::Dynamic8 && n >= quant8::MIN_8BIT_SIZE;
        let dev = var.device();
        let (moments, codes) = if eight {
            let zero = |m: Moment| Tensor::full(m.map().zero_code(), n, dev);
            let codes = Tensor::cat(&[zero(Moment::ExpAvg)?, zero(Moment::ExpAvgSq)?], 0)?;
            (2 * quant8::blocks(n), Some(codes))
        } else {
            (2 * n, None)
        };
        let zeros = Tensor::zeros(moments, DType::F32, dev)?;
        let buf = if has_master {
            let master = var.flatten_all()?.to_dtype(DType::F32)?;
            Tensor::cat(&[&master, &zeros], 0)?
        } else {
            zeros
        };
        Ok(Self {
            buf,
            codes,
            shape: var.shape().clone(),
            has_master,
            sr_seed,
        })
    }

    /// The stochastic-rounding seed (`Some` for a bf16 variable under
    /// [`Master::StochasticBf16`]: no master copy, the variable rounded stochastically).
    pub fn sr_seed(&self) -> Option<u64> {
        self.sr_seed
    }

    /// Whether the buffer holds a master copy (the variable is not f32).
    pub fn has_master(&self) -> bool {
        self.has_master
    }

    /// How the moments are kept (f32 for a variable under [`quant8::MIN_8BIT_SIZE`] values
    /// whatever was asked).
    pub fn format(&self) -> StateFormat {
        if self.codes.is_some() {
            StateFormat::Dynamic8
        } else {
            StateFormat::F32
        }
    }

    /// The packed f32 buffer (`[master | exp_avg | exp_avg_sq]`, or `[master | absmaxes]`).
    pub fn buffer(&self) -> &Tensor {
        &self.buf
    }

    /// Bytes of state on the device: the f32 buffer and the 8-bit codes.
    pub fn bytes(&self) -> usize {
        4 * self.buf.elem_count() + self.codes.as_ref().map_or(0, Tensor::elem_count)
    }

    fn n(&self) -> usize {
        self.shape.elem_count()
    }

    fn master_len(&self) -> usize {
        if self.has_master { self.n() } else { 0 }
    }

    /// A view (no copy) of the master weights, shaped as the variable; `None` for f32. Views
    /// share the live buffer: the next update changes them.
    pub fn master(&self) -> Result<Option<Tensor>> {
        self.has_master
            .then(|| self.buf.narrow(0, 0, self.n())?.reshape(&self.shape))
            .transpose()
    }

    /// The first moment, shaped as the variable: a view of the live buffer for f32 moments,
    /// a dequantised copy (computed on the host) for 8-bit ones.
    pub fn exp_avg(&self) -> Result<Tensor> {
        self.moment(Moment::ExpAvg)
    }

    /// The second moment, as [`AdamWState::exp_avg`].
    pub fn exp_avg_sq(&self) -> Result<Tensor> {
        self.moment(Moment::ExpAvgSq)
    }

    /// A moment in f32, shaped as the variable (see [`AdamWState::exp_avg`]).
    pub fn moment(&self, which: Moment) -> Result<Tensor> {
        let n = self.n();
        match (self.codes(which)?, self.absmax(which)?) {
            (Some(codes), Some(absmax)) => {
                let codes = codes.to_vec1::<u8>()?;
                let absmax = absmax.to_vec1::<f32>()?;
                let values = quant8::dequantize(which.map(), &codes, &absmax);
                Tensor::from_vec(values, &self.shape, self.buf.device())
            }
            _ => self
                .buf
                .narrow(0, self.master_len() + which.index() * n, n)?
                .reshape(&self.shape),
        }
    }

    /// A view of a moment's 8-bit codes, `(n,)` u8; `None` for f32 moments.
    pub fn codes(&self, which: Moment) -> Result<Option<Tensor>> {
        let n = self.n();
        self.codes
            .as_ref()
            .map(|c| c.narrow(0, which.index() * n, n))
            .transpose()
    }

    /// A view of a moment's block absmaxes, `(blocks,)` f32; `None` for f32 moments.
    pub fn absmax(&self, which: Moment) -> Result<Option<Tensor>> {
        if self.codes.is_none() {
            return Ok(None);
        }
        let b = quant8::blocks(self.n());
        Ok(Some(self.buf.narrow(
            0,
            self.master_len() + which.index() * b,
            b,
        )?))
    }

    /// Copies `src` into `dst` at `at` (flattened), after checking its element count.
    fn copy_into(dst: &Tensor, at: usize, src: &Tensor, len: usize, what: &str) -> Result<()> {
        if src.elem_count() != len {
            bail!(
                "adamw: {what} has {} values, the state holds {len}",
                src.elem_count()
            );
        }
        let src = src
            .to_dtype(dst.dtype())?
            .to_device(dst.device())?
            .flatten_all()?
            .contiguous()?;
        // slice_set refuses a source sharing the buffer (a view of this state): copy it first
        dst.slice_set(&src, 0, at)
            .or_else(|_| dst.slice_set(&src.copy()?, 0, at))
    }

    fn check_shape(&self, src: &Tensor, what: &str) -> Result<()> {
        if src.dims() != self.shape.dims() {
            bail!(
                "adamw: {what} has shape {:?}, the variable {:?}",
                src.dims(),
                self.shape.dims()
            );
        }
        Ok(())
    }

    /// Overwrites the master (copied into the buffer). An error for an f32 variable.
    pub fn set_master(&self, t: &Tensor) -> Result<()> {
        if !self.has_master {
            bail!("adamw: an f32 variable has no master copy");
        }
        self.check_shape(t, "master")?;
        Self::copy_into(&self.buf, 0, t, self.n(), "master")
    }

    /// Overwrites the first moment (copied into the buffer; quantised for 8-bit moments).
    pub fn set_exp_avg(&self, t: &Tensor) -> Result<()> {
        self.set_moment(Moment::ExpAvg, t)
    }

    /// Overwrites the second moment, as [`AdamWState::set_exp_avg`].
    pub fn set_exp_avg_sq(&self, t: &Tensor) -> Result<()> {
        self.set_moment(Moment::ExpAvgSq, t)
    }

    /// Overwrites a moment from f32 values shaped as the variable.
    pub fn set_moment(&self, which: Moment, t: &Tensor) -> Result<()> {
        self.check_shape(t, which.name())?;
        if self.codes.is_some() {
            let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let (codes, absmax) = quant8::quantize(which.map(), &values);
            let dev = self.buf.device();
            self.set_codes(which, &Tensor::from_vec(codes, self.n(), dev)?)?;
            return self.set_absmax(
                which,
                &Tensor::from_vec(absmax, quant8::blocks(self.n()), dev)?,
            );
        }
        let at = self.master_len() + which.index() * self.n();
        Self::copy_into(&self.buf, at, t, self.n(), which.name())
    }

    /// Overwrites a moment's 8-bit codes (`(n,)` u8, e.g. from a checkpoint), exactly.
    pub fn set_codes(&self, which: Moment, t: &Tensor) -> Result<()> {
        let Some(codes) = &self.codes else {
            bail!("adamw: {} is not kept in 8 bits", which.name())
        };
        if t.dtype() != DType::U8 {
            bail!("adamw: 8-bit codes are u8, not {:?}", t.dtype());
        }
        let what = format!("{} codes", which.name());
        Self::copy_into(codes, which.index() * self.n(), t, self.n(), &what)
    }

    /// Overwrites a moment's block absmaxes (`(blocks,)` f32), exactly.
    pub fn set_absmax(&self, which: Moment, t: &Tensor) -> Result<()> {
        if self.codes.is_none() {
            bail!("adamw: {} is not kept in 8 bits", which.name())
        }
        let b = quant8::blocks(self.n());
        let at = self.master_len() + which.index() * b;
        let what = format!("{} absmax", which.name());
        Self::copy_into(&self.buf, at, t, b, &what)
    }

    /// One fused update of `var` with gradient `grad` (f32 or bf16 on CUDA; f32, bf16, f16 or
    /// f64 on the CPU; contiguous or not): the buffers in place, then the variable written in
    /// its dtype, in the same pass (8-bit moments dequantised, updated and requantised in it).
    pub fn update(&self, var: &Var, grad: &Tensor, step: &AdamWStep) -> Result<()> {
        let var = var.as_tensor();
        if var.dims() != self.shape.dims() || grad.dims() != self.shape.dims() {
            bail!(
                "adamw: variable {:?} / gradient {:?}, the state {:?}",
                var.dims(),
                grad.dims(),
                self.shape.dims()
            );
        }
        let want_master = var.dtype() != DType::F32 && self.sr_seed.is_none();
        if self.has_master != want_master || (self.sr_seed.is_some() && var.dtype() != DType::BF16)
        {
            bail!("adamw: state made for another dtype than {:?}", var.dtype());
        }
        if !var.is_contiguous() {
            bail!("adamw: the variable must be contiguous");
        }
        if self.n() == 0 {
            return Ok(());
        }
        let grad = grad.contiguous()?;
        let args = Args {
            step,
            has_master: self.has_master,
            sr_key: self.sr_seed.map(|seed| sr_key(seed, step.t)),
        };
        self.buf.inplace_op2(
            &grad,
            &StateOp {
                var,
                codes: self.codes.as_ref(),
                args,
            },
        )
    }
}

/// What the update kernels need besides the buffers.
#[derive(Clone, Copy)]
pub(crate) struct Args<'a> {
    pub step: &'a AdamWStep,
    pub has_master: bool,
    /// The stochastic-rounding key of this step (bf16 variable without a master).
    pub sr_key: Option<u64>,
}

/// The in-place op on the f32 state buffer (reading the gradient); it runs [`CodesOp`] on the
/// 8-bit codes (if any) and [`VarOp`] on the variable from inside, so that every buffer is
/// writable at once (one tensor, one lock each).
struct StateOp<'a> {
    var: &'a Tensor,
    codes: Option<&'a Tensor>,
    args: Args<'a>,
}

/// The in-place op on the codes, holding what [`StateOp`] has locked.
struct CodesOp<'a> {
    var: &'a Tensor,
    bufs: RefCell<Option<Bufs<'a>>>,
    args: Args<'a>,
}

/// The in-place op on the variable, holding the buffers the ops around it have locked.
struct VarOp<'a> {
    bufs: RefCell<Option<Bufs<'a>>>,
    args: Args<'a>,
}

/// The locked buffers of one device: state, gradient, and the codes once locked.
enum Bufs<'a> {
    Cpu {
        state: (&'a mut CpuStorage, &'a Layout),
        grad: (&'a CpuStorage, &'a Layout),
        codes: Option<(&'a mut CpuStorage, &'a Layout)>,
    },
    #[cfg(feature = "cuda")]
    Cuda {
        state: (&'a mut candle_core::CudaStorage, &'a Layout),
        grad: (&'a candle_core::CudaStorage, &'a Layout),
        codes: Option<(&'a mut candle_core::CudaStorage, &'a Layout)>,
    },
}

impl StateOp<'_> {
    /// Locks the codes next (when there are any), else goes straight to the variable.
    fn next(&self, bufs: Bufs<'_>) -> Result<()> {
        match self.codes {
            Some(codes) => codes.inplace_op1(&CodesOp {
                var: self.var,
                bufs: RefCell::new(Some(bufs)),
                args: self.args,
            }),
            None => self.var.inplace_op1(&VarOp {
                bufs: RefCell::new(Some(bufs)),
                args: self.args,
            }),
        }
    }
}

impl InplaceOp2 for StateOp<'_> {
    fn name(&self) -> &'static str {
        "dama-adamw"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, sl: &Layout, g: &CpuStorage, gl: &Layout) -> Result<()> {
        self.next(Bufs::Cpu {
            state: (s, sl),
            grad: (g, gl),
            codes: None,
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &mut candle_core::CudaStorage,
        sl: &Layout,
        g: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> Result<()> {
        self.next(Bufs::Cuda {
            state: (s, sl),
            grad: (g, gl),
            codes: None,
        })
    }
}

const DEVICES: &str = "adamw: the state, its codes and the variable are on different devices";

impl InplaceOp1 for CodesOp<'_> {
    fn name(&self) -> &'static str {
        "dama-adamw-codes"
    }

    fn cpu_fwd(&self, c: &mut CpuStorage, cl: &Layout) -> Result<()> {
        let Some(Bufs::Cpu { state, grad, .. }) = self.bufs.borrow_mut().take() else {
            bail!("{DEVICES}")
        };
        self.var.inplace_op1(&VarOp {
            bufs: RefCell::new(Some(Bufs::Cpu {
                state,
                grad,
                codes: Some((c, cl)),
            })),
            args: self.args,
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, c: &mut candle_core::CudaStorage, cl: &Layout) -> Result<()> {
        let Some(Bufs::Cuda { state, grad, .. }) = self.bufs.borrow_mut().take() else {
            bail!("{DEVICES}")
        };
        self.var.inplace_op1(&VarOp {
            bufs: RefCell::new(Some(Bufs::Cuda {
                state,
                grad,
                codes: Some((c, cl)),
            })),
            args: self.args,
        })
    }
}

impl InplaceOp1 for VarOp<'_> {
    fn name(&self) -> &'static str {
        "dama-adamw"
    }

    fn cpu_fwd(&self, p: &mut CpuStorage, pl: &Layout) -> Result<()> {
        let Some(Bufs::Cpu { state, grad, codes }) = self.bufs.borrow_mut().take() else {
            bail!("{DEVICES}")
        };
        super::cpu::update(state, grad, codes, (p, pl), &self.args)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, p: &mut candle_core::CudaStorage, pl: &Layout) -> Result<()> {
        let Some(Bufs::Cuda { state, grad, codes }) = self.bufs.borrow_mut().take() else {
            bail!("{DEVICES}")
        };
        crate::cuda::adamw::update(state, grad, codes, (p, pl), &self.args)
    }
}

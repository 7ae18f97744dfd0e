//! The CPU engine: MPI (OpenMPI or MPICH) through the `mpi` crate, so that the data-parallel
//! code runs with several ranks on any machine and in CI. Tensors go through host memory
//! (the engine is for CPUs; on a GPU use NCCL). MPI's own error handler aborts the job on a
//! communication error; a rank that dies or hangs is the [watchdog](super::watchdog)'s.

use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::{Collectives, DistError, Result};

/// An MPI world. Dropping it finalizes MPI (a failed rank exits without dropping it: MPI's
/// finalize waits for the other ranks).
pub struct Mpi {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    _universe: Universe,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mpi(rank {} of {})", self.rank, self.size)
    }
}

fn engine_err(what: impl Into<String>) -> DistError {
    DistError::Engine {
        engine: "mpi",
        what: what.into(),
    }
}

impl Mpi {
    /// Initialises MPI (once per process). MPI is called from the main thread only; the
    /// watchdog's threads never call it.
    pub fn init() -> Result<Self> {
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| engine_err("MPI was already initialised in this process"))?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(Self {
            world,
            rank,
            size,
            _universe: universe,
        })
    }

    /// The MPI processor name (the host name), for finding rank 0.
    pub fn processor_name() -> String {
        mpi::environment::processor_name().unwrap_or_else(|_| "?".into())
    }

    /// `buf` from `root` into every rank's `buf` (same length everywhere).
    pub fn broadcast_bytes(&self, buf: &mut [u8], root: usize) {
        self.world
            .process_at_rank(root as i32)
            .broadcast_into(&mut buf[..]);
    }

    fn err(&self, op: &'static str, what: impl Into<String>) -> DistError {
        DistError::Collective {
            rank: self.rank,
            op,
            what: what.into(),
        }
    }
}

/// A tensor's elements on the host, in a type MPI moves.
enum Host {
    F32(Vec<f32>),
    F64(Vec<f64>),
    U16(Vec<u16>, DType),
    U32(Vec<u32>),
    U8(Vec<u8>),
    I64(Vec<i64>),
}

fn to_host(t: &Tensor) -> Result<Host> {
    let flat = t.flatten_all()?.to_device(&Device::Cpu)?;
    Ok(match t.dtype() {
        DType::F32 => Host::F32(flat.to_vec1()?),
        DType::F64 => Host::F64(flat.to_vec1()?),
        DType::BF16 => Host::U16(
            flat.to_vec1::<bf16>()?
                .iter()
                .map(|x| x.to_bits())
                .collect(),
            DType::BF16,
        ),
        DType::F16 => Host::U16(
            flat.to_vec1::<f16>()?.iter().map(|x| x.to_bits()).collect(),
            DType::F16,
        ),
        DType::U32 => Host::U32(flat.to_vec1()?),
        DType::U8 => Host::U8(flat.to_vec1()?),
        DType::I64 => Host::I64(flat.to_vec1()?),
        other => {
            return Err(DistError::Engine {
                engine: "mpi",
                what: format!("cannot move {other:?} tensors"),
            });
        }
    })
}

fn from_host(h: Host, shape: &[usize], device: &Device) -> Result<Tensor> {
    let t = match h {
        Host::F32(v) => Tensor::from_vec(v, shape, &Device::Cpu)?,
        Host::F64(v) => Tensor::from_vec(v, shape, &Device::Cpu)?,
        Host::U16(v, DType::BF16) => Tensor::from_vec(
            v.into_iter().map(bf16::from_bits).collect::<Vec<_>>(),
            shape,
            &Device::Cpu,
        )?,
        Host::U16(v, _) => Tensor::from_vec(
            v.into_iter().map(f16::from_bits).collect::<Vec<_>>(),
            shape,
            &Device::Cpu,
        )?,
        Host::U32(v) => Tensor::from_vec(v, shape, &Device::Cpu)?,
        Host::U8(v) => Tensor::from_vec(v, shape, &Device::Cpu)?,
        Host::I64(v) => Tensor::from_vec(v, shape, &Device::Cpu)?,
    };
    Ok(t.to_device(device)?)
}

/// Runs `$body` with `$v` bound to the host vector of whatever type `$h` holds, and `$out`
/// to a vector of the same type of `$n` elements; rebuilds a host value from `$out`.
macro_rules! each_type {
    ($h:expr, $n:expr, |$v:ident, $out:ident| $body:block) => {
        match $h {
            Host::F32($v) => {
                let mut $out = vec![0f32; $n];
                $body;
                Host::F32($out)
            }
            Host::F64($v) => {
                let mut $out = vec![0f64; $n];
                $body;
                Host::F64($out)
            }
            Host::U16($v, d) => {
                let mut $out = vec![0u16; $n];
                $body;
                Host::U16($out, d)
            }
            Host::U32($v) => {
                let mut $out = vec![0u32; $n];
                $body;
                Host::U32($out)
            }
            Host::U8($v) => {
                let mut $out = vec![0u8; $n];
                $body;
                Host::U8($out)
            }
            Host::I64($v) => {
                let mut $out = vec![0i64; $n];
                $body;
                Host::I64($out)
            }
        }
    };
}

impl Collectives for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn engine(&self) -> &'static str {
        "mpi"
    }

    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        let n = t.elem_count();
        let out = match to_host(t)? {
            Host::F32(v) => {
                let mut out = vec![0f32; n];
                self.world
                    .all_reduce_into(&v[..], &mut out[..], SystemOperation::sum());
                Host::F32(out)
            }
            Host::F64(v) => {
                let mut out = vec![0f64; n];
                self.world
                    .all_reduce_into(&v[..], &mut out[..], SystemOperation::sum());
                Host::F64(out)
            }
            _ => {
                return Err(self.err(
                    "all_reduce_sum",
                    format!("sums f32 or f64, not {:?}", t.dtype()),
                ));
            }
        };
        from_host(out, t.dims(), t.device())
    }

    fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        let n = t.elem_count() * self.size;
        let out = each_type!(to_host(t)?, n, |v, out| {
            self.world.all_gather_into(&v[..], &mut out[..]);
        });
        from_host(out, &[n], t.device())
    }

    fn broadcast(&self, t: &Tensor, root: usize) -> Result<Tensor> {
        if root >= self.size {
            return Err(self.err(
                "broadcast",
                format!("root {root} is not a rank of {}", self.size),
            ));
        }
        let n = t.elem_count();
        let out = each_type!(to_host(t)?, n, |v, out| {
            out.copy_from_slice(&v);
            self.world
                .process_at_rank(root as i32)
                .broadcast_into(&mut out[..]);
        });
        from_host(out, t.dims(), t.device())
    }

    fn reduce_scatter_sum(&self, t: &Tensor) -> Result<Tensor> {
        let n = t.elem_count();
        if !n.is_multiple_of(self.size) {
            return Err(self.err(
                "reduce_scatter_sum",
                format!("{n} elements do not split into {} equal parts", self.size),
            ));
        }
        let k = n / self.size;
        let out = match to_host(t)? {
            Host::F32(v) => {
                let mut out = vec![0f32; k];
                self.world
                    .reduce_scatter_block_into(&v[..], &mut out[..], SystemOperation::sum());
                Host::F32(out)
            }
            Host::F64(v) => {
                let mut out = vec![0f64; k];
                self.world
                    .reduce_scatter_block_into(&v[..], &mut out[..], SystemOperation::sum());
                Host::F64(out)
            }
            _ => {
                return Err(self.err(
                    "reduce_scatter_sum",
                    format!("sums f32 or f64, not {:?}", t.dtype()),
                ));
            }
        };
        from_host(out, &[k], t.device())
    }

    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }
}

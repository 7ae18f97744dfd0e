//! Data-parallel training: the collectives the trainer needs, behind one small interface
//! ([`Collectives`]) with real engines — [`Single`] (one rank, the default), MPI on CPUs
//! (`mpi` feature) and NCCL on CUDA GPUs (`nccl` feature) — plus what launches ranks
//! ([`launch`]), what stops a job whose rank died or hangs ([`watchdog`]), and the sharded
//! optimizer of ZeRO-1/2 ([`zero`]).
//!
//! The maths follows docs/SPEC.md section 8: the global batch is split across ranks
//! ([`Split`]), the per-pair log-probs are all-gathered so every rank runs `dama_core`'s step
//! on all N pairs, each rank backpropagates its own pairs and the gradients are summed.

pub mod launch;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod overlap;
pub mod setup;
pub mod shard;
pub mod watchdog;
pub mod zero;
pub mod zero_state;

use candle_core::Tensor;

pub use launch::{Launch, Launcher};
pub use setup::{Dist, DistOptions, Engine};
pub use zero::{Optimizer, ZeroStage};

/// Errors of the data-parallel machinery, by role; each names the rank it concerns.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// The launch environment is incomplete or contradicts itself (a variable, its value and
    /// what it conflicts with are named).
    #[error("{0}")]
    Launch(String),
    /// An engine could not start (no MPI in this build, no CUDA device, …).
    #[error("{engine}: {what}")]
    Engine { engine: &'static str, what: String },
    /// A collective operation failed on this rank.
    #[error("rank {rank}: {op} failed: {what}")]
    Collective {
        rank: usize,
        op: &'static str,
        what: String,
    },
    /// Another rank died, hangs or failed; `rank` is that rank.
    #[error("rank {rank} {what}")]
    Peer { rank: usize, what: String },
    /// The ranks' heartbeat connection (the watchdog's) could not be set up or broke.
    #[error("rank {rank}: watchdog connection: {what}")]
    Watchdog { rank: usize, what: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = DistError> = std::result::Result<T, E>;

/// The collectives data-parallel training uses. Every rank calls the same operations in the
/// same order with tensors of the same shape and dtype (as MPI and NCCL require); a tensor is
/// read flat, whatever its shape. Reductions take f32 or f64; gathers and broadcasts any dtype.
pub trait Collectives {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// The engine's name, for messages: `single`, `mpi`, `nccl`.
    fn engine(&self) -> &'static str;
    /// Every rank's `t` summed elementwise; every rank receives the sum (shape of `t`).
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor>;
    /// [`Collectives::all_reduce_sum`] started: the sum is read with [`PendingSum::wait`].
    /// An engine that can run it beside the computation (NCCL, on its own stream) returns
    /// at once; the others compute it here. Every rank starts the same sums in the same order.
    fn start_all_reduce_sum(&self, t: &Tensor) -> Result<PendingSum<'_>> {
        Ok(PendingSum::ready(self.all_reduce_sum(t)?))
    }
    /// Every rank's `t` (the same element count everywhere), concatenated in rank order:
    /// a 1-D tensor of `world_size() · t.elem_count()` elements on every rank.
    fn all_gather(&self, t: &Tensor) -> Result<Tensor>;
    /// Rank `root`'s `t` on every rank (shape of `t`; the others' values are ignored).
    fn broadcast(&self, t: &Tensor, root: usize) -> Result<Tensor>;
    /// `t` (1-D view of `world_size() · k` elements) summed over ranks; rank r receives
    /// elements `r·k .. (r+1)·k` of the sum, as a 1-D tensor of k.
    fn reduce_scatter_sum(&self, t: &Tensor) -> Result<Tensor>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// What the rank is doing now (e.g. `step 12`), for the messages of a hang; no effect on
    /// the maths.
    fn phase(&self, _what: &str) {}
    fn is_main(&self) -> bool {
        self.rank() == 0
    }
}

/// A started sum (see [`Collectives::start_all_reduce_sum`]).
pub struct PendingSum<'a> {
    sum: Tensor,
    /// What makes `sum` readable and checks the collective's outcome.
    finish: Option<Box<dyn FnOnce() -> Result<()> + 'a>>,
}

impl<'a> PendingSum<'a> {
    /// A sum already computed.
    pub fn ready(sum: Tensor) -> Self {
        Self { sum, finish: None }
    }

    /// A sum that `sum` holds once `finish` has succeeded.
    pub fn later(sum: Tensor, finish: Box<dyn FnOnce() -> Result<()> + 'a>) -> Self {
        Self {
            sum,
            finish: Some(finish),
        }
    }

    pub fn wait(self) -> Result<Tensor> {
        if let Some(f) = self.finish {
            f()?;
        }
        Ok(self.sum)
    }
}

/// One process and no communication: every collective is the identity (a sum over one rank
/// is its value). What a run without a launcher uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl Collectives for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn engine(&self) -> &'static str {
        "single"
    }
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }
    fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.flatten_all()?)
    }
    fn broadcast(&self, t: &Tensor, _root: usize) -> Result<Tensor> {
        Ok(t.clone())
    }
    fn reduce_scatter_sum(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.flatten_all()?)
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// How a global batch of `len` pairs is split across `world` ranks: rank r takes the
/// contiguous share `start(r) .. start(r + 1)` with `start(r) = ⌊r·len / world⌋`, so the shares
/// differ by at most one pair and, in rank order, are the batch in its order (the all-gathered
/// log-probs are then in the global order with no permutation). A rank may get no pair (a
/// last batch smaller than the world).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub len: usize,
    pub world: usize,
}

impl Split {
    pub fn new(len: usize, world: usize) -> Self {
        assert!(world > 0, "a world has at least one rank");
        Self { len, world }
    }

    pub fn start(&self, rank: usize) -> usize {
        rank * self.len / self.world
    }

    pub fn range(&self, rank: usize) -> std::ops::Range<usize> {
        self.start(rank)..self.start(rank + 1)
    }

    /// The largest share (what every rank pads its share to for an all-gather).
    pub fn max_share(&self) -> usize {
        self.len.div_ceil(self.world)
    }

    /// Gathers each rank's per-pair values (`local`, its share) into the batch order on every
    /// rank.
    pub fn gather(&self, comm: &dyn Collectives, local: &[f32]) -> Result<Vec<f32>> {
        let rank = comm.rank();
        assert_eq!(
            local.len(),
            self.range(rank).len(),
            "one value per local pair"
        );
        if self.world == 1 {
            return Ok(local.to_vec());
        }
        let pad = self.max_share();
        let mut padded = local.to_vec();
        padded.resize(pad, 0.0);
        let t = Tensor::from_vec(padded, pad, &candle_core::Device::Cpu)?;
        let all = comm.all_gather(&t)?.to_vec1::<f32>()?;
        let mut out = Vec::with_capacity(self.len);
        for r in 0..self.world {
            out.extend_from_slice(&all[r * pad..r * pad + self.range(r).len()]);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_batch_in_order_and_differ_by_at_most_one() {
        for len in 0..20 {
            for world in 1..6 {
                let s = Split::new(len, world);
                let mut next = 0;
                for r in 0..world {
                    let range = s.range(r);
                    assert_eq!(range.start, next);
                    assert!(range.len() <= s.max_share());
                    assert!(range.len() + 1 >= len / world);
                    next = range.end;
                }
                assert_eq!(next, len);
            }
        }
        assert_eq!(Split::new(16, 3).range(0), 0..5);
        assert_eq!(Split::new(16, 3).range(2), 10..16);
        assert_eq!(Split::new(2, 3).range(0), 0..0);
    }

    #[test]
    fn one_rank_is_the_identity() {
        let t = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &candle_core::Device::Cpu).unwrap();
        let s = Single;
        assert_eq!(
            s.all_reduce_sum(&t).unwrap().to_vec2::<f32>().unwrap(),
            t.to_vec2::<f32>().unwrap()
        );
        assert_eq!(
            s.all_gather(&t).unwrap().to_vec1::<f32>().unwrap(),
            [1.0, 2.0, 3.0, 4.0]
        );
        assert_eq!(
            s.reduce_scatter_sum(&t).unwrap().to_vec1::<f32>().unwrap(),
            [1.0, 2.0, 3.0, 4.0]
        );
        assert_eq!(
            Split::new(3, 1).gather(&s, &[1.0, 2.0, 3.0]).unwrap(),
            [1.0, 2.0, 3.0]
        );
    }
}

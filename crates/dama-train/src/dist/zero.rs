//! The optimizer step of a data-parallel run: the ranks' gradients summed, clipped by their
//! global norm, and AdamW applied, with the optimizer state whole on every rank (ZeRO-0) or
//! sharded across them (ZeRO-1/2; the sharding is ZeRO's, Rajbhandari et al. 2020).
//!
//! - ZeRO-0: gradients all-reduced; every rank updates every weight identically.
//! - ZeRO-1: gradients all-reduced; rank r keeps the fp32 masters and moments of its shard
//!   of the [flat layout](super::shard) only, updates that shard, and the updated weights are
//!   all-gathered.
//! - ZeRO-2: as ZeRO-1, but the gradients are reduce-scattered: each rank receives the sum of
//!   its own shard only (fp32) and the global norm is the all-reduced sum of the shards'
//!   squares.
//!
//! The shard's AdamW is [`crate::optim::AdamW`] itself, over one variable per piece (a copy of
//! the weights' slice, named as its parameter), so the update is the same fused kernel
//! elementwise and ZeRO-1/2 give ZeRO-0's weights (f32 masters: bit for bit on the same
//! gradients). With `bf16-sr` masters the stochastic rounding's bits are drawn per piece
//! (the element index restarts in each piece): the same distribution, other bits than ZeRO-0.
//!
//! Summed gradients are accumulated in f32 and kept in the weights' dtype (ZeRO-0/1) as the
//! backward produced them; ZeRO-2's shard stays f32. Communication goes in buckets of at most
//! `bucket` elements so that no full-model f32 copy is ever made.

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::Collectives;
use super::shard::{FlatLayout, Piece};
use crate::error::{Result, TrainError};
use crate::optim::{AdamW, AdamWConfig, Param, clip_grad_norm};

/// How far the optimizer is sharded (`--zero`). Saved as the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum ZeroStage {
    /// The whole optimizer state on every rank.
    #[default]
    Zero0,
    /// The optimizer state sharded.
    Zero1,
    /// The optimizer state and the summed gradients sharded.
    Zero2,
}

dama_core::named!(ZeroStage, "ZeRO stage", {
    Zero0 => "0",
    Zero1 => "1",
    Zero2 => "2",
});

impl From<ZeroStage> for u8 {
    fn from(z: ZeroStage) -> u8 {
        z as u8
    }
}

impl TryFrom<u8> for ZeroStage {
    type Error = String;
    fn try_from(v: u8) -> std::result::Result<Self, String> {
        match v {
            0 => Ok(ZeroStage::Zero0),
            1 => Ok(ZeroStage::Zero1),
            2 => Ok(ZeroStage::Zero2),
            _ => Err(format!("ZeRO stage {v} is not 0, 1 or 2")),
        }
    }
}

impl ZeroStage {
    pub fn is_zero(&self) -> bool {
        *self == ZeroStage::Zero0
    }
}

/// Elements per collective call when not told otherwise (64 MB of f32).
pub const DEFAULT_BUCKET: usize = 1 << 24;

/// AdamW with its state replicated (ZeRO-0) or sharded (ZeRO-1/2).
#[derive(Debug)]
pub enum Optimizer {
    Replicated(AdamW),
    Sharded(ShardedAdamW),
}

/// Clips by the global norm (refusing a non-finite one) and updates: the single-process
/// step's tail, shared by [`crate::step::train_step`] and the replicated optimizer.
pub fn clip_and_update(
    opt: &mut AdamW,
    grads: &[Option<Tensor>],
    lr: f64,
    max_norm: Option<f64>,
) -> Result<f64> {
    let (norm, clip) = clip_grad_norm(grads, max_norm.unwrap_or(f64::INFINITY))?;
    check_norm(norm)?;
    opt.step_clipped(grads, lr, clip)?;
    Ok(norm)
}

fn check_norm(norm: f64) -> Result<()> {
    if norm.is_finite() {
        Ok(())
    } else {
        Err(TrainError::Numerics(format!(
            "the gradient norm is {norm}: the step would corrupt the weights"
        )))
    }
}

impl Optimizer {
    /// The optimizer of `params` for rank `comm.rank()` of `comm.world_size()` at `stage`.
    pub fn new(
        params: Vec<Param>,
        cfg: AdamWConfig,
        stage: ZeroStage,
        comm: &dyn Collectives,
        bucket: usize,
    ) -> Result<Self> {
        Ok(match stage {
            ZeroStage::Zero0 => Optimizer::Replicated(AdamW::new(params, cfg)?),
            _ => Optimizer::Sharded(ShardedAdamW::new(
                params,
                cfg,
                stage,
                comm.rank(),
                comm.world_size(),
                bucket,
            )?),
        })
    }

    pub fn stage(&self) -> ZeroStage {
        match self {
            Optimizer::Replicated(_) => ZeroStage::Zero0,
            Optimizer::Sharded(s) => s.stage,
        }
    }

    /// The full parameters (every rank holds all the weights).
    pub fn params(&self) -> &[Param] {
        match self {
            Optimizer::Replicated(o) => o.params(),
            Optimizer::Sharded(s) => &s.params,
        }
    }

    pub fn steps(&self) -> u64 {
        match self {
            Optimizer::Replicated(o) => o.steps(),
            Optimizer::Sharded(s) => s.shard.steps(),
        }
    }

    /// Bytes of optimizer state on this rank.
    pub fn state_bytes(&self) -> usize {
        match self {
            Optimizer::Replicated(o) => o.state_bytes(),
            Optimizer::Sharded(s) => s.shard.state_bytes(),
        }
    }

    /// One step from this rank's gradients (aligned with [`Optimizer::params`]; `None` where
    /// this rank's backward gave none): sums them over the ranks, clips by the global norm and
    /// updates. Returns the global gradient norm before clipping, the same on every rank.
    pub fn step(
        &mut self,
        grads: Vec<Option<Tensor>>,
        lr: f64,
        max_norm: Option<f64>,
        comm: &dyn Collectives,
        bucket: usize,
    ) -> Result<f64> {
        match self {
            Optimizer::Replicated(opt) => {
                let grads = if comm.world_size() > 1 {
                    all_reduce_grads(opt.params(), grads, comm, bucket)?
                } else {
                    grads
                };
                clip_and_update(opt, &grads, lr, max_norm)
            }
            Optimizer::Sharded(s) => s.step(grads, lr, max_norm, comm),
        }
    }

    /// Whether this stage needs every gradient summed on every rank, so that the sum can be
    /// started inside the backward ([`super::overlap`]): ZeRO-0 and ZeRO-1 (ZeRO-2 sums each
    /// rank's shard only, after the backward).
    pub fn sums_whole_gradients(&self) -> bool {
        self.stage() != ZeroStage::Zero2
    }

    /// [`Optimizer::step`] from gradients already summed over the ranks (by
    /// [`super::overlap::GradOverlap`]); only where [`Optimizer::sums_whole_gradients`].
    pub fn step_summed(
        &mut self,
        grads: Vec<Option<Tensor>>,
        lr: f64,
        max_norm: Option<f64>,
        comm: &dyn Collectives,
    ) -> Result<f64> {
        match self {
            Optimizer::Replicated(opt) => clip_and_update(opt, &grads, lr, max_norm),
            Optimizer::Sharded(s) if s.stage != ZeroStage::Zero2 => {
                s.step_from_sums(grads, lr, max_norm, comm)
            }
            Optimizer::Sharded(_) => Err(TrainError::Settings(
                "ZeRO-2 sums each rank's shard of the gradients; it takes no summed gradients"
                    .into(),
            )),
        }
    }
}

/// Which parameters got a gradient on any rank (a rank with no pair of its own has none).
fn presence(grads: &[Option<Tensor>], comm: &dyn Collectives) -> Result<Vec<bool>> {
    let local: Vec<f32> = grads
        .iter()
        .map(|g| if g.is_some() { 1.0 } else { 0.0 })
        .collect();
    if comm.world_size() == 1 {
        return Ok(local.iter().map(|&x| x > 0.0).collect());
    }
    let n = local.len();
    let t = Tensor::from_vec(local, n, &Device::Cpu)?;
    Ok(comm
        .all_reduce_sum(&t)?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?
        .iter()
        .map(|&x| x > 0.0)
        .collect())
}

/// `grad`'s elements `start .. start + len` as f32 (zeros for a parameter without one here).
fn grad_slice(grad: Option<&Tensor>, start: usize, len: usize, device: &Device) -> Result<Tensor> {
    Ok(match grad {
        Some(g) => g
            .flatten_all()?
            .narrow(0, start, len)?
            .to_dtype(DType::F32)?,
        None => Tensor::zeros(len, DType::F32, device)?,
    })
}

/// Sums every rank's gradients in f32, bucket by bucket; every rank receives the sums, in
/// each weight's dtype. `None` stays only where no rank had a gradient.
pub fn all_reduce_grads(
    params: &[Param],
    grads: Vec<Option<Tensor>>,
    comm: &dyn Collectives,
    bucket: usize,
) -> Result<Vec<Option<Tensor>>> {
    let present = presence(&grads, comm)?;
    let sizes: Vec<usize> = params.iter().map(|p| p.var.elem_count()).collect();
    let layout = FlatLayout::new(sizes, 1);
    let device = params
        .first()
        .map_or(Device::Cpu, |p| p.var.device().clone());
    let mut parts: Vec<Vec<Tensor>> = vec![Vec::new(); params.len()];
    for bucket in layout.buckets(bucket) {
        let pieces: Vec<Piece> = bucket.into_iter().filter(|pc| present[pc.param]).collect();
        if pieces.is_empty() {
            continue;
        }
        let flat = Tensor::cat(
            &pieces
                .iter()
                .map(|pc| grad_slice(grads[pc.param].as_ref(), pc.start, pc.len, &device))
                .collect::<Result<Vec<_>>>()?,
            0,
        )?;
        let summed = comm.all_reduce_sum(&flat)?;
        let mut at = 0;
        for pc in &pieces {
            parts[pc.param].push(summed.narrow(0, at, pc.len)?);
            at += pc.len;
        }
    }
    drop(grads);
    params
        .iter()
        .zip(parts)
        .zip(&present)
        .map(|((p, parts), &present)| {
            if !present {
                return Ok(None);
            }
            let whole = if parts.len() == 1 {
                parts.into_iter().next().expect("one part")
            } else {
                Tensor::cat(&parts, 0)?
            };
            Ok(Some(whole.reshape(p.var.shape())?.to_dtype(p.var.dtype())?))
        })
        .collect()
}

/// ZeRO-1/2: AdamW over this rank's shard of the flat layout.
#[derive(Debug)]
pub struct ShardedAdamW {
    params: Vec<Param>,
    layout: FlatLayout,
    rank: usize,
    /// This rank's pieces, aligned with `shard`'s variables.
    pieces: Vec<Piece>,
    /// AdamW over one variable per piece (a copy of the weights' slice, flat).
    shard: AdamW,
    stage: ZeroStage,
    bucket: usize,
}

impl ShardedAdamW {
    pub fn new(
        params: Vec<Param>,
        cfg: AdamWConfig,
        stage: ZeroStage,
        rank: usize,
        world: usize,
        bucket: usize,
    ) -> Result<Self> {
        let layout = FlatLayout::new(params.iter().map(|p| p.var.elem_count()).collect(), world);
        let pieces = layout.pieces(rank);
        let shard_params = pieces
            .iter()
            .map(|pc| {
                let p = &params[pc.param];
                let slice = p
                    .var
                    .as_tensor()
                    .flatten_all()?
                    .narrow(0, pc.start, pc.len)?
                    .copy()?;
                Ok(Param {
                    name: p.name.clone(),
                    var: Var::from_tensor(&slice)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            shard: AdamW::new(shard_params, cfg)?,
            params,
            layout,
            rank,
            pieces,
            stage,
            bucket: bucket.max(1),
        })
    }

    /// Copies the weights' current values into the shard's variables (after the weights were
    /// set from elsewhere, as a resumed LoRA run's adapters are).
    pub fn refresh_from_weights(&self) -> Result<()> {
        for (pc, sp) in self.pieces.iter().zip(self.shard.params()) {
            let w = self.params[pc.param]
                .var
                .as_tensor()
                .flatten_all()?
                .narrow(0, pc.start, pc.len)?;
            sp.var.set(&w.copy()?)?;
        }
        Ok(())
    }

    /// The whole parameters (whose shards this rank updates).
    pub fn full_params(&self) -> &[Param] {
        &self.params
    }

    pub fn layout(&self) -> &FlatLayout {
        &self.layout
    }

    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// The rank whose shard this is.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The shard's AdamW (its state is what this rank saves).
    pub fn shard(&self) -> &AdamW {
        &self.shard
    }

    pub fn shard_mut(&mut self) -> &mut AdamW {
        &mut self.shard
    }

    fn step(
        &mut self,
        grads: Vec<Option<Tensor>>,
        lr: f64,
        max_norm: Option<f64>,
        comm: &dyn Collectives,
    ) -> Result<f64> {
        if self.stage != ZeroStage::Zero2 {
            let full = if comm.world_size() > 1 {
                all_reduce_grads(&self.params, grads, comm, self.bucket)?
            } else {
                grads
            };
            return self.step_from_sums(full, lr, max_norm, comm);
        }
        let max_norm = max_norm.unwrap_or(f64::INFINITY);
        let (norm, clip, shard_grads) = self.reduce_scatter(grads, max_norm, comm)?;
        self.update_shard(norm, clip, shard_grads, lr, comm)
    }

    /// ZeRO-1: the step from the gradients summed over the ranks (every rank has them all).
    fn step_from_sums(
        &mut self,
        full: Vec<Option<Tensor>>,
        lr: f64,
        max_norm: Option<f64>,
        comm: &dyn Collectives,
    ) -> Result<f64> {
        let max_norm = max_norm.unwrap_or(f64::INFINITY);
        let (norm, clip) = clip_grad_norm(&full, max_norm)?;
        let shard_grads = self
            .pieces
            .iter()
            .map(|pc| {
                full[pc.param]
                    .as_ref()
                    .map(|g| g.flatten_all()?.narrow(0, pc.start, pc.len))
                    .transpose()
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        drop(full);
        self.update_shard(norm, clip, shard_grads, lr, comm)
    }

    /// Updates this rank's shard with its summed gradients and all-gathers the weights.
    fn update_shard(
        &mut self,
        norm: f64,
        clip: Option<f64>,
        shard_grads: Vec<Option<Tensor>>,
        lr: f64,
        comm: &dyn Collectives,
    ) -> Result<f64> {
        check_norm(norm)?;
        self.shard.step_clipped(&shard_grads, lr, clip)?;
        drop(shard_grads);
        self.gather_weights(comm)?;
        Ok(norm)
    }

    /// ZeRO-2: this rank's shard of the summed gradients (f32, per piece), and the global
    /// norm from the shards' squares.
    #[allow(clippy::type_complexity)]
    fn reduce_scatter(
        &self,
        grads: Vec<Option<Tensor>>,
        max_norm: f64,
        comm: &dyn Collectives,
    ) -> Result<(f64, Option<f64>, Vec<Option<Tensor>>)> {
        let present = presence(&grads, comm)?;
        let world = comm.world_size();
        let l = self.layout.shard_len;
        let device = self
            .params
            .first()
            .map_or(Device::Cpu, |p| p.var.device().clone());
        let window = (self.bucket / world).max(1);
        let mut mine: Vec<Tensor> = Vec::new();
        let mut a = 0;
        while a < l {
            let b = (a + window).min(l);
            let mut input = Vec::with_capacity(world);
            for o in 0..world {
                input.push(self.flat_grads(&grads, &present, o * l + a..o * l + b, &device)?);
            }
            let input = Tensor::cat(&input, 0)?;
            mine.push(comm.reduce_scatter_sum(&input)?);
            a = b;
        }
        drop(grads);
        let shard_start = self.rank * l;
        let summed = if mine.is_empty() {
            Tensor::zeros(0, DType::F32, &device)?
        } else {
            Tensor::cat(&mine, 0)?
        };
        let shard_grads: Vec<Option<Tensor>> = self
            .pieces
            .iter()
            .map(|pc| {
                present[pc.param]
                    .then(|| summed.narrow(0, pc.flat_start - shard_start, pc.len))
                    .transpose()
            })
            .collect::<candle_core::Result<_>>()?;
        // Σ of squares of this shard, then over the ranks, in f64.
        let mut sq = Tensor::zeros((), DType::F64, &device)?;
        for g in shard_grads.iter().flatten() {
            sq = (sq + g.sqr()?.sum_all()?.to_dtype(DType::F64)?)?;
        }
        let total = comm.all_reduce_sum(&sq.reshape(1)?)?;
        let norm = total
            .to_device(&Device::Cpu)?
            .to_vec1::<f64>()?
            .first()
            .copied()
            .unwrap_or(0.0)
            .sqrt();
        let coef = max_norm / (norm + 1e-6);
        Ok((norm, (coef < 1.0).then_some(coef), shard_grads))
    }

    /// The flat elements `range` of this rank's gradients (f32; zeros for padding and for
    /// parameters without a gradient here).
    fn flat_grads(
        &self,
        grads: &[Option<Tensor>],
        present: &[bool],
        range: std::ops::Range<usize>,
        device: &Device,
    ) -> Result<Tensor> {
        let mut parts = Vec::new();
        let mut covered = 0;
        for pc in self.layout.pieces_in(range.clone()) {
            let g = if present[pc.param] {
                grads[pc.param].as_ref()
            } else {
                None
            };
            parts.push(grad_slice(g, pc.start, pc.len, device)?);
            covered += pc.len;
        }
        // the pieces tile the range up to the end of the parameters; the rest is padding
        let pad = range.len() - covered;
        if pad > 0 {
            parts.push(Tensor::zeros(pad, DType::F32, device)?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Every rank's updated shard into every rank's weights, window by window.
    fn gather_weights(&self, comm: &dyn Collectives) -> Result<()> {
        let world = comm.world_size();
        let l = self.layout.shard_len;
        let Some(first) = self.params.first() else {
            return Ok(());
        };
        let device = first.var.device().clone();
        let dtype = if self
            .params
            .iter()
            .all(|p| p.var.dtype() == first.var.dtype())
        {
            first.var.dtype()
        } else {
            DType::F32
        };
        let shard_start = self.rank * l;
        let window = (self.bucket / world).max(1);
        let mut a = 0;
        while a < l {
            let b = (a + window).min(l);
            // my values for flat shard_start + a .. shard_start + b, padded with zeros
            let mut mine = Vec::new();
            let mut covered = 0;
            for (pc, v) in self.pieces.iter().zip(self.shard.params()) {
                let (s, e) = (
                    pc.flat_start.max(shard_start + a),
                    (pc.flat_start + pc.len).min(shard_start + b),
                );
                if s < e {
                    mine.push(
                        v.var
                            .as_tensor()
                            .narrow(0, s - pc.flat_start, e - s)?
                            .to_dtype(dtype)?,
                    );
                    covered += e - s;
                }
            }
            let pad = (b - a) - covered;
            if pad > 0 {
                mine.push(Tensor::zeros(pad, dtype, &device)?);
            }
            let all = comm.all_gather(&Tensor::cat(&mine, 0)?)?;
            for o in 0..world {
                let range = o * l + a..o * l + b;
                for pc in self.layout.pieces_in(range.clone()) {
                    let p = &self.params[pc.param];
                    let src = all
                        .narrow(0, o * (b - a) + pc.flat_start - range.start, pc.len)?
                        .to_dtype(p.var.dtype())?
                        .to_device(p.var.device())?
                        .contiguous()?;
                    p.var
                        .as_tensor()
                        .flatten_all()?
                        .slice_set(&src, 0, pc.start)?;
                }
            }
            a = b;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::Single;

    fn params(dtype: DType) -> Vec<Param> {
        [("a", vec![3usize, 4]), ("b", vec![5]), ("c", vec![2, 3])]
            .into_iter()
            .enumerate()
            .map(|(k, (name, shape))| {
                let n: usize = shape.iter().product();
                let v: Vec<f32> = (0..n)
                    .map(|i| ((i * 7 + k * 3) % 11) as f32 * 0.1 - 0.5)
                    .collect();
                let t = Tensor::from_vec(v, shape, &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                Param {
                    name: name.into(),
                    var: Var::from_tensor(&t).unwrap(),
                }
            })
            .collect()
    }

    fn grads(params: &[Param], step: usize) -> Vec<Option<Tensor>> {
        params
            .iter()
            .enumerate()
            .map(|(k, p)| {
                // parameter b gets no gradient on odd steps
                if k == 1 && step % 2 == 1 {
                    return None;
                }
                let n = p.var.elem_count();
                let v: Vec<f32> = (0..n)
                    .map(|i| (((i + step * 5 + k) % 13) as f32 - 6.0) * 0.3)
                    .collect();
                Some(
                    Tensor::from_vec(v, p.var.shape(), &Device::Cpu)
                        .unwrap()
                        .to_dtype(p.var.dtype())
                        .unwrap(),
                )
            })
            .collect()
    }

    fn values(params: &[Param]) -> Vec<Vec<f32>> {
        params
            .iter()
            .map(|p| {
                p.var
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect()
    }

    /// On one rank every stage and every bucket size is the same update, bit for bit (the
    /// shard is everything; the buckets cut the flat vector inside parameters).
    #[test]
    fn sharded_stages_on_one_rank_equal_the_replicated_optimizer() {
        let cfg = AdamWConfig {
            weight_decay: 0.01,
            ..Default::default()
        };
        let mut runs = Vec::new();
        for (stage, bucket) in [
            (ZeroStage::Zero0, DEFAULT_BUCKET),
            (ZeroStage::Zero1, DEFAULT_BUCKET),
            (ZeroStage::Zero1, 5),
            (ZeroStage::Zero2, 7),
            (ZeroStage::Zero2, 1),
        ] {
            let ps = params(DType::F32);
            let mut opt = Optimizer::new(ps.clone(), cfg, stage, &Single, bucket).unwrap();
            let mut norms = Vec::new();
            for step in 0..4 {
                norms.push(
                    opt.step(grads(&ps, step), 1e-2, Some(2.0), &Single, bucket)
                        .unwrap(),
                );
            }
            runs.push((stage, bucket, norms, values(&ps)));
        }
        let (_, _, norms0, w0) = &runs[0];
        for (stage, bucket, norms, w) in &runs[1..] {
            if *stage == ZeroStage::Zero1 {
                assert_eq!(w, w0, "ZeRO-{stage} bucket {bucket}");
            } else {
                // ZeRO-2's norm sums the squares in another order: the clip factor may
                // differ in its last bits
                for (a, b) in w.iter().flatten().zip(w0.iter().flatten()) {
                    assert!(
                        (a - b).abs() <= 1e-6,
                        "ZeRO-{stage} bucket {bucket}: {a} vs {b}"
                    );
                }
            }
            for (a, b) in norms.iter().zip(norms0) {
                assert!((a - b).abs() <= 1e-6 * b, "ZeRO-{stage}: norm {a} vs {b}");
            }
        }
        // and the weights moved
        assert_ne!(w0, &values(&params(DType::F32)));
    }

    #[test]
    fn bf16_weights_are_gathered_in_their_dtype() {
        let cfg = AdamWConfig::default();
        let a = params(DType::BF16);
        let b = params(DType::BF16);
        let mut zero0 = Optimizer::new(a.clone(), cfg, ZeroStage::Zero0, &Single, 4).unwrap();
        let mut zero1 = Optimizer::new(b.clone(), cfg, ZeroStage::Zero1, &Single, 4).unwrap();
        for step in 0..3 {
            zero0.step(grads(&a, step), 1e-2, None, &Single, 4).unwrap();
            zero1.step(grads(&b, step), 1e-2, None, &Single, 4).unwrap();
        }
        assert_eq!(values(&a), values(&b));
        assert_eq!(a[0].var.dtype(), DType::BF16);
    }

    #[test]
    fn a_non_finite_norm_is_refused_before_any_update() {
        let ps = params(DType::F32);
        let before = values(&ps);
        let mut opt = Optimizer::new(
            ps.clone(),
            AdamWConfig::default(),
            ZeroStage::Zero2,
            &Single,
            DEFAULT_BUCKET,
        )
        .unwrap();
        let mut g = grads(&ps, 0);
        g[0] = Some(Tensor::full(f32::NAN, (3, 4), &Device::Cpu).unwrap());
        let e = opt
            .step(g, 1e-2, Some(1.0), &Single, DEFAULT_BUCKET)
            .unwrap_err();
        assert!(e.to_string().contains("gradient norm is NaN"), "{e}");
        assert_eq!(values(&ps), before);
    }

    #[test]
    fn stages_parse_and_serialise_as_numbers() {
        use dama_core::Named;
        for &z in ZeroStage::ALL {
            assert_eq!(z.name().parse::<ZeroStage>().unwrap(), z);
            let json = serde_json::to_string(&z).unwrap();
            assert_eq!(json, z.name());
            assert_eq!(serde_json::from_str::<ZeroStage>(&json).unwrap(), z);
        }
        assert!(serde_json::from_str::<ZeroStage>("3").is_err());
    }
}

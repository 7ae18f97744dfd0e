//! One optimisation step over a global batch of N pairs (docs/SPEC.md, "Gradient accumulation").
//!
//! β_C and the mask depend on the whole global batch, so the batch is scored first; dama-core
//! turns the margins into the loss and ∂L/∂h_i; then the policy is run again with gradients and
//! Σ_i (∂L/∂h_i)·(pw_i − pl_i) is backpropagated: its gradient w.r.t. the weights is exactly the
//! loss's, because β_C and M are constants of the step and the reference terms carry no
//! gradient. When the whole batch fits in one micro-batch the scoring pass is the gradient pass.
//! Otherwise only the kept pairs (∂L/∂h_i ≠ 0) are run again, in micro-batches, with the
//! vision features of the scoring pass reused (the tower is frozen).

use candle_core::{DType, Device, Tensor};
use dama_core::{DamaConfig, DamaState, StepInput, StepOutcome};
use dama_kernels::grad_ready::{GradTracker, on_ready};
use dama_kernels::profile;
use dama_llava::{Images, LlavaModel, PairBatch};

use crate::dist::overlap::{GradOverlap, OverlapCount};
use crate::dist::zero::clip_and_update;
use crate::dist::{Collectives, Optimizer, Single, Split};
use crate::error::{Context, Result, TrainError};
use crate::optim::{AdamW, GradAccumulator, Param};

/// How a step runs, beyond the DAMA maths.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSettings {
    /// Pairs per forward/backward pass.
    pub micro_batch: usize,
    /// Compute the image + question prefix once for both answers.
    pub shared_prefix: bool,
    /// Clip the global gradient norm to this (HF Trainer default 1.0); `None` for no clipping.
    pub max_grad_norm: Option<f64>,
    /// With several ranks and ZeRO-0/1, start summing the decoder layers' gradients over the
    /// ranks inside the backward, bucket by bucket ([`crate::dist::overlap`]); the same sums.
    pub overlap_grads: bool,
}

/// The reference log-probs and data hardness of the batch's pairs, aligned with its pairs.
#[derive(Debug, Clone, Copy)]
pub struct BatchRefs<'a> {
    pub ref_chosen: &'a [f32],
    pub ref_rejected: &'a [f32],
    /// α_D per pair; `None` when the dataset was not scored (modes dpo and mdpo only).
    pub alpha_d: Option<&'a [f32]>,
}

/// What a step did.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub outcome: StepOutcome<f32>,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub policy_chosen: Vec<f32>,
    pub policy_rejected: Vec<f32>,
    /// Tokens the model read in the gradient pass(es) and the scoring pass.
    pub tokens: usize,
    /// How the gradients' sum over the ranks overlapped the backward, when it did.
    pub overlap: Option<OverlapCount>,
}

/// Runs `f`; while `dama_kernels::profile` is on, also times it as the span `name` (with a
/// device synchronisation around it), so that a profile of a step is this very code's.
fn phase<T>(device: &Device, name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    if !profile::enabled() {
        return f();
    }
    let mut out = None;
    profile::span(device, name, || {
        out = Some(f());
        Ok(())
    })?;
    out.expect("the span ran its closure")
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

fn tokens_of(batch: &PairBatch, shared_prefix: bool) -> usize {
    batch
        .pairs
        .iter()
        .map(|p| {
            let both = p.chosen.input_ids.len() + p.rejected.input_ids.len();
            if shared_prefix {
                both - p.shared_prefix
            } else {
                both
            }
        })
        .sum()
}

/// The loss's gradient for `params` over a global batch (not yet clipped), and what the step
/// computed on the way; advances `state` (ḡ, sampling stream).
pub struct Gradients {
    pub grads: Vec<Option<Tensor>>,
    /// Set when `grads` are already summed over the ranks (the sum was started inside the
    /// backward): how that went. Otherwise they are this rank's.
    pub overlap: Option<OverlapCount>,
    pub outcome: StepOutcome<f32>,
    pub policy_chosen: Vec<f32>,
    pub policy_rejected: Vec<f32>,
    pub tokens: usize,
}

/// Runs one optimizer step with learning rate `lr`; advances `state` (ḡ, sampling stream) and
/// the optimizer.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    model: &LlavaModel,
    opt: &mut AdamW,
    batch: &PairBatch,
    refs: BatchRefs<'_>,
    dama: &DamaConfig<f32>,
    state: &mut DamaState<f32>,
    settings: &StepSettings,
    lr: f64,
) -> Result<StepReport> {
    let g = gradients(model, opt.params(), batch, refs, dama, state, settings)?;
    let grad_norm = phase(model.device(), "step.optimizer", || {
        clip_and_update(opt, &g.grads, lr, settings.max_grad_norm)
    })?;
    Ok(StepReport {
        outcome: g.outcome,
        grad_norm,
        policy_chosen: g.policy_chosen,
        policy_rejected: g.policy_rejected,
        tokens: g.tokens,
        overlap: None,
    })
}

/// One data-parallel optimizer step on this rank's share (`batch`, the pairs
/// `split.range(comm.rank())`) of a global batch: [`gradients_of_share`], then the
/// gradients summed over the ranks, clipped and applied by `opt` (replicated or sharded).
/// Every rank returns the same report; `tokens` counts every rank's.
#[allow(clippy::too_many_arguments)]
pub fn train_step_of_share(
    model: &LlavaModel,
    opt: &mut Optimizer,
    batch: &PairBatch,
    refs: BatchRefs<'_>,
    dama: &DamaConfig<f32>,
    state: &mut DamaState<f32>,
    settings: &StepSettings,
    lr: f64,
    comm: &dyn Collectives,
    split: Split,
    bucket: usize,
) -> Result<StepReport> {
    let overlap = (settings.overlap_grads && opt.sums_whole_gradients()).then_some(bucket);
    let g = gradients_of_share(
        model,
        opt.params(),
        batch,
        refs,
        dama,
        state,
        settings,
        comm,
        split,
        overlap,
    )?;
    let device = model.device();
    comm.phase("summing the gradients and updating");
    let grad_norm = phase(device, "step.optimizer", || {
        if g.overlap.is_some() {
            opt.step_summed(g.grads, lr, settings.max_grad_norm, comm)
        } else {
            opt.step(g.grads, lr, settings.max_grad_norm, comm, bucket)
        }
    })?;
    let tokens = if comm.world_size() > 1 {
        let t = Tensor::new(&[g.tokens as f64], &Device::Cpu)?;
        comm.all_reduce_sum(&t)?.to_vec1::<f64>()?[0] as usize
    } else {
        g.tokens
    };
    Ok(StepReport {
        outcome: g.outcome,
        grad_norm,
        policy_chosen: g.policy_chosen,
        policy_rejected: g.policy_rejected,
        tokens,
        overlap: g.overlap,
    })
}

/// See [`Gradients`].
pub fn gradients(
    model: &LlavaModel,
    params: &[Param],
    batch: &PairBatch,
    refs: BatchRefs<'_>,
    dama: &DamaConfig<f32>,
    state: &mut DamaState<f32>,
    settings: &StepSettings,
) -> Result<Gradients> {
    let split = Split::new(batch.len(), 1);
    gradients_of_share(
        model, params, batch, refs, dama, state, settings, &Single, split, None,
    )
}

/// [`gradients`] of this rank's share of a global batch (docs/SPEC.md section 8): `batch`
/// holds the pairs `split.range(comm.rank())` of the global batch, `refs` all of its pairs.
/// The log-probs are all-gathered, so the DAMA step (and `state`) is the global one on every
/// rank; the gradients returned are this rank's, not yet summed over the ranks; `tokens`
/// counts this rank's. With `overlap` (a bucket size) and several ranks, the last pass's
/// backward starts summing the gradients over the ranks ([`GradOverlap`]) and the gradients
/// returned are the sums ([`Gradients::overlap`] says so).
#[allow(clippy::too_many_arguments)]
pub fn gradients_of_share(
    model: &LlavaModel,
    params: &[Param],
    batch: &PairBatch,
    refs: BatchRefs<'_>,
    dama: &DamaConfig<f32>,
    state: &mut DamaState<f32>,
    settings: &StepSettings,
    comm: &dyn Collectives,
    split: Split,
    overlap: Option<usize>,
) -> Result<Gradients> {
    let n = batch.len();
    let overlap = overlap.filter(|_| comm.world_size() > 1);
    let tracker = overlap.map(|_| GradTracker::new());
    let record = |f: &dyn Fn() -> Result<dama_llava::PairLogps>| match &tracker {
        Some(t) => t.record(f),
        None => f(),
    };
    if split.len == 0 || settings.micro_batch == 0 {
        return Err(TrainError::Settings(format!(
            "a step needs pairs and a micro-batch of at least 1 (batch {}, micro-batch {})",
            split.len, settings.micro_batch
        )));
    }
    let share = split.range(comm.rank());
    assert_eq!(share.len(), n, "the batch is this rank's share");
    let device = model.device();
    let mut acc = GradAccumulator::new(params.len());
    // A rank without pairs (a last batch smaller than the world) only takes part in the
    // collectives.
    let features = if n == 0 {
        None
    } else {
        Some(phase(device, "step.vision", || {
            Ok(match &batch.images {
                Images::Pixels(px) => model.image_features(px)?,
                Images::Features(f) => f.clone(),
            }
            .contiguous()?)
        })?)
    };
    let batch = PairBatch {
        images: match &features {
            Some(f) => Images::Features(f.clone()),
            None => batch.images.clone(),
        },
        pairs: batch.pairs.clone(),
    };

    let single_pass = settings.micro_batch >= n;
    let (local_chosen, local_rejected, tracked) = if n == 0 {
        (Vec::new(), Vec::new(), None)
    } else if single_pass {
        let logps = phase(device, "step.forward", || {
            record(&|| Ok(model.pair_logps(&batch, settings.shared_prefix)?))
        })?;
        (
            to_vec(&logps.chosen)?,
            to_vec(&logps.rejected)?,
            Some(logps),
        )
    } else {
        let (mut pc, mut pr) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for start in (0..n).step_by(settings.micro_batch) {
            let len = settings.micro_batch.min(n - start);
            let logps = phase(device, "step.forward", || {
                Ok(model.pair_logps_no_grad(&batch.narrow(start, len)?, settings.shared_prefix)?)
            })?;
            pc.extend(to_vec(&logps.chosen)?);
            pr.extend(to_vec(&logps.rejected)?);
        }
        (pc, pr, None)
    };
    let (policy_chosen, policy_rejected) = if split.world == 1 {
        (local_chosen, local_rejected)
    } else {
        comm.phase("gathering the log-probs");
        (
            split.gather(comm, &local_chosen)?,
            split.gather(comm, &local_rejected)?,
        )
    };

    let input = StepInput {
        policy_chosen: &policy_chosen,
        policy_rejected: &policy_rejected,
        ref_chosen: refs.ref_chosen,
        ref_rejected: refs.ref_rejected,
        alpha_d: refs.alpha_d,
        forced_mask: None,
    };
    let outcome = dama_core::step(dama, state, &input).context("DAMA step")?;
    let mut tokens = tokens_of(&batch, settings.shared_prefix);
    // ∂L/∂h_i of this rank's pairs: the global normalisation is already in them.
    let local_weights = &outcome.grad_margins[share];

    let surrogate = |chosen: &Tensor, rejected: &Tensor, weights: Vec<f32>| -> Result<Tensor> {
        let w = Tensor::from_vec(weights, chosen.dims1()?, device)?;
        Ok(((chosen - rejected)? * w)?.sum_all()?)
    };
    // Whether any rank runs a backward this step (known alike on every rank): when none
    // does, no gradient exists anywhere and nothing is summed inside a backward.
    let any_backward = (0..split.world).any(|r| {
        let range = split.range(r);
        !range.is_empty()
            && (settings.micro_batch >= range.len()
                || outcome.grad_margins[range].iter().any(|&w| w != 0.0))
    });
    let overlap = overlap.filter(|_| any_backward);
    let mut summed = None;
    if let Some(logps) = tracked {
        phase(device, "step.backward", || {
            let loss = surrogate(&logps.chosen, &logps.rejected, local_weights.to_vec())?;
            summed = backward_pass(&loss, params, &mut acc, comm, overlap)?;
            Ok(())
        })?;
    } else if let Some(features) = &features {
        // Only pairs with a non-zero weight move the loss: masked pairs are not run again.
        let kept: Vec<usize> = (0..n).filter(|&i| local_weights[i] != 0.0).collect();
        let passes = kept.len().div_ceil(settings.micro_batch);
        for (k, chunk) in kept.chunks(settings.micro_batch).enumerate() {
            let last = overlap.filter(|_| k + 1 == passes);
            let idx = Tensor::from_vec(
                chunk.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                chunk.len(),
                features.device(),
            )?;
            let micro = PairBatch {
                images: Images::Features(features.index_select(&idx, 0)?),
                pairs: chunk.iter().map(|&i| batch.pairs[i].clone()).collect(),
            };
            tokens += tokens_of(&micro, settings.shared_prefix);
            let logps = phase(device, "step.forward", || {
                let run = || Ok(model.pair_logps(&micro, settings.shared_prefix)?);
                if last.is_some() { record(&run) } else { run() }
            })?;
            let weights = chunk.iter().map(|&i| local_weights[i]).collect();
            phase(device, "step.backward", || {
                let loss = surrogate(&logps.chosen, &logps.rejected, weights)?;
                if let Some(sums) = backward_pass(&loss, params, &mut acc, comm, last)? {
                    summed = Some(sums);
                }
                Ok(())
            })?;
        }
    }
    // A rank without a backward of its own still takes part in every sum, with zeros.
    if let (Some(bucket), None) = (overlap, &summed) {
        summed = Some(GradOverlap::new(params, comm, bucket, acc.sums_mut()).finish(acc.take())?);
    }

    let (grads, overlap) = match summed {
        Some((g, count)) => (g, Some(count)),
        None => (acc.take(), None),
    };
    Ok(Gradients {
        grads,
        overlap,
        outcome,
        policy_chosen,
        policy_rejected,
        tokens,
    })
}

/// One pass's backward into `acc`; with `overlap` (a bucket size: the step's last pass) the
/// gradients' sum over the ranks is started inside it ([`GradOverlap`]) and the step's
/// gradients summed over the ranks are returned.
fn backward_pass(
    loss: &Tensor,
    params: &[Param],
    acc: &mut GradAccumulator,
    comm: &dyn Collectives,
    overlap: Option<usize>,
) -> Result<Option<(Vec<Option<Tensor>>, OverlapCount)>> {
    let Some(bucket) = overlap else {
        acc.add(params, &loss.backward()?)?;
        return Ok(None);
    };
    let mut overlap = GradOverlap::new(params, comm, bucket, acc.sums_mut());
    let store = {
        let mut hook = |p: &Tensor, g: Tensor| overlap.ready(p, g);
        on_ready(&mut hook, || loss.backward())
    };
    let store = match store {
        Ok(s) => s,
        // A collective's error names its rank; candle's backward only kept the message.
        Err(e) => {
            return Err(match overlap.take_failure() {
                Some(d) => d,
                None => e.into(),
            });
        }
    };
    acc.add(params, &store)?;
    drop(store);
    overlap.finish(acc.take()).map(Some)
}

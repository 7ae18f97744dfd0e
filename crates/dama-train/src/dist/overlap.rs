//! The gradient sum over ranks started inside the backward, bucket by bucket (ZeRO-0 and
//! ZeRO-1, whose ranks all need the whole sum), instead of after it.
//!
//! The decoder layers' backward hands each parameter's gradient over the moment it is final
//! (`dama_kernels::grad_ready`), last layer first. [`GradOverlap`] cuts the layers'
//! parameters, in that order, into buckets of at most `bucket` elements (the same cut on
//! every rank, made from the names alone) and starts a bucket's all-reduce as soon as all its
//! parameters are final and every earlier bucket has started: every rank starts the same
//! collectives in the same order, whatever order its backward finishes parameters in, and a
//! rank with no pair to backpropagate starts them all after its (empty) backward with zeros.
//! On NCCL the collective runs on its own stream beside the backward of the layers below; on
//! MPI it runs there and then, which keeps the same order and the same sums. The parameters
//! outside the layers (embeddings, head, final norm, projector) are summed after the
//! backward as before ([`all_reduce_grads`]).
//!
//! The sums are the same as [`all_reduce_grads`]'s: each rank's gradient, in f32, summed over
//! the ranks by the engine, and returned in the weight's dtype.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, TensorId};

use super::shard::{FlatLayout, Piece};
use super::zero::all_reduce_grads;
use super::{Collectives, PendingSum};
use crate::error::{Result, TrainError};
use crate::optim::{Param, add_in_f32};

/// Buckets in flight at once: bounds the f32 sums waiting to be converted back.
const IN_FLIGHT: usize = 2;

/// The layer index in a parameter's name (`….layers.7.…` → 7).
fn layer_of(name: &str) -> Option<usize> {
    let mut parts = name.split('.');
    while let Some(p) = parts.next() {
        if p == "layers" {
            return parts.next()?.parse().ok();
        }
    }
    None
}

/// The parameters of `params` that belong to a decoder layer, last layer first (within a
/// layer in `params`' order): the order their gradients become final.
fn overlap_order(params: &[Param]) -> Vec<usize> {
    let mut order: Vec<(usize, usize)> = params
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((layer_of(&p.name)?, i)))
        .collect();
    order.sort_by_key(|&(layer, i)| (std::cmp::Reverse(layer), i));
    order.into_iter().map(|(_, i)| i).collect()
}

/// How one step's sums went: `buckets` in all, `in_backward` of them started before the
/// backward had finished (the rest after it: a rank with nothing to backpropagate, or layers
/// whose backward is candle's autograd, start theirs at the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OverlapCount {
    pub buckets: usize,
    pub in_backward: usize,
}

struct Started<'a> {
    pieces: Vec<Piece>,
    sum: PendingSum<'a>,
}

/// One step's overlapped gradient sum (see the module's documentation).
pub struct GradOverlap<'a> {
    params: &'a [Param],
    comm: &'a dyn Collectives,
    /// `order[k]` is the parameter at position k of the flat bucketed vector.
    order: Vec<usize>,
    /// Each bucket's pieces, `param` an index into `params`.
    buckets: Vec<Vec<Piece>>,
    /// The buckets each parameter's pieces are in.
    buckets_of: Vec<Vec<usize>>,
    by_id: HashMap<TensorId, usize>,
    /// Sums of the step's earlier passes (taken from the accumulator), then the final local
    /// gradient once the last pass delivered it.
    local: Vec<Option<Tensor>>,
    final_: Vec<bool>,
    /// Parameters of each bucket not final yet.
    waiting: Vec<usize>,
    next: usize,
    started: Vec<Started<'a>>,
    /// The summed parts of each parameter, in the weight's dtype, in flat order.
    parts: Vec<Vec<Tensor>>,
    /// Gradients delivered for parameters outside the buckets (summed after the backward).
    late: Vec<Option<Tensor>>,
    /// The first error of a collective started inside the backward (candle's backward only
    /// carries its message; this keeps the rank it names).
    failed: Option<TrainError>,
    device: Device,
    bucket: usize,
    /// Set once the backward is over ([`GradOverlap::finish`]).
    finishing: bool,
    in_backward: usize,
}

impl<'a> GradOverlap<'a> {
    /// The plan for `params` with buckets of `bucket` elements; `earlier` holds the sums of
    /// the step's earlier passes (aligned with `params`; the entries of bucketed parameters
    /// are taken).
    pub fn new(
        params: &'a [Param],
        comm: &'a dyn Collectives,
        bucket: usize,
        earlier: &mut [Option<Tensor>],
    ) -> Self {
        let order = overlap_order(params);
        let layout = FlatLayout::new(
            order.iter().map(|&i| params[i].var.elem_count()).collect(),
            1,
        );
        // Pieces of the layout index `order`; mapped back to indices into `params`.
        let buckets: Vec<Vec<Piece>> = layout
            .buckets(bucket)
            .into_iter()
            .map(|b| {
                b.into_iter()
                    .map(|pc| Piece {
                        param: order[pc.param],
                        ..pc
                    })
                    .collect()
            })
            .collect();
        let mut buckets_of = vec![Vec::new(); params.len()];
        for (k, b) in buckets.iter().enumerate() {
            for pc in b {
                buckets_of[pc.param].push(k);
            }
        }
        let waiting = buckets.iter().map(|b| b.len()).collect();
        let mut local = vec![None; params.len()];
        for &i in &order {
            local[i] = earlier[i].take();
        }
        Self {
            params,
            comm,
            by_id: params
                .iter()
                .enumerate()
                .map(|(i, p)| (p.var.as_tensor().id(), i))
                .collect(),
            order,
            buckets,
            buckets_of,
            local,
            final_: vec![false; params.len()],
            waiting,
            next: 0,
            started: Vec::new(),
            parts: vec![Vec::new(); params.len()],
            late: vec![None; params.len()],
            failed: None,
            device: params
                .first()
                .map_or(Device::Cpu, |p| p.var.device().clone()),
            bucket: bucket.max(1),
            finishing: false,
            in_backward: 0,
        }
    }

    /// The backward's hook: `grad` is `param`'s final gradient of the last pass.
    pub fn ready(&mut self, param: &Tensor, grad: Tensor) -> candle_core::Result<()> {
        let Some(&i) = self.by_id.get(&param.id()) else {
            candle_core::bail!(
                "a layer delivered the gradient of a tensor the optimizer does not train"
            )
        };
        let total = match self.local[i].take().or_else(|| self.late[i].take()) {
            None => grad,
            Some(earlier) => add_in_f32(&earlier, &grad)?,
        };
        if self.buckets_of[i].is_empty() {
            self.late[i] = Some(total);
            return Ok(());
        }
        self.local[i] = Some(total);
        self.mark_final(i).map_err(|e| {
            let msg = e.to_string();
            self.failed.get_or_insert(e);
            candle_core::Error::Msg(msg)
        })
    }

    fn mark_final(&mut self, i: usize) -> Result<()> {
        if std::mem::replace(&mut self.final_[i], true) {
            return Ok(());
        }
        for k in self.buckets_of[i].clone() {
            self.waiting[k] -= 1;
        }
        while self.next < self.buckets.len() && self.waiting[self.next] == 0 {
            self.start_next()?;
        }
        Ok(())
    }

    /// Starts the next bucket's sum (waiting first for the oldest in flight beyond
    /// [`IN_FLIGHT`]); frees the local gradients it was the last bucket of.
    fn start_next(&mut self) -> Result<()> {
        if self.started.len() >= IN_FLIGHT {
            self.finish_oldest()?;
        }
        let k = self.next;
        let pieces = self.buckets[k].clone();
        let flat = Tensor::cat(
            &pieces
                .iter()
                .map(|pc| {
                    Ok(match &self.local[pc.param] {
                        Some(g) => g
                            .flatten_all()?
                            .narrow(0, pc.start, pc.len)?
                            .to_dtype(DType::F32)?,
                        None => Tensor::zeros(pc.len, DType::F32, &self.device)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            0,
        )?;
        let sum = self.comm.start_all_reduce_sum(&flat)?;
        for pc in &pieces {
            if self.buckets_of[pc.param].last() == Some(&k) {
                self.local[pc.param] = None;
            }
        }
        self.started.push(Started { pieces, sum });
        self.next += 1;
        if !self.finishing {
            self.in_backward += 1;
        }
        Ok(())
    }

    fn finish_oldest(&mut self) -> Result<()> {
        let Started { pieces, sum } = self.started.remove(0);
        let sum = sum.wait()?;
        let mut at = 0;
        for pc in &pieces {
            let dtype = self.params[pc.param].var.dtype();
            self.parts[pc.param].push(sum.narrow(0, at, pc.len)?.to_dtype(dtype)?);
            at += pc.len;
        }
        Ok(())
    }

    /// The error of a collective started inside the backward, if one failed.
    pub fn take_failure(&mut self) -> Option<TrainError> {
        self.failed.take()
    }

    /// After the last pass's backward: the gradients summed over the ranks, aligned with
    /// `params`. `rest` holds the step's other sums (the accumulator's, aligned with
    /// `params`): the parameters outside the buckets, and those of layers whose backward
    /// delivered nothing (candle's autograd layers). `None` stays only where no rank had a
    /// gradient of a parameter outside the buckets.
    pub fn finish(
        mut self,
        mut rest: Vec<Option<Tensor>>,
    ) -> Result<(Vec<Option<Tensor>>, OverlapCount)> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.finishing = true;
        for i in self.order.clone() {
            if !self.final_[i] {
                if let Some(g) = rest[i].take() {
                    self.local[i] = Some(match self.local[i].take() {
                        None => g,
                        Some(e) => add_in_f32(&e, &g)?,
                    });
                }
                self.mark_final(i)?;
            }
        }
        while !self.started.is_empty() {
            self.finish_oldest()?;
        }
        for (i, late) in self.late.iter_mut().enumerate() {
            if let Some(g) = late.take() {
                rest[i] = Some(match rest[i].take() {
                    None => g,
                    Some(r) => add_in_f32(&r, &g)?,
                });
            }
        }
        // The parameters outside the buckets, summed as after any backward.
        let outside: Vec<usize> = (0..self.params.len())
            .filter(|&i| self.buckets_of[i].is_empty())
            .collect();
        let outside_params: Vec<Param> = outside.iter().map(|&i| self.params[i].clone()).collect();
        let outside_grads = outside.iter().map(|&i| rest[i].take()).collect();
        let mut out: Vec<Option<Tensor>> = vec![None; self.params.len()];
        if !outside.is_empty() {
            let summed = all_reduce_grads(&outside_params, outside_grads, self.comm, self.bucket)?;
            for (&i, g) in outside.iter().zip(summed) {
                out[i] = g;
            }
        }
        for &i in &self.order {
            let parts = std::mem::take(&mut self.parts[i]);
            let whole = if parts.len() == 1 {
                parts.into_iter().next().expect("one part")
            } else {
                Tensor::cat(&parts, 0)?
            };
            out[i] = Some(whole.reshape(self.params[i].var.shape())?);
        }
        let count = OverlapCount {
            buckets: self.buckets.len(),
            in_backward: self.in_backward,
        };
        Ok((out, count))
    }
}

//! The KV cache of one decoder layer, in two parts:
//!
//! - the **prefix** (image + prompt): computed once per question by the prefill, one row per
//!   question, `(questions, kv_heads, P, head_dim)`, shared by all of a question's beams;
//! - the **suffix** (generated tokens): one row per sequence (question × beam),
//!   `(rows, kv_heads, capacity, head_dim)`, written in place one position a step and grown
//!   by doubling, reordered when beams change parents.
//!
//! Sharing the prefix is what keeps 3-beam decoding from copying (and reading) the 600-token
//! image prefix three times per step: only the suffix rows follow the beams.

use candle_core::{Result, Tensor};

/// One layer's prefix keys and values, `(questions, kv_heads, P, head_dim)`, contiguous.
#[derive(Clone)]
pub struct PrefixKv {
    pub k: Tensor,
    pub v: Tensor,
}

impl PrefixKv {
    /// From the prefill's keys and values `(questions, P, kv_heads, head_dim)`.
    pub fn new(k: &Tensor, v: &Tensor) -> Result<Self> {
        Ok(Self {
            k: k.transpose(1, 2)?.contiguous()?,
            v: v.transpose(1, 2)?.contiguous()?,
        })
    }

    /// Keeps the questions `keep` (indices into the current rows), in that order.
    pub fn select(&mut self, keep: &Tensor) -> Result<()> {
        self.k = self.k.index_select(keep, 0)?;
        self.v = self.v.index_select(keep, 0)?;
        Ok(())
    }
}

/// One layer's suffix keys and values.
pub struct SuffixKv {
    /// `(rows, kv_heads, capacity, head_dim)`, or `None` before the first token.
    buffers: Option<(Tensor, Tensor)>,
    len: usize,
    /// The most positions it will ever hold (the longest answer allowed).
    max_len: usize,
}

/// Positions a new suffix buffer holds before it first grows.
const INITIAL_CAPACITY: usize = 32;

impl SuffixKv {
    pub fn new(max_len: usize) -> Self {
        Self {
            buffers: None,
            len: 0,
            max_len: max_len.max(1),
        }
    }

    /// Positions written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Appends one position: `k`, `v` `(rows, 1, kv_heads, head_dim)`.
    pub fn push(&mut self, k: &Tensor, v: &Tensor) -> Result<()> {
        let k = k.transpose(1, 2)?.contiguous()?;
        let v = v.transpose(1, 2)?.contiguous()?;
        let (rows, heads, _, d) = k.dims4()?;
        let capacity = self
            .buffers
            .as_ref()
            .map_or(0, |(b, _)| b.dim(2).unwrap_or(0));
        if self.len == capacity {
            let grown = (capacity * 2)
                .max(INITIAL_CAPACITY)
                .min(self.max_len.max(self.len + 1));
            let shape = (rows, heads, grown, d);
            let nk = Tensor::zeros(shape, k.dtype(), k.device())?;
            let nv = Tensor::zeros(shape, v.dtype(), v.device())?;
            if let Some((ok, ov)) = &self.buffers {
                nk.slice_set(ok, 2, 0)?;
                nv.slice_set(ov, 2, 0)?;
            }
            self.buffers = Some((nk, nv));
        }
        let (bk, bv) = self.buffers.as_ref().expect("allocated above");
        bk.slice_set(&k, 2, self.len)?;
        bv.slice_set(&v, 2, self.len)?;
        self.len += 1;
        Ok(())
    }

    /// The written positions, `(rows, kv_heads, len, head_dim)` views.
    pub fn view(&self) -> Result<Option<(Tensor, Tensor)>> {
        match &self.buffers {
            None => Ok(None),
            Some((k, v)) => Ok(Some((k.narrow(2, 0, self.len)?, v.narrow(2, 0, self.len)?))),
        }
    }

    /// Row `i` becomes old row `rows[i]`: beams taking over their parents' history, or
    /// finished sequences leaving the batch.
    pub fn select(&mut self, rows: &Tensor) -> Result<()> {
        if let Some((k, v)) = &self.buffers {
            self.buffers = Some((k.index_select(rows, 0)?, v.index_select(rows, 0)?));
        }
        Ok(())
    }
}

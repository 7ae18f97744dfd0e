//! Attention masks as key spans per query: the keys query `q` of row `r` may attend to are
//! `[lo₀, hi₀) ∪ [lo₁, hi₁)`.
//!
//! Two spans describe every mask the trainer builds: causal with right padding (one span
//! `[0, q + 1)`, none for padding queries) and the shared-prefix layout of `dama-llava`
//! (`[prefix | chosen | rejected]`: the rejected tail sees the prefix and itself,
//! `[0, P) ∪ [R, q + 1)`). Four integers per query replace a dense `t×t` mask, and the kernels
//! iterate over exactly the allowed keys (skipping whole masked blocks on the GPU).

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Tensor, bail};

/// Per-query key spans of a `(rows, seq_len)` batch. Cheap to clone (shared).
#[derive(Clone)]
pub struct AttnMask {
    inner: Arc<Inner>,
}

struct Inner {
    rows: usize,
    seq_len: usize,
    /// `[lo₀, hi₀, lo₁, hi₁]` per (row, query), row-major; `lo₀ ≤ hi₀ ≤ lo₁ ≤ hi₁ ≤ seq_len`,
    /// an empty first span only when the second is empty too.
    spans: Vec<[u32; 4]>,
    /// The spans uploaded to the last device asked for (one upload per forward, not per layer).
    on_device: Mutex<Option<Tensor>>,
}

impl std::fmt::Debug for AttnMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AttnMask({}×{})", self.rows(), self.seq_len())
    }
}

impl AttnMask {
    fn build(rows: usize, seq_len: usize, spans: Vec<[u32; 4]>) -> Self {
        Self {
            inner: Arc::new(Inner {
                rows,
                seq_len,
                spans,
                on_device: Mutex::new(None),
            }),
        }
    }

    /// Causal attention over right-padded rows: query `q < lengths[r]` sees keys `0..=q`;
    /// padding queries see nothing (their output is zero).
    pub fn causal(seq_len: usize, lengths: &[usize]) -> Result<Self> {
        let mut spans = Vec::with_capacity(lengths.len() * seq_len);
        for (r, &len) in lengths.iter().enumerate() {
            if len > seq_len {
                bail!("AttnMask::causal: row {r} has length {len} > seq_len {seq_len}");
            }
            for q in 0..seq_len {
                let hi = if q < len { q as u32 + 1 } else { 0 };
                spans.push([0, hi, hi, hi]);
            }
        }
        Ok(Self::build(lengths.len(), seq_len, spans))
    }

    /// Spans given directly, `[lo₀, hi₀, lo₁, hi₁]` per (row, query). Validated; an empty
    /// first span with a non-empty second is normalised.
    pub fn from_spans(rows: usize, seq_len: usize, mut spans: Vec<[u32; 4]>) -> Result<Self> {
        if spans.len() != rows * seq_len {
            bail!(
                "AttnMask::from_spans: {} spans for {rows} rows × {seq_len} queries",
                spans.len()
            );
        }
        for (i, s) in spans.iter_mut().enumerate() {
            if s[0] == s[1] {
                *s = [s[2], s[3], s[3], s[3]];
            }
            let ok = s[0] <= s[1] && s[1] <= s[2] && s[2] <= s[3] && s[3] as usize <= seq_len;
            if !ok {
                bail!(
                    "AttnMask::from_spans: row {}, query {}: spans {s:?} are not ordered, disjoint and within 0..{seq_len}",
                    i / seq_len.max(1),
                    i % seq_len.max(1)
                );
            }
        }
        Ok(Self::build(rows, seq_len, spans))
    }

    /// Any mask given as a predicate `allowed(row, query, key)`, as long as each query's
    /// allowed keys form at most two contiguous runs.
    pub fn from_fn(
        rows: usize,
        seq_len: usize,
        allowed: impl Fn(usize, usize, usize) -> bool,
    ) -> Result<Self> {
        let mut spans = Vec::with_capacity(rows * seq_len);
        for r in 0..rows {
            for q in 0..seq_len {
                // [lo₀, hi₀, lo₁, hi₁] filled run by run; `runs` counts them (may exceed 2)
                let mut s = [0u32; 4];
                let mut runs = 0usize;
                let mut open: Option<usize> = None;
                for k in 0..=seq_len {
                    let on = k < seq_len && allowed(r, q, k);
                    match (on, open) {
                        (true, None) => open = Some(k),
                        (false, Some(lo)) => {
                            if runs < 2 {
                                s[2 * runs] = lo as u32;
                                s[2 * runs + 1] = k as u32;
                            }
                            runs += 1;
                            open = None;
                        }
                        _ => {}
                    }
                }
                if runs > 2 {
                    bail!(
                        "AttnMask: row {r}, query {q}: the allowed keys form {runs} runs; at most 2 are supported"
                    );
                }
                if runs < 2 {
                    s[2] = s[1];
                    s[3] = s[1];
                }
                spans.push(s);
            }
        }
        Ok(Self::build(rows, seq_len, spans))
    }

    /// Reads an additive mask `(rows, 1, t, t)` or `(rows, t, t)`: 0 where attention is
    /// allowed, ≤ −1e4 (a value whose `exp` vanishes) where it is not. Anything else (a bias
    /// such as ALiBi) is an error: this kernel has no additive term.
    pub fn from_additive(mask: &Tensor) -> Result<Self> {
        let (rows, t) = match mask.dims() {
            &[r, 1, t, t2] | &[r, t, t2] if t == t2 => (r, t),
            d => bail!(
                "AttnMask::from_additive: expected (rows, 1, t, t) or (rows, t, t), got {d:?}"
            ),
        };
        let m: Vec<f32> = mask
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        if let Some(i) = m.iter().position(|&v| v != 0.0 && v > -1e4) {
            let (r, q, k) = (i / (t * t), i / t % t, i % t);
            bail!(
                "AttnMask::from_additive: entry (row {r}, query {q}, key {k}) is {}, neither 0 nor a masking value ≤ -1e4",
                m[i]
            );
        }
        Self::from_fn(rows, t, |r, q, k| m[(r * t + q) * t + k] == 0.0)
    }

    pub fn rows(&self) -> usize {
        self.inner.rows
    }

    pub fn seq_len(&self) -> usize {
        self.inner.seq_len
    }

    /// `[lo₀, hi₀, lo₁, hi₁]` per (row, query).
    pub fn spans(&self) -> &[[u32; 4]] {
        &self.inner.spans
    }

    /// Whether query `q` of row `r` may attend to key `k`.
    pub fn allowed(&self, r: usize, q: usize, k: usize) -> bool {
        let s = self.inner.spans[r * self.inner.seq_len + q];
        let k = k as u32;
        (s[0] <= k && k < s[1]) || (s[2] <= k && k < s[3])
    }

    /// The dense additive mask `(rows, t, t)`: 0 where allowed, `masked` elsewhere.
    pub fn to_additive(&self, masked: f32) -> Vec<f32> {
        let t = self.seq_len();
        let mut m = vec![masked; self.rows() * t * t];
        for (i, s) in self.spans().iter().enumerate() {
            let out = &mut m[i * t..(i + 1) * t];
            out[s[0] as usize..s[1] as usize].fill(0.0);
            out[s[2] as usize..s[3] as usize].fill(0.0);
        }
        m
    }

    /// The spans as a `(rows·t, 4)` u32 tensor on `device`, uploaded once and reused.
    pub fn spans_on(&self, device: &Device) -> Result<Tensor> {
        let mut cached = self.inner.on_device.lock().expect("mask cache lock");
        if let Some(t) = cached.as_ref()
            && t.device().same_device(device)
        {
            return Ok(t.clone());
        }
        let flat: Vec<u32> = self.spans().iter().flatten().copied().collect();
        let t = Tensor::from_vec(flat, (self.spans().len(), 4), device)?;
        *cached = Some(t.clone());
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_with_padding_and_a_shared_prefix_round_trip_through_every_form() {
        let m = AttnMask::causal(4, &[3, 4]).unwrap();
        assert_eq!(m.spans()[1], [0, 2, 2, 2]);
        assert_eq!(m.spans()[3], [0, 0, 0, 0], "padding query sees nothing");
        assert!(m.allowed(1, 3, 0) && !m.allowed(0, 3, 0) && !m.allowed(0, 1, 2));
        // [prefix 0..3 | chosen 3..5 | rejected 5..7], rejected sees prefix + itself
        let shared = |_: usize, q: usize, k: usize| -> bool {
            let branch = |i: usize| {
                if i < 3 {
                    0
                } else if i < 5 {
                    1
                } else {
                    2
                }
            };
            let pos = |i: usize| if i < 5 { i } else { i - 2 };
            pos(k) <= pos(q) && (branch(k) == 0 || branch(k) == branch(q))
        };
        let s = AttnMask::from_fn(1, 7, shared).unwrap();
        assert_eq!(s.spans()[6], [0, 3, 5, 7]);
        assert_eq!(s.spans()[4], [0, 5, 5, 5]);
        let dense = Tensor::from_vec(s.to_additive(-1e30), (1, 1, 7, 7), &Device::Cpu).unwrap();
        let back = AttnMask::from_additive(&dense).unwrap();
        assert_eq!(back.spans(), s.spans());
        for q in 0..7 {
            for k in 0..7 {
                assert_eq!(s.allowed(0, q, k), shared(0, q, k));
            }
        }
    }

    #[test]
    fn unrepresentable_masks_are_errors_naming_the_query() {
        let e = AttnMask::from_fn(2, 5, |r, q, k| r == 1 && q == 4 && k % 2 == 0).unwrap_err();
        assert!(e.to_string().contains("row 1, query 4") && e.to_string().contains("3 runs"));
        let bias = Tensor::new(&[[[0f32, -0.5], [0.0, 0.0]]], &Device::Cpu).unwrap();
        let e = AttnMask::from_additive(&bias).unwrap_err();
        assert!(e.to_string().contains("query 0, key 1"), "{e}");
        let e = AttnMask::from_spans(1, 3, vec![[0, 2, 1, 3]; 3]).unwrap_err();
        assert!(e.to_string().contains("query 0"), "{e}");
        assert!(AttnMask::causal(3, &[4]).is_err());
    }
}

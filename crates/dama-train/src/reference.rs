//! The frozen reference model's log-probs of every pair, computed once and cached
//! ([`crate::ref_cache`]); both `ref-logps` and `train` call [`reference_logps`].

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use dama_llava::{LlavaModel, LlavaProcessor, LoadOptions, Trainable};

use crate::data::TrainData;
use crate::dist::{Collectives, Split};
use crate::error::{Context, Result, TrainError};
use crate::observer::Observer;
use crate::ref_cache::{CacheKey, RefCache, RefEntry, hash_parts, impossible_logp, model_identity};

/// The reference log-prob sums of `data`'s pairs, in its order.
#[derive(Debug, Clone)]
pub struct RefLogps {
    pub chosen: Vec<f32>,
    pub rejected: Vec<f32>,
}

/// What the cached numbers depend on (see [`CacheKey`]).
pub fn cache_key(
    model_dir: &Path,
    processor: &LlavaProcessor,
    max_length: Option<usize>,
    dtype: DType,
) -> Result<CacheKey> {
    let tokenizer_path = model_dir.join("tokenizer.json");
    let tokenizer =
        std::fs::read(&tokenizer_path).map_err(TrainError::io("reading", &tokenizer_path))?;
    let template = dama_llava::template::vicuna_v1_conversation("{question}", "{answer}");
    let max_len = format!("{max_length:?}");
    let preprocessing = format!("{:?} {:?}", processor.image_processor, processor.aspect);
    Ok(CacheKey {
        dama_ref_logps: CacheKey::VERSION,
        model: model_identity(model_dir)?,
        template: hash_parts([
            tokenizer.as_slice(),
            template.as_bytes(),
            max_len.as_bytes(),
        ]),
        preprocessing: hash_parts([preprocessing.as_bytes()]),
        dtype: format!("{dtype:?}").to_lowercase(),
        model_path: model_dir.display().to_string(),
    })
}

/// How the reference pass runs.
#[derive(Debug, Clone)]
pub struct ReferencePass<'a> {
    /// The frozen reference model's folder.
    pub model_dir: &'a Path,
    /// The conversation cut of the run (part of the cache key).
    pub max_length: Option<usize>,
    /// The cache file, extended when it matches this run.
    pub cache: &'a Path,
    pub device: &'a Device,
    pub dtype: DType,
    /// Pairs per forward pass.
    pub batch: usize,
    pub shared_prefix: bool,
}

/// Computes (or reads from the cache) the reference log-probs of every pair of `data`, in
/// this process alone ([`reference_logps_on`] with one rank).
pub fn reference_logps(
    pass: &ReferencePass<'_>,
    data: &TrainData,
    processor: &LlavaProcessor,
    observer: &dyn Observer,
) -> Result<RefLogps> {
    reference_logps_on(pass, data, processor, observer, &crate::dist::Single)
}

/// [`reference_logps`] on the ranks of `comm`.
///
/// With several ranks the pass runs in parallel: rank 0 alone reads and extends the cache
/// and says which pairs are missing; each round of `world · batch` missing pairs is split
/// across the ranks, their log-probs all-gathered, checked on every rank and cached by
/// rank 0; at the end rank 0's values go to every rank. One cache, the same numbers.
pub fn reference_logps_on(
    pass: &ReferencePass<'_>,
    data: &TrainData,
    processor: &LlavaProcessor,
    observer: &dyn Observer,
    comm: &dyn Collectives,
) -> Result<RefLogps> {
    let ReferencePass {
        model_dir,
        max_length,
        cache: cache_path,
        device,
        dtype,
        batch,
        shared_prefix,
    } = *pass;
    let (rank, world) = (comm.rank(), comm.world_size());
    let key = cache_key(model_dir, processor, max_length, dtype)?;
    let mut cache = if comm.is_main() {
        Some(RefCache::open(cache_path, &key, observer)?)
    } else {
        None
    };
    let mut todo = Vec::new();
    if let Some(cache) = &cache {
        for (i, p) in data.pairs.iter().enumerate() {
            if cache.get(&p.id, &p.content)?.is_none() {
                todo.push(i);
            }
        }
    }
    if world > 1 {
        comm.phase("reference pass");
        todo = share_list(comm, &todo)?;
    }
    if !todo.is_empty() {
        observer.reference_started(todo.len(), data.pairs.len());
        let opts = LoadOptions {
            dtype,
            device: device.clone(),
            trainable: Trainable::Frozen,
        };
        let model = LlavaModel::load(model_dir, &opts)
            .with_context(|| format!("loading the reference model {}", model_dir.display()))?;
        for round in todo.chunks(batch.max(1) * world) {
            let split = Split::new(round.len(), world);
            let mine = &round[split.range(rank)];
            let (mut chosen, mut rejected, mut nc, mut nr) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            if !mine.is_empty() {
                let b = data.batch(mine, processor, device)?;
                let logps = model.pair_logps_no_grad(&b, shared_prefix)?;
                chosen = logps.chosen.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                rejected = logps.rejected.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                nc = logps.chosen_tokens.iter().map(|&t| t as f32).collect();
                nr = logps.rejected_tokens.iter().map(|&t| t as f32).collect();
            }
            if world > 1 {
                chosen = split.gather(comm, &chosen)?;
                rejected = split.gather(comm, &rejected)?;
                nc = split.gather(comm, &nc)?;
                nr = split.gather(comm, &nr)?;
            }
            for (k, &i) in round.iter().enumerate() {
                let p = &data.pairs[i];
                let (c, r) = (chosen[k] as f64, rejected[k] as f64);
                let (nc, nr) = (nc[k] as usize, nr[k] as usize);
                for (side, sum, tokens) in [("chosen", c, nc), ("rejected", r, nr)] {
                    if let Some(why) = impossible_logp(sum, tokens) {
                        return Err(TrainError::Numerics(format!(
                            "pair `{}`: the reference model's {side} log-prob {why}",
                            p.id
                        )));
                    }
                }
                if let Some(cache) = cache.as_mut() {
                    cache.insert(RefEntry {
                        id: p.id.clone(),
                        content: p.content.clone(),
                        chosen: c,
                        rejected: r,
                        chosen_avg: c / nc.max(1) as f64,
                        rejected_avg: r / nr.max(1) as f64,
                        chosen_tokens: nc,
                        rejected_tokens: nr,
                    })?;
                }
            }
            observer.reference_progress(round.len());
        }
        observer.reference_finished();
    }
    let mut out = RefLogps {
        chosen: Vec::with_capacity(data.pairs.len()),
        rejected: Vec::with_capacity(data.pairs.len()),
    };
    if let Some(cache) = &cache {
        for p in &data.pairs {
            let e = cache
                .get(&p.id, &p.content)?
                .expect("every pair was just cached");
            out.chosen.push(e.chosen as f32);
            out.rejected.push(e.rejected as f32);
        }
    } else {
        out.chosen.resize(data.pairs.len(), 0.0);
        out.rejected.resize(data.pairs.len(), 0.0);
    }
    if world > 1 {
        let n = data.pairs.len();
        let from_main = |v: &[f32]| -> Result<Vec<f32>> {
            let t = Tensor::from_vec(v.to_vec(), n, &Device::Cpu)?;
            Ok(comm.broadcast(&t, 0)?.to_vec1::<f32>()?)
        };
        out.chosen = from_main(&out.chosen)?;
        out.rejected = from_main(&out.rejected)?;
    }
    Ok(out)
}

/// Rank 0's list of pair indices on every rank.
fn share_list(comm: &dyn Collectives, list: &[usize]) -> Result<Vec<usize>> {
    let len = Tensor::new(&[list.len() as u32], &Device::Cpu)?;
    let len = comm.broadcast(&len, 0)?.to_vec1::<u32>()?[0] as usize;
    if len == 0 {
        return Ok(Vec::new());
    }
    let mut v: Vec<u32> = list.iter().map(|&i| i as u32).collect();
    v.resize(len, 0);
    let t = Tensor::from_vec(v, len, &Device::Cpu)?;
    Ok(comm
        .broadcast(&t, 0)?
        .to_vec1::<u32>()?
        .into_iter()
        .map(|i| i as usize)
        .collect())
}

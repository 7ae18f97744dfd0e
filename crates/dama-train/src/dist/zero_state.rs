//! The optimizer state in a checkpoint folder, whole or sharded, and its restoration into an
//! optimizer of any world size and ZeRO stage.
//!
//! - replicated (ZeRO-0): `optimizer.safetensors`, written by rank 0, the single-process
//!   file: `{name}.exp_avg`, `{name}.exp_avg_sq` and `{name}.master` of every parameter;
//! - sharded (ZeRO-1/2): `optimizer-rank-NNNNN.safetensors` from each rank, holding the same
//!   names for its pieces only (flat, 1-D), and `optimizer-layout.json` from rank 0 (world
//!   size, stage, and the parameters' names and sizes in the flat order).
//!
//! Restoring reads every element from wherever it was saved: the same world size and stage
//! get back exactly their own tensors; any other combination is re-sharded element by element
//! (a new piece is cut from the old pieces it overlaps). The values are the same either way,
//! so the run goes on with the same state; only the order of later reductions changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::shard::FlatLayout;
use super::zero::{Optimizer, ZeroStage};
use crate::error::{Context, Result, TrainError};
use crate::files::write_atomic;
use dama_core::Named;

pub const FULL_FILE: &str = "optimizer.safetensors";
pub const LAYOUT_FILE: &str = "optimizer-layout.json";

/// The file of rank `rank`'s shard.
pub fn shard_file(rank: usize) -> String {
    format!("optimizer-rank-{rank:05}.safetensors")
}

const SUFFIXES: [&str; 3] = ["exp_avg", "exp_avg_sq", "master"];

/// `optimizer-layout.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedLayout {
    pub world_size: usize,
    pub zero: ZeroStage,
    /// (name, elements) of every parameter, in the flat order.
    pub params: Vec<(String, usize)>,
}

/// How the state in a checkpoint was laid out, for a notice when it is re-sharded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedAs {
    pub world_size: usize,
    pub zero: ZeroStage,
}

/// This rank's part of the checkpoint in folder `dir` (being written): its shard file, or
/// for a replicated optimizer on rank 0 the whole state; rank 0 also writes the layout.
pub fn save(dir: &Path, opt: &Optimizer, rank: usize, world_size: usize) -> Result<()> {
    match opt {
        Optimizer::Replicated(o) => {
            if rank == 0 {
                let path = dir.join(FULL_FILE);
                candle_core::safetensors::save(&o.state_tensors(), &path)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Optimizer::Sharded(s) => {
            let path = dir.join(shard_file(rank));
            candle_core::safetensors::save(&s.shard().state_tensors(), &path)
                .with_context(|| format!("rank {rank}: writing {}", path.display()))?;
            if rank == 0 {
                let layout = SavedLayout {
                    world_size,
                    zero: opt.stage(),
                    params: opt
                        .params()
                        .iter()
                        .map(|p| (p.name.clone(), p.var.elem_count()))
                        .collect(),
                };
                let json = serde_json::to_string_pretty(&layout).expect("a layout serialises");
                write_atomic(&dir.join(LAYOUT_FILE), (json + "\n").as_bytes())?;
            }
        }
    }
    Ok(())
}

/// Where saved state is read from.
enum Source {
    Full(MmapedSafetensors, PathBuf),
    Sharded {
        layout: FlatLayout,
        index: HashMap<String, usize>,
        files: Vec<(MmapedSafetensors, PathBuf)>,
    },
}

fn mmap(path: &Path) -> Result<MmapedSafetensors> {
    if !path.is_file() {
        return Err(TrainError::Resume(format!(
            "{} is missing: the checkpoint is incomplete",
            path.display()
        )));
    }
    // SAFETY: checkpoint files are written under a temporary name and never changed after
    // they are renamed into place.
    unsafe { MmapedSafetensors::new(path) }.with_context(|| format!("reading {}", path.display()))
}

impl Source {
    fn open(dir: &Path) -> Result<(Self, SavedAs)> {
        let full = dir.join(FULL_FILE);
        if full.is_file() {
            let as_ = SavedAs {
                world_size: 1,
                zero: ZeroStage::Zero0,
            };
            return Ok((Source::Full(mmap(&full)?, full), as_));
        }
        let layout_path = dir.join(LAYOUT_FILE);
        let text = std::fs::read_to_string(&layout_path).map_err(|e| {
            TrainError::Resume(format!(
                "{} has neither {FULL_FILE} nor a readable {LAYOUT_FILE} ({e})",
                dir.display()
            ))
        })?;
        let saved: SavedLayout =
            serde_json::from_str(&text).map_err(TrainError::json(&layout_path))?;
        let layout = FlatLayout::new(
            saved.params.iter().map(|(_, n)| *n).collect(),
            saved.world_size.max(1),
        );
        let index = saved
            .params
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i))
            .collect();
        let files = (0..saved.world_size)
            .map(|r| {
                let p = dir.join(shard_file(r));
                Ok((mmap(&p)?, p))
            })
            .collect::<Result<Vec<_>>>()?;
        let as_ = SavedAs {
            world_size: saved.world_size,
            zero: saved.zero,
        };
        Ok((
            Source::Sharded {
                layout,
                index,
                files,
            },
            as_,
        ))
    }

    /// The file that holds exactly what `opt` keeps, when it was saved with the same world
    /// size and stage (or whole, for a replicated optimizer).
    fn own_file(&self, opt: &Optimizer, saved: SavedAs) -> Option<&Path> {
        match (self, opt) {
            (Source::Full(_, path), Optimizer::Replicated(_)) => Some(path),
            (Source::Sharded { files, .. }, Optimizer::Sharded(s))
                if saved.world_size == s.layout().world && saved.zero == opt.stage() =>
            {
                files.get(s.rank()).map(|(_, p)| p.as_path())
            }
            _ => None,
        }
    }

    /// Whether `{name}.{suffix}` was saved (masters are absent for f32 weights and bf16-sr).
    fn has(&self, name: &str, suffix: &str) -> bool {
        let key = format!("{name}.{suffix}");
        match self {
            Source::Full(st, _) => st.get(&key).is_ok(),
            Source::Sharded { files, .. } => files.iter().any(|(st, _)| st.get(&key).is_ok()),
        }
    }

    /// Elements `start .. start + len` of the flattened `{name}.{suffix}`, as f32 on `device`.
    fn range(
        &self,
        name: &str,
        numel: usize,
        suffix: &str,
        start: usize,
        len: usize,
        device: &Device,
    ) -> Result<Tensor> {
        let key = format!("{name}.{suffix}");
        match self {
            Source::Full(st, path) => {
                let t = st
                    .load(&key, &Device::Cpu)
                    .map_err(|_| resume(path, format!("has no `{key}`")))?;
                if t.elem_count() != numel {
                    return Err(resume(
                        path,
                        format!(
                            "`{key}` has {} elements, the parameter {numel}",
                            t.elem_count()
                        ),
                    ));
                }
                Ok(t.flatten_all()?
                    .narrow(0, start, len)?
                    .to_dtype(DType::F32)?
                    .to_device(device)?)
            }
            Source::Sharded {
                layout,
                index,
                files,
            } => {
                let &p = index.get(name).ok_or_else(|| {
                    resume(
                        &files[0].1,
                        format!("its layout has no parameter `{name}`: the checkpoint is of another model"),
                    )
                })?;
                if layout.sizes[p] != numel {
                    return Err(resume(
                        &files[0].1,
                        format!(
                            "its layout gives `{name}` {} elements, the model {numel}",
                            layout.sizes[p]
                        ),
                    ));
                }
                let (a, b) = (layout.offsets[p] + start, layout.offsets[p] + start + len);
                let mut parts = Vec::new();
                for (o, (st, path)) in files.iter().enumerate() {
                    for pc in layout.pieces(o).into_iter().filter(|pc| pc.param == p) {
                        let (s, e) = (a.max(pc.flat_start), b.min(pc.flat_start + pc.len));
                        if s >= e {
                            continue;
                        }
                        let t = st
                            .load(&key, &Device::Cpu)
                            .map_err(|_| resume(path, format!("has no `{key}`")))?;
                        if t.elem_count() != pc.len {
                            return Err(resume(
                                path,
                                format!(
                                    "`{key}` has {} elements, its piece {}",
                                    t.elem_count(),
                                    pc.len
                                ),
                            ));
                        }
                        parts.push(t.narrow(0, s - pc.flat_start, e - s)?);
                    }
                }
                let t = Tensor::cat(&parts, 0)?;
                debug_assert_eq!(t.elem_count(), len);
                Ok(t.to_dtype(DType::F32)?.to_device(device)?)
            }
        }
    }
}

fn resume(path: &Path, what: String) -> TrainError {
    TrainError::Resume(format!("{}: {what}", path.display()))
}

/// Restores the optimizer state saved in checkpoint `dir` (after `steps` steps) into `opt`,
/// whatever world size and stage it was saved with. Returns how it was saved.
pub fn restore(dir: &Path, opt: &mut Optimizer, steps: u64) -> Result<SavedAs> {
    let (source, saved_as) = Source::open(dir)?;
    if let Some(path) = source.own_file(opt, saved_as) {
        // Saved as this rank holds it: its own file, tensor for tensor. This is the only way
        // 8-bit moments come back, as their block-wise codes cannot be cut at other places.
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .with_context(|| format!("reading {}", path.display()))?;
        match opt {
            Optimizer::Replicated(o) => o.load_state(&tensors, steps),
            Optimizer::Sharded(s) => {
                s.refresh_from_weights()?;
                s.shard_mut().load_state(&tensors, steps)
            }
        }
        .with_context(|| format!("restoring the optimizer from {}", dir.display()))?;
        return Ok(saved_as);
    }
    if let Some(first) = opt.params().first()
        && source.has(&first.name, "exp_avg.codes")
    {
        return Err(TrainError::Resume(format!(
            "{}: its 8-bit optimizer state was saved on {} rank(s) at ZeRO-{}; 8-bit state \
             resumes only as it was saved (its codes are block-wise), so resume with that \
             number of ranks and --zero {}",
            dir.display(),
            saved_as.world_size,
            saved_as.zero.name(),
            saved_as.zero.name(),
        )));
    }
    let mut tensors = HashMap::new();
    match opt {
        Optimizer::Replicated(o) => {
            for p in o.params() {
                let numel = p.var.elem_count();
                for suffix in SUFFIXES {
                    if suffix == "master" && !source.has(&p.name, suffix) {
                        continue;
                    }
                    let t = source
                        .range(&p.name, numel, suffix, 0, numel, p.var.device())?
                        .reshape(p.var.shape())?;
                    tensors.insert(format!("{}.{suffix}", p.name), t);
                }
            }
            o.load_state(&tensors, steps)
                .with_context(|| format!("restoring the optimizer from {}", dir.display()))?;
        }
        Optimizer::Sharded(s) => {
            s.refresh_from_weights()?;
            let pieces = s.pieces().to_vec();
            let full: Vec<(String, usize)> = s
                .full_params()
                .iter()
                .map(|p| (p.name.clone(), p.var.elem_count()))
                .collect();
            let shard = s.shard_mut();
            for (pc, sp) in pieces.iter().zip(shard.params()) {
                let (name, numel) = &full[pc.param];
                for suffix in SUFFIXES {
                    if suffix == "master" && !source.has(name, suffix) {
                        continue;
                    }
                    let t =
                        source.range(name, *numel, suffix, pc.start, pc.len, sp.var.device())?;
                    tensors.insert(format!("{}.{suffix}", sp.name), t);
                }
            }
            shard
                .load_state(&tensors, steps)
                .with_context(|| format!("restoring the optimizer shard from {}", dir.display()))?;
        }
    }
    Ok(saved_as)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::zero::DEFAULT_BUCKET;
    use crate::dist::{Collectives, Single};
    use crate::optim::{AdamWConfig, Param};
    use candle_core::Var;

    fn params() -> Vec<Param> {
        [("a", 7usize), ("b", 4), ("c", 6)]
            .into_iter()
            .map(|(name, n)| {
                let v: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 1.0).collect();
                Param {
                    name: name.into(),
                    var: Var::from_tensor(&Tensor::from_vec(v, n, &Device::Cpu).unwrap()).unwrap(),
                }
            })
            .collect()
    }

    fn trained(stage: ZeroStage) -> Optimizer {
        let ps = params();
        let mut opt = Optimizer::new(
            ps.clone(),
            AdamWConfig::default(),
            stage,
            &Single,
            DEFAULT_BUCKET,
        )
        .unwrap();
        for k in 0..3 {
            let g = ps
                .iter()
                .map(|p| {
                    let n = p.var.elem_count();
                    let v: Vec<f32> = (0..n).map(|i| ((i + k) % 5) as f32 - 2.0).collect();
                    Some(Tensor::from_vec(v, n, &Device::Cpu).unwrap())
                })
                .collect();
            opt.step(g, 1e-2, None, &Single, DEFAULT_BUCKET).unwrap();
        }
        opt
    }

    fn state(opt: &Optimizer) -> Vec<(String, Vec<f32>)> {
        let tensors = match opt {
            Optimizer::Replicated(o) => o.state_tensors(),
            Optimizer::Sharded(s) => s.shard().state_tensors(),
        };
        let mut all: Vec<(String, Vec<f32>)> = tensors
            .into_iter()
            .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// A rank of a pretend world (`Single` carries no data: only the rank matters to the
    /// layout; the collectives are not called while building or restoring).
    struct RankOf(usize, usize);
    impl Collectives for RankOf {
        fn rank(&self) -> usize {
            self.0
        }
        fn world_size(&self) -> usize {
            self.1
        }
        fn engine(&self) -> &'static str {
            "layout"
        }
        fn all_reduce_sum(&self, _: &Tensor) -> super::super::Result<Tensor> {
            unreachable!("restoring communicates nothing")
        }
        fn all_gather(&self, _: &Tensor) -> super::super::Result<Tensor> {
            unreachable!("restoring communicates nothing")
        }
        fn broadcast(&self, _: &Tensor, _: usize) -> super::super::Result<Tensor> {
            unreachable!("restoring communicates nothing")
        }
        fn reduce_scatter_sum(&self, _: &Tensor) -> super::super::Result<Tensor> {
            unreachable!("restoring communicates nothing")
        }
        fn barrier(&self) -> super::super::Result<()> {
            unreachable!("restoring communicates nothing")
        }
    }

    /// Saved replicated, restored as shards of 3 ranks, saved again, restored replicated:
    /// every value comes back exactly.
    #[test]
    fn state_survives_resharding_both_ways() {
        let whole = trained(ZeroStage::Zero0);
        let d1 = tempfile::tempdir().unwrap();
        save(d1.path(), &whole, 0, 1).unwrap();
        let world = 3;
        let d2 = tempfile::tempdir().unwrap();
        for r in 0..world {
            let comm = RankOf(r, world);
            let mut shard = Optimizer::new(
                params(),
                AdamWConfig::default(),
                ZeroStage::Zero2,
                &comm,
                DEFAULT_BUCKET,
            )
            .unwrap();
            let as_ = restore(d1.path(), &mut shard, 3).unwrap();
            assert_eq!(as_.world_size, 1);
            assert_eq!(shard.steps(), 3);
            save(d2.path(), &shard, r, world).unwrap();
        }
        let layout: SavedLayout =
            serde_json::from_str(&std::fs::read_to_string(d2.path().join(LAYOUT_FILE)).unwrap())
                .unwrap();
        assert_eq!(layout.world_size, 3);
        assert_eq!(layout.zero, ZeroStage::Zero2);
        // back to one rank, and to two
        let mut back = Optimizer::new(
            params(),
            AdamWConfig::default(),
            ZeroStage::Zero0,
            &Single,
            DEFAULT_BUCKET,
        )
        .unwrap();
        let as_ = restore(d2.path(), &mut back, 3).unwrap();
        assert_eq!((as_.world_size, as_.zero), (3, ZeroStage::Zero2));
        assert_eq!(state(&back), state(&whole));
        // two ranks' shards hold, together, the same values
        let mut merged: HashMap<String, Vec<f32>> = HashMap::new();
        for r in 0..2 {
            let mut s = Optimizer::new(
                params(),
                AdamWConfig::default(),
                ZeroStage::Zero1,
                &RankOf(r, 2),
                DEFAULT_BUCKET,
            )
            .unwrap();
            restore(d2.path(), &mut s, 3).unwrap();
            for (k, v) in state(&s) {
                merged.entry(k).or_default().extend(v);
            }
        }
        let mut merged: Vec<_> = merged.into_iter().collect();
        merged.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(merged, state(&whole));
    }

    #[test]
    fn an_incomplete_or_foreign_checkpoint_is_named() {
        let d = tempfile::tempdir().unwrap();
        let world = 2;
        for r in 0..world {
            let s = Optimizer::new(
                params(),
                AdamWConfig::default(),
                ZeroStage::Zero1,
                &RankOf(r, world),
                DEFAULT_BUCKET,
            )
            .unwrap();
            save(d.path(), &s, r, world).unwrap();
        }
        std::fs::remove_file(d.path().join(shard_file(1))).unwrap();
        let mut o = trained(ZeroStage::Zero0);
        let e = restore(d.path(), &mut o, 0).unwrap_err().to_string();
        assert!(
            e.contains("optimizer-rank-00001.safetensors is missing"),
            "{e}"
        );
        let empty = tempfile::tempdir().unwrap();
        let e = restore(empty.path(), &mut o, 0).unwrap_err().to_string();
        assert!(e.contains("neither optimizer.safetensors"), "{e}");
    }

    /// 8-bit shards come back exactly on the world size and stage they were saved with, and
    /// any other combination is refused with what to do (their block-wise codes cannot be
    /// re-cut).
    #[test]
    fn eight_bit_shards_resume_only_as_saved() {
        use crate::optim::StateFormat;
        let cfg = AdamWConfig {
            state: StateFormat::Dynamic8,
            ..Default::default()
        };
        let ps = || -> Vec<Param> {
            [("big", 10_000usize), ("small", 5)]
                .into_iter()
                .map(|(name, n)| {
                    let v: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
                    let t = Tensor::from_vec(v, n, &Device::Cpu).unwrap();
                    Param {
                        name: name.into(),
                        var: Var::from_tensor(&t).unwrap(),
                    }
                })
                .collect()
        };
        let as_f32 = |opt: &Optimizer| -> Vec<(String, Vec<f32>)> {
            let Optimizer::Sharded(s) = opt else {
                unreachable!()
            };
            let mut all: Vec<_> = s
                .shard()
                .state_tensors()
                .into_iter()
                .map(|(k, t)| {
                    let t = t.flatten_all().unwrap().to_dtype(DType::F32).unwrap();
                    (k, t.to_vec1::<f32>().unwrap())
                })
                .collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        };
        let d = tempfile::tempdir().unwrap();
        let world = 2;
        let mut saved = Vec::new();
        for r in 0..world {
            let comm = RankOf(r, world);
            let mut o = Optimizer::new(ps(), cfg, ZeroStage::Zero1, &comm, DEFAULT_BUCKET).unwrap();
            let Optimizer::Sharded(s) = &mut o else {
                unreachable!()
            };
            for k in 1..=3 {
                let g: Vec<Option<Tensor>> = s
                    .shard()
                    .params()
                    .iter()
                    .map(|p| {
                        let n = p.var.elem_count();
                        let v: Vec<f32> = (0..n).map(|i| ((i * k) % 7) as f32 - 3.0).collect();
                        Some(Tensor::from_vec(v, n, &Device::Cpu).unwrap())
                    })
                    .collect();
                s.shard_mut().step(&g, 1e-2).unwrap();
            }
            assert!(
                s.shard().state_tensors().contains_key("big.exp_avg.codes"),
                "rank {r}'s piece of `big` is large enough for 8-bit moments"
            );
            save(d.path(), &o, r, world).unwrap();
            saved.push(as_f32(&o));
        }
        for (r, want) in saved.iter().enumerate() {
            let comm = RankOf(r, world);
            let mut o = Optimizer::new(ps(), cfg, ZeroStage::Zero1, &comm, DEFAULT_BUCKET).unwrap();
            restore(d.path(), &mut o, 3).unwrap();
            assert_eq!(o.steps(), 3);
            assert_eq!(&as_f32(&o), want, "rank {r}");
        }
        for (w, stage) in [
            (3, ZeroStage::Zero1),
            (2, ZeroStage::Zero2),
            (1, ZeroStage::Zero0),
        ] {
            let mut o = Optimizer::new(ps(), cfg, stage, &RankOf(0, w), DEFAULT_BUCKET).unwrap();
            let e = restore(d.path(), &mut o, 3).unwrap_err().to_string();
            assert!(
                e.contains("8-bit optimizer state was saved on 2 rank(s) at ZeRO-1"),
                "{e}"
            );
        }
    }
}

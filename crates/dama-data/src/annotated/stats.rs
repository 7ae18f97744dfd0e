//! δ̄, edge counts and hardness bands of a dataset, and α_D of each pair from them: the last
//! step of scoring, and of a browser export after curation (δ̄ over the pairs kept).

use dama_core::{DeltaEdge, EdgeCounts, Estimator, HardnessBands, alpha_d, delta_mean};
use serde::{Deserialize, Serialize};

use super::{Header, SCHEMA_VERSION, created_by};
use crate::error::DataError;
use crate::record::PreferencePair;

/// What produced a dataset's sub-sentences and scores; recorded in its header, and checked when
/// a scoring run resumes so that one file never mixes two models.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunInfo {
    pub clip_model: Option<String>,
    pub estimator: Option<Estimator>,
    pub splitter: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DatasetStats {
    pub count: usize,
    pub kept: usize,
    /// Kept pairs with δ.
    pub scored: usize,
    /// δ̄ over the kept pairs (`dama_core::delta_mean`); `None` when none is scored.
    pub delta_mean: Option<f64>,
    pub edge_counts: EdgeCounts,
    pub bands: Option<HardnessBands<f64>>,
}

impl DatasetStats {
    pub fn header(&self, run: &RunInfo) -> Header {
        Header {
            dama_annotated: SCHEMA_VERSION,
            clip_model: run.clip_model.clone(),
            estimator: run.estimator,
            splitter: run.splitter.clone(),
            delta_mean: self.delta_mean,
            count: self.count,
            kept: self.kept,
            scored: self.scored,
            edge_counts: self.edge_counts,
            bands: self.bands,
            images: None,
            created_by: Some(created_by()),
        }
    }

    /// α_D of a pair of this dataset; `None` for a dropped or unscored pair.
    pub fn alpha_d(&self, kept: bool, delta: Option<f64>) -> Option<f64> {
        match (kept, delta, self.delta_mean) {
            (true, Some(delta), Some(mean)) => Some(alpha_d(delta, mean)),
            _ => None,
        }
    }
}

/// Accumulates per-pair facts; shared by in-memory datasets and the scoring log.
#[derive(Default)]
pub(crate) struct StatsBuilder {
    count: usize,
    kept: usize,
    deltas: Vec<f64>,
    ids: Vec<String>,
    edges: EdgeCounts,
    first_unscored: Option<String>,
}

impl StatsBuilder {
    pub(crate) fn add(
        &mut self,
        id: &str,
        kept: bool,
        delta: Option<f64>,
        edge: Option<DeltaEdge>,
    ) {
        self.count += 1;
        if !kept {
            return;
        }
        self.kept += 1;
        match delta {
            Some(delta) => {
                self.deltas.push(delta);
                self.ids.push(id.to_owned());
                self.edges.add(edge.unwrap_or_default());
            }
            None if self.first_unscored.is_none() => self.first_unscored = Some(id.to_owned()),
            None => {}
        }
    }

    pub(crate) fn finish(self) -> Result<DatasetStats, DataError> {
        let scored = self.deltas.len();
        if scored == 0 {
            return Ok(DatasetStats {
                count: self.count,
                kept: self.kept,
                scored,
                delta_mean: None,
                edge_counts: self.edges,
                bands: None,
            });
        }
        if let Some(id) = self.first_unscored {
            return Err(DataError::Mismatch {
                file: "the dataset".to_owned(),
                what: format!(
                    "pair `{id}` is kept but has no δ, while {scored} other kept pairs have one: score it (a pair whose sub-sentences were edited must be scored again) or drop it"
                ),
            });
        }
        // δ̄ is the mean of the δ in ascending order, so that it does not depend, to the last bit,
        // on the order of the records: a resumed scoring run, a browser export and the final
        // pass all agree.
        let mut order: Vec<usize> = (0..scored).collect();
        order.sort_by(|&a, &b| {
            self.deltas[a]
                .total_cmp(&self.deltas[b])
                .then_with(|| self.ids[a].cmp(&self.ids[b]))
        });
        let deltas: Vec<f64> = order.iter().map(|&i| self.deltas[i]).collect();
        let ids: Vec<&str> = order.iter().map(|&i| self.ids[i].as_str()).collect();
        let core = |error: dama_core::CoreError| {
            let context = match &error {
                dama_core::CoreError::NonFinite { index, .. } => format!("pair `{}`", ids[*index]),
                _ => "δ̄ of the dataset".to_owned(),
            };
            DataError::Core { context, error }
        };
        let mean = delta_mean(&deltas).map_err(core)?;
        let bands = HardnessBands::from_deltas(&deltas).map_err(core)?;
        Ok(DatasetStats {
            count: self.count,
            kept: self.kept,
            scored,
            delta_mean: Some(mean),
            edge_counts: self.edges,
            bands: Some(bands),
        })
    }
}

/// The statistics of a dataset held in memory.
pub fn dataset_stats<'a>(
    pairs: impl IntoIterator<Item = &'a PreferencePair>,
) -> Result<DatasetStats, DataError> {
    let mut builder = StatsBuilder::default();
    for p in pairs {
        builder.add(&p.id, p.is_kept(), p.delta, p.delta_edge);
    }
    builder.finish()
}

/// Recomputes δ̄ over the kept pairs and sets α_D on every pair (kept and scored: σ(δ)/σ(δ̄);
/// otherwise `None`); returns the header for writing them. The browser calls this before an
/// export; converting the authors' list (which carries δ) goes through it too.
pub fn annotate(pairs: &mut [PreferencePair], run: &RunInfo) -> Result<Header, DataError> {
    let stats = dataset_stats(pairs.iter())?;
    for p in pairs.iter_mut() {
        p.alpha_d = stats.alpha_d(p.is_kept(), p.delta);
    }
    Ok(stats.header(run))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Status;

    fn pair(id: &str, delta: Option<f64>, kept: bool) -> PreferencePair {
        let mut p = PreferencePair::new(id, Default::default(), "q", "a", "b");
        p.delta = delta;
        p.delta_edge = delta.map(|_| DeltaEdge::None);
        if !kept {
            p.annotation.status = Status::Drop;
        }
        p
    }

    #[test]
    fn delta_mean_and_alpha_over_kept_pairs_only() {
        let mut pairs = vec![
            pair("a", Some(0.5), true),
            pair("b", Some(-0.25), true),
            pair("c", Some(0.9), false),
            pair("d", None, false),
        ];
        pairs[1].delta_edge = Some(DeltaEdge::NoChosen);
        let header = annotate(&mut pairs, &RunInfo::default()).unwrap();
        assert_eq!((header.count, header.kept, header.scored), (4, 2, 2));
        assert_eq!(header.delta_mean, Some(0.125));
        assert_eq!(header.edge_counts.no_chosen, 1);
        assert_eq!(pairs[0].alpha_d, Some(alpha_d(0.5, 0.125)));
        assert_eq!(pairs[1].alpha_d, Some(alpha_d(-0.25, 0.125)));
        assert_eq!((pairs[2].alpha_d, pairs[3].alpha_d), (None, None));
        assert_eq!(
            header.bands.unwrap().q1,
            HardnessBands::from_deltas(&[0.5, -0.25]).unwrap().q1
        );
    }

    #[test]
    fn unscored_datasets_and_inconsistent_ones() {
        let mut plain = vec![pair("a", None, true)];
        let header = annotate(&mut plain, &RunInfo::default()).unwrap();
        assert_eq!(
            (header.delta_mean, header.scored, plain[0].alpha_d),
            (None, 0, None)
        );
        let mut mixed = vec![pair("a", Some(0.1), true), pair("edited", None, true)];
        let err = annotate(&mut mixed, &RunInfo::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("pair `edited` is kept but has no δ"),
            "{err}"
        );
        let mut bad = vec![
            pair("a", Some(0.1), true),
            pair("nan", Some(f64::NAN), true),
        ];
        let err = annotate(&mut bad, &RunInfo::default()).unwrap_err();
        assert!(err.to_string().starts_with("pair `nan`: `delta["), "{err}");
        assert!(err.to_string().contains("is not finite"), "{err}");
    }

    #[test]
    fn delta_mean_does_not_depend_on_record_order() {
        let deltas = [0.1, 0.7, -0.3, 0.2, 1e-9, -0.55, 0.33];
        let forward: Vec<_> = deltas
            .iter()
            .enumerate()
            .map(|(i, &d)| pair(&i.to_string(), Some(d), true))
            .collect();
        let backward: Vec<_> = forward.iter().rev().cloned().collect();
        let (a, b) = (
            dataset_stats(&forward).unwrap(),
            dataset_stats(&backward).unwrap(),
        );
        assert_eq!(
            a.delta_mean.unwrap().to_bits(),
            b.delta_mean.unwrap().to_bits()
        );
    }
}

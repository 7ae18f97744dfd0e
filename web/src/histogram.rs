//! Histogram bins of δ or α_D over the kept, scored pairs, and where the quartile bands
//! (dama-core's `HardnessBands`: below Q1 hard, above Q3 easy) fall on the same axis.

use dama_data::DatasetStats;

use crate::session::Session;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    Delta,
    AlphaD,
}

impl Quantity {
    pub fn label(self) -> &'static str {
        match self {
            Quantity::Delta => "δ",
            Quantity::AlphaD => "α_D",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub quantity: Quantity,
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<usize>,
    /// Q1, median, Q3 of δ mapped to this quantity (α_D is increasing in δ, so the bands map
    /// through it): the band boundaries to draw.
    pub q1: f64,
    pub median: f64,
    pub q3: f64,
    /// δ̄ (or α_D = 1 for the α_D histogram).
    pub mean: f64,
    pub n: usize,
}

impl Histogram {
    pub fn max_count(&self) -> usize {
        self.counts.iter().copied().max().unwrap_or(0)
    }

    pub fn bin_width(&self) -> f64 {
        (self.hi - self.lo) / self.counts.len() as f64
    }

    /// Where `x` lies on the axis, 0 at `lo` and 1 at `hi`.
    pub fn position(&self, x: f64) -> f64 {
        ((x - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)
    }
}

/// `bins` equal bins between the smallest and the largest value (widened a little when they
/// coincide); `None` while no kept pair is scored.
pub fn histogram(session: &Session, quantity: Quantity, bins: usize) -> Option<Histogram> {
    histogram_with(session, &session.stats()?, quantity, bins)
}

/// [`histogram`] with the session's statistics computed already (the page keeps them).
pub fn histogram_with(
    session: &Session,
    stats: &DatasetStats,
    quantity: Quantity,
    bins: usize,
) -> Option<Histogram> {
    let bands = stats.bands?;
    let mean = stats.delta_mean?;
    let map = |d: f64| match quantity {
        Quantity::Delta => d,
        Quantity::AlphaD => dama_core::alpha_d(d, mean),
    };
    let values: Vec<f64> = session
        .pairs
        .iter()
        .filter(|p| p.is_kept())
        .filter_map(|p| p.delta)
        .map(map)
        .collect();
    let bins = bins.max(1);
    let (mut lo, mut hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    if hi - lo < 1e-9 {
        lo -= 0.5;
        hi += 0.5;
    }
    let mut counts = vec![0; bins];
    for v in &values {
        let k = (((v - lo) / (hi - lo)) * bins as f64) as usize;
        counts[k.min(bins - 1)] += 1;
    }
    Some(Histogram {
        quantity,
        lo,
        hi,
        counts,
        q1: map(bands.q1),
        median: map(bands.median),
        q3: map(bands.q3),
        mean: map(mean),
        n: values.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::subs_key;
    use dama_data::{Scores, Status};

    fn session_with(deltas_from: &[(f64, f64)]) -> Session {
        let mut s = crate::load::demo_session();
        for (i, (c, r)) in deltas_from.iter().enumerate() {
            let subs = s.pairs[i].sub_sentences.clone().unwrap();
            let id = s.pairs[i].id.clone();
            let scores = Scores {
                chosen: vec![*c; subs.chosen.len()],
                rejected: vec![*r; subs.rejected.len()],
            };
            s.apply_scores("m", &id, subs_key(&subs), scores).unwrap();
        }
        s
    }

    #[test]
    fn counts_cover_every_kept_scored_pair() {
        let mut s = session_with(&[(25.0, 20.0), (20.0, 25.0), (22.0, 22.0), (23.0, 21.0)]);
        s.set_status(3, Status::Drop);
        let h = histogram(&s, Quantity::Delta, 10).unwrap();
        assert_eq!(h.n, 3);
        assert_eq!(h.counts.iter().sum::<usize>(), 3);
        assert_eq!(
            (h.counts[0], h.counts[9]),
            (1, 1),
            "min and max land in the end bins"
        );
        let stats = s.stats().unwrap();
        assert_eq!(h.mean, stats.delta_mean.unwrap());
        assert_eq!(h.q1, stats.bands.unwrap().q1);
        assert!(h.position(h.lo) == 0.0 && h.position(h.hi) == 1.0);
    }

    #[test]
    fn alpha_d_maps_the_bands_and_centres_on_one() {
        let s = session_with(&[(25.0, 20.0), (20.0, 25.0), (22.0, 22.0)]);
        let h = histogram(&s, Quantity::AlphaD, 4).unwrap();
        let stats = s.stats().unwrap();
        let mean = stats.delta_mean.unwrap();
        assert!((h.mean - 1.0).abs() < 1e-12);
        assert_eq!(h.q3, dama_core::alpha_d(stats.bands.unwrap().q3, mean));
        assert!(h.q1 < h.median && h.median < h.q3);
    }

    #[test]
    fn nothing_to_show_before_scoring_and_one_value_still_draws() {
        let s = crate::load::demo_session();
        assert_eq!(histogram(&s, Quantity::Delta, 10), None);
        let s = session_with(&[(25.0, 20.0)]);
        let h = histogram(&s, Quantity::Delta, 5).unwrap();
        assert!(h.hi > h.lo);
        assert_eq!(h.counts.iter().sum::<usize>(), 1);
    }
}

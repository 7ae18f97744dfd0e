//! The pair table's order (which pairs, filtered and sorted) and what each row shows. δ̄, α_D and
//! the bands come from `dama_data::dataset_stats` (dama-core), computed over the kept pairs.
//!
//! The order is a list of pair positions, computed over every pair (83k for RLAIF-V) without
//! building a row for each: the table draws only the rows in view ([`Row::new`] for those), and
//! the pair view's ◀ ▶ walk the same order ([`crate::navigate`]).

use dama_core::Band;
use dama_data::{DatasetStats, PreferencePair, Status};

use crate::session::{ScoreState, Session};

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Position in the session.
    pub index: usize,
    pub id: String,
    pub delta: Option<f64>,
    pub alpha_d: Option<f64>,
    pub band: Option<Band>,
    pub score: ScoreState,
    /// Sub-sentences of the chosen and rejected answer (p, q).
    pub p: usize,
    pub q: usize,
    /// Characters of the chosen and rejected answer.
    pub chosen_chars: usize,
    pub rejected_chars: usize,
    pub status: Status,
    pub swapped: bool,
    pub edited: bool,
    pub reviewed: bool,
    pub tags: Vec<String>,
    pub has_note: bool,
}

fn band_of(p: &PreferencePair, stats: Option<&DatasetStats>) -> Option<Band> {
    stats
        .and_then(|s| s.bands.as_ref())
        .zip(p.delta.filter(|_| p.is_kept()))
        .map(|(b, d)| b.band(d))
}

impl Row {
    pub fn new(session: &Session, index: usize, stats: Option<&DatasetStats>) -> Self {
        let p = &session.pairs[index];
        let subs = p.sub_sentences.as_ref();
        Row {
            index,
            id: p.id.clone(),
            delta: p.delta,
            alpha_d: stats.and_then(|s| s.alpha_d(p.is_kept(), p.delta)),
            band: band_of(p, stats),
            score: session.score_state(index),
            p: subs.map_or(0, |s| s.chosen.len()),
            q: subs.map_or(0, |s| s.rejected.len()),
            chosen_chars: p.chosen.chars().count(),
            rejected_chars: p.rejected.chars().count(),
            status: p.annotation.status,
            swapped: p.annotation.swapped,
            edited: p.annotation.edited,
            reviewed: p.annotation.reviewed,
            tags: p.annotation.tags.clone(),
            has_note: !p.annotation.note.is_empty(),
        }
    }

    /// Short words for the annotation column: "drop", "swapped", "edited", "score pending",
    /// "reviewed", "note".
    pub fn state_words(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.status == Status::Drop {
            out.push("drop");
        }
        if self.swapped {
            out.push("swapped");
        }
        if self.edited {
            out.push("edited");
        }
        if matches!(self.score, ScoreState::Pending { .. }) {
            out.push("score pending");
        }
        if self.reviewed {
            out.push("reviewed");
        }
        if self.has_note {
            out.push("note");
        }
        out
    }
}

fn state_count(session: &Session, i: usize) -> usize {
    let p = &session.pairs[i];
    let a = &p.annotation;
    [
        a.status == Status::Drop,
        a.swapped,
        a.edited,
        matches!(session.score_state(i), ScoreState::Pending { .. }),
        a.reviewed,
        !a.note.is_empty(),
    ]
    .into_iter()
    .filter(|&b| b)
    .count()
}

pub fn band_name(b: Band) -> &'static str {
    match b {
        Band::Hard => "hard",
        Band::Normal => "normal",
        Band::Easy => "easy",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Column {
    #[default]
    Index,
    Id,
    Delta,
    AlphaD,
    Subs,
    Length,
    State,
}

impl Column {
    pub const ALL: [Column; 7] = [
        Column::Index,
        Column::Id,
        Column::Delta,
        Column::AlphaD,
        Column::Subs,
        Column::Length,
        Column::State,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Column::Index => "#",
            Column::Id => "id",
            Column::Delta => "δ",
            Column::AlphaD => "α_D",
            Column::Subs => "p / q",
            Column::Length => "chars w / l",
            Column::State => "annotation",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sort {
    pub column: Column,
    pub descending: bool,
}

impl Sort {
    /// A click on `column`'s header: the same column flips direction, another starts ascending.
    pub fn click(self, column: Column) -> Sort {
        Sort {
            column,
            descending: self.column == column && !self.descending,
        }
    }

    /// "δ ▲" for the pair view's position line.
    pub fn describe(self) -> String {
        format!(
            "{} {}",
            self.column.title(),
            if self.descending { "▼" } else { "▲" }
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusFilter {
    #[default]
    All,
    Kept,
    Dropped,
    Curated,
    Unscored,
    Pending,
    Unreviewed,
}

impl StatusFilter {
    pub const ALL: [StatusFilter; 7] = [
        StatusFilter::All,
        StatusFilter::Kept,
        StatusFilter::Dropped,
        StatusFilter::Curated,
        StatusFilter::Unscored,
        StatusFilter::Pending,
        StatusFilter::Unreviewed,
    ];

    /// The `<option value>` and its label.
    pub fn value(self) -> &'static str {
        match self {
            StatusFilter::All => "",
            StatusFilter::Kept => "kept",
            StatusFilter::Dropped => "dropped",
            StatusFilter::Curated => "curated",
            StatusFilter::Unscored => "unscored",
            StatusFilter::Pending => "pending",
            StatusFilter::Unreviewed => "unreviewed",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            StatusFilter::All => "all",
            StatusFilter::Kept => "kept",
            StatusFilter::Dropped => "dropped",
            StatusFilter::Curated => "changed here",
            StatusFilter::Unscored => "unscored",
            StatusFilter::Pending => "edited, score pending",
            StatusFilter::Unreviewed => "not reviewed",
        }
    }

    pub fn from_value(v: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|f| f.value() == v)
            .unwrap_or_default()
    }
}

/// What the table shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    /// Case-insensitive words, all of which must occur in the id, question, answers, tags or
    /// note.
    pub text: String,
    /// Only pairs of this band (kept, scored pairs).
    pub band: Option<Band>,
    pub status: StatusFilter,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// "hard band, not reviewed, “cat”" for the pair view's position line.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.band {
            parts.push(format!("{} band", band_name(b)));
        }
        if self.status != StatusFilter::All {
            parts.push(self.status.label().to_owned());
        }
        if !self.text.trim().is_empty() {
            parts.push(format!("“{}”", self.text.trim()));
        }
        parts.join(", ")
    }
}

/// A filter's words, prepared once per filtering: ASCII words are matched without allocating.
struct Words(Vec<String>);

impl Words {
    fn new(text: &str) -> Self {
        Words(text.split_whitespace().map(str::to_lowercase).collect())
    }

    fn matches(&self, p: &PreferencePair) -> bool {
        let fields = [
            p.id.as_str(),
            &p.question,
            &p.chosen,
            &p.rejected,
            &p.annotation.note,
        ];
        self.0.iter().all(|w| {
            fields.iter().any(|f| contains_ci(f, w))
                || p.annotation.tags.iter().any(|t| contains_ci(t, w))
        })
    }
}

/// `needle` (lowercase) occurs in `hay`, ignoring case: bytewise for ASCII needles (the common
/// case, and the fast one at 83k pairs per keystroke), through `to_lowercase` otherwise.
fn contains_ci(hay: &str, needle: &str) -> bool {
    if needle.is_ascii() {
        let (h, n) = (hay.as_bytes(), needle.as_bytes());
        n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
    } else {
        hay.to_lowercase().contains(needle)
    }
}

/// Missing values (unscored, dropped) sort last in both directions.
fn cmp_opt(a: Option<f64>, b: Option<f64>, descending: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a, b) {
        (Some(x), Some(y)) => {
            let o = x.total_cmp(&y);
            if descending { o.reverse() } else { o }
        }
        (Some(_), None) => Less,
        (None, Some(_)) => Greater,
        (None, None) => Equal,
    }
}

/// The positions of the pairs `filter` lets through, sorted by `sort` (ties keep dataset
/// order). `stats` are the session's (for bands and α_D), computed once by the caller.
pub fn order(
    session: &Session,
    stats: Option<&DatasetStats>,
    filter: &Filter,
    sort: Sort,
) -> Vec<u32> {
    let words = Words::new(&filter.text);
    let status_ok = |i: usize, p: &PreferencePair| match filter.status {
        StatusFilter::All => true,
        StatusFilter::Kept => p.annotation.status == Status::Keep,
        StatusFilter::Dropped => p.annotation.status == Status::Drop,
        StatusFilter::Curated => {
            p.annotation != session.loaded[i].annotation || p.annotation.reviewed
        }
        StatusFilter::Unscored => p.delta.is_none(),
        StatusFilter::Pending => matches!(session.score_state(i), ScoreState::Pending { .. }),
        StatusFilter::Unreviewed => !p.annotation.reviewed,
    };
    let mut out: Vec<u32> = session
        .pairs
        .iter()
        .enumerate()
        .filter(|&(i, p)| {
            status_ok(i, p)
                && filter.band.is_none_or(|b| band_of(p, stats) == Some(b))
                && words.matches(p)
        })
        .map(|(i, _)| i as u32)
        .collect();
    let d = sort.descending;
    let flip = |o: std::cmp::Ordering| if d { o.reverse() } else { o };
    let pairs = &session.pairs;
    let pair = |i: &u32| &pairs[*i as usize];
    let alpha = |i: &u32| {
        let p = pair(i);
        stats.and_then(|s| s.alpha_d(p.is_kept(), p.delta))
    };
    let subs = |i: &u32| {
        pair(i).sub_sentences.as_ref().map_or((0, 0), |s| {
            (s.chosen.len() + s.rejected.len(), s.chosen.len())
        })
    };
    let chars = |i: &u32| pair(i).chosen.chars().count() + pair(i).rejected.chars().count();
    match sort.column {
        Column::Index => {
            if d {
                out.reverse()
            }
        }
        Column::Id => out.sort_by(|a, b| flip(pair(a).id.cmp(&pair(b).id))),
        Column::Delta => out.sort_by(|a, b| cmp_opt(pair(a).delta, pair(b).delta, d)),
        Column::AlphaD => out.sort_by(|a, b| cmp_opt(alpha(a), alpha(b), d)),
        Column::Subs => out.sort_by(|a, b| flip(subs(a).cmp(&subs(b)))),
        Column::Length => out.sort_by_cached_key(|i| {
            let c = chars(i);
            if d { usize::MAX - c } else { c }
        }),
        Column::State => out.sort_by_cached_key(|i| {
            let c = state_count(session, *i as usize);
            if d { usize::MAX - c } else { c }
        }),
    }
    out
}

/// The table's rows for `session`, filtered and sorted: every row built (tests and small sets).
pub fn rows(session: &Session, filter: &Filter, sort: Sort) -> Vec<Row> {
    let stats = session.stats();
    order(session, stats.as_ref(), filter, sort)
        .into_iter()
        .map(|i| Row::new(session, i as usize, stats.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::subs_key;
    use dama_data::Scores;

    fn scored() -> Session {
        let mut s = crate::session::tests::session();
        for (i, (c, r)) in [(25.0, 20.0), (22.0, 22.5), (24.0, 23.0)]
            .into_iter()
            .enumerate()
        {
            let subs = s.pairs[i].sub_sentences.clone().unwrap();
            let id = s.pairs[i].id.clone();
            let scores = Scores {
                chosen: vec![c; subs.chosen.len()],
                rejected: vec![r; subs.rejected.len()],
            };
            s.apply_scores("m", &id, subs_key(&subs), scores).unwrap();
        }
        s
    }

    fn ids(rows: &[Row]) -> Vec<&str> {
        rows.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn sorting_by_delta_both_ways_with_unscored_last() {
        let mut s = scored();
        let by_delta = Sort::default().click(Column::Delta);
        assert_eq!(
            ids(&rows(&s, &Filter::default(), by_delta)),
            ["b", "c", "a"]
        );
        let desc = by_delta.click(Column::Delta);
        assert!(desc.descending);
        assert_eq!(ids(&rows(&s, &Filter::default(), desc)), ["a", "c", "b"]);
        s.edit_sub_sentence(0, crate::session::Side::Chosen, 0, "x");
        assert_eq!(ids(&rows(&s, &Filter::default(), desc)), ["c", "b", "a"]);
        assert_eq!(
            ids(&rows(&s, &Filter::default(), by_delta)),
            ["b", "c", "a"]
        );
    }

    #[test]
    fn alpha_d_and_bands_follow_dama_core() {
        let s = scored();
        let stats = s.stats().unwrap();
        let all = rows(&s, &Filter::default(), Sort::default());
        for r in &all {
            let d = r.delta.unwrap();
            assert_eq!(
                r.alpha_d,
                Some(dama_core::alpha_d(d, stats.delta_mean.unwrap()))
            );
            assert_eq!(r.band, Some(stats.bands.unwrap().band(d)));
        }
        assert_eq!(all[1].band, Some(Band::Hard));
        let hard = Filter {
            band: Some(Band::Hard),
            ..Filter::default()
        };
        assert_eq!(ids(&rows(&s, &hard, Sort::default())), ["b"]);
    }

    #[test]
    fn filters_by_text_status_and_curation() {
        let mut s = scored();
        s.set_status(2, Status::Drop);
        s.set_tags(1, "Blurry");
        let f = |text: &str, status| Filter {
            text: text.into(),
            band: None,
            status,
        };
        assert_eq!(
            ids(&rows(
                &s,
                &f("CIRCLE red", StatusFilter::All),
                Sort::default()
            )),
            ["a"]
        );
        assert_eq!(
            ids(&rows(&s, &f("blurry", StatusFilter::All), Sort::default())),
            ["b"]
        );
        assert_eq!(
            ids(&rows(&s, &f("", StatusFilter::Dropped), Sort::default())),
            ["c"]
        );
        assert_eq!(
            ids(&rows(&s, &f("", StatusFilter::Kept), Sort::default())),
            ["a", "b"]
        );
        assert_eq!(
            ids(&rows(&s, &f("", StatusFilter::Curated), Sort::default())),
            ["b", "c"]
        );
        let dropped = &rows(&s, &f("", StatusFilter::Dropped), Sort::default())[0];
        assert_eq!(
            (dropped.alpha_d, dropped.band),
            (None, None),
            "dropped pairs have no α_D"
        );
        assert_eq!(dropped.state_words(), ["drop"]);
    }

    #[test]
    fn words_match_case_insensitively_in_every_field() {
        let mut s = scored();
        s.set_note(2, "Größe prüfen");
        s.set_tags(0, "Zebra");
        let f = |text: &str| Filter {
            text: text.into(),
            ..Filter::default()
        };
        assert_eq!(
            ids(&rows(&s, &f("GRÖSSE"), Sort::default())),
            Vec::<&str>::new()
        );
        assert_eq!(ids(&rows(&s, &f("größe"), Sort::default())), ["c"]);
        assert_eq!(ids(&rows(&s, &f("PRÜFEN"), Sort::default())), ["c"]);
        assert_eq!(ids(&rows(&s, &f("zeb"), Sort::default())), ["a"]);
        assert_eq!(ids(&rows(&s, &f("what blue"), Sort::default())), ["a"]);
        assert_eq!(
            ids(&rows(&s, &f("what four"), Sort::default())),
            Vec::<&str>::new()
        );
        assert!(contains_ci("abc", ""));
    }

    #[test]
    fn new_status_filters_and_describing_them() {
        let mut s = scored();
        s.set_reviewed(1, true);
        s.edit_sub_sentence(2, crate::session::Side::Chosen, 0, "Maybe.");
        let f = |status| Filter {
            status,
            ..Filter::default()
        };
        assert_eq!(
            ids(&rows(&s, &f(StatusFilter::Pending), Sort::default())),
            ["c"]
        );
        assert_eq!(
            ids(&rows(&s, &f(StatusFilter::Unreviewed), Sort::default())),
            ["a", "c"]
        );
        assert_eq!(
            rows(&s, &f(StatusFilter::Pending), Sort::default())[0].state_words(),
            ["edited", "score pending"]
        );
        for v in StatusFilter::ALL {
            assert_eq!(StatusFilter::from_value(v.value()), v);
        }
        let hard = Filter {
            band: Some(Band::Hard),
            status: StatusFilter::Unreviewed,
            text: " cat ".into(),
        };
        assert_eq!(hard.describe(), "hard band, not reviewed, “cat”");
        assert_eq!(Sort::default().click(Column::Delta).describe(), "δ ▲");
    }

    #[test]
    fn every_column_sorts_both_ways_stably() {
        let s = scored();
        for c in Column::ALL {
            let asc = Sort::default().click(c);
            let up = order(&s, s.stats().as_ref(), &Filter::default(), asc);
            assert_eq!(up.len(), 3, "{c:?}");
            let down = order(&s, s.stats().as_ref(), &Filter::default(), asc.click(c));
            assert_eq!(down.len(), 3, "{c:?}");
        }
        let by_len = order(
            &s,
            None,
            &Filter::default(),
            Sort::default().click(Column::Length),
        );
        assert_eq!(by_len, [2, 1, 0]);
        let by_index_down = order(
            &s,
            None,
            &Filter::default(),
            Sort {
                column: Column::Index,
                descending: true,
            },
        );
        assert_eq!(by_index_down, [2, 1, 0]);
    }
}

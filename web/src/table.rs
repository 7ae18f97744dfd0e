//! The rows of the pair table: what each column shows, sorting and filtering. δ̄, α_D and the
//! bands come from `dama_data::dataset_stats` (dama-core), computed over the kept pairs.

use dama_core::Band;
use dama_data::{DatasetStats, PreferencePair, Status};

use crate::session::Session;

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Position in the session.
    pub index: usize,
    pub id: String,
    pub delta: Option<f64>,
    pub alpha_d: Option<f64>,
    pub band: Option<Band>,
    /// Sub-sentences of the chosen and rejected answer (p, q).
    pub p: usize,
    pub q: usize,
    /// Characters of the chosen and rejected answer.
    pub chosen_chars: usize,
    pub rejected_chars: usize,
    pub status: Status,
    pub swapped: bool,
    pub edited: bool,
    pub tags: Vec<String>,
    pub has_note: bool,
}

impl Row {
    fn new(index: usize, p: &PreferencePair, stats: Option<&DatasetStats>) -> Self {
        let subs = p.sub_sentences.as_ref();
        Row {
            index,
            id: p.id.clone(),
            delta: p.delta,
            alpha_d: stats.and_then(|s| s.alpha_d(p.is_kept(), p.delta)),
            band: stats
                .and_then(|s| s.bands.as_ref())
                .zip(p.delta.filter(|_| p.is_kept()))
                .map(|(b, d)| b.band(d)),
            p: subs.map_or(0, |s| s.chosen.len()),
            q: subs.map_or(0, |s| s.rejected.len()),
            chosen_chars: p.chosen.chars().count(),
            rejected_chars: p.rejected.chars().count(),
            status: p.annotation.status,
            swapped: p.annotation.swapped,
            edited: p.annotation.edited,
            tags: p.annotation.tags.clone(),
            has_note: !p.annotation.note.is_empty(),
        }
    }

    /// Short words for the annotation column: "drop", "swapped", "edited", "note".
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
        if self.has_note {
            out.push("note");
        }
        out
    }
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusFilter {
    #[default]
    All,
    Kept,
    Dropped,
    Curated,
    Unscored,
}

/// What the table shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    /// Case-insensitive words, all of which must occur in the id, question, answers or tags.
    pub text: String,
    /// Only pairs of this band (kept, scored pairs).
    pub band: Option<Band>,
    pub status: StatusFilter,
}

impl Filter {
    /// `changed`: the pair's annotation differs from the one it was loaded with.
    fn matches(&self, row: &Row, pair: &PreferencePair, changed: bool) -> bool {
        let status_ok = match self.status {
            StatusFilter::All => true,
            StatusFilter::Kept => row.status == Status::Keep,
            StatusFilter::Dropped => row.status == Status::Drop,
            StatusFilter::Curated => changed,
            StatusFilter::Unscored => row.delta.is_none(),
        };
        if !status_ok || self.band.is_some_and(|b| row.band != Some(b)) {
            return false;
        }
        let words: Vec<String> = self
            .text
            .split_whitespace()
            .map(str::to_lowercase)
            .collect();
        if words.is_empty() {
            return true;
        }
        let hay = [
            pair.id.as_str(),
            &pair.question,
            &pair.chosen,
            &pair.rejected,
            &row.tags.join(" "),
            &pair.annotation.note,
        ]
        .join("\n")
        .to_lowercase();
        words.iter().all(|w| hay.contains(w.as_str()))
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

/// The table's rows for `session`, filtered and sorted (ties keep dataset order).
pub fn rows(session: &Session, filter: &Filter, sort: Sort) -> Vec<Row> {
    let stats = session.stats();
    let mut rows: Vec<Row> = session
        .pairs
        .iter()
        .enumerate()
        .map(|(i, p)| (Row::new(i, p, stats.as_ref()), p))
        .filter(|(r, p)| filter.matches(r, p, p.annotation != session.loaded[r.index].annotation))
        .map(|(r, _)| r)
        .collect();
    let d = sort.descending;
    let flip = |o: std::cmp::Ordering| if d { o.reverse() } else { o };
    rows.sort_by(|a, b| match sort.column {
        Column::Index => flip(a.index.cmp(&b.index)),
        Column::Id => flip(a.id.cmp(&b.id)),
        Column::Delta => cmp_opt(a.delta, b.delta, d),
        Column::AlphaD => cmp_opt(a.alpha_d, b.alpha_d, d),
        Column::Subs => flip((a.p + a.q, a.p).cmp(&(b.p + b.q, b.p))),
        Column::Length => {
            flip((a.chosen_chars + a.rejected_chars).cmp(&(b.chosen_chars + b.rejected_chars)))
        }
        Column::State => flip(a.state_words().len().cmp(&b.state_words().len())),
    });
    rows
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
}

//! Walking the pairs in the table's order: the pair view's ◀ ▶ and "next hardest unreviewed".
//! `order` is [`crate::table::order`]'s list, so both follow the current sort and filter.

use crate::session::Session;

/// Where the pair view stands: the pair shown and its place in the order when it was reached
/// (kept so that ◀ ▶ still work after the pair left the order, e.g. dropped under "kept").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    pub pair: usize,
    pub place: usize,
}

impl Cursor {
    /// The pair's place in `order` now, if it is still there.
    pub fn place_in(&self, order: &[u32]) -> Option<usize> {
        if order.get(self.place) == Some(&(self.pair as u32)) {
            return Some(self.place);
        }
        order.iter().position(|&i| i as usize == self.pair)
    }

    /// The pair `by` places on (−1: ◀, +1: ▶), stopping at the ends; `None` when there is none.
    pub fn step(&self, order: &[u32], by: isize) -> Option<Cursor> {
        let target = match self.place_in(order) {
            Some(p) => p as isize + by,
            // The pair left the order: the one that took its place is "next".
            None if by > 0 => self.place as isize + by - 1,
            None => self.place as isize + by,
        };
        let place = usize::try_from(target).ok().filter(|&p| p < order.len())?;
        Some(Cursor {
            pair: order[place] as usize,
            place,
        })
    }

    /// A pair chosen in the table at `place`.
    pub fn at(order: &[u32], place: usize) -> Option<Cursor> {
        order.get(place).map(|&i| Cursor {
            pair: i as usize,
            place,
        })
    }
}

/// The hardest (lowest δ) kept pair of `order` that nobody has reviewed, other than `current`;
/// before anything is scored, the first unreviewed pair in order.
pub fn hardest_unreviewed(
    session: &Session,
    order: &[u32],
    current: Option<usize>,
) -> Option<Cursor> {
    let candidates = order
        .iter()
        .enumerate()
        .map(|(place, &i)| (place, i as usize))
        .filter(|&(_, i)| {
            Some(i) != current
                && !session.pairs[i].annotation.reviewed
                && session.pairs[i].is_kept()
        });
    let scored = candidates
        .clone()
        .filter_map(|(place, i)| session.pairs[i].delta.map(|d| (d, place, i)))
        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    match scored {
        Some((_, place, pair)) => Some(Cursor { pair, place }),
        None => candidates
            .map(|(place, pair)| Cursor { pair, place })
            .next(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::subs_key;
    use crate::session::tests::{scores, session};
    use dama_data::Status;

    #[test]
    fn steps_follow_the_order_and_stop_at_the_ends() {
        let order = [2u32, 0, 1];
        let c = Cursor::at(&order, 0).unwrap();
        assert_eq!(c.pair, 2);
        assert_eq!(c.step(&order, -1), None);
        let c = c.step(&order, 1).unwrap();
        assert_eq!((c.pair, c.place), (0, 1));
        let c = c.step(&order, 1).unwrap();
        assert_eq!(c.pair, 1);
        assert_eq!(c.step(&order, 1), None);
    }

    #[test]
    fn a_pair_that_left_the_order_still_has_neighbours() {
        // Pair 0 at place 1 was dropped under the "kept" filter: the order lost it.
        let c = Cursor { pair: 0, place: 1 };
        let order = [2u32, 1, 3];
        assert_eq!(
            c.step(&order, 1).unwrap().pair,
            1,
            "the one that took its place"
        );
        assert_eq!(c.step(&order, -1).unwrap().pair, 2);
        // A pair found elsewhere (the order was re-sorted) steps from where it is now.
        let c = Cursor { pair: 3, place: 0 };
        assert_eq!(c.place_in(&order), Some(2));
        assert_eq!(c.step(&order, -1).unwrap().pair, 1);
    }

    #[test]
    fn the_hardest_unreviewed_kept_pair_comes_next() {
        let mut s = session();
        for (i, (c, r)) in [(25.0, 20.0), (22.0, 22.5), (24.0, 23.0)]
            .into_iter()
            .enumerate()
        {
            let subs = s.pairs[i].sub_sentences.clone().unwrap();
            let id = s.pairs[i].id.clone();
            let sc = scores(&vec![c; subs.chosen.len()], &vec![r; subs.rejected.len()]);
            s.apply_scores("m", &id, subs_key(&subs), sc).unwrap();
        }
        let order = [0u32, 1, 2];
        assert_eq!(hardest_unreviewed(&s, &order, None).unwrap().pair, 1);
        s.set_reviewed(1, true);
        assert_eq!(hardest_unreviewed(&s, &order, None).unwrap().pair, 2);
        assert_eq!(hardest_unreviewed(&s, &order, Some(2)).unwrap().pair, 0);
        s.set_status(2, Status::Drop);
        assert_eq!(hardest_unreviewed(&s, &order, None).unwrap().pair, 0);
        s.set_reviewed(0, true);
        assert_eq!(hardest_unreviewed(&s, &order, None), None);
        let unscored = session();
        assert_eq!(
            hardest_unreviewed(&unscored, &[1, 2], None).unwrap().pair,
            1
        );
    }
}

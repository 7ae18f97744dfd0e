//! Which pairs make up each global batch: a seeded permutation per epoch, cut into batches of N,
//! with a cursor that a checkpoint saves so that a resumed run sees exactly the same batches.

use dama_core::Xoshiro256;
use serde::{Deserialize, Serialize};

/// Position in the data stream: the next batch is `epoch`'s permutation from `offset` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    pub offset: usize,
}

/// The data order of a run: `len` pairs, global batch `batch_size`, `epochs` passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataOrder {
    pub len: usize,
    pub batch_size: usize,
    pub epochs: u64,
    pub seed: u64,
    /// Keep the file order (the authors' `SequentialSampler`) instead of shuffling each epoch.
    pub shuffle: bool,
}

impl DataOrder {
    /// Optimizer steps in the whole run; the last batch of an epoch may be smaller than N (as
    /// the HF Trainer keeps it), and K is then taken of that smaller batch.
    pub fn total_steps(&self) -> u64 {
        self.epochs * self.len.div_ceil(self.batch_size) as u64
    }

    /// The permutation of epoch `epoch`: Fisher–Yates with a stream seeded from (seed, epoch),
    /// so any epoch can be rebuilt on resume without replaying earlier ones.
    pub fn permutation(&self, epoch: u64) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.len).collect();
        if self.shuffle {
            let mut rng = Xoshiro256::seed_from(
                self.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17),
            );
            for i in (1..idx.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                idx.swap(i, j);
            }
        }
        idx
    }

    /// The batch at `cursor` and the cursor after it; `None` when the run is over.
    pub fn batch_at(&self, cursor: Cursor) -> Option<(Vec<usize>, Cursor)> {
        if cursor.epoch >= self.epochs || self.len == 0 {
            return None;
        }
        let perm = self.permutation(cursor.epoch);
        let end = (cursor.offset + self.batch_size).min(self.len);
        let batch = perm[cursor.offset..end].to_vec();
        let next = if end == self.len {
            Cursor {
                epoch: cursor.epoch + 1,
                offset: 0,
            }
        } else {
            Cursor {
                epoch: cursor.epoch,
                offset: end,
            }
        };
        Some((batch, next))
    }

    /// Fractional epoch at a cursor, for logging.
    pub fn epoch_progress(&self, cursor: Cursor) -> f64 {
        cursor.epoch as f64 + cursor.offset as f64 / self.len.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(shuffle: bool) -> DataOrder {
        DataOrder {
            len: 10,
            batch_size: 4,
            epochs: 2,
            seed: 3,
            shuffle,
        }
    }

    #[test]
    fn every_pair_once_per_epoch_with_a_short_last_batch() {
        let o = order(true);
        assert_eq!(o.total_steps(), 6);
        let mut cursor = Cursor::default();
        let mut seen = [0; 10];
        let mut sizes = Vec::new();
        while let Some((batch, next)) = o.batch_at(cursor) {
            sizes.push(batch.len());
            for i in batch {
                seen[i] += 1;
            }
            cursor = next;
        }
        assert_eq!(sizes, [4, 4, 2, 4, 4, 2]);
        assert!(seen.iter().all(|&c| c == 2));
        assert_eq!(
            cursor,
            Cursor {
                epoch: 2,
                offset: 0
            }
        );
    }

    #[test]
    fn epochs_differ_seeds_repeat_and_sequential_keeps_file_order() {
        let o = order(true);
        assert_ne!(o.permutation(0), o.permutation(1));
        assert_eq!(o.permutation(1), order(true).permutation(1));
        assert_ne!(o.permutation(0), DataOrder { seed: 4, ..o }.permutation(0));
        assert_eq!(order(false).permutation(1), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn resuming_from_a_cursor_gives_the_same_batches() {
        let o = order(true);
        let all: Vec<Vec<usize>> =
            std::iter::successors(o.batch_at(Cursor::default()), |(_, c)| o.batch_at(*c))
                .map(|(b, _)| b)
                .collect();
        let (_, after_three) = (0..3).fold((Vec::new(), Cursor::default()), |(_, c), _| {
            o.batch_at(c).unwrap()
        });
        let rest: Vec<Vec<usize>> =
            std::iter::successors(o.batch_at(after_three), |(_, c)| o.batch_at(*c))
                .map(|(b, _)| b)
                .collect();
        assert_eq!(rest, all[3..]);
    }
}

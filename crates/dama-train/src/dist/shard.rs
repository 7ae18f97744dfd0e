//! The flat layout ZeRO shards by: every trainable parameter, in the optimizer's order, laid
//! end to end in one virtual vector of `total` elements, padded to a multiple of the world
//! size and cut into equal shards, one per rank (DeepSpeed's layout). Equal shards are what
//! `all_gather` and `reduce_scatter` need; the padding (fewer than `world` elements) belongs to
//! no parameter. A parameter may straddle two shards: each rank holds a [`Piece`] of it.

use std::ops::Range;

/// One rank's part of one parameter: elements `start .. start + len` of its flattened values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Index into the parameter list.
    pub param: usize,
    pub start: usize,
    pub len: usize,
    /// Where the piece starts in the flat vector.
    pub flat_start: usize,
}

/// The flat layout of a parameter list over `world` ranks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatLayout {
    /// Elements of each parameter.
    pub sizes: Vec<usize>,
    /// Where each parameter starts in the flat vector.
    pub offsets: Vec<usize>,
    pub total: usize,
    pub world: usize,
    /// Elements per shard: ⌈total / world⌉.
    pub shard_len: usize,
}

impl FlatLayout {
    pub fn new(sizes: Vec<usize>, world: usize) -> Self {
        assert!(world > 0, "a world has at least one rank");
        let mut offsets = Vec::with_capacity(sizes.len());
        let mut total = 0;
        for &s in &sizes {
            offsets.push(total);
            total += s;
        }
        Self {
            sizes,
            offsets,
            total,
            world,
            shard_len: total.div_ceil(world),
        }
    }

    /// The flat elements rank `rank` owns (the last shards may end early or be empty: padding).
    pub fn shard(&self, rank: usize) -> Range<usize> {
        let start = (rank * self.shard_len).min(self.total);
        start..((rank + 1) * self.shard_len).min(self.total)
    }

    /// The pieces of parameters inside the flat range `range`, in order.
    pub fn pieces_in(&self, range: Range<usize>) -> Vec<Piece> {
        let mut out = Vec::new();
        for (param, (&off, &size)) in self.offsets.iter().zip(&self.sizes).enumerate() {
            let (a, b) = (range.start.max(off), range.end.min(off + size));
            if a < b {
                out.push(Piece {
                    param,
                    start: a - off,
                    len: b - a,
                    flat_start: a,
                });
            }
        }
        out
    }

    /// The flat vector cut into consecutive windows of at most `bucket` elements (the last
    /// shorter), each as the pieces of parameters in it: the buckets of a collective.
    pub fn buckets(&self, bucket: usize) -> Vec<Vec<Piece>> {
        (0..self.total)
            .step_by(bucket.max(1))
            .map(|start| self.pieces_in(start..(start + bucket.max(1)).min(self.total)))
            .collect()
    }

    /// The pieces rank `rank` owns.
    pub fn pieces(&self, rank: usize) -> Vec<Piece> {
        self.pieces_in(self.shard(rank))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_equal_cover_everything_once_and_split_parameters() {
        let layout = FlatLayout::new(vec![5, 3, 0, 9], 3);
        assert_eq!(layout.total, 17);
        assert_eq!(layout.shard_len, 6);
        assert_eq!(layout.shard(2), 12..17);
        let mut seen = vec![0; 4];
        let mut flat = 0;
        for r in 0..3 {
            for p in layout.pieces(r) {
                assert_eq!(p.flat_start, flat, "pieces tile the flat vector");
                assert_eq!(p.flat_start, layout.offsets[p.param] + p.start);
                seen[p.param] += p.len;
                flat += p.len;
            }
        }
        assert_eq!(seen, [5, 3, 0, 9]);
        // rank 0 holds param 0 whole and the first element of param 1
        assert_eq!(
            layout.pieces(0),
            [
                Piece {
                    param: 0,
                    start: 0,
                    len: 5,
                    flat_start: 0
                },
                Piece {
                    param: 1,
                    start: 0,
                    len: 1,
                    flat_start: 5
                }
            ]
        );
        // more ranks than elements: the extra shards are empty
        let tiny = FlatLayout::new(vec![2], 4);
        assert_eq!(tiny.shard_len, 1);
        assert_eq!(tiny.shard(3), 2..2);
        assert!(tiny.pieces(3).is_empty());
    }
}

//! How a batch of encoded pairs is laid out in rows of tokens, host side.
//!
//! `Separate`: 2B right-padded rows, every chosen and every rejected conversation on its own
//! (what transformers computes). `Shared`: B rows `[prefix | chosen tail | rejected tail]`,
//! where both tails attend to the prefix and causally to themselves but never to each other,
//! and the rejected tail's positions restart where the prefix ends. Both give every scored
//! token the same context, positions and therefore (up to float order) the same log-prob; the
//! shared layout computes the prefix (system prompt, 576 image tokens, question) once.

use crate::error::{LlavaError, Result};
use crate::template::EncodedPair;

/// One segment of a row: the prefix (branch 0) or a tail (branch ≥ 1).
struct Piece<'a> {
    tokens: &'a [u32],
    first_position: usize,
    branch: u32,
}

/// A batch laid out for the model: flat `(rows·seq_len)` vectors, row-major.
#[derive(Debug, Clone)]
pub struct Layout {
    pub rows: usize,
    pub seq_len: usize,
    pub input_ids: Vec<u32>,
    pub positions: Vec<u32>,
    /// Branch of each token (0: shared prefix or a whole sequence; 1, 2: tails); `u32::MAX`
    /// for padding.
    pub branch: Vec<u32>,
    /// For every image token slot in row order: (flat index, pair index).
    pub image_slots: Vec<(usize, usize)>,
    /// Flat index of the hidden state that predicts each scored token.
    pub score_positions: Vec<u32>,
    pub score_targets: Vec<u32>,
    /// 0..B for chosen answers, B..2B for rejected ones.
    pub score_segments: Vec<u32>,
    pub chosen_tokens: Vec<usize>,
    pub rejected_tokens: Vec<usize>,
}

const PAD: u32 = u32::MAX;

impl Layout {
    /// Lays out `pairs` separately (`shared = false`) or with a shared prefix.
    /// `image_token_id` marks the slots the image features fill; `pad_id` fills padding.
    pub fn build(
        pairs: &[EncodedPair],
        shared: bool,
        image_token_id: u32,
        pad_id: u32,
    ) -> Result<Self> {
        let b = pairs.len();
        if b == 0 {
            return Err(LlavaError::Invalid("an empty batch".into()));
        }
        // rows[r] = (pair index, pieces)
        let mut rows: Vec<(usize, Vec<Piece<'_>>)> = Vec::new();
        if shared {
            for (i, p) in pairs.iter().enumerate() {
                let n = p.shared_prefix;
                rows.push((
                    i,
                    vec![
                        Piece {
                            tokens: &p.chosen.input_ids[..n],
                            first_position: 0,
                            branch: 0,
                        },
                        Piece {
                            tokens: &p.chosen.input_ids[n..],
                            first_position: n,
                            branch: 1,
                        },
                        Piece {
                            tokens: &p.rejected.input_ids[n..],
                            first_position: n,
                            branch: 2,
                        },
                    ],
                ));
            }
        } else {
            for side in 0..2 {
                for (i, p) in pairs.iter().enumerate() {
                    let a = if side == 0 { &p.chosen } else { &p.rejected };
                    rows.push((
                        i,
                        vec![Piece {
                            tokens: &a.input_ids,
                            first_position: 0,
                            branch: 0,
                        }],
                    ));
                }
            }
        }
        let seq_len = rows
            .iter()
            .map(|(_, ps)| ps.iter().map(|p| p.tokens.len()).sum::<usize>())
            .max()
            .unwrap_or(0);
        let n = rows.len() * seq_len;
        let mut l = Layout {
            rows: rows.len(),
            seq_len,
            input_ids: vec![pad_id; n],
            positions: vec![0; n],
            branch: vec![PAD; n],
            image_slots: Vec::new(),
            score_positions: Vec::new(),
            score_targets: Vec::new(),
            score_segments: Vec::new(),
            chosen_tokens: pairs.iter().map(|p| p.chosen.scored_tokens()).collect(),
            rejected_tokens: pairs.iter().map(|p| p.rejected.scored_tokens()).collect(),
        };
        // flat index of each piece's first token, per row
        let mut starts: Vec<Vec<usize>> = Vec::with_capacity(rows.len());
        for (r, (pair, pieces)) in rows.iter().enumerate() {
            let mut at = r * seq_len;
            let mut row_starts = Vec::new();
            for piece in pieces {
                row_starts.push(at);
                for (k, &tok) in piece.tokens.iter().enumerate() {
                    l.input_ids[at + k] = tok;
                    l.positions[at + k] = (piece.first_position + k) as u32;
                    l.branch[at + k] = piece.branch;
                    if tok == image_token_id {
                        l.image_slots.push((at + k, *pair));
                    }
                }
                at += piece.tokens.len();
            }
            starts.push(row_starts);
        }
        // The hidden state before token j of a conversation: in the prefix when j − 1 is
        // there, else in the conversation's own tail.
        for side in 0..2 {
            for (i, p) in pairs.iter().enumerate() {
                let a = if side == 0 { &p.chosen } else { &p.rejected };
                let (row, prefix_len, tail) = if shared {
                    (i, p.shared_prefix, 1 + side)
                } else {
                    (side * b + i, 0, 0)
                };
                for j in a.answer_start..a.input_ids.len() {
                    let prev = j - 1;
                    let flat = if prev < prefix_len {
                        starts[row][0] + prev
                    } else {
                        starts[row][tail] + (prev - prefix_len)
                    };
                    l.score_positions.push(flat as u32);
                    l.score_targets.push(a.input_ids[j]);
                    l.score_segments.push((side * b + i) as u32);
                }
            }
        }
        Ok(l)
    }

    /// Whether flat token `i` is padding.
    pub fn is_pad(&self, i: usize) -> bool {
        self.branch[i] == PAD
    }

    /// Whether query token `q` may attend to key token `k` (flat indices in one row): the key
    /// is real, not later in position, and in the prefix or the query's own branch.
    pub fn allowed(&self, q: usize, k: usize) -> bool {
        let (bq, bk) = (self.branch[q], self.branch[k]);
        bk != PAD && self.positions[k] <= self.positions[q] && (bk == 0 || bk == bq)
    }

    /// Tokens the layout runs through the language model, padding included.
    pub fn tokens(&self) -> usize {
        self.rows * self.seq_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::EncodedAnswer;

    fn answer(ids: &[u32], start: usize) -> EncodedAnswer {
        EncodedAnswer {
            input_ids: ids.to_vec(),
            answer_start: start,
            boundary_merged: false,
            truncated: false,
        }
    }

    fn pair() -> EncodedPair {
        // <s> img img q | chosen 10 11 </s> ; rejected 20 </s>
        EncodedPair {
            chosen: answer(&[1, 9, 9, 5, 10, 11, 2], 4),
            rejected: answer(&[1, 9, 9, 5, 20, 2], 4),
            shared_prefix: 4,
        }
    }

    #[test]
    fn separate_layout_pads_right_and_scores_the_answer() {
        let l = Layout::build(&[pair()], false, 9, 0).unwrap();
        assert_eq!((l.rows, l.seq_len), (2, 7));
        assert_eq!(&l.input_ids[7..], &[1, 9, 9, 5, 20, 2, 0]);
        assert_eq!(l.image_slots, vec![(1, 0), (2, 0), (8, 0), (9, 0)]);
        assert_eq!(l.score_targets, vec![10, 11, 2, 20, 2]);
        assert_eq!(l.score_positions, vec![3, 4, 5, 7 + 3, 7 + 4]);
        assert_eq!(l.score_segments, vec![0, 0, 0, 1, 1]);
        assert_eq!((l.chosen_tokens[0], l.rejected_tokens[0]), (3, 2));
        assert!(!l.allowed(7 + 6, 7 + 6), "padding is never a key");
        assert!(l.allowed(7 + 5, 7) && !l.allowed(7 + 2, 7 + 3));
    }

    #[test]
    fn shared_layout_reuses_the_prefix_and_isolates_the_answers() {
        let l = Layout::build(&[pair()], true, 9, 0).unwrap();
        assert_eq!((l.rows, l.seq_len), (1, 4 + 3 + 2));
        assert_eq!(l.input_ids, vec![1, 9, 9, 5, 10, 11, 2, 20, 2]);
        assert_eq!(l.positions, vec![0, 1, 2, 3, 4, 5, 6, 4, 5]);
        // first answer tokens of both are predicted from the prefix's last token (flat 3)
        assert_eq!(l.score_positions, vec![3, 4, 5, 3, 7]);
        assert_eq!(l.score_targets, vec![10, 11, 2, 20, 2]);
        // rejected (flat 7) sees the prefix and itself, not the chosen tail
        assert!(l.allowed(7, 0) && l.allowed(7, 3) && l.allowed(7, 7));
        assert!(!l.allowed(7, 4) && !l.allowed(8, 5) && !l.allowed(5, 7));
        assert!(!l.allowed(3, 4), "the prefix does not see the answers");
        let row7: Vec<bool> = (0..9).map(|k| l.allowed(7, k)).collect();
        assert_eq!(
            row7,
            [true, true, true, true, false, false, false, true, false]
        );
    }

    #[test]
    fn answers_starting_at_different_tokens_share_only_the_common_prefix() {
        // a merge across the boundary moved the rejected answer's start one token later
        let p = EncodedPair {
            chosen: answer(&[1, 9, 5, 10, 2], 3),
            rejected: answer(&[1, 9, 5, 6, 20, 2], 4),
            shared_prefix: 3,
        };
        let l = Layout::build(&[p], true, 9, 0).unwrap();
        assert_eq!(l.input_ids, vec![1, 9, 5, 10, 2, 6, 20, 2]);
        assert_eq!(l.positions, vec![0, 1, 2, 3, 4, 3, 4, 5]);
        // rejected scores 20 (from its own token 6 at flat 5) and </s> (from flat 6)
        assert_eq!(l.score_targets, vec![10, 2, 20, 2]);
        assert_eq!(l.score_positions, vec![2, 3, 5, 6]);
        assert_eq!(l.rejected_tokens, vec![2]);
    }
}

//! One ranking: traders ordered by score, best first (ties: the lower user id first), kept
//! current as scores change. A score is a fixed-point integer (a return in basis points,
//! say), never a float.
//!
//! The order is held in sorted blocks of at most `2 × BLOCK` entries, a two-level B-tree:
//! moving a trader is a binary search over the blocks' last entries and a shift inside one
//! block; a top-`n` read walks the first blocks; a trader's rank is the lengths of the
//! blocks before theirs plus a binary search in it. With a million traders every one of
//! these is a few microseconds (`cargo bench -p bourse-actors --bench rankings`).

use std::cmp::Reverse;
use std::collections::HashMap;

/// Entries per block after a split.
const BLOCK: usize = 512;

/// Sort key: higher score first, then lower user id.
type Key = (Reverse<i64>, u64);

/// A trader's place in the ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Standing {
    pub user: u64,
    pub score: i64,
    /// 1 for the best.
    pub rank: usize,
}

/// Traders by score.
#[derive(Debug, Clone)]
pub struct Board {
    scores: HashMap<u64, i64>,
    /// Sorted, each non-empty and at most `2 × block` long; together, every trader once.
    blocks: Vec<Vec<Key>>,
    /// Entries per block after a split ([`BLOCK`]; smaller in tests, to cross blocks often).
    block: usize,
}

impl Default for Board {
    fn default() -> Board {
        Board::new()
    }
}

impl Board {
    /// An empty ranking.
    pub fn new() -> Board {
        Board {
            scores: HashMap::new(),
            blocks: Vec::new(),
            block: BLOCK,
        }
    }

    #[cfg(test)]
    fn with_block(block: usize) -> Board {
        Board {
            block,
            ..Board::new()
        }
    }

    /// A ranking of `scores` (a later score of the same user wins), built in one sort.
    pub fn from_scores(scores: impl IntoIterator<Item = (u64, i64)>) -> Board {
        let scores: HashMap<u64, i64> = scores.into_iter().collect();
        let mut keys: Vec<Key> = scores.iter().map(|(u, s)| (Reverse(*s), *u)).collect();
        keys.sort_unstable();
        let blocks = keys.chunks(BLOCK).map(<[Key]>::to_vec).collect();
        Board {
            scores,
            blocks,
            block: BLOCK,
        }
    }

    /// How many traders are ranked.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// The block that holds, or would hold, `key`.
    fn block_of(&self, key: &Key) -> usize {
        let i = self
            .blocks
            .partition_point(|b| b.last().is_some_and(|last| last < key));
        i.min(self.blocks.len().saturating_sub(1))
    }

    fn insert(&mut self, key: Key) {
        if self.blocks.is_empty() {
            self.blocks.push(vec![key]);
            return;
        }
        let b = self.block_of(&key);
        let block = &mut self.blocks[b];
        let at = block.partition_point(|k| k < &key);
        block.insert(at, key);
        if block.len() > 2 * self.block {
            let upper = block.split_off(self.block);
            self.blocks.insert(b + 1, upper);
        }
    }

    fn remove(&mut self, key: &Key) {
        let b = self.block_of(key);
        let Some(block) = self.blocks.get_mut(b) else {
            return;
        };
        let Ok(at) = block.binary_search(key) else {
            return;
        };
        block.remove(at);
        let len = block.len();
        if len == 0 {
            self.blocks.remove(b);
        } else if len < self.block / 4
            && self
                .blocks
                .get(b + 1)
                .is_some_and(|next| len + next.len() <= 2 * self.block)
        {
            // Churn would otherwise leave many small blocks, and a rank sums them all.
            let next = self.blocks.remove(b + 1);
            self.blocks[b].extend(next);
        }
    }

    /// Sets `user`'s score, ranking them if they were not.
    pub fn set(&mut self, user: u64, score: i64) {
        match self.scores.insert(user, score) {
            Some(old) if old == score => {}
            Some(old) => {
                self.remove(&(Reverse(old), user));
                self.insert((Reverse(score), user));
            }
            None => self.insert((Reverse(score), user)),
        }
    }

    /// Takes `user` out of the ranking.
    pub fn forget(&mut self, user: u64) {
        if let Some(old) = self.scores.remove(&user) {
            self.remove(&(Reverse(old), user));
        }
    }

    /// The best `n`, best first.
    pub fn top(&self, n: usize) -> Vec<Standing> {
        self.blocks
            .iter()
            .flatten()
            .take(n)
            .enumerate()
            .map(|(i, (Reverse(score), user))| Standing {
                user: *user,
                score: *score,
                rank: i + 1,
            })
            .collect()
    }

    /// `user`'s place, if ranked.
    pub fn standing(&self, user: u64) -> Option<Standing> {
        let score = *self.scores.get(&user)?;
        let key = (Reverse(score), user);
        let b = self.block_of(&key);
        let before: usize = self.blocks[..b].iter().map(Vec::len).sum();
        let at = self.blocks[b].binary_search(&key).ok()?;
        Some(Standing {
            user,
            score,
            rank: before + at + 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference: every trader, sorted by the ranking's rule.
    fn sorted(model: &HashMap<u64, i64>) -> Vec<Standing> {
        let mut all: Vec<(u64, i64)> = model.iter().map(|(u, s)| (*u, *s)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.iter()
            .enumerate()
            .map(|(i, (user, score))| Standing {
                user: *user,
                score: *score,
                rank: i + 1,
            })
            .collect()
    }

    #[test]
    fn ties_go_to_the_lower_user_id_and_moves_reorder() {
        let mut b = Board::new();
        b.set(7, 100);
        b.set(3, 100);
        b.set(9, 250);
        b.set(1, -50);
        let order: Vec<u64> = b.top(10).iter().map(|s| s.user).collect();
        assert_eq!(order, [9, 3, 7, 1]);
        b.set(1, 300);
        assert_eq!(
            b.standing(1),
            Some(Standing {
                user: 1,
                score: 300,
                rank: 1
            })
        );
        assert_eq!(b.standing(7).map(|s| s.rank), Some(4));
        b.forget(9);
        assert_eq!(b.standing(9), None);
        assert_eq!(b.len(), 3);
        assert_eq!(b.top(2).iter().map(|s| s.user).collect::<Vec<_>>(), [1, 3]);
    }

    proptest! {
        /// Any sequence of moves and removals (many ties), with blocks small enough to be
        /// split, emptied and merged often: the board reads exactly as the sorted model.
        #[test]
        fn reads_as_the_sorted_model(
            ops in prop::collection::vec((0u64..3000, -40i64..40, 0u8..10), 1..4000),
            block in prop::sample::select(vec![1usize, 4, 16, BLOCK]),
        ) {
            let mut board = Board::with_block(block);
            let mut model = HashMap::new();
            for (user, score, op) in ops {
                if op == 0 {
                    board.forget(user);
                    model.remove(&user);
                } else {
                    board.set(user, score);
                    model.insert(user, score);
                }
            }
            let want = sorted(&model);
            prop_assert_eq!(board.len(), want.len());
            prop_assert_eq!(board.top(100), want.iter().take(100).copied().collect::<Vec<_>>());
            prop_assert_eq!(board.top(usize::MAX), want.clone());
            for s in want.iter().step_by(7) {
                prop_assert_eq!(board.standing(s.user), Some(*s));
            }
            prop_assert!(board.blocks.iter().all(|b| !b.is_empty() && b.len() <= 2 * block));
        }

        /// A board built in one sort reads as one built move by move.
        #[test]
        fn bulk_build_equals_moves(scores in prop::collection::vec((0u64..5000, -1000i64..1000), 0..3000)) {
            let bulk = Board::from_scores(scores.iter().copied());
            let mut moved = Board::new();
            for (u, s) in &scores {
                moved.set(*u, *s);
            }
            prop_assert_eq!(bulk.top(usize::MAX), moved.top(usize::MAX));
        }
    }
}

//! Vector scoring, rank fusion and the embedding BLOB format.
//!
//! Search is exact: the store hands every candidate vector of a collection
//! to [`cosine_top_k`], which keeps only the best `k` in a bounded heap.
//! Hybrid search fuses the vector ranking with the full-text ranking by
//! [`rrf`], which needs no score calibration between the two.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};

/// The customary reciprocal-rank-fusion constant (Cormack et al. 2009); used
/// when the caller passes one that is not a finite non-negative number.
const DEFAULT_RRF_K: f32 = 60.0;

/// A scored id ordered so that "greater" means "better": higher score, then
/// lower id, which makes the ordering total and ties stable.
#[derive(Debug, Clone, Copy)]
struct Scored {
    id: i64,
    score: f32,
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.id.cmp(&self.id))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scored {}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt()
}

/// The `k` candidates most similar to `query` by cosine similarity, best
/// first; equal scores are ordered by ascending id.
///
/// Candidates whose length differs from the query's (an embedding from
/// another model) are skipped, as are those with NaN or infinite
/// components; a query with such a component matches nothing. A zero
/// vector, query or candidate, scores 0 rather than dividing by zero.
pub fn cosine_top_k(
    query: &[f32],
    candidates: impl IntoIterator<Item = (i64, Vec<f32>)>,
    k: usize,
) -> Vec<(i64, f32)> {
    if k == 0 || !query.iter().all(|x| x.is_finite()) {
        return Vec::new();
    }
    let query_norm = norm(query);
    // A min-heap of the best k so far: memory stays O(k) however many
    // vectors a collection holds.
    let mut heap: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(k.saturating_add(1));
    for (id, vector) in candidates {
        if vector.len() != query.len() || !vector.iter().all(|x| x.is_finite()) {
            continue;
        }
        let dot: f64 = query
            .iter()
            .zip(&vector)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let denominator = query_norm * norm(&vector);
        let score = if denominator > 0.0 {
            dot / denominator
        } else {
            0.0
        };
        if !score.is_finite() {
            continue;
        }
        // Rounding can push |cos| a hair past 1.
        let score = score.clamp(-1.0, 1.0) as f32;
        heap.push(Reverse(Scored { id, score }));
        if heap.len() > k {
            heap.pop();
        }
    }
    // Ascending order of Reverse<_> is descending order of Scored.
    heap.into_sorted_vec()
        .into_iter()
        .map(|Reverse(s)| (s.id, s.score))
        .collect()
}

/// Reciprocal rank fusion: each id scores `Σ 1 / (k_const + rank)` over the
/// rankings it appears in (rank from 1; a repeat within one ranking counts
/// once). Returns the best `top_k`, descending, equal scores by ascending id.
pub fn rrf(rankings: &[Vec<i64>], k_const: f32, top_k: usize) -> Vec<(i64, f32)> {
    let k_const = if k_const.is_finite() && k_const >= 0.0 {
        f64::from(k_const)
    } else {
        f64::from(DEFAULT_RRF_K)
    };
    // BTreeMap: summation order and output are the same on every run.
    let mut scores: BTreeMap<i64, f64> = BTreeMap::new();
    for ranking in rankings {
        let mut seen = std::collections::BTreeSet::new();
        let mut rank: u32 = 0;
        for &id in ranking {
            if !seen.insert(id) {
                continue;
            }
            rank = rank.saturating_add(1);
            *scores.entry(id).or_insert(0.0) += 1.0 / (k_const + f64::from(rank));
        }
    }
    let mut fused: Vec<Scored> = scores
        .into_iter()
        .map(|(id, score)| Scored {
            id,
            score: score as f32,
        })
        .collect();
    fused.sort_by(|a, b| b.cmp(a));
    fused.truncate(top_k);
    fused.into_iter().map(|s| (s.id, s.score)).collect()
}

/// Encodes a vector as little-endian `f32`s, 4 bytes each, for BLOB storage.
pub fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Decodes [`encode_vector`]'s format; `None` if the length is not a
/// multiple of 4 (a truncated or foreign BLOB).
pub fn decode_vector(b: &[u8]) -> Option<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        return None;
    }
    b.chunks_exact(4)
        .map(|c| <[u8; 4]>::try_from(c).ok().map(f32::from_le_bytes))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn cosine_orders_by_similarity() {
        let query = [1.0, 0.0];
        let candidates = vec![
            (1, vec![0.0, 1.0]),  // orthogonal: 0
            (2, vec![1.0, 0.0]),  // same: 1
            (3, vec![1.0, 1.0]),  // 45°: 0.707
            (4, vec![-1.0, 0.0]), // opposite: -1
        ];
        let top = cosine_top_k(&query, candidates.clone(), 10);
        let ids: Vec<i64> = top.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [2, 3, 1, 4]);
        assert!(close(top[0].1, 1.0));
        assert!(close(top[1].1, std::f32::consts::FRAC_1_SQRT_2));
        assert!(close(top[3].1, -1.0));
        let top2 = cosine_top_k(&query, candidates, 2);
        assert_eq!(top2.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn cosine_is_scale_invariant() {
        let top = cosine_top_k(&[2.0, 0.0], vec![(7, vec![10.0, 0.0])], 1);
        assert_eq!(top.len(), 1);
        assert!(close(top[0].1, 1.0));
    }

    #[test]
    fn cosine_ties_are_ordered_by_id() {
        let candidates = vec![(9, vec![1.0]), (3, vec![2.0]), (5, vec![1.0])];
        let top = cosine_top_k(&[1.0], candidates, 3);
        assert_eq!(top.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [3, 5, 9]);
        let top = cosine_top_k(&[1.0], vec![(9, vec![1.0]), (3, vec![1.0])], 1);
        assert_eq!(top[0].0, 3, "the lower id wins a tie even at the heap edge");
    }

    #[test]
    fn cosine_zero_vectors_score_zero_without_panicking() {
        let top = cosine_top_k(
            &[0.0, 0.0],
            vec![(1, vec![1.0, 0.0]), (2, vec![0.0, 0.0])],
            5,
        );
        assert_eq!(top, [(1, 0.0), (2, 0.0)]);
        let top = cosine_top_k(&[1.0, 0.0], vec![(1, vec![0.0, 0.0])], 5);
        assert_eq!(top, [(1, 0.0)]);
        assert!(
            cosine_top_k(&[], vec![(1, vec![])], 5)
                .iter()
                .all(|(_, s)| *s == 0.0)
        );
    }

    #[test]
    fn cosine_skips_wrong_length_and_non_finite() {
        let candidates = vec![
            (1, vec![1.0, 0.0, 0.0]),
            (2, vec![1.0]),
            (3, vec![]),
            (4, vec![f32::NAN, 1.0]),
            (5, vec![f32::INFINITY, 1.0]),
            (6, vec![0.5, 0.5]),
        ];
        let top = cosine_top_k(&[1.0, 0.0], candidates, 10);
        assert_eq!(top.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [6]);
    }

    #[test]
    fn cosine_non_finite_query_matches_nothing() {
        assert!(cosine_top_k(&[f32::NAN], vec![(1, vec![1.0])], 5).is_empty());
    }

    #[test]
    fn cosine_k_zero_and_no_candidates() {
        assert!(cosine_top_k(&[1.0], vec![(1, vec![1.0])], 0).is_empty());
        assert!(cosine_top_k(&[1.0], Vec::new(), 3).is_empty());
    }

    #[test]
    fn rrf_fuses_rankings() {
        // 2 is near the top of both lists and wins; 1 tops one list only.
        let fused = rrf(&[vec![1, 2, 3], vec![2, 4, 1]], 60.0, 10);
        let ids: Vec<i64> = fused.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [2, 1, 4, 3]);
        assert!(close(fused[0].1, (1.0 / 62.0 + 1.0 / 61.0) as f32));
        assert!(close(fused[1].1, (1.0 / 61.0 + 1.0 / 63.0) as f32));
        let scores: Vec<f32> = fused.iter().map(|(_, s)| *s).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]));
    }

    #[test]
    fn rrf_ties_by_id_truncation_and_duplicates() {
        // 5 and 3 are both first in one list: a tie broken by id.
        let fused = rrf(&[vec![5], vec![3]], 60.0, 10);
        assert_eq!(fused.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [3, 5]);
        assert_eq!(rrf(&[vec![1, 2, 3]], 60.0, 2).len(), 2);
        assert!(rrf(&[vec![1, 2, 3]], 60.0, 0).is_empty());
        assert!(rrf(&[], 60.0, 5).is_empty());
        // A repeated id counts once, at its best rank, and does not shift others.
        let dup = rrf(&[vec![1, 1, 2]], 60.0, 5);
        assert!(close(dup[0].1, 1.0 / 61.0) && close(dup[1].1, 1.0 / 62.0));
        // An unusable constant falls back to 60 instead of dividing by zero or NaN.
        assert_eq!(rrf(&[vec![1]], f32::NAN, 1), rrf(&[vec![1]], 60.0, 1));
        assert_eq!(rrf(&[vec![1]], -5.0, 1), rrf(&[vec![1]], 60.0, 1));
    }

    #[test]
    fn vector_round_trip() {
        let v = vec![0.0, -1.5, 3.25, f32::MAX, f32::MIN_POSITIVE, 1e-7];
        let bytes = encode_vector(&v);
        assert_eq!(bytes.len(), v.len() * 4);
        assert_eq!(&bytes[4..8], &(-1.5f32).to_le_bytes());
        assert_eq!(decode_vector(&bytes), Some(v));
        assert_eq!(decode_vector(&[]), Some(Vec::new()));
    }

    #[test]
    fn vector_bad_length() {
        for len in [1, 2, 3, 5, 7] {
            assert_eq!(decode_vector(&vec![0u8; len]), None, "{len}");
        }
    }
}

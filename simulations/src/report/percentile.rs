//! Percentiles by nearest rank on sorted integers: the p-th percentile of n sorted values is
//! the value at rank ⌈p·n/100⌉ (1-based; rank 1 for p = 0). It is always one of the values
//! measured — no interpolation, no floating point — so a reported p99 of 40 ms means some
//! delivery took exactly 40 ms, and two machines print the same figure.

/// The `p`-th percentile (0–100; larger values are treated as 100) of `sorted` (ascending),
/// by nearest rank; `None` for no values.
pub fn nearest_rank(sorted: &[u64], p: u32) -> Option<u64> {
    let n = sorted.len() as u128;
    if n == 0 {
        return None;
    }
    let p = u128::from(p.min(100));
    // ⌈p·n/100⌉ in integers; at least rank 1.
    let rank = (p * n).div_ceil(100).max(1);
    let index = usize::try_from(rank - 1).ok()?;
    sorted.get(index).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ranks() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&v, 50), Some(50));
        assert_eq!(nearest_rank(&v, 99), Some(99));
        assert_eq!(nearest_rank(&v, 100), Some(100));
        assert_eq!(nearest_rank(&v, 0), Some(1));
        assert_eq!(nearest_rank(&[], 50), None);
        assert_eq!(nearest_rank(&[7], 99), Some(7));
        // n = 10: p99 → rank ⌈9.9⌉ = 10, p50 → rank 5.
        let t: Vec<u64> = (10..=100).step_by(10).collect();
        assert_eq!(nearest_rank(&t, 99), Some(100));
        assert_eq!(nearest_rank(&t, 50), Some(50));
        assert_eq!(nearest_rank(&t, 250), Some(100));
    }
}

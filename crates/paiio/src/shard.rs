//! Shard math: which rows a slice reads, how a slice is cut into row ranges for prefetch,
//! and the seeded orders used for deterministic shuffling. Pure functions.

use std::ops::Range;

use crate::error::{Error, Result};

/// Checks `slice_id < slice_count` and `slice_count >= 1`.
pub fn check_slice(slice_id: u64, slice_count: u64) -> Result<()> {
    if slice_count == 0 {
        return Err(Error::invalid("slice_count", "must be at least 1"));
    }
    if slice_id >= slice_count {
        return Err(Error::invalid(
            "slice_id",
            format!("{slice_id} is not below slice_count {slice_count}"),
        ));
    }
    Ok(())
}

/// The rows `[start, end)` of slice `slice_id` out of `slice_count` over `total` rows:
/// with `q = total / count` and `r = total % count`, slice `i` gets
/// `[i*q + min(i, r), (i+1)*q + min(i+1, r))`. With `equal`, every slice is trimmed to
/// `q` rows (keeping its start), so all slices have the same length.
pub fn slice_range(total: u64, slice_id: u64, slice_count: u64, equal: bool) -> Result<Range<u64>> {
    check_slice(slice_id, slice_count)?;
    let range = paiio_storage::split::balanced(total, slice_id, slice_count);
    Ok(if equal {
        range.start..range.start + total / slice_count
    } else {
        range
    })
}

/// Cuts `range` into consecutive pieces of `chunk_rows` rows (the last may be shorter).
pub fn chunks(range: Range<u64>, chunk_rows: u64) -> Vec<Range<u64>> {
    let chunk_rows = chunk_rows.max(1);
    let mut out = Vec::new();
    let mut start = range.start;
    while start < range.end {
        let end = (start + chunk_rows).min(range.end);
        out.push(start..end);
        start = end;
    }
    out
}

/// A small seeded generator (SplitMix64). Hand-written rather than `rand`'s `StdRng`, whose
/// output may change between versions: a saved reader state must resume the same order
/// after an upgrade.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// The generator for one purpose (`stream`) of one epoch.
    pub fn new(seed: u64, epoch: u64, stream: u64) -> Self {
        let mut g = SplitMix64(seed);
        let a = g.next_u64();
        let mut g = SplitMix64(a ^ epoch);
        let b = g.next_u64();
        SplitMix64(b ^ stream)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by Lemire's multiply-and-reject.
    pub fn below(&mut self, n: u64) -> u64 {
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }
}

/// A permutation of `0..n`, the same for the same `(seed, epoch, stream)` on every platform
/// and version (Fisher-Yates over [`SplitMix64`]).
pub fn permutation(n: usize, seed: u64, epoch: u64, stream: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut g = SplitMix64::new(seed, epoch, stream);
    for i in (1..n).rev() {
        let j = g.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// The permutation stream of the order of row ranges (blocks).
pub const BLOCK_ORDER_STREAM: u64 = u64::MAX;

/// The permutation of the rows of shuffle window `window` (`n` rows).
pub fn window_permutation(n: usize, seed: u64, epoch: u64, window: u64) -> Vec<usize> {
    permutation(n, seed, epoch, window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formula_examples() {
        // 10 rows into 3 slices: 4, 3, 3.
        assert_eq!(slice_range(10, 0, 3, false).unwrap(), 0..4);
        assert_eq!(slice_range(10, 1, 3, false).unwrap(), 4..7);
        assert_eq!(slice_range(10, 2, 3, false).unwrap(), 7..10);
        // equal: 3 rows each.
        assert_eq!(slice_range(10, 0, 3, true).unwrap(), 0..3);
        assert_eq!(slice_range(10, 1, 3, true).unwrap(), 4..7);
        // fewer rows than slices.
        assert_eq!(slice_range(2, 2, 3, false).unwrap(), 2..2);
        assert!(slice_range(10, 3, 3, false).is_err());
        assert!(slice_range(10, 0, 0, false).is_err());
    }

    #[test]
    fn permutations_are_seeded() {
        assert_eq!(permutation(100, 1, 0, 5), permutation(100, 1, 0, 5));
        assert_ne!(permutation(100, 1, 0, 5), permutation(100, 1, 1, 5));
        assert_ne!(permutation(100, 1, 0, 5), permutation(100, 2, 0, 5));
        let mut p = permutation(100, 3, 4, 5);
        p.sort_unstable();
        assert_eq!(p, (0..100).collect::<Vec<_>>());
    }

    proptest! {
        #[test]
        fn slices_cover_every_row_once_balanced(total in 0u64..10_000, count in 1u64..200) {
            let mut next = 0;
            let (mut min, mut max) = (u64::MAX, 0);
            for i in 0..count {
                let r = slice_range(total, i, count, false).unwrap();
                prop_assert_eq!(r.start, next);
                next = r.end;
                let len = r.end - r.start;
                min = min.min(len);
                max = max.max(len);
                let e = slice_range(total, i, count, true).unwrap();
                prop_assert_eq!(e.start, r.start);
                prop_assert_eq!(e.end - e.start, total / count);
            }
            prop_assert_eq!(next, total);
            prop_assert!(max - min <= 1);
        }

        #[test]
        fn chunks_tile_the_range(start in 0u64..1000, len in 0u64..5000, chunk in 1u64..700) {
            let c = chunks(start..start + len, chunk);
            let mut next = start;
            for r in &c {
                prop_assert_eq!(r.start, next);
                prop_assert!(r.end > r.start && r.end - r.start <= chunk);
                next = r.end;
            }
            prop_assert_eq!(next, start + len);
        }
    }
}

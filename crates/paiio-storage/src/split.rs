//! The one formula that cuts rows into contiguous, balanced parts: the splits of a read
//! session, the slices of `slice_id`/`slice_count` sharding and the parallel reads of the CLI
//! all use it, so they agree on where every part starts.

use std::ops::Range;

/// Part `i` of `n` of `total` rows: with `q = total / n` and `r = total % n`, part `i` is
/// `[i*q + min(i, r), (i+1)*q + min(i+1, r))`, so the first `r` parts have one row more.
/// `n` must be above zero and `i` below `n`.
pub fn balanced(total: u64, i: u64, n: u64) -> Range<u64> {
    debug_assert!(n > 0 && i < n, "part {i} of {n}");
    let (q, r) = (total / n, total % n);
    i * q + i.min(r)..(i + 1) * q + (i + 1).min(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_every_row_once_and_differ_by_at_most_one() {
        for total in [0u64, 1, 2, 7, 10, 11, 1000, 1001] {
            for n in 1..=12u64 {
                let parts: Vec<_> = (0..n).map(|i| balanced(total, i, n)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[n as usize - 1].end, total);
                for w in parts.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let lens: Vec<u64> = parts.iter().map(|p| p.end - p.start).collect();
                let (min, max) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
                assert!(max - min <= 1, "{total} in {n}: {lens:?}");
            }
        }
        assert_eq!(balanced(10, 0, 3), 0..4);
        assert_eq!(balanced(10, 1, 3), 4..7);
        assert_eq!(balanced(10, 2, 3), 7..10);
    }
}

//! Shard math: which rows a slice reads, how a slice is cut into row ranges for prefetch,
//! and the seeded orders used for deterministic shuffling. Pure functions.

use std::ops::Range;

use paiio_storage::rng::SplitMix64;

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

/// Virtual shard counts [`auto_shards`] tries, largest first: all divide 24, so that common
/// worker counts (1, 2, 3, 4, 6, 8, 12, 24) divide them.
const AUTO_SHARDS: [u64; 7] = [24, 12, 8, 6, 4, 2, 1];
/// [`auto_shards`] picks the largest count giving every shard at least this many batches.
const MIN_BATCHES_PER_SHARD: u64 = 16;

/// How many virtual shards to cut each of `world` ranks' rows into (see [`epoch_batches`]):
/// the largest of 24, 12, 8, 6, 4, 2 that leaves every shard 16 batches of `batch` rows.
pub fn auto_shards(table_rows: &[u64], world: u64, batch: u64) -> u64 {
    let per_rank = table_rows.iter().sum::<u64>() / world.max(1);
    AUTO_SHARDS
        .into_iter()
        .find(|&v| per_rank >= v * batch * MIN_BATCHES_PER_SHARD)
        .unwrap_or(1)
}

/// The batches of rank `rank`'s epoch, `(shard, batch of the shard, rows)` in order, where
/// the rank's rows are cut into `shards` virtual shards (slices `rank * shards + v` of
/// `world * shards` of every table) and round `j` takes batch `j` of every shard that still
/// has one. With `drop_last` a shard's short last batch is left out; with `equal` every rank
/// stops at the fewest batches of any rank.
pub fn epoch_batches(
    table_rows: &[u64],
    rank: u64,
    world: u64,
    shards: u64,
    batch: u64,
    drop_last: bool,
    equal: bool,
) -> Result<Vec<(u64, u64, u64)>> {
    if batch == 0 || shards == 0 {
        return Err(Error::invalid(
            "batches",
            "batch size and shard count must be at least 1",
        ));
    }
    let of = world
        .checked_mul(shards)
        .ok_or_else(|| Error::invalid("shards", "too many"))?;
    let counts = |rank: u64| -> Result<Vec<u64>> {
        (0..shards)
            .map(|v| {
                table_rows.iter().try_fold(0, |sum, &n| {
                    let r = slice_range(n, rank * shards + v, of, false)?;
                    Ok(sum + r.end - r.start)
                })
            })
            .collect()
    };
    let batches = |rows: u64| {
        if drop_last {
            rows / batch
        } else {
            rows.div_ceil(batch)
        }
    };
    let mine = counts(rank)?;
    let mut limit = u64::MAX;
    if equal && world > 1 {
        for r in 0..world {
            limit = limit.min(counts(r)?.into_iter().map(batches).sum());
        }
    }
    let rounds = mine.iter().map(|&c| batches(c)).max().unwrap_or(0);
    let mut order = Vec::new();
    for j in 0..rounds {
        for (v, &rows) in mine.iter().enumerate() {
            if j < batches(rows) && (order.len() as u64) < limit {
                order.push((v as u64, j, batch.min(rows - j * batch)));
            }
        }
    }
    Ok(order)
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

/// The generator of one purpose (`stream`) of one epoch of a shuffle seed.
fn stream_rng(seed: u64, epoch: u64, stream: u64) -> SplitMix64 {
    let a = SplitMix64::new(seed).next_u64();
    let b = SplitMix64::new(a ^ epoch).next_u64();
    SplitMix64::new(b ^ stream)
}

/// A permutation of `0..n`, the same for the same `(seed, epoch, stream)` on every platform
/// and version (Fisher-Yates over [`SplitMix64`], which does not change between versions).
pub fn permutation(n: usize, seed: u64, epoch: u64, stream: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut g = stream_rng(seed, epoch, stream);
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
    fn epochs_take_a_batch_of_every_shard_per_round() {
        // 10 rows on one rank, 2 shards of 5, batches of 2: rounds (0,0)(1,0), (0,1)(1,1), ...
        let order = epoch_batches(&[10], 0, 1, 2, 2, false, false).unwrap();
        assert_eq!(
            order,
            [
                (0, 0, 2),
                (1, 0, 2),
                (0, 1, 2),
                (1, 1, 2),
                (0, 2, 1),
                (1, 2, 1)
            ]
        );
        assert_eq!(
            epoch_batches(&[10], 0, 1, 2, 2, true, false).unwrap().len(),
            4
        );
        // 7 rows over two ranks: 4 and 3; equal stops rank 0 at rank 1's 2 batches of 2.
        assert_eq!(
            epoch_batches(&[7], 0, 2, 1, 2, false, false).unwrap().len(),
            2
        );
        assert_eq!(
            epoch_batches(&[7], 0, 2, 1, 3, false, false).unwrap().len(),
            2
        );
        assert_eq!(
            epoch_batches(&[7], 0, 2, 1, 3, false, true).unwrap().len(),
            1
        );
        assert_eq!(auto_shards(&[24 * 16 * 10], 1, 10), 24);
        assert_eq!(auto_shards(&[100], 1, 10), 1);
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

//! The read plan of a [`TableReader`](super::TableReader): the order of its slice's rows as
//! segments of its tables ([`make_plan`]), the reads of a shuffle window and the order they
//! deliver rows in, and the sizes of prefetch requests when the options leave them open.

use super::OpenTable;
use super::prefetch::Segment;
use crate::options::ReaderOptions;
use crate::shard;

/// The order of the slice's rows before the in-window shuffle: segments with their start
/// positions.
#[derive(Debug)]
pub(super) struct Plan {
    segments: Vec<Segment>,
    starts: Vec<u64>,
}

impl Plan {
    fn new(segments: Vec<Segment>) -> Plan {
        let mut starts = Vec::with_capacity(segments.len());
        let mut at = 0;
        for s in &segments {
            starts.push(at);
            at += s.rows;
        }
        Plan { segments, starts }
    }

    /// The segments from position `at` on (the first one trimmed).
    pub(super) fn from(&self, at: u64) -> Vec<Segment> {
        self.range(at, u64::MAX)
    }

    /// The segments of positions `start..end`, in plan order (the first and last trimmed).
    pub(super) fn range(&self, start: u64, end: u64) -> Vec<Segment> {
        let i = self
            .starts
            .partition_point(|&s| s <= start)
            .saturating_sub(1);
        let mut out = Vec::new();
        for (segment, &at) in self.segments.iter().zip(&self.starts).skip(i) {
            if at >= end {
                break;
            }
            let skip = start.saturating_sub(at);
            let rows = segment.rows.min(end - at).saturating_sub(skip);
            if rows > 0 {
                out.push(Segment {
                    offset: segment.offset + skip,
                    rows,
                    ..*segment
                });
            }
        }
        out
    }
}

/// The order in which the rows of one shuffle window are read: its pieces (in plan order) by
/// table and offset. The rows a window holds do not depend on the order they are read in, and
/// the blocks of a slice are often neighbours in the table (a slice smaller than the window
/// is one contiguous range): read in plan order, each block is a request of its own and a
/// backend decodes every stored batch a block touches once per block.
fn storage_order(pieces: &[Segment]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..pieces.len()).collect();
    order.sort_unstable_by_key(|&i| (pieces[i].table, pieces[i].offset));
    order
}

/// The reads of a shuffle window: its pieces in [`storage_order`], neighbours merged into
/// reads of at most `max_rows` rows (a single piece may be longer).
pub(super) fn window_reads(pieces: &[Segment], max_rows: u64) -> Vec<Segment> {
    let mut reads: Vec<Segment> = Vec::new();
    for i in storage_order(pieces) {
        let piece = pieces[i];
        match reads.last_mut() {
            Some(last)
                if last.table == piece.table
                    && last.offset + last.rows == piece.offset
                    && last.rows + piece.rows <= max_rows =>
            {
                last.rows += piece.rows;
            }
            _ => reads.push(piece),
        }
    }
    reads
}

/// For each row of a shuffle window in plan order, its index among the window's rows as
/// read ([`window_reads`]: pieces in [`storage_order`]).
pub(super) fn read_indices(pieces: &[Segment]) -> Vec<u32> {
    let mut read_start = vec![0u64; pieces.len()];
    let mut at = 0;
    for i in storage_order(pieces) {
        read_start[i] = at;
        at += pieces[i].rows;
    }
    let mut out = Vec::with_capacity(at as usize);
    for (piece, &start) in pieces.iter().zip(&read_start) {
        out.extend((start..start + piece.rows).map(|r| r as u32));
    }
    out
}

/// Bytes one prefetch request should carry when the caller gave no chunk size. Rows are
/// delivered in slice order, so a request's rows reach the caller only after the requests before
/// it: small requests let `threads` requests stream at once (the service caps each request's
/// rate, about 10 MB/s), large ones would serialise behind the first.
const AUTO_CHUNK_BYTES: u64 = 8 << 20;

/// Rows per prefetch request: at least four requests per thread (so that the threads share
/// the work evenly), at most about [`AUTO_CHUNK_BYTES`] (64K rows without a size estimate),
/// never fewer than a batch. A single thread reads its requests one after the other, so
/// cutting its range finer gains nothing and costs a request each (and a backend decodes
/// the stored batches at a cut twice).
fn auto_chunk_rows(rows: u64, row_bytes: u64, threads: usize, batch_rows: usize) -> u64 {
    let requests = if threads <= 1 { 1 } else { threads as u64 * 4 };
    let per_thread = rows.div_ceil(requests);
    per_thread
        .min(chunk_rows_by_bytes(row_bytes))
        .clamp(batch_rows.max(1) as u64, 1 << 20)
}

/// Rows per batch asked of the backend: `batch_rows`, but by the row size estimate no more
/// than an eighth of the byte budget, which the prefetch may exceed by one batch (reads
/// return `batch_rows` all the same, joining smaller batches).
pub(super) fn request_batch_rows(batch_rows: usize, row_bytes: u64, byte_budget: usize) -> usize {
    let cap = (byte_budget as u64 / 8)
        .checked_div(row_bytes)
        .unwrap_or(u64::MAX);
    (batch_rows as u64).min(cap).max(1) as usize
}

/// Rows of about [`AUTO_CHUNK_BYTES`] (64K rows without a size estimate).
fn chunk_rows_by_bytes(row_bytes: u64) -> u64 {
    AUTO_CHUNK_BYTES.checked_div(row_bytes).unwrap_or(64 * 1024)
}

/// Rows per read of a shuffle window of `window_rows`: the window split evenly over the
/// prefetch streams (the whole window is needed before any of its rows is delivered), at most
/// about [`AUTO_CHUNK_BYTES`] per read, and never less than a block.
pub(super) fn window_read_rows(
    window_rows: u64,
    row_bytes: u64,
    threads: usize,
    block_rows: usize,
) -> u64 {
    let per_thread = window_rows.div_ceil(threads.max(1) as u64);
    per_thread
        .min(chunk_rows_by_bytes(row_bytes))
        .max(block_rows.max(1) as u64)
}

pub(super) fn make_plan(tables: &[OpenTable], options: &ReaderOptions, threads: usize) -> Plan {
    let mut segments = Vec::new();
    match &options.shuffle {
        None => {
            for (i, t) in tables.iter().enumerate() {
                let rows = t.range.end - t.range.start;
                let chunk = if options.chunk_rows > 0 {
                    options.chunk_rows as u64
                } else {
                    auto_chunk_rows(rows, t.row_bytes, threads, options.batch_rows)
                };
                segments.extend(shard::chunks(t.range.clone(), chunk).into_iter().map(|r| {
                    Segment {
                        table: i,
                        offset: r.start,
                        rows: r.end - r.start,
                    }
                }));
            }
        }
        Some(s) => {
            let mut blocks = Vec::new();
            for (i, t) in tables.iter().enumerate() {
                blocks.extend(
                    shard::chunks(t.range.clone(), s.block_rows as u64)
                        .into_iter()
                        .map(|r| Segment {
                            table: i,
                            offset: r.start,
                            rows: r.end - r.start,
                        }),
                );
            }
            let order =
                shard::permutation(blocks.len(), s.seed, s.epoch, shard::BLOCK_ORDER_STREAM);
            segments = order.into_iter().map(|i| blocks[i]).collect();
        }
    }
    Plan::new(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_from_trims_the_first_segment() {
        let plan = Plan::new(vec![
            Segment {
                table: 0,
                offset: 10,
                rows: 5,
            },
            Segment {
                table: 1,
                offset: 0,
                rows: 3,
            },
        ]);
        assert_eq!(plan.from(0), plan.segments);
        assert_eq!(
            plan.from(2),
            vec![
                Segment {
                    table: 0,
                    offset: 12,
                    rows: 3
                },
                Segment {
                    table: 1,
                    offset: 0,
                    rows: 3
                }
            ]
        );
        assert_eq!(
            plan.from(5),
            vec![Segment {
                table: 1,
                offset: 0,
                rows: 3
            }]
        );
        assert_eq!(
            plan.from(7),
            vec![Segment {
                table: 1,
                offset: 2,
                rows: 1
            }]
        );
        assert!(plan.from(8).is_empty());
        assert_eq!(
            plan.range(3, 6),
            vec![
                Segment {
                    table: 0,
                    offset: 13,
                    rows: 2
                },
                Segment {
                    table: 1,
                    offset: 0,
                    rows: 1
                }
            ]
        );
        assert_eq!(
            plan.range(1, 2),
            vec![Segment {
                table: 0,
                offset: 11,
                rows: 1
            }]
        );
        assert!(plan.range(5, 5).is_empty());
    }

    #[test]
    fn window_reads_merge_neighbours_in_storage_order() {
        let seg = |table, offset, rows| Segment {
            table,
            offset,
            rows,
        };
        // Plan order: blocks of a table shuffled, and a block of another table.
        let pieces = vec![
            seg(0, 20, 10),
            seg(1, 0, 5),
            seg(0, 0, 10),
            seg(0, 10, 10),
            seg(0, 40, 10),
        ];
        assert_eq!(
            window_reads(&pieces, 100),
            vec![seg(0, 0, 30), seg(0, 40, 10), seg(1, 0, 5)]
        );
        assert_eq!(
            window_reads(&pieces, 20),
            vec![seg(0, 0, 20), seg(0, 20, 10), seg(0, 40, 10), seg(1, 0, 5)]
        );
        // Rows as read: table 0 rows 0..30 are read rows 0..30, 40..50 are 30..40, and
        // table 1 is 40..45. In plan order:
        let read = read_indices(&pieces);
        let expected: Vec<u32> = (20..30).chain(40..45).chain(0..20).chain(30..40).collect();
        assert_eq!(read, expected);
    }

    #[test]
    fn request_batches_stay_well_within_the_byte_budget() {
        assert_eq!(request_batch_rows(8192, 40, 64 << 20), 8192);
        assert_eq!(request_batch_rows(8192, 10_000, 64 << 20), 838);
        assert_eq!(request_batch_rows(8192, 0, 64 << 20), 8192);
        assert_eq!(request_batch_rows(8192, 1 << 30, 64 << 20), 1);
    }

    #[test]
    fn window_reads_split_over_threads() {
        assert_eq!(window_read_rows(65536, 40, 1, 4096), 65536);
        assert_eq!(window_read_rows(65536, 40, 4, 4096), 16384);
        assert_eq!(window_read_rows(65536, 40, 64, 4096), 4096);
        // At most about 8 MB a read.
        assert_eq!(window_read_rows(65536, 1024, 1, 16), 8192);
    }
}

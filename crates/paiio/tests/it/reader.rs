//! TableReader over both backends: slicing, columns, read/seek semantics, equal mode,
//! shuffling, exact state/restore, snapshots, bounded memory.

use arrow_array::cast::AsArray;
use paiio::options::{ReaderOptions, Shuffle};
use paiio::{ReaderState, TableReader};
use paiio_conformance::datagen::assert_exactly_once;

use crate::common::{self, TestBackend, assert_mentions, read_ids};

macro_rules! over_backends {
    ($($name:ident),* $(,)?) => {
        mod local {
            $( #[test] fn $name() { super::$name(&crate::common::local()); } )*
        }
        mod rest {
            $( #[test] fn $name() { super::$name(&crate::common::rest()); } )*
        }
    };
}

over_backends!(
    slices_cover_every_row_once,
    multiple_tables_and_comma_separated_uris,
    partitions_in_the_uri,
    selected_order_and_excluded_columns,
    column_errors_name_the_columns,
    read_returns_n_rows_then_out_of_range,
    seek_is_relative_to_the_slice,
    equal_mode_trims_every_slice,
    shuffle_is_deterministic_and_exactly_once,
    shuffle_order_is_the_documented_one,
    forward_seeks_land_on_the_same_rows,
    open_slice_reads_the_same_snapshot,
    state_restores_the_exact_remaining_rows,
    reads_a_consistent_snapshot_while_a_writer_commits,
    memory_stays_within_the_budget,
    all_types_verify,
    iterator_yields_batches_of_batch_rows,
);

fn open(b: &TestBackend, uris: &str, options: ReaderOptions) -> TableReader {
    TableReader::open_with(b.service.clone(), uris, options)
        .unwrap_or_else(|e| panic!("expected {uris} to open on {}: {e}", b.kind))
}

/// Reads every slice of `uri` and checks: exactly once, contiguous, balanced to one row.
fn check_slices(
    b: &TestBackend,
    uri: &str,
    total: i64,
    count: u64,
    threads: usize,
    capacity: usize,
) {
    let mut all = Vec::new();
    let mut lens = Vec::new();
    for slice in 0..count {
        let options = ReaderOptions::default()
            .slice(slice, count)
            .threads(threads)
            .capacity(capacity)
            .batch_rows(97)
            .chunk_rows(53);
        let mut reader = open(b, uri, options);
        let ids = read_ids(&mut reader);
        assert_eq!(
            ids.len() as u64,
            reader.row_count(),
            "slice {slice}/{count}"
        );
        if let (Some(first), Some(last)) = (ids.first(), ids.last()) {
            assert_eq!(
                *last - *first + 1,
                ids.len() as i64,
                "slice {slice}/{count} is contiguous"
            );
            assert!(
                ids.windows(2).all(|w| w[1] == w[0] + 1),
                "slice {slice}/{count} is in order"
            );
        }
        lens.push(ids.len());
        all.extend(ids);
    }
    assert_exactly_once(
        &all,
        0..total,
        &format!("{total} rows in {count} slices, {threads} threads"),
    );
    let (min, max) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
    assert!(max - min <= 1, "balanced: {lens:?}");
}

fn slices_cover_every_row_once(b: &TestBackend) {
    for total in [0i64, 1, 7, 1000] {
        let (t, _) = b.table("slices", 0..total);
        let uri = b.uri(&t, "");
        for (count, threads, capacity) in [(1, 1, 0), (3, 2, 10), (7, 4, 0), (2, 8, 1)] {
            check_slices(b, &uri, total, count, threads, capacity);
        }
    }
}

fn multiple_tables_and_comma_separated_uris(b: &TestBackend) {
    let (t1, _) = b.table("multi_a", 0..100);
    let (t2, _) = b.table("multi_b", 1000..1150);
    let (u1, u2) = (b.uri(&t1, ""), b.uri(&t2, ""));
    let joined = format!("{u1},{u2}");
    let listed = vec![u1.clone(), u2.clone()];
    for slice in 0..2u64 {
        let options = ReaderOptions::default().slice(slice, 2).threads(3);
        let a = read_ids(&mut open(b, &joined, options.clone()));
        let mut r = TableReader::open_with(b.service.clone(), listed.clone(), options).unwrap();
        assert_eq!(r.row_count(), 125);
        let l = read_ids(&mut r);
        assert_eq!(a, l);
        // Each table is sliced on its own, and read in turn.
        let s = slice as i64;
        let want: Vec<i64> = (s * 50..s * 50 + 50)
            .chain(1000 + s * 75..1000 + s * 75 + 75)
            .collect();
        assert_eq!(a, want);
    }
    // A table may appear twice.
    let twice = read_ids(&mut open(
        b,
        &format!("{u1},{u1}"),
        ReaderOptions::default(),
    ));
    assert_eq!(twice, (0..100).chain(0..100).collect::<Vec<_>>());
}

fn partitions_in_the_uri(b: &TestBackend) {
    let (t, g) = b.partitioned_table("parts");
    b.append(&t, &g, "pt=a", 0..50);
    b.append(&t, &g, "pt=b", 100..170);
    let mut r = open(
        b,
        &b.uri(&t, "pt=b"),
        ReaderOptions::default().selected("id,pt"),
    );
    assert_eq!(r.row_count(), 70);
    let batches = common::read_rest(&mut r);
    assert_eq!(common::ids(&batches), (100..170).collect::<Vec<_>>());
    for batch in &batches {
        assert_eq!(batch.schema().field(1).name(), "pt");
        let pt = batch.column(1).as_string::<i32>();
        assert!(pt.iter().all(|v| v == Some("b")), "{pt:?}");
    }
    // Both partitions, comma-separated, sliced each.
    let uris = format!("{},{}", b.uri(&t, "pt=a"), b.uri(&t, "pt=b"));
    let ids = read_ids(&mut open(b, &uris, ReaderOptions::default().slice(1, 2)));
    assert_eq!(ids, (25..50).chain(135..170).collect::<Vec<_>>());
    // The whole table: every row.
    let ids = read_ids(&mut open(b, &b.uri(&t, ""), ReaderOptions::default()));
    assert_exactly_once(&ids, (0..50).chain(100..170), "whole partitioned table");
}

fn selected_order_and_excluded_columns(b: &TestBackend) {
    let (t, g) = b.table("cols", 0..20);
    let uri = b.uri(&t, "");
    let mut r = open(b, &uri, ReaderOptions::default().selected("d, ID ,s"));
    let names: Vec<_> = r
        .schema()
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.ty.to_string()))
        .collect();
    assert_eq!(
        names,
        [
            ("d".into(), "double".into()),
            ("id".into(), "bigint".into()),
            ("s".into(), "string".into())
        ]
    );
    let batch = r.read(20).unwrap();
    let fields: Vec<_> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(fields, ["d", "id", "s"]);
    g.check_values(&[batch]).unwrap();

    let mut r = open(b, &uri, ReaderOptions::default().excluded("s,h"));
    let names: Vec<_> = r.schema().columns.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, ["id", "d"]);
    let batch = r.read(100).unwrap();
    assert_eq!(batch.num_rows(), 20);
    assert_eq!(batch.num_columns(), 2);

    // "" and None mean every column in table order.
    let r = open(b, &uri, ReaderOptions::default().selected(""));
    let names: Vec<_> = r.schema().columns.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, ["id", "h", "s", "d"]);
}

fn column_errors_name_the_columns(b: &TestBackend) {
    let (t, _) = b.table("colerr", 0..5);
    let uri = b.uri(&t, "");
    let both = TableReader::open_with(
        b.service.clone(),
        uri.as_str(),
        ReaderOptions::default().selected("id").excluded("s"),
    )
    .unwrap_err()
    .to_string();
    assert_mentions(&both, &["selected_cols", "excluded_cols"]);
    for options in [
        ReaderOptions::default().selected("id,nope"),
        ReaderOptions::default().excluded("nope"),
    ] {
        let e = TableReader::open_with(b.service.clone(), uri.as_str(), options)
            .unwrap_err()
            .to_string();
        assert_mentions(&e, &["`nope`"]);
    }
    let e = TableReader::open_with(
        b.service.clone(),
        uri.as_str(),
        ReaderOptions::default().slice(3, 3),
    )
    .unwrap_err()
    .to_string();
    assert_mentions(&e, &["slice_id"]);
}

fn read_returns_n_rows_then_out_of_range(b: &TestBackend) {
    let (t, _) = b.table("readn", 0..10);
    let mut r = open(
        b,
        &b.uri(&t, ""),
        ReaderOptions::default().batch_rows(4).threads(2),
    );
    assert_eq!(r.row_count(), 10);
    for start in [0, 3, 6] {
        let batch = r.read(3).unwrap();
        assert_eq!(
            common::ids(&[batch]),
            (start..start + 3).collect::<Vec<_>>()
        );
    }
    assert_eq!(common::ids(&[r.read(3).unwrap()]), vec![9]);
    let e = r.read(3).unwrap_err();
    assert!(e.is_out_of_range(), "{e}");
    assert!(r.read(1).unwrap_err().is_out_of_range());
    assert!(r.read(0).is_err());
    r.close();
    assert!(matches!(r.read(1), Err(paiio::Error::Closed(_))));
    // One row at a time.
    let mut r = open(b, &b.uri(&t, ""), ReaderOptions::default().slice(1, 2));
    assert_eq!(r.row_count(), 5);
    let one: Vec<i64> = (0..5)
        .flat_map(|_| common::ids(&[r.read(1).unwrap()]))
        .collect();
    assert_eq!(one, vec![5, 6, 7, 8, 9]);
    assert!(r.read(1).unwrap_err().is_out_of_range());
}

fn seek_is_relative_to_the_slice(b: &TestBackend) {
    let (t, _) = b.table("seek", 0..100);
    let mut r = open(
        b,
        &b.uri(&t, ""),
        ReaderOptions::default()
            .slice(1, 2)
            .threads(3)
            .chunk_rows(7),
    );
    r.seek(5).unwrap();
    assert_eq!(common::ids(&[r.read(2).unwrap()]), vec![55, 56]);
    r.seek(0).unwrap();
    assert_eq!(common::ids(&[r.read(1).unwrap()]), vec![50]);
    r.seek(49).unwrap();
    assert_eq!(common::ids(&[r.read(10).unwrap()]), vec![99]);
    r.seek(50).unwrap();
    assert!(r.read(1).unwrap_err().is_out_of_range());
    assert!(r.seek(51).unwrap_err().is_out_of_range());
    r.seek(20).unwrap();
    assert_eq!(read_ids(&mut r), (70..100).collect::<Vec<_>>());
}

fn equal_mode_trims_every_slice(b: &TestBackend) {
    let (t, _) = b.table("equal", 0..10);
    let (t2, _) = b.table("equal2", 100..105);
    let uris = format!("{},{}", b.uri(&t, ""), b.uri(&t2, ""));
    let mut counts = Vec::new();
    for slice in 0..3 {
        let mut r = open(
            b,
            &uris,
            ReaderOptions::default().slice(slice, 3).equal(true),
        );
        assert_eq!(r.row_count(), 3 + 1);
        let ids = read_ids(&mut r);
        let s = slice as i64;
        let start = s * 3 + s.min(1);
        let start2 = 100 + s + s.min(2);
        assert_eq!(
            ids,
            (start..start + 3)
                .chain(start2..start2 + 1)
                .collect::<Vec<_>>()
        );
        counts.push(ids.len());
    }
    assert_eq!(counts, [4, 4, 4]);
}

fn shuffled(b: &TestBackend, uri: &str, seed: u64, epoch: u64, threads: usize) -> Vec<i64> {
    let shuffle = Shuffle {
        seed,
        epoch,
        buffer_rows: 64,
        block_rows: 16,
    };
    read_ids(&mut open(
        b,
        uri,
        ReaderOptions::default()
            .shuffle(shuffle)
            .threads(threads)
            .batch_rows(50),
    ))
}

fn shuffle_is_deterministic_and_exactly_once(b: &TestBackend) {
    let (t, _) = b.table("shuffle", 0..500);
    let (t2, _) = b.table("shuffle2", 1000..1100);
    let uri = format!("{},{}", b.uri(&t, ""), b.uri(&t2, ""));
    let a = shuffled(b, &uri, 1, 0, 1);
    assert_eq!(
        a,
        shuffled(b, &uri, 1, 0, 4),
        "the same seed and epoch give the same order"
    );
    assert_exactly_once(&a, (0..500).chain(1000..1100), "shuffled");
    assert_ne!(a, (0..500).chain(1000..1100).collect::<Vec<_>>());
    let c = shuffled(b, &uri, 1, 1, 3);
    assert_ne!(a, c, "another epoch gives another order");
    assert_exactly_once(&c, (0..500).chain(1000..1100), "epoch 1");
    assert_ne!(
        a,
        shuffled(b, &uri, 2, 0, 2),
        "another seed gives another order"
    );
    // set_epoch on an open reader is the same as opening with that epoch.
    let shuffle = Shuffle {
        seed: 1,
        epoch: 0,
        buffer_rows: 64,
        block_rows: 16,
    };
    let mut r = open(
        b,
        &uri,
        ReaderOptions::default().shuffle(shuffle).batch_rows(50),
    );
    assert_eq!(read_ids(&mut r), a);
    r.set_epoch(1).unwrap();
    assert_eq!(read_ids(&mut r), c);
    // A shuffled slice holds exactly the rows of the slice.
    let mut r = open(
        b,
        &b.uri(&t, ""),
        ReaderOptions::default().shuffle(shuffle).slice(1, 3),
    );
    assert_exactly_once(&read_ids(&mut r), 167..334, "a shuffled slice");
}

/// The shuffled order of a slice, computed from its definition: the slice's rows of each
/// table cut into blocks of `block_rows`, the blocks in the seeded order, and the rows
/// permuted within consecutive windows of `buffer_rows`. `tables` are `(first id, rows)`
/// of tables whose ids count up from their first.
fn documented_shuffle(tables: &[(i64, u64)], slice: (u64, u64), s: Shuffle) -> Vec<i64> {
    use paiio::shard;
    let mut blocks = Vec::new();
    for &(first, rows) in tables {
        let range = shard::slice_range(rows, slice.0, slice.1, false).unwrap();
        for c in shard::chunks(range, s.block_rows as u64) {
            blocks.push(first + c.start as i64..first + c.end as i64);
        }
    }
    let order = shard::permutation(blocks.len(), s.seed, s.epoch, shard::BLOCK_ORDER_STREAM);
    let plan: Vec<i64> = order.iter().flat_map(|&i| blocks[i].clone()).collect();
    let mut out = Vec::new();
    for (w, window) in plan.chunks(s.buffer_rows).enumerate() {
        let p = shard::window_permutation(window.len(), s.seed, s.epoch, w as u64);
        out.extend(p.iter().map(|&i| window[i]));
    }
    out
}

fn shuffle_order_is_the_documented_one(b: &TestBackend) {
    // The order is part of every saved state: it must not change with how rows are read.
    let (t, _) = b.table("order", 0..500);
    let (t2, _) = b.table("order2", 1000..1100);
    let uri = format!("{},{}", b.uri(&t, ""), b.uri(&t2, ""));
    let shuffles = [
        // Windows of whole blocks, windows cutting through blocks (short blocks at the end
        // of each table's range shift the cuts), one window for everything.
        (64, 16),
        (50, 8),
        (45, 7),
        (4096, 16),
    ];
    for (buffer_rows, block_rows) in shuffles {
        for threads in [1, 3] {
            let s = Shuffle {
                seed: 5,
                epoch: 2,
                buffer_rows,
                block_rows,
            };
            let options = ReaderOptions::default()
                .shuffle(s)
                .slice(1, 3)
                .threads(threads)
                .batch_rows(19);
            assert_eq!(
                read_ids(&mut open(b, &uri, options)),
                documented_shuffle(&[(0, 500), (1000, 100)], (1, 3), s),
                "{s:?} with {threads} threads"
            );
        }
    }
}

fn forward_seeks_land_on_the_same_rows(b: &TestBackend) {
    let (t, _) = b.table("skip", 0..400);
    let uri = b.uri(&t, "");
    let s = Shuffle {
        seed: 3,
        epoch: 1,
        buffer_rows: 64,
        block_rows: 16,
    };
    for shuffle in [None, Some(s)] {
        let full: Vec<i64> = match shuffle {
            Some(s) => documented_shuffle(&[(0, 400)], (0, 1), s),
            None => (0..400).collect(),
        };
        let options = ReaderOptions {
            shuffle,
            batch_rows: 10,
            capacity: 40,
            ..ReaderOptions::default().threads(1)
        };
        let mut r = open(b, &uri, options);
        // (seek to, rows to read): within the rows read ahead, to the next window, far
        // ahead, back, to the same place, to the end.
        let steps = [
            (0, 5),
            (5, 3),
            (20, 10),
            (60, 10),
            (70, 1),
            (130, 30),
            (300, 20),
            (10, 7),
            (17, 7),
            (24, 0),
            (390, 10),
        ];
        for (i, (at, n)) in steps.into_iter().enumerate() {
            r.seek(at).unwrap();
            if i % 2 == 1 {
                r.prefetch().unwrap();
            }
            assert_eq!(r.position(), at);
            if n > 0 {
                let got = common::ids(&[r.read(n).unwrap()]);
                assert_eq!(
                    got,
                    full[at as usize..at as usize + n],
                    "{n} rows at {at} ({shuffle:?})"
                );
            }
        }
        r.seek(400).unwrap();
        assert!(r.read(1).unwrap_err().is_out_of_range());
    }
}

fn open_slice_reads_the_same_snapshot(b: &TestBackend) {
    let (t, g) = b.table("reslice", 0..300);
    let (t2, _) = b.table("reslice2", 1000..1077);
    let uri = format!("{},{}", b.uri(&t, ""), b.uri(&t2, ""));
    let s = Shuffle {
        seed: 4,
        epoch: 2,
        buffer_rows: 50,
        block_rows: 8,
    };
    for shuffle in [None, Some(s)] {
        for equal in [false, true] {
            let options = ReaderOptions {
                shuffle,
                equal,
                batch_rows: 13,
                ..ReaderOptions::default().threads(2)
            };
            let base = open(b, &uri, options.clone().slice(0, 1));
            for slice in 0..5 {
                let mut derived = base.open_slice(slice, 5).unwrap();
                // Reading ahead before the first read changes nothing of what is read.
                derived.prefetch().unwrap();
                let mut direct = open(b, &uri, options.clone().slice(slice, 5));
                assert_eq!(derived.row_count(), direct.row_count());
                assert_eq!(derived.options().slice_id, slice);
                assert_eq!(
                    read_ids(&mut derived),
                    read_ids(&mut direct),
                    "slice {slice} of 5 ({shuffle:?}, equal {equal})"
                );
            }
            assert!(base.open_slice(5, 5).is_err());
        }
    }
    // Slices of one reader read the snapshot its sessions pinned, whatever commits follow.
    let base = open(b, &b.uri(&t, ""), ReaderOptions::default());
    b.append(&t, &g, "", 300..400);
    let mut all = Vec::new();
    for slice in 0..3 {
        all.extend(read_ids(&mut base.open_slice(slice, 3).unwrap()));
    }
    assert_eq!(all, (0..300).collect::<Vec<_>>());
    let mut fresh = open(b, &b.uri(&t, ""), ReaderOptions::default());
    assert_eq!(fresh.row_count(), 400);
    assert_eq!(read_ids(&mut fresh).len(), 400);
}

fn state_restores_the_exact_remaining_rows(b: &TestBackend) {
    let (t, _) = b.table("state", 0..300);
    let (t2, _) = b.table("state2", 1000..1077);
    let uri = format!("{},{}", b.uri(&t, ""), b.uri(&t2, ""));
    let shuffles = [
        None,
        Some(Shuffle {
            seed: 9,
            epoch: 3,
            buffer_rows: 50,
            block_rows: 8,
        }),
    ];
    for shuffle in shuffles {
        let options = ReaderOptions {
            shuffle,
            slice_id: 1,
            slice_count: 2,
            batch_rows: 13,
            ..Default::default()
        };
        let full = read_ids(&mut open(b, &uri, options.clone().threads(2)));
        assert_eq!(full.len(), 150 + 38);
        for k in [0usize, 1, 49, 50, 51, 120, 187, 188] {
            let mut r = open(b, &uri, options.clone().threads(3));
            let mut head = Vec::new();
            while head.len() < k {
                head.extend(common::ids(&[r.read((k - head.len()).min(7)).unwrap()]));
            }
            assert_eq!(head, full[..k], "the first {k} rows ({shuffle:?})");
            let state: ReaderState =
                serde_json::from_str(&serde_json::to_string(&r.state()).unwrap()).unwrap();
            assert_eq!(state.position, k as u64);
            // A new reader (other thread count, other epoch to start with) resumes exactly.
            let mut other = options.clone().threads(1);
            if let Some(s) = other.shuffle.as_mut() {
                s.epoch = 0;
            }
            let mut fresh = open(b, &uri, other);
            fresh.restore(&state).unwrap();
            assert_eq!(
                read_ids(&mut fresh),
                full[k..],
                "resuming at {k} ({shuffle:?})"
            );
            // The original reader continues the same way.
            assert_eq!(read_ids(&mut r), full[k..]);
        }
    }
    // A state of other tables or slices is refused.
    let mut r = open(b, &b.uri(&t, ""), ReaderOptions::default());
    let state = open(b, &uri, ReaderOptions::default()).state();
    assert!(
        r.restore(&state)
            .unwrap_err()
            .to_string()
            .contains("tables")
    );
}

fn reads_a_consistent_snapshot_while_a_writer_commits(b: &TestBackend) {
    let (t, g) = b.table("snapshot", 0..2000);
    let uri = b.uri(&t, "");
    let mut r = open(
        b,
        &uri,
        ReaderOptions::default()
            .threads(4)
            .batch_rows(100)
            .chunk_rows(150),
    );
    let first = common::ids(&[r.read(10).unwrap()]);
    assert_eq!(first, (0..10).collect::<Vec<_>>());
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for k in 0..5 {
                b.append(&t, &g, "", 10_000 + k * 100..10_000 + (k + 1) * 100);
            }
        });
        let mut ids = first.clone();
        ids.extend(read_ids(&mut r));
        writer.join().unwrap();
        assert_exactly_once(&ids, 0..2000, "the snapshot at open");
    });
    // Seeking back still reads the snapshot.
    r.seek(1990).unwrap();
    assert_eq!(read_ids(&mut r), (1990..2000).collect::<Vec<_>>());
    // A new reader sees the commits.
    let later = read_ids(&mut open(b, &uri, ReaderOptions::default()));
    assert_exactly_once(&later, (0..2000).chain(10_000..10_500), "after the commits");
}

fn memory_stays_within_the_budget(b: &TestBackend) {
    let (t, _) = b.table("budget", 0..20_000);
    let uri = b.uri(&t, "");
    let budget = 48 << 10;
    let options = ReaderOptions::default()
        .threads(4)
        .batch_rows(128)
        .chunk_rows(500)
        .byte_budget(budget);
    let mut r = open(b, &uri, options);
    let mut ids = Vec::new();
    while let Ok(batch) = r.read(300) {
        ids.extend(common::ids(&[batch]));
        let stats = r.buffer_stats();
        assert!(
            stats.buffered_bytes <= budget + stats.max_batch_bytes,
            "{stats:?}"
        );
    }
    assert_exactly_once(&ids, 0..20_000, "under a byte budget");
    let stats = r.buffer_stats();
    assert!(
        stats.peak_bytes <= budget + stats.max_batch_bytes,
        "{stats:?}"
    );
    assert!(stats.max_batch_bytes < budget / 2, "{stats:?}");

    // A table ten times larger than the row capacity.
    let mut r = open(
        b,
        &uri,
        ReaderOptions::default()
            .threads(8)
            .capacity(2000)
            .batch_rows(100)
            .chunk_rows(300),
    );
    let ids = read_ids(&mut r);
    assert_eq!(ids, (0..20_000).collect::<Vec<_>>());
    let stats = r.buffer_stats();
    assert!(stats.peak_rows <= 2000 + 100, "{stats:?}");
    assert_eq!(stats.capacity_rows, 2000);

    // Automatic capacity: estimated from the first rows.
    let mut r = open(b, &uri, ReaderOptions::default().threads(2));
    r.read(1).unwrap();
    let stats = r.buffer_stats();
    assert_eq!(stats.byte_budget, 2 * paiio::options::AUTO_BYTES_PER_THREAD);
    assert!(stats.capacity_rows > 10_000, "{stats:?}");
}

fn all_types_verify(b: &TestBackend) {
    let g = paiio_conformance::datagen::DataGen::all_types(11);
    let t = common::block(b.store.create_gen_table("alltypes", &g, &[]));
    b.append(&t, &g, "", 0..300);
    let mut r = open(
        b,
        &b.uri(&t, ""),
        ReaderOptions::default().threads(3).batch_rows(64),
    );
    let batches = common::read_rest(&mut r);
    let ids = g.verified_ids(&batches, "all types through the reader");
    assert_eq!(ids, (0..300).collect::<Vec<_>>());
    let types: Vec<String> = r
        .schema()
        .columns
        .iter()
        .map(|c| c.ty.to_string())
        .collect();
    assert!(
        types.contains(&"decimal(10,2)".to_string())
            && types.contains(&"map<string,bigint>".to_string()),
        "{types:?}"
    );
}

fn iterator_yields_batches_of_batch_rows(b: &TestBackend) {
    let (t, _) = b.table("iter", 0..1000);
    let r = open(
        b,
        &b.uri(&t, ""),
        ReaderOptions::default().batch_rows(300).threads(2),
    );
    let sizes: Vec<usize> = r.map(|b| b.unwrap().num_rows()).collect();
    assert_eq!(sizes, [300, 300, 300, 100]);
}

#[test]
fn empty_slices_and_empty_tables() {
    let b = common::local();
    let (t, _) = b.table("empty", 0..0);
    let mut r = open(&b, &b.uri(&t, ""), ReaderOptions::default());
    assert_eq!(r.row_count(), 0);
    assert!(r.read(1).unwrap_err().is_out_of_range());
    r.seek(0).unwrap();
    assert!(r.seek(1).unwrap_err().is_out_of_range());
    assert_eq!(r.schema().columns.len(), 4);
}

#[test]
fn blocking_calls_inside_async_are_errors() {
    let b = common::local();
    let (t, _) = b.table("async", 0..3);
    let uri = b.uri(&t, "");
    let service = b.service.clone();
    let e = common::block(async move {
        TableReader::open_with(service, uri.as_str(), ReaderOptions::default()).unwrap_err()
    });
    assert_mentions(&e, &["async"]);
}

#[test]
fn open_uses_the_configured_backend() {
    // ODPS_CONFIG_FILE_PATH-free: a config naming a local warehouse through the builder.
    let b = common::local();
    let (t, _) = b.table("config", 0..4);
    let config = paiio_storage::config::Config::builder()
        .warehouse(b.dir.path().join("warehouse"))
        .build();
    let service = paiio_storage::open_service(&config).unwrap();
    let mut r =
        TableReader::open_with(service, b.uri(&t, "").as_str(), ReaderOptions::default()).unwrap();
    assert_eq!(read_ids(&mut r), vec![0, 1, 2, 3]);
    assert_eq!(r.arrow_schema().fields().len(), 4);
}

#[test]
fn a_read_dropped_while_it_waits_leaves_the_position() {
    use paiio_server::{Fault, FaultPlan, FaultRule, When};

    let (b, faults) = common::rest_with_faults();
    let (t, _) = b.table("dropped", 0..40);
    let stall = Fault::Stall {
        ms: 2000,
        after_bytes: None,
    };
    let rule = FaultRule::new(stall, When::Next(1)).action("TableRead");
    faults.set(FaultPlan::new().rule(rule)).unwrap();
    let options = ReaderOptions::default().threads(1);
    let mut r = TableReader::open_with(b.service.clone(), b.uri(&t, "").as_str(), options).unwrap();
    let tick = std::time::Duration::from_millis(20);
    let stopped = paiio::runtime::block_on_checked(r.next_batch_async(10), tick, || Err(()));
    assert!(matches!(stopped, Ok(Err(()))), "{stopped:?}");
    assert_eq!(r.position(), 0);
    assert_eq!(read_ids(&mut r), (0..40).collect::<Vec<_>>());
}

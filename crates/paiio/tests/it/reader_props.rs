//! Property tests of the reader over the local warehouse: for random table sizes, slice
//! counts, thread counts and capacities, the slices hold every row exactly once, each slice
//! is contiguous and in order, and the slices are balanced to one row.

use paiio::TableReader;
use paiio::options::ReaderOptions;
use paiio_conformance::datagen::assert_exactly_once;
use proptest::prelude::*;

use crate::common;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn slices_partition_the_table(
        total in 0i64..3000,
        count in 1u64..9,
        threads in 1usize..9,
        capacity in prop_oneof![Just(0usize), 1usize..800],
        batch_rows in 1usize..700,
        chunk_rows in prop_oneof![Just(0usize), 1usize..900],
    ) {
        let b = common::local();
        let (t, _) = b.table("prop", 0..total);
        let uri = b.uri(&t, "");
        let mut all = Vec::new();
        let mut lens = Vec::new();
        for slice in 0..count {
            let options = ReaderOptions::default()
                .slice(slice, count)
                .threads(threads)
                .capacity(capacity)
                .batch_rows(batch_rows)
                .chunk_rows(chunk_rows);
            let mut reader = TableReader::open_with(b.service.clone(), uri.as_str(), options).unwrap();
            let ids = common::read_ids(&mut reader);
            prop_assert_eq!(ids.len() as u64, reader.row_count());
            prop_assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "slice {} is contiguous", slice);
            lens.push(ids.len());
            all.extend(ids);
        }
        assert_exactly_once(&all, 0..total, "all slices");
        let (min, max) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
        prop_assert!(max - min <= 1, "balanced: {:?}", lens);
    }

    #[test]
    fn shuffled_reads_resume_exactly(
        total in 1i64..1500,
        buffer_rows in 1usize..300,
        block_rows in 1usize..200,
        threads in 1usize..6,
        stop in 0.0f64..1.0,
        seed in any::<u64>(),
    ) {
        let b = common::local();
        let (t, _) = b.table("propshuf", 0..total);
        let uri = b.uri(&t, "");
        let shuffle = paiio::Shuffle { seed, epoch: 1, buffer_rows, block_rows };
        let options = ReaderOptions::default().shuffle(shuffle).threads(threads).batch_rows(37);
        let full = common::read_ids(&mut TableReader::open_with(b.service.clone(), uri.as_str(), options.clone()).unwrap());
        assert_exactly_once(&full, 0..total, "shuffled");
        let k = ((total as f64) * stop) as usize;
        let mut r = TableReader::open_with(b.service.clone(), uri.as_str(), options.clone()).unwrap();
        if k > 0 {
            r.read(k).unwrap();
        }
        let state = r.state();
        let mut fresh = TableReader::open_with(b.service.clone(), uri.as_str(), options.threads(1)).unwrap();
        fresh.restore(&state).unwrap();
        prop_assert_eq!(common::read_ids(&mut fresh), full[k..].to_vec());
    }
}

//! Two `train_tch` processes with WORLD_SIZE=2 on an embedded warehouse (configured through
//! ODPS_CONFIG_FILE_PATH): together they see every row exactly once per epoch, and their
//! predictions cover the table exactly once.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use paiio::{ReaderOptions, TableReader};
use paiio_storage::local::LocalWarehouse;

const ROWS: u64 = 5001;

fn train_tch(config: &std::path::Path, args: &[&str], rank: Option<u32>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_train_tch"));
    c.args(args).env("ODPS_CONFIG_FILE_PATH", config);
    if let Some(rank) = rank {
        c.env("RANK", rank.to_string()).env("WORLD_SIZE", "2");
    }
    c
}

fn check(output: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

#[test]
fn two_workers_cover_the_table_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let config = dir.path().join("odps.ini");
    std::fs::write(
        &config,
        format!("warehouse={}\nproject=demo\n", warehouse.display()),
    )
    .unwrap();
    let table = "odps://demo/tables/train";
    let output = "odps://demo/tables/predictions";

    let out = train_tch(
        &config,
        &["--generate", &ROWS.to_string(), "--table", table],
        None,
    )
    .output()
    .unwrap();
    check(&out, "--generate");

    let ids_dir = dir.path().join("ids");
    let ids_arg = ids_dir.to_str().unwrap();
    let common = [
        "--ids-out",
        ids_arg,
        "--table",
        table,
        "--features",
        "f1,f2,f3,f4",
        "--label",
        "y",
        "--output",
        output,
        "--epochs",
        "3",
        "--batch-size",
        "128",
        "--lr",
        "0.05",
    ];
    // Both workers at once, as a launcher would start them.
    let children: Vec<_> = (0..2)
        .map(|rank| {
            train_tch(&config, &common, Some(rank))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let workers: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut rows_per_epoch = BTreeMap::<u64, u64>::new();
    for (rank, out) in workers.iter().enumerate() {
        let stdout = check(out, &format!("rank {rank}"));
        eprintln!("rank {rank}:\n{stdout}");
        for line in stdout.lines().filter(|l| l.starts_with("epoch ")) {
            let epoch: u64 = line[6..].split('/').next().unwrap().parse().unwrap();
            let rows: u64 = line
                .split(" rows ")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
            *rows_per_epoch.entry(epoch).or_default() += rows;
        }
        assert!(
            stdout.contains(&format!("slice {rank}: wrote ")),
            "{stdout}"
        );
    }
    assert_eq!(rows_per_epoch.len(), 3);
    assert!(
        rows_per_epoch.values().all(|&r| r == ROWS),
        "{rows_per_epoch:?}"
    );
    // Every epoch, the two slices together saw every id exactly once, each in its own order.
    let mut orders = Vec::new();
    for epoch in 0..3 {
        let mut all = Vec::new();
        for rank in 0..2 {
            let text =
                std::fs::read_to_string(ids_dir.join(format!("epoch-{epoch}-slice-{rank}.txt")))
                    .unwrap();
            let ids: Vec<i64> = text.lines().map(|l| l.parse().unwrap()).collect();
            if rank == 0 {
                orders.push(ids.clone());
            }
            all.extend(ids);
        }
        all.sort_unstable();
        assert_eq!(all, (0..ROWS as i64).collect::<Vec<_>>(), "epoch {epoch}");
    }
    assert_ne!(orders[0], orders[1], "each epoch has its own shuffle order");
    check_predictions(&warehouse, output);
}

/// Every id of the training table has exactly one prediction, in [0, 1].
fn check_predictions(warehouse: &std::path::Path, output: &str) {
    let ids = prediction_ids(warehouse, output);
    assert_eq!(ids, (0..ROWS as i64).collect::<Vec<i64>>());
}

fn prediction_ids(warehouse: &std::path::Path, output: &str) -> Vec<i64> {
    let service = std::sync::Arc::new(LocalWarehouse::open(warehouse).unwrap());
    let reader = TableReader::open_with(service, output, ReaderOptions::default()).unwrap();
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        ids.extend(batch.column(0).as_primitive::<Int64Type>().values().iter());
        assert!(
            batch
                .column(1)
                .as_primitive::<Float64Type>()
                .values()
                .iter()
                .all(|p| (0.0..=1.0).contains(p))
        );
    }
    ids.sort_unstable();
    ids
}

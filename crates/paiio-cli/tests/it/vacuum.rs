//! `paiio table vacuum`: killed imports leave staged data behind; vacuum reports and removes
//! it, and the table reads the same.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

fn data_files(dir: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().to_string(),
                        e.metadata().unwrap().len(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// A field of the one-line report: `7 files` gives 7 for `files`.
fn count(report: &str, what: &str) -> u64 {
    let words: Vec<&str> = report.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[1].trim_start_matches('(').starts_with(what))
        .and_then(|w| w[0].trim_start_matches('(').parse().ok())
        .unwrap_or_else(|| panic!("no `{what}` in {report:?}"))
}

#[test]
fn vacuum_removes_what_killed_imports_left() {
    let env = Env::new();
    let t = "odps://proj/tables/v";
    env.create(t, SCHEMA, None);
    let small = env.path("small.csv");
    write_acceptance_csv(&small, 0, 1000);
    env.import(t, &small);
    let before = env.state(t);
    let data = env.warehouse().join("proj/default/v/data");
    let live = data_files(&data);

    // An import killed once it has written data.
    let big = env.path("big.csv");
    write_acceptance_csv(&big, 1000, 1_500_000);
    let mut command = env.command();
    command
        .args([
            "table",
            "import",
            t,
            big.to_str().unwrap(),
            "--batch-rows",
            "20000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    // Two new files: the first one is whole and recorded by its stream.
    while data_files(&data).len() < live.len() + 2 {
        assert!(
            Instant::now() < deadline,
            "the import wrote nothing in 2 minutes"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the import ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let dead: u64 = data_files(&data)
        .iter()
        .filter(|f| !live.contains(f))
        .map(|f| f.1)
        .sum();
    assert!(dead > 0);

    // Its session records the import's process, which is gone: the defaults remove it and
    // what it recorded at once (a file the kill interrupted, which nothing records, waits for
    // the grace period).
    let dry = env.ok(&["table", "vacuum", t, "--dry-run"]);
    assert!(dry.starts_with("would free"), "{dry}");
    assert_eq!(count(&dry, "write"), 1, "{dry}");
    assert!(
        data_files(&data).len() > live.len(),
        "a dry run removes nothing"
    );
    let freed = env.ok(&["table", "vacuum", t]);
    assert!(freed.starts_with("freed"), "{freed}");
    assert_eq!(count(&freed, "write"), 1, "{freed}");
    assert!(count(&freed, "unreferenced") >= 1, "{freed}");
    assert_eq!(
        count(&dry, "files"),
        count(&freed, "files"),
        "{dry} / {freed}"
    );
    assert!(
        data_files(&data).len() <= live.len() + 1,
        "{freed}: only an unrecorded file may stay"
    );
    let rest = env.ok(&["table", "vacuum", t, "--grace", "0"]);
    assert_eq!(count(&rest, "write"), 0, "{rest}");
    assert!(
        count(&freed, "bytes") + count(&rest, "bytes") >= dead,
        "{freed} / {rest}: {dead} bytes were dead"
    );
    assert_eq!(
        data_files(&data),
        live,
        "only the table's own files are left"
    );
    assert_eq!(env.state(t), before);

    // --all, and the usage errors.
    let all = env.ok(&["table", "vacuum", "--all"]);
    assert_contains_all(&all, &["0 files", "1 tables"]);
    let (code, message) = env.fail(&["table", "vacuum"]);
    assert_eq!(code, 2, "{message}");
    let (code, message) = env.fail(&["table", "vacuum", t, "--all"]);
    assert_eq!(code, 2, "{message}");
}

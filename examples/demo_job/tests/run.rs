//! The main job end to end, small: two workers, every row read and written once.

use std::process::Command;

#[test]
fn demo_job_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let out = Command::new(env!("CARGO_BIN_EXE_demo-job"))
        .args(["--rows", "20000", "--warehouse"])
        .arg(&warehouse)
        .env_remove("ODPS_CONFIG_FILE_PATH")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo-job failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for worker in 0..2 {
        assert!(
            stdout.contains(&format!("worker {worker}: read 10000 rows")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("total: 20000 rows"), "{stdout}");
    assert!(
        stdout.contains("20000 predictions, ids = input ids, each once"),
        "{stdout}"
    );
    assert!(stdout.contains("main job done"), "{stdout}");

    // Run again on the same warehouse: the tables are made afresh.
    let again = Command::new(env!("CARGO_BIN_EXE_demo-job"))
        .args(["--rows", "5000", "--warehouse"])
        .arg(&warehouse)
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// The workers through a Tunnel-only server of the warehouse, configured by a plain ini file.
#[test]
fn demo_job_runs_through_the_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_demo-job"))
        .args(["--rows", "20000", "--tunnel", "--warehouse"])
        .arg(dir.path().join("warehouse"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo-job --tunnel failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "serving the warehouse over the Tunnel only",
        "worker 0: read 10000 rows",
        "worker 1: read 10000 rows",
        "20000 predictions, ids = input ids, each once",
        "main job done",
    ] {
        assert!(stdout.contains(needle), "{needle:?} missing from {stdout}");
    }
}

#[test]
fn demo_job_fails_below_the_accuracy_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_demo-job"))
        .args(["--rows", "2000", "--min-accuracy", "1.01", "--warehouse"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("below --min-accuracy"));
}

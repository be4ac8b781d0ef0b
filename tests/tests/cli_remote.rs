//! The `paiio` command through a server: a table made and filled with `--warehouse`, then
//! served by an in-process server with keys (with the Storage API, or as a public endpoint
//! with the Tunnel only), and read, exported, checksummed and imported through it
//! (`ODPS_CONFIG_FILE_PATH` naming only the keys and the endpoint, no `--warehouse`); every
//! answer must be the one the same command gives against the warehouse directly.
//!
//! The binary is built once with `cargo build -p paiio-cli --bin paiio` into the target
//! directory this test runs from (binaries of other packages are not built for tests).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use paiio_tests::{ACCESS_ID, ACCESS_KEY, PROJECT, TestServer, TestServerOptions};

/// The `paiio` binary, built on first use next to this test's own profile directory.
fn paiio_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test's path");
        // <target>/<profile>/deps/cli_remote-HASH
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the profile directory")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("the target directory");
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--quiet", "-p", "paiio-cli", "--bin", "paiio"])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(
            status.success(),
            "cargo build -p paiio-cli failed: {status}"
        );
        let bin = profile_dir.join(format!("paiio{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.is_file(), "no binary at {}", bin.display());
        bin
    })
}

/// Where a command runs: the warehouse directly, or the server through a config file.
#[derive(Clone)]
enum Via {
    Warehouse(PathBuf),
    Server(PathBuf),
}

fn paiio(via: &Via, args: &[&str]) -> Output {
    let mut cmd = Command::new(paiio_bin());
    for var in [
        "ODPS_CONFIG_FILE_PATH",
        "PAIIO_WAREHOUSE",
        "ODPS_ENDPOINT",
        "ODPS_PROJECT",
        "ODPS_PROJECT_NAME",
        "ODPS_TUNNEL_ENDPOINT",
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_REGION_ID",
    ] {
        cmd.env_remove(var);
    }
    match via {
        Via::Warehouse(dir) => {
            cmd.arg("--warehouse").arg(dir);
        }
        Via::Server(ini) => {
            cmd.env("ODPS_CONFIG_FILE_PATH", ini);
        }
    }
    cmd.args(args).output().expect("paiio runs")
}

fn ok(via: &Via, args: &[&str]) -> String {
    let out = paiio(via, args);
    assert!(
        out.status.success(),
        "paiio {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

async fn run_ok(via: &Via, args: &[&str]) -> String {
    let (via, args): (Via, Vec<String>) =
        (via.clone(), args.iter().map(|s| s.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        ok(&via, &args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap()
}

async fn run(via: &Via, args: &[&str]) -> Output {
    let (via, args): (Via, Vec<String>) =
        (via.clone(), args.iter().map(|s| s.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        paiio(&via, &args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap()
}

fn uri(table: &str) -> String {
    format!("odps://{PROJECT}/tables/{table}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_through_the_storage_api_matches_the_warehouse() {
    cli_through_a_server_matches_the_warehouse(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_through_the_tunnel_matches_the_warehouse() {
    cli_through_a_server_matches_the_warehouse(true).await;
}

async fn cli_through_a_server_matches_the_warehouse(tunnel_only: bool) {
    tokio::task::spawn_blocking(paiio_bin).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().join("warehouse");
    std::fs::create_dir_all(&wh).unwrap();
    let local = Via::Warehouse(wh.clone());

    // A table made and filled through the CLI, and two empty ones to import into.
    let rows = 1234;
    let mut csv = String::from("id,name,score\n");
    for i in 0..rows {
        csv.push_str(&format!("{i},name \"{i}\",{}\n", i as f64 * 0.5));
    }
    let data = dir.path().join("data.csv");
    std::fs::write(&data, csv.replace("\"", "")).unwrap();
    let data = data.to_str().unwrap();
    let schema = "id bigint, name string, score double";
    for t in ["src", "into_local", "into_remote"] {
        run_ok(&local, &["table", "create", &uri(t), "--schema", schema]).await;
    }
    run_ok(&local, &["table", "import", &uri("src"), data]).await;

    // The server over that warehouse, and a configuration naming it.
    let server = TestServer::start_with(TestServerOptions {
        warehouse_dir: Some(wh.clone()),
        tunnel_only,
        ..Default::default()
    })
    .await;
    let ini = dir.path().join("odps_config.ini");
    std::fs::write(
        &ini,
        format!(
            "access_id={ACCESS_ID}\naccess_key={ACCESS_KEY}\nend_point={}\nproject={PROJECT}\n",
            server.handle.endpoint()
        ),
    )
    .unwrap();
    assert!(
        server.handle.endpoint().starts_with("http://127.0.0.1:")
            && server.handle.endpoint().ends_with("/api")
    );
    let remote = Via::Server(ini.clone());

    // Reads answer the same.
    let src = uri("src");
    for args in [
        vec!["table", "count", src.as_str()],
        vec!["table", "head", src.as_str(), "-n", "7"],
        vec!["table", "checksum", src.as_str()],
    ] {
        let want = run_ok(&local, &args).await;
        let got = run_ok(&remote, &args).await;
        assert_eq!(got, want, "paiio {args:?} through the server");
    }
    assert_eq!(
        run_ok(&remote, &["table", "count", &src]).await.trim(),
        rows.to_string()
    );

    // Exports hold the same bytes.
    for ext in ["csv", "jsonl", "arrow"] {
        let a = dir.path().join(format!("local.{ext}"));
        let b = dir.path().join(format!("remote.{ext}"));
        run_ok(&local, &["table", "export", &src, a.to_str().unwrap()]).await;
        run_ok(&remote, &["table", "export", &src, b.to_str().unwrap()]).await;
        assert_eq!(
            std::fs::read(&b).unwrap(),
            std::fs::read(&a).unwrap(),
            "exported {ext}"
        );
    }

    // Imports into an existing table land the same rows.
    run_ok(&local, &["table", "import", &uri("into_local"), data]).await;
    run_ok(&remote, &["table", "import", &uri("into_remote"), data]).await;
    let want = run_ok(&local, &["table", "checksum", &src]).await;
    for t in ["into_local", "into_remote"] {
        assert_eq!(
            run_ok(&local, &["table", "checksum", &uri(t)]).await,
            want,
            "{t} (checked locally)"
        );
        assert_eq!(
            run_ok(&remote, &["table", "checksum", &uri(t)]).await,
            want,
            "{t} (checked remotely)"
        );
    }

    // Catalog commands are not part of the Storage API: a clear error, nothing changed.
    for args in [
        vec![
            "table",
            "create",
            "odps://conformance/tables/nope",
            "--schema",
            "a bigint",
        ],
        vec!["table", "drop", src.as_str()],
        vec!["table", "ls", "odps://conformance"],
        vec!["table", "partitions", src.as_str()],
    ] {
        let out = run(&remote, &args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "paiio {args:?} through the server should fail"
        );
        assert!(
            stderr.contains("not offered by the Storage API") && stderr.contains("--warehouse"),
            "paiio {args:?}: {stderr}"
        );
    }
    let listed = run_ok(&local, &["table", "ls", "odps://conformance"]).await;
    assert!(
        !listed.contains("nope") && listed.contains("src"),
        "{listed}"
    );
}

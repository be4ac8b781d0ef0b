//! The conformance suite (`paiio_storage::testing`) against the local warehouse, plus the
//! checks only a directory backend allows (nothing is written outside its root).

use paiio_storage::local::LocalWarehouse;
use paiio_storage::testing::Backend;
use paiio_storage::{CreateTableOptions, TableId, TableService};

/// A fresh warehouse in a temporary directory, on a manual clock. The directory lives as
/// long as the backend.
fn backend() -> Backend {
    paiio_storage::testing::local_backend()
}

paiio_storage::conformance_tests!(backend());

/// Every capability in turn against one shared warehouse (tables of different capabilities
/// must not disturb each other).
#[tokio::test]
async fn run_all_on_one_warehouse() {
    paiio_storage::testing::run_all(&backend()).await;
}

/// Names that climb out of the warehouse never create anything outside its root.
#[tokio::test]
async fn invalid_names_write_nothing_outside_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a").join("b").join("warehouse");
    let warehouse = LocalWarehouse::open(&root).unwrap();
    let schema = paiio_storage::testing::datagen::DataGen::simple(1).table_schema(vec![]);
    let names = ["../../../escape_t", "../../escape_t", "../escape_t"];
    for name in names {
        let table = TableId {
            project: "p".into(),
            schema: None,
            table: name.into(),
        };
        let _ = warehouse
            .create_table(&table, &schema, CreateTableOptions::default())
            .await;
    }
    let project = TableId {
        project: "../escape_p".into(),
        schema: None,
        table: "t".into(),
    };
    let _ = warehouse
        .create_table(&project, &schema, CreateTableOptions::default())
        .await;
    let in_schema = TableId {
        project: "p".into(),
        schema: Some("../../escape_s".into()),
        table: "t".into(),
    };
    let _ = warehouse
        .create_table(&in_schema, &schema, CreateTableOptions::default())
        .await;
    let mut escaped = Vec::new();
    for entry in walk(dir.path()) {
        if entry
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("escape_"))
            && !entry.starts_with(&root)
        {
            escaped.push(entry);
        }
    }
    assert!(
        escaped.is_empty(),
        "expected nothing created outside the warehouse root {}, found {escaped:?}",
        root.display()
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            out.push(path.clone());
            if path.is_dir() {
                out.extend(walk(&path));
            }
        }
    }
    out
}

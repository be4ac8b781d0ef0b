//! The conformance suite (`paiio_conformance`) against the local warehouse, plus the
//! checks only a directory backend allows (nothing is written outside its root).

use paiio_conformance::Backend;
use paiio_storage::local::LocalWarehouse;
use paiio_storage::{CreateTableOptions, TableId, TableService};

/// A fresh warehouse in a temporary directory, on a manual clock. The directory lives as
/// long as the backend.
fn backend() -> Backend {
    paiio_conformance::local_backend()
}

paiio_conformance::conformance_tests!(backend());

/// Every capability in turn against one shared warehouse (tables of different capabilities
/// must not disturb each other).
#[tokio::test]
async fn run_all_on_one_warehouse() {
    paiio_conformance::run_all(&backend()).await;
}

/// Names that climb out of the warehouse never create anything outside its root.
#[tokio::test]
async fn invalid_names_write_nothing_outside_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a").join("b").join("warehouse");
    let warehouse = LocalWarehouse::open(&root).unwrap();
    let schema = paiio_conformance::datagen::DataGen::simple(1).table_schema(vec![]);
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

/// A stored schema whose type nests too deep (written by an older version, or tampered
/// with) is a clear `Corrupt` error naming the limit on every access, also after the
/// warehouse is opened again, never a stack overflow.
#[tokio::test]
async fn a_stored_schema_nested_too_deep_is_corrupt() {
    use paiio_storage::types::MAX_TYPE_DEPTH;
    use paiio_storage::{Column, Error, OdpsType, ReadSessionRequest, TableSchema};

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("warehouse");
    let warehouse = LocalWarehouse::open(&root).unwrap();
    let table = TableId {
        project: "p".into(),
        schema: None,
        table: "deep".into(),
    };
    let schema = TableSchema::new(
        vec![
            Column::new("id", OdpsType::BigInt),
            Column::new("c", OdpsType::Array(Box::new(OdpsType::BigInt))),
        ],
        vec![],
    )
    .unwrap();
    warehouse
        .create_table(&table, &schema, CreateTableOptions::default())
        .await
        .unwrap();
    let manifest = root
        .join("p")
        .join("default")
        .join("deep")
        .join("_manifest")
        .join(format!("{:020}.json", 0));
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("\"array<bigint>\""), "{text}");

    for depth in [MAX_TYPE_DEPTH + 1, 1_000, 100_000] {
        let deep = format!("{}bigint{}", "array<".repeat(depth), ">".repeat(depth));
        std::fs::write(
            &manifest,
            text.replace("\"array<bigint>\"", &format!("\"{deep}\"")),
        )
        .unwrap();
        // A fresh warehouse each time: nothing cached, as after a restart.
        let reopened = LocalWarehouse::open(&root).unwrap();
        let described = reopened.describe_table(&table).await;
        let read = reopened
            .create_read_session(&ReadSessionRequest::new(table.clone()))
            .await;
        for result in [described.map(|_| ()), read.map(|_| ())] {
            match result {
                Err(Error::Corrupt { location, message }) => {
                    assert!(location.ends_with(".json"), "{location}");
                    assert!(
                        message.contains(&format!("the limit is {MAX_TYPE_DEPTH}")),
                        "{message}"
                    );
                }
                other => panic!("depth {depth}: expected a Corrupt error, got {other:?}"),
            }
        }
    }
}

/// An empty partition can be added (every level, in any key order), is listed with no rows,
/// is refused a second time unless `if_not_exists`, and a malformed spec changes nothing.
#[tokio::test]
async fn empty_partitions_are_created() {
    use paiio_storage::{Column, OdpsType, PartitionSpec, TableSchema};
    let dir = tempfile::tempdir().unwrap();
    let warehouse = LocalWarehouse::open(dir.path()).unwrap();
    let table = TableId::new("p", None, "t").unwrap();
    let schema = TableSchema::new(
        vec![Column::new("id", OdpsType::BigInt)],
        vec![
            Column::new("pt", OdpsType::String),
            Column::new("region", OdpsType::String),
        ],
    )
    .unwrap();
    warehouse
        .create_table(&table, &schema, CreateTableOptions::default())
        .await
        .unwrap();
    let spec = |s: &str| PartitionSpec::parse(s).unwrap();
    warehouse
        .create_partition(&table, &spec("region=x,pt=1"), false)
        .await
        .unwrap();
    let listed = warehouse.list_partitions(&table).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].spec, spec("pt=1,region=x"));
    assert_eq!(listed[0].row_count, 0);
    let again = warehouse
        .create_partition(&table, &spec("pt=1,region=x"), false)
        .await
        .unwrap_err();
    assert!(again.to_string().contains("pt=1,region=x"), "{again}");
    warehouse
        .create_partition(&table, &spec("pt=1,region=x"), true)
        .await
        .unwrap();
    for bad in ["pt=2", "pt=2,nokey=1", ""] {
        assert!(
            warehouse
                .create_partition(&table, &spec(bad), true)
                .await
                .is_err(),
            "{bad}"
        );
    }
    assert_eq!(warehouse.list_partitions(&table).await.unwrap().len(), 1);
    warehouse
        .drop_partition(&table, &spec("pt=1,region=x"), false)
        .await
        .unwrap();
    assert!(warehouse.list_partitions(&table).await.unwrap().is_empty());
}

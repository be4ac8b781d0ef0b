//! Capabilities of the catalog: tables and partitions.

use std::collections::BTreeMap;

use paiio_storage::error::Error;
use paiio_storage::service::{CreateTableOptions, PartitionInfo};
use paiio_storage::types::{Column, TableSchema};
use paiio_storage::uri::TableId;

use super::datagen::{DataGen, assert_exactly_once, ids};
use super::{Backend, spec};

/// The partition columns most capabilities use: two levels, a string and a bigint.
pub(crate) const PT_REGION: &[(&str, &str)] = &[("pt", "string"), ("region", "bigint")];

fn col(name: &str, ty: &str) -> Column {
    Column::new(name, ty.parse().unwrap())
}

/// `{spec: rows}` of a partition list.
fn partition_rows(partitions: &[PartitionInfo]) -> BTreeMap<String, u64> {
    partitions
        .iter()
        .map(|p| (p.spec.to_string(), p.row_count))
        .collect()
}

fn expected_partitions(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs
        .iter()
        .map(|(s, n)| (spec(s).to_string(), *n))
        .collect()
}

/// Writes ids `range` of `gen_` into the static partition `partition` and commits.
pub(crate) async fn fill(
    b: &Backend,
    table: &TableId,
    gen_: &DataGen,
    partition: &str,
    range: std::ops::Range<i64>,
) -> u64 {
    b.write_and_commit(table, partition, false, vec![gen_.batch(range)])
        .await
        .version
}

/// Create a table with partition columns; `if_not_exists`; `AlreadyExists`.
pub async fn create_table(b: &Backend) {
    let g = DataGen::simple(1);
    let schema = g.table_schema(vec![col("pt", "string"), col("region", "bigint")]);
    let table = b.table_id("create");
    b.service
        .create_table(&table, &schema, CreateTableOptions::default())
        .await
        .unwrap_or_else(|e| panic!("expected to create {table}: {e}"));
    let info = b.describe(&table).await;
    assert_eq!(
        info.schema, schema,
        "expected describe to return the schema the table was created with"
    );
    assert_eq!(info.table, table, "expected describe to name the table");
    assert_eq!(info.version, 0, "expected a new table to be at version 0");
    assert_eq!(info.row_count, 0, "expected a new table to have no rows");
    assert!(
        info.partitions.is_empty(),
        "expected a new table to have no partitions, got {:?}",
        info.partitions
    );

    expect_err!(
        b.service
            .create_table(&table, &schema, CreateTableOptions::default())
            .await,
        Error::AlreadyExists { .. },
        "AlreadyExists creating {table} a second time"
    );
    let other = DataGen::simple(1).table_schema(vec![]);
    b.service
        .create_table(
            &table,
            &other,
            CreateTableOptions {
                if_not_exists: true,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("expected if_not_exists to accept an existing table: {e}"));
    let info = b.describe(&table).await;
    assert_eq!(
        info.schema, schema,
        "expected if_not_exists to leave the existing table's schema alone"
    );

    // An unpartitioned table, created with if_not_exists from nothing.
    let plain = b.table_id("create_plain");
    b.service
        .create_table(
            &plain,
            &other,
            CreateTableOptions {
                if_not_exists: true,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("expected if_not_exists to create a missing table: {e}"));
    let info = b.describe(&plain).await;
    assert_eq!(
        info.schema, other,
        "expected the unpartitioned table's schema back"
    );
    // Tables in a named schema are separate from the default schema's.
    let in_schema = b.table_id_in(Some("conformance_schema"), "create_in_schema");
    b.service
        .create_table(&in_schema, &other, CreateTableOptions::default())
        .await
        .unwrap_or_else(|e| panic!("expected to create {in_schema} in a named schema: {e}"));
    let same_name_default = TableId::new(&b.project, None, &in_schema.table).unwrap();
    expect_err!(
        b.service.describe_table(&same_name_default).await,
        Error::NotFound { .. },
        "NotFound describing {same_name_default}: the table exists only in schema conformance_schema"
    );
}

/// Schemas MaxCompute refuses are refused, and create nothing.
pub async fn create_table_rejects_invalid_schema(b: &Backend) {
    let id = || {
        let mut c = col("id", "bigint");
        c.nullable = false;
        c
    };
    let cases: Vec<(&str, TableSchema)> = vec![
        (
            "no data columns",
            TableSchema {
                columns: vec![],
                partition_columns: vec![col("pt", "string")],
            },
        ),
        (
            "a duplicate column name",
            TableSchema {
                columns: vec![id(), col("ID", "string")],
                partition_columns: vec![],
            },
        ),
        (
            "a partition column named like a data column",
            TableSchema {
                columns: vec![id(), col("pt", "string")],
                partition_columns: vec![col("pt", "string")],
            },
        ),
        (
            "a DOUBLE partition column",
            TableSchema {
                columns: vec![id()],
                partition_columns: vec![col("pt", "double")],
            },
        ),
        (
            "an ARRAY partition column",
            TableSchema {
                columns: vec![id()],
                partition_columns: vec![col("pt", "array<bigint>")],
            },
        ),
        (
            "a column name with a slash",
            TableSchema {
                columns: vec![id(), col("a/b", "string")],
                partition_columns: vec![],
            },
        ),
    ];
    for (what, schema) in cases {
        let table = b.table_id("bad_schema");
        expect_err!(
            b.service
                .create_table(&table, &schema, CreateTableOptions::default())
                .await,
            Error::InvalidArgument { .. },
            "InvalidArgument creating a table with {what}"
        );
        expect_err!(
            b.service.describe_table(&table).await,
            Error::NotFound { .. },
            "NotFound: a table refused for {what} must not exist"
        );
    }
}

/// Column names are case-insensitive and kept in lower case, as MaxCompute keeps them, even
/// when a schema is built without [`TableSchema::new`].
pub async fn column_names_case_insensitive(b: &Backend) {
    let mut columns = DataGen::simple(8).columns().to_vec();
    columns[2].name = "S_Mixed".into();
    let g = DataGen::new(columns.clone(), 8);
    let raw = TableSchema {
        columns,
        partition_columns: vec![col("Pt_Mixed", "string")],
    };
    let table = b.table_id("case");
    b.service
        .create_table(&table, &raw, CreateTableOptions::default())
        .await
        .unwrap_or_else(|e| panic!("expected to create a table with mixed-case column names: {e}"));
    let info = b.describe(&table).await;
    let names: Vec<&str> = info.schema.all_columns().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["id", "h", "s_mixed", "d", "pt_mixed"],
        "expected column names kept in lower case"
    );
    // Data may name columns in any case.
    b.write_and_commit(&table, "PT_MIXED=x", false, vec![g.batch(0..5)])
        .await;
    let request = paiio_storage::service::ReadSessionRequest {
        required_data_columns: vec!["S_MIXED".into(), "ID".into()],
        required_partition_columns: vec!["pt_MIXED".into()],
        ..paiio_storage::service::ReadSessionRequest::new(table.clone())
    };
    let session = b.read_session(&request).await;
    let batches = b.read_session_rows(&session).await.unwrap();
    let fields: Vec<String> = batches[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        fields,
        vec!["s_mixed", "id", "pt_mixed"],
        "expected delivered column names in lower case"
    );
    assert_exactly_once(
        &g.check_values(&batches).unwrap(),
        0..5,
        "rows of a mixed-case table",
    );
}

/// Names that could escape the warehouse (or that MaxCompute refuses) are refused, even when
/// a caller builds a `TableId` without its validating constructor.
pub async fn invalid_names_rejected(b: &Backend) {
    let schema = DataGen::simple(1).table_schema(vec![]);
    let unique = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let bad_tables = [
        format!("../../../escape_{unique}"),
        format!("../escape_{unique}"),
        "..".to_string(),
        "a/b".to_string(),
        "a\\b".to_string(),
        String::new(),
        "nul\0name".to_string(),
        "x".repeat(300),
    ];
    for name in &bad_tables {
        let table = TableId {
            project: b.project.clone(),
            schema: None,
            table: name.clone(),
        };
        expect_err!(
            b.service
                .create_table(&table, &schema, CreateTableOptions::default())
                .await,
            Error::InvalidArgument { .. },
            "InvalidArgument creating a table named {name:?}"
        );
        expect_err!(
            b.service.describe_table(&table).await,
            Error::InvalidArgument { .. } | Error::NotFound { .. },
            "InvalidArgument or NotFound describing a table named {name:?}"
        );
    }
    let bad_project = TableId {
        project: format!("../proj_{unique}"),
        schema: None,
        table: "t".into(),
    };
    expect_err!(
        b.service
            .create_table(&bad_project, &schema, CreateTableOptions::default())
            .await,
        Error::InvalidArgument { .. },
        "InvalidArgument creating a table in project {:?}",
        bad_project.project
    );
    let bad_schema = TableId {
        project: b.project.clone(),
        schema: Some(format!("../s_{unique}")),
        table: "t".into(),
    };
    expect_err!(
        b.service
            .create_table(&bad_schema, &schema, CreateTableOptions::default())
            .await,
        Error::InvalidArgument { .. },
        "InvalidArgument creating a table in schema {:?}",
        bad_schema.schema
    );
    expect_err!(
        b.service.list_tables("../x", None).await,
        Error::InvalidArgument { .. },
        "InvalidArgument listing tables of project \"../x\""
    );
}

/// Drop a table: `if_exists`; `NotFound`; a re-created table starts empty.
pub async fn drop_table(b: &Backend) {
    let g = DataGen::simple(2);
    let table = b.create_gen_table("drop", &g, &[]).await;
    fill(b, &table, &g, "", 0..10).await;
    b.service
        .drop_table(&table, false)
        .await
        .unwrap_or_else(|e| panic!("expected to drop {table}: {e}"));
    expect_err!(
        b.service.describe_table(&table).await,
        Error::NotFound { .. },
        "NotFound describing dropped {table}"
    );
    let listed = b.service.list_tables(&b.project, None).await.unwrap();
    assert!(
        !listed.contains(&table),
        "expected dropped {table} not to be listed, got {listed:?}"
    );
    expect_err!(
        b.service.drop_table(&table, false).await,
        Error::NotFound { .. },
        "NotFound dropping {table} twice"
    );
    b.service
        .drop_table(&table, true)
        .await
        .unwrap_or_else(|e| panic!("expected if_exists to accept a missing table: {e}"));
    expect_err!(
        b.service
            .create_read_session(&paiio_storage::service::ReadSessionRequest::new(
                table.clone()
            ))
            .await,
        Error::NotFound { .. },
        "NotFound creating a read session on dropped {table}"
    );
    expect_err!(
        b.service
            .create_write_session(&paiio_storage::service::WriteSessionRequest::new(
                table.clone()
            ))
            .await,
        Error::NotFound { .. },
        "NotFound creating a write session on dropped {table}"
    );

    // The same name again is a new, empty table.
    b.service
        .create_table(
            &table,
            &g.table_schema(vec![]),
            CreateTableOptions::default(),
        )
        .await
        .unwrap();
    let info = b.describe(&table).await;
    assert_eq!(
        (info.version, info.row_count),
        (0, 0),
        "expected a re-created table to be new and empty"
    );
    assert!(
        ids(&b.read_table(&table).await).is_empty(),
        "expected no rows in a re-created table"
    );
}

/// List tables, of all schemas or of one.
pub async fn list_tables(b: &Backend) {
    let g = DataGen::simple(3);
    let schema = g.table_schema(vec![]);
    let plain = b.create_table("list", &schema).await;
    let in_schema = b.table_id_in(Some("conformance_list"), "list");
    b.service
        .create_table(&in_schema, &schema, CreateTableOptions::default())
        .await
        .unwrap();

    let all = b.service.list_tables(&b.project, None).await.unwrap();
    assert!(
        all.contains(&plain),
        "expected list_tables(project, None) to list {plain}, got {all:?}"
    );
    let named = b
        .service
        .list_tables(&b.project, Some("conformance_list"))
        .await
        .unwrap();
    assert!(
        named.contains(&in_schema),
        "expected the schema listing to hold {in_schema}, got {named:?}"
    );
    assert!(
        !named.contains(&plain),
        "expected the schema listing not to hold {plain} of the default schema, got {named:?}"
    );
    let default = b
        .service
        .list_tables(&b.project, Some("default"))
        .await
        .unwrap();
    assert!(
        default.contains(&plain),
        "expected the `default` schema listing to hold {plain}, got {default:?}"
    );
    assert!(
        default.iter().all(|t| t.table != in_schema.table),
        "expected the `default` schema listing not to hold {in_schema}, got {default:?}"
    );
    b.service.drop_table(&plain, false).await.unwrap();
    let all = b.service.list_tables(&b.project, None).await.unwrap();
    assert!(
        !all.contains(&plain),
        "expected dropped {plain} not to be listed, got {all:?}"
    );
}

/// Describe: schema, version, row counts, partitions, sizes.
pub async fn describe_table(b: &Backend) {
    let g = DataGen::simple(4);
    let table = b.create_gen_table("describe", &g, PT_REGION).await;
    let before = b.describe(&table).await;
    let v1 = fill(b, &table, &g, "pt=a,region=1", 0..10).await;
    let info = b.describe(&table).await;
    assert_eq!(
        info.version, v1,
        "expected describe to report the version the commit returned"
    );
    assert!(
        v1 > before.version,
        "expected a commit to make a newer version than {}, got {v1}",
        before.version
    );
    assert_eq!(
        info.row_count, 10,
        "expected 10 rows after one commit of 10"
    );
    assert!(
        info.size_bytes > 0,
        "expected a table with rows to have a size"
    );
    assert!(
        info.last_modified_ms >= before.last_modified_ms,
        "expected last_modified_ms not to go back"
    );
    assert_eq!(
        partition_rows(&info.partitions),
        expected_partitions(&[("pt=a,region=1", 10)]),
        "expected one partition of 10 rows"
    );
    assert!(
        info.partitions[0].size_bytes > 0,
        "expected the partition to have a size"
    );

    let v2 = fill(b, &table, &g, "pt=b/region=2", 10..15).await;
    let info = b.describe(&table).await;
    assert_eq!(info.version, v2, "expected the second commit's version");
    assert!(v2 > v1, "expected versions to increase: {v1} then {v2}");
    assert_eq!(
        info.row_count, 15,
        "expected 15 rows after commits of 10 and 5"
    );
    assert_eq!(
        partition_rows(&info.partitions),
        expected_partitions(&[("pt=a,region=1", 10), ("pt=b,region=2", 5)]),
        "expected two partitions"
    );
    assert_eq!(
        info.schema,
        g.table_schema(vec![col("pt", "string"), col("region", "bigint")]),
        "expected the schema unchanged"
    );

    // An unpartitioned table lists no partitions.
    let plain = b.create_gen_table("describe_plain", &g, &[]).await;
    fill(b, &plain, &g, "", 0..7).await;
    let info = b.describe(&plain).await;
    assert_eq!(info.row_count, 7, "expected 7 rows");
    assert!(
        info.partitions.is_empty(),
        "expected an unpartitioned table to list no partitions, got {:?}",
        info.partitions
    );

    expect_err!(
        b.service.describe_table(&b.table_id("never_created")).await,
        Error::NotFound { .. },
        "NotFound describing a table never created"
    );
}

/// List partitions.
pub async fn list_partitions(b: &Backend) {
    let g = DataGen::simple(5);
    let table = b.create_gen_table("list_parts", &g, PT_REGION).await;
    assert!(
        b.service.list_partitions(&table).await.unwrap().is_empty(),
        "expected no partitions in a new table"
    );
    fill(b, &table, &g, "pt=a,region=1", 0..3).await;
    fill(b, &table, &g, "pt=a,region=2", 3..7).await;
    fill(b, &table, &g, "pt=b,region=1", 7..12).await;
    fill(b, &table, &g, "pt=a,region=1", 12..14).await;
    let parts = b.service.list_partitions(&table).await.unwrap();
    assert_eq!(
        partition_rows(&parts),
        expected_partitions(&[
            ("pt=a,region=1", 5),
            ("pt=a,region=2", 4),
            ("pt=b,region=1", 5)
        ]),
        "expected three partitions with their row counts (two commits to pt=a,region=1 add up)"
    );
    assert_eq!(
        parts.len(),
        3,
        "expected each partition listed once, got {parts:?}"
    );
    expect_err!(
        b.service
            .list_partitions(&b.table_id("never_created"))
            .await,
        Error::NotFound { .. },
        "NotFound listing partitions of a table never created"
    );
}

/// Drop partitions: only matching ones; prefix specs; `NotFound`; `if_exists`.
pub async fn drop_partition(b: &Backend) {
    let g = DataGen::simple(6);
    let table = b.create_gen_table("drop_part", &g, PT_REGION).await;
    fill(b, &table, &g, "pt=a,region=1", 0..10).await;
    fill(b, &table, &g, "pt=a,region=2", 10..15).await;
    fill(b, &table, &g, "pt=b,region=1", 15..22).await;
    let v = b.describe(&table).await.version;

    b.service
        .drop_partition(&table, &spec("pt=a,region=2"), false)
        .await
        .unwrap_or_else(|e| panic!("expected to drop partition pt=a,region=2: {e}"));
    let info = b.describe(&table).await;
    assert!(
        info.version > v,
        "expected dropping a partition to make a new version"
    );
    assert_eq!(
        partition_rows(&info.partitions),
        expected_partitions(&[("pt=a,region=1", 10), ("pt=b,region=1", 7)]),
        "expected only pt=a,region=2 dropped"
    );
    assert_exactly_once(
        &ids(&b.read_table(&table).await),
        (0..10).chain(15..22),
        "rows after dropping pt=a,region=2",
    );

    let v = info.version;
    expect_err!(
        b.service
            .drop_partition(&table, &spec("pt=a,region=2"), false)
            .await,
        Error::NotFound { .. },
        "NotFound dropping a partition that no longer exists"
    );
    expect_err!(
        b.service
            .drop_partition(&table, &spec("pt=zz,region=9"), false)
            .await,
        Error::NotFound { .. },
        "NotFound dropping a partition that never existed"
    );
    b.service
        .drop_partition(&table, &spec("pt=zz,region=9"), true)
        .await
        .unwrap_or_else(|e| panic!("expected if_exists to accept a missing partition: {e}"));
    assert_eq!(
        b.describe(&table).await.version,
        v,
        "expected a drop of nothing to leave the version alone"
    );
    expect_err!(
        b.service
            .drop_partition(&table, &spec("nokey=1"), true)
            .await,
        Error::InvalidArgument { .. },
        "InvalidArgument dropping a partition by a key that is no partition column"
    );

    // A prefix drops every partition under it.
    fill(b, &table, &g, "pt=a,region=3", 22..25).await;
    b.service
        .drop_partition(&table, &spec("pt=a"), false)
        .await
        .unwrap_or_else(|e| panic!("expected to drop every partition under pt=a: {e}"));
    let info = b.describe(&table).await;
    assert_eq!(
        partition_rows(&info.partitions),
        expected_partitions(&[("pt=b,region=1", 7)]),
        "expected only pt=b left"
    );
    assert_exactly_once(
        &ids(&b.read_table(&table).await),
        15..22,
        "rows after dropping pt=a",
    );

    let plain = b.create_gen_table("drop_part_plain", &g, &[]).await;
    expect_err!(
        b.service.drop_partition(&plain, &spec("pt=a"), false).await,
        Error::InvalidArgument { .. },
        "InvalidArgument dropping a partition of an unpartitioned table"
    );
}

/// Partitions appear when a write to them commits, not before.
pub async fn partitions_created_by_writes(b: &Backend) {
    let g = DataGen::simple(7);
    let table = b.create_gen_table("parts_by_write", &g, PT_REGION).await;
    let session = b.write_session(&table, "pt=x,region=3", false).await;
    b.write_stream(&table, &session.session_id, None, vec![g.batch(0..4)])
        .await;
    assert!(
        b.service.list_partitions(&table).await.unwrap().is_empty(),
        "expected no partition before the commit"
    );
    b.commit(&table, &session.session_id).await;
    let parts = b.service.list_partitions(&table).await.unwrap();
    assert_eq!(
        partition_rows(&parts),
        expected_partitions(&[("pt=x,region=3", 4)]),
        "expected the written partition after commit"
    );
    let p = &parts[0].spec;
    assert_eq!(p.get("pt"), Some("x"), "expected the partition's pt value");
    assert_eq!(
        p.get("region"),
        Some("3"),
        "expected the partition's region value"
    );
    assert_eq!(
        p.keys().collect::<Vec<_>>(),
        vec!["pt", "region"],
        "expected the partition levels in table order"
    );
}

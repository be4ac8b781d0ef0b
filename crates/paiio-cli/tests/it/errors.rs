//! Bad input: one line on stderr, a non-zero exit status, and the table unchanged.

use std::io::Write;

use crate::common::*;

const T: &str = "odps://proj/tables/sales";

/// A partitioned table with some rows in pt=a, and its state.
fn setup() -> (Env, (String, String)) {
    let env = Env::new();
    env.create(T, SCHEMA, Some("pt string"));
    let csv = env.path("seed.csv");
    write_acceptance_csv(&csv, 0, 1_000);
    env.import(&format!("{T}/pt=a"), &csv);
    let state = env.state(T);
    (env, state)
}

#[test]
fn value_that_does_not_fit_names_line_column_and_value() {
    let (env, before) = setup();
    let bad = env.path("bad.csv");
    std::fs::write(
        &bad,
        "id,name,price,flag,ts\n1,x,1.5,true,2024-01-01 00:00:00\nabc,y,2.5,false,2024-01-02 00:00:00\n",
    )
    .unwrap();
    for uri in [format!("{T}/pt=b"), format!("{T}/pt=a")] {
        let (code, message) = env.import_fail(&uri, &bad);
        assert_eq!(code, 2, "{message}");
        assert!(message.contains("line 3"), "{message}");
        assert!(message.contains("`id`"), "{message}");
        assert!(message.contains("\"abc\""), "{message}");
        assert!(message.contains("bigint"), "{message}");
    }
    // Also with --overwrite, which must not have emptied the partition.
    let (_, message) = env.import_fail_with(&format!("{T}/pt=a"), &bad, &["--overwrite"]);
    assert!(message.contains("line 3"), "{message}");
    assert_eq!(env.state(T), before);
    assert_eq!(env.ok(&["table", "partitions", T]), "pt=a  1000\n");

    for (content, line, column, value) in [
        ("id,name,price,flag,ts\n1,x,abc,true,\n", 2, "price", "abc"),
        (
            "id,name,price,flag,ts\n1,x,1,true,\n2,x,1,yes,\n",
            3,
            "flag",
            "yes",
        ),
        (
            "id,name,price,flag,ts\n1,x,1,true,\n2,x,1,true,\n3,x,1,true,31/12/2024\n",
            4,
            "ts",
            "31/12/2024",
        ),
        (
            "ts,flag,id,name,price\n,,99999999999999999999,x,1\n",
            2,
            "id",
            "99999999999999999999",
        ),
    ] {
        std::fs::write(&bad, content).unwrap();
        let (code, message) = env.import_fail_with(T, &bad, &["--format", "csv"]);
        assert_eq!(code, 2, "{message}");
        // Without a pt column the table URI is refused before parsing; use pt=b.
        assert!(message.contains("`pt`"), "{message}");
        let (code, message) =
            env.import_fail_with(&format!("{T}/pt=b"), &bad, &["--format", "csv"]);
        assert_eq!(code, 2, "{message}");
        assert!(message.contains(&format!("line {line}")), "{message}");
        assert!(message.contains(&format!("`{column}`")), "{message}");
        assert!(message.contains(&format!("{value:?}")), "{message}");
    }
    assert_eq!(env.state(T), before);
}

#[test]
fn failure_deep_in_a_large_file_writes_nothing() {
    let (env, before) = setup();
    // 300,000 good rows written in several write requests, then a bad one.
    let big = env.path("big.csv");
    write_acceptance_csv(&big, 0, 300_000);
    let mut file = std::fs::OpenOptions::new().append(true).open(&big).unwrap();
    file.write_all(b"1,x,NaN-ish,true,2024-01-01 00:00:00\n")
        .unwrap();
    drop(file);
    let (code, message) =
        env.import_fail_with(&format!("{T}/pt=b"), &big, &["--batch-rows", "4096"]);
    assert_eq!(code, 2, "{message}");
    assert!(message.contains("line 300002"), "{message}");
    assert_contains_all(&message, &["`price`", "NaN-ish"]);
    assert_eq!(env.state(T), before);
    // No data file of the aborted session is left behind.
    let table_dir = env.warehouse().join("proj/default/sales");
    let files = arrow_files(&table_dir);
    assert_eq!(
        files.len(),
        1,
        "only the seed import's file remains: {files:?}"
    );

    // The same in JSON lines.
    let jsonl = env.path("big.jsonl");
    env.export(T, &jsonl);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&jsonl)
        .unwrap();
    file.write_all(b"{\"id\": \"seven\", \"pt\": \"c\"}\n")
        .unwrap();
    drop(file);
    let (code, message) = env.import_fail_with(T, &jsonl, &["--batch-rows", "100"]);
    assert_eq!(code, 2, "{message}");
    assert_contains_all(&message, &["line 1001", "`id`", "seven"]);
    assert_eq!(env.state(T), before);
}

/// The Arrow data files under a directory, recursively.
fn arrow_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(arrow_files(&path));
        } else if path.extension().is_some_and(|e| e == "arrow") {
            out.push(path);
        }
    }
    out
}

#[test]
fn unknown_table() {
    let (env, before) = setup();
    let csv = env.path("seed.csv");
    let missing = "odps://proj/tables/nope";
    for args in [
        vec!["table", "count", missing],
        vec!["table", "schema", missing],
        vec!["table", "head", missing],
        vec!["table", "checksum", missing],
        vec!["table", "partitions", missing],
        vec!["table", "drop", missing],
        vec!["table", "import", missing, csv.to_str().unwrap()],
    ] {
        let (code, message) = env.fail(&args);
        assert_eq!(code, 1, "{message}");
        assert!(
            message.contains("not found") && message.contains("proj.nope"),
            "{args:?}: {message}"
        );
    }
    let out = env.path("out.csv");
    env.export_fail(missing, &out);
    assert!(!out.exists());
    env.ok(&["table", "drop", missing, "--if-exists"]);
    env.ok(&["table", "drop", &format!("{missing}/pt=a"), "--if-exists"]);
    assert_eq!(env.state(T), before);
}

#[test]
fn schema_text_that_does_not_parse() {
    let env = Env::new();
    for (schema, partitioned_by, expect) in [
        ("id bigint, name strin", None, "strin"),
        ("id bigint,, name string", None, "column 2 is empty"),
        ("id decimal(50,2)", None, "decimal"),
        ("", None, "at least one data column"),
        ("id bigint", Some("pt double"), "partition"),
        ("id bigint, ID string", None, "duplicate"),
        ("id map<string", None, "map"),
    ] {
        let mut args = vec!["table", "create", T, "--schema", schema];
        if let Some(p) = partitioned_by {
            args.extend(["--partitioned-by", p]);
        }
        let (code, message) = env.fail(&args);
        assert_eq!(code, 2, "{message}");
        assert!(
            message.to_lowercase().contains(expect),
            "{schema}: {message}"
        );
    }
    assert_eq!(env.ok(&["table", "ls", "odps://proj"]), "");
    // A table that exists is not touched by a failed create either.
    let (env, before) = setup();
    let (code, message) = env.fail(&["table", "create", T, "--schema", "x int"]);
    assert_eq!(code, 1);
    assert!(message.contains("already exists"), "{message}");
    assert_eq!(env.state(T), before);
    env.ok(&["table", "create", T, "--schema", "x int", "--if-not-exists"]);
    assert_eq!(env.state(T), before);
}

#[test]
fn missing_or_unreadable_file() {
    let (env, before) = setup();
    let missing = env.path("missing.csv");
    let (code, message) = env.import_fail(&format!("{T}/pt=b"), &missing);
    assert_eq!(code, 2);
    assert_contains_all(&message, &["missing.csv", "No such file"]);
    let dir = env.path("adir.csv");
    std::fs::create_dir(&dir).unwrap();
    let (code, message) = env.import_fail(&format!("{T}/pt=b"), &dir);
    assert_eq!(code, 2, "{message}");
    let empty = env.path("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let (_, message) = env.import_fail(&format!("{T}/pt=b"), &empty);
    assert!(message.contains("header"), "{message}");
    let garbage = env.path("garbage.arrow");
    std::fs::write(&garbage, "not arrow at all").unwrap();
    let (_, message) = env.import_fail(&format!("{T}/pt=b"), &garbage);
    assert!(message.contains("Arrow"), "{message}");
    // Export into a directory that does not exist.
    let nowhere = env.path("no/such/dir/out.csv");
    env.export_fail(T, &nowhere);
    assert_eq!(env.state(T), before);
}

#[test]
fn file_columns_that_do_not_match() {
    let (env, before) = setup();
    let bad = env.path("bad.csv");
    let p = format!("{T}/pt=b");
    for (content, expect) in [
        ("id,name,price,flag\n1,x,1,true\n", "no column `ts`"),
        ("id,name,price,flag,ts,extra\n1,x,1,true,,\n", "`extra`"),
        ("id,name,price,flag,ts,ID\n1,x,1,true,,1\n", "twice"),
        ("id,name,price,flag,ts,pt\n1,x,1,true,,c\n", "fixes pt=b"),
        ("id,name,price,flag,ts\n1,x,1,true\n", "expected 5 fields"),
    ] {
        std::fs::write(&bad, content).unwrap();
        let (code, message) = env.import_fail(&p, &bad);
        assert_eq!(code, 2, "{message}");
        assert!(message.contains(expect), "{content:?}: {message}");
    }
    // Dynamic partitioning needs a value for every row.
    std::fs::write(
        &bad,
        "id,name,price,flag,ts,pt\n1,x,1,true,,b\n2,x,1,true,,\n",
    )
    .unwrap();
    let (code, message) = env.import_fail(T, &bad);
    assert_eq!(code, 2);
    assert_contains_all(&message, &["line 3", "`pt`"]);
    std::fs::write(&bad, "id,name,price,flag,ts,pt\n1,x,1,true,,../etc\n").unwrap();
    let (_, message) = env.import_fail(T, &bad);
    assert!(message.contains("pt"), "{message}");
    assert_eq!(env.state(T), before);

    // NOT NULL columns.
    let strict = "odps://proj/tables/strict";
    env.create(strict, "id bigint not null, name string", None);
    std::fs::write(&bad, "id,name\n1,x\n,y\n").unwrap();
    let (code, message) = env.import_fail(strict, &bad);
    assert_eq!(code, 2);
    assert_contains_all(&message, &["line 3", "`id`", "NOT NULL"]);
    assert_eq!(env.count(strict), 0);
}

#[test]
fn bad_uris() {
    let (env, before) = setup();
    let csv = env.path("seed.csv");
    for uri in [
        "odps://proj/sales",
        "http://proj/tables/sales",
        "odps://proj/tables/../etc",
        "odps://proj/tables/sales/pt",
        "odps://proj/tables/sales/nokey=1",
        "odps:///tables/sales",
    ] {
        for args in [
            vec!["table", "count", uri],
            vec!["table", "checksum", uri],
            vec!["table", "import", uri, csv.to_str().unwrap()],
            vec!["table", "drop", uri],
        ] {
            let (code, message) = env.fail(&args);
            assert_eq!(code, 2, "{args:?}: {message}");
            assert!(message.contains("invalid"), "{args:?}: {message}");
        }
    }
    let (code, message) = env.fail(&["table", "ls", "odps://proj/tables/sales"]);
    assert_eq!(code, 2, "{message}");
    let (code, message) = env.fail(&["table", "count", &format!("{T}/pt=zz")]);
    assert_eq!(code, 1);
    assert!(message.contains("partition not found"), "{message}");
    assert_eq!(env.state(T), before);
}

#[test]
fn usage_errors_are_one_line() {
    let env = Env::new();
    for args in [
        vec!["table"],
        vec!["table", "frobnicate"],
        vec!["table", "count"],
        vec!["table", "import", T, "x.csv", "--format", "xml"],
        vec!["table", "import", T, "x.csv", "--batch-rows", "0"],
        vec!["table", "head", T, "-n", "many"],
    ] {
        let run = env.run(&args);
        if args == ["table"] {
            // Help for a bare group, as clap prints it, with a usage exit status.
            assert_eq!(run.code, Some(2), "{run:?}");
            continue;
        }
        assert_one_line_error(&run, &args);
        assert_eq!(run.code, Some(2), "{run:?}");
    }
    let help = env.ok(&["table", "import", "--help"]);
    assert!(help.contains("--batch-rows"), "{help}");
}

#[test]
fn rest_endpoint_is_refused_clearly() {
    let env = Env::new();
    let mut command = std::process::Command::new(BIN);
    isolate(&mut command, env.dir.path());
    command.env("ODPS_ENDPOINT", "https://service.example.invalid/api");
    command.args(["table", "ls", "odps://proj"]);
    let run = run(command);
    assert_one_line_error(&run, &["table", "ls"]);
    // Catalog commands are not part of the Storage API: refused before any request.
    assert!(
        run.stderr.contains("not offered by the Storage API") && run.stderr.contains("--warehouse"),
        "{run:?}"
    );
}

#[test]
fn partition_values_must_fit_their_type() {
    let env = Env::new();
    let t = "odps://proj/tables/by_region";
    env.create(t, "id bigint", Some("region bigint"));
    let rows = env.path("rows.csv");
    std::fs::write(&rows, "id\n1\n").unwrap();
    env.import(&format!("{t}/region=-7"), &rows);
    let before = env.state(t);
    for (value, expect) in [
        ("xyz", "not a valid bigint"),
        ("007", "write it as 7"),
        ("1e3", "not a valid"),
    ] {
        let (code, message) = env.import_fail(&format!("{t}/region={value}"), &rows);
        assert_eq!(code, 2, "{message}");
        assert!(message.contains(expect), "{value}: {message}");
    }
    // Text partition values from an Arrow file (exported from a table partitioned by a
    // string) must be integers too.
    let text = "odps://proj/tables/by_name";
    env.create(text, "id bigint", Some("region string"));
    let named = env.path("named.csv");
    std::fs::write(&named, "id,region\n1,12\n2,north\n").unwrap();
    env.import(text, &named);
    let arrow = env.path("named.arrow");
    env.export(text, &arrow);
    let (code, message) = env.import_fail(t, &arrow);
    assert_eq!(code, 2);
    assert_contains_all(&message, &["\"north\"", "`region`"]);
    // CSV parses the column as its type.
    std::fs::write(&named, "id,region\n1,12\n2,north\n").unwrap();
    let (_, message) = env.import_fail(t, &named);
    assert_contains_all(&message, &["line 3", "\"north\""]);
    assert_eq!(env.state(t), before);
    // Text that is an integer is fine.
    std::fs::write(&named, "id,region\n1,12\n").unwrap();
    let only = "odps://proj/tables/by_name2";
    env.create(only, "id bigint", Some("region string"));
    env.import(only, &named);
    env.export(only, &arrow);
    env.import(t, &arrow);
    assert_eq!(
        env.ok(&["table", "partitions", t]),
        "region=-7  1\nregion=12  1\n"
    );
}

/// Types nested deeper than MaxCompute's limit are refused when a table is created, and a
/// JSON-lines value nested thousands of levels deep is refused on import, with one-line
/// errors naming the limit; nothing crashes and nothing changes.
#[test]
fn types_and_values_nested_too_deep() {
    let env = Env::new();
    let nested = |depth: usize| format!("{}bigint{}", "array<".repeat(depth), ">".repeat(depth));
    for depth in [33, 1_000, 4_000] {
        let uri = format!("odps://proj/tables/deep_{depth}");
        let schema = format!("id bigint, c {}", nested(depth));
        let (code, message) = env.fail(&["table", "create", &uri, "--schema", &schema]);
        assert_eq!(code, 2, "{message}");
        assert!(
            message.contains("more than 32 levels deep (the limit is 32)"),
            "{message}"
        );
        assert!(message.len() < 600, "{message}");
        let (_, message) = env.fail(&["table", "count", &uri]);
        assert!(
            message.contains("not found") || message.contains("does not exist"),
            "{message}"
        );
    }

    // The deepest type allowed works end to end.
    let t = "odps://proj/tables/deepest";
    env.create(t, &format!("id bigint, c {}", nested(32)), None);
    let value = format!("{}7{}", "[".repeat(32), "]".repeat(32));
    let rows = env.path("deepest.jsonl");
    std::fs::write(&rows, format!("{{\"id\":1,\"c\":{value}}}\n")).unwrap();
    env.import(t, &rows);
    assert_eq!(env.count(t), 1);
    assert!(env.ok(&["table", "schema", t]).contains(&nested(32)));
    assert!(env.ok(&["table", "head", t]).contains('7'));
    let before = env.state(t);

    // A value nested 30,000 levels deep, on line 2: refused before it is parsed.
    let deep = env.path("deep.jsonl");
    let line = format!(
        "{{\"id\":2,\"c\":{}{}}}",
        "[".repeat(30_000),
        "]".repeat(30_000)
    );
    std::fs::write(&deep, format!("{{\"id\":1,\"c\":null}}\n{line}\n")).unwrap();
    let (code, message) = env.import_fail(t, &deep);
    assert_eq!(code, 2, "{message}");
    assert_contains_all(&message, &["line 2", "more than 33 levels"]);
    // Even where a string is expected, and within a string nothing counts.
    std::fs::write(
        &deep,
        format!(
            "{{\"id\":\"[[[[\",\"c\":null}}\n{}\n",
            line.replace("\"c\"", "\"x\"")
        ),
    )
    .unwrap();
    let (_, message) = env.import_fail(t, &deep);
    assert_contains_all(&message, &["line 2", "more than 33 levels"]);
    assert_eq!(env.state(t), before);
}

/// An LZ4_FRAME buffer-compressed Arrow IPC stream or file with one buffer declaring 2^62
/// uncompressed bytes.
fn arrow_bomb(file_format: bool) -> Vec<u8> {
    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::ipc::writer::{FileWriter, IpcWriteOptions, StreamWriter};
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
    ]));
    let id: ArrayRef = std::sync::Arc::new(Int64Array::from_iter_values(0..1000));
    let name: ArrayRef = std::sync::Arc::new(StringArray::from_iter_values(
        (0..1000).map(|i| format!("n{i}")),
    ));
    let batch = RecordBatch::try_new(schema.clone(), vec![id, name]).unwrap();
    let options = IpcWriteOptions::default()
        .try_with_compression(Some(arrow::ipc::CompressionType::LZ4_FRAME))
        .unwrap();
    let mut bytes = if file_format {
        let mut w = FileWriter::try_new_with_options(Vec::new(), &schema, options).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        w.into_inner().unwrap()
    } else {
        let mut w = StreamWriter::try_new_with_options(Vec::new(), &schema, options).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        w.into_inner().unwrap()
    };
    // The stream of a file starts after its magic and padding.
    let start = bytes.iter().position(|b| *b == 0xFF).unwrap();
    let p = start + paiio_storage::ipc_guard::compressed_prefix_positions(&bytes[start..])[0];
    bytes[p..p + 8].copy_from_slice(&(1i64 << 62).to_le_bytes());
    bytes
}

#[test]
fn arrow_with_a_huge_declared_buffer_length_is_refused() {
    // Before the guard, importing either file aborted the process ("memory allocation failed").
    let env = Env::new();
    let t = "odps://proj/tables/bomb";
    env.create(t, "id bigint, name string", None);
    let before = env.state(t);
    for file_format in [false, true] {
        let path = env.path(if file_format {
            "bomb_file.arrow"
        } else {
            "bomb_stream.arrow"
        });
        std::fs::write(&path, arrow_bomb(file_format)).unwrap();
        let (code, message) = env.import_fail(t, &path);
        assert_ne!(code, 0);
        assert!(
            message.contains("4611686018427387904") && message.contains("record batch"),
            "file format {file_format}: {message}"
        );
        assert!(
            !message.contains("panicked") && !message.contains("memory allocation"),
            "{message}"
        );
        assert_eq!(env.state(t), before);
    }
}

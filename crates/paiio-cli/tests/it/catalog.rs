//! create, ls, schema, partitions, head, drop.

use crate::common::*;

#[test]
fn create_list_describe_drop() {
    let env = Env::new();
    env.create(
        "odps://proj/tables/b_table",
        "id bigint not null comment 'the id', name string",
        None,
    );
    env.create(
        "odps://proj/tables/a_table",
        SCHEMA,
        Some("pt string, region string"),
    );
    env.create("odps://proj/tables/s1.Other", "x int", None);
    env.create("odps://other/tables/t", "x int", None);

    assert_eq!(
        env.ok(&["table", "ls", "odps://proj"]),
        "odps://proj/tables/a_table\nodps://proj/tables/b_table\nodps://proj/tables/s1.other\n"
    );
    assert_eq!(
        env.ok(&["table", "ls", "odps://proj/tables"]),
        env.ok(&["table", "ls", "odps://proj/"])
    );
    assert_eq!(
        env.ok(&["table", "ls", "odps://proj/schemas/s1"]),
        "odps://proj/tables/s1.other\n"
    );
    assert_eq!(
        env.ok(&["table", "ls", "odps://proj", "--schema", "S1"]),
        "odps://proj/tables/s1.other\n"
    );
    assert_eq!(env.ok(&["table", "ls", "odps://empty"]), "");

    assert_eq!(
        env.ok(&["table", "schema", "odps://proj/tables/a_table"]),
        "id      bigint\nname    string\nprice   double\nflag    boolean\nts      datetime\n\
         pt      string    partition\nregion  string    partition\n"
    );
    assert_eq!(
        env.ok(&["table", "schema", "odps://proj/tables/b_table"]),
        "id    bigint  not null, comment \"the id\"\nname  string\n"
    );

    // An empty table: count 0, head shows the columns, checksum of nothing.
    assert_eq!(env.count("odps://proj/tables/a_table"), 0);
    let head = env.ok(&["table", "head", "odps://proj/tables/a_table"]);
    assert!(
        head.contains("| id | name | price | flag | ts | pt | region |"),
        "{head}"
    );
    assert_eq!(
        env.checksum("odps://proj/tables/a_table"),
        format!("0 {}", "0".repeat(64))
    );
    assert_eq!(
        env.ok(&["table", "partitions", "odps://proj/tables/a_table"]),
        ""
    );
    let (code, message) = env.fail(&["table", "partitions", "odps://proj/tables/b_table"]);
    assert_eq!(code, 2);
    assert!(message.contains("not partitioned"), "{message}");

    let out = env.ok(&[
        "table",
        "create",
        "odps://proj/tables/b_table",
        "--schema",
        "y int",
        "--if-not-exists",
    ]);
    assert_eq!(out.trim(), "exists odps://proj/tables/b_table (unchanged)");

    assert_eq!(
        env.ok(&["table", "drop", "odps://proj/tables/b_table"])
            .trim(),
        "dropped odps://proj/tables/b_table"
    );
    assert_eq!(
        env.ok(&["table", "ls", "odps://proj"]),
        "odps://proj/tables/a_table\nodps://proj/tables/s1.other\n"
    );
    env.fail(&["table", "drop", "odps://proj/tables/b_table"]);
    env.ok(&["table", "drop", "odps://proj/tables/b_table", "--if-exists"]);
}

#[test]
fn partitions_counts_and_drops() {
    let env = Env::new();
    let t = "odps://proj/tables/multi";
    env.create(t, "id bigint", Some("pt string, region string"));
    let csv = env.path("rows.csv");
    let mut text = String::from("id,region\n");
    for i in 0..100 {
        text.push_str(&format!("{i},{}\n", ["east", "west", "north"][i % 3]));
    }
    std::fs::write(&csv, &text).unwrap();
    env.import(&format!("{t}/pt=1"), &csv);
    env.import(&format!("{t}/pt=2"), &csv);
    let east = env.path("east.csv");
    std::fs::write(&east, "id\n1000\n1001\n").unwrap();
    env.import(&format!("{t}/pt=3/region=east"), &east);

    assert_eq!(env.count(t), 202);
    assert_eq!(env.count(&format!("{t}/pt=1")), 100);
    assert_eq!(env.count(&format!("{t}/pt=1/region=east")), 34);
    assert_eq!(env.count(&format!("{t}/region=east")), 34 + 34 + 2);
    assert_eq!(
        env.ok(&["table", "partitions", &format!("{t}/region=west")]),
        "pt=1/region=west  33\npt=2/region=west  33\n"
    );
    let head = env.ok(&["table", "head", &format!("{t}/pt=3"), "-n", "100"]);
    assert_eq!(head.lines().count(), 2 + 4, "{head}");
    assert!(head.contains("| 1000 | 3  | east   |"), "{head}");

    // Partition digests add up to the table's.
    let whole = env.checksum(t);
    let pt1 = env.checksum(&format!("{t}/pt=1"));
    let rest = add_checksums(
        &env.checksum(&format!("{t}/pt=2")),
        &env.checksum(&format!("{t}/pt=3")),
    );
    assert_eq!(add_checksums(&pt1, &rest), whole);
    // The same rows in one partition layout or another do not digest the same (the
    // partition values are part of each row), but pt=1 and pt=2 hold the same data columns.
    assert_ne!(pt1, env.checksum(&format!("{t}/pt=2")));

    env.ok(&["table", "drop", &format!("{t}/pt=2/region=east")]);
    assert_eq!(env.count(t), 202 - 34);
    env.ok(&["table", "drop", &format!("{t}/pt=1")]);
    assert_eq!(env.count(t), 202 - 34 - 100);
    let (code, message) = env.fail(&["table", "drop", &format!("{t}/pt=1")]);
    assert_eq!(code, 1);
    assert!(message.contains("not found"), "{message}");
    env.ok(&["table", "drop", &format!("{t}/pt=1"), "--if-exists"]);
    assert_eq!(
        env.ok(&["table", "partitions", t]),
        "pt=2/region=north  33\npt=2/region=west   33\npt=3/region=east   2\n"
    );
}

#[test]
fn output_to_a_closed_pipe_is_not_an_error() {
    use std::io::Read;
    use std::process::Stdio;
    let env = Env::new();
    for i in 0..50 {
        env.create(&format!("odps://proj/tables/t{i:02}"), "x int", None);
    }
    let mut command = env.command();
    command
        .args(["table", "ls", "odps://proj"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 8];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let output = child.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&output.stderr).contains("panicked"));
}

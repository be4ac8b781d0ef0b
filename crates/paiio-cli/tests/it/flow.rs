//! The acceptance flow: a partitioned table, 1,000,000 CSV rows in two partitions, count,
//! head, checksum, export, and a re-import into a second table that checksums the same.

use std::time::Instant;

use crate::common::*;

#[test]
fn million_rows_two_partitions_round_trip() {
    let env = Env::new();
    let t = "odps://proj/tables/sales";
    env.create(t, SCHEMA, Some("pt string"));

    let started = Instant::now();
    let (a, b) = (env.path("a.csv"), env.path("b.csv"));
    write_acceptance_csv(&a, 0, 500_000);
    write_acceptance_csv(&b, 500_000, 1_000_000);
    eprintln!("generated 1,000,000 rows in {:?}", started.elapsed());

    let step = Instant::now();
    let out = env.import(&format!("{t}/pt=a"), &a);
    assert_eq!(
        out.trim(),
        format!("imported 500000 rows into {t}/pt=a (version 1)")
    );
    let out = env.import(&format!("{t}/pt=b"), &b);
    assert_eq!(
        out.trim(),
        format!("imported 500000 rows into {t}/pt=b (version 2)")
    );
    eprintln!("imported in {:?}", step.elapsed());

    assert_eq!(env.count(t), 1_000_000);
    assert_eq!(env.count(&format!("{t}/pt=a")), 500_000);
    assert_eq!(env.count(&format!("{t}/pt=b")), 500_000);
    assert_eq!(
        env.ok(&["table", "partitions", t]),
        "pt=a  500000\npt=b  500000\n"
    );

    // head: a pretty table with the partition column, the first rows of pt=a.
    let head = env.ok(&["table", "head", t, "-n", "3"]);
    let lines: Vec<&str> = head.lines().collect();
    assert_eq!(lines.len(), 7, "{head}");
    let header: Vec<&str> = lines[1]
        .split('|')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(header, ["id", "name", "price", "flag", "ts", "pt"]);
    let mut rng = Rng::new(1);
    let mut first = String::new();
    acceptance_row(0, &mut rng, &mut first);
    let first_id = first.split(',').next().unwrap();
    assert!(lines[3].starts_with(&format!("| {first_id} ")), "{head}");
    assert!(lines[3].trim_end().ends_with("| a  |"), "{head}");
    let head_b = env.ok(&["table", "head", &format!("{t}/pt=b"), "-n", "1"]);
    assert!(head_b.contains("| 500000 "), "{head_b}");
    assert_eq!(env.ok(&["table", "head", t]).lines().count(), 10 + 4);

    let step = Instant::now();
    let sum = env.checksum(t);
    let (rows, _) = parse_checksum(&sum);
    assert_eq!(rows, 1_000_000);
    let (sum_a, sum_b) = (
        env.checksum(&format!("{t}/pt=a")),
        env.checksum(&format!("{t}/pt=b")),
    );
    assert_eq!(
        add_checksums(&sum_a, &sum_b),
        sum,
        "partition digests add up to the table's"
    );
    assert_ne!(sum_a, sum_b);
    eprintln!("checksums in {:?}", step.elapsed());

    // Export everything, re-import into a second table by the exported `pt` column.
    let step = Instant::now();
    let exported = env.path("all.csv");
    let out = env.export(t, &exported);
    assert_eq!(
        out.trim(),
        format!("exported 1000000 rows of {t} to {}", exported.display())
    );
    let text_head: String = std::fs::read_to_string(&exported)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(text_head, "id,name,price,flag,ts,pt");
    let t2 = "odps://proj/tables/sales_copy";
    env.create(t2, SCHEMA, Some("pt string"));
    let out = env.import(t2, &exported);
    assert_eq!(
        out.trim(),
        format!("imported 1000000 rows into {t2} (version 1)")
    );
    eprintln!("exported and re-imported in {:?}", step.elapsed());
    assert_eq!(
        env.ok(&["table", "partitions", t2]),
        "pt=a  500000\npt=b  500000\n"
    );
    assert_eq!(env.checksum(t2), sum);

    // A partition exports alone, with its partition column.
    let part = env.path("b.jsonl");
    env.export(&format!("{t}/pt=b"), &part);
    let t3 = "odps://proj/tables/sales_b";
    env.create(t3, SCHEMA, Some("pt string"));
    env.import(t3, &part);
    assert_eq!(env.ok(&["table", "partitions", t3]), "pt=b  500000\n");
    assert_eq!(env.checksum(t3), sum_b);
    eprintln!("whole flow in {:?}", started.elapsed());
}

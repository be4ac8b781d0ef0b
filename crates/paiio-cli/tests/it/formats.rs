//! Export/import round trips in every format, for every type each format carries.

use std::fmt::Write as _;

use crate::common::*;

/// Every type a column can have (but intervals, which no text format carries).
const ALL_TYPES: &str = "t tinyint, s smallint, i int, b bigint, f float, d double, \
    dec decimal(10,2), dl decimal, bo boolean, str string, vc varchar(10), ch char(3), \
    bin binary, dt date, dtm datetime, ts timestamp, tsn timestamp_ntz, arr array<bigint>, \
    m map<string,bigint>, st struct<a:int,b:string>, js json";

const ALL_TYPES_JSONL: &str = r#"{"t":1,"s":2,"i":3,"b":4,"f":1.5,"d":2.25,"dec":"12.34","dl":"1.000000000000000001","bo":true,"str":"h\u00e9\"llo\n","vc":"abc","ch":"xyz","bin":"deadbeef","dt":"2024-02-29","dtm":"2024-01-01T00:00:00.123","ts":"2024-01-01T00:00:00.123456789","tsn":"1969-12-31T23:59:59.999999999","arr":[1,null,3],"m":{"k":1,"z":null},"st":{"a":1,"b":"x"},"js":"{\"a\":1}","pt":"x","region":1}
{"t":-128,"s":null,"i":-3,"b":-9223372036854775808,"f":-0.0,"d":1e300,"dec":"-99999999.99","bo":false,"str":"","vc":"","bin":"","dt":"1900-01-01","arr":[],"m":{},"st":{"a":null,"b":null},"pt":"y","region":2}

{"pt":"y","region":2}
{"t":127,"s":-32768,"i":2147483647,"b":9223372036854775807,"f":3.4028235e38,"d":-2.2250738585072014e-308,"dec":0,"dl":"-12345678901234567890.5","bo":null,"str":"tab\there","vc":"0123456789","ch":"","bin":"00ff","dt":"9999-12-31","dtm":"1900-01-01T00:00:00","ts":"2262-04-11T23:47:16.854775807","tsn":"1677-09-21T00:12:43.145224192","arr":[null],"m":{"":0},"st":null,"js":"[]","pt":"x","region":-5}
"#;

fn all_types_table(env: &Env, uri: &str) {
    env.create(uri, ALL_TYPES, Some("pt string, region bigint"));
}

#[test]
fn every_type_round_trips_through_jsonl_and_arrow() {
    let env = Env::new();
    let source = env.path("all.jsonl");
    std::fs::write(&source, ALL_TYPES_JSONL).unwrap();
    let t = "odps://proj/tables/all_types";
    all_types_table(&env, t);
    let out = env.import(t, &source);
    assert_eq!(out.trim(), format!("imported 4 rows into {t} (version 1)"));
    assert_eq!(
        env.ok(&["table", "partitions", t]),
        "pt=x/region=-5  1\npt=x/region=1   1\npt=y/region=2   2\n"
    );
    let sum = env.checksum(t);
    assert!(sum.starts_with("4 "), "{sum}");

    for (i, name) in ["out.jsonl", "out.arrow", "out.arrows", "out.ipc"]
        .iter()
        .enumerate()
    {
        let file = env.path(name);
        env.export(t, &file);
        let copy = format!("odps://proj/tables/copy_{i}");
        all_types_table(&env, &copy);
        env.import(&copy, &file);
        assert_eq!(env.checksum(&copy), sum, "round trip through {name}");
    }
    // The stream format is what `.arrows` gets; the file format has the footer magic.
    let file = std::fs::read(env.path("out.arrow")).unwrap();
    assert_eq!(&file[..6], b"ARROW1");
    let stream = std::fs::read(env.path("out.arrows")).unwrap();
    assert_ne!(&stream[..6], b"ARROW1");

    // A partial partition: export pt=x, re-import it under the fixed pt=x with `region`
    // coming from the data.
    let part = env.path("x.arrow");
    env.export(&format!("{t}/pt=x"), &part);
    // The exported file carries `pt`, which the URI now fixes: its values are all `x`.
    let copy = "odps://proj/tables/copy_x";
    all_types_table(&env, copy);
    env.import(&format!("{copy}/pt=x"), &part);
    assert_eq!(env.count(copy), 2);
    assert_eq!(env.checksum(copy), env.checksum(&format!("{t}/pt=x")));
    // ...but not into another partition.
    let (code, message) = env.import_fail(&format!("{copy}/pt=z"), &part);
    assert_eq!(code, 2);
    assert_contains_all(&message, &["`pt`", "\"x\"", "fixes pt=z"]);
    assert_eq!(env.count(copy), 2);

    // CSV cannot carry binary or nested columns: a clear error and no file.
    let csv = env.path("out.csv");
    let (code, message) = env.export_fail(t, &csv);
    assert_eq!(code, 2);
    assert_contains_all(&message, &["`bin`", "jsonl"]);
    assert!(!csv.exists());
}

const CSV_TYPES: &str = "t tinyint, s smallint, i int, b bigint, f float, d double, \
    dec decimal(12,3), bo boolean, str string, vc varchar(8), dt date, dtm datetime, \
    ts timestamp";

#[test]
fn csv_round_trips_every_type_it_carries() {
    let env = Env::new();
    let mut text = String::from("b,t,s,i,f,d,dec,bo,str,vc,dt,dtm,ts,pt\n");
    let mut rng = Rng::new(7);
    for row in 0..20_000u64 {
        let r = rng.next();
        let null = |k: u64| (r >> k).is_multiple_of(11);
        let mut field = |cond: bool, value: String| {
            if !cond {
                text.push_str(&value);
            }
            text.push(',');
        };
        field(false, format!("{}", row as i64 - 10_000));
        field(null(1), format!("{}", (r % 256) as i64 - 128));
        field(null(2), format!("{}", (r % 65_536) as i64 - 32_768));
        field(null(3), format!("{}", (r >> 7) as i32));
        field(
            null(4),
            format!("{}", f32::from_bits((r as u32) & 0x7f7f_ffff)),
        );
        field(
            null(5),
            format!(
                "{:?}",
                (r as f64) / 3.0 * if r & 1 == 0 { -1e-9 } else { 1e9 }
            ),
        );
        field(
            null(6),
            format!(
                "{}.{:03}",
                (r % 1_000_000_000) as i64 - 500_000_000,
                r % 1000
            ),
        );
        field(
            null(7),
            (if r & 2 == 0 { "true" } else { "FALSE" }).to_string(),
        );
        field(
            null(8),
            match r % 5 {
                0 => "\"line\nbreak\"".to_string(),
                1 => "\"comma, \"\"quoted\"\"\"".to_string(),
                2 => " spaced ".to_string(),
                _ => format!("s{r:x}"),
            },
        );
        field(null(9), format!("v{}", r % 1000));
        let days = (r % 200_000) as i64 - 100_000;
        let (y, m, d) = civil_from_days(days);
        field(null(10), format!("{y:04}-{m:02}-{d:02}"));
        field(
            null(11),
            format!("{y:04}-{m:02}-{d:02}T12:34:56.{:03}", r % 1000),
        );
        let (y, m, d) = civil_from_days(days / 10);
        field(
            null(12),
            format!("{y:04}-{m:02}-{d:02} 01:02:03.{:09}", r % 1_000_000_000),
        );
        writeln!(text, "p{}", row % 3).unwrap();
    }
    let source = env.path("types.csv");
    std::fs::write(&source, &text).unwrap();
    let t = "odps://proj/tables/csv_types";
    env.create(t, CSV_TYPES, Some("pt string"));
    env.import_with(t, &source, &["--batch-rows", "999"]);
    assert_eq!(env.count(t), 20_000);
    let sum = env.checksum(t);
    for name in ["back.csv", "back.jsonl", "back.arrow"] {
        let file = env.path(name);
        env.export(t, &file);
        let copy = format!("odps://proj/tables/{}", name.replace('.', "_"));
        env.create(&copy, CSV_TYPES, Some("pt string"));
        env.import(&copy, &file);
        assert_eq!(env.checksum(&copy), sum, "round trip through {name}");
    }
}

#[test]
fn format_from_option_or_extension() {
    let env = Env::new();
    let t = "odps://proj/tables/plain";
    env.create(t, "id bigint, name string", None);
    let txt = env.path("data.txt");
    std::fs::write(&txt, "name,id\nx,1\ny,2\n").unwrap();
    let (code, message) = env.import_fail(t, &txt);
    assert_eq!(code, 2);
    assert!(message.contains("--format"), "{message}");
    env.import_with(t, &txt, &["--format", "csv"]);
    let json = env.path("data.ndjson");
    std::fs::write(&json, "{\"id\":3,\"name\":\"z\"}\n").unwrap();
    env.import(t, &json);
    let out = env.path("dump.data");
    env.export_with(t, &out, &["--format", "jsonl"]);
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(text.contains("{\"id\":3,\"name\":\"z\"}"), "{text}");
    let ipc = env.path("dump.bin");
    env.export_with(t, &ipc, &["--format", "arrow"]);
    let copy = "odps://proj/tables/plain2";
    env.create(copy, "id bigint, name string", None);
    env.import_with(copy, &ipc, &["--format", "ipc"]);
    assert_eq!(env.checksum(copy), env.checksum(t));
}

#[test]
fn overwrite_replaces_what_it_writes() {
    let env = Env::new();
    let t = "odps://proj/tables/ow";
    env.create(t, "id bigint", Some("pt string"));
    let a = env.path("a.csv");
    std::fs::write(&a, "id\n1\n2\n3\n").unwrap();
    let p = format!("{t}/pt=a");
    env.import(&p, &a);
    env.import(&p, &a);
    assert_eq!(env.count(&p), 6);
    let b = env.path("b.csv");
    std::fs::write(&b, "id\n9\n").unwrap();
    env.import(&format!("{t}/pt=b"), &b);
    let out = env.import_with(&p, &a, &["--overwrite"]);
    assert!(out.contains("imported 3 rows"), "{out}");
    assert_eq!(env.count(&p), 3);
    assert_eq!(env.count(t), 4);
    // An empty file: a header only.
    let empty = env.path("empty.csv");
    std::fs::write(&empty, "id\n").unwrap();
    let out = env.import(&p, &empty);
    assert!(
        out.starts_with(&format!("imported 0 rows into {p} (version ")),
        "{out}"
    );
    assert_eq!(env.count(t), 4);
}

#[test]
fn csv_with_bom_crlf_and_reordered_columns() {
    let env = Env::new();
    let t = "odps://proj/tables/bom";
    env.create(t, "id bigint, name string", Some("pt string"));
    let csv = env.path("bom.csv");
    std::fs::write(&csv, "\u{feff}Name , ID,pt\r\n\"a\r\nb\",1,x\r\nc,2,y\r\n").unwrap();
    let out = env.import(t, &csv);
    assert!(out.contains("imported 2 rows"), "{out}");
    let json = env.path("bom.jsonl");
    env.export(&format!("{t}/pt=x"), &json);
    assert_eq!(
        std::fs::read_to_string(&json).unwrap(),
        "{\"id\":1,\"name\":\"a\\r\\nb\",\"pt\":\"x\"}\n"
    );
}

#[test]
fn non_finite_floats_round_trip() {
    let env = Env::new();
    let schema = "d double, f float, a array<double>";
    let t = "odps://proj/tables/floats";
    env.create(t, schema, None);
    let source = env.path("floats.jsonl");
    std::fs::write(
        &source,
        "{\"d\":\"NaN\",\"f\":\"-inf\",\"a\":[\"inf\",1.5,null]}\n\
         {\"d\":-0.0,\"f\":1e-45,\"a\":[1e-320,-1.7976931348623157e308]}\n\
         {\"d\":123456789.125,\"f\":3.4028235e38,\"a\":null}\n",
    )
    .unwrap();
    env.import(t, &source);
    let sum = env.checksum(t);
    for name in ["f.jsonl", "f.arrow"] {
        let file = env.path(name);
        env.export(t, &file);
        let copy = format!("odps://proj/tables/{}", name.replace('.', "_"));
        env.create(&copy, schema, None);
        env.import(&copy, &file);
        assert_eq!(env.checksum(&copy), sum, "round trip through {name}");
    }
    let scalars = "odps://proj/tables/scalars";
    env.create(scalars, "d double, f float", None);
    let csv = env.path("scalars.csv");
    std::fs::write(&csv, "d,f\nNaN,-inf\ninf,nan\n-0.0,1e-45\n,\n").unwrap();
    env.import(scalars, &csv);
    let sum = env.checksum(scalars);
    for name in ["s.csv", "s.jsonl"] {
        let file = env.path(name);
        env.export(scalars, &file);
        let copy = format!("odps://proj/tables/{}", name.replace('.', "_"));
        env.create(&copy, "d double, f float", None);
        env.import(&copy, &file);
        assert_eq!(env.checksum(&copy), sum, "round trip through {name}");
    }
}

#[test]
fn csv_export_warns_about_empty_strings() {
    let env = Env::new();
    let t = "odps://proj/tables/empties";
    env.create(t, "id bigint, name string", None);
    let source = env.path("e.jsonl");
    std::fs::write(
        &source,
        "{\"id\":1,\"name\":\"\"}\n{\"id\":2,\"name\":null}\n{\"id\":3,\"name\":\"x\"}\n",
    )
    .unwrap();
    env.import(t, &source);
    let csv = env.path("e.csv");
    let run = env.run(&["table", "export", t, csv.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stderr.trim(),
        "paiio: warning: column `name` has 1 empty strings, which CSV writes as empty fields and \
         import reads as NULL (jsonl and arrow keep them)"
    );
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap(),
        "id,name\n1,\n2,\n3,x\n"
    );
    // jsonl keeps the difference and says nothing.
    let json = env.path("e.jsonl2");
    let run = env.run(&[
        "table",
        "export",
        t,
        json.to_str().unwrap(),
        "--format",
        "jsonl",
    ]);
    assert_eq!((run.code, run.stderr.as_str()), (Some(0), ""));
}

/// An exported partition (which carries its partition column) imports back into a
/// partition, in every format: a partition column the URI fixes may be in the file if all
/// its values are the URI's. Any other value is an error naming the column, the row and
/// the value, and changes nothing.
#[test]
fn exported_partition_reimports_into_a_partition() {
    let env = Env::new();
    let t = "odps://proj/tables/parts";
    let shape = ("id bigint, name string", "pt string, n bigint");
    env.create(t, shape.0, Some(shape.1));
    let seed = env.path("seed.csv");
    std::fs::write(
        &seed,
        "id,name,pt,n\n1,one,a,7\n2,,a,7\n3,three,a,-8\n4,four,b,7\n",
    )
    .unwrap();
    env.import(t, &seed);
    let source = format!("{t}/pt=a");
    let want = env.checksum(&source);

    for (i, name) in ["a.csv", "a.jsonl", "a.arrow", "a.arrows"]
        .iter()
        .enumerate()
    {
        let file = env.path(name);
        env.export(&source, &file);
        let text = std::fs::read(&file).unwrap();
        assert!(
            String::from_utf8_lossy(&text).contains("pt"),
            "{name} carries pt"
        );
        // Into the same partition of a table of the same shape, also naming both levels.
        let copy = format!("odps://proj/tables/copy_{i}");
        env.create(&copy, shape.0, Some(shape.1));
        env.import(&format!("{copy}/pt=a"), &file);
        assert_eq!(env.checksum(&copy), want, "{name}");
        let (_, message) = env.import_fail(&format!("{copy}/pt=a/n=7"), &file);
        assert!(
            message.contains("`n`") && message.contains("\"-8\"") && message.contains("fixes n=7"),
            "{name}: {message}"
        );
        // Into another partition: refused, naming the column, the row and the value.
        let (code, message) = env.import_fail(&format!("{copy}/pt=b"), &file);
        assert_eq!(code, 2, "{message}");
        assert!(
            message.contains("`pt`") && message.contains("\"a\"") && message.contains("fixes pt=b"),
            "{name}: {message}"
        );
        // The first row: after the header of a CSV file.
        let row = match *name {
            "a.csv" => "line 2",
            "a.jsonl" => "line 1",
            _ => "row 1",
        };
        assert!(message.contains(row), "{name}: {message}");
        assert_eq!(env.checksum(&copy), want, "{name}: nothing changed");
    }

    // One stray row, in the middle: its line is named, nothing is imported.
    let copy = "odps://proj/tables/mixed";
    env.create(copy, shape.0, Some(shape.1));
    let mixed = env.path("mixed.csv");
    std::fs::write(&mixed, "id,name,pt,n\n1,one,a,7\n2,two,b,7\n3,three,a,7\n").unwrap();
    let (_, message) = env.import_fail(&format!("{copy}/pt=a"), &mixed);
    assert_contains_all(&message, &["line 3", "\"b\"", "fixes pt=a"]);
    let empty = env.path("empty.csv");
    std::fs::write(&empty, "id,name,pt,n\n1,one,,7\n").unwrap();
    let (_, message) = env.import_fail(&format!("{copy}/pt=a"), &empty);
    assert_contains_all(&message, &["line 2", "NULL", "`pt`"]);
    let jsonl = env.path("mixed.jsonl");
    std::fs::write(
        &jsonl,
        "{\"id\":1,\"n\":7}\n{\"id\":2,\"pt\":\"a\",\"n\":7}\n{\"id\":3,\"pt\":\"c\",\"n\":7}\n",
    )
    .unwrap();
    let (_, message) = env.import_fail(&format!("{copy}/pt=a"), &jsonl);
    assert_contains_all(&message, &["line 3", "\"c\"", "fixes pt=a"]);
    assert_eq!(env.count(copy), 0);
    // A JSON line may leave the fixed key out, or give it.
    std::fs::write(
        &jsonl,
        "{\"id\":1,\"n\":7}\n{\"id\":2,\"pt\":\"a\",\"n\":7}\n",
    )
    .unwrap();
    env.import(&format!("{copy}/pt=a"), &jsonl);
    assert_eq!(env.ok(&["table", "partitions", copy]), "pt=a/n=7  2\n");
}

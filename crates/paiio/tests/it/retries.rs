//! What readers and writers cost in requests over the Storage API.
//!
//! One retry layer: the client retries and resumes within a budget of its own, and the reader
//! and the writer surface its errors as they come. A failing endpoint costs one budget
//! (1 + `max_retries` requests per call), not one for each layer above it. And opening a
//! reader asks for the schema with one cheap call and makes one read session per table: no
//! throwaway session.

use paiio::options::ReaderOptions;
use paiio::reader::TableReader;
use paiio::writer::{TableWriter, Value, WriterOptions};
use paiio_server::{Fault, FaultControl, FaultPlan, FaultRule, When};
use paiio_storage::{TableSchema, TableService};

use crate::common::{block, fast_retry, rest_with_faults};

/// Every request of `action` answered 503 from now on.
fn unavailable(faults: &FaultControl, action: &str) {
    let fault = Fault::Status {
        status: 503,
        retry_after: None,
        code: None,
        message: None,
    };
    faults
        .set(FaultPlan::new().rule(FaultRule::new(fault, When::Always).action(action)))
        .unwrap();
}

/// How many requests the rule of [`unavailable`] answered.
fn answered(faults: &FaultControl) -> u64 {
    faults.status()["faults"]["rules"][0]["fired"]
        .as_u64()
        .or_else(|| faults.status()["rules"][0]["fired"].as_u64())
        .unwrap_or_else(|| panic!("no fired count in {}", faults.status()))
}

/// Counts the requests of each of `actions` from now on (rules that never fire).
fn count(faults: &FaultControl, actions: &[&str]) {
    let mut plan = FaultPlan::new();
    for action in actions {
        let never = FaultRule::new(
            Fault::Stall {
                ms: 0,
                after_bytes: None,
            },
            When::Nth(0),
        );
        plan = plan.rule(never.action(*action));
    }
    faults.set(plan).unwrap();
}

/// How many requests rule `i` of [`count`] saw.
fn seen(faults: &FaultControl, i: usize) -> u64 {
    let status = faults.status();
    status["faults"]["rules"][i]["seen"]
        .as_u64()
        .or_else(|| status["rules"][i]["seen"].as_u64())
        .unwrap_or_else(|| panic!("no seen count in {status}"))
}

#[test]
fn opening_a_reader_makes_one_session_per_table_and_no_other() {
    let (backend, faults) = rest_with_faults();
    let (a, _) = backend.table("one", 0..10);
    let (b, _) = backend.table("two", 0..20);
    count(&faults, &["TableCreateReadSession", "TableGetWriteSchema"]);
    let tables = [backend.uri(&a, ""), backend.uri(&b, "")];
    let options = ReaderOptions::default().selected("id");
    let mut reader = TableReader::open_with(backend.service.clone(), &tables[..], options).unwrap();
    assert_eq!(seen(&faults, 0), 2, "read sessions");
    assert_eq!(seen(&faults, 1), 2, "schema calls");
    assert_eq!(reader.read(30).unwrap().num_rows(), 30);
    // Counting rows: a session per table, no schema call.
    let counts = paiio::reader::row_counts(backend.service.clone(), &tables[..]).unwrap();
    assert_eq!(counts, [10, 20]);
    assert_eq!((seen(&faults, 0), seen(&faults, 1)), (4, 2));
}

#[test]
fn a_failing_read_costs_one_retry_budget() {
    let (backend, faults) = rest_with_faults();
    let (table, _) = backend.table("dead_read", 0..100);
    let uri = backend.uri(&table, "");
    unavailable(&faults, "TableRead");
    let options = ReaderOptions {
        num_threads: 1,
        ..ReaderOptions::default()
    };
    let mut reader =
        TableReader::open_with(backend.service.clone(), uri.as_str(), options).unwrap();
    let error = reader.read(100).expect_err("every TableRead fails");
    assert!(error.to_string().contains("503"), "{error}");
    assert_eq!(answered(&faults), 1 + u64::from(fast_retry().max_retries));
}

#[test]
fn a_failing_commit_costs_one_retry_budget() {
    let (backend, faults) = rest_with_faults();
    let schema =
        TableSchema::new(TableSchema::parse_columns("id bigint").unwrap(), Vec::new()).unwrap();
    let table = block(backend.store.create_table("dead_commit", &schema));
    let uri = backend.uri(&table, "");
    let mut writer =
        TableWriter::open_with(backend.service.clone(), &uri, 0, WriterOptions::default()).unwrap();
    writer
        .write_rows(&[vec![Value::Int(1)], vec![Value::Int(2)]], &[0])
        .unwrap();
    unavailable(&faults, "TableCommitWriteSession");
    let error = writer.close().expect_err("every commit fails");
    assert!(error.to_string().contains("503"), "{error}");
    assert_eq!(answered(&faults), 1 + u64::from(fast_retry().max_retries));
    // Nothing became visible.
    assert_eq!(
        block(backend.warehouse.describe_table(&table))
            .unwrap()
            .row_count,
        0
    );
}

//! The suite can fail: a decorator injects one fault into the local warehouse, and the
//! capability that covers it must catch it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::DataType;
use futures::{FutureExt, StreamExt, TryStreamExt};
use paiio_conformance::Backend;
use paiio_storage::clock::ManualClock;
use paiio_storage::local::LocalWarehouse;
use paiio_storage::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Reads lose the last row of every range.
    DropLastRow,
    /// Reads deliver one string value changed.
    CorruptString,
    /// Reads ignore `skip_rows`.
    IgnoreSkipRows,
    /// Reads ignore `max_batch_rows`.
    IgnoreMaxBatchRows,
    /// Writes never report a replay.
    NeverDuplicate,
    /// Writes of exactly-once streams go through without their access token.
    IgnoreAccessToken,
    /// Reads deliver columns in reverse order.
    ReverseColumns,
    /// A retried commit applies the session again.
    RecommitOnRetry,
    /// Sessions never expire.
    NoExpiry,
}

#[derive(Debug)]
struct Faulty {
    inner: LocalWarehouse,
    fault: Fault,
}

fn corrupt(batch: RecordBatch) -> RecordBatch {
    let schema = batch.schema();
    let Some(i) = schema.fields().iter().position(|f| {
        f.data_type() == &DataType::Utf8 && (f.name() == "s" || f.name() == "c_string")
    }) else {
        return batch;
    };
    if batch.num_rows() == 0 {
        return batch;
    }
    let old = batch
        .column(i)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let new: StringArray = (0..old.len())
        .map(|r| {
            if r == 0 {
                Some("corrupted!")
            } else {
                old.is_valid(r).then(|| old.value(r))
            }
        })
        .collect();
    let mut columns = batch.columns().to_vec();
    columns[i] = Arc::new(new) as ArrayRef;
    RecordBatch::try_new(schema, columns).unwrap()
}

use arrow_array::Array;

/// The calls a fault changes; the others go to the warehouse as they are.
impl Faulty {
    async fn create_read_session(&self, request: &ReadSessionRequest) -> Result<ReadSession> {
        let mut s = self.inner.create_read_session(request).await?;
        if self.fault == Fault::NoExpiry {
            s.expiration_time_ms = i64::MAX / 2;
        }
        Ok(s)
    }

    async fn read(&self, request: &ReadRequest) -> Result<RecordBatchStream> {
        let mut request = request.clone();
        match self.fault {
            Fault::IgnoreSkipRows => request.skip_rows = 0,
            Fault::IgnoreMaxBatchRows => request.max_batch_rows = 1 << 20,
            _ => {}
        }
        let result = self.inner.read(&request).await;
        if self.fault == Fault::NoExpiry && matches!(result, Err(Error::SessionExpired { .. })) {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let batches: Vec<RecordBatch> = result?.try_collect().await?;
        let mut batches: Vec<RecordBatch> = match self.fault {
            Fault::CorruptString => batches.into_iter().map(corrupt).collect(),
            Fault::ReverseColumns => batches
                .iter()
                .map(paiio_conformance::datagen::reversed_columns)
                .collect(),
            Fault::IgnoreMaxBatchRows if !batches.is_empty() => {
                vec![arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap()]
            }
            _ => batches,
        };
        if self.fault == Fault::DropLastRow
            && let Some(last) = batches.pop()
            && last.num_rows() > 1
        {
            batches.push(last.slice(0, last.num_rows() - 1));
        }
        Ok(futures::stream::iter(batches.into_iter().map(Ok)).boxed())
    }

    async fn write(&self, mut request: WriteRequest) -> Result<WriteAck> {
        if self.fault == Fault::IgnoreAccessToken
            && let Ok(stream) = self
                .inner
                .get_write_stream(&request.table, &request.session_id, &request.stream_id)
                .await
        {
            request.access_token = Some(stream.access_token);
        }
        let mut ack = self.inner.write(request).await?;
        if self.fault == Fault::NeverDuplicate {
            ack.duplicate = false;
        }
        Ok(ack)
    }

    async fn commit_write_session(
        &self,
        table: &TableId,
        session_id: &str,
        streams: Option<&[(String, u64)]>,
    ) -> Result<CommitInfo> {
        let state = self.inner.get_write_session(table, session_id).await?;
        if self.fault == Fault::RecommitOnRetry && state.status == SessionStatus::Committed {
            // Apply the same rows again through a new session.
            let preview: Vec<RecordBatch> = self
                .inner
                .preview(table, None, &[], 1 << 20)
                .await?
                .try_collect()
                .await?;
            let again = self
                .inner
                .create_write_session(&WriteSessionRequest::new(table.clone()))
                .await?;
            let stream = self
                .inner
                .create_write_stream(table, &again.session_id, None, false)
                .await?;
            for b in preview {
                self.inner
                    .write(WriteRequest {
                        table: table.clone(),
                        session_id: again.session_id.clone(),
                        stream_id: stream.stream_id.clone(),
                        version: stream.version,
                        row_offset: None,
                        access_token: None,
                        batches: vec![b],
                    })
                    .await?;
            }
            self.inner
                .close_write_stream(table, &again.session_id, &stream.stream_id, stream.version)
                .await?;
            return self
                .inner
                .commit_write_session(table, &again.session_id, None)
                .await;
        }
        self.inner
            .commit_write_session(table, session_id, streams)
            .await
    }
}

paiio_conformance::forward_table_service!(Faulty, "faulty";
    self: create_read_session, read, write, commit_write_session;
    inner: describe_table, get_read_session, preview, create_write_session, get_write_session,
        create_write_stream_version, get_write_stream, close_write_stream, abort_write_session,
        create_table, drop_table, list_tables, list_partitions, drop_partition);

fn faulty(fault: Fault) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let inner = LocalWarehouse::builder(dir.path())
        .clock(Arc::new(clock.clone()))
        .open()
        .unwrap();
    Backend::new(Arc::new(Faulty { inner, fault }), "faulty")
        .with_clock(clock)
        .with_guard(dir)
}

/// Runs `capability` against a backend with `fault` and asserts it fails.
macro_rules! must_catch {
    ($test:ident, $fault:expr, $($capability:ident),+) => {
        #[tokio::test]
        async fn $test() {
            $(
                let backend = faulty($fault);
                let outcome = AssertUnwindSafe(paiio_conformance::$capability(&backend)).catch_unwind().await;
                assert!(outcome.is_err(), "expected capability `{}` to catch fault {:?}", stringify!($capability), $fault);
            )+
        }
    };
}

must_catch!(
    lost_rows_are_caught,
    Fault::DropLastRow,
    split_size,
    split_parallelism,
    split_row_offset,
    read_max_batch_rows,
    read_session_pins_version,
    datagen_round_trip,
    dynamic_partitions,
    commit_idempotent
);
must_catch!(
    corrupt_values_are_caught,
    Fault::CorruptString,
    datagen_round_trip,
    read_required_columns,
    split_size,
    exactly_once_duplicates
);
must_catch!(
    ignored_skip_rows_is_caught,
    Fault::IgnoreSkipRows,
    read_skip_rows
);
must_catch!(
    ignored_max_batch_rows_is_caught,
    Fault::IgnoreMaxBatchRows,
    read_max_batch_rows
);
must_catch!(
    unreported_replays_are_caught,
    Fault::NeverDuplicate,
    exactly_once_duplicates
);
must_catch!(
    ignored_access_tokens_are_caught,
    Fault::IgnoreAccessToken,
    exactly_once_access_token
);
must_catch!(
    column_order_is_checked,
    Fault::ReverseColumns,
    read_required_columns,
    read_partition_columns,
    read_projection,
    datagen_round_trip
);
must_catch!(
    recommits_are_caught,
    Fault::RecommitOnRetry,
    commit_idempotent
);
must_catch!(
    missing_expiry_is_caught,
    Fault::NoExpiry,
    read_session_expiry
);

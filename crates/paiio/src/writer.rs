//! [`TableWriter`]: append rows to a table or partition, visible atomically at
//! [`close`](TableWriter::close).
//!
//! A writer is one write session with one exactly-once stream (its id is the writer's
//! `slice_id`). Rows are checked and converted to the table's column types as they are
//! written, buffered, and sent in batches of up to 64 Ki rows or 16 MiB, in the background
//! (one request at a time, in order, while the caller prepares the next), each at its
//! stream row offset, so that the Storage API client may repeat a failed send without losing
//! or doubling a row (retries are the client's: the writer surfaces its errors as they come).
//! `close()` closes the stream and commits: either all of this
//! writer's rows become visible or none do. Dropping a writer that was not closed aborts it.
//!
//! Several writers with different `slice_id`s may write one table or partition at the same
//! time; each commits on its own. Two live writers with the same `slice_id` on one table
//! partition are refused at open ([`TableService::lock_writer_slot`]): on the local warehouse
//! across processes, elsewhere within the process.
//!
//! # Columns
//!
//! `indices` name the table column each written column goes to, by position in the table's
//! columns: the data columns, then the partition columns. A URI that names a partition
//! (`odps://p/tables/t/pt=1`) fixes those partition columns, and they must not be written;
//! with a URI that names none (or only the first levels), the remaining partition columns
//! are written like data columns and each row goes to the partition its values name (dynamic
//! partitioning). Columns that are not written are NULL (an error for a NOT NULL column).
//!
//! Values are converted to the column type when that is safe: integers of any width to any
//! integer column (checked for overflow), to FLOAT, DOUBLE and DECIMAL; floats to FLOAT and
//! DOUBLE (checked for range), to integer columns when they are whole numbers, and to
//! DECIMAL; bools to integer columns as 0/1; text to BINARY, and to DATE, DATETIME,
//! TIMESTAMP and DECIMAL columns by parsing; bytes to STRING when they are UTF-8. Anything
//! else is a type mismatch naming the column.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, NullArray, RecordBatch,
    StringArray, new_null_array,
};
use arrow_cast::CastOptions;
use arrow_schema::{DataType, SchemaRef};
use paiio_storage::service::WriterSlot;
use paiio_storage::types::{ArrowOptions, Column, OdpsType, TableSchema};
use paiio_storage::{
    CommitInfo, TableService, TableUri, WriteAck, WriteRequest, WriteSessionRequest, WriteStream,
};

use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::runtime;

/// One value of a row for [`TableWriter::write_rows`] (what the Python bindings hand over).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Bytes(Vec<u8>),
}

macro_rules! value_from {
    ($($ty:ty => $variant:ident),* $(,)?) => {
        $(impl From<$ty> for Value {
            fn from(value: $ty) -> Self {
                Value::$variant(value.into())
            }
        })*
    };
}

value_from!(
    bool => Bool,
    i32 => Int,
    i64 => Int,
    f32 => Float,
    f64 => Float,
    String => String,
    &str => String,
    Vec<u8> => Bytes,
);

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

/// Options of a [`TableWriter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterOptions {
    /// Rows buffered before they are sent (default 65536).
    pub flush_rows: usize,
    /// Bytes buffered before they are sent (default 16 MiB).
    pub flush_bytes: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            flush_rows: 64 * 1024,
            flush_bytes: 16 << 20,
        }
    }
}

#[derive(Debug)]
enum State {
    Open,
    Committed(CommitInfo),
    Aborted,
    /// A send or commit failed; the session has been (or will be) aborted.
    Failed(String),
}

/// Appends rows to one table or partition; see the [module docs](self).
#[derive(Debug)]
pub struct TableWriter {
    service: Arc<dyn TableService>,
    uri: TableUri,
    slice_id: u64,
    options: WriterOptions,
    session_id: String,
    stream: WriteStream,
    /// The whole table: data columns, then partition columns.
    table_schema: TableSchema,
    /// What the data carries: data columns, then the partition columns the URI leaves open.
    write_columns: Vec<Column>,
    /// The Arrow schema of `write_columns`.
    arrow_schema: SchemaRef,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    pending_bytes: usize,
    /// Rows handed to write requests (acknowledged or in flight): the next request's offset.
    queued_rows: u64,
    /// The request being sent in the background while the caller goes on writing (at most
    /// one, so rows arrive in order), and the stream offset it must leave.
    inflight: Option<(JoinHandle<paiio_storage::Result<WriteAck>>, u64)>,
    state: State,
    slot: Option<WriterSlot>,
}

impl TableWriter {
    /// Opens a writer on `uri` (`odps://project/tables/table[/pt=v...]`) with the configured
    /// backend (see [`crate::backend`]).
    pub fn open(uri: &str, slice_id: u64) -> Result<TableWriter> {
        let service = crate::backend::open_default_service()?;
        Self::open_with(service, uri, slice_id, WriterOptions::default())
    }

    /// Opens a writer on `uri` over `service`.
    pub fn open_with(
        service: Arc<dyn TableService>,
        uri: &str,
        slice_id: u64,
        options: WriterOptions,
    ) -> Result<TableWriter> {
        let uri = TableUri::parse(uri)?;
        Self::open_uri(service, uri, slice_id, options)
    }

    /// Opens a writer on a parsed URI over `service`.
    pub fn open_uri(
        service: Arc<dyn TableService>,
        uri: TableUri,
        slice_id: u64,
        options: WriterOptions,
    ) -> Result<TableWriter> {
        if options.flush_rows == 0 {
            return Err(Error::invalid("flush_rows", "must be at least 1"));
        }
        let svc = service.clone();
        let target = uri.clone();
        let (slot, session, stream, table_schema) = runtime::block_on(async move {
            let slot = svc
                .lock_writer_slot(&target.table, &target.partition, slice_id)
                .await?;
            let info = svc.describe_table(&target.table).await?;
            let mut request = WriteSessionRequest::new(target.table.clone());
            request.partition = target.partition.clone();
            let session = svc.create_write_session(&request).await?;
            let stream_id = slice_id.to_string();
            let stream = match svc
                .create_write_stream(&target.table, &session.session_id, Some(&stream_id), true)
                .await
            {
                Ok(stream) => stream,
                Err(e) => {
                    let _ = svc
                        .abort_write_session(&target.table, &session.session_id)
                        .await;
                    return Err(e);
                }
            };
            Ok::<_, paiio_storage::Error>((slot, session, stream, info.schema))
        })??;
        let write_columns: Vec<Column> = session.write_schema.all_columns().cloned().collect();
        let arrow_schema = Arc::new(
            session
                .write_schema
                .to_arrow_schema(&ArrowOptions::default(), true),
        );
        Ok(TableWriter {
            service,
            uri,
            slice_id,
            options,
            session_id: session.session_id,
            stream,
            table_schema,
            write_columns,
            arrow_schema,
            pending: Vec::new(),
            pending_rows: 0,
            pending_bytes: 0,
            queued_rows: 0,
            inflight: None,
            state: State::Open,
            slot: Some(slot),
        })
    }

    /// The URI the writer writes to.
    pub fn uri(&self) -> &TableUri {
        &self.uri
    }

    pub fn slice_id(&self) -> u64 {
        self.slice_id
    }

    /// The table's schema; `indices` are positions in its data columns, then its partition
    /// columns.
    pub fn schema(&self) -> &TableSchema {
        &self.table_schema
    }

    /// The id of the write session (for logs).
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Rows written so far (sent or buffered).
    pub fn rows_written(&self) -> u64 {
        self.queued_rows + self.pending_rows as u64
    }

    /// Writes the columns of `batch` to the table columns at `indices` (one per batch column).
    /// A batch that does not fit (a type, a NOT NULL column, an index) writes none of its rows.
    pub fn write(&mut self, batch: &RecordBatch, indices: &[usize]) -> Result<()> {
        self.check_open()?;
        let conformed = self.conform(batch.columns(), indices, batch.num_rows())?;
        self.push(conformed)
    }

    /// Writes rows of values to the table columns at `indices` (each row has one value per
    /// index). The values of a column may be NULL, bools, ints, floats (ints and floats mix),
    /// strings or bytes, converted as [`write`](Self::write) converts Arrow data.
    pub fn write_rows(&mut self, rows: &[Vec<Value>], indices: &[usize]) -> Result<()> {
        self.check_open()?;
        if let Some((row, values)) = rows
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() != indices.len())
        {
            return Err(Error::invalid(
                "row",
                format!(
                    "row {row} has {} values for {} indices",
                    values.len(),
                    indices.len()
                ),
            ));
        }
        let arrays = (0..indices.len())
            .map(|j| {
                let name = self.column_name(indices[j]);
                values_to_array(rows.iter().map(|r| &r[j]), &name)
            })
            .collect::<Result<Vec<_>>>()?;
        let conformed = self.conform(&arrays, indices, rows.len())?;
        self.push(conformed)
    }

    /// Sends what is buffered and waits until the service has it (nothing is committed).
    pub fn flush(&mut self) -> Result<()> {
        self.check_open()?;
        let result = self.send_pending().and_then(|()| self.wait_inflight());
        if let Err(e) = &result {
            self.fail(e);
        }
        result
    }

    /// Sends what is buffered, closes the stream and commits: all rows of this writer become
    /// visible at once. Closing again returns the same result; after a failed close, the
    /// session is aborted and nothing of this writer is visible.
    pub fn close(&mut self) -> Result<CommitInfo> {
        match &self.state {
            State::Committed(info) => return Ok(*info),
            State::Aborted => return Err(Error::Closed("TableWriter")),
            State::Failed(why) => {
                return Err(Error::invalid(
                    "TableWriter",
                    format!("an earlier failure aborted it: {why}"),
                ));
            }
            State::Open => {}
        }
        let result = self
            .send_pending()
            .and_then(|()| self.wait_inflight())
            .and_then(|()| self.commit());
        match result {
            Ok(info) => {
                self.state = State::Committed(info);
                self.slot = None;
                Ok(info)
            }
            Err(e) => {
                self.fail(&e);
                Err(e)
            }
        }
    }

    /// Discards everything this writer wrote; nothing becomes visible.
    pub fn abort(&mut self) -> Result<()> {
        if matches!(self.state, State::Committed(_)) {
            return Err(Error::invalid(
                "abort",
                "the writer is already closed and committed",
            ));
        }
        self.pending.clear();
        self.pending_rows = 0;
        self.settle_inflight();
        let was_open = matches!(self.state, State::Open);
        self.state = State::Aborted;
        let result = if was_open {
            let (svc, table, id) = (
                self.service.clone(),
                self.uri.table.clone(),
                self.session_id.clone(),
            );
            runtime::block_on(async move { svc.abort_write_session(&table, &id).await })?
                .map_err(Error::from)
        } else {
            Ok(())
        };
        self.slot = None;
        result
    }

    fn check_open(&self) -> Result<()> {
        match &self.state {
            State::Open => Ok(()),
            State::Failed(why) => Err(Error::invalid(
                "TableWriter",
                format!("an earlier failure aborted it: {why}"),
            )),
            _ => Err(Error::Closed("TableWriter")),
        }
    }

    /// Marks the writer failed and aborts its session (best effort).
    fn fail(&mut self, error: &Error) {
        self.pending.clear();
        self.pending_rows = 0;
        self.settle_inflight();
        self.state = State::Failed(error.to_string());
        let (svc, table, id) = (
            self.service.clone(),
            self.uri.table.clone(),
            self.session_id.clone(),
        );
        let _ = runtime::block_on(async move { svc.abort_write_session(&table, &id).await });
        self.slot = None;
    }

    /// The name of table column `index` (for messages), or the index itself.
    fn column_name(&self, index: usize) -> String {
        self.table_schema
            .all_columns()
            .nth(index)
            .map_or_else(|| format!("#{index}"), |c| c.name.clone())
    }

    /// Builds a batch of the write schema from `arrays` written to table columns `indices`.
    fn conform(&self, arrays: &[ArrayRef], indices: &[usize], rows: usize) -> Result<RecordBatch> {
        if arrays.len() != indices.len() {
            return Err(Error::invalid(
                "indices",
                format!(
                    "{} indices for {} columns of data",
                    indices.len(),
                    arrays.len()
                ),
            ));
        }
        let total = self.table_schema.columns.len() + self.table_schema.partition_columns.len();
        let mut source: Vec<Option<&ArrayRef>> = vec![None; self.write_columns.len()];
        for (array, &index) in arrays.iter().zip(indices) {
            if index >= total {
                return Err(Error::invalid(
                    "indices",
                    format!(
                        "column index {index} is out of range: table {} has {total} columns ({})",
                        self.uri.table,
                        self.table_schema.column_names().join(", ")
                    ),
                ));
            }
            let name = self.column_name(index);
            let Some(position) = self.write_columns.iter().position(|c| c.name == name) else {
                return Err(Error::invalid(
                    "indices",
                    format!(
                        "column {index} (`{name}`) is a partition column fixed by the URI \
                         ({}); leave it out",
                        self.uri.partition
                    ),
                ));
            };
            if source[position].replace(array).is_some() {
                return Err(Error::invalid(
                    "indices",
                    format!("column {index} (`{name}`) is listed twice"),
                ));
            }
        }
        let mut columns = Vec::with_capacity(self.write_columns.len());
        for ((column, field), array) in self
            .write_columns
            .iter()
            .zip(self.arrow_schema.fields())
            .zip(source)
        {
            let array = match array {
                Some(array) => {
                    if array.len() != rows {
                        return Err(Error::invalid(
                            "data",
                            format!(
                                "column `{}` has {} values for {rows} rows",
                                column.name,
                                array.len()
                            ),
                        ));
                    }
                    cast_for_column(column, field.data_type(), array)?
                }
                None if !column.nullable && rows > 0 => {
                    return Err(type_mismatch(
                        &column.name,
                        "the column is NOT NULL and is not among the written indices",
                    ));
                }
                None => new_null_array(field.data_type(), rows),
            };
            if !column.nullable && array.logical_null_count() > 0 {
                return Err(type_mismatch(
                    &column.name,
                    "the column is NOT NULL but the data has NULLs",
                ));
            }
            columns.push(array);
        }
        RecordBatch::try_new(self.arrow_schema.clone(), columns)
            .map_err(|e| Error::Storage(paiio_storage::Error::arrow("building rows to write", e)))
    }

    /// Buffers `batch`, sending whenever the buffer is full.
    fn push(&mut self, batch: RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        let bytes_per_row = batch.get_array_memory_size() / rows.max(1);
        let mut offset = 0;
        while offset < rows {
            let take = (self.options.flush_rows - self.pending_rows).min(rows - offset);
            self.pending.push(batch.slice(offset, take));
            self.pending_rows += take;
            self.pending_bytes += take * bytes_per_row;
            offset += take;
            let full = self.pending_rows >= self.options.flush_rows
                || self.pending_bytes >= self.options.flush_bytes;
            if full && let Err(e) = self.send_pending() {
                self.fail(&e);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Sends the buffer as one request at the stream's next row offset, in the background
    /// once the previous request is acknowledged.
    fn send_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.wait_inflight()?;
        let batches = std::mem::take(&mut self.pending);
        let rows = self.pending_rows as u64;
        self.pending_rows = 0;
        self.pending_bytes = 0;
        let request = WriteRequest {
            table: self.uri.table.clone(),
            session_id: self.session_id.clone(),
            stream_id: self.stream.stream_id.clone(),
            version: self.stream.version,
            row_offset: Some(self.queued_rows),
            access_token: Some(self.stream.access_token.clone()),
            batches,
        };
        let svc = self.service.clone();
        let handle = runtime::spawn(async move { svc.write(request).await });
        self.queued_rows += rows;
        self.inflight = Some((handle, self.queued_rows));
        Ok(())
    }

    /// Waits for the request in flight and checks its acknowledgement.
    fn wait_inflight(&mut self) -> Result<()> {
        let Some((handle, expected)) = self.inflight.take() else {
            return Ok(());
        };
        let ack = runtime::block_on(handle)?.map_err(|e| {
            Error::Storage(paiio_storage::Error::Transient {
                message: format!(
                    "the write task of stream {} failed: {e}",
                    self.stream.stream_id
                ),
                retryable: false,
                source: None,
            })
        })??;
        if ack.next_row_offset != expected {
            return Err(Error::Storage(paiio_storage::Error::InvalidState {
                session_id: self.session_id.clone(),
                state: "OFFSET".into(),
                message: format!(
                    "stream {} expects row {} next, but this writer has sent {expected} rows",
                    self.stream.stream_id, ack.next_row_offset
                ),
            }));
        }
        Ok(())
    }

    /// Lets the request in flight finish, whatever its result (before an abort, so that no
    /// write lands after it).
    fn settle_inflight(&mut self) {
        if let Some((handle, _)) = self.inflight.take() {
            if runtime::in_async_context() {
                handle.abort();
            } else {
                let _ = runtime::block_on(handle);
            }
        }
    }

    fn commit(&mut self) -> Result<CommitInfo> {
        let svc = self.service.clone();
        let table = self.uri.table.clone();
        let session_id = self.session_id.clone();
        let stream = (self.stream.stream_id.clone(), self.stream.version);
        let info = runtime::block_on(async move {
            svc.close_write_stream(&table, &session_id, &stream.0, stream.1)
                .await?;
            svc.commit_write_session(&table, &session_id, Some(&[stream]))
                .await
        })??;
        Ok(info)
    }
}

impl Drop for TableWriter {
    /// A writer dropped without [`close`](TableWriter::close) is aborted (best effort):
    /// nothing it wrote becomes visible.
    fn drop(&mut self) {
        if !matches!(self.state, State::Open | State::Failed(_)) {
            return;
        }
        let inflight = self.inflight.take().map(|(handle, _)| handle);
        let (svc, table, id) = (
            self.service.clone(),
            self.uri.table.clone(),
            self.session_id.clone(),
        );
        let abort = async move {
            if let Some(handle) = inflight {
                let _ = handle.await;
            }
            if let Err(e) = svc.abort_write_session(&table, &id).await {
                tracing::debug!("aborting write session {id} of {table}: {e}");
            }
        };
        if runtime::in_async_context() {
            drop(runtime::spawn(abort));
        } else {
            let _ = runtime::block_on(abort);
        }
    }
}

fn type_mismatch(column: &str, message: impl Into<String>) -> Error {
    Error::Storage(paiio_storage::Error::type_mismatch(column, message))
}

/// Converts `array` to `want`, the Arrow type of `column`, where that is safe (see the
/// [module docs](self)).
fn cast_for_column(column: &Column, want: &DataType, array: &ArrayRef) -> Result<ArrayRef> {
    use DataType as A;
    let have = array.data_type();
    if have == want {
        return Ok(array.clone());
    }
    let refuse = || {
        type_mismatch(
            &column.name,
            format!(
                "a column of type {} cannot take {}",
                column.ty,
                describe_arrow(have)
            ),
        )
    };
    let integer_data = matches!(
        have,
        A::Int8 | A::Int16 | A::Int32 | A::Int64 | A::UInt8 | A::UInt16 | A::UInt32 | A::UInt64
    );
    let float_data = matches!(have, A::Float16 | A::Float32 | A::Float64);
    let decimal_data = matches!(
        have,
        A::Decimal32(..) | A::Decimal64(..) | A::Decimal128(..) | A::Decimal256(..)
    );
    let text_data = matches!(have, A::Utf8 | A::LargeUtf8 | A::Utf8View);
    let binary_data = matches!(
        have,
        A::Binary | A::LargeBinary | A::BinaryView | A::FixedSizeBinary(_)
    );
    let allowed = matches!(have, A::Null)
        || column.ty.arrow_compatible(have)
        || match &column.ty {
            OdpsType::TinyInt | OdpsType::SmallInt | OdpsType::Int | OdpsType::BigInt => {
                integer_data || float_data || decimal_data || matches!(have, A::Boolean)
            }
            OdpsType::Float | OdpsType::Double | OdpsType::Decimal(_) => {
                integer_data
                    || float_data
                    || decimal_data
                    || (text_data && matches!(column.ty, OdpsType::Decimal(_)))
            }
            OdpsType::Binary | OdpsType::Blob => text_data,
            OdpsType::String | OdpsType::Varchar(_) | OdpsType::Char(_) | OdpsType::Json => {
                binary_data
            }
            OdpsType::Date | OdpsType::DateTime | OdpsType::Timestamp | OdpsType::TimestampNtz => {
                text_data
            }
            _ => false,
        };
    if !allowed {
        return Err(refuse());
    }
    if column.ty.is_integer() && (float_data || decimal_data) {
        // Only whole numbers: 2.0 is 2, 2.5 is refused rather than truncated.
        let floats = arrow_cast::cast(array, &A::Float64).map_err(|_| refuse())?;
        let floats = floats.as_primitive::<Float64Type>();
        if let Some(row) =
            (0..floats.len()).find(|&i| floats.is_valid(i) && floats.value(i).fract() != 0.0)
        {
            return Err(type_mismatch(
                &column.name,
                format!(
                    "row {row}: {} is not a whole number for a column of type {}",
                    floats.value(row),
                    column.ty
                ),
            ));
        }
    }
    if matches!(column.ty, OdpsType::Float) && float_data {
        let floats = arrow_cast::cast(array, &A::Float64).map_err(|_| refuse())?;
        let floats = floats.as_primitive::<Float64Type>();
        if let Some(row) = (0..floats.len()).find(|&i| {
            floats.is_valid(i)
                && floats.value(i).is_finite()
                && !(floats.value(i) as f32).is_finite()
        }) {
            return Err(type_mismatch(
                &column.name,
                format!(
                    "row {row}: {} does not fit a column of type float",
                    floats.value(row)
                ),
            ));
        }
    }
    if matches!(
        column.ty,
        OdpsType::String | OdpsType::Varchar(_) | OdpsType::Char(_) | OdpsType::Json
    ) && binary_data
    {
        let bytes = arrow_cast::cast(array, &A::Binary).map_err(|_| refuse())?;
        if let Some(row) = bytes
            .as_binary::<i32>()
            .iter()
            .position(|b| b.is_some_and(|b| std::str::from_utf8(b).is_err()))
        {
            return Err(type_mismatch(
                &column.name,
                format!(
                    "row {row}: the bytes are not valid UTF-8 for a column of type {}",
                    column.ty
                ),
            ));
        }
    }
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow_cast::cast_with_options(array, want, &options).map_err(|e| {
        type_mismatch(
            &column.name,
            format!(
                "cannot convert {} to {}: {e}",
                describe_arrow(have),
                column.ty
            ),
        )
    })
}

/// `string data (Arrow Utf8)`: the kind of value first, for users who never saw Arrow.
fn describe_arrow(data_type: &DataType) -> String {
    use DataType as A;
    let kind = match data_type {
        A::Utf8 | A::LargeUtf8 | A::Utf8View => "string",
        A::Binary | A::LargeBinary | A::BinaryView | A::FixedSizeBinary(_) => "bytes",
        A::Int8 | A::Int16 | A::Int32 | A::Int64 | A::UInt8 | A::UInt16 | A::UInt32 | A::UInt64 => {
            "int"
        }
        A::Float16 | A::Float32 | A::Float64 => "float",
        A::Boolean => "bool",
        _ => return format!("Arrow {data_type} data"),
    };
    format!("{kind} data (Arrow {data_type})")
}

/// The natural Arrow array of one column of row values.
fn values_to_array<'a>(
    values: impl Iterator<Item = &'a Value> + Clone,
    column: &str,
) -> Result<ArrayRef> {
    #[derive(PartialEq, Clone, Copy)]
    enum Kind {
        Null,
        Bool,
        Int,
        Float,
        String,
        Bytes,
    }
    let kind_of = |v: &Value| match v {
        Value::Null => Kind::Null,
        Value::Bool(_) => Kind::Bool,
        Value::Int(_) => Kind::Int,
        Value::Float(_) => Kind::Float,
        Value::String(_) => Kind::String,
        Value::Bytes(_) => Kind::Bytes,
    };
    let name = |k: Kind| match k {
        Kind::Null => "NULL",
        Kind::Bool => "a bool",
        Kind::Int => "an int",
        Kind::Float => "a float",
        Kind::String => "a string",
        Kind::Bytes => "bytes",
    };
    let mut kind = Kind::Null;
    for (row, value) in values.clone().enumerate() {
        let k = kind_of(value);
        kind = match (kind, k) {
            (a, Kind::Null) => a,
            (Kind::Null, b) => b,
            (a, b) if a == b => a,
            (Kind::Int, Kind::Float) | (Kind::Float, Kind::Int) => Kind::Float,
            (a, b) => {
                return Err(type_mismatch(
                    column,
                    format!(
                        "row {row} holds {} among values that are {}",
                        name(b),
                        name(a)
                    ),
                ));
            }
        };
    }
    let n = values.clone().count();
    Ok(match kind {
        Kind::Null => Arc::new(NullArray::new(n)),
        Kind::Bool => Arc::new(
            values
                .map(|v| {
                    if let Value::Bool(b) = v {
                        Some(*b)
                    } else {
                        None
                    }
                })
                .collect::<BooleanArray>(),
        ),
        Kind::Int => Arc::new(
            values
                .map(|v| {
                    if let Value::Int(i) = v {
                        Some(*i)
                    } else {
                        None
                    }
                })
                .collect::<Int64Array>(),
        ),
        Kind::Float => Arc::new(
            values
                .map(|v| match v {
                    Value::Float(f) => Some(*f),
                    Value::Int(i) => Some(*i as f64),
                    _ => None,
                })
                .collect::<Float64Array>(),
        ),
        Kind::String => Arc::new(
            values
                .map(|v| {
                    if let Value::String(s) = v {
                        Some(s.as_str())
                    } else {
                        None
                    }
                })
                .collect::<StringArray>(),
        ),
        Kind::Bytes => Arc::new(
            values
                .map(|v| {
                    if let Value::Bytes(b) = v {
                        Some(b.as_slice())
                    } else {
                        None
                    }
                })
                .collect::<BinaryArray>(),
        ),
    })
}

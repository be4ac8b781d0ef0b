//! Tunnel reads: read sessions as sets of download sessions, and the resumable row stream
//! (`GET ?data&arrow&downloadid=ID&rowrange=(START,COUNT)&columns=...`).
//!
//! A read walks the global row range over the download sessions it spans. Each request asks
//! for the data columns it needs in table order (PyODPS builds the wire schema in table order
//! whatever `columns=` says), the chunked Arrow stream is decoded as it arrives with every
//! CRC checked, the batches are converted to the crate's Arrow types, reordered, given their
//! partition columns and cut to `max_batch_rows`. A body that breaks, is truncated, or ends
//! cleanly before all its rows came (an empty `200` included) is requested again from the
//! first row not yet received, within the client's retry budget (reset by every row that
//! arrives); a checksum mismatch or malformed bytes are [`Error::Corrupt`] and not retried.

use std::collections::VecDeque;
use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema, SchemaRef};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};

use crate::error::{Error, ObjectKind, Result};
use crate::protocol::tunnel::arrow_stream::{
    ArrowDecodeOptions, ArrowStreamDecoder, from_wire_batch,
};
use crate::protocol::tunnel::encoding::Compression;
use crate::protocol::tunnel::record::{RecordDecodeOptions, RecordDecoder, record_arrow_schema};
use crate::protocol::tunnel::session::DownloadStatus;
use crate::service::{
    ReadRange, ReadRequest, ReadSession, ReadSessionRequest, RecordBatchStream, SessionStatus,
    SplitMode,
};
use crate::types::{ArrowOptions, Column, TableSchema};
use crate::uri::{PartitionSpec, TableId};

use super::super::transport::{Budget, transport_error};
use super::layout::{Layout, Part, check_split_options, estimated_row_bytes};
use super::{ReadFormat, TunnelCall, TunnelClient};

/// How long a download session lives on the service.
const DOWNLOAD_SESSION_TTL_MS: i64 = 24 * 3600 * 1000;

/// Download sessions created (or reloaded) at once.
const SESSION_CONCURRENCY: usize = 8;

/// A read session this client knows: its layout and the table's schema.
pub(super) struct Resolved {
    pub layout: Layout,
    pub schema: TableSchema,
}

impl Resolved {
    /// The session's data columns (required, in their order; all when none were required).
    fn data_columns(&self) -> Result<Vec<Column>> {
        if self.layout.data_columns.is_empty() {
            return Ok(self.schema.columns.clone());
        }
        pick(
            &self.schema.columns,
            &self.layout.data_columns,
            ObjectKind::Column,
        )
    }

    fn partition_columns(&self) -> Result<Vec<Column>> {
        pick(
            &self.schema.partition_columns,
            &self.layout.partition_columns,
            ObjectKind::PartitionColumn,
        )
    }

    fn session_schema(&self) -> Result<TableSchema> {
        Ok(TableSchema {
            columns: self.data_columns()?,
            partition_columns: self.partition_columns()?,
        })
    }

    fn to_session(
        &self,
        table: &TableId,
        session_id: &str,
        status: SessionStatus,
    ) -> Result<ReadSession> {
        let columns = self.data_columns()?;
        let rows = self.layout.total_rows();
        let splits_count = match self.layout.mode {
            SplitMode::RowOffset => -1,
            _ => self.layout.splits(&columns).len() as i64,
        };
        Ok(ReadSession {
            session_id: session_id.to_string(),
            table: table.clone(),
            status,
            expiration_time_ms: self.layout.expiration_ms,
            split_mode: self.layout.mode,
            splits_count,
            record_count: rows as i64,
            estimated_size: rows.saturating_mul(estimated_row_bytes(&columns)) as i64,
            schema: self.session_schema()?,
            arrow_options: self.layout.arrow,
            table_version: 0,
            split_bucket_ids: Vec::new(),
        })
    }
}

/// The columns `names` name (case-insensitively), in that order.
fn pick(available: &[Column], names: &[String], kind: ObjectKind) -> Result<Vec<Column>> {
    names
        .iter()
        .map(|n| {
            available
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(n.trim()))
                .cloned()
                .ok_or_else(|| Error::not_found(kind, format!("`{}`", n.trim())))
        })
        .collect()
}

impl TunnelClient {
    pub(super) async fn create_read(&self, request: &ReadSessionRequest) -> Result<ReadSession> {
        let (id, resolved) = self.create_read_limited(request, None).await?;
        resolved.to_session(&request.table, &id, SessionStatus::Normal)
    }

    /// Creates the download sessions of a read session; with `limit`, stops once they hold
    /// that many rows (a preview).
    async fn create_read_limited(
        &self,
        request: &ReadSessionRequest,
        limit: Option<u64>,
    ) -> Result<(String, Arc<Resolved>)> {
        let table = &request.table;
        table.validate()?;
        check_split_options(&request.split_options)?;
        if !request.filter_predicate.trim().is_empty() && !request.filter_predicate_fallback {
            return Err(Error::NotSupported {
                message: format!(
                    "filter predicate {:?}: the Tunnel reads whole rows (set \
                     filter_predicate_fallback to read unfiltered)",
                    request.filter_predicate
                ),
            });
        }
        let (schema, modified_ms) = self.schema_and_modified(table).await?;
        let data = pick(
            &schema.columns,
            &request.required_data_columns,
            ObjectKind::Column,
        )?;
        let partition_columns = pick(
            &schema.partition_columns,
            &request.required_partition_columns,
            ObjectKind::PartitionColumn,
        )?;
        for spec in &request.required_partitions {
            for key in spec.keys() {
                if !schema.is_partition_column(key) {
                    return Err(Error::invalid(
                        "partition spec",
                        format!("`{spec}`: `{key}` is not a partition column of {table}"),
                    ));
                }
            }
        }
        let specs: Vec<PartitionSpec> = if schema.partition_columns.is_empty() {
            vec![PartitionSpec::empty()]
        } else {
            let mut specs: Vec<PartitionSpec> = self
                .partitions(table, None)
                .await?
                .into_iter()
                .map(|p| p.spec)
                .filter(|s| {
                    request.required_partitions.is_empty()
                        || request
                            .required_partitions
                            .iter()
                            .any(|r| r.is_empty() || r.matches(s))
                })
                .collect();
            specs.dedup();
            specs
        };
        let mut parts: Vec<Part> = Vec::with_capacity(specs.len());
        let mut rows = 0u64;
        let mut pending = specs.into_iter();
        loop {
            if limit.is_some_and(|l| rows >= l) {
                break;
            }
            let batch: Vec<PartitionSpec> = pending
                .by_ref()
                .take(if limit.is_some() {
                    1
                } else {
                    SESSION_CONCURRENCY * 4
                })
                .collect();
            if batch.is_empty() {
                break;
            }
            let created: Vec<Part> = futures::stream::iter(batch)
                .map(|spec| async move {
                    // Previews take a session of their own; reads share them (shared.rs),
                    // unless the table's last change is unknown.
                    let s = match (limit, modified_ms) {
                        (None, Some(modified)) => {
                            self.shared_download(table, &spec, modified).await?
                        }
                        _ => self.create_download(table, &spec).await?,
                    };
                    let rows = s.record_count.ok_or_else(|| Error::Corrupt {
                        location: format!("Tunnel download session {}", s.id),
                        message: "the session answer has no RecordCount".into(),
                    })?;
                    Ok::<_, Error>(Part {
                        download_id: s.id,
                        partition: spec.to_string(),
                        rows,
                    })
                })
                .buffered(SESSION_CONCURRENCY)
                .try_collect()
                .await?;
            rows = super::layout::check_rows(
                std::iter::once(rows).chain(created.iter().map(|p| p.rows)),
            )?;
            parts.extend(created);
        }
        let opts = request.split_options;
        let layout = Layout {
            version: Layout::VERSION,
            parts,
            data_columns: if request.required_data_columns.is_empty() {
                Vec::new()
            } else {
                data.iter().map(|c| c.name.clone()).collect()
            },
            partition_columns: partition_columns.iter().map(|c| c.name.clone()).collect(),
            mode: opts.mode,
            number: opts.number,
            cross_partition: opts.cross_partition,
            arrow: request.arrow_options,
            expiration_ms: self.rest.inner.clock.now_ms() + DOWNLOAD_SESSION_TTL_MS,
        };
        let id = layout.encode();
        let resolved = Arc::new(Resolved { layout, schema });
        self.state.reads.lock().insert(id.clone(), resolved.clone());
        Ok((id, resolved))
    }

    /// A session by id: reloads every download session by its `DownloadID` (creates none).
    pub(super) async fn get_read(&self, table: &TableId, session_id: &str) -> Result<ReadSession> {
        let layout = Layout::decode(session_id)?;
        let reloaded: Vec<_> = futures::stream::iter(0..layout.parts.len())
            .map(|i| {
                let layout = &layout;
                async move {
                    let spec = layout.spec(i)?;
                    self.reload_download(table, &spec, &layout.parts[i].download_id)
                        .await
                }
            })
            .buffered(SESSION_CONCURRENCY)
            .try_collect()
            .await?;
        let expired = reloaded
            .iter()
            .any(|s| matches!(s.status, DownloadStatus::Expired | DownloadStatus::Closes))
            || self.rest.inner.clock.now_ms() > layout.expiration_ms;
        let schema = match reloaded.iter().find_map(|s| s.schema.as_ref()) {
            Some(s) => s.to_table_schema()?,
            None => self.schema_of(table).await?,
        };
        let resolved = Arc::new(Resolved { layout, schema });
        self.state
            .reads
            .lock()
            .insert(session_id.to_string(), resolved.clone());
        let status = if expired {
            SessionStatus::Expired
        } else {
            SessionStatus::Normal
        };
        resolved.to_session(table, session_id, status)
    }

    /// The session from memory, or from its id and one reload (for the schema).
    async fn resolve(&self, table: &TableId, session_id: &str) -> Result<Arc<Resolved>> {
        if let Some(r) = self.state.reads.lock().get(session_id) {
            return Ok(r.clone());
        }
        let layout = Layout::decode(session_id)?;
        let schema = match layout.parts.first() {
            Some(first) => {
                let spec = layout.spec(0)?;
                let s = self
                    .reload_download(table, &spec, &first.download_id)
                    .await?;
                match s.schema {
                    Some(schema) => schema.to_table_schema()?,
                    None => self.schema_of(table).await?,
                }
            }
            None => self.schema_of(table).await?,
        };
        let resolved = Arc::new(Resolved { layout, schema });
        self.state
            .reads
            .lock()
            .insert(session_id.to_string(), resolved.clone());
        Ok(resolved)
    }

    pub(super) async fn read_rows(&self, request: &ReadRequest) -> Result<RecordBatchStream> {
        let resolved = self.resolve(&request.table, &request.session_id).await?;
        let layout = &resolved.layout;
        let total = layout.total_rows();
        let (start, end) = match request.range {
            ReadRange::Split(i) => {
                if layout.mode == SplitMode::RowOffset {
                    return Err(Error::invalid(
                        "read range",
                        "a RowOffset session is read by row range, not by split",
                    ));
                }
                let splits = layout.splits(&resolved.data_columns()?);
                let r = splits.get(i as usize).ok_or_else(|| Error::OutOfRange {
                    message: format!(
                        "split index {i} of session {} ({} splits)",
                        request.session_id,
                        splits.len()
                    ),
                })?;
                (r.start, r.end)
            }
            ReadRange::Rows { offset, count } => {
                let end = offset
                    .checked_add(count)
                    .filter(|e| *e <= total)
                    .ok_or_else(|| Error::OutOfRange {
                        message: format!(
                            "rows [{offset}, {offset}+{count}) of session {} ({total} rows)",
                            request.session_id
                        ),
                    })?;
                (offset, end)
            }
        };
        if request.skip_rows > end - start {
            return Err(Error::OutOfRange {
                message: format!(
                    "skipping {} rows of a range of {} rows",
                    request.skip_rows,
                    end - start
                ),
            });
        }
        let start = start + request.skip_rows;
        let plan = Plan::new(&resolved, &request.columns, self.format)?;
        let mut segments = VecDeque::new();
        let mut base = 0u64;
        for (i, part) in layout.parts.iter().enumerate() {
            let (lo, hi) = (base.max(start), (base + part.rows).min(end));
            if lo < hi {
                segments.push_back(Segment {
                    part: i,
                    spec: layout.spec(i)?,
                    start: lo - base,
                    count: hi - lo,
                    received: 0,
                });
            }
            base += part.rows;
        }
        let reader = RowReader {
            client: self.clone(),
            table: request.table.clone(),
            resolved: resolved.clone(),
            plan: Arc::new(plan),
            segments,
            body: None,
            ready: VecDeque::new(),
            max_batch_rows: if request.max_batch_rows == 0 {
                ReadRequest::DEFAULT_MAX_BATCH_ROWS
            } else {
                request.max_batch_rows
            },
            delivered_any: false,
            budget: Budget::new(&self.rest.inner.retry),
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(
            reader,
            |mut r| async move {
                let item = r.next().await?;
                Some((item, r))
            },
        )))
    }

    pub(super) async fn preview_rows(
        &self,
        table: &TableId,
        partition: Option<&PartitionSpec>,
        columns: &[String],
        limit: u64,
    ) -> Result<RecordBatchStream> {
        let schema = self.schema_of(table).await?;
        let mut request = ReadSessionRequest::new(table.clone());
        request.split_options = crate::service::SplitOptions::row_offset();
        request.required_partition_columns = schema
            .partition_columns
            .iter()
            .map(|c| c.name.clone())
            .collect();
        if let Some(p) = partition.filter(|p| !p.is_empty()) {
            request.required_partitions = vec![p.clone()];
        }
        let (id, resolved) = self.create_read_limited(&request, Some(limit)).await?;
        let count = resolved.layout.total_rows().min(limit);
        let mut read = ReadRequest::new(table.clone(), id, ReadRange::Rows { offset: 0, count });
        read.columns = columns.to_vec();
        self.read_rows(&read).await
    }
}

/// Where an output column comes from.
enum Source {
    /// Column `i` of the fetched (wire) batch.
    Data(usize),
    /// A partition column: its field and its name in the partition spec.
    Partition(Field, String),
}

/// What a read delivers and what it fetches.
struct Plan {
    /// The data columns requested from the service, in table order.
    fetch: Vec<Column>,
    /// The output columns.
    sources: Vec<Source>,
    schema: SchemaRef,
    arrow: ArrowOptions,
    /// Rows come as the protobuf record stream (§3), not as Arrow.
    records: bool,
}

impl Plan {
    fn new(resolved: &Resolved, columns: &[String], format: ReadFormat) -> Result<Plan> {
        let session = resolved.session_schema()?;
        let wanted: Vec<&Column> = if columns.is_empty() {
            session
                .columns
                .iter()
                .chain(&session.partition_columns)
                .collect()
        } else {
            columns
                .iter()
                .map(|n| {
                    session
                        .columns
                        .iter()
                        .chain(&session.partition_columns)
                        .find(|c| c.name.eq_ignore_ascii_case(n.trim()))
                        .ok_or_else(|| {
                            Error::not_found(
                                ObjectKind::Column,
                                format!("`{}` in the session", n.trim()),
                            )
                        })
                })
                .collect::<Result<_>>()?
        };
        let table = &resolved.schema;
        let is_data = |c: &Column| session.columns.iter().any(|d| d.name == c.name);
        let mut fetch: Vec<Column> = table
            .columns
            .iter()
            .filter(|c| wanted.iter().any(|w| is_data(w) && w.name == c.name))
            .cloned()
            .collect();
        if fetch.is_empty() {
            // Only partition columns: the rows still have to be counted.
            fetch.extend(table.columns.first().cloned());
        }
        let arrow = resolved.layout.arrow;
        let wire_fields = record_arrow_schema(&fetch, &arrow);
        let mut sources = Vec::new();
        let mut fields = Vec::new();
        for c in wanted {
            if is_data(c) {
                let i = fetch
                    .iter()
                    .position(|f| f.name == c.name)
                    .unwrap_or_default();
                fields.push(wire_fields.field(i).clone());
                sources.push(Source::Data(i));
            } else {
                let field = c.to_arrow_field(&arrow);
                fields.push(field.clone());
                sources.push(Source::Partition(field, c.name.clone()));
            }
        }
        let records = match format {
            ReadFormat::Records => true,
            ReadFormat::Arrow => false,
            ReadFormat::Auto => fetch.iter().any(|c| not_for_arrow(&c.ty)),
        };
        Ok(Plan {
            fetch,
            sources,
            schema: Arc::new(Schema::new(fields)),
            arrow,
            records,
        })
    }

    /// The output batch of one decoded batch of a segment of partition `spec` (wire types
    /// from the Arrow stream, the crate's types from the record stream).
    fn output(&self, wire: &RecordBatch, spec: &PartitionSpec) -> Result<RecordBatch> {
        let batch = if self.records {
            wire.clone()
        } else {
            from_wire_batch(wire, &self.fetch, &self.arrow)?
        };
        let rows = batch.num_rows();
        let columns = self
            .sources
            .iter()
            .map(|s| match s {
                Source::Data(i) => Ok(batch.column(*i).clone()),
                Source::Partition(field, name) => {
                    constant(spec.get(name).unwrap_or_default(), field, rows)
                }
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| Error::arrow("assembling a Tunnel batch", e))
    }
}

/// `rows` copies of a partition value in the field's type.
fn constant(value: &str, field: &Field, rows: usize) -> Result<ArrayRef> {
    let one: ArrayRef = Arc::new(arrow_array::StringArray::from(vec![value]));
    let typed = if field.data_type() == one.data_type() {
        one
    } else {
        let strict = arrow_cast::CastOptions {
            safe: false,
            ..Default::default()
        };
        arrow_cast::cast_with_options(&one, field.data_type(), &strict).map_err(|e| {
            Error::type_mismatch(field.name(), format!("partition value {value:?}: {e}"))
        })?
    };
    let indices = arrow_array::UInt32Array::from(vec![0u32; rows]);
    arrow_select::take::take(typed.as_ref(), &indices, None)
        .map_err(|e| Error::arrow("partition column", e))
}

/// The rows of one download session a read still wants.
struct Segment {
    part: usize,
    spec: PartitionSpec,
    /// The first row, within the download session.
    start: u64,
    count: u64,
    /// Rows received (decoded and queued) so far.
    received: u64,
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// Whether a type is one PyODPS's Arrow path refuses (JSON, INTERVAL_YEAR_MONTH, BLOB, at
/// any depth): such columns are read as records, which every type has.
fn not_for_arrow(ty: &crate::types::OdpsType) -> bool {
    use crate::types::OdpsType as T;
    match ty {
        T::Json | T::IntervalYearMonth | T::Blob => true,
        T::Array(t) => not_for_arrow(t),
        T::Map(k, v) => not_for_arrow(k) || not_for_arrow(v),
        T::Struct(fields) => fields.iter().any(|f| not_for_arrow(&f.ty)),
        _ => false,
    }
}

/// The decoder of one body: the chunked Arrow stream or the record stream.
enum Decoder {
    Arrow(Box<ArrowStreamDecoder>),
    Records(RecordDecoder),
}

impl Decoder {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        Ok(match self {
            Decoder::Arrow(d) => d.feed(chunk)?,
            Decoder::Records(d) => d.feed(chunk)?,
        })
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        Ok(match self {
            Decoder::Arrow(d) => d.finish()?,
            Decoder::Records(d) => d.finish()?.into_iter().collect(),
        })
    }
}

/// One open response body and its decoder.
struct Body {
    bytes: ByteStream,
    decoder: Decoder,
}

struct RowReader {
    client: TunnelClient,
    table: TableId,
    resolved: Arc<Resolved>,
    plan: Arc<Plan>,
    segments: VecDeque<Segment>,
    body: Option<Body>,
    ready: VecDeque<RecordBatch>,
    max_batch_rows: usize,
    delivered_any: bool,
    /// The budget of the current run of attempts (since rows last arrived).
    budget: Budget,
    done: bool,
}

impl RowReader {
    async fn next(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                self.delivered_any = true;
                return Some(Ok(b));
            }
            if self.done {
                if !self.delivered_any {
                    self.delivered_any = true;
                    return Some(Ok(RecordBatch::new_empty(self.plan.schema.clone())));
                }
                return None;
            }
            let Some(seg) = self.segments.front() else {
                self.done = true;
                continue;
            };
            if seg.received >= seg.count && self.body.is_none() {
                // Popped only once its body ended, so the final CRC was checked too.
                self.segments.pop_front();
                continue;
            }
            if self.body.is_none() {
                match self.open().await {
                    Ok(body) => self.body = Some(body),
                    Err(e) => {
                        // The call's own retries are spent: final.
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            let (step, ended) = match body.bytes.next().await {
                Some(Ok(chunk)) => (body.decoder.feed(&chunk), false),
                Some(Err(e)) => (Err(e), false),
                None => (body.decoder.finish(), true),
            };
            let batches = match step {
                Ok(batches) => batches,
                Err(e) => {
                    let e = self.cut_or_corrupt(e, ended);
                    if let Some(e) = self.failed(e).await {
                        self.done = true;
                        return Some(Err(e));
                    }
                    continue;
                }
            };
            if let Err(e) = self.accept(batches) {
                self.done = true;
                return Some(Err(e));
            }
            if !ended {
                continue;
            }
            self.body = None;
            // A clean end with rows missing (an empty `200` included) is a cut, never the
            // end of the data.
            if let Some(seg) = self.segments.front()
                && seg.received < seg.count
            {
                let e = Error::Transient {
                    message: format!(
                        "the Tunnel row stream ended after {} of {} rows",
                        seg.received, seg.count
                    ),
                    retryable: true,
                    source: None,
                };
                if let Some(e) = self.failed(e).await {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }

    /// A final CRC that does not match at the end of a body that still owes rows: the body
    /// was most likely cut inside its last chunk (a clean cut there reads as a short final
    /// chunk with a wrong CRC). None of that chunk's rows were handed out (they come out
    /// only once the CRC matched), so the rest is asked again, within the retry budget.
    fn cut_or_corrupt(&self, error: Error, ended: bool) -> Error {
        let owed = self.segments.front().is_some_and(|s| s.received < s.count);
        match error {
            Error::Corrupt { message, .. } if ended && owed => Error::Transient {
                message: format!("the Tunnel row stream ended badly (cut short?): {message}"),
                retryable: true,
                source: None,
            },
            other => other,
        }
    }

    /// Queues the output of decoded wire batches; more rows than asked for is corruption.
    fn accept(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        let Some(seg) = self.segments.front_mut() else {
            return Ok(());
        };
        for wire in batches {
            let rows = wire.num_rows() as u64;
            if seg.received + rows > seg.count {
                return Err(Error::Corrupt {
                    location: "the Tunnel Arrow stream".into(),
                    message: format!(
                        "{} rows were sent for a range of {}",
                        seg.received + rows,
                        seg.count
                    ),
                });
            }
            let out = self.plan.output(&wire, &seg.spec)?;
            seg.received += rows;
            if rows > 0 {
                self.budget.reset();
            }
            let mut offset = 0;
            while offset < out.num_rows() {
                let len = self.max_batch_rows.min(out.num_rows() - offset);
                self.ready.push_back(out.slice(offset, len));
                offset += len;
            }
        }
        Ok(())
    }

    /// Accounts a failure of the current body: `Some(error)` when it must be surfaced,
    /// `None` after sleeping before the read is re-opened at the first row not received.
    async fn failed(&mut self, error: Error) -> Option<Error> {
        self.body = None;
        if !error.is_retryable() {
            return Some(error);
        }
        let inner = &self.client.rest.inner;
        match inner.next_retry(&mut self.budget, None) {
            Some(delay) => {
                inner
                    .stats
                    .resumes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(?delay, "resuming a broken Tunnel row stream: {error}");
                tokio::time::sleep(delay).await;
                None
            }
            None => Some(error),
        }
    }

    /// Requests the rest of the current segment.
    async fn open(&mut self) -> Result<Body> {
        let Some(seg) = self.segments.front() else {
            return Err(Error::invalid("read", "no rows left"));
        };
        let part = &self.resolved.layout.parts[seg.part];
        let start = seg.start + seg.received;
        let count = seg.count - seg.received;
        let columns = self
            .plan
            .fetch
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let mut call = TunnelCall::new(reqwest::Method::GET, &self.table, "read rows").key("data");
        if !self.plan.records {
            call = call.key("arrow");
        }
        let mut call = call
            .param("downloadid", &part.download_id)
            .param("rowrange", format!("({start},{count})"))
            .param("columns", columns)
            .partition(&seg.spec)
            .session(&part.download_id);
        call.streaming = true;
        let asked = self
            .client
            .rest
            .tunnel_read_codec()
            .and_then(|c| Compression::from_encoding(c.name()).ok().flatten());
        if let Some(c) = asked {
            call.headers
                .push(("Accept-Encoding".into(), c.encoding().into()));
        }
        let resp = self.client.execute_in(&call, &mut self.budget).await?;
        let encoding = resp
            .headers()
            .get(reqwest::header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap_or("?").to_string());
        let compression = match encoding.as_deref() {
            None => None,
            Some(name) => Compression::from_encoding(name).map_err(Error::from)?,
        };
        let raw = resp
            .bytes_stream()
            .map_err(|e| transport_error("the Tunnel row stream", e));
        let bytes: ByteStream = match compression {
            None => Box::pin(raw),
            Some(c) => decompressed(c, Box::pin(raw)),
        };
        let decoder = if self.plan.records {
            Decoder::Records(RecordDecoder::new(
                &self.plan.fetch,
                &self.plan.arrow,
                RecordDecodeOptions {
                    batch_rows: self.max_batch_rows,
                    ..RecordDecodeOptions::default()
                },
            )?)
        } else {
            Decoder::Arrow(Box::new(ArrowStreamDecoder::new(
                &self.plan.fetch,
                ArrowDecodeOptions::default(),
            )?))
        };
        Ok(Body { bytes, decoder })
    }
}

/// Decompresses a body on a blocking thread, handing the plain bytes back in pieces.
fn decompressed(codec: Compression, raw: ByteStream) -> ByteStream {
    let reader = tokio_util::io::StreamReader::new(raw.map_err(std::io::Error::other));
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut reader = codec.decompressing_reader(bridge);
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(Error::Transient {
                        message: format!("the {} Tunnel row stream broke: {e}", codec.encoding()),
                        retryable: true,
                        source: Some(Box::new(e)),
                    }));
                    return;
                }
            }
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

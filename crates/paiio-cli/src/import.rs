//! `paiio table import`: a file into a table or partition, in one write session.
//!
//! The file is parsed on a blocking thread while the rows already parsed are written; the
//! session is committed only when the whole file has been read and written, and aborted on
//! any error, so a failed import leaves the table as it was.

use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use paiio_storage::{
    ArrowOptions, CommitInfo, OdpsType, TableService, WriteMode, WriteRequest, WriteSessionRequest,
};

use crate::cli::Format;
use crate::error::{CliError, Result};
use crate::format;
use crate::input::{self, BatchSource, InputPlan, WriteColumn};
use crate::output::{Output, bytes_progress};
use crate::service::Target;

/// A write request carries this many parsed batches (unless the file ends first)...
const WRITE_CHUNK_BATCHES: usize = 8;
/// ...or at most this many rows...
const WRITE_CHUNK_MAX_ROWS: usize = 1 << 20;
/// ...or this many bytes of Arrow memory.
const WRITE_CHUNK_BYTES: usize = 96 << 20;

pub struct ImportArgs<'a> {
    pub uri: &'a str,
    pub file: &'a Path,
    pub format: Option<Format>,
    pub overwrite: bool,
    pub batch_rows: usize,
}

pub async fn run(
    service: Arc<dyn TableService>,
    out: &mut Output,
    args: ImportArgs<'_>,
) -> Result<()> {
    let target = Target::resolve(service.as_ref(), args.uri).await?;
    let format = format::resolve(args.file, args.format)?;
    let schema = &target.info.schema;
    let fixed = target.uri.partition.clone();
    // A static spec must give the levels in order, so the dynamic columns are the rest.
    for (i, key) in fixed.keys().enumerate() {
        let expected = &schema.partition_columns[i].name;
        if !key.eq_ignore_ascii_case(expected) {
            return Err(CliError::input(format!(
                "the partition in {} must name the levels in order: level {} is `{expected}`, \
                 not `{key}`",
                target.uri,
                i + 1
            )));
        }
    }
    check_partition_values(&target)?;
    let options = ArrowOptions::default();
    let mut columns: Vec<WriteColumn> = schema
        .columns
        .iter()
        .map(|c| WriteColumn::data(c, c.ty.to_arrow(&options)))
        .collect();
    columns.extend(
        schema
            .partition_columns
            .iter()
            .filter(|c| fixed.get(&c.name).is_none())
            .map(|c| WriteColumn::partition(c, c.ty.to_arrow(&options))),
    );
    // The partition columns the URI fixes, which the file may still carry (as an export of
    // the partition does) if every value is the fixed one.
    let fixed_columns = schema
        .partition_columns
        .iter()
        .filter(|c| fixed.get(&c.name).is_some())
        .map(|c| WriteColumn::partition(c, c.ty.to_arrow(&options)))
        .collect();
    let plan = InputPlan {
        path: args.file.to_path_buf(),
        format,
        columns,
        fixed: fixed.clone(),
        fixed_columns,
        table: target.uri.table.to_string(),
        batch_rows: args.batch_rows,
    };
    let size = std::fs::metadata(args.file).map(|m| m.len()).unwrap_or(0);
    let progress = bytes_progress(size, "importing");
    // Everything about the file that can be checked without parsing it is checked before
    // a session exists.
    let source = match input::open(&plan, progress.clone()) {
        Ok(source) => source,
        Err(e) => {
            progress.finish_and_clear();
            return Err(e);
        }
    };

    let table = target.uri.table.clone();
    let session = service
        .create_write_session(&WriteSessionRequest {
            table: table.clone(),
            partition: fixed,
            overwrite: args.overwrite,
            mode: WriteMode::Batch,
        })
        .await?;
    let chunk_rows = args
        .batch_rows
        .saturating_mul(WRITE_CHUNK_BATCHES)
        .min(WRITE_CHUNK_MAX_ROWS);
    let result = write_all(
        service.as_ref(),
        &session.session_id,
        &target,
        source,
        chunk_rows,
    )
    .await;
    progress.finish_and_clear();
    match result {
        Ok(info) => out.line(&format!(
            "imported {} rows into {} (version {})",
            info.rows, target.uri, info.version
        )),
        Err(e) => {
            if let Err(abort) = service
                .abort_write_session(&table, &session.session_id)
                .await
            {
                tracing::warn!("aborting write session {}: {abort}", session.session_id);
            }
            Err(e)
        }
    }
}

async fn write_all(
    service: &dyn TableService,
    session_id: &str,
    target: &Target,
    mut source: Box<dyn BatchSource>,
    chunk_rows: usize,
) -> Result<CommitInfo> {
    let table = &target.uri.table;
    let stream = service
        .create_write_stream(table, session_id, None, true)
        .await?;

    // The parser runs on a blocking thread, a few batches ahead of the writer.
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(4);
    let parser = tokio::task::spawn_blocking(move || {
        loop {
            let item = source.next_batch();
            let stop = !matches!(item, Ok(Some(_)));
            let item = match item {
                Ok(Some(batch)) => Ok(batch),
                Ok(None) => break,
                Err(e) => Err(e),
            };
            if sender.blocking_send(item).is_err() || stop {
                break;
            }
        }
    });

    let result = async {
        let mut next_offset = stream.row_offset;
        let mut pending: Vec<RecordBatch> = Vec::new();
        let (mut pending_rows, mut pending_bytes) = (0usize, 0usize);
        loop {
            let batch = receiver.recv().await.transpose()?;
            let end = batch.is_none();
            if let Some(batch) = batch {
                pending_rows += batch.num_rows();
                pending_bytes += batch.get_array_memory_size();
                pending.push(batch);
            }
            if !pending.is_empty()
                && (end || pending_rows >= chunk_rows || pending_bytes >= WRITE_CHUNK_BYTES)
            {
                let ack = service
                    .write(WriteRequest {
                        table: table.clone(),
                        session_id: session_id.to_string(),
                        stream_id: stream.stream_id.clone(),
                        version: stream.version,
                        row_offset: Some(next_offset),
                        access_token: Some(stream.access_token.clone()),
                        batches: std::mem::take(&mut pending),
                    })
                    .await?;
                next_offset = ack.next_row_offset;
                (pending_rows, pending_bytes) = (0, 0);
            }
            if end {
                break;
            }
        }
        service
            .close_write_stream(table, session_id, &stream.stream_id, stream.version)
            .await?;
        Ok(service
            .commit_write_session(table, session_id, None)
            .await?)
    }
    .await;
    // Stop the parser (it sees the closed channel) and wait for it.
    drop(receiver);
    if let Err(e) = parser.await
        && e.is_panic()
    {
        return Err(CliError::failure("the file parser failed unexpectedly"));
    }
    result
}

/// The partition values a URI fixes must be values of their columns' types, written
/// canonically (`7`, not `007` or `abc`, for an integer column), or the rows would land in
/// a partition whose value reads back as something else.
fn check_partition_values(target: &Target) -> Result<()> {
    let schema = &target.info.schema;
    for (key, value) in target.uri.partition.iter() {
        let Some(column) = schema
            .partition_columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(key))
        else {
            continue;
        };
        let bad = |why: String| {
            CliError::input(format!(
                "partition value {value:?} of `{}` in {}: {why}",
                column.name, target.uri
            ))
        };
        let range = match column.ty {
            OdpsType::TinyInt => Some((i64::from(i8::MIN), i64::from(i8::MAX))),
            OdpsType::SmallInt => Some((i64::from(i16::MIN), i64::from(i16::MAX))),
            OdpsType::Int => Some((i64::from(i32::MIN), i64::from(i32::MAX))),
            OdpsType::BigInt => Some((i64::MIN, i64::MAX)),
            _ => None,
        };
        if let Some((min, max)) = range {
            match value.parse::<i64>() {
                Ok(n) if n < min || n > max => {
                    return Err(bad(format!("out of range for {}", column.ty)));
                }
                Ok(n) if n.to_string() != value => {
                    return Err(bad(format!("write it as {n}")));
                }
                Ok(_) => {}
                Err(_) => return Err(bad(format!("not a valid {}", column.ty))),
            }
        }
        if let OdpsType::Varchar(n) | OdpsType::Char(n) = column.ty
            && value.chars().count() > n as usize
        {
            return Err(bad(format!("longer than {} allows", column.ty)));
        }
    }
    Ok(())
}

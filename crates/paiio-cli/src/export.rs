//! `paiio table export`: the rows of a table or partition (partition columns included)
//! to a CSV, JSON-lines or Arrow IPC file, written to a temporary file that replaces the
//! target only when everything was written.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, FieldRef, Float32Type, Float64Type, SchemaRef};
use arrow::error::ArrowError;
use arrow::json::writer::{Encoder, EncoderFactory, EncoderOptions, NullableEncoder};
use futures::StreamExt;
use paiio_storage::TableService;

use crate::cli::Format;
use crate::error::{CliError, Result};
use crate::format::{self, cannot_carry, csv_can_read, json_can_carry};
use crate::output::{Output, rows_progress};
use crate::read::FullRead;
use crate::service::Target;

pub async fn run(
    service: Arc<dyn TableService>,
    out: &mut Output,
    uri: &str,
    path: &Path,
    format: Option<Format>,
) -> Result<()> {
    let target = Target::resolve(service.as_ref(), uri).await?;
    let format = format::resolve(path, format)?;
    target.require_rows_source()?;
    let read = FullRead::plan(service, target).await?;
    for field in read.schema.fields() {
        let ty = || {
            read.target
                .info
                .schema
                .column(field.name())
                .map(|c| c.ty.to_string())
                .unwrap_or_else(|| field.data_type().to_string())
        };
        if format == Format::Csv && !csv_can_read(field.data_type()) {
            return Err(cannot_carry("CSV", field.name(), &ty(), "jsonl or arrow"));
        }
        if format == Format::Jsonl && !json_can_carry(field.data_type()) {
            return Err(cannot_carry("JSON lines", field.name(), &ty(), "arrow"));
        }
    }

    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".paiio-export-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Like any new file: 0666 less the umask.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let temp = builder
        .tempfile_in(&dir)
        .map_err(|e| CliError::file(path, "create", &e))?;
    let (file, temp_path) = temp.into_parts();
    let sink = Sink::new(
        format,
        format::is_arrow_stream_path(path),
        file,
        read.schema.clone(),
    )
    .map_err(|e| CliError::failure(format!("writing {}: {e}", path.display())))?;

    let progress = rows_progress(read.rows, "exporting");
    // Batches are encoded and written on a blocking thread while the next ones are read.
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<RecordBatch>(4);
    let writer = tokio::task::spawn_blocking({
        let progress = progress.clone();
        move || -> std::result::Result<Sink, ArrowError> {
            let mut sink = sink;
            while let Some(batch) = receiver.blocking_recv() {
                sink.write(&batch)?;
                progress.inc(batch.num_rows() as u64);
            }
            Ok(sink)
        }
    });
    let read_result: Result<u64> = async {
        let mut rows = 0u64;
        if read.rows > 0 {
            let mut stream = read.stream(0, read.rows).await?;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                if sender.send(batch).await.is_err() {
                    break;
                }
            }
        }
        Ok(rows)
    }
    .await;
    drop(sender);
    let written = writer
        .await
        .map_err(|_| CliError::failure("the file writer failed unexpectedly"))?;
    progress.finish_and_clear();
    let rows = read_result?;
    let sink =
        written.map_err(|e| CliError::failure(format!("writing {}: {e}", path.display())))?;
    let warnings = sink.warnings();
    sink.finish()
        .map_err(|e| CliError::failure(format!("writing {}: {e}", path.display())))?;
    if rows != read.rows {
        return Err(CliError::failure(format!(
            "read {rows} rows of {} but the read session has {}",
            read.target.uri, read.rows
        )));
    }
    temp_path
        .persist(path)
        .map_err(|e| CliError::file(path, "write", &e.error))?;
    for warning in warnings {
        eprintln!("paiio: warning: {warning}");
    }
    out.line(&format!(
        "exported {rows} rows of {} to {}",
        read.target.uri,
        path.display()
    ))
}

/// An open output file in one of the formats.
enum Sink {
    Csv {
        writer: arrow::csv::Writer<BufWriter<File>>,
        schema: SchemaRef,
        wrote: bool,
        /// Per column: empty (not NULL) strings written, which CSV cannot tell from NULL.
        empty_strings: Vec<u64>,
    },
    Json(arrow::json::LineDelimitedWriter<BufWriter<File>>),
    IpcFile(arrow::ipc::writer::FileWriter<BufWriter<File>>),
    IpcStream(arrow::ipc::writer::StreamWriter<BufWriter<File>>),
}

const WRITE_BUFFER: usize = 1 << 20;

impl Sink {
    fn new(
        format: Format,
        arrow_stream: bool,
        file: File,
        schema: SchemaRef,
    ) -> Result<Sink, ArrowError> {
        let out = BufWriter::with_capacity(WRITE_BUFFER, file);
        Ok(match format {
            Format::Csv => Sink::Csv {
                writer: arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(out),
                empty_strings: vec![0; schema.fields().len()],
                schema,
                wrote: false,
            },
            // Explicit nulls: a NULL map value must not vanish from its map.
            // Non-finite floats, which JSON numbers cannot be, as the strings "NaN", "inf"
            // and "-inf" (which import reads back).
            Format::Jsonl => Sink::Json(
                arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .with_encoder_factory(Arc::new(NonFiniteFloats))
                    .build::<_, arrow::json::writer::LineDelimited>(out),
            ),
            Format::Arrow if arrow_stream => {
                Sink::IpcStream(arrow::ipc::writer::StreamWriter::try_new(out, &schema)?)
            }
            Format::Arrow => Sink::IpcFile(arrow::ipc::writer::FileWriter::try_new(out, &schema)?),
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        match self {
            Sink::Csv {
                writer,
                wrote,
                empty_strings,
                ..
            } => {
                *wrote = true;
                for (count, column) in empty_strings.iter_mut().zip(batch.columns()) {
                    if let Some(strings) = column.as_string_opt::<i32>() {
                        let offsets = strings.value_offsets();
                        *count += (0..strings.len())
                            .filter(|&i| offsets[i] == offsets[i + 1] && strings.is_valid(i))
                            .count() as u64;
                    }
                }
                writer.write(batch)
            }
            Sink::Json(writer) => writer.write(batch),
            Sink::IpcFile(writer) => writer.write(batch),
            Sink::IpcStream(writer) => writer.write(batch),
        }
    }

    /// What the user should know about the file written (one line each).
    fn warnings(&self) -> Vec<String> {
        let Sink::Csv {
            schema,
            empty_strings,
            ..
        } = self
        else {
            return Vec::new();
        };
        schema
            .fields()
            .iter()
            .zip(empty_strings)
            .filter(|(_, count)| **count > 0)
            .map(|(field, count)| {
                format!(
                    "column `{}` has {count} empty strings, which CSV writes as empty fields and \
                     import reads as NULL (jsonl and arrow keep them)",
                    field.name()
                )
            })
            .collect()
    }

    /// Completes the file and syncs it to disk.
    fn finish(self) -> Result<(), ArrowError> {
        let out = match self {
            Sink::Csv {
                mut writer,
                schema,
                wrote,
                ..
            } => {
                if !wrote {
                    // The header row, for a table without rows.
                    writer.write(&RecordBatch::new_empty(schema))?;
                }
                writer.into_inner()
            }
            Sink::Json(mut writer) => {
                writer.finish()?;
                writer.into_inner()
            }
            Sink::IpcFile(mut writer) => {
                writer.finish()?;
                writer.into_inner()?
            }
            Sink::IpcStream(mut writer) => {
                writer.finish()?;
                writer.into_inner()?
            }
        };
        let file = out
            .into_inner()
            .map_err(|e| ArrowError::IoError(e.to_string(), e.into_error()))?;
        file.sync_all()?;
        Ok(())
    }
}

/// Encodes float arrays holding NaN or infinities with those values as JSON strings (every
/// other float as arrow-json would: the shortest text that reads back to the same value).
#[derive(Debug)]
struct NonFiniteFloats;

impl EncoderFactory for NonFiniteFloats {
    fn make_default_encoder<'a>(
        &self,
        _field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> Result<Option<NullableEncoder<'a>>, ArrowError> {
        let nulls = array.nulls().cloned();
        let valid = |i: usize| nulls.as_ref().is_none_or(|n| n.is_valid(i));
        let encoder: Box<dyn Encoder + 'a> = match array.data_type() {
            DataType::Float64 => {
                let values = array.as_primitive::<Float64Type>().values();
                if values
                    .iter()
                    .enumerate()
                    .all(|(i, v)| v.is_finite() || !valid(i))
                {
                    return Ok(None);
                }
                Box::new(FloatText(
                    values.iter().map(|v| float_text(*v, v.abs())).collect(),
                ))
            }
            DataType::Float32 => {
                let values = array.as_primitive::<Float32Type>().values();
                if values
                    .iter()
                    .enumerate()
                    .all(|(i, v)| v.is_finite() || !valid(i))
                {
                    return Ok(None);
                }
                Box::new(FloatText(
                    values
                        .iter()
                        .map(|v| float_text(*v, f64::from(v.abs())))
                        .collect(),
                ))
            }
            _ => return Ok(None),
        };
        Ok(Some(NullableEncoder::new(encoder, nulls)))
    }
}

/// JSON text of a float: a quoted string for NaN and infinities, else the shortest decimal
/// that reads back as the same value.
fn float_text<F: std::fmt::Display + std::fmt::LowerExp + Copy>(v: F, magnitude: f64) -> String {
    if magnitude.is_nan() {
        "\"NaN\"".to_string()
    } else if magnitude.is_infinite() {
        if format!("{v}").starts_with('-') {
            "\"-inf\"".to_string()
        } else {
            "\"inf\"".to_string()
        }
    } else if magnitude == 0.0 || (1e-6..1e17).contains(&magnitude) {
        let text = format!("{v}");
        if text.contains('.') {
            text
        } else {
            format!("{text}.0")
        }
    } else {
        format!("{v:e}")
    }
}

struct FloatText(Vec<String>);

impl Encoder for FloatText {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0[idx].as_bytes());
    }
}

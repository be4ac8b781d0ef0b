//! File formats: choosing one, and which column types each can carry.

use std::path::Path;

use arrow::datatypes::DataType;

use crate::cli::Format;
use crate::error::{CliError, Result};

/// The format given, else the one the file's extension names.
pub fn resolve(path: &Path, given: Option<Format>) -> Result<Format> {
    if let Some(format) = given {
        return Ok(format);
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "csv" => Ok(Format::Csv),
        "json" | "jsonl" | "ndjson" => Ok(Format::Jsonl),
        "arrow" | "arrows" | "ipc" | "feather" => Ok(Format::Arrow),
        _ => Err(CliError::input(format!(
            "cannot tell the format of {} from its extension (.csv, .json/.jsonl/.ndjson, \
             .arrow/.arrows/.ipc): give --format csv|jsonl|arrow",
            path.display()
        ))),
    }
}

/// Whether an Arrow IPC file should be written in the stream format (`.arrows`).
pub fn is_arrow_stream_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("arrows"))
}

/// Whether CSV import parses this Arrow type (the types arrow-csv reads).
pub fn csv_can_read(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
            | DataType::Utf8
            | DataType::Date32
            | DataType::Timestamp(..)
    )
}

/// Whether JSON lines carry this Arrow type both ways (arrow-json reads no intervals).
pub fn json_can_carry(data_type: &DataType) -> bool {
    match data_type {
        DataType::Interval(_) => false,
        DataType::List(field) | DataType::LargeList(field) | DataType::Map(field, _) => {
            json_can_carry(field.data_type())
        }
        DataType::Struct(fields) => fields.iter().all(|f| json_can_carry(f.data_type())),
        _ => true,
    }
}

/// The error for a column a format cannot carry.
pub fn cannot_carry(format: &str, column: &str, ty: &str, instead: &str) -> crate::error::CliError {
    CliError::input(format!(
        "{format} cannot carry column `{column}` of type {ty}: use --format {instead}"
    ))
}

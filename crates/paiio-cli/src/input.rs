//! Reading import files as Arrow batches in the table's column types, streaming.
//!
//! Every source delivers batches whose columns are the write schema's (the table's data
//! columns, then the partition columns the URI does not fix), in that order. CSV and JSON
//! are parsed straight into the target types; when parsing fails, the source looks the
//! failing batch up again to name the line, the column and the value.
//!
//! A file may also carry a partition column that the URI fixes (as `export` of a partition
//! writes it), provided every value is the URI's: those columns are checked and dropped.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchReader, StringArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use indicatif::ProgressBar;
use paiio_storage::ipc_guard;
use paiio_storage::types::MAX_TYPE_DEPTH;
use paiio_storage::{Column, OdpsType, PartitionSpec};

use crate::cli::Format;
use crate::error::{CliError, Result};
use crate::format::{cannot_carry, csv_can_read, json_can_carry};

/// One column the data must carry.
#[derive(Debug, Clone)]
pub struct WriteColumn {
    pub name: String,
    pub ty: OdpsType,
    /// The Arrow type the column is parsed into.
    pub data_type: DataType,
    /// Whether NULL is allowed (never for partition columns).
    pub nullable: bool,
    pub is_partition: bool,
}

impl WriteColumn {
    pub fn data(column: &Column, data_type: DataType) -> Self {
        WriteColumn {
            name: column.name.clone(),
            ty: column.ty.clone(),
            data_type,
            nullable: column.nullable,
            is_partition: false,
        }
    }

    pub fn partition(column: &Column, data_type: DataType) -> Self {
        WriteColumn {
            name: column.name.clone(),
            ty: column.ty.clone(),
            data_type,
            nullable: false,
            is_partition: true,
        }
    }
}

/// What to read and how it must come out.
#[derive(Debug, Clone)]
pub struct InputPlan {
    pub path: PathBuf,
    pub format: Format,
    /// The write schema: data columns, then the dynamic partition columns.
    pub columns: Vec<WriteColumn>,
    /// The partition the URI fixes.
    pub fixed: PartitionSpec,
    /// The partition columns the URI fixes, which the file may carry with the fixed values.
    pub fixed_columns: Vec<WriteColumn>,
    /// The table, for messages.
    pub table: String,
    pub batch_rows: usize,
}

impl InputPlan {
    /// The Arrow schema of the batches a source delivers.
    fn output_schema(&self, types: impl Fn(usize) -> DataType) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .enumerate()
                .map(|(i, c)| Field::new(&c.name, types(i), true))
                .collect::<Vec<_>>(),
        ))
    }

    /// A write column (`index` below `columns.len()`), or the fixed partition column
    /// `index - columns.len()`.
    fn column(&self, index: usize) -> &WriteColumn {
        match self.columns.get(index) {
            Some(column) => column,
            None => &self.fixed_columns[index - self.columns.len()],
        }
    }

    /// Checks a file's values of a fixed partition column: each must be the URI's value
    /// (a NULL too, unless `null_is_absent`, as for a key missing from a JSON line).
    /// `where_` names the row for messages.
    fn check_fixed(
        &self,
        column: &WriteColumn,
        array: &ArrayRef,
        null_is_absent: bool,
        where_: impl Fn(usize) -> String,
    ) -> Result<()> {
        let expected = self.fixed.get(&column.name).unwrap_or_default();
        let text = arrow::compute::cast(array, &DataType::Utf8).map_err(|e| {
            CliError::input(format!(
                "{}: column `{}`: {}",
                self.path.display(),
                column.name,
                arrow_message(&e)
            ))
        })?;
        let text = text.as_string::<i32>();
        for row in 0..text.len() {
            let value = if text.is_null(row) {
                if null_is_absent {
                    continue;
                }
                "NULL".to_string()
            } else if text.value(row) == expected {
                continue;
            } else {
                format!("{:?}", text.value(row))
            };
            return Err(CliError::input(format!(
                "{}: partition column `{}` has the value {value}, but the URI fixes {}={expected}: \
                 every row of a file imported into a partition must belong to it",
                where_(row),
                column.name,
                column.name
            )));
        }
        Ok(())
    }

    /// For each file column, the column it feeds: a write column, or a fixed partition
    /// column (see [`column`](Self::column)). Every file column must be one of them and
    /// every write column must be in the file.
    fn match_columns(&self, file_columns: &[String]) -> Result<Vec<usize>> {
        let file = self.path.display();
        let mut mapping = Vec::with_capacity(file_columns.len());
        for (i, name) in file_columns.iter().enumerate() {
            let trimmed = name.trim();
            if file_columns[..i]
                .iter()
                .any(|other| other.trim().eq_ignore_ascii_case(trimmed))
            {
                return Err(CliError::input(format!(
                    "{file} has the column `{trimmed}` twice"
                )));
            }
            let written = self
                .columns
                .iter()
                .position(|c| c.name.eq_ignore_ascii_case(trimmed));
            let fixed = self
                .fixed_columns
                .iter()
                .position(|c| c.name.eq_ignore_ascii_case(trimmed));
            match (written, fixed) {
                (Some(index), _) => mapping.push(index),
                (None, Some(k)) => mapping.push(self.columns.len() + k),
                (None, None) => {
                    let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
                    return Err(CliError::input(format!(
                        "{file} has the column `{trimmed}`, which table {} does not have \
                         (expected columns: {})",
                        self.table,
                        names.join(", ")
                    )));
                }
            }
        }
        for (index, column) in self.columns.iter().enumerate() {
            if !mapping.contains(&index) {
                return Err(CliError::input(if column.is_partition {
                    format!(
                        "{file} has no column `{}`: name the partition in the URI \
                         (.../{}=VALUE) or add the column to the file",
                        column.name, column.name
                    )
                } else {
                    format!(
                        "{file} has no column `{}` of table {}",
                        column.name, self.table
                    )
                }));
            }
        }
        Ok(mapping)
    }
}

/// A source of batches in the write schema.
pub trait BatchSource: Send {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>>;
}

/// Opens the file and checks its columns against the plan; nothing is parsed yet beyond
/// a header or a schema.
pub fn open(plan: &InputPlan, progress: ProgressBar) -> Result<Box<dyn BatchSource>> {
    let file = File::open(&plan.path).map_err(|e| CliError::file(&plan.path, "open", &e))?;
    let meta = file
        .metadata()
        .map_err(|e| CliError::file(&plan.path, "read", &e))?;
    if meta.is_dir() {
        return Err(CliError::input(format!(
            "cannot read {}: it is a directory",
            plan.path.display()
        )));
    }
    match plan.format {
        Format::Csv => Ok(Box::new(CsvSource::open(plan, file, progress)?)),
        Format::Jsonl => Ok(Box::new(JsonSource::open(plan, file, progress)?)),
        Format::Arrow => Ok(Box::new(ArrowSource::open(plan, file, progress)?)),
    }
}

/// A reader that reports how far into the file it is.
struct Counting<R> {
    inner: R,
    position: u64,
    progress: ProgressBar,
}

impl<R> Counting<R> {
    fn new(inner: R, position: u64, progress: ProgressBar) -> Self {
        progress.set_position(position);
        Counting {
            inner,
            position,
            progress,
        }
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.position += n as u64;
        self.progress.set_position(self.position);
        Ok(n)
    }
}

impl<R: Seek> Seek for Counting<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.position = self.inner.seek(pos)?;
        self.progress.set_position(self.position);
        Ok(self.position)
    }
}

const READ_BUFFER: usize = 1 << 20;

fn read_error(path: &Path, e: std::io::Error) -> CliError {
    CliError::file(path, "read", &e)
}

/// Arrow's message without its "Parser error: " style prefix.
fn arrow_message(error: &ArrowError) -> String {
    let text = error.to_string();
    for prefix in [
        "Parser error: ",
        "Json error: ",
        "Csv error: ",
        "Cast error: ",
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    text
}

/// The first NULL in a column that must not have one: (row in batch, column index).
fn first_forbidden_null(batch: &RecordBatch, columns: &[WriteColumn]) -> Option<(usize, usize)> {
    let mut found: Option<(usize, usize)> = None;
    for (index, column) in columns.iter().enumerate() {
        if column.nullable {
            continue;
        }
        let array = batch.column(index);
        if array.null_count() == 0 {
            continue;
        }
        if let Some(row) = (0..array.len()).find(|&row| array.is_null(row))
            && found.is_none_or(|(r, _)| row < r)
        {
            found = Some((row, index));
        }
    }
    found
}

fn forbidden_null_message(where_: &str, column: &WriteColumn) -> String {
    if column.is_partition {
        format!(
            "{where_}: partition column `{}` has no value (a partition value must not be empty)",
            column.name
        )
    } else {
        format!(
            "{where_}: column `{}` is NOT NULL but has no value",
            column.name
        )
    }
}

// ---------------------------------------------------------------- CSV

struct CsvSource {
    plan: InputPlan,
    reader: BufReader<Counting<File>>,
    decoder: arrow::csv::reader::Decoder,
    schema: SchemaRef,
    /// For each file column, the column it feeds (see [`InputPlan::column`]).
    mapping: Vec<usize>,
    /// The fixed partition columns the file carries, in the order the decoder delivers
    /// them (after the write columns).
    fixed_in_file: Vec<usize>,
    /// Data records delivered so far.
    rows_before: u64,
}

impl CsvSource {
    fn open(plan: &InputPlan, file: File, progress: ProgressBar) -> Result<Self> {
        let path = &plan.path;
        let mut header_reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(BufReader::new(
                file.try_clone().map_err(|e| read_error(path, e))?,
            ));
        let header: Vec<String> = header_reader
            .headers()
            .map_err(|e| {
                CliError::input(format!(
                    "cannot read the header row of {}: {e}",
                    path.display()
                ))
            })?
            .iter()
            .enumerate()
            .map(|(i, h)| {
                if i == 0 {
                    h.trim_start_matches('\u{feff}').to_string()
                } else {
                    h.to_string()
                }
            })
            .collect();
        if header.is_empty() || (header.len() == 1 && header[0].trim().is_empty()) {
            return Err(CliError::input(format!(
                "{} is empty: a CSV file needs a header row naming its columns",
                path.display()
            )));
        }
        let data_start = header_reader.position().byte();
        drop(header_reader);
        let mapping = plan.match_columns(&header)?;
        for &w in &mapping {
            let column = plan.column(w);
            if !csv_can_read(&column.data_type) {
                return Err(cannot_carry(
                    "CSV",
                    &column.name,
                    &column.ty.to_string(),
                    "jsonl or arrow",
                ));
            }
        }
        let file_schema = Arc::new(Schema::new(
            header
                .iter()
                .zip(&mapping)
                .map(|(name, &w)| Field::new(name.trim(), plan.column(w).data_type.clone(), true))
                .collect::<Vec<_>>(),
        ));
        // Deliver the columns in write order, then the fixed partition columns in the file.
        let fixed_in_file: Vec<usize> = (0..plan.fixed_columns.len())
            .filter(|k| mapping.contains(&(plan.columns.len() + k)))
            .collect();
        let projection: Vec<usize> = (0..plan.columns.len())
            .chain(fixed_in_file.iter().map(|k| plan.columns.len() + k))
            .map(|w| mapping.iter().position(|&m| m == w).unwrap_or_default())
            .collect();
        let decoder = arrow::csv::ReaderBuilder::new(file_schema)
            .with_header(false)
            .with_batch_size(plan.batch_rows)
            .with_projection(projection)
            .build_decoder();
        let mut file = file;
        file.seek(SeekFrom::Start(data_start))
            .map_err(|e| read_error(path, e))?;
        let reader =
            BufReader::with_capacity(READ_BUFFER, Counting::new(file, data_start, progress));
        let schema = plan.output_schema(|i| plan.columns[i].data_type.clone());
        Ok(CsvSource {
            plan: plan.clone(),
            reader,
            decoder,
            schema,
            mapping,
            fixed_in_file,
            rows_before: 0,
        })
    }

    fn read_batch(&mut self) -> std::result::Result<Option<RecordBatch>, ReadFailure> {
        loop {
            let buf = self.reader.fill_buf().map_err(ReadFailure::Io)?;
            let decoded = self.decoder.decode(buf).map_err(ReadFailure::Arrow)?;
            self.reader.consume(decoded);
            if decoded == 0 || self.decoder.capacity() == 0 {
                break;
            }
        }
        self.decoder.flush().map_err(ReadFailure::Arrow)
    }

    /// Scans the file again for data records `[first, first + count)`, calling `visit`
    /// with each record's index, line and fields. Stops early when `visit` returns false.
    fn scan(
        &self,
        first: u64,
        count: u64,
        mut visit: impl FnMut(u64, u64, &csv::ByteRecord) -> bool,
    ) -> Option<()> {
        let file = File::open(&self.plan.path).ok()?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(BufReader::with_capacity(READ_BUFFER, file));
        let mut record = csv::ByteRecord::new();
        let mut index = 0u64;
        while index < first.saturating_add(count) {
            if !reader.read_byte_record(&mut record).ok()? {
                break;
            }
            if index >= first {
                let line = record.position().map(|p| p.line()).unwrap_or(0);
                if !visit(index, line, &record) {
                    break;
                }
            }
            index += 1;
        }
        Some(())
    }

    fn line_of(&self, index: u64) -> String {
        let mut line = None;
        self.scan(index, 1, |_, l, _| {
            line = Some(l);
            false
        });
        match line {
            Some(l) => format!("{} line {l}", self.plan.path.display()),
            None => format!("{} data row {}", self.plan.path.display(), index + 1),
        }
    }

    /// Finds the first record of the failed batch that does not parse, and says why.
    fn diagnose(&self, error: &ArrowError) -> CliError {
        let path = self.plan.path.display().to_string();
        let columns: Vec<&WriteColumn> =
            self.mapping.iter().map(|&w| self.plan.column(w)).collect();
        let first = self.rows_before;
        let count = self.plan.batch_rows as u64 + 1;
        let mut lines: Vec<u64> = Vec::new();
        let mut values: Vec<Vec<Option<String>>> = vec![Vec::new(); columns.len()];
        let mut problem: Option<String> = None;
        self.scan(first, count, |_, line, record| {
            if record.len() != columns.len() {
                problem = Some(format!(
                    "{path} line {line}: expected {} fields as in the header row, found {}",
                    columns.len(),
                    record.len()
                ));
                return false;
            }
            for (i, field) in record.iter().enumerate() {
                match std::str::from_utf8(field) {
                    Ok("") => values[i].push(None),
                    Ok(text) => values[i].push(Some(text.to_string())),
                    Err(_) => {
                        problem = Some(format!(
                            "{path} line {line}: the value of column `{}` is not valid UTF-8",
                            columns[i].name
                        ));
                        return false;
                    }
                }
            }
            lines.push(line);
            true
        });
        // The earliest bad value among the records before any structural problem.
        let mut bad: Option<(usize, usize)> = None;
        for (c, column) in columns.iter().enumerate() {
            if let Some(row) = first_unparsable(&values[c], &column.data_type)
                && bad.is_none_or(|(r, _)| row < r)
            {
                bad = Some((row, c));
            }
        }
        if let Some((row, c)) = bad {
            let value = values[c][row].as_deref().unwrap_or_default();
            return CliError::input(format!(
                "{path} line {}: value {value:?} of column `{}` is not a valid {}",
                lines[row], columns[c].name, columns[c].ty
            ));
        }
        if let Some(problem) = problem {
            return CliError::input(problem);
        }
        let mut message = arrow_message(error);
        // arrow-csv names columns by position in the file.
        for (i, column) in columns.iter().enumerate().rev() {
            message = message.replace(
                &format!("for column {i} "),
                &format!("for column `{}` ", column.name),
            );
            message = message.replace(
                &format!("column {i} at"),
                &format!("column `{}` at", column.name),
            );
        }
        CliError::input(format!("{path}: {message}"))
    }
}

/// The first index whose text does not parse as `data_type`.
fn first_unparsable(values: &[Option<String>], data_type: &DataType) -> Option<usize> {
    if values.is_empty() {
        return None;
    }
    if *data_type == DataType::Boolean {
        return values.iter().position(|v| {
            v.as_deref().is_some_and(|v| {
                !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false")
            })
        });
    }
    if *data_type == DataType::Utf8 {
        return None;
    }
    let text = StringArray::from(values.to_vec());
    let options = CastOptions {
        safe: true,
        ..Default::default()
    };
    match cast_with_options(&text, data_type, &options) {
        Ok(parsed) => (0..values.len()).find(|&i| text.is_valid(i) && parsed.is_null(i)),
        Err(_) => values.iter().position(Option::is_some),
    }
}

enum ReadFailure {
    Io(std::io::Error),
    Arrow(ArrowError),
    /// A JSON value nested deeper than [`MAX_JSON_DEPTH`], on this line.
    TooDeep(u64),
}

impl BatchSource for CsvSource {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let batch = match self.read_batch() {
            Ok(Some(batch)) => batch,
            Ok(None) => return Ok(None),
            Err(ReadFailure::Io(e)) => return Err(read_error(&self.plan.path, e)),
            Err(ReadFailure::Arrow(e)) => return Err(self.diagnose(&e)),
            Err(ReadFailure::TooDeep(line)) => return Err(too_deep(&self.plan.path, line)),
        };
        let written = self.plan.columns.len();
        for (i, &k) in self.fixed_in_file.iter().enumerate() {
            let column = &self.plan.fixed_columns[k];
            self.plan
                .check_fixed(column, batch.column(written + i), false, |row| {
                    self.line_of(self.rows_before + row as u64)
                })?;
        }
        let batch = RecordBatch::try_new(self.schema.clone(), batch.columns()[..written].to_vec())
            .map_err(|e| CliError::failure(format!("{}: {e}", self.plan.path.display())))?;
        if let Some((row, column)) = first_forbidden_null(&batch, &self.plan.columns) {
            let where_ = self.line_of(self.rows_before + row as u64);
            return Err(CliError::input(forbidden_null_message(
                &where_,
                &self.plan.columns[column],
            )));
        }
        self.rows_before += batch.num_rows() as u64;
        Ok(Some(batch))
    }
}

// ---------------------------------------------------------------- JSON lines

/// How deeply JSON arrays and objects may nest in one line: the row object, and one level
/// for each level of ARRAY, MAP and STRUCT a column type may have. A deeper value cannot
/// fit any column, and is refused before arrow-json sees it (its error messages recurse
/// over the value, so a value thousands of levels deep would exhaust the stack).
const MAX_JSON_DEPTH: usize = MAX_TYPE_DEPTH + 1;

/// Follows the nesting of JSON arrays and objects through the bytes of a file, without
/// parsing them, in pieces of any size.
#[derive(Default)]
struct JsonDepth {
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Line breaks seen so far.
    lines: u64,
}

impl JsonDepth {
    /// Scans the next bytes; a value nested deeper than [`MAX_JSON_DEPTH`] is an error
    /// carrying its line number (1-based).
    fn scan(&mut self, bytes: &[u8]) -> std::result::Result<(), u64> {
        for &b in bytes {
            if b == b'\n' {
                self.lines += 1;
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'[' | b'{' => {
                    self.depth += 1;
                    if self.depth > MAX_JSON_DEPTH {
                        return Err(self.lines + 1);
                    }
                }
                b']' | b'}' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
        Ok(())
    }
}

fn too_deep(path: &Path, line: u64) -> CliError {
    CliError::input(format!(
        "{} line {line}: the value nests JSON arrays and objects more than {MAX_JSON_DEPTH} levels \
         deep, which no column can hold (types nest at most {MAX_TYPE_DEPTH} levels)",
        path.display()
    ))
}

struct JsonSource {
    plan: InputPlan,
    reader: BufReader<Counting<File>>,
    decoder: arrow::json::reader::Decoder,
    /// The batches delivered: the write columns.
    schema: SchemaRef,
    /// The batches decoded: the write columns, then the fixed partition columns, whose
    /// keys a line may have.
    decoded_schema: SchemaRef,
    /// The nesting of the bytes scanned so far.
    depth: JsonDepth,
    /// File offsets up to which the bytes were scanned, and handed to the decoder.
    scanned: u64,
    decoded: u64,
    rows_before: u64,
}

impl JsonSource {
    fn open(plan: &InputPlan, file: File, progress: ProgressBar) -> Result<Self> {
        if let Some(column) = plan.columns.iter().find(|c| !json_can_carry(&c.data_type)) {
            return Err(cannot_carry(
                "JSON lines",
                &column.name,
                &column.ty.to_string(),
                "arrow",
            ));
        }
        let schema = plan.output_schema(|i| plan.columns[i].data_type.clone());
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(
            plan.fixed_columns
                .iter()
                .map(|c| Field::new(&c.name, c.data_type.clone(), true)),
        );
        let decoded_schema = Arc::new(Schema::new(fields));
        let decoder = Self::decoder(&decoded_schema, plan.batch_rows)?;
        let reader = BufReader::with_capacity(READ_BUFFER, Counting::new(file, 0, progress));
        Ok(JsonSource {
            plan: plan.clone(),
            reader,
            decoder,
            schema,
            decoded_schema,
            depth: JsonDepth::default(),
            scanned: 0,
            decoded: 0,
            rows_before: 0,
        })
    }

    fn decoder(schema: &SchemaRef, batch_rows: usize) -> Result<arrow::json::reader::Decoder> {
        arrow::json::ReaderBuilder::new(schema.clone())
            .with_batch_size(batch_rows)
            .with_strict_mode(true)
            .build_decoder()
            .map_err(|e| CliError::failure(format!("JSON reader: {e}")))
    }

    fn read_batch(&mut self) -> std::result::Result<Option<RecordBatch>, ReadFailure> {
        loop {
            let buf = self.reader.fill_buf().map_err(ReadFailure::Io)?;
            if buf.is_empty() {
                break;
            }
            let read = buf.len();
            // Bytes the decoder left unread come back in the next buffer: scan only the new.
            let new =
                usize::try_from(self.scanned - self.decoded).map_or(read, |seen| seen.min(read));
            self.depth.scan(&buf[new..]).map_err(ReadFailure::TooDeep)?;
            self.scanned = self.decoded + read as u64;
            let decoded = self.decoder.decode(buf).map_err(ReadFailure::Arrow)?;
            self.reader.consume(decoded);
            self.decoded += decoded as u64;
            if decoded != read {
                break;
            }
        }
        self.decoder.flush().map_err(ReadFailure::Arrow)
    }

    /// Scans the non-blank lines of the file from value `first` on, calling `visit` with
    /// each value's index, line number and text; stops when `visit` returns false.
    fn scan(&self, first: u64, count: u64, mut visit: impl FnMut(u64, u64, &[u8]) -> bool) {
        let Ok(file) = File::open(&self.plan.path) else {
            return;
        };
        let mut reader = BufReader::with_capacity(READ_BUFFER, file);
        let mut line = Vec::new();
        let (mut number, mut index) = (0u64, 0u64);
        while index < first.saturating_add(count) {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            number += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if index >= first && !visit(index, number, &line) {
                break;
            }
            index += 1;
        }
    }

    fn line_of(&self, index: u64) -> String {
        let mut found = None;
        self.scan(index, 1, |_, number, _| {
            found = Some(number);
            false
        });
        match found {
            Some(l) => format!("{} line {l}", self.plan.path.display()),
            None => format!("{} value {}", self.plan.path.display(), index + 1),
        }
    }

    fn diagnose(&self, error: &ArrowError) -> CliError {
        let path = self.plan.path.display().to_string();
        let mut problem = None;
        self.scan(
            self.rows_before,
            self.plan.batch_rows as u64 + 1,
            |_, number, text| {
                if JsonDepth::default().scan(text).is_err() {
                    problem = Some(too_deep(&self.plan.path, number).to_string());
                    return false;
                }
                let Ok(mut decoder) = Self::decoder(&self.decoded_schema, 1) else {
                    return false;
                };
                let result = decoder.decode(text).and_then(|_| decoder.flush());
                match result {
                    Ok(_) => true,
                    Err(e) => {
                        let mut message = json_message(&e);
                        if !message.contains("column `")
                            && let Some(name) = self.failing_column(text)
                        {
                            message = format!("column `{name}`: {message}");
                        }
                        problem = Some(format!("{path} line {number}: {message}"));
                        false
                    }
                }
            },
        );
        CliError::input(problem.unwrap_or_else(|| format!("{path}: {}", json_message(error))))
    }
}

/// arrow-json's message, with `column` wording.
fn json_message(error: &ArrowError) -> String {
    let message = arrow_message(error);
    if let Some(rest) = message.strip_prefix("column '")
        && let Some(name) = rest.strip_suffix("' missing from schema")
    {
        return format!("the key `{name}` is not a column to import");
    }
    let mut out = message.clone();
    while let Some(start) = out.find("whilst decoding field '") {
        let after = &out[start + "whilst decoding field '".len()..];
        let Some(end) = after.find("': ") else { break };
        let name = after[..end].to_string();
        let rest = after[end + 3..].to_string();
        out = format!("{}column `{name}`: {rest}", &out[..start]);
    }
    out
}

impl JsonSource {
    /// The first column whose value in this JSON text does not decode on its own.
    fn failing_column(&self, text: &[u8]) -> Option<String> {
        for field in self.decoded_schema.fields() {
            let schema = Arc::new(Schema::new(vec![field.as_ref().clone()]));
            let Ok(mut decoder) = arrow::json::ReaderBuilder::new(schema)
                .with_batch_size(1)
                .build_decoder()
            else {
                continue;
            };
            if decoder.decode(text).and_then(|_| decoder.flush()).is_err() {
                return Some(field.name().clone());
            }
        }
        None
    }
}

impl BatchSource for JsonSource {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let batch = match self.read_batch() {
            Ok(Some(batch)) => batch,
            Ok(None) => return Ok(None),
            Err(ReadFailure::Io(e)) => return Err(read_error(&self.plan.path, e)),
            Err(ReadFailure::Arrow(e)) => return Err(self.diagnose(&e)),
            Err(ReadFailure::TooDeep(line)) => return Err(too_deep(&self.plan.path, line)),
        };
        let written = self.plan.columns.len();
        for (k, column) in self.plan.fixed_columns.iter().enumerate() {
            self.plan
                .check_fixed(column, batch.column(written + k), true, |row| {
                    self.line_of(self.rows_before + row as u64)
                })?;
        }
        let batch = RecordBatch::try_new(self.schema.clone(), batch.columns()[..written].to_vec())
            .map_err(|e| CliError::failure(format!("{}: {e}", self.plan.path.display())))?;
        if let Some((row, column)) = first_forbidden_null(&batch, &self.plan.columns) {
            let where_ = self.line_of(self.rows_before + row as u64);
            return Err(CliError::input(forbidden_null_message(
                &where_,
                &self.plan.columns[column],
            )));
        }
        self.rows_before += batch.num_rows() as u64;
        Ok(Some(batch))
    }
}

// ---------------------------------------------------------------- Arrow IPC

/// What one message of an imported Arrow IPC file may declare: 2 GiB decoded and 2^31 rows
/// per batch, no cap on the whole file (it is streamed batch by batch).
const IMPORT_IPC_LIMITS: ipc_guard::IpcLimits = ipc_guard::IpcLimits::RESPONSE;

struct ArrowSource {
    plan: InputPlan,
    reader: Box<dyn RecordBatchReader + Send>,
    schema: SchemaRef,
    /// For each write column, the file column it comes from.
    sources: Vec<usize>,
    /// The fixed partition columns the file carries, and the file column of each.
    fixed_sources: Vec<(usize, usize)>,
    rows_before: u64,
}

impl ArrowSource {
    fn open(plan: &InputPlan, mut file: File, progress: ProgressBar) -> Result<Self> {
        let path = &plan.path;
        let mut magic = [0u8; 6];
        let is_file_format = match file.read_exact(&mut magic) {
            Ok(()) => &magic == b"ARROW1",
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
            Err(e) => return Err(read_error(path, e)),
        };
        let what = path.display().to_string();
        let refused = |e: ipc_guard::IpcGuardError| CliError::input(format!("refusing {e}"));
        if is_file_format {
            // The footer points at every message the reader will decode: check them first.
            ipc_guard::check_file(&mut file, &what, IMPORT_IPC_LIMITS).map_err(refused)?;
        }
        file.seek(SeekFrom::Start(0))
            .map_err(|e| read_error(path, e))?;
        let counting = Counting::new(file, 0, progress);
        let bad = |e: ArrowError| {
            CliError::input(format!(
                "{} is not a readable Arrow IPC file: {}",
                path.display(),
                arrow_message(&e)
            ))
        };
        let reader: Box<dyn RecordBatchReader + Send> = if is_file_format {
            Box::new(arrow::ipc::reader::FileReader::try_new_buffered(counting, None).map_err(bad)?)
        } else {
            // Each message is checked as it is read, before the reader decodes it.
            let guard = ipc_guard::IpcStreamGuard::new(what, IMPORT_IPC_LIMITS);
            let guarded = ipc_guard::GuardedReader::new(counting, guard);
            Box::new(
                arrow::ipc::reader::StreamReader::try_new_buffered(guarded, None).map_err(bad)?,
            )
        };
        let file_schema = reader.schema();
        let names: Vec<String> = file_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let mapping = plan.match_columns(&names)?;
        let mut sources = vec![0usize; plan.columns.len()];
        let mut fixed_sources = Vec::new();
        for (f, &w) in mapping.iter().enumerate() {
            match sources.get_mut(w) {
                Some(source) => *source = f,
                None => fixed_sources.push((w - plan.columns.len(), f)),
            }
            let column = plan.column(w);
            let data_type = file_schema.field(f).data_type();
            let ok = column.ty.arrow_compatible(data_type)
                || (column.is_partition
                    && matches!(data_type, DataType::Utf8 | DataType::LargeUtf8));
            if !ok {
                return Err(CliError::input(format!(
                    "{}: column `{}` has Arrow type {data_type}, which a column of type {} cannot take",
                    path.display(),
                    column.name,
                    column.ty
                )));
            }
        }
        let schema = plan.output_schema(|w| {
            let column = &plan.columns[w];
            if column.is_partition {
                column.data_type.clone()
            } else {
                file_schema.field(sources[w]).data_type().clone()
            }
        });
        Ok(ArrowSource {
            plan: plan.clone(),
            reader,
            schema,
            sources,
            fixed_sources,
            rows_before: 0,
        })
    }
}

impl ArrowSource {
    /// Partition values of another Arrow type (text) converted to the column's type.
    fn partition_values(&self, column: &WriteColumn, array: &ArrayRef) -> Result<ArrayRef> {
        let options = CastOptions {
            safe: true,
            ..Default::default()
        };
        let cast = cast_with_options(array, &column.data_type, &options).map_err(|e| {
            CliError::input(format!(
                "{}: column `{}`: {}",
                self.plan.path.display(),
                column.name,
                arrow_message(&e)
            ))
        })?;
        let text = arrow::compute::cast(array, &DataType::Utf8).ok();
        let text = text.as_ref().map(|t| t.as_string::<i32>());
        for row in 0..array.len() {
            let canonical = cast.is_valid(row)
                && text.is_none_or(|t| {
                    arrow::util::display::array_value_to_string(&cast, row)
                        .ok()
                        .as_deref()
                        == Some(t.value(row))
                });
            if array.is_valid(row) && !canonical {
                let value = text.map(|t| t.value(row).to_string()).unwrap_or_default();
                return Err(CliError::input(format!(
                    "{} row {}: partition value {value:?} of column `{}` is not a valid {} \
                     (integers are written as in 7 or -7)",
                    self.plan.path.display(),
                    self.rows_before + row as u64 + 1,
                    column.name,
                    column.ty
                )));
            }
        }
        Ok(cast)
    }
}

impl BatchSource for ArrowSource {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            let batch = match self.reader.next() {
                None => return Ok(None),
                Some(Ok(batch)) => batch,
                Some(Err(e)) => {
                    return Err(CliError::input(format!(
                        "{}: {}",
                        self.plan.path.display(),
                        arrow_message(&e)
                    )));
                }
            };
            if batch.num_rows() == 0 {
                continue;
            }
            for &(k, f) in &self.fixed_sources {
                let path = self.plan.path.display();
                self.plan.check_fixed(
                    &self.plan.fixed_columns[k],
                    batch.column(f),
                    false,
                    |row| format!("{path} row {}", self.rows_before + row as u64 + 1),
                )?;
            }
            let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.sources.len());
            for (column, &f) in self.plan.columns.iter().zip(&self.sources) {
                let array = batch.column(f).clone();
                if column.is_partition && array.data_type() != &column.data_type {
                    // Partition values as text: they must be values of the column's type.
                    columns.push(self.partition_values(column, &array)?);
                } else {
                    columns.push(array);
                }
            }
            let batch = RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| {
                CliError::input(format!(
                    "{}: {}",
                    self.plan.path.display(),
                    arrow_message(&e)
                ))
            })?;
            if let Some((row, column)) = first_forbidden_null(&batch, &self.plan.columns) {
                let where_ = format!(
                    "{} row {}",
                    self.plan.path.display(),
                    self.rows_before + row as u64 + 1
                );
                return Err(CliError::input(forbidden_null_message(
                    &where_,
                    &self.plan.columns[column],
                )));
            }
            self.rows_before += batch.num_rows() as u64;
            return Ok(Some(batch));
        }
    }
}

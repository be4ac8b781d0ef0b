//! Data files: Arrow IPC files with LZ4 or ZSTD body compression, and a reader over a row
//! range that spans files.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use arrow_buffer::Buffer;
use arrow_ipc::CompressionType;
use arrow_ipc::reader::{FileDecoder, read_footer_length};
use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
use arrow_schema::{DataType, Field, SchemaRef};

use super::manifest::DataFile;
use crate::error::{Error, ObjectKind, Result};
use crate::uri::PartitionSpec;

/// Body compression of the warehouse's data files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileCompression {
    None,
    #[default]
    Lz4,
    Zstd,
}

impl FileCompression {
    fn ipc(self) -> Option<CompressionType> {
        match self {
            FileCompression::None => None,
            FileCompression::Lz4 => Some(CompressionType::LZ4_FRAME),
            FileCompression::Zstd => Some(CompressionType::ZSTD),
        }
    }
}

/// The most rows stored in one record batch of a data file. A reader seeks by batch and holds
/// one decoded batch per open stream, so this bounds a stream's memory (about 1 MB for typical
/// rows; a server with 1,000 open streams stays near 1 GB).
pub(crate) const MAX_STORED_BATCH_ROWS: usize = 8 * 1024;

/// Writes `batches` (all of `schema`) to a new file `table_dir/rel_path`, synced.
pub(crate) fn write_data_file(
    table_dir: &Path,
    rel_path: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    compression: FileCompression,
) -> Result<DataFile> {
    let path = table_dir.join(rel_path);
    if !table_dir.join(super::manifest::MANIFEST_DIR).is_dir() {
        return Err(Error::not_found(
            ObjectKind::Table,
            format!("{} (dropped)", table_dir.display()),
        ));
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let file = File::create_new(&path).map_err(|e| Error::io(&path, e))?;
    // A file that could not be written whole (a full disk, a killed request) is removed at
    // once: nothing will ever name it, and it would keep the disk full.
    let written = write_batches(file, &path, rel_path, schema, batches, compression);
    if written.is_err() {
        let _ = fs::remove_file(&path);
    }
    written
}

fn write_batches(
    file: File,
    path: &Path,
    rel_path: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    compression: FileCompression,
) -> Result<DataFile> {
    let options = IpcWriteOptions::default()
        .try_with_compression(compression.ipc())
        .map_err(|e| Error::arrow("write options", e))?;
    let mut writer = FileWriter::try_new_with_options(BufWriter::new(file), schema, options)
        .map_err(|e| Error::arrow(path.display().to_string(), e))?;
    let mut batch_rows = Vec::new();
    let mut raw_bytes = 0u64;
    for batch in batches {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = MAX_STORED_BATCH_ROWS.min(batch.num_rows() - offset);
            let piece = batch.slice(offset, len);
            // The bytes of the slice itself: a slice's `get_array_memory_size` counts the
            // whole batch it was cut from, each time.
            raw_bytes += piece
                .columns()
                .iter()
                .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0) as u64)
                .sum::<u64>();
            writer
                .write(&piece)
                .map_err(|e| Error::arrow(path.display().to_string(), e))?;
            batch_rows.push(len as u64);
            offset += len;
        }
    }
    writer
        .finish()
        .map_err(|e| Error::arrow(path.display().to_string(), e))?;
    let buf = writer
        .into_inner()
        .map_err(|e| Error::arrow(path.display().to_string(), e))?;
    let file = buf
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(path, e))?;
    if let Some(parent) = path.parent() {
        // The directory entry must be durable before a manifest names the file.
        super::manifest::sync_dir(parent)?;
    }
    let bytes = file.metadata().map_err(|e| Error::io(path, e))?.len();
    Ok(DataFile {
        path: rel_path.to_string(),
        rows: batch_rows.iter().sum(),
        bytes,
        raw_bytes,
        batch_rows,
    })
}

/// A contiguous run of rows inside one data file.
#[derive(Debug, Clone)]
pub(crate) struct Piece {
    pub path: PathBuf,
    pub partition: PartitionSpec,
    pub batch_rows: Vec<u64>,
    /// First row within the file.
    pub start: u64,
    /// Rows to take.
    pub len: u64,
}

/// How output batches are shaped: which stored columns, which partition values, which
/// Arrow types.
#[derive(Debug, Clone)]
pub(crate) struct OutputShape {
    /// The output schema.
    pub schema: SchemaRef,
    /// For each output column: where it comes from.
    pub sources: Vec<ColumnSource>,
}

#[derive(Debug, Clone)]
pub(crate) enum ColumnSource {
    /// A stored column by name (files store data columns by their names).
    Stored(String),
    /// A partition column: its value comes from the piece's partition spec.
    Partition(String),
}

/// Reads pieces in order, yielding batches of at most `max_batch_rows` rows.
pub(crate) struct RangeReader {
    pieces: std::vec::IntoIter<Piece>,
    /// Whether any batch was produced (an empty range still yields one empty batch).
    produced: bool,
    shape: OutputShape,
    max_batch_rows: usize,
    current: Option<Current>,
}

/// A data file mapped into memory, read batch by batch: the decoder reads the compressed
/// buffers where the page cache holds them (no copy into a zeroed buffer first, as a file
/// reader does), and an uncompressed file's batches point into the mapping.
///
/// Data files are never modified once written (commits write new files, vacuum removes
/// unreferenced ones, which a mapping outlives), so the mapping stays valid.
pub(crate) struct MappedFile {
    path: PathBuf,
    data: Buffer,
    decoder: FileDecoder,
    /// (offset, metadata length, body length) of each record batch, in file order.
    blocks: Vec<arrow_ipc::Block>,
    next: usize,
}

impl MappedFile {
    pub fn open(path: &Path) -> Result<MappedFile> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let corrupt = |message: String| Error::Corrupt {
            location: path.display().to_string(),
            message,
        };
        // SAFETY: data files are immutable once written (see above); a file truncated by
        // something else while mapped is the one case this does not survive.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let data = Buffer::from(bytes::Bytes::from_owner(map));
        let len = data.len();
        if len < 10 {
            return Err(corrupt(format!(
                "{len} bytes is too short for an Arrow IPC file"
            )));
        }
        let arrow = |e| Error::arrow(path.display().to_string(), e);
        let mut trailer = [0u8; 10];
        trailer.copy_from_slice(&data[len - 10..]);
        let footer_len = read_footer_length(trailer).map_err(arrow)?;
        let footer_start = (len - 10)
            .checked_sub(footer_len)
            .ok_or_else(|| corrupt(format!("a footer of {footer_len} bytes does not fit")))?;
        let footer = arrow_ipc::root_as_footer(&data[footer_start..len - 10])
            .map_err(|e| corrupt(format!("unreadable footer: {e}")))?;
        let schema = footer
            .schema()
            .ok_or_else(|| corrupt("the footer has no schema".into()))?;
        let schema = Arc::new(arrow_ipc::convert::try_fb_to_schema(schema).map_err(arrow)?);
        let mut decoder = FileDecoder::new(schema, footer.version());
        let block = |b: &arrow_ipc::Block| -> Result<Buffer> {
            let start = usize::try_from(b.offset()).ok();
            let size = usize::try_from(b.metaDataLength())
                .ok()
                .zip(usize::try_from(b.bodyLength()).ok())
                .and_then(|(m, b)| m.checked_add(b));
            match start.zip(size) {
                Some((start, size)) if start.checked_add(size).is_some_and(|e| e <= len) => {
                    Ok(data.slice_with_length(start, size))
                }
                _ => Err(corrupt(format!(
                    "a block at {} of {}+{} bytes lies outside the file",
                    b.offset(),
                    b.metaDataLength(),
                    b.bodyLength()
                ))),
            }
        };
        for b in footer.dictionaries().iter().flatten() {
            decoder.read_dictionary(b, &block(b)?).map_err(arrow)?;
        }
        let blocks: Vec<arrow_ipc::Block> = footer
            .recordBatches()
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();
        for b in &blocks {
            block(b)?;
        }
        Ok(MappedFile {
            path: path.to_path_buf(),
            data,
            decoder,
            blocks,
            next: 0,
        })
    }

    /// Makes batch `index` the next one read.
    pub fn set_index(&mut self, index: usize) -> Result<()> {
        if index > self.blocks.len() {
            return Err(Error::Corrupt {
                location: self.path.display().to_string(),
                message: format!("batch {index} of {}", self.blocks.len()),
            });
        }
        self.next = index;
        Ok(())
    }

    /// The next batch, `None` after the last.
    pub fn next_batch(&mut self) -> Option<Result<RecordBatch>> {
        let b = *self.blocks.get(self.next)?;
        self.next += 1;
        // In bounds: every block was checked when the file was opened.
        let start = b.offset() as usize;
        let size = b.metaDataLength() as usize + b.bodyLength() as usize;
        let buffer = self.data.slice_with_length(start, size);
        let batch = match self.decoder.read_record_batch(&b, &buffer) {
            Ok(Some(batch)) => Ok(batch),
            Ok(None) => Err(Error::Corrupt {
                location: self.path.display().to_string(),
                message: format!("batch {} is empty", self.next - 1),
            }),
            Err(e) => Err(Error::arrow(self.path.display().to_string(), e)),
        };
        Some(batch)
    }
}

struct Current {
    piece: Piece,
    reader: MappedFile,
    /// Rows of the current stored batch still to skip, and rows of the piece still to emit.
    skip_in_batch: u64,
    remaining: u64,
    pending: Option<RecordBatch>,
}

impl RangeReader {
    pub fn new(pieces: Vec<Piece>, shape: OutputShape, max_batch_rows: usize) -> Self {
        RangeReader {
            pieces: pieces.into_iter(),
            produced: false,
            shape,
            max_batch_rows: max_batch_rows.max(1),
            current: None,
        }
    }

    fn open(&self, piece: Piece) -> Result<Current> {
        let mut reader = MappedFile::open(&piece.path)?;
        // Find the stored batch that holds the first row.
        let mut before = 0u64;
        let mut index = 0usize;
        for rows in &piece.batch_rows {
            if before + rows > piece.start {
                break;
            }
            before += rows;
            index += 1;
        }
        reader.set_index(index)?;
        Ok(Current {
            skip_in_batch: piece.start - before,
            remaining: piece.len,
            piece,
            reader,
            pending: None,
        })
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            let cur = match &mut self.current {
                Some(c) if c.remaining > 0 => c,
                _ => match self.pieces.next() {
                    Some(p) => {
                        let opened = self.open(p)?;
                        self.current = Some(opened);
                        continue;
                    }
                    None => return Ok(None),
                },
            };
            if cur.pending.is_none() {
                let batch = match cur.reader.next_batch() {
                    Some(b) => b?,
                    None => {
                        return Err(Error::Corrupt {
                            location: cur.piece.path.display().to_string(),
                            message: format!(
                                "file ended with {} rows still expected",
                                cur.remaining
                            ),
                        });
                    }
                };
                let skip = cur.skip_in_batch.min(batch.num_rows() as u64) as usize;
                cur.skip_in_batch -= skip as u64;
                if skip == batch.num_rows() {
                    continue;
                }
                cur.pending = Some(batch.slice(skip, batch.num_rows() - skip));
            }
            let Some(pending) = cur.pending.take() else {
                continue;
            };
            let take = (self.max_batch_rows as u64)
                .min(cur.remaining)
                .min(pending.num_rows() as u64) as usize;
            let out = pending.slice(0, take);
            if take < pending.num_rows() {
                cur.pending = Some(pending.slice(take, pending.num_rows() - take));
            }
            cur.remaining -= take as u64;
            if cur.remaining == 0 {
                cur.pending = None;
            }
            let partition = cur.piece.partition.clone();
            return shape_batch(&self.shape, &out, &partition).map(Some);
        }
    }
}

impl Iterator for RangeReader {
    type Item = Result<RecordBatch>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.next_batch() {
            Ok(Some(b)) => {
                self.produced = true;
                Some(Ok(b))
            }
            Ok(None) if !self.produced => {
                self.produced = true;
                Some(Ok(RecordBatch::new_empty(self.shape.schema.clone())))
            }
            Ok(None) => None,
            Err(e) => {
                // Stop after an error: nothing after it is trustworthy.
                self.pieces = Vec::new().into_iter();
                self.current = None;
                Some(Err(e))
            }
        }
    }
}

/// Builds an output batch from a stored batch: picks and casts stored columns, fills
/// partition columns with their constant value.
pub(crate) fn shape_batch(
    shape: &OutputShape,
    stored: &RecordBatch,
    partition: &PartitionSpec,
) -> Result<RecordBatch> {
    let rows = stored.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(shape.sources.len());
    for (field, source) in shape.schema.fields().iter().zip(&shape.sources) {
        let array = match source {
            ColumnSource::Stored(name) => {
                let col = stored.column_by_name(name).ok_or_else(|| Error::Corrupt {
                    location: "data file".into(),
                    message: format!("column `{name}` is missing"),
                })?;
                cast_to(col, field)?
            }
            ColumnSource::Partition(key) => match partition.get(key) {
                Some(v) => constant_array(v, field, rows)?,
                None => new_null_array(field.data_type(), rows),
            },
        };
        columns.push(array);
    }
    RecordBatch::try_new_with_options(
        shape.schema.clone(),
        columns,
        &arrow_array::RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| Error::arrow("shaping output batch", e))
}

fn cast_to(col: &ArrayRef, field: &Field) -> Result<ArrayRef> {
    if col.data_type() == field.data_type() {
        return Ok(col.clone());
    }
    arrow_cast::cast(col, field.data_type())
        .map_err(|e| Error::arrow(format!("converting column `{}`", field.name()), e))
}

/// An array of `rows` copies of a partition value, parsed into the field's type.
pub(crate) fn constant_array(value: &str, field: &Field, rows: usize) -> Result<ArrayRef> {
    let one: ArrayRef = Arc::new(arrow_array::StringArray::from(vec![value]));
    let typed = if field.data_type() == &DataType::Utf8 {
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

//! Data files: Arrow IPC files with LZ4 or ZSTD body compression, and a reader over a row
//! range that spans files.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use arrow_buffer::Buffer;
use arrow_ipc::CompressionType;
use arrow_ipc::reader::{FileDecoder, read_footer_length};
use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
use arrow_schema::{DataType, Field, SchemaRef};
use parking_lot::Mutex;

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
    /// The stored columns the shape takes (the others are never decoded).
    stored: Vec<String>,
    max_batch_rows: usize,
    files: Arc<FileCache>,
    current: Option<Current>,
}

/// A data file mapped into memory: the decoder reads the compressed buffers where the page
/// cache holds them (no copy into a zeroed buffer first, as a file reader does), and an
/// uncompressed file's batches point into the mapping. Kept open across reads by the
/// [`FileCache`].
///
/// Data files are never modified once written (commits write new files under new names,
/// vacuum removes unreferenced ones, which a mapping outlives), so the mapping stays valid.
pub(crate) struct OpenFile {
    path: PathBuf,
    data: Buffer,
    schema: SchemaRef,
    version: arrow_ipc::MetadataVersion,
    /// (offset, length) of each dictionary batch.
    dictionaries: Vec<arrow_ipc::Block>,
    /// (offset, metadata length, body length) of each record batch, in file order.
    blocks: Vec<arrow_ipc::Block>,
}

impl OpenFile {
    pub fn open(path: &Path) -> Result<OpenFile> {
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
        let blocks: Vec<arrow_ipc::Block> = footer
            .recordBatches()
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();
        let dictionaries: Vec<arrow_ipc::Block> = footer
            .dictionaries()
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();
        let version = footer.version();
        let file = OpenFile {
            path: path.to_path_buf(),
            data,
            schema,
            version,
            dictionaries,
            blocks,
        };
        for b in file.dictionaries.iter().chain(&file.blocks) {
            file.block(b)?;
        }
        // The dictionaries are read once here, so that a damaged one is found on opening.
        file.decoder(None)?;
        Ok(file)
    }

    /// The bytes of a block, checked to lie inside the file.
    fn block(&self, b: &arrow_ipc::Block) -> Result<Buffer> {
        let len = self.data.len();
        let start = usize::try_from(b.offset()).ok();
        let size = usize::try_from(b.metaDataLength())
            .ok()
            .zip(usize::try_from(b.bodyLength()).ok())
            .and_then(|(m, b)| m.checked_add(b));
        match start.zip(size) {
            Some((start, size)) if start.checked_add(size).is_some_and(|e| e <= len) => {
                Ok(self.data.slice_with_length(start, size))
            }
            _ => Err(Error::Corrupt {
                location: self.path.display().to_string(),
                message: format!(
                    "a block at {} of {}+{} bytes lies outside the file",
                    b.offset(),
                    b.metaDataLength(),
                    b.bodyLength()
                ),
            }),
        }
    }

    /// A decoder of the file's batches that decodes only the columns `projection` (indices
    /// of the file's schema, ascending) when given: the others are neither decompressed nor
    /// copied.
    fn decoder(&self, projection: Option<&[usize]>) -> Result<FileDecoder> {
        let arrow = |e| Error::arrow(self.path.display().to_string(), e);
        let mut decoder = FileDecoder::new(self.schema.clone(), self.version);
        if let Some(p) = projection {
            decoder = decoder.with_projection(p.to_vec());
        }
        for b in &self.dictionaries {
            decoder.read_dictionary(b, &self.block(b)?).map_err(arrow)?;
        }
        Ok(decoder)
    }

    /// The indices (ascending) of the file's columns named in `names`.
    fn projection(&self, names: &[String]) -> Vec<usize> {
        (0..self.schema.fields().len())
            .filter(|&i| names.iter().any(|n| n == self.schema.field(i).name()))
            .collect()
    }

    /// Record batch `index`, decoded by `decoder`.
    fn read_batch(&self, decoder: &FileDecoder, index: usize) -> Result<RecordBatch> {
        let corrupt = |message: String| Error::Corrupt {
            location: self.path.display().to_string(),
            message,
        };
        let b = self
            .blocks
            .get(index)
            .ok_or_else(|| corrupt(format!("batch {index} of {}", self.blocks.len())))?;
        // In bounds: every block was checked when the file was opened.
        let start = b.offset() as usize;
        let size = b.metaDataLength() as usize + b.bodyLength() as usize;
        let buffer = self.data.slice_with_length(start, size);
        match decoder.read_record_batch(b, &buffer) {
            Ok(Some(batch)) => Ok(batch),
            Ok(None) => Err(corrupt(format!("batch {index} is empty"))),
            Err(e) => Err(Error::arrow(self.path.display().to_string(), e)),
        }
    }
}

/// Data files kept open longest: more are closed, least recently used first.
const OPEN_FILES: usize = 256;
/// A file unused for this long is closed (at the next file opened after it): a file that
/// another process vacuumed keeps its disk space while it is mapped.
const OPEN_FILE_IDLE: Duration = Duration::from_secs(60);
/// Bytes of decoded edge batches kept (see [`FileCache`]).
const EDGE_BYTES: usize = 64 << 20;

/// What the reads of a warehouse share: open data files, and decoded *edge* batches.
///
/// - Opening a file (open, map, read the footer) and touching its pages again cost a chunk
///   read as much as a tenth of its decoding; a client that reads a split as many chunk
///   requests opens the same files again and again.
/// - A range that starts or ends inside a stored batch decodes the whole batch and uses
///   part of it; the range next to it (the next chunk of the same split, read at the same
///   time or right after) needs the rest. The batch decoded first is kept, once, for the
///   other, which takes it: without this, a client reading 8 MB chunks of a table whose
///   stored batches are 1 MB decoded a tenth of the table twice.
#[derive(Default)]
pub(crate) struct FileCache {
    open: Mutex<HashMap<PathBuf, (Arc<OpenFile>, Instant)>>,
    edges: Mutex<EdgeBatches>,
}

impl std::fmt::Debug for FileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCache")
            .field("open", &self.open.lock().len())
            .field("edges", &self.edges.lock().batches.len())
            .finish()
    }
}

/// An edge batch's key: the file, the batch, the decoded columns.
type EdgeKey = (PathBuf, usize, Vec<usize>);

#[derive(Default)]
struct EdgeBatches {
    batches: HashMap<EdgeKey, RecordBatch>,
    /// Insertion order, for eviction (keys taken since stay here until they come up).
    order: VecDeque<EdgeKey>,
    bytes: usize,
}

impl FileCache {
    /// The open file at `path` (opened now if it is not).
    pub fn open(&self, path: &Path) -> Result<Arc<OpenFile>> {
        let now = Instant::now();
        if let Some((file, used)) = self.open.lock().get_mut(path) {
            *used = now;
            return Ok(file.clone());
        }
        let file = Arc::new(OpenFile::open(path)?);
        let mut open = self.open.lock();
        open.retain(|_, (_, used)| now.saturating_duration_since(*used) < OPEN_FILE_IDLE);
        if open.len() >= OPEN_FILES
            && let Some(oldest) = open.iter().min_by_key(|(_, (_, used))| *used)
        {
            let oldest = oldest.0.clone();
            open.remove(&oldest);
        }
        // Another read may have opened it meanwhile: either mapping serves.
        open.insert(path.to_path_buf(), (file.clone(), now));
        Ok(file)
    }

    /// Closes the files under `dir` (a dropped table), and forgets their edge batches.
    pub fn forget_under(&self, dir: &Path) {
        self.open.lock().retain(|path, _| !path.starts_with(dir));
        let mut edges = self.edges.lock();
        let gone: Vec<EdgeKey> = edges
            .batches
            .keys()
            .filter(|k| k.0.starts_with(dir))
            .cloned()
            .collect();
        for key in gone {
            if let Some(b) = edges.batches.remove(&key) {
                edges.bytes -= b.get_array_memory_size();
            }
        }
    }

    /// Takes the edge batch `key` when another read left it.
    fn take_edge(&self, key: &EdgeKey) -> Option<RecordBatch> {
        let mut edges = self.edges.lock();
        let batch = edges.batches.remove(key)?;
        edges.bytes -= batch.get_array_memory_size();
        Some(batch)
    }

    /// Keeps an edge batch for the read next to this one.
    fn put_edge(&self, key: EdgeKey, batch: RecordBatch) {
        let size = batch.get_array_memory_size();
        if size > EDGE_BYTES / 4 {
            return;
        }
        let mut edges = self.edges.lock();
        while edges.bytes + size > EDGE_BYTES {
            let Some(old) = edges.order.pop_front() else {
                break;
            };
            if let Some(b) = edges.batches.remove(&old) {
                edges.bytes -= b.get_array_memory_size();
            }
        }
        if let Some(b) = edges.batches.insert(key.clone(), batch) {
            edges.bytes -= b.get_array_memory_size();
        }
        edges.bytes += size;
        edges.order.push_back(key);
        // Keys taken since they were put are still in `order`: drop them when it grows
        // far past the batches kept.
        if edges.order.len() > 4 * edges.batches.len() + 64 {
            let EdgeBatches { batches, order, .. } = &mut *edges;
            order.retain(|k| batches.contains_key(k));
        }
    }

    #[cfg(test)]
    fn edge_batches(&self) -> usize {
        self.edges.lock().batches.len()
    }
}

struct Current {
    piece: Piece,
    file: Arc<OpenFile>,
    decoder: FileDecoder,
    /// The decoded columns (indices of the file's schema).
    projection: Vec<usize>,
    /// The next stored batch to read.
    index: usize,
    /// Rows of the next stored batch to skip, and rows of the piece still to emit.
    skip_in_batch: u64,
    remaining: u64,
    pending: Option<RecordBatch>,
}

impl RangeReader {
    pub fn new(
        pieces: Vec<Piece>,
        shape: OutputShape,
        max_batch_rows: usize,
        files: Arc<FileCache>,
    ) -> Self {
        let stored = shape
            .sources
            .iter()
            .filter_map(|s| match s {
                ColumnSource::Stored(name) => Some(name.clone()),
                ColumnSource::Partition(_) => None,
            })
            .collect();
        RangeReader {
            pieces: pieces.into_iter(),
            produced: false,
            shape,
            stored,
            max_batch_rows: max_batch_rows.max(1),
            files,
            current: None,
        }
    }

    fn open(&self, piece: Piece) -> Result<Current> {
        let file = self.files.open(&piece.path)?;
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
        let projection = file.projection(&self.stored);
        let decoder = file.decoder(Some(&projection))?;
        Ok(Current {
            skip_in_batch: piece.start - before,
            remaining: piece.len,
            index,
            projection,
            decoder,
            file,
            piece,
            pending: None,
        })
    }

    /// The next stored batch of the current piece: from the edge batches when it is one
    /// that a read next to this one decoded.
    fn read_stored(&self, cur: &mut Current) -> Result<RecordBatch> {
        let index = cur.index;
        let Some(&rows) = cur.piece.batch_rows.get(index) else {
            return Err(Error::Corrupt {
                location: cur.piece.path.display().to_string(),
                message: format!("file ended with {} rows still expected", cur.remaining),
            });
        };
        cur.index += 1;
        // Used in part: the piece starts or ends inside it.
        let edge = cur.skip_in_batch > 0 || cur.skip_in_batch + cur.remaining < rows;
        if !edge {
            return cur.file.read_batch(&cur.decoder, index);
        }
        let key = (cur.piece.path.clone(), index, cur.projection.clone());
        if let Some(batch) = self.files.take_edge(&key) {
            return Ok(batch);
        }
        let batch = cur.file.read_batch(&cur.decoder, index)?;
        self.files.put_edge(key, batch.clone());
        Ok(batch)
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            let mut cur = match self.current.take() {
                Some(c) if c.remaining > 0 => c,
                _ => match self.pieces.next() {
                    Some(p) => {
                        self.current = Some(self.open(p)?);
                        continue;
                    }
                    None => return Ok(None),
                },
            };
            if cur.pending.is_none() {
                let batch = self.read_stored(&mut cur)?;
                let skip = cur.skip_in_batch.min(batch.num_rows() as u64) as usize;
                cur.skip_in_batch -= skip as u64;
                if skip == batch.num_rows() {
                    self.current = Some(cur);
                    continue;
                }
                cur.pending = Some(batch.slice(skip, batch.num_rows() - skip));
            }
            let Some(pending) = cur.pending.take() else {
                self.current = Some(cur);
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
            let shaped = shape_batch(&self.shape, &out, &cur.piece.partition);
            self.current = Some(cur);
            return shaped.map(Some);
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::Schema;

    /// A data file of `rows` rows (`id`, `name`, `score`) in stored batches of
    /// MAX_STORED_BATCH_ROWS, and the piece of its rows `start..start + len`.
    fn data_file(dir: &Path, rows: usize) -> (PathBuf, Vec<u64>) {
        fs::create_dir_all(dir.join(super::super::manifest::MANIFEST_DIR)).unwrap();
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("score", DataType::Int64, true),
        ]));
        let ids: Vec<i64> = (0..rows as i64).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(StringArray::from_iter_values(
                    ids.iter().map(|i| format!("n{i}")),
                )),
                Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| i * 3))),
            ],
        )
        .unwrap();
        let file =
            write_data_file(dir, "data/f.arrow", &schema, &[batch], FileCompression::Lz4).unwrap();
        (dir.join("data/f.arrow"), file.batch_rows)
    }

    fn shape(columns: &[&str]) -> OutputShape {
        let fields: Vec<Field> = columns
            .iter()
            .map(|&c| {
                let t = if c == "name" {
                    DataType::Utf8
                } else {
                    DataType::Int64
                };
                Field::new(c, t, true)
            })
            .collect();
        OutputShape {
            schema: Arc::new(Schema::new(fields)),
            sources: columns
                .iter()
                .map(|c| ColumnSource::Stored(c.to_string()))
                .collect(),
        }
    }

    fn read(
        files: &Arc<FileCache>,
        path: &Path,
        batch_rows: &[u64],
        columns: &[&str],
        start: u64,
        len: u64,
    ) -> Vec<RecordBatch> {
        let piece = Piece {
            path: path.to_path_buf(),
            partition: PartitionSpec::default(),
            batch_rows: batch_rows.to_vec(),
            start,
            len,
        };
        RangeReader::new(vec![piece], shape(columns), 1000, files.clone())
            .collect::<Result<Vec<_>>>()
            .unwrap()
    }

    fn ids(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                let col = b.column_by_name("id").unwrap();
                let col = col.as_any().downcast_ref::<Int64Array>().unwrap();
                col.values().to_vec()
            })
            .collect()
    }

    #[test]
    fn a_batch_cut_by_two_ranges_is_decoded_once_for_both() {
        let tmp = tempfile::tempdir().unwrap();
        let rows = 3 * MAX_STORED_BATCH_ROWS;
        let (path, batch_rows) = data_file(tmp.path(), rows);
        assert_eq!(batch_rows.len(), 3);
        let files = Arc::new(FileCache::default());
        let cut = (MAX_STORED_BATCH_ROWS + 100) as u64;
        // The first range ends inside batch 1: it keeps that batch for the next range.
        let head = read(&files, &path, &batch_rows, &["id"], 0, cut);
        assert_eq!(files.edge_batches(), 1);
        // The next range takes it.
        let tail = read(&files, &path, &batch_rows, &["id"], cut, rows as u64 - cut);
        assert_eq!(files.edge_batches(), 0);
        let mut all = ids(&head);
        all.extend(ids(&tail));
        assert_eq!(all, (0..rows as i64).collect::<Vec<_>>());
        // The other way round (the later range read first), and with other columns: the
        // same rows, and an edge batch decoded with other columns is not taken.
        let tail = read(&files, &path, &batch_rows, &["id", "name"], cut, 10);
        assert_eq!(files.edge_batches(), 1);
        let head = read(&files, &path, &batch_rows, &["id"], 0, cut);
        assert_eq!(files.edge_batches(), 2);
        assert_eq!(
            ids(&tail),
            (cut as i64..cut as i64 + 10).collect::<Vec<_>>()
        );
        assert_eq!(ids(&head).len(), cut as usize);
        // Whole batches are never kept.
        let whole = read(&files, &path, &batch_rows, &["score"], 0, rows as u64);
        assert_eq!(files.edge_batches(), 2);
        assert_eq!(whole.iter().map(|b| b.num_rows()).sum::<usize>(), rows);
    }

    #[test]
    fn only_the_columns_read_are_decoded_in_their_order() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, batch_rows) = data_file(tmp.path(), 20);
        let files = Arc::new(FileCache::default());
        let out = read(&files, &path, &batch_rows, &["score", "id"], 5, 10);
        let b = &out[0];
        assert_eq!(b.num_columns(), 2);
        assert_eq!(b.schema().field(0).name(), "score");
        let score = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(
            score.values().to_vec(),
            (15..45).step_by(3).collect::<Vec<i64>>()
        );
        assert_eq!(ids(&out), (5..15).collect::<Vec<_>>());
        // No stored column at all (a count): the rows still come.
        let none = read(&files, &path, &batch_rows, &[], 0, 20);
        assert_eq!(none.iter().map(|b| b.num_rows()).sum::<usize>(), 20);
    }

    #[test]
    fn files_stay_open_across_reads_until_forgotten() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, batch_rows) = data_file(tmp.path(), 20);
        let files = Arc::new(FileCache::default());
        read(&files, &path, &batch_rows, &["id"], 0, 20);
        let a = files.open(&path).unwrap();
        let b = files.open(&path).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        read(&files, &path, &batch_rows, &["id"], 5, 3);
        files.forget_under(tmp.path());
        assert!(files.open.lock().is_empty());
        assert_eq!(files.edge_batches(), 0);
        // A file that is gone is an error naming it, not a stale mapping.
        drop((a, b));
        fs::remove_file(&path).unwrap();
        let err = match files.open(&path) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a removed file opened"),
        };
        assert!(err.contains("f.arrow"), "{err}");
    }
}

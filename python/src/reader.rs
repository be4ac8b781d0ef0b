//! `paiio._native.Reader`: a [`TableReader`] (or, with record_defaults, a [`RecordDataset`])
//! for Python. Reads run on the reader's worker thread without the GIL and can be
//! interrupted with Ctrl-C ([`crate::interrupt`]); batches become numpy structured arrays,
//! dicts of numpy arrays or Arrow data ([`crate::convert`], [`crate::arrow_ffi`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, SchemaRef};
use paiio::coerce::RecordDefault;
use paiio::dataset::RecordDataset;
use paiio::options::{ReaderOptions, Shuffle};
use paiio::reader::{ReaderState, TableReader};
use paiio_storage::types::OdpsType;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyCapsule, PyDict, PyList, PyString, PyTuple};

use crate::arrow_ffi::{self, ArrowBatch, BatchIter};
use crate::convert::{self, Kind, Prepared};
use crate::errors::{self, IntoPyResult};
use crate::interrupt::{self, Worker};

/// What a [`Reader`] reads with.
enum Source {
    Plain(TableReader),
    Typed(RecordDataset),
}

impl Source {
    fn read(&mut self, n: usize) -> paiio::Result<RecordBatch> {
        match self {
            Source::Plain(r) => r.read(n),
            Source::Typed(d) => {
                let (position, total) = (d.reader().position(), d.reader().row_count());
                d.next_batch(n)?.ok_or_else(|| {
                    paiio::Error::OutOfRange(format!(
                        "the slice has {total} rows and all were read (at row {position})"
                    ))
                })
            }
        }
    }

    fn reader(&self) -> &TableReader {
        match self {
            Source::Plain(r) => r,
            Source::Typed(d) => d.reader(),
        }
    }

    fn position(&self) -> u64 {
        self.reader().position()
    }

    fn seek(&mut self, offset: u64) -> paiio::Result<()> {
        match self {
            Source::Plain(r) => r.seek(offset),
            Source::Typed(d) => d.seek(offset),
        }
    }

    fn set_epoch(&mut self, epoch: u64) -> paiio::Result<()> {
        match self {
            Source::Plain(r) => r.set_epoch(epoch),
            Source::Typed(d) => d.set_epoch(epoch),
        }
    }

    fn restore(&mut self, state: &ReaderState) -> paiio::Result<()> {
        match self {
            Source::Plain(r) => r.restore(state),
            Source::Typed(d) => d.restore(state),
        }
    }

    fn close(&mut self) {
        match self {
            Source::Plain(r) => r.close(),
            Source::Typed(d) => d.close(),
        }
    }

    fn prefetch(&mut self) -> paiio::Result<()> {
        match self {
            Source::Plain(r) => r.prefetch(),
            Source::Typed(d) => d.prefetch(),
        }
    }

    fn open_slice(&self, slice_id: u64, slice_count: u64) -> paiio::Result<Source> {
        Ok(match self {
            Source::Plain(r) => Source::Plain(r.open_slice(slice_id, slice_count)?),
            Source::Typed(d) => Source::Typed(d.open_slice(slice_id, slice_count)?),
        })
    }
}

/// One entry of record_defaults from Python: `(kind, value)`.
fn record_default(
    py: Python<'_>,
    index: usize,
    entry: &Bound<'_, PyAny>,
) -> PyResult<RecordDefault> {
    let pair = entry.cast::<PyTuple>().map_err(|_| {
        errors::invalid(
            py,
            "record_defaults",
            format!("entry {index} is not a (kind, value) pair"),
        )
    })?;
    let kind: String = pair.get_item(0)?.extract()?;
    let value = pair.get_item(1)?;
    Ok(match kind.as_str() {
        "int32" => RecordDefault::Int32(value.extract()?),
        "int64" => RecordDefault::Int64(value.extract()?),
        "float32" => RecordDefault::Float32(value.extract::<f64>()? as f32),
        "float64" => RecordDefault::Float64(value.extract()?),
        "bool" => RecordDefault::Bool(value.extract()?),
        "string" => RecordDefault::String(value.extract()?),
        "bytes" => RecordDefault::Bytes(value.extract()?),
        other => {
            return Err(errors::invalid(
                py,
                "record_defaults",
                format!(
                    "entry {index} has kind `{other}` (expected int32, int64, float32, float64, \
                     bool, string or bytes)"
                ),
            ));
        }
    })
}

/// Table URIs from a str (one URI or several, comma-separated) or a list of str.
fn tables_arg(tables: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if let Ok(s) = tables.cast::<PyString>() {
        return Ok(vec![s.extract()?]);
    }
    let mut out = Vec::new();
    for item in tables.try_iter()? {
        let item = item?;
        let text = if let Ok(b) = item.extract::<Vec<u8>>() {
            String::from_utf8_lossy(&b).into_owned()
        } else {
            item.extract::<String>()?
        };
        out.push(text);
    }
    Ok(out)
}

/// Column names from None, a comma-separated str, or a list of str.
fn columns_arg(cols: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<String>>> {
    let Some(cols) = cols.filter(|c| !c.is_none()) else {
        return Ok(None);
    };
    if let Ok(s) = cols.cast::<PyString>() {
        return Ok(paiio::options::parse_columns(&s.extract::<String>()?));
    }
    let list: Vec<String> = cols.extract()?;
    Ok(Some(list).filter(|l| !l.is_empty()))
}

/// Up to `n` rows of `source`, and, if asked, their columns prepared for numpy.
fn read_prepared(
    source: &mut Source,
    n: usize,
    prepare: bool,
    kinds: &[Kind],
    types: Option<&[OdpsType]>,
) -> paiio::Result<(RecordBatch, Option<Vec<Prepared>>)> {
    let batch = source.read(n)?;
    let prepared = if prepare {
        Some(convert::prepare(&batch, kinds, types)?)
    } else {
        None
    };
    Ok((batch, prepared))
}

/// The dtype of structured arrays, made on first use.
struct StructLayout {
    dtype: Py<PyAny>,
    offsets: Vec<usize>,
    itemsize: usize,
}

/// Reads a slice of one or more tables. See `paiio/_native.pyi` for the Python API.
#[pyclass(frozen, module = "paiio._native")]
pub struct Reader {
    source: Arc<Mutex<Source>>,
    worker: Worker,
    names: Vec<String>,
    /// The MaxCompute types of the columns read.
    types: Vec<OdpsType>,
    kinds: Vec<Kind>,
    /// Whether record_defaults typed the columns.
    typed: bool,
    arrow_schema: SchemaRef,
    batch_rows: usize,
    row_count: u64,
    num_threads: usize,
    layout: PyOnceLock<StructLayout>,
    /// The slice position of the next row delivered, known without waiting for the source
    /// (a read abandoned after Ctrl-C may still hold it).
    position: Arc<AtomicU64>,
    pid: u32,
    closed: AtomicBool,
}

impl Reader {
    /// A reader over `source` (a new reader or a slice of one), at its start.
    fn over(
        source: Source,
        names: Vec<String>,
        types: Vec<OdpsType>,
        kinds: Vec<Kind>,
        typed: bool,
        arrow_schema: SchemaRef,
        batch_rows: usize,
    ) -> Reader {
        let reader = source.reader();
        let (row_count, num_threads) = (reader.row_count(), reader.num_threads());
        Reader {
            source: Arc::new(Mutex::new(source)),
            worker: Worker::default(),
            names,
            types,
            kinds,
            typed,
            arrow_schema,
            batch_rows,
            row_count,
            num_threads,
            layout: PyOnceLock::new(),
            position: Arc::new(AtomicU64::new(0)),
            pid: std::process::id(),
            closed: AtomicBool::new(false),
        }
    }

    fn check_usable(&self, py: Python<'_>) -> PyResult<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(errors::to_py(py, paiio::Error::Closed("TableReader")));
        }
        if self.pid != std::process::id() {
            return Err(errors::invalid(
                py,
                "reader",
                "this reader was opened before fork(); open a new one in the child process",
            ));
        }
        Ok(())
    }

    /// Reads up to `n` rows (Ctrl-C interrupts a wait; the position is then unchanged),
    /// prepared for numpy if asked.
    ///
    /// Rows already at hand are read on the calling thread (without the GIL); otherwise the
    /// read runs on the worker thread, so that a long wait for the backend stays
    /// interruptible. Handing every read to the worker cost two thread switches per batch,
    /// more than slicing a batch out of rows read ahead.
    fn fetch(
        &self,
        py: Python<'_>,
        n: usize,
        prepare: bool,
    ) -> PyResult<(RecordBatch, Option<Vec<Prepared>>)> {
        self.check_usable(py)?;
        let types = (!self.typed).then_some(self.types.as_slice());
        let at_hand = py.detach(|| {
            // Busy: a read abandoned after Ctrl-C still runs on the worker; queue behind it.
            let mut source = self.source.try_lock()?;
            if !source.reader().can_read_now(n) {
                return None;
            }
            let result = read_prepared(&mut source, n, prepare, &self.kinds, types);
            self.position.store(source.position(), Ordering::SeqCst);
            Some(result)
        });
        if let Some(result) = at_hand {
            return result.py_err(py);
        }
        let source = self.source.clone();
        let undo_source = self.source.clone();
        let (position, undo_position) = (self.position.clone(), self.position.clone());
        let kinds = self.kinds.clone();
        let types = types.map(<[OdpsType]>::to_vec);
        type Out = (u64, paiio::Result<(RecordBatch, Option<Vec<Prepared>>)>);
        let (_, result) = interrupt::run::<Out, _, _>(
            py,
            &self.worker,
            move |slot| {
                let mut source = source.lock();
                let before = source.position();
                let result = read_prepared(&mut source, n, prepare, &kinds, types.as_deref());
                position.store(source.position(), Ordering::SeqCst);
                if let Some((before, Ok(_))) = slot.finish((before, result)) {
                    // Nobody wants these rows any more: read them again next time.
                    let _ = source.seek(before);
                    position.store(source.position(), Ordering::SeqCst);
                }
            },
            move |(before, result)| {
                if result.is_ok() {
                    let mut source = undo_source.lock();
                    let _ = source.seek(before);
                    undo_position.store(source.position(), Ordering::SeqCst);
                }
            },
        )?;
        result.py_err(py)
    }

    fn layout(&self, py: Python<'_>) -> PyResult<&StructLayout> {
        self.layout.get_or_try_init(py, || {
            let (dtype, offsets, itemsize) = convert::struct_dtype(py, &self.names, &self.kinds)?;
            Ok::<_, PyErr>(StructLayout {
                dtype: dtype.unbind(),
                offsets,
                itemsize,
            })
        })
    }

    /// Runs `f` on the source without the GIL (waiting for a read in progress).
    fn with_source<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Source) -> paiio::Result<T> + Send,
    ) -> PyResult<T> {
        self.check_usable(py)?;
        let (source, position) = (&self.source, &self.position);
        py.detach(|| {
            let mut source = source.lock();
            let result = f(&mut source);
            position.store(source.position(), Ordering::SeqCst);
            result
        })
        .py_err(py)
    }
}

#[pymethods]
impl Reader {
    #[new]
    #[pyo3(signature = (
        tables,
        *,
        selected_cols = None,
        excluded_cols = None,
        slice_id = 0,
        slice_count = 1,
        num_threads = 0,
        capacity = 0,
        byte_budget = None,
        equal = false,
        shuffle_seed = None,
        epoch = 0,
        shuffle_buffer = None,
        shuffle_block = None,
        batch_rows = None,
        chunk_rows = 0,
        record_defaults = None,
        strings_as_bytes = false,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        tables: &Bound<'_, PyAny>,
        selected_cols: Option<&Bound<'_, PyAny>>,
        excluded_cols: Option<&Bound<'_, PyAny>>,
        slice_id: u64,
        slice_count: u64,
        num_threads: usize,
        capacity: usize,
        byte_budget: Option<usize>,
        equal: bool,
        shuffle_seed: Option<u64>,
        epoch: u64,
        shuffle_buffer: Option<usize>,
        shuffle_block: Option<usize>,
        batch_rows: Option<usize>,
        chunk_rows: usize,
        record_defaults: Option<&Bound<'_, PyAny>>,
        strings_as_bytes: bool,
    ) -> PyResult<Reader> {
        let tables = tables_arg(tables)?;
        let mut options = ReaderOptions {
            selected_cols: columns_arg(selected_cols)?,
            excluded_cols: columns_arg(excluded_cols)?,
            slice_id,
            slice_count,
            num_threads,
            capacity,
            byte_budget,
            equal,
            chunk_rows,
            ..ReaderOptions::default()
        };
        if let Some(rows) = batch_rows {
            options.batch_rows = rows;
        }
        if let Some(seed) = shuffle_seed {
            let mut shuffle = Shuffle::new(seed, epoch);
            if let Some(b) = shuffle_buffer {
                shuffle.buffer_rows = b;
            }
            if let Some(b) = shuffle_block {
                shuffle.block_rows = b;
            }
            options.shuffle = Some(shuffle);
        }
        let defaults = match record_defaults {
            None => None,
            Some(d) if d.is_none() => None,
            Some(d) => Some(
                d.try_iter()?
                    .enumerate()
                    .map(|(i, e)| record_default(py, i, &e?))
                    .collect::<PyResult<Vec<_>>>()?,
            ),
        };
        let typed = defaults.is_some();
        let batch_rows = options.batch_rows;
        let source = py
            .detach(move || match defaults {
                None => TableReader::open(tables, options).map(Source::Plain),
                Some(d) => RecordDataset::open(tables, d, options).map(Source::Typed),
            })
            .py_err(py)?;
        let (types, arrow_schema): (Vec<OdpsType>, SchemaRef) = match &source {
            Source::Plain(r) => (
                r.schema().all_columns().map(|c| c.ty.clone()).collect(),
                r.arrow_schema(),
            ),
            Source::Typed(d) => (
                d.columns().iter().map(|c| c.ty.clone()).collect(),
                d.schema(),
            ),
        };
        let names: Vec<String> = arrow_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let kinds = arrow_schema
            .fields()
            .iter()
            .zip(&types)
            .map(|(f, t)| convert::kind_of(Some(t), f.data_type(), strings_as_bytes))
            .collect();
        Ok(Reader::over(
            source,
            names,
            types,
            kinds,
            typed,
            arrow_schema,
            batch_rows,
        ))
    }

    /// Up to `n` rows as a numpy structured array (fields named after the columns).
    fn read_struct<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyAny>> {
        let (batch, prepared) = self.fetch(py, n, true)?;
        let prepared = prepared.unwrap_or_default();
        let layout = self.layout(py)?;
        convert::to_struct(
            py,
            &prepared,
            layout.dtype.bind(py),
            &layout.offsets,
            layout.itemsize,
            batch.num_rows(),
        )
    }

    /// Up to `n` rows as a dict `column name -> 1-D numpy array`.
    fn read_batch<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyDict>> {
        let (_, prepared) = self.fetch(py, n, true)?;
        convert::to_dict(py, &self.names, &prepared.unwrap_or_default())
    }

    /// Up to `n` rows as an Arrow batch (`pyarrow.record_batch(reader.read_arrow(n))`).
    fn read_arrow(&self, py: Python<'_>, n: usize) -> PyResult<ArrowBatch> {
        let (batch, _) = self.fetch(py, n, false)?;
        Ok(ArrowBatch { batch })
    }

    /// A new reader of slice `slice_id` of `slice_count` of the same tables, over this
    /// reader's read sessions (no request to the backend; one snapshot of the tables), with
    /// this reader's other options.
    fn open_slice(&self, py: Python<'_>, slice_id: u64, slice_count: u64) -> PyResult<Reader> {
        let source = self.with_source(py, |s| s.open_slice(slice_id, slice_count))?;
        Ok(Reader::over(
            source,
            self.names.clone(),
            self.types.clone(),
            self.kinds.clone(),
            self.typed,
            self.arrow_schema.clone(),
            self.batch_rows,
        ))
    }

    /// Starts reading ahead now rather than at the first read.
    fn prefetch(&self, py: Python<'_>) -> PyResult<()> {
        self.with_source(py, |s| s.prefetch())
    }

    /// Moves to row `offset` of the slice (0..=row_count).
    fn seek(&self, py: Python<'_>, offset: u64) -> PyResult<()> {
        self.with_source(py, |s| s.seek(offset))
    }

    /// Starts epoch `epoch` (a new shuffle order when shuffling) at the start of the slice.
    fn set_epoch(&self, py: Python<'_>, epoch: u64) -> PyResult<()> {
        self.with_source(py, |s| s.set_epoch(epoch))
    }

    /// The exact position as a JSON string, for `restore`.
    fn state(&self, py: Python<'_>) -> PyResult<String> {
        let state = self.with_source(py, |s| Ok(s.reader().state()))?;
        serde_json::to_string(&state)
            .map_err(|e| errors::invalid(py, "reader state", e.to_string()))
    }

    /// Continues from a saved `state()`.
    fn restore(&self, py: Python<'_>, state: &str) -> PyResult<()> {
        let state: ReaderState = serde_json::from_str(state)
            .map_err(|e| errors::invalid(py, "reader state", format!("not a saved state: {e}")))?;
        self.with_source(py, move |s| s.restore(&state))
    }

    /// Stops prefetching; later calls raise ClosedError. Closing twice is fine.
    fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) || self.pid != std::process::id() {
            return;
        }
        // A read in progress (perhaps abandoned after Ctrl-C) may hold the source: close
        // after it on the worker rather than wait here.
        if let Some(mut source) = self.source.try_lock() {
            source.close();
            return;
        }
        let source = self.source.clone();
        let _ = self.worker.submit(Box::new(move || source.lock().close()));
    }

    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Rows in this slice.
    #[getter]
    fn row_count(&self) -> u64 {
        self.row_count
    }

    /// The slice position of the next row.
    #[getter]
    fn position(&self) -> u64 {
        self.position.load(Ordering::SeqCst)
    }

    /// Prefetch streams in use.
    #[getter]
    fn num_threads(&self) -> usize {
        self.num_threads
    }

    /// Rows per batch of the Arrow stream.
    #[getter]
    fn batch_rows(&self) -> usize {
        self.batch_rows
    }

    /// The column names, in output order.
    #[getter]
    fn columns(&self) -> Vec<String> {
        self.names.clone()
    }

    /// `[(name, MaxCompute type, python type name)]` of the columns read, in output order:
    /// the python type is `int`, `float`, `bool` or `object` (str/bytes/None).
    fn schema<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let rows = self
            .names
            .iter()
            .zip(&self.types)
            .zip(&self.kinds)
            .map(|((name, ty), kind)| {
                let pytype = match kind {
                    Kind::F32 | Kind::F64 => "float",
                    Kind::Bool => "bool",
                    Kind::Str | Kind::Bytes => "object",
                    _ => "int",
                };
                (name.clone(), ty.to_string(), pytype)
            })
            .collect::<Vec<_>>();
        PyList::new(py, rows)
    }

    /// The numpy dtype of `read_struct` arrays.
    #[getter]
    fn dtype<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.layout(py)?.dtype.bind(py).clone())
    }

    /// The Arrow schema (an `arrow_schema` capsule).
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        arrow_ffi::schema_capsule(py, &self.arrow_schema)
    }

    /// The rest of the slice as an Arrow stream of `batch_rows`-row batches:
    /// `pyarrow.RecordBatchReader.from_stream(reader)`. Reading the stream advances this
    /// reader.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema; // Offered as it is.
        self.check_usable(py)?;
        let source = self.source.clone();
        let position = self.position.clone();
        let rows = self.batch_rows;
        let iter = std::iter::from_fn(move || {
            let mut source = source.lock();
            let result = source.read(rows);
            position.store(source.position(), Ordering::SeqCst);
            match result {
                Ok(batch) => Some(Ok(batch)),
                Err(e) if e.is_out_of_range() => None,
                Err(e) => Some(Err(ArrowError::ExternalError(Box::new(e)))),
            }
        });
        arrow_ffi::stream_capsule(
            py,
            Box::new(BatchIter {
                schema: self.arrow_schema.clone(),
                iter,
            }),
        )
    }

    fn __repr__(&self) -> String {
        format!(
            "Reader(columns={:?}, row_count={}, typed={})",
            self.names, self.row_count, self.typed
        )
    }
}

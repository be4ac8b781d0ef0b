//! `paiio._native.Reader`: a handle on a [`TableReader`] for Python. Reads run on the calling
//! thread without the GIL, over the reader's prefetch, and stop at Ctrl-C (the position is
//! then unchanged); batches become numpy structured arrays, dicts of numpy arrays or Arrow
//! data ([`crate::convert`], [`crate::arrow_ffi`]).

use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::ArrowError;
use paiio::options::{ReaderOptions, Shuffle};
use paiio::reader::{ReaderState, TableReader};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyCapsule, PyDict, PyList, PyString};

use crate::arrow_ffi::{self, ArrowBatch, BatchIter};
use crate::convert::{self, Kind, Prepared};
use crate::defaults;
use crate::errors::{self, IntoPyResult};

/// How often a waiting read checks for signals (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// Table URIs from a str or bytes (one URI or several, comma-separated) or an iterable of
/// them, passed on as written: the reader parses them ([`paiio_storage::TableUri::parse_list`]).
pub fn tables_arg(tables: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let text = |item: &Bound<'_, PyAny>| -> PyResult<String> {
        match item.cast::<PyBytes>() {
            Ok(b) => Ok(String::from_utf8_lossy(b.as_bytes()).into_owned()),
            Err(_) => item.extract::<String>(),
        }
    };
    if tables.is_instance_of::<PyString>() || tables.is_instance_of::<PyBytes>() {
        return Ok(vec![text(tables)?]);
    }
    tables.try_iter()?.map(|item| text(&item?)).collect()
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

/// Why a read gave no rows: the reader's error, or a signal while it waited.
enum Failure {
    Read(paiio::Error),
    Signal(PyErr),
}

impl Failure {
    fn into_py(self, py: Python<'_>) -> PyErr {
        match self {
            Failure::Read(e) => errors::to_py(py, e),
            Failure::Signal(e) => e,
        }
    }
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
    reader: Arc<Mutex<TableReader>>,
    /// The numpy kind of each column.
    kinds: Vec<Kind>,
    layout: PyOnceLock<StructLayout>,
}

impl Reader {
    fn over(reader: TableReader, kinds: Vec<Kind>) -> Reader {
        Reader {
            reader: Arc::new(Mutex::new(reader)),
            kinds,
            layout: PyOnceLock::new(),
        }
    }

    /// Runs `f` on the reader without the GIL (waiting for a read in progress).
    fn with<T: Send>(&self, py: Python<'_>, f: impl FnOnce(&mut TableReader) -> T + Send) -> T {
        py.detach(|| f(&mut self.reader.lock()))
    }

    /// Reads up to `n` rows, prepared for numpy if asked. Ctrl-C stops a wait for the
    /// backend: the read is dropped and the position is unchanged.
    fn fetch(
        &self,
        py: Python<'_>,
        n: usize,
        prepare: bool,
    ) -> PyResult<(RecordBatch, Option<Vec<Prepared>>)> {
        let kinds = &self.kinds;
        self.with(py, |reader| {
            let before = TableReader::position(reader);
            let read = reader.read_async(n);
            let checked = paiio::runtime::block_on_checked(read, SIGNAL_CHECK, || {
                Python::attach(|py| py.check_signals())
            });
            let batch = match checked {
                Ok(Ok(Ok(batch))) => batch,
                Ok(Ok(Err(e))) | Err(e) => return Err(Failure::Read(e)),
                Ok(Err(signal)) => return Err(Failure::Signal(signal)),
            };
            if !prepare {
                return Ok((batch, None));
            }
            let types = match reader.options().record_defaults {
                Some(_) => None,
                None => Some(
                    reader
                        .schema()
                        .columns
                        .iter()
                        .map(|c| c.ty.clone())
                        .collect::<Vec<_>>(),
                ),
            };
            match convert::prepare(&batch, kinds, types.as_deref()) {
                Ok(prepared) => Ok((batch, Some(prepared))),
                Err(e) => {
                    // Rows that cannot be delivered are not consumed: the next read starts
                    // at them again.
                    reader.seek(before).map_err(Failure::Read)?;
                    Err(Failure::Read(e))
                }
            }
        })
        .map_err(|f| f.into_py(py))
    }

    fn layout(&self, py: Python<'_>) -> PyResult<&StructLayout> {
        self.layout.get_or_try_init(py, || {
            let names = self.columns(py);
            let (dtype, offsets, itemsize) = convert::struct_dtype(py, &names, &self.kinds)?;
            Ok::<_, PyErr>(StructLayout {
                dtype: dtype.unbind(),
                offsets,
                itemsize,
            })
        })
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
        fixed_strings = false,
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
        fixed_strings: bool,
    ) -> PyResult<Reader> {
        let text = match (strings_as_bytes, fixed_strings) {
            (false, false) => Kind::Str,
            (true, false) => Kind::Bytes,
            (false, true) => Kind::Fixed,
            (true, true) => {
                return Err(errors::invalid(
                    py,
                    "strings",
                    "strings_as_bytes and fixed_strings: choose one",
                ));
            }
        };
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
            record_defaults: defaults::parse(record_defaults)?,
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
        let reader = py
            .detach(move || TableReader::open(tables, options))
            .py_err(py)?;
        let kinds = reader
            .arrow_schema()
            .fields()
            .iter()
            .zip(&reader.schema().columns)
            .map(|(f, c)| convert::kind_of(Some(&c.ty), f.data_type(), text))
            .collect();
        Ok(Reader::over(reader, kinds))
    }

    /// Up to `n` rows as a numpy structured array (fields named after the columns).
    fn read_struct<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyAny>> {
        let layout = self.layout(py)?;
        let (batch, prepared) = self.fetch(py, n, true)?;
        let prepared = prepared.unwrap_or_default();
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
        convert::to_dict(py, &self.columns(py), &prepared.unwrap_or_default())
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
        let reader = self
            .with(py, |r| r.open_slice(slice_id, slice_count))
            .py_err(py)?;
        Ok(Reader::over(reader, self.kinds.clone()))
    }

    /// The batches of `plan` (`[(slice_id, slice_count, first row, rows)]`, in order) over
    /// this reader's read sessions, read and prepared ahead by a thread into a queue of
    /// `depth` batches. A slice is opened once, at its first batch, and closed after its
    /// last; its batches must come in row order.
    #[pyo3(signature = (plan, depth = 4))]
    fn stream(
        &self,
        py: Python<'_>,
        plan: Vec<(u64, u64, u64, u64)>,
        depth: usize,
    ) -> PyResult<crate::stream::BatchStream> {
        let plan = plan
            .into_iter()
            .map(|(id, count, start, rows)| crate::stream::Step {
                slice: (id, count),
                start,
                rows,
            })
            .collect();
        let kinds = self.kinds.clone();
        self.with(py, move |r| {
            r.check_usable()?;
            crate::stream::BatchStream::start(r, plan, kinds, depth)
        })
        .py_err(py)
    }

    /// Starts reading ahead now rather than at the first read.
    fn prefetch(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |r| r.prefetch()).py_err(py)
    }

    /// Moves to row `offset` of the slice (0..=row_count).
    fn seek(&self, py: Python<'_>, offset: u64) -> PyResult<()> {
        self.with(py, |r| r.seek(offset)).py_err(py)
    }

    /// Starts epoch `epoch` (a new shuffle order when shuffling) at the start of the slice.
    fn set_epoch(&self, py: Python<'_>, epoch: u64) -> PyResult<()> {
        self.with(py, |r| r.set_epoch(epoch)).py_err(py)
    }

    /// The exact position as a JSON string, for `restore`.
    fn state(&self, py: Python<'_>) -> PyResult<String> {
        let state = self.with(py, |r| r.state());
        serde_json::to_string(&state)
            .map_err(|e| errors::invalid(py, "reader state", e.to_string()))
    }

    /// Continues from a saved `state()`.
    fn restore(&self, py: Python<'_>, state: &str) -> PyResult<()> {
        let state: ReaderState = serde_json::from_str(state)
            .map_err(|e| errors::invalid(py, "reader state", format!("not a saved state: {e}")))?;
        self.with(py, move |r| r.restore(&state)).py_err(py)
    }

    /// Stops prefetching; later calls raise ClosedError. Closing twice is fine.
    fn close(&self, py: Python<'_>) {
        self.with(py, TableReader::close);
    }

    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        self.with(py, |r| r.is_closed())
    }

    /// Rows in this slice.
    #[getter]
    fn row_count(&self, py: Python<'_>) -> u64 {
        self.with(py, |r| r.row_count())
    }

    /// The slice position of the next row.
    #[getter]
    fn position(&self, py: Python<'_>) -> u64 {
        // Not `r.position()`: `&mut TableReader` is an iterator, with a `position` of its own.
        self.with(py, |r| TableReader::position(r))
    }

    /// Prefetch streams in use.
    #[getter]
    fn num_threads(&self, py: Python<'_>) -> usize {
        self.with(py, |r| r.num_threads())
    }

    /// Rows per batch of the Arrow stream.
    #[getter]
    fn batch_rows(&self, py: Python<'_>) -> usize {
        self.with(py, |r| r.options().batch_rows)
    }

    /// The column names, in output order.
    #[getter]
    fn columns(&self, py: Python<'_>) -> Vec<String> {
        self.with(py, |r| {
            r.schema().columns.iter().map(|c| c.name.clone()).collect()
        })
    }

    /// `[(name, MaxCompute type, python type name)]` of the columns read, in output order:
    /// the python type is `int`, `float`, `bool`, `object` (str/bytes/None) or `bytes`
    /// (fixed-width strings, numpy `S<n>`).
    fn schema<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let columns = self.with(py, |r| r.schema().columns.clone());
        let rows = columns
            .into_iter()
            .zip(&self.kinds)
            .map(|(c, kind)| {
                let pytype = match kind {
                    Kind::F32 | Kind::F64 => "float",
                    Kind::Bool => "bool",
                    Kind::Str | Kind::Bytes => "object",
                    Kind::Fixed => "bytes",
                    _ => "int",
                };
                (c.name, c.ty.to_string(), pytype)
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
        let schema = self.with(py, |r| r.arrow_schema());
        arrow_ffi::schema_capsule(py, &schema)
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
        let (schema, rows) = self
            .with(py, |r| -> paiio::Result<_> {
                r.check_usable()?;
                Ok((r.arrow_schema(), r.options().batch_rows))
            })
            .py_err(py)?;
        let reader = self.reader.clone();
        let iter = std::iter::from_fn(move || {
            reader
                .lock()
                .next_batch(rows)
                .map_err(|e| ArrowError::ExternalError(Box::new(e)))
                .transpose()
        });
        arrow_ffi::stream_capsule(py, Box::new(BatchIter { schema, iter }))
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        self.with(py, |r| {
            format!(
                "Reader(columns={:?}, row_count={}, typed={})",
                r.schema().column_names(),
                r.row_count(),
                r.options().record_defaults.is_some()
            )
        })
    }
}

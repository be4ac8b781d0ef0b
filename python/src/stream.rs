//! `paiio._native.BatchStream`: the batches of a plan (`paiio.torch.TableDataset`'s order of
//! `(shard, first row, rows)`) read, sliced and coerced by a thread of their own, ahead of
//! the consumer, into a bounded queue. The consumer's thread only makes the Python objects:
//! numpy arrays over the Arrow data ([`BatchStream::next`]) or a batch packed for another
//! process ([`BatchStream::next_packed`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

use paiio::reader::TableReader;
use paiio_storage::types::OdpsType;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::convert::{self, Kind, Prepared};
use crate::errors;
use crate::transfer::PackedBatch;

/// How often a waiting consumer checks for signals (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

type Item = paiio::Result<(Vec<Prepared>, usize)>;

/// One entry of a plan: the batch of `rows` rows at row `start` of slice `slice`.
#[derive(Clone, Copy)]
pub struct Step {
    pub slice: (u64, u64),
    pub start: u64,
    pub rows: u64,
}

/// Batches of a plan, read ahead by a thread (see the module doc).
#[pyclass(frozen, module = "paiio._native")]
pub struct BatchStream {
    rx: Mutex<Option<Receiver<Item>>>,
    stop: Arc<AtomicBool>,
    /// Set by the thread when it has sent every batch of the plan.
    finished: Arc<AtomicBool>,
    names: Vec<String>,
}

struct Shard {
    reader: TableReader,
    position: u64,
    /// The last step that reads this shard: the reader is closed after it.
    last: usize,
}

impl BatchStream {
    /// Opens the shard readers of `plan` over `base`'s read sessions (each starts reading
    /// at its first batch now) and starts the thread.
    pub fn start(
        base: &TableReader,
        plan: Vec<Step>,
        kinds: Vec<Kind>,
        depth: usize,
    ) -> paiio::Result<BatchStream> {
        let names = base
            .schema()
            .columns
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let types: Option<Vec<OdpsType>> = match base.options().record_defaults {
            Some(_) => None,
            None => Some(base.schema().columns.iter().map(|c| c.ty.clone()).collect()),
        };
        let mut shards: HashMap<(u64, u64), Shard> = HashMap::new();
        for (i, step) in plan.iter().enumerate() {
            match shards.get_mut(&step.slice) {
                Some(shard) => shard.last = i,
                None => {
                    let mut reader = base.open_slice(step.slice.0, step.slice.1)?;
                    if step.start > 0 {
                        reader.seek(step.start)?;
                    }
                    reader.prefetch()?;
                    shards.insert(
                        step.slice,
                        Shard {
                            reader,
                            position: step.start,
                            last: i,
                        },
                    );
                }
            }
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(depth.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let finished = Arc::new(AtomicBool::new(false));
        let (stop2, finished2) = (stop.clone(), finished.clone());
        std::thread::Builder::new()
            .name("paiio-batches".into())
            .spawn(move || {
                produce(plan, shards, &kinds, types.as_deref(), &tx, &stop2);
                if !stop2.load(Ordering::Acquire) {
                    finished2.store(true, Ordering::Release);
                }
            })
            .map_err(|e| {
                paiio::Error::invalid("batch stream", format!("could not start a thread: {e}"))
            })?;
        Ok(BatchStream {
            rx: Mutex::new(Some(rx)),
            stop,
            finished,
            names,
        })
    }

    /// The next batch, waiting for it without the GIL; `None` after the last.
    fn recv(&self, py: Python<'_>) -> PyResult<Option<(Vec<Prepared>, usize)>> {
        loop {
            let got = py.detach(|| match self.rx.lock().as_ref() {
                Some(rx) => rx.recv_timeout(SIGNAL_CHECK),
                None => Err(RecvTimeoutError::Disconnected),
            });
            match got {
                Ok(Ok(item)) => return Ok(Some(item)),
                Ok(Err(e)) => {
                    self.close();
                    return Err(errors::to_py(py, e));
                }
                Err(RecvTimeoutError::Timeout) => py.check_signals()?,
                Err(RecvTimeoutError::Disconnected) => {
                    let closed = self.rx.lock().is_none();
                    if self.finished.load(Ordering::Acquire) || closed {
                        return Ok(None);
                    }
                    return Err(pyo3::exceptions::PyRuntimeError::new_err(
                        "the batch stream's thread stopped before the end of its batches",
                    ));
                }
            }
        }
    }

    fn close(&self) {
        self.stop.store(true, Ordering::Release);
        // Dropping the receiver fails the thread's next send: it closes its readers and ends.
        self.rx.lock().take();
    }
}

/// The thread: reads the steps in order and sends them prepared, until the plan is done, the
/// consumer has gone, or a read fails (the error is sent).
fn produce(
    plan: Vec<Step>,
    mut shards: HashMap<(u64, u64), Shard>,
    kinds: &[Kind],
    types: Option<&[OdpsType]>,
    tx: &SyncSender<Item>,
    stop: &AtomicBool,
) {
    for (i, step) in plan.iter().enumerate() {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let item = read_step(&mut shards, i, step, kinds, types);
        let failed = item.is_err();
        if tx.send(item).is_err() || failed {
            break;
        }
    }
    for shard in shards.values_mut() {
        shard.reader.close();
    }
}

fn read_step(
    shards: &mut HashMap<(u64, u64), Shard>,
    i: usize,
    step: &Step,
    kinds: &[Kind],
    types: Option<&[OdpsType]>,
) -> Item {
    let shard = shards.get_mut(&step.slice).ok_or_else(|| {
        paiio::Error::invalid("batch stream", "a shard was read after its last batch")
    })?;
    if shard.position != step.start {
        // Always ahead: the reader skips the rows it holds rather than reading them again.
        shard.reader.seek(step.start)?;
    }
    let rows = usize::try_from(step.rows)
        .map_err(|_| paiio::Error::invalid("batch stream", "too many rows in a batch"))?;
    let batch = shard.reader.read(rows)?;
    shard.position = step.start + batch.num_rows() as u64;
    if shard.last == i {
        shard.reader.close();
        shards.remove(&step.slice);
    }
    let n = batch.num_rows();
    let prepared = convert::prepare(&batch, kinds, types)?;
    Ok((prepared, n))
}

#[pymethods]
impl BatchStream {
    /// The next batch as `{column: 1-D numpy array}` (numeric columns without NULLs share
    /// the Arrow memory), or `None` after the last. With `tensor` (such as
    /// `torch.from_numpy`), the numeric and bool columns are passed through it; with
    /// `as_tuple`, the batch is a tuple in column order.
    #[pyo3(signature = (tensor = None, as_tuple = false))]
    fn next<'py>(
        &self,
        py: Python<'py>,
        tensor: Option<Bound<'py, PyAny>>,
        as_tuple: bool,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some((prepared, _)) = self.recv(py)? else {
            return Ok(None);
        };
        let mut values = Vec::with_capacity(prepared.len());
        for column in &prepared {
            let array = convert::to_numpy(py, column)?;
            values.push(match &tensor {
                Some(tensor) if column.kind.is_numeric() => tensor.call1((array,))?,
                _ => array,
            });
        }
        if as_tuple {
            return Ok(Some(PyTuple::new(py, values)?.into_any()));
        }
        let batch = PyDict::new(py);
        for (name, value) in self.names.iter().zip(values) {
            batch.set_item(name, value)?;
        }
        Ok(Some(batch.into_any()))
    }

    /// The next batch not made into Python objects, to be packed into a buffer, or `None`
    /// after the last.
    fn next_packed(&self, py: Python<'_>) -> PyResult<Option<PackedBatch>> {
        match self.recv(py)? {
            Some((prepared, rows)) => Ok(Some(PackedBatch::new(prepared, rows)?)),
            None => Ok(None),
        }
    }

    /// The column names, in output order.
    #[getter]
    fn columns(&self) -> Vec<String> {
        self.names.clone()
    }

    /// Stops the thread (it closes the shard readers); later calls return `None`.
    #[pyo3(name = "close")]
    fn py_close(&self) {
        self.close();
    }
}

impl Drop for BatchStream {
    fn drop(&mut self) {
        self.close();
    }
}

//! [`TensorBatches`]: a feature matrix (and labels) per batch of a table slice.
//!
//! The iterator reads exactly `batch_size` rows per batch from a [`TableReader`] (raw
//! columns, where a NULL is an error, or typed and NULL-filled by its
//! [`record_defaults`](paiio::ReaderOptions::record_defaults)), so its position is always a batch boundary and
//! [`state`](TensorBatches::state) is the reader's exact [`ReaderState`]: restoring it in a
//! new iterator (same tables, slice, shuffle seed and batch size) continues with the very
//! next batch, in the same order. Shuffling is the reader's deterministic shuffle
//! ([`paiio::Shuffle`], given in its options); [`set_epoch`](TensorBatches::set_epoch) starts
//! another epoch with its own order. The reader prefetches in the background (its
//! `num_threads` streams and byte budget); the conversion to tensors happens on the calling
//! thread, one copy per value (see [`crate::convert`]), and the tensors are placed on the
//! chosen [`Device`].

use arrow_array::RecordBatch;
use paiio::{ReaderState, TableReader};
use tch::{Device, Kind, Tensor};

use crate::convert::{self, column_index};
use crate::error::{Error, Result};

/// What the batches hold and how big they are.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOptions {
    /// Feature columns, in matrix column order.
    pub features: Vec<String>,
    /// The label column, if any.
    pub label: Option<String>,
    /// Rows per batch (default 256).
    pub batch_size: usize,
    /// Leave out the last batch of an epoch when it is shorter than `batch_size`.
    pub drop_last: bool,
    /// The kind of the feature matrix (default `Float`).
    pub feature_kind: Kind,
    /// The kind of the labels; `None` keeps the column's own kind.
    pub label_kind: Option<Kind>,
    /// Where the tensors are placed (default CPU).
    pub device: Device,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            features: Vec::new(),
            label: None,
            batch_size: 256,
            drop_last: false,
            feature_kind: Kind::Float,
            label_kind: None,
            device: Device::Cpu,
        }
    }
}

impl BatchOptions {
    /// Feature columns from a comma-separated list.
    pub fn features(mut self, columns: &str) -> Self {
        self.features = columns
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        self
    }

    pub fn label(mut self, column: &str) -> Self {
        self.label = Some(column.to_string());
        self
    }

    pub fn batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows;
        self
    }

    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    pub fn feature_kind(mut self, kind: Kind) -> Self {
        self.feature_kind = kind;
        self
    }

    pub fn label_kind(mut self, kind: Kind) -> Self {
        self.label_kind = Some(kind);
        self
    }

    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }
}

/// One batch: the feature matrix, the labels, and the Arrow rows they came from.
#[derive(Debug)]
pub struct TensorBatch {
    /// `[rows, features]`, of the feature kind, on the device.
    pub features: Tensor,
    /// `[rows]`, on the device, when a label column was given.
    pub labels: Option<Tensor>,
    /// The Arrow batch (every selected column: ids, keys...).
    pub batch: RecordBatch,
    /// The slice position of the batch's first row (in the reader's output order).
    pub position: u64,
}

impl TensorBatch {
    pub fn rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// Another column of the batch as a CPU tensor (e.g. an id column).
    pub fn column(&self, name: &str) -> Result<Tensor> {
        convert::column_to_tensor(&self.batch, name, None)
    }
}

/// Tensor batches of a table slice; see the [module docs](self).
#[derive(Debug)]
pub struct TensorBatches {
    reader: TableReader,
    options: BatchOptions,
}

impl TensorBatches {
    /// Batches of `reader`. Fails at once if a feature or label column is not among the
    /// reader's columns, or the batch size is 0.
    pub fn new(reader: TableReader, options: BatchOptions) -> Result<TensorBatches> {
        if options.batch_size == 0 {
            return Err(Error::invalid("batch_size", "must be at least 1"));
        }
        if options.features.is_empty() {
            return Err(Error::invalid("features", "no feature column given"));
        }
        let empty = RecordBatch::new_empty(reader.arrow_schema());
        for c in options.features.iter().chain(&options.label) {
            column_index(&empty, c)?;
        }
        Ok(TensorBatches { reader, options })
    }

    pub fn options(&self) -> &BatchOptions {
        &self.options
    }

    /// Rows in the slice.
    pub fn row_count(&self) -> u64 {
        self.reader.row_count()
    }

    /// Batches per epoch (a short last batch counts unless `drop_last`).
    pub fn batches_per_epoch(&self) -> u64 {
        let rows = self.row_count();
        let b = self.options.batch_size as u64;
        if self.options.drop_last {
            rows / b
        } else {
            rows.div_ceil(b)
        }
    }

    /// The slice position of the next batch's first row.
    pub fn position(&self) -> u64 {
        self.reader.position()
    }

    /// Starts epoch `epoch` at the start of the slice (a new order when shuffling).
    pub fn set_epoch(&mut self, epoch: u64) -> Result<()> {
        Ok(self.reader.set_epoch(epoch)?)
    }

    /// The exact position (a batch boundary), to save with a checkpoint.
    pub fn state(&self) -> ReaderState {
        self.reader.state()
    }

    /// Continues from a saved [`state`](Self::state): the next batch is the one that would
    /// have followed it.
    pub fn restore(&mut self, state: &ReaderState) -> Result<()> {
        Ok(self.reader.restore(state)?)
    }

    /// Moves the tensors of later batches to `device`.
    pub fn set_device(&mut self, device: Device) {
        self.options.device = device;
    }

    /// The underlying reader.
    pub fn reader(&self) -> &TableReader {
        &self.reader
    }

    /// The next batch, `None` at the end of the epoch.
    pub fn next_batch(&mut self) -> Result<Option<TensorBatch>> {
        let b = self.options.batch_size;
        let position = self.reader.position();
        let remaining = self.reader.row_count().saturating_sub(position);
        if remaining == 0 || (self.options.drop_last && remaining < b as u64) {
            return Ok(None);
        }
        let Some(batch) = self.reader.next_batch(b)? else {
            return Ok(None);
        };
        let (features, labels) = self.to_tensors(&batch)?;
        Ok(Some(TensorBatch {
            features,
            labels,
            batch,
            position,
        }))
    }

    /// The feature matrix and labels of an Arrow batch, on the device.
    pub fn to_tensors(&self, batch: &RecordBatch) -> Result<(Tensor, Option<Tensor>)> {
        let o = &self.options;
        let names: Vec<&str> = o.features.iter().map(String::as_str).collect();
        let features = if o.device == Device::Cpu {
            convert::features(batch, &names, o.feature_kind)?
        } else {
            // Each column straight from its Arrow buffer to the device when its layout
            // allows, then one matrix built there.
            let mut columns = Vec::with_capacity(names.len());
            for name in &names {
                let i = column_index(batch, name)?;
                let t = convert::convert_to_device(batch.column(i), name, None, o.device)?;
                columns.push(t.f_to_kind(o.feature_kind)?);
            }
            Tensor::f_stack(&columns, 1)?
        };
        let labels = match &o.label {
            None => None,
            Some(label) => {
                let i = column_index(batch, label)?;
                let t = convert::convert_to_device(batch.column(i), label, None, o.device)?;
                Some(match o.label_kind {
                    Some(kind) if kind != t.kind() => t.f_to_kind(kind)?,
                    _ => t,
                })
            }
        };
        Ok((features, labels))
    }
}

impl Iterator for TensorBatches {
    type Item = Result<TensorBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch().transpose()
    }
}

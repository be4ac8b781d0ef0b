//! [`RecordDataset`]: a [`TableReader`] whose columns are typed and NULL-filled by
//! `record_defaults` (see [`crate::coerce`]): what `TableRecordDataset` is built on in the
//! TensorFlow and PyTorch bindings, which unbatch or hand over its batches.
//!
//! ```
//! # use std::sync::Arc;
//! # use paiio::dataset::RecordDataset;
//! # use paiio::{RecordDefault, ReaderOptions};
//! # use paiio_storage::{Column, OdpsType, TableSchema, TableService, TableId};
//! # let dir = tempfile::tempdir().unwrap();
//! # let warehouse = Arc::new(paiio_storage::local::LocalWarehouse::open(dir.path()).unwrap());
//! # let t = TableId::new("p", None, "t").unwrap();
//! # let schema = TableSchema::new(
//! #     vec![Column::new("itemid", OdpsType::BigInt), Column::new("price", OdpsType::Double)],
//! #     vec![],
//! # ).unwrap();
//! # paiio::runtime::block_on(warehouse.create_table(&t, &schema, Default::default())).unwrap().unwrap();
//! // record_defaults=[0, 0.0] in Python: int32 and float32.
//! let mut dataset = RecordDataset::open_with(
//!     warehouse,
//!     "odps://p/tables/t",
//!     vec![RecordDefault::Int32(0), RecordDefault::Float32(0.0)],
//!     ReaderOptions::default().selected("itemid,price"),
//! )?;
//! assert_eq!(dataset.schema().field(0).data_type(), &arrow_schema::DataType::Int32);
//! assert!(dataset.next_batch(3)?.is_none()); // the table is empty
//! # Ok::<(), paiio::Error>(())
//! ```

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use paiio_storage::TableService;
use paiio_storage::types::{Column, OdpsType};

use crate::coerce::{self, RecordDefault};
use crate::error::Result;
use crate::options::ReaderOptions;
use crate::reader::{IntoTables, ReaderState, TableReader};

/// Typed batches of a table slice; see the [module docs](self).
#[derive(Debug)]
pub struct RecordDataset {
    reader: TableReader,
    defaults: Vec<RecordDefault>,
    columns: Vec<Column>,
    types: Vec<OdpsType>,
    schema: SchemaRef,
}

impl RecordDataset {
    /// Opens `tables` on the configured backend. Fails before reading any row if the number
    /// of defaults differs from the number of selected columns (naming both counts), or if a
    /// column can never become its default's type (naming the column, its MaxCompute type
    /// and the target).
    pub fn open(
        tables: impl IntoTables,
        record_defaults: Vec<RecordDefault>,
        options: ReaderOptions,
    ) -> Result<RecordDataset> {
        RecordDataset::from_reader(TableReader::open(tables, options)?, record_defaults)
    }

    /// [`open`](Self::open) on `service`.
    pub fn open_with(
        service: Arc<dyn TableService>,
        tables: impl IntoTables,
        record_defaults: Vec<RecordDefault>,
        options: ReaderOptions,
    ) -> Result<RecordDataset> {
        RecordDataset::from_reader(
            TableReader::open_with(service, tables, options)?,
            record_defaults,
        )
    }

    /// Types the batches of an open reader (which has not necessarily read anything yet).
    pub fn from_reader(
        reader: TableReader,
        record_defaults: Vec<RecordDefault>,
    ) -> Result<RecordDataset> {
        let columns = reader.schema().all_columns().cloned().collect::<Vec<_>>();
        coerce::check_defaults(&columns, &record_defaults)?;
        let schema = coerce::output_schema(&columns, &record_defaults);
        let types = columns.iter().map(|c| c.ty.clone()).collect();
        Ok(RecordDataset {
            reader,
            defaults: record_defaults,
            columns,
            types,
            schema,
        })
    }

    /// The next up to `n` rows (exactly `n` unless fewer remain), typed; `None` at the end.
    /// A value that cannot be converted fails naming its row: its position in this slice's
    /// read order.
    pub fn next_batch(&mut self, n: usize) -> Result<Option<RecordBatch>> {
        let row_base = self.reader.position();
        match self.reader.read(n) {
            Ok(batch) => self.coerce(&batch, row_base).map(Some),
            Err(e) if e.is_out_of_range() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn coerce(&self, batch: &RecordBatch, row_base: u64) -> Result<RecordBatch> {
        coerce::coerce_batch(batch, &self.types, &self.defaults, row_base)
    }

    /// The Arrow schema of the batches: the selected columns, in order, typed by their
    /// defaults, not nullable.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The selected columns with their MaxCompute types.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub fn record_defaults(&self) -> &[RecordDefault] {
        &self.defaults
    }

    /// Rows in this slice.
    pub fn row_count(&self) -> u64 {
        self.reader.row_count()
    }

    /// The slice position of the next row.
    pub fn position(&self) -> u64 {
        self.reader.position()
    }

    /// A dataset of another slice of the same tables, over the same read sessions (see
    /// [`TableReader::open_slice`]), with the same defaults.
    pub fn open_slice(&self, slice_id: u64, slice_count: u64) -> Result<RecordDataset> {
        Ok(RecordDataset {
            reader: self.reader.open_slice(slice_id, slice_count)?,
            defaults: self.defaults.clone(),
            columns: self.columns.clone(),
            types: self.types.clone(),
            schema: self.schema.clone(),
        })
    }

    /// Starts reading ahead now (see [`TableReader::prefetch`]).
    pub fn prefetch(&mut self) -> Result<()> {
        self.reader.prefetch()
    }

    /// Moves to row `offset` of the slice.
    pub fn seek(&mut self, offset: u64) -> Result<()> {
        self.reader.seek(offset)
    }

    /// Starts epoch `epoch` (a new shuffle order, if shuffling) at the start of the slice.
    pub fn set_epoch(&mut self, epoch: u64) -> Result<()> {
        self.reader.set_epoch(epoch)
    }

    /// The exact position, for a checkpoint.
    pub fn state(&self) -> ReaderState {
        self.reader.state()
    }

    /// Continues from a saved [`state`](Self::state).
    pub fn restore(&mut self, state: &ReaderState) -> Result<()> {
        self.reader.restore(state)
    }

    /// The underlying reader.
    pub fn reader(&self) -> &TableReader {
        &self.reader
    }

    /// Stops prefetching; later reads fail.
    pub fn close(&mut self) {
        self.reader.close();
    }
}

impl Iterator for RecordDataset {
    type Item = Result<RecordBatch>;

    /// Typed batches of the reader's `batch_rows` rows (the last may be shorter).
    fn next(&mut self) -> Option<Self::Item> {
        let rows = self.reader.options().batch_rows;
        self.next_batch(rows).transpose()
    }
}

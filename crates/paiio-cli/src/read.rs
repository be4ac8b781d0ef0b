//! Reading every row of a table or of the partitions a URI selects.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use paiio_storage::{
    ArrowOptions, ReadRange, ReadRequest, ReadSessionRequest, RecordBatchStream, SplitOptions,
    TableService,
};

use crate::error::Result;
use crate::service::Target;

/// Rows per batch the commands read in.
pub const READ_BATCH_ROWS: usize = 65_536;

/// A planned read of all rows a target selects: data columns, then partition columns.
pub struct FullRead {
    pub service: Arc<dyn TableService>,
    pub target: Target,
    pub session_id: String,
    pub rows: u64,
    /// The schema of the delivered batches.
    pub schema: SchemaRef,
}

impl FullRead {
    pub async fn plan(service: Arc<dyn TableService>, target: Target) -> Result<FullRead> {
        let mut request = ReadSessionRequest::new(target.uri.table.clone());
        request.split_options = SplitOptions::row_offset();
        request.required_partition_columns = target.partition_column_names();
        if !target.uri.partition.is_empty() {
            request.required_partitions = vec![target.uri.partition.clone()];
        }
        request.arrow_options = ArrowOptions::default();
        let session = service.create_read_session(&request).await?;
        let schema = Arc::new(session.schema.to_arrow_schema(&session.arrow_options, true));
        Ok(FullRead {
            service,
            target,
            session_id: session.session_id,
            rows: session.record_count.max(0) as u64,
            schema,
        })
    }

    /// `[offset, offset + count)` ranges covering all rows: at most `parts` of them, each at
    /// least `min_rows` long (the last may be shorter).
    pub fn ranges(&self, parts: usize, min_rows: u64) -> Vec<(u64, u64)> {
        if self.rows == 0 {
            return Vec::new();
        }
        let parts = (parts.max(1) as u64)
            .min(self.rows.div_ceil(min_rows.max(1)))
            .max(1);
        (0..parts)
            .map(|i| paiio_storage::split::balanced(self.rows, i, parts))
            .map(|r| (r.start, r.end - r.start))
            .collect()
    }

    /// The rows `[offset, offset + count)` of the session.
    pub async fn stream(&self, offset: u64, count: u64) -> Result<RecordBatchStream> {
        let mut request = ReadRequest::new(
            self.target.uri.table.clone(),
            self.session_id.clone(),
            ReadRange::Rows { offset, count },
        );
        request.max_batch_rows = READ_BATCH_ROWS;
        Ok(self.service.read(&request).await?)
    }
}

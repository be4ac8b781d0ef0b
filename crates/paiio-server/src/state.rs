//! What every handler sees: the server's state and its limits.

use std::net::SocketAddr;
use std::sync::Arc;

use paiio_storage::TableService;
use paiio_storage::auth::Verifier;

/// Limits on what one request may carry, and on the memory requests may make the server use.
///
/// A small request must not cost a large amount of memory: decompressed uploads are capped
/// per request and share a server-wide budget, Arrow buffer compression is checked against
/// the rows it declares before anything is decoded, and lists that name things (columns,
/// blobs) refuse repeats. Beyond a limit the answer is a 4xx naming it.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest JSON request body.
    pub max_json_body: usize,
    /// The largest row upload on the wire (one TableWrite or V1 block).
    pub max_upload_body: usize,
    /// The most rows per Arrow batch a reader may ask for.
    pub max_batch_rows: usize,
    /// The most bytes one upload may decode to: its `Content-Encoding` decompressed, plus the
    /// declared uncompressed lengths of its Arrow-compressed buffers (default 256 MiB).
    pub max_decoded_upload: usize,
    /// The most decoded upload bytes all requests together may hold at once (default 512 MiB);
    /// uploads beyond it wait for their turn. Never below `max_decoded_upload`.
    pub max_decoding_in_flight: usize,
    /// The most rows an uploaded Arrow batch (or any of its nested arrays) may declare
    /// (default 2^26).
    pub max_upload_rows: usize,
    /// The most column names one request may list (default 10,000); a repeated name is
    /// refused whatever the count.
    pub max_column_names: usize,
    /// The most blob references one BlobRead may name (default 1,000); a repeated reference
    /// is refused.
    pub max_blob_read_refs: usize,
    /// The most blob bytes one BlobRead may answer with (default 512 MiB). The answer is
    /// streamed, so this bounds the work, not the memory.
    pub max_blob_read_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_json_body: 1 << 20,
            max_upload_body: 512 << 20,
            max_batch_rows: 1 << 20,
            max_decoded_upload: 256 << 20,
            max_decoding_in_flight: 512 << 20,
            max_upload_rows: 1 << 26,
            max_column_names: 10_000,
            max_blob_read_refs: 1_000,
            max_blob_read_bytes: 512 << 20,
        }
    }
}

/// What every handler sees.
#[derive(Debug)]
pub(crate) struct AppState {
    pub service: Arc<dyn TableService>,
    pub verifier: Option<Verifier>,
    pub limits: Limits,
    /// Decoded upload bytes in flight, server-wide (`Limits::max_decoding_in_flight`).
    pub decode_budget: crate::upload::DecodeBudget,
    /// Where uploaded blobs are kept; `None` refuses blob calls.
    pub blob_dir: Option<std::path::PathBuf>,
    /// The address the server listens on (answers tunnel discovery).
    pub addr: parking_lot::RwLock<Option<SocketAddr>>,
    /// Fault injection, admin endpoints, bandwidth and concurrency caps.
    pub realism: crate::faults::Realism,
    /// TableWrite attempts by retry trace id (replays get the first answer).
    pub replays: crate::replay::Replays,
    /// SQL instances that ran (partition DDL), by id.
    pub instances: crate::meta::Instances,
    /// Counters of the accept loop.
    pub connections: Arc<crate::conn::ConnStats>,
}

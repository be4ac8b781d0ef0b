//! Header names, each written once.

/// The response header with the request id.
pub const REQUEST_ID: &str = "x-odps-request-id";
/// The request and response header of Storage API V2 route tokens (docs/storage-api.md §8.7).
pub const ROUTE_TOKEN: &str = "x-odps-max-storage-route-token";
/// The request header of the exactly-once write token.
pub const WRITE_ACCESS_TOKEN: &str = "x-odps-max-storage-write-access-token";
/// The ODPS user agent header (besides `User-Agent`).
pub const ODPS_USER_AGENT: &str = "x-odps-user-agent";

/// The retry correlation headers PyODPS (`odps/tunnel/retry.py`) puts on every Storage API
/// request: one trace id per retry sequence (a call and its retries)...
pub const RETRY_TRACE_ID: &str = "odps-tunnel-retry-trace-id";
/// ...and the zero-based index of the attempt within it (0 for the first, 1 for the first
/// retry, ...).
pub const RETRY_INDEX: &str = "odps-tunnel-retry-index";

/// The content type of JSON requests.
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";
/// The content type of Arrow IPC bodies.
pub const ARROW_CONTENT_TYPE: &str = "application/octet-stream";

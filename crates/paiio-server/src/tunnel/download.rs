//! Download sessions (docs/tunnel.md §2.3): a RowOffset read session of one table or one
//! partition, read by row ranges as a record stream (§3) or an Arrow stream (§4), the whole
//! body compressed as `Accept-Encoding` asks (§5).

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use paiio_storage::protocol::tunnel::WireError;
use paiio_storage::protocol::tunnel::arrow_stream::{ArrowStreamEncoder, DEFAULT_CHUNK_SIZE};
use paiio_storage::protocol::tunnel::encoding::{BodyCompressor, Compression};
use paiio_storage::protocol::tunnel::record::RecordEncoder;
use paiio_storage::protocol::tunnel::session::{DownloadSession, DownloadStatus, TunnelSchema};
use paiio_storage::{
    ReadRange, ReadRequest, ReadSession, ReadSessionRequest, RecordBatchStream, SessionStatus,
    SplitOptions, TableId, TableSchema,
};

use super::{partition, requested_columns, session_id};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::request::Params;

/// `POST ?downloads=`: a session over the named partition (or the whole unpartitioned table).
pub(super) async fn create(
    state: &AppState,
    table: TableId,
    params: &Params,
) -> ApiResult<Response> {
    let schema = state.service.table_schema(&table).await?;
    let spec = partition(params, &table, &schema)?;
    let mut request = ReadSessionRequest::new(table.clone());
    request.split_options = SplitOptions::row_offset();
    if !spec.is_empty() {
        super::upload::check_partition_exists(state, &table, &spec).await?;
        request.required_partitions = vec![spec];
    }
    let session = state.service.create_read_session(&request).await?;
    Ok(session_answer(&session, &schema))
}

/// `GET ?downloadid=ID`.
pub(super) async fn reload(
    state: &AppState,
    table: TableId,
    params: &Params,
) -> ApiResult<Response> {
    let id = session_id(params, "downloadid")?;
    let session = state.service.get_read_session(&table, id, false).await?;
    let schema = state.service.table_schema(&table).await?;
    Ok(session_answer(&session, &schema))
}

fn session_answer(session: &ReadSession, schema: &TableSchema) -> Response {
    let answer = DownloadSession {
        id: session.session_id.clone(),
        status: match session.status {
            SessionStatus::Init => DownloadStatus::Initiating,
            SessionStatus::Expired => DownloadStatus::Expired,
            _ => DownloadStatus::Normal,
        },
        record_count: Some(session.record_count.max(0) as u64),
        schema: Some(TunnelSchema::from_table_schema(schema)),
        quota_name: None,
        support_read_by_raw_size: false,
    };
    json(answer.to_json())
}

pub(super) fn json(body: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            paiio_storage::protocol::headers::JSON_CONTENT_TYPE,
        )],
        body,
    )
        .into_response()
}

/// `rowrange=(START,COUNT)`.
fn row_range(params: &Params) -> ApiResult<(u64, u64)> {
    let raw = params
        .get("rowrange")
        .ok_or_else(|| ApiError::invalid("the query parameter rowrange is missing"))?;
    let bad = || ApiError::invalid(format!("rowrange={raw:?} is not (START,COUNT)"));
    let inner = raw
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(bad)?;
    let (start, count) = inner.split_once(',').ok_or_else(bad)?;
    let number = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
    Ok((number(start)?, number(count)?))
}

/// `GET ?data[&arrow]&downloadid=ID&rowrange=(START,COUNT)[&columns=a,b]`.
pub(super) async fn read(
    state: &AppState,
    table: TableId,
    params: &Params,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let id = session_id(params, "downloadid")?;
    let (start, count) = row_range(params)?;
    let arrow = params.contains_key("arrow");
    let compression = accepted(headers)?;
    let session = state.service.get_read_session(&table, id, false).await?;
    if session.status == SessionStatus::Expired {
        return Err(paiio_storage::Error::SessionExpired {
            session_id: id.to_string(),
        }
        .into());
    }
    let total = session.record_count.max(0) as u64;
    if start.checked_add(count).is_none_or(|end| end > total) {
        return Err(ApiError::invalid(format!(
            "rowrange ({start},{count}) is past the session's {total} rows"
        )));
    }
    let mut columns = requested_columns(params, &session.schema)?;
    if arrow {
        // PyODPS builds the Arrow schema in table order whatever order columns= lists.
        columns.sort_by_key(|c| session.schema.index_of(&c.name));
    }
    let mut request = ReadRequest::new(
        table,
        id,
        ReadRange::Rows {
            offset: start,
            count,
        },
    );
    request.columns = columns.iter().map(|c| c.name.clone()).collect();
    let stream = if count == 0 {
        Box::pin(futures::stream::empty()) as RecordBatchStream
    } else {
        state.service.read(&request).await?
    };
    let encoder = if arrow {
        RowEncoder::Arrow(ArrowStreamEncoder::new(&columns, DEFAULT_CHUNK_SIZE)?)
    } else {
        RowEncoder::Record(RecordEncoder::new(&columns)?)
    };
    body(stream, encoder, compression).await
}

/// The compression `Accept-Encoding` asks for; a name this server does not know is none.
fn accepted(headers: &HeaderMap) -> ApiResult<Option<Compression>> {
    let Some(value) = headers.get(header::ACCEPT_ENCODING) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::invalid("Accept-Encoding is not text"))?;
    Ok(value
        .split(',')
        .filter_map(|t| Compression::from_encoding(t.split(';').next().unwrap_or("")).ok())
        .find_map(|c| c))
}

/// A row stream in one of the Tunnel's two forms.
enum RowEncoder {
    Record(RecordEncoder),
    Arrow(ArrowStreamEncoder),
}

impl RowEncoder {
    fn encode(
        &mut self,
        batch: &arrow_array::RecordBatch,
        out: &mut Vec<u8>,
    ) -> Result<(), WireError> {
        match self {
            RowEncoder::Record(e) => e.encode(batch, out),
            RowEncoder::Arrow(e) => e.encode(batch, out),
        }
    }

    fn finish(self, out: &mut Vec<u8>) {
        match self {
            RowEncoder::Record(e) => e.finish(out),
            RowEncoder::Arrow(e) => e.finish(out),
        }
    }
}

/// The encoder and compressor of one answer, and what to do next.
struct Writer {
    encoder: RowEncoder,
    compressor: Option<BodyCompressor>,
}

impl Writer {
    fn compress(&mut self, raw: Vec<u8>) -> Result<Bytes, WireError> {
        Ok(Bytes::from(match &mut self.compressor {
            Some(c) => c.write(&raw)?,
            None => raw,
        }))
    }

    fn batch(&mut self, batch: &arrow_array::RecordBatch) -> Result<Bytes, WireError> {
        let mut raw = Vec::new();
        self.encoder.encode(batch, &mut raw)?;
        self.compress(raw)
    }

    fn finish(self) -> Result<Bytes, WireError> {
        let mut raw = Vec::new();
        self.encoder.finish(&mut raw);
        Ok(Bytes::from(match self.compressor {
            Some(mut c) => {
                let mut out = c.write(&raw)?;
                out.extend(c.finish()?);
                out
            }
            None => raw,
        }))
    }
}

/// Streams the rows. The first batch is awaited before the status line, so an error before
/// any data is a proper error answer; a failure after that cuts the body before its footer,
/// which every reader sees as a truncation, never as a clean end.
async fn body(
    mut stream: RecordBatchStream,
    encoder: RowEncoder,
    compression: Option<Compression>,
) -> ApiResult<Response> {
    let mut writer = Writer {
        encoder,
        compressor: compression.map(|c| c.compressor(None)).transpose()?,
    };
    let first = stream.next().await.transpose()?;
    let head = match &first {
        Some(b) => writer.batch(b)?,
        None => Bytes::new(),
    };
    let out = futures::stream::unfold(
        (Some(writer), Some(stream), Some(head)),
        |(writer, stream, head)| async move {
            if let Some(h) = head {
                return Some((Ok(h), (writer, stream, None)));
            }
            let mut writer = writer?;
            let mut stream = stream?;
            let step = match stream.next().await {
                Some(Ok(batch)) => match writer.batch(&batch) {
                    Ok(bytes) => return Some((Ok(bytes), (Some(writer), Some(stream), None))),
                    Err(e) => Err(std::io::Error::other(e)),
                },
                Some(Err(e)) => {
                    tracing::warn!("Tunnel download failed after the response started: {e}");
                    Err(std::io::Error::other(e.to_string()))
                }
                None => writer.finish().map_err(std::io::Error::other),
            };
            Some((step, (None, None, None)))
        },
    );
    let mut response = (
        [(
            header::CONTENT_TYPE,
            paiio_storage::protocol::headers::ARROW_CONTENT_TYPE,
        )],
        Body::from_stream(out),
    )
        .into_response();
    if let Some(c) = compression {
        response.headers_mut().insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(c.encoding()),
        );
    }
    Ok(response)
}

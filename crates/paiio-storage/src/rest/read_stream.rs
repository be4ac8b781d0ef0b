//! The resumable row stream of a read (or a preview): it decodes the Arrow IPC body
//! incrementally and, when the body breaks, re-opens the read at the rows already delivered,
//! refreshing the read session ahead of its expiry or once after a `SessionExpired`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow_array::RecordBatch;

use crate::error::{Error, Result};
use crate::protocol::codec::{BodyEncoding, StreamError};
use crate::protocol::storage::{Action, PreviewRequest, TableReadRequest};
use crate::service::{ReadRange, ReadRequest, RecordBatchStream, SessionStatus};
use crate::uri::TableId;

use super::RestClient;
use super::body::{BodyCounts, BodyDecoder};
use super::codec_choice::{ReadCompression, Segment};
use super::transport::{Budget, Call};

/// What a row stream re-requests when it resumes.
#[derive(Clone)]
pub(super) enum Source {
    Read(ReadRequest),
    Preview {
        table: TableId,
        body: PreviewRequest,
    },
}

/// The segment of a body being measured for [`ReadCompression::Auto`].
struct Measuring {
    counts: Arc<BodyCounts>,
    /// The counts where the segment began, and when.
    base: (u64, u64),
    since: Instant,
}

struct ReadState {
    client: RestClient,
    source: Source,
    decoder: Option<BodyDecoder>,
    /// The codec to ask for when the body is re-opened (a change of codec).
    next_codec: Option<BodyEncoding>,
    measuring: Option<Measuring>,
    /// Rows handed to the caller.
    delivered: u64,
    delivered_any: bool,
    /// The budget of the current run of attempts (since the last delivered rows).
    budget: Budget,
    done: bool,
}

impl RestClient {
    /// Issues the request for the rows not yet delivered, within `budget`, refreshing the
    /// read session ahead of its expiry, or once after a `SessionExpired`.
    pub(super) async fn open_rows(
        &self,
        source: &Source,
        delivered: u64,
        codec: BodyEncoding,
        budget: &mut Budget,
    ) -> Result<Option<BodyDecoder>> {
        let Source::Read(request) = source else {
            return self.open_rows_once(source, delivered, codec, budget).await;
        };
        if self.refresh_due(&request.session_id) {
            // Any other failure: the session may well still be readable; the read will tell.
            if let Err(e @ Error::SessionExpired { .. }) = self
                .refresh_read_session(&request.table, &request.session_id)
                .await
            {
                return Err(e);
            }
        }
        match self.open_rows_once(source, delivered, codec, budget).await {
            Err(Error::SessionExpired { .. }) => {
                self.refresh_read_session(&request.table, &request.session_id)
                    .await
                    .map_err(|e| match e {
                        Error::SessionExpired { .. } => Error::SessionExpired {
                            session_id: request.session_id.clone(),
                        },
                        other => other,
                    })?;
                self.open_rows_once(source, delivered, codec, budget).await
            }
            other => other,
        }
    }

    /// Issues the request for the rows not yet delivered once (with `execute`'s retries).
    async fn open_rows_once(
        &self,
        source: &Source,
        delivered: u64,
        codec: BodyEncoding,
        budget: &mut Budget,
    ) -> Result<Option<BodyDecoder>> {
        let mut call = match source {
            Source::Read(request) => {
                let mut request = request.clone();
                let mut call =
                    Call::new(Action::TableRead, &request.table, &()).session(&request.session_id);
                match request.range {
                    ReadRange::Split(index) => {
                        request.skip_rows += delivered;
                        call = call.param("Index", index);
                    }
                    ReadRange::Rows { offset, count } => {
                        let wanted = count.saturating_sub(request.skip_rows);
                        if delivered > 0 && delivered >= wanted {
                            return Ok(None);
                        }
                        call = call
                            .param("Offset", offset + delivered)
                            .param("Count", count - delivered);
                    }
                }
                call = call.json_body(&TableReadRequest::from(&request));
                call.accept_encoding = (codec != BodyEncoding::Identity).then_some(codec);
                call
            }
            Source::Preview { table, body } => Call::new(Action::TablePreview, table, body),
        };
        call.streaming = true;
        let resp = self.inner.execute_in(&call, budget).await?;
        let decoder = BodyDecoder::new(resp)?;
        if self.inner.read_compression == ReadCompression::Auto {
            self.inner.codecs.answered(codec, decoder.encoding());
        }
        Ok(Some(decoder))
    }

    /// A read as one request: a row stream that resumes where its body broke.
    pub(super) async fn read_one(&self, request: &ReadRequest) -> Result<RecordBatchStream> {
        let source = Source::Read(request.clone());
        let mut budget = Budget::new(&self.inner.retry);
        let codec = self.read_codec();
        let first = match self.open_rows(&source, 0, codec, &mut budget).await? {
            Some(d) => d,
            None => return Err(Error::invalid("read range", "nothing to read")),
        };
        Ok(self.row_stream(source, first, budget))
    }

    /// The codec a Tunnel download asks for: the configured one (none with `auto`: the
    /// Tunnel's reads are not measured).
    pub(super) fn tunnel_read_codec(&self) -> Option<BodyEncoding> {
        match self.inner.read_compression {
            ReadCompression::Fixed(BodyEncoding::Identity) | ReadCompression::Auto => None,
            ReadCompression::Fixed(e) => Some(e),
        }
    }

    /// The codec a read asks for now: the configured one, or the one the link calls for.
    pub(super) fn read_codec(&self) -> BodyEncoding {
        match self.inner.read_compression {
            ReadCompression::Fixed(e) => e,
            ReadCompression::Auto => self.inner.codecs.pick(Instant::now()),
        }
    }

    pub(super) fn row_stream(
        &self,
        source: Source,
        first: BodyDecoder,
        budget: Budget,
    ) -> RecordBatchStream {
        let measuring = (self.inner.read_compression == ReadCompression::Auto
            && matches!(source, Source::Read(_)))
        .then(|| Measuring::new(&first, Instant::now()));
        let state = ReadState {
            client: self.clone(),
            source,
            decoder: Some(first),
            next_codec: None,
            measuring,
            delivered: 0,
            delivered_any: false,
            budget,
            done: false,
        };
        Box::pin(futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        }))
    }

    /// Refreshes a read session for a read: `SessionExpired` when the service says it has
    /// expired (an `EXPIRED` status included).
    async fn refresh_read_session(&self, table: &TableId, session_id: &str) -> Result<()> {
        self.inner.stats.refreshes.fetch_add(1, Ordering::Relaxed);
        let outcome = match self.get_read_session_raw(table, session_id, true).await {
            Ok(s) if s.status == SessionStatus::Expired => Err(Error::SessionExpired {
                session_id: session_id.to_string(),
            }),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = &outcome {
            self.inner
                .stats
                .refresh_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(session_id, "refreshing the read session failed: {e}");
        }
        outcome
    }
}

impl Measuring {
    fn new(decoder: &BodyDecoder, since: Instant) -> Self {
        let counts = decoder.counts();
        Measuring {
            base: counts.get(),
            counts,
            since,
        }
    }
}

impl ReadState {
    /// Accounts a batch; at the end of a segment, reports it and returns the codec the rest
    /// should be read in when that is another one.
    fn measured(&mut self) -> Option<BodyEncoding> {
        let m = self.measuring.as_mut()?;
        let decoder = self.decoder.as_ref()?;
        let now = Instant::now();
        let (wire, decoded) = m.counts.get();
        let segment = Segment {
            decoded: decoded - m.base.1,
            wire: wire - m.base.0,
            time: now.saturating_duration_since(m.since),
        };
        if !segment.complete() {
            return None;
        }
        m.base = (wire, decoded);
        m.since = now;
        let codecs = &self.client.inner.codecs;
        codecs.record(decoder.encoding(), segment, now);
        let next = codecs.pick(now);
        (next != decoder.encoding()).then_some(next)
    }

    fn resumable(&self) -> bool {
        matches!(self.source, Source::Read(_))
    }

    /// Accounts a failure; `Some(error)` when it must be surfaced.
    async fn failed(&mut self, error: Error, can_resume: bool) -> Option<Error> {
        if !can_resume || !error.is_retryable() {
            return Some(error);
        }
        match self.client.inner.next_retry(&mut self.budget, None) {
            Some(delay) => {
                tracing::debug!(
                    delivered = self.delivered,
                    ?delay,
                    "resuming a broken row stream: {error}"
                );
                self.client
                    .inner
                    .stats
                    .resumes
                    .fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(delay).await;
                None
            }
            None => Some(error),
        }
    }

    async fn next(&mut self) -> Option<Result<RecordBatch>> {
        if self.done {
            return None;
        }
        loop {
            if self.decoder.is_none() {
                let codec = match &self.source {
                    Source::Read(_) => self
                        .next_codec
                        .take()
                        .unwrap_or_else(|| self.client.read_codec()),
                    Source::Preview { .. } => BodyEncoding::Identity,
                };
                match self
                    .client
                    .open_rows(&self.source, self.delivered, codec, &mut self.budget)
                    .await
                {
                    Ok(Some(d)) => {
                        // A new body: its counts start anew, the segment's clock runs on.
                        if let Some(m) = &self.measuring {
                            self.measuring = Some(Measuring::new(&d, m.since));
                        }
                        self.decoder = Some(d);
                    }
                    Ok(None) => {
                        self.done = true;
                        return None;
                    }
                    Err(e) => {
                        // `execute` already retried what it could; a failure to re-open is final.
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            let decoder = self.decoder.as_mut()?;
            let next = decoder.next().await;
            match next {
                Ok(Some(batch)) => {
                    if batch.num_rows() == 0 && self.delivered_any {
                        continue;
                    }
                    if batch.num_rows() > 0 {
                        self.budget.reset();
                    }
                    self.delivered += batch.num_rows() as u64;
                    self.delivered_any = true;
                    if let Some(codec) = self.measured() {
                        // The rest in another codec: this body stops here, at a batch
                        // boundary, and the next call asks for the rows after it.
                        tracing::debug!(
                            delivered = self.delivered,
                            codec = codec.name(),
                            "changing the read compression"
                        );
                        self.decoder = None;
                        self.next_codec = Some(codec);
                        self.client
                            .inner
                            .stats
                            .codec_changes
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    return Some(Ok(batch));
                }
                Ok(None) => {
                    self.done = true;
                    if !self.delivered_any {
                        self.delivered_any = true;
                        let schema = decoder
                            .schema()
                            .unwrap_or_else(|| Arc::new(arrow_schema::Schema::empty()));
                        return Some(Ok(RecordBatch::new_empty(schema)));
                    }
                    return None;
                }
                Err(StreamError::Fatal(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Err(StreamError::Resumable(e)) => {
                    self.decoder = None;
                    let can_resume = self.resumable();
                    if let Some(e) = self.failed(e, can_resume).await {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
        }
    }
}

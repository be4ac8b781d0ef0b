//! The resumable row stream of a read (or a preview): it decodes the Arrow IPC body
//! incrementally and, when the body breaks, re-opens the read at the rows already delivered,
//! refreshing the read session ahead of its expiry or once after a `SessionExpired`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow_array::RecordBatch;

use crate::error::{Error, Result};
use crate::protocol::codec::StreamError;
use crate::protocol::storage::{Action, PreviewRequest, TableReadRequest};
use crate::service::{ReadRange, ReadRequest, RecordBatchStream, SessionStatus};
use crate::uri::TableId;

use super::RestClient;
use super::body::BodyDecoder;
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

struct ReadState {
    client: RestClient,
    source: Source,
    decoder: Option<BodyDecoder>,
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
        budget: &mut Budget,
    ) -> Result<Option<BodyDecoder>> {
        let Source::Read(request) = source else {
            return self.open_rows_once(source, delivered, budget).await;
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
        match self.open_rows_once(source, delivered, budget).await {
            Err(Error::SessionExpired { .. }) => {
                self.refresh_read_session(&request.table, &request.session_id)
                    .await
                    .map_err(|e| match e {
                        Error::SessionExpired { .. } => Error::SessionExpired {
                            session_id: request.session_id.clone(),
                        },
                        other => other,
                    })?;
                self.open_rows_once(source, delivered, budget).await
            }
            other => other,
        }
    }

    /// Issues the request for the rows not yet delivered once (with `execute`'s retries).
    async fn open_rows_once(
        &self,
        source: &Source,
        delivered: u64,
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
                call.accept_encoding = self.inner.read_compression;
                call
            }
            Source::Preview { table, body } => Call::new(Action::TablePreview, table, body),
        };
        call.streaming = true;
        let resp = self.inner.execute_in(&call, budget).await?;
        BodyDecoder::new(resp).map(Some)
    }

    pub(super) fn row_stream(
        &self,
        source: Source,
        first: BodyDecoder,
        budget: Budget,
    ) -> RecordBatchStream {
        let state = ReadState {
            client: self.clone(),
            source,
            decoder: Some(first),
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

impl ReadState {
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
                match self
                    .client
                    .open_rows(&self.source, self.delivered, &mut self.budget)
                    .await
                {
                    Ok(Some(d)) => self.decoder = Some(d),
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
            match decoder.next().await {
                Ok(Some(batch)) => {
                    if batch.num_rows() == 0 && self.delivered_any {
                        continue;
                    }
                    if batch.num_rows() > 0 {
                        self.budget.reset();
                    }
                    self.delivered += batch.num_rows() as u64;
                    self.delivered_any = true;
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

//! The request machinery: one Storage API [`Call`], signed and sent once, executed with
//! retries within a [`Budget`], as a JSON call or a streamed read; and the discovery of a
//! project's tunnel endpoint.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::auth::sign_request;
use crate::error::{Error, Result};
use crate::protocol::codec::BodyEncoding;
use crate::protocol::error::{ErrorContext, from_response};
use crate::protocol::headers;
use crate::protocol::storage::{Action, malformed};
use crate::uri::TableId;

use super::Inner;
use super::retry::{self, Backoff, Idempotency, RetryConfig};

/// The user agent: `paiio-rs/<version>`.
pub const USER_AGENT: &str = concat!("paiio-rs/", env!("CARGO_PKG_VERSION"));

const MAX_ERROR_BODY: usize = 64 << 10;

/// Characters kept as they are in query values: RFC 3986 unreserved.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub(super) fn enc(v: &str) -> String {
    utf8_percent_encode(v, QUERY_VALUE).to_string()
}

/// The retry budget of one run of attempts without progress.
pub(super) struct Budget {
    backoff: Backoff,
    /// The first failure of the run: its time budget counts from there, so a consumer that
    /// paused between reads (while the service cut the idle stream) still gets its retries.
    failing_since: Option<Instant>,
    pub(super) attempts: u64,
}

impl Budget {
    pub(super) fn new(config: &RetryConfig) -> Self {
        Budget {
            backoff: Backoff::new(config),
            failing_since: None,
            attempts: 0,
        }
    }

    /// Progress was made: a new run starts.
    pub(super) fn reset(&mut self) {
        self.backoff.reset();
        self.failing_since = None;
        self.attempts = 0;
    }

    /// How long the run has been failing (from now on, at its first failure).
    fn failing_for(&mut self) -> Duration {
        self.failing_since
            .get_or_insert_with(Instant::now)
            .elapsed()
    }
}

pub(super) enum CallBody {
    Json(Bytes),
    Arrow(Bytes),
}

/// One HTTP request, relative to a base URL (the tunnel endpoint): what the retry loop
/// signs and sends on every attempt.
pub(super) struct Request {
    pub(super) method: reqwest::Method,
    /// The path and query, percent-encoded as sent (and signed).
    pub(super) relative: String,
    /// Headers besides the user agents, the date and the signature.
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Bytes,
    pub(super) idempotency: Idempotency,
    /// The body is streamed back: no whole-request timeout.
    pub(super) streaming: bool,
    /// Sends the Tunnel's `odps-tunnel-retry-trace-id` / `odps-tunnel-retry-index`.
    pub(super) retry_headers: bool,
    /// A row read that may go on a direct connection (`direct.rs`).
    pub(super) direct: bool,
    /// The call's name in messages.
    pub(super) what: String,
}

/// One Storage API call.
pub(super) struct Call {
    action: Action,
    table: TableId,
    params: Vec<(&'static str, String)>,
    pub(super) body: CallBody,
    session: Option<String>,
    pub(super) headers: Vec<(String, String)>,
    idempotency: Idempotency,
    pub(super) accept_encoding: Option<BodyEncoding>,
    /// Reads stream their body: no whole-request timeout.
    pub(super) streaming: bool,
    pub(super) ctx: ErrorContext,
}

impl Call {
    pub(super) fn new(action: Action, table: &TableId, body: &impl Serialize) -> Self {
        Call {
            action,
            table: table.clone(),
            params: Vec::new(),
            body: CallBody::Json(Bytes::new()),
            session: None,
            headers: Vec::new(),
            idempotency: Idempotency::Safe,
            accept_encoding: None,
            streaming: false,
            ctx: ErrorContext {
                action: Some(action),
                table: Some(table.to_string()),
                ..Default::default()
            },
        }
        .json_body(body)
    }

    pub(super) fn session(mut self, session_id: &str) -> Self {
        self.params.push(("SessionId", session_id.to_string()));
        self.session = Some(session_id.to_string());
        self.ctx.session_id = Some(session_id.to_string());
        self
    }

    pub(super) fn json_body(mut self, body: &impl Serialize) -> Self {
        // The message types serialize infallibly (string keys only).
        let json = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
        self.body = CallBody::Json(Bytes::from(json));
        self
    }

    pub(super) fn param(mut self, name: &'static str, value: impl ToString) -> Self {
        self.params.push((name, value.to_string()));
        self
    }

    pub(super) fn unsafe_to_repeat(mut self) -> Self {
        self.idempotency = Idempotency::Unsafe;
        self
    }
}

/// The most bytes a whole (JSON or XML) answer may hold: a session, a table's metadata, a
/// page of partitions. Row data streams and is bounded by its own decoders.
pub(super) const MAX_ANSWER_BYTES: usize = 256 << 20;

/// Why a whole answer could not be read.
pub(super) enum AnswerError {
    /// The connection failed: the call may be sent again.
    Transport(reqwest::Error),
    /// More than [`MAX_ANSWER_BYTES`]: never retried.
    TooLarge,
}

impl AnswerError {
    /// The error, naming `what` was read.
    pub(super) fn into_error(self, what: &str) -> Error {
        match self {
            AnswerError::Transport(e) => transport_error(what, e),
            AnswerError::TooLarge => Error::Corrupt {
                location: format!("the answer to {what}"),
                message: format!("it is larger than {MAX_ANSWER_BYTES} bytes"),
            },
        }
    }

    pub(super) fn is_transport(&self) -> bool {
        matches!(self, AnswerError::Transport(_))
    }
}

/// Reads a whole answer, refusing one past [`MAX_ANSWER_BYTES`] before holding it.
pub(super) async fn answer_bytes(
    resp: reqwest::Response,
) -> std::result::Result<Bytes, AnswerError> {
    answer_within(resp, MAX_ANSWER_BYTES).await
}

async fn answer_within(
    mut resp: reqwest::Response,
    limit: usize,
) -> std::result::Result<Bytes, AnswerError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(AnswerError::TooLarge);
    }
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(AnswerError::Transport)? {
        if out.len() + chunk.len() > limit {
            return Err(AnswerError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

pub(super) fn transport_error(action: impl std::fmt::Display, e: reqwest::Error) -> Error {
    let what = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "failed"
    };
    Error::Transient {
        message: format!("{action} {what}: {e}"),
        retryable: true,
        source: Some(Box::new(e)),
    }
}

/// Why a request got no answer.
pub(super) enum SendError {
    Http(reqwest::Error),
    #[cfg(unix)]
    Direct(super::direct::DirectError),
}

impl SendError {
    /// The request cannot have reached the server: any call may be sent again.
    fn before_send(&self) -> bool {
        match self {
            SendError::Http(e) => retry::failed_before_send(e),
            #[cfg(unix)]
            SendError::Direct(e) => e.before_send && !e.invalid,
        }
    }

    fn into_error(self, action: &str) -> Error {
        match self {
            SendError::Http(e) => transport_error(action, e),
            #[cfg(unix)]
            SendError::Direct(e) => {
                let what = if e.before_send {
                    "cannot connect"
                } else if e.error.kind() == std::io::ErrorKind::TimedOut {
                    "timed out"
                } else {
                    "failed"
                };
                Error::Transient {
                    message: format!("{action} {what}: {e}"),
                    retryable: !e.invalid,
                    source: Some(Box::new(e.error)),
                }
            }
        }
    }
}

pub(super) fn header_str(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|v| !v.is_empty())
}

impl Inner {
    fn curr_project<'a>(&'a self, table: &'a TableId) -> &'a str {
        self.project
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or(&table.project)
    }

    /// Signs `headers` for `method` and the URL relative to its base.
    pub(super) fn sign(&self, method: &str, relative: &str, headers: &mut Vec<(String, String)>) {
        if let Some(creds) = &self.credentials {
            sign_request(
                creds,
                &self.signature,
                method,
                relative,
                headers,
                SystemTime::now(),
            );
        }
    }

    pub(super) fn base_headers(&self) -> Vec<(String, String)> {
        vec![
            ("User-Agent".into(), self.user_agent.clone()),
            (headers::ODPS_USER_AGENT.into(), self.user_agent.clone()),
        ]
    }

    pub(super) async fn tunnel_for(&self, project: &str) -> Result<String> {
        if let Some(t) = &self.tunnel {
            return Ok(t.clone());
        }
        if let Some(t) = self.tunnels.lock().get(project) {
            return Ok(t.clone());
        }
        let found = self.discover(project).await?;
        self.tunnels
            .lock()
            .insert(project.to_string(), found.clone());
        Ok(found)
    }

    /// `GET {endpoint}/projects/{p}/tunnel?service&curr_project=p` (docs/storage-api.md §4.3).
    async fn discover(&self, project: &str) -> Result<String> {
        let curr = self
            .project
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or(project);
        let mut relative = format!(
            "/projects/{}/tunnel?service&curr_project={}",
            enc(project),
            enc(curr)
        );
        if let Some(q) = &self.quota_name {
            relative.push_str(&format!("&quotaName={}", enc(q)));
        }
        let url = format!("{}{relative}", self.endpoint);
        let started = Instant::now();
        let mut backoff = Backoff::new(&self.retry);
        loop {
            let mut headers = self.base_headers();
            self.sign("GET", &relative, &mut headers);
            let mut req = self.http.get(&url).timeout(self.request_timeout);
            for (k, v) in &headers {
                req = req.header(k, v);
            }
            let (error, before_send, retry_after) = match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    let text = resp
                        .text()
                        .await
                        .map_err(|e| transport_error("tunnel discovery", e))?;
                    let text = text.trim().trim_end_matches('/');
                    if text.is_empty() {
                        return Err(Error::Service {
                            status: 200,
                            code: "EmptyTunnelEndpoint".into(),
                            message: format!(
                                "tunnel discovery for project {project} answered nothing"
                            ),
                            request_id: String::new(),
                        });
                    }
                    if text.starts_with("http://") || text.starts_with("https://") {
                        return Ok(text.to_string());
                    }
                    let scheme = if self.endpoint.starts_with("https://") {
                        "https"
                    } else {
                        "http"
                    };
                    return Ok(format!("{scheme}://{text}"));
                }
                Ok(resp) => {
                    let retry_after = header_str(resp.headers(), "retry-after")
                        .and_then(|v| retry::parse_retry_after(&v));
                    (
                        self.error_of(resp, &ErrorContext::default()).await,
                        false,
                        retry_after,
                    )
                }
                Err(e) => {
                    let before = retry::failed_before_send(&e);
                    (transport_error("tunnel discovery", e), before, None)
                }
            };
            if !retry::should_retry(&error, before_send, Idempotency::Safe) {
                return Err(error);
            }
            match backoff.next_retry(started.elapsed(), retry_after) {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(error),
            }
        }
    }

    pub(super) async fn error_of(&self, resp: reqwest::Response, ctx: &ErrorContext) -> Error {
        let status = resp.status().as_u16();
        let request_id = header_str(resp.headers(), headers::REQUEST_ID);
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        use futures::StreamExt;
        while let Some(Ok(chunk)) = stream.next().await {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_ERROR_BODY {
                break;
            }
        }
        from_response(status, request_id.as_deref(), &body, ctx)
    }

    /// The request of a Storage API call (not yet signed).
    fn prepare(&self, call: &Call) -> Request {
        let mut query = format!(
            "Action={}&Target={}",
            call.action.as_str(),
            enc(&call.table.target())
        );
        for (k, v) in &call.params {
            query.push_str(&format!("&{k}={}", enc(v)));
        }
        query.push_str(&format!(
            "&curr_project={}",
            enc(self.curr_project(&call.table))
        ));
        if let Some(q) = &self.quota_name {
            query.push_str(&format!("&quotaName={}", enc(q)));
        }
        let mut headers = Vec::new();
        let (content_type, body) = match &call.body {
            CallBody::Json(b) => (headers::JSON_CONTENT_TYPE, b.clone()),
            CallBody::Arrow(b) => (headers::ARROW_CONTENT_TYPE, b.clone()),
        };
        headers.push(("Content-Type".into(), content_type.into()));
        if let Some(session) = &call.session
            && let Some(token) = self.route_tokens.lock().get(session)
        {
            headers.push((headers::ROUTE_TOKEN.into(), token.clone()));
        }
        headers.extend(call.headers.iter().cloned());
        if let Some(c) = call.accept_encoding {
            headers.push(("Accept-Encoding".into(), c.name().into()));
        }
        Request {
            method: reqwest::Method::POST,
            relative: format!("/api/storage/v2?{query}"),
            headers,
            body,
            idempotency: call.idempotency,
            streaming: call.streaming,
            retry_headers: false,
            direct: call.streaming && call.action == Action::TableRead,
            what: call.action.as_str().to_string(),
        }
    }

    /// Sends a request once to `base`, signed, with the user agents; `attempt` is the index
    /// of this attempt (sent in the Tunnel's retry headers when the request asks for them).
    async fn send_once(
        &self,
        base: &str,
        request: &Request,
        trace_id: &str,
        attempt: u64,
    ) -> std::result::Result<reqwest::Response, SendError> {
        let url = format!("{base}{}", request.relative);
        let mut headers = self.base_headers();
        headers.extend(request.headers.iter().cloned());
        if request.retry_headers {
            headers.push((headers::RETRY_TRACE_ID.into(), trace_id.to_string()));
            headers.push((headers::RETRY_INDEX.into(), attempt.to_string()));
        }
        self.sign(request.method.as_str(), &request.relative, &mut headers);
        #[cfg(unix)]
        if request.direct
            && let Some(direct) = &self.direct
            && super::direct::DirectPool::takes(&url)
        {
            let method = request.method.as_str();
            return direct
                .send(&url, method, &headers, &request.body)
                .await
                .map_err(SendError::Direct);
        }
        let mut req = self
            .http
            .request(request.method.clone(), &url)
            .body(request.body.clone());
        if !request.streaming {
            req = req.timeout(self.request_timeout);
        }
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        req.send().await.map_err(SendError::Http)
    }

    fn keep_route_token(&self, session: Option<&str>, headers: &reqwest::header::HeaderMap) {
        if let (Some(session), Some(token)) = (session, header_str(headers, headers::ROUTE_TOKEN)) {
            self.route_tokens.lock().insert(session.to_string(), token);
        }
    }

    /// Counts one attempt of the current run.
    fn count_attempt(&self, budget: &mut Budget) {
        budget.attempts += 1;
        self.stats.attempts.fetch_add(1, Ordering::Relaxed);
        self.stats
            .max_run_attempts
            .fetch_max(budget.attempts, Ordering::Relaxed);
    }

    /// The sleep before another attempt of the run, or `None` when its budget is spent.
    pub(super) fn next_retry(
        &self,
        budget: &mut Budget,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let failing_for = budget.failing_for();
        match budget.backoff.next_retry(failing_for, retry_after) {
            Some(delay) => {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                Some(delay)
            }
            None => {
                self.stats.budget_exhausted.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Sends a call with retries (per its idempotency) until a 2xx answer, within `budget`
    /// (shared with the caller's other attempts of the same run).
    pub(super) async fn execute_in(
        &self,
        call: &Call,
        budget: &mut Budget,
    ) -> Result<reqwest::Response> {
        let base = self.tunnel_for(&call.table.project).await?;
        let request = self.prepare(call);
        let resp = self
            .execute_request(&base, &request, &call.ctx, budget)
            .await?;
        self.keep_route_token(call.session.as_deref(), resp.headers());
        Ok(resp)
    }

    /// Sends `request` to `base` with retries (per its idempotency) until a 2xx answer,
    /// within `budget`: the one retry loop of the Storage API and the Tunnel.
    pub(super) async fn execute_request(
        &self,
        base: &str,
        request: &Request,
        ctx: &ErrorContext,
        budget: &mut Budget,
    ) -> Result<reqwest::Response> {
        let trace_id = if request.retry_headers {
            uuid::Uuid::new_v4().to_string()
        } else {
            String::new()
        };
        let mut attempt = 0u64;
        loop {
            self.count_attempt(budget);
            let sent = self.send_once(base, request, &trace_id, attempt).await;
            attempt += 1;
            let (error, before_send, retry_after) = match sent {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let retry_after = header_str(resp.headers(), "retry-after")
                        .and_then(|v| retry::parse_retry_after(&v));
                    (self.error_of(resp, ctx).await, false, retry_after)
                }
                Err(e) => {
                    let before = e.before_send();
                    (e.into_error(&request.what), before, None)
                }
            };
            if !retry::should_retry(&error, before_send, request.idempotency) {
                return Err(error);
            }
            match self.next_retry(budget, retry_after) {
                Some(delay) => {
                    tracing::debug!(
                        call = request.what.as_str(),
                        retry = budget.backoff.retries(),
                        ?delay,
                        "retrying: {error}"
                    );
                    tokio::time::sleep(delay).await;
                }
                None => return Err(error),
            }
        }
    }

    /// A JSON call: the answer's body (as `{}` when empty) and its route token.
    pub(super) async fn json<T: DeserializeOwned>(
        &self,
        call: &Call,
    ) -> Result<(T, Option<String>)> {
        self.json_in(call, &mut Budget::new(&self.retry)).await
    }

    /// [`Self::json`] within `budget` (which tells the caller how many attempts were made).
    pub(super) async fn json_in<T: DeserializeOwned>(
        &self,
        call: &Call,
        budget: &mut Budget,
    ) -> Result<(T, Option<String>)> {
        loop {
            let resp = self.execute_in(call, budget).await?;
            let token = header_str(resp.headers(), headers::ROUTE_TOKEN);
            let request_id = header_str(resp.headers(), headers::REQUEST_ID).unwrap_or_default();
            match answer_bytes(resp).await {
                Ok(body) => {
                    let parsed = if body.iter().all(u8::is_ascii_whitespace) {
                        Ok(json!({}))
                    } else {
                        serde_json::from_slice(&body)
                    };
                    let error = match parsed {
                        Ok(v) => {
                            return crate::protocol::from_value(v)
                                .map(|answer| (answer, token))
                                .map_err(|e| malformed(call.action.as_str(), e));
                        }
                        Err(e) => Error::Service {
                            status: 200,
                            code: "ParseError".into(),
                            message: format!(
                                "{} answered a body that is not JSON: {e}",
                                call.action
                            ),
                            request_id,
                        },
                    };
                    // A chunked body that ends early (cleanly) parses as broken JSON: a call
                    // that is safe to repeat is asked again, within the budget, and fails
                    // as a transient error when the budget is spent.
                    if call.idempotency == Idempotency::Unsafe {
                        return Err(error);
                    }
                    let error = Error::Transient {
                        message: format!("{error} (the answer may have been cut short)"),
                        retryable: true,
                        source: None,
                    };
                    match self.next_retry(budget, None) {
                        Some(delay) => tokio::time::sleep(delay).await,
                        None => return Err(error),
                    }
                }
                Err(e) if !e.is_transport() => return Err(e.into_error(call.action.as_str())),
                Err(e) => {
                    // The body broke after a 2xx: the call did happen; repeat only safe ones.
                    let error = e.into_error(call.action.as_str());
                    if call.idempotency == Idempotency::Unsafe {
                        return Err(error);
                    }
                    match self.next_retry(budget, None) {
                        Some(delay) => tokio::time::sleep(delay).await,
                        None => return Err(error),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(body: &'static [u8]) -> reqwest::Response {
        reqwest::Response::from(http::Response::builder().status(200).body(body).unwrap())
    }

    #[tokio::test]
    async fn whole_answers_are_bounded() {
        let body = answer_bytes(response(b"{\"a\":1}")).await.ok().unwrap();
        assert_eq!(&body[..], b"{\"a\":1}");
        let within = answer_within(response(b"0123456789"), 10).await;
        assert_eq!(&within.ok().unwrap()[..], b"0123456789");
        let e = answer_within(response(b"0123456789"), 9)
            .await
            .err()
            .unwrap();
        assert!(!e.is_transport());
        let e = e.into_error("TableRead");
        assert!(e.to_string().contains("larger than"), "{e}");
        assert!(!e.is_retryable());
    }
}

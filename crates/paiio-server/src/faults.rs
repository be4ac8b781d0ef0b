//! The fault layer: injects the network and service failures of docs/reliability.md §2 (F1–F4, F6,
//! F7, F9) into chosen requests, so clients can be tested against them in-process.
//!
//! A [`FaultPlan`] is a list of [`FaultRule`]s. A rule selects requests (by their `Action`
//! query parameter, and optionally a path fragment), says when it fires ([`When`]: on the
//! n-th matching request, on the next k, with a probability drawn from a seeded RNG, or
//! always) and what happens ([`Fault`]). The first rule that fires decides; a request no
//! rule fires on is served normally.
//!
//! The plan is set with [`ServerBuilder::faults`] and, on a server built with
//! [`ServerBuilder::admin`], changed at runtime through the admin endpoints (exempt from
//! signature checks, absent otherwise):
//!
//! - `GET /__paiio/faults`: the plan, per-rule `seen`/`fired` counts, counters of fired faults
//!   per kind, and the limits' counters;
//! - `POST /__paiio/faults`: replaces the plan (a plan `{"seed":..,"rules":[..]}`, or one rule);
//! - `DELETE /__paiio/faults`: clears the plan and the counters;
//! - `POST /__paiio/clock/advance` `{"ms": N}`: moves the server's [`ManualClock`] forward
//!   (sessions expire by it), when the server was given one with [`ServerBuilder::clock`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use paiio_storage::clock::ManualClock;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::limits::{DEFAULT_MAX_CONCURRENCY, LimitState};
use crate::middleware::RequestId;
use crate::{AppState, Server, ServerBuilder};

/// What a fault does to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// The connection is dropped before any response byte (the handler does not run).
    Reset,
    /// The response starts normally and the connection is dropped after `bytes` body bytes
    /// (after the whole body, before its clean end, when the body is shorter).
    ResetAfter { bytes: u64 },
    /// The body ends cleanly (chunked, no error) after `bytes` bytes.
    Truncate { bytes: u64 },
    /// Flips one bit of the body byte at offset `byte` (F5: corruption that only a checksum,
    /// such as the CRC32C blocks of blob downloads, can catch). The body is otherwise intact.
    Corrupt { byte: u64 },
    /// Waits `ms` milliseconds: before the request is handled, or, with `after_bytes`, in the
    /// middle of the body after that many bytes.
    Stall {
        ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_bytes: Option<u64>,
    },
    /// Answers `status` (e.g. 500, 502, 503, 504, 429, 408) with the JSON error body, without
    /// running the handler. `Retry-After: retry_after` when given (429 defaults to 1 s).
    Status {
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// The handler runs (e.g. a commit is applied), then the connection is dropped instead of
    /// answering.
    #[serde(alias = "commit_lost")]
    ResponseLost,
}

impl Fault {
    /// The counter name of the fault.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Reset => "reset",
            Fault::ResetAfter { .. } => "reset_after",
            Fault::Truncate { .. } => "truncate",
            Fault::Corrupt { .. } => "corrupt",
            Fault::Stall { .. } => "stall",
            Fault::Status { .. } => "status",
            Fault::ResponseLost => "response_lost",
        }
    }

    fn validate(&self) -> Result<(), String> {
        if let Fault::Status { status, .. } = self
            && !(400..=599).contains(status)
        {
            return Err(format!("status {status} is not an error status (400-599)"));
        }
        Ok(())
    }
}

/// When a rule fires, counted over the requests it matches.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// On the n-th matching request (1-based), once.
    Nth(u64),
    /// On each of the next k matching requests.
    Next(u64),
    /// On each matching request with this probability (the plan's seeded RNG).
    Probability(f64),
    /// On every matching request.
    Always,
}

impl Default for When {
    fn default() -> Self {
        When::Next(1)
    }
}

/// One fault and the requests it applies to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// `Action` query parameters this applies to (case-insensitive), e.g. `TableRead`,
    /// `TableWrite`, `TableCommitWriteSession`, or the name of a Tunnel call (which has no
    /// `Action`: `TunnelRead`, `TunnelWriteBlock`, `TunnelCommit`, ... see
    /// `tunnel::call_name`); empty: every request.
    #[serde(default)]
    pub actions: Vec<String>,
    /// Only requests whose path contains this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_contains: Option<String>,
    pub fault: Fault,
    /// Default: `{"next": 1}` (the next matching request).
    #[serde(default)]
    pub when: When,
}

impl FaultRule {
    pub fn new(fault: Fault, when: When) -> Self {
        FaultRule {
            actions: Vec::new(),
            path_contains: None,
            fault,
            when,
        }
    }

    /// Restricts the rule to one more action.
    pub fn action(mut self, action: impl Into<String>) -> Self {
        self.actions.push(action.into());
        self
    }

    fn matches(&self, action: Option<&str>, path: &str) -> bool {
        let action_ok = self.actions.is_empty()
            || action.is_some_and(|a| self.actions.iter().any(|x| x.eq_ignore_ascii_case(a)));
        action_ok
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p))
    }
}

/// The faults a server injects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPlan {
    /// Seed of the RNG of probabilistic rules; random when absent (GET reports the one used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default)]
    pub rules: Vec<FaultRule>,
}

impl FaultPlan {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    pub fn rule(mut self, rule: FaultRule) -> Self {
        self.rules.push(rule);
        self
    }

    fn validate(&self) -> Result<(), String> {
        for (i, r) in self.rules.iter().enumerate() {
            r.fault.validate().map_err(|e| format!("rule {i}: {e}"))?;
            if let When::Probability(p) = r.when
                && !(0.0..=1.0).contains(&p)
            {
                return Err(format!("rule {i}: probability {p} is not within 0..1"));
            }
        }
        Ok(())
    }
}

/// What POST accepts: a whole plan, or a single rule.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PlanOrRule {
    Plan(FaultPlan),
    Rule(FaultRule),
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
struct RuleStats {
    seen: u64,
    fired: u64,
}

#[derive(Debug)]
struct FaultInner {
    plan: FaultPlan,
    stats: Vec<RuleStats>,
    seed: u64,
    rng: StdRng,
    fired: BTreeMap<&'static str, u64>,
}

/// The live plan and its counters.
#[derive(Debug)]
pub(crate) struct FaultState {
    inner: Mutex<FaultInner>,
}

impl FaultState {
    fn new(plan: FaultPlan) -> Self {
        let state = FaultState {
            inner: Mutex::new(FaultInner {
                plan: FaultPlan::default(),
                stats: Vec::new(),
                seed: 0,
                rng: StdRng::seed_from_u64(0),
                fired: BTreeMap::new(),
            }),
        };
        state.set(plan);
        state
    }

    /// Replaces the plan; the per-kind counters carry on.
    fn set(&self, plan: FaultPlan) {
        let seed = plan.seed.unwrap_or_else(|| rand::rng().random());
        let mut inner = self.inner.lock();
        inner.stats = vec![RuleStats::default(); plan.rules.len()];
        inner.plan = plan;
        inner.seed = seed;
        inner.rng = StdRng::seed_from_u64(seed);
    }

    fn clear(&self) {
        self.set(FaultPlan::default());
        self.inner.lock().fired.clear();
    }

    /// Decides whether a fault fires on this request.
    fn decide(&self, action: Option<&str>, path: &str) -> Option<Fault> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        if inner.plan.rules.is_empty() {
            return None;
        }
        for (rule, stats) in inner.plan.rules.iter().zip(inner.stats.iter_mut()) {
            if !rule.matches(action, path) {
                continue;
            }
            stats.seen += 1;
            let fire = match rule.when {
                When::Nth(n) => stats.seen == n,
                When::Next(k) => stats.fired < k,
                When::Probability(p) => inner.rng.random::<f64>() < p,
                When::Always => true,
            };
            if fire {
                stats.fired += 1;
                *inner.fired.entry(rule.fault.kind()).or_insert(0) += 1;
                return Some(rule.fault.clone());
            }
        }
        None
    }

    fn json(&self) -> Value {
        let inner = self.inner.lock();
        let rules: Vec<Value> = inner
            .plan
            .rules
            .iter()
            .zip(&inner.stats)
            .map(|(r, s)| {
                let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
                if let Value::Object(m) = &mut v {
                    m.insert("seen".into(), s.seen.into());
                    m.insert("fired".into(), s.fired.into());
                }
                v
            })
            .collect();
        let total: u64 = inner.fired.values().sum();
        json!({"seed": inner.seed, "rules": rules, "counters": inner.fired, "fired": total})
    }
}

/// The builder's options of the fault layer and the limits.
#[derive(Debug, Clone)]
pub(crate) struct RealismOptions {
    pub plan: FaultPlan,
    pub admin: bool,
    pub clock: Option<ManualClock>,
    pub stream_rate: Option<u64>,
    pub max_concurrency: usize,
}

impl Default for RealismOptions {
    fn default() -> Self {
        RealismOptions {
            plan: FaultPlan::default(),
            admin: false,
            clock: None,
            stream_rate: None,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
        }
    }
}

/// The server's state of the fault layer and the limits.
#[derive(Debug)]
pub(crate) struct Realism {
    pub admin: bool,
    pub clock: Option<ManualClock>,
    pub faults: FaultState,
    pub limits: LimitState,
}

impl Realism {
    pub fn new(options: RealismOptions) -> Self {
        Realism {
            admin: options.admin,
            clock: options.clock,
            faults: FaultState::new(options.plan),
            limits: LimitState::new(options.stream_rate, options.max_concurrency),
        }
    }

    fn json(&self) -> Value {
        let mut v = self.faults.json();
        if let Value::Object(m) = &mut v {
            m.insert("limits".into(), self.limits.stats_json());
        }
        v
    }
}

impl ServerBuilder {
    /// The faults to inject from the start (none by default).
    pub fn faults(mut self, plan: FaultPlan) -> Self {
        self.realism.plan = plan;
        self
    }

    /// Serves the admin endpoints under `/__paiio/` (fault plan, clock). They skip signature
    /// checks, so only test servers should have them. Off by default.
    pub fn admin(mut self, admin: bool) -> Self {
        self.realism.admin = admin;
        self
    }

    /// The clock the service expires sessions by, shared with the service (the server only
    /// advances it, through `POST /__paiio/clock/advance`).
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.realism.clock = Some(clock);
        self
    }
}

/// Changes a server's faults from Rust (the same as the admin endpoints).
#[derive(Debug, Clone)]
pub struct FaultControl {
    state: Arc<AppState>,
}

impl FaultControl {
    /// Replaces the plan.
    pub fn set(&self, plan: FaultPlan) -> paiio_storage::Result<()> {
        plan.validate()
            .map_err(|e| paiio_storage::Error::invalid("fault plan", e))?;
        self.state.realism.faults.set(plan);
        Ok(())
    }

    /// Clears the plan and the counters.
    pub fn clear(&self) {
        self.state.realism.faults.clear();
    }

    /// The plan, counters and limits, as `GET /__paiio/faults` answers.
    pub fn status(&self) -> Value {
        status_json(&self.state)
    }
}

impl Server {
    /// A handle to change the server's faults while it runs.
    pub fn fault_control(&self) -> FaultControl {
        FaultControl {
            state: self.state.clone(),
        }
    }
}

/// The `Action` query parameter, if any.
fn action_of(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == "Action").then(|| v.to_string())
    })
}

/// A response that makes the server drop the connection without answering: its body fails
/// at once, before hyper has flushed the (buffered) status line.
fn dropped_connection() -> Response {
    let body = futures::stream::once(async {
        Err::<Bytes, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "paiio fault: connection reset",
        ))
    });
    Response::new(Body::from_stream(body))
}

fn status_response(
    request_id: Option<String>,
    status: u16,
    retry_after: Option<u64>,
    code: Option<String>,
    message: Option<String>,
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let code = code.unwrap_or_else(|| {
        match status.as_u16() {
            408 => "RequestTimeout",
            429 => "SlotExceeded",
            500 => "InternalServerError",
            502 => "BadGateway",
            503 => "ServiceUnavailable",
            504 => "GatewayTimeout",
            _ => "InjectedFault",
        }
        .to_string()
    });
    let message = message.unwrap_or_else(|| format!("injected fault: {status}"));
    let mut err = ApiError::new(status, code, message);
    err.request_id = request_id;
    let mut response = err.into_response();
    let retry_after = retry_after.or((status == StatusCode::TOO_MANY_REQUESTS).then_some(1));
    if let Some(s) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    response
}

/// What happens to the body once `limit` bytes have gone out.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Drop the connection (also when the body ends before `limit`).
    Reset,
    /// End the body cleanly.
    Truncate,
    /// Wait, then carry on.
    Stall(Duration),
    /// Flip the lowest bit of the byte at the limit, then carry on.
    Flip,
}

/// Wraps a response body: after `limit` bytes, `cut` happens.
fn cut_body(response: Response, limit: u64, cut: Cut) -> Response {
    let (mut parts, body) = response.into_parts();
    if matches!(cut, Cut::Reset | Cut::Truncate) {
        // Chunked, so a short body is a clean (truncate) or broken (reset) chunked stream.
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    struct St {
        inner: axum::body::BodyDataStream,
        pending: Bytes,
        sent: u64,
        done: bool,
        cut_done: bool,
    }
    let st = St {
        inner: body.into_data_stream(),
        pending: Bytes::new(),
        sent: 0,
        done: false,
        cut_done: false,
    };
    let stream = futures::stream::unfold(st, move |mut st| async move {
        if st.done {
            return None;
        }
        if st.sent >= limit && !st.cut_done {
            match cut {
                Cut::Reset => {
                    // Let hyper flush what was sent before dropping the connection.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    st.done = true;
                    return Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "paiio fault: connection reset mid-body",
                        )),
                        st,
                    ));
                }
                Cut::Truncate => return None,
                Cut::Stall(d) => {
                    st.cut_done = true;
                    tokio::time::sleep(d).await;
                }
                Cut::Flip => {}
            }
        }
        if st.pending.is_empty() {
            match st.inner.next().await {
                Some(Ok(b)) => st.pending = b,
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(std::io::Error::other(e)), st));
                }
                None => {
                    if matches!(cut, Cut::Reset) && !st.cut_done {
                        // Shorter than the limit: break the stream before its clean end.
                        st.sent = limit;
                        return Some((Ok(Bytes::new()), st));
                    }
                    return None;
                }
            }
        }
        if matches!(cut, Cut::Flip) && !st.cut_done && st.sent >= limit && !st.pending.is_empty() {
            let mut bytes = st.pending.to_vec();
            bytes[0] ^= 1;
            st.pending = Bytes::from(bytes);
            st.cut_done = true;
        }
        let take = if st.cut_done {
            st.pending.len()
        } else {
            st.pending.len().min((limit - st.sent) as usize)
        };
        let out = st.pending.split_to(take);
        st.sent += take as u64;
        Some((Ok(out), st))
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// The fault layer.
pub(crate) async fn fault_layer(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let action = action_of(request.uri().query()).or_else(|| {
        crate::tunnel::is_tunnel_path(request.uri().path())
            .then(|| crate::tunnel::call_name(request.method(), request.uri().query()))
            .flatten()
            .map(str::to_string)
    });
    let Some(fault) = state
        .realism
        .faults
        .decide(action.as_deref(), request.uri().path())
    else {
        return next.run(request).await;
    };
    tracing::info!(
        action = action.as_deref().unwrap_or(""),
        fault = fault.kind(),
        "injecting a fault"
    );
    match fault {
        Fault::Reset => dropped_connection(),
        Fault::ResponseLost => {
            let response = next.run(request).await;
            // Let the handler's work complete, but never send its answer.
            drop(response);
            dropped_connection()
        }
        Fault::Status {
            status,
            retry_after,
            code,
            message,
        } => {
            let id = request.extensions().get::<RequestId>().map(|r| r.0.clone());
            status_response(id, status, retry_after, code, message)
        }
        Fault::Stall {
            ms,
            after_bytes: None,
        } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            next.run(request).await
        }
        Fault::Stall {
            ms,
            after_bytes: Some(n),
        } => cut_body(
            next.run(request).await,
            n,
            Cut::Stall(Duration::from_millis(ms)),
        ),
        Fault::ResetAfter { bytes } => cut_body(next.run(request).await, bytes, Cut::Reset),
        Fault::Truncate { bytes } => cut_body(next.run(request).await, bytes, Cut::Truncate),
        Fault::Corrupt { byte } => cut_body(next.run(request).await, byte, Cut::Flip),
    }
}

// ---- admin endpoints ----

/// Adds the admin routes (unauthenticated) when the server was built with `admin(true)`.
pub(crate) fn with_admin_routes(
    router: Router<Arc<AppState>>,
    state: &AppState,
) -> Router<Arc<AppState>> {
    if !state.realism.admin {
        return router;
    }
    router.merge(
        Router::new()
            .route(
                "/__paiio/faults",
                get(get_faults).post(post_faults).delete(delete_faults),
            )
            .route("/__paiio/clock/advance", post(advance_clock)),
    )
}

async fn get_faults(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(status_json(&state)).into_response()
}

/// The plan, the counters, and the limits with the count of open connections.
fn status_json(state: &AppState) -> Value {
    let mut v = state.realism.json();
    if let Some(limits) = v.get_mut("limits").and_then(Value::as_object_mut) {
        limits.insert("open_connections".into(), state.connections.open().into());
    }
    v
}

async fn post_faults(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let plan = match serde_json::from_slice::<PlanOrRule>(&body) {
        Ok(PlanOrRule::Plan(p)) => p,
        Ok(PlanOrRule::Rule(r)) => FaultPlan {
            seed: None,
            rules: vec![r],
        },
        Err(e) => return ApiError::invalid(format!("malformed fault plan: {e}")).into_response(),
    };
    if let Err(e) = plan.validate() {
        return ApiError::invalid(format!("fault plan: {e}")).into_response();
    }
    state.realism.faults.set(plan);
    get_faults(State(state)).await
}

async fn delete_faults(State(state): State<Arc<AppState>>) -> Response {
    state.realism.faults.clear();
    get_faults(State(state)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvanceBody {
    ms: i64,
}

async fn advance_clock(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let Some(clock) = &state.realism.clock else {
        return ApiError::new(
            StatusCode::CONFLICT,
            "NotSupported",
            "this server was not built with a manual clock (ServerBuilder::clock)",
        )
        .into_response();
    };
    let body: AdvanceBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return ApiError::invalid(format!("expected {{\"ms\": N}}: {e}")).into_response(),
    };
    // Checked: a move that would overflow (or pass the year 9999) is refused, not wrapped.
    match clock.try_advance_ms(body.ms) {
        Ok(now_ms) => axum::Json(json!({"advanced_ms": body.ms, "now_ms": now_ms})).into_response(),
        Err(e) => ApiError::invalid(format!("ms {}: {e}", body.ms)).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_json_round_trip() {
        let text = r#"{"seed": 7, "rules": [
            {"actions": ["TableRead"], "fault": {"kind": "reset_after", "bytes": 100}, "when": {"nth": 2}},
            {"fault": {"kind": "status", "status": 429, "retry_after": 3}, "when": "always"},
            {"fault": {"kind": "commit_lost"}},
            {"fault": {"kind": "stall", "ms": 50}, "when": {"probability": 0.5}}
        ]}"#;
        let plan: FaultPlan = serde_json::from_str(text).unwrap();
        assert_eq!(plan.rules.len(), 4);
        assert_eq!(plan.rules[0].when, When::Nth(2));
        assert_eq!(plan.rules[2].fault, Fault::ResponseLost);
        assert_eq!(plan.rules[2].when, When::Next(1));
        let back: FaultPlan = serde_json::from_value(serde_json::to_value(&plan).unwrap()).unwrap();
        assert_eq!(back, plan);
        let one: PlanOrRule = serde_json::from_str(r#"{"fault": {"kind": "reset"}}"#).unwrap();
        assert!(matches!(one, PlanOrRule::Rule(_)));
    }

    #[test]
    fn schedules() {
        let s = FaultState::new(
            FaultPlan::new()
                .rule(FaultRule::new(Fault::Reset, When::Nth(2)).action("TableRead"))
                .rule(
                    FaultRule::new(Fault::Truncate { bytes: 1 }, When::Next(2))
                        .action("TableWrite"),
                ),
        );
        let read = |s: &FaultState| {
            s.decide(Some("TableRead"), "/api/storage/v2")
                .map(|f| f.kind())
        };
        let write = |s: &FaultState| {
            s.decide(Some("TableWrite"), "/api/storage/v2")
                .map(|f| f.kind())
        };
        assert_eq!(read(&s), None);
        assert_eq!(read(&s), Some("reset"));
        assert_eq!(read(&s), None);
        assert_eq!(write(&s), Some("truncate"));
        assert_eq!(write(&s), Some("truncate"));
        assert_eq!(write(&s), None);
        assert_eq!(s.decide(None, "/api/tenants"), None);
        let v = s.json();
        assert_eq!(v["counters"]["reset"], 1);
        assert_eq!(v["counters"]["truncate"], 2);
        assert_eq!(v["rules"][0]["seen"], 3);
    }

    #[test]
    fn probability_is_seeded() {
        let draw = || {
            let s = FaultState::new(
                FaultPlan::new()
                    .seed(42)
                    .rule(FaultRule::new(Fault::Reset, When::Probability(0.3))),
            );
            (0..200)
                .map(|_| s.decide(None, "/").is_some())
                .collect::<Vec<_>>()
        };
        let a = draw();
        assert_eq!(a, draw());
        let n = a.iter().filter(|x| **x).count();
        assert!((30..90).contains(&n), "{n} of 200 fired");
    }
}

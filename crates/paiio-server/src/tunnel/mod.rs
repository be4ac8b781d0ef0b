//! The MaxCompute Tunnel (docs/tunnel.md §2): download and upload sessions over the backend,
//! at `/projects/{p}[/schemas/{s}]/tables/{t}` on the endpoint that tunnel discovery names
//! (this same server).
//!
//! A call is told apart by its query, as PyODPS and the Java SDK send it:
//!
//! | method | query | call |
//! |---|---|---|
//! | POST | `downloads` | create a download session (a RowOffset read session) |
//! | GET | `downloadid` and `data` | read a row range, as records or (`arrow`) Arrow |
//! | GET | `downloadid` | reload a download session |
//! | POST | `uploads` | create an upload session (a block-model write session) |
//! | PUT | `uploadid` and `blockid` | write one block (a repeated block id replaces it) |
//! | GET | `uploadid` | reload an upload session |
//! | POST | `uploadid` | commit |
//!
//! Errors go out as XML (`<Error><Code/><Message/><RequestId/></Error>`), the only form
//! PyODPS's Tunnel error parser reads (see `middleware::request_id`).

mod download;
mod upload;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use paiio_storage::protocol::tunnel::WireError;
use paiio_storage::{Column, PartitionSpec, TableId, TableSchema};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::request::Params;

type Shared = Arc<AppState>;

/// Where Tunnel calls live: under the tunnel endpoint, without the `/api` prefix.
pub(crate) fn is_tunnel_path(path: &str) -> bool {
    path.starts_with("/projects/")
}

/// The Tunnel routes, in both table shapes (with and without `/schemas/{schema}`).
pub(crate) fn router() -> Router<Shared> {
    Router::new()
        .route("/projects/{project}/tables/{table}", any(dispatch))
        .route(
            "/projects/{project}/schemas/{schema}/tables/{table}",
            any(dispatch),
        )
}

async fn dispatch(
    State(state): State<Shared>,
    method: Method,
    Path(path): Path<HashMap<String, String>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let table = crate::v1::table_id(&path)?;
        let has = |k: &str| params.contains_key(k);
        match method {
            Method::POST if has("downloads") => download::create(&state, table, &params).await,
            Method::GET if has("downloadid") && has("data") => {
                download::read(&state, table, &params, &headers).await
            }
            Method::GET if has("downloadid") => download::reload(&state, table, &params).await,
            Method::POST if has("uploads") => upload::create(&state, table, &params).await,
            Method::PUT if has("uploadid") && has("blockid") => {
                upload::block(&state, table, &params, &headers, body).await
            }
            Method::GET if has("uploadid") => upload::reload(&state, table, &params).await,
            Method::POST if has("uploadid") => upload::commit(&state, table, &params).await,
            _ => Err(ApiError::invalid(format!(
                "not a Tunnel call: {method} with the query parameters {:?}",
                sorted_keys(&params)
            ))),
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The name of a Tunnel call, as the fault layer matches it (a Tunnel call has no `Action`):
/// `TunnelCreateDownload`, `TunnelRead`, `TunnelReloadDownload`, `TunnelCreateUpload`,
/// `TunnelWriteBlock`, `TunnelReloadUpload` or `TunnelCommit`; `None` for anything else.
pub(crate) fn call_name(method: &Method, query: Option<&str>) -> Option<&'static str> {
    let keys: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .map(|kv| kv.split_once('=').map_or(kv, |(k, _)| k))
        .collect();
    let has = |k: &str| keys.contains(&k);
    Some(match *method {
        Method::POST if has("downloads") => "TunnelCreateDownload",
        Method::GET if has("downloadid") && has("data") => "TunnelRead",
        Method::GET if has("downloadid") => "TunnelReloadDownload",
        Method::POST if has("uploads") => "TunnelCreateUpload",
        Method::PUT if has("uploadid") && has("blockid") => "TunnelWriteBlock",
        Method::GET if has("uploadid") => "TunnelReloadUpload",
        Method::POST if has("uploadid") => "TunnelCommit",
        _ => return None,
    })
}

fn sorted_keys(params: &Params) -> Vec<&str> {
    let mut keys: Vec<&str> = params.keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

/// The session id a call names (`downloadid`, `uploadid`).
fn session_id<'a>(params: &'a Params, name: &str) -> ApiResult<&'a str> {
    match params.get(name).map(|v| v.trim()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ApiError::invalid(format!(
            "the query parameter {name} is missing or empty"
        ))),
    }
}

/// The partition a call names (`partition=k1=v1,k2=v2`), checked against the table: a
/// partitioned table needs every level, an unpartitioned one none.
fn partition(params: &Params, table: &TableId, schema: &TableSchema) -> ApiResult<PartitionSpec> {
    let spec = PartitionSpec::parse(params.get("partition").map_or("", |v| v.as_str()))?;
    let keys = &schema.partition_columns;
    if keys.is_empty() {
        if !spec.is_empty() {
            return Err(ApiError::invalid(format!(
                "table {table} is not partitioned, but the partition {spec} was given"
            )));
        }
        return Ok(spec);
    }
    let full = spec.len() == keys.len() && keys.iter().all(|k| spec.get(&k.name).is_some());
    if !full {
        let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        return Err(ApiError::invalid(format!(
            "table {table} is partitioned by {}: name one partition with every level \
             (partition={}), not {:?}",
            names.join(", "),
            names
                .iter()
                .map(|n| format!("{n}=..."))
                .collect::<Vec<_>>()
                .join(","),
            spec.to_string()
        )));
    }
    // In the table's key order.
    Ok(PartitionSpec::from_pairs(keys.iter().map(|k| {
        (
            k.name.clone(),
            spec.get(&k.name).unwrap_or_default().to_string(),
        )
    }))?)
}

/// The data columns a `columns=a,b` list names, in its order (all, in table order, when
/// absent or empty). Names match case-insensitively; a repeat or an unknown name is refused.
fn requested_columns(params: &Params, schema: &TableSchema) -> ApiResult<Vec<Column>> {
    let list = params.get("columns").map_or("", |v| v.trim());
    if list.is_empty() {
        return Ok(schema.columns.clone());
    }
    let mut out: Vec<Column> = Vec::new();
    for name in list.split(',').map(str::trim) {
        let Some(column) = schema
            .columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
        else {
            return Err(if schema.is_partition_column(name) {
                ApiError::invalid(format!(
                    "columns= names the partition column {name:?}; only data columns are sent"
                ))
            } else {
                ApiError::invalid(format!("columns= names {name:?}, which is not a column"))
            });
        };
        if out.iter().any(|c| c.name == column.name) {
            return Err(ApiError::invalid(format!(
                "columns= names {name:?} more than once"
            )));
        }
        out.push(column.clone());
    }
    Ok(out)
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        ApiError::invalid(e.to_string())
    }
}

//! The MaxCompute metadata calls that table readers and writers make before they open a
//! Tunnel session (docs/tunnel.md §10): a project, a table and its partitions as XML, and the
//! SQL instances PyODPS runs to add and drop partitions.
//!
//! | call | answer |
//! |---|---|
//! | `GET /api/projects/{p}` | project XML, with the `x-odps-owner`, `x-odps-creation-time` and `Last-Modified` headers PyODPS reads |
//! | `GET …/tables/{t}[?extended]` | table XML, the schema JSON as the `Schema` text |
//! | `GET …/tables/{t}?partitions[&partition=k='v']` | the partitions matching the prefix, in one page |
//! | `GET …/tables/{t}?partition=k='v',…` | one partition, or 404 `NoSuchPartition` |
//! | `POST /api/projects/{p}/instances` | runs `ALTER TABLE … ADD|DROP [IF [NOT] EXISTS] PARTITION (…)` at once; 201 with `Location` |
//! | `GET /api/projects/{p}/instances/{id}[?taskstatus|?result]` | `Terminated`, the task `Success` or `Failed` with the error text |
//!
//! Times are RFC 1123 in the table XML and epoch seconds everywhere else, as PyODPS parses
//! them. Any other SQL is refused with a failed task that names what is supported.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use paiio_storage::protocol::tunnel::session::TunnelSchema;
use paiio_storage::service::{PartitionInfo, TableInfo};
use paiio_storage::{PartitionSpec, TableId};

use crate::AppState;
use crate::error::{ApiError, ApiResult, xml_escape};
use crate::request::{Params, read_body};

type Shared = Arc<AppState>;

/// The metadata routes, in both table shapes (with and without `/schemas/{schema}`).
pub(crate) fn router() -> Router<Shared> {
    Router::new()
        .route("/api/projects/{project}", get(project))
        .route("/api/projects/{project}/tables/{table}", get(table))
        .route(
            "/api/projects/{project}/schemas/{schema}/tables/{table}",
            get(table),
        )
        .route(
            "/api/projects/{project}/instances",
            axum::routing::post(create_instance),
        )
        .route("/api/projects/{project}/instances/{id}", get(instance))
}

fn reply(result: ApiResult<Response>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

fn xml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

fn epoch_seconds(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

fn rfc1123(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    httpdate::fmt_http_date(t)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `GET /api/projects/{p}`: every project exists (tables are created on demand); the name
/// must be valid.
async fn project(Path(name): Path<String>) -> Response {
    reply((|| {
        paiio_storage::uri::validate_name("project name", &name)?;
        let now = rfc1123(now_ms());
        let mut response = xml(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Project><Name>{}</Name>\
             <Type>managed</Type><Comment></Comment><State>AVAILABLE</State>\
             <Properties></Properties></Project>",
            xml_escape(&name)
        ));
        let headers = response.headers_mut();
        for (k, v) in [
            ("x-odps-owner", "paiio".to_string()),
            ("x-odps-creation-time", now.clone()),
            ("last-modified", now),
        ] {
            if let Ok(v) = HeaderValue::from_str(&v) {
                headers.insert(k, v);
            }
        }
        Ok(response)
    })())
}

/// `GET …/tables/{t}` and its `?partitions` and `?partition=` forms.
async fn table(
    State(state): State<Shared>,
    Path(path): Path<HashMap<String, String>>,
    Query(params): Query<Params>,
) -> Response {
    reply(
        async {
            let table = crate::v1::table_id(&path)?;
            let info = state.service.describe_table(&table).await?;
            let filter = PartitionSpec::parse(params.get("partition").map_or("", |v| v.as_str()))?;
            if params.contains_key("partitions") {
                Ok(xml(partitions_xml(&info, &filter)))
            } else if params.contains_key("partition") {
                match info.partitions.iter().find(|p| p.spec == filter) {
                    Some(p) => Ok(xml(partition_xml(p, info.last_modified_ms))),
                    None => Err(no_such_partition(&table, &filter)),
                }
            } else {
                Ok(xml(table_xml(&info)))
            }
        }
        .await,
    )
}

fn no_such_partition(table: &TableId, spec: &PartitionSpec) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NoSuchPartition",
        format!("table {table} has no partition {spec}"),
    )
}

fn table_xml(info: &TableInfo) -> String {
    let seconds = epoch_seconds(info.last_modified_ms);
    let mut schema = serde_json::to_value(TunnelSchema::from_table_schema(&info.schema))
        .unwrap_or_else(|_| serde_json::json!({}));
    if let Some(obj) = schema.as_object_mut() {
        for (k, v) in [
            ("createTime", serde_json::json!(seconds)),
            ("lastDDLTime", serde_json::json!(seconds)),
            ("lastModifiedTime", serde_json::json!(seconds)),
            ("owner", serde_json::json!("paiio")),
            ("comment", serde_json::json!("")),
            ("lifecycle", serde_json::json!(-1)),
            ("isVirtualView", serde_json::json!(false)),
            ("size", serde_json::json!(info.size_bytes)),
            ("recordNum", serde_json::json!(info.row_count)),
            // PyODPS reads Reserved as JSON text, never as an object.
            (
                "Reserved",
                serde_json::json!("{\"Transactional\":\"false\"}"),
            ),
        ] {
            obj.insert(k.to_string(), v);
        }
    }
    let time = rfc1123(info.last_modified_ms);
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Table><Name>{name}</Name>\
         <TableId>{name}</TableId><Owner>paiio</Owner><Type>MANAGED_TABLE</Type>\
         <CreationTime>{time}</CreationTime><LastModifiedTime>{time}</LastModifiedTime>\
         <Schema format=\"json\">{schema}</Schema></Table>",
        name = xml_escape(&info.table.table),
        schema = xml_escape(&schema.to_string()),
    )
}

fn partition_times(seconds: i64) -> String {
    format!(
        "<CreationTime>{seconds}</CreationTime><LastDDLTime>{seconds}</LastDDLTime>\
         <LastModifiedTime>{seconds}</LastModifiedTime>"
    )
}

fn partitions_xml(info: &TableInfo, filter: &PartitionSpec) -> String {
    let seconds = epoch_seconds(info.last_modified_ms);
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Partitions><Marker></Marker>\
         <MaxItems>1000</MaxItems>",
    );
    for p in info.partitions.iter().filter(|p| filter.matches(&p.spec)) {
        out.push_str("<Partition>");
        for (k, v) in p.spec.iter() {
            out.push_str(&format!(
                "<Column Name=\"{}\" Value=\"{}\"/>",
                xml_escape(k),
                xml_escape(v)
            ));
        }
        out.push_str(&partition_times(seconds));
        out.push_str(&format!(
            "<PartitionSize>{}</PartitionSize><PartitionRecordCount>{}</PartitionRecordCount>\
             </Partition>",
            p.size_bytes, p.row_count
        ));
    }
    out.push_str("</Partitions>");
    out
}

fn partition_xml(p: &PartitionInfo, last_modified_ms: i64) -> String {
    let seconds = epoch_seconds(last_modified_ms);
    let schema = serde_json::json!({
        "createTime": seconds,
        "lastDDLTime": seconds,
        "lastModifiedTime": seconds,
        "partitionSize": p.size_bytes,
        "partitionRecordNum": p.row_count,
    });
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Partition><Schema>{}</Schema></Partition>",
        xml_escape(&schema.to_string())
    )
}

// ---- SQL instances (partition DDL only) ----

/// What became of an instance: its task's name, and the error text when it failed.
#[derive(Debug, Clone)]
pub(crate) struct InstanceOutcome {
    task: String,
    error: Option<String>,
}

/// Finished instances by id, the oldest forgotten beyond [`MAX_INSTANCES`].
#[derive(Debug, Default)]
pub(crate) struct Instances {
    inner: parking_lot::Mutex<(HashMap<String, InstanceOutcome>, VecDeque<String>)>,
}

const MAX_INSTANCES: usize = 10_000;

impl Instances {
    fn insert(&self, id: String, outcome: InstanceOutcome) {
        let mut guard = self.inner.lock();
        let (map, order) = &mut *guard;
        map.insert(id.clone(), outcome);
        order.push_back(id);
        while order.len() > MAX_INSTANCES {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    fn get(&self, id: &str) -> Option<InstanceOutcome> {
        self.inner.lock().0.get(id).cloned()
    }
}

/// The text of the first `<tag>` element of `body` (CDATA or escaped text).
fn element_text(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = start + body[start..].find(&format!("</{tag}>"))?;
    let inner = body[start..end].trim();
    if let Some(cdata) = inner
        .strip_prefix("<![CDATA[")
        .and_then(|s| s.strip_suffix("]]>"))
    {
        return Some(cdata.to_string());
    }
    Some(
        inner
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// A partition statement: `ALTER TABLE [proj.]t ADD|DROP [IF [NOT] EXISTS] PARTITION (spec)`.
#[derive(Debug, PartialEq)]
struct PartitionDdl {
    table: TableId,
    add: bool,
    if_clause: bool,
    spec: PartitionSpec,
}

fn parse_partition_ddl(sql: &str, project: &str) -> Result<PartitionDdl, String> {
    let unsupported = || {
        format!(
            "ODPS-0130161:[1,1] Parse exception - this server runs only \
             ALTER TABLE <table> ADD|DROP [IF [NOT] EXISTS] PARTITION (<spec>), not {:?}",
            sql.trim()
        )
    };
    let sql = sql.trim().trim_end_matches(';').trim();
    let open = sql.find('(').ok_or_else(unsupported)?;
    let close = sql
        .rfind(')')
        .filter(|&c| c > open)
        .ok_or_else(unsupported)?;
    if !sql[close + 1..].trim().is_empty() {
        return Err(unsupported());
    }
    let words: Vec<String> = sql[..open]
        .split_whitespace()
        .map(|w| w.to_string())
        .collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
    let (name, add, if_clause) = match upper.as_slice() {
        ["ALTER", "TABLE", _, "ADD", "PARTITION"] => (&words[2], true, false),
        [
            "ALTER",
            "TABLE",
            _,
            "ADD",
            "IF",
            "NOT",
            "EXISTS",
            "PARTITION",
        ] => (&words[2], true, true),
        ["ALTER", "TABLE", _, "DROP", "PARTITION"] => (&words[2], false, false),
        ["ALTER", "TABLE", _, "DROP", "IF", "EXISTS", "PARTITION"] => (&words[2], false, true),
        _ => return Err(unsupported()),
    };
    let parts: Vec<String> = name.split('.').map(|p| p.replace('`', "")).collect();
    let table = match parts.as_slice() {
        [t] => TableId::new(project, None, t),
        [p, t] => TableId::new(p, None, t),
        [p, s, t] => TableId::new(p, Some(s), t),
        _ => return Err(unsupported()),
    }
    .map_err(|e| format!("ODPS-0130161:[1,1] Parse exception - {e}"))?;
    let spec = PartitionSpec::parse(&sql[open + 1..close])
        .map_err(|e| format!("ODPS-0130161:[1,1] Parse exception - {e}"))?;
    Ok(PartitionDdl {
        table,
        add,
        if_clause,
        spec,
    })
}

/// The error text of a failed statement, with the ODPS code PyODPS maps to its classes.
fn ddl_error(e: &paiio_storage::Error) -> String {
    use paiio_storage::Error as E;
    match e {
        E::NotFound {
            kind: paiio_storage::ObjectKind::Table,
            name,
        } => format!("ODPS-0130131:[1,1] Table not found - {name}"),
        E::NotFound { name, .. } => {
            format!("ODPS-0130111:[1,1] Semantic analysis exception - partition not found: {name}")
        }
        E::AlreadyExists { name, .. } => format!(
            "ODPS-0130111:[1,1] Semantic analysis exception - partition already exists: {name}"
        ),
        other => format!("ODPS-0130071:[1,1] Semantic analysis exception - {other}"),
    }
}

/// `POST /api/projects/{p}/instances`: runs the SQL task at once.
async fn create_instance(
    State(state): State<Shared>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    reply(
        async {
            paiio_storage::uri::validate_name("project name", &project)?;
            let bytes = read_body(body, state.limits.max_json_body, "instance body").await?;
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| ApiError::invalid("the instance body is not UTF-8"))?;
            let query = element_text(text, "Query")
                .ok_or_else(|| ApiError::invalid("the instance body has no Job/Tasks/SQL/Query"))?;
            let task = element_text(text, "Name").unwrap_or_else(|| "AnonymousSQLTask".into());
            let error = match parse_partition_ddl(&query, &project) {
                Err(e) => Some(e),
                Ok(ddl) => {
                    let done = if ddl.add {
                        state
                            .service
                            .create_partition(&ddl.table, &ddl.spec, ddl.if_clause)
                            .await
                    } else {
                        state
                            .service
                            .drop_partition(&ddl.table, &ddl.spec, ddl.if_clause)
                            .await
                    };
                    done.err().map(|e| ddl_error(&e))
                }
            };
            let id = uuid::Uuid::new_v4().simple().to_string();
            state
                .instances
                .insert(id.clone(), InstanceOutcome { task, error });
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
                .or_else(|| state.addr.read().map(|a| a.to_string()))
                .unwrap_or_default();
            let location = format!("http://{host}/api/projects/{project}/instances/{id}");
            let mut response = (StatusCode::CREATED, Body::empty()).into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, v);
            }
            Ok(response)
        }
        .await,
    )
}

/// `GET /api/projects/{p}/instances/{id}[?taskstatus|?result]`.
async fn instance(
    State(state): State<Shared>,
    Path((_project, id)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> Response {
    reply((|| {
        let outcome = state.instances.get(&id).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "NoSuchObject",
                format!("no such instance: {id}"),
            )
        })?;
        let status = if outcome.error.is_some() {
            "Failed"
        } else {
            "Success"
        };
        let task = xml_escape(&outcome.task);
        let head = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
        Ok(xml(if params.contains_key("taskstatus") {
            format!(
                "{head}<Instance><Status>Terminated</Status><Tasks><Task Type=\"SQL\">\
                 <Name>{task}</Name><Status>{status}</Status></Task></Tasks></Instance>"
            )
        } else if params.contains_key("result") {
            format!(
                "{head}<Instance><Tasks><Task Type=\"SQL\"><Name>{task}</Name>\
                 <Status>{status}</Status><Result Format=\"text\">{}</Result></Task></Tasks>\
                 </Instance>",
                xml_escape(outcome.error.as_deref().unwrap_or(""))
            )
        } else {
            format!("{head}<Instance><Status>Terminated</Status></Instance>")
        }))
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_statements_parse_as_pyodps_writes_them() {
        let ddl = parse_partition_ddl(
            "ALTER TABLE demo.`pt_t` ADD IF NOT EXISTS  PARTITION (pt='2',region='x');",
            "other",
        )
        .unwrap();
        assert_eq!(ddl.table, TableId::new("demo", None, "pt_t").unwrap());
        assert!(ddl.add && ddl.if_clause);
        assert_eq!(ddl.spec, PartitionSpec::parse("pt=2,region=x").unwrap());
        let ddl = parse_partition_ddl("alter table t drop partition (pt='6')", "demo").unwrap();
        assert_eq!(ddl.table, TableId::new("demo", None, "t").unwrap());
        assert!(!ddl.add && !ddl.if_clause);
        for bad in [
            "SELECT * FROM t",
            "ALTER TABLE t ADD PARTITION pt='1'",
            "ALTER TABLE t ADD IF EXISTS PARTITION (pt='1')",
            "ALTER TABLE t ADD PARTITION (pt='1') junk",
            "ALTER TABLE a.b.c.d ADD PARTITION (pt='1')",
            "ALTER TABLE t ADD PARTITION (pt)",
        ] {
            let e = parse_partition_ddl(bad, "demo").unwrap_err();
            assert!(e.starts_with("ODPS-0130161"), "{bad}: {e}");
        }
    }

    #[test]
    fn element_text_reads_cdata_and_escaped_text() {
        let body = "<Instance><Job><Tasks><SQL><Name>SQLAddPartitionTask</Name>\
                    <Query><![CDATA[ALTER TABLE t ADD PARTITION (pt='<1>');]]></Query>";
        assert_eq!(
            element_text(body, "Query").unwrap(),
            "ALTER TABLE t ADD PARTITION (pt='<1>');"
        );
        assert_eq!(element_text(body, "Name").unwrap(), "SQLAddPartitionTask");
        assert_eq!(
            element_text("<Query>a &lt; b &amp;&amp; c</Query>", "Query").unwrap(),
            "a < b && c"
        );
        assert_eq!(element_text("<Query>open", "Query"), None);
    }
}

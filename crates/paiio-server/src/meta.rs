//! The MaxCompute metadata calls that table readers and writers make before they open a
//! Tunnel session (docs/tunnel.md §10): a project, a table and its partitions as XML, and the
//! SQL instances PyODPS runs to create and drop tables and partitions.
//!
//! | call | answer |
//! |---|---|
//! | `GET /api/projects/{p}` | project XML, with the `x-odps-owner`, `x-odps-creation-time` and `Last-Modified` headers PyODPS reads |
//! | `GET …/tables/{t}[?extended]` | table XML, the schema JSON as the `Schema` text |
//! | `GET …/tables/{t}?partitions[&partition=k='v']` | the partitions matching the prefix, in one page |
//! | `GET …/tables/{t}?partition=k='v',…` | one partition, or 404 `NoSuchPartition` |
//! | `POST /api/projects/{p}/instances` | runs `CREATE TABLE`, `DROP TABLE` and `ALTER TABLE … ADD|DROP [IF [NOT] EXISTS] PARTITION (…)` at once; 201 with `Location` |
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
use paiio_storage::{Column, OdpsType, PartitionSpec, TableId, TableSchema};

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

/// The statements an instance runs: the DDL PyODPS sends for `o.create_table`,
/// `o.delete_table`, `t.create_partition` and `t.delete_partition` (and for
/// `write_table(create_partition=True)`).
#[derive(Debug, PartialEq)]
enum Ddl {
    /// `ALTER TABLE [proj.]t ADD|DROP [IF [NOT] EXISTS] PARTITION (spec)`.
    Partition {
        table: TableId,
        add: bool,
        if_clause: bool,
        spec: PartitionSpec,
    },
    /// `CREATE TABLE [IF NOT EXISTS] t (cols) [COMMENT '…'] [PARTITIONED BY (cols)]
    /// [LIFECYCLE n]`.
    CreateTable {
        table: TableId,
        if_not_exists: bool,
        schema: TableSchema,
    },
    /// `DROP TABLE [IF EXISTS] t`.
    DropTable { table: TableId, if_exists: bool },
}

fn parse_error(detail: impl std::fmt::Display) -> String {
    format!("ODPS-0130161:[1,1] Parse exception - {detail}")
}

/// `[proj.][schema.]name`, each part optionally in backquotes.
fn table_name(name: &str, project: &str) -> Result<TableId, String> {
    let parts: Vec<String> = name.split('.').map(|p| p.replace('`', "")).collect();
    match parts.as_slice() {
        [t] => TableId::new(project, None, t),
        [p, t] => TableId::new(p, None, t),
        [p, s, t] => TableId::new(p, Some(s), t),
        _ => return Err(parse_error(format!("{name:?} is not a table name"))),
    }
    .map_err(parse_error)
}

/// The byte index of the `)` closing the `(` at `open`, over nested `()`/`<>` and quotes.
fn closing_paren(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    for (i, c) in text[open..].char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(' | '<') => depth += 1,
            (None, ')' | '>') => {
                depth -= 1;
                if depth == 0 {
                    return (c == ')').then_some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Splits at the commas outside nested `()`/`<>` and quotes.
fn split_top_level(text: &str) -> Vec<&str> {
    let (mut out, mut start, mut depth, mut quote) = (Vec::new(), 0, 0i32, None::<char>);
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(' | '<') => depth += 1,
            (None, ')' | '>') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

/// A quoted SQL string at the start of `text` (`'…'`, `\'` and `''` as quotes): its value
/// and the rest.
fn sql_string(text: &str) -> Option<(String, &str)> {
    let mut chars = text.char_indices();
    let (_, q) = chars.next().filter(|(_, c)| *c == '\'' || *c == '"')?;
    let mut value = String::new();
    let mut escaped = false;
    while let Some((i, c)) = chars.next() {
        match c {
            _ if escaped => {
                value.push(c);
                escaped = false;
            }
            '\\' => escaped = true,
            c if c == q => {
                if text[i + 1..].starts_with(q) {
                    value.push(q);
                    chars.next();
                } else {
                    return Some((value, &text[i + 1..]));
                }
            }
            c => value.push(c),
        }
    }
    None
}

/// One column definition: `` `name` TYPE [NOT NULL] [COMMENT '…'] ``.
fn column_definition(text: &str) -> Result<Column, String> {
    let text = text.trim();
    let (name, rest) = match text.strip_prefix('`') {
        Some(r) => {
            let end = r
                .find('`')
                .ok_or_else(|| parse_error(format!("{text:?}: unclosed `")))?;
            (&r[..end], &r[end + 1..])
        }
        None => text.split_at(text.find(char::is_whitespace).unwrap_or(text.len())),
    };
    let rest = rest.trim();
    // The type runs to NOT NULL or COMMENT outside brackets.
    let upper = rest.to_ascii_uppercase();
    let mut end = rest.len();
    for keyword in [" NOT NULL", " COMMENT "] {
        if let Some(i) = upper.find(keyword).filter(|&i| {
            let head = &rest[..i];
            head.matches(['(', '<']).count() == head.matches([')', '>']).count()
        }) {
            end = end.min(i);
        }
    }
    let ty: OdpsType = rest[..end]
        .trim()
        .parse()
        .map_err(|e| parse_error(format!("column {name}: {e}")))?;
    let mut column = Column::new(name, ty);
    let mut tail = rest[end..].trim();
    loop {
        let upper = tail.to_ascii_uppercase();
        if upper.starts_with("NOT NULL") {
            column.nullable = false;
            tail = tail["NOT NULL".len()..].trim();
        } else if upper.starts_with("COMMENT") {
            let (comment, after) = sql_string(tail["COMMENT".len()..].trim())
                .ok_or_else(|| parse_error(format!("column {name}: a bad COMMENT")))?;
            column.comment = comment;
            tail = after.trim();
        } else if tail.is_empty() {
            return Ok(column);
        } else {
            return Err(parse_error(format!("column {name}: unexpected {tail:?}")));
        }
    }
}

fn columns(text: &str) -> Result<Vec<Column>, String> {
    split_top_level(text)
        .into_iter()
        .filter(|c| !c.trim().is_empty())
        .map(column_definition)
        .collect()
}

fn parse_create_table(sql: &str, project: &str) -> Result<Ddl, String> {
    let upper = sql.to_ascii_uppercase();
    let (head, if_not_exists) = match upper.strip_prefix("CREATE TABLE ").map(str::trim_start) {
        Some(rest) if rest.starts_with("IF NOT EXISTS ") => {
            (sql.len() - rest.len() + "IF NOT EXISTS ".len(), true)
        }
        Some(rest) => (sql.len() - rest.len(), false),
        None => return Err(parse_error("expected CREATE TABLE")),
    };
    let open = sql[head..]
        .find('(')
        .map(|i| head + i)
        .ok_or_else(|| parse_error("CREATE TABLE without a column list"))?;
    let table = table_name(sql[head..open].trim(), project)?;
    let close = closing_paren(sql, open).ok_or_else(|| parse_error("unclosed column list"))?;
    let data = columns(&sql[open + 1..close])?;
    let mut partitions = Vec::new();
    let mut rest = sql[close + 1..].trim();
    while !rest.is_empty() {
        let upper = rest.to_ascii_uppercase();
        if upper.starts_with("COMMENT") {
            let (_, after) = sql_string(rest["COMMENT".len()..].trim())
                .ok_or_else(|| parse_error("a bad table COMMENT"))?;
            rest = after.trim();
        } else if upper.starts_with("PARTITIONED BY") {
            let at = rest
                .find('(')
                .ok_or_else(|| parse_error("PARTITIONED BY without columns"))?;
            let end =
                closing_paren(rest, at).ok_or_else(|| parse_error("unclosed PARTITIONED BY"))?;
            partitions = columns(&rest[at + 1..end])?;
            rest = rest[end + 1..].trim();
        } else if upper.starts_with("LIFECYCLE") {
            let after = rest["LIFECYCLE".len()..].trim_start();
            let digits = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            if digits == 0 {
                return Err(parse_error("LIFECYCLE without a number of days"));
            }
            rest = after[digits..].trim();
        } else {
            return Err(parse_error(format!(
                "this server creates tables with columns, COMMENT, PARTITIONED BY and \
                 LIFECYCLE only, not {rest:?}"
            )));
        }
    }
    let schema = TableSchema::new(data, partitions).map_err(parse_error)?;
    Ok(Ddl::CreateTable {
        table,
        if_not_exists,
        schema,
    })
}

fn parse_ddl(sql: &str, project: &str) -> Result<Ddl, String> {
    let sql = sql.trim().trim_end_matches(';').trim();
    let words: Vec<String> = sql
        .split_whitespace()
        .take(6)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["CREATE", "TABLE", ..] => parse_create_table(sql, project),
        ["DROP", "TABLE", "IF", "EXISTS", _] => Ok(Ddl::DropTable {
            table: table_name(sql.split_whitespace().nth(4).unwrap_or(""), project)?,
            if_exists: true,
        }),
        ["DROP", "TABLE", _] => Ok(Ddl::DropTable {
            table: table_name(sql.split_whitespace().nth(2).unwrap_or(""), project)?,
            if_exists: false,
        }),
        ["ALTER", "TABLE", ..] => parse_partition_ddl(sql, project),
        _ => Err(parse_error(format!(
            "this server runs only CREATE TABLE, DROP TABLE and ALTER TABLE … ADD|DROP \
             PARTITION, not {sql:?}"
        ))),
    }
}

fn parse_partition_ddl(sql: &str, project: &str) -> Result<Ddl, String> {
    let unsupported = || {
        parse_error(format!(
            "this server runs only ALTER TABLE <table> ADD|DROP [IF [NOT] EXISTS] \
             PARTITION (<spec>), not {:?}",
            sql.trim()
        ))
    };
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
    let table = table_name(name, project).map_err(|_| unsupported())?;
    let spec = PartitionSpec::parse(&sql[open + 1..close]).map_err(parse_error)?;
    Ok(Ddl::Partition {
        table,
        add,
        if_clause,
        spec,
    })
}

/// Runs a statement on the backend.
async fn run_ddl(state: &AppState, ddl: Ddl) -> paiio_storage::Result<()> {
    let service = &state.service;
    match ddl {
        Ddl::Partition {
            table,
            add: true,
            if_clause,
            spec,
        } => service.create_partition(&table, &spec, if_clause).await,
        Ddl::Partition {
            table,
            add: false,
            if_clause,
            spec,
        } => service.drop_partition(&table, &spec, if_clause).await,
        Ddl::CreateTable {
            table,
            if_not_exists,
            schema,
        } => {
            let options = paiio_storage::CreateTableOptions { if_not_exists };
            service.create_table(&table, &schema, options).await
        }
        Ddl::DropTable { table, if_exists } => service.drop_table(&table, if_exists).await,
    }
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
        E::AlreadyExists {
            kind: paiio_storage::ObjectKind::Table,
            name,
        } => format!("ODPS-0110061:Failed to run ddltask - Table or view already exists - {name}"),
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
            let error = match parse_ddl(&query, &project) {
                Err(e) => Some(e),
                Ok(ddl) => run_ddl(&state, ddl).await.err().map(|e| ddl_error(&e)),
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
        let ddl = parse_ddl(
            "ALTER TABLE demo.`pt_t` ADD IF NOT EXISTS  PARTITION (pt='2',region='x');",
            "other",
        )
        .unwrap();
        assert_eq!(
            ddl,
            Ddl::Partition {
                table: TableId::new("demo", None, "pt_t").unwrap(),
                add: true,
                if_clause: true,
                spec: PartitionSpec::parse("pt=2,region=x").unwrap(),
            }
        );
        let ddl = parse_ddl("alter table t drop partition (pt='6')", "demo").unwrap();
        assert!(matches!(
            ddl,
            Ddl::Partition {
                add: false,
                if_clause: false,
                ..
            }
        ));
        for bad in [
            "SELECT * FROM t",
            "ALTER TABLE t ADD PARTITION pt='1'",
            "ALTER TABLE t ADD IF EXISTS PARTITION (pt='1')",
            "ALTER TABLE t ADD PARTITION (pt='1') junk",
            "ALTER TABLE a.b.c.d ADD PARTITION (pt='1')",
            "ALTER TABLE t ADD PARTITION (pt)",
        ] {
            let e = parse_ddl(bad, "demo").unwrap_err();
            assert!(e.starts_with("ODPS-0130161"), "{bad}: {e}");
        }
    }

    #[test]
    fn table_statements_parse_as_pyodps_writes_them() {
        let sql = "CREATE TABLE IF NOT EXISTS demo.`t` (\n  `id` BIGINT NOT NULL COMMENT 'the, id',\n  \
                   `m` MAP<STRING,DECIMAL(10,2)>,\n  `s` STRUCT<a:INT,b:VARCHAR(3)> COMMENT 'it''s'\n)\n\
                   COMMENT 'a (table)'\nPARTITIONED BY (\n  `pt` STRING\n)\nLIFECYCLE 7\n;";
        let Ddl::CreateTable {
            table,
            if_not_exists,
            schema,
        } = parse_ddl(sql, "other").unwrap()
        else {
            panic!("not CREATE TABLE");
        };
        assert_eq!(table, TableId::new("demo", None, "t").unwrap());
        assert!(if_not_exists);
        let names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "m", "s"]);
        assert!(!schema.columns[0].nullable && schema.columns[1].nullable);
        assert_eq!(schema.columns[0].comment, "the, id");
        assert_eq!(schema.columns[2].comment, "it's");
        assert_eq!(
            schema.columns[1].ty.to_string(),
            "map<string,decimal(10,2)>"
        );
        assert_eq!(schema.partition_columns[0].name, "pt");
        // The string form of o.create_table('t', 'id bigint, name string').
        let Ddl::CreateTable {
            schema,
            if_not_exists,
            ..
        } = parse_ddl("CREATE TABLE `t2` (\nid bigint, name string\n)\n", "demo").unwrap()
        else {
            panic!("not CREATE TABLE");
        };
        assert!(!if_not_exists);
        assert_eq!(schema.columns.len(), 2);
        assert_eq!(
            parse_ddl("DROP TABLE IF EXISTS demo.`t`;", "x").unwrap(),
            Ddl::DropTable {
                table: TableId::new("demo", None, "t").unwrap(),
                if_exists: true
            }
        );
        for bad in [
            "CREATE TABLE t",
            "CREATE TABLE t (id bigint",
            "CREATE TABLE t (id nosuchtype)",
            "CREATE TABLE t (id bigint) STORED AS ORC",
            "CREATE TABLE t (id bigint) LIFECYCLE x",
            "CREATE TABLE t (id bigint COMMENT 'open)",
            "CREATE TABLE t (id bigint, id bigint)",
            "CREATE TABLE t ()",
        ] {
            let e = parse_ddl(bad, "demo").unwrap_err();
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

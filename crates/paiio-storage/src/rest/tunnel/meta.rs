//! The ODPS metadata calls the Tunnel client needs, on the ODPS endpoint (PyODPS's
//! `get_table` / `t.partitions`):
//!
//! * `GET {endpoint}/projects/{p}/tables/{t}`: the Table XML, whose `<Schema>` element holds
//!   the schema JSON (`columns`, `partitionKeys`, optionally `recordNum`, `size`,
//!   `lastModifiedTime` in epoch seconds);
//! * `GET {endpoint}/projects/{p}/tables/{t}?partitions&expectmarker=true[&partition=k='v'][&marker=M]`:
//!   the Partitions XML, `<Partition><Column Name= Value=/>...<PartitionSize/>
//!   <PartitionRecordCount/></Partition>`, paged by `<Marker>` until it is empty.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::protocol::error::ErrorContext;
use crate::protocol::lenient::{opt_u64, or_default};
use crate::protocol::tunnel::session::TunnelColumn;
use crate::service::{PartitionInfo, TableInfo};
use crate::types::TableSchema;
use crate::uri::{PartitionSpec, TableId};

use super::super::retry::Idempotency;
use super::super::transport::{Budget, Request, enc};
use super::TunnelClient;

/// The most pages of partitions read for one listing.
const MAX_PAGES: usize = 100_000;

/// The table's schema JSON, as the `<Schema>` element of the Table XML holds it.
#[derive(Debug, Deserialize)]
struct SchemaJson {
    #[serde(default, deserialize_with = "or_default")]
    columns: Vec<TunnelColumn>,
    #[serde(rename = "partitionKeys", default, deserialize_with = "or_default")]
    partition_keys: Vec<TunnelColumn>,
    #[serde(rename = "recordNum", default, deserialize_with = "opt_u64")]
    record_num: Option<u64>,
    #[serde(default, deserialize_with = "opt_u64")]
    size: Option<u64>,
    #[serde(rename = "lastModifiedTime", default, deserialize_with = "opt_u64")]
    last_modified: Option<u64>,
}

/// The text of the first `<tag ...>text</tag>` in `xml`, CDATA unwrapped and entities
/// decoded; `None` when absent (an empty element is `Some("")`).
pub(super) fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let (start, end) = element(xml, tag)?;
    Some(unescape(&xml[start..end]))
}

/// The byte range of the content of the first `<tag>` element.
fn element(xml: &str, tag: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    loop {
        let at = from + xml[from..].find(&format!("<{tag}"))?;
        let after = at + 1 + tag.len();
        let rest = &xml[after..];
        let next = rest.chars().next()?;
        if next == '>' || next == '/' || next.is_whitespace() {
            let close = after + rest.find('>')?;
            if xml[..close].ends_with('/') {
                return Some((close + 1, close + 1));
            }
            let content = close + 1;
            let end = content + xml[content..].find(&format!("</{tag}>"))?;
            return Some((content, end));
        }
        from = after;
    }
}

/// Every `<tag ...>...</tag>` (or `<tag .../>`) element of `xml`, whole.
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = xml[from..].find(&format!("<{tag}")) {
        let at = from + pos;
        let after = at + 1 + tag.len();
        let Some(next) = xml[after..].chars().next() else {
            break;
        };
        if !(next == '>' || next == '/' || next.is_whitespace()) {
            from = after;
            continue;
        }
        let Some(close) = xml[after..].find('>').map(|c| after + c) else {
            break;
        };
        let end = if xml[..close].ends_with('/') {
            close + 1
        } else {
            match xml[close..].find(&format!("</{tag}>")) {
                Some(e) => close + e + tag.len() + 3,
                None => break,
            }
        };
        out.push(&xml[at..end]);
        from = end;
    }
    out
}

/// The value of attribute `name` in the opening tag at the start of `element`.
fn attribute(element: &str, name: &str) -> Option<String> {
    let open = &element[..element.find('>')?];
    let mut from = 0;
    loop {
        let at = from + open[from..].find(name)?;
        let before_ok = at > 0 && open.as_bytes()[at - 1].is_ascii_whitespace();
        let rest = open[at + name.len()..].trim_start();
        if before_ok && let Some(rest) = rest.strip_prefix('=') {
            let rest = rest.trim_start();
            let quote = rest.chars().next()?;
            if quote == '"' || quote == '\'' {
                let value = &rest[1..];
                return Some(unescape(&value[..value.find(quote)?]));
            }
        }
        from = at + name.len();
    }
}

fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<![CDATA[") {
            let end = after.find("]]>").unwrap_or(after.len());
            out.push_str(&after[..end]);
            rest = after.get(end + 3..).unwrap_or("");
            continue;
        }
        let next = rest.find("<![CDATA[").unwrap_or(rest.len());
        out.push_str(&decode_entities(&rest[..next]));
        rest = &rest[next..];
    }
    out
}

fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let Some(semi) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let entity = &tail[1..semi];
        let decoded = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &tail[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A metadata partition spec: `k1='v1',k2='v2'` (quoted, as PyODPS writes it).
fn quoted_spec(spec: &PartitionSpec) -> String {
    spec.iter()
        .map(|(k, v)| format!("{k}='{v}'"))
        .collect::<Vec<_>>()
        .join(",")
}

impl TunnelClient {
    /// A GET on the ODPS endpoint (`{endpoint}{relative}`), its body as text.
    async fn meta_get(&self, table: &TableId, query: &str) -> Result<String> {
        let inner = &self.rest.inner;
        let mut relative = format!(
            "/projects/{}/tables/{}?{query}{}curr_project={}",
            enc(&table.project),
            enc(&table.table),
            if query.is_empty() { "" } else { "&" },
            enc(self.curr_project(table))
        );
        if let Some(schema) = &table.schema {
            relative.push_str(&format!("&curr_schema={}", enc(schema)));
        }
        let request = Request {
            method: reqwest::Method::GET,
            relative,
            headers: Vec::new(),
            body: bytes::Bytes::new(),
            idempotency: Idempotency::Safe,
            streaming: false,
            retry_headers: false,
            direct: false,
            what: "table metadata".into(),
        };
        let ctx = ErrorContext {
            table: Some(table.to_string()),
            ..Default::default()
        };
        let mut budget = Budget::new(&inner.retry);
        loop {
            let resp = inner
                .execute_request(&inner.endpoint, &request, &ctx, &mut budget)
                .await?;
            match super::super::transport::answer_bytes(resp).await {
                Ok(body) => return Ok(String::from_utf8_lossy(&body).into_owned()),
                Err(e) if !e.is_transport() => return Err(e.into_error("table metadata")),
                Err(e) => {
                    let error = e.into_error("table metadata");
                    match inner.next_retry(&mut budget, None) {
                        Some(delay) => tokio::time::sleep(delay).await,
                        None => return Err(error),
                    }
                }
            }
        }
    }

    async fn table_xml(&self, table: &TableId) -> Result<(TableSchema, SchemaJson)> {
        table.validate()?;
        let xml = self
            .meta_get(table, "")
            .await
            .map_err(|e| not_found(e, table))?;
        let malformed = |message: String| Error::Service {
            status: 200,
            code: "MalformedTable".into(),
            message: format!("the metadata of table {table}: {message}"),
            request_id: String::new(),
        };
        let text = xml_text(&xml, "Schema")
            .ok_or_else(|| malformed("the Table XML has no <Schema>".into()))?;
        let json: SchemaJson = serde_json::from_str(text.trim())
            .map_err(|e| malformed(format!("the schema JSON does not parse: {e}")))?;
        let columns = json
            .columns
            .iter()
            .map(TunnelColumn::to_column)
            .collect::<Result<Vec<_>>>()?;
        let partitions = json
            .partition_keys
            .iter()
            .map(TunnelColumn::to_column)
            .collect::<Result<Vec<_>>>()?;
        Ok((TableSchema::new(columns, partitions)?, json))
    }

    /// The table's schema (data and partition columns).
    pub(super) async fn schema_of(&self, table: &TableId) -> Result<TableSchema> {
        Ok(self.table_xml(table).await?.0)
    }

    /// The table's schema, and when its data last changed (epoch ms, whole seconds) if the
    /// service says.
    pub(super) async fn schema_and_modified(
        &self,
        table: &TableId,
    ) -> Result<(TableSchema, Option<i64>)> {
        let (schema, json) = self.table_xml(table).await?;
        Ok((schema, json.last_modified.map(seconds_to_ms)))
    }

    /// The partitions of a table, those matching `prefix` when given (filtered by the
    /// service, and again here).
    pub(super) async fn partitions(
        &self,
        table: &TableId,
        prefix: Option<&PartitionSpec>,
    ) -> Result<Vec<PartitionInfo>> {
        table.validate()?;
        let mut out = Vec::new();
        let mut marker = String::new();
        for _ in 0..MAX_PAGES {
            let mut query = "partitions&expectmarker=true".to_string();
            if let Some(p) = prefix.filter(|p| !p.is_empty()) {
                query.push_str(&format!("&partition={}", enc(&quoted_spec(p))));
            }
            if !marker.is_empty() {
                query.push_str(&format!("&marker={}", enc(&marker)));
            }
            let xml = self
                .meta_get(table, &query)
                .await
                .map_err(|e| not_found(e, table))?;
            for p in elements(&xml, "Partition") {
                let pairs: Vec<(String, String)> = elements(p, "Column")
                    .into_iter()
                    .filter_map(|c| Some((attribute(c, "Name")?, attribute(c, "Value")?)))
                    .collect();
                if pairs.is_empty() {
                    continue;
                }
                let spec = PartitionSpec::from_pairs(pairs)?;
                if prefix.is_some_and(|pre| !pre.matches(&spec)) {
                    continue;
                }
                let number = |tag: &str| {
                    xml_text(p, tag)
                        .and_then(|t| t.trim().parse::<u64>().ok())
                        .unwrap_or(0)
                };
                out.push(PartitionInfo {
                    spec,
                    row_count: number("PartitionRecordCount"),
                    size_bytes: number("PartitionSize"),
                });
            }
            marker = xml_text(&xml, "Marker")
                .unwrap_or_default()
                .trim()
                .to_string();
            if marker.is_empty() {
                return Ok(out);
            }
        }
        Err(Error::Service {
            status: 200,
            code: "TooManyPages".into(),
            message: format!("listing the partitions of {table} did not end"),
            request_id: String::new(),
        })
    }

    /// The table's schema, rows, size and partitions from the metadata API.
    pub(super) async fn describe(&self, table: &TableId) -> Result<TableInfo> {
        let (schema, json) = self.table_xml(table).await?;
        let partitions = if schema.partition_columns.is_empty() {
            Vec::new()
        } else {
            self.partitions(table, None).await?
        };
        let (rows, size) = if partitions.is_empty() {
            (json.record_num.unwrap_or(0), json.size.unwrap_or(0))
        } else {
            (
                partitions.iter().map(|p| p.row_count).sum(),
                partitions.iter().map(|p| p.size_bytes).sum(),
            )
        };
        Ok(TableInfo {
            table: table.clone(),
            schema,
            version: 0,
            row_count: rows,
            size_bytes: size,
            partitions,
            last_modified_ms: json.last_modified.map_or(0, seconds_to_ms),
        })
    }
}

/// A 404 of the metadata API is the table missing.
fn not_found(e: Error, table: &TableId) -> Error {
    match e {
        // The service answers a missing table `NoSuchObject` (ODPS-0130131) or `NoSuchTable`.
        Error::Service { status: 404, .. }
        | Error::NotFound {
            kind: crate::error::ObjectKind::Object,
            ..
        } => Error::not_found(crate::error::ObjectKind::Table, table.to_string()),
        other => other,
    }
}

/// Epoch seconds from the service as epoch milliseconds (saturating: a value from the
/// network never overflows).
fn seconds_to_ms(seconds: u64) -> i64 {
    i64::try_from(seconds)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_partition_xml_parse() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<Table><Name>pt_t</Name><Schema format="json"><![CDATA[{"columns":[{"name":"a","type":"bigint"}],"partitionKeys":[{"name":"pt","type":"string"}],"recordNum":3}]]></Schema></Table>"#;
        let text = xml_text(xml, "Schema").unwrap();
        assert!(text.starts_with("{\"columns\""), "{text}");
        assert_eq!(xml_text(xml, "Name").as_deref(), Some("pt_t"));
        assert_eq!(
            xml_text(
                "<T><Schema>{&quot;a&quot;:1 &amp; 2}</Schema></T>",
                "Schema"
            )
            .as_deref(),
            Some("{\"a\":1 & 2}")
        );
        let parts = r#"<Partitions><Marker/><MaxItems>1000</MaxItems>
<Partition><Column Name="pt" Value="1"/><Column Name="region" Value="a&amp;b"/>
<PartitionRecordCount>7</PartitionRecordCount></Partition>
<Partition><Column Name="pt" Value="2"/><Column Name="region" Value="x"/></Partition></Partitions>"#;
        let ps = elements(parts, "Partition");
        assert_eq!(ps.len(), 2);
        let cols = elements(ps[0], "Column");
        assert_eq!(attribute(cols[1], "Name").as_deref(), Some("region"));
        assert_eq!(attribute(cols[1], "Value").as_deref(), Some("a&b"));
        assert_eq!(
            xml_text(ps[0], "PartitionRecordCount").as_deref(),
            Some("7")
        );
        assert_eq!(xml_text(parts, "Marker").as_deref(), Some(""));
        // `<Partitions>` is not a `<Partition>`.
        assert!(element("<Partitions></Partitions>", "Partition").is_none());
    }
}

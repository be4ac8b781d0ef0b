//! The JSON of Tunnel download and upload sessions, and the Tunnel schema JSON.
//!
//! A download session (`POST {table}?downloads=`, `GET {table}?downloadid=ID`) answers
//! [`DownloadSession`]; an upload session (`POST {table}?uploads=1`, `GET ?uploadid=ID`,
//! `POST ?uploadid=ID` to commit) answers [`UploadSession`]. Field names are the service's
//! (`DownloadID`, `RecordCount`, `UploadedBlockList`, ...), as PyODPS's `tabletunnel.py`
//! reads them.
//!
//! Parsing is lenient where PyODPS is: a status in any case (PyODPS upper-cases it), unknown
//! fields ignored, a `null` list read as empty, numbers and booleans also accepted as
//! strings. Writing is strict where a client is: `columns` and `partitionKeys` are always
//! arrays (the Java SDK breaks on `null`), statuses are upper case.
//!
//! The schema's columns are `{"name", "type", "comment", "isNullable", "label"}` with the
//! type as a type string (`bigint`, `map<string,array<int>>`, `decimal(10,2)`), which
//! [`TunnelSchema::to_table_schema`] parses with the crate's type parser.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::protocol::lenient::{
    bool_or_false, bool_or_true, opt_text, opt_u64, or_default, text_or_empty, u64_or_zero,
};
use crate::types::{Column, OdpsType, TableSchema};

macro_rules! status_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            /// The status as the service writes it (upper case).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Error;

            /// Any case, surrounding whitespace ignored.
            fn from_str(s: &str) -> Result<Self> {
                let upper = s.trim().to_ascii_uppercase();
                match upper.as_str() {
                    $($text => Ok($name::$variant),)+
                    _ => Err(Error::invalid(
                        concat!("Tunnel ", stringify!($name)),
                        format!(
                            "{s:?} is not one of {}",
                            [$($text),+].join(", ")
                        ),
                    )),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(de::Error::custom)
            }
        }
    };
}

status_enum! {
    /// The status of a download session. `Initiating`: the client polls the session again
    /// (PyODPS: 0.1 s, doubling, at most 5 s between polls) until it leaves that state.
    DownloadStatus {
        Unknown => "UNKNOWN",
        Normal => "NORMAL",
        Closes => "CLOSES",
        Expired => "EXPIRED",
        Initiating => "INITIATING",
    }
}

status_enum! {
    /// The status of an upload session (`Closed` after a commit).
    UploadStatus {
        Unknown => "UNKNOWN",
        Normal => "NORMAL",
        Closing => "CLOSING",
        Closed => "CLOSED",
        Canceled => "CANCELED",
        Expired => "EXPIRED",
        Critical => "CRITICAL",
    }
}

/// A download session, as `POST ?downloads=` and `GET ?downloadid=` answer it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DownloadSession {
    #[serde(rename = "DownloadID")]
    pub id: String,
    #[serde(rename = "Status")]
    pub status: DownloadStatus,
    /// Rows in the session (the table or partition when the session was created); `None`
    /// when the answer has none (a session still initiating), which a reader of a `NORMAL`
    /// session must refuse rather than take for no rows.
    #[serde(
        rename = "RecordCount",
        default,
        deserialize_with = "opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub record_count: Option<u64>,
    /// `None` while the session is initiating (or when the service leaves it out).
    #[serde(rename = "Schema", default)]
    pub schema: Option<TunnelSchema>,
    #[serde(
        rename = "QuotaName",
        default,
        deserialize_with = "opt_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub quota_name: Option<String>,
    /// Whether reads may be bounded by `raw_size=` (PyODPS's buffered reader sends it then).
    #[serde(
        rename = "SupportReadByRawSize",
        default,
        deserialize_with = "bool_or_false"
    )]
    pub support_read_by_raw_size: bool,
}

/// One entry of an upload session's `UploadedBlockList`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadedBlock {
    #[serde(rename = "BlockID", deserialize_with = "u64_or_zero")]
    pub block_id: u64,
}

/// An upload session, as `POST ?uploads=1`, `GET ?uploadid=` and the commit answer it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadSession {
    #[serde(rename = "UploadID")]
    pub id: String,
    #[serde(rename = "Status")]
    pub status: UploadStatus,
    /// The blocks written so far. Before committing, PyODPS reloads the session and refuses
    /// ("Blocks not match") unless these equal the blocks it wrote.
    #[serde(rename = "UploadedBlockList", default, deserialize_with = "or_default")]
    pub blocks: Vec<UploadedBlock>,
    #[serde(rename = "Schema", default)]
    pub schema: Option<TunnelSchema>,
    /// The largest value the service accepts in one field, in bytes.
    #[serde(
        rename = "MaxFieldSize",
        default,
        deserialize_with = "opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_field_size: Option<u64>,
    #[serde(
        rename = "QuotaName",
        default,
        deserialize_with = "opt_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub quota_name: Option<String>,
}

impl UploadSession {
    /// The ids of the uploaded blocks, in the order listed.
    pub fn block_ids(&self) -> Vec<u64> {
        self.blocks.iter().map(|b| b.block_id).collect()
    }
}

/// A session's `Schema`: data columns, then partition columns.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TunnelSchema {
    #[serde(default, deserialize_with = "or_default")]
    pub columns: Vec<TunnelColumn>,
    #[serde(rename = "partitionKeys", default, deserialize_with = "or_default")]
    pub partition_keys: Vec<TunnelColumn>,
}

/// One column of a [`TunnelSchema`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunnelColumn {
    pub name: String,
    /// The type string (`bigint`, `array<string>`, `decimal(10,2)`; any case).
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(default, deserialize_with = "text_or_empty")]
    pub comment: String,
    #[serde(
        rename = "isNullable",
        default = "default_true",
        deserialize_with = "bool_or_true"
    )]
    pub nullable: bool,
    #[serde(
        default,
        deserialize_with = "text_or_empty",
        skip_serializing_if = "String::is_empty"
    )]
    pub label: String,
}

fn default_true() -> bool {
    true
}

impl TunnelColumn {
    /// The Tunnel form of a column (the type as its canonical type string).
    pub fn from_column(column: &Column) -> Self {
        TunnelColumn {
            name: column.name.clone(),
            type_name: column.ty.to_string(),
            comment: column.comment.clone(),
            nullable: column.nullable,
            label: String::new(),
        }
    }

    /// The column, with its type string parsed.
    pub fn to_column(&self) -> Result<Column> {
        let ty: OdpsType = self.type_name.parse().map_err(|e: Error| {
            Error::invalid(
                "Tunnel schema",
                format!("column `{}` has type {:?}: {e}", self.name, self.type_name),
            )
        })?;
        Ok(Column {
            name: self.name.clone(),
            ty,
            nullable: self.nullable,
            comment: self.comment.clone(),
        })
    }
}

impl TunnelSchema {
    /// The Tunnel form of a table schema.
    pub fn from_table_schema(schema: &TableSchema) -> Self {
        TunnelSchema {
            columns: schema
                .columns
                .iter()
                .map(TunnelColumn::from_column)
                .collect(),
            partition_keys: schema
                .partition_columns
                .iter()
                .map(TunnelColumn::from_column)
                .collect(),
        }
    }

    /// The table schema, validated as by [`TableSchema::new`] (which needs at least one
    /// data column and lowercases names).
    pub fn to_table_schema(&self) -> Result<TableSchema> {
        let columns = self
            .columns
            .iter()
            .map(TunnelColumn::to_column)
            .collect::<Result<Vec<_>>>()?;
        let partitions = self
            .partition_keys
            .iter()
            .map(TunnelColumn::to_column)
            .collect::<Result<Vec<_>>>()?;
        TableSchema::new(columns, partitions)
    }
}

impl DownloadSession {
    /// Parses a session response body.
    pub fn from_json(body: &[u8]) -> Result<Self> {
        parse_json(body, "Tunnel download session")
    }

    /// The session as the service writes it.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl UploadSession {
    /// Parses a session response body.
    pub fn from_json(body: &[u8]) -> Result<Self> {
        parse_json(body, "Tunnel upload session")
    }

    /// The session as the service writes it.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        Error::invalid(what, format!("{e} in {shown:?}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn download_sessions_parse_as_the_service_writes_them() {
        let body = json!({
            "DownloadID": "2024abc",
            "Status": "normal",
            "RecordCount": 42,
            "QuotaName": "q",
            "SupportReadByRawSize": "true",
            "Schema": {
                "columns": [
                    {"name": "id", "type": "BIGINT", "comment": "", "isNullable": false},
                    {"name": "m", "type": "MAP<STRING,ARRAY<INT>>", "comment": null,
                     "isNullable": "true", "label": "", "generateExpression": null},
                    {"name": "d", "type": "decimal(10,2)"}
                ],
                "partitionKeys": [{"name": "pt", "type": "string", "comment": "day"}]
            },
            "SomethingNew": [1, 2]
        });
        let s = DownloadSession::from_json(body.to_string().as_bytes()).unwrap();
        assert_eq!(s.id, "2024abc");
        assert_eq!(s.status, DownloadStatus::Normal);
        assert_eq!(s.record_count, Some(42));
        assert_eq!(s.quota_name.as_deref(), Some("q"));
        assert!(s.support_read_by_raw_size);
        let schema = s.schema.as_ref().unwrap().to_table_schema().unwrap();
        assert_eq!(
            schema.to_string(),
            "id bigint not null, m map<string,array<int>>, d decimal(10,2) \
             partitioned by (pt string comment 'day')"
        );
        assert_eq!(
            TunnelSchema::from_table_schema(&schema)
                .to_table_schema()
                .unwrap(),
            schema
        );
    }

    #[test]
    fn statuses_parse_in_any_case_and_write_upper_case() {
        for (text, status) in [
            ("INITIATING", DownloadStatus::Initiating),
            (" Closes ", DownloadStatus::Closes),
            ("expired", DownloadStatus::Expired),
            ("Unknown", DownloadStatus::Unknown),
        ] {
            assert_eq!(text.parse::<DownloadStatus>().unwrap(), status);
        }
        for status in [
            UploadStatus::Unknown,
            UploadStatus::Normal,
            UploadStatus::Closing,
            UploadStatus::Closed,
            UploadStatus::Canceled,
            UploadStatus::Expired,
            UploadStatus::Critical,
        ] {
            assert_eq!(
                status
                    .as_str()
                    .to_lowercase()
                    .parse::<UploadStatus>()
                    .unwrap(),
                status
            );
        }
        let err = "BROKEN".parse::<UploadStatus>().unwrap_err().to_string();
        assert!(err.contains("BROKEN") && err.contains("CLOSED"), "{err}");
    }

    #[test]
    fn upload_sessions_round_trip_and_tolerate_nulls() {
        let body = json!({
            "UploadID": "u1",
            "Status": "Normal",
            "UploadedBlockList": [{"BlockID": 0}, {"BlockID": "7"}],
            "MaxFieldSize": 8388608,
            "Schema": {"columns": [{"name": "a", "type": "string"}], "partitionKeys": null}
        });
        let s = UploadSession::from_json(body.to_string().as_bytes()).unwrap();
        assert_eq!(s.block_ids(), vec![0, 7]);
        assert_eq!(s.max_field_size, Some(8_388_608));
        assert_eq!(s.quota_name, None);
        let written: Value = serde_json::from_slice(&s.to_json()).unwrap();
        assert_eq!(written["Status"], "NORMAL");
        assert_eq!(written["Schema"]["partitionKeys"], json!([]));
        assert_eq!(
            written["UploadedBlockList"],
            json!([{"BlockID": 0}, {"BlockID": 7}])
        );
        assert_eq!(UploadSession::from_json(&s.to_json()).unwrap(), s);

        let empty = json!({"UploadID": "u2", "Status": "CLOSED", "UploadedBlockList": null});
        let s = UploadSession::from_json(empty.to_string().as_bytes()).unwrap();
        assert!(s.blocks.is_empty() && s.schema.is_none());
    }

    #[test]
    fn bad_sessions_are_errors_that_quote_the_body() {
        for body in [
            r#"{"DownloadID": "x"}"#,
            r#"{"DownloadID": "x", "Status": "WEIRD"}"#,
            r#"{"DownloadID": "x", "Status": "NORMAL", "RecordCount": -1}"#,
            r#"not json"#,
        ] {
            let err = DownloadSession::from_json(body.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains("download session"), "{err}");
        }
        let schema = TunnelSchema {
            columns: vec![TunnelColumn {
                name: "a".into(),
                type_name: "array<".into(),
                comment: String::new(),
                nullable: true,
                label: String::new(),
            }],
            partition_keys: vec![],
        };
        let err = schema.to_table_schema().unwrap_err().to_string();
        assert!(err.contains("column `a`"), "{err}");
    }
}

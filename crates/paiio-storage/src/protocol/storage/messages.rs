//! The JSON bodies of the Storage API: one type per request and answer, with the conversions
//! to and from the [`crate::service`] types. V1 sends the same shapes as V2 (its session
//! answers are the V2 ones, its write session the BatchCompatible one), so one type serves
//! both.
//!
//! Requests are read leniently ([`lenient`](crate::protocol::lenient)): numbers may come as
//! strings, flags as strings or numbers, and null means "not given". Answers keep the fields
//! the official clients expect, `null` ones included.
//!
//! ## paiio extensions
//!
//! Fields the real service does not send. `paiio-server` sends them and the client reads
//! them when they are there; against the real service it does without (see
//! [`crate::rest`] for how):
//!
//! | Message | Field | What it says |
//! |---|---|---|
//! | [`ReadSessionResponse`] | `TableVersion` | the table version the session reads |
//! | [`WriteSessionResponse`] | `CommittedVersion` | the version a committed session made |
//! | [`WriteSessionResponse`] (commit answers) | `TableVersion`, `RecordCount` | the version committed, and its rows |
//! | [`WriteResponse`] | `RowsWritten`, `Duplicate` | rows the write added; whether it was a replay |
//! | [`super::super::error::ErrorBody`] | `Paiio` | the error as structured fields |

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::schema::ReadSchema;
use crate::error::{Error, Result};
use crate::protocol::lenient::{
    opt_bool, opt_i64, opt_text, opt_texts, opt_u64, opt_u64s, or_default, present, strings,
    tolerant, u32s,
};
use crate::service::{
    CommitInfo, ReadRequest, ReadSession, ReadSessionRequest, SessionStatus, SplitMode,
    SplitOptions, StreamStatus, WriteMode, WriteSession, WriteSessionRequest, WriteStream,
    parse_time_unit, time_unit_name,
};
use crate::types::{ArrowOptions, TableSchema};
use crate::uri::{PartitionSpec, TableId};

/// The error of an answer that lacks what it must carry.
pub fn malformed(what: &str, message: impl std::fmt::Display) -> Error {
    Error::Service {
        status: 200,
        code: "MalformedResponse".into(),
        message: format!("{what}: {message}"),
        request_id: String::new(),
    }
}

/// A session status as the service writes it (any case); unknown or absent is `NORMAL`.
pub fn parse_session_status(s: &str) -> SessionStatus {
    match s.trim().to_ascii_uppercase().as_str() {
        "INIT" => SessionStatus::Init,
        "CRITICAL" => SessionStatus::Critical,
        "EXPIRED" => SessionStatus::Expired,
        "COMMITTING" => SessionStatus::Committing,
        "COMMITTED" => SessionStatus::Committed,
        _ => SessionStatus::Normal,
    }
}

/// `{"Type": "ARROW", "Version": "V5"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct DataFormat {
    #[serde(rename = "Type")]
    pub format: String,
    pub version: String,
}

impl DataFormat {
    /// As a TableRead asks for it.
    pub fn arrow_request() -> Self {
        DataFormat {
            format: "Arrow".into(),
            version: "V5".into(),
        }
    }

    /// As session answers list it.
    pub fn arrow_answer() -> Self {
        DataFormat {
            format: "ARROW".into(),
            version: "V5".into(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Read sessions
// ---------------------------------------------------------------------------------------

/// The body of `TableCreateReadSession` (and of V1's `POST .../sessions?session_type=batch_read`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct CreateReadSessionRequest {
    #[serde(deserialize_with = "strings")]
    pub required_data_columns: Vec<String>,
    #[serde(deserialize_with = "strings")]
    pub required_partition_columns: Vec<String>,
    #[serde(deserialize_with = "strings")]
    pub required_partitions: Vec<String>,
    #[serde(deserialize_with = "u32s")]
    pub required_bucket_ids: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_options: Option<SplitOptionsBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arrow_options: Option<ArrowOptionsBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_predicate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_bool")]
    pub filter_predicate_fallback: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_i64")]
    pub split_max_file_num: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_bool")]
    pub incremental_read: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_bool")]
    pub enable_large_string: Option<bool>,
}

/// `SplitOptions` of a read session request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct SplitOptionsBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_unit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_u64")]
    pub split_number: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_bool")]
    pub cross_partition: Option<bool>,
}

/// `ArrowOptions` of a session request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ArrowOptionsBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp_unit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datetime_unit: Option<String>,
}

impl ArrowOptionsBody {
    /// The options these name, over the defaults (the large-string flag travels apart).
    pub fn to_options(&self) -> Result<ArrowOptions> {
        let mut options = ArrowOptions::default();
        if let Some(u) = &self.timestamp_unit {
            options.timestamp_unit = parse_time_unit(u)?;
        }
        if let Some(u) = &self.datetime_unit {
            options.datetime_unit = parse_time_unit(u)?;
        }
        Ok(options)
    }
}

/// The split count a Parallelism session gets when the request gives none.
pub const DEFAULT_PARALLELISM: u64 = 32;

impl From<&ReadSessionRequest> for CreateReadSessionRequest {
    fn from(r: &ReadSessionRequest) -> Self {
        let o = r.split_options;
        CreateReadSessionRequest {
            required_data_columns: r.required_data_columns.clone(),
            required_partition_columns: r.required_partition_columns.clone(),
            required_partitions: r
                .required_partitions
                .iter()
                .map(|p| p.to_string())
                .collect(),
            required_bucket_ids: r.required_bucket_ids.clone(),
            split_options: Some(SplitOptionsBody {
                split_mode: Some(o.mode.to_string()),
                split_unit: Some("ByteSize".into()),
                split_number: Some(o.number),
                cross_partition: Some(o.cross_partition),
            }),
            arrow_options: Some(ArrowOptionsBody {
                timestamp_unit: Some(time_unit_name(r.arrow_options.timestamp_unit).into()),
                datetime_unit: Some(time_unit_name(r.arrow_options.datetime_unit).into()),
            }),
            filter_predicate: Some(r.filter_predicate.clone()),
            filter_predicate_fallback: Some(r.filter_predicate_fallback),
            split_max_file_num: Some(0),
            incremental_read: Some(false),
            enable_large_string: Some(r.arrow_options.large_string),
        }
    }
}

impl CreateReadSessionRequest {
    /// The request for `table` (named by the query, not the body), with the service's
    /// defaults for what is not given: Size splits of
    /// [`SplitOptions::DEFAULT_SPLIT_SIZE`], [`DEFAULT_PARALLELISM`] splits.
    pub fn into_request(self, table: TableId) -> Result<ReadSessionRequest> {
        let split = self.split_options.unwrap_or_default();
        let mode: SplitMode = split.split_mode.as_deref().unwrap_or("Size").parse()?;
        let number = match (mode, split.split_number.unwrap_or(0)) {
            (SplitMode::Size | SplitMode::Bucket, 0) => SplitOptions::DEFAULT_SPLIT_SIZE,
            (SplitMode::Parallelism, 0) => DEFAULT_PARALLELISM,
            (_, n) => n,
        };
        let mut arrow_options = self.arrow_options.unwrap_or_default().to_options()?;
        arrow_options.large_string = self.enable_large_string.unwrap_or(false);
        Ok(ReadSessionRequest {
            table,
            required_data_columns: self.required_data_columns,
            required_partition_columns: self.required_partition_columns,
            required_partitions: self
                .required_partitions
                .iter()
                .map(|p| PartitionSpec::parse(p))
                .collect::<Result<_>>()?,
            required_bucket_ids: self.required_bucket_ids,
            split_options: SplitOptions {
                mode,
                number,
                cross_partition: split.cross_partition.unwrap_or(true),
            },
            arrow_options,
            filter_predicate: self.filter_predicate.unwrap_or_default(),
            filter_predicate_fallback: self.filter_predicate_fallback.unwrap_or(false),
        })
    }
}

/// A read session: the answer of `TableCreateReadSession` / `TableGetReadSession` and of
/// V1's session calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ReadSessionResponse {
    #[serde(deserialize_with = "or_default")]
    pub session_id: String,
    /// What older services call the session id.
    #[serde(
        rename = "DownloadID",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_text"
    )]
    pub download_id: Option<String>,
    #[serde(deserialize_with = "or_default")]
    pub session_type: String,
    #[serde(deserialize_with = "or_default")]
    pub session_status: String,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_i64")]
    pub expiration_time: Option<i64>,
    /// -1 in RowOffset sessions.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_i64")]
    pub splits_count: Option<i64>,
    /// -1 except in RowOffset sessions.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_i64")]
    pub record_count: Option<i64>,
    /// `Size` (for Parallelism sessions too) or `RowOffset`.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_text")]
    pub split_mode: Option<String>,
    #[serde(deserialize_with = "u32s")]
    pub split_bucket_id: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_schema: Option<ReadSchema>,
    #[serde(deserialize_with = "or_default")]
    pub supported_data_format: Vec<DataFormat>,
    #[serde(deserialize_with = "or_default")]
    pub session_stats: SessionStats,
    #[serde(deserialize_with = "or_default")]
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_bool")]
    pub enable_large_string: Option<bool>,
    /// paiio extension: the table version the session reads.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_u64")]
    pub table_version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_u64")]
    pub latest_version: Option<u64>,
}

/// `SessionStats` of a read session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct SessionStats {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_i64")]
    pub estimated_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_i64")]
    pub estimated_row_count: Option<i64>,
}

impl From<&ReadSession> for ReadSessionResponse {
    fn from(s: &ReadSession) -> Self {
        let row_offset = s.split_mode == SplitMode::RowOffset;
        ReadSessionResponse {
            session_id: s.session_id.clone(),
            download_id: None,
            session_type: "batch_read".into(),
            session_status: s.status.as_str().into(),
            expiration_time: Some(s.expiration_time_ms),
            // Clients switch to row ranges on SplitsCount == -1 (§8.1).
            splits_count: Some(if row_offset { -1 } else { s.splits_count }),
            record_count: Some(if row_offset { s.record_count } else { -1 }),
            split_mode: Some(if row_offset { "RowOffset" } else { "Size" }.into()),
            split_bucket_id: s.split_bucket_ids.clone(),
            data_schema: Some((&s.schema).into()),
            supported_data_format: vec![DataFormat::arrow_answer()],
            session_stats: SessionStats {
                estimated_size: Some(s.estimated_size),
                estimated_row_count: Some(s.record_count),
            },
            message: String::new(),
            enable_large_string: Some(s.arrow_options.large_string),
            table_version: Some(s.table_version),
            latest_version: None,
        }
    }
}

impl ReadSessionResponse {
    /// The session of `table` this answer describes. `known` is what the client asked the
    /// session for (its split mode and Arrow options), which the answer does not all echo:
    /// a Parallelism session is echoed as `Size`, and the time units not at all.
    pub fn into_session(
        self,
        table: &TableId,
        known: Option<(SplitMode, ArrowOptions)>,
    ) -> Result<ReadSession> {
        let session_id = match (self.session_id, self.download_id) {
            (id, _) if !id.is_empty() => id,
            (_, Some(id)) if !id.is_empty() => id,
            _ => return Err(malformed("read session", "no SessionId")),
        };
        let echoed = self.split_mode.and_then(|m| m.parse::<SplitMode>().ok());
        let splits_count = self.splits_count.unwrap_or(-1);
        let split_mode = match (echoed, known) {
            (Some(SplitMode::Size), Some((mode, _))) => mode,
            (Some(mode), _) => mode,
            (None, Some((mode, _))) => mode,
            (None, None) if splits_count < 0 => SplitMode::RowOffset,
            (None, None) => SplitMode::Size,
        };
        let record_count = match self.record_count {
            Some(n) if n >= 0 => n,
            _ => self
                .session_stats
                .estimated_row_count
                .filter(|n| *n >= 0)
                .unwrap_or(-1),
        };
        let mut arrow_options = known.map(|k| k.1).unwrap_or_default();
        if let Some(large) = self.enable_large_string {
            arrow_options.large_string = large;
        }
        Ok(ReadSession {
            session_id,
            table: table.clone(),
            status: parse_session_status(&self.session_status),
            expiration_time_ms: self.expiration_time.unwrap_or(0),
            split_mode,
            splits_count,
            record_count,
            estimated_size: self.session_stats.estimated_size.unwrap_or(0),
            schema: match &self.data_schema {
                Some(s) => TableSchema::try_from(s)?,
                None => TableSchema::default(),
            },
            arrow_options,
            table_version: self.table_version.or(self.latest_version).unwrap_or(0),
            split_bucket_ids: self.split_bucket_id,
        })
    }
}

/// The body of `TableRead`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct TableReadRequest {
    /// 0 or absent: the server's default.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_u64")]
    pub max_batch_rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_u64")]
    pub skip_row_num: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_u64")]
    pub max_batch_raw_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "tolerant")]
    pub data_format: Option<DataFormat>,
    #[serde(deserialize_with = "strings")]
    pub data_columns: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_bool")]
    pub data_columns_unordered: Option<bool>,
}

/// The body for the rows of `r` (its range travels in the query).
impl From<&ReadRequest> for TableReadRequest {
    fn from(r: &ReadRequest) -> Self {
        TableReadRequest {
            max_batch_rows: Some(r.max_batch_rows as u64),
            skip_row_num: Some(r.skip_rows),
            max_batch_raw_size: Some(0),
            data_format: Some(DataFormat::arrow_request()),
            data_columns: r.columns.clone(),
            data_columns_unordered: Some(false),
        }
    }
}

/// The body of `TablePreview`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct PreviewRequest {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_u64")]
    pub limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "strings")]
    pub columns: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// Write sessions
// ---------------------------------------------------------------------------------------

/// The body of `TableCreateWriteSession`: `PartialPartitionSpec` and `Flags` (Batch), or the
/// V1 fields (BatchCompatible, and V1's `POST .../sessions?session_type=batch_write`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct CreateWriteSessionRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_partition_spec: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<WriteFlags>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_spec: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_bool")]
    pub overwrite: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_bool")]
    pub enhance_write_check: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_partition_options: Option<DynamicPartitionOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arrow_options: Option<ArrowOptionsBody>,
}

/// `Flags` of a Batch write session request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WriteFlags {
    #[serde(
        alias = "Overwrite",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_bool"
    )]
    pub overwrite: Option<bool>,
}

/// `DynamicPartitionOptions` of a V1 write session request (checked, not acted on).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct DynamicPartitionOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_strategy: Option<String>,
    /// -1: no limit.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_i64")]
    pub invalid_limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_i64")]
    pub dynamic_partition_limit: Option<i64>,
}

impl From<&WriteSessionRequest> for CreateWriteSessionRequest {
    /// The Batch body (the mode travels in the query).
    fn from(r: &WriteSessionRequest) -> Self {
        CreateWriteSessionRequest {
            partial_partition_spec: Some(r.partition.to_string()),
            flags: Some(WriteFlags {
                overwrite: Some(r.overwrite),
            }),
            ..Default::default()
        }
    }
}

impl CreateWriteSessionRequest {
    /// The request for `table` in `mode`. Without an overwrite flag the session overwrites
    /// when `default_overwrite` (V1 clients mean it by leaving it out).
    pub fn into_request(
        self,
        table: TableId,
        mode: WriteMode,
        default_overwrite: bool,
    ) -> Result<WriteSessionRequest> {
        if let Some(d) = &self.dynamic_partition_options
            && let Some(s) = &d.invalid_strategy
            && !matches!(
                s.trim().to_ascii_lowercase().as_str(),
                "exception" | "drop" | "limit" | ""
            )
        {
            return Err(Error::invalid(
                "InvalidStrategy",
                format!("{s:?} (expected Exception, Drop or Limit)"),
            ));
        }
        if let Some(a) = &self.arrow_options {
            a.to_options()?;
        }
        let spec = self
            .partial_partition_spec
            .as_deref()
            .or(self.partition_spec.as_deref())
            .unwrap_or("");
        let overwrite = self
            .flags
            .and_then(|f| f.overwrite)
            .or(self.overwrite)
            .unwrap_or(default_overwrite);
        Ok(WriteSessionRequest {
            table,
            partition: PartitionSpec::parse(spec)?,
            overwrite,
            mode,
        })
    }
}

/// A write session: the answers of `TableCreateWriteSession`, `TableGetWriteSession` and
/// `TableCommitWriteSession`, and of V1's write session calls. Which fields an answer has
/// depends on the call and the mode (see the constructors).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct WriteSessionResponse {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_text")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_i64")]
    pub expiration_time: Option<i64>,
    /// The columns of the table (BatchCompatible and V1).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "tolerant")]
    pub data_schema: Option<ReadSchema>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supported_data_format: Option<Vec<DataFormat>>,
    /// Present in BatchCompatible sessions only.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_u64")]
    pub max_block_number: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_bool")]
    pub enhance_write_check: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_ordering: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_distribution: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams: Option<Vec<WriteStreamResponse>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub min_uncommitted_staging_id: Option<Option<Value>>,
    /// The write schema JSON ([`TableSchema::to_write_schema_json`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_partition_spec: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_spec: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_bool")]
    pub overwrite: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub warning_message: Option<Option<String>>,
    /// paiio extension: the table version a committed session made.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_u64")]
    pub committed_version: Option<u64>,
    /// paiio extension (commit answers): the table version committed.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_u64")]
    pub table_version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_u64")]
    pub version: Option<u64>,
    /// paiio extension (commit answers): the rows committed.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_u64")]
    pub record_count: Option<u64>,
}

impl WriteSessionResponse {
    /// A created Batch session: its id.
    pub fn created(session_id: &str) -> Self {
        WriteSessionResponse {
            session_id: Some(session_id.to_string()),
            warning_message: Some(None),
            ..Default::default()
        }
    }

    /// A Batch session.
    pub fn batch(s: &WriteSession) -> Self {
        WriteSessionResponse {
            session_status: Some(s.status.as_str().into()),
            expiration_time: Some(s.expiration_time_ms),
            ..Self::created(&s.session_id)
        }
    }

    /// A session of the block / attempt model (BatchCompatible, V1): the V1 write-session
    /// fields, with the columns of the table (`schema`).
    pub fn block_model(s: &WriteSession, schema: &TableSchema, enhance: Option<bool>) -> Self {
        WriteSessionResponse {
            session_type: Some("batch_write".into()),
            data_schema: Some(schema.into()),
            supported_data_format: Some(vec![DataFormat::arrow_answer()]),
            max_block_number: Some(super::MAX_BLOCK_NUMBER),
            enhance_write_check: enhance,
            required_ordering: Some(Vec::new()),
            required_distribution: Some(
                serde_json::json!({"Type": "UNSPECIFIED", "ClusterKeys": []}),
            ),
            message: Some(String::new()),
            ..Self::batch(s)
        }
    }

    /// Adds what `TableGetWriteSession` tells besides: the streams, the write schema and the
    /// committed version.
    pub fn with_streams(mut self, s: &WriteSession) -> Self {
        self.streams = Some(s.streams.iter().map(WriteStreamResponse::listed).collect());
        self.min_uncommitted_staging_id = Some(None);
        self.committed_version = s.committed_version;
        self.table_schema = Some(s.write_schema.to_write_schema_json());
        self
    }

    /// A commit's answer (paiio's fields: clients ignore the body).
    pub fn committed(info: CommitInfo) -> Self {
        WriteSessionResponse {
            table_version: Some(info.version),
            record_count: Some(info.rows),
            ..Default::default()
        }
    }

    /// The session this answer describes, over what the client already knows of it
    /// (`known`: its id, table, and the partition, overwrite flag, mode and committed version
    /// it created or saw it with), which the answers of the real service do not all echo.
    pub fn into_session(self, mut known: WriteSession) -> Result<WriteSession> {
        if let Some(streams) = self.streams {
            known.streams = streams
                .into_iter()
                .map(|s| {
                    let count = s.record_count.or(s.row_offset);
                    let mut w = s.into_stream(None)?;
                    if let Some(n) = count {
                        w.row_offset = n.max(0) as u64;
                    }
                    Ok(w)
                })
                .collect::<Result<_>>()?;
        }
        if let Some(s) = self.table_schema.as_ref().filter(|s| s.is_object()) {
            known.write_schema = TableSchema::from_write_schema_json(s)?;
        }
        if let Some(p) = self.partial_partition_spec.or(self.partition_spec) {
            known.partition = PartitionSpec::parse(&p)?;
        }
        known.mode = match self.write_mode {
            Some(m) if m.eq_ignore_ascii_case("BatchCompatible") => WriteMode::BatchCompatible,
            Some(_) => WriteMode::Batch,
            None if self.max_block_number.is_some() => WriteMode::BatchCompatible,
            None => known.mode,
        };
        known.status = parse_session_status(self.session_status.as_deref().unwrap_or(""));
        known.committed_version = self
            .committed_version
            .or(known.committed_version)
            .filter(|_| known.status == SessionStatus::Committed);
        known.expiration_time_ms = self.expiration_time.unwrap_or(0);
        known.overwrite = self.overwrite.unwrap_or(known.overwrite);
        Ok(known)
    }
}

/// A write stream: the answers of `TableCreateWriteStream` and `TableGetWriteStream`, and
/// the entries of a session's `Streams`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct WriteStreamResponse {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_text")]
    pub stream_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_u64")]
    pub stream_version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_text")]
    pub table_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_i64")]
    pub schema_version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub warning_message: Option<Option<String>>,
    /// Present in exactly-once streams.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_token: Option<String>,
    /// `OPEN` or `CLOSED` (`COMMITTED` counts as closed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The same, as some clients spell it.
    #[serde(rename = "status", skip_serializing_if = "Option::is_none")]
    pub status_lowercase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_i64")]
    pub record_count: Option<i64>,
    #[serde(
        rename = "recordCount",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_i64"
    )]
    pub record_count_lowercase: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_i64")]
    pub row_offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_i64")]
    pub byte_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub error_code: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub error_message: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_i64")]
    pub latest_schema_version: Option<i64>,
}

fn stream_status_name(s: StreamStatus) -> &'static str {
    match s {
        StreamStatus::Open => "OPEN",
        StreamStatus::Closed => "CLOSED",
    }
}

impl WriteStreamResponse {
    /// What every stream answer carries: ids, the session's write schema, the table, and
    /// the access token of an exactly-once stream.
    pub fn of(table: &TableId, session: &WriteSession, s: &WriteStream) -> Self {
        WriteStreamResponse {
            stream_id: Some(s.stream_id.clone()),
            stream_version: Some(s.version),
            table_schema: Some(session.write_schema.to_write_schema_json()),
            table_id: Some(table.to_string()),
            schema_version: Some(0),
            warning_message: Some(None),
            access_token: s.exactly_once.then(|| s.access_token.clone()),
            ..Default::default()
        }
    }

    /// The state `TableGetWriteStream` adds: status (as both spellings), row counts.
    /// `status` and `rows` are what to report for the version asked about.
    pub fn with_state(mut self, status: StreamStatus, rows: u64, row_offset: u64) -> Self {
        let status = stream_status_name(status).to_string();
        self.status = Some(status.clone());
        self.status_lowercase = Some(status);
        self.record_count = Some(rows as i64);
        self.record_count_lowercase = Some(rows as i64);
        self.row_offset = Some(row_offset as i64);
        self.byte_size = Some(0);
        self.error_code = Some(None);
        self.error_message = Some(None);
        self.latest_schema_version = Some(0);
        self
    }

    /// A stream as a session's `Streams` lists it.
    pub fn listed(s: &WriteStream) -> Self {
        WriteStreamResponse {
            stream_id: Some(s.stream_id.clone()),
            stream_version: Some(s.version),
            status: Some(stream_status_name(s.status).into()),
            record_count: Some(s.row_offset as i64),
            ..Default::default()
        }
    }

    /// The stream this answer describes; `fallback` is the id and version the request
    /// named, for answers that do not repeat them.
    pub fn into_stream(self, fallback: Option<(&str, u64)>) -> Result<WriteStream> {
        let stream_id = self
            .stream_id
            .or(fallback.map(|f| f.0.to_string()))
            .ok_or_else(|| malformed("write stream", "no StreamId"))?;
        let version = self
            .stream_version
            .or(fallback.map(|f| f.1))
            .ok_or_else(|| malformed("write stream", "no StreamVersion"))?;
        let status = match self.status.or(self.status_lowercase) {
            Some(s) if s.eq_ignore_ascii_case("CLOSED") || s.eq_ignore_ascii_case("COMMITTED") => {
                StreamStatus::Closed
            }
            _ => StreamStatus::Open,
        };
        let access_token = self.access_token.unwrap_or_default();
        Ok(WriteStream {
            stream_id,
            version,
            status,
            row_offset: self.row_offset.unwrap_or(0).max(0) as u64,
            exactly_once: !access_token.is_empty(),
            access_token,
        })
    }
}

/// The body of the stream calls: `TableCreateWriteStream`, `TableGetWriteStream`,
/// `TableCloseWriteStream`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct StreamRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// A string, or a number; empty means none.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_text")]
    pub stream_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_u64")]
    pub stream_version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_bool")]
    pub exactly_once_mode: Option<bool>,
}

impl StreamRequest {
    /// The stream id, when one is given (not empty).
    pub fn stream_id(&self) -> Option<&str> {
        self.stream_id.as_deref().filter(|s| !s.is_empty())
    }
}

/// The answer of `TableWrite` (and of a V1 block upload).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct WriteResponse {
    /// BatchCompatible and V1: the [`BlockCommitMessage`] as JSON text; null in Batch mode.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub commit_message: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_u64")]
    pub record_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub warning_message: Option<Option<String>>,
    /// Exactly-once: the stream's next expected row offset.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_i64")]
    pub exactly_once_row_offset: Option<i64>,
    /// paiio extension: the rows this write added (0 for a replay).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_u64")]
    pub rows_written: Option<u64>,
    /// paiio extension: whether the write was a replay, not applied again.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_bool")]
    pub duplicate: Option<bool>,
}

/// What a block upload answers, and a commit names: `{"BlockNumber", "AttemptNumber",
/// "StreamVersion", "WriterStats": {"RecordNum"}}`, plus `SessionId` in V1. The
/// `StreamVersion` (which upload of the attempt) is paiio's own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BlockCommitMessage {
    #[serde(default, deserialize_with = "opt_u64")]
    pub block_number: Option<u64>,
    #[serde(default, deserialize_with = "opt_u64")]
    pub attempt_number: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_u64"
    )]
    pub stream_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer_stats: Option<WriterStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// `WriterStats` of a block commit message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct WriterStats {
    #[serde(deserialize_with = "opt_u64")]
    pub record_num: Option<u64>,
}

impl BlockCommitMessage {
    /// The message of an upload of `rows` rows as block `block`, attempt `attempt`, stream
    /// version `version`.
    pub fn new(block: u64, attempt: u64, version: u64, rows: u64) -> Self {
        BlockCommitMessage {
            block_number: Some(block),
            attempt_number: Some(attempt),
            stream_version: Some(version),
            writer_stats: Some(WriterStats {
                record_num: Some(rows),
            }),
            session_id: None,
        }
    }

    /// The JSON text a commit message travels as.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The block and attempt (0 when not given).
    pub fn block(&self) -> Result<(u64, u64), String> {
        let block = self
            .block_number
            .ok_or_else(|| format!("commit message {} has no BlockNumber", self.to_text()))?;
        Ok((block, self.attempt_number.unwrap_or(0)))
    }
}

/// The body of `TableCommitWriteSession` (and of V1's commit).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct CommitRequest {
    /// Batch: the streams to commit (absent: every closed stream) ...
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_texts"
    )]
    pub stream_ids: Option<Vec<String>>,
    /// ... and their versions, pairwise.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_u64s")]
    pub stream_versions: Option<Vec<u64>>,
    /// BatchCompatible and V1: the commit messages of the uploads to commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_messages: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_i64")]
    pub wait_flying_writers_timeout_seconds: Option<i64>,
}

impl CommitRequest {
    /// A Batch commit of these (stream, version) pairs (`None`: every closed stream).
    pub fn streams(streams: Option<&[(String, u64)]>) -> Self {
        CommitRequest {
            stream_ids: streams.map(|l| l.iter().map(|(id, _)| id.clone()).collect()),
            stream_versions: streams.map(|l| l.iter().map(|(_, v)| *v).collect()),
            ..Default::default()
        }
    }

    /// The (stream, version) pairs of a Batch commit (empty: every closed stream).
    pub fn stream_pairs(&self) -> Result<Vec<(String, u64)>, String> {
        let ids = self.stream_ids.as_deref().unwrap_or_default();
        let versions = self.stream_versions.as_deref().unwrap_or_default();
        if ids.len() != versions.len() {
            return Err(format!(
                "StreamIds has {} entries but StreamVersions has {}",
                ids.len(),
                versions.len()
            ));
        }
        Ok(ids.iter().cloned().zip(versions.iter().copied()).collect())
    }

    /// The commit messages, each the JSON text of an upload's answer or the object itself.
    /// Null and empty entries are dropped (as the Java client does).
    pub fn block_messages(&self) -> Result<Vec<BlockCommitMessage>, String> {
        let mut out = Vec::new();
        for m in self.commit_messages.iter().flatten() {
            let obj = match m {
                Value::Null => continue,
                Value::String(s) if s.trim().is_empty() => continue,
                Value::String(s) => serde_json::from_str::<Value>(s).map_err(|e| {
                    format!("commit message {s:?} was not issued by this server: {e}")
                })?,
                Value::Object(_) => m.clone(),
                other => return Err(format!("commit message {other} is not a string")),
            };
            let message: BlockCommitMessage = serde_json::from_value(obj.clone())
                .map_err(|e| format!("commit message {obj}: {e}"))?;
            message.block()?;
            out.push(message);
        }
        Ok(out)
    }
}

/// The answer of `TableGetWriteSchema`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct WriteSchemaResponse {
    /// The write schema JSON ([`TableSchema::to_write_schema_json`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub warning_message: Option<Option<String>>,
}

impl From<&TableSchema> for WriteSchemaResponse {
    fn from(schema: &TableSchema) -> Self {
        WriteSchemaResponse {
            table_schema: Some(schema.to_write_schema_json()),
            warning_message: Some(None),
        }
    }
}

impl WriteSchemaResponse {
    /// The schema, when the answer has one.
    pub fn schema(&self) -> Result<Option<TableSchema>> {
        match self.table_schema.as_ref().filter(|s| s.is_object()) {
            Some(s) => TableSchema::from_write_schema_json(s).map(Some),
            None => Ok(None),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Blobs
// ---------------------------------------------------------------------------------------

/// The answer of `TableWriteBlob`: one reference, or (`Mode=batch`) one per frame.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct WriteBlobResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob_reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob_references: Option<Vec<String>>,
    #[serde(deserialize_with = "opt_u64")]
    pub size: Option<u64>,
    #[serde(rename = "MD5Value", skip_serializing_if = "Option::is_none")]
    pub md5_value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub warning_message: Option<Option<String>>,
}

/// The body of `BlobRead`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct BlobReadRequest {
    #[serde(deserialize_with = "strings")]
    pub blob_references: Vec<String>,
}

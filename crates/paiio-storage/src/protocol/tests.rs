//! Round trips through the wire, without a server: every message from its `service` type,
//! through JSON text, back to the same value; every error through `to_wire`, its JSON body
//! and `from_response`, back to the same kind and fields.

use arrow_schema::TimeUnit;
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{ErrorContext, from_response, to_wire};
use super::from_json;
use super::storage::*;
use crate::error::{Error, ObjectKind};
use crate::service::*;
use crate::types::{ArrowOptions, Column, OdpsType, TableSchema};
use crate::uri::{PartitionSpec, TableId};

/// Through JSON text, as the other side reads it.
fn wire<T: Serialize + DeserializeOwned>(message: &T) -> T {
    from_json(&serde_json::to_vec(message).unwrap()).unwrap()
}

fn table() -> TableId {
    TableId::new("p", None, "t").unwrap()
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 _.:`'\"\\\\/-]{0,12}"
}

fn names() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[a-z][a-z0-9_]{0,6}", 0..4)
}

fn partition() -> impl Strategy<Value = PartitionSpec> {
    prop_oneof![
        Just(PartitionSpec::empty()),
        "[a-z0-9]{1,5}".prop_map(|v| PartitionSpec::parse(&format!("pt={v}")).unwrap()),
    ]
}

fn schema() -> impl Strategy<Value = TableSchema> {
    let types = [
        "bigint",
        "string",
        "double",
        "decimal(10,2)",
        "varchar(5)",
        "array<int>",
        "map<string,bigint>",
        "struct<a:int,b:string>",
        "timestamp",
    ];
    let ty = prop::sample::select(types.to_vec());
    (
        // A write schema has at least one data column.
        prop::collection::vec((ty.clone(), any::<bool>(), text()), 1..5),
        prop::collection::vec(any::<bool>(), 0..2),
    )
        .prop_map(|(data, parts)| {
            let column = |name: String, ty: &str, nullable: bool, comment: String| Column {
                nullable,
                comment,
                ..Column::new(name, ty.parse::<OdpsType>().unwrap())
            };
            let columns = data
                .into_iter()
                .enumerate()
                .map(|(i, (ty, nullable, comment))| column(format!("c{i}"), ty, nullable, comment))
                .collect();
            let partitions = parts
                .into_iter()
                .enumerate()
                .map(|(i, nullable)| column(format!("pt{i}"), "string", nullable, String::new()))
                .collect();
            TableSchema::new(columns, partitions).unwrap()
        })
}

fn arrow_options() -> impl Strategy<Value = ArrowOptions> {
    let unit = prop::sample::select(vec![
        TimeUnit::Second,
        TimeUnit::Millisecond,
        TimeUnit::Microsecond,
        TimeUnit::Nanosecond,
    ]);
    (unit.clone(), unit, any::<bool>()).prop_map(|(timestamp_unit, datetime_unit, large_string)| {
        ArrowOptions {
            timestamp_unit,
            datetime_unit,
            large_string,
        }
    })
}

fn split_mode() -> impl Strategy<Value = SplitMode> {
    prop::sample::select(vec![
        SplitMode::Size,
        SplitMode::Parallelism,
        SplitMode::RowOffset,
        SplitMode::Bucket,
    ])
}

fn status() -> impl Strategy<Value = SessionStatus> {
    prop::sample::select(vec![
        SessionStatus::Init,
        SessionStatus::Normal,
        SessionStatus::Critical,
        SessionStatus::Expired,
        SessionStatus::Committing,
        SessionStatus::Committed,
    ])
}

fn stream(exactly_once: bool) -> impl Strategy<Value = WriteStream> {
    (
        "[a-z0-9-]{1,10}",
        0u64..100,
        any::<bool>(),
        0u64..1 << 40,
        "[a-z0-9]{1,8}",
    )
        .prop_map(
            move |(stream_id, version, closed, row_offset, token)| WriteStream {
                stream_id,
                version,
                status: if closed {
                    StreamStatus::Closed
                } else {
                    StreamStatus::Open
                },
                row_offset,
                access_token: if exactly_once { token } else { String::new() },
                exactly_once,
            },
        )
}

proptest! {
    #[test]
    fn read_session_requests(
        columns in names(),
        partitions in prop::collection::vec(partition(), 0..3),
        buckets in prop::collection::vec(any::<u32>(), 0..3),
        mode in split_mode(),
        number in 1u64..1 << 40,
        cross_partition in any::<bool>(),
        arrow in arrow_options(),
        filter in text(),
        fallback in any::<bool>(),
    ) {
        let request = ReadSessionRequest {
            table: table(),
            required_data_columns: columns.clone(),
            required_partition_columns: columns,
            required_partitions: partitions,
            required_bucket_ids: buckets,
            split_options: SplitOptions { mode, number, cross_partition },
            arrow_options: arrow,
            filter_predicate: filter,
            filter_predicate_fallback: fallback,
        };
        let body = wire(&CreateReadSessionRequest::from(&request));
        prop_assert_eq!(body.into_request(table()).unwrap(), request);
    }

    #[test]
    fn read_sessions(
        id in "[a-z0-9-]{1,20}",
        status in status(),
        expiration in any::<i64>(),
        mode in split_mode(),
        splits in 0i64..1000,
        rows in 0i64..i64::MAX,
        size in any::<i64>(),
        schema in schema(),
        arrow in arrow_options(),
        version in any::<u64>(),
        buckets in prop::collection::vec(any::<u32>(), 0..3),
    ) {
        let session = ReadSession {
            session_id: id,
            table: table(),
            status,
            expiration_time_ms: expiration,
            split_mode: mode,
            splits_count: if mode == SplitMode::RowOffset { -1 } else { splits },
            record_count: rows,
            estimated_size: size,
            schema,
            arrow_options: arrow,
            table_version: version,
            split_bucket_ids: buckets,
        };
        let answer = wire(&ReadSessionResponse::from(&session));
        prop_assert_eq!(
            answer.into_session(&table(), Some((mode, arrow))).unwrap(),
            session
        );
    }

    #[test]
    fn table_reads_and_previews(
        rows in 1usize..1 << 20,
        skip in any::<u64>(),
        columns in names(),
        limit in any::<u64>(),
    ) {
        let mut request = ReadRequest::new(table(), "s", ReadRange::Split(0));
        request.max_batch_rows = rows;
        request.skip_rows = skip;
        request.columns = columns.clone();
        let body = TableReadRequest::from(&request);
        prop_assert_eq!(wire(&body), body);
        let preview = PreviewRequest { limit: Some(limit), partition: None, columns };
        prop_assert_eq!(wire(&preview), preview);
    }

    #[test]
    fn write_sessions(
        partition in partition(),
        overwrite in any::<bool>(),
        mode in prop::sample::select(vec![WriteMode::Batch, WriteMode::BatchCompatible]),
        status in status(),
        expiration in any::<i64>(),
        schema in schema(),
        streams in prop::collection::vec(stream(false), 0..3),
        committed in any::<u64>(),
    ) {
        let request = WriteSessionRequest { table: table(), partition, overwrite, mode };
        let body = wire(&CreateWriteSessionRequest::from(&request));
        prop_assert_eq!(body.into_request(table(), mode, false).unwrap(), request.clone());

        let session = WriteSession {
            session_id: "w1".into(),
            table: table(),
            status,
            expiration_time_ms: expiration,
            partition: request.partition,
            overwrite,
            mode,
            write_schema: schema.clone(),
            streams,
            committed_version: (status == SessionStatus::Committed).then_some(committed),
        };
        let answer = match mode {
            WriteMode::Batch => WriteSessionResponse::batch(&session),
            WriteMode::BatchCompatible => WriteSessionResponse::block_model(&session, &schema, None),
        };
        // What the client knows of its session: the partition and flag it created it with.
        let known = WriteSession {
            status: SessionStatus::Normal,
            expiration_time_ms: 0,
            mode: WriteMode::Batch,
            write_schema: TableSchema::default(),
            streams: Vec::new(),
            committed_version: None,
            ..session.clone()
        };
        let back = wire(&answer.with_streams(&session)).into_session(known).unwrap();
        prop_assert_eq!(back, session);
    }

    #[test]
    fn write_streams(s in prop_oneof![stream(false), stream(true)], schema in schema()) {
        let session = WriteSession {
            session_id: "w1".into(),
            table: table(),
            status: SessionStatus::Normal,
            expiration_time_ms: 0,
            partition: PartitionSpec::empty(),
            overwrite: false,
            mode: WriteMode::Batch,
            write_schema: schema,
            streams: Vec::new(),
            committed_version: None,
        };
        let answer = WriteStreamResponse::of(&table(), &session, &s)
            .with_state(s.status, s.row_offset, s.row_offset);
        prop_assert_eq!(wire(&answer).into_stream(None).unwrap(), s);
    }

    #[test]
    fn writes_and_commits(
        list in prop::collection::vec(("[a-z0-9-]{1,10}", any::<u64>()), 0..4),
        all in any::<bool>(),
        block in 0u64..MAX_BLOCK_NUMBER,
        attempt in any::<u64>(),
        version in any::<u64>(),
        rows in any::<u64>(),
        offset in any::<i64>(),
        duplicate in any::<bool>(),
    ) {
        let streams = (!all).then_some(&list[..]);
        let body = wire(&CommitRequest::streams(streams));
        prop_assert_eq!(body.stream_pairs().unwrap(), streams.unwrap_or_default().to_vec());

        let message = BlockCommitMessage::new(block, attempt, version, rows);
        let commit = wire(&CommitRequest {
            commit_messages: Some(vec![message.to_text().into(), serde_json::Value::Null]),
            ..Default::default()
        });
        prop_assert_eq!(commit.block_messages().unwrap(), vec![message.clone()]);
        prop_assert_eq!(message.block().unwrap(), (block, attempt));

        let answer = WriteResponse {
            commit_message: Some(None),
            exactly_once_row_offset: Some(offset),
            rows_written: Some(rows),
            duplicate: Some(duplicate),
            warning_message: Some(None),
            ..Default::default()
        };
        prop_assert_eq!(wire(&answer), answer);
    }

    #[test]
    fn errors(
        variant in 0..10,
        kind in prop::sample::select(ObjectKind::ALL.to_vec()),
        a in text(),
        b in text(),
        c in text(),
        status in 500u16..600,
    ) {
        let error = match variant {
            0 => Error::NotFound { kind, name: a },
            1 => Error::AlreadyExists { kind, name: a },
            2 => Error::InvalidArgument { what: a, message: b },
            3 => Error::TypeMismatch { column: a, message: b },
            4 => Error::SessionExpired { session_id: a },
            5 => Error::InvalidState { session_id: a, state: b, message: c },
            6 => Error::OutOfRange { message: a },
            7 => Error::Conflict { table: a, message: b },
            8 => Error::NotSupported { message: a },
            _ => Error::Service { status, code: a, message: b, request_id: String::new() },
        };
        let (status, body) = to_wire(&error);
        let bytes = serde_json::to_vec(&body).unwrap();
        let back = from_response(status, Some("r1"), &bytes, &ErrorContext::default());
        // Kind and fields; a service error gains the request id of the answer.
        let expected = match error {
            Error::Service { status, code, message, .. } => Error::Service {
                status,
                code,
                message,
                request_id: "r1".into(),
            },
            e => e,
        };
        prop_assert_eq!(format!("{back:?}"), format!("{expected:?}"));
        prop_assert_eq!(back.is_retryable(), expected.is_retryable());
    }
}

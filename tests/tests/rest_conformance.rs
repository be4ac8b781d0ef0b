//! The `TableService` conformance suite through the REST client and the in-process server
//! (see [`paiio_tests::RestHarness`] for which calls go over HTTP), and the client's own
//! behaviour: signing, auth errors, compressed reads, resumed reads, retries.

use std::time::Duration;

use futures::TryStreamExt;
use paiio_conformance::datagen::{DataGen, assert_exactly_once};
use paiio_server::{Fault, When};
use paiio_storage::auth::Credentials;
use paiio_storage::error::ObjectKind;
use paiio_storage::protocol::codec::BodyEncoding;
use paiio_storage::rest::RestClient;
use paiio_storage::{
    Error, ReadRange, ReadRequest, ReadSessionRequest, TableId, TableService, WriteRequest,
    WriteSessionRequest,
};
use paiio_tests::{PROJECT, TestServer, row_offset_request, status_fault, write_request};

// The whole conformance suite (every capability of `paiio_conformance`), one test each,
// against a RestClient talking to an in-process server with real keys.
paiio_conformance::conformance_tests!(async paiio_tests::rest_backend());

/// Creates a table in the warehouse and commits `rows` generated rows through `client`.
async fn table_with_rows(
    server: &TestServer,
    client: &RestClient,
    name: &str,
    rows: i64,
) -> (TableId, DataGen) {
    let g = DataGen::simple(7);
    let table = server.create_table(name, &g).await;
    if rows == 0 {
        return (table, g);
    }
    let session = client
        .create_write_session(&WriteSessionRequest::new(table.clone()))
        .await
        .unwrap();
    let sid = &session.session_id;
    let stream = client
        .create_write_stream(&table, sid, Some("s0"), false)
        .await
        .unwrap();
    let ack = client
        .write(write_request(
            &table,
            sid,
            &stream,
            g.batches(0..rows, 1000),
        ))
        .await
        .unwrap();
    assert_eq!(ack.next_row_offset, rows as u64);
    client
        .close_write_stream(&table, sid, "s0", stream.version)
        .await
        .unwrap();
    let info = client
        .commit_write_session(&table, sid, None)
        .await
        .unwrap();
    assert_eq!(info.rows, rows as u64);
    (table, g)
}

async fn read_all(
    client: &RestClient,
    table: &TableId,
    max_batch_rows: usize,
) -> Result<Vec<i64>, Error> {
    let session = client
        .create_read_session(&ReadSessionRequest::new(table.clone()))
        .await?;
    let mut out = Vec::new();
    for i in 0..session.splits_count.max(0) as u64 {
        let mut req = ReadRequest::new(table.clone(), &session.session_id, ReadRange::Split(i));
        req.max_batch_rows = max_batch_rows;
        let batches: Vec<_> = client.read(&req).await?.try_collect().await?;
        out.extend(paiio_conformance::datagen::ids(&batches));
    }
    Ok(out)
}

#[tokio::test]
async fn signing_legacy_and_v4() {
    let server = TestServer::start().await;
    let legacy = server.client();
    let (table, _) = table_with_rows(&server, &legacy, "signed", 50).await;
    let v4 = server
        .client_builder()
        .region(Some("cn-hangzhou"))
        .build()
        .unwrap();
    assert_exactly_once(
        &read_all(&v4, &table, 4096).await.unwrap(),
        0..50,
        "V4-signed read",
    );
    // An explicit tunnel endpoint skips discovery.
    let direct = server
        .client_builder()
        .tunnel_endpoint(server.handle.url())
        .build()
        .unwrap();
    assert_exactly_once(
        &read_all(&direct, &table, 4096).await.unwrap(),
        0..50,
        "direct tunnel read",
    );
    assert_eq!(
        legacy.tunnel_endpoint(PROJECT).await.unwrap(),
        server.handle.url()
    );
}

#[tokio::test]
async fn wrong_key_is_unauthenticated() {
    let server = TestServer::start().await;
    let (table, _) = table_with_rows(&server, &server.client(), "auth", 5).await;
    let tunnel = server.handle.url();
    for region in [None, Some("cn-hangzhou")] {
        let bad = server
            .client_builder()
            .credentials(Credentials::new(paiio_tests::ACCESS_ID, "wrong"))
            .tunnel_endpoint(tunnel.clone())
            .region(region)
            .build()
            .unwrap();
        let err = bad
            .create_read_session(&ReadSessionRequest::new(table.clone()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Unauthenticated { .. }),
            "{region:?}: {err:?}"
        );
    }
    let anonymous = RestClient::builder(server.handle.endpoint())
        .tunnel_endpoint(tunnel)
        .build()
        .unwrap();
    let err = anonymous.describe_table(&table).await.unwrap_err();
    assert!(matches!(err, Error::Unauthenticated { .. }), "{err:?}");
}

#[tokio::test]
async fn describe_table_over_rest() {
    let server = TestServer::start().await;
    let client = server.client();
    let (table, g) = table_with_rows(&server, &client, "described", 30).await;
    let info = client.describe_table(&table).await.unwrap();
    assert_eq!(info.schema, g.table_schema(Vec::new()));
    assert_eq!(info.row_count, 30);
    assert!(info.partitions.is_empty());
    let missing = TableId::new(PROJECT, None, "nope").unwrap();
    assert!(matches!(
        client.describe_table(&missing).await,
        Err(Error::NotFound {
            kind: ObjectKind::Table,
            ..
        })
    ));
    // Catalog calls are not part of the Storage API.
    assert!(matches!(
        client.drop_table(&table, false).await,
        Err(Error::NotSupported { .. })
    ));
}

#[tokio::test]
async fn compressed_reads_decode() {
    let server = TestServer::start().await;
    let (table, g) = table_with_rows(&server, &server.client(), "compressed", 5000).await;
    for codec in [BodyEncoding::Zstd, BodyEncoding::Lz4Frame] {
        let client = server
            .client_builder()
            .read_compression(Some(codec))
            .build()
            .unwrap();
        let session = client
            .create_read_session(&row_offset_request(&table))
            .await
            .unwrap();
        let mut req = ReadRequest::new(
            table.clone(),
            &session.session_id,
            ReadRange::Rows {
                offset: 0,
                count: 5000,
            },
        );
        req.max_batch_rows = 300;
        let batches: Vec<_> = client
            .read(&req)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert!(batches.iter().all(|b| b.num_rows() <= 300));
        assert_exactly_once(
            &g.verified_ids(&batches, "compressed"),
            0..5000,
            &format!("{codec:?} read"),
        );
    }
}

/// Reads through a fault on the first TableRead and checks every row arrives exactly once.
async fn read_through(
    fault: Fault,
    compression: Option<BodyEncoding>,
    read_timeout: Option<Duration>,
) {
    let server = TestServer::start().await;
    let (table, g) = table_with_rows(&server, &server.client(), "faulty", 3000).await;
    let mut builder = server.client_builder().read_compression(compression);
    if let Some(t) = read_timeout {
        builder = builder.read_timeout(t);
    }
    let client = builder.build().unwrap();
    let rows = ReadRange::Rows {
        offset: 0,
        count: 3000,
    };
    for (range, request, range_of) in [
        (
            "split",
            ReadSessionRequest::new(table.clone()),
            ReadRange::Split(0),
        ),
        ("rows", row_offset_request(&table), rows),
    ] {
        let session = client.create_read_session(&request).await.unwrap();
        assert!(range != "split" || session.splits_count == 1, "{session:?}");
        server.inject(fault.clone(), When::Nth(1), "TableRead");
        let mut req = ReadRequest::new(table.clone(), &session.session_id, range_of);
        req.max_batch_rows = 250;
        let batches: Vec<_> = client
            .read(&req)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("{fault:?} {range}: {e}"));
        assert_exactly_once(
            &g.verified_ids(&batches, "resumed"),
            0..3000,
            &format!("{fault:?} ({range}, {compression:?})"),
        );
        let status = server.faults.status();
        assert_eq!(status["fired"], 1, "{status}");
        server.faults.clear();
    }
}

#[tokio::test]
async fn read_resumes_after_reset_mid_body() {
    for bytes in [1, 5000, 20_000] {
        read_through(Fault::ResetAfter { bytes }, None, None).await;
    }
}

#[tokio::test]
async fn read_resumes_after_truncation() {
    for bytes in [0, 3, 9000] {
        read_through(Fault::Truncate { bytes }, None, None).await;
    }
}

#[tokio::test]
async fn compressed_read_resumes() {
    let zstd = Some(BodyEncoding::Zstd);
    read_through(Fault::ResetAfter { bytes: 4000 }, zstd, None).await;
    let lz4 = Some(BodyEncoding::Lz4Frame);
    read_through(Fault::Truncate { bytes: 4000 }, lz4, None).await;
}

#[tokio::test]
async fn read_resumes_after_stall() {
    read_through(
        Fault::Stall {
            ms: 3000,
            after_bytes: Some(6000),
        },
        None,
        Some(Duration::from_millis(500)),
    )
    .await;
}

#[tokio::test]
async fn read_retries_errors_before_the_body() {
    for fault in [
        Fault::Reset,
        status_fault(503, None),
        status_fault(429, Some(0)),
    ] {
        read_through(fault, None, None).await;
    }
}

#[tokio::test]
async fn retries_are_bounded() {
    let server = TestServer::start().await;
    let client = server.client();
    let (table, _) = table_with_rows(&server, &client, "bounded", 10).await;
    let fault = status_fault(500, None);
    server.inject(fault, When::Always, "TableCreateReadSession");
    let err = client
        .create_read_session(&ReadSessionRequest::new(table.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Service { status: 500, ref request_id, .. } if !request_id.is_empty()),
        "{err:?}"
    );
    // 1 attempt + 5 retries (fast_retry).
    assert_eq!(server.faults.status()["fired"], 6);
}

#[tokio::test]
async fn plain_writes_are_not_repeated_but_exactly_once_writes_are() {
    let server = TestServer::start().await;
    let client = server.client();
    let g = DataGen::simple(3);
    let table = server.create_table("writes", &g).await;
    let session = client
        .create_write_session(&WriteSessionRequest::new(table.clone()))
        .await
        .unwrap();
    let sid = session.session_id.clone();
    let lose_a_write = || server.inject(Fault::ResponseLost, When::Nth(1), "TableWrite");

    // Exactly-once: the lost answer is retried at the same offset and deduplicated.
    let eo = client
        .create_write_stream(&table, &sid, Some("eo"), true)
        .await
        .unwrap();
    assert!(eo.exactly_once && !eo.access_token.is_empty());
    lose_a_write();
    let ack = client
        .write(WriteRequest {
            row_offset: Some(0),
            access_token: Some(eo.access_token.clone()),
            ..write_request(&table, &sid, &eo, vec![g.batch(0..10)])
        })
        .await
        .unwrap();
    assert_eq!(ack.next_row_offset, 10);
    assert_eq!(server.faults.status()["fired"], 1);

    // Plain: the same fault surfaces as an error (the rows may or may not have landed).
    let plain = client
        .create_write_stream(&table, &sid, Some("plain"), false)
        .await
        .unwrap();
    lose_a_write();
    let err = client
        .write(write_request(&table, &sid, &plain, vec![g.batch(100..110)]))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    server.faults.clear();
    client
        .close_write_stream(&table, &sid, "eo", eo.version)
        .await
        .unwrap();
    client
        .close_write_stream(&table, &sid, "plain", plain.version)
        .await
        .unwrap();
    let info = client
        .commit_write_session(&table, &sid, Some(&[("eo".to_string(), eo.version)]))
        .await
        .unwrap();
    assert_eq!(info.rows, 10);
}

#[tokio::test]
async fn commit_is_retried_when_its_answer_is_lost() {
    let server = TestServer::start().await;
    let client = server.client();
    let (table, g) = table_with_rows(&server, &client, "lost_commit", 0).await;
    let session = client
        .create_write_session(&WriteSessionRequest::new(table.clone()))
        .await
        .unwrap();
    let sid = &session.session_id;
    let s = client
        .create_write_stream(&table, sid, Some("a"), false)
        .await
        .unwrap();
    client
        .write(write_request(&table, sid, &s, vec![g.batch(0..20)]))
        .await
        .unwrap();
    client
        .close_write_stream(&table, sid, "a", s.version)
        .await
        .unwrap();
    server.inject(Fault::ResponseLost, When::Nth(1), "TableCommitWriteSession");
    let info = client
        .commit_write_session(&table, sid, None)
        .await
        .unwrap();
    assert_eq!(info.rows, 20);
    assert_exactly_once(
        &read_all(&client, &table, 4096).await.unwrap(),
        0..20,
        "one commit",
    );
}

#[tokio::test]
async fn route_tokens_are_kept_per_session() {
    let server = TestServer::start().await;
    let client = server.client();
    let (table, _) = table_with_rows(&server, &client, "routed", 3).await;
    let session = client
        .create_read_session(&ReadSessionRequest::new(table))
        .await
        .unwrap();
    assert_eq!(
        client.route_token(&session.session_id),
        Some(format!("rt-{}", session.session_id))
    );
}

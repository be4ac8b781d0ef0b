//! The Tunnel over HTTP (docs/tunnel.md): sessions, row ranges in both stream forms and every
//! compression, blocks that replace each other, an idempotent commit, and bad requests that
//! get a clear 4xx in XML and change nothing.

use paiio_storage::protocol::tunnel::arrow_stream::{
    ArrowDecodeOptions, ArrowStreamDecoder, DEFAULT_CHUNK_SIZE, encode_arrow,
};
use paiio_storage::protocol::tunnel::encoding::Compression;
use paiio_storage::protocol::tunnel::record::{RecordDecodeOptions, RecordDecoder, encode_records};
use paiio_storage::protocol::tunnel::session::{DownloadSession, UploadSession};
use paiio_storage::{ArrowOptions, Column, OdpsType, TableSchema, TableService};
use reqwest::StatusCode;

use crate::common::{Answer, Served, batch, send, serve};

const TABLE: &str = "/projects/p/tables/t";

fn schema() -> TableSchema {
    TableSchema::new(
        vec![
            Column::new("a", OdpsType::BigInt),
            Column::new("b", OdpsType::String),
        ],
        vec![],
    )
    .unwrap()
}

async fn served() -> Served {
    serve(schema(), Some(batch(0..100)), |b| b).await
}

async fn call(s: &Served, method: reqwest::Method, query: String, body: Vec<u8>) -> Answer {
    let url = format!("{}{TABLE}?{query}", s.handle.url());
    send(s.http.request(method, url).body(body)).await
}

/// A 4xx in the Tunnel's XML form, whose message names `needle`.
fn refused_xml(answer: &Answer, needle: &str) {
    let text = answer.text();
    assert!(answer.status.is_client_error(), "{}: {text}", answer.status);
    for element in ["<Code>", "<Message>", "<RequestId>", "<HostId>"] {
        assert!(text.contains(element), "{element} missing: {text}");
    }
    assert!(text.contains(needle), "{needle:?} not in {text}");
}

fn ids(batches: &[arrow_array::RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<arrow_array::Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

fn decode_records(body: &[u8]) -> Vec<arrow_array::RecordBatch> {
    let columns = schema().columns;
    let mut d = RecordDecoder::new(
        &columns,
        &ArrowOptions::default(),
        RecordDecodeOptions::default(),
    )
    .unwrap();
    let mut out = d.feed(body).unwrap();
    out.extend(d.finish().unwrap());
    out
}

async fn download(s: &Served) -> DownloadSession {
    let answer = call(s, reqwest::Method::POST, "downloads=".into(), vec![]).await;
    answer.assert_status(StatusCode::OK);
    DownloadSession::from_json(&answer.body).unwrap()
}

async fn upload_session(s: &Served, id: &str) -> UploadSession {
    let answer = call(s, reqwest::Method::GET, format!("uploadid={id}"), vec![]).await;
    answer.assert_status(StatusCode::OK);
    UploadSession::from_json(&answer.body).unwrap()
}

async fn rows(s: &Served) -> u64 {
    s.service.describe_table(&s.table).await.unwrap().row_count
}

#[tokio::test]
async fn row_ranges_are_read_in_both_forms_and_every_compression() {
    let s = served().await;
    let session = download(&s).await;
    assert_eq!(session.record_count, Some(100));
    let read = |query: String, encoding: Option<Compression>| {
        let url = format!("{}{TABLE}?{query}", s.handle.url());
        let mut request = s.http.get(url);
        if let Some(c) = encoding {
            request = request.header("accept-encoding", c.encoding());
        }
        send(request)
    };
    let range = |extra: &str| format!("data{extra}&downloadid={}&rowrange=(10,20)", session.id);
    let records = read(range(""), None).await;
    records.assert_status(StatusCode::OK);
    assert_eq!(
        ids(&decode_records(&records.body)),
        (10..30).collect::<Vec<_>>()
    );
    for c in Compression::ALL {
        for arrow in [false, true] {
            let answer = read(range(if arrow { "&arrow" } else { "" }), Some(c)).await;
            answer.assert_status(StatusCode::OK);
            assert_eq!(answer.header("content-encoding"), Some(c.encoding()));
            let body = c.decompress(&answer.body, 1 << 20).unwrap();
            let batches = if arrow {
                let columns = schema().columns;
                let mut d =
                    ArrowStreamDecoder::new(&columns, ArrowDecodeOptions::default()).unwrap();
                let mut out = d.feed(&body).unwrap();
                out.extend(d.finish().unwrap());
                out
            } else {
                decode_records(&body)
            };
            assert_eq!(
                ids(&batches),
                (10..30).collect::<Vec<_>>(),
                "{c:?} arrow={arrow}"
            );
        }
    }
    // columns= picks and orders the record fields.
    let answer = read(range("&columns=b"), None).await;
    let columns = vec![Column::new("b", OdpsType::String)];
    let mut d = RecordDecoder::new(
        &columns,
        &ArrowOptions::default(),
        RecordDecodeOptions::default(),
    )
    .unwrap();
    let mut got = d.feed(&answer.body).unwrap();
    got.extend(d.finish().unwrap());
    assert!(got.iter().all(|b| b.num_columns() == 1));
    assert_eq!(got.iter().map(|b| b.num_rows()).sum::<usize>(), 20);
}

#[tokio::test]
async fn bad_reads_are_refused_in_xml() {
    let s = served().await;
    let id = download(&s).await.id;
    let get = |query: String| call(&s, reqwest::Method::GET, query, vec![]);
    for (query, needle) in [
        (
            format!("data&downloadid={id}&rowrange=(95,10)"),
            "past the session",
        ),
        (format!("data&downloadid={id}&rowrange=95,10"), "rowrange"),
        (format!("data&downloadid={id}&rowrange=(1,-1)"), "rowrange"),
        (format!("data&downloadid={id}"), "rowrange"),
        (
            format!("data&downloadid={id}&rowrange=(0,1)&columns=zz"),
            "zz",
        ),
        (
            format!("data&downloadid={id}&rowrange=(0,1)&columns=a,A"),
            "more than once",
        ),
        ("data&downloadid=nope&rowrange=(0,1)".to_string(), "nope"),
        ("downloadid=".to_string(), "downloadid"),
        ("whatever=1".to_string(), "not a Tunnel call"),
    ] {
        refused_xml(&get(query).await, needle);
    }
    // A partitioned table needs its partition, and only an existing one.
    let pt = format!("{}/projects/p/tables/nope?downloads=", s.handle.url());
    let answer = send(s.http.post(pt)).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text());
    // An expired session is refused.
    s.clock.advance_ms(48 * 3600 * 1000);
    refused_xml(
        &get(format!("data&downloadid={id}&rowrange=(0,1)")).await,
        "expired",
    );
}

#[tokio::test]
async fn blocks_replace_each_other_and_bad_blocks_change_nothing() {
    let s = served().await;
    let created = call(&s, reqwest::Method::POST, "uploads=1".into(), vec![]).await;
    created.assert_status(StatusCode::OK);
    let id = UploadSession::from_json(&created.body).unwrap().id;
    let columns = schema().columns;
    let block = |n: u64, extra: &str| format!("uploadid={id}&blockid={n}{extra}");
    let records = |range| encode_records(&columns, &[batch(range)]).unwrap();
    let put = |query: String, body: Vec<u8>| call(&s, reqwest::Method::PUT, query, body);
    put(block(0, ""), records(1000..1005))
        .await
        .assert_status(StatusCode::OK);
    // The same block again replaces it (a retried PUT never duplicates rows).
    put(block(0, ""), records(1000..1003))
        .await
        .assert_status(StatusCode::OK);
    let arrow = encode_arrow(&columns, &[batch(2000..2002)], DEFAULT_CHUNK_SIZE).unwrap();
    put(block(1, "&arrow"), arrow.clone())
        .await
        .assert_status(StatusCode::OK);
    // Damaged bodies: a flipped bit, a cut, a wrong form, an unknown block id.
    let mut flipped = records(3000..3010);
    flipped[7] ^= 0x10;
    let good = records(3000..3010);
    let cut = good[..good.len() - 3].to_vec();
    for (query, body, needle) in [
        (block(2, ""), flipped, "Tunnel"),
        (block(2, ""), cut, "truncated"),
        (block(2, ""), arrow.clone(), "Tunnel"),
        (block(2, "&arrow"), good.clone(), "Tunnel"),
        (block(2, "&arrow"), arrow[..arrow.len() - 1].to_vec(), "cut"),
        (format!("uploadid={id}&blockid=x"), good.clone(), "blockid"),
        (
            format!("uploadid={id}&blockid=99999999"),
            good.clone(),
            "limit",
        ),
        ("uploadid=nope&blockid=2".to_string(), good.clone(), "nope"),
    ] {
        refused_xml(&put(query, body).await, needle);
    }
    let zstd_bad = s
        .http
        .put(format!("{}{TABLE}?{}", s.handle.url(), block(2, "")))
        .header("content-encoding", "zstd")
        .body(good.clone());
    refused_xml(&send(zstd_bad).await, "zstd");
    let gzip = s
        .http
        .put(format!("{}{TABLE}?{}", s.handle.url(), block(2, "")))
        .header("content-encoding", "gzip")
        .body(good.clone());
    refused_xml(&send(gzip).await, "gzip");
    assert_eq!(upload_session(&s, &id).await.block_ids(), vec![0, 1]);
    assert_eq!(rows(&s).await, 100, "nothing is visible before the commit");
    let commit = call(&s, reqwest::Method::POST, format!("uploadid={id}"), vec![]).await;
    commit.assert_status(StatusCode::OK);
    let closed = UploadSession::from_json(&commit.body).unwrap();
    assert_eq!(closed.status.as_str(), "CLOSED");
    assert_eq!(rows(&s).await, 105);
    // A commit sent again (its answer lost) answers the same and adds nothing.
    let again = call(&s, reqwest::Method::POST, format!("uploadid={id}"), vec![]).await;
    again.assert_status(StatusCode::OK);
    assert_eq!(rows(&s).await, 105);
    // A committed session takes no more blocks.
    refused_xml(&put(block(5, ""), good).await, "no longer accepts");
    assert_eq!(rows(&s).await, 105);
}

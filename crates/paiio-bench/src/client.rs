//! The HTTP side: Storage API V2 read sessions and TableRead streams against `paiio serve`,
//! consumed as fast as possible (throughput) or slowly and all at once (concurrency).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow_buffer::Buffer;
use arrow_ipc::reader::StreamDecoder;
pub use paiio_storage::protocol::codec::BodyEncoding;
use paiio_storage::protocol::storage::{
    Action, CreateReadSessionRequest, ReadSessionResponse, SplitOptionsBody, TableReadRequest,
};

use crate::proc_stats;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How reports name a body encoding.
pub fn label(encoding: BodyEncoding) -> &'static str {
    match encoding {
        BodyEncoding::Identity => "none",
        BodyEncoding::Lz4Frame => "lz4",
        BodyEncoding::Zstd => "zstd",
    }
}

/// A client for the local server: no proxies, no automatic decompression, a connection
/// per concurrent request.
pub fn http_client() -> Result<reqwest::Client, BoxError> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(2048)
        .connect_timeout(Duration::from_secs(60))
        .build()?)
}

/// What the bench needs of a read session.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    /// Indexed splits; -1 in RowOffset mode.
    pub splits: i64,
    pub rows: u64,
    pub estimated_size: u64,
}

const TARGET: &str = "projects.bench.tables.wide";

/// TableCreateReadSession with the given `SplitOptions`.
pub async fn create_session(
    client: &reqwest::Client,
    v2: &str,
    split_options: SplitOptionsBody,
) -> Result<Session, BoxError> {
    let body = CreateReadSessionRequest {
        split_options: Some(split_options),
        ..Default::default()
    };
    let response = client
        .post(format!(
            "{v2}?Action={}&Target={TARGET}",
            Action::TableCreateReadSession
        ))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_string(&body)?)
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        return Err(format!("TableCreateReadSession: HTTP {status}: {text}").into());
    }
    let v: ReadSessionResponse = serde_json::from_str(&text)?;
    let stats = &v.session_stats;
    if v.session_id.is_empty() {
        return Err("no SessionId".into());
    }
    Ok(Session {
        id: v.session_id,
        splits: v.splits_count.unwrap_or(-1),
        rows: stats.estimated_row_count.unwrap_or(0).max(0) as u64,
        estimated_size: stats.estimated_size.unwrap_or(0).max(0) as u64,
    })
}

/// Which rows one TableRead asks for.
#[derive(Debug, Clone, Copy)]
pub enum Range {
    Split(u64),
    Rows { offset: u64, count: u64 },
}

async fn table_read(
    client: &reqwest::Client,
    v2: &str,
    session: &str,
    range: Range,
    encoding: BodyEncoding,
    max_batch_rows: usize,
) -> Result<reqwest::Response, BoxError> {
    // Session ids are letters and digits: nothing in the query needs escaping.
    let mut url = format!(
        "{v2}?Action={}&Target={TARGET}&SessionId={session}",
        Action::TableRead
    );
    match range {
        Range::Split(i) => url.push_str(&format!("&Index={i}")),
        Range::Rows { offset, count } => url.push_str(&format!("&Offset={offset}&Count={count}")),
    }
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_string(&TableReadRequest {
            max_batch_rows: Some(max_batch_rows as u64),
            ..Default::default()
        })?);
    if let Some(enc) = encoding.content_encoding() {
        request = request.header(reqwest::header::ACCEPT_ENCODING, enc);
    }
    let response = request.send().await?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(format!("TableRead {range:?}: HTTP {status}: {text}").into());
    }
    Ok(response)
}

/// The end-of-stream marker of the Arrow IPC streaming format.
const IPC_EOS: [u8; 8] = [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0];

/// Checks an uncompressed Arrow IPC body as it arrives: decodes every batch, counts rows,
/// and requires the end-of-stream marker (a cut stream fails).
#[derive(Debug, Default)]
pub struct IpcCheck {
    decoder: StreamDecoder,
    tail: Vec<u8>,
    pub rows: u64,
}

impl IpcCheck {
    pub fn feed(&mut self, chunk: bytes::Bytes) -> Result<(), BoxError> {
        if chunk.len() >= 8 {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - 8..]);
        } else {
            self.tail.extend_from_slice(&chunk);
            let excess = self.tail.len().saturating_sub(8);
            self.tail.drain(..excess);
        }
        let mut buffer = Buffer::from(chunk);
        while !buffer.is_empty() {
            if let Some(batch) = self.decoder.decode(&mut buffer)? {
                self.rows += batch.num_rows() as u64;
            }
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<u64, BoxError> {
        self.decoder.finish()?;
        if self.tail != IPC_EOS {
            return Err("the Arrow stream ended without its end-of-stream marker".into());
        }
        Ok(self.rows)
    }
}

/// The figures of one throughput scenario.
#[derive(Debug, Clone)]
pub struct Throughput {
    pub encoding: BodyEncoding,
    pub readers: usize,
    pub splits: i64,
    pub wall_s: f64,
    pub wire_bytes: u64,
    /// Rows decoded (only when checking; else 0).
    pub rows: u64,
    pub server_cpu_s: f64,
    pub client_cpu_s: f64,
}

/// Reads the whole table through `readers` concurrent TableRead streams over the splits of
/// a Parallelism session, counting wire bytes (and, with `check`, decoding uncompressed
/// bodies to count rows).
pub async fn throughput(
    client: &reqwest::Client,
    v2: &str,
    server_pid: u32,
    encoding: BodyEncoding,
    readers: usize,
    max_batch_rows: usize,
    check: bool,
) -> Result<Throughput, BoxError> {
    let session = create_session(
        client,
        v2,
        SplitOptionsBody {
            split_mode: Some("Parallelism".into()),
            split_number: Some(readers as u64),
            ..Default::default()
        },
    )
    .await?;
    let splits = session.splits.max(0) as u64;
    let next = Arc::new(AtomicU64::new(0));
    let cpu0 = proc_stats::cpu_seconds(server_pid).ok_or("cannot read the server's CPU time")?;
    let self0 = proc_stats::self_cpu_seconds();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..readers {
        let (client, v2, id, next) = (
            client.clone(),
            v2.to_string(),
            session.id.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (mut wire, mut rows) = (0u64, 0u64);
            loop {
                let split = next.fetch_add(1, Ordering::SeqCst);
                if split >= splits {
                    break;
                }
                let mut response = table_read(
                    &client,
                    &v2,
                    &id,
                    Range::Split(split),
                    encoding,
                    max_batch_rows,
                )
                .await?;
                let mut ipc = (check && encoding == BodyEncoding::Identity).then(IpcCheck::default);
                while let Some(chunk) = response.chunk().await? {
                    wire += chunk.len() as u64;
                    if let Some(ipc) = &mut ipc {
                        ipc.feed(chunk)?;
                    }
                }
                if let Some(ipc) = ipc {
                    rows += ipc.finish()?;
                }
            }
            Ok::<_, BoxError>((wire, rows))
        }));
    }
    let (mut wire_bytes, mut rows) = (0, 0);
    for t in tasks {
        let (w, r) = t.await??;
        wire_bytes += w;
        rows += r;
    }
    let wall_s = started.elapsed().as_secs_f64();
    let server_cpu_s = proc_stats::cpu_seconds(server_pid).ok_or("the server exited")? - cpu0;
    let client_cpu_s = proc_stats::self_cpu_seconds() - self0;
    Ok(Throughput {
        encoding,
        readers,
        splits: session.splits,
        wall_s,
        wire_bytes,
        rows,
        server_cpu_s,
        client_cpu_s,
    })
}

/// The outcome of the many-streams test.
#[derive(Debug, Clone, Default)]
pub struct ManyStreams {
    pub streams: usize,
    pub ok: usize,
    pub errors: usize,
    /// The first few error messages.
    pub error_samples: Vec<String>,
    /// The most streams that were open (headers received, body not yet finished) at once.
    pub max_open: usize,
    pub rows: u64,
    pub wire_bytes: u64,
    pub wall_s: f64,
    pub rss_before: u64,
    pub rss_peak: u64,
    pub rss_after: u64,
    pub fds_peak: usize,
    pub server_cpu_s: f64,
}

/// What [`many_streams`] does.
#[derive(Debug, Clone, Copy)]
pub struct ManyStreamsOptions {
    /// Streams opened at once.
    pub streams: usize,
    /// Rows of the table (all streams together read them all).
    pub table_rows: u64,
    /// Uncompressed Arrow bytes of the table, to pace the reads.
    pub table_bytes: u64,
    /// About how long the streams are consumed once all are open.
    pub hold: Duration,
    pub max_batch_rows: usize,
}

/// Opens `streams` TableRead streams at once on consecutive row ranges of a RowOffset session
/// (together the whole table), waits until every one has its response, then consumes them
/// all slowly (about `hold` in all) while sampling the server's RSS every 50 ms. Every body is
/// decoded and must end cleanly; rows must add up to the table.
pub async fn many_streams(
    client: &reqwest::Client,
    v2: &str,
    server_pid: u32,
    options: &ManyStreamsOptions,
) -> Result<ManyStreams, BoxError> {
    let ManyStreamsOptions {
        streams,
        table_rows,
        table_bytes,
        hold,
        max_batch_rows,
    } = *options;
    let session = create_session(
        client,
        v2,
        SplitOptionsBody {
            split_mode: Some("RowOffset".into()),
            ..Default::default()
        },
    )
    .await?;
    // Let the slot of the session call go before the streams take theirs.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = proc_stats::memory(server_pid, "VmRSS").unwrap_or(0);
    let cpu0 = proc_stats::cpu_seconds(server_pid).unwrap_or(0.0);

    // RSS sampler.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut peak, mut fds) = (0u64, 0usize);
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            while !stop.load(Ordering::SeqCst) {
                tick.tick().await;
                peak = peak.max(proc_stats::memory(server_pid, "VmRSS").unwrap_or(0));
                fds = fds.max(proc_stats::open_fds(server_pid).unwrap_or(0));
            }
            (peak, fds)
        })
    };

    // Every stream waits at this gate until all have their response (or failed).
    let arrived = Arc::new(AtomicUsize::new(0));
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
    let gate_tx = Arc::new(gate_tx);
    let open = Arc::new(AtomicUsize::new(0));
    let max_open = Arc::new(AtomicUsize::new(0));
    let per_stream_bytes = (table_bytes / streams as u64).max(1);
    // Consume about a tenth of a stream's bytes every `hold / 10`.
    let ticks = 10u64;
    let pace_bytes = (per_stream_bytes / ticks).max(16 << 10);
    let pace_sleep = hold / ticks as u32;

    let started = Instant::now();
    let mut tasks = Vec::with_capacity(streams);
    let base = table_rows / streams as u64;
    let extra = table_rows % streams as u64;
    let mut offset = 0;
    for i in 0..streams as u64 {
        let count = base + u64::from(i < extra);
        let range = Range::Rows { offset, count };
        offset += count;
        let (client, v2, id) = (client.clone(), v2.to_string(), session.id.clone());
        let (arrived, gate_tx, mut gate_rx) = (arrived.clone(), gate_tx.clone(), gate_rx.clone());
        let (open, max_open) = (open.clone(), max_open.clone());
        tasks.push(tokio::spawn(async move {
            let arrive = || {
                if arrived.fetch_add(1, Ordering::SeqCst) + 1 == streams {
                    let _ = gate_tx.send(true);
                }
            };
            let mut response = match table_read(
                &client,
                &v2,
                &id,
                range,
                BodyEncoding::Identity,
                max_batch_rows,
            )
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    arrive();
                    return Err(e);
                }
            };
            let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
            max_open.fetch_max(now_open, Ordering::SeqCst);
            arrive();
            let result = async {
                // Wait (at most a minute) until every stream is open.
                let _ =
                    tokio::time::timeout(Duration::from_secs(60), gate_rx.wait_for(|v| *v)).await;
                let mut ipc = IpcCheck::default();
                let (mut wire, mut since_pause) = (0u64, 0u64);
                while let Some(chunk) = response.chunk().await? {
                    wire += chunk.len() as u64;
                    since_pause += chunk.len() as u64;
                    ipc.feed(chunk)?;
                    if since_pause >= pace_bytes {
                        since_pause = 0;
                        tokio::time::sleep(pace_sleep).await;
                    }
                }
                let rows = ipc.finish()?;
                if rows != count {
                    return Err(format!("{range:?}: {rows} rows delivered").into());
                }
                Ok::<_, BoxError>((rows, wire))
            }
            .await;
            open.fetch_sub(1, Ordering::SeqCst);
            result
        }));
    }
    let mut result = ManyStreams {
        streams,
        ..Default::default()
    };
    for t in tasks {
        match t.await {
            Ok(Ok((rows, wire))) => {
                result.ok += 1;
                result.rows += rows;
                result.wire_bytes += wire;
            }
            Ok(Err(e)) => {
                result.errors += 1;
                if result.error_samples.len() < 5 {
                    result.error_samples.push(e.to_string());
                }
            }
            Err(e) => {
                result.errors += 1;
                if result.error_samples.len() < 5 {
                    result.error_samples.push(format!("task failed: {e}"));
                }
            }
        }
    }
    result.wall_s = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let (peak, fds) = sampler.await?;
    result.rss_before = rss_before;
    result.rss_peak = peak.max(rss_before);
    result.fds_peak = fds;
    result.max_open = max_open.load(Ordering::SeqCst);
    result.server_cpu_s = proc_stats::cpu_seconds(server_pid).unwrap_or(0.0) - cpu0;
    tokio::time::sleep(Duration::from_millis(500)).await;
    result.rss_after = proc_stats::memory(server_pid, "VmRSS").unwrap_or(0);
    if result.ok == streams && result.rows != table_rows {
        result.errors += 1;
        result.error_samples.push(format!(
            "{} rows in all, {table_rows} expected",
            result.rows
        ));
    }
    Ok(result)
}

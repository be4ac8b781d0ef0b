//! Reads of `bench.wide` through any [`TableService`] (the HTTP [`RestClient`] or the
//! in-process [`LocalWarehouse`]), with every batch fully decoded, and a raw decode of the
//! warehouse's Arrow IPC data files: the readers `client_bench` compares.
//!
//! [`RestClient`]: paiio_storage::rest::RestClient
//! [`LocalWarehouse`]: paiio_storage::local::LocalWarehouse

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Array, RecordBatch};
use futures::StreamExt;
use paiio_storage::{ReadRange, ReadRequest, ReadSessionRequest, SplitOptions, TableService};

use crate::client::BoxError;
use crate::{proc_stats, table};

/// Logical bytes of a batch as Arrow data: the bytes its arrays' slices cover (offsets and
/// values of strings, 8 bytes per number, validity bitmaps), however the buffers are shared.
pub fn batch_bytes(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0) as u64)
        .sum()
}

/// `n` consecutive row ranges `(offset, count)` covering `[0, rows)`, as even as can be.
pub fn even_ranges(rows: u64, n: usize) -> Vec<(u64, u64)> {
    let n = n.max(1) as u64;
    let (base, extra) = (rows / n, rows % n);
    let mut offset = 0;
    (0..n)
        .map(|i| {
            let count = base + u64::from(i < extra);
            let range = (offset, count);
            offset += count;
            range
        })
        .filter(|&(_, count)| count > 0)
        .collect()
}

/// `n` ranges of `count` rows each, spread over a table of `rows` rows (overlapping, wrapping
/// around, when `n × count` exceeds the table).
pub fn fixed_ranges(rows: u64, n: usize, count: u64) -> Vec<(u64, u64)> {
    let count = count.clamp(1, rows.max(1));
    let span = rows - count + 1;
    (0..n as u64).map(|i| ((i * count) % span, count)).collect()
}

/// What one read of a set of ranges delivered.
#[derive(Debug, Clone, Default)]
pub struct ReadRun {
    pub streams: usize,
    /// From the read session's creation to the end of the last stream.
    pub wall_s: f64,
    /// From the first TableRead to the end of the last stream (no session creation).
    pub read_s: f64,
    pub rows: u64,
    /// Logical Arrow bytes of the delivered batches ([`batch_bytes`]).
    pub bytes: u64,
    pub batches: u64,
    /// Seconds each stream took, from its TableRead to its last batch.
    pub stream_s: Vec<f64>,
    /// CPU seconds of this process (all threads) over the run.
    pub self_cpu_s: f64,
}

/// Creates a RowOffset read session of `bench.wide` on `service` and reads `ranges` at once,
/// one concurrent stream per range, decoding every batch. Fails unless every range delivers
/// exactly its rows.
pub async fn read_ranges(
    service: Arc<dyn TableService>,
    ranges: &[(u64, u64)],
    max_batch_rows: usize,
) -> Result<ReadRun, BoxError> {
    let cpu0 = proc_stats::self_cpu_seconds();
    let started = Instant::now();
    let table = table::table_id();
    let mut request = ReadSessionRequest::new(table.clone());
    request.split_options = SplitOptions::row_offset();
    let session = service.create_read_session(&request).await?;
    let read_started = Instant::now();
    let mut tasks = Vec::with_capacity(ranges.len());
    for &(offset, count) in ranges {
        let (service, table, id) = (service.clone(), table.clone(), session.session_id.clone());
        tasks.push(tokio::spawn(async move {
            let began = Instant::now();
            let mut request = ReadRequest::new(table, id, ReadRange::Rows { offset, count });
            request.max_batch_rows = max_batch_rows;
            let mut stream = service.read(&request).await?;
            let (mut rows, mut bytes, mut batches) = (0u64, 0u64, 0u64);
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                bytes += batch_bytes(&batch);
                batches += 1;
            }
            if rows != count {
                return Err(format!("rows {offset}+{count}: {rows} delivered").into());
            }
            Ok::<_, BoxError>((rows, bytes, batches, began.elapsed().as_secs_f64()))
        }));
    }
    let mut run = ReadRun {
        streams: ranges.len(),
        ..Default::default()
    };
    for t in tasks {
        let (rows, bytes, batches, secs) = t.await??;
        run.rows += rows;
        run.bytes += bytes;
        run.batches += batches;
        run.stream_s.push(secs);
    }
    run.wall_s = started.elapsed().as_secs_f64();
    run.read_s = read_started.elapsed().as_secs_f64();
    run.self_cpu_s = proc_stats::self_cpu_seconds() - cpu0;
    Ok(run)
}

/// The Arrow IPC data files (`*.arrow`) under `dir`, sorted.
pub fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() && path.extension().is_some_and(|x| x == "arrow") => {
                    out.push(path)
                }
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Decodes `files` (Arrow IPC files) with `threads` threads taking files in turn, as plain
/// `arrow_ipc::reader::FileReader`s: the floor under any reader of this warehouse.
pub fn decode_files(files: &[PathBuf], threads: usize) -> Result<ReadRun, BoxError> {
    let cpu0 = proc_stats::self_cpu_seconds();
    let started = Instant::now();
    let files = Arc::new(files.to_vec());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handles: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (files, next) = (files.clone(), next.clone());
            std::thread::spawn(move || -> Result<(u64, u64, u64, f64), String> {
                let began = Instant::now();
                let (mut rows, mut bytes, mut batches) = (0u64, 0u64, 0u64);
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(path) = files.get(i) else { break };
                    let file = std::fs::File::open(path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    let reader =
                        arrow_ipc::reader::FileReader::try_new(std::io::BufReader::new(file), None)
                            .map_err(|e| format!("{}: {e}", path.display()))?;
                    for batch in reader {
                        let batch = batch.map_err(|e| format!("{}: {e}", path.display()))?;
                        rows += batch.num_rows() as u64;
                        bytes += batch_bytes(&batch);
                        batches += 1;
                    }
                }
                Ok((rows, bytes, batches, began.elapsed().as_secs_f64()))
            })
        })
        .collect();
    let mut run = ReadRun {
        streams: threads.max(1),
        ..Default::default()
    };
    for h in handles {
        let (rows, bytes, batches, secs) = h.join().map_err(|_| "a decoding thread panicked")??;
        run.rows += rows;
        run.bytes += bytes;
        run.batches += batches;
        run.stream_s.push(secs);
    }
    run.wall_s = started.elapsed().as_secs_f64();
    run.read_s = run.wall_s;
    run.self_cpu_s = proc_stats::self_cpu_seconds() - cpu0;
    Ok(run)
}

/// What the PyODPS child reported.
#[derive(Debug, Clone, Default)]
pub struct PyodpsRun {
    pub rows: u64,
    pub bytes: u64,
    pub batches: u64,
    pub splits: u64,
    /// Session creation and the reads.
    pub wall_s: f64,
    pub read_s: f64,
    pub cpu_s: f64,
    pub versions: String,
    pub raw: serde_json::Value,
}

/// Runs `python script --endpoint E --split-rows R ...` and parses the JSON line it prints last.
pub fn run_pyodps(
    python: &Path,
    script: &Path,
    endpoint: &str,
    split_rows: u64,
    max_batch_rows: usize,
    compress: Option<&str>,
    timeout: Duration,
) -> Result<PyodpsRun, BoxError> {
    run_pyodps_range(
        python,
        script,
        endpoint,
        split_rows,
        None,
        max_batch_rows,
        compress,
        timeout,
    )
}

/// [`run_pyodps`] reading only the rows `(offset, count)` (`--offset O --count C`) when given,
/// in splits of `split_rows` rows (0: one split over the range).
#[allow(clippy::too_many_arguments)]
pub fn run_pyodps_range(
    python: &Path,
    script: &Path,
    endpoint: &str,
    split_rows: u64,
    range: Option<(u64, u64)>,
    max_batch_rows: usize,
    compress: Option<&str>,
    timeout: Duration,
) -> Result<PyodpsRun, BoxError> {
    let mut cmd = std::process::Command::new(python);
    cmd.arg(script)
        .args([
            "--endpoint",
            endpoint,
            "--project",
            "bench",
            "--table",
            "wide",
        ])
        .args([
            "--split-rows",
            &split_rows.to_string(),
            "--max-batch-rows",
            &max_batch_rows.to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(c) = compress {
        cmd.args(["--compress", c]);
    }
    if let Some((offset, count)) = range {
        cmd.args([
            "--offset",
            &offset.to_string(),
            "--count",
            &count.to_string(),
        ]);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(timeout) {
        Ok(out) => out?,
        Err(_) => {
            // SAFETY: kill sends a signal to our own child, by its pid.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            return Err(format!("the PyODPS reader did not finish within {timeout:?}").into());
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "the PyODPS reader failed ({}): {}{}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or("no JSON from the PyODPS reader")?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    let u = |k: &str| v[k].as_u64().unwrap_or(0);
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    Ok(PyodpsRun {
        rows: u("rows"),
        bytes: u("bytes"),
        batches: u("batches"),
        splits: u("splits"),
        wall_s: f("seconds"),
        read_s: f("read_seconds"),
        cpu_s: f("cpu_seconds"),
        versions: format!(
            "pyodps {}, pyarrow {}",
            v["pyodps"].as_str().unwrap_or("?"),
            v["pyarrow"].as_str().unwrap_or("?")
        ),
        raw: v,
    })
}

/// The floor of any client on this machine: `wire_bytes` sent over one TCP connection on
/// 127.0.0.1 in writes of `message` bytes and received into one reused buffer, with no
/// parsing, decoding or allocation. `self_cpu_s` is the receiving thread's CPU time (the
/// kernel's receive path and the copy out of the socket); the sending thread's is returned
/// beside it, the floor of a server. `bytes` is `logical_bytes`, so that the figures per GB
/// compare with the readers' rows.
pub fn loopback_tcp(
    wire_bytes: u64,
    logical_bytes: u64,
    message: usize,
) -> Result<(ReadRun, f64), BoxError> {
    use std::io::{Read, Write};
    let message = message.max(1);
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let sender = std::thread::spawn(move || -> Result<f64, String> {
        let (mut socket, _) = listener.accept().map_err(|e| e.to_string())?;
        let data = vec![7u8; message];
        let cpu0 = proc_stats::thread_cpu_seconds();
        let mut left = wire_bytes;
        while left > 0 {
            let n = left.min(message as u64) as usize;
            socket.write_all(&data[..n]).map_err(|e| e.to_string())?;
            left -= n as u64;
        }
        Ok(proc_stats::thread_cpu_seconds() - cpu0)
    });
    let mut socket = std::net::TcpStream::connect(addr)?;
    // Woken once per message at most, as paiio's client is while it reads a message body.
    let lowat = message.min(1 << 20) as libc::c_int;
    // SAFETY: setsockopt reads an int from a live local; the descriptor is the socket's.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&lowat as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let mut buffer = vec![0u8; message];
    let cpu0 = proc_stats::thread_cpu_seconds();
    let started = Instant::now();
    let mut got = 0u64;
    loop {
        let n = socket.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let wall_s = started.elapsed().as_secs_f64();
    let cpu = proc_stats::thread_cpu_seconds() - cpu0;
    let sender_cpu = sender.join().map_err(|_| "the sending thread panicked")??;
    if got != wire_bytes {
        return Err(format!("loopback: {got} bytes received, {wire_bytes} sent").into());
    }
    let run = ReadRun {
        streams: 1,
        wall_s,
        read_s: wall_s,
        bytes: logical_bytes,
        self_cpu_s: cpu,
        stream_s: vec![wall_s],
        ..Default::default()
    };
    Ok((run, sender_cpu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_table() {
        let r = even_ranges(10, 4);
        assert_eq!(r, vec![(0, 3), (3, 3), (6, 2), (8, 2)]);
        assert_eq!(even_ranges(2, 4), vec![(0, 1), (1, 1)]);
        let f = fixed_ranges(100, 8, 30);
        assert!(f.iter().all(|&(o, c)| c == 30 && o + c <= 100), "{f:?}");
    }
}

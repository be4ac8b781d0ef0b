//! Direct reads: the row streams of `TableRead` calls over plain `http://`, on connections
//! of the client's own, with each Arrow IPC message body read from the socket straight into
//! a buffer of its own.
//!
//! Through the general HTTP client a body arrives in the pieces the socket happened to hold
//! (tens of KiB on a fast link), and the IPC decoder copies the pieces of each message
//! (about 400 KB on the bench table) together: a second copy of every byte read, and a
//! wake-up of the reading task per piece. Here the client follows the IPC framing itself: a
//! message's metadata gives its body's length, and the body is read with `readv` into one
//! buffer of that size (the HTTP chunk framing that interrupts it lands in a small side
//! buffer), which the decoder then takes without copying. While a body is incomplete the
//! socket's `SO_RCVLOWAT` is the bytes still missing (at most [`MAX_LOWAT`]), so the kernel
//! wakes the reader about once per message rather than once per segment; on loopback the
//! sender pays for the receiver's wake-ups, so this lowers the server's CPU per GB as well.
//!
//! The answer is handed on as an ordinary `reqwest::Response` whose body frames are whole
//! messages, so status handling, retries, error bodies and the decoders are the ones every
//! other call uses. Anything that is not Arrow framing (an error body, a compressed body,
//! bytes that do not parse as IPC messages, a message body over [`MAX_MESSAGE_BODY`]) is
//! passed on as it arrives, and the decoder downstream judges it.
//!
//! Message bodies are read into buffers that come back to the client when the batches made
//! of them are dropped (at most [`RECYCLED_BYTES`] kept): a fresh buffer of that size would
//! come from new pages, which the kernel faults in and zeroes while it copies into them, and
//! which are unmapped again when the batch is freed.
//!
//! A connection is kept for the next request (HTTP/1.1 keep-alive) when its body was read to
//! the end; before one is reused a peek checks that the server has not closed it meanwhile,
//! and a request is sent once per attempt (the retry loop counts and repeats it). HTTPS,
//! and a client with a proxy configured in its environment, use the general client.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

/// The most bytes an answer's status line and headers may take.
const MAX_HEAD: usize = 64 << 10;
/// How many bytes past the current body a read may take into the side buffer.
const SPILL: usize = 4 << 10;
/// How many bytes past the end of a chunk a read inside a message body takes into the side
/// buffer: a chunk header, and a few bytes of the chunk's data.
const CHUNK_HEADER_SPILL: usize = 64;
/// The highest `SO_RCVLOWAT` a read sets.
pub(super) const MAX_LOWAT: usize = 1 << 20;
/// Bodies at least this long to go are waited for with `SO_RCVLOWAT`.
const MIN_LOWAT: usize = 32 << 10;
/// The largest message body read into a buffer of its own; a larger one is passed on in
/// pieces (the decoder bounds it).
const MAX_MESSAGE_BODY: u64 = 64 << 20;
/// The largest message metadata followed; past it the bytes are passed on as they come.
const MAX_METADATA: usize = 16 << 20;
/// The most bytes of body buffers kept for reuse (per client).
pub(super) const RECYCLED_BYTES: usize = 64 << 20;
/// How long a kept connection may wait for its next request.
const IDLE: Duration = Duration::from_secs(60);
/// Kept connections per host.
const MAX_IDLE_PER_HOST: usize = 64;
/// The size of the pieces a body that is not followed message by message is passed on in.
const RAW_PIECE: usize = 64 << 10;

/// Whether the environment configures a proxy the general client would use for `http://`.
pub(super) fn proxy_in_env() -> bool {
    ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
}

/// Why a direct request failed.
#[derive(Debug)]
pub(super) struct DirectError {
    pub(super) error: io::Error,
    /// The failure came before the request could have reached the server (connecting).
    pub(super) before_send: bool,
    /// The request cannot be sent as it is (a header the protocol cannot carry).
    pub(super) invalid: bool,
}

impl DirectError {
    fn sending(error: io::Error) -> Self {
        DirectError {
            error,
            before_send: false,
            invalid: false,
        }
    }
}

impl std::fmt::Display for DirectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

/// Where a URL's request goes.
struct Target {
    /// `host:port`: what is connected to, and the key of the kept connections.
    key: String,
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    /// The path and query, as the request line carries them.
    path: String,
}

impl Target {
    fn of(url: &str) -> Option<Target> {
        let url = reqwest::Url::parse(url).ok()?;
        if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let host_str = url.host_str()?;
        let port = url.port_or_known_default()?;
        let host = host_str.trim_start_matches('[').trim_end_matches(']');
        let authority = match url.port() {
            Some(p) => format!("{host_str}:{p}"),
            None => host_str.to_string(),
        };
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        Some(Target {
            key: format!("{host_str}:{port}"),
            host: host.to_string(),
            port,
            authority,
            path,
        })
    }
}

/// Message body buffers for reuse, as they come back from dropped batches.
#[derive(Default)]
struct Recycled {
    buffers: Mutex<(Vec<Vec<u8>>, usize)>,
}

impl Recycled {
    /// An empty buffer of at least `len` bytes' capacity: the most recently given back one
    /// that holds it (and is not over twice as large), or a new one. The most recent is
    /// likely still in the CPU's caches, which the socket copy then writes into; the others
    /// wait, in the order they came back.
    fn take(&self, len: usize) -> Vec<u8> {
        let mut kept = self.buffers.lock();
        let (buffers, bytes) = &mut *kept;
        let fit = buffers
            .iter()
            .rposition(|b| b.capacity() >= len && b.capacity() / 2 <= len);
        if let Some(i) = fit {
            let buffer = buffers.remove(i);
            *bytes -= buffer.capacity();
            return buffer;
        }
        drop(kept);
        Vec::with_capacity(len)
    }

    fn give(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() == 0 {
            return;
        }
        buffer.clear();
        let mut kept = self.buffers.lock();
        let (buffers, bytes) = &mut *kept;
        if *bytes + buffer.capacity() <= RECYCLED_BYTES {
            *bytes += buffer.capacity();
            buffers.push(buffer);
        }
    }
}

/// A message body's buffer; back to its client's [`Recycled`] when dropped.
struct BodyBuffer {
    buffer: Vec<u8>,
    recycled: std::sync::Weak<Recycled>,
}

impl AsRef<[u8]> for BodyBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for BodyBuffer {
    fn drop(&mut self) {
        if let Some(recycled) = self.recycled.upgrade() {
            recycled.give(std::mem::take(&mut self.buffer));
        }
    }
}

/// The connections of direct reads, kept between requests, and their body buffers.
pub(super) struct DirectPool {
    connect_timeout: Duration,
    read_timeout: Duration,
    idle: Mutex<HashMap<String, Vec<(TcpStream, Instant)>>>,
    recycled: Arc<Recycled>,
}

impl DirectPool {
    pub(super) fn new(connect_timeout: Duration, read_timeout: Duration) -> Arc<Self> {
        Arc::new(DirectPool {
            connect_timeout,
            read_timeout,
            idle: Mutex::new(HashMap::new()),
            recycled: Arc::default(),
        })
    }

    /// Whether a request to `url` can go directly (plain `http://`).
    pub(super) fn takes(url: &str) -> bool {
        Target::of(url).is_some()
    }

    /// How many connections are kept for reuse (all hosts).
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.idle.lock().values().map(Vec::len).sum()
    }

    /// A kept connection to `key` that is still open: one the server closed meanwhile (or
    /// sent anything on) is dropped, so that a request is only ever sent once per attempt.
    fn take(&self, key: &str) -> Option<TcpStream> {
        let mut idle = self.idle.lock();
        let kept = idle.get_mut(key)?;
        while let Some((stream, since)) = kept.pop() {
            if since.elapsed() < IDLE && still_open(&stream) {
                return Some(stream);
            }
        }
        None
    }

    fn keep(&self, key: &str, stream: TcpStream) {
        let mut idle = self.idle.lock();
        let kept = idle.entry(key.to_string()).or_default();
        kept.retain(|(_, since)| since.elapsed() < IDLE);
        if kept.len() < MAX_IDLE_PER_HOST {
            kept.push((stream, Instant::now()));
        }
    }

    async fn connect(&self, target: &Target) -> Result<TcpStream, DirectError> {
        let before = |error| DirectError {
            error,
            before_send: true,
            invalid: false,
        };
        let connecting = TcpStream::connect((target.host.as_str(), target.port));
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(before(e)),
            Err(_) => {
                return Err(before(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "connecting to {} took over {:?}",
                        target.key, self.connect_timeout
                    ),
                )));
            }
        };
        stream.set_nodelay(true).map_err(before)?;
        Ok(stream)
    }

    /// Sends one request to `url` (plain `http://`) and reads its answer's head; the body
    /// is read as the answer is consumed.
    pub(super) async fn send(
        self: &Arc<Self>,
        url: &str,
        method: &str,
        headers: &[(String, String)],
        body: &Bytes,
    ) -> Result<reqwest::Response, DirectError> {
        let target = Target::of(url).ok_or_else(|| DirectError {
            error: io::Error::new(io::ErrorKind::InvalidInput, format!("{url} is not http://")),
            before_send: true,
            invalid: true,
        })?;
        let head = request_head(method, &target, headers, body.len())?;
        let mut stream = match self.take(&target.key) {
            Some(s) => s,
            None => self.connect(&target).await?,
        };
        // A failure after this point is the attempt's: the retry loop counts it and decides.
        match self.exchange(&mut stream, &head, body).await {
            Ok((status, header_map, rest)) => {
                Ok(self.answer(target, stream, status, header_map, rest))
            }
            Err(e) => Err(DirectError::sending(e)),
        }
    }

    /// Writes the request and reads the answer's head: its status, headers and the bytes
    /// read past the head.
    async fn exchange(
        &self,
        stream: &mut TcpStream,
        head: &[u8],
        body: &Bytes,
    ) -> io::Result<(u16, http::HeaderMap, BytesMut)> {
        let write = async {
            stream.write_all(head).await?;
            stream.write_all(body).await?;
            stream.flush().await
        };
        match tokio::time::timeout(self.read_timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(timed_out("sending the request", self.read_timeout)),
        }
        let mut buf = BytesMut::with_capacity(8 << 10);
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 128];
            let mut parsed = httparse::Response::new(&mut slots);
            match parsed.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = parsed.code.unwrap_or(0);
                    if (100..200).contains(&status) {
                        // An interim answer (100 Continue): the real one follows.
                        buf.advance(n);
                        continue;
                    }
                    let mut map = http::HeaderMap::with_capacity(parsed.headers.len());
                    for h in parsed.headers.iter() {
                        let name = http::HeaderName::from_bytes(h.name.as_bytes());
                        let value = http::HeaderValue::from_bytes(h.value);
                        if let (Ok(name), Ok(value)) = (name, value) {
                            map.append(name, value);
                        }
                    }
                    if parsed.version != Some(1) {
                        // HTTP/1.0: the connection is not kept.
                        map.insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    buf.advance(n);
                    return Ok((status, map, buf));
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => {
                    let e = io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the answer's head is malformed HTTP/1.1: {e}"),
                    );
                    return Err(e);
                }
            }
            if buf.len() >= MAX_HEAD {
                let e = io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the answer's head is longer than {MAX_HEAD} bytes"),
                );
                return Err(e);
            }
            buf.reserve(8 << 10);
            match tokio::time::timeout(self.read_timeout, stream.read_buf(&mut buf)).await {
                Ok(Ok(0)) => {
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection before its answer ended its head",
                    );
                    return Err(e);
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(timed_out("the answer", self.read_timeout)),
            }
        }
    }

    fn answer(
        self: &Arc<Self>,
        target: Target,
        stream: TcpStream,
        status: u16,
        headers: http::HeaderMap,
        rest: BytesMut,
    ) -> reqwest::Response {
        let framing = Framing::of(status, &headers);
        let keep = framing.keeps_connection()
            && !headers
                .get_all(http::header::CONNECTION)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.eq_ignore_ascii_case("close")));
        let encoded = headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.trim().eq_ignore_ascii_case("identity"));
        let messages = (200..300).contains(&status) && !encoded;
        let body = DirectBody {
            wire: Wire {
                stream: Some(stream),
                spill: rest,
                framing,
                ended: false,
                want_lowat: 1,
                lowat: 1,
                read_timeout: self.read_timeout,
            },
            pool: keep.then(|| (self.clone(), target.key)),
            recycled: self.recycled.clone(),
            mode: if messages { Mode::Prefix } else { Mode::Raw },
        };
        let frames = futures::stream::unfold(Some(body), |body| async move {
            let mut body = body?;
            match body.next_frame().await {
                Ok(Some(frame)) => Some((Ok(frame), Some(body))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        });
        let mut response = http::Response::new(reqwest::Body::wrap_stream(frames));
        *response.status_mut() =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
        *response.headers_mut() = headers;
        reqwest::Response::from(response)
    }
}

/// Whether an idle connection is open with nothing to read (a peek that would block).
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: a one-byte peek into a local byte on a valid socket.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

fn timed_out(what: &str, after: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what}: nothing arrived for {after:?}"),
    )
}

/// The request line and headers of a request with a `body_len`-byte body.
fn request_head(
    method: &str,
    target: &Target,
    headers: &[(String, String)],
    body_len: usize,
) -> Result<Vec<u8>, DirectError> {
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\nContent-Length: {body_len}\r\n",
        target.path, target.authority
    );
    for (name, value) in headers {
        let ok = http::HeaderName::from_bytes(name.as_bytes()).is_ok()
            && http::HeaderValue::from_str(value).is_ok();
        if !ok {
            return Err(DirectError {
                error: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("the header {name:?} cannot be sent: {value:?}"),
                ),
                before_send: true,
                invalid: true,
            });
        }
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    Ok(head.into_bytes())
}

/// How an answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    /// `Content-Length`: the bytes still to come.
    Length(u64),
    /// `Transfer-Encoding: chunked`: the bytes left in the current chunk, and whether a
    /// chunk was read before (its data ends with CRLF).
    Chunked { left: u64, started: bool },
    /// Until the server closes the connection.
    Close,
}

impl Framing {
    fn of(status: u16, headers: &http::HeaderMap) -> Framing {
        if status == 204 || status == 304 {
            return Framing::Length(0);
        }
        let codings: Vec<String> = headers
            .get_all(http::header::TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        if !codings.is_empty() {
            return match codings.last().map(String::as_str) {
                Some("chunked") => Framing::Chunked {
                    left: 0,
                    started: false,
                },
                _ => Framing::Close,
            };
        }
        let length = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match length {
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    }

    fn keeps_connection(self) -> bool {
        !matches!(self, Framing::Close)
    }
}

/// The connection an answer's body is read from, unframed.
struct Wire {
    /// `None` once handed back to the pool.
    stream: Option<TcpStream>,
    /// Bytes read from the connection and not yet consumed (chunk framing, and what came
    /// past the buffer a read was filling).
    spill: BytesMut,
    framing: Framing,
    /// The body's end was read.
    ended: bool,
    /// The `SO_RCVLOWAT` to wait with.
    want_lowat: usize,
    /// The `SO_RCVLOWAT` set on the socket.
    lowat: usize,
    read_timeout: Duration,
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

impl Wire {
    fn stream(&self) -> io::Result<&TcpStream> {
        self.stream
            .as_ref()
            .ok_or_else(|| io::Error::other("the body was already read to its end"))
    }

    /// Reads from the socket into `dst`'s spare capacity (up to `dst_len` bytes) and past
    /// it into the side buffer (up to `spill_len`), waiting for data as needed; the bytes
    /// read, 0 at the end of the connection.
    async fn read_vectored(
        &mut self,
        dst: &mut Vec<u8>,
        dst_len: usize,
        spill_len: usize,
    ) -> io::Result<usize> {
        dst.reserve(dst_len);
        self.spill.reserve(spill_len);
        loop {
            // Addresses, not pointers, so that the future stays `Send`.
            let dst_at = dst.spare_capacity_mut().as_mut_ptr() as usize;
            let spill_at = self.spill.spare_capacity_mut().as_mut_ptr() as usize;
            let stream = self.stream()?;
            let fd = stream.as_raw_fd();
            let read = stream.try_io(Interest::READABLE, || {
                let iov = [
                    libc::iovec {
                        iov_base: dst_at as *mut libc::c_void,
                        iov_len: dst_len,
                    },
                    libc::iovec {
                        iov_base: spill_at as *mut libc::c_void,
                        iov_len: spill_len,
                    },
                ];
                let (first, count) = if dst_len == 0 { (1, 1) } else { (0, 2) };
                // SAFETY: both vectors point into spare capacity reserved above (at least
                // `dst_len` and `spill_len` bytes), which the kernel only writes.
                let n = unsafe { libc::readv(fd, iov[first..].as_ptr(), count) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match read {
                Ok(n) => {
                    let to_dst = n.min(dst_len);
                    // SAFETY: the kernel wrote `to_dst` bytes to `dst`'s spare capacity and
                    // the rest to the side buffer's.
                    unsafe {
                        dst.set_len(dst.len() + to_dst);
                        self.spill.set_len(self.spill.len() + (n - to_dst));
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.set_lowat();
                    let stream = self.stream()?;
                    match tokio::time::timeout(self.read_timeout, stream.readable()).await {
                        Ok(r) => r?,
                        Err(_) => return Err(timed_out("the row stream", self.read_timeout)),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Sets the socket's `SO_RCVLOWAT` to what the next wait wants.
    fn set_lowat(&mut self) {
        if self.want_lowat == self.lowat {
            return;
        }
        #[cfg(target_os = "linux")]
        if let Some(stream) = &self.stream {
            let value = self.want_lowat.min(MAX_LOWAT) as libc::c_int;
            // SAFETY: a valid socket and a c_int option value of the right size.
            let rc = unsafe {
                libc::setsockopt(
                    stream.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVLOWAT,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                // Reads stay correct without it: wake-ups are only more frequent.
                self.want_lowat = 1;
                return;
            }
        }
        self.lowat = self.want_lowat;
    }

    /// Reads more of the connection into the side buffer; false at its end.
    async fn more_spill(&mut self) -> io::Result<bool> {
        let mut none = Vec::new();
        Ok(self.read_vectored(&mut none, 0, SPILL).await? > 0)
    }

    /// Reads the chunk header (after the CRLF that ends the previous chunk's data), or at
    /// the last chunk the trailers; the payload bytes the new chunk holds.
    async fn next_chunk(&mut self, started: bool) -> io::Result<()> {
        loop {
            let skip = if started { 2 } else { 0 };
            if let Some(eol) = self.spill.windows(2).skip(skip).position(|w| w == b"\r\n") {
                if started && &self.spill[..2] != b"\r\n" {
                    return Err(invalid("a chunk of the body does not end with CRLF"));
                }
                let line = &self.spill[skip..skip + eol];
                let size = line.split(|&b| b == b';').next().unwrap_or_default();
                let size = std::str::from_utf8(size)
                    .ok()
                    .map(str::trim)
                    .filter(|s| !s.is_empty() && s.len() <= 16)
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                    .ok_or_else(|| invalid("a chunk header of the body is malformed"))?;
                self.spill.advance(skip + eol + 2);
                if size > 0 {
                    self.framing = Framing::Chunked {
                        left: size,
                        started: true,
                    };
                    return Ok(());
                }
                return self.trailers().await;
            }
            if self.spill.len() > 1024 {
                return Err(invalid(
                    "a chunk header of the body is longer than 1024 bytes",
                ));
            }
            if !self.more_spill().await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed between chunks of the body",
                ));
            }
        }
    }

    /// Reads the trailer lines after the last chunk, up to the empty line.
    async fn trailers(&mut self) -> io::Result<()> {
        loop {
            if let Some(eol) = self.spill.windows(2).position(|w| w == b"\r\n") {
                self.spill.advance(eol + 2);
                if eol == 0 {
                    self.ended = true;
                    return Ok(());
                }
                continue;
            }
            if self.spill.len() > MAX_HEAD {
                return Err(invalid("the body's trailers are too long"));
            }
            if !self.more_spill().await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed in the body's trailers",
                ));
            }
        }
    }

    /// The payload bytes that may be read before the next chunk framing (or the end).
    async fn segment(&mut self) -> io::Result<u64> {
        if self.ended {
            return Ok(0);
        }
        match self.framing {
            Framing::Length(left) => {
                if left == 0 {
                    self.ended = true;
                }
                Ok(left)
            }
            Framing::Chunked { left: 0, started } => {
                self.next_chunk(started).await?;
                match self.framing {
                    Framing::Chunked { left, .. } if !self.ended => Ok(left),
                    _ => Ok(0),
                }
            }
            Framing::Chunked { left, .. } => Ok(left),
            Framing::Close => Ok(u64::MAX),
        }
    }

    fn consumed(&mut self, n: usize) {
        match &mut self.framing {
            Framing::Length(left) | Framing::Chunked { left, .. } => *left -= n as u64,
            Framing::Close => {}
        }
    }

    /// Appends up to `want` payload bytes to `dst` (at least one unless the body ended);
    /// how many.
    async fn read_into(&mut self, dst: &mut Vec<u8>, want: usize) -> io::Result<usize> {
        let segment = self.segment().await?;
        if self.ended || want == 0 {
            return Ok(0);
        }
        let n = (want as u64).min(segment) as usize;
        if !self.spill.is_empty() {
            let n = n.min(self.spill.len());
            dst.extend_from_slice(&self.spill[..n]);
            self.spill.advance(n);
            self.consumed(n);
            return Ok(n);
        }
        let spill = match self.framing {
            // Nothing follows a body of known length.
            Framing::Length(left) => (left as usize - n).min(SPILL),
            // The read ends at the end of a chunk inside what is wanted: the side buffer takes
            // the next chunk's header and a few bytes of its data (copied from there).
            _ if n < want => CHUNK_HEADER_SPILL,
            _ => SPILL,
        };
        let before = dst.len();
        let read = self.read_vectored(dst, n, spill).await?;
        if read == 0 {
            if self.framing == Framing::Close {
                self.ended = true;
                return Ok(0);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed inside the body",
            ));
        }
        // `readv` fills `dst` first, so a read of anything gave it at least one byte.
        let got = dst.len() - before;
        self.consumed(got);
        Ok(got)
    }

    /// Appends payload bytes to `dst` until it holds `len`, waiting with `SO_RCVLOWAT` for
    /// a long one; false when the body ended first.
    async fn fill(&mut self, dst: &mut Vec<u8>, len: usize) -> io::Result<bool> {
        dst.reserve(len.saturating_sub(dst.len()));
        while dst.len() < len {
            let missing = len - dst.len();
            self.want_lowat = if missing >= MIN_LOWAT { missing } else { 1 };
            if self.read_into(dst, missing).await? == 0 {
                self.want_lowat = 1;
                return Ok(false);
            }
        }
        self.want_lowat = 1;
        Ok(true)
    }

    /// Hands the connection back to `pool` when the body was read to its end and nothing
    /// more came.
    fn release(&mut self, pool: Option<&(Arc<DirectPool>, String)>) {
        if !self.ended || !self.spill.is_empty() {
            return;
        }
        if let (Some((pool, key)), Some(_)) = (pool, &self.stream) {
            self.want_lowat = 1;
            self.set_lowat();
            if self.lowat == 1
                && let Some(stream) = self.stream.take()
            {
                pool.keep(key, stream);
            }
        }
    }
}

/// Where the body stands in the IPC framing.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Next: a message's length prefix and metadata.
    Prefix,
    /// Next: a message body of this many bytes.
    Body(usize),
    /// Passed on as it arrives.
    Raw,
}

/// An answer's body, read frame by frame.
struct DirectBody {
    wire: Wire,
    pool: Option<(Arc<DirectPool>, String)>,
    recycled: Arc<Recycled>,
    mode: Mode,
}

impl DirectBody {
    async fn next_frame(&mut self) -> io::Result<Option<Bytes>> {
        let frame = match self.mode {
            Mode::Raw => self.raw().await?,
            Mode::Prefix => self.prefix().await?,
            // A message without a body (the schema): on to the next one.
            Mode::Body(0) => {
                self.mode = Mode::Prefix;
                None
            }
            Mode::Body(len) => {
                let mut body = BodyBuffer {
                    buffer: self.recycled.take(len),
                    recycled: Arc::downgrade(&self.recycled),
                };
                self.mode = if self.wire.fill(&mut body.buffer, len).await? {
                    Mode::Prefix
                } else {
                    Mode::Raw
                };
                (!body.buffer.is_empty()).then(|| Bytes::from_owner(body))
            }
        };
        match frame {
            Some(frame) => Ok(Some(frame)),
            None if self.wire.ended || self.mode == Mode::Raw => {
                self.wire.release(self.pool.as_ref());
                Ok(None)
            }
            // An empty body (a message without one): on to the next message.
            None => Box::pin(self.next_frame()).await,
        }
    }

    async fn raw(&mut self) -> io::Result<Option<Bytes>> {
        let mut piece = Vec::new();
        let n = self.wire.read_into(&mut piece, RAW_PIECE).await?;
        Ok((n > 0).then(|| Bytes::from(piece)))
    }

    /// Reads a message's length prefix and metadata; the frame of both.
    async fn prefix(&mut self) -> io::Result<Option<Bytes>> {
        let mut prefix = Vec::with_capacity(1024);
        let mut whole = self.wire.fill(&mut prefix, 4).await?;
        let mut len = 0usize;
        if whole {
            let mut word = u32::from_le_bytes(prefix[..4].try_into().unwrap_or_default());
            if word == u32::MAX {
                whole = self.wire.fill(&mut prefix, 8).await?;
                word = if whole {
                    u32::from_le_bytes(prefix[4..8].try_into().unwrap_or_default())
                } else {
                    0
                };
            }
            len = word as usize;
        }
        if !whole || len == 0 || len > MAX_METADATA {
            // The end-of-stream marker (or not IPC framing): what follows is passed on as is.
            self.mode = Mode::Raw;
            return Ok((!prefix.is_empty()).then(|| Bytes::from(prefix)));
        }
        let at = prefix.len();
        if !self.wire.fill(&mut prefix, at + len).await? {
            self.mode = Mode::Raw;
            return Ok(Some(Bytes::from(prefix)));
        }
        let body = arrow_ipc::root_as_message(&prefix[at..])
            .ok()
            .map(|m| m.bodyLength())
            .filter(|&n| n >= 0 && n as u64 <= MAX_MESSAGE_BODY);
        self.mode = match body {
            Some(n) => Mode::Body(n as usize),
            None => Mode::Raw,
        };
        Ok(Some(Bytes::from(prefix)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::protocol::codec::{BodyEncoding, IpcBodyEncoder};

    fn batch(rows: usize, from: i64) -> RecordBatch {
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(from..from + rows as i64));
        let names: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..rows).map(|i| format!("row-{}", from + i as i64)),
        ));
        RecordBatch::try_from_iter([("id", ids), ("name", names)]).unwrap()
    }

    /// An Arrow IPC stream of `batches` batches of `rows` rows, as its encoder's chunks.
    fn ipc_chunks(batches: usize, rows: usize) -> Vec<Bytes> {
        let first = batch(rows, 0);
        let mut encoder =
            IpcBodyEncoder::new(&first.schema(), BodyEncoding::Identity, None).unwrap();
        let mut out = Vec::new();
        for b in 0..batches {
            out.extend(encoder.batch(&batch(rows, (b * rows) as i64)).unwrap());
        }
        out.extend(encoder.finish().unwrap());
        out
    }

    /// How one test server frames its answers.
    #[derive(Clone, Copy)]
    enum Serve {
        /// Chunked, one chunk per encoder chunk, each written separately.
        Chunked,
        /// Chunked, every chunk split into pieces of this many bytes.
        SmallChunks(usize),
        /// Content-Length.
        Length,
        /// Closes the connection at the end of the body.
        Close,
        /// Chunked, then closes the connection (which the client has kept).
        ChunkedThenClose,
        /// Chunked, then closes the connection this many bytes into the body.
        CutAt(usize),
        /// A 404 with a JSON body.
        NotFound,
    }

    /// Serves `answers` requests on one connection each time one comes (keep-alive), each
    /// answered per `serve` with `body`; the number of connections accepted so far.
    async fn server(
        serve: Serve,
        body: Vec<Bytes>,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = body.clone();
                tokio::spawn(async move {
                    loop {
                        // Read one request head and its Content-Length body.
                        let mut req = Vec::new();
                        let mut byte = [0u8; 1];
                        while !req.ends_with(b"\r\n\r\n") {
                            if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                                return;
                            }
                            req.push(byte[0]);
                        }
                        let head = String::from_utf8_lossy(&req).to_lowercase();
                        assert!(head.starts_with("post /api/storage/v2?action=tableread"));
                        assert!(head.contains("\r\nx-test: yes\r\n"));
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .unwrap()
                            .trim()
                            .parse()
                            .unwrap();
                        let mut req_body = vec![0u8; len];
                        conn.read_exact(&mut req_body).await.unwrap();
                        assert_eq!(req_body, b"{\"a\":1}");
                        let all: Vec<u8> = body.iter().flat_map(|c| c.to_vec()).collect();
                        let mut out = Vec::new();
                        match serve {
                            Serve::Chunked
                            | Serve::ChunkedThenClose
                            | Serve::SmallChunks(_)
                            | Serve::CutAt(_) => {
                                out.extend_from_slice(
                                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                                );
                                let pieces: Vec<Vec<u8>> = match serve {
                                    Serve::SmallChunks(n) => {
                                        all.chunks(n).map(<[u8]>::to_vec).collect()
                                    }
                                    _ => body.iter().map(|c| c.to_vec()).collect(),
                                };
                                for p in pieces {
                                    out.extend_from_slice(
                                        format!("{:x};ext=1\r\n", p.len()).as_bytes(),
                                    );
                                    out.extend_from_slice(&p);
                                    out.extend_from_slice(b"\r\n");
                                }
                                out.extend_from_slice(b"0\r\nx-trailer: 1\r\n\r\n");
                            }
                            Serve::Length => {
                                out.extend_from_slice(
                                    format!(
                                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                                        all.len()
                                    )
                                    .as_bytes(),
                                );
                                out.extend_from_slice(&all);
                            }
                            Serve::Close => {
                                out.extend_from_slice(
                                    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
                                );
                                out.extend_from_slice(&all);
                            }
                            Serve::NotFound => {
                                let json = br#"{"Code":"NoSuchObject","Message":"no table"}"#;
                                out.extend_from_slice(
                                    format!(
                                        "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\n\r\n",
                                        json.len()
                                    )
                                    .as_bytes(),
                                );
                                out.extend_from_slice(json);
                            }
                        }
                        if let Serve::CutAt(n) = serve {
                            let head = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                            let _ = conn.write_all(&out[..head + n]).await;
                            return;
                        }
                        // Write in uneven pieces, so reads end anywhere.
                        for piece in out.chunks(7919) {
                            if conn.write_all(piece).await.is_err() {
                                return;
                            }
                        }
                        if matches!(serve, Serve::Close | Serve::ChunkedThenClose) {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}"), accepted)
    }

    async fn get(pool: &Arc<DirectPool>, base: &str) -> reqwest::Response {
        let url = format!("{base}/api/storage/v2?Action=TableRead&Target=p.t");
        pool.send(
            &url,
            "POST",
            &[("X-Test".into(), "yes".into())],
            &Bytes::from_static(b"{\"a\":1}"),
        )
        .await
        .unwrap()
    }

    /// The body's frames, and the batches they decode to.
    async fn frames_and_batches(resp: reqwest::Response) -> (Vec<Bytes>, Vec<RecordBatch>) {
        let frames: Vec<Bytes> = resp
            .bytes_stream()
            .map(|f| f.unwrap())
            .collect::<Vec<_>>()
            .await;
        let mut decoder = crate::protocol::codec::IpcStreamDecoder::new(
            "the test body",
            crate::ipc_guard::IpcLimits::RESPONSE,
        );
        let mut batches = Vec::new();
        for f in &frames {
            batches.extend(decoder.push(arrow_buffer::Buffer::from(f.clone())).unwrap());
        }
        decoder.finish().unwrap();
        (frames, batches)
    }

    fn pool() -> Arc<DirectPool> {
        DirectPool::new(Duration::from_secs(5), Duration::from_secs(5))
    }

    fn check_batches(batches: &[RecordBatch], count: usize, rows: usize) {
        assert_eq!(batches.len(), count);
        for (i, b) in batches.iter().enumerate() {
            assert_eq!(b, &batch(rows, (i * rows) as i64));
        }
    }

    #[tokio::test]
    async fn every_framing_gives_the_same_batches_and_chunked_bodies_come_as_whole_messages() {
        let body = ipc_chunks(5, 3000);
        for serve in [
            Serve::Chunked,
            Serve::SmallChunks(1),
            Serve::SmallChunks(1000),
            Serve::Length,
            Serve::Close,
        ] {
            let (base, _) = server(serve, body.clone()).await;
            let (frames, batches) = frames_and_batches(get(&pool(), &base).await).await;
            check_batches(&batches, 5, 3000);
            // Schema message, 5 x (prefix, body), end marker: each a frame of its own.
            assert_eq!(
                frames.len(),
                1 + 5 * 2 + 1,
                "{:?}",
                frames.iter().map(Bytes::len).collect::<Vec<_>>()
            );
        }
    }

    #[tokio::test]
    async fn connections_are_kept_after_a_whole_body_and_a_closed_one_is_replaced() {
        let body = ipc_chunks(3, 100);
        let (base, accepted) = server(Serve::Chunked, body.clone()).await;
        let pool = pool();
        for _ in 0..3 {
            let (_, batches) = frames_and_batches(get(&pool, &base).await).await;
            check_batches(&batches, 3, 100);
            assert_eq!(pool.kept(), 1);
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);

        // A body dropped half read: its connection is not kept.
        let resp = get(&pool, &base).await;
        let mut frames = resp.bytes_stream();
        frames.next().await.unwrap().unwrap();
        drop(frames);
        assert_eq!(pool.kept(), 0);

        // An answer that says it closes: nothing kept.
        let (base, accepted) = server(Serve::Close, body.clone()).await;
        for _ in 0..2 {
            let (_, batches) = frames_and_batches(get(&pool, &base).await).await;
            check_batches(&batches, 3, 100);
            assert_eq!(pool.kept(), 0);
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);

        // The server closes every connection after one answer without saying so: the kept
        // one is found closed before it is reused, and the request goes on a new one.
        let (base, accepted) = server(Serve::ChunkedThenClose, body).await;
        for _ in 0..3 {
            let (_, batches) = frames_and_batches(get(&pool, &base).await).await;
            check_batches(&batches, 3, 100);
            assert_eq!(pool.kept(), 1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_of_the_stream() {
        let body = ipc_chunks(4, 3000);
        let total: usize = body.iter().map(Bytes::len).sum();
        for cut in [3, 100, total / 2] {
            let (base, _) = server(Serve::CutAt(cut), body.clone()).await;
            let resp = get(&pool(), &base).await;
            let frames: Vec<_> = resp.bytes_stream().collect().await;
            assert!(frames.last().unwrap().is_err(), "cut at {cut}");
        }
    }

    #[tokio::test]
    async fn error_answers_and_bad_requests() {
        let (base, _) = server(Serve::NotFound, Vec::new()).await;
        let resp = get(&pool(), &base).await;
        assert_eq!(resp.status().as_u16(), 404);
        let body = resp.bytes().await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("NoSuchObject"));

        let e = pool()
            .send(
                &format!("{base}/x"),
                "POST",
                &[("X-Bad".into(), "a\r\nInjected: 1".into())],
                &Bytes::new(),
            )
            .await
            .unwrap_err();
        assert!(e.invalid && e.before_send, "{e}");
        assert!(e.to_string().contains("X-Bad"), "{e}");

        // Nothing listens: a failure before sending.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = pool()
            .send(&format!("http://{addr}/x"), "POST", &[], &Bytes::new())
            .await
            .unwrap_err();
        assert!(e.before_send && !e.invalid, "{e}");
        assert!(!DirectPool::takes("https://example.com/x"));
        assert!(DirectPool::takes("http://[::1]:8080/api"));
    }

    #[tokio::test]
    async fn body_buffers_come_back_when_the_batches_are_dropped() {
        let (base, _) = server(Serve::Chunked, ipc_chunks(4, 3000)).await;
        let pool = pool();
        let recycled = || pool.recycled.buffers.lock().0.len();
        let (frames, batches) = frames_and_batches(get(&pool, &base).await).await;
        check_batches(&batches, 4, 3000);
        assert_eq!(recycled(), 0, "the batches still hold their buffers");
        drop(frames);
        drop(batches);
        assert_eq!(recycled(), 4);
        // The next read takes them again (the most recent that holds each body first: one
        // may be left for a body it does not hold, which then gets a new buffer).
        let (frames, batches) = frames_and_batches(get(&pool, &base).await).await;
        check_batches(&batches, 4, 3000);
        assert!(recycled() <= 1, "{} buffers not taken", recycled());
        drop((frames, batches));
        assert!((4..=5).contains(&recycled()), "{}", recycled());
    }

    #[test]
    fn recycled_buffers_fit_and_are_bounded() {
        let r = Recycled::default();
        r.give(Vec::with_capacity(1000));
        assert_eq!(r.take(2000).capacity(), 2000, "too small: a new one");
        assert_eq!(
            r.take(400).capacity(),
            400,
            "over twice as large: a new one"
        );
        assert_eq!(r.take(600).capacity(), 1000);
        r.give(Vec::with_capacity(1000));
        r.give(Vec::with_capacity(700));
        r.give(Vec::with_capacity(900));
        r.give(Vec::with_capacity(500));
        assert_eq!(r.take(650).capacity(), 900, "the most recent that holds it");
        assert_eq!(r.take(650).capacity(), 700);
        assert_eq!(r.take(600).capacity(), 1000);
        assert_eq!(r.take(450).capacity(), 500);
        assert!(r.buffers.lock().0.is_empty());
        for _ in 0..3 {
            r.give(Vec::with_capacity(RECYCLED_BYTES / 2));
        }
        let (kept, bytes) = &*r.buffers.lock();
        assert_eq!((kept.len(), *bytes), (2, RECYCLED_BYTES));
    }

    #[test]
    fn targets() {
        let t = Target::of("http://example.com/api/storage/v2?Action=A&Target=p%2Et").unwrap();
        assert_eq!(
            (t.key.as_str(), t.authority.as_str()),
            ("example.com:80", "example.com")
        );
        assert_eq!(t.path, "/api/storage/v2?Action=A&Target=p%2Et");
        let t = Target::of("http://[::1]:8080/x").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str()),
            ("::1", 8080, "[::1]:8080")
        );
        assert!(Target::of("http://user:pw@example.com/").is_none());
    }
}

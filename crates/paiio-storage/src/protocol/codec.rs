//! Bodies on the wire (docs/storage-api.md §7): whole-body encodings ([`BodyEncoding`], named in
//! `Content-Encoding` and asked for with `Accept-Encoding`), Arrow IPC streams (encoded as
//! body chunks by [`IpcBodyEncoder`], decoded incrementally by [`IpcStreamDecoder`] behind
//! [`ipc_guard`]), and the CRC-32C blocking of BlobRead answers.

use std::io::{Read, Write};

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::CompressionType;
use arrow_ipc::reader::StreamDecoder;
use arrow_ipc::writer::{IpcWriteOptions, StreamEncoder};
use arrow_schema::{ArrowError, Schema, SchemaRef};
use bytes::Bytes;

use crate::error::Error;
use crate::ipc_guard::{self, IpcLimits, IpcStreamGuard};

// ---------------------------------------------------------------------------------------
// Body encodings
// ---------------------------------------------------------------------------------------

/// The whole-body compression of a request or an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum BodyEncoding {
    #[default]
    Identity,
    Zstd,
    /// LZ4 frames.
    Lz4Frame,
}

/// Every name an encoding goes by (lowercase), the canonical one first. The one table both
/// `Content-Encoding` and `Accept-Encoding` are read with.
const ALIASES: &[(&str, BodyEncoding)] = &[
    ("identity", BodyEncoding::Identity),
    ("", BodyEncoding::Identity),
    ("zstd", BodyEncoding::Zstd),
    ("x-lz4-frame", BodyEncoding::Lz4Frame),
    ("x-odps-lz4-frame", BodyEncoding::Lz4Frame),
    ("lz4-frame", BodyEncoding::Lz4Frame),
    ("lz4_frame", BodyEncoding::Lz4Frame),
    ("lz4", BodyEncoding::Lz4Frame),
];

/// A `Content-Encoding` this protocol does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownEncoding(pub String);

impl std::fmt::Display for UnknownEncoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Content-Encoding {:?} is not supported (use zstd or x-lz4-frame, or none)",
            self.0
        )
    }
}

impl std::error::Error for UnknownEncoding {}

impl BodyEncoding {
    /// Every encoding.
    pub const ALL: [BodyEncoding; 3] = [
        BodyEncoding::Identity,
        BodyEncoding::Zstd,
        BodyEncoding::Lz4Frame,
    ];

    /// The canonical name on the wire (`identity`, `zstd`, `x-lz4-frame`).
    pub fn name(self) -> &'static str {
        match self {
            BodyEncoding::Identity => "identity",
            BodyEncoding::Zstd => "zstd",
            BodyEncoding::Lz4Frame => "x-lz4-frame",
        }
    }

    /// The `Content-Encoding` an answer in this encoding carries (none for identity).
    pub fn content_encoding(self) -> Option<&'static str> {
        (self != BodyEncoding::Identity).then(|| self.name())
    }

    /// The encoding a name (any alias, any case) stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim().to_ascii_lowercase();
        ALIASES.iter().find(|(n, _)| *n == name).map(|(_, e)| *e)
    }

    /// The encoding of a body from its `Content-Encoding` header (absent: identity).
    pub fn from_header(value: Option<&str>) -> Result<Self, UnknownEncoding> {
        match value {
            None => Ok(BodyEncoding::Identity),
            Some(v) => Self::from_name(v).ok_or_else(|| UnknownEncoding(v.trim().to_string())),
        }
    }

    /// The encoding to answer in, from an `Accept-Encoding` header: the first listed one
    /// this protocol compresses with (`zstd`, an LZ4-frame name), else identity. Weights
    /// (`;q=`) are not read, and names it does not know (`gzip`) are passed over.
    pub fn from_accept(value: &str) -> Self {
        value
            .split(',')
            .filter_map(|t| Self::from_name(t.split(';').next().unwrap_or("")))
            .find(|e| *e != BodyEncoding::Identity)
            .unwrap_or_default()
    }

    /// A reader of the decoded bytes of `input`.
    pub fn decoder<'a, R: Read + Send + 'a>(
        self,
        input: R,
    ) -> std::io::Result<Box<dyn Read + Send + 'a>> {
        Ok(match self {
            BodyEncoding::Identity => Box::new(input),
            BodyEncoding::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
            BodyEncoding::Lz4Frame => Box::new(lz4_flex::frame::FrameDecoder::new(input)),
        })
    }

    /// Encodes a whole payload.
    pub fn encode_all(self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut c = Compressor::new(self, Vec::new())?;
        c.write_all(data)?;
        c.finish()
    }

    /// Decodes a request body into pieces of at most 1 MiB, failing once the decoded bytes
    /// pass `limit` (an identity body is passed through: its size was bounded on the wire).
    /// The pieces are never joined, which would double the memory; read them with
    /// [`PiecesReader`]. `what` names the body in errors.
    pub fn decode_pieces(
        self,
        body: Bytes,
        limit: usize,
        what: &str,
    ) -> Result<Vec<Bytes>, DecodeError> {
        if self == BodyEncoding::Identity {
            return Ok(vec![body]);
        }
        let mut r = self.decoder(&body[..]).map_err(|e| {
            DecodeError::Invalid(format!(
                "cannot start {} decoding of the {what}: {e}",
                self.name()
            ))
        })?;
        let too_large = || DecodeError::TooLarge {
            what: format!("the decompressed {what}"),
            limit,
        };
        let mut out = Vec::new();
        let mut total = 0usize;
        loop {
            let room = limit.saturating_add(1) - total;
            if room == 0 {
                return Err(too_large());
            }
            let mut piece = vec![0u8; room.min(1 << 20)];
            let mut filled = 0;
            while filled < piece.len() {
                match r.read(&mut piece[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(DecodeError::Invalid(format!(
                            "the {what} is not valid {} data: {e}",
                            self.name()
                        )));
                    }
                }
            }
            let end = filled < piece.len();
            piece.truncate(filled);
            total += filled;
            if filled > 0 {
                out.push(Bytes::from(piece));
            }
            if end {
                break;
            }
        }
        if total > limit {
            return Err(too_large());
        }
        Ok(out)
    }

    /// [`decode_pieces`](Self::decode_pieces), joined (for bodies that are needed whole).
    pub fn decode(self, body: Bytes, limit: usize, what: &str) -> Result<Bytes, DecodeError> {
        let mut pieces = self.decode_pieces(body, limit, what)?;
        if pieces.len() <= 1 {
            return Ok(pieces.pop().unwrap_or_default());
        }
        Ok(Bytes::from(pieces.concat()))
    }
}

/// How a client compresses read bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadCompression {
    /// Chosen per read by what the link and the cores allow (the default).
    #[default]
    Auto,
    /// Always this encoding (`Identity`: never compressed).
    Fixed(BodyEncoding),
}

impl ReadCompression {
    /// How configuration files and environment variables name it.
    pub fn name(self) -> &'static str {
        match self {
            ReadCompression::Auto => "auto",
            ReadCompression::Fixed(BodyEncoding::Identity) => "none",
            ReadCompression::Fixed(BodyEncoding::Zstd) => "zstd",
            ReadCompression::Fixed(BodyEncoding::Lz4Frame) => "lz4",
        }
    }
}

impl std::fmt::Display for ReadCompression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ReadCompression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(ReadCompression::Auto),
            "none" | "off" | "no" | "false" => Ok(ReadCompression::Fixed(BodyEncoding::Identity)),
            other => BodyEncoding::from_name(other)
                .map(ReadCompression::Fixed)
                .ok_or_else(|| {
                    format!("{s:?} is not a read compression (expected auto, none, zstd or lz4)")
                }),
        }
    }
}

impl From<Option<BodyEncoding>> for ReadCompression {
    /// `None`: uncompressed.
    fn from(e: Option<BodyEncoding>) -> Self {
        ReadCompression::Fixed(e.unwrap_or_default())
    }
}

/// Why a request body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// It decodes to more than the limit.
    TooLarge { what: String, limit: usize },
    /// It is not valid data of its encoding (the message says how).
    Invalid(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::TooLarge { what, limit } => {
                write!(f, "{what} is larger than the limit of {limit} bytes")
            }
            DecodeError::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Reads a body kept in pieces.
#[derive(Debug, Default)]
pub struct PiecesReader(pub std::collections::VecDeque<Bytes>);

impl Read for PiecesReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(front) = self.0.front_mut() {
            if front.is_empty() {
                self.0.pop_front();
                continue;
            }
            let n = front.len().min(buf.len());
            buf[..n].copy_from_slice(&front[..n]);
            let _ = front.split_to(n);
            return Ok(n);
        }
        Ok(0)
    }
}

/// A writer that encodes what it is given into `W`.
pub enum Compressor<W: Write> {
    Identity(W),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Lz4Frame(lz4_flex::frame::FrameEncoder<W>),
}

impl<W: Write> Compressor<W> {
    pub fn new(encoding: BodyEncoding, inner: W) -> std::io::Result<Self> {
        Ok(match encoding {
            BodyEncoding::Identity => Compressor::Identity(inner),
            BodyEncoding::Zstd => Compressor::Zstd(zstd::stream::write::Encoder::new(inner, 1)?),
            BodyEncoding::Lz4Frame => {
                Compressor::Lz4Frame(lz4_flex::frame::FrameEncoder::new(inner))
            }
        })
    }

    /// The writer the encoded bytes go to.
    pub fn get_mut(&mut self) -> &mut W {
        match self {
            Compressor::Identity(w) => w,
            Compressor::Zstd(e) => e.get_mut(),
            Compressor::Lz4Frame(e) => e.get_mut(),
        }
    }

    /// Ends the encoding (its trailer written) and gives back the writer.
    pub fn finish(self) -> std::io::Result<W> {
        match self {
            Compressor::Identity(w) => Ok(w),
            Compressor::Zstd(e) => e.finish(),
            Compressor::Lz4Frame(e) => e.finish().map_err(std::io::Error::other),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Compressor::Identity(w) => w.write(buf),
            Compressor::Zstd(e) => e.write(buf),
            Compressor::Lz4Frame(e) => e.write(buf),
        }
    }

    /// Encodes everything written so far (a zstd or LZ4 block boundary).
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Compressor::Identity(w) => w.flush(),
            Compressor::Zstd(e) => e.flush(),
            Compressor::Lz4Frame(e) => e.flush(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Arrow IPC streams
// ---------------------------------------------------------------------------------------

/// Pieces of IPC output smaller than this are copied together into one body chunk; larger
/// ones (the column buffers of a batch) go out as they are, without a copy.
const COALESCE_BELOW: usize = 8 << 10;

/// Lets a body chunk share an Arrow buffer's memory (kept alive until the chunk is sent).
struct ArrowBytes(Buffer);

impl AsRef<[u8]> for ArrowBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// Encodes batches as the body chunks of one Arrow IPC stream, optionally with Arrow
/// buffer compression (V1 reads, TableWrite bodies) and a whole-body encoding (V2 reads).
///
/// Without a body encoding the chunks share the batches' buffers, so the column data is
/// copied once, by the kernel, on its way to the socket.
pub struct IpcBodyEncoder {
    ipc: StreamEncoder,
    body: Option<Compressor<Vec<u8>>>,
}

impl IpcBodyEncoder {
    pub fn new(
        schema: &Schema,
        body: BodyEncoding,
        buffers: Option<CompressionType>,
    ) -> Result<Self, ArrowError> {
        let options = IpcWriteOptions::default().try_with_compression(buffers)?;
        let body = match body {
            BodyEncoding::Identity => None,
            e => Some(Compressor::new(e, Vec::new())?),
        };
        Ok(IpcBodyEncoder {
            ipc: StreamEncoder::try_new_with_options(schema, options)?,
            body,
        })
    }

    /// The chunks of the schema message (with the first batch) and of `batch`.
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<Bytes>, ArrowError> {
        let buffers = self.ipc.encode(batch)?;
        self.out(buffers)
    }

    /// The end of the stream (and the schema, for a stream without batches).
    pub fn finish(self) -> Result<Vec<Bytes>, ArrowError> {
        let IpcBodyEncoder { ipc, body } = self;
        let buffers = ipc.finish()?;
        match body {
            None => Ok(chunks(buffers)),
            Some(mut c) => {
                for b in &buffers {
                    c.write_all(b.as_slice())?;
                }
                Ok(vec![Bytes::from(c.finish()?)])
            }
        }
    }

    fn out(&mut self, buffers: Vec<Buffer>) -> Result<Vec<Bytes>, ArrowError> {
        match &mut self.body {
            None => Ok(chunks(buffers)),
            Some(c) => {
                for b in &buffers {
                    c.write_all(b.as_slice())?;
                }
                c.flush()?;
                Ok(vec![Bytes::from(std::mem::take(c.get_mut()))])
            }
        }
    }
}

/// The encoder's buffers as body chunks: large ones shared, runs of small ones (message
/// headers, padding, validity bitmaps) copied together.
fn chunks(buffers: Vec<Buffer>) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(buffers.len());
    let mut small = bytes::BytesMut::new();
    for buffer in buffers {
        if buffer.len() < COALESCE_BELOW {
            small.extend_from_slice(buffer.as_slice());
            continue;
        }
        if !small.is_empty() {
            out.push(small.split().freeze());
        }
        out.push(Bytes::from_owner(ArrowBytes(buffer)));
    }
    if !small.is_empty() {
        out.push(small.freeze());
    }
    out.retain(|c| !c.is_empty());
    out
}

/// Encodes batches as one whole Arrow IPC stream with Arrow buffer compression `buffers`
/// (a TableWrite body uses LZ4_FRAME). The schema is the first batch's (or empty).
pub fn encode_ipc(
    batches: &[RecordBatch],
    buffers: Option<CompressionType>,
) -> Result<Vec<u8>, Error> {
    let fail = |e| Error::arrow("encoding the rows to write", e);
    let schema = match batches.first() {
        Some(b) => b.schema(),
        None => std::sync::Arc::new(Schema::empty()),
    };
    let mut encoder =
        IpcBodyEncoder::new(&schema, BodyEncoding::Identity, buffers).map_err(fail)?;
    let mut out = Vec::new();
    for b in batches {
        for chunk in encoder.batch(b).map_err(fail)? {
            out.extend_from_slice(&chunk);
        }
    }
    for chunk in encoder.finish().map_err(fail)? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Why an IPC stream stopped early.
#[derive(Debug)]
pub enum StreamError {
    /// It ended short (mid-message, or without its end-of-stream marker) or broke: asking
    /// again for the rest may succeed.
    Resumable(Error),
    /// The data itself is bad: asking again will not help.
    Fatal(Error),
}

/// Decodes an Arrow IPC stream pushed to it in chunks as they arrive, handing out each batch
/// as its message completes. Every byte passes [`IpcStreamGuard`] (declared sizes against
/// the limits) before the decoder sees it, and a decoder panic on malformed input is a
/// [`StreamError::Fatal`], never a crash.
pub struct IpcStreamDecoder {
    decoder: StreamDecoder,
    guard: IpcStreamGuard,
    what: String,
}

impl IpcStreamDecoder {
    /// `what` names the stream in errors (`the response`).
    pub fn new(what: &str, limits: IpcLimits) -> Self {
        IpcStreamDecoder {
            decoder: StreamDecoder::new(),
            guard: IpcStreamGuard::new(what, limits),
            what: what.to_string(),
        }
    }

    /// Checks `chunk`, then decodes the batches it completes.
    pub fn push(&mut self, chunk: Buffer) -> Result<Vec<RecordBatch>, StreamError> {
        self.guard.feed(chunk.as_slice()).map_err(|e| {
            StreamError::Fatal(Error::Transient {
                message: format!("refusing the row stream of {}: {e}", self.what),
                retryable: false,
                source: None,
            })
        })?;
        let mut buf = chunk;
        let mut batches = Vec::new();
        while !buf.is_empty() {
            let decoder = &mut self.decoder;
            match ipc_guard::catch_quietly(|| decoder.decode(&mut buf)) {
                Ok(Ok(Some(batch))) => batches.push(batch),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    return Err(StreamError::Fatal(Error::arrow(
                        format!("the row stream of {}", self.what),
                        e,
                    )));
                }
                Err(panic) => {
                    return Err(StreamError::Fatal(Error::Transient {
                        message: format!(
                            "the row stream of {} is malformed Arrow data ({panic})",
                            self.what
                        ),
                        retryable: false,
                        source: None,
                    }));
                }
            }
        }
        Ok(batches)
    }

    /// Checks the end of the stream: no partial message, and the end-of-stream marker seen.
    pub fn finish(&mut self) -> Result<(), StreamError> {
        let short = |message: &str| {
            StreamError::Resumable(Error::Transient {
                message: message.to_string(),
                retryable: true,
                source: None,
            })
        };
        if self.decoder.finish().is_err() {
            return Err(short("the row stream ended in the middle of a message"));
        }
        // After the marker the decoder refuses any further byte; before it, it takes one.
        match self.decoder.decode(&mut Buffer::from(vec![0xFFu8])) {
            Err(_) => Ok(()),
            Ok(_) => Err(short(
                "the row stream ended without its end-of-stream marker",
            )),
        }
    }

    /// The schema, once its message was decoded.
    pub fn schema(&self) -> Option<SchemaRef> {
        self.decoder.schema()
    }
}

/// Decodes one whole Arrow IPC stream (buffer compression included), kept in pieces, into
/// its batches. The pieces must have passed an [`IpcStreamGuard`] first: a malformed stream
/// is an error naming the message that failed, and a decoder panic on hostile bytes the guard
/// let through is caught without the panic hook's report and answered the same way.
pub fn decode_ipc_pieces(pieces: Vec<Bytes>, what: &str) -> Result<Vec<RecordBatch>, String> {
    let decode = || -> Result<Vec<RecordBatch>, String> {
        let reader = arrow_ipc::reader::StreamReader::try_new(PiecesReader(pieces.into()), None)
            .map_err(|e| {
                format!("malformed Arrow IPC stream in the {what} (schema message): {e}")
            })?;
        let mut batches = Vec::new();
        for (i, batch) in reader.enumerate() {
            batches.push(batch.map_err(|e| {
                format!("malformed Arrow IPC stream in the {what} (batch {i}): {e}")
            })?);
        }
        Ok(batches)
    };
    match ipc_guard::catch_quietly(decode) {
        Ok(result) => result,
        Err(panic) => {
            tracing::warn!(
                "refused a malformed Arrow IPC stream in the {what}: the decoder failed: {panic}"
            );
            Err(format!(
                "malformed Arrow IPC stream in the {what}: it could not be decoded"
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------
// CRC-32C blocking
// ---------------------------------------------------------------------------------------

/// The block size of the CRC-32C layer of BlobRead answers.
pub const CRC_BLOCK: usize = 4096;

/// Cuts `data` into [`CRC_BLOCK`]-byte blocks, each followed by its CRC-32C, little-endian
/// (§7.4). An empty payload is zero bytes.
pub fn crc32c_blocked(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len().div_ceil(CRC_BLOCK) * 4);
    for block in data.chunks(CRC_BLOCK) {
        out.extend_from_slice(block);
        out.extend_from_slice(&crc32c::crc32c(block).to_le_bytes());
    }
    out
}

/// A writer that cuts what it is given into CRC-32C blocks (as [`crc32c_blocked`]) and
/// hands them to `send` in chunks of about 64 KiB, so a large answer is never held whole.
pub struct CrcBlockWriter<F: FnMut(Bytes) -> std::io::Result<()>> {
    block: Vec<u8>,
    out: Vec<u8>,
    send: F,
}

impl<F: FnMut(Bytes) -> std::io::Result<()>> CrcBlockWriter<F> {
    pub fn new(send: F) -> Self {
        CrcBlockWriter {
            block: Vec::with_capacity(CRC_BLOCK),
            out: Vec::new(),
            send,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        (self.send)(Bytes::from(std::mem::take(&mut self.out)))
    }

    fn seal(&mut self) {
        self.out.extend_from_slice(&self.block);
        self.out
            .extend_from_slice(&crc32c::crc32c(&self.block).to_le_bytes());
        self.block.clear();
    }

    /// Seals the last (short) block and sends what is left.
    pub fn finish(mut self) -> std::io::Result<()> {
        if !self.block.is_empty() {
            self.seal();
        }
        self.send()
    }
}

impl<F: FnMut(Bytes) -> std::io::Result<()>> Write for CrcBlockWriter<F> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CRC_BLOCK - self.block.len());
        self.block.extend_from_slice(&data[..n]);
        if self.block.len() == CRC_BLOCK {
            self.seal();
            if self.out.len() >= 64 << 10 {
                self.send()?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
    use arrow_ipc::reader::StreamReader;

    use super::*;

    fn batch(rows: usize) -> RecordBatch {
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows as i64));
        let xs: ArrayRef = Arc::new(Float64Array::from_iter(
            (0..rows).map(|i| (i % 7 != 0).then_some(i as f64 * 0.5)),
        ));
        let flags: ArrayRef =
            Arc::new(BooleanArray::from_iter((0..rows).map(|i| Some(i % 3 == 0))));
        let names: ArrayRef = Arc::new(StringArray::from_iter(
            (0..rows).map(|i| (i % 5 != 0).then(|| format!("name-{i}"))),
        ));
        RecordBatch::try_from_iter([("id", ids), ("x", xs), ("flag", flags), ("name", names)])
            .unwrap()
    }

    fn joined(chunks: &[Bytes]) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    fn read_back(encoding: BodyEncoding, body: &[u8]) -> Vec<RecordBatch> {
        let mut plain = Vec::new();
        encoding
            .decoder(body)
            .unwrap()
            .read_to_end(&mut plain)
            .unwrap();
        StreamReader::try_new(std::io::Cursor::new(plain), None)
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
    }

    #[test]
    fn one_alias_table_for_both_headers() {
        for (name, e) in ALIASES {
            assert_eq!(BodyEncoding::from_name(&name.to_uppercase()), Some(*e));
            assert_eq!(BodyEncoding::from_header(Some(name)), Ok(*e));
            if *e != BodyEncoding::Identity {
                assert_eq!(
                    BodyEncoding::from_accept(&format!("gzip, {name};q=0.5")),
                    *e
                );
            }
        }
        for e in BodyEncoding::ALL {
            assert_eq!(BodyEncoding::from_name(e.name()), Some(e));
        }
        assert_eq!(BodyEncoding::from_header(None), Ok(BodyEncoding::Identity));
        assert_eq!(
            BodyEncoding::from_header(Some("br"))
                .unwrap_err()
                .to_string(),
            "Content-Encoding \"br\" is not supported (use zstd or x-lz4-frame, or none)"
        );
        assert_eq!(
            BodyEncoding::from_accept("gzip, deflate"),
            BodyEncoding::Identity
        );
        assert_eq!(
            BodyEncoding::from_accept("identity, zstd"),
            BodyEncoding::Zstd
        );
    }

    #[test]
    fn decode_is_bounded_and_round_trips() {
        let data = vec![1u8; 3 << 20];
        for e in BodyEncoding::ALL {
            let enc = Bytes::from(e.encode_all(&data).unwrap());
            assert_eq!(e.decode(enc.clone(), data.len(), "body").unwrap(), data);
            let pieces = e.decode_pieces(enc.clone(), data.len(), "body").unwrap();
            let mut back = Vec::new();
            PiecesReader(pieces.into()).read_to_end(&mut back).unwrap();
            assert_eq!(back, data);
            if e != BodyEncoding::Identity {
                assert!(matches!(
                    e.decode(enc, data.len() - 1, "body"),
                    Err(DecodeError::TooLarge { .. })
                ));
            }
        }
        assert!(matches!(
            BodyEncoding::Zstd.decode(Bytes::from_static(b"nope"), 100, "body"),
            Err(DecodeError::Invalid(m)) if m.contains("not valid zstd data")
        ));
    }

    /// The plain encoder's chunks, joined, are the IPC stream of the batches (sliced ones
    /// too), and column buffers go out without a copy.
    #[test]
    fn plain_chunks_make_the_stream_and_share_column_buffers() {
        let whole = batch(10_000);
        let sliced = whole.slice(4_099, 3_000);
        let mut encoder =
            IpcBodyEncoder::new(&whole.schema(), BodyEncoding::Identity, None).unwrap();
        let mut body = Vec::new();
        let first = encoder.batch(&whole).unwrap();
        let ids = whole.column(0).to_data().buffers()[0].as_ptr();
        assert!(
            first.iter().any(|c| c.as_ptr() == ids),
            "the id column was copied"
        );
        body.extend(first);
        body.extend(encoder.batch(&sliced).unwrap());
        body.extend(encoder.finish().unwrap());
        let got = read_back(BodyEncoding::Identity, &joined(&body));
        assert_eq!(got, vec![whole, sliced]);
    }

    #[test]
    fn every_encoding_round_trips_with_and_without_batches() {
        let b = batch(5_000);
        for e in BodyEncoding::ALL {
            for buffers in [
                None,
                Some(CompressionType::LZ4_FRAME),
                Some(CompressionType::ZSTD),
            ] {
                let mut encoder = IpcBodyEncoder::new(&b.schema(), e, buffers).unwrap();
                let mut body = encoder.batch(&b).unwrap();
                body.extend(encoder.finish().unwrap());
                assert_eq!(
                    read_back(e, &joined(&body)),
                    vec![b.clone()],
                    "{e:?} {buffers:?}"
                );
                // No batches: still the schema.
                let encoder = IpcBodyEncoder::new(&b.schema(), e, buffers).unwrap();
                let body = joined(&encoder.finish().unwrap());
                let mut plain = Vec::new();
                e.decoder(&body[..])
                    .unwrap()
                    .read_to_end(&mut plain)
                    .unwrap();
                let reader = StreamReader::try_new(std::io::Cursor::new(plain), None).unwrap();
                assert_eq!(reader.schema(), b.schema());
                assert_eq!(reader.count(), 0);
            }
        }
    }

    fn decode_all(bytes: &[u8]) -> Result<usize, StreamError> {
        let mut d = IpcStreamDecoder::new("the response", IpcLimits::RESPONSE);
        let mut rows = 0;
        for chunk in bytes.chunks(7) {
            for b in d.push(Buffer::from(chunk.to_vec()))? {
                rows += b.num_rows();
            }
        }
        d.finish()?;
        Ok(rows)
    }

    #[test]
    fn end_of_stream_marker_is_required() {
        let b = batch(10);
        let full = encode_ipc(&[b.clone(), b], Some(CompressionType::LZ4_FRAME)).unwrap();
        assert_eq!(decode_all(&full).unwrap(), 20);
        assert!(full.ends_with(&[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]));
        // Without the marker (at a message boundary), and cut inside a message.
        assert!(matches!(
            decode_all(&full[..full.len() - 8]),
            Err(StreamError::Resumable(_))
        ));
        assert!(matches!(
            decode_all(&full[..full.len() - 20]),
            Err(StreamError::Resumable(_))
        ));
        assert!(matches!(decode_all(&[]), Err(StreamError::Resumable(_))));
    }

    #[test]
    fn declared_lengths_are_checked_before_decoding() {
        let b = batch(10);
        let mut bytes = encode_ipc(&[b.clone(), b], Some(CompressionType::LZ4_FRAME)).unwrap();
        let p = crate::ipc_guard::compressed_prefix_positions(&bytes)[1];
        bytes[p..p + 8].copy_from_slice(&(1i64 << 62).to_le_bytes());
        let mut d = IpcStreamDecoder::new("the response", IpcLimits::RESPONSE);
        let e = d.push(Buffer::from(bytes)).unwrap_err();
        assert!(
            matches!(&e, StreamError::Fatal(e) if e.to_string().contains("4611686018427387904")),
            "{e:?}"
        );
        let e = decode_ipc_pieces(vec![Bytes::from_static(b"junk")], "upload").unwrap_err();
        assert!(e.contains("in the upload (schema message)"), "{e}");
    }

    #[test]
    fn blocking_appends_a_crc_per_block() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        assert!(crc32c_blocked(&[]).is_empty());
        let data = vec![7u8; CRC_BLOCK + 10];
        let out = crc32c_blocked(&data);
        assert_eq!(out.len(), CRC_BLOCK + 4 + 10 + 4);
        assert_eq!(
            &out[CRC_BLOCK..CRC_BLOCK + 4],
            &crc32c::crc32c(&data[..CRC_BLOCK]).to_le_bytes()
        );
        // The streaming writer cuts the same blocks, however the data is split.
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let mut streamed = Vec::new();
        let mut w = CrcBlockWriter::new(|chunk: Bytes| {
            streamed.extend_from_slice(&chunk);
            Ok(())
        });
        for piece in data.chunks(999) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap();
        assert_eq!(streamed, crc32c_blocked(&data));
    }
}

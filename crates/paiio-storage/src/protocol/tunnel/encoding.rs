//! The whole-body compressions of Tunnel requests and responses.
//!
//! PyODPS 0.13.2 (`tunnel/io/stream.py`, `CompressOption`) compresses and decompresses the
//! **whole HTTP body** with the codec a `Content-Encoding` names, for record and Arrow
//! streams alike:
//!
//! | [`Compression`] | PyODPS algorithm | legacy name (`Accept-Encoding`, `Content-Encoding`) | non-legacy name |
//! |---|---|---|---|
//! | `Deflate` | `ZLIB` | `deflate` (zlib format: RFC 1950, not raw deflate) | none |
//! | `Zstd` | `ZSTD` | `zstd` | `ZSTD` |
//! | `Lz4Frame` | `LZ4` | `x-lz4-frame` (LZ4 frame format) | `LZ4_FRAME` |
//! | `SnappyFramed` | `SNAPPY` | `x-snappy-framed` (snappy framing format) | none |
//! | `OdpsLz4Frame` | `ARROW_LZ4` | `x-odps-lz4-frame` (LZ4 frame format) | `LZ4_FRAME` |
//!
//! Names are matched case-insensitively; `identity` and an empty name mean no compression,
//! and `lz4_frame` is read as `OdpsLz4Frame`, as PyODPS's `from_encoding` does. On upload
//! PyODPS sends LZ4 as `x-odps-lz4-frame`. A `deflate` body is written in the zlib format
//! (Python's `zlib.compressobj`) and read in either format (zlib first, raw deflate when the
//! first two bytes are not a zlib header), as `requests`/urllib3 do for PyODPS.
//!
//! Snappy uses the `snap` crate (the snappy framing format, what python-snappy's
//! `StreamCompressor` writes).

use std::io::{self, BufRead, BufReader, Read, Write};

use super::WireError;

/// A whole-body Tunnel compression (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    Deflate,
    Zstd,
    Lz4Frame,
    SnappyFramed,
    OdpsLz4Frame,
}

impl Compression {
    /// Every codec, for tests and listings.
    pub const ALL: [Compression; 5] = [
        Compression::Deflate,
        Compression::Zstd,
        Compression::Lz4Frame,
        Compression::SnappyFramed,
        Compression::OdpsLz4Frame,
    ];

    /// Reads a `Content-Encoding` or `Accept-Encoding` value; `None` means no compression.
    pub fn from_encoding(name: &str) -> Result<Option<Self>, WireError> {
        Ok(Some(match name.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => return Ok(None),
            "deflate" => Compression::Deflate,
            "zstd" => Compression::Zstd,
            "x-lz4-frame" => Compression::Lz4Frame,
            "x-snappy-framed" => Compression::SnappyFramed,
            "x-odps-lz4-frame" | "lz4_frame" => Compression::OdpsLz4Frame,
            _ => {
                return Err(WireError::Encoding {
                    encoding: format!("{name:?}"),
                    message: "not a Tunnel encoding (deflate, zstd, x-lz4-frame, \
                              x-snappy-framed, x-odps-lz4-frame)"
                        .into(),
                });
            }
        }))
    }

    /// Reads a PyODPS `CompressOption` algorithm name (`RAW`, `ZLIB`, `ZSTD`, `LZ4`,
    /// `SNAPPY`, `ARROW_LZ4`, any case); `None` for `RAW`.
    pub fn from_algorithm(name: &str) -> Result<Option<Self>, WireError> {
        Ok(Some(match name.trim().to_ascii_uppercase().as_str() {
            "RAW" => return Ok(None),
            "ZLIB" => Compression::Deflate,
            "ZSTD" => Compression::Zstd,
            "LZ4" => Compression::Lz4Frame,
            "SNAPPY" => Compression::SnappyFramed,
            "ARROW_LZ4" => Compression::OdpsLz4Frame,
            _ => {
                return Err(WireError::Encoding {
                    encoding: format!("{name:?}"),
                    message: "not a compression algorithm (RAW, ZLIB, ZSTD, LZ4, SNAPPY, \
                              ARROW_LZ4)"
                        .into(),
                });
            }
        }))
    }

    /// The legacy encoding name, used in `Accept-Encoding` and `Content-Encoding`.
    pub fn encoding(self) -> &'static str {
        match self {
            Compression::Deflate => "deflate",
            Compression::Zstd => "zstd",
            Compression::Lz4Frame => "x-lz4-frame",
            Compression::SnappyFramed => "x-snappy-framed",
            Compression::OdpsLz4Frame => "x-odps-lz4-frame",
        }
    }

    /// The non-legacy name (the preview API's `Accept-Encoding`): `ZSTD` or `LZ4_FRAME`;
    /// deflate and snappy have none (PyODPS raises for them).
    pub fn non_legacy_name(self) -> Option<&'static str> {
        match self {
            Compression::Zstd => Some("ZSTD"),
            Compression::Lz4Frame | Compression::OdpsLz4Frame => Some("LZ4_FRAME"),
            Compression::Deflate | Compression::SnappyFramed => None,
        }
    }

    /// The PyODPS `CompressOption` algorithm name.
    pub fn algorithm(self) -> &'static str {
        match self {
            Compression::Deflate => "ZLIB",
            Compression::Zstd => "ZSTD",
            Compression::Lz4Frame => "LZ4",
            Compression::SnappyFramed => "SNAPPY",
            Compression::OdpsLz4Frame => "ARROW_LZ4",
        }
    }

    fn error(self, message: impl Into<String>) -> WireError {
        WireError::Encoding {
            encoding: self.encoding().to_string(),
            message: message.into(),
        }
    }

    /// Compresses a whole body. `level` applies to deflate (0–9, default 1 as in PyODPS)
    /// and zstd (default 3, zstd's own default, which PyODPS uses); LZ4 and snappy have
    /// none.
    pub fn compress(self, data: &[u8], level: Option<i32>) -> Result<Vec<u8>, WireError> {
        let io = |e: io::Error| self.error(format!("compressing: {e}"));
        match self {
            Compression::Deflate => {
                let level = level.unwrap_or(1).clamp(0, 9) as u32;
                let mut encoder = flate2::write::ZlibEncoder::new(
                    Vec::with_capacity(data.len() / 2 + 64),
                    flate2::Compression::new(level),
                );
                encoder.write_all(data).map_err(io)?;
                encoder.finish().map_err(io)
            }
            Compression::Zstd => zstd::bulk::compress(data, level.unwrap_or(3)).map_err(io),
            Compression::Lz4Frame | Compression::OdpsLz4Frame => {
                let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
                encoder.write_all(data).map_err(io)?;
                encoder
                    .finish()
                    .map_err(|e| self.error(format!("compressing: {e}")))
            }
            Compression::SnappyFramed => {
                let mut encoder = snap::write::FrameEncoder::new(Vec::new());
                encoder.write_all(data).map_err(io)?;
                encoder
                    .into_inner()
                    .map_err(|e| self.error(format!("compressing: {}", e.error())))
            }
        }
    }

    /// A reader of the decompressed bytes of `compressed`.
    pub fn decompressing_reader<'a, R: Read + 'a>(self, compressed: R) -> Box<dyn Read + 'a> {
        match self {
            Compression::Deflate => {
                let mut input = BufReader::new(compressed);
                let zlib = match input.fill_buf() {
                    Ok(head) if head.len() >= 2 => is_zlib_header(head[0], head[1]),
                    _ => true,
                };
                if zlib {
                    Box::new(flate2::bufread::ZlibDecoder::new(input))
                } else {
                    Box::new(flate2::bufread::DeflateDecoder::new(input))
                }
            }
            Compression::Zstd => match zstd::stream::read::Decoder::new(compressed) {
                Ok(decoder) => Box::new(decoder),
                Err(e) => Box::new(FailingReader(Some(e))),
            },
            Compression::Lz4Frame | Compression::OdpsLz4Frame => {
                Box::new(lz4_flex::frame::FrameDecoder::new(compressed))
            }
            Compression::SnappyFramed => Box::new(snap::read::FrameDecoder::new(compressed)),
        }
    }

    /// Decompresses a whole body into at most `max_len` bytes: a body that decompresses to
    /// more is refused (a decompression bomb never allocates past the limit). A compressed
    /// stream that ends early is a [`WireError::Truncated`].
    pub fn decompress(self, compressed: &[u8], max_len: usize) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::new();
        let limit = u64::try_from(max_len).unwrap_or(u64::MAX).saturating_add(1);
        let result = self
            .decompressing_reader(compressed)
            .take(limit)
            .read_to_end(&mut out);
        match result {
            Ok(_) if out.len() > max_len => Err(self.error(format!(
                "the body decompresses to more than {max_len} bytes"
            ))),
            Ok(_) => Ok(out),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(WireError::Truncated {
                stream: "compressed body",
                message: format!("{} stream ends early: {e}", self.encoding()),
            }),
            Err(e) => Err(self.error(format!("decompressing: {e}"))),
        }
    }
}

/// Compresses a body that is produced piece by piece (a streamed download): what
/// [`Compression::compress`] gives for the whole, with output handed out as it is made.
pub struct BodyCompressor {
    codec: Compression,
    inner: CompressorInner,
}

enum CompressorInner {
    Deflate(flate2::write::ZlibEncoder<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Lz4(lz4_flex::frame::FrameEncoder<Vec<u8>>),
    /// Boxed: its buffers make it several times the size of the others.
    Snappy(Box<snap::write::FrameEncoder<Vec<u8>>>),
}

impl std::fmt::Debug for BodyCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyCompressor")
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

impl Compression {
    /// A streaming compressor with the levels of [`Compression::compress`].
    pub fn compressor(self, level: Option<i32>) -> Result<BodyCompressor, WireError> {
        let inner = match self {
            Compression::Deflate => CompressorInner::Deflate(flate2::write::ZlibEncoder::new(
                Vec::new(),
                flate2::Compression::new(level.unwrap_or(1).clamp(0, 9) as u32),
            )),
            Compression::Zstd => CompressorInner::Zstd(
                zstd::stream::write::Encoder::new(Vec::new(), level.unwrap_or(3))
                    .map_err(|e| self.error(format!("starting the compressor: {e}")))?,
            ),
            Compression::Lz4Frame | Compression::OdpsLz4Frame => {
                CompressorInner::Lz4(lz4_flex::frame::FrameEncoder::new(Vec::new()))
            }
            Compression::SnappyFramed => {
                CompressorInner::Snappy(Box::new(snap::write::FrameEncoder::new(Vec::new())))
            }
        };
        Ok(BodyCompressor { codec: self, inner })
    }
}

impl BodyCompressor {
    /// Compresses `data`; returns the compressed bytes ready so far (possibly none).
    pub fn write(&mut self, data: &[u8]) -> Result<Vec<u8>, WireError> {
        let codec = self.codec;
        let io = |e: io::Error| codec.error(format!("compressing: {e}"));
        let out = match &mut self.inner {
            CompressorInner::Deflate(e) => {
                e.write_all(data).map_err(io)?;
                e.get_mut()
            }
            CompressorInner::Zstd(e) => {
                e.write_all(data).map_err(io)?;
                e.get_mut()
            }
            CompressorInner::Lz4(e) => {
                e.write_all(data).map_err(io)?;
                e.get_mut()
            }
            CompressorInner::Snappy(e) => {
                e.write_all(data).map_err(io)?;
                e.get_mut()
            }
        };
        Ok(std::mem::take(out))
    }

    /// Ends the compressed stream; returns its last bytes.
    pub fn finish(self) -> Result<Vec<u8>, WireError> {
        let codec = self.codec;
        let fail = |e: &dyn std::fmt::Display| codec.error(format!("compressing: {e}"));
        match self.inner {
            CompressorInner::Deflate(e) => e.finish().map_err(|e| fail(&e)),
            CompressorInner::Zstd(e) => e.finish().map_err(|e| fail(&e)),
            CompressorInner::Lz4(e) => e.finish().map_err(|e| fail(&e)),
            CompressorInner::Snappy(e) => (*e).into_inner().map_err(|e| fail(e.error())),
        }
    }
}

/// Whether two bytes start a zlib stream (deflate method, window at most 32 KiB, header
/// check bits right).
fn is_zlib_header(cmf: u8, flg: u8) -> bool {
    cmf & 0x0F == 8 && cmf >> 4 <= 7 && (u16::from(cmf) * 256 + u16::from(flg)) % 31 == 0
}

/// A reader that fails with the error a decoder could not start with.
struct FailingReader(Option<io::Error>);

impl Read for FailingReader {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(self
            .0
            .take()
            .unwrap_or_else(|| io::Error::other("the decoder failed to start")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..20_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips() {
        let data = sample();
        for c in Compression::ALL {
            let packed = c.compress(&data, None).unwrap();
            assert!(packed.len() < data.len(), "{c:?} should compress");
            assert_eq!(c.decompress(&packed, data.len()).unwrap(), data, "{c:?}");
            assert_eq!(
                c.decompress(&c.compress(b"", None).unwrap(), 0).unwrap(),
                b""
            );
        }
    }

    #[test]
    fn streamed_compression_reads_back_whole() {
        let data = sample();
        for c in Compression::ALL {
            let mut z = c.compressor(None).unwrap();
            let mut packed = Vec::new();
            for piece in data.chunks(7_777) {
                packed.extend(z.write(piece).unwrap());
            }
            packed.extend(z.finish().unwrap());
            assert!(packed.len() < data.len(), "{c:?} should compress");
            assert_eq!(c.decompress(&packed, data.len()).unwrap(), data, "{c:?}");
            let empty = c.compressor(None).unwrap().finish().unwrap();
            assert_eq!(c.decompress(&empty, 0).unwrap(), b"", "{c:?}");
        }
    }

    #[test]
    fn names_follow_pyodps() {
        for c in Compression::ALL {
            assert_eq!(Compression::from_encoding(c.encoding()).unwrap(), Some(c));
            assert_eq!(Compression::from_algorithm(c.algorithm()).unwrap(), Some(c));
            assert_eq!(
                Compression::from_encoding(&c.encoding().to_uppercase()).unwrap(),
                Some(c)
            );
        }
        assert_eq!(Compression::from_encoding("").unwrap(), None);
        assert_eq!(Compression::from_encoding(" Identity ").unwrap(), None);
        assert_eq!(Compression::from_algorithm("raw").unwrap(), None);
        assert_eq!(
            Compression::from_encoding("LZ4_FRAME").unwrap(),
            Some(Compression::OdpsLz4Frame)
        );
        assert_eq!(
            Compression::from_encoding("ZSTD").unwrap(),
            Some(Compression::Zstd)
        );
        let err = Compression::from_encoding("gzip").unwrap_err().to_string();
        assert!(err.contains("gzip"), "{err}");
        assert!(Compression::from_algorithm("lzma").is_err());
        assert_eq!(Compression::Deflate.non_legacy_name(), None);
        assert_eq!(Compression::SnappyFramed.non_legacy_name(), None);
        assert_eq!(Compression::Lz4Frame.non_legacy_name(), Some("LZ4_FRAME"));
    }

    #[test]
    fn deflate_is_zlib_and_reads_raw_deflate_too() {
        let data = sample();
        let packed = Compression::Deflate.compress(&data, Some(6)).unwrap();
        assert!(is_zlib_header(packed[0], packed[1]), "zlib header expected");
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(1));
        raw.write_all(&data).unwrap();
        let raw = raw.finish().unwrap();
        assert_eq!(
            Compression::Deflate.decompress(&raw, data.len()).unwrap(),
            data
        );
    }

    #[test]
    fn snappy_is_the_framing_format() {
        let packed = Compression::SnappyFramed.compress(b"hello", None).unwrap();
        assert_eq!(
            &packed[..10],
            b"\xff\x06\x00\x00sNaPpY",
            "stream identifier"
        );
    }

    #[test]
    fn bombs_and_garbage_are_refused() {
        let zeros = vec![0u8; 1 << 20];
        for c in Compression::ALL {
            let packed = c.compress(&zeros, None).unwrap();
            let err = c.decompress(&packed, 1000).unwrap_err().to_string();
            assert!(err.contains("more than 1000 bytes"), "{c:?}: {err}");
            let garbage = c.decompress(b"\x07not a compressed body at all", 1 << 20);
            assert!(garbage.is_err(), "{c:?} accepted garbage: {garbage:?}");
        }
    }

    #[test]
    fn truncated_bodies_are_errors() {
        let data = sample();
        for c in Compression::ALL {
            let packed = c.compress(&data, None).unwrap();
            // A cut body is an error or a prefix of the data (the record and Arrow streams
            // inside catch that): only a cut in a codec's trailer can give all of it.
            for cut in [packed.len() / 2, packed.len() - 1] {
                if let Ok(out) = c.decompress(&packed[..cut], data.len()) {
                    assert!(
                        data.starts_with(&out),
                        "{c:?} cut at {cut} gave other bytes"
                    );
                    assert!(
                        cut > packed.len() / 2 || out.len() < data.len(),
                        "{c:?} cut in half gave the whole body"
                    );
                }
            }
        }
    }
}

//! The blob store behind TableWriteBlob and BlobRead (docs/storage-api.md §6.13, §7.3, §7.4).
//!
//! Each blob is a file named by a random 128-bit id under the server's blob directory, with
//! a JSON sidecar of its metadata. A reference is the UTF-8 text `paiio-blob:<32 hex digits>`;
//! uploads answer it base64-encoded, BlobRead takes it as text (or base64). References are
//! parsed strictly and never used as paths as given.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use axum::body::Bytes;
use base64::Engine;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};

const REF_PREFIX: &str = "paiio-blob:";
/// The largest header or footer JSON of an upload frame.
const MAX_FRAME_JSON: usize = 1 << 20;
/// The most items one batch upload may carry.
pub(crate) const MAX_BATCH_ITEMS: usize = 100_000;

/// What is kept about a blob besides its bytes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct BlobMeta {
    pub size: u64,
    pub md5: String,
    pub content_type: Option<String>,
    pub custom_file_name: Option<String>,
    pub column_index: Option<i64>,
    pub partition_values: Vec<String>,
    pub table: String,
    pub session_id: String,
}

impl BlobMeta {
    pub fn new(data: &[u8]) -> Self {
        BlobMeta {
            size: data.len() as u64,
            md5: hex::encode(Md5::digest(data)),
            ..Default::default()
        }
    }
}

/// A blob id: 32 lowercase hex digits.
fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn paths(dir: &Path, id: &str) -> (PathBuf, PathBuf) {
    let sub = dir.join(&id[..2]);
    (
        sub.join(format!("{id}.bin")),
        sub.join(format!("{id}.json")),
    )
}

/// The reference text of a blob id.
pub(crate) fn reference(id: &str) -> String {
    format!("{REF_PREFIX}{id}")
}

/// The reference as uploads answer it: base64 of its UTF-8 text.
pub(crate) fn reference_b64(id: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(reference(id))
}

/// The blob id of a reference given as text, or as the base64 of the text.
pub(crate) fn parse_reference(r: &str) -> ApiResult<String> {
    let bad = || ApiError::invalid(format!("{r:?} is not a blob reference of this server"));
    let r = r.trim();
    let text = if r.starts_with(REF_PREFIX) {
        r.to_string()
    } else {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(r)
            .map_err(|_| bad())?;
        String::from_utf8(decoded).map_err(|_| bad())?
    };
    let id = text.strip_prefix(REF_PREFIX).ok_or_else(bad)?;
    if !valid_id(id) {
        return Err(bad());
    }
    Ok(id.to_string())
}

/// Stores a blob and returns its new id.
pub(crate) fn store(dir: &Path, data: &[u8], meta: &BlobMeta) -> ApiResult<String> {
    let id = format!("{:032x}", rand::random::<u128>());
    let (bin, json) = paths(dir, &id);
    let parent = bin.parent().unwrap_or(dir);
    fs::create_dir_all(parent).map_err(|e| io_error("creating the blob directory", parent, e))?;
    write_atomic(&json, &serde_json::to_vec(meta).unwrap_or_default())?;
    write_atomic(&bin, data)?;
    Ok(id)
}

fn write_atomic(path: &Path, data: &[u8]) -> ApiResult<()> {
    let tmp = path.with_extension(format!("tmp{:016x}", rand::random::<u64>()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_error("writing", path, e));
    }
    Ok(())
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
        format!("{what} {}: {e}", path.display()),
    )
}

/// One item of a batch upload (§7.3).
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub header: serde_json::Map<String, Value>,
    pub data: Bytes,
}

impl Frame {
    /// The metadata of the item, from its header.
    pub fn meta(&self) -> ApiResult<BlobMeta> {
        let mut meta = BlobMeta::new(&self.data);
        let h = &self.header;
        meta.column_index = match h.get("ColumnIndex") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().ok_or_else(|| {
                ApiError::invalid(format!("frame ColumnIndex {v} is not an integer"))
            })?),
        };
        meta.partition_values = match h.get("PartitionValues") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        ApiError::invalid(format!("frame PartitionValues holds {v}, not a string"))
                    })
                })
                .collect::<ApiResult<_>>()?,
            Some(Value::String(s)) => s
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
            Some(v) => {
                return Err(ApiError::invalid(format!(
                    "frame PartitionValues {v} is not a list"
                )));
            }
        };
        meta.content_type = opt_str(h, "ContentType")?;
        meta.custom_file_name = opt_str(h, "CustomFileName")?;
        Ok(meta)
    }
}

fn opt_str(h: &serde_json::Map<String, Value>, key: &str) -> ApiResult<Option<String>> {
    match h.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(ApiError::invalid(format!(
            "frame {key} {v} is not a string"
        ))),
    }
}

/// Parses the frames of a batch upload, checking each footer's checksum.
pub(crate) fn parse_frames(body: &Bytes) -> ApiResult<Vec<Frame>> {
    let mut pos = 0usize;
    let mut frames = Vec::new();
    while pos < body.len() {
        let n = frames.len();
        if n >= MAX_BATCH_ITEMS {
            return Err(ApiError::invalid(format!(
                "a batch upload carries at most {MAX_BATCH_ITEMS} blobs"
            )));
        }
        let header = take_json(body, &mut pos, n, "header")?;
        let header = match header {
            Value::Object(m) => m,
            other => {
                return Err(ApiError::invalid(format!(
                    "blob frame {n}: the header {other} is not a JSON object"
                )));
            }
        };
        let data = take(body, &mut pos, n, "data", usize::MAX)?;
        let footer = take_json(body, &mut pos, n, "footer")?;
        verify_checksum(&footer, &data, n)?;
        frames.push(Frame { header, data });
    }
    Ok(frames)
}

fn take(body: &Bytes, pos: &mut usize, n: usize, part: &str, max: usize) -> ApiResult<Bytes> {
    let rest = body.len() - *pos;
    if rest < 8 {
        return Err(ApiError::invalid(format!(
            "blob frame {n}: truncated before the {part} length ({rest} bytes left)"
        )));
    }
    let len = i64::from_le_bytes(body[*pos..*pos + 8].try_into().unwrap_or([0; 8]));
    *pos += 8;
    let rest = body.len() - *pos;
    if len < 0 {
        return Err(ApiError::invalid(format!(
            "blob frame {n}: the {part} length {len} is negative"
        )));
    }
    let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
    if len_usize > max {
        return Err(ApiError::invalid(format!(
            "blob frame {n}: the {part} length {len} is over the limit of {max}"
        )));
    }
    if len_usize > rest {
        return Err(ApiError::invalid(format!(
            "blob frame {n}: the {part} length {len} is more than the {rest} bytes left"
        )));
    }
    let out = body.slice(*pos..*pos + len_usize);
    *pos += len_usize;
    Ok(out)
}

fn take_json(body: &Bytes, pos: &mut usize, n: usize, part: &str) -> ApiResult<Value> {
    let bytes = take(body, pos, n, part, MAX_FRAME_JSON)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::invalid(format!("blob frame {n}: the {part} is not valid JSON: {e}"))
    })
}

fn verify_checksum(footer: &Value, data: &[u8], n: usize) -> ApiResult<()> {
    let Some(checksum) = footer.get("Checksum").filter(|c| !c.is_null()) else {
        return Ok(());
    };
    let ty = checksum.get("Type").and_then(Value::as_i64).unwrap_or(0);
    match ty {
        0 => Ok(()),
        1 => {
            let want = checksum
                .get("Crc32")
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "blob frame {n}: checksum type 1 without an integer Crc32"
                    ))
                })?;
            let got = crc32_ieee(data) as u64;
            if got != want {
                return Err(ApiError::invalid(format!(
                    "blob frame {n}: CRC-32 mismatch: the footer says {want}, the data has {got}"
                )));
            }
            Ok(())
        }
        2 => {
            let want = checksum.get("MD5").and_then(Value::as_str).ok_or_else(|| {
                ApiError::invalid(format!(
                    "blob frame {n}: checksum type 2 without an MD5 string"
                ))
            })?;
            let got = hex::encode(Md5::digest(data));
            if !got.eq_ignore_ascii_case(want.trim()) {
                return Err(ApiError::invalid(format!(
                    "blob frame {n}: MD5 mismatch: the footer says {want}, the data has {got}"
                )));
            }
            Ok(())
        }
        other => Err(ApiError::invalid(format!(
            "blob frame {n}: unknown checksum type {other}"
        ))),
    }
}

/// A blob found on disk, ready to be streamed: where its bytes are, how many, its metadata.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub path: PathBuf,
    pub size: u64,
    pub meta: BlobMeta,
}

/// Finds a blob without reading its bytes; a missing blob is a 404.
pub(crate) fn find(dir: &Path, id: &str) -> ApiResult<Found> {
    if !valid_id(id) {
        return Err(ApiError::invalid(format!("{id:?} is not a blob id")));
    }
    let (bin, json) = paths(dir, id);
    let size = match fs::metadata(&bin) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found(format!("no blob {}", reference(id))));
        }
        Err(e) => return Err(io_error("reading", &bin, e)),
    };
    let meta = fs::read(&json)
        .ok()
        .and_then(|b| serde_json::from_slice::<BlobMeta>(&b).ok())
        .unwrap_or_default();
    Ok(Found {
        path: bin,
        size,
        meta,
    })
}

/// The bytes of one download frame around `size` bytes of data: two 8-byte lengths and
/// the header; the footer is the third length and its JSON.
pub(crate) fn frame_overhead(meta: &BlobMeta) -> u64 {
    (frame_header(meta).len() + 24 + frame_footer(0).len()) as u64
}

fn frame_header(meta: &BlobMeta) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert(
        "ContentType".into(),
        Value::String(
            meta.content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".into()),
        ),
    );
    if let Some(name) = &meta.custom_file_name {
        header.insert("CustomFileName".into(), Value::String(name.clone()));
    }
    serde_json::to_vec(&Value::Object(header)).unwrap_or_default()
}

fn frame_footer(crc: u32) -> Vec<u8> {
    serde_json::to_vec(&json!({"Checksum": {"Type": 1, "Crc32": crc}})).unwrap_or_default()
}

/// Copies exactly `found.size` bytes of a blob to `out` in pieces, returning their CRC-32.
fn copy_blob(found: &Found, out: &mut impl Write) -> std::io::Result<u32> {
    use std::io::Read;
    let mut file = fs::File::open(&found.path)?;
    let mut buf = vec![0u8; 64 << 10];
    let mut left = found.size;
    let mut crc = 0;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "{} is shorter than its {} bytes",
                    found.path.display(),
                    found.size
                ),
            ));
        }
        crc = crc32_ieee_update(crc, &buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(crc)
}

/// Streams a BlobRead payload (§7.4) to `out`: one blob's bytes as they are, or each blob as
/// a frame (header JSON, data, footer JSON, each length-prefixed).
pub(crate) fn write_payload(found: &[Found], out: &mut impl Write) -> std::io::Result<()> {
    if let [one] = found {
        copy_blob(one, out)?;
        return Ok(());
    }
    for f in found {
        let header = frame_header(&f.meta);
        out.write_all(&(header.len() as i64).to_le_bytes())?;
        out.write_all(&header)?;
        out.write_all(&(f.size as i64).to_le_bytes())?;
        let crc = copy_blob(f, out)?;
        let footer = frame_footer(crc);
        out.write_all(&(footer.len() as i64).to_le_bytes())?;
        out.write_all(&footer)?;
    }
    Ok(())
}

/// zlib CRC-32 (IEEE, reflected 0xEDB88320), as blob upload frame footers carry it.
pub(crate) fn crc32_ieee(data: &[u8]) -> u32 {
    crc32_ieee_update(0, data)
}

/// Continues a zlib CRC-32 over more data (`crc` is the CRC of what came before; 0 to start).
pub(crate) fn crc32_ieee_update(crc: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut crc = !crc;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_its_check_values() {
        assert_eq!(crc32_ieee(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32_ieee(b"abc"), 891_568_578);
        let data: Vec<u8> = (0..2000u32).map(|i| (i * 7) as u8).collect();
        assert_eq!(
            crc32_ieee_update(crc32_ieee(&data[..10]), &data[10..]),
            crc32_ieee(&data)
        );
    }

    fn frame(header: &str, data: &[u8], footer: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for part in [header.as_bytes(), data, footer.as_bytes()] {
            out.extend_from_slice(&(part.len() as i64).to_le_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    #[test]
    fn frames_parse_and_checksums_are_checked() {
        let mut body = frame(
            r#"{"PartitionValues": [], "ColumnIndex": 1, "ContentType": "text/plain", "CustomFileName": "x.txt"}"#,
            b"abc",
            r#"{"Checksum": {"Type": 1, "Crc32": 891568578}}"#,
        );
        body.extend(frame(
            r#"{"PartitionValues": ["pt=1"], "ColumnIndex": 2}"#,
            b"",
            r#"{"Checksum": {"Type": 0}}"#,
        ));
        let frames = parse_frames(&Bytes::from(body.clone())).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(&frames[0].data[..], b"abc");
        let m = frames[0].meta().unwrap();
        assert_eq!(m.custom_file_name.as_deref(), Some("x.txt"));
        assert_eq!(
            frames[1].meta().unwrap().partition_values,
            vec!["pt=1".to_string()]
        );

        let bad = frame("{}", b"abc", r#"{"Checksum": {"Type": 1, "Crc32": 1}}"#);
        assert!(
            parse_frames(&Bytes::from(bad))
                .unwrap_err()
                .message
                .contains("CRC-32 mismatch")
        );
        let md5 = frame(
            "{}",
            b"abc",
            r#"{"Checksum": {"Type": 2, "MD5": "900150983cd24fb0d6963f7d28e17f72"}}"#,
        );
        assert_eq!(parse_frames(&Bytes::from(md5)).unwrap().len(), 1);
        // Truncations and absurd lengths.
        for cut in [1, 8, 20, body.len() - 1] {
            assert_eq!(
                parse_frames(&Bytes::from(body[..cut].to_vec()))
                    .unwrap_err()
                    .status,
                400,
                "cut {cut}"
            );
        }
        let mut huge = Vec::new();
        huge.extend_from_slice(&i64::MAX.to_le_bytes());
        assert_eq!(parse_frames(&Bytes::from(huge)).unwrap_err().status, 400);
        let mut neg = Vec::new();
        neg.extend_from_slice(&(-1i64).to_le_bytes());
        assert_eq!(parse_frames(&Bytes::from(neg)).unwrap_err().status, 400);
    }

    #[test]
    fn references_are_strict() {
        let id = format!("{:032x}", 42u128);
        assert_eq!(parse_reference(&reference(&id)).unwrap(), id);
        assert_eq!(parse_reference(&reference_b64(&id)).unwrap(), id);
        for bad in [
            "paiio-blob:../../etc/passwd",
            "paiio-blob:",
            "xyz",
            "paiio-blob:ABCDEF0000000000000000000000000a",
        ] {
            assert!(parse_reference(bad).is_err(), "{bad}");
        }
    }
}

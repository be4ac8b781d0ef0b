//! What a Tunnel read session is, encoded into its id: the download sessions (one per full
//! partition spec) in the order of the global row space, their row counts, and the options
//! the session was created with. Any process that has the id reads by `DownloadID` without
//! creating a session (the service allows about 200 download sessions per table per 5
//! minutes).
//!
//! The id is `tunnel.` followed by the URL-safe base64 (no padding) of the zlib-deflated JSON
//! of [`Layout`]: compact, opaque, and safe in URLs and file names.

use std::io::{Read, Write};
use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ObjectKind, Result};
use crate::service::{SplitMode, SplitOptions};
use crate::types::{ArrowOptions, Column, OdpsType};
use crate::uri::PartitionSpec;

/// The most indexed splits a read session has (as on the other backends' services).
pub(super) const MAX_SPLITS: usize = 1 << 20;

/// The total of row counts from the service, refused past i64 (a session's record count).
pub(super) fn check_rows(counts: impl Iterator<Item = u64>) -> Result<u64> {
    let mut total = 0u64;
    for n in counts {
        total = total
            .checked_add(n)
            .filter(|t| *t <= i64::MAX as u64)
            .ok_or_else(|| Error::Corrupt {
                location: "Tunnel download sessions".into(),
                message: "the sessions' row counts add up past 2^63".into(),
            })?;
    }
    Ok(total)
}

/// The prefix of Tunnel read session ids.
pub const SESSION_PREFIX: &str = "tunnel.";

/// The most bytes an encoded layout may inflate to (a hostile id cannot allocate more).
const MAX_LAYOUT_BYTES: u64 = 64 << 20;

/// One download session: its id, its partition (`k=v,k2=v2`, empty for an unpartitioned
/// table) and its rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Part {
    #[serde(rename = "d")]
    pub download_id: String,
    #[serde(rename = "p", default, skip_serializing_if = "String::is_empty")]
    pub partition: String,
    #[serde(rename = "n")]
    pub rows: u64,
}

/// Everything a read session is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Layout {
    #[serde(rename = "v")]
    pub version: u32,
    #[serde(rename = "s")]
    pub parts: Vec<Part>,
    /// Required data columns (empty: all, in table order).
    #[serde(rename = "c", default, skip_serializing_if = "Vec::is_empty")]
    pub data_columns: Vec<String>,
    /// Required partition columns.
    #[serde(rename = "pc", default, skip_serializing_if = "Vec::is_empty")]
    pub partition_columns: Vec<String>,
    #[serde(rename = "m")]
    pub mode: SplitMode,
    #[serde(rename = "k")]
    pub number: u64,
    #[serde(rename = "x")]
    pub cross_partition: bool,
    #[serde(rename = "a")]
    pub arrow: ArrowOptions,
    /// Epoch milliseconds the download sessions expire at (24 h after creation).
    #[serde(rename = "e")]
    pub expiration_ms: i64,
}

impl Layout {
    pub const VERSION: u32 = 1;

    /// The rows of every part (their sum is checked to fit an i64 when a layout is made or
    /// decoded).
    pub fn total_rows(&self) -> u64 {
        self.parts
            .iter()
            .fold(0u64, |n, p| n.saturating_add(p.rows))
    }

    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        // Writing into a Vec cannot fail.
        let _ = z.write_all(&json);
        let packed = z.finish().unwrap_or_default();
        format!("{SESSION_PREFIX}{}", URL_SAFE_NO_PAD.encode(packed))
    }

    /// Decodes a session id; an id that is not one of ours is an unknown read session.
    pub fn decode(session_id: &str) -> Result<Layout> {
        let unknown = || Error::not_found(ObjectKind::ReadSession, session_id.to_string());
        let packed = session_id
            .strip_prefix(SESSION_PREFIX)
            .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
            .ok_or_else(unknown)?;
        let mut json = Vec::new();
        flate2::read::ZlibDecoder::new(packed.as_slice())
            .take(MAX_LAYOUT_BYTES)
            .read_to_end(&mut json)
            .map_err(|_| unknown())?;
        let layout: Layout = serde_json::from_slice(&json).map_err(|_| unknown())?;
        if layout.version != Self::VERSION {
            return Err(Error::NotSupported {
                message: format!(
                    "Tunnel read session layout version {} (this client reads {})",
                    layout.version,
                    Self::VERSION
                ),
            });
        }
        // What no session this client made holds: row counts past i64, a split number past
        // the split limit.
        let sane = check_rows(layout.parts.iter().map(|p| p.rows)).is_ok()
            && (layout.mode != SplitMode::Parallelism || layout.number <= MAX_SPLITS as u64)
            && (layout.mode != SplitMode::Size || layout.number >= SplitOptions::MIN_SPLIT_SIZE);
        if !sane {
            return Err(unknown());
        }
        Ok(layout)
    }

    /// The partition spec of part `i`.
    pub fn spec(&self, i: usize) -> Result<PartitionSpec> {
        PartitionSpec::parse(&self.parts[i].partition)
    }

    /// The global row ranges of the indexed splits (Size, Parallelism); RowOffset has none.
    pub fn splits(&self, columns: &[Column]) -> Vec<Range<u64>> {
        let groups: Vec<Range<u64>> = if self.cross_partition {
            std::iter::once(0..self.total_rows()).collect()
        } else {
            let mut start = 0;
            self.parts
                .iter()
                .map(|p| {
                    let r = start..start + p.rows;
                    start += p.rows;
                    r
                })
                .filter(|r| !r.is_empty())
                .collect()
        };
        let total = self.total_rows();
        let mut out = Vec::new();
        for group in groups {
            let rows = group.end - group.start;
            let n = match self.mode {
                SplitMode::Size => {
                    let bytes = rows.saturating_mul(estimated_row_bytes(columns));
                    bytes.div_ceil(self.number.max(1)).max(1)
                }
                SplitMode::Parallelism if self.cross_partition => self.number.max(1),
                SplitMode::Parallelism => (self.number.saturating_mul(rows))
                    .div_ceil(total.max(1))
                    .max(1),
                SplitMode::RowOffset | SplitMode::Bucket => return Vec::new(),
            };
            let n = if self.mode == SplitMode::Size {
                n.min(rows.max(1))
            } else {
                n
            };
            // Never more than MAX_SPLITS in all.
            let n = n.min(MAX_SPLITS.saturating_sub(out.len()) as u64);
            for i in 0..n {
                let r = crate::split::balanced(rows, i, n);
                out.push(group.start + r.start..group.start + r.end);
            }
        }
        if out.is_empty() && self.mode == SplitMode::Parallelism {
            // An empty table still has its requested splits (all empty).
            out = (0..self.number.max(1)).map(|_| 0..0).collect();
        }
        out
    }
}

/// A rough size of a row of `columns`, in bytes, for Size splits (the Tunnel tells no sizes).
pub(super) fn estimated_row_bytes(columns: &[Column]) -> u64 {
    fn of(ty: &OdpsType) -> u64 {
        match ty {
            OdpsType::Boolean | OdpsType::TinyInt => 1,
            OdpsType::SmallInt => 2,
            OdpsType::Int | OdpsType::Float | OdpsType::Date => 4,
            OdpsType::BigInt | OdpsType::Double | OdpsType::DateTime => 8,
            OdpsType::Timestamp | OdpsType::TimestampNtz => 12,
            OdpsType::Decimal(_) => 16,
            OdpsType::Array(t) => of(t).saturating_mul(4).saturating_add(4),
            OdpsType::Map(k, v) => of(k)
                .saturating_add(of(v))
                .saturating_mul(4)
                .saturating_add(4),
            OdpsType::Struct(fields) => fields.iter().fold(0, |n, f| n.saturating_add(of(&f.ty))),
            _ => 32,
        }
    }
    columns
        .iter()
        .fold(0u64, |n, c| n.saturating_add(of(&c.ty)))
        .max(1)
}

/// The split options a layout records, checked as the other backends check them.
pub(super) fn check_split_options(opts: &SplitOptions) -> Result<()> {
    match (opts.mode, opts.number) {
        (SplitMode::Size, n) if n < SplitOptions::MIN_SPLIT_SIZE => Err(Error::invalid(
            "split size",
            format!(
                "{n} bytes (the smallest is {} bytes)",
                SplitOptions::MIN_SPLIT_SIZE
            ),
        )),
        (SplitMode::Parallelism, 0) => Err(Error::invalid(
            "split number",
            "Parallelism mode needs at least 1 split",
        )),
        (SplitMode::Parallelism, n) if n > MAX_SPLITS as u64 => Err(Error::invalid(
            "split number",
            format!("{n} splits (at most {MAX_SPLITS})"),
        )),
        (SplitMode::Bucket, _) => Err(Error::NotSupported {
            message: "Bucket splits over the Tunnel (it reads by row range only)".into(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(parts: &[u64], mode: SplitMode, number: u64, cross: bool) -> Layout {
        Layout {
            version: Layout::VERSION,
            parts: parts
                .iter()
                .enumerate()
                .map(|(i, n)| Part {
                    download_id: format!("2024120312{i:04}abcdef0123456789"),
                    partition: format!("pt={i}"),
                    rows: *n,
                })
                .collect(),
            data_columns: vec!["a".into()],
            partition_columns: vec!["pt".into()],
            mode,
            number,
            cross_partition: cross,
            arrow: ArrowOptions::default(),
            expiration_ms: 1,
        }
    }

    #[test]
    fn crafted_ids_are_unknown_and_splits_bounded() {
        let columns = [Column::new("a", OdpsType::BigInt)];
        // Row counts past i64, in one part or added up.
        for parts in [&[u64::MAX][..], &[i64::MAX as u64, 1]] {
            let id = layout(parts, SplitMode::RowOffset, 0, true).encode();
            assert!(matches!(Layout::decode(&id), Err(Error::NotFound { .. })));
        }
        // A split number no session of this client has.
        let id = layout(&[10], SplitMode::Parallelism, 1 << 62, true).encode();
        assert!(matches!(Layout::decode(&id), Err(Error::NotFound { .. })));
        let id = layout(&[10], SplitMode::Size, 1, true).encode();
        assert!(matches!(Layout::decode(&id), Err(Error::NotFound { .. })));
        // A huge table split small still makes at most MAX_SPLITS splits.
        let huge = layout(
            &[1 << 60],
            SplitMode::Size,
            SplitOptions::MIN_SPLIT_SIZE,
            true,
        );
        let id = huge.encode();
        assert_eq!(
            Layout::decode(&id).unwrap().splits(&columns).len(),
            MAX_SPLITS
        );
        assert!(check_split_options(&SplitOptions::parallelism(1 << 40)).is_err());
        assert!(check_rows([1, 2, 3].into_iter()).is_ok());
        assert!(check_rows([u64::MAX, 1].into_iter()).is_err());
    }

    #[test]
    fn ids_round_trip_and_foreign_ids_are_unknown() {
        let l = layout(&[3, 0, 7], SplitMode::RowOffset, 0, true);
        let id = l.encode();
        assert!(id.starts_with(SESSION_PREFIX));
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        );
        assert_eq!(Layout::decode(&id).unwrap(), l);
        for bad in ["", "tunnel.", "tunnel.!!", "abc", "tunnel.AAAA"] {
            assert!(
                matches!(Layout::decode(bad), Err(Error::NotFound { .. })),
                "{bad:?}"
            );
        }
        // 1000 partitions stay far below any URL or file limit per partition.
        let big = layout(&vec![5; 1000], SplitMode::RowOffset, 0, true).encode();
        assert!(big.len() < 40 * 1000, "{}", big.len());
    }

    #[test]
    fn splits_cover_every_row_once() {
        let cols = [Column::new("a", OdpsType::BigInt)];
        for (parts, mode, n, cross) in [
            (vec![10, 0, 7], SplitMode::Parallelism, 4, true),
            (vec![10, 0, 7], SplitMode::Parallelism, 4, false),
            (vec![2], SplitMode::Parallelism, 5, true),
            (vec![1000, 3], SplitMode::Size, 1024, true),
            (vec![1000, 3], SplitMode::Size, 1024, false),
        ] {
            let l = layout(&parts, mode, n, cross);
            let splits = l.splits(&cols);
            let mut next = 0;
            for s in &splits {
                assert_eq!(s.start, next, "{splits:?}");
                next = s.end;
            }
            assert_eq!(next, l.total_rows(), "{splits:?}");
            if mode == SplitMode::Parallelism && cross {
                assert_eq!(splits.len() as u64, n);
            }
            if !cross {
                // No split spans two partitions.
                let bounds: Vec<u64> = parts
                    .iter()
                    .scan(0, |acc, n| {
                        *acc += n;
                        Some(*acc)
                    })
                    .collect();
                for s in &splits {
                    assert!(!bounds.iter().any(|b| s.start < *b && *b < s.end), "{s:?}");
                }
            }
        }
        assert!(
            layout(&[1000], SplitMode::Size, 1024, true)
                .splits(&cols)
                .len()
                >= 2
        );
    }
}

//! Options of [`TableReader`](crate::reader::TableReader): a plain struct with `Default` and
//! serde, so that Python keyword arguments map onto it field by field.

use paiio_storage::ArrowOptions;
use serde::{Deserialize, Deserializer, Serialize};

use crate::coerce::RecordDefault;
use crate::error::{Error, Result};

/// The most prefetch streams a reader may use.
pub const MAX_THREADS: usize = 64;
/// Read-ahead per prefetch stream when neither `capacity` nor `byte_budget` is given.
pub const AUTO_BYTES_PER_THREAD: usize = 64 << 20;
/// Rows per request batch by default.
pub const DEFAULT_BATCH_ROWS: usize = 8192;

/// Deterministic shuffling: the order of row blocks is a permutation seeded by
/// `(seed, epoch)`, and rows are shuffled within consecutive windows of `buffer_rows` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Shuffle {
    pub seed: u64,
    pub epoch: u64,
    /// Rows shuffled together (the shuffle buffer); memory grows with it.
    pub buffer_rows: usize,
    /// Rows per block whose order is permuted (and per request); part of the order, so it
    /// must stay the same to restore a saved state.
    pub block_rows: usize,
}

impl Default for Shuffle {
    fn default() -> Self {
        Shuffle {
            seed: 0,
            epoch: 0,
            buffer_rows: 65536,
            block_rows: 4096,
        }
    }
}

impl Shuffle {
    pub fn new(seed: u64, epoch: u64) -> Self {
        Shuffle {
            seed,
            epoch,
            ..Default::default()
        }
    }
}

/// What a [`TableReader`](crate::reader::TableReader) reads and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReaderOptions {
    /// Columns to read, in this output order; `None` or empty: every data column in table
    /// order. Partition columns may be named too. Also accepted as one comma-separated string.
    #[serde(deserialize_with = "column_list")]
    pub selected_cols: Option<Vec<String>>,
    /// Columns to leave out (every other data column, in table order). Giving both this and
    /// `selected_cols` is an error.
    #[serde(deserialize_with = "column_list")]
    pub excluded_cols: Option<Vec<String>>,
    pub slice_id: u64,
    pub slice_count: u64,
    /// Concurrent prefetch streams: 0 = automatic, else 1..=64.
    pub num_threads: usize,
    /// Rows of read-ahead: 0 = automatic (about 64 MB per thread, estimated from the average
    /// size of the first rows).
    pub capacity: usize,
    /// Bytes of read-ahead, whatever the row size; `None` = 64 MB per thread.
    pub byte_budget: Option<usize>,
    /// Trim every slice to the same row count (`total / slice_count` per table).
    pub equal: bool,
    pub shuffle: Option<Shuffle>,
    /// Rows per requested Arrow batch, and per batch of the iterator.
    pub batch_rows: usize,
    /// Rows per prefetch range (one request each) without shuffling; 0 = automatic.
    pub chunk_rows: usize,
    pub arrow_options: ArrowOptions,
    /// One default per selected column, whose type is the column's output type and which
    /// NULLs become (see [`crate::coerce`]); checked at open, applied as rows are read ahead.
    /// `None`: the columns' own Arrow types, NULLs kept.
    pub record_defaults: Option<Vec<RecordDefault>>,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            selected_cols: None,
            excluded_cols: None,
            slice_id: 0,
            slice_count: 1,
            num_threads: 0,
            capacity: 0,
            byte_budget: None,
            equal: false,
            shuffle: None,
            batch_rows: DEFAULT_BATCH_ROWS,
            chunk_rows: 0,
            arrow_options: ArrowOptions::default(),
            record_defaults: None,
        }
    }
}

/// Parses `"a, b,c"` into names; `""` (or only commas and spaces) is `None` (all columns).
pub fn parse_columns(text: &str) -> Option<Vec<String>> {
    let names: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    (!names.is_empty()).then_some(names)
}

fn column_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Text(String),
        List(Vec<String>),
    }
    Ok(match Option::<Form>::deserialize(d)? {
        None => None,
        Some(Form::Text(text)) => parse_columns(&text),
        Some(Form::List(list)) => Some(list).filter(|l| !l.is_empty()),
    })
}

impl ReaderOptions {
    /// Selects columns from a comma-separated list (`""` = all).
    pub fn selected(mut self, cols: &str) -> Self {
        self.selected_cols = parse_columns(cols);
        self
    }

    /// Excludes columns from a comma-separated list.
    pub fn excluded(mut self, cols: &str) -> Self {
        self.excluded_cols = parse_columns(cols);
        self
    }

    pub fn slice(mut self, slice_id: u64, slice_count: u64) -> Self {
        self.slice_id = slice_id;
        self.slice_count = slice_count;
        self
    }

    pub fn threads(mut self, num_threads: usize) -> Self {
        self.num_threads = num_threads;
        self
    }

    pub fn capacity(mut self, rows: usize) -> Self {
        self.capacity = rows;
        self
    }

    pub fn byte_budget(mut self, bytes: usize) -> Self {
        self.byte_budget = Some(bytes);
        self
    }

    pub fn equal(mut self, equal: bool) -> Self {
        self.equal = equal;
        self
    }

    pub fn shuffle(mut self, shuffle: Shuffle) -> Self {
        self.shuffle = Some(shuffle);
        self
    }

    pub fn batch_rows(mut self, rows: usize) -> Self {
        self.batch_rows = rows;
        self
    }

    pub fn chunk_rows(mut self, rows: usize) -> Self {
        self.chunk_rows = rows;
        self
    }

    pub fn record_defaults(mut self, defaults: Vec<RecordDefault>) -> Self {
        self.record_defaults = Some(defaults);
        self
    }

    /// The selected columns, if any non-empty list was given.
    pub fn selected_list(&self) -> Option<&[String]> {
        self.selected_cols.as_deref().filter(|l| !l.is_empty())
    }

    /// The excluded columns, if any non-empty list was given.
    pub fn excluded_list(&self) -> Option<&[String]> {
        self.excluded_cols.as_deref().filter(|l| !l.is_empty())
    }

    /// Checks everything that does not need the table.
    pub fn validate(&self) -> Result<()> {
        if let (Some(s), Some(e)) = (self.selected_list(), self.excluded_list()) {
            return Err(Error::invalid(
                "columns",
                format!(
                    "selected_cols ({}) and excluded_cols ({}) are both given; choose columns \
                     with one of them",
                    s.join(","),
                    e.join(",")
                ),
            ));
        }
        crate::shard::check_slice(self.slice_id, self.slice_count)?;
        if self.num_threads > MAX_THREADS {
            return Err(Error::invalid(
                "num_threads",
                format!(
                    "{} (expected 0 for automatic, or 1..={MAX_THREADS})",
                    self.num_threads
                ),
            ));
        }
        if self.batch_rows == 0 {
            return Err(Error::invalid("batch_rows", "must be at least 1"));
        }
        if self.byte_budget == Some(0) {
            return Err(Error::invalid("byte_budget", "must be at least 1 byte"));
        }
        if let Some(s) = &self.shuffle {
            if s.buffer_rows == 0 {
                return Err(Error::invalid("shuffle buffer_rows", "must be at least 1"));
            }
            if s.block_rows == 0 {
                return Err(Error::invalid("shuffle block_rows", "must be at least 1"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_from_text_or_list() {
        let o: ReaderOptions =
            serde_json::from_str(r#"{"selected_cols": "b, a", "slice_count": 2}"#).unwrap();
        assert_eq!(
            o.selected_cols,
            Some(vec!["b".to_string(), "a".to_string()])
        );
        assert_eq!(o.slice_count, 2);
        let o: ReaderOptions = serde_json::from_str(r#"{"selected_cols": ""}"#).unwrap();
        assert_eq!(o.selected_cols, None);
        let o: ReaderOptions = serde_json::from_str(r#"{"excluded_cols": ["x"]}"#).unwrap();
        assert_eq!(o.excluded_cols, Some(vec!["x".to_string()]));
        let o: ReaderOptions = serde_json::from_str(r#"{"selected_cols": null}"#).unwrap();
        assert_eq!(o, ReaderOptions::default());
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let e = ReaderOptions::default()
            .selected("a")
            .excluded("b")
            .validate()
            .unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("selected_cols") && m.contains("excluded_cols"),
            "{m}"
        );
        assert!(
            ReaderOptions::default()
                .selected("")
                .excluded("b")
                .validate()
                .is_ok()
        );
        assert!(ReaderOptions::default().threads(65).validate().is_err());
        assert!(ReaderOptions::default().slice(2, 2).validate().is_err());
    }
}

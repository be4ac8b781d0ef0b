//! Checks Arrow IPC streams and files before arrow-ipc decodes them.
//!
//! arrow-ipc trusts the sizes an IPC message declares: a compressed buffer's 8-byte
//! uncompressed-length prefix becomes an allocation of that size (2^62 aborts the process,
//! which no `catch_unwind` can stop), a message's body length becomes a zero-filled buffer,
//! and a buffer that points past its body panics. This module reads the message framing and
//! the metadata flatbuffers itself (cheap: no per-row work) and refuses, with an error naming
//! the message, column and buffer, anything that is out of bounds or declares more than the
//! caller's [`IpcLimits`]: every buffer must lie inside its body, every declared uncompressed
//! length of a fixed-width buffer must fit the rows its field node declares (validity
//! `ceil(rows/8)`, offsets `(rows+1)*4` or `*8`, values `rows*width`, with a little padding),
//! and the decoded bytes of a message and of the whole stream must stay under the limits.
//!
//! - [`IpcStreamGuard`] checks a stream incrementally: feed it every byte before the decoder
//!   sees it (a message is only decoded once its whole body has arrived, and the guard has
//!   checked the metadata and every length prefix by then).
//! - [`GuardedReader`] does that for a [`Read`] the stream reader pulls from.
//! - [`check_file`] checks the footer of an IPC file and every block it points at.
//! - [`catch_quietly`] is a last line of defence around a decode: a panic becomes an error
//!   without the panic hook's report.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Once;

use arrow_ipc::{MessageHeader, MetadataVersion};
use arrow_schema::{DataType, Field, UnionMode};

/// The continuation marker before a message's metadata length.
const CONTINUATION: [u8; 4] = [0xFF; 4];
/// The largest metadata flatbuffer (or file footer) accepted.
pub const MAX_METADATA_BYTES: u64 = 16 << 20;
/// Slack allowed on a fixed-width buffer beyond what its rows need (writers may pad).
const PADDING: u64 = 64;

/// What one IPC stream or file may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpcLimits {
    /// The most bytes one message (a record batch or a dictionary batch) may decode to: its
    /// uncompressed buffers plus the declared lengths of its compressed ones. Also the
    /// largest message body.
    pub max_message_bytes: u64,
    /// The most bytes all messages together may decode to; `None`: no cap beyond the
    /// per-message one (long read streams).
    pub max_total_bytes: Option<u64>,
    /// The most rows a batch, or values a field node, may declare.
    pub max_rows: u64,
}

impl IpcLimits {
    /// Limits for reading response bodies: 2 GiB per message, 2^31 rows per batch, no total.
    pub const RESPONSE: IpcLimits = IpcLimits {
        max_message_bytes: 2 << 30,
        max_total_bytes: None,
        max_rows: 1 << 31,
    };

    /// A per-request cap: `bytes` for each message and for the whole stream.
    pub fn total(bytes: u64, max_rows: u64) -> Self {
        IpcLimits {
            max_message_bytes: bytes,
            max_total_bytes: Some(bytes),
            max_rows,
        }
    }
}

/// Why a stream or file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IpcGuardError(pub String);

type GuardResult<T> = std::result::Result<T, IpcGuardError>;

fn refuse<T>(message: impl Into<String>) -> GuardResult<T> {
    Err(IpcGuardError(message.into()))
}

/// What the schema message says.
#[derive(Debug, Clone)]
struct Known {
    fields: arrow_schema::Fields,
    /// The value type of each dictionary id.
    dictionaries: HashMap<i64, DataType>,
}

impl Known {
    fn new(schema: arrow_ipc::Schema<'_>, where_: &str) -> GuardResult<Self> {
        let schema = arrow_ipc::convert::try_fb_to_schema(schema)
            .map_err(|e| IpcGuardError(format!("{where_}: the schema cannot be read: {e}")))?;
        let mut dictionaries = HashMap::new();
        for f in schema.fields() {
            collect_dictionaries(f, &mut dictionaries);
        }
        Ok(Known {
            fields: schema.fields().clone(),
            dictionaries,
        })
    }
}

#[allow(deprecated)] // arrow-ipc still keys dictionaries by the field's dict id
fn collect_dictionaries(field: &Field, out: &mut HashMap<i64, DataType>) {
    if let (DataType::Dictionary(_, value), Some(id)) = (field.data_type(), field.dict_id()) {
        out.insert(id, value.as_ref().clone());
    }
    for child in children(field.data_type()) {
        collect_dictionaries(child, out);
    }
}

fn children(dt: &DataType) -> Vec<&Field> {
    match dt {
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => vec![f.as_ref()],
        DataType::Struct(fs) => fs.iter().map(|f| f.as_ref()).collect(),
        DataType::Union(fs, _) => fs.iter().map(|(_, f)| f.as_ref()).collect(),
        DataType::RunEndEncoded(r, v) => vec![r.as_ref(), v.as_ref()],
        DataType::Dictionary(_, v) => children(v),
        _ => Vec::new(),
    }
}

/// A compressed buffer whose length prefix is still to be read from the body.
#[derive(Debug, Clone)]
struct PrefixCheck {
    /// Where the buffer starts in the body.
    offset: u64,
    /// Its length in the body (prefix included).
    length: u64,
    /// The most its declared uncompressed length may be; `None`: only the totals bound it.
    allowed: Option<u64>,
    /// `column `a` (Int64, 1000 values), buffer 3 (values)`.
    label: String,
}

/// The checks of one message that need its body.
#[derive(Debug, Default)]
struct Plan {
    /// Bytes of buffers taken as they are (no decompression).
    plain: u64,
    checks: Vec<PrefixCheck>,
}

/// Walks a batch's field nodes and buffers along the schema, as arrow-ipc's reader does.
struct Walk<'a> {
    nodes: Vec<(i64, i64)>,
    next_node: usize,
    buffers: Vec<(u64, u64)>,
    next_buffer: usize,
    variadic: Vec<i64>,
    next_variadic: usize,
    compressed: bool,
    version: MetadataVersion,
    max_rows: u64,
    where_: &'a str,
    plan: Plan,
}

fn bits(n: u64) -> u64 {
    n.div_ceil(8)
}

fn padded(need: u64) -> u64 {
    need.saturating_add(PADDING - 1) / PADDING * PADDING + PADDING
}

impl Walk<'_> {
    fn node(&mut self, column: &str) -> GuardResult<u64> {
        let Some(&(length, nulls)) = self.nodes.get(self.next_node) else {
            return refuse(format!(
                "{}: column `{column}` has no field node (the batch declares too few)",
                self.where_
            ));
        };
        self.next_node += 1;
        if length < 0 || length as u64 > self.max_rows {
            return refuse(format!(
                "{}: column `{column}` declares {length} values (the limit is {})",
                self.where_, self.max_rows
            ));
        }
        if nulls < 0 || nulls > length {
            return refuse(format!(
                "{}: column `{column}` declares {nulls} nulls in {length} values",
                self.where_
            ));
        }
        Ok(length as u64)
    }

    /// Takes the next buffer; `need` is what `what` of `rows` values needs, if known.
    fn buffer(
        &mut self,
        column: &str,
        dt: &DataType,
        rows: u64,
        what: &str,
        need: Option<u64>,
    ) -> GuardResult<()> {
        let index = self.next_buffer;
        let Some(&(offset, length)) = self.buffers.get(index) else {
            return refuse(format!(
                "{}: column `{column}` has no {what} buffer (the batch declares too few)",
                self.where_
            ));
        };
        self.next_buffer += 1;
        if !self.compressed || length == 0 {
            self.plan.plain = self.plan.plain.saturating_add(length);
            return Ok(());
        }
        if length < 8 {
            return refuse(format!(
                "{}: column `{column}`, buffer {index} ({what}) is compressed but only {length} bytes long \
                 (no room for its 8-byte uncompressed length)",
                self.where_
            ));
        }
        self.plan.checks.push(PrefixCheck {
            offset,
            length,
            allowed: need.map(padded),
            label: format!("column `{column}` ({dt}, {rows} values), buffer {index} ({what})"),
        });
        Ok(())
    }

    fn field(&mut self, name: &str, dt: &DataType) -> GuardResult<()> {
        use DataType as T;
        let rows_plus_one = |n: u64| n.saturating_add(1);
        match dt {
            T::Null => {
                self.node(name)?;
            }
            T::Boolean => {
                let n = self.node(name)?;
                self.buffer(name, dt, n, "validity", Some(bits(n)))?;
                self.buffer(name, dt, n, "values", Some(bits(n)))?;
            }
            T::Utf8 | T::Binary | T::LargeUtf8 | T::LargeBinary => {
                let n = self.node(name)?;
                let width = if matches!(dt, T::Utf8 | T::Binary) {
                    4
                } else {
                    8
                };
                self.buffer(name, dt, n, "validity", Some(bits(n)))?;
                self.buffer(
                    name,
                    dt,
                    n,
                    "offsets",
                    Some(rows_plus_one(n).saturating_mul(width)),
                )?;
                self.buffer(name, dt, n, "values", None)?;
            }
            T::Utf8View | T::BinaryView => {
                let Some(&count) = self.variadic.get(self.next_variadic) else {
                    return refuse(format!(
                        "{}: column `{name}` has no variadic buffer count",
                        self.where_
                    ));
                };
                self.next_variadic += 1;
                let left = (self.buffers.len() - self.next_buffer) as i64;
                if count < 0 || count.saturating_add(2) > left {
                    return refuse(format!(
                        "{}: column `{name}` declares {count} data buffers, but only {left} buffers are left",
                        self.where_
                    ));
                }
                let n = self.node(name)?;
                self.buffer(name, dt, n, "validity", Some(bits(n)))?;
                self.buffer(name, dt, n, "views", Some(n.saturating_mul(16)))?;
                for _ in 0..count {
                    self.buffer(name, dt, n, "data", None)?;
                }
            }
            T::FixedSizeBinary(width) => {
                let n = self.node(name)?;
                self.buffer(name, dt, n, "validity", Some(bits(n)))?;
                self.buffer(
                    name,
                    dt,
                    n,
                    "values",
                    Some(n.saturating_mul((*width).max(0) as u64)),
                )?;
            }
            T::List(child) | T::LargeList(child) | T::Map(child, _) => {
                let n = self.node(name)?;
                let width = if matches!(dt, T::LargeList(_)) { 8 } else { 4 };
                self.buffer(name, dt, n, "validity", Some(bits(n)))?;
                self.buffer(
                    name,
                    dt,
                    n,
                    "offsets",
                    Some(rows_plus_one(n).saturating_mul(width)),
                )?;
                self.field(&format!("{name}.{}", child.name()), child.data_type())?;
            }
            T::ListView(child) | T::LargeListView(child) => {
                let n = self.node(name)?;
                let width = if matches!(dt, T::LargeListView(_)) {
                    8
                } else {
                    4
                };
                self.buffer(name, dt, n, "validity", Some(bits(n)))?;
                self.buffer(name, dt, n, "offsets", Some(n.saturating_mul(width)))?;
                self.buffer(name, dt, n, "sizes", Some(n.saturating_mul(width)))?;
                self.field(&format!("{name}.{}", child.name()), child.data_type())?;
            }
            T::FixedSizeList(child, _) => {
                let n = self.node(name)?;
                self.buffer(name, dt, n, "validity", Some(bits(n)))?;
                self.field(&format!("{name}.{}", child.name()), child.data_type())?;
            }
            T::Struct(fields) => {
                let n = self.node(name)?;
                self.buffer(name, dt, n, "validity", Some(bits(n)))?;
                for f in fields {
                    self.field(&format!("{name}.{}", f.name()), f.data_type())?;
                }
            }
            T::RunEndEncoded(run_ends, values) => {
                self.node(name)?;
                self.field(&format!("{name}.{}", run_ends.name()), run_ends.data_type())?;
                self.field(&format!("{name}.{}", values.name()), values.data_type())?;
            }
            T::Dictionary(key, _) => {
                let n = self.node(name)?;
                let width = key.primitive_width().unwrap_or(8) as u64;
                self.buffer(name, dt, n, "validity", Some(bits(n)))?;
                self.buffer(name, dt, n, "indices", Some(n.saturating_mul(width)))?;
            }
            T::Union(fields, mode) => {
                let n = self.node(name)?;
                if self.version < MetadataVersion::V5 {
                    self.buffer(name, dt, n, "validity", Some(bits(n)))?;
                }
                self.buffer(name, dt, n, "type ids", Some(n))?;
                if *mode == UnionMode::Dense {
                    self.buffer(name, dt, n, "offsets", Some(n.saturating_mul(4)))?;
                }
                for (_, f) in fields.iter() {
                    self.field(&format!("{name}.{}", f.name()), f.data_type())?;
                }
            }
            other => {
                let n = self.node(name)?;
                let need = other.primitive_width().map(|w| n.saturating_mul(w as u64));
                self.buffer(name, dt, n, "validity", Some(bits(n)))?;
                self.buffer(name, dt, n, "values", need)?;
            }
        }
        Ok(())
    }
}

/// Checks a record batch's metadata against its fields and its body of `body_len` bytes.
fn plan_batch(
    batch: arrow_ipc::RecordBatch<'_>,
    fields: &[(String, DataType)],
    body_len: u64,
    version: MetadataVersion,
    limits: &IpcLimits,
    where_: &str,
) -> GuardResult<Plan> {
    let rows = batch.length();
    if rows < 0 || rows as u64 > limits.max_rows {
        return refuse(format!(
            "{where_}: declares {rows} rows (the limit is {})",
            limits.max_rows
        ));
    }
    let compressed = match batch.compression() {
        None => false,
        Some(c) => {
            if c.codec() != arrow_ipc::CompressionType::LZ4_FRAME
                && c.codec() != arrow_ipc::CompressionType::ZSTD
            {
                return refuse(format!(
                    "{where_}: unknown buffer compression {:?}",
                    c.codec()
                ));
            }
            true
        }
    };
    let mut buffers = Vec::new();
    for (i, b) in batch.buffers().into_iter().flatten().enumerate() {
        let (offset, length) = (b.offset(), b.length());
        let end = offset.checked_add(length);
        if offset < 0 || length < 0 || end.is_none_or(|e| e as u64 > body_len) {
            return refuse(format!(
                "{where_}: buffer {i} (offset {offset}, length {length}) is not inside the {body_len}-byte body"
            ));
        }
        // The format aligns every buffer to 8 bytes; arrow-ipc's offset checks assume it.
        if offset % 8 != 0 {
            return refuse(format!(
                "{where_}: buffer {i} starts at offset {offset}, which is not 8-byte aligned"
            ));
        }
        buffers.push((offset as u64, length as u64));
    }
    let nodes: Vec<(i64, i64)> = batch
        .nodes()
        .into_iter()
        .flatten()
        .map(|n| (n.length(), n.null_count()))
        .collect();
    let variadic: Vec<i64> = batch.variadicBufferCounts().into_iter().flatten().collect();
    let mut walk = Walk {
        nodes,
        next_node: 0,
        buffers,
        next_buffer: 0,
        variadic,
        next_variadic: 0,
        compressed,
        version,
        max_rows: limits.max_rows,
        where_,
        plan: Plan::default(),
    };
    for (name, dt) in fields {
        walk.field(name, dt)?;
    }
    Ok(walk.plan)
}

/// Counts declared decoded bytes against the limits.
#[derive(Debug)]
struct Budget {
    limits: IpcLimits,
    total: u64,
    message: u64,
}

impl Budget {
    fn new(limits: IpcLimits) -> Self {
        Budget {
            limits,
            total: 0,
            message: 0,
        }
    }

    fn start_message(&mut self) {
        self.message = 0;
    }

    fn add(&mut self, bytes: u64, where_: &str, label: &str) -> GuardResult<()> {
        self.message = self.message.saturating_add(bytes);
        self.total = self.total.saturating_add(bytes);
        if self.message > self.limits.max_message_bytes {
            return refuse(format!(
                "{where_}: {label} brings the message to {} decoded bytes, over the limit of {} per message",
                self.message, self.limits.max_message_bytes
            ));
        }
        if let Some(max) = self.limits.max_total_bytes
            && self.total > max
        {
            return refuse(format!(
                "{where_}: {label} brings the stream to {} decoded bytes, over the limit of {max}",
                self.total
            ));
        }
        Ok(())
    }

    /// Applies a compressed buffer's length prefix.
    fn prefix(&mut self, check: &PrefixCheck, prefix: [u8; 8], where_: &str) -> GuardResult<()> {
        let declared = i64::from_le_bytes(prefix);
        if declared == -1 {
            // Stored uncompressed after the prefix.
            return self.add(check.length - 8, where_, &check.label);
        }
        if declared < 0 {
            return refuse(format!(
                "{where_}: {} declares the uncompressed length {declared}",
                check.label
            ));
        }
        let declared = declared as u64;
        if let Some(allowed) = check.allowed
            && declared > allowed
        {
            return refuse(format!(
                "{where_}: {} declares {declared} uncompressed bytes; at most {allowed} are allowed",
                check.label
            ));
        }
        self.add(
            declared,
            where_,
            &format!("{} (declaring {declared} uncompressed bytes)", check.label),
        )
    }
}

/// The metadata of a message: which fields its batch has, and what to check in its body.
fn plan_message(
    message: arrow_ipc::Message<'_>,
    known: &mut Option<Known>,
    body_len: u64,
    limits: &IpcLimits,
    where_: &str,
) -> GuardResult<Option<Plan>> {
    let version = message.version();
    match message.header_type() {
        MessageHeader::Schema => {
            let Some(schema) = message.header_as_schema() else {
                return refuse(format!("{where_}: the schema message has no schema"));
            };
            if known.is_some() {
                return refuse(format!("{where_}: a second schema message"));
            }
            *known = Some(Known::new(schema, where_)?);
            Ok(None)
        }
        MessageHeader::RecordBatch => {
            let Some(known) = known.as_ref() else {
                return refuse(format!("{where_}: a record batch before the schema"));
            };
            let Some(batch) = message.header_as_record_batch() else {
                return refuse(format!(
                    "{where_}: the record batch message has no record batch"
                ));
            };
            let fields: Vec<(String, DataType)> = known
                .fields
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone()))
                .collect();
            plan_batch(batch, &fields, body_len, version, limits, where_).map(Some)
        }
        MessageHeader::DictionaryBatch => {
            let Some(known) = known.as_ref() else {
                return refuse(format!("{where_}: a dictionary batch before the schema"));
            };
            let Some(dict) = message.header_as_dictionary_batch() else {
                return refuse(format!(
                    "{where_}: the dictionary message has no dictionary batch"
                ));
            };
            let id = dict.id();
            let Some(value) = known.dictionaries.get(&id) else {
                return refuse(format!("{where_}: dictionary id {id} is not in the schema"));
            };
            let Some(batch) = dict.data() else {
                return refuse(format!("{where_}: dictionary {id} has no data"));
            };
            let fields = vec![(format!("dictionary {id}"), value.clone())];
            plan_batch(batch, &fields, body_len, version, limits, where_).map(Some)
        }
        // Anything else (tensors) is arrow-ipc's to refuse; its body is within the limit.
        _ => Ok(None),
    }
}

fn message_name(batches: u64, dictionaries: u64, header: MessageHeader) -> String {
    match header {
        MessageHeader::RecordBatch => format!("record batch {batches}"),
        MessageHeader::DictionaryBatch => format!("dictionary batch {dictionaries}"),
        MessageHeader::Schema => "the schema message".to_string(),
        other => format!("message {other:?}"),
    }
}

#[derive(Debug)]
enum Phase {
    Header,
    Body { left: u64, pos: u64 },
    Ended,
}

/// An in-progress prefix check: the bytes of the prefix seen so far.
#[derive(Debug)]
struct Pending {
    check: PrefixCheck,
    bytes: [u8; 8],
}

/// Checks an Arrow IPC stream as it goes by (see the module docs).
#[derive(Debug)]
pub struct IpcStreamGuard {
    what: String,
    limits: IpcLimits,
    budget: Budget,
    known: Option<Known>,
    phase: Phase,
    header: Vec<u8>,
    /// Prefix checks of the current body, by offset.
    checks: Vec<Pending>,
    next_check: usize,
    batches: u64,
    dictionaries: u64,
    current: String,
}

enum Want {
    More(usize),
    End,
    Message { prefix: usize, len: usize },
}

impl IpcStreamGuard {
    /// A guard for the stream of `what` (`the TableWrite body`), named in its errors.
    pub fn new(what: impl Into<String>, limits: IpcLimits) -> Self {
        IpcStreamGuard {
            what: what.into(),
            limits,
            budget: Budget::new(limits),
            known: None,
            phase: Phase::Header,
            header: Vec::new(),
            checks: Vec::new(),
            next_check: 0,
            batches: 0,
            dictionaries: 0,
            current: String::new(),
        }
    }

    /// The decoded bytes the stream declared so far (uncompressed buffers plus the declared
    /// lengths of compressed ones).
    pub fn declared_bytes(&self) -> u64 {
        self.budget.total
    }

    /// Checks the next bytes of the stream. After an error the stream must not be decoded.
    pub fn feed(&mut self, mut input: &[u8]) -> GuardResult<()> {
        while !input.is_empty() {
            match self.phase {
                Phase::Ended => return Ok(()),
                Phase::Body { left, pos } => {
                    let n = (left.min(input.len() as u64)) as usize;
                    self.body(&input[..n], pos)?;
                    input = &input[n..];
                    let left = left - n as u64;
                    self.phase = Phase::Body {
                        left,
                        pos: pos + n as u64,
                    };
                    if left == 0 {
                        self.end_message()?;
                    }
                }
                Phase::Header => match self.want()? {
                    Want::More(n) => {
                        let take = (n - self.header.len()).min(input.len());
                        self.header.extend_from_slice(&input[..take]);
                        input = &input[take..];
                    }
                    Want::End => {
                        self.header.clear();
                        self.phase = Phase::Ended;
                    }
                    Want::Message { prefix, len } => self.message(prefix, len)?,
                },
            }
        }
        // A complete header (or end marker) needs no further byte to be acted on.
        if let Phase::Header = self.phase {
            match self.want()? {
                Want::End => {
                    self.header.clear();
                    self.phase = Phase::Ended;
                }
                Want::Message { prefix, len } => self.message(prefix, len)?,
                Want::More(_) => {}
            }
        }
        Ok(())
    }

    /// Whether the end-of-stream marker was seen.
    pub fn ended(&self) -> bool {
        matches!(self.phase, Phase::Ended)
    }

    /// Checks that the stream did not end inside a message.
    pub fn finish(&self) -> GuardResult<()> {
        match self.phase {
            Phase::Body { left, .. } => refuse(format!(
                "{}: {} is cut short ({left} bytes of its body are missing)",
                self.what, self.current
            )),
            Phase::Header if !self.header.is_empty() => refuse(format!(
                "{}: the stream ends inside a message header",
                self.what
            )),
            _ => Ok(()),
        }
    }

    fn where_(&self) -> String {
        format!("{}: {}", self.what, self.current)
    }

    fn want(&self) -> GuardResult<Want> {
        let h = &self.header;
        if h.len() < 4 {
            return Ok(Want::More(4));
        }
        let (prefix, len_bytes) = if h[..4] == CONTINUATION {
            if h.len() < 8 {
                return Ok(Want::More(8));
            }
            (8, [h[4], h[5], h[6], h[7]])
        } else {
            (4, [h[0], h[1], h[2], h[3]])
        };
        let len = i32::from_le_bytes(len_bytes);
        if len == 0 {
            return Ok(Want::End);
        }
        if len < 0 || len as u64 > MAX_METADATA_BYTES {
            return refuse(format!(
                "{}: message {} declares {len} bytes of metadata (at most {MAX_METADATA_BYTES})",
                self.what,
                self.batches + self.dictionaries + 1
            ));
        }
        let len = len as usize;
        if h.len() < prefix + len {
            Ok(Want::More(prefix + len))
        } else {
            Ok(Want::Message { prefix, len })
        }
    }

    fn message(&mut self, prefix: usize, len: usize) -> GuardResult<()> {
        let header = std::mem::take(&mut self.header);
        let message = arrow_ipc::root_as_message(&header[prefix..prefix + len]).map_err(|e| {
            IpcGuardError(format!(
                "{}: the metadata after {} is not a valid message: {e}",
                self.what,
                if self.current.is_empty() {
                    "the start"
                } else {
                    &self.current
                }
            ))
        })?;
        let kind = message.header_type();
        self.current = message_name(self.batches, self.dictionaries, kind);
        match kind {
            MessageHeader::RecordBatch => self.batches += 1,
            MessageHeader::DictionaryBatch => self.dictionaries += 1,
            _ => {}
        }
        let where_ = self.where_();
        let body_len = message.bodyLength();
        if body_len < 0 || body_len as u64 > self.limits.max_message_bytes {
            return refuse(format!(
                "{where_}: declares a {body_len}-byte body (the limit is {})",
                self.limits.max_message_bytes
            ));
        }
        let body_len = body_len as u64;
        self.budget.start_message();
        let plan = plan_message(message, &mut self.known, body_len, &self.limits, &where_)?;
        let mut checks = Vec::new();
        if let Some(plan) = plan {
            self.budget
                .add(plan.plain, &where_, "its uncompressed buffers")?;
            checks = plan.checks;
        }
        checks.sort_by_key(|c| c.offset);
        self.checks = checks
            .into_iter()
            .map(|check| Pending {
                check,
                bytes: [0; 8],
            })
            .collect();
        self.next_check = 0;
        self.phase = Phase::Body {
            left: body_len,
            pos: 0,
        };
        if body_len == 0 {
            self.end_message()?;
        }
        Ok(())
    }

    /// Collects the length prefixes that lie in `chunk`, which starts at body offset `start`.
    fn body(&mut self, chunk: &[u8], start: u64) -> GuardResult<()> {
        let end = start + chunk.len() as u64;
        let mut i = self.next_check;
        while i < self.checks.len() && self.checks[i].check.offset < end {
            let p = &mut self.checks[i];
            let (lo, hi) = (p.check.offset.max(start), (p.check.offset + 8).min(end));
            if lo < hi {
                let src = &chunk[(lo - start) as usize..(hi - start) as usize];
                let at = (lo - p.check.offset) as usize;
                p.bytes[at..at + src.len()].copy_from_slice(src);
            }
            i += 1;
        }
        // Prefixes are 8 bytes at ascending offsets, so they complete in order.
        while self.next_check < self.checks.len()
            && self.checks[self.next_check].check.offset + 8 <= end
        {
            let where_ = self.where_();
            let p = &self.checks[self.next_check];
            self.budget.prefix(&p.check, p.bytes, &where_)?;
            self.next_check += 1;
        }
        Ok(())
    }

    fn end_message(&mut self) -> GuardResult<()> {
        if self.next_check < self.checks.len() {
            return refuse(format!(
                "{}: a compressed buffer's length prefix lies outside the body",
                self.where_()
            ));
        }
        self.checks.clear();
        self.next_check = 0;
        self.phase = Phase::Header;
        Ok(())
    }
}

/// Checks a whole in-memory IPC stream.
pub fn check_stream(bytes: &[u8], what: &str, limits: IpcLimits) -> GuardResult<u64> {
    let mut guard = IpcStreamGuard::new(what, limits);
    guard.feed(bytes)?;
    guard.finish()?;
    Ok(guard.declared_bytes())
}

/// A reader that passes every byte through an [`IpcStreamGuard`] before handing it on; a
/// refusal is an `InvalidData` I/O error carrying the guard's message.
#[derive(Debug)]
pub struct GuardedReader<R> {
    inner: R,
    guard: IpcStreamGuard,
}

impl<R: Read> GuardedReader<R> {
    pub fn new(inner: R, guard: IpcStreamGuard) -> Self {
        GuardedReader { inner, guard }
    }
}

impl<R: Read> Read for GuardedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.guard
            .feed(&buf[..n])
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok(n)
    }
}

/// Checks an IPC file: its footer, and every dictionary and record batch block the footer
/// points at (the messages a file reader decodes). Reads only metadata and length prefixes.
pub fn check_file<R: Read + Seek>(file: &mut R, what: &str, limits: IpcLimits) -> GuardResult<()> {
    let io = |e: std::io::Error| IpcGuardError(format!("{what}: {e}"));
    let len = file.seek(SeekFrom::End(0)).map_err(io)?;
    if len < 18 {
        return refuse(format!(
            "{what}: {len} bytes is too short for an Arrow IPC file"
        ));
    }
    let mut tail = [0u8; 10];
    file.seek(SeekFrom::Start(len - 10)).map_err(io)?;
    file.read_exact(&mut tail).map_err(io)?;
    if &tail[4..] != b"ARROW1" {
        return refuse(format!(
            "{what}: the file does not end with the Arrow magic"
        ));
    }
    let footer_len = i32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    if footer_len <= 0 || footer_len as u64 > MAX_METADATA_BYTES || footer_len as u64 > len - 18 {
        return refuse(format!(
            "{what}: the footer length {footer_len} does not fit the {len}-byte file"
        ));
    }
    let mut footer_bytes = vec![0u8; footer_len as usize];
    file.seek(SeekFrom::Start(len - 10 - footer_len as u64))
        .map_err(io)?;
    file.read_exact(&mut footer_bytes).map_err(io)?;
    let footer = arrow_ipc::root_as_footer(&footer_bytes)
        .map_err(|e| IpcGuardError(format!("{what}: the footer is not valid: {e}")))?;
    let Some(schema) = footer.schema() else {
        return refuse(format!("{what}: the footer has no schema"));
    };
    let mut known = Some(Known::new(schema, what)?);
    let mut budget = Budget::new(limits);
    let kinds = [
        ("dictionary block", footer.dictionaries()),
        ("record batch block", footer.recordBatches()),
    ];
    for (kind, blocks) in kinds {
        for (i, block) in blocks.into_iter().flatten().enumerate() {
            let where_ = format!("{what}: {kind} {i}");
            let (offset, meta_len, body_len) =
                (block.offset(), block.metaDataLength(), block.bodyLength());
            let end = (offset as i128) + (meta_len as i128) + (body_len as i128);
            if offset < 0
                || meta_len < 8
                || meta_len as u64 > MAX_METADATA_BYTES
                || body_len < 0
                || end > len as i128
            {
                return refuse(format!(
                    "{where_} (offset {offset}, metadata {meta_len} bytes, body {body_len} bytes) does not fit the \
                     {len}-byte file"
                ));
            }
            if body_len as u64 > limits.max_message_bytes {
                return refuse(format!(
                    "{where_}: declares a {body_len}-byte body (the limit is {})",
                    limits.max_message_bytes
                ));
            }
            let mut meta = vec![0u8; meta_len as usize];
            file.seek(SeekFrom::Start(offset as u64)).map_err(io)?;
            file.read_exact(&mut meta).map_err(io)?;
            let start = if meta[..4] == CONTINUATION { 8 } else { 4 };
            let message = arrow_ipc::root_as_message(&meta[start..]).map_err(|e| {
                IpcGuardError(format!(
                    "{where_}: the metadata is not a valid message: {e}"
                ))
            })?;
            let expected = if kind == "dictionary block" {
                MessageHeader::DictionaryBatch
            } else {
                MessageHeader::RecordBatch
            };
            if message.header_type() != expected {
                return refuse(format!(
                    "{where_} points at a {:?} message",
                    message.header_type()
                ));
            }
            // Only batch messages get here, so the schema is never replaced.
            let plan = plan_message(message, &mut known, body_len as u64, &limits, &where_)?
                .unwrap_or_default();
            budget.start_message();
            budget.add(plan.plain, &where_, "its uncompressed buffers")?;
            let body_start = offset as u64 + meta_len as u64;
            for check in &plan.checks {
                let mut prefix = [0u8; 8];
                file.seek(SeekFrom::Start(body_start + check.offset))
                    .map_err(io)?;
                file.read_exact(&mut prefix).map_err(io)?;
                budget.prefix(check, prefix, &where_)?;
            }
        }
    }
    Ok(())
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic into `Err(its message)` without the panic hook's report (the
/// caller logs one line instead). Other threads' panics are reported as usual.
pub fn catch_quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    result.map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".to_string())
    })
}

/// The byte positions, in an IPC stream, of every non-empty buffer's 8-byte length prefix
/// in its record batches that use buffer compression (for tests and tools that craft or
/// inspect streams). Stops at the first malformed message.
pub fn compressed_prefix_positions(stream: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= stream.len() {
        let (prefix, len) = if stream[pos..pos + 4] == CONTINUATION {
            (
                8,
                i32::from_le_bytes([
                    stream[pos + 4],
                    stream[pos + 5],
                    stream[pos + 6],
                    stream[pos + 7],
                ]),
            )
        } else {
            (
                4,
                i32::from_le_bytes([
                    stream[pos],
                    stream[pos + 1],
                    stream[pos + 2],
                    stream[pos + 3],
                ]),
            )
        };
        if len <= 0 || pos + prefix + len as usize > stream.len() {
            break;
        }
        let meta = &stream[pos + prefix..pos + prefix + len as usize];
        let Ok(message) = arrow_ipc::root_as_message(meta) else {
            break;
        };
        let body = pos + prefix + len as usize;
        if let Some(batch) = message.header_as_record_batch()
            && batch.compression().is_some()
        {
            for b in batch.buffers().into_iter().flatten() {
                if b.length() >= 8 {
                    out.push(body + b.offset() as usize);
                }
            }
        }
        pos = body + message.bodyLength().max(0) as usize;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int64Array, RecordBatch, StringArray};
    use arrow_ipc::writer::{FileWriter, IpcWriteOptions, StreamWriter};
    use arrow_schema::Schema;

    use super::*;

    fn batch(rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let a = Int64Array::from_iter((0..rows).map(|i| (i % 7 != 0).then_some(i)));
        let s = StringArray::from_iter_values((0..rows).map(|i| format!("v{i}")));
        RecordBatch::try_new(schema, vec![Arc::new(a), Arc::new(s)]).unwrap()
    }

    fn options(codec: Option<arrow_ipc::CompressionType>) -> IpcWriteOptions {
        IpcWriteOptions::default()
            .try_with_compression(codec)
            .unwrap()
    }

    fn stream(codec: Option<arrow_ipc::CompressionType>) -> Vec<u8> {
        let b = batch(1000);
        let mut w =
            StreamWriter::try_new_with_options(Vec::new(), &b.schema(), options(codec)).unwrap();
        w.write(&b).unwrap();
        w.write(&b).unwrap();
        w.finish().unwrap();
        w.into_inner().unwrap()
    }

    const LIMITS: IpcLimits = IpcLimits {
        max_message_bytes: 1 << 20,
        max_total_bytes: Some(1 << 20),
        max_rows: 1 << 20,
    };

    #[test]
    fn valid_streams_pass_whole_and_byte_by_byte() {
        for codec in [
            None,
            Some(arrow_ipc::CompressionType::LZ4_FRAME),
            Some(arrow_ipc::CompressionType::ZSTD),
        ] {
            let s = stream(codec);
            let declared = check_stream(&s, "body", LIMITS).unwrap();
            assert!(declared >= 2 * 8000, "{codec:?}: {declared}");
            let mut g = IpcStreamGuard::new("body", LIMITS);
            for b in &s {
                g.feed(std::slice::from_ref(b)).unwrap();
            }
            g.finish().unwrap();
            assert_eq!(g.declared_bytes(), declared);
            // Cut short: refused at the end.
            assert!(check_stream(&s[..s.len() - 30], "body", LIMITS).is_err());
        }
    }

    #[test]
    fn huge_declared_lengths_are_refused() {
        for codec in [
            arrow_ipc::CompressionType::LZ4_FRAME,
            arrow_ipc::CompressionType::ZSTD,
        ] {
            let s = stream(Some(codec));
            let positions = compressed_prefix_positions(&s);
            assert!(positions.len() >= 4, "{positions:?}");
            for &p in &positions {
                let mut bad = s.clone();
                bad[p..p + 8].copy_from_slice(&(1i64 << 62).to_le_bytes());
                let e = check_stream(&bad, "the TableWrite body", LIMITS)
                    .unwrap_err()
                    .0;
                assert!(
                    e.contains("record batch") && e.contains("4611686018427387904"),
                    "{e}"
                );
                let mut neg = s.clone();
                neg[p..p + 8].copy_from_slice(&(-5i64).to_le_bytes());
                assert!(check_stream(&neg, "body", LIMITS).is_err());
            }
            // The values of 1000 Int64 rows: 8000 bytes (+ padding) is fine, 9000 is not.
            let values = positions[1];
            let mut bad = s.clone();
            bad[values..values + 8].copy_from_slice(&9000i64.to_le_bytes());
            let e = check_stream(&bad, "body", LIMITS).unwrap_err().0;
            assert!(
                e.contains("column `a` (Int64, 1000 values)") && e.contains("values"),
                "{e}"
            );
        }
    }

    #[test]
    fn totals_rows_and_bodies_are_bounded() {
        let s = stream(None);
        let small = IpcLimits {
            max_message_bytes: 1 << 20,
            max_total_bytes: Some(20_000),
            max_rows: 1 << 20,
        };
        assert!(
            check_stream(&s, "body", small)
                .unwrap_err()
                .0
                .contains("over the limit of 20000")
        );
        let few_rows = IpcLimits {
            max_rows: 999,
            ..LIMITS
        };
        assert!(
            check_stream(&s, "body", few_rows)
                .unwrap_err()
                .0
                .contains("1000 rows")
        );
        // Every bit flip of the stream is either refused, or decodes (or fails, or panics,
        // which the quiet catch turns into an error) within the limits: nothing aborts.
        for i in 0..s.len() {
            for bit in [0u8, 3, 7] {
                let mut bad = s.clone();
                bad[i] ^= 1 << bit;
                if check_stream(&bad, "body", LIMITS).is_ok() {
                    let _ = catch_quietly(|| {
                        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(&bad), None)
                            .map(|r| r.count())
                    });
                }
            }
        }
    }

    #[test]
    fn files_are_checked_through_their_footer() {
        let b = batch(1000);
        let mut w = FileWriter::try_new_with_options(
            Vec::new(),
            &b.schema(),
            options(Some(arrow_ipc::CompressionType::LZ4_FRAME)),
        )
        .unwrap();
        w.write(&b).unwrap();
        w.finish().unwrap();
        let file = w.into_inner().unwrap();
        check_file(&mut std::io::Cursor::new(&file), "f.arrow", LIMITS).unwrap();
        // The stream part of a file starts after the magic and its padding.
        let start = file.iter().position(|b| *b == 0xFF).unwrap();
        let positions = compressed_prefix_positions(&file[start..]);
        assert!(!positions.is_empty());
        let mut bad = file.clone();
        let p = positions[0] + start;
        bad[p..p + 8].copy_from_slice(&(1i64 << 62).to_le_bytes());
        let e = check_file(&mut std::io::Cursor::new(&bad), "f.arrow", LIMITS)
            .unwrap_err()
            .0;
        assert!(
            e.contains("record batch block 0") && e.contains("4611686018427387904"),
            "{e}"
        );
        assert!(
            check_file(
                &mut std::io::Cursor::new(&file[..file.len() - 3]),
                "f",
                LIMITS
            )
            .is_err()
        );
    }

    #[test]
    fn quiet_catch_returns_the_message() {
        let r: Result<(), String> = catch_quietly(|| panic!("boom {}", 1));
        assert_eq!(r.unwrap_err(), "boom 1");
        assert_eq!(catch_quietly(|| 5).unwrap(), 5);
    }
}

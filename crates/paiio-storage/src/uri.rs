//! Table names, partition specs and `odps://` URIs.
//!
//! `odps://project/tables/[schema.]table[/k=v[/k2=v2]]` names a table or one partition of it.
//! Every name is validated before it is used for anything, and the error names the bad part:
//! names become directory names in the local warehouse, so nothing that could escape it
//! (`..`, `/`, `\`, NUL, control characters) is ever accepted.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The schema a table is in when none is given.
pub const DEFAULT_SCHEMA: &str = "default";

/// The longest accepted project, schema, table, column or partition-key name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// The longest accepted partition value, in bytes.
pub const MAX_PARTITION_VALUE_LEN: usize = 255;

/// Checks a project, schema, table, column or partition-key name.
///
/// `kind` names what is checked ("table name", "column name", ...) in the error.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let bad = |why: String| Err(Error::invalid(kind, format!("{:?}: {why}", name)));
    if name.is_empty() {
        return bad("must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return bad(format!(
            "is {} bytes long, the limit is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    check_chars(name).or_else(bad)?;
    if name.starts_with('.') {
        return bad("must not start with '.'".into());
    }
    if name.contains('=') || name.contains(',') {
        return bad("must not contain '=' or ','".into());
    }
    if name.contains('`') || name.contains('\'') || name.contains('"') {
        return bad("must not contain quotes".into());
    }
    Ok(())
}

/// Checks a partition value: any text but path separators, `..`, NUL and control characters.
pub fn validate_partition_value(key: &str, value: &str) -> Result<()> {
    let what = format!("value of partition key `{key}`");
    let bad = |why: String| Err(Error::invalid(what.clone(), format!("{:?}: {why}", value)));
    if value.is_empty() {
        return bad("must not be empty".into());
    }
    if value.len() > MAX_PARTITION_VALUE_LEN {
        return bad(format!(
            "is {} bytes long, the limit is {MAX_PARTITION_VALUE_LEN}",
            value.len()
        ));
    }
    check_chars(value).or_else(bad)?;
    if value == "." {
        return bad("must not be '.'".into());
    }
    if value.contains('=') || value.contains(',') {
        return bad("must not contain '=' or ','".into());
    }
    Ok(())
}

fn check_chars(s: &str) -> std::result::Result<(), String> {
    if s.contains("..") {
        return Err("must not contain '..'".into());
    }
    for c in s.chars() {
        match c {
            '/' => return Err("must not contain '/'".into()),
            '\\' => return Err("must not contain '\\'".into()),
            '\0' => return Err("must not contain NUL".into()),
            c if c.is_control() => {
                return Err(format!(
                    "must not contain the control character U+{:04X}",
                    c as u32
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A table: project, optional schema, name. Schema and table names are case-insensitive
/// and kept in lower case, as MaxCompute does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(try_from = "RawTableId")]
pub struct TableId {
    pub project: String,
    pub schema: Option<String>,
    pub table: String,
}

/// The serialized form, validated on the way in.
#[derive(Deserialize)]
struct RawTableId {
    project: String,
    schema: Option<String>,
    table: String,
}

impl TryFrom<RawTableId> for TableId {
    type Error = Error;
    fn try_from(raw: RawTableId) -> Result<Self> {
        TableId::new(&raw.project, raw.schema.as_deref(), &raw.table)
    }
}

impl TableId {
    /// A validated table id. The schema `default` is the same as no schema.
    pub fn new(project: &str, schema: Option<&str>, table: &str) -> Result<Self> {
        validate_name("project name", project)?;
        if let Some(s) = schema {
            validate_name("schema name", s)?;
        }
        validate_name("table name", table)?;
        Ok(TableId {
            project: project.to_string(),
            schema: schema
                .map(|s| s.to_ascii_lowercase())
                .filter(|s| s != DEFAULT_SCHEMA),
            table: table.to_ascii_lowercase(),
        })
    }

    /// Checks the names of an id that was built field by field (the fields are public).
    pub fn validate(&self) -> Result<()> {
        validate_name("project name", &self.project)?;
        if let Some(s) = &self.schema {
            validate_name("schema name", s)?;
        }
        validate_name("table name", &self.table)
    }

    /// Parses `table`, `schema.table` (within `project`).
    pub fn parse_in(project: &str, name: &str) -> Result<Self> {
        if name.contains("..") {
            return Err(Error::invalid(
                "table name",
                format!("{name:?}: must not contain '..'"),
            ));
        }
        match name.split_once('.') {
            Some((schema, table)) => TableId::new(project, Some(schema), table),
            None => TableId::new(project, None, name),
        }
    }

    /// The schema, or `default`.
    pub fn schema_or_default(&self) -> &str {
        self.schema.as_deref().unwrap_or(DEFAULT_SCHEMA)
    }

    /// The Storage API V2 target: `projects.P[.schemas.S].tables.T`.
    pub fn target(&self) -> String {
        match &self.schema {
            Some(s) => format!(
                "projects.{}.schemas.{}.tables.{}",
                self.project, s, self.table
            ),
            None => format!("projects.{}.tables.{}", self.project, self.table),
        }
    }

    /// Parses a Storage API V2 target: `projects.P[.schemas.S].tables.T`.
    pub fn parse_target(target: &str) -> Result<Self> {
        let parts: Vec<&str> = target.split('.').collect();
        match parts.as_slice() {
            ["projects", p, "schemas", s, "tables", t] => TableId::new(p, Some(s), t),
            ["projects", p, "tables", t] => TableId::new(p, None, t),
            _ => Err(Error::invalid(
                "target",
                format!(
                    "{target:?} (expected projects.P.tables.T or projects.P.schemas.S.tables.T)"
                ),
            )),
        }
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{}.{}.{}", self.project, s, self.table),
            None => write!(f, "{}.{}", self.project, self.table),
        }
    }
}

/// A partition spec: ordered `key=value` pairs. Parsed from `k=v,k2=v2` or `k=v/k2=v2`
/// (values may be quoted with `'` or `"`); printed as `k=v,k2=v2`, or as a path with
/// [`PartitionSpec::to_path`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PartitionSpec(Vec<(String, String)>);

impl PartitionSpec {
    /// The empty spec (a whole table).
    pub fn empty() -> Self {
        PartitionSpec(Vec::new())
    }

    /// A validated spec from pairs. Keys are kept in lower case.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in pairs {
            let (k, v) = (k.as_ref(), v.as_ref());
            validate_name("partition key", k)?;
            validate_partition_value(k, v)?;
            let k = k.to_ascii_lowercase();
            if out.iter().any(|(e, _)| *e == k) {
                return Err(Error::invalid(
                    "partition spec",
                    format!("key `{k}` appears twice"),
                ));
            }
            out.push((k, v.to_string()));
        }
        Ok(PartitionSpec(out))
    }

    /// Parses `k=v,k2=v2` or `k=v/k2=v2`. An empty string is the empty spec.
    pub fn parse(spec: &str) -> Result<Self> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Ok(PartitionSpec::empty());
        }
        let mut pairs = Vec::new();
        for part in spec.split([',', '/']) {
            let part = part.trim();
            if part.is_empty() {
                return Err(Error::invalid(
                    "partition spec",
                    format!("{spec:?} has an empty level"),
                ));
            }
            let Some((k, v)) = part.split_once('=') else {
                return Err(Error::invalid(
                    "partition spec",
                    format!("{spec:?}: level {part:?} is not key=value"),
                ));
            };
            pairs.push((k.trim().to_string(), unquote(v.trim()).to_string()));
        }
        PartitionSpec::from_pairs(pairs)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// `k=v/k2=v2`, the form used in URIs and directory names.
    pub fn to_path(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Whether every pair of `self` is in `other` (so `pt=1` matches `pt=1/region=x`).
    pub fn matches(&self, other: &PartitionSpec) -> bool {
        self.0.iter().all(|(k, v)| other.get(k) == Some(v.as_str()))
    }

    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.0
    }
}

fn unquote(v: &str) -> &str {
    for q in ['\'', '"'] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

impl fmt::Display for PartitionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self
            .0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        f.write_str(&s)
    }
}

impl FromStr for PartitionSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        PartitionSpec::parse(s)
    }
}

impl TryFrom<String> for PartitionSpec {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        PartitionSpec::parse(&s)
    }
}

impl From<PartitionSpec> for String {
    fn from(p: PartitionSpec) -> String {
        p.to_string()
    }
}

/// `odps://project/tables/[schema.]table[/k=v[/k2=v2]]`: a table, or one partition of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableUri {
    pub table: TableId,
    /// The partition named in the URI; empty for a whole table.
    pub partition: PartitionSpec,
}

impl TableUri {
    pub const SCHEME: &'static str = "odps://";

    pub fn new(table: TableId, partition: PartitionSpec) -> Self {
        TableUri { table, partition }
    }

    /// Parses one URI.
    pub fn parse(uri: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid("table URI", format!("{uri:?}: {why}"));
        let trimmed = uri.trim();
        let rest = trimmed
            .strip_prefix(Self::SCHEME)
            .ok_or_else(|| bad("must start with odps://"))?;
        let rest = rest.trim_end_matches('/');
        let mut parts = rest.splitn(3, "/tables/");
        let project = parts.next().unwrap_or_default();
        let after = parts
            .next()
            .ok_or_else(|| bad("expected odps://PROJECT/tables/[SCHEMA.]TABLE[/key=value...]"))?;
        if project.is_empty() {
            return Err(bad("the project is missing"));
        }
        if project.contains('/') {
            return Err(bad(
                "expected odps://PROJECT/tables/..., the project has a '/'",
            ));
        }
        // A literal "/tables/" after the table name can only be a partition value.
        let after = match parts.next() {
            Some(more) => format!("{after}/tables/{more}"),
            None => after.to_string(),
        };
        let (name, partition) = match after.split_once('/') {
            Some((name, partition)) => (name, partition),
            None => (after.as_str(), ""),
        };
        if name.is_empty() {
            return Err(bad("the table name is missing"));
        }
        let table = TableId::parse_in(project, name)?;
        let partition = PartitionSpec::parse(partition)?;
        Ok(TableUri { table, partition })
    }

    /// Parses one or several comma-separated URIs (`odps://p/tables/a,odps://p/tables/b`).
    /// Commas inside a partition part belong to that URI (`.../pt=1,region=x`).
    pub fn parse_list(uris: &str) -> Result<Vec<Self>> {
        let parts = Self::split_list(uris);
        if parts.is_empty() {
            return Err(Error::invalid("table URI", "no table given"));
        }
        parts.iter().map(|p| TableUri::parse(p)).collect()
    }

    /// The URIs of a comma-separated list as written (trimmed), without parsing them: a new
    /// URI starts at each piece that starts with `odps://`; other pieces continue the one
    /// before (the commas of a partition part).
    pub fn split_list(uris: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for piece in uris.split(',').map(str::trim) {
            match out.last_mut() {
                Some(current) if !piece.starts_with(Self::SCHEME) => {
                    current.push(',');
                    current.push_str(piece);
                }
                None if piece.is_empty() => {}
                _ => out.push(piece.to_string()),
            }
        }
        out
    }
}

impl fmt::Display for TableUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "odps://{}/tables/", self.table.project)?;
        if let Some(s) = &self.table.schema {
            write!(f, "{s}.")?;
        }
        f.write_str(&self.table.table)?;
        if !self.partition.is_empty() {
            write!(f, "/{}", self.partition.to_path())?;
        }
        Ok(())
    }
}

impl FromStr for TableUri {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        TableUri::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_plain_schema_and_partitions() {
        let u = TableUri::parse("odps://proj/tables/t1").unwrap();
        assert_eq!(u.table, TableId::new("proj", None, "t1").unwrap());
        assert!(u.partition.is_empty());

        let u = TableUri::parse("odps://proj/tables/s1.T1/pt=1/region=x").unwrap();
        assert_eq!(u.table.schema.as_deref(), Some("s1"));
        assert_eq!(u.table.table, "t1");
        assert_eq!(u.partition.to_string(), "pt=1,region=x");
        assert_eq!(u.to_string(), "odps://proj/tables/s1.t1/pt=1/region=x");

        let u = TableUri::parse("odps://proj/tables/t/pt=1,region=x").unwrap();
        assert_eq!(u.partition.get("region"), Some("x"));
        let u = TableUri::parse("odps://proj/tables/t/pt='2024-01-01'").unwrap();
        assert_eq!(u.partition.get("pt"), Some("2024-01-01"));
    }

    #[test]
    fn rejects_bad_names_naming_the_part() {
        for (uri, part) in [
            ("odps://p/tables/../etc", "table name"),
            ("odps://p/tables/a\\b", "table name"),
            ("odps://p/tables/a\u{0}b", "table name"),
            ("odps://p/tables/a\u{7}b", "table name"),
            ("odps://../tables/t", "project name"),
            ("odps://p/tables/t/pt=..", "partition key `pt`"),
            ("odps://p/tables/t/pt", "partition spec"),
            ("odps://p/tables/t/pt=1/pt=2", "partition spec"),
            ("odps://p/tables/x..y.t", "table name"),
            ("odps://p/tables/.s.t", "schema name"),
            ("http://p/tables/t", "table URI"),
            ("odps://p/t", "table URI"),
        ] {
            let err = TableUri::parse(uri).unwrap_err().to_string();
            assert!(err.contains(part), "{uri}: {err}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        let err = TableUri::parse(&format!("odps://p/tables/{long}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("table name") && err.contains("limit"), "{err}");
    }

    #[test]
    fn lists_split_on_uris_not_on_partition_commas() {
        let l = TableUri::parse_list("odps://p/tables/a/pt=1,x=2, odps://p/tables/b").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].partition.to_string(), "pt=1,x=2");
        assert_eq!(l[1].table.table, "b");
    }

    #[test]
    fn targets_round_trip() {
        for t in ["projects.p.tables.t", "projects.p.schemas.s.tables.t"] {
            assert_eq!(TableId::parse_target(t).unwrap().target(), t);
        }
        assert!(TableId::parse_target("projects.p.tablez.t").is_err());
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_]{0,20}"
    }
    fn value() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_ :.-]{1,20}"
            .prop_filter("no ..", |v| !v.contains("..") && v != "." && v.trim() == v)
    }

    proptest! {
        #[test]
        fn print_parse_round_trip(
            project in name(), schema in proptest::option::of(name()), table in name(),
            parts in proptest::collection::vec((name(), value()), 0..4),
        ) {
            let mut seen = std::collections::HashSet::new();
            let parts: Vec<_> = parts.into_iter().filter(|(k, _)| seen.insert(k.clone())).collect();
            let uri = TableUri::new(
                TableId::new(&project, schema.as_deref(), &table).unwrap(),
                PartitionSpec::from_pairs(parts).unwrap(),
            );
            let printed = uri.to_string();
            prop_assert_eq!(TableUri::parse(&printed).unwrap(), uri.clone());
            let spec = uri.partition.to_string();
            prop_assert_eq!(PartitionSpec::parse(&spec).unwrap(), uri.partition);
        }
    }
}

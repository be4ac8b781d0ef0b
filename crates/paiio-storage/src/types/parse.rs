//! Type strings and column lists: the recursive-descent parser behind [`OdpsType`]'s
//! [`FromStr`] and [`TableSchema::parse_columns`], and the canonical printing
//! ([`Display`](fmt::Display)) that parses back to the same value.

use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::str::FromStr;

use super::{
    Column, MAX_CHAR_LENGTH, MAX_TYPE_DEPTH, MAX_VARCHAR_LENGTH, OdpsType, StructField,
    TableSchema, check_decimal, check_field_name, check_length, too_deep,
};
use crate::error::{Error, Result};

/// Whether `name` can be written without backquotes: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Writes a struct field or column name as MaxCompute DDL expects it: bare if it is a plain
/// identifier, else between backquotes with any backquote doubled.
fn write_identifier(out: &mut impl fmt::Write, name: &str) -> fmt::Result {
    if is_plain_identifier(name) {
        out.write_str(name)
    } else {
        out.write_char('`')?;
        out.write_str(&name.replace('`', "``"))?;
        out.write_char('`')
    }
}

/// Prints the canonical type string: lowercase, no spaces, struct field names backquoted
/// when they are not plain identifiers. Parsing it gives back the same type.
impl fmt::Display for OdpsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OdpsType::Decimal(Some((precision, scale))) => {
                write!(f, "decimal({precision},{scale})")
            }
            OdpsType::Varchar(length) => write!(f, "varchar({length})"),
            OdpsType::Char(length) => write!(f, "char({length})"),
            OdpsType::Array(element) => write!(f, "array<{element}>"),
            OdpsType::Map(key, value) => write!(f, "map<{key},{value}>"),
            OdpsType::Struct(fields) => {
                f.write_str("struct<")?;
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write_identifier(f, &field.name)?;
                    write!(f, ":{}", field.ty)?;
                }
                f.write_char('>')
            }
            other => f.write_str(other.name()),
        }
    }
}

/// Parses a type string such as `map<string, array<decimal(10,2)>>`: case-insensitive,
/// whitespace allowed between any two tokens, nested to any depth, struct field names bare
/// or backquoted. Only the canonical type names are accepted (no `integer` or `bool`), as
/// MaxCompute itself accepts no aliases; `decimal(p)` means `decimal(p,0)`. Type names are
/// case-insensitive but struct field names keep their case (their uniqueness is checked
/// case-insensitively), so that a printed type parses back to the same value.
impl FromStr for OdpsType {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let mut parser = Parser::new(text);
        parser
            .parse_whole_type()
            .map_err(|e| e.into_error("type string", text))
    }
}

/// How many characters of a text a parse error quotes.
const MAX_QUOTED_TEXT: usize = 200;

/// A parse failure: what was expected, at which byte offset of the text.
struct ParseError {
    message: String,
    pos: usize,
}

impl ParseError {
    /// The user-facing error: the whole text, the message, and the position in characters
    /// (not bytes, so that it matches what an editor shows).
    fn into_error(self, what: &str, text: &str) -> Error {
        let position = text
            .get(..self.pos)
            .map_or(self.pos, |before| before.chars().count());
        // A very long text (a type nested thousands of levels deep) is shown by its start.
        let shown = if text.chars().count() > MAX_QUOTED_TEXT {
            let start: String = text.chars().take(MAX_QUOTED_TEXT).collect();
            format!("{start:?}... ({} characters)", text.chars().count())
        } else {
            format!("{text:?}")
        };
        Error::invalid(
            what,
            format!("{shown}: {} at position {position}", self.message),
        )
    }
}

type ParseResult<T> = std::result::Result<T, ParseError>;

/// A recursive-descent parser over type strings and column definitions. `pos` is a byte
/// offset that always lies on a character boundary.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
    /// How many ARRAY, MAP and STRUCT levels enclose the type being parsed.
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            text,
            pos: 0,
            depth: 0,
        }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn fail<T>(&self, pos: usize, message: impl Into<String>) -> ParseResult<T> {
        Err(ParseError {
            message: message.into(),
            pos,
        })
    }

    /// "expected X but found 'c'" (or just "expected X" at the end) at the current position.
    fn unexpected<T>(&self, expected: &str) -> ParseResult<T> {
        match self.rest().chars().next() {
            Some(found) => self.fail(self.pos, format!("expected {expected} but found '{found}'")),
            None => self.fail(self.pos, format!("expected {expected}")),
        }
    }

    fn skip_whitespace(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    /// The next character after any whitespace, without consuming it.
    fn peek(&mut self) -> Option<char> {
        self.skip_whitespace();
        self.rest().chars().next()
    }

    fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// Consumes `c` if it is the next character after any whitespace.
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> ParseResult<()> {
        if self.eat(c) {
            Ok(())
        } else {
            self.unexpected(&format!("'{c}'"))
        }
    }

    /// Skips whitespace, then consumes the longest run of characters matching `accept`,
    /// returning it (possibly empty) and where it starts.
    fn take_while(&mut self, accept: impl Fn(char) -> bool) -> (&'a str, usize) {
        self.skip_whitespace();
        let start = self.pos;
        let rest = self.rest();
        let len = rest.find(|c: char| !accept(c)).unwrap_or(rest.len());
        self.pos += len;
        (&rest[..len], start)
    }

    /// A keyword or type name: a non-empty run of ASCII letters, digits and underscores.
    fn keyword(&mut self, expected: &str) -> ParseResult<(&'a str, usize)> {
        let (word, start) = self.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
        if word.is_empty() {
            return self.unexpected(expected);
        }
        Ok((word, start))
    }

    /// A non-negative decimal number and where it starts.
    fn number(&mut self, expected: &str) -> ParseResult<(i64, usize)> {
        let (digits, start) = self.take_while(|c| c.is_ascii_digit());
        if digits.is_empty() {
            return self.unexpected(expected);
        }
        match digits.parse() {
            Ok(n) => Ok((n, start)),
            Err(_) => self.fail(start, format!("{expected} {digits} is too large")),
        }
    }

    /// A type followed by nothing but whitespace.
    fn parse_whole_type(&mut self) -> ParseResult<OdpsType> {
        let ty = self.parse_type()?;
        if !self.at_end() {
            return self.fail(
                self.pos,
                format!("unexpected trailing text {:?}", self.rest()),
            );
        }
        Ok(ty)
    }

    /// A type; a nested one (ARRAY, MAP, STRUCT) only within [`MAX_TYPE_DEPTH`], checked
    /// before its element types are parsed.
    fn parse_type(&mut self) -> ParseResult<OdpsType> {
        let (word, start) = self.keyword("a type name")?;
        let lower = word.to_ascii_lowercase();
        if !matches!(lower.as_str(), "array" | "map" | "struct") {
            return self.parse_primitive(&lower, word, start);
        }
        if self.depth >= MAX_TYPE_DEPTH {
            return self.fail(start, too_deep());
        }
        self.depth += 1;
        let ty = self.parse_nested(&lower);
        self.depth -= 1;
        ty
    }

    fn parse_primitive(&mut self, lower: &str, word: &str, start: usize) -> ParseResult<OdpsType> {
        let ty = match lower {
            "tinyint" => OdpsType::TinyInt,
            "smallint" => OdpsType::SmallInt,
            "int" => OdpsType::Int,
            "bigint" => OdpsType::BigInt,
            "float" => OdpsType::Float,
            "double" => OdpsType::Double,
            "boolean" => OdpsType::Boolean,
            "decimal" => self.parse_decimal_arguments()?,
            "string" => OdpsType::String,
            "varchar" => OdpsType::Varchar(self.parse_length("varchar", MAX_VARCHAR_LENGTH)?),
            "char" => OdpsType::Char(self.parse_length("char", MAX_CHAR_LENGTH)?),
            "binary" => OdpsType::Binary,
            "date" => OdpsType::Date,
            "datetime" => OdpsType::DateTime,
            "timestamp" => OdpsType::Timestamp,
            "timestamp_ntz" => OdpsType::TimestampNtz,
            "interval_day_time" => OdpsType::IntervalDayTime,
            "interval_year_month" => OdpsType::IntervalYearMonth,
            "json" => OdpsType::Json,
            "blob" => OdpsType::Blob,
            "variant" => return self.fail(start, "the VARIANT type is not supported"),
            _ => return self.fail(start, format!("unknown type '{word}'")),
        };
        Ok(ty)
    }

    /// The element types of an ARRAY, MAP or STRUCT, after its name.
    fn parse_nested(&mut self, kind: &str) -> ParseResult<OdpsType> {
        let ty = match kind {
            "array" => {
                self.expect('<')?;
                let element = self.parse_type()?;
                self.expect('>')?;
                OdpsType::Array(Box::new(element))
            }
            "map" => {
                self.expect('<')?;
                self.skip_whitespace();
                let key_pos = self.pos;
                let key = self.parse_type()?;
                if !key.is_primitive() {
                    return self.fail(
                        key_pos,
                        format!("map key type must be primitive, not {key}"),
                    );
                }
                self.expect(',')?;
                let value = self.parse_type()?;
                self.expect('>')?;
                OdpsType::Map(Box::new(key), Box::new(value))
            }
            _ => self.parse_struct_fields()?,
        };
        Ok(ty)
    }

    /// The optional `(p)` or `(p,s)` after `decimal`.
    fn parse_decimal_arguments(&mut self) -> ParseResult<OdpsType> {
        if !self.eat('(') {
            return Ok(OdpsType::Decimal(None));
        }
        let (precision, precision_pos) = self.number("a decimal precision")?;
        let (scale, scale_pos) = if self.eat(',') {
            self.number("a decimal scale")?
        } else {
            (0, precision_pos)
        };
        self.expect(')')?;
        if let Err(message) = check_decimal(precision, 0) {
            return self.fail(precision_pos, message);
        }
        match check_decimal(precision, scale) {
            Ok(precision_scale) => Ok(OdpsType::Decimal(Some(precision_scale))),
            Err(message) => self.fail(scale_pos, message),
        }
    }

    /// The mandatory `(n)` after `char` or `varchar`.
    fn parse_length(&mut self, kind: &str, max: u32) -> ParseResult<u32> {
        if !self.eat('(') {
            return self.unexpected(&format!("'(' and a length, as in {kind}(10)"));
        }
        let (length, pos) = self.number(&format!("a {kind} length"))?;
        self.expect(')')?;
        check_length(kind, length, max).or_else(|message| self.fail(pos, message))
    }

    /// `<name:type, ...>` after `struct`.
    fn parse_struct_fields(&mut self) -> ParseResult<OdpsType> {
        self.expect('<')?;
        let mut fields = Vec::new();
        let mut seen = HashSet::new();
        loop {
            let (name, name_pos) = self.field_name()?;
            if let Err(message) = check_field_name(&name, &mut seen) {
                return self.fail(name_pos, message);
            }
            self.expect(':')?;
            let ty = self.parse_type()?;
            fields.push(StructField { name, ty });
            if !self.eat(',') {
                self.expect('>')?;
                return Ok(OdpsType::Struct(fields));
            }
        }
    }

    /// A struct field name: backquoted, or a run of letters, digits and underscores.
    fn field_name(&mut self) -> ParseResult<(String, usize)> {
        if self.peek() == Some('`') {
            return self.quoted_identifier();
        }
        let (name, start) = self.take_while(|c| c.is_alphanumeric() || c == '_');
        if name.is_empty() {
            return self.unexpected("a struct field name");
        }
        Ok((name.to_string(), start))
    }

    /// A name between backquotes, in which a doubled backquote stands for one. The current
    /// character must be the opening backquote.
    fn quoted_identifier(&mut self) -> ParseResult<(String, usize)> {
        let start = self.pos;
        let mut name = String::new();
        let mut chars = self.rest().char_indices().skip(1).peekable();
        while let Some((offset, c)) = chars.next() {
            if c != '`' {
                name.push(c);
            } else if chars.next_if(|&(_, next)| next == '`').is_some() {
                name.push('`');
            } else {
                self.pos = start + offset + 1;
                return Ok((name, start));
            }
        }
        self.fail(start, "unclosed '`'")
    }

    /// A quoted comment: single or double quotes, with backslash escapes.
    fn quoted_string(&mut self) -> ParseResult<String> {
        let Some(quote @ ('\'' | '"')) = self.peek() else {
            return self.unexpected("a quoted comment");
        };
        let start = self.pos;
        let mut text = String::new();
        let mut chars = self.rest().char_indices().skip(1);
        while let Some((offset, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => text.push('\n'),
                    Some((_, 't')) => text.push('\t'),
                    Some((_, 'r')) => text.push('\r'),
                    Some((_, '0')) => text.push('\0'),
                    Some((_, escaped)) => text.push(escaped),
                    None => break,
                },
                c if c == quote => {
                    self.pos = start + offset + 1;
                    return Ok(text);
                }
                c => text.push(c),
            }
        }
        self.fail(start, format!("unclosed {quote}"))
    }

    /// `name type [NOT NULL | NULL] [COMMENT 'text']`, the options in any order.
    fn parse_column(&mut self) -> ParseResult<Column> {
        let (name, _) = if self.peek() == Some('`') {
            self.quoted_identifier()?
        } else {
            let (name, start) = self.take_while(|c| !c.is_whitespace());
            if name.is_empty() {
                return self.unexpected("a column name");
            }
            (name.to_string(), start)
        };
        let ty = self.parse_type()?;
        let mut column = Column {
            name,
            ty,
            nullable: true,
            comment: String::new(),
        };
        let mut has_comment = false;
        while !self.at_end() {
            let (word, pos) = self.keyword("NOT NULL or COMMENT")?;
            match word.to_ascii_lowercase().as_str() {
                "not" => {
                    let (null, null_pos) = self.keyword("NULL")?;
                    if !null.eq_ignore_ascii_case("null") {
                        return self.fail(null_pos, format!("expected NULL but found '{null}'"));
                    }
                    column.nullable = false;
                }
                "null" => column.nullable = true,
                "comment" if has_comment => return self.fail(pos, "duplicate COMMENT"),
                "comment" => {
                    column.comment = self.quoted_string()?;
                    has_comment = true;
                }
                _ => {
                    return self.fail(
                        pos,
                        format!("unexpected '{word}' after the type, expected NOT NULL or COMMENT"),
                    );
                }
            }
        }
        Ok(column)
    }
}

impl TableSchema {
    /// Parses a column list such as `id bigint, name string comment 'who', m map<string,
    /// bigint> not null`. Columns are split on commas outside `<>`, `()`, quotes and
    /// backquotes; each is a name (bare or backquoted), a type string, then optionally
    /// `NOT NULL` (or `NULL`) and `COMMENT 'text'`. Names are kept as written; [`new`]
    /// validates and lowercases them. Errors quote the bad column's text.
    ///
    /// [`new`]: Self::new
    pub fn parse_columns(text: &str) -> Result<Vec<Column>> {
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        split_top_level(text)
            .into_iter()
            .enumerate()
            .map(|(index, definition)| {
                let definition = definition.trim();
                if definition.is_empty() {
                    return Err(Error::invalid(
                        "column list",
                        format!("{text:?}: column {} is empty", index + 1),
                    ));
                }
                Parser::new(definition)
                    .parse_column()
                    .map_err(|e| e.into_error("column definition", definition))
            })
            .collect()
    }
}

/// Splits a column list on the commas that are outside `<>`, `()`, quotes and backquotes.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if let Some(open) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' && open != '`' {
                escaped = true;
            } else if c == open {
                quote = None;
            }
            continue;
        }
        match c {
            '`' | '\'' | '"' => quote = Some(c),
            '<' | '(' => depth += 1,
            '>' | ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Writes columns as [`TableSchema::parse_columns`] reads them back.
fn write_columns(f: &mut fmt::Formatter<'_>, columns: &[Column]) -> fmt::Result {
    for (i, column) in columns.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_identifier(f, &column.name)?;
        write!(f, " {}", column.ty)?;
        if !column.nullable {
            f.write_str(" not null")?;
        }
        if !column.comment.is_empty() {
            f.write_str(" comment '")?;
            for c in column.comment.chars() {
                match c {
                    '\'' => f.write_str("\\'")?,
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    '\t' => f.write_str("\\t")?,
                    '\0' => f.write_str("\\0")?,
                    c => f.write_char(c)?,
                }
            }
            f.write_char('\'')?;
        }
    }
    Ok(())
}

/// `id bigint, name string not null comment 'who'`, then ` partitioned by (pt string)` if
/// the table is partitioned. The column list reads back with
/// [`TableSchema::parse_columns`].
impl fmt::Display for TableSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_columns(f, &self.columns)?;
        if !self.partition_columns.is_empty() {
            f.write_str(" partitioned by (")?;
            write_columns(f, &self.partition_columns)?;
            f.write_char(')')?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::tests::*;
    use proptest::prelude::*;

    #[test]
    fn parses_odd_spacing_and_case() {
        use OdpsType as T;
        assert_eq!(
            parse(" ARRAY < Map< STRING , bigint > >"),
            array(map(T::String, T::BigInt))
        );
        assert_eq!(parse("\tDecimal ( 10 , 2 )\n"), T::Decimal(Some((10, 2))));
        assert_eq!(parse("decimal(10)"), T::Decimal(Some((10, 0))));
        assert_eq!(parse("decimal(38,38)"), T::Decimal(Some((38, 38))));
        assert_eq!(parse("VarChar( 65535 )"), T::Varchar(65535));
        assert_eq!(parse("char(255)"), T::Char(255));
        assert_eq!(parse("Timestamp_NTZ"), T::TimestampNtz);
        assert_eq!(
            parse("struct< a : int , `my field` : array< struct<x:string> >, Int:int >"),
            structure(&[
                ("a", T::Int),
                ("my field", array(structure(&[("x", T::String)]))),
                ("Int", T::Int),
            ])
        );
    }

    #[test]
    fn prints_canonical_strings_and_quotes_odd_field_names() {
        let ty = parse("STRUCT<`my field`:INT, `a``b`:map<string,array<decimal(5)>>, _x1:json>");
        assert_eq!(
            ty.to_string(),
            "struct<`my field`:int,`a``b`:map<string,array<decimal(5,0)>>,_x1:json>"
        );
        assert_eq!(parse(&ty.to_string()), ty);
        assert_eq!(parse("struct<`1a`:int>").to_string(), "struct<`1a`:int>");
        assert_eq!(parse("struct<é:int>").to_string(), "struct<`é`:int>");
    }

    #[test]
    fn rejects_bad_type_strings_naming_text_and_position() {
        let cases = [
            ("bigintt", "unknown type 'bigintt' at position 0"),
            ("", "expected a type name at position 0"),
            (
                "array<bigint",
                "\"array<bigint\": expected '>' at position 12",
            ),
            (
                "array<bigint,int>",
                "expected '>' but found ',' at position 12",
            ),
            ("map<string>", "expected ',' but found '>' at position 10"),
            (
                "decimal(40,2)",
                "decimal precision 40 is out of range 1..=38 at position 8",
            ),
            ("decimal(0)", "decimal precision 0 is out of range"),
            (
                "decimal(10,11)",
                "decimal scale 11 is out of range 0..=10 at position 11",
            ),
            ("decimal(10,", "expected a decimal scale at position 11"),
            ("decimal(99999999999999999999)", "too large"),
            (
                "varchar(0)",
                "varchar length 0 is out of range 1..=65535 at position 8",
            ),
            ("varchar(65536)", "varchar length 65536 is out of range"),
            (
                "varchar",
                "expected '(' and a length, as in varchar(10) at position 7",
            ),
            ("char(256)", "char length 256 is out of range 1..=255"),
            (
                "map<array<int>,int>",
                "map key type must be primitive, not array<int> at position 4",
            ),
            ("map<struct<a:int>,int>", "map key type must be primitive"),
            (
                "struct<a:int,A:string>",
                "duplicate struct field name \"A\" at position 13",
            ),
            (
                "struct<>",
                "expected a struct field name but found '>' at position 7",
            ),
            ("struct<``:int>", "struct field names must not be empty"),
            ("struct<`a:int>", "unclosed '`' at position 7"),
            ("struct<a int>", "expected ':' but found 'i'"),
            ("bigint x", "unexpected trailing text \"x\" at position 7"),
            (
                "array<int>>",
                "unexpected trailing text \">\" at position 10",
            ),
            ("array<int> <", "unexpected trailing text"),
            ("variant", "VARIANT type is not supported"),
            ("integer", "unknown type 'integer'"),
            ("bool", "unknown type 'bool'"),
            ("(int)", "expected a type name but found '('"),
        ];
        for (text, expected) in cases {
            let message = parse_error(text);
            assert!(message.starts_with("invalid type string: "), "{message}");
            assert!(
                message.contains(expected),
                "{text:?}: {message:?} lacks {expected:?}"
            );
            assert!(message.contains(&format!("{text:?}")), "{message}");
        }
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        let message = parse_error("struct<`é`:int,`É`:int>");
        assert!(message.contains("at position 15"), "{message}");
    }

    #[test]
    fn parses_column_lists() {
        use OdpsType as T;
        let columns = TableSchema::parse_columns(
            "id bigint, name string, tags array<string>, m map<string, bigint>",
        )
        .unwrap();
        assert_eq!(
            columns,
            vec![
                Column::new("id", T::BigInt),
                Column::new("name", T::String),
                Column::new("tags", array(T::String)),
                Column::new("m", map(T::String, T::BigInt)),
            ]
        );

        let columns = TableSchema::parse_columns(
            " `my col` decimal(10, 2) NOT NULL COMMENT 'a, \\'quoted\\' <comment>',\n\
             s struct<a:int, `b,c`:string> comment \"x\" null ,Upper INT not null",
        )
        .unwrap();
        assert_eq!(columns.len(), 3);
        assert_eq!(columns[0].name, "my col");
        assert_eq!(columns[0].ty, T::Decimal(Some((10, 2))));
        assert!(!columns[0].nullable);
        assert_eq!(columns[0].comment, "a, 'quoted' <comment>");
        assert_eq!(
            columns[1].ty,
            structure(&[("a", T::Int), ("b,c", T::String)])
        );
        assert_eq!(columns[1].comment, "x");
        assert!(columns[1].nullable);
        assert_eq!(columns[2].name, "Upper");
        assert!(!columns[2].nullable);

        assert!(TableSchema::parse_columns("  ").unwrap().is_empty());
    }

    #[test]
    fn column_list_errors_name_the_column() {
        let cases = [
            (
                "id bigint, name strin",
                "\"name strin\": unknown type 'strin' at position 5",
            ),
            ("id bigint, , x int", "column 2 is empty"),
            ("id bigint,", "column 2 is empty"),
            ("id", "\"id\": expected a type name at position 2"),
            ("id bigint primary", "unexpected 'primary' after the type"),
            ("id bigint not nul", "expected NULL but found 'nul'"),
            ("id bigint comment x", "expected a quoted comment"),
            ("id bigint comment 'x", "unclosed '"),
            ("id bigint comment 'x' comment 'y'", "duplicate COMMENT"),
            ("m map<array<int>,int>", "map key type must be primitive"),
            ("`id bigint", "unclosed '`'"),
        ];
        for (text, expected) in cases {
            let message = TableSchema::parse_columns(text).unwrap_err().to_string();
            assert!(
                message.contains(expected),
                "{text:?}: {message:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn displays_schemas_that_parse_back() {
        let schema = sample_schema();
        let text = schema.to_string();
        assert_eq!(
            text,
            "id bigint, name string not null comment 'who\\'s who', tags array<string>, \
             m map<string,struct<x:decimal(5,1)>> partitioned by (pt string, hour tinyint)"
        );
        let data = text.split(" partitioned by ").next().unwrap();
        assert_eq!(TableSchema::parse_columns(data).unwrap(), schema.columns);

        let plain = TableSchema::new(
            vec![
                Column::new("id", OdpsType::BigInt),
                Column::new("name", OdpsType::String),
            ],
            vec![],
        )
        .unwrap();
        assert_eq!(plain.to_string(), "id bigint, name string");

        let mut odd = Column::new("a b", OdpsType::Int);
        odd.comment = "line\nbreak\\".into();
        let odd = TableSchema {
            columns: vec![odd],
            partition_columns: vec![],
        };
        assert_eq!(
            TableSchema::parse_columns(&odd.to_string()).unwrap(),
            odd.columns
        );
    }

    /// A small deterministic generator (splitmix64) for re-spacing and re-casing.
    struct Noise(u64);

    impl Noise {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % n
        }

        fn space(&mut self, out: &mut String) {
            out.push_str(["", "", " ", "  ", "\t", "\n "][self.below(6) as usize]);
        }

        fn keyword(&mut self, word: &str, out: &mut String) {
            out.extend(word.chars().map(|c| {
                if self.below(2) == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            }));
        }
    }

    /// Prints `ty` like [`Display`](fmt::Display) does, but with random whitespace between
    /// tokens, keywords in random case, and `decimal(p)` for some `decimal(p,0)`.
    fn print_noisy(ty: &OdpsType, noise: &mut Noise, out: &mut String) {
        noise.space(out);
        noise.keyword(ty.name(), out);
        let token = |text: &str, noise: &mut Noise, out: &mut String| {
            noise.space(out);
            out.push_str(text);
        };
        match ty {
            OdpsType::Decimal(Some((precision, scale))) => {
                token("(", noise, out);
                token(&precision.to_string(), noise, out);
                if *scale != 0 || noise.below(2) == 0 {
                    token(",", noise, out);
                    token(&scale.to_string(), noise, out);
                }
                token(")", noise, out);
            }
            OdpsType::Varchar(length) | OdpsType::Char(length) => {
                token("(", noise, out);
                token(&length.to_string(), noise, out);
                token(")", noise, out);
            }
            OdpsType::Array(element) => {
                token("<", noise, out);
                print_noisy(element, noise, out);
                token(">", noise, out);
            }
            OdpsType::Map(key, value) => {
                token("<", noise, out);
                print_noisy(key, noise, out);
                token(",", noise, out);
                print_noisy(value, noise, out);
                token(">", noise, out);
            }
            OdpsType::Struct(fields) => {
                token("<", noise, out);
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        token(",", noise, out);
                    }
                    noise.space(out);
                    write_identifier(out, &field.name).unwrap();
                    token(":", noise, out);
                    print_noisy(&field.ty, noise, out);
                }
                token(">", noise, out);
            }
            _ => {}
        }
        noise.space(out);
    }

    /// `array<` × `depth`, then `leaf`, then `>` × `depth`.
    fn nested_text(depth: usize, open: &str, leaf: &str, close: &str) -> String {
        format!("{}{leaf}{}", open.repeat(depth), close.repeat(depth))
    }

    #[test]
    fn type_strings_nest_at_most_max_type_depth_levels() {
        let deepest = nested_text(MAX_TYPE_DEPTH, "array<", "bigint", ">");
        assert_eq!(parse(&deepest).nesting_depth(), MAX_TYPE_DEPTH);
        let mixed = nested_text(MAX_TYPE_DEPTH / 2, "map<string,struct<a:", "int", ">>");
        assert_eq!(parse(&mixed).nesting_depth(), MAX_TYPE_DEPTH);

        let limit =
            format!("more than {MAX_TYPE_DEPTH} levels deep (the limit is {MAX_TYPE_DEPTH})");
        for (text, position) in [
            (
                nested_text(MAX_TYPE_DEPTH + 1, "array<", "bigint", ">"),
                6 * MAX_TYPE_DEPTH,
            ),
            (
                nested_text(MAX_TYPE_DEPTH / 2 + 1, "map<string,struct<a:", "int", ">>"),
                20 * (MAX_TYPE_DEPTH / 2),
            ),
        ] {
            let message = parse_error(&text);
            assert!(message.contains(&limit), "{message}");
            assert!(
                message.contains(&format!("at position {position}")),
                "{message}"
            );
        }
        // Depths that exhausted the stack of the recursive parser: a clear error, no crash,
        // quoting the start of the text only.
        for depth in [1_000, 4_000, 100_000] {
            let message = parse_error(&nested_text(depth, "array<", "bigint", ">"));
            assert!(message.contains(&limit), "{message}");
            assert!(message.len() < 400, "{message}");
            assert!(
                message.contains(&format!("... ({} characters)", 7 * depth + 6)),
                "{message}"
            );
            let unclosed = "struct<a:".repeat(depth);
            assert!(parse_error(&unclosed).contains(&limit));
            let columns = format!("c {}", nested_text(depth, "array<", "int", ">"));
            let message = TableSchema::parse_columns(&columns)
                .unwrap_err()
                .to_string();
            assert!(message.contains(&limit), "{message}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn type_strings_round_trip(ty in any_type(), seed in any::<u64>()) {
            prop_assert!(ty.validate().is_ok());
            let text = ty.to_string();
            prop_assert_eq!(text.parse::<OdpsType>().unwrap(), ty.clone());

            let mut noisy = String::new();
            print_noisy(&ty, &mut Noise(seed), &mut noisy);
            let reparsed = noisy.parse::<OdpsType>();
            prop_assert!(reparsed.is_ok(), "{:?}: {:?}", noisy, reparsed);
            prop_assert_eq!(reparsed.unwrap(), ty);
        }

        #[test]
        fn parser_never_panics(text in "[a-z<>(),:` 0-9_]{0,40}") {
            let _ = text.parse::<OdpsType>();
            let _ = TableSchema::parse_columns(&text);
        }
    }
}

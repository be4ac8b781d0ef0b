//! `deserialize_with` helpers for fields that clients and services send loosely: an integer
//! as a JSON number or as a string of digits, a flag as a bool, `"true"`/`"1"` or a number,
//! and null (or an empty string) for "not given".
//!
//! Every helper reads into an `Option` (or an empty list): the message types decide the
//! default. A value of the wrong shape is an error that says what was found; parsed with
//! [`super::from_json`] it also names the field.

use serde::Deserialize;
use serde::de::{Deserializer, Error as _};
use serde_json::Value;

/// The integer a JSON value holds: a number (an integral float too), or a string of one.
/// Null and the empty string are `None`.
fn integer(v: &Value) -> Result<Option<i64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(Some(f as i64)),
            _ => Err(format!("{n} is not an integer")),
        },
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| format!("{s:?} is not an integer")),
        other => Err(format!("{other} is not an integer")),
    }
}

fn non_negative(v: &Value) -> Result<Option<u64>, String> {
    match v {
        // Beyond i64: still a valid u64.
        Value::Number(n) if n.as_u64().is_some() => Ok(n.as_u64()),
        _ => match integer(v)? {
            Some(n) if n < 0 => Err(format!("{n} is negative")),
            n => Ok(n.map(|n| n as u64)),
        },
    }
}

fn flag(v: &Value) -> Result<Option<bool>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(Some(true)),
            "false" | "0" => Ok(Some(false)),
            "" => Ok(None),
            _ => Err(format!("{s:?} is not a boolean")),
        },
        Value::Number(n) => Ok(Some(n.as_f64() != Some(0.0))),
        other => Err(format!("{other} is not a boolean")),
    }
}

fn text(v: &Value) -> Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(format!("{other} is not a string")),
    }
}

fn list<T>(v: Value, item: impl Fn(&Value) -> Result<Option<T>, String>) -> Result<Vec<T>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| item(v)?.ok_or_else(|| format!("entry {i} is {v}")))
            .collect(),
        other => Err(format!("{other} is not a list")),
    }
}

fn with<'de, D: Deserializer<'de>, T>(
    d: D,
    read: impl FnOnce(Value) -> Result<T, String>,
) -> Result<T, D::Error> {
    read(Value::deserialize(d)?).map_err(D::Error::custom)
}

/// An integer, as a number or a string; null or `""` is `None`.
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    with(d, |v| integer(&v))
}

/// A non-negative integer, as a number or a string; null or `""` is `None`.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    with(d, |v| non_negative(&v))
}

/// A flag: a bool, `"true"`/`"false"`/`"1"`/`"0"` (any case) or a number (non-zero is
/// true); null or `""` is `None`.
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    with(d, |v| flag(&v))
}

/// A string, or a number taken as its decimal text (ids); null is `None`.
pub fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    with(d, |v| text(&v))
}

/// [`opt_u64`], with null or absent read as 0.
pub fn u64_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    opt_u64(d).map(Option::unwrap_or_default)
}

/// [`opt_bool`], with null read as false.
pub fn bool_or_false<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    opt_bool(d).map(|b| b.unwrap_or(false))
}

/// [`opt_bool`], with null read as true.
pub fn bool_or_true<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    opt_bool(d).map(|b| b.unwrap_or(true))
}

/// [`opt_text`], with null read as the empty string.
pub fn text_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    opt_text(d).map(Option::unwrap_or_default)
}

/// A list of strings; null is empty.
pub fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    with(d, |v| {
        list(v, |v| match v {
            Value::String(s) => Ok(Some(s.clone())),
            other => Err(format!("{other} is not a string")),
        })
    })
}

/// A list of ids, each a string or a number; null is empty.
pub fn texts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    with(d, |v| list(v, text))
}

/// [`texts`], absent apart from empty.
pub fn opt_texts<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    texts(d).map(Some)
}

/// [`u64s`], absent apart from empty.
pub fn opt_u64s<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u64>>, D::Error> {
    u64s(d).map(Some)
}

/// A list of non-negative integers, each a number or a string; null is empty.
pub fn u64s<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    with(d, |v| list(v, non_negative))
}

/// A list of 32-bit ids (bucket ids), each a number or a string; null is empty.
pub fn u32s<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    with(d, |v| {
        list(v, |v| {
            non_negative(v)?
                .map(|n| u32::try_from(n).map_err(|_| format!("{n} is too large")))
                .transpose()
        })
    })
}

/// Any value, with null read as its default (an empty list, an empty string).
pub fn or_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// A field that is sent even when null (`"WarningMessage": null`): `Some(None)` is an
/// explicit null, `None` an absent field (with `#[serde(default)]`).
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A value a newer peer may send in a shape this one does not know: kept when it parses,
/// `None` (ignored) when it does not.
pub fn tolerant<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
) -> Result<Option<T>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_strings_and_nulls() {
        assert_eq!(integer(&json!(5)), Ok(Some(5)));
        assert_eq!(integer(&json!(5.0)), Ok(Some(5)));
        assert_eq!(integer(&json!(" -7 ")), Ok(Some(-7)));
        assert_eq!(integer(&json!(null)), Ok(None));
        assert_eq!(integer(&json!("")), Ok(None));
        assert!(integer(&json!(5.5)).unwrap_err().contains("5.5"));
        assert!(integer(&json!("x")).unwrap_err().contains("\"x\""));
        assert!(integer(&json!([1])).is_err());
        assert_eq!(non_negative(&json!(u64::MAX)), Ok(Some(u64::MAX)));
        assert!(non_negative(&json!(-1)).unwrap_err().contains("negative"));
        assert_eq!(flag(&json!("TRUE")), Ok(Some(true)));
        assert_eq!(flag(&json!(0)), Ok(Some(false)));
        assert_eq!(flag(&json!("")), Ok(None));
        assert!(flag(&json!("yes")).is_err());
        assert_eq!(text(&json!(12)), Ok(Some("12".into())));
        assert!(text(&json!({})).is_err());
        assert_eq!(list(json!(null), non_negative), Ok(vec![]));
        assert!(
            list(json!([1, null]), non_negative)
                .unwrap_err()
                .contains("entry 1")
        );
    }

    #[test]
    fn errors_name_the_field() {
        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Outer {
            #[allow(dead_code)]
            inner: Inner,
        }
        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Inner {
            #[allow(dead_code)]
            #[serde(default, deserialize_with = "opt_u64")]
            count: Option<u64>,
        }
        let e = crate::protocol::from_json::<Outer>(br#"{"Inner": {"Count": "-3"}}"#).unwrap_err();
        assert!(
            e.starts_with("Inner.Count: ") && e.contains("negative"),
            "{e}"
        );
    }
}

//! The schema JSON of the Storage API: the **read schema** of read sessions (type strings,
//! [`ReadSchema`]) and the **write schema** of write sessions and streams (numeric type
//! codes and nested `SubTypes`: [`OdpsType::to_write_schema_json`],
//! [`TableSchema::to_write_schema_json`] and their inverses).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::protocol::lenient::{opt_bool, opt_text, or_default};
use crate::types::{
    Column, MAX_CHAR_LENGTH, MAX_TYPE_DEPTH, MAX_VARCHAR_LENGTH, OdpsType, StructField,
    TableSchema, UNBOUNDED_DECIMAL_PRECISION_SCALE, check_decimal, check_length, too_deep,
};

/// A read schema: `{"DataColumns": [..], "PartitionColumns": [..], "SystemColumns": []}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReadSchema {
    #[serde(default, deserialize_with = "or_default")]
    pub data_columns: Vec<ReadColumn>,
    #[serde(default, deserialize_with = "or_default")]
    pub partition_columns: Vec<ReadColumn>,
    /// Always empty here (paiio delivers no system columns); what a service lists is not
    /// read.
    #[serde(default, skip_deserializing)]
    pub system_columns: Vec<ReadColumn>,
}

/// A column of a read schema: `{"Name", "Type", "Comment", "Nullable", "ColumnId"}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReadColumn {
    pub name: String,
    /// The type string (`array<bigint>`).
    #[serde(rename = "Type")]
    pub type_name: String,
    #[serde(default, deserialize_with = "or_default")]
    pub comment: String,
    /// Absent: nullable.
    #[serde(default, deserialize_with = "opt_bool")]
    pub nullable: Option<bool>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_text"
    )]
    pub column_id: Option<String>,
}

/// Column ids run from 1 across the data and then the partition columns.
impl From<&TableSchema> for ReadSchema {
    fn from(schema: &TableSchema) -> Self {
        let mut id = 0;
        let mut column = |c: &Column| {
            id += 1;
            ReadColumn {
                name: c.name.clone(),
                type_name: c.ty.to_string(),
                comment: c.comment.clone(),
                nullable: Some(c.nullable),
                column_id: Some(id.to_string()),
            }
        };
        ReadSchema {
            data_columns: schema.columns.iter().map(&mut column).collect(),
            partition_columns: schema.partition_columns.iter().map(&mut column).collect(),
            system_columns: Vec::new(),
        }
    }
}

/// Parses the type strings (the columns are taken as the service lists them).
impl TryFrom<&ReadSchema> for TableSchema {
    type Error = Error;
    fn try_from(schema: &ReadSchema) -> Result<TableSchema> {
        let columns = |list: &[ReadColumn]| -> Result<Vec<Column>> {
            list.iter()
                .map(|c| {
                    Ok(Column {
                        name: c.name.clone(),
                        ty: c.type_name.parse().map_err(|e| {
                            Error::invalid("read schema", format!("column `{}`: {e}", c.name))
                        })?,
                        nullable: c.nullable.unwrap_or(true),
                        comment: c.comment.clone(),
                    })
                })
                .collect()
        };
        Ok(TableSchema {
            columns: columns(&schema.data_columns)?,
            partition_columns: columns(&schema.partition_columns)?,
        })
    }
}

/// Write-schema type codes, indexed by code, as the service names them.
const TYPE_CODE_NAMES: [&str; 24] = [
    "BIGINT",
    "DOUBLE",
    "BOOLEAN",
    "DATETIME",
    "STRING",
    "DECIMAL",
    "TINYINT",
    "SMALLINT",
    "INT",
    "CHAR",
    "VARCHAR",
    "BINARY",
    "DATE",
    "TIMESTAMP",
    "FLOAT",
    "INTERVAL_YEAR_MONTH",
    "INTERVAL_DAY_TIME",
    "ARRAY",
    "MAP",
    "STRUCT",
    "JSON",
    "TIMESTAMP_NTZ",
    "BLOB",
    "VARIANT",
];

/// The type code of VARIANT, which the service defines and this crate does not support.
const VARIANT_TYPE_CODE: i64 = 23;

/// The service's name of a type code, for messages.
fn type_code_name(code: i64) -> &'static str {
    usize::try_from(code)
        .ok()
        .and_then(|i| TYPE_CODE_NAMES.get(i))
        .copied()
        .unwrap_or("unknown")
}

fn variant_not_supported() -> String {
    "the VARIANT type (type code 23) is not supported".to_string()
}

impl OdpsType {
    /// The Storage API write-schema type code (0 BIGINT ... 22 BLOB).
    pub fn type_code(&self) -> i32 {
        match self {
            OdpsType::BigInt => 0,
            OdpsType::Double => 1,
            OdpsType::Boolean => 2,
            OdpsType::DateTime => 3,
            OdpsType::String => 4,
            OdpsType::Decimal(_) => 5,
            OdpsType::TinyInt => 6,
            OdpsType::SmallInt => 7,
            OdpsType::Int => 8,
            OdpsType::Char(_) => 9,
            OdpsType::Varchar(_) => 10,
            OdpsType::Binary => 11,
            OdpsType::Date => 12,
            OdpsType::Timestamp => 13,
            OdpsType::Float => 14,
            OdpsType::IntervalYearMonth => 15,
            OdpsType::IntervalDayTime => 16,
            OdpsType::Array(_) => 17,
            OdpsType::Map(..) => 18,
            OdpsType::Struct(_) => 19,
            OdpsType::Json => 20,
            OdpsType::TimestampNtz => 21,
            OdpsType::Blob => 22,
        }
    }

    /// The type a write-schema type code stands for on its own. DECIMAL gives the unbounded
    /// decimal; CHAR, VARCHAR, ARRAY, MAP and STRUCT are errors, as their length or element
    /// types live elsewhere in the write schema (read those with
    /// [`from_write_schema_json`](Self::from_write_schema_json)); VARIANT (23) is not
    /// supported.
    pub fn from_type_code(code: i32) -> Result<OdpsType> {
        let code = i64::from(code);
        simple_type_for_code(code).ok_or_else(|| match code {
            VARIANT_TYPE_CODE => Error::NotSupported {
                message: variant_not_supported(),
            },
            9 | 10 | 17 | 18 | 19 => Error::invalid(
                "type code",
                format!(
                    "{code} ({}) needs a length or element types; read it from a full write \
                     schema",
                    type_code_name(code)
                ),
            ),
            _ => Error::invalid("type code", format!("unknown type code {code}")),
        })
    }

    /// This type as a write-schema member (`MemberName`, `ColumnId`, `Type`, `Nullable`,
    /// `SubTypes`, and `Precision`/`Scale` for decimals, `SpecifiedLength` for char and
    /// varchar). Ids are taken from `column_id` depth-first: the member first, then its
    /// sub types in order; `column_id` is left one past the last id used.
    ///
    /// ARRAY has one sub type named `element`, MAP `key` (not nullable) and `value`, STRUCT
    /// one per field. The unbounded decimal is written as precision 54, scale 18, which is
    /// what the service reports for it.
    pub fn to_write_schema_json(&self, name: &str, column_id: &mut i32, nullable: bool) -> Value {
        let id = *column_id;
        *column_id = column_id.saturating_add(1);
        let sub_types: Vec<Value> = match self {
            OdpsType::Array(element) => {
                vec![element.to_write_schema_json("element", column_id, true)]
            }
            OdpsType::Map(key, value) => vec![
                key.to_write_schema_json("key", column_id, false),
                value.to_write_schema_json("value", column_id, true),
            ],
            OdpsType::Struct(fields) => fields
                .iter()
                .map(|field| field.ty.to_write_schema_json(&field.name, column_id, true))
                .collect(),
            _ => Vec::new(),
        };
        let mut member = serde_json::Map::new();
        member.insert("MemberName".into(), name.into());
        member.insert("ColumnId".into(), id.into());
        member.insert("Type".into(), self.type_code().into());
        member.insert("Nullable".into(), nullable.into());
        member.insert("SubTypes".into(), sub_types.into());
        match self {
            OdpsType::Decimal(precision_scale) => {
                let (precision, scale) =
                    precision_scale.unwrap_or(UNBOUNDED_DECIMAL_PRECISION_SCALE);
                member.insert("Precision".into(), precision.into());
                member.insert("Scale".into(), scale.into());
            }
            OdpsType::Char(length) | OdpsType::Varchar(length) => {
                member.insert("SpecifiedLength".into(), (*length).into());
            }
            _ => {}
        }
        member.insert("IsDistributionKey".into(), false.into());
        Value::Object(member)
    }

    /// Reads a write-schema member: its name, type and nullability. The inverse of
    /// [`to_write_schema_json`](Self::to_write_schema_json); `ColumnId` is ignored, a missing
    /// `Nullable` means nullable, and precision 54 scale 18 (or no precision) means the
    /// unbounded decimal.
    pub fn from_write_schema_json(value: &Value) -> Result<(String, OdpsType, bool)> {
        read_write_schema_member(value, "", 0)
            .map_err(|message| Error::invalid("write schema", message))
    }
}

/// The type of a code that needs nothing else to describe it.
fn simple_type_for_code(code: i64) -> Option<OdpsType> {
    Some(match code {
        0 => OdpsType::BigInt,
        1 => OdpsType::Double,
        2 => OdpsType::Boolean,
        3 => OdpsType::DateTime,
        4 => OdpsType::String,
        5 => OdpsType::Decimal(None),
        6 => OdpsType::TinyInt,
        7 => OdpsType::SmallInt,
        8 => OdpsType::Int,
        11 => OdpsType::Binary,
        12 => OdpsType::Date,
        13 => OdpsType::Timestamp,
        14 => OdpsType::Float,
        15 => OdpsType::IntervalYearMonth,
        16 => OdpsType::IntervalDayTime,
        20 => OdpsType::Json,
        21 => OdpsType::TimestampNtz,
        22 => OdpsType::Blob,
        _ => return None,
    })
}

/// [`OdpsType::from_write_schema_json`] with a bare message. `parent` is the dotted path of
/// the enclosing member, so that an error deep in a nested type says where it is; `depth`
/// is how many members enclose this one, so that nesting beyond [`MAX_TYPE_DEPTH`] is
/// refused before it is recursed into.
fn read_write_schema_member(
    value: &Value,
    parent: &str,
    depth: usize,
) -> Result<(String, OdpsType, bool), String> {
    let Some(member) = value.as_object() else {
        let location = if parent.is_empty() {
            String::new()
        } else {
            format!(" in `{parent}`")
        };
        return Err(format!("a member{location} is not a JSON object: {value}"));
    };
    let name = match member.get("MemberName") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(name)) => name.clone(),
        Some(other) => return Err(format!("MemberName {other} is not a string")),
    };
    let path = if parent.is_empty() {
        name.clone()
    } else {
        format!("{parent}.{name}")
    };
    let fail = |message: String| format!("member `{path}`: {message}");
    let integer = |key: &str| -> Result<Option<i64>, String> {
        match member.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| fail(format!("{key} {v} is not an integer"))),
        }
    };

    let code = integer("Type")?.ok_or_else(|| fail("has no Type".to_string()))?;
    let nullable = match member.get("Nullable") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(nullable)) => *nullable,
        Some(other) => return Err(fail(format!("Nullable {other} is not a boolean"))),
    };
    let sub_values: &[Value] = match member.get("SubTypes") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(values)) => values,
        Some(other) => return Err(fail(format!("SubTypes {other} is not an array"))),
    };
    if !sub_values.is_empty() && depth >= MAX_TYPE_DEPTH {
        return Err(fail(too_deep()));
    }
    let mut sub_types = sub_values
        .iter()
        .map(|sub| read_write_schema_member(sub, &path, depth + 1))
        .collect::<Result<Vec<_>, String>>()?;
    let type_name = type_code_name(code);
    let expected_sub_types = match code {
        17 => "exactly one",
        18 => "exactly two",
        19 => "at least one",
        _ => "no",
    };
    let sub_types_fit = match code {
        17 => sub_types.len() == 1,
        18 => sub_types.len() == 2,
        19 => !sub_types.is_empty(),
        _ => sub_types.is_empty(),
    };
    if !sub_types_fit {
        return Err(fail(format!(
            "type {code} ({type_name}) takes {expected_sub_types} SubTypes, found {}",
            sub_types.len()
        )));
    }

    let ty = match code {
        5 => match (integer("Precision")?, integer("Scale")?) {
            (None, _) => OdpsType::Decimal(None),
            (Some(precision), scale)
                if (precision, scale.unwrap_or(0))
                    == (
                        i64::from(UNBOUNDED_DECIMAL_PRECISION_SCALE.0),
                        i64::from(UNBOUNDED_DECIMAL_PRECISION_SCALE.1),
                    ) =>
            {
                OdpsType::Decimal(None)
            }
            (Some(precision), scale) => OdpsType::Decimal(Some(
                check_decimal(precision, scale.unwrap_or(0)).map_err(fail)?,
            )),
        },
        9 | 10 => {
            let length = integer("SpecifiedLength")?
                .ok_or_else(|| fail(format!("{type_name} has no SpecifiedLength")))?;
            if code == 9 {
                OdpsType::Char(check_length("char", length, MAX_CHAR_LENGTH).map_err(fail)?)
            } else {
                OdpsType::Varchar(
                    check_length("varchar", length, MAX_VARCHAR_LENGTH).map_err(fail)?,
                )
            }
        }
        17 => OdpsType::Array(Box::new(sub_types.remove(0).1)),
        18 => {
            let value = sub_types.remove(1).1;
            let key = sub_types.remove(0).1;
            OdpsType::Map(Box::new(key), Box::new(value))
        }
        19 => OdpsType::Struct(
            sub_types
                .into_iter()
                .map(|(name, ty, _)| StructField { name, ty })
                .collect(),
        ),
        VARIANT_TYPE_CODE => return Err(fail(variant_not_supported())),
        _ => simple_type_for_code(code).ok_or_else(|| fail(format!("unknown type code {code}")))?,
    };
    ty.check().map_err(fail)?;
    Ok((name, ty, nullable))
}

impl TableSchema {
    /// The write-schema JSON of the table:
    /// `{"DataColumns": [...], "PartitionColumns": [...], "SystemColumns": []}`, each column
    /// `{"comment", "label", "columnType"}` with `columnType` as
    /// [`OdpsType::to_write_schema_json`] gives it. Column ids run depth-first from 0 across
    /// data and then partition columns.
    pub fn to_write_schema_json(&self) -> Value {
        let mut column_id = 0;
        let mut encode = |columns: &[Column]| -> Vec<Value> {
            columns
                .iter()
                .map(|column| {
                    json!({
                        "comment": column.comment,
                        "label": "",
                        "columnType":
                            column.ty.to_write_schema_json(&column.name, &mut column_id, column.nullable),
                    })
                })
                .collect()
        };
        let data_columns = encode(&self.columns);
        let partition_columns = encode(&self.partition_columns);
        json!({
            "DataColumns": data_columns,
            "PartitionColumns": partition_columns,
            "SystemColumns": [],
        })
    }

    /// Reads the write-schema JSON of a table, the inverse of
    /// [`to_write_schema_json`](Self::to_write_schema_json); a missing `PartitionColumns`
    /// means none. The result is validated as by [`new`](Self::new).
    pub fn from_write_schema_json(value: &Value) -> Result<TableSchema> {
        let read = |key: &str| -> Result<Vec<Column>> {
            let items = match value.get(key) {
                None | Some(Value::Null) => return Ok(Vec::new()),
                Some(Value::Array(items)) => items,
                Some(other) => {
                    return Err(Error::invalid(
                        "write schema",
                        format!("{key} {other} is not an array"),
                    ));
                }
            };
            items
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    read_write_schema_column(item).map_err(|message| {
                        Error::invalid("write schema", format!("{key}[{index}]: {message}"))
                    })
                })
                .collect()
        };
        if !value.is_object() {
            return Err(Error::invalid(
                "write schema",
                format!("{value} is not a JSON object"),
            ));
        }
        TableSchema::new(read("DataColumns")?, read("PartitionColumns")?)
    }
}

/// One `{"comment", "label", "columnType"}` entry of a table's write schema.
fn read_write_schema_column(item: &Value) -> Result<Column, String> {
    let column_type = item
        .get("columnType")
        .ok_or_else(|| format!("{item} has no columnType"))?;
    let comment = match item.get("comment") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(comment)) => comment.clone(),
        Some(other) => return Err(format!("comment {other} is not a string")),
    };
    let (name, ty, nullable) = read_write_schema_member(column_type, "", 0)?;
    Ok(Column {
        name,
        ty,
        nullable,
        comment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::tests::{every_type, sample_schema};

    fn parse(text: &str) -> OdpsType {
        text.parse().unwrap()
    }

    #[test]
    fn type_codes_map_back() {
        for (ty, _, code, _) in every_type() {
            match OdpsType::from_type_code(code) {
                Ok(from_code) => {
                    let expected = if ty.name() == "decimal" {
                        OdpsType::Decimal(None)
                    } else {
                        ty
                    };
                    assert_eq!(from_code, expected);
                }
                Err(e) => {
                    assert!(matches!(code, 9 | 10 | 17 | 18 | 19), "{code}: {e}");
                    assert!(e.to_string().contains(type_code_name(code.into())), "{e}");
                }
            }
        }
        let variant = OdpsType::from_type_code(23).unwrap_err();
        assert!(matches!(variant, Error::NotSupported { .. }), "{variant}");
        assert!(variant.to_string().contains("VARIANT"));
        assert!(
            OdpsType::from_type_code(24)
                .unwrap_err()
                .to_string()
                .contains("unknown type code 24")
        );
        assert!(OdpsType::from_type_code(-1).is_err());
    }

    #[test]
    fn write_schema_json_has_the_service_shape() {
        let ty = parse("struct<a:decimal(10,2), b:array<varchar(5)>, c:map<string,decimal>>");
        let mut column_id = 3;
        let json = ty.to_write_schema_json("s", &mut column_id, false);
        assert_eq!(column_id, 10);
        let expected = json!({
            "MemberName": "s", "ColumnId": 3, "Type": 19, "Nullable": false,
            "IsDistributionKey": false,
            "SubTypes": [
                {"MemberName": "a", "ColumnId": 4, "Type": 5, "Nullable": true,
                 "Precision": 10, "Scale": 2, "SubTypes": [], "IsDistributionKey": false},
                {"MemberName": "b", "ColumnId": 5, "Type": 17, "Nullable": true,
                 "IsDistributionKey": false,
                 "SubTypes": [{"MemberName": "element", "ColumnId": 6, "Type": 10,
                               "Nullable": true, "SpecifiedLength": 5, "SubTypes": [],
                               "IsDistributionKey": false}]},
                {"MemberName": "c", "ColumnId": 7, "Type": 18, "Nullable": true,
                 "IsDistributionKey": false,
                 "SubTypes": [
                     {"MemberName": "key", "ColumnId": 8, "Type": 4, "Nullable": false,
                      "SubTypes": [], "IsDistributionKey": false},
                     {"MemberName": "value", "ColumnId": 9, "Type": 5, "Nullable": true,
                      "Precision": 54, "Scale": 18, "SubTypes": [],
                      "IsDistributionKey": false}]}
            ]
        });
        assert_eq!(json, expected);
        assert_eq!(
            OdpsType::from_write_schema_json(&json).unwrap(),
            ("s".to_string(), ty, false)
        );
    }

    #[test]
    fn reads_lenient_and_rejects_bad_write_schema_json() {
        let minimal = json!({"MemberName": "x", "Type": 5});
        assert_eq!(
            OdpsType::from_write_schema_json(&minimal).unwrap(),
            ("x".to_string(), OdpsType::Decimal(None), true)
        );
        let bounded = json!({"MemberName": "x", "Type": 5, "Precision": 38, "Scale": 18});
        assert_eq!(
            OdpsType::from_write_schema_json(&bounded).unwrap().1,
            OdpsType::Decimal(Some((38, 18)))
        );

        let bad = [
            (json!([]), "not a JSON object"),
            (json!({"MemberName": "x"}), "member `x`: has no Type"),
            (
                json!({"MemberName": "x", "Type": "int"}),
                "Type \"int\" is not an integer",
            ),
            (json!({"MemberName": "x", "Type": 23}), "VARIANT"),
            (
                json!({"MemberName": "x", "Type": 99}),
                "unknown type code 99",
            ),
            (
                json!({"MemberName": "x", "Type": 17}),
                "takes exactly one SubTypes, found 0",
            ),
            (
                json!({"MemberName": "x", "Type": 19, "SubTypes": []}),
                "at least one",
            ),
            (
                json!({"MemberName": "x", "Type": 4, "SubTypes": [{"Type": 4}]}),
                "takes no SubTypes",
            ),
            (
                json!({"MemberName": "x", "Type": 10}),
                "VARCHAR has no SpecifiedLength",
            ),
            (
                json!({"MemberName": "x", "Type": 9, "SpecifiedLength": 300}),
                "char length 300",
            ),
            (
                json!({"MemberName": "x", "Type": 5, "Precision": 40, "Scale": 2}),
                "precision 40",
            ),
            (
                json!({"MemberName": "x", "Type": 4, "Nullable": 1}),
                "Nullable 1 is not a boolean",
            ),
            (
                json!({"MemberName": "m", "Type": 18, "SubTypes": [
                    {"MemberName": "key", "Type": 17, "SubTypes": [{"Type": 4}]},
                    {"MemberName": "value", "Type": 4}]}),
                "member `m`: map key type must be primitive",
            ),
            (
                json!({"MemberName": "s", "Type": 19, "SubTypes": [
                    {"MemberName": "a", "Type": 4}, {"MemberName": "A", "Type": 4}]}),
                "duplicate struct field name",
            ),
            (
                json!({"MemberName": "a", "Type": 17, "SubTypes": [
                    {"MemberName": "element", "Type": 23}]}),
                "member `a.element`: the VARIANT type",
            ),
        ];
        for (value, expected) in bad {
            let message = OdpsType::from_write_schema_json(&value)
                .unwrap_err()
                .to_string();
            assert!(
                message.contains(expected),
                "{value}: {message:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn table_write_schema_json_round_trips() {
        let schema = sample_schema();
        let json = schema.to_write_schema_json();
        assert_eq!(json["SystemColumns"], json!([]));
        assert_eq!(json["DataColumns"][1]["comment"], "who's who");
        assert_eq!(json["DataColumns"][1]["label"], "");
        assert_eq!(json["DataColumns"][1]["columnType"]["MemberName"], "name");
        assert_eq!(json["DataColumns"][1]["columnType"]["Nullable"], false);
        // Ids run depth-first across data and then partition columns: id 0, name 1,
        // tags 2 (element 3), m 4 (key 5, value 6, x 7), pt 8, hour 9.
        assert_eq!(
            json["DataColumns"][3]["columnType"]["SubTypes"][1]["SubTypes"][0]["ColumnId"],
            7
        );
        assert_eq!(json["PartitionColumns"][0]["columnType"]["ColumnId"], 8);
        assert_eq!(json["PartitionColumns"][1]["columnType"]["ColumnId"], 9);
        let text = serde_json::to_string(&json).unwrap();
        let back = TableSchema::from_write_schema_json(&serde_json::from_str(&text).unwrap());
        assert_eq!(back.unwrap(), schema);

        let no_partitions =
            json!({"DataColumns": json["DataColumns"].clone(), "SystemColumns": []});
        let back = TableSchema::from_write_schema_json(&no_partitions).unwrap();
        assert_eq!(back.columns, schema.columns);
        assert!(back.partition_columns.is_empty());

        let message =
            TableSchema::from_write_schema_json(&json!({"DataColumns": [{"comment": ""}]}))
                .unwrap_err()
                .to_string();
        assert!(
            message.contains("DataColumns[0]") && message.contains("no columnType"),
            "{message}"
        );
        assert!(TableSchema::from_write_schema_json(&json!({"DataColumns": []})).is_err());
        assert!(TableSchema::from_write_schema_json(&json!("x")).is_err());
    }
}

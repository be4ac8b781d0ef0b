//! `record_defaults` from Python values, for every API of the package (`TableReader`,
//! `TableRecordDataset`, `torch.TableDataset`): the type of each entry picks the column's
//! output type, as `tf.io.decode_csv` does.
//!
//! | default | output |
//! |---|---|
//! | Python `int` | int32 |
//! | Python `float` | float32 |
//! | `np.int64`, `np.uint32`, `np.uint64` (also as a 0-d array) | int64 |
//! | other numpy integers | int32 |
//! | `np.float64` | float64 |
//! | `np.float32`, `np.float16` | float32 |
//! | `bool`, `np.bool_` | bool |
//! | `str` | string (`str` in numpy) |
//! | `bytes`, `bytearray`, `np.bytes_` | bytes |
//!
//! An entry may also be a one-element list or tuple, a one-element numpy array, or anything
//! with a `.numpy()` method (an eager tensor). Anything else raises `ConversionError` (both a
//! `ValueError` and a `TypeError`), naming the entry.

use paiio::coerce::RecordDefault;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::errors;

/// `record_defaults` as given to a reader (`None`: not given).
pub fn parse(values: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<RecordDefault>>> {
    let Some(values) = values.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let py = values.py();
    if values.is_instance_of::<PyString>() || values.is_instance_of::<PyBytes>() {
        return Err(invalid(py, not_a_list(values)));
    }
    let items = values
        .try_iter()
        .map_err(|_| invalid(py, not_a_list(values)))?;
    let numpy = py.import("numpy")?;
    let mut out = Vec::new();
    for (index, item) in items.enumerate() {
        out.push(entry(&numpy, index, &item?)?);
    }
    Ok(Some(out))
}

/// `[(kind, value)]` of `record_defaults`: the output type of each column (`int32`, `int64`,
/// `float32`, `float64`, `bool`, `string`, `bytes`) and its default as a value that reads
/// back as the same kind (numpy scalars for the numbers).
#[pyfunction]
pub fn record_defaults<'py>(
    values: &Bound<'py, PyAny>,
) -> PyResult<Vec<(&'static str, Bound<'py, PyAny>)>> {
    let py = values.py();
    let numpy = py.import("numpy")?;
    let number = |ty: &str, v: f64| numpy.getattr(ty)?.call1((v,));
    parse(Some(values))?
        .unwrap_or_default()
        .into_iter()
        .map(|d| {
            let value = match &d {
                RecordDefault::Int32(v) => numpy.getattr("int32")?.call1((*v,))?,
                RecordDefault::Int64(v) => numpy.getattr("int64")?.call1((*v,))?,
                RecordDefault::Float32(v) => number("float32", f64::from(*v))?,
                RecordDefault::Float64(v) => number("float64", *v)?,
                RecordDefault::Bool(v) => PyBool::new(py, *v).to_owned().into_any(),
                RecordDefault::String(v) => PyString::new(py, v).into_any(),
                RecordDefault::Bytes(v) => PyBytes::new(py, v).into_any(),
            };
            Ok((d.target_type().name(), value))
        })
        .collect()
}

fn not_a_list(values: &Bound<'_, PyAny>) -> String {
    let name = values
        .get_type()
        .name()
        .map_or_else(|_| "?".to_string(), |n| n.to_string());
    format!("expected a list or tuple with one default per column, not {name}")
}

fn invalid(py: Python<'_>, message: String) -> PyErr {
    errors::py_error(
        py,
        "ConversionError",
        format!("invalid record_defaults: {message}"),
    )
}

/// One entry (see the [module docs](self)).
fn entry(
    numpy: &Bound<'_, PyModule>,
    index: usize,
    value: &Bound<'_, PyAny>,
) -> PyResult<RecordDefault> {
    let py = value.py();
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        let n = value.len()?;
        if n != 1 {
            return Err(invalid(
                py,
                format!(
                    "entry {index} is a list of {n} values; give a scalar or a one-element list"
                ),
            ));
        }
        return entry(numpy, index, &value.get_item(0)?);
    }
    if value.is_instance(&numpy.getattr("ndarray")?)? {
        let size: usize = value.getattr("size")?.extract()?;
        if size != 1 {
            return Err(invalid(
                py,
                format!(
                    "entry {index} is an array of {size} values; give a scalar or a one-element \
                     array"
                ),
            ));
        }
        return entry(
            numpy,
            index,
            &value.call_method1("reshape", (-1,))?.get_item(0)?,
        );
    }
    if value.is_instance(&numpy.getattr("generic")?)? {
        let dtype = value.getattr("dtype")?;
        let kind: String = dtype.getattr("kind")?.extract()?;
        let size: usize = dtype.getattr("itemsize")?.extract()?;
        match (kind.as_str(), size) {
            ("b", _) => return Ok(RecordDefault::Bool(value.is_truthy()?)),
            ("i", 8) | ("u", 4..) => return Ok(RecordDefault::Int64(value.extract()?)),
            ("i" | "u", _) => return Ok(RecordDefault::Int32(value.extract()?)),
            ("f", 8) => return Ok(RecordDefault::Float64(value.extract()?)),
            ("f", _) => return Ok(RecordDefault::Float32(value.extract::<f64>()? as f32)),
            ("U", _) => return Ok(RecordDefault::String(value.extract()?)),
            ("S", _) => return Ok(RecordDefault::Bytes(value.extract()?)),
            _ => {}
        }
    } else if value.hasattr("numpy")? && value.getattr("numpy")?.is_callable() {
        // An eager tensor.
        return entry(numpy, index, &value.call_method0("numpy")?);
    }
    if value.is_instance_of::<PyBool>() {
        return Ok(RecordDefault::Bool(value.is_truthy()?));
    }
    if value.is_instance_of::<PyInt>() {
        return Ok(RecordDefault::Int32(value.extract()?));
    }
    if value.is_instance_of::<PyFloat>() {
        return Ok(RecordDefault::Float32(value.extract::<f64>()? as f32));
    }
    if value.is_instance_of::<PyString>() {
        return Ok(RecordDefault::String(value.extract()?));
    }
    if value.is_instance_of::<PyBytes>() || value.is_instance_of::<PyByteArray>() {
        return Ok(RecordDefault::Bytes(value.extract()?));
    }
    let name = value.get_type().name()?.to_string();
    let repr = value.repr()?.to_string();
    Err(invalid(
        py,
        format!(
            "entry {index} is a {name} ({repr}); expected int, float, bool, str, bytes or a \
             numpy scalar (np.int64, np.float64, np.float32...)"
        ),
    ))
}

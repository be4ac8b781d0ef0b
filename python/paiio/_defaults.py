"""record_defaults: the output type of each column, chosen by the type of its default
(as ``tf.io.decode_csv`` does).

=========================================  ===========
default                                    dtype
=========================================  ===========
Python ``int``                             int32
Python ``float``                           float32
``np.int64(0)``, ``np.array(0, np.int64)``  int64
``np.int32``                               int32
``np.float64``                             float64
``np.float32``                             float32
``bool``, ``np.bool_``                     bool
``str``                                    string (``str`` in numpy, ``tf.string``)
``bytes``                                  string (``bytes`` in numpy, ``tf.string``)
=========================================  ===========

An entry may also be a one-element list (``[0]``, ``[""]``), a 0-d or one-element numpy
array, or anything with a ``.numpy()`` method (an eager tensor). NULL becomes the default.
"""

import numpy as np

from .errors import InvalidArgumentError

__all__ = ["record_defaults_spec", "KINDS"]

#: Kinds the native reader accepts, with their numpy dtypes.
KINDS = {
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "bool": np.dtype(np.bool_),
    "string": np.dtype(object),
    "bytes": np.dtype(object),
}


def _unwrap(value, index):
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise InvalidArgumentError(
                f"invalid record_defaults: entry {index} is a list of {len(value)} values; "
                "give a scalar or a one-element list")
        return _unwrap(value[0], index)
    if hasattr(value, "numpy") and callable(value.numpy) and not isinstance(value, np.ndarray):
        return _unwrap(value.numpy(), index)
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise InvalidArgumentError(
                f"invalid record_defaults: entry {index} is an array of {value.size} values; "
                "give a scalar or a one-element array")
        return value.reshape(-1)[0]
    return value


def _kind(value, index):
    # bool before int: bool is an int subclass.
    if isinstance(value, (bool, np.bool_)):
        return "bool", bool(value)
    if isinstance(value, np.integer):
        if value.dtype == np.int64 or value.dtype == np.uint32 or value.dtype == np.uint64:
            return "int64", int(value)
        return "int32", int(value)
    if isinstance(value, np.floating):
        if value.dtype == np.float64:
            return "float64", float(value)
        return "float32", float(value)
    if isinstance(value, int):
        return "int32", value
    if isinstance(value, float):
        return "float32", value
    if isinstance(value, str):
        return "string", str(value)
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        return "bytes", bytes(value)
    raise InvalidArgumentError(
        f"invalid record_defaults: entry {index} is a {type(value).__name__} "
        f"({value!r}); expected int, float, bool, str, bytes or a numpy scalar "
        "(np.int64, np.float64, np.float32...)")


def record_defaults_spec(record_defaults):
    """``[(kind, value)]`` for the native reader from user record_defaults."""
    if record_defaults is None:
        return None
    if isinstance(record_defaults, (str, bytes)) or not hasattr(record_defaults, "__iter__"):
        raise InvalidArgumentError(
            "invalid record_defaults: expected a list or tuple with one default per column, "
            f"not {type(record_defaults).__name__}")
    return [_kind(_unwrap(v, i), i) for i, v in enumerate(record_defaults)]

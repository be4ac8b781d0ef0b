"""PyODPS's own Tunnel readers and writers, on in-memory streams, for tests/it/tunnel_wire.rs.

    python tunnel_wire_pyodps.py COMMAND SPEC IN OUT

SPEC is a JSON file: {"columns": [[name, type], ...], "rows": [...], "compress": a
CompressOption algorithm name or null}. Values are in the canonical JSON of
paiio_storage::protocol::tunnel::testing (integers, hex float bits, decimal text with the
column's scale, [seconds, nanoseconds], lists for arrays, [key, value] lists for maps, value
lists for structs).

    read-records   IN is a record stream; OUT gets its rows (TunnelRecordReader)
    write-records  OUT gets SPEC's rows as a record stream (RecordWriter)
    read-arrow     IN is an Arrow stream; OUT gets its rows (TunnelArrowReader)
    write-arrow    OUT gets SPEC's rows as an Arrow stream (ArrowWriter)
    capabilities   OUT gets {"version", "pandas", "c_reader", "c_writer"}

Everything runs in UTC with options.local_timezone = False, so DATETIME and TIMESTAMP values
are epoch instants on both sides.
"""

import datetime
import io
import json
import struct
import sys
import types as pytypes
from collections import OrderedDict
import decimal
from decimal import Decimal

import odps
import pyarrow as pa
from odps import compat, options
from odps import types as otypes
from odps.models import Record, TableSchema
from odps.tunnel.io import reader as reader_mod
from odps.tunnel.io import writer as writer_mod
from odps.tunnel.io.stream import CompressOption, get_decompress_stream
from odps.tunnel.io.types import odps_schema_to_arrow_schema

try:
    import pandas as pd
except ImportError:
    pd = None

options.local_timezone = False
# Unbounded decimals have up to 54 digits; Python's default context keeps 28.
decimal.getcontext().prec = 100
# PyODPS refuses DATETIME values before 1928 unless told otherwise.
options.allow_antique_date = True
options.retry_times = 0
options.struct_as_dict = False

EPOCH_DATE = datetime.date(1970, 1, 1)
EPOCH = datetime.datetime(1970, 1, 1)


def scale_of(t):
    return t.scale if t.precision is not None else 18


def quantize(value, t):
    return format(Decimal(value).quantize(Decimal(1).scaleb(-scale_of(t))), "f")


# ---- canonical JSON -> Python values for the record writer ----


def to_py(t, v):
    if v is None:
        return None
    if t in otypes.integer_types:
        return int(v)
    if t == otypes.float_:
        return struct.unpack(">f", bytes.fromhex(v))[0]
    if t == otypes.double:
        return struct.unpack(">d", bytes.fromhex(v))[0]
    if t == otypes.boolean:
        return bool(v)
    if t == otypes.binary:
        return bytes.fromhex(v)
    if t == otypes.json:
        return v
    if isinstance(t, otypes.Decimal):
        return Decimal(v)
    if t == otypes.date:
        return EPOCH_DATE + datetime.timedelta(days=v)
    if t == otypes.datetime:
        return EPOCH + datetime.timedelta(milliseconds=v)
    if t == otypes.timestamp or t == otypes.timestamp_ntz:
        return pd.Timestamp(v[0] * 1_000_000_000 + v[1], unit="ns")
    if t == otypes.interval_day_time:
        return pd.Timedelta(seconds=v[0], nanoseconds=v[1])
    if t == otypes.interval_year_month:
        return compat.Monthdelta(v)
    if isinstance(t, otypes.Array):
        return [to_py(t.value_type, x) for x in v]
    if isinstance(t, otypes.Map):
        return OrderedDict((to_py(t.key_type, k), to_py(t.value_type, x)) for k, x in v)
    if isinstance(t, otypes.Struct):
        return tuple(to_py(ft, x) for ft, x in zip(t.field_types.values(), v))
    return v  # strings, char, varchar


# ---- Python values from the record reader -> canonical JSON ----


def from_py(t, v):
    if v is None:
        return None
    if t in otypes.integer_types:
        return int(v)
    if t == otypes.float_:
        return struct.pack(">f", v).hex()
    if t == otypes.double:
        return struct.pack(">d", v).hex()
    if t == otypes.boolean:
        return bool(v)
    if t == otypes.binary:
        return bytes(v).hex()
    if t == otypes.json:
        return v
    if isinstance(t, otypes.Decimal):
        return quantize(v, t)
    if t == otypes.date:
        return (v - EPOCH_DATE).days
    if t == otypes.datetime:
        return (v - EPOCH) // datetime.timedelta(milliseconds=1)
    if t == otypes.timestamp or t == otypes.timestamp_ntz:
        return list(divmod(int(v.value), 1_000_000_000))
    if t == otypes.interval_day_time:
        return list(divmod(int(v.value), 1_000_000_000))
    if t == otypes.interval_year_month:
        return v.total_months()
    if isinstance(t, otypes.Array):
        return [from_py(t.value_type, x) for x in v]
    if isinstance(t, otypes.Map):
        return [[from_py(t.key_type, k), from_py(t.value_type, x)] for k, x in v.items()]
    if isinstance(t, otypes.Struct):
        values = list(v.values()) if isinstance(v, dict) else list(v)
        return [from_py(ft, x) for ft, x in zip(t.field_types.values(), values)]
    if isinstance(v, bytes):
        return v.decode("utf-8")
    return v


# ---- Arrow: canonical JSON <-> Python values pyarrow builds and gives back ----


def to_arrow_py(t, v):
    """A value pa.array(..., type=odps_type_to_arrow_type(t)) accepts."""
    if v is None:
        return None
    if t == otypes.date:
        return EPOCH_DATE + datetime.timedelta(days=v)
    if t == otypes.datetime:
        return v  # int milliseconds for timestamp[ms]
    if t == otypes.timestamp or t == otypes.timestamp_ntz:
        return v[0] * 1_000_000_000 + v[1]
    if t == otypes.interval_day_time:
        return {"sec": v[0], "nano": v[1]}
    if isinstance(t, otypes.Array):
        return [to_arrow_py(t.value_type, x) for x in v]
    if isinstance(t, otypes.Map):
        return [(to_arrow_py(t.key_type, k), to_arrow_py(t.value_type, x)) for k, x in v]
    if isinstance(t, otypes.Struct):
        return {
            name: to_arrow_py(ft, x)
            for (name, ft), x in zip(t.field_types.items(), v)
        }
    return to_py(t, v)


def int_type(arrow_type):
    """arrow_type with every timestamp and date as a plain integer (for to_pylist)."""
    if pa.types.is_timestamp(arrow_type):
        return pa.int64()
    if pa.types.is_date32(arrow_type):
        return pa.int32()
    if pa.types.is_list(arrow_type):
        return pa.list_(int_type(arrow_type.value_type))
    if pa.types.is_map(arrow_type):
        return pa.map_(int_type(arrow_type.key_type), int_type(arrow_type.item_type))
    if pa.types.is_struct(arrow_type):
        return pa.struct([pa.field(f.name, int_type(f.type)) for f in arrow_type])
    return arrow_type


def from_arrow_py(t, v):
    if v is None:
        return None
    if t == otypes.date or t == otypes.datetime:
        return int(v)
    if t == otypes.timestamp or t == otypes.timestamp_ntz:
        return list(divmod(int(v), 1_000_000_000))
    if t == otypes.interval_day_time:
        return [v["sec"], v["nano"]]
    if isinstance(t, otypes.Array):
        return [from_arrow_py(t.value_type, x) for x in v]
    if isinstance(t, otypes.Map):
        return [[from_arrow_py(t.key_type, k), from_arrow_py(t.value_type, x)] for k, x in v]
    if isinstance(t, otypes.Struct):
        return [from_arrow_py(ft, v[name]) for name, ft in t.field_types.items()]
    return from_py(t, v)


# ---- commands ----


class _Response:
    headers = {}


def compress_option(spec):
    algo = spec.get("compress")
    return CompressOption(algo) if algo else None


def input_stream(spec, path):
    with open(path, "rb") as f:
        raw = io.BytesIO(f.read())
    option = compress_option(spec)
    if option is None:
        return raw
    return get_decompress_stream(raw, option, requests=False)


def collect_body(out):
    def post(data):
        out.extend(b"".join(bytes(chunk) for chunk in data))
        return _Response()

    return post


def main():
    command, spec_path, in_path, out_path = sys.argv[1:5]
    if command == "capabilities":
        with open(out_path, "w") as f:
            json.dump(
                {
                    "version": odps.__version__,
                    "pandas": pd is not None,
                    "c_reader": reader_mod.BaseTunnelRecordReader.__module__.endswith("_c"),
                    "c_writer": writer_mod.BaseRecordWriter.__module__.endswith("_c"),
                },
                f,
            )
        return
    with open(spec_path) as f:
        spec = json.load(f)
    names = [c[0] for c in spec["columns"]]
    schema = TableSchema.from_lists(names, [c[1] for c in spec["columns"]])
    col_types = [c.type for c in schema.simple_columns]

    if command == "read-records":
        reader = reader_mod.TunnelRecordReader(
            schema, lambda *args, **kw: input_stream(spec, in_path)
        )
        rows = [[from_py(t, v) for t, v in zip(col_types, rec.values)] for rec in reader]
        with open(out_path, "w") as f:
            json.dump(rows, f)
    elif command == "write-records":
        body = bytearray()
        writer = writer_mod.RecordWriter(
            schema, collect_body(body), compress_option=compress_option(spec)
        )
        for row in spec["rows"]:
            values = [to_py(t, v) for t, v in zip(col_types, row)]
            writer.write(Record(schema=schema, values=values))
        writer.close()
        with open(out_path, "wb") as f:
            f.write(bytes(body))
    elif command == "read-arrow":
        reader = reader_mod.TunnelArrowReader(
            schema, lambda *args, **kw: input_stream(spec, in_path)
        )
        table = reader.read()
        rows = [[] for _ in range(table.num_rows)]
        for t, column in zip(col_types, table.columns):
            values = column.cast(int_type(column.type)).to_pylist()
            for row, v in zip(rows, values):
                row.append(from_arrow_py(t, v))
        with open(out_path, "w") as f:
            json.dump(rows, f)
    elif command == "write-arrow":
        if writer_mod.pd is None:
            # ArrowWriter.write asks isinstance(data, pd.DataFrame) first, which fails when
            # pandas is not installed; nothing else it does with Arrow data needs pandas.
            writer_mod.pd = pytypes.SimpleNamespace(DataFrame=type("NoPandas", (), {}))
        arrow_schema = odps_schema_to_arrow_schema(schema)
        arrays = [
            pa.array([to_arrow_py(t, row[i]) for row in spec["rows"]], type=field.type)
            for i, (t, field) in enumerate(zip(col_types, arrow_schema))
        ]
        table = pa.Table.from_arrays(arrays, schema=arrow_schema)
        body = bytearray()
        writer = writer_mod.ArrowWriter(
            schema,
            collect_body(body),
            compress_option=compress_option(spec),
            chunk_size=spec.get("chunk_size"),
        )
        writer.write(table)
        writer.close()
        with open(out_path, "wb") as f:
            f.write(bytes(body))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()

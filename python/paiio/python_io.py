"""PAI's ``paiio.python_io``: :class:`TableReader` and :class:`TableWriter`.

Both work without TensorFlow. The configuration (``ODPS_CONFIG_FILE_PATH``, or the
``ALIBABA_CLOUD_ACCESS_KEY_ID``/``ALIBABA_CLOUD_ACCESS_KEY_SECRET``/``ODPS_ENDPOINT``
variables, or else the local warehouse ``PAIIO_WAREHOUSE``) is read when a reader or writer
is created, not at import, so a script may set ``os.environ['ODPS_CONFIG_FILE_PATH']`` right
before.
"""

import numpy as np

from . import _native
from .errors import OutOfRangeException, OutOfRangeError  # noqa: F401  (PAI's names)

__all__ = ["TableReader", "TableWriter", "OutOfRangeException", "OutOfRangeError"]

_PYTYPES = {"int": int, "float": float, "bool": bool, "object": object}


class TableReader:
    """Reads a slice of one or more MaxCompute tables into numpy structured arrays.

    Args:
        table: ``odps://project/tables/table[/pt=v/...]`` (also
            ``odps://project/tables/schema.table``); several tables as a list or one
            comma-separated string. All must have the same columns.
        selected_cols: comma-separated column names (or a list); ``""`` reads every column in
            table order. The output follows this order.
        excluded_cols: comma-separated column names to leave out; not with ``selected_cols``.
        slice_id, slice_count: this worker's contiguous share of every table (balanced to one
            row, the same split on every run).
        num_threads: prefetch streams, 0 = automatic, else 1..64.
        capacity: rows of prefetch, 0 = automatic (about 64 MB per thread).
        strings_as_bytes: return STRING columns as ``bytes`` (what ``tf.python_io`` returned)
            instead of ``str``. BINARY columns are always ``bytes``.
        batch_rows: rows per request (and per iteration chunk).
        record_defaults: (beyond PAI's TableReader) one default per column, whose type picks
            the column's dtype and which replaces NULLs, as for ``TableRecordDataset`` (see
            ``paiio._native.record_defaults``).
        options: more keyword arguments of ``paiio._native.Reader`` (``equal``,
            ``shuffle_seed``, ``epoch``, ``byte_budget``...).

    NULL values are 0 in integer columns, False in bool columns, NaN in float columns and
    None in object (string, binary, decimal, nested) columns. DATETIME is epoch milliseconds,
    TIMESTAMP epoch nanoseconds, DATE days since 1970-01-01; DECIMAL is its text and
    ARRAY/MAP/STRUCT their JSON text.
    """

    def __init__(self, table, selected_cols="", excluded_cols="", slice_id=0, slice_count=1,
                 num_threads=0, capacity=0, strings_as_bytes=False, batch_rows=None,
                 record_defaults=None, **options):
        self._reader = _native.Reader(
            table,
            selected_cols=selected_cols or None,
            excluded_cols=excluded_cols or None,
            slice_id=slice_id,
            slice_count=slice_count,
            num_threads=num_threads,
            capacity=capacity,
            strings_as_bytes=strings_as_bytes,
            batch_rows=batch_rows,
            record_defaults=record_defaults,
            **options,
        )

    # PAI API

    def read(self, num_records=1, allow_smaller_final_batch=True):
        """The next ``num_records`` rows as a numpy record array (fields named after the
        columns, in selected order): ``rows[0]['col']``, ``rows[0][i]``.

        Fewer rows come back when fewer remain; after the last row,
        :class:`OutOfRangeException`. With ``allow_smaller_final_batch=False`` a final
        partial batch raises :class:`OutOfRangeException` instead (and is not consumed).
        """
        num_records = int(num_records)
        if num_records < 1:
            raise ValueError(f"num_records must be at least 1, not {num_records}")
        if not allow_smaller_final_batch:
            left = self._reader.row_count - self._reader.position
            if left < num_records:
                raise OutOfRangeException(
                    f"out of range: {left} rows remain in the slice, fewer than "
                    f"num_records={num_records} (allow_smaller_final_batch=False)")
        return self._reader.read_struct(num_records).view(np.recarray)

    def seek(self, offset=0):
        """Moves to row ``offset`` of the slice; past the end raises
        :class:`OutOfRangeException`."""
        self._reader.seek(int(offset))

    def get_row_count(self):
        """Rows in this slice."""
        return self._reader.row_count

    def get_schema(self):
        """The columns read, as a structured array with fields ``colname``, ``typestr``
        (MaxCompute type name, e.g. ``bigint``) and ``pytype`` (``int``, ``float``,
        ``bool`` or ``object``)."""
        rows = [(name, typestr, _PYTYPES[pytype]) for name, typestr, pytype in self._reader.schema()]
        out = np.empty(len(rows), dtype=[("colname", object), ("typestr", object), ("pytype", object)])
        for i, row in enumerate(rows):
            out[i] = row
        return out

    def close(self):
        """Stops reading and releases the prefetch buffers."""
        self._reader.close()

    # Beyond PAI

    def read_batch(self, num_records):
        """The next rows as a dict ``column -> 1-D numpy array`` (numeric columns without
        NULLs are not copied)."""
        return self._reader.read_batch(int(num_records))

    def read_arrow(self, num_records):
        """The next rows as a ``pyarrow.RecordBatch`` (pyarrow is imported now)."""
        import pyarrow as pa

        return pa.record_batch(self._reader.read_arrow(int(num_records)))

    def to_arrow_reader(self):
        """The rest of the slice as a ``pyarrow.RecordBatchReader``."""
        import pyarrow as pa

        return pa.RecordBatchReader.from_stream(self._reader)

    def __arrow_c_stream__(self, requested_schema=None):
        return self._reader.__arrow_c_stream__(requested_schema)

    def tell(self):
        """The slice position of the next row."""
        return self._reader.position

    def state(self):
        """The exact position (a JSON string) for :meth:`restore`."""
        return self._reader.state()

    def restore(self, state):
        self._reader.restore(state)

    @property
    def closed(self):
        return self._reader.closed

    @property
    def native(self):
        """The underlying ``paiio._native.Reader``."""
        return self._reader

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __iter__(self):
        """Rows one by one (numpy records) until the end of the slice."""
        chunk = self._reader.batch_rows
        while True:
            try:
                rows = self.read(chunk)
            except OutOfRangeException:
                return
            yield from rows

    def __repr__(self):
        return f"TableReader(columns={self._reader.columns}, row_count={self._reader.row_count})"


def _is_scalar(v):
    return isinstance(v, (str, bytes, int, float, bool, type(None), np.generic))


class TableWriter:
    """Appends rows to a MaxCompute table or partition; they become visible at
    :meth:`close` (all of them or none).

    Args:
        table: ``odps://project/tables/table[/pt=v/...]``.
        slice_id: this writer's id: two live writers with the same ``slice_id`` on one table
            is an error (:class:`paiio.ConflictError`).
    """

    def __init__(self, table, slice_id=0):
        self._writer = _native.Writer(table, int(slice_id))

    def write(self, values, indices, allow_type_cast=True):
        """Writes one row (a tuple, list or 1-D array of scalars) or many rows (a list of
        tuples/lists, a 2-D array or a numpy structured array) to the table columns at
        ``indices`` (positions among the data columns, then the partition columns).

        ``allow_type_cast`` is accepted for common_io code; values are always converted to
        the column types when that is safe.
        """
        del allow_type_cast
        indices = [int(i) for i in np.asarray(indices).reshape(-1)]
        if isinstance(values, np.ndarray):
            if values.dtype.names is not None:
                self._writer.write_struct(np.ascontiguousarray(values.reshape(-1)), indices)
            elif values.ndim == 1:
                self._writer.write_rows([values.tolist()], indices)
            else:
                self._writer.write_rows(values.tolist(), indices)
            return None
        if isinstance(values, np.void):
            self._writer.write_rows([values.tolist()], indices)
            return None
        if isinstance(values, (tuple, list)):
            if len(values) > 0 and all(_is_scalar(v) for v in values):
                self._writer.write_rows([values], indices)
            else:
                self._writer.write_rows(
                    [v.tolist() if isinstance(v, (np.ndarray, np.void)) else v for v in values],
                    indices)
            return None
        if hasattr(values, "__arrow_c_stream__") or hasattr(values, "__arrow_c_array__"):
            self._writer.write_arrow(values, indices)
            return None
        raise TypeError(
            f"values must be a tuple, list or numpy array, not {type(values).__name__}")

    def write_arrow(self, data, indices=None):
        """Writes Arrow data (pyarrow Table/RecordBatch/reader, anything with the Arrow
        PyCapsule interface); without ``indices``, columns go to table columns by name."""
        self._writer.write_arrow(data, None if indices is None else [int(i) for i in indices])

    def close(self):
        """Commits: every row of this writer becomes visible."""
        self._writer.close()

    def abort(self):
        """Discards every row of this writer."""
        self._writer.abort()

    @property
    def native(self):
        return self._writer

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            # Nothing of a failed block becomes visible.
            try:
                self._writer.abort()
            except Exception:  # noqa: BLE001 - the original exception matters more
                pass
        return False

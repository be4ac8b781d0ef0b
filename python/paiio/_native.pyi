"""Type stubs of the Rust extension module ``paiio._native`` (python/src/*.rs).

Blocking calls release the GIL; reads raise ``KeyboardInterrupt`` promptly on Ctrl-C (the
reader's position is then unchanged).
Errors are the classes of :mod:`paiio.errors`.
"""

from typing import Any, Callable, Iterable, Literal, Optional, Sequence, Union

import numpy as np

__version__: str

_Columns = Union[str, Sequence[str], None]
_DefaultKind = Literal["int32", "int64", "float32", "float64", "bool", "string", "bytes"]

def slice_range(total: int, slice_id: int, slice_count: int, equal: bool = False) -> tuple[int, int]:
    """The rows ``(start, end)`` of slice ``slice_id`` of ``slice_count`` over ``total`` rows."""
    ...

def table_uris(tables: Union[str, bytes, Sequence[Union[str, bytes]]]) -> list[str]:
    """One URI per table, as written, from a URI, a comma-separated list or a list of either
    (commas of a partition spec stay); each is checked."""
    ...

def row_counts(tables: Union[str, Sequence[str]]) -> list[int]:
    """The rows of each table (a read session each; no reader is opened)."""
    ...

def record_defaults(values: Sequence[Any]) -> list[tuple[_DefaultKind, Any]]:
    """``[(kind, value)]`` of record_defaults: the output type each entry asks for (as
    ``tf.io.decode_csv``: ``int`` -> int32, ``float`` -> float32, ``np.int64``/``np.uint32``/
    ``np.uint64`` -> int64, other numpy ints -> int32, ``np.float64`` -> float64,
    ``np.float32`` -> float32, ``bool``/``np.bool_`` -> bool, ``str`` -> string, ``bytes`` ->
    bytes; an entry may be a one-element list or array, or an eager tensor) and the default
    as a value of that kind. A bad entry raises ``ConversionError``."""
    ...

def auto_shards(table_rows: Sequence[int], world: int, batch: int) -> int:
    """Virtual shards per rank for ``paiio.torch.TableDataset(num_shards=0)``."""
    ...

def epoch_batches(table_rows: Sequence[int], rank: int, world: int, shards: int, batch: int,
                  drop_last: bool, equal: bool) -> list[tuple[int, int, int]]:
    """The batches of a rank's epoch, ``(shard, batch_in_shard, rows)`` in order: round ``j``
    takes batch ``j`` of every virtual shard that still has one."""
    ...

class ArrowBatch:
    """A record batch offered through the Arrow PyCapsule interface
    (``pyarrow.record_batch(batch)`` imports it without copying)."""

    @property
    def num_rows(self) -> int: ...
    @property
    def num_columns(self) -> int: ...
    def __len__(self) -> int: ...
    def __arrow_c_schema__(self) -> object: ...
    def __arrow_c_array__(self, requested_schema: object = None) -> tuple[object, object]: ...

class ArrowOwner:
    """Keeps Arrow memory alive under numpy arrays that borrow it (their ``.base``)."""

class PackedBatch:
    """A batch read and prepared by a :class:`BatchStream`, not made into Python objects:
    numeric values and text offsets and bytes, packed into one flat buffer by ``write``."""

    @property
    def nbytes(self) -> int: ...
    @property
    def rows(self) -> int: ...
    def write(self, buffer: np.ndarray, offset: int) -> int:
        """Packs the batch into a writable contiguous uint8 array at ``offset`` (a multiple
        of 8); returns the bytes written (``nbytes``)."""
    def to_bytes(self) -> bytes: ...

class BatchStream:
    """The batches of a plan, read, sliced and coerced ahead by a thread into a bounded
    queue (:meth:`Reader.stream`)."""

    @property
    def columns(self) -> list[str]: ...
    def next(self, tensor: Optional[Callable[[np.ndarray], Any]] = None,
             as_tuple: bool = False) -> Optional[Any]:
        """The next batch (``None`` after the last), as :meth:`Reader.read_batch` gives it;
        with ``tensor`` (such as ``torch.from_numpy``) its numeric and bool columns passed
        through it, with ``as_tuple`` a tuple in column order."""
    def next_packed(self) -> Optional[PackedBatch]: ...
    def close(self) -> None:
        """Stops the thread; later calls return ``None``."""

class SlotLease:
    """A worker's shared-memory slot lent to the columns of one received batch (see
    :func:`receive`): given back when the last of them is dropped."""

def receive(buffer: np.ndarray, items: list[tuple[int, int]], names: Optional[list[str]] = None,
            tensor: Optional[Callable[[np.ndarray], Any]] = None) -> list[Any]:
    """The batches packed at ``items`` (``(offset of the batch, offset of its slot's u32
    state)``) of ``buffer`` (a writable uint8 array), in one call: dicts ``names -> column``
    (tuples without ``names``), numeric and bool columns through ``tensor``. Numeric columns
    and fixed-width strings stay in the buffer and lease their slot (:class:`SlotLease`)
    until dropped; a malformed batch raises ``ValueError`` and gives every slot back."""

def unpack(buffer: np.ndarray, offset: int = 0, release: Optional[int] = None) -> list[np.ndarray]:
    """The columns of a batch packed at ``offset`` of ``buffer`` (a uint8 array), copied out;
    text columns as object arrays. A malformed buffer raises ``ValueError``. With
    ``release``, the u32 at that offset is then set to 0 (release ordering)."""

def slot_state(buffer: np.ndarray, offset: int) -> int: ...
def set_slot_state(buffer: np.ndarray, offset: int, value: int) -> None: ...

class Reader:
    """Reads this worker's slice of one or more tables.

    ``record_defaults`` (one default per column, see :func:`record_defaults`) types the
    columns and replaces NULLs; without it, columns keep their natural numpy types
    and NULL is 0 / False / NaN / None. ``fixed_strings`` delivers text columns as numpy
    fixed-width bytes (``S<n>``, the batch's longest value) instead of objects, refusing
    NULL and values that end with a zero byte (``read_struct`` cannot use it); rows that
    cannot be delivered are not consumed.
    """

    def __init__(
        self,
        tables: Union[str, Sequence[str]],
        *,
        selected_cols: _Columns = None,
        excluded_cols: _Columns = None,
        slice_id: int = 0,
        slice_count: int = 1,
        num_threads: int = 0,
        capacity: int = 0,
        byte_budget: Optional[int] = None,
        equal: bool = False,
        shuffle_seed: Optional[int] = None,
        epoch: int = 0,
        shuffle_buffer: Optional[int] = None,
        shuffle_block: Optional[int] = None,
        batch_rows: Optional[int] = None,
        chunk_rows: int = 0,
        record_defaults: Optional[Sequence[Any]] = None,
        strings_as_bytes: bool = False,
        fixed_strings: bool = False,
    ) -> None: ...
    def read_struct(self, n: int) -> np.ndarray:
        """Up to ``n`` rows as a structured array; ``OutOfRangeException`` after the end."""
    def read_batch(self, n: int) -> dict[str, np.ndarray]:
        """Up to ``n`` rows as ``{column: 1-D array}`` (numeric columns without NULLs are
        zero-copy views of the Arrow data)."""
    def read_arrow(self, n: int) -> ArrowBatch: ...
    def seek(self, offset: int) -> None: ...
    def prefetch(self) -> None:
        """Starts reading ahead now rather than at the first read."""
    def open_slice(self, slice_id: int, slice_count: int) -> "Reader":
        """A new reader of another slice of the same tables, over this reader's read
        sessions (no new session: one snapshot of the tables), with its other options."""
    def stream(self, plan: Sequence[tuple[int, int, int, int]], depth: int = 4) -> BatchStream:
        """The batches of ``plan`` (``[(slice_id, slice_count, first row, rows)]``, in
        order; a slice's batches in row order) over this reader's read sessions, read ahead
        by a thread into a queue of ``depth`` batches."""
    def set_epoch(self, epoch: int) -> None: ...
    def state(self) -> str:
        """The exact position (JSON) for :meth:`restore`."""
    def restore(self, state: str) -> None: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def row_count(self) -> int: ...
    @property
    def position(self) -> int: ...
    @property
    def num_threads(self) -> int: ...
    @property
    def batch_rows(self) -> int: ...
    @property
    def columns(self) -> list[str]: ...
    @property
    def dtype(self) -> np.dtype: ...
    def schema(self) -> list[tuple[str, str, Literal["int", "float", "bool", "object"]]]:
        """``[(name, MaxCompute type, python type name)]`` in output order."""
    def __arrow_c_schema__(self) -> object: ...
    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        """The rest of the slice as an Arrow stream of ``batch_rows``-row batches."""

class Writer:
    """Appends to a table or partition; rows become visible at :meth:`close`."""

    def __init__(self, table: str, slice_id: int = 0) -> None: ...
    def write_rows(self, rows: Iterable[Sequence[Any]], indices: Sequence[int]) -> None: ...
    def write_struct(self, array: np.ndarray, indices: Sequence[int]) -> None: ...
    def write_arrow(self, data: Any, indices: Optional[Sequence[int]] = None) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> dict[str, int]: ...
    def abort(self) -> None: ...
    @property
    def rows_written(self) -> int: ...
    @property
    def columns(self) -> list[tuple[str, str]]: ...

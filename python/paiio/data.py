"""TensorFlow: :class:`TableRecordDataset`, PAI's ``paiio.data.TableRecordDataset``.

A real ``tf.data.Dataset`` whose elements are flat tuples of scalar tensors, one per column,
typed by ``record_defaults``. Rows come from the native reader in large column batches
(``tf.data.Dataset.from_generator`` over batches, then ``unbatch``): no Python runs per row.
It works in TF2 eager mode and in ``tf.compat.v1`` graph mode (one-shot iterators in a
``Session``). TF1-style scripts run unchanged on TensorFlow 2: see
:func:`_graph_mode_for_v1_scripts`.

TensorFlow is imported when a dataset is created, not when ``paiio`` is imported. The helpers
at the top of this module are shared with :mod:`paiio.torch` and import nothing heavy.
"""

from __future__ import annotations

import re
from typing import Any, List, Optional

import numpy as np

from . import _native
from .errors import OutOfRangeException

__all__ = ["TableRecordDataset"]

#: Rows per batch handed from the native reader to TensorFlow.
_TF_BATCH_ROWS = 4096

# ---- helpers shared with paiio.torch ---------------------------------------------------------


def column_text(cols: Any) -> Optional[str]:
    """``selected_cols``/``excluded_cols`` as the comma-separated text the native reader
    takes; ``None`` or empty: not given."""
    if cols is None:
        return None
    if isinstance(cols, bytes):
        cols = cols.decode("utf-8")
    if isinstance(cols, str):
        text = ",".join(c.strip() for c in cols.split(",") if c.strip())
    else:
        text = ",".join(str(c).strip() for c in cols)
    return text or None


def open_reader(tables: Any, **kwargs: Any) -> Any:
    """Opens the native reader (``paiio._native.Reader``): ``tables`` as it takes them (a URI,
    a comma-separated list, a list of either), keyword arguments as its signature."""
    return _native.Reader(tables, **{k: v for k, v in kwargs.items() if v is not None})


# ---- TensorFlow ------------------------------------------------------------------------------


def _tf():
    import tensorflow as tf

    return tf


def _tf_dtype(kind: str):
    tf = _tf()
    return {
        "int32": tf.int32,
        "int64": tf.int64,
        "float32": tf.float32,
        "float64": tf.float64,
        "bool": tf.bool,
        "string": tf.string,
        "bytes": tf.string,
    }[kind]


class _Source:
    """A picklable generator factory: the column batches of some tables' slice."""

    def __init__(self, defaults, kinds, options):
        self.defaults = defaults
        self.kinds = kinds
        self.options = options

    def batches(self, tables: Any):
        reader = open_reader(
            tables, record_defaults=self.defaults, strings_as_bytes=True, **self.options
        )
        try:
            n = len(self.kinds)
            while True:
                try:
                    cols = reader.read_batch(_TF_BATCH_ROWS)
                except OutOfRangeException:
                    return
                arrays = list(cols.values())
                if len(arrays) != n:  # pragma: no cover - checked at open
                    raise ValueError(f"{len(arrays)} columns read, {n} record_defaults")
                yield tuple(arrays)
        finally:
            reader.close()


def _decode_name(name: Any) -> str:
    if isinstance(name, (bytes, np.bytes_)):
        return bytes(name).decode("utf-8")
    if hasattr(name, "numpy"):
        return _decode_name(name.numpy())
    return str(name)


def _make_dataset(
    filenames: Any,
    record_defaults: Any,
    selected_cols: Any,
    excluded_cols: Any,
    slice_id: int,
    slice_count: int,
    num_threads: int,
    capacity: int,
):
    tf = _tf()
    kinds, defaults = [], []
    for kind, value in _native.record_defaults(record_defaults):
        kinds.append(kind)
        defaults.append(value)
    selected = column_text(selected_cols)
    excluded = column_text(excluded_cols)
    if selected and excluded:
        raise ValueError(
            f"selected_cols ({selected}) and excluded_cols ({excluded}) are both given; "
            "choose columns with one of them"
        )
    options = dict(
        selected_cols=selected,
        excluded_cols=excluded,
        slice_id=int(slice_id),
        slice_count=int(slice_count),
        num_threads=int(num_threads),
        capacity=int(capacity),
    )
    source = _Source(defaults, kinds, options)
    dtypes = [_tf_dtype(k) for k in kinds]
    signature = tuple(tf.TensorSpec(shape=[None], dtype=d) for d in dtypes)

    def per_table_list(tables: Any):
        return tf.data.Dataset.from_generator(
            lambda: source.batches(tables), output_signature=signature
        ).unbatch()

    # Tables known now (a str, a list, an eager tensor): validate by opening them here, so
    # that a wrong record_defaults count, an unknown column or an impossible conversion
    # fails at construction.
    names = None
    if isinstance(filenames, (str, bytes, list, tuple, np.ndarray)):
        names = filenames
    elif isinstance(filenames, tf.Tensor) and hasattr(filenames, "numpy"):
        names = [_decode_name(v) for v in np.atleast_1d(filenames.numpy())]
    if names is not None:
        reader = open_reader(names, record_defaults=defaults, strings_as_bytes=True, **options)
        reader.close()
        return per_table_list(names)

    # Work-queue style: a dataset (or a graph tensor) of table names, read one after another.
    if isinstance(filenames, tf.data.Dataset):
        queue = filenames
    elif isinstance(filenames, (tf.Tensor, tf.Variable)):
        queue = tf.data.Dataset.from_tensor_slices(tf.reshape(filenames, [-1]))
    else:
        raise TypeError(
            "filenames must be a str, a list of str, a 1-D string tensor or a tf.data.Dataset "
            f"of strings, not {type(filenames).__name__}"
        )
    if queue.element_spec.dtype != tf.string:
        raise TypeError(f"filenames must hold strings, not {queue.element_spec.dtype.name}")

    def gen(name):
        yield from source.batches(_decode_name(name))

    def per_name(name):
        return tf.data.Dataset.from_generator(
            gen, args=(name,), output_signature=signature
        ).unbatch()

    return queue.flat_map(per_name)


def _dataset_base():
    from tensorflow.python.data.ops import dataset_ops

    return dataset_ops.DatasetV2


#: A call that makes a TF1 session: ``tf.Session(``, ``tf.compat.v1.Session(``,
#: ``tf.compat.v1.train.MonitoredTrainingSession(`` and the like (never ``requests.Session(``).
_V1_SESSION_CALL = re.compile(
    r"(?:\btf|compat\s*\.\s*v1)\s*\.\s*(?:train\s*\.\s*)?"
    r"(?:Session|InteractiveSession|MonitoredTrainingSession|MonitoredSession|"
    r"SingularMonitoredSession)\s*\("
)


def _main_script_uses_v1_sessions() -> bool:
    """Whether the program's main script (``python script.py``) calls a TF1 session."""
    import sys

    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path:
        return False
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return _V1_SESSION_CALL.search(f.read()) is not None
    except OSError:
        return False


def _graph_mode_for_v1_scripts() -> None:
    """Runs TF1-style scripts unchanged on TensorFlow 2.

    PAI's scripts (the guide's TableRecordDataset example among them) are TF1 programs:
    ``make_one_shot_iterator(dataset).get_next()`` then ``Session.run``. Under TF2's default
    eager execution ``get_next()`` returns eager tensors that a session cannot run. So when
    the first TensorFlow object of the program is a TableRecordDataset (no eager operation
    has run yet) and the main script calls a TF1 session, eager execution is turned off
    before the dataset is built, as TF1 had it. ``PAIIO_TF_GRAPH_MODE=0`` never does this,
    ``=1`` always does (before any eager operation), unset or ``auto``: as described.
    """
    import logging
    import os

    setting = os.environ.get("PAIIO_TF_GRAPH_MODE", "auto").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return
    tf = _tf()
    if not tf.executing_eagerly():
        return
    from tensorflow.python.eager import context

    if getattr(context.context(), "_initialized", True):
        return  # eager operations have run: switching now would strand their tensors
    if setting in ("1", "true", "yes", "on") or _main_script_uses_v1_sessions():
        tf.compat.v1.disable_eager_execution()
        logging.getLogger("paiio").info(
            "the main script runs TF1 sessions: eager execution turned off "
            "(PAIIO_TF_GRAPH_MODE=0 keeps it)"
        )


class _Meta(type):
    """Creates the ``tf.data.Dataset`` subclass on first use, so that importing this module
    does not import TensorFlow."""

    _cls = None

    def __call__(cls, *args, **kwargs):
        dataset_class = _TableRecordDatasetClass()
        _graph_mode_for_v1_scripts()
        return dataset_class(*args, **kwargs)

    def __instancecheck__(cls, obj):
        real = _Meta._cls
        return real is not None and isinstance(obj, real)


def _TableRecordDatasetClass():
    if _Meta._cls is not None:
        return _Meta._cls
    base = _dataset_base()

    class TableRecordDataset(base):
        __doc__ = _DOC

        def __init__(
            self,
            filenames,
            record_defaults,
            selected_cols=None,
            excluded_cols=None,
            slice_id=0,
            slice_count=1,
            num_threads=0,
            capacity=0,
        ):
            self._impl = _make_dataset(
                filenames,
                record_defaults,
                selected_cols,
                excluded_cols,
                slice_id,
                slice_count,
                num_threads,
                capacity,
            )
            super().__init__(self._impl._variant_tensor)

        def _inputs(self):
            return [self._impl]

        @property
        def element_spec(self):
            return self._impl.element_spec

    TableRecordDataset.__module__ = __name__
    TableRecordDataset.__qualname__ = "TableRecordDataset"
    _Meta._cls = TableRecordDataset
    return TableRecordDataset


_DOC = """TableRecordDataset(filenames, record_defaults, selected_cols=None, excluded_cols=None,
slice_id=0, slice_count=1, num_threads=0, capacity=0)

A ``tf.data.Dataset`` of the rows of MaxCompute tables: each element a flat tuple of scalar
tensors, one per column (in ``selected_cols`` order), typed by ``record_defaults`` (``int``
-> int32, ``float`` -> float32, ``np.int64`` -> int64, ``np.float64`` -> float64,
``np.float32`` -> float32, ``str``/``bytes`` -> string, ``bool`` -> bool; an entry may be a
one-element list). NULLs become the default.

``filenames``: a table URI, a comma-separated list, a list/tuple, a 1-D string tensor, or a
``tf.data.Dataset`` of strings read one table after another. ``slice_id``/``slice_count``
split each table into contiguous balanced slices. ``num_threads``: prefetch streams (0:
automatic); ``capacity``: rows of read-ahead (0: automatic).
"""


class TableRecordDataset(metaclass=_Meta):  # noqa: D101 - replaced by the tf.data subclass
    __doc__ = _DOC

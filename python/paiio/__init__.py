"""paiio: feed ML training from MaxCompute tables.

A drop-in for scripts written for PAI's ``paiio``: ``paiio.python_io.TableReader``,
``paiio.python_io.TableWriter``, ``paiio.data.TableRecordDataset`` (TensorFlow) and
``paiio.torch`` (PyTorch), with the same top-level aliases. Importing ``paiio`` imports
neither TensorFlow nor PyTorch: ``paiio.data``/``paiio.TableRecordDataset`` and
``paiio.torch`` load them on first use.
"""

import importlib

from . import python_io
from ._native import __version__
from .errors import (
    AuthError,
    ClosedError,
    ConfigError,
    ConfigFileNotFoundError,
    ConflictError,
    ConversionError,
    InvalidArgumentError,
    OutOfRangeError,
    OutOfRangeException,
    PaiioError,
    SessionExpiredError,
    TableNotFoundError,
    TransientError,
)
from .python_io import TableReader, TableWriter

__all__ = [
    "__version__",
    "python_io",
    "data",
    "torch",
    "TableReader",
    "TableWriter",
    "TableRecordDataset",
    "PaiioError",
    "OutOfRangeException",
    "OutOfRangeError",
    "TableNotFoundError",
    "ConfigError",
    "ConfigFileNotFoundError",
    "InvalidArgumentError",
    "ConversionError",
    "AuthError",
    "SessionExpiredError",
    "TransientError",
    "ConflictError",
    "ClosedError",
]

_LAZY_MODULES = ("data", "torch")


def __getattr__(name):
    # Submodules that import TensorFlow or PyTorch load on first use.
    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "TableRecordDataset":
        return importlib.import_module(".data", __name__).TableRecordDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))

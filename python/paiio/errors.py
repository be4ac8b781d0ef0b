"""The exceptions of paiio.

One root, :class:`PaiioError`; each subclass also derives from the builtin exception users
already catch for that situation (``EOFError`` at the end of the data, ``FileNotFoundError``
for a missing table or configuration file, ``ValueError`` for a bad argument,
``PermissionError`` for bad credentials, ``ConnectionError`` for a failure that may go away).

The native module raises these classes (it imports this module), so ``except
paiio.PaiioError`` catches every error of paiio. Messages carry the whole chain of causes.
"""

__all__ = [
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


class PaiioError(Exception):
    """The root of every error paiio raises."""


class OutOfRangeException(PaiioError, EOFError):
    """Reading after the last row of a slice, or seeking past its end
    (``paiio.python_io.OutOfRangeException`` in PAI's paiio)."""


#: The spelling of TensorFlow and common_io.
OutOfRangeError = OutOfRangeException


class TableNotFoundError(PaiioError, FileNotFoundError):
    """A table, partition or project that does not exist."""


class ConfigError(PaiioError, ValueError):
    """A configuration (``ODPS_CONFIG_FILE_PATH`` file, environment variable) that is wrong."""


class ConfigFileNotFoundError(ConfigError, FileNotFoundError):
    """The file ``ODPS_CONFIG_FILE_PATH`` names cannot be read."""


class InvalidArgumentError(PaiioError, ValueError):
    """An argument that can never work: both selected_cols and excluded_cols, an unknown
    column, a bad table URI, a wrong number of record_defaults, a bad slice..."""


class ConversionError(InvalidArgumentError, TypeError):
    """A value or column that cannot be converted to the requested type; the message names
    the column, its MaxCompute type, the target type and, for a value, its row."""


class AuthError(PaiioError, PermissionError):
    """Credentials the service refused (wrong access key, bad signature, clock skew)."""


class SessionExpiredError(PaiioError):
    """A read or write session that expired on the service."""


class TransientError(PaiioError, ConnectionError):
    """A failure that may go away if the operation is tried again (network, 5xx, throttling)."""


class ConflictError(PaiioError):
    """A conflicting concurrent operation: two live writers with the same slice_id on one
    table, or a commit that lost against another."""


class ClosedError(PaiioError, ValueError):
    """Using a reader or writer after close() (like I/O on a closed file)."""

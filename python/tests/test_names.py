"""COMPAT "Names": the modules, classes and aliases PAI scripts import, and the exceptions."""
import subprocess
import sys

import pytest

import paiio
import paiio.python_io


def test_python_io_names():
    assert paiio.python_io.TableReader is paiio.TableReader
    assert paiio.python_io.TableWriter is paiio.TableWriter
    assert issubclass(paiio.python_io.OutOfRangeException, paiio.PaiioError)
    assert paiio.python_io.OutOfRangeException is paiio.OutOfRangeException


def test_import_loads_neither_tensorflow_nor_torch():
    code = (
        "import sys, paiio, paiio.python_io\n"
        "paiio.TableReader, paiio.TableWriter, paiio.PaiioError\n"
        "bad = [m for m in ('tensorflow', 'torch', 'pyarrow') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "assert 'TableRecordDataset' in dir(paiio)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lazy_names_resolve_on_use():
    # paiio.data / paiio.TableRecordDataset load TensorFlow: only check they are looked up
    # lazily (an unknown name is an AttributeError, not an import at import time).
    with pytest.raises(AttributeError):
        paiio.NoSuchThing  # noqa: B018


@pytest.mark.parametrize("cls, builtin", [
    ("OutOfRangeException", EOFError),
    ("TableNotFoundError", FileNotFoundError),
    ("ConfigError", ValueError),
    ("ConfigFileNotFoundError", FileNotFoundError),
    ("InvalidArgumentError", ValueError),
    ("ConversionError", TypeError),
    ("ConversionError", ValueError),
    ("AuthError", PermissionError),
    ("TransientError", ConnectionError),
    ("ClosedError", ValueError),
])
def test_exceptions_derive_from_the_builtins_users_catch(cls, builtin):
    c = getattr(paiio, cls)
    assert issubclass(c, paiio.PaiioError)
    assert issubclass(c, builtin)


def test_version():
    assert paiio.__version__.count(".") == 2

"""Fixtures of the paiio Python tests.

* ``wh``: a fresh local warehouse for the test, made the process default
  (``PAIIO_WAREHOUSE``; ``ODPS_CONFIG_FILE_PATH`` and the cloud variables unset), with
  helpers that create and fill tables through the ``paiio`` CLI.
* ``server``: ``paiio serve`` on its own warehouse (one per module), with an ini file for
  ``ODPS_CONFIG_FILE_PATH``; ``served`` points the process configuration at it for a test.

The CLI is ``$PAIIO_BIN``, else ``$CARGO_TARGET_DIR/debug/paiio`` (default target
``~/.cache/paiio-rs/target``); build it with ``cargo build -p paiio-cli``.
"""
import csv
import os
import re
import subprocess
import time

import pytest

ACCESS_ID = "paiio-test-id"
ACCESS_KEY = "paiio-test-secret"
PROJECT = "myproject"

_CONFIG_VARS = (
    "ODPS_CONFIG_FILE_PATH", "ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "ALIBABA_CLOUD_SECURITY_TOKEN", "ODPS_ENDPOINT", "ODPS_PROJECT", "ODPS_TUNNEL_ENDPOINT",
    "PAIIO_WAREHOUSE",
)


def paiio_bin():
    explicit = os.environ.get("PAIIO_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "paiio-rs", "target")
    for profile in ("debug", "ci", "release"):
        path = os.path.join(target, profile, "paiio")
        if os.path.exists(path):
            return path
    pytest.exit(f"the paiio CLI was not found under {target}; build it "
                "(cargo build -p paiio-cli) or set PAIIO_BIN", returncode=2)


def uri(table, project=PROJECT):
    return f"odps://{project}/tables/{table}"


class Warehouse:
    """A warehouse directory with CLI helpers."""

    def __init__(self, root, tmp):
        self.root = str(root)
        self.tmp = str(tmp)

    def cli(self, *args):
        out = subprocess.run([paiio_bin(), "--warehouse", self.root, *args],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"paiio {' '.join(args)} failed: {out.stderr}")
        return out.stdout

    def create(self, name, schema, partitioned_by=None, project=PROJECT):
        """Creates table ``name`` and returns its URI."""
        args = ["table", "create", uri(name, project), "--schema", schema]
        if partitioned_by:
            args += ["--partitioned-by", partitioned_by]
        self.cli(*args)
        return uri(name, project)

    def load(self, table_uri, header, rows):
        """Imports rows (None = NULL) into a table or partition URI."""
        path = os.path.join(self.tmp, f"rows-{time.monotonic_ns()}.csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for r in rows:
                w.writerow(["" if v is None else v for v in r])
        self.cli("table", "import", table_uri, path)

    def table(self, name, schema, header, rows, partitioned_by=None):
        """Creates and fills a table; returns its URI."""
        t = self.create(name, schema, partitioned_by)
        if rows:
            self.load(t, header, rows)
        return t

    def count(self, table_uri):
        return int(self.cli("table", "count", table_uri).split()[0])


def _clear_config(monkeypatch):
    for var in _CONFIG_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def wh(tmp_path, monkeypatch):
    """A fresh local warehouse, the default of this process for the test."""
    _clear_config(monkeypatch)
    root = tmp_path / "warehouse"
    root.mkdir()
    monkeypatch.setenv("PAIIO_WAREHOUSE", str(root))
    return Warehouse(root, tmp_path)


class Server(Warehouse):
    """``paiio serve`` on a warehouse, with an ini configuration file for it."""

    def __init__(self, root, tmp, *extra):
        super().__init__(root, tmp)
        os.makedirs(self.root, exist_ok=True)
        self.proc = subprocess.Popen(
            [paiio_bin(), "serve", "--warehouse", self.root, "--listen", "127.0.0.1:0",
             "--access-id", ACCESS_ID, "--access-key", ACCESS_KEY, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (http://\S+/api)", line)
        if not m:
            rest = self.proc.stdout.read() if self.proc.poll() is not None else ""
            raise RuntimeError(f"paiio serve did not start: {line}{rest}")
        self.endpoint = m.group(1)
        self.config = os.path.join(str(tmp), f"odps-{time.monotonic_ns()}.ini")
        # As PAI's documentation writes it: no section header.
        with open(self.config, "w") as f:
            f.write(f"access_id={ACCESS_ID}\naccess_key={ACCESS_KEY}\nend_point={self.endpoint}\n")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    s = Server(tmp / "warehouse", tmp)
    yield s
    s.stop()


@pytest.fixture
def served(server, monkeypatch):
    """The module's server, configured through ODPS_CONFIG_FILE_PATH for this test."""
    _clear_config(monkeypatch)
    monkeypatch.setenv("ODPS_CONFIG_FILE_PATH", server.config)
    return server


_counter = [0]


@pytest.fixture
def name():
    """A table name unique within the test session (module servers are shared)."""
    _counter[0] += 1
    return f"t{os.getpid()}_{_counter[0]}"

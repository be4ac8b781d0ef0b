"""Conformance of the released PyODPS (0.13.2), unchanged, against `paiio serve`.

Each test module gets its own warehouse and server (`paiio serve --admin`, signatures checked
against the keys below). Tables are created and filled with the `paiio` CLI.
"""
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import json

import pytest

ACCESS_ID = "paiio-test-id"
ACCESS_KEY = "paiio-test-secret"
PROJECT = "demo"


def paiio_bin():
    explicit = os.environ.get("PAIIO_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "paiio-rs", "target"
    )
    path = os.path.join(target, "debug", "paiio")
    if not os.path.exists(path):
        pytest.exit(f"paiio binary not found at {path}; build it (cargo build -p paiio-cli) or set PAIIO_BIN")
    return path


class Server:
    def __init__(self, warehouse, tmp, *extra_args):
        self.warehouse = warehouse
        self.tmp = tmp
        self.proc = subprocess.Popen(
            [paiio_bin(), "serve", "--warehouse", warehouse, "--listen", "127.0.0.1:0",
             "--access-id", ACCESS_ID, "--access-key", ACCESS_KEY, "--admin", *extra_args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (http://\S+/api)", line)
        if not m:
            rest = self.proc.stdout.read() if self.proc.poll() is not None else ""
            raise RuntimeError(f"paiio serve did not start: {line}{rest}")
        self.endpoint = m.group(1)
        self.base = self.endpoint[: -len("/api")]

    def cli(self, *args):
        out = subprocess.run([paiio_bin(), "--warehouse", self.warehouse, *args],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"paiio {' '.join(args)} failed: {out.stderr}")
        return out.stdout

    def create_table(self, name, schema, partitioned_by=None):
        args = ["table", "create", f"odps://{PROJECT}/tables/{name}", "--schema", schema]
        if partitioned_by:
            args += ["--partitioned-by", partitioned_by]
        self.cli(*args)

    def import_rows(self, uri, header, rows):
        path = os.path.join(self.tmp, f"rows-{time.monotonic_ns()}.csv")
        with open(path, "w") as f:
            f.write(",".join(header) + "\n")
            for r in rows:
                f.write(",".join(str(v) for v in r) + "\n")
        self.cli("table", "import", uri, path)

    def admin(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req) as resp:
            return json.loads(resp.read() or b"{}")

    def faults(self, *rules):
        return self.admin("POST", "/__paiio/faults", {"seed": 7, "rules": list(rules)})

    def clear_faults(self):
        return self.admin("DELETE", "/__paiio/faults")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("pyodps"))
    s = Server(os.path.join(tmp, "warehouse"), tmp)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def odps_entry(server):
    from odps import ODPS
    return ODPS(ACCESS_ID, ACCESS_KEY, project=PROJECT, endpoint=server.endpoint)


@pytest.fixture(autouse=True)
def _no_faults_left(server):
    yield
    server.clear_faults()

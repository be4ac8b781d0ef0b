"""Tables and servers for the TensorFlow and PyTorch tests (test_tf_*.py, test_torch_*.py):
a local warehouse filled with the `paiio` CLI, and `paiio serve` over it."""

import os
import re
import subprocess
import time

import pytest

PROJECT = "demo"
ACCESS_ID = "paiio-fw-id"
ACCESS_KEY = "paiio-fw-secret"
#: Rows of demo.nums and demo.nums2.
NUMS_ROWS = 10007
NUMS2_ROWS = 3001
GUIDE_ROWS = [(25, "Apple", 5.0, False), (38, "Pear", 4.5, False), (17, "Watermelon", 2.2, False)]

_ENV_KEYS = (
    "ODPS_CONFIG_FILE_PATH",
    "ODPS_ENDPOINT",
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "PAIIO_WAREHOUSE",
)


def paiio_bin():
    explicit = os.environ.get("PAIIO_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "paiio-rs", "target"
    )
    for profile in ("debug", "release"):
        path = os.path.join(target, profile, "paiio")
        if os.path.exists(path):
            return path
    pytest.skip(f"the paiio CLI is not built under {target} (cargo build -p paiio-cli) "
                "and PAIIO_BIN is not set")


def cli(warehouse, *args):
    out = subprocess.run([paiio_bin(), "--warehouse", warehouse, *args],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"paiio {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def uri(name):
    return f"odps://{PROJECT}/tables/{name}"


def create_table(warehouse, tmp, name, schema, header, rows):
    cli(warehouse, "table", "create", uri(name), "--schema", schema)
    if rows:
        path = os.path.join(str(tmp), f"{name}-{time.monotonic_ns()}.csv")
        with open(path, "w") as f:
            f.write(",".join(header) + "\n")
            for r in rows:
                f.write(",".join("" if v is None else
                                 ("true" if v is True else "false" if v is False else str(v))
                                 for v in r) + "\n")
        cli(warehouse, "table", "import", uri(name), path)


def nums_row(i):
    return (i, i * 0.5, f"s{i}")


def build_warehouse(tmp):
    """demo.test (the guide's table), demo.nulls, demo.nums (NUMS_ROWS rows: id, x = id/2,
    s = 's<id>'), demo.nums2 (NUMS2_ROWS rows, ids from 100000), demo.empty."""
    wh = os.path.join(str(tmp), "warehouse")
    os.makedirs(wh, exist_ok=True)
    create_table(wh, tmp, "test", "itemid bigint, name string, price double, virtual boolean",
                 ["itemid", "name", "price", "virtual"], GUIDE_ROWS)
    create_table(wh, tmp, "nulls", "i bigint, d double, s string, b boolean",
                 ["i", "d", "s", "b"],
                 [(1, 1.5, "a", True), (None, None, None, None), (3, None, "c", None)])
    create_table(wh, tmp, "nums", "id bigint, x double, s string", ["id", "x", "s"],
                 [nums_row(i) for i in range(NUMS_ROWS)])
    create_table(wh, tmp, "nums2", "id bigint, x double, s string", ["id", "x", "s"],
                 [nums_row(100000 + i) for i in range(NUMS2_ROWS)])
    create_table(wh, tmp, "empty", "id bigint, x double, s string", ["id", "x", "s"], [])
    return wh


def use_local(monkeypatch, warehouse):
    """Points this process (and its children) at the local warehouse."""
    for k in _ENV_KEYS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("PAIIO_WAREHOUSE", warehouse)


def write_config(path, endpoint):
    with open(path, "w") as f:
        f.write(f"access_id={ACCESS_ID}\naccess_key={ACCESS_KEY}\nend_point={endpoint}\n")
    return path


# `paiio serve` as a VPC endpoint (the Storage API and the Tunnel) and as a public one (the
# Tunnel only): a plain ini file reaches the data either way.
SERVE_MODES = pytest.mark.parametrize("serve_args", [(), ("--tunnel-only",)],
                                      ids=["storage-api", "tunnel-only"])


class Server:
    """`paiio serve` over a warehouse, signatures checked against ACCESS_ID/ACCESS_KEY."""

    def __init__(self, warehouse, tmp, *extra):
        self.proc = subprocess.Popen(
            [paiio_bin(), "serve", "--warehouse", warehouse, "--listen", "127.0.0.1:0",
             "--access-id", ACCESS_ID, "--access-key", ACCESS_KEY, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (http://\S+/api)", line)
        if not m:
            self.stop()
            raise RuntimeError(f"paiio serve did not start: {line}")
        self.endpoint = m.group(1)
        self.config = write_config(os.path.join(str(tmp), "odps_config.ini"), self.endpoint)

    def use(self, monkeypatch):
        for k in _ENV_KEYS:
            monkeypatch.delenv(k, raising=False)
        monkeypatch.setenv("ODPS_CONFIG_FILE_PATH", self.config)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()

"""Runs every script of ``examples/python/`` as a subprocess on a small table, so that the
README's quick starts keep working: exit status 0 and the output each one prints."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ACCESS_ID, ACCESS_KEY, PROJECT

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples",
                        "python")
ROWS = 300


def run_example(script, *args, env=None, timeout=300):
    path = os.path.join(EXAMPLES, script)
    out = subprocess.run([sys.executable, path, *map(str, args)], capture_output=True,
                         text=True, env=dict(os.environ, **(env or {})), timeout=timeout)
    assert out.returncode == 0, f"{script} failed\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return out


def test_every_example_is_tested():
    tested = {"tf_record_dataset.py", "reader_writer.py", "torch_ddp.py",
              "pyodps_against_serve.py", "storage_api_v1_example.py"}
    assert {f for f in os.listdir(EXAMPLES) if f.endswith(".py")} == tested


def test_tf_record_dataset(wh, name):
    pytest.importorskip("tensorflow")
    table = wh.table(name, "id bigint, score double, name string", ["id", "score", "name"],
                     [(i, i * 0.5, f"n{i}") for i in range(ROWS)])
    out = run_example("tf_record_dataset.py", table)
    assert "first batch shapes: [(300,), (300,), (300,)]" in out.stdout, out.stdout
    assert f"read {ROWS} rows from {table}; sum of score {sum(i * 0.5 for i in range(ROWS)):.2f}" \
        in out.stdout, out.stdout


def test_reader_writer(wh, name):
    table = wh.table(name, "id bigint, score double", ["id", "score"],
                     [(i, i * 0.5) for i in range(ROWS)])
    output = wh.create(name + "_out", "id bigint, value double")
    out = run_example("reader_writer.py", env={"PAIIO_EXAMPLE_TABLE": table,
                                               "PAIIO_EXAMPLE_OUTPUT": output})
    assert "slice 0/2: read 150 rows, wrote 150" in out.stdout, out.stdout
    assert "slice 1/2: read 150 rows, wrote 150" in out.stdout, out.stdout
    assert f"{output} has {ROWS} rows; wrote {ROWS}" in out.stdout, out.stdout
    assert wh.count(output) == ROWS


def test_torch_ddp(wh, name):
    pytest.importorskip("torch")
    rows = [(((i * 37) % 101) / 50.0 - 1, ((i * 53) % 97) / 48.0 - 1) for i in range(ROWS)]
    table = wh.table(name, "f1 double, f2 double, label bigint", ["f1", "f2", "label"],
                     [(a, b, int(a + b > 0)) for a, b in rows])
    out = run_example("torch_ddp.py", table)
    for rank in (0, 1):
        for epoch in (0, 1):
            assert re.search(rf"rank {rank}/2 epoch {epoch}: 150 rows, accuracy", out.stdout), \
                out.stdout
    assert f"both ranks read {ROWS} rows per epoch" in out.stdout, out.stdout


def test_pyodps_against_serve(server, name):
    pytest.importorskip("odps")
    server.create(name, "id bigint, name string", partitioned_by="pt string")
    server.load(f"odps://{PROJECT}/tables/{name}/pt=test_write_1", ["id", "name"],
                [(i, f"n{i}") for i in range(ROWS)])
    out = run_example("pyodps_against_serve.py", server.endpoint, name, "pt=test_write_1",
                      env={"PAIIO_EXAMPLE_PROJECT": PROJECT,
                           "ALIBABA_CLOUD_ACCESS_KEY_ID": ACCESS_ID,
                           "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ACCESS_KEY})
    assert f"total rows read: {ROWS}" in out.stdout, out.stdout


@pytest.mark.parametrize("mode", ["size", "row"])
def test_storage_api_v1_example(server, name, tmp_path, mode):
    pytest.importorskip("odps")
    # The guide's example as printed: fill in its placeholders.
    server.create(name, "id bigint, name string", partitioned_by="pt string")
    server.load(f"odps://{PROJECT}/tables/{name}/pt=test_write_1", ["id", "name"],
                [(i, f"n{i}") for i in range(ROWS)])
    with open(os.path.join(EXAMPLES, "storage_api_v1_example.py")) as f:
        text = f.read()
    for placeholder, value in {"<your-project>": PROJECT, "<your-endpoint>": server.endpoint,
                               "<table-name>": name, "<quota-name>": ""}.items():
        assert placeholder in text
        text = text.replace(placeholder, value)
    script = tmp_path / "storage_api_v1_example.py"
    script.write_text(text)
    out = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True,
                         env=dict(os.environ, ALIBABA_CLOUD_ACCESS_KEY_ID=ACCESS_ID,
                                  ALIBABA_CLOUD_ACCESS_KEY_SECRET=ACCESS_KEY), timeout=120)
    assert out.returncode == 0, out.stderr
    assert re.search(rf"Total rows read: {ROWS}\b", out.stderr), out.stderr

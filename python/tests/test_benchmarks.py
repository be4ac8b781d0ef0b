"""Smoke runs of the benchmark scripts on a small table, so that they keep running: each
exits 0 and prints every row of its table with a rate. (The figures themselves are measured
by hand on a full-size table; see the README's performance section.)"""
import os
import re
import subprocess
import sys

import pytest

from conftest import paiio_bin

BENCHMARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks")


def test_bench_frameworks_runs_and_prints_every_torch_row():
    pytest.importorskip("torch")
    script = os.path.join(BENCHMARKS, "bench_frameworks.py")
    out = subprocess.run(
        [sys.executable, script, "--skip-tf", "--rows", "20000", "--workers", "0,2",
         "--shuffle", "false", "--strings", "str,fixed", "--repeat", "1"],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, PAIIO_BIN=paiio_bin()),
    )
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    rows = [line for line in out.stdout.splitlines() if line.startswith("torch rows/s")]
    # workers 0 and 2, each the first epoch and the next one, text as objects and fixed-width
    assert len(rows) == 8, out.stdout
    for line in rows:
        # embedded, serve, limit, embedded / limit, serve / limit
        figures = re.findall(r"\d[\d,]*(?:\.\d+)?", line.rsplit(")", 1)[1])
        assert len(figures) == 5, line
        assert all(float(f.replace(",", "")) > 0 for f in figures), line
    # The training loop's CPU per batch, beside each rate.
    loop = [line for line in out.stdout.splitlines() if line.startswith("torch loop CPU")]
    assert len(loop) == 8, out.stdout
    for line in loop:
        figures = re.findall(r"\d[\d,]*(?:\.\d+)?", line.rsplit(")", 1)[1])
        assert len(figures) == 5 and float(figures[0].replace(",", "")) > 0, line

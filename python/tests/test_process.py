"""Fork safety and Ctrl-C (STYLE "every blocking call releases the GIL; long calls check for
Ctrl-C")."""
import contextlib
import os
import signal
import sys
import threading
import time

import pytest

import paiio
from paiio.python_io import TableReader

from conftest import Server


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_reads_a_table(wh):
    t = wh.table("fork", "id bigint", ["id"], [(i,) for i in range(1000)])
    parent = TableReader(t)
    parent.read(10)  # the runtime and prefetch threads are running now
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(rfd)
            try:
                parent.read(1)
                inherited = "usable"
            except paiio.InvalidArgumentError as e:
                inherited = "refused" if "fork" in str(e) else f"other: {e}"
            ids = TableReader(t, num_threads=2).read(1000)["id"].tolist()
            os.write(wfd, f"{inherited} {len(ids)} {sum(ids)}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        answer = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert answer == f"refused 1000 {sum(range(1000))}"
    assert len(parent.read(1000)) == 990  # the parent's reader is unaffected


@contextlib.contextmanager
def slow_reader(tmp_path, rate, rows):
    """A TableReader (one stream) of `rows` rows of about 60 bytes, served by `paiio serve
    --stream-rate rate`."""
    slow = Server(tmp_path / "warehouse", tmp_path, "--stream-rate", rate)
    try:
        t = slow.table("slow", "id bigint, s string", ["id", "s"],
                       [(i, "x" * 50) for i in range(rows)])
        os.environ["ODPS_CONFIG_FILE_PATH"] = slow.config
        try:
            r = TableReader(t, num_threads=1)
        finally:
            del os.environ["ODPS_CONFIG_FILE_PATH"]
        yield r
    finally:
        slow.stop()


def test_ctrl_c_interrupts_a_slow_read_promptly(tmp_path):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals go to the main thread")
    with slow_reader(tmp_path, "1KB", 20000) as r:
        timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
        start = time.monotonic()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            r.read(20000)  # ~1 MB at 1 KB/s: minutes without Ctrl-C
        elapsed = time.monotonic() - start
        timer.join()
        assert elapsed < 5, elapsed
        assert r.tell() == 0  # nothing was consumed
        r.close()  # does not wait for the abandoned read
        assert time.monotonic() - start < 6


def test_reads_release_the_gil(tmp_path):
    # A read that waits on a slow server for about a second: another Python thread runs all
    # that time only if the wait does not hold the GIL (if it did, the ticker could not run at
    # all until the read returned, whatever the switch interval).
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.001)

    with slow_reader(tmp_path, "64KB", 5000) as r:
        th = threading.Thread(target=tick)
        th.start()
        try:
            start = time.monotonic()
            got = r.read(1000)  # ~60 KB at 64 KB/s
            end = time.monotonic()
        finally:
            stop.set()
            th.join()
        r.close()
    assert len(got) == 1000
    during = [x for x in ticks if start <= x <= end]
    assert end - start > 0.3, end - start
    # one tick per 10 ms at the least (1 ms sleeps, on a busy machine); a held GIL gives none
    assert len(during) >= (end - start) / 0.01, (len(during), end - start)
    assert sys.getswitchinterval() > 0

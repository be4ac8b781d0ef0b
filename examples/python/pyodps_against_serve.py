"""Quick start: the unmodified PyODPS SDK (``odps.maxstorage``) reading a table served by
``paiio serve``.

    paiio serve --warehouse ./wh --listen 127.0.0.1:8080 --access-id my-id --access-key my-key
    python pyodps_against_serve.py http://127.0.0.1:8080/api t1 pt=test_write_1
    # or PAIIO_EXAMPLE_ENDPOINT, PAIIO_EXAMPLE_TABLE (a table name), PAIIO_EXAMPLE_PARTITION,
    # PAIIO_EXAMPLE_PROJECT (default demo), ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET (default
    # my-id / my-key)
"""
import os
import sys

from odps import ODPS
from odps.maxstorage import MaxStorageClient


def arg(i, var, default):
    return sys.argv[i] if len(sys.argv) > i else os.environ.get(var, default)


def main():
    endpoint = arg(1, "PAIIO_EXAMPLE_ENDPOINT", "http://127.0.0.1:8080/api")
    table = arg(2, "PAIIO_EXAMPLE_TABLE", "t1")
    partition = arg(3, "PAIIO_EXAMPLE_PARTITION", "pt=test_write_1")
    project = os.environ.get("PAIIO_EXAMPLE_PROJECT", "demo")
    o = ODPS(os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID", "my-id"),
             os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "my-key"),
             project=project, endpoint=endpoint)
    client = MaxStorageClient(odps=o)
    session = client.create_table_read_session(table, partitions=[partition] if partition else None)
    total = 0
    for split in session.splits:
        for batch in session.open_arrow_reader(split, compress_algo="zstd"):
            print(batch.num_rows)
            total += batch.num_rows
    print(f"total rows read: {total}")


if __name__ == "__main__":
    main()

"""Quick start: ``paiio.python_io.TableReader`` and ``TableWriter`` (PAI's names): two slices
read their half of a table and write ``(id, score * 2)`` back, each under its slice id.

    python reader_writer.py odps://demo/tables/train odps://demo/tables/predictions
    # or PAIIO_EXAMPLE_TABLE=... PAIIO_EXAMPLE_OUTPUT=...

The input needs columns ``id bigint, score double``; the output ``id bigint, value double``.
The backend is the process configuration (``ODPS_CONFIG_FILE_PATH``, or ``PAIIO_WAREHOUSE``).
"""
import os
import sys

from paiio.python_io import OutOfRangeException, TableReader, TableWriter


def main():
    table = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "PAIIO_EXAMPLE_TABLE", "odps://demo/tables/train")
    output = sys.argv[2] if len(sys.argv) > 2 else os.environ.get(
        "PAIIO_EXAMPLE_OUTPUT", "odps://demo/tables/predictions")
    slices = 2
    total = 0
    for slice_id in range(slices):
        with TableReader(table, selected_cols="id,score", slice_id=slice_id,
                         slice_count=slices) as r, TableWriter(output, slice_id=slice_id) as w:
            count = r.get_row_count()
            written = 0
            while True:
                try:
                    rows = r.read(4096)        # a numpy structured array built in Rust
                except OutOfRangeException:
                    break
                w.write([(int(row["id"]), float(row["score"]) * 2) for row in rows],
                        indices=[0, 1])
                written += len(rows)
        # The writer's rows are visible atomically when it closes.
        print(f"slice {slice_id}/{slices}: read {count} rows, wrote {written}")
        total += written
    with TableReader(output) as r:
        print(f"{output} has {r.get_row_count()} rows; wrote {total}")


if __name__ == "__main__":
    main()

"""Quick start: a PAI-style tf.data pipeline over a MaxCompute table with
``paiio.data.TableRecordDataset`` (the README's TensorFlow example).

    python tf_record_dataset.py odps://demo/tables/train     # or PAIIO_EXAMPLE_TABLE=...

The table needs columns ``id bigint, score double, name string``. The backend is the
process configuration: ``ODPS_CONFIG_FILE_PATH``, or the local warehouse (``PAIIO_WAREHOUSE``).
"""
import os
import sys

import tensorflow as tf

import paiio


def main():
    table = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "PAIIO_EXAMPLE_TABLE", "odps://demo/tables/train")
    ds = paiio.data.TableRecordDataset(
        table, record_defaults=[0, 0.0, ""],
        selected_cols="id,score,name", slice_id=0, slice_count=1)
    for fields in ds.batch(1024).take(1):
        print("first batch shapes:", [tuple(f.shape) for f in fields])
    rows = 0
    score_sum = 0.0
    for ids, scores, names in ds.batch(1024):
        rows += int(tf.size(ids))
        score_sum += float(tf.reduce_sum(scores))
    print(f"read {rows} rows from {table}; sum of score {score_sum:.2f}")


if __name__ == "__main__":
    main()

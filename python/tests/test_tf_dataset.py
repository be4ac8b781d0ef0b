"""paiio.data.TableRecordDataset: a tf.data.Dataset of typed row tuples (docs/compat.md §6)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="tensorflow is not installed")

import paiio  # noqa: E402
import paiio.data  # noqa: E402
from paiio.data import TableRecordDataset  # noqa: E402

from frameworks_util import (  # noqa: E402
    GUIDE_ROWS, NUMS2_ROWS, NUMS_ROWS, SERVE_MODES, Server, build_warehouse, nums_row, uri,
    use_local, write_config,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    return build_warehouse(tmp_path_factory.mktemp("tfwh"))


@pytest.fixture(autouse=True)
def local(monkeypatch, warehouse):
    use_local(monkeypatch, warehouse)


def rows(ds):
    return [tuple(v.numpy() for v in el) for el in ds]


def ids(ds):
    return [int(el[0].numpy()) for el in ds]


# ---- element structure and types ---------------------------------------------------------------


def test_is_a_tf_dataset_of_flat_scalar_tuples():
    ds = TableRecordDataset([uri("test")], record_defaults=[0, "", 0.0, False])
    assert isinstance(ds, tf.data.Dataset)
    assert isinstance(ds, TableRecordDataset)
    assert isinstance(ds, paiio.data.TableRecordDataset)
    spec = ds.element_spec
    assert isinstance(spec, tuple) and len(spec) == 4
    assert [s.dtype for s in spec] == [tf.int32, tf.string, tf.float32, tf.bool]
    assert all(s.shape == tf.TensorShape([]) for s in spec)
    got = rows(ds)
    assert [(int(a), b.decode(), round(float(c), 5), bool(d)) for a, b, c, d in got] == [
        (i, n, round(p, 5), v) for i, n, p, v in GUIDE_ROWS
    ]


@pytest.mark.parametrize(
    "defaults, dtypes",
    [
        ([np.int64(0), b"", np.float64(0), [True]], [tf.int64, tf.string, tf.float64, tf.bool]),
        ([np.array(0, np.int64), [""], np.float32(0), False],
         [tf.int64, tf.string, tf.float32, tf.bool]),
        ([[0], [b"x"], [0.0], [False]], [tf.int32, tf.string, tf.float32, tf.bool]),
        ((0.0, "", np.float64(1), 0), [tf.float32, tf.string, tf.float64, tf.int32]),
    ],
)
def test_dtypes_follow_record_defaults(defaults, dtypes):
    ds = TableRecordDataset(uri("test"), record_defaults=defaults)
    assert [s.dtype for s in ds.element_spec] == dtypes
    first = next(iter(ds))
    assert [t.dtype for t in first] == dtypes
    if dtypes[2] == tf.float64:
        assert first[2].numpy() == 5.0


def test_selected_cols_order_and_excluded_cols():
    ds = TableRecordDataset(uri("test"), record_defaults=[0.0, np.int64(0)],
                            selected_cols="price,itemid")
    assert [(round(float(p), 5), int(i)) for p, i in rows(ds)] == [(p, i) for i, _, p, _ in GUIDE_ROWS]
    ds = TableRecordDataset(uri("test"), record_defaults=["", False],
                            excluded_cols="itemid,price")
    assert [(n.decode(), bool(v)) for n, v in rows(ds)] == [(n, v) for _, n, _, v in GUIDE_ROWS]


def test_nulls_become_the_defaults():
    ds = TableRecordDataset(uri("nulls"), record_defaults=[-1, np.float64(9.5), "zz", True])
    assert rows(ds) == [
        (1, 1.5, b"a", True),
        (-1, 9.5, b"zz", True),
        (3, 9.5, b"c", True),
    ]


# ---- tf.data transformations ----------------------------------------------------------------


def test_batch_shuffle_repeat_prefetch_map():
    ds = TableRecordDataset(uri("nums"), record_defaults=[np.int64(0), np.float64(0), ""])
    pipe = (ds.map(lambda i, x, s: (i * 2, x, tf.strings.length(s)))
              .shuffle(1000, seed=1).repeat(2).batch(512).prefetch(4))
    seen = []
    for a, x, n in pipe:
        assert a.shape[0] <= 512
        seen.extend((a.numpy() // 2).tolist())
        np.testing.assert_allclose(x.numpy(), (a.numpy() // 2) * 0.5)
    assert sorted(seen) == sorted(list(range(NUMS_ROWS)) * 2)


def test_map_with_star_fields_and_batch_shapes():
    ds = TableRecordDataset(uri("test"), record_defaults=[0, "", 0.0, False])
    ds = ds.map(lambda *fields: {"id": fields[0], "price": fields[2]}).batch(2)
    out = list(ds)
    assert [b["id"].shape[0] for b in out] == [2, 1]
    assert out[0]["id"].dtype == tf.int32


def test_tf_function_iteration():
    ds = TableRecordDataset(uri("nums"), record_defaults=[np.int64(0), 0.0, ""]).batch(1000)

    @tf.function
    def total(d):
        acc = tf.constant(0, tf.int64)
        for i, _, _ in d:
            acc += tf.reduce_sum(i)
        return acc

    assert int(total(ds)) == NUMS_ROWS * (NUMS_ROWS - 1) // 2


def test_graph_mode_one_shot_iterator_until_out_of_range():
    with tf.Graph().as_default():
        ds = TableRecordDataset([uri("nums")], record_defaults=[np.int64(0), 0.0, ""],
                                selected_cols="id,x,s")
        ds = ds.repeat(2).batch(1000).prefetch(10)
        i, x, s = tf.compat.v1.data.make_one_shot_iterator(ds).get_next()
        got = []
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            with pytest.raises(tf.errors.OutOfRangeError):
                while True:
                    a, b, c = sess.run([i, x, s])
                    assert a.dtype == np.int64 and b.dtype == np.float32
                    got.extend(a.tolist())
    assert sorted(got) == sorted(list(range(NUMS_ROWS)) * 2)


def test_eager_iterator_ends_with_out_of_range():
    it = iter(TableRecordDataset(uri("test"), record_defaults=[0, "", 0.0, False]))
    for _ in GUIDE_ROWS:
        next(it)
    with pytest.raises(StopIteration):
        next(it)
    it = tf.compat.v1.data.make_one_shot_iterator(
        TableRecordDataset(uri("test"), record_defaults=[0, "", 0.0, False]))
    for _ in GUIDE_ROWS:
        it.get_next()
    with pytest.raises(tf.errors.OutOfRangeError):
        it.get_next()


def test_empty_table_is_an_empty_dataset():
    assert rows(TableRecordDataset(uri("empty"), record_defaults=[0, 0.0, ""])) == []


# ---- the forms of filenames -----------------------------------------------------------------


EXPECTED_BOTH = list(range(NUMS_ROWS)) + [100000 + i for i in range(NUMS2_ROWS)]


@pytest.mark.parametrize(
    "make",
    [
        lambda: f"{uri('nums')},{uri('nums2')}",
        lambda: [uri("nums"), uri("nums2")],
        lambda: (uri("nums"), uri("nums2")),
        lambda: tf.constant([uri("nums"), uri("nums2")]),
        lambda: tf.data.Dataset.from_tensor_slices([uri("nums"), uri("nums2")]),
    ],
    ids=["comma-str", "list", "tuple", "tensor", "dataset"],
)
def test_filenames_forms(make):
    ds = TableRecordDataset(make(), record_defaults=[np.int64(0), 0.0, ""])
    assert ids(ds) == EXPECTED_BOTH


def test_single_str_and_repeated_table():
    assert ids(TableRecordDataset(uri("nums2"), record_defaults=[0, 0.0, ""])) == \
        [100000 + i for i in range(NUMS2_ROWS)]
    twice = TableRecordDataset([uri("test"), uri("test")], record_defaults=[0, "", 0.0, False])
    assert ids(twice) == [r[0] for r in GUIDE_ROWS] * 2


def test_dataset_of_filenames_is_a_work_queue():
    queue = tf.data.Dataset.from_tensor_slices([uri("test"), uri("nums2"), uri("test")])
    ds = TableRecordDataset(queue, record_defaults=[0, 0.0, ""], selected_cols="itemid,price,name")
    # nums2 has no itemid: only the first table is read before the error.
    with pytest.raises(Exception, match="itemid"):
        ids(ds)
    queue = tf.data.Dataset.from_tensor_slices([uri("nums2"), uri("nums")]).repeat(2)
    got = ids(TableRecordDataset(queue, record_defaults=[0, 0.0, ""]))
    want = [100000 + i for i in range(NUMS2_ROWS)] + list(range(NUMS_ROWS))
    assert got == want * 2


def test_graph_tensor_filenames():
    with tf.Graph().as_default():
        names = tf.compat.v1.placeholder_with_default(
            tf.constant([uri("nums2"), uri("test")]), shape=[None])
        ds = TableRecordDataset(names, record_defaults=[np.int64(0), 0.0, ""],
                                selected_cols="id,x,s")
        nxt = tf.compat.v1.data.make_one_shot_iterator(ds.batch(NUMS2_ROWS)).get_next()
        with tf.compat.v1.Session() as sess:
            a = sess.run(nxt)[0]
            assert a.tolist() == [100000 + i for i in range(NUMS2_ROWS)]
            with pytest.raises(tf.errors.InvalidArgumentError, match="id"):
                sess.run(nxt)  # demo.test has no column `id`


# ---- slices -------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 3, 7])
def test_slices_read_every_row_exactly_once(count):
    seen = []
    for i in range(count):
        ds = TableRecordDataset([uri("nums"), uri("nums2")], record_defaults=[np.int64(0), 0.0, ""],
                                slice_id=i, slice_count=count, num_threads=2, capacity=100)
        part = ids(ds.batch(700).unbatch())
        assert part == sorted(part, key=lambda v: (v >= 100000, v))
        seen.extend(part)
    assert sorted(seen) == EXPECTED_BOTH


def test_slice_is_contiguous_and_balanced():
    parts = [ids(TableRecordDataset(uri("nums"), record_defaults=[np.int64(0), 0.0, ""],
                                    slice_id=i, slice_count=4)) for i in range(4)]
    q, r = divmod(NUMS_ROWS, 4)
    assert [len(p) for p in parts] == [q + (i < r) for i in range(4)]
    assert sum(parts, []) == list(range(NUMS_ROWS))


# ---- errors ------------------------------------------------------------------------------------


def test_wrong_number_of_defaults_names_both_counts():
    with pytest.raises(paiio.errors.InvalidArgumentError) as e:
        TableRecordDataset(uri("test"), record_defaults=[0, 0.0])
    assert "2" in str(e.value) and "4" in str(e.value)


def test_unknown_column_fails_at_construction():
    with pytest.raises(paiio.errors.InvalidArgumentError, match="nope"):
        TableRecordDataset(uri("test"), record_defaults=[0], selected_cols="nope")


def test_selected_and_excluded_together_is_an_error():
    with pytest.raises(ValueError, match="excluded_cols"):
        TableRecordDataset(uri("test"), record_defaults=[0], selected_cols="itemid",
                           excluded_cols="price")


def test_unknown_table_fails_at_construction():
    with pytest.raises(paiio.errors.TableNotFoundError):
        TableRecordDataset(uri("missing"), record_defaults=[0])


def test_value_conversion_error_names_the_column():
    ds = TableRecordDataset(uri("test"), record_defaults=[0], selected_cols="name")
    with pytest.raises(tf.errors.OpError, match="name"):
        rows(ds)


def test_bad_record_defaults_entry():
    with pytest.raises(TypeError, match="record_defaults"):
        TableRecordDataset(uri("test"), record_defaults=[object()], selected_cols="itemid")
    with pytest.raises(ValueError, match="one-element"):
        TableRecordDataset(uri("test"), record_defaults=[[1, 2]], selected_cols="itemid")


def test_importing_paiio_does_not_import_tensorflow():
    code = ("import sys, paiio, paiio.data; assert 'tensorflow' not in sys.modules, 'tf'; "
            "assert 'torch' not in sys.modules, 'torch'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


# ---- the guide's example, as printed ------------------------------------------------------------

GUIDE_EXAMPLE = '''
import os
import tensorflow as tf
import paiio

# Specify the path of the configuration file. Replace this with the actual path of the file.
os.environ['ODPS_CONFIG_FILE_PATH'] = "/mnt/data/odps_config.ini"
# Define the tables to read. You can specify multiple tables. Replace the table name and the corresponding MaxCompute project name with your own.
table = ["odps://${your_projectname}/tables/${table_name}"]
# Define TableRecordDataset to read the itemid and price columns of the table.
dataset = paiio.data.TableRecordDataset(table,
                                       record_defaults=[0, 0.0],
                                       selected_cols="itemid,price",
                                       num_threads=1,
                                       capacity=10)
# Set epoch to 2, batch size to 3, and prefetch to 100 batches.
dataset = dataset.repeat(2).batch(3).prefetch(100)

ids, prices = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()

with tf.compat.v1.Session() as sess:
    sess.run(tf.compat.v1.global_variables_initializer())
    sess.run(tf.compat.v1.local_variables_initializer())
    try:
        while True:
            batch_ids, batch_prices = sess.run([ids, prices])
            print("batch_ids:", batch_ids)
            print("batch_prices:", batch_prices)
    except tf.errors.OutOfRangeError:
        print("End of dataset")
'''


def run_script(text, tmp_path, extra_env=None, name="script.py"):
    path = tmp_path / name
    path.write_text(text)
    env = {k: v for k, v in os.environ.items()
           if k not in ("ODPS_CONFIG_FILE_PATH", "PAIIO_WAREHOUSE", "PAIIO_TF_GRAPH_MODE")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.update(extra_env or {})
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          env=env, timeout=240, cwd=str(tmp_path))


def run_guide(config, tmp_path):
    # The guide's example is a TF1 program (one-shot iterator, Session.run); it runs as
    # printed, with `python guide_example.py`, on TensorFlow 2.
    script = (GUIDE_EXAMPLE.replace("/mnt/data/odps_config.ini", config)
              .replace("${your_projectname}", "demo").replace("${table_name}", "test"))
    out = run_script(script, tmp_path, name="guide_example.py")
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


EAGER_PROBE = '''
import os, sys
import tensorflow as tf
import paiio
@PRELUDE@
ds = paiio.data.TableRecordDataset("odps://demo/tables/test", record_defaults=[0, 0.0],
                                   selected_cols="itemid,price")
print("eager", tf.executing_eagerly(), [int(x) for x, _ in ds])
# Not a TF1 session: requests.Session(), boto3.Session()
'''


@pytest.mark.parametrize("prelude, env, eager", [
    ("", {}, True),                                            # a TF2 script stays eager
    ("", {"PAIIO_TF_GRAPH_MODE": "0"}, True),
    ("tf.constant(1) + 1", {"PAIIO_TF_GRAPH_MODE": "1"}, True),  # eager ops ran: no switch
])
def test_tf2_scripts_stay_eager(warehouse, tmp_path, prelude, env, eager):
    config = write_config(str(tmp_path / "odps_config.ini"), warehouse)
    script = EAGER_PROBE.replace("@PRELUDE@", prelude)
    out = run_script(script, tmp_path, {"ODPS_CONFIG_FILE_PATH": config, **env})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == f"eager {eager} [25, 38, 17]"


def test_graph_mode_can_be_asked_for(warehouse, tmp_path):
    config = write_config(str(tmp_path / "odps_config.ini"), warehouse)
    script = ("import tensorflow as tf, paiio\n"
              "ds = paiio.data.TableRecordDataset('odps://demo/tables/test', [0, 0.0],\n"
              "                                   selected_cols='itemid,price')\n"
              "print('eager', tf.executing_eagerly())\n")
    out = run_script(script, tmp_path, {"ODPS_CONFIG_FILE_PATH": config,
                                        "PAIIO_TF_GRAPH_MODE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "eager False"


def check_guide_output(stdout):
    lines = stdout.strip().splitlines()
    assert lines[-1] == "End of dataset"
    assert lines[0] == "batch_ids: [25 38 17]"
    assert lines[1].startswith("batch_prices: [5.  4.5 2.2]")
    assert lines.count("batch_ids: [25 38 17]") == 2
    assert len(lines) == 5


def test_guide_example_embedded_warehouse(warehouse, tmp_path):
    config = write_config(str(tmp_path / "odps_config.ini"), warehouse)
    check_guide_output(run_guide(config, tmp_path))


@pytest.mark.server
@SERVE_MODES
def test_guide_example_against_paiio_serve(warehouse, tmp_path, serve_args):
    server = Server(warehouse, tmp_path, *serve_args)
    try:
        check_guide_output(run_guide(server.config, tmp_path))
    finally:
        server.stop()


@pytest.mark.server
@SERVE_MODES
def test_dataset_over_paiio_serve(warehouse, tmp_path, monkeypatch, serve_args):
    server = Server(warehouse, tmp_path, *serve_args)
    try:
        server.use(monkeypatch)
        ds = TableRecordDataset([uri("nums"), uri("nums2")], record_defaults=[np.int64(0), 0.0, ""],
                                slice_id=1, slice_count=2)
        got = ids(ds)
        a = list(range(NUMS_ROWS))[NUMS_ROWS - NUMS_ROWS // 2:]
        b = [100000 + i for i in range(NUMS2_ROWS)][NUMS2_ROWS - NUMS2_ROWS // 2:]
        assert got == a + b
        assert nums_row(5)[2] == "s5"
    finally:
        server.stop()

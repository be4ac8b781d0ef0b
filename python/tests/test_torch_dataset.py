"""paiio.torch.TableDataset: sharding by (rank, worker), deterministic shuffle, exact resume
with any worker count, equal batches per rank, fork and spawn workers."""

import gc
import multiprocessing
import os
import pickle
import signal
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

import paiio.torch as ptorch  # noqa: E402
from paiio.torch import DataLoader, TableDataset  # noqa: E402
from paiio import _native  # noqa: E402

from frameworks_util import (  # noqa: E402
    NUMS2_ROWS, NUMS_ROWS, SERVE_MODES, Server, build_warehouse, uri, use_local,
)

pytestmark = [
    # Machines with few cores: torch warns about 4 workers; the tests still want them.
    pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning"),
]

ALL = list(range(NUMS_ROWS))
BOTH = ALL + [100000 + i for i in range(NUMS2_ROWS)]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    return build_warehouse(tmp_path_factory.mktemp("torchwh"))


@pytest.fixture(autouse=True)
def local(monkeypatch, warehouse):
    use_local(monkeypatch, warehouse)


def dataset(**kw):
    kw.setdefault("record_defaults", [np.int64(0), 0.0, ""])
    kw.setdefault("batch_size", 256)
    return TableDataset(kw.pop("tables", uri("nums")), **kw)


def batch_ids(batches):
    return [b["id"].tolist() for b in batches]


def flat(batches):
    return [i for b in batch_ids(batches) for i in b]


def run(ds, workers=0, context=None, limit=None, loader_cls=DataLoader):
    kw = {}
    if workers:
        kw["multiprocessing_context"] = context or "fork"
    loader = loader_cls(ds, num_workers=workers, batch_size=None, **kw) \
        if loader_cls is torch.utils.data.DataLoader else loader_cls(ds, num_workers=workers, **kw)
    out = []
    for b in loader:
        out.append(b)
        if limit is not None and len(out) == limit:
            break
    return out, loader


# ---- batches ------------------------------------------------------------------------------------


def test_batches_are_dicts_of_tensors_typed_by_record_defaults():
    batches, _ = run(dataset())
    b = batches[0]
    assert set(b) == {"id", "x", "s"}
    assert b["id"].dtype == torch.int64 and b["x"].dtype == torch.float32
    assert list(b["s"][:2]) == ["s0", "s1"]
    assert b["id"].shape == (256,)
    np.testing.assert_allclose(b["x"].numpy(), b["id"].numpy() * 0.5)
    assert sorted(flat(batches)) == ALL


def test_natural_types_and_tuples():
    batches, _ = run(dataset(record_defaults=None, columns="x,id", as_tuple=True))
    x, i = batches[0]
    assert x.dtype == torch.float64 and i.dtype == torch.int64
    assert sorted(int(v) for b in batches for v in b[1]) == ALL


def test_columns_and_int32_defaults():
    batches, _ = run(dataset(columns=["id"], record_defaults=[0], batch_size=1000))
    assert batches[0]["id"].dtype == torch.int32 and list(batches[0]) == ["id"]


def test_len_counts_the_batches_of_a_rank():
    ds = dataset()
    batches, _ = run(ds)
    assert len(ds) == len(batches)
    ds = dataset(drop_last=True)
    batches, _ = run(ds, workers=2)
    assert len(ds) == len(batches)
    assert all(len(b["id"]) == 256 for b in batches)


# ---- sharding -------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2, 4])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_row_exactly_once_with_workers(workers, shuffle):
    ds = dataset(tables=[uri("nums"), uri("nums2")], shuffle=shuffle, seed=3)
    batches, _ = run(ds, workers=workers)
    got = flat(batches)
    assert len(got) == len(BOTH) and sorted(got) == BOTH


def test_order_does_not_depend_on_the_worker_count():
    orders = []
    for workers in (0, 2, 3, 4):
        ds = dataset(shuffle=True, seed=11, num_shards=12)
        ds.set_epoch(2)
        orders.append(batch_ids(run(ds, workers=workers)[0]))
    assert orders[0] == orders[1] == orders[2] == orders[3]
    assert sorted(i for b in orders[0] for i in b) == ALL


@pytest.mark.parametrize("workers", [3, 5])
@pytest.mark.parametrize("shuffle", [False, True])
def test_worker_counts_that_do_not_divide_the_shards(workers, shuffle):
    # Each worker then needs every few batches of several shards: its readers skip ahead.
    ds = dataset(tables=[uri("nums"), uri("nums2")], shuffle=shuffle, seed=2, num_shards=8)
    expected = batch_ids(run(ds, workers=0)[0])
    batches, _ = run(ds, workers=workers)
    assert batch_ids(batches) == expected
    assert sorted(flat(batches)) == BOTH


@pytest.mark.parametrize("workers", [0, 2])
def test_simulated_ranks_split_the_rows(workers):
    parts = []
    for rank in range(2):
        ds = dataset(tables=[uri("nums"), uri("nums2")], rank=rank, world_size=2, shuffle=True)
        parts.append(flat(run(ds, workers=workers)[0]))
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == BOTH


def test_equal_gives_every_rank_the_same_number_of_batches():
    counts, rows = [], []
    for rank in range(3):
        ds = dataset(rank=rank, world_size=3, equal=True, batch_size=100, num_shards=4)
        batches, _ = run(ds, workers=2)
        counts.append(len(batches))
        assert len(ds) == len(batches)
        rows.extend(flat(batches))
    assert counts[0] == counts[1] == counts[2]
    assert len(rows) == len(set(rows))
    unequal = [len(dataset(rank=r, world_size=3, batch_size=100, num_shards=4)) for r in range(3)]
    assert min(unequal) == counts[0] and max(unequal) > counts[0] or unequal == counts


# ---- epochs and shuffling --------------------------------------------------------------------------


def test_set_epoch_changes_the_order_deterministically():
    def order(epoch, seed=5):
        ds = dataset(shuffle=True, seed=seed)
        ds.set_epoch(epoch)
        return flat(run(ds, workers=2)[0])

    a, b, a2, c = order(0), order(1), order(0), order(0, seed=6)
    assert a == a2
    assert a != b and a != c
    assert sorted(a) == sorted(b) == ALL
    assert a != ALL  # shuffled at all


# ---- resume ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("before, after", [(0, 0), (2, 2), (2, 4), (4, 0), (0, 3), (3, 2)])
def test_resume_exactly_with_another_worker_count(before, after):
    def fresh():
        ds = dataset(tables=[uri("nums"), uri("nums2")], shuffle=True, seed=9, num_shards=12)
        ds.set_epoch(1)
        return ds

    full = batch_ids(run(fresh(), workers=0)[0])
    stop = 13
    ds = fresh()
    head, loader = run(ds, workers=before, limit=stop)
    assert batch_ids(head) == full[:stop]
    state = loader.state_dict()
    assert state["epoch"] == 1 and state["batches"] == stop
    state = pickle.loads(pickle.dumps(state))

    ds2 = TableDataset([uri("nums"), uri("nums2")], record_defaults=[np.int64(0), 0.0, ""],
                       batch_size=256, shuffle=True, seed=9, num_shards=12)
    ds2.load_state_dict(state)
    ds2.set_epoch(1)  # the usual loop calls set_epoch: it keeps the pending resume
    rest, loader2 = run(ds2, workers=after)
    assert batch_ids(rest) == full[stop:]
    assert loader2.state_dict()["batches"] == len(full)
    # The next epoch starts from the beginning.
    ds2.set_epoch(2)
    assert len(run(ds2, workers=after)[0]) == len(full)


def test_bundles_of_many_batches_keep_the_epoch_order_and_resume_inside_one():
    # Batches of 16 rows: each worker hands over bundles of many batches (several bundles
    # per worker, the last ones shorter, three workers with unequal counts); the loader puts
    # them back in the epoch's order, and a position inside a bundle resumes exactly.
    def fresh():
        return dataset(tables=[uri("nums"), uri("nums2")], batch_size=16, shuffle=True,
                       seed=4, num_shards=12)

    full = batch_ids(run(fresh(), workers=0)[0])
    assert len(full) > 6 * ptorch._BUNDLE_BATCHES
    assert batch_ids(run(fresh(), workers=3)[0]) == full
    stop = 2 * ptorch._BUNDLE_BATCHES + 7
    head, loader = run(fresh(), workers=3, limit=stop)
    assert batch_ids(head) == full[:stop]
    state = loader.state_dict()
    assert state["batches"] == stop
    ds2 = fresh()
    ds2.load_state_dict(state)
    rest, loader2 = run(ds2, workers=2)
    assert batch_ids(rest) == full[stop:]
    assert loader2.state_dict()["batches"] == len(full)


def test_resume_from_the_dataset_state_without_workers():
    ds = dataset(shuffle=True)
    it = iter(ds)
    head = [next(it) for _ in range(5)]
    state = ds.state_dict()
    assert state["batches"] == 5
    full = batch_ids(run(dataset(shuffle=True))[0])
    ds2 = dataset(shuffle=True)
    ds2.load_state_dict(state)
    assert batch_ids(head) + batch_ids(list(ds2)) == full


def test_resume_with_a_plain_dataloader_and_explicit_count():
    ds = dataset()
    head, _ = run(ds, workers=2, limit=7, loader_cls=torch.utils.data.DataLoader)
    state = ds.state_dict(batches=len(head))
    ds2 = dataset()
    ds2.load_state_dict(state)
    rest, _ = run(ds2, workers=2, loader_cls=torch.utils.data.DataLoader)
    assert flat(head) + flat(rest) == flat(run(dataset())[0])


def test_state_of_another_configuration_is_refused():
    state = dataset().state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        dataset(batch_size=128).load_state_dict(state)
    with pytest.raises(ValueError, match="rank"):
        dataset(rank=1, world_size=2).load_state_dict(state)


# ---- processes -----------------------------------------------------------------------------------


def test_dataset_pickles_before_and_after_iteration():
    ds = dataset(shuffle=True)
    copy = pickle.loads(pickle.dumps(ds))
    assert flat(run(copy)[0]) == flat(run(ds)[0])
    assert sorted(flat(run(pickle.loads(pickle.dumps(ds)))[0])) == ALL


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_fork_and_spawn_workers(context):
    ds = dataset(shuffle=True, seed=4)
    batches, _ = run(ds, workers=2, context=context)
    assert sorted(flat(batches)) == ALL
    ref = dataset(shuffle=True, seed=4)
    assert batch_ids(batches) == batch_ids(run(ref)[0])


def assert_same_batch(got, want):
    assert type(got) is type(want)
    if isinstance(want, dict):
        assert list(got) == list(want)
        got, want = list(got.values()), list(want.values())
    for a, b in zip(got, want):
        if isinstance(b, torch.Tensor):
            assert isinstance(a, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        else:
            assert a.dtype == object and list(a) == list(b)


@pytest.mark.parametrize("as_tuple", [False, True])
def test_worker_batches_travel_as_numpy_and_arrive_as_tensors(as_tuple):
    ds = dataset(as_tuple=as_tuple)
    loader = DataLoader(ds, num_workers=2, multiprocessing_context="fork")
    assert loader.collate_fn is ptorch._pack_for_transfer
    assert DataLoader(ds).collate_fn is ptorch._as_is
    got = list(loader)
    want = run(dataset(as_tuple=as_tuple))[0]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_same_batch(g, w)
    # What crosses the process boundary: numpy arrays, no tensors.
    packed = ptorch._pack_for_transfer(want[0])
    assert not any(isinstance(a, torch.Tensor) for a in packed.arrays)
    assert_same_batch(pickle.loads(pickle.dumps(packed)).unpack(), want[0])


def test_pinned_worker_batches_are_unpacked_by_the_pin_thread(monkeypatch):
    # The pin-memory thread calls `pin_memory()` on what a worker sent: the batch it hands on
    # must be the tensors (pinning itself needs an accelerator, which tests may not have).
    pinned = []

    def fake_pin(data):
        pinned.append(data)
        return data

    monkeypatch.setattr(torch.utils.data._utils.pin_memory, "pin_memory", fake_pin)
    batch = run(dataset())[0][0]
    out = ptorch._pack_for_transfer(batch).pin_memory()
    assert pinned and pinned[0] is out
    assert isinstance(out["id"], torch.Tensor) and torch.equal(out["id"], batch["id"])
    # A bundle received from a worker's ring holds ready batches: each is pinned as it is.
    pinned.clear()
    bundle = ptorch._Bundle([0, 1], [batch, batch]).pin_memory()
    assert bundle.indices == [0, 1] and pinned == [batch, batch]


# ---- transfer from workers: shared memory, a small descriptor through the pipe -------------------


class Received:
    """Sizes of the messages this process unpickles from multiprocessing queues (with fork
    workers, exactly what DataLoader workers send to the training process)."""

    def __init__(self, monkeypatch):
        import multiprocessing.queues as mq

        self.sizes = []
        loads = mq._ForkingPickler.loads

        def counting(buf, *a, **kw):
            self.sizes.append(len(buf))
            return loads(buf, *a, **kw)

        monkeypatch.setattr(mq._ForkingPickler, "loads", counting)


def shm_entries():
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def ring_fds():
    """File descriptors of this process on the workers' rings (memfds named paiio-batches)."""
    out = 0
    for fd in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else ():
        try:
            out += "paiio-batches" in os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return out


def ring_maps():
    """Mappings of the workers' rings in this process."""
    if not os.path.exists("/proc/self/maps"):
        return 0
    with open("/proc/self/maps") as f:
        return sum("paiio-batches" in line for line in f)


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="no memfd on this platform")
@pytest.mark.parametrize("as_tuple", [False, True])
def test_worker_batches_travel_through_shared_memory_not_the_pipe(monkeypatch, as_tuple):
    received = Received(monkeypatch)
    want = run(dataset(as_tuple=as_tuple))[0]
    got, _ = run(dataset(as_tuple=as_tuple), workers=2)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_same_batch(g, w)
    # A batch of 256 rows is some kilobytes of column data (about 4 KB here, with the text);
    # what crossed the pipes is a bundle of descriptors per item, a few hundred bytes for up
    # to _BUNDLE_BATCHES batches (plus torch's own small messages).
    assert len(received.sizes) >= len(want) / ptorch._BUNDLE_BATCHES
    assert len(received.sizes) < len(want)
    assert max(received.sizes) < 1024, max(received.sizes)


def test_without_shared_memory_batches_travel_as_packed_bytes(monkeypatch):
    # Where no memfd can be made, the packed batch (values, text offsets and bytes: no
    # pickled Python objects) goes through the pipe, and the batches are the same.
    monkeypatch.delattr(os, "memfd_create", raising=False)
    received = Received(monkeypatch)
    want = run(dataset(tables=[uri("nums"), uri("nums2")]))[0]
    got, _ = run(dataset(tables=[uri("nums"), uri("nums2")]), workers=2)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_same_batch(g, w)
    assert max(received.sizes) > 4096  # the data itself, this time


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_nulls_and_natural_types_cross_from_workers(context):
    ds = dataset(tables=uri("nulls"), record_defaults=None, batch_size=2)
    want = run(ds)[0]
    got, _ = run(dataset(tables=uri("nulls"), record_defaults=None, batch_size=2), workers=2,
                 context=context)
    assert len(got) == len(want) == 2
    for g, w in zip(got, want):
        assert list(g) == list(w)
        for name in w:
            a, b = g[name], w[name]
            if isinstance(b, torch.Tensor):
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(a.numpy(), b.numpy())
            else:
                assert list(a) == list(b)
    rows = [v for b in got for v in b["s"]]
    assert rows.count(None) == 1 and "a" in rows


def test_batches_received_are_never_overwritten_by_the_workers():
    # Batches copied out of the ring: holding all of them (more than the ring's slots) keeps
    # every one intact.
    got, _ = run(dataset(tables=[uri("nums"), uri("nums2")], batch_size=8), workers=2)
    assert len(got) > 2 * (ptorch._TRANSFER_DEPTH + 2) * ptorch._BUNDLE_BATCHES  # all slots
    ids = [i for b in got for i in b["id"].tolist()]
    assert sorted(ids) == BOTH
    for b in got:
        np.testing.assert_allclose(b["x"].numpy(), b["id"].numpy() * 0.5)
        assert list(b["s"]) == [f"s{i}" for i in b["id"].tolist()]


def settle():
    for _ in range(50):
        gc.collect()
        if not ptorch._rings and not ring_maps():
            return
        threading.Event().wait(0.1)


@pytest.mark.parametrize("how", ["exhausted", "broken", "persistent", "worker killed"])
def test_no_shared_memory_left_after_a_loader(how):
    before_shm = shm_entries()
    # Batches of 16 rows: many bundles per worker, so that the workers are still at work
    # after the first batches (a worker killed then is noticed).
    ds = dataset(tables=[uri("nums"), uri("nums2")], batch_size=16)
    loader = DataLoader(ds, num_workers=2, multiprocessing_context="fork",
                        persistent_workers=how == "persistent")
    if how == "exhausted":
        assert len(list(loader)) == len(ds)
    elif how == "persistent":
        assert len(list(loader)) == len(ds)
        assert len(list(loader)) == len(ds)
    else:
        it = iter(loader)
        for _ in range(5):
            next(it)
        assert ptorch._rings and ring_maps()  # the workers' rings are mapped here
        if how == "worker killed":
            for child in multiprocessing.active_children():
                os.kill(child.pid, signal.SIGKILL)
            with pytest.raises(RuntimeError):
                for _ in it:
                    pass
            _ = None  # the last batch: its numeric columns lease a slot of a worker's ring
        del it
    del loader
    settle()
    assert not ptorch._rings
    assert ring_maps() == 0 and ring_fds() == 0
    assert shm_entries() <= before_shm


def test_received_batches_lease_their_slot_until_dropped():
    stream = ptorch._frameworks.open_reader([uri("nulls")]).stream([(0, 1, 0, 3)])
    packed = stream.next_packed()
    want = _native.unpack(np.frombuffer(packed.to_bytes(), dtype=np.uint8))
    names = ["i", "d", "s", "b"]
    assert len(want) == len(names)
    slot = 4096
    ring = np.zeros(slot * 3, dtype=np.uint8)
    for k in (1, 2):
        packed.write(ring, k * slot)
        _native.set_slot_state(ring, 4 * k, 1)
    batches = _native.receive(ring, [(slot, 4), (2 * slot, 8)], names, torch.from_numpy)
    assert [_native.slot_state(ring, 4 * k) for k in (1, 2)] == [1, 1]
    first = batches[0]
    assert isinstance(first["i"], torch.Tensor) and first["i"].tolist() == want[0].tolist()
    assert list(first["s"]) == list(want[2])
    # The tensor is the slot's memory, not a copy.
    assert ring.ctypes.data + slot <= first["i"].data_ptr() < ring.ctypes.data + 2 * slot
    del batches
    assert [_native.slot_state(ring, 4 * k) for k in (1, 2)] == [1, 0]
    column = first["i"]
    del first
    assert _native.slot_state(ring, 4) == 1  # a column still kept keeps the slot
    del column
    assert _native.slot_state(ring, 4) == 0
    # As tuples and numpy arrays; the slot is given back once they are dropped.
    _native.set_slot_state(ring, 4, 1)
    (batch,) = _native.receive(ring, [(slot, 4)])
    assert isinstance(batch, tuple) and isinstance(batch[0], np.ndarray)
    batch = None
    assert _native.slot_state(ring, 4) == 0
    # A bundle that does not hold what it says is an error, and gives every slot back.
    for k in (1, 2):
        _native.set_slot_state(ring, 4 * k, 1)
    ring[2 * slot:2 * slot + 8] = 0  # the second batch's magic
    with pytest.raises(ValueError):
        _native.receive(ring, [(slot, 4), (2 * slot, 8)], names)
    assert [_native.slot_state(ring, 4 * k) for k in (1, 2)] == [0, 0]
    _native.set_slot_state(ring, 4, 1)
    with pytest.raises(ValueError, match="columns"):
        _native.receive(ring, [(slot, 4)], ["only"])
    assert _native.slot_state(ring, 4) == 0
    for bad in ([(slot, 3)], [(slot, len(ring))], [(len(ring), 4)]):
        with pytest.raises(ValueError):
            _native.receive(ring, bad)
    with pytest.raises(ValueError, match="aligned"):
        _native.receive(ring[1:], [(slot, 4)])  # the flag's address, not its offset
    with pytest.raises(ValueError):
        _native.receive(np.frombuffer(ring.tobytes(), dtype=np.uint8), [(slot, 4)])  # read-only


def test_batches_kept_by_the_loop_keep_their_values():
    # The loop keeps every batch (more than the ring's slots): the workers find no free slot
    # and send bytes instead; batches received into slots keep theirs until dropped.
    ds = dataset(tables=[uri("nums"), uri("nums2")], batch_size=8)
    kept = list(DataLoader(ds, num_workers=2, multiprocessing_context="fork"))
    ids = [i for b in kept for i in b["id"].tolist()]
    assert sorted(ids) == BOTH
    del kept
    settle()
    assert not ptorch._rings and ring_maps() == 0


def test_packed_batches_check_what_they_read():
    batch = run(dataset(tables=uri("nulls"), record_defaults=None, batch_size=3))[0][0]
    stream = ptorch._frameworks.open_reader([uri("nulls")]).stream([(0, 1, 0, 3)])
    packed = stream.next_packed()
    blob = np.frombuffer(packed.to_bytes(), dtype=np.uint8)
    arrays = _native.unpack(blob)
    assert [list(a) if a.dtype == object else a.tolist() for a in arrays][2] == list(batch["s"])
    buf = np.zeros(packed.nbytes + 64, dtype=np.uint8)
    assert packed.write(buf, 8) == packed.nbytes
    assert _native.unpack(buf, 8)[0].tolist() == batch["i"].tolist()
    with pytest.raises(ValueError):
        packed.write(buf, 4)  # not aligned
    with pytest.raises(ValueError):
        packed.write(np.zeros(16, dtype=np.uint8), 0)  # too small
    with pytest.raises(ValueError):
        packed.write(np.zeros(packed.nbytes, dtype=np.uint8)[::-1], 0)  # not contiguous
    rng = np.random.default_rng(0)
    for cut in (0, 8, 31, len(blob) // 2, len(blob) - 1):
        with pytest.raises(ValueError):
            _native.unpack(blob[:cut].copy())
    # Any corrupted word of the header and column table: an error or a batch, never a crash.
    header = 8 * (4 + 5 * len(arrays))
    for i in range(0, header, 8):
        bad = blob.copy()
        bad[i:i + 8] = rng.integers(0, 256, 8, dtype=np.uint8)
        try:
            _native.unpack(bad)
        except ValueError:
            pass
    with pytest.raises(ValueError):
        _native.unpack(blob.copy(), release=3)  # unaligned flag
    with pytest.raises(ValueError):
        _native.unpack(blob, release=0)  # read-only buffer


# ---- num_workers=0: the stream straight to the loop, pinning on a thread of its own --------------


def test_pin_memory_without_an_accelerator_is_torchs_behaviour():
    if torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available():
        pytest.skip("an accelerator is present")
    want = batch_ids(run(dataset())[0])
    with pytest.warns(UserWarning, match="no accelerator is found"):
        got = list(DataLoader(dataset(), pin_memory=True))
    assert batch_ids(got) == want
    assert not any(t.name == "paiio-pin" for t in threading.enumerate())


def test_pinning_runs_on_its_own_thread_with_an_exact_position(monkeypatch):
    seen = []

    def fake_pin(data, device=None):
        seen.append((threading.current_thread().name, device))
        return data

    monkeypatch.setattr(ptorch, "_pin_settings", lambda loader: (True, "cuda"))
    monkeypatch.setattr(torch.utils.data._utils.pin_memory, "pin_memory", fake_pin)
    want = batch_ids(run(dataset(shuffle=True))[0])
    ds = dataset(shuffle=True)
    loader = DataLoader(ds, pin_memory=True)
    got = batch_ids(list(loader))
    assert got == want
    assert {name for name, _ in seen} == {"paiio-pin"} and seen[0][1] == "cuda"
    # Stopped early: the position is what the loop received, not what was pinned ahead.
    ds = dataset(shuffle=True)
    loader = DataLoader(ds, pin_memory=True)
    it = iter(loader)
    head = [next(it)["id"].tolist() for _ in range(5)]
    threading.Event().wait(0.2)  # let the thread run ahead
    assert loader.state_dict()["batches"] == 5
    it.close()
    assert not any(t.name == "paiio-pin" for t in threading.enumerate())
    ds2 = dataset(shuffle=True)
    ds2.load_state_dict(loader.state_dict())
    assert head + batch_ids(list(DataLoader(ds2, pin_memory=True))) == want


def test_errors_of_the_pinning_thread_reach_the_loop(monkeypatch):
    def failing_pin(data, device=None):
        raise OSError("pinning failed")

    monkeypatch.setattr(ptorch, "_pin_settings", lambda loader: (True, "cuda"))
    monkeypatch.setattr(torch.utils.data._utils.pin_memory, "pin_memory", failing_pin)
    with pytest.raises(OSError, match="pinning failed"):
        list(DataLoader(dataset(), pin_memory=True))


def test_a_collate_fn_of_the_callers_gets_the_dataset_batches():
    def collate(batch):
        assert isinstance(batch, dict)  # in the worker: the dataset's batch, as it is
        return batch["id"]

    loader = DataLoader(dataset(), num_workers=2, multiprocessing_context="fork",
                        collate_fn=collate)
    ids = [int(i) for b in loader for i in b]
    assert sorted(ids) == ALL


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_persistent_workers_follow_epochs_and_resumes(context):
    def loader(ds):
        return DataLoader(ds, num_workers=2, persistent_workers=True,
                          multiprocessing_context=context)

    ds = dataset(shuffle=True, seed=3)
    persistent = loader(ds)
    epochs = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        epochs.append(batch_ids(list(persistent)))
    # The same batches as loaders made for each epoch, every row once per epoch.
    for epoch in range(2):
        fresh = dataset(shuffle=True, seed=3)
        fresh.set_epoch(epoch)
        assert batch_ids(run(fresh, workers=2)[0]) == epochs[epoch]
        assert sorted(i for b in epochs[epoch] for i in b) == ALL
    assert epochs[0] != epochs[1]
    # A resume in the middle of epoch 1 on persistent workers continues exactly.
    ds.set_epoch(1)
    got = []
    for b in persistent:
        got.append(b["id"].tolist())
        if len(got) == 3:
            break
    state = persistent.state_dict()
    again = dataset(shuffle=True, seed=3)
    resumed = loader(again)
    resumed.load_state_dict(state)
    again.set_epoch(1)
    assert got + batch_ids(list(resumed)) == epochs[1]


# ---- strings="fixed": text as numpy fixed-width bytes ---------------------------------------------


def fixed_rows(batches, column="s"):
    return [v for b in batches for v in b[column].tolist()]


@pytest.mark.parametrize("workers", [0, 2])
def test_fixed_strings_are_numpy_bytes_of_the_batchs_width(workers):
    got, _ = run(dataset(strings="fixed"), workers=workers)
    want, _ = run(dataset())
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert torch.equal(g["id"], w["id"]) and torch.equal(g["x"], w["x"])
        s = g["s"]
        assert isinstance(s, np.ndarray) and s.dtype.kind == "S"
        # The batch's longest value sets the width.
        assert s.dtype.itemsize == max(len(v) for v in w["s"])
        assert s.tolist() == [v.encode() for v in w["s"]]
    if workers:
        # From a worker, the column is a view of the worker's shared memory, like a numeric one.
        assert not got[0]["s"].flags.owndata


def test_fixed_strings_as_tuples_and_over_paiio_serve(tmp_path, monkeypatch, warehouse):
    server = Server(warehouse, tmp_path)
    try:
        server.use(monkeypatch)
        got, _ = run(dataset(strings="fixed", as_tuple=True), workers=2)
    finally:
        server.stop()
    ids = [i for b in got for i in b[0].tolist()]
    assert sorted(ids) == ALL
    assert sorted(fixed_rows([{"s": b[2]} for b in got])) == sorted(
        f"s{i}".encode() for i in ALL)


def test_fixed_strings_refuse_null_and_name_the_column():
    with pytest.raises(Exception, match=r"column s.*NULL.*record_defaults"):
        run(dataset(tables=uri("nulls"), record_defaults=None, columns="i,s", strings="fixed"))
    # record_defaults fill the NULLs first: then it is delivered.
    got, _ = run(dataset(tables=uri("nulls"), record_defaults=[0, "none"], columns="i,s",
                         strings="fixed"))
    assert fixed_rows(got) == [b"a", b"none", b"c"]


def test_a_value_ending_with_a_zero_byte_is_refused_not_cut(warehouse, tmp_path):
    from frameworks_util import create_table
    from paiio.python_io import TableWriter

    create_table(warehouse, tmp_path, "zeros", "id bigint, s string", ["id", "s"], [])
    with TableWriter(uri("zeros")) as w:
        w.write([(1, "ab"), (2, "ab\x00")], [0, 1])
    with pytest.raises(Exception, match=r"column s.*row 1.*zero byte"):
        run(dataset(tables=uri("zeros"), record_defaults=None, strings="fixed"))
    got, _ = run(dataset(tables=uri("zeros"), record_defaults=None, strings="bytes"))
    assert sorted(v for b in got for v in b["s"]) == [b"ab", b"ab\x00"]


def test_fixed_strings_with_the_native_reader():
    r = ptorch._frameworks.open_reader([uri("nulls")], fixed_strings=True)
    assert [t for _, _, t in r.schema()] == ["int", "float", "bytes", "bool"]
    with pytest.raises(ValueError, match="structured arrays"):
        r.read_struct(3)
    assert r.position == 0
    # NULL cannot be delivered: an error naming the column, and the rows are not consumed.
    with pytest.raises(Exception, match="column s"):
        r.read_batch(3)
    assert r.position == 0
    with pytest.raises(Exception, match="choose one"):
        ptorch._frameworks.open_reader([uri("nulls")], fixed_strings=True,
                                       strings_as_bytes=True)
    with pytest.raises(ValueError, match="'fixed'"):
        dataset(strings="utf8")


def test_packed_fixed_width_columns_check_what_they_read():
    stream = ptorch._frameworks.open_reader([uri("nums")], fixed_strings=True).stream(
        [(0, 1, 0, 10)])
    packed = stream.next_packed()
    blob = np.frombuffer(packed.to_bytes(), dtype=np.uint8).copy()
    arrays = _native.unpack(blob)
    assert arrays[2].tolist() == [f"s{i}".encode() for i in range(10)]
    assert arrays[2].dtype == np.dtype("S2")
    words = blob[:8 * (4 + 5 * 3)].view("<u8")
    kind, at, nbytes, width = (int(w) for w in words[4 + 5 * 2:4 + 5 * 2 + 4])
    assert (nbytes, width) == (20, 2)
    for i, value in ((3, 0), (3, 3), (2, 10 ** 6), (1, len(blob))):
        bad = blob.copy()
        bad[8 * (4 + 5 * 2 + i):8 * (4 + 5 * 2 + i) + 8] = np.array([value], "<u8").view(np.uint8)
        with pytest.raises(ValueError):
            _native.unpack(bad)


def test_slice_range_is_the_readers_formula():
    # 10 rows in 3 slices: 4, 3, 3; with equal=True every slice keeps its start and has 3.
    assert [_native.slice_range(10, i, 3) for i in range(3)] == [(0, 4), (4, 7), (7, 10)]
    assert _native.slice_range(10, 0, 3, equal=True) == (0, 3)
    with pytest.raises(Exception, match="slice_id"):
        _native.slice_range(10, 3, 3)


def test_plan_is_balanced_and_complete():
    order = _native.epoch_batches([1000, 37], 1, 3, 4, 50, False, False)
    assert sum(rows for _, _, rows in order) == sum(
        b - a for n in (1000, 37) for v in range(4)
        for a, b in [_native.slice_range(n, 4 + v, 12)])
    # Round-robin over shards: position k comes from shard k % 4 while every shard has one.
    assert [v for v, _, _ in order[:8]] == [0, 1, 2, 3, 0, 1, 2, 3]


@pytest.mark.server
@SERVE_MODES
def test_dataloader_over_paiio_serve(warehouse, tmp_path, monkeypatch, serve_args):
    server = Server(warehouse, tmp_path, *serve_args)
    try:
        server.use(monkeypatch)
        ds = dataset(tables=[uri("nums"), uri("nums2")], shuffle=True, rank=0, world_size=1)
        batches, _ = run(ds, workers=2)
        assert sorted(flat(batches)) == BOTH
    finally:
        server.stop()

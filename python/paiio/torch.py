"""PyTorch: :class:`TableDataset`, an ``IterableDataset`` of column batches read from
MaxCompute tables, and :class:`DataLoader`, a ``torch.utils.data.DataLoader`` that tracks
what the training loop received so that :meth:`TableDataset.state_dict` is exact.

Quick start::

    from paiio.torch import TableDataset, DataLoader

    ds = TableDataset("odps://proj/tables/train", columns="x,y", record_defaults=[0.0, 0],
                      batch_size=1024, shuffle=True, seed=7, equal=True)
    loader = DataLoader(ds, pin_memory=True)       # num_workers=0: the recommended way
    for epoch in range(start_epoch, epochs):
        ds.set_epoch(epoch)
        for batch in loader:            # {"x": float32 tensor [1024], "y": int32 tensor [1024]}
            ...
            checkpoint["data"] = loader.state_dict()

Sharding
    ``slice_id = rank * num_workers + worker`` in spirit, but not literally: each rank's rows
    are cut into ``num_shards`` *virtual shards* (native slices ``rank * V + v`` of
    ``world_size * V``, so the rows of a rank are the same whatever the worker count). The
    epoch of a rank is one fixed sequence of batches, independent of ``num_workers``: round
    ``j`` takes batch ``j`` of every virtual shard that still has one, in shard order. Batch
    ``k`` of that sequence is produced by DataLoader worker ``k % num_workers``, which is
    exactly the order in which ``torch.utils.data.DataLoader`` (``in_order=True``, the
    default) hands worker outputs to the consumer. With ``num_workers`` dividing ``V``
    (``V`` is 24, 12, 8, ... by default) each worker reads only its own shards, sequentially.

Resume
    Because the sequence does not depend on the worker count, the position of a rank is one
    number: how many batches of the epoch the consumer has received. :meth:`state_dict`
    returns it with the epoch (and what must match to resume); :meth:`load_state_dict` makes
    the next iteration start at that batch, with any worker count. The count is kept in the
    consumer's process: by the dataset itself when it is iterated there (``num_workers=0``),
    by :class:`paiio.torch.DataLoader` when workers produce the batches; with a plain
    ``torch.utils.data.DataLoader`` and workers, pass the number of batches received this
    epoch: ``ds.state_dict(batches=n)``.

Threads first (recommended): ``num_workers=0``
    The reading needs no DataLoader worker: the dataset's native stream reads, slices and
    coerces batches on threads of its own (the reader's prefetch streams, then one thread
    that makes batches of ``batch_size`` rows ahead of the loop, in a bounded queue), and
    with ``num_workers=0`` :class:`paiio.torch.DataLoader` hands them straight to the
    training loop: the loop's thread only wraps the columns as tensors (numeric columns
    share the Arrow memory) and makes the text columns' Python objects (none with
    ``strings="fixed"``: numpy fixed-width bytes, made by the stream's thread). With
    ``pin_memory=True`` (and an accelerator) a thread of the loader pins the batches ahead
    of the loop, also through a bounded queue; without an accelerator nothing is pinned,
    with torch's warning, as torch's DataLoader does. No fork, no copy between processes,
    and :meth:`state_dict` counts what the loop received, not what was read or pinned ahead.

Workers
    Worth it when the training step leaves cores idle and the rows need Python work (text
    columns). :class:`paiio.torch.DataLoader`'s workers make no Python objects of the rows:
    each packs a batch (numeric values; text as offsets and bytes, or fixed-width values) into
    a slot of a ring of shared memory of its own (an anonymous memfd: nothing is left in
    ``/dev/shm`` whatever happens to either process) and sends a descriptor of a few dozen
    bytes through its pipe. The training process makes the batch in one native call: numeric
    and fixed-width columns are arrays over the slot itself, which they lease until the last of
    them is dropped (then the slot is the worker's again), and text objects are made there; so
    a batch the loop holds is never overwritten. Small batches travel in bundles (up to 48
    batches, 4 MiB, per item a worker sends), which :class:`paiio.torch.DataLoader` puts back
    in the epoch's order: torch's handling of each item costs the training process a few
    hundred microseconds, more than a small batch's whole read. With a plain
    ``torch.utils.data.DataLoader``, torch sends every tensor through a shared-memory segment
    of its own, whose file descriptor the receiver fetches over a new connection, and pickles
    every text value: a batch of a few small columns costs more to hand over than to read.

Importing this module imports torch; ``import paiio`` does not.
"""

from __future__ import annotations

import mmap
import os
import queue
import threading
import warnings
import weakref
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.utils.data

from . import _native
from . import data as _frameworks  # shared helpers; importing it does not import TensorFlow

__all__ = ["TableDataset", "DataLoader"]

_STATE_VERSION = 1
#: Batches the native stream of a reading process holds ready (its bounded queue).
_STREAM_DEPTH = 4
#: Rows per batch the shard readers request (at least): see ``TableDataset._open_sessions``.
_READ_BATCH_ROWS = 8192


def _resolve_dist() -> Tuple[Optional[int], Optional[int]]:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except Exception:  # pragma: no cover - broken distributed setups read as "not initialized"
        pass
    return None, None


class TableDataset(torch.utils.data.IterableDataset):
    """Batches of a slice of MaxCompute tables for PyTorch.

    Args:
        tables: a table URI, a comma-separated list of URIs, or a list of them (same columns).
        columns: columns to read, in output order: a list or a comma-separated string
            (``selected_cols`` is the paiio spelling). ``None``: every column.
        excluded_cols: the other way to choose columns.
        record_defaults: one default per column (as ``TableRecordDataset``: ``0`` -> int32,
            ``0.0`` -> float32, ``np.int64(0)`` -> int64, ``np.float64`` -> float64, ``False``
            -> bool, ``""`` -> string); NULLs become the default. ``None``: the columns'
            natural types (NULLs as the native reader gives them).
        batch_size: rows per batch.
        shuffle, seed: deterministic shuffle from ``(seed, epoch)``; see :meth:`set_epoch`.
        drop_last: leave out batches smaller than ``batch_size`` (each virtual shard's last).
        equal: every rank yields the same number of batches (the smallest count of any
            rank), so that distributed training never hangs at the end of an epoch.
        rank, world_size: the distributed position; default: ``torch.distributed`` if it is
            initialized, else 0 and 1. Give them to simulate ranks.
        num_shards: virtual shards per rank (0: automatic, at most 24). Part of the order:
            keep it to resume a saved state. Best a multiple of ``num_workers``.
        num_threads: prefetch streams per open shard reader (0: 1).
        capacity: rows of read-ahead per shard reader (0: four batches, at least 16384
            rows).
        as_tuple: yield tuples of tensors in column order instead of dicts.
        strings: how text columns come (torch has no string tensor): ``"str"`` (default)
            or ``"bytes"``, numpy object arrays, where every value is a Python object (the
            largest cost of a batch with text); or ``"fixed"``, numpy fixed-width bytes
            arrays (dtype ``S<n>``, ``n`` the batch's longest value in bytes, shorter ones
            padded with zero bytes): no object per value, and from workers they come through
            shared memory like numeric columns. ``.astype(str)`` or ``np.char.decode`` turn
            them into text; hashing and lookups can work on them as they are. ``"fixed"``
            refuses NULL (give ``record_defaults``), a value ending with a zero byte (numpy
            drops it), and a value long enough to pad the batch to over 8 times its text and
            64 MiB; binary columns stay ``bytes`` objects. Leave out the text columns the
            training does not use.
    """

    def __init__(
        self,
        tables: Union[str, Sequence[str]],
        columns: Union[None, str, Sequence[str]] = None,
        record_defaults: Optional[Sequence[Any]] = None,
        batch_size: int = 1024,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        equal: bool = False,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        num_shards: int = 0,
        num_threads: int = 0,
        capacity: int = 0,
        as_tuple: bool = False,
        excluded_cols: Union[None, str, Sequence[str]] = None,
        selected_cols: Union[None, str, Sequence[str]] = None,
        strings: str = "str",
    ):
        super().__init__()
        if strings not in ("str", "bytes", "fixed"):
            raise ValueError(f"strings must be 'str', 'bytes' or 'fixed', not {strings!r}")
        if selected_cols is not None:
            if columns is not None:
                raise ValueError("give `columns` or `selected_cols`, not both")
            columns = selected_cols
        self.tables = _native.table_uris(tables)
        self.columns = _frameworks.column_text(columns)
        self.excluded_cols = _frameworks.column_text(excluded_cols)
        if self.columns and self.excluded_cols:
            raise ValueError(
                f"selected_cols ({self.columns}) and excluded_cols ({self.excluded_cols}) are "
                "both given; choose columns with one of them"
            )
        self.record_defaults = (
            None
            if record_defaults is None
            else [value for _, value in _native.record_defaults(record_defaults)]
        )
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.equal = bool(equal)
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither")
        if world_size is not None:
            if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
                raise ValueError(f"rank {rank} is not in 0..world_size ({world_size})")
        self._explicit_rank = rank is not None
        self.rank = None if rank is None else int(rank)
        self.world_size = None if world_size is None else int(world_size)
        if not 0 <= int(num_shards) <= 4096:
            raise ValueError(f"num_shards must be 0 (automatic) or 1..4096, not {num_shards}")
        self.num_shards = int(num_shards)
        self.num_threads = int(num_threads)
        self.capacity = int(capacity)
        self.as_tuple = bool(as_tuple)
        self.strings = strings
        # Progress, kept in the consumer's process.
        self.epoch = 0
        self._start = 0  # the batch the next iteration starts at
        self._consumed = 0  # batches of `epoch` the consumer received
        self._resume_pending = False
        self._table_rows: Optional[List[int]] = None
        self._resolve_rank()

    # ---- configuration -------------------------------------------------------------------

    def _resolve_rank(self) -> None:
        if self._explicit_rank:
            return
        rank, world = _resolve_dist()
        if rank is not None:
            self.rank, self.world_size = rank, world

    def _rank_world(self) -> Tuple[int, int]:
        self._resolve_rank()
        if self.rank is None:
            return 0, 1
        return self.rank, self.world_size  # type: ignore[return-value]

    def __getstate__(self) -> Dict[str, Any]:
        # Pickled for spawned DataLoader workers in the main process, where torch.distributed
        # is initialized (it is not in the workers): resolve the rank now.
        self._resolve_rank()
        if self.rank is None:
            self.rank, self.world_size = 0, 1
        state = self.__dict__.copy()
        return state

    def _reader_kwargs(self) -> Dict[str, Any]:
        return dict(
            record_defaults=self.record_defaults,
            selected_cols=self.columns,
            excluded_cols=self.excluded_cols,
            strings_as_bytes=self.strings == "bytes",
            fixed_strings=self.strings == "fixed",
        )

    def table_rows(self) -> List[int]:
        """Rows of each table (one count per entry of ``tables``), read once and cached."""
        if self._table_rows is None:
            self._table_rows = _native.row_counts(self.tables)
        return self._table_rows

    def _shards(self) -> int:
        if self.num_shards:
            return self.num_shards
        _, world = self._rank_world()
        return _native.auto_shards(self.table_rows(), world, self.batch_size)

    def _order(self) -> List[Tuple[int, int, int]]:
        """The batch sequence of this rank's epoch: ``(shard, batch_in_shard, rows)``."""
        rank, world = self._rank_world()
        return _native.epoch_batches(self.table_rows(), rank, world, self._shards(),
                                     self.batch_size, self.drop_last, self.equal)

    def __len__(self) -> int:
        """Batches per epoch on this rank (all DataLoader workers together)."""
        return len(self._order())

    # ---- epochs and positions ------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Starts epoch ``epoch`` (its own shuffle order) at its first batch, unless a state
        loaded by :meth:`load_state_dict` is for this very epoch and has not been used yet:
        then the next iteration resumes it, so that the usual loop
        ``for e in range(saved_epoch, n): ds.set_epoch(e); ...`` resumes exactly."""
        epoch = int(epoch)
        if self._resume_pending and epoch == self.epoch:
            return
        self.epoch = epoch
        self._start = 0
        self._consumed = 0
        self._resume_pending = False
        self._publish_position()

    def _publish_position(self) -> None:
        """Writes (epoch, first batch of the next iteration) where persistent DataLoader
        workers read it (see :class:`DataLoader`); kept current by every change, so that
        workers of any loader of this dataset find what their own copy would hold."""
        shared = getattr(self, "_shared_position", None)
        if shared is not None:
            shared[0], shared[1] = self.epoch, self._start

    def _fingerprint(self) -> Dict[str, Any]:
        rank, world = self._rank_world()
        return {
            "tables": list(self.tables),
            "columns": self.columns,
            "excluded_cols": self.excluded_cols,
            "rank": rank,
            "world_size": world,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
            "equal": self.equal,
            "shuffle": self.shuffle,
            "seed": self.seed if self.shuffle else None,
            # Derived: the tables must not have changed, and the virtual shards must match.
            "table_rows": list(self.table_rows()),
            "num_shards": self._shards(),
        }

    def state_dict(self, batches: Optional[int] = None) -> Dict[str, Any]:
        """The exact position: the epoch and how many of its batches the consumer received.

        ``batches``: the number of batches of the current epoch the training loop received
        *in this iteration* (only needed with a plain ``torch.utils.data.DataLoader`` with
        workers, where this process never sees the batches); it is added to the start of the
        iteration (non-zero after a resume).
        """
        consumed = self._consumed if batches is None else self._start + int(batches)
        return {
            "version": _STATE_VERSION,
            "epoch": self.epoch,
            "batches": consumed,
            **self._fingerprint(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Makes the next iteration continue a saved :meth:`state_dict`: the remaining
        batches of its epoch, in the same order, whatever the number of workers now."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unknown TableDataset state version {state.get('version')!r}")
        mine = self._fingerprint()
        for key, value in mine.items():
            if state.get(key) != value:
                raise ValueError(
                    f"the state was saved with {key}={state.get(key)!r}, this dataset has "
                    f"{key}={value!r}: it cannot resume it"
                )
        self.epoch = int(state["epoch"])
        self._start = int(state["batches"])
        self._consumed = self._start
        self._resume_pending = True
        self._publish_position()

    def _begin_iteration(self) -> int:
        """The first batch of the iteration starting now (uses a pending resume)."""
        start = self._start
        self._consumed = start
        self._start = 0
        self._resume_pending = False
        return start

    # ---- iteration -----------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        info = torch.utils.data.get_worker_info()
        if info is None:
            worker, workers = 0, 1
            start = self._begin_iteration()
            in_consumer = True
        else:
            worker, workers = info.id, info.num_workers
            shared = getattr(self, "_shared_position", None)
            if shared is not None:
                # A persistent worker: its copy of the dataset was made once, the position
                # of this iteration is what the DataLoader just published.
                self.epoch, start = int(shared[0]), int(shared[1])
            else:
                start = self._start  # this worker's copy, made for this iteration
            in_consumer = False
        return self._generate(worker, workers, start, in_consumer)

    def _open_sessions(self) -> Any:
        """A native reader (of the whole tables, never read) whose read sessions the shard
        readers of an iteration share (``open_slice``): opening a reader makes a session per
        table, which costs a request (and with the local warehouse a synced file) per shard
        and epoch otherwise, and the shards of one session read one snapshot."""
        kwargs = self._reader_kwargs()
        if self.shuffle:
            kwargs.update(shuffle_seed=self.seed, epoch=self.epoch)
        # The reader's batches are sliced into ours without copying, so they need not be our
        # size: larger ones mean fewer hand-overs between the backend, the prefetch and the
        # reader for each row (with batches of a few hundred rows, those dominated a read).
        batch_rows = min(max(self.batch_size, _READ_BATCH_ROWS), 65536)
        return _frameworks.open_reader(
            self.tables,
            num_threads=self.num_threads or 1,
            # Two of the reader's batches: one being read while the other is used.
            capacity=self.capacity or max(4 * self.batch_size, 2 * batch_rows),
            batch_rows=batch_rows,
            **kwargs,
        )

    def _generate(self, worker: int, workers: int, start: int, in_consumer: bool) -> Iterator[Any]:
        order = self._order()
        shards = self._shards()
        rank, world = self._rank_world()
        mine = [(k, order[k]) for k in range(start + worker, len(order), workers)]
        if not mine:
            return
        # A worker of paiio.torch.DataLoader packs its batches for the training process
        # (see _WorkerRing) instead of making Python objects of them.
        token = None if in_consumer else getattr(self, "_transfer_token", None)
        # Every shard reader starts reading now (the first round of batches takes one from
        # each, and a shuffled one needs a whole window before its first); a thread of the
        # native stream reads, slices and coerces the batches ahead, in order, into a
        # bounded queue: this thread only makes the Python objects.
        sessions = self._open_sessions()
        stream = None
        try:
            plan = [(rank * shards + v, world * shards, j * self.batch_size, rows)
                    for _, (v, j, rows) in mine]
            stream = sessions.stream(plan, _STREAM_DEPTH)
            names = stream.columns
            ring = None
            if token is not None:
                ring = _worker_ring(token, worker,
                                    getattr(self, "_transfer_depth", _TRANSFER_DEPTH))
            # A worker hands its batches over a few at a time (see _Bundle).
            bundle: List[Tuple[int, _Packed]] = []
            ended_early = False
            for k, _ in mine:
                if ring is not None:
                    packed = stream.next_packed()
                    if packed is None:
                        ended_early = True
                        break
                    bundle.append((k, ring.put(packed, None if self.as_tuple else names)))
                    if len(bundle) < ring.bundle_batches:
                        continue
                    batch: Any = ring.bundle(bundle)
                    bundle = []
                else:
                    batch = stream.next(torch.from_numpy, self.as_tuple)
                    if batch is None:
                        ended_early = True
                        break
                if in_consumer:
                    self._consumed = k + 1
                yield batch
            if bundle:
                yield ring.bundle(bundle)  # type: ignore[union-attr]
            if ended_early:
                raise RuntimeError("the table ended before the batches of the epoch's plan")
        finally:
            if stream is not None:
                stream.close()
            sessions.close()


class _Transfer:
    """A batch from a DataLoader worker as numpy arrays: a batch the dataset did not pack
    (such as one of a plain loop over other data, pickled as numpy arrays by
    :func:`_pack_for_transfer`), or one that came as bytes through the pipe (see
    :class:`_WorkerRing`). ``torch.multiprocessing`` would send every tensor through its own
    shared-memory segment, whose file descriptor the receiver fetches over a fresh
    connection to the worker: a millisecond or more for a batch of a few small columns.
    The tensors are made in the training process (or by the pin-memory thread)."""

    __slots__ = ("names", "arrays")

    def __init__(self, names: Optional[List[str]], arrays: List[Any]):
        self.names = names  # None: a tuple batch
        self.arrays = arrays

    def __reduce__(self) -> Any:
        return (_Transfer, (self.names, self.arrays))

    def unpack(self) -> Any:
        """The batch as the dataset yielded it (dict or tuple), with tensors."""
        values = [
            torch.from_numpy(a)
            if isinstance(a, np.ndarray) and a.dtype.kind in "biuf"
            else a
            for a in self.arrays
        ]
        if self.names is None:
            return tuple(values)
        return dict(zip(self.names, values))

    def pin_memory(self) -> Any:
        # Called by the DataLoader's pin-memory thread (pin_memory=True) on whatever has a
        # `pin_memory` method: the batch it hands on is the unpacked one, pinned.
        return torch.utils.data._utils.pin_memory.pin_memory(self.unpack())


def _as_is(batch: Any) -> Any:
    """The ``collate_fn`` of :class:`DataLoader` without workers: TableDataset batches are
    ready (torch's ``default_convert`` would only rebuild every dict)."""
    return batch


def _pack_for_transfer(batch: Any) -> Any:
    """The ``collate_fn`` of :class:`DataLoader`'s workers: a batch already packed into
    shared memory (:class:`_Packed`) as it is; a TableDataset batch (a dict or tuple of
    tensors and object arrays) as a :class:`_Transfer`. Anything else is left alone."""
    if isinstance(batch, (_Packed, _Bundle)):
        return batch
    if isinstance(batch, dict):
        names: Optional[List[str]] = list(batch)
        values = list(batch.values())
    elif isinstance(batch, tuple):
        names, values = None, list(batch)
    else:
        return batch
    arrays = [v.numpy() if isinstance(v, torch.Tensor) else v for v in values]
    return _Transfer(names, arrays)


# ---- worker -> training process transfer -------------------------------------------------------
#
# A worker of paiio.torch.DataLoader packs each batch (numeric columns as their values, text
# columns as Arrow-style offsets and bytes: no Python object per value) into a slot of a ring
# of shared memory that the worker made (an anonymous memfd: it has no name, so nothing is
# ever left in /dev/shm, whatever happens to either process), and sends, per bundle of
# batches, only a descriptor of a few bytes per batch through its pipe. The training process
# maps the ring once (its file descriptor comes with the first descriptors, through
# multiprocessing's resource sharer) and makes each bundle's batches in one native call
# (``_native.receive``): numeric columns are tensors over the slot itself, which they lease
# until the last of them is dropped (then the slot is the worker's again); text columns
# become str/bytes objects. A batch given to the training loop is therefore never in a slot
# a worker may overwrite, however long it is kept. Where no memfd can be made, or every slot
# is still in use (the loop keeps more batches than the ring has slots), the packed batch
# travels as bytes through the pipe instead.

#: Batches a worker hands over in one item (at most; see _Bundle), and the bytes a bundle
#: is kept to: torch's handling of each item a worker sends costs the training process a few
#: hundred microseconds, more than the rest of a small batch's way (and the whole read of
#: one with ``num_workers=0``), so small batches travel in bundles that share it.
_BUNDLE_BATCHES = 48
_BUNDLE_BYTES = 4 << 20
#: Items torch keeps in flight per worker (``prefetch_factor``) when the loader does not say.
_TRANSFER_DEPTH = 2
#: Ring header: a u32 state per slot (0: free, 1: written), and in its last u32 the "mapped
#: by the training process" flag; the slots start at _RING_HEADER.
_RING_HEADER = 4096
_RING_ATTACHED = _RING_HEADER - 4
_RING_MAX_SLOTS = _RING_ATTACHED // 4
_RING_MIN_SLOTS = 8
_RING_ALIGN = 64 * 1024


class _WorkerRing:
    """The shared-memory slots of one DataLoader worker (made in the worker)."""

    def __init__(self, token: str, worker: int, depth: int):
        self.token = token
        self.worker = worker
        self.depth = max(int(depth), 1)
        self.generation = 0
        self.mm: Any = None
        self.fd = -1
        self.view: Optional[np.ndarray] = None
        self.slot_bytes = 0
        self.slots = 0
        self.next = 0
        self.shm = hasattr(os, "memfd_create")
        #: Batches per bundle: set by the first batch's size, then kept.
        self.bundle_batches = 1
        self._sized = False
        #: Whether a descriptor of the bundle being made already offers the ring's fd.
        self._offered = False

    def _size_bundles(self, nbytes: int) -> None:
        self._sized = True
        self.bundle_batches = max(1, min(_BUNDLE_BATCHES, _BUNDLE_BYTES // max(nbytes, 1)))
        # The bundles in flight (torch's prefetch), the one being made, and one more (the one
        # the training loop is taking batches from, which they lease until dropped): a
        # worker never waits for the training process, and rarely finds every slot in use.
        self.slots = min(max((self.depth + 2) * self.bundle_batches, _RING_MIN_SLOTS),
                         _RING_MAX_SLOTS)

    def _grow(self, nbytes: int) -> bool:
        """A new ring whose slots hold ``nbytes`` (and a quarter more); the old one is left
        to the training process, which may still read batches from it."""
        slot = -(-(nbytes + nbytes // 4) // _RING_ALIGN) * _RING_ALIGN
        try:
            fd = os.memfd_create("paiio-batches", os.MFD_CLOEXEC)
            try:
                os.ftruncate(fd, _RING_HEADER + self.slots * slot)
                mm = mmap.mmap(fd, _RING_HEADER + self.slots * slot)
            except BaseException:
                os.close(fd)
                raise
        except OSError:
            self.shm = False  # no shared memory here: bytes through the pipe
            return False
        self._release()
        self.mm, self.fd, self.slot_bytes = mm, fd, slot
        self.view = np.frombuffer(mm, dtype=np.uint8)
        self.generation += 1
        self.next = 0
        self._offered = False
        return True

    def _release(self) -> None:
        if self.mm is not None:
            self.view = None
            try:
                self.mm.close()
            except BufferError:  # pragma: no cover - a view still exported
                pass
            os.close(self.fd)
            self.mm, self.fd = None, -1

    def put(self, packed: Any, names: Optional[List[str]]) -> "_Packed":
        nbytes = packed.nbytes
        if not self._sized:
            self._size_bundles(nbytes)
        if self.shm and (self.mm is None or nbytes > self.slot_bytes) and not self._grow(nbytes):
            return _Packed(names, blob=packed.to_bytes())
        if not self.shm:
            return _Packed(names, blob=packed.to_bytes())
        view = self.view
        for i in range(self.slots):
            slot = (self.next + i) % self.slots
            if _native.slot_state(view, 4 * slot) == 0:
                break
        else:
            # Every slot is still in the pipe (the training process reads them as they
            # arrive, so only at the end of a round of a short epoch): send the bytes.
            return _Packed(names, blob=packed.to_bytes())
        self.next = slot + 1
        _native.set_slot_state(view, 4 * slot, 1)
        packed.write(view, _RING_HEADER + slot * self.slot_bytes)
        handle = None
        if not self._offered and _native.slot_state(view, _RING_ATTACHED) == 0:
            # Until the training process has mapped the ring, each bundle offers it the file
            # descriptor (one-shot, fetched from this process's resource sharer) with its
            # first descriptor of the ring: they are unpickled in order.
            from multiprocessing.reduction import DupFd

            handle = DupFd(self.fd)
            self._offered = True
        key = (self.token, self.worker, self.generation)
        return _Packed(names, key=key, slot=slot, slot_bytes=self.slot_bytes, handle=handle)

    def bundle(self, batches: List[Tuple[int, "_Packed"]]) -> "_Bundle":
        """The item that carries ``batches`` (``(index in the epoch, descriptor)``)."""
        self._offered = False
        return _Bundle([k for k, _ in batches], [b for _, b in batches])


_worker_rings: Dict[Tuple[str, int], _WorkerRing] = {}


def _worker_ring(token: str, worker: int, depth: int = _TRANSFER_DEPTH) -> _WorkerRing:
    ring = _worker_rings.get((token, worker))
    if ring is None:
        ring = _worker_rings[(token, worker)] = _WorkerRing(token, worker, depth)
    return ring


class _Bundle:
    """One item from a DataLoader worker: some of its batches, each with its index in the
    epoch. In the worker the batches are :class:`_Packed` descriptors; unpickled in the
    training process (in order) they are the batches themselves (see :func:`_receive`).
    :class:`DataLoader` puts the batches of the bundles back in the epoch's order: torch
    takes one item from each worker in turn, so a round of bundles holds the next
    ``num_workers * bundle_batches`` batches of the epoch."""

    __slots__ = ("indices", "batches")

    def __init__(self, indices: List[int], batches: List[Any]):
        self.indices = indices
        self.batches = batches

    def __reduce__(self) -> Any:
        if not all(isinstance(b, _Packed) for b in self.batches):
            return (_Bundle, (self.indices, self.batches))
        # The descriptors of consecutive batches in one ring travel as one group of slots.
        groups: List[Any] = []
        for b in self.batches:
            last = groups[-1] if groups else None
            if (b.blob is None and last is not None and last[1] == b.key
                    and last[0] == b.names and b.handle is None):
                last[4].append(b.slot)
            elif b.blob is None:
                groups.append((b.names, b.key, b.slot_bytes, b.handle, [b.slot]))
            else:
                groups.append((b.names, None, 0, None, [b.blob]))
        return (_receive_bundle, (self.indices, groups))

    def pin_memory(self) -> "_Bundle":
        # The DataLoader's pin-memory thread (pin_memory=True) pins the batches there.
        pin = torch.utils.data._utils.pin_memory.pin_memory
        return _Bundle(self.indices, [
            b.pin_memory() if isinstance(b, _Transfer) else pin(b) for b in self.batches])


class _Packed:
    """A worker's batch on its way: where it is in the worker's ring (or its packed bytes).
    Unpickled in the training process, it is the batch (see :func:`_receive`)."""

    __slots__ = ("names", "key", "slot", "slot_bytes", "handle", "blob")

    def __init__(self, names: Optional[List[str]], key: Any = None, slot: int = 0,
                 slot_bytes: int = 0, handle: Any = None, blob: Optional[bytes] = None):
        self.names = names
        self.key = key
        self.slot = slot
        self.slot_bytes = slot_bytes
        self.handle = handle
        self.blob = blob

    def __reduce__(self) -> Any:
        return (_receive_one, (self.names, self.key, self.slot_bytes, self.handle,
                               self.blob if self.key is None else self.slot))

    def unpack(self) -> Any:
        """The batch itself (in the process that packed it: tests)."""
        return _receive_one(self.names, self.key, self.slot_bytes, self.handle,
                            self.blob if self.key is None else self.slot)


#: Rings of workers mapped in this (the training) process: key -> (mmap, uint8 view).
_rings: Dict[Tuple[str, int, int], Tuple[Any, np.ndarray]] = {}
_rings_lock = threading.Lock()


def _ring_view(key: Tuple[str, int, int], handle: Any) -> np.ndarray:
    with _rings_lock:
        ring = _rings.get(key)
        if ring is None:
            if handle is None:
                raise RuntimeError(
                    f"a DataLoader worker's batch is in shared memory this process has not "
                    f"mapped ({key}); was the loader's iterator already shut down?"
                )
            fd = handle.detach()
            try:
                mm = mmap.mmap(fd, 0)
            finally:
                os.close(fd)
            view = np.frombuffer(mm, dtype=np.uint8)
            _native.set_slot_state(view, _RING_ATTACHED, 1)
            # The worker's earlier rings: all their batches have arrived (a worker's batches
            # come in order). Batches still kept by the loop keep their ring mapped.
            token, worker, generation = key
            for old in [k for k in _rings if k[0] == token and k[1] == worker]:
                _rings.pop(old)
            ring = _rings[key] = (mm, view)
        return ring[1]


def _drop_rings(token: str) -> None:
    """Forgets the rings of the workers of a loader iterator that is gone (each is unmapped
    once no batch leases a slot of it)."""
    with _rings_lock:
        for key in [k for k in _rings if k[0] == token]:
            _rings.pop(key)


def _receive(names: Optional[List[str]], key: Any, slot_bytes: int, handle: Any,
             entries: List[Any]) -> List[Any]:
    """The batches of consecutive descriptors of one worker: ``entries`` are slots of the
    ring ``key`` or, with no ring (``key`` None), the packed bytes of each batch."""
    if key is None:
        return [_Transfer(names, _native.unpack(np.frombuffer(blob, dtype=np.uint8))).unpack()
                for blob in entries]
    view = _ring_view(key, handle)
    items = [(_RING_HEADER + slot * slot_bytes, 4 * slot) for slot in entries]
    return _native.receive(view, items, names, torch.from_numpy)


def _receive_bundle(indices: List[int], groups: List[Any]) -> _Bundle:
    batches: List[Any] = []
    for group in groups:
        batches.extend(_receive(*group))
    return _Bundle(indices, batches)


def _receive_one(names: Optional[List[str]], key: Any, slot_bytes: int, handle: Any,
                 entry: Any) -> Any:
    return _receive(names, key, slot_bytes, handle, [entry])[0]


def _pin_settings(loader: Any) -> Tuple[bool, Optional[str]]:
    """Whether (and to which device type) batches are pinned, with torch's warnings:
    ``pin_memory=True`` without an accelerator pins nothing, as torch's DataLoader."""
    if not loader.pin_memory:
        return False, None
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        available = accelerator.is_available()
        device = accelerator.current_accelerator().type if available else None
    else:  # pragma: no cover - torch before 2.6
        available = torch.cuda.is_available()
        device = "cuda" if available else None
    if not available:
        warnings.warn(
            "'pin_memory' argument is set as true but no accelerator is found, "
            "then device pinned memory won't be used.",
            stacklevel=3,
        )
        return False, None
    if device == "mps":
        warnings.warn(
            "'pin_memory' argument is set as true but not supported on MPS now, "
            "device pinned memory won't be used.",
            stacklevel=3,
        )
        return False, None
    return True, device


class _Pinner:
    """Pins batches on a thread of its own, ahead of the training loop, into a bounded queue
    (``num_workers=0`` with ``pin_memory=True``)."""

    _END = object()

    def __init__(self, batches: Iterator[Any], device: Optional[str], depth: int):
        self.batches = batches
        self.device = device
        self.queue: "queue.Queue[Any]" = queue.Queue(maxsize=max(depth, 1))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="paiio-pin", daemon=True)
        self.thread.start()

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        from torch.utils.data._utils.pin_memory import pin_memory

        try:
            for batch in self.batches:
                if not self._put(("batch", pin_memory(batch, self.device))):
                    break
            else:
                self._put(("end", None))
        except BaseException as e:  # handed to the training loop
            self._put(("error", e))
        finally:
            close = getattr(self.batches, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[Any]:
        while True:
            kind, value = self.queue.get()
            if kind == "batch":
                yield value
            elif kind == "end":
                return
            else:
                raise value

    def close(self) -> None:
        self.stop.set()
        while self.thread.is_alive():
            try:  # free the thread if it waits to put
                self.queue.get_nowait()
            except queue.Empty:
                pass
            self.thread.join(timeout=0.05)


class DataLoader(torch.utils.data.DataLoader):
    """A ``torch.utils.data.DataLoader`` for a :class:`TableDataset` (which yields whole
    batches, so ``batch_size`` defaults to ``None``) that counts the batches it delivers, so
    that :meth:`state_dict` is the exact position of the training loop with any number of
    workers. ``load_state_dict`` restores it (with any worker count).

    ``num_workers=0`` (recommended): the batches of the dataset's native stream go straight
    to the loop; ``pin_memory=True`` pins them on a thread of the loader (see the module
    doc). With workers and no ``collate_fn`` of the caller's, batches travel from the
    workers through shared memory and become tensors in the training process (see
    ``_WorkerRing``). The batches delivered are the same either way.

    ``persistent_workers=True`` keeps the workers (and their open state) across epochs;
    ``set_epoch`` and ``load_state_dict`` still reach them, through a position the loader
    shares with its workers, so the batches are those of a loader made for each epoch."""

    def __init__(self, dataset: TableDataset, batch_size: Optional[int] = None, **kwargs: Any):
        if (
            kwargs.get("persistent_workers")
            and isinstance(dataset, TableDataset)
            and kwargs.get("num_workers", 0) > 0
        ):
            # Persistent workers keep the copy of the dataset they started with, so
            # set_epoch() and load_state_dict() never reach it: each iteration publishes
            # (epoch, first batch) in shared memory, which the workers read as they start it.
            # Made before the workers are, so that they inherit it (or receive it when spawned).
            import multiprocessing

            context = kwargs.get("multiprocessing_context")
            if isinstance(context, str):
                context = multiprocessing.get_context(context)
            dataset._shared_position = (context or multiprocessing).RawArray("q", 2)
            dataset._publish_position()
        if kwargs.get("in_order") is False:
            raise ValueError("in_order=False would make the order depend on worker timing")
        if (
            isinstance(dataset, TableDataset)
            and batch_size is None
            and kwargs.get("collate_fn") is None
        ):
            workers = kwargs.get("num_workers", 0)
            kwargs["collate_fn"] = _pack_for_transfer if workers > 0 else _as_is
        super().__init__(dataset, batch_size=batch_size, **kwargs)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        ds = self.dataset
        if not isinstance(ds, TableDataset):
            yield from super().__iter__()
            return
        if self.num_workers == 0:
            if self.collate_fn is not _as_is:
                yield from super().__iter__()
                return
            yield from self._iter_in_process(ds)
            return
        ds._resolve_rank()
        # Counted once here rather than by every worker (each opening every table).
        ds.table_rows()
        # Workers get their copy of the dataset (with the start position) when the iterator
        # is created below, persistent workers the shared position; the consumer's progress
        # is counted here.
        ds._publish_position()
        token = os.urandom(8).hex()
        if self.collate_fn is _pack_for_transfer:
            # The workers made now pack their batches into shared memory (see _WorkerRing).
            ds._transfer_token = token
            ds._transfer_depth = self.prefetch_factor or _TRANSFER_DEPTH
        try:
            inner = super().__iter__()
        finally:
            ds.__dict__.pop("_transfer_token", None)
            ds.__dict__.pop("_transfer_depth", None)
        if getattr(inner, "_paiio_token", None) is None:
            # The rings of these workers are unmapped here when the iterator is gone
            # (persistent workers keep theirs across epochs).
            inner._paiio_token = token
            weakref.finalize(inner, _drop_rings, token)
        start = ds._begin_iteration()
        count = start
        # Batches of bundles that arrived ahead of their turn, by index in the epoch.
        ahead: Dict[int, Any] = {}
        for item in inner:
            if isinstance(item, _Bundle):
                ahead.update(zip(item.indices, item.batches))
            else:
                ahead[count] = item
            # Nothing here keeps a batch once the loop has it: its slot in a worker's ring
            # is given back as soon as the loop drops it.
            item = None
            while count in ahead:
                batch = ahead.pop(count)
                if isinstance(batch, _Transfer):  # not unpacked by the pin-memory thread
                    batch = batch.unpack()
                count += 1
                ds._consumed = count
                yield batch
                batch = None
        if ahead:
            raise RuntimeError(
                f"the DataLoader's workers sent batches {sorted(ahead)[:4]} of the epoch "
                f"but not batch {count}"
            )

    def _iter_in_process(self, ds: TableDataset) -> Iterator[Any]:
        """``num_workers=0``: the batches of the dataset's native stream (read, sliced and
        coerced by its threads), straight to the training loop; pinned by a thread of their
        own with ``pin_memory=True`` (and an accelerator)."""
        pin, device = _pin_settings(self)
        start = ds._begin_iteration()
        batches: Any = ds._generate(0, 1, start, in_consumer=False)
        if pin:
            batches = _Pinner(batches, device, _STREAM_DEPTH)
        count = start
        try:
            for batch in batches:
                count += 1
                ds._consumed = count
                yield batch
        finally:
            batches.close()

    def state_dict(self) -> Dict[str, Any]:
        return self.dataset.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.dataset.load_state_dict(state)

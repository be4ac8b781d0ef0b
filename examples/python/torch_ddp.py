"""Quick start: ``paiio.torch.TableDataset`` and ``paiio.torch.DataLoader`` in a data-parallel
job of two ranks: two processes in a ``torch.distributed`` gloo group, each reading its shard
(its rank) with two DataLoader workers and training a logistic regression whose gradients are
averaged across ranks (DistributedDataParallel).

    python torch_ddp.py odps://demo/tables/train     # or PAIIO_EXAMPLE_TABLE=...

The table needs columns ``f1 double, f2 double, label bigint``. The backend is the process
configuration (``ODPS_CONFIG_FILE_PATH``, or ``PAIIO_WAREHOUSE``), inherited by the ranks.
"""
import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import paiio.torch

WORLD_SIZE = 2
EPOCHS = 2


def run(rank, table, port):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    torch.manual_seed(0)
    # rank/world_size come from the process group (they can also be given explicitly).
    ds = paiio.torch.TableDataset(table, columns=["f1", "f2", "label"], batch_size=64,
                                  shuffle=True, seed=7, equal=True)
    loader = paiio.torch.DataLoader(ds, num_workers=2)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for epoch in range(EPOCHS):
        ds.set_epoch(epoch)
        rows = correct = 0
        for batch in loader:               # a dict of tensors
            x = torch.stack([batch["f1"], batch["f2"]], dim=1).float()
            y = batch["label"].float()
            logits = model(x).squeeze(1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            rows += len(y)
            correct += int(((logits > 0).float() == y).sum())
        state = loader.state_dict()        # exact resume point
        print(f"rank {rank}/{WORLD_SIZE} epoch {epoch}: {rows} rows, "
              f"accuracy {correct / max(rows, 1):.3f}, state epoch {state['epoch']}", flush=True)
    totals = torch.tensor([rows])
    dist.all_reduce(totals)
    if rank == 0:
        print(f"both ranks read {int(totals)} rows per epoch", flush=True)
    dist.destroy_process_group()


def main():
    table = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "PAIIO_EXAMPLE_TABLE", "odps://demo/tables/train")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(run, args=(table, port), nprocs=WORLD_SIZE, join=True)


if __name__ == "__main__":
    main()

"""One rank of tests/test_distributed_torch.py: ``python torch_dist_worker.py CASE RANK WORLD
FOLDER`` with MASTER_ADDR/MASTER_PORT set (gloo, CPU). Every sub-case of one launch runs in
order; rank 0 writes FOLDER/CASE-WORLD.json with every failure (or the traceback)."""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

import torch
import torch.distributed as dist

import fastopt.torch as fot

CASE, RANK, WORLD, FOLDER = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
failures: list[str] = []


def check(ok: bool, what: str) -> None:
    if not ok:
        failures.append(f"rank {RANK}/{WORLD}: {what}")


def model() -> torch.nn.Module:
    torch.manual_seed(0)  # the same weights on every rank; odd shapes: uneven shards
    return torch.nn.Sequential(torch.nn.Linear(33, 3), torch.nn.Tanh(), torch.nn.Linear(3, 5),
                               torch.nn.Tanh(), torch.nn.Linear(5, 7))


def batch(t: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + t)  # the same batch on every rank
    return torch.randn(16, 33, generator=g), torch.randn(16, 7, generator=g)


def train(net: torch.nn.Module, opt: Any, steps: range) -> None:
    for t in steps:
        x, y = batch(t)
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()


def full(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.full_tensor().detach().clone() if hasattr(p, "full_tensor") else
            p.detach().clone() for p in net.parameters()]


def sharded(offload: bool) -> torch.nn.Module:
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    net = model()
    kwargs = {"offload_policy": CPUOffloadPolicy(pin_memory=False)} if offload else {}
    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, **kwargs)
    fully_shard(net, **kwargs)
    return net


OPTIMIZERS = [("Adam", {"lr": 1e-2}), ("AdamW", {"lr": 1e-2, "weight_decay": 0.1}),
              ("SGD", {"lr": 0.1, "momentum": 0.9}), ("Adagrad", {"lr": 0.1}),
              ("RMSprop", {"lr": 1e-2})]


def fsdp2() -> None:
    """FSDP2 (+ CPU offload) with fastopt.torch against torch.optim's for-loop code."""
    for offload in (False, True):
        for name, kwargs in OPTIMIZERS:
            ours, theirs = sharded(offload), sharded(offload)
            a = getattr(fot, name)(ours.parameters(), **kwargs)
            b = getattr(torch.optim, name)(theirs.parameters(), foreach=False, **kwargs)
            train(ours, a, range(3))
            train(theirs, b, range(3))
            diff = max(float((x - y).abs().max()) for x, y in zip(full(ours), full(theirs)))
            check(diff < 1e-6, f"FSDP2 offload={offload} {name}: max difference {diff:.3g}")
            state = a.state[next(iter(ours.parameters()))]
            key = "exp_avg" if "Adam" in name else None
            if key is not None:
                check(type(state[key]).__name__ == "DTensor",
                      f"FSDP2 {name}: state {key!r} is {type(state[key]).__name__}")


def dcp_save() -> None:
    """Train 2 steps, save with torch.distributed.checkpoint, train 2 more: the reference."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    net = sharded(False)
    opt = fot.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    train(net, opt, range(2))
    msd, osd = get_state_dict(net, opt)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=os.path.join(FOLDER, "dcp"))
    train(net, opt, range(2, 4))
    ref = full(net)
    if RANK == 0:
        torch.save(ref, os.path.join(FOLDER, "reference.pt"))


def dcp_load() -> None:
    """Load the 2-rank checkpoint on this many ranks, train the same 2 steps."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    net = sharded(False)
    opt = fot.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    msd, osd = get_state_dict(net, opt)
    sd = {"model": msd, "optim": osd}
    dcp.load(sd, checkpoint_id=os.path.join(FOLDER, "dcp"))
    set_state_dict(net, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
    train(net, opt, range(2, 4))
    ref = torch.load(os.path.join(FOLDER, "reference.pt"))
    diff = max(float((x - y).abs().max()) for x, y in zip(full(net), ref))
    check(diff < 1e-6, f"DCP saved on 2 ranks, loaded on {WORLD}: max difference {diff:.3g}")


def zero() -> None:
    """ZeroRedundancyOptimizer(optimizer_class=fastopt.torch.AdamW) + DDP against DDP +
    fastopt.torch.AdamW: bit-identical."""
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    for bucket in (False, True):
        ours, theirs = DDP(model()), DDP(model())
        a = ZeroRedundancyOptimizer(ours.parameters(), optimizer_class=fot.AdamW, lr=1e-2,
                                    weight_decay=0.1, parameters_as_bucket_view=bucket)
        b = fot.AdamW(theirs.parameters(), lr=1e-2, weight_decay=0.1)
        if "NUMBA_NUM_THREADS" not in os.environ:  # each rank its share of the cores
            import numba

            share = max(1, len(os.sched_getaffinity(0)) // WORLD)
            check(numba.get_num_threads() == share,
                  f"{numba.get_num_threads()} Numba threads (expected {share})")
        train(ours, a, range(3))
        train(theirs, b, range(3))
        same = all(torch.equal(x, y) for x, y in zip(ours.parameters(), theirs.parameters()))
        check(same, f"ZeRO (bucket view {bucket}) + fastopt.torch differs from DDP + "
                    f"fastopt.torch")
        a.consolidate_state_dict(to=0)
        if RANK == 0:
            sd = a.state_dict()
            check(len(sd["state"]) == len(list(ours.parameters())),
                  f"consolidated ZeRO state holds {len(sd['state'])} entries")


def main() -> None:
    dist.init_process_group("gloo", rank=RANK, world_size=WORLD)
    parts = {"main": [zero, fsdp2, dcp_save], "load": [dcp_load]}[CASE]
    for part in parts:
        try:
            part()
        except Exception:
            failures.append(f"rank {RANK}/{WORLD}: {part.__name__}: {traceback.format_exc()}")
    everyone: list[Any] = [None] * WORLD
    dist.all_gather_object(everyone, failures)
    if RANK == 0:
        with open(os.path.join(FOLDER, f"{CASE}-{WORLD}.json"), "w") as f:
            json.dump([x for fs in everyone for x in fs], f, indent=1)
    # Every rank is done with every collective before any tears gloo down (a rank closing
    # its connections while another's gloo thread still uses them aborted one in CI).
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

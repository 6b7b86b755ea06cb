"""FSDP2 with CPU offload and fastopt.torch.AdamW as the optimizer of the sharded parameters.

    torchrun --standalone --nproc_per_node 2 examples/fsdp2_cpu_offload.py

Each rank holds a shard of every parameter and of the optimizer state, on the CPU; the update
of each shard runs in fastopt's fused kernel (torch's fused Adam has no DTensor CPU path for
most optimizers, its for-loop one is slow). CPU-only machines use gloo and
``CPUOffloadPolicy(pin_memory=False)`` (pinning needs an accelerator). Build the optimizer after
``fully_shard``: the parameters it sees are the sharded DTensors.
"""

import time

import torch
import torch.distributed as dist
from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

import fastopt.torch


def main(steps: int = 30) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)  # the same initial weights everywhere
    net = torch.nn.Sequential(torch.nn.Linear(64, 257), torch.nn.GELU(),
                              torch.nn.Linear(257, 257), torch.nn.GELU(),
                              torch.nn.Linear(257, 1))
    policy = CPUOffloadPolicy(pin_memory=False)
    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, offload_policy=policy)
    fully_shard(net, offload_policy=policy)
    opt = fastopt.torch.AdamW(net.parameters(), lr=3e-3, weight_decay=0.01)
    data = torch.Generator().manual_seed(1 + rank)  # each rank its own batches
    truth = torch.randn(64, 1, generator=torch.Generator().manual_seed(7)) / 8
    start = time.perf_counter()
    for step in range(1, steps + 1):
        x = torch.randn(128, 64, generator=data)
        y = torch.tanh(x @ truth)
        loss = torch.nn.functional.mse_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if rank == 0 and (step == 1 or step % 10 == 0):
            print(f"step {step:3d}  loss {loss.item():.4f}")
    elapsed = time.perf_counter() - start
    local = sum(s["exp_avg"].to_local().numel() for s in opt.state.values())
    total = sum(p.numel() for p in net.parameters())
    counts = [None] * dist.get_world_size()
    dist.all_gather_object(counts, local)
    if rank == 0:
        print(f"{dist.get_world_size()} ranks, {steps} steps in {elapsed:.2f} s; exp_avg "
              f"elements per rank {counts} (model: {total})")
        assert sum(counts) == total
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

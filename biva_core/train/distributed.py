"""Multi-process training under torchrun: a thin layer over torch.distributed.

    torchrun --nproc_per_node 8 train.py --preset celeba64 --data celeba --out runs/x
    torchrun --nnodes 2 --node_rank R --master_addr HOST --nproc_per_node 8 train.py ...

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; with WORLD_SIZE > 1 the trainer joins the
process group (NCCL on CUDA, Gloo on CPU). Every helper here is a no-op in a single process, so
the trainer reads the same either way.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 when unset)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_device(device: str) -> str:
    """'cuda' -> 'cuda:LOCAL_RANK' under torchrun (one GPU per process); anything else as is."""
    if device == "cuda" and env_world_size() > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def init(device: torch.device) -> bool:
    """Join the process group when WORLD_SIZE > 1 (once); True when running distributed."""
    if env_world_size() <= 1:
        return False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def any_flag(flags: list[bool], device: torch.device) -> list[bool]:
    """Element-wise OR of boolean flags over all ranks: decisions (stop, checkpoint) that every
    rank must take at the same step, or the collectives that follow would deadlock."""
    if world_size() == 1:
        return flags
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def mean_tensor(value: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The mean of a per-rank 0-dim tensor over all ranks, on the device (no host sync)."""
    if world_size() == 1:
        return value
    t = value.detach().double().reshape(1).to(device)
    dist.all_reduce(t)
    return (t / world_size()).reshape(()).to(value.dtype)


def gather_rng(device: torch.device) -> list[torch.Tensor]:
    """Every rank's CPU RNG state (and CUDA state when on a GPU), in rank order: on resume each
    rank gets its own stream back (dropout and latent draws differ between ranks)."""
    state = torch.get_rng_state()
    if device.type == "cuda":
        state = torch.cat([state, torch.cuda.get_rng_state(device)])
    if world_size() == 1:
        return [state]
    state = state.to(device)  # NCCL gathers CUDA tensors, Gloo CPU ones
    out = [torch.empty_like(state) for _ in range(world_size())]
    dist.all_gather(out, state)
    return [t.cpu() for t in out]


def set_rng(state: torch.Tensor, device: torch.device) -> None:
    cpu = torch.get_rng_state().numel()
    torch.set_rng_state(state[:cpu].clone())
    if device.type == "cuda" and state.numel() > cpu:
        torch.cuda.set_rng_state(state[cpu:].clone(), device)

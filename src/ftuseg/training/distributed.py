"""torchrun / DDP plumbing: a no-op in a single process.

``torchrun`` (or ``ftuseg train --nproc N``) describes the job in the environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT); :func:`init_distributed` joins it with gloo on CPU and nccl on CUDA.
The process group is created once per process and destroyed at exit, so several ``train`` calls in one
process (``--folds all``) reuse it instead of re-rendezvousing.
"""

from __future__ import annotations

import atexit
import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank and world size as torchrun sets them (a single process when unset)."""
    return DistInfo(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                    int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(device_name: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU, nccl on CUDA)."""
    info = env_info()
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if device_name not in ("auto", "cuda", "cpu"):
        device = torch.device(device_name)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", info.local_rank if info.enabled else 0)
    elif use_cuda:
        device = torch.device("cuda", info.local_rank if info.enabled else 0)
    else:
        device = torch.device("cpu")
    if info.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(_destroy)
    return info, device


def no_forward_buffer_sync() -> dict[str, bool]:
    """DDP keyword that turns off the per-forward buffer broadcast (renamed in recent torch releases)."""
    import inspect

    params = inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    # nccl only moves CUDA tensors; gloo only CPU ones
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def broadcast_float(value: float, info: DistInfo) -> float:
    """Rank 0's value on every rank (e.g. an LR found on rank 0)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_comm_device())
    dist.broadcast(t, src=0)
    return float(t.item())


def all_reduce_mean(value: float, info: DistInfo) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def all_reduce_max(value: float, info: DistInfo) -> float:
    """The largest value over ranks: one clock for schedules and stop decisions that must agree."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


@torch.no_grad()
def average_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks.

    Without SyncBatchNorm (CPU) each replica updates its running statistics from its own batches, so
    they drift apart; averaging at the end of an epoch makes the checkpoint reflect every rank's data
    and keeps the replicas identical.
    """
    if not info.enabled:
        return
    for buf in module.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf.div_(info.world_size)


def state_checksums(module: torch.nn.Module) -> dict[str, str]:
    """SHA-256 over the raw bytes of every parameter and every buffer (in state order)."""
    out = {}
    for kind, tensors in (("params", module.named_parameters()), ("buffers", module.named_buffers())):
        h = hashlib.sha256()
        for name, t in tensors:
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        out[kind] = h.hexdigest()
    return out


def cleanup(info: DistInfo) -> None:
    """Kept for callers; the group now lives until the process exits (see module docstring)."""

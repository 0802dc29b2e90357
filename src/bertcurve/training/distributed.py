"""Processes and devices: which rank does what, the DDP wrapper, where tensors live.

Started by ``torchrun`` with N processes, an optimizer step takes
``grad_accum x N`` micro-batches (of ``micro_batch`` sequences each), every
process ``grad_accum`` of them, as in the Hugging Face Trainer: any number of
processes works with any settings, and N processes at ``grad_accum`` g train
exactly what one process trains at ``grad_accum`` N x g (same micro-batches,
masks and dropout; only the order of the gradient sums differs).
DistributedDataParallel sums the gradients; only rank 0 writes files or prints.

Each process drives one device (``cuda:LOCAL_RANK``). Small numbers the host
needs every step (the step's token counts and whether any rank was asked to
stop) go over a CPU (gloo) group, so reading them never waits for queued GPU
work; every collective gives up after ``--dist-timeout`` seconds, so a rank
that died cannot leave the others blocked for ever.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import torch

from bertcurve.errors import UserError
from bertcurve.training.config import SpeedConfig


@dataclass(frozen=True)
class Dist:
    """Rank information; only rank 0 writes files or prints."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    #: The process group of host-side numbers (CPU tensors); None: the default group (gloo).
    host_group: Any = field(default=None, compare=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))

    def micro_batches_per_step(self, grad_accum: int) -> int:
        """Micro-batches of one optimizer step over all processes."""
        return grad_accum * self.world_size

    def micro_batches(self, step: int, grad_accum: int) -> list[int]:
        """Numbers of this rank's ``grad_accum`` micro-batches of optimizer step ``step`` (1-based).

        Rank r takes the step's micro-batches r, r + N, r + 2N, ... of N processes.
        """
        per_step = self.micro_batches_per_step(grad_accum)
        first = (step - 1) * per_step
        return [first + j for j in range(self.rank, per_step, self.world_size)]

    def connect(self, device: torch.device, timeout_s: float) -> "Dist":
        """Join the process group (NCCL on CUDA, else gloo); the Dist to use from now on.

        On CUDA the group is bound to this rank's device (``device_id``) and a
        second, gloo group carries the host-side numbers of :meth:`sum_on_host`.
        """
        if not self.is_distributed:
            return self
        import torch.distributed as tdist

        timeout = timedelta(seconds=timeout_s)
        if not tdist.is_initialized():
            if device.type == "cuda":
                tdist.init_process_group("nccl", timeout=timeout, device_id=device)
            else:
                tdist.init_process_group("gloo", timeout=timeout)
        if tdist.get_backend() == "gloo":
            return self
        return replace(self, host_group=tdist.new_group(backend="gloo", timeout=timeout))

    def sum_on_host(self, values: list[int]) -> list[int]:
        """``values`` summed over every rank, through CPU memory only (no wait for the GPU)."""
        if not self.is_distributed:
            return list(values)
        import torch.distributed as tdist

        tensor = torch.tensor(values, dtype=torch.long)
        tdist.all_reduce(tensor, group=self.host_group)
        return [int(x) for x in tensor.tolist()]

    def wrap(self, net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module the training step calls: ``net`` itself, or a DDP wrapper of it.

        DDP must see the forward call to synchronise gradients, so it wraps a
        module whose forward is the masked-positions-only loss.
        """
        if not self.is_distributed:
            return net
        import torch.distributed as tdist

        from bertcurve.training.model import TrainingModule

        if not tdist.is_initialized():
            raise RuntimeError("Dist.connect() must run before Dist.wrap()")
        return torch.nn.parallel.DistributedDataParallel(
            TrainingModule(net), device_ids=[device.index] if device.type == "cuda" else None)

    def sum_over_ranks(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over every rank, in place (itself when alone)."""
        if self.is_distributed:
            import torch.distributed as tdist

            tdist.all_reduce(tensor)
        return tensor

    def barrier(self) -> None:
        if self.is_distributed:
            import torch.distributed as tdist

            tdist.barrier()


def resolve_device(speed: SpeedConfig) -> tuple[torch.device, torch.dtype | None]:
    """``(device, autocast dtype or None)`` for the speed settings."""
    if speed.device == "cuda" or (speed.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"process {local_rank} of this machine has no GPU of its own "
                            f"({torch.cuda.device_count()} visible); start at most one process per "
                            "GPU (torchrun --nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)  # one device per rank: kernels and NCCL never share cuda:0
    else:
        device = torch.device("cpu")
    if speed.dtype == "bf16" or (speed.dtype == "auto" and device.type == "cuda"):
        amp = torch.bfloat16
    else:
        amp = None
    return device, amp


def is_collective_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed or timed out (another rank died or hung)."""
    import torch.distributed as tdist

    if isinstance(exc, getattr(tdist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        mark in text for mark in ("Connection closed by peer", "Connection reset by peer", "gloo",
                                  "NCCL", "Timed out", "timed out", "Socket Timeout"))


def reads_stall(device: torch.device) -> bool:
    """Whether reading a value back to Python waits for queued device work (CUDA)."""
    return device.type == "cuda"


def autocast(device: torch.device, amp: torch.dtype | None):
    """bf16 autocast on ``device``, or nothing in fp32."""
    if amp is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp)

"""Processes and devices: which rank does what, the DDP wrapper, where tensors live.

Started by ``torchrun`` with N processes, an optimizer step takes
``grad_accum x N`` micro-batches (of ``micro_batch`` sequences each), every
process ``grad_accum`` of them, as in the Hugging Face Trainer: any number of
processes works with any settings, and N processes at ``grad_accum`` g train
exactly what one process trains at ``grad_accum`` N x g (same micro-batches,
masks and dropout; only the order of the gradient sums differs).
DistributedDataParallel sums the gradients; only rank 0 writes files or prints.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from bertcurve.errors import UserError
from bertcurve.training.config import SpeedConfig


@dataclass(frozen=True)
class Dist:
    """Rank information; only rank 0 writes files or prints."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

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
            tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
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
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    else:
        device = torch.device("cpu")
    if speed.dtype == "bf16" or (speed.dtype == "auto" and device.type == "cuda"):
        amp = torch.bfloat16
    else:
        amp = None
    return device, amp


def reads_stall(device: torch.device) -> bool:
    """Whether reading a value back to Python waits for queued device work (CUDA)."""
    return device.type == "cuda"


def autocast(device: torch.device, amp: torch.dtype | None):
    """bf16 autocast on ``device``, or nothing in fp32."""
    if amp is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp)

"""Learning-rate schedule as a pure function of the optimizer step.

Because the rate depends on nothing but the step, resuming a run needs no
scheduler object state: the step in the checkpoint is the whole state.
"""

from __future__ import annotations

import math


def lr_at(
    step: int,
    *,
    peak_lr: float,
    warmup_steps: int,
    max_steps: int,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.0,
) -> float:
    """Learning rate used for optimizer update number ``step`` (1-based).

    Linear warm-up ``peak * step / warmup`` for ``step <= warmup`` (the seed
    logged 2.5e-6 at step 100 of 2,000 warm-up steps at peak 5e-5), then
    ``cosine`` or ``linear`` decay reaching ``min_lr_ratio * peak`` exactly
    at ``max_steps``, or ``constant``. Steps past ``max_steps`` keep the
    final rate.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if warmup_steps > 0 and step <= warmup_steps:
        return peak_lr * step / warmup_steps
    if schedule == "constant":
        return peak_lr
    floor = peak_lr * min_lr_ratio
    span = max_steps - warmup_steps
    if span <= 0:
        return floor if schedule != "constant" else peak_lr
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    if schedule == "cosine":
        return floor + (peak_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return floor + (peak_lr - floor) * (1.0 - progress)
    raise ValueError(f"unknown schedule {schedule!r}")

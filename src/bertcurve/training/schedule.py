"""Learning-rate schedules as pure functions of the optimizer step.

Because the rate depends on nothing but the step, resuming a run needs no
scheduler object state: the step in the checkpoint is the whole state.
"""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "linear", "constant", "wsd", "inverse_sqrt")
DECAY_SHAPES = ("linear", "cosine", "1-sqrt")   # the cooldown of a WSD schedule


def decay_factor(progress: float, shape: str) -> float:
    """How much of the way from the peak to the floor remains at ``progress`` in [0, 1]
    of a decay: 1 at its start, 0 at its end."""
    p = min(1.0, max(0.0, progress))
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if shape == "linear":
        return 1.0 - p
    if shape == "1-sqrt":      # Hagele et al. 2024: the best cooldown shape they measured
        return 1.0 - math.sqrt(p)
    raise ValueError(f"unknown decay shape {shape!r}: use one of {', '.join(DECAY_SHAPES)}")


def wsd_decay_start(max_steps: int, warmup_steps: int, decay_fraction: float) -> int:
    """First step of a WSD schedule's cooldown: the last ``decay_fraction`` of all steps,
    never inside the warm-up. Checkpoints just before it are the stable phase's last."""
    return max(warmup_steps, max_steps - int(round(decay_fraction * max_steps)))


def lr_at(
    step: int,
    *,
    peak_lr: float,
    warmup_steps: int,
    max_steps: int,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.0,
    decay_fraction: float = 0.2,
    decay_shape: str = "linear",
) -> float:
    """Learning rate used for optimizer update number ``step`` (1-based).

    Linear warm-up ``peak * step / warmup`` for ``step <= warmup`` (the seed
    logged 2.5e-6 at step 100 of 2,000 warm-up steps at peak 5e-5), then:
    ``cosine`` or ``linear`` decay reaching ``min_lr_ratio * peak`` exactly at
    ``max_steps``; ``constant``; ``wsd`` (warmup-stable-decay: the peak until the
    last ``decay_fraction`` of the steps, then a ``decay_shape`` cooldown to the
    floor); or ``inverse_sqrt`` (``peak * sqrt(warmup / step)``, never below the
    floor, independent of ``max_steps``, so a run can always continue). Steps past
    ``max_steps`` keep the final rate.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if warmup_steps > 0 and step <= warmup_steps:
        return peak_lr * step / warmup_steps
    if schedule == "constant":
        return peak_lr
    floor = peak_lr * min_lr_ratio
    if schedule == "inverse_sqrt":
        return max(floor, peak_lr * math.sqrt(max(warmup_steps, 1) / max(step, 1)))
    if schedule == "wsd":
        start = wsd_decay_start(max_steps, warmup_steps, decay_fraction)
        if step <= start:
            return peak_lr
        progress = (step - start) / max(max_steps - start, 1)
        return floor + (peak_lr - floor) * decay_factor(progress, decay_shape)
    span = max_steps - warmup_steps
    if span <= 0:
        return floor
    progress = (step - warmup_steps) / span
    if schedule in ("cosine", "linear"):
        return floor + (peak_lr - floor) * decay_factor(progress, schedule)
    raise ValueError(f"unknown schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")


# The schedule settings whose change alters some step's rate (max_steps aside).
_RATE_FIELDS = ("lr", "warmup_steps", "schedule", "min_lr_ratio", "decay_fraction", "decay_shape")


def stable_phase_end(schedule: str, max_steps: int, warmup_steps: int, decay_fraction: float) -> int | None:
    """The last step a longer run of the same schedule would also train at these rates:
    the WSD stable phase's last step (its rate is the peak; step + 1 is the first cooled one),
    None for schedules whose every step depends on ``max_steps`` (cosine, linear) or none
    does (constant, inverse_sqrt)."""
    if schedule != "wsd":
        return None
    return wsd_decay_start(max_steps, warmup_steps, decay_fraction)


def rates_agree_through(step: int, old: dict, new: dict) -> bool:
    """Whether two optimizer settings (``OptimConfig`` dicts) give every update up to ``step``
    the same learning rate, so a checkpoint at ``step`` continues exactly under ``new``."""
    if any(old.get(k) != new.get(k) for k in _RATE_FIELDS):
        return False
    if old.get("max_steps") == new.get("max_steps") or step <= int(old.get("warmup_steps", 0)):
        return True
    schedule = old.get("schedule")
    if schedule in ("constant", "inverse_sqrt"):
        return True
    if schedule == "wsd":
        ends = [wsd_decay_start(int(c["max_steps"]), int(c["warmup_steps"]), float(c["decay_fraction"]))
                for c in (old, new)]
        return step <= min(ends)
    return False


def rates_per_step(optim) -> list[float]:
    """Learning rate of every step 0..max_steps for optimizer settings given as a mapping
    (``OptimConfig`` fields as saved in config.json): what-if forecasts and the sweep's pruner
    rebuild a run's schedule with it."""
    extra = {k: optim[k] for k in ("decay_fraction", "decay_shape") if k in optim}
    last = int(optim["max_steps"])
    return [lr_at(s, peak_lr=float(optim["lr"]), warmup_steps=int(optim["warmup_steps"]), max_steps=last,
                  schedule=str(optim.get("schedule", "cosine")),
                  min_lr_ratio=float(optim.get("min_lr_ratio", 0.0)), **extra)
            for s in range(last + 1)]

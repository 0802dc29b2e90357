"""``bertcurve train --extend-to N``: continue a run past the number of steps it planned.

A WSD run restarts from its last stable-phase checkpoint (the Trainer keeps
it as a milestone) with ``max_steps = N``, so the cooldown moves to the new
end; the cooldown it abandons (its checkpoints, metrics lines and final
model) moves to ``branches/max-steps-<old>/``, and ``metrics.jsonl`` keeps
one curve plus a ``{"split": "branch"}`` record at the branch point. A
constant or inverse-sqrt run simply continues from its newest checkpoint;
cosine and linear runs are refused (their learning rate is spent) unless
``rewarm`` is given.

The change is journalled: ``extend.json`` is written first, every later step
is idempotent, and :func:`finish_pending` (called before every training
session) completes a branch a kill interrupted, so ``--resume auto`` after a
SIGKILL at any moment continues the extension exactly.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from bertcurve import layout
from bertcurve.errors import UserError
from bertcurve.fsutil import atomic_write_bytes, read_json, write_json
from bertcurve.training import checkpoint as ckpt
from bertcurve.training import metrics_log
from bertcurve.training.schedule import rates_agree_through, stable_phase_end

INTENT_FORMAT = "bertcurve.extend/1"
BRANCH_SPLIT = "branch"


@dataclass(frozen=True)
class ExtensionPlan:
    """Where an extension restarts and what it leaves behind."""

    step: int             # the checkpoint the extension continues from (the branch point)
    from_max_steps: int
    to_max_steps: int
    schedule: str
    rewarm: bool
    abandons: bool        # whether steps after ``step`` (an old cooldown) become a branch

    def record(self) -> dict[str, Any]:
        """The metrics.jsonl line that marks the branch point."""
        rec = {"step": self.step, "split": BRANCH_SPLIT, "from_max_steps": self.from_max_steps,
               "to_max_steps": self.to_max_steps, "schedule": self.schedule}
        if self.rewarm:
            rec["rewarm"] = True
        if self.abandons:
            rec["branch_dir"] = layout.branch_dir_name(self.from_max_steps)
        return rec


def plan_extension(run_dir: Path, to_max_steps: int, *, rewarm: bool,
                   warn: Callable[[str], None]) -> ExtensionPlan | None:
    """Check that the run in ``run_dir`` can be extended to ``to_max_steps``; None when it
    already was (the same command run again just resumes)."""
    saved = _saved_config(run_dir)
    optim = saved["train"]["optim"]
    old_max, schedule = int(optim["max_steps"]), str(optim["schedule"])
    if to_max_steps == old_max:
        return None
    if to_max_steps < old_max:
        raise UserError(f"--extend-to {to_max_steps} is not beyond the run's {old_max} steps; "
                        "give a larger number of steps")
    if schedule in ("cosine", "linear") and not rewarm:
        raise UserError(
            f"cannot extend a {schedule} run: its learning rate is spent by step {old_max}, and a longer "
            f"{schedule} schedule differs from step 1; train with --schedule wsd to extend runs, or add "
            "--rewarm to raise the rate again from the newest checkpoint (a different curve)")
    newer_first = ckpt.list_checkpoints(run_dir)
    end = stable_phase_end(schedule, old_max, int(optim["warmup_steps"]), float(optim["decay_fraction"]))
    if end is not None and not rewarm:
        newer_first = [(s, f) for s, f in newer_first if s <= end]
    start = _newest_intact(newer_first, warn)
    if start is None:
        where = f"at or before step {end} (the last stable-phase step)" if end is not None else ""
        raise UserError(f"{run_dir} has no intact checkpoint {where} to extend from; "
                        "start a new run with --max-steps instead")
    new_optim = dict(optim, max_steps=to_max_steps)
    if not rewarm and not rates_agree_through(start, optim, new_optim):
        raise UserError(f"checkpoint step {start} is past the stable phase of a {to_max_steps}-step "
                        f"schedule; extend to more steps or add --rewarm")
    # Only a run that went past its stable phase leaves an old cooldown behind.
    abandons = end is not None and not rewarm and (
        any(s > end for s, _ in ckpt.list_checkpoints(run_dir))
        or any(int(r["step"]) > end and r.get("split") != BRANCH_SPLIT
               for r in metrics_log.read_records(run_dir / layout.METRICS)))
    return ExtensionPlan(start, old_max, to_max_steps, schedule, rewarm, abandons)


def begin(run_dir: Path, plan: ExtensionPlan) -> None:
    """Journal the extension, then carry it out (see :func:`finish_pending`)."""
    write_json(run_dir / layout.EXTEND_INTENT, dict(asdict(plan), format=INTENT_FORMAT))
    finish_pending(run_dir)


def finish_pending(run_dir: Path) -> ExtensionPlan | None:
    """Complete a journalled extension (every step is safe to repeat); the plan done, or None."""
    path = run_dir / layout.EXTEND_INTENT
    if not path.is_file():
        return None
    obj = read_json(path, "extension journal")
    if not isinstance(obj, dict) or obj.get("format") != INTENT_FORMAT:
        raise UserError(f"{path} is not a bertcurve extension journal; delete it and run "
                        "`bertcurve train --extend-to` again")
    plan = ExtensionPlan(**{k: obj[k] for k in ExtensionPlan.__dataclass_fields__})
    metrics_path = run_dir / layout.METRICS
    records = list(metrics_log.read_records(metrics_path))
    if plan.abandons:
        _move_old_cooldown(run_dir, plan, records)
    saved = _saved_config(run_dir)
    saved["train"]["optim"]["max_steps"] = plan.to_max_steps
    write_json(run_dir / layout.RUN_CONFIG, saved)
    # The curve up to the branch point, then the branch record (once, however often repeated).
    kept = [r for r in records if int(r["step"]) <= plan.step and r != _as_logged(plan.record())]
    lines = b"".join(metrics_log.format_record(r) for r in kept + [plan.record()])
    atomic_write_bytes(metrics_path, lines)
    path.unlink()
    return plan


def _move_old_cooldown(run_dir: Path, plan: ExtensionPlan, records: list[dict[str, Any]]) -> None:
    """Checkpoints after the branch point, final/ and their metrics lines into the branch folder."""
    branch = run_dir / layout.branch_dir_name(plan.from_max_steps)
    (branch / layout.CHECKPOINTS_DIR).mkdir(parents=True, exist_ok=True)
    old = [r for r in records if int(r["step"]) > plan.step and r.get("split") != BRANCH_SPLIT]
    if old:  # still in metrics.jsonl: the branch's copy is (re)written from them
        atomic_write_bytes(branch / layout.METRICS, b"".join(metrics_log.format_record(r) for r in old))
    for step, folder in ckpt.list_checkpoints(run_dir):
        if step > plan.step:
            target = branch / layout.CHECKPOINTS_DIR / folder.name
            if target.exists():
                shutil.rmtree(target)
            os.replace(folder, target)
    final = run_dir / layout.FINAL_MODEL_DIR
    if final.is_dir():
        target = branch / layout.FINAL_MODEL_DIR
        if target.exists():
            shutil.rmtree(target)
        os.replace(final, target)


def _as_logged(record: dict[str, Any]) -> dict[str, Any]:
    """A record as read back from metrics.jsonl (with its format field)."""
    return dict(record, format=layout.METRICS_FORMAT)


def _newest_intact(newer_first: list[tuple[int, Path]], warn: Callable[[str], None]) -> int | None:
    for step, folder in newer_first:
        try:
            ckpt.verify_checkpoint(folder)
            return step
        except ckpt.CorruptCheckpoint as exc:
            warn(f"warning: checkpoint {folder.name} is damaged ({exc}); trying the previous one")
    return None


def _saved_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / layout.RUN_CONFIG
    if not path.is_file():
        raise UserError(f"{run_dir} holds no run to extend (no {layout.RUN_CONFIG}); "
                        "train it first, or drop --extend-to")
    obj = read_json(path, "run config")
    if not isinstance(obj, dict) or obj.get("format") != layout.RUN_CONFIG_FORMAT \
            or not isinstance(obj.get("train", {}).get("optim"), dict):
        raise UserError(f"{path} is not a bertcurve run config ({layout.RUN_CONFIG_FORMAT})")
    return obj


# -------------------------------------------------------------------- cooldown branches
def cooldown_max_steps(step: int, warmup_steps: int, decay_fraction: float) -> int:
    """The shortest WSD plan whose stable phase reaches ``step``: a cooldown branch from the
    checkpoint at ``step`` is then exactly that plan's run (about ``decay_fraction / (1 -
    decay_fraction)`` of ``step`` more steps)."""
    from bertcurve.training.schedule import wsd_decay_start

    total = step + 1
    while wsd_decay_start(total, warmup_steps, decay_fraction) < step:
        total += 1
    return total


def cooldown_dir(run_dir: Path, step: int) -> Path:
    """``RUN-cooldown-400/`` next to ``RUN/``."""
    return run_dir.parent / f"{run_dir.name}-cooldown-{step}"


def make_cooldown_branch(run_dir: Path, step: int) -> Path:
    """A run dir of its own that cools the WSD run in ``run_dir`` down from its checkpoint at
    ``step``: that checkpoint, the metrics lines up to it and the config with a shorter
    ``max_steps``. Created atomically; an existing branch is left to continue."""
    from bertcurve.fsutil import staged_directory

    target = cooldown_dir(run_dir, step)
    if (target / layout.RUN_CONFIG).is_file():
        return target
    saved = _saved_config(run_dir)
    optim = saved["train"]["optim"]
    if optim.get("schedule") != "wsd":
        raise UserError(f"--cooldowns-at needs a wsd run; {run_dir} uses {optim.get('schedule')!r}")
    end = stable_phase_end("wsd", int(optim["max_steps"]), int(optim["warmup_steps"]),
                           float(optim["decay_fraction"]))
    if not int(optim["warmup_steps"]) < step <= end:
        raise UserError(f"--cooldowns-at {step}: not in {run_dir}'s stable phase (steps "
                        f"{int(optim['warmup_steps']) + 1}-{end}); pick steps inside it")
    source = run_dir / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(step)
    try:
        ckpt.verify_checkpoint(source)
    except ckpt.CorruptCheckpoint as exc:
        kept = ", ".join(str(s) for s, _ in sorted(ckpt.list_checkpoints(run_dir))) or "none"
        raise UserError(f"--cooldowns-at {step}: no intact checkpoint at step {step} in {run_dir} "
                        f"({exc}; kept: {kept}); train the run with --save-at listing the "
                        "cooldown steps") from None
    total = cooldown_max_steps(step, int(optim["warmup_steps"]), float(optim["decay_fraction"]))
    branch_config = dict(saved, train=dict(saved["train"], optim=dict(optim, max_steps=total)))
    records = [r for r in metrics_log.read_records(run_dir / layout.METRICS)
               if int(r["step"]) <= step and r.get("split") != BRANCH_SPLIT]
    mark = {"step": step, "split": BRANCH_SPLIT, "from_max_steps": int(optim["max_steps"]),
            "to_max_steps": total, "schedule": "wsd", "cooldown_from": str(run_dir)}
    with staged_directory(target) as tmp:
        shutil.copytree(source, tmp / layout.CHECKPOINTS_DIR / source.name)
        write_json(tmp / layout.RUN_CONFIG, branch_config)
        atomic_write_bytes(tmp / layout.METRICS,
                           b"".join(metrics_log.format_record(r) for r in records + [mark]))
    return target

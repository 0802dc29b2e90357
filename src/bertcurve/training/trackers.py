"""Experiment trackers: the run's metrics and config also go to TensorBoard, MLflow, W&B or trackio.

``bertcurve train --report-to tensorboard,mlflow,wandb,trackio`` (Hugging Face's
``TrainingArguments.report_to`` names; ``none`` or nothing: no tracker; ``all``: every one
installed). ``metrics.jsonl`` stays the source of truth: a tracker receives a copy of each
record as it is written. Each tracker is one small adapter behind :class:`Tracker`; its
package is imported only when it is named, and a missing package is a one-line error that
says what to install. The training loop makes three calls on :class:`Trackers`:
``log_config(config)`` once at the start, ``log(record, step)`` after each metrics line,
``close()`` at the end.

A resumed run continues the same tracker run where the tracker can (MLflow, W&B, trackio):
the ids are kept in ``RUN_DIR/trackers.json``.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from bertcurve import layout
from bertcurve.errors import UserError

TENSORBOARD_DIR = "tensorboard"
DEFAULT_PROJECT = "bertcurve"

# name -> (module to look for, pip package)
KNOWN: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow"),
    "wandb": ("wandb", "wandb"),
    "trackio": ("trackio", "trackio"),
}


def parse_report_to(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Tracker names from ``--report-to`` (comma-separated), in order, without duplicates.

    ``none`` (or nothing) is no tracker; ``all`` is every known tracker whose package is
    installed. An unknown name or a missing package raises :class:`UserError`.
    """
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [n.strip().lower() for n in items if n and n.strip()]
    if names in ([], ["none"]):
        return ()
    if "none" in names:
        raise UserError("--report-to none cannot be combined with tracker names")
    if names == ["all"]:
        return tuple(n for n, (module, _) in KNOWN.items() if _installed(module))
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        raise UserError(f"--report-to: unknown tracker {', '.join(unknown)}; choose from "
                        f"{', '.join(KNOWN)}, all or none")
    chosen = tuple(dict.fromkeys(names))
    for name in chosen:
        module, package = KNOWN[name]
        if not _installed(module):
            raise UserError(f"--report-to {name} needs the {package} package; install it with "
                            f"`pip install {package}` (or `pip install bertcurve[{name}]`)")
    return chosen


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None  # finds, does not import
    except (ImportError, ValueError):
        return False


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """``{"train/loss": 2.3, ...}``: the record's numbers (not its step) under ``split/name``."""
    split = str(record.get("split", "train"))
    return {f"{split}/{key}": float(value) for key, value in record.items()
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)}


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config as ``{"train.optim.lr": 0.001, ...}``; lists become JSON text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat


class Tracker:
    """One experiment tracker. Subclasses import their package in ``__init__``."""

    name = "tracker"

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Record the run's resolved config (once, before the first metrics)."""

    def log(self, record: Mapping[str, Any], step: int) -> None:
        """Record one metrics line (``split`` ``train`` or ``eval``) at optimizer step ``step``."""

    def close(self) -> None:
        """Flush and end the tracker's run."""

    def resume_id(self) -> str | None:
        """An id that lets a resumed training run continue this tracker run."""
        return None


class TensorBoardTracker(Tracker):
    """Event files in ``RUN_DIR/tensorboard`` (scalars ``train/loss``, ``eval/mlm_accuracy``...)."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, start_step: int, **_: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events a resumed run is about to write again
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=start_step + 1)

    def log_config(self, config: Mapping[str, Any]) -> None:
        text = json.dumps(config, ensure_ascii=False, indent=2)
        self.writer.add_text("config", f"```\n{text}\n```", 0)

    def log(self, record: Mapping[str, Any], step: int) -> None:
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class MlflowTracker(Tracker):
    """An MLflow run in the experiment ``MLFLOW_EXPERIMENT_NAME`` (default ``bertcurve``), at
    ``MLFLOW_TRACKING_URI`` (MLflow's own default when unset): params from the config, metrics
    ``train/...`` and ``eval/...`` by step."""

    name = "mlflow"

    def __init__(self, run_dir: Path, run_name: str, resume_id: str | None = None, **_: Any) -> None:
        import mlflow

        self.mlflow = mlflow
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_PROJECT)
        self.resumed = resume_id is not None
        self.run = mlflow.start_run(run_id=resume_id, run_name=None if resume_id else run_name)

    def log_config(self, config: Mapping[str, Any]) -> None:
        if self.resumed:
            return  # MLflow refuses to change a logged param; the first start's config stands
        params = {k: ("" if v is None else v) for k, v in flatten(config).items()}
        self.mlflow.log_params(params)

    def log(self, record: Mapping[str, Any], step: int) -> None:
        # MLflow metric names allow only letters, digits and _-./ and spaces
        self.mlflow.log_metrics(scalars(record), step=step)

    def close(self) -> None:
        self.mlflow.end_run()

    def resume_id(self) -> str | None:
        return self.run.info.run_id


class WandbTracker(Tracker):
    """A Weights & Biases run in ``WANDB_PROJECT`` (default ``bertcurve``); offline with
    ``WANDB_MODE=offline``. Its local files go to ``RUN_DIR/wandb`` unless ``WANDB_DIR`` is set."""

    name = "wandb"

    def __init__(self, run_dir: Path, run_name: str, resume_id: str | None = None, **_: Any) -> None:
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
                              name=run_name, id=resume_id, resume="allow" if resume_id else None,
                              dir=os.environ.get("WANDB_DIR") or str(run_dir))

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.run.config.update(dict(config), allow_val_change=True)

    def log(self, record: Mapping[str, Any], step: int) -> None:
        self.run.log(scalars(record), step=step)

    def close(self) -> None:
        self.run.finish()

    def resume_id(self) -> str | None:
        return self.run.id


class TrackioTracker(Tracker):
    """A trackio run in the project ``TRACKIO_PROJECT`` (default ``bertcurve``); trackio keeps
    it in a local database (``TRACKIO_DIR``) and shows it with ``trackio show``."""

    name = "trackio"

    def __init__(self, run_dir: Path, run_name: str, resume_id: str | None = None, **_: Any) -> None:
        import trackio

        self.trackio = trackio
        self.run_name = resume_id or run_name
        self.run = trackio.init(project=os.environ.get("TRACKIO_PROJECT") or DEFAULT_PROJECT,
                                name=self.run_name, resume="allow" if resume_id else "never")

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.trackio.config.update(flatten(config))

    def log(self, record: Mapping[str, Any], step: int) -> None:
        self.trackio.log(scalars(record), step=step)

    def close(self) -> None:
        self.trackio.finish()

    def resume_id(self) -> str | None:
        return self.run_name


ADAPTERS: dict[str, Callable[..., Tracker]] = {
    "tensorboard": TensorBoardTracker,
    "mlflow": MlflowTracker,
    "wandb": WandbTracker,
    "trackio": TrackioTracker,
}


class Trackers:
    """Every tracker of a run behind the three calls the training loop makes; none: does nothing."""

    def __init__(self, trackers: list[Tracker] | None = None, state_path: Path | None = None) -> None:
        self.trackers = list(trackers or [])
        self.state_path = state_path

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def log_config(self, config: Mapping[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.log_config(config)

    def log(self, record: Mapping[str, Any], step: int) -> None:
        for tracker in self.trackers:
            tracker.log(record, step)

    def close(self) -> None:
        trackers, self.trackers = self.trackers, []  # a second close does nothing
        for tracker in trackers:
            tracker.close()


def open_trackers(names: Iterable[str], run_dir: str | Path, *, start_step: int = 0,
                  run_name: str | None = None) -> Trackers:
    """Start the named trackers (from :func:`parse_report_to`) for the run dir ``run_dir``.

    A run that resumes (``start_step > 0``) continues the tracker runs recorded in
    ``RUN_DIR/trackers.json``; a fresh start begins new ones.
    """
    names = list(names)
    if not names:
        return Trackers()
    run_dir = Path(run_dir)
    state_path = run_dir / layout.TRACKERS_STATE
    saved: dict[str, Any] = {}
    if start_step > 0 and state_path.is_file():
        try:
            saved = json.loads(state_path.read_text(encoding="utf-8")).get("runs", {})
        except (OSError, ValueError, AttributeError):
            saved = {}
    name = run_name or run_dir.resolve().name
    opened: list[Tracker] = []
    try:
        for tracker in names:
            opened.append(ADAPTERS[tracker](run_dir=run_dir, run_name=name, start_step=start_step,
                                            resume_id=saved.get(tracker)))
    except ImportError as exc:
        Trackers(opened).close()
        raise UserError(f"--report-to {tracker}: {exc}; reinstall it with `pip install "
                        f"{KNOWN[tracker][1]}`") from None
    except Exception as exc:  # noqa: BLE001 - each library raises its own types (server down, bad URI)
        Trackers(opened).close()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(f"--report-to {tracker}: could not start a run ({type(exc).__name__}: "
                        f"{first}); check its settings (see docs/run-dir.md)") from None
    ids = {t.name: t.resume_id() for t in opened if t.resume_id() is not None}
    if ids:
        from bertcurve.fsutil import write_json

        write_json(state_path, {"format": layout.TRACKERS_STATE_FORMAT, "runs": ids})
    return Trackers(opened, state_path)

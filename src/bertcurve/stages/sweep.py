"""Hyperparameter search: Optuna trials that are ordinary bertcurve runs.

    bertcurve sweep --data DATA --out SWEEP --space SPACE.yaml --trials N
                    [--preset P] [--pruner forecast|median|hyperband|none]
                    [--storage URL] [--objective accuracy|loss] [--sampler-seed S]
                    [train overrides: --max-steps N --eval-every N --lr X ... | --set KEY=VALUE]

Train overrides are the flags of ``bertcurve train`` and fix a setting for every trial;
``--set KEY=VALUE`` does the same for any setting by name. A setting cannot be both fixed
and searched by the space.

Each trial trains ``SWEEP/trials/trial-NNNN`` (a run dir: analyze, plot, compare and the
dashboard work on it). The study lives in ``SWEEP/optuna.db`` (SQLite) unless ``--storage``
names a shared database (``postgresql://...``, ``mysql://...``, or ``journal:PATH`` for
Optuna's journal file on a shared file system), so a killed sweep continues where it
stopped, and many workers on many machines can share one study. ``--pruner forecast``
stops a trial when even the optimistic end of its forecast final metric is worse than the
best finished trial (see docs/sweep.md). ``optuna-dashboard SWEEP/optuna.db`` opens it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from bertcurve import layout
from bertcurve.errors import UserError
from bertcurve.training.config import SpeedConfig, add_setting_arguments, settings

PRUNERS = ("forecast", "median", "hyperband", "none")
OBJECTIVES = {"accuracy": ("mlm_accuracy", "maximize"), "loss": ("loss", "minimize")}
SWEEP_JSON = "sweep.json"
SWEEP_FORMAT = "bertcurve.sweep/1"
TRIALS_DIR = "trials"
STUDY_NAME = "bertcurve-sweep"
DB_FILE = "optuna.db"


@dataclass
class SweepResult:
    out: Path
    storage: str
    trials: list[dict[str, Any]] = field(default_factory=list)   # one summary per trial, by number
    best: dict[str, Any] | None = None
    steps_trained: int = 0
    report: Path | None = None


def _storage(url: str | None, out: Path):
    """An Optuna storage: SQLite in the sweep dir by default; RDB URLs and journal files."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage

    if url is None:
        url = f"sqlite:///{(out / DB_FILE).resolve()}"
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return url, JournalStorage(JournalFileBackend(url[len("journal:"):]))
    if "://" not in url:
        raise UserError(f"--storage {url!r}: expected a database URL (sqlite:///PATH, postgresql://..., "
                        "mysql://...) or journal:PATH")
    # Heartbeats let a worker that died (even by SIGKILL) be noticed by the others; its trial
    # is failed and retried with the same parameters in the same run dir. Optuna 4.9 renamed
    # the retry callback; heartbeats are "experimental" (stable since Optuna 2.8).
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
                retry = {"heartbeat_stale_trial_callback":
                         optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)}
            else:
                retry = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=3)}
            return url, RDBStorage(url, heartbeat_interval=30, grace_period=120, **retry)
    except (optuna.exceptions.StorageInternalError, ImportError, ValueError) as exc:
        raise UserError(f"--storage {url}: cannot open it ({exc})") from None


def _pruner(name: str, max_steps: int):
    import optuna

    from bertcurve.tuning import ForecastPruner

    if name == "forecast":
        return ForecastPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=max(1, max_steps // 5))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, max_steps // 10), max_resource=max_steps)
    return optuna.pruners.NopPruner()


def _check_out(out: Path, settings: dict[str, Any]) -> None:
    """SWEEP is new, empty, or this very sweep (same space, data and objective)."""
    marker = out / SWEEP_JSON
    if marker.is_file():
        try:
            saved = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UserError(f"{marker} is unreadable; choose another --out") from None
        keys = ("data", "space", "objective", "preset", "overrides")
        # overrides are compared by dotted name: `--set max_steps=` and `--max-steps` agree
        saved["overrides"] = _canonical(saved.get("overrides") or {})
        current = {**settings, "overrides": _canonical(settings.get("overrides") or {})}
        changed = [k for k in keys if saved.get(k) != current.get(k)]
        if changed:
            raise UserError(f"{out} holds another sweep (different {', '.join(changed)}); "
                            "choose another --out or repeat the same settings to continue it")
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not a bertcurve sweep; choose a new or empty --out")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"format": SWEEP_FORMAT, **settings}, indent=1, ensure_ascii=False) + "\n",
                      encoding="utf-8")


def _canonical(overrides: Mapping[str, Any]) -> dict[str, Any]:
    from bertcurve.tuning import setting_key

    return {setting_key(str(k)): v for k, v in overrides.items()}


def _lock_is_free(run_dir: Path) -> bool:
    """True when no live process trains in ``run_dir`` (its flock is free)."""
    from bertcurve.training.checkpoint import RunLock

    return not RunLock.is_held(run_dir)


def _recover(study, out: Path) -> int:
    """Trials of this sweep left RUNNING by a killed worker (its run dir's lock is free) or
    interrupted by Ctrl-C are failed and queued again with the same parameters; the new trial
    resumes the same run dir from its last checkpoint. Returns how many were queued."""
    import optuna

    TS = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("run_dir") for t in trials
               if t.state in (TS.RUNNING, TS.WAITING, TS.COMPLETE, TS.PRUNED)}
    queued = 0
    for t in trials:
        run_dir = t.user_attrs.get("run_dir")
        if not run_dir:
            continue
        stale = t.state == TS.RUNNING and _lock_is_free(out / run_dir)
        interrupted = t.state == TS.FAIL and t.user_attrs.get("interrupted")
        if stale:
            study._storage.set_trial_state_values(t._trial_id, state=TS.FAIL)
        if (stale or interrupted) and (stale or run_dir not in retried):
            study.enqueue_trial(t.params, user_attrs={"run_dir": run_dir}, skip_if_exists=False)
            retried.add(run_dir)
            queued += 1
    return queued


def _finished(study) -> int:
    import optuna

    TS = optuna.trial.TrialState
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (TS.COMPLETE, TS.PRUNED) or (t.state == TS.FAIL and t.user_attrs.get("error")))


def sweep(
    data: str | Path,
    out: str | Path,
    space: str | Path | Mapping[str, Any],
    trials: int,
    *,
    preset: str | None = None,
    pruner: str = "forecast",
    storage: str | None = None,
    objective: str = "accuracy",
    overrides: Mapping[str, Any] | None = None,
    speed: SpeedConfig | None = None,
    seed: int = 0,
    quiet: bool = False,
    report: bool = True,
) -> SweepResult:
    """Run an Optuna search of ``trials`` finished trials (see the module docstring).

    ``space``: a YAML/JSON file or a mapping of settings to ``{low, high[, log]}`` or lists
    of choices. ``overrides``: fixed train settings for every trial (none of them searched
    by the space); ``speed``: how every trial runs (changes speed only). ``seed``: the
    sampler's. Continuing an existing SWEEP never repeats or loses finished trials; a
    Ctrl-C fails the running trial in the study (it resumes on the next run of the same
    command) and raises KeyboardInterrupt.
    """
    import optuna

    from bertcurve.training.config import build_config
    from bertcurve.tuning import parse_space, read_space_file

    if pruner not in PRUNERS:
        raise UserError(f"--pruner must be one of {', '.join(PRUNERS)} (got {pruner!r})")
    if objective not in OBJECTIVES:
        raise UserError(f"--objective must be accuracy or loss (got {objective!r})")
    if not isinstance(trials, int) or trials < 1:
        raise UserError(f"--trials must be a positive number (got {trials!r})")
    fixed = _canonical(overrides or {})
    base = build_config(preset, overrides=fixed)
    mapping = space if isinstance(space, Mapping) else read_space_file(space)
    params = parse_space(mapping, preset, fixed)
    out = Path(out)
    data = Path(data)
    if not (data / layout.DATA_META).is_file():
        raise UserError(f"--data {data}: not a prepared data directory (run `bertcurve prepare` first)")
    _check_out(out, {"data": str(data.resolve()), "space": {k: v for k, v in mapping.items()},
                     "objective": objective, "preset": preset, "overrides": fixed})
    url, store = _storage(storage, out)
    direction = OBJECTIVES[objective][1]
    # Optuna logs every failed trial with its traceback (a Ctrl-C, a trial's bad settings); the
    # sweep says what happened to each trial in one line instead
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name=STUDY_NAME, storage=store, direction=direction, load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=_pruner(pruner, base.optim.max_steps))
    queued = _recover(study, out)
    say = (lambda _m: None) if quiet else (lambda m: print(m, flush=True))
    done = _finished(study)
    say(f"sweep {out}: {done} of {trials} trial(s) finished" + (f", {queued} resumed" if queued else "")
        + f"; storage {url}")

    objective_fn = _Objective(study, out, data, preset, fixed, params, objective, say, speed)

    def enough(study: optuna.Study, _trial: Any) -> None:
        if _finished(study) >= trials:
            study.stop()

    if _finished(study) < trials:
        try:
            study.optimize(objective_fn, callbacks=[enough], catch=(UserError,), gc_after_trial=True)
        except KeyboardInterrupt:
            objective_fn.mark_interrupted()
            raise
    result = summarize(study, out, url)
    if report:
        result.report = write_sweep_report(study, out, result, objective)
        say(f"report: {result.report}")
    if result.best:
        say(f"best trial {result.best['number']}: {objective} {result.best['value']:.4f} "
            f"({', '.join(f'{k}={_fmt(v)}' for k, v in result.best['params'].items())}); "
            f"{result.steps_trained:,} training steps in all")
    return result


class _Objective:
    """One Optuna trial: an ordinary ``train`` run in SWEEP/trials/trial-NNNN, reporting every
    held-out evaluation to Optuna and stopping where the pruner says."""

    def __init__(self, study, out: Path, data: Path, preset: str | None, fixed: dict[str, Any],
                 params: list, objective: str, say, speed=None) -> None:
        self.study, self.out, self.data, self.preset = study, out, data, preset
        self.fixed, self.params, self.objective, self.say = fixed, params, objective, say
        self.speed = speed
        self.current = None   # the trial this process runs now
        self.key, direction = OBJECTIVES[objective]
        self.maximize = direction == "maximize"

    def __call__(self, trial) -> float:
        self.current = trial
        try:
            return self._run(trial)
        except KeyboardInterrupt:
            # marked now, before Optuna fails the trial: a finished trial's attributes are frozen
            trial.set_user_attr("interrupted", True)
            raise

    def _run(self, trial) -> float:
        import optuna

        from bertcurve.stages.train import train
        from bertcurve.training.config import build_config
        from bertcurve.tuning import SCHEDULE_ATTR, schedule_of, trial_record

        run_rel = trial.user_attrs.get("run_dir") or f"{TRIALS_DIR}/trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", run_rel)
        run_dir = self.out / run_rel
        values = {p.name: p.suggest(trial) for p in self.params}
        cfg = build_config(self.preset, overrides={**self.fixed, **values})
        trial.set_user_attr(SCHEDULE_ATTR, schedule_of(cfg))
        reported: dict[str, Any] = {}

        def on_eval(step: int, record: Mapping[str, Any]) -> None:
            value = record.get(self.key)
            if step <= 0 or value is None:
                return
            trial.report(float(value), step)
            reported["step"] = step
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")

        self.say(f"trial {trial.number}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in values.items()))
        try:
            result = train(self.data, run_dir, preset=self.preset, overrides={**self.fixed, **values}, resume="auto",
                           speed=self.speed, quiet=True, on_eval=on_eval)
        except optuna.TrialPruned:
            forecast = getattr(self.study.pruner, "forecasts", {}).get(trial.number)
            trial_record(run_dir, "pruned", trial=trial.number, step=reported.get("step"), forecast=forecast)
            trial.set_user_attr("steps", reported.get("step"))
            if forecast:
                trial.set_user_attr("forecast", forecast)
            self.say(f"trial {trial.number}: pruned at step {reported.get('step'):,}" + (
                f" ({forecast['forecaster']} forecast {forecast['value']:.4f}, interval "
                f"{forecast['low']:.4f}-{forecast['high']:.4f}, best {forecast['best']:.4f})" if forecast else ""))
            raise
        except UserError as exc:
            trial.set_user_attr("error", str(exc))
            trial_record(run_dir, "failed", trial=trial.number, error=str(exc))
            self.say(f"trial {trial.number}: failed: {exc}")
            raise
        if not result.completed:   # Ctrl-C or SIGTERM: the run saved a checkpoint and stopped
            raise KeyboardInterrupt
        value = float((result.final_eval or {}).get(self.key, float("nan")))
        trial.set_user_attr("steps", result.step)
        trial_record(run_dir, "complete", trial=trial.number, step=result.step, value=value)
        self.say(f"trial {trial.number}: {self.objective} {value:.4f} after {result.step:,} steps")
        return value

    def mark_interrupted(self) -> None:
        """After a Ctrl-C: a trial of this process that Optuna left RUNNING (the interrupt
        hit outside the objective) is failed and marked ``interrupted``, so that no trial
        stays RUNNING and the next run of the sweep resumes it; finished trials are left alone."""
        import optuna

        if self.current is None:
            return
        storage, trial_id = self.study._storage, self.current._trial_id
        if storage.get_trial(trial_id).state == optuna.trial.TrialState.RUNNING:
            storage.set_trial_user_attr(trial_id, "interrupted", True)
            storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL)


def summarize(study, out: Path, url: str) -> SweepResult:
    """One line per trial: number, state, parameters, value, steps trained, run dir."""
    result = SweepResult(out=out, storage=url)
    for t in study.get_trials(deepcopy=False):
        row = {"number": t.number, "state": t.state.name.lower(), "params": dict(t.params), "value": t.value,
               "steps": t.user_attrs.get("steps") or (max(t.intermediate_values) if t.intermediate_values else 0),
               "run_dir": t.user_attrs.get("run_dir"), "error": t.user_attrs.get("error"),
               "forecast": t.user_attrs.get("forecast") or _recorded_forecast(out, t.user_attrs.get("run_dir"))}
        result.trials.append(row)
        result.steps_trained += int(row["steps"] or 0)
    complete = [r for r in result.trials if r["state"] == "complete" and r["value"] is not None]
    if complete:
        result.best = {"number": study.best_trial.number, "value": study.best_value,
                       "params": dict(study.best_trial.params)}
    return result


def write_sweep_report(study, out: Path, result: SweepResult, objective: str, lang: str = "both") -> Path:
    """SWEEP/report.md and a self-contained SWEEP/report.html: trials, best trial, figures."""
    import io

    import matplotlib

    from bertcurve.curves.logs import load_log
    from bertcurve.fsutil import atomic_write_bytes
    from bertcurve.stages.report import Doc
    from bertcurve.viz import figures as F
    from bertcurve.viz import sweep_figures as SF

    metric = "eval_" + OBJECTIVES[objective][0]
    fig_dir = out / layout.FIGURES_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    curves, states = {}, {}
    for row in result.trials:
        states[row["number"]] = row["state"]
        if row["run_dir"] and (out / row["run_dir"] / layout.METRICS).is_file():
            try:
                series = load_log(out / row["run_dir"]).series.get(metric)
            except UserError:
                series = None
            if series is not None:
                curves[row["number"]] = (series.steps, series.values)
    finished = [r for r in result.trials if r["state"] == "complete" and r["value"] is not None]
    names = sorted({k for r in result.trials for k in r["params"]})
    log_params = {p for p in names if _searched_log(study, p)}
    drawn: list[tuple[Path, str]] = []

    def save(fig, name: str, caption: str) -> None:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        atomic_write_bytes(fig_dir / name, buffer.getvalue())
        drawn.append((fig_dir / name, caption))

    with matplotlib.rc_context(F.style()):
        best = result.best["number"] if result.best else None
        save(SF.trial_curves(curves, states, best, metric, lang=lang), "sweep_curves.png",
             F.label("Held-out curves of all trials", "所有试验的验证集曲线", lang))
        if finished and names:
            save(SF.parallel_coordinates(names, [r["params"] for r in finished], [r["value"] for r in finished],
                                         log_params, objective, lang=lang), "sweep_parallel.png",
                 F.label("Parameters and final metric", "参数与最终指标", lang))
        scores = _importances(study)
        if scores:
            save(SF.importances(scores, lang=lang), "sweep_importances.png",
                 F.label("Parameter importances (Optuna)", "参数重要性（Optuna）", lang))
    doc = Doc(title=F.label(f"Sweep {out.name}", f"超参数搜索 {out.name}", lang))
    doc.h2(F.label("Best trial", "最佳试验", lang), "best")
    if result.best:
        doc.kv([("trial", result.best["number"]), (objective, f"{result.best['value']:.4f}"),
                *[(k, _fmt(v)) for k, v in result.best["params"].items()],
                ("run", next((r["run_dir"] for r in result.trials if r["number"] == result.best["number"]), None))])
    else:
        doc.p("No trial has finished yet.")
    counts = {s: sum(1 for r in result.trials if r["state"] == s) for s in ("complete", "pruned", "fail", "running")}
    doc.p(f"{len(result.trials)} trial(s): {counts['complete']} complete, {counts['pruned']} pruned, "
          f"{counts['fail']} failed, {counts['running']} running; {result.steps_trained:,} training steps in all. "
          f"Storage: `{result.storage}`.")
    doc.h2(F.label("Trials", "试验", lang), "trials")
    doc.table(["trial", "state", *names, objective, "steps", "pruned by", "run"],
              [[r["number"], r["state"], *[_fmt(r["params"].get(n, "")) for n in names],
                "" if r["value"] is None else f"{r['value']:.4f}", f"{int(r['steps'] or 0):,}",
                _pruned_by(r["forecast"]), r["run_dir"] or ""]
               for r in result.trials])
    doc.h2(F.label("Figures", "图表", lang), "figures")
    for path, caption in drawn:
        doc.figure(path, caption, f"{layout.FIGURES_DIR}/{path.name}")
    md, page = out / layout.REPORT_MD, out / layout.REPORT_HTML
    atomic_write_bytes(md, doc.markdown().encode("utf-8"))
    atomic_write_bytes(page, doc.html().encode("utf-8"))
    return page


def _recorded_forecast(out: Path, run_dir: str | None) -> dict | None:
    """The pruning forecast in a trial's trial.json (sweeps before the trial attribute); None
    where the file is missing, unreadable or holds no forecast."""
    path = out / run_dir / "trial.json" if run_dir else None
    try:
        record = json.loads(path.read_text(encoding="utf-8")) if path and path.is_file() else None
    except (OSError, ValueError):
        return None
    forecast = record.get("forecast") if isinstance(record, dict) else None
    return forecast if isinstance(forecast, dict) else None


def _pruned_by(forecast: Mapping[str, Any] | None) -> str:
    """The forecast that pruned a trial, in one cell: forecaster, value, interval, best then
    (empty where the record lacks any of them)."""
    try:
        return (f"{forecast.get('forecaster', 'law')} {forecast['value']:.4f} "
                f"({forecast['low']:.4f}-{forecast['high']:.4f}; best {forecast['best']:.4f})")
    except (AttributeError, KeyError, TypeError, ValueError):
        return ""


def _searched_log(study, name: str) -> bool:
    for t in study.get_trials(deepcopy=False):
        dist = t.distributions.get(name)
        if dist is not None:
            return bool(getattr(dist, "log", False))
    return False


def _importances(study) -> dict[str, float]:
    """Optuna's parameter importances; empty when fewer than two finished trials, nothing
    varied, or the evaluator's library is missing."""
    import warnings

    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        # Optuna's default evaluator (fANOVA up to Optuna 4, which needs scikit-learn; PED-ANOVA
        # from 5); its warnings (e.g. all trials equal) are about the figure, not the sweep
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError, ZeroDivisionError, ImportError):
        return {}


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------ CLI
def _parse_sets(items: list[str] | None) -> dict[str, Any]:
    import yaml

    fixed: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set max_steps=400")
        key, text = item.split("=", 1)
        fixed[key.strip()] = yaml.safe_load(text)
    return fixed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DATA_DIR", help="prepared data directory")
    parser.add_argument("--out", required=True, metavar="SWEEP", help="sweep directory to create or continue")
    parser.add_argument("--space", required=True, metavar="FILE",
                        help="YAML/JSON: setting -> {low, high[, log]} or a list of choices")
    parser.add_argument("--trials", required=True, type=int, metavar="N", help="finished trials wanted in all")
    parser.add_argument("--preset", default=None, help="starting settings of every trial (default: demo)")
    parser.add_argument("--pruner", default="forecast", choices=PRUNERS,
                        help="forecast (default): stop hopeless trials by the learning-curve forecast; "
                             "median, hyperband: Optuna's; none")
    parser.add_argument("--storage", default=None, metavar="URL",
                        help="shared study storage for many workers (default: sqlite in SWEEP/optuna.db)")
    parser.add_argument("--objective", default="accuracy", choices=list(OBJECTIVES),
                        help="final held-out MLM accuracy (maximised, default) or loss (minimised)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", dest="sets",
                        help="fixed train setting for every trial by name (repeatable), e.g. --set lr=1e-3; "
                             "the same as the train flags below")
    parser.add_argument("--sampler-seed", type=int, default=0, metavar="S",
                        help="seed of Optuna's TPE sampler (--seed is the trials' training seed)")
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    # the flags of `bertcurve train`: each fixes one setting for every trial
    add_setting_arguments(parser)


def _fixed_settings(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """Train flags and ``--set`` pairs as one mapping of dotted names, and the speed settings;
    a setting given both ways with different values is refused."""
    from bertcurve.training.config import settings_from_args

    flags, speed = settings_from_args(args)
    fixed = _canonical(flags)
    for key, value in _canonical(_parse_sets(args.sets)).items():
        if key in fixed and fixed[key] != value:
            flag = next(s.flag for s in settings() if s.key == key)
            raise UserError(f"{key} is given twice ({flag} {fixed[key]!r}, --set {value!r}); keep one")
        fixed[key] = value
    return fixed, speed


def run(args: argparse.Namespace) -> int:
    overrides, speed = _fixed_settings(args)
    try:
        result = sweep(args.data, args.out, args.space, args.trials, preset=args.preset, pruner=args.pruner,
                       storage=args.storage, objective=args.objective, overrides=overrides, speed=speed,
                       seed=args.sampler_seed, quiet=args.quiet)
    except KeyboardInterrupt:
        print(f"bertcurve: sweep interrupted; the study is saved, run the same command again to continue it "
              f"({args.out})", file=sys.stderr)
        return 130
    return 0 if result.best or not result.trials else 1
